/* runtime/rt_weights.h: weights in and out of pipert, as safetensors under
 * pipe's (PyTorch's) names, layers.{i}.NAME: `--init PATH` starts a run
 * from them, `--export FILE` writes them after the last step
 * (docs/weights.md).
 *
 * --init reads one .safetensors file or every *.safetensors file of a
 * folder (a sharded checkpoint). Every tensor the model has must be there,
 * with its shape; a tied linear's own name (layers.{i}.weight, the name
 * torch's state_dict also gives it) may be there too, with the owner's
 * values. F32 is read as it is, F16 and BF16 converted exactly; another
 * dtype of a needed tensor is refused. Tensors the model does not have are
 * refused, or skipped with ignore_extra. --init-rename FROM=TO rules
 * rewrite a name's prefix (the first rule that matches) before it is
 * looked up. Each rank reads the headers of every file but the data of
 * its own stage's tensors only. Optimizer state starts fresh.
 *
 * Buffers (batchnorm2d's running_mean, running_var, num_batches_tracked)
 * are tensors of the model like parameters: required by --init (the count
 * as I64 only), written by --export (the count as I64).
 *
 * --export writes one file, atomically: every parameter, and a tied
 * linear's weight under its own name too (the owner's bytes), so that a
 * torch module whose `layers` is the equivalent nn.Sequential loads it with
 * load_state_dict(..., strict=True); metadata {"format": "pt"}. Rank 0
 * writes; each stage's replica 0 sends it its tensors one at a time in the
 * file's order, so rank 0 holds one tensor beyond its own stage's, and no
 * shared file system is needed. */
#ifndef PIPE_RT_WEIGHTS_H
#define PIPE_RT_WEIGHTS_H

#include <stddef.h>

struct RtCtx;

typedef struct RtInit {
    const char *path;             /* a .safetensors file, or a folder of them */
    const char *const *rename;    /* "FROM=TO" prefix rewrites, in order */
    int nrename;
    int ignore_extra;             /* --init-extra ignore */
} RtInit;

/* After rt_setup, on every rank: checks the files against the whole model
 * (every rank reaches the same verdict on the names, shapes and dtypes) and
 * loads this rank's parameters. Returns 0, or -1 with this rank's message
 * in err (the caller agrees on it collectively, before the first step).
 * Rank 0 learns in *loaded how many tensors the model took and in *files
 * how many files were read. */
int rt_weights_init(struct RtCtx *rt, const RtInit *o, int *loaded, int *files, char *err, size_t errsize);

/* Collective: writes the model's weights to path (rank 0). Returns 0 on
 * every rank, or -1 on every rank with rank 0's message in err (the same
 * size on every rank). */
int rt_weights_export(struct RtCtx *rt, const char *path, int *tensors, char *err, size_t errsize);

#endif
