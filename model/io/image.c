/* image.c — images in and out of libcondseg, decoded exactly as cv2.imread does:
 * colour through gdk-pixbuf (BGR, alpha dropped, EXIF orientation applied), gray through
 * the same libjpeg/libpng calls OpenCV makes; PNG masks and float32 .npy arrays written
 * atomically (temporary file in the target directory, then rename).
 */
#include <errno.h>
#include <fcntl.h>        /* O_WRONLY, O_CLOEXEC for g_mkstemp_full */
#include <gdk-pixbuf/gdk-pixbuf.h>
#include <glib/gstdio.h>  /* g_fopen, g_rename, g_unlink */
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <jpeglib.h>      /* after stdio.h: it needs FILE */
#include <png.h>
#include <unistd.h>       /* fsync, close */

#include "condseg.h"
#include "fileio.h"

/* At most 2^26 pixels (8192x8192), checked on the header before anything is decoded:
 * OpenCV's own limit (CV_IO_MAX_IMAGE_PIXELS, 2^30) would let a file of a few hundred
 * bytes claiming 30000x30000 pixels take gigabytes; 2^26 is 64 megapixels, several times
 * a dermoscopy photo, and bounds a load to about 0.5 GB. */
#define MAX_IMAGE_PIXELS ((guint64)1 << 26)
/* And at most 32768 a side: libpng will not write a mask over 1,000,000 rows, and a
 * 4 x 16777215 "image" (a 54-byte BMP) is no photograph. */
#define MAX_IMAGE_SIDE 32768

cs_image *cs_image_new(int width, int height, int channels) {
    g_return_val_if_fail(width >= 0 && height >= 0 && channels >= 1, NULL);
    cs_image *image = g_new0(cs_image, 1);
    image->width = width;
    image->height = height;
    image->channels = channels;
    /* g_malloc0_n checks the size product for overflow */
    image->data = g_malloc0_n((gsize)width * (gsize)height, (gsize)channels);
    return image;
}

void cs_image_free(cs_image *image) {
    if (!image) return;
    g_free(image->data);
    g_free(image);
}

static gboolean check_image_size(const char *path, guint64 width, guint64 height,
                                 GError **error) {
    if (width == 0 || height == 0 || width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE ||
        width * height > MAX_IMAGE_PIXELS) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                    "%s: image size %" G_GUINT64_FORMAT "x%" G_GUINT64_FORMAT " is empty or "
                    "above the limits (%" G_GUINT64_FORMAT " pixels, %d a side)", path, width,
                    height, MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE);
        return FALSE;
    }
    return TRUE;
}

// ---------------------------------------------------------------------------------
// before decoding: the format (documented ones only) and the size from the header

typedef enum { FORMAT_OTHER, FORMAT_JPEG, FORMAT_PNG, FORMAT_BMP, FORMAT_TIFF } image_format;

/* gdk-pixbuf's name of each format we read; every other loader it has (SVG, XPM, ICNS,
 * TGA, ANI, ...) is never given a file. */
static const char *const format_names[] = {NULL, "jpeg", "png", "bmp", "tiff"};

static image_format sniff_format(const guint8 magic[8], size_t n) {
    if (n >= 3 && memcmp(magic, "\xff\xd8\xff", 3) == 0) return FORMAT_JPEG;
    if (n == 8 && memcmp(magic, "\x89PNG\r\n\x1a\n", 8) == 0) return FORMAT_PNG;
    if (n >= 2 && memcmp(magic, "BM", 2) == 0) return FORMAT_BMP;
    if (n >= 4 && (memcmp(magic, "II*\0", 4) == 0 || memcmp(magic, "MM\0*", 4) == 0))
        return FORMAT_TIFF;
    return FORMAT_OTHER;
}

/* A JPEG ends with the end-of-image marker FF D9 (trailing NUL padding aside); a copy or
 * download cut short does not, and libjpeg would only warn and fill the rest with gray. */
static gboolean jpeg_is_complete(FILE *fp) {
    guint8 tail[64];
    if (fseeko(fp, 0, SEEK_END) != 0) return FALSE;
    const off_t size = ftello(fp);
    const off_t n = size < (off_t)sizeof tail ? size : (off_t)sizeof tail;
    gboolean complete = FALSE;
    if (n >= 2 && fseeko(fp, size - n, SEEK_SET) == 0 && fread(tail, 1, (size_t)n, fp) == (size_t)n) {
        off_t end = n;
        while (end > 2 && tail[end - 1] == 0) end--;
        complete = tail[end - 2] == 0xff && tail[end - 1] == 0xd9;
    }
    rewind(fp);
    return complete;
}

