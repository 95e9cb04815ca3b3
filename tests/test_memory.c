/* tests/test_memory.c: plan/plan_memory.c (what a stage keeps in memory) and
 * memory_limit. That pipert allocates exactly these numbers is checked end
 * to end by tests/e2e/test_memory.sh; here, the layout itself and the
 * limit's parsing and refusal. */
#include "plan_memory.h"
#include "pc_planner.h"
#include "testutil.h"

#define MLP                                                                                                  \
    "model mlp {\n  input x: float32[8]\n  target y: int32[]\n  linear(16) as a\n  layernorm\n  relu\n"    \
    "  linear(8)\n  tanh\n  linear(16, tie = a)\n  relu\n  linear(4)\n  loss cross_entropy\n}\n"           \
    "pipeline { stages = 2; micro_batches = 8; micro_batch_size = 4; schedule = gpipe }\n"                 \
    "train { optimizer = adam(lr = 0.01) }\n"

typedef struct P {
    T *t;
    PlanSchedule p;
    SchedActions acts;
    int rc;
} P;

static P *plan(const char *text, const char *const *defs, int ndefs)
{
    P *x = calloc(1, sizeof *x);
    x->t = t_compile_defs(text, defs, ndefs);
    x->rc = x->t->rc;
    if (x->rc == 0)
        x->rc = pc_plan_build(&x->t->dl, &x->t->f, &x->p, &x->acts, 0);
    return x;
}

static void plan_free(P *x)
{
    sched_actions_free(&x->acts);
    plan_schedule_free(&x->p);
    t_free(x->t);
    free(x);
}

/* All diagnostics, formatted, one per line. */
static char *messages(const DiagList *dl)
{
    char *buf, line[1400];
    size_t n;
    FILE *m = open_memstream(&buf, &n);
    for (int i = 0; i < dl->n; i++) {
        diag_format(dl, &dl->d[i], line, sizeof line);
        fprintf(m, "%s\n", line);
    }
    fclose(m);
    return buf;
}

static PlanMemory stage_mem(P *x, int s)
{
    PlanMemory m;
    PlanIR ir = pc_ir_view(&x->t->f, &x->p);
    plan_stage_memory(&ir, s, &m);
    return m;
}

START_TEST(state_bytes_per_layer)
{
    T *t = t_layers("float32[4, 8, 8]",
                    "  maxpool2d(2)\n  flatten\n  layernorm\n  linear(10)", "int32[]");
    ck_ok(t);
    const PlanModel *m = &t->f.model;
    ck_assert_int_eq(plan_layer_state_bytes(&m->layer[0]), 4 * 4 * 4 * 4); /* an int32 argmax per output */
    ck_assert_int_eq(plan_layer_state_bytes(&m->layer[1]), 0);
    ck_assert_int_eq(plan_layer_state_bytes(&m->layer[2]), 2 * 4);          /* one row: mean and rstd */
    ck_assert_int_eq(plan_layer_state_bytes(&m->layer[3]), 0);
    t_free(t);
    t = t_layers("float32[16, 32]", "  transformer_block(heads = 4)\n  linear(3)", "int32[16]");
    ck_ok(t);
    /* everything between the block's input and output: far more than its output */
    ck_assert_int_gt(plan_layer_state_bytes(&t->f.model.layer[0]), 8 * 16 * 32 * 4);
    t_free(t);
}
END_TEST

/* A residual block keeps its layers' outputs and states, in order, in its
 * own saved state; its inner gradients are the output gradients of its
 * layers with weights; a block without weights keeps none. */
