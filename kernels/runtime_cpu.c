/* runtime_cpu.c — thread count and floating-point mode of the CPU kernels. OpenBLAS is
 * the OpenMP build where available, so one pool of OpenMP threads runs both BLAS and our
 * own loops; flush-to-zero is set once in each of those threads. */
#include <omp.h>

#include "kernels.h"

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

void openblas_set_num_threads(int num_threads); /* from OpenBLAS, not in cblas.h */

static int cs_threads = 0;

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
