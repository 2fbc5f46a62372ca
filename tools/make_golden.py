#!/usr/bin/python3
"""make_golden.py — reference ("golden") files for condseg's C test-suite.

Every reference value is computed in float64 by the PyTorch reference (tools/condseg_ref.py)
from float32 inputs/weights, then stored as float32, so the C float32 code is compared with
the true values rather than with another float32 rounding.

Subcommands:
  net   --kind full|stage1|compact --image IMG --out DIR [--seed 1]
        DIR/<kind>_weights.safetensors (deterministic random weights, realistic BN stats)
        DIR/<kind>_golden.safetensors  ("input" [2,3,256,256] and "out.<probe>" per probe)
  prob  --weights W --image IMG --out FILE.npy [--all-outputs] [--tta h,v,hv]
        float32 (K,S,S) probabilities, S = the input size the weights record (256 if none)
        (K=1: mask / stage-1 pred; K=4: mask,fg,bg,uc); the preset from condseg.preset;
        --tta: the mean over the image and its mirrors (h left-right, v top-bottom, hv
        both), each output mirrored back (`condseg predict --tta`)
  ops   --out DIR [--seed 2]
        DIR/ops_golden.safetensors: single-op cases with forward outputs and gradients;
        metadata "cases" = JSON list of {"name", "op", attributes, "inputs", "outputs", "grads"}
  all   --out DIR --data KVASIR_DIR
        ops + net full + net stage1 (image = first id of val.txt)
  train --stage 1|2 --out DIR --data KVASIR_DIR [--size 64] [--batch 2] [--seed 3]
        one training step of ConDSegStage1 (1) or ConDSeg (2); see TRAIN_DOC below
"""
import argparse
import json
import math
import os
import sys
import time
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import condseg_ref as R  # noqa: E402
import st_io  # noqa: E402

KIND_ARCH = {"full": "condseg", "stage1": "stage1", "compact": "condseg"}
# The network preset each kind uses: "compact" is the full network at condseg-compact's widths.
KIND_PRESET = {"full": "condseg-r50", "stage1": "condseg-r50", "compact": "condseg-compact"}


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------------------------
# input preprocessing (§1.2)
# ---------------------------------------------------------------------------------
def load_image(path, size=256):
    """imread(IMREAD_COLOR) → BGR uint8 → cv2.resize INTER_LINEAR → CHW → /255 (double)
    → float32. No normalization, BGR kept."""
    import cv2
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"cannot read image {path}")
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
    return (img.transpose(2, 0, 1).astype(np.float64) / 255.0).astype(np.float32)


def dataset_dir_of(image_path):
    return os.path.dirname(os.path.dirname(os.path.abspath(image_path)))


def read_ids(path):
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def calibration_image(image_path):
    """A Kvasir image different from the test image: the first id of train.txt (falls back
    to the first other image of the folder)."""
    ddir = dataset_dir_of(image_path)
    test_id = os.path.splitext(os.path.basename(image_path))[0]
    cands = []
    if os.path.exists(os.path.join(ddir, "train.txt")):
        cands = read_ids(os.path.join(ddir, "train.txt"))
    imgdir = os.path.dirname(os.path.abspath(image_path))
    cands += sorted(os.path.splitext(f)[0] for f in os.listdir(imgdir))
    for c in cands:
        p = os.path.join(imgdir, c + ".jpg")
        if c != test_id and os.path.exists(p):
            return p
    raise SystemExit(f"no calibration image next to {image_path}")


# ---------------------------------------------------------------------------------
# net
# ---------------------------------------------------------------------------------
def cmd_net(args):
    torch.set_num_threads(os.cpu_count() or 1)
    arch = KIND_ARCH[args.kind]
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    rng = np.random.RandomState(args.seed)
    img = load_image(args.image)
    # image 1: uniform noise, a very different input for the same weights
    x = np.stack([img, rng.random_sample(img.shape).astype(np.float32)])
    # calibration batch: another Kvasir image with a little noise, and a different uniform
    # noise image (the test batch has the same composition, so eval statistics are realistic
    # for both test images, but never equal to their batch statistics)
    cpath = calibration_image(args.image)
    cimg = load_image(cpath)
    calib = np.stack([
        np.clip(cimg + 0.03 * rng.standard_normal(cimg.shape), 0, 1),
        rng.random_sample(cimg.shape)]).astype(np.float32)

    preset = KIND_PRESET[args.kind]
    model = R.build(arch, preset)
    if preset == R.DEFAULT_PRESET:
        R.check_keys(model)   # the paper network's names and shapes (the tsv key lists)
    log(f"[net {args.kind}] calibration image {cpath}")
    R.randomize_(model, args.seed, torch.from_numpy(calib))
    t1 = time.time()
    wpath = os.path.join(args.out, f"{args.kind}_weights.safetensors")
    sd = R.state_dict_np(model)
    st_io.save_file(sd, wpath, R.weights_metadata(arch, preset))

    # float64 from exactly the stored float32 weights
    model.load_state_dict(OrderedDict((k, torch.from_numpy(v)) for k, v in sd.items()))
    model.eval()
    with torch.no_grad():
        # PyTorch's own float32 error per probe (max|f32 − f64| / max|f64|): what a correct
        # float32 implementation can be expected to reach; recorded for the C tolerances.
        pr32 = R.probes(model, torch.from_numpy(x))
        model.double()
        pr = R.probes(model, torch.from_numpy(x).double())
    f32_err = OrderedDict(
        (k, float((pr32[k].double() - v).abs().max() / v.abs().max().clamp_min(1e-30)))
        for k, v in pr.items())
    del pr32
    t2 = time.time()
    outs = ("mask", "mask_fg", "mask_bg", "mask_uc") if arch == "condseg" else ("pred",)
    for o in outs:
        for b in range(2):
            log("  golden " + R.saturation_report(f"{o}[{b}]", pr[o][b]))
    tensors = OrderedDict(input=x)
    for k, v in pr.items():
        tensors["out." + k] = v.float().numpy()
    gpath = os.path.join(args.out, f"{args.kind}_golden.safetensors")
    st_io.save_file(tensors, gpath, {
        "image": args.image, "calibration_image": cpath, "seed": str(args.seed),
        "weights": os.path.basename(wpath), "probes": json.dumps(list(pr.keys())),
        "precision": "computed in float64, stored float32",
        "pytorch_f32_rel_err": json.dumps({k: float(f"{e:.3e}") for k, e in f32_err.items()})})
    log("  PyTorch float32 vs float64, max rel. error: " +
        ", ".join(f"{k} {e:.1e}" for k, e in f32_err.items()))
    log(f"[net {args.kind}] randomize+calibrate {t1 - t0:.1f} s, float32+float64 forward "
        f"{t2 - t1:.1f} s, total {time.time() - t0:.1f} s; "
        f"{wpath} {os.path.getsize(wpath) / 1e6:.1f} MB, {gpath} {os.path.getsize(gpath) / 1e6:.1f} MB")


