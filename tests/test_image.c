/* test_image.c — image decoding, PNG/NPY writing and the cv2-exact resizes, checked
 * against OpenCV's own results (tools/golden_resize.py -> $CONDSEG_GOLDEN/resize.safetensors).
 *
 * u8 resize: bit-exact for every golden case; float resize: within 1e-5; loaders:
 * bit-exact against cv2.imread (IMREAD_COLOR and IMREAD_GRAYSCALE) on Kvasir images and
 * masks and on PNG/BMP/TIFF/EXIF-JPEG files; PNG and NPY files read back; errors name
 * the file.
 */
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>

#include "check.h"
#include "condseg.h"
#include "safetensors.h"

static char *temp_dir;

/* Tensor shape as (height, width, channels), channels 1 for a 2-D tensor. */
static gboolean hwc(const cs_st_tensor *t, int *h, int *w, int *c) {
    if (t->dtype != CS_DT_U8 || (t->ndim != 2 && t->ndim != 3)) return FALSE;
    *h = (int)t->shape[0];
    *w = (int)t->shape[1];
    *c = t->ndim == 3 ? (int)t->shape[2] : 1;
    return TRUE;
}

/* Counts differing bytes and the largest difference; prints a summary on mismatch. */
static void check_bytes_equal(const char *what, const uint8_t *got, const uint8_t *want,
                              size_t n) {
    size_t mismatches = 0;
    int max_diff = 0;
    size_t first = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)got[i] - (int)want[i]);
        if (d) {
            if (!mismatches) first = i;
            mismatches++;
            if (d > max_diff) max_diff = d;
        }
    }
    CHECK_MSG(mismatches == 0,
              "%s: %zu of %zu values differ from OpenCV (max diff %d, first at %zu: %d vs %d)",
              what, mismatches, n, max_diff, first, mismatches ? got[first] : 0,
              mismatches ? want[first] : 0);
}

static const cs_st_tensor *partner(const cs_safetensors *gold, const char *name,
                                   const char *from, const char *to) {
    char *other = g_strdup(name);
    strcpy(other + strlen(other) - strlen(from), to);
    const cs_st_tensor *t = cs_st_find(gold, other);
    CHECK_MSG(t != NULL, "golden file lacks %s", other);
    g_free(other);
    return t;
}

// ---------------------------------------------------------------------------------

static int test_resize_u8(const cs_safetensors *gold) {
    int n_cases = 0;
    for (int i = 0; i < cs_st_count(gold); i++) {
        const cs_st_tensor *src = cs_st_get(gold, i);
        if (!g_str_has_prefix(src->name, "u8/") || !g_str_has_suffix(src->name, "/src")) continue;
        const cs_st_tensor *want = partner(gold, src->name, "/src", "/dst");
        int sh, sw, sc, dh, dw, dc;
        if (!want || !hwc(src, &sh, &sw, &sc) || !hwc(want, &dh, &dw, &dc) || sc != dc) {
            CHECK_MSG(FALSE, "%s: unexpected golden layout", src->name);
            continue;
        }
        uint8_t *got = g_malloc((size_t)dh * dw * dc);
        cs_resize_linear_u8(src->data, sw, sh, got, dw, dh, sc);
        char *what =
            g_strdup_printf("resize %s (%dx%dx%d -> %dx%d)", src->name, sw, sh, sc, dw, dh);
        check_bytes_equal(what, got, want->data, (size_t)dh * dw * dc);
        g_free(what);
        g_free(got);
        n_cases++;
    }
    return n_cases;
}

