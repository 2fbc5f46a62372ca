#!/usr/bin/python3
"""to_float16.py — store a condseg weights file compactly: every float32 tensor as float16
(IEEE half, round to nearest) except one holding a value beyond float16's range (65504; a
BatchNorm running variance can be), which stays float32 and is named; other dtypes and the
metadata unchanged. condseg reads F16
weights directly (converting to float32 on load). Written to a temporary file, then
renamed.

  to_float16.py IN.safetensors OUT.safetensors [--meta key=value ...]
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                    help="add or replace a metadata entry")
    a = ap.parse_args()
    tensors, meta = st_io.load_file(a.input)
    out = {}
    worst = 0.0
    for name, t in tensors.items():
        if t.dtype == np.float32:
            if np.all(np.isfinite(t)) and np.abs(t).max(initial=0) > np.finfo(np.float16).max:
                print(f"{name}: values up to {np.abs(t).max():.6g}, beyond float16: kept float32")
                out[name] = t
                continue
            h = t.astype(np.float16)
            if not np.all(np.isfinite(h)):
                raise SystemExit(f"{a.input}: tensor {name} is not finite")
            scale = float(np.abs(t).max()) or 1.0
            worst = max(worst, float(np.abs(h.astype(np.float32) - t).max()) / scale)
            out[name] = h
        else:
            out[name] = t
    for kv in a.meta:
        key, _, value = kv.partition("=")
        meta[key] = value
    st_io.save_file_atomic(out, a.output, meta)
    print(f"{a.output}: {len(out)} tensors, {os.path.getsize(a.output) / 1e6:.1f} MB; "
          f"largest rounding error {worst:.1e} of a tensor's scale")


if __name__ == "__main__":
    main()
