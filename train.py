"""
Training for the three models of this repo, switched by `mode`:

    python train.py config/train_teacher.py    # mode='dlm':  masked-diffusion teacher, bidirectional
    python train.py config/train_student.py    # mode='cdlm': CDLM student, block_causal (Sec. 4.2)
    python train.py config/train_ar.py         # mode='ar':   autoregressive baseline, causal

Several processes: torchrun --standalone --nproc_per_node=2 train.py config/train_teacher.py
(gloo on CPU, nccl on CUDA), as in nanoGPT. A run killed at any point continues exactly with
--init_from=resume: the checkpoint holds every random state and the data position.
"""
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from checkpoint import save_checkpoint, weights_hash
from configurator import SEED, Bool, CDLMError, Choice, Float, Int, List, Str, check, configure, refuse_unused, run_main
from data.common import check_out_kind, checkout_path, from_checkout, load_meta, load_split
from model import (ROLES, ModelConfig, Transformer, add_lora, ar_loss, block_of, diffusion_loss, merged_state_dict,
                   noise_answers, noise_block, noise_sequences)
from files import check_file_writable, lock, reading, refuse_overlap
from runtime import (THREADS, check_memory, cpu_threads, end_runtime, gather_objects, pick_device, pick_dtype,
                     rng_state, set_rng_state, setup_runtime, wrap_model)
from sample import DEFAULT_DECODING
from startup import load_resume, load_teacher, refuse_fresh_start, resume_hash

class Pass(NamedTuple):
    """What the student's losses read from one batch (cdlm_losses): each loss row names its fields."""
    student: torch.Tensor   # (B, L, V) the student's logits at y
    hidden: torch.Tensor    # (B, L, C) its last hidden states there
    teacher: torch.Tensor   # (B, L, V) the teacher's at each token's finalization (from its hidden state)
    target: torch.Tensor    # (B, L, V) the student's own at the more informed state, no gradient
    dlm: torch.Tensor       # (n, T, V) the student's logits on the noised ground truth (n = dlm_rows)
    x0: torch.Tensor        # (n, T) the ground truth
    masked: torch.Tensor    # (n, T) where it was noised, with ratio t (n,)
    t: torch.Tensor
    n_positions: int        # the positions that could be noised per row


class Loss(NamedTuple):
    weight: float           # the default of its option w_<name>
    needs: tuple            # the Pass fields it reads beyond `student`: cdlm_losses computes those
    fn: Callable            # (Pass, States) -> a scalar
    mark: str               # its letter in show.py's states view
    positions: Callable     # (States) -> (B, L) the answer positions it trains, for that view
    title: str              # its name in tables ("no <title>" is its ablation when its weight is > 0)


# The student's objective (Sec. 4.2), one row per loss: the w_<name> options, their checks, the
# training sum, show.py's states view and demo.py's ablations all derive from this table.
LOSSES = {
    "distill": Loss(1.0, ("teacher",), lambda p, st: distillation_loss(p.student, p.teacher, st.distill), "D",
                    lambda st: st.distill, "distillation"),
    "consist": Loss(0.5, ("target",), lambda p, st: consistency_loss(p.student, p.target, st.consist), "C",
                    lambda st: st.consist, "consistency"),
    "dlm": Loss(0.1, ("dlm",), lambda p, st: diffusion_loss(p.dlm, p.x0, p.masked, p.t, p.n_positions), "L",
                None, "DLM loss"),  # its positions come from its own noising, not from the states
}


Y_STARS = ("random", "completion", "completion_plus", "literal")  # draw_states' readings of the paper

