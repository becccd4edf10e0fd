"""
The whole pipeline in one command: data, teacher, trajectories, student, AR baseline, benchmark.

    python demo.py                         # arithmetic (about 40 minutes on a 2-core CPU)
    python demo.py --task=wordproblems     # English word problems through a BPE tokenizer
    python demo.py --seeds=1,2,3           # the headline figures over seeds: mean and spread
    python demo.py --ablate                # the student-objective ablation (ABLATIONS below)

It runs the repo's own scripts in-process with the presets in config/, so every stage can also be
run by hand. A stage is skipped when its output is there and was made with the same settings (a
second run only prints the tables); an interrupted stage resumes where it stopped. With seeds other
than the presets' own, outputs go to out/seed<N>/...; the problems stay the same for every seed.
"""
import os
import statistics
import sys
import time

import torch

import bench
import collect
import sample
import train
from configurator import Bool, Choice, Int, List, configure, run_main
from data.common import atomic_write_json, checkpoint_data, load_split, read_json
from model import load_model, read_checkpoint
from runtime import pick_device

# each stage: the script's options as its preset file and overrides (what you would type)
TASKS = {
    "arithmetic": dict(prepare=("data.arithmetic.prepare", []), teacher=["config/train_teacher.py"],
                       collect=["config/collect.py"],
                       collect_t05=["config/collect.py", "--temperature=0.5", "--out_dir=out/trajectories_t05"],
                       student=["config/train_student.py"], ar=["config/train_ar.py"], bench=[]),
    "wordproblems": dict(prepare=("data.wordproblems.prepare", []), teacher=["config/wordproblems_teacher.py"],
                         collect=["config/wordproblems_collect.py"],
                         collect_t05=["config/wordproblems_collect.py", "--temperature=0.5",
                                      "--out_dir=out/wp_trajectories_t05"],
                         student=["config/wordproblems_student.py"], ar=["config/wordproblems_ar.py"],
                         bench=["config/wordproblems_bench.py"]),
}
# student variants, each trained from the same teacher and trajectories for ablate_iters iterations
ABLATIONS = {
    "default": [],
    "y_star=random": ["--y_star=random"],
    "y_star=completion": ["--y_star=completion"],
    "no distillation": ["--w_distill=0.0"],
    "no consistency": ["--w_consist=0.0"],
    "no DLM loss": ["--w_dlm=0.0"],
    "dlm_noise=block": ["--dlm_noise=block"],
    "trajectories at T=0 and T=0.5": ["--traj_dirs=TRAJS"],
    "LoRA rank 16": ["--lora_rank=16", "--lora_alpha=32", "--learning_rate=3e-3", "--min_lr=3e-4"],
}

config = dict(
    task=Choice("arithmetic", *TASKS),
    seeds=List([1337], Int(None, "[0, inf)")),  # 1337: the presets' own seed and out/ directories
    ablate=Bool(False),
    ablate_iters=Int(300, "[1, inf)"),
    num_eval=Int(500, "[1, inf)"),
)


def reroot(value, seed):
    """out/... -> out/seed<N>/... for any seed but the presets' own."""
    if seed == 1337:
        return value
    if isinstance(value, list):
        return [reroot(v, seed) for v in value]
    return "out/seed%d/%s" % (seed, value[4:]) if isinstance(value, str) and value.startswith("out/") else value


def options(spec, argv, seed, **over):
    cfg = configure(spec, argv + [f"--{k}={v}" for k, v in over.items()])
    cfg = {k: reroot(v, seed) for k, v in cfg.items()}
    return {**cfg, "seed": seed} if "seed" in spec else cfg


