/* model.c — the public model API of condseg.h: loading and saving weights, creating a
 * freshly initialised network, inference on preprocessed batches and on images. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "condseg.h"
#include "graph.h"
#include "kernels.h"
#include "net.h"
#include "params.h"
#include "safetensors.h"
#include "model_internal.h"

const char *cs_arch_name(cs_arch arch) { return arch == CS_ARCH_STAGE1 ? "stage1" : "condseg"; }

static cs_model *model_alloc(cs_arch arch, const cs_netcfg *cfg) {
    cs_model *m = g_new0(cs_model, 1);
    m->arch = arch;
    m->cfg = cfg;
    m->params = cs_paramset_new();
    if (arch == CS_ARCH_STAGE1) cs_stage1_declare(m->params, cfg);
    else cs_condseg_declare(m->params, cfg);
    cs_paramset_allocate(m->params);
    cs_paramset_to_backend(m->params, NULL);
    m->ctx = cs_ctx_new(m->params, NULL);
    m->input_size = CS_INPUT_SIZE;
    return m;
}

void cs_model_weights_changed(cs_model *model) {
    cs_cpu_conv_forget(model->weights_tag);
    model->weights_tag = 0;
}

void cs_model_free(cs_model *model) {
    if (!model) return;
    cs_model_weights_changed(model);
    cs_ctx_free(model->ctx);
    cs_paramset_free(model->params);
    g_free(model);
}

static const cs_netcfg *preset_or_error(const char *preset, const char *where, GError **error) {
    const cs_netcfg *cfg = cs_netcfg_find(preset ? preset : cs_preset_condseg_r50.name);
    if (!cfg)
        g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                    "%s: unknown network preset '%s' (known: %s)", where, preset,
                    cs_netcfg_names());
    return cfg;
}

cs_model *cs_model_load(const char *path, GError **error) {
    cs_safetensors *file = cs_st_open(path, error);
    if (!file) return NULL;
    cs_model *m = cs_model_load_file(file, NULL, error);
    cs_st_close(file);
    return m;
}

cs_model *cs_model_load_file(const cs_safetensors *file, const char *foreign_prefix,
                             GError **error) {
    const char *path = cs_st_path(file);
    cs_arch arch;
    if (cs_st_find(file, "output_block.c3.weight")) {
        arch = CS_ARCH_CONDSEG;
    } else if (cs_st_find(file, "head.conv_fuse.weight")) {
        arch = CS_ARCH_STAGE1;
    } else if (cs_st_find(file, "layer0.0.weight")) {
        g_set_error(error, CS_ERROR, CS_ERROR_TENSOR,
                    "weights file '%s' holds a ResNet trunk only (layer0.0.weight, no ConDSeg "
                    "or stage-1 head): initial weights for 'condseg train --init', not a "
                    "network to run", path);
        return NULL;
    } else {
        g_set_error(error, CS_ERROR, CS_ERROR_TENSOR,
                    "weights file '%s' holds neither a ConDSeg network (no tensor "
                    "'output_block.c3.weight') nor a stage-1 network (no tensor "
                    "'head.conv_fuse.weight')", path);
        return NULL;
    }
    char *where = g_strdup_printf("weights file '%s'", path);
    const cs_netcfg *cfg = preset_or_error(cs_st_metadata(file, CS_META_PRESET), where, error);
    g_free(where);
    if (!cfg) return NULL;
    const char *size_text = cs_st_metadata(file, CS_META_INPUT_SIZE);
    /* Strictly decimal digits: "16abc" or " 16" is a damaged file, not 16. */
    guint64 input_size = CS_INPUT_SIZE;
    if (size_text && !g_ascii_string_to_unsigned(size_text, 10, 16, 4096, &input_size, NULL))
        input_size = 0;
    if (input_size < 16 || input_size % 16 || input_size > 4096) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                    "weights file '%s': metadata %s = '%s' is not a multiple of 16 up to 4096",
                    path, CS_META_INPUT_SIZE, size_text);
        return NULL;
    }
    cs_model *m = model_alloc(arch, cfg);
    m->input_size = (int)input_size;
    gboolean ok = cs_paramset_load_except(m->params, file, foreign_prefix, error);
    cs_paramset_sync_to_backend(m->params);
    if (!ok) {
        cs_model_free(m);
        return NULL;
    }
    return m;
}

