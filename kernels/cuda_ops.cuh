/* cuda_ops.cuh — every operation of the backend table (backend.h) for the CUDA backend,
 * as a template over the executor X (cuda_exec.cuh): the per-thread work as functors, and
 * the launch logic (grid sizes are X's business), tiling and GEMM calls around them. The
 * per-element math is cs_math.h's, shared with the CPU kernels; the semantics (outputs
 * first, gradients that accumulate, NULL scale/shift) are kernels.h's.
 *
 * Every functor writes only its own element(s): the backward passes of upsampling,
 * max-pooling, col2im and outlook attention are gathers (each input gradient sums what it
 * contributed to) rather than scatters, so no atomics are used and results do not depend
 * on scheduling. Reductions combine in a fixed order (cuda_exec.cuh). Where cheap, the
 * order of the CPU kernel's sums is kept, so that the two backends differ by little more
 * than FMA contraction and the GEMMs' summation order.
 */
#ifndef CONDSEG_CUDA_OPS_CUH
#define CONDSEG_CUDA_OPS_CUH

#include <float.h>
#include <math.h>
#include <string.h>

extern "C" {
#include "backend.h"
}
#include "cs_math.h"
#include "cuda_exec.cuh"

/* The most floats of convolution workspace one operation plans for (backend_cuda.cu). */
size_t csk_workspace_limit(void);

/* ======================================================================================
 * Elementwise operations */

struct ReluF {
    float *y;
    const float *x;
    CSK_HD void operator()(int i) const { y[i] = csm_relu(x[i]); }
};

struct SigmoidF {
    float *y;
    const float *x;
    CSK_HD void operator()(int i) const { y[i] = csm_sigmoid(x[i]); }
};

/* y may alias a or b: each element is read before it is written, by the same thread. */
struct AddF {
    float *y;
    const float *a, *b;
    int relu;
    CSK_HD void operator()(int i) const {
        const float v = a[i] + b[i];
        y[i] = relu ? csm_relu(v) : v;
    }
};

struct ChannelAffineF {
    float *y;
    const float *x, *scale, *shift;
    csk_div by_hw, by_c;
    int relu;
    CSK_HD void operator()(int i) const {
        const int nc = csk_quot(by_hw, i), ch = nc - csk_quot(by_c, nc) * (int)by_c.d;
        const float v = x[i] * scale[ch] + shift[ch];
        y[i] = relu ? csm_relu(v) : v;
    }
};

struct MulChannelF {
    float *y;
    const float *x, *s;
    int hw;
    CSK_HD void operator()(int i) const { y[i] = x[i] * s[i / hw]; }
};

struct MulSpatialF {
    float *y;
    const float *x, *m;
    int c, hw;
    CSK_HD void operator()(int i) const {
        const int nc = i / hw, p = i - nc * hw;
        y[i] = x[i] * m[(size_t)(nc / c) * hw + p];
    }
};

/* x (n x cx x hw) into channels [c0, c0 + cx) of y (n x cy x hw); i indexes x. */
struct CopyChannelsF {
    float *y;
    const float *x;
    int cy, c0, cx, hw;
    CSK_HD void operator()(int i) const {
        const int block = cx * hw, b = i / block, k = i - b * block;
        y[((size_t)b * cy + c0) * hw + k] = x[i];
    }
};

struct AccumulateF {
    float *dst;
    const float *src;
    CSK_HD void operator()(int i) const { dst[i] += src[i]; }
};

struct ReluBackwardF {
    float *dx;
    const float *dy, *y;
    CSK_HD void operator()(int i) const { dx[i] += csm_relu_grad(y[i], dy[i]); }
};

struct SigmoidBackwardF {
    float *dx;
    const float *dy, *y;
    CSK_HD void operator()(int i) const { dx[i] += csm_sigmoid_grad(y[i], dy[i]); }
};

struct MulChannelBackwardDxF {
    float *dx;
    const float *dy, *s;
    int hw;
    CSK_HD void operator()(int i) const { dx[i] += dy[i] * s[i / hw]; }
};

struct MulSpatialBackwardDxF {
    float *dx;
    const float *dy, *m;
    int c, hw;
    CSK_HD void operator()(int i) const {
        const int nc = i / hw, p = i - nc * hw;
        dx[i] += dy[i] * m[(size_t)(nc / c) * hw + p];
    }
};

/* dm[b, p] += sum over channels of dy * x, in channel order as the CPU adds them. */
struct MulSpatialBackwardDmF {
    float *dm;
    const float *dy, *x;
    int c, hw;
    CSK_HD void operator()(int i) const {
        const int b = i / hw, p = i - b * hw;
        float d = dm[i];
        for (int ch = 0; ch < c; ch++) {
            const size_t k = ((size_t)b * c + ch) * hw + p;
            d += dy[k] * x[k];
        }
        dm[i] = d;
    }
};

/* dx (n x cx x hw) += channels [c0, c0 + cx) of dy (n x cy x hw); i indexes dx. */
struct CopyChannelsBackwardF {
    float *dx;
    const float *dy;
    int cy, c0, cx, hw;
    CSK_HD void operator()(int i) const {
        const int block = cx * hw, b = i / block, k = i - b * block;
        dx[i] += dy[((size_t)b * cy + c0) * hw + k];
    }
};

struct AdamF {
    float *p, *m, *v;
    const float *g;
    float beta1, beta2, step_size, bc2_sqrt, eps;
    CSK_HD void operator()(int i) const {
        csm_adam(&p[i], &m[i], &v[i], g[i], beta1, beta2, step_size, bc2_sqrt, eps);
    }
};

/* ---- row reductions' terms and results ----------------------------------------------- */

/* Row `row` of a rows x len matrix. */
struct RowSumTerm {
    const float *x;
    int len;
    CSK_HD csk_sum2 operator()(int row, int j) const {
        return SumReducer::one(x[(size_t)row * len + j]);
    }
};

struct RowDotTerm {
    const float *a, *b;
    int len;
    CSK_HD csk_sum2 operator()(int row, int j) const {
        const size_t k = (size_t)row * len + j;
        return SumReducer::one((double)a[k] * b[k]);
    }
};

struct RowArgMaxTerm {
    const float *x;
    int len;
    CSK_HD csk_argmax operator()(int row, int j) const {
        csk_argmax v = {x[(size_t)row * len + j], j};
        return v;
    }
};

/* Channel `ch` of an n x c x hw array, its n * hw elements in image order. */
struct ChannelSumTerm {
    const float *x;
    int c, hw;
    csk_div by_hw;
    CSK_HD csk_sum2 operator()(int ch, int j) const {
        const int b = csk_quot(by_hw, j), p = j - b * hw;
        return SumReducer::one(x[((size_t)b * c + ch) * hw + p]);
    }
};

