/* tests/test_picture.c: the SVG timeline and the Chrome trace of built
 * plans (1F1B, ZB-H1, ZB-V, unit costs): one box and one complete event per
 * instruction, the collectives drawn, titles escaped; and, run as
 * `test_picture --parsers` (ctest unit_picture_parsers), both outputs
 * well-formed as Python's own XML and JSON parsers read them: without
 * /usr/bin/python3 that run prints "skipped: no python3" and exits 77, which
 * ctest reports as skipped, not passed. */
#include <unistd.h>

#include "sched_picture.h"
#include "sched.h"
#include "testutil.h"

typedef struct Case {
    const char *name;
    SchedGenerator gen;
    SchedPlacement place;
    int p, v, m;
} Case;

static const Case CASES[] = {
    {"1f1b", sched_gen_1f1b, SCHED_PLACE_LOOP, 4, 1, 8},
    {"zb-h1", sched_gen_zb_h1, SCHED_PLACE_LOOP, 4, 1, 8},
    {"zb-v", sched_gen_zb_v, SCHED_PLACE_V, 2, 2, 4},
};
#define NCASES ((int)(sizeof CASES / sizeof CASES[0]))

/* Equal stage costs, a chunk being 1/v of a stage: F = 1, B = 2, I = W = 1
 * per stage. costs 0: build without a cost model, every time 0; 2: and a
 * transfer takes 1/4. */
static void build_costs(const Case *c, int costs, SchedPlan *pl, SchedSim *sim)
{
    int P = c->p * c->v;
    double *f = calloc(P, sizeof *f), *b = calloc(P, sizeof *b), *iw = calloc(P, sizeof *iw);
    for (int k = 0; k < P; k++)
        f[k] = 1.0 / c->v, b[k] = 2.0 / c->v, iw[k] = 1.0 / c->v;
    double *bytes = calloc(P, sizeof *bytes);
    for (int k = 0; k < P; k++)
        bytes[k] = 1;
    SchedCosts sc = {f, b, iw, iw, costs == 2 ? bytes : NULL, costs == 2 ? 4.0 : 0, NULL, 0, NULL, 0};
    SchedSpec sp = {c->p, c->v, c->m, c->place, f, b, iw, iw};
    SchedActions a;
    sched_actions_init(&a, c->p);
    char err[512] = "";
    ck_assert_msg(c->gen(&sp, &a, err, sizeof err) == 0, "%s: %s", c->name, err);
    SchedParts pp = {c->p, c->v, c->m, c->place, NULL, 0};
    ck_assert_msg(sched_build(&pp, &a, 0, costs ? &sc : NULL, pl, sim, err, sizeof err) == 0, "%s: %s", c->name, err);
    ck_assert_msg(sim->ok, "%s: %s", c->name, sim->error);
    sched_actions_free(&a);
    free(f), free(b), free(iw), free(bytes);
}

static void build(const Case *c, SchedPlan *pl, SchedSim *sim)
{
    build_costs(c, 1, pl, sim);
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + strlen(needle), needle))
        n++;
    return n;
}

static char *emit(void (*fn)(FILE *, const SchedPlan *, const SchedSim *, const char *), const SchedPlan *pl,
                  const SchedSim *sim, const char *title)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ck_assert_msg(f != NULL, "open_memstream");
    fn(f, pl, sim, title);
    fclose(f);
    ck_assert_uint_eq(strlen(buf), len); /* no NUL bytes in the text */
    return buf;
}

static int ninstr(const SchedPlan *pl, int compute_only)
{
    int n = 0;
    for (int s = 0; s < pl->stages; s++)
        for (int pc = 0; pc < pl->prog[s].n; pc++) {
            int op = pl->prog[s].ins[pc].op;
            n += !compute_only || op == SCHED_Forward || op == SCHED_Backward || op == SCHED_BackwardInput ||
                 op == SCHED_BackwardWeight;
        }
    return n;
}