gboolean cs_model_save(const cs_model *model, const char *path, GError **error) {
    cs_paramset_sync_from_backend(model->params);
    char size_text[16];
    g_snprintf(size_text, sizeof size_text, "%d", model->input_size);
    const char *metadata[] = {"format", "pt", CS_META_ARCH, cs_arch_name(model->arch),
                              CS_META_PRESET, model->cfg->name, CS_META_INPUT_SIZE, size_text,
                              NULL};
    return cs_paramset_save(model->params, path, metadata, error);
}

#define CS_DEFAULT_WEIGHTS_NAME "condseg-default.safetensors"

char *cs_default_weights_path(void) {
    const char *env = g_getenv("CONDSEG_WEIGHTS");
    if (env && *env) return g_strdup(env);
    const char *const candidates[] = {
        CONDSEG_DATADIR "/" CS_DEFAULT_WEIGHTS_NAME,   /* installed */
        CONDSEG_SOURCE_DIR "/models/" CS_DEFAULT_WEIGHTS_NAME, /* the build tree's source */
    };
    for (size_t i = 0; i < G_N_ELEMENTS(candidates); i++)
        if (g_file_test(candidates[i], G_FILE_TEST_IS_REGULAR)) return g_strdup(candidates[i]);
    return NULL;
}

/* ---- initialisation (PyTorch defaults, spec §1.8) --------------------------------- */

static double rand_normal(GRand *rng) {
    /* Box-Muller; 1 - u keeps the logarithm finite. */
    double u = 1.0 - g_rand_double(rng), v = g_rand_double(rng);
    return sqrt(-2.0 * log(u)) * cos(2.0 * G_PI * v);
}

static gboolean is_bn_field(const cs_paramset *ps, const char *name) {
    /* A BatchNorm's weight/bias sit next to its running_mean. */
    const char *dot = strrchr(name, '.');
    char *mean = g_strdup_printf("%.*s.running_mean", (int)(dot - name), name);
    gboolean bn = cs_param_find(ps, mean) != NULL;
    g_free(mean);
    return bn;
}

static void init_params(cs_paramset *ps, uint64_t seed) {
    GRand *rng = g_rand_new_with_seed_array((const guint32[]){(guint32)seed, (guint32)(seed >> 32)}, 2);
    const cs_param *last_weight = NULL;
    for (int i = 0; i < cs_paramset_count(ps); i++) {
        cs_param *p = cs_paramset_at(ps, i);
        const char *leaf = strrchr(p->name, '.') + 1;
        if (p->kind == CS_COUNTER) {
            *p->count = 0;
        } else if (p->kind == CS_BUFFER) {
            const float v = strcmp(leaf, "running_var") == 0 ? 1.0f : 0.0f;
            for (int64_t j = 0; j < p->numel; j++) p->data[j] = v;
        } else if (is_bn_field(ps, p->name)) {
            const float v = strcmp(leaf, "weight") == 0 ? 1.0f : 0.0f;
            for (int64_t j = 0; j < p->numel; j++) p->data[j] = v;
        } else if (strcmp(leaf, "weight") == 0 && cs_is_encoder_name(p->name)) {
            /* Kaiming normal, fan_out, ReLU gain (torchvision's ResNet). */
            const int64_t fan_out = p->numel / p->shape[1];
            const double std = sqrt(2.0 / (double)fan_out);
            for (int64_t j = 0; j < p->numel; j++) p->data[j] = (float)(std * rand_normal(rng));
            last_weight = p;
        } else {
            /* Conv2d / Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the weight
             * and for its bias (fan_in of the weight declared just before). */
            const cs_param *w = strcmp(leaf, "weight") == 0 ? p : last_weight;
            const int64_t fan_in = w->numel / w->shape[0];
            const double bound = 1.0 / sqrt((double)fan_in);
            for (int64_t j = 0; j < p->numel; j++)
                p->data[j] = (float)(bound * (2.0 * g_rand_double(rng) - 1.0));
            last_weight = w;
        }
    }
    g_rand_free(rng);
}

cs_model *cs_model_new(cs_arch arch, const char *preset, uint64_t seed, GError **error) {
    const cs_netcfg *cfg = preset_or_error(preset, "network", error);
    if (!cfg) return NULL;
    cs_model *m = model_alloc(arch, cfg);
    init_params(m->params, seed);
    cs_paramset_sync_to_backend(m->params);
    return m;
}

