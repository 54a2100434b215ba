#!/usr/bin/env bash
# pccs_fetch.sh — DCAP collateral fetched from a PCCS (tests/integration/pccs_server.py: the real
# vectors over HTTPS in PCCS format, certificates made here) through `cloister attest verify`, with a
# fixed clock (--at; the vectors are valid only inside their windows): API v4 and v3, SGX and TDX,
# the on-disk cache (used without fetching; refreshed before nextUpdate), an outage (cache used until
# nextUpdate, then refused), slow answers (bounded by --pccs-timeout-ms), malformed answers (bad JSON,
# bad issuer chain header, another platform's TCB info, a tampered signature: each refused and never
# cached); and the same collateral options on `keyserver serve` and `predict --attest`.
# Usage: pccs_fetch.sh /path/to/cloister
set -euo pipefail
CL=${1:?usage: pccs_fetch.sh CLOISTER}
HERE=$(cd "$(dirname "$0")" && pwd)
DATA=$(cd "$HERE/../data/dcap-qvl" && pwd)
ROOT=$DATA/Intel_SGX_Provisioning_Certification_RootCA.der
T=$(mktemp -d "${TMPDIR:-/tmp}/cloister-pccs-XXXXXX")
PCCS_PID=
KS_PID=
cleanup() {
  for p in $PCCS_PID $KS_PID; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; [[ -f $T/v.err ]] && tail -5 "$T/v.err" >&2; exit 1; }
export CLOISTER_LOG=warn

SGX_FROM=1750330571 SGX_TO=1752919278 TDX_FROM=1750329147

# the PCCS's TLS certificate for 127.0.0.1 from a throwaway CA
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=pccs-test-ca \
  -keyout "$T/ca.key" -out "$T/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
  -keyout "$T/pccs.key" -out "$T/pccs.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > "$T/ext.cnf"
openssl x509 -req -in "$T/pccs.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial -days 1 \
  -extfile "$T/ext.cnf" -out "$T/pccs.pem" 2>/dev/null

echo ok > "$T/mode"
start_pccs() {
  rm -f "$T/port"
  python3 "$HERE/pccs_server.py" "$DATA" "$T/pccs.pem" "$T/pccs.key" "$T/port" "$T/mode" "$T/requests.log" &
  PCCS_PID=$!
  for _ in $(seq 100); do [[ -f $T/port ]] && break; sleep 0.05; done
  [[ -f $T/port ]] || fail "the test PCCS did not start"
  URL=https://127.0.0.1:$(cat "$T/port")
}
stop_pccs() { kill "$PCCS_PID"; wait "$PCCS_PID" 2>/dev/null || true; PCCS_PID=; }
requests() { [[ -f $T/requests.log ]] && wc -l < "$T/requests.log" || echo 0; }
# verify QUOTE AT [CACHE] [extra options...]: 0/1, output in $T/v.out and $T/v.err
verify() {
  local quote=$1 at=$2 cache=$3
  shift 3
  "$CL" attest verify --dcap-root-ca "$ROOT" --pccs-url "$URL" --pccs-ca "$T/ca.pem" \
    ${cache:+--collateral-cache "$cache"} --at "$at" "$@" "$DATA/$quote" > "$T/v.out" 2> "$T/v.err"
}
start_pccs

# v4, SGX: four requests (TCB info, QE identity, PCK CRL of the Processor CA, root CA CRL), cached
verify sgx_quote $((SGX_FROM + 1000)) "$T/cache" || fail "v4 SGX fetch: $(cat "$T/v.err")"
grep -q 'tcb_status  ConfigurationAndSWHardeningNeeded' "$T/v.out" || fail "v4 SGX status"
[[ $(requests) == 4 ]] || fail "expected 4 requests, got $(requests)"
grep -q '^ok /sgx/certification/v4/tcb?fmspc=00A067110000 TCB-Info-Issuer-Chain$' "$T/requests.log" || fail "v4 TCB path"
grep -q '/sgx/certification/v4/pckcrl?ca=processor&encoding=der' "$T/requests.log" || fail "PCK CRL path"
grep -q '/sgx/certification/v4/rootcacrl' "$T/requests.log" || fail "root CA CRL path"
[[ -f $T/cache/SGX-00A067110000-processor.json ]] || fail "nothing cached"
[[ $(stat -c %a "$T/cache/SGX-00A067110000-processor.json") == 600 ]] || fail "cache file mode"
ls "$T/cache" | grep -v -q '\.json$' && fail "a temporary file was left in the cache"

