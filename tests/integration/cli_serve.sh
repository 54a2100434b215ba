#!/usr/bin/env bash
# cli_serve.sh — `cloister serve` from the command line: usage errors (exit 2) for missing TLS, model or
# contradictory options; refusals (exit 1) naming what is missing (a model base path, a simulated
# quoting key, an SSL config file) or malformed; and a real start with --allow-empty over
# mutual TLS from `cloister tls init`'s ssl.cfg on free loopback ports: REST and gRPC answer, metrics
# are served, SIGTERM stops it with exit 0; polling: empty and truncated sealed versions are logged
# naming their file, a vanished model directory once (not at every poll) and its return; the start-up
# line of a server without gRPC; a locked-memory limit too low (refused with the ways out, or started
# with --allow-unlocked-memory).
source "$(dirname "$0")/lib.sh"
srv=""
trap '[[ -n $srv ]] && kill $srv 2>/dev/null; rm -rf "$WORK"' EXIT

expect "no TLS and no --plaintext" 2 "no TLS configuration: give --ssl_config_file" -- "$CLOISTER" serve --allow-empty
expect "no model" 2 "no model to serve" -- "$CLOISTER" serve --plaintext
expect "REST threads out of range" 2 "rest_api_num_threads" -- "$CLOISTER" serve --plaintext --allow-empty --rest_api_num_threads 0
expect "ssl config and PEM files together" 2 "either --ssl_config_file or --tls-cert" -- \
  "$CLOISTER" serve --ssl_config_file a --tls-cert b --tls-key c --allow-empty
expect "same port twice" 2 "must differ" -- "$CLOISTER" serve --plaintext --allow-empty --port 9000 --rest_api_port 9000
expect "model_name without base path" 2 "go together" -- "$CLOISTER" serve --plaintext --model_name m
expect "a missing model base path is reported" 1 "cannot read model base path '$WORK/models'" -- \
  "$CLOISTER" serve --plaintext --model_name m --model_base_path "$WORK/models"
expect "--keyserver needs its CA" 2 "needs --keyserver-ca" -- \
  "$CLOISTER" serve --plaintext --allow-empty --keyserver 127.0.0.1:1
expect "sim evidence needs a simulated quoting key" 1 "needs a simulated quoting key" -- \
  env -u CLOISTER_SIM_QE_KEY "$CLOISTER" serve --plaintext --allow-empty --keyserver 127.0.0.1:1 --keyserver-ca x
expect "unknown evidence provider" 2 "sim|gramine|tsm|unknown" -- \
  "$CLOISTER" serve --plaintext --allow-empty --keyserver 127.0.0.1:1 --keyserver-ca x --evidence sgx
expect "missing ssl config file" 1 "cannot read SSL config" -- "$CLOISTER" serve --ssl_config_file nope.cfg --allow-empty
# the engine's OpenMP wait policy: passive unless the environment or --omp-wait-policy says otherwise (set before
# libgomp starts: the process re-executes itself with the variable)
expect "OpenMP threads wait passively by default" 2 "OpenMP threads wait passive \(OMP_WAIT_POLICY\)" -- \
  env -u OMP_WAIT_POLICY CLOISTER_LOG=info "$CLOISTER" serve --plaintext
expect "  ... OMP_WAIT_POLICY from the environment is kept" 2 "OpenMP threads wait active \(OMP_WAIT_POLICY\)" -- \
  env OMP_WAIT_POLICY=active CLOISTER_LOG=info "$CLOISTER" serve --plaintext
expect "  ... --omp-wait-policy wins over the environment" 2 "OpenMP threads wait passive \(OMP_WAIT_POLICY\)" -- \
  env OMP_WAIT_POLICY=active CLOISTER_LOG=info "$CLOISTER" serve --plaintext --omp-wait-policy passive
expect "  ... --omp-wait-policy=V as getopt also reads it" 2 "OpenMP threads wait active \(OMP_WAIT_POLICY\)" -- \
  env OMP_WAIT_POLICY=passive CLOISTER_LOG=info "$CLOISTER" serve --plaintext --omp-wait-policy=active
expect "  ... and an abbreviation getopt takes (--omp-wait active)" 2 "OpenMP threads wait active \(OMP_WAIT_POLICY\)" -- \
  env OMP_WAIT_POLICY=passive CLOISTER_LOG=info "$CLOISTER" serve --plaintext --omp-wait active
expect "  ... runtime-default removes it: libgomp's own brief spinning" 2 \
  "OpenMP threads wait spinning briefly, then sleeping \(OMP_WAIT_POLICY unset: libgomp's default\)" -- \
  env OMP_WAIT_POLICY=passive CLOISTER_LOG=info "$CLOISTER" serve --plaintext --omp-wait-policy runtime-default
