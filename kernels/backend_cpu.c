/* backend_cpu.c — the CPU backend: host memory and the cs_cpu_* kernels. */
#include <stdlib.h>
#include <string.h>

#include "backend.h"

static void *cpu_alloc(size_t bytes) {
    bytes = (bytes + 63) / 64 * 64;
    return aligned_alloc(64, bytes ? bytes : 64);
}

static void cpu_copy(void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }
static void cpu_zero(void *p, size_t bytes) { memset(p, 0, bytes); }
static void cpu_synchronize(void) {}

const cs_backend cs_backend_cpu = {
    .name = "cpu",
    .host_memory = 1,
    .alloc = cpu_alloc,
    .release = free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .zero = cpu_zero,
    .synchronize = cpu_synchronize,
    .conv2d_workspace = cs_cpu_conv2d_workspace,
    .conv2d_backward_workspace = cs_cpu_conv2d_backward_workspace,
    .conv2d_forward = cs_cpu_conv2d_forward,
    .conv2d_backward = cs_cpu_conv2d_backward,
    .conv2d_nhwc = cs_cpu_conv2d_nhwc,
    .nhwc_to_nchw = cs_cpu_nhwc_to_nchw,
    .upsample_bilinear_nhwc = cs_cpu_upsample_bilinear_nhwc,
    .copy_channels_nhwc = cs_cpu_copy_channels_nhwc,
    .global_avgpool_nhwc = cs_cpu_global_avgpool_nhwc,
    .global_maxpool_nhwc = cs_cpu_global_maxpool_nhwc,
    .channel_mean_nhwc = cs_cpu_channel_mean_nhwc,
    .channel_max_nhwc = cs_cpu_channel_max_nhwc,
    .mul_channel_nhwc = cs_cpu_mul_channel_nhwc,
    .mul_spatial_nhwc = cs_cpu_mul_spatial_nhwc,
    .batchnorm_stats_nhwc = cs_cpu_batchnorm_stats_nhwc,
    .channel_affine_nhwc = cs_cpu_channel_affine_nhwc,
    .batchnorm_backward_nhwc = cs_cpu_batchnorm_backward_nhwc,
    .nchw_to_nhwc = cs_cpu_nchw_to_nhwc,
    .upsample_bilinear_backward_nhwc = cs_cpu_upsample_bilinear_backward_nhwc,
    .copy_channels_backward_nhwc = cs_cpu_copy_channels_backward_nhwc,
    .global_avgpool_backward_nhwc = cs_cpu_global_avgpool_backward_nhwc,
    .global_maxpool_backward_nhwc = cs_cpu_global_maxpool_backward_nhwc,
    .channel_mean_backward_nhwc = cs_cpu_channel_mean_backward_nhwc,
    .channel_max_backward_nhwc = cs_cpu_channel_max_backward_nhwc,
    .mul_channel_backward_nhwc = cs_cpu_mul_channel_backward_nhwc,
    .mul_spatial_backward_nhwc = cs_cpu_mul_spatial_backward_nhwc,
    .channel_affine = cs_cpu_channel_affine,
    .bn_eval_affine = cs_cpu_bn_eval_affine,
    .batchnorm_stats = cs_cpu_batchnorm_stats,
    .bn_train_affine = cs_cpu_bn_train_affine,
    .batchnorm_backward = cs_cpu_batchnorm_backward,
    .relu = cs_cpu_relu,
    .sigmoid = cs_cpu_sigmoid,
    .add = cs_cpu_add,
    .mul_channel = cs_cpu_mul_channel,
    .mul_spatial = cs_cpu_mul_spatial,
    .copy_channels = cs_cpu_copy_channels,
    .accumulate = cs_cpu_accumulate,
    .relu_backward = cs_cpu_relu_backward,
    .sigmoid_backward = cs_cpu_sigmoid_backward,
    .mul_channel_backward = cs_cpu_mul_channel_backward,
    .mul_spatial_backward = cs_cpu_mul_spatial_backward,
    .copy_channels_backward = cs_cpu_copy_channels_backward,
    .maxpool3s2 = cs_cpu_maxpool3s2,
    .maxpool3s2_backward = cs_cpu_maxpool3s2_backward,
    .global_avgpool = cs_cpu_global_avgpool,
    .global_maxpool = cs_cpu_global_maxpool,
    .channel_mean = cs_cpu_channel_mean,
    .channel_max = cs_cpu_channel_max,
    .global_avgpool_backward = cs_cpu_global_avgpool_backward,
    .global_maxpool_backward = cs_cpu_global_maxpool_backward,
    .channel_mean_backward = cs_cpu_channel_mean_backward,
    .channel_max_backward = cs_cpu_channel_max_backward,
    .upsample_bilinear = cs_cpu_upsample_bilinear,
    .upsample_bilinear_backward = cs_cpu_upsample_bilinear_backward,
    .outlook_attention = cs_cpu_outlook_attention,
    .outlook_attention_backward = cs_cpu_outlook_attention_backward,
    .adam_update = cs_cpu_adam_update,
};
