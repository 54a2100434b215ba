#!/usr/bin/env bash
# serve_rest.sh — the REST API end to end with curl over TLS and mutual TLS: model status, metadata,
# :predict in the row and columnar formats, {"error": ...} bodies with TF Serving's HTTP codes, the
# body size limit, a stalled client cut by the timeout, Prometheus metrics, HTTP/1.1 connection
# handling on the wire (http1_wire.py: pipelining, split records, chunked, 100-continue, HEAD, 1.0,
# refusals that close, idle close, a client gone mid-request); the bounded worker queue
# (a full queue answers 429 on REST and UNAVAILABLE on gRPC) and graceful shutdown on SIGTERM (the
# request in flight completes; requests written onto idle keep-alive connections just after are
# answered, and idle connections closed cleanly).
# Usage: serve_rest.sh CLOISTER SERVE_TESTD PROTO_DIR
source "$(dirname "$0")/lib.sh"
TESTD=$(readlink -f "$2")
PROTO=$(readlink -f "$3")
source "$(dirname "$0")/serve_lib.sh"

check "tls material" make_tls
check "python stubs from the protos" make_py

start_server rest --ssl-config tls1/ssl.cfg --max-bytes 65536 --timeout-ms 1500 || { finish; exit 1; }
U=https://localhost:$rest_REST
# curl ARGS... — prints the body, then the HTTP status on its own line
c() { curl -sS --max-time 20 --cacert tls1/ca_cert.pem --resolve "localhost:$rest_REST:127.0.0.1" -w '\n%{http_code}\n' "$@"; }

expect "status of all versions" 0 '^\{"model_version_status":\[\{"version":"2","state":"AVAILABLE","status":\{"error_code":"OK","error_message":""\}\},\{"version":"1",' -- c "$U/v1/models/affine"
expect "status by a percent-encoded model name" 0 '"state":"AVAILABLE"' -- c "$U/v1/models/ad%64er"
expect "status of one version" 0 '"version":"1","state":"AVAILABLE"' -- c "$U/v1/models/affine/versions/1"
expect "status of a missing version is 404" 0 '^\{"error":"Could not find version 7 of model affine"\}$' -- c "$U/v1/models/affine/versions/7"
check "  ... with HTTP 404" bash -c "[[ \$(curl -s -o /dev/null -w '%{http_code}' --cacert tls1/ca_cert.pem --resolve localhost:$rest_REST:127.0.0.1 $U/v1/models/affine/versions/7) == 404 ]]"
expect "metadata" 0 '"signature_def":\{"signature_def":\{"serving_default":\{"inputs":\{"x":\{"dtype":"DT_FLOAT","tensor_shape":\{"dim":\[\{"size":"-1"' -- c "$U/v1/models/affine/metadata"
expect "predict, row format" 0 '^\{"predictions":\[\{"logits":\[3.5,2.25,1\],"probs":\[0.73067915[0-9]*,0.20934309[0-9]*,0.0599777(95[0-9]*|96)\],"class":0\},\{"logits":\[0.5,0.25,0\]' -- \
  c -d '{"instances": [[1,2,3,4],[0,0,0,0]]}' "$U/v1/models/affine:predict"
expect "predict, row format with named inputs" 0 '^\{"predictions":\[3,-2\]\}' -- \
  c -d '{"instances": [{"a": 1, "b": 2}, {"a": -5, "b": 3}]}' "$U/v1/models/adder:predict"
expect "predict, columnar format, version 1" 0 '^\{"outputs":\[4,6\]\}' -- \
  c -d '{"inputs": {"a": [1, 2], "b": [3, 4]}}' "$U/v1/models/adder/versions/1:predict"
