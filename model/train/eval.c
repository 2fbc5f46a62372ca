/* eval.c — evaluation as the original's test.py does it (spec §6.4, §7): every image of a
 * split, preprocessed like training without augmentation, batch 1, metrics per image on
 * the 256x256 maps, averaged over images, and the false alarms on frames without a polyp.
 * The samples are decoded ahead by the loader's worker threads. */
#include <errno.h>
#include <string.h>

#include "condseg.h"
#include "data.h"
#include "losses.h"
#include "model_internal.h"

/* The prediction at the image's own resolution, written as a PNG mask. */
static gboolean save_mask(const cs_dataset *ds, int index, const float *prob, int size,
                          const char *dir, GError **error) {
    cs_image *image = cs_image_load_bgr(cs_dataset_image_path(ds, index), error);
    if (!image) return FALSE;
    cs_image *mask = cs_image_new(image->width, image->height, 1);
    cs_prob_to_mask(prob, size, size, 0.5f, mask);
    char *name = g_strdup_printf("%s.png", cs_dataset_id(ds, index));
    char *path = g_build_filename(dir, name, NULL);
    gboolean ok = cs_image_save_png(mask, path, error);
    g_free(path), g_free(name);
    cs_image_free(mask);
    cs_image_free(image);
    return ok;
}

gboolean cs_evaluate(cs_model *model, const char *data_dir, const char *split,
                     const char *save_masks_dir, cs_eval_image_fn per_image, void *user_data,
                     cs_eval_summary *summary, GError **error) {
    cs_dataset *ds = cs_dataset_open(data_dir, split ? split : "val", error);
    if (!ds) return FALSE;
    if (save_masks_dir && g_mkdir_with_parents(save_masks_dir, 0755) != 0) {
        g_set_error(error, CS_ERROR, CS_ERROR_IO, "--save-masks '%s': cannot create the folder: %s",
                    save_masks_dir, g_strerror(errno));
        cs_dataset_free(ds);
        return FALSE;
    }
    const int size = cs_model_input_size(model);
    const size_t plane = (size_t)size * size;
    const cs_sample_options opt = {.aug = CS_AUG_NONE, .size = size};
    cs_loader *loader = cs_loader_new(ds, 1, FALSE, &opt, 0, 0);
    cs_loader_start_epoch(loader, 0, 0);
    float *prob = g_new(float, plane);
    cs_eval_summary sum = {0};
    gboolean ok = TRUE;
    const cs_batch *batch;
    GError *local = NULL;
    while (ok && (batch = cs_loader_next(loader, &local))) {
        ok = cs_model_forward(model, batch->images, 1, size, size, CS_OUT_MASK, &prob, error);
        if (!ok) break;
        cs_metrics m;
        cs_metrics_image(prob, batch->y1, plane, &m);
        cs_metrics_accumulate(&sum.mean, &m);
        sum.n_images++;
        sum.n_empty_masks += cs_mask_is_empty(batch->y1, plane);
        sum.n_false_alarms += cs_is_false_alarm(prob, batch->y1, plane);
        const int index = batch->indices[0];
        if (per_image) per_image(cs_dataset_id(ds, index), &m, prob, user_data);
        if (save_masks_dir) ok = save_mask(ds, index, prob, size, save_masks_dir, error);
    }
    if (local) {
        g_propagate_error(error, local);
        ok = FALSE;
    }
    if (ok) {
        cs_metrics_scale(&sum.mean, sum.n_images ? 1.0 / sum.n_images : 0.0);
        *summary = sum;
    }
    g_free(prob);
    cs_loader_free(loader);
    cs_dataset_free(ds);
    return ok;
}
