"""Trajectory collection and the student: stored buffers, refusal of bad files, the tiny pipeline."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from conftest import TINY_COLLECT

from checkpoint import load_model
from collect import Recorder, collect
from configurator import CDLMError
from data.trajectories import load_trajectories
from sample import DecodeSettings, generate


def test_trajectory_files_and_meta(traj_dir, teacher_dir):
    arrays, meta = load_trajectories(traj_dir)
    assert meta["n"] == 48 and meta["block_size"] == 8 and meta["settings"]["steps"] == meta["gen_len"]
    assert arrays["hidden"].dtype == np.float16 and arrays["hidden"].shape == (48, meta["gen_len"], 32)
    assert meta["bytes_per_example"] == meta["prompt_len"] + meta["gen_len"] * (1 + 2 + 32 * 2 + 1)
    assert 0.0 <= meta["teacher_final_acc"] <= 1.0
    assert sorted(os.listdir(traj_dir)) == ["meta.json", meta["set"]]  # no partial work, no old set
    L, bs = meta["gen_len"], 8
    step = np.asarray(arrays["step"])
    assert (np.sort(step, 1) == np.arange(L)).all()  # one token per step, N = gen_len steps
    assert (step.reshape(48, -1, bs).min(2) == np.arange(0, L, bs)).all()  # block after block


def test_stored_hidden_state_rebuilds_teacher_logits(traj_dir, teacher_dir):
    """softmax(lm_head(h)) from the fp16 buffer is the teacher's distribution at that step."""
    arrays, meta = load_trajectories(traj_dir)
    model, ckpt = load_model(os.path.join(teacher_dir, "ckpt.pt"))
    prompt = torch.as_tensor(arrays["prompt"][:4].astype(np.int64))
    dm = ckpt["data_meta"]
    rec = Recorder(len(prompt), dm["gen_len"], model.cfg.n_embd, "cpu")
    out = generate(model, prompt, dm["gen_len"], dm["mask_id"], dm["eos_id"], DecodeSettings(8, steps_per_block=8),
                   on_step=rec).tokens
    step, hidden = rec.step, rec.hidden
    assert torch.equal(out, torch.as_tensor(arrays["tokens"][:4].astype(np.int64)))
    assert torch.equal(step, torch.as_tensor(arrays["step"][:4].astype(np.int64)))
    stored = torch.as_tensor(arrays["hidden"][:4].astype(np.float32))
    with torch.no_grad():
        torch.testing.assert_close(model.lm_head(stored), model.lm_head(hidden), atol=2e-2, rtol=1e-2)
        # and the logits the teacher had at the step it finalized position j of row 0
        j = 5
        x = torch.cat([prompt[:1], torch.where(step[:1] < step[0, j], out[:1], dm["mask_id"])], 1)
        direct = model(x)[0, dm["prompt_len"] + j]
    torch.testing.assert_close(model.lm_head(stored[0, j]), direct, atol=2e-2, rtol=1e-2)


def test_second_collect_does_no_work(traj_dir, teacher_dir, capsys):
    hidden = os.path.join(traj_dir, load_trajectories(traj_dir)[1]["set"], "hidden.bin")
    before = os.path.getmtime(hidden)
    collect({"teacher_dir": teacher_dir, "out_dir": traj_dir, **TINY_COLLECT})
    assert "nothing to do" in capsys.readouterr().out
    assert os.path.getmtime(hidden) == before


def test_a_set_with_an_edited_vocab_size_is_collected_again(tmp_path, traj_dir, teacher_dir, capsys):
    """vocab_size is in no file's size and not in the set's name: collect.py compares it with the data."""
    d = tmp_path / "t"
    shutil.copytree(traj_dir, d)
    meta = json.loads((d / "meta.json").read_text())
    (d / "meta.json").write_text(json.dumps({**meta, "vocab_size": meta["vocab_size"] + 1}))
    collect({"teacher_dir": teacher_dir, "out_dir": str(d), **TINY_COLLECT})
    assert f"vocab_size={meta['vocab_size'] + 1}, but this run needs vocab_size={meta['vocab_size']}" in capsys.readouterr().out
    assert json.loads((d / "meta.json").read_text()) == meta  # collected again: the same set


