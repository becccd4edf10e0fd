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
import startup
import train
from checkpoint import meta_hash, read_checkpoint, save_checkpoint
from configurator import CDLMError
from data.arithmetic import prepare as arith


def file_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def one_line(e):
    assert "\n" not in str(e.value), str(e.value)
    return str(e.value)


# -----------------------------------------------------------------------------
# no output is, contains or sits inside an input of the same run

def test_no_run_writes_over_its_own_input(tmp_path, data_dir, teacher_dir, traj_dir, monkeypatch):
    ckpt, before = f"{teacher_dir}/ckpt.pt", file_bytes(f"{teacher_dir}/ckpt.pt")
    student = ["--mode=cdlm", "--init_from=teacher", f"--data_dir={data_dir}", f"--teacher_dir={teacher_dir}",
               f"--traj_dirs=['{traj_dir}']", "--device=cpu"]
    refused(train.main, student + [f"--out_dir={teacher_dir}"], "option out_dir", "option teacher_dir", "same path")
    os.symlink(teacher_dir, tmp_path / "link")  # whichever way the path is written
    refused(train.main, student + [f"--out_dir={tmp_path / 'link'}/"], "option out_dir", "option teacher_dir")
    refused(train.main, student + [f"--out_dir={traj_dir}/s"], "option out_dir", "inside option traj_dirs")
    refused(train.main, [f"--data_dir={data_dir}", f"--out_dir={os.path.dirname(data_dir)}"], "contains option data_dir")
    refused(train.main, [f"--data_dir={data_dir}", f"--out_dir={data_dir}"], "option out_dir", "option data_dir")
    refused(bench.main, [f"--teacher_dir={teacher_dir}", "--methods=dlm", f"--out_path={ckpt}"],
            "option out_path", "option teacher_dir")
    refused(show.main, [f"--teacher_dir={teacher_dir}", "--methods=dlm", f"--html={ckpt}"], "option html", "option teacher_dir")
    for out, other in ((teacher_dir, "option teacher_dir"), (data_dir, "option data_dir")):
        refused(collect.main, [f"--teacher_dir={teacher_dir}", f"--out_dir={out}", "--device=cpu"], "option out_dir", other)
    traj_meta = file_bytes(f"{traj_dir}/meta.json")
    refused(arith.main, [f"--out_dir={traj_dir}", "--n_train=200", "--n_val=8", "--n_test=8"], "out_dir", "trajectory set")
    assert file_bytes(ckpt) == before and file_bytes(f"{traj_dir}/meta.json") == traj_meta
    monkeypatch.chdir(tmp_path)  # the defaults collide: a student's out_dir and teacher_dir are both out/teacher
    refused(train.main, ["--mode=cdlm", "--init_from=teacher", f"--data_dir={data_dir}"], "option out_dir",
            "option teacher_dir")
    assert not os.path.exists("out")


# -----------------------------------------------------------------------------
# prepare.py: one writer, and a dataset committed as one unit

PREP = ["--n_train=5000", "--n_val=50", "--n_test=50"]


def prepare_process(out, seed, sizes=PREP):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "data/arithmetic/prepare.py"), f"--out_dir={out}",
                             f"--seed={seed}", *sizes], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_prepare_takes_the_one_writer_lock(tmp_path):
    from files import lock
    out = tmp_path / "d"
    with lock(str(out), "option out_dir"):  # another writer holds the folder
        p = prepare_process(out, 1)
        _, err = p.communicate()
    assert p.returncode == 2 and err.count("\n") == 1 and "being written by another run" in err, err
    assert not (out / "meta.json").exists()