# ---------------------------------------------------------------------------------
# prob
# ---------------------------------------------------------------------------------
# The dimensions torch.flip mirrors for each TTA view of an N x C x H x W tensor.
TTA_DIMS = {"h": (3,), "v": (2,), "hv": (2, 3)}


def reference_outputs(weights, image, all_outputs=False, tta=()):
    """The reference network of a weights file (its preset, in float64) on an image read and
    resized as condseg does, at the input size the weights record: (arch, preset, size,
    outputs), the outputs a list of 1xKxHxW tensors (the mask probability only unless
    all_outputs). With tta (views named as in TTA_DIMS) each output is the mean over the
    image and its mirrored views, each view's output mirrored back."""
    arch = R.arch_of_file(weights)
    model = R.build(arch, R.preset_of_file(weights))
    R.load_weights(model, weights)
    model.double().eval()
    size = R.input_size_of_file(weights)
    x = torch.from_numpy(load_image(image, size)[None]).double()

    def run(inp):
        with torch.no_grad():
            if arch == "stage1":
                return [model(inp)]
            if all_outputs:
                return list(model(inp))
            return [model.forward_mask(inp)]

    outs = run(x)
    for view in tta:
        dims = TTA_DIMS[view]
        for k, o in enumerate(run(torch.flip(x, dims))):
            outs[k] = outs[k] + torch.flip(o, dims)
    outs = [o / (1 + len(tta)) for o in outs]
    return arch, model.preset, size, outs


def cmd_prob(args):
    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.time()
    tta = tuple(v for v in args.tta.split(",") if v) if args.tta else ()
    if any(v not in TTA_DIMS for v in tta):
        raise SystemExit(f"--tta {args.tta}: expected views among {', '.join(TTA_DIMS)}")
    arch, _, _, outs = reference_outputs(args.weights, args.image, args.all_outputs, tta)
    if arch == "stage1" and args.all_outputs:
        log("note: stage-1 weights have a single output; writing K=1")
    arr = np.concatenate([o[0].float().numpy() for o in outs], axis=0)  # K×H×W
    np.save(args.out, arr)
    log(f"[prob {arch}] {args.out} {arr.shape} in {time.time() - t0:.1f} s")


# ---------------------------------------------------------------------------------
# ops
# ---------------------------------------------------------------------------------
class OpCases:
    """Collects single-op cases. Inputs are drawn in float32 (stored exactly), computed in
    float64; outputs and autograd gradients are stored as float32."""

    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)
        self.cases = []
        self.tensors = OrderedDict()

    # -- float32-exact random tensors, returned as float64
    def randn(self, *shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=self.g) * scale + shift).float().double()

    def rand(self, *shape, lo=0.0, hi=1.0):
        return (torch.rand(*shape, generator=self.g) * (hi - lo) + lo).float().double()

    def distinct(self, *shape):
        """Values without ties (for the max ops): a random permutation of a grid."""
        n = int(np.prod(shape))
        perm = torch.randperm(n, generator=self.g).double()
        return ((perm - n / 2) * (4.0 / n)).float().double().reshape(shape)

    def prob(self, *shape, spread=2.0, avoid_half=False):
        p = torch.sigmoid(self.randn(*shape, scale=spread)).float().double()
        if avoid_half:  # keep thresholded targets well-defined
            p = torch.where((p - 0.5).abs() < 1e-3, p + 0.01, p).float().double()
        return p

    def add(self, name, op, attrs, inputs, fn, diff, loss=False):
        """inputs: OrderedDict role → float64 tensor; fn(**inputs) → OrderedDict of outputs,
        the first of which is differentiated; diff: input roles that get gradients."""
        ins = OrderedDict((k, v.clone().requires_grad_(k in diff)) for k, v in inputs.items())
        outs = fn(**ins)
        first = next(iter(outs.values()))
        if loss:
            dy = torch.ones_like(first)
        else:
            dy = self.randn(*first.shape)
        grads = torch.autograd.grad(first, [ins[r] for r in diff], dy) if diff else []
        for k, v in inputs.items():
            self._put(f"{name}.{k}", v)
        for k, v in outs.items():
            self._put(f"{name}.{k}", v)
        self._put(f"{name}.dy", dy)
        for r, gr in zip(diff, grads):
            self._put(f"{name}.d{r}", gr)
        case = {"name": name, "op": op}
        case.update(attrs)
        case.update(inputs=list(inputs), outputs=list(outs), grads=["d" + r for r in diff])
        self.cases.append(case)

    def _put(self, key, t):
        assert key not in self.tensors, key
        t = t.detach()
        if t.dim() == 0:
            t = t.reshape(1)
        self.tensors[key] = t.float().numpy()


