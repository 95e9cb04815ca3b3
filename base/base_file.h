/* base/base_file.h: files read whole, and files replaced atomically: the one
 * reader and the one writer every part uses (the .pipe source and text
 * schedules, plan.bin, data sets, checkpoints and their manifest).
 *
 * A replaced file is never seen half-written: it is written to PATH.tmp.PID
 * in the same folder, fsync'ed, renamed over PATH, and the folder fsync'ed,
 * so a crash leaves the old file or the new one, and the rename itself is
 * durable. */
#ifndef PIPE_BASE_FILE_H
#define PIPE_BASE_FILE_H

#include <stddef.h>

typedef enum BaseRead {
    BASE_READ_OK,
    BASE_READ_CANNOT_OPEN, /* errno says why (ENOENT: no such file) */
    BASE_READ_NOT_A_FILE,  /* a folder, a device, a pipe */
    BASE_READ_TOO_LARGE,   /* over the caller's limit */
    BASE_READ_FAILED       /* out of memory, or a read error (a file that shrank) */
} BaseRead;

/* Reads path whole into a malloc'd buffer (*len bytes and a NUL after
 * them); limit: the largest size accepted. On failure *data is NULL and why
 * says it in words ("No such file or directory", "not a regular file",
 * "larger than 16777216 bytes", ...), for the caller's own message; errno is
 * kept for BASE_READ_CANNOT_OPEN. */
BaseRead base_read_file(const char *path, size_t limit, unsigned char **data, size_t *len, char *why,
                        size_t whysize);

/* An atomic replacement written in pieces: base_atomic_begin returns a
 * descriptor of the temporary file (or -1, err set); base_write_all writes
 * to it (0, or -1 with errno); base_atomic_finish (ok: the writes
 * succeeded) syncs, renames over path and syncs the folder, or removes the
 * temporary file. Both return 0, or -1 with err "cannot write 'PATH': ...". */
int base_atomic_begin(const char *path, char **tmp, char *err, size_t errsize);
int base_write_all(int fd, const void *data, size_t len);
int base_atomic_finish(int fd, char *tmp, const char *path, int ok, char *err, size_t errsize);
/* The same, for a caller that has fsynced fd itself (ok covers that too);
 * what names the step that failed, for the message ("fsync: ", or ""),
 * with errno still that step's. */
int base_atomic_finish_synced(int fd, char *tmp, const char *path, int ok, const char *what, char *err,
                              size_t errsize);
/* The whole of data, atomically. */
int base_write_atomic(const char *path, const void *data, size_t len, char *err, size_t errsize);
/* fsync of a folder (a rename or a new entry made durable); a file system
 * that cannot sync folders (EINVAL) counts as done. 0, or -1 with errno. */
int base_fsync_folder(const char *dir);
/* The same for the folder that holds path. */
int base_fsync_parent(const char *path);

#endif
