#!/usr/bin/python3
"""test_multi_data.py — `condseg train` on several --data folders, and polyp-free frames.

Two tiny datasets made of links: "polyps" (Kvasir-SEG images) and "negatives" (polyp-free
frames of nopolyp/ with all-black masks). Checked:
  - a stage-2 run on both: train.log counts the images of both (the mixed training set),
    the progress on stderr and train.log show a line per split and epoch,
    train_log.csv has the original's columns followed by valid_<name>_{loss, mIoU, f1,
    recall, precision, false_alarm} per split, one row per epoch;
  - each split's columns of the last row equal `condseg eval` of last.safetensors on that
    split (the same weights), the original's valid_* columns are the means over the two
    splits, and the false_alarm column is nan on the split without polyp-free frames;
  - `condseg eval --data negatives`: the false-alarm rate (printed and in --json) equals a
    NumPy count over its --save-prob maps (the share of frames whose mask covers > 1%);
  - --max-steps + --resume repeats the uninterrupted run exactly (train_log.csv identical)
    and state.safetensors keeps the list; a state saved by an older condseg (one
    "data_dir") still resumes, to the same log as an uninterrupted run;
  - two --data folders with the same name are refused with a message.

Usage: test_multi_data.py --condseg BUILD/condseg --data DATA_ROOT (holding kvasir-seg/
and nopolyp/)
"""
import argparse
import json
import math
import os
import shutil
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import st_io  # noqa: E402
from cs_test import check, link_dataset, run, summary  # noqa: E402

COLUMNS = ["loss", "mIoU", "f1", "recall", "precision"]
ORIGINAL = ("epoch,train_loss,train_mIoU,train_f1,train_recall,train_precision,valid_loss,"
            "valid_mIoU,valid_f1,valid_recall,valid_precision")
EVAL_KEYS = {"mIoU": "mIoU", "f1": "mDSC", "recall": "recall", "precision": "precision"}


def make_dataset(root, source, n_train, n_val, name):
    """A dataset folder of links to the first n_train / n_val ids of `source`."""
    train = open(os.path.join(source, "train.txt")).read().split()[:n_train]
    val = open(os.path.join(source, "val.txt")).read().split()[:n_val]
    return link_dataset(root, source, train, val, name)


def csv_table(path):
    lines = open(path).read().splitlines()
    header = lines[0].split(",")
    return lines, [dict(zip(header, (float(v) for v in line.split(",")))) for line in lines[1:]]


def state_json(run_dir):
    _, meta = st_io.load_file(os.path.join(run_dir, "state.safetensors"))
    return json.loads(meta["condseg.training_state"])


def close(a, b, tol=1e-12):
    return abs(a - b) <= tol * max(1.0, abs(b))


def check_two_split_run(exe, tmp, run_dir, polyps, negatives):
    lines, rows = csv_table(os.path.join(run_dir, "train_log.csv"))
    split_cols = [f"valid_{s}_{c}" for s in ("polyps", "negatives")
                  for c in COLUMNS + ["false_alarm"]]
    check(lines[0] == ORIGINAL + "," + ",".join(split_cols) and len(rows) == 2,
          f"train_log.csv: the original's columns, then each split's; 2 rows ({lines[0]})")
    log = open(os.path.join(run_dir, "train.log")).read()
    check("on %s, %s: 8 training / 4 validation images" % (polyps, negatives) in log,
          "train.log: the training set mixes both train splits (4 + 4 images)")
    check(log.count("  val polyps: ") == 2 and log.count("  val negatives: ") == 2,
          "train.log: a line per split and epoch")
    last = rows[-1]
    for c in COLUMNS:
        mean = (last[f"valid_polyps_{c}"] + last[f"valid_negatives_{c}"]) / 2
        check(close(last[f"valid_{c}"], mean), f"valid_{c} is the mean of the splits' ({mean:.6g})")
    plateau = math.inf  # ReduceLROnPlateau (threshold 1e-4, relative) on 1 - mean mIoU
    for row in rows:
        if 1 - row["valid_mIoU"] < plateau * (1 - 1e-4):
            plateau = 1 - row["valid_mIoU"]
    got = state_json(run_dir).get("plateau_best")
    check(got is not None and close(got, plateau),
          f"the learning-rate plateau follows 1 - mean mIoU ({got} against {plateau})")
    check(math.isnan(last["valid_polyps_false_alarm"]),
          "false_alarm is nan on the split without polyp-free images")
    for name, d in (("polyps", polyps), ("negatives", negatives)):
        js = os.path.join(tmp, f"eval_{name}.json")
        rc, _, err = run([exe, "eval", "-w", os.path.join(run_dir, "last.safetensors"),
                          "--data", d, "--json", js])
        if rc != 0:
            check(False, f"eval on {name} ({err.strip()[-200:]})")
            continue
        res = json.load(open(js))
        worst = max(abs(last[f"valid_{name}_{c}"] - res["mean"][k]) for c, k in EVAL_KEYS.items())
        check(worst <= 1e-12, f"valid_{name}_* equal `condseg eval` on {name} (max diff {worst:.1e})")
        if name == "negatives":
            check(close(last["valid_negatives_false_alarm"], res["false_alarm_rate"]),
                  "valid_negatives_false_alarm equals eval's false-alarm rate "
                  f"({res['false_alarm_rate']})")


