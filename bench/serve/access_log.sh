#!/usr/bin/env bash
# bench/serve/access_log.sh — what the access log costs on the hot path: two `cloister serve` of the
# same build, one without an access log (the default) and one writing it to a file (--access_log,
# one write(2) per request) in the given log format, driven alternately by wrk with REST :predict on
# the demo model over TLS keep-alive (the cheapest request there is, so the log's share is the
# largest it gets). ROUNDS alternating rounds, the best round of each counts; each round also reports
# the server's CPU time per request (from /proc), which a neighbour disturbs less than req/s.
# Prints ratios (with / without). Not a test: nothing fails on speed.
#
# Usage: bench/serve/access_log.sh BUILD_DIR [SECONDS] [CONNECTIONS] [ROUNDS] [text|json]
#   ACCESS_LOG=/dev/null writes the lines there instead of a file (building them without the file's cost).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:?usage: access_log.sh BUILD_DIR [SECONDS] [CONNECTIONS] [ROUNDS] [text|json]}" && pwd)
secs=${2:-8}
conns=${3:-16}
rounds=${4:-3}
format=${5:-json}
cloister=$build/cloister
for tool in wrk curl; do
  command -v $tool >/dev/null || { echo "access_log.sh: $tool is missing (scripts/deps.sh bench installs it)" >&2; exit 1; }
done
source "$root/bench/lib.sh"
bench_workdir access-log

"$cloister" tls init --dir tls --server-name localhost --san 127.0.0.1 >/dev/null
body=$root/models/digits/samples/digit-3-0.json
cat > post.lua <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$body", "rb"); wrk.body = f:read("*a"); f:close()
LUA

# start NAME ARGS... — a server; sets port_NAME and pid_NAME
start() {
  local name=$1 rest grpc
  shift
  rest=$(port)
  grpc=$(port)
  OMP_WAIT_POLICY=passive CLOISTER_LOG=warn "$cloister" serve --host 127.0.0.1 --port "$grpc" --rest_api_port "$rest" \
    --ssl_config_file tls/ssl.cfg --model_name digits --model_base_path "$root/models/digits" \
    --engine-threads 1 --workers 2 --file_system_poll_wait_seconds 0 --log-format "$format" "$@" 2>"$name.log" &
  pids+=($!)
  printf -v "pid_$name" %s "$!"
  printf -v "port_$name" %s "$rest"
  for _ in $(seq 100); do curl -sk "https://127.0.0.1:$rest/v1/models/digits" >/dev/null 2>&1 && break; sleep 0.1; done
}
start off
log=${ACCESS_LOG:-$work/access.log}
start on --access_log "$log"

rps() { sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p'; }
reqs() { sed -n 's/^ *\([0-9]*\) requests in.*/\1/p'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
us_per_req() { awk -v a="$1" -v b="$2" -v n="$3" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.1f", (b - a) / hz * 1e6 / n}'; }
best() { awk -v a="$1" -v b="$2" 'BEGIN{print (b == "" || a + 0 > b + 0) ? a : b}'; }
lowest() { awk -v a="$1" -v b="$2" 'BEGIN{print (b == "" || a + 0 < b + 0) ? a : b}'; }

echo "bench/serve/access_log: wrk -t2 -c$conns -d${secs}s, REST :predict (digits) over TLS keep-alive, $(nproc) cores, $rounds rounds, $format lines"
declare -A best_rps best_us all_rps all_us
for ((r = 1; r <= rounds; r++)); do
  line="round $r:"
  for name in off on; do
    pid=pid_$name prt=port_$name
    t0=$(cpu_ticks "${!pid}")
    out=$(wrk -t2 -c"$conns" -d"${secs}s" -s post.lua "https://127.0.0.1:${!prt}/v1/models/digits:predict")
    t1=$(cpu_ticks "${!pid}")
    n=$(reqs <<<"$out")
    us=$(us_per_req "$t0" "$t1" "$n")
    x=$(rps <<<"$out")
    non2xx=$(sed -n 's/^ *Non-2xx or 3xx responses: *\([0-9]*\)/\1/p' <<<"$out")
    best_rps[$name]=$(best "$x" "${best_rps[$name]:-}")
    best_us[$name]=$(lowest "$us" "${best_us[$name]:-}")
    all_rps[$name]+="$x,"
    all_us[$name]+="$us,"
    line+=$(printf ' access log %-3s %8.0f req/s (%s us CPU/req, non-2xx %s);' "$name" "$x" "$us" "${non2xx:-0}")
  done
  echo "$line"
done
if [[ -f $log ]]; then
  lines=$(wc -l <"$log")
  echo "access log: $lines lines, $(($(stat -c %s "$log") / (lines > 0 ? lines : 1))) bytes a line"
fi
# the medians of the rounds too: one lucky or unlucky round moves the best a lot on a shared machine
python3 -c "
import statistics as st
on, off = ${best_rps[on]}, ${best_rps[off]}
print(f'best: without {off:.0f} req/s, with {on:.0f} req/s; ratio with/without {on / off:.3f}')
print(f'server CPU per request (lowest round): without ${best_us[off]} us, with ${best_us[on]} us; ratio with/without {${best_us[on]} / ${best_us[off]}:.3f}')
ro, rf, uo, uf = (st.median([float(x) for x in v.split(',') if x]) for v in ('${all_rps[on]}', '${all_rps[off]}', '${all_us[on]}', '${all_us[off]}'))
print(f'medians of the rounds: {rf:.0f} vs {ro:.0f} req/s (ratio with/without {ro / rf:.3f}); CPU {uf:.1f} vs {uo:.1f} us/req (ratio {uo / uf:.3f})')"
