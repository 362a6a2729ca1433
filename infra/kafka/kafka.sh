#!/usr/bin/env bash
# Real Apache Kafka (KRaft, loopback) for development, tests and the demo: one node, or a
# cluster of three.
#
#   infra/kafka/kafka.sh start     fetch jars if needed, format once, start, wait, create topics
#   infra/kafka/kafka.sh start --brokers 3   a cluster: three KRaft nodes (broker + controller
#                                  each, static quorum), node i on ports PORT+2(i-1) (clients)
#                                  and PORT+2(i-1)+1 (controller), state in $OWSU_KAFKA_HOME/node-i;
#                                  topics with replication factor 3 and min.insync.replicas=2.
#                                  Fixed at the first start of a state directory; `start` again
#                                  restarts only the nodes that are down.
#   infra/kafka/kafka.sh start --secure   the same, but clients only over TLS (a private CA made
#                                  here with openssl) with SASL/SCRAM-SHA-512, every request
#                                  authorised by ACL (none: refused); fixed at the first start of
#                                  a state directory. The plaintext mode is for the local demo.
#   infra/kafka/kafka.sh user add NAME --role office|aggregator [--group G]
#                                  (secure mode) create a principal with least-privilege ACLs:
#                                  an office writes the three event topics and nothing else; an
#                                  aggregator reads them, uses its group G (default
#                                  owsu-aggregator) and writes the dead-letter topic. Prints what
#                                  to hand over; the password is in a 0600 file, never printed.
#   infra/kafka/kafka.sh user rotate NAME     a new password for NAME (the old one stops working)
#   infra/kafka/kafka.sh user revoke NAME     delete NAME's credentials and ACLs
#   infra/kafka/kafka.sh stop      stop the broker (or every node) started from this state directory
#   infra/kafka/kafka.sh status    say whether it runs, where it listens, where its logs are
#                                  (a cluster: each node, and the quorum's leader)
#   infra/kafka/kafka.sh leader    (a cluster) the node id of the KRaft quorum's leader
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
#   OWSU_KAFKA_PARTITIONS      partitions of the four pipeline topics (default 12; their other
#                              settings are in topics.conf beside this script)
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
# A cluster: $state/cluster holds its node count; node 1's settings give the base port.
nodes=1
if [ -f "$state/cluster" ]; then nodes=$(cat "$state/cluster"); fi
first_props="$state/server.properties"
if [ "$nodes" -gt 1 ]; then first_props="$state/node-1/server.properties"; fi
if [ -z "${OWSU_KAFKA_PORT:-}" ] && [ -f "$first_props" ]; then
  port=$(sed -n 's#^listeners=[A-Z_]*://127.0.0.1:\([0-9]*\),.*#\1#p' "$first_props")
  cport=$(sed -n 's#.*CONTROLLER://127.0.0.1:\([0-9]*\)$#\1#p' "$first_props" | head -1)
fi
port="${port:-9092}"; cport="${cport:-$((port + 1))}"
bootstrap="127.0.0.1:$port"
tls="$state/tls"
admin_props="$state/admin.properties"
# Topic names and settings: topics.conf (the one definition; the test harness reads it too).
topics=(); topic_configs=()
while IFS=$'\t' read -r name configs; do
  case "$name" in ''|'#'*) continue ;; esac
  topics+=("$name"); topic_configs+=("$configs")
done < "$here/topics.conf"

# Node i of a cluster: its state directory and ports (one node: the state directory itself).
node_dir() { if [ "$nodes" -gt 1 ]; then echo "$state/node-$1"; else echo "$state"; fi; }
node_port() { echo $((port + 2 * ($1 - 1))); }
node_cport() { if [ "$nodes" -gt 1 ]; then echo $((port + 2 * ($1 - 1) + 1)); else echo "$cport"; fi; }
# Every node's client address, comma-separated: what clients bootstrap from.
all_bootstrap() {
  local i out=""
  for i in $(seq 1 "$nodes"); do out="${out:+$out,}127.0.0.1:$(node_port "$i")"; done
  echo "$out"
}
if [ "$nodes" -gt 1 ]; then bootstrap=$(all_bootstrap); fi

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

is_secure() { [ -f "$state/secure" ]; }

# Arguments an admin tool needs to reach the broker (the admin principal in secure mode).
admin_args() {
  if is_secure; then echo --bootstrap-server "$bootstrap" --command-config "$admin_props"
  else echo --bootstrap-server "$bootstrap"; fi
}

