#!/usr/bin/env bash
# bench/engine/run.sh — cloister's engine against ONNX Runtime (npm onnxruntime-node) on the same
# ResNet-50 ONNX file, same thread count, in the same run; prints batch-1 latency, batch-8
# throughput, load time, peak memory and the ratios (targets: throughput >= 1.05x ORT, batch-1
# latency <= 0.95x ORT). The two peers alternate ROUNDS times and each one's best value per metric
# counts, so a noisy neighbour on a shared machine hurts both alike. Not a test: nothing fails on speed.
#
# Usage: bench/engine/run.sh BUILD_DIR [THREADS] [ROUNDS]
#   The model is BUILD_DIR/models-full/resnet50.onnx; it is exported with Debian's torch/torchvision
#   (tests/models/make_fixtures.py --full --only resnet50) if missing. ORT is installed under bench/
#   with `npm install --ignore-scripts` if missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:?usage: run.sh BUILD_DIR [THREADS] [ROUNDS]}" && pwd)
threads=${2:-2}
rounds=${3:-3}
model=$build/models-full/resnet50.onnx
if [[ ! -f $model ]]; then
  echo "run.sh: exporting ResNet-50 to $model" >&2
  /usr/bin/python3 "$root/tests/models/make_fixtures.py" --full --only resnet50 --out "$build/models-full" >&2
fi
if [[ ! -d $root/bench/node_modules/onnxruntime-node ]]; then
  (cd "$root/bench" && npm install --ignore-scripts --no-audit --no-fund >&2)
fi
bench_bin=$build/bench/bench_engine
[[ -x $bench_bin ]] || { echo "run.sh: build bench_engine first (cmake --build $build --target bench_engine)" >&2; exit 1; }

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"; }
min() { awk -v a="$1" -v b="$2" 'BEGIN{print (b == "" || a + 0 < b + 0) ? a : b}'; }
max() { awk -v a="$1" -v b="$2" 'BEGIN{print (b == "" || a + 0 > b + 0) ? a : b}'; }
c_lat="" o_lat="" c_ips="" o_ips="" c_load="" o_load="" c_rss="" o_rss=""
for ((r = 1; r <= rounds; r++)); do
  c=$("$bench_bin" "$model" "$threads" 20 8 5)
  o=$(node "$here/ort_bench.js" "$model" "$threads" 20 8 5)
  echo "round $r cloister: $c"
  echo "round $r ort:      $o"
  c_lat=$(min "$(field b1_p50_ms "$c")" "$c_lat"); o_lat=$(min "$(field b1_p50_ms "$o")" "$o_lat")
  c_ips=$(max "$(field b8_ips "$c")" "$c_ips"); o_ips=$(max "$(field b8_ips "$o")" "$o_ips")
  c_load=$(min "$(field load_ms "$c")" "$c_load"); o_load=$(min "$(field load_ms "$o")" "$o_load")
  c_rss=$(max "$(field peak_rss_mb "$c")" "$c_rss"); o_rss=$(max "$(field peak_rss_mb "$o")" "$o_rss")
done
echo "resnet50 threads=$threads (best of $rounds alternating rounds per metric; peak RSS: largest)"
printf "  %-12s batch1_p50_ms=%-8s batch8_ips=%-7s load_ms=%-7s peak_rss_mb=%s\n" \
  cloister "$c_lat" "$c_ips" "$c_load" "$c_rss" onnxruntime "$o_lat" "$o_ips" "$o_load" "$o_rss"
awk -v cl="$c_lat" -v ol="$o_lat" -v ci="$c_ips" -v oi="$o_ips" 'BEGIN {
  printf "  latency ratio cloister/ort = %.3f (target <= 0.95)\n", cl / ol
  printf "  throughput ratio cloister/ort = %.3f (target >= 1.05)\n", ci / oi }'
