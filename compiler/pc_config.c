/* compiler/pc_config.c: the pipeline and train keys, their defaults, and -D. */
#include "pc_config.h"

#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base_npy.h"
#include "plan_memory.h"
#include "plan_model.h"
#include "gr_parse.h"

static const char *const optimizer_sigs[PLAN_OPT_COUNT] = {
#define PLAN_OPTIMIZER(id, name, sig) sig,
#include "train.def"
#undef PLAN_OPTIMIZER
};
static const char *const data_sigs[PLAN_DATA_COUNT] = {
#define PLAN_DATA(id, name, sig) sig,
#include "train.def"
#undef PLAN_DATA
};
static const char *const lr_sigs[PLAN_LR_COUNT] = {
#define PLAN_LR_SCHEDULE(id, name, sig) sig,
#include "train.def"
#undef PLAN_LR_SCHEDULE
};

/* ---- value readers --------------------------------------------------- */

static void bad_value(DiagList *dl, const AstValue *v, const char *key, const char *want)
{
    char txt[64];
    pc_value_text(v, txt, sizeof txt);
    diag_error(dl, v->loc, "%s must be %s, not '%s'", key, want, txt);
}

static int read_int(DiagList *dl, const AstValue *v, const char *key, int64_t min, int64_t max, int64_t *out)
{
    if (v->kind != AST_INT) {
        bad_value(dl, v, key, "an integer");
        return -1;
    }
    if (v->i < min || v->i > max) {
        diag_error(dl, v->loc, "%s must be between %lld and %lld, not %lld", key, (long long)min, (long long)max,
                   (long long)v->i);
        return -1;
    }
    *out = v->i;
    return 0;
}

static int read_num(DiagList *dl, const AstValue *v, const char *key, double *out)
{
    if (v->kind == AST_INT)
        *out = (double)v->i;
    else if (v->kind == AST_FLOAT)
        *out = v->f;
    else {
        bad_value(dl, v, key, "a number");
        return -1;
    }
    return 0;
}

static int read_bool(DiagList *dl, const AstValue *v, const char *key, int *out)
{
    if (v->kind != AST_WORD || (strcmp(v->s, "true") && strcmp(v->s, "false"))) {
        bad_value(dl, v, key, "true or false");
        return -1;
    }
    *out = v->s[0] == 't';
    return 0;
}

/* A value naming one entry of a table, as a word (`1f1b`) or a call
 * (`interleaved(chunks = 2)`); binds the call's arguments. */
static int read_callee(DiagList *dl, const AstValue *v, const char *key, const char *const *names,
                       const char *const *sigs, int *kind, PcArgs *args)
{
    if (v->kind != AST_WORD && v->kind != AST_CALL) {
        char want[256];
        size_t n = snprintf(want, sizeof want, "one of");
        for (int i = 0; names[i] && n < sizeof want; i++)
            n += snprintf(want + n, sizeof want - n, "%s %s", i ? "," : "", names[i]);
        bad_value(dl, v, key, want);
        return -1;
    }
    *kind = -1;
    for (int i = 0; names[i]; i++)
        if (strcmp(names[i], v->s) == 0)
            *kind = i;
    if (*kind < 0) {
        const char *near = diag_nearest(v->s, names);
        char list[256];
        size_t n = 0;
        list[0] = '\0';
        for (int i = 0; names[i] && n < sizeof list; i++)
            n += snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", names[i]);
        if (near)
            diag_error(dl, v->loc, "unknown %s '%s'; did you mean '%s'?", key, v->s, near);
        else
            diag_error(dl, v->loc, "unknown %s '%s' (one of: %s)", key, v->s, list);
        return -1;
    }
    return pc_bind(dl, v->s, sigs[*kind], v->kind == AST_CALL ? &v->items : NULL, v->loc, args);
}

/* ---- keys ------------------------------------------------------------ */

typedef int (*KeyReader)(DiagList *, const AstValue *, PlanConfig *);

static int k_stages(DiagList *dl, const AstValue *v, PlanConfig *c)
{
    c->stages_loc = v->loc;
    return read_int(dl, v, "stages", 1, PLAN_MAX_STAGES, &c->stages);
}

static int k_data_parallel(DiagList *dl, const AstValue *v, PlanConfig *c)
{
    if (v->kind == AST_WORD && strcmp(v->s, "auto") == 0) {
        c->data_parallel = 0;
        return 0;
    }
    if (v->kind != AST_INT) {
        bad_value(dl, v, "data_parallel", "auto or a positive integer");
        return -1;
    }
    return read_int(dl, v, "data_parallel", 1, 1 << 20, &c->data_parallel);
}

static int k_tensor_parallel(DiagList *dl, const AstValue *v, PlanConfig *c)
{
    c->tp_loc = v->loc;
    return read_int(dl, v, "tensor_parallel", 1, PLAN_MAX_TP, &c->tensor_parallel);
}

static int k_micro_batches(DiagList *dl, const AstValue *v, PlanConfig *c)
{
    return read_int(dl, v, "micro_batches", 1, PLAN_MAX_MICRO_BATCHES, &c->micro_batches);
}

static int k_micro_batch_size(DiagList *dl, const AstValue *v, PlanConfig *c)
{
    return read_int(dl, v, "micro_batch_size", 1, 1 << 20, &c->micro_batch_size);
}

