/* main.c — the `condseg` program: ConDSeg segmentation from the command line.
 *
 *   condseg predict -w WEIGHTS [-o OUT] [--threshold T] [--prob FILE.npy] [--all-outputs] IMAGE...
 *   condseg info WEIGHTS
 *
 * Exit status: 0 success, 1 a file could not be read or written (the other inputs are
 * still processed), 2 a bad command line.
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

#define DEVICE_HELP "Where to run: cpu, cuda (an NVIDIA GPU) or auto (default: a GPU when one is usable)"

/* --device: moves the model there; an explicit "auto" says why it stayed on the CPU. */
static int apply_device(cs_model *model, const char *device) {
    GError *error = NULL;
    char *note = NULL;
    if (!cs_model_set_device(model, device, &note, &error)) {
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

/* ---- predict ----------------------------------------------------------------------- */

typedef struct {
    char *weights;
    char *output;
    char *prob;
    double threshold;
    gboolean all_outputs;
    int threads;
    char *device;
    char *precision;
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
         "Network weights (.safetensors): a ConDSeg or stage-1 network (default: the "
         "installed default model)", "FILE"},
        {"output", 'o', 0, G_OPTION_ARG_FILENAME, &o.output,
         "Mask file (one image) or directory (several images; masks keep the input names)",
         "OUT"},
        {"threshold", 't', 0, G_OPTION_ARG_CALLBACK, (gpointer)parse_threshold,
         "Probability above which a pixel is foreground (default 0.5)", "T"},
        {"prob", 0, 0, G_OPTION_ARG_FILENAME, &o.prob,
         "Also write the raw probabilities at the network's input size (256 for the paper's "
         "settings) as a float32 NumPy array (K,S,S); a directory when there are several images",
         "FILE.npy"},
        {"all-outputs", 0, 0, G_OPTION_ARG_NONE, &o.all_outputs,
         "With --prob: all four outputs (mask, fg, bg, uncertainty), K = 4", NULL},
        {"threads", 0, 0, G_OPTION_ARG_INT, &o.threads, "CPU threads (default: all cores)", "N"},
        {"device", 0, 0, G_OPTION_ARG_STRING, &o.device, DEVICE_HELP, "DEVICE"},
        {"precision", 0, 0, G_OPTION_ARG_STRING, &o.precision, PRECISION_HELP, "P"},
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
    if (!o.weights) o.weights = cs_default_weights_path();
    if (!o.weights) {
        status = usage_error("predict: no --weights FILE given, and no default model is "
                             "installed (set CONDSEG_WEIGHTS or run ./install.sh)");
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
    if ((status = apply_device(model, o.device))) goto done;
    if ((status = apply_precision(model, o.precision))) goto done;
    cs_model_info info;
    cs_model_get_info(model, &info);
    if (o.all_outputs && info.arch == CS_ARCH_STAGE1) {
        status = usage_error("--all-outputs: '%s' is a stage-1 network, which has one "
                                   "output", o.weights);
        goto done;
    }
    const unsigned outputs = o.all_outputs ? CS_OUT_ALL : CS_OUT_MASK;
    const int k = o.all_outputs ? 4 : 1, size = cs_model_input_size(model);
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
    g_free(o.device);
    g_free(o.precision);
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
            printf("input size:  %dx%d\n", info.input_size, info.input_size);
            cs_model_free(model);
        }
    }
    g_option_context_free(ctx);
    return status;
}

/* ---- train ------------------------------------------------------------------------- */

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