struct AddRowSumFin {
    float *dst;
    CSK_HD void operator()(int row, csk_sum2 v) const { dst[row] += (float)v.a; }
};

struct MeanFin {
    float *y;
    double count;
    CSK_HD void operator()(int row, csk_sum2 v) const { y[row] = (float)(v.a / count); }
};

struct MaxFin {
    float *y;
    CSK_HD void operator()(int row, csk_argmax v) const { y[row] = v.v; }
};

/* ======================================================================================
 * BatchNorm */

struct BnEvalAffineF {
    float *scale, *shift;
    const float *gamma, *beta, *mean, *var;
    CSK_HD void operator()(int i) const {
        csm_bn_fold(gamma[i], beta[i], mean[i], var[i], &scale[i], &shift[i]);
    }
};

struct BnTrainAffineF {
    float *scale, *shift, *running_mean, *running_var;
    const float *gamma, *beta, *batch_mean, *batch_var;
    float unbias;
    CSK_HD void operator()(int i) const {
        csm_bn_train(gamma[i], beta[i], batch_mean[i], batch_var[i], unbias, &scale[i],
                     &shift[i], &running_mean[i], &running_var[i]);
    }
};

/* Two passes as the CPU: the mean, then the mean squared deviation from it, in double. */
struct MeanToRowsFin {
    double *mean;
    double count;
    CSK_HD void operator()(int ch, csk_sum2 v) const { mean[ch] = v.a / count; }
};

struct ChannelSqDevTerm {
    const float *x;
    const double *mean;
    int c, hw;
    csk_div by_hw;
    CSK_HD csk_sum2 operator()(int ch, int j) const {
        const int b = csk_quot(by_hw, j), p = j - b * hw;
        const double d = (double)x[((size_t)b * c + ch) * hw + p] - mean[ch];
        return SumReducer::one(d * d);
    }
};

struct BnStatsFin {
    float *mean, *var;
    const double *mean_d;
    double count;
    CSK_HD void operator()(int ch, csk_sum2 v) const {
        mean[ch] = (float)mean_d[ch];
        var[ch] = (float)(v.a / count);
    }
};

/* Per channel, in the ROWS scratch: invstd [0, c), mean of g [c, 2c), mean of g * xhat
 * [2c, 3c), where g is dy masked by the fused ReLU's output y (when y is given). */
struct BnInvStdF {
    double *rows;
    const float *var;
    CSK_HD void operator()(int ch) const {
        rows[ch] = 1.0 / sqrt((double)var[ch] + (double)CS_BN_EPS);
    }
};

static inline CSK_HD double csk_bn_g(const float *dy, const float *y, size_t k) {
    return y ? (double)csm_relu_grad(y[k], dy[k]) : (double)dy[k];
}

struct BnGradTerm {
    const float *dy, *x, *y, *mean;
    const double *rows;
    int c, hw;
    csk_div by_hw;
    CSK_HD csk_sum2 operator()(int ch, int j) const {
        const int b = csk_quot(by_hw, j), p = j - b * hw;
        const size_t k = ((size_t)b * c + ch) * hw + p;
        const double g = csk_bn_g(dy, y, k);
        const double xhat = ((double)x[k] - (double)mean[ch]) * rows[ch];
        csk_sum2 v = {g, g * xhat};
        return v;
    }
};

struct BnGradFin {
    float *dgamma, *dbeta;
    double *rows;
    int c;
    double count;
    CSK_HD void operator()(int ch, csk_sum2 v) const {
        dgamma[ch] += (float)v.b;
        dbeta[ch] += (float)v.a;
        rows[c + ch] = v.a / count;
        rows[2 * c + ch] = v.b / count;
    }
};

struct BnDxF {
    float *dx;
    const float *dy, *x, *y, *gamma, *mean;
    const double *rows;
    int c;
    csk_div by_hw, by_c;
    CSK_HD void operator()(int i) const {
        const int nc = csk_quot(by_hw, i), ch = nc - csk_quot(by_c, nc) * c;
        const double invstd = rows[ch];
        const double g = csk_bn_g(dy, y, (size_t)i);
        const double xhat = ((double)x[i] - (double)mean[ch]) * invstd;
        const double k = (double)gamma[ch] * invstd;
        dx[i] += (float)(k * (g - rows[c + ch] - xhat * rows[2 * c + ch]));
    }
};

/* ======================================================================================
 * Pooling and channel reductions */

struct MaxPoolF {
    float *y;
    const float *x;
    int h, w, ho, wo;
    CSK_HD void operator()(int i) const {
        const int out_plane = ho * wo, nc = i / out_plane, q = i - nc * out_plane;
        const int oy = q / wo, ox = q - oy * wo;
        const float *src = x + (size_t)nc * h * w;
        y[i] = src[csm_maxpool3s2_argmax(src, h, w, oy, ox)];
    }
};

/* Input pixel (iy, ix) lies in the windows of output rows iy/2 .. (iy+1)/2 (a window
 * covers 2*oy-1 .. 2*oy+1), and likewise for columns: at most 2 x 2 windows, each checked
 * for whether this pixel is its maximum. */
struct MaxPoolBackwardF {
    float *dx;
    const float *dy, *x;
    int h, w, ho, wo;
    CSK_HD void operator()(int i) const {
        const int plane = h * w, nc = i / plane, q = i - nc * plane;
        const int iy = q / w, ix = q - iy * w;
        const float *src = x + (size_t)nc * plane;
        const float *g = dy + (size_t)nc * ho * wo;
        const int oy_hi = (iy + 1) / 2 < ho - 1 ? (iy + 1) / 2 : ho - 1;
        const int ox_hi = (ix + 1) / 2 < wo - 1 ? (ix + 1) / 2 : wo - 1;
        float d = dx[i];
        for (int oy = iy / 2; oy <= oy_hi; oy++)
            for (int ox = ix / 2; ox <= ox_hi; ox++)
                if (csm_maxpool3s2_argmax(src, h, w, oy, ox) == q) d += g[oy * wo + ox];
        dx[i] = d;
    }
};

struct ChannelMeanF {
    float *y;
    const float *x;
    int c, hw;
    CSK_HD void operator()(int i) const {
        const int b = i / hw, p = i - b * hw;
        double acc = 0.0;
        for (int ch = 0; ch < c; ch++) acc += x[((size_t)b * c + ch) * hw + p];
        y[i] = (float)(acc / c);
    }
};

