"""
A hostile but fair user, third probe: what a run reads is what it claims to be, and nothing a run
reads is rewritten under it or replaced without a word. Each case is one a fresh probe found
answered badly: a rewritten input, an edited file used in silence, a refusal after the work.
"""
import json
import os
import shutil
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import ROOT
from test_hostile import collect_into, refused

import bench
import demo
import roofline
import sample
import show
import train
from configurator import CDLMError
from data.arithmetic import prepare as arith
from data.trajectories import load_trajectories
from results import read_results
from files import check_writable, lock, reading


def test_a_folder_a_run_reads_is_not_rewritten_under_it(tmp_path, data_dir):
    d = tmp_path / "data"
    shutil.copytree(data_dir, d)
    with reading({"data_dir": str(d)}):  # as train.py, collect.py and bench.py hold their inputs
        refused(arith.main, [f"--out_dir={d}", "--seed=2", "--n_train=200", "--n_val=8", "--n_test=8"],
                "option out_dir", "being read by a running run")
    with lock(str(d), "option out_dir"):  # and a run is refused the folder being written
        with pytest.raises(CDLMError, match="option data_dir .* is being written by another run"):
            with reading({"data_dir": str(d)}):
                pass


def test_a_run_started_elsewhere_holds_the_checkout_data_it_reads(tmp_path, ref_data, monkeypatch):
    """train.py keeps a data_dir inside the checkout relative to it (as checkpoints store it): the
    folder it holds is still the data's own, whatever the working directory."""
    monkeypatch.chdir(tmp_path)
    d = os.path.join(ROOT, "data", "arithmetic")
    with lock(d, "option out_dir"):
        refused(train.main, [f"--data_dir={d}", f"--out_dir={tmp_path / 'run'}", "--max_iters=1", "--device=cpu"],
                "option data_dir", "being written by another run")


def test_collect_does_not_replace_a_finished_set_of_other_settings(tmp_path, teacher_dir, traj_dir):
    out = tmp_path / "t"
    shutil.copytree(traj_dir, out)
    want, _ = load_trajectories(str(out))
    refused(lambda argv: collect_into(out, teacher_dir, replace=False, n_examples=16), [], "holds a finished set of 48",
            "n_examples=48", "give another --out_dir")
    np.testing.assert_array_equal(load_trajectories(str(out))[0]["tokens"], want["tokens"])


@pytest.mark.parametrize("field", ["prompt", "step", "tokens"])
def test_trajectory_bytes_edited_inside_their_range_are_found(tmp_path, traj_dir, field):
    out = tmp_path / "t"
    shutil.copytree(traj_dir, out)
    arrays, meta = load_trajectories(str(out))
    a = np.array(arrays[field])
    if field == "step":  # two positions of one block swap their steps: every check of the contents holds
        a[0, [0, 1]] = a[0, [1, 0]]
    else:
        a[0, 0] = 3 if a[0, 0] != 3 else 4  # another digit: inside the vocabulary
    a.tofile(out / meta["set"] / f"{field}.bin")
    with pytest.raises(CDLMError, match=f"{field}.bin is damaged: it does not hash to"):
        load_trajectories(str(out))


def test_an_edited_iteration_count_is_not_resumed(tmp_path, data_dir):
    out = str(tmp_path / "run")
    argv = [f"--data_dir={data_dir}", f"--out_dir={out}", "--n_layer=1", "--n_head=2", "--n_embd=16",
            "--batch_size=8", "--eval_interval=2", "--eval_iters=1", "--warmup_iters=1", "--device=cpu"]
    train.main(argv + ["--max_iters=4", "--lr_decay_iters=8"])
    path = os.path.join(out, "ckpt.pt")
    ckpt = torch.load(path, weights_only=True)
    torch.save({**ckpt, "iter_num": 2}, path)
    refused(train.main, argv + ["--max_iters=8", "--init_from=resume"], "ckpt.pt is damaged", "--init_from=scratch")


def test_a_checkpoint_that_cannot_be_replaced_is_refused_before_training(tmp_path, data_dir, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    (out / "ckpt.pt").write_bytes(b"")
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if str(p).endswith("ckpt.pt") else real(p, m))
    refused(train.main, [f"--data_dir={data_dir}", f"--out_dir={out}", "--max_iters=2"], "ckpt.pt", "write-protected")


def test_a_device_that_is_not_there_leaves_no_folder(tmp_path, data_dir):
    out = tmp_path / "new"
    refused(train.main, [f"--data_dir={data_dir}", f"--out_dir={out}", "--device=cuda:1"], "option device='cuda:1'")
    assert not out.exists()


def test_the_ar_baseline_refuses_a_threshold(ar_dir):
    refused(sample.main, [f"--out_dir={ar_dir}", "--prompt=5:+3=", "--threshold=0.5"], "option threshold=0.5",
            "autoregressive")


def test_an_edited_speedup_or_timing_is_named(tmp_path):
    here = tmp_path / "arithmetic"
    here.mkdir()
    shutil.copy(os.path.join(ROOT, "results", "arithmetic", "seed2.json"), here)
    read_results("arithmetic", str(tmp_path))  # as committed: the ratios are their timings'
    r = json.loads((here / "seed2.json").read_text())
    for edit, words in ((lambda b: b["cdlm"]["compiled"].update(speedup_latency_vs_dlm=38.5),
                         "bench.cdlm.compiled.speedup_latency_vs_dlm=38.5"),
                        (lambda b: b["dlm"].update(latency_ms=b["dlm"]["latency_ms"] * 4, rounds={
                            **b["dlm"]["rounds"], "latency_ms": [4 * x for x in b["dlm"]["rounds"]["latency_ms"]]}),
                         "speedup_latency_vs_dlm")):
        e = json.loads(json.dumps(r))
        edit(e["bench"])
        (here / "seed2.json").write_text(json.dumps(e))
        with pytest.raises(CDLMError, match="is not what the file's timings give") as got:
            read_results("arithmetic", str(tmp_path))
        assert words in str(got.value)


def test_a_stored_bench_report_is_checked_before_it_is_printed(tmp_path):
    r = json.load(open(os.path.join(ROOT, "results", "arithmetic", "rounds_ref_2threads.json")))
    (tmp_path / "nfe.json").write_text(json.dumps({**r, "methods": {**r["methods"], "cdlm": {**r["methods"]["cdlm"], "nfe": 1e308}}}))
    (tmp_path / "none.json").write_text(json.dumps({**r, "methods": {}}))
    refused(bench.main, [f"--table={tmp_path / 'nfe.json'}"], "methods.cdlm.nfe=1e+308", "gen_len=48")
    refused(bench.main, [f"--table={tmp_path / 'none.json'}"], "field methods is empty")


