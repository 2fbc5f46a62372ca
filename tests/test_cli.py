#!/usr/bin/python3
"""test_cli.py — the `condseg` program end to end: help, info, predict on real Kvasir-SEG
images (mask size and values, --prob against our PyTorch reference), several inputs, a
folder as input (pipelined: its masks equal one-by-one predictions), a line per image with
the marked share or "no polyp found" (the default model on a polyp-free frame), --json
(its fields against the masks, written atomically, a bad path refused before anything is
written), --overlay (the mask's outline, 2 px green, recomputed here from the mask), help
texts in a non-UTF-8 locale, `eval` finding its data through CONDSEG_DATA, the note of
`--device auto`, and every bad input a user can give (each: one clear message naming the
culprit, a non-zero exit, no partial output).

Usage: test_cli.py --condseg BUILD/condseg --golden DIR --data KVASIR_DIR
Exits non-zero on the first failed check list (all checks run, failures are summed).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import cv2
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import st_io  # noqa: E402
from cs_test import check, run, summary  # noqa: E402

PROB_TOL = 1e-4


def files_in(d):
    return sorted(os.listdir(d))


OUTLINE_BGR = (0, 255, 0)
OUTLINE_WIDTH = 2


def expected_overlay(image, mask):
    """The image with the outline of the mask painted: the mask pixels within OUTLINE_WIDTH
    (Chebyshev distance) of a pixel outside it, the outside of the frame counting as
    outside — the mask minus its erosion by a square of side 2 * OUTLINE_WIDTH + 1."""
    on = (mask > 0).astype(np.uint8)
    side = 2 * OUTLINE_WIDTH + 1
    eroded = cv2.erode(on, np.ones((side, side), np.uint8), borderType=cv2.BORDER_CONSTANT,
                       borderValue=0)
    outline = (on > 0) & (eroded == 0)
    want = image.copy()
    want[outline] = OUTLINE_BGR
    return want, int(outline.sum())


def check_judging(exe, data, polyp_img, tmp):
    """What a user judges results by: the line per image, --json, --overlay, on the default
    model with a Kvasir-SEG frame and a polyp-free one."""
    free_img = os.path.join(os.path.dirname(os.path.abspath(data)), "nopolyp", "images", "473.jpg")
    if not check(os.path.exists(free_img), f"the polyp-free frame {free_img} is there"):
        return
    out_dir, ov_dir = os.path.join(tmp, "judge-masks"), os.path.join(tmp, "judge-overlays")
    json_dir = os.path.join(tmp, "judge-json")
    os.mkdir(json_dir)
    json_path = os.path.join(json_dir, "results.json")
    env = {k: v for k, v in os.environ.items() if k != "CONDSEG_WEIGHTS"}  # the default model
    rc, out, err = run([exe, "predict", "-o", out_dir, "--overlay", ov_dir, "--json", json_path,
                        polyp_img, free_img], env=env)
    check(rc == 0, f"predict --json --overlay with the default model ({err.strip()[-300:]})")
    lines = out.strip().split("\n")
    stems = [os.path.splitext(os.path.basename(p))[0] for p in (polyp_img, free_img)]
    masks = [cv2.imread(os.path.join(out_dir, s + ".png"), cv2.IMREAD_UNCHANGED) for s in stems]
    if not check(len(lines) == 3 and all(m is not None for m in masks),
                 f"two masks and a line each: {out.strip()!r}"):
        return
    share = 100 * float((masks[0] > 0).mean())
    check(share > 0 and f"{polyp_img} -> " in lines[0] and
          lines[0].endswith(f": {share:.1f}% of the frame marked"),
          f"the polyp frame's line gives the marked share {share:.1f}%: {lines[0]!r}")
    check(not masks[1].any() and lines[1].startswith(f"[2/2] {free_img} -> ") and
          "no polyp found" in lines[1],
          f"the polyp-free frame: an empty mask and 'no polyp found': {lines[1]!r}")
    # --json: the same, machine-readable, and no temporary file left beside it
    try:
        doc = json.load(open(json_path))
    except (OSError, ValueError) as e:
        check(False, f"--json wrote valid JSON ({e})")
        return
    check(os.listdir(json_dir) == ["results.json"], f"--json leaves only its file ({os.listdir(json_dir)})")
    entries = doc.get("images", [])
    check(doc.get("count") == 2 and doc.get("failed") == 0 and len(entries) == 2 and
          doc.get("threshold") == 0.5 and doc.get("tta_views") == 1,
          f"--json: count, failed, threshold, TTA views ({ {k: v for k, v in doc.items() if k != 'images'} })")
    for entry, path, stem, mask in zip(entries, (polyp_img, free_img), stems, masks):
        h, w = mask.shape
        frac = float((mask > 0).mean())
        unc = entry.get("uncertainty", {})
        check(entry.get("input") == path and entry.get("output") == os.path.join(out_dir, stem + ".png")
              and entry.get("overlay") == os.path.join(ov_dir, stem + ".png")
              and entry.get("width") == w and entry.get("height") == h
              and abs(entry.get("area_fraction", -1) - frac) < 1e-9
              and entry.get("found") is (frac > 0)
              and 0 <= unc.get("mean", -1) <= unc.get("max", -1) <= 1
              and (entry.get("max_probability", 2) > 0.5) is (frac > 0),
              f"--json entry of {stem}: {entry}")
    # --overlay: the input with the mask's outline, nothing else changed
    for path, stem, mask in zip((polyp_img, free_img), stems, masks):
        got = cv2.imread(os.path.join(ov_dir, stem + ".png"), cv2.IMREAD_UNCHANGED)
        want, n_outline = expected_overlay(cv2.imread(path), mask)
        same = got is not None and got.shape == want.shape and np.array_equal(got, want)
        check(same and (n_outline > 0) is bool(mask.any()),
              f"--overlay of {stem}: the image with the mask's {n_outline}-pixel outline "
              f"(green, {OUTLINE_WIDTH} px) and nothing else")
    one = os.path.join(tmp, "one-overlay.png")
    rc, _, err = run([exe, "predict", "-o", os.path.join(tmp, "one-mask.png"), "--overlay", one,
                      polyp_img], env=env)
    got = cv2.imread(one, cv2.IMREAD_UNCHANGED) if rc == 0 else None
    check(got is not None and np.array_equal(got, expected_overlay(cv2.imread(polyp_img), masks[0])[0]),
          f"--overlay FILE for one image ({err.strip()[-200:]})")
    # a --json that cannot be written: said before anything is, nothing written
    for bad_json, why in ((os.path.join(tmp, "no-such-folder", "r.json"), "does not exist"),
                          (json_dir, "is a folder")):
        fresh = os.path.join(tmp, "judge-bad")
        rc, out, err = run([exe, "predict", "-o", fresh, "--overlay", fresh + "-ov", "--json",
                            bad_json, polyp_img, free_img], env=env)
        check(rc == 1 and "--json" in err and bad_json in err and why in err
              and not os.path.exists(fresh) and not os.path.exists(fresh + "-ov"),
              f"--json {bad_json}: exit {rc}, {err.strip()!r}, nothing written")
    check(os.listdir(json_dir) == ["results.json"], "a refused --json leaves the folder as it was")
    rc, _, err = run([exe, "predict", "-o", one, "--overlay", one, polyp_img], env=env)
    check(rc == 2 and "--overlay" in err and "would overwrite" in err,
          f"--overlay onto the mask is refused ({err.strip()!r})")
    clash = os.path.join(tmp, "clash.png")
    rc, _, err = run([exe, "predict", "-o", clash, "--json", clash, polyp_img], env=env)
    check(rc == 2 and "would overwrite" in err and "--json" in err and not os.path.exists(clash),
          f"a mask onto --json's file is refused, nothing written ({err.strip()!r})")


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
        rc, out, err = run([exe, "predict", "-w", full_w, "-o", mask_path, "--prob", npy,
                          "--all-outputs", img])
        check(rc == 0, f"predict one image exits 0 ({err.strip()})")
        mask = cv2.imread(mask_path, cv2.IMREAD_UNCHANGED)
        share = 100 * float((mask > 0).mean()) if mask is not None else -1
        check(out.startswith(f"{img} -> {mask_path} ({w}x{h}): {share:.1f}% of the frame marked"),
              f"predict prints a line with the marked share ({share:.1f}%): {out.strip()!r}")
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

        # ---- a folder as input: its images only, sorted, pipelined (decode, network and
        # writing overlap): the masks equal those of one image at a time, at 1 and 2 threads
        folder = os.path.join(tmp, "folder")
        os.mkdir(folder)
        for p in images:
            shutil.copy(p, folder)
        open(os.path.join(folder, "notes.txt"), "w").write("not an image\n")
        # (at the same thread count: oneDNN may block its sums by the thread count, which
        # moves a pixel within rounding of the threshold, as on AVX2 CPUs)
        for threads in ("1", "2"):
            singles = os.path.join(tmp, "singles-" + threads)
            os.mkdir(singles)
            for p in images:
                stem = os.path.splitext(os.path.basename(p))[0]
                run([exe, "predict", "-w", full_w, "--threads", threads, "-o",
                     os.path.join(singles, stem + ".png"), p])
            fout = os.path.join(tmp, "folder-masks-" + threads)
            rc, out, err = run([exe, "predict", "-w", full_w, "--threads", threads, "-o", fout,
                                folder])
            check(rc == 0 and os.path.isdir(fout) and files_in(fout) == expect,
                  f"a folder as input, --threads {threads}: one mask per image, nothing for "
                  f"notes.txt ({files_in(fout) if os.path.isdir(fout) else None}; {err.strip()})")
            lines = out.strip().split("\n")
            check(len(lines) == 4 and lines[0].startswith("[1/3] ") and lines[2].startswith("[3/3] ")
                  and "3 of 3 images" in lines[3] and "images/s" in lines[3],
                  f"a folder: a line per image in order, then the rate: {out.strip()!r}")
            same = all(os.path.exists(os.path.join(fout, f)) and
                       np.array_equal(cv2.imread(os.path.join(fout, f), cv2.IMREAD_UNCHANGED),
                                      cv2.imread(os.path.join(singles, f), cv2.IMREAD_UNCHANGED))
                       for f in expect)
            check(same, f"a folder's masks (--threads {threads}) equal one-by-one predictions")

        check_judging(exe, a.data, images[0], tmp)

        # ---- help texts: the same in a non-UTF-8 locale, plain ASCII, nothing turned to '?';
        # sizes that hold for the default model too; no reference to documents users lack
        for cmd in ("predict", "info", "train", "eval"):
            texts = {}
            for loc in ("C", "C.UTF-8"):
                rc, out, _ = run([exe, cmd, "--help"], env=dict(os.environ, LC_ALL=loc))
                texts[loc] = out
            c = texts["C"]
            check(rc == 0 and c == texts["C.UTF-8"] and c.isascii() and "?" not in c
                  and "spec" not in c and "Usage:" in c,
                  f"condseg {cmd} --help: plain ASCII, no '?' in the C locale, no 'spec'")
        rc, out, _ = run([exe, "predict", "--help"])
        check("256x256 output" not in out and "256 for the paper's and for the default model" in out,
              "predict --help gives the output size of the default model too")
        rc, out, _ = run([exe, "eval", "--help"])
        check("and for the default" in out and "CONDSEG_DATA" in out,
              "eval --help: the default model's map size, CONDSEG_DATA")

        # ---- --device auto: where no GPU is usable (cuda fails), it says why, in every build
        rc_cuda, _, err_cuda = run([exe, "predict", "-w", stage1_w, "--device", "cuda", "-o",
                                    os.path.join(tmp, "cuda.png"), img])
        rc, _, err = run([exe, "predict", "-w", stage1_w, "--device", "auto", "-o",
                          os.path.join(tmp, "auto.png"), img])
        if rc_cuda != 0:
            check(rc == 0 and "running on the CPU" in err and "no usable GPU" in err,
                  f"--device auto without a GPU says why ({err.strip()!r}; cuda: "
                  f"{err_cuda.strip()!r})")
        rc, _, err = run([exe, "predict", "-w", stage1_w, "-o", os.path.join(tmp, "quiet.png"),
                          img])
        check(rc == 0 and "GPU" not in err, f"without --device nothing is said ({err.strip()!r})")

        # ---- eval and train find --data in CONDSEG_DATA (the folder holding kvasir-seg/),
        # eval defaulting to kvasir-seg; from a folder that holds neither
        droot = os.path.join(tmp, "dataroot")
        small = os.path.join(droot, "kvasir-seg")
        for sub in ("images", "masks"):
            os.makedirs(os.path.join(small, sub))
            for i in ids[:2]:
                os.symlink(os.path.join(a.data, sub, i + ".jpg"), os.path.join(small, sub, i + ".jpg"))
        for split in ("train", "val"):
            open(os.path.join(small, split + ".txt"), "w").write("".join(i + "\n" for i in ids[:2]))
        elsewhere = os.path.join(tmp, "elsewhere")
        os.mkdir(elsewhere)
        denv = dict(os.environ, CONDSEG_DATA=droot)
        rc, out, err = run([exe, "eval", "-w", stage1_w], env=denv, cwd=elsewhere)
        check(rc == 0 and small in out and "2 images" in out,
              f"eval without --data: kvasir-seg in CONDSEG_DATA ({out.strip()!r} {err.strip()!r})")
        rc, out, err = run([exe, "eval", "-w", stage1_w, "--data", "kvasir-seg"], env=denv,
                           cwd=elsewhere)
        check(rc == 0 and "2 images" in out, f"eval --data kvasir-seg via CONDSEG_DATA ({err.strip()!r})")
        rc, out, err = run([exe, "eval", "-w", stage1_w, "--tta"], env=denv, cwd=elsewhere)
        check(rc == 0 and "2 images, test-time augmentation" in out and "mDSC" in out,
              f"eval --tta says so ({out.strip()!r} {err.strip()!r})")
        rc, out, err = run([exe, "eval", "-w", stage1_w, "--data", "kvasir-seg"], cwd=droot,
                           env={k: v for k, v in os.environ.items() if k != "CONDSEG_DATA"})
        check(rc == 0 and "2 images" in out, f"eval --data kvasir-seg from its parent ({err.strip()!r})")
        rc, out, err = run([exe, "eval", "-w", stage1_w], cwd=elsewhere,
                           env={k: v for k, v in os.environ.items() if k != "CONDSEG_DATA"})
        check(rc == 2 and "--data" in err and "CONDSEG_DATA" in err and "--weights" not in err,
              f"eval without data anywhere: exit {rc}, says what is missing ({err.strip()!r})")
        run_dir = os.path.join(tmp, "run-rel")
        rc, out, err = run([exe, "train", "--stage", "1", "--data", "kvasir-seg", "--out", run_dir,
                            "--image-size", "32", "--batch", "2", "--max-steps", "1"],
                           env=denv, cwd=elsewhere)
        check(rc == 0 and os.path.exists(os.path.join(run_dir, "last.safetensors")),
              f"train --data kvasir-seg via CONDSEG_DATA ({err.strip()[-300:]!r})")

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
        bad(["predict", "-w", stage1_w, "--frobnicate", img], 2,
            ["--frobnicate", "Try 'condseg predict --help'"], "unknown option", empty)
        bad(["eval", "--frobnicate"], 2, ["--frobnicate", "Try 'condseg eval --help'"],
            "unknown option of eval")
        bad(["predict", "-w", full_w, "-o", out_png, "--all-outputs", img], 2,
            ["--all-outputs", "--prob", "Try 'condseg predict --help'"],
            "--all-outputs without --prob", empty)
        # Without -w the default model is used; CONDSEG_WEIGHTS names it.
        os.environ["CONDSEG_WEIGHTS"] = missing
        bad(["predict", "-o", out_png, img], 1, [missing], "default weights missing", empty)
        del os.environ["CONDSEG_WEIGHTS"]
        bad(["predict", "-w", stage1_w, "-o", out_png, "--all-outputs", "--prob",
             os.path.join(empty, "p.npy"), img], 2, ["--all-outputs", "stage-1"],
            "--all-outputs with a stage-1 network", empty)
        noimg = os.path.join(tmp, "no-images")
        os.mkdir(noimg)
        bad(["predict", "-w", stage1_w, "-o", os.path.join(tmp, "noimg-out"), noimg], 1,
            [noimg, "no images"], "a folder without images")
        bad(["segment", img], 2, ["segment"], "unknown command", empty)
        bad(["info", missing], 1, [missing], "info on a missing file")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary("test_cli")


if __name__ == "__main__":
    sys.exit(main())
