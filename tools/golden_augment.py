#!/usr/bin/python3
"""golden_augment.py — reference results for condseg's augmentations and sample pipeline.

Writes DIR/augment_golden.safetensors (through tools/st_io.py) with:

  rotate/<case>/src                    uint8 [h, w, c]: a Kvasir image or mask, or a
                                       synthetic image
  rotate/<case>/<interp>/<k>           uint8 [h, w, c]: what albumentations 1.3's Rotate
                                       computes for angle k of the case: cv2.warpAffine with
                                       cv2.getRotationMatrix2D((w/2 - 0.5, h/2 - 0.5), angle,
                                       1.0), dsize (w, h), INTER_LINEAR or INTER_NEAREST,
                                       BORDER_REFLECT_101
  photometric/input, photometric/<case>
                                       float32 [B, 3, H, W]: a batch of two real images
                                       (BGR / 255, 3x64x48) and torchvision 0.14's
                                       ColorJitter ops (in the case's order), grayscale and
                                       the (1, 7) Gaussian blur applied to it
  photometric_edge/input, photometric_edge/<case>
                                       the same on a synthetic 1x3x8x8 batch of quarter
                                       steps (ties between channels, gray pixels, 0 and 1)
  sample/<id>/image, y1, y2            float32: the original's preprocessing of a val
                                       sample without augmentation (cv2.imread, 255 - mask,
                                       cv2.resize to 256, / 255)

Metadata (JSON strings): "rotate" [{name, angles, interps}], "photometric" [{name, order,
brightness, contrast, saturation, hue, grayscale, sigma}] (factors exactly representable in
float32), "samples" {split, size, ids}.

Usage: tools/golden_augment.py --out DIR --data KVASIR_DIR
"""
import argparse
import json
import os
import sys

import cv2
import numpy as np
import torch
import torchvision
import torchvision.transforms.functional as TF

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402

ANGLES = [-90.0, -35.0, -12.3, 0.0, 0.7, 33.0, 90.0]
# real images: even size, odd height, odd width, both odd-ish (531 x 570)
KVASIR_ROTATE_IDS = [
    "cju1c0qb4tzi308355wtsnp0y",   # 622 x 530
    "cju0qkwl35piu0993l0dewei2",   # 622 x 529
    "cju17hw9hr9c5098800fu4u8e",   # 623 x 528
    "cju1cnnziug1l0835yh4ropyg",   # 570 x 531
]
SAMPLE_IDS = ["cju0s690hkp960855tjuaqvv0", "cju0sxqiclckk08551ycbwhno"]   # in val.txt
PHOTOMETRIC_IDS = ["cju0s690hkp960855tjuaqvv0", "cju0sr5ghl0nd08789uzf1raf"]


def rotate(img, angle, interp):
    """albumentations 1.3.1 functional.rotate, called as Rotate does (reflect-101)."""
    height, width = img.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2 - 0.5, height / 2 - 0.5), angle, 1.0)
    flags = cv2.INTER_LINEAR if interp == "linear" else cv2.INTER_NEAREST
    out = cv2.warpAffine(img, M=matrix, dsize=(width, height), flags=flags,
                         borderMode=cv2.BORDER_REFLECT_101, borderValue=None)
    return out.reshape(img.shape)


def hwc(a):
    return a if a.ndim == 3 else a[:, :, None]


