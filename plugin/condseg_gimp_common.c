/* condseg_gimp_common.c — the image work of the ConDSeg GIMP plug-in, written once for the
 * GIMP 2.10 and GIMP 3 front ends: read the drawable through babl as the network's 8-bit BGR
 * input, run libcondseg exactly as `condseg predict` does (on the CPU or an NVIDIA GPU, as
 * chosen), keep its answer (cs_gimp_inference) so that the dialogs' previews redraw from it,
 * and write the mask (layer mask or selection) or a probability or uncertainty map (new layer)
 * at the drawable's full resolution, with a verdict saying what was found.
 *
 * Order of work: every check and the whole inference come first, the image is changed only
 * at the end and inside one undo group — so a failure leaves the image as it was and one
 * Undo reverts a success.
 */
#include "condseg_gimp_common.h"

#include <math.h>
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
                                    "white 1, laid over the photo in Screen mode at 75%"},
    [CS_GIMP_OUTPUT_UNCERTAINTY] = {"uncertainty-layer", "Uncertainty map (new layer)",
                                    "A new layer: how unsure the network is, the binary "
                                    "entropy of the probability, black 0 (sure) to white 1 "
                                    "(probability 0.5): bright along doubtful edges and on "
                                    "regions it cannot decide; Screen mode at 75%"},
    [CS_GIMP_OUTPUT_SID_UNCERTAINTY] = {"sid-uncertainty-layer", "SID uncertainty, raw (new layer)",
                                        "A new layer: the raw uncertainty output of the "
                                        "network's semantic decoupling branch (full ConDSeg "
                                        "weights only), stretched from its lowest (black) to "
                                        "its highest value (white), the range in the layer's "
                                        "name; it stays near 0 (see the README); Screen mode "
                                        "at 75%"},
};

const cs_gimp_choice_name cs_gimp_device_names[CS_GIMP_N_DEVICES] = {
    [CS_GIMP_DEVICE_AUTO] = {"auto", "Automatic (NVIDIA GPU when present)",
                             "An NVIDIA GPU when one is usable, else the CPU"},
    [CS_GIMP_DEVICE_CPU] = {"cpu", "CPU", "Always the CPU"},
    [CS_GIMP_DEVICE_CUDA] = {"cuda", "NVIDIA GPU (CUDA)",
                             "An NVIDIA GPU; fails, saying why, when none is usable"},
};

const cs_gimp_choice_name cs_gimp_precision_names[CS_GIMP_N_PRECISIONS] = {
    [CS_GIMP_PRECISION_FP32] = {"fp32", "Float32 (exact)",
                                "Float32 arithmetic: the masks of condseg predict"},
    [CS_GIMP_PRECISION_BF16] = {"bf16", "BFloat16 (faster)",
                                "BFloat16 convolutions with float32 sums: about 3x faster on "
                                "CPUs with bf16 instructions (else float32, saying so); "
                                "probabilities within about 0.01"},
};

const char cs_gimp_help_text[] =
    "ConDSeg Segmentation runs the ConDSeg network (AAAI 2025) on the active layer and "
    "marks the lesion (a polyp in a colonoscopy frame, a skin lesion, a gland).\n\n"
    "Preview: the network runs once when the dialog opens and again only when the weights, "
    "the device or the precision change; moving the threshold or choosing another output "
    "redraws the preview at once. Marked pixels are tinted green; the map outputs are shown "
    "as they will be laid over the photo. The line under the preview is the verdict: the "
    "share of the drawable marked at the threshold, or \"No lesion found\".\n\n"
    "Outputs: Layer mask (white = lesion), Selection (replacing the current one), "
    "Probability map, Uncertainty map and SID uncertainty (new layers above the drawable, "
    "Screen mode at 75%, so the photo stays visible). The uncertainty map is the binary "
    "entropy of the probability, -(p log2 p + (1-p) log2(1-p)): 0 where the network is "
    "sure, 1 where the probability is 0.5. The SID uncertainty is the network's own "
    "third-branch output, which its training drives towards 0; it is stretched from its "
    "lowest to its highest value, the range in the layer's name. When nothing is found, a "
    "layer mask or selection is not changed at all.\n\n"
    "Test-time augmentation: the mean of the predictions of the image and of its "
    "half-turned copy (mirrored left-right and top-bottom at once; two network runs); it "
    "changes the preview's and "
    "the result's probabilities, and the uncertainty then also shows where the views "
    "disagree.\n"
    "Threshold: the probability above which a pixel is lesion (0.5 as condseg predict).\n"
    "Weights: a .safetensors file of a ConDSeg or stage-1 network; \"Default model\" goes "
    "back to the installed one.\n"
    "Device: Automatic uses an NVIDIA GPU when one is usable, else the CPU; the dialog says "
    "which will run and which ran.\n"
    "Precision: Float32 (the default) or BFloat16, faster on CPUs with bf16 instructions "
    "and within about 0.01 in probability.\n\n"
    "The network was trained on colour frames: a grayscale or indexed image is segmented, "
    "with a warning, and tends to be over-segmented. Everything the plug-in does is one "
    "undo step. Scripts: plug-in-condseg (see the Procedure Browser).";

