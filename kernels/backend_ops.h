/* backend_ops.h — the one list of the backend operations (an X-macro list), from which
 * kernels.h declares the CPU kernels (cs_cpu_<op>), backend.h lays out the table
 * (cs_backend.<op>), backend_cpu.c fills in the CPU's and cuda_ops.cuh the CUDA backend's
 * and its host emulation's. Adding an operation here makes every backend provide it (or
 * fail to build).
 *
 * No include guard, by design: the includer defines
 *   CS_OP(ret, op, (params))        an operation every backend has, and
 *   CS_NHWC_OP(ret, op, (params))   one of the optional NHWC set: a backend without it has
 *                                   NULL there and keeps every activation NCHW (the CUDA
 *                                   backend does), one with it has them all;
 * and this file undefines both at its end.
 *
 * Conventions, after llm.c: outputs first, then inputs, then sizes; maps are NCHW
 * (row-major) unless the name says _nhwc; no allocation inside (scratch memory is passed
 * in); every backward pass accumulates (+=) into the gradients it writes, of parameters and
 * inputs alike, so that a tensor used twice gets the sum (the tape hands out zeroed gradient
 * buffers). Names within a family share its stem: <op>, <op>_backward, <op>_nhwc (the
 * convolution: conv2d_forward and conv2d_backward, each with its _workspace).
 */

/* ---- convolution ------------------------------------------------------------------ */

/* Floats of scratch memory conv2d_forward needs for this shape (0 for 1x1/s1/p0). */
CS_OP(size_t, conv2d_forward_workspace, (const cs_conv_shape *s))
/* y[o] = conv(x, w)[o] * scale[o] + shift[o], then ReLU when relu != 0.
 * scale == NULL means 1 and shift == NULL means 0: a bias is (NULL, bias), an eval-mode
 * BatchNorm after the conv is its folded (scale, shift), so it costs no extra pass.
 * w is O x C x k x k. y must not alias x. */
CS_OP(void, conv2d_forward,
      (float *y, const float *x, const float *w, const float *scale, const float *shift,
       const cs_conv_shape *s, int relu, float *workspace))
/* Gradients of conv2d_forward without scale/shift/ReLU: dx (may be NULL), dw and db (may be
 * NULL) accumulate. Its scratch: conv2d_backward_workspace floats. */
CS_OP(size_t, conv2d_backward_workspace, (const cs_conv_shape *s))
CS_OP(void, conv2d_backward,
      (float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
       const cs_conv_shape *s, float *workspace))

/* ---- BatchNorm ------------------------------------------------------------------------ */

/* y[n,c,:] = x[n,c,:] * scale[c] + shift[c], then ReLU when relu != 0. y may alias x. */
CS_OP(void, channel_affine,
      (float *y, const float *x, const float *scale, const float *shift, int n, int c, int hw,
       int relu))
/* Eval-mode BatchNorm as a per-channel affine map. */
CS_OP(void, batchnorm_eval_affine,
      (float *scale, float *shift, const float *gamma, const float *beta, const float *mean,
       const float *var, int c))
/* Training-mode BatchNorm: per-channel mean and biased variance over (n, hw); the affine map
 * of those batch statistics with the running statistics' update (momentum 0.1, the
 * variance scaled by unbias = n / (n - 1)); and the backward pass through the batch
 * statistics. y (may be NULL) is the output of a fused ReLU, whose gradient mask it gives.
 * dx may be NULL; dx, dgamma, dbeta accumulate. */
CS_OP(void, batchnorm_stats, (float *mean, float *var, const float *x, int n, int c, int hw))
CS_OP(void, batchnorm_train_affine,
      (float *scale, float *shift, float *running_mean, float *running_var, const float *gamma,
       const float *beta, const float *batch_mean, const float *batch_var, int c, float unbias))
CS_OP(void, batchnorm_backward,
      (float *dx, float *dgamma, float *dbeta, const float *dy, const float *x, const float *y,
       const float *gamma, const float *mean, const float *var, int n, int c, int hw))

/* ---- elementwise ------------------------------------------------------------------ */

