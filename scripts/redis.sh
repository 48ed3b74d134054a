#!/usr/bin/env bash
# A real Redis server (Debian's redis-server) on 127.0.0.1, without persistence, for local runs and tests.
#
#   scripts/redis.sh up      start it and wait until it answers PING
#   scripts/redis.sh down    stop it and wipe its folder
#   scripts/redis.sh stop    stop it, keep its folder (logs)
#   scripts/redis.sh status  say whether it runs and answers
#
# Settings (environment):
#   REDIS_PORT           port                                      (default 6379)
#   REDIS_PASSWORD       require this password (requirepass)       (default: none)
#   PARLEY_RUN_DIR       where the log and pid file live           (default <repo>/.run)
#
# Running `up` twice is harmless. Another process on the port is an error that names it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
port="${REDIS_PORT:-6379}"
run="${PARLEY_RUN_DIR:-$root/.run}/redis-$port"
pidfile="$run/redis.pid"
host=127.0.0.1

say() { printf 'redis: %s\n' "$*"; }
die() { printf 'redis: error: %s\n' "$*" >&2; exit 1; }

python_bin() { command -v python3 || command -v python || die "python3 is required to probe Redis"; }

running_pid() {
  [[ -f "$pidfile" ]] || return 1
  local pid
  pid="$(cat "$pidfile")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && grep -q "redis-server" "/proc/$pid/cmdline" 2>/dev/null \
    && echo "$pid"
}

answers() {
  if [[ -n "${REDIS_PASSWORD:-}" ]]; then
    REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -h "$host" -p "$port" ping 2>/dev/null | grep -q PONG
  else
    "$(python_bin)" "$here/probe.py" redis "$host" "$port" "${1:-0}"
  fi
}

cmd_up() {
  if pid="$(running_pid)"; then
    if answers 10; then say "already running on $host:$port (pid $pid)"; return 0; fi
    die "pid $pid runs but does not answer on $host:$port; see $run/redis.log or run '$0 down'"
  fi
  command -v redis-server >/dev/null 2>&1 || die "redis-server is not installed.
  Debian/Ubuntu: sudo apt-get install -y redis-server (make setup does this)    macOS: brew install redis"
  "$(python_bin)" "$here/probe.py" port-free "$host" "$port" \
    || die "port $port on $host is taken (see above). Stop that process, or choose another: REDIS_PORT=16379 $0 up"
  mkdir -p "$run"
  local auth=()
  [[ -n "${REDIS_PASSWORD:-}" ]] && auth=(--requirepass "$REDIS_PASSWORD")
  # No RDB snapshots and no AOF: tests and the demo must start from nothing and leave nothing.
  redis-server --bind "$host" --port "$port" --protected-mode yes \
    --save "" --appendonly no --dir "$run" --daemonize yes \
    --pidfile "$pidfile" --logfile "$run/redis.log" "${auth[@]}" \
    || die "redis-server failed to start; see $run/redis.log"
  for _ in $(seq 1 40); do
    if answers 0 2>/dev/null; then say "ready on $host:$port (pid $(cat "$pidfile"))"; return 0; fi
    sleep 0.25
  done
  tail -n 20 "$run/redis.log" >&2 || true
  die "redis-server did not answer PING within 10s"
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
  for _ in $(seq 1 40); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
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
  *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
