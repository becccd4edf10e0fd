"""
The hardware view behind bench.py's speedups: analytic FLOPs and bytes of a pass, the machine's
measured peaks, where a decode's time goes (the profile), a decode's time predicted from the
measured cost of its passes alone (the cost model), and the roofline picture.
"""
import os
import statistics
import time
from collections import Counter
from typing import NamedTuple

import torch

from render import save_figure
from runtime import sync
from sample import RULES, StepOut, generate, positions, step_function

PLOTS = ("_roofline.png", "_sweep.png")  # beside bench.py's out_path, when matplotlib is installed
SCALE_SIZES = ((4, 128), (4, 256), (8, 512), (8, 768), (8, 1024))  # (n_layer, n_embd), heads 32 wide or more
SCALE_SHAPES = ((21, 48, 8), (64, 256, 32))  # (prompt_len, gen_len, block_size): the arithmetic task; the paper's


def answer_tokens(tokens, eos_id):
    """Useful answer tokens per row: up to and including the first EOS."""
    is_eos = tokens == eos_id
    return torch.where(is_eos.any(1), is_eos.float().argmax(1) + 1, torch.full((tokens.size(0),), tokens.size(1)))


def pass_cost(cfg, b, t_query, t_key, cache, act_bytes, weight_bytes):
    """
    Analytic FLOPs and bytes of one forward pass over b rows computing t_query positions that
    attend to t_key keys: matmuls at 2 FLOPs per multiply-add; bytes as a lower bound on memory
    traffic, each tensor moved once: the weights (once per pass, whatever b), the cached keys and
    values read, and each layer's activations written and read.
    """
    C, L, V = cfg.n_embd, cfg.n_layer, cfg.vocab_size
    flops = b * (L * (24 * t_query * C * C + 4 * t_query * t_key * C) + 2 * t_query * C * V)
    weights = (L * 12 * C * C + V * C) * weight_bytes
    kv = b * L * 2 * (t_key - t_query) * C * act_bytes if cache != "none" else 0
    acts = b * act_bytes * (L * (16 * t_query * C + 2 * cfg.n_head * t_query * t_key) + t_query * V)
    return flops, weights + kv + acts


def decode_cost(model, meta, prompts, settings, act_bytes):
    """FLOPs and bytes of decoding prompts (one at a time), and the answer tokens they made."""
    flops = moved = 0
    T = model.cfg.seq_len

    def count(ev):
        nonlocal flops, moved
        keys = ev.hi if settings.cache == "exact" else T
        f, m = pass_cost(model.cfg, len(ev.rows), ev.hi - ev.lo, keys, settings.cache, act_bytes, 4)
        flops, moved = flops + f, moved + m
    tokens = 0
    for i in range(len(prompts)):
        out = generate(model, prompts[i:i + 1], meta["gen_len"], meta["mask_id"], meta["eos_id"], settings,
                       on_step=count).tokens
        tokens += answer_tokens(out, meta["eos_id"]).sum().item()
    return flops, moved, tokens


class Passes(NamedTuple):
    shapes: Counter   # {(rows in the batch, lo, hi, block): passes of that shape (its first block)}
    tokens: int       # the answer tokens the decodes made (answer_tokens)
    loop_s: float     # seconds of the sampler's loop around the steps (the decodes with recorded steps)


