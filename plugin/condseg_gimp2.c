/* condseg_gimp2.c — the GIMP 2.10 front end of the ConDSeg plug-in (libgimp-2.0, GTK2).
 *
 * Registers the PDB procedure plug-in-condseg under Filters > Medical, gets its settings
 * (dialog, arguments or last values, by run mode) and hands the image work to
 * cs_gimp_segment (condseg_gimp_common.c). The cs_gimp_host_* functions at the end give
 * that shared code GIMP 2.10's item-id API.
 *
 *   (plug-in-condseg RUN-NONINTERACTIVE image drawable "weights.safetensors" 0.5 0 0 0 0)
 */
#include <string.h>

#include <libgimp/gimp.h>
#include <libgimp/gimpui.h>

#include "condseg.h"
#include "condseg_gimp_common.h"
#include "condseg_gimp_dialog.h"

/* Arguments of plug-in-condseg, in order. New ones go at the end, so that a script's
 * arguments keep their places; the device came after the output, then the precision, then
 * test-time augmentation. */
enum {
    ARG_RUN_MODE,
    ARG_IMAGE,
    ARG_DRAWABLE,
    ARG_WEIGHTS,
    ARG_THRESHOLD,
    ARG_OUTPUT,
    ARG_DEVICE,
    ARG_PRECISION,
    ARG_TTA,
    N_ARGS
};

static void query(void);
static void run(const gchar *name, gint n_params, const GimpParam *params, gint *n_return_values,
                GimpParam **return_values);

const GimpPlugInInfo PLUG_IN_INFO = {NULL, NULL, query, run};

/* libgimp's MAIN() with the OpenBLAS kernel choice in front (see cs_gimp_startup). */
int main(int argc, char *argv[]) {
    cs_gimp_startup(argv);
    return gimp_main(&PLUG_IN_INFO, argc, argv);
}

static void query(void) {
    static const GimpParamDef args[N_ARGS] = {
        {GIMP_PDB_INT32, "run-mode",
         "The run mode { RUN-INTERACTIVE (0), RUN-NONINTERACTIVE (1), RUN-WITH-LAST-VALS (2) }"},
        {GIMP_PDB_IMAGE, "image", "Input image"},
        {GIMP_PDB_DRAWABLE, "drawable", "Drawable to segment (a layer mask stands for its layer)"},
        {GIMP_PDB_STRING, "weights",
         "Weights file (.safetensors) of a ConDSeg or stage-1 network; \"\" for the installed "
         "default model"},
        {GIMP_PDB_FLOAT, "threshold",
         "Probability above which a pixel is foreground (0..1, 0.5 as condseg predict; used by "
         "the mask outputs)"},
        {GIMP_PDB_INT32, "output",
         "Output { LAYER-MASK (0), SELECTION (1), PROBABILITY-LAYER (2), UNCERTAINTY-LAYER (3): "
         "the binary entropy of the probability, 0 sure to 1 undecided, SID-UNCERTAINTY-LAYER "
         "(4): the raw output of the network's uncertainty branch, stretched }"},
        {GIMP_PDB_INT32, "device",
         "Where the network runs { AUTO (0): an NVIDIA GPU when one is usable, else the CPU; "
         "CPU (1); CUDA (2): an NVIDIA GPU, an error saying why when there is none }"},
        {GIMP_PDB_INT32, "precision",
         "Arithmetic of the convolutions { FP32 (0): float32, the default; BF16 (1): bfloat16 "
         "inputs with float32 sums, faster on CPUs with bf16 instructions (else float32) }"},
        {GIMP_PDB_INT32, "tta",
         "Test-time augmentation { OFF (0); ON (1): the mean of the predictions of the image "
         "and of its half-turned copy, two network runs }"},
    };
    static const GimpParamDef return_values[] = {
        {GIMP_PDB_DRAWABLE, "result",
         "The layer mask, selection channel or new layer written; -1 when a mask output found "
         "no lesion (the image is then unchanged)"},
        {GIMP_PDB_FLOAT, "marked-percent",
         "Share of the drawable's pixels marked at the threshold, in percent"},
        {GIMP_PDB_STRING, "verdict", "What was found and written, in a sentence or two"},
    };
    gimp_install_procedure(CS_GIMP_PROC, CS_GIMP_BLURB, CS_GIMP_HELP, CS_GIMP_AUTHOR,
                           CS_GIMP_AUTHOR, CS_GIMP_DATE, CS_GIMP_MENU_LABEL, CS_GIMP_IMAGE_TYPES,
                           GIMP_PLUGIN, G_N_ELEMENTS(args), G_N_ELEMENTS(return_values), args,
                           return_values);
    gimp_plugin_menu_register(CS_GIMP_PROC, CS_GIMP_MENU_PATH);
}

