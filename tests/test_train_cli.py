#!/usr/bin/python3
"""test_train_cli.py — `condseg train` and `condseg eval` end to end on small Kvasir-SEG
datasets made in a temporary folder (links to the real files, 32x32 network input so that
every run takes seconds):

  - a stage-2 run: the run folder's files, train_log.csv with the original's columns,
    last/best weights loadable by `condseg predict`;
  - resume: a run stopped by --max-steps in the middle of an epoch and resumed, and a run
    stopped by Ctrl-C (SIGINT) and resumed, both end with the same weights (bit for bit)
    and the same train_log.csv as an uninterrupted run with the same seed;
  - a loss that becomes NaN (learning rate 1e30) stops training with a clear message and
    keeps the last saved state;
  - bad data, each reported before training starts, naming the file, with no run folder
    created: a missing mask, an image/mask size mismatch, an empty split, an unreadable
    image, a missing split list;
  - `condseg eval`: its per-image and mean metrics equal a NumPy computation of spec §7 on
    the same probability maps (--save-prob) and the cv2-made targets.

Usage: test_train_cli.py --condseg BUILD/condseg --data KVASIR_DIR
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import st_io  # noqa: E402
from cs_test import check, link_dataset, run, summary  # noqa: E402

def weights_data(path):
    """Every tensor of a safetensors file, as bytes (bit-for-bit comparison)."""
    tensors, _ = st_io.load_file(path)
    return {k: v.tobytes() for k, v in tensors.items()}


def csv_rows(path):
    with open(path) as f:
        return f.read().splitlines()


def metrics_ref(p, y):
    """Spec §7 for one image: P = p > 0.5, G = y > 0.5, eps 1e-15."""
    P, G = (p > 0.5).reshape(-1), (y > 0.5).reshape(-1)
    eps = 1e-15
    tp, n_p, n_g = float((P & G).sum()), float(P.sum()), float(G.sum())
    prec, rec = (tp + eps) / (n_p + eps), (tp + eps) / (n_g + eps)
    return {"mIoU": (tp + eps) / (n_g + n_p - tp + eps), "mDSC": (2 * tp + eps) / (n_g + n_p + eps),
            "recall": rec, "precision": prec, "accuracy": float((P == G).mean()),
            "F2": 5 * prec * rec / (4 * prec + rec + eps)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--condseg", required=True)
    ap.add_argument("--data", required=True)
    a = ap.parse_args()
    exe, kvasir = a.condseg, a.data
    train_all = open(os.path.join(kvasir, "train.txt")).read().split()
    val_all = open(os.path.join(kvasir, "val.txt")).read().split()
    tmp = tempfile.mkdtemp(prefix="condseg-train-")
    env = dict(os.environ)
    try:
        small = link_dataset(tmp, kvasir, train_all[:6], val_all[:2], "small")
        common = ["--data", small, "--image-size", "32", "--batch", "2", "--seed", "11",
                  "--workers", "2"]

        # ---- a stage-2 run
        r2 = os.path.join(tmp, "stage2")
        rc, _, err = run([exe, "train", "--stage", "2", "--out", r2, "--epochs", "1"] + common,
                         env=env)
        check(rc == 0, f"stage-2 run exits 0 ({err.strip()[-300:]})")
        files = sorted(os.listdir(r2)) if os.path.isdir(r2) else []
        check(files == ["best.safetensors", "last.safetensors", "state.safetensors",
                        "train.log", "train_log.csv"], f"run folder files: {files}")
        rows = csv_rows(os.path.join(r2, "train_log.csv")) if files else []
        check(len(rows) == 2 and rows[0] == "epoch,train_loss,train_mIoU,train_f1,train_recall,"
              "train_precision,valid_loss,valid_mIoU,valid_f1,valid_recall,valid_precision",
              f"train_log.csv has the original's columns and one row per epoch: {rows}")
        img = os.path.join(kvasir, "images", val_all[0] + ".jpg")
        rc, _, err = run([exe, "predict", "-w", os.path.join(r2, "last.safetensors"), "-o",
                          os.path.join(tmp, "m.png"), img])
        check(rc == 0 and os.path.exists(os.path.join(tmp, "m.png")),
              f"condseg predict loads last.safetensors ({err.strip()})")

        # ---- resume: uninterrupted, --max-steps + --resume, Ctrl-C + --resume (stage 1)
        base = ["train", "--stage", "1", "--epochs", "3"] + common
        ref = os.path.join(tmp, "ref")
        rc, _, err = run([exe] + base + ["--out", ref], env=env)
        check(rc == 0, f"uninterrupted stage-1 run ({err.strip()[-300:]})")
        steps = os.path.join(tmp, "steps")
        rc, _, err = run([exe] + base + ["--out", steps, "--max-steps", "4"], env=env)
        check(rc == 0 and "step limit" in err, f"--max-steps 4 stops and saves ({err.strip()[-200:]})")
        _, meta = st_io.load_file(os.path.join(steps, "last.safetensors"))
        check(meta.get("condseg.step") == "4", f"saved at step 4 (mid-epoch 2): {meta.get('condseg.step')}")
        rc, _, err = run([exe, "train", "--resume", steps], env=env)
        check(rc == 0, f"--resume completes the run ({err.strip()[-300:]})")
        same_w = weights_data(os.path.join(ref, "last.safetensors")) == \
            weights_data(os.path.join(steps, "last.safetensors"))
        check(same_w, "resumed after --max-steps: final weights identical to the uninterrupted run")
        check(csv_rows(os.path.join(ref, "train_log.csv")) == csv_rows(os.path.join(steps, "train_log.csv")),
              "resumed after --max-steps: train_log.csv identical (losses and metrics)")

        intr = os.path.join(tmp, "interrupted")
        p = subprocess.Popen([exe] + base + ["--out", intr], stderr=subprocess.PIPE, text=True,
                             env=env)
        # Interrupt once the first step is done (a progress line).
        deadline = time.time() + 120
        first = p.stderr.readline()
        while "batch" not in first and time.time() < deadline and first:
            first = p.stderr.readline()
        p.send_signal(signal.SIGINT)
        rest = p.stderr.read()
        p.wait(timeout=300)
        check(p.returncode == 130 and "interrupted" in rest,
              f"Ctrl-C: saves and exits with 130 ({p.returncode}, {rest.strip()[-200:]})")
        check(os.path.exists(os.path.join(intr, "state.safetensors")), "Ctrl-C: state saved")
        rc, _, err = run([exe, "train", "--resume", intr], env=env)
        check(rc == 0, f"--resume after Ctrl-C ({err.strip()[-200:]})")
        check(weights_data(os.path.join(ref, "last.safetensors")) ==
              weights_data(os.path.join(intr, "last.safetensors")),
              "resumed after Ctrl-C: final weights identical to the uninterrupted run")
        check(csv_rows(os.path.join(ref, "train_log.csv")) == csv_rows(os.path.join(intr, "train_log.csv")),
              "resumed after Ctrl-C: train_log.csv identical")
        rc, _, err = run([exe] + base + ["--out", ref], env=env)
        check(rc == 1 and "--resume" in err and ref in err,
              f"a new run into an existing run folder is refused ({err.strip()})")

        # ---- NaN: a learning rate of 1e30 blows the weights up
        nan_dir = os.path.join(tmp, "nan")
        rc, _, err = run([exe, "train", "--stage", "1", "--out", nan_dir, "--epochs", "5",
                          "--lr", "1e30"] + common, env=env)
        check(rc == 1 and "loss became" in err and ("NaN" in err or "infinite" in err),
              f"NaN loss: clear message, exit 1 ({rc}, {err.strip()[-300:]})")
        if os.path.exists(os.path.join(nan_dir, "last.safetensors")):
            _, meta = st_io.load_file(os.path.join(nan_dir, "last.safetensors"))
            saved = int(meta["condseg.step"])
            check(f"saved at step {saved}" in err,
                  f"NaN loss: the message names the kept state (step {saved})")
            check(len(csv_rows(os.path.join(nan_dir, "train_log.csv"))) == 1 + saved // 3,
                  "NaN loss: train_log.csv holds only the epochs finished before")
        else:
            check("nothing had been saved yet" in err, "NaN loss before any save: said so")

        # ---- bad data, before training starts
        def bad_data(name, mutate, needle):
            d = link_dataset(tmp, kvasir, train_all[:4], val_all[:2], name)
            culprit = mutate(d)
            out = os.path.join(tmp, name + "-run")
            rc, _, err = run([exe, "train", "--stage", "1", "--out", out, "--data", d,
                              "--image-size", "32"])
            check(rc == 1 and culprit in err and needle in err and not os.path.exists(out),
                  f"{name}: exit {rc}, message {err.strip()!r}, no run folder")

        def missing_mask(d):
            p = os.path.join(d, "masks", train_all[1] + ".jpg")
            os.unlink(p)
            return train_all[1]

        def size_mismatch(d):
            p = os.path.join(d, "masks", train_all[2] + ".jpg")
            os.unlink(p)
            m = cv2.imread(os.path.join(kvasir, "masks", train_all[2] + ".jpg"))
            cv2.imwrite(p, cv2.resize(m, (m.shape[1] // 2, m.shape[0] // 2)))
            return train_all[2]

        def empty_split(d):
            open(os.path.join(d, "val.txt"), "w").close()
            return "val.txt"

        def unreadable(d):
            p = os.path.join(d, "images", train_all[3] + ".jpg")
            os.unlink(p)
            with open(p, "wb") as f:
                f.write(b"\xff\xd8\xff\xe0 broken")
            return train_all[3]

        def no_split(d):
            os.unlink(os.path.join(d, "train.txt"))
            return "train.txt"

        bad_data("missing-mask", missing_mask, "mask")
        bad_data("size-mismatch", size_mismatch, "size")
        bad_data("empty-split", empty_split, "")
        bad_data("unreadable-image", unreadable, "")
        bad_data("missing-split", no_split, "")

        # ---- eval against a NumPy computation of §7
        ev = link_dataset(tmp, kvasir, train_all[:2], val_all[:5], "evalset")
        probs, js = os.path.join(tmp, "probs"), os.path.join(tmp, "eval.json")
        masks = os.path.join(tmp, "evalmasks")
        rc, out, err = run([exe, "eval", "-w", os.path.join(r2, "last.safetensors"), "--data", ev,
                            "--save-prob", probs, "--json", js, "--save-masks", masks])
        check(rc == 0 and "mIoU" in out, f"condseg eval runs ({err.strip()[-200:]})")
        if rc == 0:
            res = json.load(open(js))
            worst = 0.0
            means = {k: [] for k in res["mean"]}
            for item in res["images"]:
                p = np.load(os.path.join(probs, item["id"] + ".npy"))
                # eval works at the size the weights were trained at (--image-size 32 above)
                check(p.shape[-2:] == (32, 32), f"eval at the trained input size ({p.shape})")
                m = cv2.imread(os.path.join(ev, "masks", item["id"] + ".jpg"), cv2.IMREAD_GRAYSCALE)
                y = cv2.resize(m, (32, 32), interpolation=cv2.INTER_LINEAR).astype(np.float64) / 255
                ref_m = metrics_ref(p, y)
                for k, v in ref_m.items():
                    worst = max(worst, abs(v - item[k]))
                    means[k].append(v)
            for k, vals in means.items():
                worst = max(worst, abs(float(np.mean(vals)) - res["mean"][k]))
            check(len(res["images"]) == 5 and worst <= 1e-12,
                  f"eval metrics equal the NumPy §7 computation (max difference {worst:.1e})")
            check(sorted(os.listdir(masks)) == sorted(i + ".png" for i in val_all[:5]),
                  "--save-masks writes one mask per image")
            m0 = cv2.imread(os.path.join(masks, val_all[0] + ".png"), cv2.IMREAD_UNCHANGED)
            i0 = cv2.imread(os.path.join(ev, "images", val_all[0] + ".jpg"))
            check(m0 is not None and m0.shape == i0.shape[:2], "saved masks have the image's size")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary("test_train_cli")


if __name__ == "__main__":
    sys.exit(main())
