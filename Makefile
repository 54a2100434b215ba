# Makefile — the user's entry points. The real build is CMake (CMakeLists.txt). `make` only builds: a
# missing Debian package stops it with the list and `make deps`, which installs them (scripts/deps.sh;
# apt-get, as root or through sudo). test, demo, bench, soak and check-models install what they miss.
#   make            build (release) into build/; never installs packages
#   make deps       install the missing Debian packages for building (DEPS=test|demo|bench|all: more)
#   make install    install the `cloister` command into $(DESTDIR)$(PREFIX)/bin (PREFIX=/usr/local)
#   make test       release build + ASan/UBSan/libFuzzer build, all tests; ends with "N passed, N failed"
#   make demo       the main job, end to end (scripts/demo.sh)
#   make bench      benchmarks against their peers (bench/run_all.sh): text as they run, then a report with
#                   plots in bench/report/report.md (BENCH_REPORT=DIR elsewhere; BENCH_QUICK=1 short runs)
#   make soak       the mixed gRPC + REST soak against the sanitizer build (bench/soak; SOAK_SECONDS=600)
#   make check-models  whole networks, full size, against PyTorch (needs python3-torch): the torchvision
#                   CNNs and the engine suite (tests/models/check_models.sh; CHECK_MODELS_SETS="full suite")
#   make bench-engine-suite  the engine suite against ONNX Runtime (bench/engine/suite/run.sh; SUITE_THREADS=2,
#                   SUITE_ROUNDS=2, SUITE_MODELS="a b", SUITE_MODELS_DIR=DIR reuses an export)
#   make clean
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PREFIX ?= /usr/local
DEPS ?= build

SOAK_SECONDS ?= 600
SUITE_THREADS ?= 2
SUITE_ROUNDS ?= 2
BENCH_REPORT ?= bench/report

.PHONY: all build deps install test demo bench bench-engine-suite soak check-models clean

all: build

# `make` (build, install) only checks for the build's packages; the goals that install what they miss
# and build first (demo, bench, check-models) let the build install them too
ifneq ($(filter demo bench bench-engine-suite check-models,$(MAKECMDGOALS)),)
BUILD_DEPS := scripts/deps.sh build
else
BUILD_DEPS := scripts/deps.sh --check build
endif

build:
	@$(BUILD_DEPS)
	@cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build build -j $(JOBS) -- -s --no-print-directory

deps:
	@scripts/deps.sh $(DEPS)

install: build
	@DESTDIR="$(DESTDIR)" cmake --install build --prefix "$(PREFIX)"

test:
	@scripts/test.sh

demo: build
	@scripts/deps.sh demo
	@scripts/demo.sh build/cloister

bench: build
	@scripts/deps.sh bench
	@bench/run_all.sh build $(BENCH_REPORT)

bench-engine-suite: build
	@scripts/deps.sh bench
	@bench/engine/suite/run.sh build $(SUITE_THREADS) $(SUITE_ROUNDS)

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