# the cache is used without asking the PCCS while nextUpdate is far
verify sgx_quote $((SGX_FROM + 5000)) "$T/cache" || fail "cached: $(cat "$T/v.err")"
[[ $(requests) == 4 ]] || fail "the cache was not used ($(requests) requests)"
grep -q '1 cache read' "$T/v.err" || fail "no cache read reported: $(cat "$T/v.err")"

# within a day of nextUpdate: fetched anew
verify sgx_quote $((SGX_TO - 3600)) "$T/cache" || fail "refresh: $(cat "$T/v.err")"
[[ $(requests) == 8 ]] || fail "no refresh before nextUpdate ($(requests) requests)"

# TDX (v4 only): the TDX routes and the Platform CA's PCK CRL
verify tdx_quote $((TDX_FROM + 1000)) "$T/cache" || fail "v4 TDX: $(cat "$T/v.err")"
grep -q 'tcb_status  UpToDate' "$T/v.out" || fail "TDX status"
grep -q '/tdx/certification/v4/tcb?fmspc=B0C06F000000' "$T/requests.log" || fail "TDX TCB path"
grep -q '/tdx/certification/v4/qe/identity' "$T/requests.log" || fail "TDX QE identity path"
grep -q 'pckcrl?ca=platform' "$T/requests.log" || fail "platform CA PCK CRL"
if verify tdx_quote $((TDX_FROM + 1000)) "" --pccs-api-version 3; then fail "TDX over API v3"; fi
grep -q 'needs PCCS/PCS API v4' "$T/v.err" || fail "TDX v3 not explained: $(cat "$T/v.err")"

# v3: its paths and the SGX-TCB-Info-Issuer-Chain header
verify sgx_quote $((SGX_FROM + 1000)) "" --pccs-api-version 3 || fail "v3: $(cat "$T/v.err")"
grep -q '^ok /sgx/certification/v3/tcb?fmspc=00A067110000 SGX-TCB-Info-Issuer-Chain$' "$T/requests.log" || fail "v3 path/header"

# a qcnl-style URL (base .../sgx/certification/v4/) works too
URL0=$URL
URL=$URL0/sgx/certification/v4/
verify sgx_quote $((SGX_FROM + 1000)) "" || fail "qcnl-style --pccs-url: $(cat "$T/v.err")"
URL=$URL0

# outage: the cache serves until nextUpdate (a failed refresh keeps it), then nothing verifies
stop_pccs
verify sgx_quote $((SGX_FROM + 9000)) "$T/cache" || fail "outage, cache fresh: $(cat "$T/v.err")"
verify sgx_quote $((SGX_TO - 60)) "$T/cache" || fail "outage, refresh due: $(cat "$T/v.err")"
grep -q 'using the collateral in hand' "$T/v.err" || fail "the failed refresh is not reported: $(cat "$T/v.err")"
if verify sgx_quote $((SGX_TO + 1)) "$T/cache"; then fail "outage: verified after nextUpdate"; fi
grep -q 'PCCS' "$T/v.err" || fail "refusal after nextUpdate not explained: $(cat "$T/v.err")"
if verify sgx_quote $((SGX_FROM + 1000)) "$T/empty"; then fail "outage without cache verified"; fi
grep -q "Couldn't connect\|Connection refused\|Failed to connect" "$T/v.err" || fail "outage not explained: $(cat "$T/v.err")"

# slow answers: the fetch is bounded by --pccs-timeout-ms
start_pccs
echo slow > "$T/mode"
t0=$(date +%s%N)
if verify sgx_quote $((SGX_FROM + 1000)) "$T/slow" --pccs-timeout-ms 700; then fail "slow PCCS accepted"; fi
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
grep -q 'timed out' "$T/v.err" || fail "timeout not explained: $(cat "$T/v.err")"
(( ms < 5000 )) || fail "a 700 ms fetch bound took $ms ms"
stop_pccs
start_pccs

# malformed answers: each refused with its reason, nothing cached
check_bad() {
  local mode=$1 want=$2
  echo "$mode" > "$T/mode"
  if verify sgx_quote $((SGX_FROM + 1000)) "$T/bad-$mode"; then fail "$mode answer accepted"; fi
  grep -q -- "$want" "$T/v.err" || fail "$mode: '$want' not in: $(cat "$T/v.err")"
  [[ -z $(ls -A "$T/bad-$mode") ]] || fail "$mode answer was cached"
}
check_bad badjson 'PCCS TCB info answer: line'
check_bad badchain 'TCB info issuer chain'
check_bad wrongfmspc 'not for SGX FMSPC 00A067110000'
check_bad tampered 'TCB info signature does not verify'
check_bad notfound 'HTTP status 404'
# a bad answer never replaces good cached collateral
echo tampered > "$T/mode"
verify sgx_quote $((SGX_TO - 60)) "$T/cache" || fail "a tampered refresh displaced the cache: $(cat "$T/v.err")"
echo ok > "$T/mode"

