/* engine/pbwire.c — the protobuf wire-format reader the model loaders share (varints, fields, the
 * nesting pre-check) and their secure-memory arena for protobuf-c (pbwire.h). */
#include "engine/pbwire.h"

#include "cloister/common.h"

int eng_pb_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t r = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end)
            return -1;
        uint8_t b = *(*p)++;
        r |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = r;
            return 0;
        }
    }
    return -1;
}

int eng_pb_field(const uint8_t **p, const uint8_t *end, uint64_t *field, unsigned *wt, const uint8_t **val,
                 size_t *val_len)
{
    uint64_t key, v;
    if (eng_pb_varint(p, end, &key) != 0)
        return -1;
    *field = key >> 3;
    *wt = key & 7;
    switch (*wt) {
    case 0: return eng_pb_varint(p, end, &v);
    case 1: if (end - *p < 8) return -1; *p += 8; return 0;
    case 5: if (end - *p < 4) return -1; *p += 4; return 0;
    case 2:
        if (eng_pb_varint(p, end, &v) != 0 || v > (uint64_t)(end - *p))
            return -1;
        if (val) {
            *val = *p;
            *val_len = (size_t)v;
        }
        *p += v;
        return 0;
    default: return -1;
    }
}

/* Iterative over one level's fields, recursive only into message fields (depth bounded). */
static eng_pb_fault walk(const ProtobufCMessageDescriptor *d, const uint8_t *p, const uint8_t *end, int depth,
                         int max_depth, unsigned *wire_type)
{
    if (depth > max_depth)
        return ENG_PB_TOO_DEEP;
    while (p < end) {
        uint64_t key, v;
        if (eng_pb_varint(&p, end, &key) != 0)
            return ENG_PB_BAD_VARINT;
        unsigned wt = key & 7;
        switch (wt) {
        case 0:
            if (eng_pb_varint(&p, end, &v) != 0)
                return ENG_PB_BAD_VARINT;
            break;
        case 1:
            if (end - p < 8)
                return ENG_PB_TRUNCATED;
            p += 8;
            break;
        case 5:
            if (end - p < 4)
                return ENG_PB_TRUNCATED;
            p += 4;
            break;
        case 2: {
            if (eng_pb_varint(&p, end, &v) != 0 || v > (uint64_t)(end - p))
                return ENG_PB_TRUNCATED_FIELD;
            uint64_t field = key >> 3;
            const ProtobufCFieldDescriptor *fd =
                d && field <= UINT32_MAX ? protobuf_c_message_descriptor_get_field(d, (unsigned)field) : NULL;
            if (fd && fd->type == PROTOBUF_C_TYPE_MESSAGE) {
                eng_pb_fault f = walk(fd->descriptor, p, p + v, depth + 1, max_depth, wire_type);
                if (f != ENG_PB_OK)
                    return f;
            }
            p += v;
            break;
        }
        default:
            *wire_type = wt;
            return ENG_PB_BAD_WIRE_TYPE;
        }
    }
    return ENG_PB_OK;
}

eng_pb_fault eng_pb_walk(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len, int max_depth,
                         unsigned *wire_type)
{
    return walk(d, buf, buf + len, 0, max_depth, wire_type);
}

/* ---------------------------------------------------------------- the secure arena */

struct eng_pb_chunk {
    eng_pb_chunk *next;
    size_t size, used;
};

static void *arena_alloc(void *data, size_t size)
{
    eng_pb_arena *a = data;
    size = (size + 15) & ~(size_t)15;
    eng_pb_chunk *c = a->head;
    if (!c || c->size - c->used < size) {
        size_t want = a->next_size;
        if (want < size + sizeof *c + 16)
            want = size + sizeof *c + 16;
        c = cl_secmem_alloc(want, a->failed ? NULL : &a->err);
        if (!c) {
            a->failed = true;
            return NULL;
        }
        c->size = want;
        c->used = (sizeof *c + 15) & ~(size_t)15;
        c->next = a->head;
        a->head = c;
        if (a->next_size < ((size_t)256 << 20))
            a->next_size *= 2;
    }
    void *p = (char *)c + c->used;
    c->used += size;
    return p;
}

static void arena_free_one(void *data, void *p)
{
    (void)data;
    (void)p; /* released with the whole arena */
}

void eng_pb_arena_init(eng_pb_arena *a, size_t first_chunk)
{
    *a = (eng_pb_arena){.alloc = {.alloc = arena_alloc, .free = arena_free_one, .allocator_data = a},
                        .next_size = first_chunk < 4096 ? 4096 : first_chunk};
}

bool eng_pb_arena_failed(const eng_pb_arena *a, cl_err *err)
{
    if (a->failed && err)
        *err = a->err;
    return a->failed;
}

void eng_pb_arena_release(eng_pb_arena *a)
{
    for (eng_pb_chunk *c = a->head; c;) {
        eng_pb_chunk *nx = c->next;
        cl_secmem_free(c);
        c = nx;
    }
    a->head = NULL;
}
