/* condseg_gimp3.c — the GIMP 3 front end of the ConDSeg plug-in (libgimp-3.0, GTK3).
 *
 * A GimpPlugIn subclass that registers the image procedure plug-in-condseg under
 * Filters > Medical with its arguments (GIMP 3 keeps the last values in the procedure's
 * config and builds the dialog from them), and hands the image work to cs_gimp_segment
 * (condseg_gimp_common.c). The cs_gimp_host_* functions at the end give that shared code
 * GIMP 3's object API, reached from the integer ids the shared code uses.
 *
 *   (plug-in-condseg #:run-mode RUN-NONINTERACTIVE #:image image #:drawables (vector layer)
 *                    #:weights "weights.safetensors" #:threshold 0.5 #:output "layer-mask"
 *                    #:device "auto" #:precision "fp32" #:tta #f)
 *   (plug-in-condseg RUN-NONINTERACTIVE image (vector layer) "weights.safetensors" 0.5
 *                    "layer-mask" "auto" "fp32" #f)
 */
#include <string.h>

#include <libgimp/gimp.h>
#include <libgimp/gimpui.h>

#include "condseg.h"
#include "condseg_gimp_common.h"
#include "condseg_gimp_dialog.h"

typedef struct {
    GimpPlugIn parent_instance;
} CondsegPlugIn;

typedef struct {
    GimpPlugInClass parent_class;
} CondsegPlugInClass;

#define CONDSEG_TYPE_PLUG_IN (condseg_plug_in_get_type())
GType condseg_plug_in_get_type(void);
G_DEFINE_TYPE(CondsegPlugIn, condseg_plug_in, GIMP_TYPE_PLUG_IN)

static GimpValueArray *run(GimpProcedure *procedure, GimpRunMode run_mode, GimpImage *image,
                           GimpDrawable **drawables, GimpProcedureConfig *config,
                           gpointer run_data);

/* libgimp's GIMP_MAIN() with the OpenBLAS kernel choice in front (see cs_gimp_startup). */
int main(int argc, char *argv[]) {
    cs_gimp_startup(argv);
    return gimp_main(CONDSEG_TYPE_PLUG_IN, argc, argv);
}

/* ---- registration ----------------------------------------------------------------------- */

static GList *query_procedures(GimpPlugIn *plug_in) {
    (void)plug_in;
    return g_list_append(NULL, g_strdup(CS_GIMP_PROC));
}

