/* condseg_gimp2.c — the GIMP 2.10 front end of the ConDSeg plug-in (libgimp-2.0, GTK2).
 *
 * Registers the PDB procedure plug-in-condseg under Filters > Medical, gets its settings
 * (dialog, arguments or last values, by run mode) and hands the image work to
 * cs_gimp_segment (condseg_gimp_common.c). The cs_gimp_host_* functions at the end give
 * that shared code GIMP 2.10's item-id API.
 *
 *   (plug-in-condseg RUN-NONINTERACTIVE image drawable "weights.safetensors" 0.5 0 0)
 */
#include <string.h>

#include <libgimp/gimp.h>
#include <libgimp/gimpui.h>

#include "condseg.h"
#include "condseg_gimp_common.h"

/* Arguments of plug-in-condseg, in order. New ones go at the end, so that a script's
 * arguments keep their places; the device came last. */
enum {
    ARG_RUN_MODE,
    ARG_IMAGE,
    ARG_DRAWABLE,
    ARG_WEIGHTS,
    ARG_THRESHOLD,
    ARG_OUTPUT,
    ARG_DEVICE,
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
         "Output { LAYER-MASK (0), SELECTION (1), PROBABILITY-LAYER (2), UNCERTAINTY-LAYER (3) }"},
        {GIMP_PDB_INT32, "device",
         "Where the network runs { AUTO (0): an NVIDIA GPU when one is usable, else the CPU; "
         "CPU (1); CUDA (2): an NVIDIA GPU, an error saying why when there is none }"},
    };
    static const GimpParamDef return_values[] = {
        {GIMP_PDB_DRAWABLE, "result", "The layer mask, selection channel or new layer written"},
    };
    gimp_install_procedure(CS_GIMP_PROC, CS_GIMP_BLURB, CS_GIMP_HELP, CS_GIMP_AUTHOR,
                           CS_GIMP_AUTHOR, CS_GIMP_DATE, CS_GIMP_MENU_LABEL, CS_GIMP_IMAGE_TYPES,
                           GIMP_PLUGIN, G_N_ELEMENTS(args), G_N_ELEMENTS(return_values), args,
                           return_values);
    gimp_plugin_menu_register(CS_GIMP_PROC, CS_GIMP_MENU_PATH);
}

/* ---- the dialog --------------------------------------------------------------------- */

typedef struct {
    cs_gimp_settings *settings;
    GtkObject *threshold_scale;
} dialog_state;

/* An output radio button was toggled: keep the choice; the threshold only matters for
 * the mask outputs. */
static void output_toggled(GtkWidget *button, dialog_state *state) {
    if (!gtk_toggle_button_get_active(GTK_TOGGLE_BUTTON(button))) return;
    state->settings->output = GPOINTER_TO_INT(g_object_get_data(G_OBJECT(button),
                                                                "gimp-item-data"));
    if (state->threshold_scale)
        gimp_scale_entry_set_sensitive(state->threshold_scale,
                                       state->settings->output == CS_GIMP_OUTPUT_LAYER_MASK ||
                                           state->settings->output == CS_GIMP_OUTPUT_SELECTION);
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
    gtk_file_chooser_button_set_width_chars(GTK_FILE_CHOOSER_BUTTON(chooser), 32);
    return chooser;
}

/* A line under the file chooser saying what an empty choice means. */
static GtkWidget *default_model_note_new(void) {
    char *weights = cs_default_weights_path();
    char *basename = weights ? g_path_get_basename(weights) : NULL;
    char *text = weights ? g_markup_printf_escaped("<small>Installed default model: %s</small>",
                                                   basename)
                         : g_strdup("<small>No default model installed: choose a .safetensors "
                                    "weights file.</small>");
    GtkWidget *note = gtk_label_new(NULL);
    gtk_label_set_markup(GTK_LABEL(note), text);
    gtk_misc_set_alignment(GTK_MISC(note), 0.0, 0.5);
    if (weights) gtk_widget_set_tooltip_text(note, weights);
    g_free(text);
    g_free(basename);
    g_free(weights);
    return note;
}

/* The device choice, as a combo box: three fixed entries that need no more room. */
static GtkWidget *device_combo_new(cs_gimp_settings *settings) {
    GtkWidget *combo = gimp_int_combo_box_new(
        cs_gimp_device_names[CS_GIMP_DEVICE_AUTO].label, CS_GIMP_DEVICE_AUTO,
        cs_gimp_device_names[CS_GIMP_DEVICE_CPU].label, CS_GIMP_DEVICE_CPU,
        cs_gimp_device_names[CS_GIMP_DEVICE_CUDA].label, CS_GIMP_DEVICE_CUDA, NULL);
    gimp_int_combo_box_connect(GIMP_INT_COMBO_BOX(combo), settings->device,
                               G_CALLBACK(gimp_int_combo_box_get_active), &settings->device);
    gimp_help_set_help_data(combo,
                            "Automatic: an NVIDIA GPU when one is usable, else the CPU. "
                            "NVIDIA GPU: fails, saying why, when there is none.",
                            NULL);
    return combo;
}

