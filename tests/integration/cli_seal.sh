#!/usr/bin/env bash
# cli_seal.sh — `cloister keygen|seal|unseal|inspect` end to end: exit codes, messages, file modes,
# and that no failure leaves an output or temporary file behind.
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"

expect "help lists commands" 0 "seal" -- "$CLOISTER" help
expect "unknown command is a usage error" 2 "unknown command 'frobnicate'" -- "$CLOISTER" frobnicate
expect "seal --help" 0 "usage: cloister seal" -- "$CLOISTER" seal --help
expect "help seal" 0 "--key-id NAME" -- "$CLOISTER" help seal
expect "missing option is a usage error" 2 "missing required option --key-id" -- \
  "$CLOISTER" seal --key k --in a --out b

expect "keygen" 0 "wrote a new 256-bit key" -- "$CLOISTER" keygen --out model.key
check "key is 32 bytes, mode 600" test "$(stat -c '%s %a' model.key)" = "32 600"
cp model.key model.key.orig
expect "keygen refuses to overwrite" 1 "already exists" -- "$CLOISTER" keygen --out model.key
check "existing key untouched" cmp model.key model.key.orig
expect "keygen --hex" 0 "" -- "$CLOISTER" keygen --out other.key --hex
check "hex key is 64 digits + newline" test "$(wc -c <other.key)" = 65

head -c 5000000 /dev/urandom > model.onnx
expect "seal" 0 "sealed 5000000 bytes .*, 20 chunks\)" -- \
  "$CLOISTER" seal --key model.key --key-id resnet50 --in model.onnx --out model.onnx.sealed
echo small >small.txt
expect "seal: one chunk is '1 chunk'" 0 "sealed 6 bytes into small.txt.sealed \(key id 'small', 1 chunk\)" -- \
  "$CLOISTER" seal --key model.key --key-id small --in small.txt --out small.txt.sealed
check "no progress bar when stderr is not a terminal" bash -c '! grep -q "sealing \[" <<<"$0"' "$OUT"
expect "seal refuses to overwrite" 1 "already exists" -- \
  "$CLOISTER" seal --key model.key --key-id resnet50 --in model.onnx --out model.onnx.sealed
expect "seal --force overwrites" 0 "" -- \
  "$CLOISTER" seal --key model.key --key-id resnet50 --in model.onnx --out model.onnx.sealed --force
# one alphabet for key ids and the key server's secret names (what `keyserver secret put` refuses)
expect "a key id the key server cannot store is refused" 2 "a key id must be a key server secret name" -- \
  "$CLOISTER" seal --key model.key --key-id 'a+b@c' --in model.onnx --out plus.sealed
check "a refused key id leaves no output" test ! -e plus.sealed
expect "secret put refuses the same name" 1 "not a valid secret name" -- \
  env CLOISTER_MASTER_KEY_FILE="$WORK/mk" "$CLOISTER" keyserver secret put --db ks.db --name 'a+b@c' --file model.key
expect "a key id of 129 characters is refused (secret names have at most 128)" 2 "1-128 characters" -- \
  "$CLOISTER" seal --key model.key --key-id "$(printf 'k%.0s' $(seq 129))" --in model.onnx --out long.sealed
expect "a key id of 128 characters is sealed" 0 "sealed 5000000 bytes" -- \
  "$CLOISTER" seal --key model.key --key-id "$(printf 'k%.0s' $(seq 128))" --in model.onnx --out long.sealed
LEGACY=$HERE/../data/sealed-v1-keyid
cp "$LEGACY/key" legacy.key && chmod 600 legacy.key
expect "a file sealed before with '+' and '@' in its key id still opens" 0 "wrote 56 bytes" -- \
  "$CLOISTER" unseal --key legacy.key --in "$LEGACY/plain.txt.sealed" --out legacy.txt
check "and its plaintext is intact" cmp legacy.txt "$LEGACY/plain.txt"
expect "inspect" 0 "key id: +resnet50" -- "$CLOISTER" inspect model.onnx.sealed
expect "inspect --json" 0 '"key_id":"resnet50".*"content_type":"application/x-onnx".*"plaintext_length":5000000' -- \
  "$CLOISTER" inspect --json model.onnx.sealed
expect "inspect a plaintext file" 1 "not a cloister sealed file" -- "$CLOISTER" inspect model.onnx

expect "unseal" 0 "wrote 5000000 bytes" -- \
  "$CLOISTER" unseal --key model.key --key-id resnet50 --in model.onnx.sealed --out plain.onnx
