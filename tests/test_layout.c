/* test_layout.c — the NHWC forms used between oneDNN convolutions, against the NCHW
 * operations they replace (the same arithmetic, so max |diff| <= 1e-6 x scale): the layout
 * pass back to NCHW and its gradient, bilinear upsampling (x2, x4, odd sizes, batches),
 * channel concatenation, the global poolings, channel reductions and products of the
 * attention blocks and CDFA's outlook attention (bit-identical), a convolution taking and giving NHWC (fp32 and bf16),
 * the Winograd convolution of float32 inference against the direct one (2e-5 x scale);
 * for training, the backward pass of each of them (onto a nonzero gradient: they
 * accumulate), BatchNorm's statistics, affine map and backward, and the convolution's
 * backward on NHWC x and dy. */
#include <math.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>

#include "check.h"
#include "kernels.h"

#define LAYOUT_TOL 1e-6

static float *random_floats(GRand *rng, size_t n) {
    float *v = g_new(float, n);
    for (size_t i = 0; i < n; i++) v[i] = (float)(2.0 * g_rand_double(rng) - 1.0);
    return v;
}

static float *nchw_of(const float *x, int n, int c, int hw) {
    float *y = g_new(float, (size_t)n * c * hw);
    cs_cpu_nhwc_to_nchw(y, x, n, c, hw);
    return y;
}

static void expect_close(const char *what, const float *got, const float *want, size_t n) {
    const double e = check_max_abs_diff(got, want, n) / (check_max_abs(want, n) + 1e-30);
    CHECK_MSG(e <= LAYOUT_TOL, "%s: max |diff| %.2e x scale (limit %.0e)", what, e, LAYOUT_TOL);
}

static void test_to_nchw(GRand *rng, int n, int c, int hw) {
    float *x = random_floats(rng, (size_t)n * c * hw), *t = check_nhwc_of(x, n, c, hw);
    float *back = nchw_of(t, n, c, hw);
    CHECK_MSG(memcmp(back, x, sizeof(float) * n * c * hw) == 0,
              "NHWC -> NCHW of %dx%dx%d is not the transposition", n, c, hw);
    g_free(x), g_free(t), g_free(back);
}

static void test_upsample(GRand *rng, int n, int c, int h, int w, int ho, int wo) {
    const size_t in = (size_t)n * c * h * w, out = (size_t)n * c * ho * wo;
    float *x = random_floats(rng, in), *want = g_new(float, out), *got = g_new(float, out);
    cs_cpu_upsample_bilinear(want, x, n, c, h, w, ho, wo);
    float *xt = check_nhwc_of(x, n, c, h * w);
    cs_cpu_upsample_bilinear_nhwc(got, xt, n, c, h, w, ho, wo);
    float *back = nchw_of(got, n, c, ho * wo);
    char *what = g_strdup_printf("upsample %dx%dx%dx%d -> %dx%d in NHWC", n, c, h, w, ho, wo);
    expect_close(what, back, want, out);
    g_free(what), g_free(x), g_free(want), g_free(got), g_free(xt), g_free(back);
}

static void test_concat(GRand *rng, int n, int hw) {
    const int ca = 5, cb = 16, cy = ca + cb;
    float *a = random_floats(rng, (size_t)n * ca * hw), *b = random_floats(rng, (size_t)n * cb * hw);
    float *want = g_new(float, (size_t)n * cy * hw), *got = g_new(float, (size_t)n * cy * hw);
    cs_cpu_copy_channels(want, cy, 0, a, ca, n, hw);
    cs_cpu_copy_channels(want, cy, ca, b, cb, n, hw);
    float *at = check_nhwc_of(a, n, ca, hw), *bt = check_nhwc_of(b, n, cb, hw);
    cs_cpu_copy_channels_nhwc(got, cy, 0, at, ca, n, hw);
    cs_cpu_copy_channels_nhwc(got, cy, ca, bt, cb, n, hw);
    float *back = nchw_of(got, n, cy, hw);
    CHECK_MSG(memcmp(back, want, sizeof(float) * n * cy * hw) == 0, "concatenation in NHWC");
    g_free(a), g_free(b), g_free(want), g_free(got), g_free(at), g_free(bt), g_free(back);
}

