/* The Lua runtime. Design in brief:
 *  - A state (struct lrt_state) is counted: the runtime holds one reference
 *    to the current state, and every event one to the state it started on.
 *    A reload builds and checks a whole new state before swapping it in; the
 *    old one is closed when its last event ends.
 *  - Every event is a coroutine anchored in the registry. It yields only from
 *    ncghl.call and ncghl.lock, and is only ever resumed from a loop callback
 *    (a zero timer, "kick"), never from inside the C function that yielded.
 *  - The memory cap and the instruction budget apply while script code runs;
 *    the runtime's own pushes are not capped, so they cannot fail halfway. */
#include "lua_rt.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <lua-cjson.h>

#include "clock.h"
#include "config.h"
#include "digest.h"
#include "dirlist.h"
#include "hash.h"
#include "log.h"
#include "lua_api.h"
#include "lua_cost.h"
#include "lua_json.h"
#include "pii.h"
#include "queue.h"
#include "store.h"

/* The count hook fires every HOOK_EVERY VM instructions: often enough to stop
 * a loop within microseconds of its budget, rarely enough to cost nothing. */
#define HOOK_EVERY 1000
#define DEFAULT_BUDGET 10000000L
#define DEFAULT_MEMORY_MB 64
#define MAX_SCRIPT_BYTES (4u << 20)
#define MAX_SCAN_DEPTH 4
#define LOCK_BUCKETS 256

#define DEFAULT_EVENT_TIMEOUT_MS 2000
/* What the C functions a script calls get done per millisecond, counted low
 * (the development machine does several times as much) so that a refusal
 * errs on the side of stopping too early, never too late. */
#define PATTERN_STEPS_PER_MS 100000.0
#define REP_BYTES_PER_MS 500000.0
#define JSON_BYTES_PER_MS 20000.0

static const char MSG_BUDGET[] = "instruction budget exceeded";
static const char MSG_MEMORY[] = "not enough memory";
static const char MSG_EVENT_MEMORY[] =
    "not enough memory: the event's own limit (LUA_EVENT_MEMORY_MB) is exceeded";
static const char MSG_PRESSURE[] =
    "not enough memory: the Lua state (LUA_MEMORY_MB) is full with other events' data; will retry";
static const char MSG_TIME[] = "the event's time limit (LUA_EVENT_TIMEOUT_MS) is exceeded";
static const char MSG_LOAD_TIME[] =
    "loading the scripts takes longer than an event may (LUA_EVENT_TIMEOUT_MS)";
#define TIME_MSG(g) ((g)->time_msg ? (g)->time_msg : MSG_TIME)

/* What the Lua code running now counts against: an event, or a load. */
struct guard {
  long budget;
  const char *killed; /* one of the MSG_ above once the code must stop */
  /* Memory: bytes allocated minus bytes freed while this code ran, against
   * its own cap (0: only the state's cap applies). A collection that frees
   * other events' garbage lowers it; that only ever gives room back. */
  long long mem;
  size_t mem_cap;
  const char *refused; /* why the last allocation was refused, for LUA_ERRMEM */
  long long gc_mark;   /* collect again in the hook once mem passes this */
  /* Time: what is left of the event's allowance (seconds of its code
   * running on the loop; waiting for an answer does not count), and while
   * it runs the monotonic instant it ends (0: no time limit). */
  double time_left;
  double deadline;
  const char *time_msg; /* what running out of time says; NULL: MSG_TIME */
};

/* A script's bytes. Every tenant loads the same engine library and shipped
 * mappings, so with a shared table (lrt_texts, handed in by the host) equal
 * bytes are kept once for every runtime, counted by reference. */
struct text {
  struct lrt_texts *pool; /* NULL: this runtime's own */
  struct text *next;      /* in its pool's bucket */
  unsigned long long hash;
  int refs;
  size_t len;
  char s[]; /* len bytes and a NUL */
};

#define TEXT_BUCKETS 256

struct lrt_texts {
  struct text *buckets[TEXT_BUCKETS];
  size_t count; /* texts held, for lrt_texts_free's check */
};

struct script {
  char *name; /* module name, e.g. "ncghl.ghl" or "contacts" */
  char *path; /* for error messages: "<dir>/<rel>" */
  struct text *text;
};

struct script_list {
  struct script *v;
  size_t n, cap;
  /* While the shipped defaults are read under an overlay: the prefix their
   * module names get ("defaults."), and whether a name already provided
   * (the agency's own file) is skipped without a warning. */
  const char *prefix;
  bool fallback;
  struct lrt_texts *pool; /* where read bytes are shared (NULL: not shared) */
};

struct lrt_state {
  struct lrt *rt;
  lua_State *L;
  int refs; /* 1 while current, plus one per event started on it */
  size_t used, limit;
  bool limit_on; /* the cap applies to script code, not to the runtime's own pushes */
  bool refused;  /* the last growing allocation was refused */
  struct guard *guard;
  struct lrt_ev *cur; /* the event whose coroutine runs now */
  int entry_ref;      /* engine.run */
  char version[13];
  struct lapi_ctx api;
  /* The bytes it was built from: a module required late (inside a
   * function) comes from this version even after a reload. */
  struct script_list scripts;
};

struct lock {
  char *key;
  struct lrt_ev *owner;
  struct hash_node node; /* in lrt.locks while held, keyed by key */
  bool node_held;        /* also held across the nodes (store_keys_lock) */
};

enum park { PARK_NONE, PARK_CALL, PARK_LOCK, PARK_WRITE, PARK_NODE };
enum wake { WAKE_START, WAKE_RESULT, WAKE_LOCKED };

struct saved_result {
  bool ok, retryable;
  int status, attempts;
  char *body;
  size_t body_len;
  char *error;
};

struct lrt_ev {
  struct lrt *rt;
  struct lrt_state *st;
  lua_State *co;
  int co_ref;
  char *id, *source, *type; /* one allocation, id first */
  int run;
  lrt_done_cb done;
  void *ud;
  struct guard guard;

  enum park park;
  int ghl_holds; /* GHL rate-limit room its reads hold for its writes (up_call) */
  bool in_start;              /* inside host->start: a done callback now is synchronous */
  struct saved_result *saved; /* an answer waiting for the loop */
  char *call_buf;             /* the call's strings, alive until it ends */

  struct lock **held;
  int nheld, capheld;
  struct lock **want; /* locks this event waits for, allocated up front */
  int nwant;
  struct lrt_ev *wait_prev, *wait_next;
  bool waiting;
  unsigned visit;
  struct event *node_retry; /* another node holds a key: try again soon */
  double node_since;        /* clock_mono() of the first refusal; 0: none */

  struct lrt_ev *ready_next;
  enum wake wake;
};

struct lrt {
  struct lrt_host host;
  lrt_check_fn check; /* lrt_set_check: the reload's test cases */
  struct lrt_state *cur;
  int running;
  bool freeing;
  struct event *kick;
  struct lrt_ev *ready_head, *ready_tail;
  struct lrt_ev *wait_head, *wait_tail;
  bool locks_dirty;
  bool draining; /* lrt_drain runs the ready list itself: no timer needed */
  bool quiet;
  unsigned visit_gen;
  struct hash_node *buckets[LOCK_BUCKETS];
  struct hash_table locks; /* the held ones, in buckets */

  /* The scripts of the current version, kept (their bytes shared through
   * host.texts) so that a state released while idle is built again from
   * exactly the bytes that were checked, never from files changed since. */
  struct script_list scripts;
  char version[13];
  double idle_after;     /* lrt_set_idle: seconds; 0: the state is kept */
  struct event *idle_ev; /* releases the state once idle that long */
  unsigned long builds;  /* states built for events after a release */

  /* The last load or reload, for /health. */
  bool last_ok;
  double last_at;
  char last_msg[512];
};

static void ev_finish(struct lrt_ev *e, int rc, int nres);

static char *xstrdup(const char *s) {
  if (!s)
    return NULL;
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p)
    memcpy(p, s, n);
  return p;
}

static struct lrt_state *state_of(lua_State *L) {
  void *ud;
  lua_getallocf(L, &ud);
  return ud;
}

static long budget_of(const struct config *cfg) {
  return cfg->lua_instruction_budget > 0 ? cfg->lua_instruction_budget : DEFAULT_BUDGET;
}

/* An event's limits, from the configuration. */
static void guard_for_event(struct guard *g, const struct config *cfg) {
  g->budget = budget_of(cfg);
  int mb = cfg->lua_event_memory_mb > 0 ? cfg->lua_event_memory_mb
           : cfg->lua_memory_mb > 0    ? (cfg->lua_memory_mb >= 4 ? cfg->lua_memory_mb / 4 : 1)
                                       : DEFAULT_MEMORY_MB / 4;
  g->mem_cap = (size_t)mb << 20;
  int ms = cfg->lua_event_timeout_ms > 0 ? cfg->lua_event_timeout_ms : DEFAULT_EVENT_TIMEOUT_MS;
  g->time_left = ms / 1000.0;
}

/* ------------------------------------------------------------------------ */
/* Memory cap and instruction budget                                        */

static void *st_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  struct lrt_state *st = ud;
  if (!ptr)
    osize = 0; /* then osize only tells the kind of object */
  struct guard *g = st->limit_on ? st->guard : NULL;
  if (nsize == 0) {
    free(ptr);
    st->used -= osize;
    if (g)
      g->mem -= (long long)osize;
    return NULL;
  }
  if (nsize > osize && st->limit_on) {
    size_t grow = nsize - osize;
    /* The event's own cap first: crossing it is that event's doing. The
     * state's cap, hit while the event is within its own, is pressure from
     * the others: worth another try later. */
    const char *why = NULL;
    if (g && g->mem_cap && g->mem + (long long)grow > (long long)g->mem_cap)
      why = MSG_EVENT_MEMORY;
    else if (st->used + grow > st->limit)
      why = g && g->mem_cap ? MSG_PRESSURE : MSG_MEMORY;
    if (why) {
      /* Lua answers a refusal with an emergency collection and one more
       * try. Only a second refusal in a row means the script really is out
       * of memory; from then on the guard stops it even if it catches the
       * error. */
      if (st->refused && g && !g->killed)
        g->killed = why;
      if (g)
        g->refused = why;
      st->refused = true;
      return NULL;
    }
  }
  void *p = realloc(ptr, nsize);
  if (!p)
    return NULL;
  if (nsize > osize)
    st->refused = false;
  st->used = st->used - osize + nsize;
  if (g)
    g->mem += (long long)nsize - (long long)osize;
  return p;
}

/* Redis's luaMaskCountHook idea: once the budget is spent the hook re-arms
 * itself for every instruction, so a script's pcall that catches the error
 * gets one instruction further and is stopped again. */
