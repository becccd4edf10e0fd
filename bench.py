"""
Side-by-side benchmark of every decoding method on the same held-out problems, in one process,
with the hardware view behind the speedups.

    python bench.py                 # markdown tables + out/bench.json (+ out/bench_roofline.png)
    python bench.py --sweep         # also the student's threshold and block-size frontiers

The methods (CDLM Sec. 5 compares the same family) are the table METHODS below: from it follow
the checkpoints needed, the run order and the CLI choices (and show.py's side-by-side view).
"""
import functools
import os
import statistics
import sys
import time
from dataclasses import asdict, replace
from typing import Callable, NamedTuple, Optional

import torch

from checkpoint import read_checkpoint
from configurator import (SEED, Bool, CDLMError, Choice, Float, Int, List, Str, check, configure, fit_sizes, gave,
                          refuse_unused, run_main)
from data.common import (SPLITS, atomic_write_json, checkpoint_data, load_split, same_data, stored_data_dirs,
                         whole_blocks)
from files import holding, reading, refuse_overlap
from runtime import autocast, code_version, compiled, machine_info, pick_device, pick_dtype
from model import ROLES
from render import PNG
from results import ratios
from tables import REPORT, stored_report, table
from roofline import (PLOTS, answer_tokens, decode_cost, passes_per_block, plots, predict, probe_machine, profile_decode,
                      repeat_for, scale_plot, scale_study, timed_decode)
from sample import DEFAULT_DECODING, DecodeSettings, evaluate, load_for_decoding

DIR_OPTION = {role: f"{role}_dir" for role in ROLES}  # the option naming each role's checkpoint folder
CHECKPOINTS_DIRS = set(DIR_OPTION.values())

# -----------------------------------------------------------------------------
# the decoding family that this bench measures and show.py draws, one row each (CDLM Sec. 5)

class Method(NamedTuple):
    role: str                        # the checkpoint it decodes with: a key of model.ROLES
    decoding: Callable               # (block_size, threshold, measured) -> its DecodeSettings
    about: str
    reference: Optional[str] = None  # report the share of answers that differ from this method's
    depends_on: Optional[str] = None  # `measured` is this method's tokens per step (else None)


THRESHOLDED = lambda cache: lambda bs, th, _: DecodeSettings(bs, threshold=th, cache=cache, early_stop=True)
METHODS = {  # cdlm first: dlm_fewer_steps takes the student's measured steps
    "cdlm": Method("student", lambda bs, th, _: DEFAULT_DECODING["cdlm"](bs, th),
                   "the student: exact block KV cache, threshold, early stop"),
    "ar": Method("ar", lambda bs, th, _: DEFAULT_DECODING["ar"](bs, th), "the autoregressive baseline: KV cache, greedy"),
    "dlm": Method("teacher", lambda bs, th, _: DEFAULT_DECODING["dlm"](bs, th),
                  "the teacher, naive (the paper's baseline): one token per step over all gen_len positions"),
    "dlm_stop": Method("teacher", lambda bs, th, _: DecodeSettings(bs, steps_per_block=bs, early_stop=True),
                       "the naive teacher stopping at EOS (a fairer naive baseline)"),
    "dlm_threshold": Method("teacher", THRESHOLDED("none"), "the teacher with threshold decoding, no cache "
                                                            "(training-free parallel decoding)"),
    "dlm_prefix_cache": Method("teacher", THRESHOLDED("prefix"), "dlm_threshold with Fast-dLLM's approximate "
                               "prefix cache, refreshed at each block", "dlm_threshold"),
    "dlm_dual_cache": Method("teacher", THRESHOLDED("dual"), "dlm_threshold with Fast-dLLM's approximate dual "
                             "cache (prefix and masked suffix), refreshed at each block", "dlm_threshold"),
    "dlm_fewer_steps": Method("teacher", lambda bs, th, tps: DecodeSettings(bs, steps_per_block=max(1, min(bs, round(bs / tps))),
                                                                            early_stop=True),
                              "the teacher cut to the student's steps per block (naive step cutting)", depends_on="cdlm"),
}


def chain(name):
    """The method and those it depends on, recursively: (name, its dependency, that one's, ...)."""
    dep = METHODS[name].depends_on
    return (name,) + (chain(dep) if dep else ())