static int k_schedule(DiagList *dl, const AstValue *v, PlanConfig *c)
{
    int kind;
    PcArgs a;
    c->schedule_loc = v->loc;
    if (read_callee(dl, v, "schedule", plan_schedule_names, plan_schedule_sigs, &kind, &a) != 0)
        return -1;
    c->schedule = (PlanScheduleKind)kind;
    c->place = plan_schedule_place[kind];
    c->chunks = plan_schedule_place[kind] == SCHED_PLACE_V ? 2 : 1;
    c->schedule_file = NULL;
    for (int i = 0; i < a.n; i++) {
        if (strcmp(a.a[i].name, "chunks") == 0) {
            if (a.a[i].i[0] < 1 || a.a[i].i[0] > PLAN_MAX_CHUNKS) {
                diag_error(dl, a.a[i].loc, "chunks must be between 1 and %d, not %lld", PLAN_MAX_CHUNKS,
                           (long long)a.a[i].i[0]);
                return -1;
            }
            c->chunks = a.a[i].i[0];
        }
        if (strcmp(a.a[i].name, "path") == 0)
            c->schedule_file = a.a[i].s;
    }
    return 0;
}

static int k_partition(DiagList *dl, const AstValue *v, PlanConfig *c)
{
    c->partition_loc = v->loc;
    free(c->partition_list);
    c->partition_list = NULL;
    c->npartition_list = 0;
    if (v->kind == AST_WORD) {
        static const char *const words[] = {"uniform", "parameters", "flops", "time", NULL};
        static const PlanPartitionKind kinds[] = {PLAN_PART_UNIFORM, PLAN_PART_PARAMETERS, PLAN_PART_FLOPS,
                                                  PLAN_PART_TIME};
        for (int i = 0; words[i]; i++)
            if (strcmp(v->s, words[i]) == 0) {
                c->partition = kinds[i];
                return 0;
            }
        const char *near = diag_nearest(v->s, words);
        if (near)
            diag_error(dl, v->loc, "unknown partition '%s'; did you mean '%s'?", v->s, near);
        else
            diag_error(dl, v->loc, "unknown partition '%s' (uniform, parameters, flops, time, \"type:REGEX\" or a list)",
                       v->s);
        return -1;
    }
    if (v->kind == AST_STRING) {
        if (strncmp(v->s, "type:", 5) != 0) {
            diag_error(dl, v->loc, "a partition string must be \"type:REGEX\", not \"%.60s\"", v->s);
            return -1;
        }
        regex_t re;
        int rc = regcomp(&re, v->s + 5, REG_EXTENDED | REG_ICASE | REG_NOSUB);
        if (rc != 0) {
            char err[128];
            regerror(rc, &re, err, sizeof err);
            diag_error(dl, v->loc, "bad regular expression in partition \"%.60s\": %s", v->s, err);
            return -1;
        }
        regfree(&re);
        c->partition = PLAN_PART_TYPE;
        c->partition_regex = v->s + 5;
        return 0;
    }
    if (v->kind == AST_LIST) {
        if (v->items.n == 0) {
            diag_error(dl, v->loc, "a partition list needs the first layer of each part, e.g. [0, 12]");
            return -1;
        }
        c->partition_list = calloc(v->items.n, sizeof *c->partition_list);
        if (!c->partition_list) {
            fputs("pipe: out of memory\n", stderr);
            exit(2);
        }
        for (const AstArg *it = v->items.head; it; it = it->next) {
            const AstValue *x = it->value;
            if (x->kind != AST_INT || x->i < 0) {
                bad_value(dl, x, "a partition list entry", "a layer index");
                return -1;
            }
            int n = c->npartition_list;
            if (n == 0 && x->i != 0) {
                diag_error(dl, x->loc, "a partition list starts at layer 0 (the first part's first layer), not %lld",
                           (long long)x->i);
                return -1;
            }
            if (n > 0 && x->i <= c->partition_list[n - 1]) {
                diag_error(dl, x->loc, "partition list entries must increase: %lld follows %lld", (long long)x->i,
                           (long long)c->partition_list[n - 1]);
                return -1;
            }
            c->partition_list[c->npartition_list++] = x->i;
        }
        c->partition = PLAN_PART_LIST;
        return 0;
    }
    bad_value(dl, v, "partition", "uniform, parameters, flops, time, \"type:REGEX\" or a list of first layers");
    return -1;
}

static int k_activation_checkpoint(DiagList *dl, const AstValue *v, PlanConfig *c)
{
    return read_int(dl, v, "activation_checkpoint", 0, PLAN_MAX_STAGES * 64, &c->activation_checkpoint);
}

static int k_link_bandwidth(DiagList *dl, const AstValue *v, PlanConfig *c)
{
    if (read_num(dl, v, "link_bandwidth", &c->link_bandwidth) != 0)
        return -1;
    if (!(c->link_bandwidth > 0)) {
        diag_error(dl, v->loc, "link_bandwidth must be positive (GB/s); leave it out for free communication");
        return -1;
    }
    return 0;
}

static int k_device_tflops(DiagList *dl, const AstValue *v, PlanConfig *c)
{
    if (read_num(dl, v, "device_tflops", &c->device_tflops) != 0)
        return -1;
    if (!(c->device_tflops > 0)) {
        diag_error(dl, v->loc, "device_tflops must be positive (TFLOP/s)");
        return -1;
    }
    return 0;
}