expect "  ... an unknown policy is a usage error" 2 "--omp-wait-policy must be passive, active or runtime-default, not 'busy'" -- \
  "$CLOISTER" serve --plaintext --allow-empty --omp-wait-policy busy

check "tls init" "$CLOISTER" tls init --dir tls --server-name localhost --client-name client --san 127.0.0.1
sed 's/client_verify: true/client_verify: tru/' tls/ssl.cfg >bad.cfg
expect "malformed ssl config names the line" 1 "bad.cfg: line [0-9]+: client_verify must be true or false" -- \
  "$CLOISTER" serve --ssl_config_file bad.cfg --allow-empty
printf 'max_batch_size { value: 8 }\npad_variable_length_inputs: true\n' >batch.cfg
expect "batching parameters need --enable_batching" 2 "need --enable_batching" -- \
  "$CLOISTER" serve --plaintext --allow-empty --batching_parameters_file batch.cfg
expect "unsupported batching parameters name the line" 2 "batch.cfg: batching parameters line 2: 'pad_variable_length_inputs' is not supported" -- \
  "$CLOISTER" serve --plaintext --allow-empty --enable_batching --batching_parameters_file batch.cfg
expect "missing batching parameters file" 2 "nope.cfg" -- \
  "$CLOISTER" serve --plaintext --allow-empty --enable_batching --batching_parameters_file nope.cfg
printf 'max_batch_size { value: 8 }\nbatch_timeout_micros { value: 500 }\n' >batch.cfg

