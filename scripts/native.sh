#!/usr/bin/env bash
# Build tools for bench/native_gate.c (the gate's data path in C: throughput.py's
# "native" mode and tests/unit/test_native_gate.py): a C compiler and librdkafka's
# headers, from Debian/Ubuntu packages.
# Usage: scripts/native.sh install   # as root when they are missing
set -euo pipefail
have() {
  command -v cc >/dev/null && printf '#include <librdkafka/rdkafka.h>\n' | cc -E -x c - >/dev/null 2>&1
}
case "${1:-}" in
  install)
    if ! have; then
      (( EUID == 0 )) || { echo "native.sh: run as root (apt-get install -y gcc librdkafka-dev)" >&2; exit 1; }
      echo "native.sh: installing gcc and librdkafka-dev with apt-get" >&2
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc librdkafka-dev >/dev/null
      have || { echo "native.sh: still no cc or librdkafka/rdkafka.h after apt-get" >&2; exit 1; }
    fi
    echo "native.sh: cc and librdkafka $(pkg-config --modversion rdkafka 2>/dev/null || echo '(headers)')" >&2
    ;;
  *) echo "usage: $0 install" >&2; exit 2 ;;
esac