static int test_resize_f32(const cs_safetensors *gold) {
    int n_cases = 0;
    for (int i = 0; i < cs_st_count(gold); i++) {
        const cs_st_tensor *src = cs_st_get(gold, i);
        if (!g_str_has_prefix(src->name, "f32/") || !g_str_has_suffix(src->name, "/src")) continue;
        const cs_st_tensor *want = partner(gold, src->name, "/src", "/dst");
        if (!want || src->ndim != 2 || want->ndim != 2 || src->dtype != CS_DT_F32 ||
            want->dtype != CS_DT_F32) {
            CHECK_MSG(FALSE, "%s: unexpected golden layout", src->name);
            continue;
        }
        int sh = (int)src->shape[0], sw = (int)src->shape[1];
        int dh = (int)want->shape[0], dw = (int)want->shape[1];
        float *in = g_new(float, (size_t)sh * sw), *ref = g_new(float, (size_t)dh * dw);
        float *got = g_new(float, (size_t)dh * dw);
        CHECK(cs_st_read_f32(gold, src, in, NULL));
        CHECK(cs_st_read_f32(gold, want, ref, NULL));
        cs_resize_linear_f32(in, sw, sh, got, dw, dh);
        double diff = check_max_abs_diff(got, ref, (size_t)dh * dw);
        CHECK_MSG(diff <= 1e-5, "float resize %s (%dx%d -> %dx%d): max diff %g > 1e-5",
                  src->name, sw, sh, dw, dh, diff);
        g_free(in);
        g_free(ref);
        g_free(got);
        n_cases++;
    }
    return n_cases;
}

/* Every "load/<case>/{bgr,gray}" tensor against our loader on the file in the metadata. */
static int test_loaders(const cs_safetensors *gold) {
    int n_files = 0;
    for (int i = 0; i < cs_st_count(gold); i++) {
        const cs_st_tensor *want = cs_st_get(gold, i);
        if (!g_str_has_prefix(want->name, "load/")) continue;
        gboolean color = g_str_has_suffix(want->name, "/bgr");
        gboolean gray = g_str_has_suffix(want->name, "/gray");
        if (!color && !gray) continue;
        char *key = g_strndup(want->name, strlen(want->name) - (color ? 4 : 5));
        char *meta_key = g_strconcat("path:", key, NULL);
        const char *path = cs_st_metadata(gold, meta_key);
        CHECK_MSG(path != NULL, "golden file lacks metadata %s", meta_key);
        int h, w, c;
        if (path && hwc(want, &h, &w, &c)) {
            GError *error = NULL;
            cs_image *image =
                color ? cs_image_load_bgr(path, &error) : cs_image_load_gray(path, &error);
            CHECK_MSG(image != NULL, "loading %s: %s", path, error ? error->message : "?");
            if (image) {
                CHECK_MSG(image->width == w && image->height == h && image->channels == c,
                          "%s (%s): got %dx%dx%d, cv2.imread gives %dx%dx%d", path, want->name,
                          image->width, image->height, image->channels, w, h, c);
                if (image->width == w && image->height == h && image->channels == c) {
                    char *what =
                        g_strdup_printf("%s decode of %s", color ? "colour" : "gray", path);
                    check_bytes_equal(what, image->data, want->data, (size_t)h * w * c);
                    g_free(what);
                }
            }
            cs_image_free(image);
            g_clear_error(&error);
            n_files++;
        }
        g_free(meta_key);
        g_free(key);
    }
    return n_files;
}

// ---------------------------------------------------------------------------------

