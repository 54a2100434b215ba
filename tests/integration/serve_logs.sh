#!/usr/bin/env bash
# serve_logs.sh — logs and metrics of the real `cloister serve` (the demo model, mutual TLS, free
# loopback ports): --log-level and --log-format after the subcommand; an unknown CLOISTER_LOG or
# CLOISTER_LOG_FORMAT warned about in one line naming the valid values; JSON lines (every line of
# stderr parses, with time/level/module/msg); the access log of both APIs with method, model,
# version, status, latency, bytes, peer and client certificate, in JSON and in text, one line per
# request whatever the request named (quotes, newlines, bytes that are not UTF-8), and never a
# tensor value, an output value, a header, a query string or the server's key; the metrics endpoint
# checked by promtool (no parse error; lint complaints only about the TF Serving names kept for
# compatibility), latency histograms by model_name down to 0.1 ms,
# process metrics and cloister_build_info.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
srv=""
trap '[[ -n $srv ]] && kill $srv 2>/dev/null; rm -rf "$WORK"' EXIT

# ---- the CLI's logging options and environment
expect "--log-level after the subcommand: a bad value is a usage error naming the valid ones" 2 \
  "unknown log level 'loud' \(debug, info, warn, error, off\)" -- "$CLOISTER" keygen --out k0 --log-level loud
expect "--log-format after the subcommand: likewise" 2 "unknown log format 'xml' \(text, json\)" -- \
  "$CLOISTER" keygen --out k0 --log-format xml
expect "--log-format before the subcommand" 2 "unknown log format 'xml'" -- "$CLOISTER" --log-format xml keygen --out k0
expect "an unknown CLOISTER_LOG is warned about, naming the valid values" 0 \
  "warn  \[log\] CLOISTER_LOG='verbose' is not a log level: use debug, info, warn, error or off \(ignored; logging at info\)" -- \
  env CLOISTER_LOG=verbose "$CLOISTER" keygen --out k1
expect "  ... in one line" 0 "^1$" -- bash -c "CLOISTER_LOG=verbose '$CLOISTER' keygen --out k2 2>&1 | grep -c CLOISTER_LOG"
expect "  ... and the command still works" 0 "" -- test -s k1
expect "an unknown CLOISTER_LOG_FORMAT likewise, and --log-level after the subcommand wins over CLOISTER_LOG" 0 \
  "CLOISTER_LOG_FORMAT='yml' is not a log format: use text or json \(ignored; logging as text\).*CLOISTER_LOG='x' .*logging at debug" -- \
  bash -c "CLOISTER_LOG_FORMAT=yml CLOISTER_LOG=x '$CLOISTER' keygen --out k3 --log-level debug 2>&1 | tr '\n' ' '"
expect "  ... and in JSON when --log-format json comes after the subcommand" 0 \
  '^\{"time":"[0-9T:.-]+Z","level":"warn","module":"log","msg":"CLOISTER_LOG=.verbose. is not a log level' -- \
  env CLOISTER_LOG=verbose "$CLOISTER" keygen --out k4 --log-format json
expect "a valid CLOISTER_LOG is not warned about" 1 "^0$" -- \
  bash -c "CLOISTER_LOG=error '$CLOISTER' keygen --out k5 2>&1 | grep -c CLOISTER_LOG"
expect "an access log that cannot be opened is refused before anything starts" 1 \
  "cloister serve: --access_log: cannot open log file '$WORK' for appending \(it is a directory" -- \
  "$CLOISTER" serve --plaintext --allow-empty --access_log "$WORK"

# ---- a server: JSON logs, debug level (after the subcommand, over CLOISTER_LOG=warn), access log to a file
check "tls init" "$CLOISTER" tls init --dir tls --server-name localhost --client-name client --san 127.0.0.1
# a request tensor with a value that can be recognised anywhere: 0.7654321 in every pixel
$PY -c "
import numpy as np, json
a = np.full((1, 1, 8, 8), 0.7654321, dtype=np.float32)
np.save('x.npy', a)
json.dump({'inputs': {'image': [[[[0.7654321] * 8] * 8]]}}, open('x.json', 'w'))"
read -r gp rp < <(free_ports)
CLOISTER_LOG=warn "$CLOISTER" serve --ssl_config_file tls/ssl.cfg --host 127.0.0.1 --port "$gp" --rest_api_port "$rp" \
  --model_name digits --model_base_path "$ROOT/models/digits" --file_system_poll_wait_seconds 0 \
  --log-level debug --log-format json --access_log access.log >serve.log 2>&1 &
