"""
One bench report as tables: what `bench.py` prints after a run and `bench.py --table` prints from a
stored report (bench.py's file, the bench part of a seed file of demo.py, or a scale study), each
read back checked (its rows, its scores, its speedups against its own timings) before a line is
printed.
"""
import math
import re
import statistics

from configurator import CDLMError, Float, Int, Str
from data.common import Each, check_fields, read_json
from results import (BENCH_MACHINE, BENCH_SETTINGS, PROFILE, check_bench_settings, check_row, check_speedups,
                     check_row_settings)
from files import Output


def stored_report(path, methods, decoding=None):
    """A bench report read back for table(): bench.py's own file, the bench part of demo.py's seed file,
    or a scale study (bench.py --scale); each row one of `methods`, its figures ones a bench can measure,
    and with decoding (bench.settings_of) its settings those of its method."""
    r = read_json(path, "option table")
    if isinstance(r, dict) and "scale" in r:
        return check_scale(path, check_fields(r, SCALE_FILE, path, f"option table={path!r}: rerun the scale study that wrote it"))
    root = "bench" if isinstance(r, dict) and "bench" in r else "methods"  # where a row's fields are in the file
    if root == "bench":
        r = dict(methods=r["bench"], settings=r.get("bench_settings"), machine=r.get("bench_machine"))
    if not (isinstance(r, dict) and all(isinstance(r.get(k), dict) for k in ("methods", "settings", "machine"))):
        raise CDLMError(f"option table={path!r}: not a bench report (no methods, settings and machine)")
    fix = f"option table={path!r}: rerun the bench that wrote it"
    at = "bench_" if root == "bench" else ""  # a seed file's names for them
    for key, schema in (("machine", BENCH_MACHINE), ("settings", BENCH_SETTINGS)):  # what the table's header reads
        check_fields(r[key], schema, path, fix, at + key)
    check_bench_settings(path, r["machine"], r["settings"], at, fix)
    if not r["methods"]:
        raise CDLMError(f"{path}: field methods is empty: no method was measured; {fix}")
    for name, row in r["methods"].items():
        if name not in methods:
            raise CDLMError(f"{fix}: its row {name!r} is no method of bench.py ({', '.join(methods)})")
        check_row(path, f"{root}.{name}", row, r["settings"]["gen_len"], r["settings"]["num_eval"],
                  r["machine"], fix)
    if "profile" in r:  # its own table: each of the report's methods, eager or compiled
        check_fields(r["profile"], Each(PROFILE, r".+", at_least=1), path, fix, "profile")
        odd = next((name for name in r["profile"] if name.removesuffix(" compiled") not in r["methods"]), None)
        if odd:
            raise CDLMError(f"{path}: field profile.{odd}: no such method in the report; {fix}")
        for name, p in r["profile"].items():
            check_profile(path, f"profile.{name}", p, r["settings"]["gen_len"], fix)
    check_row_settings(path, r["settings"], r["methods"], root, fix, decoding)
    check_speedups(path, r["methods"], fix, root)  # no ratio printed that its own timings contradict
    return r


def check_profile(path, at, p, gen_len, fix):
    """A profile's figures are differences and quotients of its measurements (roofline.profile_decode):
    each as they give it, no more passes than gen_len (a pass finalizes at least one token), and no
    pass's arithmetic at the measured peak longer than the pass."""
    if p["passes_per_answer"] > gen_len:
        raise CDLMError(f"{path}: field {at}.passes_per_answer={p['passes_per_answer']:g} is above gen_len={gen_len}; "
                        f"{fix}")
    sums = {"sampler_ms_per_answer": p["ms_per_answer"] - p["model_ms_per_answer"],
            "ms_per_pass": p["model_ms_per_answer"] / p["passes_per_answer"]}
    if "step_ms_per_answer" in p and "loop_ms_per_answer" in p:
        sums["loop_ms_per_answer"] = p["ms_per_answer"] - p["step_ms_per_answer"]
    for key, want in sums.items():
        if not math.isclose(p[key], want, rel_tol=1e-9, abs_tol=1e-9 * p["ms_per_answer"]):
            raise CDLMError(f"{path}: field {at}.{key}={p[key]:g} is not what the profile's own times give "
                            f"({want:.6g}); {fix}")
    if p["arithmetic_ms_per_pass"] > p["ms_per_pass"]:
        raise CDLMError(f"{path}: field {at}.arithmetic_ms_per_pass={p['arithmetic_ms_per_pass']:g} is above its "
                        f"ms_per_pass={p['ms_per_pass']:g}: no pass runs faster than the measured peak; {fix}")