def test_prepare_of_a_dataset_there_already_is_not_blocked_by_its_readers(tmp_path):
    """demo.py's seeds side by side: one trains on the data (a reader) while the next runs prepare.py
    with the same settings; that finds the dataset whole and writes nothing. Other settings still
    need the writer's lock, which readers refuse."""
    from files import reading
    out, small = tmp_path / "d", ["--n_train=200", "--n_val=8", "--n_test=8"]
    arith.main([f"--out_dir={out}", "--seed=1", *small])
    old = {f: file_bytes(out / f) for f in os.listdir(out)}
    with reading({"data_dir": str(out)}):
        same, other = prepare_process(out, 1, small), prepare_process(out, 2, small)
        got, err = same.communicate()
        assert same.returncode == 0 and "nothing to do" in got, err
        p = other
        _, err = p.communicate()
        assert p.returncode == 2 and err.count("\n") == 1 and "being read by a running run" in err, err
    assert {f: file_bytes(out / f) for f in os.listdir(out)} == old


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


# -----------------------------------------------------------------------------
# checkpoints: the stored hash is checked on load; the crash paths end in one line

def copy_checkpoint(src_dir, dst, edit=None):
    """A copy with an edit, its meta_hash made again: a checkpoint such settings would give (the
    checks behind the hash are tested; a raw edit is refused by the hash, test_hostile_reads)."""
    dst.mkdir()
    ckpt = torch.load(f"{src_dir}/ckpt.pt", weights_only=True)
    if edit:
        edit(ckpt)
    torch.save({**ckpt, "meta_hash": meta_hash(ckpt)}, dst / "ckpt.pt")
    return dst


def flip_one_bit(ckpt):
    w = ckpt["model"]["blocks.0.attn.qkv.weight"]
    w.view(torch.int32)[0, 0] ^= 1 << 30  # an exponent bit of one weight


def test_a_flipped_bit_in_a_checkpoint_is_refused(tmp_path, teacher_dir):
    import sample
    bad = copy_checkpoint(teacher_dir, tmp_path / "bad", flip_one_bit)
    with pytest.raises(CDLMError) as e:
        read_checkpoint(f"{bad}/ckpt.pt")
    assert f"{bad}/ckpt.pt" in one_line(e) and "damaged" in str(e.value)
    refused(sample.main, [f"--out_dir={bad}", "--prompt=5:+3*7="], f"{bad}/ckpt.pt", "damaged")
    read_checkpoint(f"{copy_checkpoint(teacher_dir, tmp_path / 'good')}/ckpt.pt")  # an intact copy loads


def test_a_weights_only_checkpoint_cannot_be_resumed(tmp_path, data_dir, teacher_dir):
    drop = lambda c: [c.pop(k) for k in ("optimizer", "scaler", "rng", "best_val_loss")]
    run = copy_checkpoint(teacher_dir, tmp_path / "run", drop)
    refused(train.main, [f"--data_dir={data_dir}", f"--out_dir={run}", "--init_from=resume", "--device=cpu"],
            f"{run}/ckpt.pt", "optimizer", "cannot be resumed", "give another --out_dir")  # a reference: kept
    with pytest.raises(CDLMError) as e:  # as the reference checkpoints are
        read_checkpoint(os.path.join(ROOT, "ref/arithmetic/teacher/ckpt.pt"), needs=startup.RESUME_KEYS)
    assert "cannot be resumed" in one_line(e)


def test_a_resume_refuses_a_damaged_optimizer_state(tmp_path, data_dir, teacher_dir):
    """The weights' hash does not cover what a resume restores beside them: one flipped bit in an Adam
    moment is refused by the hash of those states, before the run continues another run in silence."""
    def flip(c):
        m = next(iter(c["optimizer"]["state"].values()))["exp_avg_sq"].view(-1)
        m[0] = -m[0]
    run = copy_checkpoint(teacher_dir, tmp_path / "run", flip)
    with pytest.raises(CDLMError) as e:
        train_tiny(str(run), data_dir, mode="dlm", max_iters=35, init_from="resume")
    assert f"{run}/ckpt.pt is damaged" in one_line(e) and "optimizer and random states" in str(e.value)
    old = copy_checkpoint(teacher_dir, tmp_path / "old", lambda c: c.pop("resume_hash"))  # saved without the hash
    with pytest.raises(CDLMError, match="holds no hash of its optimizer and random states"):
        train_tiny(str(old), data_dir, mode="dlm", max_iters=35, init_from="resume")
    good = copy_checkpoint(teacher_dir, tmp_path / "good")  # an intact copy resumes
    assert read_checkpoint(f"{train_tiny(str(good), data_dir, mode='dlm', max_iters=35, init_from='resume')}/ckpt.pt")["iter_num"] == 35


