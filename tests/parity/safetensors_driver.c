/* tests/parity/safetensors_driver.c: rt_safetensors for
 * tests/parity/test_safetensors.py.
 *
 *   safetensors_driver write PATH   stdin -> file
 *   safetensors_driver read PATH    file -> stdout
 *
 * The text (names, keys and values without white space; floats as %.9g,
 * which round-trips a float):
 *   NTENSORS NMETA
 *   KEY VALUE                        NMETA times
 *   NAME NDIM D0 .. D(NDIM-1) V...   NTENSORS times, the values row-major
 * `read` prints the same, in file order. Exit 1 with the reader's or
 * writer's message on stderr when it refuses. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt_safetensors.h"

static int do_write(const char *path)
{
    int n, nmeta;
    if (scanf("%d %d", &n, &nmeta) != 2 || n < 0 || nmeta < 0)
        return fprintf(stderr, "safetensors_driver: expected NTENSORS NMETA\n"), 2;
    char **keys = calloc((size_t)nmeta + 1, sizeof *keys), **values = calloc((size_t)nmeta + 1, sizeof *values);
    RtTensor *t = calloc((size_t)n + 1, sizeof *t);
    for (int i = 0; i < nmeta; i++) {
        keys[i] = malloc(4096), values[i] = malloc(4096);
        if (scanf("%4095s %4095s", keys[i], values[i]) != 2)
            return fprintf(stderr, "safetensors_driver: short metadata\n"), 2;
    }
    for (int i = 0; i < n; i++) {
        char *name = malloc(4096);
        if (scanf("%4095s %d", name, &t[i].ndim) != 2 || t[i].ndim < 0 || t[i].ndim > 4)
            return fprintf(stderr, "safetensors_driver: bad tensor %d\n", i), 2;
        t[i].name = name;
        long numel = 1;
        for (int d = 0; d < t[i].ndim; d++) {
            long long v;
            if (scanf("%lld", &v) != 1 || v < 0)
                return fprintf(stderr, "safetensors_driver: bad shape\n"), 2;
            t[i].dim[d] = v;
            numel *= (long)v;
        }
        float *data = malloc((size_t)(numel ? numel : 1) * sizeof *data);
        for (long j = 0; j < numel; j++)
            if (scanf("%f", &data[j]) != 1)
                return fprintf(stderr, "safetensors_driver: short data for %s\n", name), 2;
        t[i].data = data;
    }
    char err[1024];
    int rc = rt_safetensors_write(path, t, n, (const char *const *)keys, (const char *const *)values, nmeta, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "%s\n", err);
    for (int i = 0; i < n; i++) {
        free((void *)t[i].name);
        free((void *)t[i].data);
    }
    for (int i = 0; i < nmeta; i++)
        free(keys[i]), free(values[i]);
    free(t);
    free(keys);
    free(values);
    return rc == 0 ? 0 : 1;
}

static int do_read(const char *path)
{
    RtSafetensors s;
    char err[1024];
    if (rt_safetensors_read(path, &s, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int nmeta = rt_safetensors_meta_count(&s);
    printf("%d %d\n", s.n, nmeta);
    for (int i = 0; i < nmeta; i++) {
        const char *k, *v;
        rt_safetensors_meta_at(&s, i, &k, &v);
        printf("%s %s\n", k, v);
    }
    for (int i = 0; i < s.n; i++) {
        const RtTensor *t = &s.t[i];
        printf("%s %d", t->name, t->ndim);
        long numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            printf(" %lld", (long long)t->dim[d]);
            numel *= (long)t->dim[d];
        }
        for (long j = 0; j < numel; j++)
            printf(" %.9g", t->data[j]);
        printf("\n");
    }
    rt_safetensors_free(&s);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "write"))
        return do_write(argv[2]);
    if (argc == 3 && !strcmp(argv[1], "read"))
        return do_read(argv[2]);
    fprintf(stderr, "usage: %s write|read PATH\n", argv[0]);
    return 2;
}