/* ---- stored settings ------------------------------------------------------------------ */

/* The last values of an interactive run: a persistent global parasite, so that they outlive
 * GIMP (it writes them to parasiterc at exit) and are there for Repeat and the next dialog. */
static void load_last_settings(cs_gimp_settings *settings) {
    GimpParasite *parasite = gimp_get_parasite(CS_GIMP_SETTINGS_PARASITE);
    if (!parasite) return;
    const gsize size = gimp_parasite_data_size(parasite);
    char *text = g_strndup(gimp_parasite_data(parasite), size);
    cs_gimp_settings_from_text(settings, text);
    g_free(text);
    gimp_parasite_free(parasite);
}

static void save_last_settings(const cs_gimp_settings *settings) {
    char *text = cs_gimp_settings_to_text(settings);
    GimpParasite *parasite = gimp_parasite_new(CS_GIMP_SETTINGS_PARASITE,
                                               GIMP_PARASITE_PERSISTENT, strlen(text) + 1, text);
    gimp_attach_parasite(parasite);
    gimp_parasite_free(parasite);
    g_free(text);
}

/* ---- the dialog --------------------------------------------------------------------- */

typedef struct {
    cs_gimp_dialog d;               /* the kept answer and its labels (condseg_gimp_dialog.h) */
    cs_gimp_settings *settings;
    GtkWidget *dialog, *chooser;
    GtkObject *threshold_scale;
} dialog_state;

static void preview_invalidated(GimpPreview *preview, dialog_state *state) {
    (void)preview;
    cs_gimp_dialog_preview_invalidated(&state->d, state->settings);
}

static void settings_changed(dialog_state *state) {
    cs_gimp_dialog_settings_changed(&state->d, state->settings);
}

static void output_toggled(GtkWidget *button, dialog_state *state) {
    if (!gtk_toggle_button_get_active(GTK_TOGGLE_BUTTON(button))) return;
    state->settings->output = GPOINTER_TO_INT(g_object_get_data(G_OBJECT(button),
                                                                "gimp-item-data"));
    settings_changed(state);
}

static void threshold_changed(GtkAdjustment *adjustment, dialog_state *state) {
    state->settings->threshold = gtk_adjustment_get_value(adjustment);
    settings_changed(state);
}

static void tta_toggled(GtkToggleButton *button, dialog_state *state) {
    state->settings->tta = gtk_toggle_button_get_active(button) ? 1 : 0;
    settings_changed(state);
}

static void precision_changed(GtkWidget *combo, dialog_state *state) {
    gimp_int_combo_box_get_active(GIMP_INT_COMBO_BOX(combo), &state->settings->precision);
    settings_changed(state);
}

static void device_changed(GtkWidget *combo, dialog_state *state) {
    gimp_int_combo_box_get_active(GIMP_INT_COMBO_BOX(combo), &state->settings->device);
    cs_gimp_dialog_update_device_note(&state->d, state->settings->device);
    settings_changed(state);
}

