/* jsonconv.c — the REST side's JSON: TF Serving's :predict request formats (row "instances" and
 * columnar "inputs") into cl_serve_tensor inputs typed by the model's signature ({"b64": ...} values
 * become DT_STRING tensors of the decoded bytes, e.g. encoded images), the matching
 * response formats ("predictions" / "outputs"), model metadata, model status and error bodies.
 * Requests are parsed with cJSON; responses are written directly into a growing buffer (tensors can
 * be large). Thread-safe: the only shared state is cJSON's allocator hooks, set once by
 * cl_serve_json_init before any thread parses (see "parse arena"). */
#include "serve_int.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "jsonnum.h"

/* ---------------------------------------------------------------- parse arena
 * cJSON allocates one node per JSON value and a string per key. While a :predict body is parsed on
 * a thread, its allocations come from that thread's arena (bumped, never freed one by one, reset
 * after the tree is deleted); anything beyond the arena, and every other cJSON use in the process,
 * goes to malloc. Measured on the REST benchmark: cJSON's malloc/free were ~5% of the server's CPU.
 * The hooks are process-wide, so cl_serve_json_init sets them once, before threads start; a pointer
 * is recognised as the arena's by its address. Off under AddressSanitizer, which then still sees
 * every cJSON allocation. */
#if defined(__SANITIZE_ADDRESS__)
#define ARENA_BYTES 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ARENA_BYTES 0
#endif
#endif
#ifndef ARENA_BYTES
#define ARENA_BYTES (64u << 10)
#endif

#if ARENA_BYTES
static _Thread_local struct {
    bool on;
    size_t used;
    _Alignas(16) unsigned char buf[ARENA_BYTES];
} arena;

static void *arena_malloc(size_t n)
{
    size_t need = (n + 15) & ~(size_t)15;
    if (arena.on && need >= n && need <= ARENA_BYTES - arena.used) {
        void *p = arena.buf + arena.used;
        arena.used += need;
        return p;
    }
    return malloc(n);
}

static void arena_free(void *p)
{
    if ((unsigned char *)p >= arena.buf && (unsigned char *)p < arena.buf + ARENA_BYTES)
        return; /* reclaimed when the parse ends */
    free(p);
}

static bool arena_ready;
static pthread_once_t arena_once = PTHREAD_ONCE_INIT;
static void arena_init(void)
{
    cJSON_Hooks h = {arena_malloc, arena_free};
    cJSON_InitHooks(&h);
    arena_ready = true;
}
#endif

void cl_serve_json_init(void)
{
#if ARENA_BYTES
    pthread_once(&arena_once, arena_init);
#endif
}

static void arena_begin(void)
{
#if ARENA_BYTES
    arena.on = arena_ready;
    arena.used = 0;
#endif
}

static void arena_end(void)
{
#if ARENA_BYTES
    arena.on = false;
    arena.used = 0;
#endif
}

/* ---------------------------------------------------------------- request parsing */

/* The body being parsed on this thread when its number tokens were annotated (jsonnum.c: NaN,
 * Infinity, exact int64); NULL otherwise. */
static _Thread_local const char *nums_body;
static _Thread_local size_t nums_len;

/* Checks that every list at depth d has dims[d] elements and that scalars sit exactly at depth ndim. */
static cl_serve_code json_check(const cJSON *v, int depth, int ndim, const int64_t *dims, const char *name,
                                cl_serve_status *st)
{
    if (!cJSON_IsArray(v)) {
        if (depth != ndim)
            return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input '%s': ragged nested lists are not allowed "
                                   "(all elements must have the same shape)", name);
        return CL_SC_OK;
    }
    if (depth >= ndim || cJSON_GetArraySize(v) != dims[depth])
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input '%s': ragged nested lists are not allowed (all "
                               "elements must have the same shape)", name);
    const cJSON *e;
    cJSON_ArrayForEach(e, v)
    {
        cl_serve_code c = json_check(e, depth + 1, ndim, dims, name, st);
        if (c != CL_SC_OK)
            return c;
    }
    return CL_SC_OK;
}

