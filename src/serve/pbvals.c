/* pbvals.c — the values of a request TensorProto as TensorFlow reads them (Tensor::FromProto), for
 * pbconv.c: tensor_content must hold exactly the shape's bytes; a typed *_val field with as many
 * values as elements is taken as is, with fewer values the last one is repeated to fill the shape (so
 * one value fills it all), with none the tensor is zeros. More values than elements are refused
 * (TensorFlow ignores the rest; a deliberate difference, docs/serve.md). Request dtypes beyond the
 * model's own: DT_HALF (half_val bits or 2-byte tensor_content) becomes DT_FLOAT or DT_DOUBLE when the
 * model input takes that, and DT_INT16, DT_UINT16 (int_val), DT_UINT32 (uint32_val) and DT_UINT64
 * (uint64_val) become the model input's integer dtype when every value fits in both. Thread-safe (no
 * shared state). */
#include "serve_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensorflow/core/framework/tensor.pb-c.h"

/* TensorFlow's numbers of the request dtypes accepted here beyond cl_serve_dtype. */
enum { DT_INT16 = 5, DT_UINT16 = 17, DT_HALF = 19, DT_UINT32 = 22, DT_UINT64 = 23 };

size_t cl_serve_pb_wire_dtype_size(int dt)
{
    switch (dt) {
    case DT_INT16: case DT_UINT16: case DT_HALF: return 2;
    case DT_UINT32: return 4;
    case DT_UINT64: return 8;
    default: return cl_serve_dtype_size((cl_serve_dtype)dt);
    }
}

const char *cl_serve_pb_wire_dtype_name(int dt)
{
    switch (dt) {
    case DT_INT16: return "DT_INT16";
    case DT_UINT16: return "DT_UINT16";
    case DT_HALF: return "DT_HALF";
    case DT_UINT32: return "DT_UINT32";
    case DT_UINT64: return "DT_UINT64";
    default: return cl_serve_dtype_name((cl_serve_dtype)dt);
    }
}

float cl_serve_half_to_float(uint16_t h)
{
    int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    float v;
    if (exp == 0)
        v = ldexpf((float)mant, -24); /* zero and subnormals */
    else if (exp == 31)
        v = mant ? NAN : INFINITY;
    else
        v = ldexpf((float)(mant | 0x400), exp - 25);
    return sign ? -v : v;
}

/* The typed field of the request dtype: its length and name. */
static size_t field_len(const Tensorflow__TensorProto *tp, int dt, const char **field)
{
    switch (dt) {
    case CL_SERVE_DT_FLOAT: *field = "float_val"; return tp->n_float_val;
    case CL_SERVE_DT_DOUBLE: *field = "double_val"; return tp->n_double_val;
    case CL_SERVE_DT_INT32: case CL_SERVE_DT_UINT8: case CL_SERVE_DT_INT8: case DT_INT16: case DT_UINT16:
        *field = "int_val";
        return tp->n_int_val;
    case CL_SERVE_DT_INT64: *field = "int64_val"; return tp->n_int64_val;
    case CL_SERVE_DT_BOOL: *field = "bool_val"; return tp->n_bool_val;
    case DT_HALF: *field = "half_val"; return tp->n_half_val;
    case DT_UINT32: *field = "uint32_val"; return tp->n_uint32_val;
    case DT_UINT64: *field = "uint64_val"; return tp->n_uint64_val;
    default: *field = "?"; return 0;
    }
}

static bool is_int(int dt)
{
    return dt == CL_SERVE_DT_INT32 || dt == CL_SERVE_DT_INT64 || dt == CL_SERVE_DT_UINT8 || dt == CL_SERVE_DT_INT8 ||
           dt == DT_INT16 || dt == DT_UINT16 || dt == DT_UINT32 || dt == DT_UINT64;
}

/* The range of an integer dtype, as [lo, hi] in int64 with hi_u for uint64's top. */
static void int_range(int dt, int64_t *lo, uint64_t *hi)
{
    switch (dt) {
    case CL_SERVE_DT_INT32: *lo = INT32_MIN, *hi = INT32_MAX; break;
    case CL_SERVE_DT_UINT8: *lo = 0, *hi = 255; break;
    case CL_SERVE_DT_INT8: *lo = -128, *hi = 127; break;
    case DT_INT16: *lo = INT16_MIN, *hi = INT16_MAX; break;
    case DT_UINT16: *lo = 0, *hi = UINT16_MAX; break;
    case DT_UINT32: *lo = 0, *hi = UINT32_MAX; break;
    case DT_UINT64: *lo = 0, *hi = UINT64_MAX; break;
    default: *lo = INT64_MIN, *hi = INT64_MAX; break;
    }
}

