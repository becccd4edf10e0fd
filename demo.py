"""
The whole pipeline in one command: data, teacher, trajectories, student, AR baseline, benchmark.

    python demo.py                                  # arithmetic (about an hour on a 2-core CPU)
    python demo.py --task=wordproblems              # English word problems through a BPE tokenizer
    python demo.py --seeds=1337,2,3 --jobs=2        # the headline figures over seeds: mean and spread
    python demo.py --ablate --seeds=1337,2,3 --jobs=2   # the student-objective ablation (ABLATIONS)
    python demo.py --report                         # RESULTS.md's tables, from the files in results/

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
hashes, every figure; the layout and the tables: results.py): `--report` prints RESULTS.md's tables
from those files alone.
"""
import os
import re
import subprocess
import sys
import time

import bench
import collect
import sample
import train
from checkpoint import load_model, read_checkpoint
from configurator import SEED, Bool, CDLMError, Choice, Int, List, Str, configure, refuse_unused, run_main, with_options
from data.common import METRICS, atomic_write_json, checkpoint_data, load_split, read_json, tasks
from data.trajectories import live_set_ids
from render import PNG, check_matplotlib, frontier_png
from results import PRESET_SEED, ablation_path, against, read_frontier, read_results, report, seed_path, slug, teacher_steps_per_block
from files import check_file_writable, check_output, check_writable, lock, refuse_inside, refuse_overlap
from runtime import THREADS, check_compiler, code_version, cpu_threads, machine_info, pick_device
from tables import table

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
AR_SEED = PRESET_SEED  # every seed's bench decodes with this one AR baseline
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
config = dict(
    task=Choice("arithmetic", *TASKS),
    seeds=List([1337], Int(None, SEED), unique=True),  # 1337: the presets' own seed and out/ directories
    jobs=Int(2, "[1, 8]"),             # training chains side by side (a seed's, the AR's); benches after
    threads=THREADS,                   # every training stage's CPU threads: part of a run's identity
    stage=Choice("all", "all", "train", "seed", "ar", "export"),  # 'train': all but the timed benches; the
                                        # jobs of --jobs: 'seed' (a seed's stages), 'ar' (AR alone); 'export':
                                        # seed 1337's checkpoints into ref/<task>/ (export_reference)
    ablate=Bool(False),
    ablate_iters=Int(300, "[1, inf)"),
    variants=List(list(ABLATIONS), Choice(None, *ABLATIONS), unique=True),  # the ablation's students
    num_eval=Int(500, "[1, inf)"),
    bench_methods=List(list(bench.METHODS), Choice(None, *bench.METHODS), unique=True),  # what each seed's bench times
    report=Bool(False),                # print the tables from results_dir and stop
    png=Str(None),                     # with --report: also draw the student's frontier here (needs matplotlib)
    results_dir=Str("results"),
)


def reroot(value, seed):
    """out/... -> out/seed<N>/... for any seed but the presets' own."""
    if seed == PRESET_SEED:
        return value
    if isinstance(value, list):
        return [reroot(v, seed) for v in value]
    return "out/seed%d/%s" % (seed, value[4:]) if isinstance(value, str) and value.startswith("out/") else value


def options(spec, argv, seed, **over):
    cfg = configure(spec, with_options(argv, *(f"--{k}={v}" for k, v in over.items())))
    cfg = {k: reroot(v, seed) for k, v in cfg.items()}
    return {**cfg, "seed": seed} if "seed" in spec else cfg


# -----------------------------------------------------------------------------
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
    train.train(cfg, replace=os.path.isfile(path))  # a checkpoint of other options: it said why


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
                 for spb in teacher_steps_per_block(bs)}
    atomic_write_json(path, dict(weights_hash=ckpt["weights_hash"], num_eval=num_eval, metrics=list(METRICS),
                                 threads=cfg["threads"], steps=steps))
    return steps


def run_bench(cfg):
    """The benchmark, or its stored report when made from these checkpoints with these options."""
    if os.path.isfile(cfg["out_path"]):
        got = read_json(cfg["out_path"], "")
        if got.get("config") == cfg and got.get("checkpoints") == bench.checkpoint_hashes(cfg):
            print(f"{cfg['out_path']}: done, skipped")
            print(table(got))
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
    collect.collect(options(collect.config, t["collect"], seed, threads=threads), replace=True)  # a new teacher's
    stage("student")
    run_train(options(train.config, t["student"], seed, threads=threads))
    stage("teacher at fewer steps")
    return teacher_steps(teacher, num_eval)


