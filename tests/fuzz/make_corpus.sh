#!/usr/bin/env bash
# make_corpus.sh — regenerates the seed corpus of fuzz_sealed: small files sealed under the fixed
# fuzz key (the same 32 bytes as in fuzz_sealed.c) with several chunk sizes, plus a few broken ones.
# Usage: tests/fuzz/make_corpus.sh path/to/cloister
set -euo pipefail
cloister=$(readlink -f "${1:?usage: $0 path/to/cloister}")
out=$(dirname "$(readlink -f "$0")")/corpus/fuzz_sealed
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'cloister-fuzz-key-0123456789abcd' > "$tmp/key"
i=0
for size in 0 1 63 64 65 200 1000; do
  for chunk in 64 256; do
    head -c "$size" /dev/urandom > "$tmp/in"
    rm -f "$out/sealed-$i"
    "$cloister" seal --key "$tmp/key" --key-id "fuzz-$chunk" --in "$tmp/in" --out "$out/sealed-$i" --chunk-size "$chunk" 2>/dev/null
    i=$((i + 1))
  done
done
head -c 100 "$out/sealed-5" > "$out/truncated-header"
printf 'CLSEALED' > "$out/magic-only"
printf 'not sealed at all' > "$out/garbage"
