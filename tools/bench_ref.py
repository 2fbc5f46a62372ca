#!/usr/bin/python3
"""bench_ref.py — timings of the PyTorch reference ConDSeg (tools/condseg_ref.py), the
baseline that condseg's C benchmarks are compared with.

Float32, eval mode, torch.no_grad, random weights (timing does not depend on their values).
Prints one JSON line per measurement; each value is the median over --repeat runs after
warm-up. Works with Debian's torch 1.13 (CPU) and PyTorch 2.x (CUDA).

CPU (default; torch.set_num_threads(os.cpu_count())):
  {"what": "pytorch_mask_b1", "ms_per_img": ...}   mask only (no aux_head, no cbr_uc, §3.2)
  {"what": "pytorch_full_b1", "ms_per_img": ...}   full forward, all four outputs
  {"what": "pytorch_train_step_b2", ...}           with --train-step: forward (train mode),
                                                   stage-2 loss, backward, Adam step
--device cuda (eager mode, cuDNN's default algorithm choice unless --cudnn-benchmark):
  {"what": "pytorch_cuda_mask_b16", "ms_per_img", "images_per_s", "tf32", ...}
      mask-only inference for each --infer-batches size, timed as condseg's
      cs_model_forward is: the input copied to the GPU and the mask back to the host
      ("gpu_ms_per_img": the same without the copies);
  {"what": "pytorch_cuda_train_b12", "images_per_s", "step_ms", "tf32", ...}
      with --train-step: batch copied to the GPU, forward, stage-2 loss, backward, Adam.
  --tf32 off|on|both: torch.backends.cuda.matmul.allow_tf32 and
  torch.backends.cudnn.allow_tf32 (PyTorch's own default is off for matmul, on for cuDNN).
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import condseg_ref as R  # noqa: E402


def timed(fn, repeat, warmup=1, sync=None, budget=None):
    """Median wall time of fn over `repeat` runs (fewer, but at least 3, past `budget` s)."""
    for _ in range(warmup):  # allocator, oneDNN / cuDNN / cuBLAS set-up
        fn()
    if sync:
        sync()
    ts = []
    start = time.perf_counter()
    while len(ts) < repeat and (len(ts) < 3 or budget is None
                                 or time.perf_counter() - start < budget):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), ts


def emit(what, batch, med, ts, **extra):
    rec = {"what": what, "ms_per_img": round(1000 * med / batch, 3), "batch": batch,
           "median_ms": round(1000 * med, 3), "runs_ms": [round(1000 * t, 2) for t in ts],
           "threads": torch.get_num_threads(), "torch": torch.__version__}
    rec.update(extra)
    print(json.dumps(rec), flush=True)


def set_tf32(on):
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def train_step(model, batch, size, dev=None):
    """One stage-2 training step (forward in train mode, loss, backward, Adam) on a random
    batch, as a function to time; with `dev` the batch is copied there each step, as
    condseg's training copies it to the GPU."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8)
    x = torch.rand(batch, 3, size, size)
    y1 = (torch.rand(batch, 1, size, size) > 0.5).float()
    y2 = 1 - y1

    def step():
        xd, y1d, y2d = (x.to(dev), y1.to(dev), y2.to(dev)) if dev is not None else (x, y1, y2)
        opt.zero_grad(set_to_none=True)
        mask, fg, bg, uc = model(xd)
        loss = R.stage2_loss(mask, fg, bg, uc, y1d, y2d)["loss"]
        loss.backward()
        opt.step()
    return step


def cuda_bench(args):
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    name = torch.cuda.get_device_name(0)
    sync = torch.cuda.synchronize
    torch.manual_seed(0)
    model = R.ConDSeg().to(dev)
    s = args.size
    batches = [int(b) for b in args.infer_batches.split(",")] if args.infer_batches else []
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.tf32]
    common = dict(size=s, device="cuda", gpu=name, cudnn_benchmark=args.cudnn_benchmark)
    for tf32 in modes:
        set_tf32(tf32)
        if not args.no_inference:
            model.eval()
            for b in batches:
                x_host = torch.rand(b, 3, s, s)
                x_dev = x_host.to(dev)
                with torch.no_grad():
                    # as cs_model_forward: host input in, host probabilities out
                    med, ts = timed(lambda: model.forward_mask(x_host.to(dev)).cpu(), args.repeat,
                                    warmup=2, sync=sync, budget=args.budget)
                    gmed, _ = timed(lambda: model.forward_mask(x_dev), args.repeat, warmup=1,
                                    sync=sync, budget=args.budget)
                emit(f"pytorch_cuda_mask_b{b}", b, med, ts, images_per_s=round(b / med, 2),
                     gpu_ms_per_img=round(1000 * gmed / b, 3), tf32=tf32, **common)
        if args.train_step:
            B = args.batch
            step = train_step(model, B, s, dev)
            med, ts = timed(step, args.repeat, warmup=2, sync=sync, budget=args.budget)
            emit(f"pytorch_cuda_train_b{B}", B, med, ts, images_per_s=round(B / med, 2),
                 step_ms=round(1000 * med, 2), tf32=tf32, **common)
            del step   # and with it Adam's state, before the next TF32 mode
    print(json.dumps({"what": "pytorch_cuda_peak_memory_mb",
                      "value": round(torch.cuda.max_memory_allocated() / 1e6), "gpu": name}),
          flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (median)")
    ap.add_argument("--size", type=int, default=256, help="input H = W")
    ap.add_argument("--train-step", action="store_true", help="also time one training step")
    ap.add_argument("--batch", type=int, default=None,
                    help="batch size of the training step (default 2 on the CPU, 12 on CUDA)")
    ap.add_argument("--no-inference", action="store_true", help="skip the inference timings")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--infer-batches", default="1,16",
                    help="CUDA: inference batch sizes (default 1,16)")
    ap.add_argument("--tf32", choices=("off", "on", "both"), default="off",
                    help="CUDA: TF32 in matmuls and cuDNN convolutions (default off)")
    ap.add_argument("--cudnn-benchmark", action="store_true",
                    help="CUDA: torch.backends.cudnn.benchmark (autotuned convolutions)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds per measurement after which no further runs start (>= 3 runs)")
    args = ap.parse_args(argv)

    if args.device == "cuda":
        if not torch.cuda.is_available():
            print("bench_ref.py: --device cuda: PyTorch sees no GPU (torch %s, CUDA %s)"
                  % (torch.__version__, torch.version.cuda), file=sys.stderr)
            return 2
        if args.batch is None:
            args.batch = 12
        cuda_bench(args)
        return 0

    if args.batch is None:
        args.batch = 2
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    model = R.ConDSeg()
    s = args.size
    if not args.no_inference:
        model.eval()
        x = torch.rand(1, 3, s, s)
        with torch.no_grad():
            med, ts = timed(lambda: model.forward_mask(x), args.repeat, budget=args.budget)
            emit("pytorch_mask_b1", 1, med, ts, size=s)
            med, ts = timed(lambda: model(x), args.repeat, budget=args.budget)
            emit("pytorch_full_b1", 1, med, ts, size=s)

    if args.train_step:
        B = args.batch
        med, ts = timed(train_step(model, B, s), args.repeat, budget=args.budget)
        emit(f"pytorch_train_step_b{B}", B, med, ts, size=s, step_ms=round(1000 * med, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
