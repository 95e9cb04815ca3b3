/* plan/plan_file.c: plan.bin (see plan_file.h for the layout).
 *
 * Each section has its writer and its reader side by side (put_X, get_X),
 * walking the same fields in the same order; the reader checks every count
 * against what is left of its section and every index against what it
 * indexes, so no file can make it read out of bounds, and finally runs the
 * verifier over the programs it read. The reader fills a PlanIR and needs
 * no syntax tree: it is all pipert reads of a model. */
#define _GNU_SOURCE /* sync_file_range (Linux; without it the write-back starts at the fsync) */
#include "plan_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base_alloc.h"
#include "base_crc.h"
#include "base_file.h"
#include "plan_memory.h"
#include "plan_profile.h"

enum { SEC_STRINGS = 1, SEC_MODEL, SEC_CONFIG, SEC_PARTITION, SEC_COSTS, SEC_TRAIN, SEC_EVAL, SEC_COUNT };
static const char *const sec_names[SEC_COUNT] = {"?", "STRINGS", "MODEL", "CONFIG", "PARTITION", "COSTS", "TRAIN", "EVAL"};
#define HEADER 40

/* ---- writing --------------------------------------------------------- */

/* A section's bytes, in one buffer of its own. */
typedef struct Out {
    unsigned char *d;
    size_t n, cap;
} Out;

static void put(Out *o, const void *p, size_t n)
{
    if (o->n + n > o->cap) {
        while (o->n + n > o->cap)
            o->cap = o->cap ? 2 * o->cap : 4096;
        o->d = realloc(o->d, o->cap);
        if (!o->d) {
            fputs("pipe: out of memory\n", stderr);
            exit(2);
        }
    }
    memcpy(o->d + o->n, p, n);
    o->n += n;
}

static void put_u64(Out *o, uint64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    put(o, b, 8);
}

static void put_u32(Out *o, uint32_t v)
{
    unsigned char b[4];
    for (int i = 0; i < 4; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    put(o, b, 4);
}

static void put_i32(Out *o, int32_t v)
{
    put_u32(o, (uint32_t)v);
}

static void put_i64(Out *o, int64_t v)
{
    put_u64(o, (uint64_t)v);
}

static void put_f64(Out *o, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    put_u64(o, u);
}

/* Strings go to their own section; a field holds the offset, or -1. */
static void put_str(Out *o, Out *strs, const char *s)
{
    if (!s) {
        put_i32(o, -1);
        return;
    }
    put_i32(o, (int32_t)strs->n);
    put(strs, s, strlen(s) + 1);
}

static void put_tensor(Out *o, const PlanTensor *t)
{
    put_u32(o, t->dtype);
    put_u32(o, (uint32_t)t->ndim);
    for (int i = 0; i < PLAN_MAX_DIMS; i++)
        put_i64(o, i < t->ndim ? t->dim[i] : 0);
}

/* n bytes at p, spliced in here unchanged when the section is written */

static void put_data(Out *o, Out *s, const PlanData *d)
{
    put_u32(o, d->kind);
    put_i32(o, d->set);
    put_str(o, s, d->path);
    put_str(o, s, d->path2);
    put_i64(o, d->resize);
    put_i64(o, d->pad);
    put_i64(o, d->samples);
}

/* ---- reading ---------------------------------------------------------- */

typedef struct In {
    const unsigned char *d;
    size_t n, at, base;     /* the section's bytes; base: its offset in the file */
    int sec;
    SchedPlacement place;   /* CONFIG's, for checking the programs */
    const char *strs;       /* the STRINGS section */
    size_t nstrs;
    char *err;
    size_t errsize;
    int bad;
} In;

static void bad(In *in, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bad(In *in, const char *fmt, ...)
{
    if (in->bad)
        return;
    in->bad = 1;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(in->err, in->errsize, "corrupted plan: section %s at offset %zu: %s", sec_names[in->sec],
             in->base + in->at, msg);
}

static int take(In *in, void *p, size_t k)
{
    if (in->bad || in->n - in->at < k) {
        bad(in, "truncated (needs %zu more bytes)", k);
        memset(p, 0, k);
        return -1;
    }
    memcpy(p, in->d + in->at, k);
    in->at += k;
    return 0;
}

static uint64_t get_u64(In *in)
{
    unsigned char b[8];
    take(in, b, 8);
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | b[i];
    return v;
}

static uint32_t get_u32(In *in)
{
    unsigned char b[4];
    take(in, b, 4);
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static int32_t get_i32(In *in)
{
    return (int32_t)get_u32(in);
}

static int64_t get_i64(In *in)
{
    return (int64_t)get_u64(in);
}

static double get_f64(In *in)
{
    uint64_t u = get_u64(in);
    double v;
    memcpy(&v, &u, 8);
    return v;
}

/* An integer field within [lo, hi]. */
static int64_t get_range(In *in, int64_t lo, int64_t hi, const char *what)
{
    size_t at = in->at;
    int64_t v = get_i64(in);
    if (!in->bad && (v < lo || v > hi)) {
        in->at = at;
        bad(in, "%s is %lld, outside [%lld, %lld]", what, (long long)v, (long long)lo, (long long)hi);
    }
    return v;
}

static uint32_t get_enum(In *in, uint32_t count, const char *what)
{
    size_t at = in->at;
    uint32_t v = get_u32(in);
    if (!in->bad && v >= count) {
        in->at = at;
        bad(in, "%s is %u, outside [0, %u)", what, v, count);
    }
    return v;
}

static const char *get_str(In *in, BaseArena *arena, int nullable, const char *what)
{
    size_t at = in->at;
    int32_t off = get_i32(in);
    if (in->bad)
        return NULL;
    if (off == -1 && nullable)
        return NULL;
    if (off < 0 || (size_t)off >= in->nstrs) {
        in->at = at;
        bad(in, "%s: string offset %d outside the string section", what, off);
        return NULL;
    }
    return base_arena_strdup(arena, in->strs + off, strlen(in->strs + off));
}

static void get_tensor(In *in, PlanTensor *t, const char *what)
{
    t->dtype = (PlanDtype)get_enum(in, 2, what);
    size_t at = in->at;
    uint32_t nd = get_u32(in);
    if (!in->bad && nd > PLAN_MAX_DIMS) {
        in->at = at;
        bad(in, "%s has %u dimensions", what, nd);
        return;
    }
    t->ndim = (int)nd;
    int64_t elems = 1;
    for (int i = 0; i < PLAN_MAX_DIMS; i++) {
        int64_t d = get_range(in, i < t->ndim ? 1 : 0, i < t->ndim ? PLAN_MAX_ELEMS : 0, what);
        if (i < t->ndim) {
            t->dim[i] = d;
            if (!in->bad && d > PLAN_MAX_ELEMS / elems)
                bad(in, "%s is larger than 2^40 elements", what);
            elems *= in->bad ? 1 : d;
        }
    }
}

static void *alloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p) {
        fputs("pipe: out of memory\n", stderr);
        exit(2);
    }
    return p;
}

/* A count of records that each take at least min bytes: never more than
 * the section can hold. */
static uint32_t get_count(In *in, uint32_t max, size_t min, const char *what)
{
    size_t at = in->at;
    uint32_t v = get_u32(in);
    if (!in->bad && (v > max || (min && v > (in->n - in->at) / min))) {
        in->at = at;
        bad(in, "%s count %u is more than %s", what, v, v > max ? "the limit" : "the section holds");
    }
    return in->bad ? 0 : v;
}

static void get_data(In *in, BaseArena *a, PlanData *d)
{
    d->kind = (PlanDataKind)get_enum(in, PLAN_DATA_COUNT, "data source");
    d->set = get_i32(in) != 0;
    d->path = get_str(in, a, 1, "data path");
    d->path2 = get_str(in, a, 1, "data path");
    d->resize = get_range(in, 0, 1 << 20, "resize");
    d->pad = get_range(in, -1, 1 << 30, "pad");
    d->samples = get_range(in, 0, (int64_t)1 << 40, "samples");
}

/* ---- MODEL: the layers, their shapes and parameters -------------------- */

/* One layer's record (docs/plan-format.md, MODEL). */
static void put_layer(Out *o, Out *S, const PlanLayer *L)
{
    put_u32(o, L->kind);
    put_str(o, S, L->label);
    int64_t iv[] = {L->nout, L->vocab, L->dim, L->positions, L->heads, L->mlp, L->kh,
                    L->kw,   L->sh,    L->sw,  L->ph,        L->pw,    L->oh,  L->ow};
    for (size_t k = 0; k < sizeof iv / sizeof iv[0]; k++)
        put_i64(o, iv[k]);
    put_f64(o, L->p);
    put_f64(o, L->eps);
    put_i32(o, L->bias);
    put_i32(o, L->causal);
    put_i32(o, L->tie);
    put_i32(o, L->mask);
    put_tensor(o, &L->in);
    put_tensor(o, &L->out);
    put_i64(o, L->params);
    put_i64(o, L->held);
    put_i64(o, L->flops);
    put_i64(o, L->act_bytes);
    put_u32(o, L->init);
    put_f64(o, L->init_std);
    put_f64(o, L->init_std_resid);
    put_u32(o, (uint32_t)L->nparams);
    for (int k = 0; k < L->nparams; k++) {
        put_str(o, S, L->param[k].name);
        put_u32(o, (uint32_t)L->param[k].ndim);
        for (int d = 0; d < PLAN_MAX_DIMS; d++)
            put_i64(o, d < L->param[k].ndim ? L->param[k].dim[d] : 0);
    }
}

static void put_model(Out *o, Out *S, const PlanModel *m)
{
    put_str(o, S, m->name);
    put_u32(o, (uint32_t)m->nlayers);
    put_u32(o, (uint32_t)m->ninputs);
    put_u32(o, (uint32_t)m->ntargets);
    put_u32(o, m->loss);
    for (int i = 0; i < m->ninputs + m->ntargets; i++) {
        const PlanIO *io = i < m->ninputs ? &m->input[i] : &m->target[i - m->ninputs];
        put_str(o, S, io->name);
        put_tensor(o, &io->t);
        put_i32(o, io->first_use);
        put_i32(o, io->last_use);
    }
    for (int i = 0; i < m->nlayers; i++)
        put_layer(o, S, &m->layer[i]);
    put_i64(o, m->total_params);
    put_i64(o, m->total_flops);
    /* after the totals, added to version 2 at the end of MODEL
     * (docs/plan-format.md): llama_block's kv_heads and rope_theta, for
     * every layer */
    for (int i = 0; i < m->nlayers; i++) {
        put_i64(o, m->layer[i].kv_heads);
        put_f64(o, m->layer[i].theta);
    }
    /* version 3: batchnorm2d's momentum, then transpose's two dimensions,
     * for every layer (0 for the rest) */
    for (int i = 0; i < m->nlayers; i++)
        put_f64(o, m->layer[i].momentum);
    for (int i = 0; i < m->nlayers; i++) {
        put_i64(o, m->layer[i].axis_a);
        put_i64(o, m->layer[i].axis_b);
    }
    /* then each residual block's sub-layers, in layer order: u32 nbody,
     * u32 nshort, then for each its record, momentum and two dimensions
     * (nothing for other layers) */
    for (int i = 0; i < m->nlayers; i++) {
        const PlanLayer *L = &m->layer[i];
        if (L->kind != PLAN_L_RESIDUAL)
            continue;
        put_u32(o, (uint32_t)L->nbody);
        put_u32(o, (uint32_t)L->nshort);
        for (int j = 0; j < L->nbody + L->nshort; j++)
        {
            put_layer(o, S, &L->sub[j]);
            put_f64(o, L->sub[j].momentum);
            put_i64(o, L->sub[j].axis_a);
            put_i64(o, L->sub[j].axis_b);
        }
    }
    /* then, only where a linear or an embedding has one, the splits
     * (docs/plan-format.md): u32 count, then i32 layer and i32 split (1
     * column, 2 row, 3 vocab) each */
    uint32_t nsplit = 0;
    for (int i = 0; i < m->nlayers; i++)
        nsplit += plan_layer_split(&m->layer[i]);
    if (nsplit) {
        put_u32(o, nsplit);
        for (int i = 0; i < m->nlayers; i++)
            if (plan_layer_split(&m->layer[i]))
                put_i32(o, i), put_i32(o, m->layer[i].split);
    }
}

/* reshape: the same elements; transpose: its input with dimensions a and
 * b swapped */
static int moves_ok(const PlanLayer *L)
{
    if (L->kind == PLAN_L_RESHAPE)
        return plan_tensor_elems(&L->in) == plan_tensor_elems(&L->out) && L->in.dtype == L->out.dtype;
    if (L->in.ndim != L->out.ndim || L->in.ndim < 2 || L->axis_a < 0 || L->axis_a >= L->in.ndim || L->axis_b < 0 ||
        L->axis_b >= L->in.ndim)
        return 0;
    for (int d = 0; d < L->in.ndim; d++) {
        int64_t from = d == L->axis_a ? L->axis_b : d == L->axis_b ? L->axis_a : d;
        if (L->out.dim[d] != L->in.dim[from])
            return 0;
    }
    return 1;
}

uint64_t plan_model_hash(const PlanModel *m)
{
    Out o = {0}, strs = {0};
    put_model(&o, &strs, m);
    uint64_t h = 0xcbf29ce484222325ull;
    const Out *part[] = {&o, &strs};
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < part[k]->n; i++)
            h = (h ^ part[k]->d[i]) * 0x100000001b3ull;
        free(part[k]->d);
    }
    return h;
}

