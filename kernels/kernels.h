/* kernels.h — condseg's CPU operations on plain float arrays (NCHW, row-major).
 *
 * Conventions, after llm.c: outputs first, then inputs, then sizes; no allocation
 * inside (scratch memory is passed in); every backward pass accumulates (+=) into the
 * gradients it writes, of parameters and inputs alike, so that a tensor used twice gets
 * the sum (the tape hands out zeroed gradient buffers). Work is spread over the OpenMP
 * threads (the same pool OpenBLAS uses).
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
    int x_nhwc, y_nhwc;      /* x / y in NHWC order instead of NCHW (where
                              * cs_cpu_conv2d_nhwc says the shape allows it) */
} cs_conv_shape;

void cs_conv_geometry(cs_conv_shape *s);

/* Whether this CPU runs bfloat16 convolutions natively (AVX512-BF16 or AMX); NULL when it
 * does, else why not. */
const char *cs_cpu_bf16_unsupported(void);
/* A fresh nonzero weights tag, and the end of one (its reordered weights are freed). */
uint64_t cs_cpu_conv_new_tag(void);
void cs_cpu_conv_forget(uint64_t weights_tag);
/* Which engine runs a convolution on the CPU: oneDNN's primitives, or im2col + OpenBLAS
 * sgemm ("onednn" or "sgemm"); CONDSEG_CONV_ENGINE=sgemm|onednn forces one for fp32. */
const char *cs_cpu_conv_engine(const cs_conv_shape *s);
/* Whether cs_cpu_conv2d_forward takes x and gives y in NHWC for this shape (the oneDNN
 * engine: consecutive convolutions then skip the layout passes between them). */
int cs_cpu_conv2d_nhwc(const cs_conv_shape *s);
/* y (n x c x hw, NCHW) = x (n x hw x c, NHWC). */
void cs_cpu_nhwc_to_nchw(float *y, const float *x, int n, int c, int hw);
/* cs_cpu_upsample_bilinear and cs_cpu_copy_channels on NHWC maps (layout_cpu.c). */
void cs_cpu_upsample_bilinear_nhwc(float *y, const float *x, int n, int c, int h, int w, int ho,
                                   int wo);
void cs_cpu_copy_channels_nhwc(float *y, int cy, int c0, const float *x, int cx, int n, int hw);
/* The global poolings, channel reductions and products of the attention blocks on NHWC
 * maps (layout_cpu.c); outputs of 1x1 or one-channel maps are the same in both layouts. */
void cs_cpu_global_avgpool_nhwc(float *y, const float *x, int n, int c, int hw);
void cs_cpu_global_maxpool_nhwc(float *y, const float *x, int n, int c, int hw);
void cs_cpu_channel_mean_nhwc(float *y, const float *x, int n, int c, int hw);
void cs_cpu_channel_max_nhwc(float *y, const float *x, int n, int c, int hw);
void cs_cpu_mul_channel_nhwc(float *y, const float *x, const float *s, int n, int c, int hw);
void cs_cpu_mul_spatial_nhwc(float *y, const float *x, const float *m, int n, int c, int hw);
/* Training on NHWC maps: BatchNorm (the same arithmetic as the NCHW forms below, sums in
 * double), the affine map, and y (NHWC) = x (NCHW), or += when accumulating: the layout
 * pass's gradient. */
void cs_cpu_batchnorm_stats_nhwc(float *mean, float *var, const float *x, int n, int c, int hw);
void cs_cpu_channel_affine_nhwc(float *y, const float *x, const float *scale, const float *shift,
                                int n, int c, int hw, int relu);
void cs_cpu_batchnorm_backward_nhwc(float *dx, float *dgamma, float *dbeta, const float *dy,
                                    const float *x, const float *y, const float *gamma,
                                    const float *mean, const float *var, int n, int c, int hw);
void cs_cpu_nchw_to_nhwc(float *y, const float *x, int n, int c, int hw, int accumulate);
/* The backward passes of the NHWC forms above (gradients accumulate). */
void cs_cpu_upsample_bilinear_backward_nhwc(float *dx, const float *dy, int n, int c, int h,
                                            int w, int ho, int wo);
void cs_cpu_copy_channels_backward_nhwc(float *dx, int cx, const float *dy, int cy, int c0,
                                        int n, int hw);
