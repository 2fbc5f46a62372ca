/* augment.c — the spatial augmentations of spec §6.5 on 8-bit images: rotation as
 * albumentations 1.3's Rotate does it through cv2.warpAffine (bit-exact with OpenCV 4.x,
 * INTER_LINEAR and INTER_NEAREST, BORDER_REFLECT_101), flips and CoarseDropout holes.
 *
 * How OpenCV's warpAffine computes an 8-bit INTER_LINEAR pixel (imgwarp.cpp):
 *   - the forward matrix of getRotationMatrix2D is inverted in double;
 *   - per destination row y, X0 = round(((M1·y + M2)·1024)) + 16 and per column
 *     adelta[x] = round(M0·x·1024) (AB_BITS = 10); the source position in 1/32 pixel is
 *     (X0 + adelta[x]) >> 5 (INTER_BITS = 5), integer part >> 5, fraction & 31;
 *   - remap blends the 2x2 neighbourhood with 15-bit weights from a table
 *     (INTER_REMAP_COEF_BITS) and rounds: (sum + 2^14) >> 15.
 * INTER_NEAREST uses round_delta 512 and >> 10: source index = floor(s + 1/2) at 1/1024
 * pixel precision. Taps outside the image are mirrored (reflect-101).
 */
#include <limits.h>
#include <math.h>
#include <string.h>

#include "augment.h"

enum {
    AB_BITS = 10,                      /* fixed-point bits of the mapped coordinates */
    AB_SCALE = 1 << AB_BITS,
    INTER_BITS = 5,                    /* sub-pixel bits of the bilinear position */
    INTER_TAB_SIZE = 1 << INTER_BITS,
    COEF_BITS = 15,                    /* INTER_REMAP_COEF_BITS: bits of the blend weights */
};

/* OpenCV's borderInterpolate for BORDER_REFLECT_101 (also for far-away indices). */
static int reflect101(int p, int len) {
    if (len == 1) return 0;
    while ((unsigned)p >= (unsigned)len) p = p < 0 ? -p : 2 * (len - 1) - p;
    return p;
}

/* saturate_cast<int>(double) (cvRound: round half to even, as lrint in the default
 * rounding mode) and saturate_cast<short>(int). */
static int round_to_int(double v) {
    if (!(v > INT_MIN)) return INT_MIN;
    if (v >= INT_MAX) return INT_MAX;
    return (int)lrint(v);
}
static int saturate_short(int v) { return v < -32768 ? -32768 : v > 32767 ? 32767 : v; }

/* The 2x2 weights of OpenCV's fixed-point bilinear table for sub-pixel (fx, fy):
 * products of (1 - t, t) with t = f/32, exact in float, times 2^15. The entry (0, 0)
 * would be 32768, which saturate_cast<short> clips to 32767; initInterTab2D then adds the
 * missing 1 to the largest weight among a search window that (for ksize 2) starts at the
 * bottom-right weight, so OpenCV's table holds {32767, 0, 0, 1} there. */
static void bilinear_weights(int fx, int fy, int w[4]) {
    int ax = INTER_TAB_SIZE - fx, ay = INTER_TAB_SIZE - fy;
    const int k = (1 << COEF_BITS) / (INTER_TAB_SIZE * INTER_TAB_SIZE);   /* 32 */
    w[0] = ay * ax * k;
    w[1] = ay * fx * k;
    w[2] = fy * ax * k;
    w[3] = fy * fx * k;
    if (fx == 0 && fy == 0) {
        w[0] = 32767;
        w[3] = 1;
    }
}

