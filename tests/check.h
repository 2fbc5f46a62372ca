/* check.h — the few assertion helpers condseg's C tests share. A failed check prints
 * file:line and what differed, and makes the test exit non-zero (never "FAIL" and 0). */
#ifndef CONDSEG_TEST_CHECK_H
#define CONDSEG_TEST_CHECK_H

#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int check_failures = 0;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            check_failures++;                                                        \
        }                                                                            \
    } while (0)

#define CHECK_MSG(cond, ...)                                           \
    do {                                                               \
        if (!(cond)) {                                                 \
            fprintf(stderr, "%s:%d: check failed: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                              \
            fputc('\n', stderr);                                       \
            check_failures++;                                          \
        }                                                              \
    } while (0)

/* Largest absolute difference between two float arrays. */
static inline double check_max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = isnan(d) ? INFINITY : d;
    }
    return m;
}

/* Largest absolute value (the "scale" errors are measured against). */
static inline double check_max_abs(const float *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)a[i]) > m) m = fabs((double)a[i]);
    return m;
}

/* An n x c x hw map transposed from NCHW to NHWC, by index (g_free it): the reference the
 * NHWC code paths are checked against. */
static inline float *check_nhwc_of(const float *x, int n, int c, int hw) {
    float *y = g_new(float, (size_t)n * c * hw);
    for (int b = 0; b < n; b++)
        for (int ch = 0; ch < c; ch++)
            for (int p = 0; p < hw; p++)
                y[((size_t)b * hw + p) * c + ch] = x[((size_t)b * c + ch) * hw + p];
    return y;
}

/* Removes a folder of files, links and folders (a test's scratch space). */
static inline void check_remove_tree(const char *path) {
    GDir *dir = g_dir_open(path, 0, NULL);
    for (const char *name; dir && (name = g_dir_read_name(dir));) {
        char *child = g_build_filename(path, name, NULL);
        if (g_file_test(child, G_FILE_TEST_IS_DIR) && !g_file_test(child, G_FILE_TEST_IS_SYMLINK))
            check_remove_tree(child);
        else
            g_unlink(child);
        g_free(child);
    }
    if (dir) g_dir_close(dir);
    g_rmdir(path);
}

/* The Python the tests compare against (Debian's, with python3-numpy). */
#define CHECK_PYTHON "/usr/bin/python3"

/* Runs `python -c script arg1 [arg2]` (arg2 may be NULL); returns its stdout (g_free it),
 * or NULL with the reason or python's stderr printed. */
static inline char *check_run_python(const char *script, const char *arg1, const char *arg2) {
    const char *argv[] = {CHECK_PYTHON, "-c", script, arg1, arg2, NULL};
    char *out = NULL, *err = NULL;
    int status = 0;
    GError *error = NULL;
    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err, &status,
                      &error)) {
        fprintf(stderr, "cannot run %s: %s\n", CHECK_PYTHON, error->message);
        g_error_free(error);
    } else if (!g_spawn_check_wait_status(status, NULL)) {
        fprintf(stderr, "%s failed:\n%s\n", CHECK_PYTHON, err);
        g_clear_pointer(&out, g_free);
    }
    g_free(err);
    return out;
}

static inline int check_summary(const char *name) {
    if (check_failures) {
        fprintf(stderr, "%s: %d check(s) failed\n", name, check_failures);
        return 1;
    }
    printf("%s: all checks passed\n", name);
    return 0;
}

#endif
