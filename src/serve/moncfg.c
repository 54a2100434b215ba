/* moncfg.c — TF Serving's --monitoring_config_file (MonitoringConfig in protobuf text format, see
 * proto/tensorflow_serving/config/monitoring_config.proto) into cl_serve_monitoring: whether the
 * Prometheus endpoint is served and at which path. The endpoint itself is in rest.c, the metrics in
 * server.c. Read with the common text-format reader (textpb.h; a field given twice is an error), then
 * the path checked. */
#include "cloister/serve.h"
#include "cloister/textpb.h"

#include <stdio.h>
#include <string.h>

#include "tensorflow_serving/config/monitoring_config.pb-c.h"

/* The endpoint's path: absolute, printable ASCII without spaces or the characters that would make it
 * something else in a request line ('?', '#') or need decoding ('%', '\'), and not under /v1/, where
 * the model API answers. */
static int check_path(const char *p, int line, cl_err *err)
{
    if (p[0] != '/')
        return cl_err_set(err, CL_E_FORMAT, "monitoring config line %d: path '%.64s' must start with '/'", line, p);
    for (const char *c = p; *c; c++)
        if (*c <= ' ' || *c > '~' || strchr("?#%\\\"", *c))
            return cl_err_set(err, CL_E_FORMAT, "monitoring config line %d: path '%.64s' may hold only printable "
                              "characters other than space, '?', '#', '%%', '\\' and '\"' (character %d is 0x%02x)",
                              line, p, (int)(c - p) + 1, (unsigned char)*c);
    if (strcmp(p, "/v1") == 0 || strncmp(p, "/v1/", 4) == 0)
        return cl_err_set(err, CL_E_FORMAT, "monitoring config line %d: path '%.64s' lies under /v1/, where the "
                          "model API is served; choose another (the default is %s)", line, p, CL_SERVE_METRICS_PATH);
    return 0;
}

int cl_serve_monitoring_parse(const char *text, size_t len, cl_serve_monitoring *out, cl_err *err)
{
    cl_textpb_locs *locs = NULL;
    const cl_textpb_options o = {.flags = CL_TEXTPB_FORBID_OVERWRITE, .max_len = 1u << 20, .locs = &locs};
    ProtobufCMessage *msg = NULL;
    if (cl_textpb_parse(text, len, &tensorflow__serving__monitoring_config__descriptor, &o, &msg, err) != 0)
        return cl_err_prefix(err, "monitoring config");
    const Tensorflow__Serving__PrometheusConfig *pc = ((Tensorflow__Serving__MonitoringConfig *)msg)->prometheus_config;
    cl_serve_monitoring m = {.off = true}; /* no `enable: true`: no endpoint, as in TF Serving */
    int rc = 0;
    if (pc) {
        m.off = !pc->enable;
        int line = 0, col = 0;
        cl_textpb_where(locs, pc, "path", 0, &line, &col);
        if (pc->path && strlen(pc->path) > CL_SERVE_METRICS_PATH_MAX)
            rc = cl_err_set(err, CL_E_FORMAT, "monitoring config line %d: 'path' is longer than %d characters", line,
                            CL_SERVE_METRICS_PATH_MAX);
        else if (pc->path && pc->path[0]) {
            snprintf(m.path, sizeof m.path, "%s", pc->path);
            rc = check_path(m.path, line, err);
        }
    }
    cl_textpb_locs_free(locs);
    cl_textpb_free(msg, &o);
    if (rc == 0)
        *out = m;
    return rc;
}

const char *cl_serve_monitoring_path(const cl_serve_monitoring *m)
{
    if (m->off)
        return NULL;
    return m->path[0] ? m->path : CL_SERVE_METRICS_PATH;
}
