#!/usr/bin/env bash
# serve_monitoring.sh — TF Serving's --monitoring_config_file (a MonitoringConfig in protobuf text
# format) through the real binary: without it the metrics are at /monitoring/prometheus/metrics
# (cloister's default; TF Serving serves none, docs/serve.md says why); `enable: false` (or a file
# without `enable: true`) serves none, 404; a path moves them there (the default path then 404, POST
# 405); an empty path is the default one. Hostile files (unknown fields, a path without '/', with a
# space or '?', under /v1/, longer than 256 characters, a NUL byte, a missing file) stop the start with
# a message naming the file (and the line), exit 2, before any port is bound.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$(dirname "$0")/lib.sh"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$WORK"' EXIT
M="$ROOT/models/digits"
# start NAME ARGS... — a plaintext server of the digits model; NAME.log, NAME_PID, NAME_PORT (REST)
start() {
  local name=$1
  shift
  local rp
  rp=$(free_ports 1)
  "$CLOISTER" serve --plaintext --host 127.0.0.1 --port 0 --rest_api_port "$rp" --model_name digits \
    --model_base_path "$M" --file_system_poll_wait_seconds 0 "$@" >"$name.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  printf -v "${name}_PID" %s "$pid"
  printf -v "${name}_PORT" %s "$rp"
  for ((i = 0; i < 100; i++)); do
    grep -q "serving:" "$name.log" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "server $name did not start:"; sed 's/^/    /' "$name.log"; return 1
}
code() { curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "$@"; }
predict() { curl -sS --max-time 10 -d @"$M/samples/digit-3-0.json" "http://127.0.0.1:$1/v1/models/digits:predict"; }

# ---- no file: cloister's default path
check "no monitoring config: the server starts" start plain
expect "  ... a predict" 0 '"logits"' -- predict "$plain_PORT"
expect "  ... metrics at /monitoring/prometheus/metrics" 0 \
  '^:tensorflow:serving:request_count\{model_name="digits",status="OK"\} 1$' -- \
  curl -sS --max-time 10 "http://127.0.0.1:$plain_PORT/monitoring/prometheus/metrics"

# ---- enable: false, or no enable at all (proto3's false): no endpoint
printf 'prometheus_config {\n  enable: false\n  path: "/monitoring/prometheus/metrics"\n}\n' >off.cfg
check "enable: false: the server starts" start off --monitoring_config_file off.cfg
expect "  ... and says there is no endpoint" 0 "no Prometheus metrics endpoint" -- cat off.log
expect "  ... the default path is 404" 0 "^404$" -- code "http://127.0.0.1:$off_PORT/monitoring/prometheus/metrics"
expect "  ... the model API still answers" 0 '"logits"' -- predict "$off_PORT"
printf 'prometheus_config { path: "/m" }\n' >noenable.cfg
check "a path without 'enable: true': the server starts" start noenable --monitoring_config_file noenable.cfg
expect "  ... and serves no metrics there (TF Serving's rule)" 0 "^404$" -- code "http://127.0.0.1:$noenable_PORT/m"

# ---- a path of its own
printf '# TF Serving MonitoringConfig\nprometheus_config {\n  enable: true,\n  path: "/custom/metrics"\n}\n' >custom.cfg
check "path: /custom/metrics: the server starts" start custom --monitoring_config_file=custom.cfg
expect "  ... and names the path" 0 "Prometheus metrics at /custom/metrics" -- cat custom.log
expect "  ... a predict" 0 '"logits"' -- predict "$custom_PORT"
curl -sS --max-time 10 "http://127.0.0.1:$custom_PORT/custom/metrics" >custom.txt
expect "  ... the metrics are there, TF's count" 0 \
  '^:tensorflow:serving:request_count\{model_name="digits",status="OK"\} 1$' -- cat custom.txt
expect "  ... TF's latency histogram in microseconds from 10 us" 0 \
  '^:tensorflow:serving:request_latency_bucket\{model_name="digits",API="Predict",entrypoint="REST",le="10"\} 0$' -- cat custom.txt
expect "  ... promtool parses them; it complains only of TF Serving's own names" 0 "^ok" -- bash -c '
  out=$(promtool check metrics <custom.txt 2>&1); rc=$?
  [[ $rc == 0 || $rc == 3 ]] || { echo "promtool: exit $rc: $out"; exit 1; }
  bad=$(grep -vE "^:tensorflow:serving:request_(count|latency) " <<<"$out")
  [[ -z $bad ]] && echo ok || { echo "unexpected: $bad"; exit 1; }'
expect "  ... the default path is 404" 0 "^404$" -- code "http://127.0.0.1:$custom_PORT/monitoring/prometheus/metrics"
expect "  ... POST to the metrics is 405" 0 "^405$" -- code -d x "http://127.0.0.1:$custom_PORT/custom/metrics"
expect "  ... a query string does not hide them" 0 "^200$" -- code "http://127.0.0.1:$custom_PORT/custom/metrics?x=1"
printf "prometheus_config: < enable: true path: '' >\n" >emptypath.cfg
check "an empty path: the server starts" start emptypath --monitoring_config_file emptypath.cfg
expect "  ... with the default path (TF Serving's rule)" 0 "^200$" -- \
  code "http://127.0.0.1:$emptypath_PORT/monitoring/prometheus/metrics"

# ---- hostile files: refused before anything listens
long=$(printf 'a%.0s' {1..300})
bad() { # NAME CONTENT PATTERN
  printf '%b' "$2" >"$1.cfg"
  local rp
  rp=$(free_ports 1)
  expect "refused: $1" 2 "monitoring_config_file $1.cfg: .*$3" -- \
    "$CLOISTER" serve --plaintext --host 127.0.0.1 --port 0 --rest_api_port "$rp" --model_name digits \
    --model_base_path "$M" --monitoring_config_file "$1.cfg"
}
bad unknown-field 'prometheus_config {\n  enable: true\n  port: 9090\n}\n' "line 3: unknown field 'port'"
bad unknown-message 'logging_config { }\n' "line 1: unknown field 'logging_config'"
bad relative 'prometheus_config { enable: true path: "metrics" }' "must start with '/'"
bad space 'prometheus_config { enable: true path: "/a b" }' "0x20"
bad query 'prometheus_config { enable: true path: "/m?x=1" }' "0x3f"
bad api-route 'prometheus_config { enable: true path: "/v1/models/digits" }' "under /v1/"
bad long "prometheus_config { enable: true path: \"/$long\" }" "longer than 256"
bad nul 'prometheus_config {\0}' "unexpected byte 0x00"
bad bool 'prometheus_config { enable: yes }' "true or false"
bad twice 'prometheus_config { enable: true }\nprometheus_config { enable: false }' "line 2: field 'prometheus_config' given twice"
bad unclosed 'prometheus_config { enable: true' "found end of input"
expect "refused: a missing file" 2 "monitoring_config_file missing.cfg: " -- \
  "$CLOISTER" serve --plaintext --port 0 --rest_api_port 0 --model_name digits --model_base_path "$M" \
  --monitoring_config_file missing.cfg
expect "--help names the option" 0 "monitoring_config_file" -- "$CLOISTER" serve --help
finish
