/* engine/ops/norm.c — the normalizations: LayerNormalization (fp32 on oneDNN, dnnl/norm.c; here with its
 * optional mean and inverse standard deviation outputs, other types and broadcast scales), BatchNormalization in inference mode (the fallback of dnnl/eltwise.c's oneDNN
 * kernel; graph.c folds most of them into the preceding Conv) and InstanceNormalization.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops/ops.h"

int eng_prep_layernorm(cl_engine_model *m, eng_node *n, cl_err *err)
{
    (void)m;
    eng_norm_attr *at = eng_attr_alloc(n, sizeof *at, err);
    int64_t stash;
    if (!at || eng_attr_int_in(n, "axis", -1, -CL_ENGINE_MAX_RANK, CL_ENGINE_MAX_RANK - 1, &at->axis, err) != 0 ||
        eng_attr_float(n, "epsilon", 1e-5f, &at->epsilon, err) != 0 || eng_attr_int(n, "stash_type", 1, &stash, err) != 0)
        return -1;
    return 0; /* stash_type: statistics are computed in double whatever it asks */
}

int eng_run_layernorm(eng_run *r, eng_node *n, cl_err *err)
{
    const eng_norm_attr *at = n->attr;
    eng_tensor *x, *sc, *bi = NULL;
    if (eng_need_in(r, n, 0, &x, err) || eng_need_in(r, n, 1, &sc, err))
        return -1;
    if (n->n_in > 2 && n->in[2] >= 0 && !(bi = eng_in_plain(r, n, 2, err)))
        return -1;
    if (!eng_dtype_is_float(x->dtype))
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "type %s is not supported", cl_engine_dtype_name(x->dtype));
    int64_t ax = eng_norm_axis(at->axis, x->rank);
    if (ax < 0 || ax >= x->rank)
        return eng_node_err(err, CL_E_FORMAT, n, "axis out of range");
    double eps = at->epsilon;
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < x->rank; d++)
        *(d < ax ? &outer : &inner) *= x->dims[d];
    /* scale/bias broadcast over the normalized dims */
    eng_tensor nshape = {.rank = x->rank - (int)ax};
    memcpy(nshape.dims, x->dims + ax, sizeof(int64_t) * (size_t)nshape.rank);
    eng_bcast bs, bb;
    eng_tensor *t1[2] = {&nshape, sc};
    if (eng_bcast_init(&bs, t1, 2, n, err) != 0 || bs.total != inner)
        return eng_node_err(err, CL_E_FORMAT, n, "scale %s does not match the normalized shape", DIMS(sc));
    if (bi) {
        eng_tensor *t2[2] = {&nshape, bi};
        if (eng_bcast_init(&bb, t2, 2, n, err) != 0 || bb.total != inner)
            return eng_node_err(err, CL_E_FORMAT, n, "bias %s does not match the normalized shape", DIMS(bi));
    }
    int rc = eng_dnnl_layernorm(r, n, x, sc, bi, outer, inner, at->epsilon, err); /* fp32: dnnl/norm.c */
    if (rc <= 0)
        return rc;
    if ((size_t)inner > CL_ENGINE_MAX_TENSOR_BYTES / 16)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "the normalized shape is too large");
    double *sv = malloc((size_t)(inner + 1) * 2 * sizeof(double));
    if (!sv)
        return cl_err_nomem(err);
    double *bv = sv + inner + 1;
    BCAST_LOOP(&bs, 2, sv[e] = eng_get_f(sc, o[1]));
    if (bi)
        BCAST_LOOP(&bb, 2, bv[e] = eng_get_f(bi, o[1]));
    else
        for (int64_t i = 0; i < inner; i++)
            bv[i] = 0;
    int64_t sd[CL_ENGINE_MAX_RANK];
    for (int d = 0; d < x->rank; d++)
        sd[d] = d < ax ? x->dims[d] : 1;
    eng_tensor *y = eng_out(r, n, 0, x->dtype, x->rank, x->dims, err);
    eng_tensor *mo = y && n->n_out > 1 ? eng_out(r, n, 1, CL_ENGINE_DT_FLOAT, x->rank, sd, err) : NULL;
    eng_tensor *io = y && n->n_out > 2 ? eng_out(r, n, 2, CL_ENGINE_DT_FLOAT, x->rank, sd, err) : NULL;
    if (!y || (n->n_out > 1 && !mo) || (n->n_out > 2 && !io)) {
        free(sv);
        return -1;
    }
    for (int64_t o = 0; o < outer; o++) {
        double mean = 0, var = 0;
        for (int64_t i = 0; i < inner; i++)
            mean += eng_get_f(x, o * inner + i);
        mean /= (double)(inner ? inner : 1);
        for (int64_t i = 0; i < inner; i++) {
            double d = eng_get_f(x, o * inner + i) - mean;
            var += d * d;
        }
        var /= (double)(inner ? inner : 1);
        double inv = 1 / sqrt(var + eps);
        for (int64_t i = 0; i < inner; i++)
            eng_set_f(y, o * inner + i, (eng_get_f(x, o * inner + i) - mean) * inv * sv[i] + bv[i]);
        if (mo)
            ((float *)mo->data)[o] = (float)mean;
        if (io)
            ((float *)io->data)[o] = (float)inv;
    }
    free(sv);
    return 0;
}

