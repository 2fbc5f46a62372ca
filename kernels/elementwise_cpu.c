/* elementwise_cpu.c — per-element CPU operations: eval-mode BatchNorm as a per-channel
 * affine map, ReLU, sigmoid, sums, the channel/spatial attention products and channel
 * concatenation. Large arrays are split over the OpenMP threads; small ones are not
 * worth the fork. */
#include <string.h>

#include "cs_math.h"
#include "kernels.h"

#define CS_PARALLEL_MIN 32768

void cs_cpu_channel_affine(float *y, const float *x, const float *scale, const float *shift,
                           int n, int c, int hw, int relu) {
#pragma omp parallel for schedule(static) if ((size_t)n * c * hw > CS_PARALLEL_MIN)
    for (int nc = 0; nc < n * c; nc++) {
        const float a = scale[nc % c], b = shift[nc % c];
        const float *src = x + (size_t)nc * hw;
        float *dst = y + (size_t)nc * hw;
        if (relu) {
            for (int i = 0; i < hw; i++) dst[i] = csm_relu(src[i] * a + b);
        } else {
            for (int i = 0; i < hw; i++) dst[i] = src[i] * a + b;
        }
    }
}

void cs_cpu_relu(float *y, const float *x, size_t count) {
#pragma omp parallel for schedule(static) if (count > CS_PARALLEL_MIN)
    for (size_t i = 0; i < count; i++) y[i] = csm_relu(x[i]);
}

void cs_cpu_sigmoid(float *y, const float *x, size_t count) {
#pragma omp parallel for schedule(static) if (count > CS_PARALLEL_MIN)
    for (size_t i = 0; i < count; i++) y[i] = csm_sigmoid(x[i]);
}

void cs_cpu_add(float *y, const float *a, const float *b, size_t count, int relu) {
    if (relu) {
#pragma omp parallel for schedule(static) if (count > CS_PARALLEL_MIN)
        for (size_t i = 0; i < count; i++) y[i] = csm_relu(a[i] + b[i]);
    } else {
#pragma omp parallel for schedule(static) if (count > CS_PARALLEL_MIN)
        for (size_t i = 0; i < count; i++) y[i] = a[i] + b[i];
    }
}

void cs_cpu_mul_channel(float *y, const float *x, const float *s, int n, int c, int hw) {
#pragma omp parallel for schedule(static) if ((size_t)n * c * hw > CS_PARALLEL_MIN)
    for (int nc = 0; nc < n * c; nc++) {
        const float f = s[nc];
        const float *src = x + (size_t)nc * hw;
        float *dst = y + (size_t)nc * hw;
        for (int i = 0; i < hw; i++) dst[i] = src[i] * f;
    }
}

void cs_cpu_mul_spatial(float *y, const float *x, const float *m, int n, int c, int hw) {
#pragma omp parallel for schedule(static) if ((size_t)n * c * hw > CS_PARALLEL_MIN)
    for (int nc = 0; nc < n * c; nc++) {
        const float *mask = m + (size_t)(nc / c) * hw;
        const float *src = x + (size_t)nc * hw;
        float *dst = y + (size_t)nc * hw;
        for (int i = 0; i < hw; i++) dst[i] = src[i] * mask[i];
    }
}

void cs_cpu_copy_channels(float *y, int cy, int c0, const float *x, int cx, int n, int hw) {
    const size_t block = (size_t)cx * hw;
    for (int b = 0; b < n; b++)
        memcpy(y + ((size_t)b * cy + c0) * hw, x + (size_t)b * block, sizeof(float) * block);
}

/* ---- backward passes (input gradients accumulate) ------------------------------------ */

void cs_cpu_accumulate(float *dst, const float *src, size_t count) {
#pragma omp parallel for schedule(static) if (count > CS_PARALLEL_MIN)
    for (size_t i = 0; i < count; i++) dst[i] += src[i];
}

void cs_cpu_relu_backward(float *dx, const float *dy, const float *y, size_t count) {
#pragma omp parallel for schedule(static) if (count > CS_PARALLEL_MIN)
    for (size_t i = 0; i < count; i++) dx[i] += csm_relu_grad(y[i], dy[i]);
}

void cs_cpu_sigmoid_backward(float *dx, const float *dy, const float *y, size_t count) {
#pragma omp parallel for schedule(static) if (count > CS_PARALLEL_MIN)
    for (size_t i = 0; i < count; i++) dx[i] += csm_sigmoid_grad(y[i], dy[i]);
}

void cs_cpu_mul_channel_backward(float *dx, float *ds, const float *dy, const float *x,
                                 const float *s, int n, int c, int hw) {
#pragma omp parallel for schedule(static) if ((size_t)n * c * hw > CS_PARALLEL_MIN)
    for (int nc = 0; nc < n * c; nc++) {
        const float *g = dy + (size_t)nc * hw, *xi = x + (size_t)nc * hw;
        double sum = 0.0;
        for (int i = 0; i < hw; i++) sum += (double)g[i] * xi[i];
        if (ds) ds[nc] += (float)sum;
        if (dx) {
            float *d = dx + (size_t)nc * hw;
            const float f = s[nc];
            for (int i = 0; i < hw; i++) d[i] += g[i] * f;
        }
    }
}

void cs_cpu_mul_spatial_backward(float *dx, float *dm, const float *dy, const float *x,
                                 const float *m, int n, int c, int hw) {
    /* dx: per (image, channel) rows; dm: a sum over channels per pixel, split by pixel
     * stripes so that no two threads write the same dm element. */
    if (dx) {
#pragma omp parallel for schedule(static) if ((size_t)n * c * hw > CS_PARALLEL_MIN)
        for (int nc = 0; nc < n * c; nc++) {
            const float *g = dy + (size_t)nc * hw, *mask = m + (size_t)(nc / c) * hw;
            float *d = dx + (size_t)nc * hw;
            for (int i = 0; i < hw; i++) d[i] += g[i] * mask[i];
        }
    }
    if (dm) {
        const int stripe = 1024, stripes = (hw + stripe - 1) / stripe;
#pragma omp parallel for schedule(static)
        for (int t = 0; t < n * stripes; t++) {
            const int b = t / stripes, p0 = (t % stripes) * stripe;
            const int len = p0 + stripe <= hw ? stripe : hw - p0;
            float *d = dm + (size_t)b * hw + p0;
            for (int ch = 0; ch < c; ch++) {
                const float *g = dy + ((size_t)b * c + ch) * hw + p0;
                const float *xi = x + ((size_t)b * c + ch) * hw + p0;
                for (int i = 0; i < len; i++) d[i] += g[i] * xi[i];
            }
        }
    }
}

void cs_cpu_copy_channels_backward(float *dx, int cx, const float *dy, int cy, int c0, int n,
                                   int hw) {
    const size_t block = (size_t)cx * hw;
    for (int b = 0; b < n; b++)
        cs_cpu_accumulate(dx + (size_t)b * block, dy + ((size_t)b * cy + c0) * hw, block);
}

/* ---- optimiser ---------------------------------------------------------------------- */

void cs_cpu_adam_update(float *p, float *m, float *v, const float *g, int64_t n, float beta1,
                        float beta2, float step_size, float bias_correction2_sqrt, float eps) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        csm_adam(&p[i], &m[i], &v[i], g[i], beta1, beta2, step_size, bias_correction2_sqrt, eps);
}
