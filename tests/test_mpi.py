#!/usr/bin/python3
"""test_mpi.py — data-parallel `condseg train` under mpirun (2 ranks, Open MPI) on tiny
Kvasir-SEG datasets (links to the real files, the compact preset at 32x32, one thread per
rank, so that every run takes seconds):

  - equivalence: with --sync-bn, 2 ranks x 4 images give the loss curve (train_log.csv,
    one step per epoch), the validation curve and the weights after 5 steps of 1 rank x 8
    within the tolerances below (float32 rounding: see there); so do 2 ranks sharing a
    batch of 7 unevenly (3 + 4) against 1 rank x 7;
  - without --sync-bn the two differ by more than them (each rank's BatchNorm
    normalises its 4 images with their own statistics): the difference is printed;
  - resume: a 2-rank run stopped by --max-steps and resumed on 1 rank, and a 1-rank run
    resumed on 2 ranks, end where the uninterrupted 1-rank run ends (within them);
  - an epoch's last batch with fewer images than ranks is skipped, with a line in train.log;
  - an error on rank 0 alone (an unreadable state.safetensors) ends both ranks with its
    message; a rank killed (SIGKILL) stops the whole run with a message, and a rank that hangs
    (SIGSTOP) makes its peer give up after $CONDSEG_DIST_TIMEOUT with a message naming it.

Usage: test_mpi.py --condseg BUILD/condseg --mpiexec MPIEXEC --data KVASIR_DIR
"""
import argparse
import csv
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import st_io  # noqa: E402
from cs_test import check, failures, link_dataset  # noqa: E402

# The tolerances of "the same run" (compare_runs; README, "Training on several processes").
# The split changes float32 rounding only: each rank's BatchNorm mean and variance are
# rounded to float32 before they are summed (an ulp of the mean, over the standard
# deviation, in the normalised values), gradients are summed in another order. A ReLU input
# near 0 and a gradient near 0 (Adam's first steps move such a weight by about the learning
# rate whatever its size) make that grow over the steps. Measured at lr 1e-5 over 5 steps:
# losses 9e-7, metrics 1.3e-4, weights 1.8e-2; per-rank BatchNorm instead: losses 3.4e-3,
# weights 1.3.
LOSS_TOLERANCE, METRIC_TOLERANCE, WEIGHT_TOLERANCE = 1e-5, 1e-2, 0.1


