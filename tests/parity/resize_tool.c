/* tests/parity/resize_tool.c: runs the data loader's bilinear resize for
 * tests/parity/test_resize.py, which compares it with PyTorch's
 * F.interpolate.
 *
 *   resize_tool raw IN OUT C IH IW OH OW
 *       IN holds C*IH*IW little-endian float32; OUT gets C*OH*OW of them
 *       (rt_resize_bilinear alone).
 *   resize_tool cifar DIR S OUT
 *       opens cifar10(DIR, resize = S) for a model with input
 *       float32[3, S', S'] (S' = S, or 32 when S is 0) through rt_data_open,
 *       the way training does, and writes every sample's input, in order. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pc_front.h"
#include "rt_data.h"
#include "rt_resize.h"

static int die(const char *msg)
{
    fprintf(stderr, "resize_tool: %s\n", msg);
    return 1;
}

static int run_raw(char **av)
{
    long c = atol(av[2]), ih = atol(av[3]), iw = atol(av[4]), oh = atol(av[5]), ow = atol(av[6]);
    if (c < 1 || ih < 1 || iw < 1 || oh < 1 || ow < 1)
        return die("bad sizes");
    size_t ni = (size_t)(c * ih * iw), no = (size_t)(c * oh * ow);
    float *in = malloc(ni * sizeof *in), *out = malloc(no * sizeof *out);
    FILE *f = fopen(av[0], "rb");
    if (!f || !in || !out || fread(in, sizeof *in, ni, f) != ni)
        return die("cannot read the input");
    fclose(f);
    rt_resize_bilinear(out, in, c, ih, iw, oh, ow);
    f = fopen(av[1], "wb");
    if (!f || fwrite(out, sizeof *out, no, f) != no || fclose(f) != 0)
        return die("cannot write the output");
    free(in);
    free(out);
    return 0;
}

static int run_cifar(char **av)
{
    long s = atol(av[1]), side = s > 0 ? s : 32;
    char text[512];
    snprintf(text, sizeof text,
             "model m {\n input x: float32[3, %ld, %ld]\n target y: int32[]\n flatten\n linear(10)\n"
             " loss cross_entropy\n}\n",
             side, side);
    DiagList dl;
    PcFront fr;
    diag_init(&dl);
    if (pc_front_text(&fr, &dl, "resize.pipe", text, strlen(text), NULL, 0) != 0)
        return die("the model does not compile");
    PlanData spec = {.kind = PLAN_DATA_CIFAR10, .set = 1, .path = av[0], .resize = s, .pad = -1};
    RtData d;
    char err[1024];
    if (rt_data_open(&d, &spec, &fr.model, 0, 0, err, sizeof err) != 0)
        return die(err);
    size_t per = (size_t)(3 * side * side);
    float *x = malloc(per * sizeof *x);
    FILE *f = fopen(av[2], "wb");
    if (!f || !x)
        return die("cannot write the output");
    for (int64_t i = 0; i < d.n; i++) {
        rt_data_input(&d, i, 0, x);
        if (fwrite(x, sizeof *x, per, f) != per)
            return die("cannot write the output");
    }
    if (fclose(f) != 0)
        return die("cannot write the output");
    free(x);
    rt_data_close(&d);
    pc_front_free(&fr);
    diag_free(&dl);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 9 && !strcmp(argv[1], "raw"))
        return run_raw(argv + 2);
    if (argc == 5 && !strcmp(argv[1], "cifar"))
        return run_cifar(argv + 2);
    fprintf(stderr, "usage: resize_tool raw IN OUT C IH IW OH OW | resize_tool cifar DIR S OUT\n");
    return 2;
}
