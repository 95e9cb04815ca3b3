/* runtime/xport_nccl_plan.c: the NCCL transport's start-up check of a
 * plan (xport_nccl_plan.h), apart from xport_nccl.c so that it needs no
 * NCCL or GPU and is tested everywhere (tests/test_nccl_plan.c).
 *
 * It runs the transport's rules over each stage's program: the calls
 * rt_exec.c makes (which request each instruction posts, sends and waits
 * for, and the waits for every send at the end of a pass) and what
 * xport_nccl.c does with them (a posted receive waits, unlaunched, for the
 * next send's group or for the next wait, which launches the pending
 * receives in a group of their own; a group completes when all of it has;
 * groups run in order). It fails, with the stage, instruction and rule, at
 * the first violation of:
 *   N1  no group is launched while a receive launched in an earlier group
 *       has not been waited for (else the new group, and everything after
 *       it on the stream, would wait for that receive's data);
 *   N2  no wait is for a request whose group holds another receive not
 *       waited for yet (else the wait would wait for that data too);
 *   N3  no receive is outstanding at ReduceTiedGrads, ReduceGrads,
 *       OptimizerStep or the end of the pass;
 *   D3  between two stages, the kinds (activation, gradient) of the
 *       messages one sends to the other come in the order the other
 *       receives them (NCCL matches two ranks' messages in order, without
 *       tags; MPI matches per tag). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "xport_nccl_plan.h"

enum { NQ_IDLE = 0, NQ_POSTED = 1, NQ_LAUNCHED = 2 }; /* as XportReq.nstate */

typedef struct SimReq {
    int state, unit, recv, pc;
} SimReq;

typedef struct Sim {
    SimReq *r;
    int nr, units, stage;
    const char *what;   /* "training" / "evaluation" */
    char *why;
    size_t whysize;
} Sim;