static void weights_chosen(GtkFileChooser *chooser, dialog_state *state) {
    char *weights = gtk_file_chooser_get_filename(chooser);
    if (weights && strlen(weights) < sizeof state->settings->weights &&
        strcmp(weights, state->settings->weights) != 0) {
        g_strlcpy(state->settings->weights, weights, sizeof state->settings->weights);
        cs_gimp_dialog_update_model_note(&state->d, state->settings->weights);
        settings_changed(state);
    }
    g_free(weights);
}

static void default_model_clicked(GtkButton *button, dialog_state *state) {
    (void)button;
    char *installed = cs_default_weights_path();
    if (installed) {
        gtk_file_chooser_set_filename(GTK_FILE_CHOOSER(state->chooser), installed);
        g_strlcpy(state->settings->weights, installed, sizeof state->settings->weights);
        cs_gimp_dialog_update_model_note(&state->d, state->settings->weights);
        settings_changed(state);
    }
    g_free(installed);
}

static GtkWidget *weights_chooser_new(const char *weights) {
    GtkWidget *chooser = gtk_file_chooser_button_new("Choose the ConDSeg weights",
                                                     GTK_FILE_CHOOSER_ACTION_OPEN);
    GtkFileFilter *safetensors = gtk_file_filter_new();
    gtk_file_filter_set_name(safetensors, "Weights (*.safetensors)");
    gtk_file_filter_add_pattern(safetensors, "*.safetensors");
    gtk_file_chooser_add_filter(GTK_FILE_CHOOSER(chooser), safetensors);
    GtkFileFilter *all = gtk_file_filter_new();
    gtk_file_filter_set_name(all, "All files");
    gtk_file_filter_add_pattern(all, "*");
    gtk_file_chooser_add_filter(GTK_FILE_CHOOSER(chooser), all);
    if (weights[0]) gtk_file_chooser_set_filename(GTK_FILE_CHOOSER(chooser), weights);
    gtk_file_chooser_button_set_width_chars(GTK_FILE_CHOOSER_BUTTON(chooser), 24);
    return chooser;
}

/* The device choice, as a combo box: three fixed entries that need no more room. */
static GtkWidget *device_combo_new(dialog_state *state) {
    GtkWidget *combo = gimp_int_combo_box_new(
        cs_gimp_device_names[CS_GIMP_DEVICE_AUTO].label, CS_GIMP_DEVICE_AUTO,
        cs_gimp_device_names[CS_GIMP_DEVICE_CPU].label, CS_GIMP_DEVICE_CPU,
        cs_gimp_device_names[CS_GIMP_DEVICE_CUDA].label, CS_GIMP_DEVICE_CUDA, NULL);
    gimp_int_combo_box_connect(GIMP_INT_COMBO_BOX(combo), state->settings->device,
                               G_CALLBACK(device_changed), state);
    gimp_help_set_help_data(combo,
                            "Automatic: an NVIDIA GPU when one is usable, else the CPU. "
                            "NVIDIA GPU: fails, saying why, when there is none.",
                            NULL);
    return combo;
}

/* GimpHelpFunc of the dialog (help_data is the dialog). */
static void show_help(const gchar *help_id, gpointer help_data) {
    (void)help_id;
    cs_gimp_dialog_show_help(GTK_WIDGET(help_data));
}

static GtkWidget *small_label(const char *markup) {
    GtkWidget *label = gtk_label_new(NULL);
    gtk_label_set_markup(GTK_LABEL(label), markup);
    gtk_misc_set_alignment(GTK_MISC(label), 0.0, 0.5);
    gtk_label_set_line_wrap(GTK_LABEL(label), TRUE);
    return label;
}

/* Left: the preview and the verdict under it. */
static GtkWidget *preview_column_new(dialog_state *state) {
    GtkWidget *box = gtk_vbox_new(FALSE, 6);
    state->d.preview = gimp_zoom_preview_new_from_drawable_id(
        cs_gimp_host_layer_of_mask(state->d.drawable) != -1
            ? cs_gimp_host_layer_of_mask(state->d.drawable)
            : state->d.drawable);
    gtk_box_pack_start(GTK_BOX(box), state->d.preview, TRUE, TRUE, 0);
    g_signal_connect(state->d.preview, "invalidated", G_CALLBACK(preview_invalidated), state);
    state->d.verdict = small_label("");
    gtk_widget_set_size_request(state->d.verdict, 300, -1);
    gtk_box_pack_start(GTK_BOX(box), state->d.verdict, FALSE, FALSE, 0);
    return box;
}

