#!/usr/bin/env bash
# client_predict.sh — `cloister predict` and `cloister bench` against the real `cloister serve` with the
# committed demo model (models/digits) over gRPC mutual TLS and REST: top-k classes match PyTorch's for
# all 20 sample PNGs (preprocessed by the client), labels, batches, .npy inputs, --output-json; errors
# (wrong CA, no client certificate, wrong server name, unknown model, wrong shape, server down, wrong
# port kind) give a clear message and exit 1 (usage errors 2); bench prints a summary with 0 errors and
# exits 1 when requests fail (a serve_testd with a queue of 1, over h2c); --image-bytes puts one
# DT_STRING element per image on the wire (checked by a Python gRPC server and an HTTP server).
# Usage: client_predict.sh CLOISTER SERVE_TESTD PROTO_DIR
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$(dirname "$0")/lib.sh"
TESTD=$(readlink -f "$2")
PROTO=$(readlink -f "$3")
source "$(dirname "$0")/serve_lib.sh"
SAMPLES=$ROOT/models/digits/samples
LABELS=$ROOT/models/digits/labels.txt
export CLOISTER_LOG=warn

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# wait_for LOG REGEX PID: waits (20 s at most) for a line in a server's log
wait_for() {
  for _ in $(seq 400); do
    grep -Eq "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

check "tls material" make_tls
GRPC=$(free_port)
REST=$(free_port)
CLOISTER_LOG=info "$CLOISTER" serve --host 127.0.0.1 --port "$GRPC" --rest_api_port "$REST" --ssl_config_file tls2/ssl.cfg \
  --model_name digits --model_base_path "$ROOT/models/digits" --file_system_poll_wait_seconds 0 \
  --engine-threads 1 --workers 2 2> serve.log &
SERVER_PIDS+=($!)
wait_for serve.log "serving: gRPC" "${SERVER_PIDS[-1]}" || { echo "server did not start:"; cat serve.log; exit 1; }

MTLS=(--ca tls2/ca_cert.pem --cert tls2/client/cert.pem --key tls2/client/key.pem)
G=(--server "localhost:$GRPC" "${MTLS[@]}" --model digits)
R=(--server "localhost:$REST" --rest "${MTLS[@]}" --model digits)
ALL=("$SAMPLES"/digit-*.png)

# all 20 samples in one batch: every top-1 class is the expected label, every probability within 2e-4 of
# PyTorch's (the client's preprocessing gives the model exactly the training pixels)
compare() { # compare FILE -> "N of 20"
  $PY - "$SAMPLES/expected.json" "$1" <<'PY'
import json, os, sys
expected = json.load(open(sys.argv[1]))
got = json.load(open(sys.argv[2]))
good = 0
values = got["outputs"]["probabilities"]["values"]
for r, res in enumerate(got["results"]):
    want = expected[os.path.basename(res["input"])]
    probs = values[r * 10:(r + 1) * 10]
    if res["top"][0]["index"] == want["label"] and all(abs(a - b) < 2e-4 for a, b in zip(probs, want["probabilities"])):
        good += 1
    else:
        print(res["input"], res["top"][0], probs)
print(f"{good} of {len(expected)}")
PY
}
"$CLOISTER" predict "${G[@]}" --image "${ALL[@]}" --output-json > grpc.json 2> grpc.err
expect "gRPC mTLS: a batch of 20 images, classes and probabilities match PyTorch" 0 "^20 of 20$" -- compare grpc.json
"$CLOISTER" predict "${R[@]}" --image "${ALL[@]}" --output-json > rest.json 2> rest.err
expect "REST mTLS: the same batch, the same answers" 0 "^20 of 20$" -- compare rest.json
expect "top-k with labels (gRPC)" 0 '^digit-3-0.png: 3 "3" \([01]\.[0-9]{6}\), [0-9] "[0-9]" \(' -- \
  "$CLOISTER" predict "${G[@]}" --image "$SAMPLES/digit-3-0.png" --labels "$LABELS" --top 3
expect "--top 1 prints one class per image" 0 '^digit-7-1.png: 7 \([0-9.]+\)$' -- \
  "$CLOISTER" predict "${G[@]}" --image "$SAMPLES/digit-7-1.png" --top 1
expect "several images: one line each, in order (REST)" 0 '^digit-0-0.png: 0 .*
digit-5-1.png: 5 .*
digit-9-1.png: 9 ' -- "$CLOISTER" predict "${R[@]}" --image "$SAMPLES/digit-0-0.png" "$SAMPLES/digit-5-1.png" \
  "$SAMPLES/digit-9-1.png" --top 2
expect "--version 1" 0 '^digit-2-0.png: 2 ' -- "$CLOISTER" predict "${G[@]}" --version 1 --image "$SAMPLES/digit-2-0.png"

# .npy inputs: the sample's REST body as a tensor
$PY - "$SAMPLES/digit-4-0.json" <<'PY'
import json, sys
import numpy as np
x = np.array(json.load(open(sys.argv[1]))["inputs"]["image"], dtype=np.float32)
np.save("four.npy", x)
np.save("four3.npy", np.concatenate([x, x, x]))
np.save("flat.npy", x.reshape(1, 64))
np.save("int.npy", x.astype(np.int32))
PY
expect "--input NAME=x.npy (gRPC)" 0 '^\[0\]: 4 ' -- "$CLOISTER" predict "${G[@]}" --input image=four.npy
expect "--input x.npy, name from the signature (REST)" 0 '^\[0\]: 4 ' -- "$CLOISTER" predict "${R[@]}" --input four.npy
expect "--input with a batch of 3" 0 '^\[2\]: 4 ' -- "$CLOISTER" predict "${G[@]}" --input four3.npy
expect "--output logits ranks another output" 0 '^\[0\]: 4 \([0-9]+\.[0-9]+\)' -- \
  "$CLOISTER" predict "${G[@]}" --input four.npy --output logits --top 1

# errors
expect "wrong shape is the server's INVALID_ARGUMENT (gRPC)" 1 "INVALID_ARGUMENT: input 'image' has shape \[1,64\]" -- \
  "$CLOISTER" predict "${G[@]}" --input image=flat.npy
expect "wrong shape (REST)" 1 "INVALID_ARGUMENT: .*image" -- \
  "$CLOISTER" predict "${R[@]}" --input image=flat.npy
expect "wrong dtype is the server's INVALID_ARGUMENT" 1 "INVALID_ARGUMENT: .*DT_FLOAT but DT_INT32" -- \
  "$CLOISTER" predict "${G[@]}" --input image=int.npy
expect "unknown model (gRPC): NOT_FOUND" 1 "NOT_FOUND: Servable not found for request: Latest\(nosuch\)" -- \
  "$CLOISTER" predict --server "localhost:$GRPC" "${MTLS[@]}" --model nosuch --input image=four.npy
expect "unknown model (REST): NOT_FOUND" 1 "NOT_FOUND: Servable not found" -- \
  "$CLOISTER" predict --server "localhost:$REST" --rest "${MTLS[@]}" --model nosuch --image "$SAMPLES/digit-1-0.png"
expect "unknown version" 1 "NOT_FOUND" -- "$CLOISTER" predict "${G[@]}" --version 7 --input image=four.npy
expect "a CA that did not issue the server certificate" 1 "server certificate of localhost:$GRPC is not trusted.*--ca" -- \
  "$CLOISTER" predict --server "localhost:$GRPC" --ca tls1/ca_cert.pem --cert tls2/client/cert.pem \
  --key tls2/client/key.pem --model digits --input image=four.npy
expect "no client certificate under mutual TLS (gRPC)" 1 "refused the TLS connection: certificate required.*--cert and --key" -- \
  "$CLOISTER" predict --server "localhost:$GRPC" --ca tls2/ca_cert.pem --model digits --input image=four.npy
# REST sends first, so the refusal may show as the alert or as the closed connection (both say what to do)
expect "no client certificate under mutual TLS (REST)" 1 "certificate required.*--cert and --key|needs --cert and --key" -- \
  "$CLOISTER" predict --server "localhost:$REST" --rest --ca tls2/ca_cert.pem --model digits --input image=four.npy
expect "a client certificate from another CA" 1 "refused the TLS connection" -- \
  "$CLOISTER" predict --server "localhost:$GRPC" --ca tls2/ca_cert.pem --cert tls1/server/cert.pem \
  --key tls1/server/key.pem --model digits --input image=four.npy
expect "the server certificate is checked against --server-name" 1 "not issued for 'other.example'.*--server-name" -- \
  "$CLOISTER" predict "${G[@]}" --server-name other.example --input image=four.npy
expect "by IP address (in the certificate's SANs)" 0 '^\[0\]: 4 ' -- \
  "$CLOISTER" predict --server "127.0.0.1:$GRPC" "${MTLS[@]}" --model digits --input image=four.npy
DOWN=$(free_port)
expect "server down" 1 "cannot connect to localhost:$DOWN: connection refused" -- \
  "$CLOISTER" predict --server "localhost:$DOWN" "${MTLS[@]}" --model digits --input image=four.npy
# a server that accepts connections and never answers
SILENT=$(free_port)
$PY -c 'import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(8); time.sleep(30)' "$SILENT" &
SILENT_PID=$!
sleep 0.3
expect "a server that does not answer: timeout (TLS handshake)" 1 "TLS handshake: no answer from 127.0.0.1:$SILENT within 300 ms" -- \
  "$CLOISTER" predict --server "127.0.0.1:$SILENT" "${MTLS[@]}" --model digits --input image=four.npy --timeout-ms 300
expect "a server that does not answer: timeout (REST request)" 1 "no answer from 127.0.0.1:$SILENT within 300 ms" -- \
  "$CLOISTER" predict --server "127.0.0.1:$SILENT" --rest --plaintext --model digits --input image=four.npy --timeout-ms 300
kill "$SILENT_PID"
wait "$SILENT_PID" 2>/dev/null
expect "the REST port without --rest" 1 "is this its REST port\? add --rest" -- \
  "$CLOISTER" predict --server "localhost:$REST" "${MTLS[@]}" --model digits --input image=four.npy
expect "a TLS server with --plaintext" 1 "closed|HTTP/2|connection" -- \
  "$CLOISTER" predict --server "localhost:$GRPC" --plaintext --model digits --input image=four.npy
expect "not an image: the server that decodes images says so" 1 "INVALID_ARGUMENT: input 'image': not a JPEG or PNG image" -- \
  "$CLOISTER" predict "${G[@]}" --image "$LABELS"
expect "nothing to send is a usage error" 2 "nothing to send" -- "$CLOISTER" predict "${G[@]}"
expect "--server without a port is a usage error" 2 "HOST:PORT" -- \
  "$CLOISTER" predict --server localhost --model digits --input four.npy
expect "--cert without --key is a usage error" 2 "--cert and --key go together" -- \
  "$CLOISTER" predict --server "localhost:$GRPC" --cert tls2/client/cert.pem --model digits --input four.npy
expect "bad --mean is a usage error" 2 "--mean" -- "$CLOISTER" predict "${G[@]}" --image "$SAMPLES/digit-1-0.png" --mean 1,2

# bench against the real server
expect "bench over gRPC: summary, no errors" 0 "throughput: [0-9.]+ req/s, [0-9.]+ items/s" -- \
  "$CLOISTER" bench "${G[@]}" --image "$SAMPLES/digit-8-0.png" --batch 4 --concurrency 2 --requests 40 --warmup 2
check "  ... with latency percentiles and 0 errors" grep -Eq "^errors: 0$" <(
  "$CLOISTER" bench "${G[@]}" --image "$SAMPLES/digit-8-0.png" --batch 4 --concurrency 2 --requests 40 --warmup 2 2>&1)
# --random for a model whose signature takes encoded images (DT_STRING [-1]: the demo model's preprocess.json):
# random PNG images the server decodes (before, --random refused such inputs)
expect "bench --random, an input taking encoded images (REST): random PNGs, 0 errors" 0 "^errors: 0$" -- \
  "$CLOISTER" bench "${R[@]}" --random --batch 8 --concurrency 2 --requests 40
expect "bench --random, the same over gRPC, 32x32 images" 0 "^errors: 0$" -- \
  "$CLOISTER" bench "${G[@]}" --random --size 32x32 --batch 4 --requests 20 --warmup 1
expect "predict --random: the server classifies the random image" 0 "^\[0\]: [0-9] \(" -- \
  "$CLOISTER" predict "${G[@]}" --random --top 1
expect "--size with --random must be WxH" 2 "--size must be WIDTHxHEIGHT" -- \
  "$CLOISTER" bench "${G[@]}" --random --size 32 --requests 1
expect "--dim without --random is a usage error" 2 "--dim applies to --random" -- \
  "$CLOISTER" bench "${G[@]}" --input image=four.npy --dim 3 --requests 1
expect "bench's plan in the singular for one request and one warm-up" 0 \
  "^cloister bench: 1 connection \(gRPC\), batch 1, 1 request after 1 warm-up request on each connection$" -- \
  "$CLOISTER" bench "${G[@]}" --input image=four.npy --requests 1 --warmup 1
expect "bench with --input (batch-1 tensor repeated to --batch)" 0 "items/s" -- \
  "$CLOISTER" bench "${G[@]}" --input image=four.npy --batch 16 --requests 10 --warmup 0
expect "bench counts a failing request and exits 1" 1 "10 of 10 requests failed; first error: NOT_FOUND" -- \
  "$CLOISTER" bench --server "localhost:$GRPC" "${MTLS[@]}" --model digits --version 9 --input image=four.npy \
  --requests 10 --warmup 0

# a full queue: serve_testd (h2c) with one worker and a queue of 1, requests that each sleep 300 ms
start_server busy --plaintext --workers 1 --queue 1 || { finish; exit 1; }
$PY -c 'import numpy as np; np.save("sleep.npy", np.array([300], dtype=np.float32))'
expect "h2c with --plaintext, a non-classification output" 0 "^y DT_FLOAT \[1\]: 300$" -- \
  "$CLOISTER" predict --server "127.0.0.1:$busy_GRPC" --plaintext --model sleepy --input x=sleep.npy
expect "REST over http with --plaintext (a lone output is unnamed in REST)" 0 "^outputs DT_DOUBLE \[1\]: 300$" -- \
  "$CLOISTER" predict --server "127.0.0.1:$busy_REST" --rest --plaintext --model sleepy --input x=sleep.npy
expect "bench over REST with random inputs" 0 "latency ms: mean [0-9.]+  p50 [0-9.]+  p90 [0-9.]+  p99 [0-9.]+  max" -- \
  "$CLOISTER" bench --server "127.0.0.1:$busy_REST" --rest --plaintext --model affine --random --batch 8 --requests 40
# --random is seeded: the same seed gives the same inputs (so the same outputs), another seed others
B=(--server "127.0.0.1:$busy_GRPC" --plaintext)
"$CLOISTER" predict "${B[@]}" --model vision --random --size 48x40 --seed 7 --output-json > v7a.json 2>&1
"$CLOISTER" predict "${B[@]}" --model vision --random --size 48x40 --seed 7 --output-json > v7b.json 2>&1
"$CLOISTER" predict "${B[@]}" --model vision --random --size 48x40 --seed 8 --output-json > v8.json 2>&1
check "--random images, seed 7 twice: the server decoded the same pixels" cmp v7a.json v7b.json
check "  ... seed 8: other pixels" bash -c '! cmp -s v7a.json v8.json'
expect "  ... grey 4x4 averages of noise: 16 values in (0.3, 0.7)" 0 "^ok$" -- $PY -c '
import json; v = json.load(open("v7a.json"))["outputs"]["pixels"]["values"]
print("ok" if len(v) == 16 and all(0.3 < x < 0.7 for x in v) else v)'
expect "--random images larger than the model allows: the server's refusal" 1 "4096" -- \
  "$CLOISTER" predict "${B[@]}" --model vision --random
for seed in 1 2 3 4 5 6; do
  "$CLOISTER" predict "${B[@]}" --model adder --random --seed $seed --output-json > add$seed.json 2>&1
done
expect "--random int32 inputs: integers 0..9 (the server's sums of two, over 6 seeds, in 0..18, not all equal)" 0 \
  "^ok$" -- $PY -c '
import json; v = [json.load(open(f"add{s}.json"))["outputs"]["sum"]["values"] for s in range(1, 7)]
print("ok" if all(len(x) == 1 and 0 <= x[0] <= 18 and x[0] == int(x[0]) for x in v) and len({x[0] for x in v}) > 1 else v)'
expect "predict --random sends a batch of 1" 0 "DT_INT32 \[1\]" -- \
  "$CLOISTER" predict "${B[@]}" --model adder --random
expect "bench --random with int32 inputs" 0 "^errors: 0$" -- \
  "$CLOISTER" bench "${B[@]}" --model adder --random --batch 16 --requests 20 --warmup 0
expect "bench: queue full -> UNAVAILABLE counted, exit 1" 1 "errors: [1-9][0-9]*  UNAVAILABLE [1-9]" -- \
  "$CLOISTER" bench --server "127.0.0.1:$busy_GRPC" --plaintext --model sleepy --input x=sleep.npy \
  --concurrency 4 --requests 8 --warmup 0
check "  ... and names the server's message" grep -q "UNAVAILABLE: " <<<"$OUT"
expect "bench over REST: queue full -> HTTP 429 counted, exit 1" 1 "RESOURCE_EXHAUSTED [1-9]" -- \
  "$CLOISTER" bench --server "127.0.0.1:$busy_REST" --rest --plaintext --model sleepy --input x=sleep.npy \
  --concurrency 4 --requests 8 --warmup 0

# a server that shuts down mid-run (SIGTERM): bench backs off its reconnection attempts (10 ms doubling to 1 s)
# instead of counting thousands of refused connections a second, and stops after --max-unreachable-s
for api in grpc rest; do
  start_server gone --plaintext || { finish; exit 1; }
  if [[ $api == grpc ]]; then port=$gone_GRPC rest=(); else port=$gone_REST rest=(--rest); fi
  "$CLOISTER" bench --server "127.0.0.1:$port" "${rest[@]}" --plaintext --model affine --random --batch 1 \
    --concurrency 2 --requests 1000000 --warmup 0 --max-unreachable-s 2 >gone.out 2>&1 &
  bench=$!
  sleep 1
  kill -TERM "$gone_PID"
  SECONDS=0
  wait "$bench"
  rc=$? took=$SECONDS
  expect "bench $api: a server stopped mid-run: exit 1, requests not sent after 2 s unreachable" 0 \
    "^not sent: [0-9]+ \(the server was unreachable for 2 s\)" -- bash -c "((rc = $rc, rc == 1)) && cat gone.out"
  expect "  ... and few failed attempts (backed off), within seconds" 0 "^ok" -- bash -c "
    n=\$(sed -n 's/^errors: \([0-9]*\).*/\1/p' gone.out); ((n >= 1 && n < 200 && $took <= 8)) && echo ok || echo \"errors \$n in $took s\""
done

# --image-bytes on the wire: a Python gRPC server and an HTTP server record what arrives
if check "python stubs from the protos" make_py; then
  BYTES_G=$(free_port)
  BYTES_R=$(free_port)
  PYTHONPATH="$WORK/py" $PY - "$BYTES_G" "$BYTES_R" > bytes-server.log 2>&1 <<'PY' &
import base64, json, sys, threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, HTTPServer
import grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tensorflow.core.framework import tensor_pb2, types_pb2, tensor_shape_pb2

def answer(sizes):
    t = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=sizes,
                               tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(sizes))]))
    return t

