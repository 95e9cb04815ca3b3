/* runtime/rt_resize.h: the bilinear resize of cifar10(DIR, resize = S),
 * bit for bit what PyTorch computes (rt_resize.c says how;
 * tests/parity/test_resize.py checks it). */
#ifndef PIPE_RT_RESIZE_H
#define PIPE_RT_RESIZE_H

#include <stdint.h>

/* src (C, IH, IW) to dst (C, OH, OW), float, row-major: PyTorch's
 * F.interpolate(mode='bilinear', align_corners=False, antialias=False).
 * Needs no memory but its stack (32 KiB) and never fails. */
void rt_resize_bilinear(float *dst, const float *src, int64_t c, int64_t ih, int64_t iw, int64_t oh, int64_t ow);

#endif
