/* compiler/pc_tune.c: pipec --tune (pc_tune.h). */
#include "pc_tune.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base_alloc.h"
#include "base_json.h"
#include "base_text.h"
#include "pc_front.h"
#include "pc_planner.h"
#include "pc_stats.h"
#include "plan_file.h"
#include "plan_memory.h"
#include "plan_profile.h"

#define TUNE_MAX_DEFS 8

typedef struct Cand {
    int stages, dp, chunks;
    int64_t mb, mbs;            /* micro_batches, micro_batch_size */
    int sched;                  /* PlanScheduleKind */
    int64_t ac;                 /* activation_checkpoint */
    const char *partition;
    double step, bubble;
    int64_t peak;               /* the largest stage's memory, bytes */
} Cand;

typedef struct Tally {
    int tried, built, no_verify, no_memory, other;
} Tally;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The settings the tuner varies, in the order cand_strings writes them.
 * A -D of one holds it: only candidates with the value given are tried
 * (compared without blanks, as -D spells it). */
enum { NTUNED = 7 };
static const char *const tuned_key[NTUNED] = {"stages",   "data_parallel",         "micro_batches", "micro_batch_size",
                                              "schedule", "activation_checkpoint", "partition"};

/* Candidate c's value of each tuned key, as "key=value". */
static void cand_strings(const Cand *c, char buf[NTUNED][96])
{
    snprintf(buf[0], 96, "stages=%d", c->stages);
    snprintf(buf[1], 96, "data_parallel=%d", c->dp);
    snprintf(buf[2], 96, "micro_batches=%lld", (long long)c->mb);
    snprintf(buf[3], 96, "micro_batch_size=%lld", (long long)c->mbs);
    if (c->chunks > 1 && plan_schedule_place[c->sched] == SCHED_PLACE_LOOP)
        snprintf(buf[4], 96, "schedule=%s(chunks = %d)", plan_schedule_names[c->sched], c->chunks);
    else
        snprintf(buf[4], 96, "schedule=%s", plan_schedule_names[c->sched]);
    snprintf(buf[5], 96, "activation_checkpoint=%lld", (long long)c->ac);
    snprintf(buf[6], 96, "partition=%s", c->partition);
}

/* s without its blanks, into out (size bytes) */
static void squeeze(const char *s, char *out, size_t size)
{
    size_t n = 0;
    for (; *s && n + 1 < size; s++)
        if (*s != ' ' && *s != '\t')
            out[n++] = *s;
    out[n] = 0;
}

/* held[k]: the -D that holds tuned key k, without blanks ("" when none;
 * the last one given wins, as in the front end). Returns how many. */
static int held_settings(const PcTune *t, char held[NTUNED][96])
{
    int n = 0;
    for (int k = 0; k < NTUNED; k++)
        held[k][0] = 0;
    for (int i = 0; i < t->ndefs; i++) {
        char d[96];
        squeeze(t->defs[i], d, sizeof d);
        const char *eq = strchr(d, '=');
        for (int k = 0; eq && k < NTUNED; k++)
            if ((size_t)(eq - d) == strlen(tuned_key[k]) && !strncmp(d, tuned_key[k], (size_t)(eq - d))) {
                n += !held[k][0];
                strcpy(held[k], d);
            }
    }
    return n;
}

/* Whether candidate c has every held setting. */
static int holds(const Cand *c, char held[NTUNED][96])
{
    char buf[NTUNED][96];
    cand_strings(c, buf);
    for (int k = 0; k < NTUNED; k++) {
        char v[96];
        squeeze(buf[k], v, sizeof v);
        if (held[k][0] && strcmp(v, held[k]))
            return 0;
    }
    return 1;
}

/* "stages=2, schedule=zb-h1": the held settings, for messages */
static void held_text(char held[NTUNED][96], char *out, size_t size)
{
    size_t n = 0;
    out[0] = 0;
    for (int k = 0; k < NTUNED && n < size; k++)
        if (held[k][0])
            n += (size_t)snprintf(out + n, size - n, "%s%s", n ? ", " : "", held[k]);
}

/* The candidate's settings as -D strings after the user's own. */
static int cand_defs(const PcTune *t, const Cand *c, char buf[TUNE_MAX_DEFS][96], const char **defs)
{
    int n = 0;
    for (int i = 0; i < t->ndefs; i++)
        defs[n++] = t->defs[i];
    cand_strings(c, buf);
    for (int i = 0; i < NTUNED; i++)
        defs[n++] = buf[i];
    return n;
}

