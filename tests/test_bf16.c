/* test_bf16.c — the bfloat16 precision against float32 on the CPU (oneDNN on AMX /
 * AVX512-BF16), with stated tolerances:
 *
 *  1. every convolution path (3x3, strided, dilated, 1x1, strided 1x1, 7x7/2 from three
 *     channels, bias, folded-BatchNorm scale/shift + ReLU; batch 1 and 2; NCHW and NHWC
 *     activations), forward, backward-data and backward-weights:
 *     a. bf16 against float32 arithmetic on the same inputs rounded to bfloat16: only the
 *        summation order differs, so rel-L2 <= 1e-5 (this pins down what bf16 computes);
 *     b. bf16 against float32 on the unrounded inputs: rel-L2 <= 1e-2 and max |diff| <=
 *        3e-2 x max |fp32| (the cost of bfloat16), and rel-L2 >= 1e-5 (bf16 did round);
 *     (the weight gradient is float32 arithmetic in either precision: equal to the fp32
 *     one within 1e-5);
 *     c. the tiny problems that run on sgemm whatever the precision (a 1x1 map, one output
 *        channel: kernels/conv_cpu.c) give exactly the float32 result, and every other
 *        case runs on oneDNN;
 *  2. the whole network, four outputs, on a Kvasir-SEG image: the paper's network with the
 *     reference's random weights and the shipped default model: probabilities within 0.05
 *     on average (max 0.3), masks of the default model with Dice >= 0.98 between precisions;
 *  3. a training step of a fresh compact network (bf16 training's NHWC maps: BatchNorm,
 *     decoders and attention forward and backward, the layout passes between them): the
 *     loss within 1e-2 (relative) of fp32's, and the parameter gradient (rel-L2 over all
 *     parameters) within 4x of how far a float32 step's gradient moves when only its input
 *     is jittered by bfloat16's rounding (2^-9): an untrained network's gradient is that
 *     sensitive (measured: jitter 0.26, bf16 0.50).
 * Where the CPU has no bfloat16 instructions, the test checks that "bf16" falls back to
 * fp32 with a note, and skips the rest (ctest: return code 77); where it has them without
 * AMX, that "bf16" is set with a note saying it will not be faster. */
#include <string.h>

#include "check.h"
#include "condseg.h"
#include "golden.h"
#include "kernels.h"
#include "model_internal.h"

#define EXACT_TOL 1e-5
#define BF16_REL_L2 1e-2
#define BF16_MAX_REL 3e-2
#define BF16_MIN_REL_L2 1e-5

/* float -> bfloat16 -> float, round to nearest even (what oneDNN's conversions do). */
static float round_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&x, &u, 4);
    return x;
}

static float *random_floats(GRand *rng, size_t n, double scale) {
    float *v = g_new(float, n);
    for (size_t i = 0; i < n; i++) v[i] = (float)(scale * (2.0 * g_rand_double(rng) - 1.0));
    return v;
}

static float *rounded_copy(const float *v, size_t n) {
    float *r = g_new(float, n);
    for (size_t i = 0; i < n; i++) r[i] = round_bf16(v[i]);
    return r;
}

static double rel_l2(const float *a, const float *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)a[i] - ref[i];
        num += d * d, den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

typedef struct {
    const char *name;
    int n, c, h, w, o, k, stride, pad, dil;
    int bias, affine, relu, nhwc;
    int small; /* expected on the sgemm engine */
} conv_case;

