/* The offline runner. Design in brief:
 *  - The runner owns a runtime built on an offline host: `start` is
 *    fixture_start (answers come from the case, at once, from inside
 *    ncghl.call), there is no store (links and snapshots live in the Lua
 *    state, see lua_api.h) and no upstream, and it logs no event outcomes.
 *  - Its own Lua (lua/ncghl/runner.lua) runs in that same state: it loads the case
 *    files, seeds links, picks answers, records the requests and compares
 *    them with what the case expects. Everything about a case stays in Lua
 *    tables; C only moves strings across.
 *  - A case is one lrt_run followed by lrt_drain: no loop turns, no disk, no
 *    new state per case. The runner's own cost is about 7 us per case and
 *    2.5 us per upstream call (SPEC 8 asks for 50,000 mapping executions a
 *    second); the rest is the mapping code itself. Its Lua is written for
 *    that path: a passing case decodes and compares only what it must, and
 *    builds no text (diffs, labels) that only a failure would show.
 *
 * The harness is ncghl's own file in LUA_DIR (lua/ncghl/runner.lua), read
 * with the rest of the library: a production state never runs it. Its
 * default answers (what an upstream answers when a case gives no fixture)
 * are API shapes and are kept in that Lua, next to the notes they cite. */
#include "runner.h"

#include "clock.h"
#include "dirlist.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>

#include "buf.h"
#include "config.h"
#include "json.h"
#include "log.h"
#include "lua_api.h"
#include "lua_rt.h"
#include "upstream.h"


/* ------------------------------------------------------------------------ */
/* The runner                                                               */

#define MAX_CASE_FILE_BYTES (4u << 20)
#define MAX_BODY_FILE_BYTES (16u << 20)
#define MAX_DIR_DEPTH 4

struct case_info {
  char *file, *name;
  int line;
};

struct runner {
  const struct config *cfg;
  struct event_base *base;
  bool own_base;
  struct lrt *rt;
  lua_State *L;
  int harness; /* registry ref of the harness table */

  struct case_info *cases;
  int ncases, capcases;

  /* The run in progress. */
  bool map_mode;
  bool done;
  bool passed;
  char *summary, *report; /* a failure's first difference and whole diff */
  char *map_json;
  const char *map_source;
  char *map_type;
  char *harness_error; /* the runner's own Lua failed while answering */
};

static char *xstrdup(const char *s) {
  if (!s)
    return NULL;
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p)
    memcpy(p, s, n);
  return p;
}

/* The whole file, NUL-terminated; -1 with a reason. */
static int read_text(const char *path, size_t max, char **text, size_t *len, char *err,
                     size_t errlen) {
  FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  struct buf b;
  buf_init(&b, max);
  char chunk[8192];
  size_t got;
  int rc = 0;
  while ((got = fread(chunk, 1, sizeof(chunk), f)) > 0) {
    if (buf_append(&b, chunk, got) != 0) {
      snprintf(err, errlen, "%s: larger than %zu bytes", path, max);
      rc = -1;
      break;
    }
  }
  if (rc == 0 && ferror(f)) {
    snprintf(err, errlen, "%s: read error", path);
    rc = -1;
  }
  if (f != stdin)
    fclose(f);
  if (rc != 0) {
    buf_free(&b);
    return -1;
  }
  *len = b.len;
  *text = buf_steal(&b);
  if (!*text) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  return 0;
}

/* Sets H[name] = on (ncghl map --explain). */
static void set_harness_flag(struct runner *r, const char *name, bool on) {
  lua_rawgeti(r->L, LUA_REGISTRYINDEX, r->harness);
  lua_pushboolean(r->L, on);
  lua_setfield(r->L, -2, name);
  lua_pop(r->L, 1);
}

/* Calls the harness function `name` with no arguments; its one result, a
 * string, goes to out (ncghl test --coverage). */
static void harness_print(struct runner *r, const char *name, FILE *out) {
  lua_State *L = r->L;
  int top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->harness);
  lua_getfield(L, -1, name);
  lua_remove(L, -2);
  if (lrt_pcall(r->rt, 0, 1) != LUA_OK)
    fprintf(out, "%s: %s\n", name, lua_tostring(L, -1));
  else if (lua_isstring(L, -1) && lua_rawlen(L, -1) > 0)
    fprintf(out, "%s\n", lua_tostring(L, -1));
  lua_settop(L, top);
}

/* Pushes the harness function `name`. */
static void push_fn(struct runner *r, const char *name) {
  lua_rawgeti(r->L, LUA_REGISTRYINDEX, r->harness);
  lua_getfield(r->L, -1, name);
  lua_remove(r->L, -2);
}

static int h_reset_memory(lua_State *L) {
  lapi_memory_reset(L);
  return 0;
}

static int h_set_config(lua_State *L) {
  lapi_set_config_override(L, 1);
  return 0;
}