config = dict(
    mode=Choice("dlm", "dlm", "cdlm", "ar"),   # teacher | student | autoregressive baseline
    out_dir=Str("out/teacher"),
    data_dir=Str("data/arithmetic"),
    init_from=Choice("scratch", "scratch", "resume", "teacher"),  # resume {out_dir}/ckpt.pt | teacher (cdlm)
    # model
    n_layer=Int(4, "[1, inf)"), n_head=Int(4, "[1, inf)"), n_embd=Int(128, "[1, inf)"),
    dropout=Float(0.0, "[0, 1)"),
    block_size=Int(8, "[1, inf)"),     # diffusion block; the student's mask and its trajectories use it
    # optimization
    batch_size=Int(64, "[1, inf)"), max_iters=Int(2000, "[1, inf)"),
    lr_decay_iters=Int(None, "[1, inf)"),  # the cosine's length (None: max_iters); longer: a run stopped along it
    learning_rate=Float(1e-3, "(0, 1]"), min_lr=Float(1e-4, "[0, inf)"),  # an AdamW step moves a weight ~lr
    warmup_iters=Int(100, "[0, inf)"), weight_decay=Float(0.1, "[0, inf)"),
    beta1=Float(0.9, "[0, 1)"), beta2=Float(0.99, "[0, 1)"),
    grad_clip=Float(1.0, "[0, inf)"),  # 0: no clipping
    eps=Float(1e-3, "[1e-6, 1)"),      # smallest mask ratio t of the diffusion objective (float32 t, 1/t)
    prompt_noise=Float(0.0, "[0, 1]"), # teacher: the share of rows whose prompt is noised too (noise_sequences)
    # CDLM student (mode='cdlm', Sec. 4.2)
    teacher_dir=Str("out/teacher"),    # the student starts from, and distills, this checkpoint
    traj_dirs=List(["out/trajectories"], Str(None)),  # trajectory sets of that teacher (e.g. per temperature)
    y_star=Choice("completion_plus", *Y_STARS),  # the readings of the paper's y*: see draw_states
    dlm_noise=Choice("answer", "answer", "block"),  # the auxiliary DLM loss's noising: see noise_block
    dlm_rows=Int(None, "[1, inf)"),    # rows of each batch the DLM loss noises (None: all batch_size); fewer: a cheaper step
    **{f"w_{name}": Float(loss.weight, "[0, inf)") for name, loss in LOSSES.items()},  # the loss weights
    lora_rank=Int(0, "[0, inf)"),      # > 0: LoRA adapters of this rank, teacher weights frozen; 0: full
    lora_alpha=Float(16.0, "(0, inf)"),
    threshold=Float(0.9, "(0, 1]"),    # decoding default stored with the student checkpoint
    # logging and runtime
    eval_interval=Int(250, "[1, inf)"), eval_iters=Int(20, "[1, inf)"),  # the interval is also the checkpoints'
    seed=Int(1337, SEED), device=Str("auto"),
    threads=THREADS,                   # CPU threads: part of the run's identity (runtime.cpu_threads)
    dtype=Str("auto"),                 # 'float32' | 'bfloat16' | 'float16' | 'auto' (bf16 autocast on CUDA)
    compile=Bool(False),               # torch.compile the model (PyTorch 2, mostly worth it on CUDA)
)
ATTN = {r.mode: r.attn for r in ROLES.values()}  # mode -> the mask it trains
STUDENT_ONLY = ("teacher_dir", "traj_dirs", "y_star", "dlm_noise", "dlm_rows", *(f"w_{name}" for name in LOSSES), "lora_alpha",
                "threshold")  # the options only mode='cdlm' reads


# -----------------------------------------------------------------------------
# objectives

def kl_loss(logits, target_logits, where):
    """KL(p_target || p_model) over the vocabulary, averaged over the positions in `where` (B, T)
    bool (the model's logits first, as in every loss here); no such position at all gives 0."""
    logp = F.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    logq = F.log_softmax(target_logits.float(), dim=-1)  # (B, T, V)
    kl = (logq.exp() * (logq - logp)).sum(-1)  # (B, T)
    return (kl * where).sum() / where.sum().clamp_min(1)


def distillation_loss(student_logits, teacher_logits, where):
    """CDLM distillation (Sec. 4.2): at positions masked in y, the student at y matches the teacher's
    distribution at the step the teacher finalized them, rebuilt from the stored hidden state through
    the teacher's frozen LM head. Forward KL(teacher || student), averaged over `where`."""
    return kl_loss(student_logits, teacher_logits, where)


def consistency_loss(student_logits, target_logits, where):
    """CDLM consistency (Sec. 4.2): at positions still masked in a more informed state, the student at
    y matches its own prediction there, a stop-gradient target as in consistency models."""
    return kl_loss(student_logits, target_logits.detach(), where)