static guint32 le32(const guint8 *p) {
    return (guint32)p[0] | (guint32)p[1] << 8 | (guint32)p[2] << 16 | (guint32)p[3] << 24;
}

/* A BMP's info header is 12 to 124 bytes long (OS/2 1.x to BITMAPV5HEADER), its palette
 * has at most 256 colours, and its pixels start after both, inside the file. gdk-pixbuf's
 * BMP loader takes these numbers from the file and allocates buffers that large before
 * any check, so a 60-byte file claiming a 4 GB header, palette or pixel offset would ask
 * for 4 GB (all three found by fuzz_image): refused here first. */
static gboolean bmp_header_plausible(FILE *fp) {
    guint8 head[50] = {0};
    const size_t n = fread(head, 1, sizeof head, fp);
    const gboolean read = n >= 18 && fseeko(fp, 0, SEEK_END) == 0;
    const off_t size = read ? ftello(fp) : 0;
    rewind(fp);
    if (!read) return FALSE;
    const guint32 pixel_offset = le32(head + 10), info_size = le32(head + 14);
    /* biClrUsed, in every info header of 40 bytes or more */
    const guint32 colours = info_size >= 40 ? le32(head + 46) : 0;
    return info_size >= 12 && info_size <= 124 && colours <= 256 &&
           pixel_offset >= 14 + info_size && (off_t)pixel_offset <= size;
}

/* Refuses, before any pixel is decoded, a file that is not one of the documented formats,
 * whose header gdk-pixbuf cannot read, whose size is above the limit, or (JPEG) which is
 * truncated. */
static gboolean check_before_decoding(const char *path, FILE *fp, const guint8 magic[8],
                                      size_t n_magic, int *width_out, int *height_out,
                                      GError **error) {
    const image_format format = sniff_format(magic, n_magic);
    if (format == FORMAT_OTHER) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                    "%s is not a readable image: not a JPEG, PNG, BMP or TIFF file (the formats "
                    "condseg reads)", path);
        return FALSE;
    }
    if (format == FORMAT_BMP && !bmp_header_plausible(fp)) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                    "%s is not a readable image: its BMP header is malformed", path);
        return FALSE;
    }
    int width = 0, height = 0;
    GdkPixbufFormat *found = gdk_pixbuf_get_file_info(path, &width, &height);
    char *found_name = found ? gdk_pixbuf_format_get_name(found) : NULL;   /* a copy */
    const gboolean same = found_name && strcmp(found_name, format_names[format]) == 0;
    g_free(found_name);
    if (!same || width <= 0 || height <= 0) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                    "%s is not a readable image: its %s header cannot be read", path,
                    format_names[format]);
        return FALSE;
    }
    if (!check_image_size(path, (guint64)width, (guint64)height, error)) return FALSE;
    if (format == FORMAT_JPEG && !jpeg_is_complete(fp)) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                    "%s is a truncated JPEG image (no end-of-image marker: the file was cut "
                    "short); copy or export it again", path);
        return FALSE;
    }
    if (width_out) *width_out = width;
    if (height_out) *height_out = height;
    return TRUE;
}

// ---------------------------------------------------------------------------------
// decoding through gdk-pixbuf

/* Decodes `path` with gdk-pixbuf, EXIF orientation applied. */
static GdkPixbuf *load_oriented_pixbuf(const char *path, GError **error) {
    GError *pixbuf_error = NULL;
    GdkPixbuf *pixbuf = gdk_pixbuf_new_from_file(path, &pixbuf_error);
    if (!pixbuf) {
        /* G_FILE_ERROR: the file could not be opened or read; anything else: its content */
        gboolean io = pixbuf_error->domain == G_FILE_ERROR;
        g_set_error(error, CS_ERROR, io ? CS_ERROR_IO : CS_ERROR_FORMAT,
                    io ? "cannot read image %s: %s" : "%s is not a readable image: %s", path,
                    pixbuf_error->message);
        g_error_free(pixbuf_error);
        return NULL;
    }
    GdkPixbuf *oriented = gdk_pixbuf_apply_embedded_orientation(pixbuf);
    g_object_unref(pixbuf);
    if (gdk_pixbuf_get_bits_per_sample(oriented) != 8 || gdk_pixbuf_get_n_channels(oriented) < 3) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                    "%s: gdk-pixbuf gave an unexpected pixel layout", path);
        g_object_unref(oriented);
        return NULL;
    }
    if (!check_image_size(path, (guint64)gdk_pixbuf_get_width(oriented),
                          (guint64)gdk_pixbuf_get_height(oriented), error)) {
        g_object_unref(oriented);
        return NULL;
    }
    return oriented;
}

