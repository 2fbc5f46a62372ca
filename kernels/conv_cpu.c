/* conv_cpu.c — 2-D convolution on the CPU: im2col + OpenBLAS sgemm, tiled over output
 * rows so the column buffer stays a few MB (a 3x3 conv over 128 channels at 256x256
 * would otherwise need a 300 MB buffer), 1x1 convolutions straight on the input, and
 * the bias + ReLU epilogue applied to each tile while it is still in cache.
 * im2col/col2im use PyTorch's Unfold layout, so they also serve as CDFA's unfold/fold.
 */
#include <cblas.h>
#include <string.h>

#include "cs_math.h"
#include "kernels.h"

/* Column-buffer budget of one tile (floats): 8 MB keeps sgemm's panels efficient while
 * im2col's output is still warm in the last-level cache. */
#define CS_CONV_TILE_FLOATS ((size_t)1 << 23)

void cs_conv_geometry(cs_conv_shape *s) {
    s->ho = (s->h + 2 * s->pad - s->dil * (s->k - 1) - 1) / s->stride + 1;
    s->wo = (s->w + 2 * s->pad - s->dil * (s->k - 1) - 1) / s->stride + 1;
}

static int conv_is_pointwise(const cs_conv_shape *s) {
    return s->k == 1 && s->stride == 1 && s->pad == 0;
}

/* Output rows per im2col tile. */
static int conv_tile_rows(const cs_conv_shape *s) {
    size_t kdim = (size_t)s->c * s->k * s->k;
    size_t rows = CS_CONV_TILE_FLOATS / (kdim * (size_t)s->wo);
    if (rows < 1) rows = 1;
    if (rows > (size_t)s->ho) rows = (size_t)s->ho;
    return (int)rows;
}

size_t cs_cpu_conv2d_workspace(const cs_conv_shape *s) {
    if (conv_is_pointwise(s)) return 0;
    return (size_t)s->c * s->k * s->k * (size_t)conv_tile_rows(s) * s->wo;
}

/* The output columns ox whose input column ox*stride + off lies in [0, w). */
static void conv_valid_columns(int off, int stride, int w, int wo, int *lo, int *hi) {
    int a = off >= 0 ? 0 : (-off + stride - 1) / stride;
    int b = w - off <= 0 ? 0 : (w - off + stride - 1) / stride;
    if (b > wo) b = wo;
    if (a > b) a = b;
    *lo = a;
    *hi = b;
}

void cs_cpu_im2col(float *col, const float *img, int c, int h, int w, int k, int stride,
                   int pad, int dil, int wo, int row0, int rows) {
    const int kk = k * k;
    const size_t ncols = (size_t)rows * wo;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < c * kk; r++) {
        const int ch = r / kk, ky = (r % kk) / k, kx = r % k;
        const float *src = img + (size_t)ch * h * w;
        float *dst = col + (size_t)r * ncols;
        /* Output columns whose input column ix = ox*stride - pad + kx*dil is inside. */
        const int off = kx * dil - pad;
        int ox_lo, ox_hi;
        conv_valid_columns(off, stride, w, wo, &ox_lo, &ox_hi);
        for (int oy = row0; oy < row0 + rows; oy++, dst += wo) {
            const int iy = oy * stride - pad + ky * dil;
            if (iy < 0 || iy >= h) {
                memset(dst, 0, sizeof(float) * wo);
                continue;
            }
            const float *line = src + (size_t)iy * w;
            memset(dst, 0, sizeof(float) * ox_lo);
            if (stride == 1) {
                memcpy(dst + ox_lo, line + ox_lo + off, sizeof(float) * (ox_hi - ox_lo));
            } else {
                for (int ox = ox_lo; ox < ox_hi; ox++) dst[ox] = line[ox * stride + off];
            }
            memset(dst + ox_hi, 0, sizeof(float) * (wo - ox_hi));
        }
    }
}

