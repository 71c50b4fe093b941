/* sandbox: `ncghl serve --sandbox` runs the fake NowCerts and GHL APIs (the
 * same fakes the integration tests use) as a child process on loopback, so a
 * newcomer can watch a webhook become a contact without any credentials. */
#ifndef NCGHL_SANDBOX_H
#define NCGHL_SANDBOX_H

#include <stddef.h>
#include <sys/types.h>

struct config;

/* Starts the fakes on the configured sandbox ports and waits until they
 * listen. Returns the child's pid, or -1 with a reason in err. */
pid_t sandbox_start(const struct config *cfg, char *err, size_t errlen);
void sandbox_stop(pid_t pid);

#endif