/* OpenCV's fixed-point RGB->gray (cvtColor and its BMP/TIFF decoders): weights
 * 0.299, 0.587, 0.114 in 14-bit fixed point, rounded. */
static uint8_t gray_from_rgb(unsigned r, unsigned g, unsigned b) {
    return (uint8_t)((r * 4899u + g * 9617u + b * 1868u + (1u << 13)) >> 14);
}

/* Packs a pixbuf into BGR (channels 3) or OpenCV gray (channels 1). */
static cs_image *image_from_pixbuf(const GdkPixbuf *pixbuf, int channels) {
    int width = gdk_pixbuf_get_width(pixbuf), height = gdk_pixbuf_get_height(pixbuf);
    int pixbuf_channels = gdk_pixbuf_get_n_channels(pixbuf);   /* 3, or 4 with alpha */
    int stride = gdk_pixbuf_get_rowstride(pixbuf);
    const guint8 *pixels = gdk_pixbuf_read_pixels(pixbuf);
    cs_image *image = cs_image_new(width, height, channels);
    for (int y = 0; y < height; y++) {
        const guint8 *in = pixels + (size_t)y * (size_t)stride;
        uint8_t *out = image->data + (size_t)y * (size_t)width * (size_t)channels;
        for (int x = 0; x < width; x++, in += pixbuf_channels) {
            if (channels == 3) {
                out[3 * x + 0] = in[2];
                out[3 * x + 1] = in[1];
                out[3 * x + 2] = in[0];
            } else {
                out[x] = gray_from_rgb(in[0], in[1], in[2]);
            }
        }
    }
    return image;
}

/* Opens `path` and reads its first 8 bytes (fewer for a shorter file), rewound after; a
 * missing or unreadable file (a folder, say) is an I/O error naming it. */
static FILE *open_image_file(const char *path, guint8 magic[8], size_t *n_magic, GError **error) {
    FILE *fp = g_fopen(path, "rb");
    if (fp) {
        memset(magic, 0, 8);
        *n_magic = fread(magic, 1, 8, fp);
        if (!ferror(fp)) {
            rewind(fp);
            return fp;
        }
    }
    int saved = errno;
    if (fp) fclose(fp);
    g_set_error(error, CS_ERROR, CS_ERROR_IO, "cannot read image %s: %s", path, g_strerror(saved));
    return NULL;
}

gboolean cs_image_read_size(const char *path, int *width, int *height, GError **error) {
    guint8 magic[8];
    size_t n_magic;
    FILE *fp = open_image_file(path, magic, &n_magic, error);
    if (!fp) return FALSE;
    const gboolean ok = check_before_decoding(path, fp, magic, n_magic, width, height, error);
    fclose(fp);
    return ok;
}

cs_image *cs_image_load_bgr(const char *path, GError **error) {
    g_return_val_if_fail(path != NULL, NULL);
    guint8 magic[8];
    size_t n_magic;
    FILE *fp = open_image_file(path, magic, &n_magic, error);
    if (!fp) return NULL;
    const gboolean decodable = check_before_decoding(path, fp, magic, n_magic, NULL, NULL, error);
    fclose(fp);
    if (!decodable) return NULL;
    GdkPixbuf *pixbuf = load_oriented_pixbuf(path, error);
    if (!pixbuf) return NULL;
    cs_image *image = image_from_pixbuf(pixbuf, 3);
    g_object_unref(pixbuf);
    return image;
}

/* Rotates/flips a gray image as EXIF `orientation` ("1".."8") says, with gdk-pixbuf's own
 * transform so that gray and colour loads agree. */
