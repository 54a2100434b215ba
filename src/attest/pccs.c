/* pccs.c — the HTTPS client that fetches one platform's DCAP collateral from a PCCS or Intel PCS
 * (API v3 or v4) with libcurl: TCB info and QE identity (SGX, or TDX under /tdx/certification/v4),
 * the PCK CRL of the platform's CA, the root CA CRL, and the issuer chain headers. HTTPS only, no
 * redirects, answers limited in size, and the four requests bounded together by one deadline (a
 * fetch may run inside a TLS handshake). Whatever comes back is only parsed here
 * (cl_dcap_collateral_from_pccs); it is verified by its users. libcurl is loaded with dlopen on the
 * first fetch, so the binary (and the model server's enclave, which never fetches collateral) does not
 * load it and its dependencies. Thread-safe: each fetch has its own curl handle; loading and
 * curl_global_init run once. */
#include "dcap_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CURL_DISABLE_TYPECHECK
#include <curl/curl.h>
#include <dlfcn.h>
#include <openssl/x509v3.h>

#define ANSWER_MAX (4u << 20)  /* a PCK CRL of a large CA is a few hundred KB */
#define HEADER_MAX (64u << 10) /* an issuer chain header: two certificates, percent-encoded */
#define INTEL_PCS_HOST "api.trustedservices.intel.com"

static struct {
    CURLcode (*global_init)(long);
    CURL *(*easy_init)(void);
    CURLcode (*setopt)(CURL *, CURLoption, ...);
    CURLcode (*perform)(CURL *);
    CURLcode (*getinfo)(CURL *, CURLINFO, ...);
    void (*cleanup)(CURL *);
    const char *(*strerror)(CURLcode);
} g_curl;
static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static CURLcode g_curl_init = CURLE_FAILED_INIT;
static char g_curl_error[256];

static void curl_init_once(void)
{
    void *h = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(g_curl_error, sizeof g_curl_error, "cannot load libcurl.so.4 (Debian package libcurl4): %s",
                 dlerror());
        return;
    }
    /* POSIX: a function pointer may be converted from dlsym's void * */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpedantic"
    *(void **)&g_curl.global_init = dlsym(h, "curl_global_init");
    *(void **)&g_curl.easy_init = dlsym(h, "curl_easy_init");
    *(void **)&g_curl.setopt = dlsym(h, "curl_easy_setopt");
    *(void **)&g_curl.perform = dlsym(h, "curl_easy_perform");
    *(void **)&g_curl.getinfo = dlsym(h, "curl_easy_getinfo");
    *(void **)&g_curl.cleanup = dlsym(h, "curl_easy_cleanup");
    *(void **)&g_curl.strerror = dlsym(h, "curl_easy_strerror");
#pragma GCC diagnostic pop
    if (!g_curl.global_init || !g_curl.easy_init || !g_curl.setopt || !g_curl.perform || !g_curl.getinfo ||
        !g_curl.cleanup || !g_curl.strerror) {
        snprintf(g_curl_error, sizeof g_curl_error, "libcurl.so.4 lacks the easy interface");
        return;
    }
    if ((g_curl_init = g_curl.global_init(CURL_GLOBAL_DEFAULT)) != CURLE_OK)
        snprintf(g_curl_error, sizeof g_curl_error, "cannot initialise libcurl: %s", g_curl.strerror(g_curl_init));
}

typedef struct answer {
    uint8_t *body;
    size_t len;
    bool too_big;
    const char *const *want; /* header names, preferred first */
    char *chain;             /* the first wanted header's value (raw, percent-encoded) */
    size_t chain_len;
    int chain_rank;
} answer;

static void answer_free(answer *a)
{
    free(a->body);
    free(a->chain);
    memset(a, 0, sizeof *a);
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    answer *a = arg;
    size_t add = size * n;
    if (add > ANSWER_MAX - a->len) {
        a->too_big = true;
        return 0;
    }
    uint8_t *b = realloc(a->body, a->len + add + 1);
    if (!b)
        return 0;
    memcpy(b + a->len, p, add);
    a->body = b;
    a->len += add;
    b[a->len] = 0;
    return add;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    answer *a = arg;
    size_t len = size * n;
    for (int r = 0; a->want && a->want[r]; r++) {
        size_t kl = strlen(a->want[r]);
        if (len <= kl + 1 || p[kl] != ':' || strncasecmp(p, a->want[r], kl) != 0)
            continue;
        if (a->chain && a->chain_rank <= r)
            return len;
        const char *v = p + kl + 1, *end = p + len;
        while (v < end && (*v == ' ' || *v == '\t'))
            v++;
        while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if ((size_t)(end - v) > HEADER_MAX)
            return len; /* left missing: the parser says so */
        free(a->chain);
        if (!(a->chain = strndup(v, (size_t)(end - v))))
            return 0;
        a->chain_len = (size_t)(end - v);
        a->chain_rank = r;
        return len;
    }
    return len;
}

