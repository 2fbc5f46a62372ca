/* metrics.c — the evaluation metrics of spec §7, computed exactly as the original code
 * does: both maps thresholded with a strict > 0.5, integer pixel counts, ε = 1e-15 in
 * every ratio, F2 from precision and recall, and the pixel accuracy; and the false alarm
 * of a frame without a polyp. Averaging (per-image means, or means of batch means) is
 * the caller's.
 *
 * Empty masks and empty predictions (polyp-free frames, missed polyps): ε makes every
 * ratio whose numerator and denominator are both 0 worth 1 ("nothing to find and nothing
 * found" is perfect), the convention of MONAI's DiceMetric (ignore_empty=False) and of
 * scikit-learn's zero_division=1, and the original's:
 *   mask empty, prediction empty:      Dice = IoU = recall = precision = F2 = 1
 *   mask empty, prediction marks some: Dice = IoU = precision = F2 = 0 (1e-15 / nP),
 *                                      recall = 1 (no polyp pixel was missed)
 *   mask marked, prediction empty:     Dice = IoU = recall = F2 = 0,
 *                                      precision = 1 (no pixel was marked wrongly)
 * So on a split of polyp-free frames the mean IoU is the share of frames left wholly
 * unmarked; the false-alarm rate (below) is the tolerant figure. */
#include "losses.h"

#define METRIC_EPS 1e-15

void cs_metrics_image(const float *pred, const float *target, size_t n, cs_metrics *m) {
    size_t tp = 0, n_pred = 0, n_true = 0, agree = 0;
    for (size_t k = 0; k < n; k++) {
        const int p = pred[k] > 0.5f, g = target[k] > 0.5f;
        tp += (size_t)(p & g);
        n_pred += (size_t)p;
        n_true += (size_t)g;
        agree += (size_t)(p == g);
    }
    const double TP = (double)tp, nP = (double)n_pred, nG = (double)n_true;
    m->jaccard = (TP + METRIC_EPS) / (nG + nP - TP + METRIC_EPS);
    m->dice = (2.0 * TP + METRIC_EPS) / (nG + nP + METRIC_EPS);
    m->recall = (TP + METRIC_EPS) / (nG + METRIC_EPS);
    m->precision = (TP + METRIC_EPS) / (nP + METRIC_EPS);
    /* F-beta, beta = 2, in the original's order of operations: 5 (P R) / (4 P + R + ε) */
    m->f2 = 5.0 * (m->precision * m->recall) / (4.0 * m->precision + m->recall + METRIC_EPS);
    m->accuracy = n ? (double)agree / (double)n : 1.0;
}

void cs_metrics_accumulate(cs_metrics *sum, const cs_metrics *m) {
    sum->jaccard += m->jaccard;
    sum->dice += m->dice;
    sum->recall += m->recall;
    sum->precision += m->precision;
    sum->accuracy += m->accuracy;
    sum->f2 += m->f2;
}

void cs_metrics_scale(cs_metrics *m, double factor) {
    m->jaccard *= factor;
    m->dice *= factor;
    m->recall *= factor;
    m->precision *= factor;
    m->accuracy *= factor;
    m->f2 *= factor;
}

gboolean cs_mask_is_empty(const float *target, size_t n) {
    for (size_t k = 0; k < n; k++)
        if (target[k] > 0.5f) return FALSE;
    return TRUE;
}

double cs_marked_fraction(const float *pred, size_t n) {
    size_t marked = 0;
    for (size_t k = 0; k < n; k++) marked += (size_t)(pred[k] > 0.5f);
    return n ? (double)marked / (double)n : 0.0;
}

gboolean cs_is_false_alarm(const float *pred, const float *target, size_t n) {
    return cs_mask_is_empty(target, n) && cs_marked_fraction(pred, n) > CS_FALSE_ALARM_AREA;
}
