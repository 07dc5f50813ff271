#!/usr/bin/env bash
# Load test of the real server on loopback: `POST /v1/events` with single events and
# with 100-event batches, each with the five example plugins and with none, durable
# writes on (the default). The server is pinned to core 0, the load generator (wrk)
# to core 1; every scenario gets a fresh server and data dir.
#
#   scripts/loadtest.sh                      # 10 s per scenario, prints a markdown table
#   DURATION=30s CONNECTIONS=128 scripts/loadtest.sh
#   DURABLE=false scripts/loadtest.sh        # what durability costs
#
# Events carry no id, so the server assigns a ULID to each (no duplicates). Besides
# what wrk sees, the table reports how many events the pipeline processed during the
# measured window (from /metrics): with plugins, the pipeline runs off the request
# path on the same core, so it can fall behind the acknowledgements.
set -euo pipefail

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNECTIONS=${CONNECTIONS:-64}          # single-event scenarios
BATCH_CONNECTIONS=${BATCH_CONNECTIONS:-8}
BATCH=${BATCH:-100}
DURABLE=${DURABLE:-true}                # false: measure what durability costs
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if ! command -v wrk >/dev/null; then
    echo "loadtest: installing wrk" >&2
    if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
    $sudo apt-get update -qq && $sudo apt-get install -y -qq wrk >/dev/null
fi

loadavg=$(cut -d' ' -f1-3 /proc/loadavg)
echo "loadtest: building flywheel (release) and staging the plugins" >&2
cargo build --quiet --release -p flywheel
cargo xtask plugins >/dev/null
bin=$root/target/release/flywheel
plugins=$root/target/flywheel-plugins

work=$(mktemp -d "${TMPDIR:-/tmp}/flywheel-loadtest.XXXXXX")
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/no-plugins"
echo "durable = $DURABLE" >"$work/config.toml"
servers=0

