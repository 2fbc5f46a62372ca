/* ops.c — the tensor-level operations the networks are written with: each checks shapes,
 * allocates its output, runs its kernel and, in training mode, records what its backward
 * pass needs on the tape; the backward functions sit next to their forwards. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cs_math.h"
#include "ctx.h"
#include "dist.h"
#include "graph.h"
#include "kernels.h"

static void check_same_shape(const cs_tensor *a, const cs_tensor *b, const char *op) {
    if (a->n != b->n || a->c != b->c || a->h != b->h || a->w != b->w)
        g_error("internal error: %s of %dx%dx%dx%d and %dx%dx%dx%d", op, a->n, a->c, a->h, a->w,
                b->n, b->c, b->h, b->w);
}

static size_t plane(const cs_tensor *t) { return (size_t)t->h * t->w; }

/* An input of an operation that needs NCHW (every one but the convolutions, BatchNorm and
 * the elementwise ones, which work in either layout): t becomes its NCHW form. */
#define NCHW(t) ((t) = cs_tensor_nchw(ctx, (t)))

/* Whether an operation may run its NHWC kernel `fn` on x: when the backend has it and, in
 * training, its NHWC backward `bwd` too. */
#define NHWC_FORWARD(x, fn, bwd) \
    ((x)->nhwc && ctx->be->fn && (!ctx->training || ctx->be->bwd))

/* Whether an operation that meets NCHW and NHWC inputs turns the NCHW ones NHWC (one
 * pass over those, and the result stays NHWC for the convolution that usually follows)
 * rather than the NHWC ones NCHW (that pass, and another in that convolution): in
 * inference, where the maps are not kept for a backward pass. */
#define JOIN_NHWC(ctx) (!(ctx)->training && (ctx)->be->nchw_to_nhwc && (ctx)->be->copy_channels_nhwc)

/* ---- convolution ------------------------------------------------------------------- */

/* A conv or Linear weight: O x C x k x k, or out x in (a 1x1 kernel). */
static const cs_param *conv_weight(const cs_ctx *ctx, const char *name, const cs_tensor *x,
                                   int *out_channels, int *kernel) {
    const cs_param *w = cs_param_get(ctx->params, name);
    if (w->ndim != 4 && w->ndim != 2) g_error("internal error: %s is not a weight", name);
    if (w->shape[1] != x->c)
        g_error("internal error: %s expects %d input channels, got %d", name,
                (int)w->shape[1], x->c);
    *out_channels = (int)w->shape[0];
    *kernel = w->ndim == 4 ? (int)w->shape[2] : 1;
    return w;
}

static cs_conv_shape conv_shape(const cs_ctx *ctx, const cs_tensor *x, int o, int k, int stride,
                                int pad, int dil) {
    cs_conv_shape s = {.n = x->n, .c = x->c, .h = x->h, .w = x->w, .o = o, .k = k,
                       .stride = stride, .pad = pad, .dil = dil, .bf16 = ctx->bf16,
                       .weights_tag = ctx->training ? 0 : ctx->weights_tag,
                       .winograd = !ctx->training};
    cs_conv_geometry(&s);
    return s;
}

static void conv_backward(cs_ctx *ctx, const cs_node *node) {
    cs_tensor *x = node->in[0];
    const cs_param *w = node->param[0], *b = node->param[1];
    const int k = w->ndim == 4 ? (int)w->shape[2] : 1;
    cs_conv_shape s = conv_shape(ctx, x, (int)w->shape[0], k, node->iarg[0], node->iarg[1],
                                 node->iarg[2]);
    s.x_nhwc = x->nhwc;
    s.y_nhwc = node->out->nhwc;
    ctx->be->conv2d_backward(cs_grad_of(ctx, x), cs_param_grad(ctx, w),
                             b ? cs_param_grad(ctx, b) : NULL, node->out->grad, x->data,
                             cs_param_values(ctx, w), &s,
                           cs_ctx_workspace(ctx, ctx->be->conv2d_backward_workspace(&s)));
}

