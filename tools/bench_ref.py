#!/usr/bin/python3
"""bench_ref.py — timings of the PyTorch reference ConDSeg (tools/condseg_ref.py), the
baseline that condseg's C benchmarks are compared with.

Float32, eval mode, torch.no_grad, torch.set_num_threads(os.cpu_count()), random weights
(timing does not depend on their values). Prints one JSON line per measurement:
  {"what": "pytorch_mask_b1", "ms_per_img": ...}   mask only (no aux_head, no cbr_uc, §3.2)
  {"what": "pytorch_full_b1", "ms_per_img": ...}   full forward, all four outputs
  {"what": "pytorch_train_step_b2", ...}           with --train-step: forward (train mode),
                                                   stage-2 loss, backward, Adam step
Each value is the median over --repeat runs after one warm-up run.
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


def timed(fn, repeat):
    fn()  # warm-up (allocator, oneDNN primitive creation)
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), ts


def emit(what, batch, med, ts, **extra):
    rec = {"what": what, "ms_per_img": round(1000 * med / batch, 2), "batch": batch,
           "median_ms": round(1000 * med, 2), "runs_ms": [round(1000 * t, 1) for t in ts],
           "threads": torch.get_num_threads(), "torch": torch.__version__}
    rec.update(extra)
    print(json.dumps(rec), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (median)")
    ap.add_argument("--size", type=int, default=256, help="input H = W")
    ap.add_argument("--train-step", action="store_true", help="also time one training step")
    ap.add_argument("--batch", type=int, default=2, help="batch size of the training step")
    ap.add_argument("--no-inference", action="store_true", help="skip the inference timings")
    args = ap.parse_args(argv)

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    model = R.ConDSeg()
    s = args.size
    if not args.no_inference:
        model.eval()
        x = torch.rand(1, 3, s, s)
        with torch.no_grad():
            med, ts = timed(lambda: model.forward_mask(x), args.repeat)
            emit("pytorch_mask_b1", 1, med, ts, size=s)
            med, ts = timed(lambda: model(x), args.repeat)
            emit("pytorch_full_b1", 1, med, ts, size=s)

    if args.train_step:
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8)
        B = args.batch
        x = torch.rand(B, 3, s, s)
        y1 = (torch.rand(B, 1, s, s) > 0.5).float()
        y2 = 1 - y1

        def step():
            opt.zero_grad(set_to_none=True)
            mask, fg, bg, uc = model(x)
            loss = R.stage2_loss(mask, fg, bg, uc, y1, y2)["loss"]
            loss.backward()
            opt.step()
        med, ts = timed(step, args.repeat)
        emit(f"pytorch_train_step_b{B}", B, med, ts, size=s, step_ms=round(1000 * med, 1))


if __name__ == "__main__":
    main()
