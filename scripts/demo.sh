#!/usr/bin/env bash
# demo.sh — `make demo`: the whole of cloister on one machine.
#   1. The model owner seals the demo model (a digits classifier) and puts its key in the key server,
#      with a policy naming the one server build allowed to receive it.
#   2. The model server starts on "someone else's cloud": it attests to the key server (RA-TLS with
#      the sim evidence provider: there is no SGX here), receives the key, decrypts the model only in
#      locked memory and serves TF Serving's APIs over mutual TLS.
#   3. A client (cloister predict) classifies sample images over mutual TLS, through the gRPC API and
#      through the REST API.
#   4. What must be refused is refused: a server the policy does not name, a tampered model.
# Everything listens on 127.0.0.1 and is stopped at the end.
set -euo pipefail
cloister=$(readlink -f "${1:-build/cloister}")
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/cloister-demo-XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
export CLOISTER_LOG=warn
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
wait_for() { # wait_for LOG REGEX PID -> first match group
  for _ in $(seq 300); do
    local m
    m=$(sed -n -E "s/.*$2.*/\1/p" "$1" | head -1)
    if [[ -n $m ]]; then echo "$m"; return 0; fi
    kill -0 "$3" 2>/dev/null || { echo "demo: process exited; its log:" >&2; cat "$1" >&2; return 1; }
    sleep 0.05
  done
  echo "demo: timed out waiting for /$2/ in $1" >&2
  return 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

step "1. The model owner: keys, TLS material, the sealed model, the key server"
run "$cloister" keygen --out model.key
run "$cloister" tls init --dir tls --server-name localhost --san 127.0.0.1 --client-name demo-client >/dev/null
mkdir -p models/digits/1
run "$cloister" seal --key model.key --key-id digits-key --in "$root/models/digits/1/model.onnx" \
  --out models/digits/1/model.onnx.sealed
cp "$root/models/digits/1/preprocess.json" models/digits/1/ # not secret: lets clients send image files
echo "The deployment holds only the sealed model (and its image preprocessing, which is not secret):"
ls -l models/digits/1
run "$cloister" attest sim-init --dir sim 2>/dev/null
echo "The key server's master key is kept apart from its database (here: another directory):"
mkdir -p owner
run "$cloister" keygen --out owner/keyserver-master.key
run "$cloister" keyserver secret put --db keyserver.db --master-key owner/keyserver-master.key --name digits-key \
  --file model.key
echo "The policy: only this exact server build (its measurement) may receive digits-key:"
"$cloister" attest measure --name model-server 2>/dev/null > identity.json
python3 - <<'PY'
import json
ident = json.load(open("identity.json"))
ident["secrets"] = ["digits-key"]
json.dump({"version": 1, "identities": [ident]}, open("policy.json", "w"), indent=2)
print(json.dumps(ident, indent=2))
PY
run "$cloister" keyserver policy check policy.json
CLOISTER_LOG=info "$cloister" keyserver serve --listen 127.0.0.1:0 --cert tls/server/cert.pem --key tls/server/key.pem \
  --policy policy.json --db keyserver.db --master-key owner/keyserver-master.key --trust-sim sim/sim_qe_cert.pem \
  2> keyserver.log &
pids+=($!)
ks_port=$(wait_for keyserver.log 'listening on port ([0-9]+)' "${pids[-1]}")
echo "key server listening on 127.0.0.1:$ks_port (TLS 1.3, RA-TLS client certificates required)"

step "2. The model server attests, receives the key, and serves"
grpc=$(free_port)
rest=$(free_port)
printf '$ cloister serve --port %s --rest_api_port %s --ssl_config_file tls/ssl.cfg --model_name digits \\\n' "$grpc" "$rest"
printf '      --model_base_path models/digits --keyserver 127.0.0.1:%s --keyserver-ca tls/ca_cert.pem --evidence sim\n' "$ks_port"
CLOISTER_LOG=info "$cloister" serve --host 127.0.0.1 --port "$grpc" --rest_api_port "$rest" \
  --ssl_config_file tls/ssl.cfg --model_name digits --model_base_path models/digits \
  --keyserver "127.0.0.1:$ks_port" --keyserver-ca tls/ca_cert.pem --evidence sim \
  --sim-key sim/sim_qe_key.pem 2> server.log &
pids+=($!)
wait_for server.log '(serving): gRPC' "${pids[-1]}" >/dev/null
grep -E "INSECURE|received|loaded|serving" server.log | sed 's/^[^ ]* //'
echo "The key server's audit log:"
"$cloister" keyserver audit --db keyserver.db --master-key owner/keyserver-master.key | tail -3

step "3. A client classifies sample images (cloister predict, mutual TLS)"
ln -s "$root/models/digits/samples" samples
cp "$root/models/digits/labels.txt" labels.txt
mtls=(--ca tls/ca_cert.pem --cert tls/client/cert.pem --key tls/client/key.pem)
echo "TF Serving gRPC API. The model's metadata shows its input as DT_STRING (encoded images), so the"
echo "PNG files travel as bytes and the server decodes and preprocesses them (its preprocess.json):"
run "$cloister" predict --server "localhost:$grpc" "${mtls[@]}" --model digits --labels labels.txt --top 2 \
  --image samples/digit-{0,3,5,7,9}-0.png
echo "TF Serving REST API (the images as {\"b64\": ...}):"
run "$cloister" predict --server "localhost:$rest" --rest "${mtls[@]}" --model digits --top 1 \
  --image samples/digit-{1,2,4,6,8}-1.png

step "4. What must be refused is refused"
echo "A model server the policy does not name (here: its measurement is not in the policy) gets nothing:"
python3 -c '
import json
p = json.load(open("policy.json")); p["identities"][0]["mrenclave"] = "00" * 32
json.dump(p, open("policy-other.json", "w"))'
CLOISTER_LOG=info "$cloister" keyserver serve --listen 127.0.0.1:0 --cert tls/server/cert.pem --key tls/server/key.pem \
  --policy policy-other.json --db keyserver.db --master-key owner/keyserver-master.key \
  --trust-sim sim/sim_qe_cert.pem 2> keyserver2.log &
pids+=($!)
ks2_port=$(wait_for keyserver2.log 'listening on port ([0-9]+)' "${pids[-1]}")
if "$cloister" serve --host 127.0.0.1 --port "$(free_port)" --rest_api_port "$(free_port)" --ssl_config_file tls/ssl.cfg \
  --model_name digits --model_base_path models/digits --keyserver "127.0.0.1:$ks2_port" \
  --keyserver-ca tls/ca_cert.pem --evidence sim --sim-key sim/sim_qe_key.pem --keyserver-attempts 1 2> denied.log; then
  echo "demo: the server should have been refused" >&2; exit 1
fi
grep -v INSECURE denied.log | sed 's/^[^ ]* //'
echo "A tampered sealed model is refused even with the right key:"
mkdir -p tampered/1
cp models/digits/1/model.onnx.sealed tampered/1/
printf 'X' | dd of=tampered/1/model.onnx.sealed bs=1 seek=5000 conv=notrunc status=none
if "$cloister" serve --host 127.0.0.1 --port "$(free_port)" --rest_api_port "$(free_port)" --ssl_config_file tls/ssl.cfg \
  --model_name digits --model_base_path tampered --keyserver "127.0.0.1:$ks_port" \
  --keyserver-ca tls/ca_cert.pem --evidence sim --sim-key sim/sim_qe_key.pem 2> tampered.log; then
  echo "demo: the tampered model should have been refused" >&2; exit 1
fi
grep -v INSECURE tampered.log | sed 's/^[^ ]* //'
echo "Every release and refusal is in the key server's audit log, chained with a MAC under a key derived from"
echo "the master key (edits, removals and insertions show); keep the head elsewhere to also see a rollback:"
run "$cloister" keyserver audit --db keyserver.db --master-key owner/keyserver-master.key --verify

printf '\n\033[1mdemo complete.\033[0m The model key never left the key server except to an attested server;\n'
printf 'the model existed in plaintext only in that server'"'"'s locked memory.\n'
printf '(Evidence here is simulated: on SGX hardware, run inside Gramine with --evidence gramine.)\n'