/* Shape of a nested JSON list value (scalars have rank 0), taken along the first elements and then
 * checked to be regular. */
static cl_serve_code json_shape(const cJSON *v, int *ndim, int64_t *dims, const char *name, cl_serve_status *st)
{
    int d = 0;
    const cJSON *p = v;
    while (cJSON_IsArray(p)) {
        if (d >= CL_SERVE_MAX_DIMS)
            return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input '%s': lists nested deeper than %d", name,
                                   CL_SERVE_MAX_DIMS);
        dims[d++] = cJSON_GetArraySize(p);
        p = p->child;
        if (!p)
            break;
    }
    *ndim = d;
    return json_check(v, 0, d, dims, name, st);
}

/* Shape of a value: nested lists, or a scalar (a number, a boolean or a {"b64": ...} object). */
static cl_serve_code json_value_shape(const cJSON *v, int *ndim, int64_t *dims, const char *name,
                                      cl_serve_status *st)
{
    *ndim = 0;
    if (!cJSON_IsArray(v))
        return CL_SC_OK;
    return json_shape(v, ndim, dims, name, st);
}

/* {"b64": ...}: TF Serving's REST form of a binary (DT_STRING) value. */
static bool is_b64(const cJSON *v)
{
    return cJSON_IsObject(v) && v->child && !v->child->next && v->child->string &&
           strcmp(v->child->string, "b64") == 0;
}

/* The first scalar of a nested list (the list itself when it is empty). */
static const cJSON *first_leaf(const cJSON *v)
{
    while (cJSON_IsArray(v) && v->child)
        v = v->child;
    return v;
}

/* Appends the scalars of a (regular) nested list to leaves[*pos ...]: each must be {"b64": "<string>"}. */
static cl_serve_code json_collect_b64(const cJSON *v, const cJSON **leaves, size_t cap, size_t *pos,
                                      const char *name, cl_serve_status *st)
{
    if (cJSON_IsArray(v)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, v)
        {
            cl_serve_code c = json_collect_b64(e, leaves, cap, pos, name, st);
            if (c != CL_SC_OK)
                return c;
        }
        return CL_SC_OK;
    }
    if (*pos >= cap)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input '%s': more values than its shape holds", name);
    if (!is_b64(v) || !cJSON_IsString(v->child))
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input '%s': values that start with {\"b64\": ...} must "
                               "all be {\"b64\": \"<base64 string>\"}", name);
    leaves[(*pos)++] = v->child;
    return CL_SC_OK;
}

/* A DT_STRING tensor of the given shape from n base64 strings (decoded strictly), within max_bytes. */
static cl_serve_code strings_from_b64(const cJSON **leaves, size_t n, const char *name, int ndim,
                                      const int64_t *dims, size_t max_bytes, cl_serve_tensor *out, cl_serve_status *st)
{
    size_t *caps = calloc(n ? n : 1, sizeof *caps);
    if (!caps)
        return cl_serve_st_set(st, CL_SC_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t i = 0; i < n; i++)
        caps[i] = cl_b64_decoded_max(strlen(leaves[i]->valuestring));
    cl_err err = {0};
    int rc = cl_serve_tensor_init_strings(out, name, ndim, dims, caps, max_bytes, &err);
    free(caps);
    if (rc != 0)
        return cl_serve_st_from_err(st, &err);
    cl_serve_string *el = cl_serve_tensor_strings(out);
    for (size_t i = 0; i < n; i++) {
        const char *b = leaves[i]->valuestring;
        if (cl_b64_decode(b, strlen(b), (uint8_t *)el[i].data, &el[i].len, &err) != 0) {
            cl_serve_tensor_clear(out);
            return n == 1 ? cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input '%s': %s", name, err.msg)
                          : cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input '%s', value %zu of %zu: %s", name,
                                            i + 1, n, err.msg);
        }
    }
    return CL_SC_OK;
}

