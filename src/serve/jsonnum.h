/* jsonnum.h — numbers in the REST JSON (jsonnum.c), for jsonconv.c: NaN/Infinity/-Infinity tokens,
 * exact integers from the token text, shortest round-trip float printing. Not a public interface.
 * Thread-safe (no shared state). */
#ifndef CLOISTER_SERVE_JSONNUM_H
#define CLOISTER_SERVE_JSONNUM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

typedef enum {
    CL_JSON_REAL = 0,  /* an ordinary number: use valuedouble */
    CL_JSON_INT,       /* integer syntax, its exact value in *i64 */
    CL_JSON_INT_RANGE, /* integer syntax beyond int64 */
    CL_JSON_NAN,
    CL_JSON_INF,
    CL_JSON_NINF,
} cl_json_num_kind;

/* A copy of body (malloc()ed, NUL-terminated) with every NaN, Infinity and -Infinity outside strings
 * replaced by "0" and blanks, for cJSON; NULL when there are none (then parse body itself) or when out
 * of memory (*oom). */
char *cl_json_specials_copy(const char *body, size_t len, bool *oom);
/* After cJSON parsed body (or its specials copy): each number node's valueint becomes the offset of
 * its token in body, for cl_json_number. */
void cl_json_number_offsets(cJSON *root, const char *body, size_t len);
/* What the token of number node v (annotated by cl_json_number_offsets) is; body NULL: CL_JSON_REAL. */
cl_json_num_kind cl_json_number(const cJSON *v, const char *body, size_t len, int64_t *i64);
/* The shortest "%.Ng" that reads back as the same value (float: 6..9 digits, double: 15..17) into buf
 * (cap >= 32); the length. Finite values only. */
size_t cl_json_float(char *buf, size_t cap, float f);
size_t cl_json_double(char *buf, size_t cap, double d);

#endif