static GimpProcedure *create_procedure(GimpPlugIn *plug_in, const gchar *name) {
    if (strcmp(name, CS_GIMP_PROC) != 0) return NULL;
    GimpProcedure *procedure = gimp_image_procedure_new(plug_in, name, GIMP_PDB_PROC_TYPE_PLUGIN,
                                                        run, NULL, NULL);
    gimp_procedure_set_image_types(procedure, CS_GIMP_IMAGE_TYPES);
    gimp_procedure_set_sensitivity_mask(procedure, GIMP_PROCEDURE_SENSITIVE_DRAWABLE);
    gimp_procedure_set_menu_label(procedure, CS_GIMP_MENU_LABEL);
    gimp_procedure_add_menu_path(procedure, CS_GIMP_MENU_PATH);
    gimp_procedure_set_documentation(procedure, CS_GIMP_BLURB, CS_GIMP_HELP, name);
    gimp_procedure_set_attribution(procedure, CS_GIMP_AUTHOR, CS_GIMP_AUTHOR, CS_GIMP_DATE);

    /* No default file: GIMP caches defaults at registration, and the installed default
     * model is looked up at run time instead (a model installed later is found). */
    gimp_procedure_add_file_argument(
        procedure, "weights", "_Weights",
        "Weights file (.safetensors) of a ConDSeg or stage-1 network; none for the installed "
        "default model",
        GIMP_FILE_CHOOSER_ACTION_OPEN, TRUE, NULL, G_PARAM_READWRITE);
    /* The order of GIMP 2.10's arguments, so that positional calls read the same. */
    gimp_procedure_add_double_argument(
        procedure, "threshold", "_Threshold",
        "Probability above which a pixel is foreground (0.5 as condseg predict; used by the "
        "mask outputs)",
        0.0, 1.0, 0.5, G_PARAM_READWRITE);
    GimpChoice *outputs = gimp_choice_new_with_values(
        cs_gimp_output_names[0].nick, 0, cs_gimp_output_names[0].label,
        cs_gimp_output_names[0].help, cs_gimp_output_names[1].nick, 1,
        cs_gimp_output_names[1].label, cs_gimp_output_names[1].help,
        cs_gimp_output_names[2].nick, 2, cs_gimp_output_names[2].label,
        cs_gimp_output_names[2].help, cs_gimp_output_names[3].nick, 3,
        cs_gimp_output_names[3].label, cs_gimp_output_names[3].help,
        cs_gimp_output_names[4].nick, 4, cs_gimp_output_names[4].label,
        cs_gimp_output_names[4].help, NULL);
    gimp_procedure_add_choice_argument(procedure, "output", "_Output", "Where the result goes",
                                       outputs, cs_gimp_output_names[0].nick, G_PARAM_READWRITE);
    /* Last, as in GIMP 2.10, where it came after the others. */
    GimpChoice *devices = gimp_choice_new_with_values(
        cs_gimp_device_names[0].nick, 0, cs_gimp_device_names[0].label,
        cs_gimp_device_names[0].help, cs_gimp_device_names[1].nick, 1,
        cs_gimp_device_names[1].label, cs_gimp_device_names[1].help,
        cs_gimp_device_names[2].nick, 2, cs_gimp_device_names[2].label,
        cs_gimp_device_names[2].help, NULL);
    gimp_procedure_add_choice_argument(
        procedure, "device", "_Device",
        "Where the network runs: \"auto\" (an NVIDIA GPU when one is usable, else the CPU), "
        "\"cpu\" or \"cuda\" (an NVIDIA GPU; an error saying why when there is none)",
        devices, cs_gimp_device_names[CS_GIMP_DEVICE_AUTO].nick, G_PARAM_READWRITE);
    /* Last again: scripts written before it keep working. */
    GimpChoice *precisions = gimp_choice_new_with_values(
        cs_gimp_precision_names[0].nick, 0, cs_gimp_precision_names[0].label,
        cs_gimp_precision_names[0].help, cs_gimp_precision_names[1].nick, 1,
        cs_gimp_precision_names[1].label, cs_gimp_precision_names[1].help, NULL);
    gimp_procedure_add_choice_argument(
        procedure, "precision", "_Precision",
        "Arithmetic of the convolutions: \"fp32\" (float32, the default) or \"bf16\" (bfloat16 "
        "inputs with float32 sums, faster on CPUs with bf16 instructions, else float32)",
        precisions, cs_gimp_precision_names[CS_GIMP_PRECISION_FP32].nick, G_PARAM_READWRITE);
    /* Last again. */
    gimp_procedure_add_boolean_argument(procedure, "tta", CS_GIMP_TTA_LABEL,
                                        CS_GIMP_TTA_HELP " (default off)", FALSE,
                                        G_PARAM_READWRITE);
    gimp_procedure_add_drawable_return_value(
        procedure, "result", "Result",
        "The layer mask, selection channel or new layer written; none when a mask output found "
        "no lesion (the image is then unchanged)",
        TRUE, G_PARAM_READWRITE);
    gimp_procedure_add_double_return_value(
        procedure, "marked-percent", "Marked percent",
        "Share of the drawable's pixels marked at the threshold, in percent", 0.0, 100.0, 0.0,
        G_PARAM_READWRITE);
    gimp_procedure_add_string_return_value(procedure, "verdict", "Verdict",
                                           "What was found and written, in a sentence or two",
                                           NULL, G_PARAM_READWRITE);
    return procedure;
}

/* The plug-in ships no translations (GIMP would look for a catalog and say so). */
static gboolean set_i18n(GimpPlugIn *plug_in, const gchar *procedure_name,
                         gchar **gettext_domain, gchar **catalog_dir) {
    (void)plug_in, (void)procedure_name, (void)gettext_domain, (void)catalog_dir;
    return FALSE;
}

static void condseg_plug_in_class_init(CondsegPlugInClass *klass) {
    GimpPlugInClass *plug_in_class = GIMP_PLUG_IN_CLASS(klass);
    plug_in_class->query_procedures = query_procedures;
    plug_in_class->create_procedure = create_procedure;
    plug_in_class->set_i18n = set_i18n;
}

