#!/usr/bin/env bash
# serve_shutdown.sh — every wait of `cloister serve` ends at SIGTERM, through the real binaries: the
# model server is stopped while it waits for a key server that is gone (killed: connections refused)
# or hung (SIGSTOP: connections accepted by the kernel, nothing answered), and must exit within 5 s
# (Kubernetes' grace period is 30 s) with the status and message of its state:
#   1. at start-up, inside the first key fetch (not listening yet), in its backoff, its TLS handshake
#      or its name lookup (a DNS server that never answers): a non-zero exit saying that the stop came
#      during the key fetch and nothing was started;
#   2. while serving, with the version poller inside the key fetch of a new sealed version: exit 0,
#      "stopped", and no sanitizer report (model keys are freed and zeroized on that path).
# Each case prints the time it took (the figure the issue measured at 151-156 s).
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$(dirname "$0")/lib.sh"
export CLOISTER_LOG=info
PIDS=()
cleanup_servers() {
  for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
}
trap 'cleanup_servers; rm -rf "$WORK"' EXIT

# wait_for LOG REGEX PID [TRIES]: waits (10 s by default) for a line in a log; prints the first match group
wait_for() {
  for _ in $(seq "${4:-200}"); do
    local m
    m=$(sed -n -E "s/.*$2.*/\1/p" "$1" | head -1)
    if [[ -n $m ]]; then echo "$m"; return 0; fi
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

"$CLOISTER" tls init --dir tls --server-name localhost --san 127.0.0.1 --client-name client >/dev/null 2>&1
"$CLOISTER" attest sim-init --dir sim 2>/dev/null
"$CLOISTER" keygen --out k1.key 2>/dev/null
"$CLOISTER" keygen --out k2.key 2>/dev/null
mkdir -p models/digits/1 owner
"$CLOISTER" seal --key k1.key --key-id digits-key --in "$ROOT/models/digits/1/model.onnx" \
  --out models/digits/1/model.onnx.sealed 2>/dev/null
export CLOISTER_MASTER_KEY_FILE=$PWD/owner/master.key
"$CLOISTER" keyserver secret put --db ks.db --name digits-key --file k1.key 2>/dev/null
"$CLOISTER" keyserver secret put --db ks.db --name digits-key-2 --file k2.key 2>/dev/null
"$CLOISTER" attest measure --name model-server 2>/dev/null >identity.json
python3 -c '
import json
ident = json.load(open("identity.json"))
json.dump({"version": 1, "identities": [dict(ident, secrets=["digits-key", "digits-key-2"])]}, open("policy.json", "w"))'

# start_ks: a key server on a fresh port; sets KS_PID and KS
start_ks() {
  "$CLOISTER" keyserver serve --listen 127.0.0.1:0 --cert tls/server/cert.pem --key tls/server/key.pem \
    --policy policy.json --db ks.db --trust-sim sim/sim_qe_cert.pem 2>>ks.log &
  KS_PID=$!
  PIDS+=($KS_PID)
  local port
  port=$(wait_for ks.log "listening on port ([0-9]+)" $KS_PID) || { cat ks.log; exit 1; }
  KS=127.0.0.1:$port
  : >ks.log
}
# serve LOG ARGS...: the sealed digits model, the key server's default retry schedule (30 rounds)
serve() {
  local log=$1
  shift
  read -r GP RP < <(free_ports)
  "$CLOISTER" serve --ssl_config_file tls/ssl.cfg --host 127.0.0.1 --port "$GP" --rest_api_port "$RP" \
    --model_name digits --model_base_path models/digits --keyserver "$KS" --keyserver-ca tls/ca_cert.pem \
    --evidence sim --sim-key sim/sim_qe_key.pem --engine-threads 1 "$@" 2>"$log" &
  SERVE_PID=$!
  PIDS+=($SERVE_PID)
}
# stop_within LOG WANT_STATUS PATTERN NAME: SIGTERM to the server; it must exit within 5 s with
# WANT_STATUS ("nonzero" or a number) and its log match PATTERN
stop_within() {
  local log=$1 want=$2 pattern=$3 name=$4 t0 t1 rc
  t0=$(now)
  kill -TERM "$SERVE_PID"
  for _ in $(seq 100); do kill -0 "$SERVE_PID" 2>/dev/null || break; sleep 0.05; done
  if kill -0 "$SERVE_PID" 2>/dev/null; then
    # still waiting: measure how long it really takes (bounded), then fail
    for _ in $(seq 1800); do kill -0 "$SERVE_PID" 2>/dev/null || break; sleep 0.1; done
    t1=$(now)
    echo "FAIL $name: still running 5 s after SIGTERM (exited after $(elapsed "$t0" "$t1") s)"
    kill -KILL "$SERVE_PID" 2>/dev/null
    wait "$SERVE_PID" 2>/dev/null
    FAILED=$((FAILED + 1))
    return
  fi
  wait "$SERVE_PID"
  rc=$?
  t1=$(now)
  echo "     ($name: exited $(elapsed "$t0" "$t1") s after SIGTERM, status $rc)"
  if [[ $want == nonzero && $rc -eq 0 ]] || [[ $want != nonzero && $rc -ne $want ]]; then
    echo "FAIL $name: exit status $rc, want $want"; sed 's/^/    /' "$log" | tail -8; FAILED=$((FAILED + 1))
  elif ! grep -Eq -- "$pattern" "$log"; then
    echo "FAIL $name: the log does not match /$pattern/"; sed 's/^/    /' "$log" | tail -8; FAILED=$((FAILED + 1))
  elif grep -Eq "AddressSanitizer|LeakSanitizer|runtime error:" "$log"; then
    echo "FAIL $name: sanitizer report"; grep -E -A15 "Sanitizer|runtime error" "$log" | head -30; FAILED=$((FAILED + 1))
  else
    echo "ok   $name"; PASSED=$((PASSED + 1))
  fi
}

# --- 1. start-up: SIGTERM inside the first key fetch
start_ks
kill -KILL "$KS_PID"; wait "$KS_PID" 2>/dev/null # gone: every connection refused, rounds of backoff
serve start-dead.log
wait_for start-dead.log "(retrying in)" "$SERVE_PID" >/dev/null ||
  { echo "FAIL the server did not retry the dead key server"; cat start-dead.log; FAILED=$((FAILED + 1)); }
stop_within start-dead.log nonzero "SIGTERM.*while .*key server.*nothing was started" \
  "start-up, key server gone: SIGTERM during the backoff ends it at once"
check "it never listened" bash -c '! grep -q "serving" start-dead.log'

start_ks
kill -STOP "$KS_PID" # hung: the kernel accepts, nobody answers (each read waits for its timeout)
serve start-hung.log
sleep 1.5
stop_within start-hung.log nonzero "SIGTERM.*while .*key server.*nothing was started" \
  "start-up, key server hung: SIGTERM during the TLS handshake ends it at once"
kill -KILL "$KS_PID"; wait "$KS_PID" 2>/dev/null

# a key server name whose DNS server never answers (a black hole on 127.0.0.1:53, resolver timeout
# 30 s): SIGTERM inside the name lookup (needs a mount namespace for /etc/resolv.conf, and port 53)
if unshare -m true 2>/dev/null && python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind(("127.0.0.1", 53))' 2>/dev/null; then
  python3 -c '
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
while True:
    s.recvfrom(4096)  # and never answer
' &
  DNS_PID=$!
  PIDS+=($DNS_PID)
  printf 'nameserver 127.0.0.1\noptions timeout:30 attempts:1\n' >resolv.blackhole
  sleep 0.3
  KS_SAVED=$KS
  KS=keys.example.com:4433
  read -r GP RP < <(free_ports)
  unshare -m bash -c 'mount --bind "$0" /etc/resolv.conf && shift && exec "$@"' "$WORK/resolv.blackhole" _ \
    "$CLOISTER" serve --ssl_config_file tls/ssl.cfg --host 127.0.0.1 --port "$GP" --rest_api_port "$RP" \
    --model_name digits --model_base_path models/digits --keyserver "$KS" --keyserver-ca tls/ca_cert.pem \
    --evidence sim --sim-key sim/sim_qe_key.pem --engine-threads 1 2>start-dns.log &
  SERVE_PID=$!
  PIDS+=($SERVE_PID)
  KS=$KS_SAVED
  sleep 1.5
  stop_within start-dns.log nonzero "SIGTERM.*while .*key server.*nothing was started" \
    "start-up, the key server's name lookup hangs: SIGTERM ends it at once"
  kill "$DNS_PID" 2>/dev/null; wait "$DNS_PID" 2>/dev/null
else
  echo "skip the name lookup case: it needs 'unshare -m' and port 53"
fi

# --- 2. serving: SIGTERM while the poller fetches the key of a new version
add_version() { # add_version N: version N sealed under digits-key-2 (not fetched at start-up)
  mkdir -p models/digits/$1.tmp
  "$CLOISTER" seal --key k2.key --key-id digits-key-2 --in "$ROOT/models/digits/1/model.onnx" \
    --out models/digits/$1.tmp/model.onnx.sealed 2>/dev/null
  mv models/digits/$1.tmp models/digits/$1
}
start_ks
serve poll-hung.log --file_system_poll_wait_seconds 1
wait_for poll-hung.log "(serving): gRPC" "$SERVE_PID" >/dev/null || { cat poll-hung.log; exit 1; }
kill -STOP "$KS_PID"
add_version 2
sleep 2.5 # the poller has found version 2 and waits for the key server inside the fetch
stop_within poll-hung.log 0 "stopped" "serving, key server hung: the poller's key fetch ends at SIGTERM"
expect "the poller was inside the key fetch of version 2, and the stop ended it" 0 \
  "model 'digits': stopping \(version 2: .*stopped during the TLS handshake \(shutdown\)" -- cat poll-hung.log
check "not a timeout" bash -c '! grep -q "timed out" poll-hung.log'
kill -KILL "$KS_PID"; wait "$KS_PID" 2>/dev/null
rm -rf models/digits/2

start_ks
serve poll-dead.log --file_system_poll_wait_seconds 1
wait_for poll-dead.log "(serving): gRPC" "$SERVE_PID" >/dev/null || { cat poll-dead.log; exit 1; }
kill -KILL "$KS_PID"; wait "$KS_PID" 2>/dev/null
add_version 2
wait_for poll-dead.log "(version 2: cannot open sealed model)" "$SERVE_PID" >/dev/null ||
  { echo "FAIL the poller did not try version 2"; tail -5 poll-dead.log; FAILED=$((FAILED + 1)); }
stop_within poll-dead.log 0 "stopped" "serving, key server gone: SIGTERM ends the retries at once"
finish
