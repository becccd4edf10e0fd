"""
A hostile but fair user: bad options, wrong files, crashes at every write and rename, resumes.
Every case ends in one line that names the option, file or setting, before any work is done; a
crash never leaves a mixed trajectory set; a resumed run ends bit-identical to an uninterrupted one.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY_COLLECT, TINY_MODEL, train_tiny

import bench
import collect
import sample
import train
from configurator import CDLMError
from data.arithmetic import prepare as arith
from data.trajectories import load_trajectories


def refused(main, argv, *words):
    """main(argv) stops with the repo's one-line error naming every word, quickly (before work)."""
    t0 = time.time()
    with pytest.raises(CDLMError) as e:
        main(argv)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    assert time.time() - t0 < 5, f"refused only after {time.time() - t0:.1f}s of work"
    return msg


# -----------------------------------------------------------------------------
# options: every one typed (None defaults too) and range-checked

@pytest.mark.parametrize("argv, words", [
    (["--early_stop=no"], ["early_stop='no'", "True or False"]),
    (["--cache=false"], ["cache='false'", "'none', 'exact', 'prefix', 'dual'"]),
    (["--threshold=high"], ["threshold='high'"]),
    (["--threshold=1.5"], ["threshold=1.5", "(0, 1]"]),
    (["--steps_per_block=2.5"], ["steps_per_block=2.5"]),
    (["--steps_per_block=9"], ["steps_per_block=9", "[1, block_size=8]"]),
    (["--block_size=5"], ["block_size=5", "divisor of gen_len=48"]),
    (["--cache=exact"], ["cache='exact'", "bidirectional"]),
    (["--temperature=-1"], ["temperature=-1"]),
    (["--num_eval=0", "--eval"], ["num_eval=0"]),
    (["--batch_size=-3", "--eval"], ["batch_size=-3"]),
    (["--device=cuda"], ["device='cuda'", "no CUDA GPU"]),
    (["--device=tpu"], ["device='tpu'"]),
    (["--dtype=fp8"], ["dtype='fp8'"]),
])
def test_sample_options(teacher_dir, argv, words):
    refused(sample.main, [f"--out_dir={teacher_dir}", "--prompt=5:+3*7=", *argv], *words)


@pytest.mark.parametrize("argv, words", [
    (["--batch_size=0"], ["batch_size=0", "[1, inf)"]),
    (["--block_size=-8"], ["block_size=-8"]),
    (["--block_size=5"], ["block_size=5", "gen_len=48"]),
    (["--threshold=1.5"], ["threshold=1.5"]),
    (["--learning_rate=-1"], ["learning_rate=-1"]),
    (["--min_lr=0.5"], ["min_lr=0.5", "above learning_rate"]),
    (["--n_embd=31"], ["n_embd=31", "n_head=2"]),
    (["--dropout=1.5"], ["dropout=1.5"]),
    (["--eval_interval=0"], ["eval_interval=0"]),
    (["--mode=diffusion"], ["mode='diffusion'", "'dlm', 'cdlm', 'ar'"]),
    (["--init_from=teacher"], ["init_from='teacher'"]),
    (["--mode=cdlm"], ["init_from='scratch'"]),
    (["--lora_rank=4"], ["lora_rank=4", "student"]),
    (["--compile=yes"], ["compile='yes'"]),
    (["--traj_dirs=[]"], ["traj_dirs=[]"]),
    (["--device=cuda:0"], ["device='cuda:0'"]),
])
def test_train_options(tmp_path, data_dir, argv, words):
    out = tmp_path / "run"
    refused(train.main, [f"--data_dir={data_dir}", f"--out_dir={out}", "--n_layer=1", "--n_head=2", "--n_embd=32",
                         *argv], *words)
    assert not (out / "ckpt.pt").exists()


