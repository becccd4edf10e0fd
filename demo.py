"""
The whole pipeline in one command: data, teacher, trajectories, student, AR baseline, benchmark.

    python demo.py                                  # arithmetic (about 40 minutes on a 2-core CPU)
    python demo.py --task=wordproblems              # English word problems through a BPE tokenizer
    python demo.py --seeds=1337,2,3 --jobs=2        # the headline figures over seeds: mean and spread
    python demo.py --ablate --seeds=1337,2,3 --jobs=2   # the student-objective ablation (ABLATIONS)
    python demo.py --report                         # the README's tables, from the files in results/

It runs the repo's own scripts in-process with the presets in config/, so every stage can also be
run by hand. A stage is skipped when its output is there and was made with the same settings (a
second run only prints the tables); an interrupted stage resumes where it stopped. With seeds other
than the presets' own, outputs go to out/seed<N>/...; the problems stay the same for every seed, and
the AR baseline is trained once, at AR_SEED (its accuracy is not in the spread tables).

Every training stage runs at --threads CPU threads (1 by default, whatever OMP_NUM_THREADS says):
another count adds its sums in another order and is another run (runtime.cpu_threads). With
--jobs=N (2 by default) N independent training chains run side by side, each in its own process:
a seed's teacher, trajectories and student beside the AR baseline, or N seeds, or N ablation
students; the timed benchmarks come after, one at a time, alone, at the machine's threads. Each
finished run writes a small JSON under results/ (commit, machine, seed, thread count, weights
hashes, every figure): `--report` prints the README's tables from those files alone.
"""
import math
import os
import re
import statistics
import subprocess
import sys
import time
from typing import NamedTuple

import bench
import collect
import sample
import train
from configurator import SEED, Bool, CDLMError, Choice, Float, Int, List, Str, configure, refuse_unused, run_main
from data.common import METRICS, Each, atomic_write_json, check_fields, checkpoint_data, load_split, read_json, tasks
from data.trajectories import live_set_ids
from model import load_model, read_checkpoint
from runtime import THREADS, check_compiler, check_writable, code_version, cpu_threads, machine_info, pick_device

# every task's defaults: arithmetic's presets (a bench needs none)
PRESETS = dict(teacher="config/train_teacher.py", collect="config/collect.py", student="config/train_student.py",
               ar="config/train_ar.py", bench=None)


def task_stages(task):
    """
    Each stage's options for a task, as you would type them: the task's own preset
    config/<task>_<stage>.py where it has one, else the default preset with the task's paths
    (data/<task>, out/<task>/...). A new task needs only its data/<task>/prepare.py.
    """
    out, data = f"out/{task}", f"data/{task}"
    paths = dict(teacher=[f"--data_dir={data}", f"--out_dir={out}/teacher"],
                 collect=[f"--teacher_dir={out}/teacher", f"--out_dir={out}/trajectories"],
                 student=[f"--data_dir={data}", f"--out_dir={out}/student", f"--teacher_dir={out}/teacher",
                          f"--traj_dirs=['{out}/trajectories']"],
                 ar=[f"--data_dir={data}", f"--out_dir={out}/ar"],
                 bench=[f"--teacher_dir={out}/teacher", f"--student_dir={out}/student", f"--ar_dir={out}/ar",
                        f"--out_path={out}/bench.json"])
    st = {}
    for stage, preset in PRESETS.items():
        own = f"config/{task}_{stage}.py"
        st[stage] = [own] if os.path.isfile(own) else [preset] * (preset is not None) + \
            (paths[stage] if task != "arithmetic" else [])  # arithmetic's are the presets themselves
    st["prepare"] = (f"data.{task}.prepare", [])  # into its own directory, data/<task>
    return st


