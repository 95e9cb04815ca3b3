/* tests/test_config.c: the pipeline and train keys, their defaults and
 * checks, and -D overrides. */
#include "testutil.h"

#define MODEL "model m {\n  input x: float32[4]\n  target y: int32[]\n  repeat 8 { linear(4) }\n  linear(3)\n" \
              "  loss cross_entropy\n}\n"
/* models whose inputs take the data sources the tests below name (pipec
 * checks every source against the model) */
#define IMAGE_MODEL "model m {\n  input x: float32[3, 224, 224]\n  target y: int32[]\n  flatten\n" \
                    "  repeat 4 { linear(10) }\n  loss cross_entropy\n}\n"
#define TOKEN_MODEL "model m {\n  input x: int32[8]\n  target y: int32[8]\n  embedding(16, 4)\n" \
                    "  repeat 8 { linear(4) }\n  linear(16)\n  loss cross_entropy\n}\n"

START_TEST(defaults)
{
    T *t = t_compile(MODEL);
    ck_ok(t);
    const PlanConfig *c = &t->f.cfg;
    ck_assert_int_eq(c->stages, 1);
    ck_assert_int_eq(c->data_parallel, 0); /* auto */
    ck_assert_int_eq(c->micro_batches, 1);
    ck_assert_int_eq(c->schedule, PLAN_SCHED_ONE_F_ONE_B);
    ck_assert_int_eq(c->chunks, 1);
    ck_assert_int_eq(c->partition, PLAN_PART_UNIFORM);
    ck_assert_int_eq(c->optimizer, PLAN_OPT_SGD);
    ck_assert_int_eq(c->data.kind, PLAN_DATA_SYNTHETIC);
    ck_assert_int_eq(c->shuffle, 1);
    ck_assert_int_eq(c->precision, PLAN_PREC_FP32);
    ck_assert(c->grad_clip == 0);
    t_free(t);
}
END_TEST

START_TEST(all_keys)
{
    T *t = t_compile(IMAGE_MODEL "pipeline {\n  stages = 3\n  data_parallel = 2\n  micro_batches = 12\n"
                     "  micro_batch_size = 16\n  schedule = zb-h1\n  partition = flops\n  activation_checkpoint = 2\n"
                     "  link_bandwidth = 25.5\n}\n"
                     "train {\n  optimizer = adamw(lr = 3e-4, betas = (0.9, 0.95))\n  steps = 50\n  seed = 7\n"
                     "  data = idx(\"a.gz\", \"b.gz\")\n  shuffle = false\n  eval_data = cifar10(\"dir\", resize = 224)\n"
                     "  eval_every = 10\n  lr_schedule = cosine(warmup = 5, min_lr = 1e-5)\n  grad_clip = 1.0\n"
                     "  precision = bf16\n}\n");
    ck_ok(t);
    const PlanConfig *c = &t->f.cfg;
    ck_assert_int_eq(c->stages, 3);
    ck_assert_int_eq(c->data_parallel, 2);
    ck_assert_int_eq(c->micro_batches, 12);
    ck_assert_int_eq(c->micro_batch_size, 16);
    ck_assert_int_eq(c->schedule, PLAN_SCHED_ZB_H1);
    ck_assert_int_eq(c->partition, PLAN_PART_FLOPS);
    ck_assert_int_eq(c->activation_checkpoint, 2);
    ck_assert(c->link_bandwidth == 25.5);
    ck_assert_int_eq(c->optimizer, PLAN_OPT_ADAMW);
    ck_assert(c->lr == 3e-4 && c->beta1 == 0.9 && c->beta2 == 0.95);
    ck_assert(c->weight_decay == 0.01); /* adamw's default */
    ck_assert(c->eps == 1e-8);
    ck_assert_int_eq(c->steps, 50);
    ck_assert_int_eq(c->seed, 7);
    ck_assert_int_eq(c->data.kind, PLAN_DATA_IDX);
    ck_assert_str_eq(c->data.path, "a.gz");
    ck_assert_str_eq(c->data.path2, "b.gz");
    ck_assert_int_eq(c->shuffle, 0);
    ck_assert_int_eq(c->eval_data.kind, PLAN_DATA_CIFAR10);
    ck_assert_int_eq(c->eval_data.resize, 224);
    ck_assert_int_eq(c->eval_every, 10);
    ck_assert_int_eq(c->lr_schedule, PLAN_LR_COSINE);
    ck_assert_int_eq(c->warmup, 5);
    ck_assert(c->min_lr == 1e-5);
    ck_assert(c->grad_clip == 1.0);
    ck_assert_int_eq(c->precision, PLAN_PREC_BF16);
    t_free(t);
}
END_TEST