static int same_tensor(const PlanTensor *a, const PlanTensor *b)
{
    if (a->dtype != b->dtype || a->ndim != b->ndim)
        return 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->dim[d] != b->dim[d])
            return 0;
    return 1;
}

/* A residual block as the runtime relies on it (runtime/rt_residual.c):
 * layers that are not blocks, float32 throughout; the body's shapes chain
 * from the block's input to its output, the shortcut's too (or, without
 * one, the output is shaped as the input); its parameter tensors are its
 * layers', in order, under body.j. and shortcut.j. */
static int residual_ok(const PlanLayer *R)
{
    int n = R->nbody + R->nshort, k = 0;
    if (R->in.dtype != PLAN_F32 || (!R->nshort && !same_tensor(&R->in, &R->out)))
        return 0;
    for (int j = 0; j < n; j++) {
        const PlanLayer *S = &R->sub[j];
        if (S->kind == PLAN_L_RESIDUAL || S->kind == PLAN_L_EMBEDDING || S->kind == PLAN_L_TRANSFORMER_BLOCK ||
            S->kind == PLAN_L_LLAMA_BLOCK || S->in.dtype != PLAN_F32 || S->out.dtype != PLAN_F32)
            return 0;
        const PlanTensor *want = j == 0 || j == R->nbody ? &R->in : &R->sub[j - 1].out;
        if (!same_tensor(&S->in, want))
            return 0;
        if ((j == R->nbody - 1 || j == n - 1) && !same_tensor(&S->out, &R->out))
            return 0;
        char prefix[24];
        plan_sub_prefix(R, j, prefix, sizeof prefix);
        for (int q = 0; q < S->nparams; q++, k++) {
            char name[64];
            snprintf(name, sizeof name, "%s%s", prefix, S->param[q].name);
            if (k >= R->nparams || strcmp(name, R->param[k].name) != 0 || R->param[k].ndim != S->param[q].ndim ||
                R->param[k].count != S->param[q].count)
                return 0;
            for (int d = 0; d < S->param[q].ndim; d++)
                if (R->param[k].dim[d] != S->param[q].dim[d])
                    return 0;
        }
    }
    return k == R->nparams;
}

/* What a transformer_block and a llama_block share as the kernels read
 * them: a float [T, D] input, an output of the same shape, heads >= 1
 * dividing D, mlp >= 1, D^2 and F D within PLAN_MAX_ELEMS, and n
 * parameter tensors of the counts want(L) gives. */
static int block_shapes_ok(const PlanLayer *L, int n, void (*want)(const PlanLayer *L, int64_t *counts))
{
    if (L->heads < 1 || L->mlp < 1 || L->in.ndim != 2 || L->in.dtype != PLAN_F32 || L->out.ndim != 2 ||
        L->out.dim[0] != L->in.dim[0] || L->out.dim[1] != L->in.dim[1] || L->in.dim[1] % L->heads != 0 ||
        L->nparams != n)
        return 0;
    int64_t d = L->in.dim[1], counts[PLAN_MAX_PARAM_TENSORS];
    if (d > PLAN_MAX_ELEMS / d || L->mlp > PLAN_MAX_ELEMS / d)
        return 0;
    want(L, counts);
    for (int k = 0; k < n; k++)
        if (L->param[k].count != counts[k])
            return 0;
    return 1;
}

/* llama_block (k_llama.h): q, k, v, o, gate, up, down, the two norms */
static void llama_counts(const PlanLayer *L, int64_t *c)
{
    int64_t d = L->in.dim[1], dk = d / L->heads * L->kv_heads, f = L->mlp;
    const int64_t want[9] = {d * d, dk * d, dk * d, d * d, f * d, f * d, d * f, d, d};
    memcpy(c, want, sizeof want);
}

/* transformer_block (k_block.h): ln1 w b, qkv w b, proj w b, ln2 w b, fc
 * w b, mlp.proj w b */
