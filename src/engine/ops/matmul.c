/* engine/ops/matmul.c — MatMul (numpy batch broadcasting; fp32 on oneDNN's sgemm, other numeric types in
 * plain C) and Gemm (fp32 sgemm with the broadcast C term), their prepare function and shape rules.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops/ops.h"

int eng_run_matmul(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *a, *b;
    if (eng_need_in(r, n, 0, &a, err) || eng_need_in(r, n, 1, &b, err))
        return -1;
    if (a->dtype != b->dtype || !(a->dtype == CL_ENGINE_DT_FLOAT || a->dtype == CL_ENGINE_DT_DOUBLE || a->dtype == CL_ENGINE_DT_INT32 ||
                                  a->dtype == CL_ENGINE_DT_INT64 || a->dtype == CL_ENGINE_DT_UINT32 || a->dtype == CL_ENGINE_DT_UINT64))
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "input types %s x %s are not supported",
                            cl_engine_dtype_name(a->dtype), cl_engine_dtype_name(b->dtype));
    if (a->rank == 0 || b->rank == 0)
        return eng_node_err(err, CL_E_FORMAT, n, "inputs must not be scalars");
    /* promote 1-D operands */
    eng_tensor A = *a, B = *b;
    bool a1 = a->rank == 1, b1 = b->rank == 1;
    if (a1) {
        A.rank = 2;
        A.dims[0] = 1;
        A.dims[1] = a->dims[0];
    }
    if (b1) {
        B.rank = 2;
        B.dims[0] = b->dims[0];
        B.dims[1] = 1;
    }
    int64_t M = A.dims[A.rank - 2], K = A.dims[A.rank - 1], K2 = B.dims[B.rank - 2], N = B.dims[B.rank - 1];
    if (K != K2)
        return eng_node_err(err, CL_E_FORMAT, n, "shapes %s and %s cannot be multiplied", DIMS(a), DIMS(b));
    /* broadcast batch dims */
    eng_tensor Ab = {.rank = A.rank - 2}, Bb = {.rank = B.rank - 2};
    memcpy(Ab.dims, A.dims, sizeof(int64_t) * (size_t)Ab.rank);
    memcpy(Bb.dims, B.dims, sizeof(int64_t) * (size_t)Bb.rank);
    eng_tensor *ts[2] = {&Ab, &Bb};
    eng_bcast bc;
    if (eng_bcast_init(&bc, ts, 2, n, err) != 0)
        return -1;
    int64_t od[CL_ENGINE_MAX_RANK];
    int orank = 0;
    for (int d = 0; d < bc.rank; d++)
        od[orank++] = bc.dims[d];
    if (!a1)
        od[orank++] = M;
    if (!b1)
        od[orank++] = N;
    if (orank > CL_ENGINE_MAX_RANK)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "rank too large");
    eng_tensor *y = eng_out(r, n, 0, a->dtype, orank, od, err);
    if (!y)
        return -1;
    int64_t batch = bc.total;
    if (M == 0 || N == 0)
        return 0;
    if (bc.rank == 0)
        bc.total = 1;
    int64_t e2 = 0;
    BCAST_LOOP(&bc, 2, {
        (void)e;
        int64_t ao = o[0] * M * K, bo = o[1] * K * N, yo = e2 * M * N;
        if (a->dtype == CL_ENGINE_DT_FLOAT) {
            dnnl_status_t s = dnnl_sgemm('N', 'N', M, N, K, 1.0f, (const float *)a->data + ao, K,
                                         (const float *)b->data + bo, N, 0.0f, (float *)y->data + yo, N);
            if (s != dnnl_success)
                return eng_dnnl_fail(err, s, n, "sgemm");
        } else {
            for (int64_t i = 0; i < M; i++)
                for (int64_t j = 0; j < N; j++) {
                    if (a->dtype == CL_ENGINE_DT_DOUBLE) {
                        double s = 0;
                        for (int64_t kk = 0; kk < K; kk++)
                            s += eng_get_f(a, ao + i * K + kk) * eng_get_f(b, bo + kk * N + j);
                        eng_set_f(y, yo + i * N + j, s);
                    } else {
                        uint64_t s = 0;
                        for (int64_t kk = 0; kk < K; kk++)
                            s += (uint64_t)eng_get_i(a, ao + i * K + kk) * (uint64_t)eng_get_i(b, bo + kk * N + j);
                        eng_set_i(y, yo + i * N + j, (int64_t)s);
                    }
                }
        }
        e2++;
    });
    (void)batch;
    return 0;
}

typedef struct gemm_attr {
    bool ta, tb;
    float alpha, beta;
} gemm_attr;

int eng_prep_gemm(cl_engine_model *m, eng_node *n, cl_err *err)
{
    (void)m;
    gemm_attr *at = eng_attr_alloc(n, sizeof *at, err);
    if (!at || eng_attr_bool(n, "transA", false, &at->ta, err) != 0 ||
        eng_attr_bool(n, "transB", false, &at->tb, err) != 0 || eng_attr_float(n, "alpha", 1.0f, &at->alpha, err) != 0 ||
        eng_attr_float(n, "beta", 1.0f, &at->beta, err) != 0)
        return -1;
    return 0;
}

