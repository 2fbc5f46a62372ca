/* data.c — training and evaluation data (spec §1.2, §6.5, §6.6, §8): the dataset folder
 * and its split lists, one preprocessed and optionally augmented sample, a loader whose
 * worker threads decode batches ahead of the caller, and the stage-1 photometric
 * augmentation of a float batch.
 *
 * Determinism: the permutation of an epoch is drawn from (seed, epoch) and sample i's
 * augmentation from (seed, epoch, i), each through its own GRand, so the data never
 * depend on which worker decoded what or when.
 */
#include <glib/gstdio.h>             /* g_fopen */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "augment.h"
#include "data.h"

// ---------------------------------------------------------------------------------
// seeds

/* splitmix64's output function: a bijective 64-bit mixer with good avalanche. */
static uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A seed from (seed, a, b), chained so that nearby triples give unrelated seeds. */
static uint64_t derive_seed(uint64_t seed, uint64_t a, uint64_t b) {
    return mix64(mix64(mix64(seed) ^ a) ^ b);
}

/* The permutation stream of an epoch uses a b that no dataset index can take. */
#define PERMUTATION_STREAM UINT64_MAX

static GRand *rand_from_seed(uint64_t seed) {
    guint32 words[2] = {(guint32)seed, (guint32)(seed >> 32)};
    return g_rand_new_with_seed_array(words, 2);
}

// ---------------------------------------------------------------------------------
// dataset

struct cs_dataset {
    int n;
    char **ids, **images, **masks;    /* n entries each, NULL-terminated */
};

static const char *const image_extensions[] = {"jpg", "png", "bmp", "tif"};

/* DIR/<sub>/<id>.<ext> for the first extension that exists, or NULL. */
static char *find_image_file(const char *dir, const char *sub, const char *id) {
    for (size_t k = 0; k < G_N_ELEMENTS(image_extensions); k++) {
        char *name = g_strdup_printf("%s.%s", id, image_extensions[k]);
        char *path = g_build_filename(dir, sub, name, NULL);
        g_free(name);
        if (g_file_test(path, G_FILE_TEST_EXISTS)) return path;
        g_free(path);
    }
    return NULL;
}

/* Whether one byte of `path` can be read (a missing file, missing permissions or a
 * folder cannot); errno-style reason in *reason. */
static gboolean file_readable(const char *path, int *reason) {
    FILE *fp = g_fopen(path, "rb");
    if (!fp) {
        *reason = errno;
        return FALSE;
    }
    (void)fgetc(fp);
    *reason = errno;
    gboolean ok = !ferror(fp);
    fclose(fp);
    return ok;
}

/* The size of the image at `path` from its header. A file that cannot be read is an
 * I/O error; one whose content no image loader recognises, a format error. */
static gboolean image_header_size(const char *path, int *width, int *height, GError **error) {
    int reason = 0;
    if (!file_readable(path, &reason)) {
        g_set_error(error, CS_ERROR, CS_ERROR_IO, "cannot read image %s: %s", path,
                    g_strerror(reason));
        return FALSE;
    }
    /* the loader's own checks (format, size limit, truncation), so that a file the
     * loader would refuse stops the run before it starts */
    return cs_image_read_size(path, width, height, error);
}

/* Ids become file names (DIR/images/<id>.jpg, and --save-masks OUT/<id>.png): only plain
 * names, so that a list cannot reach outside the dataset or the output folder. */
#define MAX_ID_BYTES 200

static const char *id_problem(const char *id) {
    if (strlen(id) > MAX_ID_BYTES) return "longer than 200 bytes";
    if (id[0] == '.') return "starts with '.'";
    if (!g_utf8_validate(id, -1, NULL)) return "is not UTF-8";
    for (const char *c = id; *c; c++) {
        if (*c == '/' || *c == '\\') return "holds a '/' or '\\'";
        if ((unsigned char)*c < 0x20 || *c == 0x7f) return "holds a control character";
    }
    return NULL;
}

