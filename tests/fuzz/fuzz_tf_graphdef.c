/* fuzz_tf_graphdef.c — fuzz target for the TensorFlow GraphDef importer: arbitrary bytes go through
 * cl_engine_load(), which takes a frozen GraphDef by its content (the seeds are real frozen graphs, so
 * mutations stay on the importer's path: flattening, function inlining, op conversion); a model that
 * loads is run once on small zero inputs. Must never crash. */
#include <stdlib.h>
#include <string.h>

#include "cloister/engine.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void run_once(cl_engine_model *m)
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cl_log_set_level(CL_LOG_OFF);
    cl_secmem_set_require_lock(false);
    cl_err err = {0};
    cl_engine_model *m = NULL;
    if (cl_engine_load(data, size, &(cl_engine_options){.threads = 1, .no_warmup = true}, &m, &err) != 0)
        return 0;
    run_once(m);
    cl_engine_free(m);
    return 0;
}