static void count_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  struct guard *g = state_of(L)->guard;
  if (!g)
    return;
  /* Near its own cap, an event's count is often mostly garbage. Lua
   * collects before it reports a failed allocation, but the string
   * library's buffers do not: collect here, at a safe point, so such a
   * refusal is about live data. At most a few times an event. */
  if (!g->killed && g->mem_cap && g->mem > (long long)(g->mem_cap / 4 * 3) &&
      g->mem > g->gc_mark) {
    lua_gc(L, LUA_GCCOLLECT, 0);
    g->gc_mark = g->mem + (long long)(g->mem_cap / 8);
  }
  if (!g->killed) {
    g->budget -= lua_gethookcount(L);
    if (g->deadline > 0 && clock_mono() > g->deadline)
      g->killed = TIME_MSG(g);
    else if (g->budget > 0)
      return;
    else
      g->killed = MSG_BUDGET;
  }
  lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
  /* Level 0: a hook runs in the frame of the function it interrupted, so
   * this names the line of the loop itself. */
  luaL_where(L, 0);
  lua_pushstring(L, g->killed);
  lua_concat(L, 2);
  lua_error(L);
}

/* ------------------------------------------------------------------------ */
/* C functions: bounded before they run                                     */

enum cguard { CG_FIND, CG_MATCH, CG_GMATCH, CG_GSUB, CG_REP, CG_JSON_ENCODE, CG_JSON_DECODE };

static const char *const cguard_names[] = {"string.find", "string.match", "string.gmatch",
                                           "string.gsub", "string.rep", "cjson.encode",
                                           "cjson.decode"};

/* Stops the event for good: the guard keeps the reason, and the hook,
 * re-armed for every instruction, raises it again if a pcall catches it. */
static int refuse(lua_State *L, struct guard *g, const char *why, const char *what, double amount,
                  const char *unit) {
  if (!g->killed)
    g->killed = why;
  lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
  luaL_where(L, 1);
  lua_pushfstring(L, "%s refused (%f %s, more than the event has left): %s", what,
                  (lua_Number)amount, unit, why);
  lua_concat(L, 2);
  return lua_error(L);
}

/* The bytes the event may still allocate. An event's count includes its
 * garbage not yet collected, so before a refusal a full collection gives
 * back what is no longer in use (as Lua itself does before it reports an
 * allocation failure). */
static double mem_room(lua_State *L, struct guard *g, double want) {
  if (!g->mem_cap)
    return 1e300;
  double room = (double)((long long)g->mem_cap - g->mem);
  if (want > room) {
    lua_gc(L, LUA_GCCOLLECT, 0);
    room = (double)((long long)g->mem_cap - g->mem);
  }
  return room;
}

/* The same for the state: the string library's buffers allocate without
 * Lua's emergency collection, so a result that would not fit collects
 * first. Still short afterwards, with the event within its own cap, it is
 * the others' data: a refusal worth retrying. */
static int state_room(lua_State *L, struct guard *g, double want, const char *what) {
  struct lrt_state *st = state_of(L);
  if ((double)st->used + want <= (double)st->limit)
    return 0;
  lua_gc(L, LUA_GCCOLLECT, 0);
  if ((double)st->used + want <= (double)st->limit)
    return 0;
  return refuse(L, g, g->mem_cap ? MSG_PRESSURE : MSG_MEMORY, what, want, "bytes");
}

/* Upvalue 1: the library's own function; upvalue 2: its enum cguard. Checks
 * the call's bound against what the running event has left, then calls the
 * function with the same arguments. */
static int c_guarded(lua_State *L) {
  struct guard *g = state_of(L)->guard;
  int kind = (int)lua_tointeger(L, lua_upvalueindex(2));
  if (g && g->deadline > 0) {
    double left_ms = (g->deadline - clock_mono()) * 1000.0;
    if (left_ms < 0)
      left_ms = 0;
    const char *what = cguard_names[kind];
    size_t sl = 0, pl = 0;
    switch (kind) {
    case CG_FIND:
    case CG_MATCH:
    case CG_GMATCH:
    case CG_GSUB:
      if (lua_type(L, 1) == LUA_TSTRING && lua_type(L, 2) == LUA_TSTRING &&
          !(kind == CG_FIND && lua_toboolean(L, 4))) {
        const char *s = lua_tolstring(L, 1, &sl);
        const char *p = lua_tolstring(L, 2, &pl);
        double steps = lcost_pattern(s, sl, p, pl);
        if (steps / PATTERN_STEPS_PER_MS > left_ms)
          return refuse(L, g, TIME_MSG(g), what, steps, "matcher steps");
      }
      break;
    case CG_REP:
      if (lua_type(L, 1) == LUA_TSTRING && lua_type(L, 2) == LUA_TNUMBER) {
        lua_tolstring(L, 1, &sl);
        if (lua_type(L, 3) == LUA_TSTRING)
          lua_tolstring(L, 3, &pl);
        double bytes = (double)lua_tonumber(L, 2) * (double)(sl + pl);
        if (bytes > mem_room(L, g, bytes))
          return refuse(L, g, MSG_EVENT_MEMORY, what, bytes, "bytes");
        if (bytes / REP_BYTES_PER_MS > left_ms)
          return refuse(L, g, TIME_MSG(g), what, bytes, "bytes");
        state_room(L, g, bytes, what);
      }
      break;
    case CG_JSON_ENCODE: {
      double limit = left_ms * JSON_BYTES_PER_MS;
      double room = g->mem_cap ? (double)((long long)g->mem_cap - g->mem) : 1e300;
      double bytes = lcost_json(L, 1, limit < room ? limit : room);
      if (bytes > room && bytes > (room = mem_room(L, g, bytes)))
        bytes = lcost_json(L, 1, limit < room ? limit : room);
      if (bytes > room)
        return refuse(L, g, MSG_EVENT_MEMORY, what, bytes, "bytes");
      if (bytes > limit)
        return refuse(L, g, TIME_MSG(g), what, bytes, "bytes");
      state_room(L, g, bytes, what);
      break;
    }
    case CG_JSON_DECODE:
      if (lua_type(L, 1) == LUA_TSTRING) {
        lua_tolstring(L, 1, &sl);
        if ((double)sl / JSON_BYTES_PER_MS > left_ms)
          return refuse(L, g, TIME_MSG(g), what, (double)sl, "bytes");
      }
      break;
    }
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

static void guard_field(lua_State *L, const char *field, enum cguard kind) {
  lua_getfield(L, -1, field);
  lua_pushinteger(L, kind);
  lua_pushcclosure(L, c_guarded, 2);
  lua_setfield(L, -2, field);
}

/* Puts the guards around the string functions that can run long on their
 * own (the string metatable's __index is this same table, so s:rep() is
 * guarded too) and around cjson's encode and decode; cjson.new, which would
 * hand out unguarded copies, is not available to scripts. */
static void install_c_guards(lua_State *L) {
  lua_getglobal(L, LUA_STRLIBNAME);
  guard_field(L, "find", CG_FIND);
  guard_field(L, "match", CG_MATCH);
  guard_field(L, "gmatch", CG_GMATCH);
  guard_field(L, "gsub", CG_GSUB);
  guard_field(L, "rep", CG_REP);
  lua_pop(L, 1);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, "cjson") == LUA_TTABLE) {
    guard_field(L, "encode", CG_JSON_ENCODE);
    guard_field(L, "decode", CG_JSON_DECODE);
    lua_pushnil(L);
    lua_setfield(L, -2, "new");
  }
  lua_pop(L, 1);
  if (lua_getfield(L, -1, "ncghl.json_c") == LUA_TTABLE)
    guard_field(L, "decode", CG_JSON_DECODE);
  lua_pop(L, 2);
}

static int on_panic(lua_State *L) {
  const char *msg = lua_tostring(L, -1);
  log_error("lua: unprotected error: %s", msg ? msg : "?");
  return 0; /* Lua aborts */
}

/* ------------------------------------------------------------------------ */
/* Scripts: read once at load, so scripts themselves never touch files      */

struct lrt_texts *lrt_texts_new(void) { return calloc(1, sizeof(struct lrt_texts)); }

void lrt_texts_free(struct lrt_texts *tx) {
  if (!tx)
    return;
  if (tx->count) {
    /* A runtime freed while its events still ran goes when the last one
     * ends, and drops its texts then: the table stays for it (a leak at
     * exit, never a use after free). */
    log_warn("lua: %zu shared scripts still in use; their table is kept", tx->count);
    return;
  }
  free(tx);
}

static unsigned long long text_hash(const char *p, size_t n) {
  unsigned long long h = 1469598103934665603ULL; /* FNV-1a */
  for (size_t i = 0; i < n; i++)
    h = (h ^ (unsigned char)p[i]) * 1099511628211ULL;
  return h;
}

/* The text of these n bytes: the pool's copy when it has them, else a new
 * one (added to the pool, if any). NULL when out of memory. */
static struct text *text_get(struct lrt_texts *pool, const char *p, size_t n) {
  unsigned long long h = text_hash(p, n);
  struct text **bucket = pool ? &pool->buckets[h % TEXT_BUCKETS] : NULL;
  for (struct text *t = bucket ? *bucket : NULL; t; t = t->next)
    if (t->hash == h && t->len == n && memcmp(t->s, p, n) == 0) {
      t->refs++;
      return t;
    }
  struct text *t = malloc(sizeof(*t) + n + 1);
  if (!t)
    return NULL;
  t->pool = pool;
  t->hash = h;
  t->refs = 1;
  t->len = n;
  memcpy(t->s, p, n);
  t->s[n] = '\0';
  t->next = NULL;
  if (bucket) {
    t->next = *bucket;
    *bucket = t;
    pool->count++;
  }
  return t;
}

static void text_unref(struct text *t) {
  if (!t || --t->refs > 0)
    return;
  if (t->pool) {
    for (struct text **p = &t->pool->buckets[t->hash % TEXT_BUCKETS]; *p; p = &(*p)->next)
      if (*p == t) {
        *p = t->next;
        break;
      }
    t->pool->count--;
  }
  free(t);
}

static void scripts_free(struct script_list *l) {
  for (size_t i = 0; i < l->n; i++) {
    free(l->v[i].name);
    free(l->v[i].path);
    text_unref(l->v[i].text);
  }
  free(l->v);
  memset(l, 0, sizeof(*l));
}

/* to = from, sharing the bytes. 0, or -1 (out of memory, to empty). */
static int scripts_copy(struct script_list *to, const struct script_list *from) {
  memset(to, 0, sizeof(*to));
  to->v = calloc(from->n ? from->n : 1, sizeof(*to->v));
  if (!to->v)
    return -1;
  to->cap = from->n;
  to->pool = from->pool;
  for (size_t i = 0; i < from->n; i++) {
    struct script *d = &to->v[i];
    d->name = xstrdup(from->v[i].name);
    d->path = xstrdup(from->v[i].path);
    d->text = from->v[i].text;
    d->text->refs++;
    to->n++;
    if (!d->name || !d->path) {
      scripts_free(to);
      return -1;
    }
  }
  return 0;
}

