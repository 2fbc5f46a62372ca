/* resize.c — cv2.resize(..., INTER_LINEAR) reproduced exactly: the 8-bit fixed-point path
 * (bit-exact with OpenCV 4.x) and the float32 path (same coordinates, float weights).
 *
 * The algorithm is spelled out in design/condseg.md §1.2. Both paths are separable: each
 * needed source row is first interpolated horizontally into a row buffer (two are kept,
 * as consecutive destination rows mostly share them), then two such rows are blended.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "condseg.h"

/* OpenCV's INTER_RESIZE_COEF_BITS: weights are 11-bit fixed point. */
#define COEF_BITS 11
#define COEF_SCALE (1 << COEF_BITS)

/* Where destination index d samples the source: taps src0/src1 with weight 1-frac, frac. */
typedef struct {
    int src0, src1;
    float frac;
} linear_tap;

/* One axis of INTER_LINEAR. The horizontal axis resets frac to 0 where the sample falls
 * outside the source; the vertical axis only clamps the row indices (OpenCV does both). */
static void linear_taps(int src_len, int dst_len, gboolean reset_frac_at_borders,
                        linear_tap *taps) {
    double scale = 1.0 / ((double)dst_len / src_len);
    for (int d = 0; d < dst_len; d++) {
        float f = (float)((d + 0.5) * scale - 0.5);
        int s = (int)floorf(f);
        f -= (float)s;
        if (reset_frac_at_borders) {
            if (s < 0) s = 0, f = 0;
            if (s >= src_len - 1) s = src_len - 1, f = 0;
            taps[d].src0 = s;
            taps[d].src1 = s + 1 < src_len ? s + 1 : src_len - 1;
        } else {
            taps[d].src0 = CLAMP(s, 0, src_len - 1);
            taps[d].src1 = CLAMP(s + 1, 0, src_len - 1);
        }
        taps[d].frac = f;
    }
}

/* OpenCV's saturate_cast<short>(w * 2048): round half to even (the default FP mode). */
static void fixed_point_weights(const linear_tap *tap, int *w0, int *w1) {
    *w0 = (int)lrintf((1.f - tap->frac) * (float)COEF_SCALE);
    *w1 = (int)lrintf(tap->frac * (float)COEF_SCALE);
}

/* The two horizontally interpolated rows kept between destination rows: which buffer
 * holds source row `row` (-1: none), and which one may be overwritten without losing
 * the row `keep` that the current destination row also needs. */
static int cached_row_slot(const int row_source[2], int row) {
    return row_source[0] == row ? 0 : row_source[1] == row ? 1 : -1;
}

static int free_row_slot(const int row_source[2], int keep) {
    return row_source[0] == keep ? 1 : 0;
}

// ---------------------------------------------------------------------------------
// uint8

typedef struct {
    int x0, x1;   /* element offsets of the two taps (already times channels) */
    int w0, w1;
} u8_column;

static void u8_horizontal(const uint8_t *src_row, const u8_column *columns, int dst_w,
                          int channels, int32_t *out) {
    for (int x = 0; x < dst_w; x++) {
        const u8_column *col = &columns[x];
        for (int c = 0; c < channels; c++)
            out[x * channels + c] = col->w0 * src_row[col->x0 + c] + col->w1 * src_row[col->x1 + c];
    }
}

