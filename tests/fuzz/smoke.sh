#!/usr/bin/env bash
# smoke.sh — a short libFuzzer run of one target, seeded from its committed corpus. New inputs go to
# a temporary directory, so the committed corpus is never modified. Crashes fail the test and
# leave the reproducer beside the fuzz binary, in the build tree, wherever this is run from
# (BUILD/tests/fuzz-artifacts/fuzz_x-crash-*), never in the source tree.
# Usage: smoke.sh FUZZ_BINARY CORPUS_DIR [RUNS] [SECONDS]   (FUZZ_MAX_LEN: longest input, default 4096)
set -u
bin=$1 corpus=$2 runs=${3:-200000} secs=${4:-30}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
artifacts=$(dirname "$(readlink -f "$bin")")/fuzz-artifacts
mkdir -p "$artifacts"
log=$scratch/fuzz.log
mkdir "$scratch/new"
"$bin" -runs="$runs" -max_total_time="$secs" -seed=1 -max_len="${FUZZ_MAX_LEN:-4096}" -print_final_stats=1 \
  -artifact_prefix="$artifacts/$(basename "$bin")-" "$scratch/new" "$corpus" >"$log" 2>&1
rc=$?
grep -E "^(#[0-9]+[[:space:]]+(INITED|DONE)|stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY|artifact_prefix|Test unit written)" "$log"
if [[ $rc -ne 0 ]]; then
  # what the target said before it died (an assertion, a hang check, a sanitizer report), without
  # libFuzzer's progress lines
  echo "-- the target's last words:"
  grep -v -E "^(#[0-9]+[[:space:]]|INFO:|MS: )" "$log" | tail -40
fi
exit "$rc"