void cs_model_get_info(const cs_model *model, cs_model_info *info) {
    info->arch = model->arch;
    info->preset = model->cfg->name;
    info->n_tensors = cs_paramset_count(model->params);
    info->n_parameters = model->params->n_trainable;
    info->n_buffer_values = model->params->n_buffer + model->params->n_counters;
    info->input_size = model->input_size;
}

int cs_model_input_size(const cs_model *model) { return model->input_size; }

void cs_model_set_progress(cs_model *model, cs_progress_fn fn, void *user_data) {
    model->progress = fn;
    model->progress_data = user_data;
}

void cs_model_set_probe(cs_model *model, cs_probe_fn fn, void *user_data) {
    cs_ctx_set_probe(model->ctx, fn, user_data);
}

void cs_set_num_threads(int n) { cs_cpu_init(n); }

/* libgomp's threads spin for about 300000 iterations at every barrier unless told
 * otherwise; when other programs share the cores (a desktop, parallel tests, a GIMP
 * session) a spinning thread holds the core its partner needs, and training ran 10x
 * slower here. 10000 keeps the quick hand-over without the convoy. */
#define CS_GOMP_SPINCOUNT "10000"

void cs_select_blas_kernels(char **argv) {
    if (g_strcmp0(g_getenv("CONDSEG_BLAS_AUTO"), "0") == 0) return;
    gboolean changed = FALSE;
    const char *better = cs_cpu_better_blas_core();
    if (better) {
        g_setenv("OPENBLAS_CORETYPE", better, TRUE);
        changed = TRUE;
    }
    if (!g_getenv("GOMP_SPINCOUNT") && !g_getenv("OMP_WAIT_POLICY")) {
        g_setenv("GOMP_SPINCOUNT", CS_GOMP_SPINCOUNT, TRUE);
        changed = TRUE;
    }
    /* Both are read when the libraries load: only a new image of the program sees them. */
    if (changed) execv("/proc/self/exe", argv);
    if (better) g_unsetenv("OPENBLAS_CORETYPE"); /* exec failed: carry on as we are */
}

const char *cs_blas_kernels(void) { return cs_cpu_blas_core(); }

/* ---- precision ---------------------------------------------------------------------- */

gboolean cs_precision_parse(const char *precision, gboolean *bf16, char **note,
                            GError **error) {
    if (note) *note = NULL;
    if (!precision || strcmp(precision, "fp32") == 0) {
        *bf16 = FALSE;
        return TRUE;
    }
    if (strcmp(precision, "bf16") != 0) {
        g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                    "unknown precision '%s' (expected fp32 or bf16)", precision);
        return FALSE;
    }
    const char *why = cs_cpu_bf16_unsupported();
    *bf16 = why == NULL;
    if (why && note) *note = g_strdup_printf("%s: running in fp32", why);
    else if (note && cs_cpu_bf16_slow()) *note = g_strdup(cs_cpu_bf16_slow());
    return TRUE;
}

gboolean cs_model_set_precision(cs_model *model, const char *precision, char **note,
                                GError **error) {
    gboolean bf16;
    if (!cs_precision_parse(precision, &bf16, note, error)) return FALSE;
    model->bf16 = bf16;
    cs_ctx_set_bf16(model->ctx, bf16);
    return TRUE;
}

const char *cs_model_precision(const cs_model *model) { return model->bf16 ? "bf16" : "fp32"; }

/* ---- inference -------------------------------------------------------------------- */

typedef struct {
    cs_model *model;
    const float *input;
    int batch, height, width;
    unsigned outputs;
    float *const *out;
} forward_run;

/* The pass itself, run guarded: out of memory ends it with an error. */
static void run_forward(cs_ctx *ctx, void *data) {
    const forward_run *r = data;
    cs_model *model = r->model;
    cs_tensor *image = cs_tensor_from(ctx, r->input, r->batch, 3, r->height, r->width);
    cs_tensor *result[4] = {NULL, NULL, NULL, NULL};
    if (model->arch == CS_ARCH_STAGE1) {
        result[0] = cs_stage1_forward(ctx, model->cfg, image);
        if (model->progress) model->progress(1.0, model->progress_data);
    } else {
        cs_condseg_forward(ctx, model->cfg, image, r->outputs, result, model->progress,
                           model->progress_data);
    }
    int k = 0;
    for (int i = 0; i < 4; i++) {
        if (!(r->outputs & (1u << i))) continue;
        cs_tensor_read(ctx, result[i], r->out[k++]);
    }
}

