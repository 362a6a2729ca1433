#!/usr/bin/env bash
# Real Apache Kafka (KRaft, single node, loopback) for development, tests and the demo.
#
#   infra/kafka/kafka.sh start     fetch jars if needed, format once, start, wait, create topics
#   infra/kafka/kafka.sh stop      stop the broker started from this state directory
#   infra/kafka/kafka.sh status    say whether it runs, where it listens, where its logs are
#   infra/kafka/kafka.sh topics    list topics with partition counts (Kafka's own TopicCommand)
#   infra/kafka/kafka.sh logs      follow the broker log
#   infra/kafka/kafka.sh tool CLASS ARGS...   run any Kafka tool class with the broker's classpath
#
# Every call is safe to repeat: `start` on a running broker only makes sure the topics exist.
#
# Environment (all optional):
#   OWSU_CACHE                 cache root (default ~/.cache/owsu): jars and broker state live here, never in the repo
#   OWSU_KAFKA_HOME            state directory of this broker (default $OWSU_CACHE/kafka-run/<port>)
#   OWSU_KAFKA_PORT            client port (default 9092); controller port is OWSU_KAFKA_CONTROLLER_PORT (default port+1)
#   OWSU_KAFKA_PARTITIONS      partitions of the four pipeline topics (default 12)
#   OWSU_KAFKA_TOPIC_PREFIX    prefix for the topic names (default none), e.g. for a test run
#   OWSU_KAFKA_HEAP            broker heap (default 512M)
#   OWSU_KAFKA_VERSION         Kafka version fetched from Maven Central (default 4.1.1, see pom.xml)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${OWSU_CACHE:-$HOME/.cache/owsu}"
version="${OWSU_KAFKA_VERSION:-4.1.1}"
libs="$cache/kafka-$version/libs"
port="${OWSU_KAFKA_PORT:-9092}"
cport="${OWSU_KAFKA_CONTROLLER_PORT:-$((port + 1))}"
state="${OWSU_KAFKA_HOME:-$cache/kafka-run/$port}"
partitions="${OWSU_KAFKA_PARTITIONS:-12}"
prefix="${OWSU_KAFKA_TOPIC_PREFIX:-}"
heap="${OWSU_KAFKA_HEAP:-512M}"
# A broker started earlier from this state directory may use other ports than the defaults.
if [ -z "${OWSU_KAFKA_PORT:-}" ] && [ -f "$state/server.properties" ]; then
  port=$(sed -n 's#^listeners=PLAINTEXT://127.0.0.1:\([0-9]*\),.*#\1#p' "$state/server.properties")
  cport=$(sed -n 's#.*CONTROLLER://127.0.0.1:\([0-9]*\)$#\1#p' "$state/server.properties" | head -1)
fi
port="${port:-9092}"; cport="${cport:-$((port + 1))}"
bootstrap="127.0.0.1:$port"
topics=(owsu.service-events.v1 owsu.complaint-events.v1 owsu.unit-days.v1 owsu.dead-letter.v1)

die() { echo "kafka.sh: $*" >&2; exit 1; }

need() {
  command -v java >/dev/null 2>&1 || die "java not found: install a JDK 17 or newer (Debian: apt-get install openjdk-17-jdk-headless) and put java on PATH."
  local v
  v=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
  [ -n "$v" ] && [ "$v" -ge 17 ] || die "Kafka $version needs Java 17 or newer; 'java -version' says ${v:-nothing readable}."
}

fetch_jars() {
  if [ -f "$libs/.complete" ]; then return; fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found: Maven fetches Kafka from Maven Central (Debian: apt-get install maven)."
  echo "kafka.sh: fetching Apache Kafka $version from Maven Central into $libs (once) ..." >&2
  mkdir -p "$libs"
  mvn -q -B -f "$here/pom.xml" -Dkafka.version="$version" \
    -Dmaven.repo.local="$cache/m2" \
    dependency:copy-dependencies -DoutputDirectory="$libs" >&2 \
    || die "Maven could not fetch Kafka $version (see the output above); check access to Maven Central."
  ls "$libs"/kafka_2.13-*.jar >/dev/null 2>&1 || die "Maven ran but $libs has no kafka_2.13 jar."
  touch "$libs/.complete"
}

