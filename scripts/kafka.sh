#!/usr/bin/env bash
# Run a real single-node Apache Kafka broker (KRaft, broker+controller in one
# JVM) on loopback, for etl-gate's integration tests.
#
# The jars come from Maven Central (scripts/kafka/pom.xml), since the Apache
# download site is unreachable here and no Docker engine runs.
#
# Usage: scripts/kafka.sh install|start|wait|stop|wipe|status|bootstrap
# Settings are the env vars below (defaults after :-), plus KAFKA_OPTS (extra
# JVM options) and KAFKA_EXTRA_PROPS (newline-separated server.properties
# lines). A second broker only needs its own KAFKA_DATA_DIR and two free ports.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
POM="$SCRIPT_DIR/kafka/pom.xml"
LOG4J_CONF="$SCRIPT_DIR/kafka/log4j2.properties"

KAFKA_HOME="${KAFKA_HOME:-$HOME/.cache/etl-gate/kafka}"
KAFKA_DATA_DIR="${KAFKA_DATA_DIR:-/tmp/etl-gate-kafka}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx512m -Xms512m}"
# The collector: a JVM refuses two, so it cannot go in KAFKA_OPTS. ZGC against
# G1 at the gate's half load was suggestive, not conclusive (bench/RESULTS.md
# 2026-12-07 19:12-19:33): G1, the JVM's default, stays.
KAFKA_GC_OPTS="${KAFKA_GC_OPTS:--XX:+UseG1GC}"
KAFKA_WAIT_SECONDS="${KAFKA_WAIT_SECONDS:-90}"
# Request threads sized to the machine. Kafka's defaults (3 network, 8 I/O
# threads) are for servers; on a 2-core box shared with the clients the idle
# ones still cost: 0.39-0.44 cores of broker CPU at 20k events/s through a
# gate-like pipeline, 0.24-0.27 with 1 and 2 (bench/RESULTS.md, 05:25).
CORES="$(nproc 2>/dev/null || echo 2)"
KAFKA_NETWORK_THREADS="${KAFKA_NETWORK_THREADS:-$(( CORES >= 6 ? 3 : CORES >= 4 ? 2 : 1 ))}"
KAFKA_IO_THREADS="${KAFKA_IO_THREADS:-$(( CORES >= 8 ? 8 : CORES >= 2 ? CORES : 2 ))}"
PYTHON="${PYTHON:-python3}"  # must have confluent-kafka

BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
PID_FILE="$KAFKA_DATA_DIR/kafka.pid"
OUT_LOG="$KAFKA_DATA_DIR/kafka.out"      # JVM stdout/stderr
SERVER_LOG="$KAFKA_DATA_DIR/server.log"  # log4j (see kafka/log4j2.properties)
PROPS="$KAFKA_DATA_DIR/server.properties"

