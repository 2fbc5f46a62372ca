#!/usr/bin/python3
"""test_bad_input.py — every hostile or broken input of issue 10 against the `condseg`
program: each must end with its documented exit status and a message naming the file
(or tensor, option, line), within a bounded peak memory and time, and without writing
where it must not. The cases are those of the README's "Bad input" table.

The files are made here, in a temporary folder: weights derived from the shipped default
model (tools/st_io.py), images made with OpenCV and then patched, split lists written
out. Peak memory is the child's maximum resident set (wait4), time its wall time.

Usage: test_bad_input.py --condseg BUILD/condseg --data KVASIR_DIR [--report]
  --report  print a Markdown table (case, exit status, message, peak MB, seconds) and
            check nothing: how the figures of an older build are taken.
"""
import argparse
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
import st_io  # noqa: E402
from cs_test import check, link_dataset, summary  # noqa: E402

DEFAULT_MODEL = os.path.join(HERE, "..", "models", "condseg-default.safetensors")


def run(args, cwd=None, as_limit_mb=None, fsize_limit=None):
    """Runs args; returns (status, stderr, peak MB, seconds). A negative status is a signal."""
    def limits():
        if as_limit_mb:
            resource.setrlimit(resource.RLIMIT_AS, (as_limit_mb << 20, as_limit_mb << 20))
        if fsize_limit:   # a full disk, as far as the writer sees: EFBIG, not a signal
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, fsize_limit))
    t0 = time.time()
    p = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         preexec_fn=limits)
    err = p.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, err, usage.ru_maxrss / 1024, time.time() - t0


# ---- files ---------------------------------------------------------------------------

def safetensors_raw(path, header):
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)


def derived_weights(path, change_tensor=None, value=None, metadata=None):
    """The default model with one value of one tensor replaced and/or metadata changed."""
    tensors, meta = st_io.load_file(DEFAULT_MODEL)
    if change_tensor:
        t = tensors[change_tensor].copy()
        t.reshape(-1)[0] = value
        tensors[change_tensor] = t
    meta.update(metadata or {})
    st_io.save_file(tensors, path, meta)


def jpeg_claiming(path, width, height):
    """A small real JPEG whose frame header claims width x height."""
    ok, data = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))
    data = bytearray(data.tobytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    open(path, "wb").write(data)


def png_claiming(path, width, height):
    """A PNG header claiming width x height, with a few bytes of pixel data."""
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body +
                struct.pack(">I", zlib.crc32(kind + body) & 0xffffffff))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
            chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    open(path, "wb").write(data)


# ---- the cases -----------------------------------------------------------------------

