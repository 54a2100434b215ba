/* engine/exec.c — the engine's public entry points (load, signature, run, free) and the executor:
 * per-run tensors, nodes run in topological order, intermediate buffers freed as soon as their
 * last consumer has run (so activation memory is reused by the allocator), blocked oneDNN layouts
 * converted to plain only where a kernel needs it.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"
#include "engine/tf/tf.h"

int eng_dnnl_fail(cl_err *err, dnnl_status_t s, const eng_node *n, const char *what)
{
    const char *why = s == dnnl_unimplemented ? "not implemented by oneDNN for these parameters"
                      : s == dnnl_out_of_memory ? "out of memory"
                      : s == dnnl_invalid_arguments ? "invalid arguments"
                      : "oneDNN error";
    cl_status code = s == dnnl_out_of_memory ? CL_E_NOMEM : s == dnnl_unimplemented ? CL_E_UNSUPPORTED : CL_E_FORMAT;
    if (n)
        return eng_node_err(err, code, n, "%s: %s (status %d)", what, why, (int)s);
    return cl_err_set(err, code, "%s: %s (status %d)", what, why, (int)s);
}

/* ---------------------------------------------------------------- load / free */

void eng_model_free_ir(cl_engine_model *m)
{
    for (size_t i = 0; i < m->n_nodes; i++) {
        eng_node *n = &m->nodes[i];
        if (n->state && n->op && n->op->free_state)
            n->op->free_state(n->state);
        free(n->attr);
        for (size_t k = 0; k < n->n_attrs; k++) {
            eng_attr *a = &n->attrs[k];
            free(a->name);
            free(a->s);
            free(a->ints);
            free(a->floats);
            if (a->t) {
                eng_tensor_free(a->t);
                free(a->t);
            }
        }
        free(n->attrs);
        free(n->in);
        free(n->out);
        free(n->name);
        free(n->op_type);
    }
    free(m->nodes);
    for (size_t v = 0; v < m->n_values; v++) {
        free(m->values[v].name);
        if (m->values[v].konst) {
            eng_tensor_free(m->values[v].konst);
            free(m->values[v].konst);
        }
    }
    free(m->values);
    free(m->hash);
    free(m->order);
    for (size_t i = 0; i < m->n_inputs; i++) {
        free((char *)m->in_info[i].name);
        free((char *)m->in_info[i].tensor);
    }
    for (size_t i = 0; i < m->n_outputs; i++) {
        free((char *)m->out_info[i].name);
        free((char *)m->out_info[i].tensor);
    }
    free(m->method_name);
    m->method_name = NULL;
    free(m->in_info);
    free(m->out_info);
    free(m->in_val);
    free(m->out_val);
}

/* CLOISTER_ENGINE_PROFILE=1: time per operator type, printed to stderr when the model is freed
 * (a development aid; the numbers are summed over all runs and threads). */
static void print_profile(cl_engine_model *m)
{
    if (!m->prof_ns)
        return;
    double total = 0;
    for (size_t i = 0; i < m->n_nodes; i++)
        total += (double)m->prof_ns[i];
    fprintf(stderr, "cloister engine profile (%.1f ms in %zu nodes):\n", total / 1e6, m->n_order);
    for (size_t i = 0; i < m->n_nodes; i++) {
        if (!m->prof_ns[i] || !m->nodes[i].op_type)
            continue;
        uint64_t sum = 0;
        int cnt = 0;
        for (size_t j = i; j < m->n_nodes; j++)
            if (m->prof_ns[j] && m->nodes[j].op == m->nodes[i].op) {
                sum += m->prof_ns[j];
                cnt++;
                if (j != i)
                    m->prof_ns[j] = 0;
            }
        fprintf(stderr, "  %-24s %4d nodes %10.2f ms %5.1f%%\n", m->nodes[i].op_type, cnt, (double)sum / 1e6,
                100.0 * (double)sum / (total > 0 ? total : 1));
    }
}

