#!/usr/bin/env bash
# serve_tfs_flags.sh — `cloister serve` with tensorflow_model_server's command line: a CCZoo-style
# entrypoint (TF's --flag=value spelling, mutual TLS from --ssl_config_file) starts and serves REST and
# gRPC, prints one warning per flag without effect, honours --rest_api_num_threads (event loops in the
# start-up line), --rest_api_timeout_in_ms (a slow TLS client is cut at about the given time, the last of
# two values counting), --grpc_channel_arguments' grpc.max_receive_message_length (a larger body gets 413)
# and --tensorflow_intra_op_parallelism (the engine's threads, counted in
# /proc/PID/task); every one of TF Serving's 50 flags is accepted in one start (the refused ones with
# TF's default value); boolean spellings and last-wins; --version; refusals (UNIX socket, ALTS, a bad
# value) and typos named with the closest flag; other commands still refuse a repeated option.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$WORK"' EXIT
# start NAME ARGS... — cloister serve in the background, NAME.log; NAME_PID; waits for "serving:" (10 s)
start() {
  local name=$1
  shift
  "$CLOISTER" serve "$@" >"$name.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  printf -v "${name}_PID" %s "$pid"
  local i
  for ((i = 0; i < 100; i++)); do
    grep -q "serving:" "$name.log" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "server $name did not start:"; sed 's/^/    /' "$name.log"; return 1
}
# stop PID — SIGTERM, exit 0 wanted
stop() { kill -TERM "$1"; wait "$1"; }

check "tls init" "$CLOISTER" tls init --dir tls --server-name localhost --client-name client --san 127.0.0.1
$PY -c "
import numpy as np, json
np.save('x.npy', np.full((1, 1, 8, 8), 0.5, dtype=np.float32))
json.dump({'inputs': {'image': [[[[0.5] * 8] * 8]]}}, open('x.json', 'w'))"

# ---- the CCZoo-style entrypoint: TF's spelling, TF-only flags, TLS from the SSLConfig file
read -r gp rp < <(free_ports)
start tfs --enable_model_warmup=true --rest_api_num_threads=3 --tensorflow_intra_op_parallelism=2 \
  --tensorflow_inter_op_parallelism=2 --port="$gp" --rest_api_port="$rp" --model_name=digits \
  --model_base_path="$ROOT/models/digits" --ssl_config_file=tls/ssl.cfg --file_system_poll_wait_seconds=0 \
  --rest_api_timeout_in_ms=60000 --rest_api_timeout_in_ms=700 \
  --grpc_channel_arguments=grpc.max_connection_age_ms=2000,grpc.max_receive_message_length=4096
C="curl -sS --max-time 10 --cacert tls/ca_cert.pem --resolve localhost:$rp:127.0.0.1 --cert tls/client/cert.pem --key tls/client/key.pem"
expect "TF Serving's command line: started, mutual TLS, REST on 3 event loops (--rest_api_num_threads=3)" 0 \
  "serving: gRPC 0.0.0.0:$gp, REST 0.0.0.0:$rp on 3 threads \(mutual TLS\)" -- cat tfs.log
expect "  ... REST :predict answers" 0 '"logits"' -- $C -d @x.json "https://localhost:$rp/v1/models/digits:predict"
expect "  ... gRPC Predict answers" 0 "" -- "$CLOISTER" predict --server "localhost:$gp" --ca tls/ca_cert.pem \
  --cert tls/client/cert.pem --key tls/client/key.pem --model digits --input image=x.npy
expect "  ... --enable_model_warmup=true: the version is warmed up (a synthetic request: it has no warm-up file)" 0 \
  "model 'digits' version 1: warmed up with 1 request" -- cat tfs.log
expect "  ... one for --tensorflow_inter_op_parallelism" 0 "^1$" -- \
  grep -c "warn .*--tensorflow_inter_op_parallelism has no effect in cloister serve: the engine runs" tfs.log
check "  ... and none for the flags it honours" \
  bash -c '! grep -E "(rest_api_num_threads|intra_op|rest_api_timeout_in_ms|model_name|port|ssl_config_file|warmup) has no effect" tfs.log' 