struct ChannelMaxF {
    float *y;
    const float *x;
    int c, hw;
    CSK_HD void operator()(int i) const {
        const int b = i / hw, p = i - b * hw;
        float m = x[(size_t)b * c * hw + p];
        for (int ch = 1; ch < c; ch++) {
            const float v = x[((size_t)b * c + ch) * hw + p];
            m = v > m ? v : m;
        }
        y[i] = m;
    }
};

struct GlobalAvgBackwardF {
    float *dx;
    const float *dy;
    int hw;
    CSK_HD void operator()(int i) const { dx[i] += dy[i / hw] / (float)hw; }
};

/* The maximum of each row receives the row's gradient (one thread per row). */
struct GlobalMaxBackwardFin {
    float *dx;
    const float *dy;
    int hw;
    CSK_HD void operator()(int row, csk_argmax v) const { dx[(size_t)row * hw + v.i] += dy[row]; }
};

struct ChannelMeanBackwardF {
    float *dx;
    const float *dy;
    int c, hw;
    CSK_HD void operator()(int i) const {
        const int nc = i / hw, p = i - nc * hw;
        dx[i] += dy[(size_t)(nc / c) * hw + p] * (1.0f / (float)c);
    }
};

struct ChannelMaxBackwardF {
    float *dx;
    const float *dy, *x;
    int c, hw;
    CSK_HD void operator()(int i) const {
        const int b = i / hw, p = i - b * hw;
        float best = x[(size_t)b * c * hw + p];
        int arg = 0;
        for (int ch = 1; ch < c; ch++) {
            const float v = x[((size_t)b * c + ch) * hw + p];
            if (v > best) best = v, arg = ch;
        }
        dx[((size_t)b * c + arg) * hw + p] += dy[i];
    }
};

/* ======================================================================================
 * Bilinear upsampling, align_corners=True */

struct UpsampleF {
    float *y;
    const float *x;
    int h, w, ho, wo;
    float scale_y, scale_x;
    CSK_HD void operator()(int i) const {
        const int out_plane = ho * wo, nc = i / out_plane, q = i - nc * out_plane;
        const int oy = q / wo, ox = q - oy * wo;
        int y0, y1, x0, x1;
        float ly, lx;
        csm_bilinear_ac_tap(oy, h, scale_y, &y0, &y1, &ly);
        csm_bilinear_ac_tap(ox, w, scale_x, &x0, &x1, &lx);
        const float *src = x + (size_t)nc * h * w;
        const float r0 = (1.0f - lx) * src[y0 * w + x0] + lx * src[y0 * w + x1];
        const float r1 = (1.0f - lx) * src[y1 * w + x0] + lx * src[y1 * w + x1];
        y[i] = (1.0f - ly) * r0 + ly * r1;
    }
};

/* The destination indices d in [0, m) whose taps (csm_bilinear_ac_tap) may include
 * source index s: the taps of d lie at floor(scale * d) and one above, so d is within
 * (s - 1) / scale .. (s + 1) / scale; one index of margin on each side absorbs the
 * rounding of that division. The caller checks each d's actual taps. */
static inline CSK_HD void csk_upsample_window(int s, int m, float scale, int *lo, int *hi) {
    if (!(scale > 0.0f)) {
        *lo = 0, *hi = m - 1;
        return;
    }
    const int a = (int)floorf((float)(s - 1) / scale) - 1;
    const int b = (int)ceilf((float)(s + 1) / scale) + 1;
    *lo = a < 0 ? 0 : a;
    *hi = b > m - 1 ? m - 1 : b;
}

/* The adjoint of UpsampleF as a gather: input pixel (iy, ix) sums, over the output pixels
 * whose taps include it, the output gradient times the weight of that tap, adding in the
 * order the CPU's scatter does (output scan order, taps r0x0 r0x1 r1x0 r1x1). */
struct UpsampleBackwardF {
    float *dx;
    const float *dy;
    int h, w, ho, wo;
    float scale_y, scale_x;
    CSK_HD void operator()(int i) const {
        const int plane = h * w, nc = i / plane, q = i - nc * plane;
        const int iy = q / w, ix = q - iy * w;
        const float *g = dy + (size_t)nc * ho * wo;
        int oy_lo, oy_hi, ox_lo, ox_hi;
        csk_upsample_window(iy, ho, scale_y, &oy_lo, &oy_hi);
        csk_upsample_window(ix, wo, scale_x, &ox_lo, &ox_hi);
        float d = dx[i];
        for (int oy = oy_lo; oy <= oy_hi; oy++) {
            int y0, y1;
            float ly;
            csm_bilinear_ac_tap(oy, h, scale_y, &y0, &y1, &ly);
            if (y0 != iy && y1 != iy) continue;
            for (int ox = ox_lo; ox <= ox_hi; ox++) {
                int x0, x1;
                float lx;
                csm_bilinear_ac_tap(ox, w, scale_x, &x0, &x1, &lx);
                if (x0 != ix && x1 != ix) continue;
                const float v = g[oy * wo + ox];
                if (y0 == iy && x0 == ix) d += (1.0f - ly) * (1.0f - lx) * v;
                if (y0 == iy && x1 == ix) d += (1.0f - ly) * lx * v;
                if (y1 == iy && x0 == ix) d += ly * (1.0f - lx) * v;
                if (y1 == iy && x1 == ix) d += ly * lx * v;
            }
        }
        dx[i] = d;
    }
};

/* ======================================================================================
 * CDFA's outlook attention (spec §2.9.1; attention_cpu.c has the derivation). Logits and
 * probabilities: n x heads*81 x h x w, channel hd*81 + i*9 + j; P_p[i][j] is the softmax
 * over j at source pixel p. Values v: n x c x h x w, c = heads * head_dim. */

static inline CSK_HD int csk_inside(int y, int x, int h, int w) {
    return y >= 0 && y < h && x >= 0 && x < w;
}

/* One (image, head, i, pixel) row of 9 logits -> its softmax probabilities. */
struct OutlookSoftmaxF {
    float *prob;
    const float *a;
    int hw;
    float scale;
    CSK_HD void operator()(int t) const {
        const int p = t % hw, r = t / hw;   /* r = (b * heads + hd) * 9 + i */
        const float *logits = a + (size_t)r * 9 * hw + p;
        float *out = prob + (size_t)r * 9 * hw + p;
        float m = -FLT_MAX;
        for (int j = 0; j < 9; j++) {
            const float v = scale * logits[(size_t)j * hw];
            m = v > m ? v : m;
        }
        float e[9], s = 0.0f;
        for (int j = 0; j < 9; j++) {
            e[j] = csm_exp_nonpositive(scale * logits[(size_t)j * hw] - m);
            s += e[j];
        }
        s = 1.0f / s;
        for (int j = 0; j < 9; j++) out[(size_t)j * hw] = e[j] * s;
    }
};

