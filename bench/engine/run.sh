#!/usr/bin/env bash
# bench/engine/run.sh — cloister's engine against ONNX Runtime (npm onnxruntime-node) on the same
# ONNX file, same thread count, in the same run; prints batch-1 latency, batch-8 throughput, load
# time, peak memory and the ratios per model (targets, set for ResNet-50: throughput >=
# 1.05x ORT, batch-1 latency <= 0.95x ORT). The two peers alternate ROUNDS times and each one's best
# value per metric counts, so a noisy neighbour on a shared machine hurts both alike. Not a test:
# nothing fails on speed.
#
# Usage: bench/engine/run.sh BUILD_DIR [THREADS] [ROUNDS]
#   ENGINE_MODELS="resnet50 mobilenet_v2 ..." the torchvision models to run (default resnet50), each
#   BUILD_DIR/models-full/NAME.onnx; exported with Debian's torch/torchvision
#   (tests/models/make_fixtures.py --full --only NAME) if missing. ORT is installed under bench/ with
#   `npm install --ignore-scripts` if missing. With $CLOISTER_BENCH_OUT set, the figures also go to
#   engine.jsonl there (bench/lib.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:?usage: run.sh BUILD_DIR [THREADS] [ROUNDS]}" && pwd)
threads=${2:-2}
rounds=${3:-3}
models=${ENGINE_MODELS:-resnet50}
source "$root/bench/lib.sh"
for name in $models; do
  if [[ ! -f $build/models-full/$name.onnx ]]; then
    echo "run.sh: exporting $name to $build/models-full/$name.onnx" >&2
    /usr/bin/python3 "$root/tests/models/make_fixtures.py" --full --only "$name" --out "$build/models-full" >&2
  fi
done
if [[ ! -d $root/bench/node_modules/onnxruntime-node ]]; then
  (cd "$root/bench" && npm install --ignore-scripts --no-audit --no-fund >&2)
fi
bench_bin=$build/bench/bench_engine
[[ -x $bench_bin ]] || { echo "run.sh: build bench_engine first (cmake --build $build --target bench_engine)" >&2; exit 1; }

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"; }
min() { awk -v a="$1" -v b="$2" 'BEGIN{print (b == "" || a + 0 < b + 0) ? a : b}'; }
max() { awk -v a="$1" -v b="$2" 'BEGIN{print (b == "" || a + 0 > b + 0) ? a : b}'; }
ort_version=$(sed -n -E 's/^ *"version": *"([^"]+)".*/\1/p' "$root/bench/node_modules/onnxruntime-node/package.json" | head -1)
bench_emit engine kind=config text="$threads threads, best of $rounds alternating rounds per metric (peak RSS: largest); batch 1: 20 runs (p50), batch 8: 5 runs (median); random weights; peer: onnxruntime-node ${ort_version:-?}"

# one model: ROUNDS alternating rounds of both, then the best figures and the ratios
bench_model() {
  local name=$1 model=$build/models-full/$1.onnx r c o
  local c_lat="" o_lat="" c_ips="" o_ips="" c_load="" o_load="" c_rss="" o_rss=""
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
  echo "$name threads=$threads (best of $rounds alternating rounds per metric; peak RSS: largest)"
  printf "  %-12s batch1_p50_ms=%-8s batch8_ips=%-7s load_ms=%-7s peak_rss_mb=%s\n" \
    cloister "$c_lat" "$c_ips" "$c_load" "$c_rss" onnxruntime "$o_lat" "$o_ips" "$o_load" "$o_rss"
  local lat_ratio ips_ratio goal_lat=() goal_ips=()
  lat_ratio=$(awk -v c="$c_lat" -v o="$o_lat" 'BEGIN{printf "%.3f", c / o}')
  ips_ratio=$(awk -v c="$c_ips" -v o="$o_ips" 'BEGIN{printf "%.3f", c / o}')
  if [[ $name == resnet50 ]]; then
    printf "  latency ratio cloister/ort = %s (target <= 0.95)\n" "$lat_ratio"
    printf "  throughput ratio cloister/ort = %s (target >= 1.05)\n" "$ips_ratio"
    goal_lat=(goal="<= 0.95") goal_ips=(goal=">= 1.05")
  else
    printf "  latency ratio cloister/ort = %s, throughput ratio cloister/ort = %s (targets are set for resnet50)\n" \
      "$lat_ratio" "$ips_ratio"
  fi
  local peer=(peer="ONNX Runtime ${ort_version:-} (onnxruntime-node)" ratio_of=cloister/ort)
  bench_emit engine metric="batch-1 p50 latency" model="$name" value:="$c_lat" unit=ms better=lower "${peer[@]}" \
    peer_value:="$o_lat" ratio:="$lat_ratio" "${goal_lat[@]}"
  bench_emit engine metric="batch-8 throughput" model="$name" value:="$c_ips" unit=img/s "${peer[@]}" \
    peer_value:="$o_ips" ratio:="$ips_ratio" "${goal_ips[@]}"
  bench_emit engine metric="load time" model="$name" value:="$c_load" unit=ms better=lower "${peer[@]}" \
    peer_value:="$o_load" ratio:="$(awk -v c="$c_load" -v o="$o_load" 'BEGIN{printf "%.3f", c / o}')"
  bench_emit engine metric="peak RSS" model="$name" value:="$c_rss" unit=MB better=lower "${peer[@]}" \
    peer_value:="$o_rss" ratio:="$(awk -v c="$c_rss" -v o="$o_rss" 'BEGIN{printf "%.3f", c / o}')"
}
for name in $models; do
  bench_model "$name"
done