def needs(name):
    """The roles whose checkpoints a method needs: its own and those of the methods it depends on."""
    return tuple(METHODS[n].role for n in chain(name))


def settings_of(name, bs, threshold, tokens_per_step):
    """A method's DecodeSettings at block size bs, its dependencies resolved recursively:
    tokens_per_step(dep, settings) measures the method dep decoding with those settings (bench.py:
    on a batch of the problems; show.py: on its one prompt). Every caller resolves through here."""
    dep = METHODS[name].depends_on
    measured = tokens_per_step(dep, settings_of(dep, bs, threshold, tokens_per_step)) if dep else None
    return METHODS[name].decoding(bs, threshold, measured)


def load_models(cfg, methods, device, same_teacher=True):
    """The checkpoints the methods need, each of the right kind, all on the data of the reference;
    the student must come from the teacher (unless same_teacher=False: show.py's infilling compares
    masks). A mismatch names the odd one out."""
    models = {}
    for role in dict.fromkeys(r for name in methods for r in needs(name)):
        key = DIR_OPTION[role]
        models[role] = load_for_decoding(os.path.join(cfg[key], "ckpt.pt"), {}, device, ROLES[role].mode,
                                         "checkpoints" if from_folder(cfg, role) else key)
    name, ref = reference(cfg, models, device)
    for role, (_, ckpt, _) in models.items():
        if not same_data(ckpt["data_meta"], ref["data_meta"]):
            raise CDLMError(f"--{DIR_OPTION[role]}: {cfg[DIR_OPTION[role]]} was trained on other data than {name}")
    teacher = models["teacher"][1] if "teacher" in models else ref if ref["config"]["mode"] == "dlm" else None
    if same_teacher and "student" in models and teacher is not None and \
            models["student"][1]["teacher_hash"] != teacher["weights_hash"]:
        if "teacher" in models and from_folder(cfg, "student") and not from_folder(cfg, "teacher"):
            raise CDLMError(f"--teacher_dir: {cfg['teacher_dir']} is not the teacher {cfg['student_dir']} was distilled from")
        raise CDLMError(f"--student_dir: {cfg['student_dir']} was distilled from another teacher than "
                        f"{cfg['teacher_dir'] if 'teacher' in models else name}")
    return models


def from_folder(cfg, role):
    """Whether a role's checkpoint is the one --checkpoints names (role_dirs), its own option not given."""
    return cfg.get("checkpoints") is not None and not gave(cfg, DIR_OPTION[role])


def reference(cfg, models, device):
    """
    What every checkpoint must agree with, as (its name, its checkpoint): under --checkpoints=D one
    of D's (a role's own option given beside it is the odd one out; with no teacher loaded, D's
    teacher is read, where it has one: a student or AR of another task or teacher placed in D is
    named); else the teacher (its student and AR learned its data).
    """
    ours = [r for r in models if from_folder(cfg, r)] if cfg.get("checkpoints") is not None else list(models)
    path = os.path.join(cfg.get("checkpoints") or "", "teacher", "ckpt.pt")
    if "teacher" not in models and cfg.get("checkpoints") is not None and os.path.isfile(path):
        return f"--checkpoints={cfg['checkpoints']} (its teacher)", read_checkpoint(path, device, "dlm", "checkpoints")
    role = next((r for r in ours or models if r == "teacher"), next(iter(ours or models)))
    return f"--{DIR_OPTION[role]}={cfg[DIR_OPTION[role]]}", models[role][1]


def role_dirs(cfg):
    """--checkpoints=D: each role's folder is D/<role> (D=ref/arithmetic: the reference checkpoints
    shipped with the repo), unless that role's own option is given."""
    if cfg["checkpoints"] is not None:
        if not os.path.isdir(cfg["checkpoints"]):
            raise CDLMError(f"option checkpoints={cfg['checkpoints']!r}: not a folder (one holding teacher/, student/, "
                            f"ar/: ref/arithmetic, for one)")
        for role, key in DIR_OPTION.items():
            if not gave(cfg, key):
                cfg[key] = os.path.join(cfg["checkpoints"], role)
    return cfg


