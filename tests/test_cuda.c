/* test_cuda.c — the CUDA backend against the CPU backend (the reference): every operation
 * of the backend table, forward and backward, on random inputs of several shapes (odd
 * sizes, batches, small and large maps, ties for the max operations, every convolution
 * path: multi-image chunks, one image, row tiles), then the whole ConDSeg network: a
 * forward with all four outputs, one training step's loss, outputs, parameter gradients and
 * BatchNorm statistics, and the way back to the CPU. TF32 is off.
 *
 *   test_cuda             on the GPU; prints "SKIPPED: no CUDA device (...)" and exits 77
 *                         (ctest: skipped) when there is none
 *   test_cuda --emulated  the CUDA backend's code run on the host (cs_cuda_emulated_backend),
 *                         which needs no GPU: index math, tiling and GEMM arguments
 *
 * Tolerances, max |cuda - cpu| / max |cpu| unless said otherwise:
 *   elementwise, pooling, attention, BatchNorm, Adam   1e-5  (FMA contraction, sum order)
 *   convolution (GEMM summation order)                 1e-4
 *   network outputs (probabilities, absolute)          2e-4; loss relative 1e-4
 *   parameter gradients, relative L2 per tensor        every <= 5e-2, median <= 5e-3, as
 *     test_train.c allows against float64: a deep random network amplifies float32 rounding
 *     and ReLU kinks flip, differently for each summation order (PyTorch float32's own
 *     worst tensor is 1e-2 from float64)
 * The CPU side runs its im2col + sgemm convolutions (CONDSEG_CONV_ENGINE=sgemm unless set). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "backend_cuda.h"
#include "check.h"
#include "condseg.h"
#include "device.h"
#include "graph.h"
#include "model_internal.h"
#include "net.h"

#define TOL_OP 1e-5
#define TOL_CONV 1e-4
#define TOL_PROB 2e-4
#define TOL_LOSS 1e-4
#define TOL_GRAD_L2_MAX 5e-2
#define TOL_GRAD_L2_MEDIAN 5e-3

static const cs_backend *dev;   /* the backend under test */
static const cs_backend *cpu = &cs_backend_cpu;
static GRand *rng;
static int verbose = 0;

/* ---- a buffer on both backends: the same initial values, compared after an operation -- */

typedef struct {
    float *cpu, *dev;
    size_t n;
} pair;

static float uniform(float lo, float hi) { return lo + (hi - lo) * (float)g_rand_double(rng); }

static pair pair_from(const float *values, size_t n) {
    pair p = {g_new(float, n ? n : 1), dev->alloc(sizeof(float) * (n ? n : 1)), n};
    g_assert(p.dev);
    memcpy(p.cpu, values, sizeof(float) * n);
    dev->upload(p.dev, values, sizeof(float) * n);
    return p;
}

static pair pair_random(size_t n, float lo, float hi) {
    float *v = g_new(float, n ? n : 1);
    for (size_t i = 0; i < n; i++) v[i] = uniform(lo, hi);
    pair p = pair_from(v, n);
    g_free(v);
    return p;
}

/* Values from {0, 0.25, ..., 0.75} + a tiny offset per image: many exact ties. */
static pair pair_ties(size_t n) {
    float *v = g_new(float, n ? n : 1);
    for (size_t i = 0; i < n; i++) v[i] = (float)(g_rand_int_range(rng, 0, 4)) * 0.25f;
    pair p = pair_from(v, n);
    g_free(v);
    return p;
}

static pair pair_zero(size_t n) {
    float *v = g_new0(float, n ? n : 1);
    pair p = pair_from(v, n);
    g_free(v);
    return p;
}

static void pair_free(pair *p) {
    g_free(p->cpu);
    dev->release(p->dev);
}

static double compare(const char *what, const float *got, const float *ref, size_t n,
                      double tol) {
    const double scale = check_max_abs(ref, n);
    const double err = check_max_abs_diff(got, ref, n) / (scale > 0 ? scale : 1.0);
    CHECK_MSG(err <= tol, "%s: max|diff|/scale %.3e > %.0e (scale %.3e, %zu values)", what, err,
              tol, scale, n);
    if (verbose || !(err <= tol)) printf("    %-48s %.2e\n", what, err);
    return err;
}

static double pair_check(const char *what, const pair *p, double tol) {
    float *got = g_new(float, p->n ? p->n : 1);
    dev->download(got, p->dev, sizeof(float) * p->n);
    const double err = compare(what, got, p->cpu, p->n, tol);
    g_free(got);
    return err;
}

static char *label(const char *format, ...) G_GNUC_PRINTF(1, 2);
static char *label(const char *format, ...) {
    static char buf[256];
    va_list args;
    va_start(args, format);
    g_vsnprintf(buf, sizeof buf, format, args);
    va_end(args);
    return buf;
}

/* ---- convolution ------------------------------------------------------------------------- */

typedef struct {
    int n, c, h, w, o, k, stride, pad, dil;
} conv_case;

