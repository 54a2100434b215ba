/* engine/ops/resize.c — Resize (opsets 10-18) and Upsample in plain C: separable N-D resampling with
 * every coordinate_transformation_mode, nearest mode and the nearest / linear / cubic interpolations, the
 * modes decoded and validated at load.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops/ops.h"

/* ---------------------------------------------------------------- Resize / Upsample
 * Separable N-D resampling: per output dim, the source coordinate comes from the
 * coordinate_transformation_mode; nearest picks one tap, linear two, cubic four (Keys kernel with
 * cubic_coeff_a; exclude_outside renormalizes). Taps outside the input are clamped, except for
 * tf_crop_and_resize, where a coordinate outside the input gives extrapolation_value. */

typedef struct rs_taps {
    int n;
    int64_t idx[4];
    double w[4];
    bool outside;
} rs_taps;

static double cubic_w(double t, double A)
{
    t = fabs(t);
    if (t <= 1)
        return ((A + 2) * t - (A + 3)) * t * t + 1;
    if (t < 2)
        return ((A * t - 5 * A) * t + 8 * A) * t - 4 * A;
    return 0;
}

/* (resize_attr and the mode enums: ops.h, shared with dnnl/resample.c) */
int eng_prep_resize(cl_engine_model *m, eng_node *n, cl_err *err)
{
    static const char *const modes[] = {"nearest", "linear", "cubic", "bilinear"};
    static const char *const ctms[] = {"half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
                                       "tf_half_pixel_for_nn", "tf_crop_and_resize"};
    static const char *const nms[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"};
    resize_attr *at = eng_attr_alloc(n, sizeof *at, err);
    if (!at)
        return -1;
    at->old = n->op->kind == RESIZE_UPSAMPLE || m->opset < 11;
    bool antialias, exclude;
    float A, extrap;
    if (eng_attr_choice(n, "mode", RS_NEAREST, modes, 4, &at->mode, err) != 0 ||
        eng_attr_bool(n, "antialias", false, &antialias, err) != 0 ||
        eng_attr_float(n, "cubic_coeff_a", -0.75f, &A, err) != 0 ||
        eng_attr_float(n, "extrapolation_value", 0.0f, &extrap, err) != 0 ||
        eng_attr_bool(n, "exclude_outside", false, &exclude, err) != 0 ||
        eng_attr_floats_max(n, "scales", CL_ENGINE_MAX_RANK, &at->scales, &at->n_scales, err) != 0)
        return -1;
    if (at->mode == 3)
        at->mode = RS_LINEAR; /* Upsample's "bilinear" */
    if (antialias)
        return eng_attr_err(err, CL_E_UNSUPPORTED, n, "antialias", "is not supported");
    at->A = A;
    at->extrap = extrap;
    at->exclude = exclude;
    at->ctm = CT_ASYMMETRIC;
    at->nearest = NM_FLOOR; /* Upsample and Resize-10 take the floor */
    if (!at->old &&
        (eng_attr_choice(n, "coordinate_transformation_mode", CT_HALF_PIXEL, ctms, 6, &at->ctm, err) != 0 ||
         eng_attr_choice(n, "nearest_mode", NM_ROUND_PREFER_FLOOR, nms, 4, &at->nearest, err) != 0))
        return -1;
    return 0;
}

int eng_run_resize(eng_run *r, eng_node *n, cl_err *err)
{
    const resize_attr *at = n->attr;
    eng_tensor *x;
    if (eng_need_in(r, n, 0, &x, err) != 0)
        return -1;
    bool old = at->old;
    int rank = x->rank;
    if (rank < 1)
        return eng_node_err(err, CL_E_FORMAT, n, "input must not be a scalar");
    if (!eng_dtype_is_float(x->dtype))
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "type %s is not supported", cl_engine_dtype_name(x->dtype));
    int m = at->mode, ctm = at->ctm, nm = at->nearest;
    double A = at->A, extrap = at->extrap;
    bool exclude = at->exclude;
    double scale[CL_ENGINE_MAX_RANK], roi[2 * CL_ENGINE_MAX_RANK];
    int64_t od[CL_ENGINE_MAX_RANK];
    for (int d = 0; d < rank; d++) {
        roi[d] = 0;
        roi[rank + d] = 1;
    }
    eng_tensor *roi_t = NULL, *sc_t = NULL, *sz_t = NULL;
    if (old) {
        sc_t = eng_in_plain(r, n, 1, err);
        if (!sc_t) {
            if (!at->scales || (int)at->n_scales != rank)
                return eng_node_err(err, CL_E_FORMAT, n, "scales are required");
            for (int d = 0; d < rank; d++)
                scale[d] = at->scales[d];
        }
    } else {
        roi_t = eng_in_plain(r, n, 1, err);
        sc_t = eng_in_plain(r, n, 2, err);
        sz_t = eng_in_plain(r, n, 3, err);
        if (sc_t && eng_numel(sc_t) == 0)
            sc_t = NULL;
        if (roi_t && eng_numel(roi_t) == 0)
            roi_t = NULL;
    }
    if (sz_t) {
        if (sc_t || eng_numel(sz_t) != rank || (sz_t->dtype != CL_ENGINE_DT_INT64))
            return eng_node_err(err, CL_E_FORMAT, n, "sizes must be %d int64 values (and scales empty)", rank);
        for (int d = 0; d < rank; d++) {
            od[d] = eng_get_i(sz_t, d);
            if (od[d] < 0 || od[d] > CL_ENGINE_MAX_TENSOR_ELEMS)
                return eng_node_err(err, CL_E_FORMAT, n, "invalid size");
            scale[d] = x->dims[d] ? (double)od[d] / (double)x->dims[d] : 1.0;
        }
    } else {
        if (sc_t) {
            if (eng_numel(sc_t) != rank || !eng_dtype_is_float(sc_t->dtype))
                return eng_node_err(err, CL_E_FORMAT, n, "scales must be %d floats", rank);
            for (int d = 0; d < rank; d++)
                scale[d] = eng_get_f(sc_t, d);
        } else if (!old) {
            return eng_node_err(err, CL_E_FORMAT, n, "either scales or sizes is required");
        }
        for (int d = 0; d < rank; d++) {
            if (!(scale[d] > 0) || scale[d] > 65536)
                return eng_node_err(err, CL_E_FORMAT, n, "invalid scale %g", scale[d]);
            double o = floor((double)x->dims[d] * scale[d] + 1e-9);
            if (o > (double)CL_ENGINE_MAX_TENSOR_ELEMS)
                return eng_node_err(err, CL_E_FORMAT, n, "output too large");
            od[d] = (int64_t)o;
        }
    }
    if (roi_t && ctm == CT_TF_CROP_AND_RESIZE) {
        if (eng_numel(roi_t) != 2 * rank)
            return eng_node_err(err, CL_E_FORMAT, n, "roi must have %d values", 2 * rank);
        for (int i = 0; i < 2 * rank; i++)
            roi[i] = eng_get_f(roi_t, i);
    }
    bool empty_out = eng_dims_numel(od, rank) == 0;
    for (int d = 0; d < rank && !empty_out; d++)
        if (x->dims[d] == 0)
            return eng_node_err(err, CL_E_FORMAT, n, "cannot resize an empty input to a non-empty output");
    eng_tensor *y = eng_out(r, n, 0, x->dtype, rank, od, err);
    if (!y)
        return -1;
    if (empty_out)
        return 0;
    /* taps per dim and output index */
    int64_t total_taps = 0;
    for (int d = 0; d < rank; d++)
        total_taps += od[d];
    if ((size_t)total_taps > ((size_t)256 << 20) / sizeof(rs_taps))
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "output dimensions are too large for Resize");
    rs_taps *taps = malloc((size_t)(total_taps + 1) * sizeof *taps);
    if (!taps)
        return cl_err_nomem(err);
    rs_taps *td[CL_ENGINE_MAX_RANK];
    int64_t off = 0;
    for (int d = 0; d < rank; d++) {
        td[d] = taps + off;
        off += od[d];
        int64_t in = x->dims[d];
        for (int64_t o = 0; o < od[d]; o++) {
            rs_taps *t = &td[d][o];
            memset(t, 0, sizeof *t);
            /* the spec's length_resized is in * scale, not rounded (they differ when scales are given) */
            double sc = scale[d], xo, lr = (double)in * sc;
            if (ctm == CT_HALF_PIXEL)
                xo = (o + 0.5) / sc - 0.5;
            else if (ctm == CT_PYTORCH_HALF_PIXEL)
                xo = lr > 1 ? (o + 0.5) / sc - 0.5 : 0;
            else if (ctm == CT_ALIGN_CORNERS)
                xo = lr == 1 ? 0 : (double)o * (double)(in - 1) / (lr - 1);
            else if (ctm == CT_ASYMMETRIC)
                xo = o / sc;
            else if (ctm == CT_TF_HALF_PIXEL_FOR_NN)
                xo = (o + 0.5) / sc;
            else if (ctm == CT_TF_CROP_AND_RESIZE) {
                double s0 = roi[d], e0 = roi[rank + d];
                xo = lr > 1 ? s0 * (double)(in - 1) + (double)o * (e0 - s0) * (double)(in - 1) / (lr - 1)
                            : 0.5 * (s0 + e0) * (double)(in - 1);
                if (xo < 0 || xo > (double)(in - 1))
                    t->outside = true;
            } else {
                free(taps);
                return eng_node_err(err, CL_E_UNSUPPORTED, n, "coordinate_transformation_mode %d is not supported", ctm);
            }
            if (!(xo == xo))
                xo = 0; /* NaN from a hostile roi */
            xo = xo < -1e9 ? -1e9 : xo > 1e9 ? 1e9 : xo; /* keep the integer casts defined */
            if (m == RS_NEAREST) {
                double f = floor(xo), frac = xo - f;
                int64_t i;
                if (nm == NM_FLOOR)
                    i = (int64_t)f;
                else if (nm == NM_CEIL)
                    i = (int64_t)ceil(xo);
                else if (nm == NM_ROUND_PREFER_CEIL)
                    i = frac >= 0.5 ? (int64_t)f + 1 : (int64_t)f;
                else
                    i = frac > 0.5 ? (int64_t)f + 1 : (int64_t)f;
                t->n = 1;
                t->idx[0] = i < 0 ? 0 : i >= in ? in - 1 : i;
                t->w[0] = 1;
            } else if (m == RS_LINEAR) {
                double xc = xo < 0 ? 0 : xo > (double)(in - 1) ? (double)(in - 1) : xo;
                int64_t i0 = (int64_t)floor(xc), i1 = i0 + 1 < in ? i0 + 1 : in - 1;
                double f = xc - (double)i0;
                t->n = 2;
                t->idx[0] = i0;
                t->idx[1] = i1;
                t->w[0] = 1 - f;
                t->w[1] = f;
            } else {
                int64_t i0 = (int64_t)floor(xo);
                double f = xo - (double)i0, sum = 0;
                t->n = 4;
                for (int k = 0; k < 4; k++) {
                    int64_t i = i0 - 1 + k;
                    double wgt = cubic_w(f + 1 - k, A);
                    if (exclude && (i < 0 || i >= in))
                        wgt = 0;
                    t->idx[k] = i < 0 ? 0 : i >= in ? in - 1 : i;
                    t->w[k] = wgt;
                    sum += wgt;
                }
                if (exclude && sum != 0)
                    for (int k = 0; k < 4; k++)
                        t->w[k] /= sum;
            }
        }
    }
    int64_t ist[CL_ENGINE_MAX_RANK], st = 1;
    for (int d = rank - 1; d >= 0; d--) {
        ist[d] = st;
        st *= x->dims[d];
    }
    int64_t N = eng_numel(y), idx[CL_ENGINE_MAX_RANK] = {0};
    for (int64_t e = 0; e < N; e++) {
        bool outside = false;
        for (int d = 0; d < rank; d++)
            outside |= td[d][idx[d]].outside;
        double acc = 0;
        if (!outside) {
            /* iterate over the tap combinations */
            int k[CL_ENGINE_MAX_RANK] = {0};
            for (;;) {
                double wgt = 1;
                int64_t src = 0;
                for (int d = 0; d < rank; d++) {
                    const rs_taps *t = &td[d][idx[d]];
                    wgt *= t->w[k[d]];
                    src += t->idx[k[d]] * ist[d];
                }
                if (wgt != 0)
                    acc += wgt * eng_get_f(x, src);
                int d = rank - 1;
                for (; d >= 0; d--) {
                    if (++k[d] < td[d][idx[d]].n)
                        break;
                    k[d] = 0;
                }
                if (d < 0)
                    break;
            }
        }
        eng_set_f(y, e, outside ? extrap : acc);
        for (int d = rank - 1; d >= 0; d--) {
            if (++idx[d] < od[d])
                break;
            idx[d] = 0;
        }
    }
    free(taps);
    return 0;
}

