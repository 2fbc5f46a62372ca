#!/usr/bin/python3
"""uncertainty_montage.py — the picture of the README's "Uncertainty" section: for a few
Kvasir-SEG images, one row each of

  the frame with the predicted mask's outline (green, as `condseg predict --overlay`) and
  the ground truth's (blue) | the uncertainty condseg shows (`--uncertainty`: the binary
  entropy of the mask probability) | the same with --tta | SID's raw uncertainty output
  (`--prob --all-outputs`, plane 4), stretched from its lowest to its highest value

made by the condseg program itself; prints each map's range and how much of the
uncertainty lies on the prediction's errors.

Usage: uncertainty_montage.py --condseg EXE --weights W --data KVASIR_DIR --out FILE.png ID...
"""
import argparse
import os
import subprocess
import sys
import tempfile

import cv2
import numpy as np

TILE = 200           # each tile's height, in pixels (the label strip comes on top)
LABEL = 16
GT_BGR = (255, 96, 0)


def predict(exe, weights, image, tmp, tta):
    tag = "tta" if tta else "plain"
    paths = {k: os.path.join(tmp, f"{tag}.{k}") for k in ("mask.png", "overlay.png", "unc.png", "npy")}
    args = [exe, "predict", "-w", weights, "-o", paths["mask.png"], "--overlay",
            paths["overlay.png"], "--uncertainty", paths["unc.png"], "--prob", paths["npy"],
            "--all-outputs", image] + (["--tta"] if tta else [])
    p = subprocess.run(args, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"condseg predict failed on {image}: {p.stderr.strip()}")
    return (cv2.imread(paths["mask.png"], cv2.IMREAD_GRAYSCALE),
            cv2.imread(paths["overlay.png"]),
            cv2.imread(paths["unc.png"], cv2.IMREAD_GRAYSCALE), np.load(paths["npy"]))


def tile(img, label):
    h, w = img.shape[:2]
    t = cv2.resize(img, (round(w * TILE / h), TILE), interpolation=cv2.INTER_AREA)
    if t.ndim == 2:
        t = cv2.cvtColor(t, cv2.COLOR_GRAY2BGR)
    strip = np.full((LABEL, t.shape[1], 3), 32, np.uint8)
    cv2.putText(strip, label, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (255, 255, 255), 1,
                cv2.LINE_AA)
    return np.pad(np.vstack([strip, t]), ((0, 0), (0, 4), (0, 0)))


def row(exe, weights, data, image_id, tmp):
    image = os.path.join(data, "images", image_id + ".jpg")
    truth = cv2.imread(os.path.join(data, "masks", image_id + ".jpg"), cv2.IMREAD_GRAYSCALE) > 127
    mask, overlay, unc, prob = predict(exe, weights, image, tmp, tta=False)
    _, _, unc_tta, _ = predict(exe, weights, image, tmp, tta=True)
    on = truth.astype(np.uint8)
    edge = on - cv2.erode(on, np.ones((5, 5), np.uint8), borderType=cv2.BORDER_CONSTANT,
                          borderValue=0)
    overlay[edge > 0] = GT_BGR
    pred = mask > 0
    dice = 2 * (pred & truth).sum() / max(1, pred.sum() + truth.sum())
    wrong = pred != truth
    u = unc.astype(np.float64) / 255
    on_errors = u[wrong].sum() / max(u.sum(), 1e-12)
    sid = cv2.resize(prob[3], (mask.shape[1], mask.shape[0]), interpolation=cv2.INTER_LINEAR)
    lo, hi = float(prob[3].min()), float(prob[3].max())
    sid_img = np.uint8(np.round(255 * (sid - lo) / (hi - lo))) if hi > lo else np.zeros_like(mask)
    print(f"{image_id}: Dice {dice:.3f}; entropy {u.min():.3f}..{u.max():.3f} (mean {u.mean():.3f}, "
          f"{100 * on_errors:.0f}% of it on the {100 * wrong.mean():.1f}% wrong pixels), with TTA "
          f"{unc_tta.min() / 255:.3f}..{unc_tta.max() / 255:.3f}; SID raw {lo:.2e}..{hi:.2e}")
    return np.hstack([tile(overlay, f"Dice {dice:.2f}: mask green, truth blue"),
                      tile(unc, f"entropy, {100 * on_errors:.0f}% on errors"),
                      tile(unc_tta, "entropy, --tta"),
                      tile(sid_img, f"SID {lo:.0e}-{hi:.0e}, stretched")])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--condseg", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", required=True, help="Kvasir-SEG folder")
    ap.add_argument("--out", required=True)
    ap.add_argument("ids", nargs="+")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="condseg-montage-") as tmp:
        rows = [row(a.condseg, a.weights, a.data, i, tmp) for i in a.ids]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    part = a.out + ".part.png"
    cv2.imwrite(part, np.vstack(rows), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    os.replace(part, a.out)
    print(f"{a.out}: {os.path.getsize(a.out) / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
