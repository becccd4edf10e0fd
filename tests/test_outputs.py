"""
No run destroys its own input: an output file is new or one of the kind its script writes (a bench
report, a replay page, a picture), never a README, a dataset's file or a manifest; an output inside
the data a checkpoint reads, another task's prepared data, a finished or reference checkpoint under
a fresh training run, a plot a running bench holds: each refused in one line before any work.
"""
import json
import os
import shutil

import torch
from conftest import ROOT
from test_hostile import refused
from test_hostile_inputs import file_bytes

import bench
import collect
import sample
import show
import train
from data.arithmetic import prepare as arith


def hostages(tmp_path, data_dir):
    """Files no output may replace: a README, a dataset's meta.json and split, a manifest; and their bytes."""
    files = {"README.md": b"# read me\n", "MANIFEST.json": open(os.path.join(ROOT, "ref/arithmetic/MANIFEST.json"), "rb").read(),
             "meta.json": file_bytes(f"{data_dir}/meta.json"), "test.bin": file_bytes(f"{data_dir}/test.bin")}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return {str(tmp_path / name): data for name, data in files.items()}


def test_outputs_are_new_or_their_own_kind(tmp_path, data_dir, teacher_dir):
    (tmp_path / "h").mkdir()  # its meta.json makes it a dataset: nothing is written in it or below it
    files = hostages(tmp_path / "h", data_dir)
    for path in files:
        refused(bench.main, [f"--teacher_dir={teacher_dir}", "--methods=dlm", f"--out_path={path}"], "option out_path", path)
        refused(show.main, [f"--teacher_dir={teacher_dir}", "--methods=dlm", f"--html={path}"], "option html", path)
    page = tmp_path / "other.html"  # an HTML page that show.py did not write
    page.write_text("<html>mine</html>")
    refused(show.main, [f"--teacher_dir={teacher_dir}", "--methods=dlm", f"--html={page}"], "option html",
            "not a replay page")
    assert all(file_bytes(p) == data for p, data in files.items()) and page.read_text() == "<html>mine</html>"
    # what the scripts wrote before is theirs to write again
    from render import GENERATOR, PAGE
    from tables import REPORT
    from files import check_output
    report = tmp_path / "old.json"
    report.write_text(json.dumps(dict(methods={}, settings={}, machine={}, config={})))
    check_output(str(report), "option out_path", REPORT)
    page.write_text(f"<!doctype html><html><head>{GENERATOR}</head></html>")
    check_output(str(page), "option html", PAGE)


def test_outputs_inside_the_data_a_checkpoint_reads_are_refused(data_dir, teacher_dir):
    meta = file_bytes(f"{data_dir}/meta.json")
    for out in (f"{data_dir}/meta.json", f"{data_dir}/test.bin", f"{data_dir}/bench.json"):
        refused(bench.main, [f"--teacher_dir={teacher_dir}", "--methods=dlm", f"--out_path={out}"], "option out_path",
                "the data of option teacher_dir's checkpoint")
    assert file_bytes(f"{data_dir}/meta.json") == meta and not os.path.exists(f"{data_dir}/bench.json")
    for key, out in (("html", f"{data_dir}/replay.html"), ("gif", f"{data_dir}/replay.gif")):  # show.py's pictures too
        refused(show.main, [f"--teacher_dir={teacher_dir}", "--methods=dlm", f"--{key}={out}"], f"option {key}",
                "the data of option teacher_dir's checkpoint")
        assert not os.path.exists(out)


def test_a_running_bench_holds_its_plots(tmp_path, teacher_dir, monkeypatch):
    """show.py --png on the plot a running bench will write is refused while the bench runs."""
    png = tmp_path / "b_roofline.png"
    seen = []
    monkeypatch.setattr(bench, "_run", lambda cfg, methods: seen.append(
        refused(show.main, ["--view=masks", f"--png={png}"], "option png", "another run")))
    bench.main([f"--teacher_dir={teacher_dir}", "--methods=dlm", f"--out_path={tmp_path / 'b.json'}", "--device=cpu"])
    assert seen and not png.exists()


