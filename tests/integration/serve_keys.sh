#!/usr/bin/env bash
# serve_keys.sh — model keys and the key server, through the real binaries, with the key server's audit
# log as the witness:
#   1. every local check of `cloister serve` (config files, TLS material, ports, listen address, key
#      server options, model names and directories, plain models, preprocess.json, sealed headers)
#      and of `cloister provision` (output paths, --force, outputs that collide) runs before the key
#      server is contacted: each mistake fails with its own message and adds no audit record at all,
#      while the same commands without the mistake add a release (so the count can tell);
#   2. a new model version sealed under a key the policy denies is retried as the model is polled,
#      shown as LOADING (PERMISSION_DENIED) by GetModelStatus, and becomes AVAILABLE after the policy
#      grants the key and `keyserver reload`, without touching its files;
#   3. a key server name that does not exist fails at once (no retry rounds), one whose resolver cannot
#      answer is retried, and a fail-over list skips the name that does not resolve.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LEGACY=$ROOT/tests/data/sealed-v1-keyid
source "$(dirname "$0")/lib.sh"
export CLOISTER_LOG=info
PIDS=()
cleanup_servers() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; }
trap 'cleanup_servers; rm -rf "$WORK"' EXIT

# wait_for LOG REGEX PID [TRIES]: waits (10 s by default) for a line in a server's log; prints the
# first match group
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

# --- a key server holding the keys of two models, granting only the first
"$CLOISTER" tls init --dir tls --server-name localhost --san 127.0.0.1 --client-name client >/dev/null 2>&1
"$CLOISTER" attest sim-init --dir sim 2>/dev/null
"$CLOISTER" keygen --out k1.key 2>/dev/null
"$CLOISTER" keygen --out k2.key 2>/dev/null
mkdir -p models/digits/1 owner
"$CLOISTER" seal --key k1.key --key-id digits-key --in "$ROOT/models/digits/1/model.onnx" \
  --out models/digits/1/model.onnx.sealed 2>/dev/null
cp "$ROOT/models/digits/1/preprocess.json" models/digits/1/
export CLOISTER_MASTER_KEY_FILE=$PWD/owner/master.key
"$CLOISTER" keyserver secret put --db ks.db --name digits-key --file k1.key 2>/dev/null
"$CLOISTER" keyserver secret put --db ks.db --name digits-key-2 --file k2.key 2>/dev/null
"$CLOISTER" attest measure --name model-server 2>/dev/null >identity.json
python3 - <<'PY'
import json
ident = json.load(open("identity.json"))
json.dump({"version": 1, "identities": [dict(ident, secrets=["digits-key"])]}, open("policy.json", "w"))
json.dump({"version": 1, "identities": [dict(ident, secrets=["digits-key", "digits-key-2"])]},
          open("policy-both.json", "w"))
PY
"$CLOISTER" keyserver serve --listen 127.0.0.1:0 --cert tls/server/cert.pem --key tls/server/key.pem \
  --policy policy.json --db ks.db --trust-sim sim/sim_qe_cert.pem --pid-file ks.pid 2>ks.log &
KS_PID=$!
PIDS+=($KS_PID)
KS_PORT=$(wait_for ks.log 'listening on port ([0-9]+)' $KS_PID) || { cat ks.log; exit 1; }
KS=127.0.0.1:$KS_PORT

audit_rows() { "$CLOISTER" keyserver audit --db ks.db --json --limit 0 2>/dev/null | grep -c '"decision"'; }
releases() { "$CLOISTER" keyserver audit --db ks.db --json --limit 0 2>/dev/null | grep -c '"decision":"release"'; }
# refused NAME PATTERN -- COMMAND...: the command fails (exit 1 or 2) with PATTERN, and the key server
# heard nothing from it (not one audit record more)
refused() {
  local name=$1 pattern=$2 before after
  shift 3
  before=$(audit_rows)
  OUT=$(timeout 60 "$@" 2>&1)
  # (COMMAND is a program: an array such as "${SERVE[@]}", not a shell function, so timeout can run it)
  local got=$?
  after=$(audit_rows)
  if [[ $got -ne 1 && $got -ne 2 ]]; then
    echo "FAIL $name: exit $got, want 1 or 2"; echo "$OUT" | sed 's/^/    /' | head -20; FAILED=$((FAILED + 1))
  elif ! grep -Eq -- "$pattern" <<<"$OUT"; then
    echo "FAIL $name: output does not match /$pattern/"; echo "$OUT" | sed 's/^/    /' | head -20
    FAILED=$((FAILED + 1))
  elif [[ $after -ne $before ]]; then
    echo "FAIL $name: the key server was contacted ($before -> $after audit records):"
    "$CLOISTER" keyserver audit --db ks.db --limit $((after - before)) 2>&1 | sed 's/^/    /'
    echo "$OUT" | sed 's/^/    /' | head -10
    FAILED=$((FAILED + 1))
  else
    echo "ok   $name"; PASSED=$((PASSED + 1))
  fi
}

