/* compiler/pipec.c: the `pipec` command line.
 *
 * Exit status: 0 success, 1 a user error (anything wrong with the input or
 * the command line, limits included), 2 an internal or I/O error. With
 * --json, stdout holds JSON and nothing else; diagnostics go to stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "front.h"
#include "stats.h"

#ifndef PIPE_VERSION
#define PIPE_VERSION "0.0.0"
#endif

static void usage(FILE *out)
{
    fputs("usage: pipec FILE.pipe [options]\n"
          "\n"
          "Reads a pipe model, checks it, infers every shape and splits it into\n"
          "pipeline stages.\n"
          "\n"
          "options:\n"
          "  --stats           print each layer (type, output shape, parameters, FLOPs,\n"
          "                    stage) and each stage (layers, parameters, what it sends)\n"
          "  --json            with --stats: the same as JSON on stdout\n"
          "  -D KEY=VALUE      override a pipeline or train key, with any value the DSL\n"
          "                    accepts (-D stages=4, -D \"schedule=interleaved(chunks = 2)\");\n"
          "                    may repeat\n"
          "  --layers          list the DSL's layers and their arguments\n"
          "  --help            this text\n"
          "  --version         the version\n"
          "\n"
          "exit status: 0 ok, 1 error in the input, 2 internal or I/O error\n",
          out);
}

static void list_layers(void)
{
    for (int i = 0; i < PC_L_COUNT; i++) {
        printf("%-20s (%s)\n    %s\n", pc_layer_names[i], pc_layer_sigs[i], pc_layer_docs[i]);
    }
    for (int i = 0; i < PC_LOSS_COUNT; i++)
        printf("loss %-15s\n    %s\n", pc_loss_names[i], pc_loss_docs[i]);
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int stats = 0, json = 0;
    const char **defs = calloc(argc > 0 ? argc : 1, sizeof *defs);
    int ndefs = 0;
    if (!defs)
        return 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            free(defs);
            return 0;
        } else if (!strcmp(a, "--version")) {
            printf("pipec %s\n", PIPE_VERSION);
            free(defs);
            return 0;
        } else if (!strcmp(a, "--layers")) {
            list_layers();
            free(defs);
            return 0;
        } else if (!strcmp(a, "--stats")) {
            stats = 1;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "-D")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "pipec: -D needs KEY=VALUE\n");
                free(defs);
                return 1;
            }
            defs[ndefs++] = argv[++i];
        } else if (!strncmp(a, "-D", 2)) {
            defs[ndefs++] = a + 2;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "pipec: unknown option '%s'\n", a);
            usage(stderr);
            free(defs);
            return 1;
        } else if (path) {
            fprintf(stderr, "pipec: more than one input file ('%s' and '%s')\n", path, a);
            free(defs);
            return 1;
        } else {
            path = a;
        }
    }
    if (!path) {
        fprintf(stderr, "pipec: no input file\n");
        usage(stderr);
        free(defs);
        return 1;
    }
    if (json && !stats) {
        fprintf(stderr, "pipec: --json goes with --stats\n");
        free(defs);
        return 1;
    }
    DiagList dl;
    diag_init(&dl);
    PcFront f;
    int rc = pc_front_file(&f, &dl, path, defs, ndefs);
    diag_print(&dl, stderr);
    if (rc == PC_OK) {
        if (stats && json)
            pc_stats_json(stdout, &f);
        else if (stats)
            pc_stats_text(stdout, &f);
        else
            pc_summary_line(stdout, &f);
        if (fflush(stdout) != 0 || ferror(stdout)) {
            fprintf(stderr, "pipec: cannot write the output\n");
            rc = PC_SYSTEM_ERROR;
        }
    }
    pc_front_free(&f);
    diag_free(&dl);
    free(defs);
    return rc;
}