/* Element k of the request: from tensor_content (raw) or the typed field. Integers as (neg, magnitude
 * as uint64 two's complement in v), floats in *f. */
static void read_int(const Tensorflow__TensorProto *tp, int dt, const uint8_t *raw, size_t k, int64_t *s, uint64_t *u,
                     bool *unsigned_big)
{
    *unsigned_big = false;
    int64_t v = 0;
    if (raw) {
        switch (dt) {
        case CL_SERVE_DT_INT32: { int32_t x; memcpy(&x, raw + 4 * k, 4); v = x; break; }
        case CL_SERVE_DT_INT64: memcpy(&v, raw + 8 * k, 8); break;
        case CL_SERVE_DT_UINT8: v = raw[k]; break;
        case CL_SERVE_DT_INT8: v = (int64_t)(raw[k] ^ 0x80) - 0x80; break; /* two's complement */
        case DT_INT16: { int16_t x; memcpy(&x, raw + 2 * k, 2); v = x; break; }
        case DT_UINT16: { uint16_t x; memcpy(&x, raw + 2 * k, 2); v = x; break; }
        case DT_UINT32: { uint32_t x; memcpy(&x, raw + 4 * k, 4); v = x; break; }
        case DT_UINT64: { uint64_t x; memcpy(&x, raw + 8 * k, 8); *u = x; *unsigned_big = x > INT64_MAX; v = (int64_t)(x & INT64_MAX); break; }
        default: break;
        }
    } else {
        switch (dt) {
        case CL_SERVE_DT_INT64: v = tp->int64_val[k]; break;
        case DT_UINT32: v = tp->uint32_val[k]; break;
        case DT_UINT64: *u = tp->uint64_val[k]; *unsigned_big = *u > INT64_MAX; v = (int64_t)(*u & INT64_MAX); break;
        default: v = tp->int_val[k]; break;
        }
    }
    *s = v;
    if (!*unsigned_big)
        *u = (uint64_t)v;
}

static double read_float(const Tensorflow__TensorProto *tp, int dt, const uint8_t *raw, size_t k)
{
    if (raw) {
        if (dt == CL_SERVE_DT_FLOAT) { float x; memcpy(&x, raw + 4 * k, 4); return x; }
        if (dt == CL_SERVE_DT_DOUBLE) { double x; memcpy(&x, raw + 8 * k, 8); return x; }
        uint16_t h;
        memcpy(&h, raw + 2 * k, 2);
        return cl_serve_half_to_float(h);
    }
    if (dt == CL_SERVE_DT_FLOAT)
        return tp->float_val[k];
    if (dt == CL_SERVE_DT_DOUBLE)
        return tp->double_val[k];
    return cl_serve_half_to_float((uint16_t)tp->half_val[k]);
}

/* The dtype the tensor is made of: the request's own, or the model input's when the request's is one
 * of the extra wire dtypes it can be converted to. */
static cl_serve_code target_dtype(int rd, const cl_serve_tensor_spec *spec, size_t arg, const char *name,
                                  cl_serve_dtype *td, cl_serve_status *st)
{
    if (cl_serve_dtype_size((cl_serve_dtype)rd)) {
        *td = (cl_serve_dtype)rd;
        return CL_SC_OK;
    }
    bool ok = false;
    if (spec) {
        if (rd == DT_HALF)
            ok = spec->dtype == CL_SERVE_DT_FLOAT || spec->dtype == CL_SERVE_DT_DOUBLE;
        else
            ok = is_int(rd) && is_int(spec->dtype);
    }
    if (!ok && spec)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "Expects arg[%zu] ('%s') to be %s but %s is provided", arg,
                               name, cl_serve_dtype_name(spec->dtype), cl_serve_pb_wire_dtype_name(rd));
    if (!ok)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input tensor alias not found in signature: %s", name);
    *td = spec->dtype;
    return CL_SC_OK;
}

