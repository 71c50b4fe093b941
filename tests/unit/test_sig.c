/* Webhook signatures with key pairs made here (configured as the public
 * keys): a good signature passes, a tampered body or a wrong key fails, for
 * both GHL schemes; the shipped GHL keys load. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <stdbool.h>

#include "sig.h"

static EVP_PKEY *make_key(int type) {
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(type, NULL);
  EVP_PKEY *k = NULL;
  assert_non_null(ctx);
  assert_int_equal(EVP_PKEY_keygen_init(ctx), 1);
  if (type == EVP_PKEY_RSA)
    assert_int_equal(EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, 2048), 1);
  assert_int_equal(EVP_PKEY_keygen(ctx, &k), 1);
  EVP_PKEY_CTX_free(ctx);
  return k;
}

static void write_pub(EVP_PKEY *k, char *path) {
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  FILE *f = fdopen(fd, "w");
  assert_int_equal(PEM_write_PUBKEY(f, k), 1);
  fclose(f);
}

static void sign_b64(EVP_PKEY *k, bool sha256, const char *msg, char *out) {
  unsigned char sig[1024];
  size_t n = sizeof sig;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  assert_int_equal(EVP_DigestSignInit(ctx, NULL, sha256 ? EVP_sha256() : NULL, NULL, k), 1);
  assert_int_equal(EVP_DigestSign(ctx, sig, &n, (const unsigned char *)msg, strlen(msg)), 1);
  EVP_MD_CTX_free(ctx);
  EVP_EncodeBlock((unsigned char *)out, sig, (int)n);
}

static void test_both_schemes(void **state) {
  (void)state;
  EVP_PKEY *ed = make_key(EVP_PKEY_ED25519), *rsa = make_key(EVP_PKEY_RSA);
  EVP_PKEY *other = make_key(EVP_PKEY_ED25519);
  char edpath[] = "/tmp/ncghl-ed-XXXXXX", rsapath[] = "/tmp/ncghl-rsa-XXXXXX";
  write_pub(ed, edpath);
  write_pub(rsa, rsapath);
  char err[256];
  struct sig_keys *keys = sig_keys_load(edpath, rsapath, err, sizeof err);
  assert_non_null(keys);
  const char *body = "{\"type\":\"ContactCreate\",\"id\":\"abc\"}";
  const char *tampered = "{\"type\":\"ContactCreate\",\"id\":\"abd\"}";
  char s_ed[200], s_rsa[1024], s_other[200];
  sign_b64(ed, false, body, s_ed);
  sign_b64(rsa, true, body, s_rsa);
  sign_b64(other, false, body, s_other);

  assert_int_equal(sig_verify_ghl(keys, body, strlen(body), s_ed, NULL), SIG_OK);
  assert_int_equal(sig_verify_ghl(keys, tampered, strlen(tampered), s_ed, NULL), SIG_BAD);
  assert_int_equal(sig_verify_ghl(keys, body, strlen(body), s_other, NULL), SIG_BAD);
  assert_int_equal(sig_verify_ghl(keys, body, strlen(body), NULL, s_rsa), SIG_OK);
  assert_int_equal(sig_verify_ghl(keys, tampered, strlen(tampered), NULL, s_rsa), SIG_BAD);
  /* X-GHL-Signature wins: a bad one is not rescued by a good legacy one. */
  assert_int_equal(sig_verify_ghl(keys, body, strlen(body), s_other, s_rsa), SIG_BAD);
  assert_int_equal(sig_verify_ghl(keys, body, strlen(body), "N/A", s_rsa), SIG_OK);
  assert_int_equal(sig_verify_ghl(keys, body, strlen(body), NULL, NULL), SIG_MISSING);
  assert_int_equal(sig_verify_ghl(keys, body, strlen(body), "N/A", NULL), SIG_MISSING);
  assert_int_equal(sig_verify_ghl(keys, body, strlen(body), "!!notbase64!!", NULL), SIG_BAD);

  sig_keys_free(keys);
  unlink(edpath);
  unlink(rsapath);
  EVP_PKEY_free(ed);
  EVP_PKEY_free(rsa);
  EVP_PKEY_free(other);
}