# option checks shared by the commands
if "$CL" attest verify --dcap-root-ca "$ROOT" --pccs-url "http://127.0.0.1:1" "$DATA/sgx_quote" 2> "$T/v.err"; then
  fail "http PCCS accepted"; fi
grep -q 'https' "$T/v.err" || fail "http PCCS not explained"
rc=0; "$CL" attest verify --dcap-root-ca "$ROOT" --collateral-cache "$T/x" --dcap-collateral "$DATA/sgx_quote_collateral.json" \
  "$DATA/sgx_quote" 2> "$T/v.err" || rc=$?
[[ $rc == 2 ]] && grep -q 'only used with --pccs-url' "$T/v.err" || fail "--collateral-cache without --pccs-url (rc $rc)"
rc=0; "$CL" predict --server 127.0.0.1:1 --model m --image "$T/none.png" --pccs-url "$URL" 2> "$T/v.err" || rc=$?
[[ $rc == 2 ]] && grep -q 'only used with --attest' "$T/v.err" || fail "predict: collateral options without --attest (rc $rc)"
"$CL" predict --help > "$T/help"; grep -q -- '--pccs-url URL' "$T/help" || fail "predict has no --pccs-url"
"$CL" bench --help > "$T/help"; grep -q -- '--dcap-collateral FILE' "$T/help" || fail "bench has no --dcap-collateral"
echo '{"version": 1, "identities": [{"name": "x", "mrenclave": "'"$(printf '%064d' 0)"'", "secrets": [], "evidence_types": ["sgx-dcap"]}]}' > "$T/policy.json"
rc=0; "$CL" predict --server 127.0.0.1:1 --model m --image "$T/none.png" --attest "$T/policy.json" --pccs-url "$URL" \
  2> "$T/v.err" || rc=$?
[[ $rc != 0 ]] && grep -q -- '--dcap-root-ca' "$T/v.err" || fail "predict --attest --pccs-url without a root CA (rc $rc): $(cat "$T/v.err")"

# the key server takes the same options
"$CL" attest sim-init --dir "$T/sim" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
  -keyout "$T/ks.key" -out "$T/ks.csr" 2>/dev/null
openssl x509 -req -in "$T/ks.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial -days 1 \
  -extfile "$T/ext.cnf" -out "$T/ks.pem" 2>/dev/null
"$CL" attest measure --name t 2>/dev/null | python3 -c 'import json,sys; i=json.load(sys.stdin); i["secrets"]=[]; print(json.dumps({"version":1,"identities":[i]}))' > "$T/kspol.json"
printf 'v' > "$T/value"
"$CL" keyserver secret put --db "$T/ks.db" --master-key "$T/ks.mk" --name k --file "$T/value" 2>/dev/null
CLOISTER_LOG=info "$CL" keyserver serve --master-key "$T/ks.mk" --listen 127.0.0.1:0 --cert "$T/ks.pem" --key "$T/ks.key" --policy "$T/kspol.json" \
  --db "$T/ks.db" --trust-sim "$T/sim/sim_qe_cert.pem" --dcap-root-ca "$ROOT" --pccs-url "$URL" --pccs-ca "$T/ca.pem" \
  --collateral-cache "$T/kscache" --collateral-max-age 2592000 2> "$T/ks.log" &
KS_PID=$!
for _ in $(seq 100); do grep -q 'listening on port' "$T/ks.log" && break; sleep 0.05; done
grep -q "collateral from $URL (cache $T/kscache)" "$T/ks.log" || fail "keyserver --pccs-url not taken: $(cat "$T/ks.log")"
kill -0 "$KS_PID" 2>/dev/null || fail "the key server with --pccs-url stopped: $(cat "$T/ks.log")"
kill -HUP "$KS_PID"
for _ in $(seq 100); do grep -q 'fetched again on next use' "$T/ks.log" && break; sleep 0.05; done
grep -q 'fetched again on next use' "$T/ks.log" || fail "SIGHUP with --pccs-url: $(tail -3 "$T/ks.log")"
kill "$KS_PID"; wait "$KS_PID" 2>/dev/null || true; KS_PID=

echo "pccs_fetch: all checks passed"
