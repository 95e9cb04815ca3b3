/* tests/test_partition.c: partition methods (balanced ones against brute
 * force), placement on stages, boundary tuples, tied weights. */
#include "testutil.h"

static const char *GPT = "model g {\n  input tokens: int32[16]\n  input mask: float32[16]\n  target next: int32[16]\n"
                         "  embedding(vocab = 64, dim = 32, positions = 16) as wte\n"
                         "  repeat 6 { transformer_block(heads = 4, causal = true, mask = mask) }\n"
                         "  layernorm\n  linear(64, bias = false, tie = wte)\n  loss cross_entropy\n}\n";

static int64_t brute(const int64_t *cost, int n, int P, int start, int parts_left)
{
    /* smallest possible largest part over layers [start, n) in parts_left parts */
    if (parts_left == 1) {
        int64_t s = 0;
        for (int i = start; i < n; i++)
            s += cost[i];
        return s;
    }
    int64_t best = INT64_MAX, s = 0;
    for (int end = start; end <= n - parts_left; end++) {
        s += cost[end];
        int64_t rest = brute(cost, n, P, end + 1, parts_left - 1);
        int64_t worst = s > rest ? s : rest;
        if (worst < best)
            best = worst;
    }
    return best;
}

START_TEST(balanced_is_optimal)
{
    unsigned x = 99;
    for (int trial = 0; trial < 60; trial++) {
        int n = 3 + trial % 8, P = 1 + trial % 4;
        if (P > n)
            P = n;
        const char *method = trial % 2 ? "parameters" : "flops";
        char text[4096];
        int w = 4;
        size_t o = snprintf(text, sizeof text, "model m {\n  input x: float32[%d]\n  target y: int32[]\n", w);
        for (int i = 0; i < n; i++) {
            x = x * 1103515245u + 12345u;
            if ((x >> 16) % 4 == 0)
                o += snprintf(text + o, sizeof text - o, "  relu\n");
            else
                o += snprintf(text + o, sizeof text - o, "  linear(%u)\n", 1 + (x >> 16) % 40);
        }
        o += snprintf(text + o, sizeof text - o, "  loss cross_entropy\n}\npipeline { stages = %d; partition = %s }\n",
                      P, method);
        T *t = t_compile(text);
        ck_ok(t);
        const PlanModel *m = &t->f.model;
        int64_t cost[16];
        for (int i = 0; i < n; i++)
            cost[i] = trial % 2 ? m->layer[i].held : m->layer[i].flops;
        int64_t worst = 0;
        for (int k = 0; k < P; k++) {
            const PlanPart *p = &t->f.part.part[k];
            ck_assert_int_le(p->first, p->last); /* never empty */
            if (k > 0)
                ck_assert_int_eq(p->first, t->f.part.part[k - 1].last + 1);
            if (p->cost > worst)
                worst = p->cost;
        }
        ck_assert_int_eq(t->f.part.part[P - 1].last, n - 1);
        ck_assert_int_eq(worst, brute(cost, n, P, 0, P));
        t_free(t);
    }
}
END_TEST

START_TEST(uniform_remainder_last)
{
    T *t = t_compile("model m {\n  input x: float32[4]\n  target y: int32[]\n  repeat 9 { relu }\n  linear(3)\n"
                     "  loss cross_entropy\n}\npipeline { stages = 4 }\n");
    ck_ok(t);
    int want[4][2] = {{0, 1}, {2, 3}, {4, 6}, {7, 9}};
    for (int k = 0; k < 4; k++) {
        ck_assert_int_eq(t->f.part.part[k].first, want[k][0]);
        ck_assert_int_eq(t->f.part.part[k].last, want[k][1]);
        ck_assert_int_eq(t->f.part.part[k].stage, k);
    }
    t_free(t);
}
END_TEST

START_TEST(alexnet_by_parameters)
{
    char path[512];
    snprintf(path, sizeof path, "%s/examples/alexnet.pipe", PIPE_SOURCE_DIR);
    DiagList dl;
    diag_init(&dl);
    PcFront f;
    ck_assert_int_eq(pc_front_file(&f, &dl, path, NULL, 0), 0);
    /* the convolutions plus the first 9216x4096 linear (40.2M) against the
     * rest (16.8M): any other cut leaves a part above 40.2M */
    ck_assert_int_eq(f.part.part[0].last, 18);
    ck_assert_int_eq(f.part.part[0].params, 40222528);
    ck_assert_int_eq(f.part.part[1].params, 16822282);
    ck_assert_int_eq(f.part.bnd[0].nitems, 1);
    ck_assert_int_eq(f.part.bnd[0].bytes, 4096 * 4 * 8); /* micro_batch_size 8 */
    pc_front_free(&f);
    diag_free(&dl);
}
END_TEST

START_TEST(type_regex)
{
    const char *d[] = {"stages=2", "partition=\"type:transformer\""};
    T *t = t_compile_defs(GPT, d, 2);
    ck_ok(t);
    /* three blocks each: the embedding goes with the first, the head with the last */
    ck_assert_int_eq(t->f.part.part[0].first, 0);
    ck_assert_int_eq(t->f.part.part[0].last, 3);
    ck_assert_int_eq(t->f.part.part[1].first, 4);
    ck_assert_int_eq(t->f.part.part[1].last, 8);
    t_free(t);
}
END_TEST

