#!/usr/bin/python3
"""warmup_file.py — writes a TF Serving warm-up file (assets.extra/tf_serving_warmup_requests): TFRecord
framing (u64 length, masked CRC-32C of it, data, masked CRC-32C of the data) around PredictionLog
records made with the protobuf classes protoc generated from the project's protos (PYTHONPATH).
CRC-32C is computed here independently of cloister's C code (bitwise, from the Castagnoli polynomial),
so the server's check is tested against a second implementation.

Usage: warmup_file.py OUT KIND [ROWS...]
  KIND: valid (one PredictLog per ROWS value, input "image" [rows,1,8,8] float),
        mixed (valid + a ClassifyLog-shaped record, field 2, that is skipped),
        badcrc (valid, last byte of the data CRC flipped), truncated (valid, last 5 bytes cut),
        badinput (a PredictLog whose input is named "pixels"), x (valid, the input named "x": the fuzz
        target's backend)."""
import struct
import sys

from tensorflow_serving.apis import prediction_log_pb2


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def masked(data):
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(rec):
    n = struct.pack("<Q", len(rec))
    return n + struct.pack("<I", masked(n)) + rec + struct.pack("<I", masked(rec))


def predict_log(name, rows):
    log = prediction_log_pb2.PredictionLog()
    req = log.predict_log.request
    req.model_spec.name = "digits"
    t = req.inputs[name]
    t.dtype = 1  # DT_FLOAT
    for d in (rows, 1, 8, 8):
        t.tensor_shape.dim.add().size = d
    t.float_val.extend([0.5] * (rows * 64))
    return log.SerializeToString()


def main():
    assert crc32c(b"123456789") == 0xE3069283  # the published check value
    out, kind = sys.argv[1], sys.argv[2]
    rows = [int(r) for r in sys.argv[3:]] or [1]
    name = {"badinput": "pixels", "x": "x"}.get(kind, "image")
    recs = [predict_log(name, r) for r in rows]
    if kind == "mixed":
        recs.insert(1, b"\x12\x00")  # PredictionLog field 2 (classify_log), empty
    data = b"".join(frame(r) for r in recs)
    if kind == "badcrc":
        data = data[:-1] + bytes([data[-1] ^ 1])
    elif kind == "truncated":
        data = data[:-5]
    with open(out, "wb") as f:
        f.write(data)


if __name__ == "__main__":
    main()
