/* condseg_gimp_common.h — the part of the ConDSeg GIMP plug-in that both front ends share:
 * its settings, the names of its output modes, and the whole image work (read the drawable,
 * run the network, write the result into the image as one undo step).
 *
 * The shared code is written against GEGL, babl and libcondseg only. What it needs from
 * GIMP itself goes through the cs_gimp_host_* functions at the end of this header: each
 * front end (condseg_gimp2.c for libgimp-2.0, condseg_gimp3.c for libgimp-3.0) defines
 * them with its own API. Images and items are named by their integer ids, which both APIs
 * have (GIMP 3 maps them to objects with gimp_*_get_by_id).
 */
#ifndef CONDSEG_GIMP_COMMON_H
#define CONDSEG_GIMP_COMMON_H

#include <gegl.h>
#include <glib.h>

#include "condseg.h"   /* cs_image, kept in cs_gimp_inference */

#define CS_GIMP_PROC "plug-in-condseg"
#define CS_GIMP_BINARY "condseg"
#define CS_GIMP_ROLE "condseg-segmentation"
#define CS_GIMP_MENU_PATH "<Image>/Filters/Medical"
#define CS_GIMP_MENU_LABEL "ConDSeg _Segmentation..."
#define CS_GIMP_TITLE "ConDSeg Segmentation"
#define CS_GIMP_IMAGE_TYPES "RGB*, GRAY*, INDEXED*"
#define CS_GIMP_BLURB "Segment a polyp, skin lesion or gland with the ConDSeg network"
#define CS_GIMP_HELP                                                                        \
    "Runs the ConDSeg segmentation network (AAAI 2025) on the drawable and writes the "     \
    "result at the drawable's full resolution: as the layer's mask, as the selection, or " \
    "as a new layer holding the foreground probability, the uncertainty (the binary "      \
    "entropy of the probability, 0 sure to 1 undecided) or the raw uncertainty output of " \
    "the network's semantic-decoupling branch (full ConDSeg weights only). Test-time "     \
    "augmentation averages the image's and its mirrors' predictions. The mask is the "     \
    "one `condseg predict` writes for the same image and threshold. An empty weights "     \
    "file name means the installed default model. The network runs on the CPU or an "     \
    "NVIDIA GPU (CUDA); automatic uses the GPU when one is usable, else the CPU."
#define CS_GIMP_AUTHOR "condseg authors"
#define CS_GIMP_DATE "2025"

/* ---------------------------------------------------------------------------------
 * Settings */

typedef enum {
    CS_GIMP_OUTPUT_LAYER_MASK = 0,    /* the mask, as the layer's layer mask */
    CS_GIMP_OUTPUT_SELECTION = 1,     /* the mask, as the selection (replacing it) */
    CS_GIMP_OUTPUT_PROBABILITY = 2,   /* a new layer: foreground probability, black 0 .. white 1 */
    CS_GIMP_OUTPUT_UNCERTAINTY = 3,   /* a new layer: cs_prob_to_uncertainty, black 0 .. white 1 */
    CS_GIMP_OUTPUT_SID_UNCERTAINTY = 4,   /* a new layer: SID's raw uncertainty output,
                                             stretched from its lowest to its highest value */
    CS_GIMP_N_OUTPUTS
} cs_gimp_output;

/* How each value of a choice (output, device) is named: `nick` in GIMP 3's choice argument
 * (and Script-Fu 3), `label` in the dialogs, `help` under it. */
typedef struct {
    const char *nick;
    const char *label;
    const char *help;
} cs_gimp_choice_name;
/* Indexed by cs_gimp_output. */
extern const cs_gimp_choice_name cs_gimp_output_names[CS_GIMP_N_OUTPUTS];

/* Where the network runs. 0 is automatic so that a zero-filled or defaulted argument
 * means the default. The values are GIMP 2.10's PDB argument; keep them. */
typedef enum {
    CS_GIMP_DEVICE_AUTO = 0,   /* an NVIDIA GPU when one is usable, else the CPU (silently) */
    CS_GIMP_DEVICE_CPU = 1,
    CS_GIMP_DEVICE_CUDA = 2,   /* an NVIDIA GPU; fails with the reason when there is none */
    CS_GIMP_N_DEVICES
} cs_gimp_device;

/* Indexed by cs_gimp_device; `nick` is also cs_model_set_device's name. */
extern const cs_gimp_choice_name cs_gimp_device_names[CS_GIMP_N_DEVICES];

/* The arithmetic of the convolutions (cs_model_set_precision). 0 is fp32, the default. */
typedef enum {
    CS_GIMP_PRECISION_FP32 = 0,   /* float32: the masks of `condseg predict` */
    CS_GIMP_PRECISION_BF16 = 1,   /* bfloat16 inputs, float32 sums: faster where the CPU has
                                     bf16 instructions (else float32, saying so) */
    CS_GIMP_N_PRECISIONS
} cs_gimp_precision;

