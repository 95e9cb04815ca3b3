/* tests/test_json.c: base/base_json.c (the reader, over libjansson),
 * base/base_json_put.c (the string writer) and the checks of a checkpoint
 * manifest (runtime/rt_ckpt_manifest.c). What the reader accepts and what
 * it refuses, with the fault, the offset, the path and the duplicate key;
 * the writer's bytes, which every JSON file pipe writes depends on; and
 * each manifest refusal docs/reliability.md lists. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base_json.h"
#include "rt_ckpt.h"

static BaseJson *parse(const char *s, BaseJsonError *e)
{
    return base_json_parse(s, strlen(s), e);
}

/* Refused, with this fault, at this offset, with these path entries. */
static void refused(const char *s, BaseJsonFault fault, size_t offset, int depth, const char *p0, const char *frag)
{
    BaseJsonError e;
    BaseJson *v = parse(s, &e);
    ck_assert_msg(v == NULL, "accepted: %s", s);
    ck_assert_msg(e.fault == fault, "%s: fault %d, not %d (%s)", s, (int)e.fault, (int)fault, e.text);
    ck_assert_msg(e.offset == offset, "%s: offset %zu, not %zu (%s)", s, e.offset, offset, e.text);
    ck_assert_msg(e.depth == depth, "%s: depth %d, not %d", s, e.depth, depth);
    if (p0)
        ck_assert_str_eq(e.path[0], p0);
    if (frag)
        ck_assert_msg(strstr(e.text, frag) != NULL, "%s: expected '%s' in: %s", s, frag, e.text);
}

START_TEST(reads_values)
{
    BaseJsonError e;
    BaseJson *v = parse(" {\"z\": [1, -2, 9223372036854775807, -9223372036854775807], \"a\": \"\\u00e9\\ud83d\\ude00\","
                        " \"r\": 1.5, \"i\": 1.0, \"t\": true, \"n\": null, \"o\": {}}\n",
                        &e);
    ck_assert_msg(v != NULL, "%s", e.text);
    ck_assert(base_json_is(v, BASE_JSON_OBJECT));
    ck_assert_uint_eq(base_json_len(v), 7);
    /* members in the text's order */
    static const char *const order[] = {"z", "a", "r", "i", "t", "n", "o"};
    void *it = NULL;
    const char *k;
    const BaseJson *x;
    for (int i = 0; i < 7; i++) {
        ck_assert(base_json_next(v, &it, &k, &x));
        ck_assert_str_eq(k, order[i]);
        ck_assert_ptr_eq(base_json_get(v, k), x);
    }
    ck_assert(!base_json_next(v, &it, &k, &x));
    const BaseJson *z = base_json_get(v, "z");
    int64_t n;
    ck_assert_int_eq(base_json_int(base_json_at(z, 2), &n), 0);
    ck_assert(n == INT64_MAX);
    ck_assert_int_eq(base_json_int(base_json_at(z, 1), &n), 0);
    ck_assert(n == -2);
    ck_assert_int_eq(base_json_uint(base_json_at(z, 1), &n), -1);
    ck_assert_ptr_null(base_json_at(z, 4));
    ck_assert_str_eq(base_json_str(base_json_get(v, "a")), "é😀");
    /* 1.0 is a real, not an integer */
    ck_assert_int_eq(base_json_int(base_json_get(v, "i"), &n), -1);
    ck_assert(base_json_is(base_json_get(v, "r"), BASE_JSON_REAL));
    ck_assert(base_json_is(base_json_get(v, "t"), BASE_JSON_BOOL));
    ck_assert(base_json_is(base_json_get(v, "n"), BASE_JSON_NULL));
    ck_assert_ptr_null(base_json_get(v, "missing"));
    ck_assert_ptr_null(base_json_str(base_json_get(v, "r")));
    ck_assert_ptr_null(base_json_get(z, "a")); /* not an object */
    base_json_free(v);
    /* NULL is a missing value everywhere */
    ck_assert_ptr_null(base_json_get(NULL, "a"));
    ck_assert_uint_eq(base_json_len(NULL), 0);
    ck_assert_int_eq(base_json_int(NULL, &n), -1);
    base_json_free(NULL);
}
END_TEST