/* costs = flops (FLOP estimates at device_tflops) or costs = profile("FILE")
 * (the times pipert --profile measured; read by pc_front once the model is
 * built, since it must fit the model) */
static int k_costs(DiagList *dl, const AstValue *v, PlanConfig *c)
{
    c->costs_loc = v->loc;
    if (v->kind == AST_WORD && strcmp(v->s, "flops") == 0) {
        c->costs_profile = NULL;
        return 0;
    }
    if (v->kind == AST_CALL && strcmp(v->s, "profile") == 0) {
        const AstArg *a = v->items.head;
        if (v->items.n != 1 || a->name || a->value->kind != AST_STRING || !a->value->s[0]) {
            diag_error(dl, v->loc, "profile(...) takes one file name: costs = profile(\"FILE.json\")");
            return -1;
        }
        c->costs_profile = a->value->s;
        return 0;
    }
    bad_value(dl, v, "costs", "flops or profile(\"FILE.json\") (a profile written by pipert --profile)");
    return -1;
}

/* `24 GiB` (a size: an integer, a space, a unit) or `24GiB` (one word). */
static int k_memory_limit(DiagList *dl, const AstValue *v, PlanConfig *c)
{
    static const struct {
        const char *unit;
        int shift;
    } units[] = {{"B", 0}, {"KiB", 10}, {"MiB", 20}, {"GiB", 30}, {"TiB", 40}};
    int64_t n = -1;
    const char *unit = NULL;
    char *end = NULL;
    if (v->kind == AST_SIZE) {
        n = v->i, unit = v->s;
    } else if (v->kind == AST_WORD && v->s[0] >= '0' && v->s[0] <= '9') {
        long long x = strtoll(v->s, &end, 10);
        if (x >= 0 && x <= (1LL << 53))
            n = x, unit = end;
    }
    int shift = -1;
    for (size_t i = 0; unit && i < sizeof units / sizeof units[0]; i++)
        if (strcmp(unit, units[i].unit) == 0)
            shift = units[i].shift;
    if (n < 1 || shift < 0 || n > (INT64_MAX >> shift)) {
        if (v->kind == AST_INT)
            diag_error(dl, v->loc, "memory_limit needs a unit: %lld KiB, MiB or GiB (e.g. memory_limit = 24 GiB)",
                       (long long)v->i);
        else
            bad_value(dl, v, "memory_limit", "a positive size with a unit: N KiB, N MiB or N GiB (e.g. 24 GiB)");
        return -1;
    }
    c->memory_limit = n << shift;
    c->memory_limit_loc = v->loc;
    return 0;
}

static int k_optimizer(DiagList *dl, const AstValue *v, PlanConfig *c)
{
    int kind;
    PcArgs a;
    if (read_callee(dl, v, "optimizer", plan_optimizer_names, optimizer_sigs, &kind, &a) != 0)
        return -1;
    c->optimizer = (PlanOptimizerKind)kind;
    c->momentum = 0, c->nesterov = 0, c->beta1 = 0.9, c->beta2 = 0.999, c->eps = 1e-8;
    for (int i = 0; i < a.n; i++) {
        const PcArg *x = &a.a[i];
        if (!strcmp(x->name, "lr"))
            c->lr = x->f[0];
        else if (!strcmp(x->name, "momentum"))
            c->momentum = x->f[0];
        else if (!strcmp(x->name, "weight_decay"))
            c->weight_decay = x->f[0];
        else if (!strcmp(x->name, "nesterov"))
            c->nesterov = (int)x->i[0];
        else if (!strcmp(x->name, "betas"))
            c->beta1 = x->f[0], c->beta2 = x->f[1];
        else if (!strcmp(x->name, "eps"))
            c->eps = x->f[0];
    }
    SrcLoc at = v->loc;
    if (!(c->lr >= 0)) {
        diag_error(dl, at, "lr must not be negative");
        return -1;
    }
    if (c->momentum < 0 || c->weight_decay < 0 || c->eps < 0) {
        diag_error(dl, at, "momentum, weight_decay and eps must not be negative");
        return -1;
    }
    if (!(c->beta1 >= 0 && c->beta1 < 1 && c->beta2 >= 0 && c->beta2 < 1)) {
        diag_error(dl, at, "betas must be in [0, 1)");
        return -1;
    }
    if (c->nesterov && c->momentum <= 0) {
        diag_error(dl, at, "nesterov needs momentum > 0 (as in PyTorch)");
        return -1;
    }
    return 0;
}

static int k_steps(DiagList *dl, const AstValue *v, PlanConfig *c)
{
    return read_int(dl, v, "steps", 0, (int64_t)1 << 40, &c->steps);
}

static int k_seed(DiagList *dl, const AstValue *v, PlanConfig *c)
{
    int64_t s;
    if (read_int(dl, v, "seed", 0, (int64_t)1 << 53, &s) != 0)
        return -1;
    c->seed = (uint64_t)s;
    return 0;
}

