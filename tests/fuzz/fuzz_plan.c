/* tests/fuzz/fuzz_plan.c: plan.bin bytes through the plan reader.
 *
 * The header's file size (offset 32) and CRC-32 (offset 24) are rewritten to
 * match the input before decoding, so that mutations reach the sections
 * instead of stopping at the checksum (the unit tests cover a wrong size or
 * checksum). Then what `pipec plan.bin --list --stats [--json]` prints.
 * Invariant: a plan the reader accepts re-encodes to bytes that decode
 * again and encode to the same bytes (a fixed point after one round). */
#include <string.h>
#include <zlib.h>

#include "fuzz.h"
#include "pc_listing.h"
#include "plan_file.h"
#include "pc_stats.h"

static void put_le(unsigned char *d, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        d[i] = (unsigned char)(v >> (8 * i));
}

int fuzz_plan(const uint8_t *data, size_t size)
{
    unsigned char *d = malloc(size ? size : 1);
    memcpy(d, data, size);
    if (size >= 40) {
        put_le(d + 32, size, 8);
        put_le(d + 24, (uint32_t)crc32(0L, d + 40, (uInt)(size - 40)), 4);
    }
    PlanIR ir;
    char err[1024];
    err[0] = '\0';
    int rc = plan_decode(d, size, &ir, err, sizeof err);
    FUZZ_CHECK(rc == 0 || rc == -1, "plan_decode returned %d", rc);
    FUZZ_CHECK(rc == 0 || err[0], "plan_decode failed without a message");
    if (rc != 0 && getenv("FUZZ_VERBOSE"))
        fprintf(stderr, "%s\n", err);
    if (rc == 0) {
        FILE *o = fuzz_sink();
        pc_listing(o, &ir);
        pc_stats_text(o, &ir);
        pc_stats_json(o, &ir);
        pc_summary_line(o, &ir);

        unsigned char *e1 = NULL, *e2 = NULL;
        size_t n1 = 0, n2 = 0;
        plan_encode(&ir, &e1, &n1);
        PlanIR ir2;
        rc = plan_decode(e1, n1, &ir2, err, sizeof err);
        FUZZ_CHECK(rc == 0, "a plan the reader accepted, re-encoded, is refused: %s", err);
        plan_encode(&ir2, &e2, &n2);
        FUZZ_CHECK(n1 == n2 && memcmp(e1, e2, n1) == 0, "encode(decode(x)) is not a fixed point (%zu vs %zu bytes)",
                   n1, n2);
        plan_ir_free(&ir2);
        free(e1);
        free(e2);
        plan_ir_free(&ir);
    }
    free(d);
    return 0;
}

FUZZ_ENTRY(fuzz_plan)
