#!/usr/bin/env bash
# A real, single-node Apache Kafka (KRaft: broker and controller in one JVM) on 127.0.0.1.
#
#   scripts/kafka.sh up      resolve the jars (once), format storage (once), start, wait until ready
#   scripts/kafka.sh down    stop the broker and wipe its data and logs
#   scripts/kafka.sh stop    stop the broker, keep its data
#   scripts/kafka.sh status  say whether it runs and answers
#   scripts/kafka.sh logs    follow the broker's log
#
# Settings (environment):
#   KAFKA_VERSION            Apache Kafka version from Maven Central      (default 4.1.1)
#   KAFKA_PORT               client listener port                         (default 9092)
#   KAFKA_CONTROLLER_PORT    KRaft controller port                        (default KAFKA_PORT+1)
#   KAFKA_HEAP               JVM heap                                     (default 1G)
#   KAFKA_START_TIMEOUT      seconds to wait for the broker to answer     (default 90)
#   PARLEY_CACHE_DIR         where resolved jars are kept, outside the repo (default ~/.cache/parley)
#   PARLEY_RUN_DIR           where data, logs and the pid file live       (default <repo>/.run)
#   MAVEN                    the Maven command                            (default mvn)
#
# Running `up` twice is harmless. Another process on the port is an error that names it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
version="${KAFKA_VERSION:-4.1.1}"
port="${KAFKA_PORT:-9092}"
controller_port="${KAFKA_CONTROLLER_PORT:-$((port + 1))}"
heap="${KAFKA_HEAP:-1G}"
start_timeout="${KAFKA_START_TIMEOUT:-90}"
cache="${PARLEY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/parley}"
libs="$cache/kafka-$version/libs"
run="${PARLEY_RUN_DIR:-$root/.run}/kafka-$port"
pidfile="$run/kafka.pid"
host=127.0.0.1
maven="${MAVEN:-mvn}"

say() { printf 'kafka: %s\n' "$*"; }
die() { printf 'kafka: error: %s\n' "$*" >&2; exit 1; }

python_bin() { command -v python3 || command -v python || die "python3 is required to probe the broker"; }

need_java() {
  command -v java >/dev/null 2>&1 || die "Java 17 or newer is required and 'java' is not on PATH.
  Debian/Ubuntu: sudo apt-get install -y openjdk-17-jre-headless    macOS: brew install openjdk@17"
  local major
  major="$(java -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit}')"
  [[ "$major" =~ ^[0-9]+$ ]] || die "could not read the Java version from 'java -version'"
  ((major >= 17)) || die "Kafka $version needs Java 17 or newer; 'java' here is Java $major.
  Debian/Ubuntu: sudo apt-get install -y openjdk-17-jre-headless (or set JAVA_HOME and PATH to a newer JDK)"
}

resolve_jars() {
  [[ -f "$libs/.complete" ]] && return 0
  command -v "$maven" >/dev/null 2>&1 || die "Maven is required to fetch the Kafka jars from Maven Central and '$maven' is not on PATH.
  Debian/Ubuntu: sudo apt-get install -y maven    macOS: brew install maven"
  say "resolving org.apache.kafka:kafka_2.13:$version and a log4j2 backend with Maven into $libs"
  rm -rf "$libs"
  mkdir -p "$libs"
  "$maven" -B -Dstyle.color=never -f "$here/kafka/pom.xml" -Dkafka.version="$version" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$libs" >"$cache/maven-kafka.log" 2>&1 \
    || { tail -n 30 "$cache/maven-kafka.log" >&2
         die "Maven could not resolve Kafka $version (is Maven Central reachable? is the version right?)"; }
  ls "$libs"/kafka_2.13-"$version".jar >/dev/null 2>&1 || die "Maven ran but kafka_2.13-$version.jar is missing in $libs"
  touch "$libs/.complete"
}