def test_outputs_that_are_one_file_or_not_a_file(tmp_path, teacher_dir, student_dir):
    page = str(tmp_path / "r.html")
    refused(show.main, [f"--teacher_dir={teacher_dir}", "--methods=dlm", f"--html={page}", f"--gif={page}"],
            "option gif", "is the file of option html too")
    refused(show.main, [f"--student_dir={student_dir}", "--view=states", f"--teacher_dir={teacher_dir}"],
            "option teacher_dir", "the teacher the student records")
    os.mkfifo(tmp_path / "f.json")  # reading it to tell its kind would block for ever
    refused(bench.main, [f"--teacher_dir={teacher_dir}", "--methods=dlm", f"--out_path={tmp_path / 'f.json'}"],
            "option out_path", "not a regular file")


def test_the_report_checks_its_picture_before_printing(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    refused(demo.main, ["--report", f"--png={tmp_path / 'file' / 'f.png'}"], "option png", "which is a file, not a folder")
    assert capsys.readouterr().out == ""


def test_the_scale_study_counts_the_passes_the_sampler_makes(teacher_dir, student_dir, ar_dir):
    """roofline.answer_windows against real decodes, without early stop: the teacher's gen_len passes, the
    student's first pass of a block (with the block before it) and its later ones, AR's one token a pass."""
    P, G = 21, 48
    prompts = torch.full((3, P), 4)  # the passes do not depend on the tokens without early stop
    for method, path, bs, s in (
            ("dlm", teacher_dir, 8, sample.DecodeSettings(8, steps_per_block=8)),
            ("cdlm", student_dir, 8, sample.DecodeSettings(8, steps_per_block=2, cache="exact")),
            ("ar", ar_dir, 1, sample.DecodeSettings(1, steps_per_block=1, cache="exact"))):
        model, ckpt, _ = sample.load_for_decoding(os.path.join(path, "ckpt.pt"), {}, "cpu")
        m = ckpt["data_meta"]
        seen = Counter()
        sample.generate(model, prompts, G, m["mask_id"], m["eos_id"], s, on_step=lambda ev: seen.update([(ev.lo, ev.hi)]))
        per_block = 2 if method == "cdlm" else 1
        want = Counter()
        for lo, hi, n in roofline.answer_windows(method, P, G, bs, per_block):
            want[(lo, hi)] += n
        assert seen == want, method


def test_the_scale_study_round_trips_through_its_table(tmp_path):
    rows = roofline.scale_study(8.0, 21, "cpu", sizes=((1, 32),), shapes=((21, 48, 8),), batch=2, progress=lambda s: None)
    report = dict(scale=dict(rows=rows, per_block=1.0, tokens_per_pass=8.0, block_size=8, batch=2),
                  machine=dict(cpu="x", threads=1), config=dict(student_dir="s"))
    (tmp_path / "s.json").write_text(json.dumps(report))
    bench.main([f"--table={tmp_path / 's.json'}"])
    report["scale"]["rows"]["48/8 1x32"]["cdlm_vs_dlm_latency"] = -1
    (tmp_path / "s.json").write_text(json.dumps(report))
    refused(bench.main, [f"--table={tmp_path / 's.json'}"], "cdlm_vs_dlm_latency")


# -----------------------------------------------------------------------------
# the fourth probe: a report's ratios, a full disk, outputs that are files, prompts and edits

def test_a_bench_report_whose_ratios_its_timings_contradict_is_refused(tmp_path):
    src = json.load(open(os.path.join(ROOT, "results", "arithmetic", "rounds_floor_2threads.json")))

    def faster_cdlm(m):  # its latency and every round a tenth, its speedups left as they were
        m["cdlm"]["latency_ms"] /= 10
        m["cdlm"]["rounds"]["latency_ms"] = [x / 10 for x in m["cdlm"]["rounds"]["latency_ms"]]
    for edit, words in ((faster_cdlm, "field methods.cdlm.speedup_latency_vs_dlm="),
                        (lambda m: m["cdlm"].update(speedup_latency_vs_dlm=50.0), "speedup_latency_vs_dlm=50.0"),
                        (lambda m: m["cdlm"]["compiled"].update(speedup_throughput_vs_dlm=30.0),
                         "compiled.speedup_throughput_vs_dlm=30.0"),
                        (lambda m: m["cdlm"]["fastest"].update(speedup_latency_vs_dlm=50.0),
                         "fastest.speedup_latency_vs_dlm=50.0"),
                        (lambda m: m["cdlm"]["fastest"].update(latency_ms=5.0), "fastest.latency_ms=5.0"),
                        (lambda m: m["cdlm"]["fastest"].update(latency_path="eager", latency_ms=m["cdlm"]["latency_ms"]),
                         "is not the figure of cdlm's faster path"),
                        (lambda m: m["cdlm"].update(rounds=[]), "field methods.cdlm.rounds=[] is not a record")):
        r = json.loads(json.dumps(src))
        edit(r["methods"])
        (tmp_path / "r.json").write_text(json.dumps(r))
        refused(bench.main, [f"--table={tmp_path / 'r.json'}"], words, "rerun the bench that wrote it")
    (tmp_path / "r.json").write_text(json.dumps(src))
    bench.main([f"--table={tmp_path / 'r.json'}"])  # as committed: printed


def test_a_real_full_disk_during_a_checkpoint_save(tmp_path):
    """torch reports a full disk as a RuntimeError of its zip writer raised while it handles the
    OSError: one line, and no .tmp left. A real 64 kB tmpfs where the machine lets us mount one."""
    from checkpoint import save_checkpoint
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.system(f"mount -t tmpfs -o size=64k tmpfs {disk} 2>/dev/null") != 0:
        pytest.skip("no tmpfs can be mounted here (not root): test_a_full_disk_while_a_checkpoint_is_saved injects it")
    try:
        with pytest.raises(CDLMError, match="No space left on device") as e:
            save_checkpoint({"w": torch.zeros(100_000)}, str(disk / "ckpt.pt"))
        assert "\n" not in str(e.value) and os.listdir(disk) == []
        (disk / "fill").write_bytes(b"\0" * (64 << 10))  # the disk full before the run: the probe file goes too
        with pytest.raises(CDLMError, match="not writable: No space left on device"):
            check_writable(str(disk / "run" / "sub"), "option out_dir")
        assert os.listdir(disk) == ["fill"]  # neither the probe nor the folders it made
    finally:
        os.system(f"umount {disk}")


def test_an_output_folder_that_is_a_file_is_named_so(tmp_path, data_dir, monkeypatch):
    import errno
    (tmp_path / "f").write_text("x")
    refused(train.main, [f"--data_dir={data_dir}", f"--out_dir={tmp_path / 'f'}"], "option out_dir",
            "is a file, not a folder")
    refused(arith.main, [f"--out_dir={tmp_path / 'f' / 'sub'}"], f"sits in '{tmp_path / 'f'}', which is a file")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)  # the disk fills as the probe file is written: it is removed
    with pytest.raises(CDLMError, match="is not writable: No space left on device"):
        check_writable(str(tmp_path / "run"), "option out_dir")
    assert not (tmp_path / "run").exists()  # a refused run leaves neither the probe nor the folder it made
    os.symlink(tmp_path / "gone", tmp_path / "link")  # a link to nothing is no file
    refused(train.main, [f"--data_dir={data_dir}", f"--out_dir={tmp_path / 'link'}"], "a symbolic link to",
            "which does not exist")
    refused(show.main, ["--view=masks", f"--png={tmp_path / 'link' / 'm.png'}"], f"sits in '{tmp_path / 'link'}'",
            "a symbolic link")


