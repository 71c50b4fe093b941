/* walbuf: a SQLite VFS over the default one that gathers a transaction's
 * WAL frames in memory and writes them with one pwrite when its commit
 * frame is written, instead of two writes per page (header, then page).
 * Every other file, and every other call, goes straight through. */
#ifndef NCGHL_WALBUF_H
#define NCGHL_WALBUF_H

#include <sqlite3.h>

/* The VFS's name for sqlite3_open_v2, registered on first use (once per
 * process; it keeps no state of its own), or NULL if SQLite refused it:
 * then the caller opens with the default VFS, which is only slower. */
const char *walbuf_vfs(void);

/* Writes whatever db's WAL still holds in memory (nothing, after every
 * commit SQLite writes today); 0, or an SQLite error code. */
int walbuf_flush(sqlite3 *db);

#endif