static void test_png_round_trip(void) {
    char *dir = g_build_filename(temp_dir, "png", NULL);
    g_mkdir(dir, 0700);
    for (int channels = 1; channels <= 3; channels += 2) {
        cs_image *image = cs_image_new(37, 23, channels);
        size_t n = (size_t)37 * 23 * channels;
        for (size_t i = 0; i < n; i++) image->data[i] = (uint8_t)(i * 7 + i / 37);
        char *path = g_build_filename(dir, channels == 1 ? "gray.png" : "bgr.png", NULL);
        GError *error = NULL;
        CHECK_MSG(cs_image_save_png(image, path, &error), "save %s: %s", path,
                  error ? error->message : "");
        g_clear_error(&error);
        cs_image *back =
            channels == 1 ? cs_image_load_gray(path, &error) : cs_image_load_bgr(path, &error);
        CHECK_MSG(back && back->width == 37 && back->height == 23 && back->channels == channels,
                  "reloading %s", path);
        if (back && back->channels == channels)
            check_bytes_equal("PNG round trip", back->data, image->data, n);
        cs_image_free(back);
        g_clear_error(&error);

        /* overwriting works and stays atomic: nothing but the two PNGs in the folder */
        CHECK(cs_image_save_png(image, path, NULL));
        g_free(path);
        cs_image_free(image);
    }
    GDir *d = g_dir_open(dir, 0, NULL);
    int n = 0;
    for (const char *name; d && (name = g_dir_read_name(d));) n++;
    if (d) g_dir_close(d);
    CHECK_MSG(n == 2, "expected only gray.png and bgr.png in %s, found %d entries", dir, n);

    /* a PNG into a missing folder: an I/O error naming it, and nothing created */
    cs_image *image = cs_image_new(4, 4, 1);
    char *bad = g_build_filename(dir, "no-such-dir", "mask.png", NULL);
    GError *error = NULL;
    CHECK(!cs_image_save_png(image, bad, &error));
    CHECK(error && error->domain == CS_ERROR && error->code == CS_ERROR_IO &&
          strstr(error->message, bad));
    g_clear_error(&error);
    /* a wrong channel count is an argument error */
    cs_image *two = cs_image_new(4, 4, 2);
    char *two_path = g_build_filename(dir, "two.png", NULL);
    CHECK(!cs_image_save_png(two, two_path, &error));
    CHECK(error && error->code == CS_ERROR_ARG);
    CHECK(!g_file_test(two_path, G_FILE_TEST_EXISTS));
    g_clear_error(&error);
    g_free(two_path);
    cs_image_free(two);
    cs_image_free(image);
    g_free(bad);
    g_free(dir);
}

static void test_npy(void) {
    static const char *script =
        "import sys, numpy as np\n"
        "a = np.load(sys.argv[1])\n"
        "raw = open(sys.argv[1], 'rb').read()\n"
        "hlen = int.from_bytes(raw[8:10], 'little')\n"
        "assert raw[:8] == b'\\x93NUMPY\\x01\\x00' and (10 + hlen) % 64 == 0, 'bad header'\n"
        "print(a.dtype.str, a.shape, a.flags['C_CONTIGUOUS'], repr(a.ravel().tolist()))\n";
    struct {
        int ndim;
        int64_t shape[4];
        const char *expected;
    } cases[] = {
        {3, {2, 1, 3}, "<f4 (2, 1, 3) True [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]\n"},
        {1, {4}, "<f4 (4,) True [0.0, 0.5, 1.0, 1.5]\n"},
        {0, {0}, "<f4 () True [0.0]\n"},
        {2, {0, 5}, "<f4 (0, 5) True []\n"},
    };
    float data[6] = {0, 0.5f, 1, 1.5f, 2, 2.5f};
    for (size_t k = 0; k < G_N_ELEMENTS(cases); k++) {
        char *path = g_strdup_printf("%s/array%zu.npy", temp_dir, k);
        GError *error = NULL;
        CHECK_MSG(cs_write_npy_f32(path, data, cases[k].ndim, cases[k].shape, &error),
                  "write %s: %s", path, error ? error->message : "");
        g_clear_error(&error);
        char *out = check_run_python(script, path, NULL);
        CHECK_MSG(out && strcmp(out, cases[k].expected) == 0,
                  "numpy reads %s as \"%s\", expected \"%s\"", path, out ? out : "(failed)",
                  cases[k].expected);
        g_free(out);
        g_free(path);
    }
    /* the layout by hand as well: a 3-D shape's header ends at byte 128, then 6 floats */
    char *path = g_strdup_printf("%s/array0.npy", temp_dir);
    char *bytes = NULL;
    gsize len = 0;
    CHECK(g_file_get_contents(path, &bytes, &len, NULL));
    CHECK_MSG(len == 128 + 6 * 4 && bytes && bytes[127] == '\n' && bytes[8] == 118 &&
                  bytes[9] == 0 && memcmp(bytes + 128, data, sizeof data) == 0,
              "array0.npy: %zu bytes, unexpected layout", len);
    g_free(bytes);
    g_free(path);

    GError *error = NULL;
    int64_t negative[1] = {-1};
    CHECK(!cs_write_npy_f32("/nonexistent-dir/x.npy", data, 1, (int64_t[]){6}, &error));
    CHECK(error && error->code == CS_ERROR_IO && strstr(error->message, "/nonexistent-dir/x.npy"));
    g_clear_error(&error);
    char *neg_path = g_build_filename(temp_dir, "negative.npy", NULL);
    CHECK(!cs_write_npy_f32(neg_path, data, 1, negative, &error));
    CHECK(error && error->code == CS_ERROR_ARG && !g_file_test(neg_path, G_FILE_TEST_EXISTS));
    g_clear_error(&error);
    g_free(neg_path);
}