cs_dataset *cs_dataset_open(const char *dir, const char *split, GError **error) {
    g_return_val_if_fail(dir && split, NULL);
    char *list_name = g_strdup_printf("%s.txt", split);
    char *list_path = g_build_filename(dir, list_name, NULL);
    g_free(list_name);
    char *text = NULL;
    GError *file_error = NULL;
    if (!g_file_get_contents(list_path, &text, NULL, &file_error)) {
        g_set_error(error, CS_ERROR, CS_ERROR_IO, "cannot read split list %s: %s", list_path,
                    file_error->message);
        g_error_free(file_error);
        g_free(list_path);
        return NULL;
    }

    /* one id per line; unlike the original, a last line without newline counts and blank
     * lines (or stray \r of CRLF files) are ignored */
    GPtrArray *ids = g_ptr_array_new_with_free_func(g_free);
    char **lines = g_strsplit(text, "\n", -1);
    const char *problem = NULL;
    int line_number = 0;
    for (char **line = lines; *line && !problem; line++) {
        line_number++;
        g_strstrip(*line);
        if (**line && !(problem = id_problem(*line))) g_ptr_array_add(ids, g_strdup(*line));
    }
    if (problem) {
        char *shown = g_strescape(lines[line_number - 1], NULL);
        if (strlen(shown) > 60) strcpy(shown + 57, "...");
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                    "split list %s, line %d: id \"%s\" %s; an id must be a plain file name "
                    "(no '/', no leading '.', no control characters, at most %d bytes)",
                    list_path, line_number, shown, problem, MAX_ID_BYTES);
        g_free(shown);
    }
    g_strfreev(lines);
    g_free(text);
    if (problem) {
        g_ptr_array_free(ids, TRUE);
        g_free(list_path);
        return NULL;
    }
    if (ids->len == 0) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                    "split list %s is empty: expected one image id per line", list_path);
        g_ptr_array_free(ids, TRUE);
        g_free(list_path);
        return NULL;
    }

    cs_dataset *ds = g_new0(cs_dataset, 1);
    ds->n = (int)ids->len;
    ds->ids = g_new0(char *, ids->len + 1);
    ds->images = g_new0(char *, ids->len + 1);
    ds->masks = g_new0(char *, ids->len + 1);
    gboolean ok = TRUE;
    for (int i = 0; i < ds->n && ok; i++) {
        const char *id = g_ptr_array_index(ids, i);
        ds->ids[i] = g_strdup(id);
        ds->images[i] = find_image_file(dir, "images", id);
        ds->masks[i] = find_image_file(dir, "masks", id);
        if (!ds->images[i] || !ds->masks[i]) {
            const char *kind = !ds->images[i] ? "image" : "mask";
            char *expected = g_build_filename(dir, !ds->images[i] ? "images" : "masks", id,
                                              NULL);
            g_set_error(error, CS_ERROR, CS_ERROR_IO,
                        "%s (entry %d of %s): no %s file %s.jpg (nor .png, .bmp, .tif)", id,
                        i + 1, list_path, kind, expected);
            g_free(expected);
            ok = FALSE;
            break;
        }
        int iw, ih, mw, mh;
        ok = image_header_size(ds->images[i], &iw, &ih, error) &&
             image_header_size(ds->masks[i], &mw, &mh, error);
        if (ok && (iw != mw || ih != mh)) {
            g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                        "mask %s is %dx%d but its image %s is %dx%d: expected the same size",
                        ds->masks[i], mw, mh, ds->images[i], iw, ih);
            ok = FALSE;
        }
    }
    g_ptr_array_free(ids, TRUE);
    g_free(list_path);
    if (!ok) {
        cs_dataset_free(ds);
        return NULL;
    }
    return ds;
}

void cs_dataset_free(cs_dataset *ds) {
    if (!ds) return;
    for (int i = 0; i < ds->n; i++) {
        g_free(ds->ids[i]);
        g_free(ds->images[i]);
        g_free(ds->masks[i]);
    }
    g_free(ds->ids);
    g_free(ds->images);
    g_free(ds->masks);
    g_free(ds);
}

/* Moves entry `from` of `src` to entry `to` of `dst` (the strings change owner). */
static void move_entry(cs_dataset *dst, int to, cs_dataset *src, int from) {
    dst->ids[to] = src->ids[from], dst->images[to] = src->images[from];
    dst->masks[to] = src->masks[from];
    src->ids[from] = src->images[from] = src->masks[from] = NULL;
}

