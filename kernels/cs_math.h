/* cs_math.h — the per-element math of condseg's operations, written once for the CPU
 * kernels (C11) and the CUDA kernels (nvcc): activation functions, the bilinear
 * align_corners=True sampling rule with its weights and their adjoint, BatchNorm (folded,
 * training statistics, input gradient), the 9-way softmax of outlook attention and its
 * backward, its neighbourhood. The kernels of each backend arrange the loops (rows on the
 * CPU, one thread per element on the GPU) around these same formulas. Everything here is
 * a static inline function on scalars, prefixed csm_ ("condseg math") to keep them apart
 * from the tensor-level operations.
 */
#ifndef CONDSEG_CS_MATH_H
#define CONDSEG_CS_MATH_H

#include <math.h>
#include <string.h>

#ifdef __CUDACC__
#define CS_HD __host__ __device__ __forceinline__
#else
#define CS_HD static inline
#endif

/* BatchNorm2d epsilon (PyTorch's default, spec §1.5) and momentum of the running stats. */
#define CS_BN_EPS 1e-5f
#define CS_BN_MOMENTUM 0.1f

CS_HD float csm_relu(float x) { return x > 0.0f ? x : 0.0f; }
CS_HD float csm_relu_grad(float y, float dy) { return y > 0.0f ? dy : 0.0f; }

CS_HD float csm_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
CS_HD float csm_sigmoid_grad(float y, float dy) { return dy * y * (1.0f - y); }

/* 1 / sqrt(var + eps), in double: the BatchNorm of every mode and backend divides by it. */
CS_HD double csm_bn_invstd(float var) { return 1.0 / sqrt((double)var + (double)CS_BN_EPS); }

/* Training-mode BatchNorm's backward for one element. g is the output gradient (masked by
 * a fused ReLU: csm_bn_out_grad), xhat = (x - mean) * invstd the normalised input;
 * mean_g and mean_gx are the channel means of g and g * xhat over the batch. Then
 *   dx = gamma * invstd * (g - mean_g - xhat * mean_gx)
 * (PyTorch's batch_norm_backward), in double. */
CS_HD double csm_bn_out_grad(float dy, const float *y, size_t k) {
    return y ? (double)csm_relu_grad(y[k], dy) : (double)dy;
}
CS_HD double csm_bn_xhat(float x, double mean, double invstd) {
    return ((double)x - mean) * invstd;
}
CS_HD double csm_bn_input_grad(double g, double xhat, float gamma, double invstd, double mean_g,
                               double mean_gx) {
    return (double)gamma * invstd * (g - mean_g - xhat * mean_gx);
}

/* Eval-mode BatchNorm as y = x * scale + shift. Computed in double so that folding it into
 * a convolution loses nothing measurable against the unfolded form. */
CS_HD void csm_bn_fold(float gamma, float beta, float mean, float var, float *scale,
                      float *shift) {
    double s = (double)gamma * csm_bn_invstd(var);
    *scale = (float)s;
    *shift = (float)((double)beta - (double)mean * s);
}

/* Training-mode BatchNorm for channel statistics (mean, biased var): the affine map that
 * normalises, and the running statistics' update (momentum 0.1, the unbiased variance
 * var * unbias with unbias = n / (n - 1), spec §1.5). */
CS_HD void csm_bn_train(float gamma, float beta, float mean, float var, float unbias,
                        float *scale, float *shift, float *running_mean, float *running_var) {
    const double invstd = csm_bn_invstd(var);
    *scale = (float)(gamma * invstd);
    *shift = (float)(beta - mean * gamma * invstd);
    *running_mean = (1.0f - CS_BN_MOMENTUM) * *running_mean + CS_BN_MOMENTUM * mean;
    *running_var = (float)((1.0 - CS_BN_MOMENTUM) * *running_var +
                           CS_BN_MOMENTUM * (double)var * unbias);
}

/* One Adam step of one value, as torch.optim.Adam computes it:
 * m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= step_size m / (sqrt(v) / bc2_sqrt + eps)
 * with step_size = lr / (1 - b1^t) and bc2_sqrt = sqrt(1 - b2^t). */
CS_HD void csm_adam(float *p, float *m, float *v, float g, float b1, float b2, float step_size,
                    float bc2_sqrt, float eps) {
    *m = *m * b1 + g * (1.0f - b1);
    *v = *v * b2 + g * g * (1.0f - b2);
    *p -= step_size * *m / (sqrtf(*v) / bc2_sqrt + eps);
}

