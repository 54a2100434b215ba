#!/usr/bin/python3
"""grpc_wire_client.py — third-party clients for serve_grpc_wire.sh: gRPC health checking with Debian's
python3-grpcio (stubs generated from proto/grpc/health/v1/health.proto), compressed Predict calls made by
grpcio itself (grpc.Compression.Gzip / Deflate), and raw HTTP/2 calls made with Debian's python3-h2 for
what grpcio will not send (a zip bomb, a corrupt or truncated stream, an unknown grpc-encoding) and to
see the response's own framing (compressed flag, grpc-encoding). Each check exits 0 only if the server's
answer is right; expected values are computed here.

usage: grpc_wire_client.py HOST:PORT CHECK [ARG]
"""
import gzip
import socket
import sys
import zlib

import grpc
import h2.config
import h2.connection
import h2.events
import numpy as np

import health_pb2  # generated from proto/grpc/health/v1/health.proto (as health.proto: the package name grpc
import health_pb2_grpc  # would collide with grpcio's own module); the wire names are grpc.health.v1's
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

addr, check = sys.argv[1:3]
arg = sys.argv[3] if len(sys.argv) > 3 else None
TIMEOUT = 20
X = np.array([[1, 2, 3, 4], [-1, 0.5, 0, 2], [3, -2, 1, 0]], dtype=np.float32)
PREDICT = "/tensorflow.serving.PredictionService/Predict"


def affine_expected(x):
    w = np.array([[0.1 * (i + 1) - 0.2 * j + 0.05 * i * j for j in range(3)] for i in range(4)], dtype=np.float64)
    b = np.array([0.5 - 0.25 * j for j in range(3)])
    return x.astype(np.float64) @ w + b


def affine_req(x):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "affine"
    t = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    t.tensor_shape.CopyFrom(tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in x.shape]))
    t.tensor_content = x.tobytes()
    req.inputs["x"].CopyFrom(t)
    return req


def check_logits(resp, x):
    t = resp.outputs["logits"]
    got = np.array(t.float_val, dtype=np.float32).reshape([d.size for d in t.tensor_shape.dim])
    assert np.allclose(got, affine_expected(x), atol=1e-5), got
    return got


def channel():
    return grpc.insecure_channel(addr)


def fail(msg):
    print(msg)
    sys.exit(1)


def frame(msg, flag=0):
    return bytes([flag]) + len(msg).to_bytes(4, "big") + msg


def raw_call(path, body, extra_headers=()):
    """One unary call over h2c; returns (headers, data, trailers) or exits on a reset/close."""
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", "localhost"), (":path", path),
                            ("content-type", "application/grpc"), ("te", "trailers")] + list(extra_headers))
    sock.sendall(conn.data_to_send())
    headers, trailers, data = {}, {}, bytearray()
    sent, ended = 0, False
    while not ended:
        # send what the flow-control windows allow; the rest after WINDOW_UPDATEs
        while sent < len(body):
            room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size, len(body) - sent)
            if room <= 0:
                break
            conn.send_data(sid, body[sent:sent + room], end_stream=sent + room == len(body))
            sent += room
        sock.sendall(conn.data_to_send())
        chunk = sock.recv(65536)
        if not chunk:
            fail("the server closed the connection: headers %r data %d bytes" % (headers, len(data)))
        for ev in conn.receive_data(chunk):
            if isinstance(ev, h2.events.ResponseReceived):
                headers = dict(ev.headers)
            elif isinstance(ev, h2.events.TrailersReceived):
                trailers = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                data += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, sid)
            elif isinstance(ev, h2.events.StreamReset):
                fail("stream reset by the server (error %s)" % ev.error_code)
            elif isinstance(ev, h2.events.StreamEnded):
                ended = True
        sock.sendall(conn.data_to_send())
    sock.close()
    return headers, bytes(data), trailers


def status_of(headers, trailers):
    meta = trailers if "grpc-status" in trailers else headers
    return int(meta.get("grpc-status", "-1")), meta.get("grpc-message", "")


def expect_raw_error(body, code, text, headers=()):
    h, data, t = raw_call(PREDICT, body, headers)
    got, msg = status_of(h, t)
    from urllib.parse import unquote
    msg = unquote(msg)
    if got != code.value[0] or text not in msg:
        fail("got status %d %r, want %s containing %r" % (got, msg, code, text))
    accept = h.get("grpc-accept-encoding", "")
    if not {"gzip", "deflate", "identity"} <= {a.strip() for a in accept.split(",")}:
        fail("grpc-accept-encoding %r does not list identity, deflate and gzip" % accept)
    print("%s: %s (grpc-accept-encoding: %s)" % (code.name, msg, accept))


def gzip_bytes(b):
    return gzip.compress(b)


if check == "health_check":
    resp = health_pb2_grpc.HealthStub(channel()).Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
    print("status", health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))