cl_serve_code cl_serve_pb_values(Tensorflow__TensorProto *tp, const char *name, const cl_serve_tensor_spec *spec,
                                 size_t arg, int ndim, const int64_t *dims, size_t max_bytes, cl_serve_tensor *out,
                                 cl_serve_status *st)
{
    int rd = (int)tp->dtype;
    cl_serve_dtype td = CL_SERVE_DT_INVALID;
    cl_serve_code code = target_dtype(rd, spec, arg, name, &td, st);
    if (code != CL_SC_OK)
        return code;
    cl_err err = {0};
    size_t need;
    if (cl_serve_tensor_bytes(name, td, ndim, dims, max_bytes, &need, &err) != 0)
        return cl_serve_st_from_err(st, &err);
    size_t n = need / cl_serve_dtype_size(td);
    size_t rsize = cl_serve_pb_wire_dtype_size(rd);
    const uint8_t *raw = NULL;
    size_t have = 0;
    const char *field = "tensor_content";
    if (tp->tensor_content.len) {
        if (n > SIZE_MAX / rsize || tp->tensor_content.len != n * rsize)
            return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input '%s': tensor_content has %zu bytes, the shape "
                                   "and dtype need %zu", name, tp->tensor_content.len, n * rsize);
        if ((int)td == rd) {
            /* the model's own dtype: the buffer is taken over (protobuf-c malloc()ed it; the message is
             * freed without it) */
            void *data = tp->tensor_content.data;
            if (cl_serve_tensor_adopt(out, name, td, ndim, dims, max_bytes, &data, need, &err) != 0)
                return cl_serve_st_from_err(st, &err);
            tp->tensor_content.data = NULL;
            tp->tensor_content.len = 0;
            if (td != CL_SERVE_DT_UINT8 && td != CL_SERVE_DT_INT8 && td != CL_SERVE_DT_BOOL)
                return CL_SC_OK;
            if (td == CL_SERVE_DT_BOOL) /* TF's bool is one byte, 0 or 1 */
                for (size_t i = 0; i < n; i++)
                    ((uint8_t *)out->data)[i] = ((uint8_t *)out->data)[i] != 0;
            return CL_SC_OK;
        }
        raw = tp->tensor_content.data;
        have = n;
    } else {
        have = field_len(tp, rd, &field);
        if (have > n)
            return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input '%s': %zu values in %s for a shape of %zu "
                                   "elements (TensorFlow ignores the values beyond the shape; cloister refuses them)",
                                   name, have, field, n);
    }
    if (cl_serve_tensor_init(out, name, td, ndim, dims, max_bytes, &err) != 0)
        return cl_serve_st_from_err(st, &err);
    if (have == 0)
        return CL_SC_OK; /* no values: zeros, as TensorFlow makes them */
    int64_t rlo, tlo;
    uint64_t rhi, thi;
    int_range(rd, &rlo, &rhi);
    int_range(td, &tlo, &thi);
    for (size_t i = 0; i < n; i++) {
        size_t k = i < have ? i : have - 1; /* fewer values: the last one repeated */
        if (i >= have && i > 0) {
            /* the same value as the element before: copy it */
            size_t es = cl_serve_dtype_size(td);
            memcpy((uint8_t *)out->data + i * es, (uint8_t *)out->data + (i - 1) * es, es);
            continue;
        }
        switch (td) {
        case CL_SERVE_DT_FLOAT: ((float *)out->data)[i] = (float)read_float(tp, rd, raw, k); break;
        case CL_SERVE_DT_DOUBLE: ((double *)out->data)[i] = read_float(tp, rd, raw, k); break;
        case CL_SERVE_DT_BOOL: ((uint8_t *)out->data)[i] = raw ? raw[k] != 0 : tp->bool_val[k] != 0; break;
        default: {
            int64_t s;
            uint64_t u;
            bool big;
            read_int(tp, rd, raw, k, &s, &u, &big);
            /* within the request dtype (int_val carries int32 for DT_INT16 ...) and the model's */
            bool fits = big ? (rhi == UINT64_MAX && thi == UINT64_MAX)
                            : (s >= rlo && (s < 0 || (uint64_t)s <= rhi) && s >= tlo && (s < 0 || (uint64_t)s <= thi));
            if (!fits) {
                cl_serve_tensor_clear(out);
                if (big)
                    return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input '%s': value %llu out of range for %s",
                                           name, (unsigned long long)u, cl_serve_dtype_name(td));
                return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input '%s': value %lld out of range for %s", name,
                                       (long long)s,
                                       s >= rlo && (s < 0 || (uint64_t)s <= rhi) ? cl_serve_dtype_name(td)
                                                                                 : cl_serve_pb_wire_dtype_name(rd));
            }
            switch (td) {
            case CL_SERVE_DT_INT32: ((int32_t *)out->data)[i] = (int32_t)s; break;
            case CL_SERVE_DT_INT64: ((int64_t *)out->data)[i] = s; break;
            case CL_SERVE_DT_UINT8: ((uint8_t *)out->data)[i] = (uint8_t)s; break;
            case CL_SERVE_DT_INT8: ((int8_t *)out->data)[i] = (int8_t)s; break;
            default: break;
            }
        }
        }
    }
    return CL_SC_OK;
}
