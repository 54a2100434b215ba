#!/usr/bin/env python3
# tf_cnn.py — whole CNNs through the TensorFlow importer without TensorFlow: torchvision's ResNet-50
# (v1.5: the stride on the 3x3 convolution), MobileNet v2 and Inception v3, seeded random weights, in
# eval mode, traced with torch.fx and written as frozen GraphDefs the way TF writes these networks: NHWC,
# HWIO filters, DepthwiseConv2dNative for depthwise layers, FusedBatchNormV3, Relu6, TF's SAME padding
# where it is what PyTorch pads and an explicit Pad + VALID where it is not (stride-2 convolutions and
# pooling, as TF's official ResNet does), AvgPool over an explicit zero Pad where PyTorch counts the
# padding, Mean for the global pool, MatMul + BiasAdd for the classifier. Each GraphDef runs through
# `cloister run` and must give PyTorch's logits (max abs error <= 1e-4 of their range).
# Usage: tf_cnn.py CLOISTER SOURCE_ROOT SCRATCH_DIR [--size N] [--only NAME] [--keep]
#   --keep leaves the GraphDefs and the ONNX export of the same networks in SCRATCH_DIR (the benchmark
#   bench/engine/tf_vs_onnx.sh compares the two).
import argparse
import os
import shutil
import subprocess
import sys

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument('cloister')
ap.add_argument('root')
ap.add_argument('scratch')
ap.add_argument('--size', type=int, default=0, help='input height and width (default: 96, Inception 107)')
ap.add_argument('--only', action='append')
ap.add_argument('--keep', action='store_true')
args = ap.parse_args()

shutil.rmtree(args.scratch, ignore_errors=True)
os.makedirs(args.scratch)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tfgraph  # noqa: E402
from tfgraph import G  # noqa: E402

tfgraph.load_protos(args.root, args.scratch)
import torch  # noqa: E402
import torch.fx  # noqa: E402
import torchvision  # noqa: E402

torch.set_num_threads(2)
F = torch.nn.functional


def np32(t):
    return t.detach().numpy().astype(np.float32)


def pads_are_same(k, s, d, p):
    """True when TF's SAME padding equals PyTorch's symmetric padding p (stride 1, odd kernel)."""
    return s == 1 and (k - 1) * d % 2 == 0 and p == (k - 1) * d // 2