/* y = conv(x) * scale + shift (per output channel), ReLU optional: the inference form. */
static cs_tensor *conv_run(cs_ctx *ctx, const cs_tensor *x, const char *weight_name,
                           const char *bias_name, int stride, int pad, int dil,
                           const float *scale, const float *shift, int relu) {
    int o, k;
    const cs_param *w = conv_weight(ctx, weight_name, x, &o, &k);
    const cs_param *b = bias_name ? cs_param_get(ctx->params, bias_name) : NULL;
    cs_conv_shape s = conv_shape(ctx, x, o, k, stride, pad, dil);
    /* A oneDNN convolution's output stays in its NHWC for the next convolution (and, in
     * bf16 training, its BatchNorm). Float32 training keeps NCHW maps: there its 1x1
     * convolutions run as one sgemm per image on the maps as they are, and NHWC made a
     * paper-preset step slower (bench_train batch 2, same session: 6.17 s against 5.74),
     * while bf16's steps gained (4.36 s against 4.57). */
    s.x_nhwc = x->nhwc;
    s.y_nhwc = (!ctx->training || s.bf16) && ctx->be->conv2d_supports_nhwc &&
               ctx->be->conv2d_supports_nhwc(&s);
    if (s.x_nhwc && !s.y_nhwc) {
        NCHW(x);
        s.x_nhwc = 0;
    }
    /* bf16 inference rounds each map once for all the convolutions that read it. */
    if (s.bf16 && s.y_nhwc && !ctx->training) {
        s.x_bf16_ready = x->bf16 != NULL;
        s.x_bf16 = cs_tensor_bf16_room(ctx, (cs_tensor *)x);
    }
    cs_tensor *y = cs_tensor_new(ctx, x->n, o, s.ho, s.wo);
    y->nhwc = s.y_nhwc;
    float *ws = cs_ctx_workspace(ctx, ctx->be->conv2d_forward_workspace(&s));
    gint64 t0 = cs_profile_start(ctx);
    ctx->be->conv2d_forward(y->data, x->data, cs_param_values(ctx, w), scale,
                            b ? cs_param_values(ctx, b) : shift, &s, relu, ws);
    const double flops = 2.0 * (double)cs_numel(y) * x->c * k * k;
    ctx->conv_flops += flops;
    if (ctx->profile) {
        char kind[32];
        g_snprintf(kind, sizeof kind, "conv%dx%d%s%s", k, k, dil > 1 ? " dilated" : "",
                   stride > 1 ? " s2" : "");
        cs_profile_end(ctx, kind, t0, 1e-9 * flops);
    }
    cs_node *node = cs_tape_record(ctx, "conv", conv_backward, y);
    if (node) {
        g_assert(!scale && !relu && (!shift || b)); /* training convolutions are plain */
        node->in[0] = (cs_tensor *)x;
        node->param[0] = w;
        node->param[1] = b;
        node->iarg[0] = stride, node->iarg[1] = pad, node->iarg[2] = dil;
    }
    return y;
}

cs_tensor *cs_conv2d(cs_ctx *ctx, const cs_tensor *x, const char *weight_name,
                     const char *bias_name, int stride, int pad, int dil) {
    return conv_run(ctx, x, weight_name, bias_name, stride, pad, dil, NULL, NULL, 0);
}

cs_tensor *cs_linear(cs_ctx *ctx, const cs_tensor *x, const char *prefix) {
    char weight[256], bias[256];
    g_snprintf(weight, sizeof weight, "%s.weight", prefix);
    g_snprintf(bias, sizeof bias, "%s.bias", prefix);
    return cs_conv2d(ctx, x, weight, bias, 1, 0, 1);
}

/* ---- BatchNorm ---------------------------------------------------------------------- */

typedef struct {
    const cs_param *gamma, *beta, *mean, *var, *count;
} bn_params;

static bn_params bn_lookup(const cs_ctx *ctx, const char *prefix, int c) {
    char name[256];
#define BN_FIELD(field) \
    (g_snprintf(name, sizeof name, "%s." field, prefix), cs_param_get(ctx->params, name))
    bn_params p = {BN_FIELD("weight"), BN_FIELD("bias"), BN_FIELD("running_mean"),
                   BN_FIELD("running_var"), BN_FIELD("num_batches_tracked")};
#undef BN_FIELD
    if (p.gamma->numel != c)
        g_error("internal error: %s has %d channels, input %d", prefix, (int)p.gamma->numel, c);
    return p;
}

/* Eval-mode BatchNorm as per-channel scale and shift: a 1 x 2c x 1 x 1 tensor (scale,
 * then shift) in the backend's memory. */
static cs_tensor *bn_eval_affine(cs_ctx *ctx, const bn_params *p, int c) {
    cs_tensor *affine = cs_tensor_new(ctx, 1, 2 * c, 1, 1);
    ctx->be->batchnorm_eval_affine(affine->data, affine->data + c,
                                   cs_param_values(ctx, p->gamma), cs_param_values(ctx, p->beta),
                                   cs_param_values(ctx, p->mean), cs_param_values(ctx, p->var), c);
    return affine;
}

