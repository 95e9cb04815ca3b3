/* schedules/text.c: text schedules, read and written.
 *
 * The same format goes both ways: `pipec --emit sched` prints any built-in
 * schedule in it, a user edits it, and `schedule = file("x.sched")` reads it
 * back. Reading checks only the syntax and ranges it can see here (stage
 * and chunk numbers); lowering and the verifier check the order, and their
 * messages carry the line numbers kept in each action. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "sched.h"

typedef struct Rd {
    DiagList *dl;
    int src;
    const char *p, *end, *line_start;
    int line;
} Rd;

static SrcLoc here(const Rd *r, const char *at)
{
    return (SrcLoc){r->src, r->line, (int)(at - r->line_start) + 1};
}

static void skip_space(Rd *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\r'))
        r->p++;
}

static int at_eol(Rd *r)
{
    skip_space(r);
    return r->p >= r->end || *r->p == '\n' || *r->p == '#';
}

static int read_int(Rd *r, long *v, long max)
{
    const char *s = r->p;
    if (r->p >= r->end || !isdigit((unsigned char)*r->p)) {
        diag_error(r->dl, here(r, s), "expected a number");
        return -1;
    }
    long x = 0;
    while (r->p < r->end && isdigit((unsigned char)*r->p)) {
        x = x * 10 + (*r->p++ - '0');
        if (x > max) {
            diag_error(r->dl, here(r, s), "number too large (limit %ld)", max);
            return -1;
        }
    }
    *v = x;
    return 0;
}

static int word(Rd *r, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(r->end - r->p) >= n && strncmp(r->p, w, n) == 0 &&
        (r->p + n == r->end || !isalnum((unsigned char)r->p[n]))) {
        r->p += n;
        return 1;
    }
    return 0;
}

int sched_text_read(DiagList *dl, int src, int stages, SchedText *out)
{
    memset(out, 0, sizeof *out);
    out->place = SCHED_PLACE_LOOP;
    Rd r = {dl, src, dl->src[src].text, dl->src[src].text + dl->src[src].len, dl->src[src].text, 1};
    long file_stages = -1, file_chunks = -1;
    /* first pass for the header; actions need the stage count */
    typedef struct Pending {
        int stage, kind, mb, chunk, line, col;
    } Pending;
    Pending *pend = NULL;
    size_t np = 0, cap = 0;
    int max_stage = -1, max_chunk = 0, errors = 0;
    unsigned char *seen = NULL;
    size_t nseen = 0;
    while (r.p < r.end && !diag_full(dl)) {
        r.line_start = r.p;
        skip_space(&r);
        const char *start = r.p;
        if (at_eol(&r)) {
            /* blank or comment */
        } else if (word(&r, "stages") || word(&r, "chunks") || word(&r, "placement")) {
            const char *key = start;
            skip_space(&r);
            if (r.p >= r.end || *r.p != ':') {
                diag_error(dl, here(&r, r.p), "expected ':' after '%.*s'", (int)(r.p - key), key);
                errors++;
                goto next_line;
            }
            r.p++;
            skip_space(&r);
            if (*key == 'p') {
                if (word(&r, "loop"))
                    out->place = SCHED_PLACE_LOOP;
                else if (word(&r, "v"))
                    out->place = SCHED_PLACE_V;
                else {
                    diag_error(dl, here(&r, r.p), "placement is loop or v");
                    errors++;
                    goto next_line;
                }
            } else {
                long v;
                if (read_int(&r, &v, 4096)) {
                    errors++;
                    goto next_line;
                }
                if (v < 1) {
                    diag_error(dl, here(&r, start), "%s must be at least 1", *key == 's' ? "stages" : "chunks");
                    errors++;
                    goto next_line;
                }
                if (*key == 's')
                    file_stages = v;
                else
                    file_chunks = v;
            }
        } else if (word(&r, "stage")) {
            skip_space(&r);
            long st;
            if (read_int(&r, &st, 4095)) {
                errors++;
                goto next_line;
            }
            skip_space(&r);
            if (r.p >= r.end || *r.p != ':') {
                diag_error(dl, here(&r, r.p), "expected ':' after 'stage %ld'", st);
                errors++;
                goto next_line;
            }
            r.p++;
            if ((size_t)st >= nseen) {
                size_t n2 = (size_t)st + 1;
                seen = realloc(seen, n2);
                memset(seen + nseen, 0, n2 - nseen);
                nseen = n2;
            }
            if (seen[st]) {
                diag_error(dl, here(&r, start), "stage %ld is listed twice", st);
                errors++;
                goto next_line;
            }
            seen[st] = 1;
            if (st > max_stage)
                max_stage = (int)st;
            while (!at_eol(&r)) {
                const char *a = r.p;
                char k = *r.p++;
                int kind = k == 'F' ? SCHED_F : k == 'B' ? SCHED_BWD : k == 'I' ? SCHED_I : k == 'W' ? SCHED_W : -1;
                if (kind < 0) {
                    diag_error(dl, here(&r, a), "unknown action '%c' (F, B, I or W followed by a micro-batch)",
                               isprint((unsigned char)k) ? k : '?');
                    errors++;
                    goto next_line;
                }
                long mb, ch = 0;
                if (read_int(&r, &mb, 1 << 20)) {
                    errors++;
                    goto next_line;
                }
                if (r.p < r.end && *r.p == '.') {
                    r.p++;
                    if (read_int(&r, &ch, 63)) {
                        errors++;
                        goto next_line;
                    }
                }
                if (r.p < r.end && !isspace((unsigned char)*r.p) && *r.p != '#') {
                    diag_error(dl, here(&r, r.p), "expected a space between actions");
                    errors++;
                    goto next_line;
                }
                if (ch > max_chunk)
                    max_chunk = (int)ch;
                if (np == cap) {
                    cap = cap ? 2 * cap : 256;
                    pend = realloc(pend, cap * sizeof *pend);
                    if (!pend) {
                        fputs("pipe: out of memory\n", stderr);
                        exit(2);
                    }
                }
                pend[np++] = (Pending){(int)st, kind, (int)mb, (int)ch, r.line, (int)(a - r.line_start) + 1};
            }
        } else {
            diag_error(dl, here(&r, start), "expected 'stage N: actions' (or stages:, chunks:, placement:)");
            errors++;
        }
    next_line:
        while (r.p < r.end && *r.p != '\n')
            r.p++;
        if (r.p < r.end) {
            r.p++;
            r.line++;
        }
    }
    int S = file_stages > 0 ? (int)file_stages : max_stage + 1;
    SrcLoc top = {src, 1, 1};
    if (!errors && S <= 0) {
        diag_error(dl, top, "no stages: write one line 'stage N: actions' per stage");
        errors++;
    }
    if (!errors && stages > 0 && S != stages) {
        diag_error(dl, top, "the schedule has %d stage%s, the pipeline %d", S, S == 1 ? "" : "s", stages);
        errors++;
    }
    for (int s = 0; !errors && s < S; s++)
        if ((size_t)s >= nseen || !seen[s]) {
            diag_error(dl, top, "stage %d has no line 'stage %d: ...'", s, s);
            errors++;
        }
    if (!errors && max_stage >= S) {
        diag_error(dl, top, "stage %d is listed, but the schedule has %d stages", max_stage, S);
        errors++;
    }
    int V = file_chunks > 0 ? (int)file_chunks : max_chunk + 1;
    if (!errors && max_chunk >= V) {
        for (size_t i = 0; i < np; i++)
            if (pend[i].chunk >= V) {
                diag_error(dl, ((SrcLoc){src, pend[i].line, pend[i].col}), "chunk %d, but chunks: %d", pend[i].chunk, V);
                break;
            }
        errors++;
    }
    if (!errors && out->place == SCHED_PLACE_V && V != 2) {
        diag_error(dl, top, "placement v needs exactly 2 chunks, not %d", V);
        errors++;
    }
    if (!errors) {
        out->stages = S;
        out->chunks = V;
        sched_actions_init(&out->acts, S);
        for (size_t i = 0; i < np; i++) {
            sched_push_at(&out->acts, pend[i].stage, (SchedKind)pend[i].kind, pend[i].mb, pend[i].chunk, pend[i].line,
                          pend[i].col);
        }
    }
    free(pend);
    free(seen);
    return errors ? -1 : 0;
}

void sched_text_write(FILE *out, const SchedActions *acts, int chunks, SchedPlacement place, const char *comment)
{
    if (comment && *comment)
        fprintf(out, "# %s\n", comment);
    fprintf(out, "# F forward, B backward, I input gradient, W weight gradient; mb.chunk\n");
    fprintf(out, "stages: %d\nchunks: %d\nplacement: %s\n", acts->stages, chunks,
            place == SCHED_PLACE_V ? "v" : "loop");
    static const char kinds[] = "FBIW";
    for (int s = 0; s < acts->stages; s++) {
        fprintf(out, "stage %d:", s);
        const SchedList *l = &acts->stage[s];
        for (int i = 0; i < l->n; i++) {
            const SchedAction *a = &l->a[i];
            if (chunks > 1 || a->chunk)
                fprintf(out, " %c%d.%d", kinds[a->kind], a->mb, a->chunk);
            else
                fprintf(out, " %c%d", kinds[a->kind], a->mb);
        }
        fputc('\n', out);
    }
}