srv=$!
for ((i = 0; i < 100; i++)); do grep -q "serving:" serve.log 2>/dev/null && break; sleep 0.1; done
C="curl -sS --max-time 10 --cacert tls/ca_cert.pem --resolve localhost:$rp:127.0.0.1 --cert tls/client/cert.pem --key tls/client/key.pem"
expect "REST :predict with a secret header and query" 0 '"logits"' -- \
  $C -H "Authorization: Bearer SECRET-TOKEN-4711" -d @x.json "https://localhost:$rp/v1/models/digits/versions/1:predict?token=SECRET-QUERY-4711"
$C -d @x.json "https://localhost:$rp/v1/models/digits:predict" >answer.json
logit=$($PY -c "import json; print(repr(json.load(open('answer.json'))['outputs']['logits'][0][3]))")
expect "REST status" 0 AVAILABLE -- $C "https://localhost:$rp/v1/models/digits"
expect "REST: a model name with a quote, a newline and a byte that is not UTF-8" 0 "Servable not found" -- \
  $C "https://localhost:$rp/v1/models/a%22b%0Ac%FF/metadata"
expect "gRPC Predict of the same tensor" 0 "" -- "$CLOISTER" predict --server "localhost:$gp" --ca tls/ca_cert.pem \
  --cert tls/client/cert.pem --key tls/client/key.pem --model digits --input image=x.npy
expect "gRPC Predict of an unknown model" 1 "Servable not found" -- "$CLOISTER" predict --server "localhost:$gp" --ca tls/ca_cert.pem \
  --cert tls/client/cert.pem --key tls/client/key.pem --model nosuch --input image=x.npy
$C "https://localhost:$rp/monitoring/prometheus/metrics" >metrics.txt
# log rotation: the file renamed, SIGHUP, and the next request's line is in a new access.log
for ((i = 0; i < 50; i++)); do [[ $(wc -l <access.log) -ge 7 ]] && break; sleep 0.1; done
mv access.log access.log.rotated
kill -HUP $srv
for ((i = 0; i < 50; i++)); do grep -q "access log reopened" serve.log && break; sleep 0.1; done
check "SIGHUP reopens the access log" grep -q '"msg":"received SIGHUP: access log reopened"' serve.log
expect "  ... and the server still answers" 0 AVAILABLE -- $C "https://localhost:$rp/v1/models/digits"
for ((i = 0; i < 50; i++)); do [[ -s access.log ]] && break; sleep 0.1; done
expect "  ... the request after it is in the new file, alone" 0 "^ok$" -- $PY -c '
import json
new = [json.loads(l) for l in open("access.log", encoding="utf-8")]
old = open("access.log.rotated", encoding="utf-8").read().splitlines()
assert len(new) == 1 and new[0]["rpc"] == "status" and new[0]["model"] == "digits", new
assert len(old) == 7, old
print("ok")'
mv access.log access.log.after-hup
mv access.log.rotated access.log
kill -TERM $srv
wait $srv
rc=$?
srv=""
check "SIGTERM: exit 0" test $rc -eq 0

expect "every stderr line is a JSON object with time (RFC 3339 UTC, ms), level, module and msg; debug lines included" 0 \
  "^ok [0-9]+ lines, debug [1-9]" -- $PY - serve.log <<'EOF'
import json, re, sys
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
debug = 0
for n, l in enumerate(lines, 1):
    o = json.loads(l)
    assert list(o)[:4] == ["time", "level", "module", "msg"], (n, l)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", o["time"]), (n, l)
    assert o["level"] in ("debug", "info", "warn", "error"), (n, l)
    debug += o["level"] == "debug"