/* Shares of the progress bar: reading the pixels, inference, writing the result. */
#define PROGRESS_READ_END 0.05
#define PROGRESS_INFERENCE_END 0.90

/* The preview's tint of marked pixels: green, half covering, far from the reds and pinks
 * of mucosa and polyps. */
static const guint8 MARK_RGB[3] = {40, 255, 60};
#define MARK_ALPHA 0.5f

void cs_gimp_settings_init(cs_gimp_settings *settings) {
    memset(settings, 0, sizeof *settings);
    char *weights = cs_default_weights_path();
    if (weights) g_strlcpy(settings->weights, weights, sizeof settings->weights);
    g_free(weights);
    settings->threshold = 0.5;
    settings->output = CS_GIMP_OUTPUT_LAYER_MASK;
    settings->device = CS_GIMP_DEVICE_AUTO;
    settings->precision = CS_GIMP_PRECISION_FP32;
    settings->tta = 0;
}

void cs_gimp_startup(char **argv) {
    cs_select_blas_kernels(argv);
    cs_set_num_threads(0);
    g_debug("condseg %s, OpenBLAS kernels %s", cs_version(), cs_blas_kernels());
}

/* ---- stored settings ----------------------------------------------------------------- */

#define SETTINGS_GROUP CS_GIMP_PROC

char *cs_gimp_settings_to_text(const cs_gimp_settings *settings) {
    GKeyFile *file = g_key_file_new();
    g_key_file_set_string(file, SETTINGS_GROUP, "weights", settings->weights);
    g_key_file_set_double(file, SETTINGS_GROUP, "threshold", settings->threshold);
    g_key_file_set_string(file, SETTINGS_GROUP, "output",
                          cs_gimp_output_names[CLAMP(settings->output, 0,
                                                     CS_GIMP_N_OUTPUTS - 1)].nick);
    g_key_file_set_string(file, SETTINGS_GROUP, "device",
                          cs_gimp_device_names[CLAMP(settings->device, 0,
                                                     CS_GIMP_N_DEVICES - 1)].nick);
    g_key_file_set_string(file, SETTINGS_GROUP, "precision",
                          cs_gimp_precision_names[CLAMP(settings->precision, 0,
                                                        CS_GIMP_N_PRECISIONS - 1)].nick);
    g_key_file_set_boolean(file, SETTINGS_GROUP, "tta", settings->tta != 0);
    char *text = g_key_file_to_data(file, NULL, NULL);
    g_key_file_free(file);
    return text;
}

/* The index of `nick` in a choice's names, or -1. */
static int choice_index(const cs_gimp_choice_name *names, int n, const char *nick) {
    for (int i = 0; nick && i < n; i++)
        if (strcmp(names[i].nick, nick) == 0) return i;
    return -1;
}

