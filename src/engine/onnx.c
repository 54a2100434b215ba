/* engine/onnx.c — the ONNX loader: ModelProto bytes (protobuf-c code generated at build time from
 * Debian's onnx.proto) into the engine's graph IR (internal.h). Everything is validated before it
 * is allocated or used: nesting depth of the protobuf, opsets, dims, element counts, initializer
 * byte counts against their shape, attribute types; external data is refused. Unsupported
 * operators are reported here, at load time, naming the node.
 *
 * Initializers are not copied by protobuf-c: the model is re-encoded without them (a small copy in
 * secure memory), each initializer is unpacked from its own bytes without its raw_data, and the
 * constant's data then points into the caller's buffer (eng_tensor.borrowed, see internal.h) until
 * konst.c copies what must stay into secure memory at the end of the load (the weights a convolution
 * reordered need no plain copy at all). The weights are thus copied once, not three times.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx.pb-c.h"

#include "engine/internal.h"
#include "engine/pbwire.h"

#define MAX_PB_DEPTH 32

/* ---------------------------------------------------------------- protobuf nesting pre-check */

/* The wire format of [buf, buf+len) as message d, at most MAX_PB_DEPTH deep (eng_pb_walk: protobuf-c
 * itself would recurse without a limit), in the ONNX loader's words. */
static int pb_check(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len, cl_err *err)
{
    unsigned wt = 0;
    switch (eng_pb_walk(d, buf, len, MAX_PB_DEPTH, &wt)) {
    case ENG_PB_OK: return 0;
    case ENG_PB_TOO_DEEP:
        return cl_err_set(err, CL_E_FORMAT, "ONNX model nests messages more than %d levels deep", MAX_PB_DEPTH);
    case ENG_PB_BAD_VARINT: return cl_err_set(err, CL_E_FORMAT, "not an ONNX model (malformed protobuf varint)");
    case ENG_PB_TRUNCATED: return cl_err_set(err, CL_E_FORMAT, "not an ONNX model (truncated protobuf)");
    case ENG_PB_TRUNCATED_FIELD:
        return cl_err_set(err, CL_E_FORMAT, "not an ONNX model (truncated protobuf field)");
    case ENG_PB_BAD_WIRE_TYPE:
        return cl_err_set(err, CL_E_FORMAT, "not an ONNX model (protobuf wire type %u)", wt);
    }
    return cl_err_set(err, CL_E_FORMAT, "not an ONNX model (malformed protobuf)");
}

/* ---------------------------------------------------------------- initializers out of the model
 * The model's wire format re-encoded without GraphProto.initializer (field 5 of ModelProto.graph,
 * field 7), whose spans are collected, and each TensorProto without its raw_data (field 9), whose span
 * is kept: protobuf-c then never copies the weights. pb_check has validated the whole buffer first, so
 * every varint and length here is well-formed and in bounds (checked again all the same). */
typedef struct pb_span {
    const uint8_t *p;
    size_t len;
} pb_span;

typedef struct span_list {
    pb_span *v;
    size_t n, cap;
} span_list;

static size_t put_varint(uint8_t *o, uint64_t v)
{
    size_t n = 0;
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        if (o)
            o[n] = b | (v ? 0x80 : 0);
        n++;
    } while (v);
    return n;
}

/* One field at *p: its number, wire type, value span (wire type 2) and end; -1 if malformed. */
static int next_field(const uint8_t **p, const uint8_t *end, uint64_t *field, unsigned *wt, pb_span *val)
{
    return eng_pb_field(p, end, field, wt, &val->p, &val->len);
}

/* Copies the fields of message [p, end) to out (NULL: measures only) except the length-delimited
 * ones numbered `skip`, whose value spans go to `skipped` (when given; for a single field, `last`
 * keeps only the last occurrence, as protobuf does). The copy's length, or -1 if malformed. */
