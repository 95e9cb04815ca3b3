/* tests/test_planfile.c: plan.bin round trips, and the reader against cut,
 * flipped, extended and future-version files: a clear error every time,
 * never a crash (the suite also runs under AddressSanitizer). */
#include <zlib.h>

#include "pc_listing.h"
#include "plan_file.h"
#include "base_crc.h"
#include "pc_planner.h"
#include "testutil.h"

typedef struct Compiled {
    DiagList dl;
    PcFront f;
    PlanSchedule p;
    SchedActions acts;
    PlanIR ir;          /* a view of f and p */
    unsigned char *bin;
    size_t len;
} Compiled;

static Compiled *compile(const char *example, const char *const *defs, int ndefs)
{
    Compiled *c = calloc(1, sizeof *c);
    char path[512];
    /* an example's name, or a path from the source root (tests/e2e/...) */
    snprintf(path, sizeof path, "%s/%s%s", PIPE_SOURCE_DIR, strchr(example, '/') ? "" : "examples/", example);
    diag_init(&c->dl);
    ck_assert_int_eq(pc_front_file(&c->f, &c->dl, path, defs, ndefs), 0);
    ck_assert_int_eq(pc_plan_build(&c->dl, &c->f, &c->p, &c->acts, 0), 0);
    c->ir = pc_ir_view(&c->f, &c->p);
    plan_encode(&c->ir, &c->bin, &c->len);
    return c;
}

static void compiled_free(Compiled *c)
{
    sched_actions_free(&c->acts);
    plan_schedule_free(&c->p);
    pc_front_free(&c->f);
    diag_free(&c->dl);
    free(c->bin);
    free(c);
}

static char *listing(const PlanIR *ir)
{
    char *buf;
    size_t n;
    FILE *m = open_memstream(&buf, &n);
    pc_listing(m, ir);
    fclose(m);
    return buf;
}

START_TEST(round_trip)
{
    const char *ex[] = {"alexnet.pipe", "gpt_tiny.pipe", "llama_tiny.pipe"};
    const char *d[] = {"stages=3", "schedule=zb-v"};
    for (int i = 0; i < 4; i++) {
        Compiled *c = i < 3 ? compile(ex[i], NULL, 0) : compile("gpt_tiny.pipe", d, 2);
        PlanIR f;
        char err[1024];
        int rc = plan_decode(c->bin, c->len, &f, err, sizeof err);
        ck_assert_msg(rc == 0, "%s", err);
        ck_assert_str_eq(f.model.name, c->f.model.name);
        ck_assert_int_eq(f.model.nlayers, c->f.model.nlayers);
        ck_assert_int_eq(f.model.total_params, c->f.model.total_params);
        ck_assert_int_eq(f.part.nparts, c->f.part.nparts);
        ck_assert(f.cfg.lr == c->f.cfg.lr);
        /* what a user reads is the same from the .pipe and from plan.bin */
        char *a = listing(&c->ir), *b = listing(&f);
        ck_assert_str_eq(a, b);
        free(a), free(b);
        /* and it encodes to the same bytes */
        unsigned char *bin2;
        size_t len2;
        plan_encode(&f, &bin2, &len2);
        ck_assert_int_eq(len2, c->len);
        ck_assert(memcmp(bin2, c->bin, len2) == 0);
        free(bin2);
        plan_ir_free(&f);
        compiled_free(c);
    }
}
END_TEST

static int decode_fails(const unsigned char *d, size_t n, char *err, size_t errsize)
{
    PlanIR ir;
    if (plan_decode(d, n, &ir, err, errsize) != 0)
        return 1;
    plan_ir_free(&ir);
    return 0;
}

static void fix_crc(unsigned char *d, size_t n)
{
    uint32_t c = (uint32_t)crc32(0L, d + 40, (uInt)(n - 40));
    for (int i = 0; i < 4; i++)
        d[24 + i] = (unsigned char)(c >> (8 * i));
}

START_TEST(truncated)
{
    Compiled *c = compile("gpt_tiny.pipe", NULL, 0);
    char err[1024];
    for (size_t cut = 0; cut < c->len; cut += cut < 200 ? 1 : 97) {
        ck_assert_msg(decode_fails(c->bin, cut, err, sizeof err), "cut at %zu accepted", cut);
        ck_assert_msg(strstr(err, "corrupted plan") || strstr(err, "not a pipe plan"), "cut %zu: %s", cut, err);
    }
    /* a cut file whose header claims the cut size: the sections are short */
    unsigned char *d = malloc(c->len);
    for (size_t cut = 200; cut < c->len; cut += 211) {
        memcpy(d, c->bin, cut);
        for (int i = 0; i < 8; i++)
            d[32 + i] = (unsigned char)((uint64_t)cut >> (8 * i));
        fix_crc(d, cut);
        ck_assert_msg(decode_fails(d, cut, err, sizeof err), "cut at %zu accepted", cut);
        ck_assert_msg(strstr(err, "corrupted plan"), "%s", err);
    }
    free(d);
    compiled_free(c);
}
END_TEST