/* Compiles and predicts candidate c. keep: the plan to write, else NULL.
 * 0 when it verifies and fits, else -1 (tally says why). */
static int try_cand(const PcTune *t, Cand *c, Tally *tally, const char *write_to, char *err, size_t errsize)
{
    char buf[TUNE_MAX_DEFS][96];
    const char **defs = base_calloc((size_t)t->ndefs + TUNE_MAX_DEFS, sizeof *defs);
    int n = cand_defs(t, c, buf, defs);
    DiagList dl;
    diag_init(&dl);
    PcFront f;
    PlanSchedule p;
    SchedActions acts;
    memset(&p, 0, sizeof p);
    memset(&acts, 0, sizeof acts);
    tally->tried++;
    int rc = pc_front_file(&f, &dl, t->path, defs, n);
    f.no_ways_out = 1;
    if (rc == PC_OK)
        rc = pc_plan_build(&dl, &f, &p, &acts, 0);
    if (rc == PC_OK) {
        PlanIR ir = pc_ir_view(&f, &p);
        c->step = p.train_sim.step_time;
        c->bubble = p.train_sim.bubble;
        c->peak = 0;
        for (int s = 0; s < ir.part.stages; s++) {
            PlanMemory mem;
            plan_stage_memory(&ir, s, &mem);
            if (mem.total > c->peak)
                c->peak = mem.total;
        }
        tally->built++;
        if (write_to && plan_write(write_to, &ir, err, errsize) != 0)
            rc = PC_SYSTEM_ERROR;
    } else {
        /* why: the first error's words */
        const char *why = "";
        for (int i = 0; i < dl.n; i++)
            if (dl.d[i].level == DIAG_ERROR) {
                why = dl.d[i].msg;
                break;
            }
        if (strstr(why, "memory_limit"))
            tally->no_memory++;
        else if (strstr(why, "program") || strstr(why, "schedule"))
            tally->no_verify++;
        else
            tally->other++;
    }
    sched_actions_free(&acts);
    plan_schedule_free(&p);
    pc_front_free(&f);
    diag_free(&dl);
    free(defs);
    return rc == PC_OK ? 0 : rc == PC_SYSTEM_ERROR ? -2 : -1;
}

static int by_step(const void *a, const void *b)
{
    const Cand *x = a, *y = b;
    /* steps equal but for rounding (the same work in another order) tie */
    if (fabs(x->step - y->step) > 1e-9 * (x->step > y->step ? x->step : y->step))
        return x->step < y->step ? -1 : 1;
    if (x->peak != y->peak)
        return x->peak < y->peak ? -1 : 1;
    /* fewer stages, then fewer micro-batches: the simpler plan */
    if (x->stages != y->stages)
        return x->stages - y->stages;
    return x->mb < y->mb ? -1 : x->mb > y->mb;
}

static void sched_text(const Cand *c, char *buf, size_t size)
{
    if (c->chunks > 1 && plan_schedule_place[c->sched] == SCHED_PLACE_LOOP)
        snprintf(buf, size, "%s(chunks = %d)", plan_schedule_names[c->sched], c->chunks);
    else
        snprintf(buf, size, "%s", plan_schedule_names[c->sched]);
}

/* Why a row stands where it does, against the best and the rest shown. */
static void why_text(const Cand *c, const Cand *best, int rank, double min_bubble, int64_t min_peak, char *buf,
                     size_t size)
{
    size_t n = 0;
    double slower = c->step / best->step - 1;
    if (rank == 0)
        n += snprintf(buf + n, size - n, "fastest");
    else if (slower < 5e-4)
        n += snprintf(buf + n, size - n, "as fast");
    else
        n += snprintf(buf + n, size - n, "+%.1f%% step", 100 * slower);
    if (c->bubble <= min_bubble)
        n += snprintf(buf + n, size - n, ", least bubble");
    if (c->peak <= min_peak && n < size)
        n += snprintf(buf + n, size - n, ", least memory");
    if (rank == 0 && c->ac > 0 && n < size)
        snprintf(buf + n, size - n, ", recomputes");
}