static void block_counts(const PlanLayer *L, int64_t *c)
{
    int64_t d = L->in.dim[1], f = L->mlp;
    const int64_t want[12] = {d, d, 3 * d * d, 3 * d, d * d, d, d, d, f * d, f, d * f, d};
    memcpy(c, want, sizeof want);
}

/* A llama_block's sizes as the kernels rely on them: besides the shared
 * ones, even head widths, kv_heads dividing heads, rope_theta and eps > 0. */
static int llama_ok(const PlanLayer *L)
{
    return L->kv_heads >= 1 && L->heads >= 1 && L->heads % L->kv_heads == 0 && L->theta > 0 && L->eps > 0 &&
           L->in.ndim == 2 && L->in.dim[1] % L->heads == 0 && (L->in.dim[1] / L->heads) % 2 == 0 &&
           block_shapes_ok(L, 9, llama_counts);
}

/* One layer's record: layer i of m, or (sub) a sub-layer of residual
 * block i, whose tie and mask must be -1. */
static void get_layer(In *in, BaseArena *A, const PlanModel *m, PlanLayer *L, int i, int sub)
{
    L->index = i;
    L->kind = (PlanLayerKind)get_enum(in, PLAN_L_COUNT, "layer kind");
    L->label = get_str(in, A, 1, "layer label");
    int64_t *iv[] = {&L->nout, &L->vocab, &L->dim, &L->positions, &L->heads, &L->mlp, &L->kh,
                     &L->kw,   &L->sh,    &L->sw,  &L->ph,        &L->pw,    &L->oh,  &L->ow};
    for (size_t k = 0; k < sizeof iv / sizeof iv[0]; k++)
        *iv[k] = get_range(in, 0, PLAN_MAX_ELEMS, "a layer argument");
    L->p = get_f64(in);
    L->eps = get_f64(in);
    if (!in->bad && !(L->p >= 0 && L->p < 1 && L->eps >= 0 && L->eps < 1))
        bad(in, "layer %d: p %g or eps %g out of range", i, L->p, L->eps);
    L->bias = get_i32(in) != 0;
    L->causal = get_i32(in) != 0;
    L->tie = get_i32(in);
    L->mask = get_i32(in);
    if (!in->bad && (L->tie < -1 || L->tie >= m->nlayers || L->tie == i || L->mask < -1 || L->mask >= m->ninputs ||
                     (sub && (L->tie != -1 || L->mask != -1))))
        bad(in, "layer %d: tie %d or mask %d does not exist", i, L->tie, L->mask);
    if (!in->bad && L->kind == PLAN_L_TRANSFORMER_BLOCK && (L->heads < 1 || L->mlp < 1))
        bad(in, "layer %d: a transformer block with %lld heads", i, (long long)L->heads);
    get_tensor(in, &L->in, "a layer's input shape");
    get_tensor(in, &L->out, "a layer's output shape");
    L->params = get_range(in, 0, (int64_t)1 << 53, "parameters");
    L->held = get_range(in, 0, (int64_t)1 << 53, "parameters held");
    L->flops = get_range(in, 0, (int64_t)1 << 62, "FLOPs");
    L->act_bytes = get_range(in, 0, (int64_t)1 << 53, "activation bytes");
    L->init = (PlanInit)get_enum(in, PLAN_INIT_COUNT, "initialisation");
    L->init_std = get_f64(in);
    L->init_std_resid = get_f64(in);
    if (!in->bad && !(L->init_std >= 0 && L->init_std < 1e6 && L->init_std_resid >= 0 && L->init_std_resid < 1e6))
        bad(in, "layer %d: an initialisation std of %g", i, L->init_std);
    L->nparams = (int)get_count(in, PLAN_MAX_PARAM_TENSORS, 0, "parameter tensor");
    for (int k = 0; k < L->nparams && !in->bad; k++) {
        PlanParam *q = &L->param[k];
        const char *nm = get_str(in, A, 0, "parameter name");
        snprintf(q->name, sizeof q->name, "%s", nm ? nm : "");
        size_t at = in->at;
        uint32_t nd = get_u32(in);
        if (!in->bad && (nd < 1 || nd > PLAN_MAX_DIMS)) {
            in->at = at;
            bad(in, "layer %d parameter %d has %u dimensions", i, k, nd);
        }
        q->ndim = (int)nd;
        q->count = 1;
        for (int dd = 0; dd < PLAN_MAX_DIMS; dd++) {
            int64_t v = get_range(in, dd < q->ndim ? 1 : 0, dd < q->ndim ? PLAN_MAX_ELEMS : 0, "a parameter dimension");
            if (dd < q->ndim && !in->bad) {
                q->dim[dd] = v;
                if (v > PLAN_MAX_ELEMS / q->count)
                    bad(in, "layer %d parameter %d is larger than 2^40 elements", i, k);
                else
                    q->count *= v;
            }
        }
    }
}

/* What version 3 adds to a layer, checked: a reshape or transpose moves
 * its input's elements, a batchnorm2d matches its input (its buffers
 * follow from these: plan_layer_buffers); a layernorm or rmsnorm has a
 * last dimension to normalise over (its saved state is per row of it);
 * and a linear maps the last
 * dimension of an input that has one to nout (the memory planner and the
 * runtime read its input features there) */
static void check_layer(In *in, PlanLayer *L, int i)
{
    if (in->bad)
        return;
    if ((L->kind == PLAN_L_RESHAPE || L->kind == PLAN_L_TRANSPOSE) && !moves_ok(L))
        bad(in, "layer %d: a %s whose output does not match its input", i, plan_layer_names[L->kind]);
    else if (L->kind == PLAN_L_BATCHNORM2D &&
             !(L->in.ndim == 3 && L->nparams == 2 && L->param[0].ndim == 1 && L->param[1].ndim == 1 &&
               L->param[0].dim[0] == L->in.dim[0] && L->param[1].dim[0] == L->in.dim[0] && L->eps > 0))
        bad(in, "layer %d: a batchnorm2d that does not match its input", i);
    else if ((L->kind == PLAN_L_LAYERNORM || L->kind == PLAN_L_RMSNORM) && L->in.ndim < 1)
        bad(in, "layer %d: a %s of an input with no dimension to normalise over", i, plan_layer_names[L->kind]);
    else if (L->kind == PLAN_L_LINEAR && (L->in.ndim < 1 || L->out.ndim != L->in.ndim || L->nout < 1 ||
                                          L->out.dim[L->out.ndim - 1] != L->nout))
        bad(in, "layer %d: a linear whose output is not its input's last dimension mapped to %lld features", i,
            (long long)L->nout);
}