TASKS = {task: task_stages(task) for task in tasks()}
AR_SEED = 1337  # the presets' own seed; every seed's bench decodes with this one AR baseline
# student variants, each trained from the same teacher and trajectories for ablate_iters iterations
ABLATIONS = {
    "default": [],
    "y_star=random": ["--y_star=random"],
    "y_star=completion": ["--y_star=completion"],
    "y_star=literal": ["--y_star=literal"],
    **{f"no {loss.title}": [f"--w_{name}=0.0"] for name, loss in train.LOSSES.items() if loss.weight > 0},
    "dlm_noise=block": ["--dlm_noise=block"],
    "trajectories at T=0 and T=0.5": ["--traj_dirs=TRAJS"],
    "LoRA rank 16": ["--lora_rank=16", "--lora_alpha=32", "--learning_rate=3e-3", "--min_lr=3e-4"],
}
# the headline figures: (label, method or teacher steps, field); accuracies are shares, both metrics
# (teacher_steps' keys are tokens per step; 'block' is the largest, one step per block, whatever the block size)
HEADLINE = [(f"teacher, {what}: {m.split('_')[0]} answer", f"steps:{k}", m)
            for k, what in (("1", "1 token/step"), ("2", "2 tokens/step"), ("block", "one step per block"))
            for m in METRICS] + \
           [(f"student (cdlm): {m.split('_')[0]} answer", "cdlm", m) for m in METRICS] + \
           [("student NFE", "cdlm", "nfe"), ("teacher NFE (dlm)", "dlm", "nfe")] + \
           [(f"cdlm vs {b}: {w}{', compiled' * c}", "cdlm", "compiled." * c + f"speedup_{w}_vs_{b}")
            for c in (False, True) for b in ("dlm", "dlm_stop") for w in ("latency", "throughput")]