void cl_engine_free(cl_engine_model *m)
{
    if (!m)
        return;
    print_profile(m);
    free(m->prof_ns);
    eng_model_free_ir(m);
    eng_buf_pool_flush();
    for (int i = 0; i < m->n_plain; i++) {
        eng_mem_set_free(&m->plain[i].mems);
        dnnl_primitive_destroy(m->plain[i].prim);
    }
    if (m->dnnl)
        dnnl_engine_destroy(m->dnnl);
    pthread_mutex_destroy(&m->lock);
    pthread_mutex_destroy(&m->mem_lock);
    free(m);
}

static int run(cl_engine_model *m, const cl_engine_tensor *inputs, size_t n_inputs, cl_engine_tensor *outputs,
               size_t n_outputs, size_t *peak, cl_err *err);

/* ---------------------------------------------------------------- working memory
 * What a run needs beyond its inputs (activations, scratchpads, output copies) is measured on every
 * run (tensor.c) and kept per size class of the inputs (powers of two of their bytes): the largest
 * input of the class seen and the largest peak of the class. The estimate for x input bytes is the
 * smallest peak recorded for inputs of at least x bytes (the working memory grows with the input),
 * or, above every recorded size, the largest one's peak scaled in proportion (an upper bound for a
 * network whose memory is a fixed part plus a part per row, as convolutional networks' are: measured
 * on ResNet-18 at 224x224, 5.5 MB at batch 1, 18.8 at 2, 45.8 at 4, 49.6 at 8, 122 at 32, 245 MB at
 * 64, kernels of small batches needing more scratch). The load-time warm-up records batch 1. */
static unsigned mem_class(size_t in)
{
    unsigned c = 0;
    while (in > 1 && c + 1 < ENG_MEM_CLASSES) {
        in >>= 1;
        c++;
    }
    return c;
}

size_t cl_engine_memory_estimate(const cl_engine_model *m, size_t input_bytes)
{
    cl_engine_model *mm = (cl_engine_model *)m; /* the lock only */
    size_t best = SIZE_MAX, top_in = 0, top_peak = 0;
    bool any = false;
    pthread_mutex_lock(&mm->mem_lock);
    for (unsigned c = 0; c < ENG_MEM_CLASSES; c++) {
        const eng_mem_point *pt = &m->mem[c];
        if (!pt->peak)
            continue;
        any = true;
        if (pt->in >= input_bytes && pt->peak < best)
            best = pt->peak;
        if (pt->in > top_in || (pt->in == top_in && pt->peak > top_peak)) {
            top_in = pt->in;
            top_peak = pt->peak;
        }
    }
    pthread_mutex_unlock(&mm->mem_lock);
    if (!any)
        return 0;
    if (best != SIZE_MAX)
        return best;
    double e = top_in ? (double)top_peak * ((double)input_bytes / (double)top_in) : (double)top_peak;
    return e >= (double)SIZE_MAX ? SIZE_MAX : (size_t)e + 1;
}

/* After a run: what it took and needed. */
static void plan_record(cl_engine_model *m, size_t input_bytes, size_t peak)
{
    if (!peak)
        return;
    size_t est = cl_engine_memory_estimate(m, input_bytes);
    if (est && peak > est)
        CL_DEBUG(ENG_MOD, "a run on %zu input bytes needed %zu bytes of working memory, more than the %zu "
                 "estimated: estimate raised", input_bytes, peak, est);
    pthread_mutex_lock(&m->mem_lock);
    eng_mem_point *pt = &m->mem[mem_class(input_bytes)];
    if (input_bytes > pt->in)
        pt->in = input_bytes;
    if (peak > pt->peak)
        pt->peak = peak;
    pthread_mutex_unlock(&m->mem_lock);
}

static size_t inputs_bytes(const cl_engine_tensor *in, size_t n)
{
    size_t b = 0;
    for (size_t i = 0; i < n; i++)
        b += in[i].nbytes;
    return b;
}