config = dict(
    checkpoints=Str(None),              # a folder of teacher/, student/, ar/ (e.g. ref/arithmetic): role_dirs
    teacher_dir=Str("out/teacher"),
    student_dir=Str("out/student"),
    ar_dir=Str("out/ar"),
    data_dir=Str(None),                 # None: where the checkpoints' data was prepared
    methods=List(list(METHODS), Choice(None, *METHODS), unique=True),
    split=Choice("test", *SPLITS),
    # sizes: a value given is exact (or refused); a default is at most the problems there are
    num_eval=Int(500, "[1, inf)"),      # problems for accuracy and NFE
    batch_size=Int(64, "[1, inf)"),     # batch for accuracy and for throughput
    latency_n=Int(20, "[1, inf)"),      # problems decoded one at a time per latency repeat
    repeats=Int(3, "[1, inf)"),         # timed rounds, every method once a round: medians of them
    min_s=Float(1.0, "[0, inf)"),       # a round's latency set and its batch each repeat until they take this long
    threshold=Float(None, "(0, 1]"),    # None: the student's own threshold, also for the teacher's methods
    sweep=Bool(False),
    profile=Bool(False),                # also where a decode's time goes (cdlm and dlm, batch 1)
    compile=Choice("both", "off", "on", "both"),  # time every method eager, under torch.compile, or both
    sweep_thresholds=List([0.5, 0.7, 0.8, 0.9, 0.95, 0.99], Float(None, "(0, 1]")),
    sweep_block_sizes=List([4, 8, 16], Int(None, "[1, inf)")),
    out_path=Str("out/bench.json"),
    seed=Int(1337, SEED),               # the sampling noise of a method with temperature > 0
    device=Str("auto"),
    dtype=Str("auto"),                  # 'float32' | 'bfloat16' | 'float16' | 'auto' (bf16 autocast on CUDA)
    table=Str(None),                    # a stored report (an out_path, or demo.py's seed file): print its tables, run nothing
    scale=Bool(False),                  # the scale study instead: random weights at several sizes (roofline.scale_study)
)
SCALE_OPTIONS = {"scale", "checkpoints", "student_dir", "data_dir", "split", "num_eval", "batch_size", "threshold",
                 "out_path", "device"}


# -----------------------------------------------------------------------------
# what is measured

def decoded_tokens(tokens, eos_id, block_size, early_stop):
    """Answer positions the sampler finalized per row: with early stop, up to the end of the block
    holding the first EOS (the rest was filled in without a forward pass)."""
    L = tokens.size(1)
    if not early_stop:
        return torch.full((tokens.size(0),), L)
    is_eos = tokens == eos_id
    first = torch.where(is_eos.any(1), is_eos.float().argmax(1), torch.full((tokens.size(0),), L - 1))
    return torch.clamp(whole_blocks(first + 1, block_size), max=L)


def prompts_of(rows, meta, device):
    return torch.as_tensor(rows[:, :meta["prompt_len"]].astype("int64"), device=device)  # (n, prompt_len)


def mean_tokens_per_step(model, meta, prompts, settings):
    """Answer positions finalized per forward pass, averaged over rows, from one batched decode."""
    out, steps, _ = timed_decode(model, meta, prompts, settings)
    decoded = decoded_tokens(out, meta["eos_id"], settings.block_size, settings.early_stop)
    return (decoded.float() / steps.float()).mean().item()


def timed_rounds(entries, meta, prompts, cfg, predict_fns=None):
    """
    Latency at batch 1 (mean over latency_n prompts) and throughput at batch_size of every entry
    {key: (model, settings)}, in rounds: each of the `repeats` rounds times every entry once, one
    after another, so a slow minute of the machine slows every method alike and a ratio of two
    methods is taken within a round (ratios). One untimed round first (warm caches; a compiled
    model has compiled before). predict_fns {key: fn(times)}: an entry's cost model
    (roofline.predict, its step timings memoized in `times`), run in each timed round right before
    the entry's decodes with its parts timed afresh, its batch-1 steps last: the machine switches
    between speeds a third apart every few tens of seconds, and a prediction timed seconds from
    its decodes could land in the other one. In a round the latency set and the batch each repeat
    until they add up to min_s (a fast method's 20 answers take ~0.1 s, where one stall moves the
    figure). Returns {key: (latencies in s, throughputs in tok/s, predictions)}, one per round.
    """
    predict_fns, n = predict_fns or {}, cfg["latency_n"]
    got = {key: ([], [], []) for key in entries}
    for r in range(cfg["repeats"] + 1):
        times = {}  # this round's step timings, by model, kind of decode and shape
        min_s = cfg["min_s"] if r else 0  # the untimed round decodes once
        for key, (model, settings) in entries.items():
            if r and key in predict_fns:
                got[key][2].append(predict_fns[key](times))

            def latency_set():  # (answers, seconds)
                return n, sum(timed_decode(model, meta, prompts[i:i + 1], settings)[2] for i in range(n))

            def batch():  # (answer tokens, seconds)
                out, _, dt = timed_decode(model, meta, prompts[:cfg["batch_size"]], settings)
                return answer_tokens(out, meta["eos_id"]).sum().item(), dt
            answers, lat_s = repeat_for(min_s, latency_set)
            tokens, thr_s = repeat_for(min_s, batch)
            if r:
                got[key][0].append(lat_s / answers)
                got[key][1].append(tokens / thr_s)
    return got


