/* runtime/rt_st.h: the inside of the safetensors code (rt_safetensors.h is
 * its outside, the API). Three files, prefix rt_st_, one seam each:
 *
 *   rt_st_format.c  the format: the 8-byte length, the JSON header written
 *                   (rt_st_header_encode) and read (rt_st_header_decode:
 *                   the grammar is base_json's, the header's fields are
 *                   this file's), dtypes and byte counts, byte order
 *   rt_st_check.c   the checks: what a writer may be given (names, shapes,
 *                   UTF-8, no duplicates), and what a header read must say
 *                   about its data (F32, at most 4 dimensions, byte counts
 *                   equal to shapes, tensors tiling the data exactly)
 *   rt_st_file.c    the files: read whole (base_read_file) and replaced
 *                   atomically (base_atomic_*), the API of rt_safetensors.h
 *
 * Every message names the file first (the path every function takes) and,
 * where there is one, the tensor. */
#ifndef PIPE_RT_ST_H
#define PIPE_RT_ST_H

#include <stddef.h>
#include <stdint.h>

#include "rt_safetensors.h"

/* The reference implementation's limit: a header larger than this is a
 * corrupt length, not a real model. */
#define RT_ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)
#define RT_ST_MAX_DIMS 4
/* The one dtype pipe reads and writes, and its size. */
#define RT_ST_DTYPE "F32"
#define RT_ST_DTYPE_BYTES 4

/* One tensor as a header lists it (read, not yet checked). */
typedef struct RtStEntry {
    char *name;
    char *dtype;
    int ndim;                 /* as written, may exceed RT_ST_MAX_DIMS */
    int64_t dim[RT_ST_MAX_DIMS];
    int64_t begin, end;       /* data_offsets, from the first byte after the header */
    int order;                /* place in the header, to break ties */
} RtStEntry;

/* A header read: its tensors in header order, its metadata as key, value,
 * key, value... in header order. */
typedef struct RtStHeader {
    RtStEntry *t;
    int n;
    char **kv;
    int nkv;                  /* 2 x the pairs */
} RtStHeader;

/* ---- rt_st_format.c ------------------------------------------------------ */

void rt_st_fail(char *err, size_t errsize, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int rt_st_host_is_little_endian(void);
/* Elements of a shape, or -1 when a dimension is negative or the byte count
 * (elements x RT_ST_DTYPE_BYTES) would overflow int64_t. */
int64_t rt_st_numel(int ndim, const int64_t *dim);

/* The header of tensors t[0, n) (laid out contiguously in that order) and
 * the metadata pairs: the JSON text padded with spaces to a multiple of 8,
 * in a malloc'd *text of *len bytes. The arguments must have passed
 * rt_st_check_write. Returns 0, or -1 with a message. */
int rt_st_header_encode(const char *path, const RtTensor *t, int n, const char *const *meta_keys,
                        const char *const *meta_values, int nmeta, char **text, size_t *len, char *err, size_t errsize);
/* Reads the header text[0, len) (the bytes after the length; base, its
 * offset in the file, for the byte positions of messages) into *h. Returns
 * 0, or -1 with a message and *h empty. */
int rt_st_header_decode(const char *path, const unsigned char *text, size_t len, size_t base, RtStHeader *h,
                        char *err, size_t errsize);
void rt_st_header_free(RtStHeader *h);

/* ---- rt_st_check.c ------------------------------------------------------- */

/* The writer's arguments: 0, or -1 with a message (nothing written). */
int rt_st_check_write(const char *path, const RtTensor *t, int n, const char *const *meta_keys,
                      const char *const *meta_values, int nmeta, char *err, size_t errsize);
/* A header read against the dlen bytes of data after it. On success
 * returns 0 and *order, the n entries sorted by data offset (ties in header
 * order), malloc'd; else -1 with a message. */
int rt_st_check_header(const char *path, const RtStHeader *h, size_t dlen, RtStEntry ***order, char *err,
                       size_t errsize);

/* The bytes of one element of a safetensors dtype ("F32" 4, "BF16" 2, "I64"
 * 8, ...), or 0 for a name the format does not define. */
int rt_st_dtype_bytes(const char *dtype);
/* rt_st_check_header's rules with every dtype of the format sized by
 * rt_st_dtype_bytes instead of F32 alone: for a reader that converts or
 * skips tensors (pipert --init, rt_st_open). */
int rt_st_check_layout(const char *path, const RtStHeader *h, size_t dlen, RtStEntry ***order, char *err,
                       size_t errsize);

/* ---- rt_st_file.c -------------------------------------------------------- */

/* rt_safetensors_read on a file already in memory: buf[0, len), malloc'd,
 * owned from here (kept by *out on success, freed on failure); path names
 * it in messages. For the reader's fuzz target (tests/fuzz/fuzz_json.c). */
int rt_st_read_buffer(const char *path, unsigned char *buf, size_t len, RtSafetensors *out, char *err, size_t errsize);

/* A file opened for reading tensor by tensor (pipert --init: each rank
 * reads only the tensors its stage holds): its header read and checked
 * (rt_st_check_layout against the file's size), the data left on disk. */
typedef struct RtStFile {
    const char *path;
    int fd;
    RtStHeader h;
    int64_t data_at;          /* the file offset of the data's first byte */
} RtStFile;

/* Returns 0, or -1 with a message naming the file (and *f closed). */
int rt_st_open(const char *path, RtStFile *f, char *err, size_t errsize);
/* Reads tensor x of the file as float32 into dst (numel elements): F32 as
 * it is, F16 and BF16 converted exactly (every value of theirs is a
 * float32); any other dtype is refused. Returns 0, or -1 with a message. */
int rt_st_read_f32(const RtStFile *f, const RtStEntry *x, float *dst, char *err, size_t errsize);
/* Reads an I64 tensor (batchnorm2d's num_batches_tracked) into dst (numel
 * elements); any other dtype is refused. Returns 0, or -1 with a message. */
int rt_st_read_i64(const RtStFile *f, const RtStEntry *x, int64_t *dst, char *err, size_t errsize);
void rt_st_close(RtStFile *f);

/* float32 from the 16-bit formats, exactly, as torch's .float() converts:
 * every finite value and infinity is a float32; F16's NaNs keep their
 * payload and become quiet, BF16's are the same bits. */
float rt_st_f16_to_f32(uint16_t h);
float rt_st_bf16_to_f32(uint16_t h);

#endif
