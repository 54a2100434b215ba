#!/usr/bin/env bash
# bench/serve/grpc_latency.sh — what the server adds to a model's latency: ResNet-50 at batch 1
# through `cloister serve` (gRPC over mutual TLS, measured by `cloister bench`, one connection, one
# request at a time) against the same model, same input and same engine thread count run directly
# by `cloister run --repeat` (engine only), alternating ROUNDS times; best p50 of each counts, so a
# noisy neighbour hurts both alike. Goal: end-to-end <= 1.05x engine-only.
# Not a test: nothing fails on speed.
#
# Usage: bench/serve/grpc_latency.sh BUILD_DIR [THREADS] [ROUNDS] [REQUESTS]
#   The model is BUILD_DIR/models-full/resnet50.onnx (exported with Debian's torch if missing, as in
#   bench/engine/run.sh). With $CLOISTER_BENCH_OUT set, the figures (and the percentiles of the best
#   end-to-end round) also go to serve-grpc.jsonl there (bench/lib.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:?usage: grpc_latency.sh BUILD_DIR [THREADS] [ROUNDS] [REQUESTS]}" && pwd)
threads=${2:-2}
rounds=${3:-3}
n=${4:-30}
cloister=$build/cloister
PY=/usr/bin/python3
model=$build/models-full/resnet50.onnx
if [[ ! -f $model ]]; then
  echo "grpc_latency.sh: exporting ResNet-50 to $model" >&2
  $PY "$root/tests/models/make_fixtures.py" --full --only resnet50 --out "$build/models-full" >&2
fi
source "$root/bench/lib.sh"
bench_workdir grpc

$PY -c "import numpy as np; x = np.load('$build/models-full/resnet50.input.npy'); np.save('x.npy', x[:1])"
"$cloister" tls init --dir tls --server-name localhost --san 127.0.0.1 --client-name client >/dev/null
mkdir -p models/resnet50/1
ln -s "$model" models/resnet50/1/model.onnx
grpc=$(port)
rest=$(port)
OMP_WAIT_POLICY=passive CLOISTER_LOG=warn "$cloister" serve --host 127.0.0.1 --port "$grpc" --rest_api_port "$rest" \
  --ssl_config_file tls/ssl.cfg --model_name resnet50 --model_base_path models/resnet50 \
  --engine-threads "$threads" --workers 1 --file_system_poll_wait_seconds 0 2>serve.log &
pids+=($!)
tls=(--ca tls/ca_cert.pem --cert tls/client/cert.pem --key tls/client/key.pem)
for _ in $(seq 300); do
  "$cloister" predict --server "localhost:$grpc" "${tls[@]}" --model resnet50 --input x.npy >/dev/null 2>&1 && break
  sleep 0.2
done

best() { awk -v a="$1" -v b="$2" 'BEGIN{print (b == "" || a + 0 < b + 0) ? a : b}'; }
e_best="" s_best=""
echo "bench/serve grpc_latency: resnet50 batch 1, $threads engine threads, $n requests per round, $(nproc) cores"
bench_emit serve-grpc kind=config text="resnet50 batch 1, $threads engine threads, $rounds alternating rounds of $n requests (3 warm-up), best p50 of each, $(nproc) cores; cloister serve: gRPC over mutual TLS, measured by cloister bench, one connection, one request at a time; peer: the same model and input run by cloister run --repeat (engine only)"
for ((r = 1; r <= rounds; r++)); do
  e=$(OMP_WAIT_POLICY=passive "$cloister" run --model "$model" --input x.npy --threads "$threads" --repeat "$n" --warmup 3 2>&1 |
      sed -n 's/.*p50_ms=\([0-9.]*\).*/\1/p')
  s_lat=$("$cloister" bench --server "localhost:$grpc" "${tls[@]}" --model resnet50 --input x.npy --batch 1 \
        --concurrency 1 --requests "$n" --warmup 3 2>/dev/null | grep '^latency ms:' || true)
  s=$(sed -n 's/.*p50 \([0-9.]*\).*/\1/p' <<<"$s_lat")
  echo "round $r: engine only p50 ${e} ms, cloister serve gRPC mTLS p50 ${s} ms"
  e_best=$(best "$e" "$e_best")
  [[ $(best "$s" "$s_best") == "$s" ]] && s_best_line=$s_lat
  s_best=$(best "$s" "$s_best")
done
awk -v e="$e_best" -v s="$s_best" 'BEGIN {
  printf "best p50: engine only %.2f ms, end to end %.2f ms (+%.2f ms)\n", e, s, s - e
  printf "ratio end-to-end/engine-only = %.3f (goal <= 1.05)\n", s / e }'
bench_emit serve-grpc metric="batch-1 p50 latency end to end (gRPC mTLS)" model=resnet50 value:="$s_best" unit=ms \
  better=lower peer="engine only (cloister run --repeat)" peer_value:="$e_best" ratio_of=end-to-end/engine-only \
  ratio:="$(awk -v e="$e_best" -v s="$s_best" 'BEGIN{printf "%.3f", s / e}')" goal="<= 1.05"
bench_emit_latency serve-grpc "cloister serve, gRPC mTLS (cloister bench, 1 connection)" resnet50 "${s_best_line:-}" \
  reference="engine only p50 (cloister run)" reference_value:="$e_best" note="the round with the best p50"
