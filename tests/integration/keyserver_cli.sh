#!/usr/bin/env bash
# keyserver_cli.sh — end-to-end test of the key server through the CLI: the master key only where it
# is named (--master-key or CLOISTER_MASTER_KEY_FILE), sim quoting key, secret put/list/rm, policy
# check, serve on 127.0.0.1 (ephemeral port), provision (granted, denied), SIGHUP policy reload revoking
# and restoring access, audit listing, --verify against edits (with the plain chain recomputed),
# removals and a rollback (--expect-head), and the migration of a database of the first format.
# Usage: keyserver_cli.sh /path/to/cloister
set -euo pipefail
CL=${1:?usage: keyserver_cli.sh CLOISTER}
T=$(mktemp -d "${TMPDIR:-/tmp}/cloister-kscli-XXXXXX")
SERVER_PID=
HUNG_PID=
cleanup() {
  if [[ -n $HUNG_PID ]]; then kill "$HUNG_PID" 2>/dev/null || true; fi
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

# secrets; the master key is never looked for beside the database
printf 'the-model-key-value' > "$T/value"
if "$CL" keyserver secret put --db "$T/ks.db" --name model-key --file "$T/value" 2> "$T/nokey.log"; then
  fail "secret put ran without a master key"; fi
grep -q -- '--master-key FILE or set CLOISTER_MASTER_KEY_FILE' "$T/nokey.log" || fail "no clear error: $(cat "$T/nokey.log")"
mkdir -p "$T/owner"
"$CL" keyserver secret put --db "$T/ks.db" --master-key "$T/owner/master.key" --name model-key --file "$T/value" 2>/dev/null
[[ -f $T/owner/master.key && ! -e $T/ks.db.master-key ]] || fail "the master key is not where --master-key says"
[[ $(stat -c %a "$T/owner/master.key") == 600 ]] || fail "the master key is not mode 0600"
export CLOISTER_MASTER_KEY_FILE=$T/owner/master.key
"$CL" keyserver secret put --db "$T/ks.db" --name spare --file "$T/value" 2>/dev/null
# from a pipe, so the value never sits in a file
printf 'piped-value' | "$CL" keyserver secret put --db "$T/ks.db" --name piped --file /dev/stdin 2>/dev/null ||
  fail "secret put --file /dev/stdin refused a pipe"
"$CL" keyserver secret list --db "$T/ks.db" | grep -q '^piped ' || fail "list does not show the piped secret"
"$CL" keyserver secret rm --db "$T/ks.db" --name piped 2>/dev/null
"$CL" keyserver secret list --db "$T/ks.db" | grep -q '^model-key .* version 1$' || fail "list does not show model-key v1"
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
if prov --secret model-key --out "$T/got2" --sim-debug 2>"$T/debug.err"; then fail "a debug enclave got the secret"; fi
grep -q "the key server's policy did not accept this server's evidence (reason: debug_not_allowed: " "$T/debug.err" ||
  fail "the debug denial does not say why: $(cat "$T/debug.err")"
if prov --secret spare --out "$T/got3" 2>"$T/spare.err"; then fail "an unknown secret was released"; fi
grep -q "denied 1 of 1 secret: 'spare' (reason: secret_not_granted: the policy does not grant it " "$T/spare.err" ||
  fail "the denial of one secret is not worded for one: $(cat "$T/spare.err")"
prov --secret-prov --out "$T/got4" 2>/dev/null || fail "secret_prov protocol failed"
cmp -s "$T/value" "$T/got4" || fail "secret_prov value differs"

# SIGHUP reload: revoke, then restore
cp "$T/policy.json" "$T/policy.good"
echo '{"version": 1, "identities": []}' > "$T/policy.json"
kill -HUP "$SERVER_PID"
for _ in $(seq 100); do grep -q 'policy reloaded' "$T/server.log" && break; sleep 0.05; done
if prov --secret model-key --out "$T/got5" 2>"$T/revoked.err"; then fail "revoked identity still served"; fi
grep -q "(reason: policy_empty: " "$T/revoked.err" || fail "the revoked identity is not told why: $(cat "$T/revoked.err")"
cp "$T/policy.good" "$T/policy.json"
[[ $(cat "$T/ks.pid") == "$SERVER_PID" ]] || fail "pid file does not hold the server's pid"
"$CL" keyserver reload --pid-file "$T/ks.pid" 2>/dev/null || fail "keyserver reload failed"
for _ in $(seq 100); do [[ $(grep -c 'policy reloaded' "$T/server.log") -ge 2 ]] && break; sleep 0.05; done
prov --secret model-key --out "$T/got6" 2>/dev/null || fail "restored policy does not serve"
grep -q 'policy reloaded from .* (0 identities)$' "$T/server.log" || fail "the empty policy's reload is not logged as 0 identities"
grep -q 'policy reloaded from .* (1 identity)$' "$T/server.log" || fail "the restored policy's reload is not logged as 1 identity"
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

# SIGTERM while provision waits for a key server that does not answer (it accepts and stays silent) or
# cannot be reached (backoff between rounds): it ends within 5 s, says why, fails, and writes nothing
python3 -c '
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8)
print(s.getsockname()[1], flush=True)
conns = []
while True:
    conns.append(s.accept()[0])' > "$T/hung.port" 2>/dev/null &