def is_report(path):
    """Whether path holds a bench report as bench.py writes it: an object whose methods, settings,
    machine and config are objects, or a scale study's (scale, machine and config)."""
    try:
        r = read_json(path, "")
    except CDLMError:
        return False
    return isinstance(r, dict) and any(all(isinstance(r.get(k), dict) for k in keys) for keys in
                                       (("methods", "settings", "machine", "config"), ("scale", "machine", "config")))


REPORT = Output(".json", "a bench report (an object with methods, settings, machine and config)", is_report)


def table(report):
    if "scale" in report:
        return scale_table(report)
    m, s = report["machine"], report["settings"]
    where = f"{m['device']}" + (f" ({m['gpu']})" if m.get("gpu") else "") + f", {m['dtype']}, torch {m['torch']}"
    vs = lambda r, base: (f"{r[f'speedup_latency_vs_{base}']:.1f}x / {r[f'speedup_throughput_vs_{base}']:.1f}x"
                          if f"speedup_latency_vs_{base}" in r else "-")
    lines = [f"{s['num_eval']} {s['split']} problems of {s['data_dir']} on {where}; measured peaks "
             f"{m['peak_gflops']:.0f} GFLOP/s, {m['peak_gb_s']:.1f} GB/s; a guess (the most frequent answer) "
             f"scores {100 * s['chance']['final_acc']:.1f}% on the final answer, "
             f"{100 * s['chance']['whole_acc']:.1f}% on the whole", "",
             "| method | final answer | whole answer | NFE | tokens/step | latency (ms, batch 1) | throughput (tok/s, batch "
             f"{s['batch_size']}) | vs dlm (latency / throughput) | vs dlm_stop |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in report["methods"].items():
        differ = next((f" ({100 * v:.1f}% differ)" for k, v in r.items() if k.startswith("differs_from_")), "")
        lines.append(f"| {name} | {100 * r['final_acc']:.1f}% | {100 * r['whole_acc']:.1f}%{differ} | {r['nfe']:.1f} | {r['tokens_per_step']:.2f} | "
                     f"{r['latency_ms']:.1f} | {r['throughput_tok_s']:,.0f} | {vs(r, 'dlm')} | {vs(r, 'dlm_stop')} |")
    if any("compiled" in r for r in report["methods"].values()):
        lines += ["", "| under torch.compile | latency (ms, batch 1) | throughput (tok/s) | vs dlm (latency / throughput) "
                      "| vs dlm_stop | first calls (s, compile included) | answers that differ from eager |",
                  "|---|---|---|---|---|---|---|"]
        for name, r in report["methods"].items():
            c = r.get("compiled")
            if c:
                lines.append(f"| {name} | {c['latency_ms']:.1f} | {c['throughput_tok_s']:,.0f} | {vs(c, 'dlm')} | "
                             f"{vs(c, 'dlm_stop')} | {c['compile_s']:.1f} | {100 * c['differs_from_eager']:.1f}% |")
    if any("fastest" in r for r in report["methods"].values()):
        lines += ["", "| each on its faster path | latency (ms, batch 1) | throughput (tok/s) | vs dlm (latency / throughput) "
                      "| vs dlm_stop |", "|---|---|---|---|---|"]
        for name, r in report["methods"].items():
            f = r["fastest"]
            lines.append(f"| {name} | {f['latency_ms']:.1f} {f['latency_path']} | {f['throughput_tok_s']:,.0f} "
                         f"{f['throughput_path']} | {vs(f, 'dlm')} | {vs(f, 'dlm_stop')} |")
    lines += predicted_table(report)
    shown = lambda a, b, d: (d if f"{a:.{d}f}" != f"{b:.{d}f}" else d + 2)  # digits enough to tell them apart
    slower = [f"{name} compiled is slower than eager at {what} ({c[key]:,.{e}f} against {r[key]:,.{e}f} {unit})"
              for name, r in report["methods"].items() if "latency_ms" in r.get("compiled", {}) for c in [r["compiled"]]
              for what, key, worse, d, unit in (("batch 1", "latency_ms", 1, 1, "ms"),
                                                (f"batch {s['batch_size']}", "throughput_tok_s", -1, 0, "tok/s"))
              if worse * (c[key] - r[key]) > 0 for e in [shown(c[key], r[key], d)]]
    if slower:  # a ratio is fair when each side runs its faster path
        fair = any("fastest" in r for r in report["methods"].values())
        lines += ["", "note: " + "; ".join(slower) + (". The faster-path table takes the faster one for each." if fair
                                                     else ". The compiled ratios above take it as it is.")]
    lines += ["", "| method | MFLOP per token | KB moved per token | FLOP/byte | achieved GFLOP/s | % of peak |",
              "|---|---|---|---|---|---|"]
    for name, r in report["methods"].items():
        lines.append(f"| {name} | {r['flops_per_token'] / 1e6:.2f} | {r['bytes_per_token'] / 1e3:.0f} | "
                     f"{r['arithmetic_intensity']:.1f} | {r['achieved_gflops']:.2f} | "
                     f"{100 * r['achieved_gflops'] / m['peak_gflops']:.1f}% |")
    for name, pts in report.get("sweep", {}).items():
        key = "block_size" if name.endswith("block_size") else "threshold"
        lines += ["", f"| {name}: {key} | " + " | ".join(str(p[key]) for p in pts) + " |", "|---|" + "---|" * len(pts)]
        for field, f in (("final_acc", lambda v: f"{100 * v:.1f}%"), ("whole_acc", lambda v: f"{100 * v:.1f}%"),
                         ("nfe", "{:.1f}".format),
                         ("latency_ms", "{:.1f}".format)):
            lines.append(f"| {field.replace('_ms', ' (ms, batch 1)')} | " + " | ".join(f(p[field]) for p in pts) + " |")
    if "profile" in report:
        names = list(report["profile"])
        lines += ["", "| where a decode's time goes (batch 1) | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]
        for key in dict.fromkeys(k for n in names for k in report["profile"][n]):  # a file of the optional fields or not
            lines.append(f"| {key.replace('_', ' ')} | " + " | ".join(
                f"{report['profile'][n][key]:.2f}" if key in report["profile"][n] else "-" for n in names) + " |")
    return "\n".join(lines)


def predicted_table(report):
    """Each method's timings predicted by the cost model (roofline.predict) beside the measured ones,
    and the cdlm-vs-dlm ratios its parts give: the ceiling, from the steps alone, with no time
    between them. A report of an older cost model (the forward passes alone) reads as one."""
    paths = [(name, path, r if path == "eager" else r["compiled"]) for name, r in report["methods"].items()
             for path in ("eager", "compiled") if "predicted" in (r if path == "eager" else r.get("compiled", {}))]
    if not paths:
        return []
    loop = all("steps_latency_ms" in r["predicted"] for _, _, r in paths)  # steps and loop, timed apart
    def err(r, k):  # the median of the rounds' errors, each prediction against its own round's decodes
        p = r["predicted"]
        pairs = list(zip(p["rounds"][k], r["rounds"][k])) if "rounds" in p else [(p[k], r[k])]
        return f"{100 * (statistics.median(a / b for a, b in pairs) - 1):+.0f}%"
    lines = ["", f"| {'the cost model' if loop else 'from the passes alone'} | path | latency (ms, batch 1) | predicted | "
                 "error | throughput (tok/s) | predicted | error |", "|---|---|---|---|---|---|---|---|"]
    for name, path, r in paths:
        p = r["predicted"]
        lines.append(f"| {name} | {path} | {r['latency_ms']:.1f} | {p['latency_ms']:.1f} | {err(r, 'latency_ms')} "
                     f"| {r['throughput_tok_s']:,.0f} | {p['throughput_tok_s']:,.0f} | {err(r, 'throughput_tok_s')} |")
    lines += ["", "predicted: the decodes' steps, each shape timed alone (its forward and the step's own operations), "
                  "plus the sampler's loop around them, timed with the steps replaced by their results; the error is "
                  "what timing the parts apart misses, and the machine's noise" +
                  (" (the median of the rounds' errors, each round's prediction against its own decodes)"
                   if all("rounds" in r["predicted"] for _, _, r in paths) else "") if loop else
                  "predicted: each pass shape of the decodes timed alone, summed; the error is the sampler and the "
                  "Python between passes (a decode costs more than its passes), and the machine's noise"]
    got = {(name, path): r for name, path, r in paths}
    lat_k, thr_k = ("steps_latency_ms", "steps_throughput_tok_s") if loop else ("latency_ms", "throughput_tok_s")
    for path in ("eager", "compiled"):
        if ("cdlm", path) in got and ("dlm", path) in got:
            c, d = got["cdlm", path]["predicted"], got["dlm", path]["predicted"]
            m = got["cdlm", path]
            measured = f"; measured {m['speedup_latency_vs_dlm']:.1f}x / {m['speedup_throughput_vs_dlm']:.1f}x" \
                if "speedup_latency_vs_dlm" in m else ""
            predicted = f"; predicted {d['latency_ms'] / c['latency_ms']:.1f}x / " \
                        f"{c['throughput_tok_s'] / d['throughput_tok_s']:.1f}x" if loop else ""
            lines.append(f"cdlm vs dlm from the {'steps' if loop else 'passes'} alone ({path}), the ceiling: "
                         f"{d[lat_k] / c[lat_k]:.1f}x latency / {c[thr_k] / d[thr_k]:.1f}x throughput{predicted}{measured}")
    return lines


# -----------------------------------------------------------------------------
# the scale study (bench.py --scale)

RATIO = Float(1.0, "(0, inf)")
SCALE_ROW = dict(prompt_len=Int(1, "[1, inf)"), gen_len=Int(1, "[1, inf)"), block_size=Int(1, "[1, inf)"),
                 n_layer=Int(1, "[1, inf)"), n_embd=Int(1, "[1, inf)"), params=Int(1, "[1, inf)"),
                 dlm_pass_ms=Float(1.0, "(0, inf)"), cdlm_pass_ms=Float(1.0, "(0, inf)"),
                 **{f"{me}_vs_{base}_{tag}": RATIO for me in ("cdlm", "cdlm_floor") for base in ("dlm", "ar")
                    for tag in ("latency", "throughput")},
                 **{f"cdlm_vs_{base}_flops": RATIO for base in ("dlm", "ar")},
                 **{f"ms_per_pass_{w}": Each(RATIO, r"[0-9]+x[a-z]+", at_least=1) for w in ("latency", "throughput")},
                 **{f"gflop_s_{w}": Each(RATIO, r"[a-z_]+", at_least=1) for w in ("latency", "throughput")})
SCALE_FILE = dict(scale=dict(rows=Each(SCALE_ROW, r"[0-9]+/[0-9]+ [0-9]+x[0-9]+", at_least=1),
                             per_block=Float(1.0, "[1, inf)"), tokens_per_pass=Float(1.0, "(0, inf)"),
                             block_size=Int(1, "[1, inf)"), batch=Int(1, "[1, inf)")),
                  machine=dict(cpu=Str(""), threads=Int(1, "[1, inf)")), config=dict(student_dir=Str("")))


def check_scale(path, report, tol=1e-6):
    """What the schema cannot say of a scale study's rows: each row's key names its shape and size, a
    block divides the answer, a model of n_layer blocks of width n_embd has at least their 12 n_embd^2
    weights each, and every ratio is what the row's own pass costs give (roofline.answer_windows: the
    passes of each method's whole answer, summed) and, for FLOPs, its own rates."""
    from roofline import answer_windows
    s, fix = report["scale"], f"option table={path!r}: rerun the scale study that wrote it"
    if s["tokens_per_pass"] > s["block_size"] or not math.isclose(s["per_block"] * s["tokens_per_pass"], s["block_size"],
                                                                 rel_tol=tol):  # passes a block x tokens a pass
        raise CDLMError(f"{path}: fields scale.tokens_per_pass={s['tokens_per_pass']:g} and per_block="
                        f"{s['per_block']:g} do not make its block_size={s['block_size']} (a pass finalizes tokens of "
                        f"one block); {fix}")
    for key, r in s["rows"].items():
        def bad(field, why):
            raise CDLMError(f"{path}: field scale.rows.{key}.{field}={r[field]!r} {why}; {fix}")
        for field, value in zip(("gen_len", "block_size", "n_layer", "n_embd"), map(int, re.split("[/ x]", key))):
            if r[field] != value:
                bad(field, f"is not the {value} its key names")
        if r["gen_len"] % r["block_size"]:
            bad("block_size", f"does not divide gen_len={r['gen_len']}")
        if r["params"] < 12 * r["n_layer"] * r["n_embd"] ** 2:
            bad("params", f"is fewer than the {12 * r['n_layer'] * r['n_embd'] ** 2:,} weights of {r['n_layer']} blocks "
                          f"of width {r['n_embd']}")
        P, G, bs = r["prompt_len"], r["gen_len"], r["block_size"]
        ms = r.get("ms_per_pass_latency")  # the two passes the table prints, as the row times them
        for field, shape in (("dlm_pass_ms", f"{P + G}xnone"), ("cdlm_pass_ms", f"{bs}xexact")):
            if isinstance(ms, dict) and shape in ms and not math.isclose(r[field], ms[shape], rel_tol=tol):
                bad(field, f"is not the row's own ms_per_pass_latency.{shape}={ms[shape]:.4g}")
        per_block = {"dlm": 1, "ar": 1, "cdlm": max(1.0, bs / s["tokens_per_pass"]), "cdlm_floor": 1}
        for tag in ("latency", "throughput"):
            ms, rate = r.get(f"ms_per_pass_{tag}"), r.get(f"gflop_s_{tag}")
            if not isinstance(ms, dict):
                continue
            windows = {m: answer_windows(m.split("_")[0], P, G, 1 if m == "ar" else bs, k) for m, k in per_block.items()}
            cost = {m: sum(n * ms.get(f"{hi - lo}x{'none' if m == 'dlm' else 'exact'}", math.nan) for lo, hi, n in w)
                    for m, w in windows.items()}
            for base in ("dlm", "ar"):
                for me in ("cdlm", "cdlm_floor"):
                    field, want = f"{me}_vs_{base}_{tag}", cost[base] / cost[me]
                    if math.isfinite(want) and not math.isclose(r[field], want, rel_tol=tol):
                        bad(field, f"is not what the row's pass costs give ({want:.4g})")
                if tag == "latency" and isinstance(rate, dict) and all(isinstance(rate.get(m), (int, float)) for m in (base, "cdlm")):
                    want = rate[base] * cost[base] / (rate["cdlm"] * cost["cdlm"])
                    if math.isfinite(want) and not math.isclose(r[f"cdlm_vs_{base}_flops"], want, rel_tol=tol):
                        bad(f"cdlm_vs_{base}_flops", f"is not what the row's rates and pass costs give ({want:.4g})")
    return report


def scale_table(report):
    """The scale study as bench.py --scale prints it: projected ratios at each size and shape."""
    s, m = report["scale"], report["machine"]
    lines = [f"random weights, eager float32 on {m['cpu']} ({m['threads']} threads); cdlm at {s['tokens_per_pass']:.2f} tokens "
             f"per pass ({s['per_block']:.2f} passes per block of {s['block_size']}, measured on "
             f"{report['config']['student_dir']}) and at the floor of 1 pass per block; batch 1 and {s['batch']}",
             "", f"| answer / block | layers x width | params (M) | pass (ms, batch 1): dlm / cdlm | cdlm vs dlm: batch 1 "
                 f"| batch {s['batch']} | FLOP ratio | at 1 pass per block: batch 1 / {s['batch']} | cdlm vs ar: batch 1 "
                 f"| batch {s['batch']} |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in s["rows"].values():
        lines.append(f"| {r['gen_len']} / {r['block_size']} | {r['n_layer']} x {r['n_embd']} | {r['params'] / 1e6:.1f} | "
                     f"{r['dlm_pass_ms']:.2f} / {r['cdlm_pass_ms']:.2f} | "
                     f"{r['cdlm_vs_dlm_latency']:.1f}x | {r['cdlm_vs_dlm_throughput']:.1f}x | {r['cdlm_vs_dlm_flops']:.1f}x | "
                     f"{r['cdlm_floor_vs_dlm_latency']:.1f}x / {r['cdlm_floor_vs_dlm_throughput']:.1f}x | "
                     f"{r['cdlm_vs_ar_latency']:.2f}x | {r['cdlm_vs_ar_throughput']:.2f}x |")
    return "\n".join(lines)
