/* keysource.c — model keys from the key server for the repository: one RA-TLS provisioning exchange
 * at start-up for every sealed model's key id, on-demand fetches for key ids that appear later, and a
 * small cache whose values live only in secure memory. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/repo.h"

#include <openssl/x509_vfy.h>

typedef struct cached_key {
    char *key_id;
    uint8_t *key; /* CL_SEAL_KEY_LEN bytes of secure memory */
} cached_key;

struct cl_repo_keysource {
    cl_provision_options opts; /* borrowed pointers; names set per fetch */
    pthread_mutex_t lock;
    cached_key *keys;
    size_t n_keys;
};

cl_repo_keysource *cl_repo_keysource_new(const cl_provision_options *o, cl_err *err)
{
    if (!o->servers || o->server_count == 0 || !o->ca_file || !o->identity) {
        cl_err_set(err, CL_E_INVALID, "a key source needs key servers, their CA and an RA-TLS identity");
        return NULL;
    }
    if (o->secret_prov) {
        cl_err_set(err, CL_E_INVALID, "model keys are fetched by name: the secret_prov protocol (one unnamed "
                                      "secret) cannot be used for them");
        return NULL;
    }
    /* the local checks, before anyone is contacted */
    for (size_t i = 0; i < o->server_count; i++) {
        char host[256];
        int port;
        if (cl_net_split_hostport(o->servers[i], host, sizeof host, &port, CL_KS_DEFAULT_PORT, false, err) != 0)
            return NULL;
    }
    X509_STORE *store = X509_STORE_new();
    bool ca_ok = store && X509_STORE_load_file(store, o->ca_file) == 1;
    X509_STORE_free(store);
    if (!ca_ok) {
        cl_err_ssl(err, CL_E_FORMAT, "cannot load the key server's CA file '%s' (PEM certificates)", o->ca_file);
        return NULL;
    }
    cl_repo_keysource *ks = calloc(1, sizeof *ks);
    if (!ks) {
        cl_err_nomem(err);
        return NULL;
    }
    ks->opts = *o;
    ks->opts.names = NULL;
    ks->opts.name_count = 0;
    pthread_mutex_init(&ks->lock, NULL);
    return ks;
}

void cl_repo_keysource_free(cl_repo_keysource *ks)
{
    if (!ks)
        return;
    for (size_t i = 0; i < ks->n_keys; i++) {
        free(ks->keys[i].key_id);
        cl_secmem_free(ks->keys[i].key);
    }
    free(ks->keys);
    pthread_mutex_destroy(&ks->lock);
    free(ks);
}

static cached_key *find(cl_repo_keysource *ks, const char *key_id)
{
    for (size_t i = 0; i < ks->n_keys; i++)
        if (strcmp(ks->keys[i].key_id, key_id) == 0)
            return &ks->keys[i];
    return NULL;
}

/* Adds a granted secret to the cache (called with the lock held). The secret must be a key. */
static int remember(cl_repo_keysource *ks, const cl_secret *s, cl_err *err)
{
    if (find(ks, s->name))
        return 0;
    uint8_t *key = cl_secmem_alloc(CL_SEAL_KEY_LEN, err);
    if (!key)
        return -1;
    if (cl_seal_key_parse(s->value, s->len, key, err) != 0) {
        cl_secmem_free(key);
        return cl_err_prefix(err, "secret '%s' from the key server is not a model key", s->name);
    }
    cached_key *grown = realloc(ks->keys, (ks->n_keys + 1) * sizeof *grown);
    char *id = strdup(s->name);
    if (!grown || !id) {
        free(id);
        if (grown)
            ks->keys = grown;
        cl_secmem_free(key);
        return cl_err_nomem(err);
    }
    ks->keys = grown;
    ks->keys[ks->n_keys].key_id = id;
    ks->keys[ks->n_keys].key = key;
    ks->n_keys++;
    return 0;
}

/* One exchange for these key ids, in `rounds` rounds over the servers at most (0: the options'). */
static int fetch(cl_repo_keysource *ks, char *const *key_ids, size_t n, int rounds, cl_err *err)
{
    if (n == 0)
        return 0;
    cl_provision_options o = ks->opts;
    if (rounds > 0)
        o.attempts = rounds;
    o.names = (const char *const *)key_ids;
    o.name_count = n;
    cl_provision_result res = {0};
    int rc = cl_provision_fetch(&o, &res, err);
    pthread_mutex_lock(&ks->lock);
    for (size_t i = 0; rc == 0 && i < res.count; i++)
        if (res.secrets[i].granted)
            rc = remember(ks, &res.secrets[i], err);
    pthread_mutex_unlock(&ks->lock);
    cl_provision_result_free(&res);
    return rc;
}

int cl_repo_keysource_prefetch(cl_repo_keysource *ks, char *const *key_ids, size_t n, cl_err *err)
{
    return fetch(ks, key_ids, n, 0, err);
}

int cl_repo_keysource_get(void *arg, const char *key_id, uint8_t key[CL_SEAL_KEY_LEN], cl_err *err)
{
    cl_repo_keysource *ks = arg;
    pthread_mutex_lock(&ks->lock);
    cached_key *k = find(ks, key_id);
    if (k)
        memcpy(key, k->key, CL_SEAL_KEY_LEN);
    pthread_mutex_unlock(&ks->lock);
    if (k)
        return 0;
    char *ids[1] = {(char *)key_id};
    if (fetch(ks, ids, 1, 1, err) != 0) /* one round: the repository retries at later polls */
        return -1;
    pthread_mutex_lock(&ks->lock);
    k = find(ks, key_id);
    if (k)
        memcpy(key, k->key, CL_SEAL_KEY_LEN);
    pthread_mutex_unlock(&ks->lock);
    return k ? 0 : cl_err_set(err, CL_E_DENIED, "the key server did not return key '%s'", key_id);
}
