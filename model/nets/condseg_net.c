/* condseg_net.c — the ConDSeg network (spec §2-§3), in the order of the paper's figure:
 * encoder (resnet.c), Feature Enhancement Module (the dilated convolutions), Semantic
 * Information Decoupling (decouple layer + auxiliary head), Contrast-Driven Feature
 * Aggregation (preprocess + CDFA), Size-Aware Decoders, output block.
 * Each module is a declare function (its __init__, registering the state-dict entries in
 * PyTorch's order) and a forward function.
 */
#include "net.h"

const cs_netcfg cs_preset_condseg_r50 = {
    .name = "condseg-r50",
    .stem_channels = 64,
    .expansion = 4,
    .blocks = {3, 4, 6},
    .widths = {64, 128, 256},
    .dim = 128,
    .sid_hidden = 512,
    .aux_widths = {256, 256, 128, 64, 64},
    .heads = 4,
    .out_hidden = 64,
    .stage1_head = 64,
};

/* Every part of ConDSeg, narrower: a ResNet-18-like encoder (BasicBlocks 2-2-2) at half
 * ResNet-18's widths, and 32 channels where the paper has 128. About a twentieth of the
 * paper network's arithmetic, so that it trains on a CPU in hours. */
const cs_netcfg cs_preset_condseg_compact = {
    .name = "condseg-compact",
    .stem_channels = 32,
    .expansion = 1,
    .blocks = {2, 2, 2},
    .widths = {32, 64, 128},
    .dim = 32,
    .sid_hidden = 64,
    .aux_widths = {32, 32, 32, 16, 16},
    .heads = 4,
    .out_hidden = 16,
    .stage1_head = 16,
};

static const cs_netcfg *const presets[] = {&cs_preset_condseg_r50, &cs_preset_condseg_compact};

const cs_netcfg *cs_netcfg_find(const char *name) {
    for (size_t i = 0; i < G_N_ELEMENTS(presets); i++)
        if (g_strcmp0(presets[i]->name, name) == 0) return presets[i];
    return NULL;
}

const char *cs_netcfg_names(void) { return "condseg-r50, condseg-compact"; }

static int ilog2(int v) {
    int r = 0;
    while ((1 << r) < v) r++;
    return r;
}

/* ---- FEM: dilated_conv (spec §2.4) ------------------------------------------------- */

static const int fem_dilations[4] = {1, 6, 12, 18};

static void declare_fem(cs_paramset *ps, const char *prefix, int in, int dim) {
    char buf[CS_NAME_MAX];
    for (int b = 0; b < 4; b++) {
        cs_declare_cbr(ps, cs_name(buf, prefix, "c%d.0", b + 1), in, dim, b == 0 ? 1 : 3);
        cs_declare_channel_attention(ps, cs_name(buf, prefix, "c%d.1", b + 1), dim);
    }
    cs_declare_cbr(ps, cs_name(buf, prefix, "c5"), 4 * dim, dim, 3);
    cs_declare_cbr(ps, cs_name(buf, prefix, "c6"), in, dim, 1);
    cs_declare_spatial_attention(ps, cs_name(buf, prefix, "sa"));
}

/* sa(relu(c5(cat[ca(cbr_d(x)) for d in 1, 6, 12, 18]) + c6(x))) */
static cs_tensor *fem(cs_ctx *ctx, const cs_tensor *x, const char *prefix) {
    char buf[CS_NAME_MAX];
    cs_scope scope = cs_scope_begin(ctx);
    const cs_tensor *branch[4];
    for (int b = 0; b < 4; b++) {
        cs_tensor *t = cs_cbr(ctx, x, cs_name(buf, prefix, "c%d.0", b + 1), fem_dilations[b], 1);
        branch[b] = cs_channel_attention(ctx, t, cs_name(buf, prefix, "c%d.1", b + 1));
    }
    cs_tensor *xc = cs_cbr(ctx, cs_concat(ctx, 4, branch), cs_name(buf, prefix, "c5"), 1, 0);
    cs_tensor *xs = cs_cbr(ctx, x, cs_name(buf, prefix, "c6"), 1, 0);
    cs_tensor *r = cs_add(ctx, xc, xs, 1);
    return cs_scope_end(ctx, scope, cs_spatial_attention(ctx, r, cs_name(buf, prefix, "sa")));
}

/* ---- SID: decouple layer (§2.6) and auxiliary head (§2.7) ----------------------------- */