class Writer:
    """torch.fx graph -> GraphDef, NHWC."""

    def __init__(self, model):
        self.g = G()
        self.m = model
        self.mods = dict(model.named_modules())
        self.v = {}

    def pad(self, x, ph, pw, value=0.0):
        if ph == 0 and pw == 0:
            return x
        p = np.array([[0, 0], [ph, ph], [pw, pw], [0, 0]], np.int32)
        if value == 0.0:
            return self.g.node('Pad', [x, self.g.const(p)], T=np.float32, Tpaddings=np.int32)
        return self.g.node('PadV2', [x, self.g.const(p), self.g.const(np.array(value, np.float32))], T=np.float32,
                           Tpaddings=np.int32)

    def conv(self, x, c):
        kh, kw = c.kernel_size
        sh, sw = c.stride
        dh, dw = c.dilation
        ph, pw = c.padding
        w = np32(c.weight)
        same = pads_are_same(kh, sh, dh, ph) and pads_are_same(kw, sw, dw, pw)
        if not same:
            x = self.pad(x, ph, pw)
        attrs = dict(T=np.float32, strides=[1, sh, sw, 1], dilations=[1, dh, dw, 1],
                     padding='SAME' if same else 'VALID')
        if c.groups == 1:
            y = self.g.node('Conv2D', [x, self.g.const(w.transpose(2, 3, 1, 0).copy())], **attrs)
        elif c.groups == c.in_channels:
            mult = c.out_channels // c.in_channels
            hwcm = w.reshape(c.in_channels, mult, kh, kw).transpose(2, 3, 0, 1).copy()
            y = self.g.node('DepthwiseConv2dNative', [x, self.g.const(hwcm)], **attrs)
        else:
            raise NotImplementedError(f'grouped convolution with {c.groups} groups')
        if c.bias is not None:
            y = self.g.node('BiasAdd', [y, self.g.const(np32(c.bias))], T=np.float32)
        return y

    def pool(self, x, kind, k, s, p, ceil=False, count_pad=True):
        k = (k, k) if isinstance(k, int) else tuple(k)
        s = k if s is None or s == [] else ((s, s) if isinstance(s, int) else tuple(s))
        p = (p, p) if isinstance(p, int) else tuple(p)
        if ceil:
            raise NotImplementedError('ceil_mode pooling')
        same = pads_are_same(k[0], s[0], 1, p[0]) and pads_are_same(k[1], s[1], 1, p[1])
        if kind == 'MaxPool' and not same:
            x = self.pad(x, p[0], p[1], value=float(np.finfo(np.float32).min))
            same = False
        elif kind == 'AvgPool' and (p[0] or p[1]):
            if not count_pad:
                raise NotImplementedError('AvgPool excluding padding with explicit padding')
            x = self.pad(x, p[0], p[1])  # PyTorch counts the padded zeros: TF's VALID over a zero Pad
            same = False
        return self.g.node(kind, [x], T=np.float32, ksize=[1, k[0], k[1], 1], strides=[1, s[0], s[1], 1],
                           padding='SAME' if same and (p[0] or p[1]) else 'VALID')

    def mean_hw(self, x):
        return self.g.node('Mean', [x, self.g.const(np.array([1, 2], np.int32))], T=np.float32, Tidx=np.int32,
                           keep_dims=True)

    def module(self, mod, x):
        g = self.g
        if isinstance(mod, torch.nn.Conv2d):
            return self.conv(x, mod)
        if isinstance(mod, torch.nn.BatchNorm2d):
            return g.node('FusedBatchNormV3', [x, g.const(np32(mod.weight)), g.const(np32(mod.bias)),
                                              g.const(np32(mod.running_mean)), g.const(np32(mod.running_var))],
                          T=np.float32, U=np.float32, epsilon=float(mod.eps), is_training=False,
                          data_format='NHWC')
        if isinstance(mod, torch.nn.ReLU):
            return g.node('Relu', [x], T=np.float32)
        if isinstance(mod, torch.nn.ReLU6):
            return g.node('Relu6', [x], T=np.float32)
        if isinstance(mod, (torch.nn.Dropout, torch.nn.Identity)):
            return x
        if isinstance(mod, torch.nn.MaxPool2d):
            return self.pool(x, 'MaxPool', mod.kernel_size, mod.stride, mod.padding, mod.ceil_mode)
        if isinstance(mod, torch.nn.AdaptiveAvgPool2d):
            assert tuple(np.broadcast_to(mod.output_size, 2)) == (1, 1), mod.output_size
            return self.mean_hw(x)
        if isinstance(mod, torch.nn.Linear):
            y = g.node('MatMul', [x, g.const(np32(mod.weight).T.copy())], T=np.float32, transpose_a=False,
                       transpose_b=False)
            return g.node('BiasAdd', [y, g.const(np32(mod.bias))], T=np.float32)
        raise NotImplementedError(type(mod).__name__)

    def function(self, fn, a, kw):
        g = self.g
        if fn in (torch.add, __import__('operator').add):
            return g.node('AddV2', [a[0], a[1]], T=np.float32)
        if fn is torch.flatten:
            # after the global pool H = W = 1: NHWC and NCHW flatten alike
            return g.node('Reshape', [a[0], g.const(np.array([-1, self.channels(a[0])], np.int32))], T=np.float32,
                          Tshape=np.int32)
        if fn is torch.cat:
            assert kw.get('dim', a[1] if len(a) > 1 else 0) == 1
            xs = list(a[0])
            return g.node('ConcatV2', xs + [g.const(np.array(3, np.int32))], T=np.float32, N=len(xs), Tidx=np.int32)
        if fn is F.adaptive_avg_pool2d:
            return self.mean_hw(a[0])
        if fn is F.max_pool2d:
            return self.pool(a[0], 'MaxPool', a[1] if len(a) > 1 else kw['kernel_size'],
                             kw.get('stride', a[2] if len(a) > 2 else None), kw.get('padding', 0))
        if fn is F.avg_pool2d:
            return self.pool(a[0], 'AvgPool', a[1] if len(a) > 1 else kw['kernel_size'],
                             kw.get('stride', a[2] if len(a) > 2 else None), kw.get('padding', 0),
                             count_pad=kw.get('count_include_pad', True))
        if fn is F.dropout:
            return a[0]
        if fn is F.relu:
            return g.node('Relu', [a[0]], T=np.float32)
        raise NotImplementedError(getattr(fn, '__name__', str(fn)))

    def channels(self, name):
        return self.shapes[name][1]

    def write(self, example):
        gm = torch.fx.symbolic_trace(self.m)
        # shapes (NCHW) of every traced value, for the flatten's width
        self.shapes = {}
        interp = torch.fx.Interpreter(gm)
        orig = interp.run_node

        def run_node(n):
            r = orig(n)
            if isinstance(r, torch.Tensor):
                self.shapes[n.name] = tuple(r.shape)
            return r
        interp.run_node = run_node
        interp.run(example)
        names = {}
        out = None
        for n in gm.graph.nodes:
            def arg(v):
                if isinstance(v, torch.fx.Node):
                    return names[v.name]
                if isinstance(v, (list, tuple)):
                    return type(v)(arg(i) for i in v)
                return v
            a = [arg(v) for v in n.args]
            kw = {k: arg(v) for k, v in n.kwargs.items()}
            if n.op == 'placeholder':
                y = self.g.ph('input')
            elif n.op == 'call_module':
                y = self.module(self.mods[n.target], a[0])
            elif n.op == 'call_function':
                y = self.function(n.target, a, kw)
            elif n.op == 'output':
                out = a[0]
                continue
            else:
                raise NotImplementedError(f'{n.op} {n.target}')
            names[n.name] = y
            self.shapes[y] = self.shapes.get(n.name)  # the GraphDef name's NCHW shape, for channels()
        self.g.node('Identity', [out], name='logits', T=np.float32)
        return self.g


