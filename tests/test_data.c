/* test_data.c — the dataset, sample pipeline and loader of data.h.
 *
 *   - a whole val sample without augmentation equals the original's cv2 pipeline
 *     (tools/golden_augment.py: cv2.imread, 255 - mask, cv2.resize, / 255), exactly;
 *   - the background quirk: y2 comes from the un-augmented mask; fix_background gives
 *     y2 = 1 - y1 after augmentation; augmentation is a function of the seed only, and
 *     happens at native resolution (unrotated masks are the native mask flipped, then
 *     resized), with plausible frequencies of rotation, flips and dropout;
 *   - the loader, on a small dataset made in a temporary folder: every index once per
 *     epoch, a different order each epoch, the same batches across runs and worker counts,
 *     resuming mid-epoch, restarting and freeing mid-epoch, a file that breaks after
 *     opening reported by cs_loader_next;
 *   - cs_dataset_open's checks, each with its error code and message: missing mask and
 *     image, size mismatch, empty and missing split list, corrupt and unreadable image;
 *   - polyp-free frames (nopolyp/, all-black masks) through every augmentation: y1 = 0 and
 *     y2 = 1 everywhere; cs_dataset_open_many: the splits of two folders as one, in order,
 *     every index once per shuffled epoch, a broken folder named.
 */
#include <glib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>   /* symlink */

#include "augment.h"
#include "check.h"
#include "data.h"
#include "golden.h"

static char *kvasir_dir;   /* $CONDSEG_DATA/kvasir-seg */
static char *temp_root;    /* scratch space, removed at the end */

/* The first `n` ids of kvasir's val.txt (g_strfreev). */
static char **val_ids(int n) {
    char *path = g_build_filename(kvasir_dir, "val.txt", NULL), *text = NULL;
    char **ids = g_new0(char *, n + 1);
    if (g_file_get_contents(path, &text, NULL, NULL)) {
        char **lines = g_strsplit(text, "\n", -1);
        for (int i = 0, k = 0; lines[i] && k < n; i++)
            if (*g_strstrip(lines[i])) ids[k++] = g_strdup(lines[i]);
        g_strfreev(lines);
    }
    CHECK_MSG(ids[n - 1] != NULL, "cannot read %d ids from %s", n, path);
    g_free(text);
    g_free(path);
    return ids;
}

/* A new dataset folder under the scratch space with images/ and masks/. */
static char *make_dataset_dir(const char *name) {
    char *dir = g_build_filename(temp_root, name, NULL);
    char *images = g_build_filename(dir, "images", NULL), *masks = g_build_filename(dir, "masks", NULL);
    g_mkdir_with_parents(images, 0755);
    g_mkdir_with_parents(masks, 0755);
    g_free(images);
    g_free(masks);
    return dir;
}

/* dir/<sub>/<id>.jpg as a link to kvasir's <sub>/<src_id>.jpg, or a copy. */
static void add_file(const char *dir, const char *sub, const char *id, const char *src_id,
                     gboolean copy) {
    char *name = g_strdup_printf("%s.jpg", id), *src_name = g_strdup_printf("%s.jpg", src_id);
    char *dst = g_build_filename(dir, sub, name, NULL);
    char *src = g_build_filename(kvasir_dir, sub, src_name, NULL);
    if (copy) {
        char *content = NULL;
        gsize len = 0;
        CHECK(g_file_get_contents(src, &content, &len, NULL) &&
              g_file_set_contents(dst, content, (gssize)len, NULL));
        g_free(content);
    } else {
        CHECK_MSG(symlink(src, dst) == 0, "cannot link %s", dst);
    }
    g_free(name);
    g_free(src_name);
    g_free(dst);
    g_free(src);
}

static void write_text(const char *dir, const char *file, const char *text) {
    char *path = g_build_filename(dir, file, NULL);
    CHECK(g_file_set_contents(path, text, -1, NULL));
    g_free(path);
}

/* Opens dir/split expecting failure with `code` and a message containing each of the
 * NULL-terminated strings. */
static void expect_open_error(const char *what, const char *dir, const char *split, int code,
                              ...) {
    GError *error = NULL;
    cs_dataset *ds = cs_dataset_open(dir, split, &error);
    CHECK_MSG(ds == NULL && error != NULL, "%s: cs_dataset_open succeeded", what);
    cs_dataset_free(ds);
    if (!error) return;
    printf("  %-22s -> %s\n", what, error->message);
    CHECK_MSG(g_error_matches(error, CS_ERROR, code), "%s: error code %d, expected %d", what,
              error->code, code);
    va_list ap;
    va_start(ap, code);
    for (const char *s; (s = va_arg(ap, const char *));)
        CHECK_MSG(strstr(error->message, s) != NULL, "%s: message lacks '%s'", what, s);
    va_end(ap);
    g_error_free(error);
}

