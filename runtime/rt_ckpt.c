/* runtime/rt_ckpt.c: resumable checkpoints; the layout and the guarantees
 * are in rt_ckpt.h and docs/reliability.md. Saving, and resuming from a
 * manifest that rt_ckpt_manifest.c has read and checked. */
#include "rt_ckpt.h"
#include "rt_zero.h"

#include "base_file.h"
#include "base_crc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "rt.h"
#include "rt_dev.h"
#include "rt_optim.h"
#include "rt_safetensors.h"

static void fmt(char *err, size_t errsize, const char *f, ...) __attribute__((format(printf, 3, 4)));
static void fmt(char *err, size_t errsize, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    vsnprintf(err, errsize, f, ap);
    va_end(ap);
}

/* The name of optimizer state tensor j of a parameter, as torch.optim's
 * state_dict calls it. */
static const char *state_suffix(int per, int j)
{
    if (per == 1)
        return "momentum_buffer";
    return j == 0 ? "exp_avg" : "exp_avg_sq";
}

/* ---- collective errors ----------------------------------------------------- */

/* Every rank calls this with its own error (empty: none). If any failed,
 * the lowest failing rank prints its message and all ranks exit 1 together:
 * one clear message, no abort banner, no rank left waiting. */
static void agree_or_exit(RtCtx *rt, const char *what, const char *err)
{
    int me = err[0] ? rt->rank : rt->world, first = me;
    MPI_Allreduce(&me, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (first == rt->world)
        return;
    if (first == rt->rank) {
        fprintf(stderr, "pipert: %s: %s\n", what, err);
        fflush(stderr);
    }
    MPI_Finalize();
    exit(1);
}

/* ---- resume ------------------------------------------------------------------ */

typedef struct Loaded {
    RtSafetensors st;
    int ok;
} Loaded;

/* The manifest's entry for a stage's file (its fields checked by
 * rt_ckpt_manifest_read). */
static const BaseJson *file_entry(const RtManifest *m, int64_t stage, const char *kind)
{
    size_t n = base_json_len(m->files);
    for (size_t i = 0; i < n; i++) {
        const BaseJson *f = base_json_at(m->files, i);
        int64_t s = -1;
        base_json_uint(base_json_get(f, "stage"), &s);
        if (s == stage && !strcmp(base_json_str(base_json_get(f, "kind")), kind))
            return f;
    }
    return NULL;
}

/* Loads (once) the file of a stage and kind, after checking that it is
 * there, has the size and the CRC-32 the manifest recorded. */
static const RtSafetensors *open_file(const RtManifest *m, Loaded *cache, int64_t stage, const char *kind, char *err,
                                      size_t errsize)
{
    if (cache->ok)
        return &cache->st;
    const BaseJson *f = file_entry(m, stage, kind);
    if (!f) {
        fmt(err, errsize, "%s/manifest.json lists no %s file for stage %lld", m->root, kind, (long long)stage);
        return NULL;
    }
    int64_t bytes = 0, crc = 0;
    base_json_uint(base_json_get(f, "bytes"), &bytes);
    base_json_uint(base_json_get(f, "crc32"), &crc);
    char path[8400];
    snprintf(path, sizeof path, "%s/%s/%s", m->root, m->dir, base_json_str(base_json_get(f, "name")));
    struct stat st;
    if (stat(path, &st) != 0) {
        fmt(err, errsize, "%s: %s", path, strerror(errno));
        return NULL;
    }
    if ((int64_t)st.st_size != bytes) {
        fmt(err, errsize, "%s: %lld bytes, the manifest says %lld (truncated or replaced)", path,
            (long long)st.st_size, (long long)bytes);
        return NULL;
    }
    if (rt_safetensors_read(path, &cache->st, err, errsize) != 0)
        return NULL;
    uint32_t c = base_crc32(0, cache->st.buf, cache->st.len);
    if ((int64_t)c != crc) {
        fmt(err, errsize, "%s: CRC-32 0x%08lx, the manifest says 0x%08llx (corrupted)", path, (unsigned long)c,
            (unsigned long long)crc);
        rt_safetensors_free(&cache->st);
        return NULL;
    }
    cache->ok = 1;
    return &cache->st;
}

static void shape_text(char *s, size_t n, int ndim, const int64_t *dim)
{
    size_t at = (size_t)snprintf(s, n, "[");
    for (int d = 0; d < ndim && at < n; d++)
        at += (size_t)snprintf(s + at, n - at, "%s%lld", d ? ", " : "", (long long)dim[d]);
    if (at < n)
        snprintf(s + at, n - at, "]");
}

/* The checks that need no file: the same model, optimizer, batch, data. */
static void check_run(RtCtx *rt, const RtManifest *m, char *err, size_t errsize)
{
    const PlanConfig *c = rt->c;
    const char *opt = plan_optimizer_names[c->optimizer];
    if (strcmp(m->model, rt->m->name) != 0) {
        fmt(err, errsize, "the checkpoint is of model '%s'; this plan's model is '%s'", m->model, rt->m->name);
    } else if (strcmp(m->optimizer, opt) != 0) {
        fmt(err, errsize, "the checkpoint's optimizer is %s; this plan's is %s (its state would not fit)", m->optimizer,
            opt);
    } else if (m->global_batch != rt->global_batch) {
        fmt(err, errsize,
            "the checkpoint was trained with a global batch of %lld samples; this run's is %lld (micro_batch_size x "
            "micro_batches x data-parallel replicas): the data order and the loss scale would differ",
            (long long)m->global_batch, (long long)rt->global_batch);
    } else if (m->step > c->steps) {
        fmt(err, errsize, "the checkpoint is at step %lld, past this run's --steps %lld (steps count from the start "
                          "of training)",
            (long long)m->step, (long long)c->steps);
    } else if ((rt->data.n > 0) && m->train_samples != rt->data.n) {
        fmt(err, errsize, "the checkpoint was trained on %lld samples; this run's training data has %lld",
            (long long)m->train_samples, (long long)rt->data.n);
    }
}

/* Rank 0: every tensor the checkpoint holds must be one of this model's. */
static void check_no_extra(RtCtx *rt, const RtManifest *m, char *err, size_t errsize)
{
    const PlanModel *model = rt->m;
    void *it = NULL;
    const char *name;
    const BaseJson *stage;
    while (base_json_next(m->tensors, &it, &name, &stage)) {
        int found = 0;
        char want[96];
        for (int i = 0; i < model->nlayers && !found; i++) {
            for (int k = 0; k < model->layer[i].nparams && !found; k++) {
                snprintf(want, sizeof want, "layers.%d.%s", i, model->layer[i].param[k].name);
                found = !strcmp(want, name);
            }
            for (int k = 0; k < model->layer[i].nbuffers && !found; k++) {
                snprintf(want, sizeof want, "layers.%d.%s", i, model->layer[i].buffer[k].name);
                found = !strcmp(want, name);
            }
        }
        if (!found) {
            fmt(err, errsize, "the checkpoint holds tensor %s, which this model (%s) does not have", name, model->name);
            return;
        }
    }
}

void rt_ckpt_resume(RtCtx *rt, const RtManifest *m)
{
    char err[9000] = "", what[4200];
    snprintf(what, sizeof what, "--resume %s", m->root);
    check_run(rt, m, err, sizeof err);
    if (!err[0] && rt->rank == 0)
        check_no_extra(rt, m, err, sizeof err);
    int nst = 0;
    void *it = NULL;
    const char *key;
    const BaseJson *v;
    while (base_json_next(m->tensors, &it, &key, &v)) {
        int64_t s = 0;
        base_json_uint(v, &s);
        int64_t k = s < (1 << 20) ? s + 1 : 1 << 20;
        if (k > nst)
            nst = (int)k;
    }
    Loaded *wts = calloc((size_t)nst + 1, sizeof *wts), *opt = calloc((size_t)nst + 1, sizeof *opt);
    RT_CHECK(rt, wts && opt, "out of memory");
    int per = rt_optim_state_per_param(rt->c);
    /* zero = 1: read the whole state, keep this replica's shard of it */
    float *whole = rt->zpiece ? rt_zero_whole_state(rt) : NULL;
    for (int i = 0; i < rt->nparam && !err[0]; i++) {
        RtParam *q = &rt->param[i];
        const BaseJson *where = base_json_get(m->tensors, q->name);
        int64_t s = -1;
        if (!where || base_json_uint(where, &s) != 0 || s >= nst) {
            fmt(err, sizeof err, "the checkpoint has no tensor %s, which this model needs", q->name);
            break;
        }
        const RtSafetensors *w = open_file(m, &wts[s], s, "weights", err, sizeof err);
        if (!w)
            break;
        const RtTensor *t = rt_safetensors_find(w, q->name);
        int k, li = rt_param_src(rt, q, &k);
        const PlanParam *pp = &rt->m->layer[li].param[k];
        if (!t) {
            fmt(err, sizeof err, "%s/%s: stage %lld's weights lack tensor %s", m->root, m->dir, (long long)s, q->name);
            break;
        }
        int same = t->ndim == pp->ndim;
        for (int d = 0; same && d < pp->ndim; d++)
            same = t->dim[d] == pp->dim[d];
        if (!same) {
            char a[96], b[96];
            shape_text(a, sizeof a, t->ndim, t->dim);
            shape_text(b, sizeof b, pp->ndim, pp->dim);
            fmt(err, sizeof err, "tensor %s is %s in the checkpoint; this model's is %s", q->name, a, b);
            break;
        }
        /* a split block's tensor: this tp rank's share of the whole */
        int split = rt_tp_split(rt, q);
        if (split)
            plan_param_take(q->p, t->data, &rt->m->layer[li], k, rt->tpi);
        else
            memcpy(q->p, t->data, (size_t)q->n * sizeof(float));
        if (per == 0)
            continue;
        const RtSafetensors *o = open_file(m, &opt[s], s, "optimizer", err, sizeof err);
        if (!o)
            break;
        for (int j = 0; j < per; j++) {
            char name[160];
            snprintf(name, sizeof name, "%s.%s", q->name, state_suffix(per, j));
            const RtTensor *x = rt_safetensors_find(o, name);
            int64_t numel = 1;
            for (int d = 0; x && d < x->ndim; d++)
                numel *= x->dim[d];
            if (!x || numel != (split ? pp->count : q->n)) {
                fmt(err, sizeof err, "%s/%s: stage %lld's optimizer state %s tensor %s", m->root, m->dir, (long long)s,
                    x ? "has the wrong size for" : "lacks", name);
                break;
            }
            if (split)
                plan_param_take(q->state + (int64_t)j * q->n, x->data, &rt->m->layer[li], k, rt->tpi);
            else
                memcpy(q->state + (int64_t)j * q->n, x->data, (size_t)q->n * sizeof(float));
        }
    }
    /* the buffers (batchnorm2d's running statistics): in the weights files,
     * F32, and I64 for num_batches_tracked */
    for (int i = 0; i < rt->nbuf && !err[0]; i++) {
        RtBuf *b = &rt->buf[i];
        const PlanParam *pb = &rt->m->layer[b->layer].buffer[b->k];
        const BaseJson *where = base_json_get(m->tensors, b->name);
        int64_t s = -1;
        if (!where || base_json_uint(where, &s) != 0 || s >= nst) {
            fmt(err, sizeof err, "the checkpoint has no tensor %s, which this model needs", b->name);
            break;
        }
        const RtSafetensors *w = open_file(m, &wts[s], s, "weights", err, sizeof err);
        if (!w)
            break;
        const RtTensor *t = rt_safetensors_find(w, b->name);
        if (!t) {
            fmt(err, sizeof err, "%s/%s: stage %lld's weights lack tensor %s", m->root, m->dir, (long long)s, b->name);
            break;
        }
        int same = t->ndim == pb->ndim && t->i64 == pb->i64;
        for (int d = 0; same && d < pb->ndim; d++)
            same = t->dim[d] == pb->dim[d];
        if (!same) {
            char a[96], c[96];
            shape_text(a, sizeof a, t->ndim, t->dim);
            shape_text(c, sizeof c, pb->ndim, pb->dim);
            fmt(err, sizeof err, "tensor %s is %s %s in the checkpoint; this model's is %s %s", b->name,
                t->i64 ? "I64" : "F32", a, pb->i64 ? "I64" : "F32", c);
            break;
        }
        memcpy(b->p, t->data, (size_t)b->bytes);
    }
    for (int s = 0; s <= nst; s++) {
        rt_safetensors_free(&wts[s].st);
        rt_safetensors_free(&opt[s].st);
    }
    free(wts), free(opt);
    if (whole)
        rt_zero_release_state(rt, whole, !err[0]);
    agree_or_exit(rt, what, err);
    rt->step = m->step;
    /* --device cuda: the host arenas hold what was read; train from them */
    if (rt->gpu)
        rt->gpu->to_device(rt);
}

/* ---- save --------------------------------------------------------------------- */

/* Size and CRC-32 of a file as it is on disk (read back after the write). */
static int file_crc(const char *path, int64_t *bytes, uint32_t *crc)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    static unsigned char buf[1 << 16];
    uint32_t c = 0;
    int64_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            close(fd);
            return -1;
        }
        if (r == 0)
            break;
        c = base_crc32(c, buf, (size_t)r);
        n += r;
    }
    close(fd);
    *bytes = n, *crc = (uint32_t)c;
    return 0;
}

