/* lua_harness: what the Lua fuzz targets share. The real runtime (lrt_new:
 * the shipped library and mappings, the sandbox, the memory cap and the
 * instruction budget) and one input run through a target's Lua chunk. */
#ifndef NCGHL_FUZZ_LUA_HARNESS_H
#define NCGHL_FUZZ_LUA_HARNESS_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>

struct lrt;

/* The runtime, or abort() naming `who` (a target's name). */
struct lrt *lua_harness_runtime(const char *who);

/* Calls `chunk` with the input as a string (and `helper`, when given, as a
 * second argument). An error other than the sandbox's own limits (memory,
 * instruction budget) is a finding: printed after `finding`, then abort().
 * With the variable `trace_env` set, the chunk's result is printed. */
void lua_harness_run(struct lrt *rt, const char *who, const char *chunk, size_t chunk_len,
                     const uint8_t *data, size_t size, lua_CFunction helper, const char *finding,
                     const char *trace_env);

#endif