// ---------------------------------------------------------------------------------
// one sample

static int find_index(const cs_dataset *ds, const char *id) {
    for (int i = 0; i < cs_dataset_size(ds); i++)
        if (strcmp(cs_dataset_id(ds, i), id) == 0) return i;
    return -1;
}

static void test_sample_golden(const cs_safetensors *gold) {
    const char *meta = cs_st_metadata(gold, "samples");
    CHECK_MSG(meta != NULL, "golden file has no 'samples' metadata");
    if (!meta) return;
    JsonParser *parser = json_parser_new();
    if (!json_parser_load_from_data(parser, meta, -1, NULL)) {
        CHECK_MSG(0, "bad 'samples' metadata");
        g_object_unref(parser);
        return;
    }
    JsonObject *o = json_node_get_object(json_parser_get_root(parser));
    const char *split = json_object_get_string_member(o, "split");
    const int size = (int)json_object_get_int_member(o, "size");
    JsonArray *ids = json_object_get_array_member(o, "ids");
    GError *error = NULL;
    cs_dataset *ds = cs_dataset_open(kvasir_dir, split, &error);
    CHECK_MSG(ds != NULL, "cannot open %s/%s: %s", kvasir_dir, split,
              error ? error->message : "?");
    g_clear_error(&error);
    const size_t plane = (size_t)size * (size_t)size;
    float *image = g_new(float, 3 * plane), *y1 = g_new(float, plane), *y2 = g_new(float, plane);
    for (guint k = 0; ds && k < json_array_get_length(ids); k++) {
        const char *id = json_array_get_string_element(ids, k);
        int index = find_index(ds, id);
        CHECK_MSG(index >= 0, "%s not in %s.txt", id, split);
        if (index < 0) continue;
        cs_sample_options opt = {CS_AUG_NONE, size, FALSE};
        CHECK(cs_dataset_load_sample(ds, index, &opt, 0, image, y1, y2, &error));
        g_clear_error(&error);
        const char *names[3] = {"image", "y1", "y2"};
        const float *got[3] = {image, y1, y2};
        const size_t n[3] = {3 * plane, plane, plane};
        for (int t = 0; t < 3; t++) {
            char *name = g_strdup_printf("sample/%s/%s", id, names[t]);
            size_t numel = 0;
            float *want = golden_floats(gold, name, &numel);
            if (want) {
                CHECK_MSG(numel == n[t], "%s: %zu values, expected %zu", name, numel, n[t]);
                size_t differ = 0;
                for (size_t i = 0; i < n[t] && numel == n[t]; i++) differ += got[t][i] != want[i];
                double err = numel == n[t] ? check_max_abs_diff(got[t], want, n[t]) : INFINITY;
                printf("  %-48s %zu of %zu values differ (max %.3g)\n", name, differ, n[t], err);
                CHECK_MSG(differ == 0, "%s: %zu values differ from the cv2 pipeline", name,
                          differ);
            }
            g_free(want);
            g_free(name);
        }
        /* the original's y2 is not exactly 1 - y1 (spec §1.2 item 8), fix_background's is */
        cs_sample_options fixed = {CS_AUG_NONE, size, TRUE};
        float *y2_fixed = g_new(float, plane), *y1_fixed = g_new(float, plane);
        float *image_fixed = g_new(float, 3 * plane);
        CHECK(cs_dataset_load_sample(ds, index, &fixed, 0, image_fixed, y1_fixed, y2_fixed, NULL));
        size_t not_complement = 0;
        for (size_t i = 0; i < plane; i++) {
            not_complement += y2[i] != 1.0f - y1[i];
            CHECK(y2_fixed[i] == 1.0f - y1_fixed[i]);
        }
        CHECK(memcmp(y1, y1_fixed, plane * sizeof(float)) == 0);
        CHECK(memcmp(image, image_fixed, 3 * plane * sizeof(float)) == 0);
        printf("  %s: original y2 != 1 - y1 at %zu pixels (spec §1.2: rounding)\n", id,
               not_complement);
        g_free(y2_fixed);
        g_free(y1_fixed);
        g_free(image_fixed);
    }
    g_free(image);
    g_free(y1);
    g_free(y2);
    cs_dataset_free(ds);
    g_object_unref(parser);
}

/* Augmented samples: deterministic in the seed; y2 always from the un-augmented mask;
 * fix_background gives 1 - y1 with the same image and y1. */