class Svc(prediction_service_pb2_grpc.PredictionServiceServicer):
    def Predict(self, req, ctx):
        t = req.inputs["image_bytes"]
        ok = t.dtype == types_pb2.DT_STRING and [d.size for d in t.tensor_shape.dim] == [len(t.string_val)]
        print("grpc", ok, [len(s) for s in t.string_val], [s[:4] for s in t.string_val], flush=True)
        resp = predict_pb2.PredictResponse()
        resp.outputs["sizes"].CopyFrom(answer([float(len(s)) for s in t.string_val]))
        return resp

class H(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        vals = body["inputs"]["image_bytes"]
        raw = [base64.b64decode(v["b64"]) for v in vals]
        print("rest", self.path, [len(r) for r in raw], [r[:4] for r in raw], flush=True)
        out = json.dumps({"outputs": {"sizes": [len(r) for r in raw]}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a):
        pass

s = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Svc(), s)
s.add_insecure_port("127.0.0.1:" + sys.argv[1])
s.start()
h = HTTPServer(("127.0.0.1", int(sys.argv[2])), H)
threading.Thread(target=h.serve_forever, daemon=True).start()
print("ready", flush=True)
s.wait_for_termination()
PY
  BYTES_PID=$!
  trap 'kill $BYTES_PID 2>/dev/null; cleanup_servers' EXIT
  wait_for bytes-server.log "^ready" "$BYTES_PID" || cat bytes-server.log
  P0=$(stat -c %s "$SAMPLES/digit-0-0.png")
  P1=$(stat -c %s "$SAMPLES/digit-1-0.png")
  expect "--image-bytes over gRPC: one DT_STRING element per image, shape [N]" 0 "^sizes DT_FLOAT \[2\]: $P0 $P1$" -- \
    "$CLOISTER" predict --server "127.0.0.1:$BYTES_G" --plaintext --model digits --image-bytes --input-name image_bytes \
    --image "$SAMPLES/digit-0-0.png" "$SAMPLES/digit-1-0.png"
  check "  ... the server saw the PNG bytes" grep -q "grpc True \[$P0, $P1\] \[b'\\\\x89PNG'" bytes-server.log
  expect "--image-bytes over REST: {\"b64\": ...} per image" 0 "^sizes DT_DOUBLE \[2\]: $P1 $P0$" -- \
    "$CLOISTER" predict --server "127.0.0.1:$BYTES_R" --rest --plaintext --model digits --image-bytes \
    --input-name image_bytes --image "$SAMPLES/digit-1-0.png" "$SAMPLES/digit-0-0.png"
  check "  ... to :predict, decoded to the PNG bytes" grep -q "rest /v1/models/digits:predict \[$P1, $P0\] \[b'\\\\x89PNG'" bytes-server.log
  kill "$BYTES_PID"
  wait "$BYTES_PID" 2>/dev/null
fi

stop_servers
finish
