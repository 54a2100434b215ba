#!/usr/bin/env bash
# client_torchvision.sh — `cloister predict --preprocess torchvision` against torchvision itself: photos and
# test images shipped by Debian packages (matplotlib's sample photo, the Go distribution's JPEG and PNG test
# images: baseline, progressive, 4:1:0 and 4:4:4 subsampling, grey, palette, alpha, 16-bit) are turned into a
# model's input by the client (--dump-input) and by torchvision's ImageNet eval transform (PIL open,
# convert('RGB'), Resize(256), CenterCrop(224), ToTensor, Normalize) from Debian's python3-torchvision and
# python3-pil. The tensors must agree to float rounding; the classes the real `cloister serve` answers for the
# client's tensors (a torchvision ResNet-18 with seeded random weights, exported to ONNX) must be the top-1
# and top-5 PyTorch gives for torchvision's tensors, and --softmax must print PyTorch's probabilities.
# Usage: client_torchvision.sh CLOISTER SERVE_TESTD PROTO_DIR
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$(dirname "$0")/lib.sh"
TESTD=$(readlink -f "$2")
PROTO=$(readlink -f "$3")
source "$(dirname "$0")/serve_lib.sh"
export CLOISTER_LOG=warn
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

if ! $PY -c 'import torch, torchvision, PIL' 2>/dev/null; then
  echo "SKIP: needs Debian's python3-torchvision and python3-pil (scripts/deps.sh test installs them)"
  exit 77
fi
GO=/usr/share/go-1.19/src/image
IMAGES=(/usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg
        $GO/testdata/video-001.jpeg $GO/testdata/video-001.progressive.jpeg $GO/testdata/video-001.q50.410.jpeg
        $GO/testdata/video-001.q50.444.jpeg $GO/testdata/video-005.gray.jpeg $GO/testdata/video-001.png
        $GO/png/testdata/pngsuite/basn0g08.png $GO/png/testdata/pngsuite/basn3p08.png
        $GO/png/testdata/pngsuite/basn6a08.png $GO/png/testdata/pngsuite/basn2c16.png)
for f in "${IMAGES[@]}"; do
  [[ -r $f ]] || { echo "SKIP: $f is missing (python-matplotlib-data and golang-1.19-src ship the images)"; exit 77; }
done

# the model and torchvision's side: reference tensors (ref.npy) and PyTorch's logits for them (ref_logits.npy)
check "torchvision: a seeded ResNet-18 exported to ONNX, the eval transform of ${#IMAGES[@]} images" \
  $PY - "${IMAGES[@]}" <<'PY'
import sys
import numpy as np
import torch, torchvision
from PIL import Image
from torchvision import transforms as T
torch.manual_seed(11)
m = torchvision.models.resnet18(num_classes=1000).eval()
g = torch.Generator().manual_seed(12)
with torch.no_grad():  # batch-norm statistics that are not the identity, as tests/models/make_fixtures.py
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.copy_(0.1 * torch.randn(mod.num_features, generator=g))
            mod.running_var.copy_(0.5 + torch.rand(mod.num_features, generator=g))
