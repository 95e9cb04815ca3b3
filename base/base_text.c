/* base/base_text.c: numbers as people read them (listings, --stats, logs). */
#include "base_text.h"

#include <stdio.h>

const char *base_commas(int64_t v, char *buf, size_t size)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%lld", (long long)(v < 0 ? -v : v));
    size_t o = 0;
    if (v < 0 && o < size - 1)
        buf[o++] = '-';
    for (int i = 0; i < n && o < size - 1; i++) {
        if (i > 0 && (n - i) % 3 == 0 && o < size - 1)
            buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = '\0';
    return buf;
}

const char *base_time_text(double s, char *buf, size_t size)
{
    if (s >= 1)
        snprintf(buf, size, "%.3f s", s);
    else if (s >= 1e-3)
        snprintf(buf, size, "%.3f ms", s * 1e3);
    else
        snprintf(buf, size, "%.3f us", s * 1e6);
    return buf;
}

const char *base_bytes_text(double b, char *buf, size_t size)
{
    if (b >= 1 << 30)
        snprintf(buf, size, "%.2f GiB", b / (1 << 30));
    else if (b >= 1 << 20)
        snprintf(buf, size, "%.2f MiB", b / (1 << 20));
    else if (b >= 1 << 10)
        snprintf(buf, size, "%.2f KiB", b / (1 << 10));
    else
        snprintf(buf, size, "%.0f B", b);
    return buf;
}
