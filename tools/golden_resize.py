#!/usr/bin/python3
"""golden_resize.py — OpenCV reference results for condseg's image decoding and resizing.

Writes DIR/resize.safetensors (through tools/st_io.py) and the test images it refers to
under DIR/resize_images/:

  u8/<case>/src, u8/<case>/dst    uint8 [h, w, c]: an image and cv2.resize(..., INTER_LINEAR)
  f32/<case>/src, f32/<case>/dst  float32 [h, w]: a plane and cv2's float INTER_LINEAR resize
  load/<case>/bgr, load/<case>/gray  uint8: cv2.imread(path, IMREAD_COLOR / IMREAD_GRAYSCALE)
                                  of the file named by the metadata key "path:load/<case>"

The loading cases are real Kvasir-SEG images and masks (JPEG) plus small files written
here in PNG (8/16-bit, gray, alpha, palette, gAMA), BMP, TIFF and JPEG with an EXIF
orientation, so that the C side checks its loaders bit for bit against cv2.imread.

Usage: tools/golden_resize.py --out DIR --data KVASIR_DIR
"""
import argparse
import os
import struct
import sys
import zlib

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402

N_KVASIR_IMAGES = 8    # colour + gray decodes of images
N_KVASIR_MASKS = 50    # gray decodes of masks (bit-exactness of the libjpeg luma path)


def resize(img, w, h):
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)


def as_hwc(a):
    return a if a.ndim == 3 else a[:, :, None]


def uniform_noise(rng, *shape):
    return rng.integers(0, 256, shape, dtype=np.uint8)


def smooth_noise(rng, h, w, c):
    """An image with both gradients and fine detail, so that every weight matters."""
    y, x = np.mgrid[0:h, 0:w]
    base = 127.5 + 100 * np.sin(x[..., None] / 37.0 + np.arange(c)) * np.cos(y[..., None] / 23.0)
    return np.clip(base + rng.normal(0, 25, (h, w, c)), 0, 255).astype(np.uint8)


def png_bytes(width, height, bit_depth, color_type, rows, extra_chunks=()):
    """A PNG built by hand, for layouts cv2.imwrite cannot make (palette, gray+alpha, 1-bit)."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    raw = b"".join(b"\x00" + bytes(r) for r in rows)
    body = b"".join(chunk(t, d) for t, d in extra_chunks)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + body +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def jpeg_with_orientation(img, orientation):
    """cv2's JPEG with an Exif APP1 segment holding only the orientation tag (0x0112)."""
    ok, jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    tiff = (b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) +
            struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0))
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    jpeg = jpeg.tobytes()
    return jpeg[:2] + app1 + jpeg[2:]


def resize_cases(rng, kvasir):
    """(name, source, dst_w, dst_h) for the uint8 path."""
    cases = []
    img_path, mask_path = kvasir
    image = cv2.imread(img_path, cv2.IMREAD_COLOR)
    mask = cv2.imread(mask_path, cv2.IMREAD_GRAYSCALE)
    cases.append(("kvasir_image_to_256", image, 256, 256))
    cases.append(("kvasir_mask_to_256", mask, 256, 256))
    cases.append(("synthetic_7x5_to_256", uniform_noise(rng, 5, 7, 3), 256, 256))
    cases.append(("synthetic_256_to_621x530", smooth_noise(rng, 256, 256, 3), 621, 530))
    cases.append(("synthetic_1920x1072_to_256", smooth_noise(rng, 1072, 1920, 3), 256, 256))
    binary = (rng.random((1072, 1920)) < 0.3).astype(np.uint8) * 255
    cases.append(("binary_1920x1072_to_256_gray", binary, 256, 256))
    cases.append(("gray_256_to_1350x1080", smooth_noise(rng, 256, 256, 1)[:, :, 0], 1350, 1080))
    cases.append(("gray_3x3_to_2x2", uniform_noise(rng, 3, 3), 2, 2))
    cases.append(("color_3x3_to_2x2", uniform_noise(rng, 3, 3, 3), 2, 2))
    cases.append(("halve_512_to_256", smooth_noise(rng, 512, 512, 3), 256, 256))
    cases.append(("halve_gray_64x32_to_32x16", uniform_noise(rng, 32, 64), 32, 16))
    cases.append(("identity_10x10", uniform_noise(rng, 10, 10, 3), 10, 10))
    cases.append(("one_pixel_to_4x3", uniform_noise(rng, 1, 1, 3), 4, 3))
    cases.append(("row_9x1_to_4x1", uniform_noise(rng, 1, 9), 4, 1))
    cases.append(("column_1x9_to_1x4", uniform_noise(rng, 9, 1), 1, 4))
    cases.append(("row_5x1_to_1x1", uniform_noise(rng, 1, 5, 3), 1, 1))
    cases.append(("row_13x1_to_3x7", uniform_noise(rng, 1, 13), 3, 7))
    cases.append(("column_1x13_to_7x3", uniform_noise(rng, 13, 1, 3), 7, 3))
    cases.append(("to_one_pixel_37x23", uniform_noise(rng, 23, 37, 3), 1, 1))
    cases.append(("saturated_white_33x17_to_100x61", np.full((17, 33, 3), 255, np.uint8), 100, 61))
    cases.append(("four_channels_33x17_to_20x40", uniform_noise(rng, 17, 33, 4), 20, 40))
    cases.append(("odd_downscale_1001x777_to_255x257", smooth_noise(rng, 777, 1001, 3), 255, 257))
    return cases