static const struct script *scripts_find(const struct script_list *l, const char *name) {
  for (size_t i = 0; i < l->n; i++)
    if (strcmp(l->v[i].name, name) == 0)
      return &l->v[i];
  return NULL;
}

static bool scripts_have(const struct script_list *l, const char *name) {
  for (size_t i = 0; i < l->n; i++)
    if (strcmp(l->v[i].name, name) == 0)
      return true;
  return false;
}

static int read_file(const char *path, char **text, size_t *len, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  char *buf = NULL;
  size_t n = 0, cap = 0;
  for (;;) {
    if (cap - n < 4096) {
      size_t ncap = cap ? cap * 2 : 8192;
      char *nb = ncap <= MAX_SCRIPT_BYTES + 8192 ? realloc(buf, ncap) : NULL;
      if (!nb) {
        snprintf(err, errlen, "%s: too large or out of memory", path);
        free(buf);
        fclose(f);
        return -1;
      }
      buf = nb;
      cap = ncap;
    }
    size_t got = fread(buf + n, 1, cap - n - 1, f);
    n += got;
    if (got == 0)
      break;
  }
  bool bad = ferror(f);
  fclose(f);
  if (bad || n > MAX_SCRIPT_BYTES) {
    snprintf(err, errlen, "%s: %s", path, bad ? "read error" : "too large");
    free(buf);
    return -1;
  }
  buf[n] = '\0';
  *text = buf;
  *len = n;
  return 0;
}

static int add_script(struct script_list *l, const char *path, const char *rel, char *err,
                      size_t errlen) {
  size_t rl = strlen(rel), pl = l->prefix ? strlen(l->prefix) : 0;
  char *name = malloc(pl + rl - 3);
  if (!name) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  if (pl)
    memcpy(name, l->prefix, pl);
  for (size_t i = 0; i < rl - 4; i++)
    name[pl + i] = rel[i] == '/' ? '.' : rel[i];
  name[pl + rl - 4] = '\0';
  if (l->fallback && scripts_have(l, name)) {
    free(name); /* the agency's own file of that name wins */
    return 0;
  }
  if (scripts_have(l, name)) {
    /* The engine's library comes first and cannot be replaced by a mapping
     * file of the same module name. */
    log_warn("lua: %s ignored: module %s is already provided", path, name);
    free(name);
    return 0;
  }
  if (l->n == l->cap) {
    size_t ncap = l->cap ? l->cap * 2 : 16;
    struct script *nv = realloc(l->v, ncap * sizeof(*nv));
    if (!nv) {
      free(name);
      snprintf(err, errlen, "out of memory");
      return -1;
    }
    l->v = nv;
    l->cap = ncap;
  }
  struct script *s = &l->v[l->n];
  memset(s, 0, sizeof(*s));
  s->name = name;
  s->path = xstrdup(path);
  char *bytes = NULL;
  size_t len = 0;
  if (!s->path || read_file(path, &bytes, &len, err, errlen) != 0 ||
      !(s->text = text_get(l->pool, bytes, len))) {
    if (!s->path || bytes)
      snprintf(err, errlen, "out of memory");
    free(bytes);
    free(s->name);
    free(s->path);
    return -1;
  }
  free(bytes);
  l->n++;
  return 0;
}

/* Adds every *.lua under root/rel (sorted, so the order and the version hash
 * never depend on the file system). `skip` names a top-level directory to
 * leave out (the mapping test cases). */
static int scan_dir(struct script_list *l, const char *root, const char *rel, int depth,
                    const char *skip, char *err, size_t errlen) {
  char dir[4096];
  if (snprintf(dir, sizeof(dir), "%s%s%s", root, *rel ? "/" : "", rel) >= (int)sizeof(dir)) {
    snprintf(err, errlen, "%s: path too long", root);
    return -1;
  }
  char **names;
  size_t n;
  if (dirlist_read(dir, &names, &n) != 0) {
    snprintf(err, errlen, "%s: %s", dir, strerror(errno));
    return -1;
  }
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    char path[4096], sub[4096];
    if (snprintf(path, sizeof(path), "%s/%s", dir, names[i]) >= (int)sizeof(path) ||
        snprintf(sub, sizeof(sub), "%s%s%s", rel, *rel ? "/" : "", names[i]) >= (int)sizeof(sub)) {
      snprintf(err, errlen, "%s: path too long", dir);
      rc = -1;
      break;
    }
    struct stat sb;
    if (stat(path, &sb) != 0)
      continue; /* a dangling link is not a script */
    size_t nl = strlen(names[i]);
    if (S_ISDIR(sb.st_mode)) {
      if (depth < MAX_SCAN_DEPTH && !(depth == 0 && skip && strcmp(names[i], skip) == 0) &&
          !strchr(names[i], '.'))
        rc = scan_dir(l, root, sub, depth + 1, skip, err, errlen);
    } else if (S_ISREG(sb.st_mode) && nl > 4 && strcmp(names[i] + nl - 4, ".lua") == 0 &&
               !memchr(names[i], '.', nl - 4)) {
      rc = add_script(l, path, sub, err, errlen);
    }
  }
  dirlist_free(names, n);
  return rc;
}

static void version_of(const struct script_list *l, char out[13]) {
  size_t total = 0;
  for (size_t i = 0; i < l->n; i++)
    total += strlen(l->v[i].name) + 1 + l->v[i].text->len + 1;
  char *buf = malloc(total + 1);
  char hex[DIGEST_HEX_LEN + 1];
  if (!buf) {
    snprintf(out, 13, "unknown");
    return;
  }
  size_t off = 0;
  for (size_t i = 0; i < l->n; i++) {
    size_t nl = strlen(l->v[i].name) + 1;
    memcpy(buf + off, l->v[i].name, nl);
    off += nl;
    memcpy(buf + off, l->v[i].text->s, l->v[i].text->len);
    off += l->v[i].text->len;
    buf[off++] = '\0';
  }
  digest_sha256_hex(buf, off, hex);
  free(buf);
  memcpy(out, hex, 12);
  out[12] = '\0';
}

/* ------------------------------------------------------------------------ */
/* The sandbox                                                              */

/* require: modules come only from the scripts read at load (lua_dir and
 * mappings_dir), and only as text. */
static int sb_require(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  lua_settop(L, 1);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE); /* 2 */
  if (lua_getfield(L, 2, name) != LUA_TNIL && lua_toboolean(L, -1))
    return 1;
  lua_pop(L, 1);
  const struct script *sc = scripts_find(&state_of(L)->scripts, name);
  if (!sc)
    return luaL_error(L, "module '%s' not found in the lua or mappings directory", name);
  const char *chunk = lua_pushfstring(L, "@%s", sc->path); /* 3 */
  if (luaL_loadbufferx(L, sc->text->s, sc->text->len, chunk, "t") != LUA_OK)
    return lua_error(L);
  lua_pushstring(L, name);
  lua_pushstring(L, sc->path);
  lua_call(L, 2, 1);
  if (!lua_isnil(L, -1))
    lua_setfield(L, 2, name);
  else
    lua_pop(L, 1);
  if (lua_getfield(L, 2, name) == LUA_TNIL) {
    lua_pop(L, 1);
    lua_pushboolean(L, 1);
    lua_pushvalue(L, -1);
    lua_setfield(L, 2, name);
  }
  return 1;
}

int lrt_load_module(lua_State *L, const char *name) {
  const struct script *sc = scripts_find(&state_of(L)->scripts, name);
  if (!sc) {
    lua_pushfstring(L, "module '%s' not found in the lua directory", name);
    return LUA_ERRFILE;
  }
  const char *chunk = lua_pushfstring(L, "@%s", sc->path);
  int rc = luaL_loadbufferx(L, sc->text->s, sc->text->len, chunk, "t");
  lua_remove(L, -2); /* the chunk name */
  return rc;
}

/* load: text chunks only. The original load is upvalue 1. */
static int sb_load(lua_State *L) {
  int n = lua_gettop(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushvalue(L, 1);
  if (n >= 2)
    lua_pushvalue(L, 2);
  else
    lua_pushnil(L);
  lua_pushliteral(L, "t");
  if (n >= 4)
    lua_pushvalue(L, 4);
  lua_call(L, n >= 4 ? 4 : 3, LUA_MULTRET);
  return lua_gettop(L) - n;
}

static int sb_collectgarbage(lua_State *L) {
  const char *opt = luaL_optstring(L, 1, "collect");
  if (strcmp(opt, "count") != 0)
    return luaL_error(L, "collectgarbage: only \"count\" is available to scripts");
  lua_pushnumber(L, (lua_Number)lua_gc(L, LUA_GCCOUNT, 0) +
                        (lua_Number)lua_gc(L, LUA_GCCOUNTB, 0) / 1024.0);
  return 1;
}

/* Finalizers run with hooks off, outside any event's budget: a __gc that
 * loops would hang the service, so scripts may not set one. */
static int sb_setmetatable(lua_State *L) {
  if (lua_istable(L, 2) && lua_getfield(L, 2, "__gc") != LUA_TNIL)
    return luaL_error(L, "setmetatable: __gc is not available to scripts");
  lua_settop(L, 2);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, 2, 1);
  return 1;
}

static void open_lib(lua_State *L, const char *name, lua_CFunction fn) {
  luaL_requiref(L, name, fn, 1);
  lua_pop(L, 1);
}

static void wrap_global(lua_State *L, const char *name, lua_CFunction fn) {
  lua_getglobal(L, name);
  lua_pushcclosure(L, fn, 1);
  lua_setglobal(L, name);
}

static int api_call(lua_State *L);
static int api_lock(lua_State *L);
static int api_wait_writable(lua_State *L);