static void get_model(In *in, BaseArena *A, PlanModel *m)
{
    m->name = get_str(in, A, 0, "model name");
    m->nlayers = (int)get_count(in, PLAN_MAX_LAYERS, 64, "layer");
    m->ninputs = (int)get_count(in, PLAN_MAX_IO, 0, "input");
    m->ntargets = (int)get_count(in, PLAN_MAX_IO, 0, "target");
    m->loss = (PlanLossKind)get_enum(in, PLAN_LOSS_COUNT, "loss");
    if (!in->bad && (m->nlayers < 1 || m->ninputs < 1 || m->ntargets != 1))
        bad(in, "%d layers, %d inputs, %d targets", m->nlayers, m->ninputs, m->ntargets);
    for (int i = 0; i < m->ninputs + m->ntargets && !in->bad; i++) {
        PlanIO *io = i < m->ninputs ? &m->input[i] : &m->target[i - m->ninputs];
        io->name = get_str(in, A, 0, "input name");
        get_tensor(in, &io->t, "an input's shape");
        io->first_use = get_i32(in);
        io->last_use = get_i32(in);
        if (!in->bad && (io->first_use < -1 || io->first_use >= m->nlayers || io->last_use < -1 ||
                        io->last_use >= m->nlayers))
            bad(in, "input '%s' is used by a layer that does not exist", io->name);
    }
    m->layer = alloc(m->nlayers, sizeof *m->layer);
    for (int i = 0; i < m->nlayers && !in->bad; i++)
        get_layer(in, A, m, &m->layer[i], i, 0);
    m->total_params = get_range(in, 0, (int64_t)1 << 53, "total parameters");
    m->total_flops = get_range(in, 0, (int64_t)1 << 62, "total FLOPs");
    /* kv_heads and rope_theta per layer, then (version 3) momentum per
     * layer; a MODEL that ends at the totals reads 0 for all three, and is
     * then refused if it holds a llama_block or a batchnorm2d */
    int tail = !in->bad && in->at < in->n;
    if (tail)
        for (int i = 0; i < m->nlayers && !in->bad; i++) {
            PlanLayer *L = &m->layer[i];
            L->kv_heads = get_range(in, 0, PLAN_MAX_ELEMS, "kv_heads");
            L->theta = get_f64(in);
            if (!in->bad && !(L->theta >= 0 && L->theta <= 1e30))
                bad(in, "layer %d: rope_theta %g out of range", i, L->theta);
        }
    for (int i = 0; tail && i < m->nlayers && !in->bad; i++) {
        PlanLayer *L = &m->layer[i];
        L->momentum = get_f64(in);
        if (!in->bad && !(L->momentum >= 0 && L->momentum <= 1))
            bad(in, "layer %d: momentum %g out of range", i, L->momentum);
    }
    for (int i = 0; tail && i < m->nlayers && !in->bad; i++) {
        PlanLayer *L = &m->layer[i];
        L->axis_a = get_range(in, 0, PLAN_MAX_DIMS - 1, "a transpose dimension");
        L->axis_b = get_range(in, 0, PLAN_MAX_DIMS - 1, "a transpose dimension");
    }
    for (int i = 0; !tail && i < m->nlayers && !in->bad; i++)
        if (m->layer[i].kind == PLAN_L_BATCHNORM2D || m->layer[i].kind == PLAN_L_TRANSPOSE ||
            m->layer[i].kind == PLAN_L_RESIDUAL)
            bad(in, "layer %d: a %s without its %s", i, plan_layer_names[m->layer[i].kind],
                m->layer[i].kind == PLAN_L_TRANSPOSE ? "dimensions"
                : m->layer[i].kind == PLAN_L_RESIDUAL ? "layers" : "momentum");
    /* each residual block's sub-layers (version 3), each with its momentum
     * and transpose dimensions */
    for (int i = 0; tail && i < m->nlayers && !in->bad; i++) {
        PlanLayer *L = &m->layer[i];
        if (L->kind != PLAN_L_RESIDUAL)
            continue;
        L->nbody = (int)get_count(in, PLAN_MAX_SUBLAYERS, 0, "residual body layer");
        L->nshort = (int)get_count(in, PLAN_MAX_SUBLAYERS, 0, "residual shortcut layer");
        if (!in->bad && (L->nbody < 1 || L->nbody + L->nshort > PLAN_MAX_SUBLAYERS)) {
            bad(in, "layer %d: a residual block of %d + %d layers", i, L->nbody, L->nshort);
            break;
        }
        L->sub = alloc(L->nbody + L->nshort, sizeof *L->sub);
        for (int j = 0; j < L->nbody + L->nshort && !in->bad; j++) {
            PlanLayer *S = &L->sub[j];
            get_layer(in, A, m, S, i, 1);
            S->sub_pos = j + 1;
            S->momentum = get_f64(in);
            if (!in->bad && !(S->momentum >= 0 && S->momentum <= 1))
                bad(in, "layer %d: momentum %g out of range", i, S->momentum);
            S->axis_a = get_range(in, 0, PLAN_MAX_DIMS - 1, "a transpose dimension");
            S->axis_b = get_range(in, 0, PLAN_MAX_DIMS - 1, "a transpose dimension");
            check_layer(in, S, i);
            plan_layer_buffers(S);
        }
        if (!in->bad && !residual_ok(L))
            bad(in, "layer %d: a residual block whose layers' shapes or parameters do not add up", i);
    }
    /* the split linears and embeddings, in layer order: a linear with its
     * weight [out, in] and bias [out] as the runtime reads them (or, tied
     * and split by column, its bias only), an embedding by vocabulary */
    uint32_t nsplit = tail && !in->bad && in->at < in->n ? get_count(in, (uint32_t)m->nlayers, 8, "split linear") : 0;
    for (uint32_t k = 0, last = 0; k < nsplit && !in->bad; k++) {
        int i = get_i32(in), sp = get_i32(in);
        PlanLayer *L = i >= 0 && i < m->nlayers ? &m->layer[i] : NULL;
        int64_t fin = L && L->in.ndim > 0 ? L->in.dim[L->in.ndim - 1] : 0;
        int emb = L && L->kind == PLAN_L_EMBEDDING && sp == PLAN_EMBEDDING_VOCAB && L->nparams >= 1 &&
                  L->param[0].ndim == 2;
        int tied = L && L->kind == PLAN_L_LINEAR && L->tie >= 0 && sp == PLAN_LINEAR_COLUMN &&
                   L->nparams == (L->bias != 0) && (!L->bias || L->param[0].count == L->nout);
        if (!in->bad && !emb && !tied &&
            (!L || (k && (uint32_t)i <= last) || L->kind != PLAN_L_LINEAR || L->tie != -1 ||
             sp < PLAN_LINEAR_COLUMN || sp > PLAN_LINEAR_ROW || L->nparams != 1 + (L->bias != 0) ||
             L->param[0].ndim != 2 || L->param[0].dim[0] != L->nout || L->param[0].dim[1] != fin ||
             L->out.ndim != L->in.ndim || L->out.dim[L->out.ndim - 1] != L->nout ||
             (L->bias && L->param[1].count != L->nout)))
            bad(in, "split %u: layer %d is not a linear of its shapes (split 1 or 2; a tied one 1 only) or an "
                    "embedding (split 3), or split %d is neither", k, i, sp);
        else if (!in->bad && (emb || tied) && k && (uint32_t)i <= last)
            bad(in, "split %u: layer %d is out of order", k, i);
        else if (!in->bad)
            L->split = sp, last = (uint32_t)i;
    }
    /* a tie between a vocabulary-split embedding and a column-split linear
     * only, both cut the same way (the tied linear's weight is the
     * embedding's table, [vocab, dim], so its outputs are the vocabulary) */
    for (int i = 0; i < m->nlayers && !in->bad; i++) {
        const PlanLayer *L = &m->layer[i];
        if (L->kind != PLAN_L_LINEAR || L->tie < 0 || L->tie >= m->nlayers)
            continue;
        const PlanLayer *O = &m->layer[L->tie];
        int vocab = O->kind == PLAN_L_EMBEDDING && O->split == PLAN_EMBEDDING_VOCAB;
        if ((L->split == PLAN_LINEAR_COLUMN) != vocab || (O->kind == PLAN_L_LINEAR && O->split != PLAN_LINEAR_WHOLE))
            bad(in, "layer %d: tied to layer %d, split %d against its split %d (only a column-split linear ties to a "
                    "vocabulary-split embedding)", i, L->tie, L->split, O->split);
    }
    for (int i = 0; i < m->nlayers && !in->bad; i++) {
        check_layer(in, &m->layer[i], i);
        if (!in->bad && plan_layer_buffers(&m->layer[i]) != 0)
            bad(in, "layer %d: a residual block with more than %d buffers", i, PLAN_MAX_BUFFERS);
    }
    for (int i = 0; i < m->nlayers && !in->bad; i++)
        if (m->layer[i].kind == PLAN_L_TRANSFORMER_BLOCK && !block_shapes_ok(&m->layer[i], 12, block_counts))
            bad(in, "layer %d: a transformer block with %lld heads and mlp %lld that does not match its shapes", i,
                (long long)m->layer[i].heads, (long long)m->layer[i].mlp);
    for (int i = 0; i < m->nlayers && !in->bad; i++)
        if (m->layer[i].kind == PLAN_L_LLAMA_BLOCK && !llama_ok(&m->layer[i]))
            bad(in, "layer %d: a llama block with %lld heads, %lld kv heads, mlp %lld, rope_theta %g", i,
                (long long)m->layer[i].heads, (long long)m->layer[i].kv_heads, (long long)m->layer[i].mlp,
                m->layer[i].theta);
}

/* ---- CONFIG: the pipeline and train settings ----------------------------- */

static void put_config(Out *o, Out *S, const PlanConfig *c)
{
    put_i64(o, c->stages);
    put_i64(o, c->data_parallel);
    put_i64(o, c->micro_batches);
    put_i64(o, c->micro_batch_size);
    put_u32(o, c->schedule);
    put_i64(o, c->chunks);
    put_u32(o, c->place);
    put_str(o, S, c->schedule_file);
    put_u32(o, c->partition);
    put_str(o, S, c->partition_regex);
    put_u32(o, (uint32_t)c->npartition_list);
    for (int i = 0; i < c->npartition_list; i++)
        put_i64(o, c->partition_list[i]);
    put_i64(o, c->activation_checkpoint);
    put_f64(o, c->link_bandwidth);
    put_f64(o, c->device_tflops);
    put_u32(o, c->optimizer);
    double fv[] = {c->lr, c->momentum, c->beta1, c->beta2, c->eps, c->weight_decay};
    for (size_t k = 0; k < sizeof fv / sizeof fv[0]; k++)
        put_f64(o, fv[k]);
    put_i32(o, c->nesterov);
    put_i64(o, c->steps);
    put_u64(o, c->seed);
    put_data(o, S, &c->data);
    put_data(o, S, &c->eval_data);
    put_i32(o, c->shuffle);
    put_i64(o, c->eval_every);
    put_u32(o, c->lr_schedule);
    put_i64(o, c->warmup);
    put_f64(o, c->min_lr);
    put_f64(o, c->grad_clip);
    put_u32(o, c->precision);
    /* after precision, added without a version bump (docs/plan-format.md):
     * where the costs came from */
    put_str(o, S, c->costs_profile);
    put_i64(o, c->zero);
    put_i64(o, c->tensor_parallel); /* after zero, the same way */
}