/* The runtime's `start`: the harness picks the answer (a fixture or the
 * default) and it is handed back at once, from inside ncghl.call; lua_rt
 * delivers it when the coroutine has yielded. */
static int fixture_start(void *ud, const struct up_call *call, up_attempt_cb on_attempt,
                         up_done_cb done, void *done_ud) {
  (void)on_attempt; /* no store: attempts are not recorded */
  struct runner *r = ud;
  lua_State *L = r->L;
  int top = lua_gettop(L);
  push_fn(r, "answer");
  lua_pushstring(L, up_service_name(call->service));
  lua_pushstring(L, call->method);
  lua_pushstring(L, call->path);
  if (call->body)
    lua_pushlstring(L, call->body, call->body_len);
  else
    lua_pushnil(L);
  if (call->content_type)
    lua_pushstring(L, call->content_type);
  else
    lua_pushnil(L);
  struct up_result res = {.body = "", .attempts = 1};
  if (lrt_pcall(r->rt, 5, 5) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    if (!r->harness_error)
      r->harness_error = xstrdup(msg ? msg : "error in the runner");
    res.error = "the runner could not answer this call";
  } else {
    size_t bl = 0;
    res.ok = lua_toboolean(L, top + 1);
    res.retryable = lua_toboolean(L, top + 2);
    res.status = (int)lua_tointeger(L, top + 3);
    const char *b = lua_tolstring(L, top + 4, &bl);
    res.body = b ? b : "";
    res.body_len = b ? bl : 0;
    res.error = lua_tostring(L, top + 5);
  }
  done(done_ud, &res); /* lua_rt copies what it keeps */
  lua_settop(L, top);
  return 0;
}

static int load_harness(lua_State *L) {
  if (lrt_load_module(L, "ncghl.runner") != LUA_OK)
    return lua_error(L);
  lua_createtable(L, 0, 2);
  lua_pushcfunction(L, h_reset_memory);
  lua_setfield(L, -2, "reset_memory");
  lua_pushcfunction(L, h_set_config);
  lua_setfield(L, -2, "set_config");
  lua_call(L, 1, 1);
  if (!lua_istable(L, -1))
    return luaL_error(L, "the runner's Lua did not return its table");
  return 1;
}

struct runner *runner_new(const struct config *cfg, struct event_base *base, runner_build_fn build,
                          void *build_ud, char *err, size_t errlen) {
  struct runner *r = calloc(1, sizeof(*r));
  if (!r) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  r->cfg = cfg;
  r->harness = LUA_NOREF;
  r->base = base;
  if (!r->base) {
    r->base = event_base_new();
    r->own_base = true;
    if (!r->base) {
      snprintf(err, errlen, "cannot create an event base");
      free(r);
      return NULL;
    }
  }
  struct lrt_host host = {
    .base = r->base,
    .cfg = cfg,
    .start = fixture_start,
    .start_ud = r,
  };
  r->rt = build ? build(build_ud, &host, err, errlen) : lrt_new(&host, err, errlen);
  if (!r->rt) {
    runner_free(r);
    return NULL;
  }
  lrt_set_quiet(r->rt, true);
  r->L = lrt_lua_state(r->rt);
  lua_pushcfunction(r->L, load_harness);
  if (lrt_pcall(r->rt, 0, 1) != LUA_OK) {
    snprintf(err, errlen, "runner: %s", lua_tostring(r->L, -1));
    lua_pop(r->L, 1);
    runner_free(r);
    return NULL;
  }
  r->harness = luaL_ref(r->L, LUA_REGISTRYINDEX);
  return r;
}

static void run_reset(struct runner *r) {
  free(r->summary);
  free(r->report);
  free(r->map_json);
  free(r->harness_error);
  free(r->map_type);
  r->summary = r->report = r->map_json = r->harness_error = r->map_type = NULL;
  r->done = r->passed = false;
}

void runner_free(struct runner *r) {
  if (!r)
    return;
  if (r->L && r->harness != LUA_NOREF) {
    push_fn(r, "finish");
    if (lrt_pcall(r->rt, 0, 0) != LUA_OK)
      lua_pop(r->L, 1);
    luaL_unref(r->L, LUA_REGISTRYINDEX, r->harness);
  }
  if (r->rt)
    lrt_free(r->rt);
  if (r->own_base && r->base)
    event_base_free(r->base);
  for (int i = 0; i < r->ncases; i++) {
    free(r->cases[i].file);
    free(r->cases[i].name);
  }
  free(r->cases);
  run_reset(r);
  free(r);
}

const char *runner_version(const struct runner *r) {
  return r ? lrt_version(r->rt) : "";
}

int runner_case_count(const struct runner *r) {
  return r ? r->ncases : 0;
}

