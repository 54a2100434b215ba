#!/usr/bin/env bash
# bench/serve/run.sh — the model server's REST-over-TLS throughput against nginx serving a static
# response over TLS, both driven by wrk with keep-alive in the same run (goal: cloister >= 0.5x nginx).
# cloister answers real :predict requests on the demo model (digits: ~40k parameters, so the figure
# is dominated by HTTP, TLS and JSON, not by inference); nginx returns a fixed JSON body of the same
# size. Same machine, same certificate, same wrk settings. Not a test: nothing fails on speed.
#
# The two are measured alternately, ROUNDS times, and the best round of each counts: on a shared
# machine a noisy neighbour then hurts both alike (single runs of nginx alone varied 25k-46k req/s).
# Each round also reports the servers' CPU time per request (from /proc, nginx's workers included),
# which a neighbour disturbs less than req/s.
#
# Usage: bench/serve/run.sh BUILD_DIR [SECONDS] [CONNECTIONS] [ROUNDS]
#   PERF_SERVE=1 also records a perf profile of the server under load to /tmp/perf-serve.data.
#   With $CLOISTER_BENCH_OUT set, the figures also go to serve-rest.jsonl there (bench/lib.sh).
#   SERVE_ARGS="..." adds options to `cloister serve` (e.g. "--access_log access.log --log-format json";
#   bench/serve/access_log.sh compares a server with and without the access log directly).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:?usage: run.sh BUILD_DIR [SECONDS] [CONNECTIONS] [ROUNDS]}" && pwd)
secs=${2:-10}
conns=${3:-16}
rounds=${4:-3}
cloister=$build/cloister
for tool in wrk nginx curl; do
  command -v $tool >/dev/null || { echo "run.sh: $tool is missing (scripts/deps.sh bench installs it)" >&2; exit 1; }
done
source "$root/bench/lib.sh"
bench_workdir serve

"$cloister" tls init --dir tls --server-name localhost --san 127.0.0.1 >/dev/null
body=$root/models/digits/samples/digit-3-0.json
cat > post.lua <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$body", "rb"); wrk.body = f:read("*a"); f:close()
LUA

# cloister
rest=$(port)
grpc=$(port)
OMP_WAIT_POLICY=passive CLOISTER_LOG=warn "$cloister" serve --host 127.0.0.1 --port "$grpc" --rest_api_port "$rest" \
  --ssl_config_file tls/ssl.cfg --model_name digits --model_base_path "$root/models/digits" \
  --engine-threads 1 --workers 2 --file_system_poll_wait_seconds 0 ${SERVE_ARGS:-} 2> serve.log &
pids+=($!)
for _ in $(seq 100); do curl -sk "https://127.0.0.1:$rest/v1/models/digits" >/dev/null 2>&1 && break; sleep 0.1; done
answer=$(curl -sS --cacert tls/ca_cert.pem -d @"$body" "https://localhost:$rest/v1/models/digits:predict")
grep -q probabilities <<<"$answer" || { echo "run.sh: cloister did not answer: $answer" >&2; cat serve.log >&2; exit 1; }

# nginx with the same certificate and a body of the same size
nport=$(port)
printf '%s' "$answer" > answer.json
cat > nginx.conf <<NGINX
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$nport ssl;
    ssl_certificate $work/tls/server/cert.pem;
    ssl_certificate_key $work/tls/server/key.pem;
    location / { default_type application/json; alias $work/answer.json; }
  }
}
NGINX
nginx -c "$work/nginx.conf" -p "$work" -g 'daemon off;' &
pids+=($!)
for _ in $(seq 100); do curl -sk "https://127.0.0.1:$nport/x" >/dev/null 2>&1 && break; sleep 0.1; done
# nginx serves a file for GET; wrk's POST to a static location is answered 405, so nginx is driven with GET
cat > get.lua <<LUA
wrk.method = "GET"
LUA

