/* tensor.c — tensors, element types and status codes of the serve module: cl_serve_dtype_*,
 * cl_serve_tensor_*, cl_serve_shape_elements, cl_serve_code_*. Pure functions, thread-safe. */
#include "cloister/serve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t cl_serve_dtype_size(cl_serve_dtype dt)
{
    switch (dt) {
    case CL_SERVE_DT_FLOAT: return 4;
    case CL_SERVE_DT_DOUBLE: return 8;
    case CL_SERVE_DT_INT32: return 4;
    case CL_SERVE_DT_UINT8: return 1;
    case CL_SERVE_DT_INT8: return 1;
    case CL_SERVE_DT_INT64: return 8;
    case CL_SERVE_DT_BOOL: return 1;
    default: return 0;
    }
}

const char *cl_serve_dtype_name(cl_serve_dtype dt)
{
    switch (dt) {
    case CL_SERVE_DT_FLOAT: return "DT_FLOAT";
    case CL_SERVE_DT_DOUBLE: return "DT_DOUBLE";
    case CL_SERVE_DT_INT32: return "DT_INT32";
    case CL_SERVE_DT_UINT8: return "DT_UINT8";
    case CL_SERVE_DT_INT8: return "DT_INT8";
    case CL_SERVE_DT_INT64: return "DT_INT64";
    case CL_SERVE_DT_BOOL: return "DT_BOOL";
    case CL_SERVE_DT_STRING: return "DT_STRING";
    default: return "DT_INVALID";
    }
}

void cl_serve_shape_str(char *buf, size_t cap, int ndim, const int64_t *dims)
{
    size_t used = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%lld", i ? "," : "", (long long)dims[i]);
    if (used < cap)
        snprintf(buf + used, cap - used, "]");
}

int64_t cl_serve_shape_elements(int ndim, const int64_t *dims)
{
    if (ndim < 0 || ndim > CL_SERVE_MAX_DIMS)
        return -1;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (dims[i] < 0)
            return -1;
        if (dims[i] != 0 && n > INT64_MAX / dims[i])
            return -1;
        n *= dims[i];
    }
    return n;
}

int cl_serve_tensor_bytes(const char *name, cl_serve_dtype dtype, int ndim, const int64_t *dims, size_t max_bytes,
                       size_t *bytes, cl_err *err)
{
    size_t es = cl_serve_dtype_size(dtype);
    if (!es)
        return cl_err_set(err, CL_E_INVALID, "tensor '%s': unsupported dtype %d", name ? name : "", (int)dtype);
    if (ndim < 0 || ndim > CL_SERVE_MAX_DIMS)
        return cl_err_set(err, CL_E_INVALID, "tensor '%s': rank %d not supported (at most %d)", name ? name : "",
                          ndim, CL_SERVE_MAX_DIMS);
    int64_t n = cl_serve_shape_elements(ndim, dims);
    if (n < 0 || (uint64_t)n > SIZE_MAX / es)
        return cl_err_set(err, CL_E_INVALID, "tensor '%s': invalid shape", name ? name : "");
    *bytes = (size_t)n * es;
    if (max_bytes && *bytes > max_bytes)
        return cl_err_set(err, CL_E_INVALID, "tensor '%s' would need %zu bytes, above the limit of %zu",
                          name ? name : "", *bytes, max_bytes);
    return 0;
}

/* Fills in a checked tensor around data (taken over; NULL: allocated zero-filled here). */
static int tensor_fill(cl_serve_tensor *t, const char *name, cl_serve_dtype dtype, int ndim, const int64_t *dims,
                       size_t bytes, void *data, cl_err *err)
{
    t->name = strdup(name ? name : "");
    t->data = data ? data : calloc(1, bytes ? bytes : 1);
    if (!t->name || !t->data) {
        cl_serve_tensor_clear(t);
        return cl_err_set(err, CL_E_NOMEM, "out of memory for tensor '%s'", name ? name : "");
    }
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->dims[i] = dims[i];
    t->nbytes = bytes;
    return 0;
}

int cl_serve_tensor_init(cl_serve_tensor *t, const char *name, cl_serve_dtype dtype, int ndim,
                         const int64_t *dims, size_t max_bytes, cl_err *err)
{
    memset(t, 0, sizeof *t);
    size_t bytes;
    if (cl_serve_tensor_bytes(name, dtype, ndim, dims, max_bytes, &bytes, err) != 0)
        return -1;
    return tensor_fill(t, name, dtype, ndim, dims, bytes, NULL, err);
}