CS_OP(void, relu, (float *y, const float *x, size_t count))
CS_OP(void, sigmoid, (float *y, const float *x, size_t count))
/* y = a + b (y may alias a or b), then ReLU when relu != 0. */
CS_OP(void, add, (float *y, const float *a, const float *b, size_t count, int relu))
/* y[n,c,:] = x[n,c,:] * s[n,c] */
CS_OP(void, mul_channel, (float *y, const float *x, const float *s, int n, int c, int hw))
/* y[n,c,p] = x[n,c,p] * m[n,p] */
CS_OP(void, mul_spatial, (float *y, const float *x, const float *m, int n, int c, int hw))
/* Channel concatenation, one input at a time: copies x (n x cx x hw) into channels
 * [c0, c0 + cx) of y (n x cy x hw). */
CS_OP(void, copy_channels, (float *y, int cy, int c0, const float *x, int cx, int n, int hw))
/* dst += src: the gradient of a tensor used more than once. */
CS_OP(void, accumulate, (float *dst, const float *src, size_t count))
CS_OP(void, relu_backward, (float *dx, const float *dy, const float *y, size_t count))
CS_OP(void, sigmoid_backward, (float *dx, const float *dy, const float *y, size_t count))
CS_OP(void, mul_channel_backward,
      (float *dx, float *ds, const float *dy, const float *x, const float *s, int n, int c,
       int hw))
CS_OP(void, mul_spatial_backward,
      (float *dx, float *dm, const float *dy, const float *x, const float *m, int n, int c,
       int hw))
CS_OP(void, copy_channels_backward,
      (float *dx, int cx, const float *dy, int cy, int c0, int n, int hw))

/* ---- pooling and reductions ------------------------------------------------------- */

/* MaxPool2d(3, stride 2, padding 1), padding as -inf. */
CS_OP(void, maxpool3s2, (float *y, const float *x, int n, int c, int h, int w, int ho, int wo))
CS_OP(void, maxpool3s2_backward,
      (float *dx, const float *dy, const float *x, int n, int c, int h, int w, int ho, int wo))
/* Per (n, c): mean and max over the hw pixels. */
CS_OP(void, global_avgpool, (float *y, const float *x, int n, int c, int hw))
CS_OP(void, global_maxpool, (float *y, const float *x, int n, int c, int hw))
CS_OP(void, global_avgpool_backward, (float *dx, const float *dy, int n, int c, int hw))
CS_OP(void, global_maxpool_backward, (float *dx, const float *dy, const float *x, int n, int c,
                                      int hw))
/* Per (n, pixel): mean and max over the c channels. y is n x 1 x hw. */
CS_OP(void, channel_mean, (float *y, const float *x, int n, int c, int hw))
CS_OP(void, channel_max, (float *y, const float *x, int n, int c, int hw))
CS_OP(void, channel_mean_backward, (float *dx, const float *dy, int n, int c, int hw))
CS_OP(void, channel_max_backward, (float *dx, const float *dy, const float *x, int n, int c,
                                   int hw))

/* ---- resampling and attention (CDFA) ------------------------------------------------ */

/* Bilinear, align_corners=True, to (ho, wo). */
CS_OP(void, upsample_bilinear,
      (float *y, const float *x, int n, int c, int h, int w, int ho, int wo))
CS_OP(void, upsample_bilinear_backward,
      (float *dx, const float *dy, int n, int c, int h, int w, int ho, int wo))
/* Outlook attention without its projections (spec §2.9.1 steps 3.1-3.5):
 * logits a is n x (heads*81) x h x w (channel h*81 + i*9 + j), v is n x c x h x w with
 * c = heads * head_dim. prob (n x heads*81 x h x w) receives softmax_j(scale * a), which
 * the backward pass needs; y receives the folded result. */
CS_OP(void, outlook_attention,
      (float *y, float *prob, const float *v, const float *a, int n, int c, int heads, int h,
       int w, float scale))
/* Its backward from the saved probabilities: dv and da accumulate. */
CS_OP(void, outlook_attention_backward,
      (float *dv, float *da, const float *dy, const float *prob, const float *v, int n, int c,
       int heads, int h, int w, float scale))

/* ---- optimiser ---------------------------------------------------------------------- */

/* torch.optim.Adam's update of n values (see csm_adam). */
CS_OP(void, adam_update,
      (float *p, float *m, float *v, const float *g, int64_t n, float beta1, float beta2,
       float step_size, float bias_correction2_sqrt, float eps))

/* ---- NHWC activations (optional) ---------------------------------------------------------- */

