#!/usr/bin/env bash
# serve_rest.sh — the REST API end to end with curl over TLS and mutual TLS: model status, metadata,
# :predict in the row and columnar formats, {"error": ...} bodies with TF Serving's HTTP codes, the
# body size limit, a stalled client cut by the timeout, Prometheus metrics; the bounded worker queue
# (a full queue answers 429 on REST and UNAVAILABLE on gRPC) and graceful shutdown on SIGTERM (the
# request in flight completes).
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
expect "status of one version" 0 '"version":"1","state":"AVAILABLE"' -- c "$U/v1/models/affine/versions/1"
expect "status of a missing version is 404" 0 '^\{"error":"Could not find version 7 of model affine"\}$' -- c "$U/v1/models/affine/versions/7"
check "  ... with HTTP 404" bash -c "[[ \$(curl -s -o /dev/null -w '%{http_code}' --cacert tls1/ca_cert.pem --resolve localhost:$rest_REST:127.0.0.1 $U/v1/models/affine/versions/7) == 404 ]]"
expect "metadata" 0 '"signature_def":\{"signature_def":\{"serving_default":\{"inputs":\{"x":\{"dtype":"DT_FLOAT","tensor_shape":\{"dim":\[\{"size":"-1"' -- c "$U/v1/models/affine/metadata"
expect "predict, row format" 0 '^\{"predictions":\[\{"logits":\[3.5,2.25,1\],"probs":\[0.73067915[0-9]*,0.20934309[0-9]*,0.059977795[0-9]*\],"class":0\},\{"logits":\[0.5,0.25,0\]' -- \
  c -d '{"instances": [[1,2,3,4],[0,0,0,0]]}' "$U/v1/models/affine:predict"
expect "predict, row format with named inputs" 0 '^\{"predictions":\[3,-2\]\}' -- \
  c -d '{"instances": [{"a": 1, "b": 2}, {"a": -5, "b": 3}]}' "$U/v1/models/adder:predict"
expect "predict, columnar format, version 1" 0 '^\{"outputs":\[4,6\]\}' -- \
  c -d '{"inputs": {"a": [1, 2], "b": [3, 4]}}' "$U/v1/models/adder/versions/1:predict"
expect "malformed JSON is 400" 0 '^\{"error":"JSON Parse error.*\}\.400\.$' -- bash -c "$(declare -f c); U=$U rest_REST=$rest_REST; c -d '{\"inputs\": [1,' $U/v1/models/adder:predict | tr '\n' '.'"
expect "wrong dtype is 400" 0 'is DT_INT32: 1.5 is not an integer' -- c -d '{"inputs": {"a": [1.5], "b": [1]}}' "$U/v1/models/adder:predict"
expect "wrong shape is 400" 0 'the signature wants \[-1,4\].*400' -- bash -c "$(declare -f c); U=$U rest_REST=$rest_REST; c -d '{\"inputs\": [[1,2,3]]}' $U/v1/models/affine:predict | tr '\n' ' '"
expect "unknown model is 404" 0 'Servable not found for request: Latest\(nosuch\)' -- c -d '{"instances": [1]}' "$U/v1/models/nosuch:predict"
expect "labels are 501 with a reason" 0 'version labels are not supported' -- c "$U/v1/models/affine/labels/stable"
expect "wrong method is 405 with a JSON error" 0 '^\{"error":"Malformed request: use GET"\}.405.$' -- bash -c "$(declare -f c); U=$U rest_REST=$rest_REST; c -X DELETE $U/v1/models/affine | tr '\n' '.'"
expect "unknown path is 404" 0 'Malformed request' -- c "$U/v2/x"
head -c 70000 /dev/zero | tr '\0' ' ' >big.json
expect "oversized body is refused with 413" 0 "^413$" -- c -o /dev/null -H "Expect: 100-continue" -d @big.json "$U/v1/models/affine:predict"
expect "stalled HTTP client is cut" 0 "closed by the server" -- client "$rest_REST" tls1/ca_cert.pem - - stalled_http
expect "metrics count REST requests by model and status" 0 ':tensorflow:serving:request_count\{model_name="adder",API="predict",entrypoint="REST",status="OK"\} 2' -- \
  c "$U/monitoring/prometheus/metrics"
expect "metrics have latency histograms" 0 ':tensorflow:serving:request_latency_bucket\{API="predict",entrypoint="REST",le="\+Inf"\} [0-9]+' -- \
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
# inflight PORT — requests queued or running, from the server's metrics
inflight() {
  curl -sS --max-time 5 --cacert tls1/ca_cert.pem --resolve "localhost:$1:127.0.0.1" \
    "https://localhost:$1/monitoring/prometheus/metrics" | sed -n 's/^cloister_serve_requests_inflight //p'
}
# wait_inflight PORT N — until N requests are in the server (at most 10 s)
wait_inflight() {
  local i
  for ((i = 0; i < 100; i++)); do [[ $(inflight "$1") == "$2" ]] && return 0; sleep 0.1; done
  return 1
}
# The first request is in the server, and taken by the worker, before the second is sent: sent together,
# both can reach the queue before the worker wakes (seen under load), and the second is refused.
$Q -d '{"instances": [4000]}' "$QU" >q1.out 2>&1 &
q1=$!
check "one request in the server" wait_inflight "$queue_REST" 1
sleep 1 # for the worker to take it off the queue (this branch's metrics have no queued gauge)
$Q -d '{"instances": [3000]}' "$QU" >q2.out 2>&1 &
q2=$!
check "one request running, one queued" wait_inflight "$queue_REST" 2
expect "full queue answers 429" 0 'at capacity \(request queue full\).*429' -- bash -c "$Q -d '{\"instances\": [10]}' $QU | tr '\n' ' '"
expect "full queue answers UNAVAILABLE on gRPC" 3 "UNAVAILABLE: the server is at capacity" -- client "$queue_GRPC" tls1/ca_cert.pem - - sleepy 5
wait $q1 $q2
check "the running request completed" grep -q '^{"predictions":\[4000\]}' q1.out
check "the queued request completed" grep -q '^{"predictions":\[3000\]}' q2.out

# ---- graceful shutdown: SIGTERM while a request runs; it completes, then the server exits 0
start_server stop --ssl-config tls1/ssl.cfg --timeout-ms 5000 || { finish; exit 1; }
S="curl -sS --max-time 20 --cacert tls1/ca_cert.pem --resolve localhost:$stop_REST:127.0.0.1"
$S -d '{"instances": [1000]}' "https://localhost:$stop_REST/v1/models/sleepy:predict" >s1.out 2>&1 &
s1=$!
check "request in flight before SIGTERM" wait_inflight "$stop_REST" 1
kill -TERM "$stop_PID"
wait $s1
check "request in flight at SIGTERM completed" grep -q '^{"predictions":\[1000\]}' s1.out
wait "$stop_PID"
stop_rc=$?
check "server exited 0 after draining" test "$stop_rc" -eq 0
check "server said it stopped cleanly" grep -q "stopped cleanly" stop.log
check "server logged the drain" grep -q "shutting down: no new connections; 1 request(s) in flight" stop.log
expect "no new connections after shutdown" 7 "" -- $S "https://localhost:$stop_REST/v1/models/sleepy"

stop_servers
finish
