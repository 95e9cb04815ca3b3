/* runtime/rt_tb.c: TensorBoard event files (rt_tb.h). */
#include "rt_tb.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

struct RtTb {
    FILE *f;
    char path[4400];
};

uint32_t rt_tb_crc32c(const void *data, size_t n)
{
    static uint32_t table[256];
    static int ready;
    if (!ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
            table[i] = c;
        }
        ready = 1;
    }
    const unsigned char *p = data;
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++)
        c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

static uint32_t masked(const void *data, size_t n)
{
    uint32_t c = rt_tb_crc32c(data, n);
    return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

/* ---- a protobuf message in a growing buffer ---------------------------------- */

typedef struct Buf {
    unsigned char b[4096];
    size_t n;
} Buf;

static void put(Buf *m, const void *p, size_t n)
{
    if (m->n + n <= sizeof m->b)
        memcpy(m->b + m->n, p, n);
    m->n += n;
}

static void varint(Buf *m, uint64_t v)
{
    unsigned char c[10];
    size_t k = 0;
    do {
        c[k] = (unsigned char)(v & 0x7f);
        v >>= 7;
        if (v)
            c[k] |= 0x80;
        k++;
    } while (v);
    put(m, c, k);
}

static void le(Buf *m, uint64_t v, int bytes)
{
    unsigned char c[8];
    for (int i = 0; i < bytes; i++)
        c[i] = (unsigned char)(v >> (8 * i));
    put(m, c, (size_t)bytes);
}

/* field number and wire type: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32 */
static void key(Buf *m, int field, int wire)
{
    varint(m, (uint64_t)field << 3 | (uint64_t)wire);
}

static void bytes_field(Buf *m, int field, const void *p, size_t n)
{
    key(m, field, 2);
    varint(m, n);
    put(m, p, n);
}

static void event_head(Buf *m, int64_t step)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    double wall = (double)tv.tv_sec + (double)tv.tv_usec * 1e-6;
    uint64_t w;
    memcpy(&w, &wall, 8);
    key(m, 1, 1);
    le(m, w, 8);
    key(m, 2, 0);
    varint(m, (uint64_t)step);
}

static void record(RtTb *tb, const Buf *m)
{
    if (m->n > sizeof m->b)
        return; /* tags too long: nothing pipe writes */
    unsigned char len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (unsigned char)((uint64_t)m->n >> (8 * i));
    uint32_t c1 = masked(len, 8), c2 = masked(m->b, m->n);
    unsigned char a[4], b[4];
    for (int i = 0; i < 4; i++)
        a[i] = (unsigned char)(c1 >> (8 * i)), b[i] = (unsigned char)(c2 >> (8 * i));
    fwrite(len, 1, 8, tb->f);
    fwrite(a, 1, 4, tb->f);
    fwrite(m->b, 1, m->n, tb->f);
    fwrite(b, 1, 4, tb->f);
    fflush(tb->f);
}

RtTb *rt_tb_open(const char *dir, char *err, size_t errsize)
{
    char p[4096];
    if (!dir[0] || snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p - 300) {
        snprintf(err, errsize, "--tensorboard %.600s: the path is too long", dir);
        return NULL;
    }
    for (char *q = p + 1;; q++) { /* mkdir -p */
        if (*q != '/' && *q)
            continue;
        char c = *q;
        *q = 0;
        struct stat st;
        if (stat(p, &st) != 0 && mkdir(p, 0755) != 0 && errno != EEXIST) {
            snprintf(err, errsize, "--tensorboard %.600s: cannot create %.600s: %s", dir, p, strerror(errno));
            return NULL;
        }
        if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) {
            snprintf(err, errsize, "--tensorboard %.600s: %.600s is not a directory", dir, p);
            return NULL;
        }
        *q = c;
        if (!c)
            break;
    }
    RtTb *tb = calloc(1, sizeof *tb);
    if (!tb) {
        snprintf(err, errsize, "--tensorboard %.600s: out of memory", dir);
        return NULL;
    }
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    long long now = (long long)time(NULL);
    int fd = -1;
    for (int k = 0; k < 100 && fd < 0; k++) {
        if (k == 0)
            snprintf(tb->path, sizeof tb->path, "%s/events.out.tfevents.%lld.%s", dir, now, host);
        else
            snprintf(tb->path, sizeof tb->path, "%s/events.out.tfevents.%lld.%s.%d", dir, now, host, k);
        fd = open(tb->path, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0 || !(tb->f = fdopen(fd, "wb"))) {
        snprintf(err, errsize, "--tensorboard %.600s: cannot write %.900s: %s", dir, tb->path, strerror(errno));
        if (fd >= 0)
            close(fd);
        free(tb);
        return NULL;
    }
    Buf m = {.n = 0};
    event_head(&m, 0);
    bytes_field(&m, 3, "brain.Event:2", 13);
    record(tb, &m);
    return tb;
}

void rt_tb_scalars(RtTb *tb, int64_t step, const char *const *tag, const double *value, int n)
{
    if (!tb)
        return;
    Buf sum = {.n = 0};
    for (int i = 0; i < n; i++) {
        Buf v = {.n = 0};
        bytes_field(&v, 1, tag[i], strlen(tag[i]));
        float f = (float)value[i];
        uint32_t u;
        memcpy(&u, &f, 4);
        key(&v, 2, 5);
        le(&v, u, 4);
        bytes_field(&sum, 1, v.b, v.n);
    }
    Buf m = {.n = 0};
    event_head(&m, step);
    bytes_field(&m, 5, sum.b, sum.n);
    record(tb, &m);
}

const char *rt_tb_path(const RtTb *tb)
{
    return tb ? tb->path : "";
}

void rt_tb_close(RtTb *tb)
{
    if (!tb)
        return;
    fclose(tb->f);
    free(tb);
}
