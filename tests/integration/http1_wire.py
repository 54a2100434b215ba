#!/usr/bin/python3
"""http1_wire.py — the REST server's HTTP/1.1 connection handling, checked on the wire with raw TLS
sockets (what curl never does): pipelined requests answered in order (also behind a request that
runs in the worker pool, and behind more input than the server buffers), a request split across
TLS records or sent byte by byte, chunked bodies, Expect: 100-continue, HEAD, HTTP/1.0 with and
without keep-alive, Connection: close, a client that does not read its responses (back-pressure),
and the refusals (400 malformed, 431 headers too large, 413 body too large by declared length or by
chunks) that end the connection, readable by a client that was still sending. Each run performs
one check and exits 0 only if the server behaved.

The server is serve_testd with --max-bytes 65536 --timeout-ms 1500 (serve_rest.sh), whose models
are affine (x [-1,4]), adder (a, b int32) and sleepy (sleeps x ms in the worker pool).

At shutdown (idle_at_stop, given the server's pid): requests written onto idle keep-alive connections
just after SIGTERM are answered with Connection: close, and a connection that stays idle is then
closed cleanly (EOF, not a reset).

usage: http1_wire.py PORT CA CHECK [MARKER_FILE | SERVER_PID]
"""
import json
import os
import re
import select
import socket
import ssl
import sys
import time

port, ca, check = int(sys.argv[1]), sys.argv[2], sys.argv[3]


def connect():
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=15))
    return s


class Reader:
    """Reads HTTP/1.1 responses off a socket (Content-Length bodies only, as the server sends)."""

    def __init__(self, s):
        self.s, self.buf = s, b""

    def fill(self):
        d = self.s.recv(65536)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def response(self, head_only=False):
        while b"\r\n\r\n" not in self.buf:
            self.fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
        n = 0 if head_only or status == 100 else int(hdrs["content-length"])
        while len(self.buf) < n:
            self.fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, hdrs, body

    def closed(self, within=10):
        """True when the server closes the connection (EOF, or a reset) within `within` seconds."""
        self.s.settimeout(within)
        try:
            while True:
                if not self.s.recv(65536):
                    return True
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
            return True
        except socket.timeout:
            return False


def req(method, path, body=None, headers=(), version="HTTP/1.1"):
    h = ["%s %s %s" % (method, path, version), "Host: localhost"] + list(headers)
    if body is not None:
        h.append("Content-Length: %d" % len(body))
    return ("\r\n".join(h) + "\r\n\r\n").encode() + (body or b"")


def predict(model, obj, **kw):
    return req("POST", "/v1/models/%s:predict" % model, json.dumps(obj).encode(), **kw)


def expect(cond, what):
    if not cond:
        print("FAIL:", what)
        sys.exit(1)


def ok_json(resp, want):
    status, _, body = resp
    expect(status == 200, "status %d, body %r" % (status, body[:200]))
    got = json.loads(body)
    expect(got == want, "got %r, want %r" % (got, want))


def adder_status_count():
    """The server's count of answered GET /v1/models/adder (asked on a connection of its own)."""
    s2 = connect()
    r2 = Reader(s2)
    s2.sendall(req("GET", "/monitoring/prometheus/metrics"))
    _, _, body = r2.response()
    s2.close()
    m = re.search(rb'cloister_serve_requests_total\{model_name="adder",API="status",entrypoint="REST",status="OK"\} (\d+)', body)
    return int(m.group(1)) if m else 0


if check == "slow_reader":
    # A client that pipelines requests and does not read the responses: the server must stop
    # answering (and reading) once its unwritten output is large, not buffer responses without
    # bound, and answer the rest once the client reads. TLS over memory BIOs, so that the socket
    # can be written without blocking and read later.
    before = adder_status_count()
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(inc, out)
    raw = socket.create_connection(("127.0.0.1", port), timeout=15)
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            raw.sendall(out.read())
            d = raw.recv(65536)
            expect(d, "handshake: connection closed")
            inc.write(d)
    raw.sendall(out.read())
    n = 5000  # each pair: ~10 KB of metrics, then a model status
    tls.write((req("GET", "/monitoring/prometheus/metrics") + req("GET", "/v1/models/adder")) * n)
    data = out.read()
    raw.setblocking(False)
    sent, t0 = 0, time.time()
    while sent < len(data) and time.time() - t0 < 1:
        if select.select([], [raw], [], 0.1)[1]:
            try:
                sent += raw.send(data[sent:sent + 65536])
            except BlockingIOError:
                pass
    time.sleep(0.3)  # all within the idle timeout (1.5 s) that starts at the last response
    answered = adder_status_count() - before
    expect(answered < n // 2, "%d of %d requests answered while their responses were not read "
           "(%d of %d bytes of requests taken)" % (answered, n, sent, len(data)))
    # now read: everything sent is answered, in order
    raw.setblocking(True)
    plain, got, want = b"", 0, 2 * n
    while got < want:
        while sent < len(data) and select.select([], [raw], [], 0)[1]:
            sent += raw.send(data[sent:sent + 65536])
        if not select.select([raw], [], [], 10)[0]:
            expect(False, "stalled after %d of %d responses" % (got, want))
        d = raw.recv(1 << 20)
        expect(d, "connection closed after %d of %d responses" % (got, want))
        inc.write(d)
        try:
            while True:
                plain += tls.read(1 << 20)
        except ssl.SSLWantReadError:
            pass
        while b"\r\n\r\n" in plain:
            head, rest = plain.split(b"\r\n\r\n", 1)
            cl = int(re.search(rb"Content-Length: (\d+)", head).group(1))
            if len(rest) < cl:
                break
            expect(head.startswith(b"HTTP/1.1 200"), "response %d: %r" % (got, head[:100]))
            expect((b"AVAILABLE" in rest[:cl]) == (got % 2 == 1), "response %d out of order" % got)
            plain, got = rest[cl:], got + 1
    print("%d of %d requests answered while the client did not read; all %d once it did" % (answered, n, want))
    sys.exit(0)

