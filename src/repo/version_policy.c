/* version_policy.c — TF Serving's model version policies (ServableVersionPolicy: latest N, all,
 * specific) as a pure selection over the versions available on disk, and the version label alphabet.
 * The repository (repo.c) calls cl_repo_policy_select at start-up and at every poll; it loads what
 * is selected and not loaded, and unloads what is loaded and no longer selected. Stateless, so
 * thread-safe. */
#include "cloister/repo.h"

#include <stdio.h>
#include <string.h>

size_t cl_repo_policy_select(const cl_repo_model_config *mc, const int64_t *avail, size_t n, int64_t *out)
{
    /* highest first: insertion sort of the candidates (n is small: at most a few hundred directories) */
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t v = avail[i];
        bool take = mc->policy != CL_REPO_POLICY_SPECIFIC;
        for (size_t j = 0; !take && j < mc->n_versions; j++)
            take = mc->versions[j] == v;
        if (!take)
            continue;
        size_t j = k++;
        while (j > 0 && out[j - 1] < v) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = v;
    }
    if (mc->policy == CL_REPO_POLICY_LATEST) {
        size_t want = mc->num_versions ? mc->num_versions : 1;
        if (k > want)
            k = want;
    }
    return k;
}

void cl_repo_policy_describe(const cl_repo_model_config *mc, char *buf, size_t cap)
{
    if (!cap)
        return;
    buf[0] = '\0';
    switch (mc->policy) {
    case CL_REPO_POLICY_ALL:
        snprintf(buf, cap, "all");
        return;
    case CL_REPO_POLICY_SPECIFIC: {
        size_t o = (size_t)snprintf(buf, cap, "specific [");
        for (size_t i = 0; i < mc->n_versions && o < cap; i++)
            o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)mc->versions[i]);
        if (o < cap)
            snprintf(buf + o, cap - o, "]");
        return;
    }
    default:
        snprintf(buf, cap, "latest %u", mc->num_versions ? mc->num_versions : 1);
        return;
    }
}

bool cl_repo_label_valid(const char *label)
{
    size_t n = label ? strlen(label) : 0;
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = label[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
              c == '.'))
            return false;
    }
    return true;
}
