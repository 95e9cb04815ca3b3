/* schedules/lower.c: from compute actions to per-stage programs.
 *
 * For each stage, in the generator's order, lowering adds what each compute
 * action needs and produces:
 *   before F   LoadMicroBatch (first part: inputs), RecvActivation (input
 *              from another stage) or nothing (hand-over from the previous
 *              chunk on this stage, named by Forward's link); the last part
 *              also loads its targets
 *   before B/I RecvGrad, unless the part is the last (the loss starts the
 *              backward) or the next part is on this stage (its backward
 *              writes the gradient through its link)
 *   after F    SendActivation to the next part's stage
 *   after B/I  SendGrad to the previous part's stage
 *   at the end ReduceTiedGrads (stages holding tied weights), ReduceGrads,
 *              OptimizerStep
 *
 * Receives are posted one compute ahead: the receives of action i+1 come
 * right after action i's compute and before action i's sends. Two
 * neighbours that each send to the other then never both wait in a send
 * (the classic 1F1B deadlock under blocking sends), and no extra buffer is
 * needed: a backward frees its buffer before the next receive is posted.
 *
 * An activation buffer of (stage, chunk) holds one micro-batch from its
 * load or receive until its backward (B, or W when split) ends; the input
 * gradient a backward computes goes to the chunk's gradient area, which
 * SendGrad sends from. Buffers are numbered per (stage, chunk), lowest free
 * first. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched.h"
#include "base_alloc.h"

/* line and col exist only once an action from a text schedule has come
 * (a generator's program has none: 8 bytes an instruction never touched) */
static void emit_line(SchedProgram *pr, const SchedList *L, int j)
{
    int line = L ? sched_action_line(L, j) : 0, col = L ? sched_action_col(L, j) : 0;
    if (line && !pr->line) {
        pr->line = base_calloc((size_t)pr->cap, sizeof *pr->line);
        pr->col = base_calloc((size_t)pr->cap, sizeof *pr->col);
    }
    if (pr->line) {
        pr->line[pr->n] = line; /* the action it serves, in a text schedule */
        pr->col[pr->n] = col;
    }
}

static inline void emit(SchedProgram *pr, int op, int mb, int chunk, int buf, int peer, int link, const SchedList *L,
                        int j)
{
    if (pr->n == pr->cap) {
        pr->cap = pr->cap ? 2 * pr->cap : 256;
        pr->ins = base_realloc(pr->ins, (size_t)pr->cap * sizeof *pr->ins);
        if (pr->line) {
            pr->line = base_realloc(pr->line, (size_t)pr->cap * sizeof *pr->line);
            pr->col = base_realloc(pr->col, (size_t)pr->cap * sizeof *pr->col);
        }
    }
    pr->ins[pr->n] = sched_instr(op, chunk, mb, buf, peer, link);
    if (pr->line || (L && L->line))
        emit_line(pr, L, j);
    pr->n++;
}

/* A min-heap of free buffer numbers for one (stage, chunk). */
typedef struct Pool {
    int *v;
    int n, cap;
    int next;    /* buffers created so far */
} Pool;

static int pool_get(Pool *p)
{
    if (p->n == 0)
        return p->next++;
    int top = p->v[0];
    p->v[0] = p->v[--p->n];
    for (int i = 0;;) {
        int l = 2 * i + 1, r = l + 1, s = i;
        if (l < p->n && p->v[l] < p->v[s])
            s = l;
        if (r < p->n && p->v[r] < p->v[s])
            s = r;
        if (s == i)
            break;
        int t = p->v[i];
        p->v[i] = p->v[s];
        p->v[s] = t;
        i = s;
    }
    return top;
}

