/* config.c — TF Serving's --model_config_file: ModelServerConfig in protobuf text format, the fields
 * cloister honours (name, base_path, model_platform, model_version_policy, version_labels), parsed
 * into cl_repo_model_config with bounds on everything (the file is 1 MiB at most, strings 4 KiB, at
 * most CL_REPO_CONFIG_MAX_MODELS models, 64 specific versions and 64 labels per model). The same
 * structures come from a HandleReloadConfigRequest (reload.c). Stateless, so thread-safe. */
#include "cloister/repo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LIST 64 /* specific versions, labels */

typedef enum {
    TK_EOF, TK_IDENT, TK_STRING, TK_NUMBER, TK_COLON, TK_OPEN, TK_CLOSE, TK_LBRACK, TK_RBRACK, TK_SEP, TK_OTHER
} tok_kind;

typedef struct lexer {
    const char *p, *end;
    int line;
    tok_kind kind;
    char text[4096]; /* identifier, decoded string or number */
    int64_t num;     /* TK_NUMBER */
} lexer;

static bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static int lex_next(lexer *lx, cl_err *err)
{
    for (;;) {
        while (lx->p < lx->end && (*lx->p == ' ' || *lx->p == '\t' || *lx->p == '\r' || *lx->p == '\n')) {
            if (*lx->p == '\n')
                lx->line++;
            lx->p++;
        }
        if (lx->p < lx->end && *lx->p == '#') {
            while (lx->p < lx->end && *lx->p != '\n')
                lx->p++;
            continue;
        }
        break;
    }
    if (lx->p >= lx->end) {
        lx->kind = TK_EOF;
        return 0;
    }
    char c = *lx->p;
    const char *single = ":{}[],;";
    if (strchr(single, c)) {
        lx->kind = c == ':' ? TK_COLON : c == '{' ? TK_OPEN : c == '}' ? TK_CLOSE : c == '[' ? TK_LBRACK
                   : c == ']' ? TK_RBRACK : TK_SEP;
        lx->p++;
        return 0;
    }
    if (is_alpha(c)) {
        size_t n = 0;
        while (lx->p < lx->end && (is_alpha(*lx->p) || is_digit(*lx->p))) {
            if (n + 1 >= sizeof lx->text)
                return cl_err_set(err, CL_E_FORMAT, "line %d: name too long", lx->line);
            lx->text[n++] = *lx->p++;
        }
        lx->text[n] = '\0';
        lx->kind = TK_IDENT;
        return 0;
    }
    if (is_digit(c) || c == '-') {
        bool neg = c == '-';
        if (neg)
            lx->p++;
        if (lx->p >= lx->end || !is_digit(*lx->p))
            return cl_err_set(err, CL_E_FORMAT, "line %d: '-' without a number", lx->line);
        int64_t v = 0;
        while (lx->p < lx->end && is_digit(*lx->p)) {
            int d = *lx->p++ - '0';
            if (v > (INT64_MAX - d) / 10)
                return cl_err_set(err, CL_E_FORMAT, "line %d: number out of range", lx->line);
            v = v * 10 + d;
        }
        if (lx->p < lx->end && (is_alpha(*lx->p) || *lx->p == '.'))
            return cl_err_set(err, CL_E_FORMAT, "line %d: not an integer", lx->line);
        lx->num = neg ? -v : v;
        lx->kind = TK_NUMBER;
        return 0;
    }
    if (c == '"' || c == '\'') {
        size_t n = 0;
        lx->p++;
        while (lx->p < lx->end && *lx->p != c) {
            char ch = *lx->p++;
            if (ch == '\n')
                return cl_err_set(err, CL_E_FORMAT, "line %d: unterminated string", lx->line);
            if (ch == '\\') {
                if (lx->p >= lx->end)
                    break;
                char e = *lx->p++;
                ch = e == 'n' ? '\n' : e == 't' ? '\t' : e == '\\' || e == '"' || e == '\'' ? e : 0;
                if (!ch)
                    return cl_err_set(err, CL_E_FORMAT, "line %d: unsupported escape '\\%c'", lx->line, e);
            }
            if (n + 1 >= sizeof lx->text)
                return cl_err_set(err, CL_E_FORMAT, "line %d: string too long", lx->line);
            lx->text[n++] = ch;
        }
        if (lx->p >= lx->end)
            return cl_err_set(err, CL_E_FORMAT, "line %d: unterminated string", lx->line);
        lx->p++;
        lx->text[n] = '\0';
        lx->kind = TK_STRING;
        return 0;
    }
    lx->kind = TK_OTHER;
    if ((unsigned char)c < 0x20 || (unsigned char)c >= 0x7f)
        return cl_err_set(err, CL_E_FORMAT, "line %d: unexpected byte 0x%02x", lx->line, (unsigned char)c);
    return cl_err_set(err, CL_E_FORMAT, "line %d: unexpected character '%c'", lx->line, c);
}