/* Y[c](q) = sum_i sum_j P_{q - d(i)}[i][j] V[c](q - d(i) + d(j)), P and V zero outside. */
struct OutlookForwardF {
    float *y;
    const float *prob, *v;
    int c, heads, head_dim, h, w;
    CSK_HD void operator()(int t) const {
        const int hw = h * w, p = t % hw, bc = t / hw, ch = bc % c, b = bc / c;
        const int hd = ch / head_dim, qy = p / w, qx = p - qy * w;
        const float *pb = prob + ((size_t)b * heads + hd) * 81 * hw;
        const float *vc = v + (size_t)bc * hw;
        float acc = 0.0f;
        for (int i = 0; i < 9; i++) {
            const int sy = qy - csm_nb_dy(i), sx = qx - csm_nb_dx(i);
            if (!csk_inside(sy, sx, h, w)) continue;
            const float *pi = pb + (size_t)i * 9 * hw + sy * w + sx;
            for (int j = 0; j < 9; j++) {
                const int ry = sy + csm_nb_dy(j), rx = sx + csm_nb_dx(j);
                if (!csk_inside(ry, rx, h, w)) continue;
                acc += pi[(size_t)j * hw] * vc[ry * w + rx];
            }
        }
        y[t] = acc;
    }
};

/* Per (image, head, i, source pixel p):
 *   dP[j] = sum_d dY_d(p + d(i)) V_d(p + d(j)),
 *   dA[j] += scale P[j] (dP[j] - sum_k P[k] dP[k]). */
struct OutlookBackwardLogitsF {
    float *da;
    const float *dy, *prob, *v;
    int c, heads, head_dim, h, w;
    float scale;
    CSK_HD void operator()(int t) const {
        const int hw = h * w, p = t % hw, r = t / hw, i = r % 9, bh = r / 9;
        const int b = bh / heads, hd = bh - b * heads;
        const int py = p / w, px = p - py * w;
        const int qy = py + csm_nb_dy(i), qx = px + csm_nb_dx(i);
        float dp[9];
        for (int j = 0; j < 9; j++) dp[j] = 0.0f;
        if (csk_inside(qy, qx, h, w)) {
            for (int dd = 0; dd < head_dim; dd++) {
                const size_t chn = (size_t)b * c + (size_t)hd * head_dim + dd;
                const float gq = dy[chn * hw + qy * w + qx];
                const float *vc = v + chn * hw;
                for (int j = 0; j < 9; j++) {
                    const int ry = py + csm_nb_dy(j), rx = px + csm_nb_dx(j);
                    if (csk_inside(ry, rx, h, w)) dp[j] += gq * vc[ry * w + rx];
                }
            }
        }
        const float *pr = prob + (size_t)r * 9 * hw + p;
        float s = 0.0f;
        for (int j = 0; j < 9; j++) s += pr[(size_t)j * hw] * dp[j];
        float *out = da + (size_t)r * 9 * hw + p;
        for (int j = 0; j < 9; j++) out[(size_t)j * hw] += scale * pr[(size_t)j * hw] * (dp[j] - s);
    }
};

/* dV_d(r) += sum_i sum_j P_{r - d(j)}[i][j] dY_d(r - d(j) + d(i)). */
struct OutlookBackwardValuesF {
    float *dv;
    const float *dy, *prob;
    int c, heads, head_dim, h, w;
    CSK_HD void operator()(int t) const {
        const int hw = h * w, p = t % hw, bc = t / hw, ch = bc % c, b = bc / c;
        const int hd = ch / head_dim, ry = p / w, rx = p - ry * w;
        const float *pb = prob + ((size_t)b * heads + hd) * 81 * hw;
        const float *gc = dy + (size_t)bc * hw;
        float acc = 0.0f;
        for (int i = 0; i < 9; i++) {
            for (int j = 0; j < 9; j++) {
                const int sy = ry - csm_nb_dy(j), sx = rx - csm_nb_dx(j);
                if (!csk_inside(sy, sx, h, w)) continue;
                const int qy = sy + csm_nb_dy(i), qx = sx + csm_nb_dx(i);
                if (!csk_inside(qy, qx, h, w)) continue;
                acc += pb[((size_t)i * 9 + j) * hw + sy * w + sx] * gc[qy * w + qx];
            }
        }
        dv[t] += acc;
    }
};

/* ======================================================================================
 * Convolution: im2col + GEMM (PyTorch's Unfold layout: row (ch*k + ky)*k + kx).
 *
 * The work is cut into chunks of `images` images whose columns sit side by side (the
 * GEMM's N grows with small maps), or, when one image's columns exceed the workspace
 * limit, into tiles of `rows` output rows of one image. With one image per chunk the GEMM
 * writes into y directly and the epilogue (scale/shift/ReLU) is one pass at the end. A
 * 1x1/s1/p0 convolution needs no columns: its maps are the GEMM operands as they are, one
 * strided-batched GEMM for all images (the channel Linear layers of CDFA are such). Only on
 * small maps are its images still put side by side, for a wider GEMM. */

/* Columns of `images` consecutive images (x: the first), output rows [row0, row0 + rows);
 * column index image * rows * wo + (oy - row0) * wo + ox, row length ld. */
struct Im2colF {
    float *col;
    const float *x;
    int c, h, w, k, stride, pad, dil, row0;
    csk_div by_ld, by_image_cols, by_wo, by_kk, by_k;
    CSK_HD void operator()(int i) const {
        const int r = csk_quot(by_ld, i), q = i - r * (int)by_ld.d;
        const int image = csk_quot(by_image_cols, q), qq = q - image * (int)by_image_cols.d;
        const int line = csk_quot(by_wo, qq), ox = qq - line * (int)by_wo.d, oy = row0 + line;
        const int ch = csk_quot(by_kk, r), rem = r - ch * (int)by_kk.d;
        const int ky = csk_quot(by_k, rem), kx = rem - ky * k;
        const int iy = oy * stride - pad + ky * dil, ix = ox * stride - pad + kx * dil;
        col[i] = csk_inside(iy, ix, h, w)
                     ? x[((size_t)image * c + ch) * h * w + (size_t)iy * w + ix]
                     : 0.0f;
    }
};

