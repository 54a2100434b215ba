/* engine/dnnl/resample.c — Resize on oneDNN resampling over the spatial dims of a 3-5-D float tensor, in
 * whatever layout the tensor arrives (channel-blocked, channels-last or plain) and leaving the output in the
 * same one, so the upsampling of segmentation heads stays between convolutions without reorders:
 *   - linear with half_pixel (or pytorch_half_pixel) coordinates;
 *   - nearest with integer upscaling factors, half_pixel / pytorch_half_pixel coordinates and
 *     round_prefer_floor / round_prefer_ceil, or asymmetric coordinates and floor (torch's export).
 * Everything else (other modes and coordinate transformations, scales that do not give the output size
 * exactly, resizing the batch or channel dims, Upsample and Resize-10) is the plain-C Resize of ops/resize.c.
 *
 * Why this matches ONNX: oneDNN's linear resampling takes the source coordinate (o + 0.5) * in / out - 0.5
 * with both taps clamped into the input, which is ONNX's half_pixel with the scale out / in; ONNX uses the
 * given scale, hence the exactness requirement on scales. pytorch_half_pixel differs only for an output
 * size of 1, which is left to the plain kernel. Nearest takes round((o + 0.5) * in / out - 0.5): with an
 * integer factor s = out / in and o = k*s + j that is k + (j + 0.5) / s - 0.5, strictly within half a step
 * of k, so no rounding tie arises and the tap is k = floor(o / s), which is what ONNX's half_pixel with
 * round_prefer_* and asymmetric with floor give as well.
 */
#include <math.h>
#include <string.h>

#include "engine/dnnl/dnnl.h"

/* The output dims of Resize node n on x when the oneDNN path applies; false otherwise. */
static bool dnnl_dims(eng_run *r, const eng_node *n, const eng_tensor *x, int64_t *od)
{
    const resize_attr *at = n->attr;
    bool half = at->ctm == CT_HALF_PIXEL || at->ctm == CT_PYTORCH_HALF_PIXEL;
    bool nearest = at->mode == RS_NEAREST &&
                   ((half && (at->nearest == NM_ROUND_PREFER_FLOOR || at->nearest == NM_ROUND_PREFER_CEIL)) ||
                    (at->ctm == CT_ASYMMETRIC && at->nearest == NM_FLOOR));
    if (at->old || !((at->mode == RS_LINEAR && half) || nearest) || !eng_is_f32_nd(x))
        return false;
    int rank = x->rank;
    eng_tensor *sc = eng_in(r, n, 2), *sz = eng_in(r, n, 3);
    if (sc && eng_numel(sc) == 0)
        sc = NULL;
    if (sz && !sc && !sz->blocked && sz->dtype == CL_ENGINE_DT_INT64 && eng_numel(sz) == rank) {
        for (int d = 0; d < rank; d++)
            od[d] = eng_get_i(sz, d);
    } else if (sc && !sz && !sc->blocked && sc->dtype == CL_ENGINE_DT_FLOAT && eng_numel(sc) == rank) {
        for (int d = 0; d < rank; d++) {
            double s = eng_get_f(sc, d), o = floor((double)x->dims[d] * s + 1e-9);
            if (!(s > 0) || s > 65536 || o != (double)x->dims[d] * s)
                return false; /* the scale is not out / in exactly */
            od[d] = (int64_t)o;
        }
    } else {
        return false;
    }
    if (od[0] != x->dims[0] || od[1] != x->dims[1])
        return false;
    for (int d = 2; d < rank; d++)
        if (od[d] < (at->ctm == CT_PYTORCH_HALF_PIXEL ? 2 : 1) || od[d] > CL_ENGINE_MAX_TENSOR_ELEMS ||
            (nearest && (od[d] < x->dims[d] || od[d] % x->dims[d] != 0)))
            return false;
    return eng_dims_numel(od, rank) > 0;
}

int eng_run_resize_dnnl(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x = eng_in(r, n, 0);
    int64_t od[CL_ENGINE_MAX_RANK];
    if (!x || !dnnl_dims(r, n, x, od))
        return eng_run_resize(r, n, err);
    int rank = x->rank;
    dnnl_memory_desc_t keys[2], dmd;
    eng_tensor_md(x, &keys[0]);
    eng_plain_md(&keys[1], rank, od); /* the output size (a key only) */
    dnnl_dims_t dd;
    for (int d = 0; d < rank; d++)
        dd[d] = od[d];
    dnnl_memory_desc_init_by_tag(&dmd, rank, dd, dnnl_f32, dnnl_format_tag_any);
    pthread_mutex_lock(&r->m->lock);
    prim_cache *c = eng_node_cache(r, n, err);
    prim_entry *e = c ? eng_cache_find_keys(c, keys, 2, 0) : NULL;
    if (c && !e) {
        dnnl_resampling_desc_t rd;
        dnnl_primitive_desc_t pd = NULL;
        dnnl_primitive_attr_t attr = eng_user_scratch_attr();
        dnnl_status_t s = dnnl_resampling_forward_desc_init(&rd, dnnl_forward_inference,
                                                            ((const resize_attr *)n->attr)->mode == RS_NEAREST
                                                                ? dnnl_resampling_nearest
                                                                : dnnl_resampling_linear,
                                                            NULL,
                                                            &keys[0], &dmd);
        if (s == dnnl_success)
            s = dnnl_primitive_desc_create(&pd, &rd, attr, r->m->dnnl, NULL);
        if (attr)
            dnnl_primitive_attr_destroy(attr);
        if (s != dnnl_success)
            eng_dnnl_fail(err, s, n, "creating the resampling");
        else
            e = eng_entry_new(c, keys, 2, 0, pd, n, err);
    }
    pthread_mutex_unlock(&r->m->lock);
    if (!e)
        return -1;
    const int ids[] = {DNNL_ARG_SRC};
    void *const ptrs[] = {x->data};
    return eng_exec_to_output(r, n, e, 1, ids, keys, ptrs, rank, od, err);
}