/* ---- synchronised BatchNorm (a batch split over ranks, ctx->bn_reducer) ----
 * The statistics and the backward's channel sums are small (2c values): they go through
 * the host, so that every backend runs it with its ordinary BatchNorm operations. */

static void sum_over_ranks(const cs_ctx *ctx, double *values, int count) {
    ctx->bn_reducer->sum(values, count, ctx->bn_reducer->user);
}

/* The local batch's mean and biased variance (2c values in stats, m elements per
 * channel) replaced by the whole batch's; returns the whole batch's m. */
static double bn_sync_stats(cs_ctx *ctx, float *stats, int c, size_t m) {
    float *host = g_new(float, 2 * c);
    double *sums = g_new(double, 2 * c + 1);
    ctx->be->download(host, stats, sizeof(float) * 2 * c);
    for (int i = 0; i < c; i++) {
        const double mean = host[i], var = host[c + i];
        sums[i] = (double)m * mean;
        sums[c + i] = (double)m * (var + mean * mean);
    }
    sums[2 * c] = (double)m;
    sum_over_ranks(ctx, sums, 2 * c + 1);
    const double total = sums[2 * c];
    for (int i = 0; i < c; i++) {
        const double mean = sums[i] / total;
        host[i] = (float)mean;
        host[c + i] = (float)fmax(sums[c + i] / total - mean * mean, 0.0);
    }
    ctx->be->upload(stats, host, sizeof(float) * 2 * c);
    g_free(sums);
    g_free(host);
    return total;
}

/* The backward with the whole batch's channel means of g and g xhat. The local kernel runs
 * with its own batch's (its dgamma, dbeta are those sums); dx then gets the difference,
 * which per channel is affine in x: dx += scale x + shift. */
static void bn_sync_backward(cs_ctx *ctx, const cs_node *node, float *dx) {
    cs_tensor *x = node->in[0];
    const int c = x->c, hw = (int)plane(x);
    const double m = (double)x->n * hw;
    const float *stats = node->saved_tensor->data;
    cs_tensor *local = cs_tensor_new(ctx, 1, 2 * c, 1, 1);   /* sum g xhat, sum g */
    ctx->be->zero(local->data, sizeof(float) * 2 * c);
    const float *gamma = cs_param_values(ctx, node->param[0]);
    (x->nhwc ? ctx->be->batchnorm_backward_nhwc : ctx->be->batchnorm_backward)(
        dx, local->data, local->data + c, node->out->grad, x->data,
        node->iarg[0] ? node->out->data : NULL, gamma, stats, stats + c, x->n, c, hw);
    ctx->be->accumulate(cs_param_grad(ctx, node->param[0]), local->data, c);
    ctx->be->accumulate(cs_param_grad(ctx, node->param[1]), local->data + c, c);
    float *host = g_new(float, 5 * c);   /* sums (2c), gamma, mean, var */
    double *sums = g_new(double, 2 * c + 1);
    ctx->be->download(host, local->data, sizeof(float) * 2 * c);
    ctx->be->download(host + 2 * c, gamma, sizeof(float) * c);
    ctx->be->download(host + 3 * c, stats, sizeof(float) * 2 * c);
    for (int i = 0; i < 2 * c; i++) sums[i] = host[i];
    sums[2 * c] = m;
    sum_over_ranks(ctx, sums, 2 * c + 1);
    if (dx) {
        const double total = sums[2 * c];
        float *affine = g_new(float, 2 * c);
        for (int i = 0; i < c; i++) {
            const double invstd = csm_bn_invstd(host[4 * c + i]), k = host[2 * c + i] * invstd;
            const double d_gx = host[i] / m - sums[i] / total;
            const double d_g = host[c + i] / m - sums[c + i] / total;
            affine[i] = (float)(k * invstd * d_gx);
            affine[c + i] = (float)(k * (d_g - host[3 * c + i] * invstd * d_gx));
        }
        cs_tensor *coef = cs_tensor_new(ctx, 1, 2 * c, 1, 1);
        ctx->be->upload(coef->data, affine, sizeof(float) * 2 * c);
        /* delta in x's layout, that of dx */
        cs_tensor *delta = cs_tensor_new(ctx, x->n, c, x->h, x->w);
        (x->nhwc ? ctx->be->channel_affine_nhwc : ctx->be->channel_affine)(
            delta->data, x->data, coef->data, coef->data + c, x->n, c, hw, 0);
        ctx->be->accumulate(dx, delta->data, cs_numel(x));
        cs_release(ctx, delta);
        cs_release(ctx, coef);
        g_free(affine);
    }
    cs_release(ctx, local);
    g_free(sums);
    g_free(host);
}

