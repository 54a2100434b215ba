#!/usr/bin/env python3
"""Export the engine suite's models to ONNX with seeded random weights, with PyTorch's answers.

The suite is the set of networks people bring beyond the classic CNNs: vision transformers, ConvNeXt,
MobileNetV3/EfficientNet, segmentation heads (transposed convolutions, bilinear resizes, SE blocks) and
BERT/GPT-shaped transformer stacks. All come from Debian's torch/torchvision (no downloads), opset 17,
dynamic batch. For each NAME it writes NAME.onnx, NAME.input.npy (batch 2) and NAME.output.npy (PyTorch's
output), the layout tests/unit/test_engine_models.c and bench/engine/run.sh read.

Usage: export.py --out DIR [--only a,b] [--missing] [--reuse DIR] [--list]
  --missing    export only the models whose three files are not in --out yet
  --reuse DIR  symlink a model's three files from DIR (an earlier export, read-only) into --out instead of
               exporting it, where DIR has them (default: $SUITE_MODELS_DIR when set)
"""
import argparse
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torchvision

SEQ = 128
WIDTH = 768


class Segmentation(nn.Module):
    """torchvision's segmentation models return a dict; the exported graph returns its 'out'."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


class Bert(nn.Module):
    """12 post-norm encoder layers of BERT-base's shape (768 wide, 12 heads, 3072 FFN, GELU)."""

    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(WIDTH, 12, 3072, dropout=0.0, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 12, enable_nested_tensor=False)

    def forward(self, x):
        return self.encoder(x)


class Gpt(nn.Module):
    """6 pre-norm decoder-only layers of GPT's shape with a causal mask (a constant of the graph)."""

    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(WIDTH, 12, 3072, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.decoder = nn.TransformerEncoder(layer, 6, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(WIDTH)
        self.register_buffer("mask", torch.triu(torch.full((SEQ, SEQ), float("-inf")), diagonal=1))

    def forward(self, x):
        return self.norm(self.decoder(x, mask=self.mask))


def tv(name, **kw):
    return lambda: getattr(torchvision.models, name)(**kw)


def seg(name, **kw):
    return lambda: Segmentation(getattr(torchvision.models.segmentation, name)(weights=None, weights_backbone=None,
                                                                                **kw))


# name: (constructor, input shape without the batch dimension)
MODELS = {
    "vit_b_16": (tv("vit_b_16"), (3, 224, 224)),
    "swin_t": (tv("swin_t"), (3, 224, 224)),
    "convnext_tiny": (tv("convnext_tiny"), (3, 224, 224)),
    "mobilenet_v3_large": (tv("mobilenet_v3_large"), (3, 224, 224)),
    "efficientnet_b0": (tv("efficientnet_b0"), (3, 224, 224)),
    "resnet50": (tv("resnet50"), (3, 224, 224)),
    "deeplabv3_mobilenet_v3_large": (seg("deeplabv3_mobilenet_v3_large", aux_loss=False), (3, 384, 384)),
    "lraspp_mobilenet_v3_large": (seg("lraspp_mobilenet_v3_large"), (3, 384, 384)),
    "fcn_resnet50": (seg("fcn_resnet50", aux_loss=False), (3, 384, 384)),
    "bert_encoder": (Bert, (SEQ, WIDTH)),
    "gpt_decoder": (Gpt, (SEQ, WIDTH)),
}


def randomize(model, seed):
    """Weights of the right scale (He for conv/linear, unit-ish norms) so activations neither vanish nor
    explode through 12+ layers, and outputs depend on every layer."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                fan_in = mod.weight[0].numel()
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * (1.0 / fan_in) ** 0.5)
                if mod.bias is not None:
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.05)
            elif isinstance(mod, nn.MultiheadAttention):
                if mod.in_proj_weight is not None:
                    fan_in = mod.in_proj_weight.shape[1]
                    mod.in_proj_weight.copy_(torch.randn(mod.in_proj_weight.shape, generator=g) / math.sqrt(fan_in))
                if mod.in_proj_bias is not None:
                    mod.in_proj_bias.copy_(torch.randn(mod.in_proj_bias.shape, generator=g) * 0.05)
            elif isinstance(mod, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)):
                if getattr(mod, "weight", None) is not None:
                    c = mod.weight.shape
                    mod.weight.copy_(1.0 + 0.2 * torch.randn(c, generator=g))
                    mod.bias.copy_(0.1 * torch.randn(c, generator=g))
                if isinstance(mod, nn.BatchNorm2d):
                    c = mod.num_features
                    mod.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                    mod.running_var.copy_(0.5 + torch.rand(c, generator=g))
        for name, p in model.named_parameters():
            # class tokens, position embeddings, swin's relative position tables: small random values
            if any(k in name for k in ("class_token", "pos_embedding", "relative_position_bias_table")):
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
            elif "layer_scale" in name:
                p.copy_(0.1 + 0.05 * torch.randn(p.shape, generator=g))


def export(name, out, seed, batch=2, opset=17):
    ctor, shape = MODELS[name]
    torch.manual_seed(seed)
    model = ctor()
    randomize(model, seed)
    model.eval()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn((batch,) + tuple(shape), generator=g)
    with torch.no_grad():
        y = model(x)
    # exported with autograd on: PyTorch's fused "fast path" for transformer layers (taken in eval mode
    # under no_grad) has no ONNX form; with parameters that require grad the layers run op by op
    path = os.path.join(out, name + ".onnx")
    torch.onnx.export(model, x, path, opset_version=opset, input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    np.save(os.path.join(out, name + ".input.npy"), x.numpy().astype(np.float32))
    np.save(os.path.join(out, name + ".output.npy"), y.numpy().astype(np.float32))
    print(f"{name}: opset {opset}, input {tuple(x.shape)}, output {tuple(y.shape)}, "
          f"{os.path.getsize(path)} bytes, output range {float(y.min()):.3g}..{float(y.max()):.3g}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out")
    ap.add_argument("--only", help="comma-separated model names")
    ap.add_argument("--list", action="store_true", help="print the suite's model names and exit")
    ap.add_argument("--missing", action="store_true", help="skip models already exported into --out")
    ap.add_argument("--reuse", default=os.environ.get("SUITE_MODELS_DIR") or None,
                    help="symlink the files of models found in this directory instead of exporting them")
    args = ap.parse_args()
    if args.list:
        print(" ".join(MODELS))
        return 0
    if not args.out:
        ap.error("--out is required")
    only = args.only.split(",") if args.only else list(MODELS)
    unknown = [n for n in only if n not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; the suite has: {' '.join(MODELS)}")
    os.makedirs(args.out, exist_ok=True)
    suffixes = (".onnx", ".input.npy", ".output.npy")
    for i, name in enumerate(MODELS):
        if name not in only:
            continue
        if args.missing and all(os.path.exists(os.path.join(args.out, name + x)) for x in suffixes):
            continue
        src = os.path.abspath(args.reuse) if args.reuse else None
        if src and src != os.path.abspath(args.out) and all(os.path.exists(os.path.join(src, name + x))
                                                             for x in suffixes):
            for x in suffixes:
                dst = os.path.join(args.out, name + x)
                if os.path.lexists(dst):
                    os.remove(dst)
                os.symlink(os.path.join(src, name + x), dst)
            print(f"{name}: linked from {src}")
            continue
        export(name, args.out, 4321 + i)
    return 0


if __name__ == "__main__":
    sys.exit(main())
