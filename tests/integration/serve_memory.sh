#!/usr/bin/env bash
# serve_memory.sh — per-request and total memory budgets in `cloister serve` (docs/serve.md "Memory"),
# with the committed reduced ResNet-18 (tests/models/fixtures) taking 64x64 images, up to 4096 per
# request (preprocess.json): a request of 2048 tiny PNGs (17 bytes of JSON each; 100 MiB decoded and
# 230 MiB of working memory in one run) runs in pieces within --max_request_memory_mb and answers the
# same rows as a server without limits; one of 4096 cannot fit and is refused (REST 429 with a JSON
# error, gRPC RESOURCE_EXHAUSTED); six clients sending 2048-image requests for 8 s keep the server's
# RSS under a stated ceiling (before: it passed 1 GiB), the ones beyond --memory_budget_mb being
# refused with 429; and once the burst is over the memory kept for reuse is given back.
# Usage: serve_memory.sh CLOISTER SERVE_TESTD PROTO_DIR
source "$(dirname "$0")/lib.sh"
TESTD=$(readlink -f "$2")
PROTO=$(readlink -f "$3")
source "$(dirname "$0")/serve_lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LOAD=$ROOT/tests/integration/memory_load.py

mkdir -p m/1
cp "$ROOT/tests/models/fixtures/resnet18_small.onnx" m/1/model.onnx
cat >m/1/preprocess.json <<'EOF'
{"input": "input", "color": "RGB", "width": 64, "height": 64, "layout": "NCHW", "scale": 0.00392156862745098,
 "max_batch": 4096}
EOF
$PY "$LOAD" body 2048 b2048.json && $PY "$LOAD" body 4096 b4096.json && $PY "$LOAD" body 16 b16.json
check "python stubs from the protos" make_py

# The sanitizer build's allocator keeps freed memory in a quarantine and has its own overhead: the same
# checks, with a quarantine small enough not to hide what the server gives back, and a wider margin.
SLACK=96
if nm "$CLOISTER" 2>/dev/null | grep -q __asan_init; then
  export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=16:allocator_release_to_os_interval_ms=200
  SLACK=256
fi

# serve NAME ARGS... — cloister serve on free ports; sets NAME_PID, NAME_GRPC, NAME_REST
serve() {
  local name=$1 gp rp
  shift
  read -r gp rp < <($PY -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
  OMP_WAIT_POLICY=passive "$CLOISTER" serve --plaintext --host 127.0.0.1 --port "$gp" --rest_api_port "$rp" \
    --model_name r18 --model_base_path "$WORK/m" --file_system_poll_wait_seconds 0 --engine-threads 1 "$@" \
    >"$name.log" 2>&1 &
  local pid=$!
  SERVER_PIDS+=("$pid")
  for _ in $(seq 300); do
    curl -s -o /dev/null "http://127.0.0.1:$rp/v1/models/r18" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  printf -v "${name}_PID" %s "$pid"
  printf -v "${name}_GRPC" %s "$gp"
  printf -v "${name}_REST" %s "$rp"
}
post() { # post PORT BODY OUT — prints the HTTP status
  curl -sS --max-time 300 -o "$3" -w '%{http_code}' -d @"$2" "http://127.0.0.1:$1/v1/models/r18:predict"
}

serve lim --max_request_memory_mb 128 --memory_budget_mb 384 --engine_pool_mb 16 --workers 2 \
  --memory_release_idle_ms 300
serve free --max_request_memory_mb 0 --memory_budget_mb 0 --workers 1
sleep 1 # the release after start-up
base=$($PY "$LOAD" rss "$lim_PID")
expect "a request of 2048 images runs in pieces within the per-request limit" 0 "^200$" -- post "$lim_REST" b2048.json lim.json
expect "a server without limits runs it at once" 0 "^200$" -- post "$free_REST" b2048.json free.json
expect "  ... and both answer the same 2048 rows, in order" 0 "2048 rows equal" -- $PY "$LOAD" compare lim.json free.json 1e-4
expect "4096 images cannot fit in 128 MiB: REST 429" 0 "^429$" -- post "$lim_REST" b4096.json big.json
expect "  ... with a JSON error that says why and which limit" 0 \
  '^\{"error":"the request needs [0-9.]+ MiB \(inputs [0-9.]+ MiB and decoded images.*--max_request_memory_mb' -- cat big.json
expect "  ... and gRPC RESOURCE_EXHAUSTED" 0 "RESOURCE_EXHAUSTED .*max_request_memory_mb" -- \
  env PYTHONPATH="$WORK/py" $PY - "$lim_GRPC" "$WORK/b4096.json" <<'EOF'
import base64, json, sys
import grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
imgs = [base64.b64decode(r["b64"]) for r in json.load(open(sys.argv[2]))["instances"]]
req = predict_pb2.PredictRequest()
req.model_spec.name = "r18"
req.inputs["input"].CopyFrom(tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=imgs,
    tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(imgs))])))
stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel("127.0.0.1:" + sys.argv[1]))
try:
    stub.Predict(req, timeout=120)
    print("answered")
except grpc.RpcError as e:
    print(e.code().name, e.details())
EOF
expect "a small request is answered as before" 0 "^200$" -- post "$lim_REST" b16.json small.json

# Six clients, 2048 images each, for 8 s: at most three requests' shares fit the 384 MiB budget, the
# rest are refused at once. The ceiling: what the server held idle, plus the budget, the engine's
# pool and a margin for the rest (kernels for new batch sizes, connections, allocator).
ceiling=$((base + 384 + 16 + SLACK))
out=$($PY "$LOAD" load "$lim_REST" r18 b2048.json "$lim_PID" 6 8)
echo "    load: $out (RSS idle $base MiB, ceiling $ceiling MiB)"
expect "hostile batches: the server's RSS stayed under $ceiling MiB (idle $base + budget 384 + pool 16 + $SLACK)" 0 "^ok" -- \
  $PY -c "import json,sys; r=json.loads(sys.argv[1]); print('ok' if r['max_rss'] <= $ceiling else 'RSS reached %d MiB' % r['max_rss'])" "$out"
expect "  ... requests were answered" 0 "^ok" -- \
  $PY -c "import json,sys; r=json.loads(sys.argv[1]); print('ok' if r['codes'].get('200', 0) >= 2 else r)" "$out"
expect "  ... and the ones beyond the budget refused with 429 and a JSON error, nothing else" 0 "^ok" -- \
  $PY -c "import json,sys; r=json.loads(sys.argv[1]); c=r['codes']; print('ok' if c.get('429', 0) >= 1 and set(c) <= {'200', '429'} and r['json_errors'] and 'memory_budget_mb' in r['first_refusal'] else r)" "$out"
expect "  ... counted in the metrics by limit" 0 'cloister_serve_memory_refused_total\{limit="budget"\} [1-9]' -- \
  curl -sS --max-time 10 "http://127.0.0.1:$lim_REST/monitoring/prometheus/metrics"
after=0
for _ in $(seq 50); do
  sleep 0.2
  after=$($PY "$LOAD" rss "$lim_PID")
  ((after <= base + 64)) && break
done
expect "after the burst the memory is given back (RSS within 64 MiB of idle: $base -> $after MiB)" 0 "^ok" -- \
  bash -c "((after = $after, after <= $base + 64)) && echo ok"
expect "  ... and the server still answers" 0 "^200$" -- post "$lim_REST" b16.json small.json

stop_servers
finish
