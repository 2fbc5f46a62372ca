/* graph.h — activations and the operations the networks are written with.
 *
 * A cs_ctx runs a network eagerly: each operation allocates its output from the
 * context's caching pool, computes it, and (in training mode, later) records itself on
 * a tape for the backward pass. Network code reads like the PyTorch forward: it names
 * its parameters by their state-dict names and never touches memory management beyond
 * scopes: cs_scope_end releases every activation created since cs_scope_begin except
 * the ones it returns, so inference holds only what is still needed, while training
 * keeps everything the backward pass needs.
 */
#ifndef CONDSEG_GRAPH_H
#define CONDSEG_GRAPH_H

#include <glib.h>
#include <stddef.h>

#include "params.h"

/* An activation: n x c x h x w float32, NCHW; in training, its gradient. */
typedef struct cs_tensor {
    float *data;
    float *grad;              /* allocated (zeroed) when the backward pass first needs it */
    int n, c, h, w;
    gboolean requires_grad;   /* FALSE for inputs */
    gboolean nhwc;            /* data (and gradient) in NHWC order: a oneDNN convolution's
                               * output, kept so for the next convolution or BatchNorm */
    struct cs_tensor *nchw;   /* training: its NCHW copy, once made (cs_tensor_nchw) */
    void *bf16;               /* bf16 inference: its NHWC bfloat16 copy, made by the first
                               * convolution that reads it (cs_tensor_bf16_room) */
} cs_tensor;

static inline size_t cs_numel(const cs_tensor *t) { return (size_t)t->n * t->c * t->h * t->w; }

typedef struct cs_ctx cs_ctx;

/* Called with each named module output (tests compare them with the reference). */
typedef void (*cs_probe_fn)(const char *name, const cs_tensor *t, void *user_data);

struct cs_backend;
/* A context running on `backend` (NULL: the CPU); the parameters must have been put on
 * that backend (cs_paramset_to_backend). */
cs_ctx *cs_ctx_new(cs_paramset *params, const struct cs_backend *backend);
void cs_ctx_free(cs_ctx *ctx);
/* Releases every activation (memory stays in the pool for the next run). */
void cs_ctx_reset(cs_ctx *ctx);
const cs_paramset *cs_ctx_params(const cs_ctx *ctx);
/* Training mode (between runs only): BatchNorm uses and updates batch statistics, and
 * every operation is recorded for cs_backward. */
void cs_ctx_set_training(cs_ctx *ctx, gboolean training);
gboolean cs_ctx_training(const cs_ctx *ctx);
/* A batch split over ranks (dist.h's cs_reducer, NULL: none): training-mode BatchNorm
 * then normalises with the whole batch's statistics and back-propagates through them. */
struct cs_reducer;
void cs_ctx_set_bn_reducer(cs_ctx *ctx, const struct cs_reducer *reducer);
/* Convolution inputs rounded to bfloat16 (float32 accumulation) on the CPU backend. */
void cs_ctx_set_bf16(cs_ctx *ctx, gboolean bf16);
/* Nonzero: the weights do not change while the tag lives (cs_cpu_conv_new_tag), so
 * inference may keep them reordered for the convolutions; 0 (the default): they may. */
void cs_ctx_set_weights_tag(cs_ctx *ctx, uint64_t tag);
/* t in NCHW order, what every operation but the convolutions, BatchNorm and the
 * elementwise ones needs: t itself when it is, or when inference may convert it in place
 * (its values are unchanged); in training a copy recorded on the tape (the NHWC tensor and
 * its gradient stay as the operations that read them saw them), made once. */
const cs_tensor *cs_tensor_nchw(cs_ctx *ctx, const cs_tensor *t);
/* Inference with NHWC kernels only: t's storage turned NHWC in place. */
void cs_tensor_make_nhwc(cs_ctx *ctx, const cs_tensor *t);
/* Room for t's values in bfloat16 (t->bf16, kept until t is released). */
void *cs_tensor_bf16_room(cs_ctx *ctx, cs_tensor *t);
/* The gradient of t (zeroed when first asked for), in the backend's memory. */
float *cs_tensor_grad(cs_ctx *ctx, cs_tensor *t);
/* Host <-> tensor copies (plain copies on the CPU): t's values to `host`, and `host`
 * into t's gradient (how a loss computed on the host hands dL/dt to the backward pass). */
void cs_tensor_read(cs_ctx *ctx, const cs_tensor *t, float *host);
void cs_tensor_set_grad(cs_ctx *ctx, cs_tensor *t, const float *host);
/* Back-propagates from the gradients set on the outputs through every recorded operation;
 * parameter gradients accumulate into the parameter store's grads. */
