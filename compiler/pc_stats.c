/* compiler/pc_stats.c: the layer and stage tables of `pipec --stats`. */
#include "pc_stats.h"

#include "pc_listing.h"
#include "base_json.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static FILE *memstream(char **buf, size_t *len)
{
    FILE *f = open_memstream(buf, len);
    if (!f) {
        fputs("pipe: out of memory\n", stderr);
        exit(2);
    }
    return f;
}

char *pc_schedule_str(const PlanConfig *c)
{
    char *buf;
    size_t len;
    FILE *f = memstream(&buf, &len);
    const char *name = plan_schedule_names[c->schedule];
    if (c->schedule == PLAN_SCHED_FILE)
        fprintf(f, "file(\"%s\")", c->schedule_file ? c->schedule_file : "");
    else if (strstr(plan_schedule_sigs[c->schedule], "chunks"))
        fprintf(f, "%s(chunks = %lld)", name, (long long)c->chunks);
    else
        fprintf(f, "%s", name);
    fclose(f);
    return buf;
}

char *pc_partition_str(const PlanConfig *c)
{
    char *buf;
    size_t len;
    FILE *f = memstream(&buf, &len);
    switch (c->partition) {
    case PLAN_PART_UNIFORM: fprintf(f, "uniform"); break;
    case PLAN_PART_PARAMETERS: fprintf(f, "parameters"); break;
    case PLAN_PART_FLOPS: fprintf(f, "flops"); break;
    case PLAN_PART_TIME: fprintf(f, "time"); break;
    case PLAN_PART_TYPE: fprintf(f, "\"type:%s\"", c->partition_regex); break;
    case PLAN_PART_LIST:
        fputc('[', f);
        for (int i = 0; i < c->npartition_list; i++)
            fprintf(f, "%s%lld", i ? ", " : "", (long long)c->partition_list[i]);
        fputc(']', f);
        break;
    }
    fclose(f);
    return buf;
}

void pc_summary_line(FILE *out, const PlanIR *f)
{
    const PlanSchedule *pl = &f->sched;
    char p[32];
    char *s = pc_schedule_str(&f->cfg);
    fprintf(out, "%s: %d layer%s, %s parameters, %lld stage%s x %lld chunk%s, schedule %s", f->model.name,
            f->model.nlayers, f->model.nlayers == 1 ? "" : "s", base_commas(f->model.total_params, p, sizeof p),
            (long long)f->cfg.stages, f->cfg.stages == 1 ? "" : "s", (long long)f->cfg.chunks,
            f->cfg.chunks == 1 ? "" : "s", s);
    if (pl && pl->ok)
        fprintf(out, ", predicted bubble %.1f%%", 100 * pl->train_sim.bubble);
    fprintf(out, ": ok\n");
    free(s);
}

static int part_of_layer(const PlanPartition *pt, int layer)
{
    for (int k = 0; k < pt->nparts; k++)
        if (layer >= pt->part[k].first && layer <= pt->part[k].last)
            return k;
    return -1;
}

