#!/usr/bin/env bash
# test.sh — `make test`: installs what is missing, builds twice and runs every test in both builds:
#   build/       gcc, RelWithDebInfo: unit, integration and corpus-replay tests
#   build-asan/  clang, AddressSanitizer + UndefinedBehaviorSanitizer + libFuzzer: the same tests
#                instrumented, and a short fuzzing run of every fuzz target
# The last line is "N passed, N failed" over both builds; the exit status is non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)

scripts/deps.sh test || { echo "0 passed, 1 failed"; exit 1; }

passed=0
failed=0
run_build() { # run_build DIR CMAKE-ARGS...
  local dir=$1
  shift
  echo "== configure and build $dir"
  if ! cmake -S . -B "$dir" "$@" >"$dir/configure.log" 2>&1; then
    cat "$dir/configure.log"; failed=$((failed + 1)); return
  fi
  if ! cmake --build "$dir" -j "$jobs" >"$dir/build.log" 2>&1; then
    grep -E -A5 "error|Error" "$dir/build.log" | head -60
    echo "build of $dir failed (full log: $dir/build.log)"; failed=$((failed + 1)); return
  fi
  echo "== tests in $dir"
  local log="$dir/ctest.log"
  (cd "$dir" && ctest --output-on-failure -j "$jobs" --timeout 600) 2>&1 | tee "$log"
  local line
  line=$(grep -E "tests passed, [0-9]+ tests failed out of [0-9]+" "$log" | tail -1)
  if [[ -z $line ]]; then
    echo "no ctest summary in $dir"; failed=$((failed + 1)); return
  fi
  local bad total
  bad=$(sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+).*/\1/' <<<"$line")
  total=$(sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+).*/\2/' <<<"$line")
  passed=$((passed + total - bad))
  failed=$((failed + bad))
}

mkdir -p build build-asan
# warnings are errors here (CLOISTER_WERROR; off by default for users building with other compilers)
run_build build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCLOISTER_WERROR=ON
if command -v clang >/dev/null; then
  CC=clang run_build build-asan -DCMAKE_BUILD_TYPE=Debug -DCLOISTER_SANITIZE=ON -DCLOISTER_FUZZ=ON -DCLOISTER_WERROR=ON
else
  run_build build-asan -DCMAKE_BUILD_TYPE=Debug -DCLOISTER_SANITIZE=ON -DCLOISTER_WERROR=ON
fi
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
