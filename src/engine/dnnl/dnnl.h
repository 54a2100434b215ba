/* engine/dnnl/dnnl.h — what the oneDNN kernels (src/engine/dnnl/) share: the per-node primitive cache
 * (prim.c: one entry per input shape and layout, created on first use under the model lock, read-only
 * afterwards), the helpers that execute a cached primitive into a node's output, and the compiled
 * window attributes of Conv / ConvTranspose / pooling (conv.c decodes them at load). Private to
 * src/engine.
 */
#ifndef CLOISTER_ENGINE_DNNL_H
#define CLOISTER_ENGINE_DNNL_H

#include "engine/ops/ops.h"

#define MAX_SP 3 /* spatial dims */

typedef struct prim_entry {
    struct prim_entry *next;
    int rank;
    int64_t dims[CL_ENGINE_MAX_RANK]; /* input dims */
    dnnl_memory_desc_t in_md;        /* the incoming tensor's layout */
    bool with_sum;
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t src_md, dst_md, wei_md, bias_md, scratch_md;
    dnnl_primitive_t src_reorder; /* in_md -> src_md when they differ */
    int wplain_rank;              /* the weights' plain shape (goihw for groups) */
    int w_rank;                   /* the ONNX weights' shape (Conv cache key) */
    int64_t w_dims[CL_ENGINE_MAX_RANK];
    int64_t wplain_dims[CL_ENGINE_MAX_RANK];
    void *wei;                    /* reordered weights (owned unless wei_shared) */
    bool wei_shared;
    int64_t out_dims[CL_ENGINE_MAX_RANK];
    dnnl_memory_desc_t *keys; /* extra key layouts (Concat: every input; binary: the second input) */
    int n_keys;
    int variant;              /* kernel-specific part of the key */
    eng_mem_set mems;         /* the arguments' memory objects (slots: see each kernel) */
} prim_entry;

typedef struct prim_cache {
    prim_entry *head;
} prim_cache;


void eng_prim_entry_free(prim_entry *e);
/* konst.c: a Conv's plain weights, released after the warm-up reordered them, rebuilt into *tmp
 * (secure memory; cl_secmem_free it, also on failure) from the blocked copy of an entry of cache. */
dnnl_status_t eng_conv_weights_plain(eng_run *r, const prim_cache *cache, const dnnl_memory_desc_t *wplain,
                                     void **tmp);
dnnl_format_tag_t eng_plain_tag(int rank);
void eng_plain_md(dnnl_memory_desc_t *md, int rank, const int64_t *dims);
/* The layout of a run-time tensor. */
void eng_tensor_md(const eng_tensor *t, dnnl_memory_desc_t *md);
/* The entry for input x in layout in_md (w: Conv's weights, whose shape is part of the key; NULL for
 * pooling). */
prim_entry *eng_cache_find(prim_cache *c, const eng_tensor *x, const dnnl_memory_desc_t *in_md, bool with_sum,
                           const eng_tensor *w);
/* One reorder src->dst; its memory objects come from slots i0 and i0 + 1 of mems when held, else are
 * made for the call (mems may be NULL then). cached: the reorder primitive, or NULL to make one. */
dnnl_status_t eng_do_reorder(eng_run *r, const dnnl_memory_desc_t *smd, void *sp, const dnnl_memory_desc_t *dmd,
                             void *dp, dnnl_primitive_t cached, eng_mem_set *mems, bool held, int i0);
/* A pooled buffer for a tensor of layout md (NULL beyond the size limits or out of memory). */
void *eng_alloc_md(const dnnl_memory_desc_t *md);
/* n->state as a primitive cache, made on first use (caller holds the model lock). */
prim_cache *eng_node_cache(eng_run *r, eng_node *n, cl_err *err);
/* The entry keyed by (keys, variant) and the creation of one from a primitive descriptor (which it
 * takes over); caller holds the lock. */
prim_entry *eng_cache_find_keys(prim_cache *c, const dnnl_memory_desc_t *keys, int n_keys, int variant);
prim_entry *eng_entry_new(prim_cache *c, const dnnl_memory_desc_t *keys, int n_keys, int variant,
                          dnnl_primitive_desc_t pd, const eng_node *n, cl_err *err);
/* A primitive attribute with a user-managed scratchpad (NULL on failure). */
dnnl_primitive_attr_t eng_user_scratch_attr(void);
/* Executes e with the (arg, md, pointer) triples plus DST (a new buffer) and the scratchpad; the result
 * becomes output 0 of n with dims `dims`, in the entry's destination layout. */
int eng_exec_to_output(eng_run *r, eng_node *n, prim_entry *e, int nargs, const int *ids,
                       const dnnl_memory_desc_t *mds, void *const *ptrs, int rank, const int64_t *dims, cl_err *err);
/* Output 0 of n becomes dst (owned), dims `dims`, in layout *md (blocked unless it is the plain one). */
void eng_set_dnnl_output(eng_run *r, eng_node *n, void *dst, int rank, const int64_t *dims,
                         const dnnl_memory_desc_t *md);
/* A non-empty fp32 tensor of rank 3-5. */
bool eng_is_f32_nd(const eng_tensor *t);

/* ---------------------------------------------------------------- window attributes (conv.c) */

enum { AP_NOTSET, AP_SAME_UPPER, AP_SAME_LOWER, AP_VALID };

/* Conv, ConvTranspose, MaxPool, AveragePool: the attributes as given (pointers into the node's
 * attributes, NULL and 0 when absent), validated at load: every count agrees on the number of spatial
 * dims (1-3), values are in range. */
typedef struct eng_window_attr {
    const int64_t *ks, *st, *dl, *pads, *opad, *oshape;
    size_t ck, cs, cd, cp, co, cos;
    int nsp;          /* the spatial dims the attributes imply, -1 when none says */
    int auto_pad;     /* AP_* */
    int64_t group;
    bool ceil_mode, count_include_pad;
} eng_window_attr;

/* Decodes the window attributes of n (what: which ones the op has). */
int eng_window_prepare(eng_node *n, eng_window_attr *wa, bool deconv, cl_err *err);
/* Conv and pooling output size along spatial dim i of nsp (-1 when unknown). */
int64_t eng_window_out(const eng_window_attr *wa, int64_t in, int i, int nsp, int64_t k, bool ceil_mode);

typedef struct eng_geom {
    int nsp;
    int64_t k[MAX_SP], s[MAX_SP], d[MAX_SP], pl[MAX_SP], pr[MAX_SP], out[MAX_SP];
} eng_geom;
/* Kernel, strides, dilations, pads (explicit or auto_pad) and output sizes for input x. */
int eng_make_geom(const eng_node *n, const eng_window_attr *wa, const eng_tensor *x, const int64_t *kernel,
                  bool ceil_mode, eng_geom *g, cl_err *err);

#endif
