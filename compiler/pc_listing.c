/* compiler/pc_listing.c: the listing of a plan, and the predictions --stats
 * prints. */
#include "pc_listing.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "plan_memory.h"
#include "pc_stats.h"

/* Bytes an instruction moves or loads, per micro-batch; 0 when none. */
static double instr_bytes(const PlanIR *f, const PlanSchedule *p, int stage, const SchedInstr *in)
{
    const PlanPartition *pt = &f->part;
    int k = sched_part(f->cfg.place, pt->stages, stage, in->chunk);
    switch (in->op) {
    case SCHED_SendActivation: return p->bytes_fwd[k];
    case SCHED_RecvActivation: return k > 0 ? p->bytes_fwd[k - 1] : 0;
    case SCHED_SendGrad: return k > 0 ? p->bytes_fwd[k - 1] : 0;
    case SCHED_RecvGrad: return p->bytes_fwd[k];
    default: return 0;
    }
}

static void header(FILE *out, const PlanIR *f, const PlanSchedule *p, const SchedSim *sim, int s, int eval)
{
    const PlanPartition *pt = &f->part;
    const SchedPlan *pl = eval ? &p->eval : &p->train;
    char parts[128] = "";
    size_t n = 0;
    for (int c = 0; c < pt->chunks; c++) {
        int k = sched_part(f->cfg.place, pt->stages, s, c);
        n += snprintf(parts + n, sizeof parts - n, "%schunk %d = layers %d-%d", c ? ", " : "", c, pt->part[k].first,
                      pt->part[k].last);
        if (n >= sizeof parts)
            break;
    }
    int nbuf = 0;
    for (int c = 0; c < pt->chunks; c++)
        nbuf += pl->nbuf[s * pt->chunks + c];
    char dp[160], b1[32];
    long long T = f->cfg.tensor_parallel > 1 ? f->cfg.tensor_parallel : 1, D = f->cfg.data_parallel;
    if (D && T > 1)
        snprintf(dp, sizeof dp, "ranks %lld-%lld (data-parallel index 0-%lld, tensor-parallel index 0-%lld)",
                 s * D * T, s * D * T + D * T - 1, D - 1, T - 1);
    else if (D)
        snprintf(dp, sizeof dp, "ranks %lld-%lld (data-parallel index 0-%lld)", s * D, s * D + D - 1, D - 1);
    else if (T > 1)
        snprintf(dp, sizeof dp, "ranks r with r / (dp x %lld) = %d (data-parallel index r / %lld %% dp, "
                 "tensor-parallel index r %% %lld)", T, s, T, T);
    else
        snprintf(dp, sizeof dp, "ranks r with r / dp = %d (data-parallel index r %% dp)", s);
    fprintf(out, "\n%s stage %d: %s\n", eval ? "eval" : "train", s, dp);
    fprintf(out, "  %s; %d buffer%s, peak %d live, %s; %d instructions\n", parts, nbuf, nbuf == 1 ? "" : "s",
            sim->peak_buffers[s], base_bytes_text(sim->peak_bytes[s], b1, sizeof b1), pl->prog[s].n);
}

static void program(FILE *out, const PlanIR *f, const PlanSchedule *p, int eval)
{
    const SchedPlan *pl = eval ? &p->eval : &p->train;
    const SchedSim *sim = eval ? &p->eval_sim : &p->train_sim;
    for (int s = 0; s < pl->stages; s++) {
        header(out, f, p, sim, s, eval);
        for (int i = 0; i < pl->prog[s].n; i++) {
            const SchedInstr *in = &pl->prog[s].ins[i];
            char text[160];
            sched_instr_text(in, text, sizeof text);
            double b = instr_bytes(f, p, s, in);
            if (b > 0)
                fprintf(out, "  %6d  %-66s %12.0f B\n", i, text, b);
            else
                fprintf(out, "  %6d  %s\n", i, text);
        }
    }
}

/* What the prediction is made of: "100 TFLOP/s per device, free
 * communication", or "costs measured in gpt.json, links measured". */
static const char *costs_text(const PlanIR *f, char *buf, size_t size)
{
    const char *links = f->sched.link_bandwidth > 0 || f->sched.link_latency > 0 ? "links measured"
                        : f->cfg.link_bandwidth > 0                             ? "links as set"
                                                                                : "free communication";
    if (f->cfg.costs_profile)
        snprintf(buf, size, "costs measured in %s, %s", f->cfg.costs_profile, links);
    else
        snprintf(buf, size, "%.0f TFLOP/s per device, %s", f->cfg.device_tflops, links);
    return buf;
}

void pc_listing(FILE *out, const PlanIR *f)
{
    char costs[512];
    const PlanSchedule *p = &f->sched;
    char *sched = pc_schedule_str(&f->cfg), t1[32], t2[32];
    fprintf(out, "plan for model %s: %d stage%s x %d chunk%s, schedule %s, %lld micro-batch%s of %lld\n",
            f->model.name, f->part.stages, f->part.stages == 1 ? "" : "s", f->part.chunks,
            f->part.chunks == 1 ? "" : "s", sched, (long long)f->cfg.micro_batches,
            f->cfg.micro_batches == 1 ? "" : "es", (long long)f->cfg.micro_batch_size);
    free(sched);
    fprintf(out, "predicted (%s): step %s, bubble %.1f%%; evaluation pass %s\n", costs_text(f, costs, sizeof costs),
            base_time_text(p->train_sim.step_time, t1, sizeof t1), 100 * p->train_sim.bubble,
            base_time_text(p->eval_sim.step_time, t2, sizeof t2));
    fprintf(out, "columns: index, instruction, micro-batch, chunk, buffer, peer stage, link, bytes per transfer\n");
    program(out, f, p, 0);
    program(out, f, p, 1);
}

