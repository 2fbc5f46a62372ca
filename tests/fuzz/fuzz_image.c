/* fuzz_image.c — libFuzzer harness of the image loader (model/io/image.c): any bytes as an
 * image file, loaded in colour (gdk-pixbuf) and in gray (libjpeg / libpng / gdk-pixbuf),
 * as predict and the data loader do, after the header checks alone. A load either fails
 * with a message or gives an image of the size it says. */
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

/* Decoding a legal but large image (up to 2^26 pixels from a 54-byte BMP) takes seconds
 * under the sanitizers and teaches nothing a small one does not: above 2^22 pixels only
 * the header checks run (test_bad_input loads the large cases). */
#define DECODE_PIXELS_MAX ((guint64)1 << 22)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *path = fuzz_write("input.img", data, size);
    int width = 0, height = 0;
    GError *error = NULL;
    if (!cs_image_read_size(path, &width, &height, &error)) {
        if (!error || !error->message[0]) abort();
        g_error_free(error);
    }
    if ((guint64)width * (guint64)height <= DECODE_PIXELS_MAX) {
        load(path, FALSE);
        load(path, TRUE);
    }
    g_free(path);
    return 0;
}
