/* provider.c — evidence providers: `sim` (a software quoting key signing SGX v3-layout quotes, or
 * TDX v4 quotes in its TDX mode; INSECURE, for development and tests), `gramine` (/dev/attestation
 * pseudo-files) and `tsm` (Linux configfs-tsm reports for TDX guests), plus creation of simulated
 * quoting keys and the measurement helpers (file digests, RTMR extend). */
#include "attest_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

const uint8_t cl_attest_sim_vendor_id[16] = {'C', 'L', 'O', 'I', 'S', 'T', 'E', 'R',
                                             '-', 'S', 'I', 'M', '-', 'Q', 'E', '!'};

#define SIM_SIGNER_LABEL "cloister simulated signer"
#define SIM_SEAM_LABEL "cloister simulated TDX module"
#define GRAMINE_ROOT_DEFAULT "/dev/attestation"
#define TSM_ROOT_DEFAULT "/sys/kernel/config/tsm/report"

struct cl_attest_provider {
    cl_attest_kind kind;
    char *root;
    EVP_PKEY *sim_key;
    uint8_t sim_pub[64];
    cl_attest_quote sim_id; /* identity fields only */
};

int cl_attest_kind_parse(const char *name, cl_attest_kind *out, cl_err *err)
{
    if (!strcmp(name, "sim"))
        *out = CL_ATTEST_SIM;
    else if (!strcmp(name, "gramine"))
        *out = CL_ATTEST_GRAMINE;
    else if (!strcmp(name, "tsm"))
        *out = CL_ATTEST_TSM;
    else
        return cl_err_set(err, CL_E_INVALID, "unknown evidence provider '%s' (use sim, gramine or tsm)", name);
    return 0;
}

const char *cl_attest_kind_name(cl_attest_kind kind)
{
    switch (kind) {
    case CL_ATTEST_SIM: return "sim";
    case CL_ATTEST_GRAMINE: return "gramine";
    case CL_ATTEST_TSM: return "tsm";
    }
    return "?";
}

/* ---------------------------------------------------------------- file helpers */

int cl_attest_read_file(const char *path, size_t max, uint8_t **out, size_t *len, cl_err *err)
{
    *out = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cl_err_errno(err, CL_E_IO, errno, "cannot open '%s'", path);
    int rc = cl_fd_read_all(fd, path, max, out, len, err);
    close(fd);
    return rc;
}

int cl_attest_write_file(const char *path, const void *buf, size_t len, cl_err *err)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return cl_err_errno(err, CL_E_IO, errno, "cannot open '%s' for writing", path);
    if (cl_write_all(fd, buf, len) != 0) {
        int e = errno;
        close(fd);
        return cl_err_errno(err, CL_E_IO, e, "cannot write '%s'", path);
    }
    if (close(fd) != 0)
        return cl_err_errno(err, CL_E_IO, errno, "cannot write '%s'", path);
    return 0;
}

static char *path_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", a, b);
    return p;
}

static int file_digest(const char *path, const EVP_MD *alg, uint8_t *out, cl_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cl_err_errno(err, CL_E_IO, errno, "cannot open '%s' to measure it", path);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int rc = -1;
    if (!md || !EVP_DigestInit_ex(md, alg, NULL)) {
        cl_err_ssl(err, CL_E_CRYPTO, "%s init failed", EVP_MD_get0_name(alg));
        goto out;
    }
    uint8_t buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            cl_err_errno(err, CL_E_IO, errno, "cannot read '%s'", path);
            goto out;
        }
        if (n == 0)
            break;
        if (!EVP_DigestUpdate(md, buf, (size_t)n)) {
            cl_err_ssl(err, CL_E_CRYPTO, "%s failed", EVP_MD_get0_name(alg));
            goto out;
        }
    }
    rc = EVP_DigestFinal_ex(md, out, NULL) ? 0 : cl_err_ssl(err, CL_E_CRYPTO, "%s failed", EVP_MD_get0_name(alg));
out:
    EVP_MD_CTX_free(md);
    close(fd);
    return rc;
}

int cl_attest_file_sha256(const char *path, uint8_t out[32], cl_err *err)
{
    return file_digest(path, EVP_sha256(), out, err);
}

