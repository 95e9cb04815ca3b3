/* runtime/rt_weights.c: pipert --init and --export (rt_weights.h). */
#include "rt_weights.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "rt.h"
#include "rt_dev.h"
#include "rt_st.h"

static int fmt(char *err, size_t errsize, const char *f, ...) __attribute__((format(printf, 3, 4)));
static int fmt(char *err, size_t errsize, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    vsnprintf(err, errsize, f, ap);
    va_end(ap);
    return -1;
}

static void shape_text(char *s, size_t n, int ndim, const int64_t *dim)
{
    size_t at = (size_t)snprintf(s, n, "[");
    for (int d = 0; d < ndim && at < n; d++)
        at += (size_t)snprintf(s + at, n - at, "%s%lld", d ? ", " : "", (long long)dim[d]);
    if (at < n)
        snprintf(s + at, n - at, "]");
}

/* ---- the model's names -------------------------------------------------------- */

/* One tensor of the model under one name: a parameter (layer, k), or a tied
 * linear's weight under its own name (alias: the owner's parameter 0). */
typedef struct Want {
    char name[96];
    int layer;                /* whose name it is */
    int src_layer, src_k;     /* whose values it holds */
    int alias;
    int buffer;               /* a buffer (src_k indexes the layer's buffers): running_mean, ... */
    const PlanParam *pp;
} Want;

/* Every name in the file order of --export: per layer, a tied linear's
 * weight first (nn.Linear registers weight before bias), then its own
 * tensors in PlanLayer.param order, then its buffers (nn.BatchNorm2d's
 * state_dict order: running_mean, running_var, num_batches_tracked). */
static Want *model_names(const PlanModel *m, int *n)
{
    int cap = 0;
    for (int i = 0; i < m->nlayers; i++)
        cap += m->layer[i].nparams + m->layer[i].nbuffers + (m->layer[i].tie >= 0);
    Want *w = calloc((size_t)cap + 1, sizeof *w);
    if (!w)
        return NULL;
    int k = 0;
    for (int i = 0; i < m->nlayers; i++) {
        const PlanLayer *L = &m->layer[i];
        if (L->tie >= 0) {
            Want *x = &w[k++];
            snprintf(x->name, sizeof x->name, "layers.%d.weight", i);
            x->layer = i, x->src_layer = L->tie, x->src_k = 0, x->alias = 1;
            x->pp = &m->layer[L->tie].param[0];
        }
        for (int j = 0; j < L->nparams; j++) {
            Want *x = &w[k++];
            snprintf(x->name, sizeof x->name, "layers.%d.%s", i, L->param[j].name);
            x->layer = i, x->src_layer = i, x->src_k = j;
            x->pp = &L->param[j];
        }
        for (int j = 0; j < L->nbuffers; j++) {
            Want *x = &w[k++];
            snprintf(x->name, sizeof x->name, "layers.%d.%s", i, L->buffer[j].name);
            x->layer = i, x->src_layer = i, x->src_k = j, x->buffer = 1;
            x->pp = &L->buffer[j];
        }
    }
    *n = k;
    return w;
}

/* ---- --init ------------------------------------------------------------------- */

typedef struct Found {
    char *name;               /* after the renames */
    const RtStEntry *e;
    int file;
} Found;

static int cmp_found(const void *a, const void *b)
{
    return strcmp(((const Found *)a)->name, ((const Found *)b)->name);
}

