/* condseg_gimp_dialog.c — the dialog parts of condseg_gimp_dialog.h: the kept answer, its
 * notes and verdict, the preview (each preview pixel mapped back to the drawable,
 * rendered by cs_gimp_preview_render, drawn in one go) and the Help window. */
#include <string.h>

#include "condseg_gimp_dialog.h"

void cs_gimp_dialog_set_verdict(cs_gimp_dialog *dialog, const char *text, gboolean is_error) {
    char *markup = is_error ? g_markup_printf_escaped("<span foreground=\"%s\">%s</span>",
                                                      dialog->error_colour, text)
                            : g_markup_printf_escaped("<b>%s</b>", text);
    gtk_label_set_markup(GTK_LABEL(dialog->verdict), markup);
    g_free(markup);
}

void cs_gimp_dialog_update_device_note(cs_gimp_dialog *dialog, int device) {
    char *forecast = cs_gimp_device_forecast(device);
    char *text = dialog->inference
                     ? g_markup_printf_escaped("<small>%s; the preview ran on %s in %.2f s</small>",
                                               forecast,
                                               strcmp(dialog->inference->device_ran, "cuda") == 0
                                                   ? "the NVIDIA GPU"
                                                   : "the CPU",
                                               dialog->inference->seconds)
                     : g_markup_printf_escaped("<small>%s</small>", forecast);
    gtk_label_set_markup(GTK_LABEL(dialog->device_note), text);
    g_free(text);
    g_free(forecast);
}

void cs_gimp_dialog_update_model_note(cs_gimp_dialog *dialog, const char *weights) {
    char *installed = cs_default_weights_path();
    char *basename = installed ? g_path_get_basename(installed) : NULL;
    char *text = !installed ? g_strdup("<small>No default model installed: choose a "
                                       ".safetensors weights file.</small>")
                 : (!weights[0] || strcmp(weights, installed) == 0)
                     ? g_markup_printf_escaped("<small>The installed default model (%s)</small>",
                                               basename)
                     : g_markup_printf_escaped("<small>Not the default model; <i>Default "
                                               "model</i> goes back to %s</small>",
                                               basename);
    gtk_label_set_markup(GTK_LABEL(dialog->model_note), text);
    if (installed) gtk_widget_set_tooltip_text(dialog->model_note, installed);
    g_free(text), g_free(basename), g_free(installed);
}

/* Lets GTK draw what was just set (a "Running the network" line) before a long call. */
static void flush_events(void) {
    while (gtk_events_pending()) gtk_main_iteration();
}

gboolean cs_gimp_dialog_ensure_inference(cs_gimp_dialog *dialog, const cs_gimp_settings *settings) {
    if (cs_gimp_inference_matches(dialog->inference, dialog->drawable, settings)) return TRUE;
    /* Dropped before the events are handled: the device note must not show the old run. */
    cs_gimp_inference_free(dialog->inference);
    dialog->inference = NULL;
    g_clear_pointer(&dialog->inference_error, g_free);
    cs_gimp_dialog_set_verdict(dialog, "Running the network...", FALSE);
    dialog->busy = TRUE;
    flush_events();
    GError *error = NULL;
    dialog->inference = cs_gimp_infer(dialog->image, dialog->drawable, settings, FALSE, &error);
    dialog->busy = FALSE;
    if (dialog->inference) {
        dialog->network_runs++;
        /* The dialog checks (plugin/dialog-screenshot.sh) count the runs by this line. */
        g_debug("ConDSeg preview: network run %d, %.3f s", dialog->network_runs,
                dialog->inference->seconds);
    } else {
        dialog->inference_error = g_strdup(error->message);
        g_error_free(error);
    }
    cs_gimp_dialog_update_device_note(dialog, settings->device);
    return dialog->inference != NULL;
}

