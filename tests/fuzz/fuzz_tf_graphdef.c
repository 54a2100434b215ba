/* fuzz_tf_graphdef.c — fuzz target for the TensorFlow GraphDef importer: arbitrary bytes go through
 * cl_engine_load(), which takes a frozen GraphDef by its content (the seeds are real frozen graphs, so
 * mutations stay on the importer's path: flattening, function inlining, op conversion); a model that
 * loads is run once on small zero inputs. Must never crash. */
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
    if (cl_engine_load(data, size, &(cl_engine_options){.threads = 1, .no_warmup = true}, &m, &err) != 0)
        return 0;
    fuzz_engine_run_once(m);
    cl_engine_free(m);
    return 0;
}