static void get_config(In *in, BaseArena *A, PlanConfig *c)
{
    c->stages = get_range(in, 1, PLAN_MAX_STAGES, "stages");
    c->data_parallel = get_range(in, 0, 1 << 20, "data_parallel");
    c->micro_batches = get_range(in, 1, PLAN_MAX_MICRO_BATCHES, "micro_batches");
    c->micro_batch_size = get_range(in, 1, 1 << 20, "micro_batch_size");
    c->schedule = (PlanScheduleKind)get_enum(in, PLAN_SCHED_COUNT, "schedule");
    c->chunks = get_range(in, 1, PLAN_MAX_CHUNKS, "chunks");
    c->place = (SchedPlacement)get_enum(in, 2, "placement");
    c->schedule_file = get_str(in, A, 1, "schedule file");
    c->partition = (PlanPartitionKind)get_enum(in, PLAN_PART_COUNT, "partition");
    c->partition_regex = get_str(in, A, 1, "partition regex");
    c->npartition_list = (int)get_count(in, PLAN_MAX_STAGES, 8, "partition list entry");
    c->partition_list = alloc(c->npartition_list, sizeof *c->partition_list);
    for (int i = 0; i < c->npartition_list; i++)
        c->partition_list[i] = get_range(in, 0, PLAN_MAX_LAYERS, "a partition list entry");
    c->activation_checkpoint = get_range(in, 0, PLAN_MAX_LAYERS, "activation_checkpoint");
    c->link_bandwidth = get_f64(in);
    c->device_tflops = get_f64(in);
    c->optimizer = (PlanOptimizerKind)get_enum(in, PLAN_OPT_COUNT, "optimizer");
    double *fv[] = {&c->lr, &c->momentum, &c->beta1, &c->beta2, &c->eps, &c->weight_decay};
    for (size_t k = 0; k < sizeof fv / sizeof fv[0]; k++)
        *fv[k] = get_f64(in);
    c->nesterov = get_i32(in) != 0;
    c->steps = get_range(in, 0, (int64_t)1 << 40, "steps");
    c->seed = get_u64(in);
    get_data(in, A, &c->data);
    get_data(in, A, &c->eval_data);
    c->shuffle = get_i32(in) != 0;
    c->eval_every = get_range(in, 0, (int64_t)1 << 40, "eval_every");
    c->lr_schedule = (PlanLrKind)get_enum(in, PLAN_LR_COUNT, "lr_schedule");
    c->warmup = get_range(in, 0, (int64_t)1 << 40, "warmup");
    c->min_lr = get_f64(in);
    c->grad_clip = get_f64(in);
    c->precision = (PlanPrecision)get_enum(in, PLAN_PREC_COUNT, "precision");
    /* a plan written before it ends here: costs = flops */
    if (!in->bad && in->at < in->n) {
        c->costs_profile = get_str(in, A, 1, "costs profile");
        c->zero = get_range(in, 0, 1, "zero");
    }
    c->tensor_parallel = 1; /* a plan written before it: none */
    if (!in->bad && in->at < in->n)
        c->tensor_parallel = get_range(in, 1, PLAN_MAX_TP, "tensor_parallel");
    if (!in->bad && !(c->lr >= 0 && c->beta1 >= 0 && c->beta1 < 1 && c->beta2 >= 0 && c->beta2 < 1 &&
                     c->eps >= 0 && c->weight_decay >= 0 && c->momentum >= 0 && c->grad_clip >= 0 &&
                     c->min_lr >= 0 && c->link_bandwidth >= 0 && c->device_tflops > 0))
        bad(in, "an optimizer or simulator setting is out of range");
}

/* ---- PARTITION: the parts, their boundaries, the ties -------------------- */

static void put_partition(Out *o, Out *S, const PlanPartition *pt)
{
    put_u32(o, (uint32_t)pt->nparts);
    put_u32(o, (uint32_t)pt->stages);
    put_u32(o, (uint32_t)pt->chunks);
    for (int k = 0; k < pt->nparts; k++) {
        const PlanPart *q = &pt->part[k];
        put_i32(o, q->first), put_i32(o, q->last), put_i32(o, q->stage), put_i32(o, q->chunk);
        put_i64(o, q->params), put_i64(o, q->held), put_i64(o, q->flops), put_i64(o, q->cost);
    }
    for (int k = 0; k + 1 < pt->nparts; k++) {
        const PlanBoundary *b = &pt->bnd[k];
        put_u32(o, (uint32_t)b->nitems);
        put_i32(o, b->local);
        put_i64(o, b->bytes);
        for (int j = 0; j < b->nitems; j++) {
            put_str(o, S, b->item[j].name);
            put_tensor(o, &b->item[j].t);
            put_i64(o, b->item[j].bytes);
        }
    }
    put_u32(o, (uint32_t)pt->nties);
    for (int t = 0; t < pt->nties; t++)
        put_i32(o, pt->tie[t].layer), put_i32(o, pt->tie[t].owner), put_i32(o, pt->tie[t].cross_stage);
}

static void get_partition(In *in, BaseArena *A, const PlanModel *m, const PlanConfig *c, PlanPartition *pt)
{
    int S = (int)c->stages, V = (int)c->chunks, P = S * V;
    uint32_t np = get_u32(in), ns = get_u32(in), nc = get_u32(in);
    if (!in->bad && ((int)np != P || (int)ns != S || (int)nc != V || P > m->nlayers || P > PLAN_MAX_STAGES))
        bad(in, "%u parts on %u stages x %u chunks, for %d x %d and %d layers", np, ns, nc, S, V, m->nlayers);
    pt->nparts = in->bad ? 0 : P, pt->stages = S, pt->chunks = V;
    pt->part = alloc(pt->nparts, sizeof *pt->part);
    pt->bnd = alloc(pt->nparts, sizeof *pt->bnd);
    pt->stage_of_layer = alloc(m->nlayers, sizeof *pt->stage_of_layer);
    for (int k = 0; k < pt->nparts && !in->bad; k++) {
        PlanPart *q = &pt->part[k];
        q->first = get_i32(in), q->last = get_i32(in), q->stage = get_i32(in), q->chunk = get_i32(in);
        int st, ch;
        sched_place(c->place, S, k, &st, &ch);
        int want_first = k == 0 ? 0 : pt->part[k - 1].last + 1;
        if (!in->bad && (q->first != want_first || q->last < q->first || q->last >= m->nlayers || q->stage != st ||
                        q->chunk != ch || (k == P - 1 && q->last != m->nlayers - 1)))
            bad(in, "part %d (layers %d-%d on stage %d chunk %d) does not follow the partition", k, q->first,
                q->last, q->stage, q->chunk);
        /* at most 64 parts a stage: their sums stay below 2^62 */
        q->params = get_range(in, 0, (int64_t)1 << 56, "part parameters");
        q->held = get_range(in, 0, (int64_t)1 << 56, "part parameters held");
        q->flops = get_range(in, 0, (int64_t)1 << 56, "part FLOPs");
        q->cost = get_range(in, 0, (int64_t)1 << 56, "part cost");
        for (int i = q->first; !in->bad && i <= q->last; i++)
            pt->stage_of_layer[i] = q->stage;
    }
    for (int k = 0; k + 1 < pt->nparts && !in->bad; k++) {
        PlanBoundary *b = &pt->bnd[k];
        b->nitems = (int)get_count(in, 1 + PLAN_MAX_IO, 0, "boundary item");
        b->local = get_i32(in) != 0;
        b->bytes = get_range(in, 0, (int64_t)1 << 60, "boundary bytes");
        for (int j = 0; j < b->nitems && !in->bad; j++) {
            b->item[j].name = get_str(in, A, 0, "boundary item name");
            get_tensor(in, &b->item[j].t, "a boundary item's shape");
            b->item[j].bytes = get_range(in, 0, (int64_t)1 << 60, "boundary item bytes");
        }
    }
    pt->nties = (int)get_count(in, PLAN_MAX_LAYERS, 12, "tie");
    pt->tie = alloc(pt->nties, sizeof *pt->tie);
    for (int t = 0; t < pt->nties && !in->bad; t++) {
        pt->tie[t].layer = get_i32(in), pt->tie[t].owner = get_i32(in), pt->tie[t].cross_stage = get_i32(in);
        if (!in->bad && (pt->tie[t].layer < 0 || pt->tie[t].layer >= m->nlayers || pt->tie[t].owner < 0 ||
                        pt->tie[t].owner >= m->nlayers))
            bad(in, "tie %d names a layer that does not exist", t);
    }
}

