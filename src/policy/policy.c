/* policy.c — the key server's release policy: strict parsing (cloister/json.h) and validation into
 * an immutable structure of SGX and TDX identities, every list bounded on each append, and matching
 * of verified attestation claims against it (fail-closed). */
#include "cloister/policy.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/json.h"

#define WHAT "policy"

/* A list of fixed-width values (measurements), grown on demand: every append checks the bound. */
typedef struct vlist {
    uint8_t *v;
    size_t n, cap, width;
    bool any; /* RTMRs only: "any" was written, every value matches */
} vlist;

enum { EV_SIM, EV_SGX, EV_TDX, N_EV };
static const char *const k_evidence_types[N_EV] = {"sim", "sgx-dcap", "tdx-dcap"};
static const char *const k_tcb_statuses[] = {"UpToDate", "SWHardeningNeeded", "ConfigurationNeeded",
                                             "ConfigurationAndSWHardeningNeeded", "OutOfDate",
                                             "OutOfDateConfigurationNeeded"};
#define N_TCB CL_ARRAY_LEN(k_tcb_statuses)

typedef enum id_kind { KIND_SGX = 1, KIND_TDX } id_kind;

/* The TDX identity's lists, their policy field names, widths and where the claims keep them. */
enum { T_MRTD, T_RTMR0, T_RTMR1, T_RTMR2, T_RTMR3, T_MRCONFIGID, T_MROWNER, T_MROWNERCONFIG, T_XFAM, T_TDATTR,
       T_MRSEAM, T_MRSIGNERSEAM, N_TDX };
#define TDX_OFF(f) offsetof(cl_attest_tdx_identity, f)
static const struct tdx_field {
    const char *name;
    size_t width, off;
    const char *covers; /* for the RTMRs: what an "any" leaves unchecked */
} k_tdx[N_TDX] = {
    {"mrtd", 48, TDX_OFF(mr_td), NULL},
    {"rtmr0", 48, TDX_OFF(rtmr), "the firmware's configuration (TD HOB, ACPI tables, UEFI variables)"},
    {"rtmr1", 48, TDX_OFF(rtmr) + 48, "the OS loader and kernel"},
    {"rtmr2", 48, TDX_OFF(rtmr) + 96, "the kernel command line and initrd"},
    {"rtmr3", 48, TDX_OFF(rtmr) + 144, "what the guest itself measured (the application)"},
    {"mrconfigid", 48, TDX_OFF(mr_config_id), NULL},
    {"mrowner", 48, TDX_OFF(mr_owner), NULL},
    {"mrownerconfig", 48, TDX_OFF(mr_owner_config), NULL},
    {"xfam", 8, TDX_OFF(xfam), NULL},
    {"td_attributes", 8, TDX_OFF(td_attributes), NULL},
    {"mrseam", 48, TDX_OFF(mr_seam), NULL},
    {"mrsignerseam", 48, TDX_OFF(mr_signer_seam), NULL},
};
static const char *const k_sgx_fields[] = {"mrenclave", "mrsigner", "isv_prod_id", "min_isv_svn"};
static const char *const k_known[] = {"name", "comment", "allow_debug", "tcb_statuses", "evidence_types", "secrets",
                                      "secret_prov", "mrenclave", "mrsigner", "isv_prod_id", "min_isv_svn", "mrtd",
                                      "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrconfigid", "mrowner", "mrownerconfig",
                                      "xfam", "td_attributes", "mrseam", "mrsignerseam", NULL};

typedef struct identity {
    char name[CL_POLICY_MAX_NAME + 1];
    id_kind kind;
    unsigned evidence; /* bit i: k_evidence_types[i] accepted */
    unsigned tcb;      /* bit i: k_tcb_statuses[i] accepted */
    bool allow_debug;
    /* SGX */
    vlist mrenclave, mrsigner;
    long isv_prod_id; /* -1: any */
    long min_isv_svn;
    /* TDX: a list with n == 0 and !any was not given (matches anything; only optional fields) */
    vlist tdx[N_TDX];
    char **secrets;
    size_t n_secrets;
    const char *secret_prov;
} identity;

struct cl_policy {
    identity *ids;
    size_t count;
};

bool cl_policy_secret_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > CL_POLICY_MAX_SECRET_NAME)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == ':' || c == '/' || c == '-'))
            return false;
    }
    return true;
}