/* A test hook (docs/reliability.md): PIPE_FAULT_SAVE_PAUSE=STEP:MS makes
 * the writers of the checkpoint of step STEP sleep MS ms between their
 * weights and their optimizer file, so a test can kill the job there. */
static void fault_pause(int64_t step)
{
    const char *e = getenv("PIPE_FAULT_SAVE_PAUSE");
    long long at, ms;
    if (e && sscanf(e, "%lld:%lld", &at, &ms) == 2 && at == step && ms > 0) {
        struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
}

/* Replica 0 of a stage: its two files; out[0..3] = weights bytes, crc,
 * optimizer bytes, crc. */
/* With tensor parallelism: the split tensors of this rank's parameters
 * and optimizer state, whole, on tp rank 0 (gathered over the stage's tp
 * ranks: collective there); NULL entries for the others and elsewhere.
 * tp_free releases them. */
typedef struct TpWhole {
    float **p, **state; /* [nparam] */
} TpWhole;

static TpWhole tp_gather(RtCtx *rt)
{
    TpWhole w = {NULL, NULL};
    if (rt->tp <= 1)
        return w;
    int per = rt_optim_state_per_param(rt->c), root = rt->tpi == 0;
    if (root) {
        w.p = rt_alloc(rt, (size_t)rt->nparam * sizeof *w.p, "tensor table");
        w.state = rt_alloc(rt, (size_t)rt->nparam * sizeof *w.state, "tensor table");
    }
    for (int i = 0; i < rt->nparam; i++) {
        RtParam *q = &rt->param[i];
        if (q->k < 0 || !rt_tp_split(rt, q))
            continue; /* a tied copy is not written (its owner's file holds it) */
        int64_t count = rt->m->layer[q->layer].param[q->k].count;
        if (root) {
            w.p[i] = rt_alloc(rt, (size_t)count * sizeof(float), "a split tensor, whole");
            w.state[i] = per ? rt_alloc(rt, (size_t)per * count * sizeof(float), "a split tensor's state, whole") : NULL;
        }
        rt_tp_whole(rt, q, q->p, root ? w.p[i] : NULL);
        for (int j = 0; j < per; j++)
            rt_tp_whole(rt, q, q->state + (int64_t)j * q->n, root ? w.state[i] + (int64_t)j * count : NULL);
    }
    return w;
}

static void tp_free(RtCtx *rt, TpWhole *w)
{
    for (int i = 0; w->p && i < rt->nparam; i++)
        free(w->p[i]), free(w->state[i]);
    free(w->p), free(w->state);
}

static void write_stage(RtCtx *rt, int64_t step, const char *folder, const TpWhole *tw, int64_t out[4])
{
    int per = rt_optim_state_per_param(rt->c);
    int cap = rt->nparam ? rt->nparam : 1;
    RtTensor *w = rt_alloc(rt, (size_t)(cap + rt->nbuf) * sizeof *w, "tensor table");
    RtTensor *o = rt_alloc(rt, (size_t)cap * (per ? per : 1) * sizeof *o, "tensor table");
    char(*names)[160] = rt_alloc(rt, (size_t)cap * (per ? per : 1) * sizeof *names, "tensor names");
    int nw = 0, no = 0;
    for (int i = 0; i < rt->nparam; i++) {
        const RtParam *q = &rt->param[i];
        if (q->k < 0)
            continue; /* a tied copy: its owner's file holds it */
        const PlanParam *pp = &rt->m->layer[q->layer].param[q->k];
        int whole = tw->p && tw->p[i]; /* a split tensor, gathered */
        RtTensor t = {q->name, pp->ndim, {0}, whole ? tw->p[i] : q->p, 0};
        for (int d = 0; d < pp->ndim; d++)
            t.dim[d] = pp->dim[d];
        w[nw++] = t;
        for (int j = 0; j < per; j++) {
            snprintf(names[no], sizeof names[no], "%s.%s", q->name, state_suffix(per, j));
            o[no] = t;
            o[no].name = names[no];
            o[no].data = whole ? tw->state[i] + (int64_t)j * pp->count : q->state + (int64_t)j * q->n;
            no++;
        }
    }
    /* the buffers go with the weights (no optimizer state) */
    for (int i = 0; i < rt->nbuf; i++) {
        const RtBuf *b = &rt->buf[i];
        const PlanParam *pb = &rt->m->layer[b->layer].buffer[b->k];
        RtTensor t = {b->name, pb->ndim, {0}, b->p, pb->i64};
        for (int d = 0; d < pb->ndim; d++)
            t.dim[d] = pb->dim[d];
        w[nw++] = t;
    }
    char path[8400], err[1024], stp[32], stage[32];
    snprintf(stp, sizeof stp, "%lld", (long long)step);
    snprintf(stage, sizeof stage, "%d", rt->stage);
    const char *wk[] = {"format", "model", "step", "stage"};
    const char *wv[] = {"pt", rt->m->name, stp, stage};
    snprintf(path, sizeof path, "%s/stage-%d.safetensors", folder, rt->stage);
    if (rt_safetensors_write(path, w, nw, wk, wv, 4, err, sizeof err) != 0)
        rt_fail(rt, __FILE__, __LINE__, "checkpoint: %s", err);
    uint32_t crc;
    RT_CHECK(rt, file_crc(path, &out[0], &crc) == 0, "checkpoint: cannot read back %s", path);
    out[1] = crc;
    fault_pause(step);
    const char *ok[] = {"format", "model", "step", "stage", "optimizer"};
    const char *ov[] = {"pipe-optimizer", rt->m->name, stp, stage, plan_optimizer_names[rt->c->optimizer]};
    snprintf(path, sizeof path, "%s/optim-%d.safetensors", folder, rt->stage);
    if (rt_safetensors_write(path, o, no, ok, ov, 5, err, sizeof err) != 0)
        rt_fail(rt, __FILE__, __LINE__, "checkpoint: %s", err);
    RT_CHECK(rt, file_crc(path, &out[2], &crc) == 0, "checkpoint: cannot read back %s", path);
    out[3] = crc;
    free(w), free(o), free(names);
}

/* Whether a name is one of our step folders: step-NNNNNNNN or step-NNNNNNNN-K. */
static int is_step_folder(const char *n)
{
    if (strncmp(n, "step-", 5) != 0)
        return 0;
    for (n += 5; *n; n++)
        if (!((*n >= '0' && *n <= '9') || *n == '-'))
            return 0;
    return 1;
}

/* Whether a name is one of the files a save writes (or its temporary). */
static int is_ckpt_file(const char *n)
{
    return (!strncmp(n, "stage-", 6) || !strncmp(n, "optim-", 6)) && strstr(n, ".safetensors") != NULL;
}

/* Rank 0, after the manifest is durable: older step folders go (only the
 * files pipe writes; a folder holding anything else stays). */
static void remove_old(const char *root, const char *keep)
{
    DIR *d = opendir(root);
    if (!d)
        return;
    struct dirent *e;
    char path[8400];
    while ((e = readdir(d)) != NULL) {
        if (!is_step_folder(e->d_name) || !strcmp(e->d_name, keep))
            continue;
        snprintf(path, sizeof path, "%s/%s", root, e->d_name);
        DIR *s = opendir(path);
        if (!s)
            continue;
        struct dirent *f;
        while ((f = readdir(s)) != NULL)
            if (is_ckpt_file(f->d_name)) {
                char fp[8800];
                snprintf(fp, sizeof fp, "%s/%s", path, f->d_name);
                unlink(fp);
            }
        closedir(s);
        rmdir(path);
    }
    closedir(d);
}

static void write_manifest(RtCtx *rt, int64_t step, const char *sub, const int64_t *all)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    RT_CHECK(rt, f, "out of memory");
    const PlanConfig *c = rt->c;
    fprintf(f, "{\n  \"format\": \"%s\",\n  \"version\": %d,\n  \"model\": ", RT_CKPT_FORMAT, RT_CKPT_VERSION);
    base_json_put_str(f, rt->m->name);
    fprintf(f, ",\n  \"step\": %lld,\n  \"steps\": %lld,\n  \"seed\": %llu,\n  \"optimizer\": \"%s\",\n",
            (long long)step, (long long)c->steps, (unsigned long long)c->seed, plan_optimizer_names[c->optimizer]);
    fprintf(f, "  \"global_batch\": %lld,\n  \"train_samples\": %lld,\n", (long long)rt->global_batch,
            (long long)rt->data.n);
    /* informational: what the step and seed stand for */
    int64_t pos = step * rt->global_batch;
    fprintf(f, "  \"data\": {\"position\": %lld, \"epoch\": %lld},\n", (long long)pos,
            (long long)(rt->data.n ? pos / rt->data.n : 0));
    fprintf(f, "  \"rng\": {\"generator\": \"philox4x32-10\", \"seed\": %llu, \"step\": %lld},\n",
            (unsigned long long)c->seed, (long long)step);
    fprintf(f, "  \"stages\": %d,\n  \"dir\": ", rt->stages);
    base_json_put_str(f, sub);
    fprintf(f, ",\n  \"files\": [");
    for (int s = 0; s < rt->stages; s++) {
        const int64_t *v = all + (int64_t)rt_rank_of(rt, s, 0, 0) * 4; /* replica 0, tp rank 0 of stage s */
        fprintf(f, "\n    {\"name\": \"stage-%d.safetensors\", \"kind\": \"weights\", \"stage\": %d, \"bytes\": %lld, "
                   "\"crc32\": %lld},",
                s, s, (long long)v[0], (long long)v[1]);
        fprintf(f, "\n    {\"name\": \"optim-%d.safetensors\", \"kind\": \"optimizer\", \"stage\": %d, \"bytes\": %lld, "
                   "\"crc32\": %lld}%s",
                s, s, (long long)v[2], (long long)v[3], s + 1 < rt->stages ? "," : "");
    }
    fprintf(f, "\n  ],\n  \"tensors\": {");
    /* every owned parameter, with the stage whose files hold it */
    const PlanPartition *pt = &rt->ir.part;
    int first = 1;
    for (int s = 0; s < rt->stages; s++)
        for (int ch = 0; ch < rt->chunks; ch++) {
            int part = sched_part(c->place, rt->stages, s, ch);
            for (int i = pt->part[part].first; i <= pt->part[part].last; i++)
            {
                for (int k = 0; k < rt->m->layer[i].nparams; k++) {
                    fprintf(f, "%s\n    \"layers.%d.%s\": %d", first ? "" : ",", i, rt->m->layer[i].param[k].name, s);
                    first = 0;
                }
                for (int k = 0; k < rt->m->layer[i].nbuffers; k++) {
                    fprintf(f, "%s\n    \"layers.%d.%s\": %d", first ? "" : ",", i, rt->m->layer[i].buffer[k].name, s);
                    first = 0;
                }
            }
        }
    fprintf(f, "\n  }\n}\n");
    RT_CHECK(rt, fclose(f) == 0, "out of memory");
    char path[4200], err[1024];
    snprintf(path, sizeof path, "%s/manifest.json", rt->save_dir);
    if (base_write_atomic(path, text, len, err, sizeof err) != 0)
        rt_fail(rt, __FILE__, __LINE__, "checkpoint: %s", err);
    free(text);
}