static void test_background_quirk(void) {
    GError *error = NULL;
    cs_dataset *ds = cs_dataset_open(kvasir_dir, "val", &error);
    CHECK_MSG(ds != NULL, "cannot open kvasir val: %s", error ? error->message : "?");
    g_clear_error(&error);
    if (!ds) return;
    const int size = 96, index = 2;   /* cju0sxqiclckk08551ycbwhno, 570 x 531 */
    const size_t plane = (size_t)size * size;
    float *ref_img = g_new(float, 3 * plane), *ref_y1 = g_new(float, plane), *ref_y2 = g_new(float, plane);
    float *img = g_new(float, 3 * plane), *y1 = g_new(float, plane), *y2 = g_new(float, plane);
    float *img2 = g_new(float, 3 * plane), *y1b = g_new(float, plane), *y2b = g_new(float, plane);
    cs_sample_options none = {CS_AUG_NONE, size, FALSE};
    CHECK(cs_dataset_load_sample(ds, index, &none, 0, ref_img, ref_y1, ref_y2, NULL));
    /* without augmentation the seed does not matter */
    CHECK(cs_dataset_load_sample(ds, index, &none, 99, img, y1, y2, NULL));
    CHECK(memcmp(img, ref_img, 3 * plane * sizeof(float)) == 0);

    /* the mask flipped at native resolution (none, h, v, both), then resized: what y1 is
     * when no rotation was drawn */
    float *flipped[4];
    cs_image *native = cs_image_load_gray(cs_dataset_mask_path(ds, index), NULL);
    CHECK(native != NULL);
    uint8_t *small = g_malloc(plane);
    for (int f = 0; f < 4; f++) {
        flipped[f] = g_new0(float, plane);
        if (!native) continue;
        cs_image *m = cs_image_new(native->width, native->height, 1);
        memcpy(m->data, native->data, (size_t)native->width * native->height);
        if (f & 1) cs_aug_hflip(m);
        if (f & 2) cs_aug_vflip(m);
        cs_resize_linear_u8(m->data, m->width, m->height, small, size, size, 1);
        for (size_t i = 0; i < plane; i++) flipped[f][i] = (float)(small[i] / 255.0);
        cs_image_free(m);
    }
    cs_image_free(native);
    g_free(small);
    CHECK(memcmp(flipped[0], ref_y1, plane * sizeof(float)) == 0);
    int flip_counts[4] = {0}, rotated = 0;

    int mask_moved = 0, image_only = 0, untouched = 0, n_seeds = 48;
    for (int mode = 0; mode < 2; mode++) {
        cs_aug_mode aug = mode == 0 ? CS_AUG_STAGE1 : CS_AUG_STAGE2;
        for (int s = 0; s < n_seeds; s++) {
            uint64_t seed = 1000003u * (uint64_t)s + 17u;
            cs_sample_options opt = {aug, size, FALSE};
            CHECK(cs_dataset_load_sample(ds, index, &opt, seed, img, y1, y2, NULL));
            /* quirk: y2 is the un-augmented background, whatever happened to y1 */
            CHECK_MSG(memcmp(y2, ref_y2, plane * sizeof(float)) == 0,
                      "seed %d: y2 is not the un-augmented background", s);
            int moved = memcmp(y1, ref_y1, plane * sizeof(float)) != 0;
            int img_changed = memcmp(img, ref_img, 3 * plane * sizeof(float)) != 0;
            if (mode == 0) {
                int f = 0;
                while (f < 4 && memcmp(y1, flipped[f], plane * sizeof(float)) != 0) f++;
                if (f < 4) flip_counts[f]++;
                else rotated++;
                mask_moved += moved;
                image_only += !moved && img_changed;
                untouched += !moved && !img_changed;
            }
            CHECK_MSG(img_changed || !moved, "seed %d: mask moved, image did not", s);
            /* same seed, same sample */
            CHECK(cs_dataset_load_sample(ds, index, &opt, seed, img2, y1b, y2b, NULL));
            CHECK(memcmp(img, img2, 3 * plane * sizeof(float)) == 0 &&
                  memcmp(y1, y1b, plane * sizeof(float)) == 0);
            /* fix_background: the same draws, y2 = 1 - y1 */
            cs_sample_options fixed = {aug, size, TRUE};
            CHECK(cs_dataset_load_sample(ds, index, &fixed, seed, img2, y1b, y2b, NULL));
            CHECK(memcmp(img, img2, 3 * plane * sizeof(float)) == 0 &&
                  memcmp(y1, y1b, plane * sizeof(float)) == 0);
            size_t bad = 0;
            for (size_t i = 0; i < plane; i++) bad += y2b[i] != 1.0f - y1b[i];
            CHECK_MSG(bad == 0, "seed %d: fix_background y2 != 1 - y1 at %zu pixels", s, bad);
        }
    }
    /* stage 1: P(mask untouched) = 0.5^3 = 1/8, P(dropout only) = 1/8 * 0.3 */
    printf("  stage-1 augmentation over %d seeds: mask moved %d, image only (dropout) %d, "
           "untouched %d\n", n_seeds, mask_moved, image_only, untouched);
    CHECK(mask_moved >= n_seeds / 2 && mask_moved < n_seeds);
    CHECK(image_only + untouched >= 1);
    /* P(rotation) = 1/2, then each flip combination 1/4 of the rest */
    printf("  stage-1 masks: rotated %d, flips none/h/v/hv %d/%d/%d/%d\n", rotated,
           flip_counts[0], flip_counts[1], flip_counts[2], flip_counts[3]);
    CHECK(rotated >= n_seeds / 4 && rotated <= 3 * n_seeds / 4);
    for (int f = 0; f < 4; f++) CHECK(flip_counts[f] >= 1);
    CHECK(flip_counts[0] == untouched + image_only);
    for (int f = 0; f < 4; f++) g_free(flipped[f]);
    g_free(ref_img);
    g_free(ref_y1);
    g_free(ref_y2);
    g_free(img);
    g_free(y1);
    g_free(y2);
    g_free(img2);
    g_free(y1b);
    g_free(y2b);
    cs_dataset_free(ds);
}

