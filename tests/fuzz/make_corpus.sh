#!/usr/bin/env bash
# Rebuilds the seed corpus tests/fuzz/corpus/{dsl,plan,sched}/ from the
# examples, with the pipec given (after a change to the DSL, the text
# schedule format or plan.bin, whose version the plan seeds carry):
#
#   bash tests/fuzz/make_corpus.sh build/pipec
#
# Small on purpose (well under 200 KiB): the fuzzers grow their own copy
# (scripts/fuzz.sh), never this one.
set -euo pipefail
PIPEC=$(realpath "$1")
cd "$(dirname "$0")/../.."
OUT=tests/fuzz/corpus
rm -rf "$OUT"
mkdir -p "$OUT/dsl" "$OUT/plan" "$OUT/sched"

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

# sched: the hand-written example and what --emit sched prints for each
# generator on a small pipeline
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

# plan: plan.bin of small models, each program shape once
plan() { # NAME PIPE [-D ...]
    local name=$1 pipe=$2
    shift 2
    "$PIPEC" "$pipe" "$@" -o "$OUT/plan/$name.bin"
}
plan mlp_1f1b examples/mlp.pipe
plan mlp_custom examples/mlp.pipe -D 'schedule=file("custom.sched")'
plan tied_mlp_3_zbh1 tests/e2e/tied_mlp.pipe -D stages=3 -D schedule=zb-h1
plan tied_mlp_2_interleaved tests/e2e/tied_mlp.pipe -D stages=2 -D 'schedule=interleaved(chunks = 2)' -D micro_batches=4
plan tied_gpt_2_zbv tests/e2e/tied_gpt.pipe -D stages=2 -D schedule=zb-v -D micro_batches=4 -D grad_clip=off
plan tied_gpt_2_dualpipev tests/e2e/tied_gpt.pipe -D stages=2 -D schedule=dualpipev -D micro_batches=4
du -sh "$OUT"