cs_dataset *cs_dataset_open_many(const char *const *dirs, const char *split, GError **error) {
    g_return_val_if_fail(dirs && dirs[0], NULL);
    GPtrArray *parts = g_ptr_array_new_with_free_func((GDestroyNotify)cs_dataset_free);
    int total = 0;
    for (const char *const *dir = dirs; *dir; dir++) {
        cs_dataset *part = cs_dataset_open(*dir, split, error);
        if (!part) {
            g_ptr_array_free(parts, TRUE);
            return NULL;
        }
        g_ptr_array_add(parts, part);
        total += part->n;
    }
    cs_dataset *all = g_new0(cs_dataset, 1);
    all->ids = g_new0(char *, total + 1);
    all->images = g_new0(char *, total + 1);
    all->masks = g_new0(char *, total + 1);
    for (guint p = 0; p < parts->len; p++) {
        cs_dataset *part = g_ptr_array_index(parts, p);
        for (int i = 0; i < part->n; i++) move_entry(all, all->n++, part, i);
    }
    g_ptr_array_free(parts, TRUE);
    return all;
}

int cs_dataset_size(const cs_dataset *ds) { return ds ? ds->n : 0; }

const char *cs_dataset_id(const cs_dataset *ds, int index) {
    g_return_val_if_fail(ds && index >= 0 && index < ds->n, NULL);
    return ds->ids[index];
}

const char *cs_dataset_image_path(const cs_dataset *ds, int index) {
    g_return_val_if_fail(ds && index >= 0 && index < ds->n, NULL);
    return ds->images[index];
}

const char *cs_dataset_mask_path(const cs_dataset *ds, int index) {
    g_return_val_if_fail(ds && index >= 0 && index < ds->n, NULL);
    return ds->masks[index];
}

// ---------------------------------------------------------------------------------
// one sample

/* §6.5: each step with its own coin flip, in this order. */
typedef struct {
    double p_rotate, rotate_limit, p_hflip, p_vflip, p_dropout;
} spatial_settings;

static const spatial_settings stage1_settings = {0.5, 90.0, 0.5, 0.5, 0.3};
static const spatial_settings stage2_settings = {0.3, 35.0, 0.3, 0.3, 0.3};

enum { DROPOUT_HOLES = 10, DROPOUT_SIZE = 32 };

/* Rotate (image bilinear, mask nearest), HorizontalFlip, VerticalFlip, CoarseDropout
 * (image only) at native resolution, drawn from `seed`. */
static void spatial_augment(cs_image **image, cs_image **mask, const spatial_settings *s,
                            uint64_t seed) {
    GRand *rng = rand_from_seed(seed);
    cs_image *img = *image, *msk = *mask;
    if (g_rand_double(rng) < s->p_rotate) {
        double angle = g_rand_double_range(rng, -s->rotate_limit, s->rotate_limit);
        cs_image *ri = cs_image_new(img->width, img->height, img->channels);
        cs_image *rm = cs_image_new(msk->width, msk->height, msk->channels);
        cs_aug_rotate(img, angle, 0, ri);
        cs_aug_rotate(msk, angle, 1, rm);
        cs_image_free(img);
        cs_image_free(msk);
        img = ri;
        msk = rm;
    }
    if (g_rand_double(rng) < s->p_hflip) {
        cs_aug_hflip(img);
        cs_aug_hflip(msk);
    }
    if (g_rand_double(rng) < s->p_vflip) {
        cs_aug_vflip(img);
        cs_aug_vflip(msk);
    }
    if (g_rand_double(rng) < s->p_dropout) {
        /* y1 ~ U_int[0, H-32], x1 ~ U_int[0, W-32]; an image under 32 pixels gets holes
         * at 0 clipped to it (albumentations would raise) */
        int x0[DROPOUT_HOLES], y0[DROPOUT_HOLES];
        for (int k = 0; k < DROPOUT_HOLES; k++) {
            y0[k] = g_rand_int_range(rng, 0, MAX(img->height - DROPOUT_SIZE, 0) + 1);
            x0[k] = g_rand_int_range(rng, 0, MAX(img->width - DROPOUT_SIZE, 0) + 1);
        }
        cs_aug_dropout(img, DROPOUT_HOLES, x0, y0, DROPOUT_SIZE);
    }
    g_rand_free(rng);
    *image = img;
    *mask = msk;
}