def build_ops(seed):
    c = OpCases(seed)
    O = OrderedDict

    # ---- conv2d: cross-correlation, zero padding (§1.7)
    conv_specs = [
        # name, N, C, O, H, W, k, stride, pad, dil, bias
        ("conv2d_k1s1", 2, 8, 12, 9, 7, 1, 1, 0, 1, False),
        ("conv2d_k1s2", 2, 16, 32, 9, 11, 1, 2, 0, 1, False),          # downsample, odd map
        ("conv2d_k3s1p1", 2, 8, 16, 15, 17, 3, 1, 1, 1, False),
        ("conv2d_k3s1p1_bias", 2, 5, 7, 8, 8, 3, 1, 1, 1, True),
        ("conv2d_k3s2p1", 2, 8, 16, 15, 17, 3, 2, 1, 1, False),
        ("conv2d_k3s2p1_even", 2, 16, 16, 16, 16, 3, 2, 1, 1, False),
        ("conv2d_k7s2p3", 2, 3, 16, 32, 30, 7, 2, 3, 1, False),         # stem
        ("conv2d_k7s1p3", 2, 2, 1, 9, 7, 7, 1, 3, 1, False),            # spatial attention
        ("conv2d_k3d6", 2, 8, 8, 20, 18, 3, 1, 6, 6, False),
        ("conv2d_k3d12", 2, 8, 8, 16, 16, 3, 1, 12, 12, False),
        ("conv2d_k3d18", 2, 8, 8, 16, 16, 3, 1, 18, 18, False),         # pad > map
        ("conv2d_k3d18_tiny", 2, 4, 4, 8, 8, 3, 1, 18, 18, False),      # only centre tap hits
        ("conv2d_k1_bias", 2, 64, 1, 16, 16, 1, 1, 0, 1, True),         # output 1×1 conv
        ("conv2d_k3_big", 2, 64, 48, 12, 12, 3, 1, 1, 1, False),        # C·k·k = 576
        ("conv2d_k1_big", 2, 128, 64, 8, 8, 1, 1, 0, 1, False),
        ("conv2d_k3s1p1_odd_bias", 2, 6, 10, 15, 17, 3, 1, 1, 1, True),
    ]
    for name, N, C, Oc, H, W, k, s, p, d, bias in conv_specs:
        ins = O(x=c.randn(N, C, H, W), w=c.randn(Oc, C, k, k, scale=1 / math.sqrt(C * k * k)))
        if bias:
            ins["b"] = c.randn(Oc, scale=0.5)

        def fconv(x, w, b=None, s=s, p=p, d=d):
            return O(y=F.conv2d(x, w, b, stride=s, padding=p, dilation=d))
        c.add(name, "conv2d", dict(N=N, C=C, O=Oc, H=H, W=W, k=k, stride=s, pad=p, dil=d,
                                   bias=bias), ins, fconv, list(ins))

    # ---- per-pixel Linear (NHWC view)
    for name, N, Ci, Co, H, W in (("linear_small", 2, 16, 24, 5, 6),
                                  ("linear_attn", 2, 128, 324, 4, 4),
                                  ("linear_odd", 2, 7, 5, 3, 5)):
        ins = O(x=c.randn(N, Ci, H, W), w=c.randn(Co, Ci, scale=1 / math.sqrt(Ci)),
                b=c.randn(Co, scale=0.3))

        def flin(x, w, b):
            return O(y=F.linear(x.permute(0, 2, 3, 1), w, b).permute(0, 3, 1, 2))
        c.add(name, "linear", dict(N=N, cin=Ci, cout=Co, H=H, W=W), ins, flin, ["x", "w", "b"])

    # ---- BatchNorm
    for name, shape in (("batchnorm_eval", (2, 6, 5, 7)), ("batchnorm_eval_big", (2, 32, 4, 4))):
        C = shape[1]
        ins = O(x=c.randn(*shape, scale=2, shift=0.5), weight=c.rand(C, lo=0.5, hi=1.5),
                bias=c.rand(C, lo=-0.2, hi=0.2), running_mean=c.randn(C, scale=0.5),
                running_var=c.rand(C, lo=0.5, hi=2.0))

        def fbe(x, weight, bias, running_mean, running_var):
            return O(y=F.batch_norm(x, running_mean, running_var, weight, bias, training=False,
                                    eps=1e-5))
        c.add(name, "batchnorm_eval", dict(eps=1e-5), ins, fbe, ["x", "weight", "bias"])
    for name, shape in (("batchnorm_train", (2, 6, 4, 5)), ("batchnorm_train_big", (3, 16, 8, 8)),
                        ("batchnorm_train_1x1", (4, 8, 1, 1))):
        C = shape[1]
        ins = O(x=c.randn(*shape, scale=1.5, shift=0.7), weight=c.rand(C, lo=0.5, hi=1.5),
                bias=c.rand(C, lo=-0.2, hi=0.2), running_mean=c.randn(C, scale=0.5),
                running_var=c.rand(C, lo=0.5, hi=2.0))

        def fbt(x, weight, bias, running_mean, running_var):
            rm, rv = running_mean.detach().clone(), running_var.detach().clone()
            y = F.batch_norm(x, rm, rv, weight, bias, training=True, momentum=0.1, eps=1e-5)
            return O(y=y, running_mean_out=rm, running_var_out=rv)
        c.add(name, "batchnorm_train", dict(eps=1e-5, momentum=0.1), ins, fbt,
              ["x", "weight", "bias"])

    # ---- activations
    x = c.randn(2, 4, 5, 6)
    x = torch.where(x.abs() < 1e-3, x + 0.01, x)  # no exact/near zeros at the ReLU kink
    c.add("relu", "relu", {}, O(x=x), lambda x: O(y=F.relu(x)), ["x"])
    c.add("sigmoid", "sigmoid", {}, O(x=c.randn(2, 4, 5, 6, scale=3)),
          lambda x: O(y=torch.sigmoid(x)), ["x"])

    # ---- max-pool 3×3 s2 p1 (padding = −∞)
    for name, shape in (("maxpool", (2, 3, 8, 8)), ("maxpool_odd", (2, 3, 9, 7)),
                        ("maxpool_neg", (1, 2, 5, 6))):
        x = c.distinct(*shape)
        if name == "maxpool_neg":
            x = x - 5.0  # all negative: a zero-padding bug would show
        c.add(name, "maxpool", dict(k=3, stride=2, pad=1), O(x=x),
              lambda x: O(y=F.max_pool2d(x, 3, 2, 1)), ["x"])

    # ---- bilinear upsampling, align_corners=True
    for f, shape in ((2, (2, 3, 4, 5)), (4, (2, 2, 3, 4)), (8, (2, 2, 2, 3)), (16, (2, 2, 2, 2)),
                     (2, (1, 2, 1, 3))):
        name = f"upsample_x{f}" + ("_1row" if shape[2] == 1 else "")
        c.add(name, "upsample", dict(factor=f, align_corners=True), O(x=c.randn(*shape)),
              lambda x, f=f: O(y=F.interpolate(x, scale_factor=f, mode="bilinear",
                                                 align_corners=True)), ["x"])

    # ---- reductions
    c.add("global_avgpool", "global_avgpool", {}, O(x=c.randn(2, 6, 5, 7)),
          lambda x: O(y=x.mean(dim=(2, 3), keepdim=True)), ["x"])
    c.add("global_maxpool", "global_maxpool", {}, O(x=c.distinct(2, 6, 5, 7)),
          lambda x: O(y=x.amax(dim=(2, 3), keepdim=True)), ["x"])
    c.add("channel_mean", "channel_mean", {}, O(x=c.randn(2, 6, 5, 7)),
          lambda x: O(y=x.mean(dim=1, keepdim=True)), ["x"])
    c.add("channel_max", "channel_max", {}, O(x=c.distinct(2, 6, 5, 7)),
          lambda x: O(y=x.amax(dim=1, keepdim=True)), ["x"])

    # ---- softmax over the last axis (9)
    c.add("softmax", "softmax", dict(axis=-1), O(x=c.randn(2, 3, 5, 9, scale=2)),
          lambda x: O(y=torch.softmax(x, dim=-1)), ["x"])

    # ---- unfold / fold (k3 p1 s1)
    c.add("unfold", "unfold", dict(k=3, pad=1, stride=1), O(x=c.randn(2, 3, 5, 6)),
          lambda x: O(y=F.unfold(x, 3, padding=1, stride=1)), ["x"])
    c.add("fold", "fold", dict(k=3, pad=1, stride=1, h=5, w=6), O(x=c.randn(2, 27, 30)),
          lambda x: O(y=F.fold(x, (5, 6), 3, padding=1, stride=1)), ["x"])
    c.add("fold_odd", "fold", dict(k=3, pad=1, stride=1, h=7, w=3), O(x=c.randn(1, 18, 21)),
          lambda x: O(y=F.fold(x, (7, 3), 3, padding=1, stride=1)), ["x"])

    # ---- outlook attention (CDFA pass without projections)
    for name, C, heads, H, W in (("outlook_c128_9x7", 128, 4, 9, 7),
                                 ("outlook_c128_16x16", 128, 4, 16, 16),
                                 ("outlook_c64_6x5", 64, 4, 6, 5)):
        scale = (C / heads) ** -0.5
        ins = O(v=c.randn(2, C, H, W), a=c.randn(2, heads * 81, H, W, scale=3))
        c.add(name, "outlook_attention", dict(heads=heads, kernel=3, pad=1, scale=scale, C=C),
              ins, lambda v, a, heads=heads, scale=scale:
              O(y=R.outlook_attention(v, a, heads, scale, 3)), ["v", "a"])

    # ---- elementwise / structural
    c.add("mul_channel", "mul_channel", {}, O(x=c.randn(2, 5, 4, 6), s=c.rand(2, 5, 1, 1)),
          lambda x, s: O(y=x * s), ["x", "s"])
    c.add("mul_spatial", "mul_spatial", {}, O(x=c.randn(2, 5, 4, 6), m=c.rand(2, 1, 4, 6)),
          lambda x, m: O(y=x * m), ["x", "m"])
    c.add("add", "add", {}, O(a=c.randn(2, 5, 4, 6), b=c.randn(2, 5, 4, 6)),
          lambda a, b: O(y=a + b), ["a", "b"])
    c.add("concat", "concat", dict(axis=1), O(a=c.randn(2, 3, 4, 6), b=c.randn(2, 5, 4, 6)),
          lambda a, b: O(y=torch.cat([a, b], 1)), ["a", "b"])

    # ---- attention modules
    for name, C, H, W in (("channel_attention_c32", 32, 6, 5), ("channel_attention_c128", 128, 8, 8)):
        h = C // 16
        ins = O(x=c.randn(2, C, H, W), fc1=c.randn(h, C, 1, 1, scale=1 / math.sqrt(C)),
                fc2=c.randn(C, h, 1, 1, scale=1 / math.sqrt(h)))
        # distinct maxima per channel: add a permutation-derived offset
        ins["x"] = (ins["x"] + c.distinct(2, C, H, W) * 0.01).float().double()
        c.add(name, "channel_attention", dict(C=C, hidden=h), ins,
              lambda x, fc1, fc2: O(y=R.channel_attention_f(x, fc1, fc2)), ["x", "fc1", "fc2"])
    for name, C, H, W in (("spatial_attention", 8, 9, 7), ("spatial_attention_16", 16, 16, 16)):
        ins = O(x=(c.randn(2, C, H, W) + c.distinct(2, C, H, W) * 0.01).float().double(),
                conv1=c.randn(1, 2, 7, 7, scale=1 / math.sqrt(98)))
        c.add(name, "spatial_attention", dict(C=C), ins,
              lambda x, conv1: O(y=R.spatial_attention_f(x, conv1)), ["x", "conv1"])

    # ---- losses (§5); dy = 1
    def soft_target(*shape):
        t = (c.rand(*shape) > 0.5).double()
        soft = c.rand(*shape)
        pick = c.rand(*shape) < 0.2  # some soft (edge/JPEG) values
        return torch.where(pick, soft, t).float().double()

    for name, shape in (("dicebce", (2, 1, 16, 16)), ("dicebce_b1", (1, 1, 8, 8))):
        ins = O(p=c.prob(*shape), t=soft_target(*shape))
        c.add(name, "dicebce", dict(smooth=1.0), ins,
              lambda p, t: O(loss=R.dice_bce(p, t).reshape(1)), ["p"], loss=True)

    for name, fg_scale in (("stage2_loss", 1.0), ("stage2_loss_smallfg", 0.02)):
        B, H, W = 2, 16, 16
        y1 = soft_target(B, 1, H, W)
        ins = O(mask=c.prob(B, 1, H, W), fg=(c.prob(B, 1, H, W) * fg_scale).float().double(),
                bg=c.prob(B, 1, H, W), uc=c.prob(B, 1, H, W), y1=y1,
                y2=(1 - y1).float().double())

        def fs2(mask, fg, bg, uc, y1, y2):
            parts = R.stage2_loss(mask, fg, bg, uc, y1, y2)
            return O((k, v.reshape(1)) for k, v in parts.items())
        c.add(name, "stage2_loss", dict(hw=H * W, B=B), ins, fs2, ["mask", "fg", "bg", "uc"],
              loss=True)

    for name, shape in (("stage1_loss", (2, 1, 16, 16)),):
        ins = O(pred=c.prob(*shape, avoid_half=True), pred_aug=c.prob(*shape, avoid_half=True),
                y1=soft_target(*shape))
        c.add(name, "stage1_loss", {}, ins,
              lambda pred, pred_aug, y1: O(loss=R.stage1_loss(pred, pred_aug, y1).reshape(1)),
              ["pred", "pred_aug"], loss=True)
    return c


