/* schedules/sched.h: the instruction set, per-stage programs, compute
 * actions, the generators, lowering, and the verifier/simulator.
 *
 * The pipeline, end to end:
 *   generator  -> SchedActions   per stage: F, B, I, W with mb and chunk
 *   lowering   -> SchedPlan      per stage: instructions with buffers and peers
 *   verifier   -> SchedSim       all stages run together on an abstract
 *                                machine: deadlocks, matching, liveness, and
 *                                a cost model's timeline
 * A stage's program is shared by its data-parallel replicas: rank r runs
 * stage r / dp. Peers are stages.
 *
 * Instruction layout (16 bytes, little-endian in plan.bin):
 *
 *    0      1       2               4               8              12             16
 *    +------+-------+---------------+---------------+--------------+--------------+
 *    |  op  | chunk |  peer (i16)   |   mb (i32)    |  buf (i32)   |  link (i32)  |
 *    +------+-------+---------------+---------------+--------------+--------------+
 *  unused operands hold -1 (chunk: 0). */
#ifndef PIPE_SCHED_H
#define PIPE_SCHED_H

#include <stdint.h>
#include <stdio.h>

#include "diag.h"

/* ---- the instruction set --------------------------------------------- */

enum { SCHED_M = 1, SCHED_C = 2, SCHED_B = 4, SCHED_P = 8, SCHED_L = 16 };

typedef enum SchedOp {
#define M SCHED_M
#define C SCHED_C
#define B SCHED_B
#define P SCHED_P
#define L SCHED_L
#define SCHED_OP(name, operands, doc) SCHED_##name,
#include "ops.def"
#undef SCHED_OP
#undef M
#undef C
#undef B
#undef P
#undef L
    SCHED_NOPS
} SchedOp;

extern const char *const sched_op_names[SCHED_NOPS];
extern const unsigned sched_op_operands[SCHED_NOPS];
extern const char *const sched_op_docs[SCHED_NOPS];

/* One instruction in 8 bytes, as in plan.bin (plan_file.c gives the
 * limits that make every value fit: 64 ops and chunks, 2^16 micro-batches
 * and buffers, 4,096 stages). peer (P instructions) and link (L ones) are
 * one field under two names: no instruction has both (ops.def), and
 * whichever it has not reads as the other, so a reader names the one its
 * instruction has. Operands an instruction lacks are chunk 0 and -1.
 * Half of the 16 bytes the fields took as separate integers: a big plan's
 * programs are most of what pipec touches (first touches of fresh pages
 * were half its time). */
typedef union SchedInstr {
    struct {
        uint64_t op : 6;
        uint64_t chunk : 6;
        int64_t mb : 17;
        int64_t buf : 17;
        int64_t peer : 18;
    };
    struct {
        uint64_t : 46;
        int64_t link : 18;
    };
} SchedInstr;

/* The instruction with these operands; peer or link, whichever op has
 * (the other is ignored), or -1 */
static inline SchedInstr sched_instr(int op, int chunk, int mb, int buf, int peer, int link)
{
    unsigned o = op >= 0 && op < SCHED_NOPS ? sched_op_operands[op] : 0;
    SchedInstr in = {0};
    in.op = (unsigned)op & 63u;
    in.chunk = (unsigned)chunk & 63u;
    in.mb = mb;
    in.buf = buf;
    in.peer = (o & SCHED_P) ? peer : (o & SCHED_L) ? link : -1;
    return in;
}

/* One instruction in fixed columns, the same text in the listing, the trace
 * labels and the golden tests: "Forward          mb 3    chunk 0  buf 1". */
void sched_instr_text(const SchedInstr *in, char *buf, size_t size);
/* Short label for pictures: "F3", "B3.1", "I0", "W2", "send a3". */
void sched_instr_label(const SchedInstr *in, char *buf, size_t size);

/* ---- placement -------------------------------------------------------- */

typedef enum SchedPlacement { SCHED_PLACE_LOOP, SCHED_PLACE_V } SchedPlacement;
/* The stage and chunk of model part k (0 <= k < stages * chunks). */
static inline void sched_place(SchedPlacement place, int stages, int k, int *stage, int *chunk)
{
    if (k < stages) { /* the first chunk, either way: no division */
        *stage = k, *chunk = 0;
    } else if (place == SCHED_PLACE_V) {
        *chunk = 1;
        *stage = 2 * stages - 1 - k;
    } else {
        *stage = k % stages;
        *chunk = k / stages;
    }
}
/* The part at (stage, chunk). */
static inline int sched_part(SchedPlacement place, int stages, int stage, int chunk)
{
    if (place == SCHED_PLACE_V)
        return chunk == 0 ? stage : 2 * stages - 1 - stage;
    return chunk * stages + stage;
}

/* ---- compute actions (what a generator emits) ------------------------- */

typedef enum SchedKind { SCHED_F, SCHED_BWD, SCHED_I, SCHED_W } SchedKind;

typedef struct SchedAction {
    uint8_t kind;     /* SchedKind */
    uint8_t chunk;
    int32_t mb;
} SchedAction;