s = connect()
r = Reader(s)
if check == "pipelined":
    # three requests in one write; the middle one sleeps 300 ms in the worker pool
    s.sendall(req("GET", "/v1/models/adder") + predict("sleepy", {"instances": [300]}) +
              predict("adder", {"inputs": {"a": [1, 2], "b": [3, 4]}}))
    st, _, body = r.response()
    expect(st == 200 and b'"state":"AVAILABLE"' in body, "first answer %d %r" % (st, body))
    ok_json(r.response(), {"predictions": [300]})
    ok_json(r.response(), {"outputs": [4, 6]})
    s.sendall(predict("adder", {"inputs": {"a": [5], "b": [6]}}))
    ok_json(r.response(), {"outputs": [11]})
    print("3 pipelined requests answered in order, then a fourth on the same connection")
elif check == "pipelined_large":
    # more input behind a running request than the server holds (it stops reading, then resumes)
    pad = b" " * 60000
    body = b'{"inputs": {"a": [%d], "b": [1]}' + pad + b"}"
    s.sendall(predict("sleepy", {"instances": [300]}))
    reqs = b"".join(req("POST", "/v1/models/adder:predict", body % i) for i in range(6))
    s.sendall(reqs)
    ok_json(r.response(), {"predictions": [300]})
    for i in range(6):
        ok_json(r.response(), {"outputs": [i + 1]})
    print("360 KB pipelined behind a running request: all 6 answered in order")
elif check == "split":
    # headers and body as separate TLS records, written back to back, then a request byte by byte
    m = predict("adder", {"inputs": {"a": [7], "b": [8]}})
    head, body = m.split(b"\r\n\r\n", 1)
    s.sendall(head + b"\r\n\r\n")
    s.sendall(body)
    ok_json(r.response(), {"outputs": [15]})
    for b in predict("adder", {"inputs": {"a": [1], "b": [1]}}):
        s.sendall(bytes([b]))
    ok_json(r.response(), {"outputs": [2]})
    print("split into two records, and into one record per byte: both answered")
elif check == "chunked":
    body = json.dumps({"inputs": {"a": [10, 20], "b": [1, 2]}}).encode()
    parts = [body[:5], body[5:17], body[17:]]
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    s.sendall(req("POST", "/v1/models/adder:predict", None, ["Transfer-Encoding: chunked"]) + chunks)
    ok_json(r.response(), {"outputs": [11, 22]})
    print("chunked body of 3 chunks answered")
elif check == "continue":
    body = json.dumps({"inputs": {"a": [2], "b": [2]}}).encode()
    s.sendall(req("POST", "/v1/models/adder:predict", None, ["Expect: 100-continue", "Content-Length: %d" % len(body)]))
    st, _, _ = r.response()
    expect(st == 100, "want 100 Continue before the body, got %d" % st)
    s.sendall(body)
    ok_json(r.response(), {"outputs": [4]})
    print("100 Continue, then the answer")
elif check == "head":
    s.sendall(req("HEAD", "/v1/models/adder"))
    st, h, body = r.response(head_only=True)
    expect(st == 405 and int(h["content-length"]) > 0, "HEAD answered %d %r" % (st, h))
    # had a body been sent after the head, it would be read as the next response's status line
    s.sendall(req("GET", "/v1/models/adder"))
    st, _, body = r.response()
    expect(st == 200 and b"AVAILABLE" in body, "after HEAD: %d %r" % (st, body))
    print("HEAD: 405 with Content-Length and no body; the connection goes on")
