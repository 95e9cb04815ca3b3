/* compiler/pc_model.c: from the `model` block to a PlanModel: repeat expansion,
 * argument binding, labels, shape inference, parameter layout, estimates.
 *
 * Shape inference stops at the first layer whose input it cannot accept:
 * every later shape would be a guess, and one precise message beats a
 * cascade. Argument errors are collected across all layers first. */
#include "pc_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pc_bind.h"

/* ---- expansion ------------------------------------------------------- */

typedef struct Builder {
    DiagList *dl;
    PlanModel *m;
    const AstStmt **stmt;   /* the statement each expanded layer came from */
    int n, cap;
    const AstStmt **bad;    /* statements whose arguments failed: report once */
    int nbad, capbad;
} Builder;

/* ---- initialisation ---------------------------------------------------- */

/* An `init = ...` value: `default`, `zeros`, `normal(std = 0.02)` (bare
 * `normal` too), and in the model block `gpt2(std = 0.02)`. */
static int read_init(DiagList *dl, const AstValue *v, int model_level, PlanInit *kind, double *std)
{
    const char *word = v->kind == AST_WORD || v->kind == AST_CALL ? v->s : NULL;
    static const char *const names[] = {"default", "normal", "zeros", "gpt2", NULL};
    int k = -1;
    for (int i = 0; word && names[i]; i++)
        if (strcmp(word, names[i]) == 0)
            k = i;
    if (k == PLAN_INIT_GPT2 && !model_level) {
        diag_error(dl, v->loc, "init = gpt2 is a model-wide scheme: write it in the model block (init = gpt2(std = "
                               "0.02)); a layer takes init = normal(std = ...), zeros or default");
        return -1;
    }
    if (k < 0) {
        char txt[64];
        pc_value_text(v, txt, sizeof txt);
        diag_error(dl, v->loc, "init must be %s, not '%s'",
                   model_level ? "gpt2(std = ...), normal(std = ...), zeros or default"
                               : "normal(std = ...), zeros or default",
                   txt);
        return -1;
    }
    PcArgs a;
    const char *sig = k == PLAN_INIT_NORMAL || k == PLAN_INIT_GPT2 ? "std:num=0.02" : "";
    if (pc_bind(dl, word, sig, v->kind == AST_CALL ? &v->items : NULL, v->loc, &a) != 0)
        return -1;
    *kind = (PlanInit)k;
    *std = 0;
    if (*sig) {
        *std = pc_arg(&a, "std")->f[0];
        if (!(*std > 0 && *std < 1e6)) {
            diag_error(dl, pc_arg(&a, "std")->loc, "std of init = %s must be positive, not %g", word, *std);
            return -1;
        }
    }
    return 0;
}

/* The model block's settings (init = ...). */
static int model_settings(DiagList *dl, const AstStmt *s, PlanInit *init, double *std, SrcLoc *at)
{
    int errors = 0, seen = 0;
    for (; s; s = s->next) {
        if (s->kind != AST_ASSIGN)
            continue;
        if (strcmp(s->name, "init") != 0) {
            diag_error(dl, s->loc, "unknown model setting '%s' (the model block takes init = ...)", s->name);
            errors++;
        } else if (seen++) {
            diag_error(dl, s->loc, "init is already set for this model");
            errors++;
        } else {
            *at = s->loc;
            errors += read_init(dl, s->value, 1, init, std) != 0;
        }
    }
    return errors ? -1 : 0;
}

/* Layers a statement list expands to, saturating at PLAN_MAX_LAYERS + 1. */
static int64_t count_layers(const AstStmt *s)
{
    int64_t n = 0;
    for (; s; s = s->next) {
        if (s->kind == AST_LAYER || s->kind == AST_GROUP)
            n++;
        else if (s->kind == AST_REPEAT && s->count && s->count->kind == AST_INT && s->count->i > 0) {
            int64_t body = count_layers(s->body);
            if (body > 0 && s->count->i > (PLAN_MAX_LAYERS + 1) / body)
                return PLAN_MAX_LAYERS + 1;
            n += body * s->count->i;
        }
        if (n > PLAN_MAX_LAYERS)
            return PLAN_MAX_LAYERS + 1;
    }
    return n;
}

static int expand(Builder *b, const AstStmt *s, int depth)
{
    for (; s; s = s->next) {
        if (s->kind == AST_LAYER || s->kind == AST_GROUP) { /* a residual block is one layer */
            if (b->n == b->cap) {
                b->cap = b->cap ? 2 * b->cap : 64;
                b->stmt = realloc(b->stmt, b->cap * sizeof *b->stmt);
                if (!b->stmt) {
                    fputs("pipe: out of memory\n", stderr);
                    exit(2);
                }
            }
            b->stmt[b->n++] = s;
        } else if (s->kind == AST_REPEAT) {
            for (int64_t k = 0; k < s->count->i; k++)
                expand(b, s->body, depth + 1);
        }
    }
    return 0;
}

/* What may stand inside a residual block's body or shortcut: layers, not
 * another block, repeat, declarations, the loss or settings. */
static int check_group_body(DiagList *dl, const AstStmt *s, const char *part)
{
    int errors = 0;
    for (; s; s = s->next) {
        switch (s->kind) {
        case AST_LAYER: continue;
        case AST_GROUP:
            diag_error(dl, s->loc, "a '%s' block cannot stand inside a residual block's %s (residual blocks do not nest)",
                       s->name, part);
            break;
        case AST_REPEAT:
            diag_error(dl, s->loc, "'repeat' cannot stand inside a residual block's %s: write its layers out, or "
                                   "repeat the whole residual block", part);
            break;
        case AST_INPUT:
        case AST_TARGET:
        case AST_LOSS:
        case AST_ASSIGN:
            diag_error(dl, s->loc, "'%s' cannot stand inside a residual block's %s",
                       s->kind == AST_INPUT    ? "input"
                       : s->kind == AST_TARGET ? "target"
                       : s->kind == AST_LOSS   ? "loss"
                                               : s->name, part);
            break;
        }
        errors++;
    }
    return errors;
}

/* Checks repeat counts and where input/target/loss statements may stand. */
static int check_structure(DiagList *dl, const AstStmt *s, int depth)
{
    int errors = 0;
    for (; s; s = s->next) {
        if (s->kind == AST_GROUP) {
            errors += check_group_body(dl, s->body, "body");
            if (s->name2)
                errors += check_group_body(dl, s->body2, "shortcut");
            continue;
        }
        if (depth > 0 && (s->kind == AST_INPUT || s->kind == AST_TARGET || s->kind == AST_LOSS || s->kind == AST_ASSIGN)) {
            diag_error(dl, s->loc, "'%s' cannot stand inside repeat",
                       s->kind == AST_INPUT    ? "input"
                       : s->kind == AST_TARGET ? "target"
                       : s->kind == AST_LOSS   ? "loss"
                                               : s->name);
            errors++;
        }
        if (s->kind == AST_REPEAT) {
            const AstValue *c = s->count;
            if (c->kind != AST_INT) {
                char txt[64];
                pc_value_text(c, txt, sizeof txt);
                diag_error(dl, c->loc, "repeat count must be an integer, not '%s'", txt);
                errors++;
            } else if (c->i < 1) {
                diag_error(dl, c->loc, "repeat count must be at least 1, not %lld", (long long)c->i);
                errors++;
            } else {
                errors += check_structure(dl, s->body, depth + 1);
            }
        }
    }
    return errors;
}

/* ---- arguments ------------------------------------------------------- */

static int find_label(const PlanModel *m, const char *label)
{
    for (int i = 0; i < m->nlayers; i++)
        if (m->layer[i].label && strcmp(m->layer[i].label, label) == 0)
            return i;
    return -1;
}

