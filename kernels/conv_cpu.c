/* conv_cpu.c — 2-D convolution on the CPU: which engine runs a shape (oneDNN's
 * primitives, conv_dnnl.c, or im2col + OpenBLAS sgemm, here), and the sgemm engine.
 *
 * Large maps are tiled over output rows so that the column buffer stays a few MB (a 3x3
 * conv over 128 channels at 256x256 would otherwise need a 300 MB buffer); small maps
 * (the encoder's 16x16 and 32x32, training at reduced size) are grouped over the images
 * of the batch instead, so that each GEMM is wide enough to run well. The scale/shift
 * (bias, folded BatchNorm) + ReLU epilogue is applied to each tile while it is still in
 * cache. 1x1 convolutions skip im2col. im2col/col2im use PyTorch's Unfold layout, so they
 * also serve as CDFA's unfold/fold.
 */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "conv_dnnl.h"
#include "cs_math.h"
#include "kernels.h"

/* Floats of one tile's buffers (8 MB): sgemm's panels stay efficient while im2col's
 * output is still warm in the last-level cache. */
#define CS_CONV_TILE_FLOATS ((size_t)1 << 21)

void cs_conv_geometry(cs_conv_shape *s) {
    s->ho = (s->h + 2 * s->pad - s->dil * (s->k - 1) - 1) / s->stride + 1;
    s->wo = (s->w + 2 * s->pad - s->dil * (s->k - 1) - 1) / s->stride + 1;
}

/* The engine of each shape, by measurement on this project's Xeon (CONDSEG_PROFILE=1 of
 * the networks with CONDSEG_CONV_ENGINE=sgemm and =onednn, README "Precision"): oneDNN
 * wins wherever there is work to share out; on tiny problems — the channel attention's
 * MLP on 1x1 maps, a single output channel (spatial attention, the output layer) — its
 * per-call set-up and layout passes cost more than the arithmetic, and sgemm (in float32,
 * whatever the precision) is faster. Shapes for which oneDNN has only its own im2col + GEMM
 * kernel (dilated ones on AVX2 CPUs: conv_dnnl.c) run on sgemm, 10x faster. */
static int conv_small(const cs_conv_shape *s) {
    return (size_t)s->n * s->ho * s->wo < 64 || s->o < 8 || s->c < 2;
}

static int conv_is_pointwise(const cs_conv_shape *s) {
    return s->k == 1 && s->stride == 1 && s->pad == 0;
}

/* A float32 1x1 convolution from and to NCHW maps is one sgemm per image on the maps as
 * they are, where oneDNN would need a layout pass each way (training; inference where
 * the input is not a oneDNN convolution's NHWC output). On NHWC maps it stays on oneDNN:
 * one sgemm over all pixels with the weights transposed (no weight reorder) ran at
 * 0.2-0.7x oneDNN's speed on the networks' 1x1 shapes (16x16 to 256x256 maps, Xeon with
 * AVX-512), faster only on 8x8 maps. */
static int conv_pointwise_nchw(const cs_conv_shape *s) {
    return !s->bf16 && conv_is_pointwise(s) && !s->x_nhwc && !s->y_nhwc;
}

static int use_onednn(const cs_conv_shape *s) {
    static int forced = -1; /* CONDSEG_CONV_ENGINE: -2 none, 0 sgemm, 1 onednn */
    if (forced == -1) {
        const char *e = getenv("CONDSEG_CONV_ENGINE");
        forced = !e || !*e ? -2 : strcmp(e, "sgemm") == 0 ? 0 : 1;
    }
    if (forced >= 0 && !s->bf16) return forced;
    return !conv_small(s) && !conv_pointwise_nchw(s) && !csk_dnnl_conv_fallback(s);
}

const char *cs_cpu_conv_engine(const cs_conv_shape *s) {
    if (!use_onednn(s)) return "sgemm";
    return csk_dnnl_conv_winograd(s) ? "onednn-winograd" : "onednn";
}
int cs_cpu_conv2d_supports_nhwc(const cs_conv_shape *s) { return use_onednn(s); }

