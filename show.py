"""
See decoding: the trace renderer and the teaching views, made from your own checkpoints.

    python show.py --prompt="5:+3*7+2*4+1="                        # every method, side by side, step by step
    python show.py --prompt="5:+3*7+2*4+1=" --html=out/replay.html  # the same as a self-contained HTML replay
    python show.py --prompt="5:+3*7+2*4+1=" --gif=out/replay.gif    # ... and as an animated GIF (needs matplotlib)
    python show.py --view=masks                                     # the three attention masks and the KV cache
    python show.py --view=states                                    # one CDLM training state and its targets
    python show.py --view=losses                                    # one cdlm_losses call on that state, tensor by tensor
    python show.py --view=confidence --state="+3>8,*7>_,+2>_"       # teacher vs student on a partial answer
    python show.py --view=infill                                    # what bidirectional attention buys

In the traces '_' is a masked position and '.' is EOS; the tokens finalized at a step are coloured
(on a terminal) or marked with '^' on the line below (when piped).
"""
import os
import sys
import time
from typing import NamedTuple

import numpy as np
import torch

from bench import DIR_OPTION, METHODS, decoded_tokens, load_models, needs, role_dirs, settings_of
from checkpoint import read_checkpoint
from configurator import SEED, Bool, CDLMError, Choice, Int, List, Str, configure, fit_sizes, gave, refuse_unused, run_main
from data.common import (Probe, atomic_write_bytes, checkpoint_data, data_fingerprint, encode_prompt, encode_state,
                         example_prompt, get_tokenizer, load_split, stored_data_dirs, task_module, whole_blocks)
from data.trajectories import TrajectorySets, load_trajectories
from model import attention_mask, noise_answers
from render import GIF, PAGE, PNG, check_matplotlib, render_compare, replay_gif, replay_html, save_png, token_texts
from files import holding, refuse_overlap
from runtime import compiled, pick_device
from sample import DecodeSettings, generate
from train import LOSSES, Y_STARS, draw_states, student_pass

config = dict(
    view=Choice("compare", "compare", "masks", "states", "losses", "confidence", "infill"),
    prompt=Str(None),                   # None: the task's own example (data.common.example_prompt)
    state=Str(None),                    # the answer so far, '_' where masked (the rest masked)
    methods=List(list(METHODS), Choice(None, *METHODS), unique=True),
    checkpoints=Str(None),              # a folder of teacher/, student/, ar/ (e.g. ref/arithmetic): bench.role_dirs
    teacher_dir=Str("out/teacher"), student_dir=Str("out/student"), ar_dir=Str("out/ar"),
    traj_dir=Str("out/trajectories"), index=Int(0, "[0, inf)"),  # the stored trajectory to draw a state from
    y_star=Choice(None, *Y_STARS),      # None is the student's reading
    html=Str(None), png=Str(None),      # also write the replay here, or draw a picture (needs matplotlib)
    gif=Str(None),                      # also write the replay as an animated GIF (needs matplotlib)
    color=Choice("auto", "auto", "always", "never"),
    num_eval=Int(500, "[1, inf)"),      # test problems (the default: at most); confidence: searched for a state
    data_dir=Str(None), seed=Int(1337, SEED), device=Str("cpu"),
    compile=Bool(False),                # torch.compile the models (runtime.compiled); the replay's times are warm
)
# the views that read each option (and the checkpoints their methods need): given to another, refused
READ_BY = dict(checkpoints="compare states losses confidence infill", prompt="compare confidence", state="confidence", methods="compare",
               traj_dir="states losses", index="states losses", y_star="states losses", html="compare", gif="compare", png="masks states",
               color="compare", num_eval="infill confidence", data_dir="infill confidence", seed="states losses",
               device="compare states losses confidence infill", compile="compare infill")
OUTPUTS = dict(html=PAGE, png=PNG, gif=GIF)  # what each output option writes (render.py), and so may write over
NEED = {"confidence": ["cdlm", "dlm"], "infill": ["dlm", "cdlm", "ar"], "states": ["cdlm"], "losses": ["cdlm", "dlm"], "masks": []}

# -----------------------------------------------------------------------------
# compare: every method on one prompt

