/* elementwise_cuda.cuh — the CUDA twin of elementwise_cpu.c: eval-mode BatchNorm as a
 * per-channel affine map, ReLU, sigmoid, sums, the channel/spatial attention products,
 * channel concatenation, their backward passes and Adam's update; one thread per element
 * (a row reduction for the channel products' scale gradient). */
#ifndef CONDSEG_ELEMENTWISE_CUDA_CUH
#define CONDSEG_ELEMENTWISE_CUDA_CUH

#include <float.h>
#include <math.h>

extern "C" {
#include "backend.h"
}
#include "cs_math.h"
#include "cuda_exec.cuh"

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

template <class X>
struct CudaElementwise {
    static void channel_affine(float *y, const float *x, const float *scale, const float *shift,
                               int n, int c, int hw, int relu) {
        ChannelAffineF f = {y, x, scale, shift, csk_make_div(hw), csk_make_div(c), relu};
        X::for_each(csk_int_count((size_t)n * c * hw, "channel_affine"), f);
    }

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
};

#endif