static void bn_backward(cs_ctx *ctx, const cs_node *node) {
    cs_tensor *x = node->in[0];
    const int c = x->c;
    const float *stats = node->saved_tensor->data;
    if (ctx->bn_reducer) {
        bn_sync_backward(ctx, node, cs_grad_of(ctx, x));
        return;
    }
    (x->nhwc ? ctx->be->batchnorm_backward_nhwc : ctx->be->batchnorm_backward)(
        cs_grad_of(ctx, x), cs_param_grad(ctx, node->param[0]),
        cs_param_grad(ctx, node->param[1]), node->out->grad, x->data,
        node->iarg[0] ? node->out->data : NULL, cs_param_values(ctx, node->param[0]), stats,
        stats + c, x->n, c, (int)plane(x));
}

/* Training mode: normalise with the batch statistics, update the running statistics
 * (momentum 0.1, unbiased variance, spec §1.5) and count the batch. */
static cs_tensor *bn_train(cs_ctx *ctx, const cs_tensor *x, const bn_params *p, int relu) {
    const int c = x->c;
    const size_t m = (size_t)x->n * plane(x);
    const gboolean nhwc = x->nhwc && ctx->be->batchnorm_stats_nhwc;
    if (!nhwc) NCHW(x);
    cs_tensor *stats = cs_tensor_new(ctx, 1, 2 * c, 1, 1);   /* batch mean, biased var */
    cs_tensor *affine = cs_tensor_new(ctx, 1, 2 * c, 1, 1);  /* scale, shift */
    (nhwc ? ctx->be->batchnorm_stats_nhwc : ctx->be->batchnorm_stats)(
        stats->data, stats->data + c, x->data, x->n, c, (int)plane(x));
    const double count = ctx->bn_reducer ? bn_sync_stats(ctx, stats->data, c, m) : (double)m;
    ctx->be->batchnorm_train_affine(affine->data, affine->data + c,
                                    cs_param_values(ctx, p->mean), cs_param_values(ctx, p->var),
                                    cs_param_values(ctx, p->gamma), cs_param_values(ctx, p->beta),
                                    stats->data, stats->data + c, c,
                                    count > 1 ? (float)(count / (count - 1)) : 1.0f);
    *p->count->count += 1;
    cs_tensor *y = cs_tensor_new(ctx, x->n, c, x->h, x->w);
    y->nhwc = nhwc;
    PROFILED("batchnorm", (nhwc ? ctx->be->channel_affine_nhwc : ctx->be->channel_affine)(
                              y->data, x->data, affine->data, affine->data + c, x->n, c,
                              (int)plane(x), relu));
    cs_node *node = cs_tape_record(ctx, "batchnorm", bn_backward, y);
    node->in[0] = (cs_tensor *)x;
    node->param[0] = p->gamma;
    node->param[1] = p->beta;
    node->saved_tensor = stats;
    node->iarg[0] = relu;
    return y;
}

cs_tensor *cs_batchnorm(cs_ctx *ctx, const cs_tensor *x, const char *bn_prefix, int relu) {
    const bn_params p = bn_lookup(ctx, bn_prefix, x->c);
    if (ctx->training) return bn_train(ctx, x, &p, relu);
    NCHW(x);
    cs_tensor *affine = bn_eval_affine(ctx, &p, x->c);
    cs_tensor *y = cs_tensor_new(ctx, x->n, x->c, x->h, x->w);
    PROFILED("batchnorm", ctx->be->channel_affine(y->data, x->data, affine->data,
                                                  affine->data + x->c, x->n, x->c,
                                                  (int)plane(x), relu));
    cs_release(ctx, affine);
    return y;
}

cs_tensor *cs_conv2d_bn(cs_ctx *ctx, const cs_tensor *x, const char *weight_name,
                        const char *bn_prefix, int stride, int pad, int dil, int relu) {
    const int o = (int)cs_param_get(ctx->params, weight_name)->shape[0];
    const bn_params p = bn_lookup(ctx, bn_prefix, o);
    if (ctx->training) {
        cs_tensor *t = conv_run(ctx, x, weight_name, NULL, stride, pad, dil, NULL, NULL, 0);
        return bn_train(ctx, t, &p, relu);
    }
    /* Inference: the BatchNorm folded into the convolution's output pass. */
    cs_tensor *affine = bn_eval_affine(ctx, &p, o);
    cs_tensor *y = conv_run(ctx, x, weight_name, NULL, stride, pad, dil, affine->data,
                            affine->data + o, relu);
    cs_release(ctx, affine);
    return y;
}

