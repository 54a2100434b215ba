#!/usr/bin/env bash
# serve_batching.sh — dynamic batching in the worker pool, observed from outside: concurrent REST
# requests for one model are run as one model call (the test model echoes its input, so every
# caller must get back exactly its own rows), the batch sizes show in the metrics histogram, a
# worker waiting for a batch to fill takes requests that arrive meanwhile and runs as soon as the
# batch is full, and a request larger than the batch limit runs alone.
# Usage: serve_batching.sh CLOISTER SERVE_TESTD PROTO_DIR
source "$(dirname "$0")/lib.sh"
TESTD=$(readlink -f "$2")
PROTO=$(readlink -f "$3")
source "$(dirname "$0")/serve_lib.sh"

check "tls material" make_tls

# metric PORT NAME — one sample of the server's metrics (NAME may include labels)
metric() {
  curl -sS --max-time 5 --cacert tls1/ca_cert.pem --resolve "localhost:$1:127.0.0.1" \
    "https://localhost:$1/monitoring/prometheus/metrics" | grep -F "$2 " | grep -v '^#' | sed 's/.* //'
}
# wait_metric PORT NAME N — until the sample is N (at most 20 s)
wait_metric() {
  local i
  for ((i = 0; i < 200; i++)); do [[ $(metric "$1" "$2") == "$3" ]] && return 0; sleep 0.1; done
  echo "$2 is $(metric "$1" "$2"), want $3"
  return 1
}
# post PORT BODY OUT — a :predict to the echoing model in the background
post() {
  curl -sS --max-time 30 --cacert tls1/ca_cert.pem --resolve "localhost:$1:127.0.0.1" \
    -d "$2" "https://localhost:$1/v1/models/sleepy:predict" >"$3" 2>&1 &
  POSTS+=($!)
}
POSTS=()
# wait_posts — until every request sent with post has its answer
wait_posts() {
  wait "${POSTS[@]}"
  POSTS=()
}

# ---- requests queued behind a busy worker are run together
start_server q --ssl-config tls1/ssl.cfg --workers 1 --queue 8 --max-batch 8 || { finish; exit 1; }
expect "the metrics have a batch size histogram" 0 "" -- wait_metric "$q_REST" cloister_serve_batch_size_count 0
post "$q_REST" '{"instances": [1500]}' a.out
expect "a request keeps the only worker busy" 0 "" -- wait_metric "$q_REST" cloister_serve_requests_inflight 1
post "$q_REST" '{"instances": [2, 3]}' b.out
post "$q_REST" '{"instances": [4]}' c.out
post "$q_REST" '{"instances": [5, 6, 7]}' d.out
expect "three requests queued behind it" 0 "" -- wait_metric "$q_REST" cloister_serve_requests_queued 3
wait_posts
expect "the first request got its answer" 0 '^\{"predictions":\[1500\]\}$' -- cat a.out
expect "batched request 1 got exactly its rows" 0 '^\{"predictions":\[2,3\]\}$' -- cat b.out
expect "batched request 2 got exactly its rows" 0 '^\{"predictions":\[4\]\}$' -- cat c.out
expect "batched request 3 got exactly its rows" 0 '^\{"predictions":\[5,6,7\]\}$' -- cat d.out
expect "two model calls ran" 0 '^2$' -- metric "$q_REST" cloister_serve_batch_size_count
expect "one of one row" 0 '^1$' -- metric "$q_REST" 'cloister_serve_batch_size_bucket{le="1"}'
expect "the other of six rows" 0 '^2$' -- metric "$q_REST" 'cloister_serve_batch_size_bucket{le="8"}'
expect "  ... (none of 2 or 4 rows)" 0 '^1$' -- metric "$q_REST" 'cloister_serve_batch_size_bucket{le="4"}'
expect "rows counted" 0 '^7$' -- metric "$q_REST" cloister_serve_batch_size_sum

# ---- a worker waits for the batch to fill; the batch runs as soon as it is full
start_server t --ssl-config tls1/ssl.cfg --workers 1 --max-batch 4 --batch-timeout-us 10000000 || { finish; exit 1; }
post "$t_REST" '{"instances": [11]}' e.out
expect "the worker is waiting for more" 0 "" -- wait_metric "$t_REST" cloister_serve_requests_inflight 1
post "$t_REST" '{"instances": [12]}' f.out
expect "a second request joined the open batch" 0 "" -- wait_metric "$t_REST" cloister_serve_requests_inflight 2
expect "  ... and is not queued" 0 '^0$' -- metric "$t_REST" cloister_serve_requests_queued
start=$SECONDS
post "$t_REST" '{"instances": [13, 14]}' g.out
wait_posts
expect "the full batch ran without waiting out the 10 s timeout" 0 "" -- test $((SECONDS - start)) -lt 8
expect "waiting request 1 got its row" 0 '^\{"predictions":\[11\]\}$' -- cat e.out
expect "waiting request 2 got its row" 0 '^\{"predictions":\[12\]\}$' -- cat f.out
expect "the request that filled the batch got its rows" 0 '^\{"predictions":\[13,14\]\}$' -- cat g.out
expect "one model call of four rows" 0 '^1$' -- metric "$t_REST" 'cloister_serve_batch_size_bucket{le="4"}'
expect "  ... and no other" 0 '^0$' -- metric "$t_REST" 'cloister_serve_batch_size_bucket{le="2"}'

# ---- larger than the batch limit: runs alone, whole
start_server big --ssl-config tls1/ssl.cfg --workers 1 --max-batch 2 --batch-timeout-us 10000000 || { finish; exit 1; }
expect "a request above max batch size runs alone" 0 '^\{"predictions":\[1,2,3,4,5\]\}$' -- \
  curl -sS --max-time 5 --cacert tls1/ca_cert.pem --resolve "localhost:$big_REST:127.0.0.1" \
  -d '{"instances": [1, 2, 3, 4, 5]}' "https://localhost:$big_REST/v1/models/sleepy:predict"
expect "  ... as one model call of five rows" 0 '^1$' -- metric "$big_REST" 'cloister_serve_batch_size_bucket{le="8"}'

stop_servers
finish
