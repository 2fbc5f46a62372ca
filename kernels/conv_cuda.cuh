/* conv_cuda.cuh — the CUDA twin of conv_cpu.c: 2-D convolution as im2col + cuBLAS SGEMM,
 * with the same grouping of small maps over a batch's images and tiling of large maps
 * over output rows; the backward pass's input gradient as a GEMM into columns and a
 * col2im gather. */
#ifndef CONDSEG_CONV_CUDA_CUH
#define CONDSEG_CONV_CUDA_CUH

#include <float.h>
#include <math.h>

extern "C" {
#include "backend.h"
}
#include "cs_math.h"
#include "cuda_exec.cuh"

/* The most floats of convolution workspace one operation plans for (backend_cuda.cu). */
size_t csk_workspace_limit(void);

/* ======================================================================================
 * Convolution: im2col + GEMM (PyTorch's Unfold layout: row (ch*k + ky)*k + kx).
 *
 * The work is cut into chunks of `images` images whose columns sit side by side (the
 * GEMM's N grows with small maps), or, when one image's columns exceed the workspace
 * limit, into tiles of `rows` output rows of one image. With one image per chunk the GEMM
 * writes into y directly and the epilogue (scale/shift/ReLU) is one pass at the end. A
 * 1x1/s1/p0 convolution needs no columns: its maps are the GEMM operands as they are, one
 * strided-batched GEMM for all images (the channel Linear layers of CDFA are such). Only on
 * small maps are its images still put side by side, for a wider GEMM. */

/* Columns of `images` consecutive images (x: the first), output rows [row0, row0 + rows);
 * column index image * rows * wo + (oy - row0) * wo + ox, row length ld. */
struct Im2colF {
    float *col;
    const float *x;
    int c, h, w, k, stride, pad, dil, row0;
    csk_div by_ld, by_image_cols, by_wo, by_kk, by_k;
    CSK_HD void operator()(int i) const {
        const int r = csk_quot(by_ld, i), q = i - r * (int)by_ld.d;
        const int image = csk_quot(by_image_cols, q), qq = q - image * (int)by_image_cols.d;
        const int line = csk_quot(by_wo, qq), ox = qq - line * (int)by_wo.d, oy = row0 + line;
        const int ch = csk_quot(by_kk, r), rem = r - ch * (int)by_kk.d;
        const int ky = csk_quot(by_k, rem), kx = rem - ky * k;
        const int iy = oy * stride - pad + ky * dil, ix = ox * stride - pad + kx * dil;
        col[i] = csk_inside(iy, ix, h, w)
                     ? x[((size_t)image * c + ch) * h * w + (size_t)iy * w + ix]
                     : 0.0f;
    }
};

/* The adjoint of Im2colF as a gather, accumulating into dx (the chunk's first image):
 * each input pixel sums the column entries it was copied to, in the CPU's (ky, kx) order. */
struct Col2imF {
    float *dx;
    const float *col;
    int ld, image_cols, c, h, w, k, stride, pad, dil, wo, row0, rows;
    csk_div by_image, by_plane, by_w;
    CSK_HD void operator()(int i) const {
        const int image = csk_quot(by_image, i), rem = i - image * (int)by_image.d;
        const int ch = csk_quot(by_plane, rem), q = rem - ch * (int)by_plane.d;
        const int iy = csk_quot(by_w, q), ix = q - iy * w;
        const float *src = col + (size_t)image * image_cols;
        float d = dx[i];
        for (int ky = 0; ky < k; ky++) {
            int oy = iy + pad - ky * dil;
            if (oy < 0) continue;
            if (stride > 1) {
                if (oy % stride) continue;
                oy /= stride;
            }
            if (oy < row0 || oy >= row0 + rows) continue;
            for (int kx = 0; kx < k; kx++) {
                int ox = ix + pad - kx * dil;
                if (ox < 0) continue;
                if (stride > 1) {
                    if (ox % stride) continue;
                    ox /= stride;
                }
                if (ox >= wo) continue;
                const int r = (ch * k + ky) * k + kx;
                d += src[(size_t)r * ld + (oy - row0) * wo + ox];
            }
        }
        dx[i] = d;
    }
};

