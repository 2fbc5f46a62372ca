/* layout_cpu.c — the operations that sit between convolutions, for maps in NHWC order
 * (a oneDNN convolution's output is kept so, model/engine/ops.c): the decoders' bilinear
 * upsampling and channel concatenation, the attention blocks' poolings, channel
 * reductions and products (inference), the per-channel affine map of BatchNorm (both). Same arithmetic in the same order as their NCHW forms
 * (upsample_cpu.c, elementwise_cpu.c, pool_cpu.c), so the results are the same; each
 * pixel's channels are contiguous, which vectorises over channels. */
#include <string.h>

#include "cs_math.h"
#include "kernels.h"

CS_VECTOR_CLONES
static void blend_pixel(float *restrict out, const float *restrict a, const float *restrict b,
                        const float *restrict c, const float *restrict d, float lx, float ly,
                        int n) {
    for (int i = 0; i < n; i++) {
        const float top = (1.0f - lx) * a[i] + lx * b[i];
        const float bottom = (1.0f - lx) * c[i] + lx * d[i];
        out[i] = (1.0f - ly) * top + ly * bottom;
    }
}

void cs_cpu_upsample_bilinear_nhwc(float *y, const float *x, int n, int c, int h, int w, int ho,
                                   int wo) {
    const float sy = csm_bilinear_ac_scale(h, ho), sx = csm_bilinear_ac_scale(w, wo);
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < n; b++) {
        for (int oy = 0; oy < ho; oy++) {
            int y0, y1;
            float ly;
            csm_bilinear_ac_tap(oy, h, sy, &y0, &y1, &ly);
            const float *row0 = x + ((size_t)b * h + y0) * w * c;
            const float *row1 = x + ((size_t)b * h + y1) * w * c;
            float *out = y + ((size_t)b * ho + oy) * wo * c;
            for (int ox = 0; ox < wo; ox++) {
                int x0, x1;
                float lx;
                csm_bilinear_ac_tap(ox, w, sx, &x0, &x1, &lx);
                blend_pixel(out + (size_t)ox * c, row0 + (size_t)x0 * c, row0 + (size_t)x1 * c,
                            row1 + (size_t)x0 * c, row1 + (size_t)x1 * c, lx, ly, c);
            }
        }
    }
}

void cs_cpu_channel_affine_nhwc(float *y, const float *x, const float *scale, const float *shift,
                                int n, int c, int hw, int relu) {
    const size_t pixels = (size_t)n * hw;
#pragma omp parallel for schedule(static)
    for (size_t p = 0; p < pixels; p++) {
        const float *src = x + p * c;
        float *dst = y + p * c;
        if (relu) {
            for (int i = 0; i < c; i++) dst[i] = csm_relu(src[i] * scale[i] + shift[i]);
        } else {
            for (int i = 0; i < c; i++) dst[i] = src[i] * scale[i] + shift[i];
        }
    }
}

void cs_cpu_copy_channels_nhwc(float *y, int cy, int c0, const float *x, int cx, int n, int hw) {
    const size_t pixels = (size_t)n * hw;
#pragma omp parallel for schedule(static)
    for (size_t p = 0; p < pixels; p++)
        memcpy(y + p * cy + c0, x + p * cx, sizeof(float) * cx);
}

/* ---- the attention blocks' reductions and products -------------------------------------- */

/* Channels per work item of the global poolings: one cache line of each pixel's row. */
#define CS_CHANNEL_BLOCK 16

void cs_cpu_global_avgpool_nhwc(float *y, const float *x, int n, int c, int hw) {
    const int blocks = (c + CS_CHANNEL_BLOCK - 1) / CS_CHANNEL_BLOCK;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < n * blocks; t++) {
        const int b = t / blocks, c0 = (t % blocks) * CS_CHANNEL_BLOCK;
        const int len = c0 + CS_CHANNEL_BLOCK <= c ? CS_CHANNEL_BLOCK : c - c0;
        double acc[CS_CHANNEL_BLOCK] = {0};   /* in pixel order, as the NCHW form sums */
        const float *src = x + (size_t)b * hw * c + c0;
        for (int p = 0; p < hw; p++, src += c)
            for (int i = 0; i < len; i++) acc[i] += src[i];
        for (int i = 0; i < len; i++) y[(size_t)b * c + c0 + i] = (float)(acc[i] / hw);
    }
}

