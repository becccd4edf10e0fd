"""
Training for the three models of this repo, switched by `mode`:

    python train.py config/train_teacher.py    # mode='dlm':  masked-diffusion teacher, bidirectional
    python train.py config/train_student.py    # mode='cdlm': CDLM student, block_causal (Sec. 4.2)
    python train.py config/train_ar.py         # mode='ar':   autoregressive baseline, causal

Several processes: torchrun --standalone --nproc_per_node=2 train.py config/train_teacher.py
(gloo on CPU, nccl on CUDA), as in nanoGPT.
"""
import math
import os
import sys
import time
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F

from configurator import configure
from data.common import load_meta, load_split
from model import ModelConfig, Transformer, read_checkpoint, save_checkpoint

config = dict(
    mode="dlm",               # 'dlm' (teacher) | 'cdlm' (student) | 'ar'
    out_dir="out/teacher",
    data_dir="data/arithmetic",
    init_from="scratch",      # 'scratch' | 'resume' (continue {out_dir}/ckpt.pt) | 'teacher' (cdlm)
    # model
    n_layer=4, n_head=4, n_embd=128, dropout=0.0,
    block_size=8,             # diffusion block; must match the block size used at inference
    # optimization
    batch_size=64,
    max_iters=2000,
    learning_rate=1e-3,
    min_lr=1e-4,
    warmup_iters=100,
    weight_decay=0.1,
    beta1=0.9, beta2=0.99,
    grad_clip=1.0,
    eps=1e-3,                 # smallest mask ratio t of the diffusion objective
    # CDLM student (mode='cdlm', Sec. 4.2)
    teacher_dir="out/teacher",  # the student starts from, and distills, this checkpoint
    traj_dir="out/trajectories",
    w_distill=1.0,
    w_consist=0.5,
    w_dlm=0.1,
    threshold=0.9,            # decoding default stored with the student checkpoint
    # logging
    eval_interval=250,
    eval_iters=20,
    seed=1337,
    device="auto",
    dtype="auto",             # 'float32' | 'bfloat16' | 'float16' | 'auto' (bf16 autocast on CUDA)
    compile=False,            # torch.compile the model (PyTorch 2, mostly worth it on CUDA)
)


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


def diffusion_loss(logits, x0, masked, t, gen_len):
    """
    Masked-diffusion loss (LLaDA Eq. 5 for SFT): cross-entropy on masked positions, weighted by
    1/t. Each row's sum is divided by its answer length gen_len (not by the number of masked
    tokens): with the 1/t weight this makes it an unbiased per-token estimate of the negative ELBO,
    and long and short noise levels weigh the same per answer token.
    """
    ce = F.cross_entropy(logits.float().transpose(1, 2), x0, reduction="none")  # (B, T)
    per_row = (ce * masked).sum(1) / t / gen_len  # (B,)
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


def kl_loss(target_logits, logits, where):
    """
    KL(p_target || p_model) summed over the vocabulary, averaged over the positions in `where`
    (B, T) bool. Rows with no such position contribute nothing; an empty batch gives 0.
    """
    logp = F.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    logq = F.log_softmax(target_logits.float(), dim=-1)  # (B, T, V)
    kl = (logq.exp() * (logq - logp)).sum(-1)  # (B, T)
    return (kl * where).sum() / where.sum().clamp_min(1)


def distillation_loss(student_logits, teacher_logits, newly_unmasked):
    """
    CDLM distillation (Sec. 4.2): on positions masked in y but finalized in y*, the student at y
    matches the teacher's distribution at the step it finalized them, rebuilt from the stored
    hidden state through the teacher's frozen LM head. Forward KL(teacher || student); the
    denominator is the number of newly unmasked positions.
    """
    return kl_loss(teacher_logits, student_logits, newly_unmasked)


def consistency_loss(student_logits, target_logits, still_masked):
    """
    CDLM consistency (Sec. 4.2): on positions still masked in the more informed state y*, the
    student at y matches its own prediction at y*, a stop-gradient target as in consistency models.
    The denominator is the number of still-masked positions.
    """
    return kl_loss(target_logits.detach(), student_logits, still_masked)


