/* attention_cuda.cuh — the CUDA twin of attention_cpu.c: CDFA's outlook attention in the
 * gather formulation (each output written by one thread): the 9-way softmax per
 * (image, head, neighbour, pixel), the folded product, and the backward pass to the
 * logits and to the values. */
#ifndef CONDSEG_ATTENTION_CUDA_CUH
#define CONDSEG_ATTENTION_CUDA_CUH

#include <float.h>
#include <math.h>

extern "C" {
#include "backend.h"
}
#include "cs_math.h"
#include "cuda_exec.cuh"

/* ======================================================================================
 * CDFA's outlook attention (spec §2.9.1; attention_cpu.c has the derivation). Logits and
 * probabilities: n x heads*81 x h x w, channel hd*81 + i*9 + j; P_p[i][j] is the softmax
 * over j at source pixel p. Values v: n x c x h x w, c = heads * head_dim. */

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
            e[j] = csm_softmax_exp(logits[(size_t)j * hw], scale, m);
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
        for (int j = 0; j < 9; j++)
            out[(size_t)j * hw] += csm_softmax_grad(pr[(size_t)j * hw], dp[j], s, scale);
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

template <class X>
struct CudaAttention {
    static void outlook_attention(float *y, float *prob, const float *v, const float *a, int n,
                                  int c, int heads, int h, int w, float scale) {
        const size_t hw = (size_t)h * w, prob_floats = (size_t)n * heads * 81 * hw;
        /* Inference keeps no probabilities: they go to scratch memory. */
        if (!prob) prob = (float *)X::scratch(CSK_SCRATCH_PROB, sizeof(float) * prob_floats);
        if (!prob) return; /* out of memory: noted, the run ends with the error */
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
};

#endif
