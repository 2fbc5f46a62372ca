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
    "as a new layer holding the foreground probability or the uncertainty map of the "     \
    "network's semantic-decoupling branch (full ConDSeg weights only). The mask is the "   \
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
    CS_GIMP_OUTPUT_UNCERTAINTY = 3,   /* a new layer: SID's uncertainty map, black 0 .. white 1 */
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

#define CS_GIMP_WEIGHTS_MAX 4096

/* Plain data, no pointers: GIMP 2.10 keeps the last values as raw bytes (gimp_set_data). */
typedef struct {
    char weights[CS_GIMP_WEIGHTS_MAX];   /* weights file; "" = the installed default model */
    double threshold;                    /* probability above which a pixel is foreground */
    int output;                          /* a cs_gimp_output */
    int device;                          /* a cs_gimp_device */
} cs_gimp_settings;

/* GIMP 2.10's key for the stored last values. It names the layout: the struct without
 * `device` had the same size (padding), so its bytes, stored under the procedure's name,
 * must not be read as this one. Change it whenever the layout changes. */
#define CS_GIMP_SETTINGS_KEY CS_GIMP_PROC "-settings-2"

/* Defaults: the installed default model (when there is one), threshold 0.5, layer mask,
 * automatic device. */
void cs_gimp_settings_init(cs_gimp_settings *settings);

/* ---------------------------------------------------------------------------------
 * The image work */

/* Segments `drawable` of `image` with the given settings and writes the result. Everything
 * that can fail (settings, drawable kind, weights, device, inference) is checked before the
 * image is touched, so on failure the image is exactly as it was; the changes themselves are
 * one undo group. `result` receives the item written: the layer mask, the selection channel or
 * the new layer. Progress goes to cs_gimp_host_progress. */
gboolean cs_gimp_segment(gint32 image, gint32 drawable, const cs_gimp_settings *settings,
                         gint32 *result, GError **error);

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
 * inserted just above `above` (or at the top when `above` is not a layer). */
gint32 cs_gimp_host_insert_layer(gint32 image, const char *name, GeglRectangle bounds,
                                 gint32 above);
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