assert any(o for l in lines if json.loads(l)["msg"] == "stopped")
print(f"ok {len(lines)} lines, debug {debug}")
EOF

expect "the access log: one JSON line per request, with what each must say" 0 "^ok 7 requests" -- \
  $PY - access.log "$rp" <<'EOF'
import json, sys
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
rec = [json.loads(l) for l in lines]
assert len(rec) == 7, lines
for r in rec:
    assert r["module"] == "access" and r["msg"] == "request" and r["level"] == "info", r
    assert r["peer"].startswith("127.0.0.1:"), r
    assert r["client"] == "CN=client,O=cloister", r
    assert isinstance(r["latency_ms"], (int, float)) and 0 <= r["latency_ms"] < 10000, r
    assert isinstance(r["bytes_in"], int) and isinstance(r["bytes_out"], int), r
p = rec[0]
want = {"api": "rest", "method": "POST", "path": "/v1/models/digits/versions/1:predict", "rpc": "predict",
        "model": "digits", "version": 1, "status": "OK", "http_status": 200}
assert {k: p.get(k) for k in want} == want, p
size = len(open("x.json", "rb").read())
assert p["bytes_in"] == size and p["bytes_out"] > 100, (p, size)
assert rec[1]["path"] == "/v1/models/digits:predict" and rec[1]["version"] == 1, rec[1]
s = rec[2]
assert (s["method"], s["rpc"], s["model"], s["status"], s["http_status"]) == ("GET", "status", "digits", "OK", 200), s
h = rec[3]
assert h["model"] == 'a"b\nc?' and h["status"] == "NOT_FOUND" and h["http_status"] == 404, h
g = rec[4]
assert (g["api"], g["rpc"], g["path"], g["model"], g["version"], g["status"]) == \
    ("grpc", "predict", "/tensorflow.serving.PredictionService/Predict", "digits", 1, "OK"), g
assert "http_status" not in g and "method" not in g, g
assert g["bytes_in"] >= 256 + 5 and g["bytes_out"] > 5, g  # 64 floats at least, gRPC framing
n = rec[5]
assert (n["api"], n["model"], n["status"]) == ("grpc", "nosuch", "NOT_FOUND") and "version" not in n, n
m = rec[6]
assert m["path"] == "/monitoring/prometheus/metrics" and "rpc" not in m and m["http_status"] == 200, m
print(f"ok {len(rec)} requests")
EOF
key_body=$(sed -n '2p' tls/server/key.pem)
for secret in SECRET-TOKEN SECRET-QUERY token= 7654321 765432 "$logit" "$key_body" Authorization; do
  expect "never in any log: '$secret'" 1 "" -- grep -rqF -- "$secret" serve.log access.log access.log.after-hup
done

# ---- the metrics, as scraped during the run
expect "promtool parses the metrics; its only complaints are about names kept as they were" 0 "^ok" -- bash -c '
  out=$(promtool check metrics <metrics.txt 2>&1); rc=$?
  [[ $rc == 0 || $rc == 3 ]] || { echo "promtool: exit $rc: $out"; exit 1; }
  bad=$(grep -vE "^:tensorflow:serving:request_(count|latency)" <<<"$out")
  [[ -z $bad ]] && echo ok || { echo "unexpected: $bad"; exit 1; }'
expect "latency histogram by model_name, from 0.1 ms" 0 \
  ':tensorflow:serving:request_latency_bucket\{model_name="digits",API="predict",entrypoint="REST",le="0.0001"\} [0-9]+' -- cat metrics.txt
expect "  ... gRPC too, buckets up to 10 s and +Inf" 0 \
  ':tensorflow:serving:request_latency_bucket\{model_name="digits",API="predict",entrypoint="GRPC",le="\+Inf"\} 1$' -- cat metrics.txt
expect "  ... a model that is not served is not a label of its own" 0 \
  ':tensorflow:serving:request_latency_count\{model_name="",API="predict",entrypoint="GRPC"\} 1$' -- cat metrics.txt