/* One run on zeros (see cl_engine_options.no_warmup) at `batch` rows; 0 if it ran, *in_bytes and
 * *peak then say what it took and needed. */
static int warmup_run(cl_engine_model *m, int64_t batch, size_t *in_bytes, size_t *peak)
{
    if (m->n_inputs > 16)
        return -1;
    cl_engine_tensor in[16] = {0}, *out = calloc(m->n_outputs + 1, sizeof *out);
    bool ok = out != NULL;
    for (size_t i = 0; ok && i < m->n_inputs; i++) {
        const cl_engine_io_info *info = &m->in_info[i];
        ok = info->rank >= 0;
        in[i].dtype = info->dtype;
        in[i].rank = info->rank;
        for (int d = 0; ok && d < info->rank; d++) {
            in[i].dims[d] = info->dims[d] < 0 && d == 0 ? batch : info->dims[d];
            ok = in[i].dims[d] >= 0;
        }
        int64_t n = ok ? eng_dims_numel(in[i].dims, in[i].rank) : -1;
        ok = ok && n >= 0 && (size_t)n * cl_engine_dtype_size(info->dtype) <= ((size_t)256 << 20);
        if (ok) {
            in[i].nbytes = (size_t)n * cl_engine_dtype_size(info->dtype);
            in[i].data = calloc(1, in[i].nbytes + 1);
            ok = in[i].data != NULL;
        }
    }
    cl_err err = {0};
    int rc = -1;
    if (ok && run(m, in, m->n_inputs, out, m->n_outputs, peak, &err) == 0) {
        for (size_t k = 0; k < m->n_outputs; k++)
            cl_engine_tensor_release(&out[k]);
        *in_bytes = inputs_bytes(in, m->n_inputs);
        rc = 0;
    } else if (ok) {
        CL_DEBUG(ENG_MOD, "warm-up run at batch %lld failed (ignored): %s", (long long)batch, err.msg);
    }
    for (size_t i = 0; i < m->n_inputs; i++)
        free(in[i].data);
    free(out);
    return rc;
}

/* Warm-up at batch 1: the plan every request needs first (weights reordered) and its working memory. */
static void warmup(cl_engine_model *m)
{
    size_t in = 0, peak = 0;
    if (warmup_run(m, 1, &in, &peak) != 0)
        return;
    plan_record(m, in, peak);
    CL_DEBUG(ENG_MOD, "working memory of a run at batch 1: %zu bytes (inputs: %zu bytes)", peak, in);
}

/* The model's bytes into IR, by format (tf/tf.h tells them apart by content). */
typedef struct load_src {
    const uint8_t *buf;
    size_t len;
    const cl_engine_file *files; /* instead of buf: a SavedModel */
    size_t n_files;
    const char *signature;
} load_src;

static int parse_src(cl_engine_model *m, const load_src *s, cl_err *err)
{
    if (s->files)
        return eng_tf_parse_savedmodel(m, s->files, s->n_files, s->signature, err);
    switch (s->buf && s->len ? eng_tf_sniff(s->buf, s->len) : ENG_FMT_ONNX) {
    case ENG_FMT_TF_GRAPHDEF: return eng_tf_parse_graphdef(m, s->buf, s->len, err);
    case ENG_FMT_TF_SAVEDMODEL: {
        cl_engine_file f = {.name = "saved_model.pb", .data = s->buf, .len = s->len};
        return eng_tf_parse_savedmodel(m, &f, 1, s->signature, err);
    }
    default: return eng_onnx_parse(m, s->buf, s->len, err);
    }
}

static int load(const load_src *src, const cl_engine_options *opts, cl_engine_model **out, cl_err *err);

int cl_engine_load(const uint8_t *buf, size_t len, const cl_engine_options *opts, cl_engine_model **out,
                   cl_err *err)
{
    load_src s = {.buf = buf, .len = len, .signature = opts ? opts->signature : NULL};
    return load(&s, opts, out, err);
}

