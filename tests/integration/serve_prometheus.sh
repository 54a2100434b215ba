#!/usr/bin/env bash
# serve_prometheus.sh — Debian's real Prometheus scrapes `cloister serve`'s metrics endpoint over
# mutual TLS (scheme https, tls_config with the CA and a client certificate) on loopback with free
# ports, every second; through Prometheus's HTTP API: the target is up, cloister_build_info and the
# latency histogram by model_name arrived with their labels, the process metrics too; a second job
# without a client certificate is refused by the server (up == 0), so the first really used mTLS.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
command -v prometheus >/dev/null || { echo "FAIL prometheus is missing (scripts/deps.sh test installs it)"; exit 1; }
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$WORK"' EXIT

check "tls init" "$CLOISTER" tls init --dir tls --server-name localhost --client-name client --san 127.0.0.1
read -r gp rp pp < <(free_ports 3)
"$CLOISTER" serve --ssl_config_file tls/ssl.cfg --host 127.0.0.1 --port "$gp" --rest_api_port "$rp" \
  --model_name digits --model_base_path "$ROOT/models/digits" --file_system_poll_wait_seconds 0 >serve.log 2>&1 &
pids+=($!)
for ((i = 0; i < 100; i++)); do grep -q "serving:" serve.log 2>/dev/null && break; sleep 0.1; done
C="curl -sS --max-time 10 --cacert tls/ca_cert.pem --resolve localhost:$rp:127.0.0.1 --cert tls/client/cert.pem --key tls/client/key.pem"
expect "a request for the histogram" 0 '"logits"' -- $C -d @"$ROOT/models/digits/samples/digit-3-0.json" \
  "https://localhost:$rp/v1/models/digits:predict"

cat >prometheus.yml <<YAML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: cloister
    scheme: https
    metrics_path: /monitoring/prometheus/metrics
    tls_config:
      ca_file: $WORK/tls/ca_cert.pem
      cert_file: $WORK/tls/client/cert.pem
      key_file: $WORK/tls/client/key.pem
      server_name: localhost
    static_configs:
      - targets: ["127.0.0.1:$rp"]
  - job_name: nocert
    scheme: https
    metrics_path: /monitoring/prometheus/metrics
    tls_config:
      ca_file: $WORK/tls/ca_cert.pem
      server_name: localhost
    static_configs:
      - targets: ["127.0.0.1:$rp"]
YAML
check "promtool accepts the configuration" promtool check config prometheus.yml
prometheus --config.file=prometheus.yml --storage.tsdb.path="$WORK/data" --web.listen-address="127.0.0.1:$pp" \
  --log.level=warn >prometheus.log 2>&1 &
pids+=($!)

# query PROMQL — the result vector of an instant query, as JSON
query() { curl -sS --max-time 5 -G "http://127.0.0.1:$pp/api/v1/query" --data-urlencode "query=$1"; }
# wait_up JOB VALUE — until up{job=JOB} is VALUE (at most 20 s)
wait_up() {
  for ((i = 0; i < 80; i++)); do
    query "up{job=\"$1\"}" 2>/dev/null | $PY -c "
import json, sys
r = json.load(sys.stdin)['data']['result']
sys.exit(0 if r and r[0]['value'][1] == '$2' else 1)" 2>/dev/null && return 0
    sleep 0.25
  done
  echo "up{job=\"$1\"} did not become $2 within 20 s: $(query "up{job=\"$1\"}")"; sed 's/^/    /' prometheus.log | tail -5
  return 1
}
expect "Prometheus scraped cloister over mutual TLS: up == 1" 0 "" -- wait_up cloister 1
expect "  ... a job without a client certificate is refused: up == 0" 0 "" -- wait_up nocert 0
expect "  ... and Prometheus says why: the server wanted a certificate" 0 "remote error: tls: .*certificate" -- \
  bash -c "curl -sS --max-time 5 'http://127.0.0.1:$pp/api/v1/targets' | $PY -c \"
import json, sys
t = [t for t in json.load(sys.stdin)['data']['activeTargets'] if t['labels']['job'] == 'nocert']
print(t[0]['lastError'])\""
version=$("$CLOISTER" --version | sed 's/^cloister //')
expect "cloister_build_info with its labels, stored by Prometheus" 0 "^ok" -- bash -c "$(declare -f query); pp=$pp; query cloister_build_info | $PY -c \"
import json, sys
r = json.load(sys.stdin)['data']['result']
assert len(r) == 1, r
m = r[0]['metric']
assert m['job'] == 'cloister' and m['version'] == '$version' and m['evidence_provider'] == 'none' and m['engine_isa'], m
assert r[0]['value'][1] == '1', r
print('ok', m)\""
expect "the latency histogram by model_name" 0 "^ok" -- bash -c "$(declare -f query); pp=$pp; query \
  'sum by (le) ({__name__=\":tensorflow:serving:request_latency_bucket\",model_name=\"digits\",API=\"predict\",entrypoint=\"REST\"})' | $PY -c \"
import json, sys
r = json.load(sys.stdin)['data']['result']
les = sorted(float(x['metric']['le']) for x in r)
assert les[0] == 0.0001 and les[-1] == float('inf') and len(les) >= 16, les
inf = [x for x in r if x['metric']['le'] == '+Inf'][0]
assert inf['value'][1] == '1', inf
print('ok', len(les), 'buckets')\""
expect "process metrics" 0 "^ok" -- bash -c "$(declare -f query); pp=$pp; query \
  '{job=\"cloister\",__name__=~\"process_(cpu_seconds_total|resident_memory_bytes|open_fds|threads|max_fds|start_time_seconds|virtual_memory_bytes)\"}' | $PY -c \"
import json, sys
r = json.load(sys.stdin)['data']['result']
names = sorted(x['metric']['__name__'] for x in r)
assert len(names) == 7, names
print('ok', names)\""

kill -TERM "${pids[0]}"
wait "${pids[0]}"
rc=$?
check "cloister serve: SIGTERM, exit 0" test $rc -eq 0
# in the sanitizer build: no report from the server
expect "no sanitizer or crash report" 1 "" -- grep -Eq "AddressSanitizer|LeakSanitizer|runtime error:|Segmentation|Aborted" serve.log

finish
