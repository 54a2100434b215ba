#!/usr/bin/env bash
# demo.sh — `make demo`: the main job, end to end, with what cloister can do today.
#   1. the model owner creates a key and seals a real ONNX model (from Debian's ONNX test data);
#   2. the sealed file is inspected without the key, and opened with it;
#   3. tampering, a wrong key and truncation are each refused with their own message;
#   4. TLS material for mutual TLS is created and checked with openssl.
# The attested key release and the TF Serving server join this flow as they land (issues 3-5).
set -euo pipefail
cloister=$(readlink -f "${1:-build/cloister}")
model=/usr/share/libonnx-testdata/data/pytorch-operator/test_operator_conv/model.onnx
[[ -r $model ]] || { echo "demo: $model is missing (Debian package libonnx-testdata)" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/cloister-demo-XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
refused() { # run a command that must fail, and show why
  printf '$ %s\n' "$*"
  if "$@"; then echo "demo: that should have been refused" >&2; exit 1; fi
}

step "1. The model owner creates a wrap key and seals the model"
run "$cloister" keygen --out model.key
cp "$model" model.onnx
run "$cloister" seal --key model.key --key-id demo-conv --in model.onnx --out model.onnx.sealed

step "2. Anyone can read the header; only the key opens it"
run "$cloister" inspect model.onnx.sealed
run "$cloister" unseal --key model.key --key-id demo-conv --in model.onnx.sealed --out roundtrip.onnx
run cmp model.onnx roundtrip.onnx && echo "round trip: identical"

step "3. Everything else is refused, each with its own reason"
run "$cloister" keygen --out other.key
refused "$cloister" unseal --key other.key --in model.onnx.sealed --out x
refused "$cloister" unseal --key model.key --key-id resnet50 --in model.onnx.sealed --out x
cp model.onnx.sealed tampered.sealed
printf 'X' | dd of=tampered.sealed bs=1 seek=$(( $(stat -c %s tampered.sealed) - 40 )) conv=notrunc status=none
refused "$cloister" unseal --key model.key --in tampered.sealed --out x
head -c $(( $(stat -c %s model.onnx.sealed) - 7 )) model.onnx.sealed > truncated.sealed
refused "$cloister" unseal --key model.key --in truncated.sealed --out x
[[ ! -e x ]] && echo "no plaintext was written by any refused command"

step "4. TLS material for mutual TLS (TF Serving layout and ssl.cfg)"
run "$cloister" tls init --dir ssl_configure --server-name localhost --san 127.0.0.1 --client-name demo-client
run openssl verify -CAfile ssl_configure/ca_cert.pem ssl_configure/server/cert.pem ssl_configure/client/cert.pem

printf '\n\033[1mdemo complete.\033[0m Next on the roadmap: attested key release (cloister keyserver),\n'
printf 'the ONNX engine (cloister run) and the TF Serving API server (cloister serve).\n'
