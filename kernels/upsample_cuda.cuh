/* upsample_cuda.cuh — the CUDA twin of upsample_cpu.c: bilinear resampling with
 * align_corners=True, and its backward pass as a gather over the output pixels whose
 * taps include each input pixel. */
#ifndef CONDSEG_UPSAMPLE_CUDA_CUH
#define CONDSEG_UPSAMPLE_CUDA_CUH

#include <float.h>
#include <math.h>

extern "C" {
#include "backend.h"
}
#include "cs_math.h"
#include "cuda_exec.cuh"

struct UpsampleF {
    float *y;
    const float *x;
    int h, w, ho, wo;
    float scale_y, scale_x;
    CSK_HD void operator()(int i) const {
        const int out_plane = ho * wo, nc = i / out_plane, q = i - nc * out_plane;
        const int oy = q / wo, ox = q - oy * wo;
        int y0, y1, x0, x1;
        float ly, lx;
        csm_bilinear_ac_tap(oy, h, scale_y, &y0, &y1, &ly);
        csm_bilinear_ac_tap(ox, w, scale_x, &x0, &x1, &lx);
        const float *src = x + (size_t)nc * h * w;
        const float r0 = csm_lerp(src[y0 * w + x0], src[y0 * w + x1], lx);
        const float r1 = csm_lerp(src[y1 * w + x0], src[y1 * w + x1], lx);
        y[i] = csm_lerp(r0, r1, ly);
    }
};

/* The destination indices d in [0, m) whose taps (csm_bilinear_ac_tap) may include
 * source index s: the taps of d lie at floor(scale * d) and one above, so d is within
 * (s - 1) / scale .. (s + 1) / scale; one index of margin on each side absorbs the
 * rounding of that division. The caller checks each d's actual taps. */
static inline CSK_HD void csk_upsample_window(int s, int m, float scale, int *lo, int *hi) {
    if (!(scale > 0.0f)) {
        *lo = 0, *hi = m - 1;
        return;
    }
    const int a = (int)floorf((float)(s - 1) / scale) - 1;
    const int b = (int)ceilf((float)(s + 1) / scale) + 1;
    *lo = a < 0 ? 0 : a;
    *hi = b > m - 1 ? m - 1 : b;
}

/* The adjoint of UpsampleF as a gather: input pixel (iy, ix) sums, over the output pixels
 * whose taps include it, the output gradient times the weight of that tap, adding in the
 * order the CPU's scatter does (output scan order, taps r0x0 r0x1 r1x0 r1x1). */
struct UpsampleBackwardF {
    float *dx;
    const float *dy;
    int h, w, ho, wo;
    float scale_y, scale_x;
    CSK_HD void operator()(int i) const {
        const int plane = h * w, nc = i / plane, q = i - nc * plane;
        const int iy = q / w, ix = q - iy * w;
        const float *g = dy + (size_t)nc * ho * wo;
        int oy_lo, oy_hi, ox_lo, ox_hi;
        csk_upsample_window(iy, ho, scale_y, &oy_lo, &oy_hi);
        csk_upsample_window(ix, wo, scale_x, &ox_lo, &ox_hi);
        float d = dx[i];
        for (int oy = oy_lo; oy <= oy_hi; oy++) {
            int y0, y1;
            float ly;
            csm_bilinear_ac_tap(oy, h, scale_y, &y0, &y1, &ly);
            if (y0 != iy && y1 != iy) continue;
            for (int ox = ox_lo; ox <= ox_hi; ox++) {
                int x0, x1;
                float lx;
                csm_bilinear_ac_tap(ox, w, scale_x, &x0, &x1, &lx);
                if (x0 != ix && x1 != ix) continue;
                const float v = g[oy * wo + ox];
                float wt[4];
                csm_bilinear_weights(ly, lx, wt);
                if (y0 == iy && x0 == ix) d += wt[0] * v;
                if (y0 == iy && x1 == ix) d += wt[1] * v;
                if (y1 == iy && x0 == ix) d += wt[2] * v;
                if (y1 == iy && x1 == ix) d += wt[3] * v;
            }
        }
        dx[i] = d;
    }
};

template <class X>
struct CudaUpsample {
    static void upsample_bilinear(float *y, const float *x, int n, int c, int h, int w, int ho,
                                  int wo) {
        UpsampleF f = {y, x, h, w, ho, wo, csm_bilinear_ac_scale(h, ho),
                       csm_bilinear_ac_scale(w, wo)};
        X::for_each(csk_int_count((size_t)n * c * ho * wo, "upsample"), f);
    }

    static void upsample_bilinear_backward(float *dx, const float *dy, int n, int c, int h, int w,
                                           int ho, int wo) {
        UpsampleBackwardF f = {dx, dy, h, w, ho, wo, csm_bilinear_ac_scale(h, ho),
                               csm_bilinear_ac_scale(w, wo)};
        X::for_each(csk_int_count((size_t)n * c * h * w, "upsample"), f);
    }
};

#endif
