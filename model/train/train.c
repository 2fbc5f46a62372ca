/* train.c — ConDSeg's two training stages (spec §4-§6): the training step of each stage,
 * validation, ReduceLROnPlateau, early stopping, checkpoints, and the run directory that
 * lets an interrupted run continue exactly where it stopped.
 *
 * Run directory: train_log.csv (the original's columns), train.log (readable),
 * best.safetensors (best validation mIoU), last.safetensors (weights at the last save),
 * state.safetensors (the weights, Adam's moments, the loop's position and the options, as
 * JSON metadata: the one commit point of a checkpoint). Every file is written atomically;
 * a resume drops the train_log.csv rows its checkpoint does not cover and the temporary
 * files a kill left behind. Several dataset folders: their train splits are one training
 * set, their val splits are validated one by one, and the means over the splits steer.
 *
 * The run (cs_train, at the end) is shaped like llm.c's main loop: run_open (a new run or
 * a resumed one: state, data, network, trainer, loaders, logs), then train_epoch and
 * end_epoch (validation, log row, LR plateau, best checkpoint, state, early stopping)
 * until the last epoch, and run_close. */
#include <errno.h>
#include <glib/gstdio.h>   /* g_unlink */
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "condseg.h"
#include "data.h"
#include "dist.h"
#include "fileio.h"
#include "losses.h"
#include "model_internal.h"
#include "optim.h"
#include "safetensors.h"

#define STATE_FILE "state.safetensors"
#define LAST_FILE "last.safetensors"
#define BEST_FILE "best.safetensors"
#define CSV_FILE "train_log.csv"
#define LOG_FILE "train.log"
#define CSV_HEADER                                                                        \
    "epoch,train_loss,train_mIoU,train_f1,train_recall,train_precision,valid_loss,"      \
    "valid_mIoU,valid_f1,valid_recall,valid_precision"

void cs_train_options_defaults(cs_train_options *opt, int stage) {
    memset(opt, 0, sizeof *opt);
    opt->stage = stage;
    opt->epochs = 300;
    opt->batch = stage == 1 ? 8 : 12;
    opt->lr = 1e-4;
    opt->lr_backbone = 1e-4;
    opt->seed = 0;
    opt->augment = TRUE;
    opt->image_size = CS_INPUT_SIZE;
    opt->patience_lr = 30;
    opt->patience_stop = 100;
}

/* ---- the loop's state ------------------------------------------------------------------ */

typedef struct {
    cs_train_options opt;     /* strings below */
    char **data_dirs, *run_dir, *init_weights, *preset;
    int epoch;                /* 0-based epoch in progress */
    int next_batch;           /* its first batch not yet trained on */
    long step;                /* optimiser steps so far */
    double best_miou;
    int stop_counter;
    cs_plateau plateau;
    double sum_loss;          /* this epoch so far: sums of batch losses and batch means */
    cs_metrics sum_metrics;
    int batches_done;
    long adam_step;           /* a resumed run's optimiser step and learning rates, as saved */
    double adam_lr[2];        /* (encoder, rest) */
} run_state;

static void state_set_strings(run_state *st, const cs_train_options *opt) {
    st->opt = *opt;
    st->data_dirs = g_strdupv((char **)opt->data_dirs);
    st->run_dir = g_strdup(opt->run_dir);
    st->init_weights = g_strdup(opt->init_weights);
    st->preset = g_strdup(opt->preset ? opt->preset : cs_preset_condseg_r50.name);
    st->opt.data_dirs = (const char *const *)st->data_dirs, st->opt.run_dir = st->run_dir;
    st->opt.init_weights = st->init_weights, st->opt.preset = st->preset;
}

static void state_clear(run_state *st) {
    g_strfreev(st->data_dirs), g_free(st->run_dir), g_free(st->init_weights), g_free(st->preset);
}

#define INT(k, v) (json_builder_set_member_name(b, k), json_builder_add_int_value(b, v))
#define DBL(k, v) (json_builder_set_member_name(b, k), json_builder_add_double_value(b, v))
#define STR(k, v) (json_builder_set_member_name(b, k), json_builder_add_string_value(b, v))
#define BOOL(k, v) (json_builder_set_member_name(b, k), json_builder_add_boolean_value(b, v))

/* The run's options (options_from_json reads them back). */
static void options_to_json(JsonBuilder *b, const cs_train_options *opt) {
    INT("stage", opt->stage);
    json_builder_set_member_name(b, "data_dirs");
    json_builder_begin_array(b);
    for (const char *const *dir = opt->data_dirs; *dir; dir++)
        json_builder_add_string_value(b, *dir);
    json_builder_end_array(b);
    STR("preset", opt->preset);
    if (opt->init_weights) STR("init_weights", opt->init_weights);
    INT("epochs", opt->epochs);
    INT("batch", opt->batch);
    DBL("lr", opt->lr);
    DBL("lr_backbone", opt->lr_backbone);
    /* 64-bit seeds do not fit a JSON double: as a string. */
    char seed[32];
    g_snprintf(seed, sizeof seed, "%" G_GUINT64_FORMAT, opt->seed);
    STR("seed", seed);
    BOOL("augment", opt->augment);
    INT("image_size", opt->image_size);
    INT("patience_lr", opt->patience_lr);
    INT("patience_stop", opt->patience_stop);
    BOOL("fix_background", opt->fix_background);
    BOOL("single_sigmoid", opt->single_sigmoid);
    BOOL("sync_bn", opt->sync_bn);
    STR("precision", opt->precision ? opt->precision : "fp32");
}

/* The loop's position, running sums and the optimiser's (position_from_json's). */
static void position_to_json(JsonBuilder *b, const run_state *st, const cs_adam *adam) {
    INT("epoch", st->epoch);
    INT("next_batch", st->next_batch);
    INT("step", st->step);
    DBL("best_miou", st->best_miou);
    INT("stop_counter", st->stop_counter);
    if (isfinite(st->plateau.best)) DBL("plateau_best", st->plateau.best);
    INT("plateau_bad_epochs", st->plateau.bad_epochs);
    DBL("sum_loss", st->sum_loss);
    DBL("sum_jaccard", st->sum_metrics.jaccard);
    DBL("sum_dice", st->sum_metrics.dice);
    DBL("sum_recall", st->sum_metrics.recall);
    DBL("sum_precision", st->sum_metrics.precision);
    INT("batches_done", st->batches_done);
    INT("adam_step", adam->step);
    DBL("adam_lr_backbone", adam->lr[0]);
    DBL("adam_lr", adam->lr[1]);
}

#undef INT
#undef DBL
#undef STR
#undef BOOL

/* The state as JSON (metadata of state.safetensors). Doubles are written with 17
 * significant digits by json-glib, so they come back exactly. */
static char *state_to_json(const run_state *st, const cs_adam *adam) {
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    options_to_json(b, &st->opt);
    position_to_json(b, st, adam);
    json_builder_end_object(b);
    JsonGenerator *gen = json_generator_new();
    JsonNode *root = json_builder_get_root(b);
    json_generator_set_root(gen, root);
    char *text = json_generator_to_data(gen, NULL);
    json_node_unref(root);
    g_object_unref(gen);
    g_object_unref(b);
    return text;
}

/* The run's dataset folders: "data_dirs" (a list of strings), or the "data_dir" of a
 * run saved before several were possible; NULL when neither is there and well-formed. */
static GStrv data_dirs_from_json(JsonObject *o) {
    if (json_object_has_member(o, "data_dir") &&
        JSON_NODE_HOLDS_VALUE(json_object_get_member(o, "data_dir")) &&
        json_node_get_value_type(json_object_get_member(o, "data_dir")) == G_TYPE_STRING) {
        const char *one[] = {json_object_get_string_member(o, "data_dir"), NULL};
        return g_strdupv((char **)one);
    }
    JsonNode *node = json_object_get_member(o, "data_dirs");
    if (!node || !JSON_NODE_HOLDS_ARRAY(node)) return NULL;
    JsonArray *list = json_node_get_array(node);
    const guint n = json_array_get_length(list);
    GStrv dirs = g_new0(char *, n + 1);
    for (guint i = 0; i < n; i++) {
        JsonNode *item = json_array_get_element(list, i);
        if (!JSON_NODE_HOLDS_VALUE(item) || json_node_get_value_type(item) != G_TYPE_STRING) {
            g_strfreev(dirs);
            return NULL;
        }
        dirs[i] = g_strdup(json_node_get_string(item));
    }
    if (n == 0) g_clear_pointer(&dirs, g_strfreev);
    return dirs;
}

#define I(k) ((int)json_object_get_int_member(o, k))
#define D(k) json_object_get_double_member(o, k)
#define B(k) json_object_get_boolean_member(o, k)

