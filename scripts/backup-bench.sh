#!/usr/bin/env bash
# What an online backup costs (`GET /v1/backup`): how long writes pause, how big the
# file is, how long a restore takes, and what the pause does to ingest latency.
#
#   scripts/backup-bench.sh                    # ~150k events, then the measurements
#   FILL=30s RATE=4000 scripts/backup-bench.sh
#
# A release server with the five example plugins, durable, pinned to core SERVER_CPU,
# `oha` on LOAD_CPU (as in scripts/loadtest.sh):
#   1. fill: max load for FILL, then wait until every event is processed;
#   2. idle backup: time of `curl /v1/backup` to a file, the pause the server reports
#      (`X-Flywheel-Backup: paused_ms`), its size; `flywheel restore` into a new dir;
#   3. latency: RATE events/s for LOAD_TIME with `--latency-correction`, once without
#      and once with a backup every BACKUP_EVERY seconds; p50/p99/max of both.
set -euo pipefail

FILL=${FILL:-15s}
RATE=${RATE:-4000}
LOAD_TIME=${LOAD_TIME:-20s}
BACKUP_EVERY=${BACKUP_EVERY:-5}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${FLYWHEEL_BIN:-$root/target/release/flywheel}
plugins=$root/target/flywheel-plugins
command -v oha >/dev/null || cargo install --locked oha
[ -x "$bin" ] || cargo build --release -p flywheel
[ -f "$plugins/satisfaction.wasm" ] || cargo xtask plugins

work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
bodies=$work/bodies.jsonl
WRITE_BODIES=$bodies "$root/scripts/loadtest.sh" >/dev/null
printf 'durable = true\n' >"$work/config.toml"
taskset -c "$SERVER_CPU" "$bin" serve --config "$work/config.toml" --listen 127.0.0.1:0 \
    --data "$work/data" --plugins "$plugins" >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 1 300); do
    port=$(sed -n 's#^flywheel listening on http://127.0.0.1:\([0-9]*\).*#\1#p' "$work/out")
    [ -n "$port" ] && break
    sleep 0.1
done
url=http://127.0.0.1:$port
oha_() { taskset -c "$LOAD_CPU" oha --no-tui --output-format json -c 64 -m POST \
    -T application/json -Z "$bodies" "$@" "$url/v1/events"; }

oha_ -z "$FILL" >/dev/null
while :; do
    backlog=$(curl -s "$url/readyz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pipeline_backlog"])')
    [ "$backlog" = 0 ] && break
    sleep 1
done
events=$(curl -s "$url/readyz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["events"])')
du=$(du -sm "$work/data/store" | cut -f1)

start=$(date +%s.%N)
curl -s -D "$work/headers" -o "$work/file.backup" "$url/v1/backup"
took=$(python3 -c "print(round(($(date +%s.%N)-$start)*1000))")
info=$(sed -n 's/^x-flywheel-backup: //Ip' "$work/headers" | tr -d '\r')
start=$(date +%s.%N)
"$bin" restore --data "$work/restored" "$work/file.backup" >/dev/null
restored=$(python3 -c "print(round(($(date +%s.%N)-$start)*1000))")
echo "events: $events; store on disk: ${du} MiB"
echo "idle backup: $info"
echo "idle backup: GET took ${took} ms; restore took ${restored} ms"

latency() {
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); p=d['latencyPercentiles']; s=d['summary']
print(f\"req/s {s['requestsPerSec']:.0f}  p50 {p['p50']*1000:.2f} ms  p99 {p['p99']*1000:.2f} ms  max {s['slowest']*1000:.1f} ms  ok {s['successRate']:.4f}\")" "$1"
}
oha_ -z "$LOAD_TIME" -q "$RATE" --latency-correction >"$work/plain.json"
oha_ -z "$LOAD_TIME" -q "$RATE" --latency-correction >"$work/backups.json" &
load=$!
pauses=()
sleep 1
while kill -0 $load 2>/dev/null; do
    curl -s -D "$work/headers" -o "$work/file.backup" "$url/v1/backup" || break
    pauses+=("$(sed -n 's/^x-flywheel-backup: //Ip' "$work/headers" | tr -d '\r' | python3 -c 'import json,sys; d=json.load(sys.stdin); print(str(d["paused_ms"]) + "ms/" + str(d["rewritten"]) + "keys")' 2>/dev/null || echo '?')")
    sleep "$BACKUP_EVERY"
done
wait $load
echo "at $RATE events/s, no backup:         $(latency "$work/plain.json")"
echo "at $RATE events/s, backups (paused/rewritten: ${pauses[*]}): $(latency "$work/backups.json")"
