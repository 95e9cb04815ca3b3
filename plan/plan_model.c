/* plan/plan_model.c: the layer and loss tables (layers.def, losses.def)
 * and what every program needs of a tensor. */
#include "plan_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const plan_layer_names[PLAN_L_COUNT + 1] = {
#define PLAN_LAYER(id, name, sig, doc) name,
#include "layers.def"
#undef PLAN_LAYER
    NULL};
const char *const plan_layer_sigs[PLAN_L_COUNT] = {
#define PLAN_LAYER(id, name, sig, doc) sig,
#include "layers.def"
#undef PLAN_LAYER
};
const char *const plan_layer_docs[PLAN_L_COUNT] = {
#define PLAN_LAYER(id, name, sig, doc) doc,
#include "layers.def"
#undef PLAN_LAYER
};
const char *const plan_loss_names[PLAN_LOSS_COUNT + 1] = {
#define PLAN_LOSS(id, name, doc) name,
#include "losses.def"
#undef PLAN_LOSS
    NULL};
const char *const plan_loss_docs[PLAN_LOSS_COUNT] = {
#define PLAN_LOSS(id, name, doc) doc,
#include "losses.def"
#undef PLAN_LOSS
};

int64_t plan_dtype_size(PlanDtype d)
{
    return d == PLAN_F32 || d == PLAN_I32 ? 4 : 0;
}

const char *plan_dtype_name(PlanDtype d)
{
    return d == PLAN_F32 ? "float32" : "int32";
}

int64_t plan_tensor_elems(const PlanTensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->dim[i];
    return n;
}

static void add_buffer(PlanLayer *L, const char *name, int ndim, int64_t d0, int i64)
{
    PlanParam *b = &L->buffer[L->nbuffers++];
    memset(b, 0, sizeof *b);
    snprintf(b->name, sizeof b->name, "%s", name);
    b->ndim = ndim;
    b->dim[0] = ndim > 0 ? d0 : 0;
    b->count = ndim > 0 ? d0 : 1;
    b->i64 = i64;
}

int plan_layer_buffers(PlanLayer *L)
{
    L->nbuffers = 0;
    memset(L->buffer, 0, sizeof L->buffer);
    if (L->kind == PLAN_L_BATCHNORM2D && L->in.ndim == 3) {
        add_buffer(L, "running_mean", 1, L->in.dim[0], 0);
        add_buffer(L, "running_var", 1, L->in.dim[0], 0);
        add_buffer(L, "num_batches_tracked", 0, 0, 1);
    }
    /* a residual block: its layers' buffers, in order, under body.j. and
     * shortcut.j. (their own buffers set first) */
    for (int j = 0; L->kind == PLAN_L_RESIDUAL && L->sub && j < L->nbody + L->nshort; j++) {
        const PlanLayer *S = &L->sub[j];
        char prefix[24];
        plan_sub_prefix(L, j, prefix, sizeof prefix);
        for (int k = 0; k < S->nbuffers; k++) {
            if (L->nbuffers == PLAN_MAX_BUFFERS)
                return -1;
            PlanParam *b = &L->buffer[L->nbuffers++];
            *b = S->buffer[k];
            snprintf(b->name, sizeof b->name, "%s%s", prefix, S->buffer[k].name);
        }
    }
    return 0;
}

int64_t plan_layer_buffer_bytes(const PlanLayer *L)
{
    int64_t n = 0;
    for (int k = 0; k < L->nbuffers; k++)
        n += L->buffer[k].count * (L->buffer[k].i64 ? 8 : 4);
    return n;
}

void plan_tensor_text(const PlanTensor *t, int with_dtype, char *buf, size_t size)
{
    size_t n = 0;
    if (with_dtype)
        n += snprintf(buf + n, size - n, "%s", plan_dtype_name(t->dtype));
    n += snprintf(buf + n, size - n, "[");
    for (int i = 0; i < t->ndim && n < size; i++)
        n += snprintf(buf + n, size - n, "%s%lld", i ? ", " : "", (long long)t->dim[i]);
    if (n < size)
        snprintf(buf + n, size - n, "]");
}

void plan_layer_free_subs(PlanLayer *L)
{
    for (int j = 0; L->sub && j < L->nbody + L->nshort; j++)
        plan_layer_free_subs(&L->sub[j]);
    free(L->sub);
    L->sub = NULL;
}

uint32_t plan_layer_key(const PlanLayer *L)
{
    return (uint32_t)L->index + ((uint32_t)L->sub_pos << 17);
}

void plan_sub_prefix(const PlanLayer *R, int j, char *buf, size_t size)
{
    if (j < R->nbody)
        snprintf(buf, size, "body.%d.", j);
    else
        snprintf(buf, size, "shortcut.%d.", j - R->nbody);
}

void plan_model_free(PlanModel *m)
{
    for (int i = 0; m->layer && i < m->nlayers; i++)
        plan_layer_free_subs(&m->layer[i]);
    free(m->layer);
    memset(m, 0, sizeof *m);
}

/* ---- tensor parallelism ------------------------------------------------ */

const char *const plan_linear_split_names[4] = {"whole", "column", "row", "vocab"};

int plan_layer_split(const PlanLayer *L)
{
    return (L->kind == PLAN_L_LINEAR || L->kind == PLAN_L_EMBEDDING) && L->split != PLAN_LINEAR_WHOLE;
}

void plan_model_set_tp(PlanModel *m, int64_t T)
{
    for (int i = 0; i < m->nlayers; i++) {
        PlanLayer *L = &m->layer[i];
        int cut = L->kind == PLAN_L_TRANSFORMER_BLOCK || L->kind == PLAN_L_LLAMA_BLOCK || plan_layer_split(L);
        L->tp = cut && T > 1 ? T : 1;
    }
}

