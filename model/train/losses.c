/* losses.c — ConDSeg's training losses (spec §5) with their gradients (§11), on probability
 * maps batch x 1 x h x w. Everything is summed and differentiated in double; only the
 * gradients handed back are float. The original code's quirks are kept by default: the
 * second sigmoid inside DiceBCE (§9.1), β computed from whole-batch sums and carrying
 * gradient (§9.3), the complementary loss as a softmax over probabilities (§9.11). */
#include "losses.h"

#include <math.h>

#include "dist.h"   /* cs_reducer */

/* PyTorch's binary_cross_entropy clamps each log at -100 ... */
#define BCE_LOG_FLOOR (-100.0)
/* ... and its backward divides by max(x (1 - x), 1e-12). */
#define BCE_GRAD_EPS 1e-12
#define BETA_EPS 1e-15

static double sigmoid(double z) { return 1.0 / (1.0 + exp(-z)); }

static double clamped_log(double x) {
    double l = log(x);
    return l < BCE_LOG_FLOOR ? BCE_LOG_FLOOR : l;
}

/* One element of PyTorch's BCE: -(y log x + (1 - y) log(1 - x)), logs clamped. */
static double bce_term(double x, double y) {
    return -(y * clamped_log(x) + (1.0 - y) * clamped_log(1.0 - x));
}

/* d bce_term / dx as PyTorch's backward computes it (not zero where the clamp is active). */
static double bce_grad(double x, double y) {
    double den = x * (1.0 - x);
    return (x - y) / (den > BCE_GRAD_EPS ? den : BCE_GRAD_EPS);
}

static gboolean single_sigmoid(const cs_loss_options *opt) {
    return opt != NULL && opt->single_sigmoid;
}

/* The sums over the whole batch when it is split over ranks (nothing to do otherwise). */
static void batch_sums(const cs_loss_options *opt, double *values, int count) {
    if (opt && opt->reducer) opt->reducer->sum(values, count, opt->reducer->user);
}

/* ---------------------------------------------------------------------------------------
 * DiceBCE (§5.1)
 * ------------------------------------------------------------------------------------- */

/* The batch-global sums DiceBCE needs; the loss and every element's gradient follow from
 * them, so a caller can combine gradients per element in double and round once. */
typedef struct {
    gboolean single;              /* BCE and Dice on p itself instead of σ(p) */
    double n, bce, num, den;      /* num = 2 Σ s y + 1, den = Σ s + Σ y + 1 (smooth 1) */
} dicebce_sums;

static dicebce_sums dicebce_sum(const float *p, const float *t, size_t n,
                                const cs_loss_options *opt) {
    const gboolean single = single_sigmoid(opt);
    double bce = 0, inter = 0, sum_s = 0, sum_y = 0;
    for (size_t k = 0; k < n; k++) {
        double s = single ? (double)p[k] : sigmoid((double)p[k]);
        double y = t[k];
        bce += bce_term(s, y);
        inter += s * y;
        sum_s += s;
        sum_y += y;
    }
    double sums[5] = {(double)n, bce, inter, sum_s, sum_y};
    batch_sums(opt, sums, 5);
    return (dicebce_sums){single, sums[0], sums[1], 2.0 * sums[2] + 1.0, sums[3] + sums[4] + 1.0};
}

static double dicebce_loss(const dicebce_sums *d) {
    return d->bce / d->n + (1.0 - d->num / d->den);
}

/* dL_DB / dp_k. */
static double dicebce_grad(const dicebce_sums *d, double p, double y) {
    double s = d->single ? p : sigmoid(p);
    double d_dice = -(2.0 * y * d->den - d->num) / (d->den * d->den); /* d Dice / d s_k */
    if (d->single) return bce_grad(s, y) / d->n + d_dice;
    /* through the second sigmoid: (s - y)/(s(1-s)) · s(1-s); s lies in (0.5, 0.73), so
     * PyTorch's 1e-12 floor never applies and the BCE part is (s - y) / N */
    return (s - y) / d->n + d_dice * s * (1.0 - s);
}

double cs_loss_dicebce(const float *p, const float *t, size_t n, const cs_loss_options *opt,
                       float *dp) {
    const dicebce_sums d = dicebce_sum(p, t, n, opt);
    if (dp)
        for (size_t k = 0; k < n; k++) dp[k] = (float)dicebce_grad(&d, p[k], t[k]);
    return dicebce_loss(&d);
}

/* ---------------------------------------------------------------------------------------
 * Stage 2 (§5.2)
 * ------------------------------------------------------------------------------------- */

/* β = 1 / (tanh(Σ p / hw) + 1e-15) and dβ/dp_k (the same for every element k). */
static double beta_weight(const float *p, size_t n, int hw, const cs_loss_options *opt,
                          double *dbeta) {
    double sum = 0;
    for (size_t k = 0; k < n; k++) sum += p[k];
    batch_sums(opt, &sum, 1);
    const double th = tanh(sum / hw);
    const double den = th + BETA_EPS;
    *dbeta = -(1.0 - th * th) / ((double)hw * den * den);
    return 1.0 / den;
}

