#!/usr/bin/env python3
# serve_tf_metadata.py — GetModelMetadata of a TensorFlow SavedModel through the real `cloister serve`:
# TF Serving's half_plus_two (saved_model_half_plus_two_cpu, version 00000123) served as model "default";
# the REST /v1/models/default/metadata answer is compared field by field with TF Serving's own expected
# answer (tfserving/half_plus_two_model_metadata.json), and the gRPC GetModelMetadata answer (python3-grpcio
# stubs generated from proto/) with the same file. Deliberate differences, asserted as such so that a
# change shows: cloister serves one signature_def per SavedModel version (serving_default), so the four
# other signatures of the file (classify/regress over tf.Example, regress_x2_to_y3) are absent; and hostile
# metadata requests (unknown model, unknown version) get TF Serving's NOT_FOUND.
# Usage: serve_tf_metadata.py CLOISTER SOURCE_ROOT SCRATCH_DIR PROTO_DIR [TF_MODELS_DIR]
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import tfcheck  # tests/integration/tfcheck.py

cloister, root, scratch, proto = sys.argv[1:5]
proto = os.path.abspath(proto)
tfm = tfcheck.tf_models_dir(root, sys.argv[5] if len(sys.argv) > 5 else None)
model = os.path.join(tfm, 'tfserving', 'saved_model_half_plus_two_cpu')
expected_path = os.path.join(tfm, 'tfserving', 'half_plus_two_model_metadata.json')
if not os.path.isdir(model) or not os.path.isfile(expected_path):
    print(f'SKIP: no half_plus_two model or metadata file under {tfm}')
    sys.exit(77)
shutil.rmtree(scratch, ignore_errors=True)
os.makedirs(scratch)
tally = tfcheck.Tally()
ok = tally.ok


def free_ports(n):
    s = [socket.socket() for _ in range(n)]
    for x in s:
        x.bind(('127.0.0.1', 0))
    ports = [x.getsockname()[1] for x in s]
    for x in s:
        x.close()
    return ports


def rest(port, path):
    try:
        with urllib.request.urlopen(f'http://127.0.0.1:{port}{path}', timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b'{}')


# Python stubs from the project's protos (as serve_lib.sh make_py does)
py = os.path.join(scratch, 'py')
os.makedirs(py)
protos = [os.path.relpath(os.path.join(d, f), proto) for d, _, fs in os.walk(proto) for f in fs if f.endswith('.proto')]
subprocess.run(['protoc', '-I.', '--python_out=' + py] + protos, cwd=proto, check=True)
subprocess.run([sys.executable, '-m', 'grpc_tools.protoc', '-I' + proto, '-I/usr/include', '--grpc_python_out=' + py,
                'tensorflow_serving/apis/prediction_service.proto'], check=True)
sys.path.insert(0, py)
import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from tensorflow_serving.apis import get_model_metadata_pb2, prediction_service_pb2_grpc  # noqa: E402

grpc_port, rest_port = free_ports(2)
log = open(os.path.join(scratch, 'serve.log'), 'w')
srv = subprocess.Popen([cloister, 'serve', '--plaintext', '--host', '127.0.0.1', '--port', str(grpc_port),
                        '--rest_api_port', str(rest_port), '--model_base_path', model, '--engine-threads', '1'],
                       stdout=log, stderr=subprocess.STDOUT)
