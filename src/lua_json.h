/* lua_json: JSON text turned into the Lua values ncghl's scripts read, in
 * one pass from C (json.c's parser): whole numbers as integers, a null in an
 * object left out with its key noted, a null in an array kept as cjson.null.
 * ncghl.json (Lua) calls it; cjson remains for what this parser refuses. */
#ifndef NCGHL_LUA_JSON_H
#define NCGHL_LUA_JSON_H

#include <lua.h>

/* Opens the module: a table with decode(text [, marks]) -> true, value or
 * false, message. `marks`, when given, is a table that gets, for each
 * decoded object that had null members, a set of those keys (marks[obj][key]
 * = true): what ncghl.json keeps to tell "sent as null" from "not sent". */
int ljson_open(lua_State *L);

#endif
