/* runtime/rt_safetensors.h: safetensors files (the format PyTorch users
 * load with safetensors.torch.load_file): an 8-byte little-endian header
 * length, a JSON header naming each tensor's dtype, shape and byte range,
 * then the data. Written atomically: a temporary file, fsync, rename,
 * fsync of the folder. The code: rt_st_format.c (the header), rt_st_check.c
 * (the rules), rt_st_file.c (the files and this API); see rt_st.h. */
#ifndef PIPE_RT_SAFETENSORS_H
#define PIPE_RT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

typedef struct RtTensor {
    const char *name;        /* e.g. "layers.3.weight" */
    int ndim;
    int64_t dim[4];
    const float *data;       /* F32, row-major (I64: the int64 elements, 8 bytes each) */
    int i64;                 /* 1: the tensor is I64 (batchnorm2d's num_batches_tracked), else F32 */
} RtTensor;

/* Writes the tensors (names unique, in the order given) as F32, or I64
 * where t[i].i64 is set. metadata
 * (may be NULL) goes under "__metadata__" as string pairs k[i] -> v[i].
 * Returns 0, or -1 with a message. */
int rt_safetensors_write(const char *path, const RtTensor *t, int n, const char *const *meta_keys,
                         const char *const *meta_values, int nmeta, char *err, size_t errsize);

/* rt_safetensors_write with each tensor's data fetched when it is due:
 * get(ctx, i) returns t[i]'s floats (t[i].data is not read), and is called
 * once for every tensor in order, even after a write failed, so a caller
 * that receives the data from other processes stays in step with them.
 * The file is written atomically as above. */
int rt_safetensors_write_stream(const char *path, const RtTensor *t, int n, const char *const *meta_keys,
                                const char *const *meta_values, int nmeta, const float *(*get)(void *ctx, int i),
                                void *ctx, char *err, size_t errsize);

/* A loaded file: the tensors point into one buffer. */
typedef struct RtSafetensors {
    unsigned char *buf;
    size_t len;
    RtTensor *t;
    char **names;
    int n;
} RtSafetensors;

/* Reads a file written by any safetensors writer, F32 tensors only (and
 * I64 ones, with i64 set: num_batches_tracked in a checkpoint);
 * everything is bounds-checked. Returns 0, or -1 with a message naming the
 * file and what is wrong. */
int rt_safetensors_read(const char *path, RtSafetensors *out, char *err, size_t errsize);
const RtTensor *rt_safetensors_find(const RtSafetensors *s, const char *name);
void rt_safetensors_free(RtSafetensors *s);

/* ---- Added to the contract (optimizer/checkpoint work): metadata ---------
 * The declarations above give no way to get "__metadata__" back from a file
 * that was read. Without changing RtSafetensors, the reader keeps it in
 * `names`: names[0, n) are the tensor names, names[n, n + 2 * count) the
 * metadata as key, value, key, value..., and a NULL ends the array.
 * Tensors are listed in file (data offset) order. A failed read leaves
 * *out zeroed, so rt_safetensors_free is always safe. */
int rt_safetensors_meta_count(const RtSafetensors *s);
/* The i-th pair in header order; returns 0, or -1 when i is out of range. */
int rt_safetensors_meta_at(const RtSafetensors *s, int i, const char **key, const char **value);
/* The value for key, or NULL. */
const char *rt_safetensors_meta(const RtSafetensors *s, const char *key);

#endif