typedef void (*reduce_fn)(float *y, const float *x, int n, int c, int hw);

/* A reduction of an NHWC map against the NCHW kernel: the same sums in the same order, so
 * the same floats. */
static void test_reduce(GRand *rng, const char *what, reduce_fn nchw, reduce_fn nhwc, int global,
                        int n, int c, int hw) {
    float *x = random_floats(rng, (size_t)n * c * hw), *xt = check_nhwc_of(x, n, c, hw);
    const size_t out = global ? (size_t)n * c : (size_t)n * hw;
    float *want = g_new(float, out), *got = g_new(float, out);
    nchw(want, x, n, c, hw);
    nhwc(got, xt, n, c, hw);
    CHECK_MSG(memcmp(got, want, sizeof(float) * out) == 0, "%s of %dx%dx%d in NHWC", what, n, c,
              hw);
    g_free(x), g_free(xt), g_free(want), g_free(got);
}

/* x * s[n, c] and x * m[n, pixel] in NHWC against NCHW. */
static void test_products(GRand *rng, int n, int c, int hw) {
    const size_t count = (size_t)n * c * hw;
    float *x = random_floats(rng, count), *xt = check_nhwc_of(x, n, c, hw);
    float *s = random_floats(rng, (size_t)n * c), *m = random_floats(rng, (size_t)n * hw);
    float *want = g_new(float, count), *got = g_new(float, count);
    cs_cpu_mul_channel(want, x, s, n, c, hw);
    cs_cpu_mul_channel_nhwc(got, xt, s, n, c, hw);
    float *back = nchw_of(got, n, c, hw);
    CHECK_MSG(memcmp(back, want, sizeof(float) * count) == 0, "channel product in NHWC");
    g_free(back);
    cs_cpu_mul_spatial(want, x, m, n, c, hw);
    cs_cpu_mul_spatial_nhwc(got, xt, m, n, c, hw);
    back = nchw_of(got, n, c, hw);
    CHECK_MSG(memcmp(back, want, sizeof(float) * count) == 0, "spatial product in NHWC");
    g_free(back), g_free(x), g_free(xt), g_free(s), g_free(m), g_free(want), g_free(got);
}

/* conv(x) with x and y in NHWC against the NCHW call, with the BN+ReLU epilogue. */
static void test_conv_nhwc(GRand *rng, int bf16) {
    cs_conv_shape s = {.n = 2, .c = 32, .h = 12, .w = 10, .o = 48, .k = 3, .stride = 1, .pad = 1,
                       .dil = 1, .bf16 = bf16};
    cs_conv_geometry(&s);
    const size_t in = (size_t)s.n * s.c * s.h * s.w, out = (size_t)s.n * s.o * s.ho * s.wo;
    float *x = random_floats(rng, in), *w = random_floats(rng, (size_t)s.o * s.c * 9);
    float *scale = random_floats(rng, s.o), *shift = random_floats(rng, s.o);
    float *want = g_new(float, out), *got = g_new(float, out);
    float *ws = g_new(float, cs_cpu_conv2d_forward_workspace(&s) + 1);
    cs_cpu_conv2d_forward(want, x, w, scale, shift, &s, 1, ws);
    g_free(ws);
    CHECK(cs_cpu_conv2d_supports_nhwc(&s));
    s.x_nhwc = s.y_nhwc = 1;
    float *xt = check_nhwc_of(x, s.n, s.c, s.h * s.w);
    ws = g_new(float, cs_cpu_conv2d_forward_workspace(&s) + 1);
    cs_cpu_conv2d_forward(got, xt, w, scale, shift, &s, 1, ws);
    float *back = nchw_of(got, s.n, s.o, s.ho * s.wo);
    expect_close(bf16 ? "convolution NHWC -> NHWC, bf16" : "convolution NHWC -> NHWC, fp32", back,
                 want, out);
    if (bf16) {
        /* The caller's bfloat16 copy of x: filled by a first call, then the input (x itself
         * is not read: zeros there change nothing). */
        float *again = g_new(float, out), *zeros = g_new0(float, in);
        s.x_bf16 = g_malloc(2 * in);
        cs_cpu_conv2d_forward(again, xt, w, scale, shift, &s, 1, ws);
        CHECK_MSG(memcmp(again, got, sizeof(float) * out) == 0, "bf16 copy of x: first call");
        s.x_bf16_ready = 1;
        cs_cpu_conv2d_forward(again, zeros, w, scale, shift, &s, 1, ws);
        CHECK_MSG(memcmp(again, got, sizeof(float) * out) == 0, "bf16 copy of x: taken as x");
        g_free(again), g_free(zeros), g_free(s.x_bf16);
    }
    g_free(ws), g_free(x), g_free(w), g_free(scale), g_free(shift), g_free(want), g_free(got);
    g_free(xt), g_free(back);
}