START_TEST(svg_draws_every_instruction)
{
    const Case *c = &CASES[_i];
    SchedPlan pl;
    SchedSim sim;
    build(c, &pl, &sim);
    char *svg = emit(sched_emit_svg, &pl, &sim, "picture <test> & \"quotes\"");
    ck_assert_msg(strncmp(svg, "<svg", 4) == 0 || strncmp(svg, "<?xml", 5) == 0, "%s: starts %.20s", c->name, svg);
    size_t n = strlen(svg);
    ck_assert_msg(n > 7 && strcmp(svg + n - 7, "</svg>\n") == 0, "%s: does not end with </svg>", c->name);
    ck_assert_int_ge(count(svg, "<rect"), ninstr(&pl, 1));
    ck_assert_ptr_nonnull(strstr(svg, "ReduceGrads"));
    ck_assert_ptr_nonnull(strstr(svg, ">reduce<"));
    ck_assert_ptr_nonnull(strstr(svg, ">step<"));
    ck_assert_ptr_nonnull(strstr(svg, "stage 0"));
    ck_assert_ptr_nonnull(strstr(svg, "bubble"));
    /* the time axis says its unit */
    ck_assert_msg(strstr(svg, ">time (s)<") || strstr(svg, ">time (ms)<") || strstr(svg, ">time (us)<") ||
                      strstr(svg, ">time (ns)<"),
                  "%s: no unit on the time axis", c->name);
    /* the title is escaped, never raw */
    ck_assert_ptr_nonnull(strstr(svg, "picture &lt;test&gt; &amp; &quot;quotes&quot;"));
    ck_assert_ptr_null(strstr(svg, "<test>"));
    free(svg);
    sched_sim_free(&sim);
    sched_plan_free(&pl);
}
END_TEST

START_TEST(trace_has_an_event_per_instruction)
{
    const Case *c = &CASES[_i];
    SchedPlan pl;
    SchedSim sim;
    build(c, &pl, &sim);
    char *tr = emit(sched_emit_trace, &pl, &sim, "trace \"quoted\"\n\\");
    ck_assert_ptr_nonnull(strstr(tr, "\"traceEvents\""));
    ck_assert_int_eq(count(tr, "\"ph\": \"X\""), ninstr(&pl, 0));
    ck_assert_int_eq(count(tr, "\"thread_name\""), pl.stages);
    ck_assert_ptr_nonnull(strstr(tr, "\"name\": \"F0\""));
    ck_assert_ptr_nonnull(strstr(tr, "\"cat\": \"ReduceGrads\""));
    /* the one JSON string writer (base_json_put_str): \u000a, not \n */
    ck_assert_ptr_nonnull(strstr(tr, "trace \\\"quoted\\\"\\u000a\\\\"));
    /* every flow that leaves a send enters a compute */
    ck_assert_int_gt(count(tr, "\"flow_out\": true"), 0);
    ck_assert_int_eq(count(tr, "\"flow_out\": true"), count(tr, "\"flow_in\": true"));
    free(tr);
    sched_sim_free(&sim);
    sched_plan_free(&pl);
}
END_TEST

/* Without a cost model every time is 0: still a picture, no division by 0. */
START_TEST(zero_step_time)
{
    SchedPlan pl;
    SchedSim sim;
    build_costs(&CASES[0], 0, &pl, &sim);
    ck_assert(sim.step_time == 0);
    char *svg = emit(sched_emit_svg, &pl, &sim, "no costs");
    ck_assert_int_ge(count(svg, "<rect"), ninstr(&pl, 1));
    ck_assert_ptr_null(strstr(svg, "nan\""));
    ck_assert_ptr_null(strstr(svg, "inf\""));
    free(svg);
    char *tr = emit(sched_emit_trace, &pl, &sim, "no costs");
    ck_assert_int_eq(count(tr, "\"ph\": \"X\""), ninstr(&pl, 0));
    free(tr);
    sched_sim_free(&sim);
    sched_plan_free(&pl);
}
END_TEST

/* A plan that fails verification is still drawn, as far as it ran. */
START_TEST(failed_plan)
{
    SchedSpec sp = {2, 1, 2, SCHED_PLACE_LOOP, 0, 0, 0, 0};
    SchedActions a;
    sched_actions_init(&a, 2);
    char err[256];
    ck_assert_int_eq(sched_gen_1f1b(&sp, &a, err, sizeof err), 0);
    SchedParts pp = {2, 1, 2, SCHED_PLACE_LOOP, NULL, 0};
    SchedPlan pl;
    ck_assert_int_eq(sched_lower(&pp, &a, 0, &pl, err, sizeof err), 0);
    pl.prog[0].ins[2].buf = 0; /* stage 0's second load overwrites a live buffer */
    SchedSim sim;
    sched_verify(&pl, &pp, NULL, &sim);
    ck_assert(!sim.ok);
    char *svg = emit(sched_emit_svg, &pl, &sim, "broken");
    ck_assert_ptr_nonnull(strstr(svg, "did not verify: "));
    size_t n = strlen(svg);
    ck_assert(n > 7 && strcmp(svg + n - 7, "</svg>\n") == 0);
    free(svg);
    char *tr = emit(sched_emit_trace, &pl, &sim, "broken");
    ck_assert_ptr_nonnull(strstr(tr, "\"verified\": false"));
    ck_assert_ptr_nonnull(strstr(tr, "\"error\": "));
    ck_assert_int_lt(count(tr, "\"ph\": \"X\""), ninstr(&pl, 0));
    free(tr);
    sched_sim_free(&sim);
    sched_plan_free(&pl);
    sched_actions_free(&a);
}
END_TEST

