/* engine/tf/savedmodel.c — TensorFlow SavedModel directories (given as in-memory files: saved_model.pb,
 * variables/variables.index, variables/variables.data-*): the MetaGraphDef tagged `serve`, one of its
 * signature_defs (serving_default unless another is named) as the model's signature with TF's aliases as
 * the input/output names, and the variables' checkpoint keys found through the saver's restore graph
 * (TF1: RestoreV2 -> Assign/AssignVariableOp in the graph; TF2: the same inside the restore function that
 * saver_def.restore_op_name calls, its resource arguments mapped back to the caller's VarHandleOps), then
 * the graph import (graphdef.c) with the TensorBundle (bundle.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensorflow/core/protobuf/saved_model.pb-c.h"

#include "engine/tf/tf.h"

static const cl_engine_file *file_named(const cl_engine_file *files, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (files[i].name && strcmp(files[i].name, name) == 0)
            return &files[i];
    return NULL;
}

/* The node a reference names: "node", "node:k", "node:arg:k", "^node" -> "node" in out. */
static void ref_node(const char *ref, char *out, size_t cap)
{
    if (ref[0] == '^')
        ref++;
    const char *colon = strchr(ref, ':');
    size_t n = colon ? (size_t)(colon - ref) : strlen(ref);
    snprintf(out, cap, "%.*s", (int)(n < cap ? n : cap - 1), ref);
}

static int ref_index(const char *ref)
{
    const char *colon = strrchr(ref, ':');
    if (!colon)
        return 0;
    const char *q = colon + 1;
    if (!*q)
        return 0;
    for (const char *p = q; *p; p++)
        if (*p < '0' || *p > '9')
            return 0;
    long v = strtol(q, NULL, 10);
    return v > 65535 ? 65535 : (int)v;
}

static const Tensorflow__NodeDef *find_nd(Tensorflow__NodeDef **nodes, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (nodes[i]->name && strcmp(nodes[i]->name, name) == 0)
            return nodes[i];
    return NULL;
}

static const Tensorflow__AttrValue *nd_attr(const Tensorflow__NodeDef *nd, const char *name)
{
    for (size_t i = 0; i < nd->n_attr; i++)
        if (nd->attr[i]->key && strcmp(nd->attr[i]->key, name) == 0)
            return nd->attr[i]->value;
    return NULL;
}

typedef struct vars {
    eng_tf_var *v;
    size_t n, cap;
} vars;

static int vars_add(vars *vs, const char *node, const char *key, cl_err *err)
{
    if (vs->n >= 1000000)
        return cl_err_set(err, CL_E_FORMAT, "too many variables");
    if (vs->n == vs->cap) {
        size_t nc = vs->cap ? vs->cap * 2 : 32;
        eng_tf_var *nv = realloc(vs->v, nc * sizeof *nv);
        if (!nv)
            return cl_err_nomem(err);
        vs->v = nv;
        vs->cap = nc;
    }
    vs->v[vs->n].node = strdup(node);
    vs->v[vs->n].key = strdup(key);
    if (!vs->v[vs->n].node || !vs->v[vs->n].key) {
        free(vs->v[vs->n].node);
        free(vs->v[vs->n].key);
        return cl_err_nomem(err);
    }
    vs->n++;
    return 0;
}

static void vars_free(vars *vs)
{
    for (size_t i = 0; i < vs->n; i++) {
        free(vs->v[i].node);
        free(vs->v[i].key);
    }
    free(vs->v);
}

/* Within nodes[]: the checkpoint key of the value an Assign receives (through Identity nodes to a
 * RestoreV2 output and that op's constant tensor_names), or NULL. */
static const char *restored_key(Tensorflow__NodeDef **nodes, size_t n, const char *value_ref, char *key, size_t cap)
{
    char nm[1024];
    const char *ref = value_ref;
    for (int hops = 0; hops < 64; hops++) {
        ref_node(ref, nm, sizeof nm);
        const Tensorflow__NodeDef *p = find_nd(nodes, n, nm);
        if (!p)
            return NULL;
        if (strcmp(p->op, "Identity") == 0 && p->n_input) {
            ref = p->input[0];
            continue;
        }
        if (strcmp(p->op, "RestoreV2") != 0 || p->n_input < 2)
            return NULL;
        int idx = ref_index(ref);
        ref_node(p->input[1], nm, sizeof nm);
        const Tensorflow__NodeDef *names = find_nd(nodes, n, nm);
        const Tensorflow__AttrValue *v = names ? nd_attr(names, "value") : NULL;
        if (!v || v->value_case != TENSORFLOW__ATTR_VALUE__VALUE_TENSOR || !v->tensor ||
            (size_t)idx >= v->tensor->n_string_val)
            return NULL;
        ProtobufCBinaryData s = v->tensor->string_val[idx];
        if (s.len >= cap || memchr(s.data, 0, s.len))
            return NULL;
        memcpy(key, s.data, s.len);
        key[s.len] = 0;
        return key;
    }
    return NULL;
}

static bool is_assign(const char *op) { return strcmp(op, "Assign") == 0 || strcmp(op, "AssignVariableOp") == 0; }