// ---------------------------------------------------------------------------------
// loader

typedef struct {
    int n_batches, n_samples;
    int batch_index[16], count[16];
    int indices[64];
    float *data;   /* every batch's images, y1, y2 in order */
    size_t n_data;
} epoch_record;

static void record_free(epoch_record *r) { g_free(r->data); }

/* Runs the rest of an epoch from (epoch, first_batch). */
static epoch_record run_epoch(cs_loader *loader, int epoch, int first_batch, int size) {
    epoch_record r = {0};
    const size_t plane = (size_t)size * size;
    GArray *data = g_array_new(FALSE, FALSE, sizeof(float));
    cs_loader_start_epoch(loader, epoch, first_batch);
    GError *error = NULL;
    for (const cs_batch *b; (b = cs_loader_next(loader, &error));) {
        if (r.n_batches < 16) {
            r.batch_index[r.n_batches] = b->batch_index;
            r.count[r.n_batches] = b->count;
        }
        r.n_batches++;
        CHECK(b->size == size);
        for (int i = 0; i < b->count && r.n_samples < 64; i++) r.indices[r.n_samples++] = b->indices[i];
        g_array_append_vals(data, b->images, (guint)(b->count * 3 * plane));
        g_array_append_vals(data, b->y1, (guint)(b->count * plane));
        g_array_append_vals(data, b->y2, (guint)(b->count * plane));
    }
    CHECK_MSG(error == NULL, "loader: %s", error ? error->message : "");
    g_clear_error(&error);
    /* past the end it stays at the end */
    CHECK(cs_loader_next(loader, &error) == NULL && error == NULL);
    r.n_data = data->len;
    r.data = (float *)g_array_free(data, FALSE);
    return r;
}

static gboolean records_equal(const epoch_record *a, const epoch_record *b) {
    return a->n_batches == b->n_batches && a->n_samples == b->n_samples &&
           memcmp(a->indices, b->indices, sizeof(int) * (size_t)a->n_samples) == 0 &&
           a->n_data == b->n_data && memcmp(a->data, b->data, a->n_data * sizeof(float)) == 0;
}

