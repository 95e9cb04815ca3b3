/* tests/fuzz/fuzz_sched.c: a text schedule (docs/schedules.md) through the
 * reader, then lowering and the verifier as pipec runs them for
 * schedule = file(...).
 *
 * The stage count is the file's own; micro_batches is the largest
 * micro-batch named + 1 (inputs naming more than 4,096, or more than 4,096
 * parts, stop after the reader: the DSL's limits). A comment line "#%tied"
 * puts a tied weight on the first and last stage, "#%clip" turns on
 * gradient clipping (both change the programs' barriers). A schedule of
 * forwards only is also lowered as an evaluation program. Invariants: a
 * failure carries an error and success none; what sched_text_write prints
 * reads back to the same actions. */
#include <string.h>

#include "fuzz.h"
#include "sched.h"

static int has_line(const char *t, size_t n, const char *line)
{
    size_t k = strlen(line);
    for (size_t i = 0; i + k <= n; i++)
        if ((i == 0 || t[i - 1] == '\n') && memcmp(t + i, line, k) == 0)
            return 1;
    return 0;
}

static void round_trip(const SchedText *t)
{
    char *text = NULL;
    size_t len = 0;
    FILE *o = open_memstream(&text, &len);
    FUZZ_CHECK(o != NULL, "open_memstream");
    sched_text_write(o, &t->acts, t->chunks, t->place, "fuzz");
    fclose(o);
    DiagList dl;
    diag_init(&dl);
    SchedText back;
    int rc = sched_text_read(&dl, diag_add_source(&dl, "written.sched", text, len), t->stages, &back);
    if (rc != 0)
        diag_print(&dl, stderr);
    FUZZ_CHECK(rc == 0, "sched_text_write wrote what sched_text_read refuses:\n%s", text);
    FUZZ_CHECK(back.stages == t->stages && back.chunks == t->chunks && back.place == t->place,
               "the header changed: %d/%d/%d vs %d/%d/%d", back.stages, back.chunks, back.place, t->stages, t->chunks,
               t->place);
    for (int s = 0; s < t->stages; s++) {
        const SchedList *x = &t->acts.stage[s], *y = &back.acts.stage[s];
        FUZZ_CHECK(x->n == y->n, "stage %d: %d actions became %d", s, x->n, y->n);
        for (int i = 0; i < x->n; i++)
            FUZZ_CHECK(x->a[i].kind == y->a[i].kind && x->a[i].mb == y->a[i].mb && x->a[i].chunk == y->a[i].chunk,
                       "stage %d action %d changed", s, i);
    }
    sched_actions_free(&back.acts);
    diag_free(&dl);
    free(text);
}

static void lower_and_verify(const SchedText *t, int eval, int tied, int clip, int M)
{
    int S = t->stages, V = t->chunks, P = S * V;
    double *unit = calloc((size_t)P, sizeof *unit), *zero = calloc((size_t)P, sizeof *zero);
    int *tied_stage = calloc((size_t)S, sizeof *tied_stage);
    for (int k = 0; k < P; k++)
        unit[k] = 1 + k % 3;
    if (tied)
        tied_stage[0] = tied_stage[S - 1] = 1;
    SchedCosts costs = {unit, unit, unit, unit, zero, 0, unit, 1, NULL, 0};
    SchedParts parts = {S, V, M, t->place, eval ? NULL : tied_stage, eval ? 0 : clip};
    SchedPlan plan;
    SchedSim sim;
    memset(&sim, 0, sizeof sim);
    char err[1024] = "";
    int rc = sched_build(&parts, &t->acts, eval, &costs, &plan, &sim, err, sizeof err);
    if (rc == 0) {
        FUZZ_CHECK(sim.ok || sim.error[0], "the verifier failed without a message");
        for (int s = 0; s < S; s++)
            for (int i = 0; i < plan.prog[s].n; i++) {
                char buf[128];
                sched_instr_text(&plan.prog[s].ins[i], buf, sizeof buf);
                fputs(buf, fuzz_sink());
            }
        sched_sim_free(&sim);
        sched_plan_free(&plan);
    } else {
        FUZZ_CHECK(err[0], "lowering failed without a message");
    }
    free(unit), free(zero), free(tied_stage);
}

int fuzz_sched(const uint8_t *data, size_t size)
{
    DiagList dl;
    diag_init(&dl);
    int src = diag_add_source(&dl, "fuzz.sched", (const char *)data, size);
    SchedText t;
    int rc = sched_text_read(&dl, src, -1, &t);
    FUZZ_CHECK(rc == 0 || rc == -1, "sched_text_read returned %d", rc);
    FUZZ_CHECK((rc == 0) == (dl.nerrors == 0), "status %d with %d errors", rc, dl.nerrors);
    diag_print(&dl, getenv("FUZZ_VERBOSE") ? stderr : fuzz_sink());
    if (rc == 0) {
        round_trip(&t);
        int maxmb = -1, fwd_only = 1;
        for (int s = 0; s < t.stages; s++)
            for (int i = 0; i < t.acts.stage[s].n; i++) {
                const SchedAction *a = &t.acts.stage[s].a[i];
                if (a->mb > maxmb)
                    maxmb = a->mb;
                if (a->kind != SCHED_F)
                    fwd_only = 0;
            }
        if (maxmb >= 0 && maxmb < 4096 && (long)t.stages * t.chunks <= 4096) {
            const char *text = (const char *)data;
            int tied = has_line(text, size, "#%tied"), clip = has_line(text, size, "#%clip");
            lower_and_verify(&t, 0, tied, clip, maxmb + 1);
            if (fwd_only)
                lower_and_verify(&t, 1, 0, 0, maxmb + 1);
        }
        sched_actions_free(&t.acts);
    }
    diag_free(&dl);
    return 0;
}

FUZZ_ENTRY(fuzz_sched)