static void on_train_progress(const cs_train_progress *p, void *user_data) {
    train_display *d = user_data;
    char eta[32];
    format_duration(p->eta_seconds, eta, sizeof eta);
    if (p->epoch_done) {
        if (d->tty) fputc('\n', stderr);
        fprintf(stderr,
                "epoch %d/%d: train loss %.4f mIoU %.4f | val loss %.4f mIoU %.4f mDSC %.4f | lr %.3g\n",
                p->epoch, p->epochs, p->loss, p->miou, p->val_loss, p->val_miou, p->val_dice, p->lr);
        if (p->message) fprintf(stderr, "  %s\n", p->message);
        return;
    }
    if (p->message) {
        if (d->tty) fputc('\n', stderr);
        fprintf(stderr, "%s (step %ld)\n", p->message, p->step);
        return;
    }
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

static cs_train_options *train_target; /* where the option callbacks write */

static gboolean parse_lr(const char *name, const char *value, gpointer data, GError **error) {
    (void)data;
    return parse_positive_double(name, value,
                                 strcmp(name, "--lr") == 0 ? &train_target->lr
                                                           : &train_target->lr_backbone,
                                 error);
}

static int cmd_train(int argc, char **argv) {
    int stage = 0, epochs = 0, batch = 0, image_size = 0, workers = 0, threads = 0;
    int patience_lr = -1, patience_stop = -1;
    char *data = NULL, *out = NULL, *init = NULL, *resume = NULL, *seed_text = NULL;
    char *preset = NULL, *device = NULL, *precision = NULL;
    gint64 max_steps = 0;
    gboolean no_augment = FALSE, fix_background = FALSE, single_sigmoid = FALSE;
    cs_train_options opt;
    cs_train_options_defaults(&opt, 2);
    cs_train_options lrs = opt; /* --lr / --lr-backbone land here first */
    lrs.lr = lrs.lr_backbone = 0;
    train_target = &lrs;
    GOptionEntry entries[] = {
        {"stage", 0, 0, G_OPTION_ARG_INT, &stage,
         "1: consistency reinforcement of the encoder; 2: the full ConDSeg network", "1|2"},
        {"data", 'd', 0, G_OPTION_ARG_FILENAME, &data,
         "Dataset folder: images/, masks/, train.txt, val.txt", "DIR"},
        {"out", 'o', 0, G_OPTION_ARG_FILENAME, &out, "Run folder (created)", "RUNDIR"},
        {"init", 0, 0, G_OPTION_ARG_FILENAME, &init,
         "Initial weights: a network of this stage (all of it), stage-1 weights (their "
         "encoder, for stage 2) or an ImageNet ResNet-50 trunk converted with "
         "tools/pth2safetensors.py --torchvision-resnet50", "WEIGHTS"},
        {"preset", 0, 0, G_OPTION_ARG_STRING, &preset,
         "Network size: condseg-r50 (the paper's, default) or condseg-compact (the same "
         "design, about 1/15 of the arithmetic)", "NAME"},
        {"epochs", 0, 0, G_OPTION_ARG_INT, &epochs, "Epochs (default 300)", "N"},
        {"batch", 'b', 0, G_OPTION_ARG_INT, &batch,
         "Batch size (default 8 in stage 1, 12 in stage 2, as the original)", "N"},
        {"lr", 0, 0, G_OPTION_ARG_CALLBACK, (gpointer)parse_lr, "Learning rate (default 1e-4)", "LR"},
        {"lr-backbone", 0, 0, G_OPTION_ARG_CALLBACK, (gpointer)parse_lr,
         "Learning rate of the encoder in stage 2 (default 1e-4)", "LR"},
        {"seed", 0, 0, G_OPTION_ARG_STRING, &seed_text, "Random seed (default 0)", "N"},
        {"no-augment", 0, 0, G_OPTION_ARG_NONE, &no_augment,
         "No spatial or photometric augmentation", NULL},
        {"max-steps", 0, 0, G_OPTION_ARG_INT64, &max_steps,
         "Stop after N optimiser steps (in total, a resumed run included) and save", "N"},
        {"resume", 0, 0, G_OPTION_ARG_FILENAME, &resume,
         "Continue the run in RUNDIR exactly where it stopped (its options are kept; "
         "--epochs and --max-steps may be given)", "RUNDIR"},
        {"patience-lr", 0, 0, G_OPTION_ARG_INT, &patience_lr,
         "Epochs without a better validation loss before the learning rate drops 10x "
         "(default 30)", "N"},
        {"patience-stop", 0, 0, G_OPTION_ARG_INT, &patience_stop,
         "Epochs with a worse validation mIoU than the best before training stops "
         "(default 100)", "N"},
        {"image-size", 0, 0, G_OPTION_ARG_INT, &image_size,
         "Network input side, a multiple of 16 (default 256; smaller trains faster)", "N"},
        {"fix-background", 0, 0, G_OPTION_ARG_NONE, &fix_background,
         "Use 1 - mask after augmentation as the background target (the original uses the "
         "un-augmented mask: spec §9 item 4)", NULL},
        {"single-sigmoid", 0, 0, G_OPTION_ARG_NONE, &single_sigmoid,
         "DiceBCE on the probabilities (the original applies a second sigmoid: §9 item 1)", NULL},
        {"workers", 0, 0, G_OPTION_ARG_INT, &workers, "Data loading threads", "N"},
        {"threads", 0, 0, G_OPTION_ARG_INT, &threads, "CPU threads (default: all cores)", "N"},
        {"device", 0, 0, G_OPTION_ARG_STRING, &device, DEVICE_HELP, "DEVICE"},
        {"precision", 0, 0, G_OPTION_ARG_STRING, &precision,
         "Convolution arithmetic: fp32 (default) or bf16 (bfloat16 inputs and float32 sums; "
         "BatchNorm, losses and Adam's float32 master weights unchanged); a resume keeps the "
         "run's unless given", "P"},
        {NULL, 0, 0, 0, NULL, NULL, NULL}};
    GOptionContext *ctx = g_option_context_new("- train ConDSeg (stage 1 or 2)");
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_set_description(
        ctx,
        "Examples:\n"
        "  condseg train --stage 1 --data kvasir-seg --out runs/s1 --epochs 50\n"
        "  condseg train --stage 2 --data kvasir-seg --out runs/s2 --init runs/s1/best.safetensors\n"
        "  condseg train --resume runs/s2\n\n"
        "The run folder receives train_log.csv, train.log, best.safetensors (best validation\n"
        "mIoU), last.safetensors and state.safetensors. Ctrl-C saves and stops; a second\n"
        "Ctrl-C aborts at once.\n");
    int status = 0;
    GError *error = NULL;
    if (!parse_options(ctx, &argc, &argv)) {
        status = EXIT_USAGE;
        goto done;
    }
    if (argc > 1) {
        status = usage_error("train: unexpected argument '%s'", argv[1]);
        goto done;
    }
    if (resume) {
        opt.run_dir = resume;
        opt.epochs = epochs; /* 0: keep the run's */
    } else {
        if (stage != 1 && stage != 2) {
            status = usage_error("--stage: expected 1 or 2%s", stage ? "" : " (required)");
            goto done;
        }
        if (!data || !out) {
            status = usage_error("train: --data DIR and --out RUNDIR are required");
            goto done;
        }
        cs_train_options_defaults(&opt, stage);
        opt.data_dir = data;
        opt.run_dir = out;
        opt.init_weights = init;
        opt.preset = preset;
        if (epochs) opt.epochs = epochs;
        if (batch) opt.batch = batch;
        if (lrs.lr > 0) opt.lr = lrs.lr;
        if (lrs.lr_backbone > 0) opt.lr_backbone = lrs.lr_backbone;
        if (image_size) opt.image_size = image_size;
        if (patience_lr >= 0) opt.patience_lr = patience_lr;
        if (patience_stop >= 0) opt.patience_stop = patience_stop;
        opt.augment = !no_augment;
        opt.fix_background = fix_background;
        opt.single_sigmoid = single_sigmoid;
        if (seed_text) {
            char *end = NULL;
            opt.seed = g_ascii_strtoull(seed_text, &end, 10);
            if (!*seed_text || *end) {
                status = usage_error("--seed: expected a non-negative integer, got '%s'", seed_text);
                goto done;
            }
        }
        if (epochs < 0 || batch < 0 || image_size < 0 ||
            (image_size && image_size % 16)) {
            status = usage_error("--epochs, --batch: positive numbers; --image-size: a multiple of 16");
            goto done;
        }
    }
    if (max_steps < 0 || workers < 0 || threads < 0) {
        status = usage_error("--max-steps, --workers, --threads: expected positive numbers");
        goto done;
    }
    opt.max_steps = (long)max_steps;
    opt.workers = workers;
    char *note = NULL;
    if (!(opt.device = cs_device_resolve(device, &note, &error))) {
        status = error->code == CS_ERROR_ARG ? EXIT_USAGE : 1;
        fprintf(stderr, "%s: --device: %s\n", program, error->message);
        g_clear_error(&error);
        goto done;
    }
    if (note && device) fprintf(stderr, "%s: %s\n", program, note);
    g_free(note);
    opt.precision = precision;
    cs_set_num_threads(threads);
    signal(SIGINT, on_interrupt);
    signal(SIGTERM, on_interrupt);
    train_display display = {.tty = isatty(fileno(stderr))};
    if (!cs_train(&opt, resume != NULL, on_train_progress, &display, &stop_requested, &error)) {
        if (display.tty) fputc('\n', stderr);
        fprintf(stderr, "%s: %s\n", program, error->message);
        g_error_free(error);
        status = 1;
    } else {
        fprintf(stderr, "training %s; run folder: %s\n",
                stop_requested ? "interrupted, state saved" : "finished", opt.run_dir);
        if (stop_requested) status = 130;
    }
done:
    g_option_context_free(ctx);
    g_free(data), g_free(out), g_free(init), g_free(resume), g_free(seed_text), g_free(preset);
    g_free(device), g_free(precision);
    return status;
}

/* ---- eval --------------------------------------------------------------------------- */

typedef struct {
    JsonBuilder *json;        /* per-image array, or NULL */
    gboolean verbose;
    const char *prob_dir;     /* --save-prob */
    int size;                 /* the probability maps' side */
    gboolean failed;
} eval_display;

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
        if (!cs_write_npy_f32(path, prob, 2, shape, &error)) {
            fprintf(stderr, "%s: %s\n", program, error->message);
            g_error_free(error);
            d->failed = TRUE;
        }
        g_free(path), g_free(name);
    }
    if (!d->json) return;
    json_builder_begin_object(d->json);
    json_builder_set_member_name(d->json, "id");
    json_builder_add_string_value(d->json, id);
    add_metrics(d->json, m);
    json_builder_end_object(d->json);
}

