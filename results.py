"""
The results files and their tables: where `demo.py` writes each run's figures (one small JSON per
seed, one per ablation student, under results/<task>/; the frontier's runs), what each holds
(checked on every read), and what is printed from them: RESULTS.md's tables (`python demo.py
--report`) and a new run placed against the committed ones (`against`). One bench report's tables
are tables.py's.
"""
import math
import os
import re
import statistics
from dataclasses import asdict
from typing import NamedTuple

from configurator import SEED, Bool, CDLMError, Choice, Float, Int, Str
from data.common import METRICS, SPLITS, Each, check_fields, load_meta, read_json
from files import holds
from runtime import DEVICE, THREADS
from sample import CACHES, REFRESHES, TEMPERATURES, DecodeSettings

# the headline figures: (label, method or teacher steps, field); accuracies are shares, both metrics
# (teacher_steps' keys are tokens per step; 'block' is the largest, one step per block, whatever the block size)
HEADLINE = [(f"teacher, {what}: {m.split('_')[0]} answer", f"steps:{k}", m)
            for k, what in (("1", "1 token/step"), ("2", "2 tokens/step"), ("block", "one step per block"))
            for m in METRICS] + \
           [(f"student (cdlm): {m.split('_')[0]} answer", "cdlm", m) for m in METRICS] + \
           [("student NFE", "cdlm", "nfe"), ("teacher NFE (dlm)", "dlm", "nfe")] + \
           [(f"cdlm vs {b}: {w}{', compiled' * c}", "cdlm", "compiled." * c + f"speedup_{w}_vs_{b}")
            for c in (False, True) for b in ("dlm", "dlm_stop") for w in ("latency", "throughput")]


# the results layout: results_dir/<task>/seed<N>.json, one per seed (pipeline), and
# results_dir/<task>/ablation/<variant>_seed<N>.json, one per ablation student and seed (ablate).
# Nothing else there is read; a file named like one of these that is not one is refused.

PRESET_SEED = 1337  # the presets' own seed: its student is the default student (ref/<task>/student)


def seed_path(results_dir, task, seed):
    return os.path.join(results_dir, task, f"seed{seed}.json")


def slug(variant):
    return variant.replace(" ", "_").replace("=", "_")


def ablation_path(results_dir, task, variant, seed):
    return os.path.join(results_dir, task, "ablation", f"{slug(variant)}_seed{seed}.json")


class Form(Str):
    """A string of a fixed form (a commit, a weights hash): free text would reach the report's lines."""
    def __init__(self, default, pattern, what):
        super().__init__(default)
        self.pattern, self.what = pattern, what

    def valid(self, value):
        return re.fullmatch(self.pattern, value) is not None

    def describe(self):
        return self.what


SHARE, COUNT = Float(0.0, "[0, 1]"), Float(0.0, "[0, inf)")
COMMIT = Form(None, r"[0-9a-f]{7,40}(\+dirty)?", "a git commit (hex digits, +dirty where the tree differed)")
HASH = Form("", r"[0-9a-f]{16}", "a weights hash (16 hex digits)")
SCORES = dict(final_acc=SHARE, whole_acc=SHARE, nfe=Float(1.0, "[1, inf)"))  # a decode takes at least one pass


