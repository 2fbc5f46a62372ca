/* test_augment.c — the spatial augmentations (augment.h) and the stage-1 photometric
 * augmentation (data.h), against OpenCV and torchvision results written by
 * tools/golden_augment.py ($CONDSEG_GOLDEN/augment_golden.safetensors).
 *
 * Rotation: bit-exact with cv2.warpAffine (INTER_LINEAR and INTER_NEAREST,
 * BORDER_REFLECT_101) for every case and angle; flips and dropout against direct index
 * formulas; photometric: within 1e-5 absolute of torchvision 0.14 for every parameter
 * set (the differences come from float32 summation order in torch's mean, kernel sum and
 * convolution, about 1e-7); parameter draws: ranges and frequencies.
 */
#include <glib.h>
#include <json-glib/json-glib.h>
#include <string.h>

#include "augment.h"
#include "check.h"
#include "data.h"
#include "golden.h"

#define PHOTOMETRIC_TOL 1e-5

/* A JSON array of objects from the golden file's metadata (unref the parser). */
static JsonArray *metadata_array(const cs_safetensors *gold, const char *key,
                                 JsonParser **parser) {
    const char *text = cs_st_metadata(gold, key);
    CHECK_MSG(text != NULL, "golden file has no '%s' metadata", key);
    *parser = json_parser_new();
    GError *error = NULL;
    if (!text || !json_parser_load_from_data(*parser, text, -1, &error)) {
        if (error) {
            CHECK_MSG(0, "metadata '%s': %s", key, error->message);
            g_error_free(error);
        }
        return NULL;
    }
    JsonNode *root = json_parser_get_root(*parser);
    return root && JSON_NODE_HOLDS_ARRAY(root) ? json_node_get_array(root) : NULL;
}

/* A uint8 [h, w, c] golden tensor as a new cs_image, or NULL (a failure). */
static cs_image *golden_image(const cs_safetensors *gold, const char *name) {
    const cs_st_tensor *t = golden_tensor(gold, name);
    if (!t) return NULL;
    if (t->dtype != CS_DT_U8 || t->ndim != 3) {
        CHECK_MSG(0, "%s: expected a uint8 [h, w, c] tensor", name);
        return NULL;
    }
    cs_image *image = cs_image_new((int)t->shape[1], (int)t->shape[0], (int)t->shape[2]);
    memcpy(image->data, t->data, t->nbytes);
    return image;
}

typedef struct {
    size_t differing, total;
    int max_diff;
} byte_diff;

static byte_diff compare_bytes(const uint8_t *got, const uint8_t *want, size_t n) {
    byte_diff d = {0, n, 0};
    for (size_t i = 0; i < n; i++) {
        int e = abs((int)got[i] - (int)want[i]);
        if (e) {
            d.differing++;
            if (e > d.max_diff) d.max_diff = e;
        }
    }
    return d;
}

static size_t image_bytes(const cs_image *im) {
    return (size_t)im->width * (size_t)im->height * (size_t)im->channels;
}

// ---------------------------------------------------------------------------------
// rotation