def test_prepare_writes_only_over_its_own_data(tmp_path, data_dir):
    small = ["--n_train=50", "--n_val=8", "--n_test=8"]
    other = tmp_path / "wp"  # another task's prepared data
    other.mkdir()
    meta = {**json.load(open(f"{data_dir}/meta.json")), "task": "wordproblems"}
    (other / "meta.json").write_text(json.dumps(meta))
    refused(arith.main, [f"--out_dir={other}", *small], f"option out_dir='{other}'", "task 'wordproblems'")
    assert json.loads((other / "meta.json").read_text()) == meta
    (tmp_path / "h").mkdir()  # a folder of other files
    files = hostages(tmp_path / "h", data_dir)
    refused(arith.main, [f"--out_dir={tmp_path / 'h'}", *small], "option out_dir", "'MANIFEST.json'", "not prepared data")
    assert all(file_bytes(p) == data for p, data in files.items())


def test_a_fresh_training_run_keeps_a_finished_or_reference_checkpoint(tmp_path, data_dir, teacher_dir):
    argv = [f"--data_dir={data_dir}", "--n_layer=1", "--n_head=2", "--n_embd=32", "--batch_size=8", "--max_iters=2",
            "--eval_iters=1", "--warmup_iters=1", "--device=cpu"]
    done = tmp_path / "done"
    shutil.copytree(teacher_dir, done)
    before = file_bytes(f"{done}/ckpt.pt")
    refused(train.main, argv + [f"--out_dir={done}"], f"option out_dir='{done}'", "finished checkpoint",
            "30 iterations", "another --out_dir")
    ref = tmp_path / "ref"
    ref.mkdir()
    shutil.copy(os.path.join(ROOT, "ref/arithmetic/teacher/ckpt.pt"), ref / "ckpt.pt")
    refused(train.main, argv + [f"--out_dir={ref}"], "option out_dir", "weights-only reference checkpoint")
    refused(train.main, argv + [f"--out_dir={ref}", "--init_from=resume"], "cannot be resumed", "another --out_dir")
    assert file_bytes(f"{done}/ckpt.pt") == before
    # an unfinished one (a killed run) is started again from scratch, as asked
    ckpt = torch.load(f"{done}/ckpt.pt", weights_only=True)
    torch.save({**ckpt, "iter_num": 10}, f"{done}/ckpt.pt")
    train.main(argv + [f"--out_dir={done}"])
    assert torch.load(f"{done}/ckpt.pt", weights_only=True)["iter_num"] == 2


def test_an_empty_data_dir_is_named_as_given(tmp_path, teacher_dir):
    empty = tmp_path / "killed"  # what a prepare killed at once leaves
    empty.mkdir()
    refused(sample.main, [f"--out_dir={teacher_dir}", "--eval", f"--data_dir={empty}"], f"option data_dir='{empty}'",
            "no prepared data", "interrupted")


def test_no_writer_writes_into_a_reference_bundle(tmp_path, data_dir, teacher_dir):
    """A folder with demo.py --stage=export's MANIFEST.json (ref/<task>) holds reference checkpoints:
    a training run, a collection or a dataset written beside them is refused before work."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    shutil.copy(os.path.join(ROOT, "ref/arithmetic/MANIFEST.json"), bundle / "MANIFEST.json")
    words = [f"option out_dir='{bundle}' holds reference checkpoints"]
    refused(train.main, [f"--data_dir={data_dir}", f"--out_dir={bundle}", "--max_iters=2", "--device=cpu"], *words)
    refused(collect.main, [f"--teacher_dir={teacher_dir}", f"--out_dir={bundle}", "--n_examples=8", "--device=cpu"], *words)
    refused(arith.main, [f"--out_dir={bundle}", "--n_train=64"], *words)
    assert sorted(os.listdir(bundle)) == ["MANIFEST.json"]