/* Variable binding through the saver graph (see the file comment). */
static int bind_vars(const Tensorflow__MetaGraphDef *mg, vars *vs, cl_err *err)
{
    const Tensorflow__GraphDef *g = mg->graph_def;
    char key[1024], nm[1024];
    for (size_t i = 0; i < g->n_node; i++) {
        const Tensorflow__NodeDef *a = g->node[i];
        if (!a->op || !is_assign(a->op) || a->n_input < 2)
            continue;
        if (restored_key(g->node, g->n_node, a->input[1], key, sizeof key)) {
            ref_node(a->input[0], nm, sizeof nm);
            if (vars_add(vs, nm, key, err) != 0)
                return -1;
        }
    }
    /* TF2: the restore function */
    const char *ro = mg->saver_def ? mg->saver_def->restore_op_name : NULL;
    if (!ro || !ro[0])
        return 0;
    ref_node(ro, nm, sizeof nm);
    const Tensorflow__NodeDef *call = find_nd(g->node, g->n_node, nm);
    if (!call || (strcmp(call->op, "StatefulPartitionedCall") != 0 && strcmp(call->op, "PartitionedCall") != 0))
        return 0;
    const Tensorflow__AttrValue *fa = nd_attr(call, "f");
    if (!fa || fa->value_case != TENSORFLOW__ATTR_VALUE__VALUE_FUNC || !fa->func || !fa->func->name || !g->library)
        return 0;
    const Tensorflow__FunctionDef *f = NULL;
    for (size_t i = 0; i < g->library->n_function; i++)
        if (g->library->function[i]->signature && g->library->function[i]->signature->name &&
            strcmp(g->library->function[i]->signature->name, fa->func->name) == 0)
            f = g->library->function[i];
    if (!f)
        return 0;
    /* the call's data inputs, in order */
    const char *args[4096];
    size_t n_args = 0;
    for (size_t k = 0; k < call->n_input && n_args < 4096; k++)
        if (call->input[k][0] != '^')
            args[n_args++] = call->input[k];
    for (size_t i = 0; i < f->n_node_def; i++) {
        const Tensorflow__NodeDef *a = f->node_def[i];
        if (!a->op || strcmp(a->op, "AssignVariableOp") != 0 || a->n_input < 2)
            continue;
        if (!restored_key(f->node_def, f->n_node_def, a->input[1], key, sizeof key))
            continue;
        for (size_t k = 0; k < f->signature->n_input_arg && k < n_args; k++)
            if (f->signature->input_arg[k]->name && strcmp(f->signature->input_arg[k]->name, a->input[0]) == 0) {
                ref_node(args[k], nm, sizeof nm);
                if (vars_add(vs, nm, key, err) != 0)
                    return -1;
            }
    }
    return 0;
}

static int io_cmp(const void *a, const void *b)
{
    return strcmp(((const eng_tf_io *)a)->alias, ((const eng_tf_io *)b)->alias);
}

static int sig_io(Tensorflow__SignatureDef__InputsEntry **e, size_t n, eng_tf_io **out, const char *sig,
                  const char *what, cl_err *err)
{
    *out = calloc(n + 1, sizeof **out);
    if (!*out)
        return cl_err_nomem(err);
    for (size_t i = 0; i < n; i++) {
        const Tensorflow__TensorInfo *ti = e[i]->value;
        if (!e[i]->key || !ti || ti->encoding_case != TENSORFLOW__TENSOR_INFO__ENCODING_NAME || !ti->name)
            return cl_err_set(err, CL_E_UNSUPPORTED, "signature '%s': %s '%s' is not a dense tensor", sig, what,
                              e[i]->key ? e[i]->key : "?");
        eng_tf_io *io = &(*out)[i];
        io->alias = e[i]->key;
        io->tensor = ti->name;
        io->dtype = ti->dtype;
        io->rank = -1;
        if (ti->tensor_shape && !ti->tensor_shape->unknown_rank) {
            if (ti->tensor_shape->n_dim > CL_ENGINE_MAX_RANK)
                return cl_err_set(err, CL_E_UNSUPPORTED, "signature '%s': %s '%s' has rank %zu (at most %d)", sig,
                                  what, e[i]->key, ti->tensor_shape->n_dim, CL_ENGINE_MAX_RANK);
            io->rank = (int)ti->tensor_shape->n_dim;
            for (int d = 0; d < io->rank; d++)
                io->dims[d] = ti->tensor_shape->dim[d]->size < 0 ? -1 : ti->tensor_shape->dim[d]->size;
        }
        if (eng_tf_dtype(io->dtype) == CL_ENGINE_DT_UNDEFINED)
            return cl_err_set(err, CL_E_UNSUPPORTED, "signature '%s': %s '%s' has type %s, which the engine does not "
                              "support", sig, what, e[i]->key, eng_tf_dtype_name(io->dtype));
    }
    qsort(*out, n, sizeof **out, io_cmp);
    return 0;
}