def test_collect_refuses_a_checkpoint_folder(tmp_path, teacher_dir):
    other = tmp_path / "another_run"  # another run's checkpoint: a trajectory set never sits beside one
    other.mkdir()
    shutil.copy(os.path.join(teacher_dir, "ckpt.pt"), other)
    with pytest.raises(CDLMError, match="holds a checkpoint: write a trajectory set elsewhere"):
        collect_into(other, teacher_dir, replace=False)
    assert sorted(n for n in os.listdir(other) if not n.startswith(".")) == ["ckpt.pt"]
    results = tmp_path / "results"  # demo.py's results layout: neither a set nor a checkpoint beside it
    shutil.copytree(os.path.join(ROOT, "results", "arithmetic"), results)
    with pytest.raises(CDLMError, match="holds results files: write a trajectory set elsewhere"):
        collect_into(results, teacher_dir, replace=False)
    refused(train.main, [f"--out_dir={results}", "--max_iters=1"], "option out_dir", "holds results files: write a "
            "checkpoint elsewhere")
    assert not (results / "ckpt.pt").exists() and not (results / "meta.json").exists()


def test_a_word_problem_prompt_of_another_form_is_refused():
    ref = os.path.join(ROOT, "ref", "wordproblems", "student")
    refused(sample.main, [f"--out_dir={ref}", "--prompt=Omar owns 3 apples."], "option prompt='Omar owns 3 apples.'",
            "How many <items> does <name> have now?")


def test_an_edited_vocab_size_names_both_fields(tmp_path, data_dir):
    d = tmp_path / "data"
    shutil.copytree(data_dir, d)
    meta = json.loads((d / "meta.json").read_text())
    (d / "meta.json").write_text(json.dumps({**meta, "vocab_size": meta["vocab_size"] + 1}))
    refused(train.main, [f"--data_dir={d}", f"--out_dir={tmp_path / 'r'}"], "fields chars and vocab_size disagree",
            f"not vocab_size={meta['vocab_size'] + 1}")


def test_a_list_in_brackets_without_quotes_is_a_list():
    assert train.config["traj_dirs"].parse("[out/a, out/b]") == ["out/a", "out/b"]  # the shell ate the quotes
    assert train.config["traj_dirs"].parse("out/a,out/b") == train.config["traj_dirs"].parse("['out/a', 'out/b']")


def test_an_unreadable_checkpoint_is_not_told_to_be_loaded_unsafely(tmp_path):
    (tmp_path / "ckpt.pt").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    msg = refused(sample.main, [f"--out_dir={tmp_path}", "--prompt=5:+3="], f"cannot read checkpoint {tmp_path}/ckpt.pt",
                  "make it again")
    assert "weights_only" not in msg and "Re-running" not in msg


@pytest.mark.parametrize("edit", [lambda c: c["model_config"].update(n_head=8),  # every shape kept
                                  lambda c: c["data_meta"].update(eos_id=3),
                                  lambda c: c["data_meta"].update(chars=c["data_meta"]["chars"][::-1]),
                                  lambda c: c["sampling"].update(threshold=0.1),
                                  lambda c: c.update(teacher_hash="0" * 16)])
def test_a_checkpoint_edited_where_its_weights_hash_cannot_see_is_refused(tmp_path, edit):
    ckpt = torch.load(os.path.join(ROOT, "ref", "arithmetic", "student", "ckpt.pt"), weights_only=True)
    edit(ckpt)
    (tmp_path / "s").mkdir()
    torch.save(ckpt, tmp_path / "s" / "ckpt.pt")
    refused(sample.main, [f"--out_dir={tmp_path / 's'}", "--prompt=5:+3*7+2*4+1="], f"{tmp_path / 's'}/ckpt.pt",
            "is damaged or edited", "do not hash to the")


@pytest.mark.parametrize("it", [-5, "7", 10 ** 6])
def test_a_checkpoints_iteration_is_one_of_its_run(tmp_path, it):
    """Probe 15: iter_num, which no hash covers, is an iteration of the run (0 to its max_iters)."""
    ckpt = torch.load(os.path.join(ROOT, "ref", "arithmetic", "student", "ckpt.pt"), weights_only=True)
    (tmp_path / "s").mkdir()
    torch.save({**ckpt, "iter_num": it}, tmp_path / "s" / "ckpt.pt")
    refused(sample.main, [f"--out_dir={tmp_path / 's'}", "--prompt=5:+3*7+2*4+1="], f"{tmp_path / 's'}/ckpt.pt",
            f"its iter_num={it!r} is no iteration of its run")


def test_an_answer_not_of_the_task_form_is_said_so(capsys):
    ref = os.path.join(ROOT, "ref", "arithmetic", "student")
    sample.main([f"--out_dir={ref}", "--prompt=7:*3+1="])  # two steps: it learned five to nine
    out = capsys.readouterr().out
    assert "note: this answer is not a worked solution of task arithmetic" in out
    sample.main([f"--out_dir={ref}", "--prompt=5:+3*7+2*4+1="])
    assert capsys.readouterr().out.strip().endswith("+3>8,*7>6,+2>8,*4>2,+1>3#3    (4 forward passes)")


def test_a_field_prepare_does_not_write_is_named(tmp_path, data_dir):
    d = tmp_path / "data"
    shutil.copytree(data_dir, d)
    meta = json.loads((d / "meta.json").read_text())
    (d / "meta.json").write_text(json.dumps({**meta, "extra_field": 1}))
    refused(train.main, [f"--data_dir={d}", f"--out_dir={tmp_path / 'r'}"], "field extra_field is not one prepare.py writes")


def test_no_writer_writes_into_a_folder_of_another_kind(tmp_path, data_dir, traj_dir, teacher_dir):
    sets = tmp_path / "sets"
    shutil.copytree(traj_dir, sets)
    train_into = lambda out: [f"--data_dir={data_dir}", f"--out_dir={out}", "--max_iters=1", "--device=cpu"]
    refused(train.main, train_into(sets), "option out_dir", "holds a trajectory set: write a checkpoint elsewhere")
    shutil.copytree(data_dir, tmp_path / "other_data")  # a dataset this run does not read
    refused(train.main, train_into(tmp_path / "other_data"), "holds a prepared dataset: write a checkpoint elsewhere")
    refused(train.main, train_into(sets / "set-x"), f"is inside {sets}, which holds a trajectory set")
    refused(train.main, train_into(os.path.join(ROOT, "data", "wordproblems")),
            "holds" if os.path.isfile(os.path.join(ROOT, "data", "wordproblems", "meta.json")) else "the folder of task")
    with pytest.raises(CDLMError, match="holds a prepared dataset: write a trajectory set elsewhere"):
        collect_into(tmp_path / "other_data", teacher_dir, replace=False)
    # files somebody left in a set-like folder are never deleted by collect.py's cleanup
    (sets / "set-x").mkdir()
    (sets / "set-x" / "ckpt.pt").write_bytes(b"somebody's")
    (sets / "meta.json").write_text("{damaged")  # the documented repair: collect again
    collect_into(sets, teacher_dir)
    assert (sets / "set-x" / "ckpt.pt").read_bytes() == b"somebody's"
    load_trajectories(str(sets))
    inner = sets / json.loads((sets / "meta.json").read_text())["set"]
    with pytest.raises(CDLMError, match="is a set inside the trajectory set folder .*: give that folder"):
        load_trajectories(str(inner))  # as show.py --view=states --traj_dir=<it> and train.py read it


