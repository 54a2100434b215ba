/* testutil.h — helpers shared by the cmocka unit tests: temporary directories, files, deterministic
 * pseudo-random bytes. Test code only; failures abort the test via cmocka's assertions. */
#ifndef CLOISTER_TESTUTIL_H
#define CLOISTER_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka needs the headers above first */
#include <cmocka.h>

/* A new empty directory under $TMPDIR (or /tmp); malloc()ed path. */
char *tu_tmpdir(void);
/* Removes a directory tree (like rm -rf); ignores errors. */
void tu_rmrf(const char *path);
/* dir + "/" + name, malloc()ed. */
char *tu_path(const char *dir, const char *name);
void tu_write_file(const char *path, const void *buf, size_t len);
/* Whole file, malloc()ed; *len receives the size. Fails the test if unreadable. */
uint8_t *tu_read_file(const char *path, size_t *len);
int tu_file_exists(const char *path);
/* Deterministic bytes from a seed (xorshift), for reproducible test data. */
void tu_fill_random(void *buf, size_t len, uint64_t seed);
/* Number of directory entries (excluding . and ..), to check nothing was left behind. */
int tu_count_entries(const char *dir);

#endif