START_TEST(residual_layout)
{
    T *t = t_layers("float32[2, 4, 4]",
                    "  residual { conv2d(2, kernel = 3, padding = 1); relu; maxpool2d(kernel = 3, stride = 1, padding = 1)"
                    "; layernorm } shortcut { relu }\n  residual { relu; tanh }\n  flatten\n  linear(3)",
                    "int32[]");
    ck_ok(t);
    const PlanLayer *R = &t->f.model.layer[0];
    PlanSubLayout sub[5];
    int64_t inner = -1;
    int64_t o = 32 * 4; /* every output is [2, 4, 4] */
    ck_assert_int_eq(plan_residual_layout(R, sub, &inner), 5 * o + o /* argmax */ + 2 * 8 * 4 /* 8 rows */);
    ck_assert_int_eq(plan_layer_state_bytes(R), 6 * o + 64);
    const int64_t want_out[5] = {0, o, 2 * o, 4 * o, 5 * o + 64};
    const int64_t want_save[5] = {o, 2 * o, 3 * o, 5 * o, 6 * o + 64};
    const int64_t want_keep[5] = {0, -1, -1, 32, -1};
    for (int j = 0; j < 5; j++) {
        ck_assert_int_eq(sub[j].out_off, want_out[j]);
        ck_assert_int_eq(sub[j].save_off, want_save[j]);
        ck_assert_int_eq(sub[j].dkeep_off, want_keep[j]);
    }
    ck_assert_int_eq(inner, 64);
    ck_assert(plan_layer_keeps_inner_grads(R));
    const PlanLayer *R2 = &t->f.model.layer[1];
    ck_assert(!plan_layer_keeps_inner_grads(R2));
    ck_assert_int_eq(plan_layer_state_bytes(R2), 2 * o);
    ck_assert_int_eq(plan_residual_scratch_at(R, 4) % 16, 0);
    /* a split schedule keeps the block's inner gradients, for B samples,
     * and nothing for the block without weights */
    PlanChunkLayout l;
    plan_chunk_layout(&t->f.model, &t->f.part, 4, 0, 1, 0, &l);
    ck_assert_int_gt(l.lay[0].dout_off, 0);
    ck_assert_int_eq(l.lay[1].dout_off, 0);
    ck_assert_int_eq(l.lay[0].save_bytes, 4 * (6 * o + 64));
    /* the scratch: the block's own arrays behind its layers' (conv2d's im2col) */
    ck_assert_int_ge(l.scratch_elems, plan_residual_scratch_at(R, 4) + 2 * 4 * 32 + 4 * inner);
    plan_chunk_layout_free(&l);
    t_free(t);
    /* odd sizes: every array 64 bytes apart per sample, so aligned for any
     * micro-batch on a device */
    t = t_layers("float32[3]", "  residual { linear(5); relu; linear(3) }", "int32[]");
    ck_ok(t);
    R = &t->f.model.layer[0];
    ck_assert_int_eq(plan_residual_layout(R, sub, &inner), 3 * 64);
    ck_assert_int_eq(sub[1].out_off, 64);
    ck_assert_int_eq(sub[2].out_off, 128);
    ck_assert_int_eq(sub[2].save_off, 192);
    ck_assert_int_eq(sub[2].dkeep_off, 16);
    ck_assert_int_eq(inner, 32);
    ck_assert_int_eq(plan_residual_pingpong(R), 16);
    t_free(t);
}
END_TEST

/* Every array of the slot 64-byte aligned, inside the slot, none
 * overlapping. */
START_TEST(slot_layout_is_disjoint)
{
    for (int ac = 0; ac <= 2; ac++)
        for (int split = 0; split <= 1; split++) {
            T *t = t_compile(MLP);
            ck_ok(t);
            const PlanPartition *pt = &t->f.part;
            for (int k = 0; k < pt->nparts; k++) {
                PlanChunkLayout l;
                plan_chunk_layout(&t->f.model, pt, 4, k, split, ac, &l);
                int64_t lo[64], hi[64];
                int n = 0;
                lo[n] = l.in_off, hi[n++] = l.in_off + l.in_bytes;
                lo[n] = l.outt_off, hi[n++] = l.outt_off + l.outt_bytes;
                lo[n] = l.dout_off, hi[n++] = l.dout_off + 4 * 4 * l.lay[l.last - l.first].out_elems;
                if (l.is_last)
                    lo[n] = l.tgt_off, hi[n++] = l.tgt_off + 4 * 4;
                for (int i = 0; i < l.last - l.first; i++)
                    if (l.lay[i].ws_out < 0)
                        lo[n] = l.lay[i].out_off, hi[n++] = l.lay[i].out_off + 4 * 4 * l.lay[i].out_elems;
                for (int i = 0; i <= l.last - l.first; i++) {
                    if (l.lay[i].ws_save < 0 && l.lay[i].save_bytes > 0)
                        lo[n] = l.lay[i].save_off, hi[n++] = l.lay[i].save_off + l.lay[i].save_bytes;
                    if (l.lay[i].dout_off > 0)
                        lo[n] = l.lay[i].dout_off, hi[n++] = l.lay[i].dout_off + 4 * 4 * l.lay[i].out_elems;
                    ck_assert_msg((l.lay[i].dout_off > 0) == (split && (t->f.model.layer[l.first + i].nparams > 0 || t->f.model.layer[l.first + i].tie >= 0)),
                                  "a kept output gradient exactly for split layers with weights");
                }
                for (int a = 0; a < n; a++) {
                    ck_assert_int_eq(lo[a] % 64, 0);
                    ck_assert_int_le(hi[a], l.slot_bytes);
                    for (int b = 0; b < a; b++)
                        ck_assert_msg(hi[a] <= lo[b] || hi[b] <= lo[a], "part %d, ac %d, split %d: arrays %d and %d overlap",
                                      k, ac, split, a, b);
                }
                if (ac == 0)
                    ck_assert_int_eq(l.ws_bytes, 0);
                if (ac >= 2 && l.last > l.first) /* a segment's inner outputs move to the workspace */
                    ck_assert_int_gt(l.ws_bytes, 0);
                plan_chunk_layout_free(&l);
            }
            t_free(t);
        }
}
END_TEST