/* ---- COSTS: what the simulator timed, per part ---------------------------- */

static void put_costs(Out *o, const PlanPartition *pt, const PlanSchedule *p)
{
    for (int k = 0; k < pt->nparts; k++) {
        put_f64(o, p->cost_f[k]), put_f64(o, p->cost_b[k]), put_f64(o, p->cost_i[k]), put_f64(o, p->cost_w[k]);
        put_f64(o, p->bytes_fwd[k]), put_f64(o, p->buf_bytes[k]);
    }
    for (int s = 0; s < pt->stages; s++)
        put_i32(o, p->tied_stage[s]);
    /* after the ties, added without a version bump (docs/plan-format.md):
     * a profile's optimizer time per stage and its links */
    for (int s = 0; s < pt->stages; s++)
        put_f64(o, p->cost_opt ? p->cost_opt[s] : 0);
    put_f64(o, p->link_latency);
    put_f64(o, p->link_bandwidth);
}

static void get_costs(In *in, int S, int P, PlanSchedule *p)
{
    p->cost_f = alloc(P, sizeof *p->cost_f), p->cost_b = alloc(P, sizeof *p->cost_b);
    p->cost_i = alloc(P, sizeof *p->cost_i), p->cost_w = alloc(P, sizeof *p->cost_w);
    p->bytes_fwd = alloc(P, sizeof *p->bytes_fwd), p->buf_bytes = alloc(P, sizeof *p->buf_bytes);
    p->tied_stage = alloc(S, sizeof *p->tied_stage);
    for (int k = 0; k < P && !in->bad; k++) {
        double *v[] = {&p->cost_f[k], &p->cost_b[k], &p->cost_i[k], &p->cost_w[k], &p->bytes_fwd[k], &p->buf_bytes[k]};
        for (int j = 0; j < 6; j++) {
            *v[j] = get_f64(in);
            if (!in->bad && !(*v[j] >= 0 && *v[j] < 1e30))
                bad(in, "part %d: a cost of %g", k, *v[j]);
        }
    }
    for (int s = 0; s < S && !in->bad; s++)
        p->tied_stage[s] = get_i32(in) != 0;
    /* a plan written before them ends here: no optimizer time, the
     * config's links */
    p->cost_opt = alloc(S, sizeof *p->cost_opt);
    if (!in->bad && in->at < in->n) {
        for (int s = 0; s < S && !in->bad; s++)
            p->cost_opt[s] = get_f64(in);
        p->link_latency = get_f64(in);
        p->link_bandwidth = get_f64(in);
        for (int s = 0; s < S && !in->bad; s++)
            if (!(p->cost_opt[s] >= 0 && p->cost_opt[s] < 1e30))
                bad(in, "stage %d: an optimizer cost of %g", s, p->cost_opt[s]);
        if (!in->bad && !(p->link_latency >= 0 && p->link_latency < 1e30 && p->link_bandwidth >= 0 &&
                          p->link_bandwidth < 1e30))
            bad(in, "a link latency of %g or bandwidth of %g", p->link_latency, p->link_bandwidth);
    }
}

/* ---- TRAIN, EVAL: the programs, 8 bytes an instruction ------------------
 *
 * One little-endian u64 an instruction, each operand in its own bits
 * (schedules/ops.def says which an instruction has):
 *   bits  0-5   op
 *        6-11   chunk                     (C; 0 without)
 *       12-27   mb                        (M; 0 without)
 *       28-43   buf                       (B; 0 without)
 *       44-60   peer + 1 (P) or link + 1 (L; 0: no link); 0 without
 *       61-63   0
 * The limits make every value fit: 64 chunks, 2^16 micro-batches (so
 * buffers and links are below 2^16), 4,096 stages. An operand an
 * instruction does not have reads back as the lowering writes it: chunk
 * 0, the others -1. Half the bytes of the in-memory record: the write,
 * the CRC and the page cache of a big plan halve with it. */

enum { F_CHUNK = 6, F_MB = 12, F_BUF = 28, F_ARG = 44, F_END = 61 };

/* mask[op]: the bits each of the 64 opcodes' operands (sched_op_operands)
 * may set beyond the opcode; an opcode past the last has none. Made once
 * a program, so that encoding an instruction looks one word up. */
static void operand_masks(uint64_t mask[64])
{
    for (unsigned op = 0; op < 64; op++) {
        unsigned o = op < SCHED_NOPS ? sched_op_operands[op] : 0;
        mask[op] = ((o & SCHED_C) ? (uint64_t)63u << F_CHUNK : 0) | ((o & SCHED_M) ? (uint64_t)0xffffu << F_MB : 0) |
                   ((o & SCHED_B) ? (uint64_t)0xffffu << F_BUF : 0) |
                   ((o & (SCHED_P | SCHED_L)) ? (uint64_t)0x1ffffu << F_ARG : 0);
    }
}

/* Every field in its place, then the ones op lacks masked off: no branch
 * per operand (a big plan's instructions are most of the write). peer and
 * link are one field in memory (sched.h), read here as peer. */
static uint64_t instr_bits(const SchedInstr *in, const uint64_t mask[64])
{
    uint64_t v = (uint64_t)in->chunk << F_CHUNK | (uint64_t)((uint32_t)in->mb & 0xffffu) << F_MB |
                 (uint64_t)((uint32_t)in->buf & 0xffffu) << F_BUF |
                 (uint64_t)(((uint32_t)in->peer + 1) & 0x1ffffu) << F_ARG;
    return (uint64_t)in->op | (v & mask[in->op]);
}

/* Where encoded bytes go: a file (fd >= 0) or memory (mem), with the
 * running CRC. Programs are encoded a block at a time into here on their
 * way out, never as a whole: a big plan's instructions are not copied
 * into fresh memory of their size before they are written. */
typedef struct Sink {
    int fd;
    unsigned char *mem;
    size_t at;
    uint32_t crc;
    int ok;
    size_t started; /* MiB of the file whose write-back has been started */
} Sink;

static void sink_put(Sink *k, const void *p, size_t n)
{
    if (!n || !k->ok)
        return;
    k->crc = base_crc32(k->crc, p, n);
    if (k->fd >= 0) {
        k->ok = base_write_all(k->fd, p, n) == 0;
#ifdef SYNC_FILE_RANGE_WRITE
        /* start the disk on each written MiB now, so that the fsync at
         * the end waits for the last of it only */
        size_t done = (HEADER + k->at + n) >> 20;
        if (k->ok && done > k->started) {
            sync_file_range(k->fd, (off_t)k->started << 20, (off_t)(done - k->started) << 20, SYNC_FILE_RANGE_WRITE);
            k->started = done;
        }
#endif
    } else
        memcpy(k->mem + k->at, p, n);
    k->at += n;
}

static size_t program_bytes(const SchedPlan *pl)
{
    size_t n = 20 + 4 * (size_t)pl->stages * pl->chunks;
    for (int s = 0; s < pl->stages; s++)
        n += 4 + 8 * (size_t)pl->prog[s].n;
    return n;
}

static void le32(unsigned char *b, uint32_t v)
{
    for (int k = 0; k < 4; k++)
        b[k] = (unsigned char)(v >> (8 * k));
}

static void stream_program(Sink *k, const SchedPlan *pl)
{
    /* instructions a write: a MiB (measured on deep.pipe's 4.5 MiB plan,
     * ext4: the writing thread's write time 6.8 -> 5.6 ms against 32 KiB
     * writes, fewer page-cache calls; 512 KiB and 2 MiB were slower) */
    enum { BLOCK = 131072 };
    unsigned char *b = base_realloc(NULL, 8 * BLOCK);
    size_t n = 0;
    uint64_t mask[64];
    operand_masks(mask);
    uint32_t head[5] = {(uint32_t)pl->stages, (uint32_t)pl->chunks, (uint32_t)pl->micro_batches, pl->place,
                        (uint32_t)pl->eval};
    for (int i = 0; i < 5; i++, n += 4)
        le32(b + n, head[i]);
    for (int i = 0; i < pl->stages * pl->chunks; i++, n += 4) {
        if (n + 4 > 8 * BLOCK)
            sink_put(k, b, n), n = 0;
        le32(b + n, (uint32_t)pl->nbuf[i]);
    }
    for (int s = 0; s < pl->stages; s++) {
        if (n + 4 > 8 * BLOCK)
            sink_put(k, b, n), n = 0;
        le32(b + n, (uint32_t)pl->prog[s].n);
        n += 4;
        for (int i = 0; i < pl->prog[s].n; i++, n += 8) {
            if (n + 8 > 8 * BLOCK)
                sink_put(k, b, n), n = 0;
            uint64_t v = instr_bits(&pl->prog[s].ins[i], mask);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            memcpy(b + n, &v, 8); /* the file's byte order: one store, not eight */
#else
            for (int j = 0; j < 8; j++)
                b[n + j] = (unsigned char)(v >> (8 * j));
#endif
        }
    }
    sink_put(k, b, n);
    free(b);
}

