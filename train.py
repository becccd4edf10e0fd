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

from configurator import SEED, Bool, CDLMError, Choice, Float, Int, List, Str, check, configure, refuse_unused, run_main
from data.common import data_fingerprint, load_meta, load_split, same_data
from data.trajectories import load_trajectory_sets
from model import (ROLES, ModelConfig, Transformer, add_lora, merged_state_dict, read_checkpoint, save_checkpoint,
                   weights_hash)
from runtime import (THREADS, check_file_writable, check_memory, cpu_threads, end_runtime, gather_objects, lock,
                     refuse_overlap, rng_state, set_rng_state, setup_runtime)
from sample import DecodeSettings

class Pass(NamedTuple):
    """What the student's losses are computed from, for one batch (cdlm_losses)."""
    student: torch.Tensor   # (B, L, V) the student's logits at y
    teacher: torch.Tensor   # (B, L, V) the teacher's at each token's finalization (from its hidden state)
    target: torch.Tensor    # (B, L, V) the student's own at the more informed state, no gradient
    dlm: torch.Tensor       # (n, T, V) the student's logits on the noised ground truth (n = dlm_rows)
    x0: torch.Tensor        # (n, T) the ground truth
    masked: torch.Tensor    # (n, T) where it was noised, with ratio t (n,)
    t: torch.Tensor
    n_positions: int        # the positions that could be noised per row


class Loss(NamedTuple):
    weight: float           # the default of its option w_<name>
    fn: Callable            # (Pass, States) -> a scalar
    mark: str               # its letter in show.py's states view
    positions: Callable     # (States) -> (B, L) the answer positions it trains, for that view
    title: str              # its name in tables ("no <title>" is its ablation)