static int find_input(const PlanModel *m, const char *name)
{
    for (int i = 0; i < m->ninputs; i++)
        if (strcmp(m->input[i].name, name) == 0)
            return i;
    return -1;
}

static int positive(DiagList *dl, const PcArg *a, const char *what, int64_t min)
{
    for (int k = 0; k < 2; k++)
        if (a->i[k] < min) {
            diag_error(dl, a->loc, "%s of '%s' must be at least %lld, not %lld", a->name, what, (long long)min,
                       (long long)a->i[k]);
            return -1;
        }
    return 0;
}

/* A block's `mask = NAME`: the index of a side input (not the main one), or
 * -1 after reporting. */
static int bind_mask(Builder *b, const PcArg *mk, PlanLayer *L)
{
    DiagList *dl = b->dl;
    L->mask = find_input(b->m, mk->s);
    if (L->mask < 0) {
        const char *names[PLAN_MAX_IO + 1];
        for (int k = 0; k < b->m->ninputs; k++)
            names[k] = b->m->input[k].name;
        names[b->m->ninputs] = NULL;
        const char *near = diag_nearest(mk->s, names);
        if (near)
            diag_error(dl, mk->loc, "unknown mask input '%s'; did you mean '%s'?", mk->s, near);
        else
            diag_error(dl, mk->loc, "unknown mask input '%s' (declare it with 'input %s: float32[T]')", mk->s, mk->s);
        return -1;
    }
    if (L->mask == 0) {
        diag_error(dl, mk->loc, "mask '%s' is the model's main input; a mask must be another input", mk->s);
        return -1;
    }
    return 0;
}

/* eps of a norm (the layer, or a block's inner ones) must be positive */
static int positive_eps(DiagList *dl, const PcArg *a, const char *what, double *eps)
{
    *eps = a->f[0];
    if (!(*eps > 0.0)) {
        diag_error(dl, a->loc, "%s of '%s' must be positive, not %g", a->name, what, *eps);
        return -1;
    }
    return 0;
}

static int is_bad(const Builder *b, const AstStmt *s)
{
    for (int k = 0; k < b->nbad; k++)
        if (b->bad[k] == s)
            return 1;
    return 0;
}

static void mark_bad(Builder *b, const AstStmt *s)
{
    if (b->nbad == b->capbad) {
        b->capbad = b->capbad ? 2 * b->capbad : 16;
        b->bad = realloc(b->bad, b->capbad * sizeof *b->bad);
        if (!b->bad) {
            fputs("pipe: out of memory\n", stderr);
            exit(2);
        }
    }
    b->bad[b->nbad++] = s;
}

/* Binds one layer's arguments (statement s, layer idx; sub_pos > 0: the
 * sub-layer at that place, from 1, of residual block idx) and checks the
 * ranges that need no shapes. */