/* Copies the names of the cases the harness now has past r->ncases. */
static int take_infos(struct runner *r, char *err, size_t errlen) {
  lua_State *L = r->L;
  push_fn(r, "count");
  if (lrt_pcall(r->rt, 0, 1) != LUA_OK) {
    snprintf(err, errlen, "runner: %s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return -1;
  }
  int n = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (n > r->capcases) {
    int ncap = n + 16;
    struct case_info *nc = realloc(r->cases, (size_t)ncap * sizeof(*nc));
    if (!nc) {
      snprintf(err, errlen, "out of memory");
      return -1;
    }
    r->cases = nc;
    r->capcases = ncap;
  }
  for (int i = r->ncases; i < n; i++) {
    push_fn(r, "info");
    lua_pushinteger(L, i + 1);
    if (lrt_pcall(r->rt, 1, 3) != LUA_OK) {
      snprintf(err, errlen, "runner: %s", lua_tostring(L, -1));
      lua_pop(L, 1);
      return -1;
    }
    struct case_info *c = &r->cases[i];
    c->file = xstrdup(lua_tostring(L, -3));
    c->name = xstrdup(lua_tostring(L, -2));
    c->line = (int)lua_tointeger(L, -1);
    lua_pop(L, 3);
    if (!c->file || !c->name) {
      free(c->file);
      free(c->name);
      snprintf(err, errlen, "out of memory");
      return -1;
    }
    r->ncases = i + 1;
  }
  return 0;
}

/* Compiles and runs a case file; on success pushes its path, its text and
 * what it returned, and returns 0. */
static int eval_case_file(struct runner *r, const char *path, char *err, size_t errlen) {
  char *text;
  size_t len;
  if (read_text(path, MAX_CASE_FILE_BYTES, &text, &len, err, errlen) != 0)
    return -1;
  lua_State *L = r->L;
  int top = lua_gettop(L);
  lua_pushstring(L, path);
  lua_pushlstring(L, text, len);
  free(text);
  push_fn(r, "compile");
  lua_pushvalue(L, top + 1);
  lua_pushvalue(L, top + 2);
  if (lrt_pcall(r->rt, 2, 2) != LUA_OK || lua_isnil(L, -2)) {
    snprintf(err, errlen, "%s", lua_tostring(L, -1));
    lua_settop(L, top);
    return -1;
  }
  lua_pop(L, 1);
  /* The file's own code, under the budget: a loop stops at its own line. */
  if (lrt_pcall(r->rt, 0, 1) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    if (msg)
      snprintf(err, errlen, "%s", msg);
    else
      snprintf(err, errlen, "%s: the file raised an error that is not text", path);
    lua_settop(L, top);
    return -1;
  }
  return 0;
}

int runner_load_file(struct runner *r, const char *path, char *err, size_t errlen) {
  lua_State *L = r->L;
  int top = lua_gettop(L);
  if (eval_case_file(r, path, err, errlen) != 0)
    return -1;
  push_fn(r, "load");
  lua_insert(L, top + 1);
  int rc;
  if (lrt_pcall(r->rt, 3, 2) != LUA_OK) {
    snprintf(err, errlen, "%s: %s", path, lua_tostring(L, -1));
    rc = -1;
  } else if (lua_isnil(L, top + 1)) {
    snprintf(err, errlen, "%s", lua_tostring(L, top + 2));
    rc = -1;
  } else {
    rc = (int)lua_tointeger(L, top + 1);
  }
  lua_settop(L, top);
  if (rc >= 0 && take_infos(r, err, errlen) != 0)
    rc = -1;
  return rc;
}

/* Every *.lua under dir (recursively, names sorted), appended to *list. */
static int collect_cases(const char *dir, int depth, char ***list, int *n, int *cap, char *err,
                         size_t errlen) {
  char **names;
  size_t count;
  if (dirlist_read(dir, &names, &count) != 0) {
    if (depth == 0 && errno == ENOENT)
      return 0;
    snprintf(err, errlen, "%s: %s", dir, strerror(errno));
    return -1;
  }
  int nn = (int)count, rc = 0;
  for (int i = 0; rc == 0 && i < nn; i++) {
    struct buf p;
    buf_init(&p, 0);
    buf_printf(&p, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", names[i]);
    char *path = buf_steal(&p);
    struct stat sb;
    size_t nl = strlen(names[i]);
    if (!path) {
      snprintf(err, errlen, "out of memory");
      rc = -1;
    } else if (stat(path, &sb) != 0) {
      free(path); /* a dangling link holds no cases */
    } else if (S_ISDIR(sb.st_mode)) {
      if (depth < MAX_DIR_DEPTH)
        rc = collect_cases(path, depth + 1, list, n, cap, err, errlen);
      free(path);
    } else if (S_ISREG(sb.st_mode) && nl > 4 && strcmp(names[i] + nl - 4, ".lua") == 0) {
      if (*n == *cap) {
        int ncap = *cap ? *cap * 2 : 16;
        char **nv = realloc(*list, (size_t)ncap * sizeof(*nv));
        if (!nv) {
          free(path);
          snprintf(err, errlen, "out of memory");
          rc = -1;
          break;
        }
        *list = nv;
        *cap = ncap;
      }
      (*list)[(*n)++] = path;
    } else {
      free(path);
    }
  }
  dirlist_free(names, count);
  return rc;
}

static void free_list(char **list, int n) {
  for (int i = 0; i < n; i++)
    free(list[i]);
  free(list);
}

int runner_load_dir(struct runner *r, const char *dir, char *err, size_t errlen) {
  char **files = NULL;
  int n = 0, cap = 0, total = 0;
  if (collect_cases(dir, 0, &files, &n, &cap, err, errlen) != 0) {
    free_list(files, n);
    return -1;
  }
  for (int i = 0; i < n; i++) {
    int got = runner_load_file(r, files[i], err, errlen);
    if (got < 0) {
      free_list(files, n);
      return -1;
    }
    total += got;
  }
  free_list(files, n);
  return total;
}

/* The runtime's done callback: the harness compares (or, in a dry run,
 * writes the result) while the strings are alive. */
static void on_done(void *ud, const struct lrt_result *res) {
  struct runner *r = ud;
  lua_State *L = r->L;
  static const char *const outcomes[] = {"done", "ignored", "retry", "failed"};
  int top = lua_gettop(L);
  r->done = true;
  int nargs = 0;
  if (r->map_mode) {
    push_fn(r, "map_result");
    lua_pushstring(L, r->map_source);
    lua_pushstring(L, r->map_type);
    nargs = 2;
  } else {
    push_fn(r, "check");
  }
  lua_pushstring(L, outcomes[res->outcome]);
  lua_pushstring(L, res->message);
  lua_pushstring(L, res->data);
  lua_pushstring(L, res->error);
  if (lrt_pcall(r->rt, nargs + 4, 3) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    if (!r->harness_error)
      r->harness_error = xstrdup(msg ? msg : "error in the runner");
  } else if (r->map_mode) {
    r->map_json = xstrdup(lua_tostring(L, top + 1));
  } else {
    r->passed = lua_toboolean(L, top + 1);
    if (!r->passed) {
      r->summary = xstrdup(lua_tostring(L, top + 2));
      r->report = xstrdup(lua_tostring(L, top + 3));
    }
  }
  lua_settop(L, top);
}

/* Runs the event whose lrt_event fields the harness left at top+1..top+5
 * (id, source, type, payload, run) and drains the runtime. */
static int run_event(struct runner *r, int top, char *err, size_t errlen) {
  lua_State *L = r->L;
  size_t plen = 0;
  struct lrt_event ev = {
    .id = lua_tostring(L, top + 1),
    .source = lua_tostring(L, top + 2),
    .type = lua_tostring(L, top + 3),
    .payload = lua_tolstring(L, top + 4, &plen),
    .run = lua_isinteger(L, top + 5) ? (int)lua_tointeger(L, top + 5) : 1,
  };
  ev.payload_len = plen;
  int rc = lrt_run(r->rt, &ev, on_done, r);
  lua_settop(L, top);
  if (rc != 0) {
    snprintf(err, errlen, "the runtime could not start the event");
    return -1;
  }
  lrt_drain(r->rt);
  if (!r->done) {
    snprintf(err, errlen, "the event did not end (an upstream call was never answered)");
    return -1;
  }
  if (r->harness_error) {
    snprintf(err, errlen, "runner: %s", r->harness_error);
    return -1;
  }
  return 0;
}

/* One case; fills r->passed / summary / report. */
static void run_case(struct runner *r, int i) {
  lua_State *L = r->L;
  char err[512];
  run_reset(r);
  int top = lua_gettop(L);
  push_fn(r, "prepare");
  lua_pushinteger(L, i + 1);
  int rc;
  if (lrt_pcall(r->rt, 1, 5) != LUA_OK) {
    snprintf(err, sizeof(err), "could not prepare the case: %s", lua_tostring(L, -1));
    lua_settop(L, top);
    rc = -1;
  } else {
    rc = run_event(r, top, err, sizeof(err));
  }
  if (rc != 0) {
    struct buf b;
    buf_init(&b, 0);
    buf_printf(&b, "%s:%d: case \"%s\": %s", r->cases[i].file, r->cases[i].line,
               r->cases[i].name, err);
    free(r->summary);
    free(r->report);
    r->passed = false;
    r->report = NULL;
    r->summary = buf_steal(&b);
  }
}

int runner_run(struct runner *r, int rounds, FILE *out, struct runner_report *rep, char *first,
               size_t firstlen) {
  struct runner_report local = {0};
  if (!rep)
    rep = &local;
  memset(rep, 0, sizeof(*rep));
  if (first && firstlen)
    first[0] = '\0';
  if (rounds < 1)
    rounds = 1;
  r->map_mode = false;
  bool all = true;
  double t0 = clock_mono();
  for (int round = 0; round < rounds; round++) {
    for (int i = 0; i < r->ncases; i++) {
      run_case(r, i);
      rep->runs++;
      if (!r->passed) {
        all = false;
        if (first && firstlen && !first[0])
          snprintf(first, firstlen, "%s", r->summary ? r->summary : "failed");
      }
      if (round > 0)
        continue;
      if (r->passed)
        rep->passed++;
      else
        rep->failed++;
      if (out) {
        fprintf(out, "%s %s: %s\n", r->passed ? "ok  " : "FAIL", r->cases[i].file,
                r->cases[i].name);
        if (!r->passed)
          fprintf(out, "%s\n", r->report ? r->report : (r->summary ? r->summary : ""));
      }
    }
  }
  rep->seconds = clock_mono() - t0;
  run_reset(r);
  push_fn(r, "finish");
  if (lrt_pcall(r->rt, 0, 0) != LUA_OK)
    lua_pop(r->L, 1);
  return all ? 0 : 1;
}

int runner_map(struct runner *r, const char *source, const char *body, size_t len,
               const char *fixtures_path, FILE *out, char *err, size_t errlen) {
  lua_State *L = r->L;
  run_reset(r);
  int top = lua_gettop(L);
  push_fn(r, "map_prepare");
  lua_pushstring(L, source);
  lua_pushlstring(L, body, len);
  if (fixtures_path) {
    if (eval_case_file(r, fixtures_path, err, errlen) != 0) {
      lua_settop(L, top);
      return -1;
    }
    lua_remove(L, -2); /* keep the path and what the file returned */
  } else {
    lua_pushnil(L);
    lua_pushnil(L);
  }
  int rc = 0;
  if (lrt_pcall(r->rt, 4, 5) != LUA_OK) {
    snprintf(err, errlen, "%s", lua_tostring(L, -1));
    rc = -1;
  } else if (lua_isnil(L, top + 1)) {
    snprintf(err, errlen, "%s", lua_tostring(L, top + 2));
    rc = -1;
  }
  if (rc != 0) {
    lua_settop(L, top);
    return -1;
  }
  r->map_mode = true;
  r->map_source = source;
  r->map_type = xstrdup(lua_tostring(L, top + 3)); /* on_done needs it after the pop */
  rc = run_event(r, top, err, errlen);
  if (rc == 0 && !r->map_json) {
    snprintf(err, errlen, "the dry run produced no result");
    rc = -1;
  }
  if (rc == 0)
    fputs(r->map_json, out);
  lua_settop(L, top);
  r->map_mode = false;
  run_reset(r);
  push_fn(r, "finish");
  if (lrt_pcall(r->rt, 0, 0) != LUA_OK)
    lua_pop(L, 1);
  return rc;
}

/* The line of `file` that first holds `needle` (0 when none, or unreadable):
 * lint findings name a map field, and a person wants its line. */
static int line_of(const char *file, const char *needle) {
  FILE *f = fopen(file, "r");
  if (!f)
    return 0;
  char line[4096];
  int n = 0, found = 0;
  while (!found && fgets(line, sizeof line, f)) {
    n++;
    if (strstr(line, needle))
      found = n;
  }
  fclose(f);
  return found;
}

/* Prints one list of findings H.lint returned (at index idx) as
 * "file:line: [warning: ]message". Returns how many. */
static int print_findings(struct runner *r, int idx, bool warning, FILE *out) {
  lua_State *L = r->L;
  int n = 0;
  lua_Integer len = lua_istable(L, idx) ? luaL_len(L, idx) : 0;
  for (lua_Integer i = 1; i <= len; i++) {
    lua_rawgeti(L, idx, i);
    lua_getfield(L, -1, "module");
    lua_getfield(L, -2, "field");
    lua_getfield(L, -3, "path");
    lua_getfield(L, -4, "message");
    const char *module = lua_tostring(L, -4), *field = lua_tostring(L, -3);
    const char *path = lua_tostring(L, -2), *msg = lua_tostring(L, -1);
    char file[4096], needle[512];
    if (path)
      snprintf(needle, sizeof needle, "\"%s\"", path);
    else
      snprintf(needle, sizeof needle, "%s", field ? field : "");
    /* The agency's file, else (an overlay that left the field as it was)
     * the shipped one. */
    snprintf(file, sizeof file, "%s/%s.lua", r->cfg->mappings_dir, module ? module : "?");
    int line = line_of(file, needle);
    if (line == 0 && r->cfg->mappings_defaults_dir) {
      char def[4096];
      snprintf(def, sizeof def, "%s/%s.lua", r->cfg->mappings_defaults_dir, module ? module : "?");
      if ((line = line_of(def, needle)) > 0)
        snprintf(file, sizeof file, "%s", def);
    }
    fprintf(out, "%s:%d: %s%s\n", file, line > 0 ? line : 1, warning ? "warning: " : "",
            msg ? msg : "?");
    lua_pop(L, 5);
    n++;
  }
  return n;
}

int runner_lint(struct runner *r, FILE *out, int *warnings) {
  lua_State *L = r->L;
  int top = lua_gettop(L);
  push_fn(r, "lint");
  if (lrt_pcall(r->rt, 0, 2) != LUA_OK) {
    fprintf(out, "ncghl.lint: %s\n", lua_tostring(L, -1));
    lua_settop(L, top);
    return 1;
  }
  int errors = print_findings(r, top + 1, false, out);
  int w = print_findings(r, top + 2, true, out);
  if (warnings)
    *warnings = w;
  lua_settop(L, top);
  return errors;
}

int runner_check(const struct config *cfg, struct event_base *base, runner_build_fn build,
                 void *build_ud, int *ncases, char *err, size_t errlen) {
  *ncases = 0;
  char dir[4096];
  if (snprintf(dir, sizeof(dir), "%s/tests", cfg->mappings_dir) >= (int)sizeof(dir)) {
    snprintf(err, errlen, "%s: path too long", cfg->mappings_dir);
    return -1;
  }
  /* No case files: nothing to run, and no second runtime to build. */
  char **files = NULL;
  int n = 0, cap = 0;
  if (collect_cases(dir, 0, &files, &n, &cap, err, errlen) != 0) {
    free_list(files, n);
    return -1;
  }
  free_list(files, n);
  if (n == 0)
    return 0;
  struct runner *r = runner_new(cfg, base, build, build_ud, err, errlen);
  if (!r)
    return -1;
  int rc = runner_load_dir(r, dir, err, errlen) < 0 ? -1 : 0;
  if (rc == 0) {
    struct runner_report rep;
    if (runner_run(r, 1, NULL, &rep, err, errlen) != 0)
      rc = -1;
    *ncases = r->ncases;
  }
  runner_free(r);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* The command line                                                         */

static int load_config(struct config *cfg, const char *env_file, const char *cmd) {
  char err[512];
  if (config_load(cfg, env_file, false, err, sizeof(err)) != 0) {
    fprintf(stderr, "ncghl %s: configuration error: %s\n", cmd, err);
    return -1;
  }
  log_set_format(cfg->log_json);
  log_set_pii(cfg->log_pii);
  if (log_init(cfg->log_level, cfg->log_file) != 0) {
    fprintf(stderr, "ncghl %s: configuration error: LOG_FILE: cannot open %s\n", cmd,
            cfg->log_file);
    config_free(cfg);
    return -1;
  }
  return 0;
}

int runner_cmd_check(int argc, char **argv) {
  const char *env_file = NULL;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--env") == 0 && i + 1 < argc) {
      env_file = argv[++i];
    } else {
      fprintf(stderr, "ncghl check: unknown option '%s' (usage: ncghl check [--env FILE])\n",
              argv[i]);
      return 2;
    }
  }
  struct config cfg;
  if (load_config(&cfg, env_file, "check") != 0)
    return 1;
  char err[1024];
  char dir[4096];
  snprintf(dir, sizeof(dir), "%s/tests", cfg.mappings_dir);
  int rc = 1;
  struct runner *r = runner_new(&cfg, NULL, NULL, NULL, err, sizeof(err));
  if (!r) {
    fprintf(stderr, "%s\n", err);
  } else if (runner_load_dir(r, dir, err, sizeof(err)) < 0) {
    fprintf(stderr, "%s\n", err);
  } else if (runner_lint(r, stderr, NULL) != 0) {
    /* A field the upstream does not take (GHL would answer 422): said
     * before the cases, whose failures it would only explain less well. */
  } else if (runner_run(r, 1, NULL, NULL, err, sizeof(err)) != 0) {
    fprintf(stderr, "%s\n", err);
  } else {
    printf("ok: scripts in %s and %s load (version %s); %d test case%s passed\n", cfg.lua_dir,
           cfg.mappings_dir, runner_version(r), r->ncases, r->ncases == 1 ? "" : "s");
    rc = 0;
  }
  runner_free(r);
  config_free(&cfg);
  log_close();
  return rc;
}

/* Whether dir holds a *.lua file: an overlay of the shipped mappings
 * (docs/mapping-guide.md) may hold only the files it changes. */
static bool has_scripts(const char *dir) {
  char **names;
  size_t n;
  if (dirlist_read(dir, &names, &n) != 0)
    return false;
  bool found = false;
  for (size_t i = 0; i < n && !found; i++) {
    size_t l = strlen(names[i]);
    found = l > 4 && strcmp(names[i] + l - 4, ".lua") == 0;
  }
  dirlist_free(names, n);
  return found;
}

/* The mappings directory a case file or directory belongs to: for a path
 * under "<dir>/tests/", <dir> when it has a routes.lua or, as an overlay,
 * any other script; else NULL. */
static char *owner_dir(const char *path) {
  char *real = realpath(path, NULL);
  if (!real)
    return NULL;
  struct stat sb;
  if (stat(real, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
    char *slash = strrchr(real, '/');
    if (slash)
      *slash = '\0';
  }
  for (int depth = 0; depth <= MAX_DIR_DEPTH; depth++) {
    char *slash = strrchr(real, '/');
    if (!slash || slash == real)
      break;
    if (strcmp(slash + 1, "tests") == 0) {
      *slash = '\0';
      struct buf p;
      buf_init(&p, 0);
      buf_printf(&p, "%s/routes.lua", real);
      bool has = (p.p && stat(p.p, &sb) == 0) || has_scripts(real);
      buf_free(&p);
      if (has)
        return real;
      *slash = '/';
    }
    *slash = '\0';
  }
  free(real);
  return NULL;
}

struct group {
  char *mappings; /* NULL: MAPPINGS_DIR */
  char **files;
  int n, cap;
};

static int group_add(struct group *g, const char *file) {
  if (g->n == g->cap) {
    int ncap = g->cap ? g->cap * 2 : 8;
    char **nv = realloc(g->files, (size_t)ncap * sizeof(*nv));
    if (!nv)
      return -1;
    g->files = nv;
    g->cap = ncap;
  }
  if (!(g->files[g->n] = xstrdup(file)))
    return -1;
  g->n++;
  return 0;
}

static struct group *group_for(struct group **groups, int *ngroups, char *mappings) {
  for (int i = 0; i < *ngroups; i++) {
    struct group *g = &(*groups)[i];
    if ((!g->mappings && !mappings) || (g->mappings && mappings && !strcmp(g->mappings, mappings))) {
      free(mappings);
      return g;
    }
  }
  struct group *ng = realloc(*groups, (size_t)(*ngroups + 1) * sizeof(*ng));
  if (!ng) {
    free(mappings);
    return NULL;
  }
  *groups = ng;
  struct group *g = &ng[(*ngroups)++];
  memset(g, 0, sizeof(*g));
  g->mappings = mappings;
  return g;
}

static void groups_free(struct group *groups, int n) {
  for (int i = 0; i < n; i++) {
    free(groups[i].mappings);
    free_list(groups[i].files, groups[i].n);
  }
  free(groups);
}

/* Runs one group of case files against its mappings directory. */
static void test_group(const struct config *base_cfg, const struct group *g, int rounds,
                       bool coverage, struct runner_report *total) {
  struct config cfg = *base_cfg; /* shallow: only mappings_dir differs */
  if (g->mappings)
    cfg.mappings_dir = g->mappings;
  char err[1024];
  struct runner *r = runner_new(&cfg, NULL, NULL, NULL, err, sizeof(err));
  if (!r) {
    printf("FAIL %s: the scripts do not load\n    %s\n", cfg.mappings_dir, err);
    total->failed++;
    return;
  }
  for (int i = 0; i < g->n; i++) {
    if (runner_load_file(r, g->files[i], err, sizeof(err)) < 0) {
      printf("FAIL %s: the file does not load\n    %s\n", g->files[i], err);
      total->failed++;
    }
  }
  struct runner_report rep;
  if (coverage)
    harness_print(r, "coverage_start", stdout);
  runner_run(r, rounds, stdout, &rep, NULL, 0);
  if (coverage)
    harness_print(r, "coverage_report", stdout);
  total->passed += rep.passed;
  total->failed += rep.failed;
  total->runs += rep.runs;
  total->seconds += rep.seconds;
  runner_free(r);
}

int runner_cmd_test(int argc, char **argv) {
  const char *env_file = NULL;
  int rounds = 1;
  bool bench = false, coverage = false;
  char **paths = calloc((size_t)argc + 1, sizeof(*paths));
  int npaths = 0;
  if (!paths)
    return 1;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--env") == 0 && i + 1 < argc) {
      env_file = argv[++i];
    } else if (strcmp(argv[i], "--coverage") == 0) {
      coverage = true;
    } else if (strcmp(argv[i], "--bench") == 0 && i + 1 < argc) {
      char *end;
      long n = strtol(argv[++i], &end, 10);
      if (*end || n < 1 || n > 10000000) {
        fprintf(stderr, "ncghl test: --bench wants a whole number of rounds from 1\n");
        free(paths);
        return 2;
      }
      rounds = (int)n;
      bench = true;
    } else if (argv[i][0] == '-' && argv[i][1]) {
      fprintf(stderr, "ncghl test: unknown option '%s' (usage: ncghl test [--env FILE] "
                      "[--bench N] [--coverage] [PATH...])\n", argv[i]);
      free(paths);
      return 2;
    } else {
      paths[npaths++] = argv[i];
    }
  }
  struct config cfg;
  if (load_config(&cfg, env_file, "test") != 0) {
    free(paths);
    return 1;
  }
  struct group *groups = NULL;
  int ngroups = 0, problems = 0;
  char err[1024];
  char deftests[4096];
  snprintf(deftests, sizeof(deftests), "%s/tests", cfg.mappings_dir);
  if (npaths == 0)
    paths[npaths++] = deftests;
  for (int i = 0; i < npaths; i++) {
    struct stat sb;
    if (stat(paths[i], &sb) != 0) {
      if (paths[i] == deftests) /* no tests directory: no cases */
        continue;
      printf("FAIL %s: %s\n", paths[i], strerror(errno));
      problems++;
      continue;
    }
    char **files = NULL;
    int n = 0, cap = 0;
    if (S_ISDIR(sb.st_mode)) {
      if (collect_cases(paths[i], 0, &files, &n, &cap, err, sizeof(err)) != 0) {
        printf("FAIL %s: %s\n", paths[i], err);
        problems++;
      }
    } else {
      files = malloc(sizeof(*files));
      if (files && (files[0] = xstrdup(paths[i])))
        n = 1;
    }
    struct group *g = n ? group_for(&groups, &ngroups, paths[i] == deftests ? NULL
                                                                             : owner_dir(paths[i]))
                        : NULL;
    for (int j = 0; j < n; j++) {
      if (!g || group_add(g, files[j]) != 0) {
        printf("FAIL %s: out of memory\n", files[j]);
        problems++;
      }
    }
    free_list(files, n);
  }
  struct runner_report total = {0};
  total.failed = problems;
  for (int i = 0; i < ngroups; i++)
    test_group(&cfg, &groups[i], rounds, coverage, &total);
  if (total.passed + total.failed == 0)
    fprintf(stderr, "ncghl test: no test cases found (looked in %s)\n",
            npaths == 1 && paths[0] == deftests ? deftests : "the given paths");
  printf("%d passed, %d failed\n", total.passed, total.failed);
  fflush(stdout);
  if (bench && total.seconds > 0)
    fprintf(stderr, "bench: %ld cases in %.3f s: %.0f cases/s\n", total.runs, total.seconds,
            (double)total.runs / total.seconds);
  groups_free(groups, ngroups);
  free(paths);
  config_free(&cfg);
  log_close();
  return total.failed ? 1 : 0;
}