def test_a_seed_twice_and_a_refused_name_leave_nothing(tmp_path):
    refused(demo.main, ["--seeds=[1,1]"], "option seeds=[1, 1]", "none twice")
    refused(show.main, ["--view=masks", f"--png={tmp_path / 'm.PNG'}"], "expected a file name ending in .png")
    assert os.listdir(tmp_path) == []  # no lock file for a name refused
    seed = json.load(open(os.path.join(ROOT, "results", "arithmetic", "seed2.json")))
    seed["bench"]["cdlm"]["nfe"] = 49
    (tmp_path / "seed2.json").write_text(json.dumps(seed))
    refused(bench.main, [f"--table={tmp_path / 'seed2.json'}"], "field bench.cdlm.nfe=49")  # named where it is


def test_a_checkpoints_folder_missing_or_without_a_role_names_the_option_checkpoints(tmp_path):
    refused(show.main, [f"--checkpoints={tmp_path / 'none'}"], f"option checkpoints='{tmp_path / 'none'}': not a folder")
    shutil.copytree(os.path.join(ROOT, "ref", "arithmetic", "teacher"), tmp_path / "teacher")
    for main in (show.main, bench.main):  # the student it needs is missing: the option that named its folder
        refused(main, [f"--checkpoints={tmp_path}"], f"no checkpoint at {tmp_path / 'student' / 'ckpt.pt'}",
                "check --checkpoints)")


@pytest.mark.parametrize("field, value, words", [
    ("nfe", 39.672, "field bench.dlm_stop.nfe=39.672 is not whole blocks of 8 passes over its 500 problems (19836"),
    ("nfe", 39.6645, "field bench.dlm_stop.nfe=39.6645 is not a count over its 500 problems (19832.2 passes"),
    ("whole_acc", 0.1235, "field bench.dlm_stop.whole_acc=0.1235 is not a count over its 500 problems (61.75 right")])
def test_a_bench_row_whose_figures_are_no_counts_over_its_problems_is_refused(tmp_path, field, value, words):
    seed = json.load(open(os.path.join(ROOT, "results", "arithmetic", "seed2.json")))
    seed["bench"]["dlm_stop"][field] = value  # stored: 39.664 passes (19832: 2479 blocks of 8), whole_acc 0.966
    (tmp_path / "seed2.json").write_text(json.dumps(seed))
    refused(bench.main, [f"--table={tmp_path / 'seed2.json'}"], words)


@pytest.mark.parametrize("edit, words", [
    (lambda d: d["bench"]["dlm"].pop("settings"), "bench.dlm: field settings is missing"),  # its schedule unchecked
    (lambda d: d["bench"]["cdlm"]["settings"].update(cache="bogus"), "bench.cdlm: field settings.cache: expected one of"),
    (lambda d: d["bench_machine"].update(threads=-2), "field bench_machine.threads: expected int in [1, inf), got -2"),
    (lambda d: d["bench_settings"].update(num_eval="500"), "field bench_settings.num_eval: expected int"),
    (lambda d: d["bench"]["dlm"]["settings"].update(steps_per_block=16), "field bench.dlm.settings.steps_per_block=16"
                                                                          ": expected an int in [1, block_size=8]"),
    (lambda d: d["bench"]["cdlm"]["settings"].update(threshold=None), "field bench.cdlm.settings.threshold=None: "
                                                                      "rule='threshold' reads threshold: give it"),
    (lambda d: d["bench_settings"]["chance"].update(whole_acc=0.5), "settings.chance.whole_acc=0.5 is above its "
                                                                     "final_acc"),
    (lambda d: d["bench_machine"].update(gpu="H100"), "machine.gpu='H100', but the device is the CPU")])
def test_a_stored_rows_settings_and_machine_are_checked(tmp_path, edit, words):
    seed = json.load(open(os.path.join(ROOT, "results", "arithmetic", "seed2.json")))
    edit(seed)
    (tmp_path / "seed2.json").write_text(json.dumps(seed))
    refused(bench.main, [f"--table={tmp_path / 'seed2.json'}"], words)


