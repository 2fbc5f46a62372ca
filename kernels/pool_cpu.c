/* pool_cpu.c — pooling and reductions on the CPU: the ResNet stem's 3x3/2 max-pool, the
 * per-channel global mean/max of channel attention, and the per-pixel channel mean/max
 * of spatial attention. Means accumulate in double: the maps reach 65536 pixels. */
#include <float.h>

#include "cs_math.h"
#include "kernels.h"

void cs_cpu_maxpool3s2(float *y, const float *x, int n, int c, int h, int w, int ho, int wo) {
#pragma omp parallel for schedule(static)
    for (int nc = 0; nc < n * c; nc++) {
        const float *src = x + (size_t)nc * h * w;
        float *dst = y + (size_t)nc * ho * wo;
        for (int oy = 0; oy < ho; oy++)
            for (int ox = 0; ox < wo; ox++)
                dst[(size_t)oy * wo + ox] = src[csm_maxpool3s2_argmax(src, h, w, oy, ox)];
    }
}

void cs_cpu_global_avgpool(float *y, const float *x, int n, int c, int hw) {
#pragma omp parallel for schedule(static)
    for (int nc = 0; nc < n * c; nc++) {
        const float *src = x + (size_t)nc * hw;
        double sum = 0.0;
        for (int i = 0; i < hw; i++) sum += src[i];
        y[nc] = (float)(sum / hw);
    }
}

void cs_cpu_global_maxpool(float *y, const float *x, int n, int c, int hw) {
#pragma omp parallel for schedule(static)
    for (int nc = 0; nc < n * c; nc++) {
        const float *src = x + (size_t)nc * hw;
        float m = src[0];
        for (int i = 1; i < hw; i++) m = src[i] > m ? src[i] : m;
        y[nc] = m;
    }
}

/* Pixels per work item of the channel reductions: a stripe of every channel. */
#define CS_STRIPE 1024

void cs_cpu_channel_mean(float *y, const float *x, int n, int c, int hw) {
    const int stripes = (hw + CS_STRIPE - 1) / CS_STRIPE;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < n * stripes; t++) {
        const int b = t / stripes, p0 = (t % stripes) * CS_STRIPE;
        const int len = p0 + CS_STRIPE <= hw ? CS_STRIPE : hw - p0;
        double acc[CS_STRIPE];
        for (int i = 0; i < len; i++) acc[i] = 0.0;
        for (int ch = 0; ch < c; ch++) {
            const float *src = x + ((size_t)b * c + ch) * hw + p0;
            for (int i = 0; i < len; i++) acc[i] += src[i];
        }
        float *dst = y + (size_t)b * hw + p0;
        for (int i = 0; i < len; i++) dst[i] = (float)(acc[i] / c);
    }
}

void cs_cpu_channel_max(float *y, const float *x, int n, int c, int hw) {
    const int stripes = (hw + CS_STRIPE - 1) / CS_STRIPE;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < n * stripes; t++) {
        const int b = t / stripes, p0 = (t % stripes) * CS_STRIPE;
        const int len = p0 + CS_STRIPE <= hw ? CS_STRIPE : hw - p0;
        float *dst = y + (size_t)b * hw + p0;
        const float *first = x + (size_t)b * c * hw + p0;
        for (int i = 0; i < len; i++) dst[i] = first[i];
        for (int ch = 1; ch < c; ch++) {
            const float *src = x + ((size_t)b * c + ch) * hw + p0;
            for (int i = 0; i < len; i++) dst[i] = src[i] > dst[i] ? src[i] : dst[i];
        }
    }
}

/* ---- backward passes (input gradients accumulate) ------------------------------------ */

void cs_cpu_maxpool3s2_backward(float *dx, const float *dy, const float *x, int n, int c, int h,
                                int w, int ho, int wo) {
#pragma omp parallel for schedule(static)
    for (int nc = 0; nc < n * c; nc++) {
        const float *src = x + (size_t)nc * h * w;
        const float *g = dy + (size_t)nc * ho * wo;
        float *d = dx + (size_t)nc * h * w;
        for (int oy = 0; oy < ho; oy++)
            for (int ox = 0; ox < wo; ox++)
                d[csm_maxpool3s2_argmax(src, h, w, oy, ox)] += g[(size_t)oy * wo + ox];
    }
}

void cs_cpu_global_avgpool_backward(float *dx, const float *dy, int n, int c, int hw) {
#pragma omp parallel for schedule(static)
    for (int nc = 0; nc < n * c; nc++) {
        const float g = dy[nc] / (float)hw;
        float *d = dx + (size_t)nc * hw;
        for (int i = 0; i < hw; i++) d[i] += g;
    }
}

void cs_cpu_global_maxpool_backward(float *dx, const float *dy, const float *x, int n, int c,
                                    int hw) {
#pragma omp parallel for schedule(static)
    for (int nc = 0; nc < n * c; nc++) {
        const float *src = x + (size_t)nc * hw;
        int arg = 0;
        for (int i = 1; i < hw; i++)
            if (src[i] > src[arg]) arg = i;
        dx[(size_t)nc * hw + arg] += dy[nc];
    }
}

void cs_cpu_channel_mean_backward(float *dx, const float *dy, int n, int c, int hw) {
#pragma omp parallel for schedule(static)
    for (int nc = 0; nc < n * c; nc++) {
        const float *g = dy + (size_t)(nc / c) * hw;
        float *d = dx + (size_t)nc * hw;
        const float inv = 1.0f / (float)c;
        for (int i = 0; i < hw; i++) d[i] += g[i] * inv;
    }
}

void cs_cpu_channel_max_backward(float *dx, const float *dy, const float *x, int n, int c,
                                 int hw) {
    const int stripes = (hw + CS_STRIPE - 1) / CS_STRIPE;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < n * stripes; t++) {
        const int b = t / stripes, p0 = (t % stripes) * CS_STRIPE;
        const int len = p0 + CS_STRIPE <= hw ? CS_STRIPE : hw - p0;
        int arg[CS_STRIPE];
        float best[CS_STRIPE];
        const float *first = x + (size_t)b * c * hw + p0;
        for (int i = 0; i < len; i++) arg[i] = 0, best[i] = first[i];
        for (int ch = 1; ch < c; ch++) {
            const float *src = x + ((size_t)b * c + ch) * hw + p0;
            for (int i = 0; i < len; i++)
                if (src[i] > best[i]) best[i] = src[i], arg[i] = ch;
        }
        const float *g = dy + (size_t)b * hw + p0;
        for (int i = 0; i < len; i++) dx[((size_t)b * c + arg[i]) * hw + p0 + i] += g[i];
    }
}