/* The adjoint of Im2colF as a gather, accumulating into dx (the chunk's first image):
 * each input pixel sums the column entries it was copied to, in the CPU's (ky, kx) order. */
struct Col2imF {
    float *dx;
    const float *col;
    int ld, image_cols, c, h, w, k, stride, pad, dil, wo, row0, rows;
    csk_div by_image, by_plane, by_w;
    CSK_HD void operator()(int i) const {
        const int image = csk_quot(by_image, i), rem = i - image * (int)by_image.d;
        const int ch = csk_quot(by_plane, rem), q = rem - ch * (int)by_plane.d;
        const int iy = csk_quot(by_w, q), ix = q - iy * w;
        const float *src = col + (size_t)image * image_cols;
        float d = dx[i];
        for (int ky = 0; ky < k; ky++) {
            int oy = iy + pad - ky * dil;
            if (oy < 0) continue;
            if (stride > 1) {
                if (oy % stride) continue;
                oy /= stride;
            }
            if (oy < row0 || oy >= row0 + rows) continue;
            for (int kx = 0; kx < k; kx++) {
                int ox = ix + pad - kx * dil;
                if (ox < 0) continue;
                if (stride > 1) {
                    if (ox % stride) continue;
                    ox /= stride;
                }
                if (ox >= wo) continue;
                const int r = (ch * k + ky) * k + kx;
                d += src[(size_t)r * ld + (oy - row0) * wo + ox];
            }
        }
        dx[i] = d;
    }
};

static inline CSK_HD float csk_epilogue(float v, const float *scale, const float *shift, int oc,
                                        int relu) {
    const float a = scale ? scale[oc] : 1.0f, b = shift ? shift[oc] : 0.0f;
    return relu ? csm_relu(v * a + b) : v * a + b;
}

/* The chunk's GEMM output (o x images*plane, row length ld) into NCHW y (the chunk's first
 * image), with the epilogue; i indexes y. */
struct ConvScatterF {
    float *y;
    const float *out;
    const float *scale, *shift;
    int plane, ld, relu;
    csk_div by_image, by_plane;
    CSK_HD void operator()(int i) const {
        const int image = csk_quot(by_image, i), rem = i - image * (int)by_image.d;
        const int oc = csk_quot(by_plane, rem), p = rem - oc * plane;
        y[i] = csk_epilogue(out[(size_t)oc * ld + (size_t)image * plane + p], scale, shift, oc,
                            relu);
    }
};

struct ConvEpilogueF {
    float *y;
    const float *scale, *shift;
    csk_div by_plane, by_o;
    int relu;
    CSK_HD void operator()(int i) const {
        const int t = csk_quot(by_plane, i), oc = t - csk_quot(by_o, t) * (int)by_o.d;
        y[i] = csk_epilogue(y[i], scale, shift, oc, relu);
    }
};

/* The chunk's output gradients (NCHW, dy: its first image) side by side as o x ld; i
 * indexes the result. */
struct ConvGatherDyF {
    float *dycat;
    const float *dy;
    int o, plane;
    csk_div by_ld, by_plane;
    CSK_HD void operator()(int i) const {
        const int oc = csk_quot(by_ld, i), q = i - oc * (int)by_ld.d;
        const int image = csk_quot(by_plane, q), p = q - image * plane;
        dycat[i] = dy[((size_t)image * o + oc) * plane + p];
    }
};

/* Output channel `row` of dy (n x o x plane): its n * plane values. */
struct BiasGradTerm {
    const float *dy;
    int o, plane;
    csk_div by_plane;
    CSK_HD csk_sum2 operator()(int row, int j) const {
        const int b = csk_quot(by_plane, j), p = j - b * plane;
        return SumReducer::one(dy[((size_t)b * o + row) * plane + p]);
    }
};

typedef struct {
    size_t kdim, plane;
    int pointwise;
    int images;      /* per chunk; 1: direct output into y */
    int rows;        /* output rows per tile (images == 1) */
    size_t workspace;
} csk_conv_plan;

static inline csk_conv_plan csk_plan_conv(const cs_conv_shape *s) {
    csk_conv_plan p;
    p.kdim = (size_t)s->c * s->k * s->k;
    p.plane = (size_t)s->ho * s->wo;
    p.pointwise = s->k == 1 && s->stride == 1 && s->pad == 0;
    const size_t limit = csk_workspace_limit();
    const size_t per_image = (p.kdim + (size_t)s->o) * p.plane;
    size_t images = per_image ? limit / per_image : 1;
    if (images > (size_t)s->n) images = (size_t)s->n;
    if (images < 2 || (p.pointwise && p.plane >= 1024)) images = 1;
    p.images = (int)images;
    p.rows = s->ho;
    if (p.images > 1) {
        p.workspace = per_image * images;
    } else if (p.pointwise) {
        p.workspace = 0;
    } else {
        size_t rows = limit / (p.kdim * (size_t)s->wo);
        if (rows < 1) rows = 1;
        if (rows > (size_t)s->ho) rows = (size_t)s->ho;
        p.rows = (int)rows;
        p.workspace = p.kdim * rows * (size_t)s->wo;
    }
    return p;
}

static inline Im2colF csk_im2col(float *col, const float *x, int ld, int image_cols,
                                 const cs_conv_shape *s, int row0) {
    Im2colF f = {col, x, s->c, s->h, s->w, s->k, s->stride, s->pad, s->dil, row0,
                 csk_make_div(ld), csk_make_div(image_cols), csk_make_div(s->wo),
                 csk_make_div(s->k * s->k), csk_make_div(s->k)};
    return f;
}

static inline Col2imF csk_col2im(float *dx, const float *col, int ld, int image_cols,
                                 const cs_conv_shape *s, int row0, int rows) {
    const int plane = s->h * s->w;
    Col2imF f = {dx, col, ld, image_cols, s->c, s->h, s->w, s->k, s->stride, s->pad, s->dil,
                 s->wo, row0, rows, csk_make_div(s->c * plane), csk_make_div(plane),
                 csk_make_div(s->w)};
    return f;
}

template <class X>
struct CudaOps {
    /* ---- convolution ---- */
    static size_t conv2d_workspace(const cs_conv_shape *s) { return csk_plan_conv(s).workspace; }