check "round trip is exact" cmp model.onnx plain.onnx
check "plaintext output is mode 600" test "$(stat -c %a plain.onnx)" = 600
expect "hex key opens it too" 1 "wrong key" -- \
  "$CLOISTER" unseal --key other.key --in model.onnx.sealed --out x1
check "wrong key leaves no output" test ! -e x1
expect "wrong key id" 1 "wrong key id: the file was sealed for key 'resnet50', not 'other'" -- \
  "$CLOISTER" unseal --key model.key --key-id other --in model.onnx.sealed --out x2
check "wrong key id leaves no output" test ! -e x2

# tampering: one flipped byte in the middle of the payload, near the end, in the header
flip() { # flip FILE OFFSET -> FILE.t
  cp "$1" "$1.t"
  printf "$(printf '\\x%02x' $(( $(od -An -tu1 -j "$2" -N1 "$1") ^ 1 )))" |
    dd of="$1.t" bs=1 seek="$2" conv=notrunc status=none
}
flip model.onnx.sealed 2500000
expect "flipped payload byte" 1 "chunk 10 of 20 failed authentication" -- \
  "$CLOISTER" unseal --key model.key --in model.onnx.sealed.t --out x3
check "failed unseal leaves no output" test ! -e x3
flip model.onnx.sealed $(( $(stat -c %s model.onnx.sealed) - 5 ))
expect "flipped final tag" 1 "chunk 20 of 20 failed authentication" -- \
  "$CLOISTER" unseal --key model.key --in model.onnx.sealed.t --out x4
check "late failure leaves no partial output" test ! -e x4
flip model.onnx.sealed 20
expect "flipped header byte" 1 "header authentication failed" -- \
  "$CLOISTER" unseal --key model.key --in model.onnx.sealed.t --out x5
head -c 4000000 model.onnx.sealed > trunc.sealed
expect "truncated" 1 "truncated: the sealed file is 4000000 bytes" -- \
  "$CLOISTER" unseal --key model.key --in trunc.sealed --out x6
cat model.onnx.sealed model.key > ext.sealed
expect "extended" 1 "extended: 32 unexpected bytes" -- \
  "$CLOISTER" unseal --key model.key --in ext.sealed --out x7
cp model.onnx.sealed v2.sealed
printf '\x02' | dd of=v2.sealed bs=1 seek=9 conv=notrunc status=none
expect "unknown version" 1 "unsupported sealed format version 2" -- \
  "$CLOISTER" unseal --key model.key --in v2.sealed --out x8
expect "unreadable input" 1 "cannot open sealed file 'missing.sealed'" -- \
  "$CLOISTER" unseal --key model.key --in missing.sealed --out x9
expect "unreadable key" 1 "cannot read key file" -- \
  "$CLOISTER" seal --key nokey --key-id a --in model.onnx --out x10
head -c 16 /dev/urandom > short.key
expect "malformed key" 1 "32 raw bytes or 64 hex digits" -- \
  "$CLOISTER" seal --key short.key --key-id a --in model.onnx --out x11
expect "invalid key id (a usage error)" 2 "key id must be" -- \
  "$CLOISTER" seal --key model.key --key-id "has space" --in model.onnx --out x12
expect "chunk size out of range" 2 "from 64 to" -- \
  "$CLOISTER" seal --key model.key --key-id a --chunk-size 10 --in model.onnx --out x13
check "no failed command left a file behind" bash -c '! ls x* *.tmp.* 2>/dev/null | grep -q .'

# secrets need locked memory: with a tiny memlock limit and no CAP_IPC_LOCK, unsealing into memory
# fails with instructions, and --allow-unlocked-memory is the explicit way out
if command -v capsh >/dev/null && command -v prlimit >/dev/null; then
  expect "memlock limit: actionable refusal" 1 "ulimit -l" -- \
    prlimit --memlock=65536:65536 capsh --drop=cap_ipc_lock -- -c \
    "$CLOISTER unseal --key model.key --in model.onnx.sealed --out lowlock.onnx"
  expect "memlock limit: --allow-unlocked-memory" 0 "could not be locked" -- \
    prlimit --memlock=65536:65536 capsh --drop=cap_ipc_lock -- -c \
    "$CLOISTER --allow-unlocked-memory unseal --key model.key --in model.onnx.sealed --out lowlock.onnx"
fi

# a progress bar appears on a terminal (script(1) provides a pseudo-terminal)
if command -v script >/dev/null; then
  expect "progress bar on a terminal" 0 "sealing \[#+\] 100%" -- \
    script -qec "$CLOISTER seal --key model.key --key-id a --in model.onnx --out tty.sealed" /dev/null
fi
finish