double cs_loss_stage2(const float *mask, const float *fg, const float *bg, const float *uc,
                      const float *y1, const float *y2, int batch, int h, int w,
                      const cs_loss_options *opt, float *dmask, float *dfg, float *dbg,
                      float *duc, cs_stage2_parts *parts) {
    const size_t n = (size_t)batch * (size_t)h * (size_t)w;
    const int hw = h * w;
    const dicebce_sums s_mask = dicebce_sum(mask, y1, n, opt);
    const dicebce_sums s_fg = dicebce_sum(fg, y1, n, opt);
    const dicebce_sums s_bg = dicebce_sum(bg, y2, n, opt);
    const double l_mask = dicebce_loss(&s_mask), l_fg = dicebce_loss(&s_fg),
                 l_bg = dicebce_loss(&s_bg);
    double dbeta1, dbeta2;
    const double beta1 = beta_weight(fg, n, hw, opt, &dbeta1);
    const double beta2 = beta_weight(bg, n, hw, opt, &dbeta2);

    /* Complementary loss: per pixel a softmax over the three probabilities (§9.11), then
     * the mean of qf qb + qf qu + qb qu = (1 - Σ q²) / 2. With dL/dq_i = -q_i / n the
     * softmax backward gives dL/dp_i = q_i (g_i - Σ_j q_j g_j) (§11). */
    const gboolean grads = dmask || dfg || dbg || duc;
    const double inv_n = 1.0 / s_mask.n;   /* the whole batch's element count */
    double comp = 0;
    for (size_t k = 0; k < n; k++) {
        double a = fg[k], b = bg[k], c = uc[k];
        double m = fmax(a, fmax(b, c));
        double ea = exp(a - m), eb = exp(b - m), ec = exp(c - m);
        double z = ea + eb + ec;
        double qa = ea / z, qb = eb / z, qc = ec / z;
        comp += qa * qb + qa * qc + qb * qc;
        if (!grads) continue;
        double ga = -qa * inv_n, gb = -qb * inv_n, gc = -qc * inv_n;
        double dot = qa * ga + qb * gb + qc * gc;
        if (dmask) dmask[k] = (float)dicebce_grad(&s_mask, mask[k], y1[k]);
        /* β·dL_fg/dfg_k + L_fg·dβ1/dfg_k (β keeps its gradient, §9.3) + the comp. term */
        if (dfg) dfg[k] = (float)(beta1 * dicebce_grad(&s_fg, a, y1[k]) + l_fg * dbeta1 +
                                  qa * (ga - dot));
        if (dbg) dbg[k] = (float)(beta2 * dicebce_grad(&s_bg, b, y2[k]) + l_bg * dbeta2 +
                                  qb * (gb - dot));
        if (duc) duc[k] = (float)(qc * (gc - dot));
    }
    batch_sums(opt, &comp, 1);
    comp *= inv_n;

    const double total = l_mask + beta1 * l_fg + beta2 * l_bg + comp;
    if (parts) *parts = (cs_stage2_parts){total, l_mask, l_fg, l_bg, comp, beta1, beta2};
    return total;
}

/* ---------------------------------------------------------------------------------------
 * Stage 1 (§5.3)
 * ------------------------------------------------------------------------------------- */

/* Mean BCE of p against the gradient-free target 1[q > 0.5] (strict), on the
 * probabilities themselves (no second sigmoid here). */
static double consistency_bce(const float *p, const float *q, size_t n, double batch_n,
                              const cs_loss_options *opt) {
    double sum = 0;
    for (size_t k = 0; k < n; k++) sum += bce_term(p[k], q[k] > 0.5f ? 1.0 : 0.0);
    batch_sums(opt, &sum, 1);
    return sum / batch_n;
}

double cs_loss_stage1(const float *pred, const float *pred_aug, const float *y1, size_t n,
                      const cs_loss_options *opt, float *dpred, float *dpred_aug) {
    const dicebce_sums s_pred = dicebce_sum(pred, y1, n, opt);
    const dicebce_sums s_aug = dicebce_sum(pred_aug, y1, n, opt);
    const double N = s_pred.n;   /* the whole batch's element count */
    const double loss = dicebce_loss(&s_pred) + dicebce_loss(&s_aug) +
                        consistency_bce(pred, pred_aug, n, N, opt) +
                        consistency_bce(pred_aug, pred, n, N, opt);
    for (size_t k = 0; k < n && (dpred || dpred_aug); k++) {
        double t_aug = pred_aug[k] > 0.5f ? 1.0 : 0.0, t = pred[k] > 0.5f ? 1.0 : 0.0;
        if (dpred)
            dpred[k] = (float)(dicebce_grad(&s_pred, pred[k], y1[k]) +
                               bce_grad(pred[k], t_aug) / N);
        if (dpred_aug)
            dpred_aug[k] = (float)(dicebce_grad(&s_aug, pred_aug[k], y1[k]) +
                                   bce_grad(pred_aug[k], t) / N);
    }
    return loss;
}
