#!/usr/bin/python3
"""expected_mask.py — the mask `condseg predict` should write, computed by the PyTorch
reference (tools/condseg_ref.py) instead of by condseg: the network of the weights' preset in
float64 at the input size the weights record, the probability resized back to the image's
size (cv2 INTER_LINEAR) and thresholded (> T), saved as a 0/255 PNG.

Used to make tests/data/default_model_expected.png, the stored expected mask of the shipped
default model (tests/test_default_model.py); the weights' SHA-256 goes beside it so that
the test can tell a stale expectation from a wrong prediction.

  expected_mask.py WEIGHTS IMAGE OUT.png [--threshold 0.5] [--sha256 FILE]
"""
import argparse
import hashlib
import os
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_golden import reference_outputs  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights")
    ap.add_argument("image")
    ap.add_argument("out", help="mask PNG (0/255) at the image's resolution")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--sha256", help="also write the weights' SHA-256 to this file")
    a = ap.parse_args()
    arch, preset, size, outs = reference_outputs(a.weights, a.image)
    prob = outs[0][0, 0]
    h, w = cv2.imread(a.image, cv2.IMREAD_COLOR).shape[:2]
    back = cv2.resize(prob.float().numpy(), (w, h), interpolation=cv2.INTER_LINEAR)
    mask = np.where(back > a.threshold, 255, 0).astype(np.uint8)
    # The mask is near 0.5 only along its edge; say how close the closest pixel came, so a
    # reader of the test knows how many pixels float32 rounding could flip.
    margin = float(np.abs(back - a.threshold).min())
    tmp = a.out + ".tmp.png"
    if not cv2.imwrite(tmp, mask):
        raise SystemExit(f"cannot write {a.out}")
    os.replace(tmp, a.out)
    if a.sha256:
        with open(a.weights, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        with open(a.sha256, "w") as f:
            f.write(f"{digest}  {os.path.basename(a.weights)}\n")
    print(f"{a.out}: {w}x{h}, {int((mask > 0).sum())} foreground pixels "
          f"({arch}, {preset}, input {size}); closest |p - T| = {margin:.1e}")


if __name__ == "__main__":
    main()