/* The run's options as saved (their strings stay owned by `o`, data_dirs by the caller). */
static void options_from_json(JsonObject *o, GStrv dirs, cs_train_options *opt) {
    cs_train_options_defaults(opt, I("stage"));
    opt->data_dirs = (const char *const *)dirs;
    opt->preset = json_object_get_string_member_with_default(o, "preset", NULL);
    opt->init_weights = json_object_get_string_member_with_default(o, "init_weights", NULL);
    opt->epochs = I("epochs");
    opt->batch = I("batch");
    opt->lr = D("lr");
    opt->lr_backbone = D("lr_backbone");
    opt->seed = g_ascii_strtoull(json_object_get_string_member(o, "seed"), NULL, 10);
    opt->augment = B("augment");
    opt->image_size = I("image_size");
    opt->patience_lr = I("patience_lr");
    opt->patience_stop = I("patience_stop");
    opt->fix_background = B("fix_background");
    opt->single_sigmoid = B("single_sigmoid");
    opt->sync_bn = json_object_get_boolean_member_with_default(o, "sync_bn", FALSE);
    /* Runs saved before the setting existed computed in fp32. */
    const char *precision = json_object_get_string_member_with_default(o, "precision", "fp32");
    opt->precision = strcmp(precision, "bf16") == 0 ? "bf16" : "fp32";
}

/* The loop's position, its running sums and the optimiser's (applied once it exists). */
static void position_from_json(JsonObject *o, run_state *st) {
    st->epoch = I("epoch");
    st->next_batch = I("next_batch");
    st->step = (long)json_object_get_int_member(o, "step");
    st->best_miou = D("best_miou");
    st->stop_counter = I("stop_counter");
    cs_plateau_init(&st->plateau, 0.1, st->opt.patience_lr);
    if (json_object_has_member(o, "plateau_best")) st->plateau.best = D("plateau_best");
    st->plateau.bad_epochs = I("plateau_bad_epochs");
    st->sum_loss = D("sum_loss");
    st->sum_metrics.jaccard = D("sum_jaccard");
    st->sum_metrics.dice = D("sum_dice");
    st->sum_metrics.recall = D("sum_recall");
    st->sum_metrics.precision = D("sum_precision");
    st->batches_done = I("batches_done");
    st->adam_step = json_object_get_int_member(o, "adam_step");
    st->adam_lr[0] = D("adam_lr_backbone");
    st->adam_lr[1] = D("adam_lr");
}

#undef I
#undef D
#undef B

/* The saved state's members, or NULL (error set) when it is not a JSON object holding at
 * least these and a list of dataset folders (*dirs). */
static JsonParser *parse_state(const char *json, const char *path, GStrv *dirs, GError **error) {
    if (!cs_json_check_bounds(path, json, strlen(json), error)) return NULL;
    JsonParser *parser = json_parser_new();
    if (!json_parser_load_from_data(parser, json, -1, NULL) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser))) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT, "%s: the saved training state is not valid JSON",
                    path);
        g_object_unref(parser);
        return NULL;
    }
    JsonObject *o = json_node_get_object(json_parser_get_root(parser));
    static const char *const required[] = {"stage", "epoch", "next_batch", "step",
                                           "batch", "lr", "seed", "adam_step"};
    const char *missing = NULL;
    for (size_t i = 0; i < G_N_ELEMENTS(required) && !missing; i++)
        if (!json_object_has_member(o, required[i])) missing = required[i];
    if (!missing && !(*dirs = data_dirs_from_json(o))) missing = "data_dirs";
    if (missing) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT, "%s: the saved training state has no '%s'",
                    path, missing);
        g_clear_object(&parser);
    }
    return parser;
}

/* Replaces st's options and position by the saved ones. The run folder stays where the
 * state was found, not where it was saved. */
static gboolean state_from_json(run_state *st, const char *json, const char *path,
                                GError **error) {
    GStrv dirs = NULL;
    JsonParser *parser = parse_state(json, path, &dirs, error);
    if (!parser) return FALSE;
    JsonObject *o = json_node_get_object(json_parser_get_root(parser));
    cs_train_options opt;
    options_from_json(o, dirs, &opt);
    char *run_dir = g_strdup(st->opt.run_dir); /* a copy: state_clear frees the old one */
    opt.run_dir = run_dir;
    state_clear(st);
    state_set_strings(st, &opt);
    position_from_json(o, st);
    g_free(run_dir);
    g_strfreev(dirs);
    g_object_unref(parser);
    return TRUE;
}

/* ---- saving ------------------------------------------------------------------------------ */

static gboolean save_weights(const cs_model *model, const char *path, long step, GError **error) {
    if (cs_dist_rank() != 0) return TRUE;   /* rank 0 keeps the run folder */
    cs_paramset_sync_from_backend(model->params);
    char step_text[32], size_text[16];
    g_snprintf(step_text, sizeof step_text, "%ld", step);
    g_snprintf(size_text, sizeof size_text, "%d", model->input_size);
    const char *metadata[] = {"format", "pt", CS_META_ARCH, cs_arch_name(model->arch),
                              CS_META_PRESET, model->cfg->name, CS_META_INPUT_SIZE, size_text,
                              "condseg.step", step_text, NULL};
    return cs_paramset_save(model->params, path, metadata, error);
}

/* The checkpoint. state.safetensors alone is the commit point: the network's tensors,
 * Adam's moments (ADAM_PREFIX) and the loop's position in one file, replaced by one
 * rename, so a kill at any moment leaves either the old checkpoint or the new one.
 * last.safetensors, written after it, is the export that predict reads: a kill between
 * the two leaves the previous export, which a resume writes again. */
#define ADAM_PREFIX "adam."

static gboolean save_state(const run_state *st, const cs_model *model, const cs_adam *adam,
                           GError **error) {
    char *json = state_to_json(st, adam);
    char step_text[32], size_text[16];
    g_snprintf(step_text, sizeof step_text, "%ld", st->step);
    g_snprintf(size_text, sizeof size_text, "%d", model->input_size);
    /* The moments live with the parameters: a host copy to write. */
    float *moments = g_new(float, 2 * (size_t)adam->n);
    adam->be->download(moments, adam->m, sizeof(float) * (size_t)adam->n);
    adam->be->download(moments + adam->n, adam->v, sizeof(float) * (size_t)adam->n);
    const cs_st_entry entries[2] = {
        {.name = ADAM_PREFIX "m", .dtype = CS_DT_F32, .ndim = 1, .shape = {adam->n},
         .data = moments},
        {.name = ADAM_PREFIX "v", .dtype = CS_DT_F32, .ndim = 1, .shape = {adam->n},
         .data = moments + adam->n},
    };
    const char *metadata[] = {"condseg.training_state", json, "condseg.step", step_text,
                              CS_META_ARCH, cs_arch_name(model->arch), CS_META_PRESET,
                              model->cfg->name, CS_META_INPUT_SIZE, size_text, NULL};
    char *state_path = g_build_filename(st->run_dir, STATE_FILE, NULL);
    char *last_path = g_build_filename(st->run_dir, LAST_FILE, NULL);
    cs_paramset_sync_from_backend(model->params);
    gboolean ok = cs_paramset_save_with(model->params, state_path, entries, 2, metadata, error) &&
                  save_weights(model, last_path, st->step, error);
    g_free(state_path);
    g_free(last_path);
    g_free(json);
    g_free(moments);
    return ok;
}

/* ---- initial weights ------------------------------------------------------------------- */

/* Copies the encoder's entries from `file`: its parameters and, with buffers, its
 * BatchNorm statistics too. */
static gboolean copy_encoder(cs_paramset *ps, const cs_safetensors *file, gboolean buffers,
                             GError **error) {
    int copied = 0;
    for (int i = 0; i < cs_paramset_count(ps); i++) {
        cs_param *p = cs_paramset_at(ps, i);
        if (!cs_is_encoder_name(p->name) || p->kind == CS_COUNTER) continue;
        if (p->kind == CS_BUFFER && !buffers) continue;
        const cs_st_tensor *t = cs_st_find(file, p->name);
        gboolean shape_ok = t && t->ndim == p->ndim;
        for (int d = 0; shape_ok && d < p->ndim; d++) shape_ok = t->shape[d] == p->shape[d];
        if (!shape_ok) {
            char *want = cs_shape_string(p->ndim, p->shape);
            g_set_error(error, CS_ERROR, CS_ERROR_TENSOR,
                        "initial weights '%s': %s tensor '%s' (expected shape %s)",
                        cs_st_path(file), t ? "misshapen" : "no", p->name, want);
            g_free(want);
            return FALSE;
        }
        if (!cs_st_read_f32(file, t, p->data, error)) return FALSE;
        const int64_t bad = cs_first_non_finite(p->data, p->numel);
        if (bad >= 0) {
            g_set_error(error, CS_ERROR, CS_ERROR_TENSOR,
                        "initial weights '%s': tensor '%s' holds a non-finite value (%g at "
                        "index %" G_GINT64_FORMAT "): expected finite weights",
                        cs_st_path(file), p->name, p->data[bad], bad);
            return FALSE;
        }
        copied++;
    }
    return copied > 0;
}

/* --init: a whole network of this stage's kind loads as it is; otherwise the encoder is
 * taken: from stage-1 weights its parameters only (spec §4.3: running statistics stay),
 * from an ImageNet trunk (tools/pth2safetensors.py --torchvision-resnet50) everything. */
