#!/usr/bin/python3
"""average_weights.py — the mean of several condseg weights files of one network (checkpoint
averaging: the last epochs of a run at a low learning rate lie close together, and their
mean often generalises better than any one of them). Every floating-point tensor is the
mean of its copies, BatchNorm running statistics included (the checkpoints are close
enough that the mean of their statistics stands for the statistics of the mean); integer
tensors (num_batches_tracked) and the metadata come from the last file. The files must
hold the same tensors with the same shapes, network, preset and input size, or nothing
is written.
Written as float32 to a temporary file, then renamed.

  average_weights.py OUT.safetensors IN.safetensors IN2.safetensors [...]
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402


def load_all(paths):
    loaded = []
    for path in paths:
        try:
            loaded.append(st_io.load_file(path))
        except (OSError, ValueError, KeyError) as e:
            raise SystemExit(f"{path}: not a readable safetensors file ({e})")
    first_tensors, first_meta = loaded[0]
    for path, (tensors, meta) in zip(paths[1:], loaded[1:]):
        if tensors.keys() != first_tensors.keys():
            missing = sorted(first_tensors.keys() ^ tensors.keys())
            raise SystemExit(f"{path}: not the tensors of {paths[0]} "
                             f"(differs in {missing[:3]}{' ...' if len(missing) > 3 else ''})")
        for name, t in tensors.items():
            if t.shape != first_tensors[name].shape:
                raise SystemExit(f"{path}: tensor {name} has shape {list(t.shape)}, "
                                 f"{paths[0]} has {list(first_tensors[name].shape)}")
        for key in ("condseg.arch", "condseg.preset", "condseg.input_size"):
            if meta.get(key) != first_meta.get(key):
                raise SystemExit(f"{path}: {key} {meta.get(key)!r}, "
                                 f"{paths[0]} has {first_meta.get(key)!r}")
    return loaded


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("output")
    ap.add_argument("inputs", nargs="+")
    a = ap.parse_args()
    if len(a.inputs) < 2:
        raise SystemExit("average_weights.py: give at least two weights files to average")
    loaded = load_all(a.inputs)
    last_tensors, last_meta = loaded[-1]
    out = {}
    for name, t in last_tensors.items():
        if np.issubdtype(t.dtype, np.floating):
            out[name] = np.mean([ts[name].astype(np.float64) for ts, _ in loaded],
                                axis=0).astype(np.float32)
            if not np.all(np.isfinite(out[name])):
                raise SystemExit(f"average_weights.py: tensor {name} is not finite")
        else:
            out[name] = t
    st_io.save_file_atomic(out, a.output, last_meta)
    print(f"{a.output}: the mean of {len(a.inputs)} files, {len(out)} tensors")


if __name__ == "__main__":
    main()