/* Unreadable images: the error is an I/O or format error whose message names the file. */
static void check_load_error(const char *path, int expected_code) {
    for (int gray = 0; gray <= 1; gray++) {
        GError *error = NULL;
        cs_image *image = gray ? cs_image_load_gray(path, &error) : cs_image_load_bgr(path, &error);
        CHECK_MSG(image == NULL, "%s: loading should fail", path);
        CHECK_MSG(error && error->domain == CS_ERROR && error->code == expected_code,
                  "%s (%s): error code %d, expected %d (%s)", path, gray ? "gray" : "bgr",
                  error ? error->code : -1, expected_code, error ? error->message : "no error");
        CHECK_MSG(error && strstr(error->message, path),
                  "%s: message \"%s\" does not name the file", path, error ? error->message : "");
        cs_image_free(image);
        g_clear_error(&error);
    }
}

static void test_load_errors(void) {
    char *missing = g_build_filename(temp_dir, "missing.jpg", NULL);
    check_load_error(missing, CS_ERROR_IO);
    g_free(missing);
    check_load_error(temp_dir, CS_ERROR_IO);   /* a folder */

    struct {
        const char *name;
        const char *content;
        gsize len;
    } bad[] = {
        {"text.jpg", "this is not an image\n", 21},
        {"broken.jpg", "\xff\xd8\xff\xe0garbage garbage garbage", 26},
        {"broken.png", "\x89PNG\r\n\x1a\n\0\0\0\rIHDRxx", 18},
        {"empty.png", "", 0},
    };
    for (size_t k = 0; k < G_N_ELEMENTS(bad); k++) {
        char *path = g_build_filename(temp_dir, bad[k].name, NULL);
        CHECK(g_file_set_contents(path, bad[k].content, (gssize)bad[k].len, NULL));
        check_load_error(path, CS_ERROR_FORMAT);
        g_free(path);
    }
}

static void test_image_new(void) {
    cs_image *image = cs_image_new(5, 3, 3);
    CHECK(image && image->width == 5 && image->height == 3 && image->channels == 3);
    int nonzero = 0;
    for (int i = 0; i < 5 * 3 * 3; i++) nonzero += image->data[i] != 0;
    CHECK(nonzero == 0);
    cs_image_free(image);
    cs_image_free(NULL);
}

int main(void) {
    const char *golden_dir = g_getenv("CONDSEG_GOLDEN");
    if (!golden_dir) {
        fprintf(stderr, "test_image: CONDSEG_GOLDEN is not set (run through ctest)\n");
        return 1;
    }
    temp_dir = g_dir_make_tmp("test_image-XXXXXX", NULL);
    if (!temp_dir) return 1;

    char *golden_path = g_build_filename(golden_dir, "resize.safetensors", NULL);
    GError *error = NULL;
    cs_safetensors *gold = cs_st_open(golden_path, &error);
    CHECK_MSG(gold != NULL, "reference file missing or unreadable (run tools/golden_resize.py): %s",
              error ? error->message : "");
    g_clear_error(&error);
    if (gold) {
        int n_u8 = test_resize_u8(gold), n_f32 = test_resize_f32(gold);
        int n_loads = test_loaders(gold);
        printf("resize: %d uint8 and %d float cases; %d decodes compared\n", n_u8, n_f32, n_loads);
        CHECK_MSG(n_u8 >= 15 && n_f32 >= 5 && n_loads >= 70, "too few golden cases");
        cs_st_close(gold);
    }
    g_free(golden_path);

    test_image_new();
    test_png_round_trip();
    test_npy();
    test_load_errors();

    check_remove_tree(temp_dir);
    g_free(temp_dir);
    return check_summary("test_image");
}
