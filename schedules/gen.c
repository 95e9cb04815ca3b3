/* schedules/gen.c: the schedule generators.
 *
 * A generator emits, per stage, the order of compute actions: F (forward),
 * B (full backward), or I and W (the backward split into input gradient and
 * weight gradient), each with a micro-batch and the stage-local chunk. It
 * knows nothing of buffers, sends or reductions: lowering adds those.
 *
 * Every generator keeps one invariant the runtime's determinism rests on:
 * on each stage and chunk, weight gradients (B or W) come in micro-batch
 * order 0, 1, 2, ...
 *
 * gpipe, 1f1b, interleaved, looped-bfs and dualpipev are fixed formulas.
 * zb-h1 and zb-h2 take 1F1B's order of F and I and let a small list
 * scheduler (below) slot each W into the first idle time, under a memory
 * cap; zb-v lets the same scheduler choose among ready actions greedily
 * (I before F before W). The scheduler uses the spec's per-part costs, so
 * W lands where the model's real bubbles are. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched.h"
#include "base_alloc.h"

#define ERR(...)                                  \
    do {                                          \
        snprintf(err, errsize, __VA_ARGS__);      \
        return -1;                                \
    } while (0)

/* ---- fixed formulas ------------------------------------------------------ */

/* All forwards, chunk by chunk, then all backwards in reverse chunk order;
 * micro-batches in order throughout (gpipe with one chunk, looped-bfs). */
static void fill_drain(const SchedSpec *sp, SchedActions *out)
{
    for (int s = 0; s < sp->stages; s++) {
        for (int c = 0; c < sp->chunks; c++)
            for (int mb = 0; mb < sp->micro_batches; mb++)
                sched_push(out, s, SCHED_F, mb, c);
        for (int c = sp->chunks - 1; c >= 0; c--)
            for (int mb = 0; mb < sp->micro_batches; mb++)
                sched_push(out, s, SCHED_BWD, mb, c);
    }
}

int sched_gen_gpipe(const SchedSpec *sp, SchedActions *out, char *err, size_t errsize)
{
    if (sp->chunks != 1)
        ERR("gpipe runs one chunk per stage (use looped-bfs for more)");
    fill_drain(sp, out);
    return 0;
}

int sched_gen_looped_bfs(const SchedSpec *sp, SchedActions *out, char *err, size_t errsize)
{
    (void)err, (void)errsize;
    fill_drain(sp, out);
    return 0;
}

/* PipeDream-Flush on stage s: p - s - 1 warm-up forwards, then one forward
 * and one backward at a time, then the remaining backwards. bwd is SCHED_BWD
 * or SCHED_I. */
static void one_f_one_b(SchedActions *out, int s, int p, int m, SchedKind bwd)
{
    int warm = p - s - 1 < m ? p - s - 1 : m, f = 0, b = 0;
    for (; f < warm; f++)
        sched_push(out, s, SCHED_F, f, 0);
    while (f < m) {
        sched_push(out, s, SCHED_F, f++, 0);
        sched_push(out, s, bwd, b++, 0);
    }
    while (b < m)
        sched_push(out, s, bwd, b++, 0);
}

int sched_gen_1f1b(const SchedSpec *sp, SchedActions *out, char *err, size_t errsize)
{
    if (sp->chunks != 1)
        ERR("1f1b runs one chunk per stage (use interleaved for more)");
    for (int s = 0; s < sp->stages; s++)
        one_f_one_b(out, s, sp->stages, sp->micro_batches, SCHED_BWD);
    return 0;
}

static int interleaved_order(const SchedSpec *sp, SchedActions *out, int extra);

/* DualPipeV (DeepSeek's DualPipe folded into a V): stage r of p runs its
 * chunk 0 (going down) and chunk 1 (coming back) in eight phases. A paired
 * "F of one chunk with B of the other" runs here as F then B; "zero bubble"
 * backwards are I with the W queued, popped by the W steps. */
typedef struct DpvState {
    SchedActions *out;
    int s, nf[2], nb[2];
    int wq_mb[4096], wq_ch[4096], wq_head, wq_tail; /* W queue (FIFO) */
} DpvState;

static void dpv_f(DpvState *d, int c)
{
    sched_push(d->out, d->s, SCHED_F, d->nf[c]++, c);
}