def final_after(step, block, k, block_size):
    """Answer positions (B, L) final once the teacher had finalized k tokens of block `block` (B,):
    every earlier block and the block's first k in the teacher's order. step (B, L): the step at which
    the teacher finalized each position, one token per step, so block b's carry steps b*block_size ..
    b*block_size + block_size - 1 (CDLM Sec. 4.1)."""
    pos_block = block_of(torch.arange(step.size(1), device=step.device), 0, block_size)  # (L,)
    in_block = pos_block[None, :] == block[:, None]  # (B, L)
    rank = step - block[:, None] * block_size  # (B, L): order of finalization inside the block
    return (pos_block[None, :] < block[:, None]) | (in_block & (rank < k[:, None]))


class States(NamedTuple):
    y: torch.Tensor        # (B, L) answer positions final in the student's state y
    target: torch.Tensor   # (B, L) final in y', the consistency target's state (= y* under random, literal)
    distill: torch.Tensor  # (B, L) positions with a teacher target
    consist: torch.Tensor  # (B, L) positions with a consistency target


def draw_states(step, block_size, y_star, generator=None):
    """
    One training state per row (CDLM Sec. 4.2): a block b, y = the block after k ~ U{0..block_size-1}
    of its tokens are final (earlier blocks clean), and a later state after k2 ~ U{k+1..block_size}.
    The authors' words: distillation on "positions that become newly unmasked between an
    intermediate state y and its block completion y*"; consistency aligns "the student's predictions
    at state y with its own predictions at the more informed state y* for still-masked positions,
    using a stop-gradient target". Read literally, nothing is still masked in a completion, so the
    readings name three states: y (drawn), y* (the paper's more informed state) and y' (the later
    state whose student predictions are the consistency target; States.target):
      random           y* = y' = the later state: distillation on the positions final in y* but
                       not y, consistency on those still masked in y* (our first reading);
      completion       y* = the completion: distillation on every position of the block masked in
                       y (each against the teacher at the moment it finalized that token); no
                       consistency term (no y');
      completion_plus  distillation as in completion, and consistency toward y' = the later state,
                       on the positions still masked there (our inference: both sentences hold,
                       each with its own more informed state).
      literal          y* = y' = the completion, read word for word: distillation as in completion;
                       consistency on the positions still masked in y*, which are the later
                       blocks' (under the block-causal mask they see the current block, so their
                       predictions at y and at y* differ); the target is the student at y*.
    """
    B, L = step.shape
    dev = step.device
    block = torch.randint(0, L // block_size, (B,), device=dev, generator=generator)
    k = torch.randint(0, block_size, (B,), device=dev, generator=generator)
    k2 = k + 1 + (torch.rand(B, device=dev, generator=generator) * (block_size - k)).long()  # k+1..block_size
    y, later = final_after(step, block, k, block_size), final_after(step, block, k2, block_size)
    done = final_after(step, block, torch.full_like(k, block_size), block_size)  # the completion
    still = done & ~later  # in the block and still masked in the later state
    if y_star == "random":
        return States(y, later, later & ~y, still)
    if y_star == "literal":
        pos_block = block_of(torch.arange(L, device=dev), 0, block_size)  # (L,)
        return States(y, done, done & ~y, pos_block[None, :] > block[:, None])
    return States(y, later, done & ~y, still if y_star == "completion_plus" else torch.zeros_like(still))


def cdlm_losses(model, batch, states, teacher_head, mask_id, block_size, dlm_noise="answer", eps=1e-3,
                generator=None, target_model=None, ctx=nullcontext(), dlm_rows=None):
    """The CDLM losses (Sec. 4.2, the table LOSSES) on a batch of trajectory rows: {name: loss}."""
    p = student_pass(model, batch, states, teacher_head, mask_id, block_size, dlm_noise, eps, generator,
                     target_model, ctx, dlm_rows)
    return {name: loss.fn(p, states) for name, loss in LOSSES.items()}


def student_pass(model, batch, states, teacher_head, mask_id, block_size, dlm_noise="answer", eps=1e-3,
                 generator=None, target_model=None, ctx=nullcontext(), dlm_rows=None):
    """
    The Pass the loss rows read, on a batch of trajectory rows: tensors prompt (B, P), tokens (B, L)
    the teacher's answer, truth (B, L), hidden (B, L, C) the teacher's last hidden state at each
    token's finalization; `states` from draw_states. Only the fields some row needs are computed;
    the student's pass at y and the DLM pass on the noised ground truth share one forward. The DLM
    loss noises `dlm_rows` rows of the batch, drawn at random (None: every row): it only keeps the
    student a denoiser, and each row left out is cheaper.
    """
    needs = {f for loss in LOSSES.values() for f in loss.needs}
    prompt, tokens = batch["prompt"], batch["tokens"]
    B, P = prompt.shape
    as_state = lambda vis: torch.cat([prompt, torch.where(vis, tokens, mask_id)], 1)  # (B, T)
    x0 = xt = masked = t = None
    if "dlm" in needs:  # the ground truth, noised (answers only, or one block: noise_block)
        x0 = torch.cat([prompt, batch["truth"]], 1)  # (B, T)
        if dlm_rows is not None and dlm_rows < B:  # nothing drawn otherwise: the default run is unchanged
            x0 = x0[torch.randperm(B, device=x0.device, generator=generator)[:dlm_rows]]  # (dlm_rows, T)
        if dlm_noise == "block":
            xt, masked, t = noise_block(x0, P, block_size, mask_id, eps, generator)
        else:
            xt, masked, t = noise_answers(x0, P, mask_id, eps, generator)
    with ctx:
        logits, hidden = model(as_state(states.y) if xt is None else torch.cat([as_state(states.y), xt]),
                               return_hidden=True)  # (B + dlm_rows, T, V), (B + dlm_rows, T, C)
        target = torch.zeros_like(logits[:B, P:])
        if "target" in needs and states.consist.any():  # a stop-gradient pass at the more informed state
            with torch.no_grad():
                target = (target_model or model)(as_state(states.target))[:, P:]
    teacher_logits = batch["hidden"].float() @ teacher_head.T if "teacher" in needs else None  # (B, L, V)
    return Pass(logits[:B, P:], hidden[:B, P:], teacher_logits, target,
                None if xt is None else logits[B:], x0, masked, t, block_size if dlm_noise == "block" else tokens.size(1))


def get_lr(it, cfg):
    """Linear warmup, then cosine decay to min_lr over lr_decay_iters (nanoGPT), min_lr after it."""
    if it < cfg["warmup_iters"]:
        return cfg["learning_rate"] * (it + 1) / (cfg["warmup_iters"] + 1)
    decay_iters = cfg["lr_decay_iters"] or cfg["max_iters"]
    ratio = min(1.0, (it - cfg["warmup_iters"]) / max(1, decay_iters - cfg["warmup_iters"]))
    return cfg["min_lr"] + 0.5 * (1 + math.cos(math.pi * ratio)) * (cfg["learning_rate"] - cfg["min_lr"])


# -----------------------------------------------------------------------------
# the training run

class Run(NamedTuple):  # what every step of a run reads, built once by _train
    cfg: dict
    meta: dict
    data: dict               # split -> (n, T) rows: the teacher's and AR's batches, every mode's validation
    traj: object             # the trajectory sets (mode 'cdlm', else None)
    teacher: dict            # the teacher's checkpoint (mode 'cdlm', else None)
    head: torch.Tensor       # (V, C) its frozen LM head in float32: the stored hidden states' logits
    model: torch.nn.Module   # as trained: compiled, DDP-wrapped
    raw: torch.nn.Module     # the model itself
    optimizer: object
    scaler: object           # float16 loss scaling (a no-op otherwise)
    rng: np.random.Generator  # which rows a batch takes
    gen: torch.Generator     # every noise draw
    rt: object               # runtime.Runtime: device, ranks, autocast


def get_batch(run, split):
    """batch_size rows of a data split, drawn with replacement, in order (B, T)."""
    idx = np.sort(run.rng.integers(0, len(run.data[split]), run.cfg["batch_size"]))
    return torch.as_tensor(run.data[split][idx].astype(np.int64), device=run.rt.device)


def data_loss(run, x):
    """A (B, T) batch's loss: AR's next-token loss, else the diffusion loss (also the student's val loss)."""
    cfg, meta = run.cfg, run.meta
    if cfg["mode"] == "ar":
        with run.rt.ctx:
            return ar_loss(run.model(x), x, meta["prompt_len"], meta["eos_id"])
    xt, masked, t, n_positions = noise_sequences(x, meta["prompt_len"], meta["mask_id"], cfg["prompt_noise"],
                                                 cfg["eps"], run.gen)
    with run.rt.ctx:
        return diffusion_loss(run.model(xt), x, masked, t, n_positions)


def student_loss(run):
    """The CDLM objective on a batch of trajectories: the weighted sum of LOSSES, and each part."""
    cfg = run.cfg
    batch = run.traj.batch(np.sort(run.rng.integers(0, run.traj.n, cfg["batch_size"])), run.rt.device)
    states = draw_states(batch["step"], cfg["block_size"], cfg["y_star"], run.gen)
    parts = cdlm_losses(run.model, batch, states, run.head, run.meta["mask_id"], cfg["block_size"], cfg["dlm_noise"],
                        cfg["eps"], run.gen, run.raw, run.rt.ctx, cfg["dlm_rows"])
    return sum(cfg[f"w_{k}"] * v for k, v in parts.items()), parts


@torch.no_grad()
def estimate_val(run):
    run.model.eval()
    losses = [data_loss(run, get_batch(run, "val")).item() for _ in range(run.cfg["eval_iters"])]
    run.model.train()
    return sum(losses) / len(losses)


def save(run, mcfg, iter_num, best_val, path):
    """The checkpoint: weights (LoRA merged), optimizer, every rank's random states (an exact
    resume), provenance (the teacher's hash, the trajectory sets) and the decoding defaults."""
    states = gather_objects(rng_state(run.rng, run.gen), run.rt.world)
    if not run.rt.master:
        return
    cfg, weights = run.cfg, merged_state_dict(run.raw)
    resume = dict(lora_state=run.raw.state_dict() if cfg["lora_rank"] else None, optimizer=run.optimizer.state_dict(),
                  scaler=run.scaler.state_dict(), rng=states, best_val_loss=best_val, iter_num=iter_num)
    save_checkpoint(dict(model_config=asdict(mcfg), model=weights, weights_hash=weights_hash(weights),
                         **resume, resume_hash=resume_hash(resume), config=dict(cfg), data_meta=run.meta,
                         teacher_hash=run.teacher["weights_hash"] if run.teacher else None,
                         trajectories=run.traj.ids if run.traj else None,
                         sampling=asdict(DEFAULT_DECODING[cfg["mode"]](cfg["block_size"], cfg["threshold"]))), path)


def train(cfg, replace=False):  # replace: a finished checkpoint in out_dir (startup.refuse_fresh_start)
    cfg, meta, data = check_config(cfg)
    reads = {**inputs(cfg), "data_dir": from_checkout(cfg["data_dir"])}  # check_config stored it as checkpoints do
    with lock(cfg["out_dir"], "option out_dir"), reading(reads), cpu_threads(cfg["threads"]):
        refuse_fresh_start(cfg, replace)
        return _train(cfg, meta, data)


def _train(cfg, meta, data):
    rt = setup_runtime(cfg)
    mode, ckpt_path = cfg["mode"], os.path.join(cfg["out_dir"], "ckpt.pt")
    teacher, traj = load_teacher(cfg, meta, rt.device) if mode == "cdlm" else (None, None)
    init = load_resume(cfg, meta, rt, teacher, traj) if cfg["init_from"] == "resume" else None
    mcfg = model_config(cfg, meta, init, teacher, rt.device)
    model = Transformer(mcfg).to(rt.device)
    if cfg["init_from"] == "teacher":
        model.load_state_dict(teacher["model"])
    if cfg["lora_rank"]:
        add_lora(model, cfg["lora_rank"], cfg["lora_alpha"])
    if init is not None:
        model.load_state_dict(init["lora_state"] if cfg["lora_rank"] else init["model"])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg["learning_rate"], betas=(cfg["beta1"], cfg["beta2"]),
                                  weight_decay=cfg["weight_decay"], fused=rt.device.startswith("cuda"))
    # float16 needs loss scaling to keep small gradients from flushing to zero; bf16 does not
    scaler = torch.amp.GradScaler(rt.device.split(":")[0], enabled=rt.dtype == "float16")
    # every draw of the run comes from these two (and torch's global state, for dropout)
    rng, gen = np.random.default_rng(cfg["seed"] + rt.rank), torch.Generator(rt.device).manual_seed(cfg["seed"] + rt.rank)
    iter_num, best_val = (init["iter_num"], init["best_val_loss"]) if init else (0, float("inf"))
    if init is not None:
        optimizer.load_state_dict(init["optimizer"])
        scaler.load_state_dict(init["scaler"])
        set_rng_state(init["rng"][rt.rank], rng, gen)
    head = teacher["model"]["lm_head.weight"].float() if teacher else None  # once, not every step
    run = Run(cfg, meta, data, traj, teacher, head, wrap_model(model, cfg["compile"], rt), model, optimizer, scaler, rng, gen, rt)
    if iter_num >= cfg["max_iters"]:
        if rt.master:
            print(f"{ckpt_path} is already at iteration {iter_num} of max_iters={cfg['max_iters']}; nothing to do")
        end_runtime(rt)
        return model
    from tqdm import tqdm
    if rt.master:
        print(f"{mode}: {model.num_params() / 1e6:.2f}M parameters ({sum(p.numel() for p in params) / 1e6:.2f}M "
              f"trained), attn={mcfg.attn}, seq_len={mcfg.seq_len}, device={rt.device}, world={rt.world}")
    bar = tqdm(total=cfg["max_iters"], initial=iter_num, disable=not rt.master, file=sys.stderr, mininterval=0.5)
    t0 = time.time()
    while iter_num < cfg["max_iters"]:
        lr = get_lr(iter_num, cfg)
        for g in optimizer.param_groups:
            g["lr"] = lr
        loss, parts = student_loss(run) if mode == "cdlm" else (data_loss(run, get_batch(run, "train")), {})
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg["grad_clip"] > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, cfg["grad_clip"])
        scaler.step(optimizer)
        scaler.update()
        iter_num += 1
        if not math.isfinite(loss.item()):
            raise CDLMError(f"the loss is {loss.item()} at iteration {iter_num}: lower learning_rate "
                            f"(now {cfg['learning_rate']})" + (f" or lora_alpha (now {cfg['lora_alpha']}: it scales "
                            f"the adapters' update)" if cfg["lora_rank"] else "") + " or check the data; no checkpoint "
                            "written")
        dt, t0 = time.time() - t0, time.time()
        bar.set_postfix(loss=f"{loss.item():.4f}", **{k: f"{v.item():.3f}" for k, v in parts.items()},
                        tok_s=f"{cfg['batch_size'] * mcfg.seq_len * rt.world / dt:,.0f}", lr=f"{lr:.1e}")
        bar.update(1)
        if iter_num % cfg["eval_interval"] == 0 or iter_num == cfg["max_iters"]:
            val = estimate_val(run)
            best_val = min(best_val, val)
            if rt.master:
                bar.write(f"iter {iter_num}: train loss {loss.item():.4f} "
                          + " ".join(f"{k} {v.item():.4f}" for k, v in parts.items())
                          + f", val {'dlm ' if mode == 'cdlm' else ''}loss {val:.4f}")
            save(run, mcfg, iter_num, best_val, ckpt_path)
    bar.close()
    end_runtime(rt)  # no rank returns before rank 0's checkpoint is on disk
    return model