/* Float32 inference on NHWC maps from 128x128 output pixels up runs oneDNN's Winograd
 * kernel in bands of rows (conv_dnnl.c): against the direct kernel on the same maps, each
 * epilogue (scale/shift + ReLU, bias only, none), several bands with a shorter last one
 * and batches, and one band covering the whole map. Measured: a few 1e-6 x scale. */
#define WINOGRAD_TOL 2e-5

#if DNNL_VERSION_MAJOR < 3
/* Whether oneDNN lists its F(2x2, 3x3) kernel (jit_fp32_wino_2x3) among the
 * implementations of a band of the map: c -> o channels, w wide, rows + 2 input rows
 * without vertical padding, for a few band heights. It depends on the CPU: on an Intel
 * Xeon (AVX-512) it takes 128 channels, on an AMD Zen 5 only 64 (jit_wino_4x3 for 128). */
static int wino_2x3_offered(int c, int o, int h, int w) {
    dnnl_engine_t engine;
    if (dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success) return 0;
    const int heights[] = {4, 8, 16, 32, h};
    int offered = 0;
    for (size_t k = 0; k < G_N_ELEMENTS(heights) && !offered; k++) {
        const int rows = heights[k] < h ? heights[k] : h;
        dnnl_memory_desc_t src, wei, dst;
        const dnnl_dims_t sd = {1, c, rows + 2, w}, wd = {o, c, 3, 3}, dd = {1, o, rows, w};
        const dnnl_dims_t strides = {1, 1}, pad = {0, 1};
        dnnl_memory_desc_init_by_tag(&src, 4, sd, dnnl_f32, dnnl_format_tag_any);
        dnnl_memory_desc_init_by_tag(&wei, 4, wd, dnnl_f32, dnnl_format_tag_any);
        dnnl_memory_desc_init_by_tag(&dst, 4, dd, dnnl_f32, dnnl_format_tag_any);
        dnnl_convolution_desc_t desc;
        dnnl_primitive_desc_iterator_t it;
        if (dnnl_convolution_forward_desc_init(&desc, dnnl_forward_inference,
                                               dnnl_convolution_winograd, &src, &wei, NULL, &dst,
                                               strides, pad, pad) != dnnl_success ||
            dnnl_primitive_desc_iterator_create(&it, &desc, NULL, engine, NULL) != dnnl_success)
            continue;
        do {
            dnnl_primitive_desc_t pd = dnnl_primitive_desc_iterator_fetch(it);
            const char *impl = "";
            dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
            offered |= strstr(impl, "wino_2x3") != NULL;
            dnnl_primitive_desc_destroy(pd);
        } while (!offered && dnnl_primitive_desc_iterator_next(it) == dnnl_success);
        dnnl_primitive_desc_iterator_destroy(it);
    }
    dnnl_engine_destroy(engine);
    return offered;
}
#endif

/* Tagged weights (a model's, in inference): where the transformed weights are small
 * enough to be kept, the second call takes them from the cache. Each result must equal the
 * untagged call's bit for bit: with the scale changed in place (a new forward's folded
 * BatchNorm in the same buffer, other values) and with new weights after
 * cs_cpu_conv_forget. */
