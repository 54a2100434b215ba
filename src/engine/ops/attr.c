/* engine/ops/attr.c — attributes decoded at load time: the typed getters every descriptor's prepare uses
 * (internal.h, "attributes at load"). A wrong type, a value out of range or a choice the engine does not
 * implement fails the load with a message naming the node and the attribute; kernels never see the raw
 * attributes.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

static const char *type_name(eng_attr_type t)
{
    switch (t) {
    case ENG_ATTR_FLOAT: return "a float";
    case ENG_ATTR_INT: return "an int";
    case ENG_ATTR_STRING: return "a string";
    case ENG_ATTR_TENSOR: return "a tensor";
    case ENG_ATTR_GRAPH: return "a graph";
    case ENG_ATTR_FLOATS: return "floats";
    case ENG_ATTR_INTS: return "ints";
    case ENG_ATTR_STRINGS: return "strings";
    default: return "of an unsupported type";
    }
}

int eng_attr_err(cl_err *err, cl_status code, const eng_node *n, const char *attr, const char *fmt, ...)
{
    char buf[CL_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return cl_err_set(err, code, "node '%s' (%s): attribute '%s' %s", n->name, n->op_type, attr, buf);
}

const eng_attr *eng_attr_find(const eng_node *n, const char *name)
{
    for (size_t i = 0; i < n->n_attrs; i++)
        if (strcmp(n->attrs[i].name, name) == 0)
            return &n->attrs[i];
    return NULL;
}

/* The attribute when present with type t; NULL when absent; -1 (and err) when of another type. */
static int typed(const eng_node *n, const char *name, eng_attr_type t, const eng_attr **out, cl_err *err)
{
    const eng_attr *a = eng_attr_find(n, name);
    *out = NULL;
    if (!a)
        return 0;
    if (a->type != t)
        return eng_attr_err(err, CL_E_FORMAT, n, name, "must be %s, got %s", type_name(t), type_name(a->type));
    *out = a;
    return 0;
}

int eng_attr_int(const eng_node *n, const char *name, int64_t def, int64_t *out, cl_err *err)
{
    const eng_attr *a;
    if (typed(n, name, ENG_ATTR_INT, &a, err) != 0)
        return -1;
    *out = a ? a->i : def;
    return 0;
}

int eng_attr_int_in(const eng_node *n, const char *name, int64_t def, int64_t lo, int64_t hi, int64_t *out,
                    cl_err *err)
{
    if (eng_attr_int(n, name, def, out, err) != 0)
        return -1;
    if (*out < lo || *out > hi)
        return eng_attr_err(err, CL_E_FORMAT, n, name, "is %lld, out of range (%lld..%lld)", (long long)*out,
                            (long long)lo, (long long)hi);
    return 0;
}

int eng_attr_bool(const eng_node *n, const char *name, bool def, bool *out, cl_err *err)
{
    int64_t v;
    if (eng_attr_int_in(n, name, def, 0, 1, &v, err) != 0)
        return -1;
    *out = v != 0;
    return 0;
}

int eng_attr_float(const eng_node *n, const char *name, float def, float *out, cl_err *err)
{
    const eng_attr *a;
    if (typed(n, name, ENG_ATTR_FLOAT, &a, err) != 0)
        return -1;
    *out = a ? a->f : def;
    return 0;
}

int eng_attr_str(const eng_node *n, const char *name, const char *def, const char **out, cl_err *err)
{
    const eng_attr *a;
    if (typed(n, name, ENG_ATTR_STRING, &a, err) != 0)
        return -1;
    *out = a ? a->s : def;
    return 0;
}

int eng_attr_choice(const eng_node *n, const char *name, int def_index, const char *const *choices,
                    int n_choices, int *out, cl_err *err)
{
    const char *s;
    if (eng_attr_str(n, name, NULL, &s, err) != 0)
        return -1;
    if (!s) {
        *out = def_index;
        return 0;
    }
    for (int i = 0; i < n_choices; i++)
        if (strcmp(s, choices[i]) == 0) {
            *out = i;
            return 0;
        }
    char list[256] = "";
    size_t used = 0;
    for (int i = 0; i < n_choices && used < sizeof list; i++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s'%s'", i ? ", " : "", choices[i]);
    return eng_attr_err(err, CL_E_UNSUPPORTED, n, name, "'%.64s' is not supported (supported: %s)", s, list);
}

int eng_attr_ints_max(const eng_node *n, const char *name, size_t max, const int64_t **out, size_t *count,
                      cl_err *err)
{
    const eng_attr *a;
    *out = NULL;
    *count = 0;
    if (typed(n, name, ENG_ATTR_INTS, &a, err) != 0)
        return -1;
    if (!a)
        return 0;
    if (a->n_ints > max)
        return eng_attr_err(err, CL_E_FORMAT, n, name, "has %zu entries (at most %zu)", a->n_ints, max);
    *out = a->ints;
    *count = a->n_ints;
    return 0;
}

int eng_attr_floats_max(const eng_node *n, const char *name, size_t max, const float **out, size_t *count,
                        cl_err *err)
{
    const eng_attr *a;
    *out = NULL;
    *count = 0;
    if (typed(n, name, ENG_ATTR_FLOATS, &a, err) != 0)
        return -1;
    if (!a)
        return 0;
    if (a->n_floats > max)
        return eng_attr_err(err, CL_E_FORMAT, n, name, "has %zu entries (at most %zu)", a->n_floats, max);
    *out = a->floats;
    *count = a->n_floats;
    return 0;
}

int eng_attr_tensor(const eng_node *n, const char *name, const eng_tensor **out, cl_err *err)
{
    const eng_attr *a;
    *out = NULL;
    if (typed(n, name, ENG_ATTR_TENSOR, &a, err) != 0)
        return -1;
    *out = a ? a->t : NULL;
    return 0;
}

void *eng_attr_alloc(eng_node *n, size_t size, cl_err *err)
{
    free(n->attr);
    n->attr = calloc(1, size);
    if (!n->attr)
        cl_err_nomem(err);
    return n->attr;
}