static void test_loader(void) {
    enum { N = 7, BATCH = 3, SIZE = 32 };
    char **ids = val_ids(N);
    char *dir = make_dataset_dir("loader");
    GString *list = g_string_new("");
    for (int i = 0; i < N && ids[i]; i++) {
        add_file(dir, "images", ids[i], ids[i], FALSE);
        add_file(dir, "masks", ids[i], ids[i], FALSE);
        /* a blank line and no final newline: both tolerated */
        g_string_append_printf(list, "%s%s", i == 3 ? "\n" : "", ids[i]);
        if (i < N - 1) g_string_append_c(list, '\n');
    }
    write_text(dir, "train.txt", list->str);
    g_string_free(list, TRUE);
    GError *error = NULL;
    cs_dataset *ds = cs_dataset_open(dir, "train", &error);
    CHECK_MSG(ds != NULL, "cannot open the temporary dataset: %s", error ? error->message : "?");
    g_clear_error(&error);
    if (!ds) goto out;
    CHECK(cs_dataset_size(ds) == N);
    for (int i = 0; i < N; i++) {
        CHECK(strcmp(cs_dataset_id(ds, i), ids[i]) == 0);
        CHECK(g_str_has_suffix(cs_dataset_image_path(ds, i), ".jpg") &&
              strstr(cs_dataset_mask_path(ds, i), "masks") != NULL);
    }

    cs_sample_options opt = {CS_AUG_STAGE1, SIZE, FALSE};
    const uint64_t seed = 20250101;
    cs_loader *one = cs_loader_new(ds, BATCH, TRUE, &opt, seed, 1);
    cs_loader *four = cs_loader_new(ds, BATCH, TRUE, &opt, seed, 4);
    CHECK(cs_loader_batches(one) == 3);

    /* before any epoch: an error, no batch */
    CHECK(cs_loader_next(one, &error) == NULL && error != NULL);
    g_clear_error(&error);

    epoch_record e[3], again[3];
    for (int ep = 0; ep < 3; ep++) {
        e[ep] = run_epoch(one, ep, 0, SIZE);
        again[ep] = run_epoch(four, ep, 0, SIZE);
        CHECK_MSG(e[ep].n_batches == 3 && e[ep].count[0] == 3 && e[ep].count[1] == 3 &&
                  e[ep].count[2] == 1, "epoch %d: batches of %d, %d, %d", ep, e[ep].count[0],
                  e[ep].count[1], e[ep].count[2]);
        for (int b = 0; b < e[ep].n_batches; b++) CHECK(e[ep].batch_index[b] == b);
        int seen[N] = {0};
        for (int i = 0; i < e[ep].n_samples; i++)
            if (e[ep].indices[i] >= 0 && e[ep].indices[i] < N) seen[e[ep].indices[i]]++;
        for (int i = 0; i < N; i++)
            CHECK_MSG(seen[i] == 1, "epoch %d: index %d seen %d times", ep, i, seen[i]);
        CHECK_MSG(records_equal(&e[ep], &again[ep]),
                  "epoch %d: 1 and 4 workers give different batches", ep);
        printf("  epoch %d order:", ep);
        for (int i = 0; i < e[ep].n_samples; i++) printf(" %d", e[ep].indices[i]);
        printf("\n");
    }
    for (int a = 0; a < 3; a++)
        for (int b = a + 1; b < 3; b++)
            CHECK_MSG(memcmp(e[a].indices, e[b].indices, sizeof(int) * N) != 0,
                      "epochs %d and %d in the same order", a, b);

    /* a second run of the same loader, and a new loader, repeat epoch 1 */
    epoch_record rerun = run_epoch(four, 1, 0, SIZE);
    CHECK(records_equal(&rerun, &e[1]));
    record_free(&rerun);
    cs_loader *fresh = cs_loader_new(ds, BATCH, TRUE, &opt, seed, 2);
    rerun = run_epoch(fresh, 1, 0, SIZE);
    CHECK(records_equal(&rerun, &e[1]));
    record_free(&rerun);

    /* resume at batch k: exactly batches k.. of the uninterrupted epoch */
    const size_t per_sample = (size_t)SIZE * SIZE * 5;
    for (int k = 0; k <= 3; k++) {
        epoch_record part = run_epoch(four, 2, k, SIZE);
        int skip = MIN(k * BATCH, N);
        CHECK_MSG(part.n_batches == 3 - k && part.n_samples == N - skip,
                  "resume at %d: %d batches", k, part.n_batches);
        CHECK(memcmp(part.indices, e[2].indices + skip, sizeof(int) * (size_t)part.n_samples) == 0);
        CHECK(part.n_data == e[2].n_data - (size_t)skip * per_sample);
        CHECK_MSG(part.n_data == 0 || memcmp(part.data, e[2].data + (size_t)skip * per_sample,
                                             part.n_data * sizeof(float)) == 0,
                  "resume at batch %d: data differ", k);
        for (int b = 0; b < part.n_batches; b++) CHECK(part.batch_index[b] == k + b);
        record_free(&part);
    }

    /* restart in the middle of an epoch, then free in the middle of one */
    cs_loader_start_epoch(fresh, 0, 0);
    CHECK(cs_loader_next(fresh, NULL) != NULL);
    rerun = run_epoch(fresh, 1, 0, SIZE);
    CHECK(records_equal(&rerun, &e[1]));
    record_free(&rerun);
    cs_loader_start_epoch(fresh, 2, 0);
    CHECK(cs_loader_next(fresh, NULL) != NULL);
    cs_loader_free(fresh);
    cs_loader *never = cs_loader_new(ds, BATCH, TRUE, &opt, seed, 0);
    cs_loader_free(never);
    cs_loader *started = cs_loader_new(ds, 2, TRUE, &opt, seed, 3);
    cs_loader_start_epoch(started, 5, 1);
    cs_loader_free(started);

    /* another seed, another order; the same index is augmented differently per epoch */
    cs_loader *other = cs_loader_new(ds, BATCH, TRUE, &opt, seed + 1, 2);
    epoch_record o = run_epoch(other, 0, 0, SIZE);
    CHECK(memcmp(o.indices, e[0].indices, sizeof(int) * N) != 0);
    record_free(&o);
    cs_loader_free(other);
    int differs = 0;
    for (int i = 0; i < N; i++) {
        int p0 = -1, p1 = -1;
        for (int j = 0; j < N; j++) {
            if (e[0].indices[j] == i) p0 = j;
            if (e[1].indices[j] == i) p1 = j;
        }
        /* images of one batch come first, then its y1s, then its y2s */
        const size_t img_n = (size_t)SIZE * SIZE * 3;
        const float *a = e[0].data + (size_t)(p0 / BATCH) * BATCH * per_sample +
                         (size_t)(p0 % BATCH) * img_n;
        const float *b = e[1].data + (size_t)(p1 / BATCH) * BATCH * per_sample +
                         (size_t)(p1 % BATCH) * img_n;
        differs += memcmp(a, b, img_n * sizeof(float)) != 0;
    }
    CHECK_MSG(differs >= 3, "only %d of %d samples augmented differently in epochs 0 and 1",
              differs, N);

    /* file order without shuffling; without augmentation a batch is the plain samples */
    cs_sample_options plain = {CS_AUG_NONE, SIZE, FALSE};
    cs_loader *ordered = cs_loader_new(ds, 4, FALSE, &plain, seed, 3);
    CHECK(cs_loader_batches(ordered) == 2);
    epoch_record f = run_epoch(ordered, 7, 0, SIZE);
    for (int i = 0; i < f.n_samples; i++) CHECK(f.indices[i] == i);
    CHECK(f.n_samples == N);
    float *img = g_new(float, (size_t)SIZE * SIZE * 3), *y1 = g_new(float, (size_t)SIZE * SIZE),
          *y2 = g_new(float, (size_t)SIZE * SIZE);
    CHECK(cs_dataset_load_sample(ds, 5, &plain, 0, img, y1, y2, NULL));
    /* sample 5 is the second of batch 1 (4 samples in batch 0) */
    const float *batch1 = f.data + 4 * per_sample;
    CHECK(memcmp(batch1 + (size_t)SIZE * SIZE * 3, img, (size_t)SIZE * SIZE * 3 * sizeof(float)) == 0);
    CHECK(memcmp(batch1 + 3 * (size_t)SIZE * SIZE * 3 + (size_t)SIZE * SIZE, y1,
                 (size_t)SIZE * SIZE * sizeof(float)) == 0);
    g_free(img);
    g_free(y1);
    g_free(y2);
    record_free(&f);
    cs_loader_free(ordered);

    for (int ep = 0; ep < 3; ep++) {
        record_free(&e[ep]);
        record_free(&again[ep]);
    }
    cs_loader_free(one);
    cs_loader_free(four);
    cs_dataset_free(ds);
    printf("loader: epochs, worker counts, resume, restart and shutdown checked\n");
out:
    g_free(dir);
    g_strfreev(ids);
}

