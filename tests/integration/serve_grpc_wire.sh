#!/usr/bin/env bash
# serve_grpc_wire.sh — gRPC wire compatibility with third-party clients: grpc.health.v1 Check and
# Watch with python3-grpcio (served only when enabled; Watch ends with NOT_SERVING when the server stops),
# requests compressed by grpcio (gzip, deflate), hostile compressed requests sent with python3-h2 (a zip bomb
# that must neither be accepted nor grow the server's memory, corrupt, truncated and trailing data, an unknown
# grpc-encoding, a compressed flag without an encoding) and compressed responses (--response-compression),
# only for clients that accept them.
# Usage: serve_grpc_wire.sh CLOISTER SERVE_TESTD PROTO_DIR
source "$(dirname "$0")/lib.sh"
TESTD=$(readlink -f "$2")
PROTO=$(readlink -f "$3")
source "$(dirname "$0")/serve_lib.sh"
WIRE=$(readlink -f "$(dirname "$0")/grpc_wire_client.py")

# health.proto compiled as a top-level module: its package name, grpc, would shadow grpcio's
make_health_py() {
  mkdir -p pyh && cp "$PROTO/grpc/health/v1/health.proto" pyh/ &&
    $PY -m grpc_tools.protoc -Ipyh --python_out=pyh --grpc_python_out=pyh pyh/health.proto
}
wire() { # wire PORT CHECK [ARG]
  local port=$1
  shift
  PYTHONPATH="$WORK/py:$WORK/pyh" timeout 60 $PY "$WIRE" "127.0.0.1:$port" "$@"
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }

check "python stubs from the protos" make_py
check "health stubs" make_health_py

# ---- health checking off (TF Serving's default): UNIMPLEMENTED, as gRPC answers an unknown service
start_server off --plaintext || { finish; exit 1; }
expect "health Check without --enable_grpc_healthcheck_service: UNIMPLEMENTED" 0 "UNIMPLEMENTED" -- wire "$off_GRPC" health_check_unknown
expect "  ... and Predict still works" 0 "^logits" -- wire "$off_GRPC" predict
expect "responses are not compressed unless configured, even for a client that accepts gzip" 0 \
  "grpc-encoding identity flag 0" -- wire "$off_GRPC" raw_gzip_response "gzip"

# ---- health on, responses compressed with gzip for clients that accept it; max request 1 MiB
start_server on --plaintext --health --response-compression gzip --max-bytes 1048576 || { finish; exit 1; }
expect "health Check \"\": SERVING" 0 "^status SERVING$" -- wire "$on_GRPC" health_check
expect "health Check of an unknown service: NOT_FOUND" 0 "^NOT_FOUND: unknown service" -- wire "$on_GRPC" health_check_unknown
expect "health Watch of an unknown service: SERVICE_UNKNOWN, stream kept open" 0 "watch SERVICE_UNKNOWN" -- \
  wire "$on_GRPC" health_watch once
expect "Predict compressed by grpcio with gzip" 0 "^rows 6000 compressed with Gzip" -- wire "$on_GRPC" predict_gzip
expect "Predict compressed by grpcio with deflate" 0 "^rows 6000 compressed with Deflate" -- wire "$on_GRPC" predict_deflate
expect "a gzip request written by hand" 0 "^answered" -- wire "$on_GRPC" raw_gzip_request
expect "response compressed with gzip for a client that accepts gzip" 0 "grpc-encoding gzip flag 1" -- \
  wire "$on_GRPC" raw_gzip_response "identity, gzip"
expect "response not compressed for a client that accepts only deflate" 0 "grpc-encoding identity flag 0" -- \
  wire "$on_GRPC" raw_gzip_response "identity,deflate"
expect "grpcio reads the compressed responses" 0 "^logits" -- wire "$on_GRPC" predict
expect "corrupt gzip data: INTERNAL" 0 "^INTERNAL: the request message is not valid gzip data" -- wire "$on_GRPC" raw_corrupt
expect "truncated deflate data: INTERNAL" 0 "^INTERNAL: .*truncated" -- wire "$on_GRPC" raw_truncated
expect "bytes after the gzip stream: INTERNAL" 0 "^INTERNAL: .*after the end" -- wire "$on_GRPC" raw_trailing
expect "unknown grpc-encoding: UNIMPLEMENTED with grpc-accept-encoding" 0 "^UNIMPLEMENTED: .*'snappy'.*grpc-accept-encoding: identity,deflate,gzip" -- \
  wire "$on_GRPC" raw_unknown_encoding
expect "compressed flag without grpc-encoding: INTERNAL" 0 "^INTERNAL" -- wire "$on_GRPC" raw_flag_without_encoding
# a 250 KB gzip of 256 MiB: refused once 1 MiB is inflated; the server's peak memory must not follow it
rss0=$(rss_kb "$on_PID")
expect "zip bomb (256 MiB of zeros in 250 KB of gzip): RESOURCE_EXHAUSTED" 0 \
  "^RESOURCE_EXHAUSTED: the gzip-compressed request message decompresses to more than the server's limit of 1048576 bytes" -- \
  wire "$on_GRPC" raw_bomb
hwm1=$(hwm_kb "$on_PID")
expect "  ... and the server's peak memory grew by less than 16 MiB (before: ${rss0} kB resident)" 0 "^ok" -- \
  bash -c "(( $hwm1 - $rss0 < 16384 )) && echo ok || echo \"peak $hwm1 kB\""
expect "health Check still SERVING after the hostile requests" 0 "^status SERVING$" -- wire "$on_GRPC" health_check
# Watch: SERVING at once; when the server stops, NOT_SERVING and the end of the stream
wire "$on_GRPC" health_watch >watch.out 2>&1 &
watch_pid=$!
for ((i = 0; i < 100; i++)); do grep -q "watch SERVING" watch.out && break; sleep 0.1; done
expect "health Watch: SERVING while the server runs" 0 "watch SERVING" -- cat watch.out
kill -TERM "$on_PID"
wait "$watch_pid"
expect "health Watch: NOT_SERVING when the server stops, then UNAVAILABLE" 0 \
  "seen \['SERVING', 'NOT_SERVING'\]" -- bash -c "grep -q 'end UNAVAILABLE: the server is shutting down' watch.out && cat watch.out"
stop_servers
finish