static int read_data(DiagList *dl, const AstValue *v, const char *key, PlanData *d)
{
    int kind;
    PcArgs a;
    if (read_callee(dl, v, key, plan_data_names, data_sigs, &kind, &a) != 0)
        return -1;
    memset(d, 0, sizeof *d);
    d->kind = (PlanDataKind)kind;
    d->set = 1;
    d->loc = v->loc;
    d->pad = -1;
    for (int i = 0; i < a.n; i++) {
        const PcArg *x = &a.a[i];
        if (!strcmp(x->name, "dir") || !strcmp(x->name, "images") || !strcmp(x->name, "file") ||
            !strcmp(x->name, "inputs"))
            d->path = x->s;
        else if (!strcmp(x->name, "labels") || !strcmp(x->name, "targets"))
            d->path2 = x->s;
        else if (!strcmp(x->name, "resize"))
            d->resize = x->i[0];
        else if (!strcmp(x->name, "pad") && x->set)
            d->pad = x->i[0];
        else if (!strcmp(x->name, "samples"))
            d->samples = x->i[0];
        if ((!strcmp(x->name, "resize") || !strcmp(x->name, "pad")) && x->set && x->i[0] < 0) {
            diag_error(dl, x->loc, "%s must not be negative", x->name);
            return -1;
        }
        if (!strcmp(x->name, "samples") && x->i[0] < 1) {
            diag_error(dl, x->loc, "samples must be at least 1");
            return -1;
        }
    }
    return 0;
}

static int k_data(DiagList *dl, const AstValue *v, PlanConfig *c)
{
    return read_data(dl, v, "data", &c->data);
}

static int k_eval_data(DiagList *dl, const AstValue *v, PlanConfig *c)
{
    return read_data(dl, v, "eval_data", &c->eval_data);
}

/* ---- data sources against the model ------------------------------------ */

/* What each source yields, checked here with the rules of runtime/rt_data.c
 * (its open_synthetic, open_idx, open_cifar, open_tokens), so that a
 * mismatch is a located compile error, not a refusal after mpirun starts.
 * Only what depends on files (image sizes, label values, token ids) is left
 * to the runtime. Keep the two in step. */

static int64_t data_vocab(const PlanModel *m)
{
    for (int i = 0; i < m->nlayers; i++)
        if (m->layer[i].kind == PLAN_L_EMBEDDING)
            return m->layer[i].vocab;
    return 0;
}

static int64_t data_classes(const PlanModel *m)
{
    if (m->nlayers < 1)
        return 0;
    const PlanTensor *o = &m->layer[m->nlayers - 1].out;
    return o->ndim > 0 ? o->dim[o->ndim - 1] : 0;
}

/* rt_data.c's is_mask: a float32 side input a block names (mask = NAME), or
 * one of shape [T] beside int32[T] token ids. */
static int data_is_mask(const PlanModel *m, int k)
{
    if (k <= 0 || k >= m->ninputs || m->input[k].t.dtype != PLAN_F32)
        return 0;
    for (int i = 0; i < m->nlayers; i++)
        if (m->layer[i].mask == k) /* a transformer_block's or llama_block's */
            return 1;
    const PlanTensor *x = &m->input[0].t, *t = &m->input[k].t;
    return x->dtype == PLAN_I32 && x->ndim == 1 && t->ndim == 1 && t->dim[0] == x->dim[0];
}

/* What a data error's note points at: a declaration of the model, or the
 * layer that settles the number. */
typedef struct DataNote {
    SrcLoc at;
    char text[160];
} DataNote;

static DataNote io_note(const char *what, const PlanIO *io)
{
    DataNote n = {io->loc, ""};
    snprintf(n.text, sizeof n.text, "%s '%s' is declared here", what, io->name);
    return n;
}

static DataNote layer_note(const PlanLayer *L, const char *what)
{
    DataNote n = {L->loc, ""};
    snprintf(n.text, sizeof n.text, "layer %d (%s) %s", L->index, plan_layer_names[L->kind], what);
    return n;
}

