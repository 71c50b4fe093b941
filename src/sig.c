/* Verification goes through OpenSSL's EVP_DigestVerify, which does both
 * Ed25519 (no separate digest) and RSA with SHA-256 behind one interface. */
#include "sig.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct sig_keys {
  EVP_PKEY *ed25519;
  EVP_PKEY *rsa;
};

static EVP_PKEY *load_pem(const char *path, int want, char *err, size_t errlen) {
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(err, errlen, "cannot read public key %s", path);
    return NULL;
  }
  EVP_PKEY *k = PEM_read_PUBKEY(f, NULL, NULL, NULL);
  fclose(f);
  if (!k || EVP_PKEY_base_id(k) != want) {
    snprintf(err, errlen, "%s is not a %s public key in PEM", path,
             want == EVP_PKEY_ED25519 ? "Ed25519" : "RSA");
    EVP_PKEY_free(k);
    return NULL;
  }
  return k;
}

struct sig_keys *sig_keys_load(const char *ed25519_pem, const char *rsa_pem, char *err,
                               size_t errlen) {
  struct sig_keys *k = calloc(1, sizeof *k);
  if (!k)
    return NULL;
  if ((ed25519_pem && !(k->ed25519 = load_pem(ed25519_pem, EVP_PKEY_ED25519, err, errlen))) ||
      (rsa_pem && !(k->rsa = load_pem(rsa_pem, EVP_PKEY_RSA, err, errlen)))) {
    sig_keys_free(k);
    return NULL;
  }
  return k;
}

void sig_keys_free(struct sig_keys *k) {
  if (!k)
    return;
  EVP_PKEY_free(k->ed25519);
  EVP_PKEY_free(k->rsa);
  free(k);
}

/* Decoded length, or -1. EVP_DecodeBlock counts padding as data, so the
 * '=' are subtracted by hand. */
static int b64_decode(const char *in, unsigned char *out, size_t outcap) {
  size_t n = strlen(in);
  while (n && (in[n - 1] == ' ' || in[n - 1] == '\r' || in[n - 1] == '\n'))
    n--;
  if (n == 0 || n % 4 != 0 || n / 4 * 3 > outcap)
    return -1;
  int len = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);
  if (len < 0)
    return -1;
  if (in[n - 1] == '=')
    len--;
  if (in[n - 2] == '=')
    len--;
  return len;
}

static bool verify(EVP_PKEY *key, bool sha256, const void *body, size_t len, const char *b64) {
  unsigned char sig[1024];
  int siglen = b64_decode(b64, sig, sizeof sig);
  if (!key || siglen <= 0)
    return false;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  bool ok = ctx && EVP_DigestVerifyInit(ctx, NULL, sha256 ? EVP_sha256() : NULL, NULL, key) == 1 &&
            EVP_DigestVerify(ctx, sig, (size_t)siglen, body, len) == 1;
  EVP_MD_CTX_free(ctx);
  return ok;
}

static bool present(const char *h) { return h && *h && strcmp(h, "N/A") != 0; }

enum sig_result sig_verify_ghl(const struct sig_keys *k, const void *body, size_t len,
                               const char *ghl_sig, const char *wh_sig) {
  if (present(ghl_sig))
    return verify(k->ed25519, false, body, len, ghl_sig) ? SIG_OK : SIG_BAD;
  if (present(wh_sig))
    return verify(k->rsa, true, body, len, wh_sig) ? SIG_OK : SIG_BAD;
  return SIG_MISSING;
}

void sig_hmac_sha256_hex(const char *secret, const void *body, size_t len, char out[65]) {
  static const char hex[] = "0123456789abcdef";
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (!HMAC(EVP_sha256(), secret, (int)strlen(secret), body, len, mac, &n) || n != 32) {
    out[0] = '\0';
    return;
  }
  for (unsigned i = 0; i < n; i++) {
    out[2 * i] = hex[mac[i] >> 4];
    out[2 * i + 1] = hex[mac[i] & 15];
  }
  out[64] = '\0';
}

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

enum sig_result sig_verify_hmac(const char *secret, const void *body, size_t len,
                                const char *header) {
  if (!header)
    return SIG_MISSING;
  while (*header == ' ' || *header == '\t')
    header++;
  if (!*header)
    return SIG_MISSING;
  if (strncasecmp(header, "sha256=", 7) == 0)
    header += 7;
  size_t n = strlen(header);
  while (n && (header[n - 1] == ' ' || header[n - 1] == '\t'))
    n--;
  unsigned char given[32];
  if (n != 64 || !secret)
    return SIG_BAD;
  for (size_t i = 0; i < 32; i++) {
    int hi = hexval(header[2 * i]), lo = hexval(header[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return SIG_BAD;
    given[i] = (unsigned char)(hi << 4 | lo);
  }
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int maclen = 0;
  if (!HMAC(EVP_sha256(), secret, (int)strlen(secret), body, len, mac, &maclen) || maclen != 32)
    return SIG_BAD;
  /* CRYPTO_memcmp takes the same time wherever the first difference is, so
   * a sender cannot find the MAC byte by byte. */
  return CRYPTO_memcmp(given, mac, 32) == 0 ? SIG_OK : SIG_BAD;
}

bool sig_secret_equal(const char *given, const char *expected) {
  if (!given || !expected)
    return false;
  unsigned char a[SHA256_DIGEST_LENGTH], b[SHA256_DIGEST_LENGTH];
  SHA256((const unsigned char *)given, strlen(given), a);
  SHA256((const unsigned char *)expected, strlen(expected), b);
  return CRYPTO_memcmp(a, b, sizeof a) == 0;
}

time_t sig_parse_time(const char *iso) {
  if (!iso)
    return -1;
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  int used = 0;
  if (sscanf(iso, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
             &tm.tm_min, &tm.tm_sec, &used) != 6)
    return -1;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  const char *rest = iso + used;
  if (*rest == '.')
    for (rest++; *rest >= '0' && *rest <= '9'; rest++)
      ;
  long offset = 0;
  if (*rest == '+' || *rest == '-') {
    int hh, mm;
    if (sscanf(rest + 1, "%2d:%2d", &hh, &mm) != 2)
      return -1;
    offset = (hh * 3600L + mm * 60L) * (*rest == '-' ? -1 : 1);
  } else if (*rest != 'Z' && *rest != 0) {
    return -1;
  }
  return timegm(&tm) - offset;
}
