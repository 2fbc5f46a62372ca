/* pool_cuda.cuh — the CUDA twin of pool_cpu.c: the stem's 3x3/2 max-pool, the global
 * mean/max per channel and the per-pixel mean/max over channels, and their backward
 * passes as gathers (each input gradient is written by one thread). */
#ifndef CONDSEG_POOL_CUDA_CUH
#define CONDSEG_POOL_CUDA_CUH

#include <float.h>
#include <math.h>

extern "C" {
#include "backend.h"
}
#include "cs_math.h"
#include "cuda_exec.cuh"

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

template <class X>
struct CudaPool {
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
};

#endif