static int bind_one(Builder *b, const AstStmt *s, PlanLayer *L, int idx, int sub_pos)
{
    DiagList *dl = b->dl;
    memset(L, 0, sizeof *L);
    L->index = idx;
    L->sub_pos = sub_pos;
    L->loc = s->loc;
    L->label = s->label;
    L->tie = -1;
    L->mask = -1;
    if (is_bad(b, s))
        return -1;
    int kind = -1;
    for (int k = 0; k < PLAN_L_COUNT; k++)
        if (strcmp(plan_layer_names[k], s->name) == 0)
            kind = k;
    int rc = 0;
    if (kind == PLAN_L_RESIDUAL) {
        if (sub_pos)
            diag_error(dl, s->loc, "a 'residual' block cannot stand inside a residual block (residual blocks do not nest)");
        else
            diag_error(dl, s->loc, "'residual' is a block: write residual { LAYERS }, or residual { LAYERS } shortcut "
                                   "{ LAYERS }");
        rc = -1;
    } else if (sub_pos && (kind == PLAN_L_EMBEDDING || kind == PLAN_L_TRANSFORMER_BLOCK || kind == PLAN_L_LLAMA_BLOCK)) {
        diag_error(dl, s->loc, "'%s' cannot stand inside a residual block (a block's layers take and give float32 "
                               "tensors and are not blocks themselves)", s->name);
        rc = -1;
    } else if (sub_pos && s->label) {
        diag_error(dl, s->label_loc, "a layer inside a residual block cannot have a label ('as %s'): nothing may tie "
                                     "to it", s->label);
        rc = -1;
    } else if (kind < 0) {
        const char *near = diag_nearest(s->name, plan_layer_names);
        int is_loss = 0;
        for (int k = 0; k < PLAN_LOSS_COUNT; k++)
            if (strcmp(plan_loss_names[k], s->name) == 0)
                is_loss = 1;
        if (is_loss)
            diag_error(dl, s->loc, "'%s' is a loss, not a layer: write 'loss %s' at the end of the model", s->name,
                       s->name);
        else if (near)
            diag_error(dl, s->loc, "unknown layer '%s'; did you mean '%s'?", s->name, near);
        else
            diag_error(dl, s->loc, "unknown layer '%s'", s->name);
        rc = -1;
    } else {
        L->kind = (PlanLayerKind)kind;
        PcArgs a;
        /* init = ... is every layer's argument, not in the signatures: it
         * is read here, the rest bound as the table says */
        AstArgList rest = {NULL, NULL, 0};
        AstArg copy[64];
        for (const AstArg *x = s->args.head; x; x = x->next) {
            if (x->name && strcmp(x->name, "init") == 0) {
                rc |= read_init(dl, x->value, 0, &L->init, &L->init_std);
                L->init_loc = x->loc;
                continue;
            }
            if (rest.n == (int)(sizeof copy / sizeof copy[0]))
                break; /* the binder reports too many arguments with the rest */
            copy[rest.n] = *x;
            copy[rest.n].next = NULL;
            if (rest.tail)
                rest.tail->next = &copy[rest.n];
            else
                rest.head = &copy[rest.n];
            rest.tail = &copy[rest.n++];
        }
        if (rc || pc_bind(dl, s->name, plan_layer_sigs[kind], &rest, s->loc, &a) != 0) {
            rc = -1;
        } else {
            const char *w = s->name;
            switch (L->kind) {
            case PLAN_L_LINEAR:
                L->nout = pc_arg(&a, "out")->i[0];
                L->bias = (int)pc_arg(&a, "bias")->i[0];
                rc |= positive(dl, pc_arg(&a, "out"), w, 1);
                break;
            case PLAN_L_CONV2D:
                L->nout = pc_arg(&a, "out")->i[0];
                L->kh = pc_arg(&a, "kernel")->i[0], L->kw = pc_arg(&a, "kernel")->i[1];
                L->sh = pc_arg(&a, "stride")->i[0], L->sw = pc_arg(&a, "stride")->i[1];
                L->ph = pc_arg(&a, "padding")->i[0], L->pw = pc_arg(&a, "padding")->i[1];
                L->bias = (int)pc_arg(&a, "bias")->i[0];
                rc |= positive(dl, pc_arg(&a, "out"), w, 1);
                rc |= positive(dl, pc_arg(&a, "kernel"), w, 1);
                rc |= positive(dl, pc_arg(&a, "stride"), w, 1);
                rc |= positive(dl, pc_arg(&a, "padding"), w, 0);
                break;
            case PLAN_L_MAXPOOL2D:
            case PLAN_L_AVGPOOL2D: {
                const PcArg *k = pc_arg(&a, "kernel"), *st = pc_arg(&a, "stride");
                L->kh = k->i[0], L->kw = k->i[1];
                L->sh = st->set ? st->i[0] : L->kh, L->sw = st->set ? st->i[1] : L->kw;
                rc |= positive(dl, k, w, 1);
                if (st->set)
                    rc |= positive(dl, st, w, 1);
                if (L->kind == PLAN_L_MAXPOOL2D) {
                    const PcArg *pd = pc_arg(&a, "padding");
                    L->ph = pd->i[0], L->pw = pd->i[1];
                    rc |= positive(dl, pd, w, 0);
                    if (!rc && (2 * L->ph > L->kh || 2 * L->pw > L->kw)) {
                        diag_error(dl, pd->loc, "padding of 'maxpool2d' must be at most half the kernel (%lldx%lld)",
                                   (long long)L->kh, (long long)L->kw);
                        rc = -1;
                    }
                }
                break;
            }
            case PLAN_L_ADAPTIVE_AVGPOOL2D: {
                const PcArg *h = pc_arg(&a, "h"), *ww = pc_arg(&a, "w");
                L->oh = h->i[0];
                L->ow = ww->set ? ww->i[0] : L->oh;
                rc |= positive(dl, h, w, 1);
                if (ww->set)
                    rc |= positive(dl, ww, w, 1);
                break;
            }
            case PLAN_L_DROPOUT:
                L->p = pc_arg(&a, "p")->f[0];
                if (!(L->p >= 0.0 && L->p < 1.0)) {
                    diag_error(dl, pc_arg(&a, "p")->loc, "p of 'dropout' must be in [0, 1), not %g", L->p);
                    rc = -1;
                }
                break;
            case PLAN_L_LAYERNORM:
                L->eps = pc_arg(&a, "eps")->f[0];
                if (!(L->eps > 0.0)) {
                    diag_error(dl, pc_arg(&a, "eps")->loc, "eps of 'layernorm' must be positive, not %g", L->eps);
                    rc = -1;
                }
                break;
            case PLAN_L_EMBEDDING:
                L->vocab = pc_arg(&a, "vocab")->i[0];
                L->dim = pc_arg(&a, "dim")->i[0];
                L->positions = pc_arg(&a, "positions")->i[0];
                rc |= positive(dl, pc_arg(&a, "vocab"), w, 1);
                rc |= positive(dl, pc_arg(&a, "dim"), w, 1);
                rc |= positive(dl, pc_arg(&a, "positions"), w, 0);
                break;
            case PLAN_L_TRANSFORMER_BLOCK: {
                L->heads = pc_arg(&a, "heads")->i[0];
                const PcArg *mlp = pc_arg(&a, "mlp");
                L->mlp = mlp->set ? mlp->i[0] : 0; /* 0: 4 * dim, known with the shape */
                L->causal = (int)pc_arg(&a, "causal")->i[0];
                L->p = pc_arg(&a, "dropout")->f[0];
                L->eps = 1e-5;
                rc |= positive(dl, pc_arg(&a, "heads"), w, 1);
                if (mlp->set)
                    rc |= positive(dl, mlp, w, 1);
                if (!(L->p >= 0.0 && L->p < 1.0)) {
                    diag_error(dl, pc_arg(&a, "dropout")->loc, "dropout of 'transformer_block' must be in [0, 1), not %g",
                               L->p);
                    rc = -1;
                }
                const PcArg *mk = pc_arg(&a, "mask");
                if (mk->set)
                    rc |= bind_mask(b, mk, L);
                break;
            }
            case PLAN_L_RMSNORM:
                rc |= positive_eps(dl, pc_arg(&a, "eps"), w, &L->eps);
                break;
            case PLAN_L_LLAMA_BLOCK: {
                const PcArg *heads = pc_arg(&a, "heads"), *kv = pc_arg(&a, "kv_heads"), *mlp = pc_arg(&a, "mlp");
                const PcArg *theta = pc_arg(&a, "rope_theta");
                L->heads = heads->i[0];
                L->kv_heads = kv->set ? kv->i[0] : L->heads;
                L->mlp = mlp->set ? mlp->i[0] : 0; /* 0: the LLaMA rule, known with the shape */
                L->causal = (int)pc_arg(&a, "causal")->i[0];
                L->theta = theta->f[0];
                rc |= positive(dl, heads, w, 1);
                if (kv->set)
                    rc |= positive(dl, kv, w, 1);
                if (mlp->set)
                    rc |= positive(dl, mlp, w, 1);
                if (!rc && L->heads % L->kv_heads != 0) {
                    diag_error(dl, kv->loc, "kv_heads = %lld of 'llama_block' must divide heads = %lld",
                               (long long)L->kv_heads, (long long)L->heads);
                    rc = -1;
                }
                if (!(L->theta > 0.0 && L->theta <= 1e30)) {
                    diag_error(dl, theta->loc, "rope_theta of 'llama_block' must be positive, not %g", L->theta);
                    rc = -1;
                }
                rc |= positive_eps(dl, pc_arg(&a, "eps"), w, &L->eps);
                const PcArg *mk = pc_arg(&a, "mask");
                if (mk->set)
                    rc |= bind_mask(b, mk, L);
                break;
            }
            case PLAN_L_BATCHNORM2D: {
                rc |= positive_eps(dl, pc_arg(&a, "eps"), w, &L->eps);
                const PcArg *mo = pc_arg(&a, "momentum");
                L->momentum = mo->f[0];
                if (!(L->momentum >= 0.0 && L->momentum <= 1.0)) {
                    diag_error(dl, mo->loc, "momentum of 'batchnorm2d' must be in [0, 1], not %g", L->momentum);
                    rc = -1;
                }
                break;
            }
            case PLAN_L_RESHAPE: {
                static const char *const dn[] = {"d1", "d2", "d3", "d4"};
                int inferred = 0;
                for (int k = 0; k < PLAN_MAX_DIMS; k++) {
                    const PcArg *d = pc_arg(&a, dn[k]);
                    if (!d->set)
                        break;
                    L->shape[L->shape_n++] = d->i[0];
                    if (d->i[0] == -1 && inferred++) {
                        diag_error(dl, d->loc, "reshape takes at most one -1 (the dimension it infers)");
                        rc = -1;
                    } else if (d->i[0] == 0 || d->i[0] < -1) {
                        diag_error(dl, d->loc, "a dimension of 'reshape' must be positive, or -1 for the one it "
                                               "infers, not %lld", (long long)d->i[0]);
                        rc = -1;
                    }
                }
                break;
            }
            case PLAN_L_TRANSPOSE:
                L->axis_a = pc_arg(&a, "a")->i[0];
                L->axis_b = pc_arg(&a, "b")->i[0];
                break;
            case PLAN_L_RELU:
            case PLAN_L_GELU:
            case PLAN_L_TANH:
            case PLAN_L_SIGMOID:
            case PLAN_L_FLATTEN:
            case PLAN_L_RESIDUAL: /* refused above */
            case PLAN_L_COUNT:
                break;
            }
            if (L->kind == PLAN_L_LINEAR && pc_arg(&a, "split")->set) {
                const PcArg *sp = pc_arg(&a, "split");
                L->split = -1;
                for (int w = PLAN_LINEAR_COLUMN; w <= PLAN_LINEAR_ROW; w++)
                    if (strcmp(sp->s, plan_linear_split_names[w]) == 0)
                        L->split = w;
                if (L->split < 0) {
                    diag_error(dl, sp->loc, "split = %s: a linear splits by 'column' (its output features) or 'row' "
                                            "(its input features)", sp->s);
                    rc = -1;
                } else if (sub_pos) {
                    diag_error(dl, sp->loc, "split cannot be used inside a residual block: split a linear outside it");
                    rc = -1;
                } else if (pc_arg(&a, "tie")->set && L->split != PLAN_LINEAR_COLUMN) {
                    diag_error(dl, sp->loc, "a tied linear cannot be split by row: its weight is the one it ties to "
                                            "(split = column ties to an embedding with split = vocab)");
                    rc = -1;
                }
            }
            if (L->kind == PLAN_L_EMBEDDING && pc_arg(&a, "split")->set) {
                const PcArg *sp = pc_arg(&a, "split");
                if (strcmp(sp->s, plan_linear_split_names[PLAN_EMBEDDING_VOCAB]) == 0) {
                    L->split = PLAN_EMBEDDING_VOCAB;
                } else {
                    diag_error(dl, sp->loc, "split = %s: an embedding splits by 'vocab' (the rows of its token table)",
                               sp->s);
                    rc = -1;
                }
            }
            if (L->kind == PLAN_L_LINEAR && pc_arg(&a, "tie")->set) {
                if (sub_pos) {
                    diag_error(dl, pc_arg(&a, "tie")->loc, "tie cannot be used inside a residual block: tie a linear "
                                                           "outside it");
                    rc = -1;
                }
                L->tie_label = pc_arg(&a, "tie")->s; /* resolved once all labels are known */
                L->tie_loc = pc_arg(&a, "tie")->loc;
            }
        }
    }
    if (rc)
        mark_bad(b, s);
    return rc ? -1 : 0;
}