HUNG_PID=$!
for _ in $(seq 100); do [[ -s $T/hung.port ]] && break; sleep 0.05; done
HUNG_PORT=$(cat "$T/hung.port")
CLOSED_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
for what in "hung:$HUNG_PORT" "unreachable:$CLOSED_PORT"; do
  mkdir "$T/sig-${what%%:*}"
  "$CL" provision --keyserver "127.0.0.1:${what#*:}" --ca "$T/ca.pem" --sim-key "$T/sim/sim_qe_key.pem" \
    --attempts 1000 --backoff-ms 60000 --timeout-ms 600000 --secret model-key \
    --out "$T/sig-${what%%:*}/got" 2> "$T/sig-${what%%:*}.err" &
  PROV_PID=$!
  sleep 1
  kill -0 "$PROV_PID" 2>/dev/null || fail "${what%%:*}: provision ended before SIGTERM: $(cat "$T/sig-${what%%:*}.err")"
  kill -TERM "$PROV_PID"
  for _ in $(seq 50); do kill -0 "$PROV_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$PROV_PID" 2>/dev/null; then kill -KILL "$PROV_PID"; fail "${what%%:*}: provision still runs 5 s after SIGTERM"; fi
  rc=0; wait "$PROV_PID" || rc=$?
  [[ $rc == 1 ]] || fail "${what%%:*}: provision stopped by SIGTERM exits $rc, not 1: $(cat "$T/sig-${what%%:*}.err")"
  grep -q 'stopped by SIGTERM while waiting for the key server: no secret was written' "$T/sig-${what%%:*}.err" ||
    fail "${what%%:*}: SIGTERM is not explained: $(cat "$T/sig-${what%%:*}.err")"
  [[ -z $(ls -A "$T/sig-${what%%:*}") ]] || fail "${what%%:*}: SIGTERM left files behind: $(ls -A "$T/sig-${what%%:*}")"
done
kill "$HUNG_PID"; wait "$HUNG_PID" 2>/dev/null || true; HUNG_PID=

# audit
"$CL" keyserver audit --db "$T/ks.db" --limit 0 > "$T/audit.txt"
grep -q ' release ' "$T/audit.txt" || fail "no release in the audit log"
grep -q 'debug enclave not allowed' "$T/audit.txt" || fail "the debug denial is not audited"
grep -q 'secret_prov' "$T/audit.txt" || fail "the secret_prov release is not audited"
"$CL" keyserver audit --db "$T/ks.db" --json --limit 1 | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
assert r["claims"]["evidence_types"] == ["sim"], r' || fail "the audit record does not hold the verified claims"
"$CL" keyserver audit --db "$T/ks.db" --verify > "$T/verify.txt" || fail "audit --verify failed"
grep -q 'audit log intact' "$T/verify.txt" || fail "audit --verify says: $(cat "$T/verify.txt")"
HEAD=$(sed -n 's/.*head \([0-9a-f]\{64\}\).*/\1/p' "$T/verify.txt")
[[ -n $HEAD ]] || fail "audit --verify prints no head"
"$CL" keyserver audit --db "$T/ks.db" --verify --expect-head "$HEAD" >/dev/null || fail "--expect-head refused the head"
cp "$T/ks.db" "$T/ks.db.copy"