def timings(rounds):
    """One entry's figures from its rounds: the medians, and every round as measured; the cost
    model's figures, where it ran, as the medians of its rounds, and its rounds beside them (its
    error is taken within a round, as a ratio is: tables.predicted_table)."""
    lat, thr, predicted = rounds
    out = dict(latency_ms=1000 * statistics.median(lat), throughput_tok_s=statistics.median(thr),
               rounds=dict(latency_ms=[1000 * t for t in lat], throughput_tok_s=thr))
    if predicted:
        out["predicted"] = {k: statistics.median(p[k] for p in predicted) for k in predicted[0]}
        out["predicted"]["rounds"] = {k: [p[k] for p in predicted] for k in out["rounds"]}
    return out


def bench_method(model, meta, rows, settings, cfg, act_bytes, bar=None, cmodel=None):
    """Accuracy and NFE on all rows and the cost of a decode; with cmodel (the model compiled) also
    its compile time and the answers it changes. The timings and the cost model's predictions come
    after, in timed_rounds."""
    ev = evaluate(model, meta, rows, settings, cfg["batch_size"], cfg["seed"], bar)
    prompts = prompts_of(rows, meta, next(model.parameters()).device)
    tps = mean_tokens_per_step(model, meta, prompts[:cfg["batch_size"]], settings)  # batched equals per-row
    out = dict(final_acc=ev.final_acc, whole_acc=ev.whole_acc, nfe=ev.nfe, tokens_per_step=tps)
    if cmodel is not None:
        t0 = time.perf_counter()  # the first calls compile: one graph per kind of pass
        timed_decode(cmodel, meta, prompts[:1], settings)
        timed_decode(cmodel, meta, prompts[:cfg["batch_size"]], settings)
        compile_s = time.perf_counter() - t0
        cev = evaluate(cmodel, meta, rows, settings, cfg["batch_size"], cfg["seed"])
        out["compiled"] = dict(compile_s=compile_s,
                               differs_from_eager=sum(a != b for a, b in zip(cev.preds, ev.preds)) / len(rows))
    flops, moved, tokens = decode_cost(model, meta, prompts[:cfg["latency_n"]], settings, act_bytes)
    return dict(out, flops_per_token=flops / tokens, bytes_per_token=moved / tokens, arithmetic_intensity=flops / moved,
                flops_per_answer=flops / cfg["latency_n"], settings=asdict(settings), preds=ev.preds, chance=ev.chance)