static void test_rotate(const cs_safetensors *gold) {
    JsonParser *parser = NULL;
    JsonArray *cases = metadata_array(gold, "rotate", &parser);
    int n_checked = 0;
    size_t all_differing = 0, all_total = 0;
    int all_max = 0;
    for (guint i = 0; cases && i < json_array_get_length(cases); i++) {
        JsonObject *c = json_array_get_object_element(cases, i);
        const char *name = json_object_get_string_member(c, "name");
        JsonArray *angles = json_object_get_array_member(c, "angles");
        JsonArray *interps = json_object_get_array_member(c, "interps");
        char *src_name = g_strdup_printf("rotate/%s/src", name);
        cs_image *src = golden_image(gold, src_name);
        g_free(src_name);
        if (!src) continue;
        cs_image *got = cs_image_new(src->width, src->height, src->channels);
        for (guint m = 0; m < json_array_get_length(interps); m++) {
            const char *interp = json_array_get_string_element(interps, m);
            const int nearest = strcmp(interp, "nearest") == 0;
            size_t case_differing = 0, case_total = 0;
            int case_max = 0;
            for (guint k = 0; k < json_array_get_length(angles); k++) {
                const double angle = json_array_get_double_element(angles, k);
                char *want_name = g_strdup_printf("rotate/%s/%s/%u", name, interp, k);
                cs_image *want = golden_image(gold, want_name);
                if (want) {
                    memset(got->data, 0xAB, image_bytes(got));
                    cs_aug_rotate(src, angle, nearest, got);
                    byte_diff d = compare_bytes(got->data, want->data, image_bytes(want));
                    CHECK_MSG(d.differing == 0,
                              "%s (%dx%dx%d, %s, %.4g deg): %zu of %zu values differ from "
                              "cv2.warpAffine, max difference %d", want_name, src->width,
                              src->height, src->channels, interp, angle, d.differing,
                              d.total, d.max_diff);
                    case_differing += d.differing;
                    case_total += d.total;
                    case_max = MAX(case_max, d.max_diff);
                    n_checked++;
                }
                cs_image_free(want);
                g_free(want_name);
            }
            printf("  rotate %-44s %-7s %dx%dx%d, %u angles: %zu/%zu values differ "
                   "(max %d)\n", name, interp, src->width, src->height, src->channels,
                   json_array_get_length(angles), case_differing, case_total, case_max);
            all_differing += case_differing;
            all_total += case_total;
            all_max = MAX(all_max, case_max);
        }
        cs_image_free(got);
        cs_image_free(src);
    }
    CHECK_MSG(n_checked >= 50, "only %d rotation results checked", n_checked);
    printf("rotate: %d results, %zu of %zu values differ from OpenCV (max difference %d)\n",
           n_checked, all_differing, all_total, all_max);
    if (parser) g_object_unref(parser);
}

// ---------------------------------------------------------------------------------
// flips and dropout

static void test_flips(const cs_safetensors *gold) {
    const char *names[] = {"rotate/noise_7x5_bgr/src", "rotate/noise_48x64_gray/src",
                           "rotate/kvasir_image_cju0qkwl35piu0993l0dewei2/src",
                           "rotate/row_9x1_gray/src", "rotate/column_1x33_bgr/src"};
    for (size_t n = 0; n < G_N_ELEMENTS(names); n++) {
        cs_image *src = golden_image(gold, names[n]);
        if (!src) continue;
        const int w = src->width, h = src->height, cn = src->channels;
        cs_image *hf = cs_image_new(w, h, cn), *vf = cs_image_new(w, h, cn);
        memcpy(hf->data, src->data, image_bytes(src));
        memcpy(vf->data, src->data, image_bytes(src));
        cs_aug_hflip(hf);
        cs_aug_vflip(vf);
        size_t bad_h = 0, bad_v = 0;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int c = 0; c < cn; c++) {
                    uint8_t s_h = src->data[((size_t)y * w + (size_t)(w - 1 - x)) * cn + c];
                    uint8_t s_v = src->data[((size_t)(h - 1 - y) * w + (size_t)x) * cn + c];
                    bad_h += hf->data[((size_t)y * w + x) * cn + c] != s_h;
                    bad_v += vf->data[((size_t)y * w + x) * cn + c] != s_v;
                }
        CHECK_MSG(bad_h == 0, "%s: hflip differs at %zu values", names[n], bad_h);
        CHECK_MSG(bad_v == 0, "%s: vflip differs at %zu values", names[n], bad_v);
        /* twice is the identity */
        cs_aug_hflip(hf);
        cs_aug_vflip(vf);
        CHECK_MSG(memcmp(hf->data, src->data, image_bytes(src)) == 0, "%s: hflip twice",
                  names[n]);
        CHECK_MSG(memcmp(vf->data, src->data, image_bytes(src)) == 0, "%s: vflip twice",
                  names[n]);
        cs_image_free(hf);
        cs_image_free(vf);
        cs_image_free(src);
    }
    printf("flips: %zu images checked\n", G_N_ELEMENTS(names));
}