static void open_sandbox(lua_State *L, struct lrt_state *st) {
  open_lib(L, LUA_GNAME, luaopen_base);
  open_lib(L, LUA_TABLIBNAME, luaopen_table);
  open_lib(L, LUA_STRLIBNAME, luaopen_string);
  open_lib(L, LUA_MATHLIBNAME, luaopen_math);
  open_lib(L, LUA_UTF8LIBNAME, luaopen_utf8);
  open_lib(L, LUA_COLIBNAME, luaopen_coroutine);
  /* Linked statically and registered as already loaded, so `require "cjson"`
   * works without any C module loader in the sandbox. */
  luaL_requiref(L, "cjson", luaopen_cjson, 0);
  lua_pop(L, 1);
  /* ncghl.json's decoder (lua_json.c), loaded the same way. */
  luaL_requiref(L, "ncghl.json_c", ljson_open, 0);
  lua_pop(L, 1);

  lua_pushnil(L);
  lua_setglobal(L, "dofile");
  lua_pushnil(L);
  lua_setglobal(L, "loadfile");
  wrap_global(L, "load", sb_load);
  wrap_global(L, "setmetatable", sb_setmetatable);
  lua_pushcfunction(L, sb_collectgarbage);
  lua_setglobal(L, "collectgarbage");
  lua_pushcfunction(L, sb_require);
  lua_setglobal(L, "require");

  lua_getglobal(L, LUA_STRLIBNAME);
  lua_pushnil(L);
  lua_setfield(L, -2, "dump");
  lua_pop(L, 1);
  install_c_guards(L);

  /* A tiny os: the clock and dates, nothing that reaches the system. */
  lua_pushcfunction(L, luaopen_os);
  lua_call(L, 0, 1);
  lua_createtable(L, 0, 4);
  static const char *const os_keep[] = {"time", "date", "clock", "difftime"};
  for (size_t i = 0; i < sizeof(os_keep) / sizeof(*os_keep); i++) {
    lua_getfield(L, -2, os_keep[i]);
    lua_setfield(L, -2, os_keep[i]);
  }
  lua_setglobal(L, "os");
  lua_pop(L, 1);

  /* package.loaded only: no searchers, no paths, no C loaders. */
  lua_createtable(L, 0, 1);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_setfield(L, -2, "loaded");
  lua_setglobal(L, "package");

  lapi_open(L, &st->api);
  lua_getglobal(L, "ncghl");
  lua_pushcfunction(L, api_call);
  lua_setfield(L, -2, "call");
  lua_pushcfunction(L, api_lock);
  lua_setfield(L, -2, "lock");
  lua_pushcfunction(L, api_wait_writable);
  lua_setfield(L, -2, "wait_writable");
  lua_pop(L, 1);
}

/* Runs in protected mode: builds the sandbox, registers the scripts and runs
 * the engine (which loads routes.lua and everything it requires). */
