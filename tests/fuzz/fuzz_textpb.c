/* fuzz_textpb.c — fuzz target for the common protobuf text-format reader (textpb.h): the input,
 * after a first byte that picks the message type and the options, is parsed as a TensorProto
 * (every scalar type) or an AttrValue (oneofs, maps, recursion); it is refused with a message, or
 * the message it built packs, unpacks and packs again to the same bytes, and every location it
 * recorded is inside the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/textpb.h"
#include "tensorflow/core/framework/attr_value.pb-c.h"
#include "tensorflow/core/framework/tensor.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    const ProtobufCMessageDescriptor *d =
        mode & 1 ? &tensorflow__attr_value__descriptor : &tensorflow__tensor_proto__descriptor;
    cl_textpb_locs *locs = NULL;
    cl_textpb_options o = {.flags = mode & 2 ? CL_TEXTPB_FORBID_OVERWRITE : 0, .max_depth = mode & 4 ? 8 : 0,
                           .locs = mode & 8 ? &locs : NULL};
    ProtobufCMessage *m = NULL;
    cl_err err = {0};
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    if (cl_textpb_parse(text, len, d, &o, &m, &err) != 0) {
        if (!err.msg[0] || m || locs)
            abort();
        return 0;
    }
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *a = malloc(n ? n : 1), *b = malloc(n ? n : 1);
    if (!a || !b || protobuf_c_message_pack(m, a) != n)
        abort();
    ProtobufCMessage *u = protobuf_c_message_unpack(d, NULL, n, a);
    if (!u || protobuf_c_message_get_packed_size(u) != n || protobuf_c_message_pack(u, b) != n || memcmp(a, b, n))
        abort();
    protobuf_c_message_free_unpacked(u, NULL);
    free(a);
    free(b);
    if (locs) {
        int line = 0, col = 0;
        if (cl_textpb_where(locs, m, "version_number", 0, &line, &col) && (line < 1 || col < 1 || (size_t)line > len))
            abort();
        cl_textpb_locs_free(locs);
    }
    cl_textpb_free(m, &o);
    return 0;
}