def train_ar(task, threads):
    """The AR baseline, once, with the preset's own options (seed AR_SEED) whatever the seeds."""
    print(f"\n=== {task}: AR baseline (seed {AR_SEED}) ===", flush=True)
    run_train(configure(train.config, with_options(TASKS[task]["ar"], f"--seed={AR_SEED}", f"--threads={threads}")))


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
    others = [{**r, "path": p} for p, r in read_results(task, results_dir, ABLATIONS, bench.settings_of).seeds]
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
    sets = [greedy, configure(collect.config,
                              with_options(t["collect"], "--temperature=0.5", f"--out_dir={greedy['out_dir']}_t05"))]
    for c in sets:
        collect.collect(c, replace=True)
    every = ",".join(c["out_dir"] for c in sets)
    todo = [(name, seed) for name in cfg["variants"] for seed in cfg["seeds"]]
    if cfg["jobs"] > 1:
        common = [f"--task={task}", "--ablate", f"--ablate_iters={cfg['ablate_iters']}", f"--num_eval={cfg['num_eval']}",
                  f"--results_dir={cfg['results_dir']}", f"--threads={cfg['threads']}"]
        run_jobs([common + [f"--variants={name}", f"--seeds={seed}"] for name, seed in todo], cfg["jobs"], "out/logs")
        return
    for name, seed in todo:
        argv = [a.replace("TRAJS", every) for a in ABLATIONS[name]]
        tcfg = configure(train.config, with_options(t["student"], *argv, f"--max_iters={cfg['ablate_iters']}",
                                                    f"--seed={seed}", f"--out_dir=out/ablate/{task}/{slug(name)}/seed{seed}",
                                                    f"--threads={cfg['threads']}"))
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


# the reference checkpoints shipped in ref/<task>/ (python demo.py --stage=export): the seed-1337
# pipeline's three, and, where a task has one, a teacher made by a preset of its own
REFERENCE_EXTRA = {"arithmetic": {"teacher_infill": ["config/train_teacher.py", "config/train_teacher_infill.py"]}}


def export_reference(task, dest="ref"):
    """Weights only (no optimizer or RNG state), the data path the task's presets name (relative to
    the repository's root; it must hold the checkpoint's very data), and a manifest with the commit, the commands and the hashes: small checkpoints that
    every README command can read in a fresh clone, after `python -m data.<task>.prepare`."""
    from checkpoint import CKPT_KEYS, save_checkpoint
    t = TASKS[task]
    demo = "python demo.py" + (f" --task={task}" if task != "arithmetic" else "")
    # name -> (its options, the command that makes it)
    sources = {**{role: (t[role], demo) for role in ("teacher", "student", "ar")},
               **{name: (argv, "python train.py " + " ".join(argv)) for name, argv in REFERENCE_EXTRA.get(task, {}).items()}}
    manifest = dict(task=task, exported_at=code_version(), made_by=demo, checkpoints={})
    cfgs = {name: configure(train.config, argv) for name, (argv, _) in sources.items()}
    paths = {name: os.path.join(cfg["out_dir"], "ckpt.pt") for name, cfg in cfgs.items()}
    missing = [f"{paths[name]} ({made_by if made_by != demo else demo + ' --stage=train'})"
               for name, (_, made_by) in sources.items() if not os.path.isfile(paths[name])]
    if missing:  # before reading any of them
        raise CDLMError(f"no checkpoint to export at {', '.join(missing)}: make them first")
    ckpts = {}
    for name, (_, made_by) in sources.items():
        cfg = cfgs[name]
        ckpt = read_checkpoint(paths[name], mode=cfg["mode"])  # the kind its place in ref/ holds
        if ckpt.get("teacher_hash") is not None and ckpt["teacher_hash"] != ckpts["teacher"]["weights_hash"]:
            raise CDLMError(f"{paths[name]} was distilled from another teacher than {paths['teacher']}: export a "
                            f"student with its own teacher")
        data_dir = os.path.relpath(cfg["data_dir"])  # the task's own place, as its presets name it
        checkpoint_data(ckpt, data_dir, paths[name])  # which must hold the very data the checkpoint learned
        keep = {k: ckpt[k] for k in CKPT_KEYS + ("teacher_hash", "lora_state") if k in ckpt}
        keep["config"] = {**ckpt["config"], "data_dir": data_dir, "out_dir": os.path.join(dest, task, name)}
        ckpts[name] = keep
        manifest["checkpoints"][name] = dict(weights_hash=ckpt["weights_hash"], iter_num=ckpt["iter_num"], made_by=made_by)
    manifest |= manifest_notes(os.path.join(dest, task, "MANIFEST.json"), manifest)
    if os.path.exists(os.path.join(dest, task, "MANIFEST.json")):  # a crash mid-way leaves no manifest, not a wrong one
        os.remove(os.path.join(dest, task, "MANIFEST.json"))
    for name, ckpt in ckpts.items():
        out = os.path.join(dest, task, name, "ckpt.pt")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        save_checkpoint(ckpt, out)
        manifest["checkpoints"][name]["bytes"] = os.path.getsize(out)
        print(f"wrote {out} ({os.path.getsize(out) / 1e6:.1f} MB)")
    atomic_write_json(os.path.join(dest, task, "MANIFEST.json"), manifest)