def pass_shapes(model, meta, prompts, settings, batch):
    """The forward passes of decoding prompts in batches of `batch` (1: one prompt at a time), by
    shape: every step is one pass over the rows it runs (sample.generate: a block's later steps run
    the rows with masked positions left, early stop drops finished answers); and
    the time of the loop around them: each batch decoded again with its steps replaced by what
    they returned (no forward, no step), so the loop takes the same path."""
    counts, first, tokens, loop_s = Counter(), {}, 0, 0.0

    def see(ev):  # a shape is (rows, window length); its first pass gives the step's offset to time
        shape = (len(ev.rows), ev.hi - ev.lo)
        counts[shape] += 1
        first.setdefault(shape, (ev.lo, ev.hi, ev.block))
        outs.append(StepOut(*(t.clone() for t in ev.out)))  # CUDA graphs reuse a step's output memory
    for i in range(0, len(prompts), batch):
        outs, args = [], (prompts[i:i + batch], meta["gen_len"], meta["mask_id"], meta["eos_id"], settings)
        out = generate(model, *args, on_step=see).tokens
        tokens += answer_tokens(out, meta["eos_id"]).sum().item()
        recorded = iter(outs)
        sync(prompts.device)
        t0 = time.perf_counter()
        generate(model, *args, step=lambda *_: next(recorded))
        sync(prompts.device)
        loop_s += time.perf_counter() - t0
    return Passes(Counter({(b, *first[b, length]): n for (b, length), n in counts.items()}), tokens, loop_s)


@torch.no_grad()
def pass_time(model, b, lo, hi, cache, repeats=5):
    """Seconds of one forward pass over b rows computing positions lo..hi, made as the sampler makes
    it (a window from a 0-d start over a fresh cache, or the whole sequence without one): the
    median of `repeats` after a warm-up (under torch.compile, the warm-up compiles). The token
    values do not change the cost."""
    device = next(model.parameters()).device
    x = torch.zeros((b, hi - lo), dtype=torch.long, device=device)
    start = None if cache == "none" else positions(lo, hi, device)[0]
    return timed(lambda: model(x, start=start, return_hidden=True), model, b, cache, repeats)


def step_args(meta, settings, x, lo, hi, block, i=0):
    """The arguments generate gives the step function for step i of answer block `block`, the pass
    lo..hi of the sequences x (b, T): the sequences, their passes so far, the window's positions
    (None without a cache) and the block's."""
    s = meta["prompt_len"] + block * settings.block_size
    window = None if settings.cache == "none" else positions(lo, hi, x.device)
    nfe = torch.zeros(x.size(0), dtype=torch.long, device=x.device)
    return (x, nfe, window, positions(s, s + settings.block_size, x.device), meta["mask_id"], meta["eos_id"],
            settings.rule, RULES[settings.rule].amount(settings, i), settings.temperature)


@torch.no_grad()
def step_time(model, meta, settings, b, lo, hi, block, repeats=5):
    """Seconds of one decode step as generate runs it: the sampler's step function (compiled: the
    very graph a decode calls) over b rows, the pass lo..hi of answer block `block`, and the host
    synchronisation that ends it (the step's flags); all MASK, as the token values do not change
    the cost. The median of at least 50 ms of calls."""
    device = next(model.parameters()).device
    x = torch.full((b, meta["prompt_len"] + meta["gen_len"]), meta["mask_id"], dtype=torch.long, device=device)
    args, step = step_args(meta, settings, x, lo, hi, block), step_function(model, settings)
    return timed(lambda: step(*args).flags.tolist(), model, b, settings.cache, repeats, min_s=0.05)


def timed(run, model, b, cache, repeats, min_s=0.0):
    """The median seconds of run() over a fresh cache of b rows: `repeats` calls after one untimed,
    and more until they add up to min_s (a step of a millisecond timed five times is at the mercy
    of one stall)."""
    device = next(model.parameters()).device
    if cache != "none":
        model.setup_cache(b, approximate=cache != "exact")
    try:
        times = []
        while len(times) <= repeats or sum(times[1:]) < min_s:
            sync(device)
            t0 = time.perf_counter()
            run()
            sync(device)
            times.append(time.perf_counter() - t0)
        return statistics.median(times[1:])
    finally:
        model.clear_cache()


def repeat_for(min_s, run):
    """run() -> (count, seconds), called until the seconds add up to min_s (once at least): the sums."""
    count, seconds, calls = 0, 0.0, 0
    while not calls or seconds < min_s:
        c, s = run()
        count, seconds, calls = count + c, seconds + s, calls + 1
    return count, seconds


