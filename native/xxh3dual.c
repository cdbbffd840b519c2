/*
 * A block's XXH128 digest and its sub-blocks' XXH3-64 digests in one pass over the data, bit for bit what XXH128 of
 * the block and XXH3-64 of each sub-block give (tests compare them with xxHash's own functions).
 *
 * Why it works: for inputs longer than 240 bytes both functions run the same loop over 1 KiB stretches ("blocks" in
 * xxHash, 16 stripes of 64 bytes, stripe s keyed by the secret at 8 s), and a stretch only ever adds to the
 * accumulators a sum that depends on its bytes and the secret, never on the accumulators; between stretches each
 * hash scrambles its own accumulators. So the sum of a stretch is computed once (into zeroed accumulators) and added
 * to the block's accumulators and to the sub-block's. Only the last stretch of each sub-block differs: its 16th
 * stripe is hashed as xxHash's "last stripe" (another part of the secret, no scramble) for the sub-block, and as a
 * plain stripe for the block unless the block ends there too. Hashing the data once instead of twice halves the CPU
 * createmeta spends in hashing.
 *
 * It applies when the block's length and the sub-block size are multiples of 1 KiB (every stretch is whole and every
 * hash is a long one); xxh3blocks.c hashes other blocks in two passes as before. Built into the block hasher by
 * scripts/build-native.js against xxhash-addon's copy of xxHash, whose AVX-512, AVX2 and SSE2 stripe functions it
 * uses, picked at run time as xxHash's own dispatch does.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#define DUAL_X86 1
#define XXH_X86DISPATCH
#define XXH_DISPATCH_AVX2 1
#define XXH_DISPATCH_AVX512 1
#define XXH_TARGET_AVX2 __attribute__((__target__("avx2")))
#define XXH_TARGET_AVX512 __attribute__((__target__("avx512f")))
#include <immintrin.h>
#endif
#define XXH_INLINE_ALL
#include "xxhash.h"
#include "xxh3dual.h"

#define STRETCH 1024u
#define STRIPES 16u
/* The parts of the default secret each step uses (xxHash's XXH3_hashLong_internal_loop and finalizers). */
#define SECRET XXH3_kSecret
#define SECRET_SIZE sizeof(XXH3_kSecret)
#define SCRAMBLE_AT (SECRET_SIZE - XXH_STRIPE_LEN)
#define LAST_STRIPE_AT (SECRET_SIZE - XXH_STRIPE_LEN - 7)
#define MERGE_LOW_AT 11
#define MERGE_HIGH_AT (SECRET_SIZE - XXH_STRIPE_LEN - 11)

static const uint64_t INIT[8] = XXH3_INIT_ACC;
/* Off with VHDSYNC_HASH_ONE_PASS=0 (pick() below). */
static int enabled = 1;

int dual_fits(uint64_t length, uint32_t subSize) {
  return enabled && SECRET_SIZE == 192 && length > 0 && length % STRETCH == 0 && subSize > 0 && subSize % STRETCH == 0;
}

void dual_reset(DualState *d, uint64_t length, uint32_t subSize) {
  memcpy(d->accW, INIT, sizeof INIT);
  memcpy(d->accS, INIT, sizeof INIT);
  d->length = length;
  d->subSize = subSize;
  d->done = 0;
  d->subStart = 0;
  d->fill = 0;
  d->low = d->high = 0;
}

static inline void add(uint64_t *acc, const uint64_t *sum) {
  for (int i = 0; i < 8; i++) acc[i] += sum[i];
}