static void test_conv_case(const conv_case *cc, size_t limit) {
    cs_conv_shape s = {.n = cc->n, .c = cc->c, .h = cc->h, .w = cc->w, .o = cc->o, .k = cc->k,
                       .stride = cc->stride, .pad = cc->pad, .dil = cc->dil};
    cs_conv_geometry(&s);
#ifdef CONDSEG_HAVE_CUDA
    cs_cuda_set_workspace_limit(limit);
#endif
    const size_t nx = (size_t)s.n * s.c * s.h * s.w, ny = (size_t)s.n * s.o * s.ho * s.wo;
    const size_t nw = (size_t)s.o * s.c * s.k * s.k;
    const float bound = 1.0f / sqrtf((float)(s.c * s.k * s.k));
    pair x = pair_random(nx, -1, 1), w = pair_random(nw, -bound, bound);
    pair scale = pair_random(s.o, 0.5f, 1.5f), shift = pair_random(s.o, -0.5f, 0.5f);
    const size_t ws_cpu = cpu->conv2d_backward_workspace(&s);
    const size_t ws_dev = dev->conv2d_backward_workspace(&s);
    CHECK(dev->conv2d_forward_workspace(&s) <= ws_dev);
    float *wsc = g_new(float, ws_cpu + 1);
    float *wsd = dev->alloc(sizeof(float) * (ws_dev + 1));
    const char *name = label("conv %dx%dx%dx%d o%d k%d s%d p%d d%d limit %zu", s.n, s.c, s.h,
                             s.w, s.o, s.k, s.stride, s.pad, s.dil, limit);
    char base[200];
    g_strlcpy(base, name, sizeof base);
    /* forward: plain, bias, folded BatchNorm + ReLU */
    for (int variant = 0; variant < 3; variant++) {
        pair y = pair_random(ny, -9, 9); /* overwritten */
        const float *sc_c = variant == 2 ? scale.cpu : NULL, *sc_d = variant == 2 ? scale.dev : NULL;
        const float *sh_c = variant ? shift.cpu : NULL, *sh_d = variant ? shift.dev : NULL;
        cpu->conv2d_forward(y.cpu, x.cpu, w.cpu, sc_c, sh_c, &s, variant == 2, wsc);
        dev->conv2d_forward(y.dev, x.dev, w.dev, sc_d, sh_d, &s, variant == 2, wsd);
        pair_check(label("%s forward %s", base, variant == 0 ? "plain" : variant == 1 ? "bias" : "bn+relu"),
                   &y, TOL_CONV);
        pair_free(&y);
    }
    /* backward: everything accumulates onto random values; then without dx and db */
    for (int variant = 0; variant < 2; variant++) {
        pair dy = pair_random(ny, -1, 1), dx = pair_random(nx, -1, 1);
        pair dw = pair_random(nw, -1, 1), db = pair_random(s.o, -1, 1);
        cpu->conv2d_backward(variant ? NULL : dx.cpu, dw.cpu, variant ? NULL : db.cpu, dy.cpu,
                             x.cpu, w.cpu, &s, wsc);
        dev->conv2d_backward(variant ? NULL : dx.dev, dw.dev, variant ? NULL : db.dev, dy.dev,
                             x.dev, w.dev, &s, wsd);
        if (!variant) {
            pair_check(label("%s dx", base), &dx, TOL_CONV);
            pair_check(label("%s db", base), &db, TOL_CONV);
        }
        pair_check(label("%s dw%s", base, variant ? " (no dx)" : ""), &dw, TOL_CONV);
        pair_free(&dy), pair_free(&dx), pair_free(&dw), pair_free(&db);
    }
    g_free(wsc);
    dev->release(wsd);
    pair_free(&x), pair_free(&w), pair_free(&scale), pair_free(&shift);
}

static void test_conv(void) {
    static const conv_case cases[] = {
        {2, 3, 17, 13, 5, 3, 1, 1, 1},    /* odd sizes */
        {1, 8, 16, 16, 16, 1, 1, 0, 1},   /* pointwise, one image */
        {3, 16, 9, 11, 8, 1, 1, 0, 1},    /* pointwise, a batch */
        {2, 8, 40, 40, 6, 1, 1, 0, 1},    /* pointwise, large maps: batched GEMM */
        {2, 4, 20, 18, 6, 7, 2, 3, 1},    /* the stem: 7x7 stride 2 */
        {2, 8, 15, 15, 8, 3, 2, 1, 1},    /* 3x3 stride 2 */
        {2, 8, 12, 12, 4, 1, 2, 0, 1},    /* 1x1 stride 2 (downsample) */
        {2, 6, 14, 10, 5, 3, 1, 3, 3},    /* dilation 3 */
        {4, 16, 8, 8, 32, 3, 1, 2, 2},    /* dilation 2, small map, batch 4 */
        {1, 32, 64, 64, 16, 3, 1, 1, 1},  /* a large map */
        {3, 5, 7, 9, 3, 5, 1, 2, 1},      /* 5x5 */
    };
    printf("  convolution (%zu shapes x workspace limits)\n", G_N_ELEMENTS(cases));
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        const conv_case *c = &cases[i];
        cs_conv_shape s = {.n = c->n, .c = c->c, .h = c->h, .w = c->w, .o = c->o, .k = c->k,
                           .stride = c->stride, .pad = c->pad, .dil = c->dil};
        cs_conv_geometry(&s);
        const size_t kdim = (size_t)s.c * s.k * s.k, plane = (size_t)s.ho * s.wo;
        const size_t per_image = (kdim + s.o) * plane;
        /* default (all images in one chunk), 2 images per chunk, one image, 3-row tiles,
         * 1-row tiles */
        const size_t limits[] = {0, 2 * per_image, per_image, 3 * kdim * s.wo, 1};
        for (size_t l = 0; l < G_N_ELEMENTS(limits); l++) test_conv_case(c, limits[l]);
    }
