/* condseg_gimp_common.c — the image work of the ConDSeg GIMP plug-in, written once for the
 * GIMP 2.10 and GIMP 3 front ends: read the drawable through babl as the network's 8-bit BGR
 * input, run libcondseg exactly as `condseg predict` does (on the CPU or an NVIDIA GPU, as
 * chosen), and write the mask (layer mask or selection) or a probability/uncertainty map
 * (new layer) at the drawable's full resolution.
 *
 * Order of work: every check and the whole inference come first, the image is changed only
 * at the end and inside one undo group — so a failure leaves the image as it was and one
 * Undo reverts a success.
 */
#include "condseg_gimp_common.h"

#include <string.h>

#include "condseg.h"

const cs_gimp_choice_name cs_gimp_output_names[CS_GIMP_N_OUTPUTS] = {
    [CS_GIMP_OUTPUT_LAYER_MASK] = {"layer-mask", "Layer mask",
                                   "The mask as the layer's mask: white where the network "
                                   "sees the lesion"},
    [CS_GIMP_OUTPUT_SELECTION] = {"selection", "Selection",
                                  "The mask as the selection, replacing the current one"},
    [CS_GIMP_OUTPUT_PROBABILITY] = {"probability-layer", "Probability map (new layer)",
                                    "A new layer: the foreground probability, black 0 to "
                                    "white 1"},
    [CS_GIMP_OUTPUT_UNCERTAINTY] = {"uncertainty-layer", "Uncertainty map (new layer)",
                                    "A new layer: the uncertainty map of the semantic "
                                    "decoupling branch (full ConDSeg weights only)"},
};

const cs_gimp_choice_name cs_gimp_device_names[CS_GIMP_N_DEVICES] = {
    [CS_GIMP_DEVICE_AUTO] = {"auto", "Automatic (NVIDIA GPU when present)",
                             "An NVIDIA GPU when one is usable, else the CPU"},
    [CS_GIMP_DEVICE_CPU] = {"cpu", "CPU", "Always the CPU"},
    [CS_GIMP_DEVICE_CUDA] = {"cuda", "NVIDIA GPU (CUDA)",
                             "An NVIDIA GPU; fails, saying why, when none is usable"},
};

/* Shares of the progress bar: reading the pixels, inference, writing the result. */
#define PROGRESS_READ_END 0.05
#define PROGRESS_INFERENCE_END 0.90

void cs_gimp_settings_init(cs_gimp_settings *settings) {
    memset(settings, 0, sizeof *settings);
    char *weights = cs_default_weights_path();
    if (weights) g_strlcpy(settings->weights, weights, sizeof settings->weights);
    g_free(weights);
    settings->threshold = 0.5;
    settings->output = CS_GIMP_OUTPUT_LAYER_MASK;
    settings->device = CS_GIMP_DEVICE_AUTO;
}

void cs_gimp_startup(char **argv) {
    cs_select_blas_kernels(argv);
    cs_set_num_threads(0);
    g_debug("condseg %s, OpenBLAS kernels %s", cs_version(), cs_blas_kernels());
}

/* ---- checks (nothing in the image is touched yet) ---------------------------------- */

static gboolean check_settings(const cs_gimp_settings *settings, GError **error) {
    if (!(settings->threshold >= 0.0 && settings->threshold <= 1.0)) {
        g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                    "ConDSeg: the threshold must be between 0 and 1, not %g",
                    settings->threshold);
        return FALSE;
    }
    if (settings->output < 0 || settings->output >= CS_GIMP_N_OUTPUTS) {
        g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                    "ConDSeg: unknown output mode %d (0 layer mask, 1 selection, "
                    "2 probability layer, 3 uncertainty layer)", settings->output);
        return FALSE;
    }
    if (settings->device < 0 || settings->device >= CS_GIMP_N_DEVICES) {
        g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                    "ConDSeg: unknown device %d (0 automatic, 1 CPU, 2 NVIDIA GPU)",
                    settings->device);
        return FALSE;
    }
    if (memchr(settings->weights, '\0', sizeof settings->weights) == NULL) {
        g_set_error(error, CS_ERROR, CS_ERROR_ARG, "ConDSeg: the weights file name is too long");
        return FALSE;
    }
    return TRUE;
}