/* What one stretch does to both hashes; `acc` hashes `n` stripes, `one` one stripe, `scramble` between stretches. */
#define STRETCH_FN(name, acc_fn, one_fn, scramble_fn, attr)                                                         \
  attr static void stretch_##name(DualState *d, const uint8_t *c, dual_emit emit, void *ctx) {                      \
    uint64_t subLen = d->length - d->subStart < d->subSize ? d->length - d->subStart : d->subSize;                   \
    int endS = d->done + STRETCH - d->subStart == subLen, endW = d->done + STRETCH == d->length;                      \
    XXH_ALIGN(64) uint64_t sum[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                                      \
    acc_fn(sum, c, SECRET, STRIPES - 1);                                                                             \
    if (!endS) {                                                                                                     \
      one_fn(sum, c + (STRIPES - 1) * XXH_STRIPE_LEN, SECRET + (STRIPES - 1) * XXH_SECRET_CONSUME_RATE);              \
      add(d->accS, sum);                                                                                             \
      scramble_fn(d->accS, SECRET + SCRAMBLE_AT);                                                                    \
      add(d->accW, sum);                                                                                             \
      scramble_fn(d->accW, SECRET + SCRAMBLE_AT);                                                                    \
    } else {                                                                                                         \
      XXH_ALIGN(64) uint64_t last[8];                                                                                \
      memcpy(last, sum, sizeof last);                                                                                \
      one_fn(last, c + (STRIPES - 1) * XXH_STRIPE_LEN, SECRET + LAST_STRIPE_AT);                                     \
      add(d->accS, last);                                                                                            \
      emit(ctx, XXH3_mergeAccs(d->accS, SECRET + MERGE_LOW_AT, subLen * XXH_PRIME64_1));                             \
      memcpy(d->accS, INIT, sizeof INIT);                                                                            \
      d->subStart += subLen;                                                                                         \
      if (endW) {                                                                                                    \
        add(d->accW, last);                                                                                          \
        d->low = XXH3_mergeAccs(d->accW, SECRET + MERGE_LOW_AT, d->length * XXH_PRIME64_1);                          \
        d->high = XXH3_mergeAccs(d->accW, SECRET + MERGE_HIGH_AT, ~(d->length * XXH_PRIME64_2));                     \
      } else {                                                                                                       \
        one_fn(sum, c + (STRIPES - 1) * XXH_STRIPE_LEN, SECRET + (STRIPES - 1) * XXH_SECRET_CONSUME_RATE);            \
        add(d->accW, sum);                                                                                           \
        scramble_fn(d->accW, SECRET + SCRAMBLE_AT);                                                                  \
      }                                                                                                              \
    }                                                                                                                \
    d->done += STRETCH;                                                                                              \
  }

STRETCH_FN(default, XXH3_accumulate, XXH3_accumulate_512, XXH3_scrambleAcc, )
#ifdef DUAL_X86
STRETCH_FN(avx2, XXH3_accumulate_avx2, XXH3_accumulate_512_avx2, XXH3_scrambleAcc_avx2, XXH_TARGET_AVX2)
STRETCH_FN(avx512, XXH3_accumulate_avx512, XXH3_accumulate_512_avx512, XXH3_scrambleAcc_avx512, XXH_TARGET_AVX512)
#endif

typedef void (*stretch_fn)(DualState *, const uint8_t *, dual_emit, void *);
static stretch_fn stretch = stretch_default;

/*
 * The widest stripe functions this CPU runs, picked once per process when the addon loads, before any thread hashes
 * (libgcc's check includes the OS saving the wide registers). VHDSYNC_HASH_ONE_PASS=0 turns one pass off (for
 * comparisons), =avx2 or =default picks narrower functions (tests); read here once, not by each thread's load.
 */
__attribute__((constructor)) static void pick(void) {
  const char *want = getenv("VHDSYNC_HASH_ONE_PASS");
  enabled = !(want && strcmp(want, "0") == 0);
#ifdef DUAL_X86
  int cap = want && strcmp(want, "default") == 0 ? 0 : want && strcmp(want, "avx2") == 0 ? 1 : 2;
  __builtin_cpu_init();
  if (cap >= 2 && __builtin_cpu_supports("avx512f")) stretch = stretch_avx512;
  else if (cap >= 1 && __builtin_cpu_supports("avx2")) stretch = stretch_avx2;
#endif
}

const char *dual_isa(void) {
  if (!enabled) return "off";
#ifdef DUAL_X86
  if (stretch == stretch_avx512) return "avx512";
  if (stretch == stretch_avx2) return "avx2";
#endif
  return "default";
}

void dual_update(DualState *d, const uint8_t *p, size_t n, dual_emit emit, void *ctx) {
  while (n > 0) {
    if (d->fill == 0 && n >= STRETCH) {
      stretch(d, p, emit, ctx);
      p += STRETCH, n -= STRETCH;
      continue;
    }
    size_t k = STRETCH - d->fill < n ? STRETCH - d->fill : n;
    memcpy(d->stage + d->fill, p, k);
    d->fill += (uint32_t)k, p += k, n -= k;
    if (d->fill == STRETCH) {
      stretch(d, d->stage, emit, ctx);
      d->fill = 0;
    }
  }
}