void pc_stats_text(FILE *out, const PlanIR *f)
{
    const PlanSchedule *p = f->sched.train.prog ? &f->sched : NULL;
    const PlanModel *m = &f->model;
    const PlanConfig *c = &f->cfg;
    const PlanPartition *pt = &f->part;
    char a[32], b[32], d[32], sh[96];
    char *sched = pc_schedule_str(c), *part = pc_partition_str(c);
    fprintf(out, "model %s: %d layer%s, %s parameters, %s forward FLOPs per sample\n", m->name, m->nlayers,
            m->nlayers == 1 ? "" : "s", base_commas(m->total_params, a, sizeof a), base_commas(m->total_flops, b, sizeof b));
    for (int i = 0; i < m->ninputs; i++) {
        plan_tensor_text(&m->input[i].t, 1, sh, sizeof sh);
        fprintf(out, "  input  %-10s %s\n", m->input[i].name, sh);
    }
    for (int i = 0; i < m->ntargets; i++) {
        plan_tensor_text(&m->target[i].t, 1, sh, sizeof sh);
        fprintf(out, "  target %-10s %s   (loss %s)\n", m->target[i].name, sh, plan_loss_names[m->loss]);
    }
    char dp[32];
    if (c->data_parallel)
        snprintf(dp, sizeof dp, "%lld", (long long)c->data_parallel);
    else
        snprintf(dp, sizeof dp, "auto");
    char tp[48] = "";
    if (c->tensor_parallel > 1)
        snprintf(tp, sizeof tp, ", tensor_parallel %lld", (long long)c->tensor_parallel);
    fprintf(out, "pipeline: %lld stage%s x %lld chunk%s, schedule %s, partition %s, %lld micro-batch%s of %lld, "
                 "data_parallel %s%s\n\n",
            (long long)c->stages, c->stages == 1 ? "" : "s", (long long)c->chunks, c->chunks == 1 ? "" : "s", sched,
            part, (long long)c->micro_batches, c->micro_batches == 1 ? "" : "es", (long long)c->micro_batch_size, dp,
            tp);
    free(sched);
    free(part);
    fprintf(out, "%6s  %-18s %-20s %14s %16s %12s %6s\n", "layer", "type", "output", "params", "flops", "act bytes",
            "stage");
    for (int i = 0; i < m->nlayers; i++) {
        const PlanLayer *L = &m->layer[i];
        char type[64];
        if (L->label)
            snprintf(type, sizeof type, "%s as %s", plan_layer_names[L->kind], L->label);
        else
            snprintf(type, sizeof type, "%s", plan_layer_names[L->kind]);
        plan_tensor_text(&L->out, 0, sh, sizeof sh);
        int k = part_of_layer(pt, i);
        char st[24];
        if (pt->chunks > 1)
            snprintf(st, sizeof st, "%d.%d", pt->part[k].stage, pt->part[k].chunk);
        else
            snprintf(st, sizeof st, "%d", pt->part[k].stage);
        fprintf(out, "%6d  %-18s %-20s %14s %16s %12s %6s", i, type, sh, base_commas(L->params, a, sizeof a),
                base_commas(L->flops, b, sizeof b), base_commas(L->act_bytes, d, sizeof d), st);
        if (L->tie >= 0)
            fprintf(out, "  (weight tied to layer %d)", L->tie);
        if (plan_layer_split(L))
            fprintf(out, "  (split = %s)", plan_linear_split_names[L->split]);
        fputc('\n', out);
        /* a residual block's layers, indented under it */
        for (int j = 0; j < L->nbody + L->nshort; j++) {
            const PlanLayer *S = &L->sub[j];
            char what[64];
            snprintf(what, sizeof what, "        %s.%d %s", j < L->nbody ? "body" : "shortcut",
                     j < L->nbody ? j : j - L->nbody, plan_layer_names[S->kind]);
            plan_tensor_text(&S->out, 0, sh, sizeof sh);
            /* a long name takes from the shape's column, so the figures stay aligned */
            int over = (int)strlen(what) > 26 ? (int)strlen(what) - 26 : 0;
            fprintf(out, "%-26s %-*s %14s %16s %12s\n", what, over < 20 ? 20 - over : 0, sh, base_commas(S->params, a, sizeof a),
                    base_commas(S->flops, b, sizeof b), base_commas(S->act_bytes, d, sizeof d));
        }
    }
    fprintf(out, "\n%6s  %-18s %14s %16s  %s\n", "stage", "layers", "params held", "flops/sample",
            "sends per micro-batch");
    for (int s = 0; s < pt->stages; s++) {
        char layers[128] = "";
        size_t n = 0;
        int64_t held = 0, flops = 0;
        for (int k = 0; k < pt->nparts; k++)
            if (pt->part[k].stage == s) {
                if (pt->part[k].first == pt->part[k].last)
                    n += snprintf(layers + n, sizeof layers - n, "%s%d", n ? "," : "", pt->part[k].first);
                else
                    n += snprintf(layers + n, sizeof layers - n, "%s%d-%d", n ? "," : "", pt->part[k].first,
                                  pt->part[k].last);
                if (n >= sizeof layers)
                    n = sizeof layers - 1;
                held += pt->part[k].held;
                flops += pt->part[k].flops;
            }
        fprintf(out, "%6d  %-18s %14s %16s", s, layers, base_commas(held, a, sizeof a), base_commas(flops, b, sizeof b));
        int sent = 0;
        for (int k = 0; k + 1 < pt->nparts; k++) {
            if (pt->part[k].stage != s)
                continue;
            const PlanBoundary *bd = &pt->bnd[k];
            fprintf(out, "%s", sent ? "\n                                                             " : "  ");
            for (int j = 0; j < bd->nitems; j++) {
                plan_tensor_text(&bd->item[j].t, 1, sh, sizeof sh);
                fprintf(out, "%s%s %s", j ? " + " : "", bd->item[j].name, sh);
            }
            if (bd->local)
                fprintf(out, " = %s B -> chunk %d, same stage (no transfer)", base_commas(bd->bytes, a, sizeof a),
                        pt->part[k + 1].chunk);
            else
                fprintf(out, " = %s B -> stage %d", base_commas(bd->bytes, a, sizeof a), pt->part[k + 1].stage);
            if (!bd->local && f->cfg.precision == PLAN_PREC_BF16) /* rt_wire_bf16 */
                fprintf(out, " (%s B on the CPU, the activation as bf16)",
                        base_commas(plan_boundary_bf16_bytes(bd), b, sizeof b));
            sent = 1;
        }
        if (!sent)
            fprintf(out, "  -");
        fputc('\n', out);
    }
    for (int t = 0; t < pt->nties; t++) {
        const PlanTie *x = &pt->tie[t];
        const PlanLayer *L = &m->layer[x->layer];
        const char *owner = m->layer[x->owner].label ? m->layer[x->owner].label : "?";
        (void)L;
        fprintf(out, "\ntied: layer %d (linear) uses the weight of layer %d (%s)%s", x->layer, x->owner, owner,
                x->cross_stage ? "" : ", on the same stage");
        if (x->cross_stage)
            fprintf(out, "; stages %d and %d each hold a copy, reduced by ReduceTiedGrads",
                    pt->stage_of_layer[x->owner], pt->stage_of_layer[x->layer]);
        fputc('\n', out);
    }
    if (p)
        pc_stats_ranks_text(out, f);
}