def teacher_steps_per_block(block_size):
    """The teacher's rows of a seed file (demo.py measures them): 1, 2 and 4 tokens per step and one step
    per block, as steps per block; its key in teacher_steps is tokens per step, block_size // steps."""
    return tuple(dict.fromkeys(s for s in (block_size, block_size // 2, block_size // 4, 1) if s))
# what the report and `against` read of a seed's file; other fields are kept, not read
SPEEDUPS = [field.split(".") for _, _, field in HEADLINE if "speedup" in field]  # ['compiled', 'speedup_...'] or one
# what a bench report (bench.py's file, a seed file's bench part) says of its machine and settings
BENCH_MACHINE = {"device": Str(""), "dtype": Choice("float32", "float32", "bfloat16", "float16"), "torch": Str(""),
                 "cpu": Str(""), "gpu": Str(None), "threads": Int(1, "[1, inf)"), "cores?": Int(1, "[1, inf)"),
                 "peak_gflops": Float(1, "(0, inf)"), "peak_gb_s": Float(1, "(0, inf)")}
BENCH_SETTINGS = {"split": Choice("test", *SPLITS), "num_eval": Int(1, "[1, inf)"), "batch_size": Int(1, "[1, inf)"),
                  "latency_n": Int(1, "[1, inf)"), "repeats": Int(1, "[1, inf)"), "min_s?": Float(0.0, "[0, inf)"),
                  "threshold": Float(None, "(0, 1]"), "gen_len": Int(1, "[1, inf)"), "data_dir": Str(""),
                  "chance": dict(final_acc=SHARE, whole_acc=SHARE)}
SEED_FILE = {
    "task": Str(""), "seed": Int(0, SEED), "commit": COMMIT, "threads?": THREADS, "num_eval": Int(1, "[1, inf)"),
    "ar_seed": Int(0, SEED), "machine": {"cpu": Str(""), "cores": Int(1, "[1, inf)"), "torch": Str(""), "isa?": Str("")},
    "teacher_steps": Each(SCORES, r"[1-9][0-9]*", at_least=1), "bench_settings": BENCH_SETTINGS,
    "bench_machine": BENCH_MACHINE, "weights?": Each(HASH),
    "bench": Each({**SCORES, **{f"{f[0]}?": COUNT for f in SPEEDUPS if len(f) == 1}, **(TIMES := {
                       "latency_ms?": Float(1.0, "(0, inf)"), "throughput_tok_s?": Float(1.0, "(0, inf)")}),
                   "compiled?": {**{f"{f[1]}?": COUNT for f in SPEEDUPS if len(f) == 2}, **TIMES}})}
ABLATION_FILE = dict(task=Str(""), variant=Str(""), seed=Int(0, SEED), iters=Int(1, "[1, inf)"),
                     num_eval=Int(1, "[1, inf)"), **SCORES,
                     **{"commit?": COMMIT, "weights_hash?": HASH,
                        "machine?": {"cpu": Str(""), "cores": Int(1, "[1, inf)"), "threads?": THREADS, "torch": Str("")}})


class Results(NamedTuple):
    seeds: list      # (path, record), by seed
    ablation: list   # (path, record), by file name


def json_names(d, what, fix):
    """The .json files of a layout folder, sorted; none where it does not exist; a file or a dangling
    link in its place is named (its tables would vanish in silence)."""
    if os.path.lexists(d) and not os.path.isdir(d):
        raise CDLMError(f"{d}: a file or a broken link where {what}'s folder belongs; {fix}")
    return sorted(n for n in (os.listdir(d) if os.path.isdir(d) else []) if n.endswith(".json"))


def read_results(task, results_dir, variants=None, decoding=None):
    """The files of results_dir/<task> that the layout names, each checked against its name and
    its schema; a stray or duplicate file, or an ablation variant not among `variants` (where
    given: demo.ABLATIONS), is one line naming it (the report would count it)."""
    if os.path.isdir(results_dir) and holds(results_dir) == "results files":  # results/<task> given for results
        raise CDLMError(f"option results_dir={results_dir!r} holds a task's results files itself: give the folder of "
                        f"the task folders ({os.path.dirname(os.path.normpath(results_dir)) or '.'})")
    here = os.path.join(results_dir, task)
    fix = f"restore it (git checkout) or move it out of {here}/: the report reads every file of its layout"
    seeds = []
    for name in (n for n in json_names(here, "the task", fix) if n.startswith("seed")):
        path, m = os.path.join(here, name), re.fullmatch(r"seed(0|[1-9][0-9]*)\.json", name)
        if not m:
            raise CDLMError(f"{path}: not a file of the results layout (seed<N>.json); {fix}")
        r = check_fields(read_json(path, fix), SEED_FILE, path, fix)
        if (r["task"], r["seed"]) != (task, int(m[1])):
            raise CDLMError(f"{path}: holds {r['task']} seed {r['seed']}, not {task} seed {m[1]} as its place says; {fix}")
        check_seed_figures(path, r, seeds, fix, decoding)
        seeds.append((path, r))
    ablation, seen = [], {}
    gen_len = next((o["bench_settings"]["gen_len"] for _, o in seeds), None)  # an ablation NFE's bound
    for name in json_names(os.path.join(here, "ablation"), "the ablation", fix):
        path = os.path.join(here, "ablation", name)
        r = check_fields(read_json(path, fix), ABLATION_FILE, path, fix)
        check_scores(path, r, "", fix, r["num_eval"])
        if variants is not None and r["variant"] not in variants:
            raise CDLMError(f"{path}: field variant={r['variant']!r} is none of demo.py's ablation students "
                            f"({', '.join(variants)}); {fix}")
        if r["task"] != task or os.path.normpath(path) != os.path.normpath(ablation_path(results_dir, task, r["variant"], r["seed"])):
            raise CDLMError(f"{path}: holds {r['task']} variant {r['variant']!r} seed {r['seed']}, whose file is "
                            f"{ablation_path(results_dir, r['task'], r['variant'], r['seed'])}; {fix}")
        if (r["variant"], r["seed"]) in seen:
            raise CDLMError(f"{path}: variant {r['variant']!r} seed {r['seed']} again (also in "
                            f"{seen[r['variant'], r['seed']]}); {fix}")
        seen[r["variant"], r["seed"]] = path
        twin = next((p for p, o in ablation if o["variant"] == r["variant"] and o.get("weights_hash")
                     and o.get("weights_hash") == r.get("weights_hash")), None)
        if twin:  # one student counted twice under two seeds (two variants may train the same one)
            raise CDLMError(f"{path}: field weights_hash={r['weights_hash']!r} is that of {twin} too: one student, two "
                            f"files; {fix}")
        first = ablation[0] if ablation else None
        for field in ("iters", "num_eval", "chance") if first else ():  # one table, one header: one budget and one test set
            if r.get(field) != first[1].get(field):
                raise CDLMError(f"{path}: field {field}={r.get(field)}, but {first[0]} has {field}={first[1].get(field)}: "
                                f"the ablation's table reads both as one; {fix}")
        if isinstance(gen_len, int) and r["nfe"] > gen_len:
            raise CDLMError(f"{path}: field nfe={r['nfe']:g} is above gen_len={gen_len} (its seed files'): a pass "
                            f"finalizes at least one token; {fix}")
        ablation.append((path, r))
    return Results(sorted(seeds, key=lambda pr: pr[1]["seed"]), ablation)


def check_scores(path, scores, at, fix, n):
    """A whole worked answer right has its final answer right: whole_acc above final_acc cannot be measured;
    over n problems, each share and the mean NFE times n is a whole count (answers right, passes)."""
    if scores["whole_acc"] > scores["final_acc"]:
        raise CDLMError(f"{path}: field {at}whole_acc={scores['whole_acc']} is above {at}final_acc={scores['final_acc']}, "
                        f"which a whole answer right implies; {fix}")
    for field in METRICS + ("nfe",):
        total = scores[field] * n
        if not math.isfinite(total) or abs(total - round(total)) > 1e-6 * max(1.0, total):
            raise CDLMError(f"{path}: field {at}{field}={scores[field]:g} is not a count over its {n} problems "
                            f"({total:.6g} {'passes' if field == 'nfe' else 'right'} in all); {fix}")


def check_seed_figures(path, r, before, fix, decoding=None):
    """What the schema cannot say of a seed file: every score pair possible, and the teacher's rows those
    demo.py measures at its block size (the largest key), the same rows as the seed files read before it."""
    for k, scores in r["teacher_steps"].items():  # the bench's rows: check_row, below
        check_scores(path, scores, f"teacher_steps.{k}.", fix, r["num_eval"])
    have = sorted(r["teacher_steps"], key=int)  # tokens per step
    want = sorted({str(int(have[-1]) // s) for s in teacher_steps_per_block(int(have[-1]))}, key=int)
    if have != want:
        raise CDLMError(f"{path}: field teacher_steps has rows {have} (tokens per step), not those demo.py measures at "
                        f"a block of {have[-1]}: {want}; {fix}")
    check_bench_settings(path, r["bench_machine"], r["bench_settings"], "bench_", fix)
    for name, row in r["bench"].items():
        check_row(path, f"bench.{name}", row, r["bench_settings"]["gen_len"], r["bench_settings"]["num_eval"],
                  r["bench_machine"], fix)
    check_speedups(path, r["bench"], fix)
    check_row_settings(path, r["bench_settings"], r["bench"], "bench", fix, decoding)
    for part, key in [*(("bench_settings", k) for k in ("split", "batch_size", "latency_n", "threshold", "gen_len")),
                      ("bench_machine", "device"), ("bench_machine", "dtype")]:  # a mean of one measurement
        other = next((p for p, o in before if o[part][key] != r[part][key]), None)
        if other:
            raise CDLMError(f"{path}: field {part}.{key}={r[part][key]!r}, but {other} has "
                            f"{dict(before)[other][part][key]!r}: the report averages the seeds' benches as one "
                            f"measurement; {fix}")
    other = next(((p, name) for p, o in before for name in set(o["bench"]) & set(r["bench"])
                  if o["bench"][name]["settings"] != r["bench"][name]["settings"]), None)
    if other:
        raise CDLMError(f"{path}: field bench.{other[1]}.settings={r['bench'][other[1]]['settings']}, but {other[0]} "
                        f"decoded {other[1]} with {dict(before)[other[0]]['bench'][other[1]]['settings']}: the report "
                        f"averages one method; {fix}")
    other = next((p for p, o in before if o["ar_seed"] != r["ar_seed"]), None)
    if other:  # demo.py trains the AR baseline once: every seed's bench decodes with it
        raise CDLMError(f"{path}: field ar_seed={r['ar_seed']}, but {other} has ar_seed={dict(before)[other]['ar_seed']}: "
                        f"every seed's bench decodes with the one AR baseline; {fix}")
    other = next((p for p, o in before if o["num_eval"] != r["num_eval"]), None)
    if other:  # a mean over seeds is a mean of one measurement
        raise CDLMError(f"{path}: field num_eval={r['num_eval']}, but {other} has num_eval="
                        f"{dict(before)[other]['num_eval']}: one table averages both; {fix}")
    if r["bench_settings"]["num_eval"] != r["num_eval"]:  # one test set for scores and bench
        raise CDLMError(f"{path}: field bench_settings.num_eval={r['bench_settings']['num_eval']!r}, but its num_eval="
                        f"{r['num_eval']}: the report prints one; {fix}")
    other = next((p for p, o in before if o["bench"] == r["bench"]), None)
    if other:  # measured timings never repeat to the last digit: one run under two seeds' names
        raise CDLMError(f"{path}: field bench holds the same figures as {other}, to the last digit: one run "
                        f"counted as two seeds; {fix}")
    chance = r["bench_settings"]["chance"]  # a guess's score is a property of the test set: one in all
    odd = next((k for k, scores in r["teacher_steps"].items() if scores.get("chance", chance) != chance), None)
    if odd:
        raise CDLMError(f"{path}: field teacher_steps.{odd}.chance={r['teacher_steps'][odd]['chance']} is not its "
                        f"bench_settings.chance={chance}: one test set, one guess; {fix}")
    other = next((p for p, o in before if o["bench_settings"]["chance"] != chance), None)
    if other:
        raise CDLMError(f"{path}: field bench_settings.chance={chance}, but {other} has "
                        f"{dict(before)[other]['bench_settings']['chance']}: the seeds score one test set; {fix}")
    other = next((p for p, o in before if sorted(o["teacher_steps"], key=int) != have), None)
    if other:
        raise CDLMError(f"{path}: field teacher_steps has rows {have}, but {other} has "
                        f"{sorted(dict(before)[other]['teacher_steps'], key=int)}: one table reads both; {fix}")


POSITIVE = Float(1, "(0, inf)")
# the cost model's prediction of a path (roofline.predict): steps and loop, and the steps alone
PREDICTED = {"latency_ms": POSITIVE, "throughput_tok_s": POSITIVE, "steps_latency_ms?": POSITIVE,
             "steps_throughput_tok_s?": POSITIVE}
BENCH_ROW = {**SCORES, "tokens_per_step": Float(1, "[1, inf)"),  # a pass finalizes at least one token
             "predicted?": PREDICTED, "fastest?": {"latency_path": Choice("eager", "eager", "compiled"),
                                                   "throughput_path": Choice("eager", "eager", "compiled")},
             "latency_ms": POSITIVE, "throughput_tok_s": POSITIVE, "flops_per_token": POSITIVE,
             "bytes_per_token": POSITIVE, "arithmetic_intensity": POSITIVE, "achieved_gflops": POSITIVE,
             "settings": {"block_size": Int(1, "[1, inf)"), "steps_per_block": Int(None, "[1, inf)"),
                          "threshold": Float(None, "(0, 1]"), "early_stop": Bool(False), "cache": Choice("none", *CACHES),
                          "refresh": Choice("block", *REFRESHES), "temperature": Float(0.0, TEMPERATURES)},
             "compiled?": {"compile_s": Float(1, "(0, inf)"), "differs_from_eager": Float(0, "[0, 1]"),
                           "latency_ms": POSITIVE, "throughput_tok_s": POSITIVE, "predicted?": PREDICTED}}
# bench.py --profile's record of one method (and path): where a batch-1 decode's time goes; the
# sampler's share is the decode less a replay of its passes, the loop's the decode less a replay of
# its steps: two measurements each (below zero when noisy)
PROFILE = {"ms_per_answer": POSITIVE, "model_ms_per_answer": POSITIVE, "sampler_ms_per_answer": Float(0, "(-inf, inf)"),
           "step_ms_per_answer?": POSITIVE, "loop_ms_per_answer?": Float(0, "(-inf, inf)"),
           "passes_per_answer": Float(1, "[1, inf)"), "ms_per_pass": POSITIVE, "aten_ops_per_step": Float(0, "[0, inf)"),
           "arithmetic_ms_per_pass": POSITIVE}


def check_bench_settings(path, machine, settings, at, fix):
    """What the schema cannot say of a bench report's machine and settings: a device a run can be
    given, a batch and a latency sample within the problems evaluated, and those problems within the
    split of the data it names (where that data is here to read)."""
    if not re.fullmatch(DEVICE, machine["device"]):
        raise CDLMError(f"{path}: field {at}machine.device={machine['device']!r}: not a device bench.py runs on "
                        f"({DEVICE}); {fix}")
    for key in ("latency_n", "batch_size"):  # bench.py fits both to the problems it evaluates
        if settings[key] > settings["num_eval"]:
            raise CDLMError(f"{path}: field {at}settings.{key}={settings[key]} is above its num_eval="
                            f"{settings['num_eval']}: bench.py measures within the problems it evaluates; {fix}")
    try:  # the data the report names, where it is here: its split must hold the problems evaluated
        size = load_meta(settings["data_dir"])["splits"].get(settings["split"])
    except CDLMError:
        size = None  # not here (another machine's path) or not readable: the header names it as stored
    if size is not None and settings["num_eval"] > size:
        raise CDLMError(f"{path}: field {at}settings.num_eval={settings['num_eval']} is above the {size} problems of "
                        f"the {settings['split']} split of {settings['data_dir']}; {fix}")
    if settings["chance"]["whole_acc"] > settings["chance"]["final_acc"]:
        raise CDLMError(f"{path}: field {at}settings.chance.whole_acc={settings['chance']['whole_acc']} is above its "
                        f"final_acc={settings['chance']['final_acc']}: a whole answer right has its final answer "
                        f"right; {fix}")
    if machine["device"] == "cpu" and machine["gpu"] is not None:
        raise CDLMError(f"{path}: field {at}machine.gpu={machine['gpu']!r}, but the device is the CPU; {fix}")


def check_row_settings(path, settings, rows, root, fix, decoding=None):
    """bench.py decodes every thresholded method at its one --threshold (where given): a row at
    another contradicts the report's settings; and, given decoding (bench.settings_of: the
    caller's, above this module), each row decodes as its method does at the row's block size, its
    dependency's tokens per step read from the file: no row holds another method's settings."""
    odd = next((name for name, r in rows.items() if settings["threshold"] is not None
                and r["settings"].get("threshold") not in (None, settings["threshold"])), None)
    if odd:
        raise CDLMError(f"{path}: field {root}.{odd}.settings.threshold={rows[odd]['settings']['threshold']} is not "
                        f"the bench's threshold={settings['threshold']}; {fix}")
    if decoding is None:
        return
    for name, r in rows.items():
        st = r["settings"]
        try:
            want = asdict(decoding(name, st["block_size"], st.get("threshold") or settings["threshold"],
                                   lambda dep, _: rows[dep]["tokens_per_step"]))
        except KeyError:
            continue  # its settings follow a measurement of a method the file does not hold
        odd = next((k for k in st if k in want and st[k] != want[k]), None)
        if odd:
            raise CDLMError(f"{path}: field {root}.{name}.settings.{odd}={st[odd]!r} is not how bench.py decodes {name} "
                            f"({odd}={want[odd]!r}); {fix}")


def check_row(path, at, row, gen_len, n, machine, fix):
    """One bench row, as a seed file or a bench report stores it (at: its field path), against its
    schema and what its own figures imply: the scores, passes and tokens a pass within an answer of
    gen_len over n problems, and its settings (check_schedule)."""
    row = check_fields(row, BENCH_ROW, f"{path}: {at}", fix)
    for field in ("nfe", "tokens_per_step"):  # a pass finalizes at least one token, at most the answer
        if row[field] > gen_len:
            raise CDLMError(f"{path}: field {at}.{field}={row[field]:g} is above gen_len={gen_len}: a pass "
                            f"finalizes at least one token and at most the whole answer; {fix}")
    check_scores(path, row, at + ".", fix, n)
    for pre, mine in (("", row), ("compiled.", row.get("compiled", {}))):  # the steps alone are the ceiling
        p = mine.get("predicted", {})
        for k, worse in (("latency_ms", 1), ("throughput_tok_s", -1)):
            if f"steps_{k}" in p and worse * (p[f"steps_{k}"] - p[k]) > 0:
                raise CDLMError(f"{path}: field {at}.{pre}predicted.steps_{k}={p[f'steps_{k}']:g} is "
                                f"{'above' if worse > 0 else 'below'} its {k}={p[k]:g}, which adds the loop to "
                                f"the steps; {fix}")
    st = DecodeSettings(**row["settings"])  # settings sample.py decodes with, told by their cache and block
    attn = "bidirectional" if st.cache != "exact" else "causal" if st.block_size == 1 else "block_causal"
    st.check(attn, gen_len, origin=lambda f: f"{path}: field {at}.settings.{f}")
    check_schedule(path, at, row, gen_len, n, machine, fix)
    fewest = max(1.0, n * row["nfe"] - (n - 1) * gen_len)  # rows of at most gen_len passes, mean nfe: each took this
    if row["tokens_per_step"] > gen_len / fewest * (1 + 1e-9):
        raise CDLMError(f"{path}: field {at}.tokens_per_step={row['tokens_per_step']:g} is more than "
                        f"its NFE allows (every one of {n} problems took at least {fewest:g} passes, so at "
                        f"most {gen_len / fewest:g} tokens a pass); {fix}")
    return row


def check_schedule(path, at, row, gen_len, n, machine, fix):
    """What a row's own settings and figures imply: a pass finalizes tokens of one block only; a
    schedule of steps_per_block passes a block (no threshold) finalizes block_size / steps_per_block
    tokens a pass and takes gen_len / block_size blocks of passes (fewer only with early stop, and then
    whole blocks of them: over n problems, a multiple of steps_per_block passes in all); the
    arithmetic intensity is FLOPs over bytes; float32 work is not faster than the measured peak."""
    def bad(field, why):
        raise CDLMError(f"{path}: field {at}.{field}={row[field]:g} {why}; {fix}")
    if not math.isclose(row["arithmetic_intensity"], row["flops_per_token"] / row["bytes_per_token"], rel_tol=1e-6):
        bad("arithmetic_intensity", f"is not flops_per_token / bytes_per_token "
                                    f"({row['flops_per_token'] / row['bytes_per_token']:.4g})")
    if machine["dtype"] == "float32" and row["achieved_gflops"] > machine["peak_gflops"]:
        bad("achieved_gflops", f"is above the measured peak of {machine['peak_gflops']:g} GFLOP/s (float32)")
    s = row["settings"]
    if row["tokens_per_step"] > s["block_size"] * (1 + 1e-9):
        bad("tokens_per_step", f"is above its block_size={s['block_size']}: a pass finalizes tokens of one block")
    if s["threshold"] is None and s["steps_per_block"] and s["steps_per_block"] <= s["block_size"]:
        passes = gen_len // s["block_size"] * s["steps_per_block"]
        if abs(row["tokens_per_step"] - s["block_size"] / s["steps_per_block"]) > 1e-9 * row["tokens_per_step"]:
            bad("tokens_per_step", f"is not block_size / steps_per_block = {s['block_size'] / s['steps_per_block']:g}, "
                                   f"what a schedule of {s['steps_per_block']} passes a block finalizes")
        if row["nfe"] > passes * (1 + 1e-9) or (not s["early_stop"] and row["nfe"] < passes * (1 - 1e-9)):
            bad("nfe", f"is not {'at most ' if s['early_stop'] else ''}{passes}: {s['steps_per_block']} passes a block, "
                       f"{gen_len // s['block_size']} blocks" + (" (no early stop)" if not s["early_stop"] else ""))
        if round(row["nfe"] * n) % s["steps_per_block"]:
            bad("nfe", f"is not whole blocks of {s['steps_per_block']} passes over its {n} problems "
                       f"({round(row['nfe'] * n)} passes in all)")


# a speedup's timing and direction: latency theirs / mine, throughput mine / theirs
SPEEDUP_OF = dict(latency=("latency_ms", lambda mine, base: base / mine),
                  throughput=("throughput_tok_s", lambda mine, base: mine / base))


def ratios(mine, base):
    """Speedups of one method over a baseline timed in the same rounds (bench.py): the median of the
    ratios within each round."""
    return {w: statistics.median(f(a, b) for a, b in zip(mine["rounds"][k], base["rounds"][k]))
            for w, (k, f) in SPEEDUP_OF.items()}


def rounds_of(v, median):
    """Whether v is a list of one positive figure per timed round whose median is `median`."""
    return (isinstance(v, list) and v and all(isinstance(x, (int, float)) and x > 0 for x in v)
            and isinstance(median, (int, float)) and math.isclose(statistics.median(v), median, rel_tol=1e-9))


def check_speedups(path, bench, fix, root="bench"):
    """Every stored speedup is what the same file's timings give (ratios): the median of the
    per-round ratios where the file keeps the rounds (each median then their median too); in a file
    without rounds, within a factor 1.25 of the ratio of the medians (medians of 3 rounds: up to 17%
    apart in the committed files). A method's faster-path figures (bench.py's `fastest`) must be its
    faster path's, and its speedups those of each side's faster path. An edited ratio, or an edited
    timing, is named (its field under root: a seed file's bench, a bench report's methods)."""
    paths = {}  # (method, "" or "compiled."): its figures, each path timed against the same path
    for name, r in bench.items():
        for at, mine in (("", r), ("compiled.", r.get("compiled"))):
            if not isinstance(mine, dict):
                continue
            paths[name, at] = mine
            rounds = mine.get("rounds", {})
            if not (isinstance(rounds, dict) and set(rounds) <= {"latency_ms", "throughput_tok_s"}):
                raise CDLMError(f"{path}: field {root}.{name}.{at}rounds={rounds!r} is not a record of latency_ms "
                                f"and throughput_tok_s rounds; {fix}")
            for k, v in rounds.items():  # every round checked before any ratio reads one
                if k in ("latency_ms", "throughput_tok_s") and not rounds_of(v, mine.get(k)):
                    raise CDLMError(f"{path}: field {root}.{name}.{at}{k}={mine.get(k)!r} is not the median of its "
                                    f"rounds {v!r}; {fix}")
            pred = mine.get("predicted")
            if isinstance(pred, dict) and "rounds" in pred and not (  # the cost model's, one per timed round
                    isinstance(pred["rounds"], dict) and set(pred["rounds"]) == set(rounds) and all(
                        rounds_of(v, pred.get(k)) and len(v) == len(rounds[k]) for k, v in pred["rounds"].items())):
                raise CDLMError(f"{path}: field {root}.{name}.{at}predicted.rounds is not one prediction of each "
                                f"timing per round ({', '.join(rounds)}: {len(next(iter(rounds.values()), []))} "
                                f"rounds) whose medians are the predicted figures; {fix}")

    def check(field, stored, name, mine, b, base, k, f):  # one speedup against the timings it comes from
        if not (k in base and k in mine):
            raise CDLMError(f"{path}: field {field}: the timings it comes from ({k} of {name} and {b}) are not in "
                            f"the file; {fix}")
        rounds = [(p.get("rounds") or {}).get(k) for p in (mine, base)]
        if all(isinstance(x, list) for x in rounds) and len(rounds[0]) == len(rounds[1]):
            want, tol = statistics.median(f(a, c) for a, c in zip(*rounds)), 1e-6
        else:
            want, tol = f(mine[k], base[k]), 0.25
        if not isinstance(stored, (int, float)) or stored <= 0 or abs(math.log(stored / want)) > math.log1p(tol):
            raise CDLMError(f"{path}: field {field}={stored!r} is not what the file's timings give ({want:.4g}, "
                            f"from {k} of {name} and {b}); {fix}")

    for (name, at), mine in paths.items():
        for b in ("dlm", "dlm_stop"):
            for w, (k, f) in SPEEDUP_OF.items():
                key = f"speedup_{w}_vs_{b}"
                if key in mine:
                    check(f"{root}.{name}.{at}{key}", mine[key], name, mine, b, paths.get((b, at), {}), k, f)
    have = [name for name, r in bench.items() if isinstance(r, dict) and "fastest" in r]
    lack = next((name for name in bench if have and name not in have), None)
    if lack:  # bench.py writes one for every method or for none
        raise CDLMError(f"{path}: field {root}.{lack}.fastest is missing, while {root}.{have[0]} has one; {fix}")
    faster = {}  # (method, measure): the path its fastest record names, checked to be the faster one
    for name, r in bench.items():
        fast = r.get("fastest") if isinstance(r, dict) else None
        for w, (k, f) in SPEEDUP_OF.items() if isinstance(fast, dict) else ():
            at = {"eager": "", "compiled": "compiled."}.get(fast.get(f"{w}_path"))
            other = paths.get((name, "compiled." if at == "" else ""), {})
            if at is None or (name, at) not in paths or fast.get(k) != paths[name, at].get(k) or \
                    (k in other and f(other[k], paths[name, at][k]) > 1):
                raise CDLMError(f"{path}: field {root}.{name}.fastest.{k}={fast.get(k)!r} is not the figure of "
                                f"{name}'s faster path; {fix}")
            faster[name, w] = paths[name, at]
    for name, r in bench.items():
        for w, (k, f) in SPEEDUP_OF.items():
            for b in ("dlm", "dlm_stop"):
                key = f"speedup_{w}_vs_{b}"
                if (name, w) in faster and key in r["fastest"]:
                    check(f"{root}.{name}.fastest.{key}", r["fastest"][key], name, faster[name, w], b,
                          faster.get((b, w), {}), k, f)


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
    """Your run's headline figures against the range of the committed results files (RESULTS.md's
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
                 f"(RESULTS.md's ranges{'; =: equal to the committed seed ' + str(run['seed']) if same else ''}):")
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


def report(task, results_dir, variants=(), decoding=None):
    """RESULTS.md's tables, from the results files alone: headline figures over seeds, AR, and the
    ablation (its rows in the order of `variants`, then any other)."""
    if not os.path.isdir(results_dir):
        what = "is a file, not a directory" if os.path.exists(results_dir) else "does not exist"
        raise CDLMError(f"option results_dir={results_dir!r} {what}: give the folder of the results files (results)")
    files = read_results(task, results_dir, variants, decoding)
    runs = [r for _, r in files.seeds]
    lines = [] if runs else [f"{task}: no seed files (seed<N>.json) in {results_dir}/{task}/ yet: no headline table "
                             f"(python demo.py --task={task} makes them)"]
    if runs:
        r0 = runs[0]
        n, chance = r0["num_eval"], r0["bench_settings"]["chance"]
        def each(say):  # one figure for all the seeds, else each seed's
            return say(r0) if len({say(r) for r in runs}) == 1 else ", ".join(f"{say(r)} (seed {r['seed']})" for r in runs)
        trained = each(lambda r: f"{r['threads']} thread(s)" if r.get("threads") else "an unrecorded thread count")
        cpu = each(lambda r: f"{r['machine']['cpu']} ({r['machine']['cores']} cores)")
        timed, torch_ = each(lambda r: str(r["bench_machine"]["threads"])), each(lambda r: r["machine"]["torch"])
        lines += [f"{task}: {len(runs)} seed(s) {[r['seed'] for r in runs]}, {n} test problems; trained at {trained}; "
                  f"accuracy on {cpu}, timings at {timed} threads, torch {torch_}; "
                  f"commits {', '.join(sorted({str(r['commit']) for r in runs}))}",
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
        for name in [v for v in variants if v in by] + [v for v in by if v not in variants]:
            rs = by[name]
            lines.append(f"| {name} | {spread([100 * r['final_acc'] for r in rs], '%')} | "
                         f"{spread([100 * r['whole_acc'] for r in rs], '%')} | {spread([r['nfe'] for r in rs], '', 2)} | "
                         f"{len(rs)} |")
    lines += frontier(task, results_dir, files.seeds)
    return "\n".join(lines)


# the student's frontier: results_dir/<task>/frontier/<run>_seed<N>.json, one student run each, its
# checkpoint scored (sample.py --eval) at every save along the training: passes and accuracy against
# the training budget
FRONTIER_FILE = dict(task=Str(""), run=Str(""), seed=Int(0, SEED), teacher=Str(""), teacher_whole_acc=SHARE,
                     trajectories=Int(1, "[1, inf)"), max_iters=Int(1, "[1, inf)"), num_eval=Int(1, "[1, inf)"),
                     points=Each(SCORES, r"[1-9][0-9]*", at_least=1),
                     default_student=dict(iters=Int(1, "[1, inf)"), trajectories=Int(1, "[1, inf)"), **SCORES))


def read_frontier(task, results_dir):
    """{run: [record, by seed]} of results_dir/<task>/frontier, each file checked against its name."""
    here = os.path.join(results_dir, task, "frontier")
    fix = f"restore it (git checkout) or move it out of {here}/: the report reads every file there"
    runs = {}
    for name in json_names(here, "the frontier", fix):
        path = os.path.join(here, name)
        r = check_fields(read_json(path, fix), FRONTIER_FILE, path, fix)
        if r["task"] != task or name != f"{r['run']}_seed{r['seed']}.json":
            raise CDLMError(f"{path}: holds {r['task']} run {r['run']!r} seed {r['seed']}, whose file is "
                            f"{r['run']}_seed{r['seed']}.json of results/{r['task']}/frontier; {fix}")
        for it, point in r["points"].items():
            check_scores(path, point, f"points.{it}.", fix, r["num_eval"])
            if int(it) > r["max_iters"]:  # a checkpoint saved along a run of max_iters iterations
                raise CDLMError(f"{path}: field points.{it}: iteration {it} of a run of max_iters={r['max_iters']}; {fix}")
        check_scores(path, r["default_student"], "default_student.", fix, r["num_eval"])
        same = runs.setdefault(r["run"], [])
        odd = next((k for k in FRONTIER_SAME if same and same[0][k] != r[k]), None)
        if odd:  # its table averages the seeds of one run: one teacher, one set size, one schedule, one test
            raise CDLMError(f"{path}: field {odd}={r[odd]!r}, but the run's seed {same[0]['seed']} has "
                            f"{same[0][odd]!r}: one table averages both; {fix}")
        same.append(r)
    return {run: sorted(rs, key=lambda r: r["seed"]) for run, rs in runs.items()}


FRONTIER_SAME = ("teacher", "teacher_whole_acc", "trajectories", "max_iters", "num_eval",  # across one run's seeds
                 "default_student")  # the one reference student each file places beside its run


def frontier(task, results_dir, seeds=()):
    """The frontier's table: each scored iteration, mean (min-max) over the seeds that reached it. The
    default student a frontier file places beside its run is the presets' own (PRESET_SEED's): its
    scores must be that seed file's, where `seeds` ((path, record) of read_results) holds it."""
    lines = []
    ref = next(((p, r["bench"]["cdlm"]) for p, r in seeds if r["seed"] == PRESET_SEED and "cdlm" in r["bench"]), None)
    for run, rs in read_frontier(task, results_dir).items():
        r0, d = rs[0], rs[0]["default_student"]
        for k in ("whole_acc", "nfe") if ref else ():
            if not math.isclose(d[k], ref[1][k], rel_tol=1e-9):
                raise CDLMError(f"{os.path.join(results_dir, task, 'frontier', run)}_seed*.json: field default_student."
                                f"{k}={d[k]!r}, but the default student's file {ref[0]} has bench.cdlm.{k}="
                                f"{ref[1][k]!r}: restore them (git checkout)")
        lines += ["", f"the student along its training ({run}): {r0['trajectories']} trajectories of {r0['teacher']} "
                      f"(whole answer {100 * r0['teacher_whole_acc']:.1f}%), a cosine schedule to {r0['max_iters']} "
                      f"iterations, seeds {[r['seed'] for r in rs]}, {r0['num_eval']} test problems; the default "
                      f"student ({d['iters']} iterations, {d['trajectories']} trajectories): "
                      f"{100 * d['whole_acc']:.1f}% whole answers, {d['nfe']:.2f} passes", "",
                  "| iteration | whole answer | final answer | passes (NFE) | seeds |", "|---|---|---|---|---|"]
        for it in sorted({int(i) for r in rs for i in r["points"]}):
            ps = [r["points"][str(it)] for r in rs if str(it) in r["points"]]
            lines.append(f"| {it} | {spread([100 * p['whole_acc'] for p in ps], '%')} | "
                         f"{spread([100 * p['final_acc'] for p in ps], '%')} | {spread([p['nfe'] for p in ps], '', 2)} | "
                         f"{len(ps)} |")
    return lines
