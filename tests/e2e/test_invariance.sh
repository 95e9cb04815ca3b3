#!/usr/bin/env bash
# Determinism across partitions and schedules (docs/design-notes.md, "The
# determinism contract"): the same model compiled for 1, 2, 3 and 4 stages
# under EVERY generator of schedules/schedules.def (the list is read from
# that file, so a new generator is tested the day it lands) and under text
# schedules (one per placement), with and without activation
# checkpointing, must give bit-identical losses for 10 steps (printed with
# %.9g, so equal text is equal floats) and bit-identical saved weights
# (every tensor of the final checkpoint, by name). data_parallel 2 x 2
# stages must match data_parallel 1 within 1e-5. Six models: an MLP with a
# cross-stage tie and dropout, a small GPT with a tied head, a padding mask
# carried across stages and dropout inside its blocks, a small LLaMA
# (llama_block: grouped-query attention, RoPE, RMSNorm, a padding mask), and
# a small CNN with batchnorm2d (its running statistics and
# num_batches_tracked are in the checkpoints, so compared bit for bit), and
# a small ResNet (residual blocks with and without a projection shortcut,
# weights in both branches, dropout inside a block), and an MLP of wide
# linears (256 features or more: the CPU's packed fp32 product, where it has
# AVX-512F), with a tie across stages. Then precision = bf16
# (its own GEMM: kernels/cpu/k_gemm.c) on the MLP, the GPT and the CNN:
# every generator on 2, 3 or 4 stages against bf16's 1-stage run, bit for
# bit (on a CPU without AVX512-BF16 that part is reported as skipped).
#   test_invariance.sh PIPEC PIPERT SOURCE_DIR
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_start pipe-inv "$@"

# The generators, from the table itself: "name placement" for every line
# whose generator column is not NULL (NULL: the text-file schedule).
SCHEDS=$(sed -n 's/^SCHED_DEF([A-Z_0-9]*, "\([^"]*\)", "[^"]*", \([A-Z]*\), [01], \([a-z_0-9]*\),.*/\1 \2 \3/p' \
    "$SRC/schedules/schedules.def" | awk '$3 != "NULL" { print $1 " " $2 }')
[ "$(echo "$SCHEDS" | wc -l)" -ge 8 ] || { echo "not ok - read the generators from schedules.def: got '$SCHEDS'"; exit 1; }
echo "# generators: $(echo "$SCHEDS" | cut -d' ' -f1 | tr '\n' ' ')"

# tokens for the GPT: random ids, some padding (0)
e2e_tokens "$TMP/tokens.u16" || exit 2
sed "s|TOKENS|$TMP/tokens.u16|" "$SRC/tests/e2e/tied_gpt.pipe" >"$TMP/tied_gpt.pipe"
sed "s|TOKENS|$TMP/tokens.u16|" "$SRC/tests/e2e/llama_gqa.pipe" >"$TMP/llama_gqa.pipe"

run() { # NAME NP DEFINES...: compiles $MODEL and trains 10 steps, saving the weights
    local name=$1 np=$2
    shift 2
    if ! "$PIPEC" "$MODEL" "$@" -o "$TMP/$name.bin" 2>"$TMP/$name.err"; then
        not_ok "$name compiles" "$(head -c 300 "$TMP/$name.err")"
        return 1
    fi
    if ! "${MPI[@]}" "$np" "$PIPERT" "$TMP/$name.bin" --log-every 1 --metrics "$TMP/$name.jsonl" \
        --save "$TMP/$name.ckpt" </dev/null >"$TMP/$name.out" 2>&1; then
        not_ok "$name trains" "$(tail -n 5 "$TMP/$name.out")"
        return 1
    fi
    grep -o '"loss": [^,]*' "$TMP/$name.jsonl" >"$TMP/$name.loss"
    [ "$(wc -l <"$TMP/$name.loss")" -eq 10 ] || { not_ok "$name logs 10 steps"; return 1; }
    python3 "$SRC/tests/e2e/weights_digest.py" "$TMP/$name.ckpt" >"$TMP/$name.w" || { not_ok "$name: read its weights"; return 1; }
    rm -rf "$TMP/$name.ckpt"
    return 0
}

same() { # LABEL NAME WHAT: NAME's losses and weights equal the base run's
    local label=$1 name=$2 what=$3
    if ! cmp -s "$TMP/$label-base.loss" "$TMP/$name.loss"; then
        not_ok "$label: $what: the same losses, bit for bit" \
            "$(diff "$TMP/$label-base.loss" "$TMP/$name.loss" | head -4 | tr '\n' ' ')"
    elif ! cmp -s "$TMP/$label-base.w" "$TMP/$name.w"; then
        not_ok "$label: $what: the same weights, bit for bit" \
            "$(diff "$TMP/$label-base.w" "$TMP/$name.w" | grep '^[<>]' | cut -c1-60 | head -4 | tr '\n' ' ')"
    else
        ok "$label: $what: the same losses and weights, bit for bit"
    fi
}

