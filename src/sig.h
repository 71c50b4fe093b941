/* sig: is this webhook really from GHL? GHL signs the raw body bytes:
 * X-GHL-Signature with Ed25519 (current) and x-wh-signature with RSA-SHA256
 * PKCS#1 v1.5 (legacy), both base64. The public keys are PEM files shipped
 * in keys/ and overridable. A timestamp check against replays lives here too. */
#ifndef NCGHL_SIG_H
#define NCGHL_SIG_H

#include <stddef.h>
#include <time.h>

struct sig_keys;

enum sig_result { SIG_OK = 0, SIG_MISSING, SIG_BAD };

/* Either path may be NULL (that scheme is then refused). */
struct sig_keys *sig_keys_load(const char *ed25519_pem, const char *rsa_pem, char *err, size_t errlen);
void sig_keys_free(struct sig_keys *k);
/* ghl_sig / wh_sig are the header values or NULL. X-GHL-Signature wins when
 * present (as GHL's own SDK does, no fallback then); "N/A" counts as absent. */
enum sig_result sig_verify_ghl(const struct sig_keys *k, const void *body, size_t len,
                               const char *ghl_sig, const char *wh_sig);
/* ISO-8601 UTC ("2025-08-26T11:36:43.463Z", "+00:00" too) to seconds; -1 if
 * it cannot be read. */
time_t sig_parse_time(const char *iso);

#endif