int cl_serve_tensor_adopt(cl_serve_tensor *t, const char *name, cl_serve_dtype dtype, int ndim, const int64_t *dims,
                          size_t max_bytes, void **data, size_t len, cl_err *err)
{
    memset(t, 0, sizeof *t);
    size_t bytes;
    if (cl_serve_tensor_bytes(name, dtype, ndim, dims, max_bytes, &bytes, err) != 0)
        return -1;
    if (len != bytes || !bytes)
        return cl_err_set(err, CL_E_INVALID, "tensor '%s': %zu bytes of data, the shape and dtype need %zu",
                          name ? name : "", len, bytes);
    void *d = *data;
    *data = NULL;
    return tensor_fill(t, name, dtype, ndim, dims, bytes, d, err);
}

int cl_serve_tensor_init_strings(cl_serve_tensor *t, const char *name, int ndim, const int64_t *dims,
                                 const size_t *caps, size_t max_bytes, cl_err *err)
{
    memset(t, 0, sizeof *t);
    name = name ? name : "";
    if (ndim < 0 || ndim > CL_SERVE_MAX_DIMS)
        return cl_err_set(err, CL_E_INVALID, "tensor '%s': rank %d not supported (at most %d)", name, ndim,
                          CL_SERVE_MAX_DIMS);
    int64_t n = cl_serve_shape_elements(ndim, dims);
    if (n < 0 || (uint64_t)n > SIZE_MAX / sizeof(cl_serve_string))
        return cl_err_set(err, CL_E_INVALID, "tensor '%s': invalid shape", name);
    size_t bytes = (size_t)n * sizeof(cl_serve_string);
    for (int64_t i = 0; i < n; i++) {
        if (caps[i] > SIZE_MAX - bytes)
            return cl_err_set(err, CL_E_INVALID, "tensor '%s': strings too large", name);
        bytes += caps[i];
    }
    if (max_bytes && bytes > max_bytes)
        return cl_err_set(err, CL_E_INVALID, "tensor '%s' would need %zu bytes, above the limit of %zu", name, bytes,
                          max_bytes);
    t->name = strdup(name);
    t->data = malloc(bytes ? bytes : 1);
    if (!t->name || !t->data) {
        cl_serve_tensor_clear(t);
        return cl_err_set(err, CL_E_NOMEM, "out of memory for tensor '%s'", name);
    }
    cl_serve_string *tab = t->data;
    uint8_t *p = (uint8_t *)t->data + (size_t)n * sizeof(cl_serve_string);
    for (int64_t i = 0; i < n; i++) {
        tab[i] = (cl_serve_string){p, caps[i]};
        p += caps[i];
    }
    t->dtype = CL_SERVE_DT_STRING;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->dims[i] = dims[i];
    t->nbytes = bytes;
    return 0;
}

void cl_serve_tensor_clear(cl_serve_tensor *t)
{
    if (!t)
        return;
    free(t->name);
    free(t->data);
    memset(t, 0, sizeof *t);
}

void cl_serve_tensors_free(cl_serve_tensor *t, size_t n)
{
    if (!t)
        return;
    for (size_t i = 0; i < n; i++)
        cl_serve_tensor_clear(&t[i]);
    free(t);
}

static const char *const code_names[] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};

const char *cl_serve_code_name(cl_serve_code c)
{
    return (unsigned)c < CL_ARRAY_LEN(code_names) ? code_names[c] : "UNKNOWN";
}

int cl_serve_code_http(cl_serve_code c)
{
    switch (c) {
    case CL_SC_OK: return 200;
    case CL_SC_CANCELLED: return 499;
    case CL_SC_INVALID_ARGUMENT:
    case CL_SC_FAILED_PRECONDITION:
    case CL_SC_OUT_OF_RANGE: return 400;
    case CL_SC_DEADLINE_EXCEEDED: return 504;
    case CL_SC_NOT_FOUND: return 404;
    case CL_SC_ALREADY_EXISTS:
    case CL_SC_ABORTED: return 409;
    case CL_SC_PERMISSION_DENIED: return 403;
    case CL_SC_UNAUTHENTICATED: return 401;
    case CL_SC_RESOURCE_EXHAUSTED: return 429;
    case CL_SC_UNIMPLEMENTED: return 501;
    case CL_SC_UNAVAILABLE: return 503;
    default: return 500;
    }
}
