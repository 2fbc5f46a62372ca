/* attention_cpu.c — CDFA's outlook attention on the CPU (spec §2.9.1), and the row
 * softmax it is built on.
 *
 * The reference formulation is unfold -> per-pixel (9x9 softmax) @ (9 x head_dim) ->
 * fold (overlap-add). Here the fold is turned into a gather, so that every output pixel
 * is written by one thread and the inner loop runs along image rows:
 *   Y[c](q) = sum_i sum_j P_{q - d(i)}[i][j] * V[c](q - d(i) + d(j)),
 * over the i for which q - d(i) is inside the image and the j for which the value pixel
 * is inside too (unfold pads with zeros). For fixed (c, i, j) that is a shifted
 * multiply-add over whole rows, which vectorises.
 */
#include <float.h>
#include <math.h>
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
#define CS_CHUNK 256     /* pixels per softmax work item */
#define CS_TILE_ROWS 8   /* output rows per attention work item */

/* prob[n][h*81 + i*9 + j][p] = softmax over j of scale * a[...][p]; the 9 logits of one
 * (head, i) row are 9 planes apart, so the softmax runs over pixel chunks. */
static void outlook_softmax(float *prob, const float *a, int n, int heads, int hw,
                            float scale) {
    const int chunks = (hw + CS_CHUNK - 1) / CS_CHUNK;
    const int rows = n * heads * CS_NB; /* (image, head, i) */
#pragma omp parallel for schedule(static)
    for (int t = 0; t < rows * chunks; t++) {
        const int row = t / chunks, p0 = (t % chunks) * CS_CHUNK;
        const int len = p0 + CS_CHUNK <= hw ? CS_CHUNK : hw - p0;
        const size_t base = (size_t)row * CS_NB * hw + p0; /* plane (row*9 + 0) */
        float m[CS_CHUNK], s[CS_CHUNK];
        for (int p = 0; p < len; p++) m[p] = -FLT_MAX, s[p] = 0.0f;
        for (int j = 0; j < CS_NB; j++) {
            const float *src = a + base + (size_t)j * hw;
            for (int p = 0; p < len; p++) m[p] = fmaxf(m[p], scale * src[p]);
        }
        for (int j = 0; j < CS_NB; j++) {
            const float *src = a + base + (size_t)j * hw;
            float *dst = prob + base + (size_t)j * hw;
            for (int p = 0; p < len; p++) {
                dst[p] = expf(scale * src[p] - m[p]);
                s[p] += dst[p];
            }
        }
        for (int p = 0; p < len; p++) s[p] = 1.0f / s[p];
        for (int j = 0; j < CS_NB; j++) {
            float *dst = prob + base + (size_t)j * hw;
            for (int p = 0; p < len; p++) dst[p] *= s[p];
        }
    }
}

static int imax(int a, int b) { return a > b ? a : b; }
static int imin(int a, int b) { return a < b ? a : b; }

void cs_cpu_outlook_attention(float *y, float *prob, const float *v, const float *a, int n,
                              int c, int heads, int h, int w, float scale) {
    const int hw = h * w, head_dim = c / heads;
    outlook_softmax(prob, a, n, heads, hw, scale);

    const int tiles = (h + CS_TILE_ROWS - 1) / CS_TILE_ROWS;
#pragma omp parallel for schedule(dynamic)
    for (int t = 0; t < n * heads * tiles; t++) {
        const int b = t / (heads * tiles), hd = (t / tiles) % heads;
        const int ty0 = (t % tiles) * CS_TILE_ROWS, ty1 = imin(ty0 + CS_TILE_ROWS, h);
        const float *pb = prob + ((size_t)b * heads + hd) * CS_NB * CS_NB * hw;
        for (int d = 0; d < head_dim; d++) {
            const int ch = hd * head_dim + d;
            const float *vc = v + ((size_t)b * c + ch) * hw;
            float *yc = y + ((size_t)b * c + ch) * hw;
            for (int yy = ty0; yy < ty1; yy++) memset(yc + (size_t)yy * w, 0, sizeof(float) * w);
            for (int i = 0; i < CS_NB; i++) {
                const int ay = csm_nb_dy(i), ax = csm_nb_dx(i);
                for (int j = 0; j < CS_NB; j++) {
                    const int by = csm_nb_dy(j), bx = csm_nb_dx(j);
                    const float *pij = pb + (size_t)(i * CS_NB + j) * hw;
                    /* Output pixel (y, x) reads P at (y-ay, x-ax), V at (y-ay+by, x-ax+bx);
                     * both must be inside. */
                    const int y_lo = imax(ty0, imax(ay, ay - by));
                    const int y_hi = imin(ty1, imin(h + ay, h + ay - by));
                    const int x_lo = imax(0, imax(ax, ax - bx));
                    const int x_hi = imin(w, imin(w + ax, w + ax - bx));
                    for (int yy = y_lo; yy < y_hi; yy++) {
                        const float *prow = pij + (size_t)(yy - ay) * w + (x_lo - ax);
                        const float *vrow = vc + (size_t)(yy - ay + by) * w + (x_lo - ax + bx);
                        float *yrow = yc + (size_t)yy * w + x_lo;
                        for (int k = 0; k < x_hi - x_lo; k++) yrow[k] += prow[k] * vrow[k];
                    }
                }
            }
        }
    }
}
