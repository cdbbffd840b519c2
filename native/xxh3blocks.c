/*
 * vhdsync's block hasher: XXH128 block digests and XXH3-64 sub-digests of blocks given as file ranges, the whole
 * group in one call, each 256 KiB piece read with pread into one buffer and hashed by both digests while it is in L2
 * (or, asked for, hashed in place through mmap). Through JavaScript each 1 MiB piece cost a readSync, an xxhash-addon
 * call per digest and the Buffers between. Mapping, which avoids the copy out of the page cache, was measured slower
 * on this kernel: populating and unmapping each page costs what copying it does, and two threads mapping at once
 * serialise (decision 0027). It knows nothing of image formats: file ranges in, digests out (src/meta/hash-sync.ts
 * builds the ranges). Built by scripts/build-native.js against Node-API and xxhash-addon's own copy of xxHash, so the
 * digests are the same functions'; when it cannot be built, hash-sync.ts reads and hashes in JavaScript as before.
 *
 * A file that shrinks while mapped makes the next access past its end raise SIGBUS. A handler installed once per
 * process (when mapping is first used) jumps back out of the hashing of this thread's current call, which then throws
 * (code ERR_FILE_SHRANK); a SIGBUS anywhere else goes on to the handler that was there before (by default: the
 * process dies, as without us).
 */
#define _GNU_SOURCE
#define _FILE_OFFSET_BITS 64
#define NAPI_VERSION 8
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <node_api.h>
#include "xxhash.h"
#include "xxh3dual.h"
#ifdef XXHASH_DISPATCH
#include "xxh_x86dispatch.h"
#endif

/* Bytes hashed at a time by both digests: the second pass (sub-digests) finds them still in L2. */
#ifndef PIECE_KIB
#define PIECE_KIB 256
#endif
#define PIECE ((unsigned)PIECE_KIB << 10)
/* Bytes mapped at a time: few mmap/munmap calls (each munmap of a threaded process flushes the other cores' TLBs),
 * little resident at once (mapped page-cache pages count in the process's RSS). */
#define WINDOW (16u << 20)
/* Files one call may name; exported as `maxFiles`, which src/meta/hash-sync.ts reads. */
#define MAX_FILES 64

static uint8_t zeros[PIECE];

/* The jump out of the current call's hashing on this thread, or NULL when no mapped bytes are being read. */
static __thread sigjmp_buf *volatile guard;
static struct sigaction previous;
static pthread_once_t installed = PTHREAD_ONCE_INIT;

static void on_sigbus(int sig, siginfo_t *info, void *ctx) {
  if (guard) siglongjmp(*guard, 1);
  // Not ours: what would have happened without this handler.
  if (previous.sa_flags & SA_SIGINFO) {
    if (previous.sa_sigaction) previous.sa_sigaction(sig, info, ctx);
    return;
  }
  if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
    previous.sa_handler(sig);
    return;
  }
  // An ignored SIGBUS sent by kill() stays ignored; anything else gets the default action (the process dies).
  if (previous.sa_handler == SIG_IGN && info->si_code <= 0) return;
  signal(SIGBUS, SIG_DFL);
  raise(SIGBUS);
}

static void install(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, &previous);
}

/* One thread's (one Node environment's) read buffer for the pread path, allocated on first use. */
typedef struct {
  uint8_t *buf;
} Instance;

static void free_instance(napi_env env, void *data, void *hint) {
  (void)env, (void)hint;
  free(((Instance *)data)->buf);
  free(data);
}

/* The digests of one block in progress; mirrors hashBlocksSync in src/meta/hash-sync.ts. */
typedef struct {
  XXH3_state_t *h, *sub;
  /* Both digests in one pass (xxh3dual.c), when the block's length and subSize allow it; else h and sub. */
  DualState *dual;
  int useDual;
  uint64_t length;
  int started;
  uint64_t zeroRun;
  uint32_t subSize, subFill;
  uint64_t zeroSub;
  uint8_t *subs;
  size_t nsubs, subCap;
} Block;

static void put_sub(Block *b, uint64_t d) {
  XXH64_canonical_t c;
  // Never past the buffer (the count is exact: ceil(block length / subSize); a slip is a wrong digest, not a crash).
  if (b->nsubs == b->subCap) return;
  XXH64_canonicalFromHash(&c, d);
  memcpy(b->subs + 8 * b->nsubs++, c.digest, 8);
}

