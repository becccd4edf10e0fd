"""
The typical changes, each made in its one place and run end to end on a tiny model. Each test
adds a row to a table in a copy of the script's source (what a user would type into the file) and
runs that copy: what derives from the table has to follow from the row alone.
"""
import json
import os
import types

from conftest import ROOT, TINY_MODEL


def with_row(name, anchor, row):
    """The module `name` with `row` inserted after `anchor` in its source."""
    src = open(os.path.join(ROOT, f"{name}.py")).read()
    assert src.count(anchor) == 1, f"{anchor!r} is not one place in {name}.py"
    mod = types.ModuleType(f"{name}_extended")
    mod.__file__ = os.path.join(ROOT, f"{name}.py")
    exec(compile(src.replace(anchor, anchor + row), mod.__file__, "exec"), mod.__dict__)
    return mod


def test_a_fourth_loss_is_one_row_of_LOSSES(tmp_path, data_dir, teacher_dir, traj_dir):
    calls = []
    train = with_row("train", "LOSSES = {\n", '''    "entropy": Loss(0.05, lambda p, st: CALLS.append(1) or -(p.student.float().softmax(-1) *
                    p.student.float().log_softmax(-1)).sum(-1)[st.distill].mean(), "E", lambda st: st.distill,
                    "entropy"),
''')
    train.CALLS = calls
    assert train.config["w_entropy"].default == 0.05  # its option
    zero = {f"w_{n}": 0.0 for n in train.LOSSES}
    try:  # the all-zero check names it
        train.check_config({**TINY_MODEL, "mode": "cdlm", "init_from": "teacher", "data_dir": data_dir, **zero,
                            "out_dir": str(tmp_path / "x")})
        raise AssertionError("all-zero weights were accepted")
    except train.CDLMError as e:
        assert "w_entropy" in str(e)
    train.train({**TINY_MODEL, "mode": "cdlm", "init_from": "teacher", "teacher_dir": teacher_dir,
                 "traj_dirs": [traj_dir], "data_dir": data_dir, "max_iters": 3, "out_dir": str(tmp_path / "s")})
    assert len(calls) == 3  # in the training sum, once per iteration


def test_a_method_that_depends_on_another_is_one_row_of_METHODS(tmp_path, teacher_dir, student_dir):
    bench = with_row("bench", "METHODS = {  # cdlm first: dlm_fewer_steps takes the student's measured steps\n", '''    "dlm_twice_steps": Method("teacher", lambda bs, th, tps: DecodeSettings(bs, steps_per_block=max(1, min(bs, round(2 * bs / tps))),
                                                                        early_stop=True),
                              "the teacher at twice the student's steps per block", depends_on="cdlm"),
''')
    assert bench.needs("dlm_twice_steps") == ("teacher", "student")
    out = tmp_path / "bench.json"
    bench.run({"teacher_dir": teacher_dir, "student_dir": student_dir, "methods": ["dlm_twice_steps"], "num_eval": 8,
               "batch_size": 8, "latency_n": 1, "repeats": 1, "out_path": str(out), "device": "cpu", "compile": "off"})
    r = json.loads(out.read_text())["methods"]["dlm_twice_steps"]
    # the student's tokens per step were measured on the side, since cdlm was not in this run
    model, ckpt, s = bench.load_models({"student_dir": student_dir}, ["cdlm"], "cpu")["student"]
    import torch
    from data.common import load_split
    prompts = torch.as_tensor(load_split(ckpt["config"]["data_dir"], "test")[:8, :ckpt["data_meta"]["prompt_len"]]
                              .astype("int64"))
    tps = bench.mean_tokens_per_step(model, ckpt["data_meta"], prompts, bench.METHODS["cdlm"].settings(8, s.threshold, None))
    assert r["settings"]["steps_per_block"] == max(1, min(8, round(16 / tps)))