# A private CA and the broker's certificate (for 127.0.0.1 and localhost), made once per state
# directory with openssl; keys readable by their owner only.
make_tls() {
  [ -f "$tls/broker-keystore.pem" ] && return
  command -v openssl >/dev/null 2>&1 || die "openssl not found: secure mode makes its certificates with it (Debian: apt-get install openssl)."
  mkdir -p "$tls"; chmod 700 "$tls"
  (
    umask 077; cd "$tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=OWSU local CA" \
      -keyout ca.key -out ca.pem >/dev/null 2>&1
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout broker.key -out broker.csr >/dev/null 2>&1
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > san.ext
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile san.ext -out broker.pem >/dev/null 2>&1
    openssl pkcs8 -topk8 -nocrypt -in broker.key -out broker.pk8
    cat broker.pk8 broker.pem ca.pem > broker-keystore.pem
  ) || die "openssl could not make the certificates in $tls"
  chmod 644 "$tls/ca.pem"
}

random_password() { openssl rand -base64 24 | tr -d '/+=\n'; }

client_props() { # NAME PASSWORD: the Java client settings of a principal
  cat <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$1" password="$2";
ssl.truststore.type=PEM
ssl.truststore.location=$tls/ca.pem
PROPS
}

node_alive() { # I: whether node I (1 for a single broker) runs
  local d; d=$(node_dir "$1")
  [ -f "$d/broker.pid" ] || return 1
  local pid st
  pid=$(cat "$d/broker.pid")
  kill -0 "$pid" 2>/dev/null || return 1
  # A killed broker whose parent has not reaped it yet is a zombie: down.
  st=$(ps -o stat= -p "$pid" 2>/dev/null || true)
  case "$st" in Z*|'') return 1 ;; esac
}
pid_alive() { node_alive 1; }
# Whether every node runs.
all_alive() { local i; for i in $(seq 1 "$nodes"); do node_alive "$i" || return 1; done; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The node id of the KRaft quorum's leader (the active controller), or nothing.
quorum_leader() {
  # shellcheck disable=SC2046
  tool org.apache.kafka.tools.MetadataQuorumCommand $(admin_args) describe --status 2>/dev/null \
    | sed -n 's/^LeaderId:[[:space:]]*\([0-9]*\).*/\1/p'
}

describe() {
  if [ "$nodes" -gt 1 ]; then
    local i d
    echo "Kafka $version cluster of $nodes nodes (broker + controller each), plaintext; bootstrap $bootstrap"
    for i in $(seq 1 "$nodes"); do
      d=$(node_dir "$i")
      if node_alive "$i"; then
        echo "  node $i: running (pid $(cat "$d/broker.pid")) on 127.0.0.1:$(node_port "$i") (controller $(node_cport "$i")); log $d/logs/server.log"
      else
        echo "  node $i: DOWN (ports $(node_port "$i")/$(node_cport "$i")); log $d/logs/server.log"
      fi
    done
    echo "  state and data: $state"
    echo "  stop with:      OWSU_KAFKA_HOME=$state $0 stop"
    return
  fi
  if is_secure; then
    echo "Kafka $version broker listening on $bootstrap: TLS + SASL/SCRAM-SHA-512, ACLs (controller 127.0.0.1:$cport)"
    echo "  CA certificate: $tls/ca.pem   admin client settings: $admin_props"
  else
    echo "Kafka $version broker listening on $bootstrap, plaintext (controller 127.0.0.1:$cport)"
  fi
  echo "  state and data: $state"
  echo "  broker log:     $state/logs/server.log  (stdout/stderr: $state/logs/broker.out)"
  echo "  stop with:      OWSU_KAFKA_PORT=$port ${OWSU_KAFKA_HOME:+OWSU_KAFKA_HOME=$state }$0 stop"
}

create_topics() {
  local i rf=1 isr=1 tries
  if [ "$nodes" -ge 3 ]; then rf=3; isr=2; fi
  for i in "${!topics[@]}"; do
    local t="${topics[$i]}" configs=(--config "min.insync.replicas=$isr") c
    IFS=',' read -ra cs <<< "${topic_configs[$i]}"
    for c in "${cs[@]}"; do configs+=(--config "$c"); done
    # A cluster's nodes register one by one: replication factor 3 waits for all three.
    for tries in $(seq 1 30); do
      # shellcheck disable=SC2046
      if tool org.apache.kafka.tools.TopicCommand $(admin_args) --create --if-not-exists \
          --topic "$prefix$t" --partitions "$partitions" --replication-factor "$rf" "${configs[@]}" \
          >/dev/null 2>"$state/create-topics.err"; then
        break
      fi
      [ "$tries" -lt 30 ] || { cat "$state/create-topics.err" >&2; die "could not create topic $prefix$t on $bootstrap (logs under $state)"; }
      sleep 1
    done
  done
  rm -f "$state/create-topics.err"
  echo "topics ready (${partitions} partitions each, replication factor $rf): ${topics[*]/#/$prefix}"
}

# Writes node I's settings, formats its storage once and starts it in the background.
launch_node() {
  local i="$1" d p c template="$here/server.properties.template" admin_pw="" quorum rf=1 isr=1
  d=$(node_dir "$i"); p=$(node_port "$i"); c=$(node_cport "$i")
  if port_open "$p" || port_open "$c"; then
    die "port $p or $c (node $i) is taken by another process; choose other ports with OWSU_KAFKA_PORT=NNNN, or pass that broker to the pipeline with --brokers."
  fi
  mkdir -p "$d/data" "$d/logs"
  if [ "$nodes" -gt 1 ]; then
    local j voters=""
    for j in $(seq 1 "$nodes"); do voters="${voters:+$voters,}$j@127.0.0.1:$(node_cport "$j")"; done
    quorum="controller.quorum.voters=$voters"; rf=3; isr=2
  else
    quorum="controller.quorum.bootstrap.servers=127.0.0.1:$c"
  fi
  if is_secure; then
    make_tls
    if [ ! -f "$state/admin.password" ]; then (umask 077; random_password > "$state/admin.password"); fi
    admin_pw=$(cat "$state/admin.password")
    (umask 077; client_props admin "$admin_pw" > "$admin_props")
    template="$here/server-secure.properties.template"
  fi
  (umask 077; sed -e "s#@PORT@#$p#g" -e "s#@CONTROLLER_PORT@#$c#g" -e "s#@DATA_DIR@#$d/data#g" \
      -e "s#@PARTITIONS@#$partitions#g" -e "s#@TLS_DIR@#$tls#g" -e "s#@ADMIN_PASSWORD@#$admin_pw#g" \
      -e "s#@NODE_ID@#$i#g" -e "s#@QUORUM@#$quorum#g" -e "s#@RF@#$rf#g" -e "s#@MIN_ISR@#$isr#g" \
      "$template" > "$d/server.properties")
  if [ ! -f "$d/data/meta.properties" ]; then
    # Every node of a cluster is formatted with the same cluster id, kept in the state directory.
    if [ ! -f "$state/cluster.id" ]; then tool kafka.tools.StorageTool random-uuid > "$state/cluster.id"; fi
    local mode=(--standalone) scram=()
    if [ "$nodes" -gt 1 ]; then mode=(); fi
    if is_secure; then scram=(--add-scram "SCRAM-SHA-512=[name=admin,password=$admin_pw]"); fi
    tool kafka.tools.StorageTool format -t "$(cat "$state/cluster.id")" -c "$d/server.properties" "${mode[@]}" "${scram[@]}" >/dev/null \
      || die "formatting the KRaft storage in $d/data failed"
  fi
  # setsid + nohup: the broker outlives this script and the terminal that ran it.
  setsid nohup java -Xms"$heap" -Xmx"$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Dlog4j2.configurationFile="$here/log4j2-broker.properties" -Dkafka.logs.dir="$d/logs" \
    -cp "$libs/*" kafka.Kafka "$d/server.properties" > "$d/logs/broker.out" 2>&1 < /dev/null &
  echo $! > "$d/broker.pid"
}

# Waits for node I's client port; dies with its log if it exits first.
await_node() {
  local i="$1" d p n
  d=$(node_dir "$i"); p=$(node_port "$i")
  for n in $(seq 1 120); do
    if ! node_alive "$i"; then
      tail -n 30 "$d/logs/broker.out" "$d/logs/server.log" 2>/dev/null >&2 || true
      die "node $i exited during start-up (logs above; full log: $d/logs/server.log)"
    fi
    if port_open "$p"; then return; fi
    sleep 0.5
  done
  die "node $i did not open 127.0.0.1:$p within 60 s (log: $d/logs/server.log)"
}

start() {
  need
  fetch_jars
  local want=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --secure) want="secure"; shift ;;
      --brokers)
        case "${2:-}" in
          1) shift 2 ;;
          3) want="${want:+$want,}cluster"; shift 2 ;;
          *) die "start --brokers: 1 or 3, not ${2:-nothing}" ;;
        esac ;;
      *) die "start: unknown option $1 (--secure, --brokers 3)" ;;
    esac
  done
  case "$want" in
    secure,cluster|cluster,secure) die "start: --secure and --brokers 3 together are not supported yet; the cluster is plaintext on loopback" ;;
    secure)
      if [ -f "$state/data/meta.properties" ] && ! is_secure; then
        die "$state holds a plaintext broker; a secure one needs its own state: set OWSU_KAFKA_PORT (or OWSU_KAFKA_HOME) to another value."
      fi
      [ "$nodes" -eq 1 ] || die "$state holds a cluster; a secure broker needs its own state: set OWSU_KAFKA_PORT (or OWSU_KAFKA_HOME) to another value."
      mkdir -p "$state"; touch "$state/secure" ;;
    cluster)
      if [ "$nodes" -eq 1 ] && [ -f "$state/data/meta.properties" ]; then
        die "$state holds a single broker; a cluster needs its own state: set OWSU_KAFKA_PORT (or OWSU_KAFKA_HOME) to another value."
      fi
      mkdir -p "$state"; echo 3 > "$state/cluster"; nodes=3; bootstrap=$(all_bootstrap) ;;
  esac
  if all_alive; then
    echo "kafka.sh: already running."
    describe
    create_topics
    return
  fi
  local i
  for i in $(seq 1 "$nodes"); do node_alive "$i" || launch_node "$i"; done
  for i in $(seq 1 "$nodes"); do await_node "$i"; done
  if [ "$nodes" -gt 1 ]; then
    echo "kafka.sh: started the cluster's nodes that were down."
  else
    echo "kafka.sh: started (pid $(cat "$state/broker.pid"))."
  fi
  if is_secure; then
    # The port opens before SCRAM credentials and ACLs are served: wait for an admin request.
    for i in $(seq 1 60); do
      # shellcheck disable=SC2046
      tool org.apache.kafka.tools.TopicCommand $(admin_args) --list >/dev/null 2>&1 && break
      sleep 1
    done
  fi
  describe
  create_topics
}

stop() {
  local i d pid n pids=() stopped=0
  # Every node at once: a node stopped while the others are already gone would wait for a
  # quorum of controllers that no longer exists.
  for i in $(seq 1 "$nodes"); do
    d=$(node_dir "$i")
    if node_alive "$i"; then kill "$(cat "$d/broker.pid")"; pids+=("$i:$(cat "$d/broker.pid")"); fi
    rm -f "$d/broker.pid"
  done
  if [ "${#pids[@]}" -eq 0 ]; then echo "kafka.sh: no broker running from $state."; return; fi
  for n in $(seq 1 60); do
    local up=0
    for i in "${pids[@]}"; do kill -0 "${i#*:}" 2>/dev/null && up=1; done
    [ "$up" -eq 0 ] && break
    sleep 0.5
  done
  for i in "${pids[@]}"; do
    pid="${i#*:}"
    if kill -0 "$pid" 2>/dev/null; then echo "kafka.sh: node ${i%%:*} did not stop in 30 s; killing it." >&2; kill -9 "$pid"; fi
    stopped=$((stopped + 1))
  done
  if [ "$nodes" -gt 1 ]; then echo "kafka.sh: stopped $stopped node(s) of the cluster in $state."
  else echo "kafka.sh: stopped the broker on $bootstrap."; fi
}

acl() { # add|remove ARGS...: AclCommand as admin
  local op="$1"; shift
  # shellcheck disable=SC2046
  tool org.apache.kafka.tools.AclCommand $(admin_args) "--$op" --force "$@" >/dev/null
}

role_acls() { # add|remove NAME ROLE GROUP
  local op="$1" name="$2" role="$3" group="$4" t
  case "$role" in
    office)
      for t in "${topics[@]:0:3}"; do
        acl "$op" --allow-principal "User:$name" --operation Write --operation Describe --topic "$prefix$t"
      done ;;
    aggregator)
      for t in "${topics[@]:0:3}"; do
        acl "$op" --allow-principal "User:$name" --operation Read --operation Describe --topic "$prefix$t"
      done
      acl "$op" --allow-principal "User:$name" --operation Write --operation Describe --topic "$prefix${topics[3]}"
      acl "$op" --allow-principal "User:$name" --operation Read --group "$group" ;;
    *) die "user: --role must be office or aggregator, not ${role:-nothing}" ;;
  esac
}

set_password() { # NAME: a new SCRAM password, written to a 0600 file
  local name="$1" pw
  pw=$(random_password)
  # shellcheck disable=SC2046
  tool kafka.admin.ConfigCommand $(admin_args) --alter --entity-type users --entity-name "$name" \
    --add-config "SCRAM-SHA-512=[iterations=8192,password=$pw]" >/dev/null \
    || die "could not set the credentials of $name"
  mkdir -p "$state/users"; chmod 700 "$state/users"
  (umask 077; printf '%s\n' "$pw" > "$state/users/$name.password")
}

handover() { # NAME ROLE
  cat <<TEXT
hand to the operator of $1 ($2), over a channel you trust:
  OWSU_BROKERS=$bootstrap
  OWSU_KAFKA_SECURITY_PROTOCOL=sasl_ssl
  OWSU_KAFKA_SASL_MECHANISM=SCRAM-SHA-512
  OWSU_KAFKA_SASL_USERNAME=$1
  OWSU_KAFKA_SASL_PASSWORD_FILE=<where they keep> $state/users/$1.password   (mode 0600)
  OWSU_KAFKA_SSL_CA=<where they keep> $tls/ca.pem
TEXT
}

user() {
  is_secure || die "user: the broker in $state is not in secure mode (start it with --secure)"
  pid_alive || die "user: the broker in $state is not running"
  local cmd="${1:-}" name="${2:-}" role="" group="owsu-aggregator"
  [ -n "$name" ] || die "user $cmd: which user? (e.g. user add office-kh-0101 --role office)"
  shift 2
  while [ $# -gt 0 ]; do
    case "$1" in
      --role) role="${2:-}"; shift 2 ;;
      --group) group="${2:-}"; shift 2 ;;
      *) die "user: unknown option $1" ;;
    esac
  done
  case "$cmd" in
    add)
      role_acls add "$name" "$role" "$group"
      set_password "$name"
      printf '%s %s\n' "$role" "$group" > "$state/users/$name.role"
      echo "kafka.sh: user $name ($role) created"
      handover "$name" "$role" ;;
    rotate)
      [ -f "$state/users/$name.role" ] || die "user rotate: no user $name"
      set_password "$name"
      echo "kafka.sh: new password for $name; the old one no longer works"
      handover "$name" "$(cut -d' ' -f1 "$state/users/$name.role")" ;;
    revoke)
      [ -f "$state/users/$name.role" ] || die "user revoke: no user $name"
      read -r role group < "$state/users/$name.role"
      # shellcheck disable=SC2046
      tool kafka.admin.ConfigCommand $(admin_args) --alter --entity-type users --entity-name "$name" \
        --delete-config SCRAM-SHA-512 >/dev/null || die "could not delete the credentials of $name"
      role_acls remove "$name" "$role" "$group"
      rm -f "$state/users/$name.password" "$state/users/$name.role"
      echo "kafka.sh: user $name revoked (credentials and ACLs deleted)" ;;
    *) die "user: add, rotate or revoke" ;;
  esac
}

case "${1:-}" in
  start) shift; start "$@" ;;
  user) shift; need; fetch_jars; user "$@" ;;
  stop) stop ;;
  status)
    if [ "$nodes" -gt 1 ]; then
      describe
      if all_alive; then echo "  quorum leader (active controller): node $(need; fetch_jars; quorum_leader)"; else exit 3; fi
    elif pid_alive; then echo "running (pid $(cat "$state/broker.pid"))"; describe; else echo "not running ($state)"; exit 3; fi ;;
  leader) need; fetch_jars; quorum_leader ;;
  topics)
    need; fetch_jars
    # shellcheck disable=SC2046
    tool org.apache.kafka.tools.TopicCommand $(admin_args) --describe \
      | grep -E '^Topic:' | sed -E 's/\tTopicId: [^\t]*//' ;;
  logs) tail -n 100 -F "$(node_dir 1)/logs/server.log" ;;
  tool) shift; need; fetch_jars; tool "$@" ;;
  *) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
