/* backend.h — the table through which the model code runs its operations: one per
 * device (the CPU here, CUDA in backend_cuda.cu), so that the networks, the tape and the
 * optimiser never branch on the device. Every pointer an operation receives is memory of
 * that backend (for the CPU, ordinary host memory). The operations have the signatures
 * and the semantics of kernels.h's cs_cpu_* functions, which are the CPU backend's
 * implementation and the reference the CUDA one is tested against.
 */
#ifndef CONDSEG_BACKEND_H
#define CONDSEG_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

typedef struct cs_backend cs_backend;

struct cs_backend {
    const char *name;               /* "cpu", "cuda" */
    int host_memory;                /* its memory is the host's: no copies needed */

    /* ---- memory ---- */
    void *(*alloc)(size_t bytes);   /* 64-byte aligned; NULL when out of memory */
    void (*release)(void *p);
    void (*upload)(void *dst, const void *src, size_t bytes);
    void (*download)(void *dst, const void *src, size_t bytes);
    void (*zero)(void *p, size_t bytes);
    void (*synchronize)(void);

    /* ---- convolution ---- */
    size_t (*conv2d_workspace)(const cs_conv_shape *s);
    size_t (*conv2d_backward_workspace)(const cs_conv_shape *s);
    void (*conv2d_forward)(float *y, const float *x, const float *w, const float *scale,
                           const float *shift, const cs_conv_shape *s, int relu,
                           float *workspace);
    void (*conv2d_backward)(float *dx, float *dw, float *db, const float *dy, const float *x,
                            const float *w, const cs_conv_shape *s, float *workspace);
    /* Optional (NULL: every activation is NCHW): whether conv2d_forward of this shape
     * honours cs_conv_shape.x_nhwc / y_nhwc, and the way back to NCHW. */
    int (*conv2d_nhwc)(const cs_conv_shape *s);
    void (*nhwc_to_nchw)(float *y, const float *x, int n, int c, int hw);
    /* The decoders' upsampling and concatenation on NHWC maps (set with conv2d_nhwc). */
    void (*upsample_bilinear_nhwc)(float *y, const float *x, int n, int c, int h, int w, int ho,
                                   int wo);
    void (*copy_channels_nhwc)(float *y, int cy, int c0, const float *x, int cx, int n, int hw);
    /* The attention blocks' reductions and products on NHWC maps (set with conv2d_nhwc). */
    void (*global_avgpool_nhwc)(float *y, const float *x, int n, int c, int hw);
    void (*global_maxpool_nhwc)(float *y, const float *x, int n, int c, int hw);
    void (*channel_mean_nhwc)(float *y, const float *x, int n, int c, int hw);
    void (*channel_max_nhwc)(float *y, const float *x, int n, int c, int hw);
    void (*mul_channel_nhwc)(float *y, const float *x, const float *s, int n, int c, int hw);
    void (*mul_spatial_nhwc)(float *y, const float *x, const float *m, int n, int c, int hw);
    /* Training on NHWC maps (set with conv2d_nhwc): BatchNorm's batch statistics, affine
     * map and backward, and the gradient of the layout pass (y in NHWC = x in NCHW, or
     * += when accumulating). */
    void (*batchnorm_stats_nhwc)(float *mean, float *var, const float *x, int n, int c, int hw);
    void (*channel_affine_nhwc)(float *y, const float *x, const float *scale, const float *shift,
                                int n, int c, int hw, int relu);
    void (*batchnorm_backward_nhwc)(float *dx, float *dgamma, float *dbeta, const float *dy,
                                    const float *x, const float *y, const float *gamma,
                                    const float *mean, const float *var, int n, int c, int hw);
    void (*nchw_to_nhwc)(float *y, const float *x, int n, int c, int hw, int accumulate);
    /* The backward passes of the NHWC upsampling, concatenation, reductions and products
     * (each set with its forward, so that training may use that forward). */
    void (*upsample_bilinear_backward_nhwc)(float *dx, const float *dy, int n, int c, int h,
                                            int w, int ho, int wo);
    void (*copy_channels_backward_nhwc)(float *dx, int cx, const float *dy, int cy, int c0,
                                        int n, int hw);
    void (*global_avgpool_backward_nhwc)(float *dx, const float *dy, int n, int c, int hw);
    void (*global_maxpool_backward_nhwc)(float *dx, const float *dy, const float *x, int n,
                                         int c, int hw);
    void (*channel_mean_backward_nhwc)(float *dx, const float *dy, int n, int c, int hw);
    void (*channel_max_backward_nhwc)(float *dx, const float *dy, const float *x, int n, int c,
                                      int hw);
    void (*mul_channel_backward_nhwc)(float *dx, float *ds, const float *dy, const float *x,
                                      const float *s, int n, int c, int hw);
    void (*mul_spatial_backward_nhwc)(float *dx, float *dm, const float *dy, const float *x,
                                      const float *m, int n, int c, int hw);

