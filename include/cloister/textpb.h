/* textpb.h — the common module's protobuf text-format reader: text into a protobuf-c message of any
 * generated type, driven by the type's descriptor (the configs TF Serving reads as text: SSLConfig,
 * ModelServerConfig, BatchingParameters, MonitoringConfig, ...).
 *
 * Accepted (protobuf's Text Format Language, for scalar, string, bytes, enum, message and repeated
 * fields; no extensions, no Any expansion, no groups, no field numbers as names):
 *   - `name: value`, `name { ... }`, `name: { ... }`, `name < ... >`; `,` or `;` after any field;
 *     `#` comments to the end of the line;
 *   - repeated fields as repeated entries and as lists `name: [a, b]` / `name: [{...}, {...}]`;
 *   - strings in "..." or '...' with C escapes (\a \b \f \n \r \t \v \\ \' \" \?, octal \NNN up to
 *     \377, hex \xH[H], \uXXXX, \UXXXXXXXX), adjacent literals concatenated; no newline inside;
 *     a string field must be UTF-8 without NUL bytes (protobuf-c strings are C strings), a bytes
 *     field may hold anything;
 *   - integers in decimal, hex (0x) or octal (leading 0), `-` for signed types, each range-checked
 *     against the field's type (int32, int64, uint32, uint64 and their sint / fixed forms);
 *   - floats as 1, 1.5, .5, 1e3, 1.5f, inf, infinity, nan (case-insensitive), with `-`;
 *   - bools as true, True, t, false, False, f, 1, 0; enums by name or by a known number.
 * Refused, with `line L: <what was expected and found> (column C)`: unknown field names (naming the
 * field and its message), a second member of a oneof, nesting deeper than max_depth, numbers out
 * of their type's range, bytes that are not text format (NUL included), and inputs above max_len.
 * A non-repeated field given twice keeps its last value and a message field given twice is merged
 * (protobuf's default, "allow singular overwrites"); with CL_TEXTPB_FORBID_OVERWRITE it is an error.
 *
 * Ownership: *out is allocated with opts->allocator (NULL: malloc) — strings, bytes, arrays and
 * sub-messages too — and freed only with cl_textpb_free() and the same options (a secure-memory
 * allocator keeps a private key in locked memory, and the reader's scratch buffers go through it
 * too). On failure *out is NULL and nothing is left allocated. Thread-safety: no shared state; any
 * number of threads may parse at once. */
#ifndef CLOISTER_TEXTPB_H
#define CLOISTER_TEXTPB_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

#include "cloister/common.h"

enum {
    /* a non-repeated field given twice is an error (protobuf's FORBID_SINGULAR_OVERWRITES) */
    CL_TEXTPB_FORBID_OVERWRITE = 1u << 0,
    /* cloister's extension (not protobuf's): a google.protobuf.*Value wrapper field may be given as
     * `field: N`, short for `field { value: N }` (older cloister batching files) */
    CL_TEXTPB_WRAPPER_SHORTHAND = 1u << 1,
    /* errors do not quote values or stray text (a file that holds a private key): "found a name",
     * not its bytes; only names followed by ':' or '{' (unknown fields) are quoted */
    CL_TEXTPB_SECRET = 1u << 2,
};

/* Where each field was given: for messages' semantic checks that name a line. */
typedef struct cl_textpb_locs cl_textpb_locs;

/* Errors say "unknown <noun> 'x'" for the fields of `type` (default: "field"). */
typedef struct cl_textpb_noun {
    const ProtobufCMessageDescriptor *type;
    const char *noun;
} cl_textpb_noun;

#define CL_TEXTPB_DEFAULT_DEPTH 64u            /* nested messages */
#define CL_TEXTPB_DEFAULT_MAX_LEN (64u << 20)  /* bytes of text */

typedef struct cl_textpb_options {
    unsigned flags;                 /* CL_TEXTPB_* */
    unsigned max_depth;             /* 0: CL_TEXTPB_DEFAULT_DEPTH */
    size_t max_len;                 /* 0: CL_TEXTPB_DEFAULT_MAX_LEN */
    ProtobufCAllocator *allocator;  /* NULL: malloc/free */
    const cl_textpb_noun *nouns;    /* may be NULL */
    size_t n_nouns;
    /* non-NULL: receives the locations of the fields of a parsed message (caller frees with
     * cl_textpb_locs_free; NULL on failure) */
    cl_textpb_locs **locs;
} cl_textpb_options;

/* Parses `len` bytes of text (need not be NUL-terminated) as a message of type `desc` into *out.
 * opts may be NULL (defaults). 0, or -1 with CL_E_FORMAT (the text), CL_E_NOMEM. */
int cl_textpb_parse(const char *text, size_t len, const ProtobufCMessageDescriptor *desc,
                    const cl_textpb_options *opts, ProtobufCMessage **out, cl_err *err);
/* Frees a message from cl_textpb_parse (NULL is fine); `opts` as given to the parse. Memory from a
 * secure allocator is zeroed by that allocator's free. */
void cl_textpb_free(ProtobufCMessage *msg, const cl_textpb_options *opts);

/* The line and column of the name of `field` (its `index`th value if repeated; 0 otherwise) in the
 * message `msg` (a message or sub-message of the parse that filled `locs`). false: not given. */
bool cl_textpb_where(const cl_textpb_locs *locs, const void *msg, const char *field, size_t index, int *line,
                     int *col);
void cl_textpb_locs_free(cl_textpb_locs *locs);

#endif