static void condseg_plug_in_init(CondsegPlugIn *plug_in) { (void)plug_in; }

/* ---- settings ------------------------------------------------------------------------- */

static gboolean settings_from_config(GimpProcedureConfig *config, cs_gimp_settings *settings,
                                     GError **error) {
    GFile *file = NULL;
    gboolean tta = FALSE;
    memset(settings, 0, sizeof *settings);
    g_object_get(config, "weights", &file, "threshold", &settings->threshold, "tta", &tta, NULL);
    settings->tta = tta ? 1 : 0;
    settings->output = gimp_procedure_config_get_choice_id(config, "output");
    settings->device = gimp_procedure_config_get_choice_id(config, "device");
    settings->precision = gimp_procedure_config_get_choice_id(config, "precision");
    char *path = file ? g_file_get_path(file) : NULL;
    /* Script-Fu turns "" into a file without a path or URI: no file, as NULL is. */
    char *uri = file && !path ? g_file_get_uri(file) : NULL;
    gboolean ok = TRUE;
    if (uri && uri[0]) {
        g_set_error(error, CS_ERROR, CS_ERROR_IO,
                    "ConDSeg: the weights must be a local file, not %s", uri);
        ok = FALSE;
    } else if (path && strlen(path) >= sizeof settings->weights) {
        g_set_error(error, CS_ERROR, CS_ERROR_ARG, "ConDSeg: the weights file name is too long");
        ok = FALSE;
    } else {
        g_strlcpy(settings->weights, path ? path : "", sizeof settings->weights);
    }
    g_free(uri);
    g_free(path);
    g_clear_object(&file);
    return ok;
}

/* ---- the dialog --------------------------------------------------------------------- */

typedef struct {
    cs_gimp_dialog d;               /* the kept answer and its labels (condseg_gimp_dialog.h) */
    GimpProcedureConfig *config;
    cs_gimp_settings settings;      /* the config's values, as the shared code takes them */
    gboolean settings_ok;
    GtkWidget *dialog;
} dialog_state;

/* The settings for the shared dialog code: NULL while the config's are not valid. */
static const cs_gimp_settings *valid_settings(const dialog_state *state) {
    return state->settings_ok ? &state->settings : NULL;
}

static void preview_invalidated(GimpPreview *preview, dialog_state *state) {
    (void)preview;
    cs_gimp_dialog_preview_invalidated(&state->d, valid_settings(state));
}

/* A value of the config changed: redraw at once when the kept answer still fits, else let
 * the preview run the network (only while its Preview box is ticked). */
static void config_changed(GObject *config, GParamSpec *pspec, dialog_state *state) {
    GError *error = NULL;
    state->settings_ok = settings_from_config(GIMP_PROCEDURE_CONFIG(config), &state->settings,
                                              &error);
    if (error) {
        cs_gimp_dialog_set_verdict(&state->d, error->message, TRUE);
        g_error_free(error);
    }
    /* The notes only for what they are about: the device forecast may probe for a GPU. */
    if (strcmp(pspec->name, "weights") == 0)
        cs_gimp_dialog_update_model_note(&state->d, state->settings.weights);
    if (strcmp(pspec->name, "device") == 0)
        cs_gimp_dialog_update_device_note(&state->d, state->settings.device);
    cs_gimp_dialog_settings_changed(&state->d, valid_settings(state));
}

static void default_model_clicked(GtkButton *button, dialog_state *state) {
    (void)button;
    char *installed = cs_default_weights_path();
    if (installed) {
        GFile *file = g_file_new_for_path(installed);
        g_object_set(state->config, "weights", file, NULL);
        g_object_unref(file);
    }
    g_free(installed);
}

/* The Help button's response, taken before GimpDialog's own handler (which would look for
 * the manual). */
static void dialog_response(GtkDialog *dialog, gint response, dialog_state *state) {
    (void)state;
    if (response != GTK_RESPONSE_HELP) return;
    g_signal_stop_emission_by_name(dialog, "response");
    cs_gimp_dialog_show_help(GTK_WIDGET(dialog));
}