int runner_cmd_map(int argc, char **argv) {
  const char *env_file = NULL, *source = NULL, *file = NULL, *fixtures = NULL;
  bool explain = false;
  static const char use[] = "usage: ncghl map --source nowcerts|ghl|manual FILE.json "
                            "[--fixtures CASES.lua] [--explain] [--env FILE]";
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--explain") == 0)
      explain = true;
    else if (strcmp(argv[i], "--env") == 0 && i + 1 < argc)
      env_file = argv[++i];
    else if (strcmp(argv[i], "--source") == 0 && i + 1 < argc)
      source = argv[++i];
    else if (strcmp(argv[i], "--fixtures") == 0 && i + 1 < argc)
      fixtures = argv[++i];
    else if ((argv[i][0] != '-' || !argv[i][1]) && !file)
      file = argv[i];
    else {
      fprintf(stderr, "ncghl map: unexpected '%s'\n%s\n", argv[i], use);
      return 2;
    }
  }
  if (!source || !file) {
    fprintf(stderr, "ncghl map: %s\n%s\n", !source ? "--source is required" : "FILE.json is required",
            use);
    return 2;
  }
  if (strcmp(source, "nowcerts") != 0 && strcmp(source, "ghl") != 0 &&
      strcmp(source, "manual") != 0) {
    fprintf(stderr, "ncghl map: --source must be nowcerts, ghl or manual, not '%s'\n", source);
    return 2;
  }
  char err[1024];
  char *body;
  size_t len;
  if (read_text(file, MAX_BODY_FILE_BYTES, &body, &len, err, sizeof(err)) != 0) {
    fprintf(stderr, "ncghl map: %s\n", err);
    return 1;
  }
  /* The same strict parser as intake: what it refuses, the service would. */
  struct json *doc = json_parse(body, len, err, sizeof(err));
  if (!doc) {
    fprintf(stderr, "ncghl map: %s is not JSON: %s\n", file, err);
    free(body);
    return 1;
  }
  bool object = json_type(doc) == JSON_OBJECT;
  json_free(doc);
  if (!object) {
    fprintf(stderr, "ncghl map: %s: a webhook body must be a JSON object\n", file);
    free(body);
    return 1;
  }
  struct config cfg;
  if (load_config(&cfg, env_file, "map") != 0) {
    free(body);
    return 1;
  }
  int rc = 1;
  struct runner *r = runner_new(&cfg, NULL, NULL, NULL, err, sizeof(err));
  if (r && explain)
    set_harness_flag(r, "explain", true);
  if (!r)
    fprintf(stderr, "ncghl map: %s\n", err);
  else if (runner_map(r, source, body, len, fixtures, stdout, err, sizeof(err)) != 0)
    fprintf(stderr, "ncghl map: %s\n", err);
  else
    rc = 0;
  runner_free(r);
  free(body);
  config_free(&cfg);
  log_close();
  return rc;
}
