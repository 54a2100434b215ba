#!/usr/bin/env python3
# tf_models.py — the TensorFlow importer end to end through `cloister run` on the real TF files in
# ../shared/tf-models (TF Serving's half_plus_two family, tfjs-node's and tf-rust's models, tf2onnx's
# frozen graphs): known answers (y = 0.5x + 2 / + 3, x*3, x*2, x+y, x*y), frozen MLPs against a numpy
# forward pass of the weights read from the GraphDef here (with the project's own protos, through
# Python protobuf), the same network as frozen graph and as SavedModel giving the same outputs; and the
# hostile cases: bad_half_plus_two, an unsupported operator, truncated / bit-flipped / CRC-broken
# bundles, truncated and garbage graphs — each refused with its message, never a crash.
# Usage: tf_models.py CLOISTER SOURCE_ROOT SCRATCH_DIR [TF_MODELS_DIR]
import os
import shutil
import subprocess
import sys

import numpy as np

import tfcheck  # tests/integration/tfcheck.py

cloister, root, scratch = sys.argv[1:4]
tfm = tfcheck.tf_models_dir(root, sys.argv[4] if len(sys.argv) > 4 else None)
if not os.path.isdir(tfm):
    print(f'SKIP: no tf-models directory ({tfm})')
    sys.exit(77)
shutil.rmtree(scratch, ignore_errors=True)
os.makedirs(scratch)
tally = tfcheck.Tally()
ok = tally.ok


def npy(name, arr):
    p = os.path.join(scratch, name + '.npy')
    np.save(p, arr)
    return p


def run(model, inputs, outputs=(), extra=()):
    """Runs cloister; returns (rc, stderr, {output name: array})."""
    args = [cloister, 'run', '--model', model, '--threads', '1', '--force', *extra]
    for k, v in inputs.items():
        args += ['--input', f'{k}={npy("in_" + k, v)}']
    outs = {}
    for o in outputs:
        p = os.path.join(scratch, 'out_' + o.replace('/', '_') + '.npy')
        if os.path.exists(p):
            os.unlink(p)
        args += ['--output', f'{o}={p}']
        outs[o] = p
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    res = {o: np.load(p) for o, p in outs.items() if r.returncode == 0 and os.path.exists(p)}
    return r.returncode, r.stderr, res


def expect_out(what, model, inputs, output, want, extra=(), tol=1e-6):
    rc, err, res = run(model, inputs, [output], extra)
    got = res.get(output)
    good = rc == 0 and got is not None and got.shape == np.asarray(want).shape and \
        got.dtype == np.asarray(want).dtype and np.allclose(got, want, rtol=tol, atol=tol)
    ok(good, what, f'rc={rc} got={got!r} want={want!r} {err.strip()[-300:]}')
    return got


def expect_fail(what, model, inputs, pattern, extra=()):
    rc, err, _ = run(model, inputs, [], extra)
    ok(rc == 1 and pattern in err, what, f'rc={rc} stderr={err.strip()[-400:]!r}')


tfs = os.path.join(tfm, 'tfserving')
x2 = np.array([[1], [2]], np.float32)
x3 = np.array([[2], [3], [4]], np.float32)
# ---- TF Serving's half_plus_two family (TF1 exports: VariableV2 / VarHandleOp restored by the saver graph)
for d in ['saved_model_half_plus_two_cpu', 'saved_model_half_plus_two_gpu', 'saved_model_half_plus_two_mkl',
          'saved_model_half_plus_two_mlmd', 'saved_model_half_plus_two_gpu_trt',
          'saved_model_half_plus_two_cpu_with_saved_model_config',
          'saved_model_half_plus_two_cpu_with_empty_saved_model_config']:
    v = os.path.join(tfs, d, '00000123')
    expect_out(f'{d}: [1,2] -> [2.5,3]', v, {'x': x2}, 'y', 0.5 * x2 + 2)
    expect_out(f'{d}: [2,3,4] -> [3,3.5,4]', v, {'x': x3}, 'y', 0.5 * x3 + 2)
for ver in ['00000123', '00000124']:
    expect_out(f'half_plus_two_2_versions/{ver}', os.path.join(tfs, 'saved_model_half_plus_two_2_versions', ver),
               {'x': x3}, 'y', 0.5 * x3 + 2)
expect_out('half_plus_three: [2,3,4] -> [4,4.5,5]', os.path.join(tfs, 'saved_model_half_plus_three', '00000123'),
           {'x': x3}, 'y', 0.5 * x3 + 3)
# other signatures of the same graph: x2 -> y3 = 0.5 x2 + 3
expect_out('half_plus_two_cpu signature regress_x2_to_y3 (x2 -> 0.5 x2 + 3)',
           os.path.join(tfs, 'saved_model_half_plus_two_cpu', '00000123'), {'inputs': x3}, 'outputs', 0.5 * x3 + 3,
           extra=['--signature', 'regress_x2_to_y3'])
