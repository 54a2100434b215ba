#!/usr/bin/env python3
"""slowconn.py — hostile slow TCP clients for the key server's connection limits (keyserver_load.sh).

Subcommands (each prints what it saw; exit 0 when the server behaved, 1 with FAIL lines otherwise):
  load PORT --conns N --sources K --interval S --ready FILE --status FILE
      Slowloris: N connections from 127.0.0.2 .. 127.0.0.(K+1), each sending a TLS record header that
      announces a 16 KiB ClientHello and then one byte every S seconds. A connection the server closes
      is opened again at once, so the load stays at N. FILE gets "ready" once N are open; the status
      file is rewritten every 0.5 s (JSON: open, opened, closed_by_server, lifetimes of the closed ones).
      Runs until SIGTERM.
  per-source --limit L --timeout-ms T PORT -- CMD...
      L silent connections from 127.0.0.2 are held; one more from there must be refused at once (well
      before the handshake deadline T), while one from 127.0.0.3 is held and CMD (a provision, from
      127.0.0.1) succeeds; after the L are closed, 127.0.0.2 is admitted again.
  deadline PORT --timeout-ms T
      A silent connection and one trickling a byte every T/5 ms are both closed at about T ms (the
      trickle does not extend the deadline).
  total --max M --timeout-ms T PORT -- CMD...
      M + 10 silent connections, each from its own address: exactly 10 are closed (the oldest make room
      for newer ones), the newest is held, and CMD still succeeds.
"""
import argparse
import json
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time

HEADER = bytes([0x16, 0x03, 0x01, 0x40, 0x00])  # TLS handshake record of 16 KiB, body to follow
FAILS = []


def fail(msg):
    FAILS.append(msg)
    print("FAIL: " + msg, flush=True)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def connect(port, src, timeout=5.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    return s


def closed(s):
    """True when the server closed (FIN or RST) this socket; never blocks."""
    try:
        return s.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def wait_closed(s, limit):
    """Seconds until the server closes s, or None if it is still open after `limit` seconds."""
    t0 = time.monotonic()
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ)
    try:
        while True:
            left = limit - (time.monotonic() - t0)
            if left <= 0:
                return None
            if sel.select(left) and closed(s):
                return time.monotonic() - t0
    finally:
        sel.unregister(s)


def run_cmd(cmd, what):
    t0 = time.monotonic()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    dt = time.monotonic() - t0
    if r.returncode != 0:
        fail("%s failed (exit %d after %.2f s): %s" % (what, r.returncode, dt, r.stdout.decode(errors="replace")[-500:]))
    else:
        print("%s succeeded in %.2f s" % (what, dt), flush=True)
    return r.returncode == 0


# ---------------------------------------------------------------- load

def cmd_load(a):
    raise_nofile()
    sources = ["127.0.0.%d" % (2 + i) for i in range(a.sources)]
    sel = selectors.DefaultSelector()
    conns = {}  # socket -> [opened_at, next_byte_at]
    stats = {"open": 0, "opened": 0, "closed_by_server": 0, "connect_errors": 0, "lifetimes": []}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    t_start = time.monotonic()

    def open_one(i):
        try:
            s = connect(a.port, sources[i % len(sources)])
            s.send(HEADER)
        except OSError:
            stats["connect_errors"] += 1
            return False
        now = time.monotonic()
        # stagger the trickle so that the bytes are spread over the interval
        conns[s] = [now, now + a.interval * ((i % 97) / 97.0)]
        sel.register(s, selectors.EVENT_READ)
        stats["opened"] += 1
        return True

    i = 0
    while len(conns) < a.conns and not stop:
        if not open_one(i):
            time.sleep(0.01)
        i += 1
    with open(a.ready, "w") as f:
        f.write("ready %d in %.2f s\n" % (len(conns), time.monotonic() - t_start))
    last_status = 0.0
    while not stop:
        for key, _ in sel.select(0.05):
            s = key.fileobj
            if closed(s):
                stats["closed_by_server"] += 1
                stats["lifetimes"].append(round(time.monotonic() - conns[s][0], 3))
                sel.unregister(s)
                s.close()
                del conns[s]
        while len(conns) < a.conns and not stop:
            if not open_one(i):
                break
            i += 1
        now = time.monotonic()
        for s, st in list(conns.items()):
            if now >= st[1]:
                try:
                    s.send(b"\0")
                except OSError:
                    pass
                st[1] = now + a.interval
        if now - last_status >= 0.5:
            stats["open"] = len(conns)
            with open(a.status + ".tmp", "w") as f:
                json.dump(stats, f)
            os.replace(a.status + ".tmp", a.status)
            last_status = now
    for s in conns:
        s.close()
    return 0


# ---------------------------------------------------------------- per-source