static int build_cb(lua_State *L) {
  struct lrt_state *st = lua_touserdata(L, 1);
  const struct script_list *scripts = lua_touserdata(L, 2);
  open_sandbox(L, st);

  /* Compile every script, required or not, so a syntax error anywhere fails
   * the load (and `ncghl check`) instead of the first event that needs it. */
  for (size_t i = 0; i < scripts->n; i++) {
    const char *chunk = lua_pushfstring(L, "@%s", scripts->v[i].path);
    if (luaL_loadbufferx(L, scripts->v[i].text->s, scripts->v[i].text->len, chunk, "t") !=
        LUA_OK)
      return lua_error(L);
    lua_pop(L, 2);
  }

  st->limit_on = true;
  lua_sethook(L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
  lua_pushcfunction(L, sb_require);
  lua_pushliteral(L, "ncghl.engine");
  lua_call(L, 1, 1);
  st->limit_on = false;
  lua_sethook(L, NULL, 0, 0);
  if (!lua_istable(L, -1) || lua_getfield(L, -1, "run") != LUA_TFUNCTION)
    return luaL_error(L, "ncghl.engine must return a table with a run(ev) function");
  st->entry_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

static void state_free(struct lrt_state *st) {
  if (!st)
    return;
  if (st->L)
    lua_close(st->L);
  scripts_free(&st->scripts);
  free(st);
}

static void state_unref(struct lrt_state *st) {
  if (--st->refs == 0) {
    log_debug("lua: state %s released", st->version);
    state_free(st);
  }
}

/* An agency's MAPPINGS_DIR overlays the shipped mappings: a file it has
 * replaces the shipped one of that name, a file it lacks falls back to the
 * shipped one, and every shipped file stays reachable as `defaults.<name>`,
 * so an agency's contacts.lua can require "defaults.contacts" and change
 * only what differs. Nothing to do when MAPPINGS_DIR is the defaults. */
static int overlay_defaults(const struct config *cfg, struct script_list *scripts, char *err,
                            size_t errlen) {
  if (!cfg->mappings_defaults_dir)
    return 0;
  char *a = realpath(cfg->mappings_dir, NULL), *b = realpath(cfg->mappings_defaults_dir, NULL);
  bool same = !a || !b || strcmp(a, b) == 0;
  free(a);
  free(b);
  if (same)
    return 0;
  scripts->fallback = true;
  int rc = scan_dir(scripts, cfg->mappings_defaults_dir, "", 0, "tests", err, errlen);
  scripts->prefix = "defaults.";
  if (rc == 0)
    rc = scan_dir(scripts, cfg->mappings_defaults_dir, "", 0, "tests", err, errlen);
  scripts->prefix = NULL;
  scripts->fallback = false;
  return rc;
}

/* Reads every script once: the engine's library, then the mappings (their
 * tests/ directory holds test cases, not scripts), then the defaults they
 * overlay. */
static int scripts_read(const struct config *cfg, struct script_list *scripts, char *err,
                        size_t errlen) {
  if (!cfg->lua_dir || !cfg->mappings_dir) {
    snprintf(err, errlen, "lua_dir and mappings_dir must be set");
    return -1;
  }
  if (scan_dir(scripts, cfg->lua_dir, "", 0, NULL, err, errlen) != 0 ||
      scan_dir(scripts, cfg->mappings_dir, "", 0, "tests", err, errlen) != 0 ||
      overlay_defaults(cfg, scripts, err, errlen) != 0) {
    scripts_free(scripts);
    return -1;
  }
  return 0;
}

static struct lrt_state *state_build(struct lrt *rt, const struct script_list *scripts, char *err,
                                     size_t errlen) {
  const struct config *cfg = rt->host.cfg;
  struct lrt_state *st = calloc(1, sizeof(*st));
  if (!st) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  st->rt = rt;
  st->entry_ref = LUA_NOREF;
  st->limit = (size_t)(cfg->lua_memory_mb > 0 ? cfg->lua_memory_mb : DEFAULT_MEMORY_MB) << 20;
  st->api.host = &rt->host;
  if (scripts_copy(&st->scripts, scripts) != 0) {
    snprintf(err, errlen, "out of memory");
    free(st);
    return NULL;
  }
  st->L = lua_newstate(st_alloc, st);
  if (!st->L) {
    snprintf(err, errlen, "cannot create a Lua state");
    state_free(st);
    return NULL;
  }
  lua_atpanic(st->L, on_panic);

  /* Loading runs on the loop too: a pattern or string.rep in a script's
   * top level gets the same bounds as an event's (without them a slow
   * pattern at load held the whole service, and `ncghl check`, for good). */
  struct guard load = {.budget = budget_of(cfg), .time_msg = MSG_LOAD_TIME};
  guard_for_event(&load, cfg);
  load.mem_cap = 0; /* the state's own limit holds; the scripts' data stays */
  load.deadline = clock_mono() + load.time_left;
  st->guard = &load;
  lua_pushcfunction(st->L, build_cb);
  lua_pushlightuserdata(st->L, st);
  lua_pushlightuserdata(st->L, (void *)scripts);
  int rc = lua_pcall(st->L, 2, 0, 0);
  st->guard = NULL;
  st->limit_on = false;
  lua_sethook(st->L, NULL, 0, 0);
  if (rc != LUA_OK) {
    const char *msg = lua_tostring(st->L, -1);
    bool retryable;
    if (lapi_is_fail(st->L, -1, &retryable, &msg) || msg)
      snprintf(err, errlen, "%s", msg);
    else if (load.killed)
      snprintf(err, errlen, "%s", load.killed);
    else
      snprintf(err, errlen, "error while loading the scripts");
    state_free(st);
    return NULL;
  }
  version_of(scripts, st->version);
  lua_gc(st->L, LUA_GCCOLLECT, 0);
  return st;
}

/* ------------------------------------------------------------------------ */
/* Scheduling: everything that resumes a coroutine goes through the loop    */

static const struct timeval zero_tv = {0, 0};

static void kick(struct lrt *rt) {
  if (rt->draining)
    return;
  if (!evtimer_pending(rt->kick, NULL))
    evtimer_add(rt->kick, &zero_tv);
}

static void ready_push(struct lrt_ev *e, enum wake w) {
  struct lrt *rt = e->rt;
  e->wake = w;
  e->ready_next = NULL;
  if (rt->ready_tail)
    rt->ready_tail->ready_next = e;
  else
    rt->ready_head = e;
  rt->ready_tail = e;
  kick(rt);
}

static void ev_resume(struct lrt_ev *e, int nargs) {
  struct lrt_state *st = e->st;
  st->cur = e;
  st->guard = &e->guard;
  st->api.event_id = e->id;
  st->refused = false;
  st->limit_on = true;
  /* The time limit counts the event's code running on the loop, summed over
   * its resumes; waiting for an upstream answer is not part of it. */
  double t0 = clock_mono();
  e->guard.deadline = t0 + (e->guard.time_left > 1e-6 ? e->guard.time_left : 1e-6);
  int nres = 0;
  int rc = lua_resume(e->co, NULL, nargs, &nres);
  e->guard.time_left -= clock_mono() - t0;
  e->guard.deadline = 0;
  st->limit_on = false;
  st->cur = NULL;
  st->guard = NULL;
  st->api.event_id = NULL;
  if (rc == LUA_YIELD && e->park != PARK_NONE) {
    lua_pop(e->co, nres);
    return; /* parked on a call or a lock; the loop resumes it */
  }
  ev_finish(e, rc, nres);
}

/* Builds the answer table in the main thread under protection, then hands it
 * to the coroutine, so an allocation failure here never panics. */
static int push_result_cb(lua_State *L) {
  const struct saved_result *r = lua_touserdata(L, 1);
  lua_createtable(L, 0, 6);
  lua_pushboolean(L, r->ok);
  lua_setfield(L, -2, "ok");
  lua_pushinteger(L, r->status);
  lua_setfield(L, -2, "status");
  lua_pushlstring(L, r->body ? r->body : "", r->body ? r->body_len : 0);
  lua_setfield(L, -2, "body");
  if (r->error) {
    lua_pushstring(L, r->error);
    lua_setfield(L, -2, "error");
  }
  lua_pushboolean(L, r->retryable);
  lua_setfield(L, -2, "retryable");
  lua_pushinteger(L, r->attempts);
  lua_setfield(L, -2, "attempts");
  return 1;
}

static void deliver_result(struct lrt_ev *e, const struct saved_result *r) {
  lua_State *L = e->st->L;
  if (e->guard.killed || !r) {
    if (!e->guard.killed)
      e->guard.killed = MSG_MEMORY;
    ev_finish(e, LUA_OK, 0); /* the guard decides the outcome */
    return;
  }
  lua_pushcfunction(L, push_result_cb);
  lua_pushlightuserdata(L, (void *)r);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_checkstack(e->co, 2)) {
    lua_settop(L, 0);
    e->guard.killed = MSG_MEMORY;
    ev_finish(e, LUA_OK, 0);
    return;
  }
  lua_xmove(L, e->co, 1);
  ev_resume(e, 1);
}

static void saved_free(struct saved_result *s) {
  if (!s)
    return;
  free(s->body);
  free(s->error);
  free(s);
}

static void wake_waiters(struct lrt *rt);

static void on_kick(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct lrt *rt = arg;
  if (rt->locks_dirty) {
    rt->locks_dirty = false;
    wake_waiters(rt);
  }
  /* Only what is ready now; anything made ready meanwhile waits for the next
   * turn of the loop, so sockets are served in between. */
  struct lrt_ev *list = rt->ready_head;
  rt->ready_head = rt->ready_tail = NULL;
  while (list) {
    struct lrt_ev *e = list;
    list = e->ready_next;
    e->ready_next = NULL;
    switch (e->wake) {
    case WAKE_START:
      ev_resume(e, 1);
      break;
    case WAKE_LOCKED:
      if (e->guard.killed)
        ev_finish(e, LUA_OK, 0);
      else
        ev_resume(e, 0);
      break;
    case WAKE_RESULT: {
      struct saved_result *s = e->saved;
      e->saved = NULL;
      e->park = PARK_NONE;
      deliver_result(e, s);
      saved_free(s);
      break;
    }
    }
  }
}

/* ------------------------------------------------------------------------ */
/* ncghl.call                                                               */

static int parse_service(const char *name) {
  if (strcmp(name, "nowcerts") == 0)
    return UP_NOWCERTS;
  if (strcmp(name, "ghl") == 0)
    return UP_GHL;
  return -1;
}

static const char *service_name(enum up_service s) {
  return s == UP_GHL ? "ghl" : "nowcerts";
}

/* An attempt made while another process held the write lock (upkeep's
 * connection opening, a CLI command): kept until the lock is free, so the
 * event's story in /ui misses none of its calls. */
struct late_attempt {
  struct store *s;
  struct queue *q;
  char *id, *method, *url, *error, *request, *answer;
  size_t request_len, answer_len;
  enum up_service service;
  int run, status;
  double duration_ms, at;
};

static void late_attempt_free(struct late_attempt *l) {
  free(l->id);
  free(l->method);
  free(l->url);
  free(l->error);
  free(l->request);
  free(l->answer);
  free(l);
}

static char *dup_bytes(const char *p, size_t n) {
  char *d = malloc(n + 1);
  if (d) {
    if (n)
      memcpy(d, p, n);
    d[n] = 0;
  }
  return d;
}

static void write_late_attempt(void *ud, bool writable) {
  struct late_attempt *l = ud;
  if (writable && queue_join(l->q) != 0) {
    if (queue_busy(l->q)) {
      queue_when_writable(l->q, write_late_attempt, l);
      return;
    }
    writable = false;
  }
  if (!writable || store_attempt_add_io(l->s, l->id, l->run, service_name(l->service), l->method,
                                        l->url, l->status, l->error, l->duration_ms, l->at,
                                        l->request, l->request_len, l->answer,
                                        l->answer_len) != 0)
    log_warn("lua event=%s: could not record an upstream attempt", l->id);
  late_attempt_free(l);
}

static int defer_attempt(struct lrt_ev *e, const struct up_attempt *a) {
  struct late_attempt *l = calloc(1, sizeof *l);
  if (!l)
    return -1;
  l->s = e->rt->host.store;
  l->q = e->rt->host.queue;
  l->id = xstrdup(e->id);
  l->method = xstrdup(a->method);
  l->url = xstrdup(a->url);
  l->error = a->error ? xstrdup(a->error) : NULL;
  l->request = a->request ? dup_bytes(a->request, a->request_len) : NULL;
  l->request_len = a->request ? a->request_len : 0;
  l->answer = a->answer ? dup_bytes(a->answer, a->answer_len) : NULL;
  l->answer_len = a->answer ? a->answer_len : 0;
  l->service = a->service;
  l->run = e->run;
  l->status = a->status;
  l->duration_ms = a->duration_ms;
  l->at = clock_wall();
  if (!l->id || !l->method || !l->url || (a->error && !l->error) || (a->request && !l->request) ||
      (a->answer && !l->answer)) {
    late_attempt_free(l);
    return -1;
  }
  queue_when_writable(l->q, write_late_attempt, l);
  return 0;
}

static void on_attempt(void *ud, const struct up_attempt *a) {
  struct lrt_ev *e = ud;
  struct store *s = e->rt->host.store;
  if (!s)
    return;
  struct queue *q = e->rt->host.queue;
  if (q && queue_join(q) != 0) {
    if (!queue_busy(q) || defer_attempt(e, a) != 0)
      log_warn("lua event=%s: could not record an upstream attempt", e->id);
    return;
  }
  if (store_attempt_add_io(s, e->id, e->run, service_name(a->service), a->method, a->url,
                           a->status, a->error, a->duration_ms, clock_wall(), a->request,
                           a->request_len, a->answer, a->answer_len) != 0)
    log_warn("lua event=%s: could not record an upstream attempt", e->id);
}

static struct saved_result *save_result(const struct up_result *r) {
  struct saved_result *s = calloc(1, sizeof(*s));
  if (!s)
    return NULL;
  s->ok = r->ok;
  s->retryable = r->retryable;
  s->status = r->status;
  s->attempts = r->attempts;
  s->body_len = r->body ? r->body_len : 0;
  s->body = malloc(s->body_len + 1);
  if (!s->body || (r->error && !(s->error = xstrdup(r->error)))) {
    saved_free(s);
    return NULL;
  }
  if (s->body_len)
    memcpy(s->body, r->body, s->body_len);
  s->body[s->body_len] = '\0';
  return s;
}

static void on_call_done(void *ud, const struct up_result *r) {
  struct lrt_ev *e = ud;
  if (r->held)
    e->ghl_holds++;
  free(e->call_buf);
  e->call_buf = NULL;
  if (e->park != PARK_CALL) {
    log_error("lua event=%s: an upstream answer came for an event not waiting for one", e->id);
    return;
  }
  if (e->in_start) {
    /* Answered from inside start(): the coroutine has not yielded yet. It
     * stays parked (so ev_resume keeps it when it yields) and the answer is
     * delivered through the loop. */
    e->saved = save_result(r);
    if (!e->saved)
      e->guard.killed = MSG_MEMORY;
    ready_push(e, WAKE_RESULT);
    return;
  }
  e->park = PARK_NONE;
  struct saved_result view = {
    .ok = r->ok,
    .retryable = r->retryable,
    .status = r->status,
    .attempts = r->attempts,
    .body = (char *)(r->body ? r->body : ""),
    .body_len = r->body ? r->body_len : 0,
    .error = (char *)r->error,
  };
  deliver_result(e, &view);
}

/* The event that may yield from here: the one running, on its own coroutine
 * (not one a script made), and not below a C boundary such as a metamethod
 * or a sort comparator. Checked before anything starts, so an upstream call
 * is never left running for a coroutine that cannot wait for it. */
static struct lrt_ev *yielding_event(lua_State *L, const char *what) {
  struct lrt_ev *e = state_of(L)->cur;
  if (!e)
    luaL_error(L, "%s is only available while an event runs", what);
  else if (L != e->co)
    luaL_error(L, "%s cannot be used inside a coroutine made by a script", what);
  else if (!lua_isyieldable(L))
    luaL_error(L, "%s cannot be used inside a metamethod, iterator or C callback", what);
  return e;
}

/* ncghl.call(service, method, path [, body [, content_type | opts]]) -> {ok, status,
 * body, error, retryable, attempts}. Yields until the upstream (after its own
 * retries and token handling) has answered. */
static int api_call(lua_State *L) {
  struct lrt_ev *e = yielding_event(L, "ncghl.call");
  int service = parse_service(luaL_checkstring(L, 1));
  if (service < 0)
    return luaL_argerror(L, 1, "expected \"ghl\" or \"nowcerts\"");
  const char *method = luaL_checkstring(L, 2);
  if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0 && strcmp(method, "PUT") != 0 &&
      strcmp(method, "DELETE") != 0 && strcmp(method, "PATCH") != 0)
    return luaL_argerror(L, 2, "expected GET, POST, PUT, PATCH or DELETE");
  const char *path = luaL_checkstring(L, 3);
  if (path[0] != '/')
    return luaL_argerror(L, 3, "the path must start with '/'");
  size_t body_len = 0;
  const char *body = luaL_optlstring(L, 4, NULL, &body_len);
  /* The 5th argument is the content type, or a table of options:
   * {content_type = "...", once = true} (once: a create, see up_call). */
  const char *ctype = NULL;
  bool once = false, then_write = false;
  if (lua_istable(L, 5)) {
    lua_getfield(L, 5, "content_type");
    ctype = lua_isstring(L, -1) ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1); /* the string stays reachable from the table */
    lua_getfield(L, 5, "once");
    once = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, 5, "then_write");
    then_write = lua_toboolean(L, -1);
    lua_pop(L, 1);
  } else {
    ctype = luaL_optstring(L, 5, NULL);
  }

  size_t ml = strlen(method) + 1, pl = strlen(path) + 1, cl = ctype ? strlen(ctype) + 1 : 0;
  char *buf = malloc(ml + pl + cl + body_len + 1);
  if (!buf)
    return luaL_error(L, "%s", MSG_MEMORY);
  struct up_call call = {.service = (enum up_service)service, .once = once,
                         .then_write = then_write};
  /* A write of this event after a then_write read: on the room it holds. */
  if (service == UP_GHL && strcmp(method, "GET") != 0 && e->ghl_holds > 0) {
    call.use_held = true;
    e->ghl_holds--;
  }
  char *p = buf;
  memcpy(p, method, ml);
  call.method = p;
  p += ml;
  memcpy(p, path, pl);
  call.path = p;
  p += pl;
  if (ctype) {
    memcpy(p, ctype, cl);
    call.content_type = p;
    p += cl;
  }
  if (body) {
    memcpy(p, body, body_len);
    p[body_len] = '\0';
    call.body = p;
    call.body_len = body_len;
  }

  const struct lrt_host *h = &e->rt->host;
  e->call_buf = buf;
  e->park = PARK_CALL;
  e->in_start = true;
  int rc = h->start ? h->start(h->start_ud, &call, on_attempt, on_call_done, e)
                    : (h->up ? up_start(h->up, &call, on_attempt, on_call_done, e) : -1);
  e->in_start = false;
  if (rc != 0) {
    e->park = PARK_NONE;
    free(e->call_buf);
    e->call_buf = NULL;
    return luaL_error(L, "ncghl.call: could not start %s %s", method, path);
  }
  return lua_yield(L, 0);
}

/* ------------------------------------------------------------------------ */
/* ncghl.wait_writable                                                      */