#ifdef CONDSEG_HAVE_CUDA
    cs_cuda_set_workspace_limit(0);
#endif
}

/* ---- BatchNorm --------------------------------------------------------------------------- */

static void test_batchnorm(int n, int c, int hw) {
    const size_t count = (size_t)n * c * hw;
    char base[96];
    g_snprintf(base, sizeof base, "batchnorm %dx%dx%d", n, c, hw);
    pair x = pair_random(count, -2, 3);
    pair gamma = pair_random(c, 0.5f, 1.5f), beta = pair_random(c, -0.5f, 0.5f);
    pair mean = pair_zero(c), var = pair_zero(c);
    cpu->batchnorm_stats(mean.cpu, var.cpu, x.cpu, n, c, hw);
    dev->batchnorm_stats(mean.dev, var.dev, x.dev, n, c, hw);
    pair_check(label("%s mean", base), &mean, TOL_OP);
    pair_check(label("%s var", base), &var, TOL_OP);
    /* the rest from the CPU's statistics, so that each step is checked on its own */
    dev->upload(mean.dev, mean.cpu, sizeof(float) * c);
    dev->upload(var.dev, var.cpu, sizeof(float) * c);
    pair scale = pair_zero(c), shift = pair_zero(c);
    pair rmean = pair_random(c, -1, 1), rvar = pair_random(c, 0.5f, 2);
    const double m = (double)n * hw;
    const float unbias = m > 1 ? (float)(m / (m - 1)) : 1.0f; /* as ops.c */
    cpu->batchnorm_train_affine(scale.cpu, shift.cpu, rmean.cpu, rvar.cpu, gamma.cpu, beta.cpu,
                                mean.cpu, var.cpu, c, unbias);
    dev->batchnorm_train_affine(scale.dev, shift.dev, rmean.dev, rvar.dev, gamma.dev, beta.dev,
                                mean.dev, var.dev, c, unbias);
    pair_check(label("%s train scale", base), &scale, TOL_OP);
    pair_check(label("%s train shift", base), &shift, TOL_OP);
    pair_check(label("%s running mean", base), &rmean, TOL_OP);
    pair_check(label("%s running var", base), &rvar, TOL_OP);
    cpu->batchnorm_eval_affine(scale.cpu, shift.cpu, gamma.cpu, beta.cpu, rmean.cpu, rvar.cpu, c);
    dev->batchnorm_eval_affine(scale.dev, shift.dev, gamma.dev, beta.dev, rmean.dev, rvar.dev, c);
    pair_check(label("%s eval scale", base), &scale, TOL_OP);
    pair_check(label("%s eval shift", base), &shift, TOL_OP);
    dev->upload(scale.dev, scale.cpu, sizeof(float) * c);
    dev->upload(shift.dev, shift.cpu, sizeof(float) * c);
    for (int relu = 0; relu < 2; relu++) {
        pair y = pair_random(count, -9, 9);
        cpu->channel_affine(y.cpu, x.cpu, scale.cpu, shift.cpu, n, c, hw, relu);
        dev->channel_affine(y.dev, x.dev, scale.dev, shift.dev, n, c, hw, relu);
        pair_check(label("%s channel_affine relu=%d", base, relu), &y, TOL_OP);
        /* in place */
        pair z = pair_from(x.cpu, count);
        cpu->channel_affine(z.cpu, z.cpu, scale.cpu, shift.cpu, n, c, hw, relu);
        dev->channel_affine(z.dev, z.dev, scale.dev, shift.dev, n, c, hw, relu);
        pair_check(label("%s channel_affine in place relu=%d", base, relu), &z, TOL_OP);
        /* the backward pass gets the CPU's y on both sides: the same ReLU mask */
        dev->upload(y.dev, y.cpu, sizeof(float) * count);
        /* backward through the batch statistics (with the ReLU mask of y), dx optional */
        for (int with_dx = 0; with_dx < 2; with_dx++) {
            pair dy = pair_random(count, -1, 1), dx = pair_random(count, -1, 1);
            pair dgamma = pair_random(c, -1, 1), dbeta = pair_random(c, -1, 1);
            cpu->batchnorm_backward(with_dx ? dx.cpu : NULL, dgamma.cpu, dbeta.cpu, dy.cpu, x.cpu,
                                    relu ? y.cpu : NULL, gamma.cpu, mean.cpu, var.cpu, n, c, hw);
            dev->batchnorm_backward(with_dx ? dx.dev : NULL, dgamma.dev, dbeta.dev, dy.dev, x.dev,
                                    relu ? y.dev : NULL, gamma.dev, mean.dev, var.dev, n, c, hw);
            if (with_dx) pair_check(label("%s backward dx relu=%d", base, relu), &dx, TOL_OP);
            pair_check(label("%s backward dgamma relu=%d", base, relu), &dgamma, TOL_OP);
            pair_check(label("%s backward dbeta relu=%d", base, relu), &dbeta, TOL_OP);
            pair_free(&dy), pair_free(&dx), pair_free(&dgamma), pair_free(&dbeta);
        }
        pair_free(&y), pair_free(&z);
    }
    pair_free(&x), pair_free(&gamma), pair_free(&beta), pair_free(&mean), pair_free(&var);
    pair_free(&scale), pair_free(&shift), pair_free(&rmean), pair_free(&rvar);
}

