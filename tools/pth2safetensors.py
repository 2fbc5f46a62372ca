#!/usr/bin/python3
"""pth2safetensors.py — convert a PyTorch ConDSeg checkpoint to condseg's safetensors format.

  pth2safetensors.py IN.pth OUT.safetensors [--arch auto|condseg|stage1]
  pth2safetensors.py IN.pth OUT.safetensors --torchvision-resnet50

The input may be a bare state dict or a dict wrapping it under 'state_dict' or 'model'
(e.g. a training checkpoint); a 'module.' prefix (DataParallel) is stripped. Keys and shapes
are checked against the reference network (tools/condseg_ref.py, i.e. condseg_keys.tsv /
stage1_keys.tsv): every missing, unexpected or misshapen tensor is reported by name and the
exit status is 1. Output: float32 tensors in state-dict order, num_batches_tracked as an
int64 scalar (0 when absent, as PyTorch does), metadata {"format": "pt", "condseg.arch",
"condseg.preset": "condseg-r50"}. The file is written to a temporary name, then renamed, so
a failed run never leaves a truncated OUT.

--torchvision-resnet50 maps a torchvision ImageNet ResNet-50 checkpoint onto the trunk
(spec §10.3: conv1/bn1 → layer0.0/layer0.1, layer1.<i> → layer1.1.<i>, layer2/3 unchanged,
layer4/fc dropped) and writes only the trunk tensors, with "condseg.arch": "trunk".
"""
import argparse
import os
import re
import sys
from collections import OrderedDict

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import condseg_ref as R  # noqa: E402
import st_io  # noqa: E402


def unwrap(ckpt):
    """Finds the state dict inside a checkpoint and strips 'module.' prefixes."""
    while isinstance(ckpt, dict) and not any(torch.is_tensor(v) for v in ckpt.values()):
        for k in ("state_dict", "model"):
            if k in ckpt and isinstance(ckpt[k], dict):
                ckpt = ckpt[k]
                break
        else:
            raise SystemExit("error: no state dict found (expected tensors, or a dict with "
                             "'state_dict' or 'model')")
    if not isinstance(ckpt, dict):
        raise SystemExit(f"error: checkpoint is a {type(ckpt).__name__}, not a state dict")
    out = OrderedDict()
    for k, v in ckpt.items():
        k = k[len("module."):] if k.startswith("module.") else k
        out[k] = v
    return out


def torchvision_to_trunk(sd):
    """§10.3 name mapping. Returns (mapped dict, list of keys that map to nothing)."""
    out, unknown = OrderedDict(), []
    for k, v in sd.items():
        if k.startswith(("layer4.", "fc.")):
            continue  # not part of the ConDSeg trunk
        if k == "conv1.weight":
            out["layer0.0.weight"] = v
        elif k.startswith("bn1."):
            out["layer0.1." + k[len("bn1."):]] = v
        elif re.match(r"layer1\.\d+\.", k):
            out["layer1.1." + k[len("layer1."):]] = v
        elif k.startswith(("layer2.", "layer3.")):
            out[k] = v
        else:
            unknown.append(k)
    return out, unknown


def convert(sd, expected, extra_unexpected=()):
    """Checks sd against the expected OrderedDict name → tensor; returns (tensors, errors)."""
    errors = [f"unexpected tensor: {k}" for k in extra_unexpected]
    errors += [f"unexpected tensor: {k}" for k in sd if k not in expected]
    tensors = OrderedDict()
    for k, ref in expected.items():
        if k not in sd:
            if k.endswith("num_batches_tracked"):
                tensors[k] = np.array(0, dtype=np.int64)  # absent in old checkpoints
            else:
                errors.append(f"missing tensor: {k} (expected shape {list(ref.shape)})")
            continue
        v = sd[k]
        if not torch.is_tensor(v):
            errors.append(f"not a tensor: {k} ({type(v).__name__})")
            continue
        if k.endswith("num_batches_tracked"):
            if v.numel() != 1:
                errors.append(f"misshapen tensor: {k}: {list(v.shape)}, expected a scalar")
                continue
            tensors[k] = np.array(int(v.reshape(-1)[0].item()), dtype=np.int64)
            continue
        if list(v.shape) != list(ref.shape):
            errors.append(f"misshapen tensor: {k}: {list(v.shape)}, expected {list(ref.shape)}")
            continue
        if not v.is_floating_point():
            errors.append(f"wrong dtype: {k}: {v.dtype}, expected floating point")
            continue
        tensors[k] = v.detach().cpu().float().contiguous().numpy()
    return tensors, errors


def write_atomic(tensors, path, metadata):
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        st_io.save_file(tensors, tmp, metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("input", help="PyTorch checkpoint (.pth)")
    ap.add_argument("output", help="output .safetensors")
    ap.add_argument("--arch", choices=("auto", "condseg", "stage1"), default="auto")
    ap.add_argument("--torchvision-resnet50", action="store_true",
                    help="input is a torchvision ResNet-50 checkpoint; write the trunk only")
    args = ap.parse_args(argv)

    ckpt = torch.load(args.input, map_location="cpu")
    sd = unwrap(ckpt)
    extra = []
    if args.torchvision_resnet50:
        sd, extra = torchvision_to_trunk(sd)
        full = R.build("condseg").state_dict()
        expected = OrderedDict((k, v) for k, v in full.items() if k.startswith(R.TRUNK_PREFIXES))
        arch = "trunk"
    else:
        arch = args.arch
        if arch == "auto":
            arch = "stage1" if R.is_stage1_keys(sd) else "condseg"
        expected = R.build(arch).state_dict()
    tensors, errors = convert(sd, expected, extra)
    if errors:
        for e in errors:
            print(f"{args.input}: {e}", file=sys.stderr)
        print(f"{args.input}: {len(errors)} problem(s) for arch '{arch}'; nothing written",
              file=sys.stderr)
        return 1
    write_atomic(tensors, args.output, R.weights_metadata(arch))
    n = sum(int(np.prod(t.shape)) for k, t in tensors.items() if t.dtype == np.float32)
    print(f"{args.output}: arch {arch}, {len(tensors)} tensors, {n:,} float32 values")
    return 0


if __name__ == "__main__":
    sys.exit(main())
