/* golden.h — reading the reference ("golden") files that tools/make_golden.py writes with
 * our PyTorch reference: safetensors files in $CONDSEG_GOLDEN. A missing file or tensor
 * is a test failure, never a skip. */
#ifndef CONDSEG_TEST_GOLDEN_H
#define CONDSEG_TEST_GOLDEN_H

#include <glib.h>
#include <json-glib/json-glib.h>
#include <string.h>

#include "check.h"
#include "safetensors.h"

static inline char *golden_path(const char *file) {
    const char *dir = g_getenv("CONDSEG_GOLDEN");
    return g_build_filename(dir ? dir : "golden", file, NULL);
}

static inline cs_safetensors *golden_open(const char *file) {
    char *path = golden_path(file);
    GError *error = NULL;
    cs_safetensors *st = cs_st_open(path, &error);
    if (!st) {
        fprintf(stderr, "cannot open reference file %s: %s\n(the golden_* fixtures make it)\n",
                path, error->message);
        g_error_free(error);
        check_failures++;
    }
    g_free(path);
    return st;
}

/* The float32 values of `name` (g_free them), or NULL (counted as a failure). When
 * numel is not NULL it receives the element count. */
static inline float *golden_floats(const cs_safetensors *st, const char *name, size_t *numel) {
    const cs_st_tensor *t = cs_st_find(st, name);
    if (!t) {
        fprintf(stderr, "reference tensor '%s' missing from %s\n", name, cs_st_path(st));
        check_failures++;
        return NULL;
    }
    float *v = g_new(float, t->numel ? t->numel : 1);
    GError *error = NULL;
    if (!cs_st_read_f32(st, t, v, &error)) {
        fprintf(stderr, "%s\n", error->message);
        g_error_free(error);
        check_failures++;
        g_free(v);
        return NULL;
    }
    if (numel) *numel = (size_t)t->numel;
    return v;
}

static inline const cs_st_tensor *golden_tensor(const cs_safetensors *st, const char *name) {
    const cs_st_tensor *t = cs_st_find(st, name);
    if (!t) {
        fprintf(stderr, "reference tensor '%s' missing from %s\n", name, cs_st_path(st));
        check_failures++;
    }
    return t;
}

/* Compares got with the reference tensor `name`: max |got - ref| / max(|ref|, floor) must be
 * at most tol. Prints one line either way; returns the relative error. */
static inline double golden_compare(const cs_safetensors *st, const char *name, const float *got,
                                    size_t n, double tol, double floor) {
    size_t numel = 0;
    float *ref = golden_floats(st, name, &numel);
    if (!ref) return INFINITY;
    double err = INFINITY;
    if (numel != n) {
        CHECK_MSG(0, "%s: %zu values, reference has %zu", name, n, numel);
    } else {
        double scale = check_max_abs(ref, n);
        if (scale < floor) scale = floor;
        err = check_max_abs_diff(got, ref, n) / scale;
        printf("  %-36s max|diff|/scale = %.2e (scale %.3g) %s\n", name, err, scale,
               err <= tol ? "ok" : "FAIL");
        CHECK_MSG(err <= tol, "%s: relative error %.3e above %.1e", name, err, tol);
    }
    g_free(ref);
    return err;
}

/* The case list of ops_golden.safetensors (its "cases" metadata, a JSON array of objects
 * with "name", "op" and attributes), parsed into `parser`; NULL (a failure) without it. */
static inline JsonArray *golden_cases(const cs_safetensors *st, JsonParser *parser) {
    const char *json = cs_st_metadata(st, "cases");
    GError *error = NULL;
    if (!json || !json_parser_load_from_data(parser, json, -1, &error)) {
        CHECK_MSG(0, "%s: no readable 'cases' metadata%s%s", cs_st_path(st), error ? ": " : "",
                  error ? error->message : "");
        g_clear_error(&error);
        return NULL;
    }
    JsonNode *root = json_parser_get_root(parser);
    return root && JSON_NODE_HOLDS_ARRAY(root) ? json_node_get_array(root) : NULL;
}

#endif
