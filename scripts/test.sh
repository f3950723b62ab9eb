#!/usr/bin/env bash
# The one test command (README, .ci/run): installs everything it needs, then
# runs both tiers. Unit tests need nothing; integration tests start a real
# Kafka broker (scripts/kafka.sh, from Maven Central) on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

"$PYTHON" -m pip install -q --disable-pip-version-check -e ".[test]"
bash scripts/kafka.sh install      # Java 17 + Maven via apt if missing; jars cached
bash scripts/native.sh install     # gcc + librdkafka-dev via apt if missing: bench/native_gate.c
"$PYTHON" -m ruff check etl_gate tests bench
"$PYTHON" -m mypy etl_gate
"$PYTHON" -m pytest -q -p no:cacheprovider "$@"
