/* tests/test_grammar.c: the lexer and parser: what they accept, the syntax
 * errors they report (with line and column), and pathological input. */
#include "gr_parse.h"
#include "testutil.h"

static const char *MIN_MODEL = "model m {\n  input x: float32[4]\n  target y: int32[]\n  linear(3)\n  loss cross_entropy\n}\n";

START_TEST(examples_compile)
{
    const char *files[] = {"examples/alexnet.pipe", "examples/gpt_tiny.pipe"};
    for (int i = 0; i < 2; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", PIPE_SOURCE_DIR, files[i]);
        DiagList dl;
        diag_init(&dl);
        PcFront f;
        int rc = pc_front_file(&f, &dl, path, NULL, 0);
        char msg[1400] = "";
        if (dl.n)
            diag_format(&dl, &dl.d[0], msg, sizeof msg);
        ck_assert_msg(rc == 0, "%s: %s", files[i], msg);
        ck_assert_int_eq(dl.nerrors, 0);
        pc_front_free(&f);
        diag_free(&dl);
    }
}
END_TEST

START_TEST(separators_and_comments)
{
    /* ';' and newlines end statements; newlines inside ( ) do not; blank
     * lines and comments anywhere */
    T *t = t_compile("# a comment\n\nmodel m {   # trailing\n\n  input x: float32[4]; target y: int32[]\n"
                     "  linear(\n    3,\n    bias = false\n  )\n\n  loss cross_entropy ;\n}\n\n"
                     "pipeline { stages = 1; micro_batches = 2 }\ntrain {\n  steps = 3\n}\n# end");
    ck_ok(t);
    ck_assert_int_eq(t->f.model.nlayers, 1);
    ck_assert_int_eq(t->f.model.layer[0].bias, 0);
    ck_assert_int_eq(t->f.cfg.micro_batches, 2);
    ck_assert_int_eq(t->f.cfg.steps, 3);
    t_free(t);
}
END_TEST

START_TEST(values)
{
    DiagList dl;
    diag_init(&dl);
    BaseArena a = {0};
    const char *texts[] = {"42", "-7", "1e-8", "0.5", ".25", "\"a\\\"b\\n\"", "1f1b", "zb-h1", "looped-bfs",
                           "(0.9, 0.999)", "[0, 5, 12]", "[]", "adam(lr = 0.001, betas = (0.9, 0.95))",
                           "file(\"x.sched\")"};
    AstValueKind kinds[] = {AST_INT, AST_INT, AST_FLOAT, AST_FLOAT, AST_FLOAT, AST_STRING, AST_WORD, AST_WORD,
                            AST_WORD, AST_TUPLE, AST_LIST, AST_LIST, AST_CALL, AST_CALL};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        int src = diag_add_source(&dl, "v", texts[i], strlen(texts[i]));
        AstValue *v;
        ck_assert_msg(gr_parse_value(&a, &dl, src, &v) == 0, "value %s", texts[i]);
        ck_assert_msg(v->kind == kinds[i], "value %s: kind %d", texts[i], v->kind);
    }
    int src = diag_add_source(&dl, "v", "-7", 2);
    AstValue *v;
    gr_parse_value(&a, &dl, src, &v);
    ck_assert_int_eq(v->i, -7);
    src = diag_add_source(&dl, "v", "1e-8", 4);
    gr_parse_value(&a, &dl, src, &v);
    ck_assert(v->f == 1e-8);
    src = diag_add_source(&dl, "v", "\"a\\\"b\\n\"", 8);
    gr_parse_value(&a, &dl, src, &v);
    ck_assert_str_eq(v->s, "a\"b\n");
    src = diag_add_source(&dl, "v", "adam(lr = 0.001, betas = (0.9, 0.95))", 37);
    gr_parse_value(&a, &dl, src, &v);
    ck_assert_str_eq(v->s, "adam");
    ck_assert_int_eq(v->items.n, 2);
    ck_assert_str_eq(v->items.head->name, "lr");
    ck_assert_int_eq(v->items.head->next->value->kind, AST_TUPLE);
    ck_assert_int_eq(dl.nerrors, 0);
    base_arena_free(&a);
    diag_free(&dl);
}
END_TEST

START_TEST(syntax_two_statements_on_a_line)
{
    T *t = t_compile("model m {\n  input x: float32[4]\n  target y: int32[]\n  relu relu\n  loss cross_entropy\n}\n");
    ck_err(t, "t.pipe:4:8: error: syntax error: unexpected word 'relu'");
    ck_assert_ptr_nonnull(strstr(t->err, "expecting"));
    ck_assert_int_eq(t->dl.nerrors, 1);
    t_free(t);
}
END_TEST

START_TEST(syntax_missing_brace)
{
    T *t = t_compile("model m {\n  input x: float32[4]\n  relu\n");
    ck_err(t, "t.pipe:4:1: error: syntax error: unexpected end of file, expecting end of statement, 'input', 'target', 'repeat', 'loss', word or '}'");
    t_free(t);
}
END_TEST