/* A residual block (statement s, a group): its body's and shortcut's
 * statements become its sub-layers (check_structure let only layers in). */
static int bind_residual(Builder *b, const AstStmt *s, PlanLayer *L, int idx)
{
    DiagList *dl = b->dl;
    memset(L, 0, sizeof *L);
    L->index = idx;
    L->loc = s->loc;
    L->tie = -1;
    L->mask = -1;
    L->kind = PLAN_L_RESIDUAL;
    if (is_bad(b, s))
        return -1;
    int rc = 0;
    if (strcmp(s->name, "residual") != 0) {
        static const char *const blocks[] = {"residual", NULL};
        if (strcmp(s->name, "shortcut") == 0)
            diag_error(dl, s->loc, "'shortcut { ... }' must follow a residual block: residual { LAYERS } shortcut "
                                   "{ LAYERS }");
        else if (diag_nearest(s->name, blocks))
            diag_error(dl, s->loc, "unknown block '%s'; did you mean 'residual'?", s->name);
        else
            diag_error(dl, s->loc, "unknown block '%s' (a model takes residual { LAYERS } [shortcut { LAYERS }])",
                       s->name);
        mark_bad(b, s);
        return -1;
    }
    if (s->name2 && strcmp(s->name2, "shortcut") != 0) {
        diag_error(dl, s->name2_loc, "a residual block is followed by 'shortcut { LAYERS }', not '%s { ... }'", s->name2);
        rc = -1;
    }
    int nb = 0, ns = 0;
    for (const AstStmt *t = s->body; t; t = t->next)
        nb++;
    for (const AstStmt *t = s->name2 ? s->body2 : NULL; t; t = t->next)
        ns++;
    if (nb == 0) {
        diag_error(dl, s->loc, "a residual block needs at least one layer in its body");
        rc = -1;
    }
    if (s->name2 && ns == 0) {
        diag_error(dl, s->name2_loc, "a shortcut needs at least one layer (without one, the block adds its input)");
        rc = -1;
    }
    if (nb + ns > PLAN_MAX_SUBLAYERS) {
        diag_error(dl, s->loc, "a residual block holds at most %d layers, body and shortcut together, not %d",
                   PLAN_MAX_SUBLAYERS, nb + ns);
        rc = -1;
    }
    if (rc) {
        mark_bad(b, s);
        return -1;
    }
    L->nbody = nb, L->nshort = ns;
    L->sub = calloc(nb + ns, sizeof *L->sub);
    if (!L->sub) {
        fputs("pipe: out of memory\n", stderr);
        exit(2);
    }
    int j = 0;
    for (const AstStmt *t = s->body; t; t = t->next, j++)
        rc |= bind_one(b, t, &L->sub[j], idx, j + 1);
    for (const AstStmt *t = s->name2 ? s->body2 : NULL; t; t = t->next, j++)
        rc |= bind_one(b, t, &L->sub[j], idx, j + 1);
    return rc ? -1 : 0;
}

static int bind_layer(Builder *b, int idx)
{
    const AstStmt *s = b->stmt[idx];
    PlanLayer *L = &b->m->layer[idx];
    if (s->kind == AST_GROUP)
        return bind_residual(b, s, L, idx);
    return bind_one(b, s, L, idx, 0);
}

/* ---- shapes ---------------------------------------------------------- */

/* Adds a parameter tensor; returns -1 when it would exceed PLAN_MAX_ELEMS
 * (the caller reports), so no count can overflow. */
static int add_param(PlanLayer *L, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
    PlanParam *p = &L->param[L->nparams++];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    int64_t d[4] = {d0, d1, d2, d3};
    p->count = 1;
    for (int i = 0; i < ndim; i++) {
        p->dim[i] = d[i];
        if (d[i] < 1 || d[i] > PLAN_MAX_ELEMS / p->count)
            return -1;
        p->count *= d[i];
    }
    L->params += p->count;
    return 0;
}

/* FLOP estimates are computed in double and clamped: an estimate must never
 * overflow, however large the (already size-checked) shapes. */
static int64_t fl(double x)
{
    return x > 4e18 ? (int64_t)4e18 : (int64_t)x;
}

/* True when the tensor stays within the size limits. */
static int sane(const PlanTensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) {
        if (t->dim[i] < 1 || t->dim[i] > PLAN_MAX_ELEMS / n)
            return 0;
        n *= t->dim[i];
    }
    return 1;
}

#define PARAM(...)                                                                                 \
    do {                                                                                           \
        if (add_param(__VA_ARGS__) != 0)                                                           \
            SHAPE_ERR("layer %d (%s): a parameter tensor would have more than 2^40 elements", L->index, \
                      plan_layer_names[L->kind]);                                                    \
    } while (0)

#define SHAPE_ERR(...)                          \
    do {                                        \
        diag_error(dl, L->loc, __VA_ARGS__);    \
        return -1;                              \
    } while (0)

static int pool_out(DiagList *dl, PlanLayer *L, const char *what, int64_t in, int64_t k, int64_t s, int64_t p,
                    const char *txt, int64_t *out)
{
    if (in + 2 * p < k)
        SHAPE_ERR("layer %d (%s): %s %lld is larger than its input %s%s", L->index, plan_layer_names[L->kind], what,
                  (long long)k, txt, p ? " even with padding" : "");
    *out = (in + 2 * p - k) / s + 1;
    return 0;
}

/* Input elements summed along one axis by adaptive pooling: each of the
 * out windows spans about ceil(in / out) + 1 elements when they overlap. An
 * estimate, in O(1) whatever the sizes. */
static double adaptive_span(int64_t in, int64_t out)
{
    if (in % out == 0)
        return (double)in;
    return (double)out * (double)((in + out - 1) / out + 1);
}

/* The LLaMA rule for llama_block's hidden width when mlp is not given
 * (Meta's llama/model.py with multiple_of = 256 and no ffn_dim_multiplier;
 * Hugging Face's LLaMA configs hold its results): 4 D, then int(2 * 4D / 3),
 * then rounded up to a multiple of 256. D = 4096 gives 11008. */
int64_t pc_llama_mlp(int64_t d)
{
    int64_t hidden = 2 * (4 * d) / 3;
    return (hidden + 255) / 256 * 256;
}

/* A block's mask input must be float32[T] for a [T, D] input. */
static int check_mask(DiagList *dl, const PlanModel *m, PlanLayer *L, int64_t t)
{
    if (L->mask < 0)
        return 0;
    const PlanIO *mk = &m->input[L->mask];
    char mt[96];
    plan_tensor_text(&mk->t, 1, mt, sizeof mt);
    if (mk->t.dtype != PLAN_F32 || mk->t.ndim != 1 || mk->t.dim[0] != t)
        SHAPE_ERR("layer %d (%s): mask '%s' must be float32[%lld] to match the sequence, but is %s", L->index,
                  plan_layer_names[L->kind], mk->name, (long long)t, mt);
    return 0;
}