/* F1: GIMP connects the manual to it; ours replaces that. */
static gboolean dialog_show_help(GtkWidget *dialog, GtkWidgetHelpType type, dialog_state *state) {
    (void)type, (void)state;
    cs_gimp_dialog_show_help(dialog);
    return TRUE;
}

/* The Help button: GimpDialog's own "clicked" handlers open the manual; ours replace them. */
static void connect_help_button(GtkWidget *dialog) {
    GtkWidget *button = gtk_dialog_get_widget_for_response(GTK_DIALOG(dialog), GTK_RESPONSE_HELP);
    if (!button) return;
    g_signal_handlers_disconnect_matched(button, G_SIGNAL_MATCH_ID,
                                         g_signal_lookup("clicked", GTK_TYPE_BUTTON), 0, NULL,
                                         NULL, NULL);
    g_signal_connect_swapped(button, "clicked", G_CALLBACK(cs_gimp_dialog_show_help), dialog);
}

static void connect_help(GtkWidget *dialog, dialog_state *state) {
    connect_help_button(dialog);
    g_signal_connect(dialog, "response", G_CALLBACK(dialog_response), state);
    g_signal_handlers_disconnect_matched(dialog, G_SIGNAL_MATCH_ID,
                                         g_signal_lookup("show-help", GTK_TYPE_WIDGET), 0, NULL,
                                         NULL, NULL);
    g_signal_connect(dialog, "show-help", G_CALLBACK(dialog_show_help), state);
}

static GtkWidget *small_label(const char *markup) {
    GtkWidget *label = gtk_label_new(NULL);
    gtk_label_set_markup(GTK_LABEL(label), markup);
    gtk_label_set_xalign(GTK_LABEL(label), 0.0);
    gtk_label_set_line_wrap(GTK_LABEL(label), TRUE);
    gtk_label_set_max_width_chars(GTK_LABEL(label), 50);
    return label;
}

/* Left: the preview and the verdict under it. */
static GtkWidget *preview_column_new(dialog_state *state) {
    GtkWidget *box = gtk_box_new(GTK_ORIENTATION_VERTICAL, 6);
    const gint32 owner = cs_gimp_host_layer_of_mask(state->d.drawable);
    state->d.preview = gimp_zoom_preview_new_from_drawable(
        gimp_drawable_get_by_id(owner != -1 ? owner : state->d.drawable));
    gtk_box_pack_start(GTK_BOX(box), state->d.preview, TRUE, TRUE, 0);
    g_signal_connect(state->d.preview, "invalidated", G_CALLBACK(preview_invalidated), state);
    state->d.verdict = small_label("");
    gtk_label_set_max_width_chars(GTK_LABEL(state->d.verdict), 40);
    gtk_box_pack_start(GTK_BOX(box), state->d.verdict, FALSE, FALSE, 0);
    gtk_widget_show_all(box);
    return box;
}

/* The widgets GIMP does not make from the arguments, packed into the boxes it made. */
static void add_own_widgets(dialog_state *state, GtkWidget *settings_box) {
    GtkWidget *row = gtk_box_new(GTK_ORIENTATION_HORIZONTAL, 6);
    state->d.model_note = small_label("");
    gtk_box_pack_start(GTK_BOX(row), state->d.model_note, TRUE, TRUE, 0);
    GtkWidget *reset = gtk_button_new_with_mnemonic("De_fault model");
    gtk_widget_set_tooltip_text(reset, "Back to the installed default model");
    g_signal_connect(reset, "clicked", G_CALLBACK(default_model_clicked), state);
    char *installed = cs_default_weights_path();
    gtk_widget_set_sensitive(reset, installed != NULL);
    g_free(installed);
    gtk_box_pack_end(GTK_BOX(row), reset, FALSE, FALSE, 0);
    gtk_box_pack_start(GTK_BOX(settings_box), row, FALSE, FALSE, 0);
    gtk_box_reorder_child(GTK_BOX(settings_box), row, 1);   /* under the weights */
    state->d.device_note = small_label("");
    gtk_box_pack_start(GTK_BOX(settings_box), state->d.device_note, FALSE, FALSE, 0);
    gtk_box_pack_start(GTK_BOX(settings_box), small_label(CS_GIMP_DIALOG_PREVIEW_NOTE), FALSE,
                       FALSE, 0);
    const char *warning = cs_gimp_input_warning(state->d.image);
    if (warning) {
        char *markup = g_markup_printf_escaped("<span foreground=\"#e08000\">%s</span>", warning);
        gtk_box_pack_start(GTK_BOX(settings_box), small_label(markup), FALSE, FALSE, 0);
        g_free(markup);
    }
    gtk_widget_show_all(settings_box);
    cs_gimp_dialog_update_model_note(&state->d, state->settings.weights);
    cs_gimp_dialog_update_device_note(&state->d, state->settings.device);
}

