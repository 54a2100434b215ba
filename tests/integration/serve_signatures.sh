#!/usr/bin/env bash
# serve_signatures.sh — several signatures per model (signatures.json) and TF Serving's Classify, Regress
# and MultiInference through the real `cloister serve`, with python3-grpcio stubs generated from
# proto/: a small ONNX model made here (python3-onnx) with five signatures (predict, two classify, two
# regress); GetModelMetadata (gRPC and REST) lists them all; Predict, Classify, Regress, MultiInference
# and REST :classify / :regress / :predict select them by signature_name and answer what numpy computes
# from the weights; TF Serving's errors for an unknown signature, a signature of another method and
# MultiInference's rules; hostile examples (missing, miscounted, wrong-kind features, too many examples,
# hand-made protobuf bytes, a request whose decoding exceeds the memory limit) are refused with the
# reason; a version with a broken signatures.json is refused while the previous serves, and loads once
# fixed; a model without the file keeps its single serving_default signature.
# Usage: serve_signatures.sh CLOISTER SERVE_TESTD PROTO_DIR
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$(dirname "$0")/lib.sh"
TESTD=$(readlink -f "$2")
PROTO=$(readlink -f "$3")
source "$(dirname "$0")/serve_lib.sh"
export CLOISTER_LOG=info
PYC=$ROOT/tests/integration/serve_signatures.py

check "tls material" make_tls
check "python stubs from the protos" make_py
mkdir -p models/iris/1 models/plain/1
check "a small ONNX model (python3-onnx)" $PY "$PYC" make models/iris/1
cp models/iris/1/model.onnx models/plain/1/
C=tensorflow/serving/classify R=tensorflow/serving/regress P=tensorflow/serving/predict
cat >models/iris/1/signatures.json <<EOF
{"signatures": {
  "serving_default": {"inputs": {"features": "x"}, "outputs": {"probabilities": "probs", "value": "value"}},
  "classify_iris": {"method_name": "$C", "inputs": {"measurements": "x"}, "outputs": {"scores": "probs"},
                    "labels": ["setosa", "versicolor", "virginica"]},
  "classify_top": {"method_name": "$C", "inputs": {"measurements": "x"}, "outputs": {"classes": "top"},
                   "labels": ["setosa", "versicolor", "virginica"]},
  "regress_value": {"method_name": "$R", "inputs": {"measurements": "x"}, "outputs": {"outputs": "value"}},
  "regress_m2": {"method_name": "$R", "inputs": {"m2": "x"}, "outputs": {"outputs": "value"}}
}}
EOF
cat >models.cfg <<EOF
model_config_list {
  config { name: "iris" base_path: "$WORK/models/iris" model_platform: "onnx"
           version_labels { key: "stable" value: 1 } }
  config { name: "plain" base_path: "$WORK/models/plain" model_platform: "onnx" }
}
EOF
wait_log() {
  local i
  for ((i = 0; i < 200; i++)); do
    grep -Eq -- "$2" "$1" && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
read -r GRPC REST < <(free_ports)
# 8 MiB per request: enough for every check, and the decode-budget check below exceeds it
"$CLOISTER" serve --host 127.0.0.1 --port "$GRPC" --rest_api_port "$REST" --ssl_config_file tls2/ssl.cfg \
  --model_config_file models.cfg --allow_version_labels_for_unavailable_models --file_system_poll_wait_seconds 1 \
  --engine-threads 1 --max_request_memory_mb 8 >serve.log 2>&1 &
SERVE_PID=$!
SERVER_PIDS+=("$SERVE_PID")
wait_log serve.log "serving: gRPC" "$SERVE_PID" || { echo "server did not start:"; cat serve.log; finish; exit 1; }
expect "the version's signatures are logged when it loads" 0 \
  "model 'iris' version 1 loaded .*signatures 'serving_default', 'classify_iris', 'classify_top', 'regress_value', 'regress_m2'" \
  -- cat serve.log
q() { $PY "$PYC" "$GRPC" "$REST" "$@"; }

META='{"serving_default": ["'$P'", [["features", "x"]], [["probabilities", "probs"], ["value", "value"]]],
 "classify_iris": ["'$C'", [["measurements", "x"]], [["scores", "probs"]]],
 "classify_top": ["'$C'", [["measurements", "x"]], [["classes", "top"]]],
 "regress_value": ["'$R'", [["measurements", "x"]], [["outputs", "value"]]],
 "regress_m2": ["'$R'", [["m2", "x"]], [["outputs", "value"]]]}'
# ---- metadata and Predict
expect "gRPC GetModelMetadata lists the 5 signatures (aliases -> the model's tensors, method names)" 0 \
  "ok metadata: 5 signatures" -- q metadata "$META"
expect "REST metadata lists the same 5 signatures" 0 "ok REST metadata: 5 signatures" -- q rest_metadata "$META"
expect "a model without signatures.json keeps one serving_default (predict)" 0 \
  "\[\('serving_default', 'tensorflow/serving/predict'\)\]" -- q metadata_plain
