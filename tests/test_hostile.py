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
from configurator import CDLMError, with_options
from data.arithmetic import prepare as arith
from data.trajectories import load_trajectories, set_name


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
    refused(train.main, with_options([f"--data_dir={data_dir}", f"--out_dir={out}", "--n_layer=1", "--n_head=2",
                                      "--n_embd=32"], *argv), *words)
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
    file = f"sits in '{blocker}', which is a file, not a folder"  # an output under a file: the true reason
    refused(train.main, [f"--data_dir={data_dir}", f"--out_dir={blocker}/run"], "out_dir", file)
    refused(collect.main, [f"--teacher_dir={teacher_dir}", f"--out_dir={blocker}/t", "--device=cpu"], file)
    refused(bench.main, [f"--teacher_dir={teacher_dir}", f"--student_dir={student_dir}", f"--ar_dir={ar_dir}",
                         f"--out_path={blocker}/b.json", "--device=cpu"], "out_path", file)
    refused(arith.main, [f"--out_dir={blocker}/d"], "out_dir", file)


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
    d = tmp_path / "ckpts"  # a folder of checkpoints whose student is not its teacher's: read alone, still named
    d.mkdir()
    os.symlink(other, d / "teacher")
    os.symlink(student_dir, d / "student")
    refused(bench.main, [f"--checkpoints={d}", "--methods=cdlm"], "distilled from another teacher than "
            f"--checkpoints={d} (its teacher)")