expect "  ... the buckets are cumulative and end with the count" 0 "^ok" -- $PY - metrics.txt <<'EOF'
import re, sys
series = {}
for l in open(sys.argv[1]):
    m = re.match(r':tensorflow:serving:request_latency_bucket\{(.*),le="([^"]+)"\} (\d+)$', l)
    if m:
        series.setdefault(m[1], []).append((m[2], int(m[3])))
    m = re.match(r':tensorflow:serving:request_latency_count\{(.*)\} (\d+)$', l)
    if m:
        b = series[m[1]]
        assert [c for _, c in b] == sorted(c for _, c in b) and b[-1] == ("+Inf", int(m[2])), (m[1], b)
        les = [float(x) for x, _ in b[:-1]]
        assert les[0] == 0.0001 and les[-1] == 10 and les == sorted(les) and len(les) >= 15, les
assert len(series) >= 4, series
print("ok", len(series))
EOF
version=$("$CLOISTER" --version | sed 's/^cloister //')
expect "build info: version, engine ISA, evidence provider" 0 \
  "^cloister_build_info\{version=\"$version\",engine_isa=\"[a-z0-9_]+\",evidence_provider=\"none\"\} 1$" -- cat metrics.txt
expect "process metrics with plausible values" 0 "^ok" -- $PY - metrics.txt <<'EOF'
import sys
v = {}
for l in open(sys.argv[1]):
    if l.startswith("process_"):
        k, x = l.split()
        v[k] = float(x)
assert v["process_cpu_seconds_total"] > 0, v
assert 4 << 20 < v["process_resident_memory_bytes"] < 4 << 30, v
assert v["process_virtual_memory_bytes"] >= v["process_resident_memory_bytes"], v
assert 5 <= v["process_open_fds"] < v["process_max_fds"], v
assert 3 <= v["process_threads"] < 100, v
import time
assert time.time() - 600 < v["process_start_time_seconds"] <= time.time(), v
print("ok", v)
EOF

# ---- text format, access log on stderr: one line per request, values quoted and escaped
read -r gp rp < <(free_ports)
"$CLOISTER" serve --plaintext --host 127.0.0.1 --port "$gp" --rest_api_port "$rp" --model_name digits \
  --model_base_path "$ROOT/models/digits" --file_system_poll_wait_seconds 0 --access_log stderr >text.log 2>&1 &
srv=$!
for ((i = 0; i < 100; i++)); do grep -q "serving:" text.log 2>/dev/null && break; sleep 0.1; done
curl -sS --max-time 10 "http://127.0.0.1:$rp/v1/models/a%22b%0Ac%FF%20d/metadata" >/dev/null
curl -sS --max-time 10 -d @x.json "http://127.0.0.1:$rp/v1/models/digits:predict" >/dev/null
kill -TERM $srv
wait $srv
srv=""
expect "text access log: the hostile name quoted and escaped on one line" 0 \
  '^[0-9T:.-]+Z info  \[access\] request api=rest method=GET path=/v1/models/a%22b%0Ac%FF%20d/metadata rpc=metadata model="a\\"b\\nc\\xff d" status=NOT_FOUND http_status=404 latency_ms=[0-9.e-]+ bytes_in=0 bytes_out=[0-9]+ peer=127.0.0.1:[0-9]+$' -- \
  grep "access" text.log
expect "  ... no client certificate without TLS, and the predict line" 0 \
  "request api=rest method=POST path=/v1/models/digits:predict rpc=predict model=digits version=1 status=OK http_status=200 .* peer=127.0.0.1:[0-9]+$" -- \
  grep "access" text.log
expect "  ... two requests, two lines" 0 "^2$" -- grep -c "\[access\]" text.log
expect "  ... no tensor value in it" 1 "" -- grep -qF 7654321 text.log

# in the sanitizer build: no report from the servers
expect "no sanitizer or crash report" 1 "" -- grep -Eq "AddressSanitizer|LeakSanitizer|runtime error:|Segmentation|Aborted" serve.log text.log

finish