expect "Predict on serving_default by its aliases, with an output filter" 0 "ok predict: outputs \['probabilities'\]" -- \
  q predict
expect "Predict on a classification signature (signature_name)" 0 "ok predict_sig: outputs \['scores'\] of signature classify_iris" -- \
  q predict_sig
expect "Predict, unknown signature: FAILED_PRECONDITION with TF's text" 0 \
  'FAILED_PRECONDITION Serving signature key "nope" not found.' -- q predict_unknown
expect "REST :predict with signature_name" 0 "ok REST :predict with signature_name" -- q rest_predict_sig
expect "REST :predict, unknown signature: 400 with TF's text" 0 "ok REST" -- \
  q rest_err '{"path": "/v1/models/iris:predict", "body": {"signature_name": "nope", "instances": [[1,2,3,4]]},
  "status": 400, "text": "Serving signature key \"nope\" not found."}'

# ---- Classify, Regress, MultiInference
expect "Classify: labels and scores as numpy computes" 0 "ok classify: 3 examples, 3 classes each" -- q classify
expect "Classify by version label (model_spec.version_label)" 0 "ok classify by label 'stable': version 1" -- \
  q classify_label
expect "Classify by an unknown version label: INVALID_ARGUMENT with TF's text" 0 "ok classify_label_unknown" -- \
  q classify_label_unknown
expect "Classify with a context" 0 "ok classify with context" -- q classify_context
expect "Classify: int64_list values feed a float input" 0 "ok classify: an int64_list" -- q classify_int
expect "Classify with integer class ids and labels" 0 "ok classify with class ids" -- q classify_top
expect "Regress" 0 "ok regress" -- q regress
expect "MultiInference: two classifications and a regression" 0 "ok multi" -- q multi
expect "REST :classify" 0 'ok REST :classify: \[\["setosa",' -- q rest_classify
expect "REST :regress (a context, /versions/1)" 0 "ok REST :regress" -- q rest_regress

# ---- TF Serving's errors
expect "Classify on a regression signature" 0 \
  "INVALID_ARGUMENT Expected classification signature method_name to be tensorflow/serving/classify. Was: tensorflow/serving/regress" -- \
  q classify_err '{"sig": "regress_value", "code": "INVALID_ARGUMENT", "text": "Expected classification signature"}'
expect "Regress on serving_default (a predict signature)" 0 \
  "Expected regression signature method_name to be tensorflow/serving/regress. Was: tensorflow/serving/predict" -- \
  q regress_err '{"code": "INVALID_ARGUMENT", "text": "Expected regression signature method_name"}'
expect "Classify on a model without signatures.json" 0 "Was: tensorflow/serving/predict" -- \
  q classify_err '{"model": "plain", "code": "INVALID_ARGUMENT", "text": "Expected classification signature"}'
expect "Classify, unknown signature" 0 "No signature was found with the name: nope" -- \
  q classify_err '{"sig": "nope", "code": "INVALID_ARGUMENT", "text": "No signature was found with the name: nope"}'
expect "Classify, unknown model" 0 "NOT_FOUND Servable not found for request: Latest\(nomodel\)" -- \
  q classify_err '{"model": "nomodel", "code": "NOT_FOUND", "text": "Servable not found"}'
expect "REST :classify on a predict signature: 400 with TF's text" 0 "ok REST .*Was: tensorflow/serving/predict" -- \
  q rest_err '{"path": "/v1/models/iris:classify", "body": {"examples": [{"features": [1,2,3,4]}]}, "status": 400,
  "text": "Expected classification signature method_name to be tensorflow/serving/classify"}'
expect "REST :regress on a model without signatures.json: 400" 0 "ok REST" -- \
  q rest_err '{"path": "/v1/models/plain:regress", "body": {"examples": [{"x": [1,2,3,4]}]}, "status": 400,
  "text": "Expected regression signature method_name"}'
expect "REST GET :classify: 405" 0 "ok REST" -- \
  q rest_err '{"method": "GET", "path": "/v1/models/iris:classify", "status": 405, "text": "need POST"}'
expect "MultiInference: the same signature twice" 0 "Duplicate evaluation of signature: regress_value" -- \
  q multi_dup "Duplicate evaluation of signature: regress_value"
expect "MultiInference: two models" 0 "must access the same model name" -- q multi_models "must access the same model name."
expect "MultiInference: a predict task is UNIMPLEMENTED" 0 "UNIMPLEMENTED Unsupported signature method_name: tensorflow/serving/predict" -- \
  q multi_predict "Unsupported signature method_name"
expect "MultiInference: signatures fed from different features" 0 "Input tensor must be the same for all Signatures." -- \
  q multi_inputs "Input tensor must be the same for all Signatures."
expect "MultiInference: a task's method differs from its signature's" 0 "Expected classification signature method_name" -- \
  q multi_method "Expected classification signature method_name"
expect "MultiInference: an unknown signature" 0 "Requested signature not found in model graph: nope" -- \
  q multi_missing "Requested signature not found in model graph: nope"
expect "MultiInference: no tasks" 0 "INVALID_ARGUMENT MultiInferenceRequest has no tasks" -- q multi_none "has no tasks"

