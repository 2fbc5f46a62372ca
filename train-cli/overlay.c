/* overlay.c — the mask outline of overlay.h: the mask minus its erosion by a square of side
 * 2 * width + 1 (a separable minimum filter, rows then columns), painted into the image. */
#include <glib.h>
#include <string.h>

#include "overlay.h"

/* dst[i] = the minimum of src over [i - r, i + r] along a line of n values `step` apart;
 * outside the line counts as 0. */
static void min_along(const uint8_t *src, uint8_t *dst, int n, size_t step, int r) {
    for (int i = 0; i < n; i++) {
        uint8_t m = (i - r < 0 || i + r >= n) ? 0 : 1;
        for (int j = i - r; m && j <= i + r; j++) m = src[(size_t)j * step] != 0;
        dst[(size_t)i * step] = m;
    }
}

void overlay_draw_outline(cs_image *bgr, const cs_image *mask, int width, const uint8_t colour[3]) {
    const int w = mask->width, h = mask->height;
    const size_t n = (size_t)w * h;
    uint8_t *rows = g_malloc(n), *eroded = g_malloc(n);
    for (int y = 0; y < h; y++)
        min_along(mask->data + (size_t)y * w, rows + (size_t)y * w, w, 1, width);
    for (int x = 0; x < w; x++) min_along(rows + x, eroded + x, h, (size_t)w, width);
    for (size_t i = 0; i < n; i++)
        if (mask->data[i] && !eroded[i]) memcpy(bgr->data + 3 * i, colour, 3);
    g_free(rows);
    g_free(eroded);
}