def manifest_notes(path, manifest):
    """The fields of the manifest at path that export does not write (how the weights were trained, the
    data): carried while it lists the very weights exported; otherwise they describe others, and go."""
    try:
        old = read_json(path, "")
    except CDLMError:  # none, or a damaged one: the export writes it anew
        return {}
    if not isinstance(old, dict) or not isinstance(old.get("checkpoints"), dict):
        return {}
    notes = {k: v for k, v in old.items() if k not in manifest}
    hashes = lambda m: {n: c.get("weights_hash") if isinstance(c, dict) else None for n, c in m["checkpoints"].items()}
    if notes and hashes(old) != hashes(manifest):
        print(f"{path}: {', '.join(notes)} described the weights replaced: not carried, write them again")
        return {}
    return notes


def main(argv):
    cfg = configure(config, argv)
    t0 = time.time()
    task, seeds = cfg["task"], cfg["seeds"]
    if cfg["report"]:
        refuse_unused(cfg, {k: "with --report: it prints the tables from the files in results_dir alone"
                            for k in config if k not in ("task", "results_dir", "report", "png")})
    check_png(cfg)
    read_results(task, cfg["results_dir"], ABLATIONS, bench.settings_of)  # a stray or damaged file: refused first
    if not cfg["report"]:
        check_writable(os.path.join(cfg["results_dir"], task, "ablation" if cfg["ablate"] else ""), "option results_dir")
        if cfg["stage"] == "all" and not cfg["ablate"]:  # the benches come last: their compiler is checked first
            b = configure(bench.config, TASKS[task]["bench"])
            if b["compile"] != "off":
                check_compiler(pick_device(b["device"]), f"the benchmark's option compile={b['compile']!r} "
                                                         f"(demo.py --stage=train runs every stage but the benches)")
        if cfg["stage"] == "export" and not cfg["ablate"]:  # of checkpoints made on data there already
            return export_reference(task)
        module = __import__(TASKS[task]["prepare"][0], fromlist=["prepare"])
        module.prepare(configure(module.config, TASKS[task]["prepare"][1]))  # before any job reads it
        if cfg["ablate"]:
            ablate(cfg)
        elif cfg["stage"] == "ar":
            return train_ar(task, cfg["threads"])
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
    print("\n" + report(task, cfg["results_dir"], ABLATIONS, bench.settings_of))
    if cfg["png"]:
        with lock(cfg["png"], "option png", file=True, kind=PNG):
            frontier_png(cfg["png"], read_frontier(task, cfg["results_dir"]))
    if not cfg["report"]:
        print(f"\n(demo took {time.time() - t0:.0f} s)")


def check_png(cfg):
    if cfg["png"] is None:
        return
    if not cfg["report"]:
        raise CDLMError("option png: the frontier is drawn from the results files: give --report with it")
    if not read_frontier(cfg["task"], cfg["results_dir"]):
        raise CDLMError(f"option png: no frontier files in {os.path.join(cfg['results_dir'], cfg['task'], 'frontier')}/ to draw")
    refuse_overlap(dict(png=cfg["png"]), dict(results_dir=cfg["results_dir"]))  # a picture among the files it reads
    check_file_writable(cfg["png"], "option png")  # before the report is printed
    check_output(cfg["png"], "option png", PNG)
    refuse_inside(cfg["png"], "option png", "the picture")  # not among a dataset's or a trajectory set's files
    check_matplotlib("png")


def entry(argv):
    if not os.path.isdir("config"):
        raise CDLMError("run demo.py from the repository's root (it reads config/)")
    main(argv)


if __name__ == "__main__":
    run_main(entry)
