/* events_cmd: `ncghl events` (list the stored events, or one as a mapping
 * test case skeleton) and `ncghl replay` (put one event, or every dead one,
 * back in the queue with its id and history). Both work on the store file
 * and are safe beside a running service, which picks replayed events up. */
#ifndef NCGHL_EVENTS_CMD_H
#define NCGHL_EVENTS_CMD_H

/* argv holds the options after "events"; usage is the command line's help,
 * printed after a bad option. Returns the exit status: 0 listed, 1 no store
 * or a read failure, 2 bad usage. */
int events_main(int argc, char **argv, const char *usage);
/* argv holds the arguments after "replay" (one id or --dead). Returns 0
 * replayed (or nothing to replay), 1 no store, no such event, a running one
 * or a write failure (nothing replayed), 2 bad usage. */
int replay_main(int argc, char **argv, const char *usage);

#endif