/* One pass of the network on `input`, no test-time augmentation. */
static gboolean forward_once(cs_model *model, const float *input, int batch, int height,
                             int width, unsigned outputs, float *const *out, GError **error) {
    cs_ctx_reset(model->ctx);
    if (!model->weights_tag) model->weights_tag = cs_cpu_conv_new_tag();
    cs_ctx_set_weights_tag(model->ctx, model->weights_tag);
    cs_ctx_set_bf16(model->ctx, model->bf16);
    forward_run run = {model, input, batch, height, width, outputs, out};
    if (!cs_ctx_run_guarded(model->ctx, run_forward, &run, error)) return FALSE;
    cs_ctx_reset(model->ctx);
    return TRUE;
}

/* ---- test-time augmentation ------------------------------------------------------------ */

/* The views of TTA: bit 0 mirrors left-right, bit 1 top-bottom; view 0 is the image itself.
 * A view's flag in cs_model_set_tta's set is 1 << (view - 1): CS_TTA_HFLIP, _VFLIP, _HVFLIP. */
#define N_VIEWS 4

void cs_model_set_tta(cs_model *model, unsigned flips) { model->tta = flips & CS_TTA_ALL; }

unsigned cs_model_tta(const cs_model *model) { return model->tta; }

int cs_tta_views(unsigned flips) {
    int n = 1;
    for (int view = 1; view < N_VIEWS; view++) n += (flips >> (view - 1)) & 1u;
    return n;
}

/* Mirrors `n` planes of height x width from `src` into `dst` as view `view` says. A mirror
 * is its own inverse: the same call takes an output back to the image's orientation. */
static void mirror_planes(const float *src, float *dst, int n, int height, int width, int view) {
    const gboolean lr = view & 1, tb = (view >> 1) & 1;
    for (int k = 0; k < n; k++) {
        const float *s = src + (size_t)k * height * width;
        float *d = dst + (size_t)k * height * width;
        for (int y = 0; y < height; y++) {
            const float *row = s + (size_t)(tb ? height - 1 - y : y) * width;
            float *to = d + (size_t)y * width;
            if (!lr) memcpy(to, row, sizeof(float) * width);
            else for (int x = 0; x < width; x++) to[x] = row[width - 1 - x];
        }
    }
}

/* The model's progress over all views: view i of n covers [i/n, (i+1)/n]. */
typedef struct {
    cs_progress_fn fn;
    void *data;
    int view_index, n_views;
} tta_progress;

static void report_tta_progress(double fraction, void *user_data) {
    const tta_progress *p = user_data;
    p->fn((p->view_index + fraction) / p->n_views, p->data);
}

/* The mean of the outputs over the identity and the mirrored views in model->tta, each
 * view's outputs mirrored back first. */
static gboolean forward_tta(cs_model *model, const float *input, int batch, int height,
                            int width, unsigned outputs, float *const *out, GError **error) {
    const size_t plane = (size_t)height * width, per_output = (size_t)batch * plane;
    int n_outputs = 0;
    for (int i = 0; i < 4; i++) n_outputs += (outputs >> i) & 1u;
    float *view_input = g_try_malloc(sizeof(float) * 3 * per_output);
    float *view_out = g_try_malloc(sizeof(float) * n_outputs * per_output);
    if (!view_input || !view_out) {
        g_set_error(error, CS_ERROR, CS_ERROR_MEMORY,
                    "out of memory: no room for the test-time augmentation's mirrored copies "
                    "(%zu bytes)", sizeof(float) * (3 + n_outputs) * per_output);
        g_free(view_input), g_free(view_out);
        return FALSE;
    }
    float *view_ptr[4];
    for (int k = 0; k < n_outputs; k++) view_ptr[k] = view_out + k * per_output;
    const cs_progress_fn user_progress = model->progress;
    tta_progress progress = {user_progress, model->progress_data, 0, cs_tta_views(model->tta)};
    if (user_progress) cs_model_set_progress(model, report_tta_progress, &progress);
    gboolean ok = forward_once(model, input, batch, height, width, outputs, out, error);
    for (int view = 1; ok && view < N_VIEWS; view++) {
        if (!((model->tta >> (view - 1)) & 1u)) continue;
        progress.view_index++;
        mirror_planes(input, view_input, 3 * batch, height, width, view);
        ok = forward_once(model, view_input, batch, height, width, outputs, view_ptr, error);
        for (int k = 0; ok && k < n_outputs; k++) {
            mirror_planes(view_ptr[k], view_input, batch, height, width, view);  /* back */
            for (size_t i = 0; i < per_output; i++) out[k][i] += view_input[i];
        }
    }
    const float scale = 1.0f / (float)progress.n_views;
    for (int k = 0; ok && k < n_outputs; k++)
        for (size_t i = 0; i < per_output; i++) out[k][i] *= scale;
    if (user_progress) cs_model_set_progress(model, user_progress, progress.data);
    g_free(view_input), g_free(view_out);
    return ok;
}

