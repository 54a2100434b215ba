#!/usr/bin/env bash
# serve_tls_sessions.sh — TLS session resumption on the server (tls.c: session_policy): a session saved
# by `openssl s_client -sess_out` is resumed with `-sess_in` on both ports, TLS 1.2 and TLS 1.3, under
# mutual TLS (which refused every resumption with alert 80 "session id context uninitialized" before)
# and one-way TLS, and a request runs on the resumed connection; a session of one port offered to the
# other gets a full handshake, not an error; nginx as a reverse proxy (`proxy_pass https://` with a
# client certificate and `proxy_ssl_session_reuse on`, one upstream connection per request) gets every
# request answered, with the server's metrics counting the resumed handshakes.
# Usage: serve_tls_sessions.sh CLOISTER SERVE_TESTD PROTO_DIR
source "$(dirname "$0")/lib.sh"
TESTD=$(readlink -f "$2")
PROTO=$(readlink -f "$3")
source "$(dirname "$0")/serve_lib.sh"

check "tls material" make_tls
start_server mtls --ssl-config tls2/ssl.cfg || { finish; exit 1; }
start_server tls --ssl-config tls1/ssl.cfg || { finish; exit 1; }
M=(-CAfile tls2/ca_cert.pem -cert tls2/client/cert.pem -key tls2/client/key.pem)

# sclient VERSION PORT ALPN SESSION_OPTION FILE [TLS options...] — one connection; for REST a GET of the
# model status with Connection: close (so the TLS 1.3 session ticket that follows the handshake is read
# before the end), for gRPC the handshake only, kept open briefly for the same reason
sclient() {
  local v=$1 port=$2 alpn=$3 sopt=$4 sfile=$5
  shift 5
  if [[ $alpn == http/1.1 ]]; then
    printf 'GET /v1/models/affine HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' |
      timeout 10 openssl s_client "$v" -connect "127.0.0.1:$port" -servername localhost -alpn "$alpn" \
        "$sopt" "$sfile" -ign_eof "$@" 2>&1
  else
    sleep 0.3 | timeout 10 openssl s_client "$v" -connect "127.0.0.1:$port" -servername localhost -alpn "$alpn" \
      "$sopt" "$sfile" "$@" 2>&1
  fi
}

for v in -tls1_2 -tls1_3; do
  for api in grpc rest; do
    if [[ $api == grpc ]]; then port=$mtls_GRPC alpn=h2; else port=$mtls_REST alpn=http/1.1; fi
    rm -f "sess.$api$v"
    expect "mTLS $api ${v#-}: the first connection is a full handshake" 0 "^New, TLSv1\.[23]" -- \
      sclient "$v" "$port" "$alpn" -sess_out "sess.$api$v" "${M[@]}"
    expect "mTLS $api ${v#-}: the saved session is resumed" 0 "^Reused, TLSv1\.[23]" -- \
      sclient "$v" "$port" "$alpn" -sess_in "sess.$api$v" "${M[@]}"
  done
  expect "mTLS rest ${v#-}: the request on the resumed connection is answered" 0 "HTTP/1.1 200 OK" -- \
    sclient "$v" "$mtls_REST" http/1.1 -sess_in "sess.rest$v" "${M[@]}"
  rm -f "sess.tls$v"
  sclient "$v" "$tls_REST" http/1.1 -sess_out "sess.tls$v" -CAfile tls1/ca_cert.pem >/dev/null
  expect "one-way TLS rest ${v#-}: resumed" 0 "^Reused, TLSv1\.[23]" -- \
    sclient "$v" "$tls_REST" http/1.1 -sess_in "sess.tls$v" -CAfile tls1/ca_cert.pem
done
# a REST session offered on the gRPC port: another context, another session cache: a new session
expect "a REST session offered on the gRPC port gets a full handshake" 0 "^New, TLSv1\.3" -- \
  sclient -tls1_3 "$mtls_GRPC" h2 -sess_in sess.rest-tls1_3 "${M[@]}"
expect "a session of another server (one-way TLS) is not resumed under mutual TLS" 0 "^New, TLSv1\.2" -- \
  sclient -tls1_2 "$mtls_REST" http/1.1 -sess_in sess.tls-tls1_2 "${M[@]}"

# nginx in front, as a reverse proxy resuming its upstream sessions (nginx-light, bench and test deps)
metric() {
  curl -sS --max-time 10 --cacert tls2/ca_cert.pem --cert tls2/client/cert.pem --key tls2/client/key.pem \
    --resolve "localhost:$mtls_REST:127.0.0.1" "https://localhost:$mtls_REST/monitoring/prometheus/metrics" |
    sed -n "s/^cloister_serve_tls_handshakes_total{port=\"rest\",session=\"$1\"} //p"
}
if ! command -v nginx >/dev/null; then
  echo "FAIL nginx is not installed (scripts/deps.sh test installs nginx-light)"; FAILED=$((FAILED + 1))
else
  for proto in TLSv1.2 TLSv1.3; do
    nport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mkdir -p "nginx-$proto"
    # one upstream connection per request (no upstream keepalive): each one after the first resumes
    cat >"nginx-$proto/nginx.conf" <<NGINX
worker_processes 1;
pid $WORK/nginx-$proto/nginx.pid;
error_log $WORK/nginx-$proto/error.log info;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx-$proto/body;
  proxy_temp_path $WORK/nginx-$proto/proxy;
  fastcgi_temp_path $WORK/nginx-$proto/fastcgi;
  uwsgi_temp_path $WORK/nginx-$proto/uwsgi;
  scgi_temp_path $WORK/nginx-$proto/scgi;
  server {
    listen 127.0.0.1:$nport;
    location / {
      proxy_pass https://127.0.0.1:$mtls_REST;
      proxy_ssl_server_name on;
      proxy_ssl_name localhost;
      proxy_ssl_protocols $proto;
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate $WORK/tls2/ca_cert.pem;
      proxy_ssl_certificate $WORK/tls2/client/cert.pem;
      proxy_ssl_certificate_key $WORK/tls2/client/key.pem;
      proxy_ssl_session_reuse on;
    }
  }
}
NGINX
    # as root nginx's worker would switch to nobody, who cannot read the 0600 client key: one process
    nginx -p "$WORK/nginx-$proto" -c "$WORK/nginx-$proto/nginx.conf" -g 'daemon off; master_process off;' \
      >"nginx-$proto.out" 2>&1 &
    SERVER_PIDS+=($!)
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$nport/" && break; sleep 0.1; done
    before=$(metric resumed)
    codes=""
    for i in $(seq 10); do
      codes+=$(curl -s -o /dev/null -w '%{http_code} ' --max-time 10 "http://127.0.0.1:$nport/v1/models/affine")
    done
    after=$(metric resumed)
    expect "nginx proxy_ssl_session_reuse, $proto upstream: all 10 requests answered" 0 "^(200 ){10}$" -- echo "$codes"
    expect "  ... and at least 8 of its 10 upstream handshakes resumed" 0 "^ok" -- \
      bash -c "(( ${after:-0} - ${before:-0} >= 8 )) && echo ok || echo 'resumed: ${before:-?} -> ${after:-?}'"
  done
fi
expect "the server never refused a resumption" 1 "" -- grep -q "session id context" mtls.log tls.log

stop_servers
finish
