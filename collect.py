"""
Trajectory collection (CDLM Sec. 4.1): run the bidirectional teacher block by block with
N = gen_len steps, one token finalized per step (the lowest-confidence ones stay masked), and keep
for each training prompt what the student is trained on:

    prompt.bin  (n, prompt_len)       uint8/16  the padded prompt
    tokens.bin  (n, gen_len)          uint8/16  the teacher's finalized answer
    step.bin    (n, gen_len)          int16     the step at which each answer position was finalized
    hidden.bin  (n, gen_len, n_embd)  float16   last hidden state of each position at that step
    truth.bin   (n, gen_len)          uint8/16  the ground-truth answer
    meta.json                                   settings, counts, the teacher's accuracy

    python collect.py config/collect.py

The hidden state is the LM head's input, so softmax(lm_head(h)) rebuilds the teacher's full
distribution at the moment of finalization from one vector per token (the compact buffer).
Work is done in chunks; an interrupted run resumes where it stopped, and the final files appear
only when complete (written as *.partial, then renamed).

Several processes: torchrun --standalone --nproc_per_node=2 collect.py config/collect.py
Each rank decodes its own shard of every batch of prompts; the shards are gathered to rank 0,
which alone writes the one trajectory set.
"""
import json
import os
import sys
import time

import numpy as np
import torch

from configurator import configure
from data.common import atomic_write_json, exact_match, get_tokenizer, load_split
from model import load_model
from sample import generate

config = dict(
    teacher_dir="out/teacher",
    out_dir="out/trajectories",
    n_examples=4096,      # training prompts to run the teacher on
    batch_size=128,
    chunk=1024,           # examples per resumable chunk
    temperature=0.0,      # 0: greedy; the paper also collects at 0.5 as augmentation
    hidden_dtype="float16",
    seed=1337,
    device="auto",
    dtype="auto",         # 'float32' | 'bfloat16' | 'float16' | 'auto' (bf16 autocast on CUDA)
)

FIELDS = ("prompt", "tokens", "step", "hidden", "truth")


def field_specs(meta_data, n, n_embd, hidden_dtype):
    """name -> (shape, dtype) of every stored array."""
    tok_dtype = meta_data["dtype"]
    P, L = meta_data["prompt_len"], meta_data["gen_len"]
    return {"prompt": ((n, P), tok_dtype), "tokens": ((n, L), tok_dtype), "step": ((n, L), "int16"),
            "hidden": ((n, L, n_embd), hidden_dtype), "truth": ((n, L), tok_dtype)}


def load_trajectories(traj_dir, gen_len=None, block_size=None, vocab_size=None):
    """The stored arrays as read-only memmaps, and meta; refuses a set that does not match."""
    path = os.path.join(traj_dir, "meta.json")
    if not os.path.isfile(path):
        raise SystemExit(f"error: no trajectories at {traj_dir} (run `python collect.py` first)")
    try:
        with open(path) as f:
            meta = json.load(f)
        specs = {k: (tuple(s), d) for k, (s, d) in meta["fields"].items()}
    except (ValueError, KeyError) as e:
        raise SystemExit(f"error: {path} is corrupt ({type(e).__name__}: {e})")
    for key, want in (("gen_len", gen_len), ("block_size", block_size), ("vocab_size", vocab_size)):
        if want is not None and meta.get(key) != want:
            raise SystemExit(f"error: trajectories in {traj_dir} have {key}={meta.get(key)}, "
                             f"but this run needs {key}={want}: collect them again")
    arrays = {}
    for name in FIELDS:
        shape, dtype = specs[name]
        f = os.path.join(traj_dir, f"{name}.bin")
        expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if not os.path.isfile(f) or os.path.getsize(f) != expected:
            raise SystemExit(f"error: {f} is missing or truncated (expected {expected} bytes): collect again")
        arrays[name] = np.memmap(f, dtype=dtype, mode="r", shape=shape)
    return arrays, meta


def gather_rows(t, world):
    """Concatenate a same-shaped tensor from every rank along dim 0, in rank order."""
    if world == 1:
        return t
    import torch.distributed as dist
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def broadcast(obj, ddp):
    """Rank 0's value of a small Python object, on every rank."""
    if not ddp:
        return obj
    import torch.distributed as dist
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def collect(cfg):
    from train import end_runtime, setup_runtime
    ddp, rank, world, device, dtype, ctx, owns_group = setup_runtime(cfg)
    _collect(cfg, ddp, rank, world, device, dtype, ctx)
    end_runtime(ddp, owns_group)  # no rank returns before rank 0 has written the trajectory set