static GtkWidget *weights_row_new(dialog_state *state) {
    GtkWidget *table = gtk_table_new(2, 3, FALSE);
    gtk_table_set_col_spacings(GTK_TABLE(table), 6);
    gtk_table_set_row_spacings(GTK_TABLE(table), 2);
    state->chooser = weights_chooser_new(state->settings->weights);
    g_signal_connect(state->chooser, "selection-changed", G_CALLBACK(weights_chosen), state);
    gimp_table_attach_aligned(GTK_TABLE(table), 0, 0, "_Weights:", 0.0, 0.5, state->chooser, 1,
                              FALSE);
    GtkWidget *reset = gtk_button_new_with_mnemonic("De_fault model");
    gimp_help_set_help_data(reset, "Back to the installed default model", NULL);
    g_signal_connect(reset, "clicked", G_CALLBACK(default_model_clicked), state);
    char *installed = cs_default_weights_path();
    gtk_widget_set_sensitive(reset, installed != NULL);
    g_free(installed);
    gtk_table_attach(GTK_TABLE(table), reset, 2, 3, 0, 1, GTK_FILL, GTK_FILL, 0, 0);
    state->d.model_note = small_label("");
    gtk_table_attach(GTK_TABLE(table), state->d.model_note, 1, 3, 1, 2, GTK_FILL, GTK_FILL, 0, 0);
    cs_gimp_dialog_update_model_note(&state->d, state->settings->weights);
    return table;
}

static GtkWidget *outputs_new(dialog_state *state) {
    /* All outputs in sight: the uncertainty map is the one no other tool gives. */
    GtkWidget *buttons[CS_GIMP_N_OUTPUTS];
    GtkWidget *outputs = gimp_int_radio_group_new(
        TRUE, "Output", G_CALLBACK(output_toggled), state, state->settings->output,
        cs_gimp_output_names[0].label, 0, &buttons[0], cs_gimp_output_names[1].label, 1,
        &buttons[1], cs_gimp_output_names[2].label, 2, &buttons[2],
        cs_gimp_output_names[3].label, 3, &buttons[3], cs_gimp_output_names[4].label, 4,
        &buttons[4], NULL);
    for (int i = 0; i < CS_GIMP_N_OUTPUTS; i++)
        gimp_help_set_help_data(buttons[i], cs_gimp_output_names[i].help, NULL);
    return outputs;
}

/* The threshold; Return in its entry runs the filter (GIMP's convention). */
static GtkWidget *threshold_row_new(dialog_state *state) {
    GtkWidget *table = gtk_table_new(1, 3, FALSE);
    gtk_table_set_col_spacings(GTK_TABLE(table), 6);
    state->threshold_scale = gimp_scale_entry_new(
        GTK_TABLE(table), 0, 0, "_Threshold:", 160, 5, state->settings->threshold, 0.0, 1.0,
        0.01, 0.1, 2, TRUE, 0, 0, "Probability above which a pixel is lesion", NULL);
    g_signal_connect(state->threshold_scale, "value-changed", G_CALLBACK(threshold_changed),
                     state);
    gtk_entry_set_activates_default(
        GTK_ENTRY(GIMP_SCALE_ENTRY_SPINBUTTON(state->threshold_scale)), TRUE);
    return table;
}

static GtkWidget *precision_combo_new(dialog_state *state) {
    GtkWidget *combo = gimp_int_combo_box_new(
        cs_gimp_precision_names[CS_GIMP_PRECISION_FP32].label, CS_GIMP_PRECISION_FP32,
        cs_gimp_precision_names[CS_GIMP_PRECISION_BF16].label, CS_GIMP_PRECISION_BF16, NULL);
    gimp_int_combo_box_connect(GIMP_INT_COMBO_BOX(combo), state->settings->precision,
                               G_CALLBACK(precision_changed), state);
    gimp_help_set_help_data(combo, cs_gimp_precision_names[CS_GIMP_PRECISION_BF16].help, NULL);
    return combo;
}

