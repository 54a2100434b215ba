#!/usr/bin/env bash
# bench/serve/omp_wait.sh — `cloister serve`'s default OpenMP wait policy (passive) against libgomp's own
# default (OMP_WAIT_POLICY unset: threads spin for 300,000 iterations after each parallel region, then
# sleep; what the server did before), and against OMP_WAIT_POLICY=active (threads keep spinning): three
# servers with the same model (ResNet-50, or the model given), one per policy, measured in turn by `cloister bench` over gRPC mutual TLS, ROUNDS times, first on
# the machine as it is, then with BUSY busy-looping processes on the cores (another tenant). Prints each
# round's p50/p90, throughput and the CPU time the server spent per request (spinning included, read from
# /proc/PID/stat), then the median ratios passive/active. Not a test: nothing fails on speed.
#
# Usage: bench/serve/omp_wait.sh BUILD_DIR [ROUNDS] [REQUESTS] [BUSY] [MODEL.onnx INPUT.npy]
#   The default model is BUILD_DIR/models-full/resnet50.onnx (exported with Debian's torch if missing).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:?usage: omp_wait.sh BUILD_DIR [ROUNDS] [REQUESTS] [BUSY] [MODEL.onnx INPUT.npy]}" && pwd)
rounds=${2:-3}
n=${3:-30}
busy=${4:-$(nproc)}
cloister=$build/cloister
PY=/usr/bin/python3
model=${5:-$build/models-full/resnet50.onnx}
input=${6:-$build/models-full/resnet50.input.npy}
if [[ ! -f $model ]]; then
  echo "omp_wait.sh: exporting ResNet-50 to $model" >&2
  $PY "$root/tests/models/make_fixtures.py" --full --only resnet50 --out "$build/models-full" >&2
fi
model=$(readlink -f "$model")
input=$(readlink -f "$input")
source "$root/bench/lib.sh"
bench_workdir omp

$PY -c "import numpy as np; x = np.load('$input'); np.save('x.npy', x[:1])"
"$cloister" tls init --dir tls --server-name localhost --san 127.0.0.1 --client-name client >/dev/null
mkdir -p models/m/1
ln -s "$model" models/m/1/model.onnx
tls=(--ca tls/ca_cert.pem --cert tls/client/cert.pem --key tls/client/key.pem)
declare -A grpc spid
for policy in runtime-default active passive; do
  grpc[$policy]=$(port)
  # the servers' environment without OMP_WAIT_POLICY: the option alone decides
  env -u OMP_WAIT_POLICY CLOISTER_LOG=warn "$cloister" serve --host 127.0.0.1 --port "${grpc[$policy]}" \
    --rest_api_port 0 --ssl_config_file tls/ssl.cfg --model_name m --model_base_path models/m \
    --workers 1 --file_system_poll_wait_seconds 0 --omp-wait-policy "$policy" 2>"serve-$policy.log" &
  pids+=($!)
  spid[$policy]=$!
done
for policy in runtime-default active passive; do
  for _ in $(seq 300); do
    "$cloister" predict --server "localhost:${grpc[$policy]}" "${tls[@]}" --model m --input x.npy >/dev/null 2>&1 && break
    sleep 0.2
  done
done

# CPU time (user + system, all threads) the server has used, in clock ticks
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# one measurement: "p50 p90 req/s cpu_ms_per_request" (the CPU the server spent, spinning included)
measure() {
  local c0 c1 out
  c0=$(cpu "${spid[$1]}")
  out=$("$cloister" bench --server "localhost:${grpc[$1]}" "${tls[@]}" --model m --input x.npy --batch 1 \
    --concurrency "$2" --requests "$n" --warmup 3 2>"bench-$1.err" |
    awk '/^throughput:/ {t = $2} /^latency ms:/ {p50 = $6; p90 = $8} END {print p50, p90, t}')
  if [[ $out != [0-9]* ]]; then
    echo "omp_wait.sh: cloister bench against the $1 server failed: $(tail -3 "bench-$1.err")" >&2
    return 1
  fi
  sleep 0.3 # spinning after the last request is counted too
  c1=$(cpu "${spid[$1]}")
  echo "$out $(awk -v a="$c0" -v b="$c1" -v n="$n" -v hz="$(getconf CLK_TCK)" 'BEGIN {print (b - a) * 1000 / hz / (n + 3)}')"
}
: >results.txt
run() { # run CONDITION CONCURRENCY
  local r policy
  for ((r = 1; r <= rounds; r++)); do
    for policy in runtime-default active passive; do
      read -r p50 p90 t c < <(measure "$policy" "$2")
      printf '%-10s c=%s round %d %-15s p50 %7.2f ms  p90 %7.2f ms  %7.1f req/s  server CPU %6.2f ms/request\n' \
        "$1" "$2" "$r" "$policy" "$p50" "$p90" "$t" "$c"
      echo "$1 $2 $policy $p50 $p90 $t $c" >>results.txt
    done
  done
}
echo "bench/serve omp_wait: $(basename "$model") batch 1, $rounds rounds x $n requests, $(nproc) cores," \
  "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
run alone 1
run alone 2
busy_pids=()
for ((i = 0; i < busy; i++)); do
  bash -c 'while :; do :; done' &
  busy_pids+=($!)
  pids+=($!)
done
run contended 1
run contended 2
for p in "${busy_pids[@]}"; do kill "$p"; done
echo "(contended: $busy busy-looping processes beside the server)"
MODEL_NAME=$(basename "$model" .onnx) $PY - <<'PY'
import datetime, json, os, statistics
model = os.environ["MODEL_NAME"]
figures = []
rows = [l.split() for l in open("results.txt")]
for cond in ("alone", "contended"):
    for c in ("1", "2"):
        def med(policy, col):
            return statistics.median(float(r[col]) for r in rows if r[0] == cond and r[1] == c and r[2] == policy)
        p50, p90, pt, pc = (med("passive", k) for k in (3, 4, 5, 6))
        for peer in ("runtime-default", "active"):
            a50, a90, at, ac = (med(peer, k) for k in (3, 4, 5, 6))
            print(f"{cond:9s} C={c}: passive / {peer:15s} median p50 {p50:.2f} / {a50:.2f} ms = {p50 / a50:.2f}x, "
                  f"p90 {p90 / a90:.2f}x, throughput {pt / at:.2f}x, server CPU per request {pc:.2f} / {ac:.2f} ms = "
                  f"{pc / ac:.2f}x")
            figures.append((f"{cond}, {c} connection{'s' if c != '1' else ''}: batch-1 p50", p50, a50, peer, "ms"))
            figures.append((f"{cond}, {c} connection{'s' if c != '1' else ''}: server CPU per request", pc, ac, peer,
                            "ms"))
out = os.environ.get("CLOISTER_BENCH_OUT")
if out:  # the same figures as the report's records (bench/lib.sh's bench_emit format)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with open(os.path.join(out, "serve-omp.jsonl"), "a") as f:
        for metric, v, pv, peer, unit in figures:
            f.write(json.dumps({"kind": "figure", "bench": "serve-omp", "time": now, "metric": metric,
                                "model": model, "value": v, "unit": unit, "better": "lower",
                                "peer": f"OMP_WAIT_POLICY {'unset (libgomp default)' if peer == 'runtime-default' else peer}",
                                "peer_value": pv, "ratio_of": f"passive/{peer}", "ratio": round(v / pv, 3)},
                               sort_keys=True) + "\n")
PY
