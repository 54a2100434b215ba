#!/usr/bin/env python3
# tf_ops.py — focused cases for the TensorFlow importer's operator mapping, without TensorFlow: each case
# is a small frozen GraphDef written here with the project's own copies of TF's protos (Python protobuf)
# in TF's conventions (NHWC, HWIO filters, TF's SAME padding), run through `cloister run`, and compared
# with a numpy implementation of TF's semantics written here: SAME padding with odd sizes and stride 2,
# dilations, explicit padding, NCHW data_format, depthwise convolution, AvgPool at borders (padding not
# counted), MaxPool SAME, FusedBatchNormV3, BiasAdd, the activations, reductions, Pad/PadV2, ConcatV2 of
# NHWC tensors, StridedSlice with masks, Shape/Cast/ArgMax, MatMul with transposes, a small CNN chain.
# Usage: tf_ops.py CLOISTER SOURCE_ROOT SCRATCH_DIR
import os
import shutil
import subprocess
import sys

import numpy as np

cloister, root, scratch = sys.argv[1:4]
shutil.rmtree(scratch, ignore_errors=True)
os.makedirs(scratch)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tfgraph  # noqa: E402
from tfgraph import G  # noqa: E402

graph_pb2, types_pb2 = tfgraph.load_protos(root, scratch)
rng = np.random.default_rng(1616)
DT = tfgraph.DT


fails = passes = 0


def check(what, g, inputs, outname, want, tol=1e-4):
    global fails, passes
    p = os.path.join(scratch, what.replace(' ', '_').replace('/', '_')[:60] + '.pb')
    g.save(p)
    args = [cloister, 'run', '--model', p, '--threads', '1', '--force']
    for k, v in inputs.items():
        f = os.path.join(scratch, f'in_{k}.npy')
        np.save(f, v)
        args += ['--input', f'{k}={f}']
    out = os.path.join(scratch, 'out.npy')
    if os.path.exists(out):
        os.unlink(out)
    args += ['--output', f'{outname}={out}']
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    got = np.load(out) if r.returncode == 0 and os.path.exists(out) else None
    want = np.asarray(want)
    good = got is not None and got.shape == want.shape and got.dtype == want.dtype and \
        np.allclose(got, want, rtol=tol, atol=tol * max(1.0, float(np.abs(want).max()) if want.size else 1.0))
    if good:
        passes += 1
        print(f'ok   {what}')
    else:
        fails += 1
        err = np.abs(got - want).max() if got is not None and got.shape == want.shape else None
        print(f'FAIL {what}: rc={r.returncode} shape={None if got is None else got.shape} want {want.shape} '
              f'max err {err} {r.stderr.strip()[-300:]}')