static const char *const sid_branches[3] = {"fg", "bg", "uc"};

static void declare_decouple(cs_paramset *ps, const cs_netcfg *cfg, int in) {
    char buf[CS_NAME_MAX];
    for (int b = 0; b < 3; b++) {
        char prefix[CS_NAME_MAX];
        g_snprintf(prefix, sizeof prefix, "decouple_layer.cbr_%s", sid_branches[b]);
        cs_declare_cbr(ps, cs_name(buf, prefix, "0"), in, cfg->sid_hidden, 3);
        cs_declare_cbr(ps, cs_name(buf, prefix, "1"), cfg->sid_hidden, cfg->dim, 3);
        cs_declare_cbr(ps, cs_name(buf, prefix, "2"), cfg->dim, cfg->dim, 1);
    }
}

static cs_tensor *decouple_branch(cs_ctx *ctx, const cs_tensor *x, int b) {
    char prefix[CS_NAME_MAX], buf[CS_NAME_MAX];
    g_snprintf(prefix, sizeof prefix, "decouple_layer.cbr_%s", sid_branches[b]);
    cs_scope scope = cs_scope_begin(ctx);
    cs_tensor *t = cs_cbr(ctx, x, cs_name(buf, prefix, "0"), 1, 1);
    t = cs_cbr(ctx, t, cs_name(buf, prefix, "1"), 1, 1);
    return cs_scope_end(ctx, scope, cs_cbr(ctx, t, cs_name(buf, prefix, "2"), 1, 1));
}

static void declare_aux_head(cs_paramset *ps, const cs_netcfg *cfg) {
    char buf[CS_NAME_MAX];
    for (int b = 0; b < 3; b++) {
        char prefix[CS_NAME_MAX];
        g_snprintf(prefix, sizeof prefix, "aux_head.branch_%s", sid_branches[b]);
        int in = cfg->dim;
        for (int i = 0; i < 5; i++) {
            cs_declare_cbr(ps, cs_name(buf, prefix, "%d", 2 * i), in, cfg->aux_widths[i], 3);
            in = cfg->aux_widths[i];
        }
        cs_declare_conv(ps, cs_name(buf, prefix, "9"), 1, in, 1, 1);
    }
}

/* CBR at 1/16, then (up x2, CBR) four times, a 1x1 conv with bias, sigmoid. */
static cs_tensor *aux_branch(cs_ctx *ctx, const cs_tensor *f, int b) {
    char prefix[CS_NAME_MAX], buf[CS_NAME_MAX], bias[CS_NAME_MAX];
    g_snprintf(prefix, sizeof prefix, "aux_head.branch_%s", sid_branches[b]);
    cs_scope scope = cs_scope_begin(ctx);
    cs_tensor *t = cs_cbr(ctx, f, cs_name(buf, prefix, "0"), 1, 1);
    for (int i = 1; i < 5; i++) t = cs_cbr(ctx, cs_upsample(ctx, t, 2), cs_name(buf, prefix, "%d", 2 * i), 1, 1);
    t = cs_conv2d(ctx, t, cs_name(buf, prefix, "9.weight"), cs_name(bias, prefix, "9.bias"), 1, 0, 1);
    return cs_scope_end(ctx, scope, cs_sigmoid(ctx, t));
}

/* ---- CDFA (§2.8, §2.9) ------------------------------------------------------------- */

static void declare_preprocess(cs_paramset *ps, const char *prefix, int dim, int scale) {
    char buf[CS_NAME_MAX];
    for (int i = 0; i < ilog2(scale); i++)
        cs_declare_cbr(ps, cs_name(buf, prefix, "preprocess.conv_%d", i), dim, dim, 3);
    cs_declare_cbr(ps, cs_name(buf, prefix, "c1"), dim, dim, 3);
}

/* c1, then (up x2, CBR) log2(scale) times: brings f_fg / f_bg to the CDFA's resolution. */
static cs_tensor *preprocess(cs_ctx *ctx, const cs_tensor *x, const char *prefix, int scale) {
    char buf[CS_NAME_MAX];
    cs_scope scope = cs_scope_begin(ctx);
    cs_tensor *y = cs_cbr(ctx, x, cs_name(buf, prefix, "c1"), 1, 1);
    for (int i = 0; i < ilog2(scale); i++)
        y = cs_cbr(ctx, cs_upsample(ctx, y, 2), cs_name(buf, prefix, "preprocess.conv_%d", i), 1, 1);
    return cs_scope_end(ctx, scope, y);
}