def cmd_per_source(a):
    raise_nofile()
    held = [connect(a.port, "127.0.0.2") for _ in range(a.limit)]
    time.sleep(0.5)
    n = sum(1 for s in held if closed(s))
    if n:
        fail("%d of the %d connections within the per-source limit were closed" % (n, a.limit))
    t0 = time.monotonic()
    try:
        extra = connect(a.port, "127.0.0.2")
    except ConnectionResetError:  # the reset can come before connect() returns
        extra = None
    dt = time.monotonic() - t0 if extra is None else wait_closed(extra, a.timeout_ms / 1000.0 / 2)
    if dt is None:
        fail("connection %d from 127.0.0.2 was not refused (limit %d)" % (a.limit + 1, a.limit))
    else:
        print("connection %d from 127.0.0.2 refused after %.3f s" % (a.limit + 1, dt), flush=True)
    if extra:
        extra.close()
    other = connect(a.port, "127.0.0.3")
    run_cmd(a.cmd, "provision from 127.0.0.1 while 127.0.0.2 is at its limit")
    if closed(other):
        fail("a connection from 127.0.0.3 was closed while 127.0.0.2 was at its limit")
    else:
        print("127.0.0.3 admitted while 127.0.0.2 is at its limit", flush=True)
    n = sum(1 for s in held if closed(s))
    if n:
        fail("%d held connections from 127.0.0.2 were closed" % n)
    for s in held:
        s.close()
    other.close()
    time.sleep(0.3)
    again = connect(a.port, "127.0.0.2")
    if wait_closed(again, 0.5) is not None:
        fail("127.0.0.2 is still refused after its connections closed")
    else:
        print("127.0.0.2 admitted again after its connections closed", flush=True)
    again.close()
    return 1 if FAILS else 0


# ---------------------------------------------------------------- deadline

def cmd_deadline(a):
    t = a.timeout_ms / 1000.0
    silent = connect(a.port, "127.0.0.2")
    trickle = connect(a.port, "127.0.0.3")
    trickle.send(HEADER)
    t0 = time.monotonic()
    done = {}
    step = t / 5
    nxt = t0 + step
    while len(done) < 2 and time.monotonic() - t0 < t + 10:
        for name, s in (("silent", silent), ("trickling", trickle)):
            if name not in done and closed(s):
                done[name] = time.monotonic() - t0
        if time.monotonic() >= nxt and "trickling" not in done:
            try:
                trickle.send(b"\0")
            except OSError:
                pass
            nxt += step
        time.sleep(0.01)
    for name in ("silent", "trickling"):
        if name not in done:
            fail("the %s connection was not closed within %.1f s (handshake deadline %.1f s)" % (name, t + 10, t))
        elif not (0.8 * t <= done[name] <= t + 4):
            fail("the %s connection was closed after %.2f s, not at the %.1f s handshake deadline" % (name, done[name], t))
        else:
            print("the %s connection was closed after %.2f s (deadline %.1f s)" % (name, done[name], t), flush=True)
    return 1 if FAILS else 0


# ---------------------------------------------------------------- total

def cmd_total(a):
    raise_nofile()
    n = a.max + 10
    conns = []
    for i in range(n):
        conns.append(connect(a.port, "127.0.%d.%d" % (1 + i // 250, 2 + i % 250)))
        time.sleep(0.005)  # in order: the oldest are the first
    # the server processes the accepts asynchronously: wait until the count settles
    gone, prev, t0 = set(), -1, time.monotonic()
    while time.monotonic() - t0 < 5:
        time.sleep(0.3)
        gone |= {i for i, s in enumerate(conns) if i not in gone and closed(s)}
        if len(gone) == prev and len(gone) >= 10:
            break
        prev = len(gone)
    gone_idx = sorted(gone)
    print("%d of %d connections closed with a limit of %d: %s" % (len(gone_idx), n, a.max, gone_idx[:20]), flush=True)
    if len(gone_idx) != 10:
        fail("%d connections were closed, expected exactly 10 (%d over the limit of %d)" % (len(gone_idx), n - a.max, a.max))
    if (n - 1) in gone_idx:
        fail("the newest connection was closed instead of an older one")
    run_cmd(a.cmd, "provision with every handshake slot taken")
    for s in conns:
        s.close()
    return 1 if FAILS else 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd_name", required=True)
    l = sub.add_parser("load")
    l.add_argument("port", type=int)
    l.add_argument("--conns", type=int, default=1000)
    l.add_argument("--sources", type=int, default=8)
    l.add_argument("--interval", type=float, default=2.0)
    l.add_argument("--ready", required=True)
    l.add_argument("--status", required=True)
    ps = sub.add_parser("per-source")
    ps.add_argument("port", type=int)
    ps.add_argument("--limit", type=int, required=True)
    ps.add_argument("--timeout-ms", type=int, required=True)
    ps.add_argument("cmd", nargs=argparse.REMAINDER)
    d = sub.add_parser("deadline")
    d.add_argument("port", type=int)
    d.add_argument("--timeout-ms", type=int, required=True)
    t = sub.add_parser("total")
    t.add_argument("port", type=int)
    t.add_argument("--max", type=int, required=True)
    t.add_argument("--timeout-ms", type=int, required=True)
    t.add_argument("cmd", nargs=argparse.REMAINDER)
    a = p.parse_args()
    if hasattr(a, "cmd") and a.cmd and a.cmd[0] == "--":
        a.cmd = a.cmd[1:]
    return {"load": cmd_load, "per-source": cmd_per_source, "deadline": cmd_deadline, "total": cmd_total}[a.cmd_name](a)


if __name__ == "__main__":
    sys.exit(main())
