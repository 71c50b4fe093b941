/* Why a decoder of our own: cjson 2.1 hands back every number as a float
 * and every null as a value, so ncghl.json walked each decoded payload and
 * upstream answer again in Lua to make integers and drop nulls (a sixth of
 * `ncghl test`'s time went to decoding). Here the values are made right the
 * first time. json.c's parser is strict (UTF-8 checked, no NUL in strings,
 * depth <= 256); what it refuses goes back to ncghl.json, which then asks
 * cjson, so text cjson read before is still read the same way. */
#include "lua_json.h"

#include <stdbool.h>
#include <stdint.h>

#include <lauxlib.h>

#include "json.h"

/* Doubles hold every integer below 2^53 exactly; past that the float is
 * kept rather than pretending to a precision the text lost. */
#define EXACT 9007199254740992.0

static void push_number(lua_State *L, double d) {
  if (d > -EXACT && d < EXACT) {
    int64_t i = (int64_t)d;
    if ((double)i == d) {
      lua_pushinteger(L, (lua_Integer)i);
      return;
    }
  }
  lua_pushnumber(L, d);
}

/* marks[t][key] = true, with t at `obj` and the key on top of the stack
 * (left there). */
static void mark_null(lua_State *L, int marks, int obj) {
  lua_pushvalue(L, obj);
  if (lua_rawget(L, marks) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    lua_pushvalue(L, obj);
    lua_pushvalue(L, -2);
    lua_rawset(L, marks);
  }
  lua_pushvalue(L, -2);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

static void push_value(lua_State *L, const struct json *v, int marks) {
  /* Per level: the container, a key, a value; noting a null takes the
   * key again, the set of noted keys and a boolean. */
  luaL_checkstack(L, 6, "JSON nested too deep");
  switch (json_type(v)) {
  case JSON_NULL:
    lua_pushlightuserdata(L, NULL); /* cjson.null, as arrays keep it */
    return;
  case JSON_BOOL:
    lua_pushboolean(L, json_bool(v));
    return;
  case JSON_NUMBER:
    push_number(L, json_num(v));
    return;
  case JSON_STRING:
    lua_pushlstring(L, json_str(v), json_str_len(v));
    return;
  case JSON_ARRAY: {
    size_t n = json_len(v);
    lua_createtable(L, n < INT32_MAX ? (int)n : 0, 0);
    for (size_t i = 0; i < n; i++) {
      push_value(L, json_at(v, i), marks);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return;
  }
  case JSON_OBJECT: {
    size_t n = json_len(v);
    lua_createtable(L, 0, n < INT32_MAX ? (int)n : 0);
    int obj = lua_gettop(L);
    bool nulls = false;
    for (size_t i = 0; i < n; i++) {
      const struct json *m = json_at(v, i);
      lua_pushlstring(L, json_key_at(v, i), json_key_len(m));
      if (json_type(m) == JSON_NULL) {
        /* Absent, as a mapping reads it; an earlier value under the same
         * key goes too (the last one wins, as in cjson). */
        lua_pushnil(L);
        nulls = true;
      } else {
        push_value(L, m, marks);
      }
      lua_rawset(L, obj);
    }
    /* A key is noted as null when null is what it ended with: a later
     * duplicate with a value overrides an earlier null. */
    for (size_t i = 0; nulls && marks && i < n; i++) {
      const struct json *m = json_at(v, i);
      if (json_type(m) != JSON_NULL)
        continue;
      lua_pushlstring(L, json_key_at(v, i), json_key_len(m));
      if (lua_rawget(L, obj) == LUA_TNIL) {
        lua_pop(L, 1);
        lua_pushlstring(L, json_key_at(v, i), json_key_len(m));
        mark_null(L, marks, obj);
      }
      lua_pop(L, 1);
    }
    return;
  }
  }
}

/* Runs protected: building the tables allocates from Lua, which may raise
 * (an event's memory cap), and the parsed tree must be freed either way. */
static int build(lua_State *L) {
  const struct json *root = lua_touserdata(L, 1);
  int marks = lua_istable(L, 2) ? 2 : 0;
  push_value(L, root, marks);
  return 1;
}

static int l_decode(lua_State *L) {
  size_t len;
  const char *text = luaL_checklstring(L, 1, &len);
  char err[160];
  struct json *root = json_parse(text, len, err, sizeof err);
  if (!root) {
    lua_pushboolean(L, 0);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushcfunction(L, build);
  lua_pushlightuserdata(L, root);
  if (lua_istable(L, 2))
    lua_pushvalue(L, 2);
  else
    lua_pushnil(L);
  int rc = lua_pcall(L, 2, 1, 0);
  json_free(root);
  if (rc != LUA_OK)
    return lua_error(L);
  lua_pushboolean(L, 1);
  lua_insert(L, -2);
  return 2;
}

int ljson_open(lua_State *L) {
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, l_decode);
  lua_setfield(L, -2, "decode");
  return 1;
}