void cs_backward(cs_ctx *ctx);
void cs_ctx_set_probe(cs_ctx *ctx, cs_probe_fn fn, void *user_data);
void cs_probe(cs_ctx *ctx, const char *name, const cs_tensor *t);
/* FLOPs (2 x multiply-adds) of the forward convolutions and Linear layers run since the
 * context was made, the way spec §3.3 counts them. */
double cs_ctx_conv_flops(const cs_ctx *ctx);
/* Bytes held by the pool (in use + cached) and the most ever held. */
size_t cs_ctx_pool_bytes(const cs_ctx *ctx);
/* Runs fn(ctx, data), one whole forward (and backward) pass, so that memory running out
 * in it (an activation, the workspace, a kernel's scratch) ends the pass: the context is
 * reset and FALSE returned with a CS_ERROR_MEMORY error saying what could not be had,
 * instead of the process aborting (a GIMP plug-in would take GIMP's work with it). */
typedef void (*cs_ctx_run_fn)(cs_ctx *ctx, void *data);
gboolean cs_ctx_run_guarded(cs_ctx *ctx, cs_ctx_run_fn fn, void *data, GError **error);

cs_tensor *cs_tensor_new(cs_ctx *ctx, int n, int c, int h, int w);
cs_tensor *cs_tensor_from(cs_ctx *ctx, const float *data, int n, int c, int h, int w);
/* Gives t's memory back now (inference; in training nothing is given back before
 * cs_ctx_reset); t must not be used afterwards. */
void cs_release(cs_ctx *ctx, cs_tensor *t);

typedef unsigned cs_scope;
cs_scope cs_scope_begin(cs_ctx *ctx);
/* Releases what was created since `scope` except `keep` (which may be NULL). */
cs_tensor *cs_scope_end(cs_ctx *ctx, cs_scope scope, cs_tensor *keep);

/* ---- operations ---------------------------------------------------------------------
 * Parameters are named by their state-dict names; a conv's kernel size comes from its
 * weight's shape. */

/* Conv2d (no bias when bias_name is NULL). */
cs_tensor *cs_conv2d(cs_ctx *ctx, const cs_tensor *x, const char *weight_name,
                     const char *bias_name, int stride, int pad, int dil);
/* Conv2d (no bias) followed by the BatchNorm2d `bn_prefix` and an optional ReLU; in
 * inference the BatchNorm is folded into the convolution's output pass. */
cs_tensor *cs_conv2d_bn(cs_ctx *ctx, const cs_tensor *x, const char *weight_name,
                        const char *bn_prefix, int stride, int pad, int dil, int relu);
/* BatchNorm2d on its own, optional ReLU. */
cs_tensor *cs_batchnorm(cs_ctx *ctx, const cs_tensor *x, const char *bn_prefix, int relu);
/* nn.Linear on each pixel's channel vector: `prefix`.weight (out x in), `prefix`.bias. */
cs_tensor *cs_linear(cs_ctx *ctx, const cs_tensor *x, const char *prefix);

cs_tensor *cs_relu(cs_ctx *ctx, const cs_tensor *x);
cs_tensor *cs_sigmoid(cs_ctx *ctx, const cs_tensor *x);
/* a + b, then ReLU when relu != 0. */
cs_tensor *cs_add(cs_ctx *ctx, const cs_tensor *a, const cs_tensor *b, int relu);
/* x * s with s n x c x 1 x 1 (channel attention). */
cs_tensor *cs_mul_channel(cs_ctx *ctx, const cs_tensor *x, const cs_tensor *s);
/* x * m with m n x 1 x h x w (spatial attention). */
cs_tensor *cs_mul_spatial(cs_ctx *ctx, const cs_tensor *x, const cs_tensor *m);
/* Channel concatenation of `count` tensors, first one first. */
cs_tensor *cs_concat(cs_ctx *ctx, int count, const cs_tensor *const *parts);
/* Bilinear, align_corners=True, by an integer factor. */
cs_tensor *cs_upsample(cs_ctx *ctx, const cs_tensor *x, int factor);
/* MaxPool2d(3, stride 2, padding 1). */
cs_tensor *cs_maxpool3s2(cs_ctx *ctx, const cs_tensor *x);
cs_tensor *cs_global_avgpool(cs_ctx *ctx, const cs_tensor *x);
cs_tensor *cs_global_maxpool(cs_ctx *ctx, const cs_tensor *x);
cs_tensor *cs_channel_mean(cs_ctx *ctx, const cs_tensor *x);
cs_tensor *cs_channel_max(cs_ctx *ctx, const cs_tensor *x);
/* CDFA's outlook attention pass before its projection (spec §2.9.1 steps 3.1-3.5):
 * values v (n x c x h x w), raw attention logits a (n x heads*81 x h x w). */
cs_tensor *cs_outlook_attention(cs_ctx *ctx, const cs_tensor *v, const cs_tensor *a,
                                int heads);

#endif