def cmd_ops(args):
    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.time()
    os.makedirs(args.out, exist_ok=True)
    c = build_ops(args.seed)
    path = os.path.join(args.out, "ops_golden.safetensors")
    st_io.save_file(c.tensors, path, {"cases": json.dumps(c.cases), "seed": str(args.seed),
                                      "precision": "computed in float64, stored float32"})
    log(f"[ops] {len(c.cases)} cases, {len(c.tensors)} tensors, {path} "
        f"{os.path.getsize(path) / 1e6:.2f} MB in {time.time() - t0:.1f} s")


def cmd_all(args):
    t0 = time.time()
    cmd_ops(argparse.Namespace(out=args.out, seed=2))
    ids = read_ids(os.path.join(args.data, "val.txt"))
    img = os.path.join(args.data, "images", ids[0] + ".jpg")
    for kind in ("full", "stage1"):
        cmd_net(argparse.Namespace(kind=kind, image=img, out=args.out, seed=1))
    log(f"[all] done in {time.time() - t0:.1f} s")


# ---------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------
TRAIN_DOC = """train: the reference for ONE training step (spec §5, §6.1–§6.3, §6.6), for the C
training step's tests. Computed in float64 from float32-exact inputs and weights, stored
float32 (I64 for num_batches_tracked).

Network: ConDSeg (--stage 2) or ConDSegStage1 (--stage 1) of condseg_ref.py, randomized
with randomize_(seed) and BN-calibrated (running statistics = the batch statistics of one
train-mode pass, num_batches_tracked = 7) on a calibration batch: the train.txt ids
batch…2·batch−1, resized to size×size, plus N(0, 0.03²) noise clipped to [0,1]. The
weights are rounded to float32, written, and the step runs in float64 from exactly those.

Batch: the first `batch` ids of train.txt, preprocessed as §1.2 but resized to size×size
(default 64; the network accepts any multiple of 16): image cv2.imread BGR, cv2.resize
INTER_LINEAR, /255; y1 = resized IMREAD_GRAYSCALE mask / 255; y2 = resized (255 − mask)
/ 255. No spatial augmentation.

Step (model in train mode: BN uses batch statistics and updates its running statistics,
momentum 0.1, unbiased variance, num_batches_tracked += 1 per forward):
  stage 2: (mask, fg, bg, uc) = model(x); loss = §5.2 stage2_loss(mask, fg, bg, uc, y1, y2)
  stage 1: pred = model(x); pred_aug = model(x_aug) (two forwards, in this order: the BN
           running statistics are updated twice, num_batches_tracked 7 → 9);
           loss = §5.3 stage1_loss(pred, pred_aug, y1)
  loss.backward(); then one torch.optim.Adam step (betas (0.9, 0.999), eps 1e-8, no weight
  decay, from zero moments, t = 1):
  stage 2: two param groups: backbone (parameter names starting layer0. … layer3.) with
           lr_backbone = 3e-5 (deliberately ≠ lr, so that a group mix-up shows), the rest
           with lr = 1e-4; stage 1: one group, lr = 1e-4.
x_aug (stage 1): condseg_ref.photometric_aug(x) with the FIXED parameters in the metadata
key "photometric" (ColorJitter brightness 1.2, contrast 0.8, saturation 1.1, hue 0.05, in
that order, no grayscale, vertical 1×7 Gaussian blur σ 1.3, reflect padding; the factors
are the float32 roundings of these decimals, as a C float holds them), computed in float64
from x and rounded to float32; the network is fed exactly the stored float32 x_aug.

Files (default size 64, batch 2; B = batch, S = size):
  DIR/train{stage}_weights.safetensors  the state dict BEFORE the step, same format as
      `net`'s weights files (F32, num_batches_tracked I64 0-d; metadata condseg.arch)
  DIR/train{stage}_golden.safetensors:
    x             F32 [B,3,S,S]   input batch (BGR, [0,1])
    y1, y2        F32 [B,1,S,S]   targets
    x_aug         F32 [B,3,S,S]   stage 1 only: the perturbed batch fed to the 2nd forward
    out.mask, out.fg, out.bg, out.uc   F32 [B,1,S,S]   stage 2 train-mode outputs
    out.pred, out.pred_aug             F32 [B,1,S,S]   stage 1 train-mode outputs
    grad_out.<o>  F32 [B,1,S,S]   dloss/d out.<o> (what the losses hand to the backward)
    cons_target.pred, cons_target.pred_aug   F32 [B,1,S,S]   stage 1 only: the gradient-free
                  consistency targets 1[pred_aug > .5] (for pred) and 1[pred > .5]
    loss          F32 [1]         total loss
    stage 2 parts F32 [1]: loss_mask, loss_fg, loss_bg, beta1, beta2, loss_comp
    stage 1 parts F32 [1]: loss_pred, loss_pred_aug, loss_cons (loss = their sum)
    grad.<name>   F32, the parameter's shape: dloss/dparameter for every trainable
                  parameter (every state-dict entry except the BN running_mean,
                  running_var, num_batches_tracked), state-dict order
    after.<name>  every state-dict entry after the optimizer step: parameters after Adam,
                  running_mean/running_var after the train-mode forward(s), F32;
                  num_batches_tracked I64 0-d
  metadata: stage, arch, size, batch, seed, lr, lr_backbone (stage 1: = lr, one group),
    adam (JSON: betas, eps, weight_decay, step), param_groups (JSON), ids, calibration_ids,
    weights (file name), num_batches_tracked_before, photometric (stage 1, JSON with the
    field names of cs_photometric_params: order, brightness, contrast, saturation, hue,
    grayscale, sigma), cons_min_margin, cons_near_half (stage 1: min |p − 0.5|
    over pred and pred_aug, and how many pixels lie within 1e-6/1e-5/1e-4 of 0.5), stats
    (JSON: gradient and update magnitudes, exact-zero gradient count, Adam vs the §6.1
    formula), precision.

Notes for the consumer:
  * Stage 1 thresholds its predictions (consistency targets 1[p > .5]). With 2·B·S² pixels
    spread around 0.5 some always lie within float32 forward error of 0.5 (seed 3: one at
    3e-8 from it; PyTorch's own float32 forward flips that target, which moves some
    parameter gradients by up to 3e-3 of their scale). So test the stage-1 backward from
    the stored outputs: cs_loss_stage1(out.pred, out.pred_aug, y1) reproduces grad_out.*
    (the stored float32 outputs threshold exactly to cons_target.*, checked here), and
    back-propagating grad_out.* through the network gives grad.*; compare end-to-end
    gradients only loosely.
  * At 64×64 the maps entering dconv2/3/4 are 16², 8², 4²: the taps of the dilated
    (6/12/18) 3×3 convolutions that reach only padding get an exact-zero gradient (most of
    dconv4's weights), hence an exact-zero Adam update.
  * At step 1 Adam's update is lr·g/(|g| + 1e-8) ≈ ±lr wherever |g| ≫ 1e-8, so
    `after − before` is ±lr up to float32 storage (|θ|·6e-8); an element whose gradient
    is within float32 error of 0 can flip sign — compare updates where |grad| is well
    above the gradient tolerance, elsewhere only |after − before| ≤ lr.
"""