elif check == "http10":
    s.sendall(req("GET", "/v1/models/adder", version="HTTP/1.0", headers=["Connection: keep-alive"]))
    st, h, _ = r.response()
    expect(st == 200 and h.get("connection", "").lower() == "keep-alive", "1.0 keep-alive: %d %r" % (st, h))
    s.sendall(req("GET", "/v1/models/adder", version="HTTP/1.0"))
    st, h, _ = r.response()
    expect(st == 200 and h.get("connection", "").lower() == "close", "1.0 without keep-alive: %d %r" % (st, h))
    expect(r.closed(), "the server kept an HTTP/1.0 connection open without keep-alive")
    print("HTTP/1.0: kept alive when asked, closed otherwise")
elif check == "close":
    s.sendall(req("GET", "/v1/models/adder", headers=["Connection: close"]) + req("GET", "/v1/models/adder"))
    st, h, _ = r.response()
    expect(st == 200 and h.get("connection") == "close", "Connection: close answered %d %r" % (st, h))
    expect("date" in h, "no Date header: %r" % h)
    expect(r.closed() and not r.buf, "the server answered past Connection: close (%r)" % r.buf[:100])
    print("Connection: close: answered once, then closed")
elif check in ("malformed", "headers_too_large", "many_headers", "too_large", "chunked_too_large"):
    want = {"malformed": 400, "headers_too_large": 431, "many_headers": 431, "too_large": 413,
            "chunked_too_large": 413}[check]
    if check == "malformed":
        s.sendall(b"HELLO / HTTP/1.1\r\n\r\n")
    elif check == "headers_too_large":
        s.sendall(req("GET", "/v1/models/adder", headers=["X-Pad: " + "a" * 20000]))
    elif check == "many_headers":
        # 2,000 short header lines: 16 KB once their ": " and CRLF count too
        s.sendall(req("GET", "/v1/models/adder", headers=["X-%d: b" % i for i in range(2000)]))
    elif check == "too_large":
        # declared too large: refused before any of the body is sent
        s.sendall(req("POST", "/v1/models/adder:predict", None, ["Content-Length: 1000000000"]))
    else:
        s.sendall(req("POST", "/v1/models/adder:predict", None, ["Transfer-Encoding: chunked"]))
        s.sendall(b"".join(b"4000\r\n" + b" " * 0x4000 + b"\r\n" for _ in range(5)))
    st, h, body = r.response()
    expect(st == want, "want %d, got %d %r" % (want, st, body))
    msg = json.loads(body)["error"]
    expect(msg, "empty error message")
    expect(h.get("connection") == "close", "no Connection: close on %d: %r" % (st, h))
    expect(r.closed(), "the connection stayed open after %d" % st)
    print("%d (%s), then closed" % (st, msg))
elif check == "refused_while_sending":
    # a body over the limit sent at once, without Expect: the answer must arrive, not a reset (the
    # server drains what is still coming before it closes)
    body = b'{"inputs": {"a": [1], "b": [1]}' + b" " * 300000 + b"}"
    s.sendall(req("POST", "/v1/models/adder:predict", None, ["Content-Length: %d" % len(body)]))
    try:
        s.sendall(body)
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError) as e:
        expect(False, "the server reset the connection while the body was sent: %r" % e)
    try:
        st, h, b = r.response()
    except (ConnectionResetError, ssl.SSLError, EOFError) as e:
        expect(False, "no answer, the connection ended with %r" % e)
    expect(st == 413 and h.get("connection") == "close", "want 413 with Connection: close, got %d %r" % (st, h))
    expect(r.closed(), "the connection stayed open after the 413")
    print("413 read after sending the whole refused body, then closed")
elif check == "late_body":
    # the head of a request, a marker file (the caller then stops the server), the body 2 s later:
    # a stopping server still answers a request that was arriving, then closes
    body = json.dumps({"inputs": {"a": [1], "b": [2]}}).encode()
    s.sendall(req("POST", "/v1/models/adder:predict", None, ["Content-Length: %d" % len(body)]))
    open(sys.argv[4], "w").close()
    time.sleep(2)
    s.sendall(body)
    st, h, b = r.response()
    ok_json((st, h, b), {"outputs": [3]})
    expect(h.get("connection") == "close", "a stopping server should close after answering: %r" % h)
    print("answered after the server began to stop, then closed")