static void test_shipped_keys_load(void **state) {
  (void)state;
  char err[256];
  struct sig_keys *k = sig_keys_load(NCGHL_SOURCE_DIR "/keys/ghl-webhook-ed25519-x-ghl-signature.pem",
                                     NCGHL_SOURCE_DIR "/keys/ghl-webhook-rsa4096-x-wh-signature.pem",
                                     err, sizeof err);
  assert_non_null(k);
  sig_keys_free(k);
  /* a key of the wrong kind is refused with a reason */
  k = sig_keys_load(NCGHL_SOURCE_DIR "/keys/ghl-webhook-rsa4096-x-wh-signature.pem", NULL, err,
                    sizeof err);
  assert_null(k);
  assert_non_null(strstr(err, "Ed25519"));
}

static void test_parse_time(void **state) {
  (void)state;
  assert_int_equal(sig_parse_time("2025-08-26T11:36:43.463Z"), 1756208203);
  assert_int_equal(sig_parse_time("2025-08-26T13:36:43+02:00"), 1756208203);
  assert_int_equal(sig_parse_time("2025-08-26T11:36:43"), 1756208203);
  assert_int_equal(sig_parse_time("yesterday"), -1);
  assert_int_equal(sig_parse_time(NULL), -1);
}

/* RFC 4231 test case 2 pins the HMAC itself; the rest is the header's
 * forms and the ways it can be wrong. */
static void test_hmac(void **state) {
  (void)state;
  char hex[65];
  sig_hmac_sha256_hex("Jefe", "what do ya want for nothing?", 28, hex);
  assert_string_equal(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");

  const char *secret = "relay-secret-1";
  const char *body = "{\"event_type\":\"INSURED_INSERT\",\"data\":{}}";
  size_t len = strlen(body);
  sig_hmac_sha256_hex(secret, body, len, hex);
  char header[80], upper[80];
  snprintf(header, sizeof header, "sha256=%s", hex);
  assert_int_equal(sig_verify_hmac(secret, body, len, header), SIG_OK);
  assert_int_equal(sig_verify_hmac(secret, body, len, hex), SIG_OK); /* bare hex */
  for (size_t i = 0; i < sizeof upper && header[i]; i++)
    upper[i] = (char)(header[i] >= 'a' && header[i] <= 'z' ? header[i] - 32 : header[i]);
  upper[strlen(header)] = 0;
  assert_int_equal(sig_verify_hmac(secret, body, len, upper), SIG_OK); /* SHA256=<HEX> */

  assert_int_equal(sig_verify_hmac(secret, body, len, NULL), SIG_MISSING);
  assert_int_equal(sig_verify_hmac(secret, body, len, ""), SIG_MISSING);
  assert_int_equal(sig_verify_hmac(secret, body, len - 1, header), SIG_BAD); /* tampered */
  assert_int_equal(sig_verify_hmac("other-secret", body, len, header), SIG_BAD);
  header[strlen(header) - 1] ^= 1; /* one bit off */
  assert_int_equal(sig_verify_hmac(secret, body, len, header), SIG_BAD);
  assert_int_equal(sig_verify_hmac(secret, body, len, "sha256=abc"), SIG_BAD); /* short */
  char nothex[] = "sha256=zz00000000000000000000000000000000000000000000000000000000000000";
  assert_int_equal(sig_verify_hmac(secret, body, len, nothex), SIG_BAD);
}

static void test_secret_equal(void **state) {
  (void)state;
  assert_true(sig_secret_equal("adm-token-123", "adm-token-123"));
  assert_false(sig_secret_equal("adm-token-124", "adm-token-123"));
  assert_false(sig_secret_equal("adm-token-12", "adm-token-123"));
  assert_false(sig_secret_equal("", "adm-token-123"));
  assert_false(sig_secret_equal(NULL, "adm-token-123"));
  assert_false(sig_secret_equal("x", NULL));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_both_schemes),
      cmocka_unit_test(test_shipped_keys_load),
      cmocka_unit_test(test_parse_time),
      cmocka_unit_test(test_hmac),
      cmocka_unit_test(test_secret_equal),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