gboolean cs_dataset_load_sample(const cs_dataset *ds, int index, const cs_sample_options *opt,
                                uint64_t rng_seed, float *image, float *y1, float *y2,
                                GError **error) {
    g_return_val_if_fail(ds && opt && index >= 0 && index < ds->n && opt->size > 0, FALSE);
    g_return_val_if_fail(image && y1 && y2, FALSE);
    cs_image *img = cs_image_load_bgr(ds->images[index], error);
    if (!img) return FALSE;
    cs_image *mask = cs_image_load_gray(ds->masks[index], error);
    if (!mask) {
        cs_image_free(img);
        return FALSE;
    }
    if (img->width != mask->width || img->height != mask->height) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                    "mask %s is %dx%d but its image %s is %dx%d: expected the same size",
                    ds->masks[index], mask->width, mask->height, ds->images[index],
                    img->width, img->height);
        cs_image_free(img);
        cs_image_free(mask);
        return FALSE;
    }

    /* the original's background is 255 - mask taken before augmentation (spec §9.4) */
    cs_image *background = NULL;
    if (!opt->fix_background) {
        background = cs_image_new(mask->width, mask->height, 1);
        size_t n = (size_t)mask->width * (size_t)mask->height;
        for (size_t i = 0; i < n; i++) background->data[i] = (uint8_t)(255 - mask->data[i]);
    }
    if (opt->aug == CS_AUG_STAGE1 || opt->aug == CS_AUG_STAGE2)
        spatial_augment(&img, &mask, opt->aug == CS_AUG_STAGE1 ? &stage1_settings
                                                                : &stage2_settings, rng_seed);

    /* cv2.resize INTER_LINEAR of each, then / 255 in double, stored as float32 */
    float lut[256];
    for (int v = 0; v < 256; v++) lut[v] = (float)((double)v / 255.0);
    const int size = opt->size;
    const size_t plane = (size_t)size * (size_t)size;
    uint8_t *buf = g_malloc(plane * 3);
    cs_resize_linear_u8(img->data, img->width, img->height, buf, size, size, 3);
    for (size_t i = 0; i < plane; i++)
        for (int c = 0; c < 3; c++) image[(size_t)c * plane + i] = lut[buf[3 * i + (size_t)c]];
    cs_resize_linear_u8(mask->data, mask->width, mask->height, buf, size, size, 1);
    for (size_t i = 0; i < plane; i++) y1[i] = lut[buf[i]];
    if (background) {
        cs_resize_linear_u8(background->data, background->width, background->height, buf, size,
                            size, 1);
        for (size_t i = 0; i < plane; i++) y2[i] = lut[buf[i]];
    } else {
        for (size_t i = 0; i < plane; i++) y2[i] = 1.0f - y1[i];
    }
    g_free(buf);
    cs_image_free(img);
    cs_image_free(mask);
    cs_image_free(background);
    return TRUE;
}

// ---------------------------------------------------------------------------------
// loader
//
// Work is handed out one sample at a time, in batch order, to `workers` threads. Batch b
// is decoded straight into ring slot b % LOADER_SLOTS; a slot is reused only once the
// caller has moved past the batch in it, so the caller's batch plus LOADER_SLOTS - 1
// batches ahead are in flight at once. Everything is guarded by one mutex: the decoding
// itself runs unlocked, into a slot that no one else touches meanwhile.

enum { LOADER_SLOTS = 4 };

typedef struct {
    cs_batch batch;
    int *indices;
    int done;            /* samples finished (successfully or not) */
    GError *error;       /* the first failed sample's error, by position in the batch */
    int error_pos;
} loader_slot;

struct cs_loader {
    const cs_dataset *ds;
    int batch, n_batches;
    int part, parts;     /* the share of each batch this loader delivers (cs_loader_set_share) */
    gboolean shuffle;
    cs_sample_options opt;
    uint64_t seed;

    GMutex lock;
    GCond work_cond;     /* workers wait here for something to decode */
    GCond done_cond;     /* the caller (or start_epoch) waits here for finished samples */
    GThread **threads;
    int n_threads;
    gboolean quit;