static void feed_subs(Block *b, const uint8_t *p, size_t n) {
  while (n > 0) {
    if (b->subFill == 0 && n >= b->subSize) {
      put_sub(b, XXH3_64bits(p, b->subSize));
      p += b->subSize, n -= b->subSize;
      continue;
    }
    if (b->subFill == 0) XXH3_64bits_reset(b->sub);
    size_t k = b->subSize - b->subFill < n ? b->subSize - b->subFill : n;
    XXH3_64bits_update(b->sub, p, k);
    p += k, n -= k, b->subFill += (uint32_t)k;
    if (b->subFill == b->subSize) {
      put_sub(b, XXH3_64bits_digest(b->sub));
      b->subFill = 0;
    }
  }
}

/* The block's XXH128, once all its bytes are in. */
static XXH128_hash_t block_digest(Block *b) {
  if (!b->useDual) return XXH3_128bits_digest(b->h);
  XXH128_hash_t h = {b->dual->low, b->dual->high};
  return h;
}

static void emit_sub(void *b, uint64_t d) {
  put_sub((Block *)b, d);
}

static void feed_data(Block *b, const uint8_t *p, size_t n) {
  if (b->useDual) {
    dual_update(b->dual, p, n, emit_sub, b);
    return;
  }
  for (size_t at = 0; at < n; at += PIECE) {
    size_t k = n - at < PIECE ? n - at : PIECE;
    XXH3_128bits_update(b->h, p + at, k);
    if (b->subs) feed_subs(b, p + at, k);
  }
}

static void feed_zeros(Block *b, uint64_t n) {
  if (!b->started) {
    // Zeros before any data are only counted: an all-zero block is reported as such, never hashed.
    b->zeroRun += n;
    return;
  }
  for (; n > 0; n -= n < PIECE ? n : PIECE) feed_data(b, zeros, n < PIECE ? n : PIECE);
}

/* Bytes of a file (mapped or read): counted while all zero, hashed from the first non-zero byte on. */
static void feed(Block *b, const uint8_t *p, size_t n) {
  if (!b->started) {
    size_t z = 0;
    while (z + 8 <= n) {
      uint64_t w;
      memcpy(&w, p + z, 8);
      if (w) break;
      z += 8;
    }
    while (z < n && !p[z]) z++;
    b->zeroRun += z;
    if (z == n) return;
    p += z, n -= z;
    b->started = 1;
    uint64_t run = b->zeroRun;
    if (b->useDual) {
      // The zeros before the first data are hashed with it: one pass gives the zero sub-blocks' digests as well.
      dual_reset(b->dual, b->length, b->subSize);
      for (uint64_t left = run; left > 0; left -= left < PIECE ? left : PIECE) dual_update(b->dual, zeros, left < PIECE ? left : PIECE, emit_sub, b);
      feed_data(b, p, n);
      return;
    }
    XXH3_128bits_reset(b->h);
    if (b->subs) {
      // Whole zero sub-blocks take the precomputed digest; a partial one is hashed.
      for (uint64_t k = run / b->subSize; k > 0; k--) put_sub(b, b->zeroSub);
      for (uint64_t left = run % b->subSize; left > 0; left -= left < PIECE ? left : PIECE) feed_subs(b, zeros, left < PIECE ? left : PIECE);
    }
    for (uint64_t left = run; left > 0; left -= left < PIECE ? left : PIECE) XXH3_128bits_update(b->h, zeros, left < PIECE ? left : PIECE);
  }
  feed_data(b, p, n);
}

static napi_value fail(napi_env env, const char *code, const char *message, int32_t file) {
  napi_value c, m, e, f;
  if (napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &c) == napi_ok && napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &m) == napi_ok &&
      napi_create_error(env, c, m, &e) == napi_ok) {
    if (file >= 0 && napi_create_int32(env, file, &f) == napi_ok) napi_set_named_property(env, e, "fileIndex", f);
    napi_throw(env, e);
  }
  return NULL;
}

static const char *errno_code(int err) {
  switch (err) {
    case EIO: return "EIO";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    case ENODEV: return "ENODEV";
    case EOVERFLOW: return "EOVERFLOW";
    default: return "EIO";
  }
}

