/* upsample_cpu.c — bilinear resampling with align_corners=True (every nn.Upsample of the
 * network), on the CPU. Separable: each source row needed is interpolated horizontally
 * once (the taps are tabulated per call), then each output row is a blend of two such
 * rows, which vectorises. */
#include <stdlib.h>

#include "cs_math.h"
#include "kernels.h"

typedef struct {
    int *i0, *i1;
    float *l1;
} taps;

/* FALSE (the failure noted) when the tables cannot be allocated. */
static int make_taps(int n, int m, taps *out) {
    taps t = {malloc(sizeof(int) * m), malloc(sizeof(int) * m), malloc(sizeof(float) * m)};
    *out = t;
    if (!t.i0 || !t.i1 || !t.l1) {
        cs_cpu_note_alloc_failure((sizeof(int) * 2 + sizeof(float)) * (size_t)m);
        return 0;
    }
    const float scale = csm_bilinear_ac_scale(n, m);
    for (int d = 0; d < m; d++) csm_bilinear_ac_tap(d, n, scale, &t.i0[d], &t.i1[d], &t.l1[d]);
    return 1;
}

static void free_taps(taps *t) {
    free(t->i0);
    free(t->i1);
    free(t->l1);
}

CS_VECTOR_CLONES
static void interpolate_row(float *restrict dst, const float *restrict src, const taps *tx,
                            int wo) {
    const int *restrict i0 = tx->i0, *restrict i1 = tx->i1;
    const float *restrict l1 = tx->l1;
    for (int x = 0; x < wo; x++) dst[x] = csm_lerp(src[i0[x]], src[i1[x]], l1[x]);
}

CS_VECTOR_CLONES
static void blend_rows(float *restrict out, const float *restrict a, const float *restrict b,
                       float lambda, int wo) {
    for (int x = 0; x < wo; x++) out[x] = csm_lerp(a[x], b[x], lambda);
}

void cs_cpu_upsample_bilinear(float *y, const float *x, int n, int c, int h, int w, int ho,
                              int wo) {
    taps tx, ty;   /* both made (no short circuit), so that both can be freed */
    if (!make_taps(w, wo, &tx) | !make_taps(h, ho, &ty)) goto out;
#pragma omp parallel
    {
        /* The horizontally interpolated source rows ty.i0 / ty.i1 of the current output
         * row; consecutive output rows mostly share them. */
        float *rows[2] = {malloc(sizeof(float) * wo), malloc(sizeof(float) * wo)};
        const int have_rows = rows[0] && rows[1];
        if (!have_rows) cs_cpu_note_alloc_failure(2 * sizeof(float) * (size_t)wo);
#pragma omp for schedule(static)
        for (int nc = 0; nc < n * c; nc++) {
            if (!have_rows) continue; /* every thread still meets the loop */
            const float *src = x + (size_t)nc * h * w;
            float *dst = y + (size_t)nc * ho * wo;
            int have[2] = {-1, -1};
            for (int oy = 0; oy < ho; oy++) {
                const int want0 = ty.i0[oy], want1 = ty.i1[oy];
                if (have[0] != want0) {
                    if (have[1] == want0) { /* moving down: the second row becomes the first */
                        float *t = rows[0];
                        rows[0] = rows[1], rows[1] = t;
                        have[0] = have[1], have[1] = -1;
                    } else {
                        interpolate_row(rows[0], src + (size_t)want0 * w, &tx, wo);
                        have[0] = want0;
                    }
                }
                if (have[1] != want1) {
                    interpolate_row(rows[1], src + (size_t)want1 * w, &tx, wo);
                    have[1] = want1;
                }
                blend_rows(dst + (size_t)oy * wo, rows[0], rows[1], ty.l1[oy], wo);
            }
        }
        free(rows[0]);
        free(rows[1]);
    }
out:
    free_taps(&tx);
    free_taps(&ty);
}

void cs_cpu_upsample_bilinear_backward(float *dx, const float *dy, int n, int c, int h, int w,
                                       int ho, int wo) {
    taps tx, ty;   /* both made (no short circuit), so that both can be freed */
    if (!make_taps(w, wo, &tx) | !make_taps(h, ho, &ty)) goto out;
    /* The adjoint of the forward pass: each output gradient goes back to its four taps
     * with the same weights. One thread per plane, so no two write the same element. */
#pragma omp parallel for schedule(static)
    for (int nc = 0; nc < n * c; nc++) {
        const float *g = dy + (size_t)nc * ho * wo;
        float *d = dx + (size_t)nc * h * w;
        for (int oy = 0; oy < ho; oy++) {
            float *r0 = d + (size_t)ty.i0[oy] * w, *r1 = d + (size_t)ty.i1[oy] * w;
            for (int ox = 0; ox < wo; ox++) {
                const float v = g[(size_t)oy * wo + ox];
                float wt[4];
                csm_bilinear_weights(ty.l1[oy], tx.l1[ox], wt);
                r0[tx.i0[ox]] += wt[0] * v;
                r0[tx.i1[ox]] += wt[1] * v;
                r1[tx.i0[ox]] += wt[2] * v;
                r1[tx.i1[ox]] += wt[3] * v;
            }
        }
    }
out:
    free_taps(&tx);
    free_taps(&ty);
}