static void get_program(In *in, SchedPlan *pl, int stages, int chunks, int mbs, int eval)
{
    memset(pl, 0, sizeof *pl);
    uint32_t s = get_u32(in), c = get_u32(in), m = get_u32(in);
    if (!in->bad && ((int)s != stages || (int)c != chunks || (int)m != mbs)) {
        bad(in, "the program is for %u stages x %u chunks, %u micro-batches; the plan has %d x %d, %d", s, c, m,
            stages, chunks, mbs);
        return;
    }
    pl->stages = stages, pl->chunks = chunks, pl->micro_batches = mbs;
    pl->place = (SchedPlacement)get_enum(in, 2, "placement");
    if (!in->bad && pl->place != in->place)
        bad(in, "the program's placement differs from the settings'");
    pl->eval = (int)get_enum(in, 2, "eval flag");
    if (!in->bad && pl->eval != eval)
        bad(in, "the program's eval flag is %d", pl->eval);
    pl->prog = alloc(stages, sizeof *pl->prog);
    pl->nbuf = alloc((size_t)stages * chunks, sizeof *pl->nbuf);
    uint64_t mask[64];
    operand_masks(mask);
    for (int i = 0; i < stages * chunks && !in->bad; i++)
        pl->nbuf[i] = (int)get_count(in, (uint32_t)mbs < (1u << 24) ? (uint32_t)mbs : 1u << 24, 0,
                                     "buffer"); /* at most one a micro-batch: what memory sizes multiply */
    for (int st = 0; st < stages && !in->bad; st++) {
        uint32_t n = get_count(in, 1u << 30, 8, "instruction");
        SchedProgram *pr = &pl->prog[st];
        pr->ins = alloc(n, sizeof *pr->ins);
        pr->n = pr->cap = (int)n;
        for (uint32_t i = 0; i < n && !in->bad; i++) {
            unsigned char b[8];
            size_t at = in->at;
            take(in, b, 8);
            uint64_t v = 0;
            for (int k = 0; k < 8; k++)
                v |= (uint64_t)b[k] << (8 * k);
            SchedInstr *x = &pr->ins[i];
            x->op = (uint8_t)(v & 63u);
            if (in->bad)
                break;
            if (x->op >= SCHED_NOPS) {
                in->at = at;
                bad(in, "stage %d instruction %u: opcode %u is not an instruction", st, i, x->op);
                break;
            }
            unsigned o = sched_op_operands[x->op];
            x->chunk = (o & SCHED_C) ? (uint8_t)(v >> F_CHUNK & 63u) : 0;
            x->mb = (o & SCHED_M) ? (int32_t)(v >> F_MB & 0xffffu) : -1;
            x->buf = (o & SCHED_B) ? (int32_t)(v >> F_BUF & 0xffffu) : -1;
            uint32_t arg = (uint32_t)(v >> F_ARG & 0x1ffffu);
            x->peer = (o & (SCHED_P | SCHED_L)) ? (int32_t)arg - 1 : -1; /* or link: one field */
            if (instr_bits(x, mask) != v || ((o & SCHED_P) && arg > PLAN_MAX_STAGES)) {
                in->at = at;
                bad(in, "stage %d instruction %u (%s): bits set outside its operands, or a peer beyond %d stages", st,
                    i, sched_op_names[x->op], PLAN_MAX_STAGES);
            }
        }
    }
}

/* ---- the file: header, section table, sections ------------------------- */

/* The sections of a plan but the programs (encoded on the way out,
 * stream_program), and the header and section table before them. */
typedef struct Encoded {
    Out sec[SEC_COUNT];
    const SchedPlan *prog[SEC_COUNT]; /* TRAIN and EVAL */
    size_t bytes[SEC_COUNT];
    unsigned char head[HEADER + (SEC_COUNT - 1) * 24];
    size_t pad[SEC_COUNT];  /* zero bytes before section i */
    size_t total;
} Encoded;

static void encode(const PlanIR *ir, Encoded *e)
{
    memset(e, 0, sizeof *e);
    Out *sec = e->sec, *S = &sec[SEC_STRINGS];
    put_model(&sec[SEC_MODEL], S, &ir->model);
    put_config(&sec[SEC_CONFIG], S, &ir->cfg);
    put_partition(&sec[SEC_PARTITION], S, &ir->part);
    put_costs(&sec[SEC_COSTS], &ir->part, &ir->sched);
    e->prog[SEC_TRAIN] = &ir->sched.train;
    e->prog[SEC_EVAL] = &ir->sched.eval;
    put(S, "", 1); /* the section ends in a NUL, so every offset reads a terminated string */
    Out table = {0};
    uint64_t offset = HEADER + (uint64_t)(SEC_COUNT - 1) * 24;
    for (int i = 1; i < SEC_COUNT; i++) {
        e->bytes[i] = e->prog[i] ? program_bytes(e->prog[i]) : sec[i].n;
        uint64_t at = (offset + 7) & ~(uint64_t)7;
        e->pad[i] = (size_t)(at - offset);
        put_u32(&table, (uint32_t)i);
        put_u32(&table, 0);
        put_u64(&table, at);
        put_u64(&table, e->bytes[i]);
        offset = at + e->bytes[i];
    }
    e->total = (size_t)offset;
    Out h = {0};
    put(&h, "PIPEPLAN", 8);
    put_u32(&h, PLAN_VERSION);
    put_u32(&h, 0x01020304u);
    put_u32(&h, SEC_COUNT - 1);
    put_u32(&h, HEADER);
    put_u32(&h, 0); /* the CRC: emit fills it in */
    put_u32(&h, 0);
    put_u64(&h, e->total);
    memcpy(e->head, h.d, HEADER);
    memcpy(e->head + HEADER, table.d, table.n);
    free(h.d);
    free(table.d);
}

/* Everything after the header through k, then the CRC of it into the
 * header (the caller writes the header last). */
static void emit(Encoded *e, Sink *k)
{
    static const unsigned char zero[8];
    k->crc = 0;
    sink_put(k, e->head + HEADER, sizeof e->head - HEADER);
    for (int i = 1; i < SEC_COUNT; i++) {
        sink_put(k, zero, e->pad[i]);
        if (e->prog[i])
            stream_program(k, e->prog[i]);
        else
            sink_put(k, e->sec[i].d, e->sec[i].n);
    }
    le32(e->head + 24, (uint32_t)k->crc);
}

static void encoded_free(Encoded *e)
{
    for (int i = 1; i < SEC_COUNT; i++)
        free(e->sec[i].d);
}

void plan_encode(const PlanIR *ir, unsigned char **data, size_t *len)
{
    Encoded e;
    encode(ir, &e);
    unsigned char *d = malloc(e.total ? e.total : 1);
    if (!d) {
        fputs("pipe: out of memory\n", stderr);
        exit(2);
    }
    Sink k = {.fd = -1, .mem = d + HEADER, .ok = 1};
    emit(&e, &k);
    memcpy(d, e.head, HEADER);
    encoded_free(&e);
    *data = d;
    *len = HEADER + k.at;
}

struct PlanWriting {
    int fd, ok, errno_; /* the writes' and the fsync's outcome, and errno when one failed */
    const char *what;   /* "fsync: " when that failed */
    char *tmp, *path;
};

PlanWriting *plan_write_begin(const char *path, const PlanIR *ir, char *err, size_t errsize)
{
    Encoded e;
    encode(ir, &e);
    char *tmp = NULL;
    int fd = base_atomic_begin(path, &tmp, err, errsize);
    if (fd < 0) {
        encoded_free(&e);
        return NULL;
    }
    /* the header last, once the CRC is known */
    Sink k = {.fd = fd, .ok = lseek(fd, HEADER, SEEK_SET) == (off_t)HEADER};
    emit(&e, &k);
    PlanWriting *w = base_calloc(1, sizeof *w + strlen(path) + 1);
    w->fd = fd, w->tmp = tmp, w->path = (char *)(w + 1);
    w->ok = k.ok && pwrite(fd, e.head, HEADER, 0) == (ssize_t)HEADER;
    w->what = "";
    /* the data made durable here, on the writer's thread, while the
     * caller may still be checking the plan: plan_write_end only renames */
    if (w->ok && fsync(fd) != 0)
        w->ok = 0, w->what = "fsync: ";
    w->errno_ = errno;
    strcpy(w->path, path);
    encoded_free(&e);
    return w;
}