def trajectory_states(step, block, k, k_star, block_size):
    """
    Two states of one block along the teacher's trajectory (CDLM Sec. 4.2), for a batch:
    step (B, L) is the step at which each answer position was finalized; in block b the teacher
    finalized one token per step, at steps b*block_size ... b*block_size + block_size - 1.
    y has the first k tokens of the block finalized, y* the first k_star > k. Earlier blocks are
    clean, later ones masked (the block-causal student does not see them anyway).
    Returns answer-position masks (B, L): visible in y, visible in y*, and the block's positions.
    """
    pos_block = torch.arange(step.size(1), device=step.device) // block_size  # (L,)
    in_block = pos_block[None, :] == block[:, None]  # (B, L)
    earlier = pos_block[None, :] < block[:, None]
    rank = step - block[:, None] * block_size  # (B, L): order of finalization inside the block
    vis = earlier | (in_block & (rank < k[:, None]))
    vis_star = earlier | (in_block & (rank < k_star[:, None]))
    return vis, vis_star, in_block


def get_lr(it, cfg):
    """Linear warmup, then cosine decay to min_lr (nanoGPT)."""
    if it < cfg["warmup_iters"]:
        return cfg["learning_rate"] * (it + 1) / (cfg["warmup_iters"] + 1)
    ratio = min(1.0, (it - cfg["warmup_iters"]) / max(1, cfg["max_iters"] - cfg["warmup_iters"]))
    return cfg["min_lr"] + 0.5 * (1 + math.cos(math.pi * ratio)) * (cfg["learning_rate"] - cfg["min_lr"])


def sampling_defaults(cfg):
    """Decoding settings stored in the checkpoint: sample.py uses them unless told otherwise."""
    if cfg["mode"] == "cdlm":
        return dict(threshold=cfg["threshold"], steps_per_block=None, use_cache=True, early_stop=True)
    if cfg["mode"] == "ar":
        return dict(steps_per_block=1, threshold=None, use_cache=True, early_stop=True)
    return dict(steps_per_block=cfg["block_size"], threshold=None, use_cache=False, early_stop=False)


# -----------------------------------------------------------------------------

def setup_runtime(cfg):
    """
    DDP (torchrun sets RANK), device, seed and autocast context; nanoGPT's recipe. A process
    group that the caller already started is used as it is (and left for the caller to end).
    Returns (ddp, rank, world, device, dtype, autocast context, whether we started the group).
    """
    import torch.distributed as dist
    from sample import autocast, pick_device, pick_dtype
    ddp = int(os.environ.get("RANK", -1)) != -1
    owns_group = ddp and not dist.is_initialized()
    device = pick_device(cfg["device"])
    rank, world = 0, 1
    if ddp:
        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
            torch.cuda.set_device(device)
        if owns_group:
            dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(cfg["seed"] + rank)
    dtype = pick_dtype(cfg["dtype"], device)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 for the float32 matmuls left over
        torch.backends.cudnn.allow_tf32 = True
    return ddp, rank, world, device, dtype, autocast(device, dtype), owns_group


def end_runtime(ddp, owns_group):
    """Every rank waits here until rank 0 has written its files; then the group we started ends."""
    if ddp:
        import torch.distributed as dist
        dist.barrier()
        if owns_group:
            dist.destroy_process_group()