/* Transfers that take time overlap the sender's compute: they move to a
 * thread of their own, so complete events on a thread still nest. */
START_TEST(slow_links)
{
    SchedPlan pl;
    SchedSim sim;
    build_costs(&CASES[1], 2, &pl, &sim);
    char *tr = emit(sched_emit_trace, &pl, &sim, "slow links");
    ck_assert_int_eq(count(tr, "\"ph\": \"X\""), ninstr(&pl, 0));
    ck_assert_ptr_nonnull(strstr(tr, "\"stage 0 transfers\""));
    ck_assert_int_eq(count(tr, "transfers\""), pl.stages);
    free(tr);
    char *svg = emit(sched_emit_svg, &pl, &sim, "slow links");
    ck_assert_int_ge(count(svg, "<rect"), ninstr(&pl, 1));
    free(svg);
    sched_sim_free(&sim);
    sched_plan_free(&pl);
}
END_TEST

/* The parsers the viewers are closest to (main skips without a python3). */
static const char *python(void)
{
    if (access("/usr/bin/python3", X_OK) == 0)
        return "/usr/bin/python3";
    return NULL;
}

START_TEST(outputs_parse_as_xml_and_json)
{
    const char *py = python();
    ck_assert_ptr_nonnull(py);
    char dir[] = "/tmp/test_picture.XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    for (int i = 0; i < NCASES; i++) {
        SchedPlan pl;
        SchedSim sim;
        build(&CASES[i], &pl, &sim);
        char svg[256], json[256], cmd[1024];
        snprintf(svg, sizeof svg, "%s/%s.svg", dir, CASES[i].name);
        snprintf(json, sizeof json, "%s/%s.json", dir, CASES[i].name);
        FILE *f = fopen(svg, "w");
        ck_assert_ptr_nonnull(f);
        sched_emit_svg(f, &pl, &sim, "a <title> & 'more'\x01");
        fclose(f);
        f = fopen(json, "w");
        ck_assert_ptr_nonnull(f);
        sched_emit_trace(f, &pl, &sim, "a \"title\"\t\x01");
        fclose(f);
        snprintf(cmd, sizeof cmd, "%s -c 'import xml.etree.ElementTree as E,sys; E.parse(sys.argv[1])' %s", py, svg);
        ck_assert_msg(system(cmd) == 0, "%s: SVG is not well-formed XML", CASES[i].name);
        snprintf(cmd, sizeof cmd,
                 "%s -c 'import json,sys; t=json.load(open(sys.argv[1])); "
                 "assert all(e[\"dur\"] >= 0 for e in t[\"traceEvents\"] if e[\"ph\"] == \"X\")' %s",
                 py, json);
        ck_assert_msg(system(cmd) == 0, "%s: trace is not valid JSON", CASES[i].name);
        remove(svg);
        remove(json);
        sched_sim_free(&sim);
        sched_plan_free(&pl);
    }
    rmdir(dir);
}
END_TEST

static Suite *suite(int parsers)
{
    Suite *s = suite_create("picture");
    TCase *c = tcase_create("picture");
    tcase_set_timeout(c, 60);
    if (parsers) {
        tcase_add_test(c, outputs_parse_as_xml_and_json);
    } else {
        tcase_add_loop_test(c, svg_draws_every_instruction, 0, NCASES);
        tcase_add_loop_test(c, trace_has_an_event_per_instruction, 0, NCASES);
        tcase_add_test(c, zero_step_time);
        tcase_add_test(c, slow_links);
        tcase_add_test(c, failed_plan);
    }
    suite_add_tcase(s, c);
    return s;
}

/* test_picture: the pictures' own checks. test_picture --parsers: the
 * outputs through Python's parsers, or 77 (skipped) without a python3. */
int main(int argc, char **argv)
{
    int parsers = argc > 1 && strcmp(argv[1], "--parsers") == 0;
    if (parsers && !python()) {
        puts("skipped: no python3");
        return 77;
    }
    SRunner *sr = srunner_create(suite(parsers));
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
