#!/usr/bin/python3
"""serve_signatures.py — the client side of serve_signatures.sh.

  serve_signatures.py make DIR          writes DIR/model.onnx (the "iris" model below) and DIR/weights.npz
  serve_signatures.py GRPC REST CHECK   runs one check against the server (mutual TLS, material in tls2/)

The model: x float [-1, 4] -> probs = softmax(x W + b) [-1, 3], value = x v [-1, 1] and
top = argmax(probs) int64 [-1, 1]. Expected answers are computed here with numpy from the weights, never
taken from the server. Prints "ok ..." on success; anything else exits non-zero with the reason.
"""
import http.client
import json
import ssl
import sys

import numpy as np

sys.path.insert(0, "py")

W = np.array([[0.5, -0.2, 0.1], [0.3, 0.8, -0.5], [-0.7, 0.2, 0.9], [0.1, -0.4, 0.6]], np.float32)
B = np.array([0.1, -0.1, 0.05], np.float32)
V = np.array([[1.5], [-0.5], [0.25], [2.0]], np.float32)
LABELS = ["setosa", "versicolor", "virginica"]
ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]], np.float32)


def make(d):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "B"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        helper.make_node("MatMul", ["x", "V"], ["value"]),
        helper.make_node("ArgMax", ["probs"], ["top"], axis=1, keepdims=1),
    ]
    g = helper.make_graph(
        nodes, "iris",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3]),
         helper.make_tensor_value_info("value", TensorProto.FLOAT, ["N", 1]),
         helper.make_tensor_value_info("top", TensorProto.INT64, ["N", 1])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B"), numpy_helper.from_array(V, "V")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(m)
    onnx.save(m, d + "/model.onnx")


def expected(x):
    z = x.astype(np.float64) @ W + B
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return p.astype(np.float32), (x.astype(np.float64) @ V).astype(np.float32)[:, 0], p.argmax(axis=1)


def fail(msg):
    print("FAIL " + msg)
    sys.exit(1)


def close(a, b, what):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or not np.allclose(a, b, rtol=1e-5, atol=1e-6):
        fail("%s: got %s, want %s" % (what, a.tolist(), b.tolist()))