const char *plan_tp_misfit(const PlanLayer *L, int64_t T, int64_t *value)
{
    if (T <= 1)
        return NULL;
    if (L->kind == PLAN_L_LINEAR) {
        int64_t fin = L->in.ndim > 0 ? L->in.dim[L->in.ndim - 1] : 1;
        if (L->split == PLAN_LINEAR_COLUMN && L->nout % T)
            return *value = L->nout, "output features";
        if (L->split == PLAN_LINEAR_ROW && fin % T)
            return *value = fin, "input features";
        return NULL;
    }
    if (L->kind == PLAN_L_EMBEDDING && L->split == PLAN_EMBEDDING_VOCAB && L->nparams > 0 && L->param[0].dim[0] % T)
        return *value = L->param[0].dim[0], "vocabulary";
    if (L->kind != PLAN_L_TRANSFORMER_BLOCK && L->kind != PLAN_L_LLAMA_BLOCK)
        return NULL;
    if (L->heads % T)
        return *value = L->heads, "heads";
    if (L->kind == PLAN_L_LLAMA_BLOCK && L->kv_heads % T)
        return *value = L->kv_heads, "kv_heads";
    if (L->mlp % T)
        return *value = L->mlp, "mlp";
    return NULL;
}

PlanSplit plan_param_split(const PlanLayer *L, int k)
{
    if (L->tp <= 1)
        return PLAN_SPLIT_NONE;
    if (L->kind == PLAN_L_TRANSFORMER_BLOCK) {
        /* ln1 w b, qkv w b, proj w b, ln2 w b, fc w b, mlp.proj w b */
        static const PlanSplit s[12] = {PLAN_SPLIT_NONE, PLAN_SPLIT_NONE, PLAN_SPLIT_QKV,  PLAN_SPLIT_QKV,
                                        PLAN_SPLIT_COLS, PLAN_SPLIT_NONE, PLAN_SPLIT_NONE, PLAN_SPLIT_NONE,
                                        PLAN_SPLIT_ROWS, PLAN_SPLIT_ROWS, PLAN_SPLIT_COLS, PLAN_SPLIT_NONE};
        return k >= 0 && k < 12 ? s[k] : PLAN_SPLIT_NONE;
    }
    if (L->kind == PLAN_L_LLAMA_BLOCK) {
        /* q k v o, gate up down, the two norms */
        static const PlanSplit s[9] = {PLAN_SPLIT_ROWS, PLAN_SPLIT_ROWS, PLAN_SPLIT_ROWS,
                                       PLAN_SPLIT_COLS, PLAN_SPLIT_ROWS, PLAN_SPLIT_ROWS,
                                       PLAN_SPLIT_COLS, PLAN_SPLIT_NONE, PLAN_SPLIT_NONE};
        return k >= 0 && k < 9 ? s[k] : PLAN_SPLIT_NONE;
    }
    if (L->kind == PLAN_L_LINEAR && L->split == PLAN_LINEAR_COLUMN)
        return k <= 1 ? PLAN_SPLIT_ROWS : PLAN_SPLIT_NONE; /* weight [out, in] by rows, bias likewise */
    if (L->kind == PLAN_L_LINEAR && L->split == PLAN_LINEAR_ROW)
        return k == 0 ? PLAN_SPLIT_COLS : PLAN_SPLIT_NONE; /* weight by columns; bias whole */
    if (L->kind == PLAN_L_EMBEDDING && L->split == PLAN_EMBEDDING_VOCAB)
        return k == 0 ? PLAN_SPLIT_ROWS : PLAN_SPLIT_NONE; /* the token table by rows; positions whole */
    return PLAN_SPLIT_NONE;
}

int64_t plan_param_local(const PlanLayer *L, int k)
{
    int64_t n = L->param[k].count;
    return plan_param_split(L, k) == PLAN_SPLIT_NONE ? n : n / L->tp;
}

/* rank r's share of tensor k as runs of contiguous floats: count, length,
 * stride in the whole, offset of the first */
typedef struct Runs {
    int64_t n, len, stride, off;
} Runs;

static Runs runs_of(const PlanLayer *L, int k, int64_t r)
{
    const PlanParam *pp = &L->param[k];
    int64_t T = L->tp > 1 ? L->tp : 1;
    int64_t rows = pp->dim[0], cols = pp->ndim > 1 ? pp->count / rows : 1;
    Runs u = {1, pp->count, 0, 0};
    switch (plan_param_split(L, k)) {
    case PLAN_SPLIT_ROWS: u.len = rows / T * cols, u.off = r * u.len; break;
    case PLAN_SPLIT_QKV: u.n = 3, u.len = rows / 3 / T * cols, u.stride = rows / 3 * cols, u.off = r * u.len; break;
    case PLAN_SPLIT_COLS: u.n = rows, u.len = cols / T, u.stride = cols, u.off = r * u.len; break;
    case PLAN_SPLIT_NONE: break;
    }
    return u;
}

void plan_param_take(float *part, const float *whole, const PlanLayer *L, int k, int64_t r)
{
    Runs u = runs_of(L, k, r);
    for (int64_t i = 0; i < u.n; i++)
        memcpy(part + i * u.len, whole + u.off + i * u.stride, (size_t)u.len * sizeof(float));
}

void plan_param_put(float *whole, const float *part, const PlanLayer *L, int k, int64_t r)
{
    Runs u = runs_of(L, k, r);
    for (int64_t i = 0; i < u.n; i++)
        memcpy(whole + u.off + i * u.stride, part + i * u.len, (size_t)u.len * sizeof(float));
}
