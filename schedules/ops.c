/* schedules/ops.c: the instruction tables, the one instruction printer,
 * placement, and compute-action lists. */
#include "sched.h"
#include "base_alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const sched_op_names[SCHED_NOPS] = {
#define SCHED_OP(name, operands, doc) #name,
#include "ops.def"
#undef SCHED_OP
};

#define M SCHED_M
#define C SCHED_C
#define B SCHED_B
#define P SCHED_P
#define L SCHED_L
const unsigned sched_op_operands[SCHED_NOPS] = {
#define SCHED_OP(name, operands, doc) operands,
#include "ops.def"
#undef SCHED_OP
};
#undef M
#undef C
#undef B
#undef P
#undef L

const char *const sched_op_docs[SCHED_NOPS] = {
#define SCHED_OP(name, operands, doc) doc,
#include "ops.def"
#undef SCHED_OP
};

void sched_instr_text(const SchedInstr *in, char *buf, size_t size)
{
    if (in->op >= SCHED_NOPS) {
        snprintf(buf, size, "(bad opcode %u)", in->op);
        return;
    }
    unsigned o = sched_op_operands[in->op];
    char mb[16] = "", ch[16] = "", bf[16] = "", pr[16] = "", ln[16] = "";
    if (o & SCHED_M)
        snprintf(mb, sizeof mb, "mb %5d", in->mb);
    else
        snprintf(mb, sizeof mb, "%8s", "");
    if (o & SCHED_C)
        snprintf(ch, sizeof ch, "chunk %d", in->chunk);
    if (o & SCHED_B)
        snprintf(bf, sizeof bf, "buf %4d", in->buf);
    if ((o & SCHED_P) && in->peer >= 0)
        snprintf(pr, sizeof pr, "peer %4d", in->peer);
    if ((o & SCHED_L) && in->link >= 0)
        snprintf(ln, sizeof ln, "link %4d", in->link);
    snprintf(buf, size, "%-16s %s  %-8s %-8s %-9s %s", sched_op_names[in->op], mb, ch, bf, pr, ln);
    size_t n = strlen(buf);
    while (n > 0 && buf[n - 1] == ' ')
        buf[--n] = '\0';
}

void sched_instr_label(const SchedInstr *in, char *buf, size_t size)
{
    const char *k;
    switch (in->op) {
    case SCHED_Forward: k = "F"; break;
    case SCHED_Backward: k = "B"; break;
    case SCHED_BackwardInput: k = "I"; break;
    case SCHED_BackwardWeight: k = "W"; break;
    case SCHED_LoadMicroBatch: k = "load "; break;
    case SCHED_SendActivation: k = "send a"; break;
    case SCHED_RecvActivation: k = "recv a"; break;
    case SCHED_SendGrad: k = "send g"; break;
    case SCHED_RecvGrad: k = "recv g"; break;
    case SCHED_ReduceTiedGrads: snprintf(buf, size, "tied"); return;
    case SCHED_ReduceGrads: snprintf(buf, size, "reduce"); return;
    case SCHED_OptimizerStep: snprintf(buf, size, "step"); return;
    default: snprintf(buf, size, "?"); return;
    }
    if (in->chunk)
        snprintf(buf, size, "%s%d.%d", k, in->mb, in->chunk);
    else
        snprintf(buf, size, "%s%d", k, in->mb);
}

void sched_actions_init(SchedActions *sa, int stages)
{
    sa->stages = stages;
    sa->stage = base_realloc(NULL, (size_t)stages * sizeof *sa->stage);
    memset(sa->stage, 0, (size_t)stages * sizeof *sa->stage);
}

void sched_actions_free(SchedActions *sa)
{
    for (int s = 0; s < sa->stages; s++)
        free(sa->stage[s].a), free(sa->stage[s].line), free(sa->stage[s].col);
    free(sa->stage);
    memset(sa, 0, sizeof *sa);
}

void sched_push(SchedActions *sa, int stage, SchedKind kind, int mb, int chunk)
{
    SchedList *l = &sa->stage[stage];
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->a = base_realloc(l->a, (size_t)l->cap * sizeof *l->a);
        if (l->line) {
            l->line = base_realloc(l->line, (size_t)l->cap * sizeof *l->line);
            l->col = base_realloc(l->col, (size_t)l->cap * sizeof *l->col);
        }
    }
    if (l->line)
        l->line[l->n] = l->col[l->n] = 0;
    l->a[l->n++] = (SchedAction){(uint8_t)kind, (uint8_t)chunk, mb};
}

void sched_push_at(SchedActions *sa, int stage, SchedKind kind, int mb, int chunk, int line, int col)
{
    sched_push(sa, stage, kind, mb, chunk);
    SchedList *l = &sa->stage[stage];
    if (!l->line) {
        l->line = base_calloc((size_t)l->cap, sizeof *l->line);
        l->col = base_calloc((size_t)l->cap, sizeof *l->col);
    }
    l->line[l->n - 1] = line;
    l->col[l->n - 1] = col;
}
