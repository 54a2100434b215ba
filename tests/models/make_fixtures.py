#!/usr/bin/python3
"""tests/models/make_fixtures.py — exports torchvision CNNs to ONNX with seeded random weights and
writes reference outputs computed by PyTorch, for the engine's whole-network test
(tests/unit/test_engine_models.c).

    /usr/bin/python3 tests/models/make_fixtures.py --out tests/models/fixtures          # small, committed
    /usr/bin/python3 tests/models/make_fixtures.py --out build/models-full --full       # full size (check-models)

Small mode builds reduced-width versions that keep each architecture's operator patterns
(conv+BN+ReLU, residual adds, bottlenecks, depthwise convs and ReLU6 clips, fire modules with
ceil-mode pooling, dense blocks with pre-activation BN and concat, squeeze-excitation with SiLU),
small enough to commit (a few MB in total). Full mode exports the real torchvision models at 224x224.

For each model NAME it writes NAME.onnx, NAME.input.npy (batch 2) and NAME.output.npy.
Needs Debian's python3-torch, python3-torchvision and python3-onnx; run with /usr/bin/python3.
"""
import argparse
import os

import numpy as np
import torch
import torch.nn as nn
import torchvision
from torchvision.models import resnet, squeezenet as sqz, efficientnet


class SmallResNet(resnet.ResNet):
    """torchvision's ResNet with configurable stage widths (same blocks, same forward)."""

    def __init__(self, block, layers, widths, num_classes=10):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = widths[0]
        self.dilation = 1
        self.groups = 1
        self.base_width = 64
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3] * block.expansion, num_classes)


class SmallSqueezeNet(nn.Module):
    """squeezenet1_1's structure (torchvision Fire modules, ceil-mode max pools) at reduced width."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, kernel_size=3, stride=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            sqz.Fire(16, 4, 16, 16), sqz.Fire(32, 4, 16, 16),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            sqz.Fire(32, 8, 24, 24), sqz.Fire(48, 8, 24, 24),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            sqz.Fire(48, 12, 32, 32))
        self.classifier = nn.Sequential(nn.Dropout(p=0.5), nn.Conv2d(64, num_classes, kernel_size=1),
                                        nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1)))

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


def small_models():
    settings, last = efficientnet._efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.25)
    return {
        # name: (constructor, input size, opset)
        "resnet18_small": (lambda: SmallResNet(resnet.BasicBlock, [2, 2, 2, 2], [8, 16, 24, 32]), 64, 13),
        "resnet50_small": (lambda: SmallResNet(resnet.Bottleneck, [1, 2, 1, 1], [8, 16, 16, 24]), 64, 17),
        "mobilenet_v2_small": (lambda: torchvision.models.mobilenet_v2(
            num_classes=10, width_mult=0.25,
            inverted_residual_setting=[[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 2, 2], [6, 64, 2, 2],
                                       [6, 96, 1, 1], [6, 160, 2, 2], [6, 320, 1, 1]]), 64, 14),
        "squeezenet1_1_small": (lambda: SmallSqueezeNet(), 64, 13),
        "densenet_small": (lambda: torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2, 2, 2),
                                                              num_init_features=16, bn_size=2, num_classes=10),
                           64, 15),
        "efficientnet_b0_small": (lambda: efficientnet.EfficientNet(settings, dropout=0.2, num_classes=10,
                                                                     last_channel=128), 64, 16),
    }


def full_models():
    m = torchvision.models
    return {name: (getattr(m, name), 224, 13 + i % 5)
            for i, name in enumerate(["resnet18", "resnet50", "mobilenet_v2", "squeezenet1_1", "densenet121",
                                      "googlenet", "vgg11", "alexnet", "efficientnet_b0"])}


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                fan_in = mod.weight[0].numel()
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if mod.bias is not None:
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
            elif isinstance(mod, nn.BatchNorm2d):
                c = mod.num_features
                mod.weight.copy_(1.0 + 0.2 * torch.randn(c, generator=g))
                mod.bias.copy_(0.1 * torch.randn(c, generator=g))
                mod.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(c, generator=g))


def export(name, ctor, size, opset, out, seed, batch):
    torch.manual_seed(seed)
    kwargs = {"init_weights": False, "aux_logits": False} if name == "googlenet" else {}
    model = ctor(**kwargs) if kwargs else ctor()
    randomize(model, seed)
    model.eval()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn((batch, 3, size, size), generator=g)
    with torch.no_grad():
        y = model(x)
    path = os.path.join(out, name + ".onnx")
    torch.onnx.export(model, x, path, opset_version=opset, input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    np.save(os.path.join(out, name + ".input.npy"), x.numpy().astype(np.float32))
    np.save(os.path.join(out, name + ".output.npy"), y.numpy().astype(np.float32))
    print(f"{name}: opset {opset}, input {tuple(x.shape)}, output {tuple(y.shape)}, "
          f"{os.path.getsize(path)} bytes")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--full", action="store_true", help="full-size torchvision models at 224x224")
    ap.add_argument("--only", help="comma-separated model names")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    models = full_models() if args.full else small_models()
    only = set(args.only.split(",")) if args.only else None
    for i, (name, (ctor, size, opset)) in enumerate(sorted(models.items())):
        if only and name not in only:
            continue
        export(name, ctor, size, opset, args.out, 1234 + i, 2)


if __name__ == "__main__":
    main()