TRAIN_LR = 1e-4
TRAIN_LR_BACKBONE = 3e-5
TRAIN_BETAS = (0.9, 0.999)
TRAIN_EPS = 1e-8
# Fixed stage-1 photometric parameters (order: brightness, contrast, saturation, hue).
TRAIN_PHOTOMETRIC = OrderedDict(order=[0, 1, 2, 3], brightness=1.2, contrast=0.8,
                                saturation=1.1, hue=0.05, grayscale=False, sigma=1.3)


def load_sample(data, sample_id, size):
    """§1.2 at size×size: x (3×S×S), y1 and y2 (1×S×S), float32."""
    import cv2
    x = load_image(os.path.join(data, "images", sample_id + ".jpg"), size)
    m = cv2.imread(os.path.join(data, "masks", sample_id + ".jpg"), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise SystemExit(f"cannot read mask of {sample_id}")
    # background from the un-augmented mask, resized independently (§1.2 step 3, 5)
    y1 = cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR)
    y2 = cv2.resize(255 - m, (size, size), interpolation=cv2.INTER_LINEAR)
    f = lambda a: (a.astype(np.float64) / 255.0).astype(np.float32)[None]  # noqa: E731
    return x, f(y1), f(y2)


def _f32(v):
    """A decimal parameter as the float32 a C `float` holds, back in double."""
    return float(np.float32(v))


