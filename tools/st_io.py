"""st_io.py — minimal safetensors reader/writer for condseg's Python tools.

Debian's python3-torch (1.13) has no safetensors package, and the format is small: an
8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}
(plus an optional "__metadata__" map of strings), then the raw little-endian bytes.
The writer pads the header with spaces to a multiple of 8, as the reference
implementation does, so that every tensor starts 8-byte aligned.
"""
import json
import os
import struct

import numpy as np

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U8": np.uint8, "BOOL": np.bool_,
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


def _as_numpy(t):
    """Accepts numpy arrays, numpy scalars and torch tensors (without importing torch)."""
    if hasattr(t, "detach"):
        t = t.detach().cpu().numpy()
    # np.ascontiguousarray would turn a 0-d scalar (num_batches_tracked) into shape [1].
    a = np.asarray(t)
    return a if a.flags["C_CONTIGUOUS"] else a.copy(order="C")


def save_file(tensors, path, metadata=None):
    """Write {name: array} to `path`. Tensors are stored in the given order."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name, t in tensors.items():
        a = _as_numpy(t)
        if a.dtype not in _NAMES:
            raise ValueError(f"{name}: unsupported dtype {a.dtype}")
        raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _NAMES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def save_file_atomic(tensors, path, metadata=None):
    """save_file to path + ".tmp", then renamed to `path`: an interrupted write never leaves
    a partial file under the name readers look for."""
    tmp = path + ".tmp"
    save_file(tensors, tmp, metadata)
    os.replace(tmp, path)


def load_file(path):
    """Read a safetensors file; returns ({name: numpy array}, metadata dict)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    metadata = header.pop("__metadata__", {}) or {}
    base = 8 + n
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
        out[name] = np.frombuffer(data[base + begin:base + end], dtype=dtype).reshape(info["shape"]).copy()
    return out, metadata