static int infer_residual(DiagList *dl, PlanModel *m, PlanLayer *L, const PlanTensor *in);

static int infer(DiagList *dl, PlanModel *m, PlanLayer *L, const PlanTensor *in)
{
    char txt[96];
    plan_tensor_text(in, 1, txt, sizeof txt);
    const char *name = plan_layer_names[L->kind];
    L->in = *in;
    L->out = *in;
    int64_t n = plan_tensor_elems(in);
    if (L->kind != PLAN_L_EMBEDDING && in->dtype != PLAN_F32)
        SHAPE_ERR("layer %d (%s) needs a float32 input, but gets %s%s", L->index, name, txt,
                  L->index == 0 ? " (token ids go through an embedding first)" : "");
    switch (L->kind) {
    case PLAN_L_LINEAR: {
        if (in->ndim < 1)
            SHAPE_ERR("layer %d (linear) needs an input with at least one dimension, but gets %s", L->index, txt);
        int64_t fin = in->dim[in->ndim - 1], rows = n / fin;
        L->out.dim[in->ndim - 1] = L->nout;
        if (!sane(&L->out))
            SHAPE_ERR("layer %d (%s): output shape is too large", L->index, name);
        if (L->tie < 0 && !L->tie_label)
            PARAM(L, "weight", 2, L->nout, fin, 0, 0);
        if (L->bias)
            PARAM(L, "bias", 1, L->nout, 0, 0, 0);
        L->flops = fl(2.0 * rows * fin * L->nout + (L->bias ? (double)rows * L->nout : 0));
        break;
    }
    case PLAN_L_CONV2D:
    case PLAN_L_MAXPOOL2D:
    case PLAN_L_AVGPOOL2D: {
        if (in->ndim != 3)
            SHAPE_ERR("layer %d (%s) needs a [C, H, W] input, but gets %s", L->index, name, txt);
        int64_t c = in->dim[0], h = in->dim[1], w = in->dim[2], oh, ow;
        const char *what = L->kind == PLAN_L_CONV2D ? "kernel" : "window";
        if (pool_out(dl, L, what, h, L->kh, L->sh, L->ph, txt, &oh) || pool_out(dl, L, what, w, L->kw, L->sw, L->pw, txt, &ow))
            return -1;
        int64_t oc = L->kind == PLAN_L_CONV2D ? L->nout : c;
        L->out.dim[0] = oc, L->out.dim[1] = oh, L->out.dim[2] = ow;
        if (L->kind == PLAN_L_CONV2D) {
            PARAM(L, "weight", 4, L->nout, c, L->kh, L->kw);
            if (L->bias)
                PARAM(L, "bias", 1, L->nout, 0, 0, 0);
            L->flops = fl(2.0 * c * L->kh * L->kw * oc * oh * ow + (L->bias ? (double)oc * oh * ow : 0));
        } else {
            L->flops = fl((double)oc * oh * ow * L->kh * L->kw);
        }
        break;
    }
    case PLAN_L_ADAPTIVE_AVGPOOL2D:
        if (in->ndim != 3)
            SHAPE_ERR("layer %d (%s) needs a [C, H, W] input, but gets %s", L->index, name, txt);
        L->out.dim[1] = L->oh, L->out.dim[2] = L->ow;
        if (!sane(&L->out))
            SHAPE_ERR("layer %d (%s): output shape is too large", L->index, name);
        L->flops = fl((double)in->dim[0] * adaptive_span(in->dim[1], L->oh) * adaptive_span(in->dim[2], L->ow));
        break;
    case PLAN_L_RELU:
    case PLAN_L_DROPOUT:
        L->flops = n;
        break;
    case PLAN_L_GELU:
    case PLAN_L_TANH:
    case PLAN_L_SIGMOID:
        L->flops = fl(4.0 * n);
        break;
    case PLAN_L_FLATTEN:
        if (in->ndim < 1)
            SHAPE_ERR("layer %d (flatten) needs an input with at least one dimension, but gets %s", L->index, txt);
        L->out.ndim = 1;
        L->out.dim[0] = n;
        break;
    case PLAN_L_LAYERNORM:
        if (in->ndim < 1)
            SHAPE_ERR("layer %d (layernorm) needs an input with at least one dimension, but gets %s", L->index, txt);
        PARAM(L, "weight", 1, in->dim[in->ndim - 1], 0, 0, 0);
        PARAM(L, "bias", 1, in->dim[in->ndim - 1], 0, 0, 0);
        L->flops = fl(8.0 * n);
        break;
    case PLAN_L_EMBEDDING: {
        if (in->dtype != PLAN_I32 || in->ndim != 1)
            SHAPE_ERR("layer %d (embedding) needs int32 token ids [T], but gets %s", L->index, txt);
        int64_t t = in->dim[0];
        if (L->positions > 0 && t > L->positions)
            SHAPE_ERR("layer %d (embedding): sequence length %lld is longer than positions = %lld", L->index,
                      (long long)t, (long long)L->positions);
        L->out.dtype = PLAN_F32;
        L->out.ndim = 2;
        L->out.dim[0] = t, L->out.dim[1] = L->dim;
        PARAM(L, "tokens.weight", 2, L->vocab, L->dim, 0, 0);
        if (L->positions > 0)
            PARAM(L, "positions.weight", 2, L->positions, L->dim, 0, 0);
        L->flops = L->positions > 0 ? fl((double)t * L->dim) : 0;
        break;
    }
    case PLAN_L_TRANSFORMER_BLOCK: {
        if (in->ndim != 2)
            SHAPE_ERR("layer %d (transformer_block) needs a [T, D] input, but gets %s", L->index, txt);
        int64_t t = in->dim[0], d = in->dim[1];
        if (d % L->heads != 0)
            SHAPE_ERR("layer %d (transformer_block): heads = %lld do not divide the width %lld", L->index,
                      (long long)L->heads, (long long)d);
        if (L->mlp == 0)
            L->mlp = 4 * d;
        if (check_mask(dl, m, L, t))
            return -1;
        if (L->mlp > PLAN_MAX_ELEMS / d)
            SHAPE_ERR("layer %d (transformer_block): mlp = %lld is too large", L->index, (long long)L->mlp);
        int64_t f = L->mlp;
        PARAM(L, "ln1.weight", 1, d, 0, 0, 0);
        PARAM(L, "ln1.bias", 1, d, 0, 0, 0);
        PARAM(L, "attn.qkv.weight", 2, 3 * d, d, 0, 0);
        PARAM(L, "attn.qkv.bias", 1, 3 * d, 0, 0, 0);
        PARAM(L, "attn.proj.weight", 2, d, d, 0, 0);
        PARAM(L, "attn.proj.bias", 1, d, 0, 0, 0);
        PARAM(L, "ln2.weight", 1, d, 0, 0, 0);
        PARAM(L, "ln2.bias", 1, d, 0, 0, 0);
        PARAM(L, "mlp.fc.weight", 2, f, d, 0, 0);
        PARAM(L, "mlp.fc.bias", 1, f, 0, 0, 0);
        PARAM(L, "mlp.proj.weight", 2, d, f, 0, 0);
        PARAM(L, "mlp.proj.bias", 1, d, 0, 0, 0);
        double T = (double)t, D = (double)d, F = (double)f, H = (double)L->heads;
        L->flops = fl(2 * 8 * T * D                   /* ln1, ln2 */
                   + 2 * T * D * 3 * D + 3 * T * D    /* qkv */
                   + 2 * T * T * D + 5 * H * T * T + 2 * T * T * D /* scores, softmax, context */
                   + 2 * T * D * D + T * D            /* proj */
                   + 2 * T * D * F + T * F + 4 * T * F /* fc, gelu */
                   + 2 * T * F * D + T * D            /* proj */
                   + 2 * T * D);                      /* residuals */
        break;
    }
    case PLAN_L_RMSNORM:
        if (in->ndim < 1)
            SHAPE_ERR("layer %d (rmsnorm) needs an input with at least one dimension, but gets %s", L->index, txt);
        PARAM(L, "weight", 1, in->dim[in->ndim - 1], 0, 0, 0);
        L->flops = fl(4.0 * n);
        break;
    case PLAN_L_LLAMA_BLOCK: {
        if (in->ndim != 2)
            SHAPE_ERR("layer %d (llama_block) needs a [T, D] input, but gets %s", L->index, txt);
        int64_t t = in->dim[0], d = in->dim[1];
        if (d % L->heads != 0)
            SHAPE_ERR("layer %d (llama_block): heads = %lld do not divide the width %lld", L->index,
                      (long long)L->heads, (long long)d);
        int64_t hd = d / L->heads, dk = hd * L->kv_heads;
        if (hd % 2 != 0)
            SHAPE_ERR("layer %d (llama_block): the head width %lld (width %lld / heads %lld) must be even for RoPE",
                      L->index, (long long)hd, (long long)d, (long long)L->heads);
        if (L->mlp == 0)
            L->mlp = pc_llama_mlp(d);
        if (check_mask(dl, m, L, t))
            return -1;
        if (L->mlp > PLAN_MAX_ELEMS / d)
            SHAPE_ERR("layer %d (llama_block): mlp = %lld is too large", L->index, (long long)L->mlp);
        int64_t f = L->mlp;
        PARAM(L, "self_attn.q_proj.weight", 2, d, d, 0, 0);
        PARAM(L, "self_attn.k_proj.weight", 2, dk, d, 0, 0);
        PARAM(L, "self_attn.v_proj.weight", 2, dk, d, 0, 0);
        PARAM(L, "self_attn.o_proj.weight", 2, d, d, 0, 0);
        PARAM(L, "mlp.gate_proj.weight", 2, f, d, 0, 0);
        PARAM(L, "mlp.up_proj.weight", 2, f, d, 0, 0);
        PARAM(L, "mlp.down_proj.weight", 2, d, f, 0, 0);
        PARAM(L, "input_layernorm.weight", 1, d, 0, 0, 0);
        PARAM(L, "post_attention_layernorm.weight", 1, d, 0, 0, 0);
        double T = (double)t, D = (double)d, Dk = (double)dk, F = (double)f, H = (double)L->heads;
        L->flops = fl(2 * 4 * T * D                              /* two RMSNorms */
                   + 2 * T * D * (D + 2 * Dk) + 3 * T * (D + Dk) /* q, k, v; RoPE on q and k */
                   + 2 * T * T * D + 5 * H * T * T + 2 * T * T * D /* scores, softmax, context */
                   + 2 * T * D * D                               /* o_proj */
                   + 4 * T * D * F + 5 * T * F                   /* gate, up; silu(gate) * up */
                   + 2 * T * F * D                               /* down_proj */
                   + 2 * T * D);                                 /* residuals */
        break;
    }
    case PLAN_L_BATCHNORM2D: {
        if (in->ndim != 3)
            SHAPE_ERR("layer %d (batchnorm2d) needs a [C, H, W] input, but gets %s", L->index, txt);
        PARAM(L, "weight", 1, in->dim[0], 0, 0, 0);
        PARAM(L, "bias", 1, in->dim[0], 0, 0, 0);
        L->flops = fl(8.0 * n);
        break;
    }
    case PLAN_L_RESHAPE: {
        int64_t known = 1, at = -1;
        for (int k = 0; k < L->shape_n; k++) {
            if (L->shape[k] == -1)
                at = k;
            else if (L->shape[k] > PLAN_MAX_ELEMS / known)
                SHAPE_ERR("layer %d (reshape): the shape is too large", L->index);
            else
                known *= L->shape[k];
        }
        if ((at < 0 && known != n) || (at >= 0 && n % known != 0)) {
            char want[96];
            size_t k = (size_t)snprintf(want, sizeof want, "[");
            for (int d = 0; d < L->shape_n && k < sizeof want; d++)
                k += (size_t)snprintf(want + k, sizeof want - k, "%s%lld", d ? ", " : "", (long long)L->shape[d]);
            if (k < sizeof want)
                snprintf(want + k, sizeof want - k, "]");
            SHAPE_ERR("layer %d (reshape): %s cannot hold the %lld elements of %s", L->index, want, (long long)n, txt);
        }
        L->out.ndim = L->shape_n;
        for (int k = 0; k < L->shape_n; k++)
            L->out.dim[k] = L->shape[k] == -1 ? n / known : L->shape[k];
        break;
    }
    case PLAN_L_TRANSPOSE: {
        int64_t nd = in->ndim;
        if (nd < 2)
            SHAPE_ERR("layer %d (transpose) needs an input with at least 2 dimensions, but gets %s", L->index, txt);
        if (L->axis_a < -nd || L->axis_a >= nd || L->axis_b < -nd || L->axis_b >= nd)
            SHAPE_ERR("layer %d (transpose): dimensions %lld and %lld of %s: a sample's dimensions are 0 to %lld "
                      "(or -%lld to -1; the batch dimension does not count)", L->index, (long long)L->axis_a,
                      (long long)L->axis_b, txt, (long long)(nd - 1), (long long)nd);
        L->axis_a = L->axis_a < 0 ? L->axis_a + nd : L->axis_a;
        L->axis_b = L->axis_b < 0 ? L->axis_b + nd : L->axis_b;
        L->out.dim[L->axis_a] = in->dim[L->axis_b];
        L->out.dim[L->axis_b] = in->dim[L->axis_a];
        break;
    }
    case PLAN_L_RESIDUAL:
        if (infer_residual(dl, m, L, in) != 0)
            return -1;
        break;
    case PLAN_L_COUNT:
        break;
    }
    if (plan_layer_buffers(L) != 0)
        SHAPE_ERR("layer %d (residual): its layers hold more than %d buffers (batchnorm2d has 3); split it into two "
                  "blocks", L->index, PLAN_MAX_BUFFERS);
    if (!sane(&L->out))
        SHAPE_ERR("layer %d (%s): output shape is too large or empty", L->index, name);
    L->held = L->params;
    L->act_bytes = plan_tensor_elems(&L->out) * plan_dtype_size(L->out.dtype);
    return 0;
}

