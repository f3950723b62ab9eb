#!/usr/bin/env bash
# The one test command (README, .ci/run): installs everything it needs, then
# runs both tiers. Unit tests need nothing; integration tests start a real
# Kafka broker (scripts/kafka.sh, from Maven Central) on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

"$PYTHON" -m pip install -q --disable-pip-version-check -e ".[test]"
bash scripts/kafka.sh install      # Java 17 + Maven via apt if missing; jars cached
bash scripts/native.sh install     # gcc + librdkafka-dev via apt if missing: etl_gate/fastpath, bench/native_gate.c
"$PYTHON" -m ruff check etl_gate tests bench
"$PYTHON" -m mypy etl_gate
"$PYTHON" -m pytest -q -p no:cacheprovider "$@"
if (( $# == 0 )); then
  # The gate's broker tests again with its other engine (kafka.engine, set by
  # tests/integration/helpers.py): Python must route as the C fast path does.
  ETL_GATE_TEST_ENGINE=python "$PYTHON" -m pytest -q -p no:cacheprovider -m integration \
    tests/integration --ignore tests/integration/test_bench_throughput.py
fi
