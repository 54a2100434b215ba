#!/usr/bin/env bash
# keyserver_load.sh — the key server under hostile slow clients, through the real binaries:
#   - slowloris: 1,000 connections from 8 source addresses, each trickling a byte every 2 s into a
#     ClientHello that never ends (re-opened as soon as the server cuts them), with only 4 workers and
#     a per-source limit high enough not to matter: `cloister provision` keeps working, the
#     connections are cut at the handshake deadline, and SIGTERM still stops the server promptly;
#   - the per-source limit refuses the excess from one address while others get through;
#   - the handshake deadline closes a silent and a trickling connection alike;
#   - with every handshake slot taken, the oldest connections make room for newer ones;
#   - process hygiene: no core files (RLIMIT_CORE 0), RLIMIT_NOFILE raised to its hard limit.
# Usage: keyserver_load.sh /path/to/cloister
set -euo pipefail
CL=${1:?usage: keyserver_load.sh CLOISTER}
HERE=$(cd "$(dirname "$0")" && pwd)
SLOW="/usr/bin/python3 $HERE/slowconn.py"
T=$(mktemp -d "${TMPDIR:-/tmp}/cloister-ksload-XXXXXX")
export CLOISTER_MASTER_KEY_FILE="$T/ks.master-key" # the store's master key, apart from the database
SERVER_PID= LOAD_PID=
stop_bg() {
  local p
  for p in $LOAD_PID $SERVER_PID; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  LOAD_PID= SERVER_PID=
}
cleanup() { stop_bg; rm -rf "$T"; }
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
printf 'the-model-key-value' > "$T/value"
"$CL" keyserver secret put --db "$T/ks.db" --name model-key --file "$T/value" 2>/dev/null
"$CL" attest measure --name load-test 2>/dev/null > "$T/identity.json"
/usr/bin/python3 - "$T/identity.json" "$T/policy.json" <<'PY'
import json, sys
ident = json.load(open(sys.argv[1]))
ident["secrets"] = ["model-key"]
ident["secret_prov"] = "model-key"
json.dump({"version": 1, "identities": [ident]}, open(sys.argv[2], "w"), indent=2)
PY

# start_server ARGS... — a key server on an ephemeral port of 127.0.0.1; sets SERVER_PID and PORT
start_server() {
  : > "$T/server.log" # before the background job opens it: the polling below must never read a missing file
  CLOISTER_LOG=info "$CL" keyserver serve --listen 127.0.0.1:0 --cert "$T/server.pem" --key "$T/server.key" \
    --policy "$T/policy.json" --db "$T/ks.db" --trust-sim "$T/sim/sim_qe_cert.pem" "$@" 2> "$T/server.log" &
  SERVER_PID=$!
  PORT=
  for _ in $(seq 200); do
    PORT=$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$T/server.log" | head -1)
    [[ -n $PORT ]] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || fail "server exited: $(cat "$T/server.log")"
    sleep 0.05
  done
  fail "server did not start"
}
PROV=("$CL" provision --ca "$T/ca.pem" --sim-key "$T/sim/sim_qe_key.pem" --attempts 1 --timeout-ms 10000)

# ---- slowloris: 1,000 slow connections, 4 workers
start_server --threads 4 --handshake-timeout-ms 3000 --max-handshakes-per-source 1000
grep -q 'RLIMIT_NOFILE' "$T/server.log" || fail "the server does not log its RLIMIT_NOFILE"
# hygiene of the running server: no core files, descriptor limit at its hard value
grep -Eq '^Max core file size +0 +0 ' "/proc/$SERVER_PID/limits" || fail "RLIMIT_CORE is not 0: $(grep core "/proc/$SERVER_PID/limits")"
read -r soft hard < <(awk '/^Max open files/ {print $4, $5}' "/proc/$SERVER_PID/limits")
[[ $soft == "$hard" ]] || fail "RLIMIT_NOFILE not raised to its hard limit ($soft < $hard)"