/* ---- elementwise --------------------------------------------------------------------------- */

static void test_elementwise(int n, int c, int hw) {
    const size_t count = (size_t)n * c * hw;
    char base[96];
    g_snprintf(base, sizeof base, "%dx%dx%d", n, c, hw);
    pair a = pair_random(count, -2, 2), b = pair_random(count, -2, 2);
    pair s = pair_random((size_t)n * c, -2, 2), m = pair_random((size_t)n * hw, -2, 2);
    {
        pair y = pair_zero(count);
        cpu->relu(y.cpu, a.cpu, count), dev->relu(y.dev, a.dev, count);
        pair_check(label("relu %s", base), &y, TOL_OP);
        cpu->sigmoid(y.cpu, a.cpu, count), dev->sigmoid(y.dev, a.dev, count);
        pair_check(label("sigmoid %s", base), &y, TOL_OP);
        for (int relu = 0; relu < 2; relu++) {
            cpu->add(y.cpu, a.cpu, b.cpu, count, relu), dev->add(y.dev, a.dev, b.dev, count, relu);
            pair_check(label("add %s relu=%d", base, relu), &y, TOL_OP);
            pair z = pair_from(a.cpu, count); /* y aliasing a */
            cpu->add(z.cpu, z.cpu, b.cpu, count, relu), dev->add(z.dev, z.dev, b.dev, count, relu);
            pair_check(label("add in place %s relu=%d", base, relu), &z, TOL_OP);
            pair_free(&z);
        }
        cpu->mul_channel(y.cpu, a.cpu, s.cpu, n, c, hw), dev->mul_channel(y.dev, a.dev, s.dev, n, c, hw);
        pair_check(label("mul_channel %s", base), &y, TOL_OP);
        cpu->mul_spatial(y.cpu, a.cpu, m.cpu, n, c, hw), dev->mul_spatial(y.dev, a.dev, m.dev, n, c, hw);
        pair_check(label("mul_spatial %s", base), &y, TOL_OP);
        pair_free(&y);
    }
    {
        /* concatenation of a (c channels) and b's first 3 channels' worth into 2c + 3 */
        const int cy = 2 * c + 3;
        pair y = pair_random((size_t)n * cy * hw, -9, 9);
        pair part = pair_random((size_t)n * 3 * hw, -1, 1);
        cpu->copy_channels(y.cpu, cy, 0, a.cpu, c, n, hw), dev->copy_channels(y.dev, cy, 0, a.dev, c, n, hw);
        cpu->copy_channels(y.cpu, cy, c, part.cpu, 3, n, hw);
        dev->copy_channels(y.dev, cy, c, part.dev, 3, n, hw);
        cpu->copy_channels(y.cpu, cy, c + 3, b.cpu, c, n, hw);
        dev->copy_channels(y.dev, cy, c + 3, b.dev, c, n, hw);
        pair_check(label("copy_channels %s", base), &y, TOL_OP);
        pair dpart = pair_random((size_t)n * 3 * hw, -1, 1);
        cpu->copy_channels_backward(dpart.cpu, 3, y.cpu, cy, c, n, hw);
        dev->copy_channels_backward(dpart.dev, 3, y.dev, cy, c, n, hw);
        pair_check(label("copy_channels_backward %s", base), &dpart, TOL_OP);
        pair_free(&y), pair_free(&part), pair_free(&dpart);
    }
    {
        pair dy = pair_random(count, -1, 1), y = pair_random(count, -1, 1);
        pair dx = pair_random(count, -1, 1);
        cpu->accumulate(dx.cpu, dy.cpu, count), dev->accumulate(dx.dev, dy.dev, count);
        pair_check(label("accumulate %s", base), &dx, TOL_OP);
        cpu->relu_backward(dx.cpu, dy.cpu, y.cpu, count), dev->relu_backward(dx.dev, dy.dev, y.dev, count);
        pair_check(label("relu_backward %s", base), &dx, TOL_OP);
        cpu->sigmoid_backward(dx.cpu, dy.cpu, y.cpu, count);
        dev->sigmoid_backward(dx.dev, dy.dev, y.dev, count);
        pair_check(label("sigmoid_backward %s", base), &dx, TOL_OP);
        for (int which = 0; which < 3; which++) { /* both, dx only, ds/dm only */
            pair ds = pair_random((size_t)n * c, -1, 1), dm = pair_random((size_t)n * hw, -1, 1);
            float *dxc = which == 2 ? NULL : dx.cpu, *dxd = which == 2 ? NULL : dx.dev;
            float *dsc = which == 1 ? NULL : ds.cpu, *dsd = which == 1 ? NULL : ds.dev;
            float *dmc = which == 1 ? NULL : dm.cpu, *dmd = which == 1 ? NULL : dm.dev;
            cpu->mul_channel_backward(dxc, dsc, dy.cpu, a.cpu, s.cpu, n, c, hw);
            dev->mul_channel_backward(dxd, dsd, dy.dev, a.dev, s.dev, n, c, hw);
            cpu->mul_spatial_backward(dxc, dmc, dy.cpu, a.cpu, m.cpu, n, c, hw);
            dev->mul_spatial_backward(dxd, dmd, dy.dev, a.dev, m.dev, n, c, hw);
            pair_check(label("mul_channel/spatial_backward dx %s (%d)", base, which), &dx, TOL_OP);
            pair_check(label("mul_channel_backward ds %s (%d)", base, which), &ds, TOL_OP);
            pair_check(label("mul_spatial_backward dm %s (%d)", base, which), &dm, TOL_OP);
            pair_free(&ds), pair_free(&dm);
        }
        pair_free(&dy), pair_free(&y), pair_free(&dx);
    }
    pair_free(&a), pair_free(&b), pair_free(&s), pair_free(&m);
}