expect "  ... --tensorflow_intra_op_parallelism=2: the engine's threads" 0 "engine threads per model run: 2" -- cat tfs.log
head -c 5000 /dev/zero | tr '\0' ' ' >big.json
expect "  ... grpc.max_receive_message_length=4096: a 5000-byte body is refused (413)" 0 "^413 .*limit is 4096 bytes" -- \
  bash -c "$C -o body.txt -w '%{http_code} ' -d @big.json https://localhost:$rp/v1/models/digits:predict; cat body.txt"
expect "  ... other channel arguments are warned about, one line each" 0 "^1$" -- \
  grep -c "warn .*--grpc_channel_arguments: grpc.max_connection_age_ms has no effect in cloister serve" tfs.log
# a TLS client that sends half a request and waits: cut at the request timeout, the last value (700 ms)
cat >slow.py <<'EOF'
import socket, ssl, sys, time
ctx = ssl.create_default_context(cafile="tls/ca_cert.pem")
ctx.load_cert_chain("tls/client/cert.pem", "tls/client/key.pem")
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1]))), server_hostname="localhost")
t = time.monotonic()
s.sendall(b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{")
s.settimeout(20)
try:
    while s.recv(4096):
        pass
except (ssl.SSLError, ConnectionError):
    pass
except socket.timeout:
    print("not cut within 20 s"); sys.exit(1)
print("cut after %.2f s" % (time.monotonic() - t))
EOF
expect "--rest_api_timeout_in_ms=60000 then =700: a slow client is cut after 0.5-10 s, not 60 s" 0 \
  "^cut after (0\.[5-9]|[1-9]\.)[0-9]* s$" -- $PY slow.py "$rp"
check "  ... SIGTERM: exit 0" stop "$tfs_PID"

# ---- --tensorflow_intra_op_parallelism changes the engine's threads: 1 vs 4, threads of the process
# after three predictions (the engine's OpenMP threads are created on first use); --model_base_path
# alone serves the model as "default", as in TF
threads_with() {
  local n=$1 i
  read -r gp rp < <(free_ports)
  start "intra$n" --plaintext --port "$gp" --rest_api_port "$rp" --model_base_path "$ROOT/models/digits" \
    --file_system_poll_wait_seconds=0 "--tensorflow_intra_op_parallelism=$n" || return 1
  local pid_var="intra${n}_PID"
  for i in 1 2 3; do curl -sS --max-time 10 -d @x.json "http://127.0.0.1:$rp/v1/models/default:predict" >"p$n.json"; done
  grep -q logits "p$n.json" || { echo "no answer from model 'default'"; return 1; }
  ls "/proc/${!pid_var}/task" | wc -l >"threads$n"
  stop "${!pid_var}"
}
check "a server with --tensorflow_intra_op_parallelism=1 answers as model 'default'" threads_with 1
check "a server with --tensorflow_intra_op_parallelism=4 answers" threads_with 4
expect "  ... it runs at least 3 more threads than with 1 ($(cat threads1 2>/dev/null) vs $(cat threads4 2>/dev/null))" 0 "" -- \
  test "$(cat threads4)" -ge $(($(cat threads1) + 3))

# ---- every flag of tensorflow_model_server in one start (refused ones with their default value)
NOEFFECT=(--rest_api_enable_cors_support=false
  --enable_per_model_batching_parameters=false --num_load_threads=0
  --num_unload_threads=0
  --flush_filesystem_caches=true --tensorflow_session_config_file=none.pbtxt --tensorflow_inter_op_parallelism=0
  --platform_config_file=platform.cfg --per_process_gpu_memory_fraction=0.5 --saved_model_tags=serve,gpu
  --grpc_max_threads=8 --monitoring_config_file=monitoring.cfg
  --remove_unused_fields_from_bundle_metagraph=true --prefer_tflite_model=false --use_tflite_model=0
  --num_tflite_pools=2 --num_tflite_interpreters_per_pool=1 --enable_signature_method_name_check=false
  --xla_cpu_compilation_enabled=false --xla_gpu_compilation_enabled=0 --enable_profiler=true
  --thread_pool_factory_config_file=pool.cfg --mixed_precision=bfloat16 --skip_initialize_tpu=true
  --enable_serialization_as_tensor_content=true)
printf 'model_config_list {\n  config {\n    name: "digits"\n    base_path: "%s"\n    model_platform: "tensorflow"\n  }\n}\n' \
  "$ROOT/models/digits" >models.cfg
read -r gp rp < <(free_ports)
start all --plaintext --port="$gp" --rest_api_port="$rp" --grpc_socket_path= \
  --use_alts_credentials=false --rest_api_num_threads=2 --rest_api_timeout_in_ms=30000 --enable_batching=false \
  --batching_parameters_file= --model_config_file=models.cfg --model_name=ignored --model_base_path= \
  --file_system_poll_wait_seconds=1 --tensorflow_session_parallelism=0 --tensorflow_intra_op_parallelism=0 \
  --ssl_config_file= --version=false --grpc_channel_arguments= --allow_version_labels_for_unavailable_models=true \
  --model_config_file_poll_wait_seconds=60 --max_num_load_retries=5 --load_retry_interval_micros=60000000 \
  --enable_model_warmup --num_request_iterations_for_warmup=3 \
  --enable_grpc_healthcheck_service=true --response_compression_algorithm=gzip "${NOEFFECT[@]}"
expect "all 50 TF Serving flags at once: the server starts" 0 "serving: gRPC 0.0.0.0:$gp" -- cat all.log
expect "  ... and serves the config file's model (--model_name is ignored with a config file, as in TF)" 0 \
  '"logits"' -- curl -sS --max-time 10 -d @x.json "http://127.0.0.1:$rp/v1/models/digits:predict"
expect "  ... one 'no effect' warning per flag without effect (${#NOEFFECT[@]})" 0 "^${#NOEFFECT[@]}$" -- \
  grep -c "has no effect in cloister serve: " all.log
for f in "${NOEFFECT[@]}"; do
  f=${f%%=*}
  grep -q -- "$f has no effect in cloister serve: " all.log || { echo "FAIL no warning for $f"; FAILED=$((FAILED + 1)); }
done
expect "  ... --enable_grpc_healthcheck_service=true serves grpc.health.v1" 0 "gRPC health checking served" -- cat all.log
expect "  ... --response_compression_algorithm=gzip compresses gRPC responses" 0 \
  "gRPC responses are compressed with gzip for clients that accept it" -- cat all.log
check "  ... SIGTERM: exit 0" stop "$all_PID"
expect "--response_compression_algorithm with an unknown algorithm is refused" 2 \
  "response_compression_algorithm: unknown compression algorithm 'snappy' \\(use identity, deflate or gzip\\)" -- \
  "$CLOISTER" serve --plaintext --allow-empty --response_compression_algorithm=snappy
expect "--help lists every TF flag with what it does here" 0 "^50$" -- bash -c "
  for f in port grpc_socket_path rest_api_port rest_api_num_threads rest_api_timeout_in_ms enable_batching \
    batching_parameters_file model_config_file model_name model_base_path file_system_poll_wait_seconds \
    tensorflow_session_parallelism tensorflow_intra_op_parallelism use_alts_credentials ssl_config_file version \
    grpc_channel_arguments allow_version_labels_for_unavailable_models model_config_file_poll_wait_seconds \
    max_num_load_retries load_retry_interval_micros enable_model_warmup num_request_iterations_for_warmup \
    enable_grpc_healthcheck_service response_compression_algorithm \
    $(printf '%s ' "${NOEFFECT[@]%%=*}" | sed 's/--//g'); do
    \"$CLOISTER\" serve --help | grep -Eq -- \"^  --\$f[ =[]\" && echo \$f; done | sort -u | wc -l"

# ---- bool spellings and last-wins, seen through serve's own checks (no server started)
printf 'max_batch_size { value: 8 }\n' >batch.cfg
for v in "" =true =1; do
  expect "--enable_batching$v is on (the batching file is read)" 2 "nope.cfg" -- \
    "$CLOISTER" serve --plaintext --allow-empty "--enable_batching$v" --batching_parameters_file=nope.cfg
done
for v in =false =0; do
  expect "--enable_batching$v is off (the batching file needs it)" 2 "need --enable_batching" -- \
    "$CLOISTER" serve --plaintext --allow-empty "--enable_batching$v" --batching_parameters_file=batch.cfg
done
expect "--enable_batching=true --enable_batching=false: the last counts" 2 "need --enable_batching" -- \
  "$CLOISTER" serve --plaintext --allow-empty --enable_batching=true --enable_batching=false --batching_parameters_file=batch.cfg
expect "--enable_batching=yes is refused" 2 "option --enable_batching wants true or false \(or 1 or 0\), not 'yes'" -- \
  "$CLOISTER" serve --plaintext --allow-empty --enable_batching=yes
expect "--port=8500 --port=0 with --rest_api_port 0: the last port counts" 2 "leave nothing to serve" -- \
  "$CLOISTER" serve --plaintext --allow-empty --port=8500 --port=0 --rest_api_port 0
expect "--port 0 --port=1 with --rest_api_port=1: the last port counts" 2 "must differ" -- \
  "$CLOISTER" serve --plaintext --allow-empty --port 0 --port=1 --rest_api_port=1
expect "other commands still refuse a repeated option" 2 "option --dir given more than once" -- \
  "$CLOISTER" tls init --dir a --dir b --server-name x

# ---- --version, refusals, typos
expect "--version prints the version and exits 0" 0 "^cloister serve [0-9]+\.[0-9]+\.[0-9]+ " -- "$CLOISTER" serve --version
expect "--version=true too, before any other check" 0 "TensorFlow Serving-compatible" -- "$CLOISTER" serve --version=true
expect "--grpc_socket_path is refused with the reason" 2 "--grpc_socket_path is not supported: gRPC is served over TLS" -- \
  "$CLOISTER" serve --plaintext --allow-empty --grpc_socket_path=/tmp/tfs.sock
expect "--use_alts_credentials is refused with the reason" 2 "--use_alts_credentials is not supported: ALTS" -- \
  "$CLOISTER" serve --plaintext --allow-empty --use_alts_credentials
expect "a GPU memory fraction that is not a fraction" 2 "--per_process_gpu_memory_fraction wants a number from 0 to 1, not '2'" -- \
  "$CLOISTER" serve --plaintext --allow-empty --per_process_gpu_memory_fraction=2
expect "a channel argument that is not KEY=VALUE" 2 "--grpc_channel_arguments: 'foo' is not KEY=VALUE" -- \
  "$CLOISTER" serve --plaintext --allow-empty --grpc_channel_arguments=grpc.x=1,foo
expect "a number flag with a word" 2 "option --grpc_max_threads wants a whole number" -- \
  "$CLOISTER" serve --plaintext --allow-empty --grpc_max_threads=many
expect "a typo'd TF flag is refused, naming it and the closest flag" 2 \
  "unknown option '--enable_model_wramup=true' \(did you mean --enable_model_warmup\? see --help\)" -- \
  "$CLOISTER" serve --plaintext --allow-empty --enable_model_wramup=true
expect "  ... and a typo'd serve flag" 2 "unknown option '--rest_api_prot' \(did you mean --rest_api_port\?" -- \
  "$CLOISTER" serve --plaintext --allow-empty --rest_api_prot 9000
expect "  ... a flag near none: no suggestion" 2 "unknown option '--frobnicate' \(see --help\)" -- \
  "$CLOISTER" serve --plaintext --allow-empty --frobnicate
expect "a TF bool's value needs the '=' (as in TF): the next word is not taken" 2 "unexpected argument 'false'" -- \
  "$CLOISTER" serve --plaintext --allow-empty --enable_model_warmup false
finish