/* The threshold's entry: Return in it runs the filter, and it has the focus. */
static GtkWidget *threshold_entry(GimpProcedureDialog *dialog) {
    GtkWidget *scale = gimp_procedure_dialog_get_scale_entry(dialog, "threshold", 1.0);
    GtkWidget *spin = gimp_label_spin_get_spin_button(GIMP_LABEL_SPIN(scale));
    gtk_entry_set_activates_default(GTK_ENTRY(spin), TRUE);
    return spin;
}

static GtkWidget *dialog_new(GimpProcedure *procedure, dialog_state *state) {
    gimp_ui_init(CS_GIMP_BINARY);
    GtkWidget *dialog = gimp_procedure_dialog_new(procedure, state->config, CS_GIMP_TITLE);
    GimpProcedureDialog *pd = GIMP_PROCEDURE_DIALOG(dialog);
    state->dialog = dialog;
    /* The threshold is used by every output now: the verdict counts the marked pixels. */
    gimp_procedure_dialog_get_widget(pd, "output", GIMP_TYPE_INT_RADIO_FRAME);
    GtkWidget *spin = threshold_entry(pd);
    GtkWidget *settings_box = gimp_procedure_dialog_fill_box(pd, "settings-box", "weights",
                                                             "output", "threshold", "device",
                                                             "precision", "tta", NULL);
    GtkWidget *main_box = gimp_procedure_dialog_fill_box(pd, "main-box", "settings-box", NULL);
    gtk_orientable_set_orientation(GTK_ORIENTABLE(main_box), GTK_ORIENTATION_HORIZONTAL);
    gtk_box_set_spacing(GTK_BOX(main_box), 12);
    GtkWidget *preview_column = preview_column_new(state);
    gtk_box_pack_start(GTK_BOX(main_box), preview_column, TRUE, TRUE, 0);
    gtk_box_reorder_child(GTK_BOX(main_box), preview_column, 0);
    add_own_widgets(state, settings_box);
    gimp_procedure_dialog_fill(pd, "main-box", NULL);
    gtk_dialog_set_default_response(GTK_DIALOG(dialog), GTK_RESPONSE_OK);
    connect_help(dialog, state);
    g_signal_connect(state->config, "notify", G_CALLBACK(config_changed), state);
    gtk_widget_grab_focus(spin);
    return dialog;
}

/* Shows the dialog until a run succeeds (TRUE, `outcome` filled) or it is cancelled. A
 * failed run leaves the dialog open, with the reason in it and the values as chosen
 * (GIMP 3 keeps the config's values only after a successful run). */
static gboolean run_dialog(GimpProcedure *procedure, GimpProcedureConfig *config, gint32 image,
                           gint32 drawable, cs_gimp_outcome *outcome) {
    dialog_state state = {
        .d = {.image = image, .drawable = drawable, .error_colour = "#e04040"}, .config = config};
    GError *error = NULL;
    state.settings_ok = settings_from_config(config, &state.settings, &error);
    g_clear_error(&error);
    GtkWidget *dialog = dialog_new(procedure, &state);
    gboolean ok = FALSE;
    while (!ok && gimp_procedure_dialog_run(GIMP_PROCEDURE_DIALOG(dialog)))
        ok = cs_gimp_dialog_apply(&state.d, valid_settings(&state), outcome);
    g_signal_handlers_disconnect_by_data(config, &state);
    gtk_widget_destroy(dialog);
    cs_gimp_dialog_release(&state.d);
    return ok;
}

/* ---- run ------------------------------------------------------------------------------ */