static const Found *find(const Found *f, int n, const char *name)
{
    Found key = {(char *)name, NULL, 0};
    return bsearch(&key, f, (size_t)n, sizeof *f, cmp_found);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The files of --init PATH: PATH itself, or the *.safetensors files of a
 * folder in name order. */
static int list_files(const char *path, char ***out, int *n, char *err, size_t es)
{
    struct stat st;
    *out = NULL, *n = 0;
    if (stat(path, &st) != 0)
        return fmt(err, es, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode)) {
        char **v = calloc(1, sizeof *v);
        if (!v || !(v[0] = strdup(path)))
            return free(v), fmt(err, es, "out of memory");
        *out = v, *n = 1;
        return 0;
    }
    DIR *d = opendir(path);
    if (!d)
        return fmt(err, es, "%s: %s", path, strerror(errno));
    char **v = NULL;
    int k = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len <= 12 || strcmp(e->d_name + len - 12, ".safetensors") != 0)
            continue;
        if (k == cap) {
            cap = cap ? 2 * cap : 8;
            char **g = realloc(v, (size_t)cap * sizeof *v);
            if (!g)
                break;
            v = g;
        }
        size_t pl = strlen(path) + len + 2;
        if (!(v[k] = malloc(pl)))
            break;
        snprintf(v[k++], pl, "%s/%s", path, e->d_name);
    }
    closedir(d);
    if (k == 0) {
        free(v);
        return fmt(err, es, "%s: a folder without a .safetensors file", path);
    }
    qsort(v, (size_t)k, sizeof *v, cmp_str);
    *out = v, *n = k;
    return 0;
}

/* A name after the first --init-rename rule whose FROM begins it. */
static char *renamed(const RtInit *o, const char *name)
{
    for (int r = 0; r < o->nrename; r++) {
        const char *eq = strchr(o->rename[r], '=');
        size_t fl = (size_t)(eq - o->rename[r]);
        if (strncmp(name, o->rename[r], fl) != 0)
            continue;
        size_t n = strlen(eq + 1) + strlen(name + fl) + 1;
        char *s = malloc(n);
        if (s)
            snprintf(s, n, "%s%s", eq + 1, name + fl);
        return s;
    }
    return strdup(name);
}

static int same_shape(const RtStEntry *e, const PlanParam *pp)
{
    if (e->ndim != pp->ndim)
        return 0;
    for (int d = 0; d < pp->ndim; d++)
        if (e->dim[d] != pp->dim[d])
            return 0;
    return 1;
}

static int readable_dtype(const char *d)
{
    return !strcmp(d, "F32") || !strcmp(d, "F16") || !strcmp(d, "BF16");
}

