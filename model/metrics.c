/* metrics.c — the evaluation metrics of spec §7, computed exactly as the original code
 * does: both maps thresholded with a strict > 0.5, integer pixel counts, ε = 1e-15 in
 * every ratio (so two empty maps score 1), F2 from precision and recall, and the
 * pixel accuracy. Averaging (per-image means, or means of batch means) is the caller's. */
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