static void on_writable(void *ud, bool ok) {
  struct lrt_ev *e = ud;
  (void)ok; /* the write is tried again either way; a failed queue fails it */
  e->park = PARK_NONE;
  ready_push(e, WAKE_LOCKED);
}

/* ncghl.wait_writable(): returns once the store's batch is open again after
 * another process held the write lock (at once when there is no queue). A
 * store write the rest of the run reads back (a sync snapshot) waits here
 * rather than fail the event or land later out of order; the loop goes on
 * meanwhile. */
static int api_wait_writable(lua_State *L) {
  struct lrt_ev *e = yielding_event(L, "ncghl.wait_writable");
  struct queue *q = e->rt->host.queue;
  if (!q || !queue_busy(q))
    return 0;
  e->park = PARK_WRITE;
  queue_when_writable(q, on_writable, e);
  return lua_yield(L, 0);
}

/* ------------------------------------------------------------------------ */
/* ncghl.lock                                                               */

static struct lock *lock_find(struct lrt *rt, const char *key) {
  struct hash_node *n = hash_find(&rt->locks, key);
  return n ? HASH_ENTRY(n, struct lock, node) : NULL;
}

static bool can_acquire(struct lrt *rt, struct lrt_ev *e) {
  for (int i = 0; i < e->nwant; i++) {
    struct lock *l = lock_find(rt, e->want[i]->key);
    if (l && l->owner != e)
      return false;
  }
  return true;
}

/* Moves every wanted lock into the table, all at once. Never allocates: the
 * nodes and the room in `held` were made when ncghl.lock was called. */
static void acquire_all(struct lrt *rt, struct lrt_ev *e) {
  for (int i = 0; i < e->nwant; i++) {
    struct lock *l = e->want[i];
    l->owner = e;
    l->node.key = l->key;
    hash_insert(&rt->locks, &l->node);
    e->held[e->nheld++] = l;
  }
  free(e->want);
  e->want = NULL;
  e->nwant = 0;
}

static void want_free(struct lrt_ev *e) {
  for (int i = 0; i < e->nwant; i++) {
    free(e->want[i]->key);
    free(e->want[i]);
  }
  free(e->want);
  e->want = NULL;
  e->nwant = 0;
}

static void waiter_unlink(struct lrt *rt, struct lrt_ev *e) {
  if (!e->waiting)
    return;
  if (e->wait_prev)
    e->wait_prev->wait_next = e->wait_next;
  else
    rt->wait_head = e->wait_next;
  if (e->wait_next)
    e->wait_next->wait_prev = e->wait_prev;
  else
    rt->wait_tail = e->wait_prev;
  e->wait_prev = e->wait_next = NULL;
  e->waiting = false;
}

static void wake_waiters(struct lrt *rt) {
  struct lrt_ev *e = rt->wait_head;
  while (e) {
    struct lrt_ev *next = e->wait_next;
    if (can_acquire(rt, e)) {
      waiter_unlink(rt, e);
      acquire_all(rt, e);
      e->park = PARK_NONE;
      ready_push(e, WAKE_LOCKED);
    }
    e = next;
  }
}

static void release_locks(struct lrt_ev *e) {
  struct lrt *rt = e->rt;
  /* Keys held across the nodes too (a shared store only) go back there. */
  int nn = 0;
  for (int i = 0; i < e->nheld; i++)
    nn += e->held[i]->node_held;
  const char **node_keys = nn ? malloc((size_t)nn * sizeof(*node_keys)) : NULL;
  if (node_keys && rt->host.store) {
    nn = 0;
    for (int i = 0; i < e->nheld; i++)
      if (e->held[i]->node_held)
        node_keys[nn++] = e->held[i]->key;
    store_keys_unlock(rt->host.store, node_keys, nn);
  }
  free(node_keys);
  for (int i = 0; i < e->nheld; i++) {
    struct lock *l = e->held[i];
    hash_remove(&rt->locks, &l->node);
    free(l->key);
    free(l);
  }
  free(e->held);
  e->held = NULL;
  e->nheld = e->capheld = 0;
  if (rt->wait_head) {
    rt->locks_dirty = true;
    kick(rt);
  }
}

/* Whether `from`, which waits, waits (through the owners of what it wants)
 * for `target`. Each event is visited once per search. */
static bool waits_for(struct lrt *rt, struct lrt_ev *from, struct lrt_ev *target) {
  if (from->visit == rt->visit_gen)
    return false;
  from->visit = rt->visit_gen;
  for (int i = 0; i < from->nwant; i++) {
    struct lock *l = lock_find(rt, from->want[i]->key);
    if (!l || l->owner == from)
      continue;
    if (l->owner == target)
      return true;
    if (l->owner->waiting && waits_for(rt, l->owner, target))
      return true;
  }
  return false;
}

