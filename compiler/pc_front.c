/* compiler/pc_front.c: the front-end pipeline (docs/dsl.md). */
#include "pc_front.h"
#include "pc_config.h"
#include "pc_model.h"
#include "pc_partition.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base_alloc.h"
#include "base_file.h"
#include "gr_parse.h"
#include "plan_profile.h"

static int take_schedule(PcFront *f, DiagList *dl, int src);

/* schedule = file("x.sched"): the path is relative to the .pipe file's
 * folder (or the working folder for text in memory). Sets the chunk count
 * and placement the partitioning needs. */
static int read_schedule_file(PcFront *f, DiagList *dl)
{
    const char *name = f->cfg.schedule_file;
    if (f->mem_only) {
        if (!f->mem_sched) {
            diag_error(dl, f->cfg.schedule_loc, "cannot open schedule file '%s': no files here", name);
            return -1;
        }
        return take_schedule(f, dl, diag_add_source(dl, name, f->mem_sched, f->mem_sched_len));
    }
    char path[4200];
    const char *slash = f->path ? strrchr(f->path, '/') : NULL;
    if (name[0] != '/' && slash)
        snprintf(path, sizeof path, "%.*s/%s", (int)(slash - f->path), f->path, name);
    else
        snprintf(path, sizeof path, "%s", name);
    unsigned char *buf;
    size_t len;
    char why[256];
    BaseRead r = base_read_file(path, PC_MAX_FILE_BYTES * 4, &buf, &len, why, sizeof why);
    if (r == BASE_READ_CANNOT_OPEN) {
        diag_error(dl, f->cfg.schedule_loc, "cannot open schedule file '%s': %s", path, why);
        return -1;
    }
    if (r != BASE_READ_OK) {
        diag_error(dl, f->cfg.schedule_loc, "cannot read schedule file '%s': %s", path, why);
        return -1;
    }
    int src = diag_add_source(dl, path, (const char *)buf, len);
    free(buf);
    return take_schedule(f, dl, src);
}

/* Reads the registered schedule source src into f->text. */
static int take_schedule(PcFront *f, DiagList *dl, int src)
{
    if (sched_text_read(dl, src, (int)f->cfg.stages, &f->text) != 0)
        return -1;
    f->have_text = 1;
    f->text_src = src;
    f->cfg.chunks = f->text.chunks;
    f->cfg.place = f->text.place;
    return 0;
}

/* costs = profile("FILE"): FILE is relative to the folder of the .pipe
 * file when the setting is written there, to the working folder when it
 * comes from -D; read, and checked against the model and micro-batch
 * size, before the partition (partition = time needs it). */
static int read_profile(PcFront *f, DiagList *dl)
{
    const char *name = f->cfg.costs_profile;
    SrcLoc at = f->cfg.costs_loc;
    if (f->mem_only) {
        diag_error(dl, at, "cannot read profile '%s': no files here", name);
        return -1;
    }
    char path[4200];
    int from_file = at.file >= 0 && at.file < dl->nsrc && f->path && strcmp(dl->src[at.file].name, f->path) == 0;
    const char *slash = from_file ? strrchr(f->path, '/') : NULL;
    if (name[0] != '/' && slash)
        snprintf(path, sizeof path, "%.*s/%s", (int)(slash - f->path), f->path, name);
    else
        snprintf(path, sizeof path, "%s", name);
    char err[1024];
    PlanProfile *p = base_calloc(1, sizeof *p);
    if (plan_profile_read(path, p, err, sizeof err) != 0 ||
        plan_profile_check(p, &f->model, f->cfg.micro_batch_size, err, sizeof err) != 0) {
        diag_error(dl, at, "%s", err);
        plan_profile_free(p);
        free(p);
        return -1;
    }
    f->profile = p;
    f->cfg.profile = p;
    return 0;
}