int cl_attest_file_sha384(const char *path, uint8_t out[CL_TDX_MEAS_LEN], cl_err *err)
{
    return file_digest(path, EVP_sha384(), out, err);
}

int cl_attest_rtmr_extend(uint8_t rtmr[CL_TDX_MEAS_LEN], const uint8_t digest[CL_TDX_MEAS_LEN], cl_err *err)
{
    uint8_t in[2 * CL_TDX_MEAS_LEN];
    memcpy(in, rtmr, CL_TDX_MEAS_LEN);
    memcpy(in + CL_TDX_MEAS_LEN, digest, CL_TDX_MEAS_LEN);
    unsigned int n = 0;
    if (!EVP_Digest(in, sizeof in, rtmr, &n, EVP_sha384(), NULL) || n != CL_TDX_MEAS_LEN)
        return cl_err_ssl(err, CL_E_CRYPTO, "SHA-384 failed");
    return 0;
}

int cl_attest_p256_raw_pub(EVP_PKEY *key, uint8_t out[64], cl_err *err)
{
    uint8_t buf[133];
    size_t n = 0;
    char group[32] = "";
    if (!EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, NULL) ||
        strcmp(group, "prime256v1") != 0)
        return cl_err_set(err, CL_E_INVALID, "the quoting key must be an ECDSA P-256 key");
    if (!EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, buf, sizeof buf, &n) || n != 65 ||
        buf[0] != 0x04) {
        /* the key may be stored compressed; ask for the uncompressed form */
        EVP_PKEY_set_utf8_string_param(key, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, "uncompressed");
        if (!EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, buf, sizeof buf, &n) || n != 65)
            return cl_err_ssl(err, CL_E_CRYPTO, "cannot export the P-256 public key");
    }
    memcpy(out, buf + 1, 64);
    return 0;
}

/* ---------------------------------------------------------------- sim */

