/* blocks.c — the building blocks every network of the ConDSeg design is made of: named
 * parameter declarations, CBR (conv + BatchNorm + optional ReLU, spec §2.1), channel
 * attention (§2.2) and spatial attention (§2.3). */
#include <stdarg.h>

#include "net.h"

const char *cs_name(char *buf, const char *prefix, const char *suffix_format, ...) {
    int n = g_snprintf(buf, CS_NAME_MAX, "%s.", prefix);
    va_list args;
    va_start(args, suffix_format);
    g_vsnprintf(buf + n, CS_NAME_MAX - n, suffix_format, args);
    va_end(args);
    return buf;
}

void cs_declare_conv(cs_paramset *ps, const char *name, int out, int in, int k, int bias) {
    char buf[CS_NAME_MAX];
    cs_declare(ps, cs_name(buf, name, "weight"), CS_PARAM, 4, out, in, k, k);
    if (bias) cs_declare(ps, cs_name(buf, name, "bias"), CS_PARAM, 1, out, 0, 0, 0);
}

void cs_declare_bn(cs_paramset *ps, const char *prefix, int channels) {
    char buf[CS_NAME_MAX];
    cs_declare(ps, cs_name(buf, prefix, "weight"), CS_PARAM, 1, channels, 0, 0, 0);
    cs_declare(ps, cs_name(buf, prefix, "bias"), CS_PARAM, 1, channels, 0, 0, 0);
    cs_declare(ps, cs_name(buf, prefix, "running_mean"), CS_BUFFER, 1, channels, 0, 0, 0);
    cs_declare(ps, cs_name(buf, prefix, "running_var"), CS_BUFFER, 1, channels, 0, 0, 0);
    cs_declare(ps, cs_name(buf, prefix, "num_batches_tracked"), CS_COUNTER, 0, 0, 0, 0, 0);
}

void cs_declare_linear(cs_paramset *ps, const char *prefix, int out, int in) {
    char buf[CS_NAME_MAX];
    cs_declare(ps, cs_name(buf, prefix, "weight"), CS_PARAM, 2, out, in, 0, 0);
    cs_declare(ps, cs_name(buf, prefix, "bias"), CS_PARAM, 1, out, 0, 0, 0);
}

void cs_declare_cbr(cs_paramset *ps, const char *prefix, int in, int out, int k) {
    char buf[CS_NAME_MAX];
    cs_declare_conv(ps, cs_name(buf, prefix, "conv.0"), out, in, k, 0);
    cs_declare_bn(ps, cs_name(buf, prefix, "conv.1"), out);
}

cs_tensor *cs_cbr(cs_ctx *ctx, const cs_tensor *x, const char *prefix, int dil, int relu) {
    char weight[CS_NAME_MAX], bn[CS_NAME_MAX];
    cs_name(weight, prefix, "conv.0.weight");
    cs_name(bn, prefix, "conv.1");
    const int k = (int)cs_param_get(cs_ctx_params(ctx), weight)->shape[2];
    return cs_conv2d_bn(ctx, x, weight, bn, 1, dil * (k - 1) / 2, dil, relu);
}

void cs_declare_channel_attention(cs_paramset *ps, const char *prefix, int channels) {
    char buf[CS_NAME_MAX];
    /* The hidden width is always C/16: the original ignores its ratio argument (§9.13). */
    cs_declare_conv(ps, cs_name(buf, prefix, "fc1"), channels / 16, channels, 1, 0);
    cs_declare_conv(ps, cs_name(buf, prefix, "fc2"), channels, channels / 16, 1, 0);
}

/* x * sigmoid(fc2(relu(fc1(avg(x)))) + fc2(relu(fc1(max(x))))), one shared MLP. */
cs_tensor *cs_channel_attention(cs_ctx *ctx, const cs_tensor *x, const char *prefix) {
    char fc1[CS_NAME_MAX], fc2[CS_NAME_MAX];
    cs_name(fc1, prefix, "fc1.weight");
    cs_name(fc2, prefix, "fc2.weight");
    cs_scope scope = cs_scope_begin(ctx);
    const cs_tensor *pooled[2] = {cs_global_avgpool(ctx, x), cs_global_maxpool(ctx, x)};
    cs_tensor *z[2];
    for (int i = 0; i < 2; i++) {
        cs_tensor *hidden = cs_relu(ctx, cs_conv2d(ctx, pooled[i], fc1, NULL, 1, 0, 1));
        z[i] = cs_conv2d(ctx, hidden, fc2, NULL, 1, 0, 1);
    }
    cs_tensor *gate = cs_sigmoid(ctx, cs_add(ctx, z[0], z[1], 0));
    return cs_scope_end(ctx, scope, cs_mul_channel(ctx, x, gate));
}

void cs_declare_spatial_attention(cs_paramset *ps, const char *prefix) {
    char buf[CS_NAME_MAX];
    cs_declare_conv(ps, cs_name(buf, prefix, "conv1"), 1, 2, 7, 0);
}

/* x * sigmoid(conv7x7([mean over channels, max over channels])). */
cs_tensor *cs_spatial_attention(cs_ctx *ctx, const cs_tensor *x, const char *prefix) {
    char conv[CS_NAME_MAX];
    cs_name(conv, prefix, "conv1.weight");
    cs_scope scope = cs_scope_begin(ctx);
    const cs_tensor *stats[2] = {cs_channel_mean(ctx, x), cs_channel_max(ctx, x)};
    cs_tensor *logit = cs_conv2d(ctx, cs_concat(ctx, 2, stats), conv, NULL, 1, 3, 1);
    return cs_scope_end(ctx, scope, cs_mul_spatial(ctx, x, cs_sigmoid(ctx, logit)));
}
