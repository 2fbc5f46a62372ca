/* condseg_gimp_preview.c — the preview drawing of condseg_gimp_preview.h: each preview
 * pixel mapped back to the drawable, rendered by cs_gimp_preview_render, drawn in one go. */
#include "condseg_gimp_preview.h"

char *cs_gimp_preview_redraw(GimpPreview *preview, const cs_gimp_inference *inference,
                             const cs_gimp_settings *settings, int network_runs) {
    const gint64 start = g_get_monotonic_time();
    int w, h;
    gimp_preview_get_size(preview, &w, &h);
    int *xs = g_new(int, w), *ys = g_new(int, h), unused;
    for (int i = 0; i < w; i++) gimp_preview_untransform(preview, i, 0, &xs[i], &unused);
    for (int j = 0; j < h; j++) gimp_preview_untransform(preview, 0, j, &unused, &ys[j]);
    guchar *rgb = g_new(guchar, (size_t)w * h * 3);
    cs_gimp_preview_render(inference, settings, xs, w, ys, h, rgb);
    gimp_preview_area_draw(GIMP_PREVIEW_AREA(gimp_preview_get_area(preview)), 0, 0, w, h,
                           GIMP_RGB_IMAGE, rgb, w * 3);
    g_free(rgb), g_free(xs), g_free(ys);
    char *verdict = cs_gimp_verdict(inference, settings);
    g_debug("ConDSeg preview: redrawn at threshold %.3f, output %d in %.1f ms, network runs %d",
            settings->threshold, settings->output, (g_get_monotonic_time() - start) / 1e3,
            network_runs);
    return verdict;
}
