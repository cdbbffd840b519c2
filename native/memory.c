/*
 * vhdsync's memory helper: large buffers backed by transparent huge pages and populated by the kernel in one call,
 * which Node's allocators do not offer. A buffer that JavaScript fills page by page takes one fault per 4 KiB; on
 * the virtual machines measured here each costs 13-16 us (a 4 MiB buffer ~15 ms, the same after MAP_POPULATE: the
 * hypervisor's cost comes at each page's first access), while 2 MiB pages made present with MADV_POPULATE_WRITE cost
 * 0.1-5 ms for 4 MiB (docs/decisions/0036). The memory is page aligned and zeroed with every page present, which is
 * what src/util/aligned.ts asks of buffers the local store writes from directly (decision 0009). Built by
 * scripts/build-native.js against Node-API; when it cannot be built, src/util/aligned.ts makes its buffers as before.
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <node_api.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* Buffers above this are refused: callers ask for a few MiB; a bad size must not map gigabytes. */
#define MAX_SIZE ((size_t)1 << 30)
#define HUGE ((size_t)2 << 20)

/* The buffer's finalizer: nothing but munmap of the whole mapping (V8 counts an ArrayBuffer's bytes itself; no
 * Node-API call is made from a collection). The hint is the mapping's length, the data its start. */
static void unmap(napi_env env, void *data, void *hint) {
  (void)env;
  munmap(data, (size_t)(uintptr_t)hint);
}

/* populated(size): an ArrayBuffer of `size` bytes (1 byte to 1 GiB) of zeroed memory starting on a 2 MiB boundary,
 * every page present, huge pages asked for (the kernel may give 4 KiB ones); unmapped when the buffer is collected.
 * Throws (code ENOMEM, message: strerror) when the mapping fails. */
static napi_value populated(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int64_t want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || napi_get_value_int64(env, argv[0], &want) != napi_ok ||
      want < 1 || (uint64_t)want > MAX_SIZE) {
    napi_throw_range_error(env, NULL, "populated(size) takes a size from 1 byte to 1 GiB");
    return NULL;
  }
  size_t size = (size_t)want, length = (size + HUGE - 1) & ~(HUGE - 1);
  // Mapped one huge page longer, then trimmed to a 2 MiB boundary at both ends: only aligned ranges get huge pages.
  uint8_t *raw = mmap(NULL, length + HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) {
    napi_throw_error(env, "ENOMEM", strerror(errno));
    return NULL;
  }
  uint8_t *p = (uint8_t *)(((uintptr_t)raw + HUGE - 1) & ~(uintptr_t)(HUGE - 1));
  if (p > raw) munmap(raw, (size_t)(p - raw));
  if (p + length < raw + length + HUGE) munmap(p + length, (size_t)(raw + length + HUGE - (p + length)));
  madvise(p, length, MADV_HUGEPAGE);
  if (madvise(p, length, MADV_POPULATE_WRITE) != 0) {
    // Before Linux 5.14: a write to each page makes it present (the zero written leaves it zero).
    long page = sysconf(_SC_PAGESIZE);
    for (size_t i = 0; i < length; i += (size_t)page) ((volatile uint8_t *)p)[i] = 0;
  }
  napi_value out;
  if (napi_create_external_arraybuffer(env, p, size, unmap, (void *)(uintptr_t)length, &out) != napi_ok) {
    munmap(p, length);
    return NULL;
  }
  return out;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "populated", NAPI_AUTO_LENGTH, populated, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "populated", fn) != napi_ok) return NULL;
  return exports;
}