static void identity_free(identity *id)
{
    free(id->mrenclave.v);
    free(id->mrsigner.v);
    for (size_t i = 0; i < N_TDX; i++)
        free(id->tdx[i].v);
    for (size_t j = 0; j < id->n_secrets; j++)
        free(id->secrets[j]);
    free(id->secrets);
}

void cl_policy_free(cl_policy *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->count; i++)
        identity_free(&p->ids[i]);
    free(p->ids);
    free(p);
}

cl_policy *cl_policy_deny_all(void) { return calloc(1, sizeof(cl_policy)); }

size_t cl_policy_identity_count(const cl_policy *p) { return p ? p->count : 0; }

void cl_policy_decision_clear(cl_policy_decision *d)
{
    if (!d)
        return;
    free(d->identities);
    free(d->reason);
    memset(d, 0, sizeof(*d));
}

/* ---------------------------------------------------------------- parsing */

/* Appends one value given as hex; the bound is on the list's total. */
static int add_value(vlist *l, const char *s, size_t len, const char *path, cl_err *err)
{
    if (l->n >= CL_POLICY_MAX_MEASUREMENTS)
        return cl_err_set(err, CL_E_FORMAT, WHAT ": %s: more than %d values in all", path,
                          CL_POLICY_MAX_MEASUREMENTS);
    uint8_t val[48];
    if (len != 2 * l->width || cl_hex_decode(s, len, val, l->width) != 0)
        return cl_err_set(err, CL_E_FORMAT, WHAT ": %s: '%.100s%s' is not %zu hex digits", path, s,
                          len > 100 ? "..." : "", 2 * l->width);
    for (size_t i = 0; i < l->n; i++)
        if (!memcmp(l->v + i * l->width, val, l->width))
            return cl_err_set(err, CL_E_FORMAT, WHAT ": %s: '%s' is listed twice", path, s);
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 4;
        uint8_t *grown = realloc(l->v, cap * l->width);
        if (!grown)
            return cl_err_nomem(err);
        l->v = grown;
        l->cap = cap;
    }
    memcpy(l->v + l->n * l->width, val, l->width);
    l->n++;
    return 0;
}

/* A hex string or a non-empty array of them; with allow_any also the string "any". */
static int parse_values(const json_t *v, const char *path, size_t width, bool allow_any, vlist *l, cl_err *err)
{
    l->width = width;
    if (json_is_string(v)) {
        if (allow_any && !strcmp(json_string_value(v), "any")) {
            l->any = true;
            return 0;
        }
        return add_value(l, json_string_value(v), json_string_length(v), path, err);
    }
    if (!json_is_array(v))
        return cl_err_set(err, CL_E_FORMAT, WHAT ": %s must be %s%zu hex digits or an array of them", path,
                          allow_any ? "\"any\", " : "", 2 * width);
    size_t n = json_array_size(v);
    if (n == 0)
        return cl_err_set(err, CL_E_FORMAT, WHAT ": %s is an empty list, which would match nothing (give at least "
                          "one value%s)", path, allow_any ? ", or \"any\"" : ", or leave the field out");
    if (n > CL_POLICY_MAX_MEASUREMENTS)
        return cl_err_set(err, CL_E_FORMAT, WHAT ": %s has %zu values, more than %d", path, n,
                          CL_POLICY_MAX_MEASUREMENTS);
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(v, i);
        char ipath[128];
        snprintf(ipath, sizeof ipath, "%s[%zu]", path, i);
        if (!json_is_string(e))
            return cl_err_set(err, CL_E_FORMAT, WHAT ": %s must be a string of %zu hex digits", ipath, 2 * width);
        if (allow_any && !strcmp(json_string_value(e), "any"))
            return cl_err_set(err, CL_E_FORMAT, WHAT ": %s: \"any\" stands alone (\"%s\": \"any\"), not in a list",
                              ipath, strrchr(path, '.') ? strrchr(path, '.') + 1 : path);
        if (add_value(l, json_string_value(e), json_string_length(e), ipath, err) != 0)
            return -1;
    }
    return 0;
}

