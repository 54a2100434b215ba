/* cmd_attest.c — `cloister attest measure|sim-init|inspect|verify|rtmr`: the identity this binary
 * presents (as a policy-ready JSON snippet; SGX or TDX), creation of simulated quoting keys, a quote
 * dump for debugging, DCAP verification of quotes with collateral from files or a PCCS (the shared
 * collateral options), and the replay of SHA-384 digests into an expected TDX RTMR value. Also the
 * sim TDX options shared with provision. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cloister/attest.h"
#include "cloister/dcap.h"
#include "cloister/json.h"

size_t cl_cli_sim_tdx_opts(cl_cli_sim_tdx *a, cl_opt *o)
{
    const cl_opt t[CL_CLI_SIM_TDX_OPTS] = {
        {"sim-tdx", CL_ARG_FLAG, &a->tdx, NULL, "sim: present a TDX trust domain instead of an SGX enclave", false},
        {"sim-mrtd", CL_ARG_STRING, &a->mrtd, "HEX", "sim TDX: MRTD to present (96 hex digits; default SHA-384 of "
                                                     "this executable)", false},
        {"sim-rtmr", CL_ARG_LIST, &a->rtmrs, "I=HEX", "sim TDX: RTMR I (0-3) to present (default zero; repeat)", false},
    };
    for (size_t i = 0; i < CL_CLI_SIM_TDX_OPTS; i++)
        o[i] = t[i];
    return CL_CLI_SIM_TDX_OPTS;
}

int cl_cli_sim_tdx_apply(cl_cli_sim_tdx *a, cl_attest_provider_config *cfg, cl_err *err)
{
    if (!a->tdx && (a->mrtd || a->rtmrs.count))
        return cl_err_set(err, CL_E_INVALID, "--sim-mrtd and --sim-rtmr need --sim-tdx");
    cfg->sim_tdx = a->tdx;
    if (a->mrtd) {
        if (cl_hex_decode(a->mrtd, strlen(a->mrtd), a->store[4], CL_TDX_MEAS_LEN) != 0)
            return cl_err_set(err, CL_E_INVALID, "--sim-mrtd: '%s' is not 96 hex digits", a->mrtd);
        cfg->sim_mrtd = a->store[4];
    }
    for (size_t i = 0; i < a->rtmrs.count; i++) {
        const char *v = a->rtmrs.items[i];
        if (v[0] < '0' || v[0] > '3' || v[1] != '=' ||
            cl_hex_decode(v + 2, strlen(v + 2), a->store[v[0] - '0'], CL_TDX_MEAS_LEN) != 0)
            return cl_err_set(err, CL_E_INVALID, "--sim-rtmr: '%s' is not I=HEX (I from 0 to 3, 96 hex digits)", v);
        cfg->sim_rtmr[v[0] - '0'] = a->store[v[0] - '0'];
    }
    return 0;
}

/* The claims a quote would give, for the policy snippet (what verification would fill in). */
static void claims_from_quote(const cl_attest_quote *q, const char *evidence_type, cl_attest_claims *c)
{
    memset(c, 0, sizeof(*c));
    c->tee_type = q->body_kind == CL_QUOTE_BODY_SGX ? CL_QUOTE_TEE_SGX : CL_QUOTE_TEE_TDX;
    if (q->body_kind == CL_QUOTE_BODY_SGX) {
        memcpy(c->mr_enclave, q->mr_enclave, 32);
        memcpy(c->mr_signer, q->mr_signer, 32);
        c->isv_prod_id = q->isv_prod_id;
        c->isv_svn = q->isv_svn;
    } else {
        cl_attest_tdx_identity_from_quote(q, &c->tdx);
    }
    c->debug = q->debug;
    snprintf(c->evidence_type, sizeof c->evidence_type, "%s", evidence_type);
}