static ptrdiff_t strip_fields(const uint8_t *p, const uint8_t *end, uint64_t skip, uint8_t *out, span_list *skipped,
                              pb_span *last, bool *found)
{
    size_t n = 0;
    while (p < end) {
        const uint8_t *start = p;
        uint64_t field;
        unsigned wt;
        pb_span val = {0};
        if (next_field(&p, end, &field, &wt, &val) != 0)
            return -1;
        if (field == skip && wt == 2) {
            if (last) {
                *last = val;
                *found = true;
            }
            if (skipped) {
                if (skipped->n == skipped->cap) {
                    size_t cap = skipped->cap ? 2 * skipped->cap : 64;
                    pb_span *nv = realloc(skipped->v, cap * sizeof *nv);
                    if (!nv)
                        return -2;
                    skipped->v = nv;
                    skipped->cap = cap;
                }
                skipped->v[skipped->n++] = val;
            }
            continue;
        }
        if (out)
            memcpy(out + n, start, (size_t)(p - start));
        n += (size_t)(p - start);
    }
    return (ptrdiff_t)n;
}

/* ModelProto [buf, buf+len) without its graphs' initializers, into out (NULL: measures, and collects
 * the initializers' spans into inits). The copy's length, -1 if malformed, -2 out of memory. */
static ptrdiff_t strip_model(const uint8_t *buf, size_t len, uint8_t *out, span_list *inits)
{
    const uint8_t *p = buf, *end = buf + len;
    size_t n = 0;
    while (p < end) {
        const uint8_t *start = p;
        uint64_t field;
        unsigned wt;
        pb_span val = {0};
        if (next_field(&p, end, &field, &wt, &val) != 0)
            return -1;
        if (field == 7 && wt == 2) { /* ModelProto.graph */
            ptrdiff_t g = strip_fields(val.p, val.p + val.len, 5, NULL, out ? NULL : inits, NULL, NULL);
            if (g < 0)
                return g;
            n += put_varint(out ? out + n : NULL, (7 << 3) | 2);
            n += put_varint(out ? out + n : NULL, (uint64_t)g);
            if (out && strip_fields(val.p, val.p + val.len, 5, out + n, NULL, NULL, NULL) != g)
                return -1;
            n += (size_t)g;
            continue;
        }
        if (out)
            memcpy(out + n, start, (size_t)(p - start));
        n += (size_t)(p - start);
    }
    return (ptrdiff_t)n;
}

/* ---------------------------------------------------------------- tensors */