static cs_image *orient_gray(cs_image *gray, const char *orientation) {
    GdkPixbuf *rgb = gdk_pixbuf_new(GDK_COLORSPACE_RGB, FALSE, 8, gray->width, gray->height);
    int stride = gdk_pixbuf_get_rowstride(rgb);
    guint8 *pixels = gdk_pixbuf_get_pixels(rgb);
    for (int y = 0; y < gray->height; y++)
        for (int x = 0; x < gray->width; x++)
            memset(pixels + (size_t)y * (size_t)stride + 3 * (size_t)x,
                   gray->data[(size_t)y * (size_t)gray->width + (size_t)x], 3);
    gdk_pixbuf_set_option(rgb, "orientation", orientation);
    GdkPixbuf *oriented = gdk_pixbuf_apply_embedded_orientation(rgb);
    g_object_unref(rgb);

    int width = gdk_pixbuf_get_width(oriented), height = gdk_pixbuf_get_height(oriented);
    cs_image *result = cs_image_new(width, height, 1);
    stride = gdk_pixbuf_get_rowstride(oriented);
    int n_channels = gdk_pixbuf_get_n_channels(oriented);
    const guint8 *in = gdk_pixbuf_read_pixels(oriented);
    for (int y = 0; y < height; y++)
        for (int x = 0; x < width; x++)
            result->data[(size_t)y * (size_t)width + (size_t)x] =
                in[(size_t)y * (size_t)stride + (size_t)n_channels * (size_t)x];
    g_object_unref(oriented);
    cs_image_free(gray);
    return result;
}

// ---------------------------------------------------------------------------------
// gray JPEG: libjpeg's own luma, as OpenCV asks for it (out_color_space = JCS_GRAYSCALE)

typedef struct {
    struct jpeg_error_mgr base;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
} jpeg_error_state;

static void jpeg_error_longjmp(j_common_ptr cinfo) {
    jpeg_error_state *state = (jpeg_error_state *)cinfo->err;
    state->base.format_message(cinfo, state->message);
    longjmp(state->jump, 1);
}

/* Warnings (e.g. a truncated file) do not stop OpenCV's decode either; keep stderr quiet. */
static void jpeg_ignore_message(j_common_ptr cinfo, int level) {
    (void)cinfo;
    (void)level;
}

typedef enum { JPEG_DECODED, JPEG_FAILED, JPEG_IS_CMYK } jpeg_gray_result;

/* Decodes the luma of the JPEG in `fp`. *has_exif tells whether an Exif APP1 segment
 * (which may hold an orientation) is present. */
static jpeg_gray_result load_gray_jpeg(const char *path, FILE *fp, cs_image **out,
                                       gboolean *has_exif, GError **error) {
    struct jpeg_decompress_struct cinfo;
    jpeg_error_state state;
    cs_image *volatile image = NULL;   /* volatile: assigned between setjmp and longjmp */
    cinfo.err = jpeg_std_error(&state.base);
    state.base.error_exit = jpeg_error_longjmp;
    state.base.emit_message = jpeg_ignore_message;
    if (setjmp(state.jump)) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT, "%s is not a readable JPEG image: %s",
                    path, state.message);
        jpeg_destroy_decompress(&cinfo);
        cs_image_free(image);
        return JPEG_FAILED;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_stdio_src(&cinfo, fp);
    jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xffff);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.num_components == 4) {
        jpeg_destroy_decompress(&cinfo);
        return JPEG_IS_CMYK;
    }
    if (!check_image_size(path, cinfo.image_width, cinfo.image_height, error)) {
        jpeg_destroy_decompress(&cinfo);
        return JPEG_FAILED;
    }
    cinfo.out_color_space = JCS_GRAYSCALE;
    jpeg_start_decompress(&cinfo);
    image = cs_image_new((int)cinfo.output_width, (int)cinfo.output_height, 1);
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = image->data + (size_t)cinfo.output_scanline * cinfo.output_width;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    *has_exif = FALSE;
    for (jpeg_saved_marker_ptr m = cinfo.marker_list; m; m = m->next)
        if (m->marker == JPEG_APP0 + 1 && m->data_length >= 6 &&
            memcmp(m->data, "Exif\0\0", 6) == 0)
            *has_exif = TRUE;
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    *out = image;
    return JPEG_DECODED;
}

