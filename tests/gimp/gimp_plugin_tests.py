#!/usr/bin/env python3
"""gimp_plugin_tests.py — the non-GIMP half of the GIMP plug-in tests (GIMP 2.10 and 3).

  prepare  writes the test images (RGB 8-bit, RGBA 16-bit, gray, indexed PNGs made from
           Kvasir-SEG JPEGs), runs `condseg predict` on each for the reference masks and
           probabilities, and writes the Script-Fu case list (batch.scm) that
           gimp2_cases.scm / gimp3_cases.scm run inside GIMP;
  check    compares what the plug-in wrote with the references, checks the report lines
           GIMP printed and prints one line per case. Exit status 1 when any check fails.

The network's weights are random (the golden fixtures), which gives arbitrary but fixed
masks: enough for pixel identity. Each image's threshold is the median of its probability
plane, so that its mask is about half foreground and a wrong threshold shows.

Cases run with the plug-in's default device unless they name one ("auto", "cpu", "cuda");
the reference of a device case is `condseg predict --device` with the same device. What
"cuda" must do is learnt from that same build's `condseg predict --device cuda`: where it
fails (no GPU, or a build without CUDA) the plug-in must fail with the same reason and
leave the image as it was; where it runs, the plug-in must give its mask.
"""
import argparse
import json
import os
import re
import shlex
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np

OUTPUTS = ["layer-mask", "selection", "probability-layer", "uncertainty-layer",
           "sid-uncertainty-layer"]
# Plane of `condseg predict --prob --all-outputs` each map output is made from (the
# uncertainty layer: the binary entropy of the mask probability).
NPY_PLANE = {"probability-layer": 0, "uncertainty-layer": 0, "sid-uncertainty-layer": 3}
MAP_OUTPUTS = tuple(NPY_PLANE)
OFFSET = (7, 5)   # where the "offset" cases move the layer (gimp2_cases.scm)


# ---- test images ----------------------------------------------------------------------

def write_indexed_png(path, bgr):
    """An 8-bit palette PNG (252 colours, a 6x7x6 cube): GIMP opens it as an indexed
    image, condseg (gdk-pixbuf) as the palette's RGB values."""
    levels = np.array([6, 7, 6])
    rgb = bgr[:, :, ::-1].astype(np.float64) / 255.0
    q = np.rint(rgb * (levels - 1)).astype(np.int64)
    index = ((q[:, :, 0] * 7 + q[:, :, 1]) * 6 + q[:, :, 2]).astype(np.uint8)
    palette = bytearray()
    for r in range(6):
        for g in range(7):
            for b in range(6):
                palette += bytes([round(r * 255 / 5), round(g * 255 / 6), round(b * 255 / 5)])

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    h, w = index.shape
    raw = b"".join(b"\x00" + index[y].tobytes() for y in range(h))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0)))
        f.write(chunk(b"PLTE", bytes(palette)))
        f.write(chunk(b"IDAT", zlib.compress(raw, 9)))
        f.write(chunk(b"IEND", b""))


def make_images(kvasir, indir):
    """Four Kvasir-SEG validation images (not the golden one), one per pixel type."""
    with open(os.path.join(kvasir, "val.txt")) as f:
        ids = [line.strip() for line in f if line.strip()][1:5]
    jpegs = [os.path.join(kvasir, "images", i + ".jpg") for i in ids]
    images = {"jpeg": jpegs[0]}
    # RGB 8-bit: the JPEG decoded as OpenCV (and condseg) decode it, stored losslessly.
    images["rgb8"] = os.path.join(indir, "rgb8.png")
    cv2.imwrite(images["rgb8"], cv2.imread(jpegs[0], cv2.IMREAD_COLOR))
    # RGBA 16-bit: v * 257 keeps the 8-bit values exact for both readers; the alpha ramp
    # (0 at the left edge) shows that alpha is ignored, as cv2.imread ignores it.
    bgr = cv2.imread(jpegs[1], cv2.IMREAD_COLOR).astype(np.uint16) * 257
    h, w = bgr.shape[:2]
    alpha = np.tile(np.linspace(0, 65535, w).round().astype(np.uint16), (h, 1))
    images["rgba16"] = os.path.join(indir, "rgba16.png")
    cv2.imwrite(images["rgba16"], np.dstack([bgr, alpha]))
    images["gray8"] = os.path.join(indir, "gray8.png")
    cv2.imwrite(images["gray8"], cv2.imread(jpegs[2], cv2.IMREAD_GRAYSCALE))
    images["indexed"] = os.path.join(indir, "indexed.png")
    write_indexed_png(images["indexed"], cv2.imread(jpegs[3], cv2.IMREAD_COLOR))
    return images