def test_a_seed_file_copied_under_another_seed_and_a_damaged_profile_are_refused(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(os.path.join(ROOT, "results"), results)
    here = results / "arithmetic"
    seed = json.loads((here / "seed2.json").read_text())
    (here / "seed4.json").write_text(json.dumps({**seed, "seed": 4}))
    refused(demo.main, ["--report", f"--results_dir={results}"], "seed4.json: field bench holds the same figures as")
    os.remove(here / "seed4.json")
    shutil.rmtree(here / "ablation")
    (here / "ablation").write_text("")
    refused(demo.main, ["--report", f"--results_dir={results}"], "a file or a broken link where the ablation's folder belongs")
    os.remove(here / "ablation")
    frontier = results / "frontier_kept"
    shutil.move(here / "frontier", frontier)
    (here / "frontier").write_text("")  # the frontier's table would vanish
    refused(demo.main, ["--report", f"--results_dir={results}"], "where the frontier's folder belongs")
    os.remove(here / "frontier")
    shutil.move(frontier, here / "frontier")
    os.symlink(tmp_path / "nowhere", results / "wordproblems_link")
    shutil.rmtree(results / "wordproblems")
    os.rename(results / "wordproblems_link", results / "wordproblems")  # the task's own folder, a broken link
    refused(demo.main, ["--report", "--task=wordproblems", f"--results_dir={results}"],
            "wordproblems: a file or a broken link where the task's folder belongs")
    shutil.copytree(os.path.join(ROOT, "results", "arithmetic", "ablation"), here / "ablation")
    abl = here / "ablation" / "no_consistency_seed3.json"
    abl.write_text(json.dumps({**json.loads(abl.read_text()), "chance": {"final_acc": 0.5, "whole_acc": 0.002}}))
    refused(demo.main, ["--report", f"--results_dir={results}"], "field chance=", "the ablation's table reads both")
    for edit, words in ((dict(device="tpu"), "bench_machine.device='tpu': not a device"),
                        (dict(latency_n=10 ** 9), "bench_settings.latency_n=1000000000 is above its num_eval=500")):
        bad = {**seed, "bench_machine": {**seed["bench_machine"], **{k: v for k, v in edit.items() if k == "device"}},
               "bench_settings": {**seed["bench_settings"], **{k: v for k, v in edit.items() if k != "device"}}}
        (tmp_path / "s.json").write_text(json.dumps(bad))
        refused(bench.main, [f"--table={tmp_path / 's.json'}"], words)
    r = json.load(open(os.path.join(ROOT, "results", "arithmetic", "compiled_step_ref.json")))
    for edit, words in ((lambda d: d["methods"]["cdlm"]["compiled"].update(latency_ms=0), "compiled.latency_ms: expected"),
                        (lambda d: d.update(profile=[]), "field profile: expected an object"),
                        (lambda d: d["profile"]["cdlm"].update(ms_per_answer=-1), "profile.cdlm.ms_per_answer: expected"),
                        (lambda d: d["profile"].update(zzz=d["profile"]["cdlm"]), "field profile.zzz: no such method"),
                        (lambda d: d["profile"]["dlm"].update(passes_per_answer=49), "profile.dlm.passes_per_answer=49 "
                                                                                     "is above gen_len=48")):
        d = json.loads(json.dumps(r))
        edit(d)
        (tmp_path / "b.json").write_text(json.dumps(d))
        refused(bench.main, [f"--table={tmp_path / 'b.json'}"], words)


def test_a_bench_reports_split_and_sizes_are_checked_against_what_it_measures(tmp_path, data_dir):
    """A split prepare.py does not write, a batch above the problems evaluated, and more problems than
    the split of the data the report names holds (where that data is here) are refused, not printed."""
    seed = json.load(open(os.path.join(ROOT, "results", "arithmetic", "seed2.json")))
    for edit, words in ((dict(split="x"), "bench_settings.split"),
                        (dict(batch_size=10 ** 30), "bench_settings.batch_size=" + str(10 ** 30) + " is above its "
                                                    "num_eval=500"),
                        (dict(data_dir=data_dir), f"num_eval=500 is above the 64 problems of the test split of {data_dir}")):
        (tmp_path / "s.json").write_text(json.dumps({**seed, "bench_settings": {**seed["bench_settings"], **edit}}))
        refused(bench.main, [f"--table={tmp_path / 's.json'}"], words)
    refused(sample.main, ["--eval", "--split=x"], "option split")
    refused(bench.main, ["--split=x"], "option split")


def test_a_bench_reports_predictions_faster_paths_profile_and_threshold_are_checked(tmp_path):
    """Probe 14: a negative or textual prediction, a row without the faster-path record the others
    have, profile figures that are not their own times' differences and quotients, a row decoded
    at a threshold the report's settings do not name: one line each, never a table or a traceback."""
    r = json.load(open(os.path.join(ROOT, "results", "arithmetic", "rounds_ref_2threads.json")))
    cdlm = lambda d: d["methods"]["cdlm"]
    for edit, words in ((lambda d: cdlm(d)["predicted"].update(latency_ms=-5), "methods.cdlm: field predicted.latency_ms: expected"),
                        (lambda d: cdlm(d)["compiled"]["predicted"].update(latency_ms=-1), "methods.cdlm: field compiled.predicted.latency_ms: expected"),
                        (lambda d: cdlm(d).update(predicted="x"), "methods.cdlm: field predicted: expected an object"),
                        (lambda d: cdlm(d)["predicted"].update(throughput_tok_s="fast"), "field predicted.throughput_tok_s: expected float"),
                        (lambda d: cdlm(d)["predicted"].update(steps_latency_ms=1e6), "which adds the loop"),
                        (lambda d: cdlm(d)["predicted"].update(rounds={"latency_ms": [1.0]}), "predicted.rounds is not"),
                        (lambda d: cdlm(d)["predicted"].update(rounds={k: [x * 2 for x in v] for k, v in
                                                                       cdlm(d)["predicted"]["rounds"].items()}),
                         "predicted.rounds is not"),  # a round edited: the medians no longer its own
                        (lambda d: cdlm(d).pop("fastest"), "cdlm.fastest is missing"),
                        (lambda d: d["profile"]["cdlm"].update(ms_per_pass=0.001), "profile.cdlm.ms_per_pass=0.001 is not"),
                        (lambda d: d["profile"]["dlm"].update(sampler_ms_per_answer=300), "sampler_ms_per_answer=300 is not"),
                        (lambda d: d["profile"]["dlm"].update(arithmetic_ms_per_pass=100), "no pass runs faster"),
                        (lambda d: d["settings"].update(threshold=0.5), "settings.threshold=0.9 is not the bench's"),
                        (lambda d: d["methods"]["dlm"]["settings"].update(d["methods"]["dlm_stop"]["settings"]),  # probe 15
                         "methods.dlm.settings.early_stop=True is not how bench.py decodes dlm")):
        d = json.loads(json.dumps(r))
        edit(d)
        (tmp_path / "b.json").write_text(json.dumps(d))
        refused(bench.main, [f"--table={tmp_path / 'b.json'}"], words)


def test_the_report_refuses_seeds_benched_another_way(tmp_path):
    """Probe 14: the headline means average the seeds' benches as one measurement: a seed decoded at
    another threshold, timed at another batch size or in another dtype is named, not averaged."""
    results = tmp_path / "results"
    shutil.copytree(os.path.join(ROOT, "results"), results)
    path = results / "arithmetic" / "seed2.json"
    seed = json.loads(path.read_text())
    rows = lambda **kw: {**seed["bench"], "cdlm": {**seed["bench"]["cdlm"], "settings": {**seed["bench"]["cdlm"]["settings"], **kw}}}
    for edit, words in (({"bench": rows(threshold=0.5)}, "bench.cdlm.settings.threshold=0.5 is not the bench's"),
                        ({"bench": rows(refresh="step")}, "settings.refresh='step' is not how bench.py decodes cdlm"),
                        ({"bench_settings": {**seed["bench_settings"], "batch_size": 32}}, "bench_settings.batch_size=32, but"),
                        ({"bench_machine": {**seed["bench_machine"], "dtype": "bfloat16"}}, "bench_machine.dtype='bfloat16'")):
        path.write_text(json.dumps({**seed, **edit}))
        refused(demo.main, ["--report", f"--results_dir={results}"], "seed2.json", words)
    path.write_text(json.dumps({**seed, "bench": rows(refresh="step")}))  # read without bench.py's methods: against seed1337's
    with pytest.raises(CDLMError, match="seed2.json: field bench.cdlm.settings=.* but .*seed1337.json decoded cdlm with"):
        read_results("arithmetic", str(results))


def test_a_scale_rows_pass_times_and_rates_are_checked_as_stored(tmp_path):
    r = json.load(open(os.path.join(ROOT, "results", "arithmetic", "scale.json")))
    key = next(iter(r["scale"]["rows"]))
    for field, inner, value, words in (("ms_per_pass_latency", None, -3.7, ".ms_per_pass_latency."),
                                       ("gflop_s_latency", "dlm", "fast", ".gflop_s_latency.dlm: expected float")):
        d = json.loads(json.dumps(r))
        row = d["scale"]["rows"][key][field]
        row[inner or next(iter(row))] = value
        (tmp_path / "s.json").write_text(json.dumps(d))
        refused(bench.main, [f"--table={tmp_path / 's.json'}"], words)  # the field edited, not a ratio it breaks
    for edit, words in ((lambda d: d["scale"].update(tokens_per_pass=99), "scale.tokens_per_pass=99 and per_block"),
                        (lambda d: d["scale"].update(block_size=7), "do not make its block_size=7"),
                        (lambda d: d["scale"]["rows"][key].update(dlm_pass_ms=50), "dlm_pass_ms=50 is not the row's own "
                                                                                  "ms_per_pass_latency.69xnone")):
        d = json.loads(json.dumps(r))  # probe 14: a header or a printed pass that its rows contradict
        edit(d)
        (tmp_path / "s.json").write_text(json.dumps(d))
        refused(bench.main, [f"--table={tmp_path / 's.json'}"], words)


def test_a_method_given_twice_is_refused(tmp_path):
    refused(show.main, [f"--checkpoints={ROOT}/ref/arithmetic", "--methods=cdlm,cdlm"], "option methods=['cdlm', 'cdlm']", "none twice")
    refused(bench.main, [f"--checkpoints={ROOT}/ref/arithmetic", "--methods=dlm,cdlm,dlm", f"--out_path={tmp_path / 'b.json'}"],
            "option methods=", "none twice")
    refused(demo.main, ["--bench_methods=cdlm,cdlm"], "option bench_methods=", "none twice")


def test_a_number_no_float_holds_is_named_as_typed(tmp_path):
    s = [f"--out_dir={ROOT}/ref/arithmetic/student", "--prompt=5:+3*7="]
    refused(sample.main, s + ["--threshold=1e-400"], "option threshold=1e-400: reads as 0.0", "(0, 1]")
    refused(sample.main, s + ["--batch_size=1e400"], "option batch_size=1e400: reads as inf")
    refused(sample.main, s + ["--threshold=0.0"], "option threshold=0.0: expected float in (0, 1]")  # typed as read


def test_the_report_refuses_an_unknown_variant_and_another_test_sets_guess(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(os.path.join(ROOT, "results"), results)
    here = results / "arithmetic"
    abl = json.loads((here / "ablation" / "no_distillation_seed2.json").read_text())
    (here / "ablation" / "zzz_seed2.json").write_text(json.dumps({**abl, "variant": "zzz"}))
    refused(demo.main, ["--report", f"--results_dir={results}"], "zzz_seed2.json", "field variant='zzz' is none of")
    os.remove(here / "ablation" / "zzz_seed2.json")
    seed = json.loads((here / "seed3.json").read_text())
    seed["teacher_steps"]["1"]["chance"] = {"final_acc": 0.9, "whole_acc": 0.002}
    (here / "seed3.json").write_text(json.dumps(seed))
    refused(demo.main, ["--report", f"--results_dir={results}"], "seed3.json", "teacher_steps.1.chance=",
            "bench_settings.chance=")
    for scores in [*seed["teacher_steps"].values(), seed["bench_settings"]]:  # the file agrees with itself
        scores["chance"] = {"final_acc": 0.9, "whole_acc": 0.002}
    (here / "seed3.json").write_text(json.dumps(seed))
    refused(demo.main, ["--report", f"--results_dir={results}"], "seed3.json: field bench_settings.chance=",
            "the seeds score one test set")


@pytest.mark.parametrize("redirect, words", [(">/dev/full", "cannot write to standard output: No space left on device"),
                                             (">&-", "standard output is closed"),
                                             ("2>&-", "standard error is closed")])
def test_an_answer_that_cannot_reach_standard_output_is_an_error(redirect, words):
    import subprocess
    import sys
    ref = os.path.join(ROOT, "ref", "arithmetic", "student")
    run = subprocess.run(f"{sys.executable} sample.py --out_dir={ref} --prompt=5:+3*7+2*4+1= {redirect}", shell=True,
                         cwd=ROOT, capture_output=True, text=True)
    lines = (run.stderr or run.stdout).strip().splitlines()  # with stderr closed the error is said on stdout
    assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {words}"), run.stderr


def test_progress_that_cannot_reach_standard_error_is_an_error_said_on_stdout(tmp_path):
    import subprocess
    import sys
    teacher, out = os.path.join(ROOT, "ref", "arithmetic", "teacher"), tmp_path / "traj"
    cmd = f"{sys.executable} collect.py --teacher_dir={teacher} --n_examples=8 --batch_size=8 --out_dir={out}"
    run = subprocess.run(cmd + " 2>/dev/full", shell=True, cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 2 and run.stdout.splitlines() == [
        "error: cannot write to standard error: No space left on device"], run.stdout
    assert os.listdir(tmp_path) == []  # failed before any file: no set laid out, no lock
    assert subprocess.run(cmd, shell=True, cwd=ROOT, capture_output=True).returncode == 0  # the rerun completes


def test_a_run_refused_inside_its_lock_leaves_no_folder_nor_lock(tmp_path, data_dir, teacher_dir):
    out = tmp_path / "a" / "student"  # made by the run (both levels), refused after its lock was taken: none stays
    refused(train.main, [f"--data_dir={data_dir}", f"--out_dir={out}", "--mode=cdlm", "--init_from=teacher",
                         f"--teacher_dir={teacher_dir}", f"--traj_dirs=[{tmp_path / 'none'}]", "--device=cpu"],
            "no trajectories at")
    assert os.listdir(tmp_path) == []  # no student folder, no .student.lock, no .none.lock


def test_a_resume_on_the_same_sets_in_another_order_says_so(tmp_path, data_dir, teacher_dir, traj_dir):
    other = tmp_path / "t05"
    collect_into(other, teacher_dir, temperature=0.5)
    argv = [f"--data_dir={data_dir}", f"--out_dir={tmp_path / 's'}", "--mode=cdlm", f"--teacher_dir={teacher_dir}",
            "--n_layer=2", "--n_head=2", "--n_embd=32", "--batch_size=8", "--device=cpu"]
    train.main(argv + ["--init_from=teacher", f"--traj_dirs={traj_dir},{other}", "--max_iters=2"])
    refused(train.main, argv + ["--init_from=resume", f"--traj_dirs={other},{traj_dir}", "--max_iters=4"],
            "the same trajectory sets in another order", f"--traj_dirs={traj_dir},{other}")


def test_sizes_the_data_cannot_have_are_refused_or_said(tmp_path, capsys):
    from data.wordproblems import prepare as words
    small = ["--n_train=200", "--n_val=10", "--n_test=10"]
    refused(words.main, [f"--out_dir={tmp_path / 'a'}", "--bpe_sample=201", *small], "option bpe_sample=201",
            "more than the n_train=200")
    words.main([f"--out_dir={tmp_path / 'b'}", "--vocab_size=300", *small])  # more than its sample can merge
    assert "note: the BPE has 230 tokens, below vocab_size=300" in capsys.readouterr().out
    seed = json.load(open(os.path.join(ROOT, "results", "arithmetic", "seed2.json")))
    for edit, want in ((dict(tokens_per_step=100), "field bench.cdlm.tokens_per_step=100"),
                       (dict(tokens_per_step=0.5), "bench.cdlm: field tokens_per_step"),
                       (dict(nfe=48), "is more than its NFE allows")):  # 48 passes each: one token a pass at most
        (tmp_path / "seed2.json").write_text(json.dumps({**seed, "bench": {**seed["bench"],
                                                                          "cdlm": {**seed["bench"]["cdlm"], **edit}}}))
        refused(bench.main, [f"--table={tmp_path / 'seed2.json'}"], want)
    refused(sample.main, [f"--out_dir={os.path.join(ROOT, 'ref', 'arithmetic', 'student')}", "--eval",
                          f"--data_dir={tmp_path / 'none'}"], f"option data_dir='{tmp_path / 'none'}' does not exist")


def test_no_picture_or_report_inside_a_dataset_or_a_set(tmp_path, data_dir, traj_dir, teacher_dir, student_dir, ar_dir):
    d = tmp_path / "data"
    shutil.copytree(data_dir, d)
    refused(show.main, ["--view=masks", f"--png={d / 'm.png'}"], f"option png='{d / 'm.png'}' is inside {d}",
            "holds a prepared dataset")
    inner = os.path.join(traj_dir, json.loads(open(os.path.join(traj_dir, "meta.json")).read())["set"])
    refused(bench.main, [f"--teacher_dir={teacher_dir}", f"--student_dir={student_dir}", f"--ar_dir={ar_dir}",
                         f"--out_path={inner}/b.json", "--device=cpu"], "option out_path", "holds a trajectory set")
    assert sorted(os.listdir(d)) == sorted(os.listdir(data_dir)) and not any("b." in n for n in os.listdir(inner))
    meta = json.loads((d / "meta.json").read_text())  # a setting nested in meta.json that no prepare.py has
    for edit, words in ((lambda m: m["settings"].update(extra=3), "field settings.extra is not an option"),
                        (lambda m: m["settings"].pop("block_size"), "field settings.block_size is missing"),
                        (lambda m: m["splits"].update(extra=5), "fields splits and hashes name other splits")):
        m = json.loads(json.dumps(meta))
        edit(m)
        (d / "meta.json").write_text(json.dumps(m))
        refused(train.main, [f"--data_dir={d}", f"--out_dir={tmp_path / 'r'}"], *words.split(" is "))


def test_no_output_inside_the_checkpoints_folder_it_reads(tmp_path):
    ref = os.path.join(ROOT, "ref", "arithmetic")
    refused(show.main, [f"--checkpoints={ref}", "--methods=cdlm", f"--gif={ref}/r.gif"], "option gif",
            f"is inside option checkpoints='{ref}'")
    refused(bench.main, [f"--checkpoints={ref}", "--methods=cdlm", f"--out_path={ref}/b.json"], "option out_path",
            f"is inside option checkpoints='{ref}'")
    assert not any(n.startswith(("r.", "b.")) for n in os.listdir(ref))


def test_a_checkpoint_of_an_older_version_is_refused_and_kept(tmp_path, data_dir, teacher_dir):
    old = tmp_path / "old"
    old.mkdir()
    ckpt = torch.load(os.path.join(teacher_dir, "ckpt.pt"), weights_only=True)
    ckpt.pop("meta_hash")  # as this repo saved checkpoints before meta_hash
    torch.save(ckpt, old / "ckpt.pt")
    refused(sample.main, [f"--out_dir={old}", "--prompt=5:+3*7="], "is a checkpoint of an older version", "make it again")
    before = (old / "ckpt.pt").read_bytes()
    refused(train.main, [f"--data_dir={data_dir}", f"--out_dir={old}", "--max_iters=1", "--device=cpu"],
            "holds a checkpoint of an older version of the repo", "would write over")
    assert (old / "ckpt.pt").read_bytes() == before


def test_figures_a_rows_own_settings_rule_out_are_refused(tmp_path):
    """A figure no bench could measure: the passes of a schedule of fixed steps, tokens a pass
    above a block, a ratio of its own columns, a negative time, a float32 rate above the peak."""
    seed = json.load(open(os.path.join(ROOT, "results", "arithmetic", "seed2.json")))
    for name, edit, words in (("dlm", dict(nfe=47.0), "field bench.dlm.nfe=47 is not 48"),
                              ("dlm_stop", dict(tokens_per_step=2.0), "is not block_size / steps_per_block = 1"),
                              ("cdlm", dict(tokens_per_step=9.0), "is above its block_size=8"),
                              ("cdlm", dict(arithmetic_intensity=1000), "is not flops_per_token / bytes_per_token"),
                              ("cdlm", dict(achieved_gflops=1e6), "is above the measured peak"),
                              ("cdlm", dict(flops_per_token=-1), "field flops_per_token: expected float in (0, inf)"),
                              ("cdlm", dict(compiled={**seed["bench"]["cdlm"]["compiled"], "compile_s": -5}),
                               "field compiled.compile_s: expected float in (0, inf)")):
        bad = {**seed, "bench": {**seed["bench"], name: {**seed["bench"][name], **edit}}}
        (tmp_path / "seed2.json").write_text(json.dumps(bad))
        refused(bench.main, [f"--table={tmp_path / 'seed2.json'}"], words)
    ok = {**seed, "bench": {**seed["bench"], "cdlm": {**seed["bench"]["cdlm"], "tokens_per_step": 8.0}}}
    (tmp_path / "seed2.json").write_text(json.dumps(ok))  # every answer at one pass a block: possible
    bench.main([f"--table={tmp_path / 'seed2.json'}"])


def test_the_report_reads_one_ar_baseline_and_checks_each_seeds_rows(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(os.path.join(ROOT, "results"), results)
    path = results / "arithmetic" / "seed2.json"
    seed = json.loads(path.read_text())
    for edit, words in ((dict(ar_seed=2), "field ar_seed=2, but"),
                        (dict(bench={**seed["bench"], "dlm": {**seed["bench"]["dlm"], "nfe": 47.0}}),
                         "field bench.dlm.nfe=47 is not 48")):
        path.write_text(json.dumps({**seed, **edit}))
        refused(demo.main, ["--report", f"--results_dir={results}"], str(path), words)


def test_none_typed_for_a_decoding_option_and_a_value_after_a_space(student_dir):
    refused(sample.main, [f"--out_dir={student_dir}", "--threshold=None", "--prompt=1:+2="],
            "option threshold=None keeps the checkpoint's own setting")
    refused(sample.main, [f"--out_dir={student_dir}", "--threshold", "0.5", "--prompt=1:+2="],
            "expected --threshold=0.5, got --threshold 0.5")


def test_a_batch_above_the_problems_collected_is_refused(tmp_path, teacher_dir):
    import collect
    refused(collect.main, [f"--teacher_dir={teacher_dir}", "--n_examples=4", "--batch_size=64",
                           f"--out_dir={tmp_path / 't'}"], "option batch_size=64: more than the 4 problems")
    assert not (tmp_path / "t").exists()


def test_a_dataset_of_other_settings_names_the_fields(tmp_path, data_dir, student_dir):
    d = tmp_path / "data"
    shutil.copytree(data_dir, d)
    meta = json.loads((d / "meta.json").read_text())
    (d / "meta.json").write_text(json.dumps({**meta, "answer_marker": ">"}))
    refused(sample.main, [f"--out_dir={student_dir}", "--eval", "--num_eval=2", f"--data_dir={d}"],
            "holds other data than", "answer_marker '>', not '#'")


def test_a_scale_study_row_is_what_its_own_pass_costs_give(tmp_path):
    src = json.load(open(os.path.join(ROOT, "results", "arithmetic", "scale.json")))
    for key, edit, words in (("48/8 4x128", dict(params=1), "is fewer than the 786,432 weights"),
                             ("48/8 4x128", dict(cdlm_vs_dlm_latency=30.0), "is not what the row's pass costs give"),
                             ("256/32 8x1024", dict(cdlm_vs_ar_throughput=0.9), "is not what the row's pass costs give"),
                             ("48/8 4x128", dict(cdlm_vs_dlm_flops=5.0), "is not what the row's rates and pass costs"),
                             ("48/8 4x128", dict(n_layer=5), "n_layer=5 is not the 4 its key names")):
        r = json.loads(json.dumps(src))
        r["scale"]["rows"][key].update(edit)
        (tmp_path / "s.json").write_text(json.dumps(r))
        refused(bench.main, [f"--table={tmp_path / 's.json'}"], f"field scale.rows.{key}.", words)
    r = json.loads(json.dumps(src))
    r["scale"]["rows"]["48/7 4x128"] = {**r["scale"]["rows"].pop("48/8 4x128"), "block_size": 7}
    (tmp_path / "s.json").write_text(json.dumps(r))
    refused(bench.main, [f"--table={tmp_path / 's.json'}"], "block_size=7 does not divide gen_len=48")


def test_the_ablations_files_share_one_budget_and_stay_in_range(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(os.path.join(ROOT, "results"), results)
    here = results / "arithmetic" / "ablation"
    path = here / sorted(os.listdir(here))[-1]
    r = json.loads(path.read_text())
    for edit, words in ((dict(iters=r["iters"] + 1), f"field iters={r['iters'] + 1}, but"),
                        (dict(num_eval=2 * r["num_eval"]), f"field num_eval={2 * r['num_eval']}, but"),  # still counts
                        (dict(nfe=48.5), "field nfe=48.5 is above gen_len=48")):
        path.write_text(json.dumps({**r, **edit}))
        refused(demo.main, ["--report", f"--results_dir={results}"], str(path), words)


def test_a_link_to_nothing_given_as_an_output_file_is_named(tmp_path):
    os.symlink(tmp_path / "gone.html", tmp_path / "page.html")
    refused(show.main, [f"--checkpoints={os.path.join(ROOT, 'ref', 'arithmetic')}", "--methods=cdlm",
                        f"--html={tmp_path / 'page.html'}"], "is a symbolic link to", "which does not exist")
    seed = json.load(open(os.path.join(ROOT, "results", "arithmetic", "seed2.json")))
    cdlm = seed["bench"]["cdlm"]
    (tmp_path / "seed2.json").write_text(json.dumps({**seed, "bench": {**seed["bench"], "cdlm": {
        **cdlm, "compiled": {**cdlm["compiled"], "compile_s": 0}}}}))  # a first call takes time
    refused(bench.main, [f"--table={tmp_path / 'seed2.json'}"], "field compiled.compile_s: expected float in (0, inf)")


def test_the_report_reads_each_seeds_machine_and_one_student_per_file(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(os.path.join(ROOT, "results"), results)
    refused(demo.main, ["--report", f"--results_dir={results}", f"--png={results / 'arithmetic' / 'x.png'}"],
            "option png", "results_dir")  # a picture among the files the report reads
    here = results / "arithmetic"
    shutil.copy(here / "ablation" / "no_DLM_loss_seed2.json", here / "ablation" / "no_DLM_loss_seed4.json")
    r = json.loads((here / "ablation" / "no_DLM_loss_seed4.json").read_text())
    (here / "ablation" / "no_DLM_loss_seed4.json").write_text(json.dumps({**r, "seed": 4}))
    refused(demo.main, ["--report", f"--results_dir={results}"], "no_DLM_loss_seed4.json", "one student, two files")
    os.remove(here / "ablation" / "no_DLM_loss_seed4.json")
    abl = here / "ablation" / "no_DLM_loss_seed2.json"
    for edit, words in (({"weights_hash": "x"}, "field weights_hash: expected a weights hash (16 hex digits), got 'x'"),
                        ({"machine": {**r["machine"], "cores": 0}}, "field machine.cores: expected int in [1, inf)"),
                        ({"machine": {**r["machine"], "threads": -1}}, "field machine.threads: expected int"),  # probe 14
                        ({"commit": 123}, "field commit: expected a git commit")):
        abl.write_text(json.dumps({**r, **edit}))
        refused(demo.main, ["--report", f"--results_dir={results}"], "no_DLM_loss_seed2.json", words)
    abl.write_text(json.dumps(r))
    seed = json.loads((here / "seed2.json").read_text())
    (here / "seed2.json").write_text(json.dumps({**seed, "bench_settings": {**seed["bench_settings"], "num_eval": 1000}}))
    refused(demo.main, ["--report", f"--results_dir={results}"], "field bench_settings.num_eval=1000")
    for edit, words in (({"weights": {**seed["weights"], "teacher": "zz"}}, "field weights.teacher: expected a weights hash"),
                        ({"commit": "abc\n| injected | row |"}, "field commit: expected a git commit")):  # probe 14
        (here / "seed2.json").write_text(json.dumps({**seed, **edit}))
        refused(demo.main, ["--report", f"--results_dir={results}"], "seed2.json", words)
    (here / "seed2.json").write_text(json.dumps({**seed, "machine": {**seed["machine"], "torch": "2.4.0"}}))
    out = __import__("results").report("arithmetic", str(results), demo.ABLATIONS)
    assert "torch 2.4.0 (seed 2), 2.13.0+cpu (seed 3)" in out.splitlines()[0], out.splitlines()[0]


@pytest.mark.parametrize("odd", ["sparse", "meta"])
def test_a_weight_that_is_not_a_plain_tensor_is_named(tmp_path, odd):
    ckpt = torch.load(os.path.join(ROOT, "ref", "arithmetic", "student", "ckpt.pt"), weights_only=True)
    w = ckpt["model"]["wte.weight"]
    ckpt["model"]["wte.weight"] = w.to_sparse() if odd == "sparse" else torch.empty_like(w, device="meta")
    torch.save(ckpt, tmp_path / "ckpt.pt")
    refused(sample.main, [f"--out_dir={tmp_path}", "--prompt=1:+2="], "weight wte.weight is not a plain tensor")


def test_a_tasks_folder_given_as_the_results_folder_is_named():
    """Probe 15: --results_dir=results/arithmetic read results/arithmetic/arithmetic and said "no seed
    files yet" beside the seed files; it is a task's folder, and the refusal names the folder above."""
    for given in ("results/arithmetic", "results/arithmetic/"):
        refused(demo.main, ["--report", f"--results_dir={os.path.join(ROOT, given)}"],
                "holds a task's results files itself", f"({os.path.join(ROOT, 'results')})")