/* A file that breaks after the dataset was opened: cs_loader_next reports it. */
static void test_loader_error(void) {
    char **ids = val_ids(5);
    char *dir = make_dataset_dir("loader_error");
    GString *list = g_string_new("");
    for (int i = 0; i < 5 && ids[i]; i++) {
        add_file(dir, "images", ids[i], ids[i], TRUE);
        add_file(dir, "masks", ids[i], ids[i], FALSE);
        g_string_append_printf(list, "%s\n", ids[i]);
    }
    write_text(dir, "val.txt", list->str);
    g_string_free(list, TRUE);
    cs_dataset *ds = cs_dataset_open(dir, "val", NULL);
    CHECK(ds != NULL);
    if (ds) {
        /* index 3: the second sample of batch 1 */
        const char *broken = cs_dataset_image_path(ds, 3);
        CHECK(g_file_set_contents(broken, "\xff\xd8\xff garbage, not a JPEG", -1, NULL));
        cs_sample_options opt = {CS_AUG_STAGE2, 32, FALSE};
        for (int workers = 1; workers <= 4; workers += 3) {
            cs_loader *loader = cs_loader_new(ds, 2, FALSE, &opt, 1, workers);
            cs_loader_start_epoch(loader, 0, 0);
            GError *error = NULL;
            const cs_batch *b = cs_loader_next(loader, &error);
            CHECK(b != NULL && b->batch_index == 0 && error == NULL);
            b = cs_loader_next(loader, &error);
            CHECK_MSG(b == NULL && error != NULL, "the broken file was not reported");
            if (error) {
                printf("  loader error (%d workers) -> %s\n", workers, error->message);
                CHECK_MSG(strstr(error->message, broken) != NULL, "message lacks %s", broken);
                CHECK(strstr(error->message, "batch 1") != NULL);
                g_clear_error(&error);
            }
            /* the epoch ended there; a new one starts again */
            CHECK(cs_loader_next(loader, &error) == NULL && error == NULL);
            cs_loader_start_epoch(loader, 1, 0);
            CHECK(cs_loader_next(loader, &error) != NULL);
            cs_loader_free(loader);
        }
        cs_dataset_free(ds);
    }
    g_free(dir);
    g_strfreev(ids);
}