def build(name, size):
    torch.manual_seed(13)
    if name == 'resnet50':
        m = torchvision.models.resnet50(weights=None)
    elif name == 'mobilenet_v2':
        m = torchvision.models.mobilenet_v2(weights=None)
    elif name == 'inception_v3':
        m = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True)
    else:
        raise SystemExit(f'unknown model {name}')
    # batch-norm statistics of the network's own activations (two batches in training mode, cumulative
    # averages), affine parameters random: every BN does something and the logits stay in range
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = None
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.1, 0.1)
    m.train()
    with torch.no_grad():
        for _ in range(2):
            m(torch.rand(4, 3, size, size))
    return m.eval()


passes = fails = 0
models = args.only or ['resnet50', 'mobilenet_v2', 'inception_v3']
for name in models:
    size = args.size or (107 if name == 'inception_v3' else 96)
    m = build(name, size)
    torch.manual_seed(7)
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        want = m(x).numpy()
        try:
            g = Writer(m).write(x)
        except NotImplementedError as e:
            fails += 1
            print(f'FAIL {name}: the writer cannot express {e}')
            continue
    pb = os.path.join(args.scratch, f'{name}.pb')
    g.save(pb)
    if args.keep:
        np.save(os.path.join(args.scratch, f'{name}.input_nchw.npy'), x.numpy())
        torch.onnx.export(m, x, os.path.join(args.scratch, f'{name}.onnx'), opset_version=17,
                          input_names=['input'], output_names=['logits'],
                          dynamic_axes={'input': {0: 'batch'}, 'logits': {0: 'batch'}})
    xin = os.path.join(args.scratch, f'{name}.input.npy')
    np.save(xin, x.numpy().transpose(0, 2, 3, 1).copy())  # NHWC, as the GraphDef takes it
    out = os.path.join(args.scratch, f'{name}.out.npy')
    r = subprocess.run([args.cloister, 'run', '--model', pb, '--input', f'input={xin}', '--output',
                        f'logits={out}', '--threads', '2', '--force'], capture_output=True, text=True, timeout=600)
    got = np.load(out) if r.returncode == 0 and os.path.exists(out) else None
    rng = float(want.max() - want.min())
    err = float(np.abs(got - want).max()) if got is not None and got.shape == want.shape else None
    nodes = len(g.g.node)
    if err is not None and err <= 1e-4 * max(rng, 1e-6):
        passes += 1
        print(f'ok   {name} {size}x{size}: {nodes} GraphDef nodes, max abs error {err:.2e} of range {rng:.3g}')
    else:
        fails += 1
        print(f'FAIL {name} {size}x{size}: rc={r.returncode} got {None if got is None else got.shape} want '
              f'{want.shape} max err {err} (range {rng:.3g}) {r.stderr.strip()[-400:]}')
print(f'{passes} passed, {fails} failed')
sys.exit(1 if fails else 0)