static void put16le(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32le(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }

int cl_attest_sim_identity(const cl_attest_provider_config *cfg, cl_attest_quote *q, cl_err *err)
{
    memset(q, 0, sizeof(*q));
    q->debug = cfg->sim_debug;
    if (cfg->sim_tdx) {
        q->tee_type = CL_QUOTE_TEE_TDX;
        q->body_kind = CL_QUOTE_BODY_TD10;
        if (cfg->sim_mrtd)
            memcpy(q->mr_td, cfg->sim_mrtd, CL_TDX_MEAS_LEN);
        else if (cl_attest_file_sha384("/proc/self/exe", q->mr_td, err) != 0)
            return cl_err_prefix(err, "sim MRTD");
        for (int i = 0; i < 4; i++)
            if (cfg->sim_rtmr[i])
                memcpy(q->rtmr[i], cfg->sim_rtmr[i], CL_TDX_MEAS_LEN);
        q->td_attributes[0] = cfg->sim_debug ? CL_TDX_ATTR_DEBUG : 0;
        q->td_attributes[3] = 0x10; /* SEPT_VE_DISABLE, as Linux guests set it */
        q->xfam[0] = 0xe7;          /* x87, SSE, AVX, AVX-512 state */
        q->xfam[1] = 0x02;
        q->xfam[2] = 0x06;
        q->tee_tcb_svn[0] = 1;      /* a made-up TDX module version 1.1 */
        q->tee_tcb_svn[1] = 1;
        SHA384((const uint8_t *)SIM_SEAM_LABEL, strlen(SIM_SEAM_LABEL), q->mr_seam);
        return 0;
    }
    q->tee_type = CL_QUOTE_TEE_SGX;
    q->body_kind = CL_QUOTE_BODY_SGX;
    if (cfg->sim_mrenclave)
        memcpy(q->mr_enclave, cfg->sim_mrenclave, 32);
    else if (cl_attest_file_sha256("/proc/self/exe", q->mr_enclave, err) != 0)
        return cl_err_prefix(err, "sim MRENCLAVE");
    if (cfg->sim_mrsigner)
        memcpy(q->mr_signer, cfg->sim_mrsigner, 32);
    else
        SHA256((const uint8_t *)SIM_SIGNER_LABEL, strlen(SIM_SIGNER_LABEL), q->mr_signer);
    q->isv_prod_id = cfg->sim_isv_prod_id;
    q->isv_svn = cfg->sim_isv_svn;
    q->attributes[0] = 0x01 | CL_SGX_FLAG_MODE64 | (cfg->sim_debug ? CL_SGX_FLAG_DEBUG : 0); /* INIT|MODE64 */
    q->attributes[8] = 0x03;                                                                 /* XFRM x87|SSE */
    return 0;
}

/* sim quotes: an SGX v3 quote (QE report, its signature and QE auth data left zero, then the sim
 * certification data type), or a TDX v4 quote whose type-6 certification data holds a zero QE
 * report and the sim type as its inner certification data. Both are signed over header and body. */
#define SIM_SGX_QUOTE_LEN (48 + 384 + 4 + 64 + 64 + 384 + 64 + 2 + 2 + 4)
#define SIM_TDX_CERT_LEN (384 + 64 + 2 + 2 + 4)
#define SIM_TDX_QUOTE_LEN (48 + 584 + 4 + 64 + 64 + 2 + 4 + SIM_TDX_CERT_LEN)

static void sim_td_body(const cl_attest_quote *id, const uint8_t rd[64], uint8_t *b)
{
    memcpy(b, id->tee_tcb_svn, 16);
    memcpy(b + 16, id->mr_seam, 48);
    memcpy(b + 64, id->mr_signer_seam, 48);
    memcpy(b + 112, id->seam_attributes, 8);
    memcpy(b + 120, id->td_attributes, 8);
    memcpy(b + 128, id->xfam, 8);
    memcpy(b + 136, id->mr_td, 48);
    memcpy(b + 184, id->mr_config_id, 48);
    memcpy(b + 232, id->mr_owner, 48);
    memcpy(b + 280, id->mr_owner_config, 48);
    for (int i = 0; i < 4; i++)
        memcpy(b + 328 + 48 * i, id->rtmr[i], 48);
    memcpy(b + 520, rd, 64);
}

static int sim_quote(cl_attest_provider *p, const uint8_t rd[64], uint8_t **out, size_t *out_len, cl_err *err)
{
    bool tdx = p->sim_id.tee_type == CL_QUOTE_TEE_TDX;
    size_t len = tdx ? SIM_TDX_QUOTE_LEN : SIM_SGX_QUOTE_LEN, body_len = tdx ? 584 : 384;
    uint8_t *q = calloc(1, len);
    if (!q)
        return cl_err_nomem(err);
    put16le(q, tdx ? 4 : 3);
    put16le(q + 2, 2);
    put32le(q + 4, p->sim_id.tee_type);
    memcpy(q + 12, cl_attest_sim_vendor_id, 16);
    uint8_t *b = q + 48;
    if (tdx) {
        sim_td_body(&p->sim_id, rd, b);
    } else {
        memcpy(b + 48, p->sim_id.attributes, 16);
        memcpy(b + 64, p->sim_id.mr_enclave, 32);
        memcpy(b + 128, p->sim_id.mr_signer, 32);
        put16le(b + 256, p->sim_id.isv_prod_id);
        put16le(b + 258, p->sim_id.isv_svn);
        memcpy(b + 320, rd, 64);
    }
    uint8_t *s = q + 48 + body_len;
    put32le(s, (uint32_t)(len - 48 - body_len - 4));
    s += 4;
    /* signature over header + body, raw r||s */
    uint8_t der[80];
    size_t der_len = sizeof der;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || !EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, p->sim_key) ||
        !EVP_DigestSign(md, der, &der_len, q, 48 + body_len)) {
        EVP_MD_CTX_free(md);
        free(q);
        return cl_err_ssl(err, CL_E_CRYPTO, "sim quote signing failed");
    }
    EVP_MD_CTX_free(md);
    const uint8_t *dp = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &dp, (long)der_len);
    if (!sig || BN_bn2binpad(ECDSA_SIG_get0_r(sig), s, 32) != 32 ||
        BN_bn2binpad(ECDSA_SIG_get0_s(sig), s + 32, 32) != 32) {
        ECDSA_SIG_free(sig);
        free(q);
        return cl_err_ssl(err, CL_E_CRYPTO, "sim quote signature conversion failed");
    }
    ECDSA_SIG_free(sig);
    memcpy(s + 64, p->sim_pub, 64);
    if (tdx) {
        /* certification data type 6 of SIM_TDX_CERT_LEN bytes: QE report (384), its signature (64)
         * and QE auth data length 0 left zero, then the sim type with no data */
        put16le(s + 128, 6);
        put32le(s + 130, SIM_TDX_CERT_LEN);
        put16le(s + 134 + 384 + 64 + 2, CL_ATTEST_SIM_CERT_TYPE);
    } else {
        /* QE report (384), QE report signature (64), QE auth data length 0: left zero */
        put16le(s + 128 + 384 + 64 + 2, CL_ATTEST_SIM_CERT_TYPE);
        /* certification data length 0 */
    }
    *out = q;
    *out_len = len;
    return 0;
}

