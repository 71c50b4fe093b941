/* sig: is this webhook really from GHL? GHL signs the raw body bytes:
 * X-GHL-Signature with Ed25519 (current) and x-wh-signature with RSA-SHA256
 * PKCS#1 v1.5 (legacy), both base64. The public keys are PEM files shipped
 * in keys/ and overridable. A timestamp check against replays lives here too,
 * and so do the checks of our own secrets: the HMAC of NowCerts relay bodies
 * (NOWCERTS_WEBHOOK_SECRET) and the admin token, both in constant time. */
#ifndef NCGHL_SIG_H
#define NCGHL_SIG_H

#include <stdbool.h>
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
/* NowCerts relays (and REST hooks) when NOWCERTS_WEBHOOK_SECRET is set:
 * `header` is X-NCGHL-Signature, "sha256=<hex>" or the bare hex of
 * HMAC-SHA256(secret, raw body), hex in either case. Compared in constant
 * time. NULL or empty header: SIG_MISSING. */
enum sig_result sig_verify_hmac(const char *secret, const void *body, size_t len,
                                const char *header);
/* Lower-case hex of HMAC-SHA256(secret, body); what a sender puts after
 * "sha256=". */
void sig_hmac_sha256_hex(const char *secret, const void *body, size_t len, char out[65]);
/* Whether two secrets are equal, in time that depends on neither (both are
 * hashed first, so not even the length leaks). NULL equals nothing. */
bool sig_secret_equal(const char *given, const char *expected);
/* ISO-8601 UTC ("2025-08-26T11:36:43.463Z", "+00:00" too) to seconds; -1 if
 * it cannot be read. */
time_t sig_parse_time(const char *iso);

#endif