/* ---- activations and elementwise ----------------------------------------------------- */

static void relu_backward(cs_ctx *ctx, const cs_node *node) {
    float *dx = cs_grad_of(ctx, node->in[0]);
    if (dx) ctx->be->relu_backward(dx, node->out->grad, node->out->data, cs_numel(node->out));
}

cs_tensor *cs_relu(cs_ctx *ctx, const cs_tensor *x) {
    cs_tensor *y = cs_tensor_new(ctx, x->n, x->c, x->h, x->w);
    y->nhwc = x->nhwc;
    PROFILED("relu", ctx->be->relu(y->data, x->data, cs_numel(x)));
    cs_node *node = cs_tape_record(ctx, "relu", relu_backward, y);
    if (node) node->in[0] = (cs_tensor *)x;
    return y;
}

static void sigmoid_backward(cs_ctx *ctx, const cs_node *node) {
    float *dx = cs_grad_of(ctx, node->in[0]);
    if (dx) ctx->be->sigmoid_backward(dx, node->out->grad, node->out->data, cs_numel(node->out));
}

cs_tensor *cs_sigmoid(cs_ctx *ctx, const cs_tensor *x) {
    cs_tensor *y = cs_tensor_new(ctx, x->n, x->c, x->h, x->w);
    y->nhwc = x->nhwc;
    PROFILED("sigmoid", ctx->be->sigmoid(y->data, x->data, cs_numel(x)));
    cs_node *node = cs_tape_record(ctx, "sigmoid", sigmoid_backward, y);
    if (node) node->in[0] = (cs_tensor *)x;
    return y;
}

static void add_backward(cs_ctx *ctx, const cs_node *node) {
    const size_t n = cs_numel(node->out);
    for (int i = 0; i < 2; i++) {
        float *d = cs_grad_of(ctx, node->in[i]);
        if (!d) continue;
        if (node->iarg[0]) ctx->be->relu_backward(d, node->out->grad, node->out->data, n);
        else ctx->be->accumulate(d, node->out->grad, n);
    }
}

cs_tensor *cs_add(cs_ctx *ctx, const cs_tensor *a, const cs_tensor *b, int relu) {
    check_same_shape(a, b, "add");
    if (a->nhwc != b->nhwc) {
        if (JOIN_NHWC(ctx)) cs_tensor_make_nhwc(ctx, a), cs_tensor_make_nhwc(ctx, b);
        else NCHW(a), NCHW(b);
    }
    cs_tensor *y = cs_tensor_new(ctx, a->n, a->c, a->h, a->w);
    y->nhwc = a->nhwc;
    PROFILED("add", ctx->be->add(y->data, a->data, b->data, cs_numel(a), relu));
    cs_node *node = cs_tape_record(ctx, "add", add_backward, y);
    if (node) {
        node->in[0] = (cs_tensor *)a, node->in[1] = (cs_tensor *)b;
        node->iarg[0] = relu;
    }
    return y;
}

static void mul_channel_backward(cs_ctx *ctx, const cs_node *node) {
    cs_tensor *x = node->in[0], *s = node->in[1];
    (x->nhwc ? ctx->be->mul_channel_backward_nhwc : ctx->be->mul_channel_backward)(
        cs_grad_of(ctx, x), cs_grad_of(ctx, s), node->out->grad, x->data, s->data, x->n, x->c,
        (int)plane(x));
}

cs_tensor *cs_mul_channel(cs_ctx *ctx, const cs_tensor *x, const cs_tensor *s) {
    if (s->n != x->n || s->c != x->c || s->h != 1 || s->w != 1)
        g_error("internal error: channel product with a %dx%dx%dx%d factor", s->n, s->c, s->h,
                s->w);
    const gboolean nhwc = NHWC_FORWARD(x, mul_channel_nhwc, mul_channel_backward_nhwc);
    if (!nhwc) NCHW(x);
    NCHW(s);
    cs_tensor *y = cs_tensor_new(ctx, x->n, x->c, x->h, x->w);
    y->nhwc = nhwc;
    PROFILED("mul_channel", (nhwc ? ctx->be->mul_channel_nhwc : ctx->be->mul_channel)(
                                y->data, x->data, s->data, x->n, x->c, (int)plane(x)));
    cs_node *node = cs_tape_record(ctx, "mul_channel", mul_channel_backward, y);
    if (node) node->in[0] = (cs_tensor *)x, node->in[1] = (cs_tensor *)s;
    return y;
}