def float_cases(rng):
    """(name, float32 plane, dst_w, dst_h) for the float path."""
    prob = rng.random((256, 256), dtype=np.float32)
    smooth = (smooth_noise(rng, 256, 256, 1)[:, :, 0] / 255.0).astype(np.float32)
    return [
        ("prob_256_to_621x530", prob, 621, 530),
        ("smooth_256_to_1920x1072", smooth, 1920, 1072),
        ("prob_256_to_128", prob, 128, 128),
        ("prob_600x500_to_256", rng.random((500, 600), dtype=np.float32), 256, 256),
        ("small_7x5_to_3x9", rng.standard_normal((5, 7)).astype(np.float32), 3, 9),
        ("one_pixel_to_4x4", np.array([[0.25]], np.float32), 4, 4),
        ("row_13x1_to_5x3", rng.random((1, 13), dtype=np.float32), 5, 3),
    ]


def write_test_images(folder, rng):
    """Small files in the formats the loaders must read; returns [(case, path)]."""
    os.makedirs(folder, exist_ok=True)
    files = []

    def add(name, path):
        files.append((name, path))

    color = smooth_noise(rng, 37, 53, 3)
    for ext in ("png", "bmp", "tiff"):
        p = os.path.join(folder, f"color.{ext}")
        assert cv2.imwrite(p, color)
        add(f"color_{ext}", p)
    gray = smooth_noise(rng, 29, 41, 1)[:, :, 0]
    for ext in ("png", "bmp"):
        p = os.path.join(folder, f"gray.{ext}")
        assert cv2.imwrite(p, gray)
        add(f"gray_{ext}", p)
    p = os.path.join(folder, "rgba.png")
    alpha = uniform_noise(rng, 37, 53, 1)
    assert cv2.imwrite(p, np.concatenate([color, alpha], axis=2))
    add("rgba_png", p)
    p = os.path.join(folder, "color16.png")
    assert cv2.imwrite(p, rng.integers(0, 65536, (23, 31, 3), dtype=np.uint16))
    add("color16_png", p)
    p = os.path.join(folder, "gray16.png")
    assert cv2.imwrite(p, rng.integers(0, 65536, (23, 31), dtype=np.uint16))
    add("gray16_png", p)

    # hand-made PNG layouts
    w, h = 19, 11
    palette = uniform_noise(rng, 16, 3)
    indices = rng.integers(0, 16, (h, w), dtype=np.uint8)
    trns = rng.integers(0, 256, 16, dtype=np.uint8)
    data = png_bytes(w, h, 8, 3, list(indices),
                     [(b"PLTE", palette.tobytes()), (b"tRNS", trns.tobytes())])
    p = os.path.join(folder, "palette_trns.png")
    open(p, "wb").write(data)
    add("palette_trns_png", p)
    gray_alpha = uniform_noise(rng, h, w, 2)
    p = os.path.join(folder, "gray_alpha.png")
    open(p, "wb").write(png_bytes(w, h, 8, 4, [r.tobytes() for r in gray_alpha]))
    add("gray_alpha_png", p)
    bits = rng.integers(0, 2, (h, w), dtype=np.uint8)
    p = os.path.join(folder, "gray_1bit.png")
    open(p, "wb").write(png_bytes(w, h, 1, 0, [np.packbits(r).tobytes() for r in bits]))
    add("gray_1bit_png", p)
    rgb = smooth_noise(rng, h, w, 3)
    p = os.path.join(folder, "rgb_gamma.png")   # a gAMA chunk changes libpng's gray conversion
    open(p, "wb").write(png_bytes(w, h, 8, 2, [r.tobytes() for r in rgb],
                                  [(b"gAMA", struct.pack(">I", 45455))]))
    add("rgb_gamma_png", p)

    p = os.path.join(folder, "gray.jpg")   # a 1-component JPEG
    assert cv2.imwrite(p, gray)
    add("gray_jpg", p)

    # JPEG with EXIF orientation: non-square so that a rotation shows
    photo = smooth_noise(rng, 24, 40, 3)
    for orientation in (3, 6, 8):
        p = os.path.join(folder, f"exif_orientation{orientation}.jpg")
        open(p, "wb").write(jpeg_with_orientation(photo, orientation))
        add(f"exif_orientation{orientation}_jpg", p)
    return files


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="golden directory")
    ap.add_argument("--data", required=True, help="the kvasir-seg folder (images/, masks/)")
    args = ap.parse_args()

    images_dir = os.path.join(args.data, "images")
    masks_dir = os.path.join(args.data, "masks")
    names = sorted(f for f in os.listdir(images_dir) if f.endswith(".jpg"))
    if len(names) < N_KVASIR_MASKS:
        sys.exit(f"golden_resize: expected at least {N_KVASIR_MASKS} images in {images_dir}")

    rng = np.random.default_rng(20250101)
    tensors, metadata = {}, {}

    # a real image of the dataset's most typical size (about 621x530)
    sized = [n for n in names[:100]
             if cv2.imread(os.path.join(images_dir, n)).shape[:2] in ((530, 621), (529, 622))]
    pick = sized[0] if sized else names[0]
    kvasir = (os.path.join(images_dir, pick), os.path.join(masks_dir, pick))
    for name, src, w, h in resize_cases(rng, kvasir):
        tensors[f"u8/{name}/src"] = as_hwc(src)
        tensors[f"u8/{name}/dst"] = as_hwc(resize(src, w, h))
    for name, src, w, h in float_cases(rng):
        tensors[f"f32/{name}/src"] = src
        tensors[f"f32/{name}/dst"] = resize(src, w, h)

    loads = []
    step = len(names) // N_KVASIR_IMAGES
    for n in names[::step][:N_KVASIR_IMAGES]:
        loads.append((f"kvasir_image_{n[:-4]}", os.path.join(images_dir, n), True))
    step = len(names) // N_KVASIR_MASKS
    for n in names[::step][:N_KVASIR_MASKS]:
        loads.append((f"kvasir_mask_{n[:-4]}", os.path.join(masks_dir, n), False))
    for name, path in write_test_images(os.path.join(args.out, "resize_images"), rng):
        loads.append((name, path, True))
    for name, path, with_color in loads:
        metadata[f"path:load/{name}"] = os.path.abspath(path)
        if with_color:
            tensors[f"load/{name}/bgr"] = cv2.imread(path, cv2.IMREAD_COLOR)
        tensors[f"load/{name}/gray"] = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        for kind in ("bgr", "gray"):
            key = f"load/{name}/{kind}"
            if key in tensors and tensors[key] is None:
                sys.exit(f"golden_resize: cv2.imread could not read {path}")

    os.makedirs(args.out, exist_ok=True)
    out = os.path.join(args.out, "resize.safetensors")
    st_io.save_file_atomic(tensors, out, metadata)
    print(f"golden_resize: wrote {len(tensors)} tensors to {out}")


if __name__ == "__main__":
    main()
