/* engine/tf/graphdef.c — the TensorFlow GraphDef importer: a GraphDef (a frozen *.pb, or a SavedModel's
 * graph) into the engine's graph IR (internal.h), with the engine's ONNX-semantics operators. Steps:
 *   1. flatten: (Stateful)PartitionedCall nodes are replaced by their function's body (from the graph's
 *      library, nested calls too, at most MAX_INLINE_DEPTH deep and CL_ENGINE_MAX_NODES nodes in all),
 *      tensor references rewritten to flat names ("node:k");
 *   2. bind variables: VariableV2 / VarHandleOp+ReadVariableOp become constants read from the bundle;
 *   3. keep only what the outputs need (training, saving and init ops drop out) and convert each node.
 * Layout: TF image ops are NHWC, the engine's are NCHW. Each TF tensor may exist in either form; an op
 * that needs NCHW takes the NCHW form (transposing once when only NHWC exists) and leaves its output in
 * NCHW; layout-neutral ops (activations, bias, batch norm, per-channel arithmetic) pass NCHW through, so
 * a convolutional network is transposed only where a layout-specific op meets its input or outputs.
 * SAME padding is ONNX's SAME_UPPER; AvgPool excludes the padding from the count as TF does.
 * Unsupported operators are reported naming the op and the node.
 */
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensorflow/core/framework/graph.pb-c.h"
#include "tensorflow/core/protobuf/saved_model.pb-c.h"

#include "engine/tf/tf.h"

#define MAX_PB_DEPTH 32
#define MAX_INLINE_DEPTH 16
#define MAX_IN 1024 /* inputs of one node */

/* ---------------------------------------------------------------- protobuf wire pre-check */

int eng_tf_pb_check(const void *descriptor, const uint8_t *buf, size_t len, const char *what, cl_err *err)
{
    unsigned wt = 0;
    switch (eng_pb_walk(descriptor, buf, len, MAX_PB_DEPTH, &wt)) {
    case ENG_PB_OK: return 0;
    case ENG_PB_TOO_DEEP:
        return cl_err_set(err, CL_E_FORMAT, "%s nests messages more than %d levels deep", what, MAX_PB_DEPTH);
    case ENG_PB_BAD_VARINT: return cl_err_set(err, CL_E_FORMAT, "%s: malformed protobuf (varint)", what);
    case ENG_PB_TRUNCATED: return cl_err_set(err, CL_E_FORMAT, "%s: truncated protobuf", what);
    case ENG_PB_TRUNCATED_FIELD: return cl_err_set(err, CL_E_FORMAT, "%s: truncated protobuf field", what);
    case ENG_PB_BAD_WIRE_TYPE:
        return cl_err_set(err, CL_E_FORMAT, "%s: malformed protobuf (wire type %u)", what, wt);
    }
    return cl_err_set(err, CL_E_FORMAT, "%s: malformed protobuf", what);
}

/* Top-level fields tell the formats apart: ModelProto has its graph in field 7 and opsets in 8; a
 * GraphDef's fields are 1..5 with nodes (1) length-delimited; a SavedModel's are 1 (varint) and 2. */
eng_format eng_tf_sniff(const uint8_t *buf, size_t len)
{
    const uint8_t *p = buf, *end = buf + len;
    unsigned seen = 0; /* bit per field 1..5 */
    bool f1_len = false, f1_varint = false, other = false;
    while (p < end) {
        uint64_t f;
        unsigned wt;
        if (eng_pb_field(&p, end, &f, &wt, NULL, NULL) != 0)
            return ENG_FMT_ONNX;
        if (f == 7 || f == 8)
            return ENG_FMT_ONNX;
        if (f >= 1 && f <= 5)
            seen |= 1u << f;
        else
            other = true;
        if (f == 1 && wt == 2)
            f1_len = true;
        else if (f == 1)
            f1_varint = true;
    }
    if (other)
        return ENG_FMT_ONNX;
    if (f1_len || ((seen & (1u << 4)) && !f1_varint))
        return ENG_FMT_TF_GRAPHDEF;
    if ((seen & (1u << 2)) && !(seen & ~((1u << 1) | (1u << 2))))
        return ENG_FMT_TF_SAVEDMODEL;
    return ENG_FMT_ONNX;
}

/* ---------------------------------------------------------------- types and tensors */

cl_engine_dtype eng_tf_dtype(int t)
{
    switch (t) {
    case TENSORFLOW__DATA_TYPE__DT_FLOAT: return CL_ENGINE_DT_FLOAT;
    case TENSORFLOW__DATA_TYPE__DT_DOUBLE: return CL_ENGINE_DT_DOUBLE;
    case TENSORFLOW__DATA_TYPE__DT_INT32: return CL_ENGINE_DT_INT32;
    case TENSORFLOW__DATA_TYPE__DT_UINT8: return CL_ENGINE_DT_UINT8;
    case TENSORFLOW__DATA_TYPE__DT_INT16: return CL_ENGINE_DT_INT16;
    case TENSORFLOW__DATA_TYPE__DT_INT8: return CL_ENGINE_DT_INT8;
    case TENSORFLOW__DATA_TYPE__DT_INT64: return CL_ENGINE_DT_INT64;
    case TENSORFLOW__DATA_TYPE__DT_BOOL: return CL_ENGINE_DT_BOOL;
    case TENSORFLOW__DATA_TYPE__DT_UINT16: return CL_ENGINE_DT_UINT16;
    case TENSORFLOW__DATA_TYPE__DT_UINT32: return CL_ENGINE_DT_UINT32;
    case TENSORFLOW__DATA_TYPE__DT_UINT64: return CL_ENGINE_DT_UINT64;
    default: return CL_ENGINE_DT_UNDEFINED;
    }
}

const char *eng_tf_dtype_name(int t)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(&tensorflow__data_type__descriptor, t);
    return v ? v->name : "an unknown DataType";
}

