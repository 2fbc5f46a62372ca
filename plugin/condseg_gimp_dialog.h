/* condseg_gimp_dialog.h — the parts of the dialogs written once for both front ends: the
 * kept network answer with the labels that report on it, the preview's drawing, and the
 * Help window. libgimpui 2.0 and 3.0, and GTK 2 and 3, name and shape the calls they need
 * alike (GimpPreview, gimp_preview_untransform, gimp_preview_area_draw, GtkLabel markup,
 * GtkMessageDialog), so this file is compiled into each front end against its own
 * libgimpui. What differs (the widgets, the settings' source) stays in the front ends. */
#ifndef CONDSEG_GIMP_DIALOG_H
#define CONDSEG_GIMP_DIALOG_H

#include <libgimp/gimp.h>
#include <libgimp/gimpui.h>

#include "condseg_gimp_common.h"

/* What the settings column says about the preview and an empty result. */
#define CS_GIMP_DIALOG_PREVIEW_NOTE                                                        \
    "<small>Preview: marked pixels tinted green. When no lesion is found, a layer mask or " \
    "selection is left unchanged. Map layers: Screen mode, 75% opacity.</small>"

/* A dialog's kept answer and the widgets that show it; each front end's dialog state holds
 * one, filled in as it makes the widgets. */
typedef struct {
    gint32 image, drawable;
    cs_gimp_inference *inference;   /* the network's answer for the current weights/device */
    char *inference_error;          /* why the last network run failed, or NULL */
    int network_runs;
    gboolean busy;                  /* the network is running (events are being handled) */
    GtkWidget *preview, *model_note, *device_note, *verdict;
    const char *error_colour;       /* of error verdicts: each GIMP's theme wants its own */
} cs_gimp_dialog;

/* The verdict under the preview: bold, or an error in error_colour. */
void cs_gimp_dialog_set_verdict(cs_gimp_dialog *dialog, const char *text, gboolean is_error);
/* The note under the device: where `device` will run, and where the preview ran. */
void cs_gimp_dialog_update_device_note(cs_gimp_dialog *dialog, int device);
/* The note under the weights: is `weights` the installed default model? */
void cs_gimp_dialog_update_model_note(cs_gimp_dialog *dialog, const char *weights);

/* Runs the network when the kept answer does not fit `settings` (TRUE when one does
 * after); a failure's reason is kept in inference_error. */
gboolean cs_gimp_dialog_ensure_inference(cs_gimp_dialog *dialog, const cs_gimp_settings *settings);
/* Draws the preview from the kept answer (no network run) and shows its verdict. */
void cs_gimp_dialog_redraw(cs_gimp_dialog *dialog, const cs_gimp_settings *settings);
/* The preview's "invalidated" signal (shown, scrolled, zoomed, Preview switched on): runs
 * the network if need be, then redraws. `settings` NULL: they are not valid (the photo
 * alone is drawn). */
void cs_gimp_dialog_preview_invalidated(cs_gimp_dialog *dialog, const cs_gimp_settings *settings);
/* A setting changed: redraw at once when the kept answer still fits, else let the preview
 * run the network (only while its Preview box is ticked). `settings` as above; nothing
 * happens while the network runs or before the preview exists. */
void cs_gimp_dialog_settings_changed(cs_gimp_dialog *dialog, const cs_gimp_settings *settings);
/* One press of OK: writes the kept answer (running the network if need be). FALSE with
 * the reason in the verdict when it failed. */
gboolean cs_gimp_dialog_apply(cs_gimp_dialog *dialog, const cs_gimp_settings *settings,
                              cs_gimp_outcome *outcome);
/* Frees the kept answer and the failure's reason (the widgets go with the dialog). */
void cs_gimp_dialog_release(cs_gimp_dialog *dialog);

/* Help: the plug-in's own text in a modal window over `parent` (GIMP's manual has no page
 * for it). */
void cs_gimp_dialog_show_help(GtkWidget *parent);

#endif