static gboolean load_initial_weights(cs_model *model, const char *path, GString *log,
                                     GError **error) {
    cs_safetensors *file = cs_st_open(path, error);
    if (!file) return FALSE;
    const gboolean full = cs_st_find(file, "output_block.c3.weight") != NULL;
    const gboolean stage1 = cs_st_find(file, "head.conv_fuse.weight") != NULL;
    const gboolean trunk = !full && !stage1 && cs_st_find(file, "layer0.0.weight") != NULL;
    gboolean ok;
    if ((full && model->arch == CS_ARCH_CONDSEG) || (stage1 && model->arch == CS_ARCH_STAGE1)) {
        ok = cs_paramset_load(model->params, file, error);
        g_string_append_printf(log, "initial weights: all of %s\n", path);
    } else if (full || stage1 || trunk) {
        const gboolean buffers = !stage1;
        ok = copy_encoder(model->params, file, buffers, error);
        g_string_append_printf(log, "initial weights: the encoder (layer0..layer3%s) of %s\n",
                               buffers ? ", with its BatchNorm statistics" : ", parameters only",
                               path);
    } else {
        g_set_error(error, CS_ERROR, CS_ERROR_TENSOR,
                    "initial weights '%s': neither a ConDSeg, a stage-1 nor a ResNet trunk file "
                    "(no output_block.c3.weight, head.conv_fuse.weight or layer0.0.weight)",
                    path);
        ok = FALSE;
    }
    cs_st_close(file);
    return ok;
}

/* ---- one step -------------------------------------------------------------------------- */

/* Mean over the batch's images of the per-image metrics of `mask` against y1. */
static void batch_metrics(const float *mask, const float *y1, int count, size_t plane,
                          cs_metrics *mean) {
    memset(mean, 0, sizeof *mean);
    for (int b = 0; b < count; b++) {
        cs_metrics m;
        cs_metrics_image(mask + (size_t)b * plane, y1 + (size_t)b * plane, plane, &m);
        cs_metrics_accumulate(mean, &m);
    }
    cs_metrics_scale(mean, 1.0 / count);
}

static uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

struct cs_trainer {
    cs_model *model;
    cs_adam *adam;
    cs_loss_options loss_opt;
    GError *error;            /* why the last step gave no loss (out of memory), or NULL */
};

cs_trainer *cs_trainer_new(cs_model *model, double lr_backbone, double lr,
                           gboolean single_sigmoid) {
    cs_trainer *t = g_new0(cs_trainer, 1);
    t->model = model;
    cs_paramset_enable_grads(model->params);
    t->adam = cs_adam_new(model->params, lr_backbone, lr);
    t->loss_opt.single_sigmoid = single_sigmoid;
    return t;
}

void cs_trainer_free(cs_trainer *t) {
    if (!t) return;
    cs_adam_free(t->adam);
    g_clear_error(&t->error);
    g_free(t);
}

cs_adam *cs_trainer_adam(cs_trainer *t) { return t->adam; }

/* A batch split over ranks: the losses over the whole batch, and with sync_bn its
 * BatchNorm statistics too. */
static void trainer_split_batch(cs_trainer *t, const cs_reducer *reducer, gboolean sync_bn) {
    t->loss_opt.reducer = reducer;
    cs_ctx_set_bn_reducer(t->model->ctx, sync_bn ? reducer : NULL);
}

typedef struct {
    cs_trainer *t;
    const float *x, *x_aug, *y1, *y2;
    int n, size;
    float *outputs, *host;
    cs_stage2_parts *parts;
    double loss;
} backward_run;

/* Forward, loss and backward, run guarded: out of memory ends it with an error. */
static void run_backward(cs_ctx *ctx, void *data) {
    backward_run *r = data;
    const cs_trainer *t = r->t;
    const cs_model *m = t->model;
    const int n = r->n, size = r->size;
    const size_t count = (size_t)n * size * size;
    float *host = r->host, *grad = host + 4 * count;
    cs_tensor *out[4] = {NULL, NULL, NULL, NULL};
    int n_out;
    double loss;
    cs_tensor *input = cs_tensor_from(ctx, r->x, n, 3, size, size);
    if (m->arch == CS_ARCH_STAGE1) {
        /* Two passes in training mode, clean then perturbed (spec §6.2). */
        out[0] = cs_stage1_forward(ctx, m->cfg, input);
        out[1] = cs_stage1_forward(ctx, m->cfg, cs_tensor_from(ctx, r->x_aug, n, 3, size, size));
        n_out = 2;
        for (int i = 0; i < n_out; i++) cs_tensor_read(ctx, out[i], host + i * count);
        loss = cs_loss_stage1(host, host + count, r->y1, count, &t->loss_opt, grad, grad + count);
    } else {
        cs_condseg_forward(ctx, m->cfg, input, CS_OUT_ALL, out, NULL, NULL);
        n_out = 4;
        for (int i = 0; i < n_out; i++) cs_tensor_read(ctx, out[i], host + i * count);
        loss = cs_loss_stage2(host, host + count, host + 2 * count, host + 3 * count, r->y1,
                              r->y2, n, size, size, &t->loss_opt, grad, grad + count,
                              grad + 2 * count, grad + 3 * count, r->parts);
    }
    if (r->outputs) memcpy(r->outputs, host, sizeof(float) * n_out * count);
    if (isfinite(loss)) {
        for (int i = 0; i < n_out; i++) cs_tensor_set_grad(ctx, out[i], grad + i * count);
        cs_backward(ctx);
    }
    r->loss = loss;
}

double cs_trainer_forward_backward(cs_trainer *t, const float *x, const float *x_aug,
                                   const float *y1, const float *y2, int n, int size,
                                   float *outputs, cs_stage2_parts *parts) {
    cs_ctx *ctx = t->model->ctx;
    const size_t count = (size_t)n * size * size;
    cs_ctx_reset(ctx);
    cs_ctx_set_training(ctx, TRUE);
    cs_paramset_zero_grads(t->model->params);
    g_clear_error(&t->error);
    /* The loss runs on the host: the outputs come over, their gradients go back. */
    backward_run r = {t, x, x_aug, y1, y2, n, size, outputs, g_new(float, 8 * count), parts, NAN};
    if (!cs_ctx_run_guarded(ctx, run_backward, &r, &t->error)) r.loss = NAN;
    g_free(r.host);
    cs_ctx_reset(ctx);
    cs_ctx_set_training(ctx, FALSE);
    return r.loss;
}

GError *cs_trainer_take_error(cs_trainer *t) {
    GError *e = t->error;
    t->error = NULL;
    return e;
}

void cs_trainer_update(cs_trainer *t) {
    cs_adam_step(t->adam, t->model->params);
    cs_model_weights_changed(t->model);
}

/* The loop's view of a step: stage 1's perturbed batch drawn once per batch from
 * (seed, epoch, batch), the step, and the mask output kept for the metrics. */
typedef struct {
    cs_trainer *trainer;
    const run_state *st;
    float *outputs;           /* 4 x batch x plane */
    float *x_aug;             /* batch x 3 x plane */
} step_buffers;

static double train_step(step_buffers *sb, const cs_batch *batch, int epoch) {
    const cs_model *m = sb->trainer->model;
    const size_t plane = (size_t)batch->size * batch->size;
    if (m->arch == CS_ARCH_STAGE1) {
        if (sb->st->opt.augment) {
            cs_photometric_params pp;
            cs_photometric_draw(mix64(sb->st->opt.seed ^ mix64((uint64_t)epoch << 32 |
                                                               (uint32_t)batch->batch_index)),
                                &pp);
            cs_photometric_apply(sb->x_aug, batch->images, batch->count, batch->size,
                                 batch->size, &pp);
        } else {
            memcpy(sb->x_aug, batch->images, sizeof(float) * 3 * plane * batch->count);
        }
    }
    const double loss = cs_trainer_forward_backward(sb->trainer, batch->images, sb->x_aug,
                                                    batch->y1, batch->y2, batch->count,
                                                    batch->size, sb->outputs, NULL);
    /* A loss that is not finite returns before the weights change. The loss is the whole
     * batch's, the same on every rank, so all ranks take this branch alike. */
    if (isfinite(loss)) {
        cs_dist_sum_grads(m->params);
        cs_trainer_update(sb->trainer);
    }
    return loss;
}

/* The validation of one split. */
typedef struct {
    double loss;              /* mean batch loss */
    cs_metrics metrics;       /* mean of batch means, as the original's loop (spec §7) */
    int empty_masks;          /* images without a polyp */
    int false_alarms;         /* of those, the ones marked over CS_FALSE_ALARM_AREA */
} val_result;

/* Counts the batch's images without a polyp, and its false alarms. */
static void count_false_alarms(const float *mask, const float *y1, int count, size_t plane,
                               val_result *r) {
    for (int b = 0; b < count; b++) {
        r->empty_masks += cs_mask_is_empty(y1 + (size_t)b * plane, plane);
        r->false_alarms += cs_is_false_alarm(mask + (size_t)b * plane, y1 + (size_t)b * plane,
                                             plane);
    }
}

/* Evaluation mode over a whole split: the mean batch loss and the mean of batch means of
 * the metrics, as the original's training loop computes them (spec §7). */