/* Shows the dialog; on OK the settings hold what was chosen. */
static gboolean run_dialog(cs_gimp_settings *settings) {
    gimp_ui_init(CS_GIMP_BINARY, FALSE);
    GtkWidget *dialog = gimp_dialog_new(CS_GIMP_TITLE, CS_GIMP_ROLE, NULL, 0,
                                        gimp_standard_help_func, CS_GIMP_PROC, "_Cancel",
                                        GTK_RESPONSE_CANCEL, "_OK", GTK_RESPONSE_OK, NULL);
    gtk_dialog_set_alternative_button_order(GTK_DIALOG(dialog), GTK_RESPONSE_OK,
                                            GTK_RESPONSE_CANCEL, -1);
    gimp_window_set_transient(GTK_WINDOW(dialog));

    GtkWidget *vbox = gtk_vbox_new(FALSE, 12);
    gtk_container_set_border_width(GTK_CONTAINER(vbox), 12);
    gtk_box_pack_start(GTK_BOX(gtk_dialog_get_content_area(GTK_DIALOG(dialog))), vbox, TRUE,
                       TRUE, 0);

    GtkWidget *weights_table = gtk_table_new(2, 2, FALSE);
    gtk_table_set_col_spacings(GTK_TABLE(weights_table), 6);
    gtk_table_set_row_spacings(GTK_TABLE(weights_table), 2);
    gtk_box_pack_start(GTK_BOX(vbox), weights_table, FALSE, FALSE, 0);
    GtkWidget *chooser = weights_chooser_new(settings->weights);
    gimp_table_attach_aligned(GTK_TABLE(weights_table), 0, 0, "_Weights:", 0.0, 0.5, chooser, 1,
                              FALSE);
    gtk_table_attach(GTK_TABLE(weights_table), default_model_note_new(), 1, 2, 1, 2, GTK_FILL,
                     GTK_FILL, 0, 0);

    /* All four outputs in sight: the uncertainty map is the one no other tool gives. */
    dialog_state state = {settings, NULL};
    GtkWidget *buttons[CS_GIMP_N_OUTPUTS];
    GtkWidget *outputs = gimp_int_radio_group_new(
        TRUE, "Output", G_CALLBACK(output_toggled), &state, settings->output,
        cs_gimp_output_names[0].label, 0, &buttons[0], cs_gimp_output_names[1].label, 1,
        &buttons[1], cs_gimp_output_names[2].label, 2, &buttons[2],
        cs_gimp_output_names[3].label, 3, &buttons[3], NULL);
    for (int i = 0; i < CS_GIMP_N_OUTPUTS; i++)
        gimp_help_set_help_data(buttons[i], cs_gimp_output_names[i].help, NULL);
    gtk_box_pack_start(GTK_BOX(vbox), outputs, FALSE, FALSE, 0);

    GtkWidget *threshold_table = gtk_table_new(1, 3, FALSE);
    gtk_table_set_col_spacings(GTK_TABLE(threshold_table), 6);
    gtk_box_pack_start(GTK_BOX(vbox), threshold_table, FALSE, FALSE, 0);
    state.threshold_scale = gimp_scale_entry_new(
        GTK_TABLE(threshold_table), 0, 0, "_Threshold:", 200, 5, settings->threshold, 0.0, 1.0,
        0.01, 0.1, 2, TRUE, 0, 0, "Probability above which a pixel belongs to the mask", NULL);
    g_signal_connect(state.threshold_scale, "value-changed",
                     G_CALLBACK(gimp_double_adjustment_update), &settings->threshold);
    output_toggled(buttons[CLAMP(settings->output, 0, CS_GIMP_N_OUTPUTS - 1)], &state);

    GtkWidget *device_table = gtk_table_new(1, 2, FALSE);
    gtk_table_set_col_spacings(GTK_TABLE(device_table), 6);
    gtk_box_pack_start(GTK_BOX(vbox), device_table, FALSE, FALSE, 0);
    gimp_table_attach_aligned(GTK_TABLE(device_table), 0, 0, "_Device:", 0.0, 0.5,
                              device_combo_new(settings), 1, FALSE);

    gtk_widget_show_all(dialog);
    const gboolean ok = gimp_dialog_run(GIMP_DIALOG(dialog)) == GTK_RESPONSE_OK;
    if (ok) {
        char *weights = gtk_file_chooser_get_filename(GTK_FILE_CHOOSER(chooser));
        g_strlcpy(settings->weights, weights ? weights : "", sizeof settings->weights);
        g_free(weights);
    }
    gtk_widget_destroy(dialog);
    return ok;
}