def trace(model, meta, prompt, settings):
    """Decode one prompt (1, prompt_len) and keep every step: tokens, what was finalized, confidences."""
    frames, t0, P = [], time.perf_counter(), meta["prompt_len"]

    def on_step(ev):
        o = ev.out
        bs, lo = o.picked.size(1), ev.block * o.picked.size(1)
        picked, conf = [False] * meta["gen_len"], [None] * meta["gen_len"]
        for j in range(bs):
            c = o.conf[0, j].item()
            conf[lo + j] = None if c == float("-inf") else round(c, 3)
            picked[lo + j] = bool(o.picked[0, j])
        frames.append(dict(tokens=ev.tokens[0].tolist(), picked=picked, conf=conf, nfe=ev.nfe[0].item(),
                           ms=round(1000 * (time.perf_counter() - t0), 2), lo=ev.lo - P, hi=ev.hi - P))
    out = generate(model, prompt, meta["gen_len"], meta["mask_id"], meta["eos_id"], settings, on_step=on_step)
    return frames, out.tokens[0].tolist()


def compare(cfg, models, meta, tok):
    """Every method on one prompt: a list of dict(name, about, block_size, cache, threshold, frames, answer)."""
    device = next(iter(models.values()))[0].lm_head.weight.device
    prompt = torch.tensor([encode_prompt(tok, cfg["prompt"], meta)], device=device)
    runs = []
    threshold = models["student"][2].threshold if "student" in models else 0.9
    def measured(dep, s):  # the tokens per step of a method another depends on, on this prompt
        frames, answer = trace(models[METHODS[dep].role][0], meta, prompt, s)
        return decoded_tokens(torch.tensor([answer]), meta["eos_id"], s.block_size, True).item() / frames[-1]["nfe"]

    for name in (m for m in METHODS if m in cfg["methods"]):
        model = models[METHODS[name].role][0]
        s = settings_of(name, model.cfg.block_size, threshold, measured)
        trace(model, meta, prompt, s)  # untimed (compiles, under --compile): the replay shows warm passes
        frames, answer = trace(model, meta, prompt, s)
        runs.append(dict(name=name, about=METHODS[name].about, block_size=s.block_size, cache=s.cache,
                         threshold=s.threshold if s.rule == "threshold" else None, frames=frames, answer=answer))
    return runs


# -----------------------------------------------------------------------------
# masks, training states, confidences, infilling

def mask_grids(prompt_len=2, block_size=3, n_blocks=3, decoding=2):
    """The three masks for a prompt and n_blocks blocks ('#' may attend, '.' may not), and the
    block-causal mask while block `decoding` (numbered from 0) is decoded with the exact cache, at
    its first step and at a later one: 'C' keys read from the cache, '#' keys computed in this pass,
    rows not computed at all left blank. A block's first step computes the block before it too
    (final now; sample.pass_window), so only later steps read every earlier block from the cache.
    Returns (labels, [(title, rows of cells)])."""
    T = prompt_len + block_size * n_blocks
    labels = ["p"] * prompt_len + [str(b) for b in range(n_blocks) for _ in range(block_size)]
    grids = [(mode, [["#" if v else "." for v in row] for row in attention_mask(mode, T, prompt_len, block_size).tolist()])
             for mode in ("bidirectional", "block_causal", "causal")]
    s, e = prompt_len + decoding * block_size, prompt_len + (decoding + 1) * block_size
    first = s - block_size if decoding > 0 else 0  # where the first step's pass starts
    cached = lambda lo: [[("C" if j < lo else "#") if c == "#" else "." for j, c in enumerate(row)] if lo <= i < e
                         else [" "] * T for i, row in enumerate(grids[1][1])]
    upto = lambda n: "the prompt" + ("" if n == 0 else ", block 0" if n == 1 else f", blocks 0-{n - 1}")  # n blocks
    step = f"block_causal, decoding block {decoding} (exact cache),"
    return labels, grids + [
        (f"{step} its first step: {upto(decoding - 1)} from the cache, block {decoding - 1} (final now) computed again"
         if decoding > 0 else f"{step} its first step: the prompt computed", cached(first)),
        (f"{step} a later step: {upto(decoding)} from the cache", cached(s))]


def grids_text(labels, grids):
    out = []
    for title, rows in grids:
        out += [title, "   keys: " + " ".join(labels)] + [f"q {labels[i]}:   " + " ".join(r).rstrip()
                                                           for i, r in enumerate(rows)] + [""]
    return "\n".join(out)


