#!/usr/bin/env bash
# serve_images.sh — image inputs through the real `cloister serve` and the demo model: the digits
# model with its preprocess.json takes the sample PNGs (and JPEGs) as encoded bytes — gRPC string_val
# from python-grpcio, REST {"b64": ...} from curl in the row and columnar formats — and answers what
# PyTorch answers for them; metadata shows the input as DT_STRING [-1]; undecodable, oversized and
# too many images, and image bytes for a model without preprocessing, are INVALID_ARGUMENT / HTTP 400
# with the reason; a new version with a broken preprocess.json is refused while the previous keeps
# serving, and is loaded once fixed.
# Usage: serve_images.sh CLOISTER SERVE_TESTD PROTO_DIR
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$(dirname "$0")/lib.sh"
TESTD=$(readlink -f "$2")
PROTO=$(readlink -f "$3")
source "$(dirname "$0")/serve_lib.sh"
SAMPLES=$ROOT/models/digits/samples
JPEGS=$ROOT/tests/data/images
export CLOISTER_LOG=info

check "tls material" make_tls
check "python stubs from the protos" make_py
# digits: the model with its preprocessing; digits_float: the same model without (floats only)
mkdir -p models/digits/1 models/digits_float/1
cp "$ROOT/models/digits/1/model.onnx" "$ROOT/models/digits/1/preprocess.json" models/digits/1/
cp "$ROOT/models/digits/1/model.onnx" models/digits_float/1/
cat >models.cfg <<EOF
model_config_list {
  config { name: "digits" base_path: "$WORK/models/digits" model_platform: "onnx" }
  config { name: "digits_float" base_path: "$WORK/models/digits_float" model_platform: "onnx" }
}
EOF