# ---- numpy references of TF's semantics
def same_pads(n, k, s, d):
    out = -(-n // s)
    eff = (k - 1) * d + 1
    tot = max((out - 1) * s + eff - n, 0)
    return tot // 2, tot - tot // 2


def conv_ref(x, w, strides, dil, padding, explicit=None, depthwise=False):
    """x NHWC, w HWIO (depthwise: H W C M)."""
    n, h, wd, c = x.shape
    kh, kw = w.shape[:2]
    if padding == 'SAME':
        pt, pb = same_pads(h, kh, strides[0], dil[0])
        pl, pr = same_pads(wd, kw, strides[1], dil[1])
    elif padding == 'VALID':
        pt = pb = pl = pr = 0
    else:
        pt, pb, pl, pr = explicit
    xp = np.pad(x.astype(np.float64), ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    oh = (h + pt + pb - ((kh - 1) * dil[0] + 1)) // strides[0] + 1
    ow = (wd + pl + pr - ((kw - 1) * dil[1] + 1)) // strides[1] + 1
    co = w.shape[2] * w.shape[3] if depthwise else w.shape[3]
    y = np.zeros((n, oh, ow, co))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, i * strides[0]:i * strides[0] + (kh - 1) * dil[0] + 1:dil[0],
                       j * strides[1]:j * strides[1] + (kw - 1) * dil[1] + 1:dil[1], :]
            if depthwise:
                y[:, i, j, :] = np.einsum('nhwc,hwcm->ncm', patch, w).reshape(n, -1)
            else:
                y[:, i, j, :] = np.einsum('nhwc,hwco->no', patch, w)
    return y.astype(np.float32)


def pool_ref(x, k, s, padding, avg):
    n, h, wd, c = x.shape
    if padding == 'SAME':
        pt, pb = same_pads(h, k[0], s[0], 1)
        pl, pr = same_pads(wd, k[1], s[1], 1)
    else:
        pt = pb = pl = pr = 0
    oh = (h + pt + pb - k[0]) // s[0] + 1
    ow = (wd + pl + pr - k[1]) // s[1] + 1
    y = np.zeros((n, oh, ow, c), np.float64)
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * s[0] - pt, j * s[1] - pl
            r1, c1 = max(r0, 0), max(c0, 0)
            win = x[:, r1:min(r0 + k[0], h), c1:min(c0 + k[1], wd), :]
            y[:, i, j, :] = win.mean(axis=(1, 2)) if avg else win.max(axis=(1, 2))
    return y.astype(np.float32)


def r(*shape):
    return rng.standard_normal(shape).astype(np.float32)


# ---- convolutions
for (h, w_, k, s, d, pad) in [(7, 9, 3, 2, 1, 'SAME'), (8, 8, 3, 1, 1, 'SAME'), (9, 7, 4, 2, 1, 'SAME'),
                              (10, 10, 3, 1, 2, 'SAME'), (11, 9, 3, 2, 1, 'VALID'), (6, 6, 1, 1, 1, 'VALID'),
                              (5, 8, 2, 3, 1, 'SAME')]:
    x, wt = r(2, h, w_, 3), r(k, k, 3, 5)
    g = G()
    xi = g.ph('x')
    g.node('Conv2D', [xi, g.const(wt)], name='y', T=np.float32, strides=[1, s, s, 1], dilations=[1, d, d, 1],
           padding=pad, data_format='NHWC')
    check(f'Conv2D NHWC {h}x{w_} k{k} s{s} d{d} {pad}', g, {'x': x}, 'y', conv_ref(x, wt, (s, s), (d, d), pad))
x, wt = r(1, 7, 6, 4), r(3, 3, 4, 2)
g = G()
g.node('Conv2D', [g.ph('x'), g.const(wt)], name='y', T=np.float32, strides=[1, 2, 1, 1], padding='EXPLICIT',
       explicit_paddings=[0, 0, 1, 2, 0, 1, 0, 0])
check('Conv2D EXPLICIT padding, strides 2x1', g, {'x': x}, 'y', conv_ref(x, wt, (2, 1), (1, 1), 'E', (1, 2, 0, 1)))
x, wt = r(2, 3, 7, 7), r(3, 3, 3, 4)
g = G()
g.node('Conv2D', [g.ph('x'), g.const(wt)], name='y', T=np.float32, strides=[1, 1, 2, 2], padding='SAME',
       data_format='NCHW')
check('Conv2D NCHW SAME stride 2', g, {'x': x}, 'y',
      conv_ref(x.transpose(0, 2, 3, 1), wt, (2, 2), (1, 1), 'SAME').transpose(0, 3, 1, 2))
for s, m in [(1, 1), (2, 2)]:
    x, wt = r(2, 9, 8, 4), r(3, 3, 4, m)
    g = G()
    g.node('DepthwiseConv2dNative', [g.ph('x'), g.const(wt)], name='y', T=np.float32, strides=[1, s, s, 1],
           padding='SAME')
    check(f'DepthwiseConv2dNative SAME stride {s} multiplier {m}', g, {'x': x}, 'y',
          conv_ref(x, wt, (s, s), (1, 1), 'SAME', depthwise=True))
# ---- pooling
for (h, w_, k, s, pad, avg) in [(7, 7, 3, 2, 'SAME', True), (8, 9, 3, 2, 'SAME', True), (6, 6, 2, 2, 'VALID', True),
                                (7, 7, 3, 2, 'SAME', False), (9, 8, 3, 1, 'SAME', False), (8, 8, 2, 2, 'VALID', False)]:
    x = r(2, h, w_, 3)
    g = G()
    g.node('AvgPool' if avg else 'MaxPool', [g.ph('x')], name='y', T=np.float32, ksize=[1, k, k, 1],
           strides=[1, s, s, 1], padding=pad)
    check(f'{"AvgPool" if avg else "MaxPool"} {h}x{w_} k{k} s{s} {pad}', g, {'x': x}, 'y',
          pool_ref(x, (k, k), (s, s), pad, avg))
# ---- a small CNN chain: conv -> bias -> batchnorm -> relu6 -> depthwise -> relu -> maxpool -> conv ->
#      add (residual) -> mean over H,W -> matmul -> softmax: the NCHW form is kept between the convolutions
x = r(2, 9, 9, 3)
w1, b1 = r(3, 3, 3, 8), r(8)
sc, of, mu, var = r(8), r(8), r(8), np.abs(r(8)) + 0.5
wd_, w2, fcw = r(3, 3, 8, 1), r(1, 1, 8, 8), r(8, 5)
g = G()
xi = g.ph('x')
c1 = g.node('Conv2D', [xi, g.const(w1)], T=np.float32, strides=[1, 2, 2, 1], padding='SAME')
ba = g.node('BiasAdd', [c1, g.const(b1)], T=np.float32)
bn = g.node('FusedBatchNormV3', [ba, g.const(sc), g.const(of), g.const(mu), g.const(var)], T=np.float32,
            epsilon=0.001, is_training=False)
r6 = g.node('Relu6', [bn], T=np.float32)
dw = g.node('DepthwiseConv2dNative', [r6, g.const(wd_)], T=np.float32, strides=[1, 1, 1, 1], padding='SAME')
rl = g.node('Relu', [dw], T=np.float32)
mp = g.node('MaxPool', [rl], T=np.float32, ksize=[1, 2, 2, 1], strides=[1, 1, 1, 1], padding='SAME')
c2 = g.node('Conv2D', [mp, g.const(w2)], T=np.float32, strides=[1, 1, 1, 1], padding='VALID')
ad = g.node('AddV2', [c2, mp], T=np.float32)
mn = g.node('Mean', [ad, g.const(np.array([1, 2], np.int32))], T=np.float32, keep_dims=False)
mm = g.node('MatMul', [mn, g.const(fcw)], T=np.float32)
g.node('Softmax', [mm], name='y', T=np.float32)
h1 = conv_ref(x, w1, (2, 2), (1, 1), 'SAME') + b1
h1 = (h1 - mu) / np.sqrt(var + 0.001) * sc + of
h1 = np.clip(h1, 0, 6)
h2 = np.maximum(conv_ref(h1, wd_, (1, 1), (1, 1), 'SAME', depthwise=True), 0)
h3 = pool_ref(h2, (2, 2), (1, 1), 'SAME', False)
h4 = conv_ref(h3, w2, (1, 1), (1, 1), 'VALID') + h3
lo = h4.mean(axis=(1, 2)) @ fcw
e = np.exp(lo - lo.max(axis=1, keepdims=True))
check('CNN chain (conv, bias, FusedBatchNormV3, Relu6, depthwise, MaxPool, residual, Mean, MatMul, Softmax)',
      g, {'x': x}, 'y', (e / e.sum(axis=1, keepdims=True)).astype(np.float32))
# keeping NCHW across ops must not change what a consumer in TF layout sees: a chain ending in NHWC
g = G()
c1 = g.node('Conv2D', [g.ph('x'), g.const(w1)], T=np.float32, strides=[1, 1, 1, 1], padding='SAME')
el = g.node('Elu', [c1], T=np.float32)
sq = g.node('Square', [el], T=np.float32)
rs = g.node('Rsqrt', [g.node('AddV2', [sq, g.const(np.float32(1.0))], T=np.float32)], T=np.float32)
pd = g.node('Pad', [rs, g.const(np.array([[0, 0], [1, 2], [0, 1], [0, 0]], np.int32))], T=np.float32)
cc = g.node('ConcatV2', [pd, pd, g.const(np.int32(3))], T=np.float32, N=2)
g.node('StridedSlice', [cc, g.const(np.array([0, 1, 0, 2], np.int32)), g.const(np.array([0, -1, 0, 9], np.int32)),
                        g.const(np.array([1, 2, 1, 3], np.int32))], name='y', T=np.float32, Index=np.int32,
       begin_mask=0b0101, end_mask=0b0101)
c = conv_ref(x, w1, (1, 1), (1, 1), 'SAME')
el_ = np.where(c > 0, c, np.expm1(c))
rs_ = 1 / np.sqrt(el_ * el_ + 1)
pd_ = np.pad(rs_, ((0, 0), (1, 2), (0, 1), (0, 0)))
cc_ = np.concatenate([pd_, pd_], axis=3)
check('NHWC chain (Elu, Square, Rsqrt, Pad, ConcatV2 on channels, StridedSlice with masks)', g, {'x': x}, 'y',
      cc_[:, 1:-1:2, :, 2:9:3].astype(np.float32))
# ---- shapes, casts, reductions, arithmetic
x = r(3, 4, 5)
g = G()
sh = g.node('Shape', [g.ph('x')], out_type=np.int32)
g.node('Cast', [sh], name='y', SrcT=np.int32, DstT=np.float32)
check('Shape (int32) then Cast', g, {'x': x}, 'y', np.array([3, 4, 5], np.float32))
g = G()
g.node('ArgMax', [g.ph('x'), g.const(np.int32(2))], name='y', T=np.float32, output_type=np.int32)
check('ArgMax output_type int32', g, {'x': x}, 'y', x.argmax(axis=2).astype(np.int32))
g = G()
xi = g.ph('x')
s1 = g.node('Sum', [xi, g.const(np.array([2], np.int32))], T=np.float32, keep_dims=True)
m1 = g.node('Max', [xi, g.const(np.array([-1], np.int32))], T=np.float32, keep_dims=True)
d1 = g.node('RealDiv', [g.node('Sub', [s1, m1], T=np.float32), g.node('Maximum', [m1, g.const(np.float32(0.5))],
                                                                          T=np.float32)], T=np.float32)
g.node('Minimum', [d1, g.const(np.float32(2.0))], name='y', T=np.float32)
s_, m_ = x.sum(axis=2, keepdims=True), x.max(axis=2, keepdims=True)
check('Sum, Max (keep_dims), Sub, RealDiv, Maximum, Minimum', g, {'x': x}, 'y',
      np.minimum((s_ - m_) / np.maximum(m_, 0.5), 2.0).astype(np.float32))
g = G()
rsh = g.node('Reshape', [g.ph('x'), g.const(np.array([3, 20], np.int32))], T=np.float32)
ex = g.node('ExpandDims', [rsh, g.const(np.int32(1))], T=np.float32)
tr = g.node('Transpose', [ex, g.const(np.array([2, 0, 1], np.int32))], T=np.float32)
sq = g.node('Squeeze', [tr], T=np.float32, squeeze_dims=[2])
wmat = r(4, 20)
g.node('MatMul', [sq, g.const(wmat)], name='y', T=np.float32, transpose_a=True, transpose_b=True)
check('Reshape, ExpandDims, Transpose, Squeeze, MatMul transpose_a/transpose_b', g, {'x': x}, 'y',
      (x.reshape(3, 20) @ wmat.T).astype(np.float32))
g = G()
g.node('PadV2', [g.ph('x'), g.const(np.array([[1, 0], [0, 2], [1, 1]], np.int32)), g.const(np.float32(-7))],
       name='y', T=np.float32)
check('PadV2 with a constant value', g, {'x': x}, 'y', np.pad(x, ((1, 0), (0, 2), (1, 1)), constant_values=-7))
g = G()
g.node('Tanh', [g.node('Sigmoid', [g.ph('x')], T=np.float32)], name='y', T=np.float32)
check('Sigmoid, Tanh', g, {'x': x}, 'y', np.tanh(1 / (1 + np.exp(-x))).astype(np.float32))
g = G()
g.node('BatchMatMulV2', [g.ph('x'), g.const(np.ones((3, 5, 2), np.float32))], name='y', T=np.float32)
check('BatchMatMulV2', g, {'x': x}, 'y', (x @ np.ones((3, 5, 2), np.float32)).astype(np.float32))

# ---- refusals
g = G()
g.node('Conv2D', [g.ph('x'), g.const(r(3, 3, 3, 2))], name='y', T=np.float32, strides=[1, 1, 1, 1], padding='NOPE')
p = os.path.join(scratch, 'badpad.pb')
g.save(p)
rr = subprocess.run([cloister, 'run', '--model', p, '--input', 'x=' + os.path.join(scratch, 'in_x.npy')],
                    capture_output=True, text=True)
ok_ = rr.returncode == 1 and "node 'y' (Conv2D): padding 'NOPE' is not supported" in rr.stderr
passes += ok_
fails += not ok_
print(('ok  ' if ok_ else 'FAIL') + ' an unsupported padding is refused naming node and op', '' if ok_ else rr.stderr)

print(f'{passes} passed, {fails} failed')
sys.exit(1 if fails else 0)