    static void conv2d_forward(float *y, const float *x, const float *w, const float *scale,
                               const float *shift, const cs_conv_shape *s, int relu,
                               float *workspace) {
        const csk_conv_plan pl = csk_plan_conv(s);
        const int kdim = (int)pl.kdim, plane = (int)pl.plane, o = s->o;
        const size_t in_image = (size_t)s->c * s->h * s->w, out_image = (size_t)o * plane;
        if (pl.images == 1 && pl.pointwise) {
            /* y_i = W x_i for every image i */
            csk_gemm_rm_batched<X>(0, 0, o, plane, s->c, 1.0f, w, s->c, 0, x, plane,
                                   (long long)in_image, 0.0f, y, plane, (long long)out_image,
                                   s->n);
        }
        for (int n0 = 0; n0 < s->n && !(pl.images == 1 && pl.pointwise); n0 += pl.images) {
            const int g = n0 + pl.images <= s->n ? pl.images : s->n - n0;
            const float *xn = x + (size_t)n0 * in_image;
            float *yn = y + (size_t)n0 * out_image;
            if (pl.images == 1) {
                for (int row0 = 0; row0 < s->ho; row0 += pl.rows) {
                    const int rows = row0 + pl.rows <= s->ho ? pl.rows : s->ho - row0;
                    const int ncols = rows * s->wo;
                    X::for_each(csk_int_count(pl.kdim * ncols, "im2col"),
                                csk_im2col(workspace, xn, ncols, ncols, s, row0));
                    csk_gemm_rm<X>(0, 0, o, ncols, kdim, 1.0f, w, kdim, workspace, ncols, 0.0f,
                                   yn + (size_t)row0 * s->wo, plane);
                }
                continue;
            }
            const int ld = g * plane;
            float *col = workspace, *out = workspace + pl.kdim * (size_t)pl.images * plane;
            X::for_each(csk_int_count(pl.kdim * ld, "im2col"),
                        csk_im2col(col, xn, ld, plane, s, 0));
            csk_gemm_rm<X>(0, 0, o, ld, kdim, 1.0f, w, kdim, col, ld, 0.0f, out, ld);
            ConvScatterF scatter = {yn, out, scale, shift, plane, ld, relu,
                                    csk_make_div(o * plane), csk_make_div(plane)};
            X::for_each(csk_int_count(out_image * g, "conv output"), scatter);
        }
        if (pl.images == 1 && (scale || shift || relu)) {
            ConvEpilogueF epilogue = {y, scale, shift, csk_make_div(plane), csk_make_div(o), relu};
            X::for_each(csk_int_count(out_image * s->n, "conv output"), epilogue);
        }
    }

    static void conv2d_backward(float *dx, float *dw, float *db, const float *dy,
                                const float *x, const float *w, const cs_conv_shape *s,
                                float *workspace) {
        const csk_conv_plan pl = csk_plan_conv(s);
        const int kdim = (int)pl.kdim, plane = (int)pl.plane, o = s->o, c = s->c;
        const size_t in_image = (size_t)c * s->h * s->w, out_image = (size_t)o * plane;
        if (db) {
            BiasGradTerm term = {dy, o, plane, csk_make_div(plane)};
            AddRowSumFin fin = {db};
            csk_reduce_rows<X, SumReducer>(o, csk_int_count(pl.plane * s->n, "bias gradient"),
                                           term, fin);
        }
        if (pl.images == 1 && pl.pointwise) {
            /* dW += dY_i X_i^T image after image; dX_i += W^T dY_i for all at once */
            for (int i = 0; i < s->n; i++)
                csk_gemm_rm<X>(0, 1, o, c, plane, 1.0f, dy + (size_t)i * out_image, plane,
                               x + (size_t)i * in_image, plane, 1.0f, dw, c);
            if (dx)
                csk_gemm_rm_batched<X>(1, 0, c, plane, o, 1.0f, w, c, 0, dy, plane,
                                       (long long)out_image, 1.0f, dx, plane,
                                       (long long)in_image, s->n);
            return;
        }
        for (int n0 = 0; n0 < s->n; n0 += pl.images) {
            const int g = n0 + pl.images <= s->n ? pl.images : s->n - n0;
            const float *xn = x + (size_t)n0 * in_image, *dyn = dy + (size_t)n0 * out_image;
            float *dxn = dx ? dx + (size_t)n0 * in_image : NULL;
            if (pl.images == 1) {
                for (int row0 = 0; row0 < s->ho; row0 += pl.rows) {
                    const int rows = row0 + pl.rows <= s->ho ? pl.rows : s->ho - row0;
                    const int ncols = rows * s->wo;
                    const float *dy_tile = dyn + (size_t)row0 * s->wo;
                    X::for_each(csk_int_count(pl.kdim * ncols, "im2col"),
                                csk_im2col(workspace, xn, ncols, ncols, s, row0));
                    csk_gemm_rm<X>(0, 1, o, kdim, ncols, 1.0f, dy_tile, plane, workspace, ncols,
                                   1.0f, dw, kdim);
                    if (!dxn) continue;
                    /* The columns' gradient in the same buffer, gathered onto dX. */
                    csk_gemm_rm<X>(1, 0, kdim, ncols, o, 1.0f, w, kdim, dy_tile, plane, 0.0f,
                                   workspace, ncols);
                    X::for_each(csk_int_count(in_image, "col2im"),
                                csk_col2im(dxn, workspace, ncols, ncols, s, row0, rows));
                }
                continue;
            }
            const int ld = g * plane;
            float *col = workspace, *gy = workspace + pl.kdim * (size_t)pl.images * plane;
            ConvGatherDyF gather = {gy, dyn, o, plane, csk_make_div(ld), csk_make_div(plane)};
            X::for_each(csk_int_count((size_t)o * ld, "conv gradient"), gather);
            X::for_each(csk_int_count(pl.kdim * ld, "im2col"),
                        csk_im2col(col, xn, ld, plane, s, 0));
            csk_gemm_rm<X>(0, 1, o, kdim, ld, 1.0f, gy, ld, col, ld, 1.0f, dw, kdim);
            if (!dxn) continue;
            csk_gemm_rm<X>(1, 0, kdim, ld, o, 1.0f, w, kdim, gy, ld, 0.0f, col, ld);
            X::for_each(csk_int_count(in_image * g, "col2im"),
                        csk_col2im(dxn, col, ld, plane, s, 0, s->ho));
        }
    }

    /* ---- BatchNorm ---- */
    static void channel_affine(float *y, const float *x, const float *scale, const float *shift,
                               int n, int c, int hw, int relu) {
        ChannelAffineF f = {y, x, scale, shift, csk_make_div(hw), csk_make_div(c), relu};
        X::for_each(csk_int_count((size_t)n * c * hw, "channel_affine"), f);
    }

    static void bn_eval_affine(float *scale, float *shift, const float *gamma, const float *beta,
                               const float *mean, const float *var, int c) {
        BnEvalAffineF f = {scale, shift, gamma, beta, mean, var};
        X::for_each(c, f);
    }

