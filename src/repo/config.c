/* config.c — TF Serving's --model_config_file: ModelServerConfig in protobuf text format, read by the
 * common text-format reader (textpb.h) into the generated message (a field given twice refused), and
 * the fields cloister honours (name, base_path, model_platform, model_version_policy, version_labels)
 * checked, each error naming its line, into cl_repo_model_config with bounds on everything (the
 * file is 1 MiB at most, strings 4 KiB, at most CL_REPO_CONFIG_MAX_MODELS models, 64 specific
 * versions and 64 labels per model). The same
 * structures come from a HandleReloadConfigRequest (reload.c). Stateless, so thread-safe. */
#include "cloister/repo.h"
#include "cloister/textpb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensorflow_serving/config/model_server_config.pb-c.h"

#define MAX_LIST 64     /* specific versions, labels */
#define MAX_STRING 4095 /* name, base_path */

typedef Tensorflow__Serving__FileSystemStoragePathSourceConfig__ServableVersionPolicy policy_pb;

/* The line of a field given in the text (0 when it was not). */
static int line_of(const cl_textpb_locs *locs, const void *msg, const char *field, size_t index)
{
    int line = 0, col = 0;
    cl_textpb_where(locs, msg, field, index, &line, &col);
    return line;
}

void cl_repo_config_free(cl_repo_model_config *models, size_t n_models)
{
    for (size_t i = 0; models && i < n_models; i++) {
        free((char *)models[i].name);
        free((char *)models[i].base_path);
        free((int64_t *)models[i].versions);
        for (size_t k = 0; k < models[i].n_labels; k++)
            free((char *)models[i].labels[k].label);
        free((cl_repo_version_label *)models[i].labels);
    }
    free(models);
}

/* specific { versions: 1 versions: 2 } or versions: [1, 2] (lexer past '{'). */
/* One ModelConfig of the text -> *mc (copies). */
static int model_from_text(const Tensorflow__Serving__ModelConfig *pc, int line, const cl_textpb_locs *locs,
                           cl_repo_model_config *mc, cl_err *err)
{
    if (!*pc->name || !*pc->base_path)
        return cl_err_set(err, CL_E_FORMAT, "line %d: a config needs both name and base_path", line);
    if (strlen(pc->name) > MAX_STRING || strlen(pc->base_path) > MAX_STRING)
        return cl_err_set(err, CL_E_FORMAT, "line %d: name or base_path longer than %d bytes", line, MAX_STRING);
    if (line_of(locs, pc, "model_platform", 0) && strcmp(pc->model_platform, "onnx") != 0 &&
        strcmp(pc->model_platform, "tensorflow") != 0)
        return cl_err_set(err, CL_E_FORMAT, "line %d: model_platform '%.64s' is not supported (onnx)",
                          line_of(locs, pc, "model_platform", 0), pc->model_platform);
    if (line_of(locs, pc, "model_type", 0))
        return cl_err_set(err, CL_E_FORMAT, "line %d: model_type is not supported (TF's deprecated field; give "
                          "model_platform)", line_of(locs, pc, "model_type", 0));
    if (!(mc->name = strdup(pc->name)) || !(mc->base_path = strdup(pc->base_path)))
        return cl_err_nomem(err);
    const policy_pb *vp = pc->model_version_policy;
    if (vp) {
        int pline = line_of(locs, pc, "model_version_policy", 0);
        switch (vp->policy_choice_case) {
        case TENSORFLOW__SERVING__FILE_SYSTEM_STORAGE_PATH_SOURCE_CONFIG__SERVABLE_VERSION_POLICY__POLICY_CHOICE_ALL:
            mc->policy = CL_REPO_POLICY_ALL;
            break;
        case TENSORFLOW__SERVING__FILE_SYSTEM_STORAGE_PATH_SOURCE_CONFIG__SERVABLE_VERSION_POLICY__POLICY_CHOICE_LATEST:
            mc->policy = CL_REPO_POLICY_LATEST;
            if (vp->latest->num_versions > MAX_LIST)
                return cl_err_set(err, CL_E_FORMAT, "line %d: num_versions must be 0 to %d (0 counts as 1)",
                                  line_of(locs, vp->latest, "num_versions", 0), MAX_LIST);
            mc->num_versions = vp->latest->num_versions;
            break;
        case TENSORFLOW__SERVING__FILE_SYSTEM_STORAGE_PATH_SOURCE_CONFIG__SERVABLE_VERSION_POLICY__POLICY_CHOICE_SPECIFIC: {
            const Tensorflow__Serving__FileSystemStoragePathSourceConfig__ServableVersionPolicy__Specific *sp =
                vp->specific;
            mc->policy = CL_REPO_POLICY_SPECIFIC;
            if (sp->n_versions == 0)
                return cl_err_set(err, CL_E_FORMAT, "line %d: specific lists no version", line_of(locs, vp, "specific", 0));
            if (sp->n_versions > MAX_LIST)
                return cl_err_set(err, CL_E_FORMAT, "line %d: more than %d specific versions",
                                  line_of(locs, sp, "versions", MAX_LIST), MAX_LIST);
            int64_t *v = calloc(sp->n_versions, sizeof *v);
            if (!v)
                return cl_err_nomem(err);
            mc->versions = v;
            for (size_t k = 0; k < sp->n_versions; k++) {
                if (sp->versions[k] <= 0)
                    return cl_err_set(err, CL_E_FORMAT, "line %d: version %lld is not a positive integer",
                                      line_of(locs, sp, "versions", k), (long long)sp->versions[k]);
                v[mc->n_versions++] = sp->versions[k];
            }
            break;
        }
        default:
            (void)pline; /* model_version_policy {}: TF's default, latest 1 */
            break;
        }
    }
    if (pc->n_version_labels > MAX_LIST)
        return cl_err_set(err, CL_E_FORMAT, "line %d: more than %d version labels",
                          line_of(locs, pc, "version_labels", MAX_LIST), MAX_LIST);
    if (pc->n_version_labels) {
        cl_repo_version_label *l = calloc(pc->n_version_labels, sizeof *l);
        if (!l)
            return cl_err_nomem(err);
        mc->labels = l;
        for (size_t k = 0; k < pc->n_version_labels; k++) {
            const Tensorflow__Serving__ModelConfig__VersionLabelsEntry *e = pc->version_labels[k];
            int ll = line_of(locs, pc, "version_labels", k);
            if (!line_of(locs, e, "key", 0) || !line_of(locs, e, "value", 0))
                return cl_err_set(err, CL_E_FORMAT, "line %d: version_labels needs a key and a value", ll);
            if (!cl_repo_label_valid(e->key))
                return cl_err_set(err, CL_E_FORMAT, "line %d: version label '%.64s' is not valid (1-64 of A-Z a-z "
                                  "0-9 . _ -)", line_of(locs, e, "key", 0), e->key);
            if (e->value <= 0)
                return cl_err_set(err, CL_E_FORMAT, "line %d: a label's version must be a positive integer",
                                  line_of(locs, e, "value", 0));
            for (size_t j = 0; j < mc->n_labels; j++)
                if (strcmp(mc->labels[j].label, e->key) == 0)
                    return cl_err_set(err, CL_E_FORMAT, "line %d: version label '%s' is given twice", ll, e->key);
            if (!(l[mc->n_labels].label = strdup(e->key)))
                return cl_err_nomem(err);
            l[mc->n_labels++].version = e->value;
        }
    }
    return 0;
}