static gboolean validate(cs_trainer *tr, cs_loader *loader, val_result *r, GError **error) {
    cs_model *m = tr->model;
    cs_loss_options loss_opt = tr->loss_opt;
    loss_opt.reducer = NULL;   /* rank 0 validates alone */
    const cs_batch *batch;
    double sum_loss = 0.0;
    cs_metrics sum = {0};
    int batches = 0;
    *r = (val_result){0};
    cs_loader_start_epoch(loader, 0, 0);
    GError *local = NULL;
    while ((batch = cs_loader_next(loader, &local))) {
        const int n = batch->count, size = batch->size;
        const size_t plane = (size_t)size * size;
        float *out = g_new(float, 4 * n * plane);
        float *ptr[4] = {out, out + n * plane, out + 2 * n * plane, out + 3 * n * plane};
        const unsigned outputs = m->arch == CS_ARCH_STAGE1 ? CS_OUT_MASK : CS_OUT_ALL;
        if (!cs_model_forward(m, batch->images, n, size, size, outputs, ptr, error)) {
            g_free(out);
            return FALSE;
        }
        if (m->arch == CS_ARCH_STAGE1)
            sum_loss += cs_loss_dicebce(ptr[0], batch->y1, n * plane, &loss_opt, NULL);
        else
            sum_loss += cs_loss_stage2(ptr[0], ptr[1], ptr[2], ptr[3], batch->y1, batch->y2, n,
                                       size, size, &loss_opt, NULL, NULL, NULL, NULL, NULL);
        cs_metrics bm;
        batch_metrics(ptr[0], batch->y1, n, plane, &bm);
        cs_metrics_accumulate(&sum, &bm);
        count_false_alarms(ptr[0], batch->y1, n, plane, r);
        batches++;
        g_free(out);
    }
    if (local) {
        g_propagate_error(error, local);
        return FALSE;
    }
    r->loss = batches ? sum_loss / batches : NAN;
    cs_metrics_scale(&sum, batches ? 1.0 / batches : 0.0);
    r->metrics = sum;
    return TRUE;
}

/* ---- the validation splits ---------------------------------------------------------------- */

/* One per dataset folder, named by the folder; with several, their mean steers the run. */
typedef struct {
    int n;
    char **names;             /* the folders' base names (train.log, train_log.csv) */
    cs_dataset **sets;
    cs_loader **loaders;
    val_result *results;      /* of the last validation */
    val_result mean;          /* loss and metrics averaged over the splits */
    cs_train_split *reported; /* the results as the progress report shows them */
} val_splits;

/* The split names: with several folders, distinct and fit for a CSV column name. */
static gboolean split_names(const char *const *dirs, char ***names_out, GError **error) {
    const int n = (int)g_strv_length((char **)dirs);
    char **names = g_new0(char *, n + 1);
    for (int i = 0; i < n; i++) names[i] = g_path_get_basename(dirs[i]);
    for (int i = 0; n > 1 && i < n; i++) {
        const char *problem = strpbrk(names[i], ",\"\n\r") ? "holds a ',', '\"' or a line break"
                              : NULL;
        for (int j = 0; j < i && !problem; j++)
            if (!strcmp(names[i], names[j])) problem = "is the name of another --data folder too";
        if (problem) {
            g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                        "--data '%s': the folder's name '%s' %s; with several --data folders "
                        "each name labels its validation columns in train_log.csv",
                        dirs[i], names[i], problem);
            g_strfreev(names);
            return FALSE;
        }
    }
    *names_out = names;
    return TRUE;
}

/* Opens every folder's val split (checked before anything is written). */
static gboolean val_splits_open(val_splits *v, const char *const *dirs, GError **error) {
    if (!split_names(dirs, &v->names, error)) return FALSE;
    v->n = (int)g_strv_length(v->names);
    v->sets = g_new0(cs_dataset *, v->n);
    v->loaders = g_new0(cs_loader *, v->n);
    v->results = g_new0(val_result, v->n);
    v->reported = g_new0(cs_train_split, v->n);
    for (int i = 0; i < v->n; i++)
        if (!(v->sets[i] = cs_dataset_open(dirs[i], "val", error))) return FALSE;
    return TRUE;
}

static void val_splits_start_loaders(val_splits *v, int batch, const cs_sample_options *samples,
                                     uint64_t seed, int workers) {
    for (int i = 0; i < v->n; i++)
        v->loaders[i] = cs_loader_new(v->sets[i], batch, FALSE, samples, seed, workers);
}

static int val_splits_images(const val_splits *v) {
    int total = 0;
    for (int i = 0; i < v->n; i++) total += cs_dataset_size(v->sets[i]);
    return total;
}

static void val_splits_free(val_splits *v) {
    for (int i = 0; i < v->n; i++) {
        cs_loader_free(v->loaders ? v->loaders[i] : NULL);
        cs_dataset_free(v->sets ? v->sets[i] : NULL);
    }
    g_free(v->loaders), g_free(v->sets), g_free(v->results), g_free(v->reported);
    g_strfreev(v->names);
}

/* The share of a split's polyp-free images marked over CS_FALSE_ALARM_AREA (NaN: none). */
static double false_alarm_rate(const val_result *r) {
    return r->empty_masks ? (double)r->false_alarms / r->empty_masks : NAN;
}

/* Validates every split, and their mean: of one split, that split's figures exactly. */
static gboolean validate_splits(cs_trainer *tr, val_splits *v, GError **error) {
    v->mean = (val_result){0};
    for (int i = 0; i < v->n; i++) {
        if (!validate(tr, v->loaders[i], &v->results[i], error)) return FALSE;
        v->mean.loss += v->results[i].loss;
        cs_metrics_accumulate(&v->mean.metrics, &v->results[i].metrics);
        v->mean.empty_masks += v->results[i].empty_masks;
        v->mean.false_alarms += v->results[i].false_alarms;
    }
    v->mean.loss /= v->n;
    cs_metrics_scale(&v->mean.metrics, 1.0 / v->n);
    for (int i = 0; i < v->n; i++)
        v->reported[i] = (cs_train_split){v->names[i], v->results[i].loss, v->results[i].metrics,
                                          false_alarm_rate(&v->results[i])};
    return TRUE;
}

/* ---- logs ------------------------------------------------------------------------------- */

static gboolean append_text(const char *dir, const char *file, const char *text, GError **error) {
    if (cs_dist_rank() != 0) return TRUE;   /* rank 0 keeps the run folder */
    char *path = g_build_filename(dir, file, NULL);
    FILE *f = fopen(path, "a");
    gboolean ok = f && fputs(text, f) >= 0;
    if (f && fclose(f) != 0) ok = FALSE;
    if (!ok)
        g_set_error(error, CS_ERROR, CS_ERROR_IO, "cannot write %s: %s", path, g_strerror(errno));
    g_free(path);
    return ok;
}

static void log_line(const run_state *st, const char *format, ...) G_GNUC_PRINTF(2, 3);
static void log_line(const run_state *st, const char *format, ...) {
    va_list args;
    va_start(args, format);
    char *text = g_strdup_vprintf(format, args);
    va_end(args);
    GDateTime *now = g_date_time_new_now_local();
    char *stamp = g_date_time_format(now, "%Y-%m-%d %H:%M:%S");
    char *line = g_strdup_printf("%s  %s\n", stamp, text);
    append_text(st->run_dir, LOG_FILE, line, NULL);
    g_free(line), g_free(stamp), g_free(text);
    g_date_time_unref(now);
}

/* With several splits, a train.log line for each after the epoch's line of their means. */
static void log_split_lines(const run_state *st, const val_splits *v) {
    for (int i = 0; v->n > 1 && i < v->n; i++) {
        const val_result *r = &v->results[i];
        char *alarms = r->empty_masks ? g_strdup_printf(" | false alarms %d of %d polyp-free "
                                                        "images (marked over %.0f%%)",
                                                        r->false_alarms, r->empty_masks,
                                                        100 * CS_FALSE_ALARM_AREA)
                                      : g_strdup("");
        log_line(st, "  val %s: loss %.4f mIoU %.4f F1 %.4f recall %.4f precision %.4f%s",
                 v->names[i], r->loss, r->metrics.jaccard, r->metrics.dice, r->metrics.recall,
                 r->metrics.precision, alarms);
        g_free(alarms);
    }
}

/* ---- resuming ------------------------------------------------------------------------------ */

static gboolean write_text_content(FILE *fp, const void *content, char **reason) {
    (void)reason; /* errno tells */
    return fputs(content, fp) >= 0;
}

/* train_log.csv's header: the original's columns (with several splits, their means), then,
 * with several splits, each split's: valid_<name>_loss, _mIoU, _f1, _recall, _precision
 * and _false_alarm (the share of its polyp-free images marked over 1%; nan when none). */
static char *csv_header(const val_splits *v) {
    GString *h = g_string_new(CSV_HEADER);
    for (int i = 0; v->n > 1 && i < v->n; i++) {
        static const char *const columns[] = {"loss", "mIoU", "f1", "recall", "precision",
                                              "false_alarm"};
        for (size_t c = 0; c < G_N_ELEMENTS(columns); c++)
            g_string_append_printf(h, ",valid_%s_%s", v->names[i], columns[c]);
    }
    g_string_append_c(h, '\n');
    return g_string_free(h, FALSE);
}