START_TEST(explicit_list)
{
    const char *d[] = {"stages=3", "partition=[0, 1, 7]"};
    T *t = t_compile_defs(GPT, d, 2);
    ck_ok(t);
    ck_assert_int_eq(t->f.part.part[0].last, 0);
    ck_assert_int_eq(t->f.part.part[1].last, 6);
    ck_assert_int_eq(t->f.part.part[2].last, 8);
    t_free(t);
}
END_TEST

START_TEST(placement)
{
    const char *d1[] = {"stages=2", "schedule=interleaved(chunks = 2)"};
    T *t = t_compile_defs(GPT, d1, 2);
    ck_ok(t);
    int loop[4][2] = {{0, 0}, {1, 0}, {0, 1}, {1, 1}};
    for (int k = 0; k < 4; k++) {
        ck_assert_int_eq(t->f.part.part[k].stage, loop[k][0]);
        ck_assert_int_eq(t->f.part.part[k].chunk, loop[k][1]);
    }
    t_free(t);
    const char *d2[] = {"stages=3", "schedule=zb-v"};
    t = t_compile_defs(GPT, d2, 2);
    ck_ok(t);
    ck_assert_int_eq(t->f.part.nparts, 6);
    int v[6][2] = {{0, 0}, {1, 0}, {2, 0}, {2, 1}, {1, 1}, {0, 1}};
    for (int k = 0; k < 6; k++) {
        ck_assert_int_eq(t->f.part.part[k].stage, v[k][0]);
        ck_assert_int_eq(t->f.part.part[k].chunk, v[k][1]);
    }
    /* in a V, the first and last layers share stage 0: the tie is local */
    ck_assert_int_eq(t->f.part.nties, 1);
    ck_assert_int_eq(t->f.part.tie[0].cross_stage, 0);
    t_free(t);
}
END_TEST

START_TEST(boundary_carries_mask)
{
    const char *d[] = {"stages=9"};
    T *t = t_compile_defs(GPT, d, 1);
    ck_ok(t);
    /* layers 1..6 use the mask: it crosses every boundary before layer 6 */
    for (int k = 0; k < 8; k++) {
        const PlanBoundary *b = &t->f.part.bnd[k];
        int next = k + 1;
        ck_assert_str_eq(b->item[0].name, "activation");
        if (next <= 6) {
            ck_assert_int_eq(b->nitems, 2);
            ck_assert_str_eq(b->item[1].name, "mask");
            ck_assert_int_eq(b->item[1].bytes, 16 * 4);
            ck_assert_int_eq(b->bytes, 16 * 32 * 4 + 16 * 4);
        } else {
            ck_assert_int_eq(b->nitems, 1);
        }
    }
    ck_assert_int_eq(t->f.part.tie[0].cross_stage, 1);
    t_free(t);
}
END_TEST

START_TEST(too_many_parts)
{
    const char *d[] = {"stages=5", "schedule=interleaved(chunks = 2)"};
    T *t = t_compile_defs(GPT, d, 2);
    ck_err(t, "-D stages:1:1: error: 5 stages x 2 chunks = 10 parts, but model 'g' has only 9 layers");
    t_free(t);
    t = t_compile("model m {\n  input x: float32[4]\n  target y: int32[]\n  linear(3)\n  loss cross_entropy\n}\n"
                  "pipeline {\n  stages = 2\n}\n");
    ck_err(t, "t.pipe:8:12: error: 2 stages x 1 chunk = 2 parts, but model 'm' has only 1 layer");
    t_free(t);
}
END_TEST

START_TEST(local_handover_and_held)
{
    /* one stage, two chunks: the boundary is a hand-over, and the tied
     * weight is held once */
    const char *d[] = {"stages=1", "schedule=interleaved(chunks = 2)"};
    T *t = t_compile_defs(GPT, d, 2);
    ck_ok(t);
    ck_assert_int_eq(t->f.part.nparts, 2);
    ck_assert_int_eq(t->f.part.bnd[0].local, 1);
    ck_assert_int_eq(t->f.part.part[0].held + t->f.part.part[1].held, t->f.model.total_params);
    t_free(t);
    /* across stages: the head's stage holds a copy */
    const char *d2[] = {"stages=2"};
    t = t_compile_defs(GPT, d2, 1);
    ck_ok(t);
    ck_assert_int_eq(t->f.part.bnd[0].local, 0);
    ck_assert_int_eq(t->f.part.part[0].held + t->f.part.part[1].held, t->f.model.total_params + 64 * 32);
    t_free(t);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("partition");
    TCase *c = tcase_create("partition");
    tcase_add_test(c, balanced_is_optimal);
    tcase_add_test(c, uniform_remainder_last);
    tcase_add_test(c, alexnet_by_parameters);
    tcase_add_test(c, type_regex);
    tcase_add_test(c, explicit_list);
    tcase_add_test(c, placement);
    tcase_add_test(c, boundary_carries_mask);
    tcase_add_test(c, too_many_parts);
    tcase_add_test(c, local_handover_and_held);
    suite_add_tcase(s, c);
    return s;
}

T_MAIN(suite)
