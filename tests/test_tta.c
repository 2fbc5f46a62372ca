/* test_tta.c — test-time augmentation (cs_model_set_tta) and the uncertainty shown to
 * users (cs_prob_to_uncertainty), through the public API only, on the shipped default
 * model:
 *  - each TTA set's four outputs equal the mean the test computes itself: the network run
 *    without TTA on the input and on each mirrored copy, every output mirrored back;
 *  - an input that is its own mirror image gives the same answer from every view, so its
 *    TTA output is the mean of the plain output's mirrors, and is itself mirror-symmetric;
 *  - TTA off is the plain run, bit for bit; the progress runs once from 0 to 1 over all views;
 *  - the uncertainty is the binary entropy -(p log2 p + (1-p) log2(1-p)), computed here
 *    directly in double, within [0, 1], 0 at p = 0 and 1, 1 at p = 0.5, u(p) = u(1 - p).
 * (tests/test_default_model.py checks the TTA output of a Kvasir-SEG image against the
 * PyTorch reference.) */
#include <string.h>

#include "check.h"
#include "condseg.h"

#define SIZE 64          /* small: the network takes any multiple of 16 */
#define BATCH 2
#define PLANE ((size_t)SIZE * SIZE)
#define TOL 1e-6         /* float32 sums of at most four probabilities */

/* dst = the view of src: bit 0 mirrors left-right, bit 1 top-bottom; `n` planes. */
static void mirror(const float *src, float *dst, int n, int view) {
    for (int k = 0; k < n; k++)
        for (int y = 0; y < SIZE; y++)
            for (int x = 0; x < SIZE; x++) {
                const int sx = view & 1 ? SIZE - 1 - x : x, sy = view & 2 ? SIZE - 1 - y : y;
                dst[k * PLANE + (size_t)y * SIZE + x] = src[k * PLANE + (size_t)sy * SIZE + sx];
            }
}

/* The four outputs (4 x BATCH x PLANE) of one run at the model's current TTA set. */
static float *run_all(cs_model *model, const float *input) {
    float *out = g_new(float, 4 * BATCH * PLANE);
    float *ptr[4] = {out, out + BATCH * PLANE, out + 2 * BATCH * PLANE, out + 3 * BATCH * PLANE};
    GError *error = NULL;
    const gboolean ok = cs_model_forward(model, input, BATCH, SIZE, SIZE, CS_OUT_ALL, ptr, &error);
    CHECK_MSG(ok, "forward: %s", error ? error->message : "");
    g_clear_error(&error);
    return out;
}

/* The TTA mean as the test defines it: plain runs on mirrored inputs, mirrored back. */
static float *expected_mean(cs_model *model, const float *input, unsigned flips) {
    cs_model_set_tta(model, 0);
    double *sum = g_new0(double, 4 * BATCH * PLANE);
    float *view_input = g_new(float, 3 * BATCH * PLANE), *back = g_new(float, 4 * BATCH * PLANE);
    int views = 0;
    for (int view = 0; view < 4; view++) {
        if (view && !(flips & (1u << (view - 1)))) continue;
        mirror(input, view_input, 3 * BATCH, view);
        float *out = run_all(model, view_input);
        mirror(out, back, 4 * BATCH, view);
        for (size_t i = 0; i < 4 * BATCH * PLANE; i++) sum[i] += back[i];
        g_free(out);
        views++;
    }
    float *mean = g_new(float, 4 * BATCH * PLANE);
    for (size_t i = 0; i < 4 * BATCH * PLANE; i++) mean[i] = (float)(sum[i] / views);
    CHECK(views == cs_tta_views(flips));
    g_free(sum), g_free(view_input), g_free(back);
    return mean;
}