static void test_winograd_kept(const cs_conv_shape *fast, const float *x, float *wt,
                               float *scale, const float *shift, float *want, float *got) {
    cs_conv_shape tagged = *fast;
    tagged.weights_tag = cs_cpu_conv_new_tag();
    const size_t out = (size_t)fast->n * fast->o * fast->ho * fast->wo;
    const size_t weights = (size_t)fast->o * fast->c * 9;
    float *ws = g_new(float, cs_cpu_conv2d_forward_workspace(fast) + 1);
    float *tws = g_new(float, cs_cpu_conv2d_forward_workspace(&tagged) + 1);
    for (int round = 0; round < 4; round++) {
        if (round == 2) scale[0] *= 1.5f;                      /* same buffer, new values */
        if (round == 3) cs_cpu_conv_forget(tagged.weights_tag), wt[weights / 2] += 0.25f;
        cs_cpu_conv2d_forward(want, x, wt, scale, shift, fast, 1, ws);
        cs_cpu_conv2d_forward(got, x, wt, scale, shift, &tagged, 1, tws);
        CHECK_MSG(memcmp(got, want, sizeof(float) * out) == 0,
                  "Winograd with tagged weights, call %d: differs from the untagged call", round);
    }
    cs_cpu_conv_forget(tagged.weights_tag);
    g_free(ws), g_free(tws);
}

static void test_conv_winograd(GRand *rng, int n, int c, int o, int h, int w) {
    cs_conv_shape s = {.n = n, .c = c, .h = h, .w = w, .o = o, .k = 3, .stride = 1, .pad = 1,
                       .dil = 1, .x_nhwc = 1, .y_nhwc = 1};
    cs_conv_geometry(&s);
    const size_t in = (size_t)n * c * h * w, out = (size_t)n * o * s.ho * s.wo;
    float *x = random_floats(rng, in), *wt = random_floats(rng, (size_t)o * c * 9);
    float *scale = random_floats(rng, o), *shift = random_floats(rng, o);
    float *want = g_new(float, out), *got = g_new(float, out);
    CHECK_MSG(strcmp(cs_cpu_conv_engine(&s), "onednn") == 0, "direct engine: %s",
              cs_cpu_conv_engine(&s));
    cs_conv_shape fast = s;
    fast.winograd = 1;
    const char *engine = cs_cpu_conv_engine(&fast);
#if DNNL_VERSION_MAJOR < 3
    /* Where oneDNN 2.x offers its F(2x2, 3x3) kernel for bands of the map (3.x dropped it),
     * the engine must take it. */
    if (wino_2x3_offered(c, o, h, w))
        CHECK_MSG(strcmp(engine, "onednn-winograd") == 0, "%dx%dx%dx%d -> %d: engine %s", n, c, h,
                  w, o, engine);
    else
        printf("  (oneDNN offers no F(2x2, 3x3) Winograd kernel for %d -> %d channels on this "
               "CPU: the direct kernel runs)\n", c, o);
#endif
    printf("  %dx%dx%dx%d -> %d channels: %s\n", n, c, h, w, o, engine);
    const float *scales[3] = {scale, NULL, NULL}, *shifts[3] = {shift, shift, NULL};
    for (int e = 0; e < 3; e++) {
        float *ws = g_new(float, cs_cpu_conv2d_forward_workspace(&s) + 1);
        cs_cpu_conv2d_forward(want, x, wt, scales[e], shifts[e], &s, e == 0, ws);
        g_free(ws);
        ws = g_new(float, cs_cpu_conv2d_forward_workspace(&fast) + 1);
        cs_cpu_conv2d_forward(got, x, wt, scales[e], shifts[e], &fast, e == 0, ws);
        g_free(ws);
        const double err = check_max_abs_diff(got, want, out) / check_max_abs(want, out);
        printf("    epilogue %d: max |diff| %.2e x scale\n", e, err);
        CHECK_MSG(err <= WINOGRAD_TOL, "Winograd %dx%dx%dx%d, epilogue %d: %.2e x scale", n, c,
                  h, w, e, err);
    }
    test_winograd_kept(&fast, x, wt, scale, shift, want, got);
    g_free(x), g_free(wt), g_free(scale), g_free(shift), g_free(want), g_free(got);
}

/* ---- backward passes ------------------------------------------------------------------- */

/* A gradient buffer of an n x c x hw map, nonzero (gradients accumulate), in both layouts:
 * nchw[] for the NCHW kernel, nhwc[] for the NHWC one. */
