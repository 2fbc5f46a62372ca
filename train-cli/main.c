/* main.c — the `condseg` program: ConDSeg segmentation, training and evaluation from the
 * command line, on libcondseg (model/condseg.h).
 *
 *   condseg predict [-w WEIGHTS] [-o OUT] [--threshold T] [--tta] [--json FILE]
 *                   [--overlay OUT] [--uncertainty OUT] [--prob FILE.npy] [--all-outputs]
 *                   IMAGE|DIR...
 *   condseg info WEIGHTS
 *   condseg train --stage 1|2 --data DIR --out RUNDIR [...] | --resume RUNDIR
 *   condseg eval [-w WEIGHTS] [--data DIR] [--split SPLIT] [--json FILE] [...]
 *
 * Each command reads its options into a struct (parse_*), does its work (run_*) and says
 * what it did. Exit status: 0 success, 1 a file could not be read or written (the other
 * inputs are still processed), 2 a bad command line, 130 training interrupted and saved.
 *
 * Help texts are plain ASCII: GLib prints them in the locale's character set, where a
 * typographic character that set lacks becomes '?'.
 */
#include <errno.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <signal.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "condseg.h"
#include "dist.h"   /* data-parallel training under mpirun */
#include "overlay.h"
#include "pipeline.h"

#define EXIT_USAGE 2

static const char *program = "condseg";

// ---------------------------------------------------------------------------------------
// what every command shares: messages, option parsing, the device, the data folder

/* Prints a command-line problem and where to find help; returns EXIT_USAGE. */
static int usage_error(const char *format, ...) G_GNUC_PRINTF(1, 2);
static int usage_error(const char *format, ...) {
    va_list args;
    va_start(args, format);
    char *msg = g_strdup_vprintf(format, args);
    va_end(args);
    fprintf(stderr, "%s: %s\nTry '%s --help'.\n", program, msg, g_get_prgname());
    g_free(msg);
    return EXIT_USAGE;
}

/* Prints `error` (and frees it); returns 1, the status of a file that failed. */
static int report_error(GError *error) {
    fprintf(stderr, "%s: %s\n", program, error->message);
    g_error_free(error);
    return 1;
}

/* A context whose options' callbacks receive `data` (GLib passes a group's user data). */
static GOptionContext *new_context(const char *parameters, const GOptionEntry *entries,
                                   void *data, const char *description) {
    GOptionContext *ctx = g_option_context_new(parameters);
    GOptionGroup *group = g_option_group_new("main", "", "", data, NULL);
    g_option_group_add_entries(group, entries);
    g_option_context_set_main_group(ctx, group);
    if (description) g_option_context_set_description(ctx, description);
    return ctx;
}

/* --help, printed by us: GLib's own would convert its "[OPTION\u2026]" to the locale's
 * character set, showing "[OPTION?]" in a non-UTF-8 one. Exits 0, as GLib's does. */
static void print_help_and_exit(GOptionContext *ctx) {
    char *help = g_option_context_get_help(ctx, TRUE, NULL);
    char **parts = g_strsplit(help, "\u2026", -1);
    char *ascii = g_strjoinv("...", parts);
    fputs(ascii, stdout);
    g_free(ascii), g_strfreev(parts), g_free(help);
    g_option_context_free(ctx);
    exit(0);
}

/* Parses and frees `ctx`; returns 0 or, having said why and where help is, EXIT_USAGE. */
static int parse_and_free(GOptionContext *ctx, int *argc, char ***argv) {
    gboolean help = FALSE;
    const GOptionEntry help_entry[] = {
        {"help", 'h', 0, G_OPTION_ARG_NONE, &help, "Show this help", NULL},
        {NULL, 0, 0, 0, NULL, NULL, NULL}};
    g_option_context_set_help_enabled(ctx, FALSE);
    g_option_group_add_entries(g_option_context_get_main_group(ctx), help_entry);
    GError *error = NULL;
    const gboolean ok = g_option_context_parse(ctx, argc, argv, &error);
    if (ok && help) print_help_and_exit(ctx);
    g_option_context_free(ctx);
    if (ok) return 0;
    const int status = usage_error("%s", error->message);
    g_error_free(error);
    return status;
}

/* "dir/name.ext" -> "name" */
static char *file_stem(const char *path) {
    char *base = g_path_get_basename(path);
    char *dot = strrchr(base, '.');
    if (dot && dot != base) *dot = '\0';
    return base;
}

#define DEVICE_HELP "Where to run: cpu, cuda (an NVIDIA GPU) or auto (default: a GPU when one is usable)"

/* --device, for every command: moves `model` there or, model NULL (training makes its
 * own), stores the resolved name in *resolved. An explicit "auto" says why it stayed on
 * the CPU. Returns 0 or the exit status. */
static int select_device(const char *device, cs_model *model, const char **resolved) {
    GError *error = NULL;
    char *note = NULL;
    const gboolean ok = model ? cs_model_set_device(model, device, &note, &error)
                              : (*resolved = cs_device_resolve(device, &note, &error)) != NULL;
    if (!ok) {
        const int status = error->code == CS_ERROR_ARG ? EXIT_USAGE : 1;
        fprintf(stderr, "%s: --device: %s\n", program, error->message);
        g_error_free(error);
        return status;
    }
    if (note && device) fprintf(stderr, "%s: %s\n", program, note);
    g_free(note);
    return 0;
}

#define PRECISION_HELP \
    "Convolution arithmetic: fp32 (default) or bf16 (bfloat16 inputs, float32 sums: about 3x " \
    "faster on CPUs with AMX, masks within about 1%)"

/* --precision: sets the model's; says so when the CPU cannot do bf16 and fp32 runs. */
static int apply_precision(cs_model *model, const char *precision) {
    GError *error = NULL;
    char *note = NULL;
    if (!cs_model_set_precision(model, precision, &note, &error)) {
        fprintf(stderr, "%s: --precision: %s\n", program, error->message);
        g_error_free(error);
        return EXIT_USAGE;
    }
    if (note) fprintf(stderr, "%s: --precision: %s\n", program, note);
    g_free(note);
    return 0;
}

/* Loads `weights`, moves the network to `device` and sets its `precision`; NULL (having
 * said why, *status the exit status) on failure. */
static cs_model *load_model(const char *weights, const char *device, const char *precision,
                            int *status) {
    GError *error = NULL;
    cs_model *model = cs_model_load(weights, &error);
    if (!model) {
        *status = report_error(error);
        return NULL;
    }
    if ((*status = select_device(device, model, NULL)) ||
        (*status = apply_precision(model, precision))) {
        cs_model_free(model);
        return NULL;
    }
    return model;
}

#define TTA_HELP \
    "Test-time augmentation: the mean of the predictions of the image and of its " \
    "half-turned copy (mirrored left-right and top-bottom at once; 2 network runs)"

/* --tta: the views of CS_TTA_DEFAULT, or none. */
static void apply_tta(cs_model *model, gboolean tta) {
    cs_model_set_tta(model, tta ? CS_TTA_DEFAULT : 0);
}

/* --data DIR: DIR itself when it exists, else DIR inside $CONDSEG_DATA (the folder that
 * holds kvasir-seg/, as for the tests), so that "--data kvasir-seg" works from anywhere.
 * NULL when it is in neither place. */
static char *find_data_dir(const char *dir) {
    if (g_file_test(dir, G_FILE_TEST_IS_DIR)) return g_strdup(dir);
    const char *root = g_getenv("CONDSEG_DATA");
    if (!root || !*root || g_path_is_absolute(dir)) return NULL;
    char *path = g_build_filename(root, dir, NULL);
    if (g_file_test(path, G_FILE_TEST_IS_DIR)) return path;
    g_free(path);
    return NULL;
}

