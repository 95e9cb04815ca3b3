/* runtime/rt_data.h: the training and evaluation data, read only where a
 * stage needs it (the first part's inputs, the last part's targets).
 *
 * Sources (the DSL's `data = ...`, docs/dsl.md):
 *   synthetic(samples = N)   deterministic from the seed: float inputs
 *                            N(0, 1), token ids uniform over the
 *                            embedding's vocab, masks all ones, class
 *                            targets uniform over the classes, mse targets
 *                            N(0, 1)
 *   idx(IMAGES, LABELS)      MNIST / Fashion-MNIST IDX files, gzip or raw;
 *                            big-endian counts; ubyte images scaled to
 *                            [0, 1], float32 images as stored; an [N, H, W]
 *                            file feeds any input of H * W elements
 *   cifar10(DIR, resize = S) CIFAR-10 binary batches (1 label byte + 3072
 *                            image bytes a record): data_batch_1..5.bin for
 *                            training, test_batch.bin for evaluation;
 *                            scaled to [0, 1]; resized to S x S by bilinear
 *                            interpolation (PyTorch's F.interpolate with
 *                            align_corners=False) when S > 0
 *   tokens(FILE, pad = ID)   flat little-endian uint16; sample i is tokens
 *                            [i*T, i*T + T), its targets the same shifted by
 *                            one; a declared mask input is 1 where the token
 *                            is not pad, 0 where it is; a target equal to pad
 *                            becomes -1 (ignored)
 *   npy(INPUTS, TARGETS)     NumPy .npy arrays (float32, int64, int32,
 *                            uint8; C order; first dimension = samples),
 *                            memory-mapped; one input and one target, each
 *                            sample's shape the tensor's; uint8 feeds
 *                            float32 as the raw values 0..255; int64 is
 *                            narrowed to int32 after a range check (ids
 *                            below the vocabulary, labels below the class
 *                            count or -1 / -100: ignored)
 *
 * Sample order depends only on the seed, the step and the sample's place in
 * the global batch: with shuffle, epoch e = (step * B + pos) / N is a
 * permutation of the N samples drawn from Philox keyed by (seed, e); without,
 * sample (step * B + pos) mod N. First and last stages compute the same
 * indices without talking. */
#ifndef PIPE_RT_DATA_H
#define PIPE_RT_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "base_npy.h"
#include "plan_config.h"
#include "plan_model.h"

typedef struct RtData {
    PlanDataKind kind;
    int64_t n;               /* samples */
    const PlanModel *model;
    /* what each sample holds, per model input and for the target */
    uint8_t *u8;             /* idx/cifar images (before scaling), if stored as bytes */
    float *f32;              /* idx float images, or resized cifar images */
    int32_t *labels;         /* idx/cifar labels */
    uint16_t *tokens;        /* tokens(): the whole file */
    int64_t ntokens;
    int64_t pad;             /* tokens(): pad id or -1 */
    int64_t sample_elems;    /* elements of one image sample */
    uint64_t seed;
    int64_t vocab;           /* synthetic token ids / checks on tokens() */
    int64_t classes;         /* synthetic class targets */
    /* npy(): [0] the inputs file, [1] the targets file, mapped */
    BaseNpy npy[2];
    void *npy_map[2];
    size_t npy_map_len[2];
    const unsigned char *npy_data[2];
    /* the shuffled permutation of one epoch, cached */
    int64_t *perm;
    int64_t perm_epoch;
    /* synthetic: each float input's samples, computed once
     * (rt_data_cache_inputs), or NULL */
    float *syn[PLAN_MAX_IO];
} RtData;

/* Opens spec for model m. eval: cifar10 reads test_batch.bin. Checks every
 * size against the model's inputs and target, and token ids against the
 * vocabulary, before training starts. Returns 0, or -1 with a message that
 * names the file (and, for bad contents, the offset or sample). */
int rt_data_open(RtData *d, const PlanData *spec, const PlanModel *m, uint64_t seed, int eval, char *err, size_t errsize);
void rt_data_close(RtData *d);

/* Synthetic data: computes every sample of each float input once, now,
 * so that a step copies them instead of drawing normals (the same values,
 * bit for bit); for the ranks that load inputs. Skipped where they would
 * take more than RT_SYNTH_CACHE_BYTES (each sample is then drawn when
 * loaded, as before), or on other kinds of data. Returns the bytes
 * cached, or -1 when out of memory (nothing cached). */
#define RT_SYNTH_CACHE_BYTES ((int64_t)256 << 20)
int64_t rt_data_cache_inputs(RtData *d);

/* The sample at position pos of step's global batch of size batch. */
int64_t rt_data_index(RtData *d, int shuffle, int64_t step, int64_t pos, int64_t batch);

/* One sample's model input k (float32 or int32 elements, as the input is
 * declared), and its target (int32 class ids, or float32 for mse). */
void rt_data_input(const RtData *d, int64_t sample, int k, void *dst);
void rt_data_target(const RtData *d, int64_t sample, void *dst);

#endif
