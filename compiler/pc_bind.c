/* compiler/pc_bind.c: argument binding against .def signatures. */
#include "pc_bind.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *type_name(PcArgType t)
{
    switch (t) {
    case PC_T_INT: return "an integer";
    case PC_T_NUM: return "a number";
    case PC_T_BOOL: return "true or false";
    case PC_T_STR: return "a string";
    case PC_T_WORD: return "a name";
    case PC_T_INTS: return "an integer or a pair (h, w)";
    case PC_T_PAIR: return "a pair of numbers (a, b)";
    }
    return "?";
}

void pc_value_text(const AstValue *v, char *buf, size_t size)
{
    if (!v || size == 0) {
        if (size)
            buf[0] = '\0';
        return;
    }
    switch (v->kind) {
    case AST_INT:
        if (v->text)
            snprintf(buf, size, "%.40s", v->text);
        else
            snprintf(buf, size, "%lld", (long long)v->i);
        return;
    case AST_FLOAT:
        if (v->text)
            snprintf(buf, size, "%.40s", v->text);
        else
            snprintf(buf, size, "%g", v->f);
        return;
    case AST_STRING: snprintf(buf, size, "\"%.40s\"", v->s); return;
    case AST_WORD: snprintf(buf, size, "%.40s", v->s); return;
    case AST_TUPLE: snprintf(buf, size, "(...)"); return;
    case AST_LIST: snprintf(buf, size, "[...]"); return;
    case AST_CALL: snprintf(buf, size, "%.40s(...)", v->s); return;
    case AST_SIZE: snprintf(buf, size, "%.40s", v->text); return;
    }
    buf[0] = '\0';
}

/* Fills a from a parsed value; returns 0, or -1 when the value has the wrong
 * type (the caller reports). */
static int take(PcArg *a, const AstValue *v)
{
    switch (a->type) {
    case PC_T_INT:
        if (v->kind != AST_INT)
            return -1;
        a->i[0] = a->i[1] = v->i;
        a->f[0] = a->f[1] = (double)v->i;
        return 0;
    case PC_T_NUM:
        if (v->kind == AST_INT)
            a->f[0] = a->f[1] = (double)v->i;
        else if (v->kind == AST_FLOAT)
            a->f[0] = a->f[1] = v->f;
        else
            return -1;
        return 0;
    case PC_T_BOOL:
        if (v->kind != AST_WORD || (strcmp(v->s, "true") != 0 && strcmp(v->s, "false") != 0))
            return -1;
        a->i[0] = a->i[1] = v->s[0] == 't';
        return 0;
    case PC_T_STR:
        if (v->kind != AST_STRING)
            return -1;
        a->s = v->s;
        return 0;
    case PC_T_WORD:
        if (v->kind != AST_WORD)
            return -1;
        a->s = v->s;
        return 0;
    case PC_T_INTS:
        if (v->kind == AST_INT) {
            a->i[0] = a->i[1] = v->i;
            return 0;
        }
        if (v->kind != AST_TUPLE || v->items.n != 2 || v->items.head->value->kind != AST_INT ||
            v->items.head->next->value->kind != AST_INT)
            return -1;
        a->i[0] = v->items.head->value->i;
        a->i[1] = v->items.head->next->value->i;
        return 0;
    case PC_T_PAIR: {
        if (v->kind != AST_TUPLE || v->items.n != 2)
            return -1;
        const AstArg *it = v->items.head;
        for (int k = 0; k < 2; k++, it = it->next) {
            const AstValue *x = it->value;
            if (x->kind == AST_INT)
                a->f[k] = (double)x->i;
            else if (x->kind == AST_FLOAT)
                a->f[k] = x->f;
            else
                return -1;
        }
        return 0;
    }
    }
    return -1;
}

/* Parses a default written in a signature: 1, 0.5, 1e-5, true, (0.9,0.999). */
static int take_default(PcArg *a, const char *text)
{
    switch (a->type) {
    case PC_T_INT:
    case PC_T_INTS:
        a->i[0] = a->i[1] = strtoll(text, NULL, 10);
        a->f[0] = a->f[1] = (double)a->i[0];
        return 0;
    case PC_T_NUM:
        a->f[0] = a->f[1] = strtod(text, NULL);
        return 0;
    case PC_T_BOOL:
        a->i[0] = a->i[1] = strcmp(text, "true") == 0;
        return 0;
    case PC_T_PAIR:
        if (sscanf(text, "(%lf,%lf)", &a->f[0], &a->f[1]) != 2)
            return -1;
        return 0;
    case PC_T_STR:
    case PC_T_WORD:
        return -1; /* no literal defaults for these: use =? */
    }
    return -1;
}

