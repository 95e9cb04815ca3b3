/* tests/test_profile.c: the profile file (plan/plan_profile.c) written and
 * read back, its refusals, costs = profile(...) in the planner, and
 * partition = time against brute force. */
#include <math.h>
#include <stdint.h>
#include <unistd.h>

#include "pc_planner.h"
#include "plan_profile.h"
#include "testutil.h"

static const char *MLP = "model mlp {\n  input x: float32[8]\n  target y: int32[]\n"
                         "  linear(16)\n  relu\n  linear(16)\n  relu\n  linear(16)\n  relu\n  linear(4)\n"
                         "  loss cross_entropy\n}\n"
                         "pipeline { stages = 1; micro_batches = 4; micro_batch_size = 2; schedule = gpipe }\n";

static char dir[64];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/pipe-test-profile-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* A profile of model m at micro-batch size B: every layer f, i, w seconds. */
static PlanProfile make(const PlanModel *m, int64_t B, double f, double i, double w)
{
    PlanProfile p;
    memset(&p, 0, sizeof p);
    snprintf(p.model, sizeof p.model, "%s", m->name);
    p.model_hash = plan_model_hash(m);
    p.micro_batch_size = B;
    p.micro_batches = 4;
    snprintf(p.backend, sizeof p.backend, "cpu");
    snprintf(p.device, sizeof p.device, "a \"test\" CPU");
    p.threads = 1, p.steps = 3, p.warmup_steps = 1;
    p.nlayers = m->nlayers;
    p.layer = calloc(m->nlayers, sizeof *p.layer);
    for (int k = 0; k < m->nlayers; k++) {
        p.layer[k] = (PlanProfileLayer){f, i, w, 64 * k, 8 * k, 8};
    }
    return p;
}

static void write_to(const PlanProfile *p, const char *name, char *path, size_t size)
{
    snprintf(path, size, "%s/%s", dir, name);
    char err[512];
    ck_assert_msg(plan_profile_write(path, p, err, sizeof err) == 0, "%s", err);
}

