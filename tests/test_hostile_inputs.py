"""
The hostile user, third round (beside test_hostile.py): no run writes over its own input, two
prepare.py into one folder leave one whole dataset, a damaged checkpoint is refused where it is
read, and the crash paths of a checkpoint (weights only, no mode, a full disk) end in one line.
"""
import errno
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, train_tiny
from test_hostile import refused

import bench
import collect
import show
import train
from configurator import CDLMError
from data.arithmetic import prepare as arith
from model import read_checkpoint, save_checkpoint


def file_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def one_line(e):
    assert "\n" not in str(e.value), str(e.value)
    return str(e.value)


# -----------------------------------------------------------------------------
# prepare.py: one writer, and a dataset committed as one unit

PREP = ["--n_train=20000", "--n_val=50", "--n_test=50"]


def prepare_process(out, seed):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "data/arithmetic/prepare.py"), f"--out_dir={out}",
                             f"--seed={seed}", *PREP], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_prepare_takes_the_one_writer_lock(tmp_path):
    from runtime import lock
    out = tmp_path / "d"
    with lock(str(out), "option out_dir"):  # another writer holds the folder
        p = prepare_process(out, 1)
        _, err = p.communicate()
    assert p.returncode == 2 and err.count("\n") == 1 and "being written by another run" in err, err
    assert not (out / "meta.json").exists()


def test_two_prepares_into_one_folder_leave_one_whole_dataset(tmp_path):
    want = {}
    for seed in (1, 2):  # what each seed's dataset is, prepared alone
        arith.main([f"--out_dir={tmp_path / f'ref{seed}'}", f"--seed={seed}", *PREP])
        want[seed] = {f: file_bytes(tmp_path / f"ref{seed}" / f) for f in ("train.bin", "val.bin", "test.bin")}
    out = tmp_path / "d"
    runs = [prepare_process(out, seed) for seed in (1, 2)]  # started together
    for p in runs:
        _, err = p.communicate()
        assert p.returncode == 0 or (p.returncode == 2 and err.count("\n") == 1
                                     and "being written by another run" in err), err
    assert any(p.returncode == 0 for p in runs)
    seed = json.loads((out / "meta.json").read_text())["settings"]["seed"]
    assert {f: file_bytes(out / f) for f in want[seed]} == want[seed]  # the rows meta.json describes
    assert sorted(os.listdir(out)) == ["meta.json", "test.bin", "train.bin", "val.bin"]  # nothing stray


def test_a_dataset_write_that_fails_keeps_the_old_dataset(tmp_path, monkeypatch):
    from data import common
    out, cfg = tmp_path / "d", dict(n_train=200, n_val=8, n_test=8)
    arith.prepare({"out_dir": str(out), **cfg})
    old = {f: file_bytes(out / f) for f in os.listdir(out)}
    real, calls = common.atomic_write_bytes, []

    def full_at_second(path, data):  # the disk fills while the second split is written
        calls.append(path)
        if len(calls) == 2:
            raise CDLMError(f"cannot write {path}: No space left on device")
        real(path, data)
    monkeypatch.setattr(common, "atomic_write_bytes", full_at_second)
    with pytest.raises(CDLMError, match="No space left"):
        arith.prepare({"out_dir": str(out), **cfg, "seed": 2})
    assert {f: file_bytes(out / f) for f in os.listdir(out)} == old  # untouched, nothing stray


