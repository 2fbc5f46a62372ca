/* model_internal.h — the inside of a cs_model, for the parts of libcondseg that train and
 * evaluate it (train.c, eval.c) besides model.c. */
#ifndef CONDSEG_MODEL_INTERNAL_H
#define CONDSEG_MODEL_INTERNAL_H

#include "condseg.h"
#include "graph.h"
#include "net.h"
#include "losses.h"
#include "optim.h"
#include "params.h"

struct cs_model {
    cs_arch arch;
    const cs_netcfg *cfg;
    cs_paramset *params;
    cs_ctx *ctx;              /* kept between runs: its pool makes repeat runs allocation-free */
    cs_progress_fn progress;
    void *progress_data;
    int input_size;           /* CS_INPUT_SIZE, or what the weights' metadata says */
    gboolean bf16;            /* cs_model_set_precision("bf16") took effect */
    uint64_t weights_tag;     /* inference's reordered-weights tag; 0: none yet */
    unsigned tta;             /* cs_model_set_tta's mirrored views; 0: none */
};

/* After anything that changes the weights (an optimiser step, a load into a live model):
 * inference reorders them again. */
void cs_model_weights_changed(cs_model *model);

/* Metadata keys condseg writes into its weights files. */
#define CS_META_ARCH "condseg.arch"
#define CS_META_PRESET "condseg.preset"
#define CS_META_INPUT_SIZE "condseg.input_size"

const char *cs_arch_name(cs_arch arch);
/* "fp32"/NULL or "bf16" -> *bf16, with cs_model_set_precision's note and errors. */
gboolean cs_precision_parse(const char *precision, gboolean *bf16, char **note,
                            GError **error);
/* cs_model_load on an open file; tensors named foreign_prefix... (not NULL) are not the
 * network's and are left alone (a training checkpoint's optimiser state). */
cs_model *cs_model_load_file(const struct cs_safetensors *file, const char *foreign_prefix,
                             GError **error);

/* ---- one training step (train.c) ---------------------------------------------------------
 * The machinery the training loop uses, open to tests: gradients and Adam for a model. */
typedef struct cs_trainer cs_trainer;
cs_trainer *cs_trainer_new(cs_model *model, double lr_backbone, double lr,
                           gboolean single_sigmoid);
void cs_trainer_free(cs_trainer *t);
/* Forward in training mode (stage 1: on x then on x_aug; stage 2: on x), the stage's loss
 * and the backward pass: the parameter gradients are in model->params->grads afterwards.
 * outputs (may be NULL) receives the outputs: stage 1 pred, pred_aug; stage 2 mask, fg,
 * bg, uc (n x size x size each); parts (may be NULL) the stage-2 loss terms. */
double cs_trainer_forward_backward(cs_trainer *t, const float *x, const float *x_aug,
                                   const float *y1, const float *y2, int n, int size,
                                   float *outputs, cs_stage2_parts *parts);
/* Why the last cs_trainer_forward_backward returned NaN when it was not the loss (memory
 * ran out; the caller owns the error), or NULL. */
GError *cs_trainer_take_error(cs_trainer *t);
/* One Adam step from those gradients. */
void cs_trainer_update(cs_trainer *t);
cs_adam *cs_trainer_adam(cs_trainer *t);

#endif