def rotate_cases(data, rng):
    """(name, uint8 image, angles, interps)."""
    cases = []
    for i, ident in enumerate(KVASIR_ROTATE_IDS):
        image = cv2.imread(os.path.join(data, "images", ident + ".jpg"), cv2.IMREAD_COLOR)
        mask = cv2.imread(os.path.join(data, "masks", ident + ".jpg"), cv2.IMREAD_GRAYSCALE)
        if image is None or mask is None:
            sys.exit(f"golden_augment: cannot read {ident} under {data}")
        cases.append((f"kvasir_image_{ident}", image, ANGLES, ["linear"]))
        # masks are rotated with nearest neighbour; one also bilinear (1-channel path)
        cases.append((f"kvasir_mask_{ident}", mask, ANGLES,
                      ["nearest", "linear"] if i == 0 else ["nearest"]))
    more = ANGLES + [135.0, -179.9, 61.61, 1e-3]
    cases.append(("noise_7x5_bgr", rng.integers(0, 256, (5, 7, 3), dtype=np.uint8), more,
                  ["linear", "nearest"]))
    cases.append(("noise_48x64_gray", rng.integers(0, 256, (64, 48), dtype=np.uint8), more,
                  ["linear", "nearest"]))
    cases.append(("row_9x1_gray", rng.integers(0, 256, (1, 9), dtype=np.uint8), more,
                  ["linear", "nearest"]))
    cases.append(("column_1x33_bgr", rng.integers(0, 256, (33, 1, 3), dtype=np.uint8), more,
                  ["linear", "nearest"]))
    cases.append(("noise_2x2_bgr", rng.integers(0, 256, (2, 2, 3), dtype=np.uint8), more,
                  ["linear", "nearest"]))
    return cases


def f32(v):
    """v rounded to float32 and back: parameters exactly representable on the C side."""
    return float(np.float32(v))


def photometric_cases():
    ident = dict(brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0, grayscale=False,
                 sigma=0.1, order=[0, 1, 2, 3])
    cases = []

    def add(name, **kw):
        p = dict(ident)
        p.update(kw)
        for k in ("brightness", "contrast", "saturation", "hue", "sigma"):
            p[k] = f32(p[k])
        p["name"] = name
        cases.append(p)

    add("identity")                          # hue 0 still goes RGB -> HSV -> RGB
    add("brightness_up", brightness=1.27)
    add("brightness_down", brightness=0.71)
    add("contrast_up", contrast=1.3)
    add("contrast_down", contrast=0.7234)
    add("saturation_up", saturation=1.2345)
    add("saturation_down", saturation=0.7)
    add("hue_plus", hue=0.0731)
    add("hue_minus", hue=-0.1)
    add("hue_small", hue=-0.004)
    add("grayscale", grayscale=True)
    add("blur_0.4", sigma=0.4)
    add("blur_1.7", sigma=1.7)
    add("blur_3.0", sigma=3.0)
    add("jitter_3102", order=[3, 1, 0, 2], brightness=0.85, contrast=1.17, saturation=0.72,
        hue=-0.04, sigma=0.1)
    add("jitter_2301_gray_blur", order=[2, 3, 0, 1], brightness=1.21, contrast=0.78,
        saturation=1.29, hue=0.095, grayscale=True, sigma=1.3)
    add("jitter_0123_blur", order=[0, 1, 2, 3], brightness=1.3, contrast=1.3, saturation=0.7,
        hue=0.1, sigma=2.2)
    add("jitter_1320_blur", order=[1, 3, 2, 0], brightness=0.7, contrast=0.7, saturation=1.3,
        hue=-0.1, sigma=0.77)
    return cases


def photometric(x, p):
    """stage-1 strong_photometric with fixed parameters: torchvision 0.14 functional ops."""
    img = x
    ops = {0: lambda t: TF.adjust_brightness(t, p["brightness"]),
           1: lambda t: TF.adjust_contrast(t, p["contrast"]),
           2: lambda t: TF.adjust_saturation(t, p["saturation"]),
           3: lambda t: TF.adjust_hue(t, p["hue"])}
    for k in p["order"]:
        img = ops[k](img)
    if p["grayscale"]:
        img = TF.rgb_to_grayscale(img, num_output_channels=3)
    return TF.gaussian_blur(img, kernel_size=[1, 7], sigma=[p["sigma"], p["sigma"]])