void cs_gimp_settings_from_text(cs_gimp_settings *settings, const char *text) {
    GKeyFile *file = g_key_file_new();
    if (!text || !g_key_file_load_from_data(file, text, -1, G_KEY_FILE_NONE, NULL)) {
        g_key_file_free(file);
        return;
    }
    char *weights = g_key_file_get_string(file, SETTINGS_GROUP, "weights", NULL);
    if (weights && strlen(weights) < sizeof settings->weights)
        g_strlcpy(settings->weights, weights, sizeof settings->weights);
    GError *error = NULL;
    const double threshold = g_key_file_get_double(file, SETTINGS_GROUP, "threshold", &error);
    if (!error && threshold >= 0.0 && threshold <= 1.0) settings->threshold = threshold;
    g_clear_error(&error);
    char *output = g_key_file_get_string(file, SETTINGS_GROUP, "output", NULL);
    char *device = g_key_file_get_string(file, SETTINGS_GROUP, "device", NULL);
    const int o = choice_index(cs_gimp_output_names, CS_GIMP_N_OUTPUTS, output);
    char *precision = g_key_file_get_string(file, SETTINGS_GROUP, "precision", NULL);
    const int d = choice_index(cs_gimp_device_names, CS_GIMP_N_DEVICES, device);
    const int p = choice_index(cs_gimp_precision_names, CS_GIMP_N_PRECISIONS, precision);
    if (o >= 0) settings->output = o;
    if (d >= 0) settings->device = d;
    if (p >= 0) settings->precision = p;
    const gboolean tta = g_key_file_get_boolean(file, SETTINGS_GROUP, "tta", &error);
    if (!error) settings->tta = tta ? 1 : 0;
    g_clear_error(&error);
    g_free(weights), g_free(output), g_free(device), g_free(precision);
    g_key_file_free(file);
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
                    "2 probability layer, 3 uncertainty layer, 4 SID uncertainty layer)",
                    settings->output);
        return FALSE;
    }
    if (settings->device < 0 || settings->device >= CS_GIMP_N_DEVICES) {
        g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                    "ConDSeg: unknown device %d (0 automatic, 1 CPU, 2 NVIDIA GPU)",
                    settings->device);
        return FALSE;
    }
    if (settings->precision < 0 || settings->precision >= CS_GIMP_N_PRECISIONS) {
        g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                    "ConDSeg: unknown precision %d (0 float32, 1 bfloat16)", settings->precision);
        return FALSE;
    }
    if (settings->tta != 0 && settings->tta != 1) {
        g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                    "ConDSeg: test-time augmentation is 0 (off) or 1 (on), not %d", settings->tta);
        return FALSE;
    }
    if (memchr(settings->weights, '\0', sizeof settings->weights) == NULL) {
        g_set_error(error, CS_ERROR, CS_ERROR_ARG, "ConDSeg: the weights file name is too long");
        return FALSE;
    }
    return TRUE;
}

/* While a layer mask is being edited it is the active drawable; the picture to segment
 * is then its layer's, and a layer-mask result goes into that very mask. */
static gint32 source_of(gint32 drawable) {
    const gint32 mask_owner = cs_gimp_host_layer_of_mask(drawable);
    return mask_owner != -1 ? mask_owner : drawable;
}

static gboolean check_source(gint32 source, GError **error) {
    const GeglRectangle bounds = cs_gimp_host_drawable_bounds(source);
    if (bounds.width < 1 || bounds.height < 1) {
        g_set_error(error, CS_ERROR, CS_ERROR_ARG, "ConDSeg: the drawable is empty (%dx%d)",
                    bounds.width, bounds.height);
        return FALSE;
    }
    return TRUE;
}

/* The outputs that add a gray map layer (the others write the mask). */
static gboolean is_map_output(int output) {
    return output == CS_GIMP_OUTPUT_PROBABILITY || output == CS_GIMP_OUTPUT_UNCERTAINTY ||
           output == CS_GIMP_OUTPUT_SID_UNCERTAINTY;
}

/* Can the result be written where the output mode puts it? */
static gboolean check_output(gint32 image, gint32 source, int output, GError **error) {
    if (output == CS_GIMP_OUTPUT_LAYER_MASK && !cs_gimp_host_is_layer(source)) {
        g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                    "ConDSeg: the layer-mask output needs a layer, and the active drawable is "
                    "a channel; select a layer, or choose the selection or a new-layer output");
        return FALSE;
    }
    if (is_map_output(output) && cs_gimp_host_image_base(image) == CS_GIMP_BASE_INDEXED) {
        g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                    "ConDSeg: an indexed image cannot hold a gray map; convert it with "
                    "Image > Mode > RGB or Grayscale, or choose a mask output");
        return FALSE;
    }
    return TRUE;
}

