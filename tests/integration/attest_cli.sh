#!/usr/bin/env bash
# attest_cli.sh — `cloister attest`: measure with sim evidence (MRENCLAVE = SHA-256 of the binary; in
# TDX mode MRTD = SHA-384), measure with the gramine and tsm providers against directories laid out
# like /dev/attestation and configfs-tsm (holding real DCAP quotes; the TD snippet is the whole TD
# identity and a valid policy), inspect, sim-init refusing to overwrite, verify (offline DCAP with the
# real quotes' collateral), rtmr (checked against hashlib), and policy check refusing the old
# MRSIGNER 00..00 + tdx-dcap loophole.
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
"$CL" attest measure --sim-isv-svn 7 --sim-debug 2>/dev/null > "$T/sim7.json"
python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); assert j["min_isv_svn"] == 7 and j["allow_debug"]' \
  "$T/sim7.json" || fail "sim SVN override"

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
python3 - "$T/gramine.json" <<'PY' || fail "gramine MRENCLAVE / evidence type"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["mrenclave"] == "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb", j
assert j["evidence_types"] == ["sgx-dcap"] and "mrtd" not in j, j
PY
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
# the whole TD identity, read independently from the quote's TD 1.0 body (offset 48) with Python
python3 - "$T/tsm.json" "$T/tdx" "$T/td-policy.json" <<'PY' || fail "tsm: the TD identity is not the quote's"
import json, sys
j = json.load(open(sys.argv[1]))
b = open(sys.argv[2], "rb").read()[48:48 + 584]
assert j["evidence_types"] == ["tdx-dcap"] and j["allow_debug"] is False, j
want = {"mrseam": b[16:64], "mrsignerseam": b[64:112], "td_attributes": b[120:128], "xfam": b[128:136],
        "mrtd": b[136:184], "mrconfigid": b[184:232], "mrowner": b[232:280], "mrownerconfig": b[280:328]}
for i in range(4):
    want["rtmr%d" % i] = b[328 + 48 * i:376 + 48 * i]
for k, v in want.items():
    assert j[k] == v.hex(), (k, j[k], v.hex())
assert not {"mrenclave", "mrsigner", "isv_prod_id", "tee_tcb_svn", "seam_attributes"} & set(j), j
j["secrets"] = ["td-key"]
json.dump({"version": 1, "identities": [j]}, open(sys.argv[3], "w"))
PY
# the snippet is a valid policy identity as it is
"$CL" keyserver policy check "$T/td-policy.json" > "$T/td-check.txt" || fail "policy check refused the TD snippet"
grep -q "TDX trust domain (tdx-dcap), mrtd 1 value, rtmr0 1 value" "$T/td-check.txt" || fail "policy check summary"
# the old loophole is refused clearly
printf '%s' '{"version": 1, "identities": [{"name": "any-td", "mrsigner": "0000000000000000000000000000000000000000000000000000000000000000", "isv_prod_id": 0, "evidence_types": ["tdx-dcap"], "secrets": ["k"]}]}' > "$T/loophole.json"
set +e
"$CL" keyserver policy check "$T/loophole.json" > /dev/null 2> "$T/loophole.err"; rc=$?
set -e
[[ $rc == 1 ]] && grep -q "identities\[0\].mrsigner: an SGX-only field in a tdx-dcap identity" "$T/loophole.err" \
  || fail "policy check accepted the MRSIGNER 00..00 + tdx-dcap loophole (rc $rc)"

# sim TDX: MRTD = SHA-384 of the binary; RTMRs as given
"$CL" attest measure --sim-tdx --sim-rtmr 2=$(printf 'ab%.0s' {1..48}) > "$T/simtd.json" 2>/dev/null \
  || fail "sim TDX measure"
python3 - "$T/simtd.json" "$CL" <<'PY' || fail "sim TDX identity"
import hashlib, json, sys
j = json.load(open(sys.argv[1]))
assert j["mrtd"] == hashlib.sha384(open(sys.argv[2], "rb").read()).hexdigest(), j
assert j["rtmr2"] == "ab" * 48 and j["rtmr0"] == "00" * 48 and j["evidence_types"] == ["sim"], j
PY
set +e
"$CL" attest measure --sim-rtmr 2=00 > /dev/null 2>&1; rc=$?
"$CL" attest measure --sim-tdx --sim-rtmr 4=$(printf '00%.0s' {1..48}) > /dev/null 2>&1; rc2=$?
set -e
[[ $rc == 2 && $rc2 == 2 ]] || fail "bad --sim-rtmr options are usage errors ($rc, $rc2)"

# rtmr: replaying digests, checked against hashlib
d1=$(printf 'cloister kernel' | sha384sum | cut -d' ' -f1)
d2=$(printf 'cloister initrd' | sha384sum | cut -d' ' -f1)
want=$(python3 -c 'import hashlib, sys
r = bytes(48)
for d in sys.argv[1:]:
    r = hashlib.sha384(r + bytes.fromhex(d)).digest()
print(r.hex())' "$d1" "$d2")
[[ $("$CL" attest rtmr "$d1" "$d2") == "$want" ]] || fail "attest rtmr: wrong value"
printf '# kernel\n%s\n\n  %s  \n' "$d1" "$d2" > "$T/digests"
[[ $("$CL" attest rtmr --digests "$T/digests") == "$want" ]] || fail "attest rtmr --digests"
first=$("$CL" attest rtmr "$d1")
[[ $("$CL" attest rtmr --from "$first" "$d2") == "$want" ]] || fail "attest rtmr --from"
set +e
"$CL" attest rtmr 1234 > /dev/null 2>&1; rc=$?
"$CL" attest rtmr > /dev/null 2>&1; rc2=$?
set -e
[[ $rc == 2 && $rc2 == 2 ]] || fail "attest rtmr with a bad or no digest is a usage error ($rc, $rc2)"

# inspect
"$CL" attest inspect "$DATA/sgx_quote" "$DATA/tdx_quote" "$DATA/tdx_quote_outdated" > "$T/inspect.txt"
grep -q 'version 5, TDX' "$T/inspect.txt" || fail "inspect v5"
grep -q '70 bytes of zero padding' "$T/inspect.txt" || fail "inspect padding"
grep -q 'rtmr1           0084452c01668329d4bc06acdf58a7205c26743304509973949e5619bf81a6a7aea8c323c173019b3093d54e579e9378' \
  "$T/inspect.txt" || fail "inspect RTMR1"
grep -q 'tee_tcb_svn2    0d010300000000000000000000000000' "$T/inspect.txt" || fail "inspect TEE_TCB_SVN2 (TD 1.5)"
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