void cs_gimp_dialog_redraw(cs_gimp_dialog *dialog, const cs_gimp_settings *settings) {
    GimpPreview *preview = GIMP_PREVIEW(dialog->preview);
    const gint64 start = g_get_monotonic_time();
    int w, h;
    gimp_preview_get_size(preview, &w, &h);
    int *xs = g_new(int, w), *ys = g_new(int, h), unused;
    for (int i = 0; i < w; i++) gimp_preview_untransform(preview, i, 0, &xs[i], &unused);
    for (int j = 0; j < h; j++) gimp_preview_untransform(preview, 0, j, &unused, &ys[j]);
    guchar *rgb = g_new(guchar, (size_t)w * h * 3);
    cs_gimp_preview_render(dialog->inference, settings, xs, w, ys, h, rgb);
    gimp_preview_area_draw(GIMP_PREVIEW_AREA(gimp_preview_get_area(preview)), 0, 0, w, h,
                           GIMP_RGB_IMAGE, rgb, w * 3);
    g_free(rgb), g_free(xs), g_free(ys);
    char *verdict = cs_gimp_verdict(dialog->inference, settings);
    g_debug("ConDSeg preview: redrawn at threshold %.3f, output %d in %.1f ms, network runs %d",
            settings->threshold, settings->output, (g_get_monotonic_time() - start) / 1e3,
            dialog->network_runs);
    cs_gimp_dialog_set_verdict(dialog, verdict, FALSE);
    g_free(verdict);
}

void cs_gimp_dialog_preview_invalidated(cs_gimp_dialog *dialog, const cs_gimp_settings *settings) {
    if (dialog->busy) return;   /* a redraw follows the run in progress */
    if (!settings || !cs_gimp_dialog_ensure_inference(dialog, settings)) {
        gimp_preview_draw(GIMP_PREVIEW(dialog->preview));   /* the photo alone */
        if (dialog->inference_error)
            cs_gimp_dialog_set_verdict(dialog, dialog->inference_error, TRUE);
        return;
    }
    cs_gimp_dialog_redraw(dialog, settings);
}

void cs_gimp_dialog_settings_changed(cs_gimp_dialog *dialog, const cs_gimp_settings *settings) {
    if (dialog->busy || !dialog->preview) return;
    if (settings && cs_gimp_inference_matches(dialog->inference, dialog->drawable, settings) &&
        gimp_preview_get_update(GIMP_PREVIEW(dialog->preview)))
        cs_gimp_dialog_redraw(dialog, settings);
    else
        gimp_preview_invalidate(GIMP_PREVIEW(dialog->preview));
}

gboolean cs_gimp_dialog_apply(cs_gimp_dialog *dialog, const cs_gimp_settings *settings,
                              cs_gimp_outcome *outcome) {
    GError *error = NULL;
    const gboolean ok = settings && cs_gimp_dialog_ensure_inference(dialog, settings) &&
                        cs_gimp_apply(dialog->image, dialog->inference, settings, outcome, &error);
    if (!ok) {
        const char *why = error                     ? error->message
                          : dialog->inference_error ? dialog->inference_error
                                                    : "ConDSeg: the settings are not valid";
        cs_gimp_dialog_set_verdict(dialog, why, TRUE);
        g_clear_error(&error);
    }
    return ok;
}

void cs_gimp_dialog_release(cs_gimp_dialog *dialog) {
    cs_gimp_inference_free(dialog->inference);
    dialog->inference = NULL;
    g_clear_pointer(&dialog->inference_error, g_free);
}

void cs_gimp_dialog_show_help(GtkWidget *parent) {
    GtkWidget *help = gtk_message_dialog_new(GTK_WINDOW(parent), GTK_DIALOG_MODAL,
                                             GTK_MESSAGE_INFO, GTK_BUTTONS_CLOSE, "%s",
                                             CS_GIMP_TITLE);
    gtk_message_dialog_format_secondary_text(GTK_MESSAGE_DIALOG(help), "%s", cs_gimp_help_text);
    gtk_window_set_title(GTK_WINDOW(help), CS_GIMP_TITLE " Help");
    gtk_dialog_run(GTK_DIALOG(help));
    gtk_widget_destroy(help);
}
