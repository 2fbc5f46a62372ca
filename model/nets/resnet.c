/* resnet.c — the encoder of both networks: torchvision's ResNet layout ("V1.5", stride on
 * the 3x3 conv) up to layer3, spec §2.5. State-dict names: layer0.{0,1} (stem conv, BN),
 * layer1.1.<i> (layer1.0 is the max-pool), layer2.<i>, layer3.<i>; each bottleneck has
 * conv1/bn1, conv2/bn2, conv3/bn3 and, in block 0, downsample.{0,1}. Compact presets use
 * torchvision's BasicBlock (ResNet-18/34): conv1/bn1, conv2/bn2, and downsample.{0,1}
 * where the shape changes. */
#include "net.h"

#define CS_EXPANSION 4

static void declare_bottleneck(cs_paramset *ps, const char *prefix, int in, int width,
                               int downsample) {
    char buf[CS_NAME_MAX];
    cs_declare_conv(ps, cs_name(buf, prefix, "conv1"), width, in, 1, 0);
    cs_declare_bn(ps, cs_name(buf, prefix, "bn1"), width);
    cs_declare_conv(ps, cs_name(buf, prefix, "conv2"), width, width, 3, 0);
    cs_declare_bn(ps, cs_name(buf, prefix, "bn2"), width);
    cs_declare_conv(ps, cs_name(buf, prefix, "conv3"), width * CS_EXPANSION, width, 1, 0);
    cs_declare_bn(ps, cs_name(buf, prefix, "bn3"), width * CS_EXPANSION);
    if (downsample) {
        cs_declare_conv(ps, cs_name(buf, prefix, "downsample.0"), width * CS_EXPANSION, in, 1, 0);
        cs_declare_bn(ps, cs_name(buf, prefix, "downsample.1"), width * CS_EXPANSION);
    }
}

/* relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x)) */
static cs_tensor *bottleneck(cs_ctx *ctx, const cs_tensor *x, const char *prefix, int stride,
                             int downsample) {
    char w[CS_NAME_MAX], bn[CS_NAME_MAX];
    cs_scope scope = cs_scope_begin(ctx);
    cs_tensor *t = cs_conv2d_bn(ctx, x, cs_name(w, prefix, "conv1.weight"),
                                cs_name(bn, prefix, "bn1"), 1, 0, 1, 1);
    t = cs_conv2d_bn(ctx, t, cs_name(w, prefix, "conv2.weight"), cs_name(bn, prefix, "bn2"),
                     stride, 1, 1, 1);
    t = cs_conv2d_bn(ctx, t, cs_name(w, prefix, "conv3.weight"), cs_name(bn, prefix, "bn3"), 1,
                     0, 1, 0);
    const cs_tensor *shortcut = x;
    if (downsample)
        shortcut = cs_conv2d_bn(ctx, x, cs_name(w, prefix, "downsample.0.weight"),
                                cs_name(bn, prefix, "downsample.1"), stride, 0, 1, 0);
    return cs_scope_end(ctx, scope, cs_add(ctx, t, shortcut, 1));
}

static void declare_basic_block(cs_paramset *ps, const char *prefix, int in, int width,
                                int downsample) {
    char buf[CS_NAME_MAX];
    cs_declare_conv(ps, cs_name(buf, prefix, "conv1"), width, in, 3, 0);
    cs_declare_bn(ps, cs_name(buf, prefix, "bn1"), width);
    cs_declare_conv(ps, cs_name(buf, prefix, "conv2"), width, width, 3, 0);
    cs_declare_bn(ps, cs_name(buf, prefix, "bn2"), width);
    if (downsample) {
        cs_declare_conv(ps, cs_name(buf, prefix, "downsample.0"), width, in, 1, 0);
        cs_declare_bn(ps, cs_name(buf, prefix, "downsample.1"), width);
    }
}

/* relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)) */
static cs_tensor *basic_block(cs_ctx *ctx, const cs_tensor *x, const char *prefix, int stride,
                              int downsample) {
    char w[CS_NAME_MAX], bn[CS_NAME_MAX];
    cs_scope scope = cs_scope_begin(ctx);
    cs_tensor *t = cs_conv2d_bn(ctx, x, cs_name(w, prefix, "conv1.weight"),
                                cs_name(bn, prefix, "bn1"), stride, 1, 1, 1);
    t = cs_conv2d_bn(ctx, t, cs_name(w, prefix, "conv2.weight"), cs_name(bn, prefix, "bn2"), 1,
                     1, 1, 0);
    const cs_tensor *shortcut = x;
    if (downsample)
        shortcut = cs_conv2d_bn(ctx, x, cs_name(w, prefix, "downsample.0.weight"),
                                cs_name(bn, prefix, "downsample.1"), stride, 0, 1, 0);
    return cs_scope_end(ctx, scope, cs_add(ctx, t, shortcut, 1));
}

/* Block 0 of a layer changes the shape (and gets a downsample) when its stride or width
 * says so; Bottleneck layers always widen by 4 in block 0. */
static int block_downsamples(const cs_netcfg *cfg, int layer, int in) {
    return cfg->expansion != 1 || layer > 0 || in != cfg->widths[layer];
}

/* The name of block i of layer l (1-based): layer1's blocks sit under "layer1.1". */
static const char *block_name(char *buf, int layer, int i) {
    if (layer == 1) g_snprintf(buf, CS_NAME_MAX, "layer1.1.%d", i);
    else g_snprintf(buf, CS_NAME_MAX, "layer%d.%d", layer, i);
    return buf;
}

gboolean cs_is_encoder_name(const char *name) {
    return g_str_has_prefix(name, "layer0.") || g_str_has_prefix(name, "layer1.") ||
           g_str_has_prefix(name, "layer2.") || g_str_has_prefix(name, "layer3.");
}

void cs_trunk_channels(const cs_netcfg *cfg, int channels[4]) {
    channels[0] = cfg->stem_channels;
    for (int l = 0; l < 3; l++) channels[l + 1] = cfg->widths[l] * cfg->expansion;
}

void cs_declare_trunk(cs_paramset *ps, const cs_netcfg *cfg) {
    char buf[CS_NAME_MAX];
    cs_declare_conv(ps, "layer0.0", cfg->stem_channels, 3, 7, 0);
    cs_declare_bn(ps, "layer0.1", cfg->stem_channels);
    int in = cfg->stem_channels;
    for (int l = 0; l < 3; l++) {
        for (int i = 0; i < cfg->blocks[l]; i++) {
            const int downsample = i == 0 && block_downsamples(cfg, l, in);
            if (cfg->expansion == 1)
                declare_basic_block(ps, block_name(buf, l + 1, i), in, cfg->widths[l], downsample);
            else
                declare_bottleneck(ps, block_name(buf, l + 1, i), in, cfg->widths[l], downsample);
            in = cfg->widths[l] * cfg->expansion;
        }
    }
}

void cs_trunk_forward(cs_ctx *ctx, const cs_netcfg *cfg, const cs_tensor *image,
                      cs_tensor *features[4]) {
    static const char *const names[4] = {"x1", "x2", "x3", "x4"};
    char buf[CS_NAME_MAX];
    features[0] = cs_conv2d_bn(ctx, image, "layer0.0.weight", "layer0.1", 2, 3, 1, 1);
    cs_probe(ctx, names[0], features[0]);
    const cs_tensor *x = features[0];
    for (int l = 0; l < 3; l++) {
        cs_scope scope = cs_scope_begin(ctx);
        cs_tensor *y = l == 0 ? cs_maxpool3s2(ctx, x) : NULL;
        for (int i = 0; i < cfg->blocks[l]; i++) {
            const int stride = (l > 0 && i == 0) ? 2 : 1;
            const cs_tensor *in = y ? y : x;
            const int downsample = i == 0 && block_downsamples(cfg, l, in->c);
            y = cfg->expansion == 1
                    ? basic_block(ctx, in, block_name(buf, l + 1, i), stride, downsample)
                    : bottleneck(ctx, in, block_name(buf, l + 1, i), stride, downsample);
        }
        features[l + 1] = cs_scope_end(ctx, scope, y);
        cs_probe(ctx, names[l + 1], features[l + 1]);
        x = features[l + 1];
    }
}
