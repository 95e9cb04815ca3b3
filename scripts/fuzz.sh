#!/usr/bin/env bash
# Fuzzes pipe's four readers with libFuzzer for a bounded time each
# (docs/reliability.md, "Hardening"):
#
#   scripts/fuzz.sh [SECONDS_EACH]        (default 20; `make fuzz`)
#
# Configures build-fuzz/ with clang and -DPIPE_FUZZ=ON (AddressSanitizer,
# UBSan, libFuzzer's coverage), builds fuzz_dsl, fuzz_plan, fuzz_sched and
# fuzz_json, and runs each on build-fuzz/fuzz-corpus/KIND/, a fresh copy of the
# committed seeds (tests/fuzz/corpus/KIND/, never written to); with
# FUZZ_KEEP=1 the copy keeps what earlier runs found (long campaigns).
# Exits 1 if any target crashed, leaked, broke an invariant or ran one input
# for more than FUZZ_TIMEOUT seconds (default 10), naming the input that did
# it; the replay test runs such an input once it is copied to
# tests/fuzz/regress/KIND/:
#
#   build/tests/fuzz/fuzz_replay KIND FILE      (FUZZ_VERBOSE=1 for messages)
#
# Environment: PIPE_FUZZ_BUILD (the build folder, default build-fuzz),
# FUZZ_TIMEOUT, FUZZ_TARGETS (default "dsl plan sched json"), FUZZ_KEEP.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
case $secs in '' | *[!0-9]*) echo "usage: $0 [SECONDS_EACH]" >&2; exit 2 ;; esac
build=${PIPE_FUZZ_BUILD:-build-fuzz}
timeout_s=${FUZZ_TIMEOUT:-10}
targets=${FUZZ_TARGETS:-dsl plan sched json}

cc=$(command -v clang || command -v clang-14 || true)
if [ -z "$cc" ]; then
    echo "fuzz: needs clang and libclang-rt-14-dev (scripts/deps.sh installs them)" >&2
    exit 1
fi
if [ ! -f "$build/CMakeCache.txt" ]; then
    mkdir -p "$build"
    CC=$cc cmake -S . -B "$build" -DPIPE_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build/fuzz-configure.log" 2>&1 ||
        { cat "$build/fuzz-configure.log"; rm -f "$build/CMakeCache.txt"; exit 1; }
fi
build_targets=()
for t in $targets; do build_targets+=("fuzz_$t"); done
cmake --build "$build" -j "${JOBS:-1}" --target "${build_targets[@]}" >"$build/fuzz-build.log" 2>&1 ||
    { tail -n 40 "$build/fuzz-build.log"; echo "fuzz: the build failed ($build/fuzz-build.log)" >&2; exit 1; }

# source lines in the sanitizers' stack traces
if [ -z "${ASAN_SYMBOLIZER_PATH:-}" ] && ! command -v llvm-symbolizer >/dev/null; then
    for s in /usr/lib/llvm-14/bin/llvm-symbolizer /usr/bin/llvm-symbolizer-14; do
        [ -x "$s" ] && export ASAN_SYMBOLIZER_PATH=$s && break
    done
fi

failed=0
for t in $targets; do
    corpus=$build/fuzz-corpus/$t
    crashes=$build/fuzz-crashes/$t
    log=$build/fuzz-$t.log
    [ "${FUZZ_KEEP:-0}" = 1 ] || rm -rf "$corpus"
    mkdir -p "$corpus"
    rm -rf "$crashes"
    mkdir -p "$crashes"
    cp tests/fuzz/corpus/"$t"/* "$corpus"/
    dict=()
    [ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")
    rc=0
    "$build/tests/fuzz/fuzz_$t" -max_total_time="$secs" -timeout="$timeout_s" -rss_limit_mb=2048 \
        -artifact_prefix="$crashes/" -print_final_stats=1 "${dict[@]}" "$corpus" >"$log" 2>&1 || rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    files=$(find "$corpus" -type f | wc -l)
    if [ "$rc" -ne 0 ]; then
        failed=1
        echo "fuzz: fuzz_$t FAILED (exit $rc) after ${runs:-?} runs; the last lines of $log:"
        grep -v '^#[0-9]' "$log" | tail -n 40
        for f in "$crashes"/*; do
            [ -e "$f" ] && echo "fuzz: fuzz_$t: the input that failed: $f (keep it as tests/fuzz/regress/$t/NAME)"
        done
    else
        echo "fuzz: fuzz_$t ok: ${runs:-?} runs in ${secs} s, corpus $files files ($corpus)"
    fi
done
exit "$failed"
