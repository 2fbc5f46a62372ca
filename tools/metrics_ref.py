#!/usr/bin/python3
"""metrics_ref.py — reference values of the evaluation metrics (spec §7) for test_metrics.

Targets are real Kvasir-SEG validation masks preprocessed as §1.2 (cv2.imread grayscale,
cv2.resize to 256×256 INTER_LINEAR, /255 in double, stored float32; soft edges and JPEG
noise kept). Predictions are synthetic maps made from them: shifted, eroded, dilated,
blurred (many values near 0.5), the target itself, uniform noise, empty, full, and maps
holding exact 0.5 values (the thresholds are strict). Special cases: an empty target with
an empty / a non-empty / a full prediction, and a full target; with --negatives, real
all-black masks of polyp-free frames (nopolyp/) with an empty prediction and with marked
areas just under and just over the false-alarm threshold (1% of the frame).

The metrics are computed in NumPy (float64) from §7 directly — P = pred > 0.5,
G = target > 0.5, integer counts TP, nP, nG, ε = 1e-15 — and, as cross-checks, a second
time the way the original code does it (uint8 arrays, products and sums), and a third time
from the documented convention for empty maps without ε (a ratio 0/0 is worth 1: both
empty → every metric 1; empty mask, marked prediction → Dice = IoU = precision = F2 = 0,
recall 1; marked mask, empty prediction → Dice = IoU = recall = F2 = 0, precision 1).
All three must agree. A case is a false alarm when G is empty and P covers more than 1%
of the frame.

Output DIR/metrics_golden.safetensors:
  target      F32 [K,256,256]   the targets (y1)
  pred        F32 [K,256,256]   the predictions (probabilities)
  metrics     F64 [K,6]         per image, columns as metadata "columns":
                                jaccard, dice, recall, precision, accuracy, f2
  mean        F64 [6]           per-image mean over the K images (test.py averaging)
  batch_mean  F64 [6]           mean of the per-batch means, batches of metadata "batch"
                                images in file order, the last one smaller (training loops)
  false_alarm F64 [K]           1 where the case is a false alarm, else 0
metadata: columns, cases (JSON list of K names), batch, eps, ids.

Usage: metrics_ref.py --out DIR --data KVASIR_DIR [--masks 4] [--negatives NOPOLYP_DIR]
Run with /usr/bin/python3 (numpy, python3-opencv).
"""
import argparse
import json
import os
import sys
import time
from collections import OrderedDict

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402

SIZE = 256
EPS = 1e-15
COLUMNS = ["jaccard", "dice", "recall", "precision", "accuracy", "f2"]
BATCH = 4
FALSE_ALARM_AREA = 0.01


