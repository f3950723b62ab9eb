#!/usr/bin/env bash
# kcat (C, librdkafka) for bench/throughput.py's physical-reference passthrough.
# Usage: scripts/kcat.sh install   # Debian/Ubuntu package, as root
set -euo pipefail
case "${1:-}" in
  install)
    if command -v kcat >/dev/null; then kcat -V | sed -n 4p; exit 0; fi
    (( EUID == 0 )) || { echo "kcat.sh: run as root (apt-get install -y kcat)" >&2; exit 1; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null
    kcat -V | sed -n 4p
    ;;
  *) echo "usage: $0 install" >&2; exit 2 ;;
esac