expect_fail('an unknown signature is refused, naming the ones there are',
            os.path.join(tfs, 'saved_model_half_plus_two_cpu', '00000123'), {'x': x3},
            "no signature 'nope' (its signatures: ", extra=['--signature', 'nope'])
# ---- TF2 exports: VarHandleOp/ReadVariableOp, StatefulPartitionedCall inlined from the function library
tf2 = os.path.join(tfs, 'saved_model_half_plus_two_tf2_cpu', '00000123')
expect_out('half_plus_two_tf2_cpu: [1] -> [2.5]', tf2, {'x': np.array([1], np.float32)}, 'y',
           np.array([2.5], np.float32))
expect_out('half_plus_two_tf2_cpu: [4] -> [4]', tf2, {'x': np.array([4], np.float32)}, 'y',
           np.array([4], np.float32))
expect_out('half_plus_two_tf2_cpu regress_x2_to_y3: [2] -> [4]', tf2, {'inputs': np.array([2], np.float32)},
           'outputs', np.array([4], np.float32), extra=['--signature', 'regress_x2_to_y3'])
tfjs = os.path.join(tfm, 'tfjs-node', 'test_objects', 'saved_model')
expect_out('tfjs times_three_float: 2 -> 6', os.path.join(tfjs, 'times_three_float'),
           {'x': np.array(2, np.float32)}, 'output_0', np.array(6, np.float32))
expect_out('tfjs times_two_int: 7 -> 14', os.path.join(tfjs, 'times_two_int'),
           {'x': np.array(7, np.int32)}, 'output_0', np.array(14, np.int32))
expect_out('tfjs module_with_multiple_signatures timestwo: 3 -> 6',
           os.path.join(tfjs, 'module_with_multiple_signatures'), {'x': np.array(3, np.float32)}, 'output_0',
           np.array(6, np.float32), extra=['--signature', 'timestwo'])
tfj = os.path.join(tfm, 'tf-java', 'resources', 'saved_model_using_python', 'model')
a = np.array(1.5, np.float32)
expect_out('tf-java add signature: a + b (PartitionedCall inlined)', tfj, {'a': a, 'b': a}, 'output_0',
           np.array(3.0, np.float32), extra=['--signature', 'add'])
# ---- frozen GraphDefs
rs = os.path.join(tfm, 'tf-rust')
expect_out('tf-rust addition.pb: x + y', os.path.join(rs, 'examples', 'addition', 'model.pb'),
           {'x': np.array(3, np.int32), 'y': np.array(39, np.int32)}, 'z', np.array(42, np.int32))
am, bm = np.array(2.5, np.float32), np.array(-4, np.float32)
expect_out('tf-rust multiplication.pb: a * b', os.path.join(rs, 'tensorflow-sys-assets', 'multiplication.pb'),
           {'a': am, 'b': bm}, 'c', am * bm)

# numpy references from the frozen graphs' own Const weights, read with the project's protos
pyproto = os.path.join(scratch, 'py')
os.makedirs(pyproto)
protos = [os.path.relpath(os.path.join(dp, f), os.path.join(root, 'proto'))
          for dp, _, fs in os.walk(os.path.join(root, 'proto', 'tensorflow', 'core')) for f in fs if f.endswith('.proto')]
subprocess.run(['protoc', '-I', os.path.join(root, 'proto'), '--python_out', pyproto, *protos], check=True)
sys.path.insert(0, pyproto)
from tensorflow.core.framework import graph_pb2  # noqa: E402


def consts(path):
    g = graph_pb2.GraphDef()
    g.ParseFromString(open(path, 'rb').read())
    out = {}
    for n in g.node:
        if n.op == 'Const':
            t = n.attr['value'].tensor
            shape = [d.size for d in t.tensor_shape.dim]
            if t.dtype == 1:
                v = np.frombuffer(t.tensor_content, np.float32) if t.tensor_content else np.array(t.float_val, np.float32)
                out[n.name] = (v.reshape(shape) if v.size == int(np.prod(shape)) else np.full(shape, v[0], np.float32))
    return g, out


def mlp(path, acts):
    g, c = consts(path)
    mats = [n for n in g.node if n.op == 'MatMul']
    biases = [n for n in g.node if n.op == 'BiasAdd']

    def const_of(name):
        name = name.split(':')[0]
        while name not in c:
            name = next(n for n in g.node if n.name == name).input[0].split(':')[0]
        return c[name]

    rng = np.random.default_rng(16)
    x = rng.standard_normal((3, const_of(mats[0].input[1]).shape[0])).astype(np.float32)
    h = x.astype(np.float64)
    for i, (mm, ba) in enumerate(zip(mats, biases)):
        h = h @ const_of(mm.input[1]) + const_of(ba.input[1])
        h = acts[i](h)
    return g, x, h.astype(np.float32)