static int measure(int argc, char **argv)
{
    const char *evidence = "sim", *root = NULL, *name = NULL;
    long prod = 0, svn = 0;
    bool debug = false;
    cl_cli_sim_tdx tdx = {0};
    cl_opt opts[6 + CL_CLI_SIM_TDX_OPTS] = {
        {"evidence", CL_ARG_STRING, &evidence, "sim|gramine|tsm", "evidence provider (default sim)", false},
        {"attest-root", CL_ARG_STRING, &root, "DIR", "gramine: /dev/attestation; tsm: configfs-tsm report dir", false},
        {"name", CL_ARG_STRING, &name, "NAME", "identity name to put in the snippet", false},
        {"sim-isv-prod-id", CL_ARG_LONG, &prod, "N", "sim: ISV_PROD_ID to present", false, 0, 65535},
        {"sim-isv-svn", CL_ARG_LONG, &svn, "N", "sim: ISV_SVN to present", false, 0, 65535},
        {"sim-debug", CL_ARG_FLAG, &debug, NULL, "sim: present a debug enclave (or TD)", false},
    };
    size_t nopts = 6 + cl_cli_sim_tdx_opts(&tdx, opts + 6);
    const cl_cmd_usage usage = {
        "cloister attest measure [--evidence sim|gramine|tsm]",
        "Prints the identity this cloister binary presents as a JSON identity ready to paste into a key server\n"
        "policy (add its \"secrets\"): MRENCLAVE, MRSIGNER, ISV_PROD_ID, ISV_SVN for an SGX enclave; MRTD,\n"
        "RTMR0-3, MRCONFIGID, MROWNER, MROWNERCONFIG, XFAM, TD attributes and the TDX module's MRSEAM and\n"
        "MRSIGNERSEAM for a TDX trust domain (--evidence tsm). Replace an RTMR you do not want to pin by \"any\"\n"
        "(docs/policy.md). With sim evidence MRENCLAVE (or, with --sim-tdx, MRTD) is the hash of this executable."};
    int rc = cl_cli_parse(argc, argv, &usage, opts, nopts, NULL);
    if (rc >= 0) {
        cl_strlist_free(&tdx.rtmrs);
        return rc;
    }
    cl_err err = {0};
    cl_attest_kind kind;
    cl_attest_claims c;
    cl_attest_quote q;
    if (cl_attest_kind_parse(evidence, &kind, &err) != 0) {
        cl_strlist_free(&tdx.rtmrs);
        return cl_cli_usage_error(argv[0], &err);
    }
    if (kind == CL_ATTEST_SIM) {
        cl_attest_provider_config cfg = {.kind = CL_ATTEST_SIM, .sim_isv_prod_id = (uint16_t)prod,
                                         .sim_isv_svn = (uint16_t)svn, .sim_debug = debug};
        rc = cl_cli_sim_tdx_apply(&tdx, &cfg, &err);
        cl_strlist_free(&tdx.rtmrs);
        if (rc != 0)
            return cl_cli_usage_error(argv[0], &err);
        if (cl_attest_sim_identity(&cfg, &q, &err) != 0)
            return cl_cli_fail(argv[0], &err);
        claims_from_quote(&q, "sim", &c);
        fprintf(stderr, "cloister attest measure: sim evidence is INSECURE (development only)\n");
    } else {
        cl_strlist_free(&tdx.rtmrs);
        if (tdx.tdx || tdx.mrtd) {
            fprintf(stderr, "cloister attest measure: --sim-* options need --evidence sim\n");
            return CL_EXIT_USAGE;
        }
        cl_attest_provider_config cfg = {.kind = kind, .root = root};
        cl_attest_provider *p = cl_attest_provider_new(&cfg, &err);
        uint8_t rd[CL_ATTEST_REPORT_DATA_LEN] = {0}, *quote = NULL;
        size_t len = 0;
        if (!p || cl_attest_provider_quote(p, rd, &quote, &len, &err) != 0 ||
            cl_attest_quote_parse(quote, len, &q, &err) != 0) {
            cl_attest_provider_free(p);
            free(quote);
            return cl_cli_fail(argv[0], &err);
        }
        cl_attest_provider_free(p);
        claims_from_quote(&q, q.tee_type == CL_QUOTE_TEE_TDX ? "tdx-dcap" : "sgx-dcap", &c);
        free(quote); /* q's pointers are not used below */
    }
    char *text = cl_attest_claims_json(&c, false);
    json_t *o = text ? cl_json_parse(text, strlen(text), "claims", &err) : NULL;
    free(text);
    /* the TDX module's version fields are in the claims but are no policy fields */
    static const char *const not_policy[] = {"seam_attributes", "tee_tcb_svn", "tee_tcb_svn2", "mrservicetd"};
    for (size_t i = 0; o && i < CL_ARRAY_LEN(not_policy); i++)
        json_object_del(o, not_policy[i]);
    int bad = !o;
    if (!bad && name) /* json_string() is NULL for a name that is not UTF-8; set_new refuses NULL */
        bad = json_object_set_new(o, "name", json_string(name));
    if (!bad)
        bad = json_object_set_new(o, "secrets", json_array());
    text = bad ? NULL : json_dumps(o, JSON_INDENT(2));
    json_decref(o);
    if (!text) {
        cl_err_set(&err, CL_E_NOMEM, "out of memory (or a name that is not UTF-8)");
        return cl_cli_fail(argv[0], &err);
    }
    puts(text);
    free(text);
    return CL_EXIT_OK;
}

