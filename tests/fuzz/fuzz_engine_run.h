/* fuzz_engine_run.h — the model fuzz targets' shared step (fuzz_onnx, fuzz_tf_graphdef, fuzz_tf_bundle):
 * a model that loaded is run once on zero inputs, dynamic dims taken as 1, when it has at most 8 inputs
 * and outputs and each input at most 4096 elements; a run error is fine, a crash is not. */
#ifndef CLOISTER_FUZZ_ENGINE_RUN_H
#define CLOISTER_FUZZ_ENGINE_RUN_H

#include <stdlib.h>

#include "cloister/engine.h"

static void fuzz_engine_run_once(cl_engine_model *m)
{
    size_t nin = cl_engine_num_inputs(m), nout = cl_engine_num_outputs(m);
    cl_engine_tensor in[8] = {0}, out[8] = {0};
    bool ok = nin <= 8 && nout <= 8;
    for (size_t i = 0; ok && i < nin; i++) {
        const cl_engine_io_info *info = cl_engine_input(m, i);
        in[i].dtype = info->dtype;
        in[i].rank = info->rank < 0 ? 1 : info->rank;
        int64_t n = 1;
        for (int k = 0; k < in[i].rank; k++) {
            in[i].dims[k] = info->rank < 0 || info->dims[k] < 0 ? 1 : info->dims[k];
            n *= in[i].dims[k] > 0 ? in[i].dims[k] : 1;
            if (n > 4096)
                ok = false;
        }
        in[i].nbytes = (size_t)cl_engine_tensor_numel(&in[i]) * cl_engine_dtype_size(info->dtype);
        in[i].data = ok ? calloc(1, in[i].nbytes + 1) : NULL;
        ok = ok && in[i].data;
    }
    cl_err err = {0};
    if (ok && cl_engine_run(m, in, nin, out, nout, &err) == 0)
        for (size_t k = 0; k < nout; k++)
            cl_engine_tensor_release(&out[k]);
    for (size_t i = 0; i < nin && i < 8; i++)
        free(in[i].data);
}

#endif