/* An error goes to gimp_message; a calling script also gets it with the status (an
 * interactive run has shown it already: GIMP would show a returned one a second time). */
static GimpValueArray *error_values(GimpProcedure *procedure, GimpRunMode run_mode,
                                    GimpPDBStatusType status, GError *error) {
    gimp_message(error->message);
    if (run_mode == GIMP_RUN_INTERACTIVE) g_clear_error(&error);
    return gimp_procedure_new_return_values(procedure, status, error);
}

static GimpValueArray *success_values(GimpProcedure *procedure, GimpRunMode run_mode,
                                      cs_gimp_outcome *outcome) {
    if (run_mode != GIMP_RUN_NONINTERACTIVE) gimp_message(outcome->verdict);
    GimpValueArray *values = gimp_procedure_new_return_values(procedure, GIMP_PDB_SUCCESS, NULL);
    GIMP_VALUES_SET_DRAWABLE(values, 1, outcome->result != -1
                                            ? gimp_drawable_get_by_id(outcome->result)
                                            : NULL);
    GIMP_VALUES_SET_DOUBLE(values, 2, outcome->marked_percent);
    GIMP_VALUES_TAKE_STRING(values, 3, outcome->verdict);
    return values;
}

static GimpValueArray *run(GimpProcedure *procedure, GimpRunMode run_mode, GimpImage *image,
                           GimpDrawable **drawables, GimpProcedureConfig *config,
                           gpointer run_data) {
    (void)run_data;
    GError *error = NULL;
    if (gimp_core_object_array_get_length((GObject **)drawables) != 1) {
        g_set_error(&error, CS_ERROR, CS_ERROR_ARG,
                    "ConDSeg works on one drawable at a time: select a single layer");
        return error_values(procedure, run_mode, GIMP_PDB_CALLING_ERROR, error);
    }
    const gint32 image_id = gimp_image_get_id(image);
    const gint32 drawable_id = gimp_item_get_id(GIMP_ITEM(drawables[0]));
    cs_gimp_outcome outcome = {-1, 0, NULL};
    if (run_mode == GIMP_RUN_INTERACTIVE) {
        if (!run_dialog(procedure, config, image_id, drawable_id, &outcome))
            return gimp_procedure_new_return_values(procedure, GIMP_PDB_CANCEL, NULL);
        return success_values(procedure, run_mode, &outcome);
    }
    cs_gimp_settings settings;
    if (!settings_from_config(config, &settings, &error))
        return error_values(procedure, run_mode, GIMP_PDB_CALLING_ERROR, error);
    if (!cs_gimp_segment(image_id, drawable_id, &settings, &outcome, &error))
        return error_values(procedure, run_mode, GIMP_PDB_EXECUTION_ERROR, error);
    return success_values(procedure, run_mode, &outcome);
}

/* ---- cs_gimp_host_*: GIMP 3's calls for the shared image work --------------------------- */

static GimpImage *image_of(gint32 id) { return gimp_image_get_by_id(id); }
static GimpDrawable *drawable_of(gint32 id) { return gimp_drawable_get_by_id(id); }
static gint32 id_of(gpointer item) { return item ? gimp_item_get_id(GIMP_ITEM(item)) : -1; }

cs_gimp_base cs_gimp_host_image_base(gint32 image) {
    switch (gimp_image_get_base_type(image_of(image))) {
    case GIMP_GRAY: return CS_GIMP_BASE_GRAY;
    case GIMP_INDEXED: return CS_GIMP_BASE_INDEXED;
    default: return CS_GIMP_BASE_RGB;
    }
}

GeglRectangle cs_gimp_host_drawable_bounds(gint32 drawable) {
    GimpDrawable *d = drawable_of(drawable);
    GeglRectangle bounds = {0, 0, gimp_drawable_get_width(d), gimp_drawable_get_height(d)};
    gimp_drawable_get_offsets(d, &bounds.x, &bounds.y);
    return bounds;
}

const Babl *cs_gimp_host_drawable_format(gint32 drawable) {
    return gimp_drawable_get_format(drawable_of(drawable));
}

GeglBuffer *cs_gimp_host_drawable_buffer(gint32 drawable) {
    return gimp_drawable_get_buffer(drawable_of(drawable));
}

