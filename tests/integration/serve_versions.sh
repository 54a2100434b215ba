#!/usr/bin/env bash
# serve_versions.sh — model versions, labels, configuration reloads, load retries and warm-up through
# the real `cloister serve` with the demo model, checked with a third-party gRPC client (python3-grpcio
# and protoc's classes from the project's protos: versions_client.py) and curl for REST:
#   1. the version policies of --model_config_file (latest 2, then specific, all): version directories
#      appearing and disappearing at the file-system polls, deleting the newest rolling back;
#   2. version labels: gRPC model_spec.version_label and REST /v1/models/NAME/labels/L[:predict], an
#      unknown label (TF's INVALID_ARGUMENT / 400), a label on a version that went away (NOT_FOUND), and
#      TF's rule at start-up without --allow_version_labels_for_unavailable_models;
#   3. the config file re-read every --model_config_file_poll_wait_seconds (a bad file keeps the served
#      configuration) and ModelService/HandleReloadConfigRequest (a model added and removed, a label
#      moved to an unavailable version refused, a custom_model_config refused);
#   4. --max_num_load_retries / --load_retry_interval_micros: a failing version is retried, fixed in
#      between it loads; at start-up the retries are spent, then the start-up fails;
#   5. --enable_model_warmup / --num_request_iterations_for_warmup with hand-made TFRecord warm-up files
#      (valid, with a skipped ClassifyLog, CRC-broken, truncated) and the synthetic request.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
source "$(dirname "$0")/lib.sh"
TESTD=$2
PROTO=$3
source "$(dirname "$0")/serve_lib.sh"
export CLOISTER_LOG=info
VC="$HERE/versions_client.py"
# start NAME ARGS... — cloister serve --plaintext in the background, NAME.log; NAME_PID, NAME_G, NAME_R
start() {
  local name=$1 gp rp
  shift
  read -r gp rp < <(free_ports)
  "$CLOISTER" serve --plaintext --port="$gp" --rest_api_port="$rp" "$@" >"$name.log" 2>&1 &
  local pid=$!
  SERVER_PIDS+=("$pid")
  printf -v "${name}_PID" %s "$pid"
  printf -v "${name}_G" %s "$gp"
  printf -v "${name}_R" %s "$rp"
  local i
  for ((i = 0; i < 200; i++)); do
    grep -q "serving:" "$name.log" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "server $name did not start:"; sed 's/^/    /' "$name.log"; return 1
}
# until TRIES CMD... — runs CMD every 0.1 s until it succeeds (TRIES times at most)
until_ok() {
  local n=$1
  shift
  for ((i = 0; i < n; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}
vc() { PYTHONPATH="$WORK/py" $PY "$VC" "127.0.0.1:$1" "${@:2}"; }
status_is() { [[ $(vc "$1" status "$2") == "$3" ]]; }
put() { mkdir -p "$1/$2" && cp "$ROOT/models/digits/1/model.onnx" "$1/$2/model.onnx"; }
check "python modules from the protos" make_py
$PY -c "import json; json.dump({'inputs': {'image': [[[[0.5] * 8] * 8]]}}, open('x.json', 'w'))"

# ---- 1, 2: policies and labels
for v in 1 2 3; do put m "$v"; done
cat >models.cfg <<CFG
model_config_list {
  config {
    name: "digits" base_path: "$WORK/m" model_platform: "tensorflow"
    model_version_policy { latest { num_versions: 2 } }
    version_labels { key: "stable" value: 2 }
    version_labels { key: "canary" value: 3 }
  }
}
CFG
read -r gp rp < <(free_ports)
expect "labels at start-up without --allow_version_labels_for_unavailable_models: TF's refusal" 1 \
  "Request to assign label to version 2 of model digits, which is not currently available for inference" -- \
  "$CLOISTER" serve --plaintext --port=$gp --rest_api_port=$rp --model_config_file=models.cfg
start a --model_config_file=models.cfg --allow_version_labels_for_unavailable_models=true \
  --file_system_poll_wait_seconds=1 --model_config_file_poll_wait_seconds=1 || exit 1
G=$a_G R=$a_R
expect "latest { num_versions: 2 }: versions 3 and 2 served (GetModelStatus)" 0 "^3:AVAILABLE 2:AVAILABLE$" -- vc $G status digits
expect "  ... REST shows the same" 0 '"version":"3","state":"AVAILABLE".*"version":"2","state":"AVAILABLE"' -- \
  curl -sS --max-time 10 "http://127.0.0.1:$R/v1/models/digits"
expect "gRPC Predict with version_label 'canary': version 3 answers" 0 "^answered by version 3 " -- vc $G predict digits label canary
expect "gRPC Predict with version_label 'stable': version 2 answers" 0 "^answered by version 2 " -- vc $G predict digits label stable
expect "gRPC Predict without a version: the latest (3)" 0 "^answered by version 3 " -- vc $G predict digits latest
expect "gRPC unknown label: INVALID_ARGUMENT, TF's text" 3 "^INVALID_ARGUMENT: Unrecognized servable version label: nope$" -- \
  vc $G predict digits label nope
expect "gRPC GetModelStatus by label 'stable': version 2" 0 "^2:AVAILABLE$" -- vc $G status digits label stable
expect "REST /labels/stable: the status of version 2" 0 '^\{"model_version_status":\[\{"version":"2","state":"AVAILABLE"' -- \
  curl -sS --max-time 10 "http://127.0.0.1:$R/v1/models/digits/labels/stable"
curl -sS --max-time 10 -o body.json -w '%{http_code} ' -d @x.json "http://127.0.0.1:$R/v1/models/digits/labels/canary:predict" >code.txt
expect "REST /labels/canary:predict answers 200 with outputs" 0 '^200 .*"logits"' -- bash -c 'cat code.txt body.json'
curl -sS --max-time 10 -o body.json -w '%{http_code} ' -d @x.json "http://127.0.0.1:$R/v1/models/digits/labels/nope:predict" >code.txt
expect "REST unknown label: 400, TF's text" 0 '^400 \{"error": ?"Unrecognized servable version label: nope"\}' -- bash -c 'cat code.txt body.json'
curl -sS --max-time 10 -o body.json -w '%{http_code} ' "http://127.0.0.1:$R/v1/models/digits/labels/stable/metadata" >code.txt
expect "REST /labels/stable/metadata: version 2's" 0 '^200 .*"model_spec":\{"name":"digits","signature_name":"","version":"2"' -- \
  bash -c 'cat code.txt body.json'

# the newest directory goes: latest 2 rolls back to 2 and 1; 'canary' (3) is now unavailable
rm -rf m/3
check "version 3's directory removed: the poll rolls back to 2 and 1" until_ok 100 status_is $G digits "2:AVAILABLE 1:AVAILABLE"
expect "  ... the log says why version 3 went" 0 "model 'digits' version 3 unloaded \(its directory is gone\)" -- cat a.log
expect "  ... a request through 'canary' (version 3): NOT_FOUND" 3 "^NOT_FOUND: Servable not found for request: Specific\(digits, 3\)" -- \
  vc $G predict digits label canary
put m 4
check "version 4 appears: 4 and 2 served, 1 unloaded" until_ok 100 status_is $G digits "4:AVAILABLE 2:AVAILABLE"

# ---- 3a: the config file, re-read every second
sed -i 's/latest { num_versions: 2 }/specific { versions: [1, 4] }/; s/value: 3/value: 4/' models.cfg
check "config file changed to specific [1, 4]: applied at its next poll" until_ok 100 status_is $G digits "4:AVAILABLE 1:AVAILABLE"
expect "  ... the label moved with it: 'canary' is version 4" 0 "^answered by version 4 " -- vc $G predict digits label canary
expect "  ... the log says it was applied" 0 "model config '.*models.cfg' changed: applying it" -- cat a.log
put m 5
sleep 2.2
expect "  ... a new version 5 is not taken (not listed)" 0 "^4:AVAILABLE 1:AVAILABLE$" -- vc $G status digits
cp models.cfg good.cfg
printf 'model_config_list { config { name: "digits" base_path: "x" model_version_policy { newest {} } } }\n' >models.cfg
check "a config file that does not parse: logged" until_ok 100 grep -q "unknown version policy 'newest'.*the configuration being served stays" a.log
expect "  ... and the served configuration stays" 0 "^4:AVAILABLE 1:AVAILABLE$" -- vc $G status digits

# ---- 3b: HandleReloadConfigRequest
put w 7
cat >two.json <<JSON
[{"name": "digits", "base_path": "$WORK/m", "policy": "all", "labels": {"stable": 1}},
 {"name": "second", "base_path": "$WORK/w"}]
JSON
expect "ReloadConfig: digits with all {}, a second model added" 0 "^reloaded: status 0 ''$" -- vc $G reload two.json
expect "  ... digits serves every version on disk" 0 "^5:AVAILABLE 4:AVAILABLE 2:AVAILABLE 1:AVAILABLE$" -- vc $G status digits
expect "  ... the new model answers" 0 "^answered by version 7 " -- vc $G predict second latest
expect "  ... 'stable' is version 1 now, 'canary' is gone" 3 "^INVALID_ARGUMENT: Unrecognized servable version label: canary$" -- \
  vc $G predict digits label canary
cat >moved.json <<JSON
[{"name": "digits", "base_path": "$WORK/m", "policy": "all", "labels": {"stable": 9}}]
JSON
expect "ReloadConfig moving 'stable' to a version not available: TF's FAILED_PRECONDITION" 3 \
  "^FAILED_PRECONDITION: Request to assign label to version 9 of model digits, which is not currently available for inference$" -- \
  vc $G reload moved.json
expect "  ... nothing changed: the second model still answers" 0 "^answered by version 7 " -- vc $G predict second latest
expect "ReloadConfig with a custom_model_config: refused as TF does" 3 \
  "^FAILED_PRECONDITION: Cannot transition to requested config. It is only legal to transition from one ModelConfigList to another.$" -- \
  vc $G reload custom
cat >one.json <<JSON
[{"name": "second", "base_path": "$WORK/w"}]
JSON
expect "ReloadConfig without digits: digits is removed" 0 "^reloaded" -- vc $G reload one.json
expect "  ... its requests now get NOT_FOUND" 3 "^NOT_FOUND: " -- vc $G predict digits latest
expect "  ... the log says so" 0 "model 'digits' removed \(no longer in the configuration\)" -- cat a.log
check "SIGTERM: exit 0" stop_servers

# ---- 4: load retries
put r 1
printf 'not a model' >bad.onnx
start b --model_name=digits --model_base_path="$WORK/r" --file_system_poll_wait_seconds=1 \
  --max_num_load_retries=3 --load_retry_interval_micros=1500000 || exit 1
mkdir -p r/2 && cp bad.onnx r/2/model.onnx
# wait for the first retry to be announced, then fix the file: a later attempt loads it
check "a failing new version is retried (--max_num_load_retries=3)" until_ok 100 grep -q "version 2: .*load retry 1 of 3 in 1500000 us" b.log
put r 2
check "  ... fixed between two attempts, it loads" until_ok 100 grep -Eq "model 'digits' version 2 loaded from .* \(after [123] load retr" b.log
expect "  ... and serves" 0 "^answered by version 2 " -- vc $b_G predict digits latest
check "SIGTERM: exit 0" stop_servers
rm -rf r2 && mkdir -p r2/1 && cp bad.onnx r2/1/model.onnx
read -r gp rp < <(free_ports)
expect "at start-up the retries are spent, then it fails" 1 "cannot load model.*\(after 2 load retries\)" -- \
  "$CLOISTER" serve --plaintext --port=$gp --rest_api_port=$rp --model_name=d --model_base_path="$WORK/r2" \
  --max_num_load_retries=2 --load_retry_interval_micros=1000
expect "  ... logging each retry" 0 "load retry 2 of 2" -- echo "$OUT"

# ---- 5: warm-up
put u 1
mkdir -p u/1/assets.extra
PYTHONPATH="$WORK/py" $PY "$HERE/warmup_file.py" u/1/assets.extra/tf_serving_warmup_requests mixed 1 3
start c --model_name=digits --model_base_path="$WORK/u" --file_system_poll_wait_seconds=1 \
  --enable_model_warmup=true --num_request_iterations_for_warmup=2 || exit 1
expect "warm-up: 2 PredictLogs x 2 iterations before version 1 is served" 0 \
  "model 'digits' version 1: warmed up with 4 requests" -- cat c.log
expect "  ... the ClassifyLog record is skipped, with a log line" 0 "1 of 3 records skipped \(only PredictLog records are replayed\)" -- cat c.log
for k in badcrc truncated; do
  v=$([[ $k == badcrc ]] && echo 2 || echo 3)
  put u $v
  mkdir -p u/$v/assets.extra
  PYTHONPATH="$WORK/py" $PY "$HERE/warmup_file.py" u/$v/assets.extra/tf_serving_warmup_requests $k 1 2
done
check "a CRC-broken warm-up file fails its version" until_ok 100 grep -q "version 2: warm-up: .*record 1 at offset [0-9]*: the data's CRC does not match" c.log
check "a truncated one too" until_ok 100 grep -q "version 3: warm-up: .*record 1 at offset [0-9]*: truncated" c.log
expect "  ... version 1 keeps serving" 0 "^1:AVAILABLE$" -- vc $c_G status digits
put u 4
check "a version without a warm-up file gets the synthetic request" until_ok 100 grep -q "model 'digits' version 4: warmed up with 2 requests" c.log
check "SIGTERM: exit 0" stop_servers
finish
