/* overlay.h — the review picture of `condseg predict --overlay`: the input image with the
 * outline of its mask drawn over it, so that a folder of results can be judged at a glance. */
#ifndef CONDSEG_CLI_OVERLAY_H
#define CONDSEG_CLI_OVERLAY_H

#include "condseg.h"

/* The outline's colour (B, G, R) and width: bright green, which no mucosa or polyp has, two
 * pixels wide, visible on a full-size frame without hiding the polyp's edge. */
#define OVERLAY_OUTLINE_BGR {0, 255, 0}
#define OVERLAY_OUTLINE_WIDTH 2

/* Paints, in `bgr` (3 channels), the mask pixels that lie within `width` pixels (Chebyshev
 * distance) of a pixel outside the mask — the frame's outside counting as outside, so a
 * region cut by the border is closed — in `colour`. `mask` (1 channel, nonzero = marked)
 * has the image's size. Other pixels are left as they are. */
void overlay_draw_outline(cs_image *bgr, const cs_image *mask, int width, const uint8_t colour[3]);

#endif