def predict(model, meta, prompts, settings, batch_size, latency_n, times=None):
    """
    A method's batch-1 latency (ms, mean over latency_n prompts) and batch-batch_size throughput
    (answer tokens/s), as bench.py measures them, from two costs measured apart: the decodes' steps
    (step_time: the forward and the step's own operations, as the sampler runs them, by shape) and
    the loop around them (pass_shapes). `steps_*`: the steps alone, the ceiling if the loop took no
    time. A step costs the same wherever its window lies (its positions are tensors, the cache
    static), so `times` memoizes step_time by (model, kind of decode, rows, window length): share
    one dict across the methods of a bench and each shape is timed once per model and kind.
    """
    times = {} if times is None else times

    def cost(passes):
        total = 0.0
        for (b, lo, hi, blk), n in passes.shapes.items():
            key = (model, settings.rule, settings.cache, settings.temperature > 0, b, hi - lo)
            if key not in times:
                times[key] = step_time(model, meta, settings, b, lo, hi, blk)
            total += n * times[key]
        return total
    one, n = pass_shapes(model, meta, prompts[:latency_n], settings, 1), len(prompts[:latency_n])
    batch = pass_shapes(model, meta, prompts[:batch_size], settings, batch_size)
    steps_batch, steps_one = cost(batch), cost(one)  # the batch-1 steps last: bench.timed_rounds decodes next
    return dict(latency_ms=1000 * (steps_one + one.loop_s) / n, throughput_tok_s=batch.tokens / (steps_batch + batch.loop_s),
                steps_latency_ms=1000 * steps_one / n, steps_throughput_tok_s=batch.tokens / steps_batch)


def probe_machine(device):
    """Measured peak compute (a large float32 matmul) and memory bandwidth (a large copy)."""
    a = torch.randn(1024, 1024, device=device)
    gflops, gbs = 0.0, 0.0
    for _ in range(5):
        sync(device)
        t0 = time.perf_counter()
        a @ a
        sync(device)
        gflops = max(gflops, 2 * 1024 ** 3 / (time.perf_counter() - t0) / 1e9)
    src = torch.empty(64 * 2 ** 20, device=device)  # 256 MB
    dst = torch.empty_like(src)
    for _ in range(5):
        sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        sync(device)
        gbs = max(gbs, 2 * src.numel() * 4 / (time.perf_counter() - t0) / 1e9)  # read + write
    return gflops, gbs


def profile_decode(model, meta, prompts, settings, peak_gflops, act_bytes, rounds=3, min_s=0.0):
    """
    Where a decode's time goes at batch 1: the forward passes, the step's own operations around
    each, and the sampler's loop between steps; per pass, the ATen ops launched (torch.profiler) and
    the time the arithmetic alone would take at the measured peak. Fixed per-op costs are what a
    small model on a CPU pays for. Each decode is replayed twice (same windows, tokens and cache):
    its forward passes through `model` alone, and its steps through the sampler's step function
    (under torch.compile the step is one graph with the forward inside, which no hook can split).
    The sampler's share is the decode less the forwards' replay, the loop's the decode less the
    steps' replay: differences of two measurements, below zero on a busy machine. Each is timed over
    all the prompts in a run of its own (the decodes back to back, as the bench times latency; a
    decode timed between replays of other graphs runs slower), repeated until it adds up to min_s,
    in `rounds`: the medians.
    """
    from torch.profiler import ProfilerActivity, profile
    seen = [[] for _ in prompts]  # each decode's steps: (answer tokens after it, lo, hi, block)
    for i, steps in enumerate(seen):
        generate(model, prompts[i:i + 1], meta["gen_len"], meta["mask_id"], meta["eos_id"], settings,
                 on_step=lambda ev, steps=steps: steps.append((ev.tokens, ev.lo, ev.hi, ev.block)))
    one = [lambda i: timed_decode(model, meta, prompts[i:i + 1], settings)[2],  # seconds for prompt i:
           lambda i: replay(model, meta, settings, prompts[i:i + 1], seen[i]),  # the decode, its forwards,
           lambda i: replay(model, meta, settings, prompts[i:i + 1], seen[i], steps=True)]  # its steps
    parts = []  # each round's seconds an answer: the decodes, their forwards' replays, their steps' replays
    for r in range(rounds + 1):  # the first, untimed, on one prompt: compiles the forward alone, warms caches
        n = len(prompts) if r else 1
        sums = [repeat_for(min_s if r else 0, lambda f=f: (n, sum(f(i) for i in range(n)))) for f in one]
        parts.append([seconds / answers for answers, seconds in sums])
    wall, model_s, step_s = (statistics.median(p) for p in zip(*parts[1:]))
    passes = sum(map(len, seen))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        nfe = timed_decode(model, meta, prompts[:1], settings)[1].item()
    ops = sum(1 for e in prof.events() if e.cpu_parent is None and e.name.startswith("aten::"))
    flops = decode_cost(model, meta, prompts[:1], settings, act_bytes)[0]
    n = len(prompts)
    return dict(ms_per_answer=1000 * wall, model_ms_per_answer=1000 * model_s,
                sampler_ms_per_answer=1000 * (wall - model_s), step_ms_per_answer=1000 * step_s,
                loop_ms_per_answer=1000 * (wall - step_s), passes_per_answer=passes / n,
                ms_per_pass=1000 * model_s * n / passes, aten_ops_per_step=ops / nfe,
                arithmetic_ms_per_pass=flops / nfe / (peak_gflops * 1e9) * 1000)