/* ---- pooling and reductions ------------------------------------------------------------ */

static void test_pooling(int n, int c, int h, int w, int ties) {
    const int hw = h * w, ho = (h - 1) / 2 + 1, wo = (w - 1) / 2 + 1;
    const size_t count = (size_t)n * c * hw;
    char base[96];
    g_snprintf(base, sizeof base, "%dx%dx%dx%d%s", n, c, h, w, ties ? " ties" : "");
    pair x = ties ? pair_ties(count) : pair_random(count, -2, 2);
    {
        const size_t no = (size_t)n * c * ho * wo;
        pair y = pair_zero(no), dy = pair_random(no, -1, 1), dx = pair_random(count, -1, 1);
        cpu->maxpool3s2(y.cpu, x.cpu, n, c, h, w, ho, wo);
        dev->maxpool3s2(y.dev, x.dev, n, c, h, w, ho, wo);
        pair_check(label("maxpool3s2 %s", base), &y, TOL_OP);
        cpu->maxpool3s2_backward(dx.cpu, dy.cpu, x.cpu, n, c, h, w, ho, wo);
        dev->maxpool3s2_backward(dx.dev, dy.dev, x.dev, n, c, h, w, ho, wo);
        pair_check(label("maxpool3s2_backward %s", base), &dx, TOL_OP);
        pair_free(&y), pair_free(&dy), pair_free(&dx);
    }
    {
        pair y = pair_zero((size_t)n * c), dy = pair_random((size_t)n * c, -1, 1);
        pair dx = pair_random(count, -1, 1);
        cpu->global_avgpool(y.cpu, x.cpu, n, c, hw), dev->global_avgpool(y.dev, x.dev, n, c, hw);
        pair_check(label("global_avgpool %s", base), &y, TOL_OP);
        cpu->global_maxpool(y.cpu, x.cpu, n, c, hw), dev->global_maxpool(y.dev, x.dev, n, c, hw);
        pair_check(label("global_maxpool %s", base), &y, TOL_OP);
        cpu->global_avgpool_backward(dx.cpu, dy.cpu, n, c, hw);
        dev->global_avgpool_backward(dx.dev, dy.dev, n, c, hw);
        pair_check(label("global_avgpool_backward %s", base), &dx, TOL_OP);
        cpu->global_maxpool_backward(dx.cpu, dy.cpu, x.cpu, n, c, hw);
        dev->global_maxpool_backward(dx.dev, dy.dev, x.dev, n, c, hw);
        pair_check(label("global_maxpool_backward %s", base), &dx, TOL_OP);
        pair_free(&y), pair_free(&dy), pair_free(&dx);
    }
    {
        pair y = pair_zero((size_t)n * hw), dy = pair_random((size_t)n * hw, -1, 1);
        pair dx = pair_random(count, -1, 1);
        cpu->channel_mean(y.cpu, x.cpu, n, c, hw), dev->channel_mean(y.dev, x.dev, n, c, hw);
        pair_check(label("channel_mean %s", base), &y, TOL_OP);
        cpu->channel_max(y.cpu, x.cpu, n, c, hw), dev->channel_max(y.dev, x.dev, n, c, hw);
        pair_check(label("channel_max %s", base), &y, TOL_OP);
        cpu->channel_mean_backward(dx.cpu, dy.cpu, n, c, hw);
        dev->channel_mean_backward(dx.dev, dy.dev, n, c, hw);
        pair_check(label("channel_mean_backward %s", base), &dx, TOL_OP);
        cpu->channel_max_backward(dx.cpu, dy.cpu, x.cpu, n, c, hw);
        dev->channel_max_backward(dx.dev, dy.dev, x.dev, n, c, hw);
        pair_check(label("channel_max_backward %s", base), &dx, TOL_OP);
        pair_free(&y), pair_free(&dy), pair_free(&dx);
    }
    pair_free(&x);
}