/* A name from `names` or an array of them, each at most once, into a bit set. */
static int parse_names(const json_t *v, const char *path, const char *const *names, size_t n_names, unsigned *set,
                       cl_err *err)
{
    size_t n = json_is_array(v) ? json_array_size(v) : 1;
    if (!json_is_string(v) && !json_is_array(v))
        return cl_err_set(err, CL_E_FORMAT, WHAT ": %s must be a string or an array of strings", path);
    if (n == 0)
        return cl_err_set(err, CL_E_FORMAT, WHAT ": %s is an empty list, which would accept nothing (leave it out "
                          "for the default)", path);
    if (n > n_names)
        return cl_err_set(err, CL_E_FORMAT, WHAT ": %s has %zu entries, more than the %zu known values", path, n,
                          n_names);
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_is_array(v) ? json_array_get(v, i) : v;
        if (!json_is_string(e))
            return cl_err_set(err, CL_E_FORMAT, WHAT ": %s must contain only strings", path);
        const char *s = json_string_value(e);
        size_t k = 0;
        while (k < n_names && strcmp(names[k], s) != 0)
            k++;
        if (k == n_names)
            return cl_err_set(err, CL_E_FORMAT, WHAT ": %s: unknown value '%.64s'", path, s);
        if (*set & (1u << k))
            return cl_err_set(err, CL_E_FORMAT, WHAT ": %s: '%s' is listed twice", path, s);
        *set |= 1u << k;
    }
    return 0;
}

static int parse_secrets(const json_t *v, const char *path, identity *id, cl_err *err)
{
    if (!json_is_array(v))
        return cl_err_set(err, CL_E_FORMAT, WHAT ": %s must be an array of secret names", path);
    size_t n = json_array_size(v);
    if (n > CL_POLICY_MAX_SECRETS)
        return cl_err_set(err, CL_E_FORMAT, WHAT ": %s has %zu entries, more than %d", path, n, CL_POLICY_MAX_SECRETS);
    if (n && !(id->secrets = calloc(n, sizeof(char *))))
        return cl_err_nomem(err);
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(v, i);
        const char *s = json_is_string(e) ? json_string_value(e) : NULL;
        if (!s || !cl_policy_secret_name_valid(s))
            return cl_err_set(err, CL_E_FORMAT, WHAT ": %s[%zu]: '%.140s' is not a valid secret name "
                              "([A-Za-z0-9._:/-], 1 to %d characters)", path, i, s ? s : "(not a string)",
                              CL_POLICY_MAX_SECRET_NAME);
        for (size_t j = 0; j < id->n_secrets; j++)
            if (!strcmp(id->secrets[j], s))
                return cl_err_set(err, CL_E_FORMAT, WHAT ": %s: '%s' is listed twice", path, s);
        if (!(id->secrets[id->n_secrets] = strdup(s)))
            return cl_err_nomem(err);
        id->n_secrets++;
    }
    return 0;
}

/* Identity names appear in audit records and decisions, joined by ',' and ';' and quoted with '. */
static bool name_valid(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e || strchr(",;'\"\\", *s))
            return false;
    return true;
}

