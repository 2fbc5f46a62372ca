/* batchnorm_cpu.c — training-mode BatchNorm2d on the CPU: batch statistics and the
 * backward pass through them (spec §1.5, §11), for NCHW maps and for NHWC ones (training
 * keeps a oneDNN convolution's output in NHWC for its BatchNorm). The normalisation itself
 * is the per-channel affine map of elementwise_cpu.c / layout_cpu.c. Channel sums
 * accumulate in double. */
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

/* ---- NHWC: n*hw rows of c contiguous channels ---------------------------------------- */

/* A work item is a block of channels over all rows: each row's block is one cache line,
 * and the block's sums vectorise. */
#define CS_BN_BLOCK 16

static int bn_blocks(int c) { return (c + CS_BN_BLOCK - 1) / CS_BN_BLOCK; }
static int bn_block_width(int c, int block) {
    const int rest = c - block * CS_BN_BLOCK;
    return rest < CS_BN_BLOCK ? rest : CS_BN_BLOCK;
}

void cs_cpu_batchnorm_stats_nhwc(float *mean, float *var, const float *x, int n, int c, int hw) {
    const size_t rows = (size_t)n * hw;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < bn_blocks(c); blk++) {
        const int c0 = blk * CS_BN_BLOCK, width = bn_block_width(c, blk);
        double sum[CS_BN_BLOCK] = {0}, sq[CS_BN_BLOCK] = {0}, mu[CS_BN_BLOCK];
        for (size_t r = 0; r < rows; r++) {
            const float *p = x + r * c + c0;
            for (int j = 0; j < width; j++) sum[j] += p[j];
        }
        for (int j = 0; j < width; j++) mu[j] = sum[j] / (double)rows;
        for (size_t r = 0; r < rows; r++) {
            const float *p = x + r * c + c0;
            for (int j = 0; j < width; j++) sq[j] += ((double)p[j] - mu[j]) * ((double)p[j] - mu[j]);
        }
        for (int j = 0; j < width; j++) {
            mean[c0 + j] = (float)mu[j];
            var[c0 + j] = (float)(sq[j] / (double)rows);
        }
    }
}

void cs_cpu_batchnorm_backward_nhwc(float *dx, float *dgamma, float *dbeta, const float *dy,
                                    const float *x, const float *y, const float *gamma,
                                    const float *mean, const float *var, int n, int c, int hw) {
    const size_t rows = (size_t)n * hw;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < bn_blocks(c); blk++) {
        const int c0 = blk * CS_BN_BLOCK, width = bn_block_width(c, blk);
        double invstd[CS_BN_BLOCK], mu[CS_BN_BLOCK], sum_g[CS_BN_BLOCK] = {0},
            sum_gx[CS_BN_BLOCK] = {0};
        for (int j = 0; j < width; j++) {
            invstd[j] = csm_bn_invstd(var[c0 + j]);
            mu[j] = mean[c0 + j];
        }
        for (size_t r = 0; r < rows; r++) {
            const size_t off = r * c + c0;
            for (int j = 0; j < width; j++) {
                const double g = csm_bn_out_grad(dy[off + j], y, off + j);
                sum_g[j] += g;
                sum_gx[j] += g * csm_bn_xhat(x[off + j], mu[j], invstd[j]);
            }
        }
        for (int j = 0; j < width; j++) {
            dgamma[c0 + j] += (float)sum_gx[j];
            dbeta[c0 + j] += (float)sum_g[j];
        }
        if (!dx) continue;
        double mean_g[CS_BN_BLOCK], mean_gx[CS_BN_BLOCK];
        for (int j = 0; j < width; j++) {
            mean_g[j] = sum_g[j] / (double)rows;
            mean_gx[j] = sum_gx[j] / (double)rows;
        }
        for (size_t r = 0; r < rows; r++) {
            const size_t off = r * c + c0;
            for (int j = 0; j < width; j++) {
                const double g = csm_bn_out_grad(dy[off + j], y, off + j);
                const double xhat = csm_bn_xhat(x[off + j], mu[j], invstd[j]);
                dx[off + j] += (float)csm_bn_input_grad(g, xhat, gamma[c0 + j], invstd[j],
                                                        mean_g[j], mean_gx[j]);
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