/* ---------------------------------------------------------------- gramine */

static int gramine_quote(cl_attest_provider *p, const uint8_t rd[64], uint8_t **out, size_t *out_len,
                         cl_err *err)
{
    char *type_path = path_join(p->root, "attestation_type");
    char *urd_path = path_join(p->root, "user_report_data");
    char *quote_path = path_join(p->root, "quote");
    uint8_t *type = NULL;
    size_t type_len = 0;
    int rc = -1;
    if (!type_path || !urd_path || !quote_path) {
        cl_err_nomem(err);
        goto out;
    }
    if (cl_attest_read_file(type_path, 64, &type, &type_len, err) != 0) {
        cl_err_prefix(err, "gramine: not running inside Gramine with remote attestation enabled?");
        goto out;
    }
    while (type_len > 0 && (type[type_len - 1] == '\n' || type[type_len - 1] == 0))
        type_len--;
    type[type_len] = 0;
    if (strcmp((char *)type, "dcap") != 0) {
        cl_err_set(err, CL_E_UNSUPPORTED,
                   "gramine: attestation type is '%s'; set sgx.remote_attestation = \"dcap\" in the manifest",
                   (char *)type);
        goto out;
    }
    if (cl_attest_write_file(urd_path, rd, 64, err) != 0 ||
        cl_attest_read_file(quote_path, CL_ATTEST_QUOTE_MAX, out, out_len, err) != 0) {
        cl_err_prefix(err, "gramine");
        goto out;
    }
    rc = 0;
out:
    free(type);
    free(type_path);
    free(urd_path);
    free(quote_path);
    return rc;
}

/* ---------------------------------------------------------------- tsm */

static int read_text(const char *dir, const char *name, char *buf, size_t size, cl_err *err)
{
    char *path = path_join(dir, name);
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = path ? cl_attest_read_file(path, size - 1, &data, &len, err)
                  : cl_err_nomem(err);
    free(path);
    if (rc != 0)
        return -1;
    while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == 0))
        len--;
    memcpy(buf, data, len);
    buf[len] = 0;
    free(data);
    return 0;
}

