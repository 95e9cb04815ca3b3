/* base/diag.h: source files and the diagnostics collected against them.
 *
 * The compiler's error regime (docs/dsl.md, "Errors and limits"): nothing
 * prints or exits in the middle of the front end. Each phase appends
 * diagnostics to one DiagList and returns; the driver prints them all, in
 * order, as
 *     FILE:LINE:COL: error: MESSAGE
 *       the offending line
 *            ^
 * and picks the exit status. A DiagList owns copies of every source text it
 * has been given, so a location can always be printed with its line. */
#ifndef PIPE_DIAG_H
#define PIPE_DIAG_H

#include <stdarg.h>
#include <stdio.h>

/* A place in a source: file is an index into the DiagList's sources. Lines
 * and columns count from 1; line 0 means "the file as a whole". */
typedef struct SrcLoc {
    int file;
    int line;
    int col;
} SrcLoc;

typedef enum DiagLevel { DIAG_ERROR, DIAG_WARNING, DIAG_NOTE } DiagLevel;

typedef struct Diag {
    DiagLevel level;
    SrcLoc loc;
    char *msg;
} Diag;

typedef struct DiagSource {
    char *name;   /* as the user wrote it, or "<-D key>" */
    char *text;   /* whole contents, NUL-terminated (may hold inner NULs) */
    size_t len;
} DiagSource;

typedef struct DiagList {
    DiagSource *src;
    int nsrc, capsrc;
    Diag *d;
    int n, cap;
    int nerrors;
    int max_errors;   /* stop collecting after this many (0: no limit) */
} DiagList;

void diag_init(DiagList *dl);
void diag_free(DiagList *dl);
/* Registers a source; takes a copy of text. Returns its index. */
int diag_add_source(DiagList *dl, const char *name, const char *text, size_t len);
void diag_report(DiagList *dl, DiagLevel level, SrcLoc loc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void diag_vreport(DiagList *dl, DiagLevel level, SrcLoc loc, const char *fmt, va_list ap);
#define diag_error(dl, loc, ...) diag_report((dl), DIAG_ERROR, (loc), __VA_ARGS__)
#define diag_warning(dl, loc, ...) diag_report((dl), DIAG_WARNING, (loc), __VA_ARGS__)
#define diag_note(dl, loc, ...) diag_report((dl), DIAG_NOTE, (loc), __VA_ARGS__)
/* True once the error limit is reached: phases may stop early. */
int diag_full(const DiagList *dl);
/* Prints every diagnostic, each with its source line and a caret. */
void diag_print(const DiagList *dl, FILE *out);
/* Formats one diagnostic's first line into buf (for tests). */
void diag_format(const DiagList *dl, const Diag *d, char *buf, size_t size);

/* Levenshtein distance, for "did you mean" hints. */
int diag_edit_distance(const char *a, const char *b);
/* The candidate nearest to word (NULL-terminated list), or NULL when none is
 * close enough to be a plausible typo. */
const char *diag_nearest(const char *word, const char *const *candidates);

#endif
