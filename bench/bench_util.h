/* bench_util.h — what the benchmarks share: a monotonic clock, the sgemm and bf16 matmul
 * rates they measure next to every timed run (the figures are ratios to them), and a
 * comparison for medians. */
#ifndef CONDSEG_BENCH_UTIL_H
#define CONDSEG_BENCH_UTIL_H

#include <cblas.h>
#include <glib.h>
#include <string.h>

#include "dnnl_compat.h"

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

/* oneDNN matmul GFLOP/s for an m x k by k x n product with bfloat16 (bf16 = 1) or float32
 * inputs and float32 output, repeated for `seconds`: the peak the bf16 roofline is taken
 * at (AMX where the CPU has it). */
static inline double bench_dnnl_matmul_rate(int m, int n, int k, int bf16, double seconds) {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    CSD_CHECK(dnnl_engine_create(&engine, dnnl_cpu, 0));
    CSD_CHECK(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags));
    const dnnl_data_type_t dt = bf16 ? dnnl_bf16 : dnnl_f32;
    const dnnl_dims_t ad = {m, k}, bd = {k, n}, cd = {m, n};
    csd_md amd = csd_md_new(2, ad, dt, dnnl_ab), bmd = csd_md_new(2, bd, dt, dnnl_ab),
           cmd = csd_md_new(2, cd, dnnl_f32, dnnl_ab);
    dnnl_primitive_desc_t pd;
    if (csd_matmul_pd(&pd, engine, amd, bmd, cmd) != dnnl_success) return 0.0;
    dnnl_primitive_t prim;
    CSD_CHECK(dnnl_primitive_create(&prim, pd));
    dnnl_memory_t a, b, c;
    CSD_CHECK(dnnl_memory_create(&a, amd, engine, DNNL_MEMORY_ALLOCATE));
    CSD_CHECK(dnnl_memory_create(&b, bmd, engine, DNNL_MEMORY_ALLOCATE));
    CSD_CHECK(dnnl_memory_create(&c, cmd, engine, DNNL_MEMORY_ALLOCATE));
    void *p;
    dnnl_memory_get_data_handle(a, &p), memset(p, 0, dnnl_memory_desc_get_size(amd));
    dnnl_memory_get_data_handle(b, &p), memset(p, 0, dnnl_memory_desc_get_size(bmd));
    const dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}};
    dnnl_primitive_execute(prim, stream, 3, args);
    dnnl_stream_wait(stream);
    int reps = 0;
    double t0 = bench_now(), t;
    do {
        dnnl_primitive_execute(prim, stream, 3, args);
        dnnl_stream_wait(stream);
        reps++;
        t = bench_now() - t0;
    } while (t < seconds);
    dnnl_memory_destroy(a), dnnl_memory_destroy(b), dnnl_memory_destroy(c);
    csd_md_free(amd), csd_md_free(bmd), csd_md_free(cmd);
    dnnl_primitive_destroy(prim), dnnl_primitive_desc_destroy(pd);
    dnnl_stream_destroy(stream), dnnl_engine_destroy(engine);
    return 2.0 * m * n * k * reps / t / 1e9;
}

static inline int bench_compare_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#endif
