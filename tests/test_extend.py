"""
The typical changes, each made in its one place and run end to end on a tiny model. Each test
adds a row to a table in a copy of the script's source (what a user would type into the file) and
runs that copy: what derives from the table has to follow from the row alone.
"""
import dataclasses
import json
import os
import types

from conftest import ROOT, TINY_MODEL


def with_row(name, anchor, row, *more):
    """The module `name` with `row` inserted after `anchor` in its source (and each further anchor
    and row of `more` after that one)."""
    src = open(os.path.join(ROOT, f"{name}.py")).read()
    pairs = [(anchor, row), *zip(more[::2], more[1::2])]
    for a, r in pairs:
        assert src.count(a) == 1, f"{a!r} is not one place in {name}.py"
        src = src.replace(a, a + r)
    mod = types.ModuleType(f"{name}_extended")
    mod.__file__ = os.path.join(ROOT, f"{name}.py")
    exec(compile(src, mod.__file__, "exec"), mod.__dict__)
    return mod


def test_a_selection_rule_is_one_row_of_RULES_and_its_field(teacher_dir, capsys):
    """A third rule (finalize every token at least `ratio` times as confident as the block's best):
    a row of RULES and a field for its parameter; the option, the checks, the stored-settings
    override and the sampler follow."""
    sample = with_row("sample", "RULES = {\n", '''    "relative": Rule("ratio", Float(None, "(0, 1]"), lambda st, i: st.ratio, confidence,
                     lambda conf, ratio: conf >= ratio * conf.max(1, keepdim=True).values),
''', "    temperature: float = 0.0                 # 0 is greedy; > 0 samples (Gumbel-max in float64)\n",
        "    ratio: Optional[float] = None\n")
    import torch
    from checkpoint import load_model
    model, ckpt = load_model(os.path.join(teacher_dir, "ckpt.pt"))
    st = sample.decode_settings(ckpt, {"ratio": 0.5})  # giving its parameter selects it
    assert (st.rule, st.ratio, st.steps_per_block, st.threshold) == ("relative", 0.5, None, None)
    try:
        sample.decode_settings(ckpt, {"ratio": 0.5, "threshold": 0.9})
        raise AssertionError("two rules' parameters were accepted")
    except sample.CDLMError as e:
        assert "ratio=0.5 and threshold=0.9" in str(e)
    seen = []

    def on_step(ev):  # every step finalizes exactly what the rule says (and at least one token)
        conf, picked = ev.out.conf, ev.out.picked
        rule = (conf > float("-inf")) & (conf >= 0.5 * conf.max(1, keepdim=True).values)
        assert torch.equal(picked, rule) and picked.any(1).all()
        seen.append(picked.sum().item())
    prompts = torch.tensor([[3, 4, 5, 6, 7, 8] + [0] * (ckpt["data_meta"]["prompt_len"] - 6)] * 3)
    meta = ckpt["data_meta"]
    out, nfe = sample.generate(model, prompts, meta["gen_len"], meta["mask_id"], meta["eos_id"], st, on_step=on_step)[:2]
    assert (out != meta["mask_id"]).all() and len(seen) == nfe.max().item() and max(seen) > 3  # some in parallel
    assert sample.config["ratio"].default is None and sample.config["rule"].check("rule", "relative") == "relative"
    sample.main([f"--out_dir={teacher_dir}", "--prompt=5:+3*7=", "--ratio=0.5"])  # the command line has it
    assert "forward passes" in capsys.readouterr().out