# The student's objective (Sec. 4.2), one row per loss: the w_<name> options, their checks, the
# training sum, show.py's states view and demo.py's ablations all derive from this table.
LOSSES = {
    "distill": Loss(1.0, lambda p, st: distillation_loss(p.student, p.teacher, st.distill), "D",
                    lambda st: st.distill, "distillation"),
    "consist": Loss(0.5, lambda p, st: consistency_loss(p.student, p.target, st.consist), "C",
                    lambda st: st.consist, "consistency"),
    "dlm": Loss(0.1, lambda p, st: diffusion_loss(p.dlm, p.x0, p.masked, p.t, p.n_positions), "L",
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
    learning_rate=Float(1e-3, "(0, inf)"), min_lr=Float(1e-4, "[0, inf)"),
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
# what a resumed run must share with the run it continues
SAME_ON_RESUME = ("mode", "block_size", "n_layer", "n_head", "n_embd", "dropout", "lora_rank", "y_star", "dlm_noise",
                  "prompt_noise")
# what a resume restores beyond the weights: a weights-only checkpoint (as in ref/) cannot be resumed
RESUME_KEYS = ("optimizer", "scaler", "rng", "best_val_loss")


# -----------------------------------------------------------------------------
# objectives

def noise_answers(x, prompt_len, mask_id, eps=1e-3, generator=None):
    """
    The forward process of masked diffusion on answers only (LLaDA SFT): draw t ~ U(eps, 1) per
    row and mask each answer token (EOS padding included) with probability t; the prompt stays clean.
    Returns the noised tokens, the boolean mask of masked positions, and t (B,).
    """
    B, T = x.shape
    t = eps + (1 - eps) * torch.rand(B, device=x.device, generator=generator)  # (B,)
    r = torch.rand(B, T, device=x.device, generator=generator)  # (B, T)
    masked = (r < t[:, None]) & (torch.arange(T, device=x.device) >= prompt_len)  # (B, T)
    return torch.where(masked, torch.full_like(x, mask_id), x), masked, t


def noise_sequences(x, prompt_len, mask_id, prompt_share=0.0, eps=1e-3, generator=None):
    """
    The teacher's noising: noise_answers, and in a share of rows the prompt too, at the same ratio t
    (LLaDA's pre-training noises whole sequences), so that the teacher learns to fill a hole from
    the context on both sides, prompt included (show.py --view=infill). Returns noise_answers'
    three and each row's count of positions that could be masked (B,) (an int when no prompt is
    noised), the loss's denominator.
    """
    xt, masked, t = noise_answers(x, prompt_len, mask_id, eps, generator)
    B, T = x.shape
    if prompt_share == 0:  # nothing more drawn: the default run's random stream and loss are unchanged
        return xt, masked, t, T - prompt_len
    rows = torch.rand(B, device=x.device, generator=generator) < prompt_share  # (B,)
    hit = (torch.rand(B, prompt_len, device=x.device, generator=generator) < t[:, None]) & rows[:, None]  # (B, P)
    masked = torch.cat([hit, masked[:, prompt_len:]], dim=1)  # (B, T)
    return torch.where(masked, torch.full_like(x, mask_id), x), masked, t, T - prompt_len + rows * prompt_len


def noise_block(x, prompt_len, block_size, mask_id, eps=1e-3, generator=None):
    """
    Block-wise noising, the states the block-causal student meets at inference (BD3-LM): per row
    one answer block is noised with ratio t ~ U(eps, 1), earlier blocks stay clean, later blocks
    are all MASK (the mask hides them anyway). Same returns as noise_answers; only the chosen
    block's masked positions count in the loss.
    """
    B, T = x.shape
    n_blocks = (T - prompt_len) // block_size
    block = torch.randint(0, n_blocks, (B,), device=x.device, generator=generator)  # (B,)
    xt, masked, t = noise_answers(x, prompt_len, mask_id, eps, generator)
    pos_block = (torch.arange(T, device=x.device) - prompt_len).div(block_size, rounding_mode="floor")  # (T,)
    masked = masked & (pos_block == block[:, None])  # (B, T)
    later = (pos_block > block[:, None]) & (pos_block >= 0)
    return torch.where(masked | later, torch.full_like(x, mask_id), x), masked, t


def diffusion_loss(logits, x0, masked, t, n_positions):
    """
    Masked-diffusion loss (LLaDA Eq. 5 for SFT): cross-entropy on masked positions, weighted by
    1/t. Each row's sum is divided by the number of positions that could be masked (gen_len, or
    block_size for block noising), not by how many were: with the 1/t weight this makes it an
    unbiased per-token estimate of the negative ELBO, and every noise level weighs the same.
    """
    ce = F.cross_entropy(logits.float().transpose(1, 2), x0, reduction="none")  # (B, T)
    per_row = (ce * masked).sum(1) / t / n_positions  # (B,)
    return per_row.mean()


def ar_loss(logits, x, prompt_len, eos_id):
    """Next-token cross-entropy on answer tokens up to and including the first EOS."""
    target = x[:, 1:]  # (B, T-1): position p predicts token p+1
    pos = torch.arange(1, x.size(1), device=x.device)
    is_eos = (target == eos_id) & (pos >= prompt_len)
    before_eos = (is_eos.cumsum(1) - is_eos.long()) == 0  # first EOS counts, later ones not
    valid = (pos >= prompt_len) & before_eos  # (B, T-1)
    ce = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), target, reduction="none")
    return (ce * valid).sum() / valid.sum()


def kl_loss(logits, target_logits, where):
    """
    KL(p_target || p_model) summed over the vocabulary, averaged over the positions in `where`
    (B, T) bool; the model's logits first, as in every loss here. Rows with no such position
    contribute nothing; an empty batch gives 0.
    """
    logp = F.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    logq = F.log_softmax(target_logits.float(), dim=-1)  # (B, T, V)
    kl = (logq.exp() * (logq - logp)).sum(-1)  # (B, T)
    return (kl * where).sum() / where.sum().clamp_min(1)


def distillation_loss(student_logits, teacher_logits, where):
    """
    CDLM distillation (Sec. 4.2): at positions masked in y, the student at y matches the teacher's
    distribution at the step the teacher finalized them, rebuilt from the stored hidden state
    through the teacher's frozen LM head. Forward KL(teacher || student), averaged over `where`.
    """
    return kl_loss(student_logits, teacher_logits, where)


def consistency_loss(student_logits, target_logits, where):
    """
    CDLM consistency (Sec. 4.2): at positions still masked in a more informed state, the student at
    y matches its own prediction there, a stop-gradient target as in consistency models.
    """
    return kl_loss(student_logits, target_logits.detach(), where)


