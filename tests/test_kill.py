#!/usr/bin/python3
"""test_kill.py — SIGKILL at random moments of a small training run, resumed each time:
the run must always resume, and end with the uninterrupted run's weights
(last.safetensors, best.safetensors) and train_log.csv, byte for byte, with no temporary
file left behind (issue 10).

The dataset is made here (6 training and 2 validation images of 32x32, written with
OpenCV); the run is the compact preset at --image-size 32, batch 2, 3 epochs (9 steps,
3 checkpoints). Half the kills come at a random moment of the run, half the moment the
temporary file of a weights write (state, last or best .safetensors, drawn) appears:
inside the write. A run that finishes before its kill is checked and the next kill goes
to a fresh run.

Usage: test_kill.py --condseg BUILD/condseg [--kills N] [--seed S]
"""
import argparse
import glob
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

from cs_test import check, summary


def make_dataset(root):
    rng = np.random.default_rng(3)
    for sub in ("images", "masks"):
        os.makedirs(os.path.join(root, sub))
    ids = [f"k{i}" for i in range(8)]
    for i in ids:
        img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        mask = np.zeros((32, 32), np.uint8)
        mask[8:8 + int(rng.integers(4, 20)), 6:22] = 255
        cv2.imwrite(os.path.join(root, "images", i + ".png"), img)
        cv2.imwrite(os.path.join(root, "masks", i + ".png"), mask)
    open(os.path.join(root, "train.txt"), "w").write("\n".join(ids[:6]) + "\n")
    open(os.path.join(root, "val.txt"), "w").write("\n".join(ids[6:]) + "\n")


def temporaries(run):
    return [f for f in glob.glob(os.path.join(run, "*.*")) if len(f.rsplit(".", 1)[1]) == 6
            and f.rsplit(".", 1)[1].isalnum()]


def start(exe, data, run):
    """A fresh run, or --resume when a checkpoint exists."""
    if os.path.exists(os.path.join(run, "state.safetensors")):
        args = [exe, "train", "--resume", run]
    else:
        args = [exe, "train", "--stage", "2", "--preset", "condseg-compact", "--data", data,
                "--out", run, "--image-size", "32", "--batch", "2", "--epochs", "3",
                "--seed", "3", "--workers", "1"]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def same_files(ref, run, names):
    return all(open(os.path.join(ref, n), "rb").read() == open(os.path.join(run, n), "rb").read()
               for n in names)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--condseg", required=True)
    ap.add_argument("--kills", type=int, default=8)
    ap.add_argument("--seed", type=int, default=None)
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    rnd = random.Random(seed)
    print(f"test_kill: {a.kills} kills, seed {seed}", flush=True)
    tmp = tempfile.mkdtemp(prefix="condseg-kill-")
    names = ["last.safetensors", "best.safetensors", "train_log.csv"]
    try:
        data = os.path.join(tmp, "data")
        make_dataset(data)
        ref = os.path.join(tmp, "ref")
        t0 = time.time()
        p = start(a.condseg, data, ref)
        err = p.stderr.read().decode()
        check(p.wait() == 0, f"uninterrupted run ({err.strip()[-200:]})")
        duration = time.time() - t0

        kills = in_write = resumes = finished = 0
        in_target = {}
        run_no = 0
        run = None
        while kills < a.kills or run is not None:
            if run is None:
                run_no += 1
                run = os.path.join(tmp, f"run{run_no}")
            left = set(temporaries(run))   # by an earlier kill: removed by this start
            target = rnd.choice(["state", "last", "best"]) + ".safetensors."
            new_checkpoint_temporary = lambda: any(  # noqa: E731
                os.path.basename(f).startswith(target) for f in set(temporaries(run)) - left)
            p = start(a.condseg, data, run)
            resumes += os.path.exists(os.path.join(run, "state.safetensors"))
            killed = False
            if kills < a.kills:
                inside = rnd.random() < 0.5
                deadline = time.time() + (duration * 1.5 if inside else rnd.uniform(0, duration))
                while p.poll() is None and time.time() < deadline:
                    if inside and new_checkpoint_temporary():
                        break
                    time.sleep(0.0005 if inside else 0.005)
                if p.poll() is None:
                    hit = set(temporaries(run)) - left
                    p.send_signal(signal.SIGKILL)
                    killed = True
                    kills += 1
                    in_write += bool(hit)
                    for f in hit:   # which file's write: state, last, best, train_log
                        target = os.path.basename(f).split(".")[0]
                        in_target[target] = in_target.get(target, 0) + 1
            err = p.stderr.read().decode()
            rc = p.wait()
            if killed:
                continue
            check(rc == 0, f"run {run_no}: exits 0 after resuming ({err.strip()[-300:]})")
            if rc != 0:
                break
            finished += 1
            check(same_files(ref, run, names),
                  f"run {run_no}: last/best weights and train_log.csv equal the uninterrupted run's")
            check(not temporaries(run), f"run {run_no}: no temporary file left ({temporaries(run)})")
            run = None
        print(f"test_kill: {kills} SIGKILLs ({in_write} inside a file write, its temporary "
              f"present: {in_target}), {resumes} resumes, {finished} runs completed and "
              f"compared", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary("test_kill", f" (seed {seed})")


if __name__ == "__main__":
    sys.exit(main())