START_TEST(refuses)
{
    /* what the old readers refused stays refused */
    refused("{\"a\":1,\"a\":2}", BASE_JSON_DUPLICATE, 10, 0, NULL, "key 'a' appears twice");
    refused("[99999999999999999999]", BASE_JSON_RANGE, 21, 1, "0", "too large");
    refused("[-9223372036854775809]", BASE_JSON_RANGE, 21, 1, "0", "too large");
    refused("[1e999]", BASE_JSON_RANGE, 6, 1, "0", "too large");
    refused("[NaN]", BASE_JSON_SYNTAX, 4, 1, "0", "invalid token");
    refused("[Infinity]", BASE_JSON_SYNTAX, 9, 1, "0", "invalid token");
    refused("{} x", BASE_JSON_TRAILING, 4, 0, NULL, NULL);
    refused("{}{}", BASE_JSON_TRAILING, 3, 0, NULL, NULL);
    refused("[\"\\u0000\"]", BASE_JSON_NUL, 9, 1, "0", "NUL");
    refused("{\"\\u0000\":1}", BASE_JSON_NUL, 9, 0, NULL, "NUL");
    refused("[\"\xff\"]", BASE_JSON_UTF8, 2, 1, "0", "UTF-8");
    refused("[\"\xed\xa0\x80\"]", BASE_JSON_UTF8, 2, 1, "0", "UTF-8");  /* a surrogate, encoded */
    refused("[\"\xc0\xaf\"]", BASE_JSON_UTF8, 2, 1, "0", "UTF-8");      /* overlong */
    refused("[\"\\ud800\"]", BASE_JSON_SYNTAX, 9, 1, "0", "invalid Unicode");
    refused("[01]", BASE_JSON_SYNTAX, 2, 1, "0", "invalid token");
    refused("[1,]", BASE_JSON_SYNTAX, 4, 0, NULL, "unexpected token"); /* at the "]" read */
    refused("{\"a\" 1}", BASE_JSON_SYNTAX, 6, 0, NULL, "':' expected");
    refused("{\"a\":[1,2", BASE_JSON_END, 9, 2, "a", NULL);
    refused("", BASE_JSON_END, 0, 0, NULL, "'[' or '{' expected");
    refused("5", BASE_JSON_SYNTAX, 1, 0, NULL, "'[' or '{' expected"); /* objects and arrays only */
    refused("[\"a\nb\"]", BASE_JSON_SYNTAX, 3, 1, "0", "newline");
    /* a text longer than the buffer it is given does not count past it */
    BaseJsonError e;
    ck_assert_ptr_null(base_json_parse("{\"a\": 1}", 5, &e));
    ck_assert_int_eq(e.fault, BASE_JSON_END);
}
END_TEST