    gboolean started;
    int epoch;
    int *order;          /* dataset index of each position of the epoch */
    int sched_batch, sched_pos;   /* the next sample to hand to a worker */
    int end_batch;       /* no work is handed out from here on (epoch end, error) */
    int next_batch;      /* what cs_loader_next returns next */
    int held;            /* the batch the caller holds, or -1 */
    int busy;            /* samples being decoded right now */
    loader_slot slots[LOADER_SLOTS];
};

static gboolean work_available(const cs_loader *L) {
    int window = L->held >= 0 ? L->held : L->next_batch;   /* oldest slot still needed */
    return L->started && L->sched_batch < L->end_batch && L->sched_batch < window + LOADER_SLOTS;
}

/* Prepares slot for batch b of the current epoch (called under the lock). */
static void slot_assign(cs_loader *L, loader_slot *s, int b) {
    const int first = b * L->batch;
    const int whole = MIN(L->batch, L->ds->n - first);
    const int lo = (int)((int64_t)whole * L->part / L->parts),
              hi = (int)((int64_t)whole * (L->part + 1) / L->parts);
    memcpy(s->indices, L->order + first + lo, (size_t)(hi - lo) * sizeof(int));
    s->batch.count = hi - lo;
    s->batch.whole_count = whole;
    s->batch.batch_index = b;
    s->done = 0;
    g_clear_error(&s->error);
    s->error_pos = -1;
}

static gpointer loader_worker(gpointer data) {
    cs_loader *L = data;
    const size_t plane = (size_t)L->opt.size * (size_t)L->opt.size;
    g_mutex_lock(&L->lock);
    while (!L->quit) {
        if (!work_available(L)) {
            g_cond_wait(&L->work_cond, &L->lock);
            continue;
        }
        int b = L->sched_batch, j = L->sched_pos;
        loader_slot *s = &L->slots[b % LOADER_SLOTS];
        if (j == 0) slot_assign(L, s, b);
        if (s->batch.count == 0) {   /* an empty share: nothing to decode */
            L->sched_batch++;
            g_cond_broadcast(&L->done_cond);
            continue;
        }
        if (++L->sched_pos == s->batch.count) {
            L->sched_batch++;
            L->sched_pos = 0;
        }
        int index = s->indices[j];
        uint64_t seed = derive_seed(L->seed, (uint64_t)L->epoch, (uint64_t)index);
        L->busy++;
        g_mutex_unlock(&L->lock);

        GError *error = NULL;
        gboolean ok = cs_dataset_load_sample(L->ds, index, &L->opt, seed,
                                             s->batch.images + (size_t)j * 3 * plane,
                                             s->batch.y1 + (size_t)j * plane,
                                             s->batch.y2 + (size_t)j * plane, &error);

        g_mutex_lock(&L->lock);
        L->busy--;
        if (!ok) {
            /* keep the lowest position's error, so which one is reported is not a race */
            if (!s->error || j < s->error_pos) {
                g_clear_error(&s->error);
                s->error = error;
                s->error_pos = j;
            } else {
                g_error_free(error);
            }
        }
        s->done++;
        g_cond_broadcast(&L->done_cond);
    }
    g_mutex_unlock(&L->lock);
    return NULL;
}

