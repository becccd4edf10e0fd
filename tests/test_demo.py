"""demo.py: every stage in one command, skipped on a second run; several seeds in one table."""
import json
import os
import shutil

import pytest
import torch

import demo
import results


@pytest.fixture
def tiny_task(tmp_path, monkeypatch, data_dir):
    """The demo's arithmetic task on tiny presets, run in an empty directory."""
    monkeypatch.chdir(tmp_path)
    os.mkdir("config")
    model = "n_layer = 2\nn_head = 2\nn_embd = 32\nbatch_size = 16\neval_interval = 10\neval_iters = 2\n" \
            "warmup_iters = 2\ndevice = 'cpu'\n"
    presets = {
        "teacher.py": model + f"mode = 'dlm'\nout_dir = 'out/teacher'\ndata_dir = {data_dir!r}\nmax_iters = 20\n",
        "collect.py": "teacher_dir = 'out/teacher'\nout_dir = 'out/trajectories'\nn_examples = 32\nbatch_size = 16\n"
                      "chunk = 32\ndevice = 'cpu'\n",
        "student.py": model + f"mode = 'cdlm'\ninit_from = 'teacher'\nout_dir = 'out/student'\ndata_dir = {data_dir!r}\n"
                      "traj_dirs = ['out/trajectories']\nmax_iters = 10\n",
        "ar.py": model + f"mode = 'ar'\nout_dir = 'out/ar'\ndata_dir = {data_dir!r}\nmax_iters = 10\n",
        "bench.py": "latency_n = 2\nrepeats = 1\nmin_s = 0.0\nbatch_size = 8\ndevice = 'cpu'\ncompile = 'off'\n",
    }
    for name, text in presets.items():
        (tmp_path / "config" / name).write_text(text)
    task = dict(prepare=("data.arithmetic.prepare", [f"--out_dir={data_dir}", "--n_train=2000", "--n_val=64",
                                                     "--n_test=64"]),
                teacher=["config/teacher.py"], collect=["config/collect.py"],
                student=["config/student.py"], ar=["config/ar.py"], bench=["config/bench.py"])
    monkeypatch.setitem(demo.TASKS, "arithmetic", task)
    # the methods the report's tables read (the others are bench.py's own tests')
    monkeypatch.setitem(demo.config, "bench_methods", demo.List(["cdlm", "ar", "dlm", "dlm_stop"], demo.config["bench_methods"].item))
    return tmp_path


def test_demo_runs_every_stage_then_skips_them(tiny_task, capsys):
    demo.main(["--jobs=1", "--num_eval=16"])
    first = capsys.readouterr().out
    assert "| student (cdlm): final answer |" in first and "| method | final answer | whole answer |" in first
    ckpts = {d: os.path.getmtime(f"out/{d}/ckpt.pt") for d in ("teacher", "student", "ar")}
    demo.main(["--jobs=1", "--num_eval=16"])
    second = capsys.readouterr().out
    assert second.count("done (iteration") == 3 and "out/bench.json: done, skipped" in second
    assert "nothing to do" in second  # prepare and the collection
    assert {d: os.path.getmtime(f"out/{d}/ckpt.pt") for d in ckpts} == ckpts
    assert first.splitlines()[-3] == second.splitlines()[-3]  # the same table
    # trajectories collected again (another size): the student is trained again, not skipped, and a
    # resume on the new set is refused
    student = demo.options(demo.train.config, ["config/student.py"], 1337)
    before = torch.load("out/student/ckpt.pt", weights_only=True)["trajectories"]
    demo.collect.collect(demo.options(demo.collect.config, ["config/collect.py", "--n_examples=16"], 1337), replace=True)
    with pytest.raises(demo.CDLMError, match="it was trained on the trajectory set"):
        demo.train.train({**student, "init_from": "resume"})
    demo.run_train(student)
    assert "done (iteration" not in capsys.readouterr().out
    assert torch.load("out/student/ckpt.pt", weights_only=True)["trajectories"] not in (before, None)


