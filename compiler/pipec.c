/* compiler/pipec.c: the `pipec` command line.
 *
 * Exit status: 0 success, 1 a user error (anything wrong with the input or
 * the command line, limits included), 2 an internal or I/O error. With
 * --json, stdout holds JSON and nothing else; diagnostics go to stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "pc_front.h"
#include "pc_listing.h"
#include "sched_picture.h"
#include "plan_file.h"
#include "pc_planner.h"
#include "pc_stats.h"
#include "pc_tune.h"

#ifndef PIPE_VERSION
#define PIPE_VERSION "0.0.0"
#endif

static void usage(FILE *out)
{
    fputs("usage: pipec FILE.pipe [options]\n"
          "       pipec PLAN.bin --list | --stats\n"
          "\n"
          "Reads a pipe model, checks it, infers every shape, splits it into pipeline\n"
          "stages, runs the schedule's generator, lowers it to per-stage instruction\n"
          "streams and verifies them (no deadlock, every transfer matched, no buffer\n"
          "overwritten while live) before anything runs.\n"
          "\n"
          "options:\n"
          "  -o FILE           write the plan (plan.bin) for pipert; with --emit, the picture\n"
          "                    or schedule instead\n"
          "  --list            print every stage's instruction stream\n"
          "  --emit KIND       sched: the schedule as a text schedule file; svg: a timeline\n"
          "                    picture; trace: a Chrome trace (Perfetto). To -o FILE or stdout\n"
          "  --stats           print each layer (type, output shape, parameters, FLOPs,\n"
          "                    stage), each stage (layers, parameters, what it sends) and\n"
          "                    the predicted step time and bubble per stage\n"
          "  --json            with --stats: the same as JSON on stdout; with --tune: its table\n"
          "  --tune            with --world N: try every stage count, schedule, micro-batch\n"
          "                    split, activation checkpointing and partition for N ranks\n"
          "                    (same global batch), print the 10 fastest predicted; -o\n"
          "                    writes the best plan; a -D of one of these holds it\n"
          "  --world N         the ranks --tune plans for\n"
          "  -D KEY=VALUE      override a pipeline or train key, with any value the DSL\n"
          "                    accepts (-D stages=4, -D \"schedule=interleaved(chunks = 2)\");\n"
          "                    may repeat\n"
          "  --layers          list the DSL's layers and their arguments\n"
          "  --schedules       list the schedules\n"
          "  --ops             the instruction set, as a Markdown table\n"
          "  --help            this text\n"
          "  --version         the version\n"
          "\n"
          "exit status: 0 ok, 1 error in the input, 2 internal or I/O error\n",
          out);
}

static void list_layers(void)
{
    for (int i = 0; i < PLAN_L_COUNT; i++) {
        printf("%-20s (%s)\n    %s\n", plan_layer_names[i], plan_layer_sigs[i], plan_layer_docs[i]);
    }
    for (int i = 0; i < PLAN_LOSS_COUNT; i++)
        printf("loss %-15s\n    %s\n", plan_loss_names[i], plan_loss_docs[i]);
}

static void list_schedules(void)
{
    static const char *const place[] = {"loop", "v"};
    for (int i = 0; i < PLAN_SCHED_COUNT; i++)
        printf("%-12s (%s)  placement %s\n    %s\n", plan_schedule_names[i], plan_schedule_sigs[i],
               place[plan_schedule_place[i]], plan_schedule_docs[i]);
}

static void list_ops(void)
{
    printf("| opcode | instruction | operands | meaning |\n|---|---|---|---|\n");
    for (int i = 0; i < SCHED_NOPS; i++) {
        unsigned o = sched_op_operands[i];
        char ops[64] = "";
        size_t n = 0;
        static const char *const names[] = {"mb", "chunk", "buf", "peer", "link"};
        for (int b = 0; b < 5; b++)
            if (o & (1u << b))
                n += snprintf(ops + n, sizeof ops - n, "%s%s", n ? ", " : "", names[b]);
        printf("| %d | `%s` | %s | %s |\n", i, sched_op_names[i], n ? ops : "-", sched_op_docs[i]);
    }
}

static int is_plan(const char *path)
{
    FILE *f = fopen(path, "rb");
    char magic[8] = {0};
    if (!f)
        return 0;
    size_t n = fread(magic, 1, 8, f);
    fclose(f);
    return n == 8 && memcmp(magic, "PIPEPLAN", 8) == 0;
}

static FILE *open_out(const char *out)
{
    if (!out)
        return stdout;
    FILE *f = fopen(out, "w");
    if (!f)
        fprintf(stderr, "pipec: cannot write '%s'\n", out);
    return f;
}

static int close_out(FILE *f, const char *out)
{
    if (fflush(f) != 0 || ferror(f)) {
        fprintf(stderr, "pipec: cannot write '%s'\n", out ? out : "the output");
        if (f != stdout)
            fclose(f);
        return PC_SYSTEM_ERROR;
    }
    if (f != stdout && fclose(f) != 0) {
        fprintf(stderr, "pipec: cannot write '%s'\n", out);
        return PC_SYSTEM_ERROR;
    }
    return PC_OK;
}

int main(int argc, char **argv)
{
#ifdef __GLIBC__
    /* grow the heap 64 MiB of address space at a time (pages are touched
     * only as they are used): every growth is a brk or mprotect that holds
     * the process's memory map for writing, and stalls the other thread's
     * page faults meanwhile (a big plan's two threads fault in its
     * programs at once; docs/design-notes.md, "pipec's speed") */
    mallopt(M_TOP_PAD, 64 << 20);