def test_mismatched_or_corrupt_trajectories_are_refused(tmp_path, traj_dir):
    with pytest.raises(CDLMError, match="gen_len=48, but this run needs gen_len=64"):
        load_trajectories(traj_dir, gen_len=64)
    with pytest.raises(CDLMError, match="block_size=8, but this run needs block_size=4"):
        load_trajectories(traj_dir, block_size=4)
    with pytest.raises(CDLMError, match="come from another teacher"):
        load_trajectories(traj_dir, teacher_hash="0123456789abcdef")
    with pytest.raises(CDLMError, match="vocab_size=21, but this run needs vocab_size=22"):
        load_trajectories(traj_dir, vocab_size=22)  # a meta.json's vocab_size, edited, is no size of its files
    bad = tmp_path / "bad"
    shutil.copytree(traj_dir, bad)
    _, meta = load_trajectories(str(bad))
    (bad / "meta.json").write_text(json.dumps({**meta, "block_size": 4}))  # probe 14: not a set of blocks of 4
    with pytest.raises(CDLMError, match="field block_size is 4, but its settings .* say 8: the file disagrees with itself"):
        load_trajectories(str(bad), block_size=4)
    (bad / "meta.json").write_text(json.dumps(meta))
    with open(bad / meta["set"] / "hidden.bin", "r+b") as f:
        f.truncate(100)
    with pytest.raises(CDLMError, match="hidden.bin is 100 bytes, not the [0-9]+ its meta.json describes"):
        load_trajectories(str(bad))
    with open(bad / meta["set"] / "hidden.bin", "ab") as f:  # too long is named as such, not as truncated
        f.write(bytes(10 ** 6))
    with pytest.raises(CDLMError, match="hidden.bin is 1000100 bytes, not the"):
        load_trajectories(str(bad))
    os.remove(bad / meta["set"] / "hidden.bin")
    with pytest.raises(CDLMError, match="hidden.bin is missing, not the"):
        load_trajectories(str(bad))
    (bad / "meta.json").write_text("{not json")
    with pytest.raises(CDLMError, match="corrupt"):
        load_trajectories(str(bad))
    with pytest.raises(CDLMError, match="no trajectories"):
        load_trajectories(str(tmp_path / "nowhere"))


def test_student_checkpoint(student_dir, teacher_dir):
    s = torch.load(os.path.join(student_dir, "ckpt.pt"), weights_only=True)
    t = torch.load(os.path.join(teacher_dir, "ckpt.pt"), weights_only=True)
    assert s["model_config"]["attn"] == "block_causal" and t["model_config"]["attn"] == "bidirectional"
    assert s["sampling"] == dict(block_size=8, threshold=0.9, steps_per_block=None, cache="exact", refresh="block",
                                 early_stop=True, temperature=0.0, rule="threshold")
    assert s["teacher_hash"] == t["weights_hash"]
    assert s["iter_num"] == 20
    assert any(not torch.equal(s["model"][k], t["model"][k]) for k in t["model"])


@pytest.mark.parametrize("drop", ["w_distill", "w_consist", "w_dlm"])
def test_student_trains_with_each_loss_removed(tmp_path, data_dir, teacher_dir, traj_dir, drop):
    from tests.conftest import train_tiny
    model = train_tiny(str(tmp_path), data_dir, mode="cdlm", init_from="teacher", teacher_dir=teacher_dir,
                       traj_dirs=[traj_dir], max_iters=3, **{drop: 0.0})
    assert os.path.isfile(os.path.join(model, "ckpt.pt"))


def test_student_refuses_trajectories_of_another_block_size(tmp_path, data_dir, teacher_dir, traj_dir):
    from tests.conftest import train_tiny
    with pytest.raises(CDLMError, match="block_size=8, but this run needs block_size=4"):
        train_tiny(str(tmp_path), data_dir, mode="cdlm", init_from="teacher", teacher_dir=teacher_dir,
                   traj_dirs=[traj_dir], block_size=4, max_iters=2)


def test_sample_eval_of_student_uses_its_stored_settings(student_dir, capsys):
    import sample
    sample.main([f"--out_dir={student_dir}", "--eval", "--num_eval=16"])
    out = capsys.readouterr().out.splitlines()
    assert "'threshold': 0.9" in out[-2] and "'cache': 'exact'" in out[-2]
    assert json.loads(out[-1])["n"] == 16


def test_lora_student_keeps_the_teacher_frozen_and_saves_merged_weights(tmp_path, data_dir, teacher_dir, traj_dir):
    from tests.conftest import train_tiny
    out = train_tiny(str(tmp_path), data_dir, mode="cdlm", init_from="teacher", teacher_dir=teacher_dir,
                     traj_dirs=[traj_dir], max_iters=5, lora_rank=4, learning_rate=1e-2)
    s = torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)
    t = torch.load(os.path.join(teacher_dir, "ckpt.pt"), weights_only=True)
    assert set(s["model"]) == set(t["model"])  # merged: the plain model's names
    for k in ("wte.weight", "wpe.weight", "lm_head.weight", "blocks.0.ln_1.weight", "blocks.0.attn.qkv.bias"):
        assert torch.equal(s["model"][k], t["model"][k]), k  # frozen
    assert not torch.equal(s["model"]["blocks.0.attn.qkv.weight"], t["model"]["blocks.0.attn.qkv.weight"])
    model, _ = load_model(os.path.join(out, "ckpt.pt"))
    assert model.cfg.attn == "block_causal"