/* Bilinear upsampling with align_corners=True (spec §1.4). For an axis of length n
 * sampled to length m: the float32 scale (as PyTorch computes it), then for destination
 * index d the two source taps and the weight of the second one. */
CS_HD float csm_bilinear_ac_scale(int n, int m) {
    return m > 1 ? (float)(n - 1) / (float)(m - 1) : 0.0f;
}

CS_HD void csm_bilinear_ac_tap(int d, int n, float scale, int *i0, int *i1, float *lambda1) {
    float x = scale * (float)d;
    int lo = (int)x;               /* x >= 0, so truncation is floor */
    if (lo > n - 1) lo = n - 1;
    *i0 = lo;
    *i1 = lo + 1 < n ? lo + 1 : n - 1;
    *lambda1 = x - (float)lo;
}

/* Linear interpolation between a and b, weight l1 on b: the bilinear sample is this along
 * x on two rows, then along y between them. */
CS_HD float csm_lerp(float a, float b, float l1) { return (1.0f - l1) * a + l1 * b; }

/* The weights of a bilinear sample's four taps (row y0 col x0, y0 x1, y1 x0, y1 x1) for
 * second-tap weights ly, lx: the adjoint (backward) sends an output gradient v to the
 * taps as w[k] * v. */
CS_HD void csm_bilinear_weights(float ly, float lx, float w[4]) {
    w[0] = (1.0f - ly) * (1.0f - lx);
    w[1] = (1.0f - ly) * lx;
    w[2] = ly * (1.0f - lx);
    w[3] = ly * lx;
}

/* e^x for x <= 0 (softmax logits after subtracting their maximum), within 2 ulp of expf,
 * without library calls so that loops over it vectorise (with -fno-trapping-math, which
 * the kernels are built with). Cody-Waite range reduction to r in [-ln2/2, ln2/2], Cephes'
 * degree-6 polynomial for e^r; below -87 (e^x < 1.7e-38) the result is 0. */
CS_HD float csm_exp_nonpositive(float x) {
    int n = (int)(x * 1.44269504f - 0.5f);    /* round(x / ln2) for x <= 0 */
    n = n < -126 ? -126 : n;                  /* keeps 2^n a normal float */
    const float fn = (float)n;
    const float r = (x - fn * 0.693359375f) - fn * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const int bits = (n + 127) << 23;
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    return x >= -87.0f ? p * two_n : 0.0f;
}

/* The 9-way softmax of outlook attention over scaled logits: term j is
 * csm_softmax_exp(logit_j, scale, max_j(scale * logit_j)), divided by the terms' sum.
 * Its backward: with p = softmax, dp the probabilities' gradient and
 * dot = sum_j p_j dp_j, the logit's gradient is scale * p_j * (dp_j - dot). */
CS_HD float csm_softmax_exp(float logit, float scale, float max) {
    return csm_exp_nonpositive(scale * logit - max);
}
CS_HD float csm_softmax_grad(float p, float dp, float dot, float scale) {
    return scale * p * (dp - dot);
}

/* Outlook attention (CDFA, spec §2.9.1): neighbour k = 0..8 of a pixel lies at
 * (row + csm_nb_dy(k), col + csm_nb_dx(k)); k = 4 is the pixel itself. */
CS_HD int csm_nb_dy(int k) { return k / 3 - 1; }
CS_HD int csm_nb_dx(int k) { return k % 3 - 1; }

/* MaxPool2d(3, stride 2, padding 1): the input index (within the plane src of h x w) of
 * the maximum of output window (oy, ox), the first in scan order, padding as -inf; the
 * backward pass sends the window's gradient there. */
CS_HD int csm_maxpool3s2_argmax(const float *src, int h, int w, int oy, int ox) {
    int arg = -1;
    for (int ky = 0; ky < 3; ky++) {
        const int iy = oy * 2 - 1 + ky;
        if (iy < 0 || iy >= h) continue;
        for (int kx = 0; kx < 3; kx++) {
            const int ix = ox * 2 - 1 + kx;
            if (ix < 0 || ix >= w) continue;
            if (arg < 0 || src[iy * w + ix] > src[arg]) arg = iy * w + ix;
        }
    }
    return arg;
}

#endif
