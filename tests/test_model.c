/* tests/test_model.c: every layer's output shape and parameter layout, and
 * every class of model error, with its location and wording. The shapes and
 * counts here follow PyTorch's formulas; tests/parity/test_shapes.py checks
 * the same against torch itself. */
#include "testutil.h"

#include <math.h>

#include "pc_model.h"

static const PlanLayer *L(T *t, int i)
{
    ck_assert_int_lt(i, t->f.model.nlayers);
    return &t->f.model.layer[i];
}

static void ck_shape(const PlanTensor *s, int ndim, int64_t d0, int64_t d1, int64_t d2)
{
    int64_t d[3] = {d0, d1, d2};
    ck_assert_int_eq(s->ndim, ndim);
    for (int i = 0; i < ndim; i++)
        ck_assert_int_eq(s->dim[i], d[i]);
}

START_TEST(linear_shapes)
{
    T *t = t_layers("float32[5, 7]", "  linear(3)\n  linear(4, bias = false)", "int32[5]");
    ck_ok(t);
    ck_shape(&L(t, 0)->out, 2, 5, 3, 0);
    ck_assert_int_eq(L(t, 0)->params, 7 * 3 + 3);
    ck_assert_int_eq(L(t, 0)->nparams, 2);
    ck_assert_str_eq(L(t, 0)->param[0].name, "weight");
    ck_assert_int_eq(L(t, 0)->param[0].dim[0], 3); /* [out, in] */
    ck_assert_int_eq(L(t, 0)->param[0].dim[1], 7);
    ck_assert_int_eq(L(t, 1)->params, 12);
    ck_assert_int_eq(L(t, 1)->nparams, 1);
    ck_assert_int_eq(L(t, 0)->flops, 2 * 5 * 7 * 3 + 5 * 3);
    ck_assert_int_eq(L(t, 1)->act_bytes, 5 * 4 * 4);
    t_free(t);
}
END_TEST

START_TEST(conv_and_pool_shapes)
{
    T *t = t_layers("float32[3, 32, 30]",
                    "  conv2d(8, kernel = 3)\n"                                   /* 0: [8, 30, 28] */
                    "  conv2d(6, kernel = (3, 5), stride = (2, 1), padding = (1, 2), bias = false)\n" /* 1 */
                    "  maxpool2d(kernel = 2)\n"                                   /* 2: stride = kernel */
                    "  maxpool2d(kernel = 3, stride = 1, padding = 1)\n"          /* 3: same size */
                    "  avgpool2d(kernel = 2, stride = 1)\n"                       /* 4 */
                    "  adaptive_avgpool2d(3)\n"                                   /* 5: [6, 3, 3] */
                    "  adaptive_avgpool2d(5, 8)\n"                                /* 6: larger than input */
                    "  flatten\n  linear(10)",
                    "int32[]");
    ck_ok(t);
    ck_shape(&L(t, 0)->out, 3, 8, 30, 28);
    ck_assert_int_eq(L(t, 0)->params, 8 * 3 * 3 * 3 + 8);
    ck_assert_int_eq(L(t, 0)->param[0].ndim, 4); /* [out, in, kh, kw] */
    ck_assert_int_eq(L(t, 0)->param[0].dim[1], 3);
    /* H: (30 + 2 - 3) / 2 + 1 = 15; W: (28 + 4 - 5) / 1 + 1 = 28 */
    ck_shape(&L(t, 1)->out, 3, 6, 15, 28);
    ck_assert_int_eq(L(t, 1)->params, 6 * 8 * 3 * 5);
    ck_shape(&L(t, 2)->out, 3, 6, 7, 14);
    ck_shape(&L(t, 3)->out, 3, 6, 7, 14);
    ck_shape(&L(t, 4)->out, 3, 6, 6, 13);
    ck_shape(&L(t, 5)->out, 3, 6, 3, 3);
    ck_shape(&L(t, 6)->out, 3, 6, 5, 8);
    ck_shape(&L(t, 7)->out, 1, 240, 0, 0);
    ck_assert_int_eq(L(t, 2)->params + L(t, 5)->params + L(t, 7)->params, 0);
    t_free(t);
}
END_TEST

START_TEST(elementwise_shapes)
{
    T *t = t_layers("float32[2, 3, 4]", "  relu\n  gelu\n  tanh\n  sigmoid\n  dropout(0.1)\n  layernorm\n"
                    "  layernorm(eps = 1e-6)\n  flatten\n  linear(5)", "int32[]");
    ck_ok(t);
    for (int i = 0; i < 7; i++)
        ck_shape(&L(t, i)->out, 3, 2, 3, 4);
    ck_assert_int_eq(L(t, 5)->params, 8); /* weight and bias over the last dim */
    ck_assert(L(t, 5)->eps == 1e-5);
    ck_assert(L(t, 6)->eps == 1e-6);
    ck_assert(L(t, 4)->p == 0.1);
    ck_shape(&L(t, 7)->out, 1, 24, 0, 0);
    t_free(t);
}
END_TEST

/* batchnorm2d: [C, H, W] in and out, weight and bias of [C] (its running
 * statistics and num_batches_tracked are buffers, not parameters), eps and
 * momentum as written, 8 FLOPs an element as layernorm */
