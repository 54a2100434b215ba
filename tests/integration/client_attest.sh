#!/usr/bin/env bash
# client_attest.sh — attested TLS end to end: `cloister serve --attested-tls --evidence sim` presents a
# fresh RA-TLS certificate; `cloister predict --attest policy.json --trust-sim CERT` verifies its
# evidence and the policy (the binary's own measurement from `cloister attest measure`) before sending
# anything, over gRPC and REST. Refused, with the failed check named: a policy with another MRENCLAVE,
# a verifier that does not trust the sim quoting key, a normal (CA-issued, non-RA-TLS) server, and a
# client without --attest that only trusts a CA. Mutual TLS still applies on top of attested TLS.
# Usage: client_attest.sh CLOISTER
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$(dirname "$0")/lib.sh"
export CLOISTER_LOG=warn
PY=/usr/bin/python3
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # wait_for LOG REGEX PID
  for _ in $(seq 400); do
    grep -Eq "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
# serve NAME EXTRA-ARGS... : starts `cloister serve` with the demo model; sets NAME_GRPC, NAME_REST
serve() {
  local name=$1 g r
  shift
  g=$(free_port)
  r=$(free_port)
  CLOISTER_LOG=info "$CLOISTER" serve --host 127.0.0.1 --port "$g" --rest_api_port "$r" --model_name digits \
    --model_base_path "$ROOT/models/digits" --file_system_poll_wait_seconds 0 --engine-threads 1 "$@" 2> "$name.log" &
  PIDS+=($!)
  wait_for "$name.log" "serving: gRPC" "${PIDS[-1]}" || { echo "server $name did not start:"; cat "$name.log"; return 1; }
  printf -v "${name}_GRPC" %s "$g"
  printf -v "${name}_REST" %s "$r"
}
SAMPLE=$ROOT/models/digits/samples/digit-6-0.png

check "sim quoting key" "$CLOISTER" attest sim-init --dir sim
check "tls material" "$CLOISTER" tls init --dir tls --server-name localhost --san 127.0.0.1 --client-name client
# the policy: the measurement this very binary presents (a server built differently would not match)
"$CLOISTER" attest measure --name model-server 2>/dev/null > identity.json
$PY - <<'PY'
import json
ident = json.load(open("identity.json"))
json.dump({"version": 1, "identities": [ident]}, open("policy.json", "w"))
json.dump({"version": 1, "identities": [dict(ident, mrenclave="00" * 32)]}, open("policy-other.json", "w"))
json.dump({"version": 1, "identities": [dict(ident, min_isv_svn=3)]}, open("policy-svn.json", "w"))
json.dump({"version": 1, "identities": []}, open("policy-empty.json", "w"))
PY
check "policy from \`cloister attest measure\`" "$CLOISTER" keyserver policy check policy.json

serve att --attested-tls --evidence sim --sim-key sim/sim_qe_key.pem || { finish; exit 1; }
expect "the server says it presents an RA-TLS certificate" 0 "attested TLS \(RA-TLS\)" -- cat att.log
A=(--attest policy.json --trust-sim sim/sim_qe_cert.pem --model digits --image "$SAMPLE")
expect "gRPC: attested, matches the policy, classified" 0 "server attested \(sim evidence, INSECURE\).*matches the policy
digit-6-0.png: 6 " -- "$CLOISTER" predict --server "localhost:$att_GRPC" "${A[@]}"
expect "REST: the same" 0 "^digit-6-0.png: 6 " -- "$CLOISTER" predict --server "localhost:$att_REST" --rest "${A[@]}"
expect "by IP address (no name check with attestation)" 0 "^digit-6-0.png: 6 " -- \
  "$CLOISTER" predict --server "127.0.0.1:$att_GRPC" "${A[@]}"
expect "bench over attested connections" 0 "errors: 0" -- \
  "$CLOISTER" bench --server "localhost:$att_GRPC" --attest policy.json --trust-sim sim/sim_qe_cert.pem \
  --model digits --image "$SAMPLE" --concurrency 2 --requests 10 --warmup 1
expect "a policy naming another MRENCLAVE refuses the server" 1 \
  "attestation refused the server localhost:$att_GRPC: .*does not match the policy: 'model-server': mrenclave" -- \
  "$CLOISTER" predict --server "localhost:$att_GRPC" --attest policy-other.json --trust-sim sim/sim_qe_cert.pem \
  --model digits --image "$SAMPLE"
expect "  ... over REST too" 1 "does not match the policy: 'model-server': mrenclave" -- \
  "$CLOISTER" predict --server "localhost:$att_REST" --rest --attest policy-other.json --trust-sim sim/sim_qe_cert.pem \
  --model digits --image "$SAMPLE"