START_TEST(stage_memory_parts)
{
    P *x = plan(MLP, NULL, 0);
    ck_assert_int_eq(x->rc, 0);
    const PlanModel *m = &x->t->f.model;
    int64_t params = 0;
    for (int s = 0; s < 2; s++) {
        PlanMemory mem = stage_mem(x, s);
        int64_t part[6], sum = 0;
        plan_memory_parts(&mem, part);
        for (int k = 0; k < 6; k++)
            sum += part[k];
        ck_assert_int_eq(sum, mem.total);
        ck_assert_int_eq(mem.gradients, mem.parameters);
        ck_assert_int_eq(mem.optimizer_state, 2 * mem.parameters); /* adam: exp_avg, exp_avg_sq */
        ck_assert_int_gt(mem.activations, 0);
        ck_assert_int_eq(mem.recompute_workspace, 0);
        params += mem.parameters;
    }
    /* every parameter once, plus the tied linear's copy of its weight */
    ck_assert_int_eq(params, 4 * (m->total_params + m->layer[0].param[0].count));
    plan_free(x);
}
END_TEST

/* gpipe keeps every micro-batch in flight, 1f1b at most `stages`;
 * activation checkpointing keeps fewer activations, adds a workspace and
 * costs time (the recomputed forwards). */
START_TEST(schedules_and_checkpointing_change_memory)
{
    P *g = plan(MLP, NULL, 0);
    const char *one[] = {"schedule=1f1b"};
    P *o = plan(MLP, one, 1);
    const char *ac[] = {"activation_checkpoint=3"};
    P *a = plan(MLP, ac, 1);
    ck_assert_int_eq(g->rc, 0);
    ck_assert_int_eq(o->rc, 0);
    ck_assert_int_eq(a->rc, 0);
    ck_assert_int_lt(stage_mem(o, 0).activations, stage_mem(g, 0).activations);
    ck_assert_int_lt(stage_mem(a, 0).activations, stage_mem(g, 0).activations);
    ck_assert_int_gt(stage_mem(a, 0).recompute_workspace, 0);
    ck_assert(a->p.train_sim.step_time > g->p.train_sim.step_time);
    plan_free(g), plan_free(o), plan_free(a);
}
END_TEST