static int sim_fail(Sim *S, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sim_fail(Sim *S, const char *fmt, ...)
{
    char m[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    snprintf(S->why, S->whysize, "stage %d's %s program: %s", S->stage, S->what, m);
    return 0;
}

static int sim_launch(Sim *S, int pc, int send)
{
    for (int j = 0; j < S->nr; j++)
        if (S->r[j].state == NQ_LAUNCHED && S->r[j].recv)
            return sim_fail(S, "instruction %d launches a transfer while the receive posted at %d is outstanding", pc,
                            S->r[j].pc);
    int u = ++S->units;
    for (int j = 0; j < S->nr; j++)
        if (S->r[j].state == NQ_POSTED)
            S->r[j].state = NQ_LAUNCHED, S->r[j].unit = u;
    if (send >= 0)
        S->r[send] = (SimReq){NQ_LAUNCHED, u, 0, pc};
    return 1;
}

static int sim_recv(Sim *S, int pc, int i)
{
    if (S->r[i].state != NQ_IDLE)
        return sim_fail(S, "instruction %d reuses a request still pending", pc);
    S->r[i] = (SimReq){NQ_POSTED, 0, 1, pc};
    return 1;
}

static int sim_send(Sim *S, int pc, int i)
{
    if (S->r[i].state != NQ_IDLE)
        return sim_fail(S, "instruction %d reuses a request still pending", pc);
    return sim_launch(S, pc, i);
}

static int sim_wait(Sim *S, int pc, int i)
{
    if (S->r[i].state == NQ_IDLE)
        return 1;
    for (int j = 0; j < S->nr; j++) /* flush: launch the pending receives */
        if (S->r[j].state == NQ_POSTED)
            return sim_launch(S, pc, -1) && sim_wait(S, pc, i);
    for (int j = 0; j < S->nr; j++)
        if (j != i && S->r[j].state == NQ_LAUNCHED && S->r[j].recv && S->r[j].unit == S->r[i].unit)
            return sim_fail(S, "the wait at instruction %d would also wait for the receive posted at %d", pc,
                            S->r[j].pc);
    S->r[i].state = NQ_IDLE;
    return 1;
}

static int sim_quiet(Sim *S, int pc, const char *where)
{
    for (int j = 0; j < S->nr; j++)
        if (S->r[j].state != NQ_IDLE && S->r[j].recv)
            return sim_fail(S, "the receive posted at %d is outstanding at %s (instruction %d)", S->r[j].pc, where, pc);
    return 1;
}

static int sim_program(const SchedPlan *pl, int s, const char *what, char *why, size_t whysize)
{
    int C = pl->chunks, NB = 1;
    for (int c = 0; c < C; c++)
        if (pl->nbuf[s * C + c] > NB)
            NB = pl->nbuf[s * C + c];
    /* requests as rt_exec.c names them: in_req, dout_req, out_req per
     * (chunk, buf), then gin_req[SCHED_GIN_AREAS] per chunk, used in
     * turn from the second by each Backward/BackwardInput (a first part,
     * which has one area, never sends from it: more here are the same) */
    enum { G = SCHED_GIN_AREAS };
    Sim S = {calloc((size_t)(3 * NB + G) * C, sizeof(SimReq)), (3 * NB + G) * C, 0, s, what, why, whysize};
    int *gin_at = calloc((size_t)C, sizeof *gin_at);
    if (!S.r || !gin_at) {
        free(S.r), free(gin_at);
        snprintf(why, whysize, "out of memory");
        return 0;
    }
#define REQ(k, c, b) (((k) * C + (c)) * NB + (b))
#define GIN(c, k) (3 * C * NB + G * (c) + (k))
    const SchedProgram *pr = &pl->prog[s];
    int ok = 1;
    for (int pc = 0; ok && pc < pr->n; pc++) {
        const SchedInstr *in = &pr->ins[pc];
        int c = in->chunk, b = in->buf;
        int needs_buf = in->op != SCHED_SendGrad && in->op != SCHED_ReduceTiedGrads && in->op != SCHED_ReduceGrads &&
                        in->op != SCHED_OptimizerStep;
        if (c >= C || (needs_buf && (b < 0 || b >= NB))) {
            ok = sim_fail(&S, "instruction %d names chunk %d buffer %d, out of range", pc, c, b);
            break;
        }
        switch ((SchedOp)in->op) {
        case SCHED_LoadMicroBatch: ok = sim_wait(&S, pc, REQ(2, c, b)); break;
        case SCHED_RecvActivation: ok = sim_wait(&S, pc, REQ(2, c, b)) && sim_recv(&S, pc, REQ(0, c, b)); break;
        case SCHED_RecvGrad: ok = sim_recv(&S, pc, REQ(1, c, b)); break;
        case SCHED_SendActivation: ok = sim_send(&S, pc, REQ(2, c, b)); break;
        case SCHED_SendGrad: ok = sim_send(&S, pc, GIN(c, gin_at[c])); break;
        case SCHED_Forward: ok = sim_wait(&S, pc, REQ(0, c, b)) && sim_wait(&S, pc, REQ(2, c, b)); break;
        case SCHED_Backward:
        case SCHED_BackwardInput:
            gin_at[c] = (gin_at[c] + 1) % G;
            ok = sim_wait(&S, pc, REQ(1, c, b)) && sim_wait(&S, pc, GIN(c, gin_at[c]));
            break;
        case SCHED_BackwardWeight: ok = sim_wait(&S, pc, REQ(1, c, b)); break;
        case SCHED_ReduceTiedGrads: ok = sim_quiet(&S, pc, "ReduceTiedGrads"); break;
        case SCHED_ReduceGrads: ok = sim_quiet(&S, pc, "ReduceGrads"); break;
        case SCHED_OptimizerStep: ok = sim_quiet(&S, pc, "OptimizerStep"); break;
        case SCHED_NOPS:
        default: ok = sim_fail(&S, "instruction %d has opcode %u", pc, in->op); break;
        }
    }
    /* rt_run_program's end: every send waited for */
    for (int c = 0; ok && c < C; c++) {
        ok = sim_wait(&S, pr->n, GIN(c, 0)) && sim_wait(&S, pr->n, GIN(c, 1));
        for (int b = 0; ok && b < NB; b++)
            ok = sim_wait(&S, pr->n, REQ(2, c, b));
    }
    if (ok)
        ok = sim_quiet(&S, pr->n, "the end of the pass");
#undef REQ
#undef GIN
    free(S.r), free(gin_at);
    return ok;
}

/* D3: between stages a and b, the kinds of a's sends to b, in a's program
 * order, are the kinds of b's receives from a, in b's. */
static int same_order(const SchedPlan *pl, int a, int b, const char *what, char *why, size_t whysize)
{
    const SchedProgram *pa = &pl->prog[a], *pb = &pl->prog[b];
    int i = 0, j = 0, k = 0;
    for (;; k++) {
        while (i < pa->n && !((pa->ins[i].op == SCHED_SendActivation || pa->ins[i].op == SCHED_SendGrad) &&
                              pa->ins[i].peer == b))
            i++;
        while (j < pb->n && !((pb->ins[j].op == SCHED_RecvActivation || pb->ins[j].op == SCHED_RecvGrad) &&
                              pb->ins[j].peer == a))
            j++;
        if (i == pa->n && j == pb->n)
            return 1;
        int sg = i < pa->n ? pa->ins[i].op == SCHED_SendGrad : -1;
        int rg = j < pb->n ? pb->ins[j].op == SCHED_RecvGrad : -1;
        if (sg != rg) {
            snprintf(why, whysize,
                     "%s program: message %d from stage %d to stage %d is sent as %s (instruction %d), received as %s "
                     "(instruction %d): NCCL has no tags",
                     what, k, a, b, sg < 0 ? "nothing" : sg ? "a gradient" : "an activation", i,
                     rg < 0 ? "nothing" : rg ? "a gradient" : "an activation", j);
            return 0;
        }
        i++, j++;
    }
}

int xp_nccl_plan_ok(const PlanSchedule *p, char *why, size_t whysize)
{
    const SchedPlan *pls[2] = {&p->train, &p->eval};
    const char *names[2] = {"training", "evaluation"};
    for (int k = 0; k < 2; k++) {
        const SchedPlan *pl = pls[k];
        if (!pl->prog)
            continue;
        for (int s = 0; s < pl->stages; s++)
            if (!sim_program(pl, s, names[k], why, whysize))
                return 0;
        for (int a = 0; a < pl->stages; a++)
            for (int b = 0; b < pl->stages; b++)
                if (a != b && !same_order(pl, a, b, names[k], why, whysize))
                    return 0;
    }
    return 1;
}