import os
os.makedirs("models/tv/1", exist_ok=True)
torch.onnx.export(m, torch.zeros(1, 3, 224, 224), "models/tv/1/model.onnx", opset_version=13,
                  input_names=["input"], output_names=["logits"],
                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
x = torch.stack([tf(Image.open(f).convert("RGB")) for f in sys.argv[1:]])
np.save("ref.npy", x.numpy())
with torch.no_grad():
    np.save("ref_logits.npy", m(x).numpy())
PY

check "tls material" make_tls
GRPC=$(free_port)
REST=$(free_port)
CLOISTER_LOG=info "$CLOISTER" serve --host 127.0.0.1 --port "$GRPC" --rest_api_port "$REST" --ssl_config_file tls2/ssl.cfg \
  --model_name tv --model_base_path "$WORK/models/tv" --file_system_poll_wait_seconds 0 --engine-threads 2 \
  --workers 1 2> serve.log &
SERVER_PIDS+=($!)
for _ in $(seq 600); do
  grep -q "serving: gRPC" serve.log 2>/dev/null && break
  kill -0 "${SERVER_PIDS[-1]}" 2>/dev/null || break
  sleep 0.05
done
grep -q "serving: gRPC" serve.log || { echo "server did not start:"; cat serve.log; exit 1; }
G=(--server "localhost:$GRPC" --ca tls2/ca_cert.pem --cert tls2/client/cert.pem --key tls2/client/key.pem --model tv)

# compare A.npy B.npy -> "max abs error E at IMAGE" (and the worst image's index)
compare() {
  $PY - "$@" <<'PY'
import sys
import numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
assert a.shape == b.shape and a.dtype == b.dtype == np.float32, (a.shape, b.shape, a.dtype, b.dtype)
d = np.abs(a.astype(np.float64) - b.astype(np.float64)).reshape(len(a), -1).max(axis=1)
print(f"max abs error {d.max():.3g} at image {int(d.argmax()) + 1}; per image: " + " ".join(f"{v:.3g}" for v in d))
PY
}

"$CLOISTER" predict "${G[@]}" --preprocess torchvision --image "${IMAGES[@]}" --dump-input pil.npy --top 5 \
  --output-json > pil.json 2> pil.err || cat pil.err
# PIL's resize reproduced to the pixel, the normalisation computed in double and rounded once (torchvision rounds
# after the division by 255, the mean and the std): at most 2 ulp of the largest value, (1-0.406)/0.225 = 2.64
expect "--preprocess torchvision: the tensor is torchvision's within float rounding (< 5e-7)" 0 \
  "^max abs error (0|[0-4](\.[0-9]+)?e-07) " -- compare pil.npy ref.npy
echo "    $OUT"
# for the record: the float resampler (--resize bilinear: the same filter without rounding to 8 bits between
# the passes) against torchvision, which is what the client did before PIL's resize was reproduced
"$CLOISTER" predict "${G[@]}" --resize bilinear --shorter-side 256 --mean 0.485,0.456,0.406 \
  --std 0.229,0.224,0.225 --image "${IMAGES[@]}" --dump-input float.npy > /dev/null 2>&1
expect "--resize bilinear --shorter-side 256 (float resampler) differs more: its figure" 0 "^max abs error" -- \
  compare float.npy ref.npy
echo "    $OUT"

# the model's classes: the server's for the client's tensors, PyTorch's for torchvision's
agree() {
  $PY - "$1" <<'PY'
import json, sys
import numpy as np
ref = np.load("ref_logits.npy")
got = json.load(open(sys.argv[1]))
n = len(got["results"])
top1 = sum(r["top"][0]["index"] == int(np.argmax(ref[i])) for i, r in enumerate(got["results"]))
top5 = sum([t["index"] for t in r["top"]] == np.argsort(-ref[i])[:5].tolist() for i, r in enumerate(got["results"]))
logits = np.array(got["outputs"]["logits"]["values"]).reshape(ref.shape)
err = np.abs(logits - ref).max()
# random weights make a poor classifier (most images get the same class): the logits carry the comparison
print(f"top-1 {top1} of {n}, top-5 in order {top5} of {n}, logits within {'1e-4' if err < 1e-4 else err} of "
      f"PyTorch's ({err:.2g}); classes {[r['top'][0]['index'] for r in got['results']]}")
PY
}
expect "the server's top-1, top-5 and logits for the client's tensors are PyTorch's for torchvision's" 0 \
  "^top-1 11 of 11, top-5 in order 11 of 11, logits within 1e-4 of PyTorch's" -- agree pil.json
echo "    $OUT"

# --softmax: the probabilities of the ranked logits
"$CLOISTER" predict "${G[@]}" --preprocess torchvision --image "${IMAGES[0]}" --top 3 --softmax --output-json \
  > soft.json 2> soft.err || cat soft.err
expect "--softmax prints PyTorch's softmax probabilities (within 1e-5)" 0 "^ok" -- $PY - <<'PY'
import json
import numpy as np
ref = np.load("ref_logits.npy")[0].astype(np.float64)
p = np.exp(ref - ref.max()); p /= p.sum()
got = json.load(open("soft.json"))
assert got["softmax"] is True
top = got["results"][0]["top"]
assert [t["index"] for t in top] == np.argsort(-p)[:3].tolist(), top
d = max(abs(t["score"] - p[t["index"]]) for t in top)
print("ok" if d < 1e-5 else f"differs by {d}")
PY
expect "--softmax, text output: probabilities in (0, 1)" 0 "^grace_hopper.jpg: [0-9]+ \(0\.[0-9]{6}\), " -- \
  "$CLOISTER" predict "${G[@]}" --preprocess torchvision --image "${IMAGES[0]}" --top 2 --softmax
expect "the preset's parts can be changed: --shorter-side 300" 0 "" -- \
  "$CLOISTER" predict "${G[@]}" --preprocess torchvision --shorter-side 300 --image "${IMAGES[0]}" --dump-input s300.npy
check "  ... and it changes the tensor" $PY -c '
import numpy as np, sys
sys.exit(0 if np.abs(np.load("s300.npy") - np.load("ref.npy")[:1]).max() > 0.05 else 1)'
expect "a shorter side below the crop is a usage error" 2 "a shorter side of 200 is smaller than the 224x224 centre crop" -- \
  "$CLOISTER" predict "${G[@]}" --shorter-side 200 --image "${IMAGES[0]}"
expect "an unknown preset is a usage error" 2 "--preprocess knows 'torchvision'" -- \
  "$CLOISTER" predict "${G[@]}" --preprocess caffe --image "${IMAGES[0]}"
expect "--dump-input without decoded images is a usage error" 2 "--dump-input writes the preprocessed image tensor" -- \
  "$CLOISTER" predict "${G[@]}" --input input=ref.npy --dump-input x.npy

# bench --random on a signature with dynamic dimensions besides the batch ([-1,3,-1,-1]: a small fully
# convolutional net): their size comes from --dim
check "a fully convolutional model with dynamic height and width" $PY - <<'PY'
import os, torch
torch.manual_seed(3)
m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
os.makedirs("models/fcn/1", exist_ok=True)
torch.onnx.export(m, torch.zeros(1, 3, 16, 16), "models/fcn/1/model.onnx", opset_version=13, input_names=["x"],
                  output_names=["y"], dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n"}})
PY
GRPC2=$(free_port)
REST2=$(free_port)
CLOISTER_LOG=info "$CLOISTER" serve --host 127.0.0.1 --port "$GRPC2" --rest_api_port "$REST2" --plaintext \
  --model_name fcn --model_base_path "$WORK/models/fcn" --file_system_poll_wait_seconds 0 --engine-threads 1 \
  --workers 1 2> serve2.log &
SERVER_PIDS+=($!)
for _ in $(seq 600); do
  grep -q "serving: gRPC" serve2.log 2>/dev/null && break
  kill -0 "${SERVER_PIDS[-1]}" 2>/dev/null || break
  sleep 0.05
done
F=(--server "127.0.0.1:$GRPC2" --plaintext --model fcn)
expect "bench --random: a dynamic height needs --dim, and the message says so" 2 \
  "input 'x' has a dynamic dimension 2 besides the batch; give its size with --dim N" -- \
  "$CLOISTER" bench "${F[@]}" --random --requests 1
expect "bench --random --dim 40 --batch 3: valid inputs, 0 errors" 0 "^errors: 0$" -- \
  "$CLOISTER" bench "${F[@]}" --random --dim 40 --batch 3 --requests 10 --warmup 0
expect "predict --random --dim 24 over REST: the four outputs ranked" 0 "^\[0\]: [0-3] \([0-9.]+\), [0-3] .*, [0-3] .*, [0-3] " -- \
  "$CLOISTER" predict --server "127.0.0.1:$REST2" --rest --plaintext --model fcn --random --dim 24

stop_servers
finish