/* One GET within the deadline; 0 with a 200 answer, or -1 (CL_E_IO) naming the URL. */
static int get(const cl_dcap_config *cfg, const char *url, uint64_t deadline_ns, answer *a, cl_err *err)
{
    uint64_t now = cl_now_ns();
    if (now >= deadline_ns)
        return cl_err_set(err, CL_E_IO, "PCCS %s: no time left (--pccs-timeout-ms %d for the whole fetch)", url,
                          cfg->pccs_timeout_ms);
    long left_ms = (long)((deadline_ns - now) / 1000000) + 1;
    CURL *h = g_curl.easy_init();
    if (!h)
        return cl_err_set(err, CL_E_NOMEM, "cannot create an HTTP client");
    char ebuf[CURL_ERROR_SIZE] = "";
    g_curl.setopt(h, CURLOPT_URL, url);
    g_curl.setopt(h, CURLOPT_NOSIGNAL, 1L);
    g_curl.setopt(h, CURLOPT_PROTOCOLS_STR, "https");
    g_curl.setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    g_curl.setopt(h, CURLOPT_TIMEOUT_MS, left_ms);
    g_curl.setopt(h, CURLOPT_CONNECTTIMEOUT_MS, left_ms);
    g_curl.setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    g_curl.setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    g_curl.setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)ANSWER_MAX);
    if (cfg->pccs_ca_file)
        g_curl.setopt(h, CURLOPT_CAINFO, cfg->pccs_ca_file);
    g_curl.setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    g_curl.setopt(h, CURLOPT_WRITEDATA, a);
    g_curl.setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    g_curl.setopt(h, CURLOPT_HEADERDATA, a);
    g_curl.setopt(h, CURLOPT_ERRORBUFFER, ebuf);
    g_curl.setopt(h, CURLOPT_USERAGENT, "cloister");
    CURLcode rc = g_curl.perform(h);
    long status = 0;
    g_curl.getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    g_curl.cleanup(h);
    if (rc == CURLE_OPERATION_TIMEDOUT)
        return cl_err_set(err, CL_E_IO, "PCCS %s: timed out (--pccs-timeout-ms %d for the whole fetch)", url,
                          cfg->pccs_timeout_ms);
    if (a->too_big || rc == CURLE_FILESIZE_EXCEEDED)
        return cl_err_set(err, CL_E_IO, "PCCS %s: the answer is larger than %u bytes", url, ANSWER_MAX);
    if (rc != CURLE_OK)
        return cl_err_set(err, CL_E_IO, "PCCS %s: %s", url, ebuf[0] ? ebuf : g_curl.strerror(rc));
    if (status != 200)
        return cl_err_set(err, CL_E_IO, "PCCS %s: HTTP status %ld%s", url, status,
                          status == 404 ? " (not found: is this FMSPC known to the PCCS, and the API version right?)"
                                        : "");
    if (!a->body || a->len == 0)
        return cl_err_set(err, CL_E_IO, "PCCS %s: empty answer", url);
    return 0;
}

