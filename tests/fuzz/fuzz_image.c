/* fuzz_image.c — libFuzzer harness of the image loader (model/image.c): any bytes as an
 * image file, loaded in colour (gdk-pixbuf) and in gray (libjpeg / libpng / gdk-pixbuf),
 * as predict and the data loader do. A load either fails with a message or gives an
 * image of the size it says. */
#include "condseg.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void load(const char *path, gboolean gray) {
    GError *error = NULL;
    cs_image *image = gray ? cs_image_load_gray(path, &error) : cs_image_load_bgr(path, &error);
    if (!image) {
        if (!error || !error->message[0]) abort();
        g_error_free(error);
        return;
    }
    if (image->width < 1 || image->height < 1 || image->channels != (gray ? 1 : 3)) abort();
    /* touch the last pixel: the buffer is as large as the image says */
    volatile uint8_t last = image->data[(size_t)image->width * image->height * image->channels - 1];
    (void)last;
    cs_image_free(image);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *path = fuzz_write("input.img", data, size);
    load(path, FALSE);
    load(path, TRUE);
    g_free(path);
    return 0;
}