static void test_dropout(const cs_safetensors *gold) {
    cs_image *src = golden_image(gold, "rotate/kvasir_image_cju17hw9hr9c5098800fu4u8e/src");
    if (!src) return;
    const int w = src->width, h = src->height, cn = 3;
    /* overlapping holes, holes touching each edge, one hanging over the border */
    const int x0[] = {0, 10, 20, w - 32, 300, 301, 0, w - 32, 150, w - 16};
    const int y0[] = {0, 5, 15, h - 32, 200, 215, h - 32, 0, 150, h - 16};
    const int holes = (int)G_N_ELEMENTS(x0), size = 32;
    cs_image *got = cs_image_new(w, h, cn);
    memcpy(got->data, src->data, image_bytes(src));
    cs_aug_dropout(got, holes, x0, y0, size);
    size_t bad = 0, zeroed = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int inside = 0;
            for (int k = 0; k < holes; k++)
                inside |= x >= x0[k] && x < x0[k] + size && y >= y0[k] && y < y0[k] + size;
            zeroed += inside;
            for (int c = 0; c < cn; c++) {
                size_t i = ((size_t)y * w + x) * cn + c;
                bad += got->data[i] != (inside ? 0 : src->data[i]);
            }
        }
    CHECK_MSG(bad == 0, "dropout differs from the expected squares at %zu values", bad);
    CHECK(zeroed > 6 * 32 * 32 && zeroed < 10 * 32 * 32);   /* overlaps and the border */

    /* a gray image, and no holes at all */
    cs_image *gray = golden_image(gold, "rotate/noise_48x64_gray/src");
    if (gray) {
        cs_image *copy = cs_image_new(gray->width, gray->height, 1);
        memcpy(copy->data, gray->data, image_bytes(gray));
        cs_aug_dropout(copy, 0, NULL, NULL, 32);
        CHECK(memcmp(copy->data, gray->data, image_bytes(gray)) == 0);
        const int gx[] = {16}, gy[] = {32};
        cs_aug_dropout(copy, 1, gx, gy, 32);
        size_t wrong = 0;
        for (int y = 0; y < gray->height; y++)
            for (int x = 0; x < gray->width; x++) {
                int inside = x >= 16 && y >= 32;
                size_t i = (size_t)y * gray->width + x;
                wrong += copy->data[i] != (inside ? 0 : gray->data[i]);
            }
        CHECK_MSG(wrong == 0, "gray dropout differs at %zu pixels", wrong);
        cs_image_free(copy);
        cs_image_free(gray);
    }
    cs_image_free(got);
    cs_image_free(src);
    printf("dropout: %zu pixels zeroed as expected\n", zeroed);
}

// ---------------------------------------------------------------------------------
// photometric

static void params_from_json(JsonObject *o, cs_photometric_params *p) {
    JsonArray *order = json_object_get_array_member(o, "order");
    for (int k = 0; k < 4; k++) p->order[k] = (int)json_array_get_int_element(order, (guint)k);
    /* the values are float32 numbers written out exactly */
    p->brightness = (float)json_object_get_double_member(o, "brightness");
    p->contrast = (float)json_object_get_double_member(o, "contrast");
    p->saturation = (float)json_object_get_double_member(o, "saturation");
    p->hue = (float)json_object_get_double_member(o, "hue");
    p->grayscale = json_object_get_boolean_member(o, "grayscale");
    p->sigma = (float)json_object_get_double_member(o, "sigma");
}

static void test_photometric(const cs_safetensors *gold, const char *prefix) {
    JsonParser *parser = NULL;
    JsonArray *cases = metadata_array(gold, "photometric", &parser);
    char *input_name = g_strdup_printf("%s/input", prefix);
    const cs_st_tensor *t = golden_tensor(gold, input_name);
    size_t numel = 0;
    float *input = golden_floats(gold, input_name, &numel);
    g_free(input_name);
    if (!t || !input || t->ndim != 4 || t->shape[1] != 3) {
        CHECK_MSG(0, "%s/input: expected a [B, 3, H, W] tensor", prefix);
        g_free(input);
        if (parser) g_object_unref(parser);
        return;
    }
    const int batch = (int)t->shape[0], h = (int)t->shape[2], w = (int)t->shape[3];
    float *got = g_new(float, numel), *inplace = g_new(float, numel);
    double worst = 0;
    for (guint i = 0; cases && i < json_array_get_length(cases); i++) {
        JsonObject *o = json_array_get_object_element(cases, i);
        const char *name = json_object_get_string_member(o, "name");
        cs_photometric_params p;
        params_from_json(o, &p);
        char *want_name = g_strdup_printf("%s/%s", prefix, name);
        size_t n_want = 0;
        float *want = golden_floats(gold, want_name, &n_want);
        if (want && n_want == numel) {
            cs_photometric_apply(got, input, batch, h, w, &p);
            double err = check_max_abs_diff(got, want, numel);
            printf("  %-44s max |diff| = %.2e %s\n", want_name, err,
                   err <= PHOTOMETRIC_TOL ? "ok" : "FAIL");
            CHECK_MSG(err <= PHOTOMETRIC_TOL, "%s: max |diff| %.3e above %.0e", want_name, err,
                      PHOTOMETRIC_TOL);
            worst = MAX(worst, err);
            /* dst may alias src */
            memcpy(inplace, input, numel * sizeof(float));
            cs_photometric_apply(inplace, inplace, batch, h, w, &p);
            CHECK_MSG(memcmp(inplace, got, numel * sizeof(float)) == 0,
                      "%s: in-place result differs", want_name);
        } else {
            CHECK_MSG(0, "%s: missing or of the wrong size", want_name);
        }
        g_free(want);
        g_free(want_name);
    }
    printf("photometric (%s, %dx3x%dx%d): max |diff| vs torchvision %.2e (tolerance %.0e)\n",
           prefix, batch, h, w, worst, PHOTOMETRIC_TOL);
    g_free(got);
    g_free(inplace);
    g_free(input);
    if (parser) g_object_unref(parser);
}