static void pool_put(Pool *p, int b)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 16;
        p->v = realloc(p->v, (size_t)p->cap * sizeof *p->v);
        if (!p->v) {
            fputs("pipe: out of memory\n", stderr);
            exit(2);
        }
    }
    int i = p->n++;
    p->v[i] = b;
    while (i > 0 && p->v[(i - 1) / 2] > p->v[i]) {
        int t = p->v[i];
        p->v[i] = p->v[(i - 1) / 2];
        p->v[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
}

static const char *kind_name(int k)
{
    return k == SCHED_F ? "F" : k == SCHED_BWD ? "B" : k == SCHED_I ? "I" : "W";
}

/* State of one (mb, chunk) on the stage being lowered. */
enum { ST_F = 1, ST_B = 2, ST_I = 4, ST_W = 8 };

typedef struct Lower {
    const SchedParts *pp;
    const SchedActions *acts;
    int eval, S, V, P, M;
    int s;                /* the stage */
    const SchedList *L;   /* its actions */
    SchedProgram *pr;
    Pool *pool;           /* [V] */
    int *buf;             /* [M * V]: the buffer of (mb, chunk), or -1 */
    unsigned char *st;    /* [M * V]: ST_* flags */
    int *last_wgrad;      /* [V]: micro-batch of the last weight-gradient action */
    int *pending_free;    /* eval: buffer of the previous part to free after a hand-over forward, per chunk */
} Lower;

static int part_of(const Lower *lw, int chunk)
{
    return sched_part(lw->pp->place, lw->S, lw->s, chunk);
}

static int stage_of(const Lower *lw, int part)
{
    int st, ch;
    sched_place(lw->pp->place, lw->S, part, &st, &ch);
    return st;
}

static int chunk_of(const Lower *lw, int part)
{
    int st, ch;
    sched_place(lw->pp->place, lw->S, part, &st, &ch);
    return ch;
}

/* Whether part k's neighbour part k+d is on this same stage. */
static int local(const Lower *lw, int k, int d)
{
    return k + d >= 0 && k + d < lw->P && stage_of(lw, k + d) == lw->s;
}

static void release(Lower *lw, int mb, int c)
{
    int at = mb * lw->V + c;
    pool_put(&lw->pool[c], lw->buf[at]);
    lw->buf[at] = -1;
}

static void inputs(Lower *lw, const SchedAction *a, int j)
{
    int c = a->chunk, mb = a->mb, k = part_of(lw, c), at = mb * lw->V + c;
    if (a->kind == SCHED_F) {
        int b = lw->buf[at] = pool_get(&lw->pool[c]);
        if (k > 0 && !local(lw, k, -1)) {
            emit(lw->pr, SCHED_RecvActivation, mb, c, b, stage_of(lw, k - 1), -1, lw->L, j);
        }
        if (k == 0 || k == lw->P - 1)
            emit(lw->pr, SCHED_LoadMicroBatch, mb, c, b, -1, -1, lw->L, j);
    } else if ((a->kind == SCHED_BWD || a->kind == SCHED_I) && k < lw->P - 1 && !local(lw, k, +1)) {
        emit(lw->pr, SCHED_RecvGrad, mb, c, lw->buf[at], stage_of(lw, k + 1), -1, lw->L, j);
    }
}

static void compute(Lower *lw, const SchedAction *a, int j)
{
    int c = a->chunk, mb = a->mb, k = part_of(lw, c), at = mb * lw->V + c;
    int link = -1;
    if ((a->kind == SCHED_F || a->kind == SCHED_BWD || a->kind == SCHED_I) && k > 0 && local(lw, k, -1))
        link = lw->buf[mb * lw->V + chunk_of(lw, k - 1)];
    static const int ops[] = {SCHED_Forward, SCHED_Backward, SCHED_BackwardInput, SCHED_BackwardWeight};
    emit(lw->pr, ops[a->kind], mb, c, lw->buf[at], -1, link, lw->L, j);
    if (a->kind == SCHED_BWD || a->kind == SCHED_W)
        release(lw, mb, c);
    if (lw->eval && a->kind == SCHED_F) {
        /* the previous part's buffer was read through the link: done */
        if (link >= 0)
            release(lw, mb, chunk_of(lw, k - 1));
        if (k == lw->P - 1)
            release(lw, mb, c);
    }
}

static void outputs(Lower *lw, const SchedAction *a, int j)
{
    int c = a->chunk, mb = a->mb, k = part_of(lw, c), at = mb * lw->V + c;
    if (a->kind == SCHED_F && k < lw->P - 1 && !local(lw, k, +1)) {
        emit(lw->pr, SCHED_SendActivation, mb, c, lw->buf[at], stage_of(lw, k + 1), -1, lw->L, j);
        if (lw->eval)
            release(lw, mb, c);
    }
    if ((a->kind == SCHED_BWD || a->kind == SCHED_I) && k > 0 && !local(lw, k, -1))
        emit(lw->pr, SCHED_SendGrad, mb, c, -1, stage_of(lw, k - 1), -1, lw->L, j);
}

#define FAIL(ai, idx, ...)                                                         \
    do {                                                                          \
        snprintf(err, errsize, __VA_ARGS__);                                      \
        out->err_stage = lw.s, out->err_index = (idx), out->err_line = sched_action_line(L, (ai)), out->err_col = sched_action_col(L, (ai)); \
        goto fail;                                                                \
    } while (0)

int sched_lower(const SchedParts *pp, const SchedActions *acts, int eval, SchedPlan *out, char *err, size_t errsize)
{
    return sched_lower_at(pp, acts, eval, NULL, out, err, errsize);
}

int sched_lower_at(const SchedParts *pp, const SchedActions *acts, int eval, int *const *post_after, SchedPlan *out,
                   char *err, size_t errsize)
{
    int *order = NULL, *next = NULL;
    memset(out, 0, sizeof *out);
    Lower lw = {.pp = pp, .acts = acts, .eval = eval, .S = pp->stages, .V = pp->chunks, .M = pp->micro_batches};
    lw.P = lw.S * lw.V;
    out->stages = lw.S;
    out->chunks = lw.V;
    out->micro_batches = lw.M;
    out->place = pp->place;
    out->eval = eval;
    out->wgrad_in_order = 1;
    out->prog = base_calloc(lw.S, sizeof *out->prog);
    out->nbuf = base_calloc((size_t)lw.S * lw.V, sizeof *out->nbuf);
    lw.pool = base_calloc(lw.V, sizeof *lw.pool);
    lw.buf = base_calloc((size_t)lw.M * lw.V, sizeof *lw.buf);
    lw.st = base_calloc((size_t)lw.M * lw.V, sizeof *lw.st);
    lw.last_wgrad = base_calloc(lw.V, sizeof *lw.last_wgrad);
    if (acts->stages != lw.S) {
        snprintf(err, errsize, "the schedule has %d stages, the pipeline %d", acts->stages, lw.S);
        goto fail;
    }
    for (lw.s = 0; lw.s < lw.S; lw.s++) {
        const SchedList *L = lw.L = &acts->stage[lw.s];
        lw.pr = &out->prog[lw.s];
        for (int c = 0; c < lw.V; c++) {
            free(lw.pool[c].v);
            memset(&lw.pool[c], 0, sizeof lw.pool[c]);
            lw.last_wgrad[c] = -1;
        }
        for (size_t i = 0; i < (size_t)lw.M * lw.V; i++)
            lw.buf[i] = -1, lw.st[i] = 0;
        /* check the order first: every message below names the action */
        for (int i = 0; i < L->n; i++) {
            const SchedAction *a = &L->a[i];
            if (a->chunk >= lw.V)
                FAIL(i, i, "stage %d, action %d (%s%d.%d): chunk %d, but stages have %d chunk%s", lw.s, i,
                     kind_name(a->kind), a->mb, a->chunk, a->chunk, lw.V, lw.V == 1 ? "" : "s");
            if (a->mb < 0 || a->mb >= lw.M)
                FAIL(i, i, "stage %d, action %d (%s%d): micro-batch %d does not exist (micro_batches = %d)", lw.s, i,
                     kind_name(a->kind), a->mb, a->mb, lw.M);
            unsigned char *f = &lw.st[a->mb * lw.V + a->chunk];
            const char *kn = kind_name(a->kind);
            if (eval && a->kind != SCHED_F)
                FAIL(i, i, "stage %d, action %d (%s%d): an evaluation program runs forwards only", lw.s, i, kn, a->mb);
            switch (a->kind) {
            case SCHED_F:
                if (*f & ST_F)
                    FAIL(i, i, "stage %d, action %d (F%d): micro-batch %d is run forward twice on chunk %d", lw.s, i,
                         a->mb, a->mb, a->chunk);
                *f |= ST_F;
                break;
            case SCHED_BWD:
            case SCHED_I:
                if (!(*f & ST_F))
                    FAIL(i, i, "stage %d, action %d (%s%d): backward before its forward", lw.s, i, kn, a->mb);
                if (*f & (ST_B | ST_I))
                    FAIL(i, i, "stage %d, action %d (%s%d): micro-batch %d is run backward twice on chunk %d", lw.s,
                         i, kn, a->mb, a->mb, a->chunk);
                *f |= a->kind == SCHED_BWD ? ST_B : ST_I;
                break;
            case SCHED_W:
                if (!(*f & ST_I))
                    FAIL(i, i, "stage %d, action %d (W%d): W before its I", lw.s, i, a->mb);
                if (*f & ST_W)
                    FAIL(i, i, "stage %d, action %d (W%d): micro-batch %d has its W twice on chunk %d", lw.s, i,
                         a->mb, a->mb, a->chunk);
                *f |= ST_W;
                break;
            default:
                FAIL(i, i, "stage %d, action %d: unknown action kind %d", lw.s, i, a->kind);
            }
            if (a->kind == SCHED_BWD || a->kind == SCHED_W) {
                if (a->mb < lw.last_wgrad[a->chunk] && out->wgrad_in_order) {
                    out->wgrad_in_order = 0;
                    snprintf(out->note, sizeof out->note,
                             "stage %d, chunk %d: the weight gradient of micro-batch %d comes after that of %d", lw.s,
                             a->chunk, a->mb, lw.last_wgrad[a->chunk]);
                }
                lw.last_wgrad[a->chunk] = a->mb;
            }
        }
        for (int c = 0; c < lw.V; c++)
            for (int mb = 0; mb < lw.M; mb++) {
                unsigned char f = lw.st[mb * lw.V + c];
                const char *what = !(f & ST_F) ? "forward" : eval ? NULL : !(f & (ST_B | ST_I)) ? "backward"
                                                                         : (f & ST_I) && !(f & ST_W) ? "W" : NULL;
                if (what) {
                    FAIL(L->n - 1, L->n, "stage %d: micro-batch %d has no %s on chunk %d", lw.s, mb, what, c);
                }
            }
        if (L->n == 0)
            continue;
        /* room for every instruction at once (a forward brings at most a
         * receive, a load and a send, a backward a receive and a send; the
         * stage ends with three): the array never moves */
        lw.pr->cap = 4 * L->n + 3;
        lw.pr->ins = base_realloc(NULL, (size_t)lw.pr->cap * sizeof *lw.pr->ins);
        /* which actions' inputs go after compute i: sorted by position,
         * bucketed (order[] lists action indices; next[] chains them) */
        free(order), free(next);
        order = base_calloc(L->n + 1, sizeof *order);
        next = base_calloc(L->n, sizeof *next);
        for (int i = 0; i <= L->n; i++)
            order[i] = -1;
        for (int j = L->n - 1; j >= 0; j--) {
            int at = post_after ? post_after[lw.s][j] : j - 1;
            if (at >= j || at < -1)
                at = j - 1;
            next[j] = order[at + 1];
            order[at + 1] = j;
        }
        for (int j = order[0]; j >= 0; j = next[j])
            inputs(&lw, &L->a[j], j);
        for (int i = 0; i < L->n; i++) {
            compute(&lw, &L->a[i], i);
            for (int j = order[i + 1]; j >= 0; j = next[j])
                inputs(&lw, &L->a[j], j);
            outputs(&lw, &L->a[i], i);
        }
        if (!eval) {
            if (pp->tied_stage && pp->tied_stage[lw.s])
                emit(lw.pr, SCHED_ReduceTiedGrads, -1, 0, -1, -1, -1, NULL, 0);
            emit(lw.pr, SCHED_ReduceGrads, -1, 0, -1, -1, -1, NULL, 0);
            emit(lw.pr, SCHED_OptimizerStep, -1, 0, -1, -1, -1, NULL, 0);
        }
        for (int c = 0; c < lw.V; c++)
            out->nbuf[lw.s * lw.V + c] = lw.pool[c].next;
    }
    for (int c = 0; c < lw.V; c++)
        free(lw.pool[c].v);
    free(lw.pool), free(lw.buf), free(lw.st), free(lw.last_wgrad);
    free(order), free(next);
    return 0;
fail:
    free(order), free(next);
    for (int c = 0; c < lw.V; c++)
        free(lw.pool[c].v);
    free(lw.pool), free(lw.buf), free(lw.st), free(lw.last_wgrad);
    int es = out->err_stage, ei = out->err_index, el = out->err_line, ec = out->err_col;
    sched_plan_free(out);
    out->err_stage = es, out->err_index = ei, out->err_line = el, out->err_col = ec;
    return -1;
}

void sched_plan_free(SchedPlan *p)
{
    if (p->prog)
        for (int s = 0; s < p->stages; s++) {
            free(p->prog[s].ins);
            free(p->prog[s].line);
            free(p->prog[s].col);
        }
    free(p->prog);
    free(p->nbuf);
    memset(p, 0, sizeof *p);
}

/* Of stage r's program pr (from the actions L): the action whose receive
 * is at pc rpc (*j, -1: none), and the last action whose compute comes
 * before pc stop (*a; stop < 0: the program ended, so the last action).
 * Read off the program: its compute instructions are the actions in
 * order, and a receive feeds the one action with its micro-batch, chunk
 * and direction (a forward's activation, a backward's gradient). */
static void stuck_actions(const SchedProgram *pr, const SchedList *L, int rpc, int stop, int *j, int *a)
{
    const SchedInstr *r = &pr->ins[rpc];
    *j = -1;
    for (int k = 0; k < L->n && *j < 0; k++) {
        const SchedAction *x = &L->a[k];
        int fwd = x->kind == SCHED_F, bwd = x->kind == SCHED_BWD || x->kind == SCHED_I;
        if (x->mb == r->mb && x->chunk == r->chunk &&
            ((r->op == SCHED_RecvActivation && fwd) || (r->op == SCHED_RecvGrad && bwd)))
            *j = k;
    }
    if (stop < 0) {
        *a = L->n - 1;
        return;
    }
    *a = -1;
    for (int pc = 0; pc < stop; pc++) {
        int op = pr->ins[pc].op;
        *a += op == SCHED_Forward || op == SCHED_Backward || op == SCHED_BackwardInput || op == SCHED_BackwardWeight;
    }
}

int sched_build(const SchedParts *pp, const SchedActions *acts, int eval, const SchedCosts *costs, SchedPlan *plan,
                SchedSim *sim, char *err, size_t errsize)
{
    return sched_build_with(pp, acts, eval, costs, plan, sim, err, errsize, NULL);
}

int sched_build_with(const SchedParts *pp, const SchedActions *acts, int eval, const SchedCosts *costs,
                     SchedPlan *plan, SchedSim *sim, char *err, size_t errsize, const SchedBuildHooks *h)
{
    int S = pp->stages, rc = 0;
    int **post = base_calloc(S, sizeof *post);
    for (int s = 0; s < S; s++) {
        int n = acts->stage[s].n;
        post[s] = base_calloc(n ? n : 1, sizeof **post);
        for (int j = 0; j < n; j++)
            post[s][j] = j - 1;
    }
    for (int round = 0;; round++) {
        if (sched_lower_at(pp, acts, eval, post, plan, err, errsize) != 0) {
            rc = -1;
            break;
        }
        if (h && h->lowered)
            h->lowered(h->ctx, round);
        sched_verify(plan, pp, costs, sim);
        if (sim->ok || !sim->deadlock || round > 100000)
            break;
        /* a deadlock: hoist the receive of each stuck send to just before
         * where its receiver waits */
        int moved = 0;
        for (int s = 0; s < S; s++) {
            int rpc = sim->stuck_recv_pc[s];
            if (rpc < 0 || sim->stuck_pc[s] < 0)
                continue;
            const SchedInstr *snd = &plan->prog[s].ins[sim->stuck_pc[s]];
            int r = snd->peer, j, a;
            stuck_actions(&plan->prog[r], &acts->stage[r], rpc, sim->stuck_pc[r], &j, &a);
            if (j >= 0 && a < post[r][j]) {
                post[r][j] = a;
                moved = 1;
            }
        }
        if (!moved)
            break;
        if (h && h->relower)
            h->relower(h->ctx);
        sched_sim_free(sim);
        sched_plan_free(plan);
    }
    for (int s = 0; s < S; s++)
        free(post[s]);
    free(post);
    return rc;
}
