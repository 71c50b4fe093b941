/* conflicts_cmd: `ncghl conflicts [--limit N] [--json]`, the fields both sides
 * changed since the last sync and which side's value won (SPEC 10), read
 * from the store, newest first; the same JSON object as the admin API's
 * GET /api/v1/conflicts. Read-only: safe beside a running service. */
#ifndef NCGHL_CONFLICTS_CMD_H
#define NCGHL_CONFLICTS_CMD_H

/* argv holds the options after "conflicts". Returns the exit status: 0 listed
 * (also when there are none), 1 no store or a read failure, 2 bad usage. */
int conflicts_main(int argc, char **argv);

#endif