# ---- condseg predict --------------------------------------------------------------------

def condseg_predict(condseg, weights, image, threshold, mask, npy=None, device=None,
                    precision=None, tta=False):
    cmd = shlex.split(condseg) + ["predict", "-w", weights, "-t", threshold, "-o", mask]
    if tta:
        cmd += ["--tta"]
    if npy:
        cmd += ["--prob", npy, "--all-outputs"]
    if device:
        cmd += ["--device", device]
    if precision:
        cmd += ["--precision", precision]
    subprocess.run(cmd + [image], check=True, stdout=subprocess.DEVNULL)


def cuda_failure(condseg, weights, image, mask):
    """Why `condseg predict --device cuda` fails in this build ("no NVIDIA GPU found (...)",
    "condseg was built without CUDA support; ..."), or None when it runs (mask written)."""
    cmd = shlex.split(condseg) + ["predict", "-w", weights, "-o", mask, "--device", "cuda", image]
    run = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if run.returncode == 0:
        return None
    m = re.search(r"--device: (.*)", run.stderr)
    if not m:
        raise RuntimeError(f"condseg predict --device cuda failed without a device reason: "
                           f"{run.stderr.strip()}")
    return m.group(1).strip()


def median_threshold(npy):
    return "%.4f" % float(np.median(np.load(npy)[0]))