/* A number argument as an int64, or INT64_MIN when it is not one (-1 is a valid file index: zeros). */
static int64_t int_at(napi_env env, napi_value array, uint32_t i) {
  napi_value v;
  int64_t x;
  if (napi_get_element(env, array, i, &v) != napi_ok || napi_get_value_int64(env, v, &x) != napi_ok) return INT64_MIN;
  return x;
}

/* Triples one call may give in all: far above any group the JavaScript side makes, far below what malloc refuses. */
#define MAX_TRIPLES (1u << 24)

/* Every block's triples, copied out of the JavaScript arrays once and checked (a known file or -1, offsets and lengths
 * not negative): a getter on an element runs before any pointer into the caller's buffers is taken, and what is
 * hashed is what was checked, however the arrays change meanwhile. */
typedef struct {
  int64_t *triples; /* file, offset, length of every range, block after block */
  uint32_t *first;  /* block i's ranges are triples[3*first[i] .. 3*first[i+1]) */
  int64_t *totals;  /* block i's byte count */
} Ranges;

static void free_ranges(Ranges *r) {
  free(r->triples), free(r->first), free(r->totals);
  r->triples = NULL, r->first = NULL, r->totals = NULL;
}

/* Copies argv's blocks into `out`; 0, or -1 after throwing (malformed blocks, too many ranges, no memory). */
static int copy_ranges(napi_env env, napi_value blocks, uint32_t nblocks, uint32_t nfds, Ranges *out) {
  size_t cap = 0, used = 0;
  out->first = malloc(((size_t)nblocks + 1) * sizeof *out->first);
  out->totals = malloc(((size_t)nblocks + 1) * sizeof *out->totals);
  if (!out->first || !out->totals) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return -1;
  }
  for (uint32_t i = 0; i < nblocks; i++) {
    napi_value triples;
    uint32_t n;
    if (napi_get_element(env, blocks, i, &triples) != napi_ok || napi_get_array_length(env, triples, &n) != napi_ok || n % 3 ||
        n > MAX_TRIPLES * 3u - used * 3) {
      napi_throw_range_error(env, NULL, "hashBlocks: a block is a flat array of (file, offset, length) triples naming given files");
      return -1;
    }
    if (used + n / 3 > cap) {
      size_t want = cap ? cap : 64;
      while (want < used + n / 3) want *= 2;
      int64_t *grown = realloc(out->triples, want * 3 * sizeof *grown);
      if (!grown) {
        napi_throw_error(env, "ENOMEM", "out of memory");
        return -1;
      }
      out->triples = grown, cap = want;
    }
    out->first[i] = (uint32_t)used;
    int64_t total = 0;
    for (uint32_t r = 0; r < n; r += 3) {
      int64_t file = int_at(env, triples, r), offset = int_at(env, triples, r + 1), length = int_at(env, triples, r + 2);
      if (file >= (int64_t)nfds || file < -1 || offset < 0 || length < 0 || length > (INT64_C(1) << 40) - total) {
        napi_throw_range_error(env, NULL, "hashBlocks: a block is a flat array of (file, offset, length) triples naming given files");
        return -1;
      }
      int64_t *t = out->triples + 3 * used++;
      t[0] = file, t[1] = offset, t[2] = length;
      total += length;
    }
    out->totals[i] = total;
  }
  out->first[nblocks] = (uint32_t)used;
  return 0;
}

/* A Buffer or Uint8Array argument's bytes and length, or NULL when it is not one. */
static uint8_t *bytes_of(napi_env env, napi_value v, size_t *length) {
  bool is;
  void *data = NULL;
  if (napi_is_typedarray(env, v, &is) == napi_ok && is) {
    napi_typedarray_type type;
    napi_value ab;
    size_t offset;
    if (napi_get_typedarray_info(env, v, &type, length, &data, &ab, &offset) != napi_ok || type != napi_uint8_array) return NULL;
    return data;
  }
  return NULL;
}