static void dpv_b(DpvState *d, int c, int zb)
{
    int mb = d->nb[c]++;
    if (zb) {
        sched_push(d->out, d->s, SCHED_I, mb, c);
        d->wq_mb[d->wq_tail % 4096] = mb;
        d->wq_ch[d->wq_tail % 4096] = c;
        d->wq_tail++;
    } else {
        sched_push(d->out, d->s, SCHED_BWD, mb, c);
    }
}

static void dpv_w(DpvState *d)
{
    if (d->wq_head == d->wq_tail)
        return;
    int i = d->wq_head++ % 4096;
    sched_push(d->out, d->s, SCHED_W, d->wq_mb[i], d->wq_ch[i]);
}

int sched_gen_dualpipev(const SchedSpec *sp, SchedActions *out, char *err, size_t errsize)
{
    int p = sp->stages, m = sp->micro_batches;
    if (sp->chunks != 2 || sp->place != SCHED_PLACE_V)
        ERR("dualpipev runs two chunks per stage in a V");
    if (m < 2 * p)
        ERR("dualpipev needs micro_batches >= 2 x stages (%d), not %d", 2 * p, m);
    DpvState *d = base_calloc(1, sizeof *d);
    d->out = out;
    for (int r = 0; r < p; r++) {
        memset(d->nf, 0, sizeof d->nf);
        memset(d->nb, 0, sizeof d->nb);
        d->wq_head = d->wq_tail = 0;
        d->s = r;
        int last = r == p - 1;
        for (int i = 0; i < (p - r - 1) * 2; i++) /* 1: chunk 0 forwards */
            dpv_f(d, 0);
        for (int i = 0; i < r + 1; i++) { /* 2: both chunks forward */
            dpv_f(d, 0);
            dpv_f(d, 1);
        }
        for (int i = 0; i < p - r - 1; i++) { /* 3: B1 (zero bubble), W, F1 */
            dpv_b(d, 1, 1);
            dpv_w(d);
            dpv_f(d, 1);
        }
        int main_steps = m - 2 * p + r + 1;
        for (int i = 0; i < main_steps; i++) { /* 4: F0 with B1, F1 with B0 */
            if (i == 0 && last) {
                dpv_f(d, 0);
                dpv_b(d, 1, 0);
            } else {
                dpv_f(d, 0);
                dpv_b(d, 1, 0);
            }
            dpv_f(d, 1);
            dpv_b(d, 0, 0);
        }
        for (int i = 0; i < p - r - 1; i++) { /* 5: B1, then F1 with B0 */
            dpv_b(d, 1, 0);
            dpv_f(d, 1);
            dpv_b(d, 0, 0);
        }
        int zb = 0, n6 = r + 1;
        for (int i = 0; i < n6; i++) { /* 6: B1, B0; the second half zero bubble */
            if (i == n6 / 2 && r % 2 == 1)
                zb = 1;
            dpv_b(d, 1, zb);
            if (i == n6 / 2 && r % 2 == 0)
                zb = 1;
            dpv_b(d, 0, zb);
        }
        for (int i = 0; i < p - r - 1; i++) { /* 7: W, B0 (zero bubble) */
            dpv_w(d);
            dpv_b(d, 0, 1);
        }
        while (d->wq_head < d->wq_tail) /* 8: the remaining W */
            dpv_w(d);
        if (d->nf[0] != m || d->nf[1] != m || d->nb[0] != m || d->nb[1] != m) {
            snprintf(err, errsize, "internal error: dualpipev emitted %d/%d forwards and %d/%d backwards on stage %d",
                     d->nf[0], d->nf[1], d->nb[0], d->nb[1], r);
            free(d);
            return -1;
        }
    }
    free(d);
    return 0;
}

/* Forward only: each stage runs its chunks in part order, micro-batches in
 * order within each. */
int sched_gen_eval(const SchedSpec *sp, SchedActions *out, char *err, size_t errsize)
{
    (void)err, (void)errsize;
    for (int s = 0; s < sp->stages; s++) {
        int order[256], n = 0;
        for (int k = 0; k < sp->stages * sp->chunks && n < 256; k++) {
            int st, ch;
            sched_place(sp->place, sp->stages, k, &st, &ch);
            if (st == s)
                order[n++] = ch;
        }
        for (int i = 0; i < n; i++)
            for (int mb = 0; mb < sp->micro_batches; mb++)
                sched_push(out, s, SCHED_F, mb, order[i]);
    }
    return 0;
}