static inline CSK_HD float csk_epilogue(float v, const float *scale, const float *shift, int oc,
                                        int relu) {
    const float a = scale ? scale[oc] : 1.0f, b = shift ? shift[oc] : 0.0f;
    return relu ? csm_relu(v * a + b) : v * a + b;
}

/* The chunk's GEMM output (o x images*plane, row length ld) into NCHW y (the chunk's first
 * image), with the epilogue; i indexes y. */
struct ConvScatterF {
    float *y;
    const float *out;
    const float *scale, *shift;
    int plane, ld, relu;
    csk_div by_image, by_plane;
    CSK_HD void operator()(int i) const {
        const int image = csk_quot(by_image, i), rem = i - image * (int)by_image.d;
        const int oc = csk_quot(by_plane, rem), p = rem - oc * plane;
        y[i] = csk_epilogue(out[(size_t)oc * ld + (size_t)image * plane + p], scale, shift, oc,
                            relu);
    }
};

struct ConvEpilogueF {
    float *y;
    const float *scale, *shift;
    csk_div by_plane, by_o;
    int relu;
    CSK_HD void operator()(int i) const {
        const int t = csk_quot(by_plane, i), oc = t - csk_quot(by_o, t) * (int)by_o.d;
        y[i] = csk_epilogue(y[i], scale, shift, oc, relu);
    }
};

/* The chunk's output gradients (NCHW, dy: its first image) side by side as o x ld; i
 * indexes the result. */
struct ConvGatherDyF {
    float *dycat;
    const float *dy;
    int o, plane;
    csk_div by_ld, by_plane;
    CSK_HD void operator()(int i) const {
        const int oc = csk_quot(by_ld, i), q = i - oc * (int)by_ld.d;
        const int image = csk_quot(by_plane, q), p = q - image * plane;
        dycat[i] = dy[((size_t)image * o + oc) * plane + p];
    }
};

/* Output channel `row` of dy (n x o x plane): its n * plane values. */
struct BiasGradTerm {
    const float *dy;
    int o, plane;
    csk_div by_plane;
    CSK_HD csk_sum2 operator()(int row, int j) const {
        const int b = csk_quot(by_plane, j), p = j - b * plane;
        return SumReducer::one(dy[((size_t)b * o + row) * plane + p]);
    }
};

typedef struct {
    size_t kdim, plane;
    int pointwise;
    int images;      /* per chunk; 1: direct output into y */
    int rows;        /* output rows per tile (images == 1) */
    size_t workspace;
} csk_conv_plan;

static inline csk_conv_plan csk_plan_conv(const cs_conv_shape *s) {
    csk_conv_plan p;
    p.kdim = (size_t)s->c * s->k * s->k;
    p.plane = (size_t)s->ho * s->wo;
    p.pointwise = s->k == 1 && s->stride == 1 && s->pad == 0;
    const size_t limit = csk_workspace_limit();
    const size_t per_image = (p.kdim + (size_t)s->o) * p.plane;
    size_t images = per_image ? limit / per_image : 1;
    if (images > (size_t)s->n) images = (size_t)s->n;
    if (images < 2 || (p.pointwise && p.plane >= 1024)) images = 1;
    p.images = (int)images;
    p.rows = s->ho;
    if (p.images > 1) {
        p.workspace = per_image * images;
    } else if (p.pointwise) {
        p.workspace = 0;
    } else {
        size_t rows = limit / (p.kdim * (size_t)s->wo);
        if (rows < 1) rows = 1;
        if (rows > (size_t)s->ho) rows = (size_t)s->ho;
        p.rows = (int)rows;
        p.workspace = p.kdim * rows * (size_t)s->wo;
    }
    return p;
}

