"""
Side-by-side benchmark of every decoding method on the same held-out problems, in one process.

    python bench.py                 # markdown table + out/bench.json
    python bench.py --sweep         # also the accuracy/latency frontier over thresholds

Methods (CDLM Sec. 5 compares the same family):
    ar               the autoregressive model, KV cache, greedy
    dlm              the teacher, naive: bidirectional, no cache, one token per step
    dlm_threshold    the teacher with threshold parallel decoding, no cache (training-free)
    dlm_fewer_steps  the teacher with the student's mean steps per block (naive step cutting)
    cdlm             the student: block KV cache, threshold, early stop
"""
import os
import platform
import statistics
import sys
import time

import torch

from configurator import configure
from data.common import atomic_write_json, load_split
from model import load_model
from sample import autocast, evaluate, generate, pick_device, pick_dtype

config = dict(
    teacher_dir="out/teacher",
    student_dir="out/student",
    ar_dir="out/ar",
    methods="ar,dlm,dlm_threshold,dlm_fewer_steps,cdlm",
    split="test",
    num_eval=500,          # problems for accuracy and NFE
    batch_size=64,         # batch for accuracy and for throughput
    latency_n=20,          # problems decoded one at a time per latency repeat
    repeats=3,             # timings are the median of this many repeats
    threshold=None,        # None: the student's own threshold, also used by dlm_threshold
    sweep=False,
    sweep_thresholds=[0.5, 0.7, 0.8, 0.9, 0.95, 0.99],
    out_path="out/bench.json",
    seed=1337,
    device="auto",
    dtype="auto",          # 'float32' | 'bfloat16' | 'float16' | 'auto' (bf16 autocast on CUDA)
)


def sync(device):
    """Wait for queued GPU work: CUDA kernels run asynchronously, so the clock is read after this."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def same_data(a, b):
    """Whether two checkpoints' data metas describe the same token layout (lengths and tokenizer)."""
    keys = ("gen_len", "prompt_len", "vocab_size", "tokenizer", "chars", "bpe", "mask_id", "eos_id")
    return all(a.get(k) == b.get(k) for k in keys)