def check_false_alarm_eval(exe, tmp, weights, negatives):
    probs, js = os.path.join(tmp, "neg_probs"), os.path.join(tmp, "neg.json")
    rc, out, err = run([exe, "eval", "-w", weights, "--data", negatives, "--json", js,
                        "--save-prob", probs])
    check(rc == 0 and "false alarms" in out, f"eval on polyp-free frames prints false alarms ({out.strip()})")
    if rc != 0:
        return
    res = json.load(open(js))
    marked = [float((np.load(os.path.join(probs, it["id"] + ".npy")) > 0.5).mean())
              for it in res["images"]]
    alarms = sum(m > 0.01 for m in marked)
    check(res["empty_masks"] == len(marked) == 2 and res["false_alarms"] == alarms and
          close(res["false_alarm_rate"], alarms / len(marked)) and res["false_alarm_area"] == 0.01,
          f"false-alarm rate equals the NumPy count over the maps ({alarms} of {len(marked)}, "
          f"marked fractions {marked})")
    check(f"{100.0 * alarms / len(marked):.1f}%" in out, "the printed rate is the same")


def check_resume(exe, tmp, common, reference, data):
    steps = os.path.join(tmp, "steps")
    rc, _, err = run([exe] + common + data + ["--out", steps, "--max-steps", "3"])
    check(rc == 0 and "step limit" in err, f"--max-steps 3 stops mid-epoch 2 ({err.strip()[-200:]})")
    if rc != 0:
        return
    check(state_json(steps).get("data_dirs") == data[1::2], "state.safetensors keeps the --data list")
    rc, _, err = run([exe, "train", "--resume", steps])
    check(rc == 0 and open(os.path.join(steps, "train_log.csv")).read() ==
          open(os.path.join(reference, "train_log.csv")).read(),
          f"resumed: train_log.csv identical to the uninterrupted run ({err.strip()[-200:]})")


def check_old_state_resume(exe, tmp, common, polyps):
    """A state as condseg saved it before --data could repeat: "data_dir", no list."""
    ref, old = os.path.join(tmp, "single_ref"), os.path.join(tmp, "single_old")
    base = common[:-2] + ["--epochs", "1", "--data", polyps]
    rc1, _, _ = run([exe] + base + ["--out", ref])
    rc2, _, _ = run([exe] + base + ["--out", old, "--max-steps", "1"])
    if rc1 or rc2:
        check(False, "single-data runs for the old-state resume")
        return
    path = os.path.join(old, "state.safetensors")
    tensors, meta = st_io.load_file(path)
    state = json.loads(meta["condseg.training_state"])
    state["data_dir"] = state.pop("data_dirs")[0]
    meta["condseg.training_state"] = json.dumps(state)
    st_io.save_file(tensors, path, meta)
    rc, _, err = run([exe, "train", "--resume", old])
    check(rc == 0 and open(os.path.join(old, "train_log.csv")).read() ==
          open(os.path.join(ref, "train_log.csv")).read(),
          f"an old single-data state resumes to the uninterrupted run's log ({err.strip()[-200:]})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--condseg", required=True)
    ap.add_argument("--data", required=True, help="folder holding kvasir-seg/ and nopolyp/")
    a = ap.parse_args()
    exe = a.condseg
    tmp = tempfile.mkdtemp(prefix="condseg-multi-")
    try:
        polyps = make_dataset(tmp, os.path.join(a.data, "kvasir-seg"), 4, 2, "polyps")
        negatives = make_dataset(tmp, os.path.join(a.data, "nopolyp"), 4, 2, "negatives")
        common = ["train", "--stage", "2", "--preset", "condseg-compact", "--image-size", "32",
                  "--batch", "2", "--seed", "0", "--workers", "2", "--epochs", "2"]
        data = ["--data", polyps, "--data", negatives]
        both = os.path.join(tmp, "both")
        rc, _, err = run([exe] + common + data + ["--out", both])
        check(rc == 0, f"stage-2 run on two --data folders ({err.strip()[-300:]})")
        check(err.count("  val polyps: ") == 2 and err.count("  val negatives: ") == 2 and
              "false alarms" in err.split("  val negatives: ")[-1].split("\n")[0] and
              "false alarms" not in err.split("  val polyps: ")[-1].split("\n")[0],
              "the progress shows each split's line per epoch (false alarms where there are "
              "polyp-free images)")
        if rc == 0:
            check_two_split_run(exe, tmp, both, polyps, negatives)
            check_false_alarm_eval(exe, tmp, os.path.join(both, "last.safetensors"), negatives)
            check_resume(exe, tmp, common, both, data)
        check_old_state_resume(exe, tmp, common, polyps)
        twin = os.path.join(tmp, "twin", "polyps")
        shutil.copytree(polyps, twin, symlinks=True)
        rc, _, err = run([exe] + common + ["--data", polyps, "--data", twin, "--out",
                                           os.path.join(tmp, "twin_run")])
        check(rc != 0 and "name" in err and "polyps" in err,
              f"two folders of the same name are refused ({err.strip()})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary("test_multi_data")


if __name__ == "__main__":
    sys.exit(main())
