#!/usr/bin/env bash
# cli_tls.sh — `cloister tls init`: the chain verifies with `openssl verify`, the certificates carry
# the right names and purposes, keys are private, and nothing is clobbered.
source "$(dirname "$0")/lib.sh"

expect "tls init two-way" 0 "ssl.cfg +TF Serving SSLConfig \(mutual TLS\)" -- \
  "$CLOISTER" tls init --dir ssl_configure --server-name grpc.tf-serving.service.com \
  --client-name client.tf-serving.service.com --san 127.0.0.1
expect "openssl verify server" 0 "server/cert.pem: OK" -- \
  openssl verify -CAfile ssl_configure/ca_cert.pem -purpose sslserver -verify_hostname grpc.tf-serving.service.com \
  ssl_configure/server/cert.pem
expect "openssl verify server by IP" 0 ": OK" -- \
  openssl verify -CAfile ssl_configure/ca_cert.pem -verify_ip 127.0.0.1 ssl_configure/server/cert.pem
expect "openssl verify client" 0 "client/cert.pem: OK" -- \
  openssl verify -CAfile ssl_configure/ca_cert.pem -purpose sslclient ssl_configure/client/cert.pem
expect "wrong host name is rejected" 2 "hostname mismatch" -- \
  openssl verify -CAfile ssl_configure/ca_cert.pem -verify_hostname evil.example ssl_configure/server/cert.pem
expect "server key is ECDSA P-256" 0 "prime256v1|P-256" -- openssl pkey -in ssl_configure/server/key.pem -text -noout
check "keys are mode 600" test "$(stat -c %a ssl_configure/server/key.pem ssl_configure/client/key.pem ssl_configure/ca_key.pem | sort -u)" = 600
check "ssl.cfg is mode 600" test "$(stat -c %a ssl_configure/ssl.cfg)" = 600
check "ssl.cfg has the four fields" bash -c 'grep -c "^\(server_key\|server_cert\|custom_ca\|client_verify\): " ssl_configure/ssl.cfg | grep -qx 4'
# The inline PEM in ssl.cfg is the same key as server/key.pem.
check "ssl.cfg server_key matches key.pem" bash -c \
  'diff <(sed -n "s/^server_key: \"\(.*\)\"$/\1/p" ssl_configure/ssl.cfg | sed "s/\\\\n/\n/g" | sed "/^$/d") ssl_configure/server/key.pem'

# a real TLS handshake with the material: openssl s_server + s_client, mutual TLS
if command -v openssl >/dev/null; then
  port=$((20000 + RANDOM % 20000))
  openssl s_server -quiet -accept "127.0.0.1:$port" -cert ssl_configure/server/cert.pem \
    -key ssl_configure/server/key.pem -CAfile ssl_configure/ca_cert.pem -Verify 1 -naccept 1 \
    >/dev/null 2>&1 &
  srv=$!
  sleep 0.5
  expect "mutual TLS handshake" 0 "Verification: OK" -- \
    timeout 10 openssl s_client -connect "127.0.0.1:$port" -servername grpc.tf-serving.service.com \
    -verify_hostname grpc.tf-serving.service.com -CAfile ssl_configure/ca_cert.pem \
    -cert ssl_configure/client/cert.pem -key ssl_configure/client/key.pem -brief </dev/null
  kill $srv 2>/dev/null; wait $srv 2>/dev/null
fi

cp ssl_configure/ca_key.pem ca_key.before
expect "refuses to clobber" 1 "already exists; use --force" -- \
  "$CLOISTER" tls init --dir ssl_configure --server-name grpc.tf-serving.service.com
check "CA key untouched" cmp ca_key.before ssl_configure/ca_key.pem
expect "one-way with RSA" 0 "one-way TLS" -- \
  "$CLOISTER" tls init --dir oneway --server-name localhost --key-type rsa-3072 --days 30
check "one-way has no client material" test ! -e oneway/client
expect "rsa key" 0 "Private-Key: \(3072 bit" -- openssl pkey -in oneway/server/key.pem -text -noout
expect "bad server name" 1 "not a valid DNS name" -- \
  "$CLOISTER" tls init --dir bad --server-name "a,DNS:evil"
check "bad name creates nothing" test ! -e bad
expect "bad key type" 2 "unknown key type" -- "$CLOISTER" tls init --dir bad --server-name x --key-type dsa
expect "tls without subcommand" 2 "expected a subcommand" -- "$CLOISTER" tls
finish
