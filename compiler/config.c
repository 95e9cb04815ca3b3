/* compiler/config.c: the pipeline and train keys, their defaults, and -D. */
#include "config.h"

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parse.h"

const char *const pc_schedule_names[PC_SCHED_COUNT + 1] = {
#define PC_SCHEDULE(id, name, sig, place, split, gen, doc) name,
#include "schedules.def"
#undef PC_SCHEDULE
    NULL};
const char *const pc_schedule_sigs[PC_SCHED_COUNT] = {
#define PC_SCHEDULE(id, name, sig, place, split, gen, doc) sig,
#include "schedules.def"
#undef PC_SCHEDULE
};
const char *const pc_schedule_docs[PC_SCHED_COUNT] = {
#define PC_SCHEDULE(id, name, sig, place, split, gen, doc) doc,
#include "schedules.def"
#undef PC_SCHEDULE
};
const SchedPlacement pc_schedule_place[PC_SCHED_COUNT] = {
#define PC_SCHEDULE(id, name, sig, place, split, gen, doc) SCHED_PLACE_##place,
#include "schedules.def"
#undef PC_SCHEDULE
};
static const char *const optimizer_sigs[PC_OPT_COUNT] = {
#define PC_OPTIMIZER(id, name, sig) sig,
#include "train.def"
#undef PC_OPTIMIZER
};
const char *const pc_optimizer_names[PC_OPT_COUNT + 1] = {
#define PC_OPTIMIZER(id, name, sig) name,
#include "train.def"
#undef PC_OPTIMIZER
    NULL};
static const char *const data_sigs[PC_DATA_COUNT] = {
#define PC_DATA(id, name, sig) sig,
#include "train.def"
#undef PC_DATA
};
const char *const pc_data_names[PC_DATA_COUNT + 1] = {
#define PC_DATA(id, name, sig) name,
#include "train.def"
#undef PC_DATA
    NULL};
static const char *const lr_sigs[PC_LR_COUNT] = {
#define PC_LR_SCHEDULE(id, name, sig) sig,
#include "train.def"
#undef PC_LR_SCHEDULE
};
const char *const pc_lr_names[PC_LR_COUNT + 1] = {
#define PC_LR_SCHEDULE(id, name, sig) name,
#include "train.def"
#undef PC_LR_SCHEDULE
    NULL};
const char *const pc_precision_names[PC_PREC_COUNT + 1] = {
#define PC_PRECISION(id, name) name,
#include "train.def"
#undef PC_PRECISION
    NULL};
const char *const pc_partition_names[] = {"uniform", "parameters", "flops", "type:REGEX", "[list]", NULL};

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

typedef int (*KeyReader)(DiagList *, const AstValue *, PcConfig *);

static int k_stages(DiagList *dl, const AstValue *v, PcConfig *c)
{
    c->stages_loc = v->loc;
    return read_int(dl, v, "stages", 1, PC_MAX_STAGES, &c->stages);
}

static int k_data_parallel(DiagList *dl, const AstValue *v, PcConfig *c)
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

static int k_micro_batches(DiagList *dl, const AstValue *v, PcConfig *c)
{
    return read_int(dl, v, "micro_batches", 1, PC_MAX_MICRO_BATCHES, &c->micro_batches);
}

static int k_micro_batch_size(DiagList *dl, const AstValue *v, PcConfig *c)
{
    return read_int(dl, v, "micro_batch_size", 1, 1 << 20, &c->micro_batch_size);
}

