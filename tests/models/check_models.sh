#!/usr/bin/env bash
# tests/models/check_models.sh — `make check-models`: whole networks, full size, against PyTorch, with
# tests/unit/test_engine_models (max abs error <= 1e-4 of the output range, batch N and batch 1, direct
# and Winograd convolution). Two sets, both checked even when the first fails:
#   1. the torchvision CNNs of tests/models/make_fixtures.py --full, exported into BUILD/models-full;
#   2. the engine suite of bench/engine/suite/export.py (ViT, Swin, ConvNeXt, MobileNetV3,
#      EfficientNet, ResNet-50, segmentation nets, BERT/GPT-shaped stacks), exported into
#      BUILD/models-full-suite (only the missing ones; with $SUITE_MODELS_DIR set, its files are linked
#      instead). The suite's concurrent-runs check is skipped (CLOISTER_MODELS_SKIP_CONCURRENT): its
#      slowest models would take many minutes more; the torchvision set keeps it.
# A model that does not load counts as a failure with the engine's message; cmocka lists the failed
# models at the end of each set. Exit status 1 when any model of either set failed.
# Usage: tests/models/check_models.sh BUILD_DIR TEST_ENGINE_MODELS_BINARY   (CHECK_MODELS_SETS="full suite")
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:?usage: check_models.sh BUILD_DIR TEST_BINARY}
bin=${2:?usage: check_models.sh BUILD_DIR TEST_BINARY}
sets=${CHECK_MODELS_SETS:-full suite}
failed=()
for set in $sets; do
  case $set in
  full)
    dir=$build/models-full
    /usr/bin/python3 "$root/tests/models/make_fixtures.py" --full --out "$dir" || { failed+=("full (export)"); continue; }
    echo "== check-models: torchvision models in $dir"
    CLOISTER_MODELS_DIR=$dir "$bin" || failed+=(full)
    ;;
  suite)
    dir=$build/models-full-suite
    /usr/bin/python3 "$root/bench/engine/suite/export.py" --out "$dir" --missing || { failed+=("suite (export)"); continue; }
    echo "== check-models: the engine suite in $dir"
    CLOISTER_MODELS_DIR=$dir CLOISTER_MODELS_SKIP_CONCURRENT=1 "$bin" || failed+=(suite)
    ;;
  *) echo "check_models.sh: unknown set '$set' (full, suite)" >&2; exit 2 ;;
  esac
done
if ((${#failed[@]})); then
  echo "check-models: FAILED in: ${failed[*]} (the failed models are listed above each set's end)" >&2
  exit 1
fi
echo "check-models: every model of: $sets matches PyTorch"