# ---- hostile examples
expect "a missing feature names the example and the feature" 0 "example 0: no feature 'measurements'" -- \
  q classify_err '{"sig": "classify_iris", "name": "other", "code": "INVALID_ARGUMENT", "text": "example 0: no feature"}'
expect "a feature with the wrong count of values" 0 "feature 'measurements' has 2 values, but the input it feeds \(shape \[-1,4\]\) takes 4" -- \
  q classify_err '{"sig": "classify_iris", "rows": [[1, 2]], "code": "INVALID_ARGUMENT", "text": "has 2 values"}'
expect "a bytes_list feature for a float input" 0 "is a bytes_list" -- \
  q classify_err '{"sig": "classify_iris", "kind": "bytes", "code": "INVALID_ARGUMENT", "text": "is a bytes_list"}'
expect "no examples" 0 "INVALID_ARGUMENT Input is empty." -- \
  q regress_err '{"sig": "regress_value", "rows": [], "code": "INVALID_ARGUMENT", "text": "Input is empty."}'
# hand-made bytes: a truncated ClassificationRequest; requests whose input (field 2) holds an example
# list (1) of N empty examples (2 bytes each on the wire, ~40 bytes each once decoded): 65,537 of them
# (more examples than allowed, within the memory limit) and 400,000 (beyond the 8 MiB request limit)
expect "a truncated ClassificationRequest" 0 "INVALID_ARGUMENT the request is not a valid ClassificationRequest" -- \
  q raw "Classify:0a05026972" INVALID_ARGUMENT "not a valid ClassificationRequest"
empties() {
  $PY -c '
import sys
def v(n):
    b = b""
    while True:
        if n < 0x80: return b + bytes([n])
        b += bytes([n & 0x7f | 0x80]); n >>= 7
ex = b"\x0a\x00" * int(sys.argv[1])
inp = b"\x0a" + v(len(ex)) + ex
spec = b"\x0a\x04iris\x1a" + bytes([len(sys.argv[2])]) + sys.argv[2].encode()
print((b"\x0a" + v(len(spec)) + spec + b"\x12" + v(len(inp)) + inp).hex())' "$@"
}
empties 65537 regress_value >many.hex
empties 400000 classify_iris >big.hex
expect "65537 examples: refused" 0 "INVALID_ARGUMENT 65537 examples in one request, more than the 65536 allowed" -- \
  q raw "Regress:@many.hex" INVALID_ARGUMENT "more than the 65536 allowed"
expect "decoding beyond the request memory limit: RESOURCE_EXHAUSTED" 0 \
  "RESOURCE_EXHAUSTED decoding the request's examples needs more than the 8.0 MiB" -- \
  q raw "Classify:@big.hex" RESOURCE_EXHAUSTED "needs more than the 8.0 MiB"
expect "REST :classify: a nested feature value" 0 "ok REST" -- \
  q rest_err '{"path": "/v1/models/iris:classify", "body": {"signature_name": "classify_iris", "examples": [{"measurements": [[1,2],[3,4]]}]},
  "status": 400, "text": "must be a number, a string"}'
expect "REST :classify: examples not a list" 0 "ok REST" -- \
  q rest_err '{"path": "/v1/models/iris:classify", "body": {"signature_name": "classify_iris", "examples": {"a": 1}},
  "status": 400, "text": "\"examples\" must be a list"}'
expect "REST :classify: a value that is not a number" 0 "ok REST" -- \
  q rest_err '{"path": "/v1/models/iris:classify", "body": {"signature_name": "classify_iris", "examples": [{"measurements": [1, true, 3, 4]}]},
  "status": 400, "text": "must be a number"}'
expect "the server survived every request" 0 "" -- kill -0 "$SERVE_PID"

# ---- a new version with a broken signatures.json: refused, version 1 keeps serving; fixed: loads
mkdir -p models/iris/2.tmp
cp models/iris/1/model.onnx models/iris/2.tmp/
echo '{"signatures": {"s": {"inputs": {"a": "nosuch"}}}}' >models/iris/2.tmp/signatures.json
mv models/iris/2.tmp models/iris/2
expect "a signature naming a tensor the model lacks fails the version, version 1 serves" 0 \
  "signatures.json: signatures.s.inputs.a: 'nosuch' is not an input of the model \(its inputs: 'x'\).*version 1 keeps serving" -- \
  bash -c "for i in \$(seq 100); do grep -q \"'nosuch' is not an input\" serve.log && break; sleep 0.1; done; grep \"'nosuch'\" serve.log"
expect "version 1 still answers Classify" 0 "ok classify" -- q classify
sleep 1.1 # a new mtime
cp models/iris/1/signatures.json models/iris/2/signatures.json
expect "fixed, version 2 loads with its signatures" 0 "model 'iris' version 2 loaded .*signatures 'serving_default'" -- \
  bash -c "for i in \$(seq 100); do grep -q \"'iris' version 2 loaded\" serve.log && break; sleep 0.1; done; grep \"'iris' version 2 loaded\" serve.log"

stop_servers
finish