static void declare_cdfa(cs_paramset *ps, const char *prefix, int in, const cs_netcfg *cfg) {
    char buf[CS_NAME_MAX];
    const int dim = cfg->dim, logits = cfg->heads * 81;
    cs_declare_linear(ps, cs_name(buf, prefix, "v"), dim, dim);
    cs_declare_linear(ps, cs_name(buf, prefix, "attn_fg"), logits, dim);
    cs_declare_linear(ps, cs_name(buf, prefix, "attn_bg"), logits, dim);
    cs_declare_linear(ps, cs_name(buf, prefix, "proj"), dim, dim);
    cs_declare_cbr(ps, cs_name(buf, prefix, "input_cbr.0"), in, dim, 3);
    cs_declare_cbr(ps, cs_name(buf, prefix, "input_cbr.1"), dim, dim, 3);
    cs_declare_cbr(ps, cs_name(buf, prefix, "output_cbr.0"), dim, dim, 3);
    cs_declare_cbr(ps, cs_name(buf, prefix, "output_cbr.1"), dim, dim, 3);
}

/* Two outlook-attention passes whose weights come from the decoupled foreground and
 * background features; the second pass attends over the first pass's projected output
 * and reuses proj (§2.9.1). */
static cs_tensor *cdfa(cs_ctx *ctx, const cs_netcfg *cfg, const cs_tensor *x,
                       const cs_tensor *fg, const cs_tensor *bg, const char *prefix) {
    char buf[CS_NAME_MAX];
    cs_scope scope = cs_scope_begin(ctx);
    cs_tensor *t = cs_cbr(ctx, x, cs_name(buf, prefix, "input_cbr.0"), 1, 1);
    t = cs_cbr(ctx, t, cs_name(buf, prefix, "input_cbr.1"), 1, 1);
    cs_tensor *values = cs_linear(ctx, t, cs_name(buf, prefix, "v"));
    const cs_tensor *guides[2] = {fg, bg};
    static const char *const attn[2] = {"attn_fg", "attn_bg"};
    for (int pass = 0; pass < 2; pass++) {
        cs_tensor *logits = cs_linear(ctx, guides[pass], cs_name(buf, prefix, "%s", attn[pass]));
        cs_tensor *folded = cs_outlook_attention(ctx, values, logits, cfg->heads);
        values = cs_linear(ctx, folded, cs_name(buf, prefix, "proj"));
    }
    t = cs_cbr(ctx, values, cs_name(buf, prefix, "output_cbr.0"), 1, 1);
    return cs_scope_end(ctx, scope, cs_cbr(ctx, t, cs_name(buf, prefix, "output_cbr.1"), 1, 1));
}

/* ---- Size-aware decoders (§2.10) ----------------------------------------------------- */

static void declare_decoder(cs_paramset *ps, const char *prefix, int dim) {
    char buf[CS_NAME_MAX];
    cs_declare_cbr(ps, cs_name(buf, prefix, "c1"), 2 * dim, dim, 1);
    cs_declare_cbr(ps, cs_name(buf, prefix, "c2"), dim, dim, 3);
    cs_declare_cbr(ps, cs_name(buf, prefix, "c3"), dim, dim, 3);
    cs_declare_cbr(ps, cs_name(buf, prefix, "c4"), dim, dim, 1);
    cs_declare_channel_attention(ps, cs_name(buf, prefix, "ca"), dim);
    cs_declare_spatial_attention(ps, cs_name(buf, prefix, "sa"));
}

/* Densely connected residual CBs over cat[up x2(x), skip], then channel and spatial
 * attention. */