/* Room for the b64 scalars of a string tensor of `shape`, refused beyond what max_bytes could hold. */
static cl_serve_code leaves_alloc(int ndim, const int64_t *dims, size_t max_bytes, const char *name,
                                  const cJSON ***leaves, size_t *cap, cl_serve_status *st)
{
    int64_t n = cl_serve_shape_elements(ndim, dims);
    if (n < 0 || (uint64_t)n > SIZE_MAX / sizeof(cl_serve_string) ||
        (max_bytes && (uint64_t)n * sizeof(cl_serve_string) > max_bytes))
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input '%s': too many values for the request size limit",
                               name);
    if (!(*leaves = malloc((size_t)(n ? n : 1) * sizeof **leaves)))
        return cl_serve_st_set(st, CL_SC_RESOURCE_EXHAUSTED, "out of memory");
    *cap = (size_t)n;
    return CL_SC_OK;
}

/* Writes the scalars of a (regular) nested list into t->data starting at element *pos. */
static cl_serve_code json_fill(const cJSON *v, cl_serve_tensor *t, size_t *pos, cl_serve_status *st)
{
    if (cJSON_IsArray(v)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, v)
        {
            cl_serve_code c = json_fill(e, t, pos, st);
            if (c != CL_SC_OK)
                return c;
        }
        return CL_SC_OK;
    }
    size_t i = (*pos)++;
    size_t es = cl_serve_dtype_size(t->dtype);
    if ((i + 1) * es > t->nbytes)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input '%s': more values than its shape holds", t->name);
    if (t->dtype == CL_SERVE_DT_BOOL) {
        if (!cJSON_IsBool(v))
            return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input '%s' is DT_BOOL: expected true or false",
                                   t->name);
        ((uint8_t *)t->data)[i] = cJSON_IsTrue(v) ? 1 : 0;
        return CL_SC_OK;
    }
    if (!cJSON_IsNumber(v))
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input '%s' is %s: expected a number, found %s", t->name,
                               cl_serve_dtype_name(t->dtype),
                               cJSON_IsString(v) ? "a string (binary values such as images go in {\"b64\": ...})"
                               : is_b64(v) ? "{\"b64\": ...} among numbers" : cJSON_IsObject(v) ? "an object"
                               : cJSON_IsBool(v) ? "a boolean" : "null");
    double d = v->valuedouble;
    int64_t exact = 0;
    cl_json_num_kind kind = cl_json_number(v, nums_body, nums_len, &exact);
    if (kind == CL_JSON_NAN || kind == CL_JSON_INF || kind == CL_JSON_NINF)
        d = kind == CL_JSON_NAN ? NAN : kind == CL_JSON_INF ? INFINITY : -INFINITY;
    if (t->dtype == CL_SERVE_DT_INT64 && kind == CL_JSON_INT) {
        ((int64_t *)t->data)[i] = exact; /* from the token's text: exact beyond 2^53 */
        return CL_SC_OK;
    }
    if (t->dtype == CL_SERVE_DT_INT64 && kind == CL_JSON_INT_RANGE)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input '%s' is DT_INT64: %.17g is out of its range",
                               t->name, d);
    switch (t->dtype) {
    case CL_SERVE_DT_FLOAT: ((float *)t->data)[i] = (float)d; return CL_SC_OK;
    case CL_SERVE_DT_DOUBLE: ((double *)t->data)[i] = d; return CL_SC_OK;
    default: break;
    }
    double lo = t->dtype == CL_SERVE_DT_INT32 ? -2147483648.0 : t->dtype == CL_SERVE_DT_UINT8 ? 0 : t->dtype == CL_SERVE_DT_INT8 ? -128
                                                                                     : -9223372036854775808.0;
    double hi = t->dtype == CL_SERVE_DT_INT32 ? 2147483647.0 : t->dtype == CL_SERVE_DT_UINT8 ? 255 : t->dtype == CL_SERVE_DT_INT8 ? 127
                                                                                    : 9223372036854774784.0;
    if (!(d >= lo && d <= hi) || d != floor(d))
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input '%s' is %s: %.17g is not an integer in range",
                               t->name, cl_serve_dtype_name(t->dtype), d);
    switch (t->dtype) {
    case CL_SERVE_DT_INT32: ((int32_t *)t->data)[i] = (int32_t)d; break;
    case CL_SERVE_DT_INT64: ((int64_t *)t->data)[i] = (int64_t)d; break;
    case CL_SERVE_DT_UINT8: ((uint8_t *)t->data)[i] = (uint8_t)d; break;
    case CL_SERVE_DT_INT8: ((int8_t *)t->data)[i] = (int8_t)d; break;
    default: break;
    }
    return CL_SC_OK;
}