    /* ---- BatchNorm ---- */
    void (*channel_affine)(float *y, const float *x, const float *scale, const float *shift,
                           int n, int c, int hw, int relu);
    void (*bn_eval_affine)(float *scale, float *shift, const float *gamma, const float *beta,
                           const float *mean, const float *var, int c);
    void (*batchnorm_stats)(float *mean, float *var, const float *x, int n, int c, int hw);
    void (*bn_train_affine)(float *scale, float *shift, float *running_mean,
                            float *running_var, const float *gamma, const float *beta,
                            const float *batch_mean, const float *batch_var, int c,
                            float unbias);
    void (*batchnorm_backward)(float *dx, float *dgamma, float *dbeta, const float *dy,
                               const float *x, const float *y, const float *gamma,
                               const float *mean, const float *var, int n, int c, int hw);

    /* ---- elementwise ---- */
    void (*relu)(float *y, const float *x, size_t count);
    void (*sigmoid)(float *y, const float *x, size_t count);
    void (*add)(float *y, const float *a, const float *b, size_t count, int relu);
    void (*mul_channel)(float *y, const float *x, const float *s, int n, int c, int hw);
    void (*mul_spatial)(float *y, const float *x, const float *m, int n, int c, int hw);
    void (*copy_channels)(float *y, int cy, int c0, const float *x, int cx, int n, int hw);
    void (*accumulate)(float *dst, const float *src, size_t count);
    void (*relu_backward)(float *dx, const float *dy, const float *y, size_t count);
    void (*sigmoid_backward)(float *dx, const float *dy, const float *y, size_t count);
    void (*mul_channel_backward)(float *dx, float *ds, const float *dy, const float *x,
                                 const float *s, int n, int c, int hw);
    void (*mul_spatial_backward)(float *dx, float *dm, const float *dy, const float *x,
                                 const float *m, int n, int c, int hw);
    void (*copy_channels_backward)(float *dx, int cx, const float *dy, int cy, int c0, int n,
                                   int hw);

    /* ---- pooling and reductions ---- */
    void (*maxpool3s2)(float *y, const float *x, int n, int c, int h, int w, int ho, int wo);
    void (*maxpool3s2_backward)(float *dx, const float *dy, const float *x, int n, int c, int h,
                                int w, int ho, int wo);
    void (*global_avgpool)(float *y, const float *x, int n, int c, int hw);
    void (*global_maxpool)(float *y, const float *x, int n, int c, int hw);
    void (*channel_mean)(float *y, const float *x, int n, int c, int hw);
    void (*channel_max)(float *y, const float *x, int n, int c, int hw);
    void (*global_avgpool_backward)(float *dx, const float *dy, int n, int c, int hw);
    void (*global_maxpool_backward)(float *dx, const float *dy, const float *x, int n, int c,
                                    int hw);
    void (*channel_mean_backward)(float *dx, const float *dy, int n, int c, int hw);
    void (*channel_max_backward)(float *dx, const float *dy, const float *x, int n, int c,
                                 int hw);

    /* ---- resampling and attention ---- */
    void (*upsample_bilinear)(float *y, const float *x, int n, int c, int h, int w, int ho,
                              int wo);
    void (*upsample_bilinear_backward)(float *dx, const float *dy, int n, int c, int h, int w,
                                       int ho, int wo);
    void (*outlook_attention)(float *y, float *prob, const float *v, const float *a, int n,
                              int c, int heads, int h, int w, float scale);
    void (*outlook_attention_backward)(float *dv, float *da, const float *dy, const float *prob,
                                       const float *v, int n, int c, int heads, int h, int w,
                                       float scale);

    /* ---- optimiser ---- */
    void (*adam_update)(float *p, float *m, float *v, const float *g, int64_t n, float beta1,
                        float beta2, float step_size, float bias_correction2_sqrt, float eps);
};

extern const cs_backend cs_backend_cpu;

#endif