typedef struct {
    float *nchw, *nhwc;
    int n, c, hw;
} grad_pair;

static grad_pair grad_pair_new(GRand *rng, int n, int c, int hw) {
    grad_pair g = {random_floats(rng, (size_t)n * c * hw), NULL, n, c, hw};
    g.nhwc = check_nhwc_of(g.nchw, n, c, hw);
    return g;
}

/* Compares the NHWC result (back in NCHW) with the NCHW one and frees both. */
static void grad_pair_check(grad_pair *g, const char *what) {
    float *back = nchw_of(g->nhwc, g->n, g->c, g->hw);
    expect_close(what, back, g->nchw, (size_t)g->n * g->c * g->hw);
    g_free(back), g_free(g->nchw), g_free(g->nhwc);
}

static void test_to_nchw_backward(GRand *rng, int n, int c, int hw) {
    float *dy = random_floats(rng, (size_t)n * c * hw);
    grad_pair dx = grad_pair_new(rng, n, c, hw);
    cs_cpu_accumulate(dx.nchw, dy, (size_t)n * c * hw);
    cs_cpu_nchw_to_nhwc(dx.nhwc, dy, n, c, hw, 1);
    grad_pair_check(&dx, "gradient of the layout pass, accumulated");
    float *nhwc = g_new(float, (size_t)n * c * hw), *want = check_nhwc_of(dy, n, c, hw);
    cs_cpu_nchw_to_nhwc(nhwc, dy, n, c, hw, 0);
    CHECK_MSG(memcmp(nhwc, want, sizeof(float) * n * c * hw) == 0,
              "NCHW -> NHWC of %dx%dx%d is not the transposition", n, c, hw);
    g_free(dy), g_free(nhwc), g_free(want);
}

static void test_upsample_backward(GRand *rng, int n, int c, int h, int w, int ho, int wo) {
    float *dy = random_floats(rng, (size_t)n * c * ho * wo), *dyt = check_nhwc_of(dy, n, c, ho * wo);
    grad_pair dx = grad_pair_new(rng, n, c, h * w);
    cs_cpu_upsample_bilinear_backward(dx.nchw, dy, n, c, h, w, ho, wo);
    cs_cpu_upsample_bilinear_backward_nhwc(dx.nhwc, dyt, n, c, h, w, ho, wo);
    char *what = g_strdup_printf("upsample backward %dx%dx%dx%d -> %dx%d", n, c, h, w, ho, wo);
    grad_pair_check(&dx, what);
    g_free(what), g_free(dy), g_free(dyt);
}

static void test_concat_backward(GRand *rng, int n, int hw) {
    const int ca = 5, cb = 16, cy = ca + cb;
    float *dy = random_floats(rng, (size_t)n * cy * hw), *dyt = check_nhwc_of(dy, n, cy, hw);
    grad_pair da = grad_pair_new(rng, n, ca, hw), db = grad_pair_new(rng, n, cb, hw);
    cs_cpu_copy_channels_backward(da.nchw, ca, dy, cy, 0, n, hw);
    cs_cpu_copy_channels_backward_nhwc(da.nhwc, ca, dyt, cy, 0, n, hw);
    cs_cpu_copy_channels_backward(db.nchw, cb, dy, cy, ca, n, hw);
    cs_cpu_copy_channels_backward_nhwc(db.nhwc, cb, dyt, cy, ca, n, hw);
    grad_pair_check(&da, "concatenation backward, first part");
    grad_pair_check(&db, "concatenation backward, second part");
    g_free(dy), g_free(dyt);
}

/* The four reductions' backward passes; x has repeated values, so that the maxima's ties
 * must go where the NCHW forms send them. */