def test_data_is_found_from_anywhere_and_checked(tmp_path, data_dir, teacher_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # checkpoints store where their data is, absolutely
    sample.main([f"--out_dir={teacher_dir}", "--eval", "--num_eval=4"])
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["n"] == 4
    other = tmp_path / "other"
    arith.prepare({"out_dir": str(other), "n_train": 200, "n_val": 8, "n_test": 8, "seed": 2})
    refused(sample.main, [f"--out_dir={teacher_dir}", "--eval", f"--data_dir={other}"], "other data")
    refused(sample.main, [f"--out_dir={teacher_dir}", "--eval", f"--data_dir={tmp_path / 'none'}"],
            f"option data_dir='{tmp_path / 'none'}' does not exist")


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

def collect_into(out, teacher_dir, replace=True, **kw):  # replace: as demo.py, a set of other settings there
    collect.collect({"teacher_dir": teacher_dir, "out_dir": str(out), **TINY_COLLECT, **kw}, replace)


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


def decoded_once(real):
    """collect's generate, each batch of prompts decoded once and replayed after (its steps cloned
    for the Recorder): the crash windows lie in the writes, which every run makes again."""
    seen = {}

    def copy(v):
        if isinstance(v, torch.Tensor):
            return v.clone()
        return type(v)(*map(copy, v)) if isinstance(v, tuple) and hasattr(v, "_fields") else v

    def generate(model, prompt, *args, on_step=None, **kw):
        key = prompt.cpu().numpy().tobytes()
        if key not in seen:
            steps = []
            seen[key] = real(model, prompt, *args, on_step=lambda ev: steps.append(copy(ev)), **kw), steps
        out, steps = seen[key]
        for ev in steps:
            on_step(ev)
        return copy(out)
    return generate


@pytest.mark.parametrize("call", ["os.replace", "os.pwrite", "os.fsync"])
def test_collect_crash_windows(tmp_path, teacher_dir, monkeypatch, call):
    """A crash at the k-th write or rename of every kind: readers see the old complete set or the
    new complete set, and a rerun recovers without any manual delete."""
    monkeypatch.setattr(collect, "generate", decoded_once(collect.generate))
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
    msg = refused(lambda _: collect_into(out, teacher_dir, n_examples=48), [],  # replacing it, as demo.py does
                  "No space left on device", "kept")
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
    runs = {script: subprocess.Popen([sys.executable, os.path.join(ROOT, script), *argv], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
            for script, argv in (("train.py", ["--batch_size=0"]), ("sample.py", [f"--out_dir={tmp_path}", "--prompt=1"]),
                                 ("collect.py", ["--chunk=0"]), ("bench.py", ["--repeats=0"]),
                                 ("data/arithmetic/prepare.py", ["--min_ops=1", "--max_ops=1"]))}  # side by side
    for script, p in runs.items():
        p.stdout, p.stderr = p.communicate()
        assert p.returncode == 2 and p.stdout == "", (script, p.stdout, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (script, p.stderr)
    assert TINY_MODEL  # the fixtures' sizes are shared with these cases


# -----------------------------------------------------------------------------
# one writer per output (a real second process), and a killed writer's lock never blocks a rerun

def python(code, **kw):
    return subprocess.Popen([sys.executable, "-c", f"import sys; sys.path.insert(0, {ROOT!r})\n" + code],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_a_second_writer_is_refused_and_a_killed_one_does_not_block(tmp_path, teacher_dir):
    out, started = tmp_path / "t", tmp_path / "started"
    argv = [f"--teacher_dir={teacher_dir}", f"--out_dir={out}", "--n_examples=48", "--batch_size=16", "--chunk=32",
            "--device=cpu"]
    first = python(f"""import os, time, collect
real = collect.generate
def paused(*a, **kw):  # the first writer stops inside its first batch, holding the set
    open({str(started)!r}, "w").close()
    time.sleep(600)
collect.generate = paused
from configurator import run_main
sys.argv = ["collect.py"] + {argv!r}
run_main(collect.main)""")
    try:
        t0 = time.time()
        while not started.exists():
            assert first.poll() is None and time.time() - t0 < 120, first.communicate()
            time.sleep(0.1)
        second = subprocess.run([sys.executable, os.path.join(ROOT, "collect.py"), *argv, "--temperature=0.5"],
                                capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
        assert "being written by another run" in second.stderr and f"pid {first.pid}" in second.stderr
        refused(collect.main, argv, "option out_dir", f"pid {first.pid}", "collect.py")  # in this process too
    finally:
        first.kill()  # SIGKILL: no cleanup runs, the kernel drops the lock
        first.wait()
    collect_into(out, teacher_dir)  # the rerun is not blocked, and makes the greedy set alone
    collect_into(tmp_path / "ref", teacher_dir)
    for f in ("tokens", "step", "hidden"):
        np.testing.assert_array_equal(load_trajectories(str(out))[0][f], load_trajectories(str(tmp_path / "ref"))[0][f])


def test_checkpoints_results_and_replays_have_one_writer(tmp_path, data_dir, teacher_dir):
    import show
    from files import lock
    out = tmp_path / "run"
    with lock(str(out), "option out_dir"):  # another open file description: flock refuses it like another process
        refused(train.main, [f"--data_dir={data_dir}", f"--out_dir={out}"], "option out_dir", "another run")
    with lock(str(tmp_path / "b.json"), "option out_path", file=True):
        refused(bench.main, [f"--teacher_dir={teacher_dir}", "--methods=dlm", f"--out_path={tmp_path / 'b.json'}"],
                "option out_path", "another run")
    with lock(str(tmp_path / "r.html"), "option html", file=True):
        refused(show.main, [f"--teacher_dir={teacher_dir}", "--methods=dlm", f"--html={tmp_path / 'r.html'}"],
                "option html", "another run")


# -----------------------------------------------------------------------------
# every damaged state the repo can detect is recovered by a rerun, and the message says so

@pytest.mark.parametrize("damage", ["corrupt meta", "meta of wrong types", "hidden.bin deleted"])
def test_damaged_trajectory_sets_are_recovered_by_a_rerun(tmp_path, teacher_dir, traj_dir, damage):
    out = tmp_path / "t"
    shutil.copytree(traj_dir, out)
    want, meta = load_trajectories(str(out))
    if damage == "corrupt meta":
        (out / "meta.json").write_text("{not json")
    elif damage == "meta of wrong types":
        (out / "meta.json").write_text(json.dumps({**meta, "n": "48"}))
    else:
        os.remove(out / meta["set"] / "hidden.bin")
    with pytest.raises(CDLMError, match="run collect.py again") as e:
        load_trajectories(str(out))
    assert ("field n" if "types" in damage else "meta.json" if "meta" in damage else "hidden.bin") in str(e.value)
    collect_into(out, teacher_dir)  # that rerun recovers, no file deleted by hand
    got, _ = load_trajectories(str(out))
    for f in ("tokens", "hidden"):
        np.testing.assert_array_equal(got[f], want[f])


def test_damaged_data_and_checkpoints_name_their_rerun(tmp_path, data_dir):
    d, cfg = tmp_path / "d", dict(n_train=200, n_val=8, n_test=8)
    arith.prepare({"out_dir": str(d), **cfg})
    meta = json.loads((d / "meta.json").read_text())
    (d / "meta.json").write_text(json.dumps({**meta, "vocab_size": "21"}))
    refused(train.main, [f"--data_dir={d}", f"--out_dir={tmp_path / 'r'}"], "meta.json: field vocab_size", "prepare.py")
    arith.prepare({"out_dir": str(d), **cfg})  # the same prepare, run again, rewrites it
    assert json.loads((d / "meta.json").read_text())["vocab_size"] == 21
    (d / "meta.json").write_text(json.dumps({**meta, "eos_id": 3}))  # id 3 is the character '0'
    refused(train.main, [f"--data_dir={d}", f"--out_dir={tmp_path / 'r'}"], "meta.json: field eos_id=3 is not the char "
            "tokenizer's eos_id (2)", "prepare.py")
    assert not (tmp_path / "r").exists()
    arith.prepare({"out_dir": str(d), **cfg})
    run = tmp_path / "run"
    run.mkdir()
    (run / "ckpt.pt").write_bytes(b"torn")
    argv = [f"--data_dir={data_dir}", f"--out_dir={run}", "--n_layer=1", "--n_head=2", "--n_embd=32", "--batch_size=8",
            "--max_iters=2", "--eval_iters=1", "--warmup_iters=1", "--device=cpu"]
    refused(train.main, argv + ["--init_from=resume"], "cannot read checkpoint", "--init_from=scratch")
    train.main(argv)  # the flag it names replaces the checkpoint
    assert torch.load(run / "ckpt.pt", weights_only=True)["iter_num"] == 2


# -----------------------------------------------------------------------------
# every option given takes effect or is refused, combinations included; ranges printed are enforced

def test_options_without_effect_are_refused(tmp_path, data_dir, teacher_dir, student_dir, traj_dir):
    import show
    s = [f"--out_dir={teacher_dir}", "--prompt=5:+3*7="]
    refused(sample.main, s + ["--steps_per_block=4", "--threshold=0.5"], "steps_per_block=4", "threshold=0.5", "not both")
    refused(sample.main, s + ["--refresh=step"], "refresh='step'", "cache='none'")
    refused(sample.main, s + ["--eval"], "not both")
    refused(sample.main, s + ["--num_eval=5"], "num_eval=5", "without --eval")
    refused(sample.main, s + ["--seed=3"], "seed=3", "temperature 0")
    refused(sample.main, s + ["--temperature=1e-320"], "temperature=1e-320", "0 or [1e-3, inf)")
    b = [f"--student_dir={student_dir}", "--methods=cdlm", f"--out_path={tmp_path / 'b.json'}"]
    refused(bench.main, b + ["--num_eval=4", "--latency_n=5"], "latency_n=5", "4 problems")
    refused(bench.main, b + ["--sweep_thresholds=0.5"], "sweep_thresholds", "without --sweep")
    refused(bench.main, b + ["--sweep", "--sweep_block_sizes=5"], "sweep_block_sizes=[5]", "gen_len")
    b = [f"--teacher_dir={teacher_dir}", "--methods=dlm", f"--out_path={tmp_path / 'b.json'}"]
    refused(bench.main, b + ["--threshold=0.5"], "threshold=0.5", "none decodes with a threshold")
    refused(bench.main, b + [f"--ar_dir={teacher_dir}"], "ar_dir", "none reads that checkpoint")
    t = [f"--data_dir={data_dir}", f"--out_dir={tmp_path / 'r'}"]
    refused(train.main, t + ["--w_distill=0.5"], "w_distill=0.5", "mode='dlm'", "student")
    refused(train.main, t + ["--mode=ar", "--prompt_noise=0.25"], "prompt_noise=0.25", "mode='ar'", "teacher")
    refused(train.main, t + ["--mode=cdlm", "--init_from=teacher", f"--teacher_dir={teacher_dir}",
                             f"--traj_dirs={traj_dir}", "--n_layer=3"], "n_layer=3", "teacher's n_layer=2")
    st = t + ["--mode=cdlm", "--init_from=teacher", f"--teacher_dir={teacher_dir}", f"--traj_dirs={traj_dir}"]
    refused(train.main, st + ["--w_dlm=0", "--dlm_rows=8"], "dlm_rows=8", "w_dlm=0")
    refused(train.main, st + ["--batch_size=16", "--dlm_rows=17"], "dlm_rows=17", "batch_size=16")
    refused(train.main, st + ["--dlm_rows=0"], "dlm_rows=0", "[1, inf)")
    c = [f"--teacher_dir={teacher_dir}", f"--out_dir={tmp_path / 'c'}", "--device=cpu"]
    refused(collect.main, c + ["--seed=4"], "seed=4", "temperature 0")
    refused(collect.main, c + ["--n_examples=5000"], "n_examples=5000", "2000 problems")
    refused(show.main, ["--view=masks", "--state=+3"], "state='+3'", "--view=masks")
    refused(show.main, ["--view=masks", f"--png={tmp_path / 'm'}"], "png=", ".png")
    bad = tmp_path / "traj"  # trajectories of another block size, or of another teacher, for the states view
    for change, words in ((dict(block_size=4), "block_size=4"), (dict(teacher_hash="0123456789abcdef"), "another teacher")):
        shutil.rmtree(bad, ignore_errors=True)
        shutil.copytree(traj_dir, bad)
        meta = json.loads((bad / "meta.json").read_text())
        meta["settings"].update(change)  # collected so: its settings, and its set named by them
        os.rename(bad / meta["set"], bad / set_name(meta["settings"]))
        meta["set"] = set_name(meta["settings"])
        (bad / "meta.json").write_text(json.dumps({**meta, **{k: v for k, v in change.items() if k in meta}}))
        refused(show.main, ["--view=states", f"--student_dir={student_dir}", f"--traj_dir={bad}"], words)


def test_decoding_options_print_the_range_they_enforce(teacher_dir):
    for opt, want in (("block_size=0", "[1, inf)"), ("steps_per_block=0", "[1, inf)"), ("temperature=-1", "0 or [1e-3")):
        msg = refused(sample.main, [f"--out_dir={teacher_dir}", "--prompt=1", f"--{opt}"], opt, want)
        assert "(-inf, inf)" not in msg


# -----------------------------------------------------------------------------
# a value the range accepts works end to end; one that cannot is refused at start-up, never a traceback

def test_seeds_and_sizes_at_the_edges(tmp_path, data_dir, teacher_dir, capsys):
    import show
    big = 2 ** 64  # past torch's seeds: refused by every script's range, printed as declared
    for main, argv in ((sample.main, [f"--out_dir={teacher_dir}", "--prompt=1"]), (collect.main, []), (train.main, []),
                       (bench.main, []), (show.main, ["--view=states"])):
        refused(main, argv + [f"--seed={big}"], f"seed={big}", "[0, 2**63)")
    top = 2 ** 63 - 1  # the largest accepted seed, through every seed + offset of a sampled collection
    collect_into(tmp_path / "t", teacher_dir, temperature=0.5, seed=top, n_examples=20, chunk=8)
    assert load_trajectories(str(tmp_path / "t"))[1]["n"] == 20
    sample.main([f"--out_dir={teacher_dir}", "--prompt=5:+3*7=", "--temperature=0.5", f"--seed={top}"])
    assert "forward passes" in capsys.readouterr().out
    refused(train.main, [f"--data_dir={data_dir}", f"--out_dir={tmp_path / 'r'}", "--batch_size=1000000000000"],
            "batch_size=1000000000000", "GiB")
    refused(collect.main, [f"--teacher_dir={teacher_dir}", f"--out_dir={tmp_path / 'c'}", "--batch_size=10000000000000",
                           "--device=cpu"], "batch_size=10000000000000", "GiB")
    from data.arithmetic import prepare as arithmetic
    from data.wordproblems import prepare as wordproblems
    for task in (arithmetic, wordproblems):  # splits too large to draw: refused before any problem is
        refused(task.main, [f"--out_dir={tmp_path / 'p'}", "--n_train=100000000000"], "n_train", "GiB")


# -----------------------------------------------------------------------------
# outputs proven writable before the work, directories included; no stray .tmp

def test_outputs_naming_a_directory_are_refused_before_work(tmp_path, data_dir, teacher_dir):
    import show
    from data.common import atomic_write_bytes
    d = tmp_path / "adir"
    d.mkdir()
    refused(show.main, [f"--teacher_dir={teacher_dir}", "--methods=dlm", f"--html={d}"], "option html", "directory")
    refused(bench.main, [f"--teacher_dir={teacher_dir}", "--methods=dlm", f"--out_path={d}"], "out_path", "directory")
    refused(bench.main, [f"--teacher_dir={teacher_dir}", "--methods=dlm", f"--out_path={tmp_path / 'new'}/"], "directory")
    (tmp_path / "b_roofline.png").mkdir()
    refused(bench.main, [f"--teacher_dir={teacher_dir}", "--methods=dlm", f"--out_path={tmp_path / 'b.json'}"],
            "b_roofline.png", "directory")
    (tmp_path / "run" / "ckpt.pt").mkdir(parents=True)
    refused(train.main, [f"--data_dir={data_dir}", f"--out_dir={tmp_path / 'run'}"], "ckpt.pt", "directory")
    with pytest.raises(CDLMError, match="cannot write"):
        atomic_write_bytes(str(d), b"x")  # a rename that fails leaves nothing beside it
    assert not os.path.exists(f"{d}.tmp")


# -----------------------------------------------------------------------------
# messages that do not mislead

def test_a_config_file_is_one_namespace(tmp_path):
    from configurator import configure
    f = tmp_path / "c.py"
    f.write_text("threshold = 0.8\nsweep_thresholds = [round(t * threshold, 2) for t in (0.5, 1)]\n")
    cfg = configure(bench.config, [str(f)])
    assert cfg["sweep_thresholds"] == [0.4, 0.8] and cfg.given == {"threshold", "sweep_thresholds"}