static int parse_identity(const json_t *o, size_t idx, identity *id, cl_err *err)
{
    char base[32], path[64];
    snprintf(base, sizeof base, "identities[%zu]", idx);
    snprintf(id->name, sizeof id->name, "identity %zu", idx);
    id->isv_prod_id = -1;
    if (!json_is_object(o))
        return cl_err_set(err, CL_E_FORMAT, WHAT ": %s must be an object", base);
    if (cl_json_check_keys(o, WHAT, base, k_known, err) != 0)
        return -1;
#define FIELD(k) (snprintf(path, sizeof path, "%s.%s", base, k), json_object_get(o, k))
    const json_t *f;
    const char *s;
    if ((f = FIELD("name"))) {
        if (cl_json_get_str(f, WHAT, path, CL_POLICY_MAX_NAME, &s, err) != 0)
            return -1;
        if (!name_valid(s))
            return cl_err_set(err, CL_E_FORMAT, WHAT ": %s: printable ASCII only, without , ; ' \" or \\", path);
        snprintf(id->name, sizeof id->name, "%s", s);
    }
    if ((f = FIELD("evidence_types")) && parse_names(f, path, k_evidence_types, N_EV, &id->evidence, err) != 0)
        return -1;

    /* SGX or TDX: decided by the fields and evidence types, never both */
    const char *sgx = NULL, *tdx = NULL;
    for (size_t i = 0; i < CL_ARRAY_LEN(k_sgx_fields) && !sgx; i++)
        if (json_object_get(o, k_sgx_fields[i]))
            sgx = k_sgx_fields[i];
    for (size_t i = 0; i < N_TDX && !tdx; i++)
        if (json_object_get(o, k_tdx[i].name))
            tdx = k_tdx[i].name;
    if (sgx && tdx)
        return cl_err_set(err, CL_E_FORMAT, WHAT ": %s ('%s'): SGX field \"%s\" and TDX field \"%s\" in one identity: "
                          "an identity is either an SGX enclave or a TDX trust domain (write two)", base, id->name, sgx,
                          tdx);
    if ((id->evidence & 1u << EV_SGX) && (id->evidence & 1u << EV_TDX))
        return cl_err_set(err, CL_E_FORMAT, WHAT ": %s.evidence_types: sgx-dcap and tdx-dcap in one identity: an "
                          "identity is either an SGX enclave or a TDX trust domain (write two)", base);
    if ((id->evidence & 1u << EV_TDX) && sgx)
        return cl_err_set(err, CL_E_FORMAT, WHAT ": %s.%s: an SGX-only field in a tdx-dcap identity ('%s'): a trust "
                          "domain has no MRENCLAVE, MRSIGNER, ISV_PROD_ID or ISV_SVN (TDX quotes carry zeros there, so "
                          "such a rule would match any TD); pin \"mrtd\" and \"rtmr0\"..\"rtmr3\" instead "
                          "(docs/policy.md)", base, sgx, id->name);
    if ((id->evidence & 1u << EV_SGX) && tdx)
        return cl_err_set(err, CL_E_FORMAT, WHAT ": %s.%s: a TDX field in an sgx-dcap identity ('%s'): an enclave has "
                          "no %s (use mrenclave/mrsigner, or make it a tdx-dcap identity)", base, tdx, id->name, tdx);
    id->kind = tdx || (id->evidence & 1u << EV_TDX) ? KIND_TDX : KIND_SGX;
    if (!id->evidence)
        id->evidence = 1u << (id->kind == KIND_TDX ? EV_TDX : EV_SGX);

    if (id->kind == KIND_SGX) {
        if ((f = FIELD("mrenclave")) && parse_values(f, path, 32, false, &id->mrenclave, err) != 0)
            return -1;
        if ((f = FIELD("mrsigner")) && parse_values(f, path, 32, false, &id->mrsigner, err) != 0)
            return -1;
        long long n;
        if ((f = FIELD("isv_prod_id"))) {
            if (cl_json_get_int(f, WHAT, path, 0, 65535, &n, err) != 0)
                return -1;
            id->isv_prod_id = (long)n;
        }
        if ((f = FIELD("min_isv_svn"))) {
            if (cl_json_get_int(f, WHAT, path, 0, 65535, &n, err) != 0)
                return -1;
            id->min_isv_svn = (long)n;
        }
        if (id->mrenclave.n == 0 && id->mrsigner.n == 0)
            return cl_err_set(err, CL_E_FORMAT, WHAT ": %s ('%s') names neither mrenclave nor mrsigner: it would "
                              "match any enclave (a TDX identity pins mrtd and rtmr0..rtmr3)", base, id->name);
        if (id->mrenclave.n == 0 && id->isv_prod_id < 0)
            return cl_err_set(err, CL_E_FORMAT, WHAT ": %s ('%s') matches by mrsigner only and must also set "
                              "isv_prod_id", base, id->name);
    } else {
        for (size_t i = 0; i < N_TDX; i++) {
            bool rtmr = i >= T_RTMR0 && i <= T_RTMR3;
            if ((f = FIELD(k_tdx[i].name))) {
                if (parse_values(f, path, k_tdx[i].width, rtmr, &id->tdx[i], err) != 0)
                    return -1;
            } else if (i == T_MRTD) {
                return cl_err_set(err, CL_E_FORMAT, WHAT ": %s ('%s') is a TDX identity without \"mrtd\": it would "
                                  "match a TD with any firmware (pin MRTD, 96 hex digits)", base, id->name);
            } else if (rtmr) {
                return cl_err_set(err, CL_E_FORMAT, WHAT ": %s ('%s') is a TDX identity without \"%s\": say which "
                                  "values %s may have, or \"any\" to accept every one (fail-closed: leaving it out "
                                  "is an error)", base, id->name, k_tdx[i].name, k_tdx[i].covers);
            }
        }
    }
    if ((f = FIELD("allow_debug")) && cl_json_get_bool(f, WHAT, path, &id->allow_debug, err) != 0)
        return -1;
    if ((f = FIELD("tcb_statuses")) && parse_names(f, path, k_tcb_statuses, N_TCB, &id->tcb, err) != 0)
        return -1;
    if (!id->tcb)
        id->tcb = 1u; /* UpToDate */
    if (!(f = FIELD("secrets")))
        return cl_err_set(err, CL_E_FORMAT, WHAT ": %s ('%s') has no \"secrets\" list", base, id->name);
    if (parse_secrets(f, path, id, err) != 0)
        return -1;
    if ((f = FIELD("secret_prov"))) {
        if (cl_json_get_str(f, WHAT, path, CL_POLICY_MAX_SECRET_NAME, &s, err) != 0)
            return -1;
        for (size_t i = 0; i < id->n_secrets && !id->secret_prov; i++)
            if (!strcmp(id->secrets[i], s))
                id->secret_prov = id->secrets[i];
        if (!id->secret_prov)
            return cl_err_set(err, CL_E_FORMAT, WHAT ": %s '%s' is not in its secrets", path, s);
    } else if (id->n_secrets == 1) {
        id->secret_prov = id->secrets[0];
    }
#undef FIELD
    return 0;
}