def test_a_checkpoint_config_without_mode_is_one_line(tmp_path, teacher_dir):
    import sample
    bad = copy_checkpoint(teacher_dir, tmp_path / "bad", lambda c: c["config"].pop("mode"))
    refused(sample.main, [f"--out_dir={bad}", "--prompt=5:+3*7="], f"{bad}/ckpt.pt", "mode=None")


@pytest.mark.parametrize("as_torch", [False, True])
def test_a_full_disk_while_a_checkpoint_is_saved(tmp_path, data_dir, monkeypatch, as_torch):
    run = train_tiny(str(tmp_path / "run"), data_dir, mode="dlm", max_iters=4)
    before = file_bytes(f"{run}/ckpt.pt")

    def full(obj, f, *a, **kw):  # some bytes land, then the disk is full
        (open(f, "wb") if isinstance(f, str) else f).write(b"\0" * 1000)
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:  # as torch.save reports it: its zip writer fails while it handles the OSError
            if as_torch:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
            raise
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CDLMError) as e:
        train_tiny(run, data_dir, mode="dlm", max_iters=8, init_from="resume")
    assert "No space left on device" in one_line(e) and f"{run}/ckpt.pt" in str(e.value)
    assert sorted(os.listdir(run)) == ["ckpt.pt"] and file_bytes(f"{run}/ckpt.pt") == before  # no stray .tmp
    with pytest.raises(CDLMError):  # the same through save_checkpoint alone
        save_checkpoint({"x": 1}, str(tmp_path / "other" / "ckpt.pt"))
    assert os.listdir(tmp_path / "other") == []
    monkeypatch.undo()
    read_checkpoint(f"{run}/ckpt.pt")  # the previous checkpoint is whole


# -----------------------------------------------------------------------------
# demo.py --report reads the files its layout names, each checked against its name and schema

def test_the_report_reads_only_its_layout_each_file_checked(tmp_path):
    import shutil

    import demo
    import results
    res = tmp_path / "results"
    here = res / "arithmetic"
    shutil.copytree(os.path.join(ROOT, "results/arithmetic"), here)
    shutil.copytree(os.path.join(ROOT, "results/wordproblems"), res / "wordproblems")
    good = results.report("arithmetic", str(res), demo.ABLATIONS)
    assert "3 seed(s) [2, 3, 1337]" in good  # rerun/, profile and rounds files are no part of the layout
    report = lambda *a: refused(demo.main, ["--report", f"--results_dir={res}", *a], *words)

    def edited(path, change, *words_):
        nonlocal words
        before, words = file_bytes(path), words_
        d = json.loads(before)
        change(d)
        path.write_text(json.dumps(d))
        report()
        path.write_bytes(before)
    words = ()
    seed2, abl = here / "seed2.json", here / "ablation" / "default_seed2.json"
    edited(seed2, lambda d: d.pop("num_eval"), "seed2.json", "num_eval is missing")
    edited(seed2, lambda d: d.update(num_eval="500"), "seed2.json", "num_eval", "'500'")
    edited(seed2, lambda d: d.update(bench=[]), "seed2.json", "field bench", "a list")
    edited(seed2, lambda d: d["teacher_steps"]["2"].update(final_acc=None), "teacher_steps.2.final_acc", "null")
    edited(seed2, lambda d: d.update(num_eval=0), "seed2.json", "num_eval", "got 0")
    edited(seed2, lambda d: d.update(num_eval=1000), "num_eval", "one table averages both")  # a mean of two tests
    edited(seed2, lambda d: d.update(machine={}), "seed2.json", "machine.cpu is missing")
    edited(abl, lambda d: d.pop("variant"), "default_seed2.json", "variant is missing")
    edited(seed2, lambda d: d.update(seed=3), "seed2.json", "seed 3")
    for stray, src in (("seed1337_backup.json", here / "seed1337.json"), ("seed4.json", res / "wordproblems/seed2.json"),
                       ("seed02.json", seed2), ("ablation/default_seed2_old.json", abl)):
        shutil.copy(src, here / stray)
        words = (stray.split("/")[-1],)
        report()
        os.remove(here / stray)
    words = ("has no effect with --report",)
    for option in ("--seeds=1,2", "--jobs=1", "--num_eval=100", "--ablate"):
        report(option)
    assert results.report("arithmetic", str(res), demo.ABLATIONS) == good


