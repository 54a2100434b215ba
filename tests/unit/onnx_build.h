/* tests/unit/onnx_build.h — building ONNX models in memory for the engine's unit tests (test_engine.c,
 * test_engine_fuse.c): an arena of allocations freed at once (arena_free), a graph builder (mb_*: inputs,
 * outputs, initializers, nodes with comma-separated input/output names, attributes) and mb_pack, which
 * serialises the model at an opset with the protobuf-c code generated from onnx.proto. Single-threaded;
 * each test file has its own arena.
 */
#ifndef CLOISTER_TESTS_ONNX_BUILD_H
#define CLOISTER_TESTS_ONNX_BUILD_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "onnx.pb-c.h"

/* ---------------------------------------------------------------- building models */

/* Everything allocated while building a model, freed by arena_free(). */
static void *arena[4096];
static size_t n_arena;

static inline void *A(size_t n)
{
    void *p = calloc(1, n ? n : 1);
    assert_non_null(p);
    assert_true(n_arena < CL_ARRAY_LEN(arena));
    arena[n_arena++] = p;
    return p;
}

static inline void arena_free(void)
{
    for (size_t i = 0; i < n_arena; i++)
        free(arena[i]);
    n_arena = 0;
}

static inline char *S(const char *s)
{
    char *p = A(strlen(s) + 1);
    strcpy(p, s);
    return p;
}

typedef struct mb {
    Onnx__GraphProto g;
    Onnx__NodeProto *nodes[64];
    Onnx__TensorProto *inits[64];
    Onnx__ValueInfoProto *ins[8], *outs[8];
} mb;

static inline void mb_init(mb *m)
{
    memset(m, 0, sizeof *m);
    onnx__graph_proto__init(&m->g);
    m->g.node = m->nodes;
    m->g.initializer = m->inits;
    m->g.input = m->ins;
    m->g.output = m->outs;
    m->g.name = S("g");
}

static inline Onnx__TensorProto *mb_init_tensor(mb *m, const char *name, int dt, int rank, const int64_t *dims,
                                         const void *data, size_t nbytes)
{
    Onnx__TensorProto *t = A(sizeof *t);
    onnx__tensor_proto__init(t);
    t->name = S(name);
    t->has_data_type = 1;
    t->data_type = dt;
    t->n_dims = (size_t)rank;
    t->dims = A(sizeof(int64_t) * (size_t)(rank + 1));
    if (rank > 0) /* a scalar has no dims (and may pass NULL) */
        memcpy(t->dims, dims, sizeof(int64_t) * (size_t)rank);
    t->has_raw_data = 1;
    t->raw_data.len = nbytes;
    t->raw_data.data = A(nbytes);
    memcpy(t->raw_data.data, data, nbytes);
    m->inits[m->g.n_initializer++] = t;
    return t;
}

static inline Onnx__ValueInfoProto *vi(const char *name, int dt, int rank, const int64_t *dims)
{
    Onnx__ValueInfoProto *v = A(sizeof *v);
    onnx__value_info_proto__init(v);
    v->name = S(name);
    Onnx__TypeProto *tp = A(sizeof *tp);
    onnx__type_proto__init(tp);
    Onnx__TypeProto__Tensor *tt = A(sizeof *tt);
    onnx__type_proto__tensor__init(tt);
    tt->has_elem_type = 1;
    tt->elem_type = dt;
    Onnx__TensorShapeProto *sh = A(sizeof *sh);
    onnx__tensor_shape_proto__init(sh);
    sh->n_dim = (size_t)rank;
    sh->dim = A(sizeof(void *) * (size_t)(rank + 1));
    for (int i = 0; i < rank; i++) {
        Onnx__TensorShapeProto__Dimension *d = A(sizeof *d);
        onnx__tensor_shape_proto__dimension__init(d);
        if (dims[i] >= 0) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d->dim_value = dims[i];
        } else {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            d->dim_param = S("N");
        }
        sh->dim[i] = d;
    }
    tt->shape = sh;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    v->type = tp;
    return v;
}

static inline void mb_input(mb *m, const char *name, int dt, int rank, const int64_t *dims)
{
    m->ins[m->g.n_input++] = vi(name, dt, rank, dims);
}

static inline void mb_output(mb *m, const char *name, int dt, int rank, const int64_t *dims)
{
    m->outs[m->g.n_output++] = vi(name, dt, rank, dims);
}

/* ins/outs: comma-separated names ("" entries allowed). */
static inline Onnx__NodeProto *mb_node(mb *m, const char *op, const char *name, const char *ins, const char *outs)
{
    Onnx__NodeProto *n = A(sizeof *n);
    onnx__node_proto__init(n);
    n->op_type = S(op);
    n->name = S(name);
    const char *lists[2] = {ins, outs};
    for (int k = 0; k < 2; k++) {
        char **arr = A(sizeof(char *) * 16);
        size_t cnt = 0;
        char *copy = S(lists[k]);
        for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
            arr[cnt++] = strcmp(tok, "-") == 0 ? S("") : tok;
        if (k == 0) {
            n->input = arr;
            n->n_input = cnt;
        } else {
            n->output = arr;
            n->n_output = cnt;
        }
    }
    n->attribute = A(sizeof(void *) * 16);
    m->nodes[m->g.n_node++] = n;
    return n;
}

static inline Onnx__AttributeProto *attr(Onnx__NodeProto *n, const char *name, int type)
{
    Onnx__AttributeProto *a = A(sizeof *a);
    onnx__attribute_proto__init(a);
    a->name = S(name);
    a->has_type = 1;
    a->type = type;
    n->attribute[n->n_attribute++] = a;
    return a;
}

static inline void attr_ints(Onnx__NodeProto *n, const char *name, size_t cnt, const int64_t *v)
{
    Onnx__AttributeProto *a = attr(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    a->n_ints = cnt;
    a->ints = A(sizeof(int64_t) * cnt);
    memcpy(a->ints, v, sizeof(int64_t) * cnt);
}

static inline void attr_i(Onnx__NodeProto *n, const char *name, int64_t v)
{
    Onnx__AttributeProto *a = attr(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    a->has_i = 1;
    a->i = v;
}

static inline void attr_f(Onnx__NodeProto *n, const char *name, float v)
{
    Onnx__AttributeProto *a = attr(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    a->has_f = 1;
    a->f = v;
}

static inline void attr_s(Onnx__NodeProto *n, const char *name, const char *v)
{
    Onnx__AttributeProto *a = attr(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
    a->has_s = 1;
    a->s.data = (uint8_t *)S(v);
    a->s.len = strlen(v);
}

static inline uint8_t *mb_pack(mb *m, int64_t opset, size_t *len)
{
    Onnx__ModelProto mp;
    onnx__model_proto__init(&mp);
    mp.has_ir_version = 1;
    mp.ir_version = 8;
    Onnx__OperatorSetIdProto os;
    onnx__operator_set_id_proto__init(&os);
    os.domain = S("");
    os.has_version = 1;
    os.version = opset;
    Onnx__OperatorSetIdProto *osp = &os;
    mp.n_opset_import = 1;
    mp.opset_import = &osp;
    mp.graph = &m->g;
    *len = onnx__model_proto__get_packed_size(&mp);
    uint8_t *buf = malloc(*len);
    assert_non_null(buf);
    onnx__model_proto__pack(&mp, buf);
    return buf;
}

#endif