    static void batchnorm_stats(float *mean, float *var, const float *x, int n, int c, int hw) {
        const int len = csk_int_count((size_t)n * hw, "batchnorm");
        const double count = (double)n * hw;
        double *mean_d = (double *)X::scratch(CSK_SCRATCH_ROWS, sizeof(double) * (size_t)c);
        ChannelSumTerm sum = {x, c, hw, csk_make_div(hw)};
        MeanToRowsFin to_rows = {mean_d, count};
        csk_reduce_rows<X, SumReducer>(c, len, sum, to_rows);
        ChannelSqDevTerm sq = {x, mean_d, c, hw, csk_make_div(hw)};
        BnStatsFin fin = {mean, var, mean_d, count};
        csk_reduce_rows<X, SumReducer>(c, len, sq, fin);
    }

    static void bn_train_affine(float *scale, float *shift, float *running_mean,
                                float *running_var, const float *gamma, const float *beta,
                                const float *batch_mean, const float *batch_var, int c,
                                float unbias) {
        BnTrainAffineF f = {scale, shift, running_mean, running_var, gamma, beta, batch_mean,
                            batch_var, unbias};
        X::for_each(c, f);
    }

    static void batchnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                                   const float *x, const float *y, const float *gamma,
                                   const float *mean, const float *var, int n, int c, int hw) {
        const int len = csk_int_count((size_t)n * hw, "batchnorm");
        double *rows = (double *)X::scratch(CSK_SCRATCH_ROWS, sizeof(double) * 3 * (size_t)c);
        BnInvStdF invstd = {rows, var};
        X::for_each(c, invstd);
        BnGradTerm term = {dy, x, y, mean, rows, c, hw, csk_make_div(hw)};
        BnGradFin fin = {dgamma, dbeta, rows, c, (double)n * hw};
        csk_reduce_rows<X, SumReducer>(c, len, term, fin);
        if (!dx) return;
        BnDxF f = {dx, dy, x, y, gamma, mean, rows, c, csk_make_div(hw), csk_make_div(c)};
        X::for_each(csk_int_count((size_t)n * c * hw, "batchnorm"), f);
    }

    /* ---- elementwise ---- */
    static void relu(float *y, const float *x, size_t count) {
        ReluF f = {y, x};
        X::for_each(csk_int_count(count, "relu"), f);
    }

    static void sigmoid(float *y, const float *x, size_t count) {
        SigmoidF f = {y, x};
        X::for_each(csk_int_count(count, "sigmoid"), f);
    }

    static void add(float *y, const float *a, const float *b, size_t count, int relu) {
        AddF f = {y, a, b, relu};
        X::for_each(csk_int_count(count, "add"), f);
    }

    static void mul_channel(float *y, const float *x, const float *s, int n, int c, int hw) {
        MulChannelF f = {y, x, s, hw};
        X::for_each(csk_int_count((size_t)n * c * hw, "mul_channel"), f);
    }

    static void mul_spatial(float *y, const float *x, const float *m, int n, int c, int hw) {
        MulSpatialF f = {y, x, m, c, hw};
        X::for_each(csk_int_count((size_t)n * c * hw, "mul_spatial"), f);
    }

    static void copy_channels(float *y, int cy, int c0, const float *x, int cx, int n, int hw) {
        CopyChannelsF f = {y, x, cy, c0, cx, hw};
        X::for_each(csk_int_count((size_t)n * cx * hw, "concat"), f);
    }

    static void accumulate(float *dst, const float *src, size_t count) {
        AccumulateF f = {dst, src};
        X::for_each(csk_int_count(count, "accumulate"), f);
    }

    static void relu_backward(float *dx, const float *dy, const float *y, size_t count) {
        ReluBackwardF f = {dx, dy, y};
        X::for_each(csk_int_count(count, "relu"), f);
    }

    static void sigmoid_backward(float *dx, const float *dy, const float *y, size_t count) {
        SigmoidBackwardF f = {dx, dy, y};
        X::for_each(csk_int_count(count, "sigmoid"), f);
    }

    static void mul_channel_backward(float *dx, float *ds, const float *dy, const float *x,
                                     const float *s, int n, int c, int hw) {
        if (ds) {
            RowDotTerm term = {dy, x, hw};
            AddRowSumFin fin = {ds};
            csk_reduce_rows<X, SumReducer>(csk_int_count((size_t)n * c, "mul_channel"), hw, term,
                                           fin);
        }
        if (dx) {
            MulChannelBackwardDxF f = {dx, dy, s, hw};
            X::for_each(csk_int_count((size_t)n * c * hw, "mul_channel"), f);
        }
    }

    static void mul_spatial_backward(float *dx, float *dm, const float *dy, const float *x,
                                     const float *m, int n, int c, int hw) {
        if (dx) {
            MulSpatialBackwardDxF f = {dx, dy, m, c, hw};
            X::for_each(csk_int_count((size_t)n * c * hw, "mul_spatial"), f);
        }
        if (dm) {
            MulSpatialBackwardDmF f = {dm, dy, x, c, hw};
            X::for_each(csk_int_count((size_t)n * hw, "mul_spatial"), f);
        }
    }

    static void copy_channels_backward(float *dx, int cx, const float *dy, int cy, int c0, int n,
                                       int hw) {
        CopyChannelsBackwardF f = {dx, dy, cy, c0, cx, hw};
        X::for_each(csk_int_count((size_t)n * cx * hw, "concat"), f);
    }

    /* ---- pooling and reductions ---- */
    static void maxpool3s2(float *y, const float *x, int n, int c, int h, int w, int ho, int wo) {
        MaxPoolF f = {y, x, h, w, ho, wo};
        X::for_each(csk_int_count((size_t)n * c * ho * wo, "maxpool"), f);
    }

    static void maxpool3s2_backward(float *dx, const float *dy, const float *x, int n, int c,
                                    int h, int w, int ho, int wo) {
        MaxPoolBackwardF f = {dx, dy, x, h, w, ho, wo};
        X::for_each(csk_int_count((size_t)n * c * h * w, "maxpool"), f);
    }

    static void global_avgpool(float *y, const float *x, int n, int c, int hw) {
        RowSumTerm term = {x, hw};
        MeanFin fin = {y, (double)hw};
        csk_reduce_rows<X, SumReducer>(csk_int_count((size_t)n * c, "avgpool"), hw, term, fin);
    }

    static void global_maxpool(float *y, const float *x, int n, int c, int hw) {
        RowArgMaxTerm term = {x, hw};
        MaxFin fin = {y};
        csk_reduce_rows<X, ArgMaxReducer>(csk_int_count((size_t)n * c, "maxpool"), hw, term, fin);
    }

    static void channel_mean(float *y, const float *x, int n, int c, int hw) {
        ChannelMeanF f = {y, x, c, hw};
        X::for_each(csk_int_count((size_t)n * hw, "channel_mean"), f);
    }

    static void channel_max(float *y, const float *x, int n, int c, int hw) {
        ChannelMaxF f = {y, x, c, hw};
        X::for_each(csk_int_count((size_t)n * hw, "channel_max"), f);
    }

    static void global_avgpool_backward(float *dx, const float *dy, int n, int c, int hw) {
        GlobalAvgBackwardF f = {dx, dy, hw};
        X::for_each(csk_int_count((size_t)n * c * hw, "avgpool"), f);
    }

    static void global_maxpool_backward(float *dx, const float *dy, const float *x, int n, int c,
                                        int hw) {
        RowArgMaxTerm term = {x, hw};
        GlobalMaxBackwardFin fin = {dx, dy, hw};
        csk_reduce_rows<X, ArgMaxReducer>(csk_int_count((size_t)n * c, "maxpool"), hw, term, fin);
    }

    static void channel_mean_backward(float *dx, const float *dy, int n, int c, int hw) {
        ChannelMeanBackwardF f = {dx, dy, c, hw};
        X::for_each(csk_int_count((size_t)n * c * hw, "channel_mean"), f);
    }

    static void channel_max_backward(float *dx, const float *dy, const float *x, int n, int c,
                                     int hw) {
        ChannelMaxBackwardF f = {dx, dy, x, c, hw};
        X::for_each(csk_int_count((size_t)n * hw, "channel_max"), f);
    }

    /* ---- resampling and attention ---- */
    static void upsample_bilinear(float *y, const float *x, int n, int c, int h, int w, int ho,
                                  int wo) {
        UpsampleF f = {y, x, h, w, ho, wo, csm_bilinear_ac_scale(h, ho),
                       csm_bilinear_ac_scale(w, wo)};
        X::for_each(csk_int_count((size_t)n * c * ho * wo, "upsample"), f);
    }

    static void upsample_bilinear_backward(float *dx, const float *dy, int n, int c, int h, int w,
                                           int ho, int wo) {
        UpsampleBackwardF f = {dx, dy, h, w, ho, wo, csm_bilinear_ac_scale(h, ho),
                               csm_bilinear_ac_scale(w, wo)};
        X::for_each(csk_int_count((size_t)n * c * h * w, "upsample"), f);
    }

    static void outlook_attention(float *y, float *prob, const float *v, const float *a, int n,
                                  int c, int heads, int h, int w, float scale) {
        const size_t hw = (size_t)h * w, prob_floats = (size_t)n * heads * 81 * hw;
        /* Inference keeps no probabilities: they go to scratch memory. */
        if (!prob) prob = (float *)X::scratch(CSK_SCRATCH_PROB, sizeof(float) * prob_floats);
        OutlookSoftmaxF softmax = {prob, a, (int)hw, scale};
        X::for_each(csk_int_count((size_t)n * heads * 9 * hw, "outlook attention"), softmax);
        OutlookForwardF gather = {y, prob, v, c, heads, c / heads, h, w};
        X::for_each(csk_int_count((size_t)n * c * hw, "outlook attention"), gather);
    }

    static void outlook_attention_backward(float *dv, float *da, const float *dy,
                                           const float *prob, const float *v, int n, int c,
                                           int heads, int h, int w, float scale) {
        const size_t hw = (size_t)h * w;
        OutlookBackwardLogitsF logits = {da, dy, prob, v, c, heads, c / heads, h, w, scale};
        X::for_each(csk_int_count((size_t)n * heads * 9 * hw, "outlook attention"), logits);
        OutlookBackwardValuesF values = {dv, dy, prob, c, heads, c / heads, h, w};
        X::for_each(csk_int_count((size_t)n * c * hw, "outlook attention"), values);
    }

    /* ---- optimiser ---- */
    static void adam_update(float *p, float *m, float *v, const float *g, int64_t n, float beta1,
                            float beta2, float step_size, float bias_correction2_sqrt, float eps) {
        const int64_t chunk = (int64_t)1 << 30;
        for (int64_t i0 = 0; i0 < n; i0 += chunk) {
            const int count = (int)(n - i0 < chunk ? n - i0 : chunk);
            AdamF f = {p + i0, m + i0, v + i0, g + i0, beta1, beta2, step_size,
                       bias_correction2_sqrt, eps};
            X::for_each(count, f);
        }
    }

    /* Every operation of the table (the memory functions are the executor's own). */
    static void fill(cs_backend *b) {
        b->conv2d_workspace = conv2d_workspace;
        b->conv2d_backward_workspace = conv2d_workspace;
        b->conv2d_forward = conv2d_forward;
        b->conv2d_backward = conv2d_backward;
        b->channel_affine = channel_affine;
        b->bn_eval_affine = bn_eval_affine;
        b->batchnorm_stats = batchnorm_stats;
        b->bn_train_affine = bn_train_affine;
        b->batchnorm_backward = batchnorm_backward;
        b->relu = relu;
        b->sigmoid = sigmoid;
        b->add = add;
        b->mul_channel = mul_channel;
        b->mul_spatial = mul_spatial;
        b->copy_channels = copy_channels;
        b->accumulate = accumulate;
        b->relu_backward = relu_backward;
        b->sigmoid_backward = sigmoid_backward;
        b->mul_channel_backward = mul_channel_backward;
        b->mul_spatial_backward = mul_spatial_backward;
        b->copy_channels_backward = copy_channels_backward;
        b->maxpool3s2 = maxpool3s2;
        b->maxpool3s2_backward = maxpool3s2_backward;
        b->global_avgpool = global_avgpool;
        b->global_maxpool = global_maxpool;
        b->channel_mean = channel_mean;
        b->channel_max = channel_max;
        b->global_avgpool_backward = global_avgpool_backward;
        b->global_maxpool_backward = global_maxpool_backward;
        b->channel_mean_backward = channel_mean_backward;
        b->channel_max_backward = channel_max_backward;
        b->upsample_bilinear = upsample_bilinear;
        b->upsample_bilinear_backward = upsample_bilinear_backward;
        b->outlook_attention = outlook_attention;
        b->outlook_attention_backward = outlook_attention_backward;
        b->adam_update = adam_update;
    }
};

#endif