void rt_ckpt_save(RtCtx *rt, int64_t step)
{
    char sub[64] = "", folder[4200];
    const char *root = rt->save_dir;
    /* --device cuda: the host arenas, which the files are written from, get
     * the device's parameters and optimizer state */
    if (rt->gpu)
        rt->gpu->to_host(rt);
    if (rt->rank == 0) {
        if (mkdir(root, 0755) != 0 && errno != EEXIST)
            rt_fail(rt, __FILE__, __LINE__, "checkpoint: cannot create %s: %s", root, strerror(errno));
        /* a fresh folder: never one the manifest may name */
        struct stat st;
        for (int k = 0; k < 1000; k++) {
            if (k == 0)
                snprintf(sub, sizeof sub, "step-%08lld", (long long)step);
            else
                snprintf(sub, sizeof sub, "step-%08lld-%d", (long long)step, k);
            snprintf(folder, sizeof folder, "%s/%s", root, sub);
            if (lstat(folder, &st) != 0)
                break;
        }
        if (mkdir(folder, 0755) != 0)
            rt_fail(rt, __FILE__, __LINE__, "checkpoint: cannot create %s: %s", folder, strerror(errno));
        if (base_fsync_parent(folder) != 0)
            rt_fail(rt, __FILE__, __LINE__, "checkpoint: cannot sync %s: %s", root, strerror(errno));
    }
    RT_MPI(rt, MPI_Bcast(sub, sizeof sub, MPI_CHAR, 0, MPI_COMM_WORLD));
    snprintf(folder, sizeof folder, "%s/%s", root, sub);
    int64_t mine[4] = {0, 0, 0, 0};
    /* zero = 1: the state is sharded; the files hold it whole (collective
     * over the replicas) */
    float *whole = rt->zpiece ? rt_zero_gather_state(rt) : NULL;
    /* tensor parallelism: the split tensors whole on tp rank 0 (collective
     * over the stage's tp ranks), which writes the stage's files */
    TpWhole tw = rt->dpi == 0 ? tp_gather(rt) : (TpWhole){NULL, NULL};
    if (rt->dpi == 0 && rt->tpi == 0)
        write_stage(rt, step, folder, &tw, mine);
    tp_free(rt, &tw);
    if (whole)
        rt_zero_release_state(rt, whole, 0);
    int64_t *all = rt->rank == 0 ? rt_alloc(rt, (size_t)rt->world * 4 * sizeof *all, "checkpoint table") : NULL;
    RT_MPI(rt, MPI_Gather(mine, 4, MPI_INT64_T, all, 4, MPI_INT64_T, 0, MPI_COMM_WORLD));
    if (rt->rank == 0) {
        write_manifest(rt, step, sub, all);
        /* the link is a convenience; the manifest is the truth */
        char link[4200], tmp[4300];
        snprintf(link, sizeof link, "%s/latest", root);
        snprintf(tmp, sizeof tmp, "%s/latest.tmp.%ld", root, (long)getpid());
        unlink(tmp);
        if (symlink(sub, tmp) == 0 && rename(tmp, link) != 0)
            unlink(tmp);
        remove_old(root, sub);
        free(all);
    }
    RT_MPI(rt, MPI_Barrier(MPI_COMM_WORLD));
}