def entropy_bits(p):
    """The uncertainty layer's values: -(p log2 p + (1 - p) log2(1 - p)), 0 at p = 0 and 1."""
    p = np.clip(p.astype(np.float64), 0, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -(np.where(p > 0, p * np.log2(p), 0) + np.where(p < 1, (1 - p) * np.log2(1 - p), 0))


# ---- prepare ---------------------------------------------------------------------------

def scheme_string(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def prepare(args):
    work = args.work
    for d in ("in", "ref", "out"):
        os.makedirs(os.path.join(work, d), exist_ok=True)
    images = make_images(args.kvasir, os.path.join(work, "in"))
    invalid = os.path.join(work, "in", "invalid.safetensors")
    with open(invalid, "w") as f:
        f.write("not a safetensors file\n")

    refs = {}
    for kind in ("rgb8", "rgba16", "gray8", "indexed", "jpeg"):
        npy = os.path.join(work, "ref", kind + ".npy")
        scratch = os.path.join(work, "ref", kind + ".t05.png")
        condseg_predict(args.condseg, args.full, images[kind], "0.5", scratch, npy)
        threshold = median_threshold(npy)
        mask = os.path.join(work, "ref", kind + ".mask.png")
        condseg_predict(args.condseg, args.full, images[kind], threshold, mask)
        refs[kind] = {"image": images[kind], "threshold": threshold, "mask": mask, "npy": npy}

    cases = []

    def device_ref(kind, device):
        """`condseg predict --device DEVICE`'s mask of the image, at its threshold."""
        mask = os.path.join(work, "ref", f"{kind}.{device}.mask.png")
        condseg_predict(args.condseg, args.full, refs[kind]["image"], refs[kind]["threshold"],
                        mask, device=device)
        return mask

    # `device` "" leaves the plug-in's device argument out (GIMP 3) or passes automatic, the
    # default (GIMP 2.10, whose Script-Fu needs every argument).
    def case(name, kind, output, prepare="plain", decoded="", weights=args.full, device="",
             ref_mask=None, precision="", tta=0, ref_npy=None):
        cases.append({"name": name, "type": "run", "kind": kind, "output": output,
                      "prepare": prepare, "threshold": refs[kind]["threshold"],
                      "weights": weights, "out": os.path.join(work, "out", name + ".png"),
                      "decoded": decoded, "device": device, "ref_mask": ref_mask,
                      "precision": precision, "tta": tta, "ref_npy": ref_npy})

    for kind in ("rgb8", "rgba16", "gray8"):
        for output in OUTPUTS[:4]:
            case(f"{kind}-{output}", kind, output)
    case("rgb8-sid-uncertainty-layer", "rgb8", "sid-uncertainty-layer")
    # Test-time augmentation: the mask and the maps of `condseg predict --tta`.
    tta_mask = os.path.join(work, "ref", "rgb8.tta.mask.png")
    tta_npy = os.path.join(work, "ref", "rgb8.tta.npy")
    condseg_predict(args.condseg, args.full, refs["rgb8"]["image"], refs["rgb8"]["threshold"],
                    tta_mask, tta_npy, tta=True)
    case("rgb8-tta-layer-mask", "rgb8", "layer-mask", tta=1, ref_mask=tta_mask)
    case("rgb8-tta-uncertainty-layer", "rgb8", "uncertainty-layer", tta=1, ref_mask=tta_mask,
         ref_npy=tta_npy)
    case("rgb8-float-linear-layer-mask", "rgb8", "layer-mask", "float-linear")
    case("rgb8-existing-mask-layer-mask", "rgb8", "layer-mask", "existing-mask")
    case("rgb8-offset-selection", "rgb8", "selection", "offset")
    case("rgb8-offset-probability-layer", "rgb8", "probability-layer", "offset")
    case("indexed-layer-mask", "indexed", "layer-mask")
    # No weights file: the default model, which the drivers point CONDSEG_WEIGHTS at.
    case("rgb8-default-weights-selection", "rgb8", "selection", weights="")
    case("jpeg-layer-mask", "jpeg", "layer-mask", "save-decoded",
         os.path.join(work, "out", "jpeg-decoded-by-gimp.png"))
    # The device named: the CPU's mask is the one before there was a choice; automatic runs
    # wherever condseg's automatic runs.
    case("rgb8-device-cpu-layer-mask", "rgb8", "layer-mask", device="cpu",
         ref_mask=device_ref("rgb8", "cpu"))
    case("rgba16-device-auto-selection", "rgba16", "selection", device="auto",
         ref_mask=device_ref("rgba16", "auto"))
    # The precision named: bf16's mask is `condseg predict --precision bf16`'s (bfloat16 on
    # a CPU with bf16 instructions, float32 elsewhere, in both).
    bf16_mask = os.path.join(work, "ref", "rgb8.bf16.mask.png")
    condseg_predict(args.condseg, args.full, refs["rgb8"]["image"], refs["rgb8"]["threshold"],
                    bf16_mask, precision="bf16")
    case("rgb8-precision-bf16-layer-mask", "rgb8", "layer-mask", device="cpu",
         ref_mask=bf16_mask, precision="bf16")
    case("rgb8-precision-fp32-selection", "rgb8", "selection", device="cpu",
         ref_mask=device_ref("rgb8", "cpu"), precision="fp32")

    def error_case(name, kind, weights, output, expect, target="layer", threshold=None,
                   device="", precision=""):
        cases.append({"name": name, "type": "error", "kind": kind, "output": output,
                      "weights": weights, "target": target, "expect": expect,
                      "threshold": threshold or refs[kind]["threshold"], "device": device,
                      "precision": precision, "tta": 0,
                      "before": os.path.join(work, "out", name + ".before.png"),
                      "after": os.path.join(work, "out", name + ".after.png")})

    # `expect`: the error message must hold one of these. GIMP 3 checks some arguments
    # itself before the plug-in runs (a file argument must exist, a number be in range).
    error_case("error-missing-weights", "rgb8", os.path.join(work, "in", "missing.safetensors"),
               "layer-mask", ["cannot use the weights", "for argument 'weights'"])
    error_case("error-invalid-weights", "rgb8", invalid, "selection", ["cannot use the weights"])
    error_case("error-sid-uncertainty-stage1", "rgb8", args.stage1, "sid-uncertainty-layer",
               ["needs full ConDSeg weights"])
    error_case("error-indexed-probability", "indexed", args.full, "probability-layer",
               ["indexed image cannot hold"])
    error_case("error-mask-on-channel", "rgb8", args.full, "layer-mask",
               ["needs a layer"], target="channel")
    error_case("error-threshold", "gray8", args.full, "layer-mask",
               ["threshold must be", "has value 1.500000 out of range"], threshold="1.5")
    # GIMP 2.10 passes a number no device has, which the plug-in refuses (gimp2_cases.scm);
    # GIMP 3 checks the choice itself: device is argument 6 of the positional call.
    error_case("error-unknown-device", "gray8", args.full, "layer-mask",
               ["ConDSeg: unknown device 99", "Invalid value for argument 6"], device="bogus")
    # Likewise for the precision: 2.10 passes 99; in GIMP 3 it is argument 7.
    error_case("error-unknown-precision", "gray8", args.full, "layer-mask",
               ["ConDSeg: unknown precision 99", "Invalid value for argument 7"],
               device="auto", precision="bogus")
    cuda_mask = os.path.join(work, "ref", "rgb8.cuda.mask.png")
    cuda_reason = cuda_failure(args.condseg, args.full, refs["rgb8"]["image"], cuda_mask)
    if cuda_reason:
        error_case("error-device-cuda", "rgb8", args.full, "layer-mask", [cuda_reason],
                   device="cuda")
        cases[-1]["one_message"] = True
    else:
        case("rgb8-device-cuda-layer-mask", "rgb8", "layer-mask", device="cuda",
             ref_mask=device_ref("rgb8", "cuda"))

    # Nothing found: a polyp-free frame with the default model (which must find nothing
    # there: checked here, so that the case cannot pass vacuously), and a threshold of 1,
    # which no probability exceeds. Mask outputs must leave the image exactly as it was.
    empty_ref = os.path.join(work, "ref", "empty.mask.png")
    condseg_predict(args.condseg, args.default_model, args.empty_image, "0.5", empty_ref)
    if cv2.imread(empty_ref, cv2.IMREAD_GRAYSCALE).max() != 0:
        raise RuntimeError(f"the default model marks something in {args.empty_image}: "
                           "choose a frame where it finds nothing")
    refs["empty"] = {"image": args.empty_image, "threshold": "0.5", "mask": empty_ref}

    def empty_case(name, kind, weights, threshold, output):
        cases.append({"name": name, "type": "empty", "kind": kind, "output": output,
                      "weights": weights, "threshold": threshold, "device": "",
                      "precision": "", "tta": 0})

    for output in ("layer-mask", "selection", "probability-layer"):
        empty_case(f"empty-{output}", "empty", args.default_model, "0.5", output)
    empty_case("rgb8-threshold-1-selection", "rgb8", args.full, "1.0", "selection")
    # Last values from an earlier GIMP session (GIMP 2.10: the plug-in's persistent
    # parasite, stored by the driver before the batch's session; GIMP 3 keeps them itself).
    cases.append({"name": "last-values-selection", "type": "last-values", "kind": "rgb8",
                  "output": "selection", "prepare": "plain", "weights": args.full,
                  "threshold": refs["rgb8"]["threshold"], "device": "cpu", "precision": "fp32",
                  "out": os.path.join(work, "out", "last-values-selection.png"),
                  "decoded": "", "ref_mask": device_ref("rgb8", "cpu")})
    last = cases[-1]
    keyfile = (f"[plug-in-condseg]\nweights={last['weights']}\nthreshold={last['threshold']}\n"
               f"output={last['output']}\ndevice={last['device']}\nprecision={last['precision']}\n")
    with open(os.path.join(work, "remember.scm"), "w") as f:
        f.write("; generated by gimp_plugin_tests.py prepare: the last values, stored as the\n"
                "; GIMP 2.10 plug-in stores them (a persistent global parasite)\n")
        f.write(f'(gimp-attach-parasite (list "plug-in-condseg-last-values" 1 '
                f'{scheme_string(keyfile)}))\n')
    # GIMP 3: the procedure config's last values, as GIMP writes them after an interactive
    # run (GIMP3_DIRECTORY/plug-in-settings/GimpProcedureConfigRun-plug-in-condseg.last).
    with open(os.path.join(work, "gimp3.last"), "w") as f:
        # A file argument is stored as its URI.
        uri = "file://" + os.path.abspath(last["weights"])
        f.write(f"# settings\n\n(weights {scheme_string(uri)})\n"
                f"(threshold {last['threshold']})\n(output {scheme_string(last['output'])})\n"
                f"(device {scheme_string(last['device'])})\n"
                f"(precision {scheme_string(last['precision'])})\n\n# end of settings\n")

    with open(os.path.join(work, "batch.scm"), "w") as f:
        f.write("; generated by gimp_plugin_tests.py prepare\n")
        for c in cases:
            path = scheme_string(refs[c["kind"]]["image"])
            common = (f'{scheme_string(c["name"])} {path} {scheme_string(c["weights"])} '
                      f'{c["threshold"]} {OUTPUTS.index(c["output"])} '
                      f'{scheme_string(c["device"])} {scheme_string(c["precision"])} '
                      f'{c.get("tta", 0)}')
            if c["type"] == "empty":
                f.write(f'(cs-empty-case {common})\n')
            elif c["type"] == "last-values":
                f.write(f'(cs-last-values-case {scheme_string(c["name"])} {path} '
                        f'{OUTPUTS.index(c["output"])} {scheme_string(c["out"])})\n')
            elif c["type"] == "run":
                f.write(f'(cs-case {common} {scheme_string(c["prepare"])} '
                        f'{scheme_string(c["out"])} {scheme_string(c["decoded"])})\n')
            else:
                f.write(f'(cs-error-case {common} {scheme_string(c["target"])} '
                        f'{scheme_string(c["before"])} {scheme_string(c["after"])})\n')
    with open(os.path.join(work, "cases.json"), "w") as f:
        json.dump({"refs": refs, "cases": cases}, f, indent=1)
    print(f"gimp_plugin_tests: {len(cases)} cases in {work}/batch.scm; thresholds " +
          ", ".join(f"{k} {v['threshold']}" for k, v in refs.items()) +
          f"; device cuda: {'fails: ' + cuda_reason if cuda_reason else 'runs'}")


# ---- check -----------------------------------------------------------------------------

def read_plane(path):
    """A written PNG as one float plane in [0, 1] and its number of levels (255, 65535)."""
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise FileNotFoundError(f"{path} was not written")
    if img.ndim == 3:
        if img.shape[2] >= 3 and not (np.array_equal(img[:, :, 0], img[:, :, 1]) and
                                      np.array_equal(img[:, :, 0], img[:, :, 2])):
            raise ValueError(f"{path}: the channels differ (expected a gray map)")
        img = img[:, :, 0]
    levels = 65535.0 if img.dtype == np.uint16 else 255.0
    return img.astype(np.float64) / levels, levels


def read_report(log):
    """The CS-RESULT lines as {case: {key: value}}, the CS-ERROR lines as {case: message}."""
    report, errors = {}, {}
    for line in log.splitlines():
        m = re.search(r"CS-RESULT (\S+) (.*)", line)
        if m:
            report[m.group(1)] = dict(kv.split("=", 1) for kv in m.group(2).split())
        m = re.search(r"CS-ERROR (\S+) (.*)", line)
        if m:
            errors[m.group(1)] = m.group(2).strip()
        for kind in ("VERDICT", "NAME"):
            m = re.search(rf"CS-{kind} (\S+) (.*)", line)
            if m:
                report.setdefault(m.group(1) + "-" + kind.lower(), m.group(2).strip())
    return report, errors


def check_run(c, refs, got, error, condseg, work):
    """Returns (failures, figures) for a run that must succeed."""
    fails, figures = [], []
    if got.get("status") != "success":
        return [f"status {got.get('status')}: {error}"], figures
    ref = refs[c["kind"]]
    plane, levels = read_plane(c["out"])
    src_offsets, src_size = got.get("source-offsets"), got.get("source-size")
    if got.get("returned-written") != "1":
        fails.append("the returned item is not the one written")
    output = c["output"]
    if output in ("layer-mask", "selection"):
        if got.get("layers-added") != "0" or got.get("channels-added") != "0":
            fails.append(f"layers/channels added: {got.get('layers-added')}/"
                         f"{got.get('channels-added')}")
        if c["prepare"] == "save-decoded":
            # GIMP's JPEG decoder is not OpenCV's: the strict reference is condseg on the
            # pixels GIMP decoded; agreement with condseg on the JPEG itself is a figure.
            mask_path = os.path.join(work, "ref", "jpeg-decoded-by-gimp.mask.png")
            condseg_predict(condseg, c["weights"], c["decoded"], c["threshold"], mask_path)
            ref_mask = cv2.imread(mask_path, cv2.IMREAD_GRAYSCALE) / 255.0
            jpeg_mask = cv2.imread(ref["mask"], cv2.IMREAD_GRAYSCALE) / 255.0
            decoded = cv2.imread(c["decoded"]).astype(int)
            pixel_diff = np.abs(decoded - cv2.imread(ref["image"]).astype(int))
            figures.append(f"vs condseg on the JPEG: {np.mean(plane == jpeg_mask) * 100:.2f}% "
                           f"equal (GIMP's JPEG decode differs from OpenCV's in "
                           f"{np.mean(pixel_diff.max(axis=2) > 0) * 100:.1f}% of pixels, "
                           f"max {pixel_diff.max()})")
        else:
            ref_mask = cv2.imread(c.get("ref_mask") or ref["mask"], cv2.IMREAD_GRAYSCALE) / 255.0
        if c["prepare"] == "offset" and output == "selection":
            canvas = np.zeros_like(plane)
            x, y = OFFSET
            h = min(ref_mask.shape[0], canvas.shape[0] - y)
            w = min(ref_mask.shape[1], canvas.shape[1] - x)
            canvas[y:y + h, x:x + w] = ref_mask[:h, :w]
            ref_mask = canvas
        if plane.shape != ref_mask.shape:
            return fails + [f"size {plane.shape} vs reference {ref_mask.shape}"], figures
        if not np.all((plane == 0) | (plane == 1)):
            fails.append("the mask is not binary")
        differing = int(np.sum(plane != ref_mask))
        figures.insert(0, f"{differing} of {plane.size} pixels differ from condseg predict "
                          f"({np.mean(ref_mask) * 100:.1f}% foreground)")
        if differing:
            fails.append(f"{differing} pixels differ")
    else:
        if got.get("layers-added") != "1":
            fails.append(f"layers added: {got.get('layers-added')}")
        if int(got.get("written-position", -9)) + 1 != int(got.get("source-position", -9)):
            fails.append("the new layer is not just above the drawable")
        if (got.get("offsets"), got.get("size")) != (src_offsets, src_size):
            fails.append(f"new layer at {got.get('offsets')} size {got.get('size')}, drawable "
                         f"at {src_offsets} size {src_size}")
        prob = np.load(c.get("ref_npy") or ref["npy"])[NPY_PLANE[output]]
        expected = cv2.resize(prob, (plane.shape[1], plane.shape[0]),
                              interpolation=cv2.INTER_LINEAR).astype(np.float64)
        if output == "uncertainty-layer":
            # The binary entropy of the probability at the drawable's size, unstretched.
            expected = entropy_bits(expected)
            name = c.get("layer_name") or ""
            if "entropy 0-1" not in name:
                fails.append(f"the layer name {name!r} does not say it is the entropy")
            figures.append(f"entropy {expected.min():.3f}-{expected.max():.3f}, name {name!r}")
        if output == "sid-uncertainty-layer":
            # Stretched from the plane's lowest to its highest value; the range in the name.
            lo, hi = float(prob.min()), float(prob.max())
            expected = np.clip((expected - lo) / (hi - lo), 0, 1)
            name = c.get("layer_name") or ""
            if f"SID uncertainty {lo:.3g}-{hi:.3g}" not in name:
                fails.append(f"the layer name {name!r} does not give the range "
                             f"{lo:.3g}-{hi:.3g}")
            figures.append(f"uncertainty range {lo:.3g}-{hi:.3g} stretched, name {name!r}")
        err = np.abs(plane - expected).max() * levels
        figures.append(f"max |layer - resized condseg --prob| = {err:.3f} of {levels:.0f} levels")
        if err > 0.5 + 1e-5 * levels:
            fails.append(f"map differs by {err:.3f} levels")
    return fails, figures


def check_verdict(c, refs, got, extra, verdict):
    """The marked share the plug-in returned and said, against condseg predict's mask at the
    same threshold; map layers in Screen mode at 75 %."""
    fails, figures = [], []
    ref = refs[c["kind"]]
    mask_path = c.get("ref_mask") or ref["mask"]
    if c["prepare"] == "save-decoded":   # condseg on the pixels GIMP decoded (check_run)
        mask_path = os.path.join(os.path.dirname(ref["mask"]), "jpeg-decoded-by-gimp.mask.png")
    mask = cv2.imread(mask_path, cv2.IMREAD_GRAYSCALE)
    percent = 100.0 * np.count_nonzero(mask) / mask.size
    got_percent = float(extra.get("percent", "nan"))
    if not abs(got_percent - percent) <= 1e-6 * max(1.0, percent):
        fails.append(f"marked {got_percent}% returned, condseg predict's mask {percent:.6f}%")
    said = "%.3f%%" % percent if 0 < percent < 0.1 else "%.1f%%" % percent
    want = f"{said} of the drawable marked at threshold {float(c['threshold']):.2f}"
    if not verdict or want not in verdict:
        fails.append(f"the verdict {verdict!r} does not say {want!r}")
    # Gray and indexed input run, with a warning (the network was trained on colour).
    warning = {"gray8": "Warning: this is a grayscale image",
               "indexed": "Warning: this is an indexed image"}.get(c["kind"])
    if verdict and warning and warning not in verdict:
        fails.append(f"no warning {warning!r} in the verdict")
    if verdict and not warning and "Warning" in verdict:
        fails.append("a warning in a colour image's verdict")
    said_tta = bool(verdict) and "test-time augmentation (2 runs)" in verdict
    if said_tta != bool(c.get("tta")):
        fails.append(f"the verdict {'says' if said_tta else 'does not say'} test-time "
                     f"augmentation (asked: {bool(c.get('tta'))})")
    if c["output"] in MAP_OUTPUTS:
        if extra.get("mode-screen") != "1" or abs(float(extra.get("opacity", 0)) - 75) > 1e-6:
            fails.append(f"map layer mode/opacity {extra}: expected Screen, 75")
    figures.append(f"verdict: {verdict}")
    return fails, figures


def check_empty(c, got, verdict):
    """A run that found nothing: success, 0 % returned, "No lesion found"; a mask output
    leaves the image unchanged and returns no item, a map output adds its layer."""
    fails = []
    if got.get("status") != "success":
        return [f"status {got.get('status')}"], []
    if float(got.get("percent", "nan")) != 0.0:
        fails.append(f"marked {got.get('percent')}%, expected 0")
    want = f"No lesion found at threshold {float(c['threshold']):.2f}"
    if not verdict or want not in verdict:
        fails.append(f"the verdict {verdict!r} does not say {want!r}")
    if c["output"] in ("layer-mask", "selection"):
        if got.get("unchanged") != "1" or got.get("dirty") != "0":
            fails.append(f"the image changed: {got}")
        if int(got.get("returned", 0)) > 0:
            fails.append(f"returned item {got.get('returned')}, expected none")
    elif got.get("layers-added") != "1":
        fails.append(f"layers added: {got.get('layers-added')}")
    elif "no lesion" not in (c.get("layer_name") or ""):
        fails.append(f"the layer name {c.get('layer_name')!r} does not say no lesion")
    return fails, [f"verdict: {verdict}; dirty {got.get('dirty')}, layers added "
                   f"{got.get('layers-added')}, mask {got.get('mask')}"]


def check_error(c, got, error):
    fails = []
    if got.get("status") != "error":
        fails.append(f"status {got.get('status')}, expected an error")
    if got.get("unchanged") != "1" or got.get("dirty") != "0":
        fails.append(f"image changed: {got}")
    before, _ = read_plane_any(c["before"])
    after, _ = read_plane_any(c["after"])
    if before.shape != after.shape or not np.array_equal(before, after):
        fails.append("the layer's pixels changed")
    if not error or not any(e in error for e in c["expect"]):
        fails.append(f"the error message {error!r} holds none of {c['expect']}")
    elif c.get("one_message") and error.count("ConDSeg: ") != 1:
        fails.append(f"the error message {error!r} is not one ConDSeg message")
    return fails, [f"error status, image unchanged (dirty {got.get('dirty', '?')}, "
                   f"{got.get('layers', '?')} layer(s), {got.get('channels', '?')} channel(s), "
                   f"selection empty {got.get('selection-empty', '?')}, mask "
                   f"{got.get('mask', '?')}, pixels equal); error: {error}"]


def read_plane_any(path):
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise FileNotFoundError(f"{path} was not written")
    return img, img.dtype


def check(args):
    with open(os.path.join(args.work, "cases.json")) as f:
        spec = json.load(f)
    with open(args.log, errors="replace") as f:
        log = f.read()
    report, errors = read_report(log)
    n_failed = 0
    for c in spec["cases"]:
        got = report.get(c["name"])
        try:
            if got is None:
                fails, figures = ["no report from GIMP (the batch stopped before it?)"], []
            elif c["type"] in ("run", "last-values"):
                c["layer_name"] = report.get(c["name"] + "-name")
                fails, figures = check_run(c, spec["refs"], got, errors.get(c["name"]),
                                           args.condseg, args.work)
                if c["type"] == "run" and got.get("status") == "success":
                    more, extra = check_verdict(c, spec["refs"], got,
                                                report.get(c["name"] + "-extra", {}),
                                                report.get(c["name"] + "-verdict"))
                    fails, figures = fails + more, figures + extra
            elif c["type"] == "empty":
                c["layer_name"] = report.get(c["name"] + "-name")
                fails, figures = check_empty(c, got, report.get(c["name"] + "-verdict"))
            else:
                fails, figures = check_error(c, got, errors.get(c["name"]))
        except (OSError, ValueError) as e:
            fails, figures = [str(e)], []
        n_failed += bool(fails)
        print(f"{'FAIL' if fails else 'ok  '} {c['name']}: " + "; ".join(fails + figures))
    total = len(spec["cases"])
    print(f"gimp_plugin_tests: {total - n_failed} of {total} cases passed")
    return 1 if n_failed else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--work", required=True)
    p.add_argument("--kvasir", required=True, help="the kvasir-seg folder")
    p.add_argument("--full", required=True, help="full ConDSeg weights")
    p.add_argument("--stage1", required=True, help="stage-1 weights")
    p.add_argument("--condseg", required=True, help="command that runs condseg (shell words)")
    p.add_argument("--default-model", required=True,
                   help="the default model's weights (models/condseg-default.safetensors)")
    p.add_argument("--empty-image", required=True,
                   help="a polyp-free frame in which the default model finds nothing")
    c = sub.add_parser("check")
    c.add_argument("--work", required=True)
    c.add_argument("--log", required=True, help="GIMP's output")
    c.add_argument("--condseg", required=True)
    args = parser.parse_args()
    return prepare(args) if args.command == "prepare" else check(args)


if __name__ == "__main__":
    sys.exit(main() or 0)