void cs_resize_linear_u8(const uint8_t *src, int src_w, int src_h, uint8_t *dst, int dst_w,
                         int dst_h, int channels) {
    g_return_if_fail(src && dst && src_w > 0 && src_h > 0 && dst_w > 0 && dst_h > 0 &&
                     channels > 0);
    linear_tap *x_taps = g_new(linear_tap, dst_w);
    linear_tap *y_taps = g_new(linear_tap, dst_h);
    linear_taps(src_w, dst_w, TRUE, x_taps);
    linear_taps(src_h, dst_h, FALSE, y_taps);

    u8_column *columns = g_new(u8_column, dst_w);
    for (int x = 0; x < dst_w; x++) {
        columns[x].x0 = x_taps[x].src0 * channels;
        columns[x].x1 = x_taps[x].src1 * channels;
        fixed_point_weights(&x_taps[x], &columns[x].w0, &columns[x].w1);
    }

    size_t row_len = (size_t)dst_w * (size_t)channels;
    size_t src_stride = (size_t)src_w * (size_t)channels;
    int32_t *rows[2] = {g_new(int32_t, row_len), g_new(int32_t, row_len)};
    int row_source[2] = {-1, -1};   /* which source row each buffer holds */

    for (int y = 0; y < dst_h; y++) {
        int wanted[2] = {y_taps[y].src0, y_taps[y].src1};
        const int32_t *taps[2];
        for (int k = 0; k < 2; k++) {
            int slot = cached_row_slot(row_source, wanted[k]);
            if (slot < 0) {
                slot = free_row_slot(row_source, wanted[1 - k]);
                u8_horizontal(src + (size_t)wanted[k] * src_stride, columns, dst_w, channels,
                              rows[slot]);
                row_source[slot] = wanted[k];
            }
            taps[k] = rows[slot];
        }
        int w0, w1;
        fixed_point_weights(&y_taps[y], &w0, &w1);
        uint8_t *out = dst + (size_t)y * row_len;
        for (size_t i = 0; i < row_len; i++) {
            /* OpenCV's 8-bit vertical pass: pre-shift by 4, multiply-high by 16 bits,
             * round by 2 bits (arithmetic shifts, as in its SIMD and scalar code) */
            int v = (((w0 * (taps[0][i] >> 4)) >> 16) + ((w1 * (taps[1][i] >> 4)) >> 16) + 2) >> 2;
            out[i] = (uint8_t)CLAMP(v, 0, 255);
        }
    }
    g_free(rows[0]);
    g_free(rows[1]);
    g_free(columns);
    g_free(x_taps);
    g_free(y_taps);
}

// ---------------------------------------------------------------------------------
// float32

static void f32_horizontal(const float *src_row, const linear_tap *x_taps, int dst_w,
                           float *out) {
    for (int x = 0; x < dst_w; x++) {
        const linear_tap *t = &x_taps[x];
        out[x] = src_row[t->src0] * (1.f - t->frac) + src_row[t->src1] * t->frac;
    }
}

void cs_resize_linear_f32(const float *src, int src_w, int src_h, float *dst, int dst_w,
                          int dst_h) {
    g_return_if_fail(src && dst && src_w > 0 && src_h > 0 && dst_w > 0 && dst_h > 0);
    linear_tap *x_taps = g_new(linear_tap, dst_w);
    linear_tap *y_taps = g_new(linear_tap, dst_h);
    linear_taps(src_w, dst_w, TRUE, x_taps);
    linear_taps(src_h, dst_h, FALSE, y_taps);

    float *rows[2] = {g_new(float, dst_w), g_new(float, dst_w)};
    int row_source[2] = {-1, -1};
    for (int y = 0; y < dst_h; y++) {
        int wanted[2] = {y_taps[y].src0, y_taps[y].src1};
        const float *taps[2];
        for (int k = 0; k < 2; k++) {
            int slot = cached_row_slot(row_source, wanted[k]);
            if (slot < 0) {
                slot = free_row_slot(row_source, wanted[1 - k]);
                f32_horizontal(src + (size_t)wanted[k] * (size_t)src_w, x_taps, dst_w, rows[slot]);
                row_source[slot] = wanted[k];
            }
            taps[k] = rows[slot];
        }
        float b0 = 1.f - y_taps[y].frac, b1 = y_taps[y].frac;
        float *out = dst + (size_t)y * (size_t)dst_w;
        for (int x = 0; x < dst_w; x++) out[x] = taps[0][x] * b0 + taps[1][x] * b1;
    }
    g_free(rows[0]);
    g_free(rows[1]);
    g_free(x_taps);
    g_free(y_taps);
}