static void append_val_columns(GString *row, const val_result *r) {
    g_string_append_printf(row, ",%.17g,%.17g,%.17g,%.17g,%.17g", r->loss, r->metrics.jaccard,
                           r->metrics.dice, r->metrics.recall, r->metrics.precision);
}

/* One epoch's row, in csv_header's columns. */
static char *csv_row(int epoch, double train_loss, const cs_metrics *train, const val_splits *v) {
    GString *row = g_string_new(NULL);
    g_string_append_printf(row, "%d,%.17g,%.17g,%.17g,%.17g,%.17g", epoch, train_loss,
                           train->jaccard, train->dice, train->recall, train->precision);
    append_val_columns(row, &v->mean);
    for (int i = 0; v->n > 1 && i < v->n; i++) {
        append_val_columns(row, &v->results[i]);
        g_string_append_printf(row, ",%.17g", false_alarm_rate(&v->results[i]));
    }
    g_string_append_c(row, '\n');
    return g_string_free(row, FALSE);
}

/* train_log.csv replaced whole (temporary file + rename): its header alone at the start
 * of a run, so that a run killed before its first checkpoint starts clean. */
static gboolean write_csv(const char *run_dir, const char *text, GError **error) {
    if (cs_dist_rank() != 0) return TRUE;
    char *path = g_build_filename(run_dir, CSV_FILE, NULL);
    const gboolean ok = cs_write_atomically(path, "training log", write_text_content, text, error);
    g_free(path);
    return ok;
}

/* On resume, train_log.csv keeps its header and the rows of the epochs the checkpoint
 * has completed: a row appended before a kill (or a full disk) stopped the checkpoint
 * that followed it is written again by the epoch's rerun, not duplicated. A row cut
 * short (no newline) goes too. */
static gboolean truncate_csv(const char *run_dir, int epochs_done, const char *header,
                             GError **error) {
    if (cs_dist_rank() != 0) return TRUE;
    char *path = g_build_filename(run_dir, CSV_FILE, NULL);
    char *text = NULL;
    gsize length = 0;
    if (!g_file_get_contents(path, &text, &length, NULL)) text = g_strdup("");
    g_free(path);
    GString *kept = g_string_new(header);
    const char *line = text, *end;
    while ((end = memchr(line, '\n', length - (gsize)(line - text)))) {
        char *rest = NULL;
        const gint64 epoch = g_ascii_strtoll(line, &rest, 10);
        if (rest != line && *rest == ',' && epoch >= 1 && epoch <= epochs_done)
            g_string_append_len(kept, line, end + 1 - line);
        line = end + 1;
    }
    const gboolean same = kept->len == length && memcmp(kept->str, text, length) == 0;
    const gboolean ok = same || write_csv(run_dir, kept->str, error);
    g_string_free(kept, TRUE);
    g_free(text);
    return ok;
}

/* A temporary file of an atomic write ("state.safetensors.Ab3xYz") that a kill left
 * behind: <name>.XXXXXX with six letters or digits, as g_mkstemp makes them. */
static gboolean is_orphan_temporary(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot || strlen(dot + 1) != 6) return FALSE;
    for (const char *c = dot + 1; *c; c++)
        if (!g_ascii_isalnum(*c)) return FALSE;
    const size_t stem = (size_t)(dot - name);
    static const char *const targets[] = {STATE_FILE, LAST_FILE, BEST_FILE, CSV_FILE};
    for (size_t i = 0; i < G_N_ELEMENTS(targets); i++)
        if (stem == strlen(targets[i]) && strncmp(name, targets[i], stem) == 0) return TRUE;
    return FALSE;
}

static int remove_orphan_temporaries(const char *run_dir) {
    GDir *dir = g_dir_open(run_dir, 0, NULL);
    if (!dir) return 0;
    int removed = 0;
    const char *name;
    while ((name = g_dir_read_name(dir))) {
        if (!is_orphan_temporary(name)) continue;
        char *path = g_build_filename(run_dir, name, NULL);
        if (g_unlink(path) == 0) removed++;
        g_free(path);
    }
    g_dir_close(dir);
    return removed;
}

/* The network to continue: from state.safetensors itself, or, from a checkpoint of an
 * earlier condseg that kept the weights apart, from last.safetensors saved at the same
 * step. last.safetensors is exported again when it lags behind the checkpoint. */
static cs_model *resume_model(const cs_safetensors *state_file, const char *last_path,
                              long step, GError **error) {
    const char *state_path = cs_st_path(state_file);
    const char *state_step = cs_st_metadata(state_file, "condseg.step");
    cs_safetensors *last = cs_st_open(last_path, NULL);
    const char *last_step = last ? cs_st_metadata(last, "condseg.step") : NULL;
    const gboolean in_step = state_step && last_step && !strcmp(state_step, last_step);
    cs_model *model = NULL;
    if (cs_st_find(state_file, "output_block.c3.weight") ||
        cs_st_find(state_file, "head.conv_fuse.weight")) {
        model = cs_model_load_file(state_file, ADAM_PREFIX, error);
        if (model && !in_step && !save_weights(model, last_path, step, error))
            g_clear_pointer(&model, cs_model_free);
    } else if (in_step) {
        model = cs_model_load_file(last, NULL, error);
    } else {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                    "%s and %s do not belong together (saved at different steps): the run "
                    "cannot be resumed", state_path, last_path);
    }
    if (last) cs_st_close(last);
    return model;
}

/* A checkpoint, its failure (a full disk, say) also told in train.log. */
static gboolean checkpoint(const run_state *st, const cs_model *model, const cs_adam *adam,
                           GError **error) {
    if (!cs_dist_replicas_agree(model->params)) {
        g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                    "step %ld: the ranks' weights are no longer the same (a rank computed "
                    "differently): training stopped before the checkpoint", st->step);
        log_line(st, "%s", (*error)->message);
        return FALSE;
    }
    if (cs_dist_rank() != 0) return TRUE;
    GError *local = NULL;
    if (save_state(st, model, adam, &local)) return TRUE;
    log_line(st, "checkpoint at step %ld failed: %s", st->step, local->message);
    g_propagate_error(error, local);
    return FALSE;
}

/* ---- the run ----------------------------------------------------------------------------- */

/* For the messages that stop a run: what is left on disk. */
static char *kept_state(long saved_step, const char *run_dir) {
    return saved_step >= 0 ? g_strdup_printf("the last good state, saved at step %ld, is kept in %s",
                                             saved_step, run_dir)
                           : g_strdup("nothing had been saved yet");
}

static gboolean validate_options(const cs_train_options *o, GError **error) {
    const char *bad = NULL;
    if (o->stage != 1 && o->stage != 2) bad = "--stage: expected 1 or 2";
    else if (!o->data_dirs || !o->data_dirs[0]) bad = "--data: a dataset folder is required";
    else if (!o->run_dir) bad = "--out: a run folder is required";
    else if (o->epochs < 1) bad = "--epochs: expected a positive number";
    else if (o->batch < 1) bad = "--batch: expected a positive number";
    else if (!(o->lr > 0) || !(o->lr_backbone > 0)) bad = "--lr / --lr-backbone: expected positive numbers";
    else if (o->image_size < 16 || o->image_size % 16) bad = "image size: a positive multiple of 16";
    else if (o->precision && strcmp(o->precision, "fp32") && strcmp(o->precision, "bf16"))
        bad = "--precision: expected fp32 or bf16";
    if (bad) g_set_error(error, CS_ERROR, CS_ERROR_ARG, "%s", bad);
    return bad == NULL;
}

/* ---- data-parallel runs (dist.h) ---------------------------------------------------------
 * Every rank holds the same weights and moments and takes the same decisions; it trains on
 * its share of each batch, the losses and (with sync_bn) BatchNorm see the whole batch
 * through sums across ranks, and the gradients are summed before every update. Rank 0
 * alone reads the run folder, validates and writes; the others get what they need from it. */

/* Rank 0's Adam moments (a resumed run's) on every rank. */
static void broadcast_moments(cs_adam *adam) {
    if (cs_dist_size() == 1) return;
    const size_t bytes = sizeof(float) * (size_t)adam->n;
    float *moments = g_new(float, 2 * (size_t)adam->n);
    adam->be->download(moments, adam->m, bytes);
    adam->be->download(moments + adam->n, adam->v, bytes);
    cs_dist_broadcast(moments, 2 * bytes);
    adam->be->upload(adam->m, moments, bytes);
    adam->be->upload(adam->v, moments + adam->n, bytes);
    g_free(moments);
}

/* The mean metrics over the whole batch's images (every rank's share), as one rank with
 * the whole batch computes them; returns whether `stop` was set on any rank. */
