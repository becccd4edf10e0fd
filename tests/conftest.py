"""Shared fixtures: a tiny dataset and tiny models, trained once per test session in seconds."""
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 0)) or max(1, min(2, os.cpu_count() or 1)))

TINY_MODEL = dict(n_layer=2, n_head=2, n_embd=32, batch_size=16, eval_interval=10, eval_iters=2,
                  warmup_iters=2, device="cpu")
TINY_COLLECT = dict(n_examples=48, batch_size=16, chunk=32, device="cpu")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    from data.arithmetic.prepare import prepare
    d = str(tmp_path_factory.mktemp("arith"))
    prepare({"out_dir": d, "n_train": 2000, "n_val": 64, "n_test": 64})
    return d


PREPARE = "-m data.arithmetic.prepare"  # the quick start's first command: the problems the teacher was trained on


@pytest.fixture(scope="session")
def ref_data():
    """data/arithmetic as the reference checkpoints were trained on it, prepared as the README says on a
    clean clone (as in CI), where those checkpoints' data checks read it."""
    d = os.path.join(ROOT, "data", "arithmetic")
    if not os.path.isfile(os.path.join(d, "meta.json")):
        out = subprocess.run([sys.executable, *PREPARE.split()], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
    return d


def train_tiny(out_dir, data_dir, **kw):
    from train import train
    train({**TINY_MODEL, "out_dir": out_dir, "data_dir": data_dir, "max_iters": 20, **kw})
    return out_dir


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory, data_dir):
    return train_tiny(str(tmp_path_factory.mktemp("teacher")), data_dir, mode="dlm", max_iters=30)


@pytest.fixture(scope="session")
def traj_dir(tmp_path_factory, teacher_dir):
    from collect import collect
    d = str(tmp_path_factory.mktemp("traj"))
    collect({"teacher_dir": teacher_dir, "out_dir": d, **TINY_COLLECT})
    return d


@pytest.fixture(scope="session")
def student_dir(tmp_path_factory, data_dir, teacher_dir, traj_dir):
    return train_tiny(str(tmp_path_factory.mktemp("student")), data_dir, mode="cdlm", init_from="teacher",
                      teacher_dir=teacher_dir, traj_dirs=[traj_dir])


@pytest.fixture(scope="session")
def ar_dir(tmp_path_factory, data_dir):
    return train_tiny(str(tmp_path_factory.mktemp("ar")), data_dir, mode="ar")
