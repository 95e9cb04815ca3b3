/* base/base_file.c: see base_file.h. */
#include "base_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A pipe or a terminal (pipec <(...)): read until the end, up to limit. */
static BaseRead read_stream(int fd, size_t limit, unsigned char **data, size_t *len, char *why, size_t whysize)
{
    size_t cap = 65536, n = 0;
    unsigned char *d = malloc(cap + 1);
    for (;;) {
        if (d && n == cap) {
            unsigned char *nd = cap <= limit ? realloc(d, 2 * cap + 1) : NULL;
            if (!nd && cap <= limit) {
                free(d);
                d = NULL;
            } else if (nd) {
                d = nd, cap *= 2;
            }
        }
        if (!d) {
            snprintf(why, whysize, "out of memory after %zu bytes", n);
            close(fd);
            return BASE_READ_FAILED;
        }
        if (n > limit) {
            snprintf(why, whysize, "larger than %zu bytes", limit);
            free(d);
            close(fd);
            return BASE_READ_TOO_LARGE;
        }
        ssize_t r = read(fd, d + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(why, whysize, "%s after %zu bytes", strerror(errno), n);
            free(d);
            close(fd);
            return BASE_READ_FAILED;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    d[n] = 0;
    *data = d;
    *len = n;
    return BASE_READ_OK;
}

BaseRead base_read_file(const char *path, size_t limit, unsigned char **data, size_t *len, char *why,
                        size_t whysize)
{
    *data = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        int e = errno;
        snprintf(why, whysize, "%s", strerror(e));
        errno = e;
        return BASE_READ_CANNOT_OPEN;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
        snprintf(why, whysize, "not a regular file");
        close(fd);
        return BASE_READ_NOT_A_FILE;
    }
    if (!S_ISREG(st.st_mode))
        return read_stream(fd, limit, data, len, why, whysize);
    if ((uint64_t)st.st_size > (uint64_t)limit || (uint64_t)st.st_size > (uint64_t)SIZE_MAX - 1) {
        snprintf(why, whysize, "larger than %zu bytes (%lld)", limit, (long long)st.st_size);
        close(fd);
        return BASE_READ_TOO_LARGE;
    }
    size_t n = (size_t)st.st_size, got = 0;
    unsigned char *d = malloc(n + 1);
    if (!d) {
        snprintf(why, whysize, "out of memory for %zu bytes", n);
        close(fd);
        return BASE_READ_FAILED;
    }
    while (got < n) {
        size_t want = n - got < ((size_t)1 << 30) ? n - got : ((size_t)1 << 30);
        ssize_t r = read(fd, d + got, want);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            /* a file that shrank under us is as bad as a read error */
            snprintf(why, whysize, "%s after %zu of %zu bytes", r < 0 ? strerror(errno) : "the file shrank", got, n);
            free(d);
            close(fd);
            return BASE_READ_FAILED;
        }
        got += (size_t)r;
    }
    close(fd);
    d[n] = 0;
    *data = d;
    *len = n;
    return BASE_READ_OK;
}

int base_write_all(int fd, const void *data, size_t len)
{
    const unsigned char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len < ((size_t)1 << 30) ? len : ((size_t)1 << 30));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int base_fsync_folder(const char *dir)
{
    int fd = open(dir, O_RDONLY);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0 && e == EINVAL)
        return 0;
    errno = e;
    return rc;
}

/* The folder of path, synced: without it a crash may bring back the old
 * directory entry after the rename. */
int base_fsync_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return base_fsync_folder(".");
    if (slash == path)
        return base_fsync_folder("/");
    char *dir = malloc((size_t)(slash - path) + 1);
    if (!dir) {
        errno = ENOMEM;
        return -1;
    }
    memcpy(dir, path, (size_t)(slash - path));
    dir[slash - path] = 0;
    int rc = base_fsync_folder(dir);
    int e = errno;
    free(dir);
    errno = e;
    return rc;
}

int base_atomic_begin(const char *path, char **tmp, char *err, size_t errsize)
{
    size_t tlen = strlen(path) + 32;
    *tmp = malloc(tlen);
    if (!*tmp) {
        snprintf(err, errsize, "cannot write '%s': out of memory", path);
        return -1;
    }
    snprintf(*tmp, tlen, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(*tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        snprintf(err, errsize, "cannot write '%s': %s", *tmp, strerror(errno));
        free(*tmp);
        *tmp = NULL;
    }
    return fd;
}

int base_atomic_finish(int fd, char *tmp, const char *path, int ok, char *err, size_t errsize)
{
    const char *what = "";
    if (ok && fsync(fd) != 0)
        ok = 0, what = "fsync: ";
    return base_atomic_finish_synced(fd, tmp, path, ok, what, err, errsize);
}

int base_atomic_finish_synced(int fd, char *tmp, const char *path, int ok, const char *what, char *err,
                              size_t errsize)
{
    int e = errno, rc = ok ? 0 : -1;
    if (close(fd) != 0 && rc == 0)
        rc = -1, e = errno;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -1, e = errno;
    if (rc != 0) {
        snprintf(err, errsize, "cannot write '%s': %s%s", path, what, strerror(e));
        unlink(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    if (base_fsync_parent(path) != 0) {
        snprintf(err, errsize, "%s: written, but syncing its folder failed: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

int base_write_atomic(const char *path, const void *data, size_t len, char *err, size_t errsize)
{
    char *tmp;
    int fd = base_atomic_begin(path, &tmp, err, errsize);
    if (fd < 0)
        return -1;
    int ok = base_write_all(fd, data, len) == 0;
    return base_atomic_finish(fd, tmp, path, ok, err, errsize);
}