def cases(tmp, exe, kvasir):
    """(name, command, run options, expected status, message needle, peak MB, seconds,
    extra check or None). Built lazily so --report can time each."""
    val = open(os.path.join(kvasir, "val.txt")).read().split()
    image = os.path.join(kvasir, "images", val[0] + ".jpg")
    p = lambda name: os.path.join(tmp, name)  # noqa: E731
    out = ["-o", p("mask.png")]

    safetensors_raw(p("deep.safetensors"), b"[" * 100000)
    safetensors_raw(p("wide.safetensors"), b"[" + b"0," * 2000000 + b"0]")
    derived_weights(p("nan.safetensors"), "output_block.c3.weight", float("nan"))
    derived_weights(p("inf.safetensors"), "layer0.0.weight", float("inf"))
    derived_weights(p("size16abc.safetensors"), metadata={"condseg.input_size": "16abc"})
    derived_weights(p("size4096.safetensors"), metadata={"condseg.input_size": "4096"})
    jpeg_claiming(p("huge.jpg"), 32256, 14857)
    png_claiming(p("huge.png"), 30000, 30000)
    open(p("huge.svg"), "w").write('<svg xmlns="http://www.w3.org/2000/svg" width="30000" '
                                   'height="30000"><rect width="30000" height="30000"/></svg>')
    open(p("tiny.xpm"), "w").write('/* XPM */\nstatic char *x[] = {"1 1 1 1", "a c #ff0000", "a"};\n')
    data = open(image, "rb").read()
    open(p("truncated.jpg"), "wb").write(data[:len(data) // 2])
    for name, corpus_name in (("offset.bmp", "bmp_pixel_offset_4gb.bmp"),
                              ("palette.bmp", "bmp_palette_4gb.bmp")):
        shutil.copy(os.path.join(HERE, "fuzz", "corpus", "image", corpus_name), p(name))
    # a well-formed 54-byte BMP header claiming 4 x 16777215 (what fuzz_image found, clean)
    open(p("tall.bmp"), "wb").write(b"BM" + struct.pack("<IHHIIiiHHIIiiII", 54, 0, 0, 54, 40, 4,
                                                          16777215, 1, 24, 0, 0, 0, 0, 0, 0))

    # a split list reaching outside the dataset: DS/images/../outside.jpg (= DS/outside.jpg,
    # its own mask too) exists, and its mask would go to evalmasks/../outside.png
    ds = link_dataset(tmp, kvasir, [], val[:1], "escape")
    shutil.copy(image, os.path.join(ds, "outside.jpg"))
    open(os.path.join(ds, "val.txt"), "w").write(f"{val[0]}\n../outside\n")

    # predict collisions
    os.makedirs(p("d1")), os.makedirs(p("d2"))
    for d in ("d1", "d2"):
        shutil.copy(image, p(f"{d}/x.jpg"))
    shutil.copy(image, p("x.jpg"))
    x_before = open(p("x.jpg"), "rb").read()

    # a dataset for a run whose checkpoint cannot be written (1 MB file size limit)
    small = link_dataset(tmp, kvasir, val[:2], val[2:3], "small")
    run_dir = p("fullrun")

    def checkpoint_logged():
        log = open(os.path.join(run_dir, "train.log")).read() if os.path.exists(run_dir) else ""
        check("checkpoint at step 1 failed: cannot write safetensors file" in log,
              "failed checkpoint: reported in train.log")

    W = ["-w", DEFAULT_MODEL]
    return [
        ("safetensors header nested 100,000 deep", [exe, "info", p("deep.safetensors")], {},
         1, "nests more than 64 levels", 100, 5, None),
        ("safetensors header of 2,000,001 values (4 MB)", [exe, "info", p("wide.safetensors")],
         {}, 1, "more than 1000000 JSON values", 100, 5, None),
        ("NaN in a weight", [exe, "predict", "-w", p("nan.safetensors")] + out + [image], {},
         1, "tensor 'output_block.c3.weight' holds a non-finite value (nan", 300, 20, None),
        ("+Inf in a weight", [exe, "predict", "-w", p("inf.safetensors")] + out + [image], {},
         1, "tensor 'layer0.0.weight' holds a non-finite value (inf", 300, 20, None),
        ("metadata input_size \"16abc\"", [exe, "info", p("size16abc.safetensors")], {},
         1, "condseg.input_size = '16abc' is not a multiple of 16", 100, 5, None),
        ("out of memory (input size 4096, 1.2 GB address space)",
         [exe, "predict", "-w", p("size4096.safetensors")] + out + [image],
         {"as_limit_mb": 1200}, 1, "out of memory on the cpu: could not allocate", 1200, 30,
         None),
        ("629-byte JPEG claiming 32256x14857", [exe, "predict"] + W + out + [p("huge.jpg")], {},
         1, "above the limits (67108864 pixels, 32768 a side)", 300, 5, None),
        ("69-byte PNG claiming 30000x30000", [exe, "predict"] + W + out + [p("huge.png")], {},
         1, "above the limits (67108864 pixels, 32768 a side)", 300, 5, None),
        ("SVG declaring 30000x30000", [exe, "predict"] + W + out + [p("huge.svg")], {},
         1, "is not a readable image: not a JPEG, PNG, BMP or TIFF file", 300, 5, None),
        ("XPM image", [exe, "predict"] + W + out + [p("tiny.xpm")], {},
         1, "is not a readable image: not a JPEG, PNG, BMP or TIFF file", 300, 5, None),
        ("54-byte BMP claiming 4x16777215 (found by fuzz_image)",
         [exe, "predict"] + W + out + [p("tall.bmp")], {},
         1, "above the limits (67108864 pixels, 32768 a side)", 300, 5, None),
        ("63-byte BMP claiming a 3.7 GB pixel offset (found by fuzz_image)",
         [exe, "predict"] + W + out + [p("offset.bmp")], {},
         1, "its BMP header is malformed", 300, 5, None),
        ("57-byte BMP claiming a 4 GB palette (found by fuzz_image)",
         [exe, "predict"] + W + out + [p("palette.bmp")], {},
         1, "its BMP header is malformed", 300, 5, None),
        ("JPEG truncated to half", [exe, "predict"] + W + out + [p("truncated.jpg")], {},
         1, "is a truncated JPEG image", 300, 5, None),
        ("split-list id ../outside (eval --save-masks)",
         [exe, "eval"] + W + ["--data", ds, "--save-masks", p("evalmasks")], {},
         1, "val.txt, line 2: id \"../outside\" starts with '.'", 300, 20,
         lambda: check(not os.path.exists(p("outside.png")) and not os.path.exists(p("evalmasks")),
                       "split-list id: nothing written outside (or inside) --save-masks")),
        ("predict -o x.jpg x.jpg", [exe, "predict"] + W + ["-o", "x.jpg", "x.jpg"],
         {"cwd": tmp}, 2, "would overwrite the input image 'x.jpg'", 300, 20,
         lambda: check(open(p("x.jpg"), "rb").read() == x_before, "-o x.jpg x.jpg: input kept")),
        ("predict d1/x.jpg d2/x.jpg -o out", [exe, "predict"] + W + ["-o", "out", "d1/x.jpg",
                                                                       "d2/x.jpg"],
         {"cwd": tmp}, 2, "would overwrite the output of 'd1/x.jpg'", 300, 20,
         lambda: check(not os.path.exists(p("out")), "colliding outputs: nothing written")),
        ("checkpoint write fails (full disk: 1 MB file size limit)",
         [exe, "train", "--stage", "2", "--preset", "condseg-compact", "--data", small, "--out",
          run_dir, "--image-size", "32", "--batch", "2", "--max-steps", "1"],
         {"fsize_limit": 1 << 20}, 1, "File too large", 600, 60, checkpoint_logged),
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--condseg", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--report", action="store_true")
    a = ap.parse_args()
    exe = os.path.abspath(a.condseg)
    tmp = tempfile.mkdtemp(prefix="condseg-bad-")
    try:
        if a.report:
            print("| case | exit | message | peak MB | s |\n|---|---|---|---|---|")
        for name, cmd, opts, status, needle, peak, seconds, extra in cases(tmp, exe, a.data):
            rc, err, mb, t = run(cmd, **opts)
            last = err.strip().splitlines()[-1] if err.strip() else ""
            if a.report:
                print(f"| {name} | {rc} | {last[:150].replace('|', '/')} | {mb:.0f} | {t:.1f} |",
                      flush=True)
                continue
            check(rc == status and needle in err and mb <= peak and t <= seconds,
                  f"{name}: exit {rc} (want {status}), peak {mb:.0f} MB (<= {peak}), "
                  f"{t:.1f} s (<= {seconds}): {last!r}")
            if extra:
                extra()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if a.report:
        return 0
    return summary("test_bad_input")


if __name__ == "__main__":
    sys.exit(main())
