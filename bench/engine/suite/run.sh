#!/usr/bin/env bash
# bench/engine/suite/run.sh — the engine suite: every model of bench/engine/suite/export.py,
# each run by cloister (bench/engine/bench_engine) and by ONNX Runtime (bench/engine/ort_bench.js, npm
# onnxruntime-node) on the same ONNX file with the same thread count, in one run, the two peers
# alternating per round (odd rounds cloister first, even rounds ONNX Runtime first) so a noisy
# neighbour hurts both alike. Per model: the max error vs PyTorch relative to the output range (both
# peers, first round, on the exported batch-2 input), batch-1 p50 latency, batch-8 throughput, load time,
# peak RSS, the ratios cloister/ORT, and at the end the geometric mean of each ratio over the models
# that have it. A model cloister (or ORT) cannot load is listed with the error and left out of the
# geometric means (the table says so). The table goes to stdout and to BUILD/suite-table.md; with
# $CLOISTER_BENCH_OUT set, the figures also go to engine-suite.jsonl there (bench/lib.sh's records).
# Not a test: nothing fails on speed or accuracy (`make check-models` checks accuracy).
#
# Usage: bench/engine/suite/run.sh BUILD_DIR [THREADS] [ROUNDS]      (defaults: 2 threads, 2 rounds)
#   SUITE_MODELS="resnet50 bert_encoder"  a subset (default: the whole suite, export.py --list)
#   SUITE_MODELS_DIR=DIR   read NAME.onnx/.input.npy/.output.npy from DIR where present (read-only);
#                          missing ones are exported into BUILD_DIR/models-suite (export.py, Debian torch)
#   SUITE_BUDGET=10        seconds of timed runs per phase and peer before it stops early (at least 1 run)
#   SUITE_SKIP_BATCH_OVER=10  no batch-8 phase for a peer whose batch-1 run took longer (seconds)
#   SUITE_B1_RUNS=20 SUITE_B8_RUNS=5
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
build=$(cd "${1:?usage: run.sh BUILD_DIR [THREADS] [ROUNDS]}" && pwd)
threads=${2:-2}
rounds=${3:-2}
models=${SUITE_MODELS:-$(/usr/bin/python3 "$here/export.py" --list)}
src_dir=${SUITE_MODELS_DIR:-}
own_dir=$build/models-suite
budget=${SUITE_BUDGET:-10}
skip_over=${SUITE_SKIP_BATCH_OVER:-10}
b1_runs=${SUITE_B1_RUNS:-20}
b8_runs=${SUITE_B8_RUNS:-5}
source "$root/bench/lib.sh"
bench_workdir engine-suite

# where each model's files are: SUITE_MODELS_DIR when it has them, else exported into BUILD/models-suite
declare -A dir_of
for name in $models; do
  if [[ -n $src_dir && -f $src_dir/$name.onnx && -f $src_dir/$name.output.npy ]]; then
    dir_of[$name]=$src_dir
  else
    if [[ ! -f $own_dir/$name.onnx || ! -f $own_dir/$name.output.npy ]]; then
      echo "suite: exporting $name into $own_dir" >&2
      nice /usr/bin/python3 "$here/export.py" --out "$own_dir" --only "$name" >&2
    fi
    dir_of[$name]=$own_dir
  fi
done
if [[ ! -d $root/bench/node_modules/onnxruntime-node ]]; then
  (cd "$root/bench" && npm install --ignore-scripts --no-audit --no-fund >&2)
fi
bench_bin=$build/bench/bench_engine
[[ -x $bench_bin ]] || { echo "suite: build bench_engine first (cmake --build $build --target bench_engine)" >&2; exit 1; }
ort_version=$(sed -n -E 's/^ *"version": *"([^"]+)".*/\1/p' "$root/bench/node_modules/onnxruntime-node/package.json" | head -1)
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx|avx2|fma|avx512f|avx512bw|avx512vl|avx512_vnni|avx512_bf16|avx512_fp16|amx_tile|amx_bf16)$' | tr '\n' ' ' | sed 's/ $//')
cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')

raw=$work/raw.tsv
: >"$raw"
# one peer, one round: its output line (or its error) as a row of raw.tsv
run_peer() {
  local name=$1 peer=$2 round=$3 model=${dir_of[$1]}/$1.onnx out rc=0 ref=()
  ((round == 1)) && ref=(--ref "${dir_of[$name]}/$name.input.npy" "${dir_of[$name]}/$name.output.npy")
  local args=("$model" "$threads" "$b1_runs" 8 "$b8_runs" --budget "$budget" --skip-batch-over "$skip_over" "${ref[@]}")
  if [[ $peer == cloister ]]; then
    out=$(nice "$bench_bin" "${args[@]}" 2>"$work/stderr") || rc=$?
  else
    out=$(nice node "$here/../ort_bench.js" "${args[@]}" 2>"$work/stderr") || rc=$?
  fi
  local errtail
  errtail=$( (grep -v "^ *$" "$work/stderr" || true) | tail -2 | tr "\t\n" "  " | cut -c1-400)
  printf 'round %d %-8s %s%s\n' "$round" "$peer:" "$out" "${errtail:+ (stderr: $errtail)}"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$peer" "$round" "$rc" "$(tr '\t\n' '  ' <<<"$out")" "$errtail" >>"$raw"
}

echo "suite: $threads threads, $rounds rounds, models: $(echo $models)"
echo "suite: CPU $cpu; flags: $flags; load average $(cut -d' ' -f1-3 /proc/loadavg); onnxruntime-node ${ort_version:-?}"
for name in $models; do
  echo "== $name (${dir_of[$name]}/$name.onnx)"
  cl_failed=0 ort_failed=0
  for ((r = 1; r <= rounds; r++)); do
    if ((r % 2)); then order=(cloister ort); else order=(ort cloister); fi
    for peer in "${order[@]}"; do
      # a peer that cannot load the model is not retried in later rounds
      if [[ $peer == cloister ]] && ((cl_failed)); then continue; fi
      if [[ $peer == ort ]] && ((ort_failed)); then continue; fi
      run_peer "$name" "$peer" "$r"
      if [[ $(tail -1 "$raw" | cut -f4) != 0 ]]; then
        [[ $peer == cloister ]] && cl_failed=1 || ort_failed=1
      fi
    done
  done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
/usr/bin/python3 "$here/table.py" "$raw" --threads "$threads" --rounds "$rounds" --ort "${ort_version:-?}" \
  --cpu "$cpu" --flags "$flags" --load "$load_end" --budget "$budget" --skip-over "$skip_over" \
  --models "$(echo $models)" --out "$build/suite-table.md"
