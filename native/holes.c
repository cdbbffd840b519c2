/*
 * vhdsync's hole map helper: lseek(SEEK_DATA), which Node's fs does not offer. A zero scan asks it whether a
 * range of an image file is a hole (never written, reads as zeros) before reading that range: the bench VHDX's
 * 3 GiB of holes then cost one system call per granule instead of 3 GiB of copies (docs/decisions/0024).
 * Built by scripts/build-native.js against Node-API (ABI-stable across Node versions); when it cannot be built,
 * src/io/holes.ts reads the ranges as before.
 */
#define _GNU_SOURCE
#define _FILE_OFFSET_BITS 64
#define NAPI_VERSION 8
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <node_api.h>

/* The offset lseek(fd, argv[1], whence) finds, -1 for ENXIO (nothing there before the end of the file); NULL
 * after throwing on bad arguments or any other error. */
static napi_value seek_to(napi_env env, napi_callback_info info, int whence, const char *usage) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd;
  int64_t offset;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int64(env, argv[1], &offset) != napi_ok ||
      fd < 0 || offset < 0) {
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  off_t at = lseek(fd, (off_t)offset, whence);
  if (at < 0) {
    if (errno != ENXIO) {
      napi_throw_error(env, NULL, strerror(errno));
      return NULL;
    }
    at = -1;
  }
  napi_value out;
  if (napi_create_int64(env, (int64_t)at, &out) != napi_ok) return NULL;
  return out;
}

/* nextData(fd, offset): the offset of the first data byte at or after `offset`, or -1 when there is none before
 * the end of the file. Throws (message: strerror) on any other error. Moves the descriptor's file position. */
static napi_value next_data(napi_env env, napi_callback_info info) {
  return seek_to(env, info, SEEK_DATA, "nextData(fd, offset) takes a descriptor and a non-negative offset");
}

/* nextHole(fd, offset): the offset of the first hole at or after `offset` (the end of the file counts as one), so
 * one call tells how far the data found by nextData goes; -1 when `offset` is past the end. */
static napi_value next_hole(napi_env env, napi_callback_info info) {
  return seek_to(env, info, SEEK_HOLE, "nextHole(fd, offset) takes a descriptor and a non-negative offset");
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "nextData", NAPI_AUTO_LENGTH, next_data, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "nextData", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "nextHole", NAPI_AUTO_LENGTH, next_hole, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "nextHole", fn) != napi_ok) return NULL;
  return exports;
}