static gboolean parse_unit_interval(const char *option, const char *value, double *out,
                                    GError **error) {
    char *end = NULL;
    errno = 0;
    const double t = g_ascii_strtod(value, &end);
    if (errno || end == value || *end || !(t >= 0.0 && t <= 1.0)) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "%s: expected a number between 0 and 1, got '%s'", option, value);
        return FALSE;
    }
    *out = t;
    return TRUE;
}

static gboolean parse_positive_double(const char *option, const char *value, double *out,
                                      GError **error) {
    char *end = NULL;
    errno = 0;
    const double v = g_ascii_strtod(value, &end);
    if (errno || end == value || *end || !(v > 0) || !isfinite(v)) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "%s: expected a positive number, got '%s'", option, value);
        return FALSE;
    }
    *out = v;
    return TRUE;
}

// ---------------------------------------------------------------------------------------
// predict

typedef struct {
    char *weights, *output, *prob, *device, *precision;
    char *json_path, *overlay, *uncertainty;
    double threshold;
    gboolean all_outputs, tta;
    int threads;
    GPtrArray *inputs;     /* the images, folders expanded */
    gboolean several;      /* OUT, --prob, --overlay and --uncertainty name folders */
} predict_options;

static gboolean on_threshold(const char *name, const char *value, gpointer data,
                             GError **error) {
    predict_options *o = data;
    return parse_unit_interval(name, value, &o->threshold, error);
}

static GOptionContext *predict_context(predict_options *o) {
    const GOptionEntry entries[] = {
        {"weights", 'w', 0, G_OPTION_ARG_FILENAME, &o->weights,
         "Network weights (.safetensors): a ConDSeg or stage-1 network (default: the "
         "installed default model)", "FILE"},
        {"output", 'o', 0, G_OPTION_ARG_FILENAME, &o->output,
         "Mask file (one image) or directory (several images or a folder; masks keep the "
         "input names)", "OUT"},
        {"threshold", 't', 0, G_OPTION_ARG_CALLBACK, (gpointer)on_threshold,
         "Probability above which a pixel is foreground (default 0.5)", "T"},
        {"prob", 0, 0, G_OPTION_ARG_FILENAME, &o->prob,
         "Also write the raw probabilities at the network's input size S (the size the "
         "weights were trained at: 256 for the paper's and for the default model) as a "
         "float32 NumPy array (K,S,S); a directory when there are several images",
         "FILE.npy"},
        {"all-outputs", 0, 0, G_OPTION_ARG_NONE, &o->all_outputs,
         "With --prob: all four outputs (mask, fg, bg, and the raw uncertainty of the "
         "network's SID branch), K = 4", NULL},
        {"tta", 0, 0, G_OPTION_ARG_NONE, &o->tta, TTA_HELP, NULL},
        {"json", 0, 0, G_OPTION_ARG_FILENAME, &o->json_path,
         "Also write the results as JSON: per image the input, the mask, its size, the marked "
         "share of the frame, whether anything was found, the uncertainty's mean and maximum",
         "FILE"},
        {"overlay", 0, 0, G_OPTION_ARG_FILENAME, &o->overlay,
         "Also write the image with the mask's outline drawn on it (green, 2 px) as PNG, for "
         "review; a directory when there are several images", "OUT"},
        {"uncertainty", 0, 0, G_OPTION_ARG_FILENAME, &o->uncertainty,
         "Also write the uncertainty at the image's size as an 8-bit gray PNG: the binary "
         "entropy of the mask probability, black 0 (sure) to white 1 (probability 0.5); a "
         "directory when there are several images", "OUT"},
        {"threads", 0, 0, G_OPTION_ARG_INT, &o->threads, "CPU threads (default: all cores)", "N"},
        {"device", 0, 0, G_OPTION_ARG_STRING, &o->device, DEVICE_HELP, "DEVICE"},
        {"precision", 0, 0, G_OPTION_ARG_STRING, &o->precision, PRECISION_HELP, "P"},
        {NULL, 0, 0, 0, NULL, NULL, NULL}};
    return new_context(
        "IMAGE|DIR... - segment images with ConDSeg", entries, o,
        "Writes, for each image, the binary mask (PNG, 0/255) at the image's own size: the\n"
        "network's output (SxS, S the size the weights were trained at: 256 for the paper's\n"
        "and for the default model) resized back and thresholded, and prints a line per image.\n"
        "A folder stands for the images in it (JPEG, PNG, BMP, TIFF, by name). Reads JPEG,\n"
        "PNG, BMP and TIFF. The line says how much of the frame is marked, or \"no polyp\n"
        "found\" when nothing is.\n\n"
        "Examples:\n"
        "  condseg predict -o mask.png polyp.jpg\n"
        "  condseg predict -o masks/ --overlay review/ --json results.json images/\n");
}

static gboolean is_image_name(const char *name) {
    static const char *const extensions[] = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"};
    char *lower = g_ascii_strdown(name, -1);
    gboolean yes = FALSE;
    for (size_t i = 0; i < G_N_ELEMENTS(extensions) && !yes; i++)
        yes = g_str_has_suffix(lower, extensions[i]) && lower[0] != '.';
    g_free(lower);
    return yes;
}