def test_a_fourth_loss_is_one_row_of_LOSSES(tmp_path, data_dir, teacher_dir, traj_dir):
    calls = []
    train = with_row("train", "LOSSES = {\n", '''    "entropy": Loss(0.05, (), lambda p, st: CALLS.append(1) or -(p.student.float().softmax(-1) *
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


def test_a_rule_that_ranks_by_its_own_score_finalizes_exactly_k(teacher_dir, capsys):
    """A rule that ranks by the margin between the top two probabilities, k a step: one row of RULES
    (its own score and pick) and a field. A step finalizes exactly its k best by margin, even where
    another position is the more confident: "at least one" takes the rule's own best."""
    sample = with_row("sample", "RULES = {\n", '''    "margin": Rule("margin_k", Int(None, "[1, inf)"), lambda st, i: st.margin_k,
                   lambda conf, logits: (lambda p: p[..., 0] - p[..., 1])(logits.float().softmax(-1).topk(2, -1).values),
                   top_k),
''', "    temperature: float = 0.0                 # 0 is greedy; > 0 samples (Gumbel-max in float64)\n",
        "    margin_k: Optional[int] = None\n")
    import torch
    # position 0 is the most confident masked one (0.60) but has the smallest margin (0.21 < 0.22 < 0.25)
    probs = torch.tensor([[[0.60, 0.39, 0.01], [0.50, 0.25, 0.25], [0.48, 0.26, 0.26], [0.90, 0.05, 0.05]]])
    logits = torch.cat([probs.log(), torch.zeros(1, 4, 1)], -1)  # (1, 4, 4): MASK is token 3
    block = torch.tensor([[3, 3, 3, 1]])  # the last position is final already
    fake = lambda window, start=None, return_hidden=False: (logits.clone(), torch.zeros(1, 4, 2))
    fake.cfg = types.SimpleNamespace(attn="bidirectional")  # a model over the block alone, no cache
    nfe, at = torch.zeros(1, dtype=torch.long), torch.arange(4)
    for k, want in ((1, [False, True, False, False]), (2, [False, True, True, False]), (4, [True, True, True, False])):
        assert sample.decode_step(fake, block, nfe, None, at, 3, 2, "margin", k, 0.0).picked.tolist() == [want]
    from checkpoint import load_model
    model, ckpt = load_model(os.path.join(teacher_dir, "ckpt.pt"))
    meta, st = ckpt["data_meta"], sample.decode_settings(ckpt, {"margin_k": 2})
    picks = []
    prompts = torch.tensor([[3, 4, 5, 6, 7, 8] + [0] * (meta["prompt_len"] - 6)] * 3)
    out, nfe = sample.generate(model, prompts, meta["gen_len"], meta["mask_id"], meta["eos_id"], st,
                               on_step=lambda ev: picks.append(ev.out.picked.sum(1).tolist()))
    assert all(p == [2, 2, 2] for p in picks) and nfe.tolist() == [meta["gen_len"] // 2] * 3
    sample.main([f"--out_dir={teacher_dir}", "--prompt=5:+3*7=", "--margin_k=2"])  # the command line has it
    assert f"({meta['gen_len'] // 2} forward passes)" in capsys.readouterr().out


def test_a_loss_that_reads_the_students_hidden_state(tmp_path, data_dir, teacher_dir, traj_dir):
    """A loss row declares the Pass fields it reads (here the student's last hidden states) and
    cdlm_losses provides them; a row whose default weight is 0 adds no "no <loss>" ablation arm."""
    seen = []
    train = with_row("train", "LOSSES = {\n", '''    "hidden_norm": Loss(0.01, ("hidden",), lambda p, st: SEEN.append(tuple(p.hidden.shape)) or
                        p.hidden.float().pow(2).mean(), "H", lambda st: st.distill, "hidden norm"),
''')
    train.SEEN = seen
    train.train({**TINY_MODEL, "mode": "cdlm", "init_from": "teacher", "teacher_dir": teacher_dir,
                 "traj_dirs": [traj_dir], "data_dir": data_dir, "max_iters": 2, "out_dir": str(tmp_path / "s")})
    assert seen == [(TINY_MODEL["batch_size"], 48, TINY_MODEL["n_embd"])] * 2  # (B, gen_len, C), each iteration
    import demo
    real = demo.train.LOSSES
    try:
        demo.train.LOSSES = {**real, "zero": real["dlm"]._replace(weight=0.0, title="zero")}
        arms = with_row("demo", "ABLATIONS = {\n", "").ABLATIONS
    finally:
        demo.train.LOSSES = real
    assert "no distillation" in arms and "no zero" not in arms


def test_a_method_two_dependencies_deep_is_benched_and_drawn(tmp_path, monkeypatch, capsys, teacher_dir, student_dir):
    """Dependencies resolve recursively in one function (bench.settings_of) that bench.py and show.py
    both call: a method that depends on one that depends on the student's."""
    import torch
    import bench
    import show
    from configurator import Choice, List
    from data.common import load_split
    twice = lambda bs, th, tps: bench.DecodeSettings(bs, steps_per_block=max(1, min(bs, round(2 * bs / tps))), early_stop=True)
    half = lambda bs, th, tps: bench.DecodeSettings(bs, steps_per_block=max(1, min(bs, round(bs / tps / 2))), early_stop=True)
    monkeypatch.setitem(bench.METHODS, "dlm_twice", bench.Method("teacher", twice, "twice the student's steps", depends_on="cdlm"))
    monkeypatch.setitem(bench.METHODS, "dlm_half_twice", bench.Method("teacher", half, "half dlm_twice's steps",
                                                                    depends_on="dlm_twice"))
    choice = List(list(bench.METHODS), Choice(None, *bench.METHODS))
    monkeypatch.setitem(bench.config, "methods", choice)
    monkeypatch.setitem(show.config, "methods", choice)
    assert bench.chain("dlm_half_twice") == ("dlm_half_twice", "dlm_twice", "cdlm")
    out = tmp_path / "bench.json"
    bench.run({"teacher_dir": teacher_dir, "student_dir": student_dir, "methods": ["dlm_half_twice"], "num_eval": 8,
               "batch_size": 8, "latency_n": 1, "repeats": 1, "min_s": 0.0, "out_path": str(out), "device": "cpu", "compile": "off"})
    got = json.loads(out.read_text())["methods"]["dlm_half_twice"]["settings"]
    models = bench.load_models({"teacher_dir": teacher_dir, "student_dir": student_dir}, ["dlm_half_twice"], "cpu")
    (teacher, ckpt, _), (student, _, s) = models["teacher"], models["student"]
    meta = ckpt["data_meta"]
    prompts = torch.as_tensor(load_split(ckpt["config"]["data_dir"], "test")[:8, :meta["prompt_len"]].astype("int64"))
    tps = bench.mean_tokens_per_step(student, meta, prompts, bench.METHODS["cdlm"].decoding(8, s.threshold, None))
    tps = bench.mean_tokens_per_step(teacher, meta, prompts, twice(8, s.threshold, tps))  # by hand, level by level
    assert got == dataclasses.asdict(half(8, s.threshold, tps))
    show.main(["--view=compare", f"--teacher_dir={teacher_dir}", f"--student_dir={student_dir}", "--prompt=5:+3*7=",
               "--methods=dlm_half_twice"])
    assert "dlm_half_twice" in capsys.readouterr().out


def test_a_method_that_depends_on_another_is_one_row_of_METHODS(tmp_path, teacher_dir, student_dir):
    bench = with_row("bench", "METHODS = {  # cdlm first: dlm_fewer_steps takes the student's measured steps\n", '''    "dlm_twice_steps": Method("teacher", lambda bs, th, tps: DecodeSettings(bs, steps_per_block=max(1, min(bs, round(2 * bs / tps))),
                                                                        early_stop=True),
                              "the teacher at twice the student's steps per block", depends_on="cdlm"),
''')
    assert bench.needs("dlm_twice_steps") == ("teacher", "student")
    out = tmp_path / "bench.json"
    bench.run({"teacher_dir": teacher_dir, "student_dir": student_dir, "methods": ["dlm_twice_steps"], "num_eval": 8,
               "batch_size": 8, "latency_n": 1, "repeats": 1, "min_s": 0.0, "out_path": str(out), "device": "cpu", "compile": "off"})
    r = json.loads(out.read_text())["methods"]["dlm_twice_steps"]
    # the student's tokens per step were measured on the side, since cdlm was not in this run
    model, ckpt, s = bench.load_models({"student_dir": student_dir}, ["cdlm"], "cpu")["student"]
    import torch
    from data.common import load_split
    prompts = torch.as_tensor(load_split(ckpt["config"]["data_dir"], "test")[:8, :ckpt["data_meta"]["prompt_len"]]
                              .astype("int64"))
    tps = bench.mean_tokens_per_step(model, ckpt["data_meta"], prompts, bench.METHODS["cdlm"].decoding(8, s.threshold, None))
    assert r["settings"]["steps_per_block"] == max(1, min(8, round(16 / tps)))


TOY_TASK = '''"""A toy task: reverse a string of digits (prompt '3141=', answer '1413#3')."""
import os

import numpy as np
import torch

from configurator import Int, Str, check
from data.common import CharTokenizer, prepared, write_task

config = dict(out_dir=Str(os.path.dirname(os.path.abspath(__file__))), seed=Int(1337, "[0, inf)"),
              n_train=Int(2000, "[1, inf)"), n_val=Int(64, "[1, inf)"), n_test=Int(64, "[1, inf)"),
              block_size=Int(8, "[1, inf)"))
CHARS = "0123456789=#"


def prepare(cfg):
    cfg = check(config, cfg)
    meta = prepared(cfg["out_dir"], cfg)
    if meta is not None:
        return meta
    rng = np.random.default_rng(cfg["seed"])
    draw = lambda: "".join(str(d) for d in rng.integers(0, 10, int(rng.integers(3, 7))))
    splits = {s: [(f"{x}=", x[::-1] + "#" + x[0]) for x in (draw() for _ in range(cfg["n_" + s]))]
              for s in ("test", "val", "train")}
    return write_task(cfg["out_dir"], "reverse", splits, CharTokenizer(CHARS), dict(tokenizer="char", chars=CHARS), cfg)


def infill_probes(tok, meta, prompts, answers):
    hole = torch.zeros_like(answers, dtype=torch.bool)
    hole[:, 0] = True  # the first answer digit
    return {"first digit": (prompts, answers, hole)}
'''


def test_a_new_task_is_its_prepare_py(tmp_path, monkeypatch, capsys):
    """data/<task>/prepare.py through write_task, with its infill probes: the demo derives every
    stage's options from the task's name (default presets, the task's paths), show.py finds its probes."""
    import demo
    import show
    from configurator import Choice
    from data.common import tasks
    root = tmp_path / "checkout"  # a checkout with the task added, and tiny default presets
    (root / "data" / "reverse").mkdir(parents=True)
    (root / "data" / "reverse" / "prepare.py").write_text(TOY_TASK)
    monkeypatch.syspath_prepend(str(root))  # data/ is a namespace package: the new task joins it
    monkeypatch.chdir(root)
    assert "reverse" in tasks()
    model = "n_layer = 2\nn_head = 2\nn_embd = 32\nbatch_size = 16\neval_interval = 10\neval_iters = 2\n" \
            "warmup_iters = 2\ndevice = 'cpu'\nmax_iters = 20\n"
    (root / "config").mkdir()
    for name, text in {"train_teacher.py": model + "mode = 'dlm'\n", "train_ar.py": model + "mode = 'ar'\n",
                       "train_student.py": model + "mode = 'cdlm'\ninit_from = 'teacher'\n",
                       "collect.py": "n_examples = 32\nbatch_size = 16\nchunk = 32\ndevice = 'cpu'\n",
                       "reverse_bench.py": "teacher_dir = 'out/reverse/teacher'\nstudent_dir = 'out/reverse/student'\n"
                                           "ar_dir = 'out/reverse/ar'\nout_path = 'out/reverse/bench.json'\n"
                                           "latency_n = 1\nrepeats = 1\nbatch_size = 8\ndevice = 'cpu'\ncompile = 'off'\n"}.items():
        (root / "config" / name).write_text(text)
    monkeypatch.setitem(demo.TASKS, "reverse", demo.task_stages("reverse"))
    monkeypatch.setitem(demo.config, "task", Choice("arithmetic", *demo.TASKS))
    assert demo.TASKS["reverse"]["student"][1:] == ["--data_dir=data/reverse", "--out_dir=out/reverse/student",
                                                    "--teacher_dir=out/reverse/teacher",
                                                    "--traj_dirs=['out/reverse/trajectories']"]
    demo.main(["--jobs=1", "--task=reverse", "--num_eval=16"])
    assert "| student (cdlm): whole answer |" in capsys.readouterr().out
    got = json.load(open("results/reverse/seed1337.json"))
    assert got["task"] == "reverse" and set(got["bench"]) >= {"cdlm", "dlm", "ar"}
    assert json.load(open("data/reverse/meta.json"))["task"] == "reverse"
    show.main(["--view=infill", "--teacher_dir=out/reverse/teacher", "--student_dir=out/reverse/student",
               "--ar_dir=out/reverse/ar", "--num_eval=16"])
    assert "| first digit | 16 |" in capsys.readouterr().out  # the task's own probe