// ---------------------------------------------------------------------------------
// gray PNG: libpng with OpenCV's transformations (its rgb_to_gray, not cvtColor's)

typedef struct {
    jmp_buf jump;
    char message[256];
} png_error_state;

static void png_error_longjmp(png_structp png, png_const_charp message) {
    png_error_state *state = png_get_error_ptr(png);
    g_strlcpy(state->message, message, sizeof state->message);
    longjmp(state->jump, 1);
}

static void png_ignore_warning(png_structp png, png_const_charp message) {
    (void)png;
    (void)message;
}

static cs_image *load_gray_png(const char *path, FILE *fp, GError **error) {
    png_error_state state;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &state, png_error_longjmp,
                                             png_ignore_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        g_set_error(error, CS_ERROR, CS_ERROR_IO, "cannot read image %s: out of memory", path);
        return NULL;
    }
    cs_image *volatile image = NULL;   /* volatile: assigned between setjmp and longjmp */
    png_bytep *volatile rows = NULL;
    if (setjmp(state.jump)) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT, "%s is not a readable PNG image: %s",
                    path, state.message);
        png_destroy_read_struct(&png, &info, NULL);
        g_free(rows);
        cs_image_free(image);
        return NULL;
    }
    png_init_io(png, fp);
    png_read_info(png, info);
    png_uint_32 width, height;
    int bit_depth, color_type;
    png_get_IHDR(png, info, &width, &height, &bit_depth, &color_type, NULL, NULL, NULL);
    if (!check_image_size(path, width, height, error)) {
        png_destroy_read_struct(&png, &info, NULL);
        return NULL;
    }
    /* the transformations of OpenCV's PngDecoder::readData for an 8-bit, 1-channel result */
    if (bit_depth == 16) png_set_strip_16(png);
    png_set_strip_alpha(png);
    if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (!(color_type & PNG_COLOR_MASK_COLOR) && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    png_set_rgb_to_gray(png, PNG_ERROR_ACTION_NONE, 0.299, 0.587);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_channels(png, info) != 1 || png_get_rowbytes(png, info) != width)
        png_error(png, "unexpected row layout after the gray conversion");

    image = cs_image_new((int)width, (int)height, 1);
    rows = g_new(png_bytep, height);
    for (png_uint_32 y = 0; y < height; y++) rows[y] = image->data + (size_t)y * width;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    g_free(rows);
    return image;
}

// ---------------------------------------------------------------------------------
// gray loading: by format

cs_image *cs_image_load_gray(const char *path, GError **error) {
    g_return_val_if_fail(path != NULL, NULL);
    guint8 magic[8];
    size_t n_magic;
    FILE *fp = open_image_file(path, magic, &n_magic, error);
    if (!fp) return NULL;
    if (!check_before_decoding(path, fp, magic, n_magic, NULL, NULL, error)) {
        fclose(fp);
        return NULL;
    }

    static const guint8 jpeg_magic[3] = {0xff, 0xd8, 0xff};
    static const guint8 png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    cs_image *image = NULL;
    if (n_magic >= 3 && memcmp(magic, jpeg_magic, 3) == 0) {
        gboolean has_exif = FALSE;
        jpeg_gray_result result = load_gray_jpeg(path, fp, &image, &has_exif, error);
        fclose(fp);
        if (result == JPEG_FAILED) return NULL;
        if (result == JPEG_DECODED) {
            if (!has_exif) return image;
            /* gdk-pixbuf reads the orientation tag (rare: only Exif JPEGs pay this decode) */
            GdkPixbuf *pixbuf = gdk_pixbuf_new_from_file(path, NULL);
            const char *orientation = pixbuf ? gdk_pixbuf_get_option(pixbuf, "orientation") : NULL;
            if (orientation && strcmp(orientation, "1") != 0)
                image = orient_gray(image, orientation);
            if (pixbuf) g_object_unref(pixbuf);
            return image;
        }
        /* CMYK JPEG: gdk-pixbuf's conversion below (may differ from OpenCV by a few LSB) */
    } else if (n_magic == 8 && memcmp(magic, png_magic, 8) == 0) {
        image = load_gray_png(path, fp, error);
        fclose(fp);
        return image;
    } else {
        fclose(fp);
    }
    GdkPixbuf *pixbuf = load_oriented_pixbuf(path, error);
    if (!pixbuf) return NULL;
    image = image_from_pixbuf(pixbuf, 1);
    g_object_unref(pixbuf);
    return image;
}