def test_the_frontier_default_student_is_the_seed_file_s(tmp_path):
    """Every frontier file places the presets' student beside its run: edited alike in all of them,
    its passes are still the ones its seed file (results.PRESET_SEED) holds."""
    import shutil

    import demo
    shutil.copytree(os.path.join(ROOT, "results", "arithmetic"), tmp_path / "arithmetic")
    demo.main(["--report", f"--results_dir={tmp_path}"])
    for f in (tmp_path / "arithmetic" / "frontier").iterdir():
        d = json.loads(f.read_text())
        d["default_student"]["nfe"] = 2.0
        f.write_text(json.dumps(d))
    refused(demo.main, ["--report", f"--results_dir={tmp_path}"], "field default_student.nfe=2.0", "seed1337.json",
            "bench.cdlm.nfe=")


def test_the_frontier_is_read_from_its_files_each_checked(tmp_path):
    """results/<task>/frontier/<run>_seed<N>.json: the table's rows are every scored iteration, each a
    mean over the seeds that reached it; a file that is not what its name says is refused."""
    import shutil

    import demo
    import results
    here = tmp_path / "arithmetic" / "frontier"
    here.mkdir(parents=True)
    one = here / "student_2400_6144_seed1337.json"
    shutil.copy(os.path.join(ROOT, "results/arithmetic/frontier", one.name), one)
    d = json.loads(one.read_text())
    d.update(seed=2, points={"300": dict(final_acc=0.5, whole_acc=0.4, nfe=8.0)})
    (here / "student_2400_6144_seed2.json").write_text(json.dumps(d))
    rows = {line.split(" |")[0]: line for line in results.frontier("arithmetic", str(tmp_path)) if line.startswith("| ")}
    assert rows["| 300"].endswith("| 2 |") and "65.4% (40.0%-90.8%)" in rows["| 300"]
    assert rows["| 1500"].endswith("| 1 |") and "99.6% |" in rows["| 1500"]
    shutil.copy(one, here / "student_2400_6144_seed3.json")  # seed 1337's record under seed 3's name
    refused(demo.main, ["--report", f"--results_dir={tmp_path}"], "student_2400_6144_seed3.json", "seed 1337")
    os.remove(here / "student_2400_6144_seed3.json")
    d["points"]["last"] = d["points"]["300"]
    (here / "student_2400_6144_seed2.json").write_text(json.dumps(d))
    refused(demo.main, ["--report", f"--results_dir={tmp_path}"], "seed2.json", "points.last")
    d["points"].pop("last")
    (here / "student_2400_6144_seed2.json").write_text(json.dumps({**d, "points": {"300": dict(
        final_acc=0.5, whole_acc=0.4, nfe=8.0001)}}))  # 4000.05 passes over its 500 problems
    refused(demo.main, ["--report", f"--results_dir={tmp_path}"], "seed2.json", "points.300.nfe=8.0001",
            "not a count over its 500 problems")
    (here / "student_2400_6144_seed2.json").write_text(json.dumps({**d, "num_eval": 1000}))  # another test's scores
    refused(demo.main, ["--report", f"--results_dir={tmp_path}"], "num_eval=1000", "one table averages both")
    for edit, words in ((dict(default_student={**d["default_student"], "whole_acc": 0.5}), "field default_student="),
                        (dict(points={**d["points"], "9999": d["points"]["300"]}), "iteration 9999 of a run of max_iters=2400"),
                        (dict(points={}), "field points: expected at least 1 entry")):
        (here / "student_2400_6144_seed2.json").write_text(json.dumps({**d, **edit}))  # the headline's default student,
        refused(demo.main, ["--report", f"--results_dir={tmp_path}"], "seed2.json", words)  # a point past its run, none
    refused(demo.main, ["--png=x.png"], "option png", "--report")
    refused(demo.main, ["--report", "--png=x.svg"], "option png", ".png")
    data = tmp_path / "data"  # a prepared dataset's folder, or a trajectory set's: their writers own every file
    data.mkdir()
    (data / "meta.json").write_text(json.dumps({"splits": {}}))
    refused(demo.main, ["--report", f"--png={data / 'f.png'}"], "option png", "which holds a prepared dataset")
    assert sorted(os.listdir(data)) == ["meta.json"]


