#!/usr/bin/env bash
# pipert as a user runs it: start-up checks end in one clear message and a
# non-zero exit, in bounded time, never a hang.
#   test_pipert_cli.sh PIPEC PIPERT SOURCE_DIR
set -u
PIPEC=$1 PIPERT=$2 SRC=$3
TMP=$(mktemp -d "${TMPDIR:-/tmp}/pipert-cli.XXXXXX") || exit 2
trap 'rm -rf "$TMP"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPI=(timeout 60 mpirun --oversubscribe -np)
passed=0 failed=0
check() { # NAME WANT_RC REGEX (on stdout+stderr)
    if [ "$rc" -eq "$2" ] && grep -Eq -- "$3" "$TMP/out"; then
        echo "ok - $1"; passed=$((passed + 1))
    else
        echo "not ok - $1 (exit $rc, want $2; want /$3/)"; sed 's/^/#   /' "$TMP/out" | head -5; failed=$((failed + 1))
    fi
}
"$PIPEC" "$SRC/examples/mlp.pipe" -o "$TMP/mlp.bin" || exit 2
"$PIPEC" "$SRC/examples/mlp.pipe" -D data_parallel=2 -o "$TMP/dp2.bin" || exit 2

"$PIPERT" --help >"$TMP/out" 2>&1; rc=$?
check "--help" 0 'mpirun -np N pipert PLAN.bin'
"$PIPERT" --version >"$TMP/out" 2>&1; rc=$?
check "--version" 0 '^pipert [0-9]'
"$PIPERT" --frobnicate "$TMP/mlp.bin" >"$TMP/out" 2>&1; rc=$?
check "an unknown option" 1 "unknown option '--frobnicate'"
"${MPI[@]}" 3 "$PIPERT" "$TMP/mlp.bin" >"$TMP/out" 2>&1; rc=$?
check "3 ranks for 2 stages: refused with the reason" 1 'the world has 3 ranks, not a multiple of the plan.s 2 stages'
"${MPI[@]}" 2 "$PIPERT" "$TMP/dp2.bin" >"$TMP/out" 2>&1; rc=$?
check "a fixed data_parallel the world does not match" 1 'data_parallel = 2: the world must be 4 ranks'
head -c 200 "$TMP/mlp.bin" >"$TMP/cut.bin"
"${MPI[@]}" 2 "$PIPERT" "$TMP/cut.bin" >"$TMP/out" 2>&1; rc=$?
check "a cut plan" 1 'corrupted plan'
"$PIPEC" "$SRC/examples/mlp.pipe" -D 'data=idx("/nonexistent/images.gz", "/nonexistent/labels.gz")' -o "$TMP/nodata.bin" || exit 2
"${MPI[@]}" 2 "$PIPERT" "$TMP/nodata.bin" >"$TMP/out" 2>&1; rc=$?
[ "$rc" -ne 0 ] && rc=1
check "missing data: the file is named, the job ends" 1 '/nonexistent/images.gz'
# bad data at run time: one message naming the file, before the first step
"$PIPEC" "$SRC/examples/gpt_tiny.pipe" -D stages=2 -o "$TMP/gpt.bin" || exit 2
python3 -c "import struct,sys; open(sys.argv[1],'wb').write(struct.pack('<4000H', *([5] * 3999 + [60000])))" "$TMP/big.u16"
"${MPI[@]}" 2 "$PIPERT" "$TMP/gpt.bin" --data "$TMP/big.u16" >"$TMP/out" 2>&1; rc=$?
[ "$rc" -ne 0 ] && rc=1
grep -q '^step ' "$TMP/out" && rc=2
check "a token id beyond the vocabulary, before the first step" 1 'big.u16: token id 60000 at token 3999 \(byte offset 7998\) is not below the vocabulary of 256'
: >"$TMP/empty.u16"
"${MPI[@]}" 2 "$PIPERT" "$TMP/gpt.bin" --data "$TMP/empty.u16" >"$TMP/out" 2>&1; rc=$?
[ "$rc" -ne 0 ] && rc=1
check "an empty token file" 1 'empty.u16: holds 0 tokens, but one sample of 128 tokens and its targets need 129'
"${MPI[@]}" 2 "$PIPERT" "$TMP/mlp.bin" --steps 3 --log-every 1 --metrics "$TMP/m.jsonl" >"$TMP/out" 2>&1; rc=$?
check "trains and logs each step" 0 '^step 3/3 loss [0-9.]+ lr [0-9.e+-]+ [0-9]+ samples/s [0-9.]+ ms/step$'
n=$(grep -c '"step": ' "$TMP/m.jsonl" 2>/dev/null); [ "$n" = 3 ] && rc=0 || rc=1
echo "x" >"$TMP/out"
check "--metrics writes one JSON line per logged step" 0 'x'
"${MPI[@]}" 2 "$PIPERT" "$TMP/mlp.bin" --steps 0 --save "$TMP/w" >"$TMP/out" 2>&1; rc=$?
ls "$TMP/w"/latest/stage-0.safetensors "$TMP/w"/latest/stage-1.safetensors >>"$TMP/out" 2>&1 || rc=1
check "--steps 0 --save writes the initial weights, one file per stage" 0 'stage-1.safetensors'
"$PIPEC" "$SRC/examples/mlp.pipe" -D "optimizer=sgd(lr = 1e30)" -o "$TMP/nan.bin" || exit 2
"${MPI[@]}" 2 "$PIPERT" "$TMP/nan.bin" --steps 10 --save "$TMP/nanw" >"$TMP/out" 2>&1; rc=$?
[ "$rc" -ne 0 ] && rc=1
[ -e "$TMP/nanw" ] && echo "a checkpoint was written" >>"$TMP/out" && rc=2
check "a NaN/Inf loss or gradient stops the run, naming the step and stage, without a checkpoint" 1 \
    'step [0-9]+: the loss or a gradient is not finite \(NaN or Inf\), first on stage [0-9]+; stopping before the update, no checkpoint written'
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
