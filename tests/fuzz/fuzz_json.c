/* tests/fuzz/fuzz_json.c: a JSON text through every reader of JSON pipe has.
 *
 *   1. base_json_parse (jansson behind base/base_json.c): a refusal has a
 *      message, an offset inside the text and a path of at most
 *      BASE_JSON_PATH_MAX members; an accepted tree is walked whole, written
 *      back with base_json_put_str for its strings, and that text must parse
 *      to the same tree (strings, integers, keys in order; reals by kind).
 *   2. The safetensors header (runtime/rt_st_*.c): the text is a header;
 *      when rt_st_header_decode accepts it, a file is made of it with as
 *      many data bytes as its offsets ask (at most 1 MiB) and read by
 *      rt_st_read_buffer; an accepted file has every tensor inside its
 *      buffer, and its tensors and metadata, encoded again by
 *      rt_st_header_encode, decode to the same names, shapes and pairs.
 *   3. The checkpoint manifest (runtime/rt_ckpt_manifest.c): the text is
 *      manifest.json; an accepted one has every field resume reads.
 *
 * Jansson itself is a system library built without libFuzzer's coverage:
 * the coverage that guides this target is that of pipe's code around it. */
#include <string.h>

#include "base_json.h"
#include "fuzz.h"
#include "rt_ckpt.h"
#include "rt_st.h"

/* ---- 1. the reader, and the writer on what it read ------------------------ */

static void write_value(FILE *o, const BaseJson *v)
{
    int64_t i;
    switch (base_json_kind(v)) {
    case BASE_JSON_OBJECT: {
        void *it = NULL;
        const char *k;
        const BaseJson *x;
        int first = 1;
        fputc('{', o);
        while (base_json_next(v, &it, &k, &x)) {
            fputs(first ? "" : ",", o);
            base_json_put_str(o, k);
            fputc(':', o);
            write_value(o, x);
            first = 0;
        }
        fputc('}', o);
        break;
    }
    case BASE_JSON_ARRAY:
        fputc('[', o);
        for (size_t k = 0; k < base_json_len(v); k++) {
            fputs(k ? "," : "", o);
            write_value(o, base_json_at(v, k));
        }
        fputc(']', o);
        break;
    case BASE_JSON_STRING: base_json_put_str(o, base_json_str(v)); break;
    case BASE_JSON_INTEGER:
        base_json_int(v, &i);
        fprintf(o, "%lld", (long long)i);
        break;
    case BASE_JSON_REAL: fputs("0.5", o); break;
    case BASE_JSON_BOOL: fputs("true", o); break;
    default: fputs("null", o); break;
    }
}

static int same_value(const BaseJson *a, const BaseJson *b)
{
    BaseJsonKind k = base_json_kind(a);
    if (k != base_json_kind(b) || base_json_len(a) != base_json_len(b))
        return 0;
    int64_t x, y;
    switch (k) {
    case BASE_JSON_OBJECT: {
        void *ia = NULL, *ib = NULL;
        const char *ka, *kb;
        const BaseJson *va, *vb;
        while (base_json_next(a, &ia, &ka, &va)) {
            if (!base_json_next(b, &ib, &kb, &vb) || strcmp(ka, kb) != 0 || !same_value(va, vb) ||
                base_json_get(a, ka) != va)
                return 0;
        }
        return 1;
    }
    case BASE_JSON_ARRAY:
        for (size_t i = 0; i < base_json_len(a); i++)
            if (!same_value(base_json_at(a, i), base_json_at(b, i)))
                return 0;
        return 1;
    case BASE_JSON_STRING: return !strcmp(base_json_str(a), base_json_str(b));
    case BASE_JSON_INTEGER: return base_json_int(a, &x) == 0 && base_json_int(b, &y) == 0 && x == y;
    default: return 1;
    }
}

