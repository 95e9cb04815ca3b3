/* base/base_npy.h: NumPy .npy files (numpy.save), the header read and
 * checked; shared by pipec (which checks a data source's files against the
 * model when it compiles) and pipert (which reads them).
 *
 * The format (numpy/lib/format.py, versions 1.0, 2.0 and 3.0): the magic
 * "\x93NUMPY", a major and a minor version byte, the header's length
 * (2 bytes little-endian in 1.0, 4 bytes in 2.0 and 3.0), then the header:
 * a Python dict literal with exactly the keys 'descr' (the dtype, e.g.
 * '<f4'), 'fortran_order' (True or False) and 'shape' (a tuple of
 * integers), padded with spaces and ended by a newline; then the data,
 * shape's product of items, row-major when fortran_order is False.
 *
 * pipe reads four dtypes, little-endian (or byte-sized): float32 ('<f4'),
 * int64 ('<i8'), int32 ('<i4') and uint8 ('|u1'), in C order, of 1 to
 * BASE_NPY_MAX_DIMS dimensions, the first one counting samples. */
#ifndef PIPE_BASE_NPY_H
#define PIPE_BASE_NPY_H

#include <stddef.h>
#include <stdint.h>

#define BASE_NPY_MAX_DIMS 8
/* A header longer than this is not one numpy wrote for an array of these
 * dtypes (its own limit for reading is 10,000 bytes by default). */
#define BASE_NPY_MAX_HEADER (1u << 20)

typedef enum BaseNpyDtype { BASE_NPY_F32, BASE_NPY_I64, BASE_NPY_I32, BASE_NPY_U8 } BaseNpyDtype;

/* "float32", "int64", "int32", "uint8" */
extern const char *const base_npy_dtype_names[4];

typedef struct BaseNpy {
    BaseNpyDtype dtype;
    int item;                      /* bytes per element */
    int version;                   /* the major version: 1, 2 or 3 */
    int ndim;
    int64_t dim[BASE_NPY_MAX_DIMS];
    int64_t count;                 /* elements in all */
    int64_t data_offset;           /* the data's first byte in the file */
    int64_t data_bytes;            /* count x item */
} BaseNpy;

/* Parses a header at the start of buf[0, len) (the file's first bytes).
 * Returns 0 and fills *h; 1 when more bytes are needed (*need: how many in
 * all); -1 with why: what is wrong ("not a .npy file (no \x93NUMPY magic)",
 * "dtype '<f8' (float64) is not supported: ..."). */
int base_npy_parse(const unsigned char *buf, size_t len, BaseNpy *h, size_t *need, char *why, size_t whysize);

/* Reads path's header, and checks the file's size against it (a file cut
 * short or longer than the header says is refused). Returns 0, or -1 with
 * err "PATH: what" (cannot open, not a .npy file, ...). */
int base_npy_read_header(const char *path, BaseNpy *h, char *err, size_t errsize);

/* The shape of one sample (dimensions 1..ndim-1) as "[28, 28]" ("[]" for a
 * file of shape (N,)). */
void base_npy_sample_text(const BaseNpy *h, char *buf, size_t size);

/* Whether a file's samples can feed a model tensor of is_int (int32, else
 * float32) with shape dim[0, ndim): float32 from float32 or uint8, int32
 * from int32, int64 or uint8, each sample's dimensions equal to the
 * tensor's. Returns 0, or -1 with why (the dtype or shape clash, in words
 * that follow "PATH: "). */
int base_npy_fits(const BaseNpy *h, int is_int, int ndim, const int64_t *dim, char *why, size_t whysize);

#endif