/* One error at the source's value, then the note; returns -1. */
static int data_error(DiagList *dl, SrcLoc at, DataNote note, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int data_error(DiagList *dl, SrcLoc at, DataNote note, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    diag_error(dl, at, "%s", msg);
    diag_note(dl, note.at, "%s", note.text);
    return -1;
}

/* idx and cifar10: one float32 image input; one int32[] class label under
 * loss cross_entropy. */
static int data_classifier(DiagList *dl, SrcLoc at, const char *key, const char *src, const PlanModel *m)
{
    char s[96];
    if (m->ninputs != 1)
        return data_error(dl, at, io_note("input", &m->input[1]),
                          "%s: %s(...) yields one input per sample (the image), but the model declares %d inputs", key,
                          src, m->ninputs);
    if (m->input[0].t.dtype != PLAN_F32) {
        plan_tensor_text(&m->input[0].t, 1, s, sizeof s);
        return data_error(dl, at, io_note("input", &m->input[0]),
                          "%s: %s(...) yields float32 images, but input '%s' is %s",
                          key, src, m->input[0].name, s);
    }
    const PlanTensor *y = &m->target[0].t;
    if (m->loss != PLAN_LOSS_CROSS_ENTROPY || y->dtype != PLAN_I32 || y->ndim != 0) {
        plan_tensor_text(y, 1, s, sizeof s);
        return data_error(dl, at, io_note("target", &m->target[0]),
                          "%s: %s(...) yields one integer class label per sample (target int32[] under loss "
                          "cross_entropy), but target '%s' is %s under loss %s",
                          key, src, m->target[0].name, s, plan_loss_names[m->loss]);
    }
    return 0;
}

/* npy(INPUTS, TARGETS): the two files' headers, read now (runtime/rt_data.c's
 * open_npy applies the same rules with base_npy_fits, then checks the
 * values: token ids and class labels). */
static int data_npy(DiagList *dl, SrcLoc at, const char *key, const PlanData *d, const PlanModel *m)
{
    char s[96], why[600], err[1400];
    if (m->ninputs != 1)
        return data_error(dl, at, io_note("input", &m->input[1]),
                          "%s: npy(...) yields one input per sample (the inputs file), but the model declares %d "
                          "inputs", key, m->ninputs);
    BaseNpy h[2];
    const char *path[2] = {d->path, d->path2};
    const PlanIO *io[2] = {&m->input[0], &m->target[0]};
    for (int k = 0; k < 2; k++) {
        if (base_npy_read_header(path[k], &h[k], err, sizeof err) != 0) {
            diag_error(dl, at, "%s: npy(...): %s", key, err);
            return -1;
        }
        const PlanTensor *t = &io[k]->t;
        if (base_npy_fits(&h[k], t->dtype == PLAN_I32, t->ndim, t->dim, why, sizeof why) != 0) {
            plan_tensor_text(t, 1, s, sizeof s);
            return data_error(dl, at, io_note(k ? "target" : "input", io[k]), "%s: npy(...): %s %s, but %s '%s' is %s",
                              key, path[k], why, k ? "target" : "input", io[k]->name, s);
        }
    }
    if (h[0].dim[0] != h[1].dim[0]) {
        diag_error(dl, at, "%s: npy(...): %s holds %lld samples, but %s holds %lld", key, path[1],
                   (long long)h[1].dim[0], path[0], (long long)h[0].dim[0]);
        return -1;
    }
    return 0;
}

static int check_source(DiagList *dl, const PlanData *d, const char *key, const PlanModel *m, int open_files)
{
    /* the default source has no place of its own: the model's, then */
    SrcLoc at = d->loc.line > 0 ? d->loc : m->loc;
    if (d->loc.line <= 0)
        key = "data (synthetic by default: set data = ...)";
    const char *src = plan_data_names[d->kind];
    char s[96];
    if (m->ninputs < 1 || m->ntargets != 1)
        return 0; /* the model's own checks have said so */
    switch (d->kind) {
    case PLAN_DATA_SYNTHETIC:
        for (int k = 0; k < m->ninputs; k++)
            if (m->input[k].t.dtype == PLAN_I32 && data_vocab(m) < 1) {
                plan_tensor_text(&m->input[k].t, 1, s, sizeof s);
                return data_error(dl, at, io_note("input", &m->input[k]),
                                  "%s: synthetic(...) fills int32 input '%s' (%s) with token ids below an embedding's "
                                  "vocab, but the model has no embedding layer",
                                  key, m->input[k].name, s);
            }
        if (m->target[0].t.dtype == PLAN_I32 && data_classes(m) < 1)
            return data_error(dl, at, io_note("target", &m->target[0]),
                              "%s: synthetic(...) fills target '%s' with class ids, but the model's output gives no "
                              "class count", key, m->target[0].name);
        return 0;
    case PLAN_DATA_IDX:
        return data_classifier(dl, at, key, src, m);
    case PLAN_DATA_CIFAR10: {
        if (data_classifier(dl, at, key, src, m) != 0)
            return -1;
        int64_t side = d->resize > 0 ? d->resize : 32;
        const PlanTensor *x = &m->input[0].t;
        if (x->ndim != 3 || x->dim[0] != 3 || x->dim[1] != side || x->dim[2] != side) {
            char how[64];
            if (d->resize > 0)
                snprintf(how, sizeof how, "resize = %lld", (long long)d->resize);
            else
                snprintf(how, sizeof how, "as stored; resize = N scales them");
            plan_tensor_text(x, 1, s, sizeof s);
            return data_error(dl, at, io_note("input", &m->input[0]),
                              "%s: cifar10(...) yields float32[3, %lld, %lld] images (%s), but input '%s' is %s", key,
                              (long long)side, (long long)side, how, m->input[0].name, s);
        }
        /* CIFAR-10's labels are 0-9: fewer classes refuse the first label of
         * class 9 or so at run time */
        if (data_classes(m) < 10)
            return data_error(dl, at, layer_note(&m->layer[m->nlayers - 1], "gives the output"),
                              "%s: cifar10(...) has 10 classes, but the model's output gives %lld (its last "
                              "dimension)", key, (long long)data_classes(m));
        return 0;
    }
    case PLAN_DATA_TOKENS: {
        const PlanTensor *x = &m->input[0].t, *y = &m->target[0].t;
        if (x->dtype != PLAN_I32 || x->ndim != 1) {
            plan_tensor_text(x, 1, s, sizeof s);
            return data_error(dl, at, io_note("input", &m->input[0]),
                              "%s: tokens(...) yields int32[T] token ids, but input '%s' is %s", key, m->input[0].name,
                              s);
        }
        int64_t T = x->dim[0];
        for (int k = 1; k < m->ninputs; k++)
            if (!data_is_mask(m, k)) {
                plan_tensor_text(&m->input[k].t, 1, s, sizeof s);
                return data_error(dl, at, io_note("input", &m->input[k]),
                                  "%s: tokens(...) yields only a float32[%lld] padding mask besides the token ids, but "
                                  "input '%s' is %s", key, (long long)T, m->input[k].name, s);
            }
        if (m->loss != PLAN_LOSS_CROSS_ENTROPY || y->dtype != PLAN_I32 || y->ndim != 1 || y->dim[0] != T) {
            plan_tensor_text(y, 1, s, sizeof s);
            return data_error(dl, at, io_note("target", &m->target[0]),
                              "%s: tokens(...) yields next-token targets int32[%lld] under loss cross_entropy, but "
                              "target '%s' is %s under loss %s",
                              key, (long long)T, m->target[0].name, s, plan_loss_names[m->loss]);
        }
        /* token ids are uint16 below the vocabulary: a pad id outside both
         * never occurs, and nothing would be masked */
        int64_t vocab = data_vocab(m), ids = vocab < 65536 ? vocab : 65536;
        const PlanLayer *emb = m->layer;
        while (emb->kind != PLAN_L_EMBEDDING)
            emb++; /* there is one: the int32 input's first layer */
        if (d->pad >= ids)
            return data_error(dl, at, layer_note(emb, "gives the vocabulary"),
                              "%s: pad = %lld can never occur: token ids are below %lld (%s)", key, (long long)d->pad,
                              (long long)ids, vocab < 65536 ? "the embedding's vocab" : "uint16 in the file");
        return 0;
    }
    case PLAN_DATA_NPY:
        return open_files ? data_npy(dl, at, key, d, m) : 0;
    default:
        return 0;
    }
}

/* tensor_parallel = T splits every transformer_block and llama_block over
 * T ranks (kernels/k_block.h, k_llama.h): T divides their heads, kv heads
 * and MLP widths; the other layers are whole on every rank. */
static int check_tensor_parallel(DiagList *dl, const PlanConfig *c, const PlanModel *m)
{
    int64_t T = c->tensor_parallel;
    if (T <= 1)
        return 0;
    int errors = 0, split = 0;
    for (int i = 0; i < m->nlayers; i++) {
        const PlanLayer *L = &m->layer[i];
        if (L->kind != PLAN_L_TRANSFORMER_BLOCK && L->kind != PLAN_L_LLAMA_BLOCK && !plan_layer_split(L))
            continue;
        split++;
        int64_t v = 0;
        const char *what = plan_tp_misfit(L, T, &v);
        if (what) {
            diag_error(dl, c->tp_loc.line ? c->tp_loc : L->loc,
                       "tensor_parallel = %lld does not divide layer %d's %s = %lld (%s, line %d): each of the "
                       "%lld ranks holds an equal share of %s",
                       (long long)T, i, what, (long long)v, plan_layer_names[L->kind], L->loc.line, (long long)T,
                       L->kind == PLAN_L_LINEAR      ? "the features it splits"
                       : L->kind == PLAN_L_EMBEDDING ? "the vocabulary's rows"
                                                     : "its heads, kv heads and MLP");
            errors++;
        }
    }
    if (!split && !errors)
        diag_warning(dl, c->tp_loc, "tensor_parallel = %lld, and the model has no transformer_block, llama_block, "
                     "or linear or embedding with a split: every rank of a stage computes the same", (long long)T);
    return errors;
}

int pc_config_check_data(DiagList *dl, const PlanConfig *c, const PlanModel *m, int open_files)
{
    int errors = 0;
    /* batchnorm2d normalises over a micro-batch: it needs more than one
     * value a channel (nn.BatchNorm2d's rule while training) */
    for (int i = 0; i < m->nlayers; i++) {
        const PlanLayer *L = &m->layer[i];
        if (L->kind == PLAN_L_BATCHNORM2D && L->in.ndim == 3 && c->micro_batch_size * L->in.dim[1] * L->in.dim[2] < 2) {
            diag_error(dl, L->loc, "layer %d (batchnorm2d): a micro-batch of %lld sample%s gives %lld value%s per "
                       "channel; training needs more than 1 (raise micro_batch_size)", i,
                       (long long)c->micro_batch_size, c->micro_batch_size == 1 ? "" : "s",
                       (long long)(c->micro_batch_size * L->in.dim[1] * L->in.dim[2]),
                       c->micro_batch_size * L->in.dim[1] * L->in.dim[2] == 1 ? "" : "s");
            errors++;
        }
    }
    int at = -1;
    const char *why = errors ? NULL : plan_size_misfit(m, c, &at);
    if (why && at >= 0) {
        diag_error(dl, m->layer[at].loc, "layer %d (%s) %s of %lld samples: more than any machine holds", at,
                   plan_layer_names[m->layer[at].kind], why, (long long)c->micro_batch_size);
        errors++;
    } else if (why) {
        diag_error(dl, m->loc, "the model %s: more than any machine holds", why);
        errors++;
    }
    errors += check_tensor_parallel(dl, c, m);
    errors += check_source(dl, &c->data, "data", m, open_files) != 0;
    if (c->eval_data.set)
        errors += check_source(dl, &c->eval_data, "eval_data", m, open_files) != 0;
    return errors ? -1 : 0;
}

static int k_shuffle(DiagList *dl, const AstValue *v, PlanConfig *c)
{
    return read_bool(dl, v, "shuffle", &c->shuffle);
}

static int k_eval_every(DiagList *dl, const AstValue *v, PlanConfig *c)
{
    return read_int(dl, v, "eval_every", 0, (int64_t)1 << 40, &c->eval_every);
}

static int k_lr_schedule(DiagList *dl, const AstValue *v, PlanConfig *c)
{
    int kind;
    PcArgs a;
    if (read_callee(dl, v, "lr_schedule", plan_lr_names, lr_sigs, &kind, &a) != 0)
        return -1;
    c->lr_schedule = (PlanLrKind)kind;
    for (int i = 0; i < a.n; i++) {
        if (!strcmp(a.a[i].name, "warmup")) {
            c->warmup = a.a[i].i[0];
            if (c->warmup < 0) {
                diag_error(dl, a.a[i].loc, "warmup must not be negative");
                return -1;
            }
        }
        if (!strcmp(a.a[i].name, "min_lr")) {
            c->min_lr = a.a[i].f[0];
            if (c->min_lr < 0) {
                diag_error(dl, a.a[i].loc, "min_lr must not be negative");
                return -1;
            }
        }
    }
    return 0;
}

static int k_grad_clip(DiagList *dl, const AstValue *v, PlanConfig *c)
{
    if (v->kind == AST_WORD && strcmp(v->s, "off") == 0) {
        c->grad_clip = 0;
        return 0;
    }
    if (v->kind != AST_INT && v->kind != AST_FLOAT) {
        bad_value(dl, v, "grad_clip", "off or a positive number (the largest global gradient norm)");
        return -1;
    }
    read_num(dl, v, "grad_clip", &c->grad_clip);
    if (!(c->grad_clip > 0)) {
        diag_error(dl, v->loc, "grad_clip must be positive, or off");
        return -1;
    }
    return 0;
}

static int k_precision(DiagList *dl, const AstValue *v, PlanConfig *c)
{
    if (v->kind == AST_WORD)
        for (int i = 0; i < PLAN_PREC_COUNT; i++)
            if (strcmp(v->s, plan_precision_names[i]) == 0) {
                c->precision = (PlanPrecision)i;
                return 0;
            }
    bad_value(dl, v, "precision", "fp32, tf32 or bf16");
    return -1;
}

static int k_zero(DiagList *dl, const AstValue *v, PlanConfig *c)
{
    return read_int(dl, v, "zero", 0, 1, &c->zero);
}

static const struct Key {
    const char *name;
    int block;
    KeyReader read;
} keys[] = {
    {"stages", AST_BLOCK_PIPELINE, k_stages},
    {"data_parallel", AST_BLOCK_PIPELINE, k_data_parallel},
    {"tensor_parallel", AST_BLOCK_PIPELINE, k_tensor_parallel},
    {"micro_batches", AST_BLOCK_PIPELINE, k_micro_batches},
    {"micro_batch_size", AST_BLOCK_PIPELINE, k_micro_batch_size},
    {"schedule", AST_BLOCK_PIPELINE, k_schedule},
    {"partition", AST_BLOCK_PIPELINE, k_partition},
    {"activation_checkpoint", AST_BLOCK_PIPELINE, k_activation_checkpoint},
    {"link_bandwidth", AST_BLOCK_PIPELINE, k_link_bandwidth},
    {"device_tflops", AST_BLOCK_PIPELINE, k_device_tflops},
    {"costs", AST_BLOCK_PIPELINE, k_costs},
    {"memory_limit", AST_BLOCK_PIPELINE, k_memory_limit},
    {"optimizer", AST_BLOCK_TRAIN, k_optimizer},
    {"steps", AST_BLOCK_TRAIN, k_steps},
    {"seed", AST_BLOCK_TRAIN, k_seed},
    {"data", AST_BLOCK_TRAIN, k_data},
    {"shuffle", AST_BLOCK_TRAIN, k_shuffle},
    {"eval_data", AST_BLOCK_TRAIN, k_eval_data},
    {"eval_every", AST_BLOCK_TRAIN, k_eval_every},
    {"lr_schedule", AST_BLOCK_TRAIN, k_lr_schedule},
    {"grad_clip", AST_BLOCK_TRAIN, k_grad_clip},
    {"precision", AST_BLOCK_TRAIN, k_precision},
    {"zero", AST_BLOCK_TRAIN, k_zero},
};
#define NKEYS ((int)(sizeof keys / sizeof keys[0]))

const char *pc_config_key_name(int i)
{
    return i >= 0 && i < NKEYS ? keys[i].name : NULL;
}

int pc_config_key_block(int i)
{
    return keys[i].block;
}

static int find_key(const char *name)
{
    for (int i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].name, name) == 0)
            return i;
    return -1;
}

