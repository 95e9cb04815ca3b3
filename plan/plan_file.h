/* plan/plan_file.h: plan.bin, written by pipec and read by pipec
 * (--list plan.bin) and pipert: one reader for both (docs/plan-format.md).
 *
 *   offset 0   "PIPEPLAN"   magic
 *          8   u32 version  (PLAN_VERSION)
 *         12   u32 probe    0x01020304, little-endian
 *         16   u32 sections
 *         20   u32 header bytes (40)
 *         24   u32 CRC-32 of everything after the header
 *         28   u32 flags (0)
 *         32   u64 file bytes
 *         40   section table: per section u32 id, u32 0, u64 offset, u64 bytes
 *              sections, each 8-byte aligned
 * All integers little-endian, floats IEEE-754 binary64. */
#ifndef PIPE_PLAN_FILE_H
#define PIPE_PLAN_FILE_H

#include <stddef.h>

#include "plan_ir.h"

#define PLAN_VERSION 4 /* 2: each layer records its initialisation; 3: batchnorm2d's momentum, transpose's dimensions, residual blocks' sub-layers; 4: 8-byte instructions */

/* Writes the plan atomically (a temporary file, fsync, rename). Returns 0,
 * or -1 with a message. */
int plan_write(const char *path, const PlanIR *ir, char *err, size_t errsize);
/* plan_write in two halves, for a caller that writes while it still
 * checks: plan_write_begin writes every byte to the temporary file beside
 * path and syncs it (nothing replaced yet), and returns it, or NULL with a
 * message; plan_write_end with keep renames it over path and syncs the
 * folder (0, or -1 with a message), without keep removes it (returns 0). Either way the
 * PlanWriting is freed. */
typedef struct PlanWriting PlanWriting;
PlanWriting *plan_write_begin(const char *path, const PlanIR *ir, char *err, size_t errsize);
int plan_write_end(PlanWriting *w, int keep, char *err, size_t errsize);
/* Serialises into memory (the caller frees *data). */
void plan_encode(const PlanIR *ir, unsigned char **data, size_t *len);
/* Reads a plan into ir (the model, settings, partition, costs and
 * programs), then verifies the programs as pipec did. Returns 0, or -1 with
 * "corrupted plan: SECTION at offset N: ..." or "plan version N, this
 * program reads 1" (ir then holds nothing). Free with plan_ir_free. */
int plan_read(const char *path, PlanIR *ir, char *err, size_t errsize);
int plan_decode(const unsigned char *data, size_t len, PlanIR *ir, char *err, size_t errsize);

#endif