cl_policy *cl_policy_parse(const char *json, size_t len, cl_err *err)
{
    json_t *root = cl_json_parse(json, len, WHAT, err);
    if (!root)
        return NULL;
    cl_policy *p = calloc(1, sizeof(*p));
    if (!p) {
        json_decref(root);
        cl_err_nomem(err);
        return NULL;
    }
    static const char *const top[] = {"version", "identities", "comment", NULL};
    const json_t *ver = json_object_get(root, "version"), *ids = json_object_get(root, "identities");
    if (cl_json_check_keys(root, WHAT, "", top, err) != 0)
        goto fail;
    if (!ver) {
        cl_err_set(err, CL_E_FORMAT, WHAT ": missing \"version\": 1");
        goto fail;
    }
    if (!json_is_integer(ver) || json_integer_value(ver) != 1) {
        cl_err_set(err, CL_E_VERSION, WHAT ": version must be 1");
        goto fail;
    }
    if (!json_is_array(ids)) {
        cl_err_set(err, CL_E_FORMAT, WHAT ": \"identities\" must be an array");
        goto fail;
    }
    size_t n = json_array_size(ids);
    if (n > CL_POLICY_MAX_IDENTITIES) {
        cl_err_set(err, CL_E_FORMAT, WHAT ": %zu identities, more than %d", n, CL_POLICY_MAX_IDENTITIES);
        goto fail;
    }
    if (!(p->ids = calloc(n ? n : 1, sizeof(identity)))) {
        cl_err_nomem(err);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        p->count = i + 1; /* so cl_policy_free releases partial identities */
        if (parse_identity(json_array_get(ids, i), i, &p->ids[i], err) != 0)
            goto fail;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(p->ids[j].name, p->ids[i].name)) {
                cl_err_set(err, CL_E_FORMAT, WHAT ": identities[%zu] and identities[%zu] are both named '%s' (audit "
                           "records name the identities that matched: give each its own name)", j, i, p->ids[i].name);
                goto fail;
            }
    }
    json_decref(root); /* secret_prov points into our own copies */
    return p;
fail:
    json_decref(root);
    cl_policy_free(p);
    return NULL;
}

cl_policy *cl_policy_load(const char *path, cl_err *err)
{
    uint8_t *buf;
    size_t len;
    if (cl_file_read(path, CL_POLICY_MAX_FILE, &buf, &len, err) != 0)
        return NULL;
    cl_policy *p = cl_policy_parse((const char *)buf, len, err);
    free(buf);
    if (!p)
        cl_err_prefix(err, "%s", path);
    return p;
}

/* ---------------------------------------------------------------- matching */

static bool in_list(const vlist *l, const uint8_t *m)
{
    if (l->any)
        return true;
    for (size_t i = 0; i < l->n; i++)
        if (!memcmp(l->v + i * l->width, m, l->width))
            return true;
    return false;
}

static void why_hex(cl_strbuf *why, const char *field, const uint8_t *v, size_t n)
{
    if (!why)
        return;
    char hex[2 * 48 + 1];
    cl_hex_encode(v, n, hex);
    cl_strbuf_fmt(why, "%s %s not allowed", field, hex);
}

const char *cl_policy_deny_name(unsigned code)
{
    static const char *const names[] = {"unspecified", "evidence_invalid", "evidence_type_not_allowed",
                                        "measurement_mismatch", "svn_too_low", "debug_not_allowed",
                                        "tcb_status_not_allowed", "collateral_unavailable", "policy_empty"};
    return code < CL_ARRAY_LEN(names) ? names[code] : NULL;
}