START_TEST(syntax_missing_value)
{
    T *t = t_compile("model m {\n  input x: float32[4]\n}\npipeline {\n  stages =\n}\n");
    ck_err(t, "t.pipe:5:11: error: syntax error: unexpected end of line");
    t_free(t);
    t = t_compile("model m {\n  conv2d(64, kernel = )\n}\n");
    ck_err(t, "t.pipe:2:23: error: syntax error: unexpected ')'");
    t_free(t);
}
END_TEST

START_TEST(syntax_unknown_block)
{
    T *t = t_compile("modle m {\n}\n");
    ck_err(t, "t.pipe:1:1: error: syntax error: unexpected word 'modle', expecting 'model', 'pipeline' or 'train'");
    t_free(t);
}
END_TEST

START_TEST(lexer_errors)
{
    T *t = t_compile("model m {\n  input x: float32[4] @\n}\n");
    ck_err(t, "t.pipe:2:23: error: unexpected character '@'");
    t_free(t);
    t = t_compile("model m {\n  linear(3) as \"x\n}\n");
    ck_err(t, "t.pipe:2:16: error: unterminated string");
    t_free(t);
    t = t_compile("train { data = tokens(\"a\\qb\") }\n");
    ck_err(t, "unknown escape '\\q'");
    t_free(t);
}
END_TEST

START_TEST(empty_and_comment_only)
{
    T *t = t_compile("");
    ck_err(t, "t.pipe:1:1: error: no model block");
    t_free(t);
    t = t_compile("# nothing here\n\n   \n");
    ck_err(t, "no model block");
    t_free(t);
}
END_TEST

START_TEST(binary_garbage)
{
    unsigned char buf[4096];
    unsigned x = 12345;
    for (int round = 0; round < 50; round++) {
        for (size_t i = 0; i < sizeof buf; i++) {
            x = x * 1103515245u + 12345u;
            buf[i] = (unsigned char)(x >> 16);
        }
        DiagList dl;
        diag_init(&dl);
        PcFront f;
        int rc = pc_front_text(&f, &dl, "g.pipe", (const char *)buf, sizeof buf, NULL, 0);
        ck_assert_int_eq(rc, PC_USER_ERROR);
        ck_assert_int_ge(dl.nerrors, 1);
        /* printing the message with its line must not crash either */
        FILE *devnull = fopen("/dev/null", "w");
        diag_print(&dl, devnull);
        fclose(devnull);
        pc_front_free(&f);
        diag_free(&dl);
    }
    /* a NUL byte is named as such */
    const char text[] = "model m {\n  relu\0\n}\n";
    DiagList dl;
    diag_init(&dl);
    PcFront f;
    ck_assert_int_eq(pc_front_text(&f, &dl, "n.pipe", text, sizeof text - 1, NULL, 0), PC_USER_ERROR);
    char msg[512];
    diag_format(&dl, &dl.d[0], msg, sizeof msg);
    ck_assert_msg(strstr(msg, "n.pipe:2:7: error: unexpected character byte 0x00"), "%s", msg);
    pc_front_free(&f);
    diag_free(&dl);
}
END_TEST

static char *repeat_str(const char *head, const char *unit, int n, const char *tail)
{
    size_t u = strlen(unit);
    char *s = malloc(strlen(head) + u * n + strlen(tail) + 1);
    strcpy(s, head);
    char *p = s + strlen(head);
    for (int i = 0; i < n; i++, p += u)
        memcpy(p, unit, u);
    strcpy(p, tail);
    return s;
}

START_TEST(deep_nesting)
{
    char *s = repeat_str("pipeline { stages = ", "(", 5000, "1");
    T *t = t_compile(s);
    ck_err(t, "nesting too deep");
    t_free(t);
    free(s);
    s = repeat_str("model m {\n", "repeat 2 {\n", 3000, "relu");
    t = t_compile(s);
    ck_err(t, "nesting too deep");
    t_free(t);
    free(s);
    s = repeat_str("train { data = ", "[", 100000, "");
    t = t_compile(s);
    ck_err(t, "nesting too deep");
    t_free(t);
    free(s);
}
END_TEST

START_TEST(huge_numbers)
{
    T *t = t_compile("pipeline { stages = 99999999999999999999999 }");
    ck_err(t, "t.pipe:1:21: error: integer '99999999999999999999999' is too large");
    t_free(t);
    t = t_compile("train { optimizer = sgd(lr = 1e999) }");
    ck_err(t, "number '1e999' is out of range");
    t_free(t);
    t = t_compile("model m {\n  input x: float32[4]\n  target y: int32[]\n  linear(9007199254740993)\n"
                  "  loss cross_entropy\n}\n");
    ck_err(t, "too large");
    t_free(t);
    /* in range for the lexer, too big for a shape */
    t = t_compile("model m {\n  input x: float32[4]\n  target y: int32[]\n  linear(4000000000000)\n"
                  "  loss cross_entropy\n}\n");
    ck_err(t, "too large");
    t_free(t);
    t = t_compile("model m {\n  input x: float32[100000, 100000, 100000]\n  target y: int32[]\n  linear(3)\n"
                  "  loss cross_entropy\n}\n");
    ck_err(t, "too large");
    t_free(t);
}
END_TEST

