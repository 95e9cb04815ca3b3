/* compiler/pc_model.h: the model block of a .pipe file, given meaning
 * (plan/plan_model.h): repeat expanded, arguments bound, shapes inferred,
 * parameters laid out, ties resolved. */
#ifndef PIPE_PC_MODEL_H
#define PIPE_PC_MODEL_H

#include "ast.h"
#include "plan_model.h"

/* Builds the model from the `model` block: expands repeat, binds arguments,
 * infers shapes. Returns 0, or -1 after reporting. */
int pc_model_build(DiagList *dl, const AstBlock *block, PlanModel *m);
/* llama_block's hidden width when mlp is not given, for width d: the LLaMA
 * rule, 4d, then int(2 * 4d / 3), rounded up to a multiple of 256. */
int64_t pc_llama_mlp(int64_t d);

#endif
