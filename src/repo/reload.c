/* reload.c — ModelService/HandleReloadConfigRequest for the repository: a serialised
 * tensorflow.serving.ReloadConfigRequest (hostile input: from any client that may call the gRPC
 * port) decoded with protobuf-c into cl_repo_model_config and applied with cl_repo_reload. Bounds:
 * the server's request size limit upstream, then at most CL_REPO_CONFIG_MAX_MODELS models and 64
 * specific versions / labels per model, checked here before anything is copied. Thread-safe as
 * cl_repo_reload. */
#include "cloister/repo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensorflow_serving/apis/model_management.pb-c.h"

#define MAX_LIST 64

/* One ModelConfig -> *out (borrowing the message's strings; arrays malloc()ed into out). */
static int model_from_pb(const Tensorflow__Serving__ModelConfig *pc, cl_repo_model_config *out, cl_err *err)
{
    *out = (cl_repo_model_config){.name = pc->name, .base_path = pc->base_path};
    if (pc->model_platform && *pc->model_platform && strcmp(pc->model_platform, "onnx") != 0 &&
        strcmp(pc->model_platform, "tensorflow") != 0)
        return cl_err_set(err, CL_E_INVALID, "model '%s': model_platform '%.64s' is not supported (onnx)",
                          pc->name ? pc->name : "", pc->model_platform);
    const Tensorflow__Serving__FileSystemStoragePathSourceConfig__ServableVersionPolicy *vp = pc->model_version_policy;
    if (vp) {
        switch (vp->policy_choice_case) {
        case TENSORFLOW__SERVING__FILE_SYSTEM_STORAGE_PATH_SOURCE_CONFIG__SERVABLE_VERSION_POLICY__POLICY_CHOICE_ALL:
            out->policy = CL_REPO_POLICY_ALL;
            break;
        case TENSORFLOW__SERVING__FILE_SYSTEM_STORAGE_PATH_SOURCE_CONFIG__SERVABLE_VERSION_POLICY__POLICY_CHOICE_SPECIFIC:
            out->policy = CL_REPO_POLICY_SPECIFIC;
            if (vp->specific->n_versions > MAX_LIST)
                return cl_err_set(err, CL_E_INVALID, "model '%s': more than %d specific versions", pc->name, MAX_LIST);
            out->versions = vp->specific->versions;
            out->n_versions = vp->specific->n_versions;
            break;
        case TENSORFLOW__SERVING__FILE_SYSTEM_STORAGE_PATH_SOURCE_CONFIG__SERVABLE_VERSION_POLICY__POLICY_CHOICE_LATEST:
            if (vp->latest->num_versions > MAX_LIST)
                return cl_err_set(err, CL_E_INVALID, "model '%s': latest { num_versions: %u }: at most %d", pc->name,
                                  vp->latest->num_versions, MAX_LIST);
            out->num_versions = vp->latest->num_versions;
            break;
        default:
            break; /* no choice: TF's default, latest 1 */
        }
    }
    if (pc->n_version_labels > MAX_LIST)
        return cl_err_set(err, CL_E_INVALID, "model '%s': more than %d version labels", pc->name, MAX_LIST);
    if (pc->n_version_labels) {
        cl_repo_version_label *l = calloc(pc->n_version_labels, sizeof *l);
        if (!l)
            return cl_err_nomem(err);
        for (size_t k = 0; k < pc->n_version_labels; k++) {
            l[k].label = pc->version_labels[k]->key;
            l[k].version = pc->version_labels[k]->value;
        }
        out->labels = l;
        out->n_labels = pc->n_version_labels;
    }
    return 0;
}

int cl_repo_reload_request(cl_repo *r, const uint8_t *msg, size_t len, cl_serve_code *code, cl_err *err)
{
    *code = CL_SC_INVALID_ARGUMENT;
    Tensorflow__Serving__ReloadConfigRequest *req = tensorflow__serving__reload_config_request__unpack(NULL, len, msg);
    if (!req)
        return cl_err_set(err, CL_E_INVALID, "the request is not a valid ReloadConfigRequest");
    int rc = -1;
    cl_repo_model_config *models = NULL;
    size_t n = 0;
    const Tensorflow__Serving__ModelServerConfig *c = req->config;
    if (!c || c->config_case != TENSORFLOW__SERVING__MODEL_SERVER_CONFIG__CONFIG_MODEL_CONFIG_LIST) {
        /* TF takes no action for an empty config on a server without one; cloister always has one */
        *code = CL_SC_FAILED_PRECONDITION;
        cl_err_set(err, CL_E_INVALID, "Cannot transition to requested config. It is only legal to transition from one "
                   "ModelConfigList to another.");
        goto out;
    }
    const Tensorflow__Serving__ModelConfigList *list = c->model_config_list;
    if (list->n_config > CL_REPO_CONFIG_MAX_MODELS) {
        cl_err_set(err, CL_E_INVALID, "more than %d models in the configuration", CL_REPO_CONFIG_MAX_MODELS);
        goto out;
    }
    models = calloc(list->n_config ? list->n_config : 1, sizeof *models);
    if (!models) {
        *code = CL_SC_RESOURCE_EXHAUSTED;
        cl_err_nomem(err);
        goto out;
    }
    for (size_t i = 0; i < list->n_config; i++, n++)
        if (model_from_pb(list->config[i], &models[i], err) != 0)
            goto out;
    rc = cl_repo_reload(r, models, n, code, err);
out:
    for (size_t i = 0; models && i < n; i++)
        free((cl_repo_version_label *)models[i].labels);
    free(models);
    tensorflow__serving__reload_config_request__free_unpacked(req, NULL);
    return rc;
}