# two free ports from the kernel
read -r gp rp < <(/usr/bin/python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
"$CLOISTER" serve --ssl_config_file tls/ssl.cfg --host 127.0.0.1 --port "$gp" --rest_api_port "$rp" --allow-empty \
  --enable_batching --batching_parameters_file batch.cfg --rest_api_num_threads 3 >serve.log 2>&1 &
srv=$!
for ((i = 0; i < 50; i++)); do grep -q "serving:" serve.log && break; sleep 0.1; done
C="curl -sS --max-time 10 --cacert tls/ca_cert.pem --resolve localhost:$rp:127.0.0.1 --cert tls/client/cert.pem --key tls/client/key.pem"
expect "started with mutual TLS, REST on 3 event loops" 0 \
  "serving: gRPC 127.0.0.1:$gp, REST 127.0.0.1:$rp on 3 threads \(mutual TLS\)" -- cat serve.log
check "  ... the server process (same pid after re-executing) started with OMP_WAIT_POLICY=passive" \
  grep -qx OMP_WAIT_POLICY=passive <(tr '\0' '\n' </proc/$srv/environ)
expect "batching parameters from the file" 0 "batching up to 8 rows within 500 us" -- cat serve.log
expect "REST over mTLS: unknown model is 404 with a JSON error" 0 '^\{"error":"Could not find any versions of model m"\}$' -- \
  $C "https://localhost:$rp/v1/models/m"
expect "metrics served" 0 "cloister_serve_model_versions 0" -- $C "https://localhost:$rp/monitoring/prometheus/metrics"
expect "a second server on the same REST port is refused, though the first shares it among its loops" 1 \
  "another process uses this port" -- timeout 20 "$CLOISTER" serve --plaintext --allow-empty --host 127.0.0.1 --port 0 \
  --rest_api_port "$rp" --rest_api_num_threads 2
expect "12 connections in a row, whichever REST loop takes them, all answered" 0 "^12$" -- \
  bash -c "for i in \$(seq 12); do $C https://localhost:$rp/v1/models/m; echo; done | grep -c 'Could not find any versions'"
check "REST refuses a client without a certificate" bash -c "! curl -sS --max-time 10 --cacert tls/ca_cert.pem --resolve localhost:$rp:127.0.0.1 https://localhost:$rp/v1/models/m"
expect "gRPC port speaks TLS with ALPN h2" 0 "ALPN protocol: h2" -- \
  bash -c "timeout 10 openssl s_client -connect 127.0.0.1:$gp -alpn h2 -CAfile tls/ca_cert.pem -cert tls/client/cert.pem -key tls/client/key.pem </dev/null 2>&1"
kill -TERM $srv
wait $srv
rc=$?
srv=""
check "SIGTERM: exit 0" test $rc -eq 0
expect "SIGTERM: stopped message" 0 "cloister serve: stopped" -- cat serve.log

# ---- polling: bad new versions are logged naming their file; a vanished model directory is logged
# once, not at every poll, and its return too
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p dm/1 && cp "$ROOT/models/digits/1/model.onnx" dm/1/
"$CLOISTER" keygen --out poll.key >/dev/null 2>&1
"$CLOISTER" seal --key poll.key --key-id poll --in dm/1/model.onnx --out whole.sealed >/dev/null 2>&1
read -r gp rp < <(/usr/bin/python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
"$CLOISTER" serve --plaintext --host 127.0.0.1 --port "$gp" --rest_api_port "$rp" --model_name dm \
  --model_base_path "$WORK/dm" --file_system_poll_wait_seconds 1 >poll.log 2>&1 &
srv=$!
for ((i = 0; i < 100; i++)); do grep -q "serving:" poll.log && break; sleep 0.1; done
# wait_log PATTERN — until poll.log has a line matching it (at most 10 s)
wait_log() { for ((i = 0; i < 100; i++)); do grep -Eq -- "$1" poll.log && return 0; sleep 0.1; done; return 1; }
mkdir dm/2 && : >dm/2/model.onnx.sealed
expect "an empty sealed version is logged with its file" 0 "" -- \
  wait_log "model 'dm': '$WORK/dm/2/model.onnx.sealed': not a cloister sealed file.*version 1 keeps serving"
mkdir dm/3 && head -c 40 whole.sealed >dm/3/model.onnx.sealed
expect "a truncated sealed version is logged with its file" 0 "" -- \
  wait_log "model 'dm': '$WORK/dm/3/model.onnx.sealed': truncated: the file ends inside the sealed header; version 1 keeps serving"
mv dm dm.away
sleep 3.5
expect "a vanished model directory is logged once in 3.5 s of polls every second" 0 "^1$" -- \
  grep -c "cannot read model base path '$WORK/dm'" poll.log
mv dm.away dm
expect "  ... and when it is back" 0 "" -- wait_log "model 'dm': polls succeed again \(after [3-9] polls with: cannot read model base path"
kill -TERM $srv
wait $srv
srv=""

# ---- the start-up line for a server without gRPC (it said "gRPC off0") and with one worker
"$CLOISTER" serve --plaintext --allow-empty --host 127.0.0.1 --port 0 --rest_api_port "$rp" --workers 1 >off.log 2>&1 &
srv=$!
for ((i = 0; i < 100; i++)); do grep -q "serving:" off.log && break; sleep 0.1; done
expect "no gRPC port: 'gRPC off', one worker" 0 "serving: gRPC off, REST 127.0.0.1:$rp on [0-9]+ threads? \(PLAINTEXT, not for production\), 1 worker, queue" -- \
  cat off.log
kill -TERM $srv
wait $srv
srv=""

# ---- a locked-memory limit too low (as for a non-root user; CAP_IPC_LOCK dropped, which root would
# have): refused at start with the ways out, and started when unlocked memory is accepted explicitly
nolock() { if [[ $(id -u) -eq 0 ]]; then setpriv --bounding-set=-ipc_lock --inh-caps=-ipc_lock "$@"; else "$@"; fi; }
if [[ $(id -u) -ne 0 ]] || command -v setpriv >/dev/null; then
  expect "RLIMIT_MEMLOCK too low: refused, naming ulimit -l, LimitMEMLOCK, IPC_LOCK and the option" 1 \
    "RLIMIT_MEMLOCK is 64 KiB.*ulimit -l unlimited.*LimitMEMLOCK.*IPC_LOCK.*cloister --allow-unlocked-memory" -- \
    nolock bash -c 'ulimit -l 64 && exec "$@"' _ "$CLOISTER" serve --plaintext --allow-empty --host 127.0.0.1 \
    --port 0 --rest_api_port "$rp"
  # not through the nolock function: in the background it would run in a subshell, $! would be that
  # subshell, and the TERM below would leave the server running after the test
  nolock_argv=()
  [[ $(id -u) -eq 0 ]] && nolock_argv=(setpriv --bounding-set=-ipc_lock --inh-caps=-ipc_lock)
  "${nolock_argv[@]}" bash -c 'ulimit -l 64 && exec "$@"' _ "$CLOISTER" --allow-unlocked-memory serve --plaintext \
    --allow-empty --host 127.0.0.1 --port 0 --rest_api_port "$rp" >unlocked.log 2>&1 &
  srv=$!
  for ((i = 0; i < 100; i++)); do grep -q "serving:" unlocked.log && break; sleep 0.1; done
  expect "  ... started with --allow-unlocked-memory, with a warning" 0 "could not be locked in RAM" -- cat unlocked.log
  kill -TERM $srv
  wait $srv
  srv=""
fi

finish