void cs_cpu_global_maxpool_nhwc(float *y, const float *x, int n, int c, int hw) {
    const int blocks = (c + CS_CHANNEL_BLOCK - 1) / CS_CHANNEL_BLOCK;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < n * blocks; t++) {
        const int b = t / blocks, c0 = (t % blocks) * CS_CHANNEL_BLOCK;
        const int len = c0 + CS_CHANNEL_BLOCK <= c ? CS_CHANNEL_BLOCK : c - c0;
        const float *src = x + (size_t)b * hw * c + c0;
        float m[CS_CHANNEL_BLOCK];
        for (int i = 0; i < len; i++) m[i] = src[i];
        for (int p = 1; p < hw; p++)
            for (int i = 0; i < len; i++) m[i] = src[(size_t)p * c + i] > m[i] ? src[(size_t)p * c + i] : m[i];
        for (int i = 0; i < len; i++) y[(size_t)b * c + c0 + i] = m[i];
    }
}

/* Per pixel over its channels (contiguous here): the mean (summed in channel order, in
 * double, as the NCHW form) and the maximum; y is n x 1 x hw, the same in both layouts. */
void cs_cpu_channel_mean_nhwc(float *y, const float *x, int n, int c, int hw) {
#pragma omp parallel for schedule(static)
    for (size_t p = 0; p < (size_t)n * hw; p++) {
        const float *src = x + p * c;
        double acc = 0.0;
        for (int i = 0; i < c; i++) acc += src[i];
        y[p] = (float)(acc / c);
    }
}

void cs_cpu_channel_max_nhwc(float *y, const float *x, int n, int c, int hw) {
#pragma omp parallel for schedule(static)
    for (size_t p = 0; p < (size_t)n * hw; p++) {
        const float *src = x + p * c;
        float m = src[0];
        for (int i = 1; i < c; i++) m = src[i] > m ? src[i] : m;
        y[p] = m;
    }
}

/* y = x * s[n, c] and y = x * m[n, pixel], on NHWC maps. */
void cs_cpu_mul_channel_nhwc(float *y, const float *x, const float *s, int n, int c, int hw) {
#pragma omp parallel for schedule(static)
    for (size_t p = 0; p < (size_t)n * hw; p++) {
        const float *f = s + (p / hw) * c;
        for (int i = 0; i < c; i++) y[p * c + i] = x[p * c + i] * f[i];
    }
}

void cs_cpu_mul_spatial_nhwc(float *y, const float *x, const float *m, int n, int c, int hw) {
#pragma omp parallel for schedule(static)
    for (size_t p = 0; p < (size_t)n * hw; p++)
        for (int i = 0; i < c; i++) y[p * c + i] = x[p * c + i] * m[p];
}

/* ---- their backward passes (training on NHWC maps); every gradient accumulates ---------- */

/* Work items: (image, block of CS_CHANNEL_BLOCK channels), so that no two threads write
 * the same element and each channel sums in the NCHW forms' order. */
typedef struct {
    int b, c0, len;
} channel_block;

static int channel_blocks(int c) { return (c + CS_CHANNEL_BLOCK - 1) / CS_CHANNEL_BLOCK; }
static channel_block channel_block_of(int t, int c) {
    const int blocks = channel_blocks(c);
    channel_block k = {t / blocks, (t % blocks) * CS_CHANNEL_BLOCK, 0};
    k.len = k.c0 + CS_CHANNEL_BLOCK <= c ? CS_CHANNEL_BLOCK : c - k.c0;
    return k;
}

void cs_cpu_upsample_bilinear_backward_nhwc(float *dx, const float *dy, int n, int c, int h,
                                            int w, int ho, int wo) {
    const float sy = csm_bilinear_ac_scale(h, ho), sx = csm_bilinear_ac_scale(w, wo);
#pragma omp parallel for schedule(static)
    for (int t = 0; t < n * channel_blocks(c); t++) {
        const channel_block k = channel_block_of(t, c);
        float *d = dx + (size_t)k.b * h * w * c + k.c0;
        const float *g = dy + (size_t)k.b * ho * wo * c + k.c0;
        for (int oy = 0; oy < ho; oy++) {
            int y0, y1;
            float ly;
            csm_bilinear_ac_tap(oy, h, sy, &y0, &y1, &ly);
            for (int ox = 0; ox < wo; ox++) {
                int x0, x1;
                float lx, wt[4];
                csm_bilinear_ac_tap(ox, w, sx, &x0, &x1, &lx);
                csm_bilinear_weights(ly, lx, wt);
                const float *v = g + ((size_t)oy * wo + ox) * c;
                float *t00 = d + ((size_t)y0 * w + x0) * c, *t01 = d + ((size_t)y0 * w + x1) * c;
                float *t10 = d + ((size_t)y1 * w + x0) * c, *t11 = d + ((size_t)y1 * w + x1) * c;
                for (int i = 0; i < k.len; i++) {
                    t00[i] += wt[0] * v[i];
                    t01[i] += wt[1] * v[i];
                    t10[i] += wt[2] * v[i];
                    t11[i] += wt[3] * v[i];
                }
            }
        }
    }
}