START_TEST(memory_limit_values)
{
    static const struct {
        const char *def;
        int64_t bytes;
    } good[] = {{"memory_limit = 24 GiB", (int64_t)24 << 30}, {"memory_limit=24GiB", (int64_t)24 << 30},
                {"memory_limit = 1 MiB", 1 << 20},            {"memory_limit = 512 KiB", 512 << 10},
                {"memory_limit = 2 TiB", (int64_t)2 << 40}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        const char *d[] = {good[i].def};
        T *t = t_compile_defs(MLP, d, 1);
        ck_ok(t);
        ck_assert_int_eq(t->f.cfg.memory_limit, good[i].bytes);
        t_free(t);
    }
    /* in the file too */
    char *text = malloc(strlen(MLP) + 64);
    strcpy(text, MLP);
    char *at = strstr(text, "schedule = gpipe }");
    strcpy(at, "schedule = gpipe; memory_limit = 3 MiB }\ntrain { optimizer = adam(lr = 0.01) }\n");
    T *t = t_compile(text);
    ck_ok(t);
    ck_assert_int_eq(t->f.cfg.memory_limit, 3 << 20);
    t_free(t);
    free(text);
    static const struct {
        const char *def, *msg;
    } bad[] = {{"memory_limit = 24", "memory_limit needs a unit: 24 KiB, MiB or GiB"},
               {"memory_limit = 24 GB", "memory_limit must be a positive size with a unit"},
               {"memory_limit = 0 MiB", "memory_limit must be a positive size"},
               {"memory_limit = lots", "not 'lots'"},
               {"memory_limit = 9999999999 TiB", "memory_limit must be a positive size"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *d[] = {bad[i].def};
        t = t_compile_defs(MLP, d, 1);
        ck_err(t, bad[i].msg);
        ck_assert_msg(strstr(t->err, "-D memory_limit:1:") != NULL, "located: %s", t->err);
        t_free(t);
    }
    /* a size anywhere else is the wrong type */
    const char *d[] = {"stages = 2 GiB"};
    t = t_compile_defs(MLP, d, 1);
    ck_err(t, "not '2 GiB'");
    t_free(t);
}
END_TEST

START_TEST(memory_limit_refuses_and_suggests)
{
    P *g = plan(MLP, NULL, 0);
    const char *one[] = {"schedule=1f1b"};
    P *o = plan(MLP, one, 1);
    ck_assert_int_eq(g->rc, 0);
    int64_t need = stage_mem(g, 0).total, need1 = stage_mem(o, 0).total;
    if (stage_mem(g, 1).total > need)
        need = stage_mem(g, 1).total;
    if (stage_mem(o, 1).total > need1)
        need1 = stage_mem(o, 1).total;
    ck_assert_int_lt(need1, need);
    /* a limit in KiB between what 1f1b and gpipe need: gpipe is refused,
     * and 1f1b is named as fitting */
    int64_t kib = (need1 + 1023) / 1024;
    ck_assert_int_lt(kib * 1024, need);
    char def[64];
    snprintf(def, sizeof def, "memory_limit = %lld KiB", (long long)kib);
    const char *d[] = {def};
    P *x = plan(MLP, d, 1);
    ck_assert_int_eq(x->rc, PC_USER_ERROR);
    char *all = messages(&x->t->dl), want[160];
    snprintf(want, sizeof want, "-D memory_limit:1:2: error: stage 0 needs %lld bytes of memory",
             (long long)stage_mem(g, 0).total);
    ck_assert_msg(strstr(all, want) != NULL, "want '%s' in:\n%s", want, all);
    snprintf(want, sizeof want, "over memory_limit = %lld KiB", (long long)kib);
    ck_assert_msg(strstr(all, want) != NULL, "want '%s' in:\n%s", want, all);
    ck_assert_msg(strstr(all, "note: stage 0: parameters ") && strstr(all, "transfer_staging "), "%s", all);
    ck_assert_msg(strstr(all, "would fit: schedule = 1f1b instead of gpipe"), "%s", all);
    ck_assert_msg(strstr(all, "activation_checkpoint = "), "%s", all);
    ck_assert_msg(strstr(all, "stages = 4"), "%s", all);
    free(all);
    plan_free(x);
    /* exactly the need: accepted */
    snprintf(def, sizeof def, "memory_limit = %lld KiB", (long long)((need + 1023) / 1024));
    x = plan(MLP, d, 1);
    ck_assert_int_eq(x->rc, 0);
    plan_free(x);
    plan_free(g), plan_free(o);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("memory");
    TCase *c = tcase_create("memory");
    tcase_add_test(c, state_bytes_per_layer);
    tcase_add_test(c, residual_layout);
    tcase_add_test(c, slot_layout_is_disjoint);
    tcase_add_test(c, stage_memory_parts);
    tcase_add_test(c, schedules_and_checkpointing_change_memory);
    tcase_add_test(c, memory_limit_values);
    tcase_add_test(c, memory_limit_refuses_and_suggests);
    suite_add_tcase(s, c);
    return s;
}

T_MAIN(suite)
