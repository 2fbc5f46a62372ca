/* batchnorm_cuda.cuh — the CUDA twin of batchnorm_cpu.c: training-mode BatchNorm's batch
 * statistics (two passes in double: the mean, then the squared deviations from it) and
 * the backward pass through them; the eval and train affine maps per channel. Channel
 * sums are row reductions split over several blocks when channels are few. */
#ifndef CONDSEG_BATCHNORM_CUDA_CUH
#define CONDSEG_BATCHNORM_CUDA_CUH

#include <float.h>
#include <math.h>

extern "C" {
#include "backend.h"
}
#include "cs_math.h"
#include "cuda_exec.cuh"

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
        rows[ch] = csm_bn_invstd(var[ch]);
    }
};

struct BnGradTerm {
    const float *dy, *x, *y, *mean;
    const double *rows;
    int c, hw;
    csk_div by_hw;
    CSK_HD csk_sum2 operator()(int ch, int j) const {
        const int b = csk_quot(by_hw, j), p = j - b * hw;
        const size_t k = ((size_t)b * c + ch) * hw + p;
        const double g = csm_bn_out_grad(dy[k], y, k);
        const double xhat = csm_bn_xhat(x[k], (double)mean[ch], rows[ch]);
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
        const double g = csm_bn_out_grad(dy[i], y, (size_t)i);
        const double xhat = csm_bn_xhat(x[i], (double)mean[ch], invstd);
        dx[i] += (float)csm_bn_input_grad(g, xhat, gamma[ch], invstd, rows[c + ch],
                                          rows[2 * c + ch]);
    }
};

template <class X>
struct CudaBatchNorm {
    static void batchnorm_eval_affine(float *scale, float *shift, const float *gamma,
                                      const float *beta, const float *mean, const float *var,
                                      int c) {
        BnEvalAffineF f = {scale, shift, gamma, beta, mean, var};
        X::for_each(c, f);
    }

    static void batchnorm_stats(float *mean, float *var, const float *x, int n, int c, int hw) {
        const int len = csk_int_count((size_t)n * hw, "batchnorm");
        const double count = (double)n * hw;
        double *mean_d = (double *)X::scratch(CSK_SCRATCH_ROWS, sizeof(double) * (size_t)c);
        if (!mean_d) return; /* out of memory: noted, the run ends with the error */
        ChannelSumTerm sum = {x, c, hw, csk_make_div(hw)};
        MeanToRowsFin to_rows = {mean_d, count};
        csk_reduce_rows<X, SumReducer>(c, len, sum, to_rows);
        ChannelSqDevTerm sq = {x, mean_d, c, hw, csk_make_div(hw)};
        BnStatsFin fin = {mean, var, mean_d, count};
        csk_reduce_rows<X, SumReducer>(c, len, sq, fin);
    }

    static void batchnorm_train_affine(float *scale, float *shift, float *running_mean,
                                       float *running_var, const float *gamma,
                                       const float *beta, const float *batch_mean,
                                       const float *batch_var, int c, float unbias) {
        BnTrainAffineF f = {scale, shift, running_mean, running_var, gamma, beta, batch_mean,
                            batch_var, unbias};
        X::for_each(c, f);
    }

    static void batchnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                                   const float *x, const float *y, const float *gamma,
                                   const float *mean, const float *var, int n, int c, int hw) {
        const int len = csk_int_count((size_t)n * hw, "batchnorm");
        double *rows = (double *)X::scratch(CSK_SCRATCH_ROWS, sizeof(double) * 3 * (size_t)c);
        if (!rows) return; /* out of memory: noted, the run ends with the error */
        BnInvStdF invstd = {rows, var};
        X::for_each(c, invstd);
        BnGradTerm term = {dy, x, y, mean, rows, c, hw, csk_make_div(hw)};
        BnGradFin fin = {dgamma, dbeta, rows, c, (double)n * hw};
        csk_reduce_rows<X, SumReducer>(c, len, term, fin);
        if (!dx) return;
        BnDxF f = {dx, dy, x, y, gamma, mean, rows, c, csk_make_div(hw), csk_make_div(c)};
        X::for_each(csk_int_count((size_t)n * c * hw, "batchnorm"), f);
    }
};

#endif
