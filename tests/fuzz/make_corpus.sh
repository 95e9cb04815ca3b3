#!/usr/bin/env bash
# Rebuilds the seed corpus tests/fuzz/corpus/{dsl,plan,sched,json}/ from the
# examples, with the pipec (and for json/, the pipert) given (after a change
# to the DSL, the text schedule format, plan.bin, whose version the plan
# seeds carry, or the checkpoint files):
#
#   bash tests/fuzz/make_corpus.sh build/pipec [build/pipert]
#
# KINDS="json" (default "dsl plan sched json"; json only with a pipert)
# rebuilds only the folders named. Small on purpose (well under 200 KiB):
# the fuzzers grow their own copy (scripts/fuzz.sh), never this one.
set -euo pipefail
PIPEC=$(realpath "$1")
PIPERT=${2:+$(realpath "$2")}
cd "$(dirname "$0")/../.."
OUT=tests/fuzz/corpus
KINDS=${KINDS:-dsl plan sched json}
want() { case " $KINDS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
for k in $KINDS; do
    rm -rf "${OUT:?}/$k"
    mkdir -p "$OUT/$k"
done

if want dsl; then
# dsl: every example as it is; then variants that use the directives
# fuzz_dsl reads (#-D, #%emit, #%sched; see fuzz_dsl.c)
for f in examples/*.pipe tests/e2e/*.pipe; do
    cp "$f" "$OUT/dsl/$(basename "$f")"
done
{ echo '#-D schedule=file("custom.sched")'; cat examples/mlp.pipe; echo '#%sched'; cat examples/custom.sched; } \
    > "$OUT/dsl/mlp_custom_sched.pipe"
{ echo '#-D stages=2'; echo '#-D schedule=zb-v'; echo '#-D micro_batches=4'; echo '#%emit'; cat tests/e2e/tied_gpt.pipe; } \
    > "$OUT/dsl/tied_gpt_zbv_emit.pipe"
{ echo '#-D stages=3'; echo '#-D schedule=dualpipev'; echo '#-D partition=parameters'; cat tests/e2e/tied_mlp.pipe; } \
    > "$OUT/dsl/tied_mlp_dualpipev.pipe"
{ echo '#-D stages=2'; echo '#-D schedule=looped-bfs(chunks = 2)'; echo '#-D partition="type:linear"'; cat tests/e2e/tied_mlp.pipe; } \
    > "$OUT/dsl/tied_mlp_looped_regex.pipe"

fi

# sched: the hand-written example and what --emit sched prints for each
# generator on a small pipeline
if want sched; then
cp examples/custom.sched "$OUT/sched/custom.sched"
emit() { # NAME STAGES MICRO_BATCHES SCHEDULE
    "$PIPEC" tests/e2e/tied_mlp.pipe -D "stages=$2" -D "micro_batches=$3" -D "schedule=$4" \
        --emit sched -o "$OUT/sched/$1.sched"
}
emit gpipe_2x4 2 4 gpipe
emit 1f1b_3x6 3 6 1f1b
emit interleaved_2x4 2 4 'interleaved(chunks = 2)'
emit looped_bfs_2x4 2 4 'looped-bfs(chunks = 2)'
emit zb_h1_3x6 3 6 zb-h1
emit zb_h2_2x4 2 4 zb-h2
emit zb_v_2x4 2 4 zb-v
emit dualpipev_2x6 2 6 dualpipev
{ echo '#%tied'; echo '#%clip'; cat "$OUT/sched/1f1b_3x6.sched"; } > "$OUT/sched/1f1b_3x6_tied_clip.sched"
printf 'stages: 2\nstage 0: F0 F1\nstage 1: F0 F1\n' > "$OUT/sched/forward_only.sched"

fi

# plan: plan.bin of small models, each program shape once
if want plan; then
plan() { # NAME PIPE [-D ...]
    local name=$1 pipe=$2
    shift 2
    "$PIPEC" "$pipe" "$@" -o "$OUT/plan/$name.bin"
}
plan mlp_1f1b examples/mlp.pipe
plan mlp_custom examples/mlp.pipe -D 'schedule=file("custom.sched")'
plan bn_cnn_2_zbh1 tests/e2e/bn_cnn.pipe -D stages=2 -D schedule=zb-h1
plan tied_mlp_3_zbh1 tests/e2e/tied_mlp.pipe -D stages=3 -D schedule=zb-h1
plan tied_mlp_2_interleaved tests/e2e/tied_mlp.pipe -D stages=2 -D 'schedule=interleaved(chunks = 2)' -D micro_batches=4
plan tied_gpt_2_zbv tests/e2e/tied_gpt.pipe -D stages=2 -D schedule=zb-v -D micro_batches=4 -D grad_clip=off
plan tied_gpt_2_dualpipev tests/e2e/tied_gpt.pipe -D stages=2 -D schedule=dualpipev -D micro_batches=4
plan residual_cnn_2_zbh1 tests/e2e/residual_cnn.pipe -D stages=2 -D schedule=zb-h1 -D micro_batches=4
plan split_mlp_2_tp2 tests/e2e/split_mlp.pipe -D stages=2 -D tensor_parallel=2 -D micro_batches=2
plan vocab_gpt_2_tp2 tests/e2e/vocab_gpt.pipe -D stages=2 -D tensor_parallel=2 -D micro_batches=2
fi

# json: what pipe reads as JSON, from a real checkpoint (2 steps of the tied
# MLP on 2 stages, AdamW): the manifest and the safetensors headers (the
# JSON text alone, without the 8-byte length), and hand-written headers
# in another writer's style (escapes, white space, fields reordered)
if want json; then
    [ -n "$PIPERT" ] || { echo "make_corpus: json/ needs a pipert (second argument)" >&2; exit 2; }
    tmp=$(mktemp -d)
    "$PIPEC" tests/e2e/tied_mlp.pipe -D stages=2 -D micro_batches=2 -o "$tmp/p.bin"
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
        mpirun --oversubscribe -np 2 "$PIPERT" "$tmp/p.bin" --steps 2 --save "$tmp/ck" >/dev/null
    cp "$tmp/ck/manifest.json" "$OUT/json/manifest.json"
    header() { # FILE NAME: the header of a safetensors file
        local n
        n=$(od -An -t u8 -N 8 "$1" | tr -d ' ')
        tail -c +9 "$1" | head -c "$n" >"$OUT/json/$2"
    }
    header "$tmp"/ck/step-*/stage-0.safetensors stage-0.header.json
    header "$tmp"/ck/step-*/optim-1.safetensors optim-1.header.json
    rm -rf "$tmp"
    printf '%s' ' {
  "bias" : { "data_offsets" : [ 16 , 24 ] , "shape" : [ 2 ] , "dtype" : "F32" } ,
  "w\u00e9\ud83d\ude00\/\t" : {"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},
  "__metadata__" : { "format" : "pt" , "" : "" }
}' >"$OUT/json/sloppy.header.json"
    printf '%s' '{"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"e":{"dtype":"F32","shape":[3,0],"data_offsets":[4,4]},"v":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}' \
        >"$OUT/json/scalar_empty.header.json"
    printf '%s' '[1, -2, 9223372036854775807, 0.5, -1e300, true, false, null, "a\"\\\/\b\f\n\r\t\u0001\u00ff\uffff", [], {}, {"a": {"b": [{}]}}]' \
        >"$OUT/json/values.json"
fi
du -sh "$OUT"