/* ---- a list scheduler for the zero-bubble family -------------------------- */

typedef struct Heap {
    double *v;
    int n, cap;
} Heap;

static void heap_push(Heap *h, double x)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 256;
        h->v = realloc(h->v, (size_t)h->cap * sizeof *h->v);
        if (!h->v) {
            fputs("pipe: out of memory\n", stderr);
            exit(2);
        }
    }
    int i = h->n++;
    h->v[i] = x;
    while (i > 0 && h->v[(i - 1) / 2] > h->v[i]) {
        double t = h->v[i];
        h->v[i] = h->v[(i - 1) / 2];
        h->v[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
}

static void heap_pop(Heap *h)
{
    h->v[0] = h->v[--h->n];
    int i = 0;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, s = i;
        if (l < h->n && h->v[l] < h->v[s])
            s = l;
        if (r < h->n && h->v[r] < h->v[s])
            s = r;
        if (s == i)
            break;
        double t = h->v[i];
        h->v[i] = h->v[s];
        h->v[s] = t;
        i = s;
    }
}

typedef struct Eng {
    const SchedSpec *sp;
    int S, V, P, M;
    double *fend, *iend;   /* [P * M]: when F / I of (part, mb) ends; -1 until scheduled */
    double *free_at;       /* [S] */
    int *nf, *ni, *nw;     /* [S * V]: next F / I / W micro-batch per (stage, chunk) */
    int *live;             /* [S]: activations held (F scheduled, W or B not yet) */
    int *wq;               /* [S * V * M] pending W, per stage: FIFO of (chunk, mb) encoded c * M + mb */
    int *wq_head, *wq_tail;
    Heap ends;
} Eng;

static double cost(const double *c, int part, double unit)
{
    return c ? c[part] : unit;
}

static void eng_init(Eng *e, const SchedSpec *sp)
{
    memset(e, 0, sizeof *e);
    e->sp = sp;
    e->S = sp->stages, e->V = sp->chunks, e->P = e->S * e->V, e->M = sp->micro_batches;
    size_t pm = (size_t)e->P * e->M;
    e->fend = base_calloc(pm, sizeof *e->fend);
    e->iend = base_calloc(pm, sizeof *e->iend);
    for (size_t i = 0; i < pm; i++)
        e->fend[i] = e->iend[i] = -1;
    e->free_at = base_calloc(e->S, sizeof *e->free_at);
    e->nf = base_calloc((size_t)e->S * e->V, sizeof *e->nf);
    e->ni = base_calloc((size_t)e->S * e->V, sizeof *e->ni);
    e->nw = base_calloc((size_t)e->S * e->V, sizeof *e->nw);
    e->live = base_calloc(e->S, sizeof *e->live);
    e->wq = base_calloc(pm, sizeof *e->wq);
    e->wq_head = base_calloc(e->S, sizeof *e->wq_head);
    e->wq_tail = base_calloc(e->S, sizeof *e->wq_tail);
}

static void eng_free(Eng *e)
{
    free(e->fend), free(e->iend), free(e->free_at), free(e->nf), free(e->ni), free(e->nw);
    free(e->live), free(e->wq), free(e->wq_head), free(e->wq_tail), free(e->ends.v);
}

/* When F (or I) of mb on (stage, chunk) could start: -1 if a dependency is
 * not scheduled yet. */
static double ready_f(const Eng *e, int s, int c, int mb)
{
    int k = sched_part(e->sp->place, e->S, s, c);
    return k == 0 ? 0 : e->fend[(size_t)(k - 1) * e->M + mb];
}

static double ready_i(const Eng *e, int s, int c, int mb)
{
    int k = sched_part(e->sp->place, e->S, s, c);
    double f = e->fend[(size_t)k * e->M + mb];
    if (f < 0)
        return -1;
    if (k == e->P - 1)
        return f;
    double g = e->iend[(size_t)(k + 1) * e->M + mb];
    return g < 0 ? -1 : (g > f ? g : f);
}