expect "malformed JSON is 400" 0 '^\{"error":"JSON Parse error.*\}\.400\.$' -- bash -c "$(declare -f c); U=$U rest_REST=$rest_REST; c -d '{\"inputs\": [1,' $U/v1/models/adder:predict | tr '\n' '.'"
expect "wrong dtype is 400" 0 'is DT_INT32: 1.5 is not an integer' -- c -d '{"inputs": {"a": [1.5], "b": [1]}}' "$U/v1/models/adder:predict"
expect "wrong shape is 400" 0 'the signature wants \[-1,4\].*400' -- bash -c "$(declare -f c); U=$U rest_REST=$rest_REST; c -d '{\"inputs\": [[1,2,3]]}' $U/v1/models/affine:predict | tr '\n' ' '"
expect "unknown model is 404" 0 'Servable not found for request: Latest\(nosuch\)' -- c -d '{"instances": [1]}' "$U/v1/models/nosuch:predict"
expect "an unknown label is 400 with TF's message" 0 'Unrecognized servable version label: stable.*400' -- bash -c "$(declare -f c); U=$U rest_REST=$rest_REST; c $U/v1/models/affine/labels/stable | tr '\n' ' '"
expect "wrong method is 405 with a JSON error" 0 '^\{"error":"Malformed request: use GET"\}.405.$' -- bash -c "$(declare -f c); U=$U rest_REST=$rest_REST; c -X DELETE $U/v1/models/affine | tr '\n' '.'"
expect "unknown path is 404" 0 'Malformed request' -- c "$U/v2/x"
head -c 70000 /dev/zero | tr '\0' ' ' >big.json
expect "oversized body is refused with 413" 0 "^413$" -- c -o /dev/null -H "Expect: 100-continue" -d @big.json "$U/v1/models/affine:predict"
expect "stalled HTTP client is cut" 0 "closed by the server" -- client "$rest_REST" tls1/ca_cert.pem - - stalled_http
expect "metrics count REST requests by model and status" 0 ':tensorflow:serving:request_count\{model_name="adder",API="predict",entrypoint="REST",status="OK"\} 2' -- \
  c "$U/monitoring/prometheus/metrics"
# the adder's four :predict above (two answered, two refused as malformed) in one histogram
expect "metrics have latency histograms by model" 0 ':tensorflow:serving:request_latency_bucket\{model_name="adder",API="predict",entrypoint="REST",le="\+Inf"\} 4$' -- \
  c "$U/monitoring/prometheus/metrics"
# HTTP/1.1 connection handling on the wire (raw TLS sockets; see http1_wire.py)
WIRE=$(readlink -f "$(dirname "$0")/http1_wire.py")
wire() { $PY "$WIRE" "$rest_REST" tls1/ca_cert.pem "$1"; }
expect "http/1.1: pipelined requests are answered in order (one runs in the pool)" 0 "answered in order" -- wire pipelined
expect "http/1.1: input beyond what is buffered waits behind a running request" 0 "all 6 answered" -- wire pipelined_large
expect "http/1.1: a request split across TLS records, or byte by byte" 0 "both answered" -- wire split
expect "http/1.1: chunked request body" 0 "answered" -- wire chunked
expect "http/1.1: Expect: 100-continue" 0 "100 Continue, then the answer" -- wire continue
expect "http/1.1: HEAD has no body" 0 "no body" -- wire head
expect "http/1.0: keep-alive only when asked" 0 "kept alive when asked" -- wire http10
expect "http/1.1: Connection: close" 0 "then closed" -- wire close
expect "http/1.1: a client that does not read its responses is not answered without bound" 0 "all 10000 once it did" -- wire slow_reader
expect "http/1.1: malformed request is 400, then closed" 0 "^400 " -- wire malformed
expect "http/1.1: headers over 16 KB are 431" 0 "^431 .*16384 bytes" -- wire headers_too_large
expect "http/1.1: many short headers over 16 KB are 431 too" 0 "^431 .*16384 bytes" -- wire many_headers
expect "http/1.1: declared body over the limit is 413 before it is sent" 0 "^413 .*limit is 65536 bytes" -- wire too_large
expect "http/1.1: chunked body over the limit is 413" 0 "^413 .*limit is 65536 bytes" -- wire chunked_too_large
expect "http/1.1: a client still sending a refused body reads the 413" 0 "413 read after sending" -- wire refused_while_sending
expect "http/1.1: an idle keep-alive connection is closed" 0 "idle connection closed" -- wire idle
expect "http/1.0: a request sent with the client's FIN is answered" 0 "answered" -- wire half_close
expect "http/1.1: a client gone mid-request does not disturb the server" 0 "did not disturb" -- wire gone
expect "error bodies stay UTF-8 JSON when the request has bytes that are not UTF-8" 0 "are UTF-8 JSON" -- wire non_utf8
expect "  ... and is counted as CANCELLED" 0 'model_name="sleepy",API="predict",entrypoint="REST",status="CANCELLED"\} 1' -- \
  c "$U/monitoring/prometheus/metrics"

# ---- REST under mutual TLS
start_server mtls --ssl-config tls2/ssl.cfg || { finish; exit 1; }
M="curl -sS --max-time 20 --cacert tls2/ca_cert.pem --resolve localhost:$mtls_REST:127.0.0.1"
expect "REST over mTLS with a client certificate" 0 '"state":"AVAILABLE"' -- \
  $M --cert tls2/client/cert.pem --key tls2/client/key.pem "https://localhost:$mtls_REST/v1/models/adder"
check "REST over mTLS without a client certificate is refused" bash -c "! $M https://localhost:$mtls_REST/v1/models/adder"