int cl_engine_load_files(const cl_engine_file *files, size_t n_files, const cl_engine_options *opts,
                         cl_engine_model **out, cl_err *err)
{
    *out = NULL;
    if (!files || !n_files || n_files > 65536)
        return cl_err_set(err, CL_E_INVALID, "no model files");
    load_src s = {.signature = opts ? opts->signature : NULL};
    bool savedmodel = false;
    for (size_t i = 0; i < n_files; i++)
        savedmodel = savedmodel || (files[i].name && (strcmp(files[i].name, "saved_model.pb") == 0 ||
                                                      strcmp(files[i].name, "export.meta") == 0 ||
                                                      strcmp(files[i].name, "saved_model.pbtxt") == 0));
    if (savedmodel || n_files > 1) {
        s.files = files;
        s.n_files = n_files;
    } else {
        s.buf = files[0].data;
        s.len = files[0].len;
    }
    return load(&s, opts, out, err);
}

static int load(const load_src *src, const cl_engine_options *opts, cl_engine_model **out, cl_err *err)
{
    *out = NULL;
    cl_engine_model *m = calloc(1, sizeof *m);
    if (!m)
        return cl_err_nomem(err);
    pthread_mutex_init(&m->lock, NULL);
    pthread_mutex_init(&m->mem_lock, NULL);
    m->threads = opts && opts->threads > 0 ? opts->threads : 0;
    m->direct_conv = opts && opts->direct_conv;
    if (dnnl_engine_create(&m->dnnl, dnnl_cpu, 0) != dnnl_success) {
        cl_engine_free(m);
        return cl_err_set(err, CL_E_INTERNAL, "cannot create the oneDNN CPU engine");
    }
    if (m->threads > 0)
        omp_set_num_threads(m->threads);
    /* each phase's time at debug level (CLOISTER_LOG=debug): where a slow load goes */
    uint64_t t0 = cl_now_ns(), t1 = 0, t2 = 0, t3 = 0;
    if (parse_src(m, src, err) != 0 || (t1 = cl_now_ns(), eng_graph_prepare(m, err)) != 0 ||
        (t2 = cl_now_ns(), eng_shape_infer(m, err)) != 0) {
        cl_engine_free(m);
        return -1;
    }
    t3 = cl_now_ns();
    if (!(opts && opts->no_warmup))
        warmup(m);
    /* nothing may point into buf past this point (konst.c) */
    if (eng_consts_after_load(m, err) != 0) {
        cl_engine_free(m);
        return -1;
    }
    CL_DEBUG(ENG_MOD, "load: parse %.1f ms, graph preparation (folding, fusion) %.1f ms, shapes %.1f ms, "
             "warm-up %.1f ms", (double)(t1 - t0) / 1e6, (double)(t2 - t1) / 1e6, (double)(t3 - t2) / 1e6,
             (double)(cl_now_ns() - t3) / 1e6);
    const char *prof = getenv("CLOISTER_ENGINE_PROFILE");
    if (prof && prof[0] == '1')
        m->prof_ns = calloc(m->n_nodes + 1, sizeof *m->prof_ns);
    *out = m;
    return 0;
}

size_t cl_engine_num_inputs(const cl_engine_model *m) { return m->n_inputs; }
const char *cl_engine_method_name(const cl_engine_model *m) { return m->method_name; }
size_t cl_engine_num_outputs(const cl_engine_model *m) { return m->n_outputs; }
const cl_engine_io_info *cl_engine_input(const cl_engine_model *m, size_t i)
{
    return i < m->n_inputs ? &m->in_info[i] : NULL;
}
const cl_engine_io_info *cl_engine_output(const cl_engine_model *m, size_t i)
{
    return i < m->n_outputs ? &m->out_info[i] : NULL;
}
int cl_engine_find_input(const cl_engine_model *m, const char *name)
{
    for (size_t i = 0; i < m->n_inputs; i++)
        if (strcmp(m->in_info[i].name, name) == 0)
            return (int)i;
    return -1;
}
size_t cl_engine_num_nodes(const cl_engine_model *m) { return m->n_order; }

