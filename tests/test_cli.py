#!/usr/bin/python3
"""test_cli.py — the `condseg` program end to end: help, info, predict on real Kvasir-SEG
images (mask size and values, --prob against our PyTorch reference), several inputs, and
every bad input a user can give (each: one clear message naming the culprit, a non-zero
exit, no partial output).

Usage: test_cli.py --condseg BUILD/condseg --golden DIR --data KVASIR_DIR
Exits non-zero on the first failed check list (all checks run, failures are summed).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import cv2
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import st_io  # noqa: E402

failures = []
PROB_TOL = 1e-4


def check(cond, what):
    print(("ok    " if cond else "FAIL  ") + what)
    if not cond:
        failures.append(what)


def run(args, **kw):
    p = subprocess.run(args, capture_output=True, text=True, **kw)
    return p.returncode, p.stdout, p.stderr


def files_in(d):
    return sorted(os.listdir(d))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--condseg", required=True)
    ap.add_argument("--golden", required=True)
    ap.add_argument("--data", required=True)
    a = ap.parse_args()
    exe = a.condseg
    full_w = os.path.join(a.golden, "full_weights.safetensors")
    stage1_w = os.path.join(a.golden, "stage1_weights.safetensors")
    ids = open(os.path.join(a.data, "val.txt")).read().split()
    images = [os.path.join(a.data, "images", i + ".jpg") for i in ids[:3]]
    tmp = tempfile.mkdtemp(prefix="condseg-cli-")
    try:
        # ---- help and info
        rc, out, _ = run([exe, "--help"])
        check(rc == 0 and "predict" in out and "info" in out, "condseg --help lists the commands")
        rc, out, _ = run([exe, "predict", "--help"])
        check(rc == 0 and "--weights" in out and "--threshold" in out and "--prob" in out,
              "condseg predict --help lists its options")
        rc, out, _ = run([exe, "info", "--help"])
        check(rc == 0 and "WEIGHTS" in out, "condseg info --help")
        rc, out, err = run([exe, "info", full_w])
        check(rc == 0 and "full ConDSeg" in out and "937" in out and "45552786" in out,
              f"info on the full network: {out.strip()!r} {err.strip()}")
        rc, out, _ = run([exe, "info", stage1_w])
        check(rc == 0 and "stage 1" in out and "8662848" in out, "info on the stage-1 network")

        # ---- predict one image: mask at the image's size, --prob against the reference
        img = images[0]
        h, w = cv2.imread(img).shape[:2]
        mask_path = os.path.join(tmp, "one.png")
        npy = os.path.join(tmp, "one.npy")
        rc, _, err = run([exe, "predict", "-w", full_w, "-o", mask_path, "--prob", npy,
                          "--all-outputs", img])
        check(rc == 0, f"predict one image exits 0 ({err.strip()})")
        mask = cv2.imread(mask_path, cv2.IMREAD_UNCHANGED)
        check(mask is not None and mask.shape == (h, w),
              f"mask has the image's size {w}x{h}: {None if mask is None else mask.shape}")
        if mask is not None:
            check(set(np.unique(mask)) <= {0, 255}, "mask values are 0/255")
        prob = np.load(npy) if os.path.exists(npy) else None
        check(prob is not None and prob.shape == (4, 256, 256) and prob.dtype == np.float32,
              f"--prob --all-outputs writes float32 (4,256,256): {None if prob is None else prob.shape}")
        ref_npy = os.path.join(tmp, "ref.npy")
        rc, _, err = run(["/usr/bin/python3", os.path.join(os.path.dirname(__file__), "..",
                                                           "tools", "make_golden.py"),
                          "prob", "--weights", full_w, "--image", img, "--out", ref_npy,
                          "--all-outputs"])
        check(rc == 0, f"reference prob computed ({err.strip()[-200:]})")
        if prob is not None and rc == 0:
            ref = np.load(ref_npy)
            err_max = float(np.abs(prob - ref).max())
            check(err_max <= PROB_TOL,
                  f"--prob agrees with the PyTorch reference: max |diff| {err_max:.2e} "
                  f"(mask {np.abs(prob[0]-ref[0]).max():.2e}) <= {PROB_TOL}")
            # The mask is the 256x256 probability resized back and thresholded at 0.5.
            back = cv2.resize(prob[0], (w, h), interpolation=cv2.INTER_LINEAR) > 0.5
            if mask is not None:
                agree = float(np.mean((mask > 0) == back))
                check(agree > 0.999, f"mask = resized probability > 0.5 ({agree:.5f} agree)")
        rc, _, _ = run([exe, "predict", "-w", full_w, "-o", os.path.join(tmp, "t9.png"),
                        "--threshold", "0.9", img])
        t9 = cv2.imread(os.path.join(tmp, "t9.png"), cv2.IMREAD_UNCHANGED)
        check(rc == 0 and t9 is not None and mask is not None and
              (t9 > 0).sum() <= (mask > 0).sum(), "--threshold 0.9 gives a smaller mask")

        # ---- several images into a directory, stage-1 weights
        outdir = os.path.join(tmp, "masks")
        rc, _, err = run([exe, "predict", "-w", stage1_w, "-o", outdir] + images)
        expect = sorted(os.path.splitext(os.path.basename(p))[0] + ".png" for p in images)
        check(rc == 0 and os.path.isdir(outdir) and files_in(outdir) == expect,
              f"several images -> one mask each, named after the inputs ({err.strip()})")

        # ---- bad inputs
        def bad(args, code, needles, what, outdir=None, allowed=()):
            rc, out, err = run([exe] + args)
            msg = err.strip()
            ok = rc == code and all(n in msg for n in needles)
            check(ok, f"{what}: exit {rc} (want {code}), message: {msg!r}")
            if outdir is not None:
                left = [f for f in files_in(outdir) if f not in allowed]
                check(not left, f"{what}: no partial output ({left})")

        empty = os.path.join(tmp, "empty")
        os.mkdir(empty)
        out_png = os.path.join(empty, "m.png")
        missing = os.path.join(tmp, "no-such.safetensors")
        bad(["predict", "-w", missing, "-o", out_png, img], 1, [missing], "missing weights file", empty)

        raw = open(full_w, "rb").read()
        trunc = os.path.join(tmp, "truncated.safetensors")
        open(trunc, "wb").write(raw[:len(raw) // 2])
        bad(["predict", "-w", trunc, "-o", out_png, img], 1, [trunc], "truncated weights file", empty)
        headtrunc = os.path.join(tmp, "header-truncated.safetensors")
        open(headtrunc, "wb").write(raw[:100])
        bad(["predict", "-w", headtrunc, "-o", out_png, img], 1, [headtrunc],
            "weights file cut inside its header", empty)

        notst = os.path.join(tmp, "image.safetensors")
        shutil.copy(img, notst)
        bad(["predict", "-w", notst, "-o", out_png, img], 1, [notst], "a JPEG given as weights", empty)

        tensors, meta = st_io.load_file(stage1_w)
        dropped = dict(tensors)
        del dropped["layer3.2.conv2.weight"]
        p = os.path.join(tmp, "missing-tensor.safetensors")
        st_io.save_file(dropped, p, meta)
        bad(["predict", "-w", p, "-o", out_png, img], 1, [p, "layer3.2.conv2.weight", "missing"],
            "weights without a tensor", empty)

        reshaped = dict(tensors)
        reshaped["head.conv2.conv.0.weight"] = np.zeros((64, 128, 1, 1), np.float32)
        p = os.path.join(tmp, "wrong-shape.safetensors")
        st_io.save_file(reshaped, p, meta)
        bad(["predict", "-w", p, "-o", out_png, img], 1,
            [p, "head.conv2.conv.0.weight", "64x128x1x1", "64x256x1x1"],
            "weights with a misshapen tensor", empty)

        # An unreadable image among good ones: the good ones are still written.
        broken = os.path.join(tmp, "broken.jpg")
        open(broken, "wb").write(b"\xff\xd8\xff\xe0 this is not really a JPEG")
        mixdir = os.path.join(tmp, "mixed")
        rc, _, err = run([exe, "predict", "-w", stage1_w, "-o", mixdir, images[0], broken,
                          images[1]])
        good = sorted(os.path.splitext(os.path.basename(p))[0] + ".png" for p in images[:2])
        check(rc == 1 and broken in err, f"unreadable image: exit {rc}, message {err.strip()!r}")
        check(os.path.isdir(mixdir) and files_in(mixdir) == good,
              f"unreadable image: the good masks are written, nothing else "
              f"({files_in(mixdir) if os.path.isdir(mixdir) else None})")

        bad(["predict", "-w", stage1_w, "-o", out_png, "--threshold", "2", img], 2,
            ["--threshold", "2"], "threshold out of range", empty)
        bad(["predict", "-w", stage1_w, "-o", out_png, "--threshold", "abc", img], 2,
            ["--threshold", "abc"], "threshold not a number", empty)
        bad(["predict", "-w", stage1_w, "--frobnicate", img], 2, ["--frobnicate"],
            "unknown option", empty)
        # Without -w the default model is used; CONDSEG_WEIGHTS names it.
        os.environ["CONDSEG_WEIGHTS"] = missing
        bad(["predict", "-o", out_png, img], 1, [missing], "default weights missing", empty)
        del os.environ["CONDSEG_WEIGHTS"]
        bad(["predict", "-w", stage1_w, "-o", out_png, "--all-outputs", "--prob",
             os.path.join(empty, "p.npy"), img], 2, ["--all-outputs", "stage-1"],
            "--all-outputs with a stage-1 network", empty)
        bad(["segment", img], 2, ["segment"], "unknown command", empty)
        bad(["info", missing], 1, [missing], "info on a missing file")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"test_cli: {len(failures)} check(s) failed")
        return 1
    print("test_cli: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
