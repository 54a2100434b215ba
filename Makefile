# Makefile — the user's entry points. The real build is CMake (CMakeLists.txt); every target first
# runs scripts/deps.sh, which installs missing Debian packages (and nothing when all are there).
#   make            build (release) into build/
#   make test       release build + ASan/UBSan/libFuzzer build, all tests; ends with "N passed, N failed"
#   make demo       the main job, end to end (scripts/demo.sh)
#   make bench      benchmarks against their peers (bench/)
#   make soak       the mixed gRPC + REST soak against the sanitizer build (bench/soak; SOAK_SECONDS=600)
#   make check-models  whole torchvision networks, full size, against PyTorch (needs python3-torch)
#   make clean
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

SOAK_SECONDS ?= 600

.PHONY: all build test demo bench soak check-models clean

all: build

build:
	@scripts/deps.sh build
	@cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build build -j $(JOBS) -- -s --no-print-directory

test:
	@scripts/test.sh

demo: build
	@scripts/deps.sh demo
	@scripts/demo.sh build/cloister

bench: build
	@scripts/deps.sh bench
	@build/bench/bench_seal
	@build/bench/bench_keyserver
	@build/bench/bench_release
	@build/bench/bench_release --secrets 8 --secret-size 1048576
	@build/bench/bench_dcap tests/data/dcap-qvl
	@bench/engine/run.sh build
	@bench/serve/run.sh build
	@bench/serve/grpc_latency.sh build
	@bench/serve/omp_wait.sh build
	@bench/client/run.sh build

soak:
	@scripts/deps.sh bench
	@CC=clang cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCLOISTER_SANITIZE=ON -DCLOISTER_FUZZ=ON >/dev/null
	@cmake --build build-asan -j $(JOBS) --target cloister_cli -- -s --no-print-directory
	@bench/soak/run.sh build-asan $(SOAK_SECONDS)

check-models: build
	@scripts/deps.sh bench
	@cmake --build build --target check-models

clean:
	rm -rf build build-asan