static void eng_do(Eng *e, SchedActions *out, int s, SchedKind kind, int c, int mb, double t)
{
    const SchedSpec *sp = e->sp;
    int k = sched_part(sp->place, e->S, s, c);
    double d;
    size_t at = (size_t)k * e->M + mb;
    if (kind == SCHED_F) {
        d = cost(sp->cost_f, k, 1);
        e->fend[at] = t + d;
        e->nf[s * e->V + c]++;
        e->live[s]++;
    } else if (kind == SCHED_I) {
        d = cost(sp->cost_i, k, 1);
        e->iend[at] = t + d;
        e->ni[s * e->V + c]++;
        e->wq[(size_t)s * e->V * e->M + (e->wq_tail[s]++)] = c * e->M + mb;
    } else if (kind == SCHED_BWD) {
        d = cost(sp->cost_b, k, 2);
        e->iend[at] = t + d;
        e->ni[s * e->V + c]++;
        e->live[s]--;
    } else {
        d = cost(sp->cost_w, k, 1);
        e->nw[s * e->V + c]++;
        e->wq_head[s]++;
        e->live[s]--;
    }
    sched_push(out, s, kind, mb, c);
    e->free_at[s] = t + d;
    heap_push(&e->ends, t + d);
    /* stages that had nothing to wait for look again once this ends */
    for (int i = 0; i < e->S; i++)
        if (e->free_at[i] == INFINITY)
            e->free_at[i] = t + d;
}

/* The next time anything scheduled ends after t, or INFINITY. */
static double next_end(Eng *e, double t)
{
    while (e->ends.n > 0 && e->ends.v[0] <= t)
        heap_pop(&e->ends);
    return e->ends.n ? e->ends.v[0] : INFINITY;
}

typedef enum { ENG_SEQ, ENG_GREEDY } EngMode;

/* Runs the list scheduler. ENG_SEQ: each stage follows seq (F and I only)
 * and fills idle time with W. ENG_GREEDY: each stage picks a ready I (the
 * lowest micro-batch, then the later part), else a ready F under the cap
 * (the later part first), else W. cap: activations a stage may hold.
 * Returns 0, or -1 when the cap leaves every stage waiting. */
static int eng_run(Eng *e, EngMode mode, const SchedActions *seq, const int *cap, SchedActions *out)
{
    int S = e->S, V = e->V, M = e->M;
    int *pos = base_calloc(S, sizeof *pos);
    long remaining = 0;
    if (mode == ENG_SEQ)
        for (int i = 0; i < S; i++)
            for (int j = 0; j < seq->stage[i].n; j++)
                remaining += seq->stage[i].a[j].kind == SCHED_I ? 2 : 1;
    else
        remaining = (long)S * V * M * 3;
    while (remaining > 0) {
        int s = -1;
        for (int i = 0; i < S; i++)
            if (e->free_at[i] < INFINITY && (s < 0 || e->free_at[i] < e->free_at[s])) {
                int done = mode == ENG_SEQ ? pos[i] == seq->stage[i].n && e->wq_head[i] == e->wq_tail[i]
                                           : e->wq_head[i] == e->wq_tail[i] && e->ni[i * V] == M &&
                                                 (V < 2 || e->ni[i * V + 1] == M);
                if (!done)
                    s = i;
            }
        if (s < 0) {
            free(pos);
            return -1;
        }
        double t = e->free_at[s], wait = INFINITY;
        int did = 0;
        if (mode == ENG_SEQ && pos[s] < seq->stage[s].n) {
            const SchedAction *a = &seq->stage[s].a[pos[s]];
            double r = a->kind == SCHED_F ? ready_f(e, s, a->chunk, a->mb) : ready_i(e, s, a->chunk, a->mb);
            int room = a->kind != SCHED_F || e->live[s] < cap[s];
            if (r >= 0 && r <= t && room) {
                eng_do(e, out, s, (SchedKind)a->kind, a->chunk, a->mb, t);
                pos[s]++;
                did = 1;
            } else if (r > t && room) {
                wait = r;
            }
        } else if (mode == ENG_GREEDY) {
            int best_c = -1;
            for (int c = 0; c < V; c++) { /* I: lowest micro-batch, then the later part */
                int mb = e->ni[s * V + c];
                if (mb >= M)
                    continue;
                double r = ready_i(e, s, c, mb);
                if (r >= 0 && r <= t) {
                    if (best_c < 0 || mb < e->ni[s * V + best_c] ||
                        (mb == e->ni[s * V + best_c] &&
                         sched_part(e->sp->place, S, s, c) > sched_part(e->sp->place, S, s, best_c)))
                        best_c = c;
                } else if (r > t && r < wait) {
                    wait = r;
                }
            }
            if (best_c >= 0) {
                eng_do(e, out, s, SCHED_I, best_c, e->ni[s * V + best_c], t);
                did = 1;
            } else if (e->live[s] < cap[s]) {
                for (int c = V - 1; c >= 0 && !did; c--) { /* F: the later part first */
                    int mb = e->nf[s * V + c];
                    if (mb >= M)
                        continue;
                    double r = ready_f(e, s, c, mb);
                    if (r >= 0 && r <= t) {
                        eng_do(e, out, s, SCHED_F, c, mb, t);
                        did = 1;
                    } else if (r > t && r < wait) {
                        wait = r;
                    }
                }
            }
        }
        if (!did && e->wq_head[s] < e->wq_tail[s]) {
            int code = e->wq[(size_t)s * V * M + e->wq_head[s]];
            eng_do(e, out, s, SCHED_W, code / M, code % M, t);
            did = 1;
        }
        if (did) {
            remaining--;
            continue;
        }
        double nx = next_end(e, t);
        e->free_at[s] = wait < nx ? wait : nx;
    }
    free(pos);
    return 0;
}