static int run(PcFront *f, DiagList *dl, int src, const char *const *defs, int ndefs)
{
    if (gr_parse_file(&f->arena, dl, src, &f->file) != 0)
        return PC_USER_ERROR;
    for (int i = 0; i < ndefs; i++)
        if (pc_config_override(&f->arena, dl, &f->file, defs[i]) != 0)
            return PC_USER_ERROR;
    const AstBlock *model = NULL, *pipeline = NULL, *train = NULL;
    int errors = 0;
    for (const AstBlock *b = f->file.blocks; b; b = b->next) {
        const AstBlock **slot = b->kind == AST_BLOCK_MODEL ? &model : b->kind == AST_BLOCK_PIPELINE ? &pipeline : &train;
        if (*slot) {
            diag_error(dl, b->loc, "a second %s block (the first is on line %d)",
                       b->kind == AST_BLOCK_MODEL ? "model" : b->kind == AST_BLOCK_PIPELINE ? "pipeline" : "train",
                       (*slot)->loc.line);
            errors++;
            continue;
        }
        *slot = b;
    }
    if (errors)
        return PC_USER_ERROR;
    if (!model) {
        diag_error(dl, ((SrcLoc){src, 1, 1}), "no model block: a .pipe file starts with 'model NAME { ... }'");
        return PC_USER_ERROR;
    }
    int cfg_rc = pc_config_read(dl, pipeline, train, &f->cfg);
    int model_rc = pc_model_build(dl, model, &f->model);
    if (cfg_rc != 0 || model_rc != 0)
        return PC_USER_ERROR;
    if (pc_config_check_data(dl, &f->cfg, &f->model, !f->mem_only) != 0)
        return PC_USER_ERROR;
    plan_model_set_tp(&f->model, f->cfg.tensor_parallel);
    if (f->cfg.schedule == PLAN_SCHED_FILE && read_schedule_file(f, dl) != 0)
        return PC_USER_ERROR;
    if (f->cfg.costs_profile && read_profile(f, dl) != 0)
        return PC_USER_ERROR;
    if (f->cfg.partition == PLAN_PART_TIME && !f->profile)
        diag_warning(dl, f->cfg.partition_loc,
                     "partition = time balances measured times, and there is no costs = profile(\"FILE\"): "
                     "balancing FLOPs instead");
    if (pc_partition(dl, &f->model, &f->cfg, &f->part) != 0)
        return PC_USER_ERROR;
    f->ok = 1;
    return PC_OK;
}

int pc_front_text(PcFront *f, DiagList *dl, const char *name, const char *text, size_t len,
                  const char *const *defs, int ndefs)
{
    memset(f, 0, sizeof *f);
    int src = diag_add_source(dl, name, text, len);
    return run(f, dl, src, defs, ndefs);
}

int pc_front_mem(PcFront *f, DiagList *dl, const char *name, const char *text, size_t len,
                 const char *const *defs, int ndefs, const char *sched, size_t sched_len)
{
    memset(f, 0, sizeof *f);
    f->mem_only = 1;
    f->mem_sched = sched;
    f->mem_sched_len = sched_len;
    int src = diag_add_source(dl, name, text, len);
    return run(f, dl, src, defs, ndefs);
}

int pc_front_file(PcFront *f, DiagList *dl, const char *path, const char *const *defs, int ndefs)
{
    memset(f, 0, sizeof *f);
    f->path = path;
    SrcLoc none = {-1, 0, 0};
    unsigned char *buf;
    size_t len;
    char why[256];
    BaseRead r = base_read_file(path, PC_MAX_FILE_BYTES, &buf, &len, why, sizeof why);
    if (r == BASE_READ_CANNOT_OPEN) {
        diag_error(dl, none, "cannot open '%s': %s", path, why);
        return PC_SYSTEM_ERROR;
    }
    if (r == BASE_READ_TOO_LARGE) {
        int src = diag_add_source(dl, path, "", 0);
        diag_error(dl, ((SrcLoc){src, 1, 1}), "file is larger than %zu MiB; a .pipe file is a model description",
                   PC_MAX_FILE_BYTES >> 20);
        return PC_USER_ERROR;
    }
    if (r != BASE_READ_OK) {
        diag_error(dl, none, "cannot read '%s': %s", path, why);
        return PC_SYSTEM_ERROR;
    }
    int src = diag_add_source(dl, path, (const char *)buf, len);
    free(buf);
    int rc = run(f, dl, src, defs, ndefs);
    f->path = path;
    return rc;
}

void pc_front_free(PcFront *f)
{
    if (f->have_text)
        sched_actions_free(&f->text.acts);
    plan_partition_free(&f->part);
    if (f->profile) {
        plan_profile_free(f->profile);
        free(f->profile);
    }
    plan_model_free(&f->model);
    plan_config_free(&f->cfg);
    base_arena_free(&f->arena);
    memset(f, 0, sizeof *f);
}