GeglBuffer *cs_gimp_host_drawable_shadow_buffer(gint32 drawable) {
    return gimp_drawable_get_shadow_buffer(drawable_of(drawable));
}

void cs_gimp_host_drawable_merge_shadow(gint32 drawable) {
    gimp_drawable_merge_shadow(drawable_of(drawable), TRUE);
}

void cs_gimp_host_drawable_update(gint32 drawable) {
    GimpDrawable *d = drawable_of(drawable);
    gimp_drawable_update(d, 0, 0, gimp_drawable_get_width(d), gimp_drawable_get_height(d));
}

gboolean cs_gimp_host_is_layer(gint32 drawable) {
    return gimp_item_is_layer(GIMP_ITEM(drawable_of(drawable)));
}

gint32 cs_gimp_host_layer_of_mask(gint32 drawable) {
    GimpItem *item = GIMP_ITEM(drawable_of(drawable));
    return gimp_item_is_layer_mask(item) ? id_of(gimp_layer_from_mask(GIMP_LAYER_MASK(item)))
                                         : -1;
}

gint32 cs_gimp_host_layer_mask(gint32 layer) {
    return id_of(gimp_layer_get_mask(GIMP_LAYER(drawable_of(layer))));
}

gint32 cs_gimp_host_add_layer_mask(gint32 layer) {
    GimpLayer *l = GIMP_LAYER(drawable_of(layer));
    GimpLayerMask *mask = gimp_layer_create_mask(l, GIMP_ADD_MASK_WHITE);
    gimp_layer_add_mask(l, mask);
    return id_of(mask);
}

gint32 cs_gimp_host_insert_layer(gint32 image, const char *name, GeglRectangle bounds,
                                 gint32 above, double opacity) {
    GimpImage *img = image_of(image);
    const GimpImageType type =
        gimp_image_get_base_type(img) == GIMP_GRAY ? GIMP_GRAY_IMAGE : GIMP_RGB_IMAGE;
    GimpLayer *layer = gimp_layer_new(img, name, bounds.width, bounds.height, type, opacity,
                                      GIMP_LAYER_MODE_SCREEN);
    GimpLayer *parent = NULL;
    gint position = 0;
    GimpItem *reference = GIMP_ITEM(drawable_of(above));
    if (gimp_item_is_layer(reference)) {
        parent = GIMP_LAYER(gimp_item_get_parent(reference));
        position = gimp_image_get_item_position(img, reference);
    }
    gimp_image_insert_layer(img, layer, parent, position);
    gimp_layer_set_offsets(layer, bounds.x, bounds.y);
    return id_of(layer);
}

gint32 cs_gimp_host_insert_channel(gint32 image, const char *name) {
    GimpImage *img = image_of(image);
    GeglColor *black = gegl_color_new("black");
    GimpChannel *channel = gimp_channel_new(img, name, gimp_image_get_width(img),
                                            gimp_image_get_height(img), 50.0, black);
    g_object_unref(black);
    gimp_image_insert_channel(img, channel, NULL, 0);
    return id_of(channel);
}

void cs_gimp_host_select_channel_and_remove(gint32 image, gint32 channel) {
    GimpImage *img = image_of(image);
    GimpChannel *ch = GIMP_CHANNEL(drawable_of(channel));
    /* The mask exactly: no feathering or antialiasing from the user's tool options. */
    gimp_context_push();
    gimp_context_set_feather(FALSE);
    gimp_context_set_antialias(FALSE);
    gimp_image_select_item(img, GIMP_CHANNEL_OP_REPLACE, GIMP_ITEM(ch));
    gimp_context_pop();
    gimp_image_remove_channel(img, ch);
}

gint32 cs_gimp_host_selection(gint32 image) {
    return id_of(gimp_image_get_selection(image_of(image)));
}

void cs_gimp_host_undo_group_start(gint32 image) { gimp_image_undo_group_start(image_of(image)); }

void cs_gimp_host_undo_group_end(gint32 image) { gimp_image_undo_group_end(image_of(image)); }

void cs_gimp_host_progress_init(const char *message) { gimp_progress_init(message); }

void cs_gimp_host_progress(double fraction) { gimp_progress_update(fraction); }