static int sim_init(int argc, char **argv)
{
    const char *dir = NULL;
    bool force = false;
    const cl_opt opts[] = {
        {"dir", CL_ARG_STRING, &dir, "DIR", "where to write sim_qe_key.pem and sim_qe_cert.pem", true},
        {"force", CL_ARG_FLAG, &force, NULL, "replace existing files", false},
    };
    const cl_cmd_usage usage = {
        "cloister attest sim-init --dir DIR",
        "Creates a simulated quoting key (INSECURE, for development and tests) and its certificate. Give the\n"
        "key to clients (--sim-key) and the certificate to the key server (--trust-sim)."};
    int rc = cl_cli_parse(argc, argv, &usage, opts, CL_ARRAY_LEN(opts), NULL);
    if (rc >= 0)
        return rc;
    cl_err err = {0};
    if (cl_attest_sim_qe_create(dir, force, &err) != 0)
        return cl_cli_fail(argv[0], &err);
    fprintf(stderr, "cloister attest sim-init: wrote %s/sim_qe_key.pem and %s/sim_qe_cert.pem (INSECURE: "
                    "development only)\n", dir, dir);
    return CL_EXIT_OK;
}

static int inspect(int argc, char **argv)
{
    cl_strlist files = {0};
    const cl_cmd_usage usage = {"cloister attest inspect QUOTE...",
                                "Parses SGX/TDX quotes (v3, v4, v5) and prints their fields. Verifies nothing."};
    int rc = cl_cli_parse(argc, argv, &usage, NULL, 0, &files);
    if (rc >= 0) {
        cl_strlist_free(&files); /* what was collected before the error */
        return rc;
    }
    rc = files.count ? CL_EXIT_OK : CL_EXIT_USAGE;
    if (!files.count)
        fprintf(stderr, "cloister attest inspect: name at least one quote file\n");
    for (size_t i = 0; i < files.count; i++) {
        cl_err err = {0};
        uint8_t *buf;
        size_t len;
        cl_attest_quote q;
        if (cl_file_read(files.items[i], CL_ATTEST_QUOTE_MAX, &buf, &len, &err) != 0 ||
            cl_attest_quote_parse(buf, len, &q, &err) != 0) {
            fprintf(stderr, "cloister attest inspect: %s: %s\n", files.items[i], err.msg);
            rc = CL_EXIT_FAIL;
            continue;
        }
        char h1[97], h2[97], rd[129];
        cl_hex_encode(q.report_data, 64, rd);
        printf("%s:\n  version %u, %s, attestation key type %u, QE SVN %u, PCE SVN %u\n", files.items[i], q.version,
               q.tee_type == CL_QUOTE_TEE_TDX ? "TDX" : "SGX", q.att_key_type, q.qe_svn, q.pce_svn);
        if (q.body_kind == CL_QUOTE_BODY_SGX) {
            cl_hex_encode(q.mr_enclave, 32, h1);
            cl_hex_encode(q.mr_signer, 32, h2);
            printf("  mrenclave   %s\n  mrsigner    %s\n  isv_prod_id %u\n  isv_svn     %u\n", h1, h2,
                   q.isv_prod_id, q.isv_svn);
        } else {
            printf("  body        TDX %s\n", q.body_kind == CL_QUOTE_BODY_TD15 ? "1.5" : "1.0");
            const struct { const char *name; const uint8_t *v; size_t n; } f[] = {
                {"tee_tcb_svn", q.tee_tcb_svn, 16}, {"mrseam", q.mr_seam, 48},
                {"mrsignerseam", q.mr_signer_seam, 48}, {"seam_attributes", q.seam_attributes, 8},
                {"td_attributes", q.td_attributes, 8}, {"xfam", q.xfam, 8}, {"mrtd", q.mr_td, 48},
                {"mrconfigid", q.mr_config_id, 48}, {"mrowner", q.mr_owner, 48},
                {"mrownerconfig", q.mr_owner_config, 48}, {"rtmr0", q.rtmr[0], 48}, {"rtmr1", q.rtmr[1], 48},
                {"rtmr2", q.rtmr[2], 48}, {"rtmr3", q.rtmr[3], 48}, {"tee_tcb_svn2", q.tee_tcb_svn2, 16},
                {"mrservicetd", q.mr_servicetd, 48}};
            for (size_t k = 0; k < CL_ARRAY_LEN(f); k++) {
                if (k >= 14 && q.body_kind != CL_QUOTE_BODY_TD15)
                    break;
                cl_hex_encode(f[k].v, f[k].n, h1);
                printf("  %-15s %s\n", f[k].name, h1);
            }
        }
        printf("  debug       %s\n  report_data %s\n  cert data   type %u, %zu bytes\n  length      %zu (+%zu "
               "bytes of zero padding)\n",
               q.debug ? "yes" : "no", rd, q.cert_type, q.cert_len, q.quote_len, q.padding);
        free(buf);
    }
    cl_strlist_free(&files);
    return rc;
}