int rt_weights_init(RtCtx *rt, const RtInit *o, int *loaded, int *nfiles, char *err, size_t es)
{
    const PlanModel *m = rt->m;
    char **paths = NULL;
    int np = 0, nf = 0, nwant = 0, rc = -1;
    RtStFile *file = NULL;
    Found *found = NULL;
    Want *want = NULL;
    float *tmp = NULL;
    err[0] = 0;
    if (list_files(o->path, &paths, &np, err, es) != 0)
        goto out;
    file = calloc((size_t)np, sizeof *file);
    if (!file) {
        fmt(err, es, "out of memory");
        goto out;
    }
    int total = 0;
    for (int i = 0; i < np; i++) {
        if (rt_st_open(paths[i], &file[i], err, es) != 0) {
            for (int j = 0; j < i; j++)
                rt_st_close(&file[j]);
            free(file);
            file = NULL;
            goto out;
        }
        nf = i + 1;
        total += file[i].h.n;
    }
    found = calloc((size_t)total + 1, sizeof *found);
    want = model_names(m, &nwant);
    if (!found || !want) {
        fmt(err, es, "out of memory");
        goto out;
    }
    int n = 0;
    for (int i = 0; i < nf; i++)
        for (int t = 0; t < file[i].h.n; t++) {
            Found *x = &found[n++];
            x->e = &file[i].h.t[t];
            x->file = i;
            if (!(x->name = renamed(o, x->e->name))) {
                fmt(err, es, "out of memory");
                goto out;
            }
        }
    qsort(found, (size_t)n, sizeof *found, cmp_found);
    for (int i = 1; i < n; i++)
        if (!strcmp(found[i - 1].name, found[i].name)) {
            const Found *a = &found[i - 1], *b = &found[i];
            if (strcmp(a->e->name, b->e->name) || a->file != b->file)
                fmt(err, es, "--init %s: tensor %s comes twice: from '%s' in %s and from '%s' in %s%s", o->path,
                    a->name, a->e->name, paths[a->file], b->e->name, paths[b->file],
                    o->nrename ? " (after --init-rename)" : "");
            goto out;
        }
    /* the whole model, in order: the first tensor missing, of another shape
     * or of a dtype not read; every rank comes to the same verdict */
    for (int w = 0; w < nwant; w++) {
        const Want *x = &want[w];
        const Found *f = find(found, n, x->name);
        char a[96], b[96];
        shape_text(b, sizeof b, x->pp->ndim, x->pp->dim);
        if (!f && x->alias)
            continue; /* the owner's name carries it */
        if (!f) {
            const char *hint = n ? found[0].name : "";
            for (int i = 0; i < n; i++)
                if (found[i].file == 0 && found[i].e->order == 0)
                    hint = found[i].name;
            fmt(err, es, "--init %s: no tensor %s %s, which this model needs (the file%s name%s tensors such as '%s'; "
                "--init-rename FROM=TO rewrites a prefix)", o->path, x->name, b, nf > 1 ? "s" : "", nf > 1 ? "" : "s",
                hint);
            goto out;
        }
        if (!same_shape(f->e, x->pp)) {
            shape_text(a, sizeof a, f->e->ndim, f->e->dim);
            fmt(err, es, "--init %s: tensor %s is %s in %s; this model's is %s", o->path, x->name, a, paths[f->file], b);
            goto out;
        }
        if (x->pp->i64 && strcmp(f->e->dtype, "I64") != 0) {
            fmt(err, es, "--init %s: tensor %s is %s in %s: it is a count, read as I64 (int64, as torch saves it)",
                o->path, x->name, f->e->dtype, paths[f->file]);
            goto out;
        }
        if (!x->pp->i64 && !readable_dtype(f->e->dtype)) {
            fmt(err, es, "--init %s: tensor %s is %s in %s: --init reads F32, and F16 and BF16 converted exactly to "
                "float32", o->path, x->name, f->e->dtype, paths[f->file]);
            goto out;
        }
    }
    if (!o->ignore_extra) {
        /* the model's names, sorted, to look the files' up */
        char **names = malloc(((size_t)nwant + 1) * sizeof *names);
        if (!names) {
            fmt(err, es, "out of memory");
            goto out;
        }
        for (int w = 0; w < nwant; w++)
            names[w] = want[w].name;
        qsort(names, (size_t)nwant, sizeof *names, cmp_str);
        for (int i = 0; i < nf; i++)
            for (int t = 0; t < file[i].h.n; t++) {
                char *name = renamed(o, file[i].h.t[t].name);
                int known = name && bsearch(&name, names, (size_t)nwant, sizeof *names, cmp_str);
                if (!known) {
                    free(names);
                    fmt(err, es, "--init %s: tensor %s%s%s%s in %s is not one of this model's (--init-extra ignore "
                        "skips such tensors)", o->path, name ? name : "?", o->nrename ? " (from '" : "",
                        o->nrename ? file[i].h.t[t].name : "", o->nrename ? "')" : "", paths[i]);
                    free(name);
                    goto out;
                }
                free(name);
            }
        free(names);
    }
    /* this rank's tensors: read, and a tied linear's own name, when the
     * files give it, compared with the owner's values */
    int64_t most = 1;
    for (int i = 0; i < rt->nparam; i++) {
        const RtParam *q = &rt->param[i];
        int k, li = rt_param_src(rt, q, &k);
        int64_t whole = rt_tp_split(rt, q) ? m->layer[li].param[k].count : q->n;
        most = whole > most ? whole : most;
    }
    tmp = malloc((size_t)most * sizeof *tmp);
    if (!tmp) {
        fmt(err, es, "out of memory");
        goto out;
    }
    for (int i = 0; i < rt->nparam; i++) {
        RtParam *q = &rt->param[i];
        const Found *f = find(found, n, q->name);
        if (rt_tp_split(rt, q)) {
            /* a split tensor (or a tied copy of one): the whole, then this
             * tp rank's share */
            int k, li = rt_param_src(rt, q, &k);
            if (rt_st_read_f32(&file[f->file], f->e, tmp, err, es) != 0)
                goto out;
            plan_param_take(q->p, tmp, &m->layer[li], k, rt->tpi);
            continue;
        }
        if (rt_st_read_f32(&file[f->file], f->e, q->p, err, es) != 0)
            goto out;
        if (q->k >= 0)
            continue;
        char alias[96];
        snprintf(alias, sizeof alias, "layers.%d.weight", q->layer);
        const Found *g = find(found, n, alias);
        if (!g)
            continue;
        if (rt_st_read_f32(&file[g->file], g->e, tmp, err, es) != 0)
            goto out;
        if (memcmp(tmp, q->p, (size_t)q->n * sizeof *tmp) != 0) {
            fmt(err, es, "--init %s: tensor %s differs from %s, whose weight this model's layer %d shares (tie = ...)",
                o->path, alias, q->name, q->layer);
            goto out;
        }
    }
    /* this rank's buffers (batchnorm2d's running statistics) */
    for (int i = 0; i < rt->nbuf; i++) {
        RtBuf *b = &rt->buf[i];
        const Found *f = find(found, n, b->name);
        const PlanParam *pb = &m->layer[b->layer].buffer[b->k];
        if ((pb->i64 ? rt_st_read_i64(&file[f->file], f->e, b->p, err, es)
                     : rt_st_read_f32(&file[f->file], f->e, b->p, err, es)) != 0)
            goto out;
    }
    if (rt->gpu)
        rt->gpu->to_device(rt);
    *loaded = nwant;
    for (int w = 0; w < nwant; w++)
        if (want[w].alias)
            (*loaded)--;
    *nfiles = nf;
    rc = 0;
out:
    free(tmp);
    for (int i = 0; found && i < total; i++)
        free(found[i].name);
    free(found);
    free(want);
    for (int i = 0; file && i < nf; i++)
        rt_st_close(&file[i]);
    free(file);
    for (int i = 0; i < np; i++)
        free(paths[i]);
    free(paths);
    return rc;
}

