#!/usr/bin/env bash
# Build tools for the gate's C fast path (etl_gate/fastpath, kafka.engine = "native")
# and bench/native_gate.c (throughput.py's "native" mode): a C compiler, librdkafka's
# headers and Python's (for $PYTHON, default python3), from Debian/Ubuntu packages.
# Usage: scripts/native.sh install   # as root when they are missing
set -euo pipefail
PYTHON="${PYTHON:-python3}"
have() {
  command -v cc >/dev/null && printf '#include <librdkafka/rdkafka.h>\n' | cc -E -x c - >/dev/null 2>&1 \
    && "$PYTHON" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'
}
case "${1:-}" in
  install)
    if ! have; then
      (( EUID == 0 )) || { echo "native.sh: run as root (apt-get install -y gcc librdkafka-dev)" >&2; exit 1; }
      echo "native.sh: installing gcc and librdkafka-dev with apt-get" >&2
      apt-get update -qq
      # python3-dev: Python.h for Debian's own python3 (pyenv and python.org builds carry it).
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc librdkafka-dev python3-dev >/dev/null
      have || { echo "native.sh: still no cc, librdkafka/rdkafka.h or Python.h after apt-get" >&2; exit 1; }
    fi
    echo "native.sh: cc and librdkafka $(pkg-config --modversion rdkafka 2>/dev/null || echo '(headers)')" >&2
    ;;
  *) echo "usage: $0 install" >&2; exit 2 ;;
esac