@torch.no_grad()
def replay(model, meta, settings, prompt, seen, steps=False):
    """Seconds one traced decode's passes take alone: seen holds each step's (answer tokens after
    it, lo, hi, block); each runs again, in order, on a fresh cache: the forward alone, or (steps)
    the sampler's step as generate calls it, with the host synchronisation that ends it. Timed at
    the second replay (timed): a step the decode compiled, called with views of another tensor,
    may compile a graph of its own at its first call."""
    step, calls, i = step_function(model, settings), [], Counter()
    for tokens, lo, hi, blk in seen:
        x = torch.cat([prompt, tokens], 1)
        args, start = step_args(meta, settings, x, lo, hi, blk, i[blk]), positions(lo, hi, x.device)[0]
        i[blk] += 1
        calls.append((lambda a=args: step(*a).flags.tolist()) if steps else
                     (lambda a=args, s=None if settings.cache == "none" else start, w=x[:, lo:hi]:
                      model(w, start=s, return_hidden=True)))
    return timed(lambda: [call() for call in calls], model, 1, settings.cache, repeats=1)


def timed_decode(model, meta, prompt, settings):
    sync(prompt.device)
    t0 = time.perf_counter()
    out, nfe = generate(model, prompt, meta["gen_len"], meta["mask_id"], meta["eos_id"], settings)[:2]
    sync(prompt.device)
    return out, nfe, time.perf_counter() - t0


# -----------------------------------------------------------------------------
# the scale study: what the cache saves at other model sizes and answer shapes (random weights)

def passes_per_block(model, meta, prompts, settings, batch):
    """A decode's forward passes per block it decodes (early stop: up to the block with EOS); every
    row present at a block's first step decodes that block (it starts all MASK)."""
    blocks, nfe = set(), 0
    for i in range(0, len(prompts), batch):
        nfe += generate(model, prompts[i:i + batch], meta["gen_len"], meta["mask_id"], meta["eos_id"], settings,
                        on_step=lambda ev: blocks.update((i + r, ev.block) for r in ev.rows.tolist())).nfe.sum().item()
    return nfe / len(blocks)


def answer_windows(method, P, G, bs, per_block):
    """The passes of one whole answer (no early stop) as the sampler makes them (sample.pass_window):
    [(lo, hi, count)]. dlm: gen_len passes over everything; cdlm: a block's first pass also writes the
    block before it (the first, the prompt), per_block - 1 more over the block alone; ar: one token a
    pass, the previous one written with it."""
    if method == "dlm":
        return [(0, P + G, G)]
    if method == "ar":
        return [(0, P + 1, 1)] + [(s - 1, s + 1, 1) for s in range(P + 1, P + G)]
    firsts = [(0, P + bs, 1)] + [(s - bs, s + bs, 1) for s in range(P + bs, P + G, bs)]
    return firsts + [(s, s + bs, per_block - 1) for s in range(P, P + G, bs)]