/* Whether `id` matches `c` (CL_DENY_NONE); if not, the first failed check (its code, and described in
 * `why` when not NULL). */
static cl_policy_deny check(const identity *id, const cl_attest_claims *c, cl_strbuf *why)
{
    size_t ev = 0;
    while (ev < N_EV && strcmp(k_evidence_types[ev], c->evidence_type) != 0)
        ev++;
    if (ev == N_EV || !(id->evidence & 1u << ev)) {
        if (why)
            cl_strbuf_fmt(why, "evidence type '%s' not accepted", c->evidence_type);
        return CL_DENY_EVIDENCE_TYPE;
    }
    bool td = c->tee_type == CL_QUOTE_TEE_TDX;
    if (td != (id->kind == KIND_TDX)) {
        if (why)
            cl_strbuf_fmt(why, "%s evidence cannot match %s identity", td ? "TDX" : "SGX", td ? "an SGX" : "a TDX");
        return CL_DENY_EVIDENCE_TYPE;
    }
    bool debug = c->debug;
    if (td) {
        const uint8_t *base = (const uint8_t *)&c->tdx;
        for (size_t i = 0; i < N_TDX; i++) {
            const vlist *l = &id->tdx[i];
            if ((l->n || l->any) && !in_list(l, base + k_tdx[i].off)) {
                why_hex(why, k_tdx[i].name, base + k_tdx[i].off, k_tdx[i].width);
                return CL_DENY_MEASUREMENT;
            }
        }
        debug = debug || (c->tdx.td_attributes[0] & CL_TDX_ATTR_DEBUG);
    } else {
        if (id->mrenclave.n && !in_list(&id->mrenclave, c->mr_enclave)) {
            why_hex(why, "mrenclave", c->mr_enclave, 32);
            return CL_DENY_MEASUREMENT;
        }
        if (id->mrsigner.n && !in_list(&id->mrsigner, c->mr_signer)) {
            why_hex(why, "mrsigner", c->mr_signer, 32);
            return CL_DENY_MEASUREMENT;
        }
        if (id->isv_prod_id >= 0 && c->isv_prod_id != id->isv_prod_id) {
            if (why)
                cl_strbuf_fmt(why, "isv_prod_id %u is not %ld", c->isv_prod_id, id->isv_prod_id);
            return CL_DENY_MEASUREMENT;
        }
        if (c->isv_svn < id->min_isv_svn) {
            if (why)
                cl_strbuf_fmt(why, "isv_svn %u below minimum %ld", c->isv_svn, id->min_isv_svn);
            return CL_DENY_SVN;
        }
    }
    if (debug && !id->allow_debug) {
        if (why)
            cl_strbuf_fmt(why, "debug %s not allowed", td ? "TD (TUD.DEBUG)" : "enclave");
        return CL_DENY_DEBUG;
    }
    size_t t = 0;
    while (t < N_TCB && strcmp(k_tcb_statuses[t], c->tcb_status) != 0)
        t++;
    if (t == N_TCB || !(id->tcb & 1u << t)) {
        if (why)
            cl_strbuf_fmt(why, "TCB status '%s' not accepted", c->tcb_status);
        return CL_DENY_TCB_STATUS;
    }
    return CL_DENY_NONE;
}

int cl_policy_evaluate(const cl_policy *p, const cl_attest_claims *c, cl_policy_decision *d)
{
    cl_policy_decision_clear(d);
    cl_strbuf ids = {0}, why = {0};
    cl_strbuf_put(&ids, "", 0); /* both strings exist even when empty */
    cl_strbuf_put(&why, "", 0);
    bool allowed = false;
    cl_policy_deny closest = CL_DENY_NONE;
    if (!p || p->count == 0) {
        cl_strbuf_str(&why, "the policy is empty: nothing is allowed");
        closest = CL_DENY_POLICY_EMPTY;
    }
    for (size_t i = 0; p && i < p->count; i++) {
        size_t mark = why.len;
        cl_strbuf_fmt(&why, "%s'%s': ", why.len ? "; " : "", p->ids[i].name);
        cl_policy_deny code = check(&p->ids[i], c, &why);
        if (code > closest)
            closest = code;
        if (code == CL_DENY_NONE) {
            if (!why.failed) {
                why.len = mark;
                why.p[mark] = '\0';
            }
            cl_strbuf_fmt(&ids, "%s%s", allowed ? "," : "", p->ids[i].name);
            allowed = true;
        }
    }
    if (allowed && !why.failed) {
        why.len = 0;
        why.p[0] = '\0';
    }
    d->identities = cl_strbuf_take(&ids, NULL);
    d->reason = cl_strbuf_take(&why, NULL);
    if (!d->identities || !d->reason) {
        cl_policy_decision_clear(d); /* out of memory: deny */
        return -1;
    }
    d->allowed = allowed;
    d->deny = allowed ? CL_DENY_NONE : closest;
    return allowed ? 0 : -1;
}