# attacks by someone who has the database but not the master key (sqlite3 from Python)
attack() { # attack NAME SQL [recompute]: on a copy; audit --verify must fail
  cp "$T/ks.db.copy" "$T/attacked.db"
  python3 - "$T/attacked.db" "$2" "${3:-}" <<'PY'
import hashlib, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.executescript(sys.argv[2])
if sys.argv[3]:  # the plain SHA-256 chain of the first format, recomputed from the first row
    prev = "0" * 64
    cols = ("seq, time, peer, protocol, decision, evidence_type, insecure, evidence_sha256, mrenclave, mrsigner, "
            "isv_prod_id, isv_svn, debug, identities, secrets, reason")
    for row in db.execute(f"SELECT {cols} FROM audit ORDER BY seq").fetchall():
        h = hashlib.sha256((prev + "\n" + "\x1f".join(str(c) for c in row)).encode()).hexdigest()
        db.execute("UPDATE audit SET prev_hash=?, hash=? WHERE seq=?", (prev, h, row[0]))
        prev = h
db.commit()
PY
  if "$CL" keyserver audit --db "$T/attacked.db" --verify > "$T/attack.log" 2>&1; then
    fail "audit --verify missed: $1"; fi
  grep -q 'audit log broken\|keyed state\|downgrade' "$T/attack.log" || fail "$1: unclear: $(cat "$T/attack.log")"
}
attack "an edited row" "UPDATE audit SET decision='release' WHERE decision='deny' AND seq=(SELECT MIN(seq) FROM audit WHERE decision='deny')"
attack "an edited row, chain recomputed" "UPDATE audit SET decision='release' WHERE decision='deny'" recompute
attack "the newest rows removed" "DELETE FROM audit WHERE seq > (SELECT MAX(seq) - 2 FROM audit)"
attack "every row removed" "DELETE FROM audit"
attack "a row inserted, chain recomputed" "INSERT INTO audit SELECT MAX(seq) + 1, time, peer, protocol, 'release', evidence_type, insecure, evidence_sha256, mrenclave, mrsigner, isv_prod_id, isv_svn, debug, identities, secrets, reason, prev_hash, hash, claims FROM audit" recompute
attack "the checkpoint removed" "DELETE FROM meta WHERE key='state'"
# a downgrade to the first format (its plain chain recomputed, the schema-2 columns and meta rows
# removed, the secrets given up) would be migrated, and its rewritten history blessed by the keyed MAC
attack "a downgrade to the first format, releases rewritten as denials" "
  UPDATE audit SET decision='deny', secrets=replace(secrets, '=released', '=denied') WHERE decision!='deny';
  ALTER TABLE audit DROP COLUMN claims; DELETE FROM secrets; ALTER TABLE secrets DROP COLUMN version;
  DELETE FROM meta WHERE key!='key_check'" recompute
attack "the schema row removed" "DELETE FROM meta WHERE key='schema'"
attack "every row of every table removed" "DELETE FROM audit; DELETE FROM secrets; DELETE FROM meta"
# the commands that read a store never make one: a wrong or missing path is not an intact empty log
if "$CL" keyserver audit --db "$T/missing.db" --verify > "$T/missing.log" 2>&1; then
  fail "audit --verify passed on a database that does not exist: $(cat "$T/missing.log")"; fi
grep -q "no database at" "$T/missing.log" || fail "a missing database is not explained: $(cat "$T/missing.log")"
[[ ! -e $T/missing.db ]] || fail "audit --verify created the database it was to verify"
if "$CL" keyserver secret list --db "$T/missing.db" 2>/dev/null; then fail "secret list made a database"; fi
[[ ! -e $T/missing.db ]] || fail "secret list created a database"

# a rollback to an older copy of the whole database verifies alone, not against a later head
CLOISTER_LOG=info "$CL" keyserver serve --listen 127.0.0.1:0 --cert "$T/server.pem" --key "$T/server.key" \
  --policy "$T/policy.json" --db "$T/ks.db" --trust-sim "$T/sim/sim_qe_cert.pem" --threads 2 2> "$T/server.log" &
SERVER_PID=$!
PORT=
for _ in $(seq 100); do
  PORT=$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$T/server.log" | head -1)
  [[ -n $PORT ]] && break
  sleep 0.05