def train(cfg):
    ddp, rank, world, device, dtype, ctx, owns_group = setup_runtime(cfg)
    master = rank == 0
    meta = load_meta(cfg["data_dir"])
    data = {s: load_split(cfg["data_dir"], s, meta) for s in ("train", "val")}
    P, gen_len = meta["prompt_len"], meta["gen_len"]
    if gen_len % cfg["block_size"] and cfg["mode"] != "ar":
        raise SystemExit(f"config error: gen_len={gen_len} of {cfg['data_dir']} is not a multiple of block_size={cfg['block_size']}")
    ckpt_path = os.path.join(cfg["out_dir"], "ckpt.pt")
    iter_num, best_val = 0, float("inf")
    attn = {"dlm": "bidirectional", "cdlm": "block_causal", "ar": "causal"}[cfg["mode"]]
    init = None
    if cfg["init_from"] == "resume":
        init = read_checkpoint(ckpt_path, device)
        mcfg = ModelConfig(**init["model_config"])
        iter_num, best_val = init["iter_num"], init["best_val_loss"]
    elif cfg["init_from"] == "teacher":
        init = read_checkpoint(os.path.join(cfg["teacher_dir"], "ckpt.pt"), device)
        mcfg = ModelConfig(**{**init["model_config"], "attn": attn, "block_size": cfg["block_size"]})
    elif cfg["init_from"] == "scratch":
        mcfg = ModelConfig(vocab_size=meta["vocab_size"], seq_len=P + gen_len, prompt_len=P,
                           block_size=1 if cfg["mode"] == "ar" else cfg["block_size"],
                           n_layer=cfg["n_layer"], n_head=cfg["n_head"], n_embd=cfg["n_embd"],
                           dropout=cfg["dropout"], attn=attn)
    else:
        raise SystemExit(f"config error: init_from must be 'scratch', 'resume' or 'teacher', got {cfg['init_from']!r}")
    if (mcfg.vocab_size, mcfg.seq_len, mcfg.prompt_len) != (meta["vocab_size"], P + gen_len, P):
        raise SystemExit(f"config error: the checkpoint's vocab/seq_len/prompt_len do not match {cfg['data_dir']}")
    model = Transformer(mcfg).to(device)
    if init is not None:
        model.load_state_dict(init["model"])
    if cfg["mode"] == "cdlm":
        from collect import load_trajectories
        traj, _ = load_trajectories(cfg["traj_dir"], gen_len, cfg["block_size"], meta["vocab_size"])
        teacher = init if cfg["init_from"] == "teacher" else \
            read_checkpoint(os.path.join(cfg["teacher_dir"], "ckpt.pt"), device)
        teacher_head = teacher["model"]["lm_head.weight"].float()  # (V, C), frozen
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["learning_rate"], betas=(cfg["beta1"], cfg["beta2"]),
                                  weight_decay=cfg["weight_decay"], fused=device.startswith("cuda"))
    # float16 needs loss scaling to keep small gradients from flushing to zero; bf16 does not
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=dtype == "float16")
    if cfg["init_from"] == "resume":
        optimizer.load_state_dict(init["optimizer"])
        if init.get("scaler"):
            scaler.load_state_dict(init["scaler"])
    raw_model = model
    if cfg["compile"]:
        model = torch.compile(model)
    if ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(model, device_ids=[int(os.environ["LOCAL_RANK"])] if device.startswith("cuda") else None)

    rng = np.random.default_rng(cfg["seed"] + rank)

    def get_batch(split):
        idx = np.sort(rng.integers(0, len(data[split]), cfg["batch_size"]))
        return torch.as_tensor(data[split][idx].astype(np.int64), device=device)  # (B, T)

    def compute_loss(x):
        """Loss on a (B, T) batch of the data; for 'cdlm' the auxiliary DLM loss alone."""
        if cfg["mode"] == "ar":
            with ctx:
                return ar_loss(model(x), x, P, meta["eos_id"])
        xt, masked, t = noise_answers(x, P, meta["mask_id"], cfg["eps"])
        with ctx:
            return diffusion_loss(model(xt), x, masked, t, gen_len)

    def cdlm_losses():
        """The three CDLM losses on a batch of trajectory states (Sec. 4.2)."""
        idx = np.sort(rng.integers(0, len(traj["tokens"]), cfg["batch_size"]))
        get = lambda k: torch.as_tensor(traj[k][idx].astype(np.int64 if k != "hidden" else np.float32), device=device)
        prompt, tokens, step, truth = get("prompt"), get("tokens"), get("step"), get("truth")
        bs, blk = len(idx), cfg["block_size"]
        block = torch.randint(0, gen_len // blk, (bs,), device=device)
        k = torch.randint(0, blk, (bs,), device=device)  # tokens of the block visible in y: 0..blk-1
        k_star = k + 1 + (torch.rand(bs, device=device) * (blk - k)).long()  # in y*: k+1..blk
        vis, vis_star, in_block = trajectory_states(step, block, k, k_star, blk)
        y = torch.cat([prompt, torch.where(vis, tokens, meta["mask_id"])], 1)  # (bs, T)
        y_star = torch.cat([prompt, torch.where(vis_star, tokens, meta["mask_id"])], 1)
        x0 = torch.cat([prompt, truth], 1)
        xt, masked, t = noise_answers(x0, P, meta["mask_id"], cfg["eps"])
        with ctx:
            logits = model(torch.cat([y, xt]))  # one pass for y and the DLM batch (bs*2, T, V)
            with torch.no_grad():
                target = raw_model(y_star)[:, P:]  # stop-gradient target at y*
        logits_y = logits[:bs, P:]
        teacher_logits = get("hidden") @ teacher_head.T  # (bs, L, V)
        parts = dict(distill=distillation_loss(logits_y, teacher_logits, vis_star & ~vis),
                     consist=consistency_loss(logits_y, target, in_block & ~vis_star),
                     dlm=diffusion_loss(logits[bs:], x0, masked, t, gen_len))
        loss = cfg["w_distill"] * parts["distill"] + cfg["w_consist"] * parts["consist"] + cfg["w_dlm"] * parts["dlm"]
        return loss, parts

    @torch.no_grad()
    def estimate_val():
        model.eval()
        losses = [compute_loss(get_batch("val")).item() for _ in range(cfg["eval_iters"])]
        model.train()
        return sum(losses) / len(losses)

    def checkpoint():
        save_checkpoint(dict(model_config=asdict(mcfg), model=raw_model.state_dict(),
                             optimizer=optimizer.state_dict(), scaler=scaler.state_dict(), iter_num=iter_num,
                             best_val_loss=best_val,
                             config=cfg, data_meta=meta, sampling=sampling_defaults(cfg)), ckpt_path)

    from tqdm import tqdm
    if master:
        print(f"{cfg['mode']}: {raw_model.num_params() / 1e6:.2f}M parameters, attn={mcfg.attn}, "
              f"seq_len={mcfg.seq_len}, device={device}, world={world}")
    bar = tqdm(total=cfg["max_iters"], initial=iter_num, disable=not master, file=sys.stderr, mininterval=0.5)
    tokens_per_iter = cfg["batch_size"] * mcfg.seq_len * world
    t0 = time.time()
    while iter_num < cfg["max_iters"]:
        lr = get_lr(iter_num, cfg)
        for g in optimizer.param_groups:
            g["lr"] = lr
        if cfg["mode"] == "cdlm":
            loss, parts = cdlm_losses()
        else:
            loss, parts = compute_loss(get_batch("train")), {}
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg["grad_clip"] > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        scaler.step(optimizer)
        scaler.update()
        iter_num += 1
        dt, t0 = time.time() - t0, time.time()
        bar.set_postfix(loss=f"{loss.item():.4f}", **{k: f"{v.item():.3f}" for k, v in parts.items()},
                        tok_s=f"{tokens_per_iter / dt:,.0f}", lr=f"{lr:.1e}")
        bar.update(1)
        if iter_num % cfg["eval_interval"] == 0 or iter_num == cfg["max_iters"]:
            val = estimate_val()
            if master:
                best_val = min(best_val, val)
                bar.write(f"iter {iter_num}: train loss {loss.item():.4f} "
                          + " ".join(f"{k} {v.item():.4f}" for k, v in parts.items())
                          + f", val {'dlm ' if cfg['mode'] == 'cdlm' else ''}loss {val:.4f}")
                checkpoint()
    bar.close()
    end_runtime(ddp, owns_group)  # no rank returns before rank 0's checkpoint is on disk
    return raw_model


if __name__ == "__main__":
    train(configure(config, sys.argv[1:]))