int eng_tf_tensor(const Tensorflow__TensorProto *tp, eng_tensor *t, const char *what, cl_err *err)
{
    memset(t, 0, sizeof *t);
    cl_engine_dtype dt = eng_tf_dtype(tp->dtype);
    if (dt == CL_ENGINE_DT_UNDEFINED)
        return cl_err_set(err, CL_E_UNSUPPORTED, "%s has type %s, which the engine does not support", what,
                          eng_tf_dtype_name(tp->dtype));
    t->dtype = dt;
    if (tp->tensor_shape) {
        if (tp->tensor_shape->unknown_rank)
            return cl_err_set(err, CL_E_FORMAT, "%s has an unknown rank", what);
        if (tp->tensor_shape->n_dim > CL_ENGINE_MAX_RANK)
            return cl_err_set(err, CL_E_UNSUPPORTED, "%s has rank %zu (at most %d)", what, tp->tensor_shape->n_dim,
                              CL_ENGINE_MAX_RANK);
        t->rank = (int)tp->tensor_shape->n_dim;
        for (int i = 0; i < t->rank; i++) {
            int64_t d = tp->tensor_shape->dim[i]->size;
            if (d < 0)
                return cl_err_set(err, CL_E_FORMAT, "%s has dimension %lld", what, (long long)d);
            t->dims[i] = d;
        }
    }
    int64_t n = eng_dims_numel(t->dims, t->rank);
    if (n < 0)
        return cl_err_set(err, CL_E_FORMAT, "%s is too large", what);
    size_t es = cl_engine_dtype_size(dt), nb = (size_t)n * es;
    size_t have;
    switch (dt) {
    case CL_ENGINE_DT_FLOAT: have = tp->n_float_val; break;
    case CL_ENGINE_DT_DOUBLE: have = tp->n_double_val; break;
    case CL_ENGINE_DT_INT64: have = tp->n_int64_val; break;
    case CL_ENGINE_DT_BOOL: have = tp->n_bool_val; break;
    case CL_ENGINE_DT_UINT32: have = tp->n_uint32_val; break;
    case CL_ENGINE_DT_UINT64: have = tp->n_uint64_val; break;
    default: have = tp->n_int_val; break;
    }
    if (tp->tensor_content.len) {
        if (tp->tensor_content.len != nb)
            return cl_err_set(err, CL_E_FORMAT, "%s: shape %s needs %zu bytes of tensor_content, found %zu", what,
                              eng_dims_str(t->dims, t->rank, (char[96]){0}, 96), nb, tp->tensor_content.len);
    } else if (have > (size_t)n) {
        return cl_err_set(err, CL_E_FORMAT, "%s: shape %s holds %lld values, found %zu", what,
                          eng_dims_str(t->dims, t->rank, (char[96]){0}, 96), (long long)n, have);
    }
    if (eng_tensor_alloc_const(t, err) != 0)
        return -1;
    if (tp->tensor_content.len) {
        memcpy(t->data, tp->tensor_content.data, nb);
        return 0;
    }
    if (!have)
        return 0; /* zeros */
    for (int64_t i = 0; i < n; i++) {
        size_t k = (size_t)i < have ? (size_t)i : have - 1; /* TF repeats the last value */
        switch (dt) {
        case CL_ENGINE_DT_FLOAT: ((float *)t->data)[i] = tp->float_val[k]; break;
        case CL_ENGINE_DT_DOUBLE: ((double *)t->data)[i] = tp->double_val[k]; break;
        case CL_ENGINE_DT_INT64: ((int64_t *)t->data)[i] = tp->int64_val[k]; break;
        case CL_ENGINE_DT_BOOL: ((uint8_t *)t->data)[i] = tp->bool_val[k] != 0; break;
        case CL_ENGINE_DT_UINT32: ((uint32_t *)t->data)[i] = tp->uint32_val[k]; break;
        case CL_ENGINE_DT_UINT64: ((uint64_t *)t->data)[i] = tp->uint64_val[k]; break;
        case CL_ENGINE_DT_INT32: ((int32_t *)t->data)[i] = tp->int_val[k]; break;
        case CL_ENGINE_DT_INT16: ((int16_t *)t->data)[i] = (int16_t)tp->int_val[k]; break;
        case CL_ENGINE_DT_UINT16: ((uint16_t *)t->data)[i] = (uint16_t)tp->int_val[k]; break;
        case CL_ENGINE_DT_INT8: ((int8_t *)t->data)[i] = (int8_t)tp->int_val[k]; break;
        case CL_ENGINE_DT_UINT8: ((uint8_t *)t->data)[i] = (uint8_t)tp->int_val[k]; break;
        default: break;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- string map */

typedef struct smap {
    char **keys;
    int *vals;
    size_t cap, n;
} smap;

static uint64_t shash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    while (*s)
        h = (h ^ (uint8_t)*s++) * 1099511628211ull;
    return h;
}

static int smap_get(const smap *m, const char *k)
{
    if (!m->cap)
        return -1;
    for (size_t i = shash(k) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (!m->keys[i])
            return -1;
        if (strcmp(m->keys[i], k) == 0)
            return m->vals[i];
    }
}

static int smap_put(smap *m, const char *k, int v, cl_err *err)
{
    if ((m->n + 1) * 2 > m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 256;
        char **nk = calloc(nc, sizeof *nk);
        int *nv = calloc(nc, sizeof *nv);
        if (!nk || !nv) {
            free(nk);
            free(nv);
            return cl_err_nomem(err);
        }
        for (size_t i = 0; i < m->cap; i++)
            if (m->keys[i]) {
                size_t j = shash(m->keys[i]) & (nc - 1);
                while (nk[j])
                    j = (j + 1) & (nc - 1);
                nk[j] = m->keys[i];
                nv[j] = m->vals[i];
            }
        free(m->keys);
        free(m->vals);
        m->keys = nk;
        m->vals = nv;
        m->cap = nc;
    }
    size_t i = shash(k) & (m->cap - 1);
    while (m->keys[i]) {
        if (strcmp(m->keys[i], k) == 0) {
            m->vals[i] = v;
            return 0;
        }
        i = (i + 1) & (m->cap - 1);
    }
    m->keys[i] = strdup(k);
    if (!m->keys[i])
        return cl_err_nomem(err);
    m->vals[i] = v;
    m->n++;
    return 0;
}

static void smap_free(smap *m)
{
    for (size_t i = 0; i < m->cap; i++)
        free(m->keys[i]);
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

/* ---------------------------------------------------------------- the flat graph */

typedef struct fnode {
    char *name;
    const Tensorflow__NodeDef *nd; /* op and attributes */
    char **in;                     /* flat tensor names ("node:k"), data inputs only */
    int n_in;
    int state;                     /* 0 unvisited, 1 on the stack, 2 converted */
    bool needed;
} fnode;

/* One TF tensor's engine values: its plain (TF layout) form and, for 4-D image tensors, its NCHW form. */
typedef struct tval {
    int plain, nchw;
    int dtype; /* TF DataType, 0 unknown */
    /* a zero Pad of H and W only (what TF writes before a stride-2 VALID convolution): the index in
     * ctx.tv of its unpadded input and the pads (ONNX order: top, left, bottom, right), so that a VALID
     * NHWC Conv2D taking it pads inside the convolution instead (conv()); -1 otherwise */
    int pad_src;
    int64_t pad_hw[4];
    int pad_kind; /* PAD_ZERO or PAD_LOWEST (-inf, or the lowest float: what max pooling pads with) */
} tval;

enum { PAD_ZERO, PAD_LOWEST };

typedef struct ctx {
    cl_engine_model *m;
    const eng_tf_import *imp;
    const Tensorflow__FunctionDefLibrary *lib;
    fnode *nodes;
    size_t n_nodes, cap_nodes;
    smap node_ix;   /* flat node name -> index */
    smap alias;     /* tensor name -> index into alias_to */
    char **alias_to;
    size_t n_alias, cap_alias;
    smap tv_ix;     /* tensor name -> index into tv */
    tval *tv;
    size_t n_tv, cap_tv;
    size_t cap_enodes;
    unsigned uniq;
    const fnode *cur; /* the node being converted, for messages */
} ctx;

static char *xstrdup(const char *s, cl_err *err)
{
    char *r = strdup(s);
    if (!r)
        cl_err_nomem(err);
    return r;
}

static char *xprintf(cl_err *err, const char *fmt, ...) CL_PRINTF(2, 3);
static char *xprintf(cl_err *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *r = NULL;
    if (vasprintf(&r, fmt, ap) < 0)
        r = NULL;
    va_end(ap);
    if (!r)
        cl_err_nomem(err);
    return r;
}

static const Tensorflow__AttrValue *attr(const Tensorflow__NodeDef *nd, const char *name)
{
    for (size_t i = 0; i < nd->n_attr; i++)
        if (nd->attr[i]->key && strcmp(nd->attr[i]->key, name) == 0)
            return nd->attr[i]->value;
    return NULL;
}

static const Tensorflow__FunctionDef *find_func(const ctx *c, const char *name)
{
    if (!c->lib || !name)
        return NULL;
    for (size_t i = 0; i < c->lib->n_function; i++) {
        const Tensorflow__FunctionDef *f = c->lib->function[i];
        if (f->signature && f->signature->name && strcmp(f->signature->name, name) == 0)
            return f;
    }
    return NULL;
}

static int add_alias(ctx *c, const char *from, const char *to, cl_err *err)
{
    if (c->n_alias == c->cap_alias) {
        size_t nc = c->cap_alias ? c->cap_alias * 2 : 64;
        char **na = realloc(c->alias_to, nc * sizeof *na);
        if (!na)
            return cl_err_nomem(err);
        c->alias_to = na;
        c->cap_alias = nc;
    }
    char *t = xstrdup(to, err);
    if (!t)
        return -1;
    c->alias_to[c->n_alias] = t;
    if (smap_put(&c->alias, from, (int)c->n_alias, err) != 0) {
        free(t);
        return -1;
    }
    c->n_alias++;
    return 0;
}

/* Follows aliases (function arguments and call outputs) to a node's output. */
static const char *resolve(const ctx *c, const char *t)
{
    for (int hops = 0; hops < 10000; hops++) {
        int a = smap_get(&c->alias, t);
        if (a < 0)
            return t;
        t = c->alias_to[a];
    }
    return t;
}

/* "node", "node:k" -> "node:k" (main graph references). NULL for control inputs. */
static char *main_ref(const char *in, cl_err *err)
{
    if (in[0] == '^')
        return NULL;
    const char *colon = strrchr(in, ':');
    if (colon && colon[1]) {
        const char *q = colon + 1;
        while (*q >= '0' && *q <= '9')
            q++;
        if (!*q)
            return xstrdup(in, err);
    }
    return xprintf(err, "%s:0", in);
}

/* Output argument bases of TF ops whose outputs are several named arguments. */
static int out_arg_base(const char *op, const char *arg)
{
    static const char *const bn[] = {"y", "batch_mean", "batch_variance", "reserve_space_1", "reserve_space_2",
                                     "reserve_space_3"};
    if (strncmp(op, "FusedBatchNorm", 14) == 0)
        for (int i = 0; i < 6; i++)
            if (strcmp(arg, bn[i]) == 0)
                return i;
    if (strcmp(op, "Unique") == 0 && strcmp(arg, "idx") == 0)
        return 1;
    if (strcmp(op, "TopKV2") == 0 && strcmp(arg, "indices") == 0)
        return 1;
    return 0;
}

static bool is_call(const char *op)
{
    return strcmp(op, "StatefulPartitionedCall") == 0 || strcmp(op, "PartitionedCall") == 0;
}

static int add_fnode(ctx *c, char *name, const Tensorflow__NodeDef *nd, char **in, int n_in, cl_err *err)
{
    if (c->n_nodes >= CL_ENGINE_MAX_NODES)
        return cl_err_set(err, CL_E_FORMAT, "the graph has more than %d nodes (with its functions inlined)",
                          CL_ENGINE_MAX_NODES);
    if (smap_get(&c->node_ix, name) >= 0)
        return cl_err_set(err, CL_E_FORMAT, "node name '%s' is used twice", name);
    if (c->n_nodes == c->cap_nodes) {
        size_t nc = c->cap_nodes ? c->cap_nodes * 2 : 256;
        fnode *nn = realloc(c->nodes, nc * sizeof *nn);
        if (!nn)
            return cl_err_nomem(err);
        c->nodes = nn;
        c->cap_nodes = nc;
    }
    if (smap_put(&c->node_ix, name, (int)c->n_nodes, err) != 0)
        return -1;
    c->nodes[c->n_nodes++] = (fnode){.name = name, .nd = nd, .in = in, .n_in = n_in};
    return 0;
}

static void free_strs(char **v, int n)
{
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static int inline_call(ctx *c, const char *call_name, const Tensorflow__NodeDef *nd, char **in, int n_in, int depth,
                       cl_err *err);

/* Adds one node (of the main graph, or of a function body under prefix) with its inputs already
 * rewritten; a call is inlined instead. Takes ownership of name and in. */
static int add_node(ctx *c, char *name, const Tensorflow__NodeDef *nd, char **in, int n_in, int depth, cl_err *err)
{
    if (is_call(nd->op)) {
        int rc = inline_call(c, name, nd, in, n_in, depth + 1, err);
        free(name);
        free_strs(in, n_in);
        return rc;
    }
    if (add_fnode(c, name, nd, in, n_in, err) != 0) {
        free(name);
        free_strs(in, n_in);
        return -1;
    }
    return 0;
}

/* Function body reference -> flat name: an argument ("x") -> the caller's input; "node:arg:k" ->
 * "prefix/node:(base(arg)+k)". */
static char *body_ref(const Tensorflow__FunctionDef *f, const char *prefix, const char *ref, char **call_in,
                      int n_call_in, cl_err *err)
{
    const char *c1 = strchr(ref, ':');
    if (!c1) {
        for (size_t k = 0; k < f->signature->n_input_arg; k++)
            if (f->signature->input_arg[k]->name && strcmp(f->signature->input_arg[k]->name, ref) == 0) {
                if ((int)k >= n_call_in) {
                    cl_err_set(err, CL_E_FORMAT, "function '%s' has more arguments than its call '%s' passes",
                               f->signature->name, prefix);
                    return NULL;
                }
                return xstrdup(call_in[k], err);
            }
        cl_err_set(err, CL_E_FORMAT, "function '%s': '%s' is neither an argument nor a node output",
                   f->signature->name, ref);
        return NULL;
    }
    size_t nlen = (size_t)(c1 - ref);
    const char *c2 = strchr(c1 + 1, ':');
    long k = 0;
    char arg[256] = "";
    if (c2) {
        snprintf(arg, sizeof arg, "%.*s", (int)(c2 - c1 - 1), c1 + 1);
        char *e;
        k = strtol(c2 + 1, &e, 10);
        if (*e || k < 0 || k > 65535) {
            cl_err_set(err, CL_E_FORMAT, "function '%s': malformed tensor reference '%s'", f->signature->name, ref);
            return NULL;
        }
    } else {
        snprintf(arg, sizeof arg, "%s", c1 + 1);
    }
    const char *op = "";
    for (size_t i = 0; i < f->n_node_def; i++)
        if (f->node_def[i]->name && strlen(f->node_def[i]->name) == nlen &&
            memcmp(f->node_def[i]->name, ref, nlen) == 0)
            op = f->node_def[i]->op;
    return xprintf(err, "%s/%.*s:%ld", prefix, (int)nlen, ref, k + out_arg_base(op, arg));
}

static int inline_call(ctx *c, const char *call_name, const Tensorflow__NodeDef *nd, char **in, int n_in, int depth,
                       cl_err *err)
{
    if (depth > MAX_INLINE_DEPTH)
        return cl_err_set(err, CL_E_FORMAT, "node '%s': function calls nest more than %d deep", call_name,
                          MAX_INLINE_DEPTH);
    const Tensorflow__AttrValue *fa = attr(nd, "f");
    if (!fa || fa->value_case != TENSORFLOW__ATTR_VALUE__VALUE_FUNC || !fa->func || !fa->func->name)
        return cl_err_set(err, CL_E_FORMAT, "node '%s' (%s) names no function", call_name, nd->op);
    const Tensorflow__FunctionDef *f = find_func(c, fa->func->name);
    if (!f || !f->signature)
        return cl_err_set(err, CL_E_FORMAT, "node '%s' calls function '%s', which the graph's library lacks",
                          call_name, fa->func->name);
    for (size_t i = 0; i < f->n_node_def; i++) {
        const Tensorflow__NodeDef *b = f->node_def[i];
        if (!b->name || !b->op || b->n_input > MAX_IN)
            return cl_err_set(err, CL_E_FORMAT, "function '%s' has a node without name or op", f->signature->name);
        char **bin = calloc(b->n_input + 1, sizeof *bin);
        if (!bin)
            return cl_err_nomem(err);
        int nb = 0;
        for (size_t k = 0; k < b->n_input; k++) {
            if (!b->input[k][0] || b->input[k][0] == '^')
                continue;
            bin[nb] = body_ref(f, call_name, b->input[k], in, n_in, err);
            if (!bin[nb]) {
                free_strs(bin, nb);
                return -1;
            }
            nb++;
        }
        char *bname = xprintf(err, "%s/%s", call_name, b->name);
        if (!bname) {
            free_strs(bin, nb);
            return -1;
        }
        if (add_node(c, bname, b, bin, nb, depth, err) != 0)
            return -1;
    }
    /* the call's outputs */
    for (size_t k = 0; k < f->signature->n_output_arg; k++) {
        const char *an = f->signature->output_arg[k]->name;
        const char *r = NULL;
        for (size_t j = 0; an && j < f->n_ret; j++)
            if (f->ret[j]->key && strcmp(f->ret[j]->key, an) == 0)
                r = f->ret[j]->value;
        if (!r)
            return cl_err_set(err, CL_E_FORMAT, "function '%s' does not return its output '%s'", f->signature->name,
                              an ? an : "?");
        char *to = body_ref(f, call_name, r, in, n_in, err);
        char *from = to ? xprintf(err, "%s:%zu", call_name, k) : NULL;
        int rc = from ? add_alias(c, from, to, err) : -1;
        free(to);
        free(from);
        if (rc != 0)
            return -1;
    }
    return 0;
}

static int flatten(ctx *c, const Tensorflow__GraphDef *g, cl_err *err)
{
    if (g->n_node > CL_ENGINE_MAX_NODES)
        return cl_err_set(err, CL_E_FORMAT, "the graph has %zu nodes (at most %d)", g->n_node, CL_ENGINE_MAX_NODES);
    for (size_t i = 0; i < g->n_node; i++) {
        const Tensorflow__NodeDef *nd = g->node[i];
        if (!nd->name || !nd->name[0] || !nd->op || !nd->op[0])
            return cl_err_set(err, CL_E_FORMAT, "node #%zu has no name or no op", i);
        if (nd->n_input > MAX_IN)
            return cl_err_set(err, CL_E_FORMAT, "node '%s' has %zu inputs (at most %d)", nd->name, nd->n_input, MAX_IN);
        char **in = calloc(nd->n_input + 1, sizeof *in);
        if (!in)
            return cl_err_nomem(err);
        int n = 0;
        for (size_t k = 0; k < nd->n_input; k++) {
            if (!nd->input[k][0] || nd->input[k][0] == '^')
                continue;
            in[n] = main_ref(nd->input[k], err);
            if (!in[n]) {
                free_strs(in, n);
                return -1;
            }
            n++;
        }
        char *name = xstrdup(nd->name, err);
        if (!name) {
            free_strs(in, n);
            return -1;
        }
        if (add_node(c, name, nd, in, n, 0, err) != 0)
            return -1;
    }
    return 0;
}

/* The flat node producing tensor t ("node:k"), after aliases; *k its output index. */
static fnode *producer(ctx *c, const char *t, int *k)
{
    t = resolve(c, t);
    const char *colon = strrchr(t, ':');
    if (!colon)
        return NULL;
    char name[4096];
    if ((size_t)(colon - t) >= sizeof name)
        return NULL;
    memcpy(name, t, (size_t)(colon - t));
    name[colon - t] = 0;
    int i = smap_get(&c->node_ix, name);
    if (i < 0)
        return NULL;
    if (k)
        *k = atoi(colon + 1);
    return &c->nodes[i];
}

/* ---------------------------------------------------------------- engine IR emission */

static int err_node(ctx *c, cl_err *err, cl_status code, const char *fmt, ...) CL_PRINTF(4, 5);
static int err_node(ctx *c, cl_err *err, cl_status code, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->cur)
        return cl_err_set(err, code, "node '%s' (%s): %s", c->cur->name, c->cur->nd->op, msg);
    return cl_err_set(err, code, "%s", msg);
}

static int new_value(ctx *c, const char *hint, cl_err *err)
{
    char nm[512];
    snprintf(nm, sizeof nm, "%s/_cl%u", hint, c->uniq++);
    return eng_value_get(c->m, nm, err);
}

static int konst(ctx *c, eng_tensor *t, cl_err *err)
{
    int v = new_value(c, "const", err);
    if (v < 0) {
        eng_tensor_free(t);
        return -1;
    }
    eng_tensor *k = malloc(sizeof *k);
    if (!k) {
        eng_tensor_free(t);
        return cl_err_nomem(err);
    }
    *k = *t;
    c->m->values[v].konst = k;
    return v;
}

static int konst_i64(ctx *c, const int64_t *vals, int n, bool scalar, cl_err *err)
{
    eng_tensor t = {.dtype = CL_ENGINE_DT_INT64, .rank = scalar ? 0 : 1, .dims = {n}};
    if (eng_tensor_alloc_const(&t, err) != 0)
        return -1;
    memcpy(t.data, vals, (size_t)n * sizeof *vals);
    return konst(c, &t, err);
}

static int konst_f32(ctx *c, float v, cl_err *err)
{
    eng_tensor t = {.dtype = CL_ENGINE_DT_FLOAT, .rank = 0};
    if (eng_tensor_alloc_const(&t, err) != 0)
        return -1;
    *(float *)t.data = v;
    return konst(c, &t, err);
}

/* Attributes of an emitted node. */
typedef struct eattr {
    const char *name;
    eng_attr_type type;
    int64_t i;
    float f;
    const char *s;
    const int64_t *ints;
    size_t n;
} eattr;
#define AI(nm, v) ((eattr){.name = (nm), .type = ENG_ATTR_INT, .i = (v)})
#define AF(nm, v) ((eattr){.name = (nm), .type = ENG_ATTR_FLOAT, .f = (v)})
#define AS(nm, v) ((eattr){.name = (nm), .type = ENG_ATTR_STRING, .s = (v)})
#define AIS(nm, v, cnt) ((eattr){.name = (nm), .type = ENG_ATTR_INTS, .ints = (v), .n = (cnt)})

/* Emits an ONNX-semantics node: inputs in[0..n_in) (-1: omitted), n_out new outputs into out[]. */
static int emit(ctx *c, const char *op_type, const int *in, int n_in, int n_out, int *out, const eattr *at, int n_at,
                cl_err *err)
{
    cl_engine_model *m = c->m;
    if (m->n_nodes >= (size_t)CL_ENGINE_MAX_NODES * 4)
        return cl_err_set(err, CL_E_FORMAT, "the converted graph has too many nodes");
    if (m->n_nodes == c->cap_enodes) {
        size_t nc = c->cap_enodes ? c->cap_enodes * 2 : 256;
        eng_node *nn = realloc(m->nodes, nc * sizeof *nn);
        if (!nn)
            return cl_err_nomem(err);
        m->nodes = nn;
        c->cap_enodes = nc;
    }
    int idx = (int)m->n_nodes;
    eng_node *n = &m->nodes[m->n_nodes++];
    memset(n, 0, sizeof *n);
    n->sum_in = -1;
    const char *base = c->cur ? c->cur->name : "tf";
    n->name = xprintf(err, "%s/%s%u", base, op_type, c->uniq++);
    n->op_type = xstrdup(op_type, err);
    n->in = malloc(((size_t)n_in + 1) * sizeof(int));
    n->out = malloc(((size_t)n_out + 1) * sizeof(int));
    n->attrs = calloc((size_t)n_at + 1, sizeof *n->attrs);
    if (!n->name || !n->op_type || !n->in || !n->out || !n->attrs)
        return cl_err_nomem(err);
    n->op = eng_op_find(op_type, m->opset, n->name, err);
    if (!n->op)
        return -1;
    n->n_in = n_in;
    for (int k = 0; k < n_in; k++)
        n->in[k] = in[k];
    for (int k = 0; k < n_at; k++) {
        eng_attr *a = &n->attrs[k];
        n->n_attrs++;
        a->name = xstrdup(at[k].name, err);
        if (!a->name)
            return -1;
        a->type = at[k].type;
        a->i = at[k].i;
        a->f = at[k].f;
        if (at[k].type == ENG_ATTR_STRING && !(a->s = xstrdup(at[k].s, err)))
            return -1;
        if (at[k].type == ENG_ATTR_INTS) {
            a->n_ints = at[k].n;
            a->ints = malloc((at[k].n + 1) * sizeof(int64_t));
            if (!a->ints)
                return cl_err_nomem(err);
            if (at[k].n)
                memcpy(a->ints, at[k].ints, at[k].n * sizeof(int64_t));
        }
    }
    for (int k = 0; k < n_out; k++) {
        int v = new_value(c, n->name, err);
        if (v < 0)
            return -1;
        m->values[v].producer = idx;
        n->out[n->n_out++] = v;
        out[k] = v;
    }
    return 0;
}

static int emit1(ctx *c, const char *op, const int *in, int n_in, const eattr *at, int n_at, cl_err *err)
{
    int o;
    if (emit(c, op, in, n_in, 1, &o, at, n_at, err) != 0)
        return -1;
    return o;
}

static const int64_t TO_NCHW[4] = {0, 3, 1, 2}, TO_NHWC[4] = {0, 2, 3, 1};

static tval *tv_get(ctx *c, const char *t)
{
    int i = smap_get(&c->tv_ix, resolve(c, t));
    return i < 0 ? NULL : &c->tv[i];
}

static int tv_set(ctx *c, const char *t, int plain, int nchw, int dtype, cl_err *err)
{
    if (c->n_tv == c->cap_tv) {
        size_t nc = c->cap_tv ? c->cap_tv * 2 : 256;
        tval *n = realloc(c->tv, nc * sizeof *n);
        if (!n)
            return cl_err_nomem(err);
        c->tv = n;
        c->cap_tv = nc;
    }
    c->tv[c->n_tv] = (tval){plain, nchw, dtype, -1, {0}, PAD_ZERO};
    if (smap_put(&c->tv_ix, t, (int)c->n_tv, err) != 0)
        return -1;
    c->n_tv++;
    return 0;
}

static int plain_of(ctx *c, tval *t, cl_err *err)
{
    if (t->plain < 0) {
        int in[1] = {t->nchw};
        t->plain = emit1(c, "Transpose", in, 1, (eattr[]){AIS("perm", TO_NHWC, 4)}, 1, err);
    }
    return t->plain;
}

static int nchw_of(ctx *c, tval *t, cl_err *err)
{
    if (t->nchw < 0) {
        int in[1] = {t->plain};
        t->nchw = emit1(c, "Transpose", in, 1, (eattr[]){AIS("perm", TO_NCHW, 4)}, 1, err);
    }
    return t->nchw;
}

/* Input k of the node being converted. */
static tval *input(ctx *c, const fnode *f, int k, cl_err *err)
{
    if (k >= f->n_in) {
        err_node(c, err, CL_E_FORMAT, "has %d inputs, needs at least %d", f->n_in, k + 1);
        return NULL;
    }
    tval *t = tv_get(c, f->in[k]);
    if (!t)
        err_node(c, err, CL_E_FORMAT, "input '%s' is produced by no node", f->in[k]);
    return t;
}

static int in_plain(ctx *c, const fnode *f, int k, cl_err *err)
{
    tval *t = input(c, f, k, err);
    return t ? plain_of(c, t, err) : -1;
}

static int in_nchw(ctx *c, const fnode *f, int k, cl_err *err)
{
    tval *t = input(c, f, k, err);
    return t ? nchw_of(c, t, err) : -1;
}

/* The constant behind input k (NULL if it is not one). */
static const eng_tensor *in_const(ctx *c, const fnode *f, int k)
{
    if (k >= f->n_in)
        return NULL;
    tval *t = tv_get(c, f->in[k]);
    if (!t)
        return NULL;
    int v = t->plain >= 0 ? t->plain : -1;
    return v >= 0 ? c->m->values[v].konst : NULL;
}

/* A constant integer input (axes, perm, begin...; rank <= 2, read flat: Pad's [rank, 2] paddings), at
 * most max entries. */
static int const_ints(ctx *c, const fnode *f, int k, int64_t *out, int max, int *n, cl_err *err)
{
    const eng_tensor *t = in_const(c, f, k);
    if (!t || (t->dtype != CL_ENGINE_DT_INT32 && t->dtype != CL_ENGINE_DT_INT64) || t->rank > 2)
        return err_node(c, err, CL_E_UNSUPPORTED, "input %d must be a constant integer tensor (of rank 0 to 2)", k);
    int64_t cnt = eng_numel(t);
    if (cnt > max)
        return err_node(c, err, CL_E_UNSUPPORTED, "input %d has %lld entries (at most %d)", k, (long long)cnt, max);
    for (int64_t i = 0; i < cnt; i++)
        out[i] = eng_get_i(t, i);
    *n = (int)cnt;
    return 0;
}

static int set_out(ctx *c, const fnode *f, int k, int plain, int nchw, int dtype, cl_err *err)
{
    char nm[4200];
    snprintf(nm, sizeof nm, "%s:%d", f->name, k);
    return tv_set(c, nm, plain, nchw, dtype, err);
}

/* ---------------------------------------------------------------- attribute helpers (TF side) */

static int tf_attr_type(const fnode *f, const char *nm)
{
    const Tensorflow__AttrValue *a = attr(f->nd, nm);
    return a && a->value_case == TENSORFLOW__ATTR_VALUE__VALUE_TYPE ? (int)a->type : 0;
}

static bool tf_attr_str(const fnode *f, const char *nm, char *out, size_t cap)
{
    const Tensorflow__AttrValue *a = attr(f->nd, nm);
    if (!a || a->value_case != TENSORFLOW__ATTR_VALUE__VALUE_S)
        return false;
    snprintf(out, cap, "%.*s", (int)a->s.len, (const char *)a->s.data);
    return true;
}

static int64_t tf_attr_int(const fnode *f, const char *nm, int64_t def)
{
    const Tensorflow__AttrValue *a = attr(f->nd, nm);
    return a && a->value_case == TENSORFLOW__ATTR_VALUE__VALUE_I ? a->i : def;
}

static float tf_attr_float(const fnode *f, const char *nm, float def)
{
    const Tensorflow__AttrValue *a = attr(f->nd, nm);
    return a && a->value_case == TENSORFLOW__ATTR_VALUE__VALUE_F ? a->f : def;
}

static bool tf_attr_bool(const fnode *f, const char *nm, bool def)
{
    const Tensorflow__AttrValue *a = attr(f->nd, nm);
    return a && a->value_case == TENSORFLOW__ATTR_VALUE__VALUE_B ? a->b : def;
}

/* list(int) attribute, exactly want entries (0: any up to max). */
static int tf_attr_ints(ctx *c, const fnode *f, const char *nm, int64_t *out, int want, int *n, cl_err *err)
{
    const Tensorflow__AttrValue *a = attr(f->nd, nm);
    *n = 0;
    if (!a)
        return 0;
    if (a->value_case != TENSORFLOW__ATTR_VALUE__VALUE_LIST || !a->list)
        return err_node(c, err, CL_E_FORMAT, "attribute '%s' is not a list", nm);
    if ((want && a->list->n_i != (size_t)want) || a->list->n_i > 16)
        return err_node(c, err, CL_E_FORMAT, "attribute '%s' has %zu entries (expected %d)", nm, a->list->n_i, want);
    for (size_t i = 0; i < a->list->n_i; i++)
        out[i] = a->list->i[i];
    *n = (int)a->list->n_i;
    return 0;
}

/* data_format: true for NHWC (the default), false for NCHW; others refused. */
static int nhwc(ctx *c, const fnode *f, bool *is_nhwc, cl_err *err)
{
    char df[32] = "NHWC";
    tf_attr_str(f, "data_format", df, sizeof df);
    if (strcmp(df, "NHWC") == 0 || strcmp(df, "NDHWC") == 0)
        *is_nhwc = true;
    else if (strcmp(df, "NCHW") == 0)
        *is_nhwc = false;
    else
        return err_node(c, err, CL_E_UNSUPPORTED, "data_format '%s' is not supported (NHWC, NCHW)", df);
    return 0;
}

/* ---------------------------------------------------------------- op conversion */

static int onnx_dtype_attr(ctx *c, int tf_type, int64_t *out, cl_err *err)
{
    cl_engine_dtype d = eng_tf_dtype(tf_type);
    if (d == CL_ENGINE_DT_UNDEFINED)
        return err_node(c, err, CL_E_UNSUPPORTED, "type %s is not supported", eng_tf_dtype_name(tf_type));
    *out = d;
    return 0;
}

/* Window attributes of Conv2D/pools from TF's strides/dilations/ksize/padding in the given layout. */
static int window(ctx *c, const fnode *f, bool is_nhwc, eattr *at, int *n_at, int64_t *strides, int64_t *dil,
                  int64_t *pads, char *autopad, cl_err *err)
{
    int64_t s[8] = {1, 1, 1, 1}, d[8] = {1, 1, 1, 1};
    int ns, nd_;
    if (tf_attr_ints(c, f, "strides", s, 0, &ns, err) != 0 || tf_attr_ints(c, f, "dilations", d, 0, &nd_, err) != 0)
        return -1;
    if ((ns && ns != 4) || (nd_ && nd_ != 4))
        return err_node(c, err, CL_E_UNSUPPORTED, "strides/dilations must have 4 entries");
    int h = is_nhwc ? 1 : 2, w = is_nhwc ? 2 : 3;
    if (ns && (s[0] != 1 || s[is_nhwc ? 3 : 1] != 1))
        return err_node(c, err, CL_E_UNSUPPORTED, "strides over the batch or channel dimension are not supported");
    strides[0] = ns ? s[h] : 1;
    strides[1] = ns ? s[w] : 1;
    dil[0] = nd_ ? d[h] : 1;
    dil[1] = nd_ ? d[w] : 1;
    char pad[32] = "VALID";
    tf_attr_str(f, "padding", pad, sizeof pad);
    at[(*n_at)++] = AIS("strides", strides, 2);
    if (dil[0] != 1 || dil[1] != 1)
        at[(*n_at)++] = AIS("dilations", dil, 2);
    if (strcmp(pad, "SAME") == 0) {
        strcpy(autopad, "SAME_UPPER");
        at[(*n_at)++] = AS("auto_pad", autopad);
    } else if (strcmp(pad, "VALID") == 0) {
        strcpy(autopad, "VALID");
        at[(*n_at)++] = AS("auto_pad", autopad);
    } else if (strcmp(pad, "EXPLICIT") == 0) {
        int64_t e[16];
        int ne;
        if (tf_attr_ints(c, f, "explicit_paddings", e, 8, &ne, err) != 0)
            return -1;
        pads[0] = e[2 * h];
        pads[1] = e[2 * w];
        pads[2] = e[2 * h + 1];
        pads[3] = e[2 * w + 1];
        at[(*n_at)++] = AIS("pads", pads, 4);
    } else {
        return err_node(c, err, CL_E_UNSUPPORTED, "padding '%s' is not supported (SAME, VALID, EXPLICIT)", pad);
    }
    return 0;
}

/* Input 0 of a window op (Conv2D, pooling), NCHW when is_nhwc. A VALID op on an NHWC tensor padded by
 * a Pad of `kind` takes the Pad's input and does the padding itself: auto_pad in at[] becomes pads
 * (the Pad is left without consumers, and dropped, unless something else reads it); *folded says so. */
static int padded_input(ctx *c, const fnode *f, bool is_nhwc, const char *autopad, int kind, int64_t pads[4],
                        eattr *at, int n_at, bool *folded, cl_err *err)
{
    const tval *pt = is_nhwc && strcmp(autopad, "VALID") == 0 && f->n_in > 0 ? tv_get(c, f->in[0]) : NULL;
    if (folded)
        *folded = false;
    if (!pt || pt->pad_src < 0 || pt->pad_kind != kind)
        return is_nhwc ? in_nchw(c, f, 0, err) : in_plain(c, f, 0, err);
    memcpy(pads, pt->pad_hw, sizeof pt->pad_hw);
    for (int i = 0; i < n_at; i++)
        if (strcmp(at[i].name, "auto_pad") == 0)
            at[i] = AIS("pads", pads, 4);
    if (folded)
        *folded = true;
    return nchw_of(c, &c->tv[pt->pad_src], err);
}

static int conv(ctx *c, const fnode *f, bool depthwise, cl_err *err)
{
    bool is_nhwc;
    if (nhwc(c, f, &is_nhwc, err) != 0)
        return -1;
    eattr at[6];
    int n_at = 0;
    int64_t strides[2], dil[2], pads[4];
    char autopad[16];
    if (window(c, f, is_nhwc, at, &n_at, strides, dil, pads, autopad, err) != 0)
        return -1;
    int x = padded_input(c, f, is_nhwc, autopad, PAD_ZERO, pads, at, n_at, NULL, err);
    int w = in_plain(c, f, 1, err);
    if (x < 0 || w < 0)
        return -1;
    /* HWIO -> OIHW; depthwise HW(C)(M) -> (C*M)1HW with group C */
    static const int64_t hwio_oihw[4] = {3, 2, 0, 1}, hwcm_cmhw[4] = {2, 3, 0, 1};
    int wt = emit1(c, "Transpose", &w, 1, (eattr[]){AIS("perm", depthwise ? hwcm_cmhw : hwio_oihw, 4)}, 1, err);
    if (wt < 0)
        return -1;
    if (depthwise) {
        const eng_tensor *wk = in_const(c, f, 1);
        if (!wk || wk->rank != 4)
            return err_node(c, err, CL_E_UNSUPPORTED, "the filter must be a constant of rank 4");
        int64_t shp[4] = {wk->dims[2] * wk->dims[3], 1, wk->dims[0], wk->dims[1]};
        int sv = konst_i64(c, shp, 4, false, err);
        int in2[2] = {wt, sv};
        if (sv < 0 || (wt = emit1(c, "Reshape", in2, 2, NULL, 0, err)) < 0)
            return -1;
        at[n_at++] = AI("group", wk->dims[2]);
    }
    int in2[2] = {x, wt};
    int y = emit1(c, "Conv", in2, 2, at, n_at, err);
    if (y < 0)
        return -1;
    return is_nhwc ? set_out(c, f, 0, -1, y, tf_attr_type(f, "T"), err) : set_out(c, f, 0, y, -1, tf_attr_type(f, "T"), err);
}

static int pool(ctx *c, const fnode *f, bool avg, cl_err *err)
{
    bool is_nhwc;
    if (nhwc(c, f, &is_nhwc, err) != 0)
        return -1;
    eattr at[7];
    int n_at = 0;
    int64_t strides[2], dil[2], pads[4], ks[8], kernel[2];
    char autopad[16];
    int nk;
    if (window(c, f, is_nhwc, at, &n_at, strides, dil, pads, autopad, err) != 0 ||
        tf_attr_ints(c, f, "ksize", ks, 4, &nk, err) != 0)
        return -1;
    if (nk != 4)
        return err_node(c, err, CL_E_UNSUPPORTED, "ksize must be a constant attribute of 4 entries");
    kernel[0] = ks[is_nhwc ? 1 : 2];
    kernel[1] = ks[is_nhwc ? 2 : 3];
    if (ks[0] != 1 || ks[is_nhwc ? 3 : 1] != 1)
        return err_node(c, err, CL_E_UNSUPPORTED, "pooling over the batch or channel dimension is not supported");
    at[n_at++] = AIS("kernel_shape", kernel, 2);
    /* max pooling over a lowest-value Pad, average pooling over a zero Pad (whose zeros it counts):
     * the pooling pads instead */
    bool folded;
    int x = padded_input(c, f, is_nhwc, autopad, avg ? PAD_ZERO : PAD_LOWEST, pads, at, n_at, &folded, err);
    if (x < 0)
        return -1;
    if (avg)
        at[n_at++] = AI("count_include_pad", folded ? 1 : 0);
    int y = emit1(c, avg ? "AveragePool" : "MaxPool", &x, 1, at, n_at, err);
    if (y < 0)
        return -1;
    return is_nhwc ? set_out(c, f, 0, -1, y, tf_attr_type(f, "T"), err) : set_out(c, f, 0, y, -1, tf_attr_type(f, "T"), err);
}

/* A per-channel vector (rank 1, C entries) as [C,1,1] for NCHW broadcasting. */
static int chan_vec(ctx *c, int v, cl_err *err)
{
    int64_t shp[3] = {-1, 1, 1};
    int sv = konst_i64(c, shp, 3, false, err);
    int in2[2] = {v, sv};
    return sv < 0 ? -1 : emit1(c, "Reshape", in2, 2, NULL, 0, err);
}

static int bias_add(ctx *c, const fnode *f, cl_err *err)
{
    bool is_nhwc;
    if (nhwc(c, f, &is_nhwc, err) != 0)
        return -1;
    tval *x = input(c, f, 0, err);
    int b = in_plain(c, f, 1, err);
    if (!x || b < 0)
        return -1;
    int dt = tf_attr_type(f, "T");
    if (is_nhwc && x->nchw >= 0) { /* stays NCHW */
        int bc = chan_vec(c, b, err);
        int in2[2] = {x->nchw, bc};
        int y = bc < 0 ? -1 : emit1(c, "Add", in2, 2, NULL, 0, err);
        return y < 0 ? -1 : set_out(c, f, 0, -1, y, dt, err);
    }
    int xp = plain_of(c, x, err);
    if (xp < 0)
        return -1;
    if (!is_nhwc) {
        int bc = chan_vec(c, b, err);
        int in2[2] = {xp, bc};
        int y = bc < 0 ? -1 : emit1(c, "Add", in2, 2, NULL, 0, err);
        return y < 0 ? -1 : set_out(c, f, 0, y, -1, dt, err);
    }
    int in2[2] = {xp, b};
    int y = emit1(c, "Add", in2, 2, NULL, 0, err);
    return y < 0 ? -1 : set_out(c, f, 0, y, -1, dt, err);
}

static int batchnorm(ctx *c, const fnode *f, cl_err *err)
{
    bool is_nhwc;
    if (nhwc(c, f, &is_nhwc, err) != 0)
        return -1;
    if (tf_attr_bool(f, "is_training", true) && strcmp(f->nd->op, "FusedBatchNorm") != 0 &&
        attr(f->nd, "is_training"))
        return err_node(c, err, CL_E_UNSUPPORTED, "is_training is set (an inference graph has it false)");
    int x = is_nhwc ? in_nchw(c, f, 0, err) : in_plain(c, f, 0, err);
    int in5[5] = {x, in_plain(c, f, 1, err), in_plain(c, f, 2, err), in_plain(c, f, 3, err), in_plain(c, f, 4, err)};
    for (int i = 0; i < 5; i++)
        if (in5[i] < 0)
            return -1;
    int y = emit1(c, "BatchNormalization", in5, 5, (eattr[]){AF("epsilon", tf_attr_float(f, "epsilon", 1e-4f))}, 1, err);
    if (y < 0)
        return -1;
    int dt = tf_attr_type(f, "T");
    return is_nhwc ? set_out(c, f, 0, -1, y, dt, err) : set_out(c, f, 0, y, -1, dt, err);
}

/* Unary ops that keep any layout. */
static int unary(ctx *c, const fnode *f, const char *op, const eattr *at, int n_at, cl_err *err)
{
    tval *x = input(c, f, 0, err);
    if (!x)
        return -1;
    int dt = x->dtype ? x->dtype : tf_attr_type(f, "T");
    if (x->nchw >= 0 && x->plain < 0) {
        int y = emit1(c, op, &x->nchw, 1, at, n_at, err);
        return y < 0 ? -1 : set_out(c, f, 0, -1, y, dt, err);
    }
    int y = emit1(c, op, &x->plain, 1, at, n_at, err);
    return y < 0 ? -1 : set_out(c, f, 0, y, -1, dt, err);
}

static int clip(ctx *c, const fnode *f, float lo, float hi, cl_err *err)
{
    tval *x = input(c, f, 0, err);
    int l = konst_f32(c, lo, err), h = konst_f32(c, hi, err);
    if (!x || l < 0 || h < 0)
        return -1;
    bool nc = x->nchw >= 0 && x->plain < 0;
    int in3[3] = {nc ? x->nchw : x->plain, l, h};
    int y = emit1(c, "Clip", in3, 3, NULL, 0, err);
    return y < 0 ? -1 : set_out(c, f, 0, nc ? -1 : y, nc ? y : -1, tf_attr_type(f, "T"), err);
}

/* Binary elementwise: NCHW kept when one side is NCHW-only and the other a scalar or per-channel
 * constant vector, or both sides have an NCHW form. */
static int binary(ctx *c, const fnode *f, const char *op, cl_err *err)
{
    tval *a = input(c, f, 0, err), *b = input(c, f, 1, err);
    if (!a || !b)
        return -1;
    int dt = tf_attr_type(f, "T");
    bool an = a->nchw >= 0 && a->plain < 0, bn = b->nchw >= 0 && b->plain < 0;
    if (an || bn) {
        tval *img = an ? a : b, *oth = an ? b : a;
        int ov = -1;
        if (oth->nchw >= 0) {
            ov = oth->nchw;
        } else {
            const eng_tensor *k = c->m->values[oth->plain].konst;
            if (k && eng_numel(k) == 1 && k->rank <= 1)
                ov = oth->plain;
            else if (k && k->rank == 1)
                ov = chan_vec(c, oth->plain, err);
        }
        if (ov >= 0) {
            int in2[2] = {an ? img->nchw : ov, an ? ov : img->nchw};
            int y = emit1(c, op, in2, 2, NULL, 0, err);
            return y < 0 ? -1 : set_out(c, f, 0, -1, y, dt, err);
        }
    }
    int pa = plain_of(c, a, err), pb = plain_of(c, b, err);
    if (pa < 0 || pb < 0)
        return -1;
    int in2[2] = {pa, pb};
    int y = emit1(c, op, in2, 2, NULL, 0, err);
    return y < 0 ? -1 : set_out(c, f, 0, y, -1, dt, err);
}

static int cast_to(ctx *c, int v, int tf_type, cl_err *err)
{
    int64_t to = 0;
    if (onnx_dtype_attr(c, tf_type, &to, err) != 0)
        return -1;
    return emit1(c, "Cast", &v, 1, (eattr[]){AI("to", to)}, 1, err);
}

static int as_i64(ctx *c, const fnode *f, int k, cl_err *err)
{
    int v = in_plain(c, f, k, err);
    return v < 0 ? -1 : emit1(c, "Cast", &v, 1, (eattr[]){AI("to", CL_ENGINE_DT_INT64)}, 1, err);
}

static int reduce(ctx *c, const fnode *f, const char *op, cl_err *err)
{
    int64_t axes[CL_ENGINE_MAX_RANK];
    int na;
    if (const_ints(c, f, 1, axes, CL_ENGINE_MAX_RANK, &na, err) != 0)
        return -1;
    bool keep = tf_attr_bool(f, "keep_dims", false);
    tval *x = input(c, f, 0, err);
    if (!x)
        return -1;
    int dt = tf_attr_type(f, "T");
    bool nc = x->nchw >= 0 && x->plain < 0;
    int64_t ax[CL_ENGINE_MAX_RANK];
    for (int i = 0; i < na; i++) {
        int64_t a = axes[i] < 0 ? axes[i] + 4 : axes[i];
        ax[i] = nc ? (a == 0 ? 0 : a == 3 ? 1 : a + 1) : axes[i];
        if (nc && (a < 0 || a > 3))
            return err_node(c, err, CL_E_FORMAT, "axis %lld out of range", (long long)axes[i]);
    }
    int xv = nc ? x->nchw : x->plain, y;
    if (strcmp(op, "ReduceSum") == 0) {
        int av = konst_i64(c, ax, na, false, err);
        int in2[2] = {xv, av};
        y = av < 0 ? -1 : emit1(c, op, in2, 2, (eattr[]){AI("keepdims", keep)}, 1, err);
    } else {
        y = emit1(c, op, &xv, 1, (eattr[]){AIS("axes", ax, (size_t)na), AI("keepdims", keep)}, 2, err);
    }
    if (y < 0)
        return -1;
    if (nc && keep)
        return set_out(c, f, 0, -1, y, dt, err);
    if (nc) {
        /* the remaining axes are in NCHW order: back to TF order when C and spatial axes both remain */
        bool red[4] = {false};
        for (int i = 0; i < na; i++)
            red[ax[i]] = true;
        int64_t perm[4] = {0}, np = 0, pos[4] = {0}, k = 0;
        for (int d = 0; d < 4; d++)
            if (!red[d])
                pos[d] = k++;
        static const int tf_order[4] = {0, 2, 3, 1}; /* TF dim i lives at NCHW dim tf_order[i] */
        for (int i = 0; i < 4; i++)
            if (!red[tf_order[i]])
                perm[np++] = pos[tf_order[i]];
        bool ident = true;
        for (int i = 0; i < np; i++)
            ident = ident && perm[i] == i;
        if (!ident && (y = emit1(c, "Transpose", &y, 1, (eattr[]){AIS("perm", perm, (size_t)np)}, 1, err)) < 0)
            return -1;
    }
    return set_out(c, f, 0, y, -1, dt, err);
}

static int strided_slice(ctx *c, const fnode *f, cl_err *err)
{
    int64_t b[CL_ENGINE_MAX_RANK], e[CL_ENGINE_MAX_RANK], s[CL_ENGINE_MAX_RANK];
    int nb, ne, ns;
    if (const_ints(c, f, 1, b, CL_ENGINE_MAX_RANK, &nb, err) != 0 ||
        const_ints(c, f, 2, e, CL_ENGINE_MAX_RANK, &ne, err) != 0 ||
        const_ints(c, f, 3, s, CL_ENGINE_MAX_RANK, &ns, err) != 0)
        return -1;
    if (nb != ne || nb != ns)
        return err_node(c, err, CL_E_FORMAT, "begin, end and strides differ in length");
    int64_t bm = tf_attr_int(f, "begin_mask", 0), em = tf_attr_int(f, "end_mask", 0),
            elm = tf_attr_int(f, "ellipsis_mask", 0), nam = tf_attr_int(f, "new_axis_mask", 0),
            sam = tf_attr_int(f, "shrink_axis_mask", 0);
    if (elm || nam)
        return err_node(c, err, CL_E_UNSUPPORTED, "ellipsis_mask and new_axis_mask are not supported");
    int64_t st[CL_ENGINE_MAX_RANK], en[CL_ENGINE_MAX_RANK], ax[CL_ENGINE_MAX_RANK], sq[CL_ENGINE_MAX_RANK];
    int nsq = 0;
    for (int i = 0; i < nb; i++) {
        if (s[i] == 0)
            return err_node(c, err, CL_E_FORMAT, "stride 0");
        ax[i] = i;
        if (sam & (1ll << i)) {
            st[i] = b[i];
            en[i] = b[i] == -1 ? INT64_MAX : b[i] + 1;
            s[i] = 1;
            sq[nsq++] = i;
            continue;
        }
        st[i] = (bm & (1ll << i)) ? (s[i] > 0 ? 0 : INT64_MAX) : b[i];
        en[i] = (em & (1ll << i)) ? (s[i] > 0 ? INT64_MAX : INT64_MIN) : e[i];
    }
    int x = in_plain(c, f, 0, err);
    int kv[4] = {x, konst_i64(c, st, nb, false, err), konst_i64(c, en, nb, false, err), konst_i64(c, ax, nb, false, err)};
    int sv = konst_i64(c, s, nb, false, err);
    if (x < 0 || kv[1] < 0 || kv[2] < 0 || kv[3] < 0 || sv < 0)
        return -1;
    int in5[5] = {kv[0], kv[1], kv[2], kv[3], sv};
    int y = emit1(c, "Slice", in5, 5, NULL, 0, err);
    if (y >= 0 && nsq) {
        int qv = konst_i64(c, sq, nsq, false, err);
        int in2[2] = {y, qv};
        y = qv < 0 ? -1 : emit1(c, "Squeeze", in2, 2, NULL, 0, err);
    }
    return y < 0 ? -1 : set_out(c, f, 0, y, -1, tf_attr_type(f, "T"), err);
}

/* Pad, PadV2, MirrorPad (REFLECT): on the NCHW form when that is the only one. A zero Pad of H and W
 * is remembered on its output (tval.pad_src) for a VALID convolution reading it. */
static int pad_op(ctx *c, const fnode *f, const char *op, int dt, cl_err *err)
{
    int64_t p[2 * CL_ENGINE_MAX_RANK];
    int np;
    if (const_ints(c, f, 1, p, 2 * CL_ENGINE_MAX_RANK, &np, err) != 0)
        return -1;
    if (np % 2)
        return err_node(c, err, CL_E_FORMAT, "paddings must be [rank, 2]");
    int r = np / 2;
    tval *x = input(c, f, 0, err);
    if (!x)
        return -1;
    int x_ix = (int)(x - c->tv); /* an index: set_out below may move c->tv */
    bool nc = r == 4 && x->nchw >= 0 && x->plain < 0;
    int64_t pads[2 * CL_ENGINE_MAX_RANK];
    static const int tf_of_nchw[4] = {0, 3, 1, 2};
    for (int i = 0; i < r; i++) {
        int src = nc ? tf_of_nchw[i] : i;
        pads[i] = p[2 * src];
        pads[r + i] = p[2 * src + 1];
    }
    int pv = konst_i64(c, pads, 2 * r, false, err);
    int in3[3] = {nc ? x->nchw : x->plain, pv, -1};
    int n_in = 2;
    if (strcmp(op, "PadV2") == 0) {
        in3[2] = in_plain(c, f, 2, err);
        n_in = 3;
    }
    if (pv < 0 || in3[0] < 0 || (n_in == 3 && in3[2] < 0))
        return -1;
    char mode[16] = "constant";
    if (strcmp(op, "MirrorPad") == 0) {
        char mm[16] = "";
        tf_attr_str(f, "mode", mm, sizeof mm);
        if (strcmp(mm, "REFLECT") != 0)
            return err_node(c, err, CL_E_UNSUPPORTED, "mode '%s' is not supported (REFLECT)", mm);
        strcpy(mode, "reflect");
    }
    int y = emit1(c, "Pad", in3, n_in, (eattr[]){AS("mode", mode)}, 1, err);
    x = NULL;
    if (y < 0 || set_out(c, f, 0, nc ? -1 : y, nc ? y : -1, dt, err) != 0)
        return -1;
    /* zeros (or the lowest float) around H and W only: remembered for a VALID convolution or pooling
     * that reads it (padded_input) */
    const eng_tensor *cv = n_in == 3 ? in_const(c, f, 2) : NULL;
    bool one = cv && cv->dtype == CL_ENGINE_DT_FLOAT && eng_numel(cv) == 1;
    bool zero = n_in == 2 || (one && eng_get_f(cv, 0) == 0);
    bool lowest = one && eng_get_f(cv, 0) <= -FLT_MAX;
    if (r == 4 && (zero || lowest) && strcmp(mode, "constant") == 0 && !p[0] && !p[1] && !p[6] && !p[7] && p[2] >= 0 &&
        p[3] >= 0 && p[4] >= 0 && p[5] >= 0) {
        char nm[4200];
        snprintf(nm, sizeof nm, "%s:0", f->name);
        tval *t = tv_get(c, nm);
        if (t) {
            t->pad_src = x_ix;
            t->pad_kind = zero ? PAD_ZERO : PAD_LOWEST;
            t->pad_hw[0] = p[2], t->pad_hw[1] = p[4], t->pad_hw[2] = p[3], t->pad_hw[3] = p[5];
        }
    }
    return 0;
}

static int convert(ctx *c, fnode *f, cl_err *err)
{
    const char *op = f->nd->op;
    c->cur = f;
    int dt = tf_attr_type(f, "T");
    if (strcmp(op, "Const") == 0) {
        const Tensorflow__AttrValue *a = attr(f->nd, "value");
        if (!a || a->value_case != TENSORFLOW__ATTR_VALUE__VALUE_TENSOR || !a->tensor)
            return err_node(c, err, CL_E_FORMAT, "has no tensor value");
        eng_tensor t;
        char what[600];
        snprintf(what, sizeof what, "node '%s' (Const)", f->name);
        if (eng_tf_tensor(a->tensor, &t, what, err) != 0)
            return -1;
        int v = konst(c, &t, err);
        return v < 0 ? -1 : set_out(c, f, 0, v, -1, a->tensor->dtype, err);
    }
    if (strcmp(op, "VariableV2") == 0 || strcmp(op, "Variable") == 0 || strcmp(op, "ReadVariableOp") == 0) {
        /* the variable node: itself, or the VarHandleOp the resource comes from */
        const fnode *var = f;
        if (op[0] == 'R') {
            var = NULL;
            const char *t = f->n_in ? f->in[0] : "";
            for (int hops = 0; hops < 1000; hops++) {
                const fnode *p = producer(c, t, NULL);
                if (!p || strcmp(p->nd->op, "Identity") != 0 || !p->n_in) {
                    var = p;
                    break;
                }
                t = p->in[0];
            }
            if (!var || strcmp(var->nd->op, "VarHandleOp") != 0)
                return err_node(c, err, CL_E_UNSUPPORTED, "reads a resource that is not a VarHandleOp variable");
        }
        const char *key = NULL;
        for (size_t i = 0; i < c->imp->n_vars; i++)
            if (strcmp(c->imp->vars[i].node, var->name) == 0)
                key = c->imp->vars[i].key;
        char sn[1024];
        if (!key && strcmp(var->nd->op, "VarHandleOp") == 0 && tf_attr_str(var, "shared_name", sn, sizeof sn) && sn[0])
            key = sn;
        if (!key)
            key = var->name;
        if (!c->imp->bundle)
            return err_node(c, err, CL_E_FORMAT, "reads variable '%s', but the model has no variables (a frozen graph "
                            "must have its variables turned into constants)", var->name);
        eng_tensor t;
        if (eng_bundle_read(c->imp->bundle, key, &t, err) != 0)
            return cl_err_prefix(err, "node '%s' (%s)", f->name, op);
        int v = konst(c, &t, err);
        int vdt = tf_attr_type(var, "dtype");
        return v < 0 ? -1 : set_out(c, f, 0, v, -1, vdt, err);
    }
    if (strcmp(op, "Identity") == 0 || strcmp(op, "StopGradient") == 0 || strcmp(op, "Snapshot") == 0 ||
        strcmp(op, "PlaceholderWithDefault") == 0 || strcmp(op, "IdentityN") == 0 || strcmp(op, "EnsureShape") == 0) {
        int n = strcmp(op, "IdentityN") == 0 ? f->n_in : 1;
        for (int k = 0; k < n; k++) {
            tval *x = input(c, f, k, err);
            if (!x)
                return -1;
            tval cp = *x;
            if (set_out(c, f, k, cp.plain, cp.nchw, cp.dtype ? cp.dtype : dt, err) != 0)
                return -1;
        }
        return 0;
    }
    if (strcmp(op, "Conv2D") == 0)
        return conv(c, f, false, err);
    if (strcmp(op, "DepthwiseConv2dNative") == 0)
        return conv(c, f, true, err);
    if (strcmp(op, "MaxPool") == 0)
        return pool(c, f, false, err);
    if (strcmp(op, "AvgPool") == 0)
        return pool(c, f, true, err);
    if (strcmp(op, "BiasAdd") == 0 || strcmp(op, "BiasAddV1") == 0)
        return bias_add(c, f, err);
    if (strncmp(op, "FusedBatchNorm", 14) == 0)
        return batchnorm(c, f, err);
    static const struct { const char *tf, *onnx; } un[] = {
        {"Relu", "Relu"}, {"Sigmoid", "Sigmoid"}, {"Tanh", "Tanh"}, {"Sqrt", "Sqrt"}, {"Exp", "Exp"},
        {"Log", "Log"}, {"Abs", "Abs"}, {"Neg", "Neg"}, {"Floor", "Floor"}, {"Ceil", "Ceil"},
        {"Reciprocal", "Reciprocal"}, {"Erf", "Erf"}, {"Round", "Round"}, {"Sign", "Sign"},
        {"Softplus", "Softplus"}, {"LogicalNot", "Not"}};
    for (size_t i = 0; i < CL_ARRAY_LEN(un); i++)
        if (strcmp(op, un[i].tf) == 0)
            return unary(c, f, un[i].onnx, NULL, 0, err);
    if (strcmp(op, "Elu") == 0)
        return unary(c, f, "Elu", (eattr[]){AF("alpha", 1.0f)}, 1, err);
    if (strcmp(op, "LeakyRelu") == 0)
        return unary(c, f, "LeakyRelu", (eattr[]){AF("alpha", tf_attr_float(f, "alpha", 0.2f))}, 1, err);
    if (strcmp(op, "Relu6") == 0)
        return clip(c, f, 0.0f, 6.0f, err);
    if (strcmp(op, "Rsqrt") == 0) {
        tval *x = input(c, f, 0, err);
        if (!x)
            return -1;
        bool nc = x->nchw >= 0 && x->plain < 0;
        int s = emit1(c, "Sqrt", nc ? &x->nchw : &x->plain, 1, NULL, 0, err);
        int y = s < 0 ? -1 : emit1(c, "Reciprocal", &s, 1, NULL, 0, err);
        return y < 0 ? -1 : set_out(c, f, 0, nc ? -1 : y, nc ? y : -1, dt, err);
    }
    if (strcmp(op, "Square") == 0) {
        tval *x = input(c, f, 0, err);
        if (!x)
            return -1;
        bool nc = x->nchw >= 0 && x->plain < 0;
        int v = nc ? x->nchw : x->plain, in2[2] = {v, v};
        int y = emit1(c, "Mul", in2, 2, NULL, 0, err);
        return y < 0 ? -1 : set_out(c, f, 0, nc ? -1 : y, nc ? y : -1, dt, err);
    }
    static const struct { const char *tf, *onnx; } bin[] = {
        {"Add", "Add"}, {"AddV2", "Add"}, {"Sub", "Sub"}, {"Mul", "Mul"}, {"RealDiv", "Div"}, {"Div", "Div"},
        {"Maximum", "Max"}, {"Minimum", "Min"}, {"Pow", "Pow"}, {"Greater", "Greater"}, {"Less", "Less"},
        {"Equal", "Equal"}, {"GreaterEqual", "GreaterOrEqual"}, {"LessEqual", "LessOrEqual"},
        {"LogicalAnd", "And"}, {"LogicalOr", "Or"}};
    for (size_t i = 0; i < CL_ARRAY_LEN(bin); i++)
        if (strcmp(op, bin[i].tf) == 0)
            return binary(c, f, bin[i].onnx, err);
    if (strcmp(op, "SquaredDifference") == 0) {
        int in2[2] = {in_plain(c, f, 0, err), in_plain(c, f, 1, err)};
        if (in2[0] < 0 || in2[1] < 0)
            return -1;
        int d = emit1(c, "Sub", in2, 2, NULL, 0, err);
        int dd[2] = {d, d};
        int y = d < 0 ? -1 : emit1(c, "Mul", dd, 2, NULL, 0, err);
        return y < 0 ? -1 : set_out(c, f, 0, y, -1, dt, err);
    }
    if (strcmp(op, "AddN") == 0) {
        int in[MAX_IN];
        for (int k = 0; k < f->n_in; k++)
            if ((in[k] = in_plain(c, f, k, err)) < 0)
                return -1;
        int y = f->n_in == 1 ? in[0] : emit1(c, "Sum", in, f->n_in, NULL, 0, err);
        return y < 0 ? -1 : set_out(c, f, 0, y, -1, dt, err);
    }
    if (strcmp(op, "MatMul") == 0) {
        int in2[2] = {in_plain(c, f, 0, err), in_plain(c, f, 1, err)};
        if (in2[0] < 0 || in2[1] < 0)
            return -1;
        int y = emit1(c, "Gemm", in2, 2,
                      (eattr[]){AI("transA", tf_attr_bool(f, "transpose_a", false)),
                                AI("transB", tf_attr_bool(f, "transpose_b", false))}, 2, err);
        return y < 0 ? -1 : set_out(c, f, 0, y, -1, dt, err);
    }
    if (strcmp(op, "BatchMatMulV2") == 0 || strcmp(op, "BatchMatMul") == 0 || strcmp(op, "BatchMatMulV3") == 0) {
        if (tf_attr_bool(f, "adj_x", false) || tf_attr_bool(f, "adj_y", false))
            return err_node(c, err, CL_E_UNSUPPORTED, "adj_x / adj_y are not supported");
        int in2[2] = {in_plain(c, f, 0, err), in_plain(c, f, 1, err)};
        if (in2[0] < 0 || in2[1] < 0)
            return -1;
        int y = emit1(c, "MatMul", in2, 2, NULL, 0, err);
        return y < 0 ? -1 : set_out(c, f, 0, y, -1, tf_attr_type(f, "Tout") ? tf_attr_type(f, "Tout") : dt, err);
    }
    if (strcmp(op, "Softmax") == 0 || strcmp(op, "LogSoftmax") == 0) {
        int x = in_plain(c, f, 0, err);
        int y = x < 0 ? -1 : emit1(c, op, &x, 1, (eattr[]){AI("axis", -1)}, 1, err);
        return y < 0 ? -1 : set_out(c, f, 0, y, -1, dt, err);
    }
    if (strcmp(op, "Mean") == 0)
        return reduce(c, f, "ReduceMean", err);
    if (strcmp(op, "Sum") == 0)
        return reduce(c, f, "ReduceSum", err);
    if (strcmp(op, "Max") == 0)
        return reduce(c, f, "ReduceMax", err);
    if (strcmp(op, "Min") == 0)
        return reduce(c, f, "ReduceMin", err);
    if (strcmp(op, "Prod") == 0)
        return reduce(c, f, "ReduceProd", err);
    if (strcmp(op, "Pad") == 0 || strcmp(op, "PadV2") == 0 || strcmp(op, "MirrorPad") == 0)
        return pad_op(c, f, op, dt, err);
    if (strcmp(op, "Reshape") == 0) {
        int in2[2] = {in_plain(c, f, 0, err), as_i64(c, f, 1, err)};
        if (in2[0] < 0 || in2[1] < 0)
            return -1;
        int y = emit1(c, "Reshape", in2, 2, NULL, 0, err);
        return y < 0 ? -1 : set_out(c, f, 0, y, -1, dt, err);
    }
    if (strcmp(op, "Squeeze") == 0) {
        int64_t ax[16];
        int na;
        if (tf_attr_ints(c, f, "squeeze_dims", ax, 0, &na, err) != 0)
            return -1;
        int x = in_plain(c, f, 0, err);
        if (x < 0)
            return -1;
        int in2[2] = {x, na ? konst_i64(c, ax, na, false, err) : -1};
        if (na && in2[1] < 0)
            return -1;
        int y = emit1(c, "Squeeze", in2, na ? 2 : 1, NULL, 0, err);
        return y < 0 ? -1 : set_out(c, f, 0, y, -1, dt, err);
    }
    if (strcmp(op, "ExpandDims") == 0) {
        int x = in_plain(c, f, 0, err), a = as_i64(c, f, 1, err);
        int64_t one[1] = {1};
        int sv = konst_i64(c, one, 1, false, err);
        int in2a[2] = {a, sv};
        int av = (x < 0 || a < 0 || sv < 0) ? -1 : emit1(c, "Reshape", in2a, 2, NULL, 0, err);
        int in2[2] = {x, av};
        int y = av < 0 ? -1 : emit1(c, "Unsqueeze", in2, 2, NULL, 0, err);
        return y < 0 ? -1 : set_out(c, f, 0, y, -1, dt, err);
    }
    if (strcmp(op, "ConcatV2") == 0 || strcmp(op, "Concat") == 0) {
        bool v2 = op[6] == 'V';
        int n = f->n_in - 1;
        if (n < 1)
            return err_node(c, err, CL_E_FORMAT, "has no values");
        int64_t ax[1];
        int na;
        if (const_ints(c, f, v2 ? n : 0, ax, 1, &na, err) != 0)
            return -1;
        if (na != 1)
            return err_node(c, err, CL_E_FORMAT, "axis must be a scalar");
        int in[MAX_IN];
        bool all_nc = true;
        for (int k = 0; k < n; k++) {
            tval *t = input(c, f, v2 ? k : k + 1, err);
            if (!t)
                return -1;
            all_nc = all_nc && t->nchw >= 0;
        }
        int64_t a = ax[0] < 0 ? ax[0] + 4 : ax[0];
        bool nc = all_nc && a >= 0 && a <= 3;
        for (int k = 0; k < n; k++) {
            tval *t = input(c, f, v2 ? k : k + 1, err);
            if ((in[k] = nc ? t->nchw : plain_of(c, t, err)) < 0)
                return -1;
        }
        int64_t axis = nc ? (a == 0 ? 0 : a == 3 ? 1 : a + 1) : ax[0];
        int y = emit1(c, "Concat", in, n, (eattr[]){AI("axis", axis)}, 1, err);
        return y < 0 ? -1 : set_out(c, f, 0, nc ? -1 : y, nc ? y : -1, dt, err);
    }
    if (strcmp(op, "Pack") == 0) {
        int64_t axis = tf_attr_int(f, "axis", 0), one[1] = {axis};
        int in[MAX_IN];
        for (int k = 0; k < f->n_in; k++) {
            int x = in_plain(c, f, k, err), av = konst_i64(c, one, 1, false, err);
            int in2[2] = {x, av};
            if (x < 0 || av < 0 || (in[k] = emit1(c, "Unsqueeze", in2, 2, NULL, 0, err)) < 0)
                return -1;
        }
        int y = f->n_in == 1 ? in[0] : emit1(c, "Concat", in, f->n_in, (eattr[]){AI("axis", axis)}, 1, err);
        return y < 0 ? -1 : set_out(c, f, 0, y, -1, dt, err);
    }
    if (strcmp(op, "Transpose") == 0) {
        int64_t perm[CL_ENGINE_MAX_RANK];
        int np;
        if (const_ints(c, f, 1, perm, CL_ENGINE_MAX_RANK, &np, err) != 0)
            return -1;
        tval *x = input(c, f, 0, err);
        if (!x)
            return -1;
        /* NHWC -> NCHW of a tensor whose NCHW form exists: nothing to do */
        if (np == 4 && x->nchw >= 0 && memcmp(perm, TO_NCHW, sizeof perm[0] * 4) == 0)
            return set_out(c, f, 0, x->nchw, -1, dt, err);
        int xv = plain_of(c, x, err);
        int y = xv < 0 ? -1 : emit1(c, "Transpose", &xv, 1, (eattr[]){AIS("perm", perm, (size_t)np)}, 1, err);
        return y < 0 ? -1 : set_out(c, f, 0, y, -1, dt, err);
    }
    if (strcmp(op, "Shape") == 0 || strcmp(op, "Size") == 0) {
        int x = in_plain(c, f, 0, err);
        int s = x < 0 ? -1 : emit1(c, op, &x, 1, NULL, 0, err);
        int ot = tf_attr_type(f, "out_type") ? tf_attr_type(f, "out_type") : TENSORFLOW__DATA_TYPE__DT_INT32;
        int y = s < 0 ? -1 : ot == TENSORFLOW__DATA_TYPE__DT_INT64 ? s : cast_to(c, s, ot, err);
        return y < 0 ? -1 : set_out(c, f, 0, y, -1, ot, err);
    }
    if (strcmp(op, "StridedSlice") == 0)
        return strided_slice(c, f, err);
    if (strcmp(op, "Cast") == 0) {
        tval *x = input(c, f, 0, err);
        if (!x)
            return -1;
        int dst = tf_attr_type(f, "DstT");
        bool nc = x->nchw >= 0 && x->plain < 0;
        int y = cast_to(c, nc ? x->nchw : x->plain, dst, err);
        return y < 0 ? -1 : set_out(c, f, 0, nc ? -1 : y, nc ? y : -1, dst, err);
    }
    if (strcmp(op, "ArgMax") == 0 || strcmp(op, "ArgMin") == 0) {
        int64_t ax[1];
        int na;
        if (const_ints(c, f, 1, ax, 1, &na, err) != 0)
            return -1;
        if (na != 1)
            return err_node(c, err, CL_E_FORMAT, "dimension must be a scalar");
        int x = in_plain(c, f, 0, err);
        int y = x < 0 ? -1 : emit1(c, op, &x, 1, (eattr[]){AI("axis", ax[0]), AI("keepdims", 0)}, 2, err);
        int ot = tf_attr_type(f, "output_type") ? tf_attr_type(f, "output_type") : TENSORFLOW__DATA_TYPE__DT_INT64;
        if (y >= 0 && ot != TENSORFLOW__DATA_TYPE__DT_INT64)
            y = cast_to(c, y, ot, err);
        return y < 0 ? -1 : set_out(c, f, 0, y, -1, ot, err);
    }
    if (strcmp(op, "Fill") == 0) {
        int in2[2] = {in_plain(c, f, 1, err), as_i64(c, f, 0, err)};
        int y = in2[0] < 0 || in2[1] < 0 ? -1 : emit1(c, "Expand", in2, 2, NULL, 0, err);
        return y < 0 ? -1 : set_out(c, f, 0, y, -1, dt, err);
    }
    if (strcmp(op, "Split") == 0 || strcmp(op, "Unpack") == 0) {
        bool unpack = op[0] == 'U';
        int64_t n = tf_attr_int(f, unpack ? "num" : "num_split", 0), ax[1];
        int na;
        if (n < 1 || n > 256)
            return err_node(c, err, CL_E_FORMAT, "splits into %lld outputs (1..256)", (long long)n);
        if (unpack) {
            ax[0] = tf_attr_int(f, "axis", 0);
        } else {
            if (const_ints(c, f, 0, ax, 1, &na, err) != 0)
                return -1;
            if (na != 1)
                return err_node(c, err, CL_E_FORMAT, "axis must be a scalar");
        }
        int x = in_plain(c, f, unpack ? 0 : 1, err);
        int outs[256];
        if (x < 0 || emit(c, "Split", &x, 1, (int)n, outs, (eattr[]){AI("axis", ax[0])}, 1, err) != 0)
            return -1;
        for (int k = 0; k < n; k++) {
            int y = outs[k];
            if (unpack) {
                int av = konst_i64(c, ax, 1, false, err);
                int in2[2] = {y, av};
                if (av < 0 || (y = emit1(c, "Squeeze", in2, 2, NULL, 0, err)) < 0)
                    return -1;
            }
            if (set_out(c, f, k, y, -1, dt, err) != 0)
                return -1;
        }
        return 0;
    }
    if (strcmp(op, "Select") == 0 || strcmp(op, "SelectV2") == 0) {
        int in3[3] = {in_plain(c, f, 0, err), in_plain(c, f, 1, err), in_plain(c, f, 2, err)};
        if (in3[0] < 0 || in3[1] < 0 || in3[2] < 0)
            return -1;
        int y = emit1(c, "Where", in3, 3, NULL, 0, err);
        return y < 0 ? -1 : set_out(c, f, 0, y, -1, dt, err);
    }
    if (strcmp(op, "Placeholder") == 0)
        return err_node(c, err, CL_E_FORMAT, "is a Placeholder that the signature does not list as an input");
    if (strcmp(op, "VarHandleOp") == 0)
        return err_node(c, err, CL_E_UNSUPPORTED, "a resource handle is used other than by ReadVariableOp");
    return cl_err_set(err, CL_E_UNSUPPORTED, "unsupported TensorFlow operator '%s' (node '%s')", op, f->name);
}

/* ---------------------------------------------------------------- driver */

/* Converts the nodes tensor t needs, iteratively (post-order), then t's node. */
static int need(ctx *c, const char *t, cl_err *err)
{
    if (tv_get(c, t))
        return 0;
    fnode *root = producer(c, t, NULL);
    if (!root)
        return cl_err_set(err, CL_E_FORMAT, "tensor '%s' is produced by no node of the graph", t);
    size_t cap = 256, sp = 0;
    fnode **stack = malloc(cap * sizeof *stack);
    if (!stack)
        return cl_err_nomem(err);
    stack[sp++] = root;
    int rc = 0;
    while (sp && rc == 0) {
        fnode *f = stack[sp - 1];
        if (f->state == 2) {
            sp--;
            continue;
        }
        f->state = 1;
        fnode *next = NULL;
        /* variables read their value, not their handle's producers */
        bool leaf = strcmp(f->nd->op, "ReadVariableOp") == 0 || strcmp(f->nd->op, "Const") == 0 ||
                    strncmp(f->nd->op, "Variable", 8) == 0;
        for (int k = 0; !leaf && k < f->n_in && !next; k++) {
            if (tv_get(c, f->in[k]))
                continue;
            fnode *p = producer(c, f->in[k], NULL);
            if (!p) {
                c->cur = f;
                rc = err_node(c, err, CL_E_FORMAT, "input '%s' is produced by no node", f->in[k]);
                break;
            }
            if (p->state == 1) {
                c->cur = f;
                rc = err_node(c, err, CL_E_FORMAT, "is part of a cycle (through '%s')", p->name);
                break;
            }
            if (p->state == 0)
                next = p;
        }
        if (rc)
            break;
        if (next) {
            if (sp == cap) {
                cap *= 2;
                fnode **ns = realloc(stack, cap * sizeof *ns);
                if (!ns) {
                    rc = cl_err_nomem(err);
                    break;
                }
                stack = ns;
            }
            stack[sp++] = next;
            continue;
        }
        rc = convert(c, f, err);
        f->state = 2;
        sp--;
    }
    free(stack);
    if (rc == 0 && !tv_get(c, t))
        return cl_err_set(err, CL_E_FORMAT, "tensor '%s' is not an output of its node", t);
    return rc;
}

static void io_from(cl_engine_io_info *info, const char *alias, const char *tensor, int dtype, int rank,
                    const int64_t *dims)
{
    info->name = strdup(alias);
    info->tensor = tensor ? strdup(tensor) : NULL;
    info->dtype = eng_tf_dtype(dtype);
    info->rank = rank;
    for (int i = 0; i < rank && i < CL_ENGINE_MAX_RANK; i++)
        info->dims[i] = dims[i];
}

static bool output_op(const char *op)
{
    static const char *const no[] = {"NoOp", "Const", "Placeholder", "PlaceholderWithDefault", "VariableV2",
                                     "Variable", "VarHandleOp", "Assign", "AssignAdd", "AssignSub",
                                     "AssignVariableOp", "SaveV2", "RestoreV2", "MergeV2Checkpoints"};
    for (size_t i = 0; i < CL_ARRAY_LEN(no); i++)
        if (strcmp(op, no[i]) == 0)
            return false;
    return true;
}

int eng_tf_import_graph(cl_engine_model *m, const eng_tf_import *imp, cl_err *err)
{
    ctx c = {.m = m, .imp = imp, .lib = imp->graph->library};
    m->opset = 13;
    int rc = -1;
    eng_tf_io *fin = NULL, *fout = NULL;
    size_t nin = imp->n_inputs, nout = imp->n_outputs;
    const eng_tf_io *ins = imp->inputs, *outs = imp->outputs;
    if (flatten(&c, imp->graph, err) != 0)
        goto out;
    if (!outs) {
        /* frozen graph: Placeholders in, unconsumed nodes out */
        bool *consumed = calloc(c.n_nodes + 1, 1);
        fin = calloc(c.n_nodes + 1, sizeof *fin);
        fout = calloc(c.n_nodes + 1, sizeof *fout);
        if (!consumed || !fin || !fout) {
            free(consumed);
            cl_err_nomem(err);
            goto out;
        }
        for (size_t i = 0; i < imp->graph->n_node; i++)
            for (size_t k = 0; k < imp->graph->node[i]->n_input; k++) {
                const char *s = imp->graph->node[i]->input[k];
                char nm[4096];
                snprintf(nm, sizeof nm, "%s", s[0] == '^' ? s + 1 : s);
                char *colon = strrchr(nm, ':');
                if (colon)
                    *colon = 0;
                int ix = smap_get(&c.node_ix, nm);
                if (ix >= 0)
                    consumed[ix] = true;
            }
        for (size_t i = 0; i < c.n_nodes; i++) {
            fnode *f = &c.nodes[i];
            if (strcmp(f->nd->op, "Placeholder") == 0) {
                eng_tf_io *io = &fin[nin++];
                io->alias = f->name;
                io->tensor = f->name;
                io->dtype = tf_attr_type(f, "dtype");
                io->rank = -1;
                const Tensorflow__AttrValue *sa = attr(f->nd, "shape");
                if (sa && sa->value_case == TENSORFLOW__ATTR_VALUE__VALUE_SHAPE && sa->shape && !sa->shape->unknown_rank &&
                    sa->shape->n_dim <= CL_ENGINE_MAX_RANK) {
                    io->rank = (int)sa->shape->n_dim;
                    for (int d = 0; d < io->rank; d++)
                        io->dims[d] = sa->shape->dim[d]->size < 0 ? -1 : sa->shape->dim[d]->size;
                }
            } else if (!consumed[i] && output_op(f->nd->op)) {
                eng_tf_io *io = &fout[nout++];
                io->alias = f->name;
                io->tensor = f->name;
                io->rank = -1;
            }
        }
        free(consumed);
        ins = fin;
        outs = fout;
        if (!nout) {
            cl_err_set(err, CL_E_FORMAT, "the graph has no output (every node's output is consumed)");
            goto out;
        }
    }
    if (nin > 4096 || nout > 4096) {
        cl_err_set(err, CL_E_FORMAT, "the signature has too many inputs or outputs");
        goto out;
    }
    m->in_info = calloc(nin + 1, sizeof *m->in_info);
    m->in_val = calloc(nin + 1, sizeof *m->in_val);
    m->out_info = calloc(nout + 1, sizeof *m->out_info);
    m->out_val = calloc(nout + 1, sizeof *m->out_val);
    if (!m->in_info || !m->in_val || !m->out_info || !m->out_val) {
        cl_err_nomem(err);
        goto out;
    }
    for (size_t i = 0; i < nin; i++) {
        char *t = main_ref(ins[i].tensor, err);
        if (!t)
            goto out;
        fnode *p = producer(&c, t, NULL); /* any tensor may be fed, as in TF; its producer is then not run */
        if (!p) {
            cl_err_set(err, CL_E_FORMAT, "signature input '%s' is tensor '%s', which no node produces", ins[i].alias,
                       ins[i].tensor);
            free(t);
            goto out;
        }
        if (tv_get(&c, t)) {
            cl_err_set(err, CL_E_FORMAT, "signature input '%s' is listed twice", ins[i].alias);
            free(t);
            goto out;
        }
        int v = eng_value_get(m, t, err);
        int dtype = ins[i].dtype ? ins[i].dtype : tf_attr_type(p, "dtype");
        int r = v < 0 ? -1 : tv_set(&c, t, v, -1, dtype, err);
        free(t);
        if (r != 0)
            goto out;
        size_t k = m->n_inputs++;
        m->in_val[k] = v;
        m->values[v].graph_input = (int)k;
        io_from(&m->in_info[k], ins[i].alias, ins[i].tensor, dtype, ins[i].rank, ins[i].dims);
        if (!m->in_info[k].name || (ins[i].tensor && !m->in_info[k].tensor)) {
            cl_err_nomem(err);
            goto out;
        }
        if (m->in_info[k].dtype == CL_ENGINE_DT_UNDEFINED) {
            cl_err_set(err, CL_E_UNSUPPORTED, "input '%s' has type %s, which the engine does not support",
                       ins[i].alias, eng_tf_dtype_name(dtype));
            goto out;
        }
    }
    for (size_t i = 0; i < nout; i++) {
        char *t = main_ref(outs[i].tensor, err);
        if (!t)
            goto out;
        int r = need(&c, t, err);
        tval *tv = r == 0 ? tv_get(&c, t) : NULL;
        free(t);
        if (!tv)
            goto out;
        c.cur = NULL;
        int v = plain_of(&c, tv, err);
        if (v < 0)
            goto out;
        if (m->values[v].konst || m->values[v].graph_input >= 0 || m->values[v].graph_output >= 0) {
            /* a constant, an input or a repeated output: its own value */
            if ((v = emit1(&c, "Identity", &v, 1, NULL, 0, err)) < 0)
                goto out;
        }
        size_t k = m->n_outputs++;
        m->out_val[k] = v;
        m->values[v].graph_output = (int)k;
        int dtype = outs[i].dtype ? outs[i].dtype : tv->dtype;
        io_from(&m->out_info[k], outs[i].alias, outs[i].tensor, dtype, outs[i].rank, outs[i].dims);
        if (!m->out_info[k].name || (outs[i].tensor && !m->out_info[k].tensor)) {
            cl_err_nomem(err);
            goto out;
        }
        if (m->out_info[k].dtype == CL_ENGINE_DT_UNDEFINED) {
            cl_err_set(err, CL_E_UNSUPPORTED, "output '%s' has type %s, which the engine does not support",
                       outs[i].alias, eng_tf_dtype_name(dtype));
            goto out;
        }
    }
    rc = 0;
out:
    for (size_t i = 0; i < c.n_nodes; i++) {
        free(c.nodes[i].name);
        free_strs(c.nodes[i].in, c.nodes[i].n_in);
    }
    free(c.nodes);
    for (size_t i = 0; i < c.n_alias; i++)
        free(c.alias_to[i]);
    free(c.alias_to);
    free(c.tv);
    smap_free(&c.node_ix);
    smap_free(&c.alias);
    smap_free(&c.tv_ix);
    free(fin);
    free(fout);
    return rc;
}

int eng_tf_parse_graphdef(cl_engine_model *m, const uint8_t *buf, size_t len, cl_err *err)
{
    if (!buf || !len)
        return cl_err_set(err, CL_E_FORMAT, "empty model");
    if (len > CL_ENGINE_MAX_MODEL_BYTES)
        return cl_err_set(err, CL_E_FORMAT, "model is %zu bytes (at most %zu)", len, CL_ENGINE_MAX_MODEL_BYTES);
    if (eng_tf_pb_check(&tensorflow__graph_def__descriptor, buf, len, "TensorFlow GraphDef", err) != 0)
        return -1;
    eng_pb_arena a;
    eng_pb_arena_init(&a, len + ((size_t)64 << 10));
    Tensorflow__GraphDef *g = tensorflow__graph_def__unpack(&a.alloc, len, buf);
    int rc = -1;
    if (!g) {
        if (!eng_pb_arena_failed(&a, err))
            cl_err_set(err, CL_E_FORMAT, "not a TensorFlow GraphDef (the protobuf does not parse)");
    } else {
        eng_tf_import imp = {.graph = g};
        rc = eng_tf_import_graph(m, &imp, err);
    }
    eng_pb_arena_release(&a);
    return rc;
}
