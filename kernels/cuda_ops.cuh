/* cuda_ops.cuh — the CUDA backend's table of operations (backend.h), from the operation
 * families in *_cuda.cuh beside their CPU twins, as templates over the executor X
 * (cuda_exec.cuh): the per-thread work as functors, and the launch logic (grid sizes are
 * X's business), tiling and GEMM calls around them. The per-element math is cs_math.h's,
 * shared with the CPU kernels; the semantics (outputs first, gradients that accumulate,
 * NULL scale/shift) are kernels.h's.
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

/* Every operation of the table (the memory functions are the executor's own). */
template <class X>
struct CudaOps {
    static void fill(cs_backend *b) {
        b->conv2d_workspace = CudaConv<X>::conv2d_workspace;
        b->conv2d_backward_workspace = CudaConv<X>::conv2d_workspace;
        b->conv2d_forward = CudaConv<X>::conv2d_forward;
        b->conv2d_backward = CudaConv<X>::conv2d_backward;
        b->channel_affine = CudaElementwise<X>::channel_affine;
        b->bn_eval_affine = CudaBatchNorm<X>::bn_eval_affine;
        b->batchnorm_stats = CudaBatchNorm<X>::batchnorm_stats;
        b->bn_train_affine = CudaBatchNorm<X>::bn_train_affine;
        b->batchnorm_backward = CudaBatchNorm<X>::batchnorm_backward;
        b->relu = CudaElementwise<X>::relu;
        b->sigmoid = CudaElementwise<X>::sigmoid;
        b->add = CudaElementwise<X>::add;
        b->mul_channel = CudaElementwise<X>::mul_channel;
        b->mul_spatial = CudaElementwise<X>::mul_spatial;
        b->copy_channels = CudaElementwise<X>::copy_channels;
        b->accumulate = CudaElementwise<X>::accumulate;
        b->relu_backward = CudaElementwise<X>::relu_backward;
        b->sigmoid_backward = CudaElementwise<X>::sigmoid_backward;
        b->mul_channel_backward = CudaElementwise<X>::mul_channel_backward;
        b->mul_spatial_backward = CudaElementwise<X>::mul_spatial_backward;
        b->copy_channels_backward = CudaElementwise<X>::copy_channels_backward;
        b->maxpool3s2 = CudaPool<X>::maxpool3s2;
        b->maxpool3s2_backward = CudaPool<X>::maxpool3s2_backward;
        b->global_avgpool = CudaPool<X>::global_avgpool;
        b->global_maxpool = CudaPool<X>::global_maxpool;
        b->channel_mean = CudaPool<X>::channel_mean;
        b->channel_max = CudaPool<X>::channel_max;
        b->global_avgpool_backward = CudaPool<X>::global_avgpool_backward;
        b->global_maxpool_backward = CudaPool<X>::global_maxpool_backward;
        b->channel_mean_backward = CudaPool<X>::channel_mean_backward;
        b->channel_max_backward = CudaPool<X>::channel_max_backward;
        b->upsample_bilinear = CudaUpsample<X>::upsample_bilinear;
        b->upsample_bilinear_backward = CudaUpsample<X>::upsample_bilinear_backward;
        b->outlook_attention = CudaAttention<X>::outlook_attention;
        b->outlook_attention_backward = CudaAttention<X>::outlook_attention_backward;
        b->adam_update = CudaElementwise<X>::adam_update;
    }
};

#endif
