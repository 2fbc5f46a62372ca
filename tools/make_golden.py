#!/usr/bin/python3
"""make_golden.py — reference ("golden") files for condseg's C test-suite.

Every reference value is computed in float64 by the PyTorch reference (tools/condseg_ref.py)
from float32 inputs/weights, then stored as float32, so the C float32 code is compared with
the true values rather than with another float32 rounding.

Subcommands:
  net   --kind full|stage1 --image IMG --out DIR [--seed 1]
        DIR/<kind>_weights.safetensors (deterministic random weights, realistic BN stats)
        DIR/<kind>_golden.safetensors  ("input" [2,3,256,256] and "out.<probe>" per probe)
  prob  --weights W --image IMG --out FILE.npy [--all-outputs]
        float32 (K,256,256) probabilities (K=1: mask / stage-1 pred; K=4: mask,fg,bg,uc)
  ops   --out DIR [--seed 2]
        DIR/ops_golden.safetensors: single-op cases with forward outputs and gradients;
        metadata "cases" = JSON list of {"name", "op", attributes, "inputs", "outputs", "grads"}
  all   --out DIR --data KVASIR_DIR
        ops + net full + net stage1 (image = first id of val.txt)
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

KIND_ARCH = {"full": "condseg", "stage1": "stage1"}


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

    model = R.build(arch)
    R.check_keys(model)
    log(f"[net {args.kind}] calibration image {cpath}")
    R.randomize_(model, args.seed, torch.from_numpy(calib))
    t1 = time.time()
    wpath = os.path.join(args.out, f"{args.kind}_weights.safetensors")
    sd = R.state_dict_np(model)
    st_io.save_file(sd, wpath, R.weights_metadata(arch))

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
def cmd_prob(args):
    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.time()
    arch = R.arch_of_file(args.weights)
    model = R.build(arch)
    R.load_weights(model, args.weights)
    model.double().eval()
    x = torch.from_numpy(load_image(args.image)[None]).double()
    with torch.no_grad():
        if arch == "stage1":
            outs = [model(x)]
        elif args.all_outputs:
            outs = list(model(x))
        else:
            outs = [model.forward_mask(x)]
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 2)[2])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("net", help="random-weight network + golden intermediates")
    p.add_argument("--kind", choices=("full", "stage1"), required=True)
    p.add_argument("--image", required=True, help="test image (first id of val.txt)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(fn=cmd_net)
    p = sub.add_parser("prob", help="reference probabilities for `condseg predict --prob`")
    p.add_argument("--weights", required=True, help="safetensors weights (full or stage 1)")
    p.add_argument("--image", required=True)
    p.add_argument("--out", required=True, help="output .npy (float32, K×256×256)")
    p.add_argument("--all-outputs", action="store_true", help="K=4: mask, fg, bg, uc")
    p.set_defaults(fn=cmd_prob)
    p = sub.add_parser("ops", help="single-op forward/backward cases")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=2)
    p.set_defaults(fn=cmd_ops)
    p = sub.add_parser("all", help="ops + net full + net stage1")
    p.add_argument("--out", required=True)
    p.add_argument("--data", required=True, help="Kvasir-SEG folder (images/, val.txt)")
    p.set_defaults(fn=cmd_all)
    args = ap.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