int pc_sig_parse(const char *sig, PcArgs *out)
{
    memset(out, 0, sizeof *out);
    const char *p = sig;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        if (out->n == PC_MAX_ARGS)
            return -1;
        PcArg *a = &out->a[out->n++];
        const char *colon = strchr(p, ':');
        if (!colon || colon - p >= (long)sizeof a->name)
            return -1;
        memcpy(a->name, p, colon - p);
        p = colon + 1;
        const char *end = p;
        while (*end && *end != ' ' && *end != '=')
            end++;
        static const struct { const char *n; PcArgType t; } types[] = {
            {"int", PC_T_INT}, {"num", PC_T_NUM}, {"bool", PC_T_BOOL}, {"str", PC_T_STR},
            {"word", PC_T_WORD}, {"ints", PC_T_INTS}, {"pair", PC_T_PAIR},
        };
        int found = 0;
        for (size_t k = 0; k < sizeof types / sizeof types[0]; k++)
            if ((size_t)(end - p) == strlen(types[k].n) && strncmp(p, types[k].n, end - p) == 0) {
                a->type = types[k].t;
                found = 1;
            }
        if (!found)
            return -1;
        p = end;
        a->required = 1;
        if (*p == '=') {
            a->required = 0;
            p++;
            char def[32];
            size_t n = 0;
            while (*p && *p != ' ' && n < sizeof def - 1)
                def[n++] = *p++;
            def[n] = '\0';
            if (strcmp(def, "?") != 0) {
                if (take_default(a, def) != 0)
                    return -1;
                a->set = 1;
            }
        }
    }
    return 0;
}

int pc_bind(DiagList *dl, const char *what, const char *sig, const AstArgList *args, SrcLoc call, PcArgs *out)
{
    if (pc_sig_parse(sig, out) != 0) {
        diag_error(dl, call, "internal error: bad signature for '%s'", what);
        return -1;
    }
    for (int k = 0; k < out->n; k++)
        out->a[k].loc = call;
    int errors = 0, pos = 0, named_seen = 0;
    for (const AstArg *g = args ? args->head : NULL; g; g = g->next) {
        PcArg *a = NULL;
        if (g->name) {
            named_seen = 1;
            for (int k = 0; k < out->n; k++)
                if (strcmp(out->a[k].name, g->name) == 0)
                    a = &out->a[k];
            if (!a) {
                const char *names[PC_MAX_ARGS + 1];
                for (int k = 0; k < out->n; k++)
                    names[k] = out->a[k].name;
                names[out->n] = NULL;
                const char *near = diag_nearest(g->name, names);
                if (out->n == 0)
                    diag_error(dl, g->loc, "'%s' takes no arguments", what);
                else if (near)
                    diag_error(dl, g->loc, "unknown argument '%s' for '%s'; did you mean '%s'?", g->name, what, near);
                else
                    diag_error(dl, g->loc, "unknown argument '%s' for '%s'", g->name, what);
                errors++;
                continue;
            }
        } else {
            if (named_seen) {
                diag_error(dl, g->loc, "positional argument after a named one in '%s'", what);
                errors++;
                continue;
            }
            if (pos >= out->n) {
                if (out->n == 0)
                    diag_error(dl, g->loc, "'%s' takes no arguments", what);
                else
                    diag_error(dl, g->loc, "too many arguments for '%s' (it takes %d)", what, out->n);
                errors++;
                pos++;
                continue;
            }
            a = &out->a[pos++];
        }
        if (a->written) {
            diag_error(dl, g->loc, "argument '%s' of '%s' given twice", a->name, what);
            errors++;
            continue;
        }
        a->written = 1;
        a->loc = g->value->loc;
        if (take(a, g->value) != 0) {
            char txt[64];
            pc_value_text(g->value, txt, sizeof txt);
            diag_error(dl, g->value->loc, "argument '%s' of '%s' must be %s, not %s '%s'", a->name, what,
                       type_name(a->type), ast_value_kind_name(g->value->kind), txt);
            errors++;
            continue;
        }
        a->set = 1;
    }
    for (int k = 0; k < out->n; k++)
        if (out->a[k].required && !out->a[k].written) {
            diag_error(dl, call, "'%s' needs argument '%s' (%s)", what, out->a[k].name, type_name(out->a[k].type));
            errors++;
        }
    return errors ? -1 : 0;
}

const PcArg *pc_arg(const PcArgs *b, const char *name)
{
    for (int k = 0; k < b->n; k++)
        if (strcmp(b->a[k].name, name) == 0)
            return &b->a[k];
    fprintf(stderr, "pipe: internal error: no argument '%s' in signature\n", name);
    abort();
}
