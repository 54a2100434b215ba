/* cloister/json.h — the strict JSON reader (part of the common module) for every document that
 * crosses a trust boundary and decides something: release policies, DCAP collateral and PCCS
 * answers, preprocessing specs, JSON configuration. Built on jansson, whose decoder can refuse what
 * a lenient one silently resolves:
 *   - a repeated object key (lenient readers keep the first or the last: two reviewers of one file
 *     would read two different policies);
 *   - anything but whitespace after the value (a second object, trailing garbage);
 *   - "\u0000" inside a string (C strings would be cut there);
 *   - invalid UTF-8, integers that overflow, nesting deeper than jansson's limit (2048).
 * Every refusal names the document and the line and column, so a user can find it.
 * (The REST API's request bodies use cJSON and its per-thread arena: serve/jsonconv.c.)
 *
 * The cl_json_get_* helpers check one value's type and range and name it by a JSON path such as
 * "identities[1].min_isv_svn" in their error, prefixed by the document name.
 *
 * Ownership: cl_json_parse/cl_json_load return a new reference (json_decref). Strings returned by
 * the helpers point into the tree. Thread-safety: all functions are reentrant; a tree may be read by
 * many threads at once. */
#ifndef CLOISTER_JSON_H
#define CLOISTER_JSON_H

#include <jansson.h>

#include "cloister/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Parses exactly one JSON value that must be an object. `what` names the document in errors
 * ("policy", a file name). CL_E_FORMAT: "<what>: line L, column C: <why>". */
json_t *cl_json_parse(const char *text, size_t len, const char *what, cl_err *err);
/* Reads a file of at most max_bytes and parses it as above; errors name the file. */
json_t *cl_json_load(const char *path, size_t max_bytes, cl_err *err);

/* Refuses any key of `obj` that is not in `known` (NULL-terminated): "<what>: <path>.<key>: unknown
 * field (typo?)". */
int cl_json_check_keys(const json_t *obj, const char *what, const char *path, const char *const *known,
                       cl_err *err);
/* An integer (not a real, not a string) from lo to hi. */
int cl_json_get_int(const json_t *v, const char *what, const char *path, long long lo, long long hi,
                    long long *out, cl_err *err);
/* A string of 1..max_len bytes (max_len 0: any length). */
int cl_json_get_str(const json_t *v, const char *what, const char *path, size_t max_len, const char **out,
                    cl_err *err);
/* true or false. */
int cl_json_get_bool(const json_t *v, const char *what, const char *path, bool *out, cl_err *err);

#ifdef __cplusplus
}
#endif
#endif
