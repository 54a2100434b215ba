#!/usr/bin/python3
"""make_demo_model.py — trains the demo model and writes it in TF Serving's layout.

A small convolutional classifier for the handwritten digits that Debian's python3-sklearn bundles
(8x8 grey images, 1797 samples), trained with Debian's python3-torch and exported to ONNX, so the demo
shows real predictions without downloading anything. Deterministic (fixed seeds, one thread).

Writes, under models/digits/:
  1/model.onnx            input "image" float32 [N,1,8,8] in [0,1]; outputs "logits" and
                          "probabilities" float32 [N,10] (dynamic batch)
  1/preprocess.json       how `cloister serve` turns a sample PNG into that input (grey, 32x32 -> 8x8 by
                          area average, /255), so clients may send the image files themselves
  labels.txt              one label per class index
  samples/digit-K-I.png   held-out test images, 32x32 grey PNG (each source pixel 4x4)
  samples/expected.json   file -> label and PyTorch's probabilities for the PNG's 8-bit pixels / 255
  samples/digit-K-I.json  the same input as a TF Serving REST :predict body ({"inputs": {"image": ...}})
  metrics.json            test accuracy

Usage: /usr/bin/python3 scripts/make_demo_model.py [OUT_DIR]   (default models/digits)
"""
import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

out = sys.argv[1] if len(sys.argv) > 1 else "models/digits"
torch.manual_seed(7)
np.random.seed(7)
torch.set_num_threads(1)

digits = load_digits()
x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]  # [N,1,8,8] in [0,1]
y = digits.target.astype(np.int64)
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=7, stratify=y)


class DigitsNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
        )
        self.classifier = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))

    def forward(self, image):
        logits = self.classifier(self.features(image))
        return logits, torch.softmax(logits, dim=1)


model = DigitsNet()
opt = torch.optim.Adam(model.parameters(), lr=3e-3)
xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
for epoch in range(30):
    model.train()
    perm = torch.randperm(len(xt))
    for i in range(0, len(xt), 64):
        idx = perm[i:i + 64]
        opt.zero_grad()
        logits, _ = model(xt[idx])
        loss = torch.nn.functional.cross_entropy(logits, yt[idx])
        loss.backward()
        opt.step()
model.eval()
with torch.no_grad():
    _, probs = model(torch.from_numpy(x_test))
accuracy = float((probs.argmax(1).numpy() == y_test).mean())
print(f"test accuracy: {accuracy:.4f} on {len(y_test)} held-out images")
if accuracy < 0.95:
    sys.exit(f"make_demo_model: accuracy {accuracy:.3f} is too low; refusing to write the model")

os.makedirs(os.path.join(out, "1"), exist_ok=True)
os.makedirs(os.path.join(out, "samples"), exist_ok=True)
torch.onnx.export(model, torch.zeros(1, 1, 8, 8), os.path.join(out, "1", "model.onnx"),
                  input_names=["image"], output_names=["logits", "probabilities"],
                  dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}, "probabilities": {0: "batch"}},
                  opset_version=13, do_constant_folding=True)
# the server-side preprocessing that reproduces exactly what the samples below are checked with
with open(os.path.join(out, "1", "preprocess.json"), "w") as f:
    f.write('{\n  "input": "image",\n  "color": "GRAY",\n  "width": 8,\n  "height": 8,\n  "resize": "stretch",\n'
            '  "filter": "area",\n  "scale": 0.00392156862745098,\n  "mean": [0.0],\n  "std": [1.0],\n'
            '  "layout": "NCHW",\n  "max_pixels": 1048576,\n  "max_batch": 64\n}\n')
with open(os.path.join(out, "labels.txt"), "w") as f:
    f.write("".join(f"{d}\n" for d in range(10)))

expected = {}
for k in range(10):  # two held-out samples of each digit
    for i, j in enumerate(np.where(y_test == k)[0][:2]):
        name = f"digit-{k}-{i}.png"
        pixels = np.round(x_test[j, 0] * 255).astype(np.uint8)
        Image.fromarray(np.kron(pixels, np.ones((4, 4), dtype=np.uint8)), mode="L").save(
            os.path.join(out, "samples", name))
        # the reference is the model's answer for exactly what the PNG holds (8-bit pixels / 255)
        with torch.no_grad():
            _, p = model(torch.from_numpy((pixels / 255.0).astype(np.float32))[None, None])
        expected[name] = {"label": int(k), "probabilities": [round(float(v), 6) for v in p[0]]}
        # the same input as a TF Serving REST request (columnar format), for curl
        with open(os.path.join(out, "samples", name.replace(".png", ".json")), "w") as f:
            json.dump({"inputs": {"image": [[(pixels / 255.0).round(6).tolist()]]}}, f)
with open(os.path.join(out, "samples", "expected.json"), "w") as f:
    json.dump(expected, f, indent=1, sort_keys=True)
with open(os.path.join(out, "metrics.json"), "w") as f:
    json.dump({"test_accuracy": accuracy, "test_images": int(len(y_test))}, f, indent=1)