int cl_repo_config_parse(const char *text, size_t len, cl_repo_model_config **models, size_t *n_models,
                         cl_err *err)
{
    *models = NULL;
    *n_models = 0;
    static const cl_textpb_noun nouns[] = {
        {&tensorflow__serving__file_system_storage_path_source_config__servable_version_policy__descriptor,
         "version policy"}};
    cl_textpb_locs *locs = NULL;
    cl_textpb_options o = {.flags = CL_TEXTPB_FORBID_OVERWRITE, .max_len = 1u << 20, .nouns = nouns,
                           .n_nouns = CL_ARRAY_LEN(nouns), .locs = &locs};
    ProtobufCMessage *m = NULL;
    if (cl_textpb_parse(text, len, &tensorflow__serving__model_server_config__descriptor, &o, &m, err) != 0)
        return -1;
    const Tensorflow__Serving__ModelServerConfig *c = (const Tensorflow__Serving__ModelServerConfig *)m;
    cl_repo_model_config *out = NULL;
    size_t n = 0;
    int rc = -1;
    if (c->config_case != TENSORFLOW__SERVING__MODEL_SERVER_CONFIG__CONFIG_MODEL_CONFIG_LIST) {
        cl_err_set(err, CL_E_FORMAT, "line %d: expected 'model_config_list', the one kind of ModelServerConfig cloister reads%s",
                   c->config_case ? line_of(locs, c, "custom_model_config", 0) : 1,
                   c->config_case ? " (custom_model_config is not supported)" : "");
        goto out;
    }
    const Tensorflow__Serving__ModelConfigList *list = c->model_config_list;
    if (list->n_config == 0) {
        cl_err_set(err, CL_E_FORMAT, "model_config_list has no config");
        goto out;
    }
    if (list->n_config > CL_REPO_CONFIG_MAX_MODELS) {
        cl_err_set(err, CL_E_FORMAT, "line %d: more than %d models",
                   line_of(locs, list, "config", CL_REPO_CONFIG_MAX_MODELS), CL_REPO_CONFIG_MAX_MODELS);
        goto out;
    }
    if (!(out = calloc(list->n_config, sizeof *out))) {
        cl_err_nomem(err);
        goto out;
    }
    for (; n < list->n_config; n++)
        if (model_from_text(list->config[n], line_of(locs, list, "config", n), locs, &out[n], err) != 0) {
            n++;
            goto out;
        }
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(out[i].name, out[j].name) == 0) {
                cl_err_set(err, CL_E_FORMAT, "line %d: model '%s' is configured twice",
                           line_of(locs, list, "config", i), out[i].name);
                goto out;
            }
    rc = 0;
out:
    cl_textpb_free(m, &o);
    cl_textpb_locs_free(locs);
    if (rc != 0) {
        cl_repo_config_free(out, n);
        return -1;
    }
    *models = out;
    *n_models = n;
    return 0;
}

int cl_repo_config_load(const char *path, cl_repo_model_config **models, size_t *n_models, cl_err *err)
{
    uint8_t *buf;
    size_t len;
    if (cl_file_read(path, 1 << 20, &buf, &len, err) != 0)
        return -1;
    int rc = cl_repo_config_parse((const char *)buf, len, models, n_models, err);
    free(buf);
    if (rc != 0)
        return cl_err_prefix(err, "model config '%s'", path);
    return 0;
}
