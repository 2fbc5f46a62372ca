/* main.c — the `condseg` program: ConDSeg segmentation from the command line.
 *
 *   condseg predict -w WEIGHTS [-o OUT] [--threshold T] [--prob FILE.npy] [--all-outputs] IMAGE...
 *   condseg info WEIGHTS
 *
 * Exit status: 0 success, 1 a file could not be read or written (the other inputs are
 * still processed), 2 a bad command line.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "condseg.h"

#define EXIT_USAGE 2

static const char *program = "condseg";

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

/* Parses the options of one subcommand; on failure prints the reason and returns FALSE. */
static gboolean parse_options(GOptionContext *ctx, int *argc, char ***argv) {
    GError *error = NULL;
    if (!g_option_context_parse(ctx, argc, argv, &error)) {
        fprintf(stderr, "%s: %s\n", program, error->message);
        g_error_free(error);
        return FALSE;
    }
    return TRUE;
}

/* "dir/name.ext" -> "name" */
static char *file_stem(const char *path) {
    char *base = g_path_get_basename(path);
    char *dot = strrchr(base, '.');
    if (dot && dot != base) *dot = '\0';
    return base;
}

/* ---- predict ----------------------------------------------------------------------- */

typedef struct {
    char *weights;
    char *output;
    char *prob;
    double threshold;
    gboolean all_outputs;
    int threads;
} predict_options;

static gboolean parse_threshold(const char *name, const char *value, gpointer data,
                                GError **error) {
    (void)name;
    predict_options *o = data;
    char *end = NULL;
    errno = 0;
    double t = g_ascii_strtod(value, &end);
    if (errno || end == value || *end || !(t >= 0.0 && t <= 1.0)) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "--threshold: expected a number between 0 and 1, got '%s'", value);
        return FALSE;
    }
    o->threshold = t;
    return TRUE;
}

/* Where the mask (or .npy) of `input` goes: OUT itself for one input unless OUT is a
 * directory; OUT/<stem>.<ext> for several inputs; <stem>.mask.<ext> when no OUT. */
static char *output_path(const char *out, gboolean out_is_dir, const char *input,
                         const char *ext, const char *default_suffix) {
    char *stem = file_stem(input);
    char *path;
    if (!out) path = g_strdup_printf("%s%s.%s", stem, default_suffix, ext);
    else if (out_is_dir) {
        char *name = g_strdup_printf("%s.%s", stem, ext);
        path = g_build_filename(out, name, NULL);
        g_free(name);
    } else path = g_strdup(out);
    g_free(stem);
    return path;
}

/* An output that names a directory: several inputs, or an existing directory. */
static gboolean prepare_output_dir(const char *out, int n_inputs, gboolean *is_dir, const char *option) {
    *is_dir = FALSE;
    if (!out) return TRUE;
    if (n_inputs > 1 || g_file_test(out, G_FILE_TEST_IS_DIR)) {
        *is_dir = TRUE;
        if (g_mkdir_with_parents(out, 0755) != 0) {
            fprintf(stderr, "%s: %s '%s': cannot create the directory: %s\n", program, option,
                    out, g_strerror(errno));
            return FALSE;
        }
    }
    return TRUE;
}