/* t from tp; with `borrow`, raw_data is not copied: t->data points at it (t->borrowed, not owned). */
static int tensor_from_proto(const Onnx__TensorProto *tp, eng_tensor *t, const char *what, bool borrow, cl_err *err)
{
    memset(t, 0, sizeof *t);
    const char *nm = tp->name && tp->name[0] ? tp->name : "(unnamed)";
    if (tp->has_data_location && tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL)
        return cl_err_set(err, CL_E_UNSUPPORTED,
                          "%s '%s' uses external data files; cloister only loads self-contained models "
                          "(re-save the model with all tensors inline)", what, nm);
    if (tp->segment)
        return cl_err_set(err, CL_E_UNSUPPORTED, "%s '%s' is segmented; not supported", what, nm);
    cl_engine_dtype dt = (cl_engine_dtype)tp->data_type;
    if (!eng_dtype_supported(dt))
        return cl_err_set(err, CL_E_UNSUPPORTED, "%s '%s' has data type %d (%s), which is not supported", what,
                          nm, tp->data_type, cl_engine_dtype_name(dt));
    if (tp->n_dims > CL_ENGINE_MAX_RANK)
        return cl_err_set(err, CL_E_UNSUPPORTED, "%s '%s' has rank %zu (at most %d supported)", what, nm,
                          tp->n_dims, CL_ENGINE_MAX_RANK);
    t->dtype = dt;
    t->rank = (int)tp->n_dims;
    for (size_t i = 0; i < tp->n_dims; i++) {
        if (tp->dims[i] < 0)
            return cl_err_set(err, CL_E_FORMAT, "%s '%s' has negative dimension %lld", what, nm,
                              (long long)tp->dims[i]);
        t->dims[i] = tp->dims[i];
    }
    int64_t n = eng_dims_numel(t->dims, t->rank);
    if (n < 0)
        return cl_err_set(err, CL_E_FORMAT, "%s '%s' is too large (more than %lld elements)", what, nm,
                          (long long)CL_ENGINE_MAX_TENSOR_ELEMS);
    size_t es = cl_engine_dtype_size(dt);
    size_t nb = (size_t)n * es;
    /* The data must be present in the file: check counts before allocating. */
    size_t have;
    const char *field;
    if (tp->has_raw_data) {
        have = tp->raw_data.len;
        field = "raw_data bytes";
        if (have != nb)
            return cl_err_set(err, CL_E_FORMAT, "%s '%s': shape %s needs %zu raw_data bytes, found %zu", what,
                              nm, eng_dims_str(t->dims, t->rank, (char[96]){0}, 96), nb, have);
    } else {
        switch (dt) {
        case CL_ENGINE_DT_FLOAT: have = tp->n_float_data; field = "float_data"; break;
        case CL_ENGINE_DT_DOUBLE: have = tp->n_double_data; field = "double_data"; break;
        case CL_ENGINE_DT_INT64: have = tp->n_int64_data; field = "int64_data"; break;
        case CL_ENGINE_DT_UINT32: case CL_ENGINE_DT_UINT64: have = tp->n_uint64_data; field = "uint64_data"; break;
        default: have = tp->n_int32_data; field = "int32_data"; break;
        }
        if (have != (size_t)n)
            return cl_err_set(err, CL_E_FORMAT, "%s '%s': shape %s needs %lld values in %s, found %zu", what, nm,
                              eng_dims_str(t->dims, t->rank, (char[96]){0}, 96), (long long)n, field, have);
    }
    if (borrow && tp->has_raw_data && nb) {
        t->nbytes = nb;
        t->data = (void *)tp->raw_data.data;
        t->borrowed = true;
        return 0;
    }
    if (eng_tensor_alloc_const(t, err) != 0)
        return -1;
    if (tp->has_raw_data) {
        if (nb)
            memcpy(t->data, tp->raw_data.data, nb);
        return 0;
    }
    for (int64_t i = 0; i < n; i++) {
        switch (dt) {
        case CL_ENGINE_DT_FLOAT: ((float *)t->data)[i] = tp->float_data[i]; break;
        case CL_ENGINE_DT_DOUBLE: ((double *)t->data)[i] = tp->double_data[i]; break;
        case CL_ENGINE_DT_INT64: ((int64_t *)t->data)[i] = tp->int64_data[i]; break;
        case CL_ENGINE_DT_UINT64: ((uint64_t *)t->data)[i] = tp->uint64_data[i]; break;
        case CL_ENGINE_DT_UINT32: ((uint32_t *)t->data)[i] = (uint32_t)tp->uint64_data[i]; break;
        case CL_ENGINE_DT_INT32: ((int32_t *)t->data)[i] = tp->int32_data[i]; break;
        case CL_ENGINE_DT_INT16: ((int16_t *)t->data)[i] = (int16_t)tp->int32_data[i]; break;
        case CL_ENGINE_DT_UINT16: ((uint16_t *)t->data)[i] = (uint16_t)tp->int32_data[i]; break;
        case CL_ENGINE_DT_INT8: ((int8_t *)t->data)[i] = (int8_t)tp->int32_data[i]; break;
        case CL_ENGINE_DT_UINT8: ((uint8_t *)t->data)[i] = (uint8_t)tp->int32_data[i]; break;
        case CL_ENGINE_DT_BOOL: ((uint8_t *)t->data)[i] = tp->int32_data[i] != 0; break;
        default: break;
        }
    }
    return 0;
}

int eng_onnx_tensor_parse(const uint8_t *buf, size_t len, eng_tensor *out, char **name, cl_err *err)
{
    if (pb_check(&onnx__tensor_proto__descriptor, buf, len, err) != 0)
        return -1;
    Onnx__TensorProto *tp = onnx__tensor_proto__unpack(NULL, len, buf);
    if (!tp)
        return cl_err_set(err, CL_E_FORMAT, "not a TensorProto");
    int rc = tensor_from_proto(tp, out, "tensor", false, err);
    if (rc == 0 && name)
        *name = strdup(tp->name ? tp->name : "");
    onnx__tensor_proto__free_unpacked(tp, NULL);
    return rc;
}