START_TEST(paths)
{
    /* the place of a refusal: keys (decoded) and indices, outermost first */
    BaseJsonError e;
    const char *s = "{\"x\\u00e9\": {\"shape\": [1, 2, {\"k\": 1, \"k\": 2}]}}";
    ck_assert_ptr_null(parse(s, &e));
    ck_assert_int_eq(e.fault, BASE_JSON_DUPLICATE);
    ck_assert_int_eq(e.depth, 3);
    ck_assert_str_eq(e.path[0], "xé");
    ck_assert_str_eq(e.path[1], "shape");
    ck_assert_str_eq(e.path[2], "2");
    ck_assert_str_eq(e.key, "k");
    /* a key with escaped quotes and brackets does not confuse the walk */
    s = "{\"a\\\"{[\": {\"b\": [\"]}\\\\\", tru]}}";
    ck_assert_ptr_null(parse(s, &e));
    ck_assert_int_eq(e.depth, 3);
    ck_assert_str_eq(e.path[0], "a\"{[");
    ck_assert_str_eq(e.path[1], "b");
    ck_assert_str_eq(e.path[2], "1");
    /* deeper than BASE_JSON_PATH_MAX: the first ones */
    ck_assert_ptr_null(parse("[[[[[[[x]]]]]]]", &e));
    ck_assert_int_eq(e.depth, BASE_JSON_PATH_MAX);
    /* a duplicate at the top, an empty key */
    ck_assert_ptr_null(parse("{\"\":1,\"\":2}", &e));
    ck_assert_int_eq(e.depth, 0);
    ck_assert_str_eq(e.key, "");
    /* nesting far beyond any file pipe reads: refused, not a crash */
    size_t n = 100000;
    char *deep = malloc(n + 1);
    memset(deep, '[', n);
    deep[n] = 0;
    ck_assert_ptr_null(base_json_parse(deep, n, &e));
    ck_assert_int_eq(e.fault, BASE_JSON_DEPTH);
    free(deep);
}
END_TEST

static char *put(const char *s)
{
    char *d = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&d, &n);
    base_json_put_str(f, s);
    fclose(f);
    return d;
}

START_TEST(writes_strings)
{
    /* the bytes of every writer before there was one: backslash for " and
     * \, \u00XX (lowercase) for the other control characters, UTF-8 as it is */
    char *d = put("a\"b\\c\n\t\x01\x1f é ✓ 😀 /");
    ck_assert_str_eq(d, "\"a\\\"b\\\\c\\u000a\\u0009\\u0001\\u001f é ✓ 😀 /\"");
    free(d);
    /* what is not UTF-8 becomes U+FFFD, a byte at a time */
    d = put("x\xff\xc3(\xed\xa0\x80\xf4\x90\x80\x80\xc0\xaf" "y\xe2\x82");
    ck_assert_str_eq(d, "\"x\\ufffd\\ufffd(\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffdy\\ufffd\\ufffd\"");
    free(d);
    d = put(NULL);
    ck_assert_str_eq(d, "\"\"");
    free(d);
    /* what the writer writes, the reader reads back */
    const char *s = "k\"\\\x01\x7f é\t😀";
    char *text;
    size_t n;
    FILE *f = open_memstream(&text, &n);
    fputc('[', f);
    base_json_put_str(f, s);
    fputc(']', f);
    fclose(f);
    BaseJsonError e;
    BaseJson *v = base_json_parse(text, n, &e);
    ck_assert_msg(v != NULL, "%s", e.text);
    ck_assert_str_eq(base_json_str(base_json_at(v, 0)), s);
    base_json_free(v);
    free(text);

    ck_assert(base_json_utf8_valid("é✓😀"));
    ck_assert(!base_json_utf8_valid("\xed\xa0\x80"));
    ck_assert(!base_json_utf8_valid("\xe2\x82"));
    ck_assert_uint_eq(base_json_utf8_len((const unsigned char *)"\xf0\x9f\x98\x80", 4), 4);
    ck_assert_uint_eq(base_json_utf8_len((const unsigned char *)"\xf0\x9f\x98\x80", 3), 0);
}
END_TEST

/* ---- the manifest ------------------------------------------------------------ */

#define GOOD                                                                                                   \
    "{\"format\": \"pipe-checkpoint\", \"version\": 1, \"model\": \"m\", \"step\": 5, \"steps\": 10, "        \
    "\"seed\": 9007199254740992, \"optimizer\": \"adamw\", \"global_batch\": 8, \"train_samples\": 64, "     \
    "\"dir\": \"step-00000005\", \"files\": [{\"name\": \"stage-0.safetensors\", \"kind\": \"weights\", "   \
    "\"stage\": 0, \"bytes\": 100, \"crc32\": 4294967295}], \"tensors\": {\"layers.0.weight\": 0}"