// ---------------------------------------------------------------------------------
// PNG

static gboolean write_png_content(FILE *fp, const void *content, char **reason) {
    const cs_image *image = content;
    png_error_state state;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &state, png_error_longjmp,
                                              png_ignore_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        *reason = g_strdup("out of memory");
        return FALSE;
    }
    if (setjmp(state.jump)) {
        png_destroy_write_struct(&png, &info);
        *reason = g_strdup(state.message);
        return FALSE;
    }
    png_init_io(png, fp);
    /* a plain PNG (no gamma or colour-space chunk), as cv2.imwrite writes */
    png_set_IHDR(png, info, (png_uint_32)image->width, (png_uint_32)image->height, 8,
                 image->channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    if (image->channels == 3) png_set_bgr(png);   /* our rows are BGR, PNG stores RGB */
    size_t stride = (size_t)image->width * (size_t)image->channels;
    for (int y = 0; y < image->height; y++) png_write_row(png, image->data + (size_t)y * stride);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return TRUE;
}

gboolean cs_image_save_png(const cs_image *image, const char *path, GError **error) {
    g_return_val_if_fail(path != NULL, FALSE);
    if (!image || !image->data || image->width < 1 || image->height < 1 ||
        (image->channels != 1 && image->channels != 3)) {
        g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                    "cannot write PNG %s: expected a non-empty 1-channel (gray) or 3-channel "
                    "(BGR) image", path);
        return FALSE;
    }
    return cs_write_atomically(path, "PNG image", write_png_content, image, error);
}

// ---------------------------------------------------------------------------------
// NPY

typedef struct {
    GString *header;
    const float *data;
    size_t count;
} npy_content;

static gboolean write_npy_content(FILE *fp, const void *content, char **reason) {
    const npy_content *npy = content;
    if (fwrite(npy->header->str, 1, npy->header->len, fp) != npy->header->len ||
        (npy->count && fwrite(npy->data, sizeof(float), npy->count, fp) != npy->count)) {
        *reason = g_strdup(g_strerror(errno));
        return FALSE;
    }
    return TRUE;
}

gboolean cs_write_npy_f32(const char *path, const float *data, int ndim, const int64_t *shape,
                          GError **error) {
    g_return_val_if_fail(path != NULL, FALSE);
    guint64 count = 1;
    gboolean valid = ndim >= 0 && ndim <= 32 && (ndim == 0 || shape);
    for (int d = 0; valid && d < ndim; d++)
        valid = shape[d] >= 0 && g_uint64_checked_mul(&count, count, (guint64)shape[d]) &&
                count <= G_MAXSIZE / sizeof(float);
    if (!valid || (count > 0 && !data)) {
        g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                    "cannot write array %s: invalid shape (%d dimensions) or no data", path, ndim);
        return FALSE;
    }

    /* NPY 1.0: magic, version, little-endian u16 header length, then a Python dict literal
     * padded with spaces and ended by '\n' so that the data starts at a multiple of 64. */
    GString *dict = g_string_new("{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (int d = 0; d < ndim; d++)
        g_string_append_printf(dict, "%s%" G_GINT64_FORMAT, d ? ", " : "", shape[d]);
    g_string_append(dict, ndim == 1 ? ",), }" : "), }");
    const gsize preamble = 10;   /* "\x93NUMPY", 2 version bytes, 2 length bytes */
    gsize total = (preamble + dict->len + 1 + 63) / 64 * 64;
    while (preamble + dict->len + 1 < total) g_string_append_c(dict, ' ');
    g_string_append_c(dict, '\n');

    GString *header = g_string_new_len("\x93NUMPY\x01\x00", 8);
    guint16 dict_len = GUINT16_TO_LE((guint16)dict->len);
    g_string_append_len(header, (const char *)&dict_len, 2);
    g_string_append_len(header, dict->str, (gssize)dict->len);
    g_string_free(dict, TRUE);

    npy_content content = {header, data, (size_t)count};
    gboolean ok = cs_write_atomically(path, "NumPy array", write_npy_content, &content, error);
    g_string_free(header, TRUE);
    return ok;
}