void cs_cpu_col2im_accumulate(float *img, const float *col, int c, int h, int w, int k,
                              int stride, int pad, int dil, int wo, int row0, int rows) {
    const int kk = k * k;
    const size_t ncols = (size_t)rows * wo;
    /* One thread per channel: the k*k rows of a channel all land in that channel. */
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < c; ch++) {
        float *dst = img + (size_t)ch * h * w;
        for (int q = 0; q < kk; q++) {
            const int ky = q / k, kx = q % k;
            const float *src = col + ((size_t)ch * kk + q) * ncols;
            const int off = kx * dil - pad;
            int ox_lo, ox_hi;
            conv_valid_columns(off, stride, w, wo, &ox_lo, &ox_hi);
            for (int oy = row0; oy < row0 + rows; oy++) {
                const int iy = oy * stride - pad + ky * dil;
                if (iy < 0 || iy >= h) continue;
                float *line = dst + (size_t)iy * w;
                const float *s = src + (size_t)(oy - row0) * wo;
                for (int ox = ox_lo; ox < ox_hi; ox++) line[ox * stride + off] += s[ox];
            }
        }
    }
}

/* scale/shift + ReLU over columns [col0, col0 + ncols) of the o x (ho*wo) output. */
static void conv_epilogue(float *y, const float *scale, const float *shift, int o,
                          size_t plane, size_t col0, size_t ncols, int relu) {
    if (!scale && !shift && !relu) return;
#pragma omp parallel for schedule(static)
    for (int oc = 0; oc < o; oc++) {
        float *p = y + (size_t)oc * plane + col0;
        const float a = scale ? scale[oc] : 1.0f, b = shift ? shift[oc] : 0.0f;
        if (relu) {
            for (size_t i = 0; i < ncols; i++) p[i] = csm_relu(p[i] * a + b);
        } else {
            for (size_t i = 0; i < ncols; i++) p[i] = p[i] * a + b;
        }
    }
}

/* The convolution of one image as tiled GEMMs: y = beta y + conv(x, w), then the
 * epilogue on each tile. */
static void conv_image(float *yn, const float *xn, const float *w, const float *scale,
                       const float *shift, const cs_conv_shape *s, int relu, float beta,
                       float *workspace) {
    const int kdim = s->c * s->k * s->k;
    const size_t plane = (size_t)s->ho * s->wo;
    if (conv_is_pointwise(s)) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->o, (int)plane, s->c, 1.0f, w,
                    s->c, xn, (int)plane, beta, yn, (int)plane);
        conv_epilogue(yn, scale, shift, s->o, plane, 0, plane, relu);
        return;
    }
    const int tile = conv_tile_rows(s);
    for (int row0 = 0; row0 < s->ho; row0 += tile) {
        const int rows = row0 + tile <= s->ho ? tile : s->ho - row0;
        const int ncols = rows * s->wo;
        cs_cpu_im2col(workspace, xn, s->c, s->h, s->w, s->k, s->stride, s->pad, s->dil, s->wo,
                      row0, rows);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->o, ncols, kdim, 1.0f, w, kdim,
                    workspace, ncols, beta, yn + (size_t)row0 * s->wo, (int)plane);
        conv_epilogue(yn, scale, shift, s->o, plane, (size_t)row0 * s->wo, (size_t)ncols, relu);
    }
}

void cs_cpu_conv2d_forward(float *y, const float *x, const float *w, const float *scale,
                           const float *shift, const cs_conv_shape *s, int relu,
                           float *workspace) {
    for (int n = 0; n < s->n; n++)
        conv_image(y + (size_t)n * s->o * s->ho * s->wo, x + (size_t)n * s->c * s->h * s->w, w,
                   scale, shift, s, relu, 0.0f, workspace);
}

/* A stride-1 convolution that keeps the map's size has, as its input gradient, another
 * such convolution: of dY with the kernel transposed (O <-> C) and flipped, padding
 * unchanged. Running it as a forward convolution avoids col2im's scattered writes, which
 * dominate when channels are few (2x faster at 32 channels, 256x256). */
static int conv_backward_as_forward(const cs_conv_shape *s) {
    return s->k > 1 && s->stride == 1 && s->ho == s->h && s->wo == s->w;
}

