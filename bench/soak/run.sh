#!/usr/bin/env bash
# bench/soak/run.sh — the soak: the whole confidential flow under mixed load for a set time, against
# the sanitizer build by default (`make soak`). A key server releases two model keys to an attested
# `cloister serve` (sim evidence, mutual TLS) that serves the sealed digits model and the sealed reduced
# ResNet-18 fixture; four `cloister bench` streams (gRPC and REST, images and random tensors, new
# connections every round) run until the time is up while the server's RSS, open file descriptors and
# threads are sampled every second. Then SIGTERM: the server must exit 0 within 30 s and no sanitizer
# report may appear in any log. Prints requests and errors by status per stream, the curves' figures
# (RSS growth from 20 % of the run to its end), and writes samples.csv, streams.txt, report.txt,
# soak.json (the figures, for the benchmark report: bench/report/make_report.py) and soak.png (RSS,
# fds, threads over time; python3-matplotlib) into the output directory.
#
# Usage: bench/soak/run.sh [BUILD_DIR] [SECONDS]     (defaults: build-asan, $SOAK_SECONDS or 600)
#   SOAK_OUT=DIR  where the report goes (default BUILD_DIR/soak)
# Not a test: it reports, and exits 1 only when the server crashed, a sanitizer spoke, or the stop failed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:-$root/build-asan}" && pwd)
seconds=${2:-${SOAK_SECONDS:-600}}
cloister=$build/cloister
[[ -x $cloister ]] || { echo "run.sh: no $cloister (build it first; make soak does)" >&2; exit 1; }
out=${SOAK_OUT:-$build/soak}
rm -rf "$out" && mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/cloister-soak-XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
export CLOISTER_LOG=warn
# the sanitizer build: keep going after a report is impossible (ASan aborts); reports go to the logs
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # wait_for LOG REGEX PID -> first match group
  for _ in $(seq 600); do
    local m
    m=$(sed -n -E "s/.*$2.*/\1/p" "$1" | head -1)
    [[ -n $m ]] && { echo "$m"; return 0; }
    kill -0 "$3" 2>/dev/null || { echo "run.sh: process exited; its log:" >&2; cat "$1" >&2; return 1; }
    sleep 0.1
  done
  echo "run.sh: timed out waiting for /$2/ in $1" >&2
  return 1
}

echo "soak: $seconds s against $cloister; report in $out" >&2
# the model owner: keys, TLS, two sealed models, the key server with a policy naming this build
"$cloister" tls init --dir tls --server-name localhost --san 127.0.0.1 --client-name soak-client >/dev/null 2>&1
"$cloister" keygen --out digits.key >/dev/null 2>&1
"$cloister" keygen --out r18.key >/dev/null 2>&1
mkdir -p models/digits/1 models/r18/1 owner
"$cloister" seal --key digits.key --key-id digits-key --in "$root/models/digits/1/model.onnx" \
  --out models/digits/1/model.onnx.sealed >/dev/null 2>&1
cp "$root/models/digits/1/preprocess.json" models/digits/1/
"$cloister" seal --key r18.key --key-id r18-key --in "$root/tests/models/fixtures/resnet18_small.onnx" \
  --out models/r18/1/model.onnx.sealed >/dev/null 2>&1
cat >models.cfg <<CFG
model_config_list {
  config { name: "digits" base_path: "$work/models/digits" model_platform: "onnx" }
  config { name: "r18" base_path: "$work/models/r18" model_platform: "onnx" }
}
CFG
"$cloister" attest sim-init --dir sim >/dev/null 2>&1
"$cloister" keygen --out owner/master.key >/dev/null 2>&1
for k in digits r18; do
  "$cloister" keyserver secret put --db ks.db --master-key owner/master.key --name "$k-key" --file "$k.key" >/dev/null 2>&1