static size_t conv_kdim(const cs_conv_shape *s) { return (size_t)s->c * s->k * s->k; }
static size_t conv_plane(const cs_conv_shape *s) { return (size_t)s->ho * s->wo; }

/* How the work is cut: `images` images per GEMM when a map is small (their columns side
 * by side, plus a buffer for the GEMM's output), else one image in tiles of `rows`
 * output rows. */
typedef struct {
    int images;
    int rows;
} conv_tiling;

static conv_tiling conv_tiles(const cs_conv_shape *s) {
    const size_t kdim = conv_kdim(s), plane = conv_plane(s);
    conv_tiling t = {1, s->ho};
    const size_t cols = CS_CONV_TILE_FLOATS / (kdim + (size_t)s->o);
    if (s->n > 1 && 2 * plane <= cols) {
        size_t images = cols / plane;
        t.images = images > (size_t)s->n ? s->n : (int)images;
        return t;
    }
    size_t rows = CS_CONV_TILE_FLOATS / (kdim * (size_t)s->wo);
    if (rows < 1) rows = 1;
    if (rows < (size_t)s->ho) t.rows = (int)rows;
    return t;
}

static size_t sgemm_forward_workspace(const cs_conv_shape *s) {
    const conv_tiling t = conv_tiles(s);
    if (t.images > 1) return (conv_kdim(s) + (size_t)s->o) * conv_plane(s) * t.images;
    if (conv_is_pointwise(s)) return 0;
    return conv_kdim(s) * (size_t)t.rows * s->wo;
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

/* im2col into a matrix whose rows are `ld` floats apart (several images side by side). */
static void im2col_ld(float *col, size_t ld, const float *img, int c, int h, int w, int k,
                      int stride, int pad, int dil, int wo, int row0, int rows) {
    const int kk = k * k;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < c * kk; r++) {
        const int ch = r / kk, ky = (r % kk) / k, kx = r % k;
        const float *src = img + (size_t)ch * h * w;
        float *dst = col + (size_t)r * ld;
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

/* The columns of `g` consecutive images of batch `x` side by side (rows g x plane floats
 * long): the input of a grouped GEMM over small maps. A 1x1 convolution's columns are the
 * input planes themselves. */
static void images_to_columns(float *col, const float *x, const cs_conv_shape *s, int g) {
    const size_t plane = conv_plane(s), in_plane = (size_t)s->h * s->w, ld = (size_t)g * plane;
    if (conv_is_pointwise(s)) {
#pragma omp parallel for schedule(static)
        for (int r = 0; r < s->c; r++)
            for (int i = 0; i < g; i++)
                memcpy(col + (size_t)r * ld + (size_t)i * plane,
                       x + ((size_t)i * s->c + r) * in_plane, sizeof(float) * plane);
    } else {
        for (int i = 0; i < g; i++)
            im2col_ld(col + (size_t)i * plane, ld, x + (size_t)i * s->c * in_plane, s->c, s->h,
                      s->w, s->k, s->stride, s->pad, s->dil, s->wo, 0, s->ho);
    }
}

void cs_cpu_im2col(float *col, const float *img, int c, int h, int w, int k, int stride,
                   int pad, int dil, int wo, int row0, int rows) {
    im2col_ld(col, (size_t)rows * wo, img, c, h, w, k, stride, pad, dil, wo, row0, rows);
}

static void col2im_ld(float *img, const float *col, size_t ld, int c, int h, int w, int k,
                      int stride, int pad, int dil, int wo, int row0, int rows) {
    const int kk = k * k;
    /* One thread per channel: the k*k rows of a channel all land in that channel. */
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < c; ch++) {
        float *dst = img + (size_t)ch * h * w;
        for (int q = 0; q < kk; q++) {
            const int ky = q / k, kx = q % k;
            const float *src = col + ((size_t)ch * kk + q) * ld;
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

void cs_cpu_col2im_accumulate(float *img, const float *col, int c, int h, int w, int k,
                              int stride, int pad, int dil, int wo, int row0, int rows) {
    col2im_ld(img, col, (size_t)rows * wo, c, h, w, k, stride, pad, dil, wo, row0, rows);
}

/* dst[i] = (dst[i] + src[i]) * a + b (accumulate) or src[i] * a + b, then ReLU: the
 * epilogue of one output row. (Not beta * dst: 0 * an uninitialised NaN is NaN.) */
static inline void epilogue_row(float *dst, const float *src, size_t n, int accumulate, float a,
                                float b, int relu) {
    if (accumulate) {
        for (size_t i = 0; i < n; i++) dst[i] += src[i];
        src = dst;
    }
    if (relu) {
        for (size_t i = 0; i < n; i++) dst[i] = csm_relu(src[i] * a + b);
    } else if (a != 1.0f || b != 0.0f || src != dst) {
        for (size_t i = 0; i < n; i++) dst[i] = src[i] * a + b;
    }
}

/* scale/shift + ReLU over columns [col0, col0 + ncols) of the o x plane output. */
static void conv_epilogue(float *y, const float *scale, const float *shift, int o,
                          size_t plane, size_t col0, size_t ncols, int relu) {
    if (!scale && !shift && !relu) return;
#pragma omp parallel for schedule(static)
    for (int oc = 0; oc < o; oc++) {
        float *p = y + (size_t)oc * plane + col0;
        epilogue_row(p, p, ncols, 0, scale ? scale[oc] : 1.0f, shift ? shift[oc] : 0.0f, relu);
    }
}

/* y = beta y + conv(x, w) for every image, then the epilogue. */
static void conv_forward(float *y, const float *x, const float *w, const float *scale,
                         const float *shift, const cs_conv_shape *s, int relu, float beta,
                         float *workspace) {
    const size_t kdim = conv_kdim(s), plane = conv_plane(s), in_plane = (size_t)s->h * s->w;
    const conv_tiling t = conv_tiles(s);
    if (t.images > 1) {
        /* Images side by side: col is kdim x (images*plane), the GEMM's output o x the
         * same, then scattered to each image's NCHW planes with the epilogue. */
        for (int n0 = 0; n0 < s->n; n0 += t.images) {
            const int g = n0 + t.images <= s->n ? t.images : s->n - n0;
            const size_t ld = (size_t)g * plane;
            float *col = workspace, *out = workspace + kdim * (size_t)t.images * plane;
            const float *bsrc = x + (size_t)n0 * s->c * in_plane;
            images_to_columns(col, bsrc, s, g);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->o, (int)ld, (int)kdim,
                        1.0f, w, (int)kdim, col, (int)ld, 0.0f, out, (int)ld);
#pragma omp parallel for schedule(static)
            for (int r = 0; r < s->o * g; r++) {
                const int oc = r / g, i = r % g;
                epilogue_row(y + ((size_t)(n0 + i) * s->o + oc) * plane,
                             out + (size_t)oc * ld + (size_t)i * plane, plane, beta != 0.0f,
                             scale ? scale[oc] : 1.0f, shift ? shift[oc] : 0.0f, relu);
            }
        }
        return;
    }
    for (int n = 0; n < s->n; n++) {
        const float *xn = x + (size_t)n * s->c * in_plane;
        float *yn = y + (size_t)n * s->o * plane;
        if (conv_is_pointwise(s)) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->o, (int)plane, s->c, 1.0f,
                        w, s->c, xn, (int)plane, beta, yn, (int)plane);
            conv_epilogue(yn, scale, shift, s->o, plane, 0, plane, relu);
            continue;
        }
        for (int row0 = 0; row0 < s->ho; row0 += t.rows) {
            const int rows = row0 + t.rows <= s->ho ? t.rows : s->ho - row0;
            const int ncols = rows * s->wo;
            cs_cpu_im2col(workspace, xn, s->c, s->h, s->w, s->k, s->stride, s->pad, s->dil,
                          s->wo, row0, rows);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->o, ncols, (int)kdim, 1.0f,
                        w, (int)kdim, workspace, ncols, beta, yn + (size_t)row0 * s->wo,
                        (int)plane);
            conv_epilogue(yn, scale, shift, s->o, plane, (size_t)row0 * s->wo, (size_t)ncols,
                          relu);
        }
    }
}