/* Past an optional ',' or ';' after a field (text format allows both). */
static int skip_sep(lexer *lx, cl_err *err) { return lx->kind == TK_SEP ? lex_next(lx, err) : 0; }

/* After a message field's name: an optional ':', then '{'; leaves the lexer past '{'. */
static int open_block(lexer *lx, const char *name, int line, cl_err *err)
{
    if (lx->kind == TK_COLON && lex_next(lx, err) != 0)
        return -1;
    if (lx->kind != TK_OPEN)
        return cl_err_set(err, CL_E_FORMAT, "line %d: expected '{' after '%s'", line, name);
    return lex_next(lx, err);
}

/* Expects an identifier `name`, an optional ':', then '{'. */
static int expect_block(lexer *lx, const char *name, cl_err *err)
{
    if (lx->kind != TK_IDENT || strcmp(lx->text, name) != 0)
        return cl_err_set(err, CL_E_FORMAT, "line %d: expected '%s'", lx->line, name);
    int line = lx->line;
    if (lex_next(lx, err) != 0)
        return -1;
    return open_block(lx, name, line, err);
}

/* A scalar field's ':' then its integer value; leaves the lexer past the value. */
static int scalar_int(lexer *lx, const char *field, int line, int64_t *out, cl_err *err)
{
    if (lx->kind != TK_COLON)
        return cl_err_set(err, CL_E_FORMAT, "line %d: '%s' wants ':' and a number", line, field);
    if (lex_next(lx, err) != 0)
        return -1;
    if (lx->kind != TK_NUMBER)
        return cl_err_set(err, CL_E_FORMAT, "line %d: '%s' wants a number", line, field);
    *out = lx->num;
    return lex_next(lx, err);
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
static int parse_specific(lexer *lx, cl_repo_model_config *mc, cl_err *err)
{
    int64_t *v = (int64_t *)mc->versions;
    while (lx->kind != TK_CLOSE) {
        if (lx->kind != TK_IDENT || strcmp(lx->text, "versions") != 0)
            return cl_err_set(err, CL_E_FORMAT, "line %d: expected 'versions' or '}' in specific", lx->line);
        int line = lx->line;
        if (lex_next(lx, err) != 0)
            return -1;
        if (lx->kind != TK_COLON)
            return cl_err_set(err, CL_E_FORMAT, "line %d: 'versions' wants ':'", line);
        if (lex_next(lx, err) != 0)
            return -1;
        bool list = lx->kind == TK_LBRACK;
        if (list && lex_next(lx, err) != 0)
            return -1;
        do {
            if (list && lx->kind == TK_RBRACK)
                break;
            if (lx->kind != TK_NUMBER)
                return cl_err_set(err, CL_E_FORMAT, "line %d: 'versions' wants numbers", line);
            if (lx->num <= 0)
                return cl_err_set(err, CL_E_FORMAT, "line %d: version %lld is not a positive integer", line,
                                  (long long)lx->num);
            if (mc->n_versions == MAX_LIST)
                return cl_err_set(err, CL_E_FORMAT, "line %d: more than %d specific versions", line, MAX_LIST);
            if (!v && !(v = calloc(MAX_LIST, sizeof *v)))
                return cl_err_nomem(err);
            mc->versions = v;
            v[mc->n_versions++] = lx->num;
            if (lex_next(lx, err) != 0)
                return -1;
            if (!list)
                break;
            if (lx->kind == TK_SEP) {
                if (lex_next(lx, err) != 0)
                    return -1;
            } else if (lx->kind != TK_RBRACK) {
                return cl_err_set(err, CL_E_FORMAT, "line %d: missing ']'", line);
            }
        } while (true);
        if (list) {
            if (lx->kind != TK_RBRACK)
                return cl_err_set(err, CL_E_FORMAT, "line %d: missing ']'", line);
            if (lex_next(lx, err) != 0)
                return -1;
        }
        if (skip_sep(lx, err) != 0)
            return -1;
    }
    return lex_next(lx, err);
}

/* model_version_policy { latest { num_versions: N } | all {} | specific {...} } (lexer past '{'). */
static int parse_policy(lexer *lx, cl_repo_model_config *mc, int pline, cl_err *err)
{
    bool seen = false;
    while (lx->kind != TK_CLOSE) {
        if (lx->kind != TK_IDENT)
            return cl_err_set(err, CL_E_FORMAT, "line %d: expected latest, all or specific", lx->line);
        char kind[16];
        snprintf(kind, sizeof kind, "%.15s", lx->text);
        int line = lx->line;
        if (strcmp(kind, "latest") != 0 && strcmp(kind, "all") != 0 && strcmp(kind, "specific") != 0)
            return cl_err_set(err, CL_E_FORMAT, "line %d: unknown version policy '%s' (latest, all, specific)", line,
                              lx->text);
        if (seen)
            return cl_err_set(err, CL_E_FORMAT, "line %d: model_version_policy takes one of latest, all, specific",
                              line);
        seen = true;
        if (lex_next(lx, err) != 0 || open_block(lx, kind, line, err) != 0)
            return -1;
        if (strcmp(kind, "all") == 0) {
            mc->policy = CL_REPO_POLICY_ALL;
            if (lx->kind != TK_CLOSE)
                return cl_err_set(err, CL_E_FORMAT, "line %d: all {} has no fields", lx->line);
            if (lex_next(lx, err) != 0)
                return -1;
        } else if (strcmp(kind, "latest") == 0) {
            mc->policy = CL_REPO_POLICY_LATEST;
            while (lx->kind != TK_CLOSE) {
                if (lx->kind != TK_IDENT || strcmp(lx->text, "num_versions") != 0)
                    return cl_err_set(err, CL_E_FORMAT, "line %d: expected 'num_versions' or '}' in latest", lx->line);
                int fl = lx->line;
                int64_t v;
                if (lex_next(lx, err) != 0 || scalar_int(lx, "num_versions", fl, &v, err) != 0)
                    return -1;
                if (v < 0 || v > MAX_LIST)
                    return cl_err_set(err, CL_E_FORMAT, "line %d: num_versions must be 0 to %d (0 counts as 1)", fl,
                                      MAX_LIST);
                mc->num_versions = (unsigned)v;
                if (skip_sep(lx, err) != 0)
                    return -1;
            }
            if (lex_next(lx, err) != 0)
                return -1;
        } else {
            mc->policy = CL_REPO_POLICY_SPECIFIC;
            if (parse_specific(lx, mc, err) != 0)
                return -1;
            if (mc->n_versions == 0)
                return cl_err_set(err, CL_E_FORMAT, "line %d: specific lists no version", line);
        }
        if (skip_sep(lx, err) != 0)
            return -1;
    }
    (void)pline;
    return lex_next(lx, err);
}

/* version_labels { key: "stable" value: 1 } (lexer past '{'); one entry per block, as text format
 * writes a map. */
static int parse_label(lexer *lx, cl_repo_model_config *mc, int pline, cl_err *err)
{
    char key[128] = "";
    bool has_key = false, has_value = false;
    int64_t value = 0;
    while (lx->kind != TK_CLOSE) {
        if (lx->kind != TK_IDENT || (strcmp(lx->text, "key") != 0 && strcmp(lx->text, "value") != 0))
            return cl_err_set(err, CL_E_FORMAT, "line %d: expected 'key', 'value' or '}' in version_labels",
                              lx->line);
        bool is_key = lx->text[0] == 'k';
        int line = lx->line;
        if ((is_key && has_key) || (!is_key && has_value))
            return cl_err_set(err, CL_E_FORMAT, "line %d: '%s' given twice", line, is_key ? "key" : "value");
        if (lex_next(lx, err) != 0)
            return -1;
        if (is_key) {
            if (lx->kind != TK_COLON || lex_next(lx, err) != 0)
                return lx->kind == TK_COLON ? -1 : cl_err_set(err, CL_E_FORMAT, "line %d: 'key' wants ':'", line);
            if (lx->kind != TK_STRING)
                return cl_err_set(err, CL_E_FORMAT, "line %d: 'key' wants a quoted string", line);
            if (!cl_repo_label_valid(lx->text))
                return cl_err_set(err, CL_E_FORMAT, "line %d: version label '%.64s' is not valid (1-64 of A-Z a-z "
                                  "0-9 . _ -)", line, lx->text);
            snprintf(key, sizeof key, "%.127s", lx->text);
            has_key = true;
            if (lex_next(lx, err) != 0)
                return -1;
        } else {
            if (scalar_int(lx, "value", line, &value, err) != 0)
                return -1;
            if (value <= 0)
                return cl_err_set(err, CL_E_FORMAT, "line %d: a label's version must be a positive integer", line);
            has_value = true;
        }
        if (skip_sep(lx, err) != 0)
            return -1;
    }
    if (!has_key || !has_value)
        return cl_err_set(err, CL_E_FORMAT, "line %d: version_labels needs a key and a value", pline);
    for (size_t k = 0; k < mc->n_labels; k++)
        if (strcmp(mc->labels[k].label, key) == 0)
            return cl_err_set(err, CL_E_FORMAT, "line %d: version label '%s' is given twice", pline, key);
    if (mc->n_labels == MAX_LIST)
        return cl_err_set(err, CL_E_FORMAT, "line %d: more than %d version labels", pline, MAX_LIST);
    cl_repo_version_label *l = (cl_repo_version_label *)mc->labels;
    if (!l && !(l = calloc(MAX_LIST, sizeof *l)))
        return cl_err_nomem(err);
    mc->labels = l;
    if (!(l[mc->n_labels].label = strdup(key)))
        return cl_err_nomem(err);
    l[mc->n_labels++].version = value;
    return lex_next(lx, err);
}

static int parse_config_entry(lexer *lx, cl_repo_model_config *mc, cl_err *err)
{
    int start = lx->line;
    bool had_policy = false;
    while (lx->kind != TK_CLOSE) {
        if (lx->kind != TK_IDENT)
            return cl_err_set(err, CL_E_FORMAT, "line %d: expected a field name or '}'", lx->line);
        char field[64];
        snprintf(field, sizeof field, "%.63s", lx->text);
        int line = lx->line;
        if (lex_next(lx, err) != 0)
            return -1;
        if (strcmp(field, "model_version_policy") == 0) {
            if (had_policy)
                return cl_err_set(err, CL_E_FORMAT, "line %d: 'model_version_policy' given twice", line);
            had_policy = true;
            if (open_block(lx, field, line, err) != 0 || parse_policy(lx, mc, line, err) != 0)
                return -1;
            if (skip_sep(lx, err) != 0)
                return -1;
            continue;
        }
        if (strcmp(field, "version_labels") == 0) {
            if (open_block(lx, field, line, err) != 0 || parse_label(lx, mc, line, err) != 0)
                return -1;
            if (skip_sep(lx, err) != 0)
                return -1;
            continue;
        }
        const char **slot = NULL;
        if (strcmp(field, "name") == 0)
            slot = &mc->name;
        else if (strcmp(field, "base_path") == 0)
            slot = &mc->base_path;
        else if (strcmp(field, "model_platform") != 0)
            return cl_err_set(err, CL_E_FORMAT, "line %d: unknown field '%s' (name, base_path, model_platform, "
                              "model_version_policy, version_labels)", line, field);
        if (lx->kind != TK_COLON)
            return cl_err_set(err, CL_E_FORMAT, "line %d: '%s' wants ':' and a quoted string", line, field);
        if (lex_next(lx, err) != 0)
            return -1;
        if (lx->kind != TK_STRING)
            return cl_err_set(err, CL_E_FORMAT, "line %d: '%s' wants a quoted string", line, field);
        if (!slot) {
            if (strcmp(lx->text, "onnx") != 0 && strcmp(lx->text, "tensorflow") != 0)
                return cl_err_set(err, CL_E_FORMAT, "line %d: model_platform '%.64s' is not supported (onnx)", line,
                                  lx->text);
        } else {
            if (*slot)
                return cl_err_set(err, CL_E_FORMAT, "line %d: '%s' given twice", line, field);
            if (!(*slot = strdup(lx->text)))
                return cl_err_nomem(err);
        }
        if (lex_next(lx, err) != 0 || skip_sep(lx, err) != 0)
            return -1;
    }
    if (!mc->name || !mc->base_path)
        return cl_err_set(err, CL_E_FORMAT, "line %d: a config needs both name and base_path", start);
    return lex_next(lx, err); /* past '}' */
}

int cl_repo_config_parse(const char *text, size_t len, cl_repo_model_config **models, size_t *n_models,
                         cl_err *err)
{
    *models = NULL;
    *n_models = 0;
    lexer lx = {.p = text, .end = text + len, .line = 1};
    cl_repo_model_config *out = NULL;
    size_t n = 0;
    if (lex_next(&lx, err) != 0 || expect_block(&lx, "model_config_list", err) != 0)
        goto fail;
    while (lx.kind != TK_CLOSE) {
        if (lx.kind == TK_EOF) {
            cl_err_set(err, CL_E_FORMAT, "line %d: missing '}' at the end of model_config_list", lx.line);
            goto fail;
        }
        if (n == CL_REPO_CONFIG_MAX_MODELS) {
            cl_err_set(err, CL_E_FORMAT, "line %d: more than %d models", lx.line, CL_REPO_CONFIG_MAX_MODELS);
            goto fail;
        }
        if (expect_block(&lx, "config", err) != 0)
            goto fail;
        cl_repo_model_config *grown = realloc(out, (n + 1) * sizeof *out);
        if (!grown) {
            cl_err_nomem(err);
            goto fail;
        }
        out = grown;
        out[n] = (cl_repo_model_config){0};
        n++;
        if (parse_config_entry(&lx, &out[n - 1], err) != 0 || skip_sep(&lx, err) != 0)
            goto fail;
    }
    if (lex_next(&lx, err) != 0)
        goto fail;
    if (lx.kind != TK_EOF) {
        cl_err_set(err, CL_E_FORMAT, "line %d: unexpected text after model_config_list", lx.line);
        goto fail;
    }
    if (n == 0) {
        cl_err_set(err, CL_E_FORMAT, "model_config_list has no config");
        goto fail;
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(out[i].name, out[j].name) == 0) {
                cl_err_set(err, CL_E_FORMAT, "model '%s' is configured twice", out[i].name);
                goto fail;
            }
    *models = out;
    *n_models = n;
    return 0;
fail:
    cl_repo_config_free(out, n);
    return -1;
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
