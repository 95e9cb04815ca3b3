# A thin wrapper: everything real lives in CMake. On a fresh Debian machine
# `make test` and `make demo` install what is missing (scripts/deps.sh),
# configure, build, and run.
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all build deps test test-asan fuzz demo clean

all: build

deps:
	@scripts/deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The whole suite under AddressSanitizer + UBSan, in $(ASAN_BUILD)/
# (docs/reliability.md; without the CUDA kernels, which no test here can
# run). Leaks count, except those of Open MPI and the
# libraries it loads (tests/lsan.supp); ASAN_LEAKS=0 turns leak checks off.
ASAN_BUILD ?= build-asan
ASAN_LEAKS ?= 1
ASAN_ENV = CK_TIMEOUT_MULTIPLIER=3 ASAN_OPTIONS=fast_unwind_on_malloc=0:detect_leaks=$(ASAN_LEAKS) \
	LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DPIPE_SANITIZE=ON -DPIPE_CUDA=OFF
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && $(ASAN_ENV) ctest --output-on-failure -j $(JOBS)

# libFuzzer on the three readers, FUZZ_SECONDS each, in build-fuzz/ (clang).
FUZZ_SECONDS ?= 20
fuzz: deps
	JOBS=$(JOBS) scripts/fuzz.sh $(FUZZ_SECONDS)

demo: build
	@scripts/demo.sh $(BUILD)

clean:
	rm -rf $(BUILD)