/* Indexed by cs_gimp_precision; `nick` is also cs_model_set_precision's name. */
extern const cs_gimp_choice_name cs_gimp_precision_names[CS_GIMP_N_PRECISIONS];

/* The test-time augmentation toggle, in both dialogs. */
#define CS_GIMP_TTA_LABEL "Test-time _augmentation (2 runs)"
#define CS_GIMP_TTA_HELP                                                                   \
    "The mean of the predictions of the image and of its half-turned copy (mirrored "      \
    "left-right and top-bottom at once): two network runs instead of one"

#define CS_GIMP_WEIGHTS_MAX 4096

typedef struct {
    char weights[CS_GIMP_WEIGHTS_MAX];   /* weights file; "" = the installed default model */
    double threshold;                    /* probability above which a pixel is foreground */
    int output;                          /* a cs_gimp_output */
    int device;                          /* a cs_gimp_device */
    int precision;                       /* a cs_gimp_precision */
    int tta;                             /* test-time augmentation (CS_TTA_DEFAULT): 0 or 1 */
} cs_gimp_settings;

/* Defaults: the installed default model (when there is one), threshold 0.5, layer mask,
 * automatic device, float32, no test-time augmentation. */
void cs_gimp_settings_init(cs_gimp_settings *settings);

/* Stored last values: GIMP 2.10 keeps them as a persistent global parasite of this name
 * holding cs_gimp_settings_to_text's key file (GIMP writes it to the profile's parasiterc,
 * so the values survive a restart). GIMP 3 keeps them itself, in the procedure's config. */
#define CS_GIMP_SETTINGS_PARASITE CS_GIMP_PROC "-last-values"

/* The settings as a small key file ([plug-in-condseg] weights=, threshold=, output=,
 * device=, precision= with the choice nicks, tta=true|false), and back. Reading keeps the fields it does
 * not find or cannot accept, so a file from another version gives what it can. g_free the
 * text. */
char *cs_gimp_settings_to_text(const cs_gimp_settings *settings);
void cs_gimp_settings_from_text(cs_gimp_settings *settings, const char *text);

/* How the map layers are laid over the photograph: Screen at 75 % leaves the pixels
 * where the map is 0 (background, sure pixels) as they were and lights up the lesion or
 * the doubtful pixels, so the photograph stays readable under the map. */
#define CS_GIMP_MAP_OPACITY 75.0
#define CS_GIMP_MAP_MODE_NAME "Screen"

/* ---------------------------------------------------------------------------------
 * The network's answer for one drawable
 *
 * Kept by the dialogs while they are open: the network runs again only when a setting
 * that changes its answer changes (the weights, the device, the precision, test-time
 * augmentation); the threshold
 * and the output only change what is drawn from the kept planes. */

typedef struct {
    /* What it was computed with (cs_gimp_inference_matches compares these). */
    char weights[CS_GIMP_WEIGHTS_MAX];   /* the file read (the default model's for "") */
    int device;                          /* the cs_gimp_device asked for */
    int precision;                       /* the cs_gimp_precision asked for */
    int tta;                             /* test-time augmentation asked for */
    gint32 drawable;                     /* the drawable the settings named */
    gint32 source;                       /* the layer read (a layer mask's layer) */
    GeglRectangle bounds;                /* the source's offsets in the image and size */
    cs_image *bgr;                       /* the source as the network's 8-bit BGR input */
    float *prob;                         /* bounds-sized foreground probability */
    int size;                            /* side of the network's output planes */
    float *uncertainty_plane;            /* SID's, size x size; NULL for stage-1 weights */
    float uncertainty_min, uncertainty_max;
    float prob_max;
    char device_ran[8];                  /* "cpu" or "cuda" */
    char precision_ran[8];               /* "fp32" or "bf16" */
    char *precision_note;                /* why bf16 ran as fp32, or NULL */
    double seconds;                      /* reading, loading, inference */
} cs_gimp_inference;

/* Runs the network on `drawable` (a layer mask stands for its layer) with the weights,
 * device and precision of `settings`. Nothing in the image changes. Progress goes to
 * cs_gimp_host_progress when `progress` is set (the dialogs draw their own). */
cs_gimp_inference *cs_gimp_infer(gint32 image, gint32 drawable, const cs_gimp_settings *settings,
                                 gboolean progress, GError **error);
void cs_gimp_inference_free(cs_gimp_inference *inference);
/* Whether `inference` answers `settings` for `drawable` without running the network again. */
gboolean cs_gimp_inference_matches(const cs_gimp_inference *inference, gint32 drawable,
                                   const cs_gimp_settings *settings);
/* The share of the drawable's pixels the mask at `threshold` marks (prob > threshold). */
double cs_gimp_marked_fraction(const cs_gimp_inference *inference, double threshold);

/* A warning for input the network was not trained on (grayscale, indexed), or NULL. */
const char *cs_gimp_input_warning(gint32 image);