void cs_cpu_global_avgpool_backward_nhwc(float *dx, const float *dy, int n, int c, int hw);
void cs_cpu_global_maxpool_backward_nhwc(float *dx, const float *dy, const float *x, int n,
                                         int c, int hw);
void cs_cpu_channel_mean_backward_nhwc(float *dx, const float *dy, int n, int c, int hw);
void cs_cpu_channel_max_backward_nhwc(float *dx, const float *dy, const float *x, int n, int c,
                                      int hw);
void cs_cpu_mul_channel_backward_nhwc(float *dx, float *ds, const float *dy, const float *x,
                                      const float *s, int n, int c, int hw);
void cs_cpu_mul_spatial_backward_nhwc(float *dx, float *dm, const float *dy, const float *x,
                                      const float *m, int n, int c, int hw);

/* Floats of scratch memory cs_cpu_conv2d_forward needs for this shape (0 for 1x1/s1/p0). */
size_t cs_cpu_conv2d_workspace(const cs_conv_shape *s);

/* y[o] = conv(x, w)[o] * scale[o] + shift[o], then ReLU when relu != 0.
 * scale == NULL means 1 and shift == NULL means 0: a bias is (NULL, bias), an eval-mode
 * BatchNorm after the conv is its folded (scale, shift), so it costs no extra pass.
 * w is O x C x k x k. y must not alias x. */
void cs_cpu_conv2d_forward(float *y, const float *x, const float *w, const float *scale,
                           const float *shift, const cs_conv_shape *s, int relu,
                           float *workspace);

/* im2col / col2im with dilation, PyTorch's Unfold layout: row (c*k + ky)*k + kx, column
 * (oy - row0)*wo + ox, for the output rows [row0, row0 + rows). col2im accumulates into
 * img (it is the adjoint of im2col, and CDFA's fold). */
void cs_cpu_im2col(float *col, const float *img, int c, int h, int w, int k, int stride,
                   int pad, int dil, int wo, int row0, int rows);
void cs_cpu_col2im_accumulate(float *img, const float *col, int c, int h, int w, int k,
                              int stride, int pad, int dil, int wo, int row0, int rows);

/* Gradients of cs_cpu_conv2d_forward without scale/shift/ReLU: dx (may be NULL), dw and
 * db (may be NULL) accumulate. Its scratch: cs_cpu_conv2d_backward_workspace floats. */
size_t cs_cpu_conv2d_backward_workspace(const cs_conv_shape *s);
void cs_cpu_conv2d_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                            const float *w, const cs_conv_shape *s, float *workspace);

/* ---- per-channel affine (eval BatchNorm), activations, elementwise ---------------- */

/* y[n,c,:] = x[n,c,:] * scale[c] + shift[c], then ReLU when relu != 0. y may alias x. */
void cs_cpu_channel_affine(float *y, const float *x, const float *scale, const float *shift,
                           int n, int c, int hw, int relu);
void cs_cpu_relu(float *y, const float *x, size_t count);
void cs_cpu_sigmoid(float *y, const float *x, size_t count);
/* y = a + b (y may alias a or b), then ReLU when relu != 0. */
void cs_cpu_add(float *y, const float *a, const float *b, size_t count, int relu);
/* y[n,c,:] = x[n,c,:] * s[n,c] */
void cs_cpu_mul_channel(float *y, const float *x, const float *s, int n, int c, int hw);
/* y[n,c,p] = x[n,c,p] * m[n,p] */
void cs_cpu_mul_spatial(float *y, const float *x, const float *m, int n, int c, int hw);
/* Channel concatenation, one input at a time: copies x (n x cx x hw) into channels
 * [c0, c0 + cx) of y (n x cy x hw). */
void cs_cpu_copy_channels(float *y, int cy, int c0, const float *x, int cx, int n, int hw);

/* Training-mode BatchNorm: per-channel mean and biased variance over (n, hw); and the
 * backward pass through the batch statistics. y (may be NULL) is the output of a fused
 * ReLU, whose gradient mask it gives. dx may be NULL; dx, dgamma, dbeta accumulate. */
void cs_cpu_batchnorm_stats(float *mean, float *var, const float *x, int n, int c, int hw);
void cs_cpu_batchnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                               const float *x, const float *y, const float *gamma,
                               const float *mean, const float *var, int n, int c, int hw);

