/* kernels.h — condseg's CPU operations on plain float arrays: the backend operations of
 * backend_ops.h as cs_cpu_<op> (their conventions and documentation are there), and the
 * CPU's own runtime, convolution settings, im2col and softmax. Work is spread over the
 * OpenMP threads (the same pool OpenBLAS uses).
 */
#ifndef CONDSEG_KERNELS_H
#define CONDSEG_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" { /* the CUDA backend (C++) calls a few of these */
#endif

/* The hot loops are compiled for AVX-512, AVX2 + FMA and baseline x86-64; the loader
 * picks the best the CPU has (GCC function multi-versioning). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CS_VECTOR_CLONES \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CS_VECTOR_CLONES
#endif

/* ---- runtime ---------------------------------------------------------------------- */

/* Threads for our loops and for OpenBLAS (0: all cores), and flush-to-zero /
 * denormals-are-zero in every worker: subnormal activations are many times slower on
 * x86 and carry no information here. */
void cs_cpu_init(int n_threads);
int cs_cpu_threads(void);
/* A kernel whose own scratch memory cannot be allocated skips its work and records the
 * size here (thread-safe); the caller takes it (0: none) and reports an error instead of
 * the process aborting. */
void cs_cpu_note_alloc_failure(size_t bytes);
size_t cs_cpu_take_alloc_failure(void);
/* The OpenBLAS kernel set in use ("SkylakeX", "Haswell", ...). */
const char *cs_cpu_blas_core(void);
/* OpenBLAS picks its generic SSE3 kernels ("Prescott") on x86 CPUs it does not know,
 * which are the newest ones (Debian 12's 0.3.21 on Xeon 5th generation: 3-4x slower
 * sgemm). Returns the kernel set this CPU can run instead ("SKYLAKEX", "HASWELL"), or
 * NULL when OpenBLAS chose well or OPENBLAS_CORETYPE is set. */
const char *cs_cpu_better_blas_core(void);

/* ---- convolution ------------------------------------------------------------------ */

typedef struct {
    int n, c, h, w;          /* input */
    int o, k;                /* output channels, square kernel size */
    int stride, pad, dil;
    int ho, wo;              /* output size (cs_conv_geometry fills them in) */
    /* How, not what: */
    int bf16;                /* CPU: x, w (and dy) rounded to bfloat16, float32 accumulation */
    uint64_t weights_tag;    /* nonzero: w stays as it is while the tag lives, so the CPU may
                              * keep its reordered copy until cs_cpu_conv_forget(tag) */
    int winograd;            /* CPU, float32 inference: Winograd's algorithm allowed where it
                              * is measured faster (its sums differ from the direct ones) */
    int x_nhwc, y_nhwc;      /* x / y in NHWC order instead of NCHW (where
                              * conv2d_supports_nhwc says the shape allows it) */
    /* CPU, bf16 inference: room for x in NHWC bfloat16 (n*c*h*w values), which the
     * convolution fills when x_bf16_ready is 0 and takes as its input when 1, so that the
     * convolutions reading one map round it once. NULL: x is rounded into the workspace. */
    void *x_bf16;
    int x_bf16_ready;
} cs_conv_shape;

void cs_conv_geometry(cs_conv_shape *s);

/* Whether this CPU runs bfloat16 convolutions natively (AVX512-BF16 or AMX); NULL when it
 * does, else why not. */
const char *cs_cpu_bf16_unsupported(void);
/* NULL, or why bfloat16 will not be faster here: bfloat16 instructions without AMX. */
const char *cs_cpu_bf16_slow(void);
/* A fresh nonzero weights tag, and the end of one (its reordered weights are freed). */
uint64_t cs_cpu_conv_new_tag(void);
void cs_cpu_conv_forget(uint64_t weights_tag);
/* Which engine runs a convolution on the CPU: oneDNN's primitives, or im2col + OpenBLAS
 * sgemm ("onednn" or "sgemm"); CONDSEG_CONV_ENGINE=sgemm|onednn forces one for fp32. */
const char *cs_cpu_conv_engine(const cs_conv_shape *s);

/* im2col / col2im with dilation, PyTorch's Unfold layout: row (c*k + ky)*k + kx, column
 * (oy - row0)*wo + ox, for the output rows [row0, row0 + rows). col2im accumulates into
 * img (it is the adjoint of im2col, and CDFA's fold). */
void cs_cpu_im2col(float *col, const float *img, int c, int h, int w, int k, int stride,
                   int pad, int dil, int wo, int row0, int rows);
void cs_cpu_col2im_accumulate(float *img, const float *col, int c, int h, int w, int k,
                              int stride, int pad, int dil, int wo, int row0, int rows);

/* ---- attention (CDFA) -------------------------------------------------------------- */

/* Softmax over the last axis of rows x cols, and its backward (dx accumulates). */
void cs_cpu_softmax_rows(float *y, const float *x, size_t rows, int cols);
void cs_cpu_softmax_rows_backward(float *dx, const float *dy, const float *y, size_t rows,
                                  int cols);

/* ---- the backend operations (backend_ops.h), all of them ---------------------------- */

#define CS_OP(ret, op, params) ret cs_cpu_##op params;
#define CS_NHWC_OP CS_OP
#include "backend_ops.h"

#ifdef __cplusplus
}
#endif

#endif
