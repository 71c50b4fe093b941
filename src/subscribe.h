/* subscribe: `ncghl subscribe` and `ncghl unsubscribe`. They register (or
 * remove) PUBLIC_URL with NowCerts' Zapier REST hooks for the insured,
 * prospect, policy and quote events, so NowCerts POSTs each change to
 * /api/v1/webhooks/nowcerts?hook=<EventName>. What was registered is kept
 * in the store, so unsubscribe removes exactly that, even after PUBLIC_URL
 * changed. */
#ifndef NCGHL_SUBSCRIBE_H
#define NCGHL_SUBSCRIBE_H

#include <stdbool.h>

/* argv holds the options after the command. subscribe: true to register,
 * false to remove. Returns the exit status: 0 all done, 1 a missing setting
 * or a failed registration, 2 bad usage. */
int subscribe_main(int argc, char **argv, bool subscribe);

#endif