#endif
    const char *path = NULL, *out = NULL, *emit = NULL;
    int stats = 0, json = 0, list = 0, tune = 0;
    long world = 0;
    const char **defs = calloc(argc > 0 ? argc : 1, sizeof *defs);
    int ndefs = 0;
    if (!defs)
        return 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            free(defs);
            return 0;
        } else if (!strcmp(a, "--version")) {
            printf("pipec %s (plan format %d)\n", PIPE_VERSION, PLAN_VERSION);
            free(defs);
            return 0;
        } else if (!strcmp(a, "--layers")) {
            list_layers();
            free(defs);
            return 0;
        } else if (!strcmp(a, "--schedules") || !strcmp(a, "--ops")) {
            if (a[2] == 's')
                list_schedules();
            else
                list_ops();
            free(defs);
            return 0;
        } else if (!strcmp(a, "--stats")) {
            stats = 1;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--list")) {
            list = 1;
        } else if (!strcmp(a, "--tune")) {
            tune = 1;
        } else if (!strcmp(a, "--world")) {
            char *end = NULL;
            if (i + 1 >= argc || (world = strtol(argv[i + 1], &end, 10), *end || world < 1 || world > PLAN_MAX_STAGES * 64)) {
                fprintf(stderr, "pipec: --world needs a rank count, 1 to %d\n", PLAN_MAX_STAGES * 64);
                free(defs);
                return 1;
            }
            i++;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--emit")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "pipec: %s needs an argument\n", a);
                free(defs);
                return 1;
            }
            if (a[1] == 'o')
                out = argv[++i];
            else
                emit = argv[++i];
        } else if (!strcmp(a, "-D")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "pipec: -D needs KEY=VALUE\n");
                free(defs);
                return 1;
            }
            defs[ndefs++] = argv[++i];
        } else if (!strncmp(a, "-D", 2)) {
            defs[ndefs++] = a + 2;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "pipec: unknown option '%s'\n", a);
            usage(stderr);
            free(defs);
            return 1;
        } else if (path) {
            fprintf(stderr, "pipec: more than one input file ('%s' and '%s')\n", path, a);
            free(defs);
            return 1;
        } else {
            path = a;
        }
    }
    int bad = 0;
    if (!path) {
        fprintf(stderr, "pipec: no input file\n");
        usage(stderr);
        bad = 1;
    } else if (json && !stats && !tune) {
        fprintf(stderr, "pipec: --json goes with --stats or --tune\n");
        bad = 1;
    } else if (tune && !world) {
        fprintf(stderr, "pipec: --tune needs --world N (the ranks to plan for)\n");
        bad = 1;
    } else if (world && !tune) {
        fprintf(stderr, "pipec: --world goes with --tune\n");
        bad = 1;
    } else if (tune && (stats || list || emit)) {
        fprintf(stderr, "pipec: --tune prints its own table: not with --stats, --list or --emit\n");
        bad = 1;
    } else if (emit && strcmp(emit, "sched") && strcmp(emit, "svg") && strcmp(emit, "trace")) {
        fprintf(stderr, "pipec: --emit takes sched, svg or trace, not '%s'\n", emit);
        bad = 1;
    } else if (emit && (list || stats) && !out) {
        fprintf(stderr, "pipec: --emit with --list or --stats needs -o FILE for the %s\n", emit);
        bad = 1;
    }
    if (bad) {
        free(defs);
        return 1;
    }
    DiagList dl;
    diag_init(&dl);
    /* a .pipe file: the front end and the planner (f, p, acts), seen as
     * one PlanIR; a plan.bin: the PlanIR read back (read) */
    PcFront f;
    PlanSchedule p;
    SchedActions acts;
    PlanWriting *written = NULL; /* the plan file, written during pc_plan_build_to */
    PlanIR read, ir;
    memset(&f, 0, sizeof f);
    memset(&p, 0, sizeof p);
    memset(&acts, 0, sizeof acts);
    memset(&read, 0, sizeof read);
    int rc;
    int from_plan = is_plan(path);
    if (tune) {
        if (from_plan) {
            fprintf(stderr, "pipec: %s is a compiled plan: --tune takes a .pipe file\n", path);
            rc = 1;
        } else {
            PcTune t = {path, defs, ndefs, (int)world, json, out, 10};
            rc = pc_tune(&dl, &t, stdout);
            diag_print(&dl, stderr);
        }
        diag_free(&dl);
        free(defs);
        return rc;
    }
    if (from_plan) {
        char err[1400];
        if (ndefs || emit || out) {
            fprintf(stderr, "pipec: %s is a compiled plan: it takes --list or --stats only\n", path);
            free(defs);
            diag_free(&dl);
            return 1;
        }
        rc = plan_read(path, &read, err, sizeof err) == 0 ? PC_OK : PC_USER_ERROR;
        if (rc != PC_OK)
            fprintf(stderr, "pipec: %s\n", err);
        ir = read;
    } else {
        rc = pc_front_file(&f, &dl, path, defs, ndefs);
        if (rc == PC_OK) /* a plan file is written while the programs are verified */
            rc = pc_plan_build_to(&dl, &f, &p, &acts, emit && strcmp(emit, "sched") != 0, emit ? NULL : out,
                                  &written);
        diag_print(&dl, stderr);
        ir = pc_ir_view(&f, &p);
    }
    if (rc == PC_OK && emit) {
        FILE *o = open_out(out);
        if (!o) {
            rc = PC_SYSTEM_ERROR;
        } else {
            char title[256];
            char *sched = pc_schedule_str(&ir.cfg);
            snprintf(title, sizeof title, "%s: %s, %d stages, %lld micro-batches", ir.model.name, sched, ir.part.stages,
                     (long long)ir.cfg.micro_batches);
            free(sched);
            if (!strcmp(emit, "sched"))
                sched_text_write(o, &acts, ir.part.chunks, ir.cfg.place, title);
            else if (!strcmp(emit, "svg"))
                sched_emit_svg(o, &ir.sched.train, &ir.sched.train_sim, title);
            else
                sched_emit_trace(o, &ir.sched.train, &ir.sched.train_sim, title);
            rc = close_out(o, out);
        }
    } else if (rc == PC_OK && out) {
        char err[4400];
        if ((written ? plan_write_end(written, 1, err, sizeof err) : plan_write(out, &ir, err, sizeof err)) != 0) {
            fprintf(stderr, "pipec: %s\n", err);
            rc = PC_SYSTEM_ERROR;
        }
    }
    if (rc == PC_OK && (list || stats || (!emit && !out))) {
        if (list)
            pc_listing(stdout, &ir);
        if (stats && json)
            pc_stats_json(stdout, &ir);
        else if (stats)
            pc_stats_text(stdout, &ir);
        if (!list && !stats)
            pc_summary_line(stdout, &ir);
        rc = close_out(stdout, NULL);
    }
    sched_actions_free(&acts);
    plan_schedule_free(&p);
    if (from_plan)
        plan_ir_free(&read);
    else
        pc_front_free(&f);
    diag_free(&dl);
    free(defs);
    return rc;
}