static const conv_case cases[] = {
    {"3x3", 1, 32, 20, 18, 48, 3, 1, 1, 1, 0, 0, 0, 0, 0},
    {"3x3 bias batch 2", 2, 24, 13, 15, 32, 3, 1, 1, 1, 1, 0, 0, 0, 0},
    {"3x3 BN+ReLU", 1, 64, 16, 16, 64, 3, 1, 1, 1, 0, 1, 1, 0, 0},
    {"3x3 BN+ReLU NHWC", 2, 64, 16, 16, 32, 3, 1, 1, 1, 0, 1, 1, 1, 0},
    {"3x3 batch 8 at 8x8", 8, 32, 8, 8, 32, 3, 1, 1, 1, 0, 0, 0, 0, 0},
    {"3x3 s2", 2, 32, 17, 16, 64, 3, 2, 1, 1, 0, 0, 0, 0, 0},
    {"3x3 dil 2", 1, 32, 16, 16, 32, 3, 1, 2, 2, 0, 0, 0, 0, 0},
    {"3x3 dil 6", 1, 32, 16, 16, 32, 3, 1, 6, 6, 0, 1, 1, 0, 0},
    {"1x1", 2, 64, 12, 12, 128, 1, 1, 0, 1, 0, 1, 0, 0, 0},
    {"1x1 NHWC", 1, 128, 8, 8, 64, 1, 1, 0, 1, 1, 0, 0, 1, 0},
    {"1x1 s2", 2, 64, 16, 16, 128, 1, 2, 0, 1, 0, 0, 0, 0, 0},
    {"Linear (1x1 on 1x1)", 2, 128, 1, 1, 8, 1, 1, 0, 1, 1, 0, 0, 0, 1},
    {"7x7 s2 from 3", 1, 3, 32, 32, 64, 7, 2, 3, 1, 0, 1, 1, 0, 0},
    {"7x7 (2 -> 1)", 2, 2, 16, 16, 1, 7, 1, 3, 1, 0, 0, 0, 0, 1},
};

typedef struct {
    float *y, *dx, *dw;
} conv_result;

/* One forward and one backward of case `cc` in the given precision. x is NCHW; with
 * cc->nhwc the forward runs on its NHWC copy and gives y in NHWC, compared as NCHW. */
static conv_result run_case(const conv_case *cc, const cs_conv_shape *shape, const float *x,
                            const float *w, const float *scale, const float *shift,
                            const float *dy, int bf16) {
    cs_conv_shape s = *shape;
    s.bf16 = bf16;
    const size_t in = (size_t)s.n * s.c * s.h * s.w, out = (size_t)s.n * s.o * s.ho * s.wo;
    conv_result r = {g_new0(float, out), g_new0(float, in), g_new0(float, (size_t)s.o * s.c * s.k * s.k)};
    float *xf = cc->nhwc ? check_nhwc_of(x, s.n, s.c, s.h * s.w) : NULL;
    s.x_nhwc = s.y_nhwc = cc->nhwc;
    float *ws = g_new(float, cs_cpu_conv2d_forward_workspace(&s) + 1);
    cs_cpu_conv2d_forward(r.y, xf ? xf : x, w, scale, shift, &s, cc->relu, ws);
    g_free(ws);
    if (cc->nhwc) {
        float *nchw = g_new(float, out);
        cs_cpu_nhwc_to_nchw(nchw, r.y, s.n, s.o, s.ho * s.wo);
        g_free(r.y);
        r.y = nchw;
    }
    g_free(xf);
    s.x_nhwc = s.y_nhwc = 0;
    ws = g_new(float, cs_cpu_conv2d_backward_workspace(&s) + 1);
    cs_cpu_conv2d_backward(r.dx, r.dw, NULL, dy, x, w, &s, ws);
    g_free(ws);
    return r;
}

static void result_free(conv_result *r) { g_free(r->y), g_free(r->dx), g_free(r->dw); }

static void compare_exact(const char *name, const char *what, const float *a, const float *ref,
                          size_t n) {
    const double e = rel_l2(a, ref, n);
    CHECK_MSG(e <= EXACT_TOL, "%s %s: bf16 vs fp32 on bf16-rounded inputs: rel-L2 %.2e > %.0e",
              name, what, e, EXACT_TOL);
}

