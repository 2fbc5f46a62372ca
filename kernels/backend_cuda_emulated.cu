/* backend_cuda_emulated.cu — the CUDA backend's operation code (cuda_ops.cuh) run on the
 * host: HostExec executes each functor over its index range with OpenMP threads, the
 * reductions block by block with the GPU's split of rows (as if on 132 multiprocessors),
 * and cuBLAS's column-major GEMM calls through OpenBLAS with the same arguments. Memory is
 * host memory, but the table says it is not, so the parameter mirror and the copies take
 * the paths they take on a GPU. What this cannot check is the CUDA side proper: launch
 * configurations, the shared-memory reduction tree, cuBLAS itself.
 *
 * Tests compare it with the CPU backend on machines without a GPU (test_cuda --emulated).
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_cuda.h"
#include "cuda_ops.cuh"

namespace {

struct host_scratch {
    void *block[CSK_SCRATCH_SLOTS];
    size_t bytes[CSK_SCRATCH_SLOTS];
};

host_scratch scratch_state;

}  // namespace

struct HostExec {
    static int sm_count() { return 132; }

    template <class F>
    static void for_each(int n, const F &f) {
#pragma omp parallel for schedule(static)
        for (int i = 0; i < n; i++) f(i);
    }

    template <class R, class Term, class Fin>
    static void reduce_blocks(int rows, int len, int splits, const Term &term, const Fin &fin,
                              typename R::V *partial) {
        const int blocks = csk_int_count((size_t)rows * splits, "reduction blocks");
#pragma omp parallel for schedule(static)
        for (int block = 0; block < blocks; block++) {
            const int row = block / splits, split = block - row * splits;
            int begin, end;
            csk_split_range(len, splits, split, &begin, &end);
            typename R::V acc = R::identity();
            for (int j = begin; j < end; j++) acc = R::combine(acc, term(row, j));
            if (partial) partial[block] = acc;
            else fin(row, acc);
        }
    }

    static void gemm_cm(int trans_a, int trans_b, int m, int n, int k, float alpha,
                        const float *a, int lda, const float *b, int ldb, float beta, float *c,
                        int ldc) {
        if (m <= 0 || n <= 0) return;
        cblas_sgemm(CblasColMajor, trans_a ? CblasTrans : CblasNoTrans,
                    trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c,
                    ldc);
    }

    static void gemm_cm_batched(int trans_a, int trans_b, int m, int n, int k, float alpha,
                                const float *a, int lda, long long stride_a, const float *b,
                                int ldb, long long stride_b, float beta, float *c, int ldc,
                                long long stride_c, int batch) {
        for (int i = 0; i < batch; i++)
            gemm_cm(trans_a, trans_b, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb,
                    beta, c + i * stride_c, ldc);
    }

    static void *scratch(int slot, size_t bytes) {
        if (bytes > scratch_state.bytes[slot]) {
            free(scratch_state.block[slot]);
            const size_t want = (bytes + 63) / 64 * 64;
            scratch_state.block[slot] = aligned_alloc(64, want);
            if (!scratch_state.block[slot]) { /* as the GPU's: noted, the operation skipped */
                scratch_state.bytes[slot] = 0;
                cs_cpu_note_alloc_failure(want);
                return NULL;
            }
            scratch_state.bytes[slot] = want;
        }
        return scratch_state.block[slot];
    }
};

static void *emulated_alloc(size_t bytes) {
    bytes = (bytes + 63) / 64 * 64;
    return aligned_alloc(64, bytes ? bytes : 64);
}

static void emulated_copy(void *dst, const void *src, size_t bytes) {
    if (bytes) memcpy(dst, src, bytes);
}

static void emulated_zero(void *p, size_t bytes) {
    if (bytes) memset(p, 0, bytes);
}

static void emulated_synchronize(void) {}

static const cs_backend emulated_table =
    CudaOps<HostExec>::table("cuda-emulated", emulated_alloc, free, emulated_copy, emulated_copy,
                             emulated_zero, emulated_synchronize);

extern "C" const cs_backend *cs_cuda_emulated_backend(void) { return &emulated_table; }

/* csk_quot against the division operator: small divisors exhaustively over small n, edge
 * values (multiples of d and their neighbours, 2^31 - 1) and random numerators for
 * divisors up to 2^31 - 1. The host arithmetic is the device's (__umulhi). */
extern "C" long cs_cuda_check_divider(void) {
    long wrong = 0;
    unsigned long long state = 88172645463325252ull;
    for (long d = 1; d <= 2147483647L; d = d < 4096 ? d + 1 : d * 3 / 2 + 7) {
        const csk_div v = csk_make_div((int)d);
        long checks[64];
        int n = 0;
        checks[n++] = 0, checks[n++] = 2147483647L, checks[n++] = 2147483646L;
        for (long k = 1; k <= 5 && n < 60; k++) {
            for (long off = -1; off <= 1; off++) {
                const long x = d * k + off;
                if (x >= 0 && x <= 2147483647L) checks[n++] = x;
            }
            const long big = 2147483647L / d * d;
            checks[n++] = big, checks[n++] = big - 1;
        }
        for (int i = 0; i < n; i++) wrong += csk_quot(v, (int)checks[i]) != (int)(checks[i] / d);
        for (int i = 0; i < (d < 4096 ? 300 : 3000); i++) {
            state ^= state << 13, state ^= state >> 7, state ^= state << 17;
            const long x = d < 4096 && i < 200 ? i : (long)(state % 2147483648ull);
            wrong += csk_quot(v, (int)x) != (int)(x / d);
        }
    }
    return wrong;
}