static void write_text(const char *name, const char *text, char *path, size_t size)
{
    snprintf(path, size, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static int close_to(double a, double b)
{
    return fabs(a - b) <= 1e-5 * fabs(b) + 1e-15;
}

START_TEST(round_trip)
{
    T *t = t_compile(MLP);
    ck_ok(t);
    PlanProfile p = make(&t->f.model, 2, 1.25e-3, 2.5e-4, 3e-6);
    p.layer[3].forward = 7.5e-7;
    p.loss = 1e-4, p.load = 2e-5, p.optimizer_per_param = 1.5e-9, p.step = 0.125;
    p.nlinks = 1;
    p.link = calloc(1, sizeof *p.link);
    p.link[0] = (PlanProfileLink){0, 1, 3.5e-6, 6.25e9};
    char path[256], err[512];
    write_to(&p, "p.json", path, sizeof path);
    PlanProfile q;
    ck_assert_msg(plan_profile_read(path, &q, err, sizeof err) == 0, "%s", err);
    ck_assert_str_eq(q.model, "mlp");
    ck_assert_str_eq(q.device, "a \"test\" CPU");
    ck_assert_uint_eq(q.model_hash, p.model_hash);
    ck_assert_int_eq(q.micro_batch_size, 2);
    ck_assert_int_eq(q.nlayers, p.nlayers);
    for (int k = 0; k < p.nlayers; k++) {
        ck_assert(close_to(q.layer[k].forward, p.layer[k].forward));
        ck_assert(close_to(q.layer[k].backward_input, p.layer[k].backward_input));
        ck_assert(close_to(q.layer[k].backward_weight, p.layer[k].backward_weight));
        ck_assert_int_eq(q.layer[k].activation_bytes, p.layer[k].activation_bytes);
        ck_assert_int_eq(q.layer[k].saved_bytes, p.layer[k].saved_bytes);
    }
    ck_assert(close_to(q.loss, p.loss) && close_to(q.load, p.load));
    ck_assert(close_to(q.optimizer_per_param, p.optimizer_per_param) && close_to(q.step, p.step));
    ck_assert_int_eq(q.nlinks, 1);
    ck_assert(close_to(q.link[0].latency, 3.5e-6) && close_to(q.link[0].bandwidth, 6.25e9));
    ck_assert_int_eq(plan_profile_check(&q, &t->f.model, 2, err, sizeof err), 0);
    plan_profile_free(&p);
    plan_profile_free(&q);
    t_free(t);
}
END_TEST

/* Files that are not profiles: each refused, saying what. */
START_TEST(bad_files)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"[1, 2", "not JSON at line 1"},
        {"{\"format\": \"other\"}", "not a pipe profile"},
        {"{\"format\": \"pipe-profile\", \"version\": 2}", "a version this pipec does not read"},
        {"{\"format\": \"pipe-profile\", \"version\": 1}", "model: missing"},
        {"{\"format\": \"pipe-profile\", \"version\": 1, \"model\": \"m\", \"model_hash\": \"12\"}",
         "model_hash: not 16 hexadecimal digits"},
        {"{\"format\": \"pipe-profile\", \"version\": 1, \"model\": \"m\", \"model_hash\": \"0123456789abcdef\", "
         "\"micro_batch_size\": 2, \"micro_batches\": 4, \"backend\": \"cpu\", \"device\": \"x\", \"threads\": 1, "
         "\"steps\": 3, \"warmup_steps\": 1, \"loss_ms\": -1, \"load_ms\": 0, \"optimizer_ns_per_param\": 0, "
         "\"step_ms\": 0, \"layers\": [], \"links\": []}",
         "loss_ms: negative"},
        {"{\"format\": \"pipe-profile\", \"version\": 1, \"model\": \"m\", \"model_hash\": \"0123456789abcdef\", "
         "\"micro_batch_size\": 2, \"micro_batches\": 4, \"backend\": \"cpu\", \"device\": \"x\", \"threads\": 1, "
         "\"steps\": 3, \"warmup_steps\": 1, \"loss_ms\": 0, \"load_ms\": 0, \"optimizer_ns_per_param\": 0, "
         "\"step_ms\": 0, \"layers\": [{\"index\": 1}], \"links\": []}",
         "layers[0]: index is not its position"},
        {"{\"format\": \"pipe-profile\", \"version\": 1, \"model\": \"m\", \"model_hash\": \"0123456789abcdef\", "
         "\"micro_batch_size\": 2, \"micro_batches\": 4, \"backend\": \"cpu\", \"device\": \"x\", \"threads\": 1, "
         "\"steps\": 3, \"warmup_steps\": 1, \"loss_ms\": 0, \"load_ms\": 0, \"optimizer_ns_per_param\": 0, "
         "\"step_ms\": 0, \"layers\": [{\"index\": 0, \"forward_ms\": \"fast\"}], \"links\": []}",
         "layers[0].forward_ms: missing, or not a number"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char path[256], err[512];
        write_text("bad.json", cases[k].text, path, sizeof path);
        PlanProfile q;
        ck_assert_int_eq(plan_profile_read(path, &q, err, sizeof err), -1);
        ck_assert_msg(strstr(err, cases[k].want) && strstr(err, path), "case %zu: '%s' lacks '%s'", k, err,
                      cases[k].want);
    }
    char err[512];
    PlanProfile q;
    ck_assert_int_eq(plan_profile_read("/nonexistent/p.json", &q, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "cannot read profile '/nonexistent/p.json'"), "%s", err);
}
END_TEST

