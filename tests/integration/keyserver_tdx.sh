#!/usr/bin/env bash
# keyserver_tdx.sh — the key server's TDX path end to end with the sim provider's TDX mode (INSECURE,
# like the SGX sim): a policy made from `cloister attest measure --sim-tdx` (MRTD, RTMR0-3 pinned) gives
# the secret to `cloister provision --sim-tdx` presenting that TD, and refuses a TD whose MRTD or any
# RTMR differs, a debug TD, and an SGX enclave; an RTMR set to "any" accepts every value; the audit log
# names the register that did not match; policy check refuses a TDX identity without its RTMRs.
# Usage: keyserver_tdx.sh /path/to/cloister
set -euo pipefail
CL=${1:?usage: keyserver_tdx.sh CLOISTER}
T=$(mktemp -d "${TMPDIR:-/tmp}/cloister-kstdx-XXXXXX")
SERVER_PID=
cleanup() {
  if [[ -n $SERVER_PID ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; [[ -f $T/server.log ]] && tail -20 "$T/server.log" >&2; exit 1; }
export CLOISTER_LOG=warn

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=test-ca \
  -keyout "$T/ca.key" -out "$T/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
  -keyout "$T/server.key" -out "$T/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > "$T/ext.cnf"
openssl x509 -req -in "$T/server.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial -days 1 \
  -extfile "$T/ext.cnf" -out "$T/server.pem" 2>/dev/null
"$CL" attest sim-init --dir "$T/sim" 2>/dev/null
printf 'td-model-key-value' > "$T/value"
"$CL" keyserver secret put --db "$T/ks.db" --master-key "$T/mk" --name td-key --file "$T/value" 2>/dev/null

# the TD: RTMR1 and RTMR2 as a kernel and its command line would leave them (replayed digests)
K=$(printf 'kernel image' | sha384sum | cut -d' ' -f1)
C=$(printf 'console=ttyS0 root=/dev/vda' | sha384sum | cut -d' ' -f1)
I=$(printf 'initrd image' | sha384sum | cut -d' ' -f1)
R1=$("$CL" attest rtmr "$K")
R2=$("$CL" attest rtmr "$C" "$I")
OTHER=$(printf '55%.0s' {1..48})
td() { echo --sim-tdx --sim-rtmr "1=$R1" --sim-rtmr "2=$R2"; }
# shellcheck disable=SC2046
"$CL" attest measure --name model-td $(td) 2>/dev/null > "$T/td.json"
python3 - "$T/td.json" "$T" "$R1" "$R2" <<'PY'
import json, sys
ident, d, r1, r2 = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4]
assert ident["rtmr1"] == r1 and ident["rtmr2"] == r2 and ident["rtmr0"] == "00" * 48, ident
assert ident["evidence_types"] == ["sim"] and "mrenclave" not in ident, ident
ident["secrets"] = ["td-key"]
json.dump({"version": 1, "identities": [ident]}, open(d + "/policy.json", "w"), indent=2)
json.dump({"version": 1, "identities": [dict(ident, rtmr2="any")]}, open(d + "/policy-any.json", "w"))
no_rtmr3 = dict(ident)
del no_rtmr3["rtmr3"]
json.dump({"version": 1, "identities": [no_rtmr3]}, open(d + "/policy-bad.json", "w"))
PY
"$CL" keyserver policy check "$T/policy.json" > "$T/check.txt" || fail "policy check refused the TD policy"
grep -q "identity 'model-td': TDX trust domain (sim)" "$T/check.txt" || fail "policy check summary: $(cat "$T/check.txt")"
grep -q "INSECURE" "$T/check.txt" || fail "policy check does not warn about sim evidence"
set +e
"$CL" keyserver policy check "$T/policy-bad.json" > /dev/null 2> "$T/bad.err"; rc=$?
set -e
[[ $rc == 1 ]] && grep -q "TDX identity without \"rtmr3\"" "$T/bad.err" || fail "a TDX identity without rtmr3 passed ($rc)"

CLOISTER_LOG=info "$CL" keyserver serve --listen 127.0.0.1:0 --cert "$T/server.pem" --key "$T/server.key" \
  --policy "$T/policy.json" --db "$T/ks.db" --master-key "$T/mk" --trust-sim "$T/sim/sim_qe_cert.pem" \
  --threads 2 --pid-file "$T/ks.pid" 2> "$T/server.log" &
SERVER_PID=$!
PORT=
for _ in $(seq 100); do
  PORT=$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$T/server.log" | head -1)
  [[ -n $PORT ]] && break
  kill -0 "$SERVER_PID" 2>/dev/null || fail "server exited"
  sleep 0.05
done
[[ -n $PORT ]] || fail "server did not start"
prov() {
  timeout 30 "$CL" provision --keyserver "127.0.0.1:$PORT" --ca "$T/ca.pem" --sim-key "$T/sim/sim_qe_key.pem" \
    --attempts 1 --secret td-key "$@"
}
audit_reason() { "$CL" keyserver audit --db "$T/ks.db" --master-key "$T/mk" --json 2>/dev/null | tail -1; }

# shellcheck disable=SC2046
prov --out "$T/got" $(td) 2>/dev/null || fail "the pinned TD was denied"
cmp -s "$T/value" "$T/got" || fail "provisioned value differs"
# each register that differs denies, and the audit record names it
for r in 0 1 2 3; do
  args=(--sim-tdx --sim-rtmr "1=$R1" --sim-rtmr "2=$R2" --sim-rtmr "$r=$OTHER")
  if prov --out "$T/no$r" "${args[@]}" 2>"$T/no$r.err"; then fail "a TD with another RTMR$r got the secret"; fi
  grep -q "(reason: measurement_mismatch: " "$T/no$r.err" || fail "RTMR$r: the TD is not told why: $(cat "$T/no$r.err")"
  if grep -q "$OTHER\|$R1" "$T/no$r.err"; then fail "the refusal tells the TD a measurement: $(cat "$T/no$r.err")"; fi
  for _ in $(seq 50); do audit_reason | grep -q "rtmr$r $OTHER not allowed" && break; sleep 0.05; done
  audit_reason | grep -q "rtmr$r $OTHER not allowed" || fail "the audit does not name rtmr$r: $(audit_reason)"
done
# shellcheck disable=SC2046
if prov --out "$T/no-mrtd" $(td) --sim-mrtd "$OTHER" 2>/dev/null; then fail "a TD with another MRTD got the secret"; fi
# shellcheck disable=SC2046
if prov --out "$T/no-debug" $(td) --sim-debug 2>"$T/no-debug.err"; then fail "a debug TD got the secret"; fi
# the debug bit is in the TD attributes, which the policy pins: a measurement that differs
grep -q "(reason: measurement_mismatch: " "$T/no-debug.err" || fail "the debug TD is not told why: $(cat "$T/no-debug.err")"
if prov --out "$T/no-sgx" 2>"$T/no-sgx.err"; then fail "an SGX enclave got the TD's secret"; fi
grep -q "(reason: evidence_type_not_allowed: " "$T/no-sgx.err" || fail "the SGX enclave is not told why: $(cat "$T/no-sgx.err")"
[[ ! -e $T/no0 && ! -e $T/no-mrtd && ! -e $T/no-debug && ! -e $T/no-sgx ]] || fail "a denied provision wrote a file"

# "any" for RTMR2: another command line is accepted, another kernel still is not
cp "$T/policy-any.json" "$T/policy.json"
"$CL" keyserver reload --pid-file "$T/ks.pid" 2>/dev/null
for _ in $(seq 100); do [[ $(grep -c 'policy reloaded' "$T/server.log") -ge 1 ]] && break; sleep 0.05; done
prov --out "$T/any2" --sim-tdx --sim-rtmr "1=$R1" --sim-rtmr "2=$OTHER" 2>/dev/null || fail "rtmr2 \"any\" refused"
if prov --out "$T/any1" --sim-tdx --sim-rtmr "1=$OTHER" 2>/dev/null; then fail "rtmr2 \"any\" let another kernel in"; fi

kill -TERM "$SERVER_PID"; wait "$SERVER_PID" || fail "server did not stop cleanly"; SERVER_PID=
echo "keyserver_tdx: OK"
