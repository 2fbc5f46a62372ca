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
 *                    #:device "auto")
 *   (plug-in-condseg RUN-NONINTERACTIVE image (vector layer) "weights.safetensors" 0.5
 *                    "layer-mask" "auto")
 */
#include <string.h>

#include <libgimp/gimp.h>
#include <libgimp/gimpui.h>

#include "condseg.h"
#include "condseg_gimp_common.h"

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
        cs_gimp_output_names[3].label, cs_gimp_output_names[3].help, NULL);
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
    gimp_procedure_add_drawable_return_value(
        procedure, "result", "Result", "The layer mask, selection channel or new layer written",
        TRUE, G_PARAM_READWRITE);
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

/* ---- the dialog --------------------------------------------------------------------- */

/* What an empty weights choice means here. */
static char *default_model_note(void) {
    char *weights = cs_default_weights_path();
    char *note = weights ? g_strdup_printf("Without a file: the installed default model, %s",
                                           weights)
                         : g_strdup("No default model installed: choose a .safetensors "
                                    "weights file.");
    g_free(weights);
    return note;
}

static gboolean run_dialog(GimpProcedure *procedure, GimpProcedureConfig *config) {
    gimp_ui_init(CS_GIMP_BINARY);
    GtkWidget *dialog = gimp_procedure_dialog_new(procedure, config, CS_GIMP_TITLE);
    char *note = default_model_note();
    gimp_procedure_dialog_get_label(GIMP_PROCEDURE_DIALOG(dialog), "default-model", note, FALSE,
                                    FALSE);
    g_free(note);
    /* The threshold only matters for the mask outputs. */
    GimpValueArray *mask_outputs = gimp_value_array_new(2);
    GValue nick = G_VALUE_INIT;
    g_value_init(&nick, G_TYPE_STRING);
    g_value_set_static_string(&nick, cs_gimp_output_names[CS_GIMP_OUTPUT_LAYER_MASK].nick);
    gimp_value_array_append(mask_outputs, &nick);
    g_value_set_static_string(&nick, cs_gimp_output_names[CS_GIMP_OUTPUT_SELECTION].nick);
    gimp_value_array_append(mask_outputs, &nick);
    g_value_unset(&nick);
    gimp_procedure_dialog_set_sensitive_if_in(GIMP_PROCEDURE_DIALOG(dialog), "threshold", NULL,
                                              "output", mask_outputs, TRUE);
    /* All four outputs in sight: the uncertainty map is the one no other tool gives. */
    gimp_procedure_dialog_get_widget(GIMP_PROCEDURE_DIALOG(dialog), "output",
                                     GIMP_TYPE_INT_RADIO_FRAME);
    gimp_procedure_dialog_get_scale_entry(GIMP_PROCEDURE_DIALOG(dialog), "threshold", 1.0);
    gimp_procedure_dialog_fill(GIMP_PROCEDURE_DIALOG(dialog), "weights", "default-model",
                               "output", "threshold", "device", NULL);
    const gboolean ok = gimp_procedure_dialog_run(GIMP_PROCEDURE_DIALOG(dialog));
    gtk_widget_destroy(dialog);
    return ok;
}

/* ---- run ------------------------------------------------------------------------------ */

static gboolean settings_from_config(GimpProcedureConfig *config, cs_gimp_settings *settings,
                                     GError **error) {
    GFile *file = NULL;
    memset(settings, 0, sizeof *settings);
    g_object_get(config, "weights", &file, "threshold", &settings->threshold, NULL);
    settings->output = gimp_procedure_config_get_choice_id(config, "output");
    settings->device = gimp_procedure_config_get_choice_id(config, "device");
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

/* An error goes to gimp_message; a calling script also gets it with the status (an
 * interactive run has shown it already: GIMP would show a returned one a second time). */
static GimpValueArray *error_values(GimpProcedure *procedure, GimpRunMode run_mode,
                                    GimpPDBStatusType status, GError *error) {
    gimp_message(error->message);
    if (run_mode == GIMP_RUN_INTERACTIVE) g_clear_error(&error);
    return gimp_procedure_new_return_values(procedure, status, error);
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
    if (run_mode == GIMP_RUN_INTERACTIVE && !run_dialog(procedure, config))
        return gimp_procedure_new_return_values(procedure, GIMP_PDB_CANCEL, NULL);

    cs_gimp_settings settings;
    if (!settings_from_config(config, &settings, &error))
        return error_values(procedure, run_mode, GIMP_PDB_CALLING_ERROR, error);
    gint32 result = -1;
    if (!cs_gimp_segment(gimp_image_get_id(image), gimp_item_get_id(GIMP_ITEM(drawables[0])),
                         &settings, &result, &error))
        return error_values(procedure, run_mode, GIMP_PDB_EXECUTION_ERROR, error);

    if (run_mode != GIMP_RUN_NONINTERACTIVE) gimp_displays_flush();
    GimpValueArray *values = gimp_procedure_new_return_values(procedure, GIMP_PDB_SUCCESS, NULL);
    GIMP_VALUES_SET_DRAWABLE(values, 1, gimp_drawable_get_by_id(result));
    return values;
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
                                 gint32 above) {
    GimpImage *img = image_of(image);
    const GimpImageType type =
        gimp_image_get_base_type(img) == GIMP_GRAY ? GIMP_GRAY_IMAGE : GIMP_RGB_IMAGE;
    GimpLayer *layer = gimp_layer_new(img, name, bounds.width, bounds.height, type, 100.0,
                                      GIMP_LAYER_MODE_NORMAL);
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