cs_loader *cs_loader_new(const cs_dataset *ds, int batch, gboolean shuffle,
                         const cs_sample_options *opt, uint64_t seed, int workers) {
    g_return_val_if_fail(ds && ds->n > 0 && batch > 0 && opt && opt->size > 0 && workers >= 0,
                         NULL);
    cs_loader *L = g_new0(cs_loader, 1);
    L->ds = ds;
    L->batch = batch;
    L->n_batches = (ds->n + batch - 1) / batch;
    L->part = 0, L->parts = 1;
    L->shuffle = shuffle;
    L->opt = *opt;
    L->seed = seed;
    L->order = g_new(int, ds->n);
    L->held = -1;
    g_mutex_init(&L->lock);
    g_cond_init(&L->work_cond);
    g_cond_init(&L->done_cond);
    const size_t plane = (size_t)opt->size * (size_t)opt->size;
    for (int k = 0; k < LOADER_SLOTS; k++) {
        loader_slot *s = &L->slots[k];
        s->indices = g_new0(int, batch);
        s->batch.size = opt->size;
        s->batch.images = g_new(float, (size_t)batch * 3 * plane);
        s->batch.y1 = g_new(float, (size_t)batch * plane);
        s->batch.y2 = g_new(float, (size_t)batch * plane);
        s->batch.indices = s->indices;
        s->batch.batch_index = -1;
    }
    /* default: a few decoders, leaving most cores to the network */
    L->n_threads = workers > 0 ? workers : CLAMP((int)g_get_num_processors() / 2, 1, 4);
    L->threads = g_new0(GThread *, L->n_threads);
    for (int t = 0; t < L->n_threads; t++) {
        char name[32];
        g_snprintf(name, sizeof name, "cs-loader-%d", t);
        L->threads[t] = g_thread_new(name, loader_worker, L);
    }
    return L;
}

void cs_loader_free(cs_loader *L) {
    if (!L) return;
    g_mutex_lock(&L->lock);
    L->quit = TRUE;
    g_cond_broadcast(&L->work_cond);
    g_mutex_unlock(&L->lock);
    /* a worker in the middle of a sample finishes it, then sees quit */
    for (int t = 0; t < L->n_threads; t++) g_thread_join(L->threads[t]);
    g_free(L->threads);
    for (int k = 0; k < LOADER_SLOTS; k++) {
        loader_slot *s = &L->slots[k];
        g_free(s->indices);
        g_free(s->batch.images);
        g_free(s->batch.y1);
        g_free(s->batch.y2);
        g_clear_error(&s->error);
    }
    g_free(L->order);
    g_mutex_clear(&L->lock);
    g_cond_clear(&L->work_cond);
    g_cond_clear(&L->done_cond);
    g_free(L);
}

int cs_loader_batches(const cs_loader *L) { return L ? L->n_batches : 0; }

void cs_loader_set_share(cs_loader *L, int part, int parts) {
    g_return_if_fail(L && parts >= 1 && part >= 0 && part < parts);
    g_mutex_lock(&L->lock);   /* the workers read it under the lock */
    L->part = part, L->parts = parts;
    g_mutex_unlock(&L->lock);
}

void cs_loader_start_epoch(cs_loader *L, int epoch, int first_batch) {
    g_return_if_fail(L && first_batch >= 0);
    g_mutex_lock(&L->lock);
    /* stop handing out work and let running samples land before the slots are reused */
    L->end_batch = 0;
    L->held = -1;
    while (L->busy > 0) g_cond_wait(&L->done_cond, &L->lock);
    for (int k = 0; k < LOADER_SLOTS; k++) {
        L->slots[k].batch.batch_index = -1;
        L->slots[k].done = 0;
        g_clear_error(&L->slots[k].error);
    }

    L->epoch = epoch;
    const int n = L->ds->n;
    for (int i = 0; i < n; i++) L->order[i] = i;
    if (L->shuffle) {
        /* Fisher-Yates from the epoch's own stream */
        GRand *rng = rand_from_seed(derive_seed(L->seed, (uint64_t)epoch, PERMUTATION_STREAM));
        for (int i = n - 1; i > 0; i--) {
            int j = g_rand_int_range(rng, 0, i + 1);
            int t = L->order[i];
            L->order[i] = L->order[j];
            L->order[j] = t;
        }
        g_rand_free(rng);
    }
    L->next_batch = L->sched_batch = MIN(first_batch, L->n_batches);
    L->sched_pos = 0;
    L->end_batch = L->n_batches;
    L->started = TRUE;
    g_cond_broadcast(&L->work_cond);
    g_mutex_unlock(&L->lock);
}

