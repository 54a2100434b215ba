/* json.c — the strict JSON reader: jansson's decoder with duplicate keys, trailing data and NULs in
 * strings refused, errors carrying line and column, and typed getters that name a JSON path. */
#include "cloister/json.h"

#include <stdlib.h>
#include <string.h>

json_t *cl_json_parse(const char *text, size_t len, const char *what, cl_err *err)
{
    json_error_t je;
    /* JSON_REJECT_DUPLICATES; no JSON_DISABLE_EOF_CHECK (trailing data is an error); no
     * JSON_ALLOW_NUL (\u0000 is an error); no JSON_DECODE_ANY (the top level is an object or array) */
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        cl_err_set(err, CL_E_FORMAT, "%s: line %d, column %d: %s", what, je.line, je.column, je.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        cl_err_set(err, CL_E_FORMAT, "%s: expected a JSON object at the top level", what);
        return NULL;
    }
    return root;
}

json_t *cl_json_load(const char *path, size_t max_bytes, cl_err *err)
{
    uint8_t *buf;
    size_t len;
    if (cl_file_read(path, max_bytes, &buf, &len, err) != 0)
        return NULL;
    json_t *root = cl_json_parse((const char *)buf, len, path, err);
    free(buf);
    return root;
}

int cl_json_check_keys(const json_t *obj, const char *what, const char *path, const char *const *known,
                       cl_err *err)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        size_t i = 0;
        while (known[i] && strcmp(known[i], key) != 0)
            i++;
        if (!known[i])
            return cl_err_set(err, CL_E_FORMAT, "%s: %s%s%s: unknown field (typo?)", what, path, path[0] ? "." : "",
                              key);
    }
    return 0;
}

int cl_json_get_int(const json_t *v, const char *what, const char *path, long long lo, long long hi,
                    long long *out, cl_err *err)
{
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return cl_err_set(err, CL_E_FORMAT, "%s: %s must be an integer from %lld to %lld", what, path, lo, hi);
    *out = json_integer_value(v);
    return 0;
}

int cl_json_get_str(const json_t *v, const char *what, const char *path, size_t max_len, const char **out,
                    cl_err *err)
{
    if (!json_is_string(v) || json_string_length(v) == 0)
        return cl_err_set(err, CL_E_FORMAT, "%s: %s must be a non-empty string", what, path);
    if (max_len && json_string_length(v) > max_len)
        return cl_err_set(err, CL_E_FORMAT, "%s: %s is longer than %zu characters", what, path, max_len);
    *out = json_string_value(v);
    return 0;
}

int cl_json_get_bool(const json_t *v, const char *what, const char *path, bool *out, cl_err *err)
{
    if (!json_is_boolean(v))
        return cl_err_set(err, CL_E_FORMAT, "%s: %s must be true or false", what, path);
    *out = json_is_true(v);
    return 0;
}