START_TEST(flipped)
{
    Compiled *c = compile("gpt_tiny.pipe", NULL, 0);
    unsigned char *d = malloc(c->len);
    char err[1024];
    int rejected = 0, total = 0;
    for (size_t at = 0; at < c->len; at += at < 400 ? 1 : 7) {
        for (int bit = 0; bit < 8; bit += 3) {
            memcpy(d, c->bin, c->len);
            d[at] ^= (unsigned char)(1 << bit);
            /* without a fixed CRC the checksum catches it */
            if (at >= 40) {
                ck_assert(decode_fails(d, c->len, err, sizeof err));
                ck_assert_msg(strstr(err, "checksum mismatch"), "%s", err);
            }
            /* with the CRC fixed, the parsers and the verifier must cope */
            if (at != 24 && at != 25 && at != 26 && at != 27)
                fix_crc(d, c->len);
            total++;
            rejected += decode_fails(d, c->len, err, sizeof err);
        }
    }
    /* most flips land in fields the reader checks (counts, enums,
     * instructions); some (a cost, a FLOP count) are legal values */
    ck_assert_int_gt(rejected, total / 3);
    free(d);
    compiled_free(c);
}
END_TEST

/* MODEL ends with kv_heads and rope_theta per layer (added without a
 * version bump), then momentum and transpose's two dimensions per layer
 * (version 3): they round-trip; a
 * plan that ends at the totals reads with 0 for all when it has no
 * llama_block or batchnorm2d, and is refused when it has one. The cut is
 * made by shortening MODEL's length in the section table. */
static int cut_model_tail(unsigned char *d, size_t n, int64_t cut)
{
    for (size_t e = 40; e + 24 <= n && e < 40 + 64 * 24; e += 24)
        if (d[e] == 2 && d[e + 1] == 0 && d[e + 2] == 0 && d[e + 3] == 0) { /* MODEL */
            uint64_t bytes = 0;
            for (int i = 7; i >= 0; i--)
                bytes = bytes << 8 | d[e + 16 + i];
            bytes -= (uint64_t)cut;
            for (int i = 0; i < 8; i++)
                d[e + 16 + i] = (unsigned char)(bytes >> (8 * i));
            fix_crc(d, n);
            return 0;
        }
    return -1;
}

