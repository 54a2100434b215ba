/* fuzz_onnx.c — fuzz target for the ONNX loader: arbitrary bytes go through cl_engine_load(); a
 * model that loads is also run once on zero-filled inputs of its declared shape (dynamic dims = 1,
 * small models only) to exercise graph preparation and kernels' shape checks. Must never crash. */
#include <stdlib.h>
#include <string.h>

#include "cloister/engine.h"
#include "fuzz_engine_run.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cl_log_set_level(CL_LOG_OFF);
    cl_secmem_set_require_lock(false);
    cl_err err = {0};
    cl_engine_model *m = NULL;
    if (cl_engine_load(data, size, &(cl_engine_options){.threads = 1}, &m, &err) != 0)
        return 0;
    fuzz_engine_run_once(m);
    cl_engine_free(m);
    return 0;
}
