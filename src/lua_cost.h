/* lua_cost: upper bounds on the work of the C functions a script may call
 * (Lua patterns, JSON encoding), computed before they run. The instruction
 * hook cannot interrupt a C function, so the runtime (lua_rt.c) refuses a
 * call whose bound does not fit in what is left of the event's time. */
#ifndef NCGHL_LUA_COST_H
#define NCGHL_LUA_COST_H

#include <stdbool.h>
#include <stddef.h>

struct lua_State;

/* Matcher steps that string.find/match/gmatch/gsub may take for pattern p
 * over subject s, in the worst case: the start positions tried times, for
 * each repeated item (x*, x+, x-, x?, %b), one more than the longest run of
 * subject characters it can match (the last item excepted: it never
 * backtracks). So a pattern with several ".-" over a long subject costs the
 * length to that power, and an ordinary pattern over a short field costs
 * little. */
double lcost_pattern(const char *s, size_t sl, const char *p, size_t pl);

/* Bytes cjson.encode would write for the value at idx, counted without
 * encoding it; the count stops once it passes limit (a shared table counts
 * each time it is reached, as the encoder writes it each time). */
double lcost_json(struct lua_State *L, int idx, double limit);

#endif
