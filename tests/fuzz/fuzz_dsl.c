/* tests/fuzz/fuzz_dsl.c: a .pipe file through the whole front of pipec.
 *
 * The input is the text of a .pipe file, with two kinds of comment line
 * that the target reads as well (the parser skips them as comments):
 *   #-D KEY=VALUE   a -D override, as on pipec's command line (at most 8)
 *   #%emit          also simulate the timeline and draw the SVG and trace
 * and, after a line "#%sched", the text every schedule = file("...")
 * reads: the target never opens a file.
 *
 * What pipec does runs in order: pc_front_mem (parse, overrides, bind,
 * shapes, partition, the text schedule), pc_plan_build (generator,
 * lowering, verifier), the diagnostics printed, then on success the
 * listing, --stats (text and JSON), the summary, --emit sched and, with
 * #%emit, svg and trace. Invariants checked: a failure carries an error
 * and success none; the emitted schedule reads back to the same actions;
 * plan_encode's bytes decode and verify (what pipert will read). */
#include <string.h>

#include "fuzz.h"
#include "pc_listing.h"
#include "sched_picture.h"
#include "plan_file.h"
#include "pc_planner.h"
#include "pc_stats.h"

static int same_actions(const SchedActions *a, const SchedActions *b)
{
    if (a->stages != b->stages)
        return 0;
    for (int s = 0; s < a->stages; s++) {
        const SchedList *x = &a->stage[s], *y = &b->stage[s];
        if (x->n != y->n)
            return 0;
        for (int i = 0; i < x->n; i++)
            if (x->a[i].kind != y->a[i].kind || x->a[i].mb != y->a[i].mb || x->a[i].chunk != y->a[i].chunk)
                return 0;
    }
    return 1;
}

/* --emit sched, read back as schedule = file(...) would. */
static void check_sched_round_trip(const PcFront *f, const SchedActions *acts)
{
    char *text = NULL;
    size_t len = 0;
    FILE *o = open_memstream(&text, &len);
    FUZZ_CHECK(o != NULL, "open_memstream");
    sched_text_write(o, acts, f->part.chunks, f->cfg.place, "fuzz");
    fclose(o);
    DiagList dl;
    diag_init(&dl);
    int src = diag_add_source(&dl, "emitted.sched", text, len);
    SchedText back;
    int rc = sched_text_read(&dl, src, f->part.stages, &back);
    if (rc != 0)
        diag_print(&dl, stderr);
    FUZZ_CHECK(rc == 0, "pipec --emit sched wrote a schedule it cannot read:\n%s", text);
    FUZZ_CHECK(same_actions(&back.acts, acts) && back.place == f->cfg.place, "--emit sched changed the actions");
    sched_actions_free(&back.acts);
    diag_free(&dl);
    free(text);
}

/* plan.bin as pipec -o writes it and pipert reads it. */
static void check_plan_round_trip(const PlanIR *ir)
{
    unsigned char *data = NULL;
    size_t len = 0;
    plan_encode(ir, &data, &len);
    PlanIR back;
    char err[1024];
    int rc = plan_decode(data, len, &back, err, sizeof err);
    FUZZ_CHECK(rc == 0, "pipec wrote a plan its reader refuses: %s", err);
    FUZZ_CHECK(back.part.stages == ir->part.stages && back.model.nlayers == ir->model.nlayers &&
                   back.sched.train.prog[0].n == ir->sched.train.prog[0].n,
               "the plan read back differs");
    pc_listing(fuzz_sink(), &back);
    plan_ir_free(&back);
    free(data);
}

int fuzz_dsl(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    size_t len = size;
    const char *sched = NULL;
    size_t sched_len = 0;
    static const char mark[] = "#%sched\n";
    for (size_t i = 0; i + sizeof mark - 1 <= size; i++)
        if ((i == 0 || text[i - 1] == '\n') && memcmp(text + i, mark, sizeof mark - 1) == 0) {
            len = i;
            sched = text + i + sizeof mark - 1;
            sched_len = size - len - (sizeof mark - 1);
            break;
        }
    /* the #-D lines, NUL-terminated copies */
    char *defbuf = malloc(len + 1);
    const char *defs[8];
    int ndefs = 0, emit = 0;
    size_t used = 0;
    for (size_t i = 0; i < len;) {
        size_t e = i;
        while (e < len && text[e] != '\n')
            e++;
        if (e - i >= 3 && memcmp(text + i, "#-D", 3) == 0 && ndefs < 8) {
            size_t k = i + 3;
            while (k < e && text[k] == ' ')
                k++;
            memcpy(defbuf + used, text + k, e - k);
            defbuf[used + (e - k)] = '\0';
            defs[ndefs++] = defbuf + used;
            used += e - k + 1;
        } else if (e - i >= 6 && memcmp(text + i, "#%emit", 6) == 0) {
            emit = 1;
        }
        i = e + 1;
    }

    DiagList dl;
    diag_init(&dl);
    PcFront f;
    PlanSchedule p;
    SchedActions acts;
    memset(&p, 0, sizeof p);
    memset(&acts, 0, sizeof acts);
    int rc = pc_front_mem(&f, &dl, "fuzz.pipe", text, len, defs, ndefs, sched, sched_len);
    FUZZ_CHECK(rc == PC_OK || rc == PC_USER_ERROR, "pc_front_mem returned %d", rc);
    FUZZ_CHECK((rc == PC_OK) == (dl.nerrors == 0), "front end: status %d with %d errors", rc, dl.nerrors);
    if (rc == PC_OK) {
        rc = pc_plan_build(&dl, &f, &p, &acts, emit);
        FUZZ_CHECK(rc == PC_OK || rc == PC_USER_ERROR, "pc_plan_build returned %d", rc);
        FUZZ_CHECK((rc == PC_OK) == (dl.nerrors == 0), "planner: status %d with %d errors", rc, dl.nerrors);
    }
    diag_print(&dl, getenv("FUZZ_VERBOSE") ? stderr : fuzz_sink());
    if (rc == PC_OK) {
        FILE *o = fuzz_sink();
        PlanIR ir = pc_ir_view(&f, &p);
        pc_listing(o, &ir);
        pc_stats_text(o, &ir);
        pc_stats_json(o, &ir);
        pc_summary_line(o, &ir);
        char *name = pc_schedule_str(&f.cfg);
        free(name);
        if (emit) {
            sched_emit_svg(o, &p.train, &p.train_sim, "fuzz");
            sched_emit_trace(o, &p.train, &p.train_sim, "fuzz");
        }
        check_sched_round_trip(&f, &acts);
        check_plan_round_trip(&ir);
    }
    sched_actions_free(&acts);
    plan_schedule_free(&p);
    pc_front_free(&f);
    diag_free(&dl);
    free(defbuf);
    return 0;
}

FUZZ_ENTRY(fuzz_dsl)