/* ---------------------------------------------------------------- signature */

static int io_info_from_proto(const Onnx__ValueInfoProto *vi, cl_engine_io_info *info, cl_err *err)
{
    info->name = strdup(vi->name);
    if (!info->name)
        return cl_err_nomem(err);
    info->rank = -1;
    const Onnx__TypeProto *tp = vi->type;
    if (!tp)
        return cl_err_set(err, CL_E_FORMAT, "graph input/output '%s' has no type", vi->name);
    if (tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type)
        return cl_err_set(err, CL_E_UNSUPPORTED,
                          "graph input/output '%s' is not a tensor (sequences, maps, optionals and sparse "
                          "tensors are not supported)", vi->name);
    info->dtype = (cl_engine_dtype)tp->tensor_type->elem_type;
    if (!eng_dtype_supported(info->dtype))
        return cl_err_set(err, CL_E_UNSUPPORTED, "graph input/output '%s' has data type %d (%s), not supported",
                          vi->name, tp->tensor_type->elem_type, cl_engine_dtype_name(info->dtype));
    const Onnx__TensorShapeProto *sh = tp->tensor_type->shape;
    if (!sh)
        return 0;
    if (sh->n_dim > CL_ENGINE_MAX_RANK)
        return cl_err_set(err, CL_E_UNSUPPORTED, "graph input/output '%s' has rank %zu (at most %d supported)",
                          vi->name, sh->n_dim, CL_ENGINE_MAX_RANK);
    info->rank = (int)sh->n_dim;
    for (size_t i = 0; i < sh->n_dim; i++) {
        const Onnx__TensorShapeProto__Dimension *d = sh->dim[i];
        if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE) {
            if (d->dim_value < 0 || d->dim_value > CL_ENGINE_MAX_TENSOR_ELEMS)
                return cl_err_set(err, CL_E_FORMAT, "graph input/output '%s' has invalid dimension %lld",
                                  vi->name, (long long)d->dim_value);
            info->dims[i] = d->dim_value;
        } else {
            info->dims[i] = -1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- attributes */

static int attr_from_proto(const Onnx__AttributeProto *ap, eng_attr *a, const eng_node *n, cl_err *err)
{
    a->name = strdup(ap->name ? ap->name : "");
    if (!a->name)
        return cl_err_nomem(err);
    if (ap->ref_attr_name && ap->ref_attr_name[0])
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "attribute '%s' refers to a function attribute", a->name);
    switch (ap->type) {
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT: a->type = ENG_ATTR_FLOAT; a->f = ap->f; break;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT: a->type = ENG_ATTR_INT; a->i = ap->i; break;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING:
        a->type = ENG_ATTR_STRING;
        a->s = ap->s.len ? strndup((const char *)ap->s.data, ap->s.len) : strdup("");
        if (!a->s)
            return cl_err_nomem(err);
        break;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS:
        a->type = ENG_ATTR_FLOATS;
        a->n_floats = ap->n_floats;
        if (ap->n_floats) {
            a->floats = malloc(ap->n_floats * sizeof(float));
            if (!a->floats)
                return cl_err_nomem(err);
            memcpy(a->floats, ap->floats, ap->n_floats * sizeof(float));
        }
        break;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS:
        a->type = ENG_ATTR_INTS;
        a->n_ints = ap->n_ints;
        if (ap->n_ints) {
            a->ints = malloc(ap->n_ints * sizeof(int64_t));
            if (!a->ints)
                return cl_err_nomem(err);
            memcpy(a->ints, ap->ints, ap->n_ints * sizeof(int64_t));
        }
        break;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR:
        a->type = ENG_ATTR_TENSOR;
        if (!ap->t)
            return eng_node_err(err, CL_E_FORMAT, n, "tensor attribute '%s' has no tensor", a->name);
        a->t = calloc(1, sizeof *a->t);
        if (!a->t)
            return cl_err_nomem(err);
        if (tensor_from_proto(ap->t, a->t, "attribute tensor", false, err) != 0)
            return cl_err_prefix(err, "node '%s' (%s)", n->name, n->op_type);
        break;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH: a->type = ENG_ATTR_GRAPH; break;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS: a->type = ENG_ATTR_STRINGS; break;
    default: a->type = ENG_ATTR_OTHER; break;
    }
    return 0;
}

/* ---------------------------------------------------------------- model */

/* Initializer i from its own bytes (without raw_data: see strip_model), unpacked in the arena. */
static Onnx__TensorProto *unpack_initializer(const pb_span *sp, ProtobufCAllocator *alloc, size_t i, cl_err *err)
{
    pb_span raw = {0};
    bool has_raw = false;
    ptrdiff_t n = strip_fields(sp->p, sp->p + sp->len, 9, NULL, NULL, &raw, &has_raw);
    if (n < 0) {
        cl_err_set(err, CL_E_FORMAT, "initializer #%zu is malformed", i);
        return NULL;
    }
    static uint8_t empty[1];
    uint8_t *tmp = n ? alloc->alloc(alloc->allocator_data, (size_t)n) : empty;
    if (!tmp) {
        cl_err_set(err, CL_E_NOMEM, "out of memory unpacking initializer #%zu", i);
        return NULL;
    }
    if (n)
        strip_fields(sp->p, sp->p + sp->len, 9, tmp, NULL, NULL, NULL);
    Onnx__TensorProto *tp = onnx__tensor_proto__unpack(alloc, (size_t)n, tmp);
    if (!tp) {
        cl_err_set(err, CL_E_FORMAT, "initializer #%zu is not a TensorProto", i);
        return NULL;
    }
    if (has_raw) {
        tp->has_raw_data = 1;
        tp->raw_data.len = raw.len;
        tp->raw_data.data = (uint8_t *)raw.p;
    }
    return tp;
}

static int parse_graph(cl_engine_model *m, const Onnx__GraphProto *g, const span_list *inits,
                       ProtobufCAllocator *alloc, cl_err *err)
{
    if (g->n_node > CL_ENGINE_MAX_NODES)
        return cl_err_set(err, CL_E_FORMAT, "graph has %zu nodes (at most %d supported)", g->n_node,
                          CL_ENGINE_MAX_NODES);
    if (g->n_sparse_initializer)
        return cl_err_set(err, CL_E_UNSUPPORTED, "sparse initializers are not supported");
    /* initializers: from their spans in the caller's buffer (g has none left) */
    for (size_t i = 0; i < inits->n; i++) {
        const Onnx__TensorProto *tp = unpack_initializer(&inits->v[i], alloc, i, err);
        if (!tp)
            return -1;
        if (!tp->name || !tp->name[0])
            return cl_err_set(err, CL_E_FORMAT, "initializer #%zu has no name", i);
        if (eng_value_find(m, tp->name) >= 0)
            return cl_err_set(err, CL_E_FORMAT, "initializer '%s' is defined twice", tp->name);
        int v = eng_value_get(m, tp->name, err);
        if (v < 0)
            return -1;
        eng_tensor *t = calloc(1, sizeof *t);
        if (!t)
            return cl_err_nomem(err);
        m->values[v].konst = t;
        if (tensor_from_proto(tp, t, "initializer", true, err) != 0)
            return -1;
    }
    /* graph inputs (initializers may also be listed as inputs: they are then constants with an
     * overridable default, which we treat as constants) */
    m->in_info = calloc(g->n_input ? g->n_input : 1, sizeof *m->in_info);
    m->in_val = calloc(g->n_input ? g->n_input : 1, sizeof *m->in_val);
    m->out_info = calloc(g->n_output ? g->n_output : 1, sizeof *m->out_info);
    m->out_val = calloc(g->n_output ? g->n_output : 1, sizeof *m->out_val);
    if (!m->in_info || !m->in_val || !m->out_info || !m->out_val)
        return cl_err_nomem(err);
    for (size_t i = 0; i < g->n_input; i++) {
        const Onnx__ValueInfoProto *vi = g->input[i];
        if (!vi->name || !vi->name[0])
            return cl_err_set(err, CL_E_FORMAT, "graph input #%zu has no name", i);
        int v = eng_value_find(m, vi->name);
        if (v >= 0 && m->values[v].konst)
            continue;
        if (v >= 0)
            return cl_err_set(err, CL_E_FORMAT, "graph input '%s' is listed twice", vi->name);
        v = eng_value_get(m, vi->name, err);
        if (v < 0)
            return -1;
        size_t k = m->n_inputs++;
        m->in_val[k] = v;
        m->values[v].graph_input = (int)k;
        if (io_info_from_proto(vi, &m->in_info[k], err) != 0)
            return -1;
    }
    /* nodes */
    m->nodes = calloc(g->n_node ? g->n_node : 1, sizeof *m->nodes);
    if (!m->nodes)
        return cl_err_nomem(err);
    for (size_t i = 0; i < g->n_node; i++) {
        const Onnx__NodeProto *np = g->node[i];
        eng_node *n = &m->nodes[m->n_nodes++];
        n->sum_in = -1;
        char tmp[32];
        snprintf(tmp, sizeof tmp, "#%zu", i);
        n->name = strdup(np->name && np->name[0] ? np->name : tmp);
        n->op_type = strdup(np->op_type ? np->op_type : "");
        if (!n->name || !n->op_type)
            return cl_err_nomem(err);
        if (np->domain && np->domain[0] && strcmp(np->domain, "ai.onnx") != 0)
            return cl_err_set(err, CL_E_UNSUPPORTED, "unsupported operator '%s' from domain '%s' (node '%s')",
                              n->op_type, np->domain, n->name);
        n->op = eng_op_find(n->op_type, m->opset, n->name, err); /* bound once: no lookup at run time */
        if (!n->op)
            return -1;
        if ((int)np->n_input < n->op->min_in || (n->op->max_in >= 0 && (int)np->n_input > n->op->max_in))
            return eng_node_err(err, CL_E_FORMAT, n, "has %zu inputs (expected %d..%d)", np->n_input,
                                n->op->min_in, n->op->max_in);
        if ((int)np->n_output < n->op->min_out || (int)np->n_output > n->op->max_out)
            return eng_node_err(err, CL_E_FORMAT, n, "has %zu outputs (expected %d..%d)", np->n_output,
                                n->op->min_out, n->op->max_out);
        n->n_in = (int)np->n_input;
        n->n_out = (int)np->n_output;
        n->in = malloc((np->n_input + 1) * sizeof(int));
        n->out = malloc((np->n_output + 1) * sizeof(int));
        n->attrs = calloc(np->n_attribute + 1, sizeof *n->attrs);
        if (!n->in || !n->out || !n->attrs)
            return cl_err_nomem(err);
        for (size_t k = 0; k < np->n_input; k++) {
            if (!np->input[k][0]) {
                n->in[k] = -1;
                continue;
            }
            int v = eng_value_get(m, np->input[k], err);
            if (v < 0)
                return -1;
            n->in[k] = v;
        }
        for (size_t k = 0; k < np->n_output; k++) {
            if (!np->output[k][0]) {
                n->out[k] = -1;
                continue;
            }
            int v = eng_value_get(m, np->output[k], err);
            if (v < 0)
                return -1;
            eng_value *val = &m->values[v];
            if (val->producer >= 0 || val->konst || val->graph_input >= 0)
                return eng_node_err(err, CL_E_FORMAT, n, "output '%s' is already defined elsewhere (graphs must "
                                    "be in SSA form)", np->output[k]);
            val->producer = (int)i;
            n->out[k] = v;
        }
        for (size_t k = 0; k < np->n_attribute; k++) {
            n->n_attrs++;
            if (attr_from_proto(np->attribute[k], &n->attrs[k], n, err) != 0)
                return -1;
            if (n->attrs[k].type == ENG_ATTR_GRAPH)
                return eng_node_err(err, CL_E_UNSUPPORTED, n, "subgraph attributes are not supported");
        }
    }
    /* outputs */
    for (size_t i = 0; i < g->n_output; i++) {
        const Onnx__ValueInfoProto *vi = g->output[i];
        if (!vi->name || !vi->name[0])
            return cl_err_set(err, CL_E_FORMAT, "graph output #%zu has no name", i);
        int v = eng_value_find(m, vi->name);
        if (v < 0)
            return cl_err_set(err, CL_E_FORMAT, "graph output '%s' is not produced by any node", vi->name);
        size_t k = m->n_outputs++;
        m->out_val[k] = v;
        if (m->values[v].graph_output < 0)
            m->values[v].graph_output = (int)k;
        if (io_info_from_proto(vi, &m->out_info[k], err) != 0)
            return -1;
    }
    if (m->n_outputs == 0)
        return cl_err_set(err, CL_E_FORMAT, "graph has no outputs");
    return 0;
}

int eng_onnx_parse(cl_engine_model *m, const uint8_t *buf, size_t len, cl_err *err)
{
    if (!buf || len == 0)
        return cl_err_set(err, CL_E_FORMAT, "empty model");
    if (len > CL_ENGINE_MAX_MODEL_BYTES)
        return cl_err_set(err, CL_E_FORMAT, "model is %zu bytes (at most %zu supported)", len,
                          CL_ENGINE_MAX_MODEL_BYTES);
    if (pb_check(&onnx__model_proto__descriptor, buf, len, err) != 0)
        return -1;
    span_list inits = {0};
    ptrdiff_t slen = strip_model(buf, len, NULL, &inits);
    if (slen < 0) {
        free(inits.v);
        if (slen == -2)
            return cl_err_nomem(err);
        return cl_err_set(err, CL_E_FORMAT, "not an ONNX model (malformed protobuf)");
    }
    eng_pb_arena arena;
    eng_pb_arena_init(&arena, (size_t)slen + ((size_t)64 << 10));
    ProtobufCAllocator *alloc = &arena.alloc;
    /* the model without its initializers, in the arena (secure memory: it may hold Constant tensors) */
    uint8_t *sbuf = alloc->alloc(alloc->allocator_data, (size_t)slen + 1);
    Onnx__ModelProto *mp = NULL;
    if (sbuf && strip_model(buf, len, sbuf, NULL) == slen)
        mp = onnx__model_proto__unpack(alloc, (size_t)slen, sbuf);
    if (!mp) {
        free(inits.v);
        eng_pb_arena_release(&arena);
        if (eng_pb_arena_failed(&arena, err))
            return -1;
        return cl_err_set(err, CL_E_FORMAT, "not an ONNX model (protobuf ModelProto did not parse)");
    }
    int rc = -1;
    if (!mp->graph) {
        cl_err_set(err, CL_E_FORMAT, "not an ONNX model (no graph)");
        goto out;
    }
    if (mp->has_ir_version && (mp->ir_version < 3 || mp->ir_version > 10)) {
        cl_err_set(err, CL_E_VERSION, "ONNX IR version %lld is not supported (3..10)", (long long)mp->ir_version);
        goto out;
    }
    m->opset = -1;
    for (size_t i = 0; i < mp->n_opset_import; i++) {
        const Onnx__OperatorSetIdProto *o = mp->opset_import[i];
        if (!o->domain || !o->domain[0] || strcmp(o->domain, "ai.onnx") == 0)
            m->opset = o->version;
    }
    if (m->opset < 0)
        m->opset = 1; /* IR < 3 had no opset_import; treat as opset 1 */
    if (m->opset < 1 || m->opset > 18) {
        cl_err_set(err, CL_E_UNSUPPORTED, "ONNX opset %lld is not supported (1..18); convert the model with a "
                   "supported opset", (long long)m->opset);
        goto out;
    }
    rc = parse_graph(m, mp->graph, &inits, alloc, err);
    /* only a convolution's weights stay borrowed past the parse: konst.c */
    if (rc == 0)
        rc = eng_consts_after_parse(m, err);
out:
    free(inits.v);
    eng_pb_arena_release(&arena); /* no free_unpacked: the arena owns every allocation */
    return rc;
}