gboolean cs_model_forward(cs_model *model, const float *input, int batch, int height,
                          int width, unsigned outputs, float *const *out, GError **error) {
    if (batch < 1 || height < 16 || width < 16 || height % 16 || width % 16) {
        g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                    "input of %d image(s) of %dx%d: need at least one image, with height and "
                    "width positive multiples of 16", batch, width, height);
        return FALSE;
    }
    const unsigned allowed = model->arch == CS_ARCH_STAGE1 ? CS_OUT_MASK : CS_OUT_ALL;
    if (!outputs || (outputs & ~allowed)) {
        g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                    "outputs 0x%x requested from a %s network, which has %s", outputs,
                    cs_arch_name(model->arch),
                    model->arch == CS_ARCH_STAGE1 ? "one output (the mask)"
                                                  : "four (mask, fg, bg, uncertainty)");
        return FALSE;
    }
    return model->tta ? forward_tta(model, input, batch, height, width, outputs, out, error)
                      : forward_once(model, input, batch, height, width, outputs, out, error);
}

gboolean cs_model_predict_image(cs_model *model, const cs_image *bgr, unsigned outputs,
                                float *prob, GError **error) {
    if (!bgr || bgr->channels != 3 || bgr->width < 1 || bgr->height < 1) {
        g_set_error(error, CS_ERROR, CS_ERROR_ARG, "predict: expected a 3-channel BGR image");
        return FALSE;
    }
    const int size = model->input_size, plane = size * size;
    /* up to 250 MB at the largest input size: asked for, not assumed */
    guint8 *resized = g_try_malloc((size_t)plane * 3);
    float *input = g_try_malloc(sizeof(float) * 3 * plane);
    if (!resized || !input) {
        g_set_error(error, CS_ERROR, CS_ERROR_MEMORY,
                    "out of memory: could not allocate %zu bytes for the network's %dx%d input",
                    (size_t)plane * (3 + 3 * sizeof(float)), size, size);
        g_free(resized);
        g_free(input);
        return FALSE;
    }
    cs_resize_linear_u8(bgr->data, bgr->width, bgr->height, resized, size, size, 3);
    /* HWC -> CHW, /255 in double as the original does (spec §1.2 step 6). */
    for (int p = 0; p < plane; p++)
        for (int c = 0; c < 3; c++) input[c * plane + p] = (float)(resized[p * 3 + c] / 255.0);
    g_free(resized);
    float *out[4];
    int k = 0;
    for (int i = 0; i < 4; i++)
        if (outputs & (1u << i)) out[k] = prob + (size_t)k * plane, k++;
    gboolean ok = cs_model_forward(model, input, 1, size, size, outputs, out, error);
    g_free(input);
    return ok;
}

void cs_prob_to_mask(const float *prob, int prob_w, int prob_h, float threshold, cs_image *mask) {
    const size_t n = (size_t)mask->width * mask->height;
    float *plane = NULL;
    const float *src = prob;
    if (mask->width != prob_w || mask->height != prob_h) {
        plane = g_malloc(sizeof(float) * n);
        cs_resize_linear_f32(prob, prob_w, prob_h, plane, mask->width, mask->height);
        src = plane;
    }
    for (size_t i = 0; i < n; i++) mask->data[i] = src[i] > threshold ? 255 : 0;
    g_free(plane);
}

/* ---- the uncertainty shown to users ------------------------------------------------------ */

void cs_prob_to_uncertainty(const float *prob, size_t n, float *uncertainty) {
    for (size_t i = 0; i < n; i++) {
        const double p = CLAMP((double)prob[i], 0.0, 1.0);
        /* x log x -> 0 as x -> 0: a sure pixel has no uncertainty */
        const double h = (p > 0 ? -p * log2(p) : 0.0) + (p < 1 ? -(1 - p) * log2(1 - p) : 0.0);
        uncertainty[i] = (float)CLAMP(h, 0.0, 1.0);
    }
}