# A few realistic events (a ~200-byte answer, its retrieved context, each kind of
# feedback, one with an email address) so every plugin rule runs.
cat >"$work/events.lua" <<'EOF'
local out = "To reset your password, open Settings, then Security, and choose Reset password. The reset link in the email expires after 24 hours. Exports usually finish within 10 minutes."
local ctx = {
  "To reset your password, open Settings, then Security, and choose Reset password. The reset link in the email expires after 24 hours.",
  "Exports run in the background and usually finish within 10 minutes. Rate limits are 600 requests per minute per key.",
  "The company was founded in Lisbon in 2014 by Ana Ribeiro and Tom Becker.",
}
local feedback = {
  '{"type":"thumbs","value":"up"}',
  '{"type":"thumbs","value":"down"}',
  '{"type":"rating","value":4,"scale":5}',
  '{"type":"comment","text":"Thanks, that was helpful, but the link did not work on my phone."}',
  '{"type":"correction","text":"The reset link is on the sign-in page under Forgot password."}',
  '{"type":"clarification","text":"Where exactly is the Security tab on mobile?"}',
}
local function q(s) return '"' .. s .. '"' end
local ctxjson = "[" .. q(ctx[1]) .. "," .. q(ctx[2]) .. "," .. q(ctx[3]) .. "]"
function make_event(i)
  local o = out
  if i % 8 == 3 then o = o .. " You can also write to jane.doe@example.com for help." end
  return '{"session_id":"s-' .. (i % 50) .. '","model":"gpt-4o-mini","prompt":{"name":"support-answer","version":"3"},'
    .. '"input":"How do I reset my password, and how long is the reset link valid?",'
    .. '"output":' .. q(o) .. ',"context":' .. ctxjson .. ',"feedback":' .. feedback[(i % #feedback) + 1]
    .. ',"metadata":{"locale":"en-GB","channel":"web"}}'
end
EOF

# wrk script: cycles through pre-built requests, prints one machine-readable line.
cat >"$work/post.lua" <<'EOF'
dofile(os.getenv("EVENTS_LUA"))
local batch = tonumber(os.getenv("BATCH_SIZE"))
local requests = {}
local counter = 0
function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  for r = 1, 16 do
    local body
    if batch == 1 then
      body = make_event(r)
    else
      local evs = {}
      for i = 1, batch do evs[i] = make_event(r * batch + i) end
      body = '{"events":[' .. table.concat(evs, ",") .. ']}'
    end
    requests[r] = wrk.format(nil, "/v1/events", nil, body)
  end
end
function request()
  counter = counter % #requests + 1
  return requests[counter]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d socket_errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
EOF

metric() { # metric <port> <name>: a counter's value from /metrics, summed over labels
    curl -fsS "http://127.0.0.1:$1/metrics" |
        awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%d", s }'
}

start_server() { # start_server <plugins dir>: sets server_pid and port
    servers=$((servers + 1))
    local run=$work/server-$servers
    mkdir -p "$run"
    taskset -c "$SERVER_CPU" "$bin" serve --config "$work/config.toml" --listen 127.0.0.1:0 --data "$run/data" --plugins "$1" \
        >"$run/out" 2>"$run/err" &
    server_pid=$!
    port=
    for _ in $(seq 1 600); do
        [ -f "$run/out" ] && port=$(sed -n 's#^flywheel listening on http://127.0.0.1:\([0-9]*\).*#\1#p' "$run/out")
        [ -n "$port" ] && return 0
        kill -0 "$server_pid" 2>/dev/null || { cat "$run/err" >&2; echo "loadtest: server died" >&2; exit 1; }
        sleep 0.1
    done
    echo "loadtest: server did not start" >&2; exit 1
}

cpu_ticks() { # user + system CPU time of the server so far, in clock ticks
    awk '{ print $14 + $15 }' "/proc/$server_pid/stat"
}
hz=$(getconf CLK_TCK)

stop_server() {
    kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
}

wrk_run() { # wrk_run <duration> <connections> <batch>
    EVENTS_LUA=$work/events.lua BATCH_SIZE=$3 taskset -c "$LOAD_CPU" \
        wrk -t1 -c"$2" -d"$1" --timeout 10s -s "$work/post.lua" "http://127.0.0.1:$port/v1/events" |
        grep '^RESULT'
}

field() { sed -n "s/.*$1=\([0-9]*\).*/\1/p" <<<"$2"; }

declare -A eps pps
rows=()
for scenario in single batch; do
    if [ $scenario = single ]; then batch=1 conns=$CONNECTIONS; else batch=$BATCH conns=$BATCH_CONNECTIONS; fi
    for set in plugins none; do
        if [ $set = plugins ]; then dir=$plugins; else dir=$work/no-plugins; fi
        echo "loadtest: $scenario ($batch event/request, $conns connections), plugins: $set" >&2
        start_server "$dir"
        wrk_run "$WARMUP" "$conns" "$batch" >/dev/null
        accepted0=$(metric "$port" flywheel_events_accepted_total)
        processed0=$(metric "$port" flywheel_events_processed_total)
        cpu0=$(cpu_ticks)
        result=$(wrk_run "$DURATION" "$conns" "$batch")
        cpu=$(( $(cpu_ticks) - cpu0 ))
        accepted=$(( $(metric "$port" flywheel_events_accepted_total) - accepted0 ))
        processed=$(( $(metric "$port" flywheel_events_processed_total) - processed0 ))
        stop_server
        requests=$(field requests "$result"); us=$(field duration_us "$result")
        rps=$(awk -v r="$requests" -v us="$us" 'BEGIN { printf "%.0f", r / (us / 1e6) }')
        ev=$(awk -v a="$accepted" -v us="$us" 'BEGIN { printf "%.0f", a / (us / 1e6) }')
        pr=$(awk -v p="$processed" -v us="$us" 'BEGIN { printf "%.0f", p / (us / 1e6) }')
        p50=$(awk -v v="$(field p50_us "$result")" 'BEGIN { printf "%.2f", v / 1000 }')
        p99=$(awk -v v="$(field p99_us "$result")" 'BEGIN { printf "%.2f", v / 1000 }')
        errors=$(( $(field non2xx "$result") + $(field socket_errors "$result") ))
        # CPU the server got (of its one core) and CPU per acknowledged event: on a
        # shared machine the second is the figure that does not depend on the neighbours.
        share=$(awk -v c="$cpu" -v hz="$hz" -v us="$us" 'BEGIN { printf "%.0f%%", 100 * (c / hz) / (us / 1e6) }')
        cpu_ev=$(awk -v c="$cpu" -v hz="$hz" -v a="$accepted" 'BEGIN { printf "%.0f", (a > 0 ? 1e6 * (c / hz) / a : 0) }')
        eps[$scenario-$set]=$ev
        pps[$scenario-$set]=$pr
        label=$([ $set = plugins ] && echo "5 examples" || echo "none")
        rows+=("| $scenario ($batch/req, $conns conns) | $label | $rps | $ev | $p50 | $p99 | $pr | $share | $cpu_ev | $errors |")
    done
done

echo
echo "Load test: $DURATION per scenario after a $WARMUP warm-up; server on CPU $SERVER_CPU, wrk on CPU $LOAD_CPU; durable = $DURABLE."
echo "Load average at the start: $loadavg (other processes share these cores)."
echo
echo "| scenario | plugins | requests/s | events/s (acked) | p50 ms | p99 ms | events/s processed by the pipeline | server CPU share | server CPU µs per acked event | errors |"
echo "|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "| ratio | value |"
echo "|---|---|"
for scenario in single batch; do
    awk -v a="${eps[$scenario-plugins]}" -v b="${eps[$scenario-none]}" -v s="$scenario" \
        'BEGIN { printf "| %s: acked events/s with plugins ÷ without | %.2f× |\n", s, (b > 0 ? a / b : 0) }'
    awk -v a="${pps[$scenario-plugins]}" -v b="${pps[$scenario-none]}" -v s="$scenario" \
        'BEGIN { printf "| %s: processed events/s with plugins ÷ without | %.2f× |\n", s, (b > 0 ? a / b : 0) }'
done