/* A stage's actions. Where they come from a text schedule, line and col
 * give each one's place in it (1-based); a generator's list has none
 * (NULL: 8 bytes an action the big plans never touch) */
typedef struct SchedList {
    SchedAction *a;
    int32_t *line, *col;
    int n, cap;
} SchedList;

typedef struct SchedActions {
    int stages;
    SchedList *stage;     /* [stages] */
} SchedActions;

void sched_actions_init(SchedActions *sa, int stages);
void sched_actions_free(SchedActions *sa);
void sched_push(SchedActions *sa, int stage, SchedKind kind, int mb, int chunk);
/* the same, for an action read from a text schedule at line and col */
void sched_push_at(SchedActions *sa, int stage, SchedKind kind, int mb, int chunk, int line, int col);
/* action i's text-schedule line and column, or 0 */
static inline int sched_action_line(const SchedList *l, int i)
{
    return l->line && i >= 0 && i < l->n ? l->line[i] : 0;
}
static inline int sched_action_col(const SchedList *l, int i)
{
    return l->col && i >= 0 && i < l->n ? l->col[i] : 0;
}

/* ---- generators ------------------------------------------------------- */

/* What a generator knows. Costs are per part (stages * chunks), in any
 * consistent unit; generators that place work by simulation use them. */
typedef struct SchedSpec {
    int stages, chunks, micro_batches;
    SchedPlacement place;
    const double *cost_f, *cost_b, *cost_i, *cost_w; /* may be NULL: unit costs F=1, B=2, I=W=1 */
} SchedSpec;

typedef int (*SchedGenerator)(const SchedSpec *spec, SchedActions *out, char *err, size_t errsize);

/* The generators, all in schedules/gen.c: the functions of the generator
 * column of schedules/schedules.def (the table itself, with each
 * schedule's name, arguments and placement, is compiled into
 * plan/plan_config.c and compiler/pc_planner.c). sched_gen_eval is no
 * schedule: it gives the forward-only evaluation programs. */
int sched_gen_gpipe(const SchedSpec *, SchedActions *, char *, size_t);
int sched_gen_1f1b(const SchedSpec *, SchedActions *, char *, size_t);
int sched_gen_interleaved(const SchedSpec *, SchedActions *, char *, size_t);
int sched_gen_looped_bfs(const SchedSpec *, SchedActions *, char *, size_t);
int sched_gen_zb_h1(const SchedSpec *, SchedActions *, char *, size_t);
int sched_gen_zb_h2(const SchedSpec *, SchedActions *, char *, size_t);
int sched_gen_zb_v(const SchedSpec *, SchedActions *, char *, size_t);
int sched_gen_dualpipev(const SchedSpec *, SchedActions *, char *, size_t);
int sched_gen_eval(const SchedSpec *, SchedActions *, char *, size_t);

/* ---- plans ------------------------------------------------------------- */

typedef struct SchedProgram {
    SchedInstr *ins;
    int n, cap;
    int32_t *line;        /* per instruction: text-schedule line, or 0 (not in plan.bin); NULL: all 0 */
    int32_t *col;         /* per instruction: the action's column on that line, or 0 (not in plan.bin); NULL: all 0 */
} SchedProgram;

/* What lowering needs to know about the model's parts. */
typedef struct SchedParts {
    int stages, chunks, micro_batches;
    SchedPlacement place;
    const int *tied_stage;   /* [stages]: 1 if the stage holds a tied weight (or a copy) */
    int grad_clip;           /* clipping by the global norm (OptimizerStep waits for every stage in any case) */
} SchedParts;

typedef struct SchedPlan {
    int stages, chunks, micro_batches;
    SchedPlacement place;
    int eval;                /* a forward-only program */
    SchedProgram *prog;      /* [stages] */
    int *nbuf;               /* [stages * chunks]: activation buffers per (stage, chunk) */
    int wgrad_in_order;      /* weight gradients accumulate in micro-batch order everywhere */
    char note[256];          /* when not: where the order breaks */
    int err_stage, err_index, err_line, err_col; /* when lowering fails: the action at fault */
} SchedPlan;

/* Adds loads, sends/receives, reductions and the optimizer step, and assigns
 * buffers. eval: a forward-only program (no backward, no reductions).
 * Returns 0, or -1 with a message (an action list that is not a valid
 * order: a micro-batch missing or repeated, a backward before its forward). */
int sched_lower(const SchedParts *parts, const SchedActions *acts, int eval, SchedPlan *out, char *err, size_t errsize);
/* The same, with the receive of action j on stage s posted right after the
 * compute of action post_after[s][j] (-1: before the first); NULL: after
 * action j - 1. Entries must not decrease along a channel. */
int sched_lower_at(const SchedParts *parts, const SchedActions *acts, int eval, int *const *post_after, SchedPlan *out,
                   char *err, size_t errsize);

void sched_plan_free(SchedPlan *p);

/* ---- verifier and simulator ------------------------------------------- */

