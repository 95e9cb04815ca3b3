/* runtime/rt_tb.h: TensorBoard event files (pipert --tensorboard DIR),
 * written by hand: no TensorFlow, no protobuf library.
 *
 * A file DIR/events.out.tfevents.TIME.HOST (TIME: whole seconds since the
 * epoch at the start) is a sequence of TFRecords, each
 *
 *   uint64 length, uint32 masked_crc32c(length), data, uint32 masked_crc32c(data)
 *
 * (little-endian; masked_crc32c(x) = ((c >> 15) | (c << 17)) + 0xa282ead8
 * with c the CRC-32C, Castagnoli, of x), whose data is one tensorflow.Event
 * protobuf: wall_time (field 1, double), step (field 2, int64) and either
 * file_version (field 3, "brain.Event:2", the first record) or a summary
 * (field 5) of values (field 1), each a tag (field 1, string) and a
 * simple_value (field 2, float). Each record is flushed when written, so
 * TensorBoard shows a run as it goes. */
#ifndef PIPE_RT_TB_H
#define PIPE_RT_TB_H

#include <stddef.h>
#include <stdint.h>

typedef struct RtTb RtTb;

/* Creates DIR (and its parents) where missing and a new event file in it,
 * with its file_version record. NULL with err "--tensorboard DIR: why". */
RtTb *rt_tb_open(const char *dir, char *err, size_t errsize);
/* One event at step: n scalars tag[i] = value[i] (as float32). */
void rt_tb_scalars(RtTb *tb, int64_t step, const char *const *tag, const double *value, int n);
/* The file's path. */
const char *rt_tb_path(const RtTb *tb);
void rt_tb_close(RtTb *tb);

/* The CRC-32C of data[0, n) (exported for the tests). */
uint32_t rt_tb_crc32c(const void *data, size_t n);

#endif