static const char *block_name(int b)
{
    return b == AST_BLOCK_PIPELINE ? "pipeline" : "train";
}

static void unknown_key(DiagList *dl, SrcLoc loc, const char *name, int block)
{
    const char *names[NKEYS + 1];
    int n = 0;
    for (int i = 0; i < NKEYS; i++)
        if (keys[i].block == block || block < 0)
            names[n++] = keys[i].name;
    names[n] = NULL;
    const char *near = diag_nearest(name, names);
    const char *where = block < 0 ? "" : block_name(block);
    if (near)
        diag_error(dl, loc, "unknown %s%skey '%s'; did you mean '%s'?", where, *where ? " " : "", name, near);
    else
        diag_error(dl, loc, "unknown %s%skey '%s'", where, *where ? " " : "", name);
}

static int read_block(DiagList *dl, const AstBlock *b, PlanConfig *c)
{
    if (!b)
        return 0;
    int errors = 0;
    const AstStmt *seen[NKEYS] = {0};
    for (const AstStmt *s = b->stmts; s; s = s->next) {
        int k = find_key(s->name);
        if (k < 0) {
            unknown_key(dl, s->loc, s->name, b->kind);
            errors++;
            continue;
        }
        if (keys[k].block != (int)b->kind) {
            diag_error(dl, s->loc, "'%s' belongs in the %s block, not the %s block", s->name,
                       block_name(keys[k].block), block_name(b->kind));
            errors++;
            continue;
        }
        if (seen[k]) {
            diag_error(dl, s->loc, "'%s' is already set on line %d", s->name, seen[k]->loc.line);
            errors++;
            continue;
        }
        seen[k] = s;
        errors += keys[k].read(dl, s->value, c) != 0;
    }
    return errors;
}

