#!/usr/bin/env bash
# The demo: installs etl-gate and a local Kafka broker, creates the topics,
# generates a realistic event mix into the raw topic, runs the gate over it and
# prints what it decided and where the events went. Wipes the broker at the end
# (KEEP_BROKER=1 keeps it running on 127.0.0.1:$KAFKA_PORT).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
EVENTS="${EVENTS:-200000}"
export KAFKA_PORT="${KAFKA_PORT:-19092}" KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
export KAFKA_DATA_DIR="${KAFKA_DATA_DIR:-/tmp/etl-gate-demo-kafka}"
OUT=demo-out

"$PYTHON" -m pip install -q --disable-pip-version-check -e .
# The C fast path's build tools (kafka.engine = "native"); without them the
# gate runs its Python engine and says so.
bash scripts/native.sh install || echo "demo: no C build tools; the gate uses its python engine" >&2
bash scripts/kafka.sh start
[[ "${KEEP_BROKER:-0}" == 1 ]] || trap 'bash scripts/kafka.sh wipe' EXIT

rm -rf "$OUT" && mkdir -p "$OUT"
cat > "$OUT/gate.toml" <<TOML
workers = 2
rules_file = "rules.json"
quarantine_sample_rate = 0.1
[kafka]
bootstrap_servers = "127.0.0.1:$KAFKA_PORT"
engine = "native"
group_id = "etl-gate-demo-$(date +%s)"
[topics]
quarantine = "events.unregistered"
TOML
echo "== topics"
"$PYTHON" -m etl_gate topics --config "$OUT/gate.toml"
echo "== generating $EVENTS events (350 B, 10% unregistered, 0.5% malformed) into events.raw"
"$PYTHON" -m etl_gate gen --count "$EVENTS" --rules-out "$OUT/rules.json" \
  --config "$OUT/gate.toml" --topic events.raw
echo "== running the gate (2 workers) until all $EVENTS events are decided"
start=$(date +%s.%N)
"$PYTHON" -m etl_gate run --config "$OUT/gate.toml" --max-events "$EVENTS" > "$OUT/totals.json"
end=$(date +%s.%N)
echo "== decisions"
cat "$OUT/totals.json"
"$PYTHON" - "$OUT/gate.toml" "$start" "$end" "$EVENTS" <<'PY'
import sys
from confluent_kafka import Consumer, TopicPartition
from etl_gate.config import load_config
cfg = load_config(sys.argv[1])
c = Consumer({"bootstrap.servers": cfg.kafka.bootstrap_servers, "group.id": "demo-probe"})
t = cfg.topics
print("== events per output topic")
for name in (*t.priority_topics, t.dlq, t.quarantine):
    parts = c.list_topics(name, timeout=10).topics[name].partitions
    n = sum(c.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1] for p in parts)
    print(f"  {name:22s} {n:>9,d}")
c.close()
secs = float(sys.argv[3]) - float(sys.argv[2])
print(f"== {int(sys.argv[4]):,d} events in {secs:.1f}s including start-up and drain")
PY