static int verify(int argc, char **argv)
{
    long at = 0;
    cl_strlist files = {0};
    cl_cli_dcap_args dcap = {0};
    cl_opt opts[CL_CLI_DCAP_OPTS + 1] = {
        {"at", CL_ARG_LONG, &at, "UNIX", "verify as of this Unix time (default: now)", false, 1, 1L << 40},
    };
    size_t n = 1 + cl_cli_dcap_opts(&dcap, opts + 1);
    const cl_cmd_usage usage = {"cloister attest verify --dcap-root-ca FILE (--dcap-collateral FILE... | --pccs-url URL "
                                "[--collateral-cache DIR]) [--at UNIX] QUOTE...",
                                "Verifies SGX/TDX quotes with Intel DCAP collateral, from files (the one for each "
                                "quote's platform)\nor fetched from a PCCS / Intel PCS: certificate chains and CRLs, "
                                "QE report, quote signature, TCB\ninfo and QE identity. Prints the claims and TCB "
                                "status; exits 1 if any quote fails."};
    int rc = cl_cli_parse(argc, argv, &usage, opts, n, &files);
    if (rc >= 0) {
        cl_strlist_free(&files); /* what was collected before the error */
        cl_cli_dcap_free(&dcap);
        return rc;
    }
    cl_err err = {0};
    int64_t now = at ? (int64_t)at : (int64_t)time(NULL);
    const cl_dcap_config *cfg = cl_cli_dcap_config(&dcap, now);
    cl_dcap_source *src = NULL;
    if (!files.count || !cfg) {
        fprintf(stderr, "cloister attest verify: %s\n", !files.count ? "name at least one quote file"
                                                                     : "give --dcap-root-ca and --dcap-collateral or "
                                                                       "--pccs-url (see --help)");
        cl_strlist_free(&files);
        cl_cli_dcap_free(&dcap);
        return CL_EXIT_USAGE;
    }
    if (!(src = cl_dcap_source_new(cfg, &err))) {
        cl_strlist_free(&files);
        cl_cli_dcap_free(&dcap);
        return err.code == CL_E_INVALID ? cl_cli_usage_error(argv[0], &err) : cl_cli_fail(argv[0], &err);
    }
    rc = CL_EXIT_OK;
    for (size_t i = 0; i < files.count; i++) {
        uint8_t *buf = NULL;
        size_t len;
        cl_attest_quote q;
        cl_dcap_result r;
        if (cl_file_read(files.items[i], CL_ATTEST_QUOTE_MAX, &buf, &len, &err) != 0 ||
            cl_attest_quote_parse(buf, len, &q, &err) != 0 || cl_dcap_source_verify(src, &q, &r, &err) != 0) {
            fprintf(stderr, "cloister attest verify: %s: %s\n", files.items[i], err.msg);
            free(buf);
            rc = CL_EXIT_FAIL;
            continue;
        }
        printf("%s: verified at Unix time %lld\n  evidence    %s\n  tcb_status  %s (platform %s, quoting enclave "
               "%s)\n  fmspc       %s\n  debug       %s\n  advisories ",
               files.items[i], (long long)now, r.evidence_type, r.tcb_status, r.platform_tcb_status,
               r.qe_tcb_status, r.fmspc_hex, r.debug ? "yes" : "no");
        for (size_t k = 0; k < r.n_advisories; k++)
            printf(" %s", r.advisories[k]);
        printf("%s\n", r.n_advisories ? "" : " none");
        free(buf);
    }
    cl_dcap_source_stats st;
    cl_dcap_source_stats_get(src, &st);
    if (cfg->pccs_url)
        fprintf(stderr, "cloister attest verify: collateral: %llu fetch(es) from %s, %llu failed; %llu cache read(s), "
                "%llu write(s)\n", (unsigned long long)st.fetches, cfg->pccs_url, (unsigned long long)st.fetch_failures,
                (unsigned long long)st.cache_reads, (unsigned long long)st.cache_writes);
    cl_dcap_source_free(src);
    cl_cli_dcap_free(&dcap);
    cl_strlist_free(&files);
    return rc;
}

