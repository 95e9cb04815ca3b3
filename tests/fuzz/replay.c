/* tests/fuzz/replay.c: runs the fuzz targets over files, without libFuzzer,
 * in every build (the ctest test fuzz_replay): the regression inputs under
 * tests/fuzz/regress/ and the seed corpus under tests/fuzz/corpus/, each
 * folder holding dsl/, plan/, sched/ and json/. A crash or a broken invariant
 * aborts, which fails the test; under PIPE_SANITIZE the sanitizers watch.
 *
 *   fuzz_replay DIR...          every file of DIR/{dsl,plan,sched,json}/
 *   fuzz_replay KIND FILE...    the files given, KIND dsl, plan, sched or json */
#include <dirent.h>
#include <string.h>

#include "fuzz.h"

typedef int (*Target)(const uint8_t *, size_t);

static const struct {
    const char *kind;
    Target fn;
} targets[] = {{"dsl", fuzz_dsl}, {"plan", fuzz_plan}, {"sched", fuzz_sched}, {"json", fuzz_json}};
enum { NTARGETS = sizeof targets / sizeof targets[0] };

static Target target_of(const char *kind)
{
    for (int i = 0; i < NTARGETS; i++)
        if (!strcmp(kind, targets[i].kind))
            return targets[i].fn;
    return NULL;
}

/* Runs fn over path; returns 0, or -1 if the file cannot be read. */
static int run_file(Target fn, const char *kind, const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        perror(path);
        return -1;
    }
    size_t cap = 4096, n = 0, got;
    uint8_t *d = malloc(cap);
    while (d && (got = fread(d + n, 1, cap - n, fp)) > 0) {
        n += got;
        if (n == cap) {
            uint8_t *nd = realloc(d, cap *= 2);
            if (!nd)
                free(d);
            d = nd;
        }
    }
    int bad = ferror(fp) || !d;
    fclose(fp);
    if (bad) {
        fprintf(stderr, "%s: cannot read\n", path);
        free(d);
        return -1;
    }
    /* an exact-size copy, so that ASan sees a read past the end */
    uint8_t *exact = malloc(n ? n : 1);
    memcpy(exact, d, n);
    free(d);
    printf("%-5s %s\n", kind, path);
    fflush(stdout);
    fn(exact, n);
    free(exact);
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every regular file of dir/kind/, in name order. Returns the count, or -1. */
static int run_dir(const char *dir, const char *kind)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, kind);
    DIR *dp = opendir(path);
    if (!dp)
        return 0;
    char **names = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(dp)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            names = realloc(names, (size_t)cap * sizeof *names);
        }
        names[n++] = strdup(e->d_name);
    }
    closedir(dp);
    if (n)
        qsort(names, (size_t)n, sizeof *names, cmp_names);
    int rc = n;
    for (int i = 0; i < n; i++) {
        char file[8192];
        snprintf(file, sizeof file, "%s/%s", path, names[i]);
        if (run_file(target_of(kind), kind, file) != 0)
            rc = -1;
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR... | %s dsl|plan|sched|json FILE...\n", argv[0], argv[0]);
        return 2;
    }
    int total = 0, failed = 0;
    Target fn = target_of(argv[1]);
    if (fn) {
        for (int i = 2; i < argc; i++, total++)
            failed |= run_file(fn, argv[1], argv[i]) != 0;
    } else {
        for (int i = 1; i < argc; i++)
            for (int k = 0; k < NTARGETS; k++) {
                int n = run_dir(argv[i], targets[k].kind);
                failed |= n < 0;
                total += n > 0 ? n : 0;
            }
    }
    printf("%d inputs replayed%s\n", total, failed ? ", some could not be read" : "");
    return failed || total == 0 ? 1 : 0;
}