# -----------------------------------------------------------------------------
# the architecture, and the checks before any work

def model_config(cfg, meta, init, teacher, device):
    """The architecture: the resumed checkpoint's, the teacher's under the student's mask, or the options'."""
    mode = cfg["mode"]
    if init is not None:
        return ModelConfig(**init["model_config"])
    if cfg["init_from"] == "teacher":
        tm = teacher["model_config"]
        refuse_unused(cfg, {k: f"with init_from='teacher': the student has its teacher's {k}={tm[k]}"
                            for k in ("n_layer", "n_head", "n_embd", "dropout") if cfg[k] != tm[k]})
        mcfg = ModelConfig(**{**tm, "attn": ATTN[mode], "block_size": cfg["block_size"]})
    else:
        mcfg = ModelConfig(vocab_size=meta["vocab_size"], seq_len=meta["prompt_len"] + meta["gen_len"],
                           prompt_len=meta["prompt_len"], block_size=1 if mode == "ar" else cfg["block_size"],
                           n_layer=cfg["n_layer"], n_head=cfg["n_head"], n_embd=cfg["n_embd"], dropout=cfg["dropout"],
                           attn=ATTN[mode])
    B = cfg["batch_size"]
    rows = 2 * B + (cfg["dlm_rows"] or B) if mode == "cdlm" else B  # the student's y, y* and DLM rows
    check_memory(device, f"options batch_size={B}, n_layer={mcfg.n_layer}, n_embd={mcfg.n_embd}, "
                 f"lora_rank={cfg['lora_rank']}", mcfg, rows, train=True,
                 extra_params=cfg["lora_rank"] * 16 * mcfg.n_embd * mcfg.n_layer)
    return mcfg


