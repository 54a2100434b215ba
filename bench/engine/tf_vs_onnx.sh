#!/usr/bin/env bash
# bench/engine/tf_vs_onnx.sh — the TensorFlow importer's cost: the same network (torchvision's
# ResNet-50 v1.5, MobileNet v2, seeded weights) as a frozen GraphDef (NHWC, written by
# tests/integration/tf_cnn.py, which first checks it gives PyTorch's answers) and as PyTorch's ONNX
# export, each run by `cloister run --repeat` at 224x224, batch 2, in alternating rounds (each peer's
# best p50 counts, so a noisy neighbour hurts both alike). Prints both latencies and the ratio
# GraphDef / ONNX; the goal is <= 1.05. Not a test: nothing fails on speed.
# Usage: bench/engine/tf_vs_onnx.sh BUILD_DIR [ROUNDS] [THREADS]   (TF_BENCH_MODELS="resnet50 mobilenet_v2")
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:?usage: tf_vs_onnx.sh BUILD_DIR [ROUNDS] [THREADS]}" && pwd)
rounds=${2:-3}
threads=${3:-2}
models=${TF_BENCH_MODELS:-resnet50 mobilenet_v2}
dir=$build/tf-vs-onnx
cloister=$build/cloister
only=()
for m in $models; do only+=(--only "$m"); done
echo "== exporting and checking against PyTorch (tests/integration/tf_cnn.py --size 224 --keep)"
/usr/bin/python3 "$root/tests/integration/tf_cnn.py" "$cloister" "$root" "$dir" --size 224 --keep "${only[@]}"
p50() { # p50 MODEL INPUT: the p50 of 20 timed runs after 3 warm-ups
  "$cloister" run --model "$1" --input "input=$2" --threads "$threads" --repeat 20 --warmup 3 2>&1 |
    sed -n 's/.*p50_ms=\([0-9.]*\).*/\1/p' | tail -1
}
min() { awk -v a="$1" -v b="$2" 'BEGIN{print (b == "" || a + 0 < b + 0) ? a : b}'; }
printf '%-14s %12s %12s %8s\n' model graphdef_ms onnx_ms ratio
for m in $models; do
  best_tf="" best_onnx=""
  for ((r = 0; r < rounds; r++)); do
    best_tf=$(min "$(p50 "$dir/$m.pb" "$dir/$m.input.npy")" "$best_tf")
    best_onnx=$(min "$(p50 "$dir/$m.onnx" "$dir/$m.input_nchw.npy")" "$best_onnx")
  done
  ratio=$(awk -v a="$best_tf" -v b="$best_onnx" 'BEGIN{printf "%.3f", a / b}')
  printf '%-14s %12s %12s %8s\n' "$m" "$best_tf" "$best_onnx" "${ratio}x"
done
echo "goal: GraphDef <= 1.05x the ONNX export of the same network ($threads threads, best of $rounds rounds)"