size_t cs_cpu_conv2d_forward_workspace(const cs_conv_shape *s) {
    return use_onednn(s) ? csk_dnnl_conv_forward_workspace(s) : sgemm_forward_workspace(s);
}

void cs_cpu_conv2d_forward(float *y, const float *x, const float *w, const float *scale,
                           const float *shift, const cs_conv_shape *s, int relu,
                           float *workspace) {
    if (use_onednn(s)) csk_dnnl_conv_forward(y, x, w, scale, shift, s, relu, workspace);
    else conv_forward(y, x, w, scale, shift, s, relu, 0.0f, workspace);
}

/* ---- backward ------------------------------------------------------------------------ */

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

static size_t sgemm_backward_workspace(const cs_conv_shape *s) {
    const conv_tiling t = conv_tiles(s);
    /* Grouped images: their columns and their output gradients side by side. */
    size_t need = t.images > 1 ? (conv_kdim(s) + (size_t)s->o) * conv_plane(s) * t.images
                               : sgemm_forward_workspace(s);
    if (conv_backward_as_forward(s)) {
        const cs_conv_shape tr = conv_transposed_shape(s);
        const size_t via_forward = conv_kdim(s) * s->o + sgemm_forward_workspace(&tr);
        if (via_forward > need) need = via_forward;
    }
    return need;
}