static const cl_serve_tensor_spec *find_spec(const cl_serve_signature *sig, const char *name)
{
    for (size_t i = 0; i < sig->n_inputs; i++)
        if (strcmp(sig->inputs[i].name, name) == 0)
            return &sig->inputs[i];
    return NULL;
}

/* Columnar: one value per input. */
static cl_serve_code columnar_input(const cJSON *v, const cl_serve_tensor_spec *spec, size_t max_bytes,
                                    cl_serve_tensor *out, cl_serve_status *st)
{
    int ndim;
    int64_t dims[CL_SERVE_MAX_DIMS];
    cl_serve_code c = json_value_shape(v, &ndim, dims, spec->name, st);
    if (c != CL_SC_OK)
        return c;
    if (is_b64(first_leaf(v))) {
        const cJSON **leaves;
        size_t cap = 0, n = 0;
        if ((c = leaves_alloc(ndim, dims, max_bytes, spec->name, &leaves, &cap, st)) != CL_SC_OK)
            return c;
        c = json_collect_b64(v, leaves, cap, &n, spec->name, st);
        if (c == CL_SC_OK)
            c = strings_from_b64(leaves, n, spec->name, ndim, dims, max_bytes, out, st);
        free(leaves);
        return c;
    }
    cl_err err = {0};
    if (cl_serve_tensor_init(out, spec->name, spec->dtype, ndim, dims, max_bytes, &err) != 0)
        return cl_serve_st_from_err(st, &err);
    size_t pos = 0;
    return json_fill(v, out, &pos, st);
}

/* Row format: instances[i] is a value (single input) or an object of name -> value; the tensor of
 * each input is the stack of its per-instance values. */
