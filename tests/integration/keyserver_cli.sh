#!/usr/bin/env bash
# keyserver_cli.sh — end-to-end test of the key server through the CLI: sim quoting key, secret
# put/list/rm, policy check, serve on 127.0.0.1 (ephemeral port), provision (granted, denied),
# SIGHUP policy reload revoking and restoring access, audit listing, --verify and tamper detection.
# Usage: keyserver_cli.sh /path/to/cloister
set -euo pipefail
CL=${1:?usage: keyserver_cli.sh CLOISTER}
T=$(mktemp -d "${TMPDIR:-/tmp}/cloister-kscli-XXXXXX")
SERVER_PID=
cleanup() {
  if [[ -n $SERVER_PID ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; [[ -f $T/server.log ]] && tail -20 "$T/server.log" >&2; exit 1; }
export CLOISTER_LOG=warn

# server certificate for 127.0.0.1 from a throwaway CA
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=test-ca \
  -keyout "$T/ca.key" -out "$T/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
  -keyout "$T/server.key" -out "$T/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > "$T/ext.cnf"
openssl x509 -req -in "$T/server.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial -days 1 \
  -extfile "$T/ext.cnf" -out "$T/server.pem" 2>/dev/null

"$CL" attest sim-init --dir "$T/sim" 2>/dev/null
[[ -f $T/sim/sim_qe_key.pem && -f $T/sim/sim_qe_cert.pem ]] || fail "sim-init wrote nothing"

# secrets
printf 'the-model-key-value' > "$T/value"
"$CL" keyserver secret put --db "$T/ks.db" --name model-key --file "$T/value" 2>/dev/null
"$CL" keyserver secret put --db "$T/ks.db" --name spare --file "$T/value" 2>/dev/null
[[ -f $T/ks.db.master-key ]] || fail "no master key created beside the database"
if "$CL" keyserver secret put --db "$T/ks.db" --name model-key --file "$T/value" 2>/dev/null; then
  fail "put replaced a secret without --force"; fi
# from a pipe, so the value never sits in a file
printf 'piped-value' | "$CL" keyserver secret put --db "$T/ks.db" --name piped --file /dev/stdin 2>/dev/null ||
  fail "secret put --file /dev/stdin refused a pipe"
"$CL" keyserver secret list --db "$T/ks.db" | grep -q '^piped ' || fail "list does not show the piped secret"
"$CL" keyserver secret rm --db "$T/ks.db" --name piped 2>/dev/null
"$CL" keyserver secret list --db "$T/ks.db" | grep -q '^model-key ' || fail "list does not show model-key"
if grep -q 'the-model-key-value' "$T/ks.db"; then fail "secret stored in clear"; fi
"$CL" keyserver secret rm --db "$T/ks.db" --name spare 2>/dev/null
if "$CL" keyserver secret list --db "$T/ks.db" | grep -q spare; then fail "rm did not delete"; fi

# policy from this binary's own measurement
"$CL" attest measure --name cli-test 2>/dev/null > "$T/identity.json"
python3 - "$T/identity.json" "$T/policy.json" <<'PY'
import json, sys
ident = json.load(open(sys.argv[1]))
ident["secrets"] = ["model-key"]
json.dump({"version": 1, "identities": [ident]}, open(sys.argv[2], "w"), indent=2)
PY
"$CL" keyserver policy check "$T/policy.json" >/dev/null || fail "policy check rejected a valid policy"
echo '{"version": 1, "identities": [{"secrets": []}]}' > "$T/bad.json"
if "$CL" keyserver policy check "$T/bad.json" 2>/dev/null; then fail "policy check accepted an invalid policy"; fi

# serve (sim evidence for the flows below; DCAP collateral loaded beside it for real quotes)
DCAP=$(cd "$(dirname "$0")/../data/dcap-qvl" && pwd)
ksrv() { timeout 20 "$CL" keyserver serve --listen 127.0.0.1:0 --cert "$T/server.pem" --key "$T/server.key" \
  --policy "$T/policy.json" --db "$T/ks.db" --threads 2 "$@"; }
if ksrv --dcap-collateral "$DCAP/sgx_quote_collateral.json" 2> "$T/dcap1.log"; then
  fail "serve started with DCAP collateral but no root CA"; fi
grep -q -- '--dcap-root-ca' "$T/dcap1.log" || fail "the missing DCAP root CA is not named: $(cat "$T/dcap1.log")"
if ksrv --dcap-collateral "$T/value" --dcap-root-ca "$DCAP/Intel_SGX_Provisioning_Certification_RootCA.der" \
  2> "$T/dcap2.log"; then fail "serve started with unreadable DCAP collateral"; fi
grep -qi 'collateral' "$T/dcap2.log" || fail "bad DCAP collateral not explained: $(cat "$T/dcap2.log")"
cp "$DCAP/sgx_quote_collateral.json" "$T/sgx_col.json"
cp "$DCAP/tdx_quote_collateral.json" "$T/tdx_col.json"
CLOISTER_LOG=info "$CL" keyserver serve --listen 127.0.0.1:0 --cert "$T/server.pem" --key "$T/server.key" \
  --policy "$T/policy.json" --db "$T/ks.db" --trust-sim "$T/sim/sim_qe_cert.pem" --threads 4 --pid-file "$T/ks.pid" \
  --dcap-collateral "$T/sgx_col.json" --dcap-collateral "$T/tdx_col.json" \
  --dcap-root-ca "$DCAP/Intel_SGX_Provisioning_Certification_RootCA.der" 2> "$T/server.log" &
SERVER_PID=$!
PORT=
for _ in $(seq 100); do
  PORT=$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$T/server.log" | head -1)
  [[ -n $PORT ]] && break
  kill -0 "$SERVER_PID" 2>/dev/null || fail "server exited"
  sleep 0.05
done
[[ -n $PORT ]] || fail "server did not start"
[[ $(grep -c 'DCAP: verifying real SGX/TDX quotes' "$T/server.log") == 2 ]] || fail "DCAP collateral not loaded"

prov() {
  timeout 30 "$CL" provision --keyserver "127.0.0.1:$PORT" --ca "$T/ca.pem" --sim-key "$T/sim/sim_qe_key.pem" \
    --attempts 2 --backoff-ms 50 "$@"
}
prov --secret model-key --out "$T/got" 2>/dev/null || fail "provision was denied"
cmp -s "$T/value" "$T/got" || fail "provisioned value differs"
[[ $(stat -c %a "$T/got") == 600 ]] || fail "provisioned file is not mode 0600"
if prov --secret model-key --out "$T/got2" --sim-debug 2>/dev/null; then fail "a debug enclave got the secret"; fi
if prov --secret spare --out "$T/got3" 2>/dev/null; then fail "an unknown secret was released"; fi
prov --secret-prov --out "$T/got4" 2>/dev/null || fail "secret_prov protocol failed"
cmp -s "$T/value" "$T/got4" || fail "secret_prov value differs"

# SIGHUP reload: revoke, then restore
cp "$T/policy.json" "$T/policy.good"
echo '{"version": 1, "identities": []}' > "$T/policy.json"
kill -HUP "$SERVER_PID"
for _ in $(seq 100); do grep -q 'policy reloaded' "$T/server.log" && break; sleep 0.05; done
if prov --secret model-key --out "$T/got5" --attempts 1 2>/dev/null; then fail "revoked identity still served"; fi
cp "$T/policy.good" "$T/policy.json"
[[ $(cat "$T/ks.pid") == "$SERVER_PID" ]] || fail "pid file does not hold the server's pid"
"$CL" keyserver reload --pid-file "$T/ks.pid" 2>/dev/null || fail "keyserver reload failed"
for _ in $(seq 100); do [[ $(grep -c 'policy reloaded' "$T/server.log") -ge 2 ]] && break; sleep 0.05; done
prov --secret model-key --out "$T/got6" 2>/dev/null || fail "restored policy does not serve"
# SIGHUP also reloads the DCAP collateral: all files or none; a bad file keeps the collateral in use
[[ $(grep -c 'DCAP collateral reloaded from 2 file(s)' "$T/server.log") -ge 2 ]] || fail "SIGHUP did not reload the DCAP collateral"
echo '{"tcb_info": ' > "$T/tdx_col.json"
"$CL" keyserver reload --pid-file "$T/ks.pid" 2>/dev/null || fail "keyserver reload failed"
for _ in $(seq 100); do grep -q 'DCAP collateral reload failed, still verifying with the collateral loaded before' "$T/server.log" && break; sleep 0.05; done
grep -q 'DCAP collateral reload failed, still verifying with the collateral loaded before: .*tdx_col.json' "$T/server.log" ||
  fail "a bad collateral file on reload is not reported with its name: $(grep -i 'dcap' "$T/server.log" | tail -2)"
kill -0 "$SERVER_PID" 2>/dev/null || fail "the server died on a bad collateral reload"
prov --secret model-key --out "$T/got7" 2>/dev/null || fail "the server stopped serving after a bad collateral reload"

kill -TERM "$SERVER_PID"; wait "$SERVER_PID" || fail "server did not stop cleanly"; SERVER_PID=

# audit
"$CL" keyserver audit --db "$T/ks.db" --limit 0 > "$T/audit.txt"
grep -q ' release ' "$T/audit.txt" || fail "no release in the audit log"
grep -q 'debug enclave not allowed' "$T/audit.txt" || fail "the debug denial is not audited"
grep -q 'secret_prov' "$T/audit.txt" || fail "the secret_prov release is not audited"
"$CL" keyserver audit --db "$T/ks.db" --verify | grep -q 'audit log intact' || fail "audit --verify failed"
python3 - "$T/ks.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("UPDATE audit SET decision='release' WHERE decision='deny' AND seq=(SELECT MIN(seq) FROM audit WHERE decision='deny')")
db.commit()
PY
if "$CL" keyserver audit --db "$T/ks.db" --verify 2>/dev/null; then fail "audit --verify missed an edited row"; fi
echo "keyserver_cli: OK"