static void reader(const uint8_t *data, size_t size)
{
    BaseJsonError e;
    BaseJson *v = base_json_parse(data, size, &e);
    if (!v) {
        FUZZ_CHECK(e.text[0], "a refusal without a message");
        FUZZ_CHECK(e.offset <= size, "offset %zu past the text (%zu bytes)", e.offset, size);
        FUZZ_CHECK(e.depth >= 0 && e.depth <= BASE_JSON_PATH_MAX, "depth %d", e.depth);
        if (getenv("FUZZ_VERBOSE"))
            fprintf(stderr, "json: offset %zu, depth %d: %s\n", e.offset, e.depth, e.text);
        return;
    }
    FUZZ_CHECK(base_json_is(v, BASE_JSON_OBJECT) || base_json_is(v, BASE_JSON_ARRAY), "a scalar at the top");
    char *text = NULL;
    size_t len = 0;
    FILE *o = open_memstream(&text, &len);
    FUZZ_CHECK(o != NULL, "open_memstream");
    write_value(o, v);
    FUZZ_CHECK(fclose(o) == 0, "writing the tree back");
    BaseJson *w = base_json_parse(text, len, &e);
    FUZZ_CHECK(w != NULL, "the tree written back is refused: %s at %zu: %.200s", e.text, e.offset, text);
    FUZZ_CHECK(same_value(v, w), "the tree written back reads differently: %.200s", text);
    base_json_free(w);
    base_json_free(v);
    free(text);
}

/* ---- 2. the safetensors header --------------------------------------------- */

static void header(const uint8_t *data, size_t size)
{
    RtStHeader h;
    char err[1024] = "";
    if (rt_st_header_decode("fuzz.safetensors", data, size, 8, &h, err, sizeof err) != 0) {
        FUZZ_CHECK(err[0], "rt_st_header_decode failed without a message");
        return;
    }
    /* as many data bytes as the offsets ask for, so reads get past the
     * tiling checks */
    int64_t dlen = 0;
    for (int i = 0; i < h.n; i++)
        if (h.t[i].end > dlen)
            dlen = h.t[i].end;
    rt_st_header_free(&h);
    if (dlen > (1 << 20))
        dlen = 0;
    size_t len = 8 + size + (size_t)dlen;
    unsigned char *buf = malloc(len);
    FUZZ_CHECK(buf != NULL, "out of memory");
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)size >> (8 * i));
    memcpy(buf + 8, data, size);
    for (int64_t i = 0; i < dlen; i++)
        buf[8 + size + i] = (unsigned char)i;
    RtSafetensors s;
    err[0] = 0;
    if (rt_st_read_buffer("fuzz.safetensors", buf, len, &s, err, sizeof err) != 0) {
        FUZZ_CHECK(err[0], "rt_st_read_buffer failed without a message");
        if (getenv("FUZZ_VERBOSE"))
            fprintf(stderr, "safetensors: %s\n", err);
        return;
    }
    int nmeta = rt_safetensors_meta_count(&s);
    const char **mk = calloc((size_t)nmeta + 1, sizeof *mk), **mv = calloc((size_t)nmeta + 1, sizeof *mv);
    FUZZ_CHECK(mk && mv, "out of memory");
    for (int i = 0; i < s.n; i++) {
        const RtTensor *t = &s.t[i];
        FUZZ_CHECK(t->ndim >= 0 && t->ndim <= RT_ST_MAX_DIMS, "tensor %d: %d dimensions", i, t->ndim);
        int64_t numel = rt_st_numel(t->ndim, t->dim);
        const unsigned char *p = (const unsigned char *)t->data;
        FUZZ_CHECK(numel >= 0 && p >= s.buf && p + numel * 4 <= s.buf + s.len, "tensor '%s' outside its file",
                   t->name);
        FUZZ_CHECK(rt_safetensors_find(&s, t->name) != NULL, "tensor '%s' not found by name", t->name);
    }
    for (int i = 0; i < nmeta; i++)
        FUZZ_CHECK(rt_safetensors_meta_at(&s, i, &mk[i], &mv[i]) == 0, "metadata pair %d", i);
    /* what was read is what a writer may write (but for an empty tensor
     * name, which the format allows and pipe's writer refuses as a caller's
     * bug: tests/fuzz/regress/json/header_empty_tensor_name.json), and
     * writes back the same */
    int empty_name = 0;
    for (int i = 0; i < s.n; i++)
        empty_name |= !s.t[i].name[0];
    FUZZ_CHECK(empty_name || rt_st_check_write("again", s.t, s.n, mk, mv, nmeta, err, sizeof err) == 0,
               "a file read is refused by the writer: %s", err);
    char *text;
    size_t tn;
    FUZZ_CHECK(rt_st_header_encode("again", s.t, s.n, mk, mv, nmeta, &text, &tn, err, sizeof err) == 0,
               "rt_st_header_encode: %s", err);
    FUZZ_CHECK(rt_st_header_decode("again", (const unsigned char *)text, tn, 8, &h, err, sizeof err) == 0,
               "a header written is refused: %s", err);
    FUZZ_CHECK(h.n == s.n && h.nkv == 2 * nmeta, "%d tensors, %d metadata entries back (%d, %d written)", h.n,
               h.nkv, s.n, 2 * nmeta);
    for (int i = 0; i < s.n; i++) {
        const RtStEntry *x = &h.t[i];
        FUZZ_CHECK(!strcmp(x->name, s.t[i].name) && x->ndim == s.t[i].ndim, "tensor %d back as '%s'", i, x->name);
        for (int d = 0; d < x->ndim; d++)
            FUZZ_CHECK(x->dim[d] == s.t[i].dim[d], "tensor '%s': dimension %d", x->name, d);
    }
    for (int i = 0; i < nmeta; i++)
        FUZZ_CHECK(!strcmp(h.kv[2 * i], mk[i]) && !strcmp(h.kv[2 * i + 1], mv[i]), "metadata pair %d back", i);
    rt_st_header_free(&h);
    free(text);
    free(mk);
    free(mv);
    rt_safetensors_free(&s);
}

