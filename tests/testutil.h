/* tests/testutil.h: compiling DSL text in memory and reading back the
 * diagnostics, for the Check suites. */
#ifndef PIPE_TESTUTIL_H
#define PIPE_TESTUTIL_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pc_front.h"

typedef struct T {
    DiagList dl;
    PcFront f;
    int rc;
    char err[1400];   /* the first diagnostic, formatted: "t.pipe:3:5: error: ..." */
} T;

static inline T *t_compile_defs(const char *text, const char *const *defs, int ndefs)
{
    T *t = calloc(1, sizeof *t);
    diag_init(&t->dl);
    t->rc = pc_front_text(&t->f, &t->dl, "t.pipe", text, strlen(text), defs, ndefs);
    if (t->dl.n > 0)
        diag_format(&t->dl, &t->dl.d[0], t->err, sizeof t->err);
    return t;
}

static inline T *t_compile(const char *text)
{
    return t_compile_defs(text, NULL, 0);
}

static inline void t_free(T *t)
{
    pc_front_free(&t->f);
    diag_free(&t->dl);
    free(t);
}

/* A model block around layers, with a float input of the given shape and a
 * class target, and no pipeline or train block. */
static inline T *t_layers(const char *input, const char *layers, const char *target)
{
    char *buf = malloc(strlen(layers) + 512);
    sprintf(buf, "model m {\n  input x: %s\n  target y: %s\n%s\n  loss cross_entropy\n}\n", input, target, layers);
    T *t = t_compile(buf);
    free(buf);
    return t;
}

#define ck_ok(t) ck_assert_msg((t)->rc == 0, "expected success, got rc %d: %s", (t)->rc, (t)->err)
#define ck_err(t, substr)                                                                           \
    do {                                                                                            \
        ck_assert_msg((t)->rc == PC_USER_ERROR, "expected a user error, got rc %d", (t)->rc);       \
        ck_assert_msg(strstr((t)->err, (substr)) != NULL, "expected '%s' in: %s", (substr), (t)->err); \
    } while (0)

#define T_MAIN(suite_fn)                                            \
    int main(void)                                                  \
    {                                                               \
        SRunner *sr = srunner_create(suite_fn());                   \
        srunner_run_all(sr, CK_NORMAL);                             \
        int failed = srunner_ntests_failed(sr);                     \
        srunner_free(sr);                                           \
        return failed ? EXIT_FAILURE : EXIT_SUCCESS;                \
    }

#endif
