"""cs_test.py — what the Python tests of tests/ share: check() and the list of failed
checks, run() for the `condseg` program, the closing summary line, and dataset folders
made of links to real images.

The tests import it as `cs_test` without a path of their own: ctest runs them from the
source tree's tests/, and Python puts a script's own folder first on sys.path.
"""
import os
import subprocess

# The descriptions of the checks that failed, in order.
failures = []


def check(cond, what):
    """Prints the check's verdict and description; returns cond, so a check can guard
    the checks that need it."""
    # flush: a test that ctest kills at its timeout still shows the verdicts it reached.
    print(("ok    " if cond else "FAIL  ") + what, flush=True)
    if not cond:
        failures.append(what)
    return cond


def run(args, **kw):
    """Runs args (subprocess.run keywords in kw); returns (status, stdout, stderr)."""
    p = subprocess.run(args, capture_output=True, text=True, **kw)
    return p.returncode, p.stdout, p.stderr


def summary(name, note=""):
    """The test's last line and exit status: 1 if any check failed (note follows the
    count), else 0."""
    if failures:
        print(f"{name}: {len(failures)} check(s) failed{note}")
        return 1
    print(f"{name}: all checks passed")
    return 0


def link_dataset(root, source, train_ids, val_ids, name):
    """A dataset folder root/name of links to source's images/ and masks/ (.jpg) of
    train_ids + val_ids, with its train.txt and val.txt; returns its path."""
    d = os.path.join(root, name)
    for sub in ("images", "masks"):
        os.makedirs(os.path.join(d, sub))
        for i in train_ids + val_ids:
            os.symlink(os.path.join(source, sub, i + ".jpg"), os.path.join(d, sub, i + ".jpg"))
    for split, ids in (("train", train_ids), ("val", val_ids)):
        with open(os.path.join(d, split + ".txt"), "w") as f:
            f.write("".join(i + "\n" for i in ids))
    return d