/* ---- JSON ------------------------------------------------------------ */

static void jshape(FILE *out, const PlanTensor *t)
{
    fputc('[', out);
    for (int i = 0; i < t->ndim; i++)
        fprintf(out, "%s%" PRId64, i ? ", " : "", t->dim[i]);
    fputc(']', out);
}

static void jio(FILE *out, const PlanIO *io, int n)
{
    fputc('[', out);
    for (int i = 0; i < n; i++) {
        fprintf(out, "%s{\"name\": ", i ? ", " : "");
        base_json_put_str(out, io[i].name);
        fprintf(out, ", \"dtype\": \"%s\", \"shape\": ", plan_dtype_name(io[i].t.dtype));
        jshape(out, &io[i].t);
        fputc('}', out);
    }
    fputc(']', out);
}

void pc_stats_json(FILE *out, const PlanIR *f)
{
    const PlanSchedule *p = f->sched.train.prog ? &f->sched : NULL;
    const PlanModel *m = &f->model;
    const PlanConfig *c = &f->cfg;
    const PlanPartition *pt = &f->part;
    char *sched = pc_schedule_str(c), *part = pc_partition_str(c);
    fprintf(out, "{\n  \"model\": ");
    base_json_put_str(out, m->name);
    fprintf(out, ",\n  \"total_params\": %" PRId64 ",\n  \"total_flops\": %" PRId64 ",\n", m->total_params,
            m->total_flops);
    fprintf(out, "  \"inputs\": ");
    jio(out, m->input, m->ninputs);
    fprintf(out, ",\n  \"targets\": ");
    jio(out, m->target, m->ntargets);
    fprintf(out, ",\n  \"loss\": \"%s\",\n", plan_loss_names[m->loss]);
    fprintf(out, "  \"pipeline\": {\"stages\": %lld, \"chunks\": %lld, \"data_parallel\": ", (long long)c->stages,
            (long long)c->chunks);
    if (c->data_parallel)
        fprintf(out, "%lld", (long long)c->data_parallel);
    else
        fprintf(out, "\"auto\"");
    fprintf(out, ", \"tensor_parallel\": %lld", (long long)c->tensor_parallel);
    fprintf(out, ", \"micro_batches\": %lld, \"micro_batch_size\": %lld, \"schedule\": ", (long long)c->micro_batches,
            (long long)c->micro_batch_size);
    base_json_put_str(out, sched);
    fprintf(out, ", \"partition\": ");
    base_json_put_str(out, part);
    free(sched);
    free(part);
    fprintf(out, "},\n  \"layers\": [\n");
    for (int i = 0; i < m->nlayers; i++) {
        const PlanLayer *L = &m->layer[i];
        int k = part_of_layer(pt, i);
        fprintf(out, "    {\"index\": %d, \"type\": \"%s\", ", i, plan_layer_names[L->kind]);
        if (L->label) {
            fprintf(out, "\"label\": ");
            base_json_put_str(out, L->label);
            fprintf(out, ", ");
        }
        fprintf(out, "\"input_shape\": ");
        jshape(out, &L->in);
        fprintf(out, ", \"output_shape\": ");
        jshape(out, &L->out);
        fprintf(out, ", \"dtype\": \"%s\", \"params\": %" PRId64 ", \"flops\": %" PRId64 ", \"act_bytes\": %" PRId64
                     ", \"stage\": %d, \"chunk\": %d, \"part\": %d",
                plan_dtype_name(L->out.dtype), L->params, L->flops, L->act_bytes, pt->part[k].stage, pt->part[k].chunk, k);
        if (L->tie >= 0)
            fprintf(out, ", \"tied_to\": %d", L->tie);
        if (plan_layer_split(L))
            fprintf(out, ", \"split\": \"%s\"", plan_linear_split_names[L->split]);
        fprintf(out, ", \"param_tensors\": [");
        for (int j = 0; j < L->nparams; j++) {
            const PlanParam *p = &L->param[j];
            fprintf(out, "%s{\"name\": \"layers.%d.%s\", \"shape\": [", j ? ", " : "", i, p->name);
            for (int q = 0; q < p->ndim; q++)
                fprintf(out, "%s%" PRId64, q ? ", " : "", p->dim[q]);
            fprintf(out, "]}");
        }
        fprintf(out, "]");
        if (L->nbuffers > 0) { /* batchnorm2d's running statistics: not parameters */
            fprintf(out, ", \"buffer_tensors\": [");
            for (int j = 0; j < L->nbuffers; j++) {
                const PlanParam *p = &L->buffer[j];
                fprintf(out, "%s{\"name\": \"layers.%d.%s\", \"shape\": [", j ? ", " : "", i, p->name);
                for (int q = 0; q < p->ndim; q++)
                    fprintf(out, "%s%" PRId64, q ? ", " : "", p->dim[q]);
                fprintf(out, "], \"dtype\": \"%s\"}", p->i64 ? "int64" : "float32");
            }
            fprintf(out, "]");
        }
        /* a residual block's layers: "body" and "shortcut", each layer's
         * type, shapes and figures (its tensors are the block's, above) */
        for (int part = 0; part < 2 && L->kind == PLAN_L_RESIDUAL; part++) {
            int j0 = part ? L->nbody : 0, j1 = part ? L->nbody + L->nshort : L->nbody;
            fprintf(out, ", \"%s\": [", part ? "shortcut" : "body");
            for (int j = j0; j < j1; j++) {
                const PlanLayer *S = &L->sub[j];
                fprintf(out, "%s{\"type\": \"%s\", \"input_shape\": ", j > j0 ? ", " : "", plan_layer_names[S->kind]);
                jshape(out, &S->in);
                fprintf(out, ", \"output_shape\": ");
                jshape(out, &S->out);
                fprintf(out, ", \"params\": %" PRId64 ", \"flops\": %" PRId64 "}", S->params, S->flops);
            }
            fprintf(out, "]");
        }
        fprintf(out, "}%s\n", i + 1 < m->nlayers ? "," : "");
    }
    fprintf(out, "  ],\n  \"parts\": [\n");
    for (int k = 0; k < pt->nparts; k++) {
        const PlanPart *p = &pt->part[k];
        fprintf(out,
                "    {\"part\": %d, \"stage\": %d, \"chunk\": %d, \"first_layer\": %d, \"last_layer\": %d, "
                "\"params\": %" PRId64 ", \"held\": %" PRId64 ", \"flops\": %" PRId64 ", \"sends\": ",
                k, p->stage, p->chunk, p->first, p->last, p->params, p->held, p->flops);
        if (k + 1 < pt->nparts) {
            const PlanBoundary *bd = &pt->bnd[k];
            fprintf(out, "{\"to_stage\": %d, \"to_chunk\": %d, \"local\": %s, \"bytes\": %" PRId64 ", \"items\": [",
                    pt->part[k + 1].stage, pt->part[k + 1].chunk, bd->local ? "true" : "false", bd->bytes);
            for (int j = 0; j < bd->nitems; j++) {
                fprintf(out, "%s{\"name\": ", j ? ", " : "");
                base_json_put_str(out, bd->item[j].name);
                fprintf(out, ", \"dtype\": \"%s\", \"shape\": ", plan_dtype_name(bd->item[j].t.dtype));
                jshape(out, &bd->item[j].t);
                fprintf(out, ", \"bytes\": %" PRId64 "}", bd->item[j].bytes);
            }
            fprintf(out, "]}");
        } else {
            fprintf(out, "null");
        }
        fprintf(out, "}%s\n", k + 1 < pt->nparts ? "," : "");
    }
    fprintf(out, "  ],\n  \"stages\": [\n");
    for (int s = 0; s < pt->stages; s++) {
        int64_t params = 0, held = 0, flops = 0, sends = 0;
        int nl = 0;
        fprintf(out, "    {\"stage\": %d, \"parts\": [", s);
        int first = 1;
        for (int k = 0; k < pt->nparts; k++)
            if (pt->part[k].stage == s) {
                fprintf(out, "%s%d", first ? "" : ", ", k);
                first = 0;
                params += pt->part[k].params;
                held += pt->part[k].held;
                flops += pt->part[k].flops;
                nl += pt->part[k].last - pt->part[k].first + 1;
                if (k + 1 < pt->nparts && !pt->bnd[k].local)
                    sends += pt->bnd[k].bytes;
            }
        fprintf(out, "], \"layers\": %d, \"params\": %" PRId64 ", \"held\": %" PRId64 ", \"flops\": %" PRId64
                     ", \"send_bytes\": %" PRId64,
                nl, params, held, flops, sends);
        if (p) {
            fprintf(out, ", ");
            pc_stats_memory_json(out, f, s);
        }
        fprintf(out, "}%s\n", s + 1 < pt->stages ? "," : "");
    }
    fprintf(out, "  ],\n");
    if (p)
        pc_stats_ranks_json(out, f);
    fprintf(out, "  \"ties\": [");
    for (int t = 0; t < pt->nties; t++)
        fprintf(out, "%s{\"layer\": %d, \"owner\": %d, \"cross_stage\": %s}", t ? ", " : "", pt->tie[t].layer,
                pt->tie[t].owner, pt->tie[t].cross_stage ? "true" : "false");
    fprintf(out, "]\n}\n");
}