def load_target(path):
    """§1.2 steps 2, 5, 7: grayscale decode, INTER_LINEAR resize, /255 in double → float32."""
    m = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise SystemExit(f"cannot read mask {path}")
    m = cv2.resize(m, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    return (m.astype(np.float64) / 255.0).astype(np.float32)


def metrics_spec(pred, target):
    """§7 as written: strict thresholds, integer counts, ε in every ratio."""
    P = pred > 0.5
    G = target > 0.5
    tp = int(np.count_nonzero(P & G))
    n_p = int(np.count_nonzero(P))
    n_g = int(np.count_nonzero(G))
    jac = (tp + EPS) / (n_g + n_p - tp + EPS)
    dice = (2 * tp + EPS) / (n_g + n_p + EPS)
    rec = (tp + EPS) / (n_g + EPS)
    prec = (tp + EPS) / (n_p + EPS)
    f2 = 5.0 * (prec * rec) / (4.0 * prec + rec + EPS)
    acc = np.count_nonzero(P == G) / P.size
    return [jac, dice, rec, prec, acc, f2]


def metrics_upstream_style(pred, target):
    """The same numbers the way the original's calculate_metrics computes them: binarized
    uint8 vectors, products and sums, F-beta with beta = 2, accuracy = mean of equality."""
    y_true = (target > 0.5).astype(np.uint8).reshape(-1)
    y_pred = (pred > 0.5).astype(np.uint8).reshape(-1)
    inter = (y_true * y_pred).sum()
    union = y_true.sum() + y_pred.sum() - inter
    jac = (inter + 1e-15) / (union + 1e-15)
    dice = (2 * inter + 1e-15) / (y_true.sum() + y_pred.sum() + 1e-15)
    rec = (inter + 1e-15) / (y_true.sum() + 1e-15)
    prec = (inter + 1e-15) / (y_pred.sum() + 1e-15)
    beta = 2
    f2 = (1 + beta ** 2.) * (prec * rec) / float(beta ** 2 * prec + rec + 1e-15)
    acc = float(np.mean(y_true == y_pred))
    return [jac, dice, rec, prec, acc, f2]


def ratio(num, den):
    """num / den, with 0/0 worth 1 (nothing to find and nothing found)."""
    return 1.0 if den == 0 else num / den


def metrics_convention(pred, target):
    """The documented convention for empty maps, written without ε."""
    P = pred > 0.5
    G = target > 0.5
    tp, n_p, n_g = (int(np.count_nonzero(a)) for a in (P & G, P, G))
    jac, dice = ratio(tp, n_g + n_p - tp), ratio(2 * tp, n_g + n_p)
    rec, prec = ratio(tp, n_g), ratio(tp, n_p)
    f2 = 0.0 if prec + rec == 0 else 5.0 * prec * rec / (4.0 * prec + rec)
    return [jac, dice, rec, prec, np.count_nonzero(P == G) / P.size, f2]


def false_alarm(pred, target):
    return float(not (target > 0.5).any() and np.count_nonzero(pred > 0.5) / pred.size
                 > FALSE_ALARM_AREA)


def negative_cases(negatives, n_masks):
    """Real all-black masks of polyp-free frames with predictions around the 1% line."""
    ids = [line.strip() for line in open(os.path.join(negatives, "val.txt")) if line.strip()]
    limit = int(FALSE_ALARM_AREA * SIZE * SIZE)   # 655 pixels: 0.9995% of the frame
    cases = []
    for i in ids[:n_masks]:
        t = load_target(os.path.join(negatives, "masks", i + ".jpg"))
        if (t > 0.5).any():
            raise SystemExit(f"{negatives}: mask {i} is not empty")
        for name, marked in (("empty_pred", 0), ("just_under_1pct", limit),
                             ("just_over_1pct", limit + 1), ("large_blob", 5000)):
            p = np.zeros(SIZE * SIZE, np.float32)
            p[:marked] = 0.75
            cases.append((f"negative_{i}:{name}", t, p.reshape(SIZE, SIZE)))
    return cases


def synthetic_predictions(t, rng):
    """Named prediction maps for one target t (float32 256×256)."""
    k7 = np.ones((7, 7), np.uint8)
    k11 = np.ones((11, 11), np.uint8)
    scattered = np.float32(0.9) * ((t <= 0.5) & (rng.random_sample(t.shape) < 0.01))
    half = np.where(t > 0.5, np.float32(0.5), scattered)
    return OrderedDict([
        ("shifted", (np.roll(t, (9, -13), axis=(0, 1)) * 0.9 + 0.05)),
        ("eroded", cv2.erode(t, k7)),
        ("dilated", cv2.dilate(t, k11)),
        ("blurred", cv2.GaussianBlur(t, (0, 0), 6.0)),       # soft: many values near 0.5
        ("identity", t.copy()),
        ("noise", rng.random_sample(t.shape)),
        # exact 0.5 inside the object (strict >: negative) and a few scattered 0.9 outside
        ("half_inside", half),
    ])


def build(data, n_masks, negatives):
    rng = np.random.RandomState(7)
    ids = [line.strip() for line in open(os.path.join(data, "val.txt")) if line.strip()]
    ids = ids[:n_masks]
    cases, targets, preds = [], [], []
    first = None
    for i in ids:
        t = load_target(os.path.join(data, "masks", i + ".jpg"))
        first = t if first is None else first
        for name, p in synthetic_predictions(t, rng).items():
            cases.append(f"{i}:{name}")
            targets.append(t)
            preds.append(np.asarray(p, np.float32))
        cases.append(f"{i}:empty")
        targets.append(t)
        preds.append(np.zeros_like(t))
        cases.append(f"{i}:full")
        targets.append(t)
        preds.append(np.ones_like(t))
    zero = np.zeros((SIZE, SIZE), np.float32)
    one = np.ones((SIZE, SIZE), np.float32)
    # a target with exact 0.5 values (none are > 0.5: empty) and a prediction of 0.5 + 1 ulp
    half_t = np.full((SIZE, SIZE), 0.5, np.float32)
    just_above = np.full((SIZE, SIZE), np.nextafter(np.float32(0.5), np.float32(1)), np.float32)
    just_above[:, SIZE // 2:] = 0.5
    specials = [
        ("empty_target:empty_pred", zero, zero),
        ("empty_target:shifted_pred", zero, np.roll(first, (5, 5), axis=(0, 1))),
        ("empty_target:full_pred", zero, one),
        ("full_target:full_pred", one, one),
        ("full_target:dilated_pred", one, cv2.dilate(first, np.ones((5, 5), np.uint8))),
        ("half_target:half_above_pred", half_t, just_above),
    ]
    if negatives:
        specials += negative_cases(negatives, 2)
    for name, t, p in specials:
        cases.append(name)
        targets.append(t)
        preds.append(np.asarray(p, np.float32))
    return ids, cases, np.stack(targets), np.stack(preds)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", required=True, help="Kvasir-SEG folder (masks/, val.txt)")
    ap.add_argument("--masks", type=int, default=4, help="how many val masks")
    ap.add_argument("--negatives", help="nopolyp folder (masks/, val.txt): real empty masks")
    args = ap.parse_args(argv)
    t0 = time.time()
    ids, cases, targets, preds = build(args.data, args.masks, args.negatives)
    m = np.array([metrics_spec(p, t) for p, t in zip(preds, targets)], np.float64)
    m2 = np.array([metrics_upstream_style(p, t) for p, t in zip(preds, targets)], np.float64)
    diff = float(np.max(np.abs(m - m2) / np.maximum(np.abs(m), 1e-300)))
    if diff > 1e-15:
        raise SystemExit(f"§7 formulas and the original's formulation disagree: {diff:.3e}")
    m3 = np.array([metrics_convention(p, t) for p, t in zip(preds, targets)], np.float64)
    conv_diff = float(np.max(np.abs(m - m3)))
    if conv_diff > 1e-12:
        raise SystemExit(f"§7 formulas and the empty-map convention disagree: {conv_diff:.3e}")
    alarms = np.array([false_alarm(p, t) for p, t in zip(preds, targets)], np.float64)
    mean = m.mean(axis=0)
    batch_means = [m[b:b + BATCH].mean(axis=0) for b in range(0, len(m), BATCH)]
    batch_mean = np.mean(batch_means, axis=0)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "metrics_golden.safetensors")
    st_io.save_file(OrderedDict([("target", targets), ("pred", preds), ("metrics", m),
                                 ("mean", mean), ("batch_mean", batch_mean),
                                 ("false_alarm", alarms)]), path, {
        "columns": json.dumps(COLUMNS), "cases": json.dumps(cases), "batch": str(BATCH),
        "eps": repr(EPS), "ids": json.dumps(ids)})
    for name, row in zip(cases, m):
        print(f"  {name:44s} " + " ".join(f"{c[:4]} {v:.6f}" for c, v in zip(COLUMNS, row)))
    print("  mean " + " ".join(f"{c} {v:.6f}" for c, v in zip(COLUMNS, mean)))
    print(f"[metrics] {len(cases)} images, §7 vs original-style formulation max rel. diff "
          f"{diff:.1e}, vs the empty-map convention max abs. diff {conv_diff:.1e}, "
          f"{int(alarms.sum())} false alarms; {path} in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
