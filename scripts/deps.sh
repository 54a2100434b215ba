#!/usr/bin/env bash
# scripts/deps.sh — installs the Debian packages cloister needs, and only the missing ones.
#
# Usage: scripts/deps.sh [--check] [build|test|demo|bench|all]   (default: test)
# Runs apt-get only when something is missing, so repeated `make` calls are fast and offline.
# --check installs nothing: it lists what is missing, says how to install it and exits 1 (`make`).
set -euo pipefail
check_only=0
if [[ ${1:-} == --check ]]; then check_only=1; shift; fi

build_pkgs=(build-essential cmake pkg-config libssl-dev openssl libevent-dev libnghttp2-dev libhttp-parser-dev
            libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev libonnx-dev libdnnl-dev libsnappy-dev libsqlite3-dev
            libjpeg62-turbo-dev libpng-dev zlib1g-dev libcjson-dev libjansson-dev libcurl4-openssl-dev libcmocka-dev) # cmocka: the tests are configured with every build
test_pkgs=(clang libclang-rt-14-dev libonnx-testdata python3 curl libcap2-bin
           cppcheck clang-tidy # scripts/lint.sh: the static checks (ctest lint.static)
           protobuf-compiler python3-protobuf python3-grpcio python3-grpc-tools python3-numpy
           python3-jinja2 python3-yaml # jinja2, yaml: tests/deploy (the Gramine manifest template, the k8s manifests)
           nodejs npm # tests/deploy/tools: the real helm and kubectl (an npm package ships them); bench/engine: onnxruntime-node
           nginx-light # tests/integration/serve_tls_sessions.sh: a reverse proxy resuming its upstream TLS sessions
           python3-h2 # tests/integration/serve_grpc_wire.sh: raw HTTP/2 gRPC calls (compressed, hostile)
           iproute2 util-linux # ip, unshare: the doc check and serve_keys run in namespaces of their own
           python3-matplotlib # tests/bench: the benchmark report's plots (bench/report/make_report.py)
           python3-torchvision python3-pil python-matplotlib-data # client_torchvision: torchvision's eval transform, a Debian-shipped photo
           prometheus) # serve_prometheus.sh scrapes the server, promtool checks the metrics (serve_logs); on a
                       # systemd host the package also enables its own service on :9090 (systemctl disable --now prometheus)
demo_pkgs=(openssl curl python3)
bench_pkgs=(wrk nginx-light python3-torch python3-torchvision # torch: full-size models for bench/engine and make check-models
            python3-matplotlib) # bench/report and bench/soak: the plots

want=("${build_pkgs[@]}")
case "${1:-test}" in
  build) ;;
  test)  want+=("${test_pkgs[@]}") ;;
  demo)  want+=("${test_pkgs[@]}" "${demo_pkgs[@]}") ;;
  bench) want+=("${test_pkgs[@]}" "${bench_pkgs[@]}") ;;
  all)   want+=("${test_pkgs[@]}" "${demo_pkgs[@]}" "${bench_pkgs[@]}") ;;
  *) echo "deps.sh: unknown set '$1' (use build, test, demo, bench or all)" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  # node and npm may come from elsewhere (NodeSource's nodejs bundles npm and conflicts with Debian's)
  [[ ($p == nodejs && -n $(command -v node)) || ($p == npm && -n $(command -v npm)) ]] && continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
((${#missing[@]})) || exit 0
if ((check_only)); then
  echo "missing Debian packages: ${missing[*]}" >&2
  echo "install them with 'make deps' (scripts/deps.sh ${1:-test}: apt-get, as root or through sudo)," \
       "or 'sudo apt-get install ${missing[*]}'" >&2
  exit 1
fi

echo "deps.sh: installing missing Debian packages: ${missing[*]}" >&2
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "deps.sh: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
