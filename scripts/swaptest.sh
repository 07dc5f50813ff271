#!/usr/bin/env bash
# Hot-swap cost on the real server (issues 4 and 7):
#   - p99 ingest latency while the live `satisfaction` version is swapped every 100 ms,
#     divided by the steady-state p99 (same load, no swaps);
#   - time from upload to live (PUT ... ?activate=true, as the client sees it);
#   - replay throughput over the events stored by the runs (POST /v1/replay).
#
#   scripts/swaptest.sh                    # 15 s per phase
#   DURATION=30 scripts/swaptest.sh
#
# Server pinned to core 0, wrk to core 1, loopback only; it stops by itself. Both phases
# run the same closed-loop load (CONNECTIONS requests in flight), so latency is compared
# under equal offered load.
set -euo pipefail

DURATION=${DURATION:-15}
CONNECTIONS=${CONNECTIONS:-16}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PORT=${PORT:-17272}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if ! command -v wrk >/dev/null; then
    if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
    $sudo apt-get update -qq && $sudo apt-get install -y -qq wrk >/dev/null
fi
echo "swaptest: building flywheel (release) and staging the plugins" >&2
cargo build --quiet --release -p flywheel
cargo xtask plugins >/dev/null
bin=$root/target/release/flywheel
plugins=$root/target/flywheel-plugins
work=$(mktemp -d "${TMPDIR:-/tmp}/flywheel-swaptest.XXXXXX")
pid=
swapper=
cleanup() {
    [ -n "$swapper" ] && kill "$swapper" 2>/dev/null || true
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
url=http://127.0.0.1:$PORT

mkdir -p "$work/plugins"
cp "$plugins"/*.wasm "$plugins"/*.toml "$work/plugins/"
# QA sampling off so every run routes alike.
sed -i 's/^qa-sample-rate = .*/qa-sample-rate = "0"/' "$work/plugins/hitl-router.toml"
taskset -c "$SERVER_CPU" "$bin" serve --listen 127.0.0.1:$PORT --data "$work/data" --plugins "$work/plugins" \
    >/dev/null 2>"$work/server.log" &
pid=$!
until curl -sf "$url/readyz" >/dev/null 2>&1; do sleep 0.05; done

cat >"$work/post.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"prompt":{"name":"support-answer","version":"3"},"input":"How many days do I have to return a laptop?","output":"You can return a laptop within 30 days of delivery, as long as it is in its original packaging.","context":["Returns: laptops can be returned within 30 days of delivery in their original packaging."],"feedback":{"type":"thumbs","value":"down"}}'
EOF

# p99 in microseconds from wrk's --latency output (fixed rate via -R needs wrk2; plain wrk
# runs closed-loop with CONNECTIONS in flight, the same in both phases).
run_wrk() {
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$work/post.lua" "$url/v1/events" >"$work/wrk.out"
    python3 - "$work/wrk.out" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
def us(v, unit):
    return float(v) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]
p = {m[0]: us(m[1], m[2]) for m in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)}
rps = re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print(f"{p['50']:.0f} {p['99']:.0f} {float(rps):.0f} {errors.group(1) if errors else 0}")
EOF
}

wasm=$plugins/satisfaction.wasm
put() { curl -sf -o "$work/put.json" -w '%{time_total}' -X PUT -H 'content-type: application/wasm' --data-binary @"$wasm" "$url/v1/plugins/satisfaction?$1"; }
put "version=swap-b&activate=false" >/dev/null
v_a=$(curl -sf "$url/v1/plugins/satisfaction" | python3 -c 'import json,sys; print(json.load(sys.stdin)["live"]["hash"])')
v_b=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["hash"])' "$work/put.json")

echo "swaptest: steady state, ${DURATION}s" >&2
read -r steady_p50 steady_p99 steady_rps steady_err < <(run_wrk)

echo "swaptest: swapping every 100 ms, ${DURATION}s" >&2
(
    i=0
    while true; do
        if [ $((i % 2)) = 0 ]; then v=$v_b; else v=$v_a; fi
        curl -sf -o /dev/null -H 'content-type: application/json' -d "{\"version\":\"$v\"}" "$url/v1/plugins/satisfaction/activate" || true
        i=$((i + 1))
        sleep 0.1
    done
) &
swapper=$!
read -r swap_p50 swap_p99 swap_rps swap_err < <(run_wrk)
kill "$swapper"; wait "$swapper" 2>/dev/null || true; swapper=
swaps=$(curl -sf "$url/v1/plugins/satisfaction" | python3 -c 'import json,sys; print(sum(1 for a in json.load(sys.stdin)["audit"] if a["action"]=="activate"))')

echo "swaptest: upload to live" >&2
upload_ms=()
for i in 1 2 3 4 5; do
    t=$(put "version=upload-$i&activate=true")
    upload_ms+=("$(python3 -c "print(round($t * 1000, 1))")")
done

echo "swaptest: waiting for the pipeline, then replaying" >&2
until curl -sf "$url/v1/events?route=pending&limit=1" | python3 -c 'import json,sys; sys.exit(0 if not json.load(sys.stdin)["events"] else 1)'; do sleep 0.5; done
curl -sf -X PUT -H 'content-type: application/wasm' --data-binary @"$plugins/groundedness.wasm" \
    "$url/v1/plugins/groundedness?version=replay-candidate&activate=false" >/dev/null
curl -sf -H 'content-type: application/json' -d '{"plugin":"groundedness","version":"replay-candidate"}' "$url/v1/replay" >"$work/replay.json"
replay=$(python3 - "$work/replay.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{r['events']} events in {r['elapsed_ms']:.0f} ms: {r['events_per_second']:,.0f} events/s")
EOF
)

cat <<EOF

| measure | steady state | swapping every 100 ms |
|---|---|---|
| requests/s | ${steady_rps} | ${swap_rps} |
| p50 latency | ${steady_p50} µs | ${swap_p50} µs |
| p99 latency | ${steady_p99} µs | ${swap_p99} µs |
| failed requests (non-2xx) | ${steady_err} | ${swap_err} |

- p99 while swapping ÷ steady p99: $(python3 -c "print(f'{$swap_p99 / max($steady_p99, 1):.2f}')") (${swaps} swaps)
- upload to live (client-side, 5 uploads): ${upload_ms[*]} ms
- replay (groundedness candidate, all cores): ${replay}
EOF