done
"$cloister" attest measure --name model-server 2>/dev/null >identity.json
/usr/bin/python3 - <<'PY'
import json
ident = json.load(open("identity.json"))
ident["secrets"] = ["digits-key", "r18-key"]
json.dump({"version": 1, "identities": [ident]}, open("policy.json", "w"))
PY
CLOISTER_LOG=info "$cloister" keyserver serve --listen 127.0.0.1:0 --cert tls/server/cert.pem --key tls/server/key.pem \
  --policy policy.json --db ks.db --master-key owner/master.key --trust-sim sim/sim_qe_cert.pem 2>keyserver.log &
ks=$!
pids+=("$ks")
ks_port=$(wait_for keyserver.log 'listening on port ([0-9]+)' "$ks")

grpc=$(free_port)
rest=$(free_port)
CLOISTER_LOG=info OMP_WAIT_POLICY=passive "$cloister" serve --host 127.0.0.1 --port "$grpc" --rest_api_port "$rest" \
  --ssl_config_file tls/ssl.cfg --model_config_file models.cfg --keyserver "127.0.0.1:$ks_port" \
  --keyserver-ca tls/ca_cert.pem --evidence sim --sim-key sim/sim_qe_key.pem --engine-threads 1 \
  --file_system_poll_wait_seconds 1 2>server.log &
srv=$!
pids+=("$srv")
wait_for server.log '(serving): gRPC' "$srv" >/dev/null
mtls=(--ca tls/ca_cert.pem --cert tls/client/cert.pem --key tls/client/key.pem)
png=$root/models/digits/samples/digit-3-0.png

# samples: seconds since start, RSS KiB, open fds, threads
(
  t0=$(date +%s.%N)
  echo "t,rss_kb,fds,threads" >"$out/samples.csv"
  while kill -0 "$srv" 2>/dev/null; do
    rss=$(awk '/^VmRSS:/{print $2}' "/proc/$srv/status" 2>/dev/null || echo "")
    thr=$(awk '/^Threads:/{print $2}' "/proc/$srv/status" 2>/dev/null || echo "")
    fds=$(ls "/proc/$srv/fd" 2>/dev/null | wc -l)
    [[ -n $rss ]] && echo "$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN{printf "%.1f", a - b}'),$rss,$fds,$thr" >>"$out/samples.csv"
    sleep 1
  done
) &
sampler=$!
pids+=("$sampler")

# stream NAME BENCH-ARGS... — rounds of cloister bench until the time is up; each round's summary
# lines go to NAME.log
end=$(($(date +%s) + seconds))
stream() {
  local name=$1
  shift
  while (($(date +%s) < end)); do
    echo "== round" >>"$name.log"
    "$cloister" bench --server "localhost:$@" "${mtls[@]}" --warmup 1 >>"$name.log" 2>&1 || true
  done
}
stream grpc-digits "$grpc" --model digits --image "$png" --batch 4 --concurrency 2 --requests 400 &
pids+=($!)
stream rest-digits "$rest" --rest --model digits --image "$png" --batch 4 --concurrency 2 --requests 400 &
pids+=($!)
stream grpc-r18 "$grpc" --model r18 --random --batch 2 --concurrency 1 --requests 40 &
pids+=($!)
stream rest-r18 "$rest" --rest --model r18 --random --batch 2 --concurrency 1 --requests 40 &
pids+=($!)
wait "${pids[@]: -4}"

# the stop
t0=$(date +%s.%N)
kill -TERM "$srv"
set +e
wait "$srv"
rc=$?
set -e
stop_s=$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN{printf "%.2f", a - b}')
kill "$ks" 2>/dev/null || true
wait "$ks" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
cp server.log keyserver.log "$out/"
for s in grpc-digits rest-digits grpc-r18 rest-r18; do cp "$s.log" "$out/"; done
sanitizer=$(grep -lE "AddressSanitizer|LeakSanitizer|runtime error:" ./*.log 2>/dev/null | sort -u | tr '\n' ' ' || true)
/usr/bin/python3 "$here/report.py" "$out" "$seconds" "$rc" "$stop_s" "${sanitizer:-none}" "$build" | tee "$out/report.txt"
[[ $rc -eq 0 && -z $sanitizer ]]