/* ---------------------------------------------------------------- run helpers */

eng_tensor *eng_in(eng_run *r, const eng_node *n, int i)
{
    if (i >= n->n_in || n->in[i] < 0)
        return NULL;
    return &r->vals[n->in[i]];
}

static dnnl_format_tag_t plain_tag(int rank)
{
    static const dnnl_format_tag_t tags[] = {dnnl_a, dnnl_a, dnnl_ab, dnnl_abc, dnnl_abcd, dnnl_abcde,
                                             dnnl_abcdef, dnnl_abcdefg, dnnl_abcdefgh};
    return tags[rank];
}

bool eng_mem_take(eng_mem_set *s)
{
    return !atomic_flag_test_and_set_explicit(&s->busy, memory_order_acquire);
}

void eng_mem_release(eng_mem_set *s, bool held)
{
    if (held)
        atomic_flag_clear_explicit(&s->busy, memory_order_release);
}

dnnl_status_t eng_mem(dnnl_engine_t eng, eng_mem_set *s, bool held, int i, const dnnl_memory_desc_t *md, void *p,
                      dnnl_memory_t *out)
{
    if (!held)
        return dnnl_memory_create(out, md, eng, p);
    if (s->m[i]) {
        *out = s->m[i];
        return dnnl_memory_set_data_handle(s->m[i], p);
    }
    dnnl_status_t st = dnnl_memory_create(&s->m[i], md, eng, p);
    *out = st == dnnl_success ? s->m[i] : NULL;
    return st;
}

void eng_mem_done(bool held, dnnl_memory_t m)
{
    if (!held && m)
        dnnl_memory_destroy(m);
}

void eng_mem_set_free(eng_mem_set *s)
{
    for (int i = 0; i < ENG_MEM_SLOTS; i++)
        if (s->m[i])
            dnnl_memory_destroy(s->m[i]);
    memset(s->m, 0, sizeof s->m);
}

/* The reorder from layout smd to the plain pmd: from the model's cache, or made and cached. Runs of
 * a model use a cached one concurrently, which oneDNN allows. When the cache is full it is made for
 * this call only (*owned: the caller destroys it). NULL when oneDNN cannot make it. */
static dnnl_primitive_t plain_reorder(cl_engine_model *m, const dnnl_memory_desc_t *smd, const dnnl_memory_desc_t *pmd,
                                      bool *owned, eng_mem_set **mems)
{
    *owned = false;
    *mems = NULL;
    pthread_mutex_lock(&m->lock);
    for (int i = 0; i < m->n_plain; i++)
        if (dnnl_memory_desc_equal(&m->plain[i].md, smd)) {
            dnnl_primitive_t p = m->plain[i].prim;
            *mems = &m->plain[i].mems;
            pthread_mutex_unlock(&m->lock);
            return p;
        }
    pthread_mutex_unlock(&m->lock);
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    if (dnnl_reorder_primitive_desc_create(&pd, smd, m->dnnl, pmd, m->dnnl, NULL) == dnnl_success)
        (void)dnnl_primitive_create(&prim, pd);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (!prim)
        return NULL;
    pthread_mutex_lock(&m->lock);
    dnnl_primitive_t keep = prim;
    for (int i = 0; i < m->n_plain && keep == prim; i++)
        if (dnnl_memory_desc_equal(&m->plain[i].md, smd)) {
            keep = m->plain[i].prim; /* another run made it meanwhile */
            *mems = &m->plain[i].mems;
        }
    if (keep == prim && m->n_plain < (int)CL_ARRAY_LEN(m->plain)) {
        m->plain[m->n_plain].md = *smd;
        *mems = &m->plain[m->n_plain].mems;
        m->plain[m->n_plain++].prim = prim;
    } else if (keep == prim) {
        *owned = true;
    }
    pthread_mutex_unlock(&m->lock);
    if (keep != prim)
        dnnl_primitive_destroy(prim);
    return keep;
}