def decoded_tokens(tokens, eos_id, block_size, early_stop):
    """Answer positions the sampler finalized per row: with early stop, up to the end of the block
    holding the first EOS (the rest was filled in without a forward pass)."""
    L = tokens.size(1)
    if not early_stop:
        return torch.full((tokens.size(0),), L)
    is_eos = tokens == eos_id
    first = torch.where(is_eos.any(1), is_eos.float().argmax(1), torch.full((tokens.size(0),), L - 1))
    return torch.clamp((first // block_size + 1) * block_size, max=L)


def answer_tokens(tokens, eos_id):
    """Useful answer tokens per row: up to and including the first EOS."""
    is_eos = tokens == eos_id
    return torch.where(is_eos.any(1), is_eos.float().argmax(1) + 1, torch.full((tokens.size(0),), tokens.size(1)))


def timed_decode(model, meta, prompt, settings):
    sync(prompt.device)
    t0 = time.perf_counter()
    out, nfe = generate(model, prompt, meta["gen_len"], model.cfg.block_size, meta["mask_id"], meta["eos_id"],
                        **settings)
    sync(prompt.device)
    return out, nfe, time.perf_counter() - t0


def mean_tokens_per_step(model, meta, prompts, settings):
    """Answer positions finalized per forward pass, averaged over rows, from one batched decode."""
    out, steps, _ = timed_decode(model, meta, prompts, settings)
    decoded = decoded_tokens(out, meta["eos_id"], model.cfg.block_size, settings["early_stop"])
    return (decoded.float() / steps.float()).mean().item()


def bench_method(model, meta, rows, settings, cfg, bar=None):
    """Accuracy and NFE on all rows, latency at batch 1, throughput at batch_size."""
    acc, nfe, _ = evaluate(model, meta, rows, settings, cfg["batch_size"], seed=cfg["seed"], progress=bar)
    device = next(model.parameters()).device
    P, eos = meta["prompt_len"], meta["eos_id"]
    prompts = torch.as_tensor(rows[:, :P].astype("int64"), device=device)
    tps = mean_tokens_per_step(model, meta, prompts[:cfg["batch_size"]], settings)  # batched equals per-row
    lat, thr = [], []
    for _ in range(cfg["repeats"]):
        times = [timed_decode(model, meta, prompts[i:i + 1], settings)[2] for i in range(cfg["latency_n"])]
        lat.append(sum(times) / len(times))
        out, _, dt = timed_decode(model, meta, prompts[:cfg["batch_size"]], settings)
        thr.append(answer_tokens(out, eos).sum().item() / dt)
    return dict(accuracy=acc, nfe=nfe, tokens_per_step=tps, latency_ms=1000 * statistics.median(lat),
                throughput_tok_s=statistics.median(thr), settings=settings)


def run(cfg):
    device = pick_device(cfg["device"])
    dtype = pick_dtype(cfg["dtype"], device)
    torch.manual_seed(cfg["seed"])
    methods = [m.strip() for m in cfg["methods"].split(",") if m.strip()]
    known = ("ar", "dlm", "dlm_threshold", "dlm_fewer_steps", "cdlm")
    bad = [m for m in methods if m not in known]
    if bad:
        raise SystemExit(f"config error: unknown method(s) {bad}; known: {', '.join(known)}")
    models = {}
    for name, key in (("teacher", "teacher_dir"), ("student", "student_dir"), ("ar", "ar_dir")):
        need = {"teacher": {"dlm", "dlm_threshold", "dlm_fewer_steps"}, "student": {"cdlm", "dlm_fewer_steps"},
                "ar": {"ar"}}[name]
        if need & set(methods):
            models[name] = load_model(os.path.join(cfg[key], "ckpt.pt"), device)
    meta = next(iter(models.values()))[1]["data_meta"]
    for name, (_, ckpt) in models.items():
        if not same_data(ckpt["data_meta"], meta):
            raise SystemExit(f"error: the {name} checkpoint was trained on other data (gen_len/prompt_len/tokenizer)")
    data_dir = next(iter(models.values()))[1]["config"]["data_dir"]
    rows = load_split(data_dir, cfg["split"], meta)[:cfg["num_eval"]]
    student_ckpt = models["student"][1] if "student" in models else None
    threshold = cfg["threshold"] if cfg["threshold"] is not None else \
        (student_ckpt["sampling"]["threshold"] if student_ckpt else 0.9)
    plans = {
        "ar": ("ar", dict(steps_per_block=1, threshold=None, use_cache=True, early_stop=True)),
        "dlm": ("teacher", dict(steps_per_block=None, threshold=None, use_cache=False, early_stop=False)),
        "dlm_threshold": ("teacher", dict(steps_per_block=None, threshold=threshold, use_cache=False, early_stop=True)),
        "dlm_fewer_steps": ("teacher", None),  # filled in from the student's measured steps
        "cdlm": ("student", dict(steps_per_block=None, threshold=threshold, use_cache=True, early_stop=True)),
    }
    order = [m for m in ("cdlm", "ar", "dlm", "dlm_threshold", "dlm_fewer_steps") if m in methods]
    from tqdm import tqdm
    results = {}
    with tqdm(total=len(order) * len(rows), desc="bench", file=sys.stderr) as bar, autocast(device, dtype):
        for name in order:
            which, settings = plans[name]
            model, ckpt = models[which]
            B = model.cfg.block_size
            if name == "dlm":
                settings = {**settings, "steps_per_block": B}
            if name == "dlm_fewer_steps":
                if "cdlm" in results:
                    tps = results["cdlm"]["tokens_per_step"]
                else:  # no cdlm run in this bench: measure the student's steps on the side
                    p = torch.as_tensor(rows[:cfg["batch_size"], :meta["prompt_len"]].astype("int64"), device=device)
                    tps = mean_tokens_per_step(models["student"][0], meta, p, plans["cdlm"][1])
                steps_per_block = round(B / tps)
                settings = dict(steps_per_block=max(1, min(B, steps_per_block)), threshold=None, use_cache=False,
                                early_stop=True)
            bar.set_description(f"bench {name}")
            results[name] = bench_method(model, meta, rows, settings, cfg, bar)
    if "dlm" in results:
        for r in results.values():
            r["speedup_latency"] = results["dlm"]["latency_ms"] / r["latency_ms"]
    report = dict(methods={m: results[m] for m in known if m in results},
                  settings=dict(split=cfg["split"], num_eval=len(rows), batch_size=cfg["batch_size"],
                                latency_n=cfg["latency_n"], repeats=cfg["repeats"], threshold=threshold,
                                gen_len=meta["gen_len"], data_dir=data_dir),
                  machine=dict(device=device, dtype=dtype,
                               gpu=torch.cuda.get_device_name(device) if device.startswith("cuda") else None,
                               threads=torch.get_num_threads(), torch=torch.__version__,
                               cpu=platform.processor() or platform.machine(), python=platform.python_version()))
    if cfg["sweep"]:
        with autocast(device, dtype):
            report["sweep"] = sweep(models, meta, rows, cfg)
    os.makedirs(os.path.dirname(cfg["out_path"]) or ".", exist_ok=True)
    atomic_write_json(cfg["out_path"], report)
    print(table(report))
    return report


def sweep(models, meta, rows, cfg):
    """Accuracy and latency of threshold decoding for the teacher and the student, per threshold."""
    out = {}
    for name, which, cache in (("dlm_threshold", "teacher", False), ("cdlm", "student", True)):
        if which not in models:
            continue
        model = models[which][0]
        out[name] = []
        for th in cfg["sweep_thresholds"]:
            s = dict(steps_per_block=None, threshold=th, use_cache=cache, early_stop=True)
            r = bench_method(model, meta, rows, s, {**cfg, "repeats": 1})
            out[name].append(dict(threshold=th, **{k: r[k] for k in ("accuracy", "nfe", "latency_ms", "tokens_per_step")}))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for name, pts in out.items():
            ax.plot([p["latency_ms"] for p in pts], [100 * p["accuracy"] for p in pts], "o-", label=name)
        ax.set_xlabel("latency per answer at batch 1 (ms)")
        ax.set_ylabel("exact match (%)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.splitext(cfg["out_path"])[0] + "_sweep.png", dpi=120)
    except ImportError:
        pass  # matplotlib is optional: the JSON has the same numbers
    return out


def table(report):
    m = report["machine"]
    where = f"{m['device']}" + (f" ({m['gpu']})" if m.get("gpu") else "") + f", {m['dtype']}, torch {m['torch']}"
    lines = [f"{report['settings']['num_eval']} {report['settings']['split']} problems of "
             f"{report['settings']['data_dir']} on {where}", "",
             "| method | exact match | NFE | tokens/step | latency (ms, batch 1) | throughput (tok/s, batch "
             f"{report['settings']['batch_size']}) | latency speedup vs dlm |",
             "|---|---|---|---|---|---|---|"]
    for name, r in report["methods"].items():
        sp = f"{r['speedup_latency']:.1f}x" if "speedup_latency" in r else "-"
        lines.append(f"| {name} | {100 * r['accuracy']:.1f}% | {r['nfe']:.1f} | {r['tokens_per_step']:.2f} | "
                     f"{r['latency_ms']:.1f} | {r['throughput_tok_s']:,.0f} | {sp} |")
    return "\n".join(lines)


if __name__ == "__main__":
    run(configure(config, sys.argv[1:]))
