/* batchnorm_cpu.c — training-mode BatchNorm2d on the CPU: batch statistics and the
 * backward pass through them (spec §1.5, §11). The normalisation itself is the
 * per-channel affine map of elementwise_cpu.c. Channel sums accumulate in double. */
#include <math.h>

#include "cs_math.h"
#include "kernels.h"

void cs_cpu_batchnorm_stats(float *mean, float *var, const float *x, int n, int c, int hw) {
    const double count = (double)n * hw;
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < c; ch++) {
        double sum = 0.0;
        for (int b = 0; b < n; b++) {
            const float *p = x + ((size_t)b * c + ch) * hw;
            for (int i = 0; i < hw; i++) sum += p[i];
        }
        const double mu = sum / count;
        double sq = 0.0;
        for (int b = 0; b < n; b++) {
            const float *p = x + ((size_t)b * c + ch) * hw;
            for (int i = 0; i < hw; i++) sq += ((double)p[i] - mu) * ((double)p[i] - mu);
        }
        mean[ch] = (float)mu;
        var[ch] = (float)(sq / count);
    }
}

void cs_cpu_batchnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                               const float *x, const float *y, const float *gamma,
                               const float *mean, const float *var, int n, int c, int hw) {
    const double count = (double)n * hw;
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < c; ch++) {
        const double invstd = csm_bn_invstd(var[ch]);
        const double mu = mean[ch];
        double sum_g = 0.0, sum_gx = 0.0;
        for (int b = 0; b < n; b++) {
            const size_t off = ((size_t)b * c + ch) * hw;
            for (int i = 0; i < hw; i++) {
                /* With a fused ReLU, gradient flows only where the output is positive. */
                const double g = csm_bn_out_grad(dy[off + i], y, off + i);
                sum_g += g;
                sum_gx += g * csm_bn_xhat(x[off + i], mu, invstd);
            }
        }
        dgamma[ch] += (float)sum_gx;
        dbeta[ch] += (float)sum_g;
        if (!dx) continue;
        const double mean_g = sum_g / count, mean_gx = sum_gx / count;
        for (int b = 0; b < n; b++) {
            const size_t off = ((size_t)b * c + ch) * hw;
            for (int i = 0; i < hw; i++) {
                const double g = csm_bn_out_grad(dy[off + i], y, off + i);
                const double xhat = csm_bn_xhat(x[off + i], mu, invstd);
                dx[off + i] += (float)csm_bn_input_grad(g, xhat, gamma[ch], invstd, mean_g, mean_gx);
            }
        }
    }
}

void cs_cpu_batchnorm_eval_affine(float *scale, float *shift, const float *gamma,
                                  const float *beta, const float *mean, const float *var, int c) {
    for (int i = 0; i < c; i++) csm_bn_fold(gamma[i], beta[i], mean[i], var[i], &scale[i], &shift[i]);
}

void cs_cpu_batchnorm_train_affine(float *scale, float *shift, float *running_mean,
                                   float *running_var, const float *gamma, const float *beta,
                                   const float *batch_mean, const float *batch_var, int c,
                                   float unbias) {
    for (int i = 0; i < c; i++)
        csm_bn_train(gamma[i], beta[i], batch_mean[i], batch_var[i], unbias, &scale[i],
                     &shift[i], &running_mean[i], &running_var[i]);
}