int eng_make_plain(eng_run *r, eng_tensor *t, cl_err *err)
{
    if (!t->blocked)
        return 0;
    eng_tensor p = {.dtype = t->dtype, .rank = t->rank};
    memcpy(p.dims, t->dims, sizeof p.dims);
    if (eng_tensor_alloc(&p, err) != 0)
        return -1;
    dnnl_memory_desc_t pmd;
    dnnl_dims_t dd;
    int rank = t->rank ? t->rank : 1;
    for (int i = 0; i < rank; i++)
        dd[i] = t->rank ? t->dims[i] : 1;
    dnnl_memory_desc_init_by_tag(&pmd, rank, dd, dnnl_f32, plain_tag(rank));
    dnnl_memory_t src = NULL, dst = NULL;
    bool owned;
    eng_mem_set *mems;
    dnnl_primitive_t prim = plain_reorder(r->m, t->md, &pmd, &owned, &mems);
    bool held = mems && eng_mem_take(mems);
    dnnl_status_t s = prim ? eng_mem(r->m->dnnl, mems, held, 0, t->md, t->data, &src) : dnnl_out_of_memory;
    if (s == dnnl_success)
        s = eng_mem(r->m->dnnl, mems, held, 1, &pmd, p.data, &dst);
    if (s == dnnl_success) {
        dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}};
        s = dnnl_primitive_execute(prim, r->stream, 2, args);
        if (s == dnnl_success)
            s = dnnl_stream_wait(r->stream);
    }
    eng_mem_done(held, src);
    eng_mem_done(held, dst);
    if (mems)
        eng_mem_release(mems, held);
    if (owned)
        dnnl_primitive_destroy(prim);
    if (s != dnnl_success) {
        eng_tensor_free(&p);
        return eng_dnnl_fail(err, s, NULL, "reorder to plain layout");
    }
    int refs = t->refs;
    eng_tensor_free(t);
    *t = p;
    t->refs = refs;
    return 0;
}

eng_tensor *eng_in_plain(eng_run *r, const eng_node *n, int i, cl_err *err)
{
    eng_tensor *t = eng_in(r, n, i);
    if (t && t->blocked && eng_make_plain(r, t, err) != 0)
        return NULL;
    return t;
}

/* Omitted outputs are computed into this per-thread scratch tensor, freed after the node. */
static _Thread_local eng_tensor discard[4];
static _Thread_local int n_discard;

void eng_discard_flush(void)
{
    for (int k = 0; k < n_discard; k++)
        eng_tensor_free(&discard[k]);
    n_discard = 0;
}

eng_tensor *eng_out(eng_run *r, const eng_node *n, int i, cl_engine_dtype dt, int rank, const int64_t *dims,
                    cl_err *err)
{
    eng_tensor *t;
    if (i >= n->n_out || n->out[i] < 0) {
        if (n_discard == (int)CL_ARRAY_LEN(discard)) {
            cl_err_set(err, CL_E_INTERNAL, "too many omitted outputs");
            return NULL;
        }
        t = &discard[n_discard++];
    } else {
        t = &r->vals[n->out[i]];
    }
    int refs = t->refs;
    eng_tensor_free(t);
    memset(t, 0, sizeof *t);
    t->refs = refs;
    t->dtype = dt;
    t->rank = rank;
    if (rank < 0 || rank > CL_ENGINE_MAX_RANK) {
        eng_node_err(err, CL_E_UNSUPPORTED, n, "output rank %d is not supported", rank);
        return NULL;
    }
    for (int k = 0; k < rank; k++)
        t->dims[k] = dims[k];
    if (eng_tensor_alloc(t, err) != 0) {
        cl_err_prefix(err, "node '%s' (%s)", n->name, n->op_type);
        return NULL;
    }
    return t;
}