static void mul_spatial_backward(cs_ctx *ctx, const cs_node *node) {
    cs_tensor *x = node->in[0], *m = node->in[1];
    (x->nhwc ? ctx->be->mul_spatial_backward_nhwc : ctx->be->mul_spatial_backward)(
        cs_grad_of(ctx, x), cs_grad_of(ctx, m), node->out->grad, x->data, m->data, x->n, x->c,
        (int)plane(x));
}

cs_tensor *cs_mul_spatial(cs_ctx *ctx, const cs_tensor *x, const cs_tensor *m) {
    if (m->n != x->n || m->c != 1 || m->h != x->h || m->w != x->w)
        g_error("internal error: spatial product with a %dx%dx%dx%d factor", m->n, m->c, m->h,
                m->w);
    const gboolean nhwc = NHWC_FORWARD(x, mul_spatial_nhwc, mul_spatial_backward_nhwc);
    if (!nhwc) NCHW(x);
    NCHW(m);
    cs_tensor *y = cs_tensor_new(ctx, x->n, x->c, x->h, x->w);
    y->nhwc = nhwc;
    PROFILED("mul_spatial", (nhwc ? ctx->be->mul_spatial_nhwc : ctx->be->mul_spatial)(
                                y->data, x->data, m->data, x->n, x->c, (int)plane(x)));
    cs_node *node = cs_tape_record(ctx, "mul_spatial", mul_spatial_backward, y);
    if (node) node->in[0] = (cs_tensor *)x, node->in[1] = (cs_tensor *)m;
    return y;
}

static void concat_backward(cs_ctx *ctx, const cs_node *node) {
    const cs_tensor *y = node->out;
    for (int i = 0, c0 = 0; i < node->n_in; c0 += node->in[i]->c, i++) {
        float *d = cs_grad_of(ctx, node->in[i]);
        if (d)
            (y->nhwc ? ctx->be->copy_channels_backward_nhwc : ctx->be->copy_channels_backward)(
                d, node->in[i]->c, y->grad, y->c, c0, y->n, (int)plane(y));
    }
}

cs_tensor *cs_concat(cs_ctx *ctx, int count, const cs_tensor *const *parts) {
    g_assert(count >= 1 && count <= 4);
    int c = 0;
    for (int i = 0; i < count; i++) {
        if (parts[i]->n != parts[0]->n || parts[i]->h != parts[0]->h ||
            parts[i]->w != parts[0]->w)
            g_error("internal error: concatenating maps of different sizes");
        c += parts[i]->c;
    }
    const cs_tensor *in[4];
    gboolean nhwc = TRUE, any_nhwc = FALSE;
    for (int i = 0; i < count; i++) {
        nhwc = nhwc && NHWC_FORWARD(parts[i], copy_channels_nhwc, copy_channels_backward_nhwc);
        any_nhwc = any_nhwc || parts[i]->nhwc;
    }
    if (!nhwc && any_nhwc && JOIN_NHWC(ctx)) {
        for (int i = 0; i < count; i++) cs_tensor_make_nhwc(ctx, parts[i]);
        nhwc = TRUE;
    }
    for (int i = 0; i < count; i++) in[i] = nhwc ? parts[i] : cs_tensor_nchw(ctx, parts[i]);
    cs_tensor *y = cs_tensor_new(ctx, in[0]->n, c, in[0]->h, in[0]->w);
    y->nhwc = nhwc;
    for (int i = 0, c0 = 0; i < count; c0 += in[i]->c, i++) {
        PROFILED("concat", (nhwc ? ctx->be->copy_channels_nhwc : ctx->be->copy_channels)(
                               y->data, c, c0, in[i]->data, in[i]->c, in[0]->n,
                               (int)plane(in[0])));
    }
    cs_node *node = cs_tape_record(ctx, "concat", concat_backward, y);
    if (node) {
        node->n_in = count;
        for (int i = 0; i < count; i++) node->in[i] = (cs_tensor *)in[i];
    }
    return y;
}

/* ---- resampling and pooling ----------------------------------------------------------- */