static void test_reduce_backward(GRand *rng, int n, int c, int hw) {
    const size_t count = (size_t)n * c * hw;
    float *x = random_floats(rng, count);
    for (size_t i = 0; i < count; i++) x[i] = (float)(int)(4.0f * x[i]);
    float *xt = check_nhwc_of(x, n, c, hw);
    float *dg = random_floats(rng, (size_t)n * c), *dp = random_floats(rng, (size_t)n * hw);
    grad_pair g = grad_pair_new(rng, n, c, hw);
    cs_cpu_global_avgpool_backward(g.nchw, dg, n, c, hw);
    cs_cpu_global_avgpool_backward_nhwc(g.nhwc, dg, n, c, hw);
    grad_pair_check(&g, "global average backward");
    g = grad_pair_new(rng, n, c, hw);
    cs_cpu_global_maxpool_backward(g.nchw, dg, x, n, c, hw);
    cs_cpu_global_maxpool_backward_nhwc(g.nhwc, dg, xt, n, c, hw);
    grad_pair_check(&g, "global maximum backward");
    g = grad_pair_new(rng, n, c, hw);
    cs_cpu_channel_mean_backward(g.nchw, dp, n, c, hw);
    cs_cpu_channel_mean_backward_nhwc(g.nhwc, dp, n, c, hw);
    grad_pair_check(&g, "channel mean backward");
    g = grad_pair_new(rng, n, c, hw);
    cs_cpu_channel_max_backward(g.nchw, dp, x, n, c, hw);
    cs_cpu_channel_max_backward_nhwc(g.nhwc, dp, xt, n, c, hw);
    grad_pair_check(&g, "channel maximum backward");
    g_free(x), g_free(xt), g_free(dg), g_free(dp);
}

static void test_products_backward(GRand *rng, int n, int c, int hw) {
    const size_t count = (size_t)n * c * hw;
    float *x = random_floats(rng, count), *xt = check_nhwc_of(x, n, c, hw);
    float *dy = random_floats(rng, count), *dyt = check_nhwc_of(dy, n, c, hw);
    float *s = random_floats(rng, (size_t)n * c), *m = random_floats(rng, (size_t)n * hw);
    float *ds = random_floats(rng, (size_t)n * c), *ds2 = g_memdup2(ds, sizeof(float) * n * c);
    float *dm = random_floats(rng, (size_t)n * hw), *dm2 = g_memdup2(dm, sizeof(float) * n * hw);
    grad_pair dx = grad_pair_new(rng, n, c, hw);
    cs_cpu_mul_channel_backward(dx.nchw, ds, dy, x, s, n, c, hw);
    cs_cpu_mul_channel_backward_nhwc(dx.nhwc, ds2, dyt, xt, s, n, c, hw);
    grad_pair_check(&dx, "channel product backward, dx");
    expect_close("channel product backward, ds", ds2, ds, (size_t)n * c);
    dx = grad_pair_new(rng, n, c, hw);
    cs_cpu_mul_spatial_backward(dx.nchw, dm, dy, x, m, n, c, hw);
    cs_cpu_mul_spatial_backward_nhwc(dx.nhwc, dm2, dyt, xt, m, n, c, hw);
    grad_pair_check(&dx, "spatial product backward, dx");
    expect_close("spatial product backward, dm", dm2, dm, (size_t)n * hw);
    g_free(x), g_free(xt), g_free(dy), g_free(dyt), g_free(s), g_free(m);
    g_free(ds), g_free(ds2), g_free(dm), g_free(dm2);
}

/* Outlook attention on NHWC v and logits against the NCHW kernel: y and the kept
 * probabilities bit for bit (the same arithmetic, only the gathers differ), then the
 * backward pass onto nonzero dv and da. Sizes cross the 8-row tiles and the image border. */