int pc_tune(DiagList *dl, const PcTune *t, FILE *out)
{
    double t0 = now_s();
    /* the model as given: its layers, global batch, costs */
    PcFront base;
    int rc = pc_front_file(&base, dl, t->path, t->defs, t->ndefs);
    if (rc != PC_OK) {
        pc_front_free(&base);
        return rc;
    }
    const PlanConfig *bc = &base.cfg;
    /* tensor_parallel stays as the model says: the stages x replicas
     * enumerated share world / T ranks */
    int T = (int)(bc->tensor_parallel > 1 ? bc->tensor_parallel : 1), W = t->world / T;
    if (t->world % T) {
        diag_error(dl, bc->tp_loc, "--tune --world %d: the world is not a multiple of tensor_parallel = %d", t->world, T);
        pc_front_free(&base);
        return PC_USER_ERROR;
    }
    int64_t replicas = bc->data_parallel > 0                    ? bc->data_parallel
                       : W % bc->stages == 0                     ? W / bc->stages
                                                                 : 1;
    int64_t G = bc->micro_batch_size * bc->micro_batches * replicas;
    int n = base.model.nlayers;
    int have_profile = base.profile != NULL;
    const char *partitions[] = {"uniform", "parameters", "flops", "time"};
    int nparts = have_profile ? 4 : 3;
    char held[NTUNED][96], heldtxt[NTUNED * 100];
    int nheld = held_settings(t, held);
    held_text(held, heldtxt, sizeof heldtxt);
    int cap = 1024, nc = 0;
    Cand *cands = base_calloc(cap, sizeof *cands);
    Tally tally = {0};
    char err[1024];
    for (int S = 1; S <= W && S <= n; S++) {
        if (W % S)
            continue;
        int dp = W / S;
        if (G % dp)
            continue;
        int64_t per = G / dp;
        for (int64_t B = 1; B <= per; B++) {
            if (per % B || (have_profile && B != base.profile->micro_batch_size))
                continue; /* a profile's times hold at its micro-batch size only */
            int64_t M = per / B;
            if (M > PLAN_MAX_MICRO_BATCHES || M < S)
                continue; /* fewer micro-batches than stages: never better than fewer stages */
            for (int k = 0; k < PLAN_SCHED_COUNT; k++) {
                if (k == PLAN_SCHED_FILE)
                    continue;
                int vmax = 1;
                if (plan_schedule_place[k] == SCHED_PLACE_V)
                    vmax = 1; /* two chunks by their nature */
                else if (strstr(plan_schedule_sigs[k], "chunks"))
                    vmax = 4;
                for (int V = strstr(plan_schedule_sigs[k], "chunks") ? 2 : 1; V <= vmax; V++) {
                    int chunks = plan_schedule_place[k] == SCHED_PLACE_V ? 2 : V;
                    if (S * chunks > n || (S == 1 && chunks > 1))
                        continue;
                    int per_part = n / (S * chunks);
                    int64_t acs[2] = {0, (int64_t)lround(sqrt((double)per_part))};
                    int nac = acs[1] >= 1 && acs[1] < per_part ? 2 : 1;
                    for (int a = 0; a < nac; a++)
                        for (int q = 0; q < (S * chunks == 1 ? 1 : nparts); q++) {
                            if (nc == cap) {
                                cap *= 2;
                                cands = realloc(cands, (size_t)cap * sizeof *cands);
                                if (!cands) {
                                    fputs("pipec: out of memory\n", stderr);
                                    exit(2);
                                }
                            }
                            Cand c = {S, dp, V, M, B, k, acs[a], partitions[q], 0, 0, 0};
                            if (nheld && !holds(&c, held))
                                continue;
                            int r = try_cand(t, &c, &tally, NULL, err, sizeof err);
                            if (r == 0)
                                cands[nc++] = c;
                        }
                }
            }
        }
    }
    double took = now_s() - t0;
    if (nc == 0) {
        diag_error(dl, base.model.loc,
                   "--tune --world %d: no plan fits: %d tried, %d did not verify, %d over memory_limit, %d refused "
                   "otherwise (global batch %lld)%s%s",
                   t->world, tally.tried, tally.no_verify, tally.no_memory, tally.other, (long long)G,
                   nheld ? "; held by -D: " : "", heldtxt);
        free(cands);
        pc_front_free(&base);
        return PC_USER_ERROR;
    }
    qsort(cands, (size_t)nc, sizeof *cands, by_step);
    int top = nc < t->top ? nc : t->top;
    double min_bubble = cands[0].bubble;
    int64_t min_peak = cands[0].peak;
    for (int i = 1; i < top; i++) {
        if (cands[i].bubble < min_bubble)
            min_bubble = cands[i].bubble;
        if (cands[i].peak < min_peak)
            min_peak = cands[i].peak;
    }
    rc = PC_OK;
    Tally again = {0};
    if (t->plan_out && try_cand(t, &cands[0], &again, t->plan_out, err, sizeof err) != 0) {
        fprintf(stderr, "pipec: %s\n", err);
        rc = PC_SYSTEM_ERROR;
    }
    const char *costs = bc->costs_profile ? bc->costs_profile : "flops";
    if (t->json) {
        fprintf(out, "{\n  \"world\": %d,\n  \"global_batch\": %lld,\n  \"costs\": ", t->world, (long long)G);
        base_json_put_str(out, costs);
        fprintf(out,
                ",\n  \"tried\": %d,\n  \"fit\": %d,\n  \"did_not_verify\": %d,\n  \"over_memory_limit\": %d,\n"
                "  \"refused_otherwise\": %d,\n  \"seconds\": %.3f,\n  \"held\": [",
                tally.tried, nc, tally.no_verify, tally.no_memory, tally.other, took);
        for (int k = 0, first = 1; k < NTUNED; k++)
            if (held[k][0]) {
                fputs(first ? "" : ", ", out);
                base_json_put_str(out, held[k]);
                first = 0;
            }
        fprintf(out, "],\n  \"top\": [\n");
        for (int i = 0; i < top; i++) {
            const Cand *c = &cands[i];
            char sched[64], why[128];
            sched_text(c, sched, sizeof sched);
            why_text(c, &cands[0], i, min_bubble, min_peak, why, sizeof why);
            fprintf(out,
                    "    {\"stages\": %d, \"data_parallel\": %d, \"schedule\": \"%s\", \"micro_batches\": %lld, "
                    "\"micro_batch_size\": %lld, \"activation_checkpoint\": %lld, \"partition\": \"%s\", "
                    "\"step_time\": %.9g, \"bubble\": %.9g, \"peak_memory_bytes\": %lld, \"why\": \"%s\"}%s\n",
                    c->stages, c->dp, sched, (long long)c->mb, (long long)c->mbs, (long long)c->ac, c->partition,
                    c->step, c->bubble, (long long)c->peak, why, i + 1 < top ? "," : "");
        }
        fprintf(out, "  ]\n}\n");
    } else {
        fprintf(out,
                "tune %s for %d ranks%s, global batch %lld, costs %s: %d of %d plans fit (%d did not verify, %d "
                "over memory_limit, %d refused otherwise); %.2f s (compile and predict each)\n",
                base.model.name, t->world, T > 1 ? " (tensor_parallel as given: stages x dp over world / T)" : "",
                (long long)G, costs, nc, tally.tried, tally.no_verify, tally.no_memory, tally.other, took);
        if (!(bc->link_bandwidth > 0) && !(base.profile && base.profile->nlinks > 0))
            fprintf(out, "communication is free in these predictions: set link_bandwidth (or profile on 2 or more "
                         "stages) to weigh transfers and data-parallel reductions\n");
        if (have_profile)
            fprintf(out, "micro_batch_size %lld only: the profile's times hold at its micro-batch size\n",
                    (long long)base.profile->micro_batch_size);
        if (nheld)
            fprintf(out, "held by -D: %s\n", heldtxt);
        fprintf(out, "%4s %7s %4s  %-24s %9s %5s %3s %-10s %12s %7s %12s  %s\n", "rank", "stages", "dp", "schedule",
                "micro", "size", "ac", "partition", "step", "bubble", "peak memory", "why");
        for (int i = 0; i < top; i++) {
            const Cand *c = &cands[i];
            char sched[64], why[128], st[32], mem[32];
            sched_text(c, sched, sizeof sched);
            why_text(c, &cands[0], i, min_bubble, min_peak, why, sizeof why);
            fprintf(out, "%4d %7d %4d  %-24s %9lld %5lld %3lld %-10s %12s %6.1f%% %12s  %s\n", i + 1, c->stages, c->dp,
                    sched, (long long)c->mb, (long long)c->mbs, (long long)c->ac, c->partition,
                    base_time_text(c->step, st, sizeof st), 100 * c->bubble,
                    base_bytes_text((double)c->peak, mem, sizeof mem), why);
        }
        if (t->plan_out && rc == PC_OK)
            fprintf(out, "wrote the best plan (rank 1) to %s\n", t->plan_out);
    }
    free(cands);
    pc_front_free(&base);
    return rc;
}