static int tsm_quote(cl_attest_provider *p, const uint8_t rd[64], uint8_t **out, size_t *out_len, cl_err *err)
{
    char name[64];
    snprintf(name, sizeof name, "cloister-%ld", (long)getpid());
    char *entry = path_join(p->root, name);
    char *inblob = entry ? path_join(entry, "inblob") : NULL;
    char *outblob = entry ? path_join(entry, "outblob") : NULL;
    bool created = false;
    int rc = -1;
    if (!inblob || !outblob) {
        cl_err_nomem(err);
        goto out;
    }
    if (mkdir(entry, 0700) == 0)
        created = true;
    else if (errno != EEXIST) {
        cl_err_errno(err, CL_E_IO, errno, "tsm: cannot create report entry '%s' (is configfs-tsm mounted?)",
                     entry);
        goto out;
    }
    char provider[64];
    if (read_text(entry, "provider", provider, sizeof provider, err) != 0)
        goto out;
    if (strcmp(provider, "tdx_guest") != 0) {
        cl_err_set(err, CL_E_UNSUPPORTED, "tsm: provider '%s' is not supported yet (tdx_guest is)", provider);
        goto out;
    }
    for (int attempt = 0;; attempt++) {
        char gen_a[32], gen_b[32];
        if (cl_attest_write_file(inblob, rd, 64, err) != 0 ||
            read_text(entry, "generation", gen_a, sizeof gen_a, err) != 0 ||
            cl_attest_read_file(outblob, CL_ATTEST_QUOTE_MAX, out, out_len, err) != 0 ||
            read_text(entry, "generation", gen_b, sizeof gen_b, err) != 0) {
            free(*out);
            *out = NULL;
            cl_err_prefix(err, "tsm");
            goto out;
        }
        if (strcmp(gen_a, gen_b) == 0)
            break;
        free(*out);
        *out = NULL;
        if (attempt == 3) {
            cl_err_set(err, CL_E_IO, "tsm: report entry '%s' keeps changing under us (another writer?)", entry);
            goto out;
        }
    }
    rc = 0;
out:
    if (created)
        rmdir(entry);
    free(entry);
    free(inblob);
    free(outblob);
    return rc;
}

/* ---------------------------------------------------------------- provider object */

cl_attest_provider *cl_attest_provider_new(const cl_attest_provider_config *cfg, cl_err *err)
{
    cl_attest_provider *p = calloc(1, sizeof(*p));
    if (!p) {
        cl_err_nomem(err);
        return NULL;
    }
    p->kind = cfg->kind;
    const char *root = cfg->root;
    if (!root)
        root = cfg->kind == CL_ATTEST_GRAMINE ? GRAMINE_ROOT_DEFAULT : TSM_ROOT_DEFAULT;
    p->root = strdup(root);
    if (!p->root) {
        cl_err_nomem(err);
        goto fail;
    }
    if (cfg->kind == CL_ATTEST_SIM) {
        if (cfg->sim_qe_key) {
            EVP_PKEY_up_ref(cfg->sim_qe_key);
            p->sim_key = cfg->sim_qe_key;
        } else if (cfg->sim_qe_key_file) {
            FILE *f = fopen(cfg->sim_qe_key_file, "r");
            if (!f) {
                cl_err_errno(err, CL_E_IO, errno, "cannot open sim quoting key '%s'", cfg->sim_qe_key_file);
                goto fail;
            }
            p->sim_key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
            fclose(f);
            if (!p->sim_key) {
                cl_err_ssl(err, CL_E_FORMAT, "'%s' is not a PEM private key", cfg->sim_qe_key_file);
                goto fail;
            }
        } else {
            cl_err_set(err, CL_E_INVALID, "the sim evidence provider needs a simulated quoting key: --sim-key FILE "
                                          "or $CLOISTER_SIM_QE_KEY (create one with `cloister attest sim-init --dir DIR`)");
            goto fail;
        }
        if (cl_attest_p256_raw_pub(p->sim_key, p->sim_pub, err) != 0 ||
            cl_attest_sim_identity(cfg, &p->sim_id, err) != 0)
            goto fail;
        CL_WARN("attest", "INSECURE: using the 'sim' evidence provider: quotes are signed by a software key "
                          "and prove nothing about this machine; never use it in production");
    }
    return p;
fail:
    cl_attest_provider_free(p);
    return NULL;
}

void cl_attest_provider_free(cl_attest_provider *p)
{
    if (!p)
        return;
    EVP_PKEY_free(p->sim_key);
    free(p->root);
    free(p);
}

cl_attest_kind cl_attest_provider_kind(const cl_attest_provider *p) { return p->kind; }