def _collect(cfg, ddp, rank, world, device, dtype, ctx):
    master = rank == 0
    teacher_path = os.path.join(cfg["teacher_dir"], "ckpt.pt")
    model, ckpt = load_model(teacher_path, device)
    if model.cfg.attn != "bidirectional":
        raise SystemExit(f"error: {teacher_path} is a {model.cfg.attn} model; collect from the bidirectional teacher")
    dmeta = ckpt["data_meta"]
    P, L, B = dmeta["prompt_len"], dmeta["gen_len"], model.cfg.block_size
    train = load_split(ckpt["config"]["data_dir"], "train", dmeta)
    n = min(cfg["n_examples"], len(train))
    # everything that decides the content; a finished or partial run with other settings is redone
    settings = dict(teacher=os.path.abspath(teacher_path), teacher_iter=ckpt["iter_num"], gen_len=L,
                    block_size=B, steps=L, n_examples=n, temperature=cfg["temperature"],
                    hidden_dtype=cfg["hidden_dtype"], seed=cfg["seed"], dtype=dtype,
                    world=world if cfg["temperature"] > 0 else None)  # sampled noise is drawn per rank
    meta_path = os.path.join(cfg["out_dir"], "meta.json")
    progress_path = os.path.join(cfg["out_dir"], "progress.json")
    done, correct = 0, 0  # rank 0 reads the state on disk; the other ranks are told
    if master:
        os.makedirs(cfg["out_dir"], exist_ok=True)
        if os.path.isfile(meta_path):
            with open(meta_path) as f:
                if json.load(f).get("settings") == settings:
                    done = -1
        if done == 0 and os.path.isfile(progress_path):
            with open(progress_path) as f:
                prog = json.load(f)
            if prog["settings"] == settings:
                done, correct = prog["done"], prog["correct"]
    done = broadcast(done, ddp)
    if done == -1:
        if master:
            print(f"{cfg['out_dir']} already holds these {n} trajectories; nothing to do")
        return
    specs = field_specs(dmeta, n, model.cfg.n_embd, cfg["hidden_dtype"])
    arrays = {k: np.memmap(os.path.join(cfg["out_dir"], f"{k}.bin.partial"), dtype=d, shape=s,
                           mode="r+" if done else "w+") for k, (s, d) in specs.items()} if master else {}
    tok = get_tokenizer(dmeta)
    gen = torch.Generator(device=device)
    from tqdm import tqdm
    bar = tqdm(total=n, initial=done, desc="collect", unit="ex", file=sys.stderr, disable=not master)
    t0, start, bs = time.time(), done, cfg["batch_size"]
    while done < n:
        stop = min(done + cfg["chunk"], n)
        gen.manual_seed(cfg["seed"] + done + rank)  # a resumed chunk draws the same noise
        for i in range(done, stop, bs * world):
            # this rank's shard of the batch, padded to bs rows with row i (dropped after the gather)
            lo, hi = min(i + rank * bs, stop), min(i + (rank + 1) * bs, stop)
            shard = np.concatenate([train[lo:hi], np.repeat(train[i:i + 1], bs - (hi - lo), 0)])
            rows = torch.as_tensor(shard.astype(np.int64), device=device)  # (bs, T)
            with ctx:
                out, _, step, hidden = generate(model, rows[:, :P], L, B, dmeta["mask_id"], dmeta["eos_id"],
                                                steps_per_block=B, temperature=cfg["temperature"],
                                                generator=gen, record=True)
            # (world*bs, T), (world*bs, L), (world*bs, L), (world*bs, L, C): every rank's shard
            got = [gather_rows(t, world) for t in (rows, out, step, hidden.to(getattr(torch, cfg["hidden_dtype"])))]
            n_real = min(stop, i + bs * world) - i
            if master:  # shards arrive in rank order: the first n_real rows are rows i..i+n_real
                rows, out, step, hidden = (t[:n_real].cpu().numpy() for t in got)
                j = slice(i, i + n_real)
                arrays["prompt"][j], arrays["tokens"][j], arrays["truth"][j] = rows[:, :P], out, rows[:, P:]
                arrays["step"][j], arrays["hidden"][j] = step, hidden
                correct += sum(exact_match([tok.decode(r) for r in out.tolist()],
                                           [tok.decode(r) for r in rows[:, P:].tolist()], dmeta["answer_marker"]))
            bar.update(n_real)
            bar.set_postfix(teacher_acc=f"{correct / max(bar.n, 1):.3f}")
        done = stop
        if master:
            for a in arrays.values():
                a.flush()
            atomic_write_json(progress_path, dict(settings=settings, done=done, correct=correct))
    bar.close()
    elapsed = time.time() - t0
    if not master:
        return
    del arrays
    for k in FIELDS:
        os.replace(os.path.join(cfg["out_dir"], f"{k}.bin.partial"), os.path.join(cfg["out_dir"], f"{k}.bin"))
    bytes_per_example = sum(int(np.prod(s[1:])) * np.dtype(d).itemsize for s, d in specs.values())
    meta = dict(settings=settings, n=n, gen_len=L, block_size=B, prompt_len=P, vocab_size=dmeta["vocab_size"],
                n_embd=model.cfg.n_embd, fields={k: [list(s), d] for k, (s, d) in specs.items()},
                teacher_accuracy=correct / n, bytes_per_example=bytes_per_example,
                data_dir=ckpt["config"]["data_dir"])
    atomic_write_json(meta_path, meta)
    os.remove(progress_path)
    print(f"collected {n} trajectories ({n - start} in this run, {(n - start) / max(elapsed, 1e-9):.1f} examples/s), "
          f"{bytes_per_example} bytes per example, teacher exact match {correct / n:.2%}")


if __name__ == "__main__":
    collect(configure(config, sys.argv[1:]))