static cs_tensor *decoder(cs_ctx *ctx, const cs_tensor *x, const cs_tensor *skip,
                          const char *prefix) {
    char buf[CS_NAME_MAX];
    cs_scope scope = cs_scope_begin(ctx);
    const cs_tensor *z[2] = {cs_upsample(ctx, x, 2), skip};
    cs_tensor *s1 = cs_cbr(ctx, cs_concat(ctx, 2, z), cs_name(buf, prefix, "c1"), 1, 1);
    cs_tensor *s2 = cs_add(ctx, cs_cbr(ctx, s1, cs_name(buf, prefix, "c2"), 1, 0), s1, 1);
    cs_tensor *s3 = cs_add(ctx, cs_cbr(ctx, s2, cs_name(buf, prefix, "c3"), 1, 0), s2, 0);
    s3 = cs_add(ctx, s3, s1, 1);
    cs_tensor *r = cs_add(ctx, cs_cbr(ctx, s3, cs_name(buf, prefix, "c4"), 1, 0), s3, 0);
    r = cs_add(ctx, cs_add(ctx, r, s2, 0), s1, 1);
    r = cs_channel_attention(ctx, r, cs_name(buf, prefix, "ca"));
    return cs_scope_end(ctx, scope, cs_spatial_attention(ctx, r, cs_name(buf, prefix, "sa")));
}

/* ---- Output block (§2.11) ------------------------------------------------------------ */

static void declare_output_block(cs_paramset *ps, const cs_netcfg *cfg) {
    cs_declare_cbr(ps, "output_block.fuse", 3 * cfg->dim, cfg->dim, 3);
    cs_declare_cbr(ps, "output_block.c1", cfg->dim, cfg->dim, 3);
    cs_declare_cbr(ps, "output_block.c2", cfg->dim, cfg->out_hidden, 1);
    cs_declare_conv(ps, "output_block.c3", 1, cfg->out_hidden, 1, 1);
}

static cs_tensor *output_block(cs_ctx *ctx, const cs_tensor *small, const cs_tensor *middle,
                               const cs_tensor *large) {
    cs_scope scope = cs_scope_begin(ctx);
    const cs_tensor *z[3] = {small, cs_upsample(ctx, middle, 2), cs_upsample(ctx, large, 4)};
    cs_tensor *t = cs_cbr(ctx, cs_concat(ctx, 3, z), "output_block.fuse", 1, 1);
    t = cs_cbr(ctx, cs_upsample(ctx, t, 2), "output_block.c1", 1, 1);
    t = cs_cbr(ctx, t, "output_block.c2", 1, 1);
    t = cs_conv2d(ctx, t, "output_block.c3.weight", "output_block.c3.bias", 1, 0, 1);
    return cs_scope_end(ctx, scope, cs_sigmoid(ctx, t));
}

/* ---- the network -------------------------------------------------------------------- */

void cs_condseg_declare(cs_paramset *ps, const cs_netcfg *cfg) {
    char buf[CS_NAME_MAX];
    int channels[4];
    cs_trunk_channels(cfg, channels);
    cs_declare_trunk(ps, cfg);
    for (int i = 0; i < 4; i++) {
        g_snprintf(buf, sizeof buf, "dconv%d", i + 1);
        declare_fem(ps, buf, channels[i], cfg->dim);
    }
    declare_decouple(ps, cfg, channels[3]);
    for (int i = 4; i >= 1; i--) {
        for (int b = 0; b < 2; b++) {
            g_snprintf(buf, sizeof buf, "preprocess_%s%d", sid_branches[b], i);
            declare_preprocess(ps, buf, cfg->dim, 1 << (4 - i));
        }
    }
    declare_aux_head(ps, cfg);
    for (int i = 4; i >= 1; i--) {
        g_snprintf(buf, sizeof buf, "cdfa%d", i);
        declare_cdfa(ps, buf, i == 4 ? cfg->dim : 2 * cfg->dim, cfg);
    }
    declare_decoder(ps, "decoder_small", cfg->dim);
    declare_decoder(ps, "decoder_middle", cfg->dim);
    declare_decoder(ps, "decoder_large", cfg->dim);
    declare_output_block(ps, cfg);
}

/* Fractions of the mask-only forward's FLOPs done after each stage (spec §3.3), for the
 * progress bar. */
#define PROGRESS(fraction) \
    do { if (progress) progress(fraction, progress_data); } while (0)

