/* Fuzz target: the signature headers (src/sig.c). The input is split at its
 * first three newlines into X-GHL-Signature, x-wh-signature,
 * X-NCGHL-Signature and the body. A fuzzed header must never verify against
 * GHL's shipped public keys (we hold no private key, so SIG_OK would be a
 * forgery), and the HMAC check must agree with the HMAC we compute. The
 * timestamp parser gets the first line too. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fuzz.h"
#include "sig.h"

#ifndef NCGHL_SOURCE_DIR
#define NCGHL_SOURCE_DIR "."
#endif

static struct sig_keys *keys;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  char err[256];
  keys = sig_keys_load(NCGHL_SOURCE_DIR "/keys/ghl-webhook-ed25519-x-ghl-signature.pem",
                       NCGHL_SOURCE_DIR "/keys/ghl-webhook-rsa4096-x-wh-signature.pem", err,
                       sizeof err);
  if (!keys) {
    fprintf(stderr, "fuzz_sig: %s\n", err);
    abort();
  }
  return 0;
}

/* Next line of [*p, end) as a NUL-terminated copy (NULL when empty). */
static char *take_line(const char **p, const char *end) {
  const char *nl = memchr(*p, '\n', (size_t)(end - *p));
  size_t n = nl ? (size_t)(nl - *p) : (size_t)(end - *p);
  char *s = malloc(n + 1);
  if (!s)
    abort();
  memcpy(s, *p, n);
  s[n] = 0;
  *p += n + (nl ? 1 : 0);
  if (!*s) {
    free(s);
    return NULL;
  }
  return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *p = (const char *)data, *end = p + size;
  char *ghl = take_line(&p, end);
  char *wh = take_line(&p, end);
  char *mac = take_line(&p, end);
  const char *body = p;
  size_t len = (size_t)(end - p);

  if (sig_verify_ghl(keys, body, len, ghl, wh) == SIG_OK) {
    fprintf(stderr, "fuzz_sig: a fuzzed signature verified\n");
    abort();
  }
  const char *secret = "fuzz-secret";
  enum sig_result h = sig_verify_hmac(secret, body, len, mac);
  char hex[65];
  sig_hmac_sha256_hex(secret, body, len, hex);
  /* The header is accepted as "sha256=<hex>" or the bare hex, hex and
   * prefix in either case, with blanks around it. */
  bool same = false;
  if (mac) {
    const char *g = mac + strspn(mac, " \t");
    if (strncasecmp(g, "sha256=", 7) == 0)
      g += 7;
    size_t n = strlen(g);
    while (n && (g[n - 1] == ' ' || g[n - 1] == '\t'))
      n--;
    same = n == 64 && strncasecmp(g, hex, 64) == 0;
  }
  if ((h == SIG_OK) != same) {
    fprintf(stderr, "fuzz_sig: HMAC check disagrees (%d, expected %s)\n", (int)h, hex);
    abort();
  }
  if (!mac && h != SIG_MISSING)
    abort();
  (void)sig_secret_equal(ghl, wh);
  (void)sig_parse_time(ghl);
  free(ghl);
  free(wh);
  free(mac);
  return 0;
}