/* 1F1B's order of F and I, with W slotted into idle time under a cap. */
static int zb_seq(const SchedSpec *sp, SchedActions *out, int warm_extra, const int *cap, char *err, size_t errsize)
{
    if (sp->chunks != 1)
        ERR("this zero-bubble schedule runs one chunk per stage");
    int p = sp->stages, m = sp->micro_batches;
    SchedActions seq;
    sched_actions_init(&seq, p);
    for (int s = 0; s < p; s++) {
        int warm = p - s - 1 + (warm_extra ? p - s - 1 : 0);
        if (warm > m)
            warm = m;
        int f = 0, b = 0;
        for (; f < warm; f++)
            sched_push(&seq, s, SCHED_F, f, 0);
        while (f < m) {
            sched_push(&seq, s, SCHED_F, f++, 0);
            sched_push(&seq, s, SCHED_I, b++, 0);
        }
        while (b < m)
            sched_push(&seq, s, SCHED_I, b++, 0);
    }
    Eng e;
    eng_init(&e, sp);
    int rc = eng_run(&e, ENG_SEQ, &seq, cap, out);
    eng_free(&e);
    sched_actions_free(&seq);
    if (rc != 0)
        ERR("internal error: the zero-bubble scheduler stalled");
    return 0;
}

/* Megatron-LM's interleaved 1F1B. Micro-batches go in groups of p: the
 * forwards run group by group, each group through chunk 0, 1, ..., v-1;
 * the backwards likewise through chunk v-1, ..., 0. Stage s warms up with
 * (p - s - 1) * 2 + (v - 1) * p forwards, then alternates one forward and
 * one backward. When m is not a multiple of p the last group is short and
 * that warm-up can leave a backward waiting on a forward queued behind it;
 * the list scheduler runs the order, and the warm-up grows by one until
 * every action can run (for multiples of p it never needs to). */
static int interleaved_order(const SchedSpec *sp, SchedActions *out, int extra)
{
    int p = sp->stages, v = sp->chunks, m = sp->micro_batches, total = m * v;
    int *fmb = base_calloc(total, sizeof *fmb), *fch = base_calloc(total, sizeof *fch);
    int *bmb = base_calloc(total, sizeof *bmb), *bch = base_calloc(total, sizeof *bch);
    int k = 0, kb = 0;
    for (int g = 0; g < m; g += p) {
        int size = m - g < p ? m - g : p;
        for (int c = 0; c < v; c++)
            for (int j = 0; j < size; j++, k++)
                fmb[k] = g + j, fch[k] = c;
        for (int c = v - 1; c >= 0; c--)
            for (int j = 0; j < size; j++, kb++)
                bmb[kb] = g + j, bch[kb] = c;
    }
    for (int s = 0; s < p; s++) {
        int warm = (p - s - 1) * 2 + (v - 1) * p + extra;
        if (warm > total)
            warm = total;
        int f = 0, b = 0;
        for (; f < warm; f++)
            sched_push(out, s, SCHED_F, fmb[f], fch[f]);
        while (f < total) {
            sched_push(out, s, SCHED_F, fmb[f], fch[f]);
            f++;
            sched_push(out, s, SCHED_BWD, bmb[b], bch[b]);
            b++;
        }
        while (b < total) {
            sched_push(out, s, SCHED_BWD, bmb[b], bch[b]);
            b++;
        }
    }
    free(fmb), free(fch), free(bmb), free(bch);
    return 0;
}

