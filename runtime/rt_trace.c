/* runtime/rt_trace.c: the Chrome trace of a real run; see rt_trace.h. */
#include "rt_trace.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base_json.h"
#include "rt.h"

enum { TAG_CLOCK = 7001, TAG_EVENTS = 7002 };

void rt_trace_open(RtCtx *rt, int64_t steps)
{
    RtTrace *t = rt_alloc(rt, sizeof *t, "trace");
    int64_t per = rt->ir.sched.train.prog[rt->stage].n, cap = steps * per;
    if (cap > RT_TRACE_MAX)
        cap = RT_TRACE_MAX;
    t->cap = cap > 0 ? cap : 1;
    t->ev = rt_alloc(rt, (size_t)t->cap * sizeof *t->ev, "trace events");
    /* Clock offsets against rank 0: the ping-pong with the shortest round
     * trip, its reply time taken as the midpoint (Cristian's method). */
    for (int r = 1; r < rt->world; r++) {
        if (rt->rank == 0) {
            double best = INFINITY, off = 0;
            for (int k = 0; k < 8; k++) {
                double t0 = MPI_Wtime(), tr;
                RT_MPI(rt, MPI_Send(&t0, 1, MPI_DOUBLE, r, TAG_CLOCK, MPI_COMM_WORLD));
                RT_MPI(rt, MPI_Recv(&tr, 1, MPI_DOUBLE, r, TAG_CLOCK, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
                double t1 = MPI_Wtime();
                if (t1 - t0 < best)
                    best = t1 - t0, off = tr - (t0 + t1) / 2;
            }
            RT_MPI(rt, MPI_Send(&off, 1, MPI_DOUBLE, r, TAG_CLOCK, MPI_COMM_WORLD));
        } else if (rt->rank == r) {
            for (int k = 0; k < 8; k++) {
                double x;
                RT_MPI(rt, MPI_Recv(&x, 1, MPI_DOUBLE, 0, TAG_CLOCK, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
                x = MPI_Wtime();
                RT_MPI(rt, MPI_Send(&x, 1, MPI_DOUBLE, 0, TAG_CLOCK, MPI_COMM_WORLD));
            }
            RT_MPI(rt, MPI_Recv(&t->offset, 1, MPI_DOUBLE, 0, TAG_CLOCK, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
        }
    }
    rt->trace = t;
}

/* Rank 0: one rank's events as complete ("X") events. */
static void write_events(FILE *out, const RtCtx *rt, int rank, const RtEvent *ev, int64_t n, double origin)
{
    const SchedProgram *prog = &rt->ir.sched.train.prog[rt_stage_of(rt, rank)];
    for (int64_t i = 0; i < n; i++) {
        const RtEvent *e = &ev[i];
        if (e->pc < 0 || e->pc >= prog->n)
            continue;
        const SchedInstr *in = &prog->ins[e->pc];
        char label[64], text[160];
        sched_instr_label(in, label, sizeof label);
        sched_instr_text(in, text, sizeof text);
        fputs(",\n{\"name\": ", out);
        base_json_put_str(out, label);
        fputs(", \"cat\": ", out);
        base_json_put_str(out, in->op < SCHED_NOPS ? sched_op_names[in->op] : "?");
        fprintf(out, ", \"ph\": \"X\", \"pid\": 0, \"tid\": %d, \"ts\": %.3f, \"dur\": %.3f", rank,
                (e->t0 - origin) * 1e6, (e->t1 - e->t0) * 1e6);
        fprintf(out, ", \"args\": {\"step\": %d, \"pc\": %d, \"mb\": %d, \"bytes\": %lld, \"instruction\": ", e->step,
                e->pc, in->mb, (long long)e->bytes);
        base_json_put_str(out, text);
        fputs("}}", out);
    }
}

void rt_trace_close(RtCtx *rt, const char *path)
{
    RtTrace *t = rt->trace;
    if (!t)
        return;
    int64_t per = rt->ir.sched.train.prog[rt->stage].n;
    for (int64_t i = 0; i < t->n; i++)
        t->ev[i].t0 -= t->offset, t->ev[i].t1 -= t->offset;
    /* the steps every rank holds whole: [first, first + common) */
    long long first = t->n ? t->ev[0].step : 0, whole = per ? t->n / per : 0;
    long long common = whole;
    RT_MPI(rt, MPI_Allreduce(&whole, &common, 1, MPI_LONG_LONG, MPI_MIN, MPI_COMM_WORLD));
    double *lo = rt_alloc(rt, (size_t)(common + 1) * sizeof *lo, "trace spans");
    double *hi = rt_alloc(rt, (size_t)(common + 1) * sizeof *hi, "trace spans");
    for (long long k = 0; k < common; k++)
        lo[k] = INFINITY, hi[k] = -INFINITY;
    double busy = 0, origin = t->n ? t->ev[0].t0 : INFINITY;
    for (int64_t i = 0; i < t->n; i++) {
        const RtEvent *e = &t->ev[i];
        long long k = e->step - first;
        if (k < 0 || k >= common)
            continue;
        if (e->t0 < lo[k])
            lo[k] = e->t0;
        if (e->t1 > hi[k])
            hi[k] = e->t1;
        busy += e->t1 - e->t0;
    }
    RT_MPI(rt, MPI_Allreduce(MPI_IN_PLACE, lo, (int)common, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD));
    RT_MPI(rt, MPI_Allreduce(MPI_IN_PLACE, hi, (int)common, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
    RT_MPI(rt, MPI_Allreduce(MPI_IN_PLACE, &origin, 1, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD));
    double span = 0;
    for (long long k = 0; k < common; k++)
        span += hi[k] - lo[k];
    double *busy_all = rt->rank == 0 ? rt_alloc(rt, (size_t)rt->world * sizeof *busy_all, "trace") : NULL;
    RT_MPI(rt, MPI_Gather(&busy, 1, MPI_DOUBLE, busy_all, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD));
    long long dropped = t->dropped, dropped_all = 0, events = t->n, events_all = 0;
    RT_MPI(rt, MPI_Reduce(&dropped, &dropped_all, 1, MPI_LONG_LONG, MPI_SUM, 0, MPI_COMM_WORLD));
    RT_MPI(rt, MPI_Reduce(&events, &events_all, 1, MPI_LONG_LONG, MPI_SUM, 0, MPI_COMM_WORLD));

    /* rank 0 writes, taking each rank's events in turn, in pieces of at
     * most its own capacity (no buffer larger than one rank's) */
    long long cap0 = t->cap;
    RT_MPI(rt, MPI_Bcast(&cap0, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD));
    FILE *out = NULL;
    int ok = 1;
    if (rt->rank == 0) {
        out = fopen(path, "w");
        ok = out != NULL;
    }
    RT_MPI(rt, MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD));
    RT_CHECK(rt, ok, "--trace: cannot write %s", path);
    if (rt->rank == 0) {
        fprintf(out, "{\"displayTimeUnit\": \"ms\", \"traceEvents\": [\n");
        fprintf(out, "{\"name\": \"process_name\", \"ph\": \"M\", \"pid\": 0, \"tid\": 0, \"args\": {\"name\": ");
        char title[256];
        snprintf(title, sizeof title, "pipert: %s, %d stages x %d replicas", rt->m->name, rt->stages, rt->dp);
        base_json_put_str(out, title);
        fputs("}}", out);
        for (int r = 0; r < rt->world; r++) {
            char tp[40] = "";
            if (rt->tp > 1)
                snprintf(tp, sizeof tp, ", tensor-parallel %d", r % rt->tp);
            fprintf(out,
                    ",\n{\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": 0, \"tid\": %d, \"args\": {\"name\": "
                    "\"rank %d: stage %d, replica %d%s\"}}",
                    r, r, rt_stage_of(rt, r), rt_replica_of(rt, r), tp);
        }
        write_events(out, rt, 0, t->ev, t->n, origin);
    }
    for (int r = 1; r < rt->world; r++) {
        long long n = t->n;
        if (rt->rank == r)
            RT_MPI(rt, MPI_Send(&n, 1, MPI_LONG_LONG, 0, TAG_EVENTS, MPI_COMM_WORLD));
        else if (rt->rank == 0)
            RT_MPI(rt, MPI_Recv(&n, 1, MPI_LONG_LONG, r, TAG_EVENTS, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
        else
            continue;
        for (long long at = 0; at < n;) {
            int k = (int)(n - at < cap0 ? n - at : cap0);
            if (rt->rank == r) {
                RT_MPI(rt, MPI_Send(t->ev + at, k * (int)sizeof *t->ev, MPI_BYTE, 0, TAG_EVENTS, MPI_COMM_WORLD));
            } else {
                RT_MPI(rt, MPI_Recv(t->ev, k * (int)sizeof *t->ev, MPI_BYTE, r, TAG_EVENTS, MPI_COMM_WORLD,
                                    MPI_STATUS_IGNORE));
                write_events(out, rt, r, t->ev, k, origin);
            }
            at += k;
        }
    }
    if (rt->rank == 0) {
        fputs("\n]}\n", out);
        ok = fclose(out) == 0;
        RT_CHECK(rt, ok, "--trace: writing %s failed", path);
    }
    if (rt->rank == 0) {
        printf("trace: %s, %lld events", path, events_all);
        if (common > 0)
            printf(", steps %lld to %lld in the idle figures", first, first + common - 1);
        if (dropped_all)
            printf(" (%lld later events not kept: at most %d per rank)", dropped_all, RT_TRACE_MAX);
        printf("\nidle fraction per rank, measured (the plan's prediction from its cost model):\n");
        for (int r = 0; r < rt->world; r++) {
            int s = rt_stage_of(rt, r);
            double pred = rt->ir.sched.train_sim.step_time > 0 ? rt->ir.sched.train_sim.idle[s] / rt->ir.sched.train_sim.step_time : 0;
            printf("  rank %d, stage %d: %5.1f%% (%.1f%%)\n", r, s, span > 0 ? 100 * (1 - busy_all[r] / span) : 0.0,
                   100 * pred);
        }
        fflush(stdout);
        free(busy_all);
    }
    free(lo), free(hi);
    free(t->ev);
    free(t);
    rt->trace = NULL;
}