/* Whether conv2d_forward of this shape honours cs_conv_shape.x_nhwc / y_nhwc (the CPU's
 * oneDNN engine: consecutive convolutions then skip the layout passes between them). */
CS_NHWC_OP(int, conv2d_supports_nhwc, (const cs_conv_shape *s))
/* y (n x c x hw, NCHW) = x (n x hw x c, NHWC): the way back. */
CS_NHWC_OP(void, nhwc_to_nchw, (float *y, const float *x, int n, int c, int hw))
/* The decoders' upsampling and concatenation, and the attention blocks' global poolings,
 * channel reductions and products, on NHWC maps; outputs of 1x1 or one-channel maps are the
 * same in both layouts. */
CS_NHWC_OP(void, upsample_bilinear_nhwc,
           (float *y, const float *x, int n, int c, int h, int w, int ho, int wo))
CS_NHWC_OP(void, copy_channels_nhwc,
           (float *y, int cy, int c0, const float *x, int cx, int n, int hw))
CS_NHWC_OP(void, global_avgpool_nhwc, (float *y, const float *x, int n, int c, int hw))
CS_NHWC_OP(void, global_maxpool_nhwc, (float *y, const float *x, int n, int c, int hw))
CS_NHWC_OP(void, channel_mean_nhwc, (float *y, const float *x, int n, int c, int hw))
CS_NHWC_OP(void, channel_max_nhwc, (float *y, const float *x, int n, int c, int hw))
CS_NHWC_OP(void, mul_channel_nhwc,
           (float *y, const float *x, const float *s, int n, int c, int hw))
CS_NHWC_OP(void, mul_spatial_nhwc,
           (float *y, const float *x, const float *m, int n, int c, int hw))
/* CDFA's outlook attention with v, a, y and prob all NHWC (the same arithmetic). */
CS_NHWC_OP(void, outlook_attention_nhwc,
           (float *y, float *prob, const float *v, const float *a, int n, int c, int heads, int h,
            int w, float scale))
/* Training on NHWC maps: BatchNorm's batch statistics, affine map and backward (the NCHW
 * forms' arithmetic, sums in double); y (NHWC) = x (NCHW), or += when accumulating: the
 * gradient of the layout pass; and the backward passes of the NHWC forms above. */
CS_NHWC_OP(void, batchnorm_stats_nhwc,
           (float *mean, float *var, const float *x, int n, int c, int hw))
CS_NHWC_OP(void, channel_affine_nhwc,
           (float *y, const float *x, const float *scale, const float *shift, int n, int c,
            int hw, int relu))
CS_NHWC_OP(void, batchnorm_backward_nhwc,
           (float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
            const float *y, const float *gamma, const float *mean, const float *var, int n,
            int c, int hw))
CS_NHWC_OP(void, nchw_to_nhwc, (float *y, const float *x, int n, int c, int hw, int accumulate))
CS_NHWC_OP(void, upsample_bilinear_backward_nhwc,
           (float *dx, const float *dy, int n, int c, int h, int w, int ho, int wo))
CS_NHWC_OP(void, copy_channels_backward_nhwc,
           (float *dx, int cx, const float *dy, int cy, int c0, int n, int hw))
CS_NHWC_OP(void, global_avgpool_backward_nhwc, (float *dx, const float *dy, int n, int c, int hw))
CS_NHWC_OP(void, global_maxpool_backward_nhwc,
           (float *dx, const float *dy, const float *x, int n, int c, int hw))
CS_NHWC_OP(void, channel_mean_backward_nhwc, (float *dx, const float *dy, int n, int c, int hw))
CS_NHWC_OP(void, channel_max_backward_nhwc,
           (float *dx, const float *dy, const float *x, int n, int c, int hw))
CS_NHWC_OP(void, mul_channel_backward_nhwc,
           (float *dx, float *ds, const float *dy, const float *x, const float *s, int n, int c,
            int hw))
CS_NHWC_OP(void, mul_spatial_backward_nhwc,
           (float *dx, float *dm, const float *dy, const float *x, const float *m, int n, int c,
            int hw))
CS_NHWC_OP(void, outlook_attention_backward_nhwc,
           (float *dv, float *da, const float *dy, const float *prob, const float *v, int n, int c,
            int heads, int h, int w, float scale))

#undef CS_OP
#undef CS_NHWC_OP
