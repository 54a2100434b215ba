#!/usr/bin/env bash
# cli_run.sh — `cloister run` end to end on a committed fixture model: summaries, .npy output,
# timings, sealed models (decrypted in memory; key required, wrong key refused), input errors.
FIX=$(cd "$(dirname "$0")/../models/fixtures" && pwd)
source "$(dirname "$0")/lib.sh"

M=$FIX/resnet18_small
expect "run --help" 0 "usage: cloister run" -- "$CLOISTER" run --help
expect "missing --input is a usage error" 2 "missing required option --input" -- "$CLOISTER" run --model "$M.onnx"
expect "run prints a summary" 0 "output: float \[2x10\] min=.* argmax=" -- \
  "$CLOISTER" run --model "$M.onnx" --input "$M.input.npy" --threads 1
expect "named input" 0 "output: float \[2x10\]" -- "$CLOISTER" run --model "$M.onnx" --input "input=$M.input.npy"
expect "unknown input name" 2 "no input named 'nope'" -- "$CLOISTER" run --model "$M.onnx" --input "nope=$M.input.npy"
expect "too many inputs" 2 "takes 1 input" -- "$CLOISTER" run --model "$M.onnx" --input "$M.input.npy" --input "$M.input.npy"
expect "--output writes .npy" 0 "wrote output 'output' to y.npy" -- \
  "$CLOISTER" run --model "$M.onnx" --input "$M.input.npy" --output y.npy
check "output has the reference's size" test "$(stat -c %s y.npy)" = "$(stat -c %s "$M.output.npy")"
check "output is a .npy" bash -c 'head -c 6 y.npy | grep -q NUMPY'
expect "refuses to overwrite" 1 "already exists" -- "$CLOISTER" run --model "$M.onnx" --input "$M.input.npy" --output y.npy
expect "--repeat prints timings" 0 "^mean_ms=[0-9.]+ p50_ms=[0-9.]+ min_ms=[0-9.]+$" -- \
  "$CLOISTER" run --model "$M.onnx" --input "$M.input.npy" --repeat 3 --warmup 1
head -c 1000 /dev/urandom > junk.onnx
expect "garbage model" 1 "junk.onnx: not an ONNX model" -- "$CLOISTER" run --model junk.onnx --input "$M.input.npy"
printf '\x93NUMPY\x01\x00\x10\x00{bad header}   \n' > bad.npy
expect "bad .npy" 1 "bad.npy" -- "$CLOISTER" run --model "$M.onnx" --input bad.npy

expect "keygen" 0 "" -- "$CLOISTER" keygen --out k.key
expect "keygen 2" 0 "" -- "$CLOISTER" keygen --out other.key
expect "seal the model" 0 "sealed" -- "$CLOISTER" seal --key k.key --key-id small --in "$M.onnx" --out m.sealed
plain=$("$CLOISTER" run --model "$M.onnx" --input "$M.input.npy" 2>/dev/null)
expect "sealed model runs with its key" 0 "" -- "$CLOISTER" run --model m.sealed --key k.key --input "$M.input.npy"
check "same result as the plaintext model" test "$OUT" != "" -a "$(grep '^output' <<<"$OUT")" = "$plain"
expect "sealed model needs --key" 1 "is sealed: give its key with --key" -- \
  "$CLOISTER" run --model m.sealed --input "$M.input.npy"
expect "sealed model, wrong key" 1 "wrong key" -- "$CLOISTER" run --model m.sealed --key other.key --input "$M.input.npy"
check "nothing but our files in the work dir" test "$(ls | sort | tr '\n' ' ')" = "bad.npy junk.onnx k.key m.sealed other.key y.npy "
finish