/* BatchNormalization: epsilon; training mode (and its running-statistics outputs) is refused. */
int eng_prep_batchnorm(cl_engine_model *m, eng_node *n, cl_err *err)
{
    (void)m;
    bool training;
    eng_norm_attr *at = eng_attr_alloc(n, sizeof *at, err);
    if (!at || eng_attr_float(n, "epsilon", 1e-5f, &at->epsilon, err) != 0 ||
        eng_attr_bool(n, "training_mode", false, &training, err) != 0)
        return -1;
    if (n->n_out > 1 || training)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "training mode (running statistics outputs) is not supported");
    return 0;
}

int eng_ref_batchnorm(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x, *p[4];
    if (eng_need_in(r, n, 0, &x, err) != 0)
        return -1;
    for (int i = 0; i < 4; i++)
        if (eng_need_in(r, n, i + 1, &p[i], err) != 0)
            return -1;
    if (!eng_dtype_is_float(x->dtype) || x->rank < 2)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "needs a float input of rank >= 2");
    int64_t C = x->dims[1];
    for (int i = 0; i < 4; i++)
        if (eng_numel(p[i]) != C)
            return eng_node_err(err, CL_E_FORMAT, n, "parameter %d has %lld elements, expected %lld", i + 1,
                                (long long)eng_numel(p[i]), (long long)C);
    double eps = ((const eng_norm_attr *)n->attr)->epsilon;
    int64_t inner = 1;
    for (int d = 2; d < x->rank; d++)
        inner *= x->dims[d];
    eng_tensor *y = eng_out(r, n, 0, x->dtype, x->rank, x->dims, err);
    if (!y)
        return -1;
    int64_t N = x->dims[0];
    bool relu = n->post == ENG_POST_RELU; /* a following Relu fused by graph.c */
    for (int64_t b = 0; b < N; b++)
        for (int64_t c = 0; c < C; c++) {
            double s = eng_get_f(p[0], c) / sqrt(eng_get_f(p[3], c) + eps);
            double sh = eng_get_f(p[1], c) - eng_get_f(p[2], c) * s;
            int64_t base = (b * C + c) * inner;
            if (x->dtype == CL_ENGINE_DT_FLOAT) {
                const float *xp = (const float *)x->data + base;
                float *yp = (float *)y->data + base, fs = (float)s, fsh = (float)sh;
                for (int64_t i = 0; i < inner; i++) {
                    float v = xp[i] * fs + fsh;
                    yp[i] = relu && v < 0 ? 0 : v;
                }
                continue;
            }
            for (int64_t i = 0; i < inner; i++) {
                double v = eng_get_f(x, base + i) * s + sh;
                eng_set_f(y, base + i, relu && v < 0 ? 0 : v);
            }
        }
    return 0;
}

int eng_prep_instnorm(cl_engine_model *m, eng_node *n, cl_err *err)
{
    (void)m;
    eng_norm_attr *at = eng_attr_alloc(n, sizeof *at, err);
    return at && eng_attr_float(n, "epsilon", 1e-5f, &at->epsilon, err) == 0 ? 0 : -1;
}

int eng_run_instnorm(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x, *sc, *bi;
    if (eng_need_in(r, n, 0, &x, err) || eng_need_in(r, n, 1, &sc, err) || eng_need_in(r, n, 2, &bi, err))
        return -1;
    if (!eng_dtype_is_float(x->dtype) || x->rank < 2)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "needs a float input of rank >= 2");
    int64_t C = x->dims[1], N = x->dims[0], inner = 1;
    if (eng_numel(sc) != C || eng_numel(bi) != C)
        return eng_node_err(err, CL_E_FORMAT, n, "scale/bias must have %lld elements", (long long)C);
    for (int d = 2; d < x->rank; d++)
        inner *= x->dims[d];
    double eps = ((const eng_norm_attr *)n->attr)->epsilon;
    eng_tensor *y = eng_out(r, n, 0, x->dtype, x->rank, x->dims, err);
    if (!y)
        return -1;
    for (int64_t b = 0; b < N; b++)
        for (int64_t c = 0; c < C; c++) {
            int64_t base = (b * C + c) * inner;
            double mean = 0, var = 0;
            for (int64_t i = 0; i < inner; i++)
                mean += eng_get_f(x, base + i);
            mean /= (double)(inner ? inner : 1);
            for (int64_t i = 0; i < inner; i++) {
                double d = eng_get_f(x, base + i) - mean;
                var += d * d;
            }
            var /= (double)(inner ? inner : 1);
            double s = eng_get_f(sc, c) / sqrt(var + eps);
            for (int64_t i = 0; i < inner; i++)
                eng_set_f(y, base + i, (eng_get_f(x, base + i) - mean) * s + eng_get_f(bi, c));
        }
    return 0;
}