static int same_shape(const PlanTensor *a, const PlanTensor *b)
{
    if (a->dtype != b->dtype || a->ndim != b->ndim)
        return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->dim[i] != b->dim[i])
            return 0;
    return 1;
}

/* A residual block: its body's shapes from its input, the shortcut's too;
 * the body's output must be shaped as the input (or the shortcut's
 * output), which the block adds to it. Its parameters are its sub-layers',
 * in order, named body.j.NAME and shortcut.j.NAME (j counting every
 * statement of the body, or of the shortcut, from 0). */
static int infer_residual(DiagList *dl, PlanModel *m, PlanLayer *L, const PlanTensor *in)
{
    const PlanTensor *cur = in;
    int64_t flops = 0;
    for (int j = 0; j < L->nbody; j++) {
        if (infer(dl, m, &L->sub[j], cur) != 0)
            return -1;
        cur = &L->sub[j].out;
        flops += L->sub[j].flops;
    }
    const PlanTensor *body = cur, *want = in;
    if (L->nshort > 0) {
        cur = in;
        for (int j = L->nbody; j < L->nbody + L->nshort; j++) {
            if (infer(dl, m, &L->sub[j], cur) != 0)
                return -1;
            cur = &L->sub[j].out;
            flops += L->sub[j].flops;
        }
        want = cur;
    }
    if (!same_shape(body, want)) {
        char bt[96], wt[96];
        plan_tensor_text(body, 0, bt, sizeof bt);
        plan_tensor_text(want, 0, wt, sizeof wt);
        const PlanLayer *last = &L->sub[L->nbody - 1];
        if (L->nshort > 0)
            SHAPE_ERR("layer %d (residual): the body's output %s (body.%d, line %d) must have the shape of the "
                      "shortcut's output %s, to be added to it",
                      L->index, bt, L->nbody - 1, last->loc.line, wt);
        SHAPE_ERR("layer %d (residual): the body's output %s (body.%d, line %d) must have the shape of the block's "
                  "input %s, to be added to it; a shortcut { ... } can bring the input to the body's shape",
                  L->index, bt, L->nbody - 1, last->loc.line, wt);
    }
    L->out = *body;
    for (int j = 0; j < L->nbody + L->nshort; j++) {
        const PlanLayer *S = &L->sub[j];
        char prefix[24];
        plan_sub_prefix(L, j, prefix, sizeof prefix);
        for (int k = 0; k < S->nparams; k++) {
            const PlanParam *q = &S->param[k];
            char name[64];
            snprintf(name, sizeof name, "%s%s", prefix, q->name);
            if (L->nparams == PLAN_MAX_PARAM_TENSORS || strlen(name) >= sizeof L->param[0].name)
                SHAPE_ERR("layer %d (residual): its layers hold more than %d parameter tensors; split it into two "
                          "blocks", L->index, PLAN_MAX_PARAM_TENSORS);
            PARAM(L, name, q->ndim, q->dim[0], q->dim[1], q->dim[2], q->dim[3]);
        }
    }
    L->flops = fl((double)flops + (double)plan_tensor_elems(&L->out)); /* and the addition */
    return 0;
}