static void bias_gradient_nhwc(float *db, const float *dy, const cs_conv_shape *s) {
    const size_t rows = (size_t)s->n * conv_plane(s);
#pragma omp parallel for schedule(static)
    for (int oc = 0; oc < s->o; oc++) {
        double sum = 0.0;
        for (size_t r = 0; r < rows; r++) sum += dy[r * s->o + oc];
        db[oc] += (float)sum;
    }
}

static void bias_gradient(float *db, const float *dy, const cs_conv_shape *s) {
    if (s->y_nhwc) {
        bias_gradient_nhwc(db, dy, s);
        return;
    }
    const size_t plane = conv_plane(s);
#pragma omp parallel for schedule(static)
    for (int oc = 0; oc < s->o; oc++) {
        double sum = 0.0;
        for (int n = 0; n < s->n; n++) {
            const float *g = dy + ((size_t)n * s->o + oc) * plane;
            for (size_t i = 0; i < plane; i++) sum += g[i];
        }
        db[oc] += (float)sum;
    }
}

size_t cs_cpu_conv2d_backward_workspace(const cs_conv_shape *s) {
    return use_onednn(s) ? csk_dnnl_conv_backward_workspace(s) : sgemm_backward_workspace(s);
}

static void sgemm_backward(float *dx, float *dw, const float *dy, const float *x,
                           const float *w, const cs_conv_shape *s, float *workspace);

void cs_cpu_conv2d_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                            const float *w, const cs_conv_shape *s, float *workspace) {
    if (db) bias_gradient(db, dy, s);
    if (use_onednn(s)) csk_dnnl_conv_backward(dx, dw, dy, x, w, s, workspace);
    else sgemm_backward(dx, dw, dy, x, w, s, workspace);
}