int eng_tf_parse_savedmodel(cl_engine_model *m, const cl_engine_file *files, size_t n_files, const char *signature,
                            cl_err *err)
{
    const cl_engine_file *pb = file_named(files, n_files, "saved_model.pb");
    if (!pb) {
        if (file_named(files, n_files, "saved_model.pbtxt"))
            return cl_err_set(err, CL_E_UNSUPPORTED, "saved_model.pbtxt (text format) is not supported: save the model "
                              "in binary form (saved_model.pb)");
        if (file_named(files, n_files, "export.meta"))
            return cl_err_set(err, CL_E_UNSUPPORTED, "this is a legacy SessionBundle export (export.meta), not a "
                              "SavedModel; TF Serving no longer loads these either: re-export it with "
                              "tf.saved_model");
        return cl_err_set(err, CL_E_FORMAT, "no saved_model.pb");
    }
    if (!pb->len)
        return cl_err_set(err, CL_E_FORMAT, "saved_model.pb is empty");
    if (pb->len > CL_ENGINE_MAX_MODEL_BYTES)
        return cl_err_set(err, CL_E_FORMAT, "saved_model.pb is %zu bytes (at most %zu)", pb->len,
                          CL_ENGINE_MAX_MODEL_BYTES);
    if (eng_tf_pb_check(&tensorflow__saved_model__descriptor, pb->data, pb->len, "saved_model.pb", err) != 0)
        return -1;
    eng_pb_arena a;
    eng_pb_arena_init(&a, pb->len + ((size_t)64 << 10));
    int rc = -1;
    eng_bundle *bundle = NULL;
    eng_tf_io *ins = NULL, *outs = NULL;
    vars vs = {0};
    Tensorflow__SavedModel *sm = tensorflow__saved_model__unpack(&a.alloc, pb->len, pb->data);
    if (!sm) {
        if (!eng_pb_arena_failed(&a, err))
            cl_err_set(err, CL_E_FORMAT, "saved_model.pb is not a SavedModel (the protobuf does not parse)");
        goto out;
    }
    const Tensorflow__MetaGraphDef *mg = NULL;
    char tags[512] = "";
    for (size_t i = 0; i < sm->n_meta_graphs && !mg; i++) {
        const Tensorflow__MetaGraphDef *g = sm->meta_graphs[i];
        for (size_t t = 0; g->meta_info_def && t < g->meta_info_def->n_tags; t++) {
            if (strcmp(g->meta_info_def->tags[t], "serve") == 0)
                mg = g;
            snprintf(tags + strlen(tags), sizeof tags - strlen(tags), "%s'%s'", tags[0] ? ", " : "",
                     g->meta_info_def->tags[t]);
        }
    }
    if (!mg) {
        cl_err_set(err, CL_E_FORMAT, "saved_model.pb has no MetaGraphDef tagged 'serve' (%zu meta graphs; tags: %s)",
                   sm->n_meta_graphs, tags[0] ? tags : "none");
        goto out;
    }
    if (!mg->graph_def) {
        cl_err_set(err, CL_E_FORMAT, "the 'serve' MetaGraphDef has no graph");
        goto out;
    }
    const char *want = signature && signature[0] ? signature : "serving_default";
    const Tensorflow__SignatureDef *sd = NULL;
    char names[768] = "";
    for (size_t i = 0; i < mg->n_signature_def; i++) {
        const char *k = mg->signature_def[i]->key;
        if (!k)
            continue;
        if (strcmp(k, want) == 0)
            sd = mg->signature_def[i]->value;
        if (strncmp(k, "__", 2) != 0)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s'%s'", names[0] ? ", " : "", k);
    }
    if (!sd) {
        cl_err_set(err, CL_E_FORMAT, "the SavedModel has no signature '%s' (its signatures: %s)", want,
                   names[0] ? names : "none");
        goto out;
    }
    if (sig_io(sd->inputs, sd->n_inputs, &ins, want, "input", err) != 0 ||
        sig_io((Tensorflow__SignatureDef__InputsEntry **)sd->outputs, sd->n_outputs, &outs, want, "output", err) != 0)
        goto out;
    if (!sd->n_outputs) {
        cl_err_set(err, CL_E_FORMAT, "signature '%s' has no outputs", want);
        goto out;
    }
    const cl_engine_file *idx = file_named(files, n_files, "variables/variables.index");
    if (idx && eng_bundle_open(idx->data, idx->len, files, n_files, "variables/variables", &bundle, err) != 0)
        goto out;
    if (bind_vars(mg, &vs, err) != 0)
        goto out;
    eng_tf_import imp = {.graph = mg->graph_def, .inputs = ins, .outputs = outs, .n_inputs = sd->n_inputs,
                         .n_outputs = sd->n_outputs, .bundle = bundle, .vars = vs.v, .n_vars = vs.n};
    rc = eng_tf_import_graph(m, &imp, err);
    if (rc != 0)
        cl_err_prefix(err, "SavedModel signature '%s'", want);
    else if (sd->method_name && sd->method_name[0] && !(m->method_name = strdup(sd->method_name)))
        rc = cl_err_nomem(err);
out:
    vars_free(&vs);
    free(ins);
    free(outs);
    eng_bundle_free(bundle);
    eng_pb_arena_release(&a);
    return rc;
}
