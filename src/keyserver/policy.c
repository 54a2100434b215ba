/* policy.c — the key server's release policy: strict JSON parsing and validation into an
 * immutable structure, and matching of verified attestation claims against it (fail-closed). */
#include "cloister/policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#define MAX_MEAS 32
#define MAX_LIST 32

typedef struct identity {
    char name[64];
    uint8_t mrenclave[MAX_MEAS][32];
    size_t n_mrenclave;
    uint8_t mrsigner[MAX_MEAS][32];
    size_t n_mrsigner;
    long isv_prod_id; /* -1: any */
    long min_isv_svn;
    bool allow_debug;
    char tcb[MAX_LIST][48];
    size_t n_tcb;
    char evidence[MAX_LIST][16];
    size_t n_evidence;
    char **secrets;
    size_t n_secrets;
    const char *secret_prov;
} identity;

struct cl_policy {
    identity *ids;
    size_t count;
};

static const char *const k_evidence_types[] = {"sim", "sgx-dcap", "tdx-dcap"};
static const char *const k_tcb_statuses[] = {"UpToDate", "SWHardeningNeeded", "ConfigurationNeeded",
                                             "ConfigurationAndSWHardeningNeeded", "OutOfDate",
                                             "OutOfDateConfigurationNeeded"};

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

void cl_policy_free(cl_policy *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->count; i++) {
        for (size_t j = 0; j < p->ids[i].n_secrets; j++)
            free(p->ids[i].secrets[j]);
        free(p->ids[i].secrets);
    }
    free(p->ids);
    free(p);
}

cl_policy *cl_policy_deny_all(void) { return calloc(1, sizeof(cl_policy)); }

size_t cl_policy_identity_count(const cl_policy *p) { return p ? p->count : 0; }

/* A string or an array of strings, each checked by `item`. */
static int for_each_string(const cJSON *v, const char *path, size_t max, cl_err *err,
                           int (*item)(void *ctx, const char *s, const char *path, cl_err *err), void *ctx)
{
    if (cJSON_IsString(v))
        return item(ctx, v->valuestring, path, err);
    if (!cJSON_IsArray(v))
        return cl_err_set(err, CL_E_FORMAT, "policy: %s must be a string or an array of strings", path);
    if ((size_t)cJSON_GetArraySize(v) > max)
        return cl_err_set(err, CL_E_FORMAT, "policy: %s has more than %zu entries", path, max);
    const cJSON *e;
    cJSON_ArrayForEach(e, v)
    {
        if (!cJSON_IsString(e))
            return cl_err_set(err, CL_E_FORMAT, "policy: %s must contain only strings", path);
        if (item(ctx, e->valuestring, path, err) != 0)
            return -1;
    }
    return 0;
}

typedef struct meas_ctx {
    uint8_t (*arr)[32];
    size_t *n;
} meas_ctx;

/* Every append checks the total, not only one array's size: a field given twice adds to its list. */
static int add_meas(void *vctx, const char *s, const char *path, cl_err *err)
{
    meas_ctx *m = vctx;
    if (*m->n >= MAX_MEAS)
        return cl_err_set(err, CL_E_FORMAT, "policy: %s: more than %d measurements in all", path, MAX_MEAS);
    if (strlen(s) != 64 || cl_hex_decode(s, 64, m->arr[*m->n], 32) != 0)
        return cl_err_set(err, CL_E_FORMAT, "policy: %s: '%s' is not 64 hex digits", path, s);
    (*m->n)++;
    return 0;
}

typedef struct name_ctx {
    char *base;
    size_t width;
    size_t *n;
    const char *const *allowed;
    size_t n_allowed;
} name_ctx;

static int add_name(void *vctx, const char *s, const char *path, cl_err *err)
{
    name_ctx *c = vctx;
    if (*c->n >= MAX_LIST)
        return cl_err_set(err, CL_E_FORMAT, "policy: %s: more than %d entries in all", path, MAX_LIST);
    size_t k = 0;
    while (k < c->n_allowed && strcmp(c->allowed[k], s) != 0)
        k++;
    if (k == c->n_allowed)
        return cl_err_set(err, CL_E_FORMAT, "policy: %s: unknown value '%s'", path, s);
    snprintf(c->base + c->width * *c->n, c->width, "%s", s);
    (*c->n)++;
    return 0;
}