START_TEST(huge_repeat)
{
    T *t = t_compile("model m {\n  input x: float32[4]\n  target y: int32[]\n  repeat 2000000000 {\n    relu\n  }\n"
                     "  linear(3)\n  loss cross_entropy\n}\n");
    ck_err(t, "too many layers (more than 100000");
    t_free(t);
    /* nested repeats that overflow 64 bits when multiplied */
    t = t_compile("model m {\n  input x: float32[4]\n  target y: int32[]\n  repeat 9000000000000000 { repeat "
                  "9000000000000000 { repeat 9000000000000000 { relu } } }\n  linear(3)\n  loss cross_entropy\n}\n");
    ck_err(t, "too many layers");
    t_free(t);
}
END_TEST

START_TEST(long_lines)
{
    /* one word of a megabyte */
    char *s = repeat_str("model m {\n  ", "a", 1 << 20, "\n}\n");
    T *t = t_compile(s);
    ck_err(t, "t.pipe:2:3: error: word too long");
    /* printing shows a window of the line, not the whole megabyte */
    char *out = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&out, &len);
    diag_print(&t->dl, mem);
    fclose(mem);
    ck_assert_int_lt(len, 600);
    free(out);
    t_free(t);
    free(s);
    /* two hundred thousand layers on one line */
    s = repeat_str("model m {\n  input x: float32[4]\n  target y: int32[]\n  ", "relu; ", 200000,
                   "\n  loss cross_entropy\n}\n");
    t = t_compile(s);
    ck_err(t, "too many layers");
    t_free(t);
    free(s);
    /* an error far along a long line gets the right column, and a caret
     * under it in the printed window */
    s = repeat_str("model m {\n  input x: float32[4]\n  target y: int32[]\n  ", "relu; ", 5000, "linear(3)) }\n");
    t = t_compile(s);
    ck_err(t, "t.pipe:4:30012: error: syntax error: unexpected ')'");
    out = NULL;
    mem = open_memstream(&out, &len);
    diag_print(&t->dl, mem);
    fclose(mem);
    char *caret_line = strrchr(out, '\n');
    *caret_line = '\0';
    caret_line = strrchr(out, '\n') + 1;
    char *code_line = caret_line - 2;
    while (code_line > out && code_line[-1] != '\n')
        code_line--;
    long caret_col = strchr(caret_line, '^') - caret_line;
    ck_assert_msg(code_line[caret_col] == ')', "caret under '%c'", code_line[caret_col]);
    free(out);
    t_free(t);
    free(s);
}
END_TEST

START_TEST(diag_caret)
{
    T *t = t_compile("model m {\n\tinput x: float32[4]\n\ttarget y: int32[]\n\tlinaer(3)\n\tloss cross_entropy\n}\n");
    ck_err(t, "t.pipe:4:2: error: unknown layer 'linaer'; did you mean 'linear'?");
    char *out = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&out, &len);
    diag_print(&t->dl, mem);
    fclose(mem);
    ck_assert_ptr_nonnull(strstr(out, "\n    \tlinaer(3)\n    \t^\n"));
    free(out);
    t_free(t);
}
END_TEST

START_TEST(minimal_model)
{
    T *t = t_compile(MIN_MODEL);
    ck_ok(t);
    ck_assert_int_eq(t->f.model.nlayers, 1);
    ck_assert_int_eq(t->f.model.total_params, 15);
    t_free(t);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("grammar");
    TCase *c = tcase_create("core");
    tcase_set_timeout(c, 60);
    tcase_add_test(c, examples_compile);
    tcase_add_test(c, separators_and_comments);
    tcase_add_test(c, values);
    tcase_add_test(c, syntax_two_statements_on_a_line);
    tcase_add_test(c, syntax_missing_brace);
    tcase_add_test(c, syntax_missing_value);
    tcase_add_test(c, syntax_unknown_block);
    tcase_add_test(c, lexer_errors);
    tcase_add_test(c, empty_and_comment_only);
    tcase_add_test(c, binary_garbage);
    tcase_add_test(c, deep_nesting);
    tcase_add_test(c, huge_numbers);
    tcase_add_test(c, huge_repeat);
    tcase_add_test(c, long_lines);
    tcase_add_test(c, diag_caret);
    tcase_add_test(c, minimal_model);
    suite_add_tcase(s, c);
    return s;
}

T_MAIN(suite)