def check_blur_is_vertical():
    """kernel_size (1, 7) is (kx, ky): a picture varying only along W must come through
    unchanged, one varying along H must not."""
    along_w = torch.rand(1, 3, 1, 16).expand(1, 3, 12, 16).contiguous()
    along_h = torch.rand(1, 3, 12, 1).expand(1, 3, 12, 16).contiguous()
    assert torch.allclose(TF.gaussian_blur(along_w, [1, 7], [2.0, 2.0]), along_w, atol=1e-6)
    assert not torch.allclose(TF.gaussian_blur(along_h, [1, 7], [2.0, 2.0]), along_h, atol=1e-3)


def sample(data, ident, size):
    """The original dataset's __getitem__ without augmentation (spec §1.2)."""
    image = cv2.imread(os.path.join(data, "images", ident + ".jpg"), cv2.IMREAD_COLOR)
    mask = cv2.imread(os.path.join(data, "masks", ident + ".jpg"), cv2.IMREAD_GRAYSCALE)
    background = 255 - mask
    image = cv2.resize(image, (size, size))
    image = (np.transpose(image, (2, 0, 1)) / 255.0).astype(np.float32)
    mask = (np.expand_dims(cv2.resize(mask, (size, size)), 0) / 255.0).astype(np.float32)
    background = (np.expand_dims(cv2.resize(background, (size, size)), 0) / 255.0).astype(np.float32)
    return image, mask, background


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="golden directory")
    ap.add_argument("--data", required=True, help="the kvasir-seg folder (images/, masks/)")
    args = ap.parse_args()
    if not torchvision.__version__.startswith("0.14"):
        print(f"golden_augment: warning: torchvision {torchvision.__version__}, the spec was "
              "checked against 0.14", file=sys.stderr)
    torch.set_num_threads(1)

    rng = np.random.default_rng(20250611)
    tensors, meta_rotate = {}, []
    for name, src, angles, interps in rotate_cases(args.data, rng):
        tensors[f"rotate/{name}/src"] = hwc(src)
        for interp in interps:
            for k, angle in enumerate(angles):
                tensors[f"rotate/{name}/{interp}/{k}"] = hwc(rotate(src, angle, interp))
        meta_rotate.append({"name": name, "angles": angles, "interps": interps})

    check_blur_is_vertical()
    cases = photometric_cases()
    batch = []
    for ident in PHOTOMETRIC_IDS:
        image = cv2.imread(os.path.join(args.data, "images", ident + ".jpg"), cv2.IMREAD_COLOR)
        image = cv2.resize(image, (48, 64))
        batch.append(np.transpose(image, (2, 0, 1)) / 255.0)
    x = torch.from_numpy(np.stack(batch).astype(np.float32))
    # ties between channels, gray pixels, exact 0 and 1: every branch of the HSV code
    edge = torch.from_numpy((rng.integers(0, 5, (1, 3, 8, 8)) / 4.0).astype(np.float32))
    for prefix, inp in (("photometric", x), ("photometric_edge", edge)):
        tensors[f"{prefix}/input"] = inp
        for p in cases:
            tensors[f"{prefix}/{p['name']}"] = photometric(inp.clone(), p)

    size = 256
    for ident in SAMPLE_IDS:
        image, y1, y2 = sample(args.data, ident, size)
        tensors[f"sample/{ident}/image"] = image
        tensors[f"sample/{ident}/y1"] = y1
        tensors[f"sample/{ident}/y2"] = y2

    metadata = {
        "rotate": json.dumps(meta_rotate),
        "photometric": json.dumps(cases),
        "samples": json.dumps({"split": "val", "size": size, "ids": SAMPLE_IDS}),
        "versions": json.dumps({"cv2": cv2.__version__, "torch": torch.__version__,
                                "torchvision": torchvision.__version__}),
    }
    os.makedirs(args.out, exist_ok=True)
    out = os.path.join(args.out, "augment_golden.safetensors")
    st_io.save_file_atomic(tensors, out, metadata)
    print(f"golden_augment: wrote {len(tensors)} tensors to {out}")


if __name__ == "__main__":
    main()