static cl_serve_code row_inputs(const cJSON *instances, const cl_serve_signature *sig, size_t max_bytes,
                                cl_serve_call *c)
{
    cl_serve_status *st = &c->st;
    int64_t rows = cJSON_GetArraySize(instances);
    if (rows == 0)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "\"instances\" is an empty list");
    const cJSON *first = cJSON_GetArrayItem(instances, 0);
    bool named = cJSON_IsObject(first) && !cJSON_GetObjectItemCaseSensitive(first, "b64");
    size_t n = named ? (size_t)cJSON_GetArraySize(first) : 1;
    if (!named && sig->n_inputs != 1)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "the model has %zu inputs: each instance must be an "
                               "object naming them", sig->n_inputs);
    if (!(c->inputs = calloc(n ? n : 1, sizeof *c->inputs)))
        return cl_serve_st_set(st, CL_SC_RESOURCE_EXHAUSTED, "out of memory");
    size_t budget = max_bytes;
    for (size_t k = 0; k < n; k++) {
        const char *name = named ? cJSON_GetArrayItem(first, (int)k)->string : sig->inputs[0].name;
        const cl_serve_tensor_spec *spec = find_spec(sig, name);
        if (!spec)
            return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input tensor alias not found in signature: %s", name);
        /* shape of one row, from the first instance; every other must match */
        int ndim = 0;
        int64_t dims[CL_SERVE_MAX_DIMS];
        const cJSON *v0 = named ? cJSON_GetObjectItemCaseSensitive(first, name) : first;
        cl_serve_code code = json_value_shape(v0, &ndim, dims, name, st);
        if (code != CL_SC_OK)
            return code;
        if (ndim + 1 > CL_SERVE_MAX_DIMS)
            return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input '%s': rank above %d", name, CL_SERVE_MAX_DIMS);
        int64_t full[CL_SERVE_MAX_DIMS];
        full[0] = rows;
        for (int d = 0; d < ndim; d++)
            full[d + 1] = dims[d];
        cl_err err = {0};
        cl_serve_tensor *t = &c->inputs[c->n_inputs];
        bool str = is_b64(first_leaf(v0));
        const cJSON **leaves = NULL;
        size_t cap = 0, n_leaves = 0;
        if (str) {
            if ((code = leaves_alloc(ndim + 1, full, budget, name, &leaves, &cap, st)) != CL_SC_OK)
                return code;
        } else {
            if (cl_serve_tensor_init(t, name, spec->dtype, ndim + 1, full, budget, &err) != 0)
                return cl_serve_st_from_err(st, &err);
            c->n_inputs++;
        }
        size_t pos = 0;
        const cJSON *inst;
        cJSON_ArrayForEach(inst, instances)
        {
            const cJSON *v = inst;
            if (named) {
                if (!cJSON_IsObject(inst) || (size_t)cJSON_GetArraySize(inst) != n)
                    code = cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "every instance must be an object with the "
                                           "same %zu named inputs", n);
                else if (!(v = cJSON_GetObjectItemCaseSensitive(inst, name)))
                    code = cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "an instance lacks input '%s'", name);
            }
            int nd;
            int64_t dm[CL_SERVE_MAX_DIMS];
            if (code == CL_SC_OK)
                code = json_value_shape(v, &nd, dm, name, st);
            if (code == CL_SC_OK) {
                bool same = nd == ndim;
                for (int d = 0; same && d < nd; d++)
                    same = dm[d] == dims[d];
                if (!same)
                    code = cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input '%s': all instances must have the "
                                           "same shape", name);
            }
            if (code == CL_SC_OK)
                code = str ? json_collect_b64(v, leaves, cap, &n_leaves, name, st) : json_fill(v, t, &pos, st);
            if (code != CL_SC_OK) {
                free(leaves);
                return code;
            }
        }
        if (str) {
            code = strings_from_b64(leaves, n_leaves, name, ndim + 1, full, budget, t, st);
            free(leaves);
            if (code != CL_SC_OK)
                return code;
            c->n_inputs++;
        }
        budget = t->nbytes < budget ? budget - t->nbytes : 1;
    }
    return CL_SC_OK;
}