/* ---- run ------------------------------------------------------------------------------ */

/* The last values of an interactive run, when there are some of this version's layout. */
static void load_last_settings(cs_gimp_settings *settings) {
    cs_gimp_settings last;
    if (gimp_get_data_size(CS_GIMP_SETTINGS_KEY) != sizeof last) return;
    gimp_get_data(CS_GIMP_SETTINGS_KEY, &last);
    const gboolean valid = memchr(last.weights, '\0', sizeof last.weights) != NULL &&
                           last.threshold >= 0.0 && last.threshold <= 1.0 && last.output >= 0 &&
                           last.output < CS_GIMP_N_OUTPUTS && last.device >= 0 &&
                           last.device < CS_GIMP_N_DEVICES;
    if (valid) *settings = last;
}

/* `n_params` may stop before the device (see run()): the device is then automatic. */
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
    return TRUE;
}

static void run(const gchar *name, gint n_params, const GimpParam *params, gint *n_return_values,
                GimpParam **return_values) {
    (void)name;
    static GimpParam values[2];
    static char *error_message = NULL;   /* must outlive run(): libgimp sends it afterwards */
    *n_return_values = 1;
    *return_values = values;
    values[0].type = GIMP_PDB_STATUS;
    GimpPDBStatusType status = GIMP_PDB_SUCCESS;
    GError *error = NULL;

    gegl_init(NULL, NULL);
    const GimpRunMode run_mode = n_params > 0 ? params[ARG_RUN_MODE].data.d_int32
                                              : GIMP_RUN_NONINTERACTIVE;
    cs_gimp_settings settings;
    cs_gimp_settings_init(&settings);
    switch (run_mode) {
    case GIMP_RUN_INTERACTIVE:
        load_last_settings(&settings);
        if (!run_dialog(&settings)) status = GIMP_PDB_CANCEL;
        break;
    case GIMP_RUN_NONINTERACTIVE:
        /* The argument list before the device came is still taken (callers that pass
         * their own count, as C plug-ins can), with the device automatic. */
        if (n_params != N_ARGS && n_params != ARG_DEVICE) {
            g_set_error(&error, CS_ERROR, CS_ERROR_ARG,
                        "ConDSeg: %s takes %d arguments, not %d", CS_GIMP_PROC, N_ARGS, n_params);
            status = GIMP_PDB_CALLING_ERROR;
        } else if (!settings_from_args(n_params, params, &settings, &error)) {
            status = GIMP_PDB_CALLING_ERROR;
        }
        break;
    case GIMP_RUN_WITH_LAST_VALS: load_last_settings(&settings); break;
    default: status = GIMP_PDB_CALLING_ERROR; break;
    }

    gint32 result = -1;
    if (status == GIMP_PDB_SUCCESS &&
        !cs_gimp_segment(params[ARG_IMAGE].data.d_image, params[ARG_DRAWABLE].data.d_drawable,
                         &settings, &result, &error))
        status = GIMP_PDB_EXECUTION_ERROR;

    if (status == GIMP_PDB_SUCCESS) {
        if (run_mode != GIMP_RUN_NONINTERACTIVE) gimp_displays_flush();
        if (run_mode == GIMP_RUN_INTERACTIVE)
            gimp_set_data(CS_GIMP_SETTINGS_KEY, &settings, sizeof settings);
        values[1].type = GIMP_PDB_DRAWABLE;
        values[1].data.d_drawable = result;
        *n_return_values = 2;
    } else if (error) {
        gimp_message(error->message);
        /* A calling script gets the reason with the error status; an interactive run has
         * shown it already (GIMP would show a returned message a second time). */
        if (run_mode != GIMP_RUN_INTERACTIVE) {
            g_free(error_message);
            error_message = g_strdup(error->message);
            values[1].type = GIMP_PDB_STRING;
            values[1].data.d_string = error_message;
            *n_return_values = 2;
        }
        g_error_free(error);
    }
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
                                 gint32 above) {
    const GimpImageType type =
        gimp_image_base_type(image) == GIMP_GRAY ? GIMP_GRAY_IMAGE : GIMP_RGB_IMAGE;
    const gint32 layer = gimp_layer_new(image, name, bounds.width, bounds.height, type, 100.0,
                                        GIMP_LAYER_MODE_NORMAL);
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