static void test_photometric_draw(void) {
    enum { DRAWS = 4000 };
    int perm_seen[256] = {0}, gray = 0, bad = 0;
    double mean_b = 0, mean_h = 0, mean_sigma = 0;
    float min_b = 9, max_b = -9, min_h = 9, max_h = -9, min_s = 9, max_s = -9;
    for (int i = 0; i < DRAWS; i++) {
        cs_photometric_params p;
        cs_photometric_draw((uint64_t)i * 7919u + 1u, &p);
        int seen = 0, code = 0;
        for (int k = 0; k < 4; k++) {
            if (p.order[k] < 0 || p.order[k] > 3) bad++;
            else seen |= 1 << p.order[k];
            code = code * 4 + (p.order[k] & 3);
        }
        bad += seen != 0xf;
        perm_seen[code & 255] = 1;
        float f[3] = {p.brightness, p.contrast, p.saturation};
        for (int k = 0; k < 3; k++) bad += !(f[k] >= 0.7f && f[k] <= 1.3f);
        bad += !(p.hue >= -0.1f && p.hue <= 0.1f) + !(p.sigma >= 0.1f && p.sigma <= 3.0f);
        gray += p.grayscale != 0;
        mean_b += p.brightness;
        mean_h += p.hue;
        mean_sigma += p.sigma;
        min_b = MIN(min_b, p.brightness);
        max_b = MAX(max_b, p.brightness);
        min_h = MIN(min_h, p.hue);
        max_h = MAX(max_h, p.hue);
        min_s = MIN(min_s, p.sigma);
        max_s = MAX(max_s, p.sigma);
    }
    int perms = 0;
    for (int i = 0; i < 256; i++) perms += perm_seen[i];
    CHECK_MSG(bad == 0, "%d parameters out of range or orders not permutations", bad);
    CHECK_MSG(perms == 24, "%d of the 24 orders drawn", perms);
    CHECK_MSG(gray > DRAWS * 0.45 && gray < DRAWS * 0.55, "grayscale drawn %d of %d times",
              gray, DRAWS);
    CHECK(fabs(mean_b / DRAWS - 1.0) < 0.01 && fabs(mean_h / DRAWS) < 0.004 &&
          fabs(mean_sigma / DRAWS - 1.55) < 0.05);
    CHECK(min_b < 0.71f && max_b > 1.29f && min_h < -0.099f && max_h > 0.099f &&
          min_s < 0.11f && max_s > 2.99f);
    cs_photometric_params a, b;
    cs_photometric_draw(12345, &a);
    cs_photometric_draw(12345, &b);
    CHECK(memcmp(&a, &b, sizeof a) == 0);
    cs_photometric_draw(12346, &b);
    CHECK(a.brightness != b.brightness);
    printf("photometric draws: %d orders, grayscale %d/%d\n", perms, gray, DRAWS);
}

int main(void) {
    cs_safetensors *gold = golden_open("augment_golden.safetensors");
    if (gold) {
        test_rotate(gold);
        test_flips(gold);
        test_dropout(gold);
        test_photometric(gold, "photometric");
        test_photometric(gold, "photometric_edge");
        cs_st_close(gold);
    }
    test_photometric_draw();
    return check_summary("test_augment");
}