int eng_out_forward(eng_run *r, const eng_node *n, int i, int in_idx, int rank, const int64_t *dims, cl_err *err)
{
    eng_tensor *src = eng_in_plain(r, n, in_idx, err);
    if (!src)
        return -1;
    if (eng_dims_numel(dims, rank) != eng_numel(src))
        return eng_node_err(err, CL_E_FORMAT, n, "cannot reshape %s into %s",
                            eng_dims_str(src->dims, src->rank, (char[128]){0}, 128),
                            eng_dims_str(dims, rank, (char[128]){0}, 128));
    if (i < n->n_out && n->out[i] >= 0 && src->owned && src->refs == 1 && n->in[in_idx] != n->out[i]) {
        /* last use of an intermediate: move the buffer */
        eng_tensor *o = &r->vals[n->out[i]];
        int refs = o->refs;
        eng_tensor_free(o);
        *o = *src;
        o->refs = refs;
        o->rank = rank;
        memcpy(o->dims, dims, sizeof(int64_t) * (size_t)rank);
        src->owned = false;
        return 0;
    }
    eng_tensor *o = eng_out(r, n, i, src->dtype, rank, dims, err);
    if (!o)
        return -1;
    if (src->nbytes)
        memcpy(o->data, src->data, src->nbytes);
    return 0;
}

/* ---------------------------------------------------------------- run */

static void release_val(eng_run *r, int v)
{
    eng_tensor *t = &r->vals[v];
    if (--t->refs <= 0)
        eng_tensor_free(t);
}

int cl_engine_run(cl_engine_model *m, const cl_engine_tensor *inputs, size_t n_inputs, cl_engine_tensor *outputs,
                  size_t n_outputs, cl_err *err)
{
    size_t peak = 0;
    int rc = run(m, inputs, n_inputs, outputs, n_outputs, &peak, err);
    if (rc == 0 && n_inputs == m->n_inputs)
        plan_record(m, inputs_bytes(inputs, n_inputs), peak);
    return rc;
}

