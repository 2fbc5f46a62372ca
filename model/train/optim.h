/* optim.h — PyTorch's Adam (two parameter groups: the encoder and the rest) and
 * ReduceLROnPlateau, as the original training scripts configure them (spec §6.1). */
#ifndef CONDSEG_OPTIM_H
#define CONDSEG_OPTIM_H

#include <glib.h>
#include <stdint.h>

#include "params.h"

struct cs_backend;

typedef struct {
    const struct cs_backend *be;  /* where the moments live: the parameters' backend */
    int64_t n;                /* trainable values */
    int64_t split;            /* values [0, split) are the encoder (layer0..layer3) */
    float *m, *v;             /* first and second moments, the layout of the values, in the
                               * backend's memory */
    int64_t step;
    double lr[2];             /* encoder, rest */
    double beta1, beta2, eps;
} cs_adam;

/* Adam over every trainable parameter of ps; the encoder's parameters (declared first)
 * get lr_backbone. */
cs_adam *cs_adam_new(const cs_paramset *ps, double lr_backbone, double lr);
void cs_adam_free(cs_adam *opt);
/* One update from the gradients in ps->grads. */
void cs_adam_step(cs_adam *opt, cs_paramset *ps);

/* ReduceLROnPlateau(mode min, factor, patience, threshold 1e-4 relative, cooldown 0,
 * min_lr 0, eps 1e-8). */
typedef struct {
    double factor, threshold, eps;
    int patience;
    double best;              /* +inf at first */
    int bad_epochs;
} cs_plateau;

void cs_plateau_init(cs_plateau *s, double factor, int patience);
/* After an epoch's validation loss: returns TRUE when the learning rates were reduced. */
gboolean cs_plateau_step(cs_plateau *s, double loss, cs_adam *opt);

#endif