static gboolean check_uncertainty(const cs_gimp_inference *inference, int output,
                                  GError **error) {
    if (output == CS_GIMP_OUTPUT_SID_UNCERTAINTY && !inference->uncertainty_plane) {
        g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                    "ConDSeg: the SID uncertainty needs full ConDSeg weights; these are the "
                    "stage-1 network's, which gives only the mask (the uncertainty map, the "
                    "entropy of the probability, works with them)");
        return FALSE;
    }
    return TRUE;
}

const char *cs_gimp_input_warning(gint32 image) {
    switch (cs_gimp_host_image_base(image)) {
    case CS_GIMP_BASE_GRAY:
        return "Warning: this is a grayscale image; the network was trained on colour frames "
               "and tends to mark too much without colour (Image > Mode > RGB does not bring "
               "the colour back: use the colour original when there is one).";
    case CS_GIMP_BASE_INDEXED:
        return "Warning: this is an indexed image; its reduced palette is not what the "
               "network was trained on, and the result may be less accurate.";
    default: return NULL;
    }
}

/* ---- the network -------------------------------------------------------------------- */

/* The weights file the settings mean: theirs, or the installed default model (NULL when
 * there is none). g_free the result. */
static char *weights_path(const cs_gimp_settings *settings) {
    return settings->weights[0] ? g_strdup(settings->weights) : cs_default_weights_path();
}

