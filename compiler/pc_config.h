/* compiler/pc_config.h: the `pipeline` and `train` blocks read from the
 * syntax tree, with defaults, and the -D key=value overrides that replace
 * any of their keys (plan/plan_config.h holds what they are read into).
 *
 * Every key is one line in the table of pc_config.c (name, block, reader),
 * so the reference in docs/dsl.md, the unknown-key hints and -D all agree. */
#ifndef PIPE_PC_CONFIG_H
#define PIPE_PC_CONFIG_H

#include "ast.h"
#include "pc_bind.h"
#include "plan_config.h"
#include "plan_model.h"

/* Reads the pipeline and train blocks (either may be NULL: defaults). */
int pc_config_read(DiagList *dl, const AstBlock *pipeline, const AstBlock *train, PlanConfig *cfg);

/* The data and eval_data sources against the model (plan/plan_model.h):
 * what each yields (float32 images and class labels, int32 token ids and
 * next-token targets, ...) must be what the model's inputs, target and loss
 * take. npy(...) files are opened and their headers checked (dtype and
 * shape against the input and target) when open_files is set; the fuzz
 * targets' front end (pc_front_mem) touches no file and skips that.
 * Returns 0, or -1 after reporting at the source. */
int pc_config_check_data(DiagList *dl, const PlanConfig *cfg, const PlanModel *m, int open_files);

/* Applies one -D key=value to the syntax tree before it is read: the value
 * is parsed with the DSL's value grammar and replaces (or adds) the key in
 * the block it belongs to. Returns 0, or -1 after reporting. */
int pc_config_override(BaseArena *arena, DiagList *dl, AstFile *file, const char *kv);

/* Names of the keys, NULL-terminated, for docs and hints. */
const char *pc_config_key_name(int i);
int pc_config_key_block(int i); /* AST_BLOCK_PIPELINE or AST_BLOCK_TRAIN */

#endif