static int manifest(const char *text, char *err, size_t errsize)
{
    RtManifest m;
    int rc = rt_ckpt_manifest_parse("D", "D/manifest.json", text, strlen(text), &m, err, errsize);
    if (rc == 0) {
        ck_assert_str_eq(m.model, "m");
        ck_assert_str_eq(m.dir, "step-00000005");
        ck_assert(m.seed == (int64_t)1 << 53);
        ck_assert_uint_eq(base_json_len(m.files), 1);
        rt_ckpt_manifest_free(&m);
    } else {
        ck_assert_ptr_null(m.json);
    }
    return rc;
}

static void manifest_refused(const char *text, const char *frag)
{
    char err[512] = "";
    ck_assert_msg(manifest(text, err, sizeof err) == -1, "accepted: %s", text);
    ck_assert_msg(strncmp(err, "D/manifest.json: ", 17) == 0 && strstr(err, frag), "expected '%s' in: %s", frag, err);
}

/* GOOD "}" with the first `from` replaced by `to` (a static buffer). */
static const char *edited(const char *from, const char *to)
{
    static char text[2048];
    const char *good = GOOD "}", *at = strstr(good, from);
    ck_assert_ptr_nonnull(at);
    snprintf(text, sizeof text, "%.*s%s%s", (int)(at - good), good, to, at + strlen(from));
    return text;
}

START_TEST(manifest_checks)
{
    char err[512] = "";
    ck_assert_msg(manifest(GOOD "}", err, sizeof err) == 0, "%s", err);
    manifest_refused(GOOD, "not valid JSON: offset ");
    manifest_refused(GOOD "}}", "not valid JSON: offset ");
    manifest_refused(GOOD ", \"step\": 6}", "not valid JSON: offset "); /* a key twice */
    manifest_refused("[]", "not a pipe checkpoint manifest");
    manifest_refused(edited("\"format\": \"pipe-checkpoint\"", "\"format\": \"other\""), "not a pipe checkpoint manifest");
    manifest_refused(edited("\"version\": 1", "\"version\": 2"), "checkpoint version 2");
    /* integers: non-negative, at most 2^53, not reals, not strings */
    manifest_refused(edited("\"step\": 5", "\"step\": -5"), "\"step\" is missing or not a non-negative integer");
    manifest_refused(edited("\"step\": 5", "\"step\": 5.0"), "\"step\" is missing or not a non-negative integer");
    manifest_refused(edited("\"step\": 5", "\"step\": \"5\""), "\"step\" is missing or not a non-negative integer");
    manifest_refused(edited("\"seed\": 9007199254740992", "\"seed\": 9007199254740993"),
                     "\"seed\" is missing or not a non-negative integer");
    manifest_refused(edited("\"model\": \"m\", ", ""), "are all required");
    manifest_refused(edited("\"tensors\": {", "\"tensors\": [{"), "not valid JSON"); /* unbalanced */
    manifest_refused(edited("\"files\": [", "\"files\": 0, \"x\": ["), "are all required");
    manifest_refused(edited("step-00000005", ".."), "\"dir\" must name a folder inside D");
    manifest_refused(edited("step-00000005", "a/b"), "\"dir\" must name a folder inside D");
    manifest_refused(edited("\"crc32\"", "\"crc64\""), "files[0] needs name, kind, stage, bytes and crc32");
    manifest_refused(edited("\"stage\": 0", "\"stage\": -1"), "files[0] needs name, kind, stage, bytes and crc32");
    manifest_refused(edited("\"stage-0.safetensors\"", "\"../x\""), "files[0] needs name, kind, stage, bytes and crc32");
    manifest_refused(edited("\"layers.0.weight\": 0", "\"layers.0.weight\": 1.5"),
                     "tensors[\"layers.0.weight\"] must be a stage number");
}
END_TEST

static Suite *json_suite(void)
{
    Suite *s = suite_create("json");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, reads_values);
    tcase_add_test(tc, refuses);
    tcase_add_test(tc, paths);
    tcase_add_test(tc, writes_strings);
    tcase_add_test(tc, manifest_checks);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(json_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
