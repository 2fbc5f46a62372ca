/* condseg_gimp_preview.h — the dialogs' preview drawing, written once for both front ends:
 * libgimpui 2.0 and 3.0 name and shape the preview calls it needs alike (GimpPreview,
 * gimp_preview_untransform, gimp_preview_area_draw), so this file is compiled into each
 * front end against its own libgimpui. */
#ifndef CONDSEG_GIMP_PREVIEW_H
#define CONDSEG_GIMP_PREVIEW_H

#include <libgimp/gimp.h>
#include <libgimp/gimpui.h>

#include "condseg_gimp_common.h"

/* Draws `preview` from the kept answer, as `settings` ask (no network run), and returns
 * the verdict to show under it (g_free it). `network_runs` goes into the debug line the
 * dialog checks count runs by. */
char *cs_gimp_preview_redraw(GimpPreview *preview, const cs_gimp_inference *inference,
                             const cs_gimp_settings *settings, int network_runs);

#endif
