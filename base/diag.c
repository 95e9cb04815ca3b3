/* base/diag.c: diagnostics, with the offending line and a caret. */
#include "diag.h"
#include "base_alloc.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

void diag_init(DiagList *dl)
{
    memset(dl, 0, sizeof *dl);
    dl->max_errors = 20;
}

void diag_free(DiagList *dl)
{
    for (int i = 0; i < dl->nsrc; i++) {
        free(dl->src[i].name);
        free(dl->src[i].text);
    }
    for (int i = 0; i < dl->n; i++)
        free(dl->d[i].msg);
    free(dl->src);
    free(dl->d);
    memset(dl, 0, sizeof *dl);
}

int diag_add_source(DiagList *dl, const char *name, const char *text, size_t len)
{
    if (dl->nsrc == dl->capsrc) {
        dl->capsrc = dl->capsrc ? 2 * dl->capsrc : 4;
        dl->src = base_realloc(dl->src, dl->capsrc * sizeof *dl->src);
    }
    DiagSource *s = &dl->src[dl->nsrc];
    s->name = base_realloc(NULL, strlen(name) + 1);
    strcpy(s->name, name);
    s->text = base_realloc(NULL, len + 1);
    memcpy(s->text, text, len);
    s->text[len] = '\0';
    s->len = len;
    return dl->nsrc++;
}

int diag_full(const DiagList *dl)
{
    return dl->max_errors > 0 && dl->nerrors >= dl->max_errors;
}

void diag_vreport(DiagList *dl, DiagLevel level, SrcLoc loc, const char *fmt, va_list ap)
{
    if (level == DIAG_ERROR && diag_full(dl))
        return;
    if (dl->n == dl->cap) {
        dl->cap = dl->cap ? 2 * dl->cap : 8;
        dl->d = base_realloc(dl->d, dl->cap * sizeof *dl->d);
    }
    char buf[1024];
    vsnprintf(buf, sizeof buf, fmt, ap);
    Diag *d = &dl->d[dl->n++];
    d->level = level;
    d->loc = loc;
    d->msg = base_realloc(NULL, strlen(buf) + 1);
    strcpy(d->msg, buf);
    if (level == DIAG_ERROR)
        dl->nerrors++;
}

void diag_report(DiagList *dl, DiagLevel level, SrcLoc loc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    diag_vreport(dl, level, loc, fmt, ap);
    va_end(ap);
}

static const char *level_name(DiagLevel l)
{
    return l == DIAG_ERROR ? "error" : l == DIAG_WARNING ? "warning" : "note";
}

void diag_format(const DiagList *dl, const Diag *d, char *buf, size_t size)
{
    const char *name = (d->loc.file >= 0 && d->loc.file < dl->nsrc) ? dl->src[d->loc.file].name : "pipec";
    if (d->loc.line > 0)
        snprintf(buf, size, "%s:%d:%d: %s: %s", name, d->loc.line, d->loc.col, level_name(d->level), d->msg);
    else
        snprintf(buf, size, "%s: %s: %s", name, level_name(d->level), d->msg);
}

/* Prints the source line of loc and a caret under its column. A very long
 * line is shown as a window of about 100 bytes around the column, so one
 * megabyte on one line does not flood the terminal. */
static void print_line(const DiagSource *s, SrcLoc loc, FILE *out)
{
    const char *p = s->text, *end = s->text + s->len;
    for (int line = 1; line < loc.line && p < end; p++)
        if (*p == '\n')
            line++;
    const char *e = p;
    while (e < end && *e != '\n')
        e++;
    long len = e - p, col = loc.col - 1;
    if (col < 0)
        col = 0;
    if (col > len)
        col = len;
    long from = 0, to = len;
    if (len > 100) {
        from = col > 60 ? col - 60 : 0;
        to = from + 100 < len ? from + 100 : len;
    }
    fputs("    ", out);
    if (from > 0)
        fputs("...", out);
    for (long i = from; i < to; i++) {
        unsigned char c = (unsigned char)p[i];
        fputc(c == '\t' ? '\t' : (isprint(c) ? c : '?'), out);
    }
    if (to < len)
        fputs("...", out);
    fputs("\n    ", out);
    if (from > 0)
        fputs("   ", out);
    for (long i = from; i < col; i++)
        fputc(p[i] == '\t' ? '\t' : ' ', out);
    fputs("^\n", out);
}

void diag_print(const DiagList *dl, FILE *out)
{
    char buf[1400];
    for (int i = 0; i < dl->n; i++) {
        const Diag *d = &dl->d[i];
        diag_format(dl, d, buf, sizeof buf);
        fprintf(out, "%s\n", buf);
        if (d->loc.line > 0 && d->loc.file >= 0 && d->loc.file < dl->nsrc && dl->src[d->loc.file].len > 0)
            print_line(&dl->src[d->loc.file], d->loc, out);
    }
}

int diag_edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return 1000;
    int row[65];
    for (size_t j = 0; j <= lb; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int prev = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int cur = row[j];
            int sub = prev + (tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]));
            int best = sub;
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            prev = cur;
        }
    }
    return row[lb];
}

const char *diag_nearest(const char *word, const char *const *candidates)
{
    const char *best = NULL;
    int bestd = 1000;
    for (const char *const *c = candidates; *c; c++) {
        int d = diag_edit_distance(word, *c);
        if (d < bestd) {
            bestd = d;
            best = *c;
        }
    }
    /* a plausible typo: at most a third of the word wrong, and at least 1 */
    int allowed = (int)strlen(word) / 3;
    if (allowed < 2)
        allowed = 2;
    return bestd <= allowed ? best : NULL;
}