/* ---- upsampling and attention ------------------------------------------------------------ */

static void test_upsample(int n, int c, int h, int w, int ho, int wo) {
    const size_t nx = (size_t)n * c * h * w, ny = (size_t)n * c * ho * wo;
    char base[96];
    g_snprintf(base, sizeof base, "%dx%dx%dx%d -> %dx%d", n, c, h, w, ho, wo);
    pair x = pair_random(nx, -2, 2), y = pair_zero(ny);
    pair dy = pair_random(ny, -1, 1), dx = pair_random(nx, -1, 1);
    cpu->upsample_bilinear(y.cpu, x.cpu, n, c, h, w, ho, wo);
    dev->upsample_bilinear(y.dev, x.dev, n, c, h, w, ho, wo);
    pair_check(label("upsample %s", base), &y, TOL_OP);
    cpu->upsample_bilinear_backward(dx.cpu, dy.cpu, n, c, h, w, ho, wo);
    dev->upsample_bilinear_backward(dx.dev, dy.dev, n, c, h, w, ho, wo);
    pair_check(label("upsample_backward %s", base), &dx, TOL_OP);
    pair_free(&x), pair_free(&y), pair_free(&dy), pair_free(&dx);
}

static void test_outlook(int n, int c, int heads, int h, int w) {
    const size_t hw = (size_t)h * w, nv = (size_t)n * c * hw, na = (size_t)n * heads * 81 * hw;
    const float scale = 1.0f / sqrtf((float)(c / heads));
    char base[96];
    g_snprintf(base, sizeof base, "outlook %dx%dx%dx%d heads %d", n, c, h, w, heads);
    pair v = pair_random(nv, -2, 2), a = pair_random(na, -4, 4);
    pair y = pair_zero(nv), prob = pair_zero(na), y2 = pair_zero(nv);
    cpu->outlook_attention(y.cpu, prob.cpu, v.cpu, a.cpu, n, c, heads, h, w, scale);
    dev->outlook_attention(y.dev, prob.dev, v.dev, a.dev, n, c, heads, h, w, scale);
    pair_check(label("%s y", base), &y, TOL_OP);
    pair_check(label("%s prob", base), &prob, TOL_OP);
    /* inference: no probabilities kept */
    cpu->outlook_attention(y2.cpu, NULL, v.cpu, a.cpu, n, c, heads, h, w, scale);
    dev->outlook_attention(y2.dev, NULL, v.dev, a.dev, n, c, heads, h, w, scale);
    pair_check(label("%s y (inference)", base), &y2, TOL_OP);
    pair dy = pair_random(nv, -1, 1), dv = pair_random(nv, -1, 1), da = pair_random(na, -1, 1);
    dev->upload(prob.dev, prob.cpu, sizeof(float) * na); /* the same probabilities */
    cpu->outlook_attention_backward(dv.cpu, da.cpu, dy.cpu, prob.cpu, v.cpu, n, c, heads, h, w, scale);
    dev->outlook_attention_backward(dv.dev, da.dev, dy.dev, prob.dev, v.dev, n, c, heads, h, w, scale);
    pair_check(label("%s dv", base), &dv, TOL_OP);
    pair_check(label("%s da", base), &da, TOL_OP);
    pair_free(&v), pair_free(&a), pair_free(&y), pair_free(&prob), pair_free(&y2);
    pair_free(&dy), pair_free(&dv), pair_free(&da);
}

static void test_adam(int64_t n) {
    pair p = pair_random(n, -1, 1), m = pair_random(n, -0.1f, 0.1f), v = pair_random(n, 0, 0.01f);
    pair g = pair_random(n, -1, 1);
    for (int step = 1; step <= 3; step++) {
        const double bc1 = 1 - pow(0.9, step), bc2 = 1 - pow(0.999, step);
        cpu->adam_update(p.cpu, m.cpu, v.cpu, g.cpu, n, 0.9f, 0.999f, (float)(1e-3 / bc1),
                         (float)sqrt(bc2), 1e-8f);
        dev->adam_update(p.dev, m.dev, v.dev, g.dev, n, 0.9f, 0.999f, (float)(1e-3 / bc1),
                         (float)sqrt(bc2), 1e-8f);
    }
    pair_check("adam p", &p, TOL_OP);
    pair_check("adam m", &m, TOL_OP);
    pair_check("adam v", &v, TOL_OP);
    pair_free(&p), pair_free(&m), pair_free(&v), pair_free(&g);
}

/* ---- the whole network ---------------------------------------------------------------------- */