START_TEST(batchnorm_shapes)
{
    T *t = t_layers("float32[3, 5, 4]", "  batchnorm2d\n  conv2d(6, 3)\n  batchnorm2d(eps = 1e-3, momentum = 0.25)\n"
                    "  batchnorm2d(1e-4, 0)\n  flatten\n  linear(2)", "int32[]");
    ck_ok(t);
    ck_shape(&L(t, 0)->out, 3, 3, 5, 4);
    ck_shape(&L(t, 2)->out, 3, 6, 3, 2);
    ck_assert_int_eq(L(t, 0)->params, 6);
    ck_assert_int_eq(L(t, 2)->params, 12);
    ck_assert_int_eq(L(t, 2)->nparams, 2);
    ck_assert_str_eq(L(t, 2)->param[0].name, "weight");
    ck_assert_str_eq(L(t, 2)->param[1].name, "bias");
    ck_assert_int_eq(L(t, 2)->param[1].dim[0], 6);
    ck_assert_int_eq(L(t, 2)->nbuffers, 3);
    ck_assert_str_eq(L(t, 2)->buffer[0].name, "running_mean");
    ck_assert_int_eq(L(t, 2)->buffer[0].count, 6);
    ck_assert_str_eq(L(t, 2)->buffer[2].name, "num_batches_tracked");
    ck_assert_int_eq(L(t, 2)->buffer[2].count, 1);
    ck_assert_int_eq(L(t, 2)->buffer[2].i64, 1);
    ck_assert_int_eq(L(t, 1)->nbuffers, 0);
    ck_assert(L(t, 0)->eps == 1e-5 && L(t, 0)->momentum == 0.1);
    ck_assert(L(t, 2)->eps == 1e-3 && L(t, 2)->momentum == 0.25);
    ck_assert(L(t, 3)->eps == 1e-4 && L(t, 3)->momentum == 0.0);
    ck_assert_int_eq(L(t, 0)->flops, 8 * 60);
    ck_assert_int_eq(t->f.model.total_params, 6 + (6 * 3 * 9 + 6) + 12 + 12 + (36 * 2 + 2));
    t_free(t);
    struct {
        const char *in, *layer, *msg;
    } bad[] = {
        {"float32[10]", "  batchnorm2d", "layer 0 (batchnorm2d) needs a [C, H, W] input, but gets float32[10]"},
        {"float32[2, 3, 4, 5]", "  batchnorm2d", "layer 0 (batchnorm2d) needs a [C, H, W] input, but gets float32[2, 3, 4, 5]"},
        {"float32[2, 3, 4]", "  batchnorm2d(eps = 0)", "eps of 'batchnorm2d' must be positive, not 0"},
        {"float32[2, 3, 4]", "  batchnorm2d(momentum = 1.5)", "momentum of 'batchnorm2d' must be in [0, 1], not 1.5"},
        {"float32[2, 3, 4]", "  batchnorm2d(momentum = -0.1)", "momentum of 'batchnorm2d' must be in [0, 1], not -0.1"},
        {"float32[2, 3, 4]", "  batchnorm2d(affine = false)", "unknown argument 'affine' for 'batchnorm2d'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char body[256];
        snprintf(body, sizeof body, "%s\n  flatten\n  linear(2)", bad[i].layer);
        t = t_layers(bad[i].in, body, "int32[]");
        ck_err(t, bad[i].msg);
        t_free(t);
    }
    /* one value a channel in a micro-batch: refused (1 sample of 1 x 1);
     * 2 samples are enough */
    const char *one = "model m {\n  input x: float32[3, 1, 1]\n  target y: int32[]\n  batchnorm2d\n  flatten\n"
                      "  linear(2)\n  loss cross_entropy\n}\npipeline { micro_batch_size = %d }\n";
    char text[512];
    snprintf(text, sizeof text, one, 1);
    t = t_compile(text);
    ck_err(t, "t.pipe:4:3: error: layer 0 (batchnorm2d): a micro-batch of 1 sample gives 1 value per channel; "
              "training needs more than 1 (raise micro_batch_size)");
    t_free(t);
    snprintf(text, sizeof text, one, 2);
    t = t_compile(text);
    ck_ok(t);
    t_free(t);
}
END_TEST

/* reshape and transpose: per sample, no parameters, no FLOPs; one -1;
 * dimensions from 0, negative from the end */
START_TEST(reshape_transpose_shapes)
{
    T *t = t_layers("float32[3, 4, 10]", "  transpose(0, 2)\n  reshape(5, -1, 4)\n  transpose(-1, 1)\n"
                 "  reshape(2, 60)\n  transpose(a = 1, b = -2)\n  flatten\n  linear(2)", "int32[]");
    ck_ok(t);
    ck_shape(&L(t, 0)->out, 3, 10, 4, 3);
    ck_assert_int_eq(L(t, 0)->axis_a, 0);
    ck_assert_int_eq(L(t, 0)->axis_b, 2);
    ck_shape(&L(t, 1)->out, 3, 5, 6, 4);
    ck_shape(&L(t, 2)->out, 3, 5, 4, 6);
    ck_assert_int_eq(L(t, 2)->axis_a, 2); /* -1 resolved */
    ck_shape(&L(t, 3)->out, 2, 2, 60, 0);
    ck_shape(&L(t, 4)->out, 2, 60, 2, 0);
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(L(t, i)->params, 0);
        ck_assert_int_eq(L(t, i)->flops, 0);
    }
    t_free(t);
    struct {
        const char *in, *layer, *msg;
    } bad[] = {
        {"float32[3, 4]", "  reshape(5, -1)", "layer 0 (reshape): [5, -1] cannot hold the 12 elements of float32[3, 4]"},
        {"float32[3, 4]", "  reshape(2, 2, 2)", "layer 0 (reshape): [2, 2, 2] cannot hold the 12 elements of float32[3, 4]"},
        {"float32[3, 4]", "  reshape(-1, 2, -1)", "reshape takes at most one -1 (the dimension it infers)"},
        {"float32[3, 4]", "  reshape(0, 12)", "a dimension of 'reshape' must be positive, or -1 for the one it infers, not 0"},
        {"float32[3, 4]", "  reshape(1, 1, 1, 3, 4)", "too many arguments for 'reshape' (it takes 4)"},
        {"float32[3, 4]", "  reshape(-2, 6)", "a dimension of 'reshape' must be positive, or -1 for the one it infers, not -2"},
        {"float32[12]", "  transpose(0, 1)", "layer 0 (transpose) needs an input with at least 2 dimensions, but gets float32[12]"},
        {"float32[3, 4]", "  transpose(0, 2)", "layer 0 (transpose): dimensions 0 and 2 of float32[3, 4]: a sample's dimensions are 0 to 1"},
        {"float32[3, 4]", "  transpose(-3, 0)", "layer 0 (transpose): dimensions -3 and 0 of float32[3, 4]"},
        {"float32[3, 4]", "  transpose(1)", "'transpose' needs argument 'b' (an integer)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char body[256];
        snprintf(body, sizeof body, "%s\n  flatten\n  linear(2)", bad[i].layer);
        t = t_layers(bad[i].in, body, "int32[]");
        ck_err(t, bad[i].msg);
        t_free(t);
    }
}
END_TEST

START_TEST(alexnet_params)
{
    char path[512];
    snprintf(path, sizeof path, "%s/examples/alexnet.pipe", PIPE_SOURCE_DIR);
    DiagList dl;
    diag_init(&dl);
    PcFront f;
    ck_assert_int_eq(pc_front_file(&f, &dl, path, NULL, 0), 0);
    ck_assert_int_eq(f.model.total_params, 57044810); /* torchvision's AlexNet, 10 classes */
    ck_assert_int_eq(f.model.nlayers, 22);
    ck_shape(&f.model.layer[0].out, 3, 64, 55, 55);
    ck_shape(&f.model.layer[12].out, 3, 256, 6, 6);
    ck_shape(&f.model.layer[14].out, 1, 9216, 0, 0);
    pc_front_free(&f);
    diag_free(&dl);
}
END_TEST

START_TEST(gpt_layers)
{
    char path[512];
    snprintf(path, sizeof path, "%s/examples/gpt_tiny.pipe", PIPE_SOURCE_DIR);
    DiagList dl;
    diag_init(&dl);
    PcFront f;
    ck_assert_int_eq(pc_front_file(&f, &dl, path, NULL, 0), 0);
    const PlanModel *m = &f.model;
    ck_assert_int_eq(m->nlayers, 9);
    /* embedding: tokens [256, 128] + positions [128, 128] */
    ck_assert_int_eq(m->layer[0].params, 256 * 128 + 128 * 128);
    ck_assert_str_eq(m->layer[0].param[0].name, "tokens.weight");
    ck_assert_str_eq(m->layer[0].param[1].name, "positions.weight");
    ck_shape(&m->layer[0].out, 2, 128, 128, 0);
    /* block: 2 layernorms, qkv, proj, fc, proj */
    int64_t d = 128, h = 512;
    int64_t block = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (h * d + h) + (d * h + d);
    ck_assert_int_eq(m->layer[1].params, block);
    ck_assert_int_eq(m->layer[1].nparams, 12);
    ck_assert_str_eq(m->layer[1].param[2].name, "attn.qkv.weight");
    ck_assert_int_eq(m->layer[1].param[2].dim[0], 3 * d);
    ck_assert_str_eq(m->layer[1].param[11].name, "mlp.proj.bias");
    ck_assert_int_eq(m->layer[1].mask, 1);
    ck_assert_int_eq(m->layer[1].causal, 1);
    /* the tied head owns nothing (no bias) but its stage holds the weight */
    ck_assert_int_eq(m->layer[8].tie, 0);
    ck_assert_int_eq(m->layer[8].params, 0);
    ck_assert_int_eq(m->layer[8].held, 256 * 128);
    ck_assert_int_eq(m->total_params, 256 * 128 + 128 * 128 + 6 * block + 2 * d);
    ck_assert_int_eq(m->input[1].first_use, 1);
    ck_assert_int_eq(m->input[1].last_use, 6);
    pc_front_free(&f);
    diag_free(&dl);
}
END_TEST

START_TEST(transformer_mlp_default)
{
    T *t = t_compile("model m {\n  input x: int32[16]\n  target y: int32[16]\n  embedding(100, 32)\n"
                     "  transformer_block(heads = 2)\n  linear(100)\n  loss cross_entropy\n}\n");
    ck_ok(t);
    ck_assert_int_eq(L(t, 1)->mlp, 4 * 32);
    ck_assert_int_eq(L(t, 1)->mask, -1);
    ck_assert_int_eq(L(t, 0)->params, 100 * 32); /* no positions */
    t_free(t);
}
END_TEST

/* llama_block: HF's 9 tensors and shapes (GQA: k and v are kv_heads *
 * head width), no biases, defaults (kv_heads = heads, the LLaMA mlp rule,
 * causal), the FLOP formula of docs/dsl.md section 10; rmsnorm's weight */
START_TEST(llama_shapes)
{
    T *t = t_compile("model m {\n  input x: int32[16]\n  input pad: float32[16]\n  target y: int32[16]\n"
                     "  embedding(100, 64)\n  llama_block(heads = 8, kv_heads = 2, mlp = 96, mask = pad)\n"
                     "  llama_block(heads = 4)\n  rmsnorm(eps = 1e-6)\n  linear(100)\n  loss cross_entropy\n}\n");
    ck_ok(t);
    const PlanLayer *b = L(t, 1);
    int64_t d = 64, dk = 2 * 8, f = 96, tt = 16;
    static const char *const names[9] = {"self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                         "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                                         "mlp.gate_proj.weight",    "mlp.up_proj.weight",
                                         "mlp.down_proj.weight",    "input_layernorm.weight",
                                         "post_attention_layernorm.weight"};
    int64_t dims[9][2] = {{d, d}, {dk, d}, {dk, d}, {d, d}, {f, d}, {f, d}, {d, f}, {d, 0}, {d, 0}};
    ck_assert_int_eq(b->nparams, 9);
    for (int k = 0; k < 9; k++) {
        ck_assert_str_eq(b->param[k].name, names[k]);
        ck_assert_int_eq(b->param[k].ndim, k < 7 ? 2 : 1);
        ck_assert_int_eq(b->param[k].dim[0], dims[k][0]);
        if (k < 7)
            ck_assert_int_eq(b->param[k].dim[1], dims[k][1]);
    }
    ck_assert_int_eq(b->params, 2 * d * d + 2 * d * dk + 3 * d * f + 2 * d);
    ck_assert_int_eq(b->heads, 8);
    ck_assert_int_eq(b->kv_heads, 2);
    ck_assert_int_eq(b->causal, 1);
    ck_assert_int_eq(b->mask, 1);
    ck_assert(b->theta == 10000.0 && b->eps == 1e-5);
    ck_shape(&b->out, 2, 16, 64, 0);
    double T_ = (double)tt, D = (double)d, Dk = (double)dk, F = (double)f, H = 8;
    double want = 8 * T_ * D + 2 * T_ * D * (D + 2 * Dk) + 3 * T_ * (D + Dk) + 4 * T_ * T_ * D + 5 * H * T_ * T_ +
                  2 * T_ * D * D + 4 * T_ * D * F + 5 * T_ * F + 2 * T_ * F * D + 2 * T_ * D;
    ck_assert_int_eq(b->flops, (int64_t)want);
    /* defaults: kv_heads = heads, mlp by the LLaMA rule, causal, no mask */
    ck_assert_int_eq(L(t, 2)->kv_heads, 4);
    ck_assert_int_eq(L(t, 2)->mlp, 256);
    ck_assert_int_eq(L(t, 2)->causal, 1);
    ck_assert_int_eq(L(t, 2)->mask, -1);
    ck_assert_int_eq(L(t, 2)->params, 4 * d * d + 3 * d * 256 + 2 * d);
    /* rmsnorm */
    ck_assert_int_eq(L(t, 3)->nparams, 1);
    ck_assert_str_eq(L(t, 3)->param[0].name, "weight");
    ck_assert_int_eq(L(t, 3)->params, d);
    ck_assert(L(t, 3)->eps == 1e-6);
    ck_assert_int_eq(L(t, 3)->flops, 4 * tt * d);
    ck_assert_int_eq(t->f.model.input[1].last_use, 1);
    t_free(t);
}
END_TEST

/* Meta's rule, as HF's LLaMA configs have it: 7B, 13B, 33B, 65B */
START_TEST(llama_mlp_rule)
{
    ck_assert_int_eq(pc_llama_mlp(4096), 11008);
    ck_assert_int_eq(pc_llama_mlp(5120), 13824);
    ck_assert_int_eq(pc_llama_mlp(6656), 17920);
    ck_assert_int_eq(pc_llama_mlp(8192), 22016);
    ck_assert_int_eq(pc_llama_mlp(128), 512); /* int(2 * 512 / 3) = 341, up to 512 */
    ck_assert_int_eq(pc_llama_mlp(96), 256);  /* 256 exactly: not rounded further */
    ck_assert_int_eq(pc_llama_mlp(1), 256);
}
END_TEST

START_TEST(mse_loss)
{
    T *t = t_compile("model m {\n  input x: float32[4]\n  target y: float32[2]\n  linear(2)\n  loss mse\n}\n");
    ck_ok(t);
    ck_assert_int_eq(t->f.model.loss, PLAN_LOSS_MSE);
    t_free(t);
    t = t_compile("model m {\n  input x: float32[4]\n  target y: float32[3]\n  linear(2)\n  loss mse\n}\n");
    ck_err(t, "t.pipe:5:8: error: loss mse: the model's output float32[2] needs a float32 target of the same shape, "
              "but target 'y' is float32[3]");
    t_free(t);
}
END_TEST

START_TEST(repeat_and_labels)
{
    T *t = t_compile("model m {\n  input x: float32[4]\n  target y: int32[]\n  linear(8) as first\n"
                     "  repeat 3 {\n    linear(8)\n    repeat 2 { relu }\n  }\n  linear(3)\n  loss cross_entropy\n}\n");
    ck_ok(t);
    ck_assert_int_eq(t->f.model.nlayers, 1 + 3 * 3 + 1);
    ck_assert_str_eq(L(t, 0)->label, "first");
    ck_assert_int_eq(L(t, 1)->kind, PLAN_L_LINEAR);
    ck_assert_int_eq(L(t, 2)->kind, PLAN_L_RELU);
    ck_assert_int_eq(L(t, 4)->kind, PLAN_L_LINEAR);
    ck_assert_int_eq(L(t, 10)->index, 10);
    t_free(t);
}
END_TEST

/* ---- errors ---- */

START_TEST(err_unknown_layer)
{
    T *t = t_layers("float32[4]", "  lnear(3)", "int32[]");
    ck_err(t, "t.pipe:4:3: error: unknown layer 'lnear'; did you mean 'linear'?");
    t_free(t);
    t = t_layers("float32[4]", "  frobnicate", "int32[]");
    ck_err(t, "unknown layer 'frobnicate'");
    ck_assert_ptr_null(strstr(t->err, "did you mean"));
    t_free(t);
    t = t_layers("float32[4]", "  cross_entropy", "int32[]");
    ck_err(t, "'cross_entropy' is a loss, not a layer");
    t_free(t);
}
END_TEST

START_TEST(err_arguments)
{
    T *t = t_layers("float32[3, 8, 8]", "  conv2d(8, kernal = 3)", "int32[]");
    ck_err(t, "t.pipe:4:13: error: unknown argument 'kernal' for 'conv2d'; did you mean 'kernel'?");
    t_free(t);
    t = t_layers("float32[3, 8, 8]", "  conv2d(8)", "int32[]");
    ck_err(t, "t.pipe:4:3: error: 'conv2d' needs argument 'kernel'");
    t_free(t);
    t = t_layers("float32[4]", "  linear(3.5)", "int32[]");
    ck_err(t, "t.pipe:4:10: error: argument 'out' of 'linear' must be an integer, not a number '3.5'");
    t_free(t);
    t = t_layers("float32[4]", "  linear(1e3)", "int32[]");
    ck_err(t, "argument 'out' of 'linear' must be an integer, not a number '1e3'");
    t_free(t);
    t = t_layers("float32[4]", "  linear(3, bias = yes)", "int32[]");
    ck_err(t, "argument 'bias' of 'linear' must be true or false, not a word 'yes'");
    t_free(t);
    t = t_layers("float32[4]", "  linear(3, out = 4)", "int32[]");
    ck_err(t, "argument 'out' of 'linear' given twice");
    t_free(t);
    t = t_layers("float32[4]", "  relu(1)", "int32[]");
    ck_err(t, "'relu' takes no arguments");
    t_free(t);
    t = t_layers("float32[4]", "  linear(3, true, wte, row, 7)", "int32[]");
    ck_err(t, "too many arguments for 'linear' (it takes 4)");
    t_free(t);
    t = t_layers("float32[4]", "  linear(bias = false, 3)", "int32[]");
    ck_err(t, "positional argument after a named one");
    t_free(t);
    t = t_layers("float32[4]", "  linear(0)", "int32[]");
    ck_err(t, "out of 'linear' must be at least 1, not 0");
    t_free(t);
    t = t_layers("float32[4]", "  dropout(1.5)", "int32[]");
    ck_err(t, "p of 'dropout' must be in [0, 1), not 1.5");
    t_free(t);
    t = t_layers("float32[3, 8, 8]", "  maxpool2d(kernel = 2, padding = 2)", "int32[]");
    ck_err(t, "padding of 'maxpool2d' must be at most half the kernel");
    t_free(t);
}
END_TEST

START_TEST(err_arguments_collected)
{
    /* argument errors of different layers are all reported, once each even
     * inside repeat */
    T *t = t_layers("float32[4]", "  lnear(3)\n  repeat 5 { relu(2) }\n  linear(kernel = 3)", "int32[]");
    ck_assert_int_eq(t->rc, PC_USER_ERROR);
    ck_assert_int_eq(t->dl.nerrors, 4); /* lnear, relu(2) once, unknown kernel, missing out */
    t_free(t);
}
END_TEST

START_TEST(err_shapes)
{
    T *t = t_layers("float32[3, 4, 4]", "  maxpool2d(kernel = 5)", "int32[]");
    ck_err(t, "t.pipe:4:3: error: layer 0 (maxpool2d): window 5 is larger than its input float32[3, 4, 4]");
    t_free(t);
    t = t_layers("float32[3, 8, 8]", "  conv2d(4, kernel = 3)\n  maxpool2d(kernel = 2)\n  avgpool2d(kernel = 5)",
                 "int32[]");
    ck_err(t, "t.pipe:6:3: error: layer 2 (avgpool2d): window 5 is larger than its input float32[4, 3, 3]");
    t_free(t);
    t = t_layers("float32[100]", "  conv2d(4, kernel = 3)", "int32[]");
    ck_err(t, "layer 0 (conv2d) needs a [C, H, W] input, but gets float32[100]");
    t_free(t);
    t = t_layers("float32[3, 8, 8]", "  flatten\n  adaptive_avgpool2d(2)", "int32[]");
    ck_err(t, "layer 1 (adaptive_avgpool2d) needs a [C, H, W] input, but gets float32[192]");
    t_free(t);
    t = t_layers("float32[]", "  flatten\n  linear(2)", "int32[]");
    ck_err(t, "layer 0 (flatten) needs an input with at least one dimension, but gets float32[]");
    t_free(t);
    t = t_layers("float32[1073741824]", "  linear(1099511627777)", "int32[]");
    ck_err(t, "output shape is too large");
    t_free(t);
    t = t_layers("float32[1048576]", "  linear(1048577)", "int32[]");
    ck_err(t, "layer 0 (linear): a parameter tensor would have more than 2^40 elements");
    t_free(t);
    t = t_layers("float32[1, 4, 4]", "  adaptive_avgpool2d(100000000000)\n  flatten\n  linear(2)", "int32[]");
    ck_err(t, "layer 0 (adaptive_avgpool2d): output shape is too large");
    t_free(t);
    t = t_layers("float32[10]", "  transformer_block(heads = 2)", "int32[]");
    ck_err(t, "layer 0 (transformer_block) needs a [T, D] input, but gets float32[10]");
    t_free(t);
    t = t_compile("model m {\n  input x: int32[8]\n  target y: int32[8]\n  embedding(50, 30)\n"
                  "  transformer_block(heads = 4)\n  linear(50)\n  loss cross_entropy\n}\n");
    ck_err(t, "t.pipe:5:3: error: layer 1 (transformer_block): heads = 4 do not divide the width 30");
    t_free(t);
    /* each tensor within bounds, but the attention scores of a micro-batch
     * (4096 x 64 heads x 65536^2) are not: refused before any size is
     * computed in int64; 1 sample is merely large */
    const char *big = "model m {\n  input x: int32[65536]\n  target y: int32[65536]\n  embedding(10, 64)\n"
                      "  transformer_block(heads = 64)\n  linear(10)\n  loss cross_entropy\n}\n"
                      "pipeline { micro_batch_size = %d }\n";
    char bigtext[512];
    snprintf(bigtext, sizeof bigtext, big, 4096);
    t = t_compile(bigtext);
    ck_err(t, "t.pipe:5:3: error: layer 1 (transformer_block) needs more than 2^44 floats (64 TiB) for one "
              "micro-batch of 4096 samples");
    t_free(t);
    snprintf(bigtext, sizeof bigtext, big, 1);
    t = t_compile(bigtext);
    ck_ok(t);
    t_free(t);
    t = t_compile("model m {\n  input x: int32[8]\n  target y: int32[]\n  linear(3)\n  loss cross_entropy\n}\n");
    ck_err(t, "layer 0 (linear) needs a float32 input, but gets int32[8] (token ids go through an embedding first)");
    t_free(t);
    t = t_layers("float32[8]", "  embedding(10, 4)", "int32[8]");
    ck_err(t, "layer 0 (embedding) needs int32 token ids [T], but gets float32[8]");
    t_free(t);
    t = t_compile("model m {\n  input x: int32[64]\n  target y: int32[64]\n  embedding(10, 4, positions = 32)\n"
                  "  linear(10)\n  loss cross_entropy\n}\n");
    ck_err(t, "sequence length 64 is longer than positions = 32");
    t_free(t);
}
END_TEST

START_TEST(err_llama)
{
    const char *head = "model m {\n  input x: int32[8]\n  input mask: float32[8]\n  target y: int32[8]\n"
                       "  embedding(50, 24)\n";
    const char *tail = "\n  linear(50)\n  loss cross_entropy\n}\n";
    struct {
        const char *layer, *msg;
    } cases[] = {
        {"llama_block(heads = 4, kv_heads = 3)", "t.pipe:6:37: error: kv_heads = 3 of 'llama_block' must divide heads = 4"},
        {"llama_block(heads = 5)", "t.pipe:6:3: error: layer 1 (llama_block): heads = 5 do not divide the width 24"},
        {"llama_block(heads = 8)",
         "t.pipe:6:3: error: layer 1 (llama_block): the head width 3 (width 24 / heads 8) must be even for RoPE"},
        {"llama_block(heads = 4, rope_theta = 0)", "rope_theta of 'llama_block' must be positive, not 0"},
        {"llama_block(heads = 4, eps = -1)", "eps of 'llama_block' must be positive, not -1"},
        {"llama_block(heads = 0)", "heads of 'llama_block' must be at least 1, not 0"},
        {"llama_block(heads = 4, kv_heads = 0)", "kv_heads of 'llama_block' must be at least 1, not 0"},
        {"llama_block(heads = 4, mlp = 0)", "mlp of 'llama_block' must be at least 1, not 0"},
        {"llama_block(heads = 4, mask = msk)", "unknown mask input 'msk'; did you mean 'mask'?"},
        {"llama_block(heads = 4, mask = x)", "mask 'x' is the model's main input"},
        {"llama_block(heads = 4, dropout = 0.1)", "unknown argument 'dropout' for 'llama_block'"},
        {"rmsnorm(eps = 0)", "eps of 'rmsnorm' must be positive, not 0"},
    };
    char buf[1024];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(buf, sizeof buf, "%s  %s%s", head, cases[i].layer, tail);
        T *t = t_compile(buf);
        ck_err(t, cases[i].msg);
        t_free(t);
    }
    T *t = t_layers("float32[10]", "  llama_block(heads = 2)", "int32[]");
    ck_err(t, "layer 0 (llama_block) needs a [T, D] input, but gets float32[10]");
    t_free(t);
    t = t_compile("model m {\n  input x: int32[8]\n  input mask: float32[4]\n  target y: int32[8]\n"
                  "  embedding(50, 16)\n  llama_block(heads = 2, mask = mask)\n  linear(50)\n"
                  "  loss cross_entropy\n}\n");
    ck_err(t, "layer 1 (llama_block): mask 'mask' must be float32[8] to match the sequence, but is float32[4]");
    t_free(t);
}
END_TEST