static gboolean whole_batch_metrics(const float *mask, const cs_batch *batch, size_t plane,
                                    gboolean stop, cs_metrics *mean) {
    memset(mean, 0, sizeof *mean);
    for (int b = 0; b < batch->count; b++) {
        cs_metrics m;
        cs_metrics_image(mask + (size_t)b * plane, batch->y1 + (size_t)b * plane, plane, &m);
        cs_metrics_accumulate(mean, &m);
    }
    double count = batch->count;
    if (cs_dist_size() > 1) {
        double sums[8] = {mean->jaccard, mean->dice, mean->recall, mean->precision,
                          mean->accuracy, mean->f2, count, stop ? 1.0 : 0.0};
        cs_dist_sum_doubles(sums, 8);
        *mean = (cs_metrics){sums[0], sums[1], sums[2], sums[3], sums[4], sums[5]};
        count = sums[6];
        stop = sums[7] > 0;
    }
    cs_metrics_scale(mean, 1.0 / count);
    return stop;
}

/* Rank 0's validation results on every rank (the others wait while it validates), for
 * the same decisions (learning rate, best, early stopping). */
static void share_validation(val_splits *v) {
    if (cs_dist_size() == 1) return;
    cs_dist_wait_for_rank0();
    cs_dist_broadcast(v->results, sizeof *v->results * (size_t)v->n);
    cs_dist_broadcast(&v->mean, sizeof v->mean);
}

static gboolean stop_on_any_rank(volatile int *stop) {
    double flag = stop && *stop ? 1.0 : 0.0;
    cs_dist_max_doubles(&flag, 1);
    return flag > 0;
}

/* What the steps of this session cost, for a data-parallel run's train.log. */
typedef struct {
    long first_step;
    double step_seconds;      /* in the steps themselves: loading waits and validation not */
} dist_timing;

static void log_timing(const run_state *st, const dist_timing *t, const cs_model *model) {
    const long steps = st->step - t->first_step;
    if (cs_dist_size() == 1 || steps <= 0 || !model) return;
    cs_dist_stats s;
    cs_dist_get_stats(&s);
    log_line(st, "%ld steps on %d ranks: %.3f steps/s; per step and rank %.2f MB of gradients "
                 "summed (%" G_GINT64_FORMAT " parameters x 4 bytes) in %.3f s, and %.1f kB of "
                 "loss, BatchNorm and metric sums in %ld calls and %.3f s",
             steps, cs_dist_size(), steps / t->step_seconds, s.grads.bytes / 1e6 / steps,
             model->params->n_trainable, s.grads.seconds / steps, s.sums.bytes / 1e3 / steps,
             s.sums.calls / steps, s.sums.seconds / steps);
}

/* The first line of train.log that tells how the batch is split. */
static void log_ranks(const run_state *st) {
    const int ranks = cs_dist_size(), batch = st->opt.batch;
    if (ranks == 1) return;
    log_line(st, "data-parallel over %d ranks (%s): %d to %d of the %d images of each batch per "
                 "rank, BatchNorm statistics %s; gradients of %s",
             ranks, cs_dist_library(), batch / ranks, (batch + ranks - 1) / ranks, batch,
             st->opt.sync_bn ? "of the whole batch (--sync-bn)" : "per rank", "the whole batch");
}

/* Everything a run holds from its opening to its end (llm.c's shape: open the run, then
 * train an epoch and end it, until the last epoch, early stopping or a pause). */
typedef struct {
    run_state st;
    cs_model *model;
    cs_trainer *trainer;
    cs_adam *adam;
    cs_dataset *train_set;
    cs_loader *train_loader;
    val_splits val;
    char *csv_header;
    step_buffers sb;
    long saved_step;          /* the step of the state on disk (-1: nothing saved yet) */
    gint64 t_start, t_epoch;  /* this session's start, the epoch's (monotonic, µs) */
    int first_batch;          /* the first batch this session trained in the epoch */
    cs_train_progress pr;
    cs_train_report_fn report;
    void *user_data;
    volatile int *stop;
    gboolean stop_seen;       /* a stop was asked for on some rank (all ranks agree) */
    dist_timing timing;
} train_run;

/* What the caller may change in a resumed run (and sets in a new one). */
static void apply_caller_settings(run_state *st, const cs_train_options *options) {
    if (options->precision) st->opt.precision = options->precision;
    if (options->epochs > 0) st->opt.epochs = options->epochs;
    st->opt.max_steps = options->max_steps;
    st->opt.workers = options->workers;
}

/* ---- opening the run ----------------------------------------------------------------------- */

/* The state to start from: the caller's options for a new run (in a folder without one),
 * or the saved state of the run in options->run_dir (*state_file, left open). */
static gboolean open_state(run_state *st, const cs_train_options *options, gboolean resume,
                           cs_safetensors **state_file, GError **error) {
    state_set_strings(st, options);
    cs_plateau_init(&st->plateau, 0.1, options->patience_lr);
    char *state_path = g_build_filename(options->run_dir, STATE_FILE, NULL);
    gboolean ok = FALSE;
    if (resume) {
        /* Rank 0 reads the run folder; the other ranks get the saved state from it. */
        const char *json = NULL;
        if (cs_dist_rank() == 0) {
            *state_file = cs_st_open(state_path, error);
            json = *state_file ? cs_st_metadata(*state_file, "condseg.training_state") : NULL;
            if (*state_file && !json)
                g_set_error(error, CS_ERROR, CS_ERROR_FORMAT, "%s holds no training state",
                            state_path);
            if (!json) goto done;   /* the other ranks wait: the caller aborts them */
        }
        char *shared = cs_dist_size() > 1 ? cs_dist_broadcast_string(json) : g_strdup(json);
        ok = state_from_json(st, shared, state_path, error);
        g_free(shared);
        if (ok) apply_caller_settings(st, options);
    } else {
        ok = validate_options(options, error);
        if (ok && cs_dist_rank() == 0 && g_file_test(state_path, G_FILE_TEST_EXISTS)) {
            g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                        "--out '%s' already holds a training run: continue it with --resume, "
                        "or choose another folder", options->run_dir);
            ok = FALSE;
        }
    }
done:
    g_free(state_path);
    return ok;
}

/* Data first: a broken dataset is reported before anything is written or computed. */
static gboolean open_data(train_run *r, gboolean resume, GError **error) {
    const cs_train_options *o = &r->st.opt;
    if (o->batch < cs_dist_size()) {
        g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                    "--batch %d is split over %d ranks: expected at least one image per rank",
                    o->batch, cs_dist_size());
        return FALSE;
    }
    r->train_set = cs_dataset_open_many(o->data_dirs, "train", error);
    if (!r->train_set || !val_splits_open(&r->val, o->data_dirs, error)) return FALSE;
    r->csv_header = csv_header(&r->val);
    if (cs_dist_rank() == 0 && !resume && g_mkdir_with_parents(o->run_dir, 0755) != 0) {
        g_set_error(error, CS_ERROR, CS_ERROR_IO, "--out '%s': cannot create the folder: %s",
                    o->run_dir, g_strerror(errno));
        return FALSE;
    }
    return TRUE;
}

/* The network: the saved one of a resumed run, or a new one (with --init's weights). On
 * ranks other than 0 always a new one, which make_trainer gives rank 0's weights. */
static gboolean make_model(train_run *r, const cs_safetensors *state_file, gboolean resume,
                           GString *init_log, GError **error) {
    const cs_train_options *o = &r->st.opt;
    const cs_arch arch = o->stage == 1 ? CS_ARCH_STAGE1 : CS_ARCH_CONDSEG;
    if (!state_file) {
        r->model = cs_model_new(arch, o->preset, o->seed, error);
        if (!r->model) return FALSE;
        r->model->input_size = o->image_size; /* recorded with the weights */
        if (!resume && cs_dist_rank() == 0 && o->init_weights &&
            !load_initial_weights(r->model, o->init_weights, init_log, error))
            return FALSE;
        cs_paramset_sync_to_backend(r->model->params);
        return TRUE;
    }
    char *last_path = g_build_filename(o->run_dir, LAST_FILE, NULL);
    r->model = resume_model(state_file, last_path, r->st.step, error);
    g_free(last_path);
    if (r->model && r->model->arch != arch) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                    "%s holds a %s network but its training state is for stage %d: the run "
                    "cannot be resumed", cs_st_path(state_file), cs_arch_name(r->model->arch),
                    o->stage);
        return FALSE;
    }
    return r->model != NULL;
}

/* The device (CUDA backend: the model moves before the trainer allocates there), the
 * precision, and the trainer. */
static gboolean make_trainer(train_run *r, const char *device, GString *init_log,
                             GError **error) {
    char *note = NULL;
    if (!cs_model_set_device(r->model, device, NULL, error) ||
        !cs_model_set_precision(r->model, r->st.opt.precision, &note, error))
        return FALSE;
    if (note) g_string_append_printf(init_log, "--precision: %s\n", note);
    g_free(note);
    r->st.opt.precision = cs_model_precision(r->model); /* what runs, and is saved */
    cs_dist_broadcast_params(r->model->params);       /* rank 0's weights everywhere */
    const cs_train_options *o = &r->st.opt;
    r->trainer = cs_trainer_new(r->model, o->stage == 1 ? o->lr : o->lr_backbone, o->lr,
                                o->single_sigmoid);
    r->adam = cs_trainer_adam(r->trainer);
    if (cs_dist_size() > 1) trainer_split_batch(r->trainer, cs_dist_reducer(), o->sync_bn);
    return TRUE;
}

