/* pii: masks personal data (e-mail addresses, phone numbers, first and last
 * names) in text that leaves the process or is stored for people to read:
 * log lines and the URLs of upstream attempts. The masked form stays
 * recognisable to the people who know the record ("j***@e***.com",
 * "***4567", "J***") and tells nothing to anyone else. */
#ifndef NCGHL_PII_H
#define NCGHL_PII_H

#include <stddef.h>

/* Writes in (len bytes) to out with every personal datum it recognises
 * masked, and NUL-terminates it. Recognised: e-mail addresses anywhere
 * (also with "@" written "%40"); phone numbers written with a leading "+",
 * US numbers in their usual forms ("555-123-4567", "(555) 123-4567",
 * "555.123.4567", also after "1-"), and a run of 10 digits (11 with a
 * leading 1) that is not part of a word or a dotted or dashed number; and
 * the value of a field
 * whose name says it holds a name, phone or e-mail ("firstName", "phone",
 * "email", ...) written as "key":"value", key=value or the OData form
 * key eq 'value' (also percent-encoded). out is cut at outcap - 1 bytes.
 * Returns the length written. */
size_t pii_mask(const char *in, size_t len, char *out, size_t outcap);

/* pii_mask into a new string (malloc); NULL when out of memory. */
char *pii_mask_dup(const char *in);

#endif