static int add_secret(void *vctx, const char *s, const char *path, cl_err *err)
{
    identity *id = vctx;
    if (!cl_policy_secret_name_valid(s))
        return cl_err_set(err, CL_E_FORMAT, "policy: %s: '%s' is not a valid secret name", path, s);
    for (size_t i = 0; i < id->n_secrets; i++)
        if (!strcmp(id->secrets[i], s))
            return cl_err_set(err, CL_E_FORMAT, "policy: %s: '%s' is listed twice", path, s);
    char **grown = realloc(id->secrets, (id->n_secrets + 1) * sizeof(char *));
    if (!grown)
        return cl_err_set(err, CL_E_NOMEM, "out of memory");
    id->secrets = grown;
    if (!(id->secrets[id->n_secrets] = strdup(s)))
        return cl_err_set(err, CL_E_NOMEM, "out of memory");
    id->n_secrets++;
    return 0;
}

static int get_long(const cJSON *v, const char *path, long min, long max, long *out, cl_err *err)
{
    /* range first: converting an out-of-range double to long is undefined */
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= (double)min && v->valuedouble <= (double)max) ||
        v->valuedouble != (double)(long)v->valuedouble)
        return cl_err_set(err, CL_E_FORMAT, "policy: %s must be an integer from %ld to %ld", path, min, max);
    *out = (long)v->valuedouble;
    return 0;
}

static int parse_identity(const cJSON *o, size_t idx, identity *id, cl_err *err)
{
    char path[96];
    snprintf(id->name, sizeof id->name, "identity %zu", idx);
    id->isv_prod_id = -1;
    if (!cJSON_IsObject(o))
        return cl_err_set(err, CL_E_FORMAT, "policy: identities[%zu] must be an object", idx);
    bool has_secrets = false;
    const cJSON *f;
    cJSON_ArrayForEach(f, o)
    {
        snprintf(path, sizeof path, "identities[%zu].%s", idx, f->string);
        const char *k = f->string;
        int rc = 0;
        if (!strcmp(k, "name")) {
            if (!cJSON_IsString(f) || !f->valuestring[0] || strlen(f->valuestring) >= sizeof id->name)
                return cl_err_set(err, CL_E_FORMAT, "policy: %s must be a non-empty string (< 64 chars)", path);
            snprintf(id->name, sizeof id->name, "%s", f->valuestring);
        } else if (!strcmp(k, "mrenclave")) {
            meas_ctx m = {id->mrenclave, &id->n_mrenclave};
            rc = for_each_string(f, path, MAX_MEAS, err, add_meas, &m);
        } else if (!strcmp(k, "mrsigner")) {
            meas_ctx m = {id->mrsigner, &id->n_mrsigner};
            rc = for_each_string(f, path, MAX_MEAS, err, add_meas, &m);
        } else if (!strcmp(k, "isv_prod_id")) {
            rc = get_long(f, path, 0, 65535, &id->isv_prod_id, err);
        } else if (!strcmp(k, "min_isv_svn")) {
            rc = get_long(f, path, 0, 65535, &id->min_isv_svn, err);
        } else if (!strcmp(k, "allow_debug")) {
            if (!cJSON_IsBool(f))
                return cl_err_set(err, CL_E_FORMAT, "policy: %s must be true or false", path);
            id->allow_debug = cJSON_IsTrue(f);
        } else if (!strcmp(k, "tcb_statuses")) {
            name_ctx c = {&id->tcb[0][0], 48, &id->n_tcb, k_tcb_statuses, CL_ARRAY_LEN(k_tcb_statuses)};
            rc = for_each_string(f, path, MAX_LIST, err, add_name, &c);
        } else if (!strcmp(k, "evidence_types")) {
            name_ctx c = {&id->evidence[0][0], 16, &id->n_evidence, k_evidence_types,
                          CL_ARRAY_LEN(k_evidence_types)};
            rc = for_each_string(f, path, MAX_LIST, err, add_name, &c);
        } else if (!strcmp(k, "secrets")) {
            has_secrets = true;
            if (!cJSON_IsArray(f))
                return cl_err_set(err, CL_E_FORMAT, "policy: %s must be an array of secret names", path);
            rc = for_each_string(f, path, 1024, err, add_secret, id);
        } else if (!strcmp(k, "secret_prov")) {
            if (!cJSON_IsString(f))
                return cl_err_set(err, CL_E_FORMAT, "policy: %s must be a secret name", path);
            id->secret_prov = f->valuestring; /* resolved against secrets below */
        } else if (!strcmp(k, "comment")) {
            /* free text, ignored */
        } else {
            return cl_err_set(err, CL_E_FORMAT, "policy: %s: unknown field (typo?)", path);
        }
        if (rc != 0)
            return -1;
    }
    if (!has_secrets)
        return cl_err_set(err, CL_E_FORMAT, "policy: identities[%zu] ('%s') has no \"secrets\" list", idx,
                          id->name);
    if (id->n_mrenclave == 0 && id->n_mrsigner == 0)
        return cl_err_set(err, CL_E_FORMAT, "policy: identities[%zu] ('%s') names neither mrenclave nor "
                          "mrsigner: it would match any enclave", idx, id->name);
    if (id->n_mrenclave == 0 && id->isv_prod_id < 0)
        return cl_err_set(err, CL_E_FORMAT, "policy: identities[%zu] ('%s') matches by mrsigner only and "
                          "must also set isv_prod_id", idx, id->name);
    if (id->n_tcb == 0)
        snprintf(id->tcb[id->n_tcb++], 48, "UpToDate");
    if (id->n_evidence == 0)
        snprintf(id->evidence[id->n_evidence++], 16, "sgx-dcap");
    if (id->secret_prov) {
        const char *sp = NULL;
        for (size_t i = 0; i < id->n_secrets && !sp; i++)
            if (!strcmp(id->secrets[i], id->secret_prov))
                sp = id->secrets[i];
        if (!sp)
            return cl_err_set(err, CL_E_FORMAT, "policy: identities[%zu].secret_prov '%s' is not in its secrets",
                              idx, id->secret_prov);
        id->secret_prov = sp;
    } else if (id->n_secrets == 1) {
        id->secret_prov = id->secrets[0];
    }
    return 0;
}