/* A resumed run's optimiser: Adam's moments from the state file, its step and rates. */
static gboolean restore_optimiser(cs_adam *adam, const cs_safetensors *file, const run_state *st,
                                  GError **error) {
    const cs_st_tensor *m = cs_st_find(file, ADAM_PREFIX "m"), *v = cs_st_find(file, ADAM_PREFIX "v");
    if (!m || !v || m->numel != adam->n || v->numel != adam->n) {
        g_set_error(error, CS_ERROR, CS_ERROR_TENSOR,
                    "%s: the optimiser moments do not fit the network", cs_st_path(file));
        return FALSE;
    }
    float *moments = g_new(float, 2 * (size_t)adam->n);
    const gboolean read = cs_st_read_f32(file, m, moments, error) &&
                          cs_st_read_f32(file, v, moments + adam->n, error);
    if (read) {
        adam->be->upload(adam->m, moments, sizeof(float) * (size_t)adam->n);
        adam->be->upload(adam->v, moments + adam->n, sizeof(float) * (size_t)adam->n);
        adam->step = st->adam_step;
        adam->lr[0] = st->adam_lr[0], adam->lr[1] = st->adam_lr[1];
    }
    g_free(moments);
    return read;
}

/* The same on every rank: rank 0 reads the moments, the others get them from it. */
static gboolean restore_optimiser_everywhere(cs_adam *adam, const cs_safetensors *file,
                                             const run_state *st, GError **error) {
    if (cs_dist_rank() == 0 && !restore_optimiser(adam, file, st, error)) return FALSE;
    adam->step = st->adam_step;
    adam->lr[0] = st->adam_lr[0], adam->lr[1] = st->adam_lr[1];
    broadcast_moments(adam);
    return TRUE;
}

/* The loaders (training: shuffled and augmented), and the step's buffers. */
static void start_loaders(train_run *r) {
    const cs_train_options *o = &r->st.opt;
    const cs_sample_options train_samples = {
        .aug = !o->augment ? CS_AUG_NONE : o->stage == 1 ? CS_AUG_STAGE1 : CS_AUG_STAGE2,
        .size = o->image_size, .fix_background = o->fix_background};
    const cs_sample_options val_samples = {.aug = CS_AUG_NONE, .size = o->image_size,
                                           .fix_background = o->fix_background};
    r->train_loader = cs_loader_new(r->train_set, o->batch, TRUE, &train_samples, o->seed,
                                    o->workers);
    cs_loader_set_share(r->train_loader, cs_dist_rank(), cs_dist_size());   /* this rank's */
    val_splits_start_loaders(&r->val, o->batch, &val_samples, o->seed, o->workers);
    const size_t plane = (size_t)o->image_size * o->image_size;
    r->sb = (step_buffers){.trainer = r->trainer, .st = &r->st,
                           .outputs = g_new(float, (size_t)o->batch * 4 * plane),
                           .x_aug = g_new(float, (size_t)o->batch * 3 * plane)};
}

/* A new run's train_log.csv header and train.log opening lines. */
static gboolean log_new_run(train_run *r, const GString *init_log, GError **error) {
    const cs_train_options *o = &r->st.opt;
    if (!write_csv(o->run_dir, r->csv_header, error)) return FALSE;
    cs_model_info info;
    cs_model_get_info(r->model, &info);
    char *data = g_strjoinv(", ", (char **)o->data_dirs);
    log_line(&r->st, "condseg %s: stage %d training of %s (%s, %" G_GINT64_FORMAT
                     " parameters) on %s: %d training / %d validation images",
             cs_version(), o->stage, o->stage == 1 ? "the stage-1 network" : "ConDSeg",
             info.preset, info.n_parameters, data, cs_dataset_size(r->train_set),
             val_splits_images(&r->val));
    g_free(data);
    char encoder_lr[48] = "";
    if (o->stage == 2) g_snprintf(encoder_lr, sizeof encoder_lr, " (encoder %g)", o->lr_backbone);
    log_line(&r->st, "batch %d, %d epochs, lr %g%s, seed %" G_GUINT64_FORMAT
                     ", augmentation %s%s%s",
             o->batch, o->epochs, o->lr, encoder_lr, o->seed, o->augment ? "on" : "off",
             o->fix_background ? ", background target fixed" : "",
             o->single_sigmoid ? ", single sigmoid" : "");
    if (init_log->len) log_line(&r->st, "%s", g_strchomp(init_log->str));
    log_ranks(&r->st);
    return TRUE;
}

/* A resumed run's logs: train_log.csv cut back to the checkpoint, a line in train.log. */
static gboolean log_resumed_run(train_run *r, GError **error) {
    const run_state *st = &r->st;
    if (!truncate_csv(st->opt.run_dir, st->epoch, r->csv_header, error)) return FALSE;
    log_line(st, "resumed at epoch %d, batch %d (step %ld)", st->epoch + 1, st->next_batch,
             st->step);
    log_ranks(st);
    return TRUE;
}

static gboolean run_open(train_run *r, const cs_train_options *options, gboolean resume,
                         GError **error) {
    cs_safetensors *state_file = NULL;
    GString *init_log = g_string_new(NULL);
    gboolean ok = open_state(&r->st, options, resume, &state_file, error) &&
                  open_data(r, resume, error) &&
                  make_model(r, state_file, resume, init_log, error) &&
                  make_trainer(r, options->device, init_log, error) &&
                  (!resume || restore_optimiser_everywhere(r->adam, state_file, &r->st, error));
    if (ok) {
        start_loaders(r);
        ok = resume ? log_resumed_run(r, error) : log_new_run(r, init_log, error);
    }
    if (ok && cs_dist_rank() == 0) {
        const int orphans = remove_orphan_temporaries(r->st.opt.run_dir);
        if (orphans)
            log_line(&r->st, "removed %d temporary file(s) left by an interrupted write", orphans);
    }
    if (state_file) cs_st_close(state_file);
    g_string_free(init_log, TRUE);
    r->saved_step = resume ? r->st.step : -1;
    r->timing.first_step = r->st.step;
    return ok;
}

static void run_close(train_run *r) {
    g_free(r->sb.outputs);
    g_free(r->sb.x_aug);
    cs_loader_free(r->train_loader);
    cs_dataset_free(r->train_set);
    val_splits_free(&r->val);
    g_free(r->csv_header);
    cs_trainer_free(r->trainer);
    cs_model_free(r->model);
    state_clear(&r->st);
}

/* ---- training an epoch ----------------------------------------------------------------------- */

/* A failure that stops the run: the message, with what is kept on disk, also in train.log. */
static gboolean fail_run(const train_run *r, GError **error, int code, const char *format, ...)
    G_GNUC_PRINTF(4, 5);
static gboolean fail_run(const train_run *r, GError **error, int code, const char *format, ...) {
    va_list args;
    va_start(args, format);
    char *text = g_strdup_vprintf(format, args);
    va_end(args);
    char *kept = kept_state(r->saved_step, r->st.opt.run_dir);
    char *message = g_strdup_printf("%s; %s", text, kept);
    g_set_error_literal(error, CS_ERROR, code, message);
    log_line(&r->st, "%s", message);
    g_free(message), g_free(kept), g_free(text);
    return FALSE;
}

/* An error that stops the run, also told in train.log. */
static gboolean fail_logged(const train_run *r, GError *local, GError **error) {
    log_line(&r->st, "%s", local->message);
    g_propagate_error(error, local);
    return FALSE;
}

/* The progress so far in the epoch (the running means of its training batches). */
static void update_progress(train_run *r) {
    const run_state *st = &r->st;
    const gint64 now = g_get_monotonic_time();
    const int batches = cs_loader_batches(r->train_loader), trained = st->next_batch - r->first_batch;
    r->pr = (cs_train_progress){
        .epoch = st->epoch + 1, .epochs = st->opt.epochs, .batch_index = st->next_batch,
        .batches = batches, .step = st->step, .loss = st->sum_loss / st->batches_done,
        .miou = st->sum_metrics.jaccard / st->batches_done, .seconds = (now - r->t_start) / 1e6,
        .eta_seconds = trained > 0 ? (now - r->t_epoch) / 1e6 / trained * (batches - st->next_batch)
                                   : 0.0,
        .lr = r->adam->lr[1]};
}

static void report_progress(train_run *r, const char *message) {
    r->pr.message = message;
    if (r->report) r->report(&r->pr, r->user_data);
}

/* Ctrl-C on this rank (the ranks agree on it through whole_batch_metrics). */
static gboolean stop_requested(const train_run *r) { return r->stop && *r->stop; }

/* A step whose loss is not finite: out of memory (the trainer's error), or divergence. */
static gboolean step_failed(train_run *r, const cs_batch *batch, double loss, GError **error) {
    const run_state *st = &r->st;
    GError *cause = cs_trainer_take_error(r->trainer);
    if (cause)
        fail_run(r, error, cause->code, "epoch %d, batch %d (step %ld): %s: training stopped",
                 st->epoch + 1, batch->batch_index + 1, st->step + 1, cause->message);
    else
        fail_run(r, error, CS_ERROR_ARG,
                 "the loss became %s at epoch %d, batch %d (step %ld): training stopped (a "
                 "learning rate too high, or bad initial weights?)",
                 isnan(loss) ? "NaN" : "infinite", st->epoch + 1, batch->batch_index + 1,
                 st->step + 1);
    g_clear_error(&cause);
    return FALSE;
}