static void compare_cost(const char *name, const char *what, const float *a, const float *ref,
                         size_t n, double *worst) {
    const double e = rel_l2(a, ref, n), m = check_max_abs_diff(a, ref, n) / check_max_abs(ref, n);
    CHECK_MSG(e <= BF16_REL_L2 && m <= BF16_MAX_REL,
              "%s %s: bf16 vs fp32: rel-L2 %.2e (limit %.0e), max %.2e (limit %.0e)", name, what,
              e, BF16_REL_L2, m, BF16_MAX_REL);
    CHECK_MSG(e >= BF16_MIN_REL_L2, "%s %s: bf16 equals fp32 (rel-L2 %.1e): nothing was rounded",
              name, what, e);
    if (e > *worst) *worst = e;
}

static void test_conv_case(const conv_case *cc, GRand *rng, double *worst) {
    cs_conv_shape s = {.n = cc->n, .c = cc->c, .h = cc->h, .w = cc->w, .o = cc->o, .k = cc->k,
                       .stride = cc->stride, .pad = cc->pad, .dil = cc->dil};
    cs_conv_geometry(&s);
    const size_t in = (size_t)s.n * s.c * s.h * s.w, out = (size_t)s.n * s.o * s.ho * s.wo;
    const size_t nw = (size_t)s.o * s.c * s.k * s.k;
    float *x = random_floats(rng, in, 1.0), *w = random_floats(rng, nw, 1.0 / sqrt(s.c * s.k * s.k));
    float *dy = random_floats(rng, out, 1.0);
    float *scale = cc->affine ? random_floats(rng, s.o, 2.0) : NULL;
    float *shift = cc->affine || cc->bias ? random_floats(rng, s.o, 0.5) : NULL;
    float *xr = rounded_copy(x, in), *wr = rounded_copy(w, nw), *dyr = rounded_copy(dy, out);

    s.bf16 = 1;
    const char *engine = cs_cpu_conv_engine(&s);
    s.bf16 = 0;
    CHECK_MSG(strcmp(engine, cc->small ? "sgemm" : "onednn") == 0, "%s: runs on %s", cc->name,
              engine);
    conv_result b = run_case(cc, &s, x, w, scale, shift, dy, 1);
    conv_result f = run_case(cc, &s, x, w, scale, shift, dy, 0);
    conv_result fr = run_case(cc, &s, xr, wr, scale, shift, dyr, 0);
    if (cc->small) {
        CHECK_MSG(!memcmp(b.y, f.y, sizeof(float) * out) && !memcmp(b.dx, f.dx, sizeof(float) * in) &&
                      !memcmp(b.dw, f.dw, sizeof(float) * nw),
                  "%s: on sgemm, bf16 should give exactly the fp32 results", cc->name);
        goto done;
    }
    compare_exact(cc->name, "forward", b.y, fr.y, out);
    compare_exact(cc->name, "input gradient", b.dx, fr.dx, in);
    /* The weight gradient is float32 arithmetic in either precision (conv_dnnl.c). */
    compare_exact(cc->name, "weight gradient", b.dw, f.dw, nw);
    compare_cost(cc->name, "forward", b.y, f.y, out, worst);
    compare_cost(cc->name, "input gradient", b.dx, f.dx, in, worst);
done:
    result_free(&b), result_free(&f), result_free(&fr);
    g_free(x), g_free(w), g_free(dy), g_free(scale), g_free(shift);
    g_free(xr), g_free(wr), g_free(dyr);
}

/* ---- the whole network -------------------------------------------------------------------- */

static float *forward_all(cs_model *model, const cs_image *img, const char *precision,
                          unsigned outputs, int k) {
    GError *error = NULL;
    CHECK(cs_model_set_precision(model, precision, NULL, &error));
    const int size = cs_model_input_size(model);
    float *prob = g_new(float, (size_t)k * size * size);
    CHECK_MSG(cs_model_predict_image(model, img, outputs, prob, &error), "%s",
              error ? error->message : "");
    g_clear_error(&error);
    return prob;
}

static double mask_dice(const float *a, const float *b, size_t n) {
    double both = 0, sum = 0;
    for (size_t i = 0; i < n; i++) {
        const int pa = a[i] > 0.5f, pb = b[i] > 0.5f;
        both += pa && pb, sum += pa + pb;
    }
    return sum > 0 ? 2 * both / sum : 1.0;
}