config = dict(
    task=Choice("arithmetic", *TASKS),
    seeds=List([1337], Int(None, SEED)),  # 1337: the presets' own seed and out/ directories
    jobs=Int(2, "[1, 8]"),             # training chains side by side (a seed's, the AR's); benches after
    threads=THREADS,                   # every training stage's CPU threads: part of a run's identity
    stage=Choice("all", "all", "train", "seed", "ar", "export"),  # 'train': all but the timed benches; the
                                        # jobs of --jobs: 'seed' (a seed's stages), 'ar' (AR alone); 'export':
                                        # seed 1337's checkpoints into ref/<task>/ (export_reference)
    ablate=Bool(False),
    ablate_iters=Int(300, "[1, inf)"),
    variants=List(list(ABLATIONS), Choice(None, *ABLATIONS)),  # the ablation's students
    num_eval=Int(500, "[1, inf)"),
    bench_methods=List(list(bench.METHODS), Choice(None, *bench.METHODS)),  # what each seed's bench times
    report=Bool(False),                # print the tables from results_dir and stop
    results_dir=Str("results"),
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


# -----------------------------------------------------------------------------
# the results layout: results_dir/<task>/seed<N>.json, one per seed (pipeline), and
# results_dir/<task>/ablation/<variant>_seed<N>.json, one per ablation student and seed (ablate).
# Nothing else there is read; a file named like one of these that is not one is refused.

def seed_path(results_dir, task, seed):
    return os.path.join(results_dir, task, f"seed{seed}.json")


def slug(variant):
    return variant.replace(" ", "_").replace("=", "_")


def ablation_path(results_dir, task, variant, seed):
    return os.path.join(results_dir, task, "ablation", f"{slug(variant)}_seed{seed}.json")


SHARE, COUNT = Float(0.0, "[0, 1]"), Float(0.0, "[0, inf)")
SCORES = dict(final_acc=SHARE, whole_acc=SHARE, nfe=COUNT)
# what the report and `against` read of a seed's file; other fields are kept, not read
SPEEDUPS = [field.split(".") for _, _, field in HEADLINE if "speedup" in field]  # ['compiled', 'speedup_...'] or one
SEED_FILE = {
    "task": Str(""), "seed": Int(0, SEED), "commit": Str(None), "threads?": THREADS, "num_eval": Int(1, "[1, inf)"),
    "ar_seed": Int(0, SEED), "machine": {"cpu": Str(""), "cores": Int(1, "[1, inf)"), "torch": Str(""), "isa?": Str("")},
    "teacher_steps": Each(SCORES, r"[1-9][0-9]*", at_least=1), "bench_settings": dict(chance=dict(final_acc=SHARE, whole_acc=SHARE)),
    "bench_machine": dict(threads=Int(1, "[1, inf)")), "weights?": Each(Str("")),
    "bench": Each({**SCORES, **{f"{f[0]}?": COUNT for f in SPEEDUPS if len(f) == 1},
                   "compiled?": {f"{f[1]}?": COUNT for f in SPEEDUPS if len(f) == 2}})}
ABLATION_FILE = dict(task=Str(""), variant=Str(""), seed=Int(0, SEED), iters=Int(1, "[1, inf)"),
                     num_eval=Int(1, "[1, inf)"), **SCORES)


class Results(NamedTuple):
    seeds: list      # (path, record), by seed
    ablation: list   # (path, record), by file name


def read_results(task, results_dir):
    """The files of results_dir/<task> that the layout names, each checked against its name and
    its schema; a stray or duplicate file is one line naming it (the report would count it)."""
    here = os.path.join(results_dir, task)
    fix = f"restore it (git checkout) or move it out of {here}/: the report reads every file of its layout"
    names = lambda d: sorted(n for n in (os.listdir(d) if os.path.isdir(d) else []) if n.endswith(".json"))
    seeds = []
    for name in (n for n in names(here) if n.startswith("seed")):
        path, m = os.path.join(here, name), re.fullmatch(r"seed(0|[1-9][0-9]*)\.json", name)
        if not m:
            raise CDLMError(f"{path}: not a file of the results layout (seed<N>.json); {fix}")
        r = check_fields(read_json(path, fix), SEED_FILE, path, fix)
        if (r["task"], r["seed"]) != (task, int(m[1])):
            raise CDLMError(f"{path}: holds {r['task']} seed {r['seed']}, not {task} seed {m[1]} as its place says; {fix}")
        seeds.append((path, r))
    ablation, seen = [], {}
    for name in names(os.path.join(here, "ablation")):
        path = os.path.join(here, "ablation", name)
        r = check_fields(read_json(path, fix), ABLATION_FILE, path, fix)
        if r["task"] != task or os.path.normpath(path) != os.path.normpath(ablation_path(results_dir, task, r["variant"], r["seed"])):
            raise CDLMError(f"{path}: holds {r['task']} variant {r['variant']!r} seed {r['seed']}, whose file is "
                            f"{ablation_path(results_dir, r['task'], r['variant'], r['seed'])}; {fix}")
        if (r["variant"], r["seed"]) in seen:
            raise CDLMError(f"{path}: variant {r['variant']!r} seed {r['seed']} again (also in "
                            f"{seen[r['variant'], r['seed']]}); {fix}")
        seen[r["variant"], r["seed"]] = path
        ablation.append((path, r))
    return Results(sorted(seeds, key=lambda pr: pr[1]["seed"]), ablation)


def run_train(cfg):
    """Train, or resume, or skip: a checkpoint made with these options is reused; else it says why not."""
    path = os.path.join(cfg["out_dir"], "ckpt.pt")
    want, _, _ = train.check_config(cfg)  # data_dir as checkpoints store it (data.common.checkout_path)
    if os.path.isfile(path):
        have = read_checkpoint(path, mode=cfg["mode"])
        # an option newer than the checkpoint counts as its default (what the checkpoint was made with)
        other = [f"{k}={have['config'].get(k, train.config[k].default)!r}" for k, v in want.items()
                 if k != "init_from" and have["config"].get(k, train.config[k].default) != v]
        if cfg["mode"] == "cdlm":  # and distilled from the teacher that is there now
            teacher = read_checkpoint(os.path.join(cfg["teacher_dir"], "ckpt.pt"), mode="dlm", option="teacher_dir")
            other += ["another teacher"] * (have["teacher_hash"] != teacher["weights_hash"])
            # and on the trajectory sets there now (a checkpoint older than this record: taken as is)
            other += ["other trajectory sets"] * (have.get("trajectories", None) not in (None, live_set_ids(cfg["traj_dirs"])))
        if not other and have["iter_num"] >= cfg["max_iters"]:
            print(f"{path}: done (iteration {have['iter_num']}), skipped")
            return
        if not other:
            print(f"{path}: resuming at iteration {have['iter_num']}")
            cfg = {**cfg, "init_from": "resume"}
        else:
            print(f"{path}: made with {', '.join(other)}; trained again")
    train.train(cfg)


def scores(ev):
    return {**{m: getattr(ev, m) for m in METRICS}, "nfe": ev.nfe, "chance": ev.chance}


def teacher_steps(cfg, num_eval):
    """The teacher at 1, 2, 4 and 8 tokens per step (naive step cutting), on the test problems, at
    the training stages' thread count (so the figures do not depend on --jobs)."""
    path = os.path.join(cfg["out_dir"], "steps.json")
    model, ckpt = load_model(os.path.join(cfg["out_dir"], "ckpt.pt"), pick_device(cfg["device"]), "dlm")
    if os.path.isfile(path):
        got = read_json(path, "")
        if got.get("weights_hash") == ckpt["weights_hash"] and got.get("num_eval") == num_eval \
                and got.get("metrics") == list(METRICS) and got.get("threads") == cfg["threads"]:
            return got["steps"]
    data_dir, meta = checkpoint_data(ckpt)
    rows = load_split(data_dir, "test", meta)[:num_eval]
    bs = model.cfg.block_size
    with cpu_threads(cfg["threads"]):
        steps = {str(bs // spb): scores(sample.evaluate(model, meta, rows, sample.DecodeSettings(bs, steps_per_block=spb)))
                 for spb in (bs, bs // 2, bs // 4, 1)}
    atomic_write_json(path, dict(weights_hash=ckpt["weights_hash"], num_eval=num_eval, metrics=list(METRICS),
                                 threads=cfg["threads"], steps=steps))
    return steps


def run_bench(cfg):
    """The benchmark, or its stored report when made from these checkpoints with these options."""
    if os.path.isfile(cfg["out_path"]):
        got = read_json(cfg["out_path"], "")
        if got.get("config") == cfg and got.get("checkpoints") == bench.checkpoint_hashes(cfg):
            print(f"{cfg['out_path']}: done, skipped")
            print(bench.table(got))
            return got
    return bench.run(cfg)


def train_stages(task, seed, num_eval, threads):
    """Every untimed stage for one seed, at `threads` CPU threads: data, teacher, trajectories,
    student, and the teacher at fewer steps. Returns the latter."""
    t = TASKS[task]
    module = __import__(t["prepare"][0], fromlist=["prepare"])
    stage = lambda name: print(f"\n=== {task}, seed {seed}: {name} ===", flush=True)
    stage("data")
    module.prepare(configure(module.config, t["prepare"][1]))  # the same problems for every seed
    stage("teacher")
    teacher = options(train.config, t["teacher"], seed, threads=threads)
    run_train(teacher)
    stage("trajectories")
    collect.collect(options(collect.config, t["collect"], seed, threads=threads))
    stage("student")
    run_train(options(train.config, t["student"], seed, threads=threads))
    stage("teacher at fewer steps")
    return teacher_steps(teacher, num_eval)


def train_ar(task, threads):
    """The AR baseline, once, with the preset's own options (seed AR_SEED) whatever the seeds."""
    print(f"\n=== {task}: AR baseline (seed {AR_SEED}) ===", flush=True)
    run_train(configure(train.config, TASKS[task]["ar"] + [f"--seed={AR_SEED}", f"--threads={threads}"]))


def pipeline(task, seed, num_eval, threads, results_dir, methods=tuple(bench.METHODS)):
    """Every stage for one seed, the timed bench last; writes and returns its results file."""
    steps = train_stages(task, seed, num_eval, threads)
    print(f"\n=== {task}, seed {seed}: benchmark ===", flush=True)
    ar_dir = configure(train.config, TASKS[task]["ar"])["out_dir"]  # AR_SEED's, for every seed
    rep = run_bench({**options(bench.config, TASKS[task]["bench"], seed, num_eval=num_eval), "ar_dir": ar_dir,
                     "methods": list(methods)})
    out = dict(task=task, seed=seed, commit=rep.get("commit"), machine=machine_info(), threads=threads,
               weights=rep["checkpoints"], num_eval=num_eval, ar_seed=AR_SEED, teacher_steps=steps,
               bench=rep["methods"], bench_settings=rep["settings"], bench_machine=rep["machine"])
    path = seed_path(results_dir, task, seed)
    others = [{**r, "path": p} for p, r in read_results(task, results_dir).seeds]
    if others:  # before this run replaces its seed's file (git diff shows what moved; git checkout restores it)
        print("\n" + against(out, others))
    atomic_write_json(path, out)
    return out


def run_jobs(argvs, jobs, log_dir):
    """demo.py with each argv in its own process, `jobs` at a time, one thread each; logs in log_dir."""
    os.makedirs(log_dir, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pending, running = list(argvs), []
    while pending or running:
        while pending and len(running) < jobs:
            argv = pending.pop(0)
            name = re.sub(r"[^A-Za-z0-9.-]+", "_", " ".join(a.lstrip("-").replace("=", "-") for a in argv))
            log = os.path.join(log_dir, name[-120:] + ".log")  # the tail tells jobs apart
            print(f"started: python demo.py {' '.join(argv)}  (log: {log})", flush=True)
            with open(log, "w") as f:  # the child holds its own copy of the file
                running.append((subprocess.Popen([sys.executable, os.path.abspath(__file__), *argv], env=env,
                                                 stdout=f, stderr=subprocess.STDOUT), log))
        time.sleep(1)
        for p, log in list(running):
            if p.poll() is not None:
                running.remove((p, log))
                if p.returncode:
                    for q, _ in running:
                        q.terminate()
                    raise CDLMError(f"a job failed (exit {p.returncode}): see {log}")


def ablate(cfg):
    """Each chosen ABLATIONS student from the preset teacher and trajectories (collected if missing),
    over the seeds; each student's scores go to results/<task>/ablation/."""
    task, t = cfg["task"], TASKS[cfg["task"]]
    greedy = configure(collect.config, t["collect"])  # and a set at T=0.5 beside it, for one variant
    sets = [greedy, configure(collect.config, t["collect"] + ["--temperature=0.5", f"--out_dir={greedy['out_dir']}_t05"])]
    for c in sets:
        collect.collect(c)
    every = ",".join(c["out_dir"] for c in sets)
    todo = [(name, seed) for name in cfg["variants"] for seed in cfg["seeds"]]
    if cfg["jobs"] > 1:
        common = [f"--task={task}", "--ablate", f"--ablate_iters={cfg['ablate_iters']}", f"--num_eval={cfg['num_eval']}",
                  f"--results_dir={cfg['results_dir']}", f"--threads={cfg['threads']}"]
        run_jobs([common + [f"--variants={name}", f"--seeds={seed}"] for name, seed in todo], cfg["jobs"], "out/logs")
        return
    for name, seed in todo:
        argv = [a.replace("TRAJS", every) for a in ABLATIONS[name]]
        tcfg = configure(train.config, t["student"] + argv + [f"--max_iters={cfg['ablate_iters']}", f"--seed={seed}",
                                                              f"--out_dir=out/ablate/{task}/{slug(name)}/seed{seed}",
                                                              f"--threads={cfg['threads']}"])
        print(f"\n=== ablation {name}, seed {seed} ===", flush=True)
        commit = code_version()  # the code that trains this variant
        run_train(tcfg)
        model, ckpt, s = sample.load_for_decoding(os.path.join(tcfg["out_dir"], "ckpt.pt"), {}, "cpu", "cdlm")
        data_dir, meta = checkpoint_data(ckpt)
        with cpu_threads(cfg["threads"]):
            ev = sample.evaluate(model, meta, load_split(data_dir, "test", meta)[:cfg["num_eval"]], s)
        atomic_write_json(ablation_path(cfg["results_dir"], task, name, seed),
                          dict(task=task, variant=name, seed=seed, iters=cfg["ablate_iters"], num_eval=cfg["num_eval"],
                               commit=commit, machine=machine_info(), threads=cfg["threads"],
                               weights_hash=ckpt["weights_hash"],
                               **scores(ev)))


def spread(xs, unit, digits=1):
    """mean, and min-max over seeds when there are several."""
    f = lambda x: f"{x:.{digits}f}{unit}"
    return f(statistics.mean(xs)) + (f" ({f(min(xs))}-{f(max(xs))})" if len(xs) > 1 else "")


def headline(run, source, field):
    """One figure of a results file, or None where that run did not measure it."""
    if source.startswith("steps:"):
        steps = run["teacher_steps"]
        got = steps.get(max(steps, key=int) if source == "steps:block" else source[6:])
    else:
        got = run["bench"].get(source, {})
    for key in field.split("."):  # 'compiled.speedup_latency_vs_dlm': the compiled timings' ratio
        got = got.get(key) if isinstance(got, dict) else None
    return got


def comparable(run, other):
    """Why a committed run's figures cannot be compared with this one's, or None: training at
    another thread count or on another torch is another run (runtime.cpu_threads)."""
    if other.get("threads") != run["threads"]:
        return f"trained at {other.get('threads')} thread(s), this run at {run['threads']}"
    if other["machine"]["torch"] != run["machine"]["torch"]:
        return f"trained on torch {other['machine']['torch']}, this run on {run['machine']['torch']}"
    isa = other["machine"].get("isa"), run["machine"].get("isa")
    if None not in isa and isa[0] != isa[1]:  # another CPU kernel rounds otherwise: another run
        return f"trained with {isa[0]} CPU kernels, this run with {isa[1]}"
    return None


def against(run, others):
    """Your run's headline figures against the range of the committed results files (the README's
    tables) trained like it: each inside or outside the seeds' min-max, and equal where it is
    the same seed. Timing ratios move with the machine."""
    reasons = [(o, comparable(run, o)) for o in others]
    lines = [f"{o.get('path', 'seed %d' % o['seed'])}: not compared, {why}" for o, why in reasons if why]
    others = [o for o, why in reasons if not why]
    same = next((o for o in others if o["seed"] == run["seed"]), None)
    lines += [f"{o.get('path', 'seed %d' % o['seed'])}: its CPU instruction set is not recorded; a run on another "
              f"(AVX2 against AVX512) is another run, whatever the thread count" for o in others
              if "isa" not in o["machine"]]
    if not others:
        return "\n".join(lines + ["no committed result file was trained like this run: nothing to compare"])
    lines.append(f"your seed {run['seed']} against the {len(others)} committed result file(s) trained like it "
                 f"(the README's ranges{'; =: equal to the committed seed ' + str(run['seed']) if same else ''}):")
    for label, source, field in HEADLINE:
        xs = [headline(r, source, field) for r in others]
        mine = headline(run, source, field)
        if mine is None or not xs or None in xs:
            continue
        scale, unit = (100, "%") if field in METRICS else (1, "x" if "speedup" in field else "")
        lo, hi = min(xs), max(xs)
        where = "inside" if lo <= mine <= hi else f"outside, by {scale * min(abs(mine - lo), abs(mine - hi)):.1f}{unit}"
        if same is not None and "speedup" not in field:  # accuracies and passes reproduce; timings do not
            where += ", =" if headline(same, source, field) == mine else f", committed seed {run['seed']}: " \
                     f"{scale * headline(same, source, field):.1f}{unit}"
        lines.append(f"  {label}: {scale * mine:.1f}{unit}, range {scale * lo:.1f}{unit}-{scale * hi:.1f}{unit}: {where}")
    for role, h in (same or {}).get("weights", {}).items():
        mine = run["weights"].get(role)
        lines.append(f"  {role}'s weights: {mine}, committed {h}: {'=' if mine == h else 'another run'}")
    return "\n".join(lines)


# the reference checkpoints shipped in ref/<task>/ (python demo.py --stage=export): the seed-1337
# pipeline's three, and, where a task has one, a teacher made by a preset of its own
REFERENCE_EXTRA = {"arithmetic": {"teacher_infill": ["config/train_teacher.py", "config/train_teacher_infill.py"]}}


def export_reference(task, dest="ref"):
    """Weights only (no optimizer or RNG state), the data path the task's presets name (relative to
    the repository's root; it must hold the checkpoint's very data), and a manifest with the commit, the commands and the hashes: small checkpoints that
    every README command can read in a fresh clone, after `python -m data.<task>.prepare`."""
    from model import CKPT_KEYS, save_checkpoint
    t = TASKS[task]
    demo = "python demo.py" + (f" --task={task}" if task != "arithmetic" else "")
    # name -> (its options, the command that makes it)
    sources = {**{role: (t[role], demo) for role in ("teacher", "student", "ar")},
               **{name: (argv, "python train.py " + " ".join(argv)) for name, argv in REFERENCE_EXTRA.get(task, {}).items()}}
    manifest = dict(task=task, exported_at=code_version(), made_by=demo, checkpoints={})
    ckpts = {}
    for name, (argv, made_by) in sources.items():
        cfg = configure(train.config, argv)
        path = os.path.join(cfg["out_dir"], "ckpt.pt")
        if not os.path.isfile(path):
            how = made_by if made_by != demo else f"{demo} --stage=train"
            raise CDLMError(f"no checkpoint at {path} to export: make it first ({how})")
        ckpt = read_checkpoint(path)
        data_dir = os.path.relpath(cfg["data_dir"])  # the task's own place, as its presets name it
        checkpoint_data(ckpt, data_dir, path)  # which must hold the very data the checkpoint learned
        keep = {k: ckpt[k] for k in CKPT_KEYS + ("teacher_hash", "lora_state") if k in ckpt}
        keep["config"] = {**ckpt["config"], "data_dir": data_dir, "out_dir": os.path.join(dest, task, name)}
        ckpts[name] = keep
        manifest["checkpoints"][name] = dict(weights_hash=ckpt["weights_hash"], iter_num=ckpt["iter_num"], made_by=made_by)
    if os.path.exists(os.path.join(dest, task, "MANIFEST.json")):  # a crash mid-way leaves no manifest, not a wrong one
        os.remove(os.path.join(dest, task, "MANIFEST.json"))
    for name, ckpt in ckpts.items():
        out = os.path.join(dest, task, name, "ckpt.pt")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        save_checkpoint(ckpt, out)
        manifest["checkpoints"][name]["bytes"] = os.path.getsize(out)
        print(f"wrote {out} ({os.path.getsize(out) / 1e6:.1f} MB)")
    atomic_write_json(os.path.join(dest, task, "MANIFEST.json"), manifest)


def report(task, results_dir):
    """The README's tables, from the results files alone: headline figures over seeds, AR, ablation."""
    files = read_results(task, results_dir)
    runs = [r for _, r in files.seeds]
    lines = []
    if runs:
        r0 = runs[0]
        n, chance = r0["num_eval"], r0["bench_settings"]["chance"]
        at = lambda r: f"{r['threads']} thread(s)" if r.get("threads") else "an unrecorded thread count"
        trained = "trained at " + (at(r0) if len({at(r) for r in runs}) == 1 else
                                   ", ".join(f"{at(r)} (seed {r['seed']})" for r in runs))
        lines += [f"{task}: {len(runs)} seed(s) {[r['seed'] for r in runs]}, {n} test problems; {trained}; accuracy on "
                  f"{r0['machine']['cpu']} ({r0['machine']['cores']} cores), timings at {r0['bench_machine']['threads']} "
                  f"threads, torch {r0['machine']['torch']}; commits {', '.join(sorted({str(r['commit']) for r in runs}))}",
                  f"a guess scores {100 * chance['final_acc']:.1f}% (final answer) and {100 * chance['whole_acc']:.1f}% "
                  f"(whole answer); at n={n} one standard error is {100 * math.sqrt(0.5 * 0.5 / n):.1f} points at 50%, "
                  f"{100 * math.sqrt(0.9 * 0.1 / n):.1f} at 90%, {100 * math.sqrt(0.99 * 0.01 / n):.2f} at 99%", "",
                  "| | mean (min-max) |" + "".join(f" seed {r['seed']} |" for r in runs), "|---|---|" + "---|" * len(runs)]
        for label, source, field in HEADLINE:
            if any(headline(r, source, field) is None for r in runs):
                continue
            pct = field in METRICS
            xs = [(100 if pct else 1) * headline(r, source, field) for r in runs]
            unit = "%" if pct else "x" if "speedup" in field else ""
            lines.append(f"| {label} | {spread(xs, unit)} |" + "".join(f" {x:.1f}{unit} |" for x in xs))
        ar = next((r["bench"]["ar"] for r in runs if "ar" in r["bench"]), None)
        if ar:
            lines += ["", f"AR baseline (trained once, seed {r0['ar_seed']}): final answer {100 * ar['final_acc']:.1f}%, "
                          f"whole answer {100 * ar['whole_acc']:.1f}%, {ar['nfe']:.1f} NFE"]
    abl = [r for _, r in files.ablation]
    if abl:
        by = {}
        for r in abl:
            by.setdefault(r["variant"], []).append(r)
        lines += ["", f"ablation: students of {abl[0]['iters']} iterations, {abl[0]['num_eval']} test problems, "
                      f"seeds {sorted({r['seed'] for r in abl})}", "",
                  "| student | final answer | whole answer | NFE | seeds |", "|---|---|---|---|---|"]
        for name in [v for v in ABLATIONS if v in by] + [v for v in by if v not in ABLATIONS]:
            rs = by[name]
            lines.append(f"| {name} | {spread([100 * r['final_acc'] for r in rs], '%')} | "
                         f"{spread([100 * r['whole_acc'] for r in rs], '%')} | {spread([r['nfe'] for r in rs], '', 2)} | "
                         f"{len(rs)} |")
    return "\n".join(lines) if lines else f"no results for {task} in {results_dir}/ yet"


def main(argv):
    cfg = configure(config, argv)
    t0 = time.time()
    task, seeds = cfg["task"], cfg["seeds"]
    if cfg["report"]:
        refuse_unused(cfg, {k: "with --report: it prints the tables from the files in results_dir alone"
                            for k in config if k not in ("task", "results_dir", "report")})
    read_results(task, cfg["results_dir"])  # a stray or damaged file is refused before any work
    if not cfg["report"]:
        check_writable(os.path.join(cfg["results_dir"], task, "ablation" if cfg["ablate"] else ""), "option results_dir")
        if cfg["stage"] == "all" and not cfg["ablate"]:  # the benches come last: their compiler is checked first
            b = configure(bench.config, TASKS[task]["bench"])
            if b["compile"] != "off":
                check_compiler(pick_device(b["device"]), f"the benchmark's option compile={b['compile']!r} "
                                                         f"(demo.py --stage=train runs every stage but the benches)")
        module = __import__(TASKS[task]["prepare"][0], fromlist=["prepare"])
        module.prepare(configure(module.config, TASKS[task]["prepare"][1]))  # before any job reads it
        if cfg["ablate"]:
            ablate(cfg)
        elif cfg["stage"] == "ar":
            return train_ar(task, cfg["threads"])
        elif cfg["stage"] == "export":
            return export_reference(task)
        elif cfg["stage"] == "seed":
            for s in seeds:
                train_stages(task, s, cfg["num_eval"], cfg["threads"])
            return
        else:
            if cfg["jobs"] > 1:  # the chains side by side; the in-process stages below then find them done
                common = [f"--task={task}", f"--threads={cfg['threads']}"]
                run_jobs([common + [f"--seeds={s}", "--stage=seed", f"--num_eval={cfg['num_eval']}"] for s in seeds]
                         + [common + ["--stage=ar"]], cfg["jobs"], "out/logs")
            train_ar(task, cfg["threads"])  # each stage is skipped when its output is there
            for s in seeds:
                if cfg["stage"] == "train":
                    train_stages(task, s, cfg["num_eval"], cfg["threads"])
                else:
                    pipeline(task, s, cfg["num_eval"], cfg["threads"], cfg["results_dir"], cfg["bench_methods"])
    print("\n" + report(task, cfg["results_dir"]))
    if not cfg["report"]:
        print(f"\n(demo took {time.time() - t0:.0f} s)")


def entry(argv):
    if not os.path.isdir("config"):
        raise CDLMError("run demo.py from the repository's root (it reads config/)")
    main(argv)


if __name__ == "__main__":
    run_main(entry)