START_TEST(llama_fields)
{
    Compiled *c = compile("llama_tiny.pipe", NULL, 0);
    PlanIR f;
    char err[1024];
    ck_assert_msg(plan_decode(c->bin, c->len, &f, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(f.model.layer[1].kind, PLAN_L_LLAMA_BLOCK);
    ck_assert_int_eq(f.model.layer[1].kv_heads, 2);
    ck_assert(f.model.layer[1].theta == 10000.0);
    ck_assert_int_eq(f.model.layer[0].kv_heads, 0);
    int64_t tail = 40 * (int64_t)f.model.nlayers;
    plan_ir_free(&f);
    unsigned char *d = malloc(c->len);
    memcpy(d, c->bin, c->len);
    ck_assert_int_eq(cut_model_tail(d, c->len, tail), 0);
    ck_assert(decode_fails(d, c->len, err, sizeof err));
    ck_assert_msg(strstr(err, "a llama block with 8 heads, 0 kv heads"), "%s", err);
    /* a kv_heads that does not divide heads */
    memcpy(d, c->bin, c->len);
    PlanIR g;
    ck_assert(plan_decode(d, c->len, &g, err, sizeof err) == 0);
    g.model.layer[1].kv_heads = 3;
    unsigned char *bad;
    size_t nbad;
    plan_encode(&g, &bad, &nbad);
    ck_assert(decode_fails(bad, nbad, err, sizeof err));
    ck_assert_msg(strstr(err, "layer 1: a llama block with 8 heads, 3 kv heads"), "%s", err);
    free(bad);
    /* a micro-batch size whose kernel buffers pass int64 (fuzz_plan found
     * one): refused, naming the layer */
    g.model.layer[1].kv_heads = 2;
    g.cfg.micro_batch_size = 1 << 20;
    g.model.layer[1].in.dim[0] = g.model.layer[1].out.dim[0] = (int64_t)1 << 24;
    plan_encode(&g, &bad, &nbad);
    ck_assert(decode_fails(bad, nbad, err, sizeof err));
    ck_assert_msg(strstr(err, "layer 1 needs more than 2^44 floats (64 TiB) for one micro-batch of 1048576 samples"),
                  "%s", err);
    free(bad);
    plan_ir_free(&g);
    free(d);
    compiled_free(c);
    /* no llama_block: the plan reads without the tail */
    c = compile("gpt_tiny.pipe", NULL, 0);
    ck_assert(plan_decode(c->bin, c->len, &f, err, sizeof err) == 0);
    tail = 40 * (int64_t)f.model.nlayers;
    plan_ir_free(&f);
    d = malloc(c->len);
    memcpy(d, c->bin, c->len);
    ck_assert_int_eq(cut_model_tail(d, c->len, tail), 0);
    ck_assert_msg(plan_decode(d, c->len, &f, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(f.model.layer[1].kv_heads, 0);
    plan_ir_free(&f);
    free(d);
    compiled_free(c);
}
END_TEST

/* split linears: the splits round-trip (the trailing MODEL field), a plan
 * without one has no such field, and a split on a layer that is not a
 * linear is refused */
START_TEST(split_fields)
{
    const char *d[] = {"tensor_parallel = 2"};
    Compiled *c = compile("tests/e2e/split_mlp.pipe", d, 1);
    PlanIR f;
    char err[1024];
    ck_assert_msg(plan_decode(c->bin, c->len, &f, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(f.model.layer[0].split, PLAN_LINEAR_COLUMN);
    ck_assert_int_eq(f.model.layer[3].split, PLAN_LINEAR_ROW);
    ck_assert_int_eq(f.model.layer[5].split, PLAN_LINEAR_COLUMN);
    ck_assert_int_eq(f.model.layer[7].split, PLAN_LINEAR_WHOLE);
    ck_assert_int_eq(f.model.layer[3].tp, 2);
    ck_assert_int_eq(f.model.layer[7].tp, 1);
    /* the same model without splits is shorter by the field (4 + 3 x 8
     * bytes, the sections padded to 8) */
    PlanIR g;
    ck_assert(plan_decode(c->bin, c->len, &g, err, sizeof err) == 0);
    for (int i = 0; i < g.model.nlayers; i++)
        g.model.layer[i].split = PLAN_LINEAR_WHOLE;
    unsigned char *bin;
    size_t n;
    plan_encode(&g, &bin, &n);
    ck_assert_uint_eq(n, c->len - 24);
    free(bin);
    /* a split on a linear without its weight (the GELU's record, made a
     * linear): refused, naming it */
    g.model.layer[1].kind = PLAN_L_LINEAR;
    g.model.layer[1].split = PLAN_LINEAR_ROW;
    plan_encode(&g, &bin, &n);
    g.model.layer[1].kind = PLAN_L_GELU;
    ck_assert(decode_fails(bin, n, err, sizeof err));
    ck_assert_msg(strstr(err, "split 0: layer 1 is not a linear of its shapes"), "%s", err);
    free(bin);
    plan_ir_free(&g);
    plan_ir_free(&f);
    compiled_free(c);
}
END_TEST

/* a vocabulary-split embedding: split 3 round-trips; on a linear refused;
 * a linear tied to it must be split by column */
START_TEST(split_embedding_field)
{
    const char *d[] = {"tensor_parallel = 2"};
    Compiled *c = compile("tests/e2e/vocab_gpt.pipe", d, 1);
    PlanIR f;
    char err[1024];
    ck_assert_msg(plan_decode(c->bin, c->len, &f, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(f.model.layer[0].split, PLAN_EMBEDDING_VOCAB);
    ck_assert_int_eq(f.model.layer[0].tp, 2);
    ck_assert_int_eq(f.model.layer[5].split, PLAN_LINEAR_COLUMN);
    unsigned char *bin;
    size_t n;
    /* vocab on the head (a linear): refused */
    f.model.layer[5].split = PLAN_EMBEDDING_VOCAB;
    plan_encode(&f, &bin, &n);
    ck_assert(decode_fails(bin, n, err, sizeof err));
    ck_assert_msg(strstr(err, "split 1: layer 5 is not a linear of its shapes"), "%s", err);
    free(bin);
    /* the head tied to the split embedding but not split itself: refused */
    f.model.layer[5].split = PLAN_LINEAR_WHOLE;
    f.model.layer[5].tie = 0;
    f.model.layer[5].nparams = 0; /* a tied linear owns only its bias (none here) */
    plan_encode(&f, &bin, &n);
    ck_assert(decode_fails(bin, n, err, sizeof err));
    ck_assert_msg(strstr(err, "layer 5: tied to layer 0, split 0 against its split 3"), "%s", err);
    free(bin);
    /* tied and split by column: read back as it was */
    f.model.layer[5].split = PLAN_LINEAR_COLUMN;
    plan_encode(&f, &bin, &n);
    PlanIR g;
    ck_assert_msg(plan_decode(bin, n, &g, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(g.model.layer[5].split, PLAN_LINEAR_COLUMN);
    ck_assert_int_eq(g.model.layer[5].tie, 0);
    plan_ir_free(&g);
    free(bin);
    plan_ir_free(&f);
    compiled_free(c);
}
END_TEST

/* batchnorm2d: momentum round-trips (version 3), its buffers follow from
 * the layer (not stored), a plan cut before the momenta or with one out of
 * range is refused. */
START_TEST(batchnorm_fields)
{
    Compiled *c = compile("tests/e2e/bn_cnn.pipe", NULL, 0);
    PlanIR f;
    char err[1024];
    ck_assert_msg(plan_decode(c->bin, c->len, &f, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(f.model.layer[0].kind, PLAN_L_BATCHNORM2D);
    ck_assert(f.model.layer[0].momentum == 0.1);
    ck_assert(f.model.layer[5].momentum == 0.25 && f.model.layer[5].eps == 1e-3);
    ck_assert(f.model.layer[1].momentum == 0.0); /* conv2d */
    const PlanLayer *L = &f.model.layer[5];
    ck_assert_int_eq(L->nparams, 2);
    ck_assert_int_eq(L->nbuffers, 3);
    ck_assert_str_eq(L->buffer[0].name, "running_mean");
    ck_assert_str_eq(L->buffer[1].name, "running_var");
    ck_assert_str_eq(L->buffer[2].name, "num_batches_tracked");
    ck_assert_int_eq(L->buffer[1].dim[0], 8);
    ck_assert_int_eq(L->buffer[2].ndim, 0);
    ck_assert_int_eq(L->buffer[2].i64, 1);
    ck_assert_int_eq(plan_layer_buffer_bytes(L), 8 * 4 * 2 + 8);
    ck_assert_int_eq(f.model.layer[1].nbuffers, 0);
    int64_t tail = 40 * (int64_t)f.model.nlayers;
    unsigned char *d = malloc(c->len);
    memcpy(d, c->bin, c->len);
    ck_assert_int_eq(cut_model_tail(d, c->len, tail), 0);
    ck_assert(decode_fails(d, c->len, err, sizeof err));
    ck_assert_msg(strstr(err, "layer 0: a batchnorm2d without its momentum"), "%s", err);
    f.model.layer[5].momentum = 1.5;
    unsigned char *bad;
    size_t nbad;
    plan_encode(&f, &bad, &nbad);
    ck_assert(decode_fails(bad, nbad, err, sizeof err));
    ck_assert_msg(strstr(err, "layer 5: momentum 1.5 out of range"), "%s", err);
    free(bad);
    f.model.layer[5].momentum = 0.25;
    /* the transpose's dimensions round-trip; a swap its output does not show is refused */
    ck_assert_int_eq(f.model.layer[8].kind, PLAN_L_TRANSPOSE);
    ck_assert_int_eq(f.model.layer[8].axis_a, 0);
    ck_assert_int_eq(f.model.layer[8].axis_b, 2);
    ck_assert_int_eq(f.model.layer[10].axis_a, 1); /* transpose(-1, 0) of a [4, 8] sample */
    ck_assert_int_eq(f.model.layer[10].axis_b, 0);
    f.model.layer[8].axis_b = 1;
    plan_encode(&f, &bad, &nbad);
    ck_assert(decode_fails(bad, nbad, err, sizeof err));
    ck_assert_msg(strstr(err, "layer 8: a transpose whose output does not match its input"), "%s", err);
    free(bad);
    f.model.layer[8].axis_b = 2;
    f.model.layer[9].out.dim[0] = 5; /* a reshape that loses elements */
    plan_encode(&f, &bad, &nbad);
    ck_assert(decode_fails(bad, nbad, err, sizeof err));
    ck_assert_msg(strstr(err, "layer 9: a reshape whose output does not match its input"), "%s", err);
    free(bad);
    f.model.layer[9].out.dim[0] = 4;
    f.model.layer[5].in.dim[0] = 7; /* weight and bias of 8 for 7 channels */
    plan_encode(&f, &bad, &nbad);
    ck_assert(decode_fails(bad, nbad, err, sizeof err));
    ck_assert_msg(strstr(err, "layer 5: a batchnorm2d that does not match its input"), "%s", err);
    free(bad);
    plan_ir_free(&f);
    free(d);
    compiled_free(c);
}
END_TEST

/* Residual blocks (version 3): their sub-layers round-trip after the layer
 * table; a block whose layers do not chain, whose parameters are not its
 * layers', or that nests a block is refused. */
static void ck_residual_refused(const Compiled *c, int what, const char *want)
{
    PlanIR g;
    char err[1024];
    ck_assert(plan_decode(c->bin, c->len, &g, err, sizeof err) == 0);
    PlanLayer *R = &g.model.layer[1];
    ck_assert_int_eq(R->kind, PLAN_L_RESIDUAL);
    switch (what) {
    case 0: R->sub[1].out.dim[0] = 5; break;                         /* relu's output no longer the next's input */
    case 1: snprintf(R->param[2].name, sizeof R->param[2].name, "body.2.bias"); break; /* not the layer's name */
    case 2: R->sub[1].kind = PLAN_L_EMBEDDING; break;                /* a layer a block cannot hold */
    case 3: R->nbody = 0, R->nshort = 4; break;                      /* no body */
    case 4: R->sub[3].param[0].dim[1] = 3, R->sub[3].param[0].count = 4 * 3 * 9; break; /* not the block's tensor */
    case 5: R->sub[0].tie = 0; break;                                /* a tie inside */
    }
    unsigned char *bad;
    size_t nbad;
    plan_encode(&g, &bad, &nbad);
    ck_assert_msg(decode_fails(bad, nbad, err, sizeof err), "change %d accepted", what);
    ck_assert_msg(strstr(err, "corrupted plan") && strstr(err, want), "change %d: %s", what, err);
    free(bad);
    plan_ir_free(&g);
}

START_TEST(residual_fields)
{
    const char *d[] = {"stages=3", "schedule=zb-v"};
    Compiled *c = compile("tests/e2e/residual_cnn.pipe", d, 2);
    PlanIR f;
    char err[1024];
    ck_assert_msg(plan_decode(c->bin, c->len, &f, err, sizeof err) == 0, "%s", err);
    for (int i = 0; i < f.model.nlayers; i++) {
        const PlanLayer *a = &f.model.layer[i], *b = &c->f.model.layer[i];
        ck_assert_int_eq(a->kind, b->kind);
        ck_assert_int_eq(a->nbody, b->nbody);
        ck_assert_int_eq(a->nshort, b->nshort);
        ck_assert_int_eq(a->nparams, b->nparams);
        for (int k = 0; k < a->nparams; k++)
            ck_assert_str_eq(a->param[k].name, b->param[k].name);
        for (int j = 0; j < a->nbody + a->nshort; j++) {
            const PlanLayer *x = &a->sub[j], *y = &b->sub[j];
            ck_assert_int_eq(x->kind, y->kind);
            ck_assert_int_eq(x->index, i);
            ck_assert_int_eq(x->sub_pos, j + 1);
            ck_assert_int_eq(x->nout, y->nout);
            ck_assert_int_eq(x->sh, y->sh);
            ck_assert_int_eq(x->bias, y->bias);
            ck_assert(x->p == y->p);
            ck_assert_int_eq(x->out.dim[0], y->out.dim[0]);
            ck_assert_int_eq(x->params, y->params);
            ck_assert_int_eq(x->nparams, y->nparams);
        }
    }
    const PlanLayer *R = &f.model.layer[3];
    ck_assert_int_eq(R->kind, PLAN_L_RESIDUAL);
    ck_assert_int_eq(R->nbody, 3);
    ck_assert_int_eq(R->nshort, 2);
    ck_assert_int_eq(R->sub[3].kind, PLAN_L_CONV2D);
    ck_assert_str_eq(R->param[4].name, "shortcut.0.weight");
    /* a batchnorm2d in the shortcut: its momentum round-trips, its buffers
     * are the block's, under shortcut.1. */
    ck_assert_int_eq(R->sub[4].kind, PLAN_L_BATCHNORM2D);
    ck_assert(R->sub[4].momentum == 0.2);
    ck_assert_int_eq(R->sub[4].nbuffers, 3);
    ck_assert_int_eq(R->nbuffers, 3);
    ck_assert_str_eq(R->buffer[0].name, "shortcut.1.running_mean");
    ck_assert_str_eq(R->buffer[2].name, "shortcut.1.num_batches_tracked");
    ck_assert_int_eq(R->buffer[2].i64, 1);
    ck_assert_int_eq(plan_layer_buffer_bytes(R), 6 * 4 * 2 + 8);
    {
        unsigned char *bad;
        size_t nbad;
        R->sub[4].momentum = 1.5;
        plan_encode(&f, &bad, &nbad);
        ck_assert(decode_fails(bad, nbad, err, sizeof err));
        ck_assert_msg(strstr(err, "layer 3: momentum 1.5 out of range"), "%s", err);
        free(bad);
        R->sub[4].momentum = 0.2;
        R->sub[4].in.dim[0] = 5; /* weight and bias of 6 for 5 channels */
        plan_encode(&f, &bad, &nbad);
        ck_assert(decode_fails(bad, nbad, err, sizeof err));
        ck_assert_msg(strstr(err, "layer 3: a batchnorm2d that does not match its input"), "%s", err);
        free(bad);
        R->sub[4].in.dim[0] = 6;
    }
    char *a = listing(&c->ir), *b = listing(&f);
    ck_assert_str_eq(a, b);
    free(a), free(b);
    unsigned char *bin2;
    size_t len2;
    plan_encode(&f, &bin2, &len2);
    ck_assert_int_eq(len2, c->len);
    ck_assert(memcmp(bin2, c->bin, len2) == 0);
    free(bin2);
    plan_ir_free(&f);
    compiled_free(c);
    /* layer 1: conv2d, relu, dropout, conv2d (no bias) */
    c = compile("tests/e2e/residual_cnn.pipe", NULL, 0);
    ck_residual_refused(c, 0, "layer 1: a residual block whose layers' shapes or parameters do not add up");
    ck_residual_refused(c, 1, "layer 1: a residual block whose layers' shapes or parameters do not add up");
    ck_residual_refused(c, 2, "layer 1: a residual block whose layers' shapes or parameters do not add up");
    ck_residual_refused(c, 3, "layer 1: a residual block of 0 + 4 layers");
    ck_residual_refused(c, 4, "layer 1: a residual block whose layers' shapes or parameters do not add up");
    ck_residual_refused(c, 5, "tie 0 or mask -1 does not exist");
    /* cut inside the sub-layers' records */
    unsigned char *dd = malloc(c->len);
    for (int64_t cut = 1; cut < 400; cut += 37) {
        memcpy(dd, c->bin, c->len);
        ck_assert_int_eq(cut_model_tail(dd, c->len, cut), 0);
        ck_assert_msg(decode_fails(dd, c->len, err, sizeof err), "cut %lld accepted", (long long)cut);
        ck_assert_msg(strstr(err, "corrupted plan"), "%s", err);
    }
    free(dd);
    compiled_free(c);
}
END_TEST

START_TEST(extended_and_versions)
{
    Compiled *c = compile("alexnet.pipe", NULL, 0);
    char err[1024];
    unsigned char *d = malloc(c->len + 16);
    memcpy(d, c->bin, c->len);
    memset(d + c->len, 0, 16);
    ck_assert(decode_fails(d, c->len + 16, err, sizeof err));
    ck_assert_msg(strstr(err, "the file is") && strstr(err, "bytes, the header says"), "%s", err);
    memcpy(d, c->bin, c->len);
    for (int v = PLAN_VERSION - 1; v <= PLAN_VERSION + 1; v += 2) { /* the one before, the one after */
        d[8] = (unsigned char)v;
        ck_assert(decode_fails(d, c->len, err, sizeof err));
        char want[128];
        snprintf(want, sizeof want, "plan version %d, this program reads %d (recompile the model with this pipec)", v,
                 PLAN_VERSION);
        ck_assert_str_eq(err, want);
    }
    memcpy(d, c->bin, c->len);
    d[0] = 'X';
    ck_assert(decode_fails(d, c->len, err, sizeof err));
    ck_assert_str_eq(err, "not a pipe plan (no PIPEPLAN magic at offset 0)");
    /* an instruction that names a buffer the plan does not have */
    memcpy(d, c->bin, c->len);
    ck_assert(!decode_fails(d, c->len, err, sizeof err));
    free(d);
    compiled_free(c);
}
END_TEST

/* Version 4's 8-byte instructions (docs/instructions.md, section 3). */
static size_t section_at(const unsigned char *d, int id)
{
    uint32_t n = (uint32_t)d[16] | (uint32_t)d[17] << 8;
    for (uint32_t i = 0; i < n; i++) {
        const unsigned char *e = d + 40 + 24 * i;
        if (e[0] == id && !e[1] && !e[2] && !e[3]) {
            uint64_t at = 0;
            for (int k = 7; k >= 0; k--)
                at = at << 8 | e[8 + k];
            return (size_t)at;
        }
    }
    return 0;
}

/* Every operand at its limit reads back as it was written: gpipe holds
 * all 65,536 micro-batches on stage 0, so mb and buf reach 65,535; the
 * decoded programs are the compiled ones, field for field. */
START_TEST(instruction_limits)
{
    const char *defs[] = {"micro_batches=65536", "schedule=gpipe", "micro_batch_size=1"};
    Compiled *c = compile("mlp.pipe", defs, 3);
    PlanIR f;
    char err[1024];
    ck_assert_msg(plan_decode(c->bin, c->len, &f, err, sizeof err) == 0, "%s", err);
    int top_mb = -1, top_buf = -1;
    const SchedPlan *progs[2][2] = {{&c->p.train, &f.sched.train}, {&c->p.eval, &f.sched.eval}};
    for (int k = 0; k < 2; k++)
        for (int s = 0; s < progs[k][0]->stages; s++) {
            const SchedProgram *a = &progs[k][0]->prog[s], *b = &progs[k][1]->prog[s];
            ck_assert_int_eq(a->n, b->n);
            for (int i = 0; i < a->n; i++) {
                const SchedInstr *x = &a->ins[i], *y = &b->ins[i];
                ck_assert_msg(x->op == y->op && x->chunk == y->chunk && x->peer == y->peer && x->mb == y->mb &&
                                  x->buf == y->buf && x->link == y->link,
                              "program %d stage %d pc %d differs after the round trip", k, s, i);
                top_mb = x->mb > top_mb ? x->mb : top_mb;
                top_buf = x->buf > top_buf ? x->buf : top_buf;
            }
        }
    ck_assert_int_eq(top_mb, 65535);
    ck_assert_int_eq(top_buf, 65535);
    plan_ir_free(&f);
    compiled_free(c);
    /* one more micro-batch is refused where it is set (here a -D) */
    const char *over[] = {"micro_batches=65537"};
    PcFront fr;
    DiagList dl;
    diag_init(&dl);
    char path[512];
    snprintf(path, sizeof path, "%s/examples/mlp.pipe", PIPE_SOURCE_DIR);
    ck_assert_int_ne(pc_front_file(&fr, &dl, path, over, 1), 0);
    char *msg;
    size_t msglen;
    FILE *m = open_memstream(&msg, &msglen);
    diag_print(&dl, m);
    fclose(m);
    ck_assert_msg(strstr(msg, "-D micro_batches:1:1: error: micro_batches must be between 1 and 65536"), "%s", msg);
    free(msg);
    pc_front_free(&fr);
    diag_free(&dl);
}
END_TEST

/* A bit set outside an instruction's operands (or in the three spare
 * bits) is refused, naming the stage and instruction; so is a peer past
 * the stage limit. Each of stage 0's instructions of mlp.pipe's plan,
 * every bit from 6 up, the CRC fixed after the flip. */
START_TEST(instruction_stray_bits)
{
    Compiled *c = compile("mlp.pipe", NULL, 0);
    size_t train = section_at(c->bin, 6);
    ck_assert_uint_gt(train, 0);
    const SchedPlan *pl = &c->p.train;
    size_t first = train + 20 + 4 * (size_t)pl->stages * pl->chunks + 4;
    unsigned char *d = malloc(c->len);
    char err[1024];
    int flips = 0;
    for (int i = 0; i < pl->prog[0].n; i++) {
        unsigned o = sched_op_operands[pl->prog[0].ins[i].op];
        uint64_t used = (o & SCHED_C ? 63ull << 6 : 0) | (o & SCHED_M ? 0xffffull << 12 : 0) |
                        (o & SCHED_B ? 0xffffull << 28 : 0) | (o & (SCHED_P | SCHED_L) ? 0x1ffffull << 44 : 0);
        for (int bit = 6; bit < 64; bit++) {
            if (used >> bit & 1)
                continue;
            memcpy(d, c->bin, c->len);
            d[first + 8 * (size_t)i + (size_t)bit / 8] ^= (unsigned char)(1u << (bit % 8));
            fix_crc(d, c->len);
            ck_assert_msg(decode_fails(d, c->len, err, sizeof err), "pc %d bit %d accepted", i, bit);
            char want[96];
            snprintf(want, sizeof want, "stage 0 instruction %d (%s): bits set outside its operands", i,
                     sched_op_names[pl->prog[0].ins[i].op]);
            ck_assert_msg(strstr(err, want) && strstr(err, "section TRAIN"), "pc %d bit %d: %s", i, bit, err);
            flips++;
        }
        if (o & SCHED_P) { /* peer + 1 = 4097: beyond 4,096 stages */
            memcpy(d, c->bin, c->len);
            size_t at = first + 8 * (size_t)i;
            uint64_t v = 0;
            for (int k = 0; k < 8; k++)
                v |= (uint64_t)d[at + k] << (8 * k);
            v = (v & ~(0x1ffffull << 44)) | 4097ull << 44;
            for (int k = 0; k < 8; k++)
                d[at + k] = (unsigned char)(v >> (8 * k));
            fix_crc(d, c->len);
            ck_assert(decode_fails(d, c->len, err, sizeof err));
            ck_assert_msg(strstr(err, "a peer beyond 4096 stages"), "%s", err);
        }
    }
    ck_assert_int_gt(flips, 22 * 3); /* every instruction has its spare bits */
    free(d);
    compiled_free(c);
}
END_TEST

/* base_crc32 (plan.bin's and checkpoints' CRC, folded by carry-less
 * multiplication on x86-64) is zlib's crc32: every length from 0 to 1,100
 * bytes at three alignments, from 0 and continued from another CRC, and a
 * 3 MiB buffer split at odd places. */
START_TEST(crc_is_zlibs)
{
    size_t n = 3u << 20;
    unsigned char *b = malloc(n + 3);
    ck_assert_ptr_nonnull(b);
    uint32_t r = 12345;
    for (size_t i = 0; i < n + 3; i++)
        r = r * 1103515245u + 12345u, b[i] = (unsigned char)(r >> 16);
    for (size_t len = 0; len <= 1100; len++)
        for (int off = 0; off < 3; off++) {
            uint32_t want = (uint32_t)crc32(0L, b + off, (uInt)len);
            ck_assert_msg(base_crc32(0, b + off, len) == want, "length %zu offset %d", len, off);
            ck_assert_msg(base_crc32(0xdeadbeefu, b + off, len) == (uint32_t)crc32(0xdeadbeefUL, b + off, (uInt)len),
                          "continued: length %zu offset %d", len, off);
        }
    uint32_t whole = (uint32_t)crc32(0L, b, (uInt)n);
    ck_assert_uint_eq(base_crc32(0, b, n), whole);
    size_t cut[] = {0, 1, 255, 4097, 1u << 20, n - 17, n};
    for (int i = 0; i < 7; i++)
        ck_assert_uint_eq(base_crc32(base_crc32(0, b, cut[i]), b + cut[i], n - cut[i]), whole);
    free(b);
}
END_TEST

START_TEST(write_and_read_file)
{
    Compiled *c = compile("gpt_tiny.pipe", NULL, 0);
    char path[] = "/tmp/pipe-test-plan-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    char err[4400];
    ck_assert_int_eq(plan_write(path, &c->ir, err, sizeof err), 0);
    /* the file (written a block at a time, the header last) holds
     * plan_encode's bytes */
    FILE *fp = fopen(path, "rb");
    ck_assert_ptr_nonnull(fp);
    unsigned char *got = malloc(c->len + 1);
    ck_assert_uint_eq(fread(got, 1, c->len + 1, fp), c->len);
    fclose(fp);
    ck_assert(memcmp(got, c->bin, c->len) == 0);
    free(got);
    PlanIR ir;
    ck_assert_msg(plan_read(path, &ir, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(ir.sched.train.stages, 4);
    plan_ir_free(&ir);
    unlink(path);
    ck_assert_int_ne(plan_read(path, &ir, err, sizeof err), 0);
    ck_assert_msg(strstr(err, "cannot open"), "%s", err);
    compiled_free(c);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("planfile");
    TCase *c = tcase_create("planfile");
    tcase_set_timeout(c, 120);
    tcase_add_test(c, round_trip);
    tcase_add_test(c, truncated);
    tcase_add_test(c, flipped);
    tcase_add_test(c, extended_and_versions);
    tcase_add_test(c, llama_fields);
    tcase_add_test(c, split_fields);
    tcase_add_test(c, split_embedding_field);
    tcase_add_test(c, batchnorm_fields);
    tcase_add_test(c, residual_fields);
    tcase_add_test(c, instruction_limits);
    tcase_add_test(c, instruction_stray_bits);
    tcase_add_test(c, write_and_read_file);
    tcase_add_test(c, crc_is_zlibs);
    suite_add_tcase(s, c);
    return s;
}

T_MAIN(suite)
