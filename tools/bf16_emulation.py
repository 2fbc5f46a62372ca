#!/usr/bin/python3
"""bf16_emulation.py — what bfloat16 arithmetic itself does to a network's masks, measured
on the PyTorch reference (tools/condseg_ref.py) instead of on condseg: the network of
WEIGHTS in float32 on a split's images, once as it is and once with the inputs and weights
of every convolution and Linear layer rounded to bfloat16 (round to nearest even), their
products summed in float32 — the arithmetic condseg's --precision bf16 does (test_bf16:
condseg's bf16 equals float32 on bf16-rounded inputs within 1e-5). Like condseg, tiny
problems stay float32 (kernels/conv_cpu.c, conv_small: fewer than 64 output pixels, fewer
than 8 output channels or fewer than 2 input channels).

It answers whether a bf16 engine can keep a network's masks: printed are the Dice between
the two precisions' masks (threshold 0.5, at the network's input size) per image, mean and
worst, and each precision's mean Dice against the ground truth (masks resized to the input
size, nearest neighbour), so that condseg's own bf16 figures (bench/bf16_accuracy.sh) can
be read against what any bf16-input engine would get on the same weights.

  bf16_emulation.py WEIGHTS [--data DIR] [--split val] [--limit N] [--threads N]
"""
import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import condseg_ref as R  # noqa: E402
from make_golden import load_image, read_ids  # noqa: E402

_conv2d, _linear = F.conv2d, F.linear


def to_bf16(t):
    return t.to(torch.bfloat16).to(t.dtype)


def _conv_small(pixels, out_c, in_c):
    return pixels < 64 or out_c < 8 or in_c < 2


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _out_pixels(x, w, stride, padding, dilation):
    n = x.shape[0]
    for i in range(2):
        s, p, d = _pair(stride)[i], _pair(padding)[i], _pair(dilation)[i]
        n *= (x.shape[2 + i] + 2 * p - d * (w.shape[2 + i] - 1) - 1) // s + 1
    return n


def conv2d_bf16(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if groups != 1 or isinstance(padding, str) or _conv_small(
            _out_pixels(x, w, stride, padding, dilation), w.shape[0], w.shape[1]):
        return _conv2d(x, w, bias, stride, padding, dilation, groups)
    return _conv2d(to_bf16(x), to_bf16(w), bias, stride, padding, dilation, groups)


def linear_bf16(x, w, bias=None):
    if _conv_small(x.numel() // x.shape[-1], w.shape[0], w.shape[1]):
        return _linear(x, w, bias)
    return _linear(to_bf16(x), to_bf16(w), bias)


def masks(model, x, emulate):
    F.conv2d, F.linear = (conv2d_bf16, linear_bf16) if emulate else (_conv2d, _linear)
    try:
        with torch.no_grad():
            return (model.forward_mask(x)[0, 0] > 0.5).numpy()
    finally:
        F.conv2d, F.linear = _conv2d, _linear


def dice(a, b):
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * (a & b).sum() / s


def truth(data, name, size):
    import cv2
    stem = os.path.splitext(name)[0]
    for ext in (".jpg", ".png", os.path.splitext(name)[1]):
        path = os.path.join(data, "masks", stem + ext)
        if os.path.exists(path):
            m = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
            return cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST) > 127
    raise SystemExit(f"{data}/masks: no mask for {name}")


def image_path(data, name):
    for cand in (name, name + ".jpg", name + ".png"):
        path = os.path.join(data, "images", cand)
        if os.path.exists(path):
            return path
    raise SystemExit(f"{data}/images: no image {name}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights")
    ap.add_argument("--data", default=os.path.join(
        os.environ.get("CONDSEG_DATA", "../shared/data"), "kvasir-seg"))
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=0, help="only the first N images")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = R.build(R.arch_of_file(a.weights), R.preset_of_file(a.weights))
    R.load_weights(model, a.weights)
    model.float().eval()
    size = R.input_size_of_file(a.weights)
    names = read_ids(os.path.join(a.data, a.split + ".txt"))[:a.limit or None]
    between, vs_truth = [], {False: [], True: []}
    t0 = time.time()
    for name in names:
        x = torch.from_numpy(load_image(image_path(a.data, name), size)[None])
        gt = truth(a.data, name, size)
        m = {e: masks(model, x, e) for e in (False, True)}
        between.append(dice(m[False], m[True]))
        for e in m:
            vs_truth[e].append(dice(m[e], gt))
    print(f"{a.weights} ({model.preset}, {size}x{size}) on {len(names)} images of "
          f"{a.data} {a.split}, {time.time() - t0:.0f} s")
    print(f"Dice between emulated-bf16 and fp32 masks: mean {np.mean(between):.4f}, "
          f"worst {np.min(between):.4f}")
    f32, b16 = np.mean(vs_truth[False]), np.mean(vs_truth[True])
    print(f"mDSC against the ground truth: fp32 {f32:.4f}, emulated bf16 {b16:.4f} "
          f"(diff {b16 - f32:+.4f})")


if __name__ == "__main__":
    main()
