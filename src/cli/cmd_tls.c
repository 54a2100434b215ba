/* cmd_tls.c — `cloister tls init`: TLS material for one-way or mutual TLS (the equivalent of TF
 * Serving's generate_oneway_ssl_config.sh / generate_twoway_ssl_config.sh). */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cloister/pki.h"

static int tls_init(int argc, char **argv)
{
    const char *dir = NULL, *server = NULL, *client = NULL, *keytype = "ecdsa-p256";
    cl_strlist sans = {0};
    long days = 365;
    bool force = false;
    const cl_opt opts[] = {
        {"dir", CL_ARG_STRING, &dir, "DIR", "output directory (created if missing)", true},
        {"server-name", CL_ARG_STRING, &server, "NAME", "server DNS name or IP (CN and first SAN)", true},
        {"san", CL_ARG_LIST, &sans, "NAME", "another DNS name or IP for the server certificate", false},
        {"client-name", CL_ARG_STRING, &client, "NAME", "also issue a client certificate (mutual TLS)", false},
        {"key-type", CL_ARG_STRING, &keytype, "TYPE", "ecdsa-p256 (default), ecdsa-p384 or rsa-3072", false},
        {"days", CL_ARG_LONG, &days, "N", "validity in days (default 365)", false, 1, 36500},
        {"force", CL_ARG_FLAG, &force, NULL, "replace existing files", false},
    };
    const cl_cmd_usage usage = {
        "cloister tls init --dir DIR --server-name NAME [--client-name NAME] [--san NAME]...",
        "Creates a CA, a server certificate and, with --client-name, a client certificate for mutual TLS,\n"
        "plus ssl.cfg in TF Serving's SSLConfig format (server_key, server_cert, custom_ca, client_verify).\n"
        "Layout: DIR/ca_cert.pem DIR/ca_key.pem DIR/server/{cert,key}.pem DIR/client/{cert,key}.pem DIR/ssl.cfg.\n"
        "Private keys and ssl.cfg are mode 0600. Keep ca_key.pem offline once you are done issuing."};
    int rc = cl_cli_parse(argc, argv, &usage, opts, CL_ARRAY_LEN(opts), NULL);
    if (rc >= 0) {
        cl_strlist_free(&sans);
        return rc;
    }
    cl_err err = {0};
    cl_pki_tls_init_options o = {.dir = dir, .server_name = server, .extra_sans = sans.items,
                                 .extra_san_count = sans.count, .client_name = client, .days = (int)days,
                                 .force = force};
    if (cl_pki_keytype_parse(keytype, &o.keytype, &err) != 0) {
        cl_strlist_free(&sans);
        return cl_cli_usage_error("tls init", &err);
    }
    rc = cl_pki_tls_init(&o, &err);
    cl_strlist_free(&sans);
    if (rc != 0)
        return cl_cli_fail("tls init", &err);
    printf("%s/ca_cert.pem        CA certificate (give to clients)\n", dir);
    printf("%s/ca_key.pem         CA private key (keep offline)\n", dir);
    printf("%s/server/cert.pem    server certificate for %s\n", dir, server);
    printf("%s/server/key.pem     server private key\n", dir);
    if (client) {
        printf("%s/client/cert.pem    client certificate for %s\n", dir, client);
        printf("%s/client/key.pem     client private key\n", dir);
    }
    printf("%s/ssl.cfg            TF Serving SSLConfig (%s TLS)\n", dir, client ? "mutual" : "one-way");
    return CL_EXIT_OK;
}

int cl_cmd_tls(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "init") == 0)
        return tls_init(argc - 1, argv + 1);
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0)) {
        printf("usage: cloister tls init --dir DIR --server-name NAME [--client-name NAME]\n"
               "       (cloister tls init --help for all options)\n");
        return CL_EXIT_OK;
    }
    fprintf(stderr, "cloister tls: expected a subcommand: init (see cloister tls --help)\n");
    return CL_EXIT_USAGE;
}