static int compare_doubles(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void test_network(const char *preset, int batch, int size) {
    printf("  network %s, batch %d, %dx%d\n", preset, batch, size, size);
    GError *error = NULL;
    cs_model *ref = cs_model_new(CS_ARCH_CONDSEG, preset, 11, &error);
    cs_model *gpu = cs_model_new(CS_ARCH_CONDSEG, preset, 11, &error);
    g_assert(ref && gpu);
    CHECK(cs_model_set_backend(gpu, dev, &error));
    CHECK(strcmp(cs_model_device(gpu), dev->name) == 0);
    const size_t plane = (size_t)size * size, count = (size_t)batch * plane;
    float *x = g_new(float, 3 * count), *y1 = g_new(float, count), *y2 = g_new(float, count);
    for (size_t i = 0; i < 3 * count; i++) x[i] = uniform(0, 1);
    for (size_t i = 0; i < count; i++) {
        const size_t p = i % plane;
        const double dy = (double)(p / size) / size - 0.45, dx = (double)(p % size) / size - 0.55;
        y1[i] = dx * dx + dy * dy < 0.08 ? 1.0f : 0.0f;
        y2[i] = 1.0f - y1[i];
    }
    /* inference, all four outputs */
    float *out_ref = g_new(float, 4 * count), *out_gpu = g_new(float, 4 * count);
    float *pr[4], *pg[4];
    for (int i = 0; i < 4; i++) pr[i] = out_ref + i * count, pg[i] = out_gpu + i * count;
    CHECK(cs_model_forward(ref, x, batch, size, size, CS_OUT_ALL, pr, &error));
    CHECK(cs_model_forward(gpu, x, batch, size, size, CS_OUT_ALL, pg, &error));
    static const char *const names[4] = {"mask", "fg", "bg", "uc"};
    for (int i = 0; i < 4; i++) {
        const double err = check_max_abs_diff(pg[i], pr[i], count);
        CHECK_MSG(err <= TOL_PROB, "inference %s: max|diff| %.3e > %.0e", names[i], err, TOL_PROB);
        printf("    inference %-4s max|diff| %.2e\n", names[i], err);
    }
    /* a second run of the same shape: same result (the pool reuses its blocks) */
    CHECK(cs_model_forward(gpu, x, batch, size, size, CS_OUT_ALL, pr, &error));
    CHECK_MSG(memcmp(pr[0], pg[0], sizeof(float) * count) == 0, "a second forward differs");
    CHECK(cs_model_forward(ref, x, batch, size, size, CS_OUT_ALL, pr, &error));

    /* one training step */
    cs_trainer *tr = cs_trainer_new(ref, 1e-4, 1e-4, FALSE), *tg = cs_trainer_new(gpu, 1e-4, 1e-4, FALSE);
    const double loss_ref =
        cs_trainer_forward_backward(tr, x, NULL, y1, y2, batch, size, out_ref, NULL);
    const double loss_gpu =
        cs_trainer_forward_backward(tg, x, NULL, y1, y2, batch, size, out_gpu, NULL);
    const double loss_err = fabs(loss_gpu - loss_ref) / fabs(loss_ref);
    CHECK_MSG(loss_err <= TOL_LOSS, "training loss %.8g vs %.8g", loss_gpu, loss_ref);
    printf("    training loss %.6f vs %.6f (relative %.1e)\n", loss_gpu, loss_ref, loss_err);
    for (int i = 0; i < 4; i++) {
        const double err = check_max_abs_diff(pg[i], pr[i], count);
        CHECK_MSG(err <= TOL_PROB, "training output %s: max|diff| %.3e", names[i], err);
    }
    cs_paramset_sync_from_backend(gpu->params);
    const cs_paramset *pa = ref->params, *pb = gpu->params;
    const int n_params = cs_paramset_count(pa);
    double *l2 = g_new0(double, n_params);
    int n_l2 = 0;
    double worst = 0, stats_err = 0;
    const char *worst_name = "";
    for (int i = 0; i < n_params; i++) {
        const cs_param *p = cs_paramset_at(pa, i);
        if (p->kind == CS_PARAM) {
            const float *gr = pa->grads + p->offset, *gg = pb->grads + p->offset;
            double num = 0, den = 0;
            for (int64_t j = 0; j < p->numel; j++) {
                const double d = (double)gg[j] - gr[j];
                num += d * d, den += (double)gr[j] * gr[j];
            }
            const double e = den > 0 ? sqrt(num / den) : sqrt(num);
            CHECK_MSG(e <= TOL_GRAD_L2_MAX, "gradient of %s: relative L2 %.3e", p->name, e);
            if (e > worst) worst = e, worst_name = p->name;
            l2[n_l2++] = e;
        } else if (p->kind == CS_BUFFER) {
            const double scale = check_max_abs(p->data, (size_t)p->numel);
            const double e = check_max_abs_diff(pb->values + p->offset, p->data, (size_t)p->numel) /
                             (scale > 0 ? scale : 1);
            if (e > stats_err) stats_err = e;
        } else {
            const cs_param *q = cs_paramset_at(pb, i);
            CHECK_MSG(*q->count == *p->count, "%s: %" G_GINT64_FORMAT " vs %" G_GINT64_FORMAT,
                      p->name, *q->count, *p->count);
        }
    }
    qsort(l2, n_l2, sizeof(double), compare_doubles);
    printf("    %d parameter gradients, relative L2: median %.2e, worst %.2e (%s)\n", n_l2,
           l2[n_l2 / 2], worst, worst_name);
    printf("    BatchNorm running statistics: max|diff|/scale %.2e\n", stats_err);
    CHECK_MSG(l2[n_l2 / 2] <= TOL_GRAD_L2_MEDIAN, "median gradient relative L2 %.3e", l2[n_l2 / 2]);
    CHECK_MSG(stats_err <= TOL_CONV, "BatchNorm running statistics differ by %.3e", stats_err);
    /* Adam on both, then back to the CPU: the weights come home. Adam's first step moves
     * every weight by about lr * sign(g), so gradients near zero, whose sign float32
     * rounding decides, move differently: the updates are compared in relative L2. */
    float *before = g_memdup2(pa->values, sizeof(float) * (size_t)pa->n_trainable);
    cs_trainer_update(tr), cs_trainer_update(tg);
    cs_paramset_sync_from_backend(gpu->params);
    double num = 0, den = 0;
    for (int64_t j = 0; j < pa->n_trainable; j++) {
        const double d = (double)pb->values[j] - pa->values[j];
        const double u = (double)pa->values[j] - before[j];
        num += d * d, den += u * u;
    }
    const double step_err = den > 0 ? sqrt(num / den) : sqrt(num);
    printf("    one Adam step: relative L2 of the weight updates' difference %.2e\n", step_err);
    CHECK_MSG(step_err <= TOL_GRAD_L2_MAX, "one Adam step: updates differ by %.3e", step_err);
    g_free(before);
    cs_trainer_free(tr), cs_trainer_free(tg);
    CHECK(cs_model_set_backend(gpu, NULL, &error));
    CHECK(strcmp(cs_model_device(gpu), "cpu") == 0);
    CHECK(cs_model_forward(gpu, x, batch, size, size, CS_OUT_MASK, pg, &error));
    CHECK(cs_model_forward(ref, x, batch, size, size, CS_OUT_MASK, pr, &error));
    const double back = check_max_abs_diff(pg[0], pr[0], count);
    printf("    back on the CPU: mask max|diff| %.2e\n", back);
    CHECK_MSG(back <= TOL_PROB, "back on the CPU: mask differs by %.3e", back);
    g_free(l2), g_free(x), g_free(y1), g_free(y2), g_free(out_ref), g_free(out_gpu);
    cs_model_free(ref), cs_model_free(gpu);
}

int main(int argc, char **argv) {
    /* The CPU reference runs its im2col + sgemm engine, the algorithm the CUDA backend
     * mirrors (the oneDNN engine sums in another order, which training-mode BatchNorm on
     * 2x2 maps amplifies past these tolerances; it is checked against the float64
     * reference by test_train and test_network). */
    g_setenv("CONDSEG_CONV_ENGINE", "sgemm", FALSE);
    gboolean emulated = FALSE, quick = FALSE;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--emulated")) emulated = TRUE;
        else if (!strcmp(argv[i], "--quick")) quick = TRUE;
        else if (!strcmp(argv[i], "-v")) verbose = 1;
    }
#ifdef CONDSEG_HAVE_CUDA
    if (emulated) {
        dev = cs_cuda_emulated_backend();
    } else {
        GError *error = NULL;
        dev = cs_backend_cuda(&error);
        if (!dev) {
            printf("SKIPPED: no CUDA device (%s)\n", error->message);
            g_error_free(error);
            return 77;
        }
        printf("test_cuda on %s\n", cs_cuda_device_description());
    }
    cs_cuda_set_tf32(0);
#else
    (void)emulated;
    printf("SKIPPED: condseg was built without CUDA support\n");
    return 77;
#endif
    printf("backend %s against cpu (TF32 off)\n", dev->name);
    cs_set_num_threads(0);
    rng = g_rand_new_with_seed(20250101);
#ifdef CONDSEG_HAVE_CUDA
    const long wrong_quotients = cs_cuda_check_divider();
    CHECK_MSG(wrong_quotients == 0, "fast division: %ld wrong quotients", wrong_quotients);
#endif
    test_conv();
    printf("  BatchNorm, elementwise, pooling, upsampling, attention, Adam\n");
    test_batchnorm(3, 6, 50);
    test_batchnorm(2, 4, 70001);   /* rows split over several blocks */
    test_batchnorm(1, 1, 1);
    test_elementwise(2, 5, 37);
    test_elementwise(3, 16, 1000);
    test_pooling(2, 3, 17, 16, 0);
    test_pooling(2, 3, 17, 16, 1);
    test_pooling(1, 2, 9, 9, 1);
    test_pooling(2, 3, 150, 160, 0); /* global reductions split */
    test_upsample(2, 3, 5, 7, 10, 14);
    test_upsample(1, 2, 8, 8, 32, 32);
    test_upsample(2, 2, 4, 4, 32, 32);
    test_upsample(1, 3, 5, 7, 13, 9);   /* not an integer factor */
    test_upsample(1, 2, 1, 6, 4, 12);   /* a single row */
    test_outlook(2, 8, 2, 7, 9);
    test_outlook(1, 16, 4, 16, 16);
    test_outlook(2, 128, 4, 8, 8);
    test_adam(1000);
    if (!quick) {
        /* the host emulation is slow: the paper's network at a smaller size there */
        test_network("condseg-compact", 3, 32);
        test_network("condseg-r50", 2, emulated ? 32 : 64);
    }
    g_rand_free(rng);
    return check_summary(emulated ? "test_cuda --emulated" : "test_cuda");
}