// ---------------------------------------------------------------------------------
// cs_dataset_open's checks

static void test_bad_data(void) {
    char **ids = val_ids(3);   /* 0: 621 x 530, 2: 570 x 531 */
    if (!ids[2]) {
        g_strfreev(ids);
        return;
    }
    char *dir, *path;

    /* missing split list */
    dir = make_dataset_dir("no_list");
    path = g_build_filename(dir, "train.txt", NULL);
    expect_open_error("missing split list", dir, "train", CS_ERROR_IO, path, NULL);
    g_free(path);
    g_free(dir);

    /* empty split list (only blank lines) */
    dir = make_dataset_dir("empty_list");
    write_text(dir, "train.txt", "\n  \n\n");
    path = g_build_filename(dir, "train.txt", NULL);
    expect_open_error("empty split list", dir, "train", CS_ERROR_FORMAT, path, "empty", NULL);
    g_free(path);
    g_free(dir);

    /* missing mask (the image is there) */
    dir = make_dataset_dir("no_mask");
    add_file(dir, "images", "a", ids[0], FALSE);
    add_file(dir, "images", "b", ids[1], FALSE);
    add_file(dir, "masks", "a", ids[0], FALSE);
    write_text(dir, "train.txt", "a\nb\n");
    path = g_build_filename(dir, "masks", "b.jpg", NULL);
    expect_open_error("missing mask", dir, "train", CS_ERROR_IO, path, "mask", "train.txt", NULL);
    g_free(path);
    g_free(dir);

    /* missing image */
    dir = make_dataset_dir("no_image");
    add_file(dir, "masks", "a", ids[0], FALSE);
    write_text(dir, "train.txt", "a\n");
    path = g_build_filename(dir, "images", "a.jpg", NULL);
    expect_open_error("missing image", dir, "train", CS_ERROR_IO, path, "image", NULL);
    g_free(path);
    g_free(dir);

    /* image and mask of different sizes */
    dir = make_dataset_dir("size_mismatch");
    add_file(dir, "images", "a", ids[0], FALSE);
    add_file(dir, "masks", "a", ids[2], FALSE);
    write_text(dir, "train.txt", "a\n");
    char *image = g_build_filename(dir, "images", "a.jpg", NULL);
    path = g_build_filename(dir, "masks", "a.jpg", NULL);
    expect_open_error("size mismatch", dir, "train", CS_ERROR_FORMAT, path, image, "621x530",
                      "570x531", NULL);
    g_free(image);
    g_free(path);
    g_free(dir);

    /* corrupt image: not an image at all */
    dir = make_dataset_dir("corrupt");
    add_file(dir, "masks", "a", ids[0], FALSE);
    write_text(dir, "images/a.jpg", "this is not a JPEG file\n");
    write_text(dir, "train.txt", "a\n");
    path = g_build_filename(dir, "images", "a.jpg", NULL);
    expect_open_error("corrupt image", dir, "train", CS_ERROR_FORMAT, path, "not a readable image",
                      NULL);
    g_free(path);
    g_free(dir);

    /* unreadable image: a folder where the file should be */
    dir = make_dataset_dir("unreadable");
    add_file(dir, "masks", "a", ids[0], FALSE);
    path = g_build_filename(dir, "images", "a.jpg", NULL);
    g_mkdir(path, 0755);
    write_text(dir, "train.txt", "a\n");
    expect_open_error("unreadable image", dir, "train", CS_ERROR_IO, path, "cannot read", NULL);
    g_free(path);
    g_free(dir);

    g_strfreev(ids);
}

// ---------------------------------------------------------------------------------
// polyp-free frames and several datasets

static void test_empty_masks(const char *nopolyp) {
    enum { SIZE = 48 };
    const size_t plane = SIZE * SIZE;
    GError *error = NULL;
    cs_dataset *ds = cs_dataset_open(nopolyp, "val", &error);
    CHECK_MSG(ds != NULL, "%s: %s", nopolyp, error ? error->message : "");
    if (!ds) {
        g_clear_error(&error);
        return;
    }
    float *image = g_new(float, 3 * plane), *y1 = g_new(float, plane), *y2 = g_new(float, plane);
    int checked = 0;
    for (int mode = CS_AUG_NONE; mode <= CS_AUG_STAGE2; mode++) {
        for (int fix = 0; fix <= 1; fix++) {
            const cs_sample_options opt = {.aug = (cs_aug_mode)mode, .size = SIZE,
                                           .fix_background = fix};
            for (uint64_t seed = 0; seed < 12; seed++) {
                const int index = (int)(seed % 3);
                if (!cs_dataset_load_sample(ds, index, &opt, seed, image, y1, y2, &error)) break;
                gboolean ok = TRUE;
                for (size_t k = 0; k < plane; k++) ok = ok && y1[k] == 0.0f && y2[k] == 1.0f;
                for (size_t k = 0; k < 3 * plane; k++)
                    ok = ok && image[k] >= 0.0f && image[k] <= 1.0f;
                CHECK_MSG(ok, "polyp-free sample %d, mode %d, fix %d, seed %d: y1 not 0, y2 "
                              "not 1 or image outside [0, 1]", index, mode, fix, (int)seed);
                checked++;
            }
        }
    }
    CHECK_MSG(error == NULL && checked == 72, "polyp-free samples: %s",
              error ? error->message : "not all loaded");
    g_clear_error(&error);
    g_free(image), g_free(y1), g_free(y2);
    cs_dataset_free(ds);
}