# -----------------------------------------------------------------------------
# torch.compile on a CPU needs a C++ compiler: checked before any work

def test_no_cpp_compiler_is_refused_before_any_work(tmp_path, data_dir, teacher_dir, monkeypatch):
    import runtime
    import sample
    env = {**os.environ, "PATH": str(tmp_path), "OMP_NUM_THREADS": "1"}  # no cc, gcc, g++ on it
    p = subprocess.run([sys.executable, "sample.py", f"--out_dir={teacher_dir}", "--prompt=5:+3*7=", "--compile"],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "no working C++ compiler" in p.stderr, p.stderr
    monkeypatch.setattr(runtime, "cpp_compiler", lambda: None)
    refused(sample.main, [f"--out_dir={teacher_dir}", "--eval", "--compile"], "option compile", "C++ compiler")
    refused(bench.main, [f"--teacher_dir={teacher_dir}", "--methods=dlm", f"--out_path={tmp_path}/b.json"],
            "option compile", "C++ compiler")  # compiled by default: refused before its eager work
    assert not os.path.exists(f"{tmp_path}/b.json")
    refused(train.main, [f"--data_dir={data_dir}", f"--out_dir={tmp_path}/t", "--device=cpu", "--compile"],
            "option compile", "C++ compiler")
    assert not os.path.exists(f"{tmp_path}/t/ckpt.pt")
    sample.main([f"--out_dir={teacher_dir}", "--prompt=5:+3*7="])  # eager needs none


# -----------------------------------------------------------------------------
# a moved or copied checkout reuses its finished stages (data paths stored relative to the checkout)

def test_a_moved_checkout_reuses_its_stages(tmp_path, data_dir, monkeypatch, capsys):
    import shutil

    import data.common
    import demo
    from conftest import TINY_COLLECT, TINY_MODEL
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(data_dir, a / "data" / "arithmetic")
    teacher = {**TINY_MODEL, "mode": "dlm", "data_dir": "data/arithmetic", "out_dir": "out/teacher", "max_iters": 10}
    traj = {**TINY_COLLECT, "teacher_dir": "out/teacher", "out_dir": "out/trajectories", "n_examples": 16}

    def stages(root, **over):
        monkeypatch.setattr(data.common, "CHECKOUT", str(root))
        monkeypatch.chdir(root)
        demo.run_train(demo.configure(train.config, [f"--{k}={v}" for k, v in {**teacher, **over}.items()]))
        collect.collect(demo.configure(collect.config, [f"--{k}={v}" for k, v in traj.items()]), replace=True)
        return capsys.readouterr().out
    stages(a)
    assert read_checkpoint(str(a / "out/teacher/ckpt.pt"))["config"]["data_dir"] == "data/arithmetic"
    shutil.copytree(a, b)
    shutil.rmtree(a)  # moved, not copied: the old place is gone
    out = stages(b)
    assert "out/teacher/ckpt.pt: done (iteration 10), skipped" in out and "nothing to do" in out, out
    out = stages(b, learning_rate=2e-3)  # and where a stage reruns, it says why
    assert "out/teacher/ckpt.pt: made with learning_rate=0.001; trained again" in out, out


# -----------------------------------------------------------------------------
# option messages that name the right option and say what is true

def test_option_messages_name_the_right_option(tmp_path, data_dir, capsys):
    from configurator import configure
    from data.common import encode_state, get_tokenizer
    from data.wordproblems import prepare as wp
    # a state is encoded with the data's own tokenizer: a BPE token holds several characters
    meta = read_checkpoint(os.path.join(ROOT, "ref/wordproblems/teacher/ckpt.pt"))["data_meta"]
    tok, mask = get_tokenizer(meta), meta["mask_id"]
    assert encode_state(tok, "-5=2 /2=_", mask, 32) == tok.encode("-5=2 /2=") + [mask]
    assert len(tok.encode(" /2")) < len(" /2")
    refused(show.main, ["--view=confidence", f"--checkpoints={ROOT}/ref/arithmetic", "--state=+3>8,x"],
            "option state='+3>8,x'", "'x'")
    refused(show.main, ["--view=confidence", f"--checkpoints={ROOT}/ref/arithmetic", "--state=" + "1" * 49],
            "option state=", "49 tokens", "gen_len=48")
    # weight decay too large for the learning rate is blamed on weight_decay
    refused(train.main, [f"--data_dir={data_dir}", f"--out_dir={tmp_path}/t", "--device=cpu", "--weight_decay=1e308"],
            "option weight_decay=1e+308", "1/learning_rate")
    refused(train.main, [f"--data_dir={data_dir}", f"--out_dir={tmp_path}/t", "--device=cpu", "--learning_rate=1e300",
                         "--weight_decay=0"], "option learning_rate=1e+300", "(0, 1]")  # not an overflow in AdamW
    # the BPE's size and sample: refused where they cannot work, not written silently or failed later
    small = [f"--out_dir={tmp_path}/wp", "--n_train=100", "--n_val=8", "--n_test=8"]
    refused(wp.main, small + ["--vocab_size=1"], "option vocab_size=1", "give at least")
    refused(wp.main, small + ["--bpe_sample=1"], "option bpe_sample=1", "raise it")
    assert not os.path.exists(f"{tmp_path}/wp/meta.json")
    # a preset's own settings are not options given for nothing (the bench preset names every folder)
    preset = os.path.join(ROOT, "config/wordproblems_bench.py")
    bench.check_options(configure(bench.config, [preset, "--methods=cdlm"]), ["cdlm"])
    refused(bench.main, [preset, "--methods=cdlm", "--teacher_dir=out/wp_teacher"], "option teacher_dir", "no effect")
    # prepare.py says what it did: nothing, or wrote
    capsys.readouterr()
    arith.main([f"--out_dir={tmp_path}/a", "--n_train=100", "--n_val=8", "--n_test=8"])
    arith.main([f"--out_dir={tmp_path}/a", "--n_train=100", "--n_val=8", "--n_test=8"])
    first, second = capsys.readouterr().out.split("example:")[:2]
    assert "wrote" in first and "nothing to do" in second.split("\n", 1)[1] and "wrote" not in second


def test_a_seed_past_its_range_and_a_file_nested_past_the_stack(tmp_path):
    """prepare.py's seed in [0, 2**63) like every seed; JSON nested deeper than Python recurses is
    one line naming the file, like any other unreadable one."""
    refused(arith.main, [f"--out_dir={tmp_path / 'p'}", f"--seed={2 ** 63}"], "option seed=9223372036854775808")
    assert not (tmp_path / "p").exists()
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    refused(bench.main, [f"--table={deep}"], "deep.json is unreadable or corrupt (RecursionError")


def test_an_output_path_up_out_of_a_missing_folder(tmp_path, data_dir):
    """'<dir>/new/../x' with no 'new': no such path (the system resolves '..' after 'new'), named
    before any folder is made; through a folder that exists it is an ordinary path."""
    out = f"{tmp_path}/new/../x"
    refused(train.main, [f"--data_dir={data_dir}", f"--out_dir={out}"], "option out_dir", "goes up ('..') out of",
            f"{tmp_path}/new")
    assert os.listdir(tmp_path) == []
    (tmp_path / "new").mkdir()
    from files import check_writable
    check_writable(out, "option out_dir")
    assert sorted(os.listdir(tmp_path)) == ["new", "x"]