@pytest.mark.parametrize("argv, words", [
    (["--chunk=0"], ["chunk=0"]),
    (["--n_examples=0"], ["n_examples=0"]),
    (["--hidden_dtype=int8"], ["hidden_dtype='int8'", "'float16', 'float32'"]),
    (["--block_size=7"], ["block_size=7", "divisor"]),
    (["--temperature=warm"], ["temperature='warm'"]),
])
def test_collect_options(tmp_path, teacher_dir, argv, words):
    refused(collect.main, [f"--teacher_dir={teacher_dir}", f"--out_dir={tmp_path / 't'}", "--device=cpu", *argv], *words)


@pytest.mark.parametrize("argv, words", [
    (["--methods=cdlm,fast"], ["methods="]),
    (["--repeats=0"], ["repeats=0"]),
    (["--threshold=1.5"], ["threshold=1.5"]),
    (["--sweep_thresholds=0.5,2"], ["sweep_thresholds="]),
])
def test_bench_options(teacher_dir, argv, words):
    refused(bench.main, [f"--teacher_dir={teacher_dir}", *argv], *words)


def test_prepare_refuses_impossible_settings_before_drawing(tmp_path):
    # 180 distinct problems exist with one operation of '+' or '*': 2000 held-out ones cannot
    refused(arith.main, [f"--out_dir={tmp_path}", "--min_ops=1", "--max_ops=1"], "only 180 exist")
    refused(arith.main, [f"--out_dir={tmp_path}", "--min_ops=6", "--max_ops=5"], "min_ops=6")
    refused(arith.main, [f"--out_dir={tmp_path}", "--ops=+/"], "ops='+/'")
    assert os.listdir(tmp_path) == []


# -----------------------------------------------------------------------------
# outputs checked before work

def test_unwritable_outputs_fail_before_work(tmp_path, data_dir, teacher_dir, student_dir, ar_dir):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    refused(train.main, [f"--data_dir={data_dir}", f"--out_dir={blocker}/run"], "out_dir", "not writable")
    refused(collect.main, [f"--teacher_dir={teacher_dir}", f"--out_dir={blocker}/t", "--device=cpu"], "not writable")
    refused(bench.main, [f"--teacher_dir={teacher_dir}", f"--student_dir={student_dir}", f"--ar_dir={ar_dir}",
                         f"--out_path={blocker}/b.json", "--device=cpu"], "out_path", "not writable")
    refused(arith.main, [f"--out_dir={blocker}/d"], "out_dir", "not writable")


# -----------------------------------------------------------------------------
# contracts between files

def test_checkpoint_kinds_are_checked(tmp_path, data_dir, teacher_dir, student_dir, ar_dir, traj_dir):
    for wrong in (ar_dir, student_dir):  # neither is a teacher
        refused(train.main, [f"--data_dir={data_dir}", f"--out_dir={tmp_path / 's'}", "--mode=cdlm",
                             "--init_from=teacher", f"--teacher_dir={wrong}", f"--traj_dirs={traj_dir}"],
                "--teacher_dir", "needs the teacher (dlm)")
        refused(collect.main, [f"--teacher_dir={wrong}", f"--out_dir={tmp_path / 't'}", "--device=cpu"],
                "--teacher_dir", "needs the teacher")
    refused(bench.main, [f"--teacher_dir={student_dir}", "--methods=dlm"], "--teacher_dir", "holds the student")
    refused(bench.main, [f"--student_dir={teacher_dir}", "--methods=cdlm"], "--student_dir", "holds the teacher")
    refused(bench.main, [f"--ar_dir={teacher_dir}", "--methods=ar"], "--ar_dir", "needs the AR baseline")


def test_trajectories_must_come_from_the_teacher_in_use(tmp_path, data_dir, traj_dir):
    other = train_tiny(str(tmp_path / "other"), data_dir, mode="dlm", max_iters=5, seed=7)
    refused(train.main, [f"--data_dir={data_dir}", f"--out_dir={tmp_path / 's'}", "--mode=cdlm", "--init_from=teacher",
                         f"--teacher_dir={other}", f"--traj_dirs={traj_dir}", "--n_layer=2", "--n_head=2", "--n_embd=32"],
            "come from another teacher")