static void test_network(const char *label, const char *weights, const cs_image *img,
                         gboolean check_masks) {
    GError *error = NULL;
    cs_model *model = cs_model_load(weights, &error);
    CHECK_MSG(model != NULL, "%s: %s", weights, error ? error->message : "");
    if (!model) return;
    const int size = cs_model_input_size(model);
    const size_t plane = (size_t)size * size;
    float *f = forward_all(model, img, "fp32", CS_OUT_ALL, 4);
    float *b = forward_all(model, img, "bf16", CS_OUT_ALL, 4);
    static const char *const names[] = {"mask", "fg", "bg", "uncertainty"};
    for (int i = 0; i < 4; i++) {
        const float *fi = f + i * plane, *bi = b + i * plane;
        double mean = 0;
        for (size_t p = 0; p < plane; p++) mean += fabs((double)fi[p] - bi[p]);
        mean /= plane;
        const double max = check_max_abs_diff(fi, bi, plane);
        printf("  %s %-11s: probabilities bf16 - fp32: mean |diff| %.2e, max %.2e\n", label,
               names[i], mean, max);
        CHECK_MSG(mean <= 0.05 && max <= 0.3, "%s %s: mean |diff| %.3f (limit 0.05), max %.3f "
                  "(limit 0.3)", label, names[i], mean, max);
        CHECK_MSG(mean > 0, "%s %s: bf16 gave exactly the fp32 probabilities", label, names[i]);
    }
    if (check_masks) {
        const double dice = mask_dice(f, b, plane);
        printf("  %s mask Dice bf16 vs fp32: %.4f\n", label, dice);
        CHECK_MSG(dice >= 0.98, "%s: mask Dice between precisions %.4f < 0.98", label, dice);
    }
    g_free(f), g_free(b);
    cs_model_free(model);
}

/* One stage-2 training step of a fresh compact network (seed 5) in `precision`, its input
 * scaled pixel by pixel by 1 +- jitter: its loss, and the parameter gradient into grads
 * (n_trainable floats). */
static double training_step(const char *precision, double jitter, float *grads, size_t n_trainable) {
    enum { batch = 2, size = 64 };
    const size_t plane = size * size, count = batch * plane;
    cs_model *m = cs_model_new(CS_ARCH_CONDSEG, "condseg-compact", 5, NULL);
    CHECK(cs_model_set_precision(m, precision, NULL, NULL));
    GRand *rng = g_rand_new_with_seed(7);
    float *x = random_floats(rng, 3 * count, 1.0), *y1 = g_new(float, count),
          *y2 = g_new(float, count);
    for (size_t i = 0; i < 3 * count; i++)
        x[i] *= (float)(1.0 + jitter * (g_rand_boolean(rng) ? 1 : -1));
    for (size_t i = 0; i < count; i++) {
        const double dy = (double)(i % plane / size) / size - 0.45,
                     dx = (double)(i % size) / size - 0.55;
        y1[i] = dx * dx + dy * dy < 0.08 ? 1.0f : 0.0f;
        y2[i] = 1.0f - y1[i];
    }
    cs_trainer *t = cs_trainer_new(m, 1e-4, 1e-4, TRUE);
    const double loss = cs_trainer_forward_backward(t, x, NULL, y1, y2, batch, size, NULL, NULL);
    CHECK((size_t)m->params->n_trainable == n_trainable);
    memcpy(grads, m->params->grads, sizeof(float) * n_trainable);
    cs_trainer_free(t);
    cs_model_free(m);
    g_rand_free(rng);
    g_free(x), g_free(y1), g_free(y2);
    return loss;
}