/* A chunk that sends input gradients keeps this many areas for them and
 * writes them in turn: a backward waits until the send from the area it
 * is about to write, SCHED_GIN_AREAS backwards ago, has completed (the
 * runtime's rule, plan_gin_areas, and the simulator's) */
#define SCHED_GIN_AREAS 2

typedef struct SchedCosts {
    const double *f, *b, *i, *w;    /* per part: seconds */
    const double *bytes_fwd;        /* per part k < P-1: bytes sent to part k+1 */
    double link_bandwidth;          /* bytes per second; 0: free */
    const double *buf_bytes;        /* per part: bytes of one activation buffer */
    int no_timeline;                /* skip start/end per instruction (only pictures need them) */
    const double *opt;              /* per stage: seconds of its OptimizerStep, or NULL (free) */
    double link_latency;            /* seconds a transfer takes beyond its bytes / bandwidth */
} SchedCosts;

typedef struct SchedSim {
    int stages;
    int ok;
    char error[2048];         /* when !ok: what failed, with stage, pc, op, mb */
    int err_stage, err_pc;    /* where (for mapping back to a text schedule line) */
    double step_time;
    double *busy, *idle;      /* [stages] */
    double bubble;            /* total idle / (stages * step_time) */
    int *peak_buffers;        /* [stages] */
    double *peak_bytes;       /* [stages] */
    double **start, **end;    /* [stage][pc]; NULL rows when costs->no_timeline */
    double **peer_time;       /* [stage][pc]: for a receive, when its matching send ran */
    int deadlock;             /* !ok because every stage waits (the only failure lowering can repair) */
    int *stuck_pc;            /* [stage]: after a deadlock, where each stage waits (-1: finished) */
    int *stuck_recv_pc;       /* [stage]: when waiting in a send, the pc of the matching receive */
} SchedSim;

/* Runs every stage's program together. Sends block until the matching
 * receive is posted (so a verified plan cannot deadlock whatever the
 * transport buffers); compute waits for its data; ReduceTiedGrads waits
 * for every stage that holds a tied weight, OptimizerStep for every stage
 * (the runtime votes there on NaN/Inf). costs may be NULL (verification
 * only). */
void sched_verify(const SchedPlan *plan, const SchedParts *parts, const SchedCosts *costs, SchedSim *out);
/* The two machines sched_verify runs (the tests hold them to each other).
 * full: a pre-pass numbers every channel's sends and receives and matches
 * them before the run, so a failure is reported where it is first seen
 * and a deadlock names each stuck send's receive. fast: the pre-pass
 * checks each instruction alone; the run matches each send with its
 * receive as it goes and finds, at the end, any receive no send met. Both
 * pass the same plans with the same simulation; sched_verify runs fast,
 * and full when fast fails. */
void sched_verify_machine(const SchedPlan *plan, const SchedParts *parts, const SchedCosts *costs, int fast,
                          SchedSim *out);
void sched_sim_free(SchedSim *s);

/* Lowering plus the receive placement that makes a plan pass under
 * blocking sends: lower with receives one compute ahead and verify; while
 * that deadlocks, post the receive of every send caught in the deadlock
 * before the point where its receiver waits, and again. The plan and its
 * simulation under costs are returned (sim->ok says whether it verified).
 * Returns -1 only when lowering itself fails. */
int sched_build(const SchedParts *parts, const SchedActions *acts, int eval, const SchedCosts *costs, SchedPlan *plan,
                SchedSim *sim, char *err, size_t errsize);

/* sched_build with notices for a caller that reads the plan on another
 * thread while it is verified (either may be NULL): lowered(ctx, round)
 * runs after each lowering, before its verification (round 0 first; the
 * plan stays as it is until relower); relower(ctx) runs before a
 * deadlock's lowering again replaces the plan, so that a reader can stop
 * first. */
typedef struct SchedBuildHooks {
    void (*lowered)(void *ctx, int round);
    void (*relower)(void *ctx);
    void *ctx;
} SchedBuildHooks;
int sched_build_with(const SchedParts *parts, const SchedActions *acts, int eval, const SchedCosts *costs,
                     SchedPlan *plan, SchedSim *sim, char *err, size_t errsize, const SchedBuildHooks *hooks);

/* ---- text schedules ----------------------------------------------------- */

/* The text format (docs/schedules.md):
 *     # comments
 *     stages: 4            (optional; checked against the pipeline)
 *     chunks: 2            (optional; else the largest chunk used + 1)
 *     placement: loop | v  (optional; default loop)
 *     stage 0: F0 F1 B0 F2.1 I3 W3
 * one line per stage, stages from 0, actions F, B, I, W with micro-batch
 * and, after a dot, the chunk. Reads a registered source; every error names
 * file:line:col. Returns 0 or -1 (reported). stages < 0: take the file's. */
typedef struct SchedText {
    int stages, chunks;
    SchedPlacement place;
    SchedActions acts;
} SchedText;
int sched_text_read(DiagList *dl, int src, int stages, SchedText *out);
/* Writes actions in the same format (pipec --emit sched). */
void sched_text_write(FILE *out, const SchedActions *acts, int chunks, SchedPlacement place, const char *comment);

#endif