/* ---- 3. the checkpoint manifest ------------------------------------------------ */

static void manifest(const uint8_t *data, size_t size)
{
    RtManifest m;
    char err[1024] = "";
    if (rt_ckpt_manifest_parse("/fuzz", "/fuzz/manifest.json", (const char *)data, size, &m, err, sizeof err) != 0) {
        FUZZ_CHECK(err[0], "rt_ckpt_manifest_parse failed without a message");
        FUZZ_CHECK(m.json == NULL, "a refused manifest keeps its tree");
        return;
    }
    FUZZ_CHECK(m.model && m.optimizer && m.dir && m.dir[0], "an accepted manifest lacks a field");
    FUZZ_CHECK(m.step >= 0 && m.seed >= 0 && m.global_batch >= 0, "a negative number accepted");
    /* what rt_ckpt.c then reads without checking */
    for (size_t i = 0; i < base_json_len(m.files); i++) {
        const BaseJson *f = base_json_at(m.files, i);
        int64_t v;
        FUZZ_CHECK(base_json_str(base_json_get(f, "name")) && base_json_str(base_json_get(f, "kind")) &&
                       base_json_uint(base_json_get(f, "stage"), &v) == 0 &&
                       base_json_uint(base_json_get(f, "bytes"), &v) == 0 &&
                       base_json_uint(base_json_get(f, "crc32"), &v) == 0,
                   "files[%zu] accepted without its fields", i);
    }
    void *it = NULL;
    const char *k;
    const BaseJson *v;
    while (base_json_next(m.tensors, &it, &k, &v)) {
        int64_t s;
        FUZZ_CHECK(base_json_uint(v, &s) == 0 && base_json_get(m.tensors, k) == v, "tensors[\"%s\"]", k);
    }
    rt_ckpt_manifest_free(&m);
    FUZZ_CHECK(m.json == NULL && m.files == NULL, "rt_ckpt_manifest_free");
}

int fuzz_json(const uint8_t *data, size_t size)
{
    reader(data, size);
    header(data, size);
    manifest(data, size);
    return 0;
}

FUZZ_ENTRY(fuzz_json)