static void upsample_backward(cs_ctx *ctx, const cs_node *node) {
    cs_tensor *x = node->in[0];
    float *dx = cs_grad_of(ctx, x);
    if (dx)
        (x->nhwc ? ctx->be->upsample_bilinear_backward_nhwc : ctx->be->upsample_bilinear_backward)(
            dx, node->out->grad, x->n, x->c, x->h, x->w, node->out->h, node->out->w);
}

cs_tensor *cs_upsample(cs_ctx *ctx, const cs_tensor *x, int factor) {
    const gboolean nhwc = NHWC_FORWARD(x, upsample_bilinear_nhwc, upsample_bilinear_backward_nhwc);
    if (!nhwc) NCHW(x);
    cs_tensor *y = cs_tensor_new(ctx, x->n, x->c, x->h * factor, x->w * factor);
    y->nhwc = nhwc;
    PROFILED("upsample_bilinear",
             (nhwc ? ctx->be->upsample_bilinear_nhwc : ctx->be->upsample_bilinear)(
                 y->data, x->data, x->n, x->c, x->h, x->w, y->h, y->w));
    cs_node *node = cs_tape_record(ctx, "upsample_bilinear", upsample_backward, y);
    if (node) node->in[0] = (cs_tensor *)x;
    return y;
}

static void maxpool_backward(cs_ctx *ctx, const cs_node *node) {
    cs_tensor *x = node->in[0];
    float *dx = cs_grad_of(ctx, x);
    if (dx) ctx->be->maxpool3s2_backward(dx, node->out->grad, x->data, x->n, x->c, x->h, x->w,
                                       node->out->h, node->out->w);
}

cs_tensor *cs_maxpool3s2(cs_ctx *ctx, const cs_tensor *x) {
    NCHW(x);
    cs_tensor *y = cs_tensor_new(ctx, x->n, x->c, (x->h - 1) / 2 + 1, (x->w - 1) / 2 + 1);
    PROFILED("maxpool3s2",
             ctx->be->maxpool3s2(y->data, x->data, x->n, x->c, x->h, x->w, y->h, y->w));
    cs_node *node = cs_tape_record(ctx, "maxpool3s2", maxpool_backward, y);
    if (node) node->in[0] = (cs_tensor *)x;
    return y;
}

/* The four reductions of the attention blocks share one backward dispatcher. */
enum { REDUCE_GLOBAL_AVG, REDUCE_GLOBAL_MAX, REDUCE_CHANNEL_MEAN, REDUCE_CHANNEL_MAX };

static void reduce_backward(cs_ctx *ctx, const cs_node *node) {
    cs_tensor *x = node->in[0];
    float *dx = cs_grad_of(ctx, x);
    if (!dx) return;
    const cs_backend *be = ctx->be;
    const float *dy = node->out->grad;
    const int hw = (int)plane(x), nhwc = x->nhwc;
    switch (node->iarg[0]) {
    case REDUCE_GLOBAL_AVG:
        (nhwc ? be->global_avgpool_backward_nhwc : be->global_avgpool_backward)(dx, dy, x->n,
                                                                               x->c, hw);
        break;
    case REDUCE_GLOBAL_MAX:
        (nhwc ? be->global_maxpool_backward_nhwc : be->global_maxpool_backward)(
            dx, dy, x->data, x->n, x->c, hw);
        break;
    case REDUCE_CHANNEL_MEAN:
        (nhwc ? be->channel_mean_backward_nhwc : be->channel_mean_backward)(dx, dy, x->n, x->c,
                                                                           hw);
        break;
    default:
        (nhwc ? be->channel_max_backward_nhwc : be->channel_max_backward)(dx, dy, x->data, x->n,
                                                                         x->c, hw);
        break;
    }
}

typedef void (*reduce_fn)(float *y, const float *x, int n, int c, int hw);

/* The kernel of a reduction for maps in NCHW or NHWC (NULL: the backend has none). */
static reduce_fn reduce_kernel(const cs_backend *be, int kind, gboolean nhwc) {
    switch (kind) {
    case REDUCE_GLOBAL_AVG: return nhwc ? be->global_avgpool_nhwc : be->global_avgpool;
    case REDUCE_GLOBAL_MAX: return nhwc ? be->global_maxpool_nhwc : be->global_maxpool;
    case REDUCE_CHANNEL_MEAN: return nhwc ? be->channel_mean_nhwc : be->channel_mean;
    default: return nhwc ? be->channel_max_nhwc : be->channel_max;
    }
}

