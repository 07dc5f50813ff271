#!/usr/bin/env bash
# Load test of the real server on loopback (issues 3 and 7), with `oha`:
#
#   1. max throughput: closed loop, CONNECTIONS requests in flight (BATCH_CONNECTIONS for
#      batches), for single events and 100-event batches, with the five example plugins
#      and with none, durable and not;
#   2. latency at a fixed rate of 50% of that max (`oha -q R --latency-correction`, so
#      a stalled server is charged for the requests it delayed: no coordinated omission).
#
#   scripts/loadtest.sh                         # 10 s per run, prints markdown tables
#   DURATION=30s scripts/loadtest.sh
#   SCENARIOS="single" DURABILITY="true" scripts/loadtest.sh   # a subset
#   FLYWHEEL_BIN=/tmp/flywheel-before scripts/loadtest.sh       # another build
#   WRITE_BODIES=/tmp/events.jsonl scripts/loadtest.sh          # only write the single-event bodies
#   THREADS=true scripts/loadtest.sh                            # also CPU per event, thread by thread
#   MAX_BACKLOG=20000 scripts/loadtest.sh                       # bound the pipeline's backlog (503s past it)
#   COMMIT_DELAY=1000 scripts/loadtest.sh                       # commit-delay-us: gather commits at moderate load
#   RATES="1000 4000" scripts/loadtest.sh                       # these fixed rates instead of 50% of max
#   REPEAT=5 FIXED_RATE=false SCENARIOS=single DURABILITY=true scripts/loadtest.sh
#                                     # 5 alternating max-load rounds: the ratios' median and range
#
# Every run gets a fresh server and data dir. The server is pinned to core SERVER_CPU
# and oha to core LOAD_CPU. Events carry no id (the server assigns ULIDs). Besides what
# oha sees, each row reports the events the pipeline processed in the window and the
# server's CPU time (from /proc), because the pipeline runs off the request path on the
# same core and can fall behind the acknowledgements.
#
# On a shared VM one max-load run can be 15 % off the next; REPEAT=N runs the max-load
# measurements N times, alternating the plugin sets within each round, and reports the
# ratio of each round's runs (with plugins ÷ without: back to back), with their median
# (fixed-rate runs are made once, at 50 % of the median max).
set -euo pipefail

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNECTIONS=${CONNECTIONS:-64}          # single-event scenarios
BATCH_CONNECTIONS=${BATCH_CONNECTIONS:-8}
BATCH=${BATCH:-100}
SCENARIOS=${SCENARIOS:-single batch}
DURABILITY=${DURABILITY:-true false}
PLUGIN_SETS=${PLUGIN_SETS:-plugins none}
FIXED_RATE=${FIXED_RATE:-true}          # false: skip the 50%-of-max runs
NICE=${NICE:-0}                         # [pipeline] nice: 10 favours ingest over the pipeline
MAX_BACKLOG=${MAX_BACKLOG:-0}           # [pipeline] max-backlog: refuse (503) past this backlog
COMMIT_DELAY=${COMMIT_DELAY:-0}         # commit-delay-us: hold group commits open at moderate load
RATES=${RATES:-}                        # fixed rates (req/s) to run instead of 50% of each max
REPEAT=${REPEAT:-1}                     # max-load rounds (alternating the plugin sets)
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if ! command -v oha >/dev/null; then
    echo "loadtest: installing oha (cargo install oha --locked; a few minutes, once)" >&2
    cargo install --quiet oha --locked
fi
for tool in curl taskset awk; do
    command -v "$tool" >/dev/null || { echo "loadtest: needs $tool" >&2; exit 1; }
done

loadavg=$(cut -d' ' -f1-3 /proc/loadavg)
echo "loadtest: building flywheel (release) and staging the plugins" >&2
if [ -z "${FLYWHEEL_BIN:-}" ]; then cargo build --quiet --release -p flywheel; fi
cargo xtask plugins >/dev/null
# FLYWHEEL_BIN: another build of the server (e.g. a copy made before a change), for a
# before/after in one sitting.
bin=${FLYWHEEL_BIN:-$root/target/release/flywheel}
plugins=$root/target/flywheel-plugins

work=$(mktemp -d "${TMPDIR:-/tmp}/flywheel-loadtest.XXXXXX")
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/no-plugins"
servers=0