elif check == "health_check_unknown":
    try:
        health_pb2_grpc.HealthStub(channel()).Check(health_pb2.HealthCheckRequest(service="nosuch"), timeout=TIMEOUT)
        fail("no error")
    except grpc.RpcError as e:
        print("%s: %s" % (e.code().name, e.details()))
elif check == "health_watch":
    # the first message at once; then (the shell stops the server) NOT_SERVING and the stream's end
    it = health_pb2_grpc.HealthStub(channel()).Watch(health_pb2.HealthCheckRequest(service=arg or ""),
                                                     timeout=TIMEOUT)
    seen = []
    try:
        for resp in it:
            seen.append(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))
            print("watch", seen[-1], flush=True)
            if arg == "once":
                it.cancel()
    except grpc.RpcError as e:
        print("end %s: %s" % (e.code().name, e.details()), flush=True)
    print("seen", seen)
elif check in ("predict_gzip", "predict_deflate"):
    comp = grpc.Compression.Gzip if check == "predict_gzip" else grpc.Compression.Deflate
    big = np.tile(X, (2000, 1))  # 6000 rows: compressible, well above one frame
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel())
    resp = stub.Predict(affine_req(big), timeout=TIMEOUT, compression=comp)
    check_logits(resp, big)
    print("rows", len(resp.outputs["logits"].float_val) // 3, "compressed with", comp.name)
elif check == "predict":
    resp = prediction_service_pb2_grpc.PredictionServiceStub(channel()).Predict(affine_req(X), timeout=TIMEOUT)
    print("logits", np.round(check_logits(resp, X), 4).tolist()[0])
elif check == "raw_gzip_response":
    # arg: the grpc-accept-encoding to send; prints how the response came
    msg = affine_req(X).SerializeToString()
    h, data, t = raw_call(PREDICT, frame(msg), [("grpc-accept-encoding", arg)])
    code, text = status_of(h, t)
    if code != 0:
        fail("status %d %s" % (code, text))
    flag, n = data[0], int.from_bytes(data[1:5], "big")
    assert n == len(data) - 5, (n, len(data))
    enc = h.get("grpc-encoding", "identity")
    body = data[5:]
    if flag == 1:
        body = zlib.decompress(body, 31 if enc == "gzip" else 15)
    resp = predict_pb2.PredictResponse.FromString(body)
    check_logits(resp, X)
    print("grpc-encoding %s flag %d wire %d bytes message %d bytes" % (enc, flag, n, len(body)))
elif check == "raw_bomb":
    # gzip of 256 MiB of zeros (about 250 KB): far above the server's 1 MiB limit once inflated
    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    zero = bytes(1 << 20)
    z = b"".join(co.compress(zero) for _ in range(256)) + co.flush()
    expect_raw_error(frame(z, 1), grpc.StatusCode.RESOURCE_EXHAUSTED, "decompresses to more than",
                     [("grpc-encoding", "gzip")])
elif check == "raw_corrupt":
    z = bytearray(gzip_bytes(affine_req(X).SerializeToString()))
    for i in range(12, len(z) - 8):
        z[i] ^= 0x5a
    expect_raw_error(frame(bytes(z), 1), grpc.StatusCode.INTERNAL, "not valid gzip data", [("grpc-encoding", "gzip")])
elif check == "raw_truncated":
    z = zlib.compress(affine_req(X).SerializeToString())
    expect_raw_error(frame(z[:len(z) // 2], 1), grpc.StatusCode.INTERNAL, "truncated", [("grpc-encoding", "deflate")])
elif check == "raw_trailing":
    z = gzip_bytes(affine_req(X).SerializeToString()) + b"junk"
    expect_raw_error(frame(z, 1), grpc.StatusCode.INTERNAL, "after the end", [("grpc-encoding", "gzip")])
elif check == "raw_unknown_encoding":
    z = zlib.compress(affine_req(X).SerializeToString())
    expect_raw_error(frame(z, 1), grpc.StatusCode.UNIMPLEMENTED, "'snappy'", [("grpc-encoding", "snappy")])
elif check == "raw_flag_without_encoding":
    z = zlib.compress(affine_req(X).SerializeToString())
    expect_raw_error(frame(z, 1), grpc.StatusCode.INTERNAL, "identity")
elif check == "raw_gzip_request":
    # a compressed request written here (not by grpcio): the answer must be right
    z = gzip_bytes(affine_req(X).SerializeToString())
    h, data, t = raw_call(PREDICT, frame(z, 1), [("grpc-encoding", "gzip")])
    code, text = status_of(h, t)
    if code != 0:
        fail("status %d %s" % (code, text))
    check_logits(predict_pb2.PredictResponse.FromString(data[5:]), X)
    print("answered, %d compressed bytes in" % len(z))
else:
    fail("unknown check " + check)