def final_after(step, block, k, block_size):
    """
    Answer positions (B, L) final once the teacher had finalized k tokens of block `block` (B,):
    every earlier block and the block's first k in the teacher's order. step (B, L) is the step at
    which the teacher finalized each position, one token per step, so block b's tokens carry steps
    b*block_size .. b*block_size + block_size - 1 (CDLM Sec. 4.1).
    """
    pos_block = torch.arange(step.size(1), device=step.device) // block_size  # (L,)
    in_block = pos_block[None, :] == block[:, None]  # (B, L)
    rank = step - block[:, None] * block_size  # (B, L): order of finalization inside the block
    return (pos_block[None, :] < block[:, None]) | (in_block & (rank < k[:, None]))


class States(NamedTuple):
    y: torch.Tensor        # (B, L) answer positions final in the student's state y
    target: torch.Tensor   # (B, L) final in the consistency target's state (y* or y')
    distill: torch.Tensor  # (B, L) positions with a teacher target
    consist: torch.Tensor  # (B, L) positions with a consistency target


def draw_states(step, block_size, y_star, generator=None):
    """
    One training state per row (CDLM Sec. 4.2): a block b, y = the block after k ~ U{0..block_size-1}
    of its tokens are final (earlier blocks clean), and a later state after k2 ~ U{k+1..block_size}.
    The authors' words: distillation on "positions that become newly unmasked between an
    intermediate state y and its block completion y*"; consistency aligns "the student's predictions
    at state y with its own predictions at the more informed state y* for still-masked positions,
    using a stop-gradient target". Read literally, nothing is still masked in a completion, so:
      random           y* = the later state: distillation on the positions final in y* but not y,
                       consistency on those still masked in y* (our first reading);
      completion       y* = the completion: distillation on every position of the block masked in
                       y (each against the teacher at the moment it finalized that token); no
                       consistency term;
      completion_plus  distillation as in completion, and consistency toward the later state,
                       renamed y', on the positions still masked there (our inference: both
                       sentences hold, each with its own y*).
      literal          y* = the completion, read word for word: distillation as in completion;
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
        pos_block = torch.arange(L, device=dev) // block_size  # (L,)
        return States(y, done, done & ~y, pos_block[None, :] > block[:, None])
    return States(y, later, done & ~y, still if y_star == "completion_plus" else torch.zeros_like(still))


def cdlm_losses(model, batch, states, teacher_head, mask_id, block_size, dlm_noise="answer", eps=1e-3,
                generator=None, target_model=None, ctx=nullcontext(), dlm_rows=None):
    """
    The CDLM losses (Sec. 4.2, the table LOSSES) on a batch of trajectory rows: tensors prompt
    (B, P), tokens (B, L) the teacher's answer, truth (B, L), hidden (B, L, C) the teacher's last
    hidden state at each token's finalization; `states` from draw_states. Returns {name: loss}.
    The student's pass at y and the DLM pass on noised ground truth share one forward. The DLM
    loss noises `dlm_rows` rows of the batch, drawn at random (None: every row): it only keeps the
    student a denoiser (weight 0.1), and each row left out is one row less through the model.
    """
    prompt, tokens = batch["prompt"], batch["tokens"]
    B, P = prompt.shape
    as_state = lambda vis: torch.cat([prompt, torch.where(vis, tokens, mask_id)], 1)  # (B, T)
    x0 = torch.cat([prompt, batch["truth"]], 1)  # (B, T)
    if dlm_rows is not None and dlm_rows < B:  # nothing drawn otherwise: the default run is unchanged
        x0 = x0[torch.randperm(B, device=x0.device, generator=generator)[:dlm_rows]]  # (dlm_rows, T)
    if dlm_noise == "block":
        xt, masked, t = noise_block(x0, P, block_size, mask_id, eps, generator)
    else:
        xt, masked, t = noise_answers(x0, P, mask_id, eps, generator)
    with ctx:
        logits = model(torch.cat([as_state(states.y), xt]))  # (B + dlm_rows, T, V)
        target = torch.zeros_like(logits[:B, P:])
        if states.consist.any():  # a stop-gradient pass at the more informed state
            with torch.no_grad():
                target = (target_model or model)(as_state(states.target))[:, P:]
    teacher_logits = batch["hidden"].float() @ teacher_head.T  # (B, L, V)
    p = Pass(logits[:B, P:], teacher_logits, target, logits[B:], x0, masked, t,
             block_size if dlm_noise == "block" else x0.size(1) - P)
    return {name: loss.fn(p, states) for name, loss in LOSSES.items()}


def get_lr(it, cfg):
    """Linear warmup, then cosine decay to min_lr (nanoGPT)."""
    if it < cfg["warmup_iters"]:
        return cfg["learning_rate"] * (it + 1) / (cfg["warmup_iters"] + 1)
    ratio = min(1.0, (it - cfg["warmup_iters"]) / max(1, cfg["max_iters"] - cfg["warmup_iters"]))
    return cfg["min_lr"] + 0.5 * (1 + math.cos(math.pi * ratio)) * (cfg["learning_rate"] - cfg["min_lr"])


def sampling_defaults(cfg):
    """Decoding settings stored in the checkpoint: sample.py and bench.py use them unless told otherwise."""
    if cfg["mode"] == "cdlm":
        return DecodeSettings(cfg["block_size"], threshold=cfg["threshold"], cache="exact", early_stop=True)
    if cfg["mode"] == "ar":
        return DecodeSettings(1, steps_per_block=1, cache="exact", early_stop=True)
    return DecodeSettings(cfg["block_size"], steps_per_block=cfg["block_size"])  # one token per step


# -----------------------------------------------------------------------------

def check_config(cfg):
    """Options that only make sense together, and every file the run reads, before any work."""
    cfg = check(config, cfg)
    cfg["data_dir"] = os.path.abspath(cfg["data_dir"])  # checkpoints find their data from anywhere
    mode = cfg["mode"]
    if cfg["n_embd"] % cfg["n_head"]:
        raise CDLMError(f"option n_embd={cfg['n_embd']} is not a multiple of n_head={cfg['n_head']}")
    if cfg["min_lr"] > cfg["learning_rate"]:
        raise CDLMError(f"option min_lr={cfg['min_lr']} is above learning_rate={cfg['learning_rate']}")
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
    ignored |= dict.fromkeys(STUDENT_ONLY * (mode != "cdlm"), f"with mode={mode!r}: it is for the student (mode='cdlm')")
    ignored |= dict(prompt_noise=f"with mode={mode!r}: it is for the teacher (mode='dlm')") if mode != "dlm" else {}
    refuse_unused(cfg, ignored | dict.fromkeys(("block_size", "eps") * (mode == "ar"), "with mode='ar': no blocks, no noise"))
    reads = ("data_dir", "teacher_dir", "traj_dirs") if mode == "cdlm" else ("data_dir",)  # (resume reads out_dir: its own)
    refuse_overlap(dict(out_dir=cfg["out_dir"]), {k: cfg[k] for k in reads})
    meta = load_meta(cfg["data_dir"])
    if mode != "ar" and meta["gen_len"] % cfg["block_size"]:
        raise CDLMError(f"option block_size={cfg['block_size']}: gen_len={meta['gen_len']} of "
                        f"{cfg['data_dir']} is not a multiple of it")
    data = {s: load_split(cfg["data_dir"], s, meta) for s in ("train", "val")}
    check_file_writable(os.path.join(cfg["out_dir"], "ckpt.pt"), "the checkpoint of option out_dir")
    return cfg, meta, data


def train(cfg):
    cfg, meta, data = check_config(cfg)
    with lock(cfg["out_dir"], "option out_dir"), cpu_threads(cfg["threads"]):  # one writer per checkpoint folder
        return _train(cfg, meta, data)


def _train(cfg, meta, data):
    rt = setup_runtime(cfg)
    P, gen_len, mode = meta["prompt_len"], meta["gen_len"], cfg["mode"]
    ckpt_path = os.path.join(cfg["out_dir"], "ckpt.pt")
    iter_num, best_val, init, teacher = 0, float("inf"), None, None
    if mode == "cdlm":
        teacher = read_checkpoint(os.path.join(cfg["teacher_dir"], "ckpt.pt"), rt.device, "dlm", "teacher_dir")
        if not same_data(teacher["data_meta"], meta):
            raise CDLMError(f"the teacher in {cfg['teacher_dir']} was trained on other data than {cfg['data_dir']}")
        traj = load_trajectory_sets(cfg["traj_dirs"], teacher["weights_hash"], gen_len, cfg["block_size"],
                                    data_fingerprint(meta))
    if cfg["init_from"] == "resume":
        try:
            init = read_checkpoint(ckpt_path, rt.device, mode, "out_dir", RESUME_KEYS)
        except CDLMError as e:  # what a rerun can do about it
            raise CDLMError(f"{e}; to start over in {cfg['out_dir']} instead, rerun with --init_from="
                            f"{'teacher' if mode == 'cdlm' else 'scratch'} (it replaces the checkpoint)") from None
        changed = [k for k in SAME_ON_RESUME if init["config"].get(k, config[k].default) != cfg[k]]  # older: default
        if changed or not same_data(init["data_meta"], meta):
            was = ", ".join(f"{k}={init['config'].get(k)!r}" for k in changed) or "other data"
            raise CDLMError(f"cannot resume {ckpt_path}: it was trained with {was}")
        if teacher is not None and init.get("teacher_hash") != teacher["weights_hash"]:
            raise CDLMError(f"cannot resume {ckpt_path}: it was distilled from another teacher than {cfg['teacher_dir']}")
        if teacher is not None and init.get("trajectories", traj.ids) != traj.ids:  # older checkpoints: unknown
            raise CDLMError(f"cannot resume {ckpt_path}: it was trained on other trajectory sets than those now "
                            f"in {', '.join(cfg['traj_dirs'])} (collected again since)")
        if len(init["rng"]) != rt.world:
            raise CDLMError(f"cannot resume {ckpt_path} exactly: it ran on {len(init['rng'])} process(es), this on {rt.world}")
        mcfg = ModelConfig(**init["model_config"])
        iter_num, best_val = init["iter_num"], init["best_val_loss"]
    elif cfg["init_from"] == "teacher":
        tm = teacher["model_config"]
        refuse_unused(cfg, {k: f"with init_from='teacher': the student has its teacher's {k}={tm[k]}"
                            for k in ("n_layer", "n_head", "n_embd", "dropout") if cfg[k] != tm[k]})
        mcfg = ModelConfig(**{**tm, "attn": ATTN[mode], "block_size": cfg["block_size"]})
    else:
        mcfg = ModelConfig(vocab_size=meta["vocab_size"], seq_len=P + gen_len, prompt_len=P,
                           block_size=1 if mode == "ar" else cfg["block_size"], n_layer=cfg["n_layer"],
                           n_head=cfg["n_head"], n_embd=cfg["n_embd"], dropout=cfg["dropout"], attn=ATTN[mode])
    B = cfg["batch_size"]
    rows = 2 * B + (cfg["dlm_rows"] or B) if mode == "cdlm" else B  # the student's y, y* and DLM rows
    check_memory(rt.device, f"options batch_size={B}, n_layer={mcfg.n_layer}, n_embd={mcfg.n_embd}, "
                 f"lora_rank={cfg['lora_rank']}", mcfg, rows,
                 train=True, extra_params=cfg["lora_rank"] * 16 * mcfg.n_embd * mcfg.n_layer)
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
    if init is not None:
        optimizer.load_state_dict(init["optimizer"])
        scaler.load_state_dict(init["scaler"])
        set_rng_state(init["rng"][rt.rank], rng, gen)
    raw_model = model
    if cfg["compile"]:
        model = torch.compile(model)
    if rt.ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(model, device_ids=[int(os.environ["LOCAL_RANK"])] if rt.device.startswith("cuda") else None)

    def get_batch(split):
        idx = np.sort(rng.integers(0, len(data[split]), cfg["batch_size"]))
        return torch.as_tensor(data[split][idx].astype(np.int64), device=rt.device)  # (B, T)

    def data_loss(x):
        """The loss on a (B, T) batch of the data; for 'cdlm' the auxiliary DLM loss alone."""
        if mode == "ar":
            with rt.ctx:
                return ar_loss(model(x), x, P, meta["eos_id"])
        xt, masked, t, n_positions = noise_sequences(x, P, meta["mask_id"], cfg["prompt_noise"], cfg["eps"], gen)
        with rt.ctx:
            return diffusion_loss(model(xt), x, masked, t, n_positions)

    def student_loss():
        batch = traj.batch(np.sort(rng.integers(0, traj.n, cfg["batch_size"])), rt.device)
        states = draw_states(batch["step"], cfg["block_size"], cfg["y_star"], gen)
        parts = cdlm_losses(model, batch, states, teacher_head, meta["mask_id"], cfg["block_size"], cfg["dlm_noise"],
                            cfg["eps"], gen, raw_model, rt.ctx, cfg["dlm_rows"])
        return sum(cfg[f"w_{k}"] * v for k, v in parts.items()), parts

    @torch.no_grad()
    def estimate_val():
        model.eval()
        losses = [data_loss(get_batch("val")).item() for _ in range(cfg["eval_iters"])]
        model.train()
        return sum(losses) / len(losses)

    def checkpoint():
        states = gather_objects(rng_state(rng, gen), rt.world)  # every rank's, for an exact resume
        if not rt.master:
            return
        weights = merged_state_dict(raw_model)
        save_checkpoint(dict(model_config=asdict(mcfg), model=weights, weights_hash=weights_hash(weights),
                             lora_state=raw_model.state_dict() if cfg["lora_rank"] else None,
                             optimizer=optimizer.state_dict(), scaler=scaler.state_dict(), rng=states,
                             iter_num=iter_num, best_val_loss=best_val, config=dict(cfg), data_meta=meta,
                             teacher_hash=teacher["weights_hash"] if teacher else None,
                             trajectories=traj.ids if teacher else None,
                             sampling=asdict(sampling_defaults(cfg))), ckpt_path)

    if mode == "cdlm":
        teacher_head = teacher["model"]["lm_head.weight"].float()  # (V, C), frozen
    if iter_num >= cfg["max_iters"]:
        if rt.master:
            print(f"{ckpt_path} is already at iteration {iter_num} of max_iters={cfg['max_iters']}; nothing to do")
        end_runtime(rt)
        return raw_model
    from tqdm import tqdm
    if rt.master:
        trainable = sum(p.numel() for p in params)
        print(f"{mode}: {raw_model.num_params() / 1e6:.2f}M parameters ({trainable / 1e6:.2f}M trained), "
              f"attn={mcfg.attn}, seq_len={mcfg.seq_len}, device={rt.device}, world={rt.world}")
    bar = tqdm(total=cfg["max_iters"], initial=iter_num, disable=not rt.master, file=sys.stderr, mininterval=0.5)
    tokens_per_iter = cfg["batch_size"] * mcfg.seq_len * rt.world
    t0 = time.time()
    while iter_num < cfg["max_iters"]:
        lr = get_lr(iter_num, cfg)
        for g in optimizer.param_groups:
            g["lr"] = lr
        loss, parts = student_loss() if mode == "cdlm" else (data_loss(get_batch("train")), {})
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
                            f"(now {cfg['learning_rate']}) or check the data; no checkpoint written")
        dt, t0 = time.time() - t0, time.time()
        bar.set_postfix(loss=f"{loss.item():.4f}", **{k: f"{v.item():.3f}" for k, v in parts.items()},
                        tok_s=f"{tokens_per_iter / dt:,.0f}", lr=f"{lr:.1e}")
        bar.update(1)
        if iter_num % cfg["eval_interval"] == 0 or iter_num == cfg["max_iters"]:
            val = estimate_val()
            best_val = min(best_val, val)
            if rt.master:
                bar.write(f"iter {iter_num}: train loss {loss.item():.4f} "
                          + " ".join(f"{k} {v.item():.4f}" for k, v in parts.items())
                          + f", val {'dlm ' if mode == 'cdlm' else ''}loss {val:.4f}")
            checkpoint()
    bar.close()
    end_runtime(rt)  # no rank returns before rank 0's checkpoint is on disk
    return raw_model


def main(argv):
    train(configure(config, argv))


if __name__ == "__main__":
    run_main(main)
