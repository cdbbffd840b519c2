/* One pass for a block's XXH128 and its sub-blocks' XXH3-64 digests (xxh3dual.c). */
#ifndef VHDSYNC_XXH3DUAL_H
#define VHDSYNC_XXH3DUAL_H
#include <stddef.h>
#include <stdint.h>

/* A block being hashed: accumulators of the block and of the current sub-block, and a stretch not yet whole. */
typedef struct {
  _Alignas(64) uint64_t accW[8];
  _Alignas(64) uint64_t accS[8];
  _Alignas(64) uint8_t stage[1024];
  uint64_t length, done, subStart, low, high;
  uint32_t subSize, fill;
} DualState;

/* Receives each sub-block's XXH3-64 digest, in order. */
typedef void (*dual_emit)(void *ctx, uint64_t digest);

/* Whether a block of `length` bytes with sub-blocks of `subSize` bytes is hashed in one pass (and it is not off). */
int dual_fits(uint64_t length, uint32_t subSize);
/* Starts a block of `length` bytes (dual_fits must hold). */
void dual_reset(DualState *d, uint64_t length, uint32_t subSize);
/* Hashes the next `n` bytes of the block; `emit` gets each sub-block's digest as it completes. */
void dual_update(DualState *d, const uint8_t *p, size_t n, dual_emit emit, void *ctx);
/* The stripe functions in use ("avx512", "avx2" or "default"), or "off" (VHDSYNC_HASH_ONE_PASS=0). */
const char *dual_isa(void);
/* Once all `length` bytes are in: d->low and d->high hold the block's XXH128. */

#endif
