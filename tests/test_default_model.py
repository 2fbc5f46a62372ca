#!/usr/bin/python3
"""test_default_model.py — the default model shipped in models/condseg-default.safetensors.

  * the file: under 25 MB, float tensors stored as float16 (float32 only where a value
    exceeds float16's range), metadata naming the network
    (condseg.arch = condseg, condseg.preset = condseg-compact, condseg.input_size = 256) and
    how it was trained (condseg.trained_on, condseg.recipe);
  * `condseg info` reads that metadata back;
  * `condseg predict IMAGE` without -w finds the model by itself (from the build tree) and
    its mask of a real Kvasir-SEG validation image equals the stored expected mask
    (tests/data/default_model_expected.png), which the PyTorch reference made from the same
    weights (tools/expected_mask.py), up to a few pixels on the mask's edge where the
    probability is within float32 rounding of the threshold;
  * `condseg predict --tta` (the image and its half-turned copy): its four
    outputs (--prob --all-outputs) equal the PyTorch reference's mean over the same views
    (tools/make_golden.py prob --tta hv), and its --uncertainty PNG is the binary entropy
    of the mask probability resized to the image, computed here directly;
  * -w still overrides the default.

Usage: test_default_model.py --condseg EXE --data KVASIR_DIR
"""
import argparse
import hashlib
import os
import subprocess
import sys
import tempfile

import cv2
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import st_io  # noqa: E402
import cs_test  # noqa: E402
from cs_test import check, failures  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WEIGHTS = os.path.join(ROOT, "models", "condseg-default.safetensors")
EXPECTED = os.path.join(HERE, "data", "default_model_expected.png")
EXPECTED_SHA = os.path.join(HERE, "data", "default_model_expected.sha256")
# The image of the stored expected mask: a validation image (never seen in training).
IMAGE_ID = "cju0s690hkp960855tjuaqvv0"
# Pixels allowed to differ, all of them on the expected mask's edge.
MAX_EDGE_PIXELS = 20
# The views `condseg predict --tta` averages (CS_TTA_DEFAULT), as make_golden.py names them.
TTA_VIEWS = "hv"
PROB_TOL = 1e-4


def run(args):
    env = dict(os.environ)
    env.pop("CONDSEG_WEIGHTS", None)   # the default must be found without help
    return cs_test.run(args, env=env)


def entropy_bits(p):
    p = np.clip(p.astype(np.float64), 0, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(p > 0, p * np.log2(p), 0) + np.where(p < 1, (1 - p) * np.log2(1 - p), 0))
    return h