static GtkWidget *device_row_new(dialog_state *state) {
    GtkWidget *table = gtk_table_new(4, 2, FALSE);
    gtk_table_set_col_spacings(GTK_TABLE(table), 6);
    gtk_table_set_row_spacings(GTK_TABLE(table), 2);
    gimp_table_attach_aligned(GTK_TABLE(table), 0, 0, "_Device:", 0.0, 0.5,
                              device_combo_new(state), 1, FALSE);
    state->d.device_note = small_label("");
    gtk_table_attach(GTK_TABLE(table), state->d.device_note, 1, 2, 1, 2, GTK_FILL, GTK_FILL, 0, 0);
    gimp_table_attach_aligned(GTK_TABLE(table), 0, 2, "_Precision:", 0.0, 0.5,
                              precision_combo_new(state), 1, FALSE);
    GtkWidget *tta = gtk_check_button_new_with_mnemonic(CS_GIMP_TTA_LABEL);
    gtk_toggle_button_set_active(GTK_TOGGLE_BUTTON(tta), state->settings->tta != 0);
    g_signal_connect(tta, "toggled", G_CALLBACK(tta_toggled), state);
    gimp_help_set_help_data(tta, CS_GIMP_TTA_HELP, NULL);
    gtk_table_attach(GTK_TABLE(table), tta, 0, 2, 3, 4, GTK_FILL, GTK_FILL, 0, 0);
    cs_gimp_dialog_update_device_note(&state->d, state->settings->device);
    return table;
}

/* Right: the settings, the device that will run, and what an empty result does. */
static GtkWidget *settings_column_new(dialog_state *state) {
    GtkWidget *box = gtk_vbox_new(FALSE, 12);
    gtk_box_pack_start(GTK_BOX(box), weights_row_new(state), FALSE, FALSE, 0);
    gtk_box_pack_start(GTK_BOX(box), outputs_new(state), FALSE, FALSE, 0);
    gtk_box_pack_start(GTK_BOX(box), threshold_row_new(state), FALSE, FALSE, 0);
    gtk_box_pack_start(GTK_BOX(box), device_row_new(state), FALSE, FALSE, 0);
    gtk_box_pack_start(GTK_BOX(box), small_label(CS_GIMP_DIALOG_PREVIEW_NOTE), FALSE, FALSE, 0);
    const char *warning = cs_gimp_input_warning(state->d.image);
    if (warning) {
        char *markup = g_markup_printf_escaped("<span foreground=\"#a05000\">%s</span>", warning);
        gtk_box_pack_start(GTK_BOX(box), small_label(markup), FALSE, FALSE, 0);
        g_free(markup);
    }
    return box;
}

static GtkWidget *dialog_new(dialog_state *state) {
    gimp_ui_init(CS_GIMP_BINARY, TRUE);
    GtkWidget *dialog = gimp_dialog_new(CS_GIMP_TITLE, CS_GIMP_ROLE, NULL, 0, show_help,
                                        CS_GIMP_PROC, "_Cancel", GTK_RESPONSE_CANCEL, "_OK",
                                        GTK_RESPONSE_OK, NULL);
    gtk_dialog_set_alternative_button_order(GTK_DIALOG(dialog), GTK_RESPONSE_OK,
                                            GTK_RESPONSE_CANCEL, -1);
    gtk_dialog_set_default_response(GTK_DIALOG(dialog), GTK_RESPONSE_OK);
    gimp_window_set_transient(GTK_WINDOW(dialog));
    state->dialog = dialog;
    GtkWidget *hbox = gtk_hbox_new(FALSE, 12);
    gtk_container_set_border_width(GTK_CONTAINER(hbox), 12);
    gtk_box_pack_start(GTK_BOX(gtk_dialog_get_content_area(GTK_DIALOG(dialog))), hbox, TRUE,
                       TRUE, 0);
    gtk_box_pack_start(GTK_BOX(hbox), preview_column_new(state), TRUE, TRUE, 0);
    gtk_box_pack_start(GTK_BOX(hbox), settings_column_new(state), FALSE, FALSE, 0);
    return dialog;
}

