/* attention_cpu.c — CDFA's outlook attention on the CPU (spec §2.9.1), and the row
 * softmax it is built on.
 *
 * The reference formulation is unfold -> per-pixel (9x9 softmax) @ (9 x head_dim) ->
 * fold (overlap-add). Here the fold is turned into a gather, so that every output pixel
 * is written by one thread and the inner loop runs along image rows:
 *   Y[c](q) = sum_i sum_j P_{q - d(i)}[i][j] * V[c](q - d(i) + d(j)),
 * where P and V are zero outside the image (unfold pads with zeros, fold drops what falls
 * outside). Work is split into tiles of (image, head, a few output rows); each tile first
 * gathers its softmax probabilities and values into a compact buffer with a zero border
 * of 2 pixels (the planes of a map are a power of two apart, which would make the caches
 * thrash, and the border removes every bounds test), then accumulates Y with one
 * multiply-add per (channel, i, j) over whole rows.
 *
 * The maps may be NCHW or NHWC (the _nhwc forms: between oneDNN convolutions, so that
 * the 324-channel logits and the values need no layout pass): only the gathers into the
 * tile and the stores out of it differ, through a channel stride and a pixel stride; the
 * arithmetic, and so the result, is the same bit for bit.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cs_math.h"
#include "kernels.h"

void cs_cpu_softmax_rows(float *y, const float *x, size_t rows, int cols) {
#pragma omp parallel for schedule(static) if (rows * cols > 32768)
    for (size_t r = 0; r < rows; r++) {
        const float *in = x + r * cols;
        float *out = y + r * cols;
        float m = -FLT_MAX;
        for (int j = 0; j < cols; j++) m = in[j] > m ? in[j] : m;
        float sum = 0.0f;
        for (int j = 0; j < cols; j++) {
            out[j] = expf(in[j] - m);
            sum += out[j];
        }
        const float inv = 1.0f / sum;
        for (int j = 0; j < cols; j++) out[j] *= inv;
    }
}

#define CS_NB 9          /* neighbours of the 3x3 window */
#define CS_TILE_ROWS 8   /* output rows per work item */
#define CS_HALO 2        /* V is read up to 2 pixels away from an output pixel */

static int imin(int a, int b) { return a < b ? a : b; }

typedef struct {
    int c, heads, head_dim, h, w;
    float scale;
    int pw, pr;                   /* padded tile width and height */
    int nhwc;                     /* every map (v, a, y, prob and their gradients) NHWC */
} outlook_dims;

/* Where channel ch of image b's pixel 0 lies in a map of `channels` channels, and how far
 * apart its channels and its pixels are. */
typedef struct {
    size_t origin, channel_stride, pixel_stride;
} map_view;

static map_view view_of(const outlook_dims *d, int channels, int b, int ch) {
    const size_t hw = (size_t)d->h * d->w;
    if (d->nhwc) return (map_view){((size_t)b * hw) * channels + ch, 1, (size_t)channels};
    return (map_view){((size_t)b * channels + ch) * hw, hw, 1};
}

/* Offset of channel k (counted from the view's) at image row r, column 0. */
static size_t view_at(const map_view *m, const outlook_dims *d, int k, int r) {
    return m->origin + (size_t)k * m->channel_stride + (size_t)r * d->w * m->pixel_stride;
}

static int logit_channels(const outlook_dims *d) { return d->heads * CS_NB * CS_NB; }

static size_t tile_floats(const outlook_dims *d) {
    const size_t plane = (size_t)d->pr * d->pw;
    return CS_NB * CS_NB * plane + (size_t)d->head_dim * plane +
           (size_t)d->head_dim * CS_TILE_ROWS * d->pw + 2 * (size_t)d->w;
}

/* Eight floats: one AVX2 register (GCC spilled a 16-float type to memory on AVX2). */
#define CS_LANES 8
typedef float cs_pixels __attribute__((vector_size(CS_LANES * sizeof(float))));
typedef int cs_lane_index __attribute__((vector_size(CS_LANES * sizeof(int))));