static inline Im2colF csk_im2col(float *col, const float *x, int ld, int image_cols,
                                 const cs_conv_shape *s, int row0) {
    Im2colF f = {col, x, s->c, s->h, s->w, s->k, s->stride, s->pad, s->dil, row0,
                 csk_make_div(ld), csk_make_div(image_cols), csk_make_div(s->wo),
                 csk_make_div(s->k * s->k), csk_make_div(s->k)};
    return f;
}

static inline Col2imF csk_col2im(float *dx, const float *col, int ld, int image_cols,
                                 const cs_conv_shape *s, int row0, int rows) {
    const int plane = s->h * s->w;
    Col2imF f = {dx, col, ld, image_cols, s->c, s->h, s->w, s->k, s->stride, s->pad, s->dil,
                 s->wo, row0, rows, csk_make_div(s->c * plane), csk_make_div(plane),
                 csk_make_div(s->w)};
    return f;
}

template <class X>
struct CudaConv {
    static size_t conv2d_forward_workspace(const cs_conv_shape *s) {
        return csk_plan_conv(s).workspace;
    }
    /* The backward pass tiles as the forward one does, in the same scratch. */
    static size_t conv2d_backward_workspace(const cs_conv_shape *s) {
        return csk_plan_conv(s).workspace;
    }

    static void conv2d_forward(float *y, const float *x, const float *w, const float *scale,
                               const float *shift, const cs_conv_shape *s, int relu,
                               float *workspace) {
        const csk_conv_plan pl = csk_plan_conv(s);
        const int kdim = (int)pl.kdim, plane = (int)pl.plane, o = s->o;
        const size_t in_image = (size_t)s->c * s->h * s->w, out_image = (size_t)o * plane;
        if (pl.images == 1 && pl.pointwise) {
            /* y_i = W x_i for every image i */
            csk_gemm_rm_batched<X>(0, 0, o, plane, s->c, 1.0f, w, s->c, 0, x, plane,
                                   (long long)in_image, 0.0f, y, plane, (long long)out_image,
                                   s->n);
        }
        for (int n0 = 0; n0 < s->n && !(pl.images == 1 && pl.pointwise); n0 += pl.images) {
            const int g = n0 + pl.images <= s->n ? pl.images : s->n - n0;
            const float *xn = x + (size_t)n0 * in_image;
            float *yn = y + (size_t)n0 * out_image;
            if (pl.images == 1) {
                for (int row0 = 0; row0 < s->ho; row0 += pl.rows) {
                    const int rows = row0 + pl.rows <= s->ho ? pl.rows : s->ho - row0;
                    const int ncols = rows * s->wo;
                    X::for_each(csk_int_count(pl.kdim * ncols, "im2col"),
                                csk_im2col(workspace, xn, ncols, ncols, s, row0));
                    csk_gemm_rm<X>(0, 0, o, ncols, kdim, 1.0f, w, kdim, workspace, ncols, 0.0f,
                                   yn + (size_t)row0 * s->wo, plane);
                }
                continue;
            }
            const int ld = g * plane;
            float *col = workspace, *out = workspace + pl.kdim * (size_t)pl.images * plane;
            X::for_each(csk_int_count(pl.kdim * ld, "im2col"),
                        csk_im2col(col, xn, ld, plane, s, 0));
            csk_gemm_rm<X>(0, 0, o, ld, kdim, 1.0f, w, kdim, col, ld, 0.0f, out, ld);
            ConvScatterF scatter = {yn, out, scale, shift, plane, ld, relu,
                                    csk_make_div(o * plane), csk_make_div(plane)};
            X::for_each(csk_int_count(out_image * g, "conv output"), scatter);
        }
        if (pl.images == 1 && (scale || shift || relu)) {
            ConvEpilogueF epilogue = {y, scale, shift, csk_make_div(plane), csk_make_div(o), relu};
            X::for_each(csk_int_count(out_image * s->n, "conv output"), epilogue);
        }
    }