/* One optimiser step on a batch, added to the epoch's running sums and reported. */
static gboolean train_batch(train_run *r, const cs_batch *batch, GError **error) {
    run_state *st = &r->st;
    if (batch->whole_count < cs_dist_size()) {
        /* Only an epoch's last batch can be this small: every rank skips it. */
        log_line(st, "epoch %d: its last batch (%d image%s) skipped: fewer images than the %d "
                     "ranks", st->epoch + 1, batch->whole_count, batch->whole_count == 1 ? "" : "s",
                 cs_dist_size());
        st->next_batch = batch->batch_index + 1;
        return TRUE;
    }
    const gint64 t_step = g_get_monotonic_time();
    const double loss = train_step(&r->sb, batch, st->epoch);
    if (!isfinite(loss)) return step_failed(r, batch, loss, error);
    cs_metrics bm;
    r->stop_seen = whole_batch_metrics(r->sb.outputs, batch, (size_t)batch->size * batch->size,
                                       stop_requested(r), &bm);
    st->sum_loss += loss;
    cs_metrics_accumulate(&st->sum_metrics, &bm);
    st->batches_done++;
    st->step++;
    r->timing.step_seconds += (g_get_monotonic_time() - t_step) / 1e6;
    st->next_batch = batch->batch_index + 1;
    update_progress(r);
    report_progress(r, NULL);
    return TRUE;
}

/* Ctrl-C or --max-steps in the middle of an epoch: the state is saved and the run ends. */
static gboolean pause_run(train_run *r, gboolean limit, GError **error) {
    const run_state *st = &r->st;
    if (!checkpoint(st, r->model, r->adam, error)) return FALSE;
    r->saved_step = st->step;
    const char *message = limit ? "step limit reached: state saved" : "interrupted: state saved";
    log_line(st, "%s at epoch %d, batch %d (step %ld)", message, st->epoch + 1, st->next_batch,
             st->step);
    report_progress(r, message);
    return TRUE;
}

/* Trains the rest of the epoch; *paused when the run ended in it (saved). */
static gboolean train_epoch(train_run *r, gboolean *paused, GError **error) {
    run_state *st = &r->st;
    cs_loader_start_epoch(r->train_loader, st->epoch, st->next_batch);
    r->t_epoch = g_get_monotonic_time();
    r->first_batch = st->next_batch;
    const cs_batch *batch;
    GError *local = NULL;
    while ((batch = cs_loader_next(r->train_loader, &local))) {
        if (!train_batch(r, batch, error)) return FALSE;
        const gboolean limit = st->opt.max_steps > 0 && st->step >= st->opt.max_steps;
        if (limit || r->stop_seen) {
            *paused = TRUE;
            return pause_run(r, limit, error);
        }
    }
    if (local) g_propagate_error(error, local);
    return local == NULL;
}

/* ---- ending an epoch ----------------------------------------------------------------------- */

static cs_metrics train_means(const run_state *st) {
    const double n = st->batches_done;
    return (cs_metrics){st->sum_metrics.jaccard / n, st->sum_metrics.dice / n,
                        st->sum_metrics.recall / n, st->sum_metrics.precision / n, 0, 0};
}

/* Validation of every split, and the epoch's row in train_log.csv. */
static gboolean validate_epoch(train_run *r, GError **error) {
    const run_state *st = &r->st;
    if (cs_dist_rank() == 0 && !validate_splits(r->trainer, &r->val, error)) return FALSE;
    share_validation(&r->val);
    const double val_loss = r->val.mean.loss;
    if (!isfinite(val_loss))
        return fail_run(r, error, CS_ERROR_ARG,
                        "the validation loss became %s after epoch %d (step %ld): training "
                        "stopped (a learning rate too high?)",
                        isnan(val_loss) ? "NaN" : "infinite", st->epoch + 1, st->step);
    const cs_metrics train = train_means(st);
    char *row = csv_row(st->epoch + 1, st->sum_loss / st->batches_done, &train, &r->val);
    GError *local = NULL;
    const gboolean written = append_text(st->opt.run_dir, CSV_FILE, row, &local);
    g_free(row);
    return written || fail_logged(r, local, error);
}

/* ReduceLROnPlateau on the validation loss (with several splits on 1 - their mean mIoU: a
 * polyp-free split's loss is tens of times a polyp split's and swings from epoch to epoch,
 * measured 19-52 against 1.7, so a mean of losses follows it alone); best.safetensors and
 * the early-stopping count on the validation mIoU. *message: the epoch's event, or NULL. */
static gboolean schedule(train_run *r, const char **message, GError **error) {
    run_state *st = &r->st;
    const val_result *val = &r->val.mean;
    const gboolean splits = r->val.n > 1;
    *message = NULL;
    if (cs_plateau_step(&st->plateau, splits ? 1.0 - val->metrics.jaccard : val->loss, r->adam))
        log_line(st, "validation %s stalled for %d epochs: learning rates now %g (encoder %g)",
                 splits ? "mIoU (mean of the splits)" : "loss", st->opt.patience_lr + 1,
                 r->adam->lr[1], r->adam->lr[0]);
    if (val->metrics.jaccard < st->best_miou) st->stop_counter++;
    if (!(val->metrics.jaccard > st->best_miou)) return TRUE;
    char *best = g_build_filename(st->opt.run_dir, BEST_FILE, NULL);
    GError *local = NULL;
    const gboolean saved = save_weights(r->model, best, st->step, &local);
    g_free(best);
    if (!saved) return fail_logged(r, local, error);
    log_line(st, "validation mIoU%s improved from %.4f to %.4f: saved %s",
             r->val.n > 1 ? " (mean of the splits)" : "", st->best_miou, val->metrics.jaccard,
             BEST_FILE);
    *message = "best validation mIoU so far: saved best.safetensors";
    st->best_miou = val->metrics.jaccard;
    st->stop_counter = 0;
    return TRUE;
}

/* The epoch's lines in train.log and its report. */
static void report_epoch(train_run *r, const char *message) {
    const run_state *st = &r->st;
    const val_result *val = &r->val.mean;
    const cs_metrics train = train_means(st);
    log_line(st, "epoch %d/%d: train loss %.4f mIoU %.4f F1 %.4f | val loss %.4f mIoU %.4f "
                 "F1 %.4f recall %.4f precision %.4f | %.0f s",
             st->epoch + 1, st->opt.epochs, st->sum_loss / st->batches_done, train.jaccard,
             train.dice, val->loss, val->metrics.jaccard, val->metrics.dice, val->metrics.recall,
             val->metrics.precision, (g_get_monotonic_time() - r->t_epoch) / 1e6);
    log_split_lines(st, &r->val);
    update_progress(r);
    r->pr.epoch_done = TRUE;
    r->pr.val_loss = val->loss, r->pr.val_miou = val->metrics.jaccard;
    r->pr.val_dice = val->metrics.dice;
    r->pr.n_splits = r->val.n > 1 ? r->val.n : 0;
    r->pr.splits = r->val.reported;
    report_progress(r, message);
    r->pr.epoch_done = FALSE;
}

/* Validation, scheduler, logs, the checkpoint (pointing at the next epoch) and early
 * stopping; *finished when the run ends here. */
static gboolean end_epoch(train_run *r, gboolean *finished, GError **error) {
    run_state *st = &r->st;
    const char *message;
    if (!validate_epoch(r, error) || !schedule(r, &message, error)) return FALSE;
    report_epoch(r, message);
    st->next_batch = 0;
    st->sum_loss = 0.0;
    memset(&st->sum_metrics, 0, sizeof st->sum_metrics);
    st->batches_done = 0;
    st->epoch++;
    if (!checkpoint(st, r->model, r->adam, error)) return FALSE;
    r->saved_step = st->step;
    cs_dist_wait_for_rank0();   /* its checkpoint may take a while */
    const gboolean stop = stop_on_any_rank(r->stop);
    if (st->stop_counter >= st->opt.patience_stop) {
        log_line(st, "early stopping: validation mIoU has not improved on %.4f for %d epochs",
                 st->best_miou, st->opt.patience_stop);
        report_progress(r, "early stopping");
        *finished = TRUE;
    } else if (stop) {
        report_progress(r, "interrupted: state saved");
        *finished = TRUE;
    }
    return TRUE;
}

gboolean cs_train(const cs_train_options *options, gboolean resume, cs_train_report_fn report,
                  void *user_data, volatile int *stop, GError **error) {
    /* Rank 0 reports (and logs, and writes). */
    train_run r = {.report = cs_dist_rank() == 0 ? report : NULL, .user_data = user_data,
                   .stop = stop, .t_start = g_get_monotonic_time()};
    gboolean ok = run_open(&r, options, resume, error), finished = FALSE;
    while (ok && !finished && r.st.epoch < r.st.opt.epochs)
        ok = train_epoch(&r, &finished, error) && (finished || end_epoch(&r, &finished, error));
    log_timing(&r.st, &r.timing, r.model);
    run_close(&r);
    return ok;
}