suite() { # LABEL: every configuration of $MODEL against its 1-stage 1f1b run
    local label=$1 i=0
    run "$label-base" 1 -D stages=1 -D schedule=1f1b || return
    while read -r sched place; do
        for s in 1 2 3 4; do
            # activation checkpointing on half the stage counts of each
            # schedule (the other half for the next schedule), in segments
            # of 1-3 layers
            local ac=$((((s + i / 4) % 2) * (1 + i / 2 % 3)))
            i=$((i + 1))
            local name="$label-$sched-s$s-ac$ac"
            run "$name" "$s" -D stages="$s" -D "schedule=$sched" -D activation_checkpoint="$ac" &&
                same "$label" "$name" "stages $s, $sched ($place), activation_checkpoint = $ac"
        done
    done <<<"$SCHEDS"
    # text schedules, one per placement: what --emit sched writes, read back
    for cfg in "3 zb-h1 0" "2 dualpipev 2"; do
        set -- $cfg
        local name="$label-text-$2-s$1"
        if "$PIPEC" "$MODEL" -D stages="$1" -D "schedule=$2" --emit sched -o "$TMP/$name.sched" 2>"$TMP/$name.err"; then
            run "$name" "$1" -D stages="$1" -D "schedule=file(\"$TMP/$name.sched\")" -D activation_checkpoint="$3" &&
                same "$label" "$name" "stages $1, a text schedule (from $2), activation_checkpoint = $3"
        else
            not_ok "$name: --emit sched" "$(head -c 300 "$TMP/$name.err")"
        fi
    done
    if run "$label-dp2" 4 -D stages=2 -D data_parallel=2 -D micro_batches=4; then
        if python3 - "$TMP/$label-base.loss" "$TMP/$label-dp2.loss" <<'PY'
import sys
a = [float(l.split(":")[1]) for l in open(sys.argv[1])]
b = [float(l.split(":")[1]) for l in open(sys.argv[2])]
worst = max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a, b))
print("#   largest relative difference %.3g" % worst)
sys.exit(0 if worst < 1e-5 else 1)
PY
        then ok "$label: data_parallel 2 x 2 stages matches data_parallel 1 within 1e-5"
        else not_ok "$label: data_parallel 2 x 2 stages matches data_parallel 1 within 1e-5"
        fi
    fi
}
suite_bf16() { # LABEL: precision = bf16, every generator once, against bf16's 1-stage 1f1b run
    local label=$1-bf16 i=0
    run "$label-base" 1 -D stages=1 -D schedule=1f1b -D precision=bf16 || return
    while read -r sched place; do
        local s=$((2 + i % 3)) ac=$((i % 2))
        i=$((i + 1))
        local name="$label-$sched-s$s-ac$ac"
        run "$name" "$s" -D stages="$s" -D "schedule=$sched" -D activation_checkpoint="$ac" -D precision=bf16 &&
            same "$label" "$name" "precision = bf16, stages $s, $sched ($place), activation_checkpoint = $ac"
    done <<<"$SCHEDS"
    # and it is bf16: the losses differ from fp32's
    if cmp -s "$TMP/$1-base.loss" "$TMP/$label-base.loss"; then
        not_ok "$label: bf16's losses differ from fp32's" "the same text: computed in fp32?"
    else
        ok "$label: bf16's losses differ from fp32's ($(head -n 1 "$TMP/$label-base.loss") against $(head -n 1 "$TMP/$1-base.loss"))"
    fi
}
timed() { # LABEL MODEL: the suite, and the seconds it took
    local t0=$SECONDS
    MODEL=$2 suite "$1"
    echo "# $1: $((SECONDS - t0)) s"
}
timed mlp "$SRC/tests/e2e/tied_mlp.pipe"
timed gpt "$TMP/tied_gpt.pipe"
timed llama "$TMP/llama_gqa.pipe"
timed bn "$SRC/tests/e2e/bn_cnn.pipe"
timed resnet "$SRC/tests/e2e/residual_cnn.pipe"
timed wide "$SRC/tests/e2e/wide_mlp.pipe"
if grep -qw avx512_bf16 /proc/cpuinfo; then
    t0=$SECONDS
    MODEL="$SRC/tests/e2e/tied_mlp.pipe" suite_bf16 mlp
    MODEL="$TMP/tied_gpt.pipe" suite_bf16 gpt
    MODEL="$SRC/tests/e2e/bn_cnn.pipe" suite_bf16 bn
    echo "# bf16: $((SECONDS - t0)) s"
else
    echo "# skipped: no AVX512-BF16 on this CPU: the precision = bf16 cases"
fi
e2e_end