int pc_config_read(DiagList *dl, const AstBlock *pipeline, const AstBlock *train, PlanConfig *c)
{
    memset(c, 0, sizeof *c);
    c->stages = 1;
    c->data_parallel = 0;
    c->tensor_parallel = 1;
    c->micro_batches = 1;
    c->micro_batch_size = 1;
    c->schedule = PLAN_SCHED_ONE_F_ONE_B;
    c->chunks = 1;
    c->place = SCHED_PLACE_LOOP;
    c->device_tflops = 100;
    c->partition = PLAN_PART_UNIFORM;
    c->optimizer = PLAN_OPT_SGD;
    c->lr = 0.01;
    c->beta1 = 0.9, c->beta2 = 0.999, c->eps = 1e-8;
    c->steps = 100;
    c->seed = 0;
    c->data.kind = PLAN_DATA_SYNTHETIC;
    c->data.samples = 1024;
    c->data.pad = -1;
    c->data.set = 1;
    c->eval_data.pad = -1;
    c->shuffle = 1;
    c->lr_schedule = PLAN_LR_CONSTANT;
    c->precision = PLAN_PREC_FP32;
    int errors = read_block(dl, pipeline, c) + read_block(dl, train, c);
    if (!errors && c->schedule != PLAN_SCHED_FILE && c->partition == PLAN_PART_LIST &&
        c->npartition_list != c->stages * c->chunks) {
        diag_error(dl, c->partition_loc,
                   "the partition list has %d entr%s, but %lld stage%s x %lld chunk%s need %lld (one first layer per part)",
                   c->npartition_list, c->npartition_list == 1 ? "y" : "ies", (long long)c->stages,
                   c->stages == 1 ? "" : "s", (long long)c->chunks, c->chunks == 1 ? "" : "s",
                   (long long)(c->stages * c->chunks));
        errors++;
    }
    if (!errors && c->stages * c->chunks > PLAN_MAX_STAGES) {
        diag_error(dl, c->stages_loc, "%lld stages x %lld chunks is more than %d model parts", (long long)c->stages,
                   (long long)c->chunks, PLAN_MAX_STAGES);
        errors++;
    }
    return errors ? -1 : 0;
}

