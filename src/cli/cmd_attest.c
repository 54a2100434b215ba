/* cmd_attest.c — `cloister attest measure|sim-init|inspect|verify`: the identity this binary presents
 * (as a policy-ready JSON snippet), creation of simulated quoting keys, a quote dump for debugging,
 * and DCAP verification of quotes with collateral from files or a PCCS (the shared collateral options). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "cloister/attest.h"
#include "cloister/dcap.h"

static int measure(int argc, char **argv)
{
    const char *evidence = "sim", *root = NULL, *name = NULL;
    long prod = 0, svn = 0;
    bool debug = false;
    const cl_opt opts[] = {
        {"evidence", CL_ARG_STRING, &evidence, "sim|gramine|tsm", "evidence provider (default sim)", false},
        {"attest-root", CL_ARG_STRING, &root, "DIR", "gramine: /dev/attestation; tsm: configfs-tsm report dir", false},
        {"name", CL_ARG_STRING, &name, "NAME", "identity name to put in the snippet", false},
        {"sim-isv-prod-id", CL_ARG_LONG, &prod, "N", "sim: ISV_PROD_ID to present", false, 0, 65535},
        {"sim-isv-svn", CL_ARG_LONG, &svn, "N", "sim: ISV_SVN to present", false, 0, 65535},
        {"sim-debug", CL_ARG_FLAG, &debug, NULL, "sim: present a debug enclave", false},
    };
    const cl_cmd_usage usage = {
        "cloister attest measure [--evidence sim|gramine|tsm]",
        "Prints the identity (MRENCLAVE, MRSIGNER, ISV_PROD_ID, ISV_SVN, debug) this cloister binary presents,\n"
        "as a JSON identity ready to paste into a key server policy (add its \"secrets\"). With sim evidence\n"
        "MRENCLAVE is the SHA-256 of this executable, so every build has its own."};
    int rc = cl_cli_parse(argc, argv, &usage, opts, CL_ARRAY_LEN(opts), NULL);
    if (rc >= 0)
        return rc;
    cl_err err = {0};
    cl_attest_kind kind;
    if (cl_attest_kind_parse(evidence, &kind, &err) != 0)
        return cl_cli_usage_error(argv[0], &err);
    cl_attest_claims c = {0};
    if (kind == CL_ATTEST_SIM) {
        cl_attest_provider_config cfg = {.kind = CL_ATTEST_SIM, .sim_isv_prod_id = (uint16_t)prod,
                                         .sim_isv_svn = (uint16_t)svn, .sim_debug = debug};
        cl_attest_quote q;
        if (cl_attest_sim_identity(&cfg, &q, &err) != 0)
            return cl_cli_fail(argv[0], &err);
        memcpy(c.mr_enclave, q.mr_enclave, 32);
        memcpy(c.mr_signer, q.mr_signer, 32);
        c.isv_prod_id = q.isv_prod_id;
        c.isv_svn = q.isv_svn;
        c.debug = q.debug;
        snprintf(c.evidence_type, sizeof c.evidence_type, "sim");
        fprintf(stderr, "cloister attest measure: sim evidence is INSECURE (development only)\n");
    } else {
        cl_attest_provider_config cfg = {.kind = kind, .root = root};
        cl_attest_provider *p = cl_attest_provider_new(&cfg, &err);
        uint8_t rd[CL_ATTEST_REPORT_DATA_LEN] = {0}, *quote = NULL;
        size_t len = 0;
        cl_attest_quote q;
        if (!p || cl_attest_provider_quote(p, rd, &quote, &len, &err) != 0 ||
            cl_attest_quote_parse(quote, len, &q, &err) != 0) {
            cl_attest_provider_free(p);
            free(quote);
            return cl_cli_fail(argv[0], &err);
        }
        cl_attest_provider_free(p);
        free(quote);
        memcpy(c.mr_enclave, q.body_kind == CL_QUOTE_BODY_SGX ? q.mr_enclave : q.mr_td, 32);
        memcpy(c.mr_signer, q.mr_signer, 32);
        c.isv_prod_id = q.isv_prod_id;
        c.isv_svn = q.isv_svn;
        c.debug = q.debug;
        snprintf(c.evidence_type, sizeof c.evidence_type, "%s",
                 q.tee_type == CL_QUOTE_TEE_TDX ? "tdx-dcap" : "sgx-dcap");
    }
    char *json = cl_attest_claims_json(&c, true);
    cJSON *o = json ? cJSON_Parse(json) : NULL;
    free(json);
    if (!o) {
        err.code = CL_E_NOMEM;
        snprintf(err.msg, sizeof err.msg, "out of memory");
        return cl_cli_fail(argv[0], &err);
    }
    if (name)
        cJSON_AddItemToObject(o, "name", cJSON_CreateString(name));
    cJSON_AddItemToObject(o, "secrets", cJSON_CreateArray());
    char *text = cJSON_Print(o);
    if (text)
        puts(text);
    cJSON_free(text);
    cJSON_Delete(o);
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
            cl_hex_encode(q.mr_td, 48, h1);
            printf("  mrtd        %s\n  body        TDX %s\n", h1, q.body_kind == CL_QUOTE_BODY_TD15 ? "1.5" : "1.0");
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

int cl_cmd_attest(int argc, char **argv)
{
    static const struct { const char *name; int (*fn)(int, char **); const char *help; } subs[] = {
        {"measure", measure, "print this binary's identity as a policy snippet"},
        {"sim-init", sim_init, "create a simulated quoting key (INSECURE)"},
        {"inspect", inspect, "parse and print SGX/TDX quotes"},
        {"verify", verify, "verify SGX/TDX quotes with Intel DCAP collateral (files or a PCCS)"},
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