# Request bodies, one per line (oha -Z cycles through them): a ~200-byte answer, its
# retrieved context, each kind of feedback, every 8th with an email address, so every
# plugin rule runs.
out="To reset your password, open Settings, then Security, and choose Reset password. The reset link in the email expires after 24 hours. Exports usually finish within 10 minutes."
ctx='["To reset your password, open Settings, then Security, and choose Reset password. The reset link in the email expires after 24 hours.","Exports run in the background and usually finish within 10 minutes. Rate limits are 600 requests per minute per key.","The company was founded in Lisbon in 2014 by Ana Ribeiro and Tom Becker."]'
feedback=(
    '{"type":"thumbs","value":"up"}'
    '{"type":"thumbs","value":"down"}'
    '{"type":"rating","value":4,"scale":5}'
    '{"type":"comment","text":"Thanks, that was helpful, but the link did not work on my phone."}'
    '{"type":"correction","text":"The reset link is on the sign-in page under Forgot password."}'
    '{"type":"clarification","text":"Where exactly is the Security tab on mobile?"}'
)
make_event() { # make_event <i>
    local o=$out
    if [ $(($1 % 8)) = 3 ]; then o="$o You can also write to jane.doe@example.com for help."; fi
    printf '{"session_id":"s-%d","model":"gpt-4o-mini","prompt":{"name":"support-answer","version":"3"},"input":"How do I reset my password, and how long is the reset link valid?","output":"%s","context":%s,"feedback":%s,"metadata":{"locale":"en-GB","channel":"web"}}' \
        $(($1 % 50)) "$o" "$ctx" "${feedback[$(($1 % ${#feedback[@]}))]}"
}
for r in $(seq 1 16); do make_event "$r"; echo; done >"$work/single.jsonl"
if [ -n "${WRITE_BODIES:-}" ]; then
    cp "$work/single.jsonl" "$WRITE_BODIES"
    echo "loadtest: wrote the single-event bodies to $WRITE_BODIES" >&2
    exit 0
fi
for r in $(seq 1 16); do
    printf '{"events":['
    for i in $(seq 1 "$BATCH"); do
        [ "$i" -gt 1 ] && printf ','
        make_event $((r * BATCH + i))
    done
    printf ']}\n'
done >"$work/batch.jsonl"

metric() { # metric <name>: a counter's value from /metrics, summed over labels
    curl -fsS "http://127.0.0.1:$port/metrics" |
        awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%d", s }'
}

