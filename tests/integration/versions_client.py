#!/usr/bin/python3
"""versions_client.py — TF Serving's model-management calls for serve_versions.sh, made with Debian's
python3-grpcio and the message classes protoc generated from the project's protos (PYTHONPATH), over
plaintext gRPC. Each subcommand prints what the server answered, one line, and exits 0 if the call
succeeded, 3 if the server answered with an error status ("CODE: details" printed).

usage: versions_client.py HOST:PORT predict MODEL (label L | version N | latest)
       versions_client.py HOST:PORT status MODEL [label L]
       versions_client.py HOST:PORT reload CONFIG.json | custom
CONFIG.json: [{"name": .., "base_path": .., "policy": "latest"|"all"|"specific", "num_versions": N,
               "versions": [..], "labels": {label: version}}]
"""
import json
import sys

import grpc
import numpy as np

from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (get_model_status_pb2, model_management_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

addr, cmd = sys.argv[1], sys.argv[2]
ch = grpc.insecure_channel(addr)


def spec(ms, args):
    ms.name = args[0]
    if len(args) > 2 and args[1] == "label":
        ms.version_label = args[2]
    elif len(args) > 2 and args[1] == "version":
        ms.version.value = int(args[2])


try:
    if cmd == "predict":
        req = predict_pb2.PredictRequest()
        spec(req.model_spec, sys.argv[3:])
        t = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
        for d in (1, 1, 8, 8):
            t.tensor_shape.dim.add().size = d
        t.tensor_content = np.full((1, 1, 8, 8), 0.5, dtype=np.float32).tobytes()
        req.inputs["image"].CopyFrom(t)
        resp = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(req, timeout=20)
        print("answered by version %d (outputs %s)" % (resp.model_spec.version.value, ",".join(sorted(resp.outputs))))
    elif cmd == "status":
        req = get_model_status_pb2.GetModelStatusRequest()
        spec(req.model_spec, sys.argv[3:])
        resp = model_service_pb2_grpc.ModelServiceStub(ch).GetModelStatus(req, timeout=20)
        print(" ".join("%d:%s" % (v.version, get_model_status_pb2.ModelVersionStatus.State.Name(v.state))
                       for v in resp.model_version_status))
    elif cmd == "reload":
        req = model_management_pb2.ReloadConfigRequest()
        if sys.argv[3] == "custom":
            req.config.custom_model_config.type_url = "type.googleapis.com/example.Custom"
        else:
            lst = req.config.model_config_list
            for m in json.load(open(sys.argv[3])):
                c = lst.config.add()
                c.name, c.base_path, c.model_platform = m["name"], m["base_path"], "tensorflow"
                pol = m.get("policy", "latest")
                if pol == "all":
                    c.model_version_policy.all.SetInParent()
                elif pol == "specific":
                    c.model_version_policy.specific.versions.extend(m["versions"])
                elif "num_versions" in m:
                    c.model_version_policy.latest.num_versions = m["num_versions"]
                for k, v in m.get("labels", {}).items():
                    c.version_labels[k] = v
        resp = model_service_pb2_grpc.ModelServiceStub(ch).HandleReloadConfigRequest(req, timeout=60)
        print("reloaded: status %d %r" % (resp.status.error_code, resp.status.error_message))
    else:
        sys.exit("unknown command " + cmd)
except grpc.RpcError as e:
    print("%s: %s" % (e.code().name, e.details()))
    sys.exit(3)