int eng_run_gemm(eng_run *r, eng_node *n, cl_err *err)
{
    const gemm_attr *at = n->attr;
    eng_tensor *a, *b, *c = NULL;
    if (eng_need_in(r, n, 0, &a, err) || eng_need_in(r, n, 1, &b, err))
        return -1;
    if (n->n_in > 2 && n->in[2] >= 0 && !(c = eng_in_plain(r, n, 2, err)))
        return -1;
    if (a->dtype != CL_ENGINE_DT_FLOAT || b->dtype != CL_ENGINE_DT_FLOAT || (c && c->dtype != CL_ENGINE_DT_FLOAT))
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "only float is supported");
    if (a->rank != 2 || b->rank != 2)
        return eng_node_err(err, CL_E_FORMAT, n, "A and B must be 2-D, got %s and %s", DIMS(a), DIMS(b));
    bool ta = at->ta, tb = at->tb;
    float alpha = at->alpha, beta = at->beta;
    int64_t M = ta ? a->dims[1] : a->dims[0], K = ta ? a->dims[0] : a->dims[1];
    int64_t K2 = tb ? b->dims[1] : b->dims[0], N = tb ? b->dims[0] : b->dims[1];
    if (K != K2)
        return eng_node_err(err, CL_E_FORMAT, n, "shapes %s and %s do not match", DIMS(a), DIMS(b));
    int64_t od[2] = {M, N};
    eng_bcast bc = {0};
    if (c) {
        eng_tensor yshape = {.rank = 2, .dims = {M, N}};
        eng_tensor *ts[2] = {&yshape, c};
        if (eng_bcast_init(&bc, ts, 2, n, err) != 0)
            return -1;
        if (bc.rank != 2 || bc.dims[0] != M || bc.dims[1] != N)
            return eng_node_err(err, CL_E_FORMAT, n, "C %s cannot be broadcast to [%lld,%lld]", DIMS(c), (long long)M,
                                (long long)N);
    }
    eng_tensor *y = eng_out(r, n, 0, CL_ENGINE_DT_FLOAT, 2, od, err);
    if (!y)
        return -1;
    float *yp = y->data;
    if (c && beta != 0) {
        const float *cp = c->data;
        BCAST_LOOP(&bc, 2, yp[e] = beta * cp[o[1]]);
    }
    if (M == 0 || N == 0)
        return 0;
    dnnl_status_t s = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, a->data, a->dims[1], b->data,
                                 b->dims[1], c && beta != 0 ? 1.0f : 0.0f, yp, N);
    if (s != dnnl_success)
        return eng_dnnl_fail(err, s, n, "sgemm");
    return 0;
}

/* ---------------------------------------------------------------- shape rules */

int eng_infer_gemm(eng_infer_ctx *c, cl_err *err)
{
    const eng_vshape *x = &c->in[0], *b = &c->in[1];
    const gemm_attr *at = c->n->attr;
    eng_vshape *o = &c->out[0];
    if (x->rank != 2 || b->rank != 2)
        return 0;
    bool ta = at->ta, tb = at->tb;
    int64_t k1 = x->d[ta ? 0 : 1], k2 = b->d[tb ? 1 : 0];
    if (k1 >= 0 && k2 >= 0 && k1 != k2)
        return eng_node_err(err, CL_E_FORMAT, c->n, "A %s and B %s do not match",
                            eng_dims_str(x->d, 2, (char[64]){0}, 64), eng_dims_str(b->d, 2, (char[64]){0}, 64));
    o->rank = 2;
    o->d[0] = x->d[ta ? 1 : 0];
    o->d[1] = b->d[tb ? 0 : 1];
    return 0;
}

int eng_infer_matmul(eng_infer_ctx *c, cl_err *err)
{
    const eng_vshape *x = &c->in[0], *b = &c->in[1];
    eng_vshape *o = &c->out[0];
    if (x->rank < 2 || b->rank < 2)
        return 0;
    int64_t k1 = x->d[x->rank - 1], k2 = b->d[b->rank - 2];
    if (k1 >= 0 && k2 >= 0 && k1 != k2)
        return eng_node_err(err, CL_E_FORMAT, c->n, "shapes %s and %s cannot be multiplied",
                            eng_dims_str(x->d, x->rank, (char[128]){0}, 128),
                            eng_dims_str(b->d, b->rank, (char[128]){0}, 128));
    eng_vshape xa = {.rank = x->rank - 2}, ba = {.rank = b->rank - 2}, t;
    memcpy(xa.d, x->d, sizeof(int64_t) * (size_t)xa.rank);
    memcpy(ba.d, b->d, sizeof(int64_t) * (size_t)ba.rank);
    if (eng_shape_broadcast(c->n, &xa, &ba, &t, err) != 0)
        return -1;
    if (t.rank + 2 <= CL_ENGINE_MAX_RANK) {
        o->rank = t.rank + 2;
        memcpy(o->d, t.d, sizeof(int64_t) * (size_t)t.rank);
        o->d[t.rank] = x->d[x->rank - 2];
        o->d[t.rank + 1] = b->d[b->rank - 1];
    }
    return 0;
}