/* linear(split = column | row): what tensor_parallel cuts, each rank's
 * share, and the refusals (a word that is not a split, inside a residual,
 * with a tie on either side, a T that does not divide the features) */
START_TEST(split_linears)
{
    const char *defs[] = {"tensor_parallel = 4"};
    T *t = t_compile_defs("model m {\n  input x: float32[6, 16]\n  target y: int32[6]\n"
                          "  linear(32, split = column)\n  gelu\n  linear(8, split = row, bias = false)\n"
                          "  linear(12, split = row)\n  linear(4)\n  loss cross_entropy\n}\n", defs, 1);
    ck_ok(t);
    const PlanModel *m = &t->f.model;
    ck_assert_int_eq(m->layer[0].split, PLAN_LINEAR_COLUMN);
    ck_assert_int_eq(m->layer[2].split, PLAN_LINEAR_ROW);
    ck_assert_int_eq(m->layer[4].split, PLAN_LINEAR_WHOLE);
    ck_assert_int_eq(m->layer[0].tp, 4);
    ck_assert_int_eq(m->layer[1].tp, 1);
    ck_assert_int_eq(m->layer[4].tp, 1);
    /* column: weight [32, 16] and bias by rows; row: weight [8, 32] by
     * columns, bias whole */
    ck_assert_int_eq(plan_param_split(&m->layer[0], 0), PLAN_SPLIT_ROWS);
    ck_assert_int_eq(plan_param_split(&m->layer[0], 1), PLAN_SPLIT_ROWS);
    ck_assert_int_eq(plan_param_local(&m->layer[0], 0), 8 * 16);
    ck_assert_int_eq(plan_param_split(&m->layer[2], 0), PLAN_SPLIT_COLS);
    ck_assert_int_eq(plan_param_local(&m->layer[2], 0), 8 * 8);
    ck_assert_int_eq(plan_param_split(&m->layer[3], 1), PLAN_SPLIT_NONE);
    ck_assert_int_eq(plan_param_local(&m->layer[3], 1), 12);
    /* rank 1's share of the row-split weight: columns 8..15 of each row */
    float whole[8 * 32], part[8 * 8];
    for (int i = 0; i < 8 * 32; i++)
        whole[i] = (float)i;
    plan_param_take(part, whole, &m->layer[2], 0, 1);
    ck_assert(part[0] == 8.0f && part[7] == 15.0f && part[8] == 40.0f);
    t_free(t);

    const struct {
        const char *layers, *def, *msg;
    } bad[] = {
        {"  linear(8, split = diagonal)", NULL, "t.pipe:4:21: error: split = diagonal: a linear splits by 'column'"},
        {"  residual {\n    linear(16, split = row)\n  }", NULL, "split cannot be used inside a residual block"},
        {"  linear(16) as a\n  linear(16, tie = a, split = row)", NULL, "a tied linear cannot be split"},
        {"  linear(16, split = column) as a\n  linear(16, tie = a)", NULL,
         "tie = a: layer 0 is split (split = column), and a split linear's weight cannot be shared"},
        {"  linear(16) as a\n  linear(16, tie = a, split = column)", NULL,
         "tie = a: a split = column linear ties only to an embedding with split = vocab (layer 0 is not split)"},
        {"  linear(10, split = column)", "tensor_parallel = 4",
         "tensor_parallel = 4 does not divide layer 0's output features = 10"},
        {"  linear(8, split = row)", "tensor_parallel = 3", "does not divide layer 0's input features = 16"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char buf[512];
        snprintf(buf, sizeof buf, "model m {\n  input x: float32[16]\n  target y: int32[]\n%s\n  loss cross_entropy\n}\n",
                 bad[i].layers);
        t = bad[i].def ? t_compile_defs(buf, &bad[i].def, 1) : t_compile(buf);
        ck_err(t, bad[i].msg);
        t_free(t);
    }
}
END_TEST

/* embedding(..., split = vocab): the token table by rows, the positions
 * whole; refused: another word, a T that does not divide the vocabulary, a
 * linear tied to it */
START_TEST(split_embedding)
{
    const char *defs[] = {"tensor_parallel = 4"};
    const char *text = "model m {\n  input x: int32[8]\n  target y: int32[8]\n"
                       "  embedding(vocab = 48, dim = 16, positions = 8, split = vocab)%s\n"
                       "  linear(48, bias = false%s)\n  loss cross_entropy\n}\n";
    char buf[512];
    snprintf(buf, sizeof buf, text, "", ", split = column");
    T *t = t_compile_defs(buf, defs, 1);
    ck_ok(t);
    const PlanLayer *E = &t->f.model.layer[0];
    ck_assert_int_eq(E->split, PLAN_EMBEDDING_VOCAB);
    ck_assert_int_eq(E->tp, 4);
    ck_assert(plan_layer_split(E));
    ck_assert_int_eq(plan_param_split(E, 0), PLAN_SPLIT_ROWS);
    ck_assert_int_eq(plan_param_split(E, 1), PLAN_SPLIT_NONE);
    ck_assert_int_eq(plan_param_local(E, 0), 12 * 16);
    ck_assert_int_eq(plan_param_local(E, 1), 8 * 16);
    /* rank 2's rows: 24 .. 35 */
    float whole[48 * 16], part[12 * 16];
    for (int i = 0; i < 48 * 16; i++)
        whole[i] = (float)i;
    plan_param_take(part, whole, E, 0, 2);
    ck_assert(part[0] == 24.0f * 16 && part[12 * 16 - 1] == 36.0f * 16 - 1);
    t_free(t);
    const char *d5[] = {"tensor_parallel = 5"};
    snprintf(buf, sizeof buf, text, "", "");
    t = t_compile_defs(buf, d5, 1);
    ck_err(t, "tensor_parallel = 5 does not divide layer 0's vocabulary = 48");
    t_free(t);
    snprintf(buf, sizeof buf, text, " as wte", ", tie = wte");
    t = t_compile(buf);
    ck_err(t, "tie = wte: layer 0 is split (split = vocab): a linear tied to it must be split = column");
    t_free(t);
    /* tied and split by column: the pair, the head's copy of the table is
     * a rank's share of it */
    snprintf(buf, sizeof buf, text, " as wte", ", tie = wte, split = column");
    t = t_compile_defs(buf, defs, 1);
    ck_ok(t);
    ck_assert_int_eq(t->f.model.layer[1].split, PLAN_LINEAR_COLUMN);
    ck_assert_int_eq(t->f.model.layer[1].tie, 0);
    t_free(t);
    snprintf(buf, sizeof buf, "model m {\n  input x: int32[8]\n  target y: int32[8]\n"
                              "  embedding(vocab = 48, dim = 16, split = column)\n  linear(48)\n  loss cross_entropy\n}\n");
    t = t_compile(buf);
    ck_err(t, "t.pipe:4:43: error: split = column: an embedding splits by 'vocab'");
    t_free(t);
}
END_TEST

START_TEST(err_tie_and_mask)
{
    const char *head = "model m {\n  input x: int32[8]\n  input mask: float32[8]\n  target y: int32[8]\n"
                       "  embedding(50, 16) as wte\n";
    char buf[1024];
    snprintf(buf, sizeof buf, "%s  transformer_block(heads = 2, mask = msk)\n  linear(50, tie = wte)\n"
                              "  loss cross_entropy\n}\n", head);
    T *t = t_compile(buf);
    ck_err(t, "t.pipe:6:39: error: unknown mask input 'msk'; did you mean 'mask'?");
    t_free(t);
    snprintf(buf, sizeof buf, "%s  transformer_block(heads = 2, mask = mask)\n  linear(50, tie = wtee)\n"
                              "  loss cross_entropy\n}\n", head);
    t = t_compile(buf);
    ck_err(t, "t.pipe:7:20: error: unknown tie label 'wtee'; did you mean 'wte'?");
    t_free(t);
    snprintf(buf, sizeof buf, "%s  linear(49, tie = wte)\n  loss cross_entropy\n}\n", head);
    t = t_compile(buf);
    ck_err(t, "tie = wte: layer 1's weight is [49, 16] but wte's (layer 0) is [50, 16]");
    t_free(t);
    snprintf(buf, sizeof buf, "%s  transformer_block(heads = 2, mask = x)\n  linear(50)\n  loss cross_entropy\n}\n",
             head);
    t = t_compile(buf);
    ck_err(t, "mask 'x' is the model's main input");
    t_free(t);
    t = t_compile("model m {\n  input x: int32[8]\n  input mask: float32[4]\n  target y: int32[8]\n"
                  "  embedding(50, 16)\n  transformer_block(heads = 2, mask = mask)\n  linear(50)\n"
                  "  loss cross_entropy\n}\n");
    ck_err(t, "mask 'mask' must be float32[8] to match the sequence, but is float32[4]");
    t_free(t);
    t = t_compile("model m {\n  input x: float32[8]\n  target y: int32[]\n  relu as r\n  linear(8, tie = r)\n"
                  "  loss cross_entropy\n}\n");
    ck_err(t, "tie = r: layer 0 (relu) has no weight to share");
    t_free(t);
}
END_TEST

START_TEST(err_structure)
{
    T *t = t_compile("model m {\n  target y: int32[]\n  relu\n  loss cross_entropy\n}\n");
    ck_err(t, "t.pipe:1:1: error: model 'm' has no input");
    t_free(t);
    t = t_compile("model m {\n  input x: float32[4]\n  target y: int32[]\n  linear(3)\n}\n");
    ck_err(t, "model 'm' has no loss");
    t_free(t);
    t = t_compile("model m {\n  input x: float32[4]\n  target y: int32[]\n  loss cross_entropy\n}\n");
    ck_err(t, "model 'm' has no layers");
    t_free(t);
    t = t_compile("model m {\n  input x: float32[4]\n  target y: int32[]\n  loss cross_entropy\n  linear(3)\n}\n");
    ck_err(t, "t.pipe:5:3: error: nothing but input and target declarations may follow the loss");
    t_free(t);
    t = t_compile("model m {\n  input x: float32[4]\n  target y: int32[]\n  linear(3)\n  loss hinge\n}\n");
    ck_err(t, "unknown loss 'hinge'");
    t_free(t);
    t = t_compile("model m {\n  input x: float32[4]\n  linear(3)\n  loss cross_entropy\n}\n");
    ck_err(t, "loss cross_entropy needs a target");
    t_free(t);
    t = t_compile("model m {\n  input x: float32[4]\n  target y: int32[2]\n  linear(3)\n  loss cross_entropy\n}\n");
    ck_err(t, "the model's output float32[3] needs an int32 target of its shape without the class dimension, but "
              "target 'y' is int32[2]");
    t_free(t);
    t = t_compile("model m {\n  input x: float64[4]\n  target y: int32[]\n  linear(3)\n  loss cross_entropy\n}\n");
    ck_err(t, "t.pipe:2:12: error: unknown dtype 'float64'; did you mean 'float32'?");
    t_free(t);
    t = t_compile("model m {\n  input x: float32[4, 0]\n  target y: int32[]\n  linear(3)\n  loss cross_entropy\n}\n");
    ck_err(t, "a dimension must be a positive integer, not '0'");
    t_free(t);
    t = t_compile("model m {\n  input x: float32[4]\n  input x: float32[4]\n  target y: int32[]\n  linear(3)\n"
                  "  loss cross_entropy\n}\n");
    ck_err(t, "t.pipe:3:9: error: 'x' is already declared as an input");
    t_free(t);
    t = t_compile("model m {\n  input x: float32[4]\n  target y: int32[]\n  repeat 0 { relu }\n  linear(3)\n"
                  "  loss cross_entropy\n}\n");
    ck_err(t, "repeat count must be at least 1, not 0");
    t_free(t);
    t = t_compile("model m {\n  input x: float32[4]\n  target y: int32[]\n  repeat two { relu }\n  linear(3)\n"
                  "  loss cross_entropy\n}\n");
    ck_err(t, "repeat count must be an integer, not 'two'");
    t_free(t);
    t = t_compile("model m {\n  input x: float32[4]\n  target y: int32[]\n  repeat 2 { linear(4) as h }\n"
                  "  linear(3)\n  loss cross_entropy\n}\n");
    ck_err(t, "label 'h' is already used by layer 0 (a label inside repeat names one layer)");
    t_free(t);
    t = t_compile("model m {\n  input x: float32[4]\n  target y: int32[]\n  linear(3)\n  loss cross_entropy\n}\n"
                  "model n {\n  input x: float32[4]\n}\n");
    ck_err(t, "t.pipe:7:1: error: a second model block (the first is on line 1)");
    t_free(t);
}
END_TEST

START_TEST(warn_unused_input)
{
    T *t = t_compile("model m {\n  input x: float32[4]\n  input extra: float32[2]\n  target y: int32[]\n  linear(3)\n"
                     "  loss cross_entropy\n}\n");
    ck_ok(t);
    ck_assert_int_eq(t->dl.nerrors, 0);
    ck_assert_int_eq(t->dl.n, 1);
    ck_assert_ptr_nonnull(strstr(t->err, "warning: input 'extra' is declared but no layer uses it"));
    t_free(t);
}
END_TEST

/* init = ...: a model's scheme fills its layers with weights, a layer's own
 * wins, GPT-2's residual projections are scaled by the block count. */
#define GPT_INIT(model_init, head_init)                                                                    \
    "model g {\n  " model_init "\n  input t: int32[8]\n  target y: int32[8]\n"                             \
    "  embedding(vocab = 16, dim = 8)\n  repeat 3 { transformer_block(heads = 2) }\n  layernorm\n  relu\n" \
    "  linear(16" head_init ")\n  loss cross_entropy\n}\n"

START_TEST(init_schemes)
{
    T *t = t_compile(GPT_INIT("init = gpt2(std = 0.02)", ", init = zeros"));
    ck_ok(t);
    const PlanModel *m = &t->f.model;
    ck_assert_int_eq(m->layer[0].init, PLAN_INIT_GPT2);
    for (int i = 1; i <= 3; i++) {
        ck_assert_int_eq(m->layer[i].init, PLAN_INIT_GPT2);
        ck_assert(m->layer[i].init_std == 0.02);
        ck_assert(fabs(m->layer[i].init_std_resid - 0.02 / sqrt(6.0)) < 1e-15); /* 1/sqrt(2 x 3 blocks) */
    }
    ck_assert_int_eq(m->layer[4].init, PLAN_INIT_GPT2);   /* layernorm */
    ck_assert_int_eq(m->layer[5].init, PLAN_INIT_DEFAULT); /* relu: no weights */
    ck_assert_int_eq(m->layer[6].init, PLAN_INIT_ZEROS);   /* its own */
    t_free(t);
    t = t_compile(GPT_INIT("init = normal", ", init = default"));
    ck_ok(t);
    ck_assert_int_eq(t->f.model.layer[0].init, PLAN_INIT_NORMAL);
    ck_assert(t->f.model.layer[0].init_std == 0.02);
    ck_assert_int_eq(t->f.model.layer[6].init, PLAN_INIT_DEFAULT);
    t_free(t);
    t = t_compile(GPT_INIT("", ", init = normal(std = 0.5)"));
    ck_ok(t);
    ck_assert_int_eq(t->f.model.layer[0].init, PLAN_INIT_DEFAULT);
    ck_assert_int_eq(t->f.model.layer[6].init, PLAN_INIT_NORMAL);
    ck_assert(t->f.model.layer[6].init_std == 0.5);
    t_free(t);
}
END_TEST

START_TEST(init_errors)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {GPT_INIT("", ", init = gpt2"), "init = gpt2 is a model-wide scheme"},
        {GPT_INIT("init = xavier", ""), "t.pipe:2:10: error: init must be gpt2(std = ...), normal(std = ...), zeros or "
                                        "default, not 'xavier'"},
        {GPT_INIT("", ", init = uniform(1)"), "init must be normal(std = ...), zeros or default, not 'uniform(...)'"},
        {GPT_INIT("init = normal(std = -1)", ""), "std of init = normal must be positive, not -1"},
        {GPT_INIT("init = normal(sd = 1)", ""), "unknown argument 'sd'"},
        {GPT_INIT("seed = 3", ""), "t.pipe:2:3: error: unknown model setting 'seed' (the model block takes init = ...)"},
        {GPT_INIT("init = zeros\n  init = zeros", ""), "init is already set for this model"},
        {"model m {\n  input x: float32[4]\n  target y: int32[]\n  relu(init = zeros)\n  linear(3)\n"
         "  loss cross_entropy\n}\n",
         "t.pipe:4:8: error: layer 0 (relu) has no weights to initialise"},
        {"model m {\n  input x: float32[4]\n  target y: int32[]\n  repeat 2 { init = zeros\n relu }\n"
         "  linear(3)\n  loss cross_entropy\n}\n",
         "'init' cannot stand inside repeat"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        T *t = t_compile(cases[i].text);
        ck_assert_msg(t->rc == PC_USER_ERROR, "case %zu accepted", i);
        ck_assert_msg(strstr(t->err, cases[i].want), "case %zu: want '%s' in: %s", i, cases[i].want, t->err);
        t_free(t);
    }
}
END_TEST

