"""DDP through torchrun: 2 CPU processes with gloo, every training mode and trajectory collection."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("ddp")
    out_root, check = str(root / "out"), str(root / "check")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           os.path.join(ROOT, "tests", "ddp_worker.py"), data_dir, out_root, check],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out_root, check


def test_rank0_alone_writes(ddp_run):
    out_root, check = ddp_run
    writes = [json.load(open(os.path.join(check, f"writes_rank{r}.json"))) for r in (0, 1)]
    assert writes[1] == [], f"rank 1 wrote {writes[1]}"
    expected = {f"{m}/ckpt.pt" for m in ("teacher", "student", "ar")} | \
        {f"traj/partial/{f}.bin" for f in ("prompt", "tokens", "step", "hidden", "truth")} | {"traj/meta.json"}
    assert expected <= set(writes[0])
    assert any(w.startswith("traj/set-") for w in writes[0])  # the finished set, renamed into place


@pytest.mark.parametrize("stage", ["teacher", "student", "ar"])
def test_ranks_agree_on_weights(ddp_run, stage):
    out_root, check = ddp_run
    w0, w1 = (torch.load(os.path.join(check, f"{stage}_rank{r}.pt"), weights_only=True) for r in (0, 1))
    ckpt = torch.load(os.path.join(out_root, stage, "ckpt.pt"), weights_only=True)
    assert ckpt["iter_num"] == 6
    for k in w0:
        assert torch.equal(w0[k], w1[k]), f"ranks disagree on {k}"
        assert torch.equal(w0[k], ckpt["model"][k]), f"checkpoint differs from the trained {k}"


def test_sharded_collection_equals_one_process(ddp_run, tmp_path):
    """The shards of 2 ranks merge into exactly the set one process collects (same batches)."""
    from collect import collect
    from data.trajectories import load_trajectories
    out_root, _ = ddp_run
    collect({"teacher_dir": os.path.join(out_root, "teacher"), "out_dir": str(tmp_path),
             "n_examples": 44, "batch_size": 8, "chunk": 24, "device": "cpu"})
    two, meta2 = load_trajectories(os.path.join(out_root, "traj"))
    one, meta1 = load_trajectories(str(tmp_path))
    assert meta2["n"] == meta1["n"] == 44
    assert meta2["teacher_final_acc"] == meta1["teacher_final_acc"]
    for k in ("prompt", "tokens", "step", "truth"):
        np.testing.assert_array_equal(two[k], one[k], err_msg=k)
    np.testing.assert_allclose(two["hidden"].astype(np.float32), one["hidden"].astype(np.float32), atol=1e-2)
    assert (two["step"] >= 0).all()  # every position of every row was finalized and stored