/* A run, its working memory measured into *peak. */
static int run(cl_engine_model *m, const cl_engine_tensor *inputs, size_t n_inputs, cl_engine_tensor *outputs,
               size_t n_outputs, size_t *peak, cl_err *err)
{
    if (n_inputs != m->n_inputs)
        return cl_err_set(err, CL_E_INVALID, "the model takes %zu inputs, %zu given", m->n_inputs, n_inputs);
    if (n_outputs != m->n_outputs)
        return cl_err_set(err, CL_E_INVALID, "the model has %zu outputs, %zu requested", m->n_outputs, n_outputs);
    for (size_t i = 0; i < n_inputs; i++) {
        const cl_engine_io_info *info = &m->in_info[i];
        const cl_engine_tensor *t = &inputs[i];
        if (t->dtype != info->dtype)
            return cl_err_set(err, CL_E_INVALID, "input '%s' must be %s, got %s", info->name,
                              cl_engine_dtype_name(info->dtype), cl_engine_dtype_name(t->dtype));
        if (t->rank < 0 || t->rank > CL_ENGINE_MAX_RANK)
            return cl_err_set(err, CL_E_INVALID, "input '%s' has an invalid rank %d", info->name, t->rank);
        int64_t n = eng_dims_numel(t->dims, t->rank);
        if (n < 0 || (size_t)n * cl_engine_dtype_size(t->dtype) != t->nbytes || (!t->data && t->nbytes))
            return cl_err_set(err, CL_E_INVALID, "input '%s': shape %s does not match its %zu data bytes", info->name,
                              eng_dims_str(t->dims, t->rank, (char[128]){0}, 128), t->nbytes);
        if (info->rank >= 0) {
            bool ok = t->rank == info->rank;
            for (int k = 0; ok && k < t->rank; k++)
                if (info->dims[k] >= 0 && info->dims[k] != t->dims[k])
                    ok = false;
            if (!ok)
                return cl_err_set(err, CL_E_INVALID, "input '%s' must have shape %s (-1: any), got %s", info->name,
                                  eng_dims_str(info->dims, info->rank, (char[128]){0}, 128),
                                  eng_dims_str(t->dims, t->rank, (char[128]){0}, 128));
        }
    }
    if (m->threads > 0)
        omp_set_num_threads(m->threads);
    eng_run r = {.m = m};
    r.vals = calloc(m->n_values ? m->n_values : 1, sizeof *r.vals);
    if (!r.vals)
        return cl_err_nomem(err);
    if (dnnl_stream_create(&r.stream, m->dnnl, dnnl_stream_default_flags) != dnnl_success) {
        free(r.vals);
        return cl_err_set(err, CL_E_INTERNAL, "cannot create a oneDNN stream");
    }
    for (size_t v = 0; v < m->n_values; v++) {
        eng_value *val = &m->values[v];
        if (val->konst) {
            r.vals[v] = *val->konst;
            r.vals[v].owned = false;
        }
        r.vals[v].refs = val->n_consumers;
    }
    for (size_t i = 0; i < n_inputs; i++) {
        eng_tensor *t = &r.vals[m->in_val[i]];
        t->dtype = inputs[i].dtype;
        t->rank = inputs[i].rank;
        memcpy(t->dims, inputs[i].dims, sizeof t->dims);
        t->data = inputs[i].data;
        t->nbytes = inputs[i].nbytes;
        t->owned = false;
    }
    int rc = 0;
    eng_run_mem_begin();
    for (size_t oi = 0; oi < m->n_order && rc == 0; oi++) {
        eng_node *n = &m->nodes[m->order[oi]];
        eng_discard_flush();
        uint64_t t0 = m->prof_ns ? cl_now_ns() : 0;
        rc = n->op->run(&r, n, err);
        if (m->prof_ns)
            __atomic_fetch_add(&m->prof_ns[m->order[oi]], cl_now_ns() - t0, __ATOMIC_RELAXED);
        eng_discard_flush();
        if (rc != 0)
            break;
        for (int k = 0; k < n->n_out; k++)
            if (n->out[k] >= 0 && r.vals[n->out[k]].refs <= 0)
                eng_tensor_free(&r.vals[n->out[k]]);
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k] >= 0)
                release_val(&r, n->in[k]);
    }
    size_t done = 0;
    for (; rc == 0 && done < n_outputs; done++) {
        eng_tensor *t = &r.vals[m->out_val[done]];
        if (t->blocked && eng_make_plain(&r, t, err) != 0) {
            rc = -1;
            break;
        }
        cl_engine_tensor *o = &outputs[done];
        memset(o, 0, sizeof *o);
        o->dtype = t->dtype;
        o->rank = t->rank;
        memcpy(o->dims, t->dims, sizeof o->dims);
        o->nbytes = t->nbytes;
        /* outputs are plain malloc() memory (the caller frees them); internal buffers stay pooled */
        o->data = malloc(t->nbytes ? t->nbytes : 1);
        eng_run_mem_add(t->nbytes);
        if (!o->data) {
            rc = cl_err_nomem(err);
            break;
        }
        if (t->nbytes)
            memcpy(o->data, t->data, t->nbytes);
        t->refs--;
    }
    if (rc != 0)
        for (size_t k = 0; k < done && k < n_outputs; k++)
            cl_engine_tensor_release(&outputs[k]);
    for (size_t v = 0; v < m->n_values; v++)
        eng_tensor_free(&r.vals[v]);
    *peak = eng_run_mem_end();
    dnnl_stream_destroy(r.stream);
    free(r.vals);
    return rc;
}