expect "a policy with a higher min_isv_svn refuses the server" 1 "does not match the policy: .*isv_svn" -- \
  "$CLOISTER" predict --server "localhost:$att_GRPC" --attest policy-svn.json --trust-sim sim/sim_qe_cert.pem \
  --model digits --image "$SAMPLE"
expect "sim evidence is refused unless its quoting key is trusted" 1 "untrusted simulated quoting key.*--trust-sim" -- \
  "$CLOISTER" predict --server "localhost:$att_GRPC" --attest policy.json --model digits --image "$SAMPLE"
"$CLOISTER" attest sim-init --dir sim2 >/dev/null 2>&1
expect "  ... and a different sim key is not that key" 1 "attestation refused the server" -- \
  "$CLOISTER" predict --server "localhost:$att_GRPC" --attest policy.json --trust-sim sim2/sim_qe_cert.pem \
  --model digits --image "$SAMPLE"
expect "without --attest, a CA cannot vouch for the RA-TLS certificate" 1 "is not trusted: self-signed certificate" -- \
  "$CLOISTER" predict --server "localhost:$att_GRPC" --ca tls/ca_cert.pem --model digits --image "$SAMPLE"
expect "an empty policy is refused before connecting" 2 "names no identity" -- \
  "$CLOISTER" predict --server "localhost:$att_GRPC" --attest policy-empty.json --trust-sim sim/sim_qe_cert.pem \
  --model digits --image "$SAMPLE"
expect "a broken policy file" 1 "--attest" -- \
  "$CLOISTER" predict --server "localhost:$att_GRPC" --attest identity.json --trust-sim sim/sim_qe_cert.pem \
  --model digits --image "$SAMPLE"
expect "--trust-sim alone is a usage error" 2 "only used with --attest" -- \
  "$CLOISTER" predict --server "localhost:$att_GRPC" --trust-sim sim/sim_qe_cert.pem --model digits --image "$SAMPLE"

# a normal server (certificate from the project's CA) is not an attested one
serve plain --ssl_config_file tls/ssl.cfg || { finish; exit 1; }
expect "a normal TLS server is refused under --attest (gRPC)" 1 "attestation refused the server.*RA-TLS certificate" -- \
  "$CLOISTER" predict --server "localhost:$plain_GRPC" "${A[@]}"
expect "  ... and over REST" 1 "attestation refused the server.*RA-TLS certificate" -- \
  "$CLOISTER" predict --server "localhost:$plain_REST" --rest "${A[@]}"
expect "  ... while its CA still works without --attest" 0 "^digit-6-0.png: 6 " -- \
  "$CLOISTER" predict --server "localhost:$plain_GRPC" --ca tls/ca_cert.pem --cert tls/client/cert.pem \
  --key tls/client/key.pem --model digits --image "$SAMPLE"

# attested TLS plus client certificates
serve mutual --attested-tls --evidence sim --sim-key sim/sim_qe_key.pem --tls-ca tls/ca_cert.pem --client-verify ||
  { finish; exit 1; }
expect "the server says attested and mutual" 0 "attested TLS \(RA-TLS\), mutual" -- cat mutual.log
expect "attested + mutual TLS with a client certificate" 0 "^digit-6-0.png: 6 " -- \
  "$CLOISTER" predict --server "localhost:$mutual_GRPC" "${A[@]}" --cert tls/client/cert.pem --key tls/client/key.pem
expect "  ... over REST" 0 "^digit-6-0.png: 6 " -- \
  "$CLOISTER" predict --server "localhost:$mutual_REST" --rest "${A[@]}" --cert tls/client/cert.pem \
  --key tls/client/key.pem
expect "  ... refused without one" 1 "certificate required" -- \
  "$CLOISTER" predict --server "localhost:$mutual_GRPC" "${A[@]}"

# serve's option checks
expect "--attested-tls with --tls-cert is a usage error" 2 "makes its own key and certificate" -- \
  "$CLOISTER" serve --attested-tls --tls-cert tls/server/cert.pem --tls-key tls/server/key.pem --allow-empty
expect "--attested-tls with --plaintext is a usage error" 2 "contradicts" -- \
  "$CLOISTER" serve --attested-tls --plaintext --allow-empty
expect "--attested-tls without a sim key says how to get one" 1 "attested-tls" -- \
  env -u CLOISTER_SIM_QE_KEY "$CLOISTER" serve --attested-tls --evidence sim --allow-empty --port "$(free_port)" \
  --rest_api_port "$(free_port)" --host 127.0.0.1

for p in "${PIDS[@]}"; do kill -TERM "$p"; done
for p in "${PIDS[@]}"; do
  wait "$p"
  rc=$?
  [[ $rc -eq 0 ]] || { echo "FAIL server $p exited $rc"; FAILED=$((FAILED + 1)); }
done
PIDS=()
check "no sanitizer or crash report in the server logs" bash -c '! grep -Eq "AddressSanitizer|LeakSanitizer|runtime error:|Segmentation" *.log'
finish