/* One press of OK: the values are kept first (a failed run keeps them too), then the
 * kept answer is written. FALSE with the reason in the dialog when it failed. */
static gboolean dialog_ok(dialog_state *state, cs_gimp_outcome *outcome) {
    save_last_settings(state->settings);
    return cs_gimp_dialog_apply(&state->d, state->settings, outcome);
}

/* Shows the dialog until a run succeeds (TRUE, `outcome` filled) or it is cancelled. A
 * failed run leaves the dialog open, with the reason in it and the values as chosen. */
static gboolean run_dialog(gint32 image, gint32 drawable, cs_gimp_settings *settings,
                           cs_gimp_outcome *outcome) {
    dialog_state state = {
        .d = {.image = image, .drawable = drawable, .error_colour = "#b00000"},
        .settings = settings};
    GtkWidget *dialog = dialog_new(&state);
    gtk_widget_show_all(dialog);
    /* Focus on the threshold: Return runs the filter instead of opening the file chooser. */
    gtk_widget_grab_focus(GIMP_SCALE_ENTRY_SPINBUTTON(state.threshold_scale));
    gboolean ok = FALSE;
    while (!ok && gimp_dialog_run(GIMP_DIALOG(dialog)) == GTK_RESPONSE_OK)
        ok = dialog_ok(&state, outcome);
    gtk_widget_destroy(dialog);
    cs_gimp_dialog_release(&state.d);
    return ok;
}

/* ---- run ------------------------------------------------------------------------------ */

/* `n_params` may stop before the device, the precision or TTA (see run()): they are then
 * automatic, float32 and off. */
static gboolean settings_from_args(gint n_params, const GimpParam *params,
                                   cs_gimp_settings *settings, GError **error) {
    const char *weights = params[ARG_WEIGHTS].data.d_string ? params[ARG_WEIGHTS].data.d_string
                                                            : "";
    if (strlen(weights) >= sizeof settings->weights) {
        g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                    "ConDSeg: the weights file name is too long");
        return FALSE;
    }
    g_strlcpy(settings->weights, weights, sizeof settings->weights);
    settings->threshold = params[ARG_THRESHOLD].data.d_float;
    settings->output = params[ARG_OUTPUT].data.d_int32;
    settings->device = n_params > ARG_DEVICE ? params[ARG_DEVICE].data.d_int32
                                             : CS_GIMP_DEVICE_AUTO;
    settings->precision = n_params > ARG_PRECISION ? params[ARG_PRECISION].data.d_int32
                                                   : CS_GIMP_PRECISION_FP32;
    settings->tta = n_params > ARG_TTA ? params[ARG_TTA].data.d_int32 : 0;
    return TRUE;
}

/* The settings for this run mode; FALSE (with `status`) when there is nothing to run. */
static gboolean settings_for_run(GimpRunMode run_mode, gint n_params, const GimpParam *params,
                                 cs_gimp_settings *settings, GimpPDBStatusType *status,
                                 GError **error) {
    cs_gimp_settings_init(settings);
    switch (run_mode) {
    case GIMP_RUN_INTERACTIVE:
    case GIMP_RUN_WITH_LAST_VALS: load_last_settings(settings); return TRUE;
    case GIMP_RUN_NONINTERACTIVE:
        /* The argument lists before the device, the precision and TTA came are still
         * taken (callers that pass their own count, as C plug-ins can). */
        if (n_params != N_ARGS && n_params != ARG_TTA && n_params != ARG_PRECISION &&
            n_params != ARG_DEVICE) {
            g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                        "ConDSeg: %s takes %d arguments, not %d", CS_GIMP_PROC, N_ARGS, n_params);
            *status = GIMP_PDB_CALLING_ERROR;
            return FALSE;
        }
        if (!settings_from_args(n_params, params, settings, error)) {
            *status = GIMP_PDB_CALLING_ERROR;
            return FALSE;
        }
        return TRUE;
    default: *status = GIMP_PDB_CALLING_ERROR; return FALSE;
    }
}

