/* cuda_ops.cuh — the CUDA backend's table of operations (backend.h, filled in from
 * backend_ops.h's list), from the operation families in *_cuda.cuh beside their CPU twins,
 * as templates over the executor X (cuda_exec.cuh): the per-thread work as functors, and
 * the launch logic (grid sizes are X's business), tiling and GEMM calls around them. The
 * per-element math is cs_math.h's, shared with the CPU kernels; the semantics (outputs
 * first, gradients that accumulate, NULL scale/shift) are backend_ops.h's.
 *
 * Every functor writes only its own element(s): the backward passes of upsampling,
 * max-pooling, col2im and outlook attention are gathers (each input gradient sums what it
 * contributed to) rather than scatters, so no atomics are used and results do not depend
 * on scheduling. Reductions combine in a fixed order (cuda_exec.cuh). Where cheap, the
 * order of the CPU kernel's sums is kept, so that the two backends differ by little more
 * than FMA contraction and the GEMMs' summation order.
 */
#ifndef CONDSEG_CUDA_OPS_CUH
#define CONDSEG_CUDA_OPS_CUH

extern "C" {
#include "backend.h"
}
#include "attention_cuda.cuh"
#include "batchnorm_cuda.cuh"
#include "conv_cuda.cuh"
#include "cuda_exec.cuh"
#include "elementwise_cuda.cuh"
#include "pool_cuda.cuh"
#include "upsample_cuda.cuh"

/* The operation families together, so that every operation of backend_ops.h is
 * CudaOps<X>::<op>. */
template <class X>
struct CudaOps : CudaConv<X>,
                 CudaBatchNorm<X>,
                 CudaElementwise<X>,
                 CudaPool<X>,
                 CudaUpsample<X>,
                 CudaAttention<X> {
    /* A backend's table: its name and memory functions, the operations X runs; the
     * optional NHWC ones are NULL (activations stay NCHW on the GPU). */
    static cs_backend table(const char *name, decltype(cs_backend::alloc) alloc,
                            decltype(cs_backend::release) release,
                            decltype(cs_backend::upload) upload,
                            decltype(cs_backend::download) download,
                            decltype(cs_backend::zero) zero,
                            decltype(cs_backend::synchronize) synchronize) {
        cs_backend b = {};
        b.name = name;
        b.host_memory = 0;
        b.alloc = alloc;
        b.release = release;
        b.upload = upload;
        b.download = download;
        b.zero = zero;
        b.synchronize = synchronize;
#define CS_OP(ret, op, params) b.op = CudaOps::op;
#define CS_NHWC_OP(ret, op, params) b.op = NULL;
#include "backend_ops.h"
        return b;
    }
};

#endif