def add_timings(results, models, cmodels, meta, prompts, cfg):
    """Time every method (eager, compiled or both, as cfg['compile'] says) in shared rounds, and
    put the figures, the speedups over dlm and dlm_stop and the achieved GFLOP/s into results."""
    ways = {"off": (False,), "on": (True,), "both": (False, True)}[cfg["compile"]]
    eager = {role: m[0] for role, m in models.items()}
    entries = {(name, c): ((cmodels if c else eager)[METHODS[name].role], DecodeSettings(**r["settings"]))
               for name, r in results.items() for c in ways}
    predict_fns = {key: functools.partial(predict, model, meta, prompts, settings, cfg["batch_size"], cfg["latency_n"])
                   for key, (model, settings) in entries.items()}
    got = {key: timings(t) for key, t in timed_rounds(entries, meta, prompts, cfg, predict_fns).items()}
    for name, r in results.items():
        for c in ways:
            mine = r.setdefault("compiled", {}) if c else r
            mine.update(got[name, c])
            for base in ("dlm", "dlm_stop"):  # eager against eager, compiled against compiled
                if (base, c) in got:
                    x = ratios(got[name, c], got[base, c])
                    mine[f"speedup_latency_vs_{base}"], mine[f"speedup_throughput_vs_{base}"] = x["latency"], x["throughput"]
        if cfg["compile"] == "on":  # the compiled figures are the method's figures
            r.update({k: v for k, v in r["compiled"].items() if k not in ("compile_s", "differs_from_eager", "predicted")})
        r["achieved_gflops"] = r.pop("flops_per_answer") / (r["latency_ms"] / 1000) / 1e9
    if cfg["compile"] == "both":
        for name, r in results.items():
            r["fastest"] = fastest(got, name)


def fastest(got, name):
    """A method on its faster path, eager or compiled, for each measure, and its speedups over dlm and
    dlm_stop each on theirs: a ratio is fair when neither side runs a path slower than its other one."""
    path = lambda n, k, better: max((False, True), key=lambda c: better * got[n, c][k])  # False: eager
    out = {}
    for k, key, better in (("latency", "latency_ms", -1), ("throughput", "throughput_tok_s", 1)):
        c = path(name, key, better)
        out[f"{k}_path"], out[key] = ("compiled" if c else "eager"), got[name, c][key]
        for base in ("dlm", "dlm_stop"):
            if (base, False) in got:
                out[f"speedup_{k}_vs_{base}"] = ratios(got[name, c], got[base, path(base, key, better)])[k]
    return out


def checkpoint_hashes(cfg):
    """The weights of every checkpoint the chosen methods use: a stored report is reused only for them."""
    out = {}
    for role in dict.fromkeys(r for name in cfg["methods"] for r in needs(name)):
        key = DIR_OPTION[role]
        out[role] = read_checkpoint(os.path.join(cfg[key], "ckpt.pt"), "cpu", ROLES[role].mode, key)["weights_hash"]
    return out


def check_options(cfg, methods):
    """Options that take effect only with some methods or with --sweep: given without them, refused.
    Returns what the run reads, {option: path} (files.refuse_overlap, files.reading)."""
    used = {DIR_OPTION[r] for name in methods for r in needs(name)}
    ignored = dict.fromkeys(CHECKPOINTS_DIRS - used, "with these methods: none reads that checkpoint")
    if all(METHODS[m].decoding(1, 0.5, 1).temperature == 0 for m in methods):
        ignored["seed"] = "with these methods: every one decodes greedily"
    # a method reads the threshold when it or the method it depends on decodes with one
    if not any(METHODS[d].decoding(1, 0.5, 1).rule == "threshold" for m in methods for d in chain(m)):
        ignored["threshold"] = "with these methods: none decodes with a threshold"
    if "student_dir" not in used:
        ignored["sweep_block_sizes"] = "without the student's method (cdlm)"
    if not cfg["sweep"]:
        ignored |= dict.fromkeys(("sweep_thresholds", "sweep_block_sizes"), "without --sweep")
    refuse_unused(cfg, ignored)
    if cfg["sweep"] and not used & {"teacher_dir", "student_dir"}:
        raise CDLMError("option sweep=True: the sweep is of the teacher's and the student's methods; give one in --methods")
    if cfg["profile"] and not set(methods) & {"cdlm", "dlm", "ar"}:
        raise CDLMError("option profile=True: it profiles cdlm, dlm and ar; give one of them in --methods")
    inputs = {k: cfg[k] for k in (*sorted(used), "data_dir")} | stored_data_dirs(cfg, sorted(used))
    refuse_overlap(dict(out_path=cfg["out_path"]), {**inputs, "checkpoints": cfg["checkpoints"]})  # the folder too
    return inputs


