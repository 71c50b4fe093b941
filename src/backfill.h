/* backfill: `ncghl backfill --from nowcerts|ghl [--since DATE]`, the bulk
 * sync of records that existed before ncghl did. It runs beside the service
 * on the same store: it reads every record page by page and queues each as
 * the same event a webhook or the poller would make (same id, so nothing is
 * synced twice), committing a resume cursor with every page so that an
 * interrupted backfill goes on where it stopped. The running service does
 * the work; the command follows it with a progress bar and a summary. */
#ifndef NCGHL_BACKFILL_H
#define NCGHL_BACKFILL_H

/* argv holds the options after "backfill". Returns the exit status: 0 done
 * (or queued for the next start), 1 a read or store failure or events that
 * failed, 2 bad usage. */
int backfill_main(int argc, char **argv);

#endif