/* The return values of a success: the item written, the marked share, the verdict (which
 * an interactive run or Repeat also shows). Returns their number; `message` keeps the
 * verdict alive until the next run (libgimp sends it after run() returns). */
static int success_values(GimpRunMode run_mode, cs_gimp_outcome *outcome, GimpParam *values,
                          char **message) {
    if (run_mode != GIMP_RUN_NONINTERACTIVE) {
        gimp_displays_flush();
        gimp_message(outcome->verdict);
    }
    *message = outcome->verdict;
    values[1].type = GIMP_PDB_DRAWABLE;
    values[1].data.d_drawable = outcome->result;
    values[2].type = GIMP_PDB_FLOAT;
    values[2].data.d_float = outcome->marked_percent;
    values[3].type = GIMP_PDB_STRING;
    values[3].data.d_string = *message;
    return 4;
}

/* An error goes to gimp_message; a calling script also gets the reason with the error
 * status (an interactive run has shown it already: GIMP would show a returned message a
 * second time). */
static int error_values(GimpRunMode run_mode, GError *error, GimpParam *values, char **message) {
    gimp_message(error->message);
    if (run_mode == GIMP_RUN_INTERACTIVE) return 1;
    *message = g_strdup(error->message);
    values[1].type = GIMP_PDB_STRING;
    values[1].data.d_string = *message;
    return 2;
}

static void run(const gchar *name, gint n_params, const GimpParam *params, gint *n_return_values,
                GimpParam **return_values) {
    (void)name;
    static GimpParam values[4];
    static char *message = NULL;   /* must outlive run(): libgimp sends it afterwards */
    g_clear_pointer(&message, g_free);
    *n_return_values = 1;
    *return_values = values;
    values[0].type = GIMP_PDB_STATUS;
    GimpPDBStatusType status = GIMP_PDB_SUCCESS;
    GError *error = NULL;

    gegl_init(NULL, NULL);
    const GimpRunMode run_mode = n_params > 0 ? params[ARG_RUN_MODE].data.d_int32
                                              : GIMP_RUN_NONINTERACTIVE;
    const gint32 image = params[ARG_IMAGE].data.d_image;
    const gint32 drawable = params[ARG_DRAWABLE].data.d_drawable;
    cs_gimp_settings settings;
    cs_gimp_outcome outcome = {-1, 0, NULL};
    if (!settings_for_run(run_mode, n_params, params, &settings, &status, &error)) {
        /* status set */
    } else if (run_mode == GIMP_RUN_INTERACTIVE) {
        if (!run_dialog(image, drawable, &settings, &outcome)) status = GIMP_PDB_CANCEL;
    } else if (!cs_gimp_segment(image, drawable, &settings, &outcome, &error)) {
        status = GIMP_PDB_EXECUTION_ERROR;
    }
    if (status == GIMP_PDB_SUCCESS)
        *n_return_values = success_values(run_mode, &outcome, values, &message);
    else if (error)
        *n_return_values = error_values(run_mode, error, values, &message);
    g_clear_error(&error);
    values[0].data.d_status = status;
}

/* ---- cs_gimp_host_*: GIMP 2.10's calls for the shared image work ------------------------ */

cs_gimp_base cs_gimp_host_image_base(gint32 image) {
    switch (gimp_image_base_type(image)) {
    case GIMP_GRAY: return CS_GIMP_BASE_GRAY;
    case GIMP_INDEXED: return CS_GIMP_BASE_INDEXED;
    default: return CS_GIMP_BASE_RGB;
    }
}