START_TEST(schedules)
{
    struct {
        const char *text;
        PlanScheduleKind kind;
        int chunks;
    } cases[] = {
        {"gpipe", PLAN_SCHED_GPIPE, 1},
        {"1f1b", PLAN_SCHED_ONE_F_ONE_B, 1},
        {"interleaved", PLAN_SCHED_INTERLEAVED, 2},
        {"interleaved(chunks = 3)", PLAN_SCHED_INTERLEAVED, 3},
        {"looped-bfs(chunks = 2)", PLAN_SCHED_LOOPED_BFS, 2},
        {"zb-h1", PLAN_SCHED_ZB_H1, 1},
        {"zb-h2", PLAN_SCHED_ZB_H2, 1},
        {"zb-v", PLAN_SCHED_ZB_V, 2},
        {"dualpipev", PLAN_SCHED_DUALPIPEV, 2},
        {"file(\"/tmp/pipe-test-config-2.sched\")", PLAN_SCHED_FILE, 1},
    };
    FILE *fp = fopen("/tmp/pipe-test-config-2.sched", "w");
    fputs("stage 0: F0 B0\nstage 1: F0 B0\n", fp);
    fclose(fp);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[1024];
        snprintf(buf, sizeof buf, MODEL "pipeline { stages = 2; schedule = %s }\n", cases[i].text);
        T *t = t_compile(buf);
        ck_ok(t);
        ck_assert_int_eq(t->f.cfg.schedule, cases[i].kind);
        ck_assert_int_eq(t->f.cfg.chunks, cases[i].chunks);
        t_free(t);
    }
}
END_TEST

START_TEST(key_errors)
{
    T *t = t_compile(MODEL "pipeline {\n  stage = 2\n}\n");
    ck_err(t, "t.pipe:9:3: error: unknown pipeline key 'stage'; did you mean 'stages'?");
    t_free(t);
    t = t_compile(MODEL "pipeline {\n  steps = 2\n}\n");
    ck_err(t, "'steps' belongs in the train block, not the pipeline block");
    t_free(t);
    t = t_compile(MODEL "pipeline {\n  stages = 2\n  stages = 3\n}\n");
    ck_err(t, "t.pipe:10:3: error: 'stages' is already set on line 9");
    t_free(t);
    t = t_compile(MODEL "pipeline { stages = 0 }\n");
    ck_err(t, "stages must be between 1 and 4096, not 0");
    t_free(t);
    t = t_compile(MODEL "pipeline { stages = two }\n");
    ck_err(t, "stages must be an integer, not 'two'");
    t_free(t);
    t = t_compile(MODEL "pipeline { data_parallel = many }\n");
    ck_err(t, "data_parallel must be auto or a positive integer");
    t_free(t);
    t = t_compile(MODEL "train { shuffle = 1 }\n");
    ck_err(t, "shuffle must be true or false");
    t_free(t);
    t = t_compile(MODEL "train { precision = fp16 }\n");
    ck_err(t, "precision must be fp32, tf32 or bf16, not 'fp16'");
    t_free(t);
    t = t_compile(MODEL "train { grad_clip = -1 }\n");
    ck_err(t, "grad_clip must be positive, or off");
    t_free(t);
}
END_TEST