/* Another model, another micro-batch size: refused where costs is set. */
START_TEST(mismatch_refused)
{
    T *t = t_compile(MLP);
    ck_ok(t);
    PlanProfile p = make(&t->f.model, 2, 1e-3, 1e-3, 1e-3);
    char path[256], def[320];
    write_to(&p, "mlp.json", path, sizeof path);
    snprintf(def, sizeof def, "costs=profile(\"%s\")", path);
    const char *d1[] = {def};
    T *ok = t_compile_defs(MLP, d1, 1);
    ck_ok(ok);
    ck_assert_ptr_nonnull(ok->f.profile);
    t_free(ok);
    const char *d2[] = {def, "micro_batch_size=3"};
    T *mbs = t_compile_defs(MLP, d2, 2);
    ck_err(mbs, "measured at micro_batch_size 2, this plan has 3");
    ck_assert_msg(strstr(mbs->err, "-D costs:1:1"), "%s", mbs->err);
    t_free(mbs);
    /* one layer wider: another hash */
    char other[1024];
    snprintf(other, sizeof other, "%s", MLP);
    char *at = strstr(other, "linear(4)");
    at[7] = '5';
    T *o = t_compile_defs(other, d1, 1);
    ck_err(o, "not on this model 'mlp'");
    t_free(o);
    /* set in the file: the error is at its line */
    char text[1400];
    snprintf(text, sizeof text, "%s", MLP);
    memcpy(strstr(text, "micro_batch_size = 2"), "micro_batch_size = 4", 20);
    char *pl = strstr(text, "schedule = gpipe }");
    snprintf(pl, sizeof text - (size_t)(pl - text), "schedule = gpipe; costs = profile(\"%s\") }\n", path);
    T *f = t_compile(text);
    ck_err(f, "t.pipe:13:");
    ck_err(f, "this plan has 4");
    t_free(f);
    const char *d3[] = {"costs=profile(1)"};
    T *bad = t_compile_defs(MLP, d3, 1);
    ck_err(bad, "profile(...) takes one file name");
    t_free(bad);
    const char *d4[] = {"costs=measured"};
    bad = t_compile_defs(MLP, d4, 1);
    ck_err(bad, "costs");
    t_free(bad);
    plan_profile_free(&p);
    t_free(t);
}
END_TEST

static double step_with(const char *path, const char *const *more, int nmore, PlanSchedule *out_keep)
{
    char def[320];
    snprintf(def, sizeof def, "costs=profile(\"%s\")", path);
    const char *defs[8] = {def};
    for (int i = 0; i < nmore; i++)
        defs[1 + i] = more[i];
    T *t = t_compile_defs(MLP, defs, 1 + nmore);
    ck_ok(t);
    PlanSchedule p;
    SchedActions acts;
    ck_assert_int_eq(pc_plan_build(&t->dl, &t->f, &p, &acts, 0), 0);
    double step = p.train_sim.step_time;
    if (out_keep) {
        out_keep->link_latency = p.link_latency;
        out_keep->link_bandwidth = p.link_bandwidth;
    }
    sched_actions_free(&acts);
    plan_schedule_free(&p);
    t_free(t);
    return step;
}

/* The planner's costs are the profile's: 1 stage, M micro-batches of
 * layers taking f, i, w each: M x n x (f + i + w), plus the loss and the
 * loading once per micro-batch, plus the optimizer. */
START_TEST(costs_from_profile)
{
    T *t = t_compile(MLP);
    ck_ok(t);
    int n = t->f.model.nlayers;
    int64_t params = t->f.model.total_params;
    PlanProfile p = make(&t->f.model, 2, 1e-3, 2e-3, 4e-3);
    char path[256];
    write_to(&p, "a.json", path, sizeof path);
    double s = step_with(path, NULL, 0, NULL);
    ck_assert_msg(close_to(s, 4 * n * 7e-3), "%g", s);
    p.loss = 5e-4, p.load = 2.5e-4, p.optimizer_per_param = 1e-6;
    write_to(&p, "b.json", path, sizeof path);
    s = step_with(path, NULL, 0, NULL);
    ck_assert_msg(close_to(s, 4 * (n * 7e-3 + 7.5e-4) + params * 1e-6), "%g", s);
    /* two stages under gpipe: a link's latency delays each transfer */
    const char *two[] = {"stages=2"};
    double free_links = step_with(path, two, 1, NULL);
    p.nlinks = 1;
    p.link = calloc(1, sizeof *p.link);
    p.link[0] = (PlanProfileLink){0, 1, 1e-3, 1e12};
    write_to(&p, "c.json", path, sizeof path);
    PlanSchedule keep;
    double slow_links = step_with(path, two, 1, &keep);
    ck_assert(close_to(keep.link_latency, 1e-3));
    ck_assert(slow_links > free_links + 1.9e-3); /* at least one activation and one gradient on the critical path */
    plan_profile_free(&p);
    t_free(t);
}
END_TEST

