/* dirlist: the entries of one directory, sorted by name, hidden ones left
 * out. Scripts and test cases are read in this order so that what loads,
 * and the version hash over it, never depend on the file system's order. */
#ifndef NCGHL_DIRLIST_H
#define NCGHL_DIRLIST_H

#include <stddef.h>

/* 0 with *names (malloc'd, each malloc'd) and *n; -1 with errno set
 * (ENOENT, EACCES, ENOMEM, ...). */
int dirlist_read(const char *dir, char ***names, size_t *n);
void dirlist_free(char **names, size_t n);

#endif
