/* layout_cpu.c — the operations that sit between convolutions in the decoders, for maps in
 * NHWC order (inference keeps a oneDNN convolution's output so, model/ops.c): bilinear
 * upsampling and channel concatenation. Same arithmetic as their NCHW forms (upsample_cpu.c,
 * elementwise_cpu.c), so the results are the same; each pixel's channels are contiguous,
 * which vectorises over channels. */
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

void cs_cpu_copy_channels_nhwc(float *y, int cy, int c0, const float *x, int cx, int n, int hw) {
    const size_t pixels = (size_t)n * hw;
#pragma omp parallel for schedule(static)
    for (size_t p = 0; p < pixels; p++)
        memcpy(y + p * cy + c0, x + p * cx, sizeof(float) * cx);
}