static void test_outlook(GRand *rng, int n, int c, int heads, int h, int w) {
    const int hw = h * w, ca = heads * 81;
    const size_t vn = (size_t)n * c * hw, an = (size_t)n * ca * hw;
    const float scale = 1.0f / sqrtf((float)(c / heads));
    float *v = random_floats(rng, vn), *a = random_floats(rng, an);
    float *vt = check_nhwc_of(v, n, c, hw), *at = check_nhwc_of(a, n, ca, hw);
    float *y = g_new(float, vn), *yt = g_new(float, vn);
    float *prob = g_new(float, an), *probt = g_new(float, an);
    cs_cpu_outlook_attention(y, prob, v, a, n, c, heads, h, w, scale);
    cs_cpu_outlook_attention_nhwc(yt, probt, vt, at, n, c, heads, h, w, scale);
    float *back = nchw_of(yt, n, c, hw), *pback = nchw_of(probt, n, ca, hw);
    CHECK_MSG(memcmp(back, y, sizeof(float) * vn) == 0,
              "outlook attention %dx%dx%dx%d, %d heads, in NHWC: y differs", n, c, h, w, heads);
    CHECK_MSG(memcmp(pback, prob, sizeof(float) * an) == 0,
              "outlook attention in NHWC: probabilities differ");
    float *dy = random_floats(rng, vn), *dyt = check_nhwc_of(dy, n, c, hw);
    grad_pair dv = grad_pair_new(rng, n, c, hw), da = grad_pair_new(rng, n, ca, hw);
    cs_cpu_outlook_attention_backward(dv.nchw, da.nchw, dy, prob, v, n, c, heads, h, w, scale);
    cs_cpu_outlook_attention_backward_nhwc(dv.nhwc, da.nhwc, dyt, probt, vt, n, c, heads, h, w,
                                           scale);
    grad_pair_check(&dv, "outlook attention backward in NHWC, dv");
    grad_pair_check(&da, "outlook attention backward in NHWC, da");
    g_free(v), g_free(a), g_free(vt), g_free(at), g_free(y), g_free(yt), g_free(prob);
    g_free(probt), g_free(back), g_free(pback), g_free(dy), g_free(dyt);
}

/* Training BatchNorm on NHWC: statistics, the affine map (+ReLU) and the backward. */
static void test_batchnorm_nhwc(GRand *rng, int n, int c, int hw) {
    const size_t count = (size_t)n * c * hw;
    float *x = random_floats(rng, count), *xt = check_nhwc_of(x, n, c, hw);
    float *stats = g_new(float, 2 * c), *stats_t = g_new(float, 2 * c);
    cs_cpu_batchnorm_stats(stats, stats + c, x, n, c, hw);
    cs_cpu_batchnorm_stats_nhwc(stats_t, stats_t + c, xt, n, c, hw);
    expect_close("BatchNorm statistics in NHWC", stats_t, stats, 2 * (size_t)c);
    float *scale = random_floats(rng, c), *shift = random_floats(rng, c);
    float *y = g_new(float, count), *yt = g_new(float, count);
    cs_cpu_channel_affine(y, x, scale, shift, n, c, hw, 1);
    cs_cpu_channel_affine_nhwc(yt, xt, scale, shift, n, c, hw, 1);
    float *back = nchw_of(yt, n, c, hw);
    expect_close("BatchNorm affine map + ReLU in NHWC", back, y, count);
    float *dy = random_floats(rng, count), *dyt = check_nhwc_of(dy, n, c, hw);
    float *dgb = random_floats(rng, 2 * c), *dgb_t = g_memdup2(dgb, sizeof(float) * 2 * c);
    grad_pair dx = grad_pair_new(rng, n, c, hw);
    cs_cpu_batchnorm_backward(dx.nchw, dgb, dgb + c, dy, x, y, scale, stats, stats + c, n, c, hw);
    cs_cpu_batchnorm_backward_nhwc(dx.nhwc, dgb_t, dgb_t + c, dyt, xt, yt, scale, stats,
                                   stats + c, n, c, hw);
    grad_pair_check(&dx, "BatchNorm backward in NHWC, dx");
    expect_close("BatchNorm backward in NHWC, dgamma and dbeta", dgb_t, dgb, 2 * (size_t)c);
    g_free(x), g_free(xt), g_free(stats), g_free(stats_t), g_free(scale), g_free(shift);
    g_free(y), g_free(yt), g_free(back), g_free(dy), g_free(dyt), g_free(dgb), g_free(dgb_t);
}