int cl_attest_provider_quote(cl_attest_provider *p, const uint8_t rd[CL_ATTEST_REPORT_DATA_LEN], uint8_t **quote,
                             size_t *quote_len, cl_err *err)
{
    *quote = NULL;
    *quote_len = 0;
    int rc;
    switch (p->kind) {
    case CL_ATTEST_SIM: rc = sim_quote(p, rd, quote, quote_len, err); break;
    case CL_ATTEST_GRAMINE: rc = gramine_quote(p, rd, quote, quote_len, err); break;
    case CL_ATTEST_TSM: rc = tsm_quote(p, rd, quote, quote_len, err); break;
    default: return cl_err_set(err, CL_E_INTERNAL, "unknown provider kind");
    }
    if (rc != 0)
        return -1;
    /* never hand out evidence that does not carry what we asked for */
    cl_attest_quote q;
    if (cl_attest_quote_parse(*quote, *quote_len, &q, err) != 0 ||
        (memcmp(q.report_data, rd, 64) != 0 &&
         cl_err_set(err, CL_E_AUTH, "the quote's report_data is not the one requested "
                                    "(another process using the same attestation device?)")) ||
        (p->kind == CL_ATTEST_TSM && q.tee_type != CL_QUOTE_TEE_TDX &&
         cl_err_set(err, CL_E_FORMAT, "the tdx_guest report is not a TDX quote (TEE type 0x%x)", q.tee_type))) {
        cl_err_prefix(err, "%s evidence", cl_attest_kind_name(p->kind));
        free(*quote);
        *quote = NULL;
        *quote_len = 0;
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- sim quoting keys */

int cl_attest_sim_qe_generate(EVP_PKEY **key_out, X509 **cert_out, cl_err *err)
{
    *key_out = NULL;
    *cert_out = NULL;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *cert = X509_new();
    X509_NAME *name = X509_NAME_new();
    uint8_t serial[16];
    BIGNUM *bn = NULL;
    if (!key || !cert || !name || RAND_bytes(serial, sizeof serial) != 1)
        goto fail;
    serial[0] &= 0x7f;
    bn = BN_bin2bn(serial, sizeof serial, NULL);
    if (!bn || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) || !X509_set_version(cert, 2) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                    (const uint8_t *)"cloister simulated quoting key (INSECURE)", -1, -1, 0) ||
        !X509_set_subject_name(cert, name) || !X509_set_issuer_name(cert, name) ||
        !X509_gmtime_adj(X509_getm_notBefore(cert), -300) ||
        !X509_gmtime_adj(X509_getm_notAfter(cert), 10L * 365 * 24 * 3600) || !X509_set_pubkey(cert, key) ||
        !X509_sign(cert, key, EVP_sha256()))
        goto fail;
    BN_free(bn);
    X509_NAME_free(name);
    *key_out = key;
    *cert_out = cert;
    return 0;
fail:
    BN_free(bn);
    X509_NAME_free(name);
    X509_free(cert);
    EVP_PKEY_free(key);
    return cl_err_ssl(err, CL_E_CRYPTO, "cannot create a simulated quoting key");
}

int cl_attest_sim_qe_create(const char *dir, bool force, cl_err *err)
{
    EVP_PKEY *key;
    X509 *cert;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return cl_err_errno(err, CL_E_IO, errno, "cannot create '%s'", dir);
    if (cl_attest_sim_qe_generate(&key, &cert, err) != 0)
        return -1;
    int rc = -1;
    char *kp = path_join(dir, "sim_qe_key.pem"), *cp = path_join(dir, "sim_qe_cert.pem");
    BIO *kb = BIO_new(BIO_s_secmem()), *cb = BIO_new(BIO_s_mem());
    char *kd, *cd;
    if (!kp || !cp || !kb || !cb || !PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL) ||
        !PEM_write_bio_X509(cb, cert)) {
        cl_err_ssl(err, CL_E_CRYPTO, "cannot encode the simulated quoting key");
        goto out;
    }
    long kl = BIO_get_mem_data(kb, &kd), cll = BIO_get_mem_data(cb, &cd);
    if (cl_file_write_atomic(kp, kd, (size_t)kl, 0600, force, err) != 0)
        goto out;
    if (cl_file_write_atomic(cp, cd, (size_t)cll, 0644, force, err) != 0) {
        unlink(kp);
        goto out;
    }
    rc = 0;
out:
    BIO_free(kb);
    BIO_free(cb);
    free(kp);
    free(cp);
    EVP_PKEY_free(key);
    X509_free(cert);
    return rc;
}