static void test_open_many(const char *nopolyp) {
    GError *error = NULL;
    const char *dirs[] = {kvasir_dir, nopolyp, NULL};
    cs_dataset *a = cs_dataset_open(kvasir_dir, "val", NULL), *b = cs_dataset_open(nopolyp, "val", NULL);
    cs_dataset *both = cs_dataset_open_many(dirs, "val", &error);
    CHECK_MSG(a && b && both, "open_many: %s", error ? error->message : "a part did not open");
    if (a && b && both) {
        const int na = cs_dataset_size(a), nb = cs_dataset_size(b);
        CHECK(cs_dataset_size(both) == na + nb);
        gboolean same = TRUE;
        for (int i = 0; i < na + nb; i++) {
            const cs_dataset *part = i < na ? a : b;
            const int j = i < na ? i : i - na;
            same = same && !strcmp(cs_dataset_id(both, i), cs_dataset_id(part, j)) &&
                   !strcmp(cs_dataset_image_path(both, i), cs_dataset_image_path(part, j)) &&
                   !strcmp(cs_dataset_mask_path(both, i), cs_dataset_mask_path(part, j));
        }
        CHECK_MSG(same, "open_many: the entries are the two splits' in order");
        /* a shuffled epoch over both visits every index once: batches of 64 ids */
        const cs_sample_options opt = {.aug = CS_AUG_NONE, .size = 16};
        cs_loader *loader = cs_loader_new(both, 64, TRUE, &opt, 3, 2);
        cs_loader_start_epoch(loader, 0, 0);
        int *seen = g_new0(int, na + nb), visits = 0, from_b = 0, first_b = -1;
        for (const cs_batch *batch; (batch = cs_loader_next(loader, &error));) {
            for (int i = 0; i < batch->count; i++, visits++) {
                const int index = batch->indices[i];
                seen[index]++;
                from_b += index >= na;
                if (first_b < 0 && index >= na) first_b = visits;
            }
        }
        gboolean once = visits == na + nb;
        for (int i = 0; i < na + nb; i++) once = once && seen[i] == 1;
        CHECK_MSG(once && from_b == nb && error == NULL && first_b < na,
                  "open_many: a shuffled epoch visits each of the %d + %d images once, mixed "
                  "(first of the second folder at position %d)", na, nb, first_b);
        g_clear_error(&error);
        g_free(seen);
        cs_loader_free(loader);
    }
    cs_dataset_free(a), cs_dataset_free(b), cs_dataset_free(both);
    /* a broken folder in the list: named, nothing returned */
    char *missing = g_build_filename(temp_root, "no-such-dataset", NULL);
    const char *broken[] = {kvasir_dir, missing, NULL};
    cs_dataset *none = cs_dataset_open_many(broken, "val", &error);
    CHECK_MSG(none == NULL && error && strstr(error->message, "no-such-dataset"),
              "open_many with a missing folder: %s", error ? error->message : "no error");
    g_clear_error(&error);
    cs_dataset_free(none);
    g_free(missing);
}

int main(void) {
    const char *data = g_getenv("CONDSEG_DATA");
    kvasir_dir = g_build_filename(data ? data : "../shared/data", "kvasir-seg", NULL);
    GError *error = NULL;
    temp_root = g_dir_make_tmp("condseg-test-data-XXXXXX", &error);
    CHECK_MSG(temp_root != NULL, "no temporary folder: %s", error ? error->message : "?");
    if (!temp_root) return check_summary("test_data");

    cs_safetensors *gold = golden_open("augment_golden.safetensors");
    if (gold) {
        test_sample_golden(gold);
        cs_st_close(gold);
    }
    test_background_quirk();
    test_loader();
    test_loader_error();
    test_bad_data();
    char *nopolyp = g_build_filename(data ? data : "../shared/data", "nopolyp", NULL);
    test_empty_masks(nopolyp);
    test_open_many(nopolyp);
    g_free(nopolyp);

    check_remove_tree(temp_root);
    g_free(temp_root);
    g_free(kvasir_dir);
    return check_summary("test_data");
}