/* ---- --export ----------------------------------------------------------------- */

#define EXPORT_TAG 0x5745 /* "WE" */
#define EXPORT_PIECE ((int64_t)1 << 28)

/* The parameter of this rank that holds layer `layer`'s tensor k, or NULL. */
static const RtParam *own_param(const RtCtx *rt, int layer, int k)
{
    for (int i = 0; i < rt->nparam; i++)
        if (rt->param[i].layer == layer && rt->param[i].k == k)
            return &rt->param[i];
    return NULL;
}

/* The buffer of this rank that holds layer `layer`'s buffer k, or NULL. */
static const RtBuf *own_buffer(const RtCtx *rt, int layer, int k)
{
    for (int i = 0; i < rt->nbuf; i++)
        if (rt->buf[i].layer == layer && rt->buf[i].k == k)
            return &rt->buf[i];
    return NULL;
}

/* floats (4-byte units) a wanted tensor takes: int64 counts 2 */
static int64_t units(const Want *x)
{
    return x->pp->count * (x->pp->i64 ? 2 : 1);
}

typedef struct Export {
    RtCtx *rt;
    const Want *want;
    float *buf;
} Export;

/* replica 0, tp rank 0 of the stage that holds it */
static int source_rank(const RtCtx *rt, const Want *x)
{
    return rt_rank_of(rt, rt->ir.part.stage_of_layer[x->src_layer], 0, 0);
}

/* A split block's tensor (tensor parallelism) whole in buf on tp rank 0 of
 * its stage: gathered from the stage's tp ranks of replica 0, which all
 * call this for it in the same order; NULL for a whole tensor. */
static const float *gather_split(RtCtx *rt, const Want *x, float *buf)
{
    if (x->buffer || rt->ir.part.stage_of_layer[x->src_layer] != rt->stage || rt->dpi != 0)
        return NULL;
    const RtParam *q = own_param(rt, x->src_layer, x->src_k);
    if (!q || !rt_tp_split(rt, q))
        return NULL;
    rt_tp_whole(rt, q, q->p, buf);
    return buf;
}