# ---- bounded queue: 1 worker, 1 queued request; the third concurrent request is refused
start_server queue --ssl-config tls1/ssl.cfg --workers 1 --queue 1 || { finish; exit 1; }
Q="curl -sS --max-time 20 --cacert tls1/ca_cert.pem --resolve localhost:$queue_REST:127.0.0.1 -w \n%{http_code}\n"
QU=https://localhost:$queue_REST/v1/models/sleepy:predict
# gauge PORT NAME — a gauge from the server's metrics (cloister_serve_requests_inflight: queued or
# running; cloister_serve_requests_queued: waiting for a worker)
gauge() {
  curl -sS --max-time 5 --cacert tls1/ca_cert.pem --resolve "localhost:$1:127.0.0.1" \
    "https://localhost:$1/monitoring/prometheus/metrics" | sed -n "s/^$2 //p"
}
# wait_gauge PORT NAME N — until the gauge is N (at most 20 s)
wait_gauge() {
  local i
  for ((i = 0; i < 200; i++)); do [[ $(gauge "$1" "$2") == "$3" ]] && return 0; sleep 0.1; done
  echo "    $2 is $(gauge "$1" "$2"), want $3"
  return 1
}
wait_inflight() { wait_gauge "$1" cloister_serve_requests_inflight "$2"; }
# the first request is running before the second is sent, so the second is the queued one
$Q -d '{"instances": [4000]}' "$QU" >q1.out 2>&1 &
q1=$!
expect "one request running" 0 "" -- wait_inflight "$queue_REST" 1
$Q -d '{"instances": [3000]}' "$QU" >q2.out 2>&1 &
q2=$!
expect "one request queued behind it" 0 "" -- wait_gauge "$queue_REST" cloister_serve_requests_queued 1
expect "full queue answers 429" 0 'at capacity \(request queue full\).*429' -- bash -c "$Q -d '{\"instances\": [10]}' $QU | tr '\n' ' '"
expect "full queue answers UNAVAILABLE on gRPC" 3 "UNAVAILABLE: the server is at capacity" -- client "$queue_GRPC" tls1/ca_cert.pem - - sleepy 5
wait $q1 $q2
expect "the running request completed" 0 '^\{"predictions":\[4000\]\}' -- cat q1.out
expect "the queued request completed" 0 '^\{"predictions":\[3000\]\}' -- cat q2.out

# ---- SIGTERM with idle keep-alive connections: requests written onto them just after are answered
start_server idle --ssl-config tls1/ssl.cfg || { finish; exit 1; }
expect "requests written onto idle keep-alive connections just after SIGTERM are answered" 0 \
  "4 requests written after SIGTERM answered with Connection: close; the idle connection closed cleanly" -- \
  $PY "$WIRE" "$idle_REST" tls1/ca_cert.pem idle_at_stop "$idle_PID"
wait "$idle_PID"
check "  ... and the server exited 0" test $? -eq 0

# ---- graceful shutdown: SIGTERM while a request runs; it completes, then the server exits 0
start_server stop --ssl-config tls1/ssl.cfg --timeout-ms 5000 || { finish; exit 1; }
S="curl -sS --max-time 20 --cacert tls1/ca_cert.pem --resolve localhost:$stop_REST:127.0.0.1"
# and requests still arriving, REST and gRPC: their heads first, their bodies 2 s later (after the
# running one is done)
$PY "$WIRE" "$stop_REST" tls1/ca_cert.pem late_body late.marker >late.out 2>&1 &
late=$!
client "$stop_GRPC" tls1/ca_cert.pem - - late_grpc late-grpc.marker >late-grpc.out 2>&1 &
late_grpc=$!
for ((i = 0; i < 100; i++)); do [[ -e late.marker && -e late-grpc.marker ]] && break; sleep 0.1; done
$S -d '{"instances": [1000]}' "https://localhost:$stop_REST/v1/models/sleepy:predict" >s1.out 2>&1 &
s1=$!
check "request in flight before SIGTERM" wait_inflight "$stop_REST" 1
kill -TERM "$stop_PID"
wait $s1
check "request in flight at SIGTERM completed" grep -q '^{"predictions":\[1000\]}' s1.out
wait $late
expect "a REST request still arriving at SIGTERM is answered" 0 "answered after the server began to stop" -- cat late.out
wait $late_grpc
expect "a gRPC request still arriving at SIGTERM is answered" 0 "answered after GOAWAY: \[3\]" -- cat late-grpc.out
wait "$stop_PID"
stop_rc=$?
check "server exited 0 after draining" test "$stop_rc" -eq 0
check "server said it stopped cleanly" grep -q "stopped cleanly" stop.log
check "server logged the drain" grep -q "shutting down: no new connections; 1 request(s) in flight" stop.log
expect "no new connections after shutdown" 7 "" -- $S "https://localhost:$stop_REST/v1/models/sleepy"

stop_servers
finish