GeglRectangle cs_gimp_host_drawable_bounds(gint32 drawable) {
    GeglRectangle bounds = {0, 0, gimp_drawable_width(drawable), gimp_drawable_height(drawable)};
    gimp_drawable_offsets(drawable, &bounds.x, &bounds.y);
    return bounds;
}

const Babl *cs_gimp_host_drawable_format(gint32 drawable) {
    return gimp_drawable_get_format(drawable);
}

GeglBuffer *cs_gimp_host_drawable_buffer(gint32 drawable) {
    return gimp_drawable_get_buffer(drawable);
}

GeglBuffer *cs_gimp_host_drawable_shadow_buffer(gint32 drawable) {
    return gimp_drawable_get_shadow_buffer(drawable);
}

void cs_gimp_host_drawable_merge_shadow(gint32 drawable) {
    gimp_drawable_merge_shadow(drawable, TRUE);
}

void cs_gimp_host_drawable_update(gint32 drawable) {
    gimp_drawable_update(drawable, 0, 0, gimp_drawable_width(drawable),
                         gimp_drawable_height(drawable));
}

gboolean cs_gimp_host_is_layer(gint32 drawable) { return gimp_item_is_layer(drawable); }

gint32 cs_gimp_host_layer_of_mask(gint32 drawable) {
    return gimp_item_is_layer_mask(drawable) ? gimp_layer_from_mask(drawable) : -1;
}

gint32 cs_gimp_host_layer_mask(gint32 layer) { return gimp_layer_get_mask(layer); }

gint32 cs_gimp_host_add_layer_mask(gint32 layer) {
    const gint32 mask = gimp_layer_create_mask(layer, GIMP_ADD_MASK_WHITE);
    gimp_layer_add_mask(layer, mask);
    return mask;
}

gint32 cs_gimp_host_insert_layer(gint32 image, const char *name, GeglRectangle bounds,
                                 gint32 above, double opacity) {
    const GimpImageType type =
        gimp_image_base_type(image) == GIMP_GRAY ? GIMP_GRAY_IMAGE : GIMP_RGB_IMAGE;
    const gint32 layer = gimp_layer_new(image, name, bounds.width, bounds.height, type, opacity,
                                        GIMP_LAYER_MODE_SCREEN);
    gint32 parent = 0;
    gint position = 0;
    if (gimp_item_is_layer(above)) {
        parent = MAX(gimp_item_get_parent(above), 0);
        position = gimp_image_get_item_position(image, above);
    }
    gimp_image_insert_layer(image, layer, parent, position);
    gimp_layer_set_offsets(layer, bounds.x, bounds.y);
    return layer;
}

gint32 cs_gimp_host_insert_channel(gint32 image, const char *name) {
    const GimpRGB black = {0.0, 0.0, 0.0, 1.0};
    const gint32 channel = gimp_channel_new(image, name, gimp_image_width(image),
                                            gimp_image_height(image), 50.0, &black);
    gimp_image_insert_channel(image, channel, 0, 0);
    return channel;
}

void cs_gimp_host_select_channel_and_remove(gint32 image, gint32 channel) {
    /* The mask exactly: no feathering or antialiasing from the user's tool options. */
    gimp_context_push();
    gimp_context_set_feather(FALSE);
    gimp_context_set_antialias(FALSE);
    gimp_image_select_item(image, GIMP_CHANNEL_OP_REPLACE, channel);
    gimp_context_pop();
    gimp_image_remove_channel(image, channel);
}

gint32 cs_gimp_host_selection(gint32 image) { return gimp_image_get_selection(image); }

void cs_gimp_host_undo_group_start(gint32 image) { gimp_image_undo_group_start(image); }

void cs_gimp_host_undo_group_end(gint32 image) { gimp_image_undo_group_end(image); }

void cs_gimp_host_progress_init(const char *message) { gimp_progress_init(message); }

void cs_gimp_host_progress(double fraction) { gimp_progress_update(fraction); }