const cs_batch *cs_loader_next(cs_loader *L, GError **error) {
    g_return_val_if_fail(L, NULL);
    g_mutex_lock(&L->lock);
    if (L->held >= 0) {
        /* the caller is done with its batch: its slot may take the next one */
        L->held = -1;
        g_cond_broadcast(&L->work_cond);
    }
    if (!L->started) {
        g_mutex_unlock(&L->lock);
        g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                    "cs_loader_next: no epoch started (call cs_loader_start_epoch first)");
        return NULL;
    }
    if (L->next_batch >= L->end_batch) {
        g_mutex_unlock(&L->lock);
        return NULL;
    }
    const int b = L->next_batch;
    loader_slot *s = &L->slots[b % LOADER_SLOTS];
    while (!(s->batch.batch_index == b && s->done == s->batch.count))
        g_cond_wait(&L->done_cond, &L->lock);
    if (s->error) {
        g_set_error(error, s->error->domain, s->error->code, "batch %d of epoch %d: %s", b,
                    L->epoch, s->error->message);
        L->end_batch = b;   /* the epoch ends here */
        g_mutex_unlock(&L->lock);
        return NULL;
    }
    L->held = b;
    L->next_batch = b + 1;
    g_mutex_unlock(&L->lock);
    return &s->batch;
}

// ---------------------------------------------------------------------------------
// stage-1 photometric augmentation (§6.6), torchvision 0.14's float32 arithmetic

void cs_photometric_draw(uint64_t seed, cs_photometric_params *p) {
    g_return_if_fail(p);
    GRand *rng = rand_from_seed(seed);
    for (int k = 0; k < 4; k++) p->order[k] = k;
    for (int k = 3; k > 0; k--) {
        int j = g_rand_int_range(rng, 0, k + 1);
        int t = p->order[k];
        p->order[k] = p->order[j];
        p->order[j] = t;
    }
    p->brightness = (float)g_rand_double_range(rng, 0.7, 1.3);
    p->contrast = (float)g_rand_double_range(rng, 0.7, 1.3);
    p->saturation = (float)g_rand_double_range(rng, 0.7, 1.3);
    p->hue = (float)g_rand_double_range(rng, -0.1, 0.1);
    p->grayscale = g_rand_double(rng) < 0.5;
    p->sigma = (float)g_rand_double_range(rng, 0.1, 3.0);
    g_rand_free(rng);
}

/* rgb_to_grayscale: (0.2989 r + 0.587 g) + 0.114 b, each product in float32. */
static inline float gray_of(float r, float g, float b) {
    return (0.2989f * r + 0.587f * g) + 0.114f * b;
}

static inline float clamp01(float v) { return v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v; }

/* _blend(img1, img2, ratio) = clamp(ratio * img1 + (1 - ratio) * img2, 0, 1), with
 * 1 - ratio formed in double (a Python float) before the float32 product. */
static inline float blend(float a, float b, float ratio, float one_minus) {
    return clamp01(ratio * a + one_minus * b);
}

/* adjust_hue on one pixel: RGB -> HSV, H += hue (mod 1), HSV -> RGB, as _rgb2hsv and
 * _hsv2rgb compute it. */
static void hue_pixel(float *r, float *g, float *b, float hue) {
    const float R = *r, G = *g, B = *b;
    const float maxc = fmaxf(R, fmaxf(G, B)), minc = fminf(R, fminf(G, B));
    const int eqc = maxc == minc;
    const float cr = maxc - minc;
    const float s = cr / (eqc ? 1.0f : maxc);
    const float div = eqc ? 1.0f : cr;
    const float rc = (maxc - R) / div, gc = (maxc - G) / div, bc = (maxc - B) / div;
    float h;
    if (maxc == R) h = bc - gc;
    else if (maxc == G) h = (2.0f + rc) - bc;
    else h = (4.0f + gc) - rc;
    h = fmodf(h / 6.0f + 1.0f, 1.0f);
    /* (h + hue) % 1.0: torch's remainder is fmod moved to the divisor's sign */
    h = fmodf(h + hue, 1.0f);
    if (h < 0.0f) h += 1.0f;

    const float v = maxc;
    const float h6 = h * 6.0f;
    const float fi = floorf(h6);
    const float f = h6 - fi;
    const float p = clamp01(v * (1.0f - s));
    const float q = clamp01(v * (1.0f - s * f));
    const float t = clamp01(v * (1.0f - s * (1.0f - f)));
    int i = (int)fi % 6;
    switch (i) {
    case 0: *r = v; *g = t; *b = p; break;
    case 1: *r = q; *g = v; *b = p; break;
    case 2: *r = p; *g = v; *b = t; break;
    case 3: *r = p; *g = q; *b = v; break;
    case 4: *r = t; *g = p; *b = v; break;
    default: *r = v; *g = p; *b = q; break;
    }
}