def test_demo_over_seeds_and_resume(tiny_task, capsys):
    demo.main(["--jobs=1", "--num_eval=16", "--seeds=1,2"])
    out = capsys.readouterr().out
    assert os.path.isfile("out/seed2/student/ckpt.pt") and os.path.isfile("out/seed1/bench.json")
    assert "| teacher, 1 token/step: final answer |" in out and "seed 1 | seed 2 |" in out
    assert {json.load(open(f"results/arithmetic/seed{s}.json"))["seed"] for s in (1, 2)} == {1, 2}
    assert os.path.isfile("out/ar/ckpt.pt") and not os.path.exists("out/seed1/ar")  # one AR, at AR_SEED
    assert results.report("arithmetic", "results", demo.ABLATIONS) in out  # the table comes from the files alone
    # a second run of a seed is placed against the files already there, before replacing its own
    demo.main(["--jobs=1", "--num_eval=16", "--seeds=1"])
    out = capsys.readouterr().out
    assert "your seed 1 against the 2 committed result file(s) trained like it" in out
    line = next(l for l in out.splitlines() if "teacher NFE (dlm):" in l and "range" in l)
    assert line.endswith(": inside, =")  # the same run again lands inside its own range, on its own figure
    rows = [l for l in out.splitlines() if ", range " in l and "x, range" not in l]  # accuracies and passes
    assert len(rows) >= 10 and all(l.endswith(", =") for l in rows)
    weights = [l for l in out.splitlines() if "'s weights: " in l]
    assert len(weights) == 3 and all(l.endswith(": =") for l in weights)  # teacher, student, AR
    # a student killed mid-run resumes where it stopped
    path = "out/seed1/student/ckpt.pt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["iter_num"] = 5
    ckpt["resume_hash"] = demo.train.resume_hash(ckpt)  # as a run killed at iteration 5 saved it
    torch.save(ckpt, path)
    demo.run_train(demo.options(demo.train.config, ["config/student.py"], 1))
    assert "resuming at iteration 5" in capsys.readouterr().out


def test_demo_ablation_table(tiny_task, capsys):
    names = ("default", "y_star=literal", "trajectories at T=0 and T=0.5", "LoRA rank 16")
    demo.main(["--jobs=1", "--num_eval=16", "--stage=train"])  # the teacher and both trajectory sets
    capsys.readouterr()
    demo.main(["--jobs=1", "--ablate", "--ablate_iters=5", "--num_eval=16", "--seeds=1,2",
               "--variants=" + ",".join(names)])
    out = capsys.readouterr().out
    for name in demo.ABLATIONS:
        assert (f"| {name} |" in out) == (name in names)
    got = [json.load(open(f"results/arithmetic/ablation/LoRA_rank_16_seed{s}.json")) for s in (1, 2)]
    assert [r["seed"] for r in got] == [1, 2] and all(r["whole_acc"] <= r["final_acc"] for r in got)
    ck = torch.load("out/ablate/arithmetic/trajectories_at_T_0_and_T_0.5/seed1/ckpt.pt", weights_only=True)
    assert ck["config"]["traj_dirs"] == ["out/trajectories", "out/trajectories_t05"]


def test_jobs_run_side_by_side_and_a_failure_names_its_log(tmp_path, monkeypatch):
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    logs = str(tmp_path / "logs")
    demo.run_jobs([["--report", f"--results_dir={tmp_path}"], ["--report", "--task=wordproblems",
                                                               f"--results_dir={tmp_path}"]], 2, logs)
    texts = sorted(open(os.path.join(logs, f)).read() for f in os.listdir(logs))
    assert len(texts) == 2 and all("no seed files" in t for t in texts)
    with pytest.raises(demo.CDLMError, match=r"a job failed \(exit 2\): see .*jobs-0.log"):
        demo.run_jobs([["--jobs=0"]], 2, logs)


def test_demo_from_another_directory_is_one_line_and_exit_2(tmp_path):
    import subprocess
    import sys
    p = subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                     "demo.py"), "--report"], cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and "repository's root" in p.stderr


def test_a_run_outside_the_committed_range_says_by_how_much():
    def run(acc, nfe, seed=7, threads=1, torch="2.13.0+cpu"):
        return dict(seed=seed, threads=threads, machine=dict(torch=torch), bench={},
                    teacher_steps={k: dict(final_acc=acc, whole_acc=acc, nfe=nfe) for k in "128"})
    text = results.against(run(0.90, 48.0), [run(0.95, 48.0, 1), run(0.97, 48.0, 2)])
    assert "teacher, 1 token/step: final answer: 90.0%, range 95.0%-97.0%: outside, by 5.0%" in text
    assert "teacher, 2 tokens/step: whole answer: 90.0%" in text and "speedup" not in text  # unmeasured: not listed
    assert results.against(run(0.96, 48.0), [run(0.95, 48.0, 1), run(0.97, 48.0, 2)]).count(": inside") == 6
    # the same seed is compared figure by figure; runs trained at another thread count or torch are not compared
    text = results.against(run(0.96, 48.0), [run(0.95, 48.0, 7), run(0.97, 48.0, 2, threads=2),
                                          run(0.97, 48.0, 3, torch="2.4.0")])
    assert "seed 2: not compared, trained at 2 thread(s), this run at 1" in text
    assert "seed 3: not compared, trained on torch 2.4.0, this run on 2.13.0+cpu" in text
    assert "against the 1 committed result file(s) trained like it" in text
    assert "96.0%, range 95.0%-95.0%: outside, by 1.0%, committed seed 7: 95.0%" in text
    assert "nothing to compare" in results.against(run(0.96, 48.0), [run(0.95, 48.0, 1, threads=2)])
    mine, avx512 = run(0.96, 48.0), run(0.95, 48.0, 1)  # the CPU's kernels: another rounding, another run
    mine["machine"]["isa"], avx512["machine"]["isa"] = "AVX2", "AVX512"
    assert "seed 1: not compared, trained with AVX512 CPU kernels, this run with AVX2" in results.against(mine, [avx512])
    assert "seed 1: its CPU instruction set is not recorded" in results.against(mine, [run(0.95, 48.0, 1)])