start_server() { # start_server <plugins dir> <durable>: sets server_pid and port
    servers=$((servers + 1))
    local run=$work/server-$servers
    mkdir -p "$run"
    echo "durable = $2" >"$run/config.toml"
    if [ "$COMMIT_DELAY" != 0 ]; then echo "commit-delay-us = $COMMIT_DELAY" >>"$run/config.toml"; fi
    # Only when set: builds from before a setting existed refuse unknown keys.
    if [ "$NICE" != 0 ] || [ "$MAX_BACKLOG" != 0 ]; then
        echo "[pipeline]" >>"$run/config.toml"
        if [ "$NICE" != 0 ]; then echo "nice = $NICE" >>"$run/config.toml"; fi
        if [ "$MAX_BACKLOG" != 0 ]; then echo "max-backlog = $MAX_BACKLOG" >>"$run/config.toml"; fi
    fi
    taskset -c "$SERVER_CPU" "$bin" serve --config "$run/config.toml" --listen 127.0.0.1:0 \
        --data "$run/data" --plugins "$1" >"$run/out" 2>"$run/err" &
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

stop_server() {
    kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
}

cpu_ticks() { # user + system CPU time of the server so far, in clock ticks
    awk '{ print $14 + $15 }' "/proc/$server_pid/stat"
}

thread_ticks() { # "<thread name> <ticks>" per thread name (numbered threads summed), sorted
    for t in /proc/"$server_pid"/task/*; do
        echo "$(tr ' ' '_' <"$t/comm" | sed 's/-[0-9]*$//') $(awk '{ print $14 + $15 }' "$t/stat")"
    done | awk '{ s[$1] += $2 } END { for (k in s) print k, s[k] }' | sort
}
hz=$(getconf CLK_TCK)

oha_run() { # oha_run <duration> <connections> <bodies> [rate]: prints oha's JSON summary
    local rate=()
    [ -n "${4:-}" ] && rate=(-q "$4" --latency-correction)
    taskset -c "$LOAD_CPU" oha --no-tui --output-format json -z "$1" -c "$2" "${rate[@]}" \
        -m POST -T application/json -Z "$3" "http://127.0.0.1:$port/v1/events"
}

# A number out of oha's JSON: json_num <json> <section> <key>, e.g. `summary
# requestsPerSec` or `latencyPercentiles p99` (seconds).
json_num() {
    sed -n "/\"$2\": {/,/}/p" <<<"$1" | grep -o "\"$3\": *[0-9.eE+-]*" | head -1 | sed 's/.*: *//'
}
ms() { awk -v s="${1:-0}" 'BEGIN { printf "%.2f", s * 1000 }'; }

measure() { # measure <scenario> <plugins|none> <durable> [rate]: one run, sets ROW and RPS
    local scenario=$1 set=$2 durable=$3 rate=${4:-}
    local batch conns bodies dir
    if [ "$scenario" = single ]; then batch=1 conns=$CONNECTIONS bodies=$work/single.jsonl
    else batch=$BATCH conns=$BATCH_CONNECTIONS bodies=$work/batch.jsonl; fi
    if [ "$set" = plugins ]; then dir=$plugins; else dir=$work/no-plugins; fi
    start_server "$dir" "$durable"
    oha_run "$WARMUP" "$conns" "$bodies" "$rate" >/dev/null
    local accepted0 processed0 cpu0 json cpu accepted processed secs
    accepted0=$(metric flywheel_events_accepted_total)
    processed0=$(metric flywheel_events_processed_total)
    cpu0=$(cpu_ticks)
    thread_ticks >"$work/threads0"
    json=$(oha_run "$DURATION" "$conns" "$bodies" "$rate")
    cpu=$(( $(cpu_ticks) - cpu0 ))
    thread_ticks >"$work/threads1"
    accepted=$(( $(metric flywheel_events_accepted_total) - accepted0 ))
    processed=$(( $(metric flywheel_events_processed_total) - processed0 ))
    if [ "${THREADS:-false}" = true ]; then
        # CPU per processed event, by thread name: where an event's cost goes.
        THREAD_ROWS+=("| $scenario | $set | $durable | ${rate:-max} | $(join "$work/threads0" "$work/threads1" |
            awk -v n="$processed" -v hz="$hz" '{ d = $3 - $2; if (d > 0) printf "%s %.1f, ", $1, 1e6 * d / hz / (n > 0 ? n : 1) }' |
            sed 's/, $//') |")
    fi
    stop_server
    secs=$(json_num "$json" summary total)
    RPS=$(json_num "$json" summary requestsPerSec)
    local success ev pr share cpu_ev p50 p99 p999
    success=$(json_num "$json" summary successRate)
    # Share of answered requests that were accepted (2xx): below 1 when max-backlog
    # refuses some with 503.
    local codes admitted
    codes=$(sed -n '/"statusCodeDistribution": {/,/}/p' <<<"$json" | grep -o '"[0-9]*": *[0-9]*' | tr -d '" ' || true)
    admitted=$(awk -F: '{ n += $2; if ($1 ~ /^2/) ok += $2 } END { printf "%.2f", (n > 0 ? ok / n : 0) }' <<<"$codes")
    ev=$(awk -v a="$accepted" -v s="$secs" 'BEGIN { printf "%.0f", a / s }')
    pr=$(awk -v p="$processed" -v s="$secs" 'BEGIN { printf "%.0f", p / s }')
    share=$(awk -v c="$cpu" -v hz="$hz" -v s="$secs" 'BEGIN { printf "%.0f%%", 100 * (c / hz) / s }')
    cpu_ev=$(awk -v c="$cpu" -v hz="$hz" -v a="$accepted" 'BEGIN { printf "%.0f", (a > 0 ? 1e6 * (c / hz) / a : 0) }')
    p50=$(ms "$(json_num "$json" latencyPercentiles p50)")
    p99=$(ms "$(json_num "$json" latencyPercentiles p99)")
    p999=$(ms "$(json_num "$json" latencyPercentiles p99.9)")
    EVENTS=$ev PROCESSED=$pr
    local label; label=$([ "$set" = plugins ] && echo "5 examples" || echo "none")
    ROW="| $scenario ($batch/req, $conns conns) | $label | $durable | ${rate:-max} | $(printf '%.0f' "$RPS") | $ev | $p50 | $p99 | $p999 | $pr | $share | $cpu_ev | $success | $admitted |"
}

declare -A acked processed max_rps
max_rows=() fixed_rows=() THREAD_ROWS=()
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
for scenario in $SCENARIOS; do
    for durable in $DURABILITY; do
        for round in $(seq 1 "$REPEAT"); do
            for set in $PLUGIN_SETS; do
                key=$scenario-$set-$durable
                echo "loadtest: $scenario, plugins: $set, durable: $durable: max throughput (round $round of $REPEAT)" >&2
                measure "$scenario" "$set" "$durable"
                max_rows+=("$ROW")
                # Space-separated, one value per round: ratios pair runs of the same round.
                acked[$key]+="$EVENTS " processed[$key]+="$PROCESSED " max_rps[$key]+="$RPS "
            done
        done
        if [ "$FIXED_RATE" = true ]; then
            for set in $PLUGIN_SETS; do
                key=$scenario-$set-$durable
                rates=$RATES
                if [ -z "$rates" ]; then
                    rates=$(median <<<"${max_rps[$key]}" | awk '{ r = int($1 / 2); print (r < 1 ? 1 : r) }')
                fi
                for rate in $rates; do
                    echo "loadtest: $scenario, plugins: $set, durable: $durable: fixed rate $rate req/s" >&2
                    measure "$scenario" "$set" "$durable" "$rate"
                    fixed_rows+=("$ROW")
                done
            done
        fi
    done
done

header="| scenario | plugins | durable | rate (req/s) | requests/s | events/s (acked) | p50 ms | p99 ms | p99.9 ms | events/s processed | server CPU share | server CPU µs per acked event | success rate | 2xx share |"
rule="|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
echo
echo "Load test with oha $(oha --version | awk '{print $2}'): $DURATION per run after a $WARMUP warm-up; server on CPU $SERVER_CPU, oha on CPU $LOAD_CPU; pipeline nice = $NICE, max-backlog = $MAX_BACKLOG (0: none), commit-delay-us = $COMMIT_DELAY."
echo "Load average at the start: $loadavg. $(date -u +%Y-%m-%dT%H:%MZ)."
echo
echo "Max throughput (closed loop):"
echo
echo "$header"; echo "$rule"
printf '%s\n' "${max_rows[@]}"
if [ "$FIXED_RATE" = true ]; then
    echo
    echo "Fixed rate (${RATES:-50% of each max}), latency corrected (open loop):"
    echo
    echo "$header"; echo "$rule"
    printf '%s\n' "${fixed_rows[@]}"
fi
# ratio <a values> <b values>: the ratio of each round's pair, then (over several rounds)
# their median and range, e.g. "0.55× (median of 5: 0.52, 0.55, 0.56, 0.58, 0.61)".
ratio() {
    local -a a b r
    read -ra a <<<"${1:-}"; read -ra b <<<"${2:-}"
    for i in "${!a[@]}"; do
        r+=("$(awk -v x="${a[$i]}" -v y="${b[$i]:-0}" 'BEGIN { printf "%.2f", (y > 0 ? x / y : 0) }')")
    done
    if [ "${#r[@]}" -le 1 ]; then echo "${r[0]:-0.00}×"; return; fi
    echo "$(median <<<"${r[*]}" | awk '{ printf "%.2f", $1 }')× (median of ${#r[@]}: $(tr ' ' '\n' <<<"${r[*]}" | sort -g | paste -sd, | sed 's/,/, /g'))"
}
echo
echo "| ratio | value |"
echo "|---|---|"
for scenario in $SCENARIOS; do
    for durable in $DURABILITY; do
        if [[ " $PLUGIN_SETS " == *" plugins "* && " $PLUGIN_SETS " == *" none "* ]]; then
            echo "| $scenario, durable=$durable: acked events/s with plugins ÷ without | $(ratio "${acked[$scenario-plugins-$durable]}" "${acked[$scenario-none-$durable]}") |"
            echo "| $scenario, durable=$durable: processed events/s with plugins ÷ without | $(ratio "${processed[$scenario-plugins-$durable]}" "${processed[$scenario-none-$durable]}") |"
        fi
    done
    if [[ " $DURABILITY " == *" true "* && " $DURABILITY " == *" false "* ]]; then
        for set in $PLUGIN_SETS; do
            echo "| $scenario, plugins=$set: acked events/s durable ÷ not durable | $(ratio "${acked[$scenario-$set-true]}" "${acked[$scenario-$set-false]}") |"
        done
    fi
done
if [ "${THREADS:-false}" = true ]; then
    echo
    echo "Server CPU µs per processed event, by thread (THREADS=true):"
    echo
    echo "| scenario | plugins | durable | rate | thread: µs per event |"
    echo "|---|---|---|---|---|"
    printf '%s\n' "${THREAD_ROWS[@]}"
fi