/* Shares a tied linear's weight with the labelled embedding or linear. */
static int resolve_tie(DiagList *dl, PlanModel *m, PlanLayer *L)
{
    int t = find_label(m, L->tie_label);
    if (t < 0) {
        const char *names[64];
        int n = 0;
        for (int i = 0; i < m->nlayers && n < 63; i++)
            if (m->layer[i].label)
                names[n++] = m->layer[i].label;
        names[n] = NULL;
        const char *near = diag_nearest(L->tie_label, names);
        if (near)
            diag_error(dl, L->tie_loc, "unknown tie label '%s'; did you mean '%s'?", L->tie_label, near);
        else
            diag_error(dl, L->tie_loc, "unknown tie label '%s' (name a layer with 'as %s')", L->tie_label, L->tie_label);
        return -1;
    }
    const PlanLayer *T = &m->layer[t];
    if (t == L->index) {
        diag_error(dl, L->tie_loc, "layer %d cannot tie its weight to itself", L->index);
        return -1;
    }
    /* a vocabulary-parallel pair: the embedding's rows and the head's
     * output features are the same vocabulary, cut the same way */
    int pair = T->kind == PLAN_L_EMBEDDING && T->split == PLAN_EMBEDDING_VOCAB && L->split == PLAN_LINEAR_COLUMN;
    if (T->kind == PLAN_L_LINEAR && plan_layer_split(T)) {
        diag_error(dl, L->tie_loc, "tie = %s: layer %d is split (split = %s), and a split linear's weight cannot be "
                   "shared", L->tie_label, t, plan_linear_split_names[T->split]);
        return -1;
    }
    if (plan_layer_split(T) && !pair) {
        diag_error(dl, L->tie_loc, "tie = %s: layer %d is split (split = vocab): a linear tied to it must be split = "
                   "column (its weight's rows are the vocabulary)", L->tie_label, t);
        return -1;
    }
    if (L->split != PLAN_LINEAR_WHOLE && !pair) {
        diag_error(dl, L->tie_loc, "tie = %s: a split = column linear ties only to an embedding with split = vocab "
                   "(layer %d is not split)", L->tie_label, t);
        return -1;
    }
    if (!(T->kind == PLAN_L_EMBEDDING || (T->kind == PLAN_L_LINEAR && !T->tie_label))) {
        diag_error(dl, L->tie_loc, "tie = %s: layer %d (%s) has no weight to share (tie to an embedding or an untied linear)",
                   L->tie_label, t, plan_layer_names[T->kind]);
        return -1;
    }
    const PlanParam *w = &T->param[0];
    int64_t fin = L->in.dim[L->in.ndim - 1];
    if (w->dim[0] != L->nout || w->dim[1] != fin) {
        diag_error(dl, L->tie_loc,
                   "tie = %s: layer %d's weight is [%lld, %lld] but %s's (layer %d) is [%lld, %lld]", L->tie_label,
                   L->index, (long long)L->nout, (long long)fin, L->tie_label, t, (long long)w->dim[0],
                   (long long)w->dim[1]);
        return -1;
    }
    L->tie = t;
    L->held = L->params + w->count;
    return 0;
}

/* ---- the model ------------------------------------------------------- */

static int declare_io(DiagList *dl, PlanModel *m, const AstStmt *s)
{
    int is_input = s->kind == AST_INPUT;
    PlanIO *list = is_input ? m->input : m->target;
    int *n = is_input ? &m->ninputs : &m->ntargets;
    for (int i = 0; i < m->ninputs; i++)
        if (strcmp(m->input[i].name, s->name) == 0) {
            diag_error(dl, s->name_loc, "'%s' is already declared as an input", s->name);
            return -1;
        }
    for (int i = 0; i < m->ntargets; i++)
        if (strcmp(m->target[i].name, s->name) == 0) {
            diag_error(dl, s->name_loc, "'%s' is already declared as a target", s->name);
            return -1;
        }
    if (*n == PLAN_MAX_IO) {
        diag_error(dl, s->loc, "too many %ss (limit %d)", is_input ? "input" : "target", PLAN_MAX_IO);
        return -1;
    }
    PlanIO *io = &list[*n];
    memset(io, 0, sizeof *io);
    io->name = s->name;
    io->loc = s->name_loc;
    io->first_use = io->last_use = -1;
    if (strcmp(s->dtype, "float32") == 0)
        io->t.dtype = PLAN_F32;
    else if (strcmp(s->dtype, "int32") == 0)
        io->t.dtype = PLAN_I32;
    else {
        static const char *const dts[] = {"float32", "int32", NULL};
        const char *near = diag_nearest(s->dtype, dts);
        diag_error(dl, s->dtype_loc, "unknown dtype '%s'%s%s%s (float32 or int32)", s->dtype, near ? "; did you mean '" : "",
                   near ? near : "", near ? "'?" : "");
        return -1;
    }
    if (s->dims.n > PLAN_MAX_DIMS) {
        diag_error(dl, s->dtype_loc, "'%s' has %d dimensions; at most %d are supported", s->name, s->dims.n, PLAN_MAX_DIMS);
        return -1;
    }
    for (const AstArg *d = s->dims.head; d; d = d->next) {
        if (d->value->kind != AST_INT || d->value->i < 1) {
            char txt[64];
            pc_value_text(d->value, txt, sizeof txt);
            diag_error(dl, d->value->loc, "a dimension must be a positive integer, not '%s'", txt);
            return -1;
        }
        io->t.dim[io->t.ndim++] = d->value->i;
    }
    if (!sane(&io->t)) {
        diag_error(dl, s->dtype_loc, "'%s' is too large (more than 2^40 elements)", s->name);
        return -1;
    }
    (*n)++;
    return 0;
}