static int compare_paths(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Adds the images of folder `dir` to `inputs`, sorted by name; FALSE when it has none. */
static gboolean add_folder_images(const char *dir, GPtrArray *inputs, GError **error) {
    GDir *d = g_dir_open(dir, 0, error);
    if (!d) return FALSE;
    const guint before = inputs->len;
    for (const char *name; (name = g_dir_read_name(d));)
        if (is_image_name(name)) g_ptr_array_add(inputs, g_build_filename(dir, name, NULL));
    g_dir_close(d);
    if (inputs->len == before) {
        g_set_error(error, CS_ERROR, CS_ERROR_IO, "%s: no images in this folder (JPEG, PNG, "
                    "BMP or TIFF, by their names' endings)", dir);
        return FALSE;
    }
    qsort(inputs->pdata + before, inputs->len - before, sizeof(char *), compare_paths);
    return TRUE;
}

/* The inputs, each folder replaced by its images; several inputs, or a folder, make OUT
 * and --prob folders. Returns 0 or 1 (a folder could not be read or has no images). */
static int expand_inputs(int n, char **args, predict_options *o) {
    o->inputs = g_ptr_array_new_with_free_func(g_free);
    for (int i = 0; i < n; i++) {
        GError *error = NULL;
        if (!g_file_test(args[i], G_FILE_TEST_IS_DIR)) g_ptr_array_add(o->inputs, g_strdup(args[i]));
        else if (!add_folder_images(args[i], o->inputs, &error)) return report_error(error);
        else o->several = TRUE;
    }
    o->several = o->several || o->inputs->len > 1;
    return 0;
}

/* --json FILE must be writable before any image is: a folder that exists, and FILE not a
 * folder. Returns 0 or 1, having said why. */
static int check_json_path(const char *path) {
    char *dir = g_path_get_dirname(path);
    const char *problem = g_file_test(path, G_FILE_TEST_IS_DIR) ? "is a folder, not a file"
                          : !g_file_test(dir, G_FILE_TEST_IS_DIR) ? "its folder does not exist"
                          : access(dir, W_OK) != 0               ? "its folder is not writable"
                                                                 : NULL;
    if (problem)
        fprintf(stderr, "%s: --json '%s': %s (%s); nothing was written\n", program, path,
                problem, dir);
    g_free(dir);
    return problem ? 1 : 0;
}

static int parse_predict(int argc, char **argv, predict_options *o) {
    const int status = parse_and_free(predict_context(o), &argc, &argv);
    if (status) return status;
    if (argc < 2) return usage_error("predict: no input image given");
    if (o->threads < 0)
        return usage_error("--threads: expected a positive number, got %d", o->threads);
    if (o->all_outputs && !o->prob)
        return usage_error("--all-outputs: only with --prob FILE.npy (the mask itself is made "
                           "from one output)");
    if (!o->weights) o->weights = cs_default_weights_path();
    if (!o->weights)
        return usage_error("predict: no --weights FILE given, and no default model is "
                           "installed (set CONDSEG_WEIGHTS or run ./install.sh)");
    if (o->json_path && check_json_path(o->json_path)) return 1;
    return expand_inputs(argc - 1, argv + 1, o);
}

/* The files predict writes per image: the mask always, the others when asked for. */
typedef enum { FILE_MASK, FILE_PROB, FILE_OVERLAY, FILE_UNCERTAINTY, N_FILES } predict_file;

static const struct {
    const char *option, *what, *ext, *default_suffix;
} predict_files[N_FILES] = {
    [FILE_MASK] = {"--output", "the mask", "png", ".mask"},
    [FILE_PROB] = {"--prob", "--prob", "npy", ".prob"},
    [FILE_OVERLAY] = {"--overlay", "--overlay", "png", ".overlay"},
    [FILE_UNCERTAINTY] = {"--uncertainty", "--uncertainty", "png", ".uncertainty"},
};

/* The OUT option of a file kind (NULL: not asked for, or for the mask: the default name). */
static const char *file_target(const predict_options *o, predict_file k) {
    const char *const targets[N_FILES] = {o->output, o->prob, o->overlay, o->uncertainty};
    return targets[k];
}

/* Where file `k` of `input` goes: OUT itself for one input unless OUT is a directory;
 * OUT/<stem>.<ext> for several inputs; <stem><default suffix>.<ext> when no OUT (the mask).
 * NULL when the file is not asked for. */
static char *output_path(const predict_options *o, const gboolean *is_dir, predict_file k,
                         const char *input) {
    const char *out = file_target(o, k);
    if (!out && k != FILE_MASK) return NULL;
    char *stem = file_stem(input);
    char *path;
    if (!out) path = g_strdup_printf("%s%s.%s", stem, predict_files[k].default_suffix,
                                     predict_files[k].ext);
    else if (is_dir[k]) {
        char *name = g_strdup_printf("%s.%s", stem, predict_files[k].ext);
        path = g_build_filename(out, name, NULL);
        g_free(name);
    } else path = g_strdup(out);
    g_free(stem);
    return path;
}

/* A path as the file system resolves it, for comparing paths that may not exist yet:
 * the canonical folder (symbolic links resolved) joined with the file name. */
static char *resolved_path(const char *path) {
    char *dir = g_path_get_dirname(path), *base = g_path_get_basename(path);
    char *real_dir = realpath(dir, NULL);
    char *resolved = real_dir ? g_build_filename(real_dir, base, NULL) : g_strdup(path);
    char *real = realpath(resolved, NULL);   /* an existing file: its links resolved too */
    if (real) {
        g_free(resolved);
        resolved = g_strdup(real);
        free(real);
    }
    free(real_dir);
    g_free(dir);
    g_free(base);
    return resolved;
}

/* Adds what `input` would write to `outputs` (resolved path -> the input it belongs to);
 * FALSE, with the reason printed, when one is already there. */
static gboolean claim_outputs(const predict_options *o, const gboolean *is_dir, const char *input,
                              GHashTable *outputs) {
    gboolean ok = TRUE;
    for (int k = 0; k < N_FILES && ok; k++) {
        char *path = output_path(o, is_dir, k, input);
        if (!path) continue;
        char *key = resolved_path(path);
        const char *owner = g_hash_table_lookup(outputs, key);
        if (owner) {
            fprintf(stderr, "%s: %s '%s' for '%s' would overwrite %s '%s': nothing was written "
                            "(give the images different names, or other output options)\n",
                    program, predict_files[k].what, path, input,
                    g_str_has_prefix(owner, "input:") ? "the input image" : "the output of",
                    strchr(owner, ':') + 1);
            ok = FALSE;
            g_free(key);
        } else {
            g_hash_table_insert(outputs, key, g_strconcat("output:", input, NULL));
        }
        g_free(path);
    }
    return ok;
}

/* Whether each file kind's OUT names a folder: several inputs, or an existing folder. */
static void decide_output_dirs(const predict_options *o, gboolean *is_dir) {
    for (int k = 0; k < N_FILES; k++) {
        const char *out = file_target(o, k);
        is_dir[k] = out && (o->several || g_file_test(out, G_FILE_TEST_IS_DIR));
    }
}

/* Refuses, before anything is written, an output that would replace an input image
 * (`-o x.jpg x.jpg`) or another image's output (`d1/x.jpg d2/x.jpg -o out`): silent
 * data loss otherwise. Returns EXIT_USAGE after printing why, or 0. */
static int refuse_colliding_outputs(const predict_options *o, const gboolean *is_dir) {
    const int n_inputs = (int)o->inputs->len;
    char **inputs = (char **)o->inputs->pdata;
    GHashTable *outputs = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    for (int i = 0; i < n_inputs; i++)
        g_hash_table_insert(outputs, resolved_path(inputs[i]), g_strconcat("input:", inputs[i], NULL));
    gboolean ok = TRUE;
    if (o->json_path) {   /* --json is one more output, of no image */
        char *key = resolved_path(o->json_path);
        const char *owner = g_hash_table_lookup(outputs, key);
        if (owner) {
            fprintf(stderr, "%s: --json '%s' would overwrite the input image '%s': nothing was "
                            "written\n", program, o->json_path, strchr(owner, ':') + 1);
            ok = FALSE;
            g_free(key);
        } else {
            g_hash_table_insert(outputs, key, g_strdup("output:--json"));
        }
    }
    for (int i = 0; i < n_inputs && ok; i++) ok = claim_outputs(o, is_dir, inputs[i], outputs);
    g_hash_table_destroy(outputs);
    return ok ? 0 : EXIT_USAGE;
}

/* Creates the folders the outputs go into. */
static gboolean prepare_output_dirs(const predict_options *o, const gboolean *is_dir) {
    for (int k = 0; k < N_FILES; k++) {
        if (!is_dir[k] || g_mkdir_with_parents(file_target(o, k), 0755) == 0) continue;
        fprintf(stderr, "%s: %s '%s': cannot create the directory: %s\n", program,
                predict_files[k].option, file_target(o, k), g_strerror(errno));
        return FALSE;
    }
    return TRUE;
}

/* What a user judges a result by. */
typedef struct {
    double marked;              /* share of the frame's pixels in the mask */
    float prob_max;             /* highest mask probability (at the image's size) */
    double uncertainty_mean;    /* of cs_prob_to_uncertainty over the frame */
    float uncertainty_max;
} predict_summary;

/* One image on its way through the pipeline. */
typedef struct {
    const char *input;
    cs_image *image;      /* decoded (reader) */
    float *prob;          /* K x S x S (network) */
    GError *error;        /* the first failure, reported by the writer, in order */
} predict_item;

/* What the stages share. */
typedef struct {
    const predict_options *o;
    cs_model *model;
    gboolean is_dir[N_FILES];
    unsigned outputs;
    int k, size;          /* K outputs of S x S */
    int stored, failed;   /* items through the writer, of which failed */
    JsonBuilder *json;    /* --json: the "images" array being filled, or NULL */
} predict_run;

static void predict_load(void *item, void *data) {
    (void)data;
    predict_item *it = item;
    it->image = cs_image_load_bgr(it->input, &it->error);
}

static void predict_compute(void *item, void *data) {
    predict_run *r = data;
    predict_item *it = item;
    if (!it->image) return;
    it->prob = g_new(float, (size_t)r->k * r->size * r->size);
    if (!cs_model_predict_image(r->model, it->image, r->outputs, it->prob, &it->error))
        g_clear_pointer(&it->prob, g_free);
}

/* The uncertainty at the image's size, as 8-bit gray: round(255 u). */
static gboolean write_uncertainty(const float *uncertainty, int width, int height,
                                  const char *path, GError **error) {
    cs_image *gray = cs_image_new(width, height, 1);
    for (size_t i = 0; i < (size_t)width * height; i++)
        gray->data[i] = (uint8_t)(255.0f * uncertainty[i] + 0.5f);
    const gboolean ok = cs_image_save_png(gray, path, error);
    cs_image_free(gray);
    return ok;
}

static gboolean write_overlay(const cs_image *image, const cs_image *mask, const char *path,
                              GError **error) {
    static const uint8_t colour[3] = OVERLAY_OUTLINE_BGR;
    cs_image *overlay = cs_image_new(image->width, image->height, 3);
    memcpy(overlay->data, image->data, (size_t)image->width * image->height * 3);
    overlay_draw_outline(overlay, mask, OVERLAY_OUTLINE_WIDTH, colour);
    const gboolean ok = cs_image_save_png(overlay, path, error);
    cs_image_free(overlay);
    return ok;
}

/* The mask (and the uncertainty, when asked for) from the probability at the image's size;
 * fills the summary. */
static gboolean write_maps(const predict_run *r, const predict_item *it, char *const *paths,
                           predict_summary *summary, GError **error) {
    const int w = it->image->width, h = it->image->height;
    const size_t n = (size_t)w * h;
    float *prob = g_new(float, n);
    cs_resize_linear_f32(it->prob, r->size, r->size, prob, w, h);
    cs_image *mask = cs_image_new(w, h, 1);
    cs_prob_to_mask(prob, w, h, (float)r->o->threshold, mask);
    size_t on = 0;
    summary->prob_max = 0;
    for (size_t i = 0; i < n; i++) {
        on += mask->data[i] != 0;
        summary->prob_max = MAX(summary->prob_max, prob[i]);
    }
    summary->marked = n ? (double)on / (double)n : 0;
    gboolean ok = cs_image_save_png(mask, paths[FILE_MASK], error);
    if (ok && paths[FILE_OVERLAY]) ok = write_overlay(it->image, mask, paths[FILE_OVERLAY], error);
    if (ok && (r->json || paths[FILE_UNCERTAINTY])) {
        cs_prob_to_uncertainty(prob, n, prob);   /* in place: the probability is done with */
        double sum = 0;
        summary->uncertainty_max = 0;
        for (size_t i = 0; i < n; i++) {
            sum += prob[i];
            summary->uncertainty_max = MAX(summary->uncertainty_max, prob[i]);
        }
        summary->uncertainty_mean = n ? sum / (double)n : 0;
        if (paths[FILE_UNCERTAINTY])
            ok = write_uncertainty(prob, w, h, paths[FILE_UNCERTAINTY], error);
    }
    cs_image_free(mask);
    g_free(prob);
    return ok;
}

/* Every file of one image; fills the summary. */
static gboolean write_outputs(const predict_run *r, const predict_item *it, char *const *paths,
                              predict_summary *summary, GError **error) {
    gboolean ok = write_maps(r, it, paths, summary, error);
    if (ok && paths[FILE_PROB]) {
        const int64_t shape[3] = {r->k, r->size, r->size};
        ok = cs_write_npy_f32(paths[FILE_PROB], it->prob, 3, shape, error);
    }
    return ok;
}

/* "12.3%", with more digits for a sliver, so that a marked area never reads as 0. */
static char *percent_text(double fraction) {
    const double percent = 100 * fraction;
    return percent > 0 && percent < 0.1 ? g_strdup_printf("%.3f%%", percent)
                                        : g_strdup_printf("%.1f%%", percent);
}

static void json_member_string(JsonBuilder *b, const char *name, const char *value) {
    json_builder_set_member_name(b, name);
    if (value) json_builder_add_string_value(b, value);
    else json_builder_add_null_value(b);
}

static void json_member_double(JsonBuilder *b, const char *name, double value) {
    json_builder_set_member_name(b, name);
    json_builder_add_double_value(b, value);
}

/* One image's entry of --json. */
static void add_json_image(JsonBuilder *b, const predict_item *it, char *const *paths,
                           const predict_summary *s) {
    json_builder_begin_object(b);
    json_member_string(b, "input", it->input);
    json_member_string(b, "output", paths[FILE_MASK]);
    json_member_string(b, "overlay", paths[FILE_OVERLAY]);
    json_member_string(b, "uncertainty_map", paths[FILE_UNCERTAINTY]);
    json_member_string(b, "prob", paths[FILE_PROB]);
    json_builder_set_member_name(b, "width");
    json_builder_add_int_value(b, it->image->width);
    json_builder_set_member_name(b, "height");
    json_builder_add_int_value(b, it->image->height);
    json_member_double(b, "area_fraction", s->marked);
    json_builder_set_member_name(b, "found");
    json_builder_add_boolean_value(b, s->marked > 0);
    json_member_double(b, "max_probability", s->prob_max);
    json_builder_set_member_name(b, "uncertainty");
    json_builder_begin_object(b);
    json_member_double(b, "mean", s->uncertainty_mean);
    json_member_double(b, "max", s->uncertainty_max);
    json_builder_end_object(b);
    json_builder_end_object(b);
}

/* The line of one image: its marked share, or that nothing was found. */
static void print_result(const predict_run *r, const predict_item *it, const char *mask_path,
                         const predict_summary *s) {
    const int n = (int)r->o->inputs->len;
    if (n > 1) printf("[%d/%d] ", r->stored, n);
    printf("%s -> %s (%dx%d): ", it->input, mask_path, it->image->width, it->image->height);
    if (s->marked > 0) {
        char *percent = percent_text(s->marked);
        printf("%s of the frame marked\n", percent);
        g_free(percent);
    } else {
        printf("no polyp found (highest probability %.2f, threshold %.2f)\n", s->prob_max,
               r->o->threshold);
    }
    fflush(stdout);
}

/* The writer: the outputs and a line per image ("[i/n] IMAGE -> MASK ..." for several). */
static void predict_store(void *item, void *data) {
    predict_run *r = data;
    predict_item *it = item;
    r->stored++;
    char *paths[N_FILES];
    for (int k = 0; k < N_FILES; k++) paths[k] = output_path(r->o, r->is_dir, k, it->input);
    predict_summary summary = {0};
    if (!it->error) write_outputs(r, it, paths, &summary, &it->error);
    if (it->error) {
        r->failed++;
        fprintf(stderr, "%s: %s\n", program, it->error->message);
        g_clear_error(&it->error);
    } else {
        print_result(r, it, paths[FILE_MASK], &summary);
        if (r->json) add_json_image(r->json, it, paths, &summary);
    }
    for (int k = 0; k < N_FILES; k++) g_free(paths[k]);
    g_clear_pointer(&it->prob, g_free);
    g_clear_pointer(&it->image, cs_image_free);
}

/* Writes `b`'s document to `path` atomically (g_file_set_contents: a temporary file,
 * renamed). Returns 0 or 1, having said why. */
static int write_json_file(JsonBuilder *b, const char *path) {
    JsonGenerator *gen = json_generator_new();
    JsonNode *root = json_builder_get_root(b);
    json_generator_set_root(gen, root);
    json_generator_set_pretty(gen, TRUE);
    gsize len;
    char *text = json_generator_to_data(gen, &len);
    GError *error = NULL;
    int status = 0;
    if (!g_file_set_contents(path, text, (gssize)len, &error)) {
        fprintf(stderr, "%s: --json: %s\n", program, error->message);
        g_error_free(error);
        status = 1;
    }
    g_free(text);
    json_node_unref(root);
    g_object_unref(gen);
    return status;
}

/* --json's document: the settings, then the images array that predict_store fills. */
static JsonBuilder *begin_predict_json(const predict_run *r) {
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_member_string(b, "weights", r->o->weights);
    json_member_double(b, "threshold", r->o->threshold);
    json_builder_set_member_name(b, "tta_views");
    json_builder_add_int_value(b, cs_tta_views(cs_model_tta(r->model)));
    json_builder_set_member_name(b, "images");
    json_builder_begin_array(b);
    return b;
}

static int end_predict_json(const predict_run *r, int n, double seconds) {
    json_builder_end_array(r->json);
    json_builder_set_member_name(r->json, "count");
    json_builder_add_int_value(r->json, n);
    json_builder_set_member_name(r->json, "failed");
    json_builder_add_int_value(r->json, r->failed);
    json_member_double(r->json, "seconds", seconds);
    json_builder_end_object(r->json);
    return write_json_file(r->json, r->o->json_path);
}

/* Every input through the pipeline; for several, a closing line with the rate. */
static int predict_all(predict_run *r) {
    const int n = (int)r->o->inputs->len;
    predict_item *items = g_new0(predict_item, n);
    void **pointers = g_new(void *, n);
    for (int i = 0; i < n; i++) {
        items[i].input = g_ptr_array_index(r->o->inputs, i);
        pointers[i] = &items[i];
    }
    if (r->o->json_path) r->json = begin_predict_json(r);
    cli_pipeline stages = {predict_load, predict_compute, predict_store, r, {0}};
    const gint64 start = g_get_monotonic_time();
    cli_pipeline_run(&stages, pointers, n, 4);
    const double seconds = (double)(g_get_monotonic_time() - start) * 1e-6;
    if (n > 1)
        printf("%d of %d images segmented in %.1f s (%.1f images/s; reading %.1f s, network "
               "%.1f s, writing %.1f s, side by side)%s\n", n - r->failed, n, seconds,
               n / seconds, stages.busy[0], stages.busy[1], stages.busy[2],
               r->failed ? "; the others failed, see above" : "");
    int status = r->failed ? 1 : 0;
    if (r->json) {
        if (end_predict_json(r, n, seconds)) status = 1;
        g_object_unref(r->json);
    }
    g_free(pointers);
    g_free(items);
    return status;
}

static int run_predict(const predict_options *o) {
    predict_run r = {.o = o};
    decide_output_dirs(o, r.is_dir);
    const int refused = refuse_colliding_outputs(o, r.is_dir);
    if (refused) return refused;
    if (!prepare_output_dirs(o, r.is_dir)) return 1;
    cs_set_num_threads(o->threads);
    int status;
    if (!(r.model = load_model(o->weights, o->device, o->precision, &status))) return status;
    cs_model_info info;
    cs_model_get_info(r.model, &info);
    if (o->all_outputs && info.arch == CS_ARCH_STAGE1) {
        status = usage_error("--all-outputs: '%s' is a stage-1 network, which has one output",
                             o->weights);
    } else {
        apply_tta(r.model, o->tta);
        r.outputs = o->all_outputs ? CS_OUT_ALL : CS_OUT_MASK;
        r.k = o->all_outputs ? 4 : 1;
        r.size = cs_model_input_size(r.model);
        status = predict_all(&r);
    }
    cs_model_free(r.model);
    return status;
}

static int cmd_predict(int argc, char **argv) {
    predict_options o = {.threshold = 0.5};
    int status = parse_predict(argc, argv, &o);
    if (!status) status = run_predict(&o);
    g_free(o.weights), g_free(o.output), g_free(o.prob), g_free(o.device), g_free(o.precision);
    g_free(o.json_path), g_free(o.overlay), g_free(o.uncertainty);
    if (o.inputs) g_ptr_array_free(o.inputs, TRUE);
    return status;
}

// ---------------------------------------------------------------------------------------
// info

static void print_info(const char *path, const cs_model_info *info) {
    printf("file:        %s\n", path);
    printf("network:     %s\n", info->arch == CS_ARCH_STAGE1
                                    ? "stage 1 (consistency reinforcement encoder + head)"
                                    : "full ConDSeg");
    printf("preset:      %s\n", info->preset);
    printf("tensors:     %d\n", info->n_tensors);
    printf("parameters:  %" G_GINT64_FORMAT "\n", info->n_parameters);
    printf("buffers:     %" G_GINT64_FORMAT " values (BatchNorm statistics)\n",
           info->n_buffer_values);
    printf("input size:  %dx%d\n", info->input_size, info->input_size);
}

static int cmd_info(int argc, char **argv) {
    const GOptionEntry entries[] = {{NULL, 0, 0, 0, NULL, NULL, NULL}};
    int status = parse_and_free(new_context("WEIGHTS - describe a weights file", entries,
                                            NULL, NULL), &argc, &argv);
    if (status) return status;
    if (argc != 2) return usage_error("info: expected one weights file, got %d arguments", argc - 1);
    GError *error = NULL;
    cs_model *model = cs_model_load(argv[1], &error);
    if (!model) return report_error(error);
    cs_model_info info;
    cs_model_get_info(model, &info);
    print_info(argv[1], &info);
    cs_model_free(model);
    return 0;
}

// ---------------------------------------------------------------------------------------
// train

static volatile int stop_requested = 0;

/* First Ctrl-C: finish the step, save, exit. Second: the default (immediate) action. */
static void on_interrupt(int sig) {
    stop_requested = 1;
    signal(sig, SIG_DFL);
}

static void format_duration(double seconds, char *buf, size_t size) {
    const long s = (long)(seconds + 0.5);
    if (s >= 3600) g_snprintf(buf, size, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else g_snprintf(buf, size, "%ld:%02ld", s / 60, s % 60);
}

typedef struct {
    gboolean tty;
    int last_plain_batch;
} train_display;

static void show_batch(const cs_train_progress *p, train_display *d, const char *eta) {
    if (d->tty) {
        const int width = 24, done = p->batches ? p->batch_index * width / p->batches : 0;
        char bar[32];
        for (int i = 0; i < width; i++) bar[i] = i < done ? '#' : '.';
        bar[width] = '\0';
        fprintf(stderr, "\repoch %d/%d [%s] %d/%d  loss %.4f  mIoU %.4f  ETA %s   ", p->epoch,
                p->epochs, bar, p->batch_index, p->batches, p->loss, p->miou, eta);
        fflush(stderr);
    } else if (p->batch_index == p->batches || p->batch_index - d->last_plain_batch >= 10 ||
               p->batch_index < d->last_plain_batch) {
        /* Not a terminal (a log file): a line every 10 batches. */
        fprintf(stderr, "epoch %d/%d batch %d/%d step %ld: loss %.4f mIoU %.4f, ETA %s\n",
                p->epoch, p->epochs, p->batch_index, p->batches, p->step, p->loss, p->miou, eta);
        d->last_plain_batch = p->batch_index;
    }
}

/* With several --data folders: each val split's line (the epoch's line shows their mean). */
static void show_splits(const cs_train_progress *p) {
    for (int i = 0; i < p->n_splits; i++) {
        const cs_train_split *v = &p->splits[i];
        fprintf(stderr, "  val %s: loss %.4f mIoU %.4f mDSC %.4f", v->name, v->loss,
                v->metrics.jaccard, v->metrics.dice);
        if (!isnan(v->false_alarm_rate))
            fprintf(stderr, ", false alarms %.1f%%", 100 * v->false_alarm_rate);
        fputc('\n', stderr);
    }
}

static void on_train_progress(const cs_train_progress *p, void *user_data) {
    train_display *d = user_data;
    char eta[32];
    format_duration(p->eta_seconds, eta, sizeof eta);
    if (p->epoch_done) {
        if (d->tty) fputc('\n', stderr);
        fprintf(stderr,
                "epoch %d/%d: train loss %.4f mIoU %.4f | val loss %.4f mIoU %.4f mDSC %.4f | lr %.3g\n",
                p->epoch, p->epochs, p->loss, p->miou, p->val_loss, p->val_miou, p->val_dice, p->lr);
        show_splits(p);
        if (p->message) fprintf(stderr, "  %s\n", p->message);
    } else if (p->message) {
        if (d->tty) fputc('\n', stderr);
        fprintf(stderr, "%s (step %ld)\n", p->message, p->step);
    } else {
        show_batch(p, d, eta);
    }
}

/* The command line of `train`, as given (0 and NULL: not given). */
typedef struct {
    int stage, epochs, batch, image_size, workers, threads;
    int patience_lr, patience_stop;   /* -1: not given */
    char **data;                      /* --data, repeatable */
    char *out, *init, *resume, *seed_text, *preset, *device, *precision;
    gint64 max_steps;
    gboolean no_augment, fix_background, single_sigmoid, sync_bn;
    double lr, lr_backbone;
} train_args;

static gboolean on_lr(const char *name, const char *value, gpointer data, GError **error) {
    train_args *a = data;
    return parse_positive_double(name, value, strcmp(name, "--lr") == 0 ? &a->lr : &a->lr_backbone,
                                 error);
}

static GOptionContext *train_context(train_args *a) {
    const GOptionEntry entries[] = {
        {"stage", 0, 0, G_OPTION_ARG_INT, &a->stage,
         "1: consistency reinforcement of the encoder; 2: the full ConDSeg network", "1|2"},
        {"data", 'd', 0, G_OPTION_ARG_FILENAME_ARRAY, &a->data,
         "Dataset folder: images/, masks/, train.txt, val.txt (here, or in $CONDSEG_DATA); "
         "repeat it to train on several (their train splits mixed, each val split reported)",
         "DIR"},
        {"out", 'o', 0, G_OPTION_ARG_FILENAME, &a->out, "Run folder (created)", "RUNDIR"},
        {"init", 0, 0, G_OPTION_ARG_FILENAME, &a->init,
         "Initial weights: a network of this stage (all of it), stage-1 weights (their "
         "encoder, for stage 2) or an ImageNet ResNet-50 trunk converted with "
         "tools/pth2safetensors.py --torchvision-resnet50", "WEIGHTS"},
        {"preset", 0, 0, G_OPTION_ARG_STRING, &a->preset,
         "Network size: condseg-r50 (the paper's, default) or condseg-compact (the same "
         "design, about 1/15 of the arithmetic)", "NAME"},
        {"epochs", 0, 0, G_OPTION_ARG_INT, &a->epochs, "Epochs (default 300)", "N"},
        {"batch", 'b', 0, G_OPTION_ARG_INT, &a->batch,
         "Batch size (default 8 in stage 1, 12 in stage 2, as the original)", "N"},
        {"lr", 0, 0, G_OPTION_ARG_CALLBACK, (gpointer)on_lr, "Learning rate (default 1e-4)", "LR"},
        {"lr-backbone", 0, 0, G_OPTION_ARG_CALLBACK, (gpointer)on_lr,
         "Learning rate of the encoder in stage 2 (default 1e-4)", "LR"},
        {"seed", 0, 0, G_OPTION_ARG_STRING, &a->seed_text, "Random seed (default 0)", "N"},
        {"no-augment", 0, 0, G_OPTION_ARG_NONE, &a->no_augment,
         "No spatial or photometric augmentation", NULL},
        {"max-steps", 0, 0, G_OPTION_ARG_INT64, &a->max_steps,
         "Stop after N optimiser steps (in total, a resumed run included) and save", "N"},
        {"resume", 0, 0, G_OPTION_ARG_FILENAME, &a->resume,
         "Continue the run in RUNDIR exactly where it stopped (its options are kept; "
         "--epochs and --max-steps may be given)", "RUNDIR"},
        {"patience-lr", 0, 0, G_OPTION_ARG_INT, &a->patience_lr,
         "Epochs without a better validation loss (with several --data, mean mIoU) before "
         "the learning rate drops 10x (default 30)", "N"},
        {"patience-stop", 0, 0, G_OPTION_ARG_INT, &a->patience_stop,
         "Epochs with a worse validation mIoU than the best before training stops "
         "(default 100)", "N"},
        {"image-size", 0, 0, G_OPTION_ARG_INT, &a->image_size,
         "Network input side, a multiple of 16 (default 256; smaller trains faster)", "N"},
        {"fix-background", 0, 0, G_OPTION_ARG_NONE, &a->fix_background,
         "Use 1 - mask after augmentation as the background target (the original uses the "
         "un-augmented mask)", NULL},
        {"single-sigmoid", 0, 0, G_OPTION_ARG_NONE, &a->single_sigmoid,
         "DiceBCE on the probabilities (the original applies a second sigmoid)", NULL},
        {"sync-bn", 0, 0, G_OPTION_ARG_NONE, &a->sync_bn,
         "Under mpirun: BatchNorm statistics of the whole batch, summed across the ranks "
         "(default: each rank's own share's)", NULL},
        {"workers", 0, 0, G_OPTION_ARG_INT, &a->workers, "Data loading threads", "N"},
        {"threads", 0, 0, G_OPTION_ARG_INT, &a->threads, "CPU threads (default: all cores)", "N"},
        {"device", 0, 0, G_OPTION_ARG_STRING, &a->device, DEVICE_HELP, "DEVICE"},
        {"precision", 0, 0, G_OPTION_ARG_STRING, &a->precision,
         "Convolution arithmetic: fp32 (default) or bf16 (bfloat16 inputs and float32 sums; "
         "BatchNorm, losses and Adam's float32 master weights unchanged); a resume keeps the "
         "run's unless given", "P"},
        {NULL, 0, 0, 0, NULL, NULL, NULL}};
    return new_context(
        "- train ConDSeg (stage 1 or 2)", entries, a,
        "Examples:\n"
        "  condseg train --stage 1 --data kvasir-seg --out runs/s1 --epochs 50\n"
        "  condseg train --stage 2 --data kvasir-seg --out runs/s2 --init runs/s1/best.safetensors\n"
        "  condseg train --resume runs/s2\n"
        "  condseg train --stage 2 --data kvasir-seg --data nopolyp --out runs/s2n\n\n"
        "The run folder receives train_log.csv, train.log, best.safetensors (best validation\n"
        "mIoU), last.safetensors and state.safetensors. Ctrl-C saves and stops; a second\n"
        "Ctrl-C aborts at once. --data is looked for in the current folder, then in\n"
        "$CONDSEG_DATA. With several --data folders the training set is all their train\n"
        "splits, each val split is logged on its own (valid_<folder>_* columns, with the\n"
        "false-alarm rate: the share of its polyp-free images marked over 1%), and the mean\n"
        "over the splits of their validation loss and mIoU drives the learning-rate drops,\n"
        "best.safetensors and early stopping; --resume keeps the list.\n\n"
        "Several processes (MPI; README, \"Training on several processes\"):\n"
        "  mpirun -np 2 condseg train --stage 2 --data kvasir-seg --out runs/s2 --threads 1\n"
        "splits each batch (--batch is the whole batch) over the ranks; rank 0 validates and\n"
        "writes the run folder; --resume works with any number of ranks.\n");
}

static int parse_train(int argc, char **argv, train_args *a) {
    const int status = parse_and_free(train_context(a), &argc, &argv);
    if (status) return status;
    if (argc > 1) return usage_error("train: unexpected argument '%s'", argv[1]);
    if (a->max_steps < 0 || a->workers < 0 || a->threads < 0)
        return usage_error("--max-steps, --workers, --threads: expected positive numbers");
    return 0;
}

/* The options of a new run: the stage's defaults, then what was given. */
static int new_run_options(train_args *a, cs_train_options *opt) {
    if (a->stage != 1 && a->stage != 2)
        return usage_error("--stage: expected 1 or 2%s", a->stage ? "" : " (required)");
    if (!a->data || !a->out) return usage_error("train: --data DIR and --out RUNDIR are required");
    if (a->epochs < 0 || a->batch < 0 || a->image_size < 0 || (a->image_size && a->image_size % 16))
        return usage_error("--epochs, --batch: positive numbers; --image-size: a multiple of 16");
    cs_train_options_defaults(opt, a->stage);
    if (a->seed_text) {
        char *end = NULL;
        opt->seed = g_ascii_strtoull(a->seed_text, &end, 10);
        if (!*a->seed_text || *end)
            return usage_error("--seed: expected a non-negative integer, got '%s'", a->seed_text);
    }
    for (char **dir = a->data; *dir; dir++) {
        char *found = find_data_dir(*dir);
        if (found) g_free(*dir), *dir = found;
    }
    opt->data_dirs = (const char *const *)a->data;
    opt->run_dir = a->out;
    opt->init_weights = a->init;
    opt->preset = a->preset;
    if (a->epochs) opt->epochs = a->epochs;
    if (a->batch) opt->batch = a->batch;
    if (a->lr > 0) opt->lr = a->lr;
    if (a->lr_backbone > 0) opt->lr_backbone = a->lr_backbone;
    if (a->image_size) opt->image_size = a->image_size;
    if (a->patience_lr >= 0) opt->patience_lr = a->patience_lr;
    if (a->patience_stop >= 0) opt->patience_stop = a->patience_stop;
    opt->augment = !a->no_augment;
    opt->fix_background = a->fix_background;
    opt->single_sigmoid = a->single_sigmoid;
    opt->sync_bn = a->sync_bn;
    return 0;
}

/* cs_train's options: a resumed run keeps its own, but for --epochs and --max-steps. */
static int train_options(train_args *a, cs_train_options *opt) {
    cs_train_options_defaults(opt, 2);
    if (a->resume) {
        opt->run_dir = a->resume;
        opt->epochs = a->epochs; /* 0: keep the run's */
    } else {
        const int status = new_run_options(a, opt);
        if (status) return status;
    }
    opt->max_steps = (long)a->max_steps;
    opt->workers = a->workers;
    opt->precision = a->precision; /* NULL: fp32, or a resumed run's own */
    return 0;
}

/* Trains until the end, early stopping, --max-steps or Ctrl-C (status 130). */
static int run_train(const cs_train_options *opt, gboolean resume, int threads) {
    cs_set_num_threads(threads);
    signal(SIGINT, on_interrupt);
    signal(SIGTERM, on_interrupt);
    train_display display = {.tty = isatty(fileno(stderr))};
    GError *error = NULL;
    if (!cs_train(opt, resume, on_train_progress, &display, &stop_requested, &error)) {
        if (display.tty) fputc('\n', stderr);
        if (cs_dist_size() == 1) return report_error(error);
        /* The other ranks wait in a collective: they are stopped with this one. */
        cs_dist_abort(1, error->message);
    }
    if (cs_dist_rank() == 0)
        fprintf(stderr, "training %s; run folder: %s\n",
                stop_requested ? "interrupted, state saved" : "finished", opt->run_dir);
    return stop_requested ? 130 : 0;
}

static int cmd_train(int argc, char **argv) {
    train_args a = {.patience_lr = -1, .patience_stop = -1};
    cs_train_options opt;
    int status = parse_train(argc, argv, &a);
    if (!status) status = train_options(&a, &opt);
    if (!status) status = select_device(a.device, NULL, &opt.device);
    GError *error = NULL;
    if (!status && !cs_dist_init(NULL, NULL, &error)) status = report_error(error);
    if (!status) status = run_train(&opt, a.resume != NULL, a.threads);
    cs_dist_finalize();
    g_strfreev(a.data), g_free(a.out), g_free(a.init), g_free(a.resume), g_free(a.seed_text);
    g_free(a.preset), g_free(a.device), g_free(a.precision);
    return status;
}

// ---------------------------------------------------------------------------------------
// eval

typedef struct {
    char *weights, *data, *split, *masks, *json_path, *prob_dir, *device, *precision;
    gboolean verbose, tta;
    int threads;
} eval_options;

typedef struct {
    JsonBuilder *json;        /* per-image array, or NULL */
    gboolean verbose;
    const char *prob_dir;     /* --save-prob */
    int size;                 /* the probability maps' side */
    gboolean failed;
} eval_display;

static GOptionContext *eval_context(eval_options *o) {
    const GOptionEntry entries[] = {
        {"weights", 'w', 0, G_OPTION_ARG_FILENAME, &o->weights,
         "Network weights (.safetensors; default: the installed default model)", "FILE"},
        {"data", 'd', 0, G_OPTION_ARG_FILENAME, &o->data,
         "Dataset folder (images/, masks/, SPLIT.txt), here or in $CONDSEG_DATA (default "
         "kvasir-seg)", "DIR"},
        {"split", 0, 0, G_OPTION_ARG_STRING, &o->split, "Which list: SPLIT.txt (default val)", "SPLIT"},
        {"save-masks", 0, 0, G_OPTION_ARG_FILENAME, &o->masks,
         "Write each prediction as a PNG mask at the image's size", "DIR"},
        {"save-prob", 0, 0, G_OPTION_ARG_FILENAME, &o->prob_dir,
         "Write each probability map (at the network's input size) as a float32 NumPy array "
         "<id>.npy", "DIR"},
        {"json", 0, 0, G_OPTION_ARG_FILENAME, &o->json_path,
         "Write the metrics (mean and per image) as JSON", "FILE"},
        {"verbose", 'v', 0, G_OPTION_ARG_NONE, &o->verbose, "Print each image's IoU and Dice", NULL},
        {"tta", 0, 0, G_OPTION_ARG_NONE, &o->tta, TTA_HELP, NULL},
        {"threads", 0, 0, G_OPTION_ARG_INT, &o->threads, "CPU threads (default: all cores)", "N"},
        {"device", 0, 0, G_OPTION_ARG_STRING, &o->device, DEVICE_HELP, "DEVICE"},
        {"precision", 0, 0, G_OPTION_ARG_STRING, &o->precision, PRECISION_HELP, "P"},
        {NULL, 0, 0, 0, NULL, NULL, NULL}};
    return new_context(
        "- evaluate weights on a dataset split", entries, o,
        "Metrics as the original ConDSeg code's test.py: per image on the network's SxS maps\n"
        "(S the size the weights were trained at: 256 for the paper's and for the default\n"
        "model), a pixel counts as foreground above 0.5; mIoU, mDSC, recall, precision,\n"
        "accuracy and F2 are means over the images. An empty mask or prediction: a ratio 0/0\n"
        "counts 1 (nothing to find and nothing found is right). When the split holds\n"
        "polyp-free images (empty masks, e.g. --data nopolyp), the false-alarm rate is\n"
        "printed too: the share of them whose predicted mask covers over 1% of the frame.\n\n"
        "Example (Kvasir-SEG's validation split, $CONDSEG_DATA holding kvasir-seg/):\n"
        "  condseg eval -w models/condseg-default.safetensors\n");
}

static int parse_eval(int argc, char **argv, eval_options *o) {
    const int status = parse_and_free(eval_context(o), &argc, &argv);
    if (status) return status;
    if (argc > 1) return usage_error("eval: unexpected argument '%s'", argv[1]);
    if (!o->weights) o->weights = cs_default_weights_path();
    if (!o->weights)
        return usage_error("eval: no --weights FILE given, and no default model is installed "
                           "(set CONDSEG_WEIGHTS or run ./install.sh)");
    if (!o->split) o->split = g_strdup("val");
    char *found = find_data_dir(o->data ? o->data : "kvasir-seg");
    if (!found && !o->data)
        return usage_error("eval: no --data DIR given, and no kvasir-seg/ in the current "
                           "folder or in $CONDSEG_DATA (%s)",
                           g_getenv("CONDSEG_DATA") ? g_getenv("CONDSEG_DATA") : "not set");
    if (found) g_free(o->data), o->data = found; /* else cs_evaluate names what is missing */
    return 0;
}

static void add_metrics(JsonBuilder *b, const cs_metrics *m) {
    const struct { const char *name; double value; } fields[] = {
        {"mIoU", m->jaccard}, {"mDSC", m->dice},         {"recall", m->recall},
        {"precision", m->precision}, {"accuracy", m->accuracy}, {"F2", m->f2}};
    for (size_t i = 0; i < G_N_ELEMENTS(fields); i++) {
        json_builder_set_member_name(b, fields[i].name);
        json_builder_add_double_value(b, fields[i].value);
    }
}

static void on_eval_image(const char *id, const cs_metrics *m, const float *prob,
                          void *user_data) {
    eval_display *d = user_data;
    if (d->verbose) printf("%s  IoU %.4f  Dice %.4f\n", id, m->jaccard, m->dice);
    if (d->prob_dir) {
        char *name = g_strdup_printf("%s.npy", id);
        char *path = g_build_filename(d->prob_dir, name, NULL);
        const int64_t shape[2] = {d->size, d->size};
        GError *error = NULL;
        if (!cs_write_npy_f32(path, prob, 2, shape, &error)) d->failed = report_error(error);
        g_free(path), g_free(name);
    }
    if (!d->json) return;
    json_builder_begin_object(d->json);
    json_builder_set_member_name(d->json, "id");
    json_builder_add_string_value(d->json, id);
    add_metrics(d->json, m);
    json_builder_end_object(d->json);
}

/* The false alarms on the split's polyp-free images (empty masks), when it has any. */
static void add_false_alarms(JsonBuilder *b, const cs_eval_summary *s) {
    if (!s->n_empty_masks) return;
    const struct { const char *name; double value; } fields[] = {
        {"empty_masks", s->n_empty_masks}, {"false_alarms", s->n_false_alarms},
        {"false_alarm_rate", (double)s->n_false_alarms / s->n_empty_masks},
        {"false_alarm_area", CS_FALSE_ALARM_AREA}};
    for (size_t i = 0; i < G_N_ELEMENTS(fields); i++) {
        json_builder_set_member_name(b, fields[i].name);
        if (i < 2) json_builder_add_int_value(b, (gint64)fields[i].value);
        else json_builder_add_double_value(b, fields[i].value);
    }
}

/* Closes the JSON document begun by run_eval and writes it atomically. */
static int write_eval_json(const eval_options *o, JsonBuilder *b, const cs_eval_summary *s) {
    json_builder_end_array(b);
    const char *const names[] = {"weights", "data", "split"};
    const char *const values[] = {o->weights, o->data, o->split};
    for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
        json_builder_set_member_name(b, names[i]);
        json_builder_add_string_value(b, values[i]);
    }
    json_builder_set_member_name(b, "count");
    json_builder_add_int_value(b, s->n_images);
    json_builder_set_member_name(b, "mean");
    json_builder_begin_object(b);
    add_metrics(b, &s->mean);
    json_builder_end_object(b);
    add_false_alarms(b, s);
    json_builder_end_object(b);
    return write_json_file(b, o->json_path);
}

/* Evaluates, with the per-image work of on_eval_image; fills *summary. */
static int evaluate(const eval_options *o, cs_model *model, eval_display *display,
                    cs_eval_summary *summary) {
    display->verbose = o->verbose;
    display->prob_dir = o->prob_dir;
    display->size = cs_model_input_size(model);
    if (o->prob_dir && g_mkdir_with_parents(o->prob_dir, 0755) != 0) {
        fprintf(stderr, "%s: --save-prob '%s': cannot create the folder: %s\n", program,
                o->prob_dir, g_strerror(errno));
        return 1;
    }
    if (o->json_path) {
        display->json = json_builder_new();
        json_builder_begin_object(display->json);
        json_builder_set_member_name(display->json, "images");
        json_builder_begin_array(display->json);
    }
    GError *error = NULL;
    if (!cs_evaluate(model, o->data, o->split, o->masks, on_eval_image, display, summary, &error))
        return report_error(error);
    return display->failed ? 1 : 0;
}

static int run_eval(const eval_options *o) {
    cs_set_num_threads(o->threads);
    int status;
    cs_model *model = load_model(o->weights, o->device, o->precision, &status);
    if (!model) return status;
    apply_tta(model, o->tta);
    eval_display display = {0};
    cs_eval_summary summary = {0};
    status = evaluate(o, model, &display, &summary);
    if (status == 0 || display.failed) {
        const cs_metrics *mean = &summary.mean;
        printf("%s on %s (%s, %d images%s)\n", o->weights, o->data, o->split, summary.n_images,
               o->tta ? ", test-time augmentation" : "");
        printf("  mIoU %.4f  mDSC %.4f  recall %.4f  precision %.4f  accuracy %.4f  F2 %.4f\n",
               mean->jaccard, mean->dice, mean->recall, mean->precision, mean->accuracy, mean->f2);
        if (summary.n_empty_masks)
            printf("  false alarms %.1f%%: %d of %d polyp-free images (empty masks) marked over "
                   "%.0f%% of the frame\n", 100.0 * summary.n_false_alarms / summary.n_empty_masks,
                   summary.n_false_alarms, summary.n_empty_masks, 100 * CS_FALSE_ALARM_AREA);
        if (display.json && write_eval_json(o, display.json, &summary)) status = 1;
    }
    if (display.json) g_object_unref(display.json);
    cs_model_free(model);
    return status;
}

static int cmd_eval(int argc, char **argv) {
    eval_options o = {0};
    int status = parse_eval(argc, argv, &o);
    if (!status) status = run_eval(&o);
    g_free(o.weights), g_free(o.data), g_free(o.split), g_free(o.masks), g_free(o.json_path);
    g_free(o.prob_dir), g_free(o.device), g_free(o.precision);
    return status;
}

// ---------------------------------------------------------------------------------------
// main

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} commands[] = {
    {"predict", cmd_predict, "segment images (binary masks, optional probabilities)"},
    {"info", cmd_info, "describe a weights file"},
    {"train", cmd_train, "train the stage-1 network or ConDSeg on a dataset"},
    {"eval", cmd_eval, "evaluate weights on a dataset split (mIoU, mDSC, ...)"},
};

static void print_help(FILE *to) {
    fprintf(to,
            "Usage: %s COMMAND [OPTIONS]\n\n"
            "ConDSeg medical image segmentation (AAAI 2025), version %s.\n\nCommands:\n",
            program, cs_version());
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++)
        fprintf(to, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(to, "\nRun '%s COMMAND --help' for the options of a command.\n", program);
}

int main(int argc, char **argv) {
    cs_select_blas_kernels(argv);
    if (argc < 2) {
        print_help(stderr);
        return EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        print_help(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("condseg %s (OpenBLAS kernels: %s)\n", cs_version(), cs_blas_kernels());
        return 0;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++) {
        if (!strcmp(argv[1], commands[i].name)) {
            /* The subcommand sees "condseg predict" as its program name. */
            char *name = g_strdup_printf("%s %s", program, commands[i].name);
            argv[1] = name;
            g_set_prgname(name);
            int status = commands[i].run(argc - 1, argv + 1);
            g_free(name);
            return status;
        }
    }
    fprintf(stderr, "%s: unknown command '%s'\n\n", program, argv[1]);
    print_help(stderr);
    return EXIT_USAGE;
}