/* The root CA CRL's URL at Intel PCS: the pinned root's CRL distribution point. */
static int root_cdp(X509 *root, char *out, size_t size, cl_err *err)
{
    STACK_OF(DIST_POINT) *dps = X509_get_ext_d2i(root, NID_crl_distribution_points, NULL, NULL);
    int rc = -1;
    for (int i = 0; dps && i < sk_DIST_POINT_num(dps) && rc != 0; i++) {
        DIST_POINT *dp = sk_DIST_POINT_value(dps, i);
        if (!dp->distpoint || dp->distpoint->type != 0)
            continue;
        GENERAL_NAMES *names = dp->distpoint->name.fullname;
        for (int j = 0; j < sk_GENERAL_NAME_num(names) && rc != 0; j++) {
            GENERAL_NAME *g = sk_GENERAL_NAME_value(names, j);
            if (g->type != GEN_URI)
                continue;
            const char *u = (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
            int ul = ASN1_STRING_length(g->d.uniformResourceIdentifier);
            if (ul > 8 && (size_t)ul < size && !strncmp(u, "https://", 8)) {
                memcpy(out, u, (size_t)ul);
                out[ul] = 0;
                rc = 0;
            }
        }
    }
    CRL_DIST_POINTS_free(dps);
    if (rc != 0)
        cl_err_set(err, CL_E_FORMAT, "the Intel root CA names no https CRL distribution point");
    return rc;
}

cl_dcap_collateral *cl_pccs_fetch(const cl_dcap_config *cfg, X509 *root, const char *tee, const char *fmspc_hex,
                                  const char *ca, cl_err *err)
{
    pthread_once(&g_curl_once, curl_init_once);
    if (g_curl_init != CURLE_OK) {
        cl_err_set(err, CL_E_IO, "PCCS client: %s", g_curl_error);
        return NULL;
    }
    bool tdx = !strcmp(tee, "TDX");
    int v = cfg->pccs_api_version ? cfg->pccs_api_version : 4;
    if (tdx && v < 4) {
        cl_err_set(err, CL_E_UNSUPPORTED, "TDX collateral needs PCCS/PCS API v4 (--pccs-api-version 4)");
        return NULL;
    }
    size_t bl = strlen(cfg->pccs_url);
    while (bl && cfg->pccs_url[bl - 1] == '/')
        bl--;
    char base[512], url[1024];
    if (bl >= sizeof base) {
        cl_err_set(err, CL_E_INVALID, "--pccs-url is too long");
        return NULL;
    }
    memcpy(base, cfg->pccs_url, bl);
    base[bl] = 0;
    /* a qcnl-style URL (https://pccs:8081/sgx/certification/v4/) names the base and the version */
    static const char *const suffixes[] = {"/sgx/certification/v3", "/sgx/certification/v4", "/tdx/certification/v4"};
    for (size_t i = 0; i < CL_ARRAY_LEN(suffixes); i++) {
        size_t sl = strlen(suffixes[i]);
        if (bl > sl && !strcmp(base + bl - sl, suffixes[i])) {
            base[bl - sl] = 0;
            if (!cfg->pccs_api_version)
                v = suffixes[i][sl - 1] - '0';
            break;
        }
    }
    if (tdx && v < 4) {
        cl_err_set(err, CL_E_UNSUPPORTED, "TDX collateral needs PCCS/PCS API v4 (--pccs-api-version 4)");
        return NULL;
    }
    int timeout = cfg->pccs_timeout_ms > 0 ? cfg->pccs_timeout_ms : 5000;
    cl_dcap_config c2 = *cfg;
    c2.pccs_timeout_ms = timeout;
    uint64_t deadline = cl_now_ns() + (uint64_t)timeout * 1000000u;
    static const char *const tcb_v4[] = {"TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain", NULL};
    static const char *const tcb_v3[] = {"SGX-TCB-Info-Issuer-Chain", "TCB-Info-Issuer-Chain", NULL};
    static const char *const qe_h[] = {"SGX-Enclave-Identity-Issuer-Chain", NULL};
    static const char *const crl_h[] = {"SGX-PCK-CRL-Issuer-Chain", NULL};
    answer tcb = {.want = v >= 4 ? tcb_v4 : tcb_v3}, qe = {.want = qe_h}, crl = {.want = crl_h}, rcrl = {0};
    cl_dcap_collateral *col = NULL;
    const char *sgx = "sgx/certification";

    snprintf(url, sizeof url, "%s/%s/v%d/tcb?fmspc=%s", base, tdx ? "tdx/certification" : sgx, v, fmspc_hex);
    if (get(&c2, url, deadline, &tcb, err) != 0)
        goto out;
    snprintf(url, sizeof url, "%s/%s/v%d/qe/identity", base, tdx ? "tdx/certification" : sgx, v);
    if (get(&c2, url, deadline, &qe, err) != 0)
        goto out;
    snprintf(url, sizeof url, "%s/%s/v%d/pckcrl?ca=%s&encoding=der", base, sgx, v, ca);
    if (get(&c2, url, deadline, &crl, err) != 0)
        goto out;
    /* Intel PCS serves no /rootcacrl: its CRL is at the root certificate's distribution point */
    const char *host = strstr(base, "://");
    host = host ? host + 3 : base;
    if (!strncmp(host, INTEL_PCS_HOST, strlen(INTEL_PCS_HOST)) &&
        (host[strlen(INTEL_PCS_HOST)] == 0 || host[strlen(INTEL_PCS_HOST)] == '/' ||
         host[strlen(INTEL_PCS_HOST)] == ':')) {
        if (root_cdp(root, url, sizeof url, err) != 0)
            goto out;
    } else {
        snprintf(url, sizeof url, "%s/%s/v%d/rootcacrl", base, sgx, v);
    }
    if (get(&c2, url, deadline, &rcrl, err) != 0)
        goto out;
    cl_dcap_pccs_answers a = {
        .tcb_info = (const char *)tcb.body, .tcb_info_len = tcb.len,
        .tcb_info_chain = tcb.chain, .tcb_info_chain_len = tcb.chain_len,
        .qe_identity = (const char *)qe.body, .qe_identity_len = qe.len,
        .qe_identity_chain = qe.chain, .qe_identity_chain_len = qe.chain_len,
        .pck_crl = crl.body, .pck_crl_len = crl.len,
        .pck_crl_chain = crl.chain, .pck_crl_chain_len = crl.chain_len,
        .root_crl = rcrl.body, .root_crl_len = rcrl.len,
    };
    if (!(col = cl_dcap_collateral_from_pccs(&a, err)))
        cl_err_prefix(err, "PCCS %s", base);
out:
    answer_free(&tcb);
    answer_free(&qe);
    answer_free(&crl);
    answer_free(&rcrl);
    return col;
}