START_TEST(callee_errors)
{
    T *t = t_compile(MODEL "pipeline { schedule = 1f1c }\n");
    ck_err(t, "t.pipe:8:23: error: unknown schedule '1f1c'; did you mean '1f1b'?");
    t_free(t);
    t = t_compile(MODEL "pipeline { schedule = pipedream }\n");
    ck_err(t, "unknown schedule 'pipedream' (one of: gpipe, 1f1b, interleaved, looped-bfs, zb-h1, zb-h2, zb-v, "
              "dualpipev, file)");
    t_free(t);
    t = t_compile(MODEL "pipeline { schedule = interleaved(chunks = 0) }\n");
    ck_err(t, "chunks must be between 1 and 64, not 0");
    t_free(t);
    t = t_compile(MODEL "pipeline { schedule = 1f1b(chunks = 2) }\n");
    ck_err(t, "'1f1b' takes no arguments");
    t_free(t);
    t = t_compile(MODEL "pipeline { schedule = file }\n");
    ck_err(t, "'file' needs argument 'path' (a string)");
    t_free(t);
    t = t_compile(MODEL "train { optimizer = adam }\n");
    ck_err(t, "'adam' needs argument 'lr'");
    t_free(t);
    t = t_compile(MODEL "train { optimizer = adam(lr = 0.1, beta = (0.9, 0.99)) }\n");
    ck_err(t, "unknown argument 'beta' for 'adam'; did you mean 'betas'?");
    t_free(t);
    t = t_compile(MODEL "train { optimizer = adam(lr = 0.1, betas = 0.9) }\n");
    ck_err(t, "argument 'betas' of 'adam' must be a pair of numbers (a, b)");
    t_free(t);
    t = t_compile(MODEL "train { optimizer = sgd(0.1, nesterov = true) }\n");
    ck_err(t, "nesterov needs momentum > 0");
    t_free(t);
    t = t_compile(MODEL "train { optimizer = lamb(lr = 1) }\n");
    ck_err(t, "unknown optimizer 'lamb'");
    t_free(t);
    t = t_compile(MODEL "train { data = tokens }\n");
    ck_err(t, "'tokens' needs argument 'file' (a string)");
    t_free(t);
    t = t_compile(MODEL "train { data = \"file.bin\" }\n");
    ck_err(t, "data must be one of synthetic, cifar10, idx, tokens, npy, not '\"file.bin\"'");
    t_free(t);
    t = t_compile(MODEL "train { lr_schedule = cosine(warmup = -1) }\n");
    ck_err(t, "warmup must not be negative");
    t_free(t);
}
END_TEST

START_TEST(partition_values)
{
    T *t = t_compile(MODEL "pipeline { stages = 3; partition = [0, 2, 5] }\n");
    ck_ok(t);
    ck_assert_int_eq(t->f.cfg.partition, PLAN_PART_LIST);
    ck_assert_int_eq(t->f.cfg.npartition_list, 3);
    t_free(t);
    t = t_compile(MODEL "pipeline { stages = 3; partition = [0, 2] }\n");
    ck_err(t, "the partition list has 2 entries, but 3 stages x 1 chunk need 3");
    t_free(t);
    t = t_compile(MODEL "pipeline { stages = 2; partition = [1, 2] }\n");
    ck_err(t, "a partition list starts at layer 0");
    t_free(t);
    t = t_compile(MODEL "pipeline { stages = 3; partition = [0, 4, 4] }\n");
    ck_err(t, "partition list entries must increase: 4 follows 4");
    t_free(t);
    t = t_compile(MODEL "pipeline { stages = 2; partition = [0, 40] }\n");
    ck_err(t, "partition list entry 40 is past the last layer (8)");
    t_free(t);
    t = t_compile(MODEL "pipeline { stages = 2; partition = \"type:lin(ear\" }\n");
    ck_err(t, "bad regular expression in partition");
    t_free(t);
    t = t_compile(MODEL "pipeline { stages = 2; partition = \"type:conv\" }\n");
    ck_err(t, "no layer's type matches \"type:conv\"");
    t_free(t);
    t = t_compile(MODEL "pipeline { stages = 2; partition = \"linear\" }\n");
    ck_err(t, "a partition string must be \"type:REGEX\"");
    t_free(t);
    t = t_compile(MODEL "pipeline { stages = 2; partition = balanced }\n");
    ck_err(t, "unknown partition 'balanced'");
    t_free(t);
}
END_TEST