static void transfer(RtCtx *rt, float *p, int64_t n, int peer, int send)
{
    for (int64_t at = 0; at < n; at += EXPORT_PIECE) {
        int k = (int)(n - at < EXPORT_PIECE ? n - at : EXPORT_PIECE);
        if (send)
            RT_MPI(rt, MPI_Send(p + at, k, MPI_FLOAT, peer, EXPORT_TAG, MPI_COMM_WORLD));
        else
            RT_MPI(rt, MPI_Recv(p + at, k, MPI_FLOAT, peer, EXPORT_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
    }
}

/* rt_safetensors_write_stream's source on rank 0: its own tensor, or the
 * one the owning stage's replica 0 sends now. */
static const float *export_get(void *ctx, int i)
{
    Export *e = ctx;
    const Want *x = &e->want[i];
    int from = source_rank(e->rt, x);
    const float *whole = gather_split(e->rt, x, e->buf);
    if (whole)
        return whole;
    if (from == 0)
        return x->buffer ? own_buffer(e->rt, x->src_layer, x->src_k)->p : own_param(e->rt, x->src_layer, x->src_k)->p;
    transfer(e->rt, e->buf, units(x), from, 0);
    return e->buf;
}

int rt_weights_export(RtCtx *rt, const char *path, int *tensors, char *err, size_t es)
{
    int n = 0;
    Want *want = model_names(rt->m, &n);
    RT_CHECK(rt, want, "out of memory");
    /* --device cuda: the host arenas get the device's parameters */
    if (rt->gpu)
        rt->gpu->to_host(rt);
    err[0] = 0;
    if (rt->rank == 0) {
        int64_t most = 1;
        for (int i = 0; i < n; i++)
            most = units(&want[i]) > most ? units(&want[i]) : most;
        Export e = {rt, want, rt_alloc(rt, (size_t)most * sizeof(float), "export buffer")};
        RtTensor *t = rt_alloc(rt, ((size_t)n + 1) * sizeof *t, "export table");
        for (int i = 0; i < n; i++) {
            t[i].name = want[i].name;
            t[i].ndim = want[i].pp->ndim;
            for (int d = 0; d < want[i].pp->ndim; d++)
                t[i].dim[d] = want[i].pp->dim[d];
            t[i].data = NULL;
            t[i].i64 = want[i].pp->i64;
        }
        const char *mk[] = {"format"}, *mv[] = {"pt"};
        if (rt_safetensors_write_stream(path, t, n, mk, mv, 1, export_get, &e, err, es) != 0 && !err[0])
            fmt(err, es, "cannot write '%s'", path);
        free(t);
        free(e.buf);
    } else if (rt->dpi == 0) {
        float *buf = NULL; /* a split tensor's whole, on tp rank 0 */
        if (rt->tp > 1) {
            int64_t most = 1;
            for (int i = 0; i < n; i++)
                most = units(&want[i]) > most ? units(&want[i]) : most;
            buf = rt_alloc(rt, (size_t)most * sizeof(float), "export buffer");
        }
        for (int i = 0; i < n; i++)
            if (rt->tp > 1 && gather_split(rt, &want[i], buf)) {
                if (rt->tpi == 0)
                    transfer(rt, buf, units(&want[i]), 0, 1);
            } else if (source_rank(rt, &want[i]) == rt->rank && want[i].buffer) {
                const RtBuf *b = own_buffer(rt, want[i].src_layer, want[i].src_k);
                RT_CHECK(rt, b, "export: layer %d's buffer %d is not on this rank", want[i].src_layer, want[i].src_k);
                transfer(rt, b->p, units(&want[i]), 0, 1);
            } else if (source_rank(rt, &want[i]) == rt->rank) {
                const RtParam *q = own_param(rt, want[i].src_layer, want[i].src_k);
                RT_CHECK(rt, q, "export: layer %d's tensor %d is not on this rank", want[i].src_layer, want[i].src_k);
                transfer(rt, q->p, q->n, 0, 1);
            }
        free(buf);
    }
    RT_MPI(rt, MPI_Bcast(err, (int)(es < INT_MAX ? es : INT_MAX), MPI_CHAR, 0, MPI_COMM_WORLD));
    *tensors = n;
    free(want);
    return err[0] ? -1 : 0;
}