/* What a run did, for the user and for scripts. */
typedef struct {
    gint32 result;          /* the item written; -1 when nothing was (no lesion, mask output) */
    double marked_percent;  /* of the drawable's pixels, at the threshold */
    char *verdict;          /* one sentence or two, for the message area (g_free it) */
} cs_gimp_outcome;

/* What cs_gimp_apply would say for these settings, before it runs: the dialogs show it
 * under the preview. g_free the result. */
char *cs_gimp_verdict(const cs_gimp_inference *inference, const cs_gimp_settings *settings);

/* Writes the result the settings' output and threshold ask for from `inference`, as one
 * undo group; checks first (output against the drawable and image), so a failure changes
 * nothing. A mask output with no pixel above the threshold leaves the image as it was. */
gboolean cs_gimp_apply(gint32 image, const cs_gimp_inference *inference,
                       const cs_gimp_settings *settings, cs_gimp_outcome *outcome,
                       GError **error);

/* cs_gimp_infer then cs_gimp_apply, every check before the network runs: the run of a
 * script or of Repeat. */
gboolean cs_gimp_segment(gint32 image, gint32 drawable, const cs_gimp_settings *settings,
                         cs_gimp_outcome *outcome, GError **error);

/* Draws the preview: for each preview pixel (xs[i], ys[j]), drawable coordinates, the
 * photograph with the result the settings ask for laid over it (mask: the marked pixels
 * tinted; maps: the layer as it will be composited). `rgb` is w x h x 3, rows packed. */
void cs_gimp_preview_render(const cs_gimp_inference *inference, const cs_gimp_settings *settings,
                            const int *xs, int w, const int *ys, int h, guint8 *rgb);

/* The device `device` will run on, as a sentence ("Will run on the CPU", or why it cannot), for the
 * dialogs. g_free the result. */
char *cs_gimp_device_forecast(int device);

/* The help text the dialogs' Help button shows: what the plug-in does, each output, the
 * preview, the verdict. */
extern const char cs_gimp_help_text[];

/* Called first thing in main(): the OpenBLAS kernel choice (see cs_select_blas_kernels),
 * and the worker threads. Re-executing is harmless for a plug-in: GIMP passes its pipe
 * file descriptors as numbers in argv and they stay open across exec (they are not
 * close-on-exec, or the plug-in could not have been started with them), the process id
 * GIMP waits on is unchanged, and nothing has been read from the pipes yet. */
void cs_gimp_startup(char **argv);

/* ---------------------------------------------------------------------------------
 * Provided by each front end: the GIMP calls whose signatures differ between libgimp-2.0
 * (integer ids) and libgimp-3.0 (objects). Items are named by id, -1 meaning none. */

typedef enum { CS_GIMP_BASE_RGB, CS_GIMP_BASE_GRAY, CS_GIMP_BASE_INDEXED } cs_gimp_base;

cs_gimp_base cs_gimp_host_image_base(gint32 image);
/* Offsets in the image and size of a drawable. */
GeglRectangle cs_gimp_host_drawable_bounds(gint32 drawable);
const Babl *cs_gimp_host_drawable_format(gint32 drawable);
GeglBuffer *cs_gimp_host_drawable_buffer(gint32 drawable);
GeglBuffer *cs_gimp_host_drawable_shadow_buffer(gint32 drawable);
/* Commits what was written to the shadow buffer, as an undo step. */
void cs_gimp_host_drawable_merge_shadow(gint32 drawable);
void cs_gimp_host_drawable_update(gint32 drawable);
gboolean cs_gimp_host_is_layer(gint32 drawable);
/* The layer a layer mask belongs to, or -1 when `drawable` is not a layer mask. */
gint32 cs_gimp_host_layer_of_mask(gint32 drawable);
/* The layer's mask, or -1. */
gint32 cs_gimp_host_layer_mask(gint32 layer);
/* Adds a white (fully opaque) mask to a layer that has none; returns it. */
gint32 cs_gimp_host_add_layer_mask(gint32 layer);
/* A new layer of the image's base type (RGB or gray, no alpha), `bounds` in the image,
 * inserted just above `above` (or at the top when `above` is not a layer), in Screen mode
 * at `opacity` (0..100). */
gint32 cs_gimp_host_insert_layer(gint32 image, const char *name, GeglRectangle bounds,
                                 gint32 above, double opacity);
/* A new channel of the image's size, inserted in the image (select_item needs that). */
gint32 cs_gimp_host_insert_channel(gint32 image, const char *name);
/* Replaces the selection by the channel's content, then removes the channel. */
void cs_gimp_host_select_channel_and_remove(gint32 image, gint32 channel);
gint32 cs_gimp_host_selection(gint32 image);
void cs_gimp_host_undo_group_start(gint32 image);
void cs_gimp_host_undo_group_end(gint32 image);
void cs_gimp_host_progress_init(const char *message);
void cs_gimp_host_progress(double fraction);

#endif