/* Reads SHA-384 digests (96 hex digits), one a line; blank lines and lines starting with '#' are skipped. */
static int read_digests(const char *path, cl_strbuf *all, cl_err *err)
{
    uint8_t *buf;
    size_t len;
    if (cl_file_read(path, 16 << 20, &buf, &len, err) != 0)
        return -1;
    char *save = NULL;
    for (char *line = strtok_r((char *)buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        size_t n = strlen(line);
        while (n && (line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t'))
            line[--n] = 0;
        while (*line == ' ' || *line == '\t')
            line++;
        if (*line && *line != '#') {
            cl_strbuf_str(all, line);
            cl_strbuf_put(all, "\n", 1);
        }
    }
    free(buf);
    return 0;
}

static int rtmr(int argc, char **argv)
{
    const char *from = NULL, *file = NULL;
    bool steps = false;
    cl_strlist digests = {0};
    const cl_opt opts[] = {
        {"from", CL_ARG_STRING, &from, "HEX", "start from this RTMR value (default 48 zero bytes, as at TD creation)",
         false},
        {"digests", CL_ARG_STRING, &file, "FILE", "read the digests from FILE (one a line, '#' comments), before "
                                                  "those given as arguments", false},
        {"steps", CL_ARG_FLAG, &steps, NULL, "print the value after each extend (stderr)", false},
    };
    const cl_cmd_usage usage = {
        "cloister attest rtmr [--from HEX] [--digests FILE] [DIGEST...]",
        "Replays SHA-384 digests (96 hex digits each, in the order they were measured) into the value a TDX\n"
        "RTMR ends with: RTMR = SHA-384(RTMR || digest) for each, from 48 zero bytes. Prints the result (hex),\n"
        "ready for an \"rtmrN\" list of a policy. docs/attest.md, \"TDX\", says which events go into which RTMR."};
    int rc = cl_cli_parse(argc, argv, &usage, opts, CL_ARRAY_LEN(opts), &digests);
    if (rc >= 0) {
        cl_strlist_free(&digests);
        return rc;
    }
    cl_err err = {0};
    cl_strbuf all = {0};
    cl_strbuf_put(&all, "", 0);
    if (file && read_digests(file, &all, &err) != 0) {
        free(all.p);
        cl_strlist_free(&digests);
        return cl_cli_fail(argv[0], &err);
    }
    for (size_t i = 0; i < digests.count; i++) {
        cl_strbuf_str(&all, digests.items[i]);
        cl_strbuf_put(&all, "\n", 1);
    }
    cl_strlist_free(&digests);
    char *text = cl_strbuf_take(&all, NULL);
    uint8_t reg[CL_TDX_MEAS_LEN] = {0}, d[CL_TDX_MEAS_LEN];
    rc = CL_EXIT_OK;
    if (!text) {
        cl_err_nomem(&err);
        rc = cl_cli_fail(argv[0], &err);
    } else if (from && cl_hex_decode(from, strlen(from), reg, CL_TDX_MEAS_LEN) != 0) {
        cl_err_set(&err, CL_E_INVALID, "--from: '%s' is not 96 hex digits", from);
        rc = cl_cli_usage_error(argv[0], &err);
    } else if (!text[0]) {
        fprintf(stderr, "cloister attest rtmr: give at least one digest (arguments or --digests FILE)\n");
        rc = CL_EXIT_USAGE;
    }
    size_t k = 0;
    char *save = NULL;
    for (char *line = rc == CL_EXIT_OK ? strtok_r(text, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
        k++;
        if (cl_hex_decode(line, strlen(line), d, CL_TDX_MEAS_LEN) != 0) {
            cl_err_set(&err, CL_E_INVALID, "digest %zu: '%.100s' is not a SHA-384 digest (96 hex digits)", k, line);
            rc = cl_cli_usage_error(argv[0], &err);
            break;
        }
        if (cl_attest_rtmr_extend(reg, d, &err) != 0) {
            rc = cl_cli_fail(argv[0], &err);
            break;
        }
        if (steps) {
            char hex[2 * CL_TDX_MEAS_LEN + 1];
            cl_hex_encode(reg, CL_TDX_MEAS_LEN, hex);
            fprintf(stderr, "after %zu: %s\n", k, hex);
        }
    }
    free(text);
    if (rc == CL_EXIT_OK) {
        char hex[2 * CL_TDX_MEAS_LEN + 1];
        cl_hex_encode(reg, CL_TDX_MEAS_LEN, hex);
        puts(hex);
    }
    return rc;
}

int cl_cmd_attest(int argc, char **argv)
{
    static const struct { const char *name; int (*fn)(int, char **); const char *help; } subs[] = {
        {"measure", measure, "print this binary's identity as a policy snippet"},
        {"sim-init", sim_init, "create a simulated quoting key (INSECURE)"},
        {"inspect", inspect, "parse and print SGX/TDX quotes"},
        {"verify", verify, "verify SGX/TDX quotes with Intel DCAP collateral (files or a PCCS)"},
        {"rtmr", rtmr, "replay SHA-384 digests into the value a TDX RTMR ends with"},
    };
    if (argc >= 2) {
        for (size_t i = 0; i < CL_ARRAY_LEN(subs); i++) {
            if (strcmp(argv[1], subs[i].name) == 0) {
                char name[64];
                snprintf(name, sizeof name, "attest %s", subs[i].name);
                argv[1] = name;
                return subs[i].fn(argc - 1, argv + 1);
            }
        }
    }
    FILE *out = argc >= 2 && strcmp(argv[1], "--help") == 0 ? stdout : stderr;
    fprintf(out, "usage: cloister attest <subcommand> [options]   (cloister attest <subcommand> --help)\n\n");
    for (size_t i = 0; i < CL_ARRAY_LEN(subs); i++)
        fprintf(out, "  %-10s %s\n", subs[i].name, subs[i].help);
    return out == stdout ? CL_EXIT_OK : CL_EXIT_USAGE;
}