def check_config(cfg):
    """Options that only make sense together, and every file the run reads, before any work."""
    cfg = check(config, cfg)
    cfg["data_dir"] = os.path.abspath(cfg["data_dir"])  # the checks below, from any working directory
    mode = cfg["mode"]
    if cfg["n_embd"] % cfg["n_head"]:
        raise CDLMError(f"option n_embd={cfg['n_embd']} is not a multiple of n_head={cfg['n_head']}")
    if cfg["min_lr"] > cfg["learning_rate"]:
        raise CDLMError(f"option min_lr={cfg['min_lr']} is above learning_rate={cfg['learning_rate']}")
    if cfg["learning_rate"] * cfg["weight_decay"] >= 1:  # AdamW's decay: each weight times (1 - lr * wd) a step
        raise CDLMError(f"option weight_decay={cfg['weight_decay']}: AdamW scales every weight by 1 - learning_rate * "
                        f"weight_decay each step, here {1 - cfg['learning_rate'] * cfg['weight_decay']:.3g}: give less "
                        f"than 1/learning_rate = {1 / cfg['learning_rate']:.3g}")
    if cfg["init_from"] == ("scratch" if mode == "cdlm" else "teacher"):
        raise CDLMError(f"option init_from={cfg['init_from']!r}: mode={mode!r} starts from "
                        f"{'the teacher' if mode == 'cdlm' else 'scratch'} (or resumes)")
    if mode != "cdlm" and cfg["lora_rank"]:
        raise CDLMError(f"option lora_rank={cfg['lora_rank']}: LoRA is for the student (mode='cdlm')")
    if mode == "cdlm" and (cfg["dlm_rows"] or 0) > cfg["batch_size"]:
        raise CDLMError(f"option dlm_rows={cfg['dlm_rows']}: more than the batch_size={cfg['batch_size']} rows it draws from")
    if mode == "cdlm" and sum(cfg[f"w_{name}"] for name in LOSSES) == 0:
        raise CDLMError(f"options {', '.join(f'w_{name}' for name in LOSSES)} are all 0: nothing to train")
    ignored = dict(lora_alpha="without lora_rank > 0") if not cfg["lora_rank"] else {}
    ignored |= dict.fromkeys(("dlm_noise", "dlm_rows"), "with w_dlm=0 (no DLM loss)") if cfg["w_dlm"] == 0 else {}
    ignored |= dict(w_consist="with y_star='completion' (no consistency term)") if cfg["y_star"] == "completion" else {}
    ignored |= dict.fromkeys(STUDENT_ONLY * (mode != "cdlm"), f"with mode={mode!r}: it is for the student (mode='cdlm')")
    ignored |= dict(prompt_noise=f"with mode={mode!r}: it is for the teacher (mode='dlm')") if mode != "dlm" else {}
    refuse_unused(cfg, ignored | dict.fromkeys(("block_size", "eps") * (mode == "ar"), "with mode='ar': no blocks, no noise"))
    refuse_overlap(dict(out_dir=cfg["out_dir"]), inputs(cfg))
    meta = load_meta(cfg["data_dir"])
    if mode != "ar" and meta["gen_len"] % cfg["block_size"]:
        raise CDLMError(f"option block_size={cfg['block_size']}: gen_len={meta['gen_len']} of "
                        f"{cfg['data_dir']} is not a multiple of it")
    data = {s: load_split(cfg["data_dir"], s, meta) for s in ("train", "val")}
    pick_dtype(cfg["dtype"], pick_device(cfg["device"]))  # refused here, before out_dir is made
    check_out_kind(cfg["out_dir"], "a checkpoint")  # never beside a dataset or a trajectory set, nor in one
    check_file_writable(os.path.join(cfg["out_dir"], "ckpt.pt"), "the checkpoint of option out_dir")
    cfg["data_dir"] = checkout_path(cfg["data_dir"])  # as the checkpoint stores it
    return cfg, meta, data


def inputs(cfg):
    """The folders a run reads, by option (a resumed run also reads out_dir: its own output)."""
    return {k: cfg[k] for k in (("data_dir", "teacher_dir", "traj_dirs") if cfg["mode"] == "cdlm" else ("data_dir",))}


def main(argv):
    train(configure(config, argv))


if __name__ == "__main__":
    run_main(main)
