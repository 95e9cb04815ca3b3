/* tests/test_nccl_plan.c: the NCCL transport's start-up plan check
 * (runtime/xport_nccl_plan.c), which decides whether a lane's transfers
 * may go over NCCL. No GPU or NCCL needed: it reads plans only. */
#include "pc_planner.h"
#include "testutil.h"
#include "xport_nccl_plan.h"

/* 8 linear layers: enough parts for 4 stages x 2 chunks */
#define MLP8                                                                                            \
    "model mlp8 {\n  input x: float32[8]\n  target y: int32[]\n"                                      \
    "  linear(16)\n  relu\n  linear(16)\n  relu\n  linear(16)\n  relu\n  linear(16)\n  relu\n"          \
    "  linear(16)\n  relu\n  linear(16)\n  relu\n  linear(16)\n  relu\n  linear(4)\n  loss cross_entropy\n}\n"

/* The check's verdict on MLP8 under a schedule and stage count; why gets
 * its reason. */
static int verdict(const char *schedule, int stages, char *why, size_t whysize)
{
    char d0[64], d1[96];
    snprintf(d0, sizeof d0, "stages=%d", stages);
    snprintf(d1, sizeof d1, "schedule=%s", schedule);
    const char *defs[] = {d0, d1, "micro_batches=8"};
    T *t = t_compile_defs(MLP8, defs, 3);
    ck_assert_msg(t->rc == 0, "%s", t->err);
    PlanSchedule p;
    SchedActions acts;
    ck_assert_int_eq(pc_plan_build(&t->dl, &t->f, &p, &acts, 0), 0);
    why[0] = 0;
    int ok = xp_nccl_plan_ok(&p, why, whysize);
    sched_actions_free(&acts);
    plan_schedule_free(&p);
    t_free(t);
    return ok;
}

/* One receive per neighbour ahead of the compute that needs it, as
 * lowering emits them: every wait is for the last group's only receive. */
START_TEST(accepts_one_ahead_schedules)
{
    const char *ok[] = {"gpipe", "1f1b", "zb-h1"};
    char why[400];
    for (int s = 2; s <= 4; s++)
        for (int i = 0; i < 3; i++)
            ck_assert_msg(verdict(ok[i], s, why, sizeof why), "%s on %d stages: %s", ok[i], s, why);
}
END_TEST

/* Receives hoisted further ahead (looped placements, V shapes, zb-h2's
 * warm-up): a group would wait for one of them. These stay staged. */
START_TEST(rejects_hoisted_receives)
{
    const char *no[] = {"interleaved(chunks = 2)", "looped-bfs", "zb-h2", "zb-v", "dualpipev"};
    char why[400];
    int n1 = 0, n2 = 0;
    for (int i = 0; i < 5; i++) {
        ck_assert_msg(!verdict(no[i], 2, why, sizeof why), "%s accepted", no[i]);
        ck_assert_msg(strncmp(why, "stage ", 6) == 0, "%s: %s", no[i], why);
        n1 += strstr(why, "launches a transfer while the receive posted at") != NULL;
        n2 += strstr(why, "would also wait for the receive posted at") != NULL;
    }
    ck_assert_int_gt(n1, 0);
    ck_assert_int_gt(n2, 0);
}
END_TEST

/* A hand-made plan of 2 stages x 2 chunks, 1 buffer each. */
typedef struct Hand {
    PlanSchedule p;
    SchedProgram prog[2];
    int nbuf[4];
} Hand;

static void hand(Hand *h, SchedInstr *s0, int n0, SchedInstr *s1, int n1)
{
    memset(h, 0, sizeof *h);
    h->prog[0].ins = s0, h->prog[0].n = n0;
    h->prog[1].ins = s1, h->prog[1].n = n1;
    for (int i = 0; i < 4; i++)
        h->nbuf[i] = 1;
    h->p.train.stages = 2, h->p.train.chunks = 2;
    h->p.train.prog = h->prog;
    h->p.train.nbuf = h->nbuf;
}

#define I(o, c, b, pe) sched_instr(SCHED_##o, (c), 0, (b), (pe), -1)

/* D3: stage 0 sends an activation then a gradient to stage 1, which
 * receives the gradient first. MPI's tags pair them; NCCL would not. */
START_TEST(rejects_kinds_out_of_order)
{
    SchedInstr s0[] = {I(SendActivation, 0, 0, 1), I(SendGrad, 1, -1, 1)};
    SchedInstr s1[] = {I(RecvGrad, 0, 0, 0), I(BackwardWeight, 0, 0, -1), I(RecvActivation, 1, 0, 0),
                       I(Forward, 1, 0, -1)};
    Hand h;
    char why[400];
    hand(&h, s0, 2, s1, 4);
    ck_assert(!xp_nccl_plan_ok(&h.p, why, sizeof why));
    ck_assert_msg(strstr(why, "message 0 from stage 0 to stage 1 is sent as an activation") && strstr(why, "no tags"),
                  "%s", why);
    /* the same kinds in the same order pass */
    SchedInstr t0[] = {I(SendGrad, 1, -1, 1), I(SendActivation, 0, 0, 1)};
    hand(&h, t0, 2, s1, 4);
    ck_assert_msg(xp_nccl_plan_ok(&h.p, why, sizeof why), "%s", why);
}
END_TEST

/* N3: a receive still outstanding at a reduction; N2: one wait covering
 * two receives launched together. */
START_TEST(rejects_outstanding_at_reduction_and_shared_group)
{
    SchedInstr s0[] = {I(SendActivation, 0, 0, 1)};
    SchedInstr s1[] = {I(RecvActivation, 0, 0, 0), I(ReduceGrads, 0, -1, -1), I(Forward, 0, 0, -1)};
    Hand h;
    char why[400];
    hand(&h, s0, 1, s1, 3);
    ck_assert(!xp_nccl_plan_ok(&h.p, why, sizeof why));
    ck_assert_msg(strstr(why, "outstanding at ReduceGrads (instruction 1)"), "%s", why);
    SchedInstr t0[] = {I(SendActivation, 0, 0, 1), I(SendActivation, 1, 0, 1)};
    SchedInstr t1[] = {I(RecvActivation, 0, 0, 0), I(RecvActivation, 1, 0, 0), I(Forward, 0, 0, -1),
                       I(Forward, 1, 0, -1)};
    hand(&h, t0, 2, t1, 4);
    ck_assert(!xp_nccl_plan_ok(&h.p, why, sizeof why));
    ck_assert_msg(strstr(why, "stage 1's training program: the wait at instruction 2 would also wait for the "
                              "receive posted at 1"),
                  "%s", why);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("nccl_plan");
    TCase *c = tcase_create("nccl_plan");
    tcase_set_timeout(c, 120);
    tcase_add_test(c, accepts_one_ahead_schedules);
    tcase_add_test(c, rejects_hoisted_receives);
    tcase_add_test(c, rejects_kinds_out_of_order);
    tcase_add_test(c, rejects_outstanding_at_reduction_and_shared_group);
    suite_add_tcase(s, c);
    return s;
}

T_MAIN(suite)
