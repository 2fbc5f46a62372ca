/* runtime_cpu.c — thread count and floating-point mode of the CPU kernels. OpenBLAS is
 * the OpenMP build where available, so one pool of OpenMP threads runs both BLAS and our
 * own loops; flush-to-zero is set once in each of those threads. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

/* From OpenBLAS, not in cblas.h. */
void openblas_set_num_threads(int num_threads);
char *openblas_get_corename(void);

static int cs_threads = 0;

/* The size of the last scratch allocation that failed, 0 when none since the last take. */
static size_t alloc_failure = 0;

void cs_cpu_note_alloc_failure(size_t bytes) {
    __atomic_store_n(&alloc_failure, bytes ? bytes : 1, __ATOMIC_RELAXED);
}

size_t cs_cpu_take_alloc_failure(void) {
    return __atomic_exchange_n(&alloc_failure, 0, __ATOMIC_RELAXED);
}

void cs_cpu_init(int n_threads) {
    if (n_threads <= 0) n_threads = omp_get_num_procs();
    if (n_threads == cs_threads) return;
    cs_threads = n_threads;
    omp_set_num_threads(n_threads);
    openblas_set_num_threads(n_threads);
#pragma omp parallel num_threads(n_threads)
    {
#if defined(__SSE__)
        /* FTZ (bit 15) and DAZ (bit 6) of MXCSR. */
        _mm_setcsr(_mm_getcsr() | 0x8040);
#endif
    }
#if defined(__SSE__)
    _mm_setcsr(_mm_getcsr() | 0x8040);
#endif
}

int cs_cpu_threads(void) {
    if (cs_threads == 0) cs_cpu_init(0);
    return cs_threads;
}

const char *cs_cpu_blas_core(void) { return openblas_get_corename(); }

const char *cs_cpu_better_blas_core(void) {
    if (getenv("OPENBLAS_CORETYPE")) return NULL; /* the user (or the machine) chose */
    const char *core = openblas_get_corename();
    /* OpenBLAS names its generic x86-64 fallback after the Prescott core (SSE3). */
    if (!core || strcmp(core, "Prescott") != 0) return NULL;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512cd"))
        return "SKYLAKEX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "HASWELL";
#endif
    return NULL;
}
