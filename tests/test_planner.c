/* tests/test_planner.c: the planner end to end: text schedules (syntax
 * errors with file:line:col, a deadlock reported at its line), --emit
 * sched read back as the same plan, predictions in --stats, the plan file
 * written while the programs are verified. */
#include "pc_listing.h"
#include "pc_planner.h"
#include "pc_stats.h"
#include "testutil.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "base_file.h"
#include "plan_file.h"

#define MLP                                                                                                 \
    "model mlp {\n  input x: float32[8]\n  target y: int32[]\n  linear(16)\n  relu\n  linear(16)\n  relu\n" \
    "  linear(4)\n  loss cross_entropy\n}\n"

static char *write_tmp(const char *name, const char *text)
{
    static char path[256];
    snprintf(path, sizeof path, "/tmp/pipe-test-planner-%s", name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

typedef struct P {
    T *t;
    PlanSchedule p;
    SchedActions acts;
    PlanIR ir; /* a view of t->f and p */
    int rc;
    char err[1400];
} P;

/* Compiles MLP with extra -D settings and builds its plan. */
static P *plan(const char *const *defs, int ndefs)
{
    P *x = calloc(1, sizeof *x);
    x->t = t_compile_defs(MLP, defs, ndefs);
    x->rc = x->t->rc;
    if (x->rc == 0)
        x->rc = pc_plan_build(&x->t->dl, &x->t->f, &x->p, &x->acts, 0);
    x->ir = pc_ir_view(&x->t->f, &x->p);
    if (x->t->dl.n > 0)
        diag_format(&x->t->dl, &x->t->dl.d[x->t->dl.n - 1], x->err, sizeof x->err);
    return x;
}

static void plan_free(P *x)
{
    sched_actions_free(&x->acts);
    plan_schedule_free(&x->p);
    t_free(x->t);
    free(x);
}

static char *listing(P *x)
{
    char *buf;
    size_t n;
    FILE *m = open_memstream(&buf, &n);
    pc_listing(m, &x->ir);
    fclose(m);
    return buf;
}

START_TEST(text_schedule_runs)
{
    char def[512];
    snprintf(def, sizeof def, "schedule=file(\"%s\")",
             write_tmp("ok.sched", "# 1F1B by hand\nstage 0: F0 F1 B0 B1\nstage 1: F0 B0 F1 B1\n"));
    const char *d[] = {"stages=2", "micro_batches=2", def};
    P *x = plan(d, 3);
    ck_assert_msg(x->rc == 0, "%s", x->err);
    ck_assert(x->p.train_sim.ok);
    ck_assert_int_eq(x->p.train_sim.peak_buffers[0], 2);
    ck_assert_int_eq(x->p.train_sim.peak_buffers[1], 1);
    plan_free(x);
}
END_TEST

START_TEST(text_schedule_errors)
{
    struct {
        const char *text, *want;
    } cases[] = {
        {"stage 0: F0 X1\nstage 1: F0 B0\n", "pipe-test-planner-bad.sched:1:13: error: unknown action 'X'"},
        {"stage 0: F0 B0\nstage 0: F0 B0\n", "pipe-test-planner-bad.sched:2:1: error: stage 0 is listed twice"},
        {"stage 0: F0 B0\n", "the schedule has 1 stage, the pipeline 2"},
        {"stage 0 F0 B0\nstage 1: F0 B0\n", "pipe-test-planner-bad.sched:1:9: error: expected ':' after 'stage 0'"},
        {"stage 0: F0B0\nstage 1: F0 B0\n", "pipe-test-planner-bad.sched:1:12: error: expected a space between actions"},
        {"chunks: 1\nstage 0: F0.1 B0.1\nstage 1: F0 B0\n", "pipe-test-planner-bad.sched:2:10: error: chunk 1, but chunks: 1"},
        {"hello\n", "pipe-test-planner-bad.sched:1:1: error: expected 'stage N: actions'"},
        /* stages disagreeing on the order of micro-batches (once a crash),
         * at the action whose instruction the verifier stopped at */
        {"stage 0: F0 F1 B0 B1\nstage 1: F1 B1 F0 B0\n", "pipe-test-planner-bad.sched:2:10: error: training program: "
                                                           "mismatched send/receive"},
        /* order errors, at the action's line and column */
        {"stage 0: F0 F1 B0 B1\nstage 1:\n  \n", "stage 1: micro-batch 0 has no forward"},
        {"# comment\nstage 0: B0 F0\nstage 1: F0 B0\n", "pipe-test-planner-bad.sched:2:10: error: training program: stage 0, "
                                                       "action 0 (B0): backward before its forward"},
        /* 1 wants F1 before B0; 0 sends F1 after B0: a deadlock, at the action of the stage that waits first */
        {"stage 0: F0 B0 F1 B1\nstage 1: F0 F1 B0 B1\n", "pipe-test-planner-bad.sched:1:13: error: training program: "
                                                           "deadlock: stage 0 pc 4 (Backward mb 0 chunk 0) waits for data "
                                                           "from stage 1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char def[512];
        snprintf(def, sizeof def, "schedule=file(\"%s\")", write_tmp("bad.sched", cases[i].text));
        const char *d[] = {"stages=2", "micro_batches=2", def};
        P *x = plan(d, 3);
        ck_assert_msg(x->rc == PC_USER_ERROR, "case %zu accepted", i);
        ck_assert_msg(strstr(x->err, cases[i].want), "case %zu: expected '%s' in: %s", i, cases[i].want, x->err);
        plan_free(x);
    }
}
END_TEST

START_TEST(emit_sched_round_trip)
{
    const char *scheds[] = {"1f1b", "gpipe", "zb-h1", "interleaved(chunks = 2)", "zb-v", "dualpipev"};
    for (size_t i = 0; i < sizeof scheds / sizeof scheds[0]; i++) {
        char sdef[96];
        snprintf(sdef, sizeof sdef, "schedule=%s", scheds[i]);
        const char *d[] = {"stages=2", "micro_batches=4", sdef};
        P *a = plan(d, 3);
        ck_assert_msg(a->rc == 0, "%s: %s", scheds[i], a->err);
        char path[] = "/tmp/pipe-test-emit-XXXXXX";
        int fd = mkstemp(path);
        FILE *f = fdopen(fd, "w");
        sched_text_write(f, &a->acts, a->t->f.part.chunks, a->t->f.cfg.place, "round trip");
        fclose(f);
        char fdef[128];
        snprintf(fdef, sizeof fdef, "schedule=file(\"%s\")", path);
        const char *d2[] = {"stages=2", "micro_batches=4", fdef};
        P *b = plan(d2, 3);
        ck_assert_msg(b->rc == 0, "%s read back: %s", scheds[i], b->err);
        /* the same instructions, line for line, after the two headers */
        char *la = listing(a), *lb = listing(b);
        ck_assert_str_eq(strchr(strstr(la, "\ntrain stage 0"), '\n'), strchr(strstr(lb, "\ntrain stage 0"), '\n'));
        free(la), free(lb);
        unlink(path);
        plan_free(a);
        plan_free(b);
    }
}
END_TEST

START_TEST(stats_predictions)
{
    const char *d[] = {"stages=4", "micro_batches=8", "partition=[0, 1, 2, 3]"};
    P *x = plan(d, 3);
    ck_assert_msg(x->rc == 0, "%s", x->err);
    char *buf;
    size_t n;
    FILE *m = open_memstream(&buf, &n);
    pc_stats_json(m, &x->ir);
    fclose(m);
    ck_assert_ptr_nonnull(strstr(buf, "\"step_time\": "));
    ck_assert_ptr_nonnull(strstr(buf, "\"ranks\": [\n    {\"rank\": 0, \"stage\": 0, \"busy\": "));
    ck_assert_ptr_nonnull(strstr(buf, "\"peak_buffers\": 4"));
    free(buf);
    /* busy + idle = step on every stage */
    for (int s = 0; s < 4; s++)
        ck_assert(fabs(x->p.train_sim.busy[s] + x->p.train_sim.idle[s] - x->p.train_sim.step_time) < 1e-12);
    plan_free(x);
}
END_TEST

START_TEST(link_bandwidth_slows_the_step)
{
    const char *d1[] = {"stages=2", "micro_batches=4"};
    const char *d2[] = {"stages=2", "micro_batches=4", "link_bandwidth=0.000001"};
    P *a = plan(d1, 2), *b = plan(d2, 3);
    ck_assert_int_eq(a->rc, 0);
    ck_assert_int_eq(b->rc, 0);
    ck_assert(b->p.train_sim.step_time > a->p.train_sim.step_time);
    plan_free(a);
    plan_free(b);
}
END_TEST

START_TEST(tied_and_clip_barriers)
{
    char path[512];
    snprintf(path, sizeof path, "%s/examples/gpt_tiny.pipe", PIPE_SOURCE_DIR);
    DiagList dl;
    diag_init(&dl);
    PcFront f;
    const char *d[] = {"grad_clip=1.0"};
    ck_assert_int_eq(pc_front_file(&f, &dl, path, d, 1), 0);
    PlanSchedule p;
    SchedActions acts;
    ck_assert_int_eq(pc_plan_build(&dl, &f, &p, &acts, 0), 0);
    /* stages 0 and 3 hold the tied embedding / head: ReduceTiedGrads there only */
    for (int s = 0; s < 4; s++) {
        int tied = 0;
        for (int i = 0; i < p.train.prog[s].n; i++)
            tied += p.train.prog[s].ins[i].op == SCHED_ReduceTiedGrads;
        ck_assert_int_eq(tied, s == 0 || s == 3);
        const SchedInstr *last = &p.train.prog[s].ins[p.train.prog[s].n - 1];
        ck_assert_int_eq(last->op, SCHED_OptimizerStep);
    }
    sched_actions_free(&acts);
    plan_schedule_free(&p);
    pc_front_free(&f);
    diag_free(&dl);
}
END_TEST

/* pc_plan_build_to: the file it writes early is the plan's bytes
 * (plan_encode of the finished plan), it is used only when nothing was
 * lowered again after it began, and a plan that fails leaves no file. */
static int files_in(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

START_TEST(written_while_verified)
{
    char dir[] = "/tmp/pipe-test-planner-out-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char out[512], gpt[512], bad[512];
    snprintf(out, sizeof out, "%s/plan.bin", dir);
    snprintf(gpt, sizeof gpt, "%s/examples/gpt_tiny.pipe", PIPE_SOURCE_DIR);
    snprintf(bad, sizeof bad, "schedule=file(\"%s\")",
             write_tmp("dead.sched", "stage 0: F0 B0 F1 B1\nstage 1: F0 F1 B0 B1\n"));
    struct {
        const char *model; /* NULL: MLP */
        const char *defs[3];
        int ok, early; /* builds; the early file is the one kept */
    } cases[] = {
        {NULL, {"stages=2", "micro_batches=4", "schedule=1f1b"}, 1, 1},
        {NULL, {"stages=3", "micro_batches=8", "schedule=zb-h1"}, 1, 1},
        /* receives moved after a deadlock: lowered again, written at the end */
        {gpt, {"stages=2", "micro_batches=8", "schedule=interleaved(chunks = 2)"}, 1, 0},
        {NULL, {"stages=2", "micro_batches=2", bad}, 0, 0},
        {NULL, {"stages=2", "micro_batches=4", "memory_limit = 1 KiB"}, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        DiagList dl;
        diag_init(&dl);
        PcFront f;
        T *t = NULL;
        if (cases[i].model) {
            ck_assert_int_eq(pc_front_file(&f, &dl, cases[i].model, cases[i].defs, 3), 0);
        } else {
            t = t_compile_defs(MLP, cases[i].defs, 3);
            ck_assert_int_eq(t->rc, 0);
        }
        PcFront *fr = t ? &t->f : &f;
        PlanSchedule p;
        SchedActions acts;
        PlanWriting *w = (PlanWriting *)&w; /* must be set either way */
        int rc = pc_plan_build_to(t ? &t->dl : &dl, fr, &p, &acts, 0, out, &w);
        ck_assert_msg((rc == PC_OK) == cases[i].ok, "case %zu: rc %d", i, rc);
        ck_assert_msg((w != NULL) == cases[i].early, "case %zu: early file %p", i, (void *)w);
        char err[4400];
        if (rc == PC_OK) {
            PlanIR ir = pc_ir_view(fr, &p);
            ck_assert_msg((w ? plan_write_end(w, 1, err, sizeof err) : plan_write(out, &ir, err, sizeof err)) == 0,
                          "case %zu: %s", i, err);
            unsigned char *want, *got;
            size_t nwant, ngot;
            plan_encode(&ir, &want, &nwant);
            char why[256];
            ck_assert_int_eq(base_read_file(out, 1 << 26, &got, &ngot, why, sizeof why), BASE_READ_OK);
            ck_assert_msg(ngot == nwant && memcmp(got, want, nwant) == 0, "case %zu: the file is not the plan", i);
            free(want), free(got);
            ck_assert_int_eq(unlink(out), 0);
        }
        ck_assert_msg(files_in(dir) == 0, "case %zu: %d files left in %s", i, files_in(dir), dir);
        sched_actions_free(&acts);
        plan_schedule_free(&p);
        if (t)
            t_free(t);
        else
            pc_front_free(&f);
        diag_free(&dl);
    }
    ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("planner");
    TCase *c = tcase_create("planner");
    tcase_set_timeout(c, 60);
    tcase_add_test(c, text_schedule_runs);
    tcase_add_test(c, text_schedule_errors);
    tcase_add_test(c, emit_sched_round_trip);
    tcase_add_test(c, stats_predictions);
    tcase_add_test(c, link_bandwidth_slows_the_step);
    tcase_add_test(c, tied_and_clip_barriers);
    tcase_add_test(c, written_while_verified);
    suite_add_tcase(s, c);
    return s;
}

T_MAIN(suite)
