#!/usr/bin/env bash
# bench/engine/contention.sh — how the engine's OpenMP threads behave when the cores are not all its own:
# a small model's batch-1 latency alone, and with BUSY other processes each spinning on a core
# (plain shell loops at the script's own niceness), for each OpenMP wait policy: libgomp's default
# (OMP_WAIT_POLICY unset: a thread that finished its part spins a while before it sleeps), passive
# (sleeps at once; what `cloister serve` sets by default, src/cli/main.c) and active (keeps spinning).
# Prints alone / contended / ratio per policy (goal: contended <= 2x alone) and passive's cost on the
# uncontended case (passive alone / default alone). Rounds alternate the policies so a noisy neighbour
# hurts them alike; the best p50 of the rounds counts. Not a test: nothing fails on speed.
#
# Usage: bench/engine/contention.sh BUILD_DIR [MODEL.onnx] [THREADS] [ROUNDS]
#   MODEL defaults to /work/suite-models/mobilenet_v3_large.onnx if present, else the committed fixture
#   tests/models/fixtures/mobilenet_v2_small.onnx; THREADS 2; ROUNDS 2; BUSY (env) 2; RUNS (env) 20.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:?usage: contention.sh BUILD_DIR [MODEL.onnx] [THREADS] [ROUNDS]}" && pwd)
model=${2:-}
if [[ -z $model ]]; then
  model=/work/suite-models/mobilenet_v3_large.onnx
  [[ -f $model ]] || model=$root/tests/models/fixtures/mobilenet_v2_small.onnx
fi
threads=${3:-2}
rounds=${4:-2}
busy=${BUSY:-2}
runs=${RUNS:-20}
bench_bin=$build/bench/bench_engine
[[ -x $bench_bin ]] || { echo "contention.sh: build bench_engine first (cmake --build $build --target bench_engine)" >&2; exit 1; }
source "$root/bench/lib.sh"
bench_workdir contention

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"; }
min() { awk -v a="$1" -v b="$2" 'BEGIN{print (b == "" || a + 0 < b + 0) ? a : b}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", (b > 0) ? a / b : 0}'; }

# one measurement: batch-1 p50 in ms with policy $1 ("default" = unset)
measure() {
  local out
  if [[ $1 == default ]]; then
    out=$(env -u OMP_WAIT_POLICY "$bench_bin" "$model" "$threads" "$runs" 1 1 --skip-batch-over 0)
  else
    out=$(OMP_WAIT_POLICY=$1 "$bench_bin" "$model" "$threads" "$runs" 1 1 --skip-batch-over 0)
  fi
  field b1_p50_ms "$out"
}

busy_start() {
  local i
  for ((i = 0; i < busy; i++)); do
    sh -c 'while :; do :; done' &
    pids+=($!)
  done
}

busy_stop() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  pids=()
}

policies=(default passive active)
declare -A alone contended
echo "model $(basename "$model"), $threads threads, $busy busy processes, best p50 of $rounds rounds of $runs batch-1 runs"
for ((r = 1; r <= rounds; r++)); do
  for p in "${policies[@]}"; do
    a=$(measure "$p")
    busy_start
    c=$(measure "$p")
    busy_stop
    echo "round $r $p: alone ${a} ms, contended ${c} ms"
    alone[$p]=$(min "$a" "${alone[$p]:-}")
    contended[$p]=$(min "$c" "${contended[$p]:-}")
  done
done
printf '%-8s %10s %14s %7s\n' policy alone_ms contended_ms ratio
for p in "${policies[@]}"; do
  printf '%-8s %10s %14s %7s\n' "$p" "${alone[$p]}" "${contended[$p]}" "$(ratio "${contended[$p]}" "${alone[$p]}")"
  bench_emit engine metric="contended/alone b1 p50 ($p wait)" model="$(basename "$model" .onnx)" \
    value:="$(ratio "${contended[$p]}" "${alone[$p]}")" unit=x better=lower goal:=2
done
echo "passive's cost alone: $(ratio "${alone[passive]}" "${alone[default]}")x default's latency"