static int check_loss(DiagList *dl, PlanModel *m, const PlanTensor *out)
{
    if (m->ntargets == 0) {
        diag_error(dl, m->loss_loc, "loss %s needs a target: declare one with 'target NAME: int32[...]'",
                   plan_loss_names[m->loss]);
        return -1;
    }
    if (m->ntargets > 1) {
        diag_error(dl, m->target[1].loc, "a model takes one target; '%s' is a second", m->target[1].name);
        return -1;
    }
    const PlanTensor *t = &m->target[0].t;
    char ot[96], tt[96];
    plan_tensor_text(out, 1, ot, sizeof ot);
    plan_tensor_text(t, 1, tt, sizeof tt);
    if (m->loss == PLAN_LOSS_CROSS_ENTROPY) {
        int ok = t->dtype == PLAN_I32 && out->dtype == PLAN_F32 && out->ndim == t->ndim + 1;
        for (int i = 0; ok && i < t->ndim; i++)
            ok = t->dim[i] == out->dim[i];
        if (!ok) {
            diag_error(dl, m->loss_loc,
                       "loss cross_entropy: the model's output %s needs an int32 target of its shape without the "
                       "class dimension, but target '%s' is %s",
                       ot, m->target[0].name, tt);
            return -1;
        }
    } else {
        int ok = t->dtype == PLAN_F32 && t->ndim == out->ndim;
        for (int i = 0; ok && i < t->ndim; i++)
            ok = t->dim[i] == out->dim[i];
        if (!ok) {
            diag_error(dl, m->loss_loc, "loss mse: the model's output %s needs a float32 target of the same shape, "
                       "but target '%s' is %s", ot, m->target[0].name, tt);
            return -1;
        }
    }
    return 0;
}

/* A layer's own init = ... wins; the model's fills the layers with weights
 * that have none. GPT-2's residual scaling counts the model's blocks. A
 * layer without weights cannot take one. */
static int apply_init(DiagList *dl, PlanModel *m, PlanInit init, double std, SrcLoc at)
{
    int blocks = 0;
    for (int i = 0; i < m->nlayers; i++)
        blocks += m->layer[i].kind == PLAN_L_TRANSFORMER_BLOCK || m->layer[i].kind == PLAN_L_LLAMA_BLOCK;
    for (int i = 0; i < m->nlayers; i++) {
        PlanLayer *L = &m->layer[i];
        /* a residual block's layers each take their own init, or the
         * model's; the block itself keeps the default (rt_setup.c's
         * init_residual asks its layers) */
        int n = L->kind == PLAN_L_RESIDUAL ? L->nbody + L->nshort : 1;
        for (int j = 0; j < n; j++) {
            PlanLayer *S = L->kind == PLAN_L_RESIDUAL ? &L->sub[j] : L;
            int weights = S->nparams > 0 || S->tie >= 0;
            if (S->init != PLAN_INIT_DEFAULT && !weights) {
                if (S->sub_pos)
                    diag_error(dl, S->init_loc, "layer %d (residual): its %s%d (%s) has no weights to initialise", i,
                               j < L->nbody ? "body." : "shortcut.", j < L->nbody ? j : j - L->nbody,
                               plan_layer_names[S->kind]);
                else
                    diag_error(dl, S->init_loc, "layer %d (%s) has no weights to initialise", i,
                               plan_layer_names[S->kind]);
                return -1;
            }
            if (S->init == PLAN_INIT_DEFAULT && S->init_loc.line == 0 && weights && init != PLAN_INIT_DEFAULT)
                S->init = init, S->init_std = std;
            if (S->init == PLAN_INIT_GPT2)
                S->init_std_resid = std / sqrt(2.0 * (blocks > 0 ? blocks : 1));
        }
    }
    (void)at;
    return 0;
}

int pc_model_build(DiagList *dl, const AstBlock *block, PlanModel *m)
{
    memset(m, 0, sizeof *m);
    m->name = block->name;
    m->loc = block->loc;
    m->loss = PLAN_LOSS_COUNT;
    int errors = check_structure(dl, block->stmts, 0);
    PlanInit init = PLAN_INIT_DEFAULT;
    double init_std = 0;
    SrcLoc init_at = block->loc;
    errors += model_settings(dl, block->stmts, &init, &init_std, &init_at) != 0;
    const AstStmt *loss = NULL;
    for (const AstStmt *s = block->stmts; s; s = s->next) {
        if (loss && s->kind != AST_INPUT && s->kind != AST_TARGET && s->kind != AST_ASSIGN) {
            diag_error(dl, s->loc, "nothing but input and target declarations may follow the loss");
            errors++;
            break;
        }
        if (s->kind == AST_INPUT || s->kind == AST_TARGET)
            errors += declare_io(dl, m, s) != 0;
        else if (s->kind == AST_LOSS) {
            loss = s;
            m->loss_loc = s->name_loc;
            for (int k = 0; k < PLAN_LOSS_COUNT; k++)
                if (strcmp(plan_loss_names[k], s->name) == 0)
                    m->loss = (PlanLossKind)k;
            if (m->loss == PLAN_LOSS_COUNT) {
                const char *near = diag_nearest(s->name, plan_loss_names);
                if (near)
                    diag_error(dl, s->name_loc, "unknown loss '%s'; did you mean '%s'?", s->name, near);
                else
                    diag_error(dl, s->name_loc, "unknown loss '%s' (cross_entropy or mse)", s->name);
                errors++;
            }
        }
    }
    if (errors)
        return -1;
    if (m->ninputs == 0) {
        diag_error(dl, block->loc, "model '%s' has no input: declare one with 'input NAME: float32[...]'", m->name);
        return -1;
    }
    int64_t total = count_layers(block->stmts);
    if (total > PLAN_MAX_LAYERS) {
        diag_error(dl, block->loc, "model '%s' has too many layers (more than %d after expanding repeat)", m->name,
                   PLAN_MAX_LAYERS);
        return -1;
    }
    if (total == 0) {
        diag_error(dl, block->loc, "model '%s' has no layers", m->name);
        return -1;
    }
    Builder b = {.dl = dl, .m = m};
    expand(&b, block->stmts, 0);
    m->nlayers = b.n;
    m->layer = calloc(b.n, sizeof *m->layer);
    if (!m->layer) {
        fputs("pipe: out of memory\n", stderr);
        exit(2);
    }
    for (int i = 0; i < b.n && !diag_full(dl); i++)
        errors += bind_layer(&b, i) != 0;
    free(b.stmt);
    free(b.bad);
    if (errors)
        return -1;
    if (!loss) {
        diag_error(dl, block->loc, "model '%s' has no loss: end it with 'loss cross_entropy' or 'loss mse'", m->name);
        return -1;
    }
    for (int i = 0; i < m->nlayers; i++) {
        const char *lab = m->layer[i].label;
        if (!lab)
            continue;
        int first = find_label(m, lab);
        if (first != i) {
            diag_error(dl, m->layer[i].loc, "label '%s' is already used by layer %d%s", lab, first,
                       m->layer[i].loc.line == m->layer[first].loc.line ? " (a label inside repeat names one layer)" : "");
            return -1;
        }
    }
    const PlanTensor *cur = &m->input[0].t;
    for (int i = 0; i < m->nlayers; i++) {
        if (infer(dl, m, &m->layer[i], cur) != 0)
            return -1;
        cur = &m->layer[i].out;
    }
    for (int i = 0; i < m->nlayers; i++)
        if (m->layer[i].tie_label && resolve_tie(dl, m, &m->layer[i]) != 0)
            return -1;
    if (check_loss(dl, m, cur) != 0)
        return -1;
    if (apply_init(dl, m, init, init_std, init_at) != 0)
        return -1;
    m->input[0].first_use = 0;
    m->input[0].last_use = 0;
    for (int i = 0; i < m->nlayers; i++) {
        const PlanLayer *L = &m->layer[i];
        if (L->mask >= 0) {
            PlanIO *io = &m->input[L->mask];
            if (io->first_use < 0)
                io->first_use = i;
            io->last_use = i;
        }
        m->total_params += L->params;
        m->total_flops += L->flops;
    }
    for (int i = 1; i < m->ninputs; i++)
        if (m->input[i].first_use < 0)
            diag_warning(dl, m->input[i].loc, "input '%s' is declared but no layer uses it", m->input[i].name);
    return 0;
}