/* residual { ... } [shortcut { ... }]: one layer whose sub-layers are its
 * body's and shortcut's statements, every one numbered (body.2 is the
 * second conv2d); parameters, FLOPs and shapes from its layers */
START_TEST(residual_shapes)
{
    T *t = t_layers("float32[4, 8, 8]",
                    "  residual {\n"
                    "    conv2d(4, kernel = 3, padding = 1)\n"
                    "    relu\n"
                    "    conv2d(4, kernel = 3, padding = 1, bias = false)\n"
                    "  }\n"
                    "  residual {\n    conv2d(6, kernel = 3, stride = 2, padding = 1)\n  }\n"
                    "  shortcut { conv2d(6, kernel = 1, stride = 2); relu }\n"
                    "  residual { relu } shortcut { avgpool2d(kernel = 1) }\n"
                    "  repeat 2 { residual { layernorm(eps = 1e-3); linear(4, init = zeros) } }\n"
                    "  flatten\n  linear(3)",
                    "int32[]");
    ck_ok(t);
    const PlanLayer *r = L(t, 0);
    ck_assert_int_eq(t->f.model.nlayers, 7);
    ck_assert_int_eq(r->kind, PLAN_L_RESIDUAL);
    ck_assert_int_eq(r->nbody, 3);
    ck_assert_int_eq(r->nshort, 0);
    ck_shape(&r->out, 3, 4, 8, 8);
    ck_assert_int_eq(r->nparams, 3);
    ck_assert_str_eq(r->param[0].name, "body.0.weight");
    ck_assert_str_eq(r->param[1].name, "body.0.bias");
    ck_assert_str_eq(r->param[2].name, "body.2.weight");
    ck_assert_int_eq(r->param[2].ndim, 4);
    ck_assert_int_eq(r->params, 2 * 4 * 4 * 9 + 4);
    ck_assert_int_eq(r->held, r->params);
    /* its layers: ordinary layers, under the block's index, at places 1.. */
    ck_assert_int_eq(r->sub[1].kind, PLAN_L_RELU);
    ck_assert_int_eq(r->sub[2].index, 0);
    ck_assert_int_eq(r->sub[2].sub_pos, 3);
    ck_assert_str_eq(r->sub[2].param[0].name, "weight");
    ck_assert_int_eq(r->sub[2].bias, 0);
    int64_t conv = 2 * 4 * 9 * 4 * 64;
    ck_assert_int_eq(r->flops, (conv + 4 * 64) + 4 * 64 + conv + 4 * 64); /* the layers' and the addition */
    ck_assert_int_eq(r->act_bytes, 4 * 64 * 4);
    /* a projection shortcut on the next line joins the block */
    const PlanLayer *p = L(t, 1);
    ck_assert_int_eq(p->nbody, 1);
    ck_assert_int_eq(p->nshort, 2);
    ck_shape(&p->out, 3, 6, 4, 4);
    ck_assert_int_eq(p->nparams, 4);
    ck_assert_str_eq(p->param[2].name, "shortcut.0.weight");
    ck_assert_str_eq(p->param[3].name, "shortcut.0.bias");
    ck_assert_int_eq(p->param[2].dim[1], 4);
    ck_assert_int_eq(p->params, 6 * 4 * 9 + 6 + 6 * 4 + 6);
    ck_shape(&p->sub[2].in, 3, 6, 4, 4);
    ck_assert_int_eq(L(t, 2)->nparams, 0);
    ck_assert_int_eq(L(t, 2)->nshort, 1);
    /* repeat makes two blocks; init on a sub-layer stays its own */
    ck_assert_int_eq(L(t, 3)->kind, PLAN_L_RESIDUAL);
    ck_assert_int_eq(L(t, 4)->kind, PLAN_L_RESIDUAL);
    ck_assert_str_eq(L(t, 4)->param[2].name, "body.1.weight");
    ck_assert(L(t, 4)->sub[0].eps == 1e-3);
    ck_assert_int_eq(L(t, 4)->sub[1].init, PLAN_INIT_ZEROS);
    ck_assert_int_eq(L(t, 4)->sub[0].init, PLAN_INIT_DEFAULT);
    ck_assert_int_eq(L(t, 4)->init, PLAN_INIT_DEFAULT);
    ck_assert_int_eq(t->f.model.total_params, L(t, 0)->params + p->params + 2 * (2 * 4 + 4 * 4 + 4) + 96 * 3 + 3);
    t_free(t);
    /* the model's init reaches the layers of a block, not the block */
    t = t_compile("model m {\n  init = normal(std = 0.1)\n  input x: float32[4]\n  target y: int32[]\n"
                  "  residual { linear(4); relu; linear(4, init = zeros) }\n  loss cross_entropy\n}\n");
    ck_ok(t);
    ck_assert_int_eq(L(t, 0)->init, PLAN_INIT_DEFAULT);
    ck_assert_int_eq(L(t, 0)->sub[0].init, PLAN_INIT_NORMAL);
    ck_assert(L(t, 0)->sub[0].init_std == 0.1);
    ck_assert_int_eq(L(t, 0)->sub[1].init, PLAN_INIT_DEFAULT);
    ck_assert_int_eq(L(t, 0)->sub[2].init, PLAN_INIT_ZEROS);
    t_free(t);
}
END_TEST