/* A real Kvasir-SEG frame at SIZE x SIZE, BGR / 255, twice: the image and its mirror. */
static float *test_input(void) {
    const char *data = g_getenv("CONDSEG_DATA");
    char *path = g_build_filename(data ? data : ".", "kvasir-seg", "images",
                                  "cju0s690hkp960855tjuaqvv0.jpg", NULL);
    GError *error = NULL;
    cs_image *image = cs_image_load_bgr(path, &error);
    CHECK_MSG(image != NULL, "%s", error ? error->message : "");
    g_clear_error(&error);
    g_free(path);
    float *input = g_new0(float, 3 * BATCH * PLANE);
    if (!image) return input;
    uint8_t *small = g_new(uint8_t, 3 * PLANE);
    cs_resize_linear_u8(image->data, image->width, image->height, small, SIZE, SIZE, 3);
    for (size_t p = 0; p < PLANE; p++)
        for (int c = 0; c < 3; c++) input[c * PLANE + p] = small[3 * p + c] / 255.0f;
    mirror(input, input + 3 * PLANE, 3, 3);   /* the second image: a half turn of the first */
    g_free(small);
    cs_image_free(image);
    return input;
}

static void check_tta_is_mean_of_views(cs_model *model, const float *input) {
    const unsigned sets[] = {CS_TTA_HFLIP, CS_TTA_VFLIP, CS_TTA_HVFLIP,
                             CS_TTA_HFLIP | CS_TTA_VFLIP, CS_TTA_ALL};
    for (size_t s = 0; s < G_N_ELEMENTS(sets); s++) {
        float *want = expected_mean(model, input, sets[s]);
        cs_model_set_tta(model, sets[s]);
        CHECK(cs_model_tta(model) == sets[s]);
        float *got = run_all(model, input);
        const double err = check_max_abs_diff(got, want, 4 * BATCH * PLANE);
        printf("TTA set 0x%x (%d views): max |TTA - mean of the views| = %.2e\n", sets[s],
               cs_tta_views(sets[s]), err);
        CHECK_MSG(err <= TOL, "TTA set 0x%x: %.3e above %.0e", sets[s], err, TOL);
        g_free(want), g_free(got);
    }
}

/* An input equal to its own mirrors: every view sees the same picture. */
static void check_symmetric_input(cs_model *model, const float *input) {
    float *sym = g_new(float, 3 * BATCH * PLANE), *tmp = g_new(float, 3 * BATCH * PLANE);
    memcpy(sym, input, sizeof(float) * 3 * BATCH * PLANE);
    for (int view = 1; view <= 2; view++) {    /* symmetrise left-right, then top-bottom */
        mirror(sym, tmp, 3 * BATCH, view);
        for (size_t i = 0; i < 3 * BATCH * PLANE; i++) sym[i] = 0.5f * (sym[i] + tmp[i]);
    }
    mirror(sym, tmp, 3 * BATCH, 3);
    CHECK(check_max_abs_diff(sym, tmp, 3 * BATCH * PLANE) == 0.0);
    cs_model_set_tta(model, 0);
    float *plain = run_all(model, sym);
    cs_model_set_tta(model, CS_TTA_ALL);
    float *tta = run_all(model, sym);
    /* every view's output is the plain output itself, then mirrored back */
    double *mean = g_new0(double, 4 * BATCH * PLANE);
    float *view_out = g_new(float, 4 * BATCH * PLANE);
    for (int view = 0; view < 4; view++) {
        mirror(plain, view_out, 4 * BATCH, view);
        for (size_t i = 0; i < 4 * BATCH * PLANE; i++) mean[i] += view_out[i] / 4.0;
    }
    double err = 0, asym = 0;
    for (size_t i = 0; i < 4 * BATCH * PLANE; i++) err = fmax(err, fabs(tta[i] - mean[i]));
    for (int view = 1; view < 4; view++) {
        mirror(tta, view_out, 4 * BATCH, view);
        asym = fmax(asym, check_max_abs_diff(tta, view_out, 4 * BATCH * PLANE));
    }
    printf("symmetric input: max |TTA - mean of the plain output's mirrors| = %.2e, TTA output "
           "vs its mirrors %.2e\n", err, asym);
    CHECK_MSG(err <= TOL, "symmetric input: %.3e", err);
    CHECK_MSG(asym <= TOL, "the TTA output of a symmetric input is not symmetric: %.3e", asym);
    g_free(sym), g_free(tmp), g_free(plain), g_free(tta), g_free(mean), g_free(view_out);
}

