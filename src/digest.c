/* digest: SHA-256 through OpenSSL's EVP interface (the low-level SHA256_*
 * calls are deprecated in OpenSSL 3), hex-encoded, and the event id built
 * on it. On the impossible-in-practice failure of libcrypto (out of memory)
 * the output is the empty string, which no caller can mistake for an id. */
#include "digest.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <string.h>

#include "log.h"

#define SHA256_LEN 32

/* OpenSSL 3 looks EVP_sha256() up in its provider tables on every use
 * (locks and a hash lookup: 40 % of the event id's time at intake). The
 * fetched algorithm is immutable and safe to share between threads, so it
 * is fetched once per process; NULL (no provider) falls back to the
 * lookup, which then fails with libcrypto's own error. */
static const EVP_MD *fetched_sha256;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void fetch_sha256(void) {
  fetched_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static const EVP_MD *sha256(void) {
  pthread_once(&sha256_once, fetch_sha256);
  return fetched_sha256 ? fetched_sha256 : EVP_sha256();
}

static void hex_encode(const unsigned char *md, size_t n, char *out) {
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = hex[md[i] >> 4];
    out[2 * i + 1] = hex[md[i] & 15];
  }
  out[2 * n] = '\0';
}

void digest_sha256_hex(const void *data, size_t len, char out[DIGEST_HEX_LEN + 1]) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  if (!EVP_Digest(data ? data : "", len, md, &mdlen, sha256(), NULL) || mdlen != SHA256_LEN) {
    log_error("sha256: libcrypto failed");
    out[0] = '\0';
    return;
  }
  hex_encode(md, SHA256_LEN, out);
}

void digest_event_id(const char *source, const char *canonical, size_t len, char out[EVENT_ID_MAX]) {
  size_t slen = strlen(source);
  out[0] = '\0';
  /* Truncating the source would let two sources share ids: refuse instead. */
  if (slen > EVENT_ID_MAX - DIGEST_HEX_LEN - 2) {
    log_error("event id: source name of %zu bytes is too long", slen);
    return;
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  /* Canonical JSON never holds a raw newline, so the last "\n" of the
   * hashed bytes tells exactly where the source ends: no two (source,
   * payload) pairs hash the same bytes. */
  int ok = ctx && EVP_DigestInit_ex(ctx, sha256(), NULL) && EVP_DigestUpdate(ctx, source, slen) &&
           EVP_DigestUpdate(ctx, "\n", 1) && EVP_DigestUpdate(ctx, canonical ? canonical : "", len) &&
           EVP_DigestFinal_ex(ctx, md, &mdlen) && mdlen == SHA256_LEN;
  EVP_MD_CTX_free(ctx);
  if (!ok) {
    log_error("event id: libcrypto failed");
    return;
  }
  memcpy(out, source, slen);
  out[slen] = '_';
  hex_encode(md, SHA256_LEN, out + slen + 1);
}
