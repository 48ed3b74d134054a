#!/usr/bin/env bash
# The whole loop on local defaults (what `make demo` runs after set-up and `make up`):
#   topics → demo student (heads fitted on the training part of parley/samples, exported, built,
#   verified, promoted; skipped when one trained on the current samples is already serving)
#   → worker → the held-out sample conversations sent at a conversational pace → each labelled
#   utterance shown live beside its text and gold labels → accuracy, throughput and latency
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

# The conversations the demo student never saw, with their gold labels; the tail shows each labelled
# utterance beside its text and marks every label against the gold one, then sums up. Conversation
# ids are tagged per run, so a second demo starts new conversations (fresh state in Redis).
held="$run/demo-held-out"
"$bin/python" -m parley.samples held_out "$held" "r$(date +%H%M%S)" >/dev/null
count="$(grep -c . "$held/conversations.jsonl")"
"$bin/parley" stream tail --max "$count" --idle-timeout 60 \
  --conversations "$held/conversations.jsonl" --gold "$held/labels.jsonl" &
tail_pid=$!
sleep 3  # the tail starts reading at the topic's end: let it get there before anything is sent
"$bin/parley" stream send "$held/conversations.jsonl" --rate 12 >"$run/demo-send.log" 2>&1 &
send_pid=$!
wait "$tail_pid"
wait "$send_pid" || { echo "demo: sending failed; see $run/demo-send.log" >&2; exit 1; }
echo "demo: done. Kafka and Redis keep running ('make down' stops and wipes them)."
