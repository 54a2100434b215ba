/* fuzz_tf_bundle.c — fuzz target for the SavedModel and TensorBundle readers: the input is three files
 * of a SavedModel directory, each preceded by its length (4 bytes, little-endian): saved_model.pb,
 * variables/variables.index (the SSTable: blocks, restarts, snappy, CRC32C, footer) and
 * variables/variables.data-00000-of-00001; they go through cl_engine_load_files(). The seeds are real
 * TF Serving exports (TF1 and TF2). Must never crash. */
#include <stdlib.h>
#include <string.h>

#include "cloister/engine.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cl_log_set_level(CL_LOG_OFF);
    cl_secmem_set_require_lock(false);
    static const char *const names[3] = {"saved_model.pb", "variables/variables.index",
                                         "variables/variables.data-00000-of-00001"};
    cl_engine_file f[3];
    size_t n = 0, off = 0;
    while (n < 3 && size - off >= 4) {
        uint32_t len = (uint32_t)data[off] | (uint32_t)data[off + 1] << 8 | (uint32_t)data[off + 2] << 16 |
                       (uint32_t)data[off + 3] << 24;
        off += 4;
        if (len > size - off)
            len = (uint32_t)(size - off);
        f[n] = (cl_engine_file){.name = names[n], .data = data + off, .len = len};
        off += len;
        n++;
    }
    if (!n)
        return 0;
    cl_err err = {0};
    cl_engine_model *m = NULL;
    if (cl_engine_load_files(f, n, &(cl_engine_options){.threads = 1, .no_warmup = true}, &m, &err) != 0)
        return 0;
    size_t nin = cl_engine_num_inputs(m), nout = cl_engine_num_outputs(m);
    cl_engine_tensor in[8] = {0}, out[8] = {0};
    bool ok = nin <= 8 && nout <= 8;
    for (size_t i = 0; ok && i < nin; i++) {
        const cl_engine_io_info *info = cl_engine_input(m, i);
        in[i].dtype = info->dtype;
        in[i].rank = info->rank < 0 ? 1 : info->rank;
        int64_t cnt = 1;
        for (int k = 0; k < in[i].rank; k++) {
            in[i].dims[k] = info->rank < 0 || info->dims[k] < 0 ? 1 : info->dims[k];
            cnt *= in[i].dims[k] > 0 ? in[i].dims[k] : 1;
            if (cnt > 4096)
                ok = false;
        }
        in[i].nbytes = (size_t)cl_engine_tensor_numel(&in[i]) * cl_engine_dtype_size(info->dtype);
        in[i].data = ok ? calloc(1, in[i].nbytes + 1) : NULL;
        ok = ok && in[i].data;
    }
    if (ok && cl_engine_run(m, in, nin, out, nout, &err) == 0)
        for (size_t k = 0; k < nout; k++)
            cl_engine_tensor_release(&out[k]);
    for (size_t i = 0; i < nin && i < 8; i++)
        free(in[i].data);
    cl_engine_free(m);
    return 0;
}
