#!/bin/bash
# pipec as a user runs it: options, exit codes, where messages go, the text
# and JSON of --stats, and -D overrides.
#
#   bash tests/cli/test_pipec.sh PATH/TO/pipec SOURCE_DIR
#
# Exit status of pipec: 0 ok, 1 an error in the input or the command line,
# 2 an internal or I/O error. Diagnostics go to stderr; on an error stdout
# stays empty. Prints "ok - ..." or "not ok - ..." per check, then
# "N passed, M failed"; exits 1 if any check failed.
set -u

if [ $# -ne 2 ]; then
    echo "usage: $0 PATH/TO/pipec SOURCE_DIR" >&2
    exit 2
fi
PIPEC=$1
SRC=$2
case $PIPEC in /*) ;; *) PIPEC=$PWD/$PIPEC ;; esac
SRC=$(cd "$SRC" && pwd) || exit 2
if [ ! -x "$PIPEC" ] || [ ! -f "$SRC/examples/alexnet.pipe" ]; then
    echo "$0: no pipec at $PIPEC or no examples under $SRC" >&2
    exit 2
fi
ALEXNET=$SRC/examples/alexnet.pipe
GPT=$SRC/examples/gpt_tiny.pipe

PY=$(command -v python3 || true)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/pipec-cli.XXXXXX") || exit 2
trap 'rm -rf "$TMP"' EXIT
OUT=$TMP/stdout
ERR=$TMP/stderr

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok - $1"; }
not_ok() {
    failed=$((failed + 1))
    echo "not ok - $1"
    shift
    for line in "$@"; do echo "#   $line"; done
    if [ -s "$ERR" ]; then head -n 5 "$ERR" | sed 's/^/#   stderr: /'; fi
}

# run ARGS...: runs pipec (cwd $TMP), leaves its status in $rc and output in $OUT, $ERR.
run() {
    (cd "$TMP" && exec "$PIPEC" "$@") >"$OUT" 2>"$ERR"
    rc=$?
}

# check NAME WANT_RC [--stdout-empty] [--out REGEX]... [--err REGEX]... [--err-fixed TEXT]...
# Checks the last run.
check() {
    local name=$1 want=$2
    shift 2
    local why=()
    [ "$rc" -eq "$want" ] || why+=("exit status $rc, want $want")
    while [ $# -gt 0 ]; do
        case $1 in
        --stdout-empty) [ ! -s "$OUT" ] || why+=("stdout is not empty: $(head -n 1 "$OUT" | head -c 200)"); shift ;;
        --out) grep -Eq -- "$2" "$OUT" || why+=("stdout lacks /$2/"); shift 2 ;;
        --err) grep -Eq -- "$2" "$ERR" || why+=("stderr lacks /$2/"); shift 2 ;;
        --err-fixed) grep -Fq -- "$2" "$ERR" || why+=("stderr lacks '$2'"); shift 2 ;;
        *) why+=("bad check option $1"); shift ;;
        esac
    done
    if [ ${#why[@]} -eq 0 ]; then ok "$name"; else not_ok "$name" "${why[@]}"; fi
}

# json NAME EXPR [SHOW]: EXPR, a Python expression over the JSON on stdout
# (as j), must be true; stdout must be JSON and nothing else. On failure,
# SHOW (an expression) is printed with the expression.
json() {
    local name=$1 expr=$2 show=${3:-None} msg
    if [ -z "$PY" ]; then
        not_ok "$name" "no python3 to read JSON"
        return
    fi
    if msg=$("$PY" -c '
import json, sys
j = json.load(open(sys.argv[1]))
if not eval(sys.argv[2]):
    shown = eval(sys.argv[3])
    sys.exit("false: " + sys.argv[2] + ("" if shown is None else "\n  got: " + repr(shown)))
' "$OUT" "$expr" "$show" 2>&1); then
        ok "$name"
    else
        not_ok "$name" "$(printf '%s' "$msg" | tail -n 2)"
    fi
}

# ---- options

run --help
check "--help exits 0 and documents -D" 0 --out '-D KEY=VALUE' --out '^usage: pipec'
run -h
check "-h is --help" 0 --out '^usage: pipec'
run --version
check "--version exits 0 and prints 'pipec VERSION'" 0 --out '^pipec [0-9]'
run --layers
check "--layers lists every layer" 0 --out '^linear ' --out '^conv2d ' --out '^maxpool2d ' --out '^avgpool2d ' \
    --out '^adaptive_avgpool2d ' --out '^relu ' --out '^gelu ' --out '^tanh ' --out '^sigmoid ' --out '^flatten ' \
    --out '^dropout ' --out '^layernorm ' --out '^embedding ' --out '^transformer_block ' --out '^loss cross_entropy'
run
check "no arguments exits 1 with usage on stderr" 1 --stdout-empty --err 'no input file' --err '^usage:'
run --frobnicate "$ALEXNET"
check "an unknown option exits 1 and names it" 1 --stdout-empty --err-fixed "unknown option '--frobnicate'"
run "$ALEXNET" "$GPT"
check "two input files exit 1" 1 --stdout-empty --err 'more than one input file'
run "$ALEXNET" --json
check "--json without --stats exits 1" 1 --stdout-empty --err 'goes with --stats'
run "$ALEXNET" -D
check "-D without KEY=VALUE exits 1" 1 --stdout-empty --err 'KEY=VALUE'

# ---- input files that are not models

run no-such-model.pipe
check "a missing file exits 2 and names the file" 2 --stdout-empty --err-fixed "no-such-model.pipe"
mkdir "$TMP/adir.pipe"
run adir.pipe
check "a directory exits 2 and names it" 2 --stdout-empty --err-fixed "adir.pipe"
: >"$TMP/empty.pipe"
run empty.pipe
check "an empty file exits 1 with FILE:1:1: error:" 1 --stdout-empty --err '^empty\.pipe:1:1: error:'

cat >"$TMP/syntax.pipe" <<'EOF'
model broken {
    input x: float32[4]
    linear(3 4)
    loss mse
}
EOF
run syntax.pipe
check "a syntax error exits 1 with FILE:LINE:COL and the caret line" 1 --stdout-empty \
    --err '^syntax\.pipe:3:14: error: ' --err-fixed '    linear(3 4)' --err '^ +\^$'

cat >"$TMP/shape.pipe" <<'EOF'
model bad_shape {
    input  x: float32[3, 8, 8]
    target y: int32[]
    conv2d(4, kernel = 9)
    flatten
    loss cross_entropy
}
EOF
run shape.pipe
check "a shape error exits 1 and points at the layer" 1 --stdout-empty --err '^shape\.pipe:4:5: error: .*kernel 9' \
    --err '^ +\^$'

cat >"$TMP/typo.pipe" <<'EOF'
model typo {
    input  x: float32[4]
    target y: int32[]
    linaer(3)
    loss cross_entropy
}
EOF
run typo.pipe
check "an unknown layer exits 1 with a hint" 1 --stdout-empty --err "did you mean 'linear'"

head -c 4096 /dev/urandom >"$TMP/garbage.pipe"
run garbage.pipe
check "a binary garbage file exits 1" 1 --stdout-empty --err '^garbage\.pipe:[0-9]+:[0-9]+: error:'
bad=""
for i in $(seq 1 25); do
    head -c $((i * 163)) /dev/urandom >"$TMP/garbage.pipe"
    run garbage.pipe
    if [ "$rc" -ne 1 ] || [ -s "$OUT" ]; then
        bad="exit $rc on $((i * 163)) random bytes"
        cp "$TMP/garbage.pipe" "${TMPDIR:-/tmp}/pipec-garbage-$$.pipe"
        bad="$bad (kept as ${TMPDIR:-/tmp}/pipec-garbage-$$.pipe)"
        break
    fi
done
if [ -z "$bad" ]; then ok "25 more random files exit 1, never crash"; else not_ok "random files exit 1" "$bad"; fi
# a NUL after the first relu, outside any comment
n=$(grep -n '^ *relu *$' "$ALEXNET" | head -n 1 | cut -d: -f1)
{ head -n $((n - 1)) "$ALEXNET"; printf '    relu\0\377\n'; tail -n +$((n + 1)) "$ALEXNET"; } >"$TMP/nul.pipe"
run nul.pipe
check "a NUL byte in a model exits 1 and names the byte" 1 --stdout-empty --err "^nul\\.pipe:$n:9: error: .*byte 0x00"
{ head -n $((n - 1)) "$ALEXNET"; printf '    rel\303\251u\n'; tail -n +$((n + 1)) "$ALEXNET"; } >"$TMP/utf8.pipe"
run utf8.pipe
check "a non-ASCII byte in a model exits 1" 1 --stdout-empty --err "^utf8\\.pipe:$n:[0-9]+: error: .*byte 0xc3"

# ---- the examples

for ex in "$SRC"/examples/*.pipe; do
    run "$ex"
    check "$(basename "$ex") compiles" 0 --out ': ok$'
done
run "$ALEXNET"
check "alexnet's summary line" 0 --out '^alexnet: 22 layers, 57,044,810 parameters, 2 stages x 1 chunk, schedule 1f1b, predicted bubble [0-9.]+%: ok$'

run "$ALEXNET" --stats
check "--stats prints the layer table" 0 \
    --out '^ +layer +type +output +params +flops +act bytes +stage$' \
    --out '^ +0 +conv2d +\[64, 55, 55\] +23,296 ' \
    --out '^ +21 +linear +\[10\] +40,970 ' \
    --out '^model alexnet: 22 layers, 57,044,810 parameters'
check "--stats prints the stage table" 0 \
    --out '^ +stage +layers +params held +flops/sample +sends per micro-batch$' \
    --out '^ +0 +0-[0-9]+ .*activation float32\[[0-9, ]+\] = [0-9,]+ B -> stage 1$' \
    --out '^ +1 +[0-9]+-21 .* -$'
rows=$(grep -Ec '^ +[0-9]+ +[a-z_0-9]+( as [a-z_0-9]+)? +\[' "$OUT")
if [ "$rows" = 22 ]; then ok "--stats has one row per layer (22)"; else not_ok "--stats has one row per layer" "$rows rows"; fi

run "$GPT" --stats
check "--stats shows labels, ties and chunks" 0 --out ' embedding as wte ' --out '\(weight tied to layer 0\)' \
    --out '^tied: layer 8 \(linear\) uses the weight of layer 0 \(wte\)' --out ' 3\.1 '

run "$ALEXNET" --stats --json
check "--stats --json exits 0, nothing on stderr" 0
if [ -s "$ERR" ]; then not_ok "--stats --json: stderr empty" "$(head -c 200 "$ERR")"; else ok "--stats --json: stderr empty"; fi
json "--stats --json is pure JSON with total_params 57044810" 'j["total_params"] == 57044810 and j["model"] == "alexnet"'
json "layers have index, type, output_shape, params, flops, stage" \
    'len(j["layers"]) == 22 and all({"index", "type", "output_shape", "params", "flops", "stage"} <= set(L) for L in j["layers"]) and [L["index"] for L in j["layers"]] == list(range(22))'
json "layer values match the model" \
    'j["layers"][0]["type"] == "conv2d" and j["layers"][0]["output_shape"] == [64, 55, 55] and j["layers"][0]["params"] == 23296 and j["layers"][21]["output_shape"] == [10] and sum(L["params"] for L in j["layers"]) == 57044810'
json "stages list the stage, layers, params, flops" \
    'len(j["stages"]) == 2 and [s["stage"] for s in j["stages"]] == [0, 1] and all({"stage", "layers", "params", "flops"} <= set(s) for s in j["stages"]) and sum(s["layers"] for s in j["stages"]) == 22 and sum(s["params"] for s in j["stages"]) == 57044810'
json "layer stages agree with the stage list" \
    'all(L["stage"] in (0, 1) for L in j["layers"]) and [L["stage"] for L in j["layers"]] == sorted(L["stage"] for L in j["layers"]) and sum(L["stage"] == 0 for L in j["layers"]) == j["stages"][0]["layers"]'
json "pipeline settings from the file" \
    'j["pipeline"] == {"stages": 2, "chunks": 1, "data_parallel": "auto", "tensor_parallel": 1, "micro_batches": 32, "micro_batch_size": 8, "schedule": "1f1b", "partition": "parameters"}'

run "$GPT" --stats --json
check "gpt_tiny --stats --json exits 0" 0
json "gpt_tiny JSON: ties, chunks, labels" \
    'j["total_params"] == 1239040 and j["pipeline"]["stages"] == 4 and j["pipeline"]["chunks"] == 2 and j["layers"][0].get("label") == "wte" and j["layers"][8].get("tied_to") == 0 and j["layers"][8]["param_tensors"] == [] and j["ties"] == [{"layer": 8, "owner": 0, "cross_stage": True}] and len(j["stages"]) == 4'

# ---- -D overrides

run "$ALEXNET" --stats --json -D stages=4
check "-D stages=4 exits 0" 0
json "-D stages=4 gives 4 stages" \
    'j["pipeline"]["stages"] == 4 and len(j["stages"]) == 4 and sorted({L["stage"] for L in j["layers"]}) == [0, 1, 2, 3]'
run "$ALEXNET" --stats --json -Dstages=3
check "-Dstages=3 (attached) exits 0" 0
json "-Dstages=3 gives 3 stages" 'j["pipeline"]["stages"] == 3 and len(j["stages"]) == 3'
run "$ALEXNET" --stats --json -D "schedule=interleaved(chunks = 2)"
check "-D \"schedule=interleaved(chunks = 2)\" exits 0" 0
json "-D schedule=interleaved(chunks = 2) gives chunks 2" \
    'j["pipeline"]["chunks"] == 2 and j["pipeline"]["schedule"] == "interleaved(chunks = 2)" and len(j["parts"]) == 4 and {L["chunk"] for L in j["layers"]} == {0, 1}'
printf 'stage 0: F0 F1 B0 B1\nstage 1: F0 B0 F1 B1\n' >"$TMP/my.sched"
run "$ALEXNET" --stats --json -D micro_batches=2 -D "schedule=file(\"$TMP/my.sched\")"
check "-D 'schedule=file(\"my.sched\")' is accepted" 0
json "-D schedule=file(...) shows in the JSON" "j['pipeline']['schedule'] == 'file(\"$TMP/my.sched\")'"
run "$ALEXNET" -D 'schedule=file("no-such.sched")'
check "a missing schedule file is a located error" 1 --err 'cannot open schedule file'
run "$ALEXNET" -D "optimizer=sgd(lr = 0.1)"
check "-D \"optimizer=sgd(lr = 0.1)\" is accepted" 0 --out ': ok$'
run "$ALEXNET" -D stages=4 -D micro_batches=8 -D partition=uniform --stats --json
check "-D may repeat" 0
json "repeated -D all apply" \
    'j["pipeline"]["stages"] == 4 and j["pipeline"]["micro_batches"] == 8 and j["pipeline"]["partition"] == "uniform"'
run "$ALEXNET" -D stages=4 -D stages=1 --stats --json
check "a later -D wins" 0
json "a later -D wins: 1 stage" 'j["pipeline"]["stages"] == 1 and len(j["stages"]) == 1'
run "$GPT" -D "schedule=1f1b" -D stages=2 --stats --json
check "-D schedule=1f1b on gpt_tiny" 0
json "-D schedule=1f1b drops the chunks" 'j["pipeline"]["chunks"] == 1 and len(j["stages"]) == 2'

run "$ALEXNET" -D stagse=4
check "a bad -D key exits 1 with 'did you mean'" 1 --stdout-empty --err "did you mean 'stages'"
run "$ALEXNET" -D stages=four
check "a bad -D value exits 1 and names -D stages" 1 --stdout-empty --err '^-D stages:1:1: error: ' --err-fixed "four"
run "$ALEXNET" -D "stages=(2"
check "a -D value with a syntax error exits 1" 1 --stdout-empty --err '^-D stages:1:[0-9]+: error: syntax error'
run "$ALEXNET" -D stages=30
check "-D stages=30 on 22 layers exits 1" 1 --stdout-empty --err '30 parts, but model .alexnet. has only 22 layers'
run "$GPT" -D stages=5
check "-D stages=5 x 2 chunks on 9 layers exits 1" 1 --stdout-empty --err 'only 9 layers'
run "$ALEXNET" -D "schedule=interleaved(chunks = 0)"
check "-D chunks = 0 exits 1" 1 --stdout-empty --err 'chunks must be between'
run "$ALEXNET" -D "optimizer=sgd(lr = -1)"
check "-D a negative lr exits 1" 1 --stdout-empty --err 'lr must not be negative'
run "$ALEXNET" -D "=4"
check "-D =4 exits 1" 1 --stdout-empty --err 'key=value'

# ---- data sources against the model: what each yields must be what the
# model takes (the runtime would refuse it, after mpirun had started)

cat >"$TMP/tokens_float.pipe" <<'EOF'
model regress {
    input  x: float32[16]
    target y: float32[4]
    linear(4)
    loss mse
}
train { steps = 10; data = tokens("input.u16") }
EOF
run tokens_float.pipe
check "tokens(...) for a float32 input exits 1" 1 --stdout-empty
cat >"$TMP/want" <<'EOF'
tokens_float.pipe:7:28: error: data: tokens(...) yields int32[T] token ids, but input 'x' is float32[16]
    train { steps = 10; data = tokens("input.u16") }
                               ^
tokens_float.pipe:2:12: note: input 'x' is declared here
        input  x: float32[16]
               ^
EOF
if diff "$TMP/want" "$ERR" >/dev/null; then
    ok "tokens(...) for a float32 input: the message, its caret, a note at the input"
else
    not_ok "tokens(...) for a float32 input: the message, its caret, a note at the input" \
        "$(diff "$TMP/want" "$ERR" | head -n 4)"
fi
run tokens_float.pipe -D 'data=idx("images.gz", "labels.gz")'
check "idx(...) (class labels) for an mse target" 1 --stdout-empty \
    --err-fixed "-D data:1:1: error: data: idx(...) yields one integer class label per sample (target int32[] under loss cross_entropy), but target 'y' is float32[4] under loss mse" \
    --err-fixed "tokens_float.pipe:3:12: note: target 'y' is declared here"
run "$SRC/examples/mlp.pipe" -D 'data=cifar10("cifar")'
check "cifar10 for a non-image input" 1 --stdout-empty \
    --err-fixed "-D data:1:1: error: data: cifar10(...) yields float32[3, 32, 32] images (as stored; resize = N scales them), but input 'x' is float32[784]" \
    --err "examples/mlp\.pipe:14:12: note: input 'x' is declared here$"
run "$ALEXNET" -D 'data=cifar10("cifar", resize = 64)'
check "cifar10 resized to another size than the input" 1 --stdout-empty \
    --err-fixed "error: data: cifar10(...) yields float32[3, 64, 64] images (resize = 64), but input 'image' is float32[3, 224, 224]"
cat >"$TMP/few.pipe" <<'EOF'
model few {
    input  image: float32[3, 32, 32]
    target label: int32[]
    flatten
    linear(5)
    loss cross_entropy
}
train {
    data = cifar10("cifar")
    eval_data = tokens("t.u16")
}
EOF
run few.pipe
check "cifar10 for 5 classes; eval_data checked as well, both reported" 1 --stdout-empty \
    --err-fixed "few.pipe:9:12: error: data: cifar10(...) has 10 classes, but the model's output gives 5 (its last dimension)" \
    --err-fixed "few.pipe:5:5: note: layer 1 (linear) gives the output" \
    --err-fixed "few.pipe:10:17: error: eval_data: tokens(...) yields int32[T] token ids, but input 'image' is float32[3, 32, 32]"
run "$GPT" -D 'data=idx("images.gz", "labels.gz")'
check "idx(...) for a model of two inputs" 1 --stdout-empty \
    --err-fixed "-D data:1:1: error: data: idx(...) yields one input per sample (the image), but the model declares 2 inputs" \
    --err "gpt_tiny\.pipe:25:12: note: input 'mask' is declared here$"
run "$GPT" -D 'data=tokens("input.u16", pad = 256)'
check "tokens with a pad id outside the vocabulary" 1 --stdout-empty \
    --err-fixed "-D data:1:1: error: data: pad = 256 can never occur: token ids are below 256 (the embedding's vocab)" \
    --err "gpt_tiny\.pipe:27:5: note: layer 0 \(embedding\) gives the vocabulary$"
cat >"$TMP/lm_scalar.pipe" <<'EOF'
model lm {
    input  tokens: int32[8]
    target next: int32[]
    embedding(16, 4)
    flatten
    linear(16)
    loss cross_entropy
}
train { data = tokens("t.u16") }
EOF
run lm_scalar.pipe
check "tokens for a target that is not next-token ids" 1 --stdout-empty \
    --err-fixed "lm_scalar.pipe:9:16: error: data: tokens(...) yields next-token targets int32[8] under loss cross_entropy, but target 'next' is int32[] under loss cross_entropy"
cat >"$TMP/side.pipe" <<'EOF'
model side {
    input  x: float32[16]
    input  ids: int32[3]
    target y: int32[]
    linear(4)
    loss cross_entropy
}
EOF
run side.pipe
check "the default synthetic data for an int32 input without an embedding" 1 --stdout-empty \
    --err-fixed "side.pipe:1:1: error: data (synthetic by default: set data = ...): synthetic(...) fills int32 input 'ids' (int32[3]) with token ids below an embedding's vocab, but the model has no embedding layer"
run "$GPT" -D 'data=tokens("input.u16", pad = 0)' -D 'eval_data=synthetic(samples = 8)'
check "matching sources compile" 0 --out ': ok$'

# ---- limits and long values

# A long schedule path must come back whole, not cut at a fixed buffer.
long=$TMP/$(printf 'schedule-dir-%d/' 1 2 3 4 5 6 7 8 9 10)run.sched
mkdir -p "$(dirname "$long")" && cp "$TMP/my.sched" "$long"
run "$ALEXNET" --stats --json -D micro_batches=2 -D "schedule=file(\"$long\")"
check "-D with a long schedule file path exits 0" 0
json "a long schedule file path survives in the JSON" "j['pipeline']['schedule'] == 'file(\"$long\")'" \
    "j['pipeline']['schedule']"

cat >"$TMP/relus.pipe" <<'EOF'
model relus {
    input  x: float32[4]
    target y: float32[4]
    repeat 100 { relu }
    loss mse
}
EOF
list="[$(seq -s ', ' 0 99)]"
run relus.pipe --stats --json -D stages=100 -D "partition=$list"
check "a 100-entry partition list exits 0" 0
json "a 100-entry partition list survives in the JSON" \
    "j['pipeline']['partition'] == '$list' and len(j['stages']) == 100" "j['pipeline']['partition']"

# 2^32 x 2^32 weights: 2^64 parameters do not fit the counts; a limit, so exit 1.
cat >"$TMP/huge_linear.pipe" <<'EOF'
model huge {
    input  x: float32[4294967296]
    target y: float32[4294967296]
    linear(4294967296, bias = false)
    loss mse
}
EOF
run huge_linear.pipe --stats --json
check "a linear with 2^64 parameters is rejected, not counted as 0" 1 --stdout-empty --err 'error:'

# An output of 10^22 elements is over the 2^40 limit: rejected at once.
cat >"$TMP/huge_pool.pipe" <<'EOF'
model huge {
    input  x: float32[1, 4, 4]
    target y: int32[]
    adaptive_avgpool2d(100000000000)
    flatten
    loss cross_entropy
}
EOF
if command -v timeout >/dev/null; then
    (cd "$TMP" && exec timeout 5 "$PIPEC" huge_pool.pipe) >"$OUT" 2>"$ERR"
    rc=$?
    check "adaptive_avgpool2d(10^11) is rejected within 5 s (124: timed out)" 1 --stdout-empty --err 'too large'
fi


# ---- plans, listings, emitted schedules and pictures

GPT="$SRC/examples/gpt_tiny.pipe"
run "$GPT" -o "$TMP/gpt.bin"
check "-o writes a plan" 0 --stdout-empty
[ -s "$TMP/gpt.bin" ] && head -c 8 "$TMP/gpt.bin" | grep -q PIPEPLAN && ok "plan.bin starts with PIPEPLAN" || not_ok "plan.bin starts with PIPEPLAN"
run "$GPT" --list
check "--list of the .pipe" 0 --out '^train stage 3:' --out '^  +[0-9]+  ReduceTiedGrads' --out '^eval stage 0:'
cp "$OUT" "$TMP/list-from-pipe"
run "$TMP/gpt.bin" --list
check "--list of plan.bin" 0
cmp -s "$OUT" "$TMP/list-from-pipe" && ok "--list prints the same from plan.bin as from the .pipe" \
    || not_ok "--list prints the same from plan.bin as from the .pipe"
run "$TMP/gpt.bin" --stats --json
check "--stats --json of plan.bin" 0
json "plan.bin stats have ranks, step_time and bubble" \
    'len(j["ranks"]) == 4 and j["step_time"] > 0 and 0 <= j["bubble"] < 1 and all(set(r) >= {"rank", "stage", "busy", "idle", "bubble", "peak_buffers", "peak_bytes"} for r in j["ranks"])'
head -c 100 "$TMP/gpt.bin" >"$TMP/cut.bin"
run "$TMP/cut.bin" --list
check "a cut plan.bin is a clear error" 1 --stdout-empty --err 'corrupted plan'
run "$GPT" --emit sched -o "$TMP/gpt.sched"
check "--emit sched" 0 --stdout-empty
grep -q '^stage 3: F0.0 ' "$TMP/gpt.sched" && ok "the emitted schedule has one line per stage" || not_ok "the emitted schedule has one line per stage"
run "$GPT" -D "schedule=file(\"$TMP/gpt.sched\")" --list
check "the emitted schedule compiles again" 0
diff <(sed -n '/^train stage 0/,$p' "$OUT") <(sed -n '/^train stage 0/,$p' "$TMP/list-from-pipe") >/dev/null \
    && ok "and lists the same instructions" || not_ok "and lists the same instructions"
run "$GPT" --emit svg -o "$TMP/gpt.svg"
check "--emit svg" 0
"$PY" -c 'import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])' "$TMP/gpt.svg" 2>/dev/null \
    && ok "the SVG is well-formed XML" || not_ok "the SVG is well-formed XML"
run "$GPT" --emit trace
check "--emit trace to stdout" 0
"$PY" -c 'import json, sys; t = json.load(open(sys.argv[1])); assert len(t["traceEvents"]) > 100' "$OUT" 2>/dev/null \
    && ok "the trace is JSON with events" || not_ok "the trace is JSON with events"
run "$GPT" --emit png
check "--emit with an unknown kind" 1 --err 'sched, svg or trace'
run "$TMP/gpt.bin" -o "$TMP/again.bin"
check "a compiled plan takes --list or --stats only" 1 --err 'compiled plan'

# ---- residual blocks in --stats: the block, then its layers indented
RES=$SRC/tests/e2e/residual_cnn.pipe
run "$RES" --stats
check "--stats lists a residual block's layers under it, body.j and shortcut.j" 0 \
    --out '^     3  residual +\[6, 3, 3\] +300 ' --out '^        body\.2 conv2d +\[6, 3, 3\] +42 ' \
    --out '^        shortcut\.0 conv2d +\[6, 3, 3\] +24 ' --out '^        shortcut\.1 batchnorm2d +\[6, 3, 3\] +12 ' \
    --out '^        body\.3 dropout +\[20\] '
run "$RES" --stats --json
json "--stats --json: a residual block's body and shortcut, its tensors and buffers under body.j / shortcut.j" \
    '[s["type"] for s in j["layers"][3]["body"]] == ["conv2d", "tanh", "conv2d"] and [s["output_shape"] for s in j["layers"][3]["shortcut"]] == [[6, 3, 3], [6, 3, 3]] and [t["name"] for t in j["layers"][3]["param_tensors"]][-3:] == ["layers.3.shortcut.0.weight", "layers.3.shortcut.1.weight", "layers.3.shortcut.1.bias"] and [(t["name"], t["dtype"]) for t in j["layers"][3]["buffer_tensors"]] == [("layers.3.shortcut.1.running_mean", "float32"), ("layers.3.shortcut.1.running_var", "float32"), ("layers.3.shortcut.1.num_batches_tracked", "int64")] and sum(s["params"] for s in j["layers"][3]["body"] + j["layers"][3]["shortcut"]) == j["layers"][3]["params"] and "body" not in j["layers"][2]' \
    'j["layers"][3]'

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