static void on_progress(double fraction, void *user_data) {
    double *last = user_data;
    CHECK_MSG(fraction >= last[0] - 1e-12 && fraction <= 1.0 + 1e-12,
              "progress went from %.3f to %.3f", last[0], fraction);
    last[0] = fraction;
}

static void check_plain_and_progress(cs_model *model, const float *input) {
    cs_model_set_tta(model, 0);
    float *a = run_all(model, input);
    cs_model_set_tta(model, CS_TTA_ALL);
    cs_model_set_tta(model, 0);
    float *b = run_all(model, input);
    CHECK_MSG(check_max_abs_diff(a, b, 4 * BATCH * PLANE) == 0.0, "TTA off is not the plain run");
    cs_model_set_tta(model, 0xff);
    CHECK(cs_model_tta(model) == CS_TTA_ALL);
    CHECK(cs_tta_views(0) == 1 && cs_tta_views(CS_TTA_DEFAULT) == 2 && cs_tta_views(CS_TTA_ALL) == 4);
    double last[1] = {0};
    cs_model_set_progress(model, on_progress, last);
    g_free(run_all(model, input));
    CHECK_MSG(fabs(last[0] - 1.0) < 1e-9, "progress ended at %.3f", last[0]);
    cs_model_set_progress(model, NULL, NULL);
    g_free(a), g_free(b);
}

static double entropy_bits(double p) {
    return (p > 0 ? -p * log2(p) : 0) + (p < 1 ? -(1 - p) * log2(1 - p) : 0);
}

static void check_uncertainty(void) {
    enum { N = 1003 };
    float p[N], u[N], mirrored[N], q[N];
    for (int i = 0; i < N; i++) p[i] = (float)i / (N - 1), q[i] = 1.0f - p[i];
    cs_prob_to_uncertainty(p, N, u);
    cs_prob_to_uncertainty(q, N, mirrored);
    double err = 0, lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < N; i++) {
        err = fmax(err, fabs(u[i] - entropy_bits(p[i])));
        lo = fmin(lo, u[i]), hi = fmax(hi, u[i]);
    }
    printf("uncertainty: max |u - entropy| = %.2e, range [%g, %g]\n", err, lo, hi);
    CHECK_MSG(err <= 1e-6, "uncertainty differs from the binary entropy by %.3e", err);
    CHECK(lo == 0.0f && hi == 1.0f && u[0] == 0.0f && u[N - 1] == 0.0f && u[(N - 1) / 2] == 1.0f);
    CHECK(check_max_abs_diff(u, mirrored, N) <= 1e-6);
    const float odd[4] = {-0.5f, 1.5f, 1e-30f, 0.999999f};
    float odd_u[4];
    cs_prob_to_uncertainty(odd, 4, odd_u);
    CHECK(odd_u[0] == 0.0f && odd_u[1] == 0.0f);             /* clamped to [0, 1] */
    CHECK(odd_u[2] >= 0.0f && odd_u[2] < 1e-20f && odd_u[3] > 0.0f && odd_u[3] < 1e-4f);
    float in_place[3] = {0.5f, 0.25f, 0.0f};
    cs_prob_to_uncertainty(in_place, 3, in_place);
    CHECK(fabs(in_place[0] - 1.0) < 1e-7 && fabs(in_place[1] - entropy_bits(0.25)) < 1e-6 &&
          in_place[2] == 0.0f);
}

int main(void) {
    check_uncertainty();
    const char *source = g_getenv("CONDSEG_SOURCE");
    char *weights = g_build_filename(source ? source : ".", "models",
                                     "condseg-default.safetensors", NULL);
    GError *error = NULL;
    cs_model *model = cs_model_load(weights, &error);
    CHECK_MSG(model != NULL, "%s: %s", weights, error ? error->message : "");
    g_clear_error(&error);
    g_free(weights);
    if (!model) return check_summary("test_tta");
    float *input = test_input();
    check_tta_is_mean_of_views(model, input);
    check_symmetric_input(model, input);
    check_plain_and_progress(model, input);
    g_free(input);
    cs_model_free(model);
    return check_summary("test_tta");
}