static void sgemm_backward(float *dx, float *dw, const float *dy, const float *x,
                           const float *w, const cs_conv_shape *s, float *workspace) {
    const size_t kdim = conv_kdim(s), plane = conv_plane(s), in_plane = (size_t)s->h * s->w;
    const int kk = s->k * s->k;
    const int as_forward = dx && conv_backward_as_forward(s);
    const conv_tiling t = conv_tiles(s);
    if (t.images > 1) {
        /* Grouped images: dW += dY_cat col_cat^T in one GEMM; dcol = W^T dY_cat. */
        for (int n0 = 0; n0 < s->n; n0 += t.images) {
            const int g = n0 + t.images <= s->n ? t.images : s->n - n0;
            const size_t ld = (size_t)g * plane;
            float *col = workspace, *gy = workspace + kdim * (size_t)t.images * plane;
            const float *bsrc = x + (size_t)n0 * s->c * in_plane;
#pragma omp parallel for schedule(static)
            for (int r = 0; r < s->o * g; r++) {
                const int oc = r / g, i = r % g;
                memcpy(gy + (size_t)oc * ld + (size_t)i * plane,
                       dy + ((size_t)(n0 + i) * s->o + oc) * plane, sizeof(float) * plane);
            }
            images_to_columns(col, bsrc, s, g);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->o, (int)kdim, (int)ld, 1.0f,
                        gy, (int)ld, col, (int)ld, 1.0f, dw, (int)kdim);
            if (!dx || as_forward) continue;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)kdim, (int)ld, s->o, 1.0f,
                        w, (int)kdim, gy, (int)ld, 0.0f, col, (int)ld);
            for (int i = 0; i < g; i++) {
                float *dxn = dx + (size_t)(n0 + i) * s->c * in_plane;
                if (conv_is_pointwise(s)) {
#pragma omp parallel for schedule(static)
                    for (int r = 0; r < s->c; r++) {
                        float *d = dxn + (size_t)r * in_plane;
                        const float *src = col + (size_t)r * ld + (size_t)i * plane;
                        for (size_t p = 0; p < plane; p++) d[p] += src[p];
                    }
                } else {
                    col2im_ld(dxn, col + (size_t)i * plane, ld, s->c, s->h, s->w, s->k,
                              s->stride, s->pad, s->dil, s->wo, 0, s->ho);
                }
            }
        }
    } else {
        for (int n = 0; n < s->n; n++) {
            const float *xn = x + (size_t)n * s->c * in_plane;
            const float *dyn = dy + (size_t)n * s->o * plane;
            float *dxn = dx ? dx + (size_t)n * s->c * in_plane : NULL;
            if (conv_is_pointwise(s)) {
                /* dW += dY X^T, dX += W^T dY */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->o, s->c, (int)plane,
                            1.0f, dyn, (int)plane, xn, (int)plane, 1.0f, dw, s->c);
                if (dxn)
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s->c, (int)plane, s->o,
                                1.0f, w, s->c, dyn, (int)plane, 1.0f, dxn, (int)plane);
                continue;
            }
            for (int row0 = 0; row0 < s->ho; row0 += t.rows) {
                const int rows = row0 + t.rows <= s->ho ? t.rows : s->ho - row0;
                const int ncols = rows * s->wo;
                const float *dy_tile = dyn + (size_t)row0 * s->wo;
                /* dW += dY_tile col^T, with the tile's columns rebuilt from x. */
                cs_cpu_im2col(workspace, xn, s->c, s->h, s->w, s->k, s->stride, s->pad, s->dil,
                              s->wo, row0, rows);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->o, (int)kdim, ncols,
                            1.0f, dy_tile, (int)plane, workspace, ncols, 1.0f, dw, (int)kdim);
                if (!dxn || as_forward) continue;
                /* dcol = W^T dY_tile (reusing the buffer), scattered back onto dX. */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)kdim, ncols, s->o,
                            1.0f, w, (int)kdim, dy_tile, (int)plane, 0.0f, workspace, ncols);
                cs_cpu_col2im_accumulate(dxn, workspace, s->c, s->h, s->w, s->k, s->stride,
                                         s->pad, s->dil, s->wo, row0, rows);
            }
        }
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
        const cs_conv_shape tr = conv_transposed_shape(s);
        conv_forward(dx, dy, flipped, NULL, NULL, &tr, 0, 1.0f, workspace + kdim * s->o);
    }
}