def run(cfg):
    cfg = check(config, cfg)
    if cfg["table"] is not None:
        refuse_unused(cfg, dict.fromkeys(set(config) - {"table"}, "with --table: it prints a stored report"))
        print(table(stored_report(cfg["table"], list(METHODS), settings_of)))
        return None
    if cfg["scale"]:
        refuse_unused(cfg, dict.fromkeys(set(config) - SCALE_OPTIONS, "with --scale: the study measures random weights"))
        png = os.path.splitext(cfg["out_path"])[0] + ".png"
        inputs = {k: cfg[k] for k in ("student_dir", "data_dir")} | stored_data_dirs(cfg, ["student_dir"])
        refuse_overlap(dict(out_path=cfg["out_path"]), {**inputs, "checkpoints": cfg["checkpoints"]})
        with holding([(cfg["out_path"], "option out_path", REPORT), (png, "the plot of option out_path", PNG)]), \
                reading(inputs):
            return scale(cfg, png)
    methods = [m for m in METHODS if m in cfg["methods"]]
    inputs = check_options(cfg, methods)
    with holding([(cfg["out_path"], "option out_path", REPORT)] +  # one writer per result file and its plots
                 [(os.path.splitext(cfg["out_path"])[0] + s, "the plot of option out_path", PNG) for s in PLOTS]), \
            reading(inputs):
        return _run(cfg, methods)


def _run(cfg, methods):
    commit = code_version()  # the code that runs, before anyone can commit or edit during the run
    device = pick_device(cfg["device"])
    dtype = pick_dtype(cfg["dtype"], device)
    torch.manual_seed(cfg["seed"])
    models = load_models(cfg, methods, device)
    first = next(iter(models.values()))[1]
    data_dir, meta = checkpoint_data(first, cfg["data_dir"])
    rows = load_split(data_dir, cfg["split"], meta)
    # the sizes measured; the report keeps the options as given
    run_cfg = fit_sizes(cfg, len(rows), f"the {cfg['split']} split of {data_dir}", ("batch_size", "latency_n"))
    rows = rows[:run_cfg["num_eval"]]
    if cfg["sweep"] and any(meta["gen_len"] % b for b in cfg["sweep_block_sizes"]):
        raise CDLMError(f"option sweep_block_sizes={cfg['sweep_block_sizes']}: each must divide gen_len={meta['gen_len']}")
    # one compiled wrapper per model, shared by its methods (compiled graphs are per kind of pass)
    cmodels = {role: compiled(m[0]) for role, m in models.items()} if cfg["compile"] != "off" else {}
    student = models.get("student")
    threshold = cfg["threshold"] or (student[2].threshold if student else 0.9)
    act_bytes = 4 if dtype == "float32" else 2
    gflops, gbs = probe_machine(device)
    from tqdm import tqdm
    results = {}

    def measured(dep, settings):
        """The tokens per step of a method another depends on: from this run, or measured on the side."""
        if dep in results:
            return results[dep]["tokens_per_step"]
        p = prompts_of(rows[:run_cfg["batch_size"]], meta, device)
        return mean_tokens_per_step(models[METHODS[dep].role][0], meta, p, settings)

    with tqdm(total=len(methods) * len(rows), desc="bench", file=sys.stderr) as bar, autocast(device, dtype):
        for name in methods:
            model, ckpt, _ = models[METHODS[name].role]
            bs = model.cfg.block_size
            bar.set_description(f"bench {name}")
            results[name] = bench_method(model, meta, rows, settings_of(name, bs, threshold, measured),
                                         run_cfg, act_bytes, bar, cmodels.get(METHODS[name].role))
        bar.set_description("bench: timing every method in shared rounds")
        add_timings(results, models, cmodels, meta, prompts_of(rows, meta, device), run_cfg)
    for name, r in results.items():
        ref = METHODS[name].reference
        if ref in results:
            r["differs_from_" + ref] = sum(a != b for a, b in zip(r["preds"], results[ref]["preds"])) / len(rows)
    chance = next(iter(results.values()))["chance"]
    for r in results.values():
        del r["preds"], r["chance"]
    report = dict(methods=results, config=cfg, commit=commit,
                  checkpoints={w: m[1]["weights_hash"] for w, m in models.items()},
                  settings=dict(split=cfg["split"], num_eval=len(rows), batch_size=run_cfg["batch_size"],
                                latency_n=run_cfg["latency_n"], repeats=cfg["repeats"], min_s=cfg["min_s"],
                                threshold=threshold, gen_len=meta["gen_len"], data_dir=data_dir, chance=chance),
                  machine=dict(device=device, dtype=dtype, peak_gflops=gflops, peak_gb_s=gbs,
                               gpu=torch.cuda.get_device_name(device) if device.startswith("cuda") else None,
                               **machine_info()))  # cpu, cores, threads, torch, python
    if cfg["sweep"]:
        with autocast(device, dtype):
            report["sweep"] = sweep(models, meta, rows, run_cfg, act_bytes, device)
    if cfg["profile"]:
        prompts = prompts_of(rows[:run_cfg["latency_n"]], meta, device)
        with autocast(device, dtype):
            which = [(name, "", models[METHODS[name].role][0]) for name in ("cdlm", "dlm", "ar") if name in results]
            which += [(name, " compiled", cmodels[METHODS[name].role]) for name, _, _ in which if cmodels]
            report["profile"] = {name + tag: profile_decode(model, meta, prompts, DecodeSettings(**results[name]["settings"]),
                                                            gflops, act_bytes, cfg["repeats"], cfg["min_s"])
                                 for name, tag, model in which}
    atomic_write_json(cfg["out_path"], report)
    plots(report, cfg["out_path"])
    print(table(report))
    return report