void cs_aug_rotate(const cs_image *src, double degrees, int nearest, cs_image *dst) {
    g_return_if_fail(src && dst && src->data && dst->data);
    g_return_if_fail(dst->width == src->width && dst->height == src->height &&
                     dst->channels == src->channels && src->data != dst->data);
    const int w = src->width, h = src->height, cn = src->channels;
    if (w == 0 || h == 0) return;

    /* cv2.getRotationMatrix2D(center, angle, 1.0): the centre is a Point2f (exact for
     * w/2 - 0.5), the angle goes to radians through CV_PI/180. */
    const double cx = (float)(w / 2.0 - 0.5), cy = (float)(h / 2.0 - 0.5);
    const double angle = degrees * (G_PI / 180.0);
    const double alpha = cos(angle), beta = sin(angle);
    double M[6] = {alpha, beta, (1 - alpha) * cx - beta * cy,
                   -beta, alpha, beta * cx + (1 - alpha) * cy};

    /* warpAffine inverts the forward matrix (no WARP_INVERSE_MAP), in this exact order */
    double D = M[0] * M[4] - M[1] * M[3];
    D = D != 0 ? 1. / D : 0;
    const double A11 = M[4] * D, A22 = M[0] * D;
    M[0] = A11;
    M[1] *= -D;
    M[3] *= -D;
    M[4] = A22;
    const double b1 = -M[0] * M[2] - M[1] * M[5];
    const double b2 = -M[3] * M[2] - M[4] * M[5];
    M[2] = b1;
    M[5] = b2;

    int *adelta = g_new(int, (size_t)w * 2), *bdelta = adelta + w;
    for (int x = 0; x < w; x++) {
        adelta[x] = round_to_int(M[0] * x * AB_SCALE);
        bdelta[x] = round_to_int(M[3] * x * AB_SCALE);
    }
    const int round_delta = nearest ? AB_SCALE / 2 : AB_SCALE / INTER_TAB_SIZE / 2;
    const size_t stride = (size_t)w * (size_t)cn;

    for (int y = 0; y < h; y++) {
        const int X0 = round_to_int((M[1] * y + M[2]) * AB_SCALE) + round_delta;
        const int Y0 = round_to_int((M[4] * y + M[5]) * AB_SCALE) + round_delta;
        uint8_t *out = dst->data + (size_t)y * stride;
        for (int x = 0; x < w; x++, out += cn) {
            /* arithmetic right shifts of negative positions floor, as in OpenCV */
            if (nearest) {
                int sx = reflect101(saturate_short((X0 + adelta[x]) >> AB_BITS), w);
                int sy = reflect101(saturate_short((Y0 + bdelta[x]) >> AB_BITS), h);
                memcpy(out, src->data + (size_t)sy * stride + (size_t)sx * (size_t)cn,
                       (size_t)cn);
                continue;
            }
            const int X = (X0 + adelta[x]) >> (AB_BITS - INTER_BITS);
            const int Y = (Y0 + bdelta[x]) >> (AB_BITS - INTER_BITS);
            const int sx = saturate_short(X >> INTER_BITS), sy = saturate_short(Y >> INTER_BITS);
            int wt[4];
            bilinear_weights(X & (INTER_TAB_SIZE - 1), Y & (INTER_TAB_SIZE - 1), wt);
            int x0 = sx, x1 = sx + 1, y0 = sy, y1 = sy + 1;
            if ((unsigned)sx >= (unsigned)(w - 1) || (unsigned)sy >= (unsigned)(h - 1)) {
                x0 = reflect101(x0, w);
                x1 = reflect101(x1, w);
                y0 = reflect101(y0, h);
                y1 = reflect101(y1, h);
            }
            const uint8_t *r0 = src->data + (size_t)y0 * stride;
            const uint8_t *r1 = src->data + (size_t)y1 * stride;
            const uint8_t *p00 = r0 + (size_t)x0 * cn, *p01 = r0 + (size_t)x1 * cn;
            const uint8_t *p10 = r1 + (size_t)x0 * cn, *p11 = r1 + (size_t)x1 * cn;
            for (int c = 0; c < cn; c++) {
                int v = (p00[c] * wt[0] + p01[c] * wt[1] + p10[c] * wt[2] + p11[c] * wt[3] +
                         (1 << (COEF_BITS - 1))) >> COEF_BITS;
                out[c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
    }
    g_free(adelta);
}

// ---------------------------------------------------------------------------------
// flips and dropout

void cs_aug_hflip(cs_image *image) {
    g_return_if_fail(image && (image->data || image->width == 0 || image->height == 0));
    const int w = image->width, cn = image->channels;
    const size_t stride = (size_t)w * (size_t)cn;
    for (int y = 0; y < image->height; y++) {
        uint8_t *row = image->data + (size_t)y * stride;
        for (int a = 0, b = w - 1; a < b; a++, b--)
            for (int c = 0; c < cn; c++) {
                uint8_t t = row[a * cn + c];
                row[a * cn + c] = row[b * cn + c];
                row[b * cn + c] = t;
            }
    }
}

void cs_aug_vflip(cs_image *image) {
    g_return_if_fail(image && (image->data || image->width == 0 || image->height == 0));
    const size_t stride = (size_t)image->width * (size_t)image->channels;
    uint8_t *tmp = g_malloc(stride ? stride : 1);
    for (int a = 0, b = image->height - 1; a < b; a++, b--) {
        uint8_t *ra = image->data + (size_t)a * stride, *rb = image->data + (size_t)b * stride;
        memcpy(tmp, ra, stride);
        memcpy(ra, rb, stride);
        memcpy(rb, tmp, stride);
    }
    g_free(tmp);
}

void cs_aug_dropout(cs_image *image, int holes, const int *x0, const int *y0, int size) {
    g_return_if_fail(image && holes >= 0 && size >= 0 && (holes == 0 || (x0 && y0)));
    const int w = image->width, h = image->height, cn = image->channels;
    for (int k = 0; k < holes; k++) {
        /* squares are clipped to the image (albumentations' never leave it) */
        int xa = MAX(x0[k], 0), xb = MIN(x0[k] + size, w);
        int ya = MAX(y0[k], 0), yb = MIN(y0[k] + size, h);
        if (xa >= xb) continue;
        for (int y = ya; y < yb; y++)
            memset(image->data + ((size_t)y * w + (size_t)xa) * cn, 0, (size_t)(xb - xa) * cn);
    }
}
