#!/usr/bin/env bash
# bench/client/run.sh — `cloister bench` (C: nghttp2 + OpenSSL, one connection per thread) against
# Python grpcio (Debian's python3-grpcio, one channel per thread, messages generated from proto/) as
# clients of the same `cloister serve` (demo model, gRPC over mutual TLS), same request (a batch of B
# copies of one demo sample), one and two connections. The figure is client + server: on the demo model
# the server's inference is small, so a faster client shows as more requests per second. Prints each
# client's requests/s and the ratio. Not a test: nothing fails on speed.
#
# Usage: bench/client/run.sh BUILD_DIR [REQUESTS]
#   With $CLOISTER_BENCH_OUT set, the figures and cloister bench's percentiles also go to client.jsonl
#   there (bench/lib.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:?usage: run.sh BUILD_DIR [REQUESTS]}" && pwd)
n=${2:-3000}
cloister=$build/cloister
PY=/usr/bin/python3
source "$root/bench/lib.sh"
bench_workdir client

"$cloister" tls init --dir tls --server-name localhost --san 127.0.0.1 --client-name client >/dev/null
mkdir py
(cd "$root/proto" && protoc -I. --python_out="$work/py" $(find . -name '*.proto' | sed 's|^\./||'))
$PY -m grpc_tools.protoc -I"$root/proto" -I/usr/include --grpc_python_out="$work/py" \
  tensorflow_serving/apis/prediction_service.proto
grpc=$(port)
rest=$(port)
OMP_WAIT_POLICY=passive CLOISTER_LOG=info "$cloister" serve --host 127.0.0.1 --port "$grpc" --rest_api_port "$rest" \
  --ssl_config_file tls/ssl.cfg --model_name digits --model_base_path "$root/models/digits" \
  --engine-threads 1 --workers 2 --file_system_poll_wait_seconds 0 2> serve.log &
pids+=($!)
for _ in $(seq 200); do grep -q "serving: gRPC" serve.log && break; sleep 0.05; done
sample=$root/models/digits/samples/digit-3-0.png
mtls=(--ca tls/ca_cert.pem --cert tls/client/cert.pem --key tls/client/key.pem)

cat > pyclient.py <<'PY'
import sys, threading, time
import grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
addr, batch, conc, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
creds = grpc.ssl_channel_credentials(open("tls/ca_cert.pem", "rb").read(), open("tls/client/key.pem", "rb").read(),
                                     open("tls/client/cert.pem", "rb").read())
req = predict_pb2.PredictRequest()
req.model_spec.name = "digits"
dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in (batch, 1, 8, 8)]
req.inputs["image"].CopyFrom(tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=bytes(256 * batch),
                                                    tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims)))
stubs = [prediction_service_pb2_grpc.PredictionServiceStub(grpc.secure_channel(addr, creds)) for _ in range(conc)]
for s in stubs:
    for _ in range(20):
        s.Predict(req)
def run(s, k):
    for _ in range(k):
        s.Predict(req)
ts = [threading.Thread(target=run, args=(s, n // conc)) for s in stubs]
t = time.perf_counter()
for th in ts: th.start()
for th in ts: th.join()
print(f"{(n // conc) * conc / (time.perf_counter() - t):.1f}")
PY

printf '%-28s %14s %14s %8s\n' "gRPC mTLS, digits" "cloister req/s" "grpcio req/s" "ratio"
bench_emit client kind=config text="$n requests per client and setting (20 warm-up), both clients against the same cloister serve (digits demo model, 1 engine thread, 2 workers, gRPC over mutual TLS); peer: Python grpcio $($PY -c 'import grpc; print(grpc.__version__)' 2>/dev/null), one channel per thread; $(nproc) cores shared by client and server"
for batch in 1 32; do
  for conc in 1 2; do
    out=$("$cloister" bench --server "localhost:$grpc" "${mtls[@]}" --model digits --image "$sample" --batch "$batch" \
      --concurrency "$conc" --requests "$n" --warmup 20 2>/dev/null || true)
    c=$(sed -n -E 's/^throughput: ([0-9.]+) req\/s.*/\1/p' <<<"$out")
    p=$(PYTHONPATH="$work/py" $PY pyclient.py "localhost:$grpc" "$batch" "$conc" "$n")
    ratio=$($PY -c "print($c / $p)")
    printf '%-28s %14s %14s %7.2fx\n' "batch $batch, $conc connection(s)" "$c" "$p" "$ratio"
    bench_emit client metric="requests/s, batch $batch, $conc connection(s)" model=digits value:="$c" unit=req/s \
      peer="Python grpcio client" peer_value:="$p" ratio_of=cloister/grpcio ratio:="$ratio"
    bench_emit_latency client "cloister bench, batch $batch, $conc connection(s)" digits "$(grep '^latency ms:' <<<"$out")"
  done
done