def stored_trajectory(cfg, student):
    """Row --index of the trajectory set --traj_dir, which must be the student's own teacher's."""
    meta = student["data_meta"]
    arrays, tmeta = load_trajectories(cfg["traj_dir"], student["teacher_hash"], meta["gen_len"],
                                      student["model_config"]["block_size"], data_fingerprint(meta), meta["vocab_size"])
    i = cfg["index"]
    if i >= tmeta["n"]:
        raise CDLMError(f"option index={i}: {cfg['traj_dir']} holds {tmeta['n']} trajectories")
    return arrays, tmeta


# How each reading of the paper (train.draw_states) names its states: y the drawn state, y* the
# paper's more informed state, y' the later state whose student predictions are the consistency target.
READINGS = {
    "random": "y* = a random later state of the block, y' = y*",
    "completion": "y* = the block completion, no consistency term (no y')",
    "completion_plus": "y* = the block completion, y' = a random later state",
    "literal": "y* = the block completion, y' = y* (its consistency positions: the later blocks')",
}
Y_STAR_ROW = {"random": "y* (a later state)"}  # the others: the completion


class StateView(NamedTuple):
    text: str               # what the view prints
    rows: list              # [(label, cells)]: the teacher's order, the states, where each loss applies
    block: int              # the block drawn, numbered from 0
    y_star: str             # the reading (READINGS)