done
[[ -n $PORT ]] || fail "server did not start again"
prov --secret model-key --out "$T/got8" 2>/dev/null || fail "provision after restart failed"
kill -TERM "$SERVER_PID"; wait "$SERVER_PID" || fail "server did not stop cleanly"; SERVER_PID=
NEWHEAD=$("$CL" keyserver audit --db "$T/ks.db" --verify | sed -n 's/.*head \([0-9a-f]\{64\}\).*/\1/p')
[[ -n $NEWHEAD && $NEWHEAD != "$HEAD" ]] || fail "the head did not move with a new record"
cp "$T/ks.db.copy" "$T/ks.db"; rm -f "$T/ks.db-wal" "$T/ks.db-shm"
"$CL" keyserver audit --db "$T/ks.db" --verify >/dev/null || fail "the older copy does not verify on its own"
if "$CL" keyserver audit --db "$T/ks.db" --verify --expect-head "$NEWHEAD" 2> "$T/rollback.log"; then
  fail "--expect-head missed a rollback"; fi
grep -q 'rolled back' "$T/rollback.log" || fail "rollback not explained: $(cat "$T/rollback.log")"

# an older ciphertext of a secret restored into the database is refused
python3 - "$T/ks.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("CREATE TABLE saved AS SELECT * FROM secrets WHERE name='model-key'")
db.commit()
PY
printf 'a-newer-value' | "$CL" keyserver secret put --db "$T/ks.db" --name model-key --file /dev/stdin --force 2>/dev/null
python3 - "$T/ks.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.executescript("DELETE FROM secrets WHERE name='model-key'; INSERT INTO secrets SELECT * FROM saved; DROP TABLE saved")
PY
if "$CL" keyserver audit --db "$T/ks.db" --verify 2> "$T/older.log"; then fail "audit --verify missed an older secret"; fi
grep -q "secret 'model-key' in the database is version 1.*older copy" "$T/older.log" ||
  fail "the older secret is not named: $(cat "$T/older.log")"

# a database of the first format (written by cloister before its keyed audit chain) is migrated, nothing lost
FIX=$(cd "$(dirname "$0")/../data/keyserver-v1" && pwd)
mkdir -p "$T/v1"
cp "$FIX/ks.db" "$FIX/master.key" "$T/v1/"
chmod 600 "$T/v1/master.key"
"$CL" keyserver audit --db "$T/v1/ks.db" --master-key "$T/v1/master.key" --verify > "$T/v1.txt" 2>&1 ||
  fail "the first-format database does not migrate: $(cat "$T/v1.txt")"
grep -q 'audit log intact: 4 records' "$T/v1.txt" || fail "migration lost audit records: $(cat "$T/v1.txt")"
grep -q 'secrets intact: 3' "$T/v1.txt" || fail "migration lost secrets: $(cat "$T/v1.txt")"
"$CL" keyserver audit --db "$T/v1/ks.db" --master-key "$T/v1/master.key" --limit 0 > "$T/v1-audit.txt"
grep -q 'spare: not granted by the policy' "$T/v1-audit.txt" && grep -q 'debug enclave not allowed' "$T/v1-audit.txt" ||
  fail "migrated audit records lost their content: $(cat "$T/v1-audit.txt")"
"$CL" keyserver secret list --db "$T/v1/ks.db" --master-key "$T/v1/master.key" > "$T/v1-list.txt"
[[ $(grep -c 'version [123]$' "$T/v1-list.txt") == 3 ]] || fail "migrated secrets: $(cat "$T/v1-list.txt")"
CLOISTER_LOG=info "$CL" keyserver serve --listen 127.0.0.1:0 --cert "$T/server.pem" --key "$T/server.key" \
  --policy "$T/policy.json" --db "$T/v1/ks.db" --master-key "$T/v1/master.key" --trust-sim "$T/sim/sim_qe_cert.pem" \
  --threads 2 2> "$T/server.log" &
SERVER_PID=$!
PORT=
for _ in $(seq 100); do
  PORT=$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$T/server.log" | head -1)
  [[ -n $PORT ]] && break
  sleep 0.05
done
[[ -n $PORT ]] || fail "server did not start on the migrated database"
prov --secret model-key --out "$T/got9" 2>/dev/null || fail "provision from the migrated database failed"
cmp -s "$T/value" "$T/got9" || fail "the migrated secret's value differs"
kill -TERM "$SERVER_PID"; wait "$SERVER_PID" || fail "server did not stop cleanly"; SERVER_PID=
echo "keyserver_cli: OK"