/* Can the drawable be read and can the result be written where the output mode puts it? */
static gboolean check_target(gint32 image, gint32 source, int output, GError **error) {
    const GeglRectangle bounds = cs_gimp_host_drawable_bounds(source);
    if (bounds.width < 1 || bounds.height < 1) {
        g_set_error(error, CS_ERROR, CS_ERROR_ARG, "ConDSeg: the drawable is empty (%dx%d)",
                    bounds.width, bounds.height);
        return FALSE;
    }
    if (output == CS_GIMP_OUTPUT_LAYER_MASK && !cs_gimp_host_is_layer(source)) {
        g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                    "ConDSeg: the layer-mask output needs a layer, and the active drawable is "
                    "a channel; select a layer, or choose the selection or a new-layer output");
        return FALSE;
    }
    if ((output == CS_GIMP_OUTPUT_PROBABILITY || output == CS_GIMP_OUTPUT_UNCERTAINTY) &&
        cs_gimp_host_image_base(image) == CS_GIMP_BASE_INDEXED) {
        g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                    "ConDSeg: an indexed image cannot hold a gray map; convert it with "
                    "Image > Mode > RGB or Grayscale, or choose a mask output");
        return FALSE;
    }
    return TRUE;
}

/* Loads the weights named in the settings, or the installed default model. */
static cs_model *load_model(const cs_gimp_settings *settings, GError **error) {
    char *path = settings->weights[0] ? g_strdup(settings->weights) : cs_default_weights_path();
    if (!path) {
        g_set_error(error, CS_ERROR, CS_ERROR_IO,
                    "ConDSeg: no weights file given and no default model installed; choose "
                    "a .safetensors weights file (or set CONDSEG_WEIGHTS)");
        return NULL;
    }
    GError *load_error = NULL;
    cs_model *model = cs_model_load(path, &load_error);
    if (!model) {
        g_set_error(error, CS_ERROR, load_error->code, "ConDSeg: cannot use the weights '%s': %s",
                    path, load_error->message);
        g_error_free(load_error);
    }
    g_free(path);
    return model;
}

/* Moves the model to the chosen device. Automatic never fails (a missing GPU leaves the
 * CPU, which needs no word: the user asked for no GPU in particular); an explicit GPU
 * choice that cannot be met is an error naming why, rather than a silent CPU run. */
static gboolean use_device(cs_model *model, int device, GError **error) {
    const char *name = cs_gimp_device_names[device].nick;
    char *note = NULL;
    GError *device_error = NULL;
    if (!cs_model_set_device(model, name, &note, &device_error)) {
        if (device == CS_GIMP_DEVICE_CUDA)
            g_set_error(error, CS_ERROR, device_error->code,
                        "ConDSeg: the device NVIDIA GPU (CUDA) is not available: %s. Choose "
                        "the CPU or automatic device instead", device_error->message);
        else
            g_set_error(error, CS_ERROR, device_error->code, "ConDSeg: device %s: %s", name,
                        device_error->message);
        g_error_free(device_error);
        return FALSE;
    }
    if (note) g_debug("%s", note);
    g_free(note);
    return TRUE;
}

/* ---- pixels ----------------------------------------------------------------------- */

/* The drawable as the network's input: 8-bit sRGB-encoded values (what the training PNGs
 * and JPEGs hold) in B,G,R order. babl converts from any precision, linear or perceptual,
 * gray, indexed, with alpha dropped (as cv2.imread drops it). The drawable's own color
 * space is kept, as OpenCV ignores embedded profiles. */