static int cmp_keys(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* How long an event waits for keys another node holds before it gives up
 * this run (retried later): two events on two nodes that each hold what the
 * other wants next would otherwise wait for ever. */
#define NODE_LOCK_WAIT 10.0

static int node_step(lua_State *L, struct lrt_ev *e, int first);

static int lock_cont(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  return node_step(L, state_of(L)->cur, (int)ctx);
}

static void on_node_retry(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct lrt_ev *e = arg;
  e->park = PARK_NONE;
  ready_push(e, WAKE_LOCKED);
}

/* The keys this call took in the process (held[first..]) taken across the
 * nodes of a shared store too: two nodes never sync one person at once. */
static int node_step(lua_State *L, struct lrt_ev *e, int first) {
  struct store *store = e->rt->host.store;
  int n = e->nheld - first;
  if (!store || n <= 0 || !store_is_shared(store))
    return 0;
  const char **keys = malloc((size_t)n * sizeof(*keys));
  if (!keys)
    return luaL_error(L, "%s", MSG_MEMORY);
  for (int i = 0; i < n; i++)
    keys[i] = e->held[first + i]->key;
  int got = store_keys_lock(store, keys, n);
  free(keys);
  if (got == 1) {
    for (int i = first; i < e->nheld; i++)
      e->held[i]->node_held = true;
    e->node_since = 0;
    return 0;
  }
  double now = clock_mono();
  if (got < 0) {
    lapi_push_fail(L, true, "store: cannot take this event's keys across the nodes");
    return lua_error(L);
  }
  if (e->node_since == 0)
    e->node_since = now;
  else if (now - e->node_since > NODE_LOCK_WAIT) {
    e->node_since = 0;
    lapi_push_fail(L, true, "another node held this event's keys (the same person or policy) "
                            "for 10 s; the event is tried again later");
    return lua_error(L);
  }
  if (!e->node_retry)
    e->node_retry = evtimer_new(e->rt->host.base, on_node_retry, e);
  if (!e->node_retry)
    return luaL_error(L, "%s", MSG_MEMORY);
  /* 20-40 ms, spread so that two nodes do not retry in step. */
  struct timeval tv = {0, 20000 + (long)((unsigned long long)(now * 1e6) % 20000)};
  evtimer_add(e->node_retry, &tv);
  e->park = PARK_NODE;
  return lua_yieldk(L, 0, (lua_KContext)first, lock_cont);
}

/* ncghl.lock(key, ...): returns once the event holds every given key (nil
 * and "" are skipped). Keys are taken all at once, so two events that want
 * overlapping sets never each hold half; a key the event holds already is
 * not taken twice. Everything is released when the event ends. */
static int api_lock(lua_State *L) {
  struct lrt_ev *e = yielding_event(L, "ncghl.lock");
  struct lrt *rt = e->rt;
  int n = lua_gettop(L);
  for (int i = 1; i <= n; i++)
    if (!lua_isnil(L, i) && !lua_isstring(L, i))
      return luaL_argerror(L, i, "lock keys must be strings");

  char **keys = calloc((size_t)n + 1, sizeof(*keys));
  int nk = 0;
  bool oom = !keys;
  for (int i = 1; !oom && i <= n; i++) {
    if (lua_isnil(L, i) || lua_rawlen(L, i) == 0)
      continue;
    size_t len;
    const char *k = lua_tolstring(L, i, &len);
    if (strlen(k) != len) /* a NUL inside: keys are C strings */
      continue;
    struct lock *mine = lock_find(rt, k);
    if (mine && mine->owner == e)
      continue;
    if (!(keys[nk] = xstrdup(k)))
      oom = true;
    else
      nk++;
  }
  if (!oom && nk > 1) {
    qsort(keys, (size_t)nk, sizeof(*keys), cmp_keys);
    int w = 1;
    for (int i = 1; i < nk; i++) {
      if (strcmp(keys[i], keys[w - 1]) == 0)
        free(keys[i]);
      else
        keys[w++] = keys[i];
    }
    nk = w;
  }
  /* Room for the nodes and in `held`, made now so that acquiring later,
   * from the loop, cannot fail. */
  struct lock **want = NULL;
  if (!oom && nk > 0) {
    want = calloc((size_t)nk, sizeof(*want));
    if (!want)
      oom = true;
    for (int i = 0; !oom && i < nk; i++) {
      if (!(want[i] = calloc(1, sizeof(**want)))) {
        oom = true;
        break;
      }
      want[i]->key = keys[i];
      keys[i] = NULL;
    }
    if (!oom && e->nheld + nk > e->capheld) {
      int ncap = e->nheld + nk + 4;
      struct lock **nh = realloc(e->held, (size_t)ncap * sizeof(*nh));
      if (!nh)
        oom = true;
      else {
        e->held = nh;
        e->capheld = ncap;
      }
    }
  }
  if (oom) {
    for (int i = 0; keys && i < nk; i++)
      free(keys[i]);
    for (int i = 0; want && i < nk; i++) {
      if (want[i]) {
        free(want[i]->key);
        free(want[i]);
      }
    }
    free(want);
    free(keys);
    return luaL_error(L, "%s", MSG_MEMORY);
  }
  free(keys);
  if (nk == 0)
    return 0;
  e->want = want;
  e->nwant = nk;
  int first = e->nheld;
  if (can_acquire(rt, e)) {
    acquire_all(rt, e);
    return node_step(L, e, first);
  }
  rt->visit_gen++;
  if (waits_for(rt, e, e)) {
    want_free(e);
    lapi_push_fail(L, true, "lock deadlock: events wait for each other's keys (lock all keys in one call)");
    return lua_error(L);
  }
  e->waiting = true;
  e->wait_prev = rt->wait_tail;
  if (rt->wait_tail)
    rt->wait_tail->wait_next = e;
  else
    rt->wait_head = e;
  rt->wait_tail = e;
  e->park = PARK_LOCK;
  return lua_yieldk(L, 0, (lua_KContext)first, lock_cont);
}

/* ------------------------------------------------------------------------ */
/* Events                                                                   */

static void rt_destroy(struct lrt *rt) {
  if (rt->cur)
    state_unref(rt->cur);
  if (rt->kick)
    event_free(rt->kick);
  if (rt->idle_ev)
    event_free(rt->idle_ev);
  scripts_free(&rt->scripts);
  free(rt);
}

/* ------------------------------------------------------------------------ */
/* Idle release: a state only while it is needed                            */

/* Builds the current state again after an idle release, from the kept
 * bytes of the current version. 0, or -1 (logged) when it cannot. */
static int ensure_state(struct lrt *rt) {
  if (rt->cur)
    return 0;
  char err[512];
  double t0 = clock_mono();
  struct lrt_state *st = state_build(rt, &rt->scripts, err, sizeof err);
  if (!st) {
    log_error("lua: cannot build the state of version %s again: %s", rt->version, err);
    return -1;
  }
  st->refs = 1;
  rt->cur = st;
  rt->builds++;
  log_debug("lua: state of version %s built again after an idle release in %.1f ms (%zu KiB)",
            st->version, (clock_mono() - t0) * 1e3, st->used >> 10);
  return 0;
}

/* (Re)starts the idle countdown; the timer checks again when it fires. */
static void arm_idle(struct lrt *rt) {
  if (rt->idle_ev && rt->cur && !rt->freeing) {
    struct timeval tv = {(time_t)rt->idle_after,
                         (suseconds_t)((rt->idle_after - (double)(time_t)rt->idle_after) * 1e6)};
    evtimer_add(rt->idle_ev, &tv);
  }
}

/* Drops the current state when nothing uses it: no event runs (every event
 * holds a reference on the state it started on, so refs is then 1). */
static bool release_if_idle(struct lrt *rt) {
  if (!rt->cur || rt->running > 0 || rt->cur->refs != 1 || rt->freeing)
    return false;
  log_debug("lua: idle, releasing the state of version %s (%zu KiB)", rt->cur->version,
            rt->cur->used >> 10);
  state_unref(rt->cur);
  rt->cur = NULL;
  return true;
}

static void on_idle(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  release_if_idle(arg);
}

static const char *type_name_of(lua_State *co, int idx) {
  return lua_typename(co, lua_type(co, idx));
}

/* A script's error() with something other than text (a table, say): what
 * the agency reads is its `message` field when it has one, and where it was
 * raised, from the coroutine's stack (kept after the error), since Lua adds
 * the position only to text. */
static char *describe_error_object(lua_State *co) {
  char where[160] = "";
  lua_Debug ar;
  for (int level = 0; lua_getstack(co, level, &ar); level++) {
    if (lua_getinfo(co, "Sl", &ar) && ar.currentline > 0 && ar.source[0] == '@') {
      snprintf(where, sizeof where, " (raised at %s:%d)", ar.source + 1, ar.currentline);
      break;
    }
  }
  const char *msg = NULL;
  if (lua_type(co, -1) == LUA_TTABLE && lua_checkstack(co, 2)) {
    lua_getfield(co, -1, "message");
    msg = lua_type(co, -1) == LUA_TSTRING ? lua_tostring(co, -1) : NULL;
    if (msg)
      lua_pushfstring(co, "%s%s", msg, where);
    else
      lua_pushfstring(co, "(error object is a table value)%s", where);
  } else {
    lua_pushfstring(co, "(error object is a %s value)%s", type_name_of(co, -1), where);
  }
  return xstrdup(lua_tostring(co, -1));
}

static void ev_free(struct lrt_ev *e) {
  if (e->node_retry)
    event_free(e->node_retry);
  want_free(e);
  free(e->held);
  saved_free(e->saved);
  free(e->call_buf);
  free(e->id);
  free(e);
}

/* Turns the coroutine's end into an outcome, releases everything the event
 * held, and only then tells the caller (who may start more events, reload,
 * or free the runtime from the callback). */
static void ev_finish(struct lrt_ev *e, int rc, int nres) {
  struct lrt *rt = e->rt;
  struct lrt_state *st = e->st;
  lua_State *co = e->co;
  struct lrt_result r = {.outcome = LRT_FAILED};
  char *message = NULL, *data = NULL, *error = NULL;
  /* A coroutine that died of an error has no free stack slots left; looking
   * at its error object (metatables, tracebacks) needs a few. */
  bool room = lua_checkstack(co, 8);

  /* lauxlib's buffers report a refused allocation as an ordinary error with
   * this message; the guard knows why it was refused. */
  bool buffer_oom = rc != LUA_OK && rc != LUA_YIELD && e->guard.refused && room &&
                    lua_type(co, -1) == LUA_TSTRING &&
                    strstr(lua_tostring(co, -1), MSG_MEMORY) != NULL;
  if (e->guard.killed || rc == LUA_ERRMEM || buffer_oom) {
    /* An allocation Lua could not retry (one made during a collection step)
     * raises LUA_ERRMEM after a single refusal: its reason still counts. */
    const char *why = e->guard.killed    ? e->guard.killed
                      : e->guard.refused ? e->guard.refused
                                         : MSG_MEMORY;
    const char *top = rc != LUA_OK && rc != LUA_YIELD && lua_type(co, -1) == LUA_TSTRING
                          ? lua_tostring(co, -1)
                          : NULL;
    /* The hook's own error says where the script was stopped; keep that. */
    size_t tl = top ? strlen(top) : 0, wl = strlen(why);
    error = xstrdup(tl >= wl && strcmp(top + tl - wl, why) == 0 ? top : why);
    /* Short of memory because of the others: not this event's fault. */
    if (why == MSG_PRESSURE)
      r.outcome = LRT_RETRY;
    if (!rt->quiet)
      log_warn("lua event=%s %s: %s", e->id, why == MSG_PRESSURE ? "will retry" : "failed",
               error ? error : MSG_MEMORY);
  } else if (rc == LUA_OK) {
    int base = lua_gettop(co) - nres;
    const char *kind = nres >= 1 ? lua_tostring(co, base + 1) : NULL;
    const char *d = nres >= 2 ? lua_tostring(co, base + 2) : NULL;
    const char *m = nres >= 3 ? lua_tostring(co, base + 3) : NULL;
    if (kind && strcmp(kind, "done") == 0) {
      r.outcome = LRT_DONE;
      data = xstrdup(d ? d : "{}");
      message = xstrdup(m ? m : "Event processed");
    } else if (kind && strcmp(kind, "ignored") == 0) {
      r.outcome = LRT_IGNORED;
      message = xstrdup(m ? m : "No route for this event");
    } else {
      error = xstrdup("ncghl.engine: run(ev) returned no outcome");
    }
  } else if (rc == LUA_YIELD) {
    error = xstrdup("a script yielded outside ncghl.call and ncghl.lock");
  } else if (!room) {
    error = xstrdup("script error (no stack left to describe it)");
  } else {
    bool retryable = false;
    const char *msg = NULL;
    if (lapi_is_fail(co, -1, &retryable, &msg)) {
      r.outcome = retryable ? LRT_RETRY : LRT_FAILED;
      r.retry_in = retryable ? lapi_fail_retry_in(co, -1) : 0;
      error = xstrdup(msg);
      if (!rt->quiet)
        log_info("lua event=%s %s: %s", e->id, retryable ? "will retry" : "failed", msg);
    } else {
      if (lua_type(co, -1) == LUA_TSTRING)
        error = xstrdup(lua_tostring(co, -1));
      else
        error = describe_error_object(co);
      if (!rt->quiet)
        log_warn("lua event=%s script error: %s", e->id, error ? error : "?");
      if (!rt->quiet && log_enabled(LOGL_DEBUG)) {
        luaL_traceback(st->L, co, NULL, 0);
        log_debug("lua event=%s %s", e->id, lua_tostring(st->L, -1));
        lua_pop(st->L, 1);
      }
    }
  }
  if (r.outcome == LRT_RETRY || r.outcome == LRT_FAILED) {
    if (!error)
      error = xstrdup(MSG_MEMORY);
    /* The error is stored with the event and shown by `ncghl events`, the
     * admin API and /ui; it often quotes a request path or an upstream
     * answer that carries the person's e-mail or phone. */
    if (error && !rt->host.cfg->log_pii) {
      char *masked = pii_mask_dup(error);
      if (masked) {
        free(error);
        error = masked;
      }
    }
    message = xstrdup(error);
  }
  r.message = message ? message : "Event processed";
  r.data = data ? data : "{}";
  r.error = (r.outcome == LRT_RETRY || r.outcome == LRT_FAILED) ? (error ? error : MSG_MEMORY)
                                                                : NULL;

  bool out_of_memory = e->guard.killed == MSG_MEMORY || e->guard.killed == MSG_EVENT_MEMORY ||
                       e->guard.killed == MSG_PRESSURE || rc == LUA_ERRMEM;
  release_locks(e);
  waiter_unlink(rt, e);
  /* Closing runs any pending __close handlers: script code, so it counts
   * against the event's guard like the rest. */
  st->guard = &e->guard;
  st->limit_on = true;
  lua_resetthread(co);
  st->limit_on = false;
  st->guard = NULL;
  luaL_unref(st->L, LUA_REGISTRYINDEX, e->co_ref);
  if (out_of_memory)
    lua_gc(st->L, LUA_GCCOLLECT, 0);
  lrt_done_cb done = e->done;
  void *ud = e->ud;
  ev_free(e);
  rt->running--;
  state_unref(st);
  bool destroy = rt->freeing && rt->running == 0;
  if (rt->running == 0)
    arm_idle(rt);

  done(ud, &r);
  free(message);
  free(data);
  free(error);
  if (destroy)
    rt_destroy(rt);
}

/* Runs in protected mode on the main thread: makes the coroutine, anchors it
 * in the registry and puts engine.run and the event table on its stack. */
static int setup_cb(lua_State *L) {
  struct lrt_ev *e = lua_touserdata(L, 1);
  const struct lrt_event *ev = lua_touserdata(L, 2);
  lua_State *co = lua_newthread(L);
  e->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  e->co = co;
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->st->entry_ref);
  lua_createtable(L, 0, 5);
  lua_pushstring(L, e->id);
  lua_setfield(L, -2, "id");
  lua_pushstring(L, e->source);
  lua_setfield(L, -2, "source");
  lua_pushstring(L, e->type);
  lua_setfield(L, -2, "type");
  lua_pushinteger(L, e->run);
  lua_setfield(L, -2, "run");
  lua_pushlstring(L, ev->payload ? ev->payload : "", ev->payload ? ev->payload_len : 0);
  lua_setfield(L, -2, "raw");
  if (ev->last_error) {
    lua_pushstring(L, ev->last_error);
    lua_setfield(L, -2, "last_error");
  }
  lua_xmove(L, co, 2);
  return 0;
}