#define RES_MODEL(layers) "model m {\n  input x: float32[3, 4, 4]\n  target y: int32[]\n" layers "\n  flatten\n" \
                          "  linear(2)\n  loss cross_entropy\n}\n"

START_TEST(err_residual)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {RES_MODEL("  residual { conv2d(5, kernel = 1) }"),
         "t.pipe:4:3: error: layer 0 (residual): the body's output [5, 4, 4] (body.0, line 4) must have the shape of "
         "the block's input [3, 4, 4]"},
        {RES_MODEL("  relu\n  residual {\n    conv2d(5, kernel = 1)\n    relu\n  } shortcut {\n"
                   "    conv2d(5, kernel = 1, stride = 2)\n  }"),
         "t.pipe:5:3: error: layer 1 (residual): the body's output [5, 4, 4] (body.1, line 7) must have the shape of "
         "the shortcut's output [5, 2, 2]"},
        {RES_MODEL("  residual { conv2d(3, kernel = 9) }"), "t.pipe:4:14: error: layer 0 (conv2d): kernel 9 is larger"},
        {RES_MODEL("  residual { residual { relu } }"),
         "t.pipe:4:14: error: a 'residual' block cannot stand inside a residual block's body (residual blocks do "
         "not nest)"},
        {RES_MODEL("  residual { relu } shortcut { residual { relu } }"),
         "t.pipe:4:32: error: a 'residual' block cannot stand inside a residual block's shortcut"},
        {RES_MODEL("  residual { relu; residual }"),
         "t.pipe:4:20: error: a 'residual' block cannot stand inside a residual block"},
        {RES_MODEL("  residual { repeat 2 { relu } }"), "t.pipe:4:14: error: 'repeat' cannot stand inside a residual"},
        {RES_MODEL("  residual { flatten; linear(48, tie = a) }"),
         "t.pipe:4:40: error: tie cannot be used inside a residual block"},
        {RES_MODEL("  residual { relu as a }"), "t.pipe:4:22: error: a layer inside a residual block cannot have a label"},
        {RES_MODEL("  residual { loss mse }"), "'loss' cannot stand inside a residual block's body"},
        {RES_MODEL("  residual { }"), "t.pipe:4:3: error: a residual block needs at least one layer in its body"},
        {RES_MODEL("  residual { relu } shortcut { }"), "t.pipe:4:21: error: a shortcut needs at least one layer"},
        {RES_MODEL("  shortcut { relu }"), "t.pipe:4:3: error: 'shortcut { ... }' must follow a residual block"},
        {RES_MODEL("  residual { relu } shortcut { relu }\n  shortcut { relu }"),
         "t.pipe:5:3: error: 'shortcut { ... }' must follow a residual block"},
        {RES_MODEL("  resdual { relu }"), "t.pipe:4:3: error: unknown block 'resdual'; did you mean 'residual'?"},
        {RES_MODEL("  residual { relu } projection { relu }"),
         "t.pipe:4:21: error: a residual block is followed by 'shortcut { LAYERS }', not 'projection { ... }'"},
        {RES_MODEL("  residual"), "t.pipe:4:3: error: 'residual' is a block: write residual { LAYERS }"},
        {RES_MODEL("  residual { relu(init = zeros) }"),
         "t.pipe:4:19: error: layer 0 (residual): its body.0 (relu) has no weights to initialise"},
        {RES_MODEL("  residual { transformer_block(heads = 1) }"),
         "t.pipe:4:14: error: 'transformer_block' cannot stand inside a residual block"},
        {"model m {\n  input x: int32[4]\n  target y: int32[4]\n  residual { embedding(8, 4) }\n"
         "  loss cross_entropy\n}\n",
         "t.pipe:4:14: error: 'embedding' cannot stand inside a residual block"},
        {"model m {\n  input x: int32[4]\n  target y: int32[4]\n  residual { relu }\n"
         "  loss cross_entropy\n}\n",
         "t.pipe:4:3: error: layer 0 (residual) needs a float32 input, but gets int32[4]"},
        {"model m {\n  input x: float32[2]\n  target y: int32[]\n  residual { "
         "linear(2); linear(2); linear(2); linear(2); linear(2); linear(2); linear(2); linear(2); linear(2); "
         "linear(2); linear(2); linear(2); linear(2) }\n  loss cross_entropy\n}\n",
         "t.pipe:4:3: error: layer 0 (residual): its layers hold more than 24 parameter tensors"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        T *t = t_compile(cases[i].text);
        ck_assert_msg(t->rc == PC_USER_ERROR, "case %zu accepted", i);
        ck_assert_msg(strstr(t->err, cases[i].want), "case %zu: want '%s' in: %s", i, cases[i].want, t->err);
        t_free(t);
    }
    /* an error inside a repeated block is reported once */
    T *t = t_compile(RES_MODEL("  repeat 3 { residual { conv2d(3, kernel = 1, stride = 0) } }"));
    ck_err(t, "stride of 'conv2d' must be at least 1, not 0");
    ck_assert_int_eq(t->dl.nerrors, 1);
    t_free(t);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("model");
    TCase *c = tcase_create("shapes");
    tcase_add_test(c, linear_shapes);
    tcase_add_test(c, conv_and_pool_shapes);
    tcase_add_test(c, elementwise_shapes);
    tcase_add_test(c, batchnorm_shapes);
    tcase_add_test(c, reshape_transpose_shapes);
    tcase_add_test(c, alexnet_params);
    tcase_add_test(c, gpt_layers);
    tcase_add_test(c, transformer_mlp_default);
    tcase_add_test(c, llama_shapes);
    tcase_add_test(c, llama_mlp_rule);
    tcase_add_test(c, mse_loss);
    tcase_add_test(c, repeat_and_labels);
    tcase_add_test(c, init_schemes);
    tcase_add_test(c, residual_shapes);
    suite_add_tcase(s, c);
    TCase *e = tcase_create("errors");
    tcase_add_test(e, err_unknown_layer);
    tcase_add_test(e, err_arguments);
    tcase_add_test(e, err_arguments_collected);
    tcase_add_test(e, err_shapes);
    tcase_add_test(e, err_llama);
    tcase_add_test(e, err_tie_and_mask);
    tcase_add_test(e, split_linears);
    tcase_add_test(e, split_embedding);
    tcase_add_test(e, err_structure);
    tcase_add_test(e, warn_unused_input);
    tcase_add_test(e, init_errors);
    tcase_add_test(e, err_residual);
    suite_add_tcase(s, e);
    return s;
}

T_MAIN(suite)