log() { echo "kafka.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# Major version of a java binary: "17.0.15" -> 17, "1.8.0_392" -> 8.
java_major() {
  local v
  v="$("$1" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n1)"
  v="${v#1.}"; v="${v%%[._+-]*}"; echo "${v:-0}"
}

# Kafka 4.x brokers need Java >= 17; Maven only to fetch jars (ensure_tools mvn).
# Installs Debian's JRE and Maven if one is missing.
ensure_tools() {
  local need=0
  if [[ "${1:-}" == mvn ]] && ! command -v mvn >/dev/null; then need=1; fi
  if ! command -v java >/dev/null || (( $(java_major java) < 17 )); then need=1; fi
  if (( need )); then
    (( EUID == 0 )) || die "need java >= 17 and mvn; run as root to apt-get them"
    log "installing openjdk-17-jre-headless and maven with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null
  fi
  JAVA="$(command -v java)"
  # An older default java may still shadow the one apt just installed.
  if (( $(java_major "$JAVA") < 17 )); then
    local j; for j in /usr/lib/jvm/java-17-openjdk-*/bin/java; do JAVA="$j"; done
    [[ -x "$JAVA" ]] || die "java >= 17 not found"
  fi
}

# The marker holds the pom's checksum, so bumping the Kafka version in the pom
# refetches instead of mixing two versions' jars on one classpath.
fetch_libs() {
  local sum; sum="$(sha256sum "$POM" | cut -d' ' -f1)"
  if [[ "$(cat "$KAFKA_HOME/libs/.complete" 2>/dev/null)" == "$sum" ]]; then ensure_tools; return; fi
  ensure_tools mvn
  log "fetching Kafka jars into $KAFKA_HOME/libs"
  rm -rf "$KAFKA_HOME/libs"
  # Maven's output (stray ANSI codes even with -q) is shown only on failure.
  mvn -q -B -f "$POM" dependency:copy-dependencies \
    -DoutputDirectory="$KAFKA_HOME/libs" -DincludeScope=runtime >"$KAFKA_HOME/mvn.log" 2>&1 \
    || { cat "$KAFKA_HOME/mvn.log" >&2; die "mvn failed fetching Kafka jars"; }
  rm -rf "$SCRIPT_DIR/kafka/target"  # copy-dependencies leaves an empty target/
  echo "$sum" > "$KAFKA_HOME/libs/.complete"
}

cmd_install() {
  mkdir -p "$KAFKA_HOME"
  # Locked: brokers started in parallel (e.g. by pytest-xdist) must not run
  # apt-get or fill libs/ at the same time. A subshell, so the broker started
  # later does not inherit (and hold) the lock's fd.
  ( flock 9; fetch_libs ) 9>"$KAFKA_HOME/.install.lock"
  ensure_tools  # sets JAVA in this shell
}

# Alive and really this data dir's broker (a stale pid file may name a
# recycled pid): its command line names our server.properties.
running_pid() {
  local pid; pid="$(cat "$PID_FILE" 2>/dev/null)" || return 1
  [[ -n "$pid" ]] && grep -qaF "$PROPS" "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

# log4j's own shutdown hook would stop logging (and warn) while Kafka's
# shutdown hook is still logging; the File appender flushes each line anyway.
java_cmd() {  # java_cmd MAINCLASS ARGS... -> the full command in JAVA_CMD
  # shellcheck disable=SC2206  # heap/opts are meant to be word-split
  JAVA_CMD=("$JAVA" $KAFKA_HEAP_OPTS ${KAFKA_OPTS:-} $KAFKA_GC_OPTS -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$LOG4J_CONF" -Dkafka.logs.dir="$KAFKA_DATA_DIR"
    -Dlog4j2.shutdownHookEnabled=false
    -cp "$KAFKA_HOME/libs/*" "$@")
}
storage_tool() { java_cmd kafka.tools.StorageTool "$@"; "${JAVA_CMD[@]}"; }

write_props() {
  cat > "$PROPS" <<EOF
# Written by scripts/kafka.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
# Static quorum: StorageTool format needs no --standalone/--initial-controllers.
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KAFKA_DATA_DIR/logs
num.network.threads=$KAFKA_NETWORK_THREADS
num.io.threads=$KAFKA_IO_THREADS
num.partitions=1
auto.create.topics.enable=false
# One broker: internal topics can only have one replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Fewer internal partitions: the first group/transaction is ready sooner.
offsets.topic.num.partitions=1
transaction.state.log.num.partitions=1
group.initial.rebalance.delay.ms=0
# Lets tests use short consumer session timeouts.
group.min.session.timeout.ms=1000
# The default 128 MiB dedupe buffer kills a 512 MiB heap at startup.
log.cleaner.dedupe.buffer.size=33554432
${KAFKA_EXTRA_PROPS:-}
EOF
}

cmd_start() {
  local pid port cluster_id
  if pid="$(running_pid)"; then log "already running (pid $pid) on $BOOTSTRAP"; return 0; fi
  # A busy port would make the broker die, and until then another broker on
  # it could answer our readiness probe: refuse up front.
  for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then die "port $port is already in use"; fi
  done
  cmd_install
  mkdir -p "$KAFKA_DATA_DIR"
  write_props
  # Format once; a restart must keep the data (reformatting would refuse, or
  # with --ignore-formatted silently keep a cluster id we'd have to track).
  if [[ ! -f "$KAFKA_DATA_DIR/logs/meta.properties" ]]; then
    cluster_id="$(storage_tool random-uuid)"
    storage_tool format -t "$cluster_id" -c "$PROPS" >>"$OUT_LOG" 2>&1 \
      || { tail -n 20 "$OUT_LOG" >&2; die "storage format failed"; }
  fi
  # setsid: the broker outlives this script and is not hit by the caller's
  # Ctrl-C. bash -c writes its own pid, which exec hands on to the JVM (more
  # reliable than $!, as setsid forks when it is a process group leader).
  rm -f "$PID_FILE"
  java_cmd kafka.Kafka "$PROPS"
  # shellcheck disable=SC2016  # $$ and $@ are for the inner bash
  setsid bash -c 'echo $$ > "$0"; exec "$@"' "$PID_FILE" "${JAVA_CMD[@]}" \
    >>"$OUT_LOG" 2>&1 </dev/null &
  for _ in $(seq 50); do [[ -s "$PID_FILE" ]] && break; sleep 0.1; done
  log "started (pid $(cat "$PID_FILE")) on $BOOTSTRAP, data in $KAFKA_DATA_DIR"
  cmd_wait
}

# Ready = an admin Metadata call answers with a broker of *our* cluster id (so
# not some other broker on the port), not just an open port. Also watches the
# pid so a broker that died at startup fails fast.
cmd_wait() {
  local pid cluster_id t0=$SECONDS rc=0
  pid="$(cat "$PID_FILE" 2>/dev/null)" || die "no pid file in $KAFKA_DATA_DIR; not started"
  cluster_id="$(sed -n 's/^cluster.id=//p' "$KAFKA_DATA_DIR/logs/meta.properties")"
  "$PYTHON" - "$BOOTSTRAP" "$pid" "$KAFKA_WAIT_SECONDS" "$cluster_id" <<'PY' || rc=$?
import sys, time
from confluent_kafka.admin import AdminClient
bootstrap, pid, budget, cluster_id = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
def alive():  # a zombie (state Z) is dead too
    try: return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError: return False
# log_level 0: librdkafka would print every refused connection while we poll.
admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
deadline, last = time.monotonic() + budget, "no attempt"
while time.monotonic() < deadline:
    if not alive():
        sys.exit(2)
    try:
        md = admin.list_topics(timeout=2)
        if md.brokers and md.cluster_id == cluster_id:
            sys.exit(0)
        last = f"metadata: cluster {md.cluster_id}, want {cluster_id}; brokers {md.brokers}"
    except Exception as e:
        last = e
    time.sleep(0.25)
print(f"last error: {last}", file=sys.stderr)
sys.exit(1)
PY
  case $rc in
    0) log "ready on $BOOTSTRAP after $((SECONDS - t0))s" ;;
    2) tail -n 30 "$OUT_LOG" "$SERVER_LOG" >&2 2>/dev/null || true
       die "broker (pid $pid) died during startup; logs in $KAFKA_DATA_DIR" ;;
    *) tail -n 30 "$SERVER_LOG" >&2 2>/dev/null || true
       die "broker not ready on $BOOTSTRAP after ${KAFKA_WAIT_SECONDS}s" ;;
  esac
}