/* (By pointer: a function returning a 32-byte vector would change the baseline ABI.) */
static inline void pixels_load(cs_pixels *v, const float *p) { memcpy(v, p, sizeof *v); }

/* Lanes of a and b (b's numbered from 8) picked by the indices. */
#if defined(__clang__)
#define CS_SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define CS_SHUFFLE(a, b, ...) __builtin_shuffle(a, b, (cs_lane_index){__VA_ARGS__})
#endif

/* v[p] = channels k..k+7 of pixel p becomes v[k] = channel k of pixels 0..7: the three
 * rounds of pairwise interleaving an AVX2 8x8 transposition takes (unpack, shuffle,
 * 128-bit permute), written as generic shuffles. */
static inline void transpose8(cs_pixels v[CS_LANES]) {
    cs_pixels t[CS_LANES], u[CS_LANES];
    for (int p = 0; p < CS_LANES; p += 2) {
        t[p] = CS_SHUFFLE(v[p], v[p + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[p + 1] = CS_SHUFFLE(v[p], v[p + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int q = 0; q < CS_LANES; q += 4)
        for (int h = 0; h < 2; h++) {
            u[q + 2 * h] = CS_SHUFFLE(t[q + h], t[q + h + 2], 0, 1, 8, 9, 4, 5, 12, 13);
            u[q + 2 * h + 1] = CS_SHUFFLE(t[q + h], t[q + h + 2], 2, 3, 10, 11, 6, 7, 14, 15);
        }
    for (int k = 0; k < 4; k++) {
        v[k] = CS_SHUFFLE(u[k], u[k + 4], 0, 1, 2, 3, 8, 9, 10, 11);
        v[k + 4] = CS_SHUFFLE(u[k], u[k + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    }
}

/* One image row of an NHWC map (w pixels `ps` floats apart, `count` channels each) spread
 * over `count` planes (dst_plane apart): in blocks of 8 pixels x 8 channels transposed in
 * registers (the element-by-element loop was a third of the compact network's outlook
 * attention), the channels and pixels past the last whole block one by one. */
CS_VECTOR_CLONES
static void nhwc_row_to_planes(float *dst, size_t dst_plane, const float *pixels, size_t ps,
                               int count, int w) {
    const int whole_k = count / CS_LANES * CS_LANES, whole_x = w / CS_LANES * CS_LANES;
    for (int x0 = 0; x0 < whole_x; x0 += CS_LANES) {
        const float *in = pixels + (size_t)x0 * ps;
        for (int k0 = 0; k0 < whole_k; k0 += CS_LANES) {
            cs_pixels v[CS_LANES];
            for (int p = 0; p < CS_LANES; p++) pixels_load(&v[p], in + (size_t)p * ps + k0);
            transpose8(v);
            for (int k = 0; k < CS_LANES; k++)
                memcpy(dst + (size_t)(k0 + k) * dst_plane + x0, &v[k], sizeof v[k]);
        }
        for (int k = whole_k; k < count; k++)
            for (int p = 0; p < CS_LANES; p++) dst[(size_t)k * dst_plane + x0 + p] = in[(size_t)p * ps + k];
    }
    for (int x = whole_x; x < w; x++)
        for (int k = 0; k < count; k++) dst[(size_t)k * dst_plane + x] = pixels[(size_t)x * ps + k];
}

/* The way back: `count` planes (src_plane apart) of one row of w pixels (+)= into the
 * NHWC row `pixels` (pixels ps floats apart), in the same blocks of 8 x 8. */
CS_VECTOR_CLONES
static void planes_to_nhwc_row(float *pixels, size_t ps, const float *src, size_t src_plane,
                               int count, int w, int accumulate) {
    const int whole_k = count / CS_LANES * CS_LANES, whole_x = w / CS_LANES * CS_LANES;
    for (int x0 = 0; x0 < whole_x; x0 += CS_LANES) {
        float *out = pixels + (size_t)x0 * ps;
        for (int k0 = 0; k0 < whole_k; k0 += CS_LANES) {
            cs_pixels v[CS_LANES], o;
            for (int k = 0; k < CS_LANES; k++)
                pixels_load(&v[k], src + (size_t)(k0 + k) * src_plane + x0);
            transpose8(v);
            for (int p = 0; p < CS_LANES; p++) {
                float *at = out + (size_t)p * ps + k0;
                if (accumulate) pixels_load(&o, at), v[p] += o;
                memcpy(at, &v[p], sizeof v[p]);
            }
        }
        for (int k = whole_k; k < count; k++)
            for (int p = 0; p < CS_LANES; p++) {
                const float x = src[(size_t)k * src_plane + x0 + p];
                float *at = out + (size_t)p * ps + k;
                *at = accumulate ? *at + x : x;
            }
    }
    for (int x = whole_x; x < w; x++)
        for (int k = 0; k < count; k++) {
            const float v = src[(size_t)k * src_plane + x];
            float *at = pixels + (size_t)x * ps + k;
            *at = accumulate ? *at + v : v;
        }
}

/* Fills `count` padded planes (local row lr = image row y0 - CS_HALO + lr) from channels
 * 0..count-1 of the map view m: the image rows in [r_lo, r_hi) are copied, everything else
 * (other rows, the borders) is zero. NCHW rows are copied whole; NHWC pixels are read
 * whole (count contiguous channels) and spread over the planes. */
static void load_planes(float *dst, size_t dst_plane, const float *src, const map_view *m,
                        int count, const outlook_dims *d, int y0, int r_lo, int r_hi) {
    const int w = d->w, pw = d->pw;
    if (r_lo < 0) r_lo = 0;
    if (r_hi > d->h) r_hi = d->h;
    for (int k = 0; k < count; k++)
        for (int lr = 0; lr < d->pr; lr++) {
            float *row = dst + k * dst_plane + (size_t)lr * pw;
            const int r = y0 - CS_HALO + lr;
            if (r < r_lo || r >= r_hi) {
                memset(row, 0, sizeof(float) * pw);
                continue;
            }
            row[0] = row[1] = row[CS_HALO + w] = row[CS_HALO + w + 1] = 0.0f;
            if (m->pixel_stride == 1)
                memcpy(row + CS_HALO, src + view_at(m, d, k, r), sizeof(float) * w);
        }
    if (m->pixel_stride == 1) return;
    for (int r = r_lo; r < r_hi; r++)
        nhwc_row_to_planes(dst + (size_t)(r - y0 + CS_HALO) * pw + CS_HALO, dst_plane,
                           src + view_at(m, d, 0, r), m->pixel_stride, count, w);
}

/* Channels 0..count-1 of the map view m, image rows [y0, y1), (+)= the tile's planes src
 * (src_plane apart, rows pw apart, the first at image row y0): NCHW row by row, NHWC through
 * planes_to_nhwc_row. */
static void store_planes(float *out, const map_view *m, const float *src, size_t src_plane,
                         int count, const outlook_dims *d, int y0, int y1, int accumulate) {
    const int w = d->w, pw = d->pw;
    for (int r = y0; r < y1; r++) {
        const float *row = src + (size_t)(r - y0) * pw;
        if (m->pixel_stride == 1) {
            for (int k = 0; k < count; k++) {
                float *restrict o = out + view_at(m, d, k, r);
                const float *restrict in = row + k * src_plane;
                if (!accumulate) memcpy(o, in, sizeof(float) * w);
                else
                    for (int x = 0; x < w; x++) o[x] += in[x];
            }
            continue;
        }
        planes_to_nhwc_row(out + view_at(m, d, 0, r), m->pixel_stride, row, src_plane, count, w,
                           accumulate);
    }
}

/* In place, over the 9 rows e[j * plane + x] (x < w) of logits: softmax over j of
 * scale * e. m and s are w floats of scratch. */
static inline void softmax9_row(float *e0, size_t plane, int w, float scale, float *restrict m,
                                float *restrict s) {
    for (int x = 0; x < w; x++) m[x] = -FLT_MAX, s[x] = 0.0f;
    for (int j = 0; j < CS_NB; j++) {
        const float *restrict e = e0 + j * plane;
        for (int x = 0; x < w; x++) {
            const float t = scale * e[x];
            m[x] = t > m[x] ? t : m[x];
        }
    }
    for (int j = 0; j < CS_NB; j++) {
        float *restrict e = e0 + j * plane;
        for (int x = 0; x < w; x++) {
            e[x] = csm_softmax_exp(e[x], scale, m[x]);
            s[x] += e[x];
        }
    }
    for (int x = 0; x < w; x++) s[x] = 1.0f / s[x];
    for (int j = 0; j < CS_NB; j++) {
        float *restrict e = e0 + j * plane;
        for (int x = 0; x < w; x++) e[x] *= s[x];
    }
}

/* The fold's multiply-adds in blocks of CS_RUN_CHUNK pixels of CS_DIM_CHUNK channels,
 * whose sums stay in vector registers over all 81 (i, j) while each probability row is
 * loaded once for the block's channels (fold_block: GCC vector types, which the
 * AVX-512 / AVX2 clones map onto one or two registers per sum). With the sums in an L1
 * array instead (a load and a store per multiply-add) the loop ran at 4-8 GFLOP/s on an
 * AVX2 core pair. The tails (the last pixels of a tile, a head's last channels) take the
 * scalar loop. Every sum still runs over (i, j) in order from zero, so the result is the
 * same bit for bit whichever loop computes it. */
#define CS_RUN_CHUNK 16
#define CS_DIM_CHUNK 4

#define CS_BLOCK_VECTORS (CS_RUN_CHUNK / CS_LANES)

/* Where the 81 terms t = (i, j) of an output pixel q read their two factors, from the
 * block's first pixel. The forward fold: P's plane (i, j) at q - d(i), V at
 * q - d(i) + d(j). The fold of the values' gradient: P's plane (i, j) at q - d(j), dY at
 * q - d(j) + d(i) (the same with the shifts of i and j swapped). Made once per tile. */
typedef struct {
    size_t p[CS_NB * CS_NB], v[CS_NB * CS_NB];
} fold_offsets;

static void fold_offsets_make(fold_offsets *o, size_t plane, int pw, int values_gradient) {
    for (int i = 0; i < CS_NB; i++)
        for (int j = 0; j < CS_NB; j++) {
            const int s = values_gradient ? j : i, u = values_gradient ? i : j;
            const int ay = csm_nb_dy(s), ax = csm_nb_dx(s);
            o->p[i * CS_NB + j] = (size_t)(i * CS_NB + j) * plane + (size_t)(CS_HALO - ay) * pw +
                                  CS_HALO - ax;
            o->v[i * CS_NB + j] = (size_t)(CS_HALO - ay + csm_nb_dy(u)) * pw + CS_HALO - ax +
                                  csm_nb_dx(u);
        }
}

/* Y[dd] (rows `ystride` apart) = sum over t of P at o->p[t] times V[dd] at o->v[t], for
 * one block of CS_RUN_CHUNK pixels and CS_DIM_CHUNK channels. */
CS_VECTOR_CLONES
static void fold_block(float *Y, size_t ystride, const float *P, const float *V,
                       const fold_offsets *o, size_t plane) {
    cs_pixels acc[CS_DIM_CHUNK][CS_BLOCK_VECTORS];
    memset(acc, 0, sizeof acc);
    for (int t = 0; t < CS_NB * CS_NB; t++) {
        cs_pixels p[CS_BLOCK_VECTORS], v;
        for (int b = 0; b < CS_BLOCK_VECTORS; b++) pixels_load(&p[b], P + o->p[t] + b * CS_LANES);
        const float *vrow = V + o->v[t];
        for (int dd = 0; dd < CS_DIM_CHUNK; dd++)
            for (int b = 0; b < CS_BLOCK_VECTORS; b++) {
                pixels_load(&v, vrow + dd * plane + b * CS_LANES);
                acc[dd][b] += p[b] * v;
            }
    }
    for (int dd = 0; dd < CS_DIM_CHUNK; dd++) memcpy(Y + dd * ystride, acc[dd], sizeof acc[dd]);
}

/* The same for a tail: kn <= CS_RUN_CHUNK pixels, dims <= CS_DIM_CHUNK channels. */
static void fold_chunk(float *Y, size_t ystride, const float *P, const float *V,
                       const fold_offsets *o, int dims, size_t kn, size_t plane) {
    float acc[CS_DIM_CHUNK][CS_RUN_CHUNK];
    memset(acc, 0, sizeof acc);
    for (int t = 0; t < CS_NB * CS_NB; t++)
        for (int dd = 0; dd < dims; dd++) {
            const float *restrict prow = P + o->p[t];
            const float *restrict vrow = V + dd * plane + o->v[t];
            for (size_t k = 0; k < kn; k++) acc[dd][k] += prow[k] * vrow[k];
        }
    for (int dd = 0; dd < dims; dd++) memcpy(Y + dd * ystride, acc[dd], sizeof(float) * kn);
}

/* The fold over a tile's run of `run` pixels and `dims` channels: Y (local planes) from
 * P and V (padded planes) at the offsets o. */
static void fold_run(float *Y, const float *P, const float *V, const fold_offsets *o, int dims,
                     size_t run, size_t plane, size_t local) {
    for (size_t k0 = 0; k0 < run; k0 += CS_RUN_CHUNK) {
        const size_t kn = run - k0 < CS_RUN_CHUNK ? run - k0 : CS_RUN_CHUNK;
        for (int d0 = 0; d0 < dims; d0 += CS_DIM_CHUNK) {
            float *Yd = Y + (size_t)d0 * local + k0;
            const float *Vd = V + (size_t)d0 * plane + k0;
            const int n = imin(CS_DIM_CHUNK, dims - d0);
            if (kn == CS_RUN_CHUNK && n == CS_DIM_CHUNK) fold_block(Yd, local, P + k0, Vd, o, plane);
            else fold_chunk(Yd, local, P + k0, Vd, o, n, kn, plane);
        }
    }
}

CS_VECTOR_CLONES
static void outlook_tile(float *y, float *prob, const float *v, const float *a,
                         const outlook_dims *d, int b, int hd, int y0, int y1, float *scratch) {
    const int w = d->w, pw = d->pw, pr = d->pr, rows = y1 - y0;
    const size_t plane = (size_t)pr * pw;
    float *P = scratch;                                   /* 81 planes, padded */
    float *V = P + CS_NB * CS_NB * plane;                 /* head_dim planes, padded */
    float *Y = V + (size_t)d->head_dim * plane;           /* head_dim x rows x pw */
    float *m = Y + (size_t)d->head_dim * CS_TILE_ROWS * pw, *s = m + w;

    /* Softmax over j of the logits, for the image rows [y0-1, y1+1) (local row lr); the
     * other local rows of P are zero. */
    const map_view logits = view_of(d, logit_channels(d), b, hd * CS_NB * CS_NB);
    const int r_lo = y0 - 1 < 0 ? 0 : y0 - 1, r_hi = imin(y1 + 1, d->h);
    load_planes(P, plane, a, &logits, CS_NB * CS_NB, d, y0, r_lo, r_hi);
    for (int r = r_lo; r < r_hi; r++)
        for (int i = 0; i < CS_NB; i++)
            softmax9_row(P + (size_t)(i * CS_NB) * plane + (size_t)(r - y0 + CS_HALO) * pw + CS_HALO,
                         plane, w, d->scale, m, s);
    if (prob) /* kept for the backward pass */
        store_planes(prob, &logits, P + (size_t)CS_HALO * pw + CS_HALO, plane, CS_NB * CS_NB, d,
                     y0, y1, 0);
    /* The head's values, rows [y0-2, y1+2). */
    const map_view values = view_of(d, d->c, b, hd * d->head_dim);
    load_planes(V, plane, v, &values, d->head_dim, d, y0, y0 - CS_HALO, y1 + CS_HALO);
    /* Y[dd](y, x) += P_ij(y - ay, x - ax) * V[dd](y - ay + by, x - ax + bx). Y has the
     * padded row length too, so that the rows of a tile form one long run per (i, j); the
     * 4 columns past w hold garbage and are not copied out. */
    const size_t run = (size_t)rows * pw - 2 * CS_HALO;
    fold_offsets o;
    fold_offsets_make(&o, plane, pw, 0);
    fold_run(Y, P, V, &o, d->head_dim, run, plane, (size_t)CS_TILE_ROWS * pw);
    store_planes(y, &values, Y, (size_t)CS_TILE_ROWS * pw, d->head_dim, d, y0, y1, 0);
}

/* Runs `tile` over every (image, head, CS_TILE_ROWS rows) of the map, the tiles spread
 * over the threads, each thread with its own scratch buffer (about 1 MB at 128 pixels
 * wide, so that it stays in that core's L2). */
typedef void (*tile_fn)(const void *args, const outlook_dims *d, int b, int hd, int y0, int y1,
                        float *scratch);

static void run_tiles(const outlook_dims *d, int n, size_t scratch_floats, tile_fn tile,
                      const void *args) {
    const int tiles = (d->h + CS_TILE_ROWS - 1) / CS_TILE_ROWS;
#pragma omp parallel
    {
        float *scratch = malloc(sizeof(float) * scratch_floats);
        if (!scratch) cs_cpu_note_alloc_failure(sizeof(float) * scratch_floats);
#pragma omp for schedule(dynamic)
        for (int t = 0; t < n * d->heads * tiles; t++) {
            if (!scratch) continue; /* every thread still meets the loop */
            const int b = t / (d->heads * tiles), hd = (t / tiles) % d->heads;
            const int y0 = (t % tiles) * CS_TILE_ROWS, y1 = imin(y0 + CS_TILE_ROWS, d->h);
            tile(args, d, b, hd, y0, y1, scratch);
        }
        free(scratch);
    }
}

static outlook_dims make_dims(int c, int heads, int h, int w, float scale, int nhwc) {
    return (outlook_dims){.c = c, .heads = heads, .head_dim = c / heads, .h = h, .w = w,
                          .scale = scale, .pw = w + 2 * CS_HALO, .pr = CS_TILE_ROWS + 2 * CS_HALO,
                          .nhwc = nhwc};
}

typedef struct {
    float *y, *prob;
    const float *v, *a;
} forward_args;

static void forward_tile(const void *args, const outlook_dims *d, int b, int hd, int y0, int y1,
                         float *scratch) {
    const forward_args *f = args;
    outlook_tile(f->y, f->prob, f->v, f->a, d, b, hd, y0, y1, scratch);
}

static void outlook_forward(float *y, float *prob, const float *v, const float *a, int n, int c,
                            int heads, int h, int w, float scale, int nhwc) {
    const outlook_dims d = make_dims(c, heads, h, w, scale, nhwc);
    const forward_args args = {y, prob, v, a};
    run_tiles(&d, n, tile_floats(&d), forward_tile, &args);
}

void cs_cpu_outlook_attention(float *y, float *prob, const float *v, const float *a, int n,
                              int c, int heads, int h, int w, float scale) {
    outlook_forward(y, prob, v, a, n, c, heads, h, w, scale, 0);
}

void cs_cpu_outlook_attention_nhwc(float *y, float *prob, const float *v, const float *a, int n,
                                   int c, int heads, int h, int w, float scale) {
    outlook_forward(y, prob, v, a, n, c, heads, h, w, scale, 1);
}

/* ---- backward ------------------------------------------------------------------------- */

static size_t backward_tile_floats(const outlook_dims *d) {
    const size_t plane = (size_t)d->pr * d->pw, local = (size_t)CS_TILE_ROWS * d->pw;
    return CS_NB * CS_NB * (plane + local) + (size_t)d->head_dim * (2 * plane + local) +
           (size_t)d->w;
}

/* dP_p[i][j] = sum_d dY_d(p + d(i)) V_d(p + d(j)) over a tile's run of pixels, into the
 * local planes dP: for each i the nine sums of CS_LANES pixels stay in registers over
 * all channels (dY's row loaded once for the nine), each still summed over the channels
 * in order from zero, as the one-channel-at-a-time loop it replaces did. */
CS_VECTOR_CLONES
static void gradient_of_probabilities(float *dP, const float *G, const float *V, int dims,
                                      size_t run, size_t plane, size_t local, int pw) {
    size_t shift[CS_NB];
    for (int j = 0; j < CS_NB; j++)
        shift[j] = (size_t)(CS_HALO + csm_nb_dy(j)) * pw + CS_HALO + csm_nb_dx(j);
    for (int i = 0; i < CS_NB; i++) {
        size_t k0 = 0;
        for (; k0 + CS_LANES <= run; k0 += CS_LANES) {
            cs_pixels acc[CS_NB], g, v;
            memset(acc, 0, sizeof acc);
            for (int dd = 0; dd < dims; dd++) {
                pixels_load(&g, G + dd * plane + shift[i] + k0);
                for (int j = 0; j < CS_NB; j++) {
                    pixels_load(&v, V + dd * plane + shift[j] + k0);
                    acc[j] += g * v;
                }
            }
            for (int j = 0; j < CS_NB; j++)
                memcpy(dP + (size_t)(i * CS_NB + j) * local + k0, &acc[j], sizeof acc[j]);
        }
        for (int j = 0; j < CS_NB; j++)
            for (size_t k = k0; k < run; k++) {
                float sum = 0.0f;
                for (int dd = 0; dd < dims; dd++)
                    sum += G[dd * plane + shift[i] + k] * V[dd * plane + shift[j] + k];
                dP[(size_t)(i * CS_NB + j) * local + k] = sum;
            }
    }
}

/* For the source pixels p and value pixels r of rows [y0, y1):
 *   dP_p[i][j] = sum_d dY_d(p + d(i)) V_d(p + d(j))
 *   dA_p[i][j] = scale P_p[i][j] (dP_p[i][j] - sum_k P_p[i][k] dP_p[i][k])
 *   dV_d(r)   += sum_ij P_{r - d(j)}[i][j] dY_d(r - d(j) + d(i))
 * on the same padded tile buffers as the forward pass. */
CS_VECTOR_CLONES
static void outlook_backward_tile(float *dv, float *da, const float *dy, const float *prob,
                                  const float *v, const outlook_dims *d, int b, int hd, int y0,
                                  int y1, float *scratch) {
    const int w = d->w, pw = d->pw, rows = y1 - y0, hdim = d->head_dim;
    const size_t plane = (size_t)d->pr * pw, local = (size_t)CS_TILE_ROWS * pw;
    const size_t run = (size_t)rows * pw - 2 * CS_HALO;
    float *P = scratch;                           /* 81 padded planes */
    float *dP = P + CS_NB * CS_NB * plane;        /* 81 local planes (rows x pw) */
    float *G = dP + CS_NB * CS_NB * local;        /* head_dim padded planes of dY */
    float *V = G + (size_t)hdim * plane;          /* head_dim padded planes of V */
    float *dV = V + (size_t)hdim * plane;         /* head_dim local planes */
    float *s = dV + (size_t)hdim * local;         /* w floats */
    const map_view logits = view_of(d, logit_channels(d), b, hd * CS_NB * CS_NB);
    const map_view values = view_of(d, d->c, b, hd * hdim);

    load_planes(P, plane, prob, &logits, CS_NB * CS_NB, d, y0, y0 - 1, y1 + 1);
    load_planes(G, plane, dy, &values, hdim, d, y0, y0 - CS_HALO, y1 + CS_HALO);
    load_planes(V, plane, v, &values, hdim, d, y0, y0 - CS_HALO, y1 + CS_HALO);
    /* dV and dP are written whole over the run (no zeroing first); nothing past it is read. */
    fold_offsets o;
    fold_offsets_make(&o, plane, pw, 1);
    fold_run(dV, P, G, &o, hdim, run, plane, local);
    gradient_of_probabilities(dP, G, V, hdim, run, plane, local, pw);
    /* Softmax backward per (p, i), then dA added to da and dV to dv. */
    for (int ly = 0; ly < rows; ly++) {
        for (int i = 0; i < CS_NB; i++) {
            for (int x = 0; x < w; x++) s[x] = 0.0f;
            for (int j = 0; j < CS_NB; j++) {
                const float *restrict p = P + (size_t)(i * CS_NB + j) * plane +
                                          (size_t)(ly + CS_HALO) * pw + CS_HALO;
                const float *restrict q = dP + (size_t)(i * CS_NB + j) * local + (size_t)ly * pw;
                for (int x = 0; x < w; x++) s[x] += p[x] * q[x];
            }
            for (int j = 0; j < CS_NB; j++) {
                const float *restrict p = P + (size_t)(i * CS_NB + j) * plane +
                                          (size_t)(ly + CS_HALO) * pw + CS_HALO;
                /* dA replaces dP, which no later step reads. */
                float *restrict q = dP + (size_t)(i * CS_NB + j) * local + (size_t)ly * pw;
                for (int x = 0; x < w; x++) q[x] = csm_softmax_grad(p[x], q[x], s[x], d->scale);
            }
        }
    }
    store_planes(da, &logits, dP, local, CS_NB * CS_NB, d, y0, y1, 1);
    store_planes(dv, &values, dV, local, hdim, d, y0, y1, 1);
}

typedef struct {
    float *dv, *da;
    const float *dy, *prob, *v;
} backward_args;

static void backward_tile(const void *args, const outlook_dims *d, int b, int hd, int y0, int y1,
                          float *scratch) {
    const backward_args *g = args;
    outlook_backward_tile(g->dv, g->da, g->dy, g->prob, g->v, d, b, hd, y0, y1, scratch);
}

static void outlook_backward(float *dv, float *da, const float *dy, const float *prob,
                             const float *v, int n, int c, int heads, int h, int w, float scale,
                             int nhwc) {
    const outlook_dims d = make_dims(c, heads, h, w, scale, nhwc);
    const backward_args args = {dv, da, dy, prob, v};
    run_tiles(&d, n, backward_tile_floats(&d), backward_tile, &args);
}

void cs_cpu_outlook_attention_backward(float *dv, float *da, const float *dy, const float *prob,
                                       const float *v, int n, int c, int heads, int h, int w,
                                       float scale) {
    outlook_backward(dv, da, dy, prob, v, n, c, heads, h, w, scale, 0);
}

void cs_cpu_outlook_attention_backward_nhwc(float *dv, float *da, const float *dy,
                                            const float *prob, const float *v, int n, int c,
                                            int heads, int h, int w, float scale) {
    outlook_backward(dv, da, dy, prob, v, n, c, heads, h, w, scale, 1);
}

void cs_cpu_softmax_rows_backward(float *dx, const float *dy, const float *y, size_t rows,
                                  int cols) {
#pragma omp parallel for schedule(static) if (rows * cols > 32768)
    for (size_t r = 0; r < rows; r++) {
        const float *g = dy + r * cols, *p = y + r * cols;
        double dot = 0.0;
        for (int j = 0; j < cols; j++) dot += (double)g[j] * p[j];
        for (int j = 0; j < cols; j++) dx[r * cols + j] += p[j] * (float)(g[j] - dot);
    }
}