void cs_cpu_copy_channels_backward_nhwc(float *dx, int cx, const float *dy, int cy, int c0,
                                        int n, int hw) {
#pragma omp parallel for schedule(static)
    for (size_t p = 0; p < (size_t)n * hw; p++)
        for (int i = 0; i < cx; i++) dx[p * cx + i] += dy[p * cy + c0 + i];
}

void cs_cpu_global_avgpool_backward_nhwc(float *dx, const float *dy, int n, int c, int hw) {
#pragma omp parallel for schedule(static)
    for (size_t p = 0; p < (size_t)n * hw; p++) {
        const float *g = dy + (p / hw) * c;
        for (int i = 0; i < c; i++) dx[p * c + i] += g[i] / (float)hw;
    }
}

/* The gradient goes to the first maximum, as in the NCHW form. */
void cs_cpu_global_maxpool_backward_nhwc(float *dx, const float *dy, const float *x, int n,
                                         int c, int hw) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < n * channel_blocks(c); t++) {
        const channel_block k = channel_block_of(t, c);
        const float *src = x + (size_t)k.b * hw * c + k.c0;
        int arg[CS_CHANNEL_BLOCK] = {0};
        for (int p = 1; p < hw; p++)
            for (int i = 0; i < k.len; i++)
                if (src[(size_t)p * c + i] > src[(size_t)arg[i] * c + i]) arg[i] = p;
        for (int i = 0; i < k.len; i++)
            dx[((size_t)k.b * hw + arg[i]) * c + k.c0 + i] += dy[(size_t)k.b * c + k.c0 + i];
    }
}

void cs_cpu_channel_mean_backward_nhwc(float *dx, const float *dy, int n, int c, int hw) {
    const float inv = 1.0f / (float)c;
#pragma omp parallel for schedule(static)
    for (size_t p = 0; p < (size_t)n * hw; p++)
        for (int i = 0; i < c; i++) dx[p * c + i] += dy[p] * inv;
}

void cs_cpu_channel_max_backward_nhwc(float *dx, const float *dy, const float *x, int n, int c,
                                      int hw) {
#pragma omp parallel for schedule(static)
    for (size_t p = 0; p < (size_t)n * hw; p++) {
        const float *src = x + p * c;
        int arg = 0;
        for (int i = 1; i < c; i++)
            if (src[i] > src[arg]) arg = i;
        dx[p * c + arg] += dy[p];
    }
}

void cs_cpu_mul_channel_backward_nhwc(float *dx, float *ds, const float *dy, const float *x,
                                      const float *s, int n, int c, int hw) {
    if (ds) {
#pragma omp parallel for schedule(static)
        for (int t = 0; t < n * channel_blocks(c); t++) {
            const channel_block k = channel_block_of(t, c);
            double acc[CS_CHANNEL_BLOCK] = {0};   /* in pixel order, as the NCHW form */
            const size_t base = (size_t)k.b * hw * c + k.c0;
            for (int p = 0; p < hw; p++)
                for (int i = 0; i < k.len; i++)
                    acc[i] += (double)dy[base + (size_t)p * c + i] * x[base + (size_t)p * c + i];
            for (int i = 0; i < k.len; i++) ds[(size_t)k.b * c + k.c0 + i] += (float)acc[i];
        }
    }
    if (!dx) return;
#pragma omp parallel for schedule(static)
    for (size_t p = 0; p < (size_t)n * hw; p++) {
        const float *f = s + (p / hw) * c;
        for (int i = 0; i < c; i++) dx[p * c + i] += dy[p * c + i] * f[i];
    }
}

void cs_cpu_mul_spatial_backward_nhwc(float *dx, float *dm, const float *dy, const float *x,
                                      const float *m, int n, int c, int hw) {
#pragma omp parallel for schedule(static)
    for (size_t p = 0; p < (size_t)n * hw; p++) {
        const float *g = dy + p * c, *xi = x + p * c;
        if (dx)
            for (int i = 0; i < c; i++) dx[p * c + i] += g[i] * m[p];
        if (dm) {
            float acc = dm[p];   /* onto dm in channel order, as the NCHW form */
            for (int i = 0; i < c; i++) acc += g[i] * xi[i];
            dm[p] = acc;
        }
    }
}