wait_gone() {  # wait_gone PID TENTHS_OF_SECONDS
  for _ in $(seq "$2"); do [[ -e "/proc/$1" ]] || return 0; sleep 0.1; done
  [[ ! -e "/proc/$1" ]]
}

cmd_stop() {
  local pid
  if ! pid="$(running_pid)"; then rm -f "$PID_FILE"; return 0; fi
  # SIGTERM runs a controlled shutdown (flushes logs); give it 30 s.
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_gone "$pid" 300; then
    log "pid $pid ignored SIGTERM for 30s; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 50 || die "pid $pid survived SIGKILL"
  fi
  rm -f "$PID_FILE"
  log "stopped (pid $pid)"
}

cmd_wipe() {
  [[ -n "$KAFKA_DATA_DIR" && "$KAFKA_DATA_DIR" != "/" ]] || die "refusing to wipe '$KAFKA_DATA_DIR'"
  cmd_stop
  rm -rf "$KAFKA_DATA_DIR"
}

cmd_status() {
  local pid
  if pid="$(running_pid)"; then echo "running (pid $pid) bootstrap $BOOTSTRAP"
  else echo "stopped (bootstrap would be $BOOTSTRAP)"; return 3; fi
}

case "${1:-}" in
  install|start|wait|stop|wipe|status) "cmd_$1" ;;
  bootstrap) echo "$BOOTSTRAP" ;;
  *) die "usage: $0 install|start|wait|stop|wipe|status|bootstrap" ;;
esac
