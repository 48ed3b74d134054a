#!/usr/bin/env bash
# The whole loop on local defaults (what `make demo` runs after set-up and `make up`):
#   topics → demo student (trained, exported, built, verified, promoted; skipped when already serving)
#   → worker → sample conversations sent at a conversational pace → labelled output shown live
#   → clean stop of the worker (SIGTERM: it finishes its batch and commits).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
bin="${VENV:-$root/.venv}/bin"
run="${PARLEY_RUN_DIR:-$root/.run}"
port="${PARLEY_WORKER_WEB_PORT:-6066}"
export PARLEY_WORKER_MODEL="${PARLEY_WORKER_MODEL:-demo-student}" HF_HUB_OFFLINE=1
mkdir -p "$run"

"$bin/parley" stream topics create
"$bin/parley" train demo-bundle

echo "demo: starting the worker (log: $run/demo-worker.log)"
"$bin/parley" stream worker >"$run/demo-worker.log" 2>&1 &
worker=$!
stop_worker() {
  if kill -0 "$worker" 2>/dev/null; then
    echo "demo: stopping the worker"
    kill -TERM "$worker"
    wait "$worker" || true
  fi
}
trap stop_worker EXIT

"$bin/python" - "$port" <<'PY'
import json, sys, time, urllib.error, urllib.request
port, deadline = sys.argv[1], time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            if json.loads(r.read()).get("ready"):
                print("demo: worker ready"); sys.exit(0)
    except (urllib.error.URLError, OSError):
        pass
    time.sleep(0.5)
sys.exit("demo: the worker did not become ready within 120 s; see .run/demo-worker.log")
PY

count="$(grep -c . "$("$bin/python" -c 'from parley.samples import conversations_path; print(conversations_path())')")"
"$bin/parley" stream tail --max "$count" --idle-timeout 60 &
tail_pid=$!
sleep 2
"$bin/parley" stream send --rate 12
wait "$tail_pid"
curl -s "http://127.0.0.1:$port/metrics" | grep -E '^parley_(events_in|events_out|events_dlq)_total' || true
echo "demo: done. Kafka and Redis keep running ('make down' stops and wipes them)."
