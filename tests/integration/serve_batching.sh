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

# ---- requests carrying encoded images (b64) are decoded by the worker, then batched like the rest;
# each caller's rows are exactly what it gets without batching, and a request whose image cannot be
# decoded gets its own error while the others run
SAMPLES=$(readlink -f "$(dirname "$0")/../../models/digits/samples")
b64() { base64 -w0 "$SAMPLES/$1"; }
img_body() { # img_body FILE... : a row-format request with the files as encoded images
  local sep="" f
  printf '{"instances": ['
  for f in "$@"; do printf '%s{"b64": "%s"}' "$sep" "$(b64 "$f")"; sep=", "; done
  printf ']}'
}
img_body digit-0-0.png >i1.json
img_body digit-3-0.png digit-5-0.png >i2.json
img_body digit-7-0.png >i3.json
printf '{"instances": [{"b64": "aGVsbG8="}]}' >ibad.json
vpost() { # vpost PORT BODY_FILE OUT
  curl -sS --max-time 30 --cacert tls1/ca_cert.pem --resolve "localhost:$1:127.0.0.1" \
    -d @"$2" "https://localhost:$1/v1/models/vision:predict" >"$3" 2>&1 &
  POSTS+=($!)
}
start_server ref --ssl-config tls1/ssl.cfg || { finish; exit 1; }
for i in 1 2 3; do vpost "$ref_REST" "i$i.json" "ref$i.out"; done
vpost "$ref_REST" ibad.json refbad.out
wait_posts
expect "the reference answers (no batching) are predictions" 0 '^\{"predictions":\[\[' -- cat ref2.out
expect "  ... that differ from image to image (so comparing them means something)" 1 "" -- cmp -s ref1.out ref3.out
start_server img --ssl-config tls1/ssl.cfg --workers 1 --max-batch 4 --batch-timeout-us 10000000 || { finish; exit 1; }
vpost "$img_REST" i1.json img1.out
expect "an image request opens a batch" 0 "" -- wait_metric "$img_REST" cloister_serve_requests_inflight 1
vpost "$img_REST" i2.json img2.out
expect "a request with two images joins it" 0 "" -- wait_metric "$img_REST" cloister_serve_requests_inflight 2
vpost "$img_REST" i3.json img3.out
wait_posts
for i in 1 2 3; do
  expect "image request $i got exactly its own rows" 0 "" -- cmp "ref$i.out" "img$i.out"
done
expect "the four images ran as one model call" 0 '^1$' -- metric "$img_REST" 'cloister_serve_batch_size_bucket{le="4"}'
expect "  ... and no smaller one" 0 '^0$' -- metric "$img_REST" 'cloister_serve_batch_size_bucket{le="2"}'
vpost "$img_REST" i1.json bad1.out
expect "another batch opens" 0 "" -- wait_metric "$img_REST" cloister_serve_requests_inflight 1
vpost "$img_REST" ibad.json bad2.out
expect "a request with an undecodable image joins it" 0 "" -- wait_metric "$img_REST" cloister_serve_requests_inflight 2
vpost "$img_REST" i2.json bad3.out
wait_posts
expect "the undecodable image gets its own error" 0 'not a JPEG or PNG image' -- cat bad2.out
expect "  ... the same error as without batching" 0 "" -- cmp refbad.out bad2.out
expect "the requests batched with it are answered" 0 "" -- cmp ref1.out bad1.out
expect "  ... both of them" 0 "" -- cmp ref2.out bad3.out
expect "they ran as one model call of three rows" 0 '^2$' -- metric "$img_REST" 'cloister_serve_batch_size_bucket{le="4"}'

# ---- larger than the batch limit: runs alone, whole
start_server big --ssl-config tls1/ssl.cfg --workers 1 --max-batch 2 --batch-timeout-us 10000000 || { finish; exit 1; }
expect "a request above max batch size runs alone" 0 '^\{"predictions":\[1,2,3,4,5\]\}$' -- \
  curl -sS --max-time 5 --cacert tls1/ca_cert.pem --resolve "localhost:$big_REST:127.0.0.1" \
  -d '{"instances": [1, 2, 3, 4, 5]}' "https://localhost:$big_REST/v1/models/sleepy:predict"
expect "  ... as one model call of five rows" 0 '^1$' -- metric "$big_REST" 'cloister_serve_batch_size_bucket{le="8"}'

stop_servers
finish
