/* test_layout.c — the NHWC forms that inference uses between oneDNN convolutions, against
 * the NCHW operations they replace (the same arithmetic, so max |diff| <= 1e-6 x scale):
 * the layout pass back to NCHW, bilinear upsampling (x2, x4, odd sizes, batches), channel
 * concatenation, the global poolings, channel reductions and products of the attention
 * blocks (bit-identical), and a convolution taking and giving NHWC (fp32 and bf16). */
#include <string.h>

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
    g_free(ws), g_free(x), g_free(w), g_free(scale), g_free(shift), g_free(want), g_free(got);
    g_free(xt), g_free(back);
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
    test_conv_nhwc(rng, 0);
    if (!cs_cpu_bf16_unsupported()) test_conv_nhwc(rng, 1);
    g_rand_free(rng);
    return check_summary("test_layout");
}
