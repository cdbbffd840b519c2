/*
 * vhdsync's sub-digest helper: the metafile's second level (docs/metafile.md) is an XXH3-64 per 32 KiB, 64 per
 * 2 MiB block. Through xxhash-addon each is one Node-API call and one new Buffer, about 1.5 us on top of the
 * hashing itself: 0.2-0.3 s of CPU per 4 GiB, the largest cost `xxhsum -H2` does not have. This hashes every whole
 * sub-block of a piece in one call (docs/decisions/0025). Built by scripts/build-native.js against Node-API and
 * xxhash-addon's own copy of xxHash (its runtime SIMD dispatch on x86), so the digests are the same function's;
 * when it cannot be built, src/meta/hash-sync.ts hashes one sub-block per call as before.
 */
#define NAPI_VERSION 8
#include <stdint.h>
#include <node_api.h>
#include "xxhash.h"
#ifdef XXHASH_DISPATCH
#include "xxh_x86dispatch.h"
#endif

/* xxh3Subs(data, size, out): the XXH3-64 (seed 0) of each whole `size`-byte sub-block of `data`, written big-endian
 * (xxhsum's and xxhash-addon's canonical form) 8 bytes each into `out` from its start; returns how many. Throws a
 * TypeError when the arguments are not two buffers and a positive size, or `out` is too small. */
static napi_value xxh3_subs(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  void *data, *out;
  size_t length, room;
  uint32_t size;
  bool isBuf;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
      napi_is_buffer(env, argv[0], &isBuf) != napi_ok || !isBuf || napi_is_buffer(env, argv[2], &isBuf) != napi_ok || !isBuf ||
      napi_get_value_uint32(env, argv[1], &size) != napi_ok || size == 0 ||
      napi_get_buffer_info(env, argv[0], &data, &length) != napi_ok || napi_get_buffer_info(env, argv[2], &out, &room) != napi_ok) {
    napi_throw_type_error(env, NULL, "xxh3Subs(data, size, out) takes two buffers and a positive size");
    return NULL;
  }
  size_t count = length / size;
  if (room < count * 8) {
    napi_throw_type_error(env, NULL, "xxh3Subs: out is too small");
    return NULL;
  }
  for (size_t k = 0; k < count; k++) {
    XXH64_canonical_t c;
    XXH64_canonicalFromHash(&c, XXH3_64bits((const uint8_t *)data + k * size, size));
    for (int b = 0; b < 8; b++) ((uint8_t *)out)[k * 8 + b] = c.digest[b];
  }
  napi_value n;
  if (napi_create_uint32(env, (uint32_t)count, &n) != napi_ok) return NULL;
  return n;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "xxh3Subs", NAPI_AUTO_LENGTH, xxh3_subs, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "xxh3Subs", fn) != napi_ok) return NULL;
  return exports;
}