int sched_gen_interleaved(const SchedSpec *sp, SchedActions *out, char *err, size_t errsize)
{
    if (sp->chunks == 1)
        return sched_gen_1f1b(sp, out, err, errsize);
    int total = sp->micro_batches * sp->chunks;
    int *cap = base_calloc(sp->stages, sizeof *cap);
    for (int s = 0; s < sp->stages; s++)
        cap[s] = total + 1;
    for (int extra = 0; extra <= total; extra++) {
        SchedActions seq, ran;
        sched_actions_init(&seq, sp->stages);
        sched_actions_init(&ran, sp->stages);
        interleaved_order(sp, &seq, extra);
        Eng e;
        eng_init(&e, sp);
        int rc = eng_run(&e, ENG_SEQ, &seq, cap, &ran);
        eng_free(&e);
        sched_actions_free(&ran);
        if (rc == 0) {
            for (int s = 0; s < sp->stages; s++) {
                SchedList t = out->stage[s];
                out->stage[s] = seq.stage[s];
                seq.stage[s] = t;
            }
            sched_actions_free(&seq);
            free(cap);
            return 0;
        }
        sched_actions_free(&seq);
    }
    free(cap);
    ERR("internal error: no interleaved order runs");
}

int sched_gen_zb_h1(const SchedSpec *sp, SchedActions *out, char *err, size_t errsize)
{
    /* 1F1B's peak memory: p activations on any stage */
    int *cap = base_calloc(sp->stages, sizeof *cap);
    for (int s = 0; s < sp->stages; s++)
        cap[s] = sp->stages;
    int rc = zb_seq(sp, out, 0, cap, err, errsize);
    free(cap);
    return rc;
}

int sched_gen_zb_h2(const SchedSpec *sp, SchedActions *out, char *err, size_t errsize)
{
    /* up to 2p - 1 activations: warm-up long enough to cover the first
     * backward's round trip */
    int *cap = base_calloc(sp->stages, sizeof *cap);
    for (int s = 0; s < sp->stages; s++)
        cap[s] = 2 * sp->stages - 1;
    int rc = zb_seq(sp, out, 1, cap, err, errsize);
    free(cap);
    return rc;
}

int sched_gen_zb_v(const SchedSpec *sp, SchedActions *out, char *err, size_t errsize)
{
    if (sp->chunks != 2 || sp->place != SCHED_PLACE_V)
        ERR("zb-v runs two chunks per stage in a V");
    /* a chunk is half a stage's layers: 2p chunk activations is 1F1B's p */
    int *cap = base_calloc(sp->stages, sizeof *cap);
    for (int c = 2 * sp->stages;; c++) {
        for (int s = 0; s < sp->stages; s++)
            cap[s] = c;
        SchedActions tmp;
        sched_actions_init(&tmp, sp->stages);
        Eng e;
        eng_init(&e, sp);
        int rc = eng_run(&e, ENG_GREEDY, NULL, cap, &tmp);
        eng_free(&e);
        if (rc == 0) {
            for (int s = 0; s < sp->stages; s++) {
                SchedList t = out->stage[s];
                out->stage[s] = tmp.stage[s];
                tmp.stage[s] = t;
            }
            sched_actions_free(&tmp);
            break;
        }
        sched_actions_free(&tmp);
        if (c > 2 * sp->stages * sp->micro_batches) {
            free(cap);
            ERR("internal error: zb-v found no order");
        }
    }
    free(cap);
    return 0;
}