int plan_write_end(PlanWriting *w, int keep, char *err, size_t errsize)
{
    int rc = 0;
    if (keep) {
        errno = w->errno_;
        rc = base_atomic_finish_synced(w->fd, w->tmp, w->path, w->ok, w->what, err, errsize);
    } else {
        close(w->fd);
        unlink(w->tmp);
        free(w->tmp);
    }
    free(w);
    return rc;
}

int plan_write(const char *path, const PlanIR *ir, char *err, size_t errsize)
{
    PlanWriting *w = plan_write_begin(path, ir, err, errsize);
    return w ? plan_write_end(w, 1, err, errsize) : -1;
}

int plan_decode(const unsigned char *d, size_t len, PlanIR *ir, char *err, size_t errsize)
{
    memset(ir, 0, sizeof *ir);
    In in = {.d = d, .n = len, .err = err, .errsize = errsize};
    if (len < 8 || memcmp(d, "PIPEPLAN", 8) != 0) {
        snprintf(err, errsize, "not a pipe plan (no PIPEPLAN magic at offset 0)");
        return -1;
    }
    if (len < HEADER) {
        snprintf(err, errsize, "corrupted plan: header: the file is %zu bytes, shorter than the %d-byte header", len,
                 HEADER);
        return -1;
    }
    in.at = 8;
    uint32_t version = get_u32(&in);
    if (version != PLAN_VERSION) {
        snprintf(err, errsize, "plan version %u, this program reads %d (recompile the model with this pipec)", version,
                 PLAN_VERSION);
        return -1;
    }
    uint32_t probe = get_u32(&in), nsec = get_u32(&in), hdr = get_u32(&in), crc = get_u32(&in);
    get_u32(&in);
    uint64_t size = get_u64(&in);
    if (probe != 0x01020304u) {
        snprintf(err, errsize, "corrupted plan: header at offset 12: byte-order probe is 0x%08x, not 0x01020304", probe);
        return -1;
    }
    if (hdr != HEADER) {
        snprintf(err, errsize, "corrupted plan: header at offset 20: header size %u, not %d", hdr, HEADER);
        return -1;
    }
    if (size != len) {
        snprintf(err, errsize, "corrupted plan: header at offset 32: the file is %zu bytes, the header says %llu%s", len,
                 (unsigned long long)size, size > len ? " (truncated?)" : "");
        return -1;
    }
    uint32_t got = base_crc32(0, d + HEADER, len - HEADER);
    if (got != crc) {
        snprintf(err, errsize, "corrupted plan: checksum mismatch (CRC-32 0x%08x, header says 0x%08x)", got, crc);
        return -1;
    }
    if (nsec < SEC_COUNT - 1 || nsec > 64 || HEADER + (size_t)nsec * 24 > len) {
        snprintf(err, errsize, "corrupted plan: header at offset 16: %u sections", nsec);
        return -1;
    }
    size_t off[SEC_COUNT] = {0}, sz[SEC_COUNT] = {0};
    int have[SEC_COUNT] = {0};
    for (uint32_t i = 0; i < nsec; i++) {
        in.at = HEADER + (size_t)i * 24;
        uint32_t id = get_u32(&in);
        get_u32(&in);
        uint64_t o = get_u64(&in), n = get_u64(&in);
        if (o > len || n > len - o) {
            snprintf(err, errsize, "corrupted plan: section table at offset %u: section %u runs past the end of the file",
                     HEADER + i * 24, id);
            return -1;
        }
        if (id >= 1 && id < SEC_COUNT) {
            if (have[id]) {
                snprintf(err, errsize, "corrupted plan: section table: section %s twice", sec_names[id]);
                return -1;
            }
            have[id] = 1, off[id] = (size_t)o, sz[id] = (size_t)n;
        }
    }
    for (int i = 1; i < SEC_COUNT; i++)
        if (!have[i]) {
            snprintf(err, errsize, "corrupted plan: section %s is missing", sec_names[i]);
            return -1;
        }
    if (sz[SEC_STRINGS] == 0 || d[off[SEC_STRINGS] + sz[SEC_STRINGS] - 1] != '\0') {
        snprintf(err, errsize, "corrupted plan: section STRINGS at offset %zu: does not end in a NUL",
                 off[SEC_STRINGS]);
        return -1;
    }
    in.strs = (const char *)d + off[SEC_STRINGS];
    in.nstrs = sz[SEC_STRINGS];
#define SECTION(id) (in.d = d + off[id], in.n = sz[id], in.at = 0, in.base = off[id], in.sec = id)
    BaseArena *A = &ir->arena;
    PlanConfig *c = &ir->cfg;
    PlanSchedule *p = &ir->sched;
    SECTION(SEC_MODEL);
    get_model(&in, A, &ir->model);
    if (!in.bad) {
        SECTION(SEC_CONFIG);
        get_config(&in, A, c);
    }
    if (!in.bad) {
        /* the split blocks (plan_model_set_tp): T divides what it splits */
        plan_model_set_tp(&ir->model, c->tensor_parallel);
        for (int i = 0; i < ir->model.nlayers && !in.bad; i++) {
            int64_t v = 0;
            const char *what = plan_tp_misfit(&ir->model.layer[i], c->tensor_parallel, &v);
            if (what)
                bad(&in, "tensor_parallel = %lld does not divide layer %d's %s = %lld", (long long)c->tensor_parallel,
                    i, what, (long long)v);
        }
        /* and what the sizes multiply to fits in int64 */
        int at = -1;
        const char *why = in.bad ? NULL : plan_size_misfit(&ir->model, c, &at);
        if (why && at >= 0)
            bad(&in, "layer %d %s of %lld samples", at, why, (long long)c->micro_batch_size);
        else if (why)
            bad(&in, "the model %s", why);
    }
    /* a CONFIG that failed may hold the out-of-range value it failed on */
    int S = in.bad ? 0 : (int)c->stages, V = in.bad ? 0 : (int)c->chunks, P = S * V;
    int M = in.bad ? 0 : (int)c->micro_batches;
    if (!in.bad) {
        SECTION(SEC_PARTITION);
        get_partition(&in, A, &ir->model, c, &ir->part);
    }
    if (!in.bad) {
        SECTION(SEC_COSTS);
        get_costs(&in, S, P, p);
    }
    in.place = c->place;
    if (!in.bad) {
        SECTION(SEC_TRAIN);
        get_program(&in, &p->train, S, V, M, 0);
    }
    if (!in.bad) {
        SECTION(SEC_EVAL);
        get_program(&in, &p->eval, S, V, M, 1);
    }
    if (in.bad) {
        plan_ir_free(ir);
        return -1;
    }
    /* a read plan is for listing and running: no per-instruction timeline */
    p->costs = (SchedCosts){p->cost_f, p->cost_b, p->cost_i, p->cost_w, p->bytes_fwd,
                            p->link_bandwidth > 0 ? p->link_bandwidth : c->link_bandwidth * 1e9, p->buf_bytes, 1,
                            p->cost_opt, p->link_latency};
    p->parts = (SchedParts){S, V, M, c->place, p->tied_stage, c->grad_clip > 0};
    p->eval_parts = (SchedParts){S, V, M, c->place, NULL, 0};
    sched_verify(&p->train, &p->parts, &p->costs, &p->train_sim);
    sched_verify(&p->eval, &p->eval_parts, &p->costs, &p->eval_sim);
    if (!p->train_sim.ok || !p->eval_sim.ok) {
        snprintf(err, errsize, "corrupted plan: section %s: the program does not verify: %s",
                 p->train_sim.ok ? "EVAL" : "TRAIN", p->train_sim.ok ? p->eval_sim.error : p->train_sim.error);
        plan_ir_free(ir);
        return -1;
    }
    p->ok = 1;
    return 0;
}

int plan_read(const char *path, PlanIR *ir, char *err, size_t errsize)
{
    memset(ir, 0, sizeof *ir);
    unsigned char *d;
    size_t n;
    char why[256];
    BaseRead r = base_read_file(path, (size_t)1 << 32, &d, &n, why, sizeof why);
    if (r != BASE_READ_OK) {
        snprintf(err, errsize, "cannot %s '%s': %s", r == BASE_READ_CANNOT_OPEN ? "open" : "read", path, why);
        return -1;
    }
    char inner[1024];
    int rc = plan_decode(d, n, ir, inner, sizeof inner);
    free(d);
    if (rc != 0)
        snprintf(err, errsize, "%s: %s", path, inner);
    return rc;
}