relu = lambda v: np.maximum(v, 0)  # noqa: E731
sigm = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
ident = lambda v: v  # noqa: E731
t2 = os.path.join(tfm, 'tf2onnx')
for name, acts in [('fc-layers', [relu, relu, ident]), ('ae0', [sigm, sigm, sigm, sigm])]:
    path = os.path.join(t2, name, 'frozen.pb')
    g, x, want = mlp(path, acts)
    inp = next(n.name for n in g.node if n.op == 'Placeholder')
    consumed = {i.split(':')[0].lstrip('^') for n in g.node for i in n.input}
    outn = [n.name for n in g.node if n.name not in consumed and n.op not in ('Const', 'NoOp', 'Placeholder')][0]
    expect_out(f'tf2onnx {name} frozen graph against numpy (batch 3)', path, {inp: x}, outn, want, tol=1e-4)
# the same regression network frozen and as a SavedModel
xr = np.array([0.5, 1.0, 2.0, -3.0], np.float32)
rc1, e1, r1 = run(os.path.join(t2, 'regression', 'graphdef', 'frozen.pb'), {'X': xr}, ['pred'])
rc2, e2, r2 = run(os.path.join(t2, 'regression', 'saved_model'), {'X': xr}, ['pred'])
ok(rc1 == 0 and rc2 == 0 and 'pred' in r1 and 'pred' in r2 and np.allclose(r1['pred'], r2['pred'], atol=1e-6)
   and not np.allclose(r1['pred'], 0), 'tf2onnx regression: frozen graph and SavedModel agree', f'{e1} {e2}')

# ---- hostile and refused inputs
expect_fail('bad_half_plus_two is refused as a legacy export', os.path.join(tfs, 'bad_half_plus_two', '00000123'),
            {'x': x3}, 'legacy SessionBundle export (export.meta)')
expect_fail('an unsupported operator is named with its node', os.path.join(t2, 'gru', 'frozen.pb'),
            {'x': x3}, "unsupported TensorFlow operator 'RandomUniform' (node '")
src = os.path.join(tfs, 'saved_model_half_plus_two_cpu', '00000123')


def variant(tag, mutate):
    d = os.path.join(scratch, tag)
    shutil.copytree(src, d)
    mutate(d)
    return d


def flip(path, off):
    b = bytearray(open(path, 'rb').read())
    b[off % len(b)] ^= 0x40
    open(path, 'wb').write(bytes(b))


def cut(path, n):
    b = open(path, 'rb').read()
    open(path, 'wb').write(b[:n])


idx = 'variables/variables.index'
dat = 'variables/variables.data-00000-of-00001'
expect_fail('bit-flipped variables.data fails its CRC32C', variant('flipdata', lambda d: flip(os.path.join(d, dat), 3)),
            {'x': x3}, 'fails its CRC32C check')
expect_fail('bit-flipped variables.index block fails its CRC32C',
            variant('flipidx', lambda d: flip(os.path.join(d, idx), 5)), {'x': x3}, 'fails its CRC32C check')
expect_fail('truncated variables.index is refused', variant('cutidx', lambda d: cut(os.path.join(d, idx), 100)),
            {'x': x3}, 'variables.index: ')
expect_fail('truncated variables.data is refused', variant('cutdata', lambda d: cut(os.path.join(d, dat), 6)),
            {'x': x3}, 'truncated?')
expect_fail('a missing data shard is refused', variant('nodata', lambda d: os.unlink(os.path.join(d, dat))),
            {'x': x3}, 'which is missing')
expect_fail('the magic of variables.index broken', variant('magic', lambda d: flip(os.path.join(d, idx), -1)),
            {'x': x3}, 'no SSTable magic')
for n in [1, 10, 100, 1000, 5000]:
    expect_fail(f'saved_model.pb truncated to {n} bytes is refused',
                variant(f'cutpb{n}', lambda d, n=n: cut(os.path.join(d, 'saved_model.pb'), n)), {'x': x3}, 'saved_model')
garbage = os.path.join(scratch, 'garbage.pb')
open(garbage, 'wb').write(b'\x0a\x05hello' + os.urandom(64))
rc, err, _ = run(garbage, {'x': x3})
ok(rc == 1 and 'Traceback' not in err and err.strip(), 'a garbage GraphDef is refused with a message', err)
# every truncation of a small frozen graph: refused or loaded, never a crash (exit 1 or success)
fc = open(os.path.join(rs, 'examples', 'addition', 'model.pb'), 'rb').read()
crashes = 0
for n in range(1, len(fc)):
    p = os.path.join(scratch, 'trunc.pb')
    open(p, 'wb').write(fc[:n])
    r = subprocess.run([cloister, 'run', '--model', p, '--input', npy('s', np.array(1, np.int32)),
                        '--input', npy('s2', np.array(1, np.int32))], capture_output=True, timeout=60)
    crashes += r.returncode not in (0, 1, 2)
ok(crashes == 0, f'every truncation of addition.pb ({len(fc) - 1}) is refused or runs, no crash', f'{crashes} crashed')

tally.finish()