def check_tta_and_uncertainty(exe, image, tmp):
    """--tta against the PyTorch reference's mean over the same views; --uncertainty against
    the entropy of the resized mask probability."""
    npy, unc = os.path.join(tmp, "tta.npy"), os.path.join(tmp, "unc.png")
    rc, out, err = run([exe, "predict", "--tta", "--prob", npy, "--all-outputs",
                        "--uncertainty", unc, "-o", os.path.join(tmp, "tta.png"), image])
    if not check(rc == 0, f"condseg predict --tta --uncertainty ({err.strip()[-300:]})"):
        return
    ref_npy = os.path.join(tmp, "tta_ref.npy")
    p = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "tools", "make_golden.py"),
                        "prob", "--weights", WEIGHTS, "--image", image, "--out", ref_npy,
                        "--all-outputs", "--tta", TTA_VIEWS], capture_output=True, text=True)
    if check(p.returncode == 0, f"reference TTA computed ({p.stderr.strip()[-200:]})"):
        got, ref = np.load(npy), np.load(ref_npy)
        err = float(np.abs(got - ref).max()) if got.shape == ref.shape else float("inf")
        check(err <= PROB_TOL, f"--tta's four outputs equal the reference's mean over the "
              f"views {TTA_VIEWS}: max |diff| {err:.2e} <= {PROB_TOL} ({got.shape})")
        plain = subprocess.run([exe, "predict", "--prob", os.path.join(tmp, "plain.npy"), "-o",
                                os.path.join(tmp, "plain.png"), image], capture_output=True)
        if plain.returncode == 0:
            moved = float(np.abs(np.load(os.path.join(tmp, "plain.npy"))[0] - got[0]).max())
            check(moved > 1e-3, f"--tta changes the mask probability (max change {moved:.3f})")
    u = cv2.imread(unc, cv2.IMREAD_UNCHANGED)
    h, w = cv2.imread(image).shape[:2]
    if check(u is not None and u.shape == (h, w) and u.dtype == np.uint8,
             f"--uncertainty: an 8-bit gray PNG at the image's size {w}x{h}"):
        prob = cv2.resize(np.load(npy)[0], (w, h), interpolation=cv2.INTER_LINEAR)
        want = np.round(255 * entropy_bits(prob))
        diff = float(np.abs(u.astype(np.float64) - want).max())
        check(diff <= 1, f"--uncertainty = 255 x binary entropy of the resized probability, "
              f"within a level ({diff:.0f}); range {u.min() / 255:.3f}..{u.max() / 255:.3f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--condseg", required=True)
    ap.add_argument("--data", required=True, help="Kvasir-SEG folder")
    a = ap.parse_args()

    # ---- the file and its metadata
    if not check(os.path.isfile(WEIGHTS), f"{WEIGHTS} is in the repository"):
        return 1
    size_mb = os.path.getsize(WEIGHTS) / 1e6
    check(size_mb < 25, f"default model is {size_mb:.1f} MB (< 25 MB)")
    tensors, meta = st_io.load_file(WEIGHTS)
    # float16, but for a tensor holding a value beyond its range (tools/to_float16.py)
    wide = sorted(name for name, t in tensors.items() if not name.endswith("num_batches_tracked")
                  and not (t.dtype == np.float16 or (t.dtype == np.float32 and
                                                     np.abs(t).max() > np.finfo(np.float16).max)))
    kept = sorted(name for name, t in tensors.items() if t.dtype == np.float32)
    check(not wide, f"parameters and statistics stored as float16 ({wide[:5]} are not; kept "
                    f"float32 for their range: {kept})")
    for key, want in (("condseg.arch", "condseg"), ("condseg.preset", "condseg-compact"),
                      ("condseg.input_size", "256")):
        check(meta.get(key) == want, f"metadata {key} = {meta.get(key)!r} (expected {want!r})")
    for key in ("condseg.trained_on", "condseg.recipe"):
        check(bool(meta.get(key)), f"metadata {key} = {meta.get(key)!r}")

    rc, out, err = run([a.condseg, "info", WEIGHTS])
    check(rc == 0 and "condseg-compact" in out and "256x256" in out,
          f"condseg info reports the preset and the input size ({err.strip()})")

    # ---- the expected mask belongs to these weights
    with open(WEIGHTS, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    with open(EXPECTED_SHA) as f:
        recorded = f.read().split()[0]
    if not check(digest == recorded,
                 "the stored expected mask was made from the shipped weights (if not: "
                 "tools/expected_mask.py models/condseg-default.safetensors IMAGE "
                 "tests/data/default_model_expected.png --sha256 "
                 "tests/data/default_model_expected.sha256)"):
        return 1

    # ---- prediction on a real image, default weights found without -w
    image = os.path.join(a.data, "images", IMAGE_ID + ".jpg")
    expected = cv2.imread(EXPECTED, cv2.IMREAD_GRAYSCALE)
    with tempfile.TemporaryDirectory(prefix="condseg-default-") as tmp:
        out_png = os.path.join(tmp, "mask.png")
        rc, out, err = run([a.condseg, "predict", "-o", out_png, image])
        check(rc == 0, f"condseg predict without -w ({err.strip()[-300:]})")
        mask = cv2.imread(out_png, cv2.IMREAD_GRAYSCALE) if rc == 0 else None
        if check(mask is not None and mask.shape == expected.shape,
                 f"mask at the image's resolution {expected.shape[::-1]}"):
            check(set(np.unique(mask)) <= {0, 255}, "mask is binary 0/255")
            differ = (mask > 0) != (expected > 0)
            # The expected mask's edge: pixels whose 3x3 neighbourhood holds both values.
            fg = (expected > 0).astype(np.uint8)
            kernel = np.ones((3, 3), np.uint8)
            edge = cv2.dilate(fg, kernel) != cv2.erode(fg, kernel)
            n, off_edge = int(differ.sum()), int((differ & ~edge).sum())
            check(n <= MAX_EDGE_PIXELS and off_edge == 0,
                  f"mask equals the reference's expected mask: {n} of {differ.size} pixels "
                  f"differ (at most {MAX_EDGE_PIXELS}), {off_edge} of them off the edge")
            truth = cv2.imread(os.path.join(a.data, "masks", IMAGE_ID + ".jpg"),
                               cv2.IMREAD_GRAYSCALE) > 127
            p = mask > 0
            dice = 2 * (p & truth).sum() / max(1, p.sum() + truth.sum())
            print(f"      (Dice with the ground truth of this validation image: {dice:.3f})")

        check_tta_and_uncertainty(a.condseg, image, tmp)

        # ---- -w overrides the default: a file that is not weights is refused by name
        other = os.path.join(tmp, "other.safetensors")
        with open(other, "wb") as f:
            f.write(b"not a weights file")
        rc, out, err = run([a.condseg, "predict", "-w", other, "-o", out_png, image])
        check(rc == 1 and other in err, f"-w overrides the default ({err.strip()[-200:]})")
    print("test_default_model: " + ("all checks passed" if not failures else f"{len(failures)} failed"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