class Runner:
    def __init__(self, condseg, mpiexec, data):
        self.condseg, self.mpiexec, self.data = condseg, mpiexec, data
        self.env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1",
                        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1")

    def command(self, ranks, args):
        train = [self.condseg, "train"] + args + ["--threads", "1", "--workers", "1"]
        if ranks == 0:   # no launcher at all
            return train
        return [self.mpiexec, "--oversubscribe", "-np", str(ranks),
                "-x", "CONDSEG_DIST_TIMEOUT"] + train

    def train(self, ranks, out, batch, extra=(), resume=False):
        args = (["--resume", out] if resume else
                ["--stage", "2", "--preset", "condseg-compact", "--data", self.data, "--out", out,
                 "--image-size", "32", "--batch", str(batch), "--epochs", "5", "--seed", "7",
                 "--lr", "1e-5", "--lr-backbone", "1e-5"])
        env = dict(self.env, CONDSEG_DIST_TIMEOUT="120")
        r = subprocess.run(self.command(ranks, args + list(extra)), env=env,
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            print(r.stdout[-2000:], r.stderr[-3000:])
        return r


def csv_rows(run):
    with open(os.path.join(run, "train_log.csv")) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def weights(run):
    tensors, _ = st_io.load_file(os.path.join(run, "state.safetensors"))
    return tensors


def compare_runs(a, b, initial):
    """(largest relative difference of the loss curves (train and validation loss per
    epoch), largest absolute difference of the metric curves (mIoU, F1, recall, precision:
    thresholded at 0.5, so a pixel that crosses the threshold moves them by steps),
    |w_a - w_b| / |w_a - w_initial| over all trainable weights (L2 norms: the part of what
    training changed that the two runs changed differently))."""
    ra, rb = csv_rows(a), csv_rows(b)
    if len(ra) != len(rb) or not ra:
        return float("inf"), float("inf"), float("inf")
    loss = metric = 0.0
    for x, y in zip(ra, rb):
        for k in x:
            if k == "epoch":
                continue
            if k.endswith("loss"):
                loss = max(loss, abs(x[k] - y[k]) / abs(x[k]))
            else:
                metric = max(metric, abs(x[k] - y[k]))
    wa, wb, w0 = weights(a), weights(b), weights(initial)
    moved = diff = 0.0
    for name, t in wa.items():
        if name.startswith("adam.") or t.dtype != np.float32 or "running" in name:
            continue
        diff += float(np.sum((t.astype(np.float64) - wb[name]) ** 2))
        moved += float(np.sum((t.astype(np.float64) - w0[name]) ** 2))
    return loss, metric, (diff / moved) ** 0.5


def within(d):
    return d[0] < LOSS_TOLERANCE and d[1] < METRIC_TOLERANCE and d[2] < WEIGHT_TOLERANCE


def describe(d):
    return "losses %.1e, metrics %.1e, weights %.1e" % d


def rank_pids(out):
    """The pids of the ranks of the run writing to `out`, by rank."""
    pids = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().split(b"\0")
            if os.fsencode(out) not in cmd or not cmd[0].endswith(b"condseg"):
                continue
            with open("/proc/%s/environ" % pid, "rb") as f:
                env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
            pids[int(env[b"OMPI_COMM_WORLD_RANK"])] = int(pid)
        except (OSError, KeyError, ValueError):
            continue
    return pids


def stop_a_rank(runner, root, data, sig, timeout_s):
    """Starts a long 2-rank run, sends `sig` to rank 1 once training runs, and returns
    (seconds until mpirun ended, its status, its output)."""
    out = os.path.join(root, "victim-%d" % sig)
    args = ["--stage", "2", "--preset", "condseg-compact", "--data", data, "--out", out,
            "--image-size", "32", "--batch", "8", "--epochs", "1000"]
    env = dict(runner.env, CONDSEG_DIST_TIMEOUT=str(timeout_s))
    p = subprocess.Popen(runner.command(2, args), env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    log = os.path.join(out, "train.log")
    deadline = time.time() + 120
    while time.time() < deadline and not (os.path.exists(log) and "epoch 1/" in open(log).read()):
        time.sleep(0.5)
    pids = rank_pids(out)
    if 1 not in pids:
        os.killpg(p.pid, signal.SIGKILL)
        return None, None, "rank 1 not found"
    os.kill(pids[1], sig)
    t0 = time.time()
    try:
        output, _ = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        output, _ = p.communicate()
        return None, None, output
    finally:
        if sig == signal.SIGSTOP:
            for pid in rank_pids(out).values():
                os.kill(pid, signal.SIGKILL)
    return time.time() - t0, p.returncode, output


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--condseg", required=True)
    ap.add_argument("--mpiexec", required=True)
    ap.add_argument("--data", required=True)
    a = ap.parse_args()
    ids = sorted(l.strip() for l in open(os.path.join(a.data, "train.txt")) if l.strip())
    val = sorted(l.strip() for l in open(os.path.join(a.data, "val.txt")) if l.strip())
    root = tempfile.mkdtemp(prefix="condseg-mpi-")
    try:
        run = Runner(a.condseg, a.mpiexec, None)
        # One step per epoch: train_log.csv is the per-step loss curve.
        run.data = link_dataset(root, a.data, ids[:8], val[:8], "d8")
        d7 = link_dataset(root, a.data, ids[8:15], val[:8], "d7")
        R = lambda name: os.path.join(root, name)  # noqa: E731

        # The initial weights, for the scale of the weights' change.
        r = run.train(0, R("init"), 8, ["--max-steps", "1", "--lr", "1e-30", "--lr-backbone", "1e-30"])
        check(r.returncode == 0, "a run without a launcher")
        one = run.train(0, R("one"), 8, ["--sync-bn"])
        two = run.train(2, R("two"), 8, ["--sync-bn"])
        check(one.returncode == 0 and two.returncode == 0, "1 rank x 8 and 2 ranks x 4 (--sync-bn)")
        d = compare_runs(R("one"), R("two"), R("init"))
        check(within(d), "--sync-bn: 2 ranks x 4 = 1 rank x 8 over 5 steps (%s)" % describe(d))
        log = open(os.path.join(R("two"), "train.log")).read()
        check("data-parallel over 2 ranks" in log and "--sync-bn" in log,
              "train.log tells the split")

        run.data, d8 = d7, run.data
        one7 = run.train(0, R("one7"), 7, ["--sync-bn"])
        two7 = run.train(2, R("two7"), 7, ["--sync-bn"])
        d = compare_runs(R("one7"), R("two7"), R("init"))
        check(one7.returncode == 0 and two7.returncode == 0 and within(d),
              "--sync-bn: 2 ranks x (3 + 4) = 1 rank x 7 (%s)" % describe(d))
        run.data = d8

        # An epoch's last batch with fewer images than ranks (9 = 8 + 1): skipped, and said.
        run.data = link_dataset(root, a.data, ids[:9], val[:8], "d9")
        r = run.train(2, R("nine"), 8, ["--epochs", "1"])
        log = open(os.path.join(R("nine"), "train.log")).read()
        check(r.returncode == 0 and "its last batch (1 image) skipped" in log and
              len(csv_rows(R("nine"))) == 1, "a last batch smaller than the ranks is skipped")
        run.data = d8

        per_rank = run.train(2, R("per-rank"), 8)
        d = compare_runs(R("one"), R("per-rank"), R("init"))
        check(per_rank.returncode == 0 and d[0] > 10 * LOSS_TOLERANCE and d[2] > 5 * WEIGHT_TOLERANCE,
              "per-rank BatchNorm: 2 ranks x 4 differ from 1 rank x 8 (%s)" % describe(d))

        # Resume across rank counts: stopped after 2 of 5 steps, finished on the other count.
        for first, second in ((2, 0), (0, 2)):
            name = "resume-%d-%d" % (first, second)
            r1 = run.train(first, R(name), 8, ["--sync-bn", "--max-steps", "2"])
            r2 = run.train(second, R(name), 8, resume=True)
            d = compare_runs(R("one"), R(name), R("init"))
            check(r1.returncode == 0 and r2.returncode == 0 and within(d),
                  "a %d-rank run resumed on %d rank(s) ends as the 1-rank run (%s)"
                  % (max(first, 1), max(second, 1), describe(d)))

        # An error on rank 0 alone, while rank 1 waits for it: both end, with the message.
        os.makedirs(R("corrupt"))
        with open(os.path.join(R("corrupt"), "state.safetensors"), "w") as f:
            f.write("not a checkpoint")
        t0 = time.time()
        r = subprocess.run(run.command(2, ["--resume", R("corrupt")]),
                           env=dict(run.env, CONDSEG_DIST_TIMEOUT="600"), capture_output=True,
                           text=True, timeout=300)
        check(r.returncode != 0 and "rank 0 of 2: " in r.stderr and "not a safetensors file" in r.stderr,
              "an error on rank 0 alone stops both ranks with its message (%.1f s)" % (time.time() - t0))

        seconds, status, output = stop_a_rank(run, root, run.data, signal.SIGKILL, 60)
        print("      rank 1 killed: mpirun ended after %s s with status %s" % (seconds, status))
        check(seconds is not None and status != 0 and "signal 9" in output,
              "a killed rank stops the run with a message")
        seconds, status, output = stop_a_rank(run, root, run.data, signal.SIGSTOP, 10)
        print("      rank 1 stopped: mpirun ended after %s s with status %s" % (seconds, status))
        check(seconds is not None and seconds > 9 and status != 0 and
              "no answer from the other ranks for 10 s" in output,
              "a hung rank makes its peer stop the run after CONDSEG_DIST_TIMEOUT, with a message")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if failures:
        print("%d failure(s)" % len(failures))
        return 1
    print("all MPI checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