    static void conv2d_backward(float *dx, float *dw, float *db, const float *dy,
                                const float *x, const float *w, const cs_conv_shape *s,
                                float *workspace) {
        const csk_conv_plan pl = csk_plan_conv(s);
        const int kdim = (int)pl.kdim, plane = (int)pl.plane, o = s->o, c = s->c;
        const size_t in_image = (size_t)c * s->h * s->w, out_image = (size_t)o * plane;
        if (db) {
            BiasGradTerm term = {dy, o, plane, csk_make_div(plane)};
            AddRowSumFin fin = {db};
            csk_reduce_rows<X, SumReducer>(o, csk_int_count(pl.plane * s->n, "bias gradient"),
                                           term, fin);
        }
        if (pl.images == 1 && pl.pointwise) {
            /* dW += dY_i X_i^T image after image; dX_i += W^T dY_i for all at once */
            for (int i = 0; i < s->n; i++)
                csk_gemm_rm<X>(0, 1, o, c, plane, 1.0f, dy + (size_t)i * out_image, plane,
                               x + (size_t)i * in_image, plane, 1.0f, dw, c);
            if (dx)
                csk_gemm_rm_batched<X>(1, 0, c, plane, o, 1.0f, w, c, 0, dy, plane,
                                       (long long)out_image, 1.0f, dx, plane,
                                       (long long)in_image, s->n);
            return;
        }
        for (int n0 = 0; n0 < s->n; n0 += pl.images) {
            const int g = n0 + pl.images <= s->n ? pl.images : s->n - n0;
            const float *xn = x + (size_t)n0 * in_image, *dyn = dy + (size_t)n0 * out_image;
            float *dxn = dx ? dx + (size_t)n0 * in_image : NULL;
            if (pl.images == 1) {
                for (int row0 = 0; row0 < s->ho; row0 += pl.rows) {
                    const int rows = row0 + pl.rows <= s->ho ? pl.rows : s->ho - row0;
                    const int ncols = rows * s->wo;
                    const float *dy_tile = dyn + (size_t)row0 * s->wo;
                    X::for_each(csk_int_count(pl.kdim * ncols, "im2col"),
                                csk_im2col(workspace, xn, ncols, ncols, s, row0));
                    csk_gemm_rm<X>(0, 1, o, kdim, ncols, 1.0f, dy_tile, plane, workspace, ncols,
                                   1.0f, dw, kdim);
                    if (!dxn) continue;
                    /* The columns' gradient in the same buffer, gathered onto dX. */
                    csk_gemm_rm<X>(1, 0, kdim, ncols, o, 1.0f, w, kdim, dy_tile, plane, 0.0f,
                                   workspace, ncols);
                    X::for_each(csk_int_count(in_image, "col2im"),
                                csk_col2im(dxn, workspace, ncols, ncols, s, row0, rows));
                }
                continue;
            }
            const int ld = g * plane;
            float *col = workspace, *gy = workspace + pl.kdim * (size_t)pl.images * plane;
            ConvGatherDyF gather = {gy, dyn, o, plane, csk_make_div(ld), csk_make_div(plane)};
            X::for_each(csk_int_count((size_t)o * ld, "conv gradient"), gather);
            X::for_each(csk_int_count(pl.kdim * ld, "im2col"),
                        csk_im2col(col, xn, ld, plane, s, 0));
            csk_gemm_rm<X>(0, 1, o, kdim, ld, 1.0f, gy, ld, col, ld, 1.0f, dw, kdim);
            if (!dxn) continue;
            csk_gemm_rm<X>(1, 0, kdim, ld, o, 1.0f, w, kdim, gy, ld, 0.0f, col, ld);
            X::for_each(csk_int_count(in_image * g, "col2im"),
                        csk_col2im(dxn, col, ld, plane, s, 0, s->ho));
        }
    }
};

#endif