static cs_image *read_bgr(gint32 source, GeglRectangle bounds) {
    cs_image *bgr = cs_image_new(bounds.width, bounds.height, 3);
    const Babl *rgb_u8 = babl_format_with_space("R'G'B' u8", cs_gimp_host_drawable_format(source));
    GeglBuffer *buffer = cs_gimp_host_drawable_buffer(source);
    gegl_buffer_get(buffer, GEGL_RECTANGLE(0, 0, bounds.width, bounds.height), 1.0, rgb_u8,
                    bgr->data, GEGL_AUTO_ROWSTRIDE, GEGL_ABYSS_NONE);
    g_object_unref(buffer);
    const size_t n_pixels = (size_t)bounds.width * bounds.height;
    for (size_t p = 0; p < n_pixels; p++) {
        uint8_t *px = bgr->data + 3 * p;
        const uint8_t red = px[0];
        px[0] = px[2];
        px[2] = red;
    }
    return bgr;
}

/* The gray float format whose values land unchanged in `target`'s encoding: a pixel
 * of the new layer then holds the probability itself (0 black, 1 white), whatever the
 * image's precision and TRC. */
static const Babl *gray_float_like(const Babl *target) {
    const BablModelFlag flags = babl_get_model_flags(babl_format_get_model(target));
    const char *encoding = (flags & BABL_MODEL_FLAG_LINEAR)       ? "Y float"
                           : (flags & BABL_MODEL_FLAG_PERCEPTUAL) ? "Y~ float"
                                                                  : "Y' float";
    return babl_format_with_space(encoding, target);
}

/* Writes a drawable-sized 0/255 mask into `buffer` at (x, y), clipped to the buffer. */
static void write_mask(GeglBuffer *buffer, const cs_image *mask, int x, int y) {
    const GeglRectangle *extent = gegl_buffer_get_extent(buffer);
    GeglRectangle area = {x, y, mask->width, mask->height};
    if (!gegl_rectangle_intersect(&area, &area, extent)) return;
    const uint8_t *first = mask->data + (size_t)(area.y - y) * mask->width + (area.x - x);
    gegl_buffer_set(buffer, &area, 0, babl_format("Y u8"), first, mask->width);
}

/* ---- progress --------------------------------------------------------------------- */

static void report_inference_progress(double fraction, void *user_data) {
    (void)user_data;
    cs_gimp_host_progress(PROGRESS_READ_END +
                          (PROGRESS_INFERENCE_END - PROGRESS_READ_END) * fraction);
}

/* ---- writing the result (inside the undo group) ----------------------------------- */

static gint32 write_layer_mask(gint32 layer, const cs_image *mask) {
    gint32 layer_mask = cs_gimp_host_layer_mask(layer);
    if (layer_mask == -1) {
        /* A new mask: its creation is the undo step, so write into it directly. */
        layer_mask = cs_gimp_host_add_layer_mask(layer);
        GeglBuffer *buffer = cs_gimp_host_drawable_buffer(layer_mask);
        write_mask(buffer, mask, 0, 0);
        g_object_unref(buffer);
    } else {
        /* The layer's existing mask is overwritten through the shadow buffer, which makes
         * the change an undo step. */
        GeglBuffer *shadow = cs_gimp_host_drawable_shadow_buffer(layer_mask);
        write_mask(shadow, mask, 0, 0);
        g_object_unref(shadow);
        cs_gimp_host_drawable_merge_shadow(layer_mask);
    }
    cs_gimp_host_drawable_update(layer_mask);
    return layer_mask;
}

static gint32 write_selection(gint32 image, GeglRectangle bounds, const cs_image *mask) {
    /* A carrier channel of the image's size, with the mask at the drawable's place (a
     * layer can be offset or reach past the canvas), made the selection and dropped. */
    const gint32 channel = cs_gimp_host_insert_channel(image, "ConDSeg mask");
    GeglBuffer *buffer = cs_gimp_host_drawable_buffer(channel);
    gegl_buffer_clear(buffer, NULL);
    write_mask(buffer, mask, bounds.x, bounds.y);
    g_object_unref(buffer);
    cs_gimp_host_select_channel_and_remove(image, channel);
    return cs_gimp_host_selection(image);
}

