#!/usr/bin/env python3
"""bench_peers.py — the engines a user would pick instead of condseg, on our reference
ConDSeg network (tools/condseg_ref.py, random weights: speed does not depend on them),
mask-only inference at SIZE x SIZE, batch 1, THREADS threads; and a training step.

Run by bench/peers.sh inside the venv it makes (torch 2.x, onnx, onnxruntime, openvino
from PyPI); never in CI. One JSON line per measurement, median of --repeat runs after a
warm-up:
  peer_torch_fp32, peer_torch_bf16      PyTorch eager, float32 / torch.autocast(bfloat16)
  peer_ort_fp32                         ONNX Runtime (CPU provider), the model exported to ONNX
  peer_openvino_fp32, peer_openvino_default
                                        OpenVINO CPU with INFERENCE_PRECISION_HINT f32 / its
                                        default (bf16 on AMX)
  peer_torch_train_fp32_bB, peer_torch_train_bf16_bB
                                        with --train-step: forward (train mode), stage-2 loss,
                                        backward, Adam, at batch B
"""
import argparse
import io
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import condseg_ref as R  # noqa: E402


class MaskOnly(torch.nn.Module):
    """What condseg's mask inference computes (no auxiliary head, no uncertainty branch)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.forward_mask(x)


def timed(fn, repeat):
    fn()  # set-up: allocators, JIT kernels, caches
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), ts


def emit(what, med, ts, **extra):
    rec = {"what": what, "ms": round(1000 * med, 1), "runs_ms": [round(1000 * t, 1) for t in ts]}
    rec.update(extra)
    print(json.dumps(rec), flush=True)


def bench_torch(model, x, repeat):
    with torch.no_grad():
        med, ts = timed(lambda: model(x), repeat)
        emit("peer_torch_fp32", med, ts, version=torch.__version__)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            med, ts = timed(lambda: model(x), repeat)
        emit("peer_torch_bf16", med, ts, version=torch.__version__)


def export_onnx(model, x):
    buf = io.BytesIO()
    torch.onnx.export(model, (x,), buf, opset_version=18, input_names=["x"],
                      output_names=["mask"], dynamo=True)
    return buf.getvalue()


def bench_ort(onnx_bytes, x, threads, repeat):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
    feed = {"x": x.numpy()}
    med, ts = timed(lambda: sess.run(None, feed), repeat)
    emit("peer_ort_fp32", med, ts, version=ort.__version__)


def bench_openvino(onnx_bytes, x, threads, repeat):
    import openvino as ov
    core = ov.Core()
    model = core.read_model(onnx_bytes)
    for name, hint in (("peer_openvino_fp32", {"INFERENCE_PRECISION_HINT": "f32"}),
                       ("peer_openvino_default", {})):
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", **hint}
        compiled = core.compile_model(model, "CPU", config)
        request = compiled.create_infer_request()
        med, ts = timed(lambda: request.infer({0: x.numpy()}), repeat)
        precision = compiled.get_property("INFERENCE_PRECISION_HINT")
        precision = getattr(precision, "get_type_name", lambda: str(precision))()
        emit(name, med, ts, version=ov.get_version(), precision=precision)


def bench_train(net, size, batch, repeat):
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, size, size)
    y1 = (torch.rand(batch, 1, size, size) > 0.5).float()
    y2 = 1 - y1

    def step(bf16):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            mask, fg, bg, uc = net(x)
        loss = R.stage2_loss(mask.float(), fg.float(), bg.float(), uc.float(), y1, y2)["loss"]
        loss.backward()
        opt.step()
    for bf16 in (False, True):
        med, ts = timed(lambda: step(bf16), repeat)
        emit(f"peer_torch_train_{'bf16' if bf16 else 'fp32'}_b{batch}", med, ts,
             version=torch.__version__)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--preset", default=R.DEFAULT_PRESET)
    ap.add_argument("--train-step", action="store_true")
    ap.add_argument("--train-batch", type=int, default=2)
    ap.add_argument("--skip", default="", help="comma list of torch,ort,openvino to leave out")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = R.ConDSeg(args.preset).eval()
    model = MaskOnly(net).eval()
    x = torch.rand(1, 3, args.size, args.size)
    skip = set(filter(None, args.skip.split(",")))
    if "torch" not in skip:
        bench_torch(model, x, args.repeat)
    if not {"ort", "openvino"} <= skip:
        onnx_bytes = export_onnx(model, x)
        if "ort" not in skip:
            bench_ort(onnx_bytes, x, args.threads, args.repeat)
        if "openvino" not in skip:
            bench_openvino(onnx_bytes, x, args.threads, args.repeat)
    if args.train_step:
        bench_train(net, args.size, args.train_batch, max(2, args.repeat // 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
