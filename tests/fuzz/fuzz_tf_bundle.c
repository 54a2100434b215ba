/* fuzz_tf_bundle.c — fuzz target for the SavedModel and TensorBundle readers: the input is three files
 * of a SavedModel directory, each preceded by its length (4 bytes, little-endian): saved_model.pb,
 * variables/variables.index (the SSTable: blocks, restarts, snappy, CRC32C, footer) and
 * variables/variables.data-00000-of-00001; they go through cl_engine_load_files(). The seeds are real
 * TF Serving exports (TF1 and TF2). Must never crash. */
#include <stdlib.h>
#include <string.h>

#include "cloister/engine.h"
#include "fuzz_engine_run.h"

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
    fuzz_engine_run_once(m);
    cl_engine_free(m);
    return 0;
}