def training_state(cfg, device):
    """One stored trajectory, one drawn state y with y* and y' of the student's reading (READINGS),
    and what each position is trained on: the distillation and consistency losses on the student's
    pass at y, the DLM loss on its own noised copy of the ground truth (a separate state)."""
    student = read_checkpoint(os.path.join(cfg["student_dir"], "ckpt.pt"), device, "cdlm", "student_dir")
    meta, y_star = student["data_meta"], cfg["y_star"] or student["config"]["y_star"]
    arrays, tmeta = stored_trajectory(cfg, student)
    i = cfg["index"]
    tok, bs = get_tokenizer(meta), tmeta["block_size"]
    step = torch.as_tensor(arrays["step"][i:i + 1].astype(np.int64))
    tokens = arrays["tokens"][i].tolist()
    gen = torch.Generator().manual_seed(cfg["seed"])
    st = draw_states(step, bs, y_star, gen)
    b = int(st.distill[0].nonzero()[0].item() // bs)
    span = range(b * bs, (b + 1) * bs)
    truth = arrays["truth"][i].tolist()
    x0 = torch.as_tensor(np.concatenate([arrays["prompt"][i], truth]).astype(np.int64))[None]
    _, dlm_masked, t = noise_answers(x0, meta["prompt_len"], meta["mask_id"], generator=gen)
    dlm_masked = dlm_masked[0, meta["prompt_len"]:]
    show = lambda vis, ids=tokens: [tok.decode([ids[j]]) or "." if vis[j] else "_" for j in span]
    order = (step[0, list(span)] - b * bs).tolist()
    y_prime = "y' = y* (consistency target)" if y_star in ("random", "literal") else "y' (consistency target)"
    rows = [("teacher's order", [str(o) for o in order]), ("y", show(st.y[0])),
            (Y_STAR_ROW.get(y_star, "y* (completion)"), show(st.target[0] if y_star == "random" else [True] * len(tokens))),
            *([] if y_star == "completion" else [(y_prime, show(st.target[0]))]),
            *[(f"{name} ({loss.mark})", [loss.mark if loss.positions(st)[0, j] else "." for j in span])
              for name, loss in LOSSES.items() if loss.positions is not None],  # one row per loss of train.LOSSES
            (f"DLM copy (t={t.item():.2f})", show(~dlm_masked, truth)),
            (f"DLM loss ({LOSSES['dlm'].mark})", [LOSSES["dlm"].mark if dlm_masked[j] else "." for j in span])]
    lines = [f"trajectory {i} of {cfg['traj_dir']}: {tok.decode(arrays['prompt'][i].tolist())} -> "
             f"{tok.decode(tokens)}", f"block {b} (answer positions {span.start}..{span.stop - 1}; blocks from 0), "
             f"y_star={y_star!r}: {READINGS[y_star]}",
             "D: a teacher target and C: a consistency target, both on the student's pass at y; L: masked in the DLM "
             "loss's own noised copy of the ground truth (DLM copy: every answer position can be)"]
    lines += [f"{name:<28}" + " ".join(f"{c:>2}" for c in cells) for name, cells in rows]
    return StateView("\n".join(lines), rows, b, y_star)


def losses_walk(cfg, models, meta):
    """One cdlm_losses call of train.py, on a batch of one row: the states view's trajectory and
    drawn state (same --index and --seed), every tensor the losses read with its shape, the
    positions each loss covers and against what, and the weighted losses."""
    model, student, _ = models["student"]
    teacher, bs, c = models["teacher"][1], model.cfg.block_size, student["config"]
    y_star = cfg["y_star"] or c["y_star"]
    arrays, _ = stored_trajectory(cfg, student)
    i = cfg["index"]
    batch = TrajectorySets([arrays], [None]).batch(np.array([i]), "cpu")  # the rows as training reads them
    gen = torch.Generator().manual_seed(cfg["seed"])
    st = draw_states(batch["step"], bs, y_star, gen)
    head = teacher["model"]["lm_head.weight"].float()  # (V, C): the teacher's frozen LM head
    with torch.no_grad():
        p = student_pass(model, batch, st, head, meta["mask_id"], bs, c["dlm_noise"], c["eps"], gen)
        parts = {name: loss.fn(p, st).item() for name, loss in LOSSES.items()}
    b = int(st.distill[0].nonzero()[0].item() // bs)
    where = lambda m, at=0: ", ".join(str(j + at) for j in m.nonzero().flatten().tolist()) or "none"
    shape = lambda x: "(" + ", ".join(map(str, x.shape)) + ")"
    in_b = lambda m: m[0, b * bs:(b + 1) * bs]
    against = dict(distill="KL(teacher || student)", consist="KL(target || student)")
    V, C = head.shape
    lines = [f"cdlm_losses on one row: trajectory {i} of {cfg['traj_dir']}, y_star={y_star!r}, block {b} "
             f"(answer positions {b * bs}..{(b + 1) * bs - 1}); training draws batch_size={c['batch_size']} such rows",
             "the trajectory row"]
    lines += [f"  {k:<8}{shape(v):<14}{what}" for k, v, what in (
        ("prompt", batch["prompt"], "the question"), ("tokens", batch["tokens"], "the teacher's answer"),
        ("step", batch["step"], "the step at which the teacher finalized each answer token"),
        ("hidden", batch["hidden"], f"the teacher's last hidden state at that step (stored {arrays['hidden'].dtype})"),
        ("truth", batch["truth"], "the ground truth"))]
    lines += ["draw_states: boolean masks over the answer (True: final in that state, or trained there)",
              f"  y       {shape(st.y):<14}final in y: every earlier block and {int(in_b(st.y).sum())} of block {b}'s "
              f"{bs} (answer positions {where(in_b(st.y), b * bs) if in_b(st.y).any() else 'none'})",
              f"  target  {shape(st.target):<14}final in y' (the consistency target's state): {int(in_b(st.target).sum())} of "
              f"block {b}'s {bs}"]
    lines += [f"  {name:<8}{shape(loss.positions(st)):<14}{loss.title} at answer positions {where(loss.positions(st)[0])}"
              for name, loss in LOSSES.items() if loss.positions is not None]
    lines += ["student_pass: the Pass the loss rows read",
              f"  student {shape(p.student):<14}the student's logits at y (block-causal: the prompt, earlier blocks, block {b})",
              f"  teacher {shape(p.teacher):<14}hidden @ head.T, head {shape(head)} the teacher's frozen LM head: its "
              f"logits when it finalized each token",
              f"  target  {shape(p.target):<14}the student's own logits at y', no gradient",
              f"  dlm     {shape(p.dlm):<14}the student on the ground truth noised at t={p.t.item():.2f}: "
              f"{int(p.masked[0].sum())} of {p.n_positions} answer positions masked"]
    lines += ["the losses (weight x value)"]
    lines += [f"  {name:<8}{c['w_' + name]} x {v:.3g}  " + (
        f"{against[name]}, the mean over its positions ({int(loss.positions(st).sum())})" if name in against else
        f"cross-entropy at the masked positions, x 1/t, / {p.n_positions}" if name == "dlm" else loss.title)
              for (name, loss), v in zip(LOSSES.items(), parts.values())]
    lines += [f"  total   {sum(c['w_' + k] * v for k, v in parts.items()):.3g}",
              f"why hidden states: per token the set stores C={C} numbers, from which head rebuilds all V={V} "
              f"logits; here V {'<' if V < C else '>'} C, at LLaDA-8B's size C=4096 against V=126,464: "
              f"{126464 / 4096:.1f}x less to store"]
    return "\n".join(lines)


def proposals(model, meta, prompt, state):
    """Each position's proposal and confidence under `model` at one partial answer (1, gen_len)."""
    with torch.no_grad():
        logits = model(torch.cat([prompt, state], 1))[0, meta["prompt_len"]:]
    logits[:, meta["mask_id"]] = float("-inf")
    return logits.float().softmax(-1).max(-1)


def pick_state(models, meta, prompt, threshold):
    """
    The confidence example, chosen by a rule so that it holds on any checkpoints: along the
    teacher's own decode of the prompt (one token per step), the first state with a masked position
    of the block being decoded that waits on another masked position before it in the block (a
    dependent value), which the teacher proposes under the threshold and the student at or above
    it, rightly (the token the teacher writes there in the end). Returns (state (1, L), position),
    or None when no state of this prompt has one.
    """
    teacher, student = models["teacher"][0], models["student"][0]
    bs, mask_id = student.cfg.block_size, meta["mask_id"]
    frames, answer = trace(teacher, meta, prompt, METHODS["dlm"].decoding(teacher.cfg.block_size, None, None))
    L = meta["gen_len"]
    states = [[mask_id] * L] + [f["tokens"] for f in frames[:-1]]
    for frame, tokens in zip(frames, states):
        block = next(j for j, p in enumerate(frame["picked"]) if p) // bs  # the block this step decodes
        state = torch.tensor([tokens], device=prompt.device)
        t_conf, t_pred = proposals(teacher, meta, prompt, state)
        s_conf, s_pred = proposals(student, meta, prompt, state)
        span = range(block * bs, (block + 1) * bs)
        for j in span:
            waits = any(tokens[i] == mask_id for i in span if i < j)
            if tokens[j] == mask_id and waits and t_conf[j] < threshold <= s_conf[j] and s_pred[j] == answer[j]:
                return state, j
    return None


def confidence_view(cfg, models, meta, tok):
    """Teacher and student at the same partial answer: the student is confident where a value
    depends on a still-masked one (it learned the later, better-informed state: CDLM Sec. 4.2).
    Without --state the state is chosen by pick_state's rule."""
    device = next(iter(models.values()))[0].lm_head.weight.device
    P, L = meta["prompt_len"], meta["gen_len"]
    prompt = torch.tensor([encode_prompt(tok, cfg["prompt"], meta)], device=device)
    bs, threshold = models["student"][0].cfg.block_size, models["student"][2].threshold
    lines = []
    if cfg["state"] is None:
        if gave(cfg, "prompt"):
            picked = pick_state(models, meta, prompt, threshold)
        else:  # the first test problem that has such a state
            data_dir, dmeta = checkpoint_data(models["teacher"][1], cfg["data_dir"])
            rows = load_split(data_dir, "test", dmeta)
            for row in rows[:fit_sizes(cfg, len(rows), f"the test split of {data_dir}", ())["num_eval"]].tolist():
                prompt = torch.tensor([row[:P]], device=device)
                picked = pick_state(models, meta, prompt, threshold)
                if picked is not None:
                    cfg["prompt"] = tok.decode([i for i in row[:P] if i != meta["pad_id"]])
                    lines.append(f"the first of the test problems with such a state: --prompt={cfg['prompt']!r}")
                    break
        if picked is None:
            raise CDLMError(f"option prompt={cfg['prompt']!r}: no state of the teacher's decode has a dependent value "
                            f"the teacher proposes under threshold {threshold} and the student above it; try "
                            f"another prompt, or give --state")
        state, j = picked
        lines.append(f"picked by the rule (pick_state): the teacher's own decode, first state where a dependent value "
                     f"(position {j}) is under threshold {threshold} for the teacher and above it for the student")
        upto = (j // bs + 1) * bs
    else:
        given = encode_state(tok, cfg["state"], meta["mask_id"], L)
        state = torch.tensor([given + [meta["mask_id"]] * (L - len(given))], device=device)
        upto = whole_blocks(max(len(given), 1), bs)  # through the block the state ends in
    rows = {w: proposals(models[w][0], meta, prompt, state) for w in ("teacher", "student")}
    lines += [f"prompt {cfg['prompt']}  state {''.join(token_texts(tok, meta, state[0].tolist()[:upto]))}",
              f"{'position':>8}  {'teacher':>14}  {'student':>14}"]
    for j in range(upto):
        if state[0, j] == meta["mask_id"]:
            cells = [f"{tok.decode([rows[w][1][j].item()])!r} {rows[w][0][j].item():.2f}" for w in ("teacher", "student")]
            lines.append(f"{j:>8}  {cells[0]:>14}  {cells[1]:>14}")
    return "\n".join(lines)


def infill(models, meta, probes):
    """Accuracy of filling each probe's holes (data.common.Probe). The bidirectional teacher sees both
    sides of a hole and fills holes in any order; the block-causal student and the AR model see what
    precedes it (the rest of the answer is masked), as they decode. Hidden positions are masked for
    every model, but not scored.
    """
    L, acc = meta["gen_len"], {}
    for name, (model, _, s) in models.items():
        left_only = model.cfg.attn != "bidirectional"
        bs = s.block_size if left_only else L
        s = DecodeSettings(bs, steps_per_block=bs, cache=s.cache)
        for probe, (prompts, answers, hole, hidden) in ((k, Probe(*p)) for k, p in probes.items()):
            masked = hole if hidden is None else hole | hidden
            given = ~(masked.cumsum(1) > 0) if left_only else ~masked  # left context only, or everything else
            init = torch.where(given, answers, meta["mask_id"])
            out = generate(model, prompts, L, meta["mask_id"], meta["eos_id"], s, init=init).tokens
            acc[probe, name] = ((out == answers) | ~hole).all(1).float().mean().item()
    return acc


def main(argv):
    cfg = role_dirs(configure(config, argv))
    view = cfg["view"]
    need = cfg["methods"] if view == "compare" else NEED[view]
    dirs = {DIR_OPTION[r] for name in need for r in needs(name)}
    refuse_unused(cfg, {k: f"with --view={view}" for k, views in READ_BY.items() if view not in views.split()}
                  | {k: f"with --view={view}: no method shown needs it" for k in DIR_OPTION.values() if k not in dirs}
                  | ({"teacher_dir": "with --view=states: the set is checked against the teacher the student records "
                                     "(its weights hash); no teacher is loaded"} if view == "states" else {})
                  | dict.fromkeys(("num_eval", "data_dir") * (view == "confidence" and bool(gave(cfg, "prompt") or cfg["state"])),
                                  "with --view=confidence and a --prompt or --state: it is for the search of the test problems"))
    refuse_overlap({k: cfg[k] for k in OUTPUTS},
                   {k: cfg[k] for k in (*sorted(dirs), "traj_dir", "data_dir") if k in dirs or view in READ_BY[k].split()}
                   | stored_data_dirs(cfg, sorted(dirs)) | {"checkpoints": cfg["checkpoints"]})
    # every output new or one of its kind, proven writable, and held (as bench.py holds its plots), before any work
    with holding([(cfg[k], f"option {k}", kind) for k, kind in OUTPUTS.items() if cfg[k]]):
        for key in ("png", "gif"):
            if cfg[key]:
                check_matplotlib(key)
        run(cfg, pick_device(cfg["device"]), need)


def run(cfg, device, need):
    torch.manual_seed(cfg["seed"])
    if cfg["view"] == "masks":
        labels, grids = mask_grids()
        print(grids_text(labels, grids))
        if cfg["png"]:
            key = {"#": ("#2a7", "may attend (cache panels: its keys and values computed in this pass)"),
                   ".": ("#eee", "hidden"), "C": ("#39c", "may attend, its keys and values read from the cache"),
                   " ": ("#fff", "query not computed in this pass")}
            save_png(cfg["png"], [(t, g, key) for t, g in grids], rows=labels, cols=labels, ncol=2, cell=0.34,
                     xlabel="key position (p: prompt, n: block n, from 0)", ylabel="query position")
        return
    if cfg["view"] == "states":
        text, rows, b, y_star = training_state(cfg, device)
        print(text)
        if cfg["png"]:
            colours = iter(["#d73", "#39c", "#7a4", "#a5c", "#cc3"])
            on = {"dlm": "on its own noised copy of the ground truth"}
            key = {**{loss.mark: (next(colours), f"{loss.title} ({loss.mark}), {on.get(name, 'on the pass at y')}")
                      for name, loss in LOSSES.items()},
                   ".": ("#eee", "no loss here"), "_": ("#bbb", "masked"), "k": ("#cfe0f0", "final (its token written)"),
                   " ": ("#fff", "")}
            shown = [("", [" "] * len(c)) if n.startswith("DLM copy") else None for n, c in rows[1:]]  # a gap before it
            rows_drawn = [r for gap, row in zip(shown, rows[1:]) for r in ([gap] if gap else []) + [row]]
            states = {n for n, _ in rows_drawn if n.startswith(("y", "DLM copy"))}
            grid = [["_" if c == "_" else "k" for c in cells] if name in states else cells for name, cells in rows_drawn]
            texts = [[c if name in states and c != "_" else "" for c in cells] for name, cells in rows_drawn]
            span = len(rows[0][1])
            title = (f"trajectory {cfg['index']}, block {b} (answer positions {b * span}-{(b + 1) * span - 1}; blocks "
                     f"from 0); y_star={y_star!r}: {READINGS[y_star]}")
            save_png(cfg["png"], [(title, grid, key)], rows=[n for n, _ in rows_drawn],
                     cols=[f"{b * span + j}\n{o}" for j, o in enumerate(rows[0][1])], texts=[texts], cell=0.5, ncol=2,
                     xlabel="answer position (top) and the order the teacher finalized it in within the block "
                            "(bottom, 0 = first)")
        return
    # infilling compares what each mask can see: its teacher may be another than the student's (prompt_noise)
    loaded = load_models(cfg, need, device, same_teacher=cfg["view"] != "infill")
    models = {role: (compiled(m, cfg["compile"]), ckpt, st) for role, (m, ckpt, st) in loaded.items()}
    meta = next(iter(models.values()))[1]["data_meta"]
    tok, cfg["prompt"] = get_tokenizer(meta), cfg["prompt"] or example_prompt(meta)
    if cfg["view"] == "confidence":
        print(confidence_view(cfg, models, meta, tok))
    elif cfg["view"] == "losses":
        print(losses_walk(cfg, models, meta))
    elif cfg["view"] == "infill":
        data_dir, dmeta = checkpoint_data(next(iter(models.values()))[1], cfg["data_dir"])
        rows = load_split(data_dir, "test", dmeta)
        rows = rows[:fit_sizes(cfg, len(rows), f"the test split of {data_dir}", ())["num_eval"]]
        rows = torch.as_tensor(np.asarray(rows, dtype=np.int64), device=device)
        P = meta["prompt_len"]
        probes = task_module(meta).infill_probes(tok, meta, rows[:, :P], rows[:, P:])  # each task its own holes
        acc = infill(models, meta, probes)
        print(", ".join(f"{w}: {cfg[DIR_OPTION[w]]}" for w in models))
        print("| hole | n | " + " | ".join(f"{w} ({models[w][0].cfg.attn})" for w in models) + " |")
        print("|---|---|" + "---|" * len(models))
        for probe, (p, *_) in probes.items():
            print(f"| {probe} | {len(p)} | " + " | ".join(f"{100 * acc[probe, w]:.1f}%" for w in models) + " |")
    else:
        runs = compare(cfg, models, meta, tok)
        color = cfg["color"] == "always" or (cfg["color"] == "auto" and sys.stdout.isatty())
        print(render_compare(runs, tok, meta, color))
        if cfg["html"]:
            atomic_write_bytes(cfg["html"], replay_html(runs, tok, meta, cfg["prompt"]).encode())
            print(f"wrote {cfg['html']}")
        if cfg["gif"]:
            atomic_write_bytes(cfg["gif"], replay_gif(runs, tok, meta, cfg["prompt"]))
            print(f"wrote {cfg['gif']}")


if __name__ == "__main__":
    run_main(main)
