#!/usr/bin/env bash
# Real Apache Kafka (KRaft, single node, loopback) for development, tests and the demo.
#
#   infra/kafka/kafka.sh start     fetch jars if needed, format once, start, wait, create topics
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
  port=$(sed -n 's#^listeners=[A-Z_]*://127.0.0.1:\([0-9]*\),.*#\1#p' "$state/server.properties")
  cport=$(sed -n 's#.*CONTROLLER://127.0.0.1:\([0-9]*\)$#\1#p' "$state/server.properties" | head -1)
fi
port="${port:-9092}"; cport="${cport:-$((port + 1))}"
bootstrap="127.0.0.1:$port"
tls="$state/tls"
admin_props="$state/admin.properties"
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

pid_alive() { [ -f "$state/broker.pid" ] && kill -0 "$(cat "$state/broker.pid")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

describe() {
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
  local t
  for t in "${topics[@]}"; do
    # shellcheck disable=SC2046
    tool org.apache.kafka.tools.TopicCommand $(admin_args) --create --if-not-exists \
      --topic "$prefix$t" --partitions "$partitions" --replication-factor 1 >/dev/null \
      || die "could not create topic $prefix$t on $bootstrap (broker log: $state/logs/server.log)"
  done
  echo "topics ready (${partitions} partitions each): ${topics[*]/#/$prefix}"
}

start() {
  need
  fetch_jars
  if [ "${1:-}" = "--secure" ]; then
    if [ -f "$state/data/meta.properties" ] && ! is_secure; then
      die "$state holds a plaintext broker; a secure one needs its own state: set OWSU_KAFKA_PORT (or OWSU_KAFKA_HOME) to another value."
    fi
    mkdir -p "$state"; touch "$state/secure"
  elif [ -n "${1:-}" ]; then
    die "start: unknown option $1 (only --secure)"
  fi
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
  local template="$here/server.properties.template" admin_pw=""
  if is_secure; then
    make_tls
    if [ ! -f "$state/admin.password" ]; then (umask 077; random_password > "$state/admin.password"); fi
    admin_pw=$(cat "$state/admin.password")
    (umask 077; client_props admin "$admin_pw" > "$admin_props")
    template="$here/server-secure.properties.template"
  fi
  (umask 077; sed -e "s#@PORT@#$port#g" -e "s#@CONTROLLER_PORT@#$cport#g" -e "s#@DATA_DIR@#$state/data#g" \
      -e "s#@PARTITIONS@#$partitions#g" -e "s#@TLS_DIR@#$tls#g" -e "s#@ADMIN_PASSWORD@#$admin_pw#g" \
      "$template" > "$state/server.properties")
  if [ ! -f "$state/data/meta.properties" ]; then
    local id
    id=$(tool kafka.tools.StorageTool random-uuid)
    local scram=()
    if is_secure; then scram=(--add-scram "SCRAM-SHA-512=[name=admin,password=$admin_pw]"); fi
    tool kafka.tools.StorageTool format -t "$id" -c "$state/server.properties" --standalone "${scram[@]}" >/dev/null \
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
  if ! pid_alive; then echo "kafka.sh: no broker running from $state."; rm -f "$state/broker.pid"; return; fi
  local pid i
  pid=$(cat "$state/broker.pid")
  kill "$pid"
  for i in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && { echo "kafka.sh: broker did not stop in 30 s; killing it." >&2; kill -9 "$pid"; }
  rm -f "$state/broker.pid"
  echo "kafka.sh: stopped the broker on $bootstrap."
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
  start) start "${2:-}" ;;
  user) shift; need; fetch_jars; user "$@" ;;
  stop) stop ;;
  status)
    if pid_alive; then echo "running (pid $(cat "$state/broker.pid"))"; describe; else echo "not running ($state)"; exit 3; fi ;;
  topics)
    need; fetch_jars
    # shellcheck disable=SC2046
    tool org.apache.kafka.tools.TopicCommand $(admin_args) --describe \
      | grep -E '^Topic:' | sed -E 's/\tTopicId: [^\t]*//' ;;
  logs) tail -n 100 -F "$state/logs/server.log" ;;
  tool) shift; need; fetch_jars; tool "$@" ;;
  *) sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
