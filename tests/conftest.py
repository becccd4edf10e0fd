"""Shared fixtures: a tiny dataset and tiny models, trained once per test session in seconds."""
import os
import subprocess
import sys
import tempfile

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


# Tests marked `compiled` run torch.compile: cold compiles (C++ code generated and built) are most
# of their time and use one core, as do most other tests. In a run of more than them on a machine
# of two or more cores, they run in a second pytest process started at collection, beside the rest;
# the last test waits for it and fails with its output if any of them failed.
SIDE = "CDLM_TESTS_SIDE"  # set in that second process: there, they are ordinary tests


def pytest_configure(config):
    config.addinivalue_line("markers", "compiled: runs torch.compile (in a full run, in a process of its own)")


def pytest_collection_modifyitems(session, config, items):
    side = [i for i in items if i.get_closest_marker("compiled")]
    waiter = [i for i in items if i.name == "test_the_compiled_tests_passed_beside_the_rest"]
    rest = [i for i in items if i not in side and i not in waiter]
    if os.environ.get(SIDE) or not side or not rest or not waiter or (os.cpu_count() or 1) < 2:
        items[:] = [i for i in items if i not in waiter]  # it has no process to wait for: deselected
        config.hook.pytest_deselected(items=waiter)
        return
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *[i.nodeid for i in side]],
                            cwd=str(config.rootpath), env={**os.environ, SIDE: "1"}, stdout=log, stderr=subprocess.STDOUT)
    config.compiled_side = (proc, log, len(side))
    items[:] = rest + waiter
    config.hook.pytest_deselected(items=side)