/* The convolution's backward with x and dy in NHWC (dx then NHWC too) against NCHW. */
static void test_conv_backward_nhwc(GRand *rng, int bf16) {
    cs_conv_shape s = {.n = 2, .c = 24, .h = 15, .w = 13, .o = 40, .k = 3, .stride = 2, .pad = 1,
                       .dil = 1, .bf16 = bf16};
    cs_conv_geometry(&s);
    const size_t in = (size_t)s.n * s.c * s.h * s.w, out = (size_t)s.n * s.o * s.ho * s.wo,
                 nw = (size_t)s.o * s.c * 9;
    float *x = random_floats(rng, in), *w = random_floats(rng, nw), *dy = random_floats(rng, out);
    float *dw = random_floats(rng, nw), *dw_t = g_memdup2(dw, sizeof(float) * nw);
    grad_pair dx = grad_pair_new(rng, s.n, s.c, s.h * s.w);
    float *ws = g_new(float, cs_cpu_conv2d_backward_workspace(&s) + 1);
    cs_cpu_conv2d_backward(dx.nchw, dw, NULL, dy, x, w, &s, ws);
    g_free(ws);
    s.x_nhwc = s.y_nhwc = 1;
    CHECK(cs_cpu_conv2d_supports_nhwc(&s));
    float *xt = check_nhwc_of(x, s.n, s.c, s.h * s.w), *dyt = check_nhwc_of(dy, s.n, s.o, s.ho * s.wo);
    ws = g_new(float, cs_cpu_conv2d_backward_workspace(&s) + 1);
    cs_cpu_conv2d_backward(dx.nhwc, dw_t, NULL, dyt, xt, w, &s, ws);
    grad_pair_check(&dx, bf16 ? "convolution backward on NHWC, dx, bf16"
                              : "convolution backward on NHWC, dx, fp32");
    expect_close(bf16 ? "convolution backward on NHWC, dw, bf16"
                      : "convolution backward on NHWC, dw, fp32", dw_t, dw, nw);
    g_free(ws), g_free(x), g_free(w), g_free(dy), g_free(dw), g_free(dw_t), g_free(xt), g_free(dyt);
}

int main(void) {
    GRand *rng = g_rand_new_with_seed(11);
    test_to_nchw(rng, 1, 3, 7);
    test_to_nchw(rng, 2, 128, 64);
    test_upsample(rng, 1, 16, 8, 8, 16, 16);
    test_upsample(rng, 2, 7, 5, 6, 20, 24);
    test_upsample(rng, 1, 32, 16, 16, 128, 128);
    test_upsample(rng, 1, 3, 1, 1, 4, 4);
    test_concat(rng, 2, 33);
    for (int c = 1; c <= 40; c += 39) {
        test_reduce(rng, "global average", cs_cpu_global_avgpool, cs_cpu_global_avgpool_nhwc, 1, 2, c, 77);
        test_reduce(rng, "global maximum", cs_cpu_global_maxpool, cs_cpu_global_maxpool_nhwc, 1, 2, c, 77);
        test_reduce(rng, "channel mean", cs_cpu_channel_mean, cs_cpu_channel_mean_nhwc, 0, 2, c, 77);
        test_reduce(rng, "channel maximum", cs_cpu_channel_max, cs_cpu_channel_max_nhwc, 0, 2, c, 77);
    }
    test_products(rng, 2, 19, 45);
    test_outlook(rng, 2, 8, 2, 11, 9);
    test_outlook(rng, 1, 32, 4, 16, 20);
    test_conv_nhwc(rng, 0);
    test_conv_winograd(rng, 1, 128, 128, 128, 128);
    test_conv_winograd(rng, 3, 128, 96, 75, 100);
    test_conv_winograd(rng, 4, 128, 128, 64, 64);
    test_conv_winograd(rng, 1, 64, 64, 128, 128); /* the F(2x2, 3x3) kernel on every AVX-512 CPU seen */
    test_conv_winograd(rng, 2, 32, 32, 128, 128); /* the compact preset's: weights kept */
    if (!cs_cpu_bf16_unsupported()) test_conv_nhwc(rng, 1);
    test_to_nchw_backward(rng, 2, 37, 45);
    test_upsample_backward(rng, 1, 16, 8, 8, 16, 16);
    test_upsample_backward(rng, 2, 21, 5, 6, 20, 24);
    test_concat_backward(rng, 2, 33);
    test_reduce_backward(rng, 2, 40, 77);
    test_products_backward(rng, 2, 19, 45);
    test_batchnorm_nhwc(rng, 2, 37, 45);
    test_conv_backward_nhwc(rng, 0);
    if (!cs_cpu_bf16_unsupported()) test_conv_backward_nhwc(rng, 1);
    g_rand_free(rng);
    return check_summary("test_layout");
}