def answer_cost(model, method, P, G, bs, per_block, b, times):
    """Seconds and FLOPs of decoding b answers at once by `method`, from measured pass times (memoized
    in times by mask, rows and window length); a cached pass attends to the whole static cache
    (Transformer.forward)."""
    cache = "none" if method == "dlm" else "exact"
    seconds = flops = 0.0
    for lo, hi, n in answer_windows(method, P, G, bs, per_block):
        key = (model.cfg.attn, b, hi - lo, cache)
        f = pass_cost(model.cfg, b, hi - lo, P + G, cache, 4, 4)[0]
        if key not in times:  # a big pass once after its warm-up; small ones a few times
            times[key] = pass_time(model, b, lo, hi, cache, repeats=5 if f < 2e10 else 1)
        seconds, flops = seconds + n * times[key], flops + n * f
    return seconds, flops


def scale_study(tokens_per_pass, vocab_size, device, sizes=SCALE_SIZES, shapes=SCALE_SHAPES, batch=64, progress=print):
    """
    The same model with random weights at every size and answer shape: the measured pass costs and the
    ratios they give cdlm against dlm and ar, at batch 1 (latency) and batch `batch` (throughput: every
    method decodes the same whole answers), with the FLOP ratio beside. cdlm finalizes tokens_per_pass
    (measured on a trained student) per pass of a block, at least one pass a block; cdlm_floor, one pass
    a block. Eager, float32. The weights do not change a pass's cost, only the passes a decode makes.
    """
    from model import ModelConfig, Transformer
    rows = {}  # "gen_len/block_size n_layerxn_embd": its row
    for (P, G, bs) in shapes:
        for (L, C) in sizes:
            torch.manual_seed(0)
            cfg = dict(vocab_size=vocab_size, seq_len=P + G, prompt_len=P, block_size=bs, n_layer=L,
                       n_head=max(4, C // 64), n_embd=C)
            models = {a: Transformer(ModelConfig(**cfg, attn=a)).to(device).eval()
                      for a in ("bidirectional", "block_causal", "causal")}
            row = dict(prompt_len=P, gen_len=G, block_size=bs, n_layer=L, n_embd=C,
                       params=models["causal"].num_params())
            for b in (1, batch):
                times, cost = {}, {}
                for method, a, k in (("dlm", "bidirectional", 1), ("ar", "causal", 1),
                                     ("cdlm", "block_causal", max(1.0, bs / tokens_per_pass)),
                                     ("cdlm_floor", "block_causal", 1)):
                    step_bs = 1 if method == "ar" else bs
                    with torch.no_grad():
                        cost[method] = answer_cost(models[a], method.split("_")[0], P, G, step_bs, k, b, times)
                tag = "latency" if b == 1 else "throughput"
                for base in ("dlm", "ar"):
                    for me in ("cdlm", "cdlm_floor"):
                        row[f"{me}_vs_{base}_{tag}"] = cost[base][0] / cost[me][0]
                    row[f"cdlm_vs_{base}_flops"] = cost[base][1] / cost["cdlm"][1]
                row[f"ms_per_pass_{tag}"] = {f"{w}x{c}": 1000 * t for (_, _, w, c), t in times.items()}
                if b == 1:  # the two passes the ratio turns on: the teacher's whole sequence, a block from the cache
                    row["dlm_pass_ms"], row["cdlm_pass_ms"] = (1000 * times["bidirectional", 1, P + G, "none"],
                                                               1000 * times["block_causal", 1, bs, "exact"])
                row[f"gflop_s_{tag}"] = {m: c[1] / c[0] / 1e9 for m, c in cost.items()}
            rows[f"{G}/{bs} {L}x{C}"] = row
            progress(f"scale: {L} layers x {C}, answers of {G} in blocks of {bs}: cdlm vs dlm "
                     f"{row['cdlm_vs_dlm_latency']:.1f}x latency, {row['cdlm_vs_dlm_throughput']:.1f}x throughput")
    return rows


def scale_plot(report, path):
    """Projected cdlm vs dlm speedups against model size, one line per shape and batch, the FLOP ratio dashed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return  # matplotlib is optional: the JSON has the same numbers
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, base in zip(axes, ("dlm", "ar")):
        for shape in dict.fromkeys((r["gen_len"], r["block_size"]) for r in report["rows"].values()):
            rs = [r for r in report["rows"].values() if (r["gen_len"], r["block_size"]) == shape]
            x = [r["params"] / 1e6 for r in rs]
            label = f"{shape[0]} tokens, blocks of {shape[1]}"
            line, = ax.plot(x, [r[f"cdlm_vs_{base}_latency"] for r in rs], "o-", label=label + ": batch 1")
            ax.plot(x, [r[f"cdlm_vs_{base}_throughput"] for r in rs], "s--", color=line.get_color(),
                    label=label + f": batch {report['batch']}")
            ax.plot(x, [r[f"cdlm_vs_{base}_flops"] for r in rs], ":", color=line.get_color(), label=label + ": FLOP ratio")
        ax.set(xscale="log", yscale="log", xlabel="parameters (millions), random weights",
               title=f"cdlm vs {base} at {report['tokens_per_pass']:.2f} tokens per pass")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("speedup, from measured pass costs (eager)")
    axes[0].legend(fontsize=7)
    save_figure(fig, path)


def plots(report, out_path):
    """The roofline (and the sweep's frontier) as PNGs next to out_path, when matplotlib is installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return  # matplotlib is optional: the JSON has the same numbers
    m, base = report["machine"], os.path.splitext(out_path)[0]
    fig, ax = plt.subplots(figsize=(6, 4))
    ai = [r["arithmetic_intensity"] for r in report["methods"].values()]
    xs = [min(ai + [1.0]) / 3, max(ai + [m["peak_gflops"] / m["peak_gb_s"]]) * 3]
    knee = m["peak_gflops"] / m["peak_gb_s"]
    ax.plot([xs[0], knee, xs[1]], [xs[0] * m["peak_gb_s"], m["peak_gflops"], m["peak_gflops"]], "k-", lw=1,
            label=f"roof: {m['peak_gb_s']:.0f} GB/s, {m['peak_gflops']:.0f} GFLOP/s")
    for name, r in report["methods"].items():
        ax.plot(r["arithmetic_intensity"], r["achieved_gflops"], "o", label=name)
    ax.set(xscale="log", yscale="log", xlabel="arithmetic intensity (FLOP/byte), batch 1",
           ylabel="achieved GFLOP/s", title=f"decoding on {m['gpu'] or m['cpu']} ({m['dtype']})")
    ax.legend(fontsize=7)
    save_figure(fig, base + PLOTS[0])
    if "sweep" in report:
        # against passes per answer, not milliseconds: NFE does not move with timing noise
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, pts in report["sweep"].items():
            key = "threshold" if "threshold" in pts[0] else "block_size"
            pts = sorted(pts, key=lambda p: p["nfe"])
            line, = ax.plot([p["nfe"] for p in pts], [100 * p["whole_acc"] for p in pts], "o-", label=name)
            for p in pts:
                ax.annotate(f"{'' if key == 'threshold' else 'bs '}{p[key]:g}", (p["nfe"], 100 * p["whole_acc"]),
                            textcoords="offset points", xytext=(4, -10), fontsize=7, color=line.get_color())
        ax.set(xlabel="forward passes per answer (NFE)", ylabel="whole answer right (%)",
               title="the student's and the teacher's frontiers (labels: threshold, or block size)")
        ax.title.set_fontsize(8)
        ax.legend(fontsize=7)
        save_figure(fig, base + PLOTS[1])