def cmd_train(args):
    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.time()
    stage, S, B = args.stage, args.size, args.batch
    if S % 16:
        raise SystemExit("--size must be a multiple of 16")
    arch = "stage1" if stage == 1 else "condseg"
    os.makedirs(args.out, exist_ok=True)
    ids = read_ids(os.path.join(args.data, "train.txt"))
    batch_ids, calib_ids = ids[:B], ids[B:2 * B]
    samples = [load_sample(args.data, i, S) for i in batch_ids]
    x = np.stack([s[0] for s in samples])
    y1 = np.stack([s[1] for s in samples])
    y2 = np.stack([s[2] for s in samples])
    rng = np.random.RandomState(args.seed)
    calib = np.stack([np.clip(load_image(os.path.join(args.data, "images", i + ".jpg"), S) +
                              0.03 * rng.standard_normal((3, S, S)), 0, 1)
                      for i in calib_ids]).astype(np.float32)

    model = R.build(arch)
    R.check_keys(model)
    log(f"[train {stage}] batch {batch_ids}, calibration {calib_ids}, {S}x{S}")
    R.randomize_(model, args.seed, torch.from_numpy(calib))
    sd = R.state_dict_np(model)
    wpath = os.path.join(args.out, f"train{stage}_weights.safetensors")
    st_io.save_file(sd, wpath, R.weights_metadata(arch))
    nbt_before = int(sd[next(k for k in sd if k.endswith("num_batches_tracked"))])
    t1 = time.time()

    # float64 from exactly the stored float32 weights; train mode (batch statistics)
    model.load_state_dict(OrderedDict((k, torch.from_numpy(np.asarray(v))) for k, v in sd.items()))
    model.double().train()
    model.zero_grad(set_to_none=True)
    xt = torch.from_numpy(x).double()
    y1t, y2t = torch.from_numpy(y1).double(), torch.from_numpy(y2).double()
    tensors = OrderedDict(x=x, y1=y1, y2=y2)
    meta = OrderedDict()
    if stage == 2:
        outs = OrderedDict(zip(("mask", "fg", "bg", "uc"), model(xt)))
        for o in outs.values():
            o.retain_grad()
        parts = R.stage2_loss(*outs.values(), y1t, y2t)
    else:
        photo = OrderedDict((k, _f32(v) if isinstance(v, float) else v)
                            for k, v in TRAIN_PHOTOMETRIC.items())
        x_aug = R.photometric_aug(xt, photo).float().numpy()
        tensors["x_aug"] = x_aug
        pred = model(xt)
        pred_aug = model(torch.from_numpy(x_aug).double())
        outs = OrderedDict(pred=pred, pred_aug=pred_aug)
        for o in outs.values():
            o.retain_grad()
        parts = R.stage1_loss_parts(pred, pred_aug, y1t)
        total2 = R.stage1_loss(pred, pred_aug, y1t)
        assert abs(total2.item() - parts["loss"].item()) <= 1e-12 * abs(total2.item())
        meta["photometric"] = json.dumps(TRAIN_PHOTOMETRIC)
        dist = torch.cat([(pred.detach() - 0.5).abs().reshape(-1),
                          (pred_aug.detach() - 0.5).abs().reshape(-1)])
        meta["cons_min_margin"] = f"{dist.min().item():.3e}"
        meta["cons_near_half"] = json.dumps({f"{e:.0e}": int((dist < e).sum())
                                             for e in (1e-6, 1e-5, 1e-4)})
        # the stored float32 outputs must give the float64 consistency targets (they do
        # unless a probability lies within half a float32 ulp above 0.5)
        for o in (pred, pred_aug):
            if not torch.equal(o.detach() > 0.5, o.detach().float() > 0.5):
                raise SystemExit("a stored float32 probability rounds across 0.5; "
                                 "use another --seed")
    loss = parts["loss"]
    if not math.isfinite(loss.item()):
        raise SystemExit(f"loss is not finite: {loss.item()}")
    loss.backward()
    t2 = time.time()

    named = list(model.named_parameters())
    grads = OrderedDict((n, p.grad.detach()) for n, p in named)  # Adam leaves .grad alone
    before = OrderedDict((n, p.detach().clone()) for n, p in named)
    if stage == 2:
        backbone = [p for n, p in named if n.startswith(R.TRUNK_PREFIXES)]
        rest = [p for n, p in named if not n.startswith(R.TRUNK_PREFIXES)]
        groups = [{"params": backbone, "lr": TRAIN_LR_BACKBONE}, {"params": rest, "lr": TRAIN_LR}]
        lr_of = {n: TRAIN_LR_BACKBONE if n.startswith(R.TRUNK_PREFIXES) else TRAIN_LR
                 for n, _ in named}
        meta["param_groups"] = json.dumps([
            {"name": "backbone", "prefixes": list(R.TRUNK_PREFIXES), "lr": TRAIN_LR_BACKBONE,
             "tensors": len(backbone)},
            {"name": "rest", "lr": TRAIN_LR, "tensors": len(rest)}])
        lr_backbone = TRAIN_LR_BACKBONE
    else:
        groups = [{"params": [p for _, p in named], "lr": TRAIN_LR}]
        lr_of = {n: TRAIN_LR for n, _ in named}
        meta["param_groups"] = json.dumps([{"name": "all", "lr": TRAIN_LR, "tensors": len(named)}])
        lr_backbone = TRAIN_LR
    opt = torch.optim.Adam(groups, betas=TRAIN_BETAS, eps=TRAIN_EPS, weight_decay=0)
    opt.step()
    t3 = time.time()

    # Adam check: torch.optim.Adam against the spec's formula (§6.1), in float64
    adam_err = 0.0
    for n, p in named:
        ref, _, _ = R.adam_reference_step(before[n], grads[n], torch.zeros_like(p),
                                          torch.zeros_like(p), 1, lr_of[n], TRAIN_BETAS,
                                          TRAIN_EPS)
        adam_err = max(adam_err, (ref - p.detach()).abs().max().item() / lr_of[n])
    if adam_err > 1e-9:
        raise SystemExit(f"torch.optim.Adam differs from the §6.1 formula: {adam_err:.3e} lr")

    # sanity: gradients not all zero, BN statistics moved, counters advanced
    sd_after = model.state_dict()
    gmax = {n: g.abs().max().item() for n, g in grads.items()}
    zero_grads = [n for n, m in gmax.items() if m == 0.0]
    if zero_grads:
        raise SystemExit(f"parameters with an all-zero gradient: {zero_grads[:10]}")
    zero = sum(int((g == 0).sum()) for g in grads.values())
    tiny = sum(int(((g.abs() < 1e-8) & (g != 0)).sum()) for g in grads.values())
    n_params = sum(g.numel() for g in grads.values())
    moved = [k for k in sd_after if k.endswith("running_mean") and
             torch.equal(sd_after[k].float(), torch.from_numpy(sd[k]))]
    if moved:
        raise SystemExit(f"BN running statistics that did not move: {moved[:10]}")
    forwards = 2 if stage == 1 else 1
    nbt_after = {int(v) for k, v in sd_after.items() if k.endswith("num_batches_tracked")}
    if nbt_after != {nbt_before + forwards}:
        raise SystemExit(f"num_batches_tracked after the step: {nbt_after}")
    upd = max((sd_after[n].detach() - before[n]).abs().max().item() / lr_of[n] for n, _ in named)
    dvar = max(((sd_after[k] - torch.from_numpy(sd[k]).double()).abs().max().item()
                for k in sd if k.endswith("running_var")))
    stats = OrderedDict(
        grad_abs_max=max(gmax.values()), grad_abs_max_min_over_tensors=min(gmax.values()),
        grad_elements=n_params, grad_elements_zero=zero, grad_elements_nonzero_below_1e8=tiny,
        update_max_over_lr=upd,
        running_var_max_change=dvar, adam_vs_formula_max_over_lr=adam_err)

    # What float32 arithmetic itself costs on this random network: PyTorch's own float32
    # gradients against the float64 ones, per parameter (the tests' gradient tolerance is
    # stated relative to it). Stage 1 back-propagates the float64 output gradients, as the
    # C test does (its consistency targets are thresholds that float32 can flip).
    m32 = R.build(arch)
    m32.load_state_dict(OrderedDict((k, torch.from_numpy(np.asarray(v))) for k, v in sd.items()))
    m32.float().train()
    if stage == 2:
        o32 = m32(torch.from_numpy(x))
        R.stage2_loss(*o32, torch.from_numpy(y1), torch.from_numpy(y2))["loss"].backward()
    else:
        p32 = m32(torch.from_numpy(x))
        pa32 = m32(torch.from_numpy(tensors["x_aug"]))
        torch.autograd.backward([p32, pa32], [outs["pred"].grad.float(), outs["pred_aug"].grad.float()])
    f32_err, f32_l2 = OrderedDict(), OrderedDict()
    for n, p32 in m32.named_parameters():
        ref = grads[n].double()
        diff = p32.grad.double() - ref
        scale, norm = ref.abs().max().item(), ref.norm().item()
        f32_err[n] = float(f"{diff.abs().max().item() / scale if scale > 0 else 0.0:.3e}")
        f32_l2[n] = float(f"{diff.norm().item() / norm if norm > 0 else 0.0:.3e}")
    meta["pytorch_f32_grad_rel_err"] = json.dumps(f32_err)
    meta["pytorch_f32_grad_rel_l2"] = json.dumps(f32_l2)
    errs, l2s = sorted(f32_err.values()), sorted(f32_l2.values())
    log(f"  PyTorch float32 gradients vs float64, per tensor: max-abs/scale median "
        f"{errs[len(errs) // 2]:.2e} worst {errs[-1]:.2e}; relative L2 median "
        f"{l2s[len(l2s) // 2]:.2e} worst {l2s[-1]:.2e}")

    for name, o in outs.items():
        tensors["out." + name] = o.detach().float().numpy()
    for name, o in outs.items():
        tensors["grad_out." + name] = o.grad.detach().float().numpy()
    if stage == 1:
        tensors["cons_target.pred"] = (outs["pred_aug"].detach() > 0.5).float().numpy()
        tensors["cons_target.pred_aug"] = (outs["pred"].detach() > 0.5).float().numpy()
    for k, v in parts.items():
        tensors[k] = np.array([v.item()], np.float32)
    for n, g in grads.items():
        tensors["grad." + n] = g.float().numpy()
    for k, v in sd_after.items():
        v = v.detach()
        tensors["after." + k] = (v.numpy().astype(np.int64) if k.endswith("num_batches_tracked")
                                 else v.float().numpy())
    meta.update(stage=str(stage), arch=arch, size=str(S), batch=str(B), seed=str(args.seed),
                lr=repr(TRAIN_LR), lr_backbone=repr(lr_backbone),
                adam=json.dumps({"betas": list(TRAIN_BETAS), "eps": TRAIN_EPS,
                                 "weight_decay": 0.0, "step": 1}),
                ids=json.dumps(batch_ids), calibration_ids=json.dumps(calib_ids),
                weights=os.path.basename(wpath), num_batches_tracked_before=str(nbt_before),
                stats=json.dumps(stats),
                precision="computed in float64 from float32 inputs/weights, stored float32")
    gpath = os.path.join(args.out, f"train{stage}_golden.safetensors")
    st_io.save_file(tensors, gpath, meta)
    t4 = time.time()
    log("  loss " + ", ".join(f"{k} {v.item():.6f}" for k, v in parts.items()))
    for name, o in outs.items():
        log("  " + R.saturation_report(name, o))
    log("  " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in stats.items()))
    if stage == 1:
        log(f"  consistency targets: min |p - 0.5| = {meta['cons_min_margin']}, pixels within "
            f"1e-6/1e-5/1e-4 of 0.5: {meta['cons_near_half']}")
    log(f"[train {stage}] randomize+calibrate {t1 - t0:.1f} s, float64 forward+backward "
        f"{t2 - t1:.1f} s, Adam {t3 - t2:.1f} s, checks+write {t4 - t3:.1f} s, total "
        f"{t4 - t0:.1f} s; {wpath} {os.path.getsize(wpath) / 1e6:.1f} MB, {gpath} "
        f"{os.path.getsize(gpath) / 1e6:.1f} MB")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 2)[2])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("net", help="random-weight network + golden intermediates")
    p.add_argument("--kind", choices=tuple(KIND_ARCH), required=True)
    p.add_argument("--image", required=True, help="test image (first id of val.txt)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(fn=cmd_net)
    p = sub.add_parser("prob", help="reference probabilities for `condseg predict --prob`")
    p.add_argument("--weights", required=True, help="safetensors weights (full or stage 1)")
    p.add_argument("--image", required=True)
    p.add_argument("--out", required=True,
                   help="output .npy (float32, K×S×S, S the weights' condseg.input_size)")
    p.add_argument("--all-outputs", action="store_true", help="K=4: mask, fg, bg, uc")
    p.add_argument("--tta", default="", help="mirrored views to average in, e.g. h,v "
                   "(h left-right, v top-bottom, hv both)")
    p.set_defaults(fn=cmd_prob)
    p = sub.add_parser("ops", help="single-op forward/backward cases")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=2)
    p.set_defaults(fn=cmd_ops)
    p = sub.add_parser("all", help="ops + net full + net stage1")
    p.add_argument("--out", required=True)
    p.add_argument("--data", required=True, help="Kvasir-SEG folder (images/, val.txt)")
    p.set_defaults(fn=cmd_all)
    p = sub.add_parser("train", help="one training step (see TRAIN_DOC)",
                       description=TRAIN_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", type=int, choices=(1, 2), required=True)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--data", required=True, help="Kvasir-SEG folder (images/, masks/, train.txt)")
    p.add_argument("--size", type=int, default=64, help="input size (multiple of 16)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seed", type=int, default=3)
    p.set_defaults(fn=cmd_train)
    args = ap.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