static int64_t brute(const int64_t *cost, int n, int start, int parts_left)
{
    if (parts_left == 1) {
        int64_t s = 0;
        for (int i = start; i < n; i++)
            s += cost[i];
        return s;
    }
    int64_t best = INT64_MAX, s = 0;
    for (int end = start; end <= n - parts_left; end++) {
        s += cost[end];
        int64_t rest = brute(cost, n, end + 1, parts_left - 1);
        int64_t worst = s > rest ? s : rest;
        if (worst < best)
            best = worst;
    }
    return best;
}

/* partition = time balances the measured times, optimally. */
START_TEST(partition_time_optimal)
{
    T *t = t_compile(MLP);
    ck_ok(t);
    unsigned x = 7;
    for (int trial = 0; trial < 30; trial++) {
        PlanProfile p = make(&t->f.model, 2, 0, 0, 0);
        int n = p.nlayers;
        for (int k = 0; k < n; k++) {
            x = x * 1103515245u + 12345u;
            p.layer[k].forward = ((x >> 16) % 1000 + 1) * 1e-6;
            x = x * 1103515245u + 12345u;
            p.layer[k].backward_input = ((x >> 16) % 1000) * 1e-6;
            p.layer[k].backward_weight = (k % 2) * 3e-4;
        }
        char path[256], def[320], st[32];
        write_to(&p, "t.json", path, sizeof path);
        snprintf(def, sizeof def, "costs=profile(\"%s\")", path);
        int P = 2 + trial % 3;
        snprintf(st, sizeof st, "stages=%d", P);
        const char *defs[] = {def, st, "partition=time"};
        T *c = t_compile_defs(MLP, defs, 3);
        ck_ok(c);
        int64_t cost[16], worst = 0;
        for (int k = 0; k < n; k++)
            cost[k] = plan_profile_layer_ns(&p, k);
        for (int k = 0; k < P; k++)
            if (c->f.part.part[k].cost > worst)
                worst = c->f.part.part[k].cost;
        ck_assert_int_eq(worst, brute(cost, n, 0, P));
        t_free(c);
        plan_profile_free(&p);
    }
    /* no profile: a warning, and the FLOPs balanced */
    const char *d[] = {"stages=2", "partition=time"};
    T *w = t_compile_defs(MLP, d, 2);
    ck_ok(w);
    ck_assert_int_ge(w->dl.n, 1);
    ck_assert_msg(strstr(w->err, "balancing FLOPs instead"), "%s", w->err);
    ck_assert_int_eq(w->f.part.part[0].cost, w->f.part.part[0].flops);
    t_free(w);
    t_free(t);
}
END_TEST

/* The hash covers the model, not where it was written or the plan. */
START_TEST(hash_is_the_models)
{
    T *a = t_compile(MLP);
    const char *d[] = {"stages=2", "schedule=1f1b"};
    T *b = t_compile_defs(MLP, d, 2);
    ck_ok(a);
    ck_ok(b);
    ck_assert_uint_eq(plan_model_hash(&a->f.model), plan_model_hash(&b->f.model));
    char other[1024];
    snprintf(other, sizeof other, "\n\n# moved down\n%s", MLP);
    T *c = t_compile(other);
    ck_assert_uint_eq(plan_model_hash(&a->f.model), plan_model_hash(&c->f.model));
    snprintf(other, sizeof other, "%s", MLP);
    strstr(other, "relu")[0] = 't', memcpy(strstr(other, "telu"), "tanh", 4);
    T *e = t_compile(other);
    ck_ok(e);
    ck_assert_uint_ne(plan_model_hash(&a->f.model), plan_model_hash(&e->f.model));
    t_free(a), t_free(b), t_free(c), t_free(e);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("profile");
    TCase *c = tcase_create("profile");
    tcase_add_checked_fixture(c, setup, teardown);
    tcase_add_test(c, round_trip);
    tcase_add_test(c, bad_files);
    tcase_add_test(c, mismatch_refused);
    tcase_add_test(c, costs_from_profile);
    tcase_add_test(c, partition_time_optimal);
    tcase_add_test(c, hash_is_the_models);
    suite_add_tcase(s, c);
    return s;
}

T_MAIN(suite)
