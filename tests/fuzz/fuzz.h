/* tests/fuzz/fuzz.h: the four fuzz targets, one function each, so that
 * libFuzzer (PIPE_FUZZ=ON, clang) and the replay test (every build) run the
 * same code:
 *
 *   fuzz_dsl    a .pipe file through everything pipec does before writing
 *               (parse, -D overrides, bind, shapes, partition, text schedule,
 *               generators, lowering, verification), then its outputs
 *   fuzz_plan   plan.bin bytes through plan_decode and what pipec prints
 *   fuzz_sched  a text schedule through sched_text_read, lowering and the
 *               verifier
 *   fuzz_json   a JSON text through base_json (jansson), as a safetensors
 *               header (the rt_st_ reader, then written back) and as a
 *               checkpoint manifest
 *
 * Each returns 0; a broken invariant (an error with no diagnostic, a round
 * trip that changes what it carries) prints what and aborts, so libFuzzer
 * and the replay test both report it as a crash. With FUZZ_VERBOSE in the
 * environment, the diagnostics go to stderr. */
#ifndef PIPE_FUZZ_H
#define PIPE_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int fuzz_dsl(const uint8_t *data, size_t size);
int fuzz_plan(const uint8_t *data, size_t size);
int fuzz_sched(const uint8_t *data, size_t size);
int fuzz_json(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond, ...)                                                        \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: invariant broken: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                            \
            fputc('\n', stderr);                                                     \
            abort();                                                                 \
        }                                                                            \
    } while (0)

/* The libFuzzer entry point, left out of the replay executable (which links
 * all four targets). */
/* Where the targets print what pipec would (listings, stats, pictures):
 * exercised, then thrown away. */
static inline FILE *fuzz_sink(void)
{
    static FILE *f;
    if (!f)
        f = fopen("/dev/null", "w");
    FUZZ_CHECK(f != NULL, "cannot open /dev/null");
    return f;
}

#ifdef FUZZ_REPLAY
#define FUZZ_ENTRY(fn)
#else
#define FUZZ_ENTRY(fn)                                                   \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);       \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)        \
    {                                                                    \
        return fn(data, size);                                           \
    }
#endif

#endif