/* The colour steps of one image (3 planes of n pixels), in place. */
static void photometric_colour(float *img, size_t n, const cs_photometric_params *p) {
    float *c0 = img, *c1 = img + n, *c2 = img + 2 * n;
    for (int k = 0; k < 4; k++) {
        switch (p->order[k]) {
        case 0: {   /* brightness: blend with black */
            const float ratio = p->brightness, om = (float)(1.0 - (double)p->brightness);
            for (size_t i = 0; i < 3 * n; i++) img[i] = blend(img[i], 0.0f, ratio, om);
            break;
        }
        case 1: {   /* contrast: blend with the image's mean gray level */
            double sum = 0;
            for (size_t i = 0; i < n; i++) sum += gray_of(c0[i], c1[i], c2[i]);
            const float mean = (float)(sum / (double)n);
            const float ratio = p->contrast, om = (float)(1.0 - (double)p->contrast);
            for (size_t i = 0; i < 3 * n; i++) img[i] = blend(img[i], mean, ratio, om);
            break;
        }
        case 2: {   /* saturation: blend with the pixel's gray */
            const float ratio = p->saturation, om = (float)(1.0 - (double)p->saturation);
            for (size_t i = 0; i < n; i++) {
                const float gray = gray_of(c0[i], c1[i], c2[i]);
                c0[i] = blend(c0[i], gray, ratio, om);
                c1[i] = blend(c1[i], gray, ratio, om);
                c2[i] = blend(c2[i], gray, ratio, om);
            }
            break;
        }
        default:    /* hue */
            for (size_t i = 0; i < n; i++) hue_pixel(&c0[i], &c1[i], &c2[i], p->hue);
            break;
        }
    }
    if (p->grayscale)
        for (size_t i = 0; i < n; i++) c0[i] = c1[i] = c2[i] = gray_of(c0[i], c1[i], c2[i]);
}

/* torch's reflect padding index (no edge repeat), for any distance. */
static int reflect_index(int p, int len) {
    if (len == 1) return 0;
    while (p < 0 || p >= len) p = p < 0 ? -p : 2 * (len - 1) - p;
    return p;
}

void cs_photometric_apply(float *dst, const float *src, int batch, int h, int w,
                          const cs_photometric_params *p) {
    g_return_if_fail(dst && src && p && batch >= 0 && h > 0 && w > 0);
    const size_t n = (size_t)h * (size_t)w;

    /* _get_gaussian_kernel1d(7, sigma) in float32: x = -3..3, exp(-(x/sigma)^2 / 2),
     * normalised by its sum */
    enum { TAPS = 7, HALF = 3 };
    float kernel[TAPS], ksum = 0.0f;
    for (int k = 0; k < TAPS; k++) {
        const float xs = (float)(k - HALF) / p->sigma;
        kernel[k] = expf(-0.5f * (xs * xs));
        ksum += kernel[k];
    }
    for (int k = 0; k < TAPS; k++) kernel[k] /= ksum;

    float *work = g_new(float, 3 * n);
    for (int img = 0; img < batch; img++) {
        /* copy first: dst may be src */
        memcpy(work, src + (size_t)img * 3 * n, 3 * n * sizeof(float));
        photometric_colour(work, n, p);
        /* GaussianBlur kernel_size (1, 7) = (kx, ky): 7 taps down each column */
        float *out = dst + (size_t)img * 3 * n;
        for (int c = 0; c < 3; c++) {
            const float *in = work + (size_t)c * n;
            for (int y = 0; y < h; y++) {
                const float *rows[TAPS];
                for (int k = 0; k < TAPS; k++)
                    rows[k] = in + (size_t)reflect_index(y + k - HALF, h) * (size_t)w;
                float *o = out + (size_t)c * n + (size_t)y * (size_t)w;
                for (int x = 0; x < w; x++) {
                    float acc = 0.0f;
                    for (int k = 0; k < TAPS; k++) acc += kernel[k] * rows[k][x];
                    o[x] = acc;
                }
            }
        }
    }
    g_free(work);
}