static gint32 write_map_layer(gint32 image, gint32 source, GeglRectangle bounds,
                              const char *name, const float *map) {
    const gint32 layer = cs_gimp_host_insert_layer(image, name, bounds, source);
    GeglBuffer *buffer = cs_gimp_host_drawable_buffer(layer);
    gegl_buffer_set(buffer, GEGL_RECTANGLE(0, 0, bounds.width, bounds.height), 0,
                    gray_float_like(cs_gimp_host_drawable_format(layer)), map,
                    GEGL_AUTO_ROWSTRIDE);
    g_object_unref(buffer);
    cs_gimp_host_drawable_update(layer);
    return layer;
}

/* ---- the whole run ---------------------------------------------------------------- */

gboolean cs_gimp_segment(gint32 image, gint32 drawable, const cs_gimp_settings *settings,
                         gint32 *result, GError **error) {
    *result = -1;
    if (!check_settings(settings, error)) return FALSE;
    /* While a layer mask is being edited it is the active drawable; the picture to segment
     * is then its layer's, and a layer-mask result goes into that very mask. */
    const gint32 mask_owner = cs_gimp_host_layer_of_mask(drawable);
    const gint32 source = mask_owner != -1 ? mask_owner : drawable;
    if (!check_target(image, source, settings->output, error)) return FALSE;
    const GeglRectangle bounds = cs_gimp_host_drawable_bounds(source);
    const int output = settings->output;
    const gboolean wants_uncertainty = output == CS_GIMP_OUTPUT_UNCERTAINTY;

    cs_model *model = load_model(settings, error);
    if (!model) return FALSE;
    cs_model_info info;
    cs_model_get_info(model, &info);
    if (wants_uncertainty && info.arch != CS_ARCH_CONDSEG) {
        g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                    "ConDSeg: the uncertainty map needs full ConDSeg weights; these are the "
                    "stage-1 network's, which gives only the mask");
        cs_model_free(model);
        return FALSE;
    }
    /* After the cheap checks: moving the weights to a GPU takes a moment. */
    if (!use_device(model, settings->device, error)) {
        cs_model_free(model);
        return FALSE;
    }

    /* Inference, and the result at the drawable's resolution, before the image is touched. */
    cs_gimp_host_progress_init("ConDSeg segmentation");
    /* The network's output plane: S x S, S the input size the weights were trained at. */
    const int size = cs_model_input_size(model);
    float *prob = g_new(float, (size_t)size * size);
    cs_image *bgr = read_bgr(source, bounds);
    cs_gimp_host_progress(PROGRESS_READ_END);
    cs_model_set_progress(model, report_inference_progress, NULL);
    const gboolean inferred = cs_model_predict_image(
        model, bgr, wants_uncertainty ? CS_OUT_UC : CS_OUT_MASK, prob, error);
    cs_image_free(bgr);
    cs_model_free(model);
    if (!inferred) {
        g_free(prob);
        return FALSE;
    }
    cs_gimp_host_progress(PROGRESS_INFERENCE_END);
    cs_image *mask = NULL;
    float *map = NULL;
    if (output == CS_GIMP_OUTPUT_LAYER_MASK || output == CS_GIMP_OUTPUT_SELECTION) {
        mask = cs_image_new(bounds.width, bounds.height, 1);
        cs_prob_to_mask(prob, size, size, (float)settings->threshold, mask);
    } else {
        map = g_new(float, (size_t)bounds.width * bounds.height);
        cs_resize_linear_f32(prob, size, size, map, bounds.width, bounds.height);
    }
    g_free(prob);

    cs_gimp_host_undo_group_start(image);
    switch (output) {
    case CS_GIMP_OUTPUT_LAYER_MASK: *result = write_layer_mask(source, mask); break;
    case CS_GIMP_OUTPUT_SELECTION: *result = write_selection(image, bounds, mask); break;
    case CS_GIMP_OUTPUT_PROBABILITY:
        *result = write_map_layer(image, source, bounds, "ConDSeg probability", map);
        break;
    case CS_GIMP_OUTPUT_UNCERTAINTY:
        *result = write_map_layer(image, source, bounds, "ConDSeg uncertainty", map);
        break;
    }
    cs_gimp_host_undo_group_end(image);
    cs_gimp_host_progress(1.0);
    cs_image_free(mask);
    g_free(map);
    return TRUE;
}