static cs_conv_shape conv_transposed_shape(const cs_conv_shape *s) {
    cs_conv_shape t = *s;
    t.c = s->o, t.o = s->c;
    cs_conv_geometry(&t);
    return t;
}

size_t cs_cpu_conv2d_backward_workspace(const cs_conv_shape *s) {
    size_t need = cs_cpu_conv2d_workspace(s);
    if (conv_backward_as_forward(s)) {
        const cs_conv_shape t = conv_transposed_shape(s);
        const size_t flipped = (size_t)s->o * s->c * s->k * s->k;
        const size_t via_forward = flipped + cs_cpu_conv2d_workspace(&t);
        if (via_forward > need) need = via_forward;
    }
    return need;
}

void cs_cpu_conv2d_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                            const float *w, const cs_conv_shape *s, float *workspace) {
    const int kdim = s->c * s->k * s->k, kk = s->k * s->k;
    const size_t plane = (size_t)s->ho * s->wo, in_plane = (size_t)s->h * s->w;
    const int as_forward = dx && conv_backward_as_forward(s);
    const cs_conv_shape t = conv_transposed_shape(s);
    for (int n = 0; n < s->n; n++) {
        const float *xn = x + (size_t)n * s->c * in_plane;
        const float *dyn = dy + (size_t)n * s->o * plane;
        float *dxn = dx ? dx + (size_t)n * s->c * in_plane : NULL;
        if (db) {
#pragma omp parallel for schedule(static)
            for (int oc = 0; oc < s->o; oc++) {
                double sum = 0.0;
                for (size_t i = 0; i < plane; i++) sum += dyn[(size_t)oc * plane + i];
                db[oc] += (float)sum;
            }
        }
        if (conv_is_pointwise(s)) {
            /* dW += dY X^T, dX += W^T dY */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->o, s->c, (int)plane, 1.0f,
                        dyn, (int)plane, xn, (int)plane, 1.0f, dw, s->c);
            if (dxn)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s->c, (int)plane, s->o,
                            1.0f, w, s->c, dyn, (int)plane, 1.0f, dxn, (int)plane);
            continue;
        }
        const int tile = conv_tile_rows(s);
        for (int row0 = 0; row0 < s->ho; row0 += tile) {
            const int rows = row0 + tile <= s->ho ? tile : s->ho - row0;
            const int ncols = rows * s->wo;
            const float *dy_tile = dyn + (size_t)row0 * s->wo;
            /* dW += dY_tile col^T, with the tile's columns rebuilt from x. */
            cs_cpu_im2col(workspace, xn, s->c, s->h, s->w, s->k, s->stride, s->pad, s->dil,
                          s->wo, row0, rows);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->o, kdim, ncols, 1.0f,
                        dy_tile, (int)plane, workspace, ncols, 1.0f, dw, kdim);
            if (!dxn || as_forward) continue;
            /* dcol = W^T dY_tile (reusing the buffer), scattered back onto dX. */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kdim, ncols, s->o, 1.0f, w,
                        kdim, dy_tile, (int)plane, 0.0f, workspace, ncols);
            cs_cpu_col2im_accumulate(dxn, workspace, s->c, s->h, s->w, s->k, s->stride, s->pad,
                                     s->dil, s->wo, row0, rows);
        }
        if (as_forward) {
            /* W'[c][o][k-1-ky][k-1-kx] = W[o][c][ky][kx], then dX += conv(dY, W'). */
            float *flipped = workspace;
#pragma omp parallel for schedule(static)
            for (int c = 0; c < s->c; c++)
                for (int o = 0; o < s->o; o++)
                    for (int q = 0; q < kk; q++)
                        flipped[((size_t)c * s->o + o) * kk + (kk - 1 - q)] =
                            w[((size_t)o * s->c + c) * kk + q];
            conv_image(dxn, dyn, flipped, NULL, NULL, &t, 0, 1.0f,
                       workspace + (size_t)s->o * s->c * kk);
        }
    }
}