def run_train(cfg):
    """Train, or resume, or skip: a checkpoint made with these options is reused."""
    path = os.path.join(cfg["out_dir"], "ckpt.pt")
    want, _, _ = train.check_config(cfg)
    if os.path.isfile(path):
        have = read_checkpoint(path, mode=cfg["mode"])
        same = all(have["config"].get(k) == v for k, v in want.items() if k not in ("init_from", "max_iters"))
        if cfg["mode"] == "cdlm":  # and distilled from the teacher that is there now
            teacher = read_checkpoint(os.path.join(cfg["teacher_dir"], "ckpt.pt"), mode="dlm", option="teacher_dir")
            same = same and have["teacher_hash"] == teacher["weights_hash"]
        if same and have["iter_num"] >= cfg["max_iters"] and have["config"]["max_iters"] == cfg["max_iters"]:
            print(f"{path}: done (iteration {have['iter_num']}), skipped")
            return
        if same and have["config"]["max_iters"] == cfg["max_iters"]:
            print(f"{path}: resuming at iteration {have['iter_num']}")
            cfg = {**cfg, "init_from": "resume"}
    train.train(cfg)


def teacher_steps(cfg, num_eval):
    """The teacher at 1, 2, 4 and 8 tokens per step (naive step cutting), on the test problems."""
    path = os.path.join(cfg["out_dir"], "steps.json")
    model, ckpt = load_model(os.path.join(cfg["out_dir"], "ckpt.pt"), pick_device(cfg["device"]), "dlm")
    if os.path.isfile(path):
        got = read_json(path, "")
        if got.get("weights_hash") == ckpt["weights_hash"] and got.get("num_eval") == num_eval:
            return got["accuracy"]
    data_dir, meta = checkpoint_data(ckpt)
    rows = load_split(data_dir, "test", meta)[:num_eval]
    bs = model.cfg.block_size
    acc = {str(bs // spb): sample.evaluate(model, meta, rows, sample.DecodeSettings(bs, steps_per_block=spb)).accuracy
           for spb in (bs, bs // 2, bs // 4, 1)}
    atomic_write_json(path, dict(weights_hash=ckpt["weights_hash"], num_eval=num_eval, accuracy=acc))
    return acc


def run_bench(cfg):
    """The benchmark, or its stored report when made from these checkpoints with these options."""
    if os.path.isfile(cfg["out_path"]):
        got = read_json(cfg["out_path"], "")
        if got.get("config") == cfg and got.get("checkpoints") == bench.checkpoint_hashes(cfg):
            print(f"{cfg['out_path']}: done, skipped")
            print(bench.table(got))
            return got
    return bench.run(cfg)


def pipeline(task, seed, num_eval):
    """Every stage for one seed; returns the headline figures."""
    t = TASKS[task]
    module = __import__(t["prepare"][0], fromlist=["prepare"])
    stage = lambda name: print(f"\n=== {task}, seed {seed}: {name} ===", flush=True)
    stage("data")
    module.prepare(configure(module.config, t["prepare"][1]))  # the same problems for every seed
    stage("teacher")
    teacher = options(train.config, t["teacher"], seed)
    run_train(teacher)
    stage("trajectories")
    collect.collect(options(collect.config, t["collect"], seed))
    stage("student")
    run_train(options(train.config, t["student"], seed))
    stage("AR baseline")
    run_train(options(train.config, t["ar"], seed))
    stage("teacher at fewer steps")
    steps = teacher_steps(teacher, num_eval)
    stage("benchmark")
    rep = run_bench(options(bench.config, t["bench"], seed, num_eval=num_eval))
    m = rep["methods"]
    return {"teacher, 1 token/step": m["dlm"]["accuracy"], "teacher, 2 tokens/step": steps["2"],
            "teacher, 1 step/block": steps[str(max(map(int, steps)))], "student (cdlm)": m["cdlm"]["accuracy"],
            "student NFE": m["cdlm"]["nfe"], "teacher NFE (dlm)": m["dlm"]["nfe"], "AR baseline": m["ar"]["accuracy"],
            "latency vs dlm": m["cdlm"]["speedup_latency_vs_dlm"],
            "throughput vs dlm": m["cdlm"]["speedup_throughput_vs_dlm"],
            "latency vs dlm_stop": m["cdlm"]["speedup_latency_vs_dlm_stop"],
            "throughput vs dlm_stop": m["cdlm"]["speedup_throughput_vs_dlm_stop"]}


def ablate(task, seeds, iters, num_eval):
    """Each ABLATIONS student from the preset teacher and trajectories (collected if missing), over the seeds."""
    t = TASKS[task]
    sets = [configure(collect.config, t[k]) for k in ("collect", "collect_t05")]  # greedy, and T=0.5 for one variant
    for c in sets:
        collect.collect(c)
    every = ",".join(c["out_dir"] for c in sets)
    out = {}
    for name, variant in ABLATIONS.items():
        for seed in seeds:
            argv = [a.replace("TRAJS", every) for a in variant]
            slug = name.replace(" ", "_").replace("=", "_")
            cfg = configure(train.config, t["student"] + argv + [f"--max_iters={iters}", f"--seed={seed}",
                                                                 f"--out_dir=out/ablate/{task}/{slug}/seed{seed}"])
            print(f"\n=== ablation {name}, seed {seed} ===", flush=True)
            run_train(cfg)
            model, ckpt, s = sample.load_for_decoding(os.path.join(cfg["out_dir"], "ckpt.pt"), {}, "cpu", "cdlm")
            data_dir, meta = checkpoint_data(ckpt)
            ev = sample.evaluate(model, meta, load_split(data_dir, "test", meta)[:num_eval], s)
            out.setdefault(name, []).append(dict(seed=seed, accuracy=ev.accuracy, nfe=ev.nfe))
    lines = [f"students of {iters} iterations, {num_eval} test problems, seeds {seeds}", "",
             "| student | exact match | NFE |", "|---|---|---|"]
    for name, runs in out.items():
        lines.append(f"| {name} | {spread([100 * r['accuracy'] for r in runs], '%')} | "
                     f"{spread([r['nfe'] for r in runs], '')} |")
    return out, "\n".join(lines)


def spread(xs, unit, digits=1):
    """mean, and min-max over seeds when there are several."""
    f = lambda x: f"{x:.{digits}f}{unit}"
    return f(statistics.mean(xs)) + (f" ({f(min(xs))}-{f(max(xs))})" if len(xs) > 1 else "")


def main(argv):
    cfg = configure(config, argv)
    t0 = time.time()
    if cfg["ablate"]:
        results, text = ablate(cfg["task"], cfg["seeds"], cfg["ablate_iters"], cfg["num_eval"])
        atomic_write_json(f"out/ablate/{cfg['task']}.json", results)
    else:
        runs = {s: pipeline(cfg["task"], s, cfg["num_eval"]) for s in cfg["seeds"]}
        lines = [f"{cfg['task']}: {len(runs)} seed(s) {cfg['seeds']}, {cfg['num_eval']} test problems, "
                 f"torch {torch.__version__}, {torch.get_num_threads()} threads", "",
                 "| | mean (min-max) |" + "".join(f" seed {s} |" for s in runs), "|---|---|" + "---|" * len(runs)]
        for key in next(iter(runs.values())):
            pct = "NFE" not in key and "vs" not in key
            xs = [100 * r[key] if pct else r[key] for r in runs.values()]
            unit = "%" if pct else "" if "NFE" in key else "x"
            lines.append(f"| {key} | {spread(xs, unit)} |" + "".join(f" {x:.1f}{unit} |" for x in xs))
        text = "\n".join(lines)
        atomic_write_json(f"out/demo_{cfg['task']}.json", dict(seeds=cfg["seeds"], runs=runs))
    print("\n" + text)
    print(f"\n(demo took {time.time() - t0:.0f} s)")


if __name__ == "__main__":
    if not os.path.isdir("config"):
        sys.exit("error: run demo.py from the repository's root (it reads config/)")
    run_main(main)
