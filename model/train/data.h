/* data.h — training and evaluation data: the original dataset layout (images/, masks/,
 * train.txt, val.txt), the preprocessing of spec §1.2 with the spatial augmentations of
 * §6.5, and a loader that decodes and augments in worker threads.
 *
 * Reproducibility: every random choice is a function of (seed, epoch, position), never
 * of thread timing, so a run resumed at any batch repeats an uninterrupted run exactly.
 */
#ifndef CONDSEG_DATA_H
#define CONDSEG_DATA_H

#include <glib.h>
#include <stdint.h>

#include "condseg.h"

/* ---- dataset ------------------------------------------------------------------------ */

typedef struct cs_dataset cs_dataset;

/* Opens split `split` ("train", "val", or any name: DIR/<split>.txt) of the dataset in
 * DIR (DIR/images/<id>.<ext>, DIR/masks/<id>.<ext>; .jpg first, then .png, .bmp, .tif).
 * The list is read like the original (one id per line) but tolerates a missing final
 * newline and ignores blank lines. Checked before anything else happens, each failure
 * naming the file: the list exists and is not empty; every image and mask exists, is a
 * readable image, and the two have the same size (header-only reads where possible). */
cs_dataset *cs_dataset_open(const char *dir, const char *split, GError **error);
/* Split `split` of several datasets (a NULL-terminated list of folders, each checked as
 * cs_dataset_open does) as one: their entries in the order of the list. */
cs_dataset *cs_dataset_open_many(const char *const *dirs, const char *split, GError **error);
void cs_dataset_free(cs_dataset *ds);
int cs_dataset_size(const cs_dataset *ds);
const char *cs_dataset_id(const cs_dataset *ds, int index);
const char *cs_dataset_image_path(const cs_dataset *ds, int index);
const char *cs_dataset_mask_path(const cs_dataset *ds, int index);

/* ---- one sample ----------------------------------------------------------------------- */

typedef enum {
    CS_AUG_NONE,     /* validation / evaluation */
    CS_AUG_STAGE1,   /* Rotate 90 p .5, HFlip .5, VFlip .5, CoarseDropout .3 (§6.5) */
    CS_AUG_STAGE2,   /* Rotate 35 p .3, HFlip .3, VFlip .3, CoarseDropout .3 */
} cs_aug_mode;

typedef struct {
    cs_aug_mode aug;
    int size;                 /* side of the network input (256) */
    /* The original computes the background target from the un-augmented mask (spec §9
     * item 4): FALSE reproduces that; TRUE uses 1 - y1 after augmentation. */
    gboolean fix_background;
} cs_sample_options;

/* Loads sample `index` and writes image (3 x size x size, BGR / 255), y1 (mask / 255) and
 * y2 (background / 255), each size x size, as the original pipeline makes them.
 * `rng_seed` seeds the sample's augmentation draws. */
gboolean cs_dataset_load_sample(const cs_dataset *ds, int index, const cs_sample_options *opt,
                                uint64_t rng_seed, float *image, float *y1, float *y2,
                                GError **error);

/* ---- loader ------------------------------------------------------------------------ */

typedef struct {
    int count;                /* samples in this batch (the last one may be smaller) */
    int size;
    float *images;            /* count x 3 x size x size */
    float *y1, *y2;           /* count x 1 x size x size each */
    const int *indices;       /* dataset indices of the samples */
    int batch_index;          /* position of the batch in its epoch */
    int whole_count;          /* samples of the whole batch, every rank's share included */
} cs_batch;

typedef struct cs_loader cs_loader;

/* Batches of `batch` samples; with shuffle, the order of epoch e is a permutation drawn
 * from (seed, e), otherwise file order. Sample i of epoch e is augmented with a seed made
 * from (seed, e, its dataset index). `workers` threads decode ahead (0: a default). */
cs_loader *cs_loader_new(const cs_dataset *ds, int batch, gboolean shuffle,
                         const cs_sample_options *opt, uint64_t seed, int workers);
void cs_loader_free(cs_loader *loader);
int cs_loader_batches(const cs_loader *loader);      /* per epoch: ceil(size / batch) */
/* Data-parallel training: from now on each batch holds only share `part` (0-based) of
 * `parts` of the samples the whole batch would hold, in order: positions
 * [count part / parts, count (part + 1) / parts) of its `count` samples, so that the
 * shares of all parts are the whole batch and none is empty while count >= parts. */
void cs_loader_set_share(cs_loader *loader, int part, int parts);
/* Starts epoch `epoch` at batch `first_batch` (for resuming). */
void cs_loader_start_epoch(cs_loader *loader, int epoch, int first_batch);
/* The next batch of the epoch, or NULL at its end (error set when a file failed). The
 * batch stays valid until the next call. */
const cs_batch *cs_loader_next(cs_loader *loader, GError **error);

/* ---- stage-1 photometric augmentation (§6.6) ---------------------------------------- */

typedef struct {
    int order[4];             /* permutation of 0 brightness, 1 contrast, 2 saturation, 3 hue */
    float brightness, contrast, saturation, hue;
    gboolean grayscale;
    float sigma;              /* of the vertical 1 x 7 Gaussian blur */
} cs_photometric_params;

/* One draw of the parameters (per batch), from a seed. */
void cs_photometric_draw(uint64_t seed, cs_photometric_params *p);
/* Applies ColorJitter (in p->order), RandomGrayscale and the blur to a batch
 * (batch x 3 x h x w, values in [0, 1], channel 0/1/2 treated as R/G/B as torchvision
 * does on the original's BGR data), from src to dst (may alias). */
void cs_photometric_apply(float *dst, const float *src, int batch, int h, int w,
                          const cs_photometric_params *p);

#endif
