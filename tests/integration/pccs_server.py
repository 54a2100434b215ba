#!/usr/bin/env python3
"""pccs_server.py — a test-only PCCS: serves the real DCAP vectors of tests/data/dcap-qvl over HTTPS
in Intel's PCCS/PCS format (API v3 and v4; SGX and TDX routes), for tests/integration/pccs_fetch.sh.

  pccs_server.py DATA_DIR CERT KEY PORT_FILE MODE_FILE LOG_FILE

Listens on 127.0.0.1 (ephemeral port, written to PORT_FILE). Each request re-reads MODE_FILE, so a
test switches behaviour without a restart:
  ok           answers as a PCCS does
  slow         waits 10 s before answering (client timeouts)
  badjson      TCB info body that is not JSON
  badchain     TCB info issuer chain header that is not a certificate chain
  wrongfmspc   the (validly signed) TCB info of another platform
  tampered     TCB info whose signature was altered
  notfound     404 for every request
Each request's path (and the issuer chain header name sent) is appended to LOG_FILE.
"""
import json
import os
import ssl
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DATA, CERT, KEY, PORT_FILE, MODE_FILE, LOG_FILE = sys.argv[1:7]


def load(name):
    with open(os.path.join(DATA, name)) as f:
        return json.load(f)


SGX = load("sgx_quote_collateral.json")
TDX = load("tdx_quote_collateral.json")
OLD = load("tdx_quote_outdated_collateral.json")
TCB_BY_FMSPC = {("sgx", "00A067110000"): SGX, ("tdx", "B0C06F000000"): TDX, ("tdx", "90C06F000000"): OLD}


def signed(key, text, sig):
    # Intel's format: the signed text verbatim as the value, then the signature
    return ('{"%s":%s,"signature":"%s"}' % (key, text, sig)).encode()


def chain(pem):
    return urllib.parse.quote(pem, safe="")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body, headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        try:
            mode = open(MODE_FILE).read().strip()
        except OSError:
            mode = "ok"
        url = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(url.query)
        parts = url.path.strip("/").split("/")  # tee, "certification", vN, rest...
        sent = ""
        try:
            if mode == "slow":
                time.sleep(10)
            if mode == "notfound" or len(parts) < 4 or parts[1] != "certification" or parts[2] not in ("v3", "v4"):
                return self.answer(404, b"")
            tee, version, rest = parts[0], parts[2], "/".join(parts[3:])
            if tee == "tdx" and version != "v4":
                return self.answer(404, b"")
            if rest == "tcb":
                fmspc = q.get("fmspc", [""])[0].upper()
                col = TCB_BY_FMSPC.get((tee, fmspc))
                if col is None:
                    return self.answer(404, b"")
                if mode == "wrongfmspc":
                    col = TDX if tee == "sgx" else SGX
                text, sig = col["tcb_info"], col["tcb_info_signature"]
                if mode == "tampered":
                    sig = sig[:-1] + ("0" if sig[-1] != "0" else "1")
                body = signed("tcbInfo", text, sig)
                if mode == "badjson":
                    body = body[:-2]
                hdr = col["tcb_info_issuer_chain"]
                if mode == "badchain":
                    hdr = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
                sent = "TCB-Info-Issuer-Chain" if version == "v4" else "SGX-TCB-Info-Issuer-Chain"
                return self.answer(200, body, [(sent, chain(hdr)), ("Content-Type", "application/json")])
            if rest == "qe/identity":
                col = TDX if tee == "tdx" else SGX
                sent = "SGX-Enclave-Identity-Issuer-Chain"
                return self.answer(200, signed("enclaveIdentity", col["qe_identity"], col["qe_identity_signature"]),
                                   [(sent, chain(col["qe_identity_issuer_chain"])),
                                    ("Content-Type", "application/json")])
            if rest == "pckcrl" and tee == "sgx":
                col = {"processor": SGX, "platform": TDX}.get(q.get("ca", [""])[0])
                if col is None:
                    return self.answer(400, b"")
                sent = "SGX-PCK-CRL-Issuer-Chain"
                der = bytes.fromhex(col["pck_crl"])
                if q.get("encoding", [""])[0] != "der":  # PCCS without encoding=der: hex
                    der = col["pck_crl"].encode()
                return self.answer(200, der, [(sent, chain(col["pck_crl_issuer_chain"])),
                                              ("Content-Type", "application/pkix-crl")])
            if rest == "rootcacrl" and tee == "sgx":
                return self.answer(200, SGX["root_ca_crl"].encode())  # PCCS: hex of the DER
            return self.answer(404, b"")
        finally:
            with open(LOG_FILE, "a") as f:
                f.write("%s %s %s\n" % (mode, self.path, sent))


srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
srv.daemon_threads = True
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(CERT, KEY)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
os.rename(PORT_FILE + ".tmp", PORT_FILE)
srv.serve_forever()