# --- 1. serve: every local check before the key server
read -r GP RP < <(free_ports)
# a model server of the sealed digits model with the key server: "${SERVE[@]}" ARGS..., where an option
# of ARGS replaces the default of the same name (a script, so that timeout can run it)
serve_args() {
  cat >serve-digits <<EOF
#!/usr/bin/env bash
declare -A opt=([--host]=127.0.0.1 [--port]=$GP [--rest_api_port]=$RP [--keyserver-ca]=tls/ca_cert.pem
  [--evidence]=sim [--sim-key]=sim/sim_qe_key.pem [--keyserver-attempts]=2 [--keyserver-backoff-ms]=10
  [--engine-threads]=1)
rest=()
while (( \$# )); do
  if [[ -n \${opt[\$1]+x} ]]; then opt[\$1]=\$2; shift 2; else rest+=("\$1"); shift; fi
done
args=(--keyserver "$KS")
for k in "\${!opt[@]}"; do args+=("\$k" "\${opt[\$k]}"); done
exec "$CLOISTER" serve "\${args[@]}" "\${rest[@]}"
EOF
  chmod +x serve-digits
  SERVE=("$WORK/serve-digits")
}
serve_args
M=(--model_name digits --model_base_path models/digits)
refused "a PEM given as --ssl_config_file" "ca_cert.pem: line 1" -- "${SERVE[@]}" --ssl_config_file tls/ca_cert.pem "${M[@]}"
refused "a missing --ssl_config_file" "cannot read SSL config" -- "${SERVE[@]}" --ssl_config_file nope.cfg "${M[@]}"
refused "a key that does not match the certificate" "TLS configuration" -- \
  "${SERVE[@]}" --tls-cert tls/server/cert.pem --tls-key tls/client/key.pem "${M[@]}"
refused "a missing --tls-ca" "nope.pem" -- \
  "${SERVE[@]}" --tls-cert tls/server/cert.pem --tls-key tls/server/key.pem --tls-ca nope.pem --client-verify "${M[@]}"
refused "a --tls-ca that holds no certificate" "TLS configuration" -- \
  "${SERVE[@]}" --tls-cert tls/server/cert.pem --tls-key tls/server/key.pem --tls-ca tls/server/key.pem --client-verify \
  "${M[@]}"
refused "a port another process listens on" "another process uses this port" -- \
  "${SERVE[@]}" --ssl_config_file tls/ssl.cfg --port "$KS_PORT" "${M[@]}"
refused "a listen address that is not numeric" "cannot use listen address 'localhost'" -- \
  "${SERVE[@]}" --ssl_config_file tls/ssl.cfg --host localhost "${M[@]}"
refused "a --keyserver-ca that is not a certificate" "cannot load the key server's CA file" -- \
  "${SERVE[@]}" --ssl_config_file tls/ssl.cfg "${M[@]}" --keyserver-ca tls/server/key.pem
refused "a --keyserver that is not HOST:PORT" "port" -- \
  "${SERVE[@]}" --ssl_config_file tls/ssl.cfg "${M[@]}" --keyserver "127.0.0.1:99999"
refused "an invalid model name" "model name 'bad name' is not valid" -- \
  "${SERVE[@]}" --ssl_config_file tls/ssl.cfg --model_name 'bad name' --model_base_path models/digits
mkdir -p broken/1 empty both/1 pp/1 legacy/1
head -c 1000 /dev/urandom >broken/1/model.onnx
cp models/digits/1/model.onnx.sealed both/1/ && cp "$ROOT/models/digits/1/model.onnx" both/1/
cp models/digits/1/model.onnx.sealed pp/1/ && echo '{"input": ' >pp/1/preprocess.json
cp "$LEGACY/plain.txt.sealed" legacy/1/model.onnx.sealed
cfg() { # cfg NAME:PATH...: a model config file with the sealed digits model and these
  { echo "model_config_list {"
    echo "  config { name: \"digits\" base_path: \"$WORK/models/digits\" }"
    for m in "$@"; do echo "  config { name: \"${m%%:*}\" base_path: \"$WORK/${m#*:}\" }"; done
    echo "}"; } >models.cfg
  echo models.cfg
}
refused "a model configured twice" "model 'digits' is configured twice" -- \
  "${SERVE[@]}" --ssl_config_file tls/ssl.cfg --model_config_file "$(cfg digits:models/digits)"
refused "a model base path that does not exist" "cannot read model base path" -- \
  "${SERVE[@]}" --ssl_config_file tls/ssl.cfg --model_config_file "$(cfg other:nowhere)"
refused "a model directory without versions" "no model version under" -- \
  "${SERVE[@]}" --ssl_config_file tls/ssl.cfg --model_config_file "$(cfg other:empty)"
refused "a plain model beside the sealed one that does not load" "cannot load model '.*broken/1/model.onnx'" -- \
  "${SERVE[@]}" --ssl_config_file tls/ssl.cfg --model_config_file "$(cfg other:broken)"
refused "a version with both a plain and a sealed model" "has both model.onnx and model.onnx.sealed" -- \
  "${SERVE[@]}" --ssl_config_file tls/ssl.cfg --model_name both --model_base_path both
refused "a sealed version with a malformed preprocess.json" "pp/1/preprocess.json" -- \
  "${SERVE[@]}" --ssl_config_file tls/ssl.cfg --model_name pp --model_base_path pp
refused "a model sealed for a key id no key server can hold" "sealed for key id 'owner\+team@models/v1'.*seal it again" -- \
  "${SERVE[@]}" --ssl_config_file tls/ssl.cfg --model_name legacy --model_base_path legacy
refused "a corrupt --model_config_file" "models.cfg.: line 1" -- \
  bash -c 'echo "model_config_list { oops }" >models.cfg && exec "$0" "$@"' "${SERVE[@]}" \
  --ssl_config_file tls/ssl.cfg --model_config_file models.cfg

# the same server without a mistake: the key is released (the count above would have seen it)
before=$(releases)
"${SERVE[@]}" --ssl_config_file tls/ssl.cfg "${M[@]}" --file_system_poll_wait_seconds 0 2>serve0.log &
S0=$!
PIDS+=($S0)
wait_for serve0.log '(serving): gRPC' $S0 >/dev/null || { echo "FAIL the correct server did not start"; cat serve0.log; FAILED=$((FAILED + 1)); }
expect "the correct server got its key: one release more" 0 "^$((before + 1))$" -- releases
kill -TERM $S0; wait $S0

# --- 1b. provision: the output paths before the key server
PROV=("$CLOISTER" provision --keyserver "$KS" --ca tls/ca_cert.pem --sim-key sim/sim_qe_key.pem --attempts 2
  --backoff-ms 10)
echo keep >existing.key
refused "provision --out an existing file" "already exists.*nothing was asked of the key server" -- \
  "${PROV[@]}" --secret digits-key --out existing.key
check "the existing file is untouched" test "$(cat existing.key)" = keep
refused "provision --out into a missing directory" "cannot create a file beside 'nodir/k'" -- \
  "${PROV[@]}" --secret digits-key --out nodir/k
refused "provision --out-dir that does not exist" "nodir" -- "${PROV[@]}" --secret digits-key --out-dir nodir
mkdir -p outdir
echo keep >outdir/digits-key
refused "provision --out-dir where a secret's file exists" "outdir/digits-key' already exists" -- \
  "${PROV[@]}" --secret digits-key-2 --secret digits-key --out-dir outdir
check "and nothing else was written there" test "$(ls -A outdir)" = digits-key
refused "provision of two secrets that map to one file" "would both be written to outdir2/a_b" -- \
  bash -c 'mkdir -p outdir2 && exec "$0" "$@"' "${PROV[@]}" --secret a/b --secret a_b --out-dir outdir2
check "no temporary file is left behind" test -z "$(ls -A outdir2)"
before=$(releases)
expect "provision --force overwrites, after the release" 0 "wrote 'digits-key'" -- \
  "${PROV[@]}" --secret digits-key --out existing.key --force
check "the release was audited" test "$(releases)" -eq $((before + 1))
check "the file holds the key" cmp existing.key k1.key

# --- 2. a version sealed under a denied key, retried at the polls, loaded after the policy grants it
read -r GP RP < <(free_ports)
serve_args
"${SERVE[@]}" --ssl_config_file tls/ssl.cfg "${M[@]}" --file_system_poll_wait_seconds 1 2>serve.log &
SERVE_PID=$!
PIDS+=($SERVE_PID)
wait_for serve.log '(serving): gRPC' $SERVE_PID >/dev/null || { cat serve.log; exit 1; }
curl_tls() { curl -sS --max-time 20 --cacert tls/ca_cert.pem --cert tls/client/cert.pem --key tls/client/key.pem "$@"; }
mkdir -p models/digits/2.tmp
"$CLOISTER" seal --key k2.key --key-id digits-key-2 --in "$ROOT/models/digits/1/model.onnx" \
  --out models/digits/2.tmp/model.onnx.sealed 2>/dev/null
cp "$ROOT/models/digits/1/preprocess.json" models/digits/2.tmp/
mv models/digits/2.tmp models/digits/2
wait_for serve.log '(version 2: cannot open sealed model).*its key is asked for again in' $SERVE_PID >/dev/null ||
  { echo "FAIL the denied key is not reported"; tail -5 serve.log; FAILED=$((FAILED + 1)); }
expect "the denial says when the key is asked for again" 0 "denied 1 of 1 secret: 'digits-key-2'.*asked for again in 1 s \(attempt 1" -- \
  cat serve.log
wait_for serve.log '(attempt 2);' $SERVE_PID >/dev/null
expect "and it is asked for again, with backoff" 0 "asked for again in 2 s \(attempt 2" -- cat serve.log
expect "GetModelStatus: version 2 LOADING (PERMISSION_DENIED), version 1 AVAILABLE" 0 \
  '"version":"2","state":"LOADING","status":\{"error_code":"PERMISSION_DENIED","error_message":"[^"]*digits-key-2.*"version":"1","state":"AVAILABLE"' -- \
  curl_tls "https://localhost:$RP/v1/models/digits"
expect "version 1 still answers" 0 '"version": *"1"' -- curl_tls "https://localhost:$RP/v1/models/digits/metadata"
cp policy-both.json policy.json
"$CLOISTER" keyserver reload --pid-file ks.pid 2>/dev/null
wait_for serve.log '(version 2) loaded' $SERVE_PID 400 >/dev/null ||
  { echo "FAIL version 2 was not loaded after the grant"; tail -5 serve.log; FAILED=$((FAILED + 1)); }
expect "the log says the key arrived after failed attempts" 0 "version 2 loaded .*its key arrived after [0-9]+ failed attempt" -- \
  cat serve.log
expect "GetModelStatus: version 2 AVAILABLE, nothing LOADING" 0 '^\{"model_version_status":\[\{"version":"2","state":"AVAILABLE","status":\{"error_code":"OK","error_message":""\}\}\]\}$' -- \
  curl_tls "https://localhost:$RP/v1/models/digits"
kill -TERM $SERVE_PID; wait $SERVE_PID
expect "the server stopped cleanly" 0 "stopped" -- cat serve.log

# --- 3. key server names that do not resolve
# a name that does not exist: one attempt, no retry rounds (30 rounds would take about a minute)
NSS=$WORK/nsswitch.files RESOLV=$WORK/resolv.dead
echo "hosts: files" >"$NSS"
echo "nameserver 127.0.0.1" >"$RESOLV" # nothing answers DNS there: "temporary failure in name resolution"
if unshare -m true 2>/dev/null; then
  # in a mount namespace of their own, with a resolver configuration made for the case
  with_nss() { unshare -m bash -c 'mount --bind "$0" /etc/nsswitch.conf && shift && exec "$@"' "$NSS" _ "$@"; }
  with_dead_dns() {
    unshare -m bash -c 'mount --bind "$0" /etc/resolv.conf && shift && exec "$@"' "$RESOLV" _ "$@"
  }
  expect "a key server name that does not exist fails at once" 1 "key server's name does not resolve: cannot resolve 'keys.invalid'.*no such host" -- \
    with_nss "$CLOISTER" provision --keyserver keys.invalid:4433 --ca tls/ca_cert.pem --sim-key sim/sim_qe_key.pem \
    --secret digits-key --out nx.key --attempts 30
  check "without a single retry" bash -c '! grep -q retrying <<<"$0"' "$OUT"
  expect "serve: the same, before anything is started" 1 "does not resolve" -- \
    with_nss "$CLOISTER" serve --ssl_config_file tls/ssl.cfg --host 127.0.0.1 --port "$GP" --rest_api_port "$RP" "${M[@]}" \
    --keyserver keys.invalid:4433 --keyserver-ca tls/ca_cert.pem --sim-key sim/sim_qe_key.pem
  check "without a single retry" bash -c '! grep -q retrying <<<"$0"' "$OUT"
  expect "a fail-over list skips the name that does not exist" 0 "wrote 'digits-key'" -- \
    with_nss "$CLOISTER" provision --keyserver keys.invalid:4433 --keyserver "$KS" --ca tls/ca_cert.pem \
    --sim-key sim/sim_qe_key.pem --secret digits-key --out fo.key --attempts 30
  expect "and says it is not asked again" 0 "key server keys.invalid:4433 is not asked again" -- echo "$OUT"
  expect "a resolver that does not answer is retried" 1 "no key server could be used after 3 rounds.*cannot resolve 'keys.example.com'" -- \
    with_dead_dns "$CLOISTER" provision --keyserver keys.example.com:4433 --ca tls/ca_cert.pem \
    --sim-key sim/sim_qe_key.pem --secret digits-key --out again.key --attempts 3 --backoff-ms 10
  check "twice" test "$(grep -c 'retrying in' <<<"$OUT")" -eq 2
else
  echo "skip the resolver cases: 'unshare -m' is not permitted here (they need a mount namespace)"
fi
# --- 4. a server the key server's policy refuses is told why (a reason code, never the policy's values),
# at start-up (nothing started), by `provision`, and in the log of the version poller
python3 - <<'PY'
import json
ident = json.load(open("identity.json"))
ident["mrenclave"] = "ab" * 32
json.dump({"version": 1, "identities": [dict(ident, secrets=["digits-key", "digits-key-2"])]},
          open("policy-other.json", "w"))
PY
reload_policy() { # reload_policy FILE: installs it and waits for the key server to have read it
  local n
  n=$(grep -c 'policy reloaded' ks.log)
  cp "$1" policy.json
  "$CLOISTER" keyserver reload --pid-file ks.pid 2>/dev/null
  for _ in $(seq 200); do [[ $(grep -c 'policy reloaded' ks.log) -gt $n ]] && break; sleep 0.05; done
}
reload_policy policy-other.json
read -r GP RP < <(free_ports)
serve_args
expect "serve refused by the policy: the reason, and nothing started" 1 \
  "the key server's policy did not accept this server's evidence \(reason: measurement_mismatch: this server's measurement is not one the policy lists.*" -- \
  "${SERVE[@]}" --ssl_config_file tls/ssl.cfg "${M[@]}" --keyserver-attempts 1
check "not OpenSSL's alert" bash -c '! grep -q "alert" <<<"$0"' "$OUT"
check "nor the policy's measurement" bash -c '! grep -q "abababab" <<<"$0"' "$OUT"
check "and it said nothing was started" grep -q "nothing was started" <<<"$OUT"
expect "provision refused by the policy: the reason, exit 1" 1 "reason: measurement_mismatch" -- \
  "${PROV[@]}" --secret digits-key --out refused.key
check "no file written" test ! -e refused.key
reload_policy policy-both.json
read -r GP RP < <(free_ports)
serve_args
"${SERVE[@]}" --ssl_config_file tls/ssl.cfg "${M[@]}" --file_system_poll_wait_seconds 1 2>serve4.log &
S4=$!
PIDS+=($S4)
wait_for serve4.log '(serving): gRPC' $S4 >/dev/null || { echo "FAIL the server did not start"; cat serve4.log; FAILED=$((FAILED + 1)); }
reload_policy policy-other.json
mkdir -p models/digits/9.tmp
"$CLOISTER" seal --key k1.key --key-id digits-key-9 --in "$ROOT/models/digits/1/model.onnx" \
  --out models/digits/9.tmp/model.onnx.sealed 2>/dev/null
mv models/digits/9.tmp models/digits/9
wait_for serve4.log '(version 9: cannot open sealed model)' $S4 >/dev/null ||
  { echo "FAIL the poller did not try version 9"; tail -5 serve4.log; FAILED=$((FAILED + 1)); }
expect "the poller logs the reason of the refusal" 0 "version 9: .*policy did not accept this server's evidence \(reason: measurement_mismatch" -- \
  cat serve4.log
kill -TERM $S4; wait $S4
rm -rf models/digits/9

expect "serve --help states the real retry schedule" 0 "doubling each round up to 5 s.*shortened at random" -- \
  "$CLOISTER" serve --help
finish