/* Eval-mode BatchNorm as a per-channel affine map; and in training mode the affine map of
 * the batch statistics with the running statistics' update (momentum 0.1, the variance
 * scaled by unbias = n / (n - 1)). */
void cs_cpu_bn_eval_affine(float *scale, float *shift, const float *gamma, const float *beta,
                           const float *mean, const float *var, int c);
void cs_cpu_bn_train_affine(float *scale, float *shift, float *running_mean, float *running_var,
                            const float *gamma, const float *beta, const float *batch_mean,
                            const float *batch_var, int c, float unbias);

/* torch.optim.Adam's update of n values (see csm_adam). */
void cs_cpu_adam_update(float *p, float *m, float *v, const float *g, int64_t n, float beta1,
                        float beta2, float step_size, float bias_correction2_sqrt, float eps);

/* Backward passes of the elementwise operations; input gradients accumulate. */
void cs_cpu_accumulate(float *dst, const float *src, size_t count);
void cs_cpu_relu_backward(float *dx, const float *dy, const float *y, size_t count);
void cs_cpu_sigmoid_backward(float *dx, const float *dy, const float *y, size_t count);
void cs_cpu_mul_channel_backward(float *dx, float *ds, const float *dy, const float *x,
                                 const float *s, int n, int c, int hw);
void cs_cpu_mul_spatial_backward(float *dx, float *dm, const float *dy, const float *x,
                                 const float *m, int n, int c, int hw);
void cs_cpu_copy_channels_backward(float *dx, int cx, const float *dy, int cy, int c0, int n,
                                   int hw);

/* ---- pooling and reductions ------------------------------------------------------- */

/* MaxPool2d(3, stride 2, padding 1), padding as -inf. */
void cs_cpu_maxpool3s2(float *y, const float *x, int n, int c, int h, int w, int ho, int wo);
/* Per (n, c): mean and max over the hw pixels. */
void cs_cpu_global_avgpool(float *y, const float *x, int n, int c, int hw);
void cs_cpu_global_maxpool(float *y, const float *x, int n, int c, int hw);
/* Per (n, pixel): mean and max over the c channels. y is n x 1 x hw. */
void cs_cpu_channel_mean(float *y, const float *x, int n, int c, int hw);
void cs_cpu_channel_max(float *y, const float *x, int n, int c, int hw);

void cs_cpu_maxpool3s2_backward(float *dx, const float *dy, const float *x, int n, int c, int h,
                                int w, int ho, int wo);
void cs_cpu_global_avgpool_backward(float *dx, const float *dy, int n, int c, int hw);
void cs_cpu_global_maxpool_backward(float *dx, const float *dy, const float *x, int n, int c,
                                    int hw);
void cs_cpu_channel_mean_backward(float *dx, const float *dy, int n, int c, int hw);
void cs_cpu_channel_max_backward(float *dx, const float *dy, const float *x, int n, int c,
                                 int hw);

/* ---- resampling --------------------------------------------------------------------- */

/* Bilinear, align_corners=True, to (ho, wo). */
void cs_cpu_upsample_bilinear(float *y, const float *x, int n, int c, int h, int w, int ho,
                              int wo);

void cs_cpu_upsample_bilinear_backward(float *dx, const float *dy, int n, int c, int h, int w,
                                       int ho, int wo);

/* ---- attention (CDFA) -------------------------------------------------------------- */

/* Softmax over the last axis of rows x cols, and its backward (dx accumulates). */
void cs_cpu_softmax_rows(float *y, const float *x, size_t rows, int cols);
void cs_cpu_softmax_rows_backward(float *dx, const float *dy, const float *y, size_t rows,
                                  int cols);

/* Outlook attention without its projections (spec §2.9.1 steps 3.1-3.5):
 * logits a is n x (heads*81) x h x w (channel h*81 + i*9 + j), v is n x c x h x w with
 * c = heads * head_dim. prob (n x heads*81 x h x w) receives softmax_j(scale * a), which
 * the backward pass needs; y receives the folded result. */
void cs_cpu_outlook_attention(float *y, float *prob, const float *v, const float *a, int n,
                              int c, int heads, int h, int w, float scale);
/* Its backward from the saved probabilities: dv and da accumulate. */
void cs_cpu_outlook_attention_backward(float *dv, float *da, const float *dy, const float *prob,
                                       const float *v, int n, int c, int heads, int h, int w,
                                       float scale);

#ifdef __cplusplus
}
#endif

#endif
