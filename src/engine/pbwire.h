/* engine/pbwire.h — the protobuf wire-format pieces the model loaders share (onnx.c, tf/): reading
 * varints and fields, the nesting pre-check protobuf-c lacks, and the secure-memory arena that
 * unpacked models are allocated in. Engine-internal (src/engine/ only).
 *
 * Everything here reads hostile bytes: every function checks bounds and never reads past `end`.
 * Nothing is shared between threads: an arena belongs to one load.
 */
#ifndef CLOISTER_ENGINE_PBWIRE_H
#define CLOISTER_ENGINE_PBWIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "cloister/common.h"

/* A base-128 varint at *p (advanced past it); -1 if it is truncated or longer than 10 bytes. */
int eng_pb_varint(const uint8_t **p, const uint8_t *end, uint64_t *v);

/* One field at *p (advanced past it): its number, wire type and, for wire type 2, the span of its
 * value in *val and *val_len (val may be NULL); -1 if malformed (truncated, unknown wire type). */
int eng_pb_field(const uint8_t **p, const uint8_t *end, uint64_t *field, unsigned *wt, const uint8_t **val,
                 size_t *val_len);

/* What the nesting pre-check refused. */
typedef enum {
    ENG_PB_OK = 0,
    ENG_PB_TOO_DEEP,         /* messages nested deeper than max_depth */
    ENG_PB_BAD_VARINT,       /* a malformed varint */
    ENG_PB_TRUNCATED,        /* a fixed-size value cut short */
    ENG_PB_TRUNCATED_FIELD,  /* a length-delimited value longer than what is left */
    ENG_PB_BAD_WIRE_TYPE,    /* wire type 3, 4, 6 or 7 (*wire_type says which) */
} eng_pb_fault;

/* Walks [buf, buf+len) as message d (NULL: fields are only skipped), recursing into message fields
 * the descriptor names, at most max_depth levels: protobuf-c unpacks nested messages recursively
 * with no depth limit, so a hostile file could otherwise overflow the stack. Returns ENG_PB_OK or
 * what was wrong (*wire_type set for ENG_PB_BAD_WIRE_TYPE); callers word the message. */
eng_pb_fault eng_pb_walk(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len, int max_depth,
                         unsigned *wire_type);

/* A bump arena in secure memory (cl_secmem: locked, not dumpable, zeroized when released) for
 * protobuf-c: an unpacked model holds copies of (decrypted) weights. Use &a->alloc as the
 * ProtobufCAllocator; its frees do nothing, eng_pb_arena_release frees everything at once. */
typedef struct eng_pb_chunk eng_pb_chunk;
typedef struct eng_pb_arena {
    ProtobufCAllocator alloc;
    eng_pb_chunk *head;
    size_t next_size;
    cl_err err; /* the first allocation failure */
    bool failed;
} eng_pb_arena;

/* first_chunk: the size of the first chunk (at least 4 KiB); chunks double up to 256 MiB. */
void eng_pb_arena_init(eng_pb_arena *a, size_t first_chunk);
/* true (and *err the failure, if err) when an allocation failed. */
bool eng_pb_arena_failed(const eng_pb_arena *a, cl_err *err);
void eng_pb_arena_release(eng_pb_arena *a);

#endif
