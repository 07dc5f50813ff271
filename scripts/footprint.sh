#!/usr/bin/env bash
# Start-up and footprint of the real server (issue 7, items 6 and 7):
#   - time from start to ready with the five example plugins, with a cold compile
#     (empty data dir) and from the precompiled cache (same data dir, restarted);
#   - resident memory after EVENTS stored (and processed) events, and disk bytes per event.
#
#   scripts/footprint.sh                  # EVENTS=1000000 by default
#   EVENTS=200000 scripts/footprint.sh    # quicker
#
# Events are sent in batches of 1000 without ids (the server assigns ULIDs). Loopback only;
# it stops by itself. Prints a markdown table.
set -euo pipefail

EVENTS=${EVENTS:-1000000}
BATCH=1000
PORT=${PORT:-17171}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

echo "footprint: building flywheel (release) and staging the plugins" >&2
cargo build --quiet --release -p flywheel
cargo xtask plugins >/dev/null
bin=$root/target/release/flywheel
plugins=$root/target/flywheel-plugins

work=$(mktemp -d "${TMPDIR:-/tmp}/flywheel-footprint.XXXXXX")
pid=
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
url=http://127.0.0.1:$PORT

now_ms() { date +%s%3N; }

# Start the server; set `ready_ms` to the milliseconds until /readyz answers 200.
ready_ms=
start() {
    local t0 t1
    t0=$(now_ms)
    "$bin" serve --listen 127.0.0.1:$PORT --data "$work/data" --plugins "$plugins" >"$work/stdout" 2>>"$work/server.log" &
    pid=$!
    until curl -sf "$url/readyz" >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || { echo "server died:" >&2; cat "$work/server.log" >&2; exit 1; }
        sleep 0.005
    done
    t1=$(now_ms)
    ready_ms=$((t1 - t0))
}

stop() {
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
}

start; cold=$ready_ms; stop
start; warm=$ready_ms

python3 - "$work/batch.json" "$BATCH" <<'EOF'
import json, sys
path, n = sys.argv[1], int(sys.argv[2])
kinds = [{"type": "thumbs", "value": "up"}, {"type": "thumbs", "value": "down"},
         {"type": "rating", "value": 4, "scale": 5}, {"type": "correction", "text": "Open Settings, then Security."},
         {"type": "clarification", "text": "Where exactly is that setting?"}]
events = [{
    "prompt": {"name": "support-answer", "version": str(1 + i % 3)},
    "model": "gpt-4o-mini",
    "input": "How do I reset my password?",
    "output": "To reset your password, open Settings, then Security, and choose Reset password. The reset link expires after 24 hours.",
    "context": ["To reset your password, open Settings, then Security, and choose Reset password. The reset link in the email expires after 24 hours."],
    "feedback": kinds[i % len(kinds)],
    "metadata": {"app": "helpdesk"},
} for i in range(n)]
json.dump({"events": events}, open(path, "w"))
EOF

echo "footprint: sending $EVENTS events" >&2
t0=$(now_ms)
sent=0
while [ "$sent" -lt "$EVENTS" ]; do
    # Four requests in flight at a time.
    for _ in 1 2 3 4; do
        [ "$sent" -ge "$EVENTS" ] && break
        curl -sf -o /dev/null -H 'content-type: application/json' --data-binary @"$work/batch.json" "$url/v1/events" &
        sent=$((sent + BATCH))
    done
    for job in $(jobs -p); do [ "$job" = "$pid" ] || wait "$job" || true; done
done
t1=$(now_ms)
echo "footprint: waiting for the pipeline to finish" >&2
# Every event of this run is processed once the pipeline's counter reaches the store's.
metric() {
    curl -sf "$url/metrics" | awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%d", s }'
}
until [ "$(metric flywheel_events_processed_total)" -ge "$(metric flywheel_events_stored)" ]; do
    sleep 0.5
done
t2=$(now_ms)
stored=$(curl -sf "$url/readyz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["events"])')
rss_kib=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
hwm_kib=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
curl -sf "$url/metrics" >/dev/null
stop
disk=$(du -sb "$work/data/store" | cut -f1)

cat <<EOF

| measure | value |
|---|---|
| start to ready, cold compile (5 plugins) | ${cold} ms |
| start to ready, precompiled cache | ${warm} ms |
| cold ÷ cached | $(python3 -c "print(f'{$cold / max($warm, 1):.1f}x')") |
| events stored | ${stored} |
| ingest (acknowledged) | $(python3 -c "print(f'{$stored / max($t1 - $t0, 1) * 1000:,.0f} events/s')") |
| ingest + pipeline done | $(python3 -c "print(f'{$stored / max($t2 - $t0, 1) * 1000:,.0f} events/s')") |
| resident set after | $(python3 -c "print(f'{$rss_kib / 1024:,.0f} MiB (peak {$hwm_kib / 1024:,.0f} MiB)')") |
| disk, store dir | $(python3 -c "print(f'{$disk / 2**20:,.0f} MiB, {$disk / max($stored, 1):,.0f} bytes/event')") |
EOF