/*
 * hashBlocks(fds, blocks, subSize, map[, states, digests, subs, slot]): for each block, given as flat triples (index into fds or -1 for zeros,
 * file offset, length), null when all its bytes are zero, else [XXH128 digest (16 bytes, canonical),
 * XXH3-64 sub-digests of every subSize bytes (8 bytes each, canonical, the last over its shorter piece) or null when
 * subSize is 0]. Bytes past a file's end are zeros, as the drivers' reads give. With `map` the files are mapped,
 * else read. Throws an Error with `code` (an errno name, or ERR_FILE_SHRANK when a mapped file shrank) and
 * `fileIndex`.
 * Given `states`, `digests`, `subs` (Uint8Arrays of at least n, 16n and slot*n bytes, subs null without a second
 * level) and `slot`, block i's results go there instead and nothing is returned: states[i] 1 (all zero: its digests
 * are left for the caller) or 2 (data: its digest at 16i, its sub-digests at slot*i, the slot's rest zeroed). A group
 * then costs three buffers instead of two per block (and a worker transfers them instead of cloning each).
 */
static napi_value hash_blocks(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8], result = NULL;
  uint32_t nfds, nblocks, subSize;
  bool isArray, useMap;
  int fds[MAX_FILES];
  int64_t sizes[MAX_FILES];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4 || napi_is_array(env, argv[0], &isArray) != napi_ok || !isArray ||
      napi_get_array_length(env, argv[0], &nfds) != napi_ok || nfds > MAX_FILES || napi_is_array(env, argv[1], &isArray) != napi_ok || !isArray ||
      napi_get_array_length(env, argv[1], &nblocks) != napi_ok || napi_get_value_uint32(env, argv[2], &subSize) != napi_ok ||
      napi_get_value_bool(env, argv[3], &useMap) != napi_ok) {
    napi_throw_type_error(env, NULL, "hashBlocks(fds, blocks, subSize, map) takes up to 64 descriptors, an array of blocks, a size and a boolean");
    return NULL;
  }
  if (argc > 4 && argc < 8) {
    napi_throw_type_error(env, NULL, "hashBlocks: the packed form takes states, digests, subs and slot");
    return NULL;
  }
  // Everything read out of JavaScript arrays (whose getters may run code) is read first; the output buffers' pointers
  // are taken after, when no more JavaScript runs before they are written.
  for (uint32_t i = 0; i < nfds; i++) {
    int64_t fd = int_at(env, argv[0], i);
    if (fd < 0 || fd > INT32_MAX) return fail(env, "EBADF", "hashBlocks: not a descriptor", -1);
    fds[i] = (int)fd;
  }
  Ranges ranges = {0};
  if (copy_ranges(env, argv[1], nblocks, nfds, &ranges) != 0) {
    free_ranges(&ranges);
    return NULL;
  }
  uint8_t *states = NULL, *digests = NULL, *subsOut = NULL;
  uint32_t slot = 0;
  if (argc >= 8) {
    size_t nStates = 0, nDigests = 0, nSubs = 0;
    bool subsNull = false;
    napi_valuetype t;
    if (napi_typeof(env, argv[6], &t) == napi_ok) subsNull = t == napi_null;
    states = bytes_of(env, argv[4], &nStates);
    digests = bytes_of(env, argv[5], &nDigests);
    if (!subsNull) subsOut = bytes_of(env, argv[6], &nSubs);
    if (!states || !digests || nStates < nblocks || nDigests < (size_t)nblocks * 16 || napi_get_value_uint32(env, argv[7], &slot) != napi_ok ||
        (subSize ? !subsOut || slot == 0 || nSubs < (size_t)nblocks * slot : !subsNull)) {
      napi_throw_type_error(env, NULL, "hashBlocks: states, digests and subs must be Uint8Arrays of n, 16n and slot*n bytes (subs null without sub-blocks)");
      free_ranges(&ranges);
      return NULL;
    }
  }
  for (uint32_t i = 0; i < nfds; i++) {
    struct stat st;
    if (fstat(fds[i], &st) != 0) {
      free_ranges(&ranges);
      return fail(env, errno_code(errno), strerror(errno), (int32_t)i);
    }
    sizes[i] = st.st_size;
  }
  Instance *inst = NULL;
  if (!useMap) {
    if (napi_get_instance_data(env, (void **)&inst) != napi_ok) {
      free_ranges(&ranges);
      return NULL;
    }
    if (!inst) {
      inst = calloc(1, sizeof *inst);
      if (!inst || napi_set_instance_data(env, inst, free_instance, NULL) != napi_ok) {
        free(inst);
        free_ranges(&ranges);
        return fail(env, "ENOMEM", "out of memory", -1);
      }
    }
    if (!inst->buf && posix_memalign((void **)&inst->buf, 4096, PIECE) != 0) {
      inst->buf = NULL;
      free_ranges(&ranges);
      return fail(env, "ENOMEM", "out of memory", -1);
    }
  }
  if (!states && napi_create_array_with_length(env, nblocks, &result) != napi_ok) {
    free_ranges(&ranges);
    return NULL;
  }
  // On the heap, its address fixed before the jump point: nothing the cleanup after a SIGBUS reads lives in a register.
  Block *const b = calloc(1, sizeof(Block));
  if (!b || !(b->h = XXH3_createState()) || !(b->sub = XXH3_createState()) || posix_memalign((void **)&b->dual, 64, sizeof(DualState)) != 0) {
    if (b) XXH3_freeState(b->h), XXH3_freeState(b->sub);
    free(b);
    free_ranges(&ranges);
    return fail(env, "ENOMEM", "out of memory", -1);
  }
  b->subSize = subSize;
  if (subSize) {
    // XXH3-64 of subSize zero bytes, in pieces (a sub-block may be larger than the zero buffer).
    XXH3_64bits_reset(b->sub);
    for (uint32_t left = subSize; left > 0; left -= left < PIECE ? left : PIECE) XXH3_64bits_update(b->sub, zeros, left < PIECE ? left : PIECE);
    b->zeroSub = XXH3_64bits_digest(b->sub);
  }
  long page = sysconf(_SC_PAGESIZE);
  // Live across the jump back from a SIGBUS: volatile, so their values are the ones last stored.
  uint8_t *volatile mapped = NULL;
  volatile size_t mappedLength = 0;
  volatile int32_t current = -1;
  int failed = 0;
  sigjmp_buf jump;
  if (useMap) pthread_once(&installed, install);
  if (sigsetjmp(jump, 1)) {
    guard = NULL;
    munmap(mapped, mappedLength);
    failed = 1;
    fail(env, "ERR_FILE_SHRANK", "the file shrank while it was being hashed", current);
  }
  for (uint32_t i = 0; i < nblocks && !failed; i++) {
    napi_value out = NULL;
    int64_t total = ranges.totals[i];
    if ((subSize && total / subSize >= (1 << 20)) || (states && subSize && (uint64_t)((total + subSize - 1) / subSize) * 8 > slot)) {
      napi_throw_range_error(env, NULL, "hashBlocks: a block is a flat array of (file, offset, length) triples naming given files, its sub-digests fitting its slot");
      failed = 1;
      break;
    }
    b->started = 0, b->zeroRun = 0, b->subFill = 0, b->nsubs = 0;
    b->length = (uint64_t)total;
    b->useDual = subSize && dual_fits(b->length, subSize);
    free(b->subs);
    b->subs = NULL;
    b->subCap = subSize ? (size_t)(total / subSize + 1) : 0;
    if (subSize && !(b->subs = malloc(b->subCap * 8))) {
      fail(env, "ENOMEM", "out of memory", -1);
      failed = 1;
      break;
    }
    for (uint32_t r = ranges.first[i]; r < ranges.first[i + 1] && !failed; r++) {
      const int64_t *t = ranges.triples + 3 * (size_t)r;
      int64_t file = t[0], offset = t[1], length = t[2];
      if (file < 0) {
        feed_zeros(b, (uint64_t)length);
        continue;
      }
      current = (int32_t)file;
      int fd = fds[file];
      // [offset, stored) lies in the file, [stored, end) past its end.
      int64_t end = offset + length, stored = end < sizes[file] ? end : sizes[file];
      if (stored < offset) stored = offset;
      for (int64_t p = offset; p < stored && !failed;) {
        if (useMap) {
          int64_t w = stored - p < WINDOW ? stored - p : WINDOW, at = p & ~(int64_t)(page - 1);
          // Faults on a mapping read ahead little and wait for each read: ask for this window (at a run's start)
          // and the next one as reads the kernel starts now, so a cold file is read in large requests, ahead of
          // the hashing. On pages already cached this costs a lookup.
          if (p == offset) posix_fadvise(fd, p, w, POSIX_FADV_WILLNEED);
          if (p + w < stored) posix_fadvise(fd, p + w, stored - p - w < WINDOW ? stored - p - w : WINDOW, POSIX_FADV_WILLNEED);
          size_t len = (size_t)(p - at + w);
          void *m = mmap(NULL, len, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, at);
          if (m == MAP_FAILED) {
            fail(env, errno_code(errno), strerror(errno), (int32_t)file);
            failed = 1;
            break;
          }
          mappedLength = len;
          mapped = m;
          guard = &jump;
          feed(b, (const uint8_t *)m + (p - at), (size_t)w);
          guard = NULL;
          mapped = NULL;
          munmap(m, len);
          p += w;
        } else {
          size_t want = stored - p < PIECE ? (size_t)(stored - p) : PIECE, got = 0;
          while (got < want) {
            ssize_t k = pread(fd, inst->buf + got, want - got, p + (int64_t)got);
            if (k < 0 && errno == EINTR) continue;
            if (k < 0) {
              fail(env, errno_code(errno), strerror(errno), (int32_t)file);
              failed = 1;
              break;
            }
            if (k == 0) break;
            got += (size_t)k;
          }
          // A file that ends early reads as zeros past its end.
          if (got < want) memset(inst->buf + got, 0, want - got);
          if (!failed) feed(b, inst->buf, want);
          p += (int64_t)want;
        }
      }
      if (!failed && end > stored) feed_zeros(b, (uint64_t)(end - stored));
    }
    if (failed) break;
    // One pass finishes the block's digest at its last byte: a block whose bytes were miscounted would get a digest
    // of less than itself, so it fails instead.
    if (b->started && b->useDual && (b->dual->done != b->length || b->dual->fill != 0)) {
      fail(env, "EIO", "hashBlocks: internal error: a block's bytes were miscounted", -1);
      failed = 1;
      break;
    }
    if (states) {
      states[i] = b->started ? 2 : 1;
      if (!b->started) continue;
      XXH128_canonical_t c;
      XXH128_canonicalFromHash(&c, block_digest(b));
      memcpy(digests + (size_t)i * 16, c.digest, 16);
      if (subSize) {
        if (b->subFill) put_sub(b, XXH3_64bits_digest(b->sub));
        if (b->nsubs * 8 > slot) {
          napi_throw_range_error(env, NULL, "hashBlocks: a block has more sub-digests than its slot holds");
          failed = 1;
          break;
        }
        memcpy(subsOut + (size_t)i * slot, b->subs, b->nsubs * 8);
        memset(subsOut + (size_t)i * slot + b->nsubs * 8, 0, slot - b->nsubs * 8);
      }
      continue;
    }
    if (!b->started) {
      failed = napi_get_null(env, &out) != napi_ok;
    } else {
      XXH128_canonical_t c;
      XXH128_canonicalFromHash(&c, block_digest(b));
      if (subSize && b->subFill) put_sub(b, XXH3_64bits_digest(b->sub));
      napi_value d, s;
      failed = napi_create_array_with_length(env, 2, &out) != napi_ok || napi_create_buffer_copy(env, 16, c.digest, NULL, &d) != napi_ok ||
               (subSize ? napi_create_buffer_copy(env, b->nsubs * 8, b->subs, NULL, &s) : napi_get_null(env, &s)) != napi_ok ||
               napi_set_element(env, out, 0, d) != napi_ok || napi_set_element(env, out, 1, s) != napi_ok;
    }
    failed = failed || napi_set_element(env, result, i, out) != napi_ok;
  }
  free(b->subs);
  XXH3_freeState(b->h), XXH3_freeState(b->sub);
  free(b->dual);
  free(b);
  free_ranges(&ranges);
  if (!failed) {
    if (result) return result;
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    return undefined;
  }
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && !pending) napi_throw_error(env, "EIO", "hashBlocks failed");
  return NULL;
}

NAPI_MODULE_INIT() {
  napi_value fn, isa;
  if (napi_create_string_utf8(env, dual_isa(), NAPI_AUTO_LENGTH, &isa) != napi_ok || napi_set_named_property(env, exports, "onePass", isa) != napi_ok) return NULL;
  if (napi_create_function(env, "hashBlocks", NAPI_AUTO_LENGTH, hash_blocks, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "hashBlocks", fn) != napi_ok) return NULL;
  napi_value max;
  if (napi_create_uint32(env, MAX_FILES, &max) != napi_ok || napi_set_named_property(env, exports, "maxFiles", max) != napi_ok) return NULL;
  return exports;
}