int pc_config_override(BaseArena *arena, DiagList *dl, AstFile *file, const char *kv)
{
    while (*kv == ' ')
        kv++;
    const char *eq = strchr(kv, '=');
    SrcLoc none = {-1, 0, 0};
    if (!eq || eq == kv) {
        diag_error(dl, none, "-D needs key=value, not '%s'", kv);
        return -1;
    }
    char key[64];
    size_t klen = (size_t)(eq - kv);
    while (klen > 0 && kv[klen - 1] == ' ')
        klen--;
    if (klen >= sizeof key) {
        diag_error(dl, none, "-D: key too long");
        return -1;
    }
    memcpy(key, kv, klen);
    key[klen] = '\0';
    int k = find_key(key);
    if (k < 0) {
        unknown_key(dl, none, key, -1);
        return -1;
    }
    char name[96];
    snprintf(name, sizeof name, "-D %s", key);
    int src = diag_add_source(dl, name, eq + 1, strlen(eq + 1));
    AstValue *v;
    if (gr_parse_value(arena, dl, src, &v) != 0)
        return -1;
    AstBlock *blk = NULL, *last = NULL;
    for (AstBlock *b = file->blocks; b; b = b->next) {
        if ((int)b->kind == keys[k].block && !blk)
            blk = b;
        last = b;
    }
    if (!blk) {
        blk = base_arena_alloc(arena, sizeof *blk);
        blk->kind = (AstBlockKind)keys[k].block;
        blk->loc = (SrcLoc){src, 1, 1};
        if (last)
            last->next = blk;
        else
            file->blocks = blk;
    }
    AstStmt *tail = NULL;
    for (AstStmt *s = blk->stmts; s; s = s->next) {
        if (strcmp(s->name, key) == 0) {
            s->value = v; /* the command line wins over the file */
            return 0;
        }
        tail = s;
    }
    AstStmt *s = base_arena_alloc(arena, sizeof *s);
    s->kind = AST_ASSIGN;
    s->loc = s->name_loc = (SrcLoc){src, 1, 1};
    s->name = base_arena_strdup(arena, key, strlen(key));
    s->value = v;
    if (tail)
        tail->next = s;
    else
        blk->stmts = s;
    return 0;
}