tool() {
  java -Xmx256M -cp "$libs/*" -Dlog4j2.configurationFile="$here/log4j2-tools.properties" "$@"
}

pid_alive() { [ -f "$state/broker.pid" ] && kill -0 "$(cat "$state/broker.pid")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

describe() {
  echo "Kafka $version broker listening on $bootstrap (controller 127.0.0.1:$cport)"
  echo "  state and data: $state"
  echo "  broker log:     $state/logs/server.log  (stdout/stderr: $state/logs/broker.out)"
  echo "  stop with:      OWSU_KAFKA_PORT=$port ${OWSU_KAFKA_HOME:+OWSU_KAFKA_HOME=$state }$0 stop"
}

create_topics() {
  local t
  for t in "${topics[@]}"; do
    tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" --create --if-not-exists \
      --topic "$prefix$t" --partitions "$partitions" --replication-factor 1 >/dev/null \
      || die "could not create topic $prefix$t on $bootstrap (broker log: $state/logs/server.log)"
  done
  echo "topics ready (${partitions} partitions each): ${topics[*]/#/$prefix}"
}

start() {
  need
  fetch_jars
  if pid_alive; then
    echo "kafka.sh: already running (pid $(cat "$state/broker.pid"))."
    describe
    create_topics
    return
  fi
  if port_open "$port"; then
    die "port $port is taken by another process; choose another with OWSU_KAFKA_PORT=NNNN, or pass that broker to the pipeline with --brokers."
  fi
  mkdir -p "$state/data" "$state/logs"
  sed -e "s#@PORT@#$port#g" -e "s#@CONTROLLER_PORT@#$cport#g" -e "s#@DATA_DIR@#$state/data#g" \
      -e "s#@PARTITIONS@#$partitions#g" "$here/server.properties.template" > "$state/server.properties"
  if [ ! -f "$state/data/meta.properties" ]; then
    local id
    id=$(tool kafka.tools.StorageTool random-uuid)
    tool kafka.tools.StorageTool format -t "$id" -c "$state/server.properties" --standalone >/dev/null \
      || die "formatting the KRaft storage in $state/data failed"
  fi
  # setsid + nohup: the broker outlives this script and the terminal that ran it.
  setsid nohup java -Xms"$heap" -Xmx"$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Dlog4j2.configurationFile="$here/log4j2-broker.properties" -Dkafka.logs.dir="$state/logs" \
    -cp "$libs/*" kafka.Kafka "$state/server.properties" > "$state/logs/broker.out" 2>&1 < /dev/null &
  echo $! > "$state/broker.pid"
  local i
  for i in $(seq 1 120); do
    if ! pid_alive; then
      tail -n 30 "$state/logs/broker.out" "$state/logs/server.log" 2>/dev/null >&2 || true
      die "the broker exited during start-up (logs above; full log: $state/logs/server.log)"
    fi
    if port_open "$port"; then break; fi
    sleep 0.5
  done
  port_open "$port" || die "the broker did not open $bootstrap within 60 s (log: $state/logs/server.log)"
  echo "kafka.sh: started (pid $(cat "$state/broker.pid"))."
  describe
  create_topics
}

stop() {
  if ! pid_alive; then echo "kafka.sh: no broker running from $state."; rm -f "$state/broker.pid"; return; fi
  local pid i
  pid=$(cat "$state/broker.pid")
  kill "$pid"
  for i in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && { echo "kafka.sh: broker did not stop in 30 s; killing it." >&2; kill -9 "$pid"; }
  rm -f "$state/broker.pid"
  echo "kafka.sh: stopped the broker on $bootstrap."
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if pid_alive; then echo "running (pid $(cat "$state/broker.pid"))"; describe; else echo "not running ($state)"; exit 3; fi ;;
  topics)
    need; fetch_jars
    tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" --describe \
      | grep -E '^Topic:' | sed -E 's/\tTopicId: [^\t]*//' ;;
  logs) tail -n 100 -F "$state/logs/server.log" ;;
  tool) shift; need; fetch_jars; tool "$@" ;;
  *) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
