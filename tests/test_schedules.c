/* tests/test_schedules.c: every generator through lowering and the
 * verifier for p in 1..8, m in 1..32, v in 1..4 where the schedule allows
 * them; the bubble formulas where theory holds; peak buffers; and the
 * verifier's and lowering's rejections of bad schedules. */
#include <math.h>

#include "sched.h"
#include "testutil.h"

typedef struct Gen {
    const char *name;
    SchedGenerator gen;
    SchedPlacement place;
    int vmin, vmax;
} Gen;

/* Every generator of schedules/schedules.def, from the table itself, so a
 * new one is tested the day it lands: chunks 1..4 when its signature takes
 * "chunks", 2 under the V placement, else 1. The file schedule (no
 * generator) is left out. */
static const Gen ALL[] = {
#define SCHED_DEF(id, name, sig, place, split, gen, doc) \
    {name, gen, SCHED_PLACE_##place, SCHED_PLACE_##place == SCHED_PLACE_V ? 2 : 1, 0},
#include "schedules.def"
#undef SCHED_DEF
};
#define NALL ((int)(sizeof ALL / sizeof ALL[0]))
static const char *const SIGS[NALL] = {
#define SCHED_DEF(id, name, sig, place, split, gen, doc) sig,
#include "schedules.def"
#undef SCHED_DEF
};
static Gen GENS[NALL];
static int NGENS;

static void gens_init(void)
{
    NGENS = 0;
    for (int i = 0; i < NALL; i++)
        if (ALL[i].gen) {
            GENS[NGENS] = ALL[i];
            GENS[NGENS].vmax = ALL[i].place == SCHED_PLACE_V ? 2 : strstr(SIGS[i], "chunks") ? 4 : 1;
            NGENS++;
        }
}

static const Gen *gen_named(const char *name)
{
    for (int i = 0; i < NGENS; i++)
        if (strcmp(GENS[i].name, name) == 0)
            return &GENS[i];
    ck_abort_msg("no generator '%s' in schedules.def", name);
    return NULL;
}

/* Equal stage costs: a chunk is 1/v of a stage; B = 2F, I = W = F. */
typedef struct Unit {
    double *f, *b, *i, *w;
    SchedCosts c;
} Unit;

static void unit_init(Unit *u, int P, int v)
{
    u->f = calloc(P, sizeof *u->f), u->b = calloc(P, sizeof *u->b);
    u->i = calloc(P, sizeof *u->i), u->w = calloc(P, sizeof *u->w);
    for (int k = 0; k < P; k++)
        u->f[k] = 1.0 / v, u->b[k] = 2.0 / v, u->i[k] = 1.0 / v, u->w[k] = 1.0 / v;
    memset(&u->c, 0, sizeof u->c);
    u->c.f = u->f, u->c.b = u->b, u->c.i = u->i, u->c.w = u->w;
}

static void unit_free(Unit *u)
{
    free(u->f), free(u->b), free(u->i), free(u->w);
}

/* Generates, builds and verifies one case; returns the simulation (caller
 * frees) or fails the test with the case named. */
static void run_case(const Gen *g, int p, int m, int v, SchedPlan *pl, SchedSim *sim)
{
    Unit u;
    unit_init(&u, p * v, v);
    SchedSpec sp = {p, v, m, g->place, u.f, u.b, u.i, u.w};
    SchedActions a;
    sched_actions_init(&a, p);
    char err[512] = "";
    int rc = g->gen(&sp, &a, err, sizeof err);
    ck_assert_msg(rc == 0, "%s p=%d m=%d v=%d: %s", g->name, p, m, v, err);
    SchedParts pp = {p, v, m, g->place, NULL, 0};
    rc = sched_build(&pp, &a, 0, &u.c, pl, sim, err, sizeof err);
    ck_assert_msg(rc == 0, "%s p=%d m=%d v=%d: lowering: %s", g->name, p, m, v, err);
    ck_assert_msg(sim->ok, "%s p=%d m=%d v=%d: %s", g->name, p, m, v, sim->error);
    ck_assert_msg(pl->wgrad_in_order, "%s p=%d m=%d v=%d: %s", g->name, p, m, v, pl->note);
    sched_actions_free(&a);
    unit_free(&u);
}

START_TEST(every_generator_verifies)
{
    const Gen *g = &GENS[_i];
    int cases = 0;
    for (int v = g->vmin; v <= g->vmax; v++)
        for (int p = 1; p <= 8; p++)
            for (int m = 1; m <= 32; m++) {
                if (g->gen == sched_gen_dualpipev && m < 2 * p)
                    continue;
                SchedPlan pl;
                SchedSim sim;
                run_case(g, p, m, v, &pl, &sim);
                double th = -1;
                if ((g->gen == sched_gen_gpipe || g->gen == sched_gen_1f1b) && m >= p)
                    th = (double)(p - 1) / (m + p - 1);
                if (g->gen == sched_gen_interleaved && m >= p && m % p == 0)
                    th = (double)(p - 1) / (v * m + p - 1);
                if (g->gen == sched_gen_zb_h1 && m >= p)
                    th = (double)(p - 1) / (3 * m + p - 1);
                if (th >= 0)
                    ck_assert_msg(fabs(sim.bubble - th) < 1e-9, "%s p=%d m=%d v=%d: bubble %.6f, theory %.6f", g->name,
                                  p, m, v, sim.bubble, th);
                for (int s = 0; s < p; s++) {
                    if (g->gen == sched_gen_1f1b)
                        ck_assert_msg(sim.peak_buffers[s] == (m < p - s ? m : p - s), "1f1b p=%d m=%d stage %d: peak %d",
                                      p, m, s, sim.peak_buffers[s]);
                    if (g->gen == sched_gen_gpipe)
                        ck_assert_int_eq(sim.peak_buffers[s], m);
                    if (g->gen == sched_gen_zb_h1 && m >= p)
                        ck_assert_msg(sim.peak_buffers[s] <= p, "zb-h1 p=%d m=%d stage %d: peak %d > p", p, m, s,
                                      sim.peak_buffers[s]);
                }
                sched_sim_free(&sim);
                sched_plan_free(&pl);
                cases++;
            }
    ck_assert_int_gt(cases, 100);
}
END_TEST

START_TEST(generators_from_the_table)
{
    /* the eight of docs/schedules.md at least, each once */
    ck_assert_int_ge(NGENS, 8);
    for (int i = 0; i < NGENS; i++)
        for (int j = i + 1; j < NGENS; j++)
            ck_assert_str_ne(GENS[i].name, GENS[j].name);
    ck_assert_int_eq(gen_named("interleaved")->vmax, 4);
    ck_assert_int_eq(gen_named("zb-v")->vmin, 2);
    ck_assert_int_eq(gen_named("1f1b")->vmax, 1);
}
END_TEST

START_TEST(zero_bubble_beats_1f1b)
{
    /* at the same memory, zb-h1 idles a third of 1F1B's time */
    SchedPlan a, b;
    SchedSim sa, sb;
    run_case(gen_named("1f1b"), 4, 8, 1, &a, &sa);
    run_case(gen_named("zb-h1"), 4, 8, 1, &b, &sb);
    double ia = 0, ib = 0;
    for (int s = 0; s < 4; s++)
        ia += sa.idle[s], ib += sb.idle[s];
    ck_assert(fabs(ib * 3 - ia) < 1e-9);
    sched_sim_free(&sa), sched_sim_free(&sb), sched_plan_free(&a), sched_plan_free(&b);
}
END_TEST

/* ---- lowering: what a 2-stage 1F1B plan looks like ---- */

START_TEST(lowered_1f1b_listing)
{
    SchedSpec sp = {2, 1, 2, SCHED_PLACE_LOOP, 0, 0, 0, 0};
    SchedActions a;
    sched_actions_init(&a, 2);
    char err[256];
    ck_assert_int_eq(sched_gen_1f1b(&sp, &a, err, sizeof err), 0);
    SchedParts pp = {2, 1, 2, SCHED_PLACE_LOOP, NULL, 0};
    SchedPlan pl;
    SchedSim sim;
    ck_assert_int_eq(sched_build(&pp, &a, 0, NULL, &pl, &sim, err, sizeof err), 0);
    ck_assert(sim.ok);
    const char *want0[] = {
        "LoadMicroBatch   mb     0  chunk 0  buf    0",
        "Forward          mb     0  chunk 0  buf    0",
        "LoadMicroBatch   mb     1  chunk 0  buf    1",
        "SendActivation   mb     0  chunk 0  buf    0 peer    1",
        "Forward          mb     1  chunk 0  buf    1",
        "RecvGrad         mb     0  chunk 0  buf    0 peer    1",
        "SendActivation   mb     1  chunk 0  buf    1 peer    1",
        "Backward         mb     0  chunk 0  buf    0",
        "RecvGrad         mb     1  chunk 0  buf    1 peer    1",
        "Backward         mb     1  chunk 0  buf    1",
        "ReduceGrads",
        "OptimizerStep",
    };
    ck_assert_int_eq(pl.prog[0].n, 12);
    for (int i = 0; i < 12; i++) {
        char line[160];
        sched_instr_text(&pl.prog[0].ins[i], line, sizeof line);
        ck_assert_str_eq(line, want0[i]);
    }
    const char *want1[] = {
        "RecvActivation   mb     0  chunk 0  buf    0 peer    0",
        "LoadMicroBatch   mb     0  chunk 0  buf    0",
        "Forward          mb     0  chunk 0  buf    0",
        "Backward         mb     0  chunk 0  buf    0",
        "RecvActivation   mb     1  chunk 0  buf    0 peer    0",
        "LoadMicroBatch   mb     1  chunk 0  buf    0",
        "SendGrad         mb     0  chunk 0           peer    0",
        "Forward          mb     1  chunk 0  buf    0",
        "Backward         mb     1  chunk 0  buf    0",
        "SendGrad         mb     1  chunk 0           peer    0",
        "ReduceGrads",
        "OptimizerStep",
    };
    ck_assert_int_eq(pl.prog[1].n, 12);
    for (int i = 0; i < 12; i++) {
        char line[160];
        sched_instr_text(&pl.prog[1].ins[i], line, sizeof line);
        ck_assert_str_eq(line, want1[i]);
    }
    ck_assert_int_eq(sim.peak_buffers[0], 2);
    ck_assert_int_eq(sim.peak_buffers[1], 1);
    sched_sim_free(&sim);
    sched_plan_free(&pl);
    sched_actions_free(&a);
}
END_TEST

START_TEST(v_handover_uses_link)
{
    SchedSpec sp = {2, 2, 4, SCHED_PLACE_V, 0, 0, 0, 0};
    SchedActions a;
    sched_actions_init(&a, 2);
    char err[256];
    ck_assert_int_eq(sched_gen_zb_v(&sp, &a, err, sizeof err), 0);
    SchedParts pp = {2, 2, 4, SCHED_PLACE_V, NULL, 0};
    SchedPlan pl;
    SchedSim sim;
    ck_assert_int_eq(sched_build(&pp, &a, 0, NULL, &pl, &sim, err, sizeof err), 0);
    ck_assert_msg(sim.ok, "%s", sim.error);
    /* stage 1 holds parts 1 and 2: part 2's forward reads part 1's buffer */
    int links = 0, sends_to_self = 0;
    for (int i = 0; i < pl.prog[1].n; i++) {
        const SchedInstr *in = &pl.prog[1].ins[i];
        if (in->op == SCHED_Forward && in->chunk == 1)
            links += in->link >= 0;
        if ((in->op == SCHED_SendActivation || in->op == SCHED_SendGrad) && in->peer == 1)
            sends_to_self++;
    }
    ck_assert_int_eq(links, 4);
    ck_assert_int_eq(sends_to_self, 0);
    sched_sim_free(&sim);
    sched_plan_free(&pl);
    sched_actions_free(&a);
}
END_TEST

START_TEST(backward_waits_for_its_gradient_area)
{
    /* looped-bfs, 2 stages x 4 chunks, the last part (the loss's, on stage
     * 1) ten times faster than the others, as gpt_tiny's head against its
     * blocks: stage 1 runs its last chunk's backwards faster than stage 0
     * takes their gradients. A chunk writes its SCHED_GIN_AREAS areas in
     * turn, so its k-th backward starts only after the send of its
     * (k - SCHED_GIN_AREAS)-th has completed; here some backward waits for
     * exactly that (the runtime's wait, which the simulator once left out:
     * it predicted looped-bfs 13-16% fast). */
    enum { P = 2, V = 4, M = 8 };
    double f[P * V], b[P * V], i[P * V], w[P * V];
    for (int k = 0; k < P * V; k++) {
        double x = k == P * V - 1 ? 0.1 : 1.0;
        f[k] = x, b[k] = 2 * x, i[k] = x, w[k] = x;
    }
    SchedCosts c = {f, b, i, w, NULL, 0, NULL, 0, NULL, 0};
    SchedSpec sp = {P, V, M, SCHED_PLACE_LOOP, f, b, i, w};
    SchedActions a;
    sched_actions_init(&a, P);
    char err[256];
    ck_assert_int_eq(sched_gen_looped_bfs(&sp, &a, err, sizeof err), 0);
    SchedParts pp = {P, V, M, SCHED_PLACE_LOOP, NULL, 0};
    SchedPlan pl;
    SchedSim sim;
    ck_assert_int_eq(sched_build(&pp, &a, 0, &c, &pl, &sim, err, sizeof err), 0);
    ck_assert_msg(sim.ok, "%s", sim.error);
    int waited = 0;
    for (int st = 0; st < P; st++)
        for (int ch = 0; ch < V; ch++) {
            if (st == 0 && ch == 0)
                continue; /* part 0 sends no gradient */
            int bwd[M], snd[M], nb = 0, ns = 0;
            for (int pc = 0; pc < pl.prog[st].n; pc++) {
                const SchedInstr *in = &pl.prog[st].ins[pc];
                if (in->chunk == ch && in->op == SCHED_Backward)
                    bwd[nb++] = pc;
                if (in->chunk == ch && in->op == SCHED_SendGrad)
                    snd[ns++] = pc;
            }
            ck_assert_int_eq(nb, M);
            ck_assert_int_eq(ns, M);
            for (int k = SCHED_GIN_AREAS; k < M; k++) {
                double start = sim.start[st][bwd[k]], freed = sim.end[st][snd[k - SCHED_GIN_AREAS]];
                ck_assert_msg(start >= freed - 1e-12, "stage %d chunk %d: backward %d at %g, its area free at %g", st,
                              ch, k, start, freed);
                /* the stage's clock before it: the last instruction's end that is
                 * not a send (a send's end is its data's arrival) */
                int prev = bwd[k] - 1;
                while (pl.prog[st].ins[prev].op == SCHED_SendGrad || pl.prog[st].ins[prev].op == SCHED_SendActivation)
                    prev--;
                waited += start == freed && start > sim.end[st][prev];
            }
        }
    ck_assert_int_gt(waited, 0);
    sched_sim_free(&sim);
    sched_plan_free(&pl);
    sched_actions_free(&a);
}
END_TEST

/* ---- rejections ---- */

static SchedActions parse_acts(int stages, const char *const *lines)
{
    /* "F0 F1 B0 B1", one string per stage; "F2.1" for chunk 1 */
    SchedActions a;
    sched_actions_init(&a, stages);
    for (int s = 0; s < stages; s++)
        for (const char *p = lines[s]; *p;) {
            while (*p == ' ')
                p++;
            if (!*p)
                break;
            char k = *p++;
            int mb = (int)strtol(p, (char **)&p, 10), c = 0;
            if (*p == '.')
                c = (int)strtol(p + 1, (char **)&p, 10);
            sched_push(&a, s, k == 'F' ? SCHED_F : k == 'B' ? SCHED_BWD : k == 'I' ? SCHED_I : SCHED_W, mb, c);
        }
    return a;
}

static void expect(int stages, int m, const char *const *lines, const char *substr)
{
    SchedActions a = parse_acts(stages, lines);
    SchedParts pp = {stages, 1, m, SCHED_PLACE_LOOP, NULL, 0};
    SchedPlan pl;
    char err[512] = "";
    if (sched_lower(&pp, &a, 0, &pl, err, sizeof err) != 0) {
        ck_assert_msg(strstr(err, substr), "expected '%s' in: %s", substr, err);
    } else {
        SchedSim sim;
        sched_verify(&pl, &pp, NULL, &sim);
        ck_assert_msg(!sim.ok, "expected a rejection with '%s'", substr);
        ck_assert_msg(strstr(sim.error, substr), "expected '%s' in: %s", substr, sim.error);
        sched_sim_free(&sim);
        sched_plan_free(&pl);
    }
    sched_actions_free(&a);
}

START_TEST(rejects_bad_schedules)
{
    /* stage 1 wants F1 before B0; stage 0 sends F1 only after B0, whose
     * gradient stage 1 sends only after F1 */
    const char *dead[] = {"F0 B0 F1 B1", "F0 F1 B0 B1"};
    expect(2, 2, dead, "deadlock: stage 0 pc 4 (Backward mb 0 chunk 0) waits for data from stage 1; stage 1 pc 5 (Forward mb 1 chunk 0) "
                             "waits for data from stage 0");
    /* micro-batches in a different order on each stage */
    const char *order[] = {"F0 B0 F1 B1", "F1 B1 F0 B0"};
    expect(2, 2, order, "mismatched send/receive");
    const char *missing[] = {"F0 B0", "F0 B0 F1 B1"};
    expect(2, 2, missing, "stage 0: micro-batch 1 has no forward on chunk 0");
    const char *early[] = {"F0 B1 F1 B0", "F0 B0 F1 B1"};
    expect(2, 2, early, "stage 0, action 1 (B1): backward before its forward");
    const char *twice[] = {"F0 F0 B0", "F0 B0"};
    expect(2, 1, twice, "micro-batch 0 is run forward twice");
    const char *w_first[] = {"F0 W0 I0"};
    expect(1, 1, w_first, "stage 0, action 1 (W0): W before its I");
    const char *no_w[] = {"F0 I0"};
    expect(1, 1, no_w, "micro-batch 0 has no W");
    const char *range[] = {"F0 F5 B0 B5"};
    expect(1, 2, range, "micro-batch 5 does not exist");
}
END_TEST

START_TEST(verifier_rejects_corrupted_programs)
{
    SchedSpec sp = {2, 1, 2, SCHED_PLACE_LOOP, 0, 0, 0, 0};
    SchedActions a;
    sched_actions_init(&a, 2);
    char err[256];
    sched_gen_1f1b(&sp, &a, err, sizeof err);
    SchedParts pp = {2, 1, 2, SCHED_PLACE_LOOP, NULL, 0};
    SchedPlan pl;
    ck_assert_int_eq(sched_lower(&pp, &a, 0, &pl, err, sizeof err), 0);
    SchedSim sim;
    /* a receive of the wrong micro-batch */
    pl.prog[1].ins[0].mb = 1;
    sched_verify(&pl, &pp, NULL, &sim);
    ck_assert(!sim.ok);
    ck_assert_msg(strstr(sim.error, "mismatched send/receive"), "%s", sim.error);
    sched_sim_free(&sim);
    pl.prog[1].ins[0].mb = 0;
    /* a dropped send: the last activation stage 0 sends */
    SchedInstr saved = pl.prog[0].ins[6];
    pl.prog[0].ins[6].op = SCHED_ReduceGrads;
    sched_verify(&pl, &pp, NULL, &sim);
    ck_assert(!sim.ok);
    ck_assert_msg(strstr(sim.error, "unmatched receive"), "%s", sim.error);
    sched_sim_free(&sim);
    pl.prog[0].ins[6] = saved;
    /* a buffer reused while live: stage 0's second load into buffer 0 */
    pl.prog[0].ins[2].buf = 0;
    sched_verify(&pl, &pp, NULL, &sim);
    ck_assert(!sim.ok);
    ck_assert_msg(strstr(sim.error, "buffer overwritten while live"), "%s", sim.error);
    sched_sim_free(&sim);
    pl.prog[0].ins[2].buf = 1;
    sched_verify(&pl, &pp, NULL, &sim);
    ck_assert_msg(sim.ok, "%s", sim.error);
    sched_sim_free(&sim);
    /* a send before the data exists: stage 0 sends mb 0 before its forward */
    SchedInstr a1 = pl.prog[0].ins[1], a3 = pl.prog[0].ins[3];
    pl.prog[0].ins[1] = a3, pl.prog[0].ins[3] = a1;
    sched_verify(&pl, &pp, NULL, &sim);
    ck_assert(!sim.ok);
    ck_assert_msg(strstr(sim.error, "no output yet (the send comes before its forward)"), "%s", sim.error);
    sched_sim_free(&sim);
    pl.prog[0].ins[1] = a1, pl.prog[0].ins[3] = a3;
    /* stage 1 sends mb 0's gradient before its backward ran */
    SchedInstr b3 = pl.prog[1].ins[3], b6 = pl.prog[1].ins[6];
    pl.prog[1].ins[3] = b6, pl.prog[1].ins[6] = b3;
    sched_verify(&pl, &pp, NULL, &sim);
    ck_assert(!sim.ok);
    ck_assert_msg(strstr(sim.error, "sends an input gradient that no backward of this micro-batch has computed yet"),
                  "%s", sim.error);
    sched_sim_free(&sim);
    pl.prog[1].ins[3] = b3, pl.prog[1].ins[6] = b6;
    /* stage 1's second backward overwrites mb 0's gradient before it went:
     * move SendGrad mb 0 (pc 6) after Backward mb 1 (pc 8) */
    SchedInstr s6 = pl.prog[1].ins[6];
    pl.prog[1].ins[6] = pl.prog[1].ins[7];
    pl.prog[1].ins[7] = pl.prog[1].ins[8];
    pl.prog[1].ins[8] = s6;
    sched_verify(&pl, &pp, NULL, &sim);
    ck_assert(!sim.ok);
    ck_assert_msg(strstr(sim.error, "overwrites the input gradient of micro-batch 0 before it was sent"), "%s", sim.error);
    sched_sim_free(&sim);
    sched_plan_free(&pl);
    sched_actions_free(&a);
}
END_TEST

/* The fast machine's simulation against the full one's: the same verdict,
 * and for a plan that passes the same times, to the bit. */
static void same_machines(const SchedPlan *pl, const SchedParts *pp, const SchedCosts *c, const char *what)
{
    SchedSim f, g;
    sched_verify_machine(pl, pp, c, 1, &f);
    sched_verify_machine(pl, pp, c, 0, &g);
    ck_assert_msg(f.ok == g.ok, "%s: fast %s, full %s (%s)", what, f.ok ? "passes" : "fails", g.ok ? "passes" : "fails",
                  g.ok ? f.error : g.error);
    if (g.ok) {
        ck_assert_msg(f.step_time == g.step_time && f.bubble == g.bubble, "%s: step %.17g vs %.17g", what, f.step_time,
                      g.step_time);
        for (int s = 0; s < pp->stages; s++) {
            ck_assert_msg(f.busy[s] == g.busy[s] && f.idle[s] == g.idle[s], "%s: stage %d busy", what, s);
            ck_assert_msg(f.peak_buffers[s] == g.peak_buffers[s] && f.peak_bytes[s] == g.peak_bytes[s],
                          "%s: stage %d peaks", what, s);
            size_t n = (size_t)pl->prog[s].n * sizeof(double);
            if (g.start[s])
                ck_assert_msg(!memcmp(f.start[s], g.start[s], n) && !memcmp(f.end[s], g.end[s], n) &&
                                  !memcmp(f.peer_time[s], g.peer_time[s], n),
                              "%s: stage %d timeline", what, s);
        }
    }
    sched_sim_free(&f);
    sched_sim_free(&g);
}

/* Single changes to a plan's programs (an operand, two instructions
 * swapped, one dropped, one in place of the next, an opcode) at a spread
 * of places on each stage, each held to
 * same_machines; counts them and the ones the full machine fails. */
static void changes(SchedPlan *pl, const SchedParts *pp, const SchedCosts *c, const char *name, int *changed,
                    int *failing)
{
    int p = pp->stages, m = pp->micro_batches, v = pp->chunks;
    char what[200];
    for (int s = 0; s < p; s++) {
        SchedProgram *pr = &pl->prog[s];
        for (int i = 0; i < pr->n; i += 1 + pr->n / 7) {
            for (int k = 0; k < 10; k++) {
                if (k >= 7 && (i / (1 + pr->n / 7)) % 3 != 1)
                    continue; /* the checks-alone kinds at every third place (the run under ASan stays short) */
                SchedInstr keep = pr->ins[i], next = i + 1 < pr->n ? pr->ins[i + 1] : keep;
                int n = pr->n;
                switch (k) {
                case 0: pr->ins[i].mb = (pr->ins[i].mb + 1) % m; break;
                case 1: pr->ins[i].buf = pr->ins[i].buf + 1; break;
                case 2: pr->ins[i].chunk = (pr->ins[i].chunk + 1) % v; break;
                case 3: /* another peer, or the other direction's op */
                    if (p > 2 && (sched_op_operands[keep.op] & SCHED_P))
                        pr->ins[i].peer = (keep.peer + 1) % p == s ? (keep.peer + 2) % p : (keep.peer + 1) % p;
                    else if (keep.op == SCHED_RecvActivation || keep.op == SCHED_SendActivation)
                        pr->ins[i].op = keep.op == SCHED_RecvActivation ? SCHED_RecvGrad : SCHED_SendGrad;
                    break;
                case 4: pr->ins[i] = next, pr->ins[i + 1 < n ? i + 1 : i] = keep; break;
                case 5: /* dropped */
                    memmove(&pr->ins[i], &pr->ins[i + 1], (size_t)(n - i - 1) * sizeof *pr->ins);
                    pr->n = n - 1;
                    break;
                case 6: pr->ins[i] = i > 0 ? pr->ins[i - 1] : next; break;
                /* what the fast machine checks only when its run gets
                 * there: a barrier (a second one, where the program has
                 * its own), an unknown opcode, a send or receive to itself */
                case 7: pr->ins[i].op = SCHED_OptimizerStep; break;
                case 8: pr->ins[i].op = SCHED_NOPS; break;
                case 9:
                    if (sched_op_operands[keep.op] & SCHED_P)
                        pr->ins[i].peer = s;
                    break;
                }
                snprintf(what, sizeof what, "%s, stage %d pc %d change %d", name, s, i, k);
                SchedSim f;
                sched_verify_machine(pl, pp, c, 0, &f);
                *failing += !f.ok;
                sched_sim_free(&f);
                same_machines(pl, pp, c, what);
                (*changed)++;
                if (k == 5) {
                    memmove(&pr->ins[i + 1], &pr->ins[i], (size_t)(n - i - 1) * sizeof *pr->ins);
                    pr->n = n;
                }
                pr->ins[i] = keep;
                if (i + 1 < n)
                    pr->ins[i + 1] = next;
            }
        }
    }
}

/* sched_verify runs the fast machine and falls back to the full one only
 * when it fails, so the fast one must pass exactly what the full one
 * passes: every generator's training program and the evaluation program
 * (with link times, so that arrivals matter), and changes to them. */
START_TEST(fast_machine_matches_the_full_one)
{
    int plans = 0, changed = 0, failing = 0;
    for (int gi = 0; gi < NGENS; gi++) {
        const Gen *g = &GENS[gi];
        for (int v = g->vmin; v <= g->vmax; v++)
            for (int p = 1; p <= 5; p++)
                for (int m = 1; m <= 12; m += 1 + m / 3) {
                    if (g->gen == sched_gen_dualpipev && m < 2 * p)
                        continue;
                    int P = p * v;
                    Unit u;
                    unit_init(&u, P, v);
                    double *bytes = calloc(P, sizeof *bytes), *bb = calloc(P, sizeof *bb);
                    for (int k = 0; k < P; k++)
                        bytes[k] = 1000.0 * (k + 1), bb[k] = 64.0 * (k + 2);
                    u.c.bytes_fwd = bytes, u.c.link_bandwidth = 3e3, u.c.link_latency = 0.01, u.c.buf_bytes = bb;
                    SchedSpec sp = {p, v, m, g->place, u.f, u.b, u.i, u.w};
                    for (int eval = 0; eval <= 1; eval++) {
                        SchedActions a;
                        sched_actions_init(&a, p);
                        char err[512] = "", name[120];
                        ck_assert_msg((eval ? sched_gen_eval : g->gen)(&sp, &a, err, sizeof err) == 0, "%s: %s",
                                      g->name, err);
                        SchedParts pp = {p, v, m, g->place, NULL, 0};
                        SchedPlan pl;
                        SchedSim sim;
                        ck_assert_int_eq(sched_build(&pp, &a, eval, &u.c, &pl, &sim, err, sizeof err), 0);
                        ck_assert_msg(sim.ok, "%s", sim.error);
                        sched_sim_free(&sim);
                        snprintf(name, sizeof name, "%s%s p=%d m=%d v=%d", g->name, eval ? " eval" : "", p, m, v);
                        same_machines(&pl, &pp, &u.c, name);
                        plans++;
                        changes(&pl, &pp, &u.c, name, &changed, &failing);
                        sched_plan_free(&pl);
                        sched_actions_free(&a);
                    }
                    free(bytes), free(bb);
                    unit_free(&u);
                }
    }
    /* the changes must reach the checks both ways */
    ck_assert_msg(plans > 200 && failing > changed / 3 && failing < changed, "%d plans, %d changes, %d failing", plans,
                  changed, failing);
}
END_TEST

START_TEST(dualpipev_needs_micro_batches)
{
    SchedSpec sp = {4, 2, 6, SCHED_PLACE_V, 0, 0, 0, 0};
    SchedActions a;
    sched_actions_init(&a, 4);
    char err[256];
    ck_assert_int_eq(sched_gen_dualpipev(&sp, &a, err, sizeof err), -1);
    ck_assert_str_eq(err, "dualpipev needs micro_batches >= 2 x stages (8), not 6");
    sched_actions_free(&a);
}
END_TEST

static Suite *suite(void)
{
    gens_init();
    Suite *s = suite_create("schedules");
    TCase *c = tcase_create("generators");
    tcase_set_timeout(c, 120);
    tcase_add_test(c, generators_from_the_table);
    tcase_add_loop_test(c, every_generator_verifies, 0, NGENS);
    tcase_add_test(c, zero_bubble_beats_1f1b);
    tcase_add_test(c, lowered_1f1b_listing);
    tcase_add_test(c, v_handover_uses_link);
    tcase_add_test(c, backward_waits_for_its_gradient_area);
    tcase_add_test(c, rejects_bad_schedules);
    tcase_add_test(c, verifier_rejects_corrupted_programs);
    tcase_add_test(c, fast_machine_matches_the_full_one);
    tcase_add_test(c, dualpipev_needs_micro_batches);
    suite_add_tcase(s, c);
    return s;
}

T_MAIN(suite)