static void test_training_step(void) {
    cs_model *probe = cs_model_new(CS_ARCH_CONDSEG, "condseg-compact", 5, NULL);
    const size_t n = (size_t)probe->params->n_trainable;
    cs_model_free(probe);
    float *g32 = g_new(float, n), *g16 = g_new(float, n);
    float *gj = g_new(float, n);
    const double l32 = training_step("fp32", 0, g32, n), l16 = training_step("bf16", 0, g16, n);
    training_step("fp32", 1.0 / 512, gj, n);
    const double loss_rel = fabs(l16 - l32) / fabs(l32), grad_rel = rel_l2(g16, g32, n),
                 jitter_rel = rel_l2(gj, g32, n);
    CHECK_MSG(loss_rel <= 1e-2, "training step loss: bf16 %.6f vs fp32 %.6f", l16, l32);
    CHECK_MSG(grad_rel <= 4 * jitter_rel && grad_rel >= BF16_MIN_REL_L2,
              "training step gradient: rel-L2 %.2e (expected 1e-5 .. 4 x %.2e)", grad_rel,
              jitter_rel);
    printf("compact training step: loss bf16 %.6f vs fp32 %.6f (relative %.1e), gradient "
           "rel-L2 %.2e (an fp32 step on a jittered input: %.2e)\n", l16, l32, loss_rel,
           grad_rel, jitter_rel);
    g_free(g32), g_free(g16), g_free(gj);
}

int main(void) {
    const char *why = cs_cpu_bf16_unsupported();
    if (why) {
        cs_model *m = cs_model_new(CS_ARCH_CONDSEG, "condseg-compact", 1, NULL);
        char *note = NULL;
        CHECK(cs_model_set_precision(m, "bf16", &note, NULL));
        CHECK(note != NULL && strcmp(cs_model_precision(m), "fp32") == 0);
        printf("SKIPPED: %s (the fallback to fp32 was checked: %s)\n", why, note ? note : "");
        g_free(note);
        cs_model_free(m);
        return check_failures ? 1 : 77;
    }
    GRand *rng = g_rand_new_with_seed(20251201);
    double worst = 0;
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) test_conv_case(&cases[i], rng, &worst);
    printf("%zu convolution cases, forward and backward: bf16 = fp32 on rounded inputs within "
           "%.0e; against fp32, worst rel-L2 %.2e\n", G_N_ELEMENTS(cases), EXACT_TOL, worst);
    g_rand_free(rng);
    test_training_step();

    GError *error = NULL;
    cs_model *any = cs_model_new(CS_ARCH_STAGE1, "condseg-compact", 1, NULL);
    CHECK(!cs_model_set_precision(any, "fp16", NULL, &error) && error &&
          error->code == CS_ERROR_ARG);
    g_clear_error(&error);
    /* bf16 is set; without AMX the user is told it will not be faster. */
    char *note = NULL;
    CHECK(cs_model_set_precision(any, "bf16", &note, NULL));
    CHECK(strcmp(cs_model_precision(any), "bf16") == 0);
    CHECK_MSG(g_strcmp0(note, cs_cpu_bf16_slow()) == 0, "precision note '%s', expected '%s'",
              note ? note : "(none)", cs_cpu_bf16_slow() ? cs_cpu_bf16_slow() : "(none)");
    if (note) printf("bf16 note: %s\n", note);
    g_free(note);
    cs_model_free(any);

    const char *data = g_getenv("CONDSEG_DATA");
    char *image_path = g_build_filename(data ? data : ".", "kvasir-seg", "images",
                                        "cju0s690hkp960855tjuaqvv0.jpg", NULL);
    cs_image *img = cs_image_load_bgr(image_path, &error);
    CHECK_MSG(img != NULL, "%s", error ? error->message : "");
    if (img) {
        char *full = golden_path("full_weights.safetensors");
        test_network("paper network (reference weights)", full, img, FALSE);
        g_free(full);
        char *shipped = g_build_filename(g_getenv("CONDSEG_SOURCE"), "models",
                                         "condseg-default.safetensors", NULL);
        test_network("default model", shipped, img, TRUE);
        g_free(shipped);
        cs_image_free(img);
    }
    g_free(image_path);
    return check_summary("test_bf16");
}
