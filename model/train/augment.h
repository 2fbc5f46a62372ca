/* augment.h — the spatial augmentations of spec §6.5 as deterministic functions of their
 * parameters (the random draws live in data.c), on 8-bit images at native resolution,
 * reproducing what albumentations 1.3 does through OpenCV. */
#ifndef CONDSEG_AUGMENT_H
#define CONDSEG_AUGMENT_H

#include "condseg.h"

/* Rotation by `degrees` (positive: counter-clockwise on screen) about
 * (w/2 - 0.5, h/2 - 0.5), output the same size, border BORDER_REFLECT_101: what
 * cv2.warpAffine(src, cv2.getRotationMatrix2D(centre, degrees, 1), (w, h), flags,
 * borderMode=cv2.BORDER_REFLECT_101) gives, with flags INTER_LINEAR (images) or
 * INTER_NEAREST (masks, nearest != 0). dst must have src's size and channels. */
void cs_aug_rotate(const cs_image *src, double degrees, int nearest, cs_image *dst);
void cs_aug_hflip(cs_image *image);
void cs_aug_vflip(cs_image *image);
/* Sets every channel of the size x size squares with top-left corners (x0[k], y0[k]) to 0. */
void cs_aug_dropout(cs_image *image, int holes, const int *x0, const int *y0, int size);

#endif