def main():
    if sys.argv[1] == "make":
        make(sys.argv[2])
        print("ok")
        return
    import grpc
    from tensorflow.core.example import example_pb2, feature_pb2
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, inference_pb2, input_pb2,
                                         predict_pb2, prediction_service_pb2_grpc, regression_pb2)
    grpc_port, rest_port, check = sys.argv[1], sys.argv[2], sys.argv[3]
    arg = sys.argv[4] if len(sys.argv) > 4 else ""
    rd = lambda p: open(p, "rb").read()
    creds = grpc.ssl_channel_credentials(rd("tls2/ca_cert.pem"), rd("tls2/client/key.pem"), rd("tls2/client/cert.pem"))
    ch = grpc.secure_channel("127.0.0.1:" + grpc_port, creds, options=[("grpc.ssl_target_name_override", "localhost"),
                                                                     ("grpc.max_send_message_length", 1 << 28)])
    stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)

    def example(row, name="measurements", kind="float"):
        f = feature_pb2.Feature()
        if kind == "float":
            f.float_list.value.extend(row)
        elif kind == "int":
            f.int64_list.value.extend(row)
        elif kind == "bytes":
            f.bytes_list.value.extend([b"abc"])
        e = example_pb2.Example()
        e.features.feature[name].CopyFrom(f)
        return e

    def inp(rows, **kw):
        i = input_pb2.Input()
        for r in rows:
            i.example_list.examples.add().CopyFrom(example(r, **kw))
        return i

    def spec(m, model="iris", sig=""):
        m.name = model
        if sig:
            m.signature_name = sig

    def err(call, req, code, text):
        try:
            call(req, timeout=20)
        except grpc.RpcError as e:
            if e.code() != code or text not in e.details():
                fail("%s: got %s %r, want %s %r" % (check, e.code(), e.details(), code, text))
            print("ok %s: %s %s" % (check, e.code().name, e.details()))
            return
        fail(check + ": the call succeeded")

    def rest(method, path, body=None):
        ctx = ssl.create_default_context(cafile="tls2/ca_cert.pem")
        ctx.load_cert_chain("tls2/client/cert.pem", "tls2/client/key.pem")
        c = http.client.HTTPSConnection("localhost", int(rest_port), context=ctx, timeout=20)
        c.request(method, path, body=None if body is None else json.dumps(body))
        r = c.getresponse()
        return r.status, json.loads(r.read() or b"null")

    p, v, top = expected(ROWS)
    if check == "metadata":
        req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        spec(req.model_spec)
        resp = stub.GetModelMetadata(req, timeout=20)
        from tensorflow_serving.apis import get_model_metadata_pb2 as g
        m = g.SignatureDefMap()
        resp.metadata["signature_def"].Unpack(m)
        got = {k: (s.method_name, sorted((a, t.name) for a, t in s.inputs.items()),
                   sorted((a, t.name) for a, t in s.outputs.items())) for k, s in m.signature_def.items()}
        want = json.loads(arg)
        want = {k: (w[0], sorted(map(tuple, w[1])), sorted(map(tuple, w[2]))) for k, w in want.items()}
        if got != want:
            fail("metadata: got %s, want %s" % (got, want))
        print("ok metadata: %d signatures: %s" % (len(got), ", ".join(sorted(got))))
    elif check == "metadata_plain":
        req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        spec(req.model_spec, "plain")
        resp = stub.GetModelMetadata(req, timeout=20)
        m = get_model_metadata_pb2.SignatureDefMap()
        resp.metadata["signature_def"].Unpack(m)
        print("ok plain metadata: %s" % sorted((k, s.method_name) for k, s in m.signature_def.items()))
    elif check in ("predict", "predict_sig"):
        req = predict_pb2.PredictRequest()
        spec(req.model_spec, "iris", "classify_iris" if check == "predict_sig" else "")
        alias = "measurements" if check == "predict_sig" else "features"
        t = req.inputs[alias]
        t.dtype = types_pb2.DT_FLOAT
        t.tensor_shape.dim.add().size = 3
        t.tensor_shape.dim.add().size = 4
        t.float_val.extend(ROWS.flatten().tolist())
        if check == "predict":
            req.output_filter.append("probabilities")
        resp = stub.Predict(req, timeout=20)
        keys = sorted(resp.outputs.keys())
        want_keys = ["scores"] if check == "predict_sig" else ["probabilities"]
        if keys != want_keys:
            fail("%s: outputs %s, want %s" % (check, keys, want_keys))
        close(np.array(resp.outputs[want_keys[0]].float_val).reshape(3, 3), p, check)
        want_sig = "classify_iris" if check == "predict_sig" else "serving_default"
        if resp.model_spec.signature_name != want_sig:
            fail("%s: model_spec.signature_name %r" % (check, resp.model_spec.signature_name))
        print("ok %s: outputs %s of signature %s" % (check, keys, resp.model_spec.signature_name))
    elif check == "predict_unknown":
        req = predict_pb2.PredictRequest()
        spec(req.model_spec, "iris", "nope")
        err(stub.Predict, req, grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.')
    elif check == "classify":
        req = classification_pb2.ClassificationRequest()
        spec(req.model_spec, "iris", "classify_iris")
        req.input.CopyFrom(inp(ROWS.tolist()))
        resp = stub.Classify(req, timeout=20)
        got = [[(c.label, c.score) for c in cl.classes] for cl in resp.result.classifications]
        if [[l for l, _ in r] for r in got] != [LABELS] * 3:
            fail("classify labels: %s" % got)
        close([[s for _, s in r] for r in got], p, "classify scores")
        if resp.model_spec.signature_name != "classify_iris" or resp.model_spec.version.value != 1:
            fail("classify model_spec: %s" % resp.model_spec)
        print("ok classify: 3 examples, %d classes each, as numpy computes" % len(got[0]))
    elif check == "classify_label":
        # a version label (the model config's version_labels) names the version, as in Predict
        req = classification_pb2.ClassificationRequest()
        spec(req.model_spec, "iris", "classify_iris")
        req.model_spec.version_label = "stable"
        req.input.CopyFrom(inp(ROWS.tolist()))
        resp = stub.Classify(req, timeout=20)
        if len(resp.result.classifications) != 3 or resp.model_spec.version.value != 1:
            fail("classify by label: %s" % resp)
        print("ok classify by label 'stable': version %d" % resp.model_spec.version.value)
    elif check == "classify_label_unknown":
        req = classification_pb2.ClassificationRequest()
        spec(req.model_spec, "iris", "classify_iris")
        req.model_spec.version_label = "nope"
        req.input.CopyFrom(inp(ROWS.tolist()))
        err(stub.Classify, req, grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: nope")
    elif check == "classify_context":
        # the measurements come from the context for examples without their own; one example has its own
        req = classification_pb2.ClassificationRequest()
        spec(req.model_spec, "iris", "classify_iris")
        el = req.input.example_list_with_context
        el.context.CopyFrom(example(ROWS[0].tolist()))
        el.examples.add().CopyFrom(example([9.0], name="unused"))
        el.examples.add().CopyFrom(example(ROWS[2].tolist()))
        resp = stub.Classify(req, timeout=20)
        got = [[c.score for c in cl.classes] for cl in resp.result.classifications]
        close(got, np.stack([p[0], p[2]]), "classify with context")
        print("ok classify with context: context fills the example without the feature, an example's own wins")
    elif check == "classify_int":
        req = classification_pb2.ClassificationRequest()
        spec(req.model_spec, "iris", "classify_iris")
        req.input.CopyFrom(inp([[5, 3, 1, 0]], kind="int"))
        resp = stub.Classify(req, timeout=20)
        pi, _, _ = expected(np.array([[5, 3, 1, 0]], np.float32))
        close([[c.score for c in resp.result.classifications[0].classes]], pi, "int64_list into a float input")
        print("ok classify: an int64_list feeds a float input")
    elif check == "classify_top":
        req = classification_pb2.ClassificationRequest()
        spec(req.model_spec, "iris", "classify_top")
        req.input.CopyFrom(inp(ROWS.tolist()))
        resp = stub.Classify(req, timeout=20)
        got = [[(c.label, c.score) for c in cl.classes] for cl in resp.result.classifications]
        want = [[(LABELS[t], 0.0)] for t in top]
        if got != want:
            fail("classify_top: got %s, want %s" % (got, want))
        print("ok classify with class ids: labels %s" % [g[0][0] for g in got])
    elif check == "regress":
        req = regression_pb2.RegressionRequest()
        spec(req.model_spec, "iris", "regress_value")
        req.input.CopyFrom(inp(ROWS.tolist()))
        resp = stub.Regress(req, timeout=20)
        close([r.value for r in resp.result.regressions], v, "regress")
        if resp.model_spec.signature_name != "regress_value":
            fail("regress model_spec: %s" % resp.model_spec)
        print("ok regress: %s" % [round(r.value, 4) for r in resp.result.regressions])
    elif check == "multi":
        req = inference_pb2.MultiInferenceRequest()
        for sig, method in (("classify_iris", "classify"), ("regress_value", "regress"), ("classify_top", "classify")):
            t = req.tasks.add()
            spec(t.model_spec, "iris", sig)
            t.method_name = "tensorflow/serving/" + method
        req.input.CopyFrom(inp(ROWS.tolist()))
        resp = stub.MultiInference(req, timeout=20)
        if len(resp.results) != 3:
            fail("multi: %d results" % len(resp.results))
        r0, r1, r2 = resp.results
        close([[c.score for c in cl.classes] for cl in r0.classification_result.classifications], p, "multi classify")
        close([r.value for r in r1.regression_result.regressions], v, "multi regress")
        if [cl.classes[0].label for cl in r2.classification_result.classifications] != [LABELS[t] for t in top]:
            fail("multi classify_top: %s" % r2)
        if [r.model_spec.signature_name for r in resp.results] != ["classify_iris", "regress_value", "classify_top"]:
            fail("multi model specs: %s" % [r.model_spec for r in resp.results])
        print("ok multi: classify, regress and classify on one input, one model run")
    elif check.startswith("multi_"):
        req = inference_pb2.MultiInferenceRequest()
        tasks = {"multi_dup": [("iris", "regress_value", "regress"), ("iris", "regress_value", "regress")],
                 "multi_models": [("iris", "regress_value", "regress"), ("plain", "serving_default", "regress")],
                 "multi_predict": [("iris", "serving_default", "predict")],
                 "multi_inputs": [("iris", "regress_value", "regress"), ("iris", "regress_m2", "regress")],
                 "multi_method": [("iris", "regress_value", "classify")],
                 "multi_missing": [("iris", "nope", "classify")],
                 "multi_none": []}[check]
        for model, sig, method in tasks:
            t = req.tasks.add()
            spec(t.model_spec, model, sig)
            t.method_name = "tensorflow/serving/" + method
        req.input.CopyFrom(inp(ROWS.tolist()))
        code = grpc.StatusCode.UNIMPLEMENTED if check == "multi_predict" else grpc.StatusCode.INVALID_ARGUMENT
        err(stub.MultiInference, req, code, arg)
    elif check in ("classify_err", "regress_err"):
        # arg: JSON {"model", "sig", "rows", "kind", "name", "code", "text"}
        a = json.loads(arg)
        req = (classification_pb2.ClassificationRequest() if check == "classify_err"
               else regression_pb2.RegressionRequest())
        spec(req.model_spec, a.get("model", "iris"), a.get("sig", ""))
        rows = a.get("rows", ROWS.tolist())
        if a.get("many"):
            rows = [ROWS[0].tolist()] * a["many"]
        if rows:
            req.input.CopyFrom(inp(rows, kind=a.get("kind", "float"), name=a.get("name", "measurements")))
        call = stub.Classify if check == "classify_err" else stub.Regress
        err(call, req, getattr(grpc.StatusCode, a["code"]), a["text"])
    elif check == "raw":
        # arg: METHOD HEX: a hand-made message sent as it is
        method, hexmsg = arg.split(":")
        if hexmsg.startswith("@"):
            hexmsg = open(hexmsg[1:]).read().strip()
        call = ch.unary_unary("/tensorflow.serving.PredictionService/" + method, request_serializer=lambda b: b,
                              response_deserializer=lambda b: b)
        code, text = sys.argv[5], sys.argv[6]
        err(call, bytes.fromhex(hexmsg), getattr(grpc.StatusCode, code), text)
    elif check == "rest_classify":
        st, body = rest("POST", "/v1/models/iris:classify", {
            "signature_name": "classify_iris", "context": {"unused": "x"},
            "examples": [{"measurements": r} for r in ROWS.tolist()]})
        if st != 200:
            fail("rest classify: %s %s" % (st, body))
        if [[c[0] for c in r] for r in body["result"]] != [LABELS] * 3:
            fail("rest classify labels: %s" % body)
        close([[c[1] for c in r] for r in body["result"]], p, "rest classify scores")
        print("ok REST :classify: %s" % json.dumps(body["result"][0]))
    elif check == "rest_regress":
        st, body = rest("POST", "/v1/models/iris/versions/1:regress", {
            "signature_name": "regress_value", "context": {"measurements": ROWS[1].tolist()},
            "examples": [{"measurements": ROWS[0].tolist()}, {}]})
        if st != 200:
            fail("rest regress: %s %s" % (st, body))
        close(body["result"], [v[0], v[1]], "rest regress")
        print("ok REST :regress: %s" % body)
    elif check == "rest_predict_sig":
        st, body = rest("POST", "/v1/models/iris:predict", {"signature_name": "regress_value",
                                                             "instances": [{"measurements": r} for r in ROWS.tolist()]})
        if st != 200:
            fail("rest predict: %s %s" % (st, body))
        close([r[0] for r in body["predictions"]], v, "rest predict with a signature")
        print("ok REST :predict with signature_name: %s" % body)
    elif check == "rest_metadata":
        st, body = rest("GET", "/v1/models/iris/metadata")
        sd = body["metadata"]["signature_def"]["signature_def"]
        got = {k: (s["method_name"], sorted((a, t["name"]) for a, t in s["inputs"].items()),
                   sorted((a, t["name"]) for a, t in s["outputs"].items())) for k, s in sd.items()}
        want = json.loads(arg)
        want = {k: (w[0], sorted(map(tuple, w[1])), sorted(map(tuple, w[2]))) for k, w in want.items()}
        if st != 200 or got != want:
            fail("rest metadata: %s %s, want %s" % (st, got, want))
        print("ok REST metadata: %d signatures" % len(got))
    elif check == "rest_err":
        # arg: JSON {"method", "path", "body", "status", "text"}
        a = json.loads(arg)
        st, body = rest(a.get("method", "POST"), a["path"], a.get("body"))
        if st != a["status"] or a["text"] not in (body or {}).get("error", ""):
            fail("rest_err %s: got %s %s, want %s %r" % (a["path"], st, body, a["status"], a["text"]))
        print("ok REST %s: %s %s" % (a["path"], st, body["error"]))
    else:
        fail("unknown check " + check)


main()