def sweep(models, meta, rows, cfg, act_bytes, device):
    """The teacher's and the student's threshold frontiers, and the student at other block sizes."""
    out = {}
    one = {**cfg, "repeats": 1, "compile": "off"}
    prompts = prompts_of(rows, meta, device)

    def point(model, settings):  # one round of timings is enough for a frontier read against NFE
        r = bench_method(model, meta, rows, settings, one, act_bytes)
        return pick({**r, **timings(timed_rounds({0: (model, settings)}, meta, prompts, one)[0])})

    for name in ("dlm_threshold", "cdlm"):
        if METHODS[name].role in models:
            model = models[METHODS[name].role][0]
            s = METHODS[name].decoding(model.cfg.block_size, None, None)
            out[name] = [dict(threshold=th, **point(model, replace(s, threshold=th))) for th in cfg["sweep_thresholds"]]
    if "student" in models:
        model, _, s = models["student"]
        trained, out["cdlm_block_size"] = model.cfg.block_size, []
        for bs in cfg["sweep_block_sizes"]:  # each divides gen_len (checked at start-up)
            model.set_mask(block_size=bs)  # the student decoding with other blocks than it learned
            out["cdlm_block_size"].append(dict(block_size=bs, **point(model, replace(s, block_size=bs))))
        model.set_mask(block_size=trained)
    return out


def scale(cfg, png):
    """The scale study (roofline.scale_study) at the student's measured passes per block."""
    commit = code_version()
    device = pick_device(cfg["device"])
    model, ckpt, settings = load_for_decoding(os.path.join(cfg["student_dir"], "ckpt.pt"),
                                              dict(threshold=cfg["threshold"]), device, "cdlm", "student_dir")
    data_dir, meta = checkpoint_data(ckpt, cfg["data_dir"])
    rows = load_split(data_dir, cfg["split"], meta)
    run_cfg = fit_sizes(cfg, len(rows), f"the {cfg['split']} split of {data_dir}")
    prompts = prompts_of(rows[:run_cfg["num_eval"]], meta, device)
    per_block = passes_per_block(model, meta, prompts, settings, run_cfg["batch_size"])
    tokens_per_pass = model.cfg.block_size / per_block
    rows = scale_study(tokens_per_pass, meta["vocab_size"], device, batch=run_cfg["batch_size"],
                       progress=lambda line: print(line, file=sys.stderr))
    report = dict(scale=dict(rows=rows, per_block=per_block, tokens_per_pass=tokens_per_pass,
                            block_size=model.cfg.block_size, batch=run_cfg["batch_size"]), config=cfg, commit=commit,
                  checkpoints=dict(student=ckpt["weights_hash"]), machine=dict(device=device, **machine_info()))
    atomic_write_json(cfg["out_path"], report)
    scale_plot(report["scale"], png)  # when matplotlib is installed
    print(table(report))
    return report


def pick(r):
    return {k: r[k] for k in ("final_acc", "whole_acc", "nfe", "latency_ms", "tokens_per_step")}


def main(argv):
    run(role_dirs(configure(config, argv)))


if __name__ == "__main__":
    run_main(main)