cl_policy *cl_policy_parse(const char *json, size_t len, cl_err *err)
{
    cJSON *root = cJSON_ParseWithLength(json, len);
    cl_policy *p = calloc(1, sizeof(*p));
    if (!p) {
        cJSON_Delete(root);
        cl_err_set(err, CL_E_NOMEM, "out of memory");
        return NULL;
    }
    if (!root || !cJSON_IsObject(root)) {
        cl_err_set(err, CL_E_FORMAT, "policy: not a JSON object%s", root ? "" : " (syntax error)");
        goto fail;
    }
    const cJSON *ids = NULL;
    bool has_version = false;
    const cJSON *f;
    cJSON_ArrayForEach(f, root)
    {
        if (!strcmp(f->string, "version")) {
            if (!cJSON_IsNumber(f) || f->valuedouble != 1) {
                cl_err_set(err, CL_E_VERSION, "policy: version must be 1");
                goto fail;
            }
            has_version = true;
        } else if (!strcmp(f->string, "identities")) {
            ids = f;
        } else if (strcmp(f->string, "comment") != 0) {
            cl_err_set(err, CL_E_FORMAT, "policy: unknown top-level field '%s'", f->string);
            goto fail;
        }
    }
    if (!has_version) {
        cl_err_set(err, CL_E_FORMAT, "policy: missing \"version\": 1");
        goto fail;
    }
    if (!cJSON_IsArray(ids)) {
        cl_err_set(err, CL_E_FORMAT, "policy: \"identities\" must be an array");
        goto fail;
    }
    size_t n = (size_t)cJSON_GetArraySize(ids);
    if (n > CL_POLICY_MAX_IDENTITIES) {
        cl_err_set(err, CL_E_FORMAT, "policy: more than %d identities", CL_POLICY_MAX_IDENTITIES);
        goto fail;
    }
    p->ids = calloc(n ? n : 1, sizeof(identity));
    if (!p->ids) {
        cl_err_set(err, CL_E_NOMEM, "out of memory");
        goto fail;
    }
    size_t i = 0;
    cJSON_ArrayForEach(f, ids)
    {
        p->count = i + 1; /* so cl_policy_free releases partial identities */
        if (parse_identity(f, i, &p->ids[i], err) != 0)
            goto fail;
        i++;
    }
    /* secret_prov pointed into the JSON tree; it now points into our own copies */
    cJSON_Delete(root);
    return p;
fail:
    cJSON_Delete(root);
    cl_policy_free(p);
    return NULL;
}

