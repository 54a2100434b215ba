/* fuzz_sealed.c — fuzz target for the sealed-file parser and opener: header parsing, key check,
 * header MAC, size checks and chunk authentication must reject any input without crashing, leaking
 * or allocating absurd amounts. The first byte selects the expected key id, so the key id path is
 * fuzzed too. A fixed key is used; inputs in the corpus are sealed under it (see
 * tests/fuzz/make_corpus.sh), so the fuzzer starts from files that reach the chunk code. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/seal.h"

static const uint8_t fuzz_key[CL_SEAL_KEY_LEN] = "cloister-fuzz-key-0123456789abcd";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cl_seal_header h;
    (void)cl_seal_header_parse(data, size, &h, NULL);
    uint8_t *plain = NULL;
    size_t plain_len = 0;
    if (cl_seal_open_buffer(data, size, fuzz_key, NULL, &plain, &plain_len, &h, NULL) == 0) {
        /* Only a genuinely sealed input can open; its plaintext must be its declared length. */
        if (plain_len != h.plaintext_len)
            abort();
        cl_secmem_free(plain);
    }
    return 0;
}
