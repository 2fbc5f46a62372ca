/* cuda_exec.cuh — what the CUDA backend's operations are built from, independent of where
 * they run: per-thread work as functors (a struct whose operator()(i) does element i),
 * row reductions with a fixed combination order, and row-major GEMMs. Each operation
 * (the *_cuda.cuh files, assembled in cuda_ops.cuh) is a template over an executor X that
 * provides
 *
 *   X::for_each(n, f)                 f(i) for every i in [0, n), in any order, in parallel
 *   X::reduce_blocks<R>(rows, len, splits, term, fin, partial)
 *                                     per (row, split): R-combination of term(row, j) over
 *                                     the split's part of [0, len); fin(row, v) when
 *                                     splits == 1, else partial[row * splits + split] = v
 *   X::gemm_cm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)
 *                                     cublasSgemm's column-major semantics
 *   X::gemm_cm_batched(..., stride_a, ..., stride_b, ..., stride_c, batch)
 *                                     cublasSgemmStridedBatched's
 *   X::scratch(slot, bytes)           memory of the executor kept between operations (NULL
 *                                     when out of memory: noted, the operation returns)
 *   X::sm_count()                     how many blocks run at once (for splitting rows)
 *
 * Two executors exist: DeviceExec (backend_cuda.cu: CUDA kernels, cuBLAS, one stream) and
 * HostExec (backend_cuda_emulated.cu: the same functors in host loops, the column-major
 * GEMM through OpenBLAS). The second makes every index computation, tiling decision and
 * GEMM argument of the CUDA backend testable on machines without a GPU.
 */
#ifndef CONDSEG_CUDA_EXEC_CUH
#define CONDSEG_CUDA_EXEC_CUH

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#define CSK_HD __host__ __device__

/* An element count as the int the functors index with; larger arrays (over 2^31 floats,
 * 8 GB) are beyond what one operation of these networks ever touches. */
int csk_int_count(size_t n, const char *what);

/* ---- division by a divisor fixed for a whole kernel ----------------------------------
 * Integer division costs some 20 instructions on a GPU, and the index arithmetic of im2col
 * and its kin would spend more time dividing than moving memory. A divisor known when the
 * kernel is launched becomes a multiply-high, add and shift (Granlund & Montgomery, as
 * PyTorch's IntDivider): exact for every 0 <= n < 2^31. */
struct csk_div {
    unsigned d, magic, shift;
};

static inline csk_div csk_make_div(int d) {
    csk_div v;
    v.d = (unsigned)(d > 0 ? d : 1);
    v.shift = 0;
    while (v.shift < 32 && (1ull << v.shift) < v.d) v.shift++;
    v.magic = (unsigned)(((1ull << 32) * ((1ull << v.shift) - v.d)) / v.d + 1);
    return v;
}

static inline CSK_HD int csk_quot(const csk_div &v, int n) {
#ifdef __CUDA_ARCH__
    const unsigned t = __umulhi((unsigned)n, v.magic);
#else
    const unsigned t = (unsigned)(((unsigned long long)(unsigned)n * v.magic) >> 32);
#endif
    return (int)((t + (unsigned)n) >> v.shift);
}

/* Whether (y, x) lies in an h x w map. */
static inline CSK_HD int csk_inside(int y, int x, int h, int w) {
    return y >= 0 && y < h && x >= 0 && x < w;
}

/* ---- reductions ---------------------------------------------------------------------
 * A reducer R names its value type V (plain data: it lives in shared memory), the
 * identity and an associative combination. */

/* Two sums at once (BatchNorm backward: sum of g and of g * xhat), in double as the CPU
 * kernels sum. */
struct csk_sum2 {
    double a, b;
};

struct SumReducer {
    typedef csk_sum2 V;
    static CSK_HD V identity() {
        V v = {0.0, 0.0};
        return v;
    }
    static CSK_HD V combine(V x, V y) {
        V v = {x.a + y.a, x.b + y.b};
        return v;
    }
    static CSK_HD V one(double a) {
        V v = {a, 0.0};
        return v;
    }
};

/* The maximum and where it is: on ties the lower index wins, which is the first maximum in
 * scan order, the one the CPU kernels pick. */
struct csk_argmax {
    float v;
    int i;
};

struct ArgMaxReducer {
    typedef csk_argmax V;
    static CSK_HD V identity() {
        V v = {-INFINITY, INT_MAX};
        return v;
    }
    static CSK_HD V combine(V x, V y) {
        if (x.v > y.v) return x;
        if (y.v > x.v) return y;
        return x.i <= y.i ? x : y;
    }
};

/* Second pass of a split reduction: combines each row's partial results in split order. */
template <class R, class Fin>
struct FinishPartials {
    const typename R::V *partial;
    int splits;
    Fin fin;
    CSK_HD void operator()(int row) const {
        typename R::V v = R::identity();
        for (int s = 0; s < splits; s++) v = R::combine(v, partial[(size_t)row * splits + s]);
        fin(row, v);
    }
};