cl_policy *cl_policy_load(const char *path, cl_err *err)
{
    uint8_t *buf;
    size_t len;
    if (cl_file_read(path, 4 << 20, &buf, &len, err) != 0)
        return NULL;
    cl_policy *p = cl_policy_parse((const char *)buf, len, err);
    free(buf);
    if (!p)
        cl_err_prefix(err, "%s", path);
    return p;
}

static bool in_meas(uint8_t (*arr)[32], size_t n, const uint8_t *m)
{
    for (size_t i = 0; i < n; i++)
        if (!memcmp(arr[i], m, 32))
            return true;
    return false;
}

/* NULL if `id` matches `c`, else the name of the first failed check with details in buf. */
static const char *check(const identity *id, const cl_attest_claims *c, char *buf, size_t size)
{
    bool ok = false;
    for (size_t i = 0; i < id->n_evidence && !ok; i++)
        ok = !strcmp(id->evidence[i], c->evidence_type);
    if (!ok) {
        snprintf(buf, size, "evidence type '%s' not accepted", c->evidence_type);
        return buf;
    }
    char hex[65];
    if (id->n_mrenclave && !in_meas((uint8_t(*)[32])id->mrenclave, id->n_mrenclave, c->mr_enclave)) {
        cl_hex_encode(c->mr_enclave, 32, hex);
        snprintf(buf, size, "mrenclave %.16s… not allowed", hex);
        return buf;
    }
    if (id->n_mrsigner && !in_meas((uint8_t(*)[32])id->mrsigner, id->n_mrsigner, c->mr_signer)) {
        cl_hex_encode(c->mr_signer, 32, hex);
        snprintf(buf, size, "mrsigner %.16s… not allowed", hex);
        return buf;
    }
    if (id->isv_prod_id >= 0 && c->isv_prod_id != id->isv_prod_id) {
        snprintf(buf, size, "isv_prod_id %u is not %ld", c->isv_prod_id, id->isv_prod_id);
        return buf;
    }
    if (c->isv_svn < id->min_isv_svn) {
        snprintf(buf, size, "isv_svn %u below minimum %ld", c->isv_svn, id->min_isv_svn);
        return buf;
    }
    if (c->debug && !id->allow_debug) {
        snprintf(buf, size, "debug enclave not allowed");
        return buf;
    }
    ok = false;
    for (size_t i = 0; i < id->n_tcb && !ok; i++)
        ok = !strcmp(id->tcb[i], c->tcb_status);
    if (!ok) {
        snprintf(buf, size, "TCB status '%s' not accepted", c->tcb_status);
        return buf;
    }
    return NULL;
}

int cl_policy_evaluate(const cl_policy *p, const cl_attest_claims *c, cl_policy_decision *d)
{
    memset(d, 0, sizeof(*d));
    if (!p || p->count == 0) {
        snprintf(d->reason, sizeof d->reason, "the policy is empty: nothing is allowed");
        return -1;
    }
    size_t used = 0, rused = 0;
    for (size_t i = 0; i < p->count; i++) {
        char buf[160];
        const char *why = check(&p->ids[i], c, buf, sizeof buf);
        if (!why) {
            d->allowed = true;
            int n = snprintf(d->identities + used, sizeof d->identities - used, "%s%s", used ? "," : "",
                             p->ids[i].name);
            if (n > 0 && (size_t)n < sizeof d->identities - used)
                used += (size_t)n;
        } else if (rused < sizeof d->reason) {
            int n = snprintf(d->reason + rused, sizeof d->reason - rused, "%s'%s': %s", rused ? "; " : "",
                             p->ids[i].name, why);
            if (n > 0)
                rused += (size_t)n;
        }
    }
    if (!d->allowed)
        return -1;
    d->reason[0] = 0;
    return 0;
}

bool cl_policy_grants(const cl_policy *p, const cl_attest_claims *c, const char *secret)
{
    if (!p)
        return false;
    char buf[160];
    for (size_t i = 0; i < p->count; i++) {
        if (check(&p->ids[i], c, buf, sizeof buf))
            continue;
        for (size_t j = 0; j < p->ids[i].n_secrets; j++)
            if (!strcmp(p->ids[i].secrets[j], secret))
                return true;
    }
    return false;
}

const char *cl_policy_secret_prov(const cl_policy *p, const cl_attest_claims *c)
{
    if (!p)
        return NULL;
    char buf[160];
    for (size_t i = 0; i < p->count; i++)
        if (!check(&p->ids[i], c, buf, sizeof buf) && p->ids[i].secret_prov)
            return p->ids[i].secret_prov;
    return NULL;
}