/* The most activation memory a stage has in use at once: its live slots at
 * their peak (the simulation), plus the recompute workspace that
 * activation checkpointing keeps beside them. */
static double peak_bytes(const PlanIR *f, int stage)
{
    PlanMemory mem;
    plan_stage_memory(f, stage, &mem);
    return f->sched.train_sim.peak_bytes[stage] + (double)mem.recompute_workspace;
}

void pc_stats_ranks_text(FILE *out, const PlanIR *f)
{
    const PlanSchedule *p = &f->sched;
    const SchedSim *sim = &p->train_sim;
    char t[32], b[32], i[32], costs[512];
    if (f->cfg.costs_profile)
        snprintf(costs, sizeof costs, "from the costs measured in %s", f->cfg.costs_profile);
    else
        snprintf(costs, sizeof costs, "at %.0f TFLOP/s per device", f->cfg.device_tflops);
    fprintf(out, "\npredicted step %s %s, bubble %.1f%% (idle time over step time)\n",
            base_time_text(sim->step_time, t, sizeof t), costs, 100 * sim->bubble);
    fprintf(out, "%6s  %12s %12s %8s %12s %14s\n", "stage", "busy", "idle", "bubble", "peak bufs", "peak bytes");
    for (int s = 0; s < f->part.stages; s++) {
        double bub = sim->step_time > 0 ? sim->idle[s] / sim->step_time : 0;
        fprintf(out, "%6d  %12s %12s %7.1f%% %12d %14s\n", s, base_time_text(sim->busy[s], b, sizeof b),
                base_time_text(sim->idle[s], i, sizeof i), 100 * bub, sim->peak_buffers[s],
                base_bytes_text(peak_bytes(f, s), t, sizeof t));
    }
    fprintf(out, "\nmemory per rank (what pipert allocates on each rank of the stage: one replica%s)\n",
            f->cfg.tensor_parallel > 1 ? ", one tensor-parallel rank" : "");
    fprintf(out, "%6s  %11s %11s %11s %11s %11s %11s %11s\n", "stage", "parameters", "gradients", "optimizer",
            "activations", "recompute", "staging", "total");
    /* the CPU backend's packed weights (plan_stage_pack_bytes): a GPU run
     * does not allocate them, so its ranks' totals are that much less */
    int64_t packs = 0;
    for (int s = 0; s < f->part.stages; s++) {
        PlanMemory mem;
        int64_t part[6];
        plan_stage_memory(f, s, &mem);
        plan_memory_parts(&mem, part);
        fprintf(out, "%6d ", s);
        for (int k = 0; k < 6; k++)
            fprintf(out, " %11s", base_bytes_text((double)part[k], t, sizeof t));
        fprintf(out, " %11s\n", base_bytes_text((double)mem.total, t, sizeof t));
        if (mem.cpu_packs > packs)
            packs = mem.cpu_packs;
    }
    if (packs > 0)
        fprintf(out,
                "parameters include the CPU's packed weight copies (up to %s a rank), which --device cuda does not "
                "allocate (--json: memory_bytes_cuda)\n",
                base_bytes_text((double)packs, t, sizeof t));
}

void pc_stats_ranks_json(FILE *out, const PlanIR *f)
{
    const PlanSchedule *p = &f->sched;
    const SchedSim *sim = &p->train_sim;
    fprintf(out, "  \"step_time\": %.9g,\n  \"bubble\": %.9g,\n  \"ranks\": [\n", sim->step_time, sim->bubble);
    for (int s = 0; s < f->part.stages; s++) {
        double bub = sim->step_time > 0 ? sim->idle[s] / sim->step_time : 0;
        fprintf(out,
                "    {\"rank\": %d, \"stage\": %d, \"busy\": %.9g, \"idle\": %.9g, \"bubble\": %.9g, \"peak_buffers\": %d, "
                "\"peak_bytes\": %.0f}%s\n",
                s, s, sim->busy[s], sim->idle[s], bub, sim->peak_buffers[s], peak_bytes(f, s),
                s + 1 < f->part.stages ? "," : "");
    }
    fprintf(out, "  ],\n");
}

void pc_stats_memory_json(FILE *out, const PlanIR *f, int stage)
{
    PlanMemory mem;
    int64_t part[6];
    plan_stage_memory(f, stage, &mem);
    plan_memory_parts(&mem, part);
    fprintf(out, "\"memory_bytes\": %" PRId64 ", \"memory_bytes_cuda\": %" PRId64 ", \"memory\": {", mem.total,
            mem.total - mem.cpu_packs);
    for (int k = 0; k < 6; k++)
        fprintf(out, "%s\"%s\": %" PRId64, k ? ", " : "", plan_memory_part_names[k], part[k]);
    fputc('}', out);
}