bool cl_policy_grants(const cl_policy *p, const cl_attest_claims *c, const char *secret)
{
    for (size_t i = 0; p && i < p->count; i++) {
        if (check(&p->ids[i], c, NULL) != CL_DENY_NONE)
            continue;
        for (size_t j = 0; j < p->ids[i].n_secrets; j++)
            if (!strcmp(p->ids[i].secrets[j], secret))
                return true;
    }
    return false;
}

const char *cl_policy_secret_prov(const cl_policy *p, const cl_attest_claims *c)
{
    for (size_t i = 0; p && i < p->count; i++)
        if (p->ids[i].secret_prov && check(&p->ids[i], c, NULL) == CL_DENY_NONE)
            return p->ids[i].secret_prov;
    return NULL;
}

/* ---------------------------------------------------------------- description */

static void describe_list(cl_strbuf *b, const char *name, const vlist *l)
{
    if (l->any)
        cl_strbuf_fmt(b, ", %s any", name);
    else if (l->n)
        cl_strbuf_fmt(b, ", %s %zu value%s", name, l->n, l->n == 1 ? "" : "s");
}

char *cl_policy_describe(const cl_policy *p)
{
    cl_strbuf b = {0};
    cl_strbuf_put(&b, "", 0);
    for (size_t i = 0; p && i < p->count; i++) {
        const identity *id = &p->ids[i];
        cl_strbuf_fmt(&b, "identity '%s': %s (", id->name, id->kind == KIND_TDX ? "TDX trust domain" : "SGX enclave");
        for (size_t k = 0, n = 0; k < N_EV; k++)
            if (id->evidence & 1u << k)
                cl_strbuf_fmt(&b, "%s%s", n++ ? ", " : "", k_evidence_types[k]);
        cl_strbuf_str(&b, ")");
        if (id->kind == KIND_SGX) {
            describe_list(&b, "mrenclave", &id->mrenclave);
            describe_list(&b, "mrsigner", &id->mrsigner);
            if (id->isv_prod_id >= 0)
                cl_strbuf_fmt(&b, ", isv_prod_id %ld", id->isv_prod_id);
            if (id->min_isv_svn)
                cl_strbuf_fmt(&b, ", min_isv_svn %ld", id->min_isv_svn);
        } else {
            for (size_t k = 0; k < N_TDX; k++)
                describe_list(&b, k_tdx[k].name, &id->tdx[k]);
        }
        cl_strbuf_str(&b, ", TCB ");
        for (size_t k = 0, n = 0; k < N_TCB; k++)
            if (id->tcb & 1u << k)
                cl_strbuf_fmt(&b, "%s%s", n++ ? "|" : "", k_tcb_statuses[k]);
        cl_strbuf_fmt(&b, "%s; %zu secret%s\n", id->allow_debug ? ", debug allowed" : "", id->n_secrets,
                      id->n_secrets == 1 ? "" : "s");
        if (id->evidence & 1u << EV_SIM)
            cl_strbuf_fmt(&b, "  warning: '%s' accepts sim evidence, which is INSECURE (development only)\n", id->name);
        if (id->allow_debug)
            cl_strbuf_fmt(&b, "  warning: '%s' accepts debug %s, whose memory the host can read\n", id->name,
                          id->kind == KIND_TDX ? "TDs" : "enclaves");
        for (size_t k = T_RTMR0; id->kind == KIND_TDX && k <= T_RTMR3; k++)
            if (id->tdx[k].any)
                cl_strbuf_fmt(&b, "  note: '%s' accepts any %s: %s is not checked\n", id->name, k_tdx[k].name,
                              k_tdx[k].covers);
    }
    return cl_strbuf_take(&b, NULL);
}