static int cmd_predict(int argc, char **argv) {
    predict_options o = {.threshold = 0.5};
    GOptionEntry entries[] = {
        {"weights", 'w', 0, G_OPTION_ARG_FILENAME, &o.weights,
         "Network weights (.safetensors): a ConDSeg or stage-1 network", "FILE"},
        {"output", 'o', 0, G_OPTION_ARG_FILENAME, &o.output,
         "Mask file (one image) or directory (several images; masks keep the input names)",
         "OUT"},
        {"threshold", 't', 0, G_OPTION_ARG_CALLBACK, (gpointer)parse_threshold,
         "Probability above which a pixel is foreground (default 0.5)", "T"},
        {"prob", 0, 0, G_OPTION_ARG_FILENAME, &o.prob,
         "Also write the raw 256x256 probabilities as a float32 NumPy array (K,256,256); "
         "a directory when there are several images", "FILE.npy"},
        {"all-outputs", 0, 0, G_OPTION_ARG_NONE, &o.all_outputs,
         "With --prob: all four outputs (mask, fg, bg, uncertainty), K = 4", NULL},
        {"threads", 0, 0, G_OPTION_ARG_INT, &o.threads, "CPU threads (default: all cores)", "N"},
        {NULL, 0, 0, 0, NULL, NULL, NULL}};
    GOptionContext *ctx = g_option_context_new("IMAGE... - segment images with ConDSeg");
    GOptionGroup *group = g_option_group_new("predict", "predict", "predict", &o, NULL);
    g_option_group_add_entries(group, entries);
    g_option_context_set_main_group(ctx, group);
    g_option_context_set_description(
        ctx, "Writes, for each image, the binary mask (PNG, 0/255) at the image's own size:\n"
             "the network's 256x256 output resized back and thresholded.\n"
             "Reads JPEG, PNG, BMP and TIFF.\n");
    int status = 0;
    cs_model *model = NULL;
    if (!parse_options(ctx, &argc, &argv)) {
        status = EXIT_USAGE;
        goto done;
    }
    if (!o.weights) {
        status = usage_error("predict: --weights FILE is required");
        goto done;
    }
    if (argc < 2) {
        status = usage_error("predict: no input image given");
        goto done;
    }
    if (o.threads < 0) {
        status = usage_error("--threads: expected a positive number, got %d", o.threads);
        goto done;
    }
    const int n_inputs = argc - 1;
    gboolean out_is_dir, prob_is_dir;
    if (!prepare_output_dir(o.output, n_inputs, &out_is_dir, "--output") ||
        !prepare_output_dir(o.prob, n_inputs, &prob_is_dir, "--prob")) {
        status = 1;
        goto done;
    }
    cs_set_num_threads(o.threads);

    GError *error = NULL;
    model = cs_model_load(o.weights, &error);
    if (!model) {
        fprintf(stderr, "%s: %s\n", program, error->message);
        g_error_free(error);
        status = 1;
        goto done;
    }
    cs_model_info info;
    cs_model_get_info(model, &info);
    if (o.all_outputs && info.arch == CS_ARCH_STAGE1) {
        status = usage_error("--all-outputs: '%s' is a stage-1 network, which has one "
                                   "output", o.weights);
        goto done;
    }
    const unsigned outputs = o.all_outputs ? CS_OUT_ALL : CS_OUT_MASK;
    const int k = o.all_outputs ? 4 : 1, size = CS_INPUT_SIZE;
    float *prob = g_new(float, (size_t)k * size * size);
    for (int i = 1; i < argc; i++) {
        const char *input = argv[i];
        cs_image *image = cs_image_load_bgr(input, &error);
        if (!image || !cs_model_predict_image(model, image, outputs, prob, &error)) {
            fprintf(stderr, "%s: %s\n", program, error->message);
            g_clear_error(&error);
            cs_image_free(image);
            status = 1;
            continue;
        }
        cs_image *mask = cs_image_new(image->width, image->height, 1);
        cs_prob_to_mask(prob, size, size, (float)o.threshold, mask);
        char *mask_path = output_path(o.output, out_is_dir, input, "png", ".mask");
        if (!cs_image_save_png(mask, mask_path, &error)) {
            fprintf(stderr, "%s: %s\n", program, error->message);
            g_clear_error(&error);
            status = 1;
        } else if (o.prob) {
            char *npy_path = output_path(o.prob, prob_is_dir, input, "npy", ".prob");
            const int64_t shape[3] = {k, size, size};
            if (!cs_write_npy_f32(npy_path, prob, 3, shape, &error)) {
                fprintf(stderr, "%s: %s\n", program, error->message);
                g_clear_error(&error);
                status = 1;
            }
            g_free(npy_path);
        }
        g_free(mask_path);
        cs_image_free(mask);
        cs_image_free(image);
    }
    g_free(prob);
done:
    cs_model_free(model);
    g_option_context_free(ctx);
    g_free(o.weights);
    g_free(o.output);
    g_free(o.prob);
    return status;
}

/* ---- info -------------------------------------------------------------------------- */

static int cmd_info(int argc, char **argv) {
    GOptionContext *ctx = g_option_context_new("WEIGHTS - describe a weights file");
    GOptionEntry entries[] = {{NULL, 0, 0, 0, NULL, NULL, NULL}};
    g_option_context_add_main_entries(ctx, entries, NULL);
    int status = 0;
    if (!parse_options(ctx, &argc, &argv)) {
        status = EXIT_USAGE;
    } else if (argc != 2) {
        status = usage_error("info: expected one weights file, got %d arguments", argc - 1);
    } else {
        GError *error = NULL;
        cs_model *model = cs_model_load(argv[1], &error);
        if (!model) {
            fprintf(stderr, "%s: %s\n", program, error->message);
            g_error_free(error);
            status = 1;
        } else {
            cs_model_info info;
            cs_model_get_info(model, &info);
            printf("file:        %s\n", argv[1]);
            printf("network:     %s\n", info.arch == CS_ARCH_STAGE1
                                            ? "stage 1 (consistency reinforcement encoder + head)"
                                            : "full ConDSeg");
            printf("preset:      %s\n", info.preset);
            printf("tensors:     %d\n", info.n_tensors);
            printf("parameters:  %" G_GINT64_FORMAT "\n", info.n_parameters);
            printf("buffers:     %" G_GINT64_FORMAT " values (BatchNorm statistics)\n",
                   info.n_buffer_values);
            cs_model_free(model);
        }
    }
    g_option_context_free(ctx);
    return status;
}

/* ---- main -------------------------------------------------------------------------- */

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} commands[] = {
    {"predict", cmd_predict, "segment images (binary masks, optional probabilities)"},
    {"info", cmd_info, "describe a weights file"},
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
