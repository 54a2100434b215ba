#!/usr/bin/env bash
# bench/run_all.sh — `make bench`: every benchmark against its peer, one after the other, with their text
# output as before (also kept in REPORT_DIR/logs/BENCH.txt), their machine-readable results in
# REPORT_DIR/results/BENCH.jsonl ($CLOISTER_BENCH_OUT, bench/lib.sh and bench/bench_out.h), the machine
# they ran on in REPORT_DIR/results/machine.json, and then the report: REPORT_DIR/report.md with its plots
# in REPORT_DIR/plots/ (bench/report/make_report.py). A benchmark that fails does not stop the others:
# the report says it failed and why, and the exit status is 1 when any did.
#
# Usage: bench/run_all.sh BUILD_DIR [REPORT_DIR]      (REPORT_DIR defaults to bench/report)
#   BENCH_QUICK=1         a short configuration of every benchmark (a few minutes; figures noisier)
#   BENCH_ONLY="seal engine"   run only these (ids: seal keyserver release release-secrets dcap engine
#                         engine-suite serve-rest serve-grpc client); the others show as "not run" in the report
#   BENCH_ENGINE_MODELS   the models of bench/engine (default: resnet50 resnet18 mobilenet_v2 squeezenet1_1)
#   SOAK_OUT              a soak result (bench/soak/run.sh) to include (default: build-asan/soak)
# Only what this script generates is replaced in REPORT_DIR: results/, logs/, plots/ and report.md.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=$(cd "${1:?usage: run_all.sh BUILD_DIR [REPORT_DIR]}" && pwd)
report=${2:-$root/bench/report}
quick=${BENCH_QUICK:-}
only=${BENCH_ONLY:-}
source "$here/lib.sh"

mkdir -p "$report"
report=$(cd "$report" && pwd)
rm -rf "$report/results" "$report/logs" "$report/plots"
rm -f "$report/report.md"
mkdir -p "$report/results" "$report/logs"
export CLOISTER_BENCH_OUT=$report/results
config="full (the settings \`make bench\` always ran)"
[[ -n $quick ]] && config="quick (BENCH_QUICK=1: short runs, noisier figures)"
[[ -n $only ]] && config+="; only: $only"
/usr/bin/python3 "$here/report/make_report.py" --machine "$report/results/machine.json" --config "$config"

# the benchmarks: id, then the command (the full configuration is the one `make bench` always ran)
models=${BENCH_ENGINE_MODELS:-resnet50 resnet18 mobilenet_v2 squeezenet1_1}
if [[ -n $quick ]]; then
  runs=(
    "seal|$build/bench/bench_seal --size 64 --repeat 1"
    "keyserver|$build/bench/bench_keyserver --seconds 1 --rounds 1"
    "release|$build/bench/bench_release --seconds 1 --audit-records 500"
    "release-secrets|$build/bench/bench_release --seconds 1 --audit-records 500 --secrets 8 --secret-size 1048576"
    "dcap|$build/bench/bench_dcap $root/tests/data/dcap-qvl --seconds 0.5"
    "engine|ENGINE_MODELS='$models' $here/engine/run.sh $build 2 1"
    "engine-suite|SUITE_BUDGET=3 SUITE_B1_RUNS=5 SUITE_B8_RUNS=2 $here/engine/suite/run.sh $build 2 1"
    "serve-rest|$here/serve/run.sh $build 2 16 1"
    "serve-grpc|$here/serve/grpc_latency.sh $build 2 1 10"
    "serve-omp|$here/serve/omp_wait.sh $build 1 10"
    "client|$here/client/run.sh $build 300"
  )
else
  runs=(
    "seal|$build/bench/bench_seal"
    "keyserver|$build/bench/bench_keyserver"
    "release|$build/bench/bench_release"
    "release-secrets|$build/bench/bench_release --secrets 8 --secret-size 1048576"
    "dcap|$build/bench/bench_dcap $root/tests/data/dcap-qvl"
    "engine|ENGINE_MODELS='$models' $here/engine/run.sh $build"
    "engine-suite|$here/engine/suite/run.sh $build"
    "serve-rest|$here/serve/run.sh $build"
    "serve-grpc|$here/serve/grpc_latency.sh $build"
    "serve-omp|$here/serve/omp_wait.sh $build"
    "client|$here/client/run.sh $build"
  )
fi

failed=()
for entry in "${runs[@]}"; do
  id=${entry%%|*}
  cmd=${entry#*|}
  if [[ -n $only && " $only " != *" $id "* ]]; then
    bench_emit "$id" kind=status status=skipped reason="not selected (BENCH_ONLY=\"$only\")" command="$cmd"
    continue
  fi
  echo "== $id: $cmd"
  t0=$(date +%s.%N)
  (cd "$root" && eval "$cmd") 2>&1 | tee "$report/logs/$id.txt"
  rc=${PIPESTATUS[0]}
  secs=$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN{printf "%.1f", a - b}')
  load=$(cut -d' ' -f1-3 /proc/loadavg) # what else ran meanwhile (1, 5, 15 min), shown with its figures
  if ((rc == 0)); then
    bench_emit "$id" kind=status status=ok exit:=0 seconds:="$secs" command="$cmd" log="logs/$id.txt" load="$load"
  else
    failed+=("$id")
    reason="exit status $rc after $secs s: $(grep -v '^ *$' "$report/logs/$id.txt" | tail -1 | cut -c1-300)"
    bench_emit "$id" kind=status status=failed exit:="$rc" seconds:="$secs" reason="$reason" command="$cmd" \
      log="logs/$id.txt" load="$load"
  fi
done

soak=${SOAK_OUT:-$root/build-asan/soak}
/usr/bin/python3 "$here/report/make_report.py" "$report" --soak "$soak"
rc=$?
((${#failed[@]} == 0)) || { echo "run_all.sh: failed: ${failed[*]} (see $report/report.md and $report/logs/)" >&2; exit 1; }
exit $rc
