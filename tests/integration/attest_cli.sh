#!/usr/bin/env bash
# attest_cli.sh — `cloister attest`: measure with sim evidence (MRENCLAVE = SHA-256 of the binary),
# measure with the gramine and tsm providers against directories laid out like /dev/attestation and
# configfs-tsm (holding real DCAP quotes), inspect, sim-init refusing to overwrite, verify (offline DCAP
# with the real quotes' collateral).
# Usage: attest_cli.sh /path/to/cloister
set -euo pipefail
CL=${1:?usage: attest_cli.sh CLOISTER}
DATA=$(cd "$(dirname "$0")/../data/dcap-qvl" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/cloister-attestcli-XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
export CLOISTER_LOG=error

# sim: the measurement is the binary's hash
"$CL" attest measure --name me > "$T/sim.json" 2>/dev/null
want=$(sha256sum "$CL" | cut -d' ' -f1)
python3 - "$T/sim.json" "$want" <<'PY' || fail "sim measurement is not the binary's SHA-256"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["mrenclave"] == sys.argv[2], j
assert j["evidence_types"] == ["sim"] and j["allow_debug"] is False and j["name"] == "me", j
assert j["secrets"] == [], j
PY
"$CL" attest measure --sim-isv-svn 7 --sim-debug 2>/dev/null | grep -q '"min_isv_svn":	7' || fail "sim SVN override"

# gramine: /dev/attestation layout with a real SGX quote whose report_data is what we write (zeros)
mkdir "$T/attestation"
printf 'dcap' > "$T/attestation/attestation_type"
: > "$T/attestation/user_report_data"
python3 - "$DATA/sgx_quote" "$T/attestation/quote" <<'PY'
import sys
q = bytearray(open(sys.argv[1], "rb").read())
q[48 + 320:48 + 384] = bytes(64)
open(sys.argv[2], "wb").write(q)
PY
"$CL" attest measure --evidence gramine --attest-root "$T/attestation" > "$T/gramine.json" \
  || fail "gramine measure failed"
grep -q '"mrenclave":	"33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"' "$T/gramine.json" \
  || fail "gramine MRENCLAVE"
grep -q '"sgx-dcap"' "$T/gramine.json" || fail "gramine evidence type"
[[ $(stat -c %s "$T/attestation/user_report_data") == 64 ]] || fail "user_report_data not written"
printf 'none' > "$T/attestation/attestation_type"
if "$CL" attest measure --evidence gramine --attest-root "$T/attestation" 2>/dev/null; then
  fail "accepted attestation_type none"; fi

# tsm: configfs-tsm report entry with a real TDX quote
mkdir -p "$T/tsm"
python3 - "$DATA/tdx_quote" "$T/tdx" <<'PY'
import sys
q = bytearray(open(sys.argv[1], "rb").read())
q[48 + 520:48 + 584] = bytes(64)
open(sys.argv[2], "wb").write(q)
PY
# the entry name is per process: pre-create it through a wrapper shell whose pid we know
bash -c 'mkdir "$1/cloister-$$" && cp "$2" "$1/cloister-$$/outblob" && : > "$1/cloister-$$/inblob" &&
         echo tdx_guest > "$1/cloister-$$/provider" && echo 3 > "$1/cloister-$$/generation" &&
         exec "$3" attest measure --evidence tsm --attest-root "$1"' _ "$T/tsm" "$T/tdx" "$CL" > "$T/tsm.json" \
  || fail "tsm measure failed"
grep -q '"tdx-dcap"' "$T/tsm.json" || fail "tsm evidence type"
grep -q '"mrenclave":	"91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407"' "$T/tsm.json" \
  || fail "tsm MRTD prefix"

# inspect
"$CL" attest inspect "$DATA/sgx_quote" "$DATA/tdx_quote" "$DATA/tdx_quote_outdated" > "$T/inspect.txt"
grep -q 'version 5, TDX' "$T/inspect.txt" || fail "inspect v5"
grep -q '70 bytes of zero padding' "$T/inspect.txt" || fail "inspect padding"
head -c 100 "$DATA/sgx_quote" > "$T/short"
if "$CL" attest inspect "$T/short" 2>/dev/null; then fail "inspect accepted a truncated quote"; fi

# sim-init
"$CL" attest sim-init --dir "$T/sim" 2>/dev/null
[[ $(stat -c %a "$T/sim/sim_qe_key.pem") == 600 ]] || fail "sim key not 0600"
if "$CL" attest sim-init --dir "$T/sim" 2>/dev/null; then fail "sim-init overwrote without --force"; fi
"$CL" attest sim-init --dir "$T/sim" --force 2>/dev/null || fail "sim-init --force"
# verify: offline DCAP verification of the real quotes with their collateral, inside and outside the
# collateral's validity window, and the outdated TDX platform refused
ROOT=$DATA/Intel_SGX_Provisioning_Certification_RootCA.der
"$CL" attest verify --dcap-collateral "$DATA/sgx_quote_collateral.json" --dcap-root-ca "$ROOT" --at 1751000000 \
  "$DATA/sgx_quote" > "$T/v.out" || fail "verify refused the SGX quote inside its window"
grep -q 'tcb_status  ConfigurationAndSWHardeningNeeded' "$T/v.out" || fail "verify: wrong SGX TCB status"
grep -q 'advisories  INTEL-SA-00289 INTEL-SA-00615' "$T/v.out" || fail "verify: SGX advisories missing"
"$CL" attest verify --dcap-collateral "$DATA/tdx_quote_collateral.json" --dcap-root-ca "$ROOT" --at 1751000000 \
  "$DATA/tdx_quote" > "$T/t.out" || fail "verify refused the TDX quote inside its window"
grep -q 'evidence    tdx-dcap' "$T/t.out" || fail "verify: TDX evidence type"
set +e
"$CL" attest verify --dcap-collateral "$DATA/sgx_quote_collateral.json" --dcap-root-ca "$ROOT" --at 1753000000 \
  "$DATA/sgx_quote" > /dev/null 2> "$T/v.err"
rc=$?
"$CL" attest verify --dcap-collateral "$DATA/tdx_quote_outdated_collateral.json" --dcap-root-ca "$ROOT" \
  --at 1772000000 "$DATA/tdx_quote_outdated" > /dev/null 2> "$T/o.err"
rc2=$?
"$CL" attest verify --dcap-collateral "$DATA/sgx_quote_collateral.json" --at 1751000000 "$DATA/sgx_quote" \
  > /dev/null 2>&1
rc3=$?
set -e
[[ $rc == 1 ]] && grep -q 'fetch fresh collateral' "$T/v.err" || fail "verify accepted expired collateral (rc $rc)"
[[ $rc2 == 1 ]] && grep -q 'below every TCB level' "$T/o.err" || fail "verify accepted an outdated TDX platform"
[[ $rc3 == 2 ]] || fail "verify without --dcap-root-ca is a usage error (rc $rc3)"
echo "attest_cli: OK"
