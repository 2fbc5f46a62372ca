/* bench_util.h — what the benchmarks share: a monotonic clock, the sgemm rate they
 * measure next to every timed run (the figures are ratios to it), and a comparison for
 * medians. */
#ifndef CONDSEG_BENCH_UTIL_H
#define CONDSEG_BENCH_UTIL_H

#include <cblas.h>
#include <glib.h>

static inline double bench_now(void) { return g_get_monotonic_time() / 1e6; }

/* sgemm GFLOP/s for an m x k by k x n product, repeated for `seconds`. */
static inline double bench_sgemm_rate(int m, int n, int k, double seconds) {
    float *a = g_new(float, (size_t)m * k), *b = g_new(float, (size_t)k * n),
          *c = g_new(float, (size_t)m * n);
    for (size_t i = 0; i < (size_t)m * k; i++) a[i] = (float)((i * 7919) % 1000) / 1000.0f;
    for (size_t i = 0; i < (size_t)k * n; i++) b[i] = (float)((i * 104729) % 1000) / 1000.0f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1, a, k, b, n, 0, c, n);
    int reps = 0;
    double t0 = bench_now(), t;
    do {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1, a, k, b, n, 0, c, n);
        reps++;
        t = bench_now() - t0;
    } while (t < seconds);
    g_free(a), g_free(b), g_free(c);
    return 2.0 * m * n * k * reps / t / 1e9;
}

static inline int bench_compare_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#endif