def test_reference_checkpoints_are_weights_only_and_decode_the_same(tiny_task, capsys, monkeypatch, teacher_dir):
    """--stage=export: ref/<task>/ holds each checkpoint without optimizer or RNG state, its data
    path relative to the root, and decodes exactly as the original."""
    from checkpoint import load_model
    from sample import DecodeSettings, generate
    demo.main(["--jobs=1", "--num_eval=16", "--stage=train"])
    monkeypatch.setitem(demo.REFERENCE_EXTRA, "arithmetic", {})
    demo.main(["--stage=export"])
    manifest = json.load(open("ref/arithmetic/MANIFEST.json"))
    assert set(manifest["checkpoints"]) == {"teacher", "student", "ar"}
    for name in manifest["checkpoints"]:
        ref = torch.load(f"ref/arithmetic/{name}/ckpt.pt", weights_only=True)
        assert "optimizer" not in ref and "rng" not in ref and not os.path.isabs(ref["config"]["data_dir"])
        assert ref["weights_hash"] == manifest["checkpoints"][name]["weights_hash"]
        assert os.path.getsize(f"ref/arithmetic/{name}/ckpt.pt") < os.path.getsize(f"out/{name}/ckpt.pt") / 2
    (a, ca), (b, _) = load_model("out/student/ckpt.pt"), load_model("ref/arithmetic/student/ckpt.pt")
    meta = ca["data_meta"]
    prompt = torch.full((2, meta["prompt_len"]), meta["pad_id"])
    s = DecodeSettings(ca["model_config"]["block_size"], threshold=0.9, cache="exact")
    run = lambda m: generate(m, prompt, meta["gen_len"], meta["mask_id"], meta["eos_id"], s).tokens
    assert torch.equal(run(a), run(b))
    # the manifest's notes written by hand stay while it lists the same weights
    manifest["trained_at"], manifest["data"] = "by hand", "python -m data.arithmetic.prepare"
    json.dump(manifest, open("ref/arithmetic/MANIFEST.json", "w"))
    demo.main(["--stage=export"])
    again = json.load(open("ref/arithmetic/MANIFEST.json"))
    assert again["trained_at"] == "by hand" and again["data"] == manifest["data"]
    # a student from another teacher, a checkpoint of the wrong kind in a place: refused, ref/ untouched
    ref = {name: open(f"ref/arithmetic/{name}/ckpt.pt", "rb").read() for name in manifest["checkpoints"]}
    shutil.copy("out/teacher/ckpt.pt", "teacher.pt")
    shutil.copy(os.path.join(teacher_dir, "ckpt.pt"), "out/teacher/ckpt.pt")
    with pytest.raises(demo.CDLMError, match="out/student/ckpt.pt was distilled from another teacher than out/teacher"):
        demo.main(["--stage=export"])
    shutil.copy("teacher.pt", "out/teacher/ckpt.pt")
    shutil.copy("out/student/ckpt.pt", "out/ar/ckpt.pt")
    with pytest.raises(demo.CDLMError, match=r"out/ar/ckpt.pt holds the student \(cdlm\).*AR baseline"):
        demo.main(["--stage=export"])
    assert all(open(f"ref/arithmetic/{name}/ckpt.pt", "rb").read() == b for name, b in ref.items())
    monkeypatch.setitem(demo.REFERENCE_EXTRA, "arithmetic", {"teacher_infill": ["config/missing.py"]})
    with pytest.raises(demo.CDLMError, match="missing.py"):
        demo.main(["--stage=export"])


def test_export_without_checkpoints_is_refused_before_any_work(tiny_task, monkeypatch):
    """Every missing checkpoint named at once, and no data prepared first."""
    import data.arithmetic.prepare as arith
    monkeypatch.setattr(arith, "prepare", lambda cfg: pytest.fail("export prepared the data"))
    monkeypatch.setitem(demo.REFERENCE_EXTRA, "arithmetic", {})
    with pytest.raises(demo.CDLMError) as e:
        demo.main(["--stage=export"])
    assert all(f"out/{name}/ckpt.pt" in str(e.value) for name in ("teacher", "student", "ar")), e.value