void cs_condseg_forward(cs_ctx *ctx, const cs_netcfg *cfg, const cs_tensor *image,
                        unsigned outputs, cs_tensor *out[4], cs_progress_fn progress,
                        void *progress_data) {
    static const char *const fem_names[4] = {"d1", "d2", "d3", "d4"};
    static const char *const sid_names[3] = {"f_fg", "f_bg", "f_uc"};
    static const char *const aux_names[3] = {"mask_fg", "mask_bg", "mask_uc"};
    char buf[CS_NAME_MAX];
    for (int i = 0; i < 4; i++) out[i] = NULL;

    /* Encoder and FEM. */
    cs_tensor *x[4], *d[4];
    cs_trunk_forward(ctx, cfg, image, x);
    PROGRESS(0.05);
    for (int i = 0; i < 4; i++) {
        g_snprintf(buf, sizeof buf, "dconv%d", i + 1);
        d[i] = fem(ctx, x[i], buf);
        cs_probe(ctx, fem_names[i], d[i]);
    }
    PROGRESS(0.35);

    /* SID: the uncertainty branch feeds only the auxiliary head, and the auxiliary head
     * feeds nothing else, so a mask-only run skips both (spec §3.2). */
    const int want_aux[3] = {!!(outputs & CS_OUT_FG), !!(outputs & CS_OUT_BG),
                             !!(outputs & CS_OUT_UC)};
    cs_tensor *f[3] = {NULL, NULL, NULL};
    for (int b = 0; b < 3; b++) {
        if (b == 2 && !want_aux[2]) continue;
        f[b] = decouple_branch(ctx, x[3], b);
        cs_probe(ctx, sid_names[b], f[b]);
    }
    for (int i = 0; i < 4; i++) cs_release(ctx, x[i]);
    for (int b = 0; b < 3; b++) {
        if (!want_aux[b]) continue;
        out[b + 1] = aux_branch(ctx, f[b], b);
        cs_probe(ctx, aux_names[b], out[b + 1]);
    }
    if (f[2]) cs_release(ctx, f[2]);
    PROGRESS(0.40);
    if (!(outputs & CS_OUT_MASK)) {
        cs_release(ctx, f[0]);
        cs_release(ctx, f[1]);
        for (int i = 0; i < 4; i++) cs_release(ctx, d[i]);
        return;
    }

    /* CDFA, from the coarsest scale (4, 1/16) to the finest (1, 1/2): each takes the FEM
     * features of its scale concatenated with the previous CDFA's output upsampled. */
    cs_tensor *g[2][4]; /* [fg/bg][scale 1..4 -> 0..3] */
    for (int i = 4; i >= 1; i--) {
        for (int b = 0; b < 2; b++) {
            g_snprintf(buf, sizeof buf, "preprocess_%s%d", sid_branches[b], i);
            g[b][i - 1] = preprocess(ctx, f[b], buf, 1 << (4 - i));
            g_snprintf(buf, sizeof buf, "f_%s%d", sid_branches[b], i);
            cs_probe(ctx, buf, g[b][i - 1]);
        }
    }
    cs_release(ctx, f[0]);
    cs_release(ctx, f[1]);
    PROGRESS(0.45);
    cs_tensor *c[4];
    for (int i = 4; i >= 1; i--) {
        cs_scope scope = cs_scope_begin(ctx);
        const cs_tensor *in = d[i - 1];
        if (i < 4) {
            const cs_tensor *parts[2] = {d[i - 1], cs_upsample(ctx, c[i], 2)};
            in = cs_concat(ctx, 2, parts);
        }
        g_snprintf(buf, sizeof buf, "cdfa%d", i);
        c[i - 1] = cs_scope_end(ctx, scope, cdfa(ctx, cfg, in, g[0][i - 1], g[1][i - 1], buf));
        g_snprintf(buf, sizeof buf, "f%d", i);
        cs_probe(ctx, buf, c[i - 1]);
        cs_release(ctx, d[i - 1]);
        cs_release(ctx, g[0][i - 1]);
        cs_release(ctx, g[1][i - 1]);
        PROGRESS(i == 1 ? 0.70 : 0.50);
    }

    /* Size-aware decoders: each fuses two neighbouring CDFA scales. */
    cs_tensor *small = decoder(ctx, c[1], c[0], "decoder_small");
    cs_probe(ctx, "f_small", small);
    cs_tensor *middle = decoder(ctx, c[2], c[1], "decoder_middle");
    cs_probe(ctx, "f_middle", middle);
    cs_tensor *large = decoder(ctx, c[3], c[2], "decoder_large");
    cs_probe(ctx, "f_large", large);
    for (int i = 0; i < 4; i++) cs_release(ctx, c[i]);
    PROGRESS(0.80);

    out[0] = output_block(ctx, small, middle, large);
    cs_probe(ctx, "mask", out[0]);
    cs_release(ctx, small);
    cs_release(ctx, middle);
    cs_release(ctx, large);
    PROGRESS(1.0);
}