try:
    up = False
    for _ in range(200):
        if srv.poll() is not None:
            break
        try:
            st, body = rest(rest_port, '/v1/models/default')
            if st == 200 and any(v.get('state') == 'AVAILABLE' for v in body.get('model_version_status', [])):
                up = True
                break
        except OSError:
            pass
        time.sleep(0.05)
    ok(up, 'cloister serve --model_base_path saved_model_half_plus_two_cpu: version 123 AVAILABLE')
    if not up:
        log.flush()
        print(open(os.path.join(scratch, 'serve.log')).read())
        sys.exit(1)

    want = json.load(open(expected_path))
    want_sigs = want['metadata']['signature_def']['signature_def']
    # served: serving_default only (one signature_def per version); the others are a known gap
    absent = sorted(k for k in want_sigs if k != 'serving_default')

    def compare(src, got):
        ok(got.get('model_spec') == want['model_spec'], f'{src}: model_spec', f"{got.get('model_spec')}")
        sigs = got.get('metadata', {}).get('signature_def', {}).get('signature_def', {})
        ok(sorted(sigs) == ['serving_default'], f'{src}: signatures are serving_default (TF also has {absent})',
           f'got {sorted(sigs)}')
        g, w = sigs.get('serving_default', {}), want_sigs['serving_default']
        ok(sorted(g) == sorted(w), f'{src}: serving_default fields {sorted(w)}', f'got {sorted(g)}')
        for field in ('method_name', 'defaults'):
            ok(g.get(field) == w[field], f'{src}: {field} = {w[field]!r}', f'got {g.get(field)!r}')
        for io in ('inputs', 'outputs'):
            ok(sorted(g.get(io, {})) == sorted(w[io]), f'{src}: {io} aliases {sorted(w[io])}',
               f'got {sorted(g.get(io, {}))}')
            for alias, wt in w[io].items():
                gt = g.get(io, {}).get(alias, {})
                for f in ('name', 'dtype', 'tensor_shape'):
                    ok(gt.get(f) == wt[f], f'{src}: {io} {alias} {f} = {json.dumps(wt[f])}', f'got {gt.get(f)!r}')

    st, got = rest(rest_port, '/v1/models/default/metadata')
    ok(st == 200, 'REST GET /v1/models/default/metadata: 200', f'got {st}')
    compare('REST', got)
    st, _ = rest(rest_port, '/v1/models/default/versions/123/metadata')
    ok(st == 200, 'REST metadata of version 123: 200', f'got {st}')
    st, body = rest(rest_port, '/v1/models/default/versions/7/metadata')
    ok(st == 404, 'REST metadata of a version not served: 404', f'got {st} {body}')
    st, body = rest(rest_port, '/v1/models/nosuch/metadata')
    ok(st == 404, 'REST metadata of an unknown model: 404', f'got {st} {body}')

    # gRPC: the Any unpacked into SignatureDefMap, printed as TF Serving's REST layer prints it
    ch = grpc.insecure_channel(f'127.0.0.1:{grpc_port}')
    stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=['signature_def'])
    req.model_spec.name = 'default'
    resp = stub.GetModelMetadata(req, timeout=20)
    m = get_model_metadata_pb2.SignatureDefMap()
    ok(resp.metadata['signature_def'].Unpack(m), 'gRPC GetModelMetadata: signature_def is a SignatureDefMap')
    sdm = json_format.MessageToDict(m, preserving_proto_field_name=True, including_default_value_fields=True)
    spec = json_format.MessageToDict(resp.model_spec, preserving_proto_field_name=True,
                                     including_default_value_fields=True)
    spec.setdefault('version', spec.get('version', {}))
    if isinstance(spec.get('version'), dict):  # Int64Value wrapper -> "123" as TF Serving prints it
        spec['version'] = spec['version'].get('value', spec['version'])
    compare('gRPC', {'model_spec': spec, 'metadata': {'signature_def': sdm}})
    try:
        req.model_spec.name = 'nosuch'
        stub.GetModelMetadata(req, timeout=20)
        ok(False, 'gRPC metadata of an unknown model: NOT_FOUND', 'it answered')
    except grpc.RpcError as e:
        ok(e.code() == grpc.StatusCode.NOT_FOUND, 'gRPC metadata of an unknown model: NOT_FOUND', f'{e.code()}')
    ch.close()
finally:
    srv.terminate()
    try:
        rc = srv.wait(timeout=30)
    except subprocess.TimeoutExpired:
        srv.kill()
        rc = srv.wait()
    log.close()
text = open(os.path.join(scratch, 'serve.log')).read()
ok(rc == 0, 'the server drains and exits 0 on SIGTERM', f'rc {rc}')
ok(not any(s in text for s in ('AddressSanitizer', 'LeakSanitizer', 'runtime error:')), 'no sanitizer report',
   text[-2000:])
tally.finish()