def test_student_must_come_from_the_benched_teacher(tmp_path, data_dir, student_dir):
    other = train_tiny(str(tmp_path / "other"), data_dir, mode="dlm", max_iters=5, seed=7)
    refused(bench.main, [f"--teacher_dir={other}", f"--student_dir={student_dir}", "--methods=dlm,cdlm"],
            "distilled from another teacher")


def test_data_is_found_from_anywhere_and_checked(tmp_path, data_dir, teacher_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # checkpoints store where their data is, absolutely
    sample.main([f"--out_dir={teacher_dir}", "--eval", "--num_eval=4"])
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["n"] == 4
    other = tmp_path / "other"
    arith.prepare({"out_dir": str(other), "n_train": 200, "n_val": 8, "n_test": 8, "seed": 2})
    refused(sample.main, [f"--out_dir={teacher_dir}", "--eval", f"--data_dir={other}"], "other data")
    refused(sample.main, [f"--out_dir={teacher_dir}", "--eval", f"--data_dir={tmp_path / 'none'}"], "--data_dir")


def test_corrupt_files_are_named(tmp_path, data_dir, teacher_dir):
    bad = tmp_path / "data"
    bad.mkdir()
    (bad / "meta.json").write_text("{not json")
    refused(train.main, [f"--data_dir={bad}", f"--out_dir={tmp_path / 'r'}"], f"{bad}/meta.json", "corrupt")
    ckpt = tmp_path / "ck"
    ckpt.mkdir()
    torch.save({"model": {}}, ckpt / "ckpt.pt")
    refused(sample.main, [f"--out_dir={ckpt}", "--prompt=1:+2="], "not a checkpoint of this version")


# -----------------------------------------------------------------------------
# collect: a crash at every write and every rename, then a rerun

def collect_into(out, teacher_dir, **kw):
    collect.collect({"teacher_dir": teacher_dir, "out_dir": str(out), **TINY_COLLECT, **kw})


class Crash(Exception):
    pass


def dies_after(real, k):
    calls = [0]

    def fn(*a, **kw):
        if calls[0] == k:
            raise Crash(f"killed at call {k}")
        calls[0] += 1
        return real(*a, **kw)
    return fn


@pytest.mark.parametrize("call", ["os.replace", "os.pwrite", "os.fsync"])
def test_collect_crash_windows(tmp_path, teacher_dir, monkeypatch, call):
    """A crash at the k-th write or rename of every kind: readers see the old complete set or the
    new complete set, and a rerun recovers without any manual delete."""
    ref_new, ref_old = tmp_path / "ref_new", tmp_path / "ref_old"
    collect_into(ref_new, teacher_dir)
    collect_into(ref_old, teacher_dir, n_examples=32)
    new, old = (load_trajectories(str(d))[0] for d in (ref_new, ref_old))
    real = {"os.replace": os.replace, "os.pwrite": os.pwrite, "os.fsync": os.fsync}[call]
    k = 0
    while True:
        out = tmp_path / f"run{k}"
        shutil.copytree(ref_old, out)  # an older complete set is live
        monkeypatch.setattr(call, dies_after(real, k))
        try:
            collect_into(out, teacher_dir)
            crashed = False
        except Crash:
            crashed = True
        monkeypatch.setattr(call, real)
        arrays, meta = load_trajectories(str(out))  # whatever instant: a whole set, old or new
        want = new if meta["n"] == 48 else old
        for f in ("tokens", "step", "hidden"):
            np.testing.assert_array_equal(arrays[f], want[f], err_msg=f"{call} #{k}: {f}")
        collect_into(out, teacher_dir)  # the rerun recovers
        arrays, meta = load_trajectories(str(out))
        assert meta["n"] == 48 and np.array_equal(arrays["hidden"], new["hidden"])
        assert sorted(os.listdir(out)) == ["meta.json", meta["set"]]  # nothing left behind
        if not crashed:
            break
        k += 1
    assert k >= 2  # every call of that kind was a crash point once


def test_collect_resume_verifies_partial_files(tmp_path, teacher_dir, monkeypatch, capsys):
    out = tmp_path / "t"
    monkeypatch.setattr("os.replace", dies_after(os.replace, 1))  # dies after the first chunk is recorded
    with pytest.raises(Crash):
        collect_into(out, teacher_dir)
    monkeypatch.undo()
    with open(out / "partial" / "hidden.bin", "r+b") as f:
        f.truncate(100)  # damaged while it lay there
    collect_into(out, teacher_dir)
    assert "starting over" in capsys.readouterr().out
    ref = tmp_path / "ref"
    collect_into(ref, teacher_dir)
    np.testing.assert_array_equal(load_trajectories(str(out))[0]["hidden"], load_trajectories(str(ref))[0]["hidden"])


def test_collect_disk_full_is_one_line_and_keeps_the_last_good_state(tmp_path, teacher_dir, monkeypatch):
    out = tmp_path / "t"
    collect_into(out, teacher_dir, n_examples=32)

    def full(*a):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("os.pwrite", full)
    msg = refused(collect.main, [f"--teacher_dir={teacher_dir}", f"--out_dir={out}", "--n_examples=48",
                                 "--batch_size=16", "--chunk=32", "--device=cpu"], "No space left on device", "kept")
    assert "run again" in msg
    assert load_trajectories(str(out))[1]["n"] == 32


# -----------------------------------------------------------------------------
# exact resume

@pytest.mark.parametrize("mode", ["dlm", "cdlm", "ar", "cdlm_lora"])
def test_kill_and_resume_equals_an_uninterrupted_run(tmp_path, data_dir, teacher_dir, traj_dir, monkeypatch, mode):
    extra = dict(init_from="teacher", teacher_dir=teacher_dir, traj_dirs=[traj_dir]) if "cdlm" in mode else {}
    if mode == "cdlm_lora":
        mode, extra["lora_rank"] = "cdlm", 4
    kw = dict(mode=mode, max_iters=30, eval_interval=10, **extra)
    whole = train_tiny(str(tmp_path / "whole"), data_dir, **kw)
    real = train.get_lr

    def killed(it, cfg):
        if it == 17:
            raise Crash("killed between checkpoints")
        return real(it, cfg)
    monkeypatch.setattr(train, "get_lr", killed)
    with pytest.raises(Crash):
        train_tiny(str(tmp_path / "cut"), data_dir, **kw)
    monkeypatch.setattr(train, "get_lr", real)
    cut = train_tiny(str(tmp_path / "cut"), data_dir, **{**kw, "init_from": "resume"})
    a, b = (torch.load(os.path.join(d, "ckpt.pt"), weights_only=True) for d in (whole, cut))
    assert a["iter_num"] == b["iter_num"] == 30
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


@pytest.mark.parametrize("change, word", [(dict(mode="ar"), "holds the teacher"), (dict(block_size=4), "block_size=8"),
                                          (dict(n_layer=3), "n_layer=2")])
def test_resume_under_other_settings_is_refused(tmp_path, data_dir, change, word):
    out = train_tiny(str(tmp_path / "r"), data_dir, mode="dlm", max_iters=5)
    with pytest.raises(CDLMError, match=word):
        train_tiny(out, data_dir, **{"mode": "dlm", "max_iters": 10, "init_from": "resume", **change})


# -----------------------------------------------------------------------------
# the entry points: one line on stderr, exit status 2; bugs keep their traceback

def test_scripts_print_one_line_and_exit_2(tmp_path):
    for script, argv in (("train.py", ["--batch_size=0"]), ("sample.py", [f"--out_dir={tmp_path}", "--prompt=1"]),
                         ("collect.py", ["--chunk=0"]), ("bench.py", ["--repeats=0"]),
                         ("data/arithmetic/prepare.py", ["--min_ops=1", "--max_ops=1"])):
        p = subprocess.run([sys.executable, os.path.join(ROOT, script), *argv], capture_output=True, text=True,
                           cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert p.returncode == 2 and p.stdout == "", (script, p.stdout, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (script, p.stderr)
    assert TINY_MODEL  # the fixtures' sizes are shared with these cases