write_config() {
  mkdir -p "$run/data" "$run/logs"
  cat >"$run/server.properties" <<EOF
# Written by scripts/kafka.sh: a single-node KRaft cluster for local runs and tests.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$host:$controller_port
listeners=PLAINTEXT://$host:$port,CONTROLLER://$host:$controller_port
advertised.listeners=PLAINTEXT://$host:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$run/data
num.partitions=3
# Topics are created on purpose (parley stream topics create, test fixtures), never by a typo.
auto.create.topics.enable=false
# One node: every internal topic has one replica.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests start many short-lived consumer groups: do not wait for more members to join.
group.initial.rebalance.delay.ms=0
log.retention.hours=24
EOF
  cat >"$run/log4j2.properties" <<EOF
status = warn
appender.server.type = RollingFile
appender.server.name = server
appender.server.fileName = $run/logs/server.log
appender.server.filePattern = $run/logs/server.log.%i
appender.server.layout.type = PatternLayout
appender.server.layout.pattern = [%d] %p %m (%c)%n
appender.server.policies.type = Policies
appender.server.policies.size.type = SizeBasedTriggeringPolicy
appender.server.policies.size.size = 50MB
appender.server.strategy.type = DefaultRolloverStrategy
appender.server.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.server.ref = server
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
}

jvm() {
  jvm_args=(java -Xms256M -Xmx"$heap" -XX:+UseG1GC -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$run/log4j2.properties" -Dkafka.logs.dir="$run/logs" -cp "$libs/*")
}
java_cmd() { jvm; "${jvm_args[@]}" "$@"; }

running_pid() {
  [[ -f "$pidfile" ]] || return 1
  local pid
  pid="$(cat "$pidfile")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && grep -q "kafka.Kafka" "/proc/$pid/cmdline" 2>/dev/null \
    && echo "$pid"
}

answers() { "$(python_bin)" "$here/probe.py" kafka "$host" "$port" "${1:-0}"; }

cmd_up() {
  if pid="$(running_pid)"; then
    if answers 30; then say "already running on $host:$port (pid $pid)"; return 0; fi
    die "pid $pid runs but does not answer on $host:$port; see $run/logs/server.log or run '$0 down'"
  fi
  rm -f "$pidfile"
  need_java
  local py
  py="$(python_bin)"
  for p in "$port" "$controller_port"; do
    "$py" "$here/probe.py" port-free "$host" "$p" \
      || die "port $p on $host is taken (see above). Stop that process, or choose other ports: KAFKA_PORT=19092 $0 up"
  done
  resolve_jars
  write_config
  if [[ ! -f "$run/data/meta.properties" ]]; then
    local cluster_id
    cluster_id="$(java_cmd kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    say "formatting KRaft storage in $run/data (cluster $cluster_id)"
    java_cmd kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$run/server.properties" \
      >"$run/logs/format.log" 2>&1 || { cat "$run/logs/format.log" >&2; die "formatting storage failed"; }
  fi
  say "starting Kafka $version on $host:$port (controller $controller_port, data in $run)"
  # setsid: the broker must outlive the make/pytest process that started it.
  jvm
  setsid "${jvm_args[@]}" kafka.Kafka "$run/server.properties" >"$run/logs/stdout.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  local pid deadline
  pid="$(cat "$pidfile")"
  deadline=$((SECONDS + start_timeout))
  until answers 0 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 40 "$run/logs/stdout.log" "$run/logs/server.log" >&2 2>/dev/null || true
      rm -f "$pidfile"
      die "the broker exited during start-up (log above; full logs in $run/logs)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 40 "$run/logs/server.log" >&2 2>/dev/null || true
      cmd_stop >/dev/null
      die "the broker did not answer a metadata request within ${start_timeout}s (log above)"
    fi
    sleep 0.5
  done
  say "ready on $host:$port (pid $pid)"
}

cmd_stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$pidfile"
    say "not running on $host:$port"
    return 0
  fi
  say "stopping pid $pid"
  kill -TERM "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "pid $pid ignored SIGTERM for 30s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  say "stopped"
}

cmd_down() {
  cmd_stop
  if [[ -d "$run" ]]; then
    rm -rf "$run"
    say "wiped $run"
  fi
}

cmd_status() {
  if pid="$(running_pid)"; then
    if answers 0; then say "running on $host:$port (pid $pid), answering"; return 0; fi
    say "pid $pid runs but does not answer on $host:$port"
    return 1
  fi
  say "not running on $host:$port"
  return 3
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  logs) exec tail -F "$run/logs/server.log" ;;
  *) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
