#!/usr/bin/python3
"""memory_load.py — helpers for tests/integration/serve_memory.sh (plain HTTP to a `cloister serve --plaintext`).

    memory_load.py body N OUT            a :predict body of N distinct tiny PNGs (row i has its own colour)
    memory_load.py rss PID               the process's RSS in MiB
    memory_load.py load PORT MODEL BODY PID CLIENTS SECONDS
        CLIENTS threads POST BODY to MODEL:predict over and over for SECONDS while the RSS of PID is
        sampled every 50 ms; prints one line of JSON: statuses by HTTP code, whether every refusal was a
        JSON {"error"} body, the largest RSS (MiB) and the first refusal's message
    memory_load.py compare A.json B.json TOL
        both :predict answers have the same rows, equal within TOL of the output range
"""
import base64
import http.client
import json
import struct
import sys
import threading
import time
import zlib


def png(w, h, rgb):
    raw = b"".join(b"\x00" + bytes(rgb) * w for _ in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0


def body(n, out):
    rows = [{"b64": base64.b64encode(png(2, 2, ((i * 37) % 256, (i * 91) % 256, (i * 13) % 256))).decode()}
            for i in range(n)]
    with open(out, "w") as f:
        json.dump({"instances": rows}, f)


def load(port, model, body_file, pid, clients, seconds):
    data = open(body_file, "rb").read()
    codes, lock, stop = {}, threading.Lock(), time.time() + seconds
    state = {"json_errors": True, "first_refusal": "", "max_rss": rss(pid)}

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while time.time() < stop:
            try:
                conn.request("POST", f"/v1/models/{model}:predict", data, {"Content-Type": "application/json"})
                r = conn.getresponse()
                payload = r.read()
                code = r.status
                if code != 200:
                    try:
                        msg = json.loads(payload)["error"]
                    except (ValueError, KeyError, TypeError):
                        msg = None
                    with lock:
                        if msg is None:
                            state["json_errors"] = False
                        elif not state["first_refusal"]:
                            state["first_refusal"] = msg
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            except (OSError, http.client.HTTPException) as e:
                code = "error:" + type(e).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            with lock:
                codes[str(code)] = codes.get(str(code), 0) + 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        state["max_rss"] = max(state["max_rss"], rss(pid))
        time.sleep(0.05)
    print(json.dumps({"codes": codes, "json_errors": state["json_errors"], "max_rss": state["max_rss"],
                      "first_refusal": state["first_refusal"]}))


def compare(a, b, tol):
    pa, pb = json.load(open(a))["predictions"], json.load(open(b))["predictions"]
    if len(pa) != len(pb):
        sys.exit(f"{len(pa)} rows against {len(pb)}")
    flat = [v for row in pb for v in row]
    span = (max(flat) - min(flat)) or 1.0
    worst = max(abs(x - y) for ra, rb in zip(pa, pb) for x, y in zip(ra, rb))
    if worst > tol * span:
        sys.exit(f"rows differ by {worst} (range {span})")
    distinct = len({tuple(round(v, 3) for v in row) for row in pb})
    print(f"{len(pa)} rows equal within {worst / span:.2e} of the range ({distinct} distinct rows)")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "body":
        body(int(sys.argv[2]), sys.argv[3])
    elif cmd == "rss":
        print(rss(int(sys.argv[2])))
    elif cmd == "load":
        load(int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7]))
    elif cmd == "compare":
        compare(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    else:
        sys.exit(__doc__)