static int cmd_eval(int argc, char **argv) {
    char *weights = NULL, *data = NULL, *split = NULL, *masks = NULL, *json_path = NULL;
    char *prob_dir = NULL;
    char *device = NULL, *precision = NULL;
    gboolean verbose = FALSE;
    int threads = 0;
    GOptionEntry entries[] = {
        {"weights", 'w', 0, G_OPTION_ARG_FILENAME, &weights,
         "Network weights (.safetensors; default: the installed default model)", "FILE"},
        {"data", 'd', 0, G_OPTION_ARG_FILENAME, &data, "Dataset folder (images/, masks/, SPLIT.txt)", "DIR"},
        {"split", 0, 0, G_OPTION_ARG_STRING, &split, "Which list: SPLIT.txt (default val)", "SPLIT"},
        {"save-masks", 0, 0, G_OPTION_ARG_FILENAME, &masks,
         "Write each prediction as a PNG mask at the image's size", "DIR"},
        {"save-prob", 0, 0, G_OPTION_ARG_FILENAME, &prob_dir,
         "Write each probability map (at the network's input size) as a float32 NumPy array "
         "<id>.npy", "DIR"},
        {"json", 0, 0, G_OPTION_ARG_FILENAME, &json_path,
         "Write the metrics (mean and per image) as JSON", "FILE"},
        {"verbose", 'v', 0, G_OPTION_ARG_NONE, &verbose, "Print each image's IoU and Dice", NULL},
        {"threads", 0, 0, G_OPTION_ARG_INT, &threads, "CPU threads (default: all cores)", "N"},
        {"device", 0, 0, G_OPTION_ARG_STRING, &device, DEVICE_HELP, "DEVICE"},
        {"precision", 0, 0, G_OPTION_ARG_STRING, &precision, PRECISION_HELP, "P"},
        {NULL, 0, 0, 0, NULL, NULL, NULL}};
    GOptionContext *ctx = g_option_context_new("- evaluate weights on a dataset split");
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_set_description(
        ctx, "Metrics as the original's test.py (spec §7): per image on the 256x256 maps, a pixel\n"
             "counts as foreground above 0.5; mIoU, mDSC, recall, precision, accuracy and F2\n"
             "are means over the images.\n");
    int status = 0;
    cs_model *model = NULL;
    eval_display display = {0};
    GError *error = NULL;
    if (!parse_options(ctx, &argc, &argv)) {
        status = EXIT_USAGE;
        goto done;
    }
    if (!weights) weights = cs_default_weights_path();
    if (!weights || !data || argc > 1) {
        status = usage_error("eval: --data DIR is required, --weights FILE too when no default "
                             "model is installed%s", argc > 1 ? ", and nothing else" : "");
        goto done;
    }
    cs_set_num_threads(threads);
    model = cs_model_load(weights, &error);
    if (!model) {
        fprintf(stderr, "%s: %s\n", program, error->message);
        g_error_free(error);
        status = 1;
        goto done;
    }
    if ((status = apply_device(model, device))) goto done;
    if ((status = apply_precision(model, precision))) goto done;
    display.verbose = verbose;
    display.prob_dir = prob_dir;
    display.size = cs_model_input_size(model);
    if (prob_dir && g_mkdir_with_parents(prob_dir, 0755) != 0) {
        fprintf(stderr, "%s: --save-prob '%s': cannot create the folder: %s\n", program, prob_dir,
                g_strerror(errno));
        status = 1;
        goto done;
    }
    if (json_path) {
        display.json = json_builder_new();
        json_builder_begin_object(display.json);
        json_builder_set_member_name(display.json, "images");
        json_builder_begin_array(display.json);
    }
    cs_metrics mean;
    int n = 0;
    if (!cs_evaluate(model, data, split ? split : "val", masks, on_eval_image, &display, &mean, &n,
                     &error)) {
        fprintf(stderr, "%s: %s\n", program, error->message);
        g_error_free(error);
        status = 1;
        goto done;
    }
    if (display.failed) status = 1;
    printf("%s on %s (%s, %d images)\n", weights, data, split ? split : "val", n);
    printf("  mIoU %.4f  mDSC %.4f  recall %.4f  precision %.4f  accuracy %.4f  F2 %.4f\n",
           mean.jaccard, mean.dice, mean.recall, mean.precision, mean.accuracy, mean.f2);
    if (display.json) {
        JsonBuilder *b = display.json;
        json_builder_end_array(b);
        json_builder_set_member_name(b, "weights");
        json_builder_add_string_value(b, weights);
        json_builder_set_member_name(b, "data");
        json_builder_add_string_value(b, data);
        json_builder_set_member_name(b, "split");
        json_builder_add_string_value(b, split ? split : "val");
        json_builder_set_member_name(b, "count");
        json_builder_add_int_value(b, n);
        json_builder_set_member_name(b, "mean");
        json_builder_begin_object(b);
        add_metrics(b, &mean);
        json_builder_end_object(b);
        json_builder_end_object(b);
        JsonGenerator *gen = json_generator_new();
        JsonNode *root = json_builder_get_root(b);
        json_generator_set_root(gen, root);
        json_generator_set_pretty(gen, TRUE);
        gsize len;
        char *text = json_generator_to_data(gen, &len);
        /* g_file_set_contents writes a temporary file and renames it. */
        if (!g_file_set_contents(json_path, text, (gssize)len, &error)) {
            fprintf(stderr, "%s: --json: %s\n", program, error->message);
            g_error_free(error);
            status = 1;
        }
        g_free(text);
        json_node_unref(root);
        g_object_unref(gen);
    }
done:
    if (display.json) g_object_unref(display.json);
    cs_model_free(model);
    g_option_context_free(ctx);
    g_free(weights), g_free(data), g_free(split), g_free(masks), g_free(json_path);
    g_free(prob_dir), g_free(device), g_free(precision);
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
