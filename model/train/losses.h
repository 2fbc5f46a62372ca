/* losses.h — ConDSeg's training losses (spec §5) and the evaluation metrics (§7), on
 * probability maps laid out batch x 1 x h x w. Sums accumulate in double. Each loss
 * returns its value and writes its gradient with respect to the network outputs (the
 * probabilities), ready to be back-propagated through the network. */
#ifndef CONDSEG_LOSSES_H
#define CONDSEG_LOSSES_H

#include <glib.h>
#include <stddef.h>

#include "condseg.h"

/* Where the original code has a quirk (spec §9), the faithful behaviour is the default. */
typedef struct {
    /* §9.1: DiceBCE applies a sigmoid to outputs that are already probabilities. FALSE
     * (faithful) keeps that; TRUE computes BCE and Dice on the probabilities directly. */
    gboolean single_sigmoid;
    /* A batch split over ranks (dist.h): every batch-wide sum (BCE means, Dice, β, the
     * complementary mean) is summed across them, so each rank gets the whole batch's loss
     * and the exact gradient of it for its own elements. NULL: the batch is all here. */
    const struct cs_reducer *reducer;
} cs_loss_options;

/* DiceBCE (§5.1) of p against target t over n values: BCE (mean) + Dice (sums over all
 * n, smooth 1). dp (may be NULL) receives dL/dp. */
double cs_loss_dicebce(const float *p, const float *t, size_t n, const cs_loss_options *opt,
                       float *dp);

typedef struct {
    double total, mask, fg, bg, comp, beta1, beta2;
} cs_stage2_parts;

/* Stage-2 total (§5.2): L_mask + β1 L_fg + β2 L_bg + L_comp, with β computed from batch
 * sums and carrying gradient, and the complementary loss on the softmax of the three
 * probabilities. Gradients (any may be NULL) are written (not accumulated). */
double cs_loss_stage2(const float *mask, const float *fg, const float *bg, const float *uc,
                      const float *y1, const float *y2, int batch, int h, int w,
                      const cs_loss_options *opt, float *dmask, float *dfg, float *dbg,
                      float *duc, cs_stage2_parts *parts);

/* Stage 1 (§5.3): L_DB(pred, y1) + L_DB(pred_aug, y1) + BCE(pred, [pred_aug > .5]) +
 * BCE(pred_aug, [pred > .5]); the thresholded targets carry no gradient. */
double cs_loss_stage1(const float *pred, const float *pred_aug, const float *y1, size_t n,
                      const cs_loss_options *opt, float *dpred, float *dpred_aug);

/* ---- metrics (§7) ---------------------------------------------------------------------- */

/* cs_metrics (condseg.h): jaccard, dice, recall, precision, accuracy, f2. */
/* One image: P = pred > 0.5, G = target > 0.5 (strict), eps = 1e-15, exactly as §7. */
void cs_metrics_image(const float *pred, const float *target, size_t n, cs_metrics *m);
/* Running means: add one image's metrics with weight 1 (test: per-image mean) or add a
 * batch mean (training loops: mean of batch means). */
void cs_metrics_accumulate(cs_metrics *sum, const cs_metrics *m);
void cs_metrics_scale(cs_metrics *m, double factor);

/* Whether no target pixel is > 0.5 (a frame without a polyp). */
gboolean cs_mask_is_empty(const float *target, size_t n);
/* The share of the n pixels with pred > 0.5. */
double cs_marked_fraction(const float *pred, size_t n);
/* A false alarm: the mask is empty and the prediction marks more than
 * CS_FALSE_ALARM_AREA (condseg.h) of the frame. */
gboolean cs_is_false_alarm(const float *pred, const float *target, size_t n);

#endif
