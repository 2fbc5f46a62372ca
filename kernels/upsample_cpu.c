/* upsample_cpu.c — bilinear resampling with align_corners=True (every nn.Upsample of the
 * network), on the CPU. */
#include "cs_math.h"
#include "kernels.h"

void cs_cpu_upsample_bilinear(float *y, const float *x, int n, int c, int h, int w, int ho,
                              int wo) {
    const float sy = csm_bilinear_ac_scale(h, ho), sx = csm_bilinear_ac_scale(w, wo);
#pragma omp parallel for schedule(static)
    for (int nc = 0; nc < n * c; nc++) {
        const float *src = x + (size_t)nc * h * w;
        float *dst = y + (size_t)nc * ho * wo;
        for (int oy = 0; oy < ho; oy++) {
            int y0, y1;
            float ly;
            csm_bilinear_ac_tap(oy, h, sy, &y0, &y1, &ly);
            const float *r0 = src + (size_t)y0 * w, *r1 = src + (size_t)y1 * w;
            float *out = dst + (size_t)oy * wo;
            for (int ox = 0; ox < wo; ox++) {
                int x0, x1;
                float lx;
                csm_bilinear_ac_tap(ox, w, sx, &x0, &x1, &lx);
                out[ox] = (1.0f - ly) * ((1.0f - lx) * r0[x0] + lx * r0[x1]) +
                          ly * ((1.0f - lx) * r1[x0] + lx * r1[x1]);
            }
        }
    }
}