/* Scratch slots of an executor: each holds one operation's temporary data until the next
 * operation that uses the same slot (one stream: operations never overlap). */
enum {
    CSK_SCRATCH_PARTIAL = 0,   /* partial results of split reductions */
    CSK_SCRATCH_ROWS = 1,      /* per-channel doubles (BatchNorm) */
    CSK_SCRATCH_PROB = 2,      /* outlook attention probabilities in inference */
    CSK_SCRATCH_SLOTS = 3
};

/* Splits per row so that about 4 blocks per multiprocessor have work, with at least 4096
 * elements each: BatchNorm over 64 channels of a 12 x 128 x 128 batch would otherwise run
 * on 64 blocks. */
static inline int csk_row_splits(int rows, int len, int sms) {
    const long target = 4L * sms;
    if (rows >= target || len <= 8192) return 1;
    long splits = (target + rows - 1) / rows;
    const long most = (len + 4095) / 4096;
    if (splits > most) splits = most;
    return splits < 1 ? 1 : (int)splits;
}

/* fin(row, R-combination of term(row, j) for j < len) for every row < rows. */
template <class X, class R, class Term, class Fin>
static void csk_reduce_rows(int rows, int len, const Term &term, const Fin &fin) {
    if (rows <= 0) return;
    const int splits = csk_row_splits(rows, len, X::sm_count());
    if (splits == 1) {
        X::template reduce_blocks<R>(rows, len, 1, term, fin, (typename R::V *)NULL);
        return;
    }
    typename R::V *partial = (typename R::V *)X::scratch(
        CSK_SCRATCH_PARTIAL, sizeof(typename R::V) * (size_t)rows * splits);
    if (!partial) return; /* out of memory: noted, the run ends with the error */
    X::template reduce_blocks<R>(rows, len, splits, term, fin, partial);
    FinishPartials<R, Fin> finish = {partial, splits, fin};
    X::for_each(rows, finish);
}

/* The part [begin, end) of [0, len) that split s of `splits` covers. */
static inline CSK_HD void csk_split_range(int len, int splits, int s, int *begin, int *end) {
    const int chunk = (len + splits - 1) / splits;
    *begin = s * chunk < len ? s * chunk : len;
    *end = *begin + chunk < len ? *begin + chunk : len;
}

/* ---- common terms and results of row reductions ------------------------------------- */

/* Row `row` of a rows x len matrix. */
struct RowSumTerm {
    const float *x;
    int len;
    CSK_HD csk_sum2 operator()(int row, int j) const {
        return SumReducer::one(x[(size_t)row * len + j]);
    }
};

struct RowDotTerm {
    const float *a, *b;
    int len;
    CSK_HD csk_sum2 operator()(int row, int j) const {
        const size_t k = (size_t)row * len + j;
        return SumReducer::one((double)a[k] * b[k]);
    }
};

struct RowArgMaxTerm {
    const float *x;
    int len;
    CSK_HD csk_argmax operator()(int row, int j) const {
        csk_argmax v = {x[(size_t)row * len + j], j};
        return v;
    }
};

struct AddRowSumFin {
    float *dst;
    CSK_HD void operator()(int row, csk_sum2 v) const { dst[row] += (float)v.a; }
};

struct MeanFin {
    float *y;
    double count;
    CSK_HD void operator()(int row, csk_sum2 v) const { y[row] = (float)(v.a / count); }
};

struct MaxFin {
    float *y;
    CSK_HD void operator()(int row, csk_argmax v) const { y[row] = v.v; }
};

/* ---- GEMM ----------------------------------------------------------------------------- */

/* Row-major C (M x N, ldc) = alpha op(A) op(B) + beta C with op(A) M x K and op(B) K x N,
 * as the column-major GEMM of the transposes: C^T = op(B)^T op(A)^T. A row-major matrix is
 * its transpose in column-major order, so the operands swap places and keep their
 * transposition flags. beta == 0 does not read C. */
template <class X>
static void csk_gemm_rm(int trans_a, int trans_b, int m, int n, int k, float alpha,
                        const float *a, int lda, const float *b, int ldb, float beta, float *c,
                        int ldc) {
    X::gemm_cm(trans_b, trans_a, n, m, k, alpha, b, ldb, a, lda, beta, c, ldc);
}

/* The same for `batch` products, operand i at a + i * stride_a etc. (stride 0: shared). */
template <class X>
static void csk_gemm_rm_batched(int trans_a, int trans_b, int m, int n, int k, float alpha,
                                const float *a, int lda, long long stride_a, const float *b,
                                int ldb, long long stride_b, float beta, float *c, int ldc,
                                long long stride_c, int batch) {
    X::gemm_cm_batched(trans_b, trans_a, n, m, k, alpha, b, ldb, stride_b, a, lda, stride_a,
                       beta, c, ldc, stride_c, batch);
}

#endif