START_TEST(overrides)
{
    const char *defs[] = {"stages=4", "schedule=interleaved(chunks = 2)", "optimizer=sgd(lr = 0.1)",
                          "data = tokens(\"in.u16\", pad = 0)"};
    T *t = t_compile_defs(TOKEN_MODEL "pipeline { stages = 2; schedule = 1f1b }\ntrain { steps = 4 }\n", defs, 4);
    ck_ok(t);
    ck_assert_int_eq(t->f.cfg.stages, 4);
    ck_assert_int_eq(t->f.cfg.schedule, PLAN_SCHED_INTERLEAVED);
    ck_assert_int_eq(t->f.cfg.chunks, 2);
    ck_assert_int_eq(t->f.part.nparts, 8);
    ck_assert_int_eq(t->f.cfg.optimizer, PLAN_OPT_SGD);
    ck_assert(t->f.cfg.lr == 0.1);
    ck_assert_int_eq(t->f.cfg.steps, 4); /* untouched */
    ck_assert_int_eq(t->f.cfg.data.kind, PLAN_DATA_TOKENS);
    ck_assert_int_eq(t->f.cfg.data.pad, 0);
    t_free(t);
    /* a block the file does not have is created */
    FILE *fp = fopen("/tmp/pipe-test-config-1.sched", "w");
    fputs("# two chunks on one stage\nstage 0: F0.0 F0.1 B0.1 B0.0\n", fp);
    fclose(fp);
    const char *d2[] = {"schedule=file(\"/tmp/pipe-test-config-1.sched\")", "seed=3"};
    t = t_compile_defs(MODEL, d2, 2);
    ck_ok(t);
    ck_assert_int_eq(t->f.cfg.schedule, PLAN_SCHED_FILE);
    ck_assert_str_eq(t->f.cfg.schedule_file, "/tmp/pipe-test-config-1.sched");
    ck_assert_int_eq(t->f.cfg.chunks, 2); /* from the file */
    ck_assert_int_eq(t->f.part.nparts, 2);
    ck_assert_int_eq(t->f.cfg.seed, 3);
    t_free(t);
}
END_TEST

START_TEST(override_errors)
{
    const char *d1[] = {"stagse=4"};
    T *t = t_compile_defs(MODEL, d1, 1);
    ck_err(t, "unknown key 'stagse'; did you mean 'stages'?");
    t_free(t);
    const char *d2[] = {"stages=(4"};
    t = t_compile_defs(MODEL, d2, 1);
    ck_err(t, "-D stages:1:3: error: syntax error: unexpected end of file");
    t_free(t);
    const char *d3[] = {"stages=four"};
    t = t_compile_defs(MODEL, d3, 1);
    ck_err(t, "-D stages:1:1: error: stages must be an integer, not 'four'");
    t_free(t);
    const char *d4[] = {"stages"};
    t = t_compile_defs(MODEL, d4, 1);
    ck_err(t, "-D needs key=value, not 'stages'");
    t_free(t);
    const char *d5[] = {"stages=100"};
    t = t_compile_defs(MODEL, d5, 1);
    ck_err(t, "-D stages:1:1: error: 100 stages x 1 chunk = 100 parts, but model 'm' has only 9 layers");
    t_free(t);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("config");
    TCase *c = tcase_create("config");
    tcase_add_test(c, defaults);
    tcase_add_test(c, all_keys);
    tcase_add_test(c, schedules);
    tcase_add_test(c, key_errors);
    tcase_add_test(c, callee_errors);
    tcase_add_test(c, partition_values);
    tcase_add_test(c, overrides);
    tcase_add_test(c, override_errors);
    suite_add_tcase(s, c);
    return s;
}

T_MAIN(suite)