# wait_log FILE REGEX PID — until the server logs REGEX (10 s at most)
wait_log() {
  local i
  for ((i = 0; i < 200; i++)); do
    grep -Eq -- "$2" "$1" && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for _ in 1 2 3 4 5; do
  GRPC=$((20000 + RANDOM % 40000)); REST=$((GRPC + 1))
  port_free "$GRPC" && port_free "$REST" && break
done
"$CLOISTER" serve --host 127.0.0.1 --port "$GRPC" --rest_api_port "$REST" --ssl_config_file tls2/ssl.cfg \
  --model_config_file models.cfg --file_system_poll_wait_seconds 1 --engine-threads 1 >serve.log 2>&1 &
SERVE_PID=$!
SERVER_PIDS+=("$SERVE_PID")
wait_log serve.log "serving: gRPC" "$SERVE_PID" || { echo "server did not start:"; cat serve.log; finish; exit 1; }
expect "the version loaded with its image preprocessing" 0 \
  "model 'digits' version 1 loaded .*input 'image' takes greyscale images \(preprocess.json, 8x8\)" -- cat serve.log

c() { curl -sS --max-time 20 --cacert tls2/ca_cert.pem --cert tls2/client/cert.pem --key tls2/client/key.pem \
  --resolve "localhost:$REST:127.0.0.1" -w '\n%{http_code}\n' "$@"; }
U=https://localhost:$REST/v1/models
b64() { base64 -w0 "$1"; }

# ---- metadata: the image input is advertised as TF Serving shows image-bytes models
expect "REST metadata: input 'image' is DT_STRING [-1]" 0 \
  '"inputs":\{"image":\{"dtype":"DT_STRING","tensor_shape":\{"dim":\[\{"size":"-1","name":""\}\],"unknown_rank":false\}' -- \
  c "$U/digits/metadata"
expect "REST metadata: a model without preprocessing still shows DT_FLOAT" 0 '"image":\{"dtype":"DT_FLOAT"' -- \
  c "$U/digits_float/metadata"
expect "gRPC metadata: DT_STRING [-1]" 0 "input image DT_STRING \[-1\]" -- \
  client "$GRPC" tls2/ca_cert.pem tls2/client/cert.pem tls2/client/key.pem digits_metadata digits

# ---- gRPC: the 20 PNGs as string_val in one request, and JPEGs
expect "gRPC string_val: 20 PNGs classified as PyTorch does" 0 "20 images classified as PyTorch does" -- \
  client "$GRPC" tls2/ca_cert.pem tls2/client/cert.pem tls2/client/key.pem digits_images "$SAMPLES" 1
expect "gRPC string_val: a colour JPEG" 0 "digit-3-0.jpg -> 3" -- \
  client "$GRPC" tls2/ca_cert.pem tls2/client/cert.pem tls2/client/key.pem digits_jpeg "$JPEGS/digit-3-0.jpg" 3
expect "gRPC string_val: a greyscale JPEG" 0 "digit-7-0-grey.jpg -> 7" -- \
  client "$GRPC" tls2/ca_cert.pem tls2/client/cert.pem tls2/client/key.pem digits_jpeg "$JPEGS/digit-7-0-grey.jpg" 7

# ---- REST: row format (one instance per PNG), named rows, columnar; probabilities against PyTorch
/usr/bin/python3 - "$SAMPLES" <<'PY'
import base64, json, os, sys
d = sys.argv[1]
names = sorted(json.load(open(os.path.join(d, "expected.json"))))
enc = [base64.b64encode(open(os.path.join(d, n), "rb").read()).decode() for n in names]
json.dump({"instances": [{"b64": e} for e in enc]}, open("rows.json", "w"))
json.dump({"instances": [{"image": {"b64": e}} for e in enc[:3]]}, open("named.json", "w"))
json.dump({"inputs": {"image": [{"b64": e} for e in enc[3:5]]}}, open("columns.json", "w"))
PY
c -d @rows.json "$U/digits:predict" >rows.out
c -d @named.json "$U/digits:predict" >named.out
c -d @columns.json "$U/digits/versions/1:predict" >columns.out
expect "REST b64: row, named-row and columnar answers match PyTorch" 0 "20 rows, 3 named rows, 2 columns: ok" -- \
  /usr/bin/python3 - "$SAMPLES" <<'PY'
import json, os, sys
expected = json.load(open(os.path.join(sys.argv[1], "expected.json")))
names = sorted(expected)
def body(f):
    text, status = open(f).read().rsplit("\n", 2)[:2]
    assert status == "200", (f, status, text[:300])
    return json.loads(text)
def same(probs, name):
    want = expected[name]
    best = max(range(10), key=lambda k: probs[k])
    assert best == want["label"] and all(abs(a - b) < 2e-4 for a, b in zip(probs, want["probabilities"])), (name, probs)
rows = body("rows.out")["predictions"]
assert len(rows) == 20
for r, n in zip(rows, names):
    same(r["probabilities"], n)
named = body("named.out")["predictions"]
for r, n in zip(named, names[:3]):
    same(r["probabilities"], n)
cols = body("columns.out")["outputs"]["probabilities"]
for r, n in zip(cols, names[3:5]):
    same(r, n)
print(f"{len(rows)} rows, {len(named)} named rows, {len(cols)} columns: ok")
PY
printf '{"instances": [{"b64": "%s"}]}' "$(b64 "$JPEGS/digit-3-0.jpg")" >jpeg.json
expect "REST b64: a JPEG" 0 '"probabilities":\[[^]]*\]\}\]\}.200' -- bash -c "$(declare -f c); REST=$REST; c -d @jpeg.json $U/digits:predict | tr '\n' '.'"
check "  ... classified as 3" bash -c "$(declare -f c); REST=$REST; c -d @jpeg.json $U/digits:predict | head -1 |
  /usr/bin/python3 -c 'import json,sys; p=json.load(sys.stdin)[\"predictions\"][0][\"probabilities\"]; sys.exit(0 if max(range(10), key=lambda k: p[k]) == 3 else 1)'"
expect "float tensors are still accepted by the image input" 0 '"probabilities": *\[\[' -- \
  c -d @"$SAMPLES/digit-0-0.json" "$U/digits:predict"

# ---- refusals: INVALID_ARGUMENT / 400 with the reason
expect "REST: bytes that are not an image are 400" 0 \
  '^\{"error":"input .image.: not a JPEG or PNG image \(11 bytes\)"\}.400.$' -- \
  bash -c "$(declare -f c); REST=$REST; c -d '{\"instances\": [{\"b64\": \"aGVsbG8gd29ybGQ=\"}]}' $U/digits:predict | tr '\n' '.'"
expect "REST: bad base64 is 400" 0 'base64: character .* at position 4 is not in the standard alphabet.*400' -- \
  bash -c "$(declare -f c); REST=$REST; c -d '{\"inputs\": {\"image\": [{\"b64\": \"iVBO*\"}]}}' $U/digits:predict | tr '\n' '.'"
expect "REST: b64 for a model without preprocessing is 400" 0 \
  "Expects arg\[0\] \('image'\) to be DT_FLOAT but DT_STRING is provided: this input does not take encoded images.*400" -- \
  bash -c "$(declare -f c); REST=$REST; c -d @named.json $U/digits_float:predict | tr '\n' '.'"
head -c 100 "$SAMPLES/digit-1-0.png" >trunc.png
printf '{"instances": [{"b64": "%s"}, {"b64": "%s"}]}' "$(b64 "$SAMPLES/digit-1-0.png")" "$(b64 trunc.png)" >trunc.json
expect "REST: a truncated PNG is 400 naming the image" 0 "input 'image', image 2 of 2: corrupt PNG.*400" -- \
  bash -c "$(declare -f c); REST=$REST; c -d @trunc.json $U/digits:predict | tr '\n' '.'"
G=(client "$GRPC" tls2/ca_cert.pem tls2/client/cert.pem tls2/client/key.pem image_error)
expect "gRPC: garbage bytes are INVALID_ARGUMENT" 0 "INVALID_ARGUMENT: input 'image': not a JPEG or PNG image" -- \
  "${G[@]}" digits garbage "not a JPEG or PNG image (23 bytes)"
expect "gRPC: an oversized image is INVALID_ARGUMENT" 0 "1100x1000, more than the 1048576 pixels allowed" -- \
  "${G[@]}" digits big "more than the 1048576 pixels allowed"
expect "gRPC: too many images are INVALID_ARGUMENT" 0 "65 images in one request, more than the 64" -- \
  "${G[@]}" digits many "max_batch"
expect "gRPC: string_val for a model without preprocessing is INVALID_ARGUMENT" 0 "does not take encoded images" -- \
  "${G[@]}" digits_float garbage "to be DT_FLOAT but DT_STRING is provided"

# ---- a new version with a broken preprocess.json is refused; version 1 keeps serving; fixed, it loads
mkdir -p models/digits/2.tmp
cp "$ROOT/models/digits/1/model.onnx" models/digits/2.tmp/
sed 's/"width": 8/"width": 28/' "$ROOT/models/digits/1/preprocess.json" >models/digits/2.tmp/preprocess.json
mv models/digits/2.tmp models/digits/2
check "version 2 refused for its preprocess.json" wait_log serve.log \
  "model 'digits': .*2/preprocess.json does not fit the model: input 'image' has shape \[-1,1,8,8\], but the declared preprocessing \(NCHW, 28x8, 1 channel\) makes \[-1,1,8,28\].*version 1 keeps serving" "$SERVE_PID"
expect "  ... and version 1 still answers images" 0 "20 images classified as PyTorch does" -- \
  client "$GRPC" tls2/ca_cert.pem tls2/client/cert.pem tls2/client/key.pem digits_images "$SAMPLES" 1
cp "$ROOT/models/digits/1/preprocess.json" models/digits/2/preprocess.json.new
mv models/digits/2/preprocess.json.new models/digits/2/preprocess.json
check "fixed, version 2 loads" wait_log serve.log "model 'digits' version 2 loaded .*takes greyscale images" "$SERVE_PID"
expect "  ... and answers images" 0 "20 images classified as PyTorch does" -- \
  client "$GRPC" tls2/ca_cert.pem tls2/client/cert.pem tls2/client/key.pem digits_images "$SAMPLES" 2
expect "metrics count the refused requests as INVALID_ARGUMENT" 0 \
  'cloister_serve_requests_total\{model_name="digits",API="predict",entrypoint="GRPC",status="INVALID_ARGUMENT"\} 3' -- \
  c "https://localhost:$REST/monitoring/prometheus/metrics"

stop_servers
finish