rps() { sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p'; }
reqs() { sed -n 's/^ *\([0-9]*\) requests in.*/\1/p'; }
# cpu_ticks PID — CPU time (user + system, clock ticks) of a process and its children's processes
# (nginx's workers), all threads included
cpu_ticks() {
  local p t=0
  for p in "$1" $(pgrep -P "$1"); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
# us_per_req TICKS_BEFORE TICKS_AFTER REQUESTS — server CPU per request in microseconds
us_per_req() { awk -v a="$1" -v b="$2" -v n="$3" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.1f", (b - a) / hz * 1e6 / n}'; }
best() { awk -v a="$1" -v b="$2" 'BEGIN{print (b == "" || a + 0 > b + 0) ? a : b}'; }
lowest() { awk -v a="$1" -v b="$2" 'BEGIN{print (b == "" || a + 0 < b + 0) ? a : b}'; }
echo "bench/serve: wrk -t2 -c$conns -d${secs}s, TLS 1.3 keep-alive, $(nproc) cores shared by server and wrk, $rounds rounds"
bench_emit serve-rest kind=config text="wrk -t2 -c$conns -d${secs}s, TLS 1.3 keep-alive, $(nproc) cores shared by server and wrk, $rounds alternating rounds, best of each; cloister: REST :predict on the digits demo model (1 engine thread, 2 workers); peer: $(nginx -v 2>&1 | sed 's/^nginx version: //') (2 workers) serving a static body of the same size"
c_best="" n_best="" c_errors=0
for ((r = 1; r <= rounds; r++)); do
  [[ -n ${PERF_SERVE:-} && $r == 1 ]] && { perf record -g -o /tmp/perf-serve.data -p "${pids[0]}" -- sleep 4 >/dev/null 2>&1 & }
  t0=$(cpu_ticks "${pids[0]}")
  c_out=$(wrk -t2 -c"$conns" -d"${secs}s" -s post.lua "https://127.0.0.1:$rest/v1/models/digits:predict")
  t1=$(cpu_ticks "${pids[0]}")
  n0=$(cpu_ticks "${pids[1]}")
  n_out=$(wrk -t2 -c"$conns" -d"${secs}s" -s get.lua "https://127.0.0.1:$nport/answer.json")
  n1=$(cpu_ticks "${pids[1]}")
  c_us=$(us_per_req "$t0" "$t1" "$(reqs <<<"$c_out")")
  n_us=$(us_per_req "$n0" "$n1" "$(reqs <<<"$n_out")")
  c_rps=$(rps <<<"$c_out")
  n_rps=$(rps <<<"$n_out")
  c_non2xx=$(sed -n 's/^ *Non-2xx or 3xx responses: *\([0-9]*\)/\1/p' <<<"$c_out")
  c_errors=$((c_errors + ${c_non2xx:-0}))
  printf 'round %d: cloister REST :predict (digits) %8.0f req/s (latency %s, server CPU %s us/req), nginx static response %8.0f req/s (latency %s, server CPU %s us/req)\n' \
    "$r" "$c_rps" "$(awk '/Latency/{print $2}' <<<"$c_out")" "$c_us" "$n_rps" "$(awk '/Latency/{print $2}' <<<"$n_out")" "$n_us"
  c_cpu_best=$(lowest "$c_us" "${c_cpu_best:-}")
  n_cpu_best=$(lowest "$n_us" "${n_cpu_best:-}")
  c_best=$(best "$c_rps" "$c_best")
  n_best=$(best "$n_rps" "$n_best")
done
printf 'best: cloister %.0f req/s (non-2xx responses in all rounds: %d), nginx %.0f req/s\n' "$c_best" "$c_errors" "$n_best"
python3 -c "print(f'ratio cloister/nginx: {$c_best/$n_best:.2f}  (goal >= 0.50)')"
# steadier than req/s on a shared machine: what each server spends per request (lowest round)
printf 'server CPU per request (lowest round): cloister %s us, nginx %s us; nginx/cloister = %s\n' "$c_cpu_best" "$n_cpu_best" \
  "$(awk -v c="$c_cpu_best" -v n="$n_cpu_best" 'BEGIN{printf "%.2f", n / c}')"
ratio=$(awk -v c="$c_best" -v n="$n_best" 'BEGIN{printf "%.2f", c / n}')
cpu_ratio=$(awk -v c="$c_cpu_best" -v n="$n_cpu_best" 'BEGIN{printf "%.2f", n / c}')
bench_emit serve-rest metric="REST :predict requests/s (best round)" model=digits value:="$c_best" unit=req/s \
  peer="nginx, static response over TLS" peer_value:="$n_best" ratio_of=cloister/nginx ratio:="$ratio" goal=">= 0.50" \
  note="non-2xx responses in all rounds: $c_errors"
bench_emit serve-rest metric="server CPU per request (lowest round)" model=digits value:="$c_cpu_best" unit=us better=lower \
  peer="nginx, static response over TLS" peer_value:="$n_cpu_best" ratio_of=nginx/cloister ratio:="$cpu_ratio"