int lrt_run(struct lrt *rt, const struct lrt_event *ev, lrt_done_cb done, void *ud) {
  if (!rt || !ev || !done || rt->freeing || ensure_state(rt) != 0)
    return -1;
  struct lrt_state *st = rt->cur;
  const char *id = ev->id ? ev->id : "";
  const char *source = ev->source ? ev->source : "";
  const char *type = ev->type ? ev->type : "";
  size_t il = strlen(id) + 1, sl = strlen(source) + 1, tl = strlen(type) + 1;
  struct lrt_ev *e = calloc(1, sizeof(*e));
  char *strs = malloc(il + sl + tl);
  if (!e || !strs) {
    free(e);
    free(strs);
    return -1;
  }
  memcpy(strs, id, il);
  memcpy(strs + il, source, sl);
  memcpy(strs + il + sl, type, tl);
  e->id = strs;
  e->source = strs + il;
  e->type = strs + il + sl;
  e->rt = rt;
  e->st = st;
  e->run = ev->run > 0 ? ev->run : 1;
  e->done = done;
  e->ud = ud;
  e->co_ref = LUA_NOREF;
  guard_for_event(&e->guard, rt->host.cfg);

  lua_State *L = st->L;
  lua_pushcfunction(L, setup_cb);
  lua_pushlightuserdata(L, e);
  lua_pushlightuserdata(L, (void *)ev);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    log_error("lua event=%s: cannot start: %s", id, lua_tostring(L, -1));
    lua_settop(L, 0);
    if (e->co_ref != LUA_NOREF)
      luaL_unref(L, LUA_REGISTRYINDEX, e->co_ref);
    ev_free(e);
    return -1;
  }
  lua_sethook(e->co, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
  st->refs++;
  rt->running++;
  /* Started from the loop, so done is never called from inside lrt_run. */
  ready_push(e, WAKE_START);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* The runtime                                                              */

static void set_last(struct lrt *rt, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_last(struct lrt *rt, bool ok, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(rt->last_msg, sizeof(rt->last_msg), fmt, ap);
  va_end(ap);
  rt->last_ok = ok;
  rt->last_at = clock_wall();
}

/* A runtime around a state built from scripts already read. */
static struct lrt *rt_create(const struct lrt_host *host, const struct script_list *scripts,
                             char *err, size_t errlen) {
  struct lrt *rt = calloc(1, sizeof(*rt));
  if (!rt) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  hash_init(&rt->locks, rt->buckets, LOCK_BUCKETS);
  rt->host = *host;
  rt->kick = evtimer_new(host->base, on_kick, rt);
  if (!rt->kick) {
    snprintf(err, errlen, "cannot create a timer");
    free(rt);
    return NULL;
  }
  if (scripts_copy(&rt->scripts, scripts) != 0) {
    snprintf(err, errlen, "out of memory");
    event_free(rt->kick);
    free(rt);
    return NULL;
  }
  rt->cur = state_build(rt, scripts, err, errlen);
  if (!rt->cur) {
    scripts_free(&rt->scripts);
    event_free(rt->kick);
    free(rt);
    return NULL;
  }
  rt->cur->refs = 1;
  memcpy(rt->version, rt->cur->version, sizeof rt->version);
  set_last(rt, true, "loaded at start, version %s", rt->cur->version);
  return rt;
}

struct lrt *lrt_new(const struct lrt_host *host, char *err, size_t errlen) {
  if (!host || !host->base || !host->cfg) {
    snprintf(err, errlen, "lrt_new: a host with an event base and a configuration is required");
    return NULL;
  }
  struct script_list scripts = {.pool = host->texts};
  if (scripts_read(host->cfg, &scripts, err, errlen) != 0)
    return NULL;
  struct lrt *rt = rt_create(host, &scripts, err, errlen);
  scripts_free(&scripts);
  if (rt)
    log_debug("lua: scripts loaded, version %s", rt->cur->version);
  return rt;
}

void lrt_free(struct lrt *rt) {
  if (!rt)
    return;
  if (rt->running > 0) {
    /* Should not happen (the contract says events have finished); if it
     * does, the last one to end frees the runtime instead of crashing. */
    log_warn("lua: runtime freed with %d events still running", rt->running);
    rt->freeing = true;
    return;
  }
  rt_destroy(rt);
}

void lrt_set_check(struct lrt *rt, lrt_check_fn check) {
  if (rt)
    rt->check = check;
}

/* The runner's twin: a runtime on the offline host, from the same bytes. */
static struct lrt *build_twin(void *ud, const struct lrt_host *host, char *err, size_t errlen) {
  return rt_create(host, ud, err, errlen);
}

int lrt_check_loaded(struct lrt *rt, char *err, size_t errlen) {
  if (!rt || !rt->check || !rt->cur)
    return 0;
  int ncases = 0;
  double t0 = clock_mono() * 1e3;
  if (rt->check(rt->host.cfg, rt->host.base, build_twin, &rt->scripts, &ncases, err, errlen) != 0) {
    set_last(rt, false, "loaded at start, version %s, but a test case fails: %s", rt->version,
             err);
    return -1;
  }
  set_last(rt, true, "loaded at start, version %s, %d test case%s passed, %.1f ms", rt->version,
           ncases, ncases == 1 ? "" : "s", clock_mono() * 1e3 - t0);
  return 0;
}

/* The scripts are read once. From those bytes two states are built: the one
 * that may become current, on the service's host, and a twin on the offline
 * runner's host (fixtures, links in memory) that runs every test case under
 * MAPPINGS_DIR/tests and is then thrown away. The cases therefore test
 * exactly the code that is swapped in, and nothing a case did (fixture ids a
 * module cached, links, fingerprints) can reach the live state. */
int lrt_reload(struct lrt *rt, char *err, size_t errlen) {
  if (!rt || rt->freeing) {
    snprintf(err, errlen, "no runtime");
    return -1;
  }
  double t0 = clock_mono() * 1e3;
  struct script_list scripts = {.pool = rt->host.texts};
  struct lrt_state *st = NULL;
  int ncases = 0;
  int rc = scripts_read(rt->host.cfg, &scripts, err, errlen);
  if (rc == 0 && !(st = state_build(rt, &scripts, err, errlen)))
    rc = -1;
  double t1 = clock_mono() * 1e3;
  if (rc == 0 && rt->check)
    rc = rt->check(rt->host.cfg, rt->host.base, build_twin, &scripts, &ncases, err, errlen);
  double t2 = clock_mono() * 1e3;
  if (rc != 0) {
    scripts_free(&scripts);
    if (st)
      state_free(st); /* the caller reports err; the old state stays current */
    set_last(rt, false, "%s", err);
    return -1;
  }
  /* The new bytes are kept for a build after an idle release; the state
   * holds its own references, so swapping lists frees nothing it uses. */
  scripts_free(&rt->scripts);
  rt->scripts = scripts;
  st->refs = 1;
  struct lrt_state *old = rt->cur;
  rt->cur = st;
  memcpy(rt->version, st->version, sizeof rt->version);
  set_last(rt, true, "version %s, %d test case%s passed, %.1f ms", st->version, ncases,
           ncases == 1 ? "" : "s", t2 - t0);
  log_debug("lua: scripts reloaded, version %s (was %s, %d events still on it); load %.1f ms, "
            "%d test cases %.1f ms",
            st->version, old ? old->version : "released", old ? old->refs - 1 : 0, t1 - t0,
            ncases, t2 - t1);
  if (old)
    state_unref(old);
  arm_idle(rt);
  return 0;
}

const char *lrt_last_reload(const struct lrt *rt, bool *ok, double *when) {
  if (!rt) {
    if (ok)
      *ok = false;
    if (when)
      *when = 0;
    return "no runtime";
  }
  if (ok)
    *ok = rt->last_ok;
  if (when)
    *when = rt->last_at;
  return rt->last_msg;
}

int lrt_drain(struct lrt *rt) {
  if (!rt)
    return 0;
  bool was = rt->draining;
  rt->draining = true;
  while (rt->ready_head || rt->locks_dirty)
    on_kick(-1, 0, rt);
  rt->draining = was;
  if (!was && rt->kick && evtimer_pending(rt->kick, NULL))
    evtimer_del(rt->kick);
  return rt->running;
}

int lrt_pcall(struct lrt *rt, int nargs, int nresults) {
  /* The caller pushed its function on lrt_lua_state's state, which is
   * current until the loop runs again: no idle release in between. */
  struct lrt_state *st = rt->cur;
  lua_State *L = st->L;
  /* Also called from inside an event (the runner answers ncghl.call): the
   * event's own guard, cap and hook are put back afterwards, and what runs
   * here does not count against that event's budget. */
  struct guard g;
  memset(&g, 0, sizeof g);
  guard_for_event(&g, rt->host.cfg);
  g.deadline = clock_mono() + g.time_left;
  struct guard *saved_guard = st->guard;
  bool saved_limit = st->limit_on, saved_refused = st->refused;
  lua_Hook saved_hook = lua_gethook(L);
  int saved_mask = lua_gethookmask(L), saved_count = lua_gethookcount(L);
  st->guard = &g;
  st->limit_on = true;
  st->refused = false;
  lua_sethook(L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
  int rc = lua_pcall(L, nargs, nresults, 0);
  lua_sethook(L, saved_hook, saved_mask, saved_count);
  st->guard = saved_guard;
  st->limit_on = saved_limit;
  st->refused = saved_refused;
  if (rc != LUA_OK && g.killed && !lua_isstring(L, -1)) {
    lua_pop(L, 1);
    lua_pushstring(L, g.killed);
  }
  return rc;
}

void lrt_set_quiet(struct lrt *rt, bool quiet) {
  if (rt)
    rt->quiet = quiet;
}

struct lua_State *lrt_lua_state(struct lrt *rt) {
  if (!rt || rt->freeing || ensure_state(rt) != 0)
    return NULL;
  if (rt->running == 0)
    arm_idle(rt);
  return rt->cur->L;
}

const char *lrt_version(const struct lrt *rt) {
  return rt ? rt->version : "";
}

int lrt_set_idle(struct lrt *rt, double seconds) {
  if (!rt || seconds < 0)
    return -1;
  /* Without a store a state holds the links and write fingerprints
   * itself (lua_rt.h): dropping it would forget them. */
  if (seconds > 0 && !rt->host.store)
    return -1;
  if (seconds > 0 && !rt->idle_ev && !(rt->idle_ev = evtimer_new(rt->host.base, on_idle, rt)))
    return -1;
  rt->idle_after = seconds;
  if (seconds == 0 && rt->idle_ev) {
    event_free(rt->idle_ev);
    rt->idle_ev = NULL;
  }
  arm_idle(rt);
  return 0;
}

bool lrt_release(struct lrt *rt) { return rt && rt->idle_ev && release_if_idle(rt); }

bool lrt_loaded(const struct lrt *rt) { return rt && rt->cur; }

unsigned long lrt_builds(const struct lrt *rt) { return rt ? rt->builds : 0; }

int lrt_running(const struct lrt *rt) {
  return rt ? rt->running : 0;
}