static int k_schedule(DiagList *dl, const AstValue *v, PcConfig *c)
{
    int kind;
    PcArgs a;
    c->schedule_loc = v->loc;
    if (read_callee(dl, v, "schedule", pc_schedule_names, pc_schedule_sigs, &kind, &a) != 0)
        return -1;
    c->schedule = (PcScheduleKind)kind;
    c->place = pc_schedule_place[kind];
    c->chunks = pc_schedule_place[kind] == SCHED_PLACE_V ? 2 : 1;
    c->schedule_file = NULL;
    for (int i = 0; i < a.n; i++) {
        if (strcmp(a.a[i].name, "chunks") == 0) {
            if (a.a[i].i[0] < 1 || a.a[i].i[0] > PC_MAX_CHUNKS) {
                diag_error(dl, a.a[i].loc, "chunks must be between 1 and %d, not %lld", PC_MAX_CHUNKS,
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

static int k_partition(DiagList *dl, const AstValue *v, PcConfig *c)
{
    c->partition_loc = v->loc;
    free(c->partition_list);
    c->partition_list = NULL;
    c->npartition_list = 0;
    if (v->kind == AST_WORD) {
        static const char *const words[] = {"uniform", "parameters", "flops", NULL};
        for (int i = 0; words[i]; i++)
            if (strcmp(v->s, words[i]) == 0) {
                c->partition = (PcPartitionKind)i;
                return 0;
            }
        const char *near = diag_nearest(v->s, words);
        if (near)
            diag_error(dl, v->loc, "unknown partition '%s'; did you mean '%s'?", v->s, near);
        else
            diag_error(dl, v->loc, "unknown partition '%s' (uniform, parameters, flops, \"type:REGEX\" or a list)", v->s);
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
        c->partition = PC_PART_TYPE;
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
        c->partition = PC_PART_LIST;
        return 0;
    }
    bad_value(dl, v, "partition", "uniform, parameters, flops, \"type:REGEX\" or a list of first layers");
    return -1;
}

static int k_activation_checkpoint(DiagList *dl, const AstValue *v, PcConfig *c)
{
    return read_int(dl, v, "activation_checkpoint", 0, PC_MAX_STAGES * 64, &c->activation_checkpoint);
}

static int k_link_bandwidth(DiagList *dl, const AstValue *v, PcConfig *c)
{
    if (read_num(dl, v, "link_bandwidth", &c->link_bandwidth) != 0)
        return -1;
    if (!(c->link_bandwidth > 0)) {
        diag_error(dl, v->loc, "link_bandwidth must be positive (GB/s); leave it out for free communication");
        return -1;
    }
    return 0;
}

static int k_device_tflops(DiagList *dl, const AstValue *v, PcConfig *c)
{
    if (read_num(dl, v, "device_tflops", &c->device_tflops) != 0)
        return -1;
    if (!(c->device_tflops > 0)) {
        diag_error(dl, v->loc, "device_tflops must be positive (TFLOP/s)");
        return -1;
    }
    return 0;
}

/* `24 GiB` (a size: an integer, a space, a unit) or `24GiB` (one word). */
static int k_memory_limit(DiagList *dl, const AstValue *v, PcConfig *c)
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

static int k_optimizer(DiagList *dl, const AstValue *v, PcConfig *c)
{
    int kind;
    PcArgs a;
    if (read_callee(dl, v, "optimizer", pc_optimizer_names, optimizer_sigs, &kind, &a) != 0)
        return -1;
    c->optimizer = (PcOptimizerKind)kind;
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

static int k_steps(DiagList *dl, const AstValue *v, PcConfig *c)
{
    return read_int(dl, v, "steps", 0, (int64_t)1 << 40, &c->steps);
}

static int k_seed(DiagList *dl, const AstValue *v, PcConfig *c)
{
    int64_t s;
    if (read_int(dl, v, "seed", 0, (int64_t)1 << 53, &s) != 0)
        return -1;
    c->seed = (uint64_t)s;
    return 0;
}

static int read_data(DiagList *dl, const AstValue *v, const char *key, PcData *d)
{
    int kind;
    PcArgs a;
    if (read_callee(dl, v, key, pc_data_names, data_sigs, &kind, &a) != 0)
        return -1;
    memset(d, 0, sizeof *d);
    d->kind = (PcDataKind)kind;
    d->set = 1;
    d->loc = v->loc;
    d->pad = -1;
    for (int i = 0; i < a.n; i++) {
        const PcArg *x = &a.a[i];
        if (!strcmp(x->name, "dir") || !strcmp(x->name, "images") || !strcmp(x->name, "file"))
            d->path = x->s;
        else if (!strcmp(x->name, "labels"))
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

static int k_data(DiagList *dl, const AstValue *v, PcConfig *c)
{
    return read_data(dl, v, "data", &c->data);
}

static int k_eval_data(DiagList *dl, const AstValue *v, PcConfig *c)
{
    return read_data(dl, v, "eval_data", &c->eval_data);
}

static int k_shuffle(DiagList *dl, const AstValue *v, PcConfig *c)
{
    return read_bool(dl, v, "shuffle", &c->shuffle);
}

static int k_eval_every(DiagList *dl, const AstValue *v, PcConfig *c)
{
    return read_int(dl, v, "eval_every", 0, (int64_t)1 << 40, &c->eval_every);
}

static int k_lr_schedule(DiagList *dl, const AstValue *v, PcConfig *c)
{
    int kind;
    PcArgs a;
    if (read_callee(dl, v, "lr_schedule", pc_lr_names, lr_sigs, &kind, &a) != 0)
        return -1;
    c->lr_schedule = (PcLrKind)kind;
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

static int k_grad_clip(DiagList *dl, const AstValue *v, PcConfig *c)
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

static int k_precision(DiagList *dl, const AstValue *v, PcConfig *c)
{
    if (v->kind == AST_WORD)
        for (int i = 0; i < PC_PREC_COUNT; i++)
            if (strcmp(v->s, pc_precision_names[i]) == 0) {
                c->precision = (PcPrecision)i;
                return 0;
            }
    bad_value(dl, v, "precision", "fp32, tf32 or bf16");
    return -1;
}

static const struct Key {
    const char *name;
    int block;
    KeyReader read;
} keys[] = {
    {"stages", AST_BLOCK_PIPELINE, k_stages},
    {"data_parallel", AST_BLOCK_PIPELINE, k_data_parallel},
    {"micro_batches", AST_BLOCK_PIPELINE, k_micro_batches},
    {"micro_batch_size", AST_BLOCK_PIPELINE, k_micro_batch_size},
    {"schedule", AST_BLOCK_PIPELINE, k_schedule},
    {"partition", AST_BLOCK_PIPELINE, k_partition},
    {"activation_checkpoint", AST_BLOCK_PIPELINE, k_activation_checkpoint},
    {"link_bandwidth", AST_BLOCK_PIPELINE, k_link_bandwidth},
    {"device_tflops", AST_BLOCK_PIPELINE, k_device_tflops},
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

static int read_block(DiagList *dl, const AstBlock *b, PcConfig *c)
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

int pc_config_read(DiagList *dl, const AstBlock *pipeline, const AstBlock *train, PcConfig *c)
{
    memset(c, 0, sizeof *c);
    c->stages = 1;
    c->data_parallel = 0;
    c->micro_batches = 1;
    c->micro_batch_size = 1;
    c->schedule = PC_SCHED_ONE_F_ONE_B;
    c->chunks = 1;
    c->place = SCHED_PLACE_LOOP;
    c->device_tflops = 100;
    c->partition = PC_PART_UNIFORM;
    c->optimizer = PC_OPT_SGD;
    c->lr = 0.01;
    c->beta1 = 0.9, c->beta2 = 0.999, c->eps = 1e-8;
    c->steps = 100;
    c->seed = 0;
    c->data.kind = PC_DATA_SYNTHETIC;
    c->data.samples = 1024;
    c->data.pad = -1;
    c->data.set = 1;
    c->eval_data.pad = -1;
    c->shuffle = 1;
    c->lr_schedule = PC_LR_CONSTANT;
    c->precision = PC_PREC_FP32;
    int errors = read_block(dl, pipeline, c) + read_block(dl, train, c);
    if (!errors && c->schedule != PC_SCHED_FILE && c->partition == PC_PART_LIST &&
        c->npartition_list != c->stages * c->chunks) {
        diag_error(dl, c->partition_loc,
                   "the partition list has %d entr%s, but %lld stage%s x %lld chunk%s need %lld (one first layer per part)",
                   c->npartition_list, c->npartition_list == 1 ? "y" : "ies", (long long)c->stages,
                   c->stages == 1 ? "" : "s", (long long)c->chunks, c->chunks == 1 ? "" : "s",
                   (long long)(c->stages * c->chunks));
        errors++;
    }
    if (!errors && c->stages * c->chunks > PC_MAX_STAGES) {
        diag_error(dl, c->stages_loc, "%lld stages x %lld chunks is more than %d model parts", (long long)c->stages,
                   (long long)c->chunks, PC_MAX_STAGES);
        errors++;
    }
    return errors ? -1 : 0;
}

void pc_config_free(PcConfig *c)
{
    free(c->partition_list);
    c->partition_list = NULL;
}

int pc_config_override(AstArena *arena, DiagList *dl, AstFile *file, const char *kv)
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
        blk = ast_alloc(arena, sizeof *blk);
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
    AstStmt *s = ast_alloc(arena, sizeof *s);
    s->kind = AST_ASSIGN;
    s->loc = s->name_loc = (SrcLoc){src, 1, 1};
    s->name = ast_strdup(arena, key, strlen(key));
    s->value = v;
    if (tail)
        tail->next = s;
    else
        blk->stmts = s;
    return 0;
}
