/* compiler/pc_partition.c: partitioning, placement and boundary tuples. */
#include "plan_partition.h"
#include "base_alloc.h"
#include "plan_profile.h"

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Front-maximal fill under bound B into exactly P non-empty parts; writes
 * first[] and returns the number of parts it needed (> P: infeasible). */
static int fill(const int64_t *cost, int n, int P, int64_t B, int *first)
{
    int k = 0, i = 0;
    while (i < n) {
        if (k < P)
            first[k] = i;
        int64_t sum = 0;
        int start = i;
        while (i < n) {
            if (i > start && sum + cost[i] > B)
                break;
            /* leave one layer for each part still to come */
            if (i > start && k < P && n - i <= P - k - 1)
                break;
            sum += cost[i++];
        }
        k++;
    }
    return k;
}

static void balance(const int64_t *cost, int n, int P, int *first)
{
    int64_t lo = 0, hi = 0;
    for (int i = 0; i < n; i++) {
        if (cost[i] > lo)
            lo = cost[i];
        hi += cost[i];
    }
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (fill(cost, n, P, mid, first) <= P)
            hi = mid;
        else
            lo = mid + 1;
    }
    fill(cost, n, P, lo, first);
}

int pc_partition(DiagList *dl, const PlanModel *m, const PlanConfig *c, PlanPartition *out)
{
    memset(out, 0, sizeof *out);
    int S = (int)c->stages, V = (int)c->chunks, P = S * V, n = m->nlayers;
    if (P > n) {
        diag_error(dl, c->stages_loc.line ? c->stages_loc : m->loc,
                   "%d stage%s x %d chunk%s = %d parts, but model '%s' has only %d layer%s", S, S == 1 ? "" : "s", V,
                   V == 1 ? "" : "s", P, m->name, n, n == 1 ? "" : "s");
        return -1;
    }
    if (c->partition == PLAN_PART_LIST && c->npartition_list != P) {
        diag_error(dl, c->partition_loc, "the partition list has %d entries, but %d stage%s x %d chunk%s need %d",
                   c->npartition_list, S, S == 1 ? "" : "s", V, V == 1 ? "" : "s", P);
        return -1;
    }
    int *first = base_calloc(P + 1, sizeof *first);
    int64_t *cost = base_calloc(n, sizeof *cost);
    switch (c->partition) {
    case PLAN_PART_UNIFORM: {
        /* equal counts; the remainder goes to the last parts */
        int base = n / P, extra = n % P, at = 0;
        for (int k = 0; k < P; k++) {
            first[k] = at;
            at += base + (k >= P - extra ? 1 : 0);
        }
        for (int i = 0; i < n; i++)
            cost[i] = 1;
        break;
    }
    case PLAN_PART_PARAMETERS:
    case PLAN_PART_FLOPS:
        for (int i = 0; i < n; i++)
            cost[i] = c->partition == PLAN_PART_PARAMETERS ? m->layer[i].held : m->layer[i].flops;
        balance(cost, n, P, first);
        break;
    case PLAN_PART_TIME:
        /* a layer's measured forward and backward, in nanoseconds (whole
         * ones, so the balancing stays exact); no profile: its FLOPs */
        for (int i = 0; i < n; i++)
            cost[i] = c->profile ? plan_profile_layer_ns(c->profile, i) : m->layer[i].flops;
        balance(cost, n, P, first);
        break;
    case PLAN_PART_TYPE: {
        regex_t re;
        if (regcomp(&re, c->partition_regex, REG_EXTENDED | REG_ICASE | REG_NOSUB) != 0) {
            diag_error(dl, c->partition_loc, "bad regular expression '%s'", c->partition_regex);
            free(first), free(cost);
            return -1;
        }
        int matched = 0;
        for (int i = 0; i < n; i++) {
            cost[i] = regexec(&re, plan_layer_names[m->layer[i].kind], 0, NULL, 0) == 0;
            matched += (int)cost[i];
        }
        regfree(&re);
        if (matched == 0) {
            diag_error(dl, c->partition_loc, "no layer's type matches \"type:%s\"", c->partition_regex);
            free(first), free(cost);
            return -1;
        }
        balance(cost, n, P, first);
        break;
    }
    case PLAN_PART_LIST:
        for (int k = 0; k < P; k++) {
            if (c->partition_list[k] >= n) {
                diag_error(dl, c->partition_loc, "partition list entry %lld is past the last layer (%d)",
                           (long long)c->partition_list[k], n - 1);
                free(first), free(cost);
                return -1;
            }
            first[k] = (int)c->partition_list[k];
        }
        for (int i = 0; i < n; i++)
            cost[i] = 1;
        break;
    }
    first[P] = n;
    out->nparts = P;
    out->stages = S;
    out->chunks = V;
    out->part = base_calloc(P, sizeof *out->part);
    out->bnd = base_calloc(P > 1 ? P - 1 : 1, sizeof *out->bnd);
    out->stage_of_layer = base_calloc(n, sizeof *out->stage_of_layer);
    for (int k = 0; k < P; k++) {
        PlanPart *pt = &out->part[k];
        pt->first = first[k];
        pt->last = first[k + 1] - 1;
        sched_place(c->place, S, k, &pt->stage, &pt->chunk);
        for (int i = pt->first; i <= pt->last; i++) {
            pt->params += m->layer[i].params;
            pt->flops += m->layer[i].flops;
            pt->cost += cost[i];
            out->stage_of_layer[i] = pt->stage;
        }
    }
    for (int k = 0; k < P; k++) {
        PlanPart *pt = &out->part[k];
        pt->held = pt->params;
        for (int i = pt->first; i <= pt->last; i++) {
            const PlanLayer *L = &m->layer[i];
            if (L->tie >= 0 && out->stage_of_layer[L->tie] != pt->stage)
                pt->held += L->held - L->params; /* a copy of the shared weight */
        }
    }
    for (int k = 0; k + 1 < P; k++) {
        PlanBoundary *b = &out->bnd[k];
        b->local = out->part[k].stage == out->part[k + 1].stage;
        int next = first[k + 1];
        PlanItem *it = &b->item[b->nitems++];
        it->name = "activation";
        it->t = m->layer[next - 1].out;
        for (int j = 1; j < m->ninputs; j++)
            if (m->input[j].last_use >= next) {
                it = &b->item[b->nitems++];
                it->name = m->input[j].name;
                it->t = m->input[j].t;
            }
        for (int j = 0; j < b->nitems; j++) {
            b->item[j].bytes = plan_tensor_elems(&b->item[j].t) * plan_dtype_size(b->item[j].t.dtype) * c->micro_batch_size;
            b->bytes += b->item[j].bytes;
        }
    }
    for (int i = 0; i < n; i++)
        if (m->layer[i].tie >= 0)
            out->nties++;
    out->tie = base_calloc(out->nties, sizeof *out->tie);
    for (int i = 0, t = 0; i < n; i++)
        if (m->layer[i].tie >= 0) {
            PlanTie *x = &out->tie[t++];
            x->layer = i;
            x->owner = m->layer[i].tie;
            x->cross_stage = out->stage_of_layer[i] != out->stage_of_layer[x->owner];
        }
    free(first);
    free(cost);
    return 0;
}