static cs_tensor *reduce(cs_ctx *ctx, const cs_tensor *x, int kind) {
    static const char *const names[] = {"global_avgpool", "global_maxpool", "channel_mean",
                                        "channel_max"};
    const int global = kind == REDUCE_GLOBAL_AVG || kind == REDUCE_GLOBAL_MAX;
    /* Every reduction's NHWC backward comes with its forward (backend.h). */
    const int nhwc_ok = !ctx->training || ctx->be->global_avgpool_backward_nhwc;
    reduce_fn fn = x->nhwc && nhwc_ok ? reduce_kernel(ctx->be, kind, TRUE) : NULL;
    if (!fn) {
        NCHW(x);
        fn = reduce_kernel(ctx->be, kind, FALSE);
    }
    /* The result, n x c x 1 x 1 or n x 1 x h x w, is the same in either layout. */
    cs_tensor *y = global ? cs_tensor_new(ctx, x->n, x->c, 1, 1)
                          : cs_tensor_new(ctx, x->n, 1, x->h, x->w);
    gint64 t0 = cs_profile_start(ctx);
    fn(y->data, x->data, x->n, x->c, (int)plane(x));
    cs_profile_end(ctx, names[kind], t0, 0.0);
    cs_node *node = cs_tape_record(ctx, names[kind], reduce_backward, y);
    if (node) {
        node->in[0] = (cs_tensor *)x;
        node->iarg[0] = kind;
    }
    return y;
}

cs_tensor *cs_global_avgpool(cs_ctx *ctx, const cs_tensor *x) {
    return reduce(ctx, x, REDUCE_GLOBAL_AVG);
}
cs_tensor *cs_global_maxpool(cs_ctx *ctx, const cs_tensor *x) {
    return reduce(ctx, x, REDUCE_GLOBAL_MAX);
}
cs_tensor *cs_channel_mean(cs_ctx *ctx, const cs_tensor *x) {
    return reduce(ctx, x, REDUCE_CHANNEL_MEAN);
}
cs_tensor *cs_channel_max(cs_ctx *ctx, const cs_tensor *x) {
    return reduce(ctx, x, REDUCE_CHANNEL_MAX);
}

/* ---- CDFA's outlook attention -------------------------------------------------------- */

static void outlook_backward(cs_ctx *ctx, const cs_node *node) {
    cs_tensor *v = node->in[0], *a = node->in[1];
    float *dv = cs_grad_of(ctx, v), *da = cs_grad_of(ctx, a);
    g_assert(dv && da);
    (v->nhwc ? ctx->be->outlook_attention_backward_nhwc : ctx->be->outlook_attention_backward)(
        dv, da, node->out->grad, node->saved_tensor->data, v->data, v->n, v->c, node->iarg[0],
        v->h, v->w, node->farg);
}

cs_tensor *cs_outlook_attention(cs_ctx *ctx, const cs_tensor *v, const cs_tensor *a,
                                int heads) {
    if (a->n != v->n || a->c != heads * 81 || a->h != v->h || a->w != v->w || v->c % heads)
        g_error("internal error: outlook attention over %d heads of %dx%dx%dx%d logits", heads,
                a->n, a->c, a->h, a->w);
    /* NHWC when both inputs are (the outputs of oneDNN convolutions): no layout pass over
     * the 324-channel logits. */
    const gboolean nhwc = a->nhwc && NHWC_FORWARD(v, outlook_attention_nhwc,
                                                  outlook_attention_backward_nhwc);
    if (!nhwc) NCHW(v), NCHW(a);
    cs_tensor *y = cs_tensor_new(ctx, v->n, v->c, v->h, v->w);
    y->nhwc = nhwc;
    /* The probabilities (in the maps' layout) are only kept for the backward pass. */
    cs_tensor *prob = ctx->training ? cs_tensor_new(ctx, a->n, a->c, a->h, a->w) : NULL;
    const float scale = 1.0f / sqrtf((float)(v->c / heads));
    PROFILED("outlook_attention",
             (nhwc ? ctx->be->outlook_attention_nhwc : ctx->be->outlook_attention)(
                 y->data, prob ? prob->data : NULL, v->data, a->data, v->n, v->c, heads, v->h,
                 v->w, scale));
    cs_node *node = cs_tape_record(ctx, "outlook_attention", outlook_backward, y);
    if (node) {
        node->in[0] = (cs_tensor *)v, node->in[1] = (cs_tensor *)a;
        node->saved_tensor = prob;
        node->iarg[0] = heads;
        node->farg = scale;
    }
    return y;
}