cl_serve_code cl_serve_json_predict_parse(const char *body, size_t len, size_t max_bytes, cl_serve_call *c)
{
    cl_serve_status *st = &c->st;
    const cl_serve_signature *sig = &c->sig.sig;
    /* NaN, Infinity, -Infinity (TF Serving takes them; cJSON does not): parsed from a copy */
    bool oom = false;
    char *specials = cl_json_specials_copy(body, len, &oom);
    if (oom)
        return cl_serve_st_set(st, CL_SC_RESOURCE_EXHAUSTED, "out of memory");
    arena_begin();
    bool has_specials = specials != NULL;
    cJSON *root = cJSON_ParseWithLength(specials ? specials : body, len);
    free(specials);
    if (!root) {
        arena_end();
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "JSON Parse error: the request body is not valid JSON");
    }
    nums_body = NULL;
    cl_serve_code code = CL_SC_OK;
    if (!cJSON_IsObject(root)) {
        code = cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "the request body must be a JSON object");
        goto out;
    }
    const cJSON *sn = cJSON_GetObjectItemCaseSensitive(root, "signature_name");
    if (sn && !cJSON_IsString(sn)) {
        code = cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "\"signature_name\" must be a string");
        goto out;
    }
    if ((code = cl_serve_sig_resolve(c, sn ? sn->valuestring : NULL)) != CL_SC_OK)
        goto out;
    /* the number tokens' text is looked at only when it can matter: specials, or DT_INT64 inputs
     * of the signature, known once it is resolved */
    bool int64_in = false;
    for (size_t i = 0; i < sig->n_inputs; i++)
        int64_in = int64_in || sig->inputs[i].dtype == CL_SERVE_DT_INT64;
    if (has_specials || int64_in) {
        cl_json_number_offsets(root, body, len);
        nums_body = body;
        nums_len = len;
    }
    const cJSON *inst = cJSON_GetObjectItemCaseSensitive(root, "instances");
    const cJSON *inp = cJSON_GetObjectItemCaseSensitive(root, "inputs");
    if ((inst != NULL) == (inp != NULL)) {
        code = cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "Missing 'inputs' or 'instances' key (exactly one of "
                               "them must be given)");
        goto out;
    }
    if (inst) {
        c->json_format = 0;
        if (!cJSON_IsArray(inst)) {
            code = cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "\"instances\" must be a list");
            goto out;
        }
        code = row_inputs(inst, sig, max_bytes, c);
        goto out;
    }
    c->json_format = 1;
    bool named = cJSON_IsObject(inp) && !cJSON_GetObjectItemCaseSensitive(inp, "b64");
    size_t n = named ? (size_t)cJSON_GetArraySize(inp) : 1;
    if (!named && sig->n_inputs != 1) {
        code = cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "the model has %zu inputs: \"inputs\" must be an object "
                               "naming them", sig->n_inputs);
        goto out;
    }
    if (!(c->inputs = calloc(n ? n : 1, sizeof *c->inputs))) {
        code = cl_serve_st_set(st, CL_SC_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    size_t budget = max_bytes;
    for (size_t k = 0; k < n; k++) {
        const cJSON *v = named ? cJSON_GetArrayItem(inp, (int)k) : inp;
        const char *name = named ? v->string : sig->inputs[0].name;
        const cl_serve_tensor_spec *spec = find_spec(sig, name);
        if (!spec) {
            code = cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input tensor alias not found in signature: %s", name);
            goto out;
        }
        if ((code = columnar_input(v, spec, budget, &c->inputs[k], st)) != CL_SC_OK) {
            cl_serve_tensor_clear(&c->inputs[k]);
            goto out;
        }
        c->n_inputs++;
        budget = c->inputs[k].nbytes < budget ? budget - c->inputs[k].nbytes : 1;
    }
out:
    nums_body = NULL;
    cJSON_Delete(root);
    arena_end();
    if (code == CL_SC_OK)
        code = cl_serve_sig_inputs_to_model(c);
    return code;
}

/* ---------------------------------------------------------------- response writing */

static void put_scalar(cl_strbuf *b, const cl_serve_tensor *t, size_t i)
{
    switch (t->dtype) {
    case CL_SERVE_DT_FLOAT:
    case CL_SERVE_DT_DOUBLE: {
        double d = t->dtype == CL_SERVE_DT_FLOAT ? ((const float *)t->data)[i] : ((const double *)t->data)[i];
        if (isnan(d)) {
            cl_strbuf_str(b, "NaN");
        } else if (isinf(d)) {
            cl_strbuf_str(b, d > 0 ? "Infinity" : "-Infinity");
        } else {
            /* the shortest form that reads back as the same value, as TF Serving writes it */
            char num[40];
            size_t n = t->dtype == CL_SERVE_DT_FLOAT ? cl_json_float(num, sizeof num, (float)d)
                                                     : cl_json_double(num, sizeof num, d);
            cl_strbuf_put(b, num, n);
        }
        break;
    }
    case CL_SERVE_DT_INT32: cl_strbuf_fmt(b, "%" PRId32, ((const int32_t *)t->data)[i]); break;
    case CL_SERVE_DT_INT64: cl_strbuf_fmt(b, "%" PRId64, ((const int64_t *)t->data)[i]); break;
    case CL_SERVE_DT_UINT8: cl_strbuf_fmt(b, "%u", ((const uint8_t *)t->data)[i]); break;
    case CL_SERVE_DT_INT8: cl_strbuf_fmt(b, "%d", ((const int8_t *)t->data)[i]); break;
    case CL_SERVE_DT_BOOL: cl_strbuf_str(b, ((const uint8_t *)t->data)[i] ? "true" : "false"); break;
    default: cl_strbuf_str(b, "null"); break;
    }
}

/* Nested lists for dims[d..ndim) starting at element *pos. */
static void put_nested(cl_strbuf *b, const cl_serve_tensor *t, int d, size_t *pos)
{
    if (d == t->ndim) {
        put_scalar(b, t, (*pos)++);
        return;
    }
    cl_strbuf_put(b, "[", 1);
    for (int64_t i = 0; i < t->dims[d]; i++) {
        if (i)
            cl_strbuf_put(b, ",", 1);
        put_nested(b, t, d + 1, pos);
    }
    cl_strbuf_put(b, "]", 1);
}

cl_serve_code cl_serve_json_predict_response(cl_serve_call *c, char **out, size_t *out_len)
{
    cl_serve_code vc = cl_serve_sig_outputs_to_view(c);
    if (vc != CL_SC_OK)
        return vc;
    cl_strbuf b = {0};
    if (c->json_format == 1) {
        cl_strbuf_str(&b, "{\"outputs\":");
        if (c->n_outputs == 1) {
            size_t pos = 0;
            put_nested(&b, &c->outputs[0], 0, &pos);
        } else {
            cl_strbuf_str(&b, "{");
            for (size_t i = 0; i < c->n_outputs; i++) {
                size_t pos = 0;
                if (i)
                    cl_strbuf_str(&b, ",");
                cl_strbuf_json_string(&b, c->outputs[i].name);
                cl_strbuf_str(&b, ":");
                put_nested(&b, &c->outputs[i], 0, &pos);
            }
            cl_strbuf_str(&b, "}");
        }
        cl_strbuf_str(&b, "}");
    } else {
        /* row format: every output must be batched along dimension 0 with the same size */
        int64_t rows = -1;
        for (size_t i = 0; i < c->n_outputs; i++) {
            const cl_serve_tensor *t = &c->outputs[i];
            if (t->ndim < 1 || (rows >= 0 && t->dims[0] != rows)) {
                free(b.p);
                return cl_serve_st_set(&c->st, CL_SC_INVALID_ARGUMENT, "the model's outputs do not share a batch "
                                       "dimension, so they cannot be returned as rows; use the columnar format "
                                       "(\"inputs\")");
            }
            rows = t->dims[0];
        }
        size_t pos[64] = {0};
        if (c->n_outputs > CL_ARRAY_LEN(pos)) {
            free(b.p);
            return cl_serve_st_set(&c->st, CL_SC_INTERNAL, "too many outputs for the row format");
        }
        cl_strbuf_str(&b, "{\"predictions\":[");
        for (int64_t r = 0; r < rows; r++) {
            if (r)
                cl_strbuf_str(&b, ",");
            if (c->n_outputs == 1) {
                put_nested(&b, &c->outputs[0], 1, &pos[0]);
                continue;
            }
            cl_strbuf_str(&b, "{");
            for (size_t i = 0; i < c->n_outputs; i++) {
                if (i)
                    cl_strbuf_str(&b, ",");
                cl_strbuf_json_string(&b, c->outputs[i].name);
                cl_strbuf_str(&b, ":");
                put_nested(&b, &c->outputs[i], 1, &pos[i]);
            }
            cl_strbuf_str(&b, "}");
        }
        cl_strbuf_str(&b, "]}");
    }
    if (!(*out = cl_strbuf_take(&b, out_len)))
        return cl_serve_st_set(&c->st, CL_SC_RESOURCE_EXHAUSTED, "out of memory writing the response");
    return CL_SC_OK;
}

static void put_tensor_infos(cl_strbuf *b, const cl_serve_tensor_spec *s, size_t n, const char *const *tensors)
{
    cl_strbuf_str(b, "{");
    for (size_t i = 0; i < n; i++) {
        if (i)
            cl_strbuf_str(b, ",");
        cl_strbuf_json_string(b, s[i].name);
        /* an input with image preprocessing is shown as TF Serving shows image-bytes models */
        static const int64_t any_batch[1] = {-1};
        int ndim = s[i].image ? 1 : s[i].ndim;
        const int64_t *dims = s[i].image ? any_batch : s[i].dims;
        cl_strbuf_str(b, ":{\"dtype\":");
        cl_strbuf_json_string(b, cl_serve_dtype_name(s[i].image ? CL_SERVE_DT_STRING : s[i].dtype));
        cl_strbuf_str(b, ",\"tensor_shape\":{\"dim\":[");
        for (int d = 0; d < ndim; d++)
            cl_strbuf_fmt(b, "%s{\"size\":\"%lld\",\"name\":\"\"}", d ? "," : "", (long long)dims[d]);
        cl_strbuf_fmt(b, "],\"unknown_rank\":%s},\"name\":", ndim < 0 ? "true" : "false");
        /* a TensorFlow model's graph tensor ("x:0") when there is one, as TF Serving shows it */
        cl_strbuf_json_string(b, s[i].tensor_name ? s[i].tensor_name : tensors ? tensors[i] : s[i].name);
        cl_strbuf_str(b, "}");
    }
    cl_strbuf_str(b, "}");
}

char *cl_serve_json_metadata(const cl_serve_model *m)
{
    cl_strbuf b = {0};
    cl_strbuf_str(&b, "{\"model_spec\":{\"name\":");
    cl_strbuf_json_string(&b, cl_serve_model_name(m));
    cl_strbuf_str(&b, ",\"signature_name\":\"\",\"version\":");
    cl_strbuf_fmt(&b, "\"%lld\"", (long long)cl_serve_model_version(m));
    cl_strbuf_str(&b, "},\"metadata\":{\"signature_def\":{\"signature_def\":{");
    for (size_t k = 0; k < cl_serve_model_sig_count(m); k++) {
        cl_serve_sigdef d;
        cl_serve_model_sig_at(m, k, &d);
        const cl_serve_signature *sig = &d.sig;
        if (k)
            cl_strbuf_str(&b, ",");
        cl_strbuf_json_string(&b, sig->name);
        cl_strbuf_str(&b, ":{\"inputs\":");
        put_tensor_infos(&b, sig->inputs, sig->n_inputs, d.input_tensor);
        cl_strbuf_str(&b, ",\"outputs\":");
        put_tensor_infos(&b, sig->outputs, sig->n_outputs, d.output_tensor);
        cl_strbuf_str(&b, ",\"method_name\":");
        cl_strbuf_json_string(&b, sig->method_name ? sig->method_name : CL_SERVE_METHOD_PREDICT);
        /* SignatureDef.defaults: no model cloister serves has any; TF Serving prints the empty map */
        cl_strbuf_str(&b, ",\"defaults\":{}}");
    }
    cl_strbuf_str(&b, "}}}}");
    return cl_strbuf_take(&b, NULL);
}

char *cl_serve_json_status(const cl_serve_version_status *versions, size_t n)
{
    cl_strbuf b = {0};
    cl_strbuf_str(&b, "{\"model_version_status\":[");
    for (size_t i = 0; i < n; i++) {
        const cl_serve_version_status *v = &versions[i];
        cl_strbuf_fmt(&b, "%s{\"version\":\"%lld\",\"state\":\"%s\",\"status\":{\"error_code\":\"%s\","
                      "\"error_message\":", i ? "," : "", (long long)v->version, v->available ? "AVAILABLE" : "LOADING",
                      cl_serve_code_name(v->code));
        cl_strbuf_json_string(&b, v->message);
        cl_strbuf_str(&b, "}}");
    }
    cl_strbuf_str(&b, "]}");
    return cl_strbuf_take(&b, NULL);
}

char *cl_serve_json_error(const char *msg)
{
    cl_strbuf b = {0};
    cl_strbuf_str(&b, "{\"error\":");
    cl_strbuf_json_string(&b, msg);
    cl_strbuf_str(&b, "}");
    return cl_strbuf_take(&b, NULL);
}