/* Loads the weights named in the settings, or the installed default model. */
static cs_model *load_model(const cs_gimp_settings *settings, GError **error) {
    char *path = weights_path(settings);
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

/* Sets the precision; a CPU without bf16 instructions runs fp32, and `note` says why. */
static gboolean use_precision(cs_model *model, int precision, char **note, GError **error) {
    GError *precision_error = NULL;
    if (!cs_model_set_precision(model, cs_gimp_precision_names[precision].nick, note,
                                &precision_error)) {
        g_set_error(error, CS_ERROR, precision_error->code, "ConDSeg: precision %s: %s",
                    cs_gimp_precision_names[precision].nick, precision_error->message);
        g_error_free(precision_error);
        return FALSE;
    }
    return TRUE;
}

char *cs_gimp_device_forecast(int device) {
    char *note = NULL;
    GError *error = NULL;
    const char *name = cs_device_resolve(cs_gimp_device_names[CLAMP(device, 0,
                                                                    CS_GIMP_N_DEVICES - 1)].nick,
                                         &note, &error);
    char *text = !name                       ? g_strdup_printf("Cannot run: %s", error->message)
                 : strcmp(name, "cuda") == 0    ? g_strdup("Will run on the NVIDIA GPU")
                 : device == CS_GIMP_DEVICE_AUTO ? g_strdup("Will run on the CPU (no usable "
                                                           "NVIDIA GPU)")
                                                : g_strdup("Will run on the CPU");
    g_clear_error(&error);
    g_free(note);
    return text;
}

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

static void report_inference_progress(double fraction, void *user_data) {
    (void)user_data;
    cs_gimp_host_progress(PROGRESS_READ_END +
                          (PROGRESS_INFERENCE_END - PROGRESS_READ_END) * fraction);
}

static void plane_range(const float *plane, size_t n, float *lo, float *hi) {
    *lo = INFINITY, *hi = -INFINITY;
    for (size_t i = 0; i < n; i++) *lo = fminf(*lo, plane[i]), *hi = fmaxf(*hi, plane[i]);
}

/* Runs the network: the probability (resized to the drawable) and, with full ConDSeg
 * weights, the uncertainty plane, in one forward pass. */
static gboolean run_network(cs_model *model, cs_gimp_inference *inference, gboolean progress,
                            GError **error) {
    cs_model_info info;
    cs_model_get_info(model, &info);
    const gboolean full = info.arch == CS_ARCH_CONDSEG;
    const int size = cs_model_input_size(model);
    const size_t plane = (size_t)size * size;
    float *planes = g_new(float, plane * (full ? 2 : 1));
    if (progress) cs_model_set_progress(model, report_inference_progress, NULL);
    cs_model_set_tta(model, inference->tta ? CS_TTA_DEFAULT : 0);
    if (!cs_model_predict_image(model, inference->bgr, full ? CS_OUT_MASK | CS_OUT_UC : CS_OUT_MASK,
                                planes, error)) {
        g_free(planes);
        return FALSE;
    }
    const GeglRectangle b = inference->bounds;
    inference->size = size;
    inference->prob = g_new(float, (size_t)b.width * b.height);
    cs_resize_linear_f32(planes, size, size, inference->prob, b.width, b.height);
    float lo;
    plane_range(inference->prob, (size_t)b.width * b.height, &lo, &inference->prob_max);
    if (full) {
        inference->uncertainty_plane = g_memdup2(planes + plane, sizeof(float) * plane);
        plane_range(inference->uncertainty_plane, plane, &inference->uncertainty_min,
                    &inference->uncertainty_max);
    }
    g_free(planes);
    return TRUE;
}

cs_gimp_inference *cs_gimp_infer(gint32 image, gint32 drawable, const cs_gimp_settings *settings,
                                 gboolean progress, GError **error) {
    (void)image;
    if (!check_settings(settings, error)) return NULL;
    const gint32 source = source_of(drawable);
    if (!check_source(source, error)) return NULL;
    const gint64 start = g_get_monotonic_time();
    cs_model *model = load_model(settings, error);
    if (!model) return NULL;
    /* After the cheap checks: moving the weights to a GPU takes a moment. */
    char *precision_note = NULL;
    if (!use_device(model, settings->device, error) ||
        !use_precision(model, settings->precision, &precision_note, error)) {
        cs_model_free(model);
        return NULL;
    }
    cs_gimp_inference *inference = g_new0(cs_gimp_inference, 1);
    inference->precision = settings->precision;
    inference->tta = settings->tta;
    inference->precision_note = precision_note;
    g_strlcpy(inference->precision_ran, cs_model_precision(model),
              sizeof inference->precision_ran);
    char *path = weights_path(settings);
    g_strlcpy(inference->weights, path, sizeof inference->weights);
    g_free(path);
    inference->device = settings->device;
    inference->drawable = drawable;
    inference->source = source;
    inference->bounds = cs_gimp_host_drawable_bounds(source);
    g_strlcpy(inference->device_ran, cs_model_device(model), sizeof inference->device_ran);
    if (progress) cs_gimp_host_progress_init("ConDSeg segmentation");
    inference->bgr = read_bgr(source, inference->bounds);
    if (progress) cs_gimp_host_progress(PROGRESS_READ_END);
    const gboolean ran = run_network(model, inference, progress, error);
    cs_model_free(model);
    if (!ran) {
        cs_gimp_inference_free(inference);
        return NULL;
    }
    if (progress) cs_gimp_host_progress(PROGRESS_INFERENCE_END);
    inference->seconds = (g_get_monotonic_time() - start) / 1e6;
    g_debug("ConDSeg: network ran on %s in %.3f s", inference->device_ran, inference->seconds);
    return inference;
}

void cs_gimp_inference_free(cs_gimp_inference *inference) {
    if (!inference) return;
    cs_image_free(inference->bgr);
    g_free(inference->prob);
    g_free(inference->uncertainty_plane);
    g_free(inference->precision_note);
    g_free(inference);
}

gboolean cs_gimp_inference_matches(const cs_gimp_inference *inference, gint32 drawable,
                                   const cs_gimp_settings *settings) {
    if (!inference || inference->drawable != drawable || inference->device != settings->device ||
        inference->precision != settings->precision || inference->tta != settings->tta)
        return FALSE;
    char *path = weights_path(settings);
    const gboolean same = path && strcmp(inference->weights, path) == 0;
    g_free(path);
    return same;
}

double cs_gimp_marked_fraction(const cs_gimp_inference *inference, double threshold) {
    const size_t n = (size_t)inference->bounds.width * inference->bounds.height;
    const float t = (float)threshold;
    size_t marked = 0;
    for (size_t i = 0; i < n; i++) marked += inference->prob[i] > t;
    return (double)marked / n;
}

/* ---- the verdict ---------------------------------------------------------------------- */

static const char *device_words(const cs_gimp_inference *inference) {
    return strcmp(inference->device_ran, "cuda") == 0 ? "the NVIDIA GPU" : "the CPU";
}

/* "12.3%", with more digits for a sliver, so that a marked area never reads as 0. */
static char *percent_text(double percent) {
    return percent > 0 && percent < 0.1 ? g_strdup_printf("%.3f%%", percent)
                                        : g_strdup_printf("%.1f%%", percent);
}

static char *verdict_of(const cs_gimp_inference *inference, const cs_gimp_settings *settings,
                        double fraction) {
    const int output = settings->output;
    const gboolean mask_output =
        output == CS_GIMP_OUTPUT_LAYER_MASK || output == CS_GIMP_OUTPUT_SELECTION;
    const char *what = output == CS_GIMP_OUTPUT_LAYER_MASK ? "layer mask"
                       : output == CS_GIMP_OUTPUT_SELECTION ? "selection"
                       : output == CS_GIMP_OUTPUT_PROBABILITY ? "probability map"
                       : output == CS_GIMP_OUTPUT_UNCERTAINTY ? "uncertainty map"
                                                              : "SID uncertainty map";
    char *finding;
    if (fraction == 0) {
        finding = mask_output
                      ? g_strdup_printf("No lesion found at threshold %.2f (highest probability "
                                        "%.2f): no %s is written, the image stays unchanged.",
                                        settings->threshold, inference->prob_max, what)
                      : g_strdup_printf("No lesion found at threshold %.2f (highest probability "
                                        "%.2f); the %s is added as a new layer.",
                                        settings->threshold, inference->prob_max, what);
    } else {
        char *percent = percent_text(100 * fraction);
        finding = g_strdup_printf("Lesion: %s of the drawable marked at threshold %.2f%s%s%s.",
                                  percent, settings->threshold, mask_output ? " (" : "",
                                  mask_output ? what : "", mask_output ? ")" : "");
        g_free(percent);
    }
    char *tta = inference->tta ? g_strdup_printf(", test-time augmentation (%d runs)",
                                                 cs_tta_views(CS_TTA_DEFAULT))
                               : g_strdup("");
    char *text = g_strdup_printf("%s Network: %.2f s on %s%s%s.", finding, inference->seconds,
                                 device_words(inference),
                                 strcmp(inference->precision_ran, "bf16") == 0 ? ", bfloat16"
                                                                                : "",
                                 tta);
    g_free(tta);
    g_free(finding);
    if (inference->precision_note) {
        char *with_note = g_strdup_printf("%s BFloat16 ran as float32: %s.", text,
                                          inference->precision_note);
        g_free(text);
        text = with_note;
    }
    return text;
}

char *cs_gimp_verdict(const cs_gimp_inference *inference, const cs_gimp_settings *settings) {
    return verdict_of(inference, settings,
                      cs_gimp_marked_fraction(inference, settings->threshold));
}

/* ---- writing the result (inside the undo group) ----------------------------------- */

/* The gray float format whose values land unchanged in `target`'s encoding: a pixel
 * of the new layer then holds the map value itself (0 black, 1 white), whatever the
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
    const gint32 layer =
        cs_gimp_host_insert_layer(image, name, bounds, source, CS_GIMP_MAP_OPACITY);
    GeglBuffer *buffer = cs_gimp_host_drawable_buffer(layer);
    gegl_buffer_set(buffer, GEGL_RECTANGLE(0, 0, bounds.width, bounds.height), 0,
                    gray_float_like(cs_gimp_host_drawable_format(layer)), map,
                    GEGL_AUTO_ROWSTRIDE);
    g_object_unref(buffer);
    cs_gimp_host_drawable_update(layer);
    return layer;
}

/* SID's uncertainty at the drawable's size, stretched so that the plane's lowest value
 * is black and its highest white: the default model's values stay below 0.001, which an
 * 8-bit layer would store as 0 everywhere. A constant plane gives black. */
static float *stretched_uncertainty(const cs_gimp_inference *inference) {
    const GeglRectangle b = inference->bounds;
    const size_t n = (size_t)b.width * b.height;
    float *map = g_new(float, n);
    cs_resize_linear_f32(inference->uncertainty_plane, inference->size, inference->size, map,
                         b.width, b.height);
    const float lo = inference->uncertainty_min, span = inference->uncertainty_max - lo;
    for (size_t i = 0; i < n; i++) map[i] = span > 0 ? CLAMP((map[i] - lo) / span, 0.f, 1.f) : 0.f;
    return map;
}

/* The new layer's name says what its black and white stand for. */
static char *map_layer_name(const cs_gimp_inference *inference, int output, double fraction,
                            double threshold, const float *map) {
    if (output == CS_GIMP_OUTPUT_SID_UNCERTAINTY)
        return g_strdup_printf("ConDSeg SID uncertainty %.3g-%.3g (stretched to black-white)",
                               inference->uncertainty_min, inference->uncertainty_max);
    if (output == CS_GIMP_OUTPUT_UNCERTAINTY) {
        float lo, hi;
        plane_range(map, (size_t)inference->bounds.width * inference->bounds.height, &lo, &hi);
        return g_strdup_printf("ConDSeg uncertainty (entropy 0-1, here %.2f-%.2f)", lo, hi);
    }
    char *percent = percent_text(100 * fraction);
    char *name = fraction > 0 ? g_strdup_printf("ConDSeg probability (%s above %.2f)", percent,
                                                threshold)
                              : g_strdup_printf("ConDSeg probability (no lesion at %.2f)",
                                                threshold);
    g_free(percent);
    return name;
}

/* The drawable-sized uncertainty shown to users: the entropy of the probability. */
static float *entropy_map(const cs_gimp_inference *inference) {
    const size_t n = (size_t)inference->bounds.width * inference->bounds.height;
    float *map = g_new(float, n);
    cs_prob_to_uncertainty(inference->prob, n, map);
    return map;
}

static gint32 write_map(gint32 image, const cs_gimp_inference *inference, int output,
                        double fraction, double threshold) {
    float *made = output == CS_GIMP_OUTPUT_SID_UNCERTAINTY ? stretched_uncertainty(inference)
                  : output == CS_GIMP_OUTPUT_UNCERTAINTY   ? entropy_map(inference)
                                                           : NULL;
    const float *map = made ? made : inference->prob;
    char *name = map_layer_name(inference, output, fraction, threshold, map);
    const gint32 layer = write_map_layer(image, inference->source, inference->bounds, name, map);
    g_free(name);
    g_free(made);
    return layer;
}

static cs_image *mask_at(const cs_gimp_inference *inference, double threshold) {
    const GeglRectangle b = inference->bounds;
    cs_image *mask = cs_image_new(b.width, b.height, 1);
    const size_t n = (size_t)b.width * b.height;
    const float t = (float)threshold;
    for (size_t i = 0; i < n; i++) mask->data[i] = inference->prob[i] > t ? 255 : 0;
    return mask;
}

/* The write itself, one undo group; a mask output with nothing marked writes nothing. */
static gint32 write_result(gint32 image, const cs_gimp_inference *inference,
                           const cs_gimp_settings *settings, double fraction) {
    const int output = settings->output;
    if (is_map_output(output)) {
        cs_gimp_host_undo_group_start(image);
        const gint32 layer = write_map(image, inference, output, fraction, settings->threshold);
        cs_gimp_host_undo_group_end(image);
        return layer;
    }
    if (fraction == 0) return -1;
    cs_image *mask = mask_at(inference, settings->threshold);
    cs_gimp_host_undo_group_start(image);
    const gint32 result = output == CS_GIMP_OUTPUT_LAYER_MASK
                              ? write_layer_mask(inference->source, mask)
                              : write_selection(image, inference->bounds, mask);
    cs_gimp_host_undo_group_end(image);
    cs_image_free(mask);
    return result;
}

gboolean cs_gimp_apply(gint32 image, const cs_gimp_inference *inference,
                       const cs_gimp_settings *settings, cs_gimp_outcome *outcome,
                       GError **error) {
    outcome->result = -1;
    outcome->marked_percent = 0;
    outcome->verdict = NULL;
    if (!check_settings(settings, error) ||
        !check_output(image, inference->source, settings->output, error) ||
        !check_uncertainty(inference, settings->output, error))
        return FALSE;
    const double fraction = cs_gimp_marked_fraction(inference, settings->threshold);
    outcome->result = write_result(image, inference, settings, fraction);
    outcome->marked_percent = 100 * fraction;
    char *verdict = verdict_of(inference, settings, fraction);
    const char *warning = cs_gimp_input_warning(image);
    outcome->verdict = warning ? g_strdup_printf("%s %s", verdict, warning) : g_strdup(verdict);
    g_free(verdict);
    return TRUE;
}

gboolean cs_gimp_segment(gint32 image, gint32 drawable, const cs_gimp_settings *settings,
                         cs_gimp_outcome *outcome, GError **error) {
    outcome->result = -1;
    outcome->marked_percent = 0;
    outcome->verdict = NULL;
    /* The checks that need no network first: a wrong output fails at once. */
    if (!check_settings(settings, error) ||
        !check_output(image, source_of(drawable), settings->output, error))
        return FALSE;
    cs_gimp_inference *inference = cs_gimp_infer(image, drawable, settings, TRUE, error);
    if (!inference) return FALSE;
    const gboolean ok = cs_gimp_apply(image, inference, settings, outcome, error);
    cs_gimp_inference_free(inference);
    if (ok) cs_gimp_host_progress(1.0);
    return ok;
}

/* ---- the preview ---------------------------------------------------------------------- */

/* The value at drawable pixel (x, y) of the size x size plane, as cs_resize_linear_f32
 * would give it (half-pixel centres, clamped at the edges). */
static float plane_at(const float *plane, int size, int x, int y, GeglRectangle b) {
    const float fx = CLAMP(((float)x + 0.5f) * size / b.width - 0.5f, 0.f, size - 1.f);
    const float fy = CLAMP(((float)y + 0.5f) * size / b.height - 0.5f, 0.f, size - 1.f);
    const int x0 = (int)fx, y0 = (int)fy;
    const int x1 = MIN(x0 + 1, size - 1), y1 = MIN(y0 + 1, size - 1);
    const float ax = fx - x0, ay = fy - y0;
    const float top = plane[y0 * size + x0] * (1 - ax) + plane[y0 * size + x1] * ax;
    const float bottom = plane[y1 * size + x0] * (1 - ax) + plane[y1 * size + x1] * ax;
    return top * (1 - ay) + bottom * ay;
}

/* One preview pixel: the photo's RGB at (x, y) with the result laid over it. */
static void render_pixel(const cs_gimp_inference *inference, const cs_gimp_settings *settings,
                         int x, int y, guint8 *out) {
    const GeglRectangle b = inference->bounds;
    const guint8 *bgr = inference->bgr->data + 3 * ((size_t)y * b.width + x);
    const float photo[3] = {bgr[2], bgr[1], bgr[0]};
    const float p = inference->prob[(size_t)y * b.width + x];
    float rgb[3];
    if (settings->output == CS_GIMP_OUTPUT_LAYER_MASK ||
        settings->output == CS_GIMP_OUTPUT_SELECTION) {
        const float a = p > (float)settings->threshold ? MARK_ALPHA : 0.f;
        for (int c = 0; c < 3; c++) rgb[c] = photo[c] * (1 - a) + MARK_RGB[c] * a;
    } else {
        /* The map layer as GIMP will composite it: Screen at the layer's opacity. */
        float v = p;
        if (settings->output == CS_GIMP_OUTPUT_UNCERTAINTY) cs_prob_to_uncertainty(&p, 1, &v);
        if (settings->output == CS_GIMP_OUTPUT_SID_UNCERTAINTY && inference->uncertainty_plane) {
            const float span = inference->uncertainty_max - inference->uncertainty_min;
            const float u = plane_at(inference->uncertainty_plane, inference->size, x, y, b);
            v = span > 0 ? CLAMP((u - inference->uncertainty_min) / span, 0.f, 1.f) : 0.f;
        }
        const float a = (float)(CS_GIMP_MAP_OPACITY / 100.0) * v;
        for (int c = 0; c < 3; c++) rgb[c] = photo[c] + (255.f - photo[c]) * a;
    }
    for (int c = 0; c < 3; c++) out[c] = (guint8)CLAMP(rgb[c] + 0.5f, 0.f, 255.f);
}

void cs_gimp_preview_render(const cs_gimp_inference *inference, const cs_gimp_settings *settings,
                            const int *xs, int w, const int *ys, int h, guint8 *rgb) {
    const GeglRectangle b = inference->bounds;
    for (int j = 0; j < h; j++) {
        const int y = CLAMP(ys[j], 0, b.height - 1);
        for (int i = 0; i < w; i++)
            render_pixel(inference, settings, CLAMP(xs[i], 0, b.width - 1), y,
                         rgb + 3 * ((size_t)j * w + i));
    }
}