elif check == "idle_at_stop":
    # keep-alive connections that have had an answer, idle when the server is told to stop; a client
    # writes its next request on them right after (as a busy client does): each is answered
    import signal
    conns = [s] + [connect() for _ in range(3)]
    readers = [r] + [Reader(x) for x in conns[1:]]
    for x, rd in zip(conns, readers):
        x.sendall(req("GET", "/v1/models/adder"))
        expect(rd.response()[0] == 200, "the first request was not answered")
    quiet = connect()
    rq = Reader(quiet)
    quiet.sendall(req("GET", "/v1/models/adder"))
    expect(rq.response()[0] == 200, "the first request was not answered")
    os.kill(int(sys.argv[4]), signal.SIGTERM)
    time.sleep(0.1)
    for i, (x, rd) in enumerate(zip(conns, readers)):
        try:
            x.sendall(predict("adder", {"inputs": {"a": [i], "b": [2]}}))
            st, h, b = rd.response()
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError, EOFError) as e:
            expect(False, "connection %d: the request written after SIGTERM got no answer (%r)" % (i, e))
        ok_json((st, h, b), {"outputs": [i + 2]})
        expect(h.get("connection") == "close", "connection %d: no Connection: close from a stopping server" % i)
        expect(rd.closed(within=5), "connection %d stayed open after its last answer" % i)
    # the one that stays idle: closed cleanly soon after (TLS close_notify and FIN, not a reset)
    quiet.settimeout(5)
    t0 = time.time()
    try:
        end = quiet.recv(65536)
    except (ConnectionResetError, ssl.SSLError) as e:
        expect(False, "the idle connection was reset (%r)" % e)
    expect(end == b"", "the idle connection got %r" % end[:100])
    print("4 requests written after SIGTERM answered with Connection: close; the idle connection closed "
          "cleanly after %.1f s" % (time.time() - t0))
elif check == "idle":
    s.sendall(req("GET", "/v1/models/adder"))
    st, _, _ = r.response()
    t0 = time.time()
    expect(st == 200 and r.closed(within=10), "an idle keep-alive connection stayed open")
    print("idle connection closed after %.1f s" % (time.time() - t0))
elif check == "half_close":
    # the request and the client's FIN (shutdown of its sending side) arrive together: the answer,
    # computed before the end is seen, still goes out
    s.sendall(req("GET", "/v1/models/adder", version="HTTP/1.0"))
    socket.socket(fileno=os.dup(s.fileno())).shutdown(socket.SHUT_WR)
    st, _, body = r.response()
    expect(st == 200 and b"AVAILABLE" in body, "answered %d %r" % (st, body))
    print("request then FIN: answered")
elif check == "gone":
    # the client leaves while its request runs in the worker pool; the server carries on
    s.sendall(predict("sleepy", {"instances": [400]}))
    time.sleep(0.1)
    s.close()
    time.sleep(0.6)
    s2 = connect()
    r2 = Reader(s2)
    s2.sendall(predict("adder", {"inputs": {"a": [1], "b": [2]}}))
    ok_json(r2.response(), {"outputs": [3]})
    print("a client that left mid-request did not disturb the next one")
elif check == "non_utf8":
    # bytes that are not UTF-8 in a model name (raw or %-escaped) and in a JSON body's keys and
    # strings: the error bodies that repeat them must still be strict UTF-8 JSON
    hostile = [
        req("GET", "/v1/models/adXder").replace(b"X", b"\xff"),  # a raw byte in the request line
        req("GET", "/v1/models/ad%FFder%C3"),
        req("GET", "/v1/models/x%ED%A0%80y/metadata"),
        req("POST", "/v1/models/ad%FEder:predict", b'{"instances": [1]}'),
        req("POST", "/v1/models/adder:predict", b'{"inputs": {"a\xff": [1], "b": [2]}}'),
        req("POST", "/v1/models/adder:predict", b'{"instances": [{"a": 1, "b\xc3(": 2}]}'),
        req("POST", "/v1/models/affine:predict", b'{"instances": ["\xf0\x9f\x98"]}'),
        req("POST", "/v1/models/adder:predict", b'{"signature_name": "s\xe2\x82", "inputs": {"a": [1], "b": [2]}}'),
    ]
    n_bad = 0
    for i, raw in enumerate(hostile):
        s = connect()
        r = Reader(s)
        s.sendall(raw)
        st, _, body = r.response()
        s.close()
        expect(400 <= st < 500, "request %d: status %d %r" % (i, st, body[:200]))
        try:
            got = json.loads(body.decode("utf-8", errors="strict"))
        except (UnicodeDecodeError, ValueError) as e:
            expect(False, "request %d: error body is not strict UTF-8 JSON (%s): %r" % (i, e, body[:200]))
        expect(isinstance(got.get("error"), str), "request %d: no error message: %r" % (i, got))
        n_bad += "\ufffd" in got["error"]
    expect(n_bad >= 4, "only %d of %d error messages show the replaced bytes" % (n_bad, len(hostile)))
    print("all %d error bodies are UTF-8 JSON (%d show U+FFFD)" % (len(hostile), n_bad))
else:
    print("unknown check", check)
    sys.exit(2)
