#!/usr/bin/env bash
# serve_e2e.sh — the mission end to end through the real binaries: a sealed model whose key only a
# key server holds; `cloister serve` attests to it (RA-TLS, sim evidence), receives the key, decrypts
# the model in locked memory and answers TF Serving REST requests over mutual TLS with the model's
# real predictions; new versions are swapped in; a server the policy does not match, a tampered
# sealed model and a missing key server are each refused with a reason.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$(dirname "$0")/lib.sh"
export CLOISTER_LOG=info
PIDS=()
cleanup_servers() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; }
trap 'cleanup_servers; rm -rf "$WORK"' EXIT

# wait_for LOG REGEX PID: waits (10 s at most) for a line in a server's log; prints the first match group
wait_for() {
  for _ in $(seq 200); do
    local m
    m=$(sed -n -E "s/.*$2.*/\1/p" "$1" | head -1)
    if [[ -n $m ]]; then echo "$m"; return 0; fi
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# --- the model owner's side: TLS material, a sealed model, the key in the key server
"$CLOISTER" tls init --dir tls --server-name localhost --san 127.0.0.1 --client-name client >/dev/null
"$CLOISTER" attest sim-init --dir sim 2>/dev/null
"$CLOISTER" keygen --out model.key 2>/dev/null
mkdir -p models/digits/1
"$CLOISTER" seal --key model.key --key-id digits-key --in "$ROOT/models/digits/1/model.onnx" \
  --out models/digits/1/model.onnx.sealed 2>/dev/null
cp "$ROOT/models/digits/1/preprocess.json" models/digits/1/ # not secret: how images become the input
export CLOISTER_MASTER_KEY_FILE=$PWD/owner/master.key # the key server's master key, apart from ks.db
mkdir -p owner
"$CLOISTER" keyserver secret put --db ks.db --name digits-key --file model.key 2>/dev/null
"$CLOISTER" attest measure --name model-server 2>/dev/null > identity.json
python3 - <<'PY'
import json
ident = json.load(open("identity.json"))
ident["secrets"] = ["digits-key"]
json.dump({"version": 1, "identities": [ident]}, open("policy.json", "w"))
other = dict(ident, mrenclave="00" * 32)
json.dump({"version": 1, "identities": [other]}, open("policy-other.json", "w"))
PY
check "no plaintext model in the deployment" bash -c '! ls models/digits/1 | grep -qx model.onnx'

"$CLOISTER" keyserver serve --listen 127.0.0.1:0 --cert tls/server/cert.pem --key tls/server/key.pem \
  --policy policy.json --db ks.db --trust-sim sim/sim_qe_cert.pem 2> ks.log &
PIDS+=($!)
KS_PORT=$(wait_for ks.log 'listening on port ([0-9]+)' "${PIDS[-1]}") || { cat ks.log; exit 1; }

# --- the cloud's side: the model server
read -r GRPC REST < <(free_ports)
"$CLOISTER" serve --host 127.0.0.1 --port "$GRPC" --rest_api_port "$REST" --ssl_config_file tls/ssl.cfg \
  --model_name digits --model_base_path models/digits --keyserver "127.0.0.1:$KS_PORT" \
  --keyserver-ca tls/ca_cert.pem --evidence sim --sim-key sim/sim_qe_key.pem \
  --enable_batching --batch_timeout_micros 20000 2> serve.log &
SERVE_PID=$!
PIDS+=($SERVE_PID)
wait_for serve.log '(serving): gRPC' $SERVE_PID >/dev/null || { cat serve.log; exit 1; }
expect "server attested and received the key" 0 "received 1 model key" -- cat serve.log
expect "sealed model decrypted in locked memory" 0 "version 1 loaded .*sealed, decrypted in locked memory" -- cat serve.log
expect "key server audited the release" 0 "release" -- "$CLOISTER" keyserver audit --db ks.db

curl_tls() { curl -sS --max-time 20 --cacert tls/ca_cert.pem --cert tls/client/cert.pem --key tls/client/key.pem "$@"; }
expect "model status over mutual TLS" 0 '"state": *"AVAILABLE"' -- curl_tls "https://localhost:$REST/v1/models/digits"
expect "metadata shows the signature" 0 '"image"' -- curl_tls "https://localhost:$REST/v1/models/digits/metadata"
expect "a client without a certificate is refused" 1 "" -- \
  bash -c "curl -sS --fail --max-time 10 --cacert tls/ca_cert.pem https://localhost:$REST/v1/models/digits >/dev/null 2>&1 && exit 0 || exit 1"

# every sample image gets the class PyTorch gives it, with PyTorch's probabilities; the requests
# are concurrent, so the server batches some of them (rows are split back to each caller)
CURLS=()
for f in "$ROOT"/models/digits/samples/digit-*.json; do
  curl_tls -d @"$f" "https://localhost:$REST/v1/models/digits:predict" > "resp-$(basename "$f")" &
  CURLS+=($!)
done
wait "${CURLS[@]}"
expect "predictions match PyTorch for all 20 samples" 0 "20 of 20" -- python3 - "$ROOT/models/digits/samples" <<'PY'
import json, os, sys
expected = json.load(open(os.path.join(sys.argv[1], "expected.json")))
good = 0
for png, want in expected.items():
    resp = json.load(open("resp-" + png.replace(".png", ".json")))
    probs = resp["outputs"]["probabilities"][0]
    best = max(range(10), key=lambda k: probs[k])
    if best == want["label"] and all(abs(a - b) < 2e-4 for a, b in zip(probs, want["probabilities"])):
        good += 1
    else:
        print(png, "got", best, probs)
print(f"{good} of {len(expected)}")
PY

# the sealed model also takes the sample PNGs themselves, decoded inside the server
printf '{"instances": [{"b64": "%s"}, {"b64": "%s"}]}' "$(base64 -w0 "$ROOT/models/digits/samples/digit-4-0.png")" \
  "$(base64 -w0 "$ROOT/models/digits/samples/digit-9-1.png")" >pngs.json
expect "PNG bytes to the sealed model are classified" 0 "classes 4 9" -- bash -c "curl -sS --max-time 20 \
  --cacert tls/ca_cert.pem --cert tls/client/cert.pem --key tls/client/key.pem -d @pngs.json \
  https://localhost:$REST/v1/models/digits:predict | python3 -c 'import json,sys
p = [r[\"probabilities\"] for r in json.load(sys.stdin)[\"predictions\"]]
print(\"classes\", *[max(range(10), key=lambda k: r[k]) for r in p])'"

# a new version is swapped in while serving
mkdir -p models/digits/2
cp "$ROOT/models/digits/1/model.onnx" models/digits/2/model.onnx
wait_for serve.log "(version 2) loaded" $SERVE_PID >/dev/null
echo "     (batches: $(curl_tls "https://localhost:$REST/monitoring/prometheus/metrics" | grep -E '^cloister_serve_batch_size_(count|sum)' | tr '\n' ' '))"
expect "version 2 swapped in" 0 '"version": *"2"' -- curl_tls "https://localhost:$REST/v1/models/digits"
expect "metrics are exported" 0 "cloister" -- curl_tls "https://localhost:$REST/monitoring/prometheus/metrics"
kill -TERM $SERVE_PID
wait $SERVE_PID
expect "SIGTERM stops the server cleanly" 0 "stopped" -- cat serve.log

# --- refusals
run_serve() { # run_serve EXTRA-ARGS... : a server that must refuse to start
  local gp rp
  read -r gp rp < <(free_ports)
  timeout 60 "$CLOISTER" serve --host 127.0.0.1 --port "$gp" --rest_api_port "$rp" \
    --ssl_config_file tls/ssl.cfg --model_name digits --model_base_path "$@"
}
"$CLOISTER" keyserver serve --listen 127.0.0.1:0 --cert tls/server/cert.pem --key tls/server/key.pem \
  --policy policy-other.json --db ks.db --trust-sim sim/sim_qe_cert.pem 2> ks2.log &
PIDS+=($!)
KS2_PORT=$(wait_for ks2.log 'listening on port ([0-9]+)' "${PIDS[-1]}") || { cat ks2.log; exit 1; }
rm -rf models/digits/2
expect "a server the policy does not match is denied and does not start" 1 "did not release the model keys" -- \
  run_serve models/digits --keyserver "127.0.0.1:$KS2_PORT" --keyserver-ca tls/ca_cert.pem --evidence sim \
  --sim-key sim/sim_qe_key.pem --keyserver-attempts 1
expect "without a key server a sealed model is refused" 1 "needed for a sealed model: start the server with --keyserver" -- \
  run_serve models/digits
mkdir -p tampered/1
cp models/digits/1/model.onnx.sealed tampered/1/
printf 'X' | dd of=tampered/1/model.onnx.sealed bs=1 seek=5000 conv=notrunc status=none
expect "a tampered sealed model is refused" 1 "failed authentication" -- \
  run_serve tampered --keyserver "127.0.0.1:$KS_PORT" --keyserver-ca tls/ca_cert.pem --evidence sim \
  --sim-key sim/sim_qe_key.pem
expect "an unreachable key server is retried, then reported" 1 "no key server could be used after 2 rounds" -- \
  run_serve models/digits --keyserver "127.0.0.1:1" --keyserver-ca tls/ca_cert.pem --evidence sim \
  --sim-key sim/sim_qe_key.pem --keyserver-attempts 2 --keyserver-backoff-ms 10
finish