$SLOW load "$PORT" --conns 1000 --sources 8 --interval 2 --ready "$T/ready" --status "$T/status" &
LOAD_PID=$!
for _ in $(seq 400); do [[ -f $T/ready ]] && break; kill -0 "$LOAD_PID" 2>/dev/null || fail "load generator died"; sleep 0.05; done
[[ -f $T/ready ]] || fail "the 1,000 slow connections were not all established"
echo "slowloris: $(cat "$T/ready")"
# provisions over ~4 s, while the first 1,000 reach their deadline and are replaced
t0=$(date +%s%N)
for i in 1 2 3 4 5 6; do
  s=$(date +%s%N)
  if ((i % 3 == 0)); then
    "${PROV[@]}" --keyserver "127.0.0.1:$PORT" --secret-prov --out "$T/got$i" 2> "$T/prov.err" ||
      fail "secret_prov provision $i failed under the slowloris load: $(cat "$T/prov.err")"
  else
    "${PROV[@]}" --keyserver "127.0.0.1:$PORT" --secret model-key --out "$T/got$i" 2> "$T/prov.err" ||
      fail "provision $i failed under the slowloris load: $(cat "$T/prov.err")"
  fi
  cmp -s "$T/value" "$T/got$i" || fail "provision $i got a wrong value"
  echo "slowloris: provision $i in $(( ($(date +%s%N) - s) / 1000000 )) ms"
  sleep 0.6
done
# the load was there all along, and the deadline cut it (a trickle does not extend a handshake)
for _ in $(seq 100); do
  [[ -f $T/status ]] && /usr/bin/python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); sys.exit(s["closed_by_server"] < 1000)' "$T/status" && break
  sleep 0.1
done
/usr/bin/python3 - "$T/status" <<'PY' || fail "the slowloris load was not held or not cut at the deadline"
import json, statistics, sys
s = json.load(open(sys.argv[1]))
life = s["lifetimes"]
print("slowloris: %d open now, %d opened, %d cut by the server (lifetime median %.2f s, min %.2f s, max %.2f s)"
      % (s["open"], s["opened"], s["closed_by_server"], statistics.median(life) if life else 0,
         min(life, default=0), max(life, default=0)))
ok = s["open"] >= 950 and s["closed_by_server"] >= 1000 and 2.4 <= statistics.median(life) <= 6.5
sys.exit(0 if ok else 1)
PY
for _ in $(seq 50); do grep -q 'under load:' "$T/server.log" && break; sleep 0.1; done  # logged once a second
grep -q 'under load:.*[1-9][0-9]* cut at the 3000 ms handshake deadline' "$T/server.log" ||
  fail "no overload warning in the server log"
grep 'under load:' "$T/server.log" | head -1 | sed 's/^/slowloris: server: /' 
# a graceful stop with 1,000 handshakes in progress: they end at their deadline at the latest
s=$(date +%s%N)
kill -TERM "$SERVER_PID"
wait "$SERVER_PID" || fail "the server did not stop cleanly under load"
SERVER_PID=
ms=$(( ($(date +%s%N) - s) / 1000000 ))
echo "slowloris: SIGTERM to exit under load: $ms ms"
((ms < 8000)) || fail "stopping under load took $ms ms"
kill "$LOAD_PID"; wait "$LOAD_PID" 2>/dev/null || true; LOAD_PID=

# ---- per-source limit
start_server --max-handshakes-per-source 10 --handshake-timeout-ms 10000
$SLOW per-source --limit 10 --timeout-ms 10000 "$PORT" -- \
  "${PROV[@]}" --keyserver "127.0.0.1:$PORT" --secret model-key --out "$T/got-ps" || fail "per-source limit"
stop_bg

# ---- handshake deadline
start_server --handshake-timeout-ms 1000
$SLOW deadline "$PORT" --timeout-ms 1000 || fail "handshake deadline"
stop_bg

# ---- every slot taken: the oldest make room
start_server --max-handshakes 20 --handshake-threads 2 --handshake-timeout-ms 10000
grep -q 'up to 20 in their handshake' "$T/server.log" || fail "the handshake limit is not logged: $(grep connections: "$T/server.log")"
$SLOW total --max 20 --timeout-ms 10000 "$PORT" -- \
  "${PROV[@]}" --keyserver "127.0.0.1:$PORT" --secret model-key --out "$T/got-total" || fail "total handshake limit"
stop_bg

echo "keyserver_load: all checks passed"
