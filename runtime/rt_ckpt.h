/* runtime/rt_ckpt.h: resumable checkpoints (docs/reliability.md).
 *
 *   DIR/manifest.json            written last, atomically: names the step folder
 *   DIR/latest -> step-00000010  a convenience link, replaced after the manifest
 *   DIR/step-00000010/stage-S.safetensors   weights, PyTorch's names
 *   DIR/step-00000010/optim-S.safetensors   optimizer state: NAME.exp_avg,
 *                                NAME.exp_avg_sq (Adam, AdamW), NAME.momentum_buffer (SGD)
 *
 * A save writes a new step folder (every file atomically), then the
 * manifest, then removes older step folders: a crash at any moment leaves
 * the manifest naming a whole checkpoint. The data position and the random
 * streams are functions of (seed, step) (Philox is counter-based; the
 * shuffle is keyed by the epoch), so the step and the seed are the whole
 * of that state. Tensors are found by name, so a checkpoint resumes on any
 * partition, stage count or schedule of the same model. */
#ifndef PIPE_RT_CKPT_H
#define PIPE_RT_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "base_json.h"

struct RtCtx;

/* The manifest's "format" and "version" (rt_ckpt.c writes them,
 * rt_ckpt_manifest.c reads them). */
#define RT_CKPT_FORMAT "pipe-checkpoint"
#define RT_CKPT_VERSION 1

typedef struct RtManifest {
    char root[4096];          /* the DIR given */
    const char *dir;          /* the step folder, inside root */
    const char *model, *optimizer;
    int64_t step, steps, seed, global_batch, train_samples;
    const BaseJson *files;    /* [{name, kind, stage, bytes, crc32}] */
    const BaseJson *tensors;  /* {name: stage} */
    BaseJson *json;           /* owns the strings above */
} RtManifest;

/* Reads and checks DIR/manifest.json (any rank, no MPI;
 * rt_ckpt_manifest.c). Returns 0, or -1 with a message naming the file and
 * what is wrong. Every integer it accepts is in [0, 2^53] (the seeds and
 * step counts pipec and pipert take), files[i].stage and tensors' stages
 * included. */
int rt_ckpt_manifest_read(const char *root, RtManifest *m, char *err, size_t errsize);
/* The same checks on a manifest's text (path: the file, for messages). */
int rt_ckpt_manifest_parse(const char *root, const char *path, const char *text, size_t len, RtManifest *m,
                           char *err, size_t errsize);
void rt_ckpt_manifest_free(RtManifest *m);

/* Collective over the world, after rt_setup and the data: loads every
 * parameter and optimizer state of this rank from the checkpoint, after
 * checking sizes, checksums, names and shapes. On any rank's error, the
 * lowest such rank prints it and every rank exits 1. */
void rt_ckpt_resume(struct RtCtx *rt, const RtManifest *m);

/* Collective: writes the checkpoint after `step` steps under rt->save_dir. Replica 0 of each stage writes its stage's files; rank 0
 * the manifest. */
void rt_ckpt_save(struct RtCtx *rt, int64_t step);

#endif
