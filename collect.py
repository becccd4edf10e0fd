"""
Trajectory collection (CDLM Sec. 4.1): run the bidirectional teacher block by block with
N = gen_len steps, one token finalized per step (the lowest-confidence proposals stay masked), and
keep for each training prompt what the student is trained on: the prompt, the teacher's answer,
the step at which each answer token was finalized, the last hidden state of each token at that step
and the ground truth (the format and its crash-safe commit: data/trajectories.py).

    python collect.py config/collect.py
    python collect.py config/collect.py --temperature=0.5 --out_dir=out/trajectories_t05

The hidden state is the LM head's input, so softmax(lm_head(h)) rebuilds the teacher's full
distribution at the moment of finalization from one vector per token. That is a compact buffer
only when the vocabulary is much larger than the width (the paper's models: 126k or 152k tokens
against 4096 or 3584 dims); here (vocab 21 or 236, width 128) a float16 hidden state is larger
than the logits it rebuilds, and is kept for the method's sake.
Work is done in chunks; an interrupted run resumes where it stopped.

Several processes: torchrun --standalone --nproc_per_node=2 collect.py config/collect.py
Each rank decodes its own shard of every batch of prompts; the shards are gathered to rank 0,
which alone writes the one trajectory set.
"""
import os
import sys
import time

import numpy as np
import torch

from checkpoint import load_model
from configurator import SEED, CDLMError, Choice, Float, Int, Str, check, configure, gave, refuse_unused, run_main
from data.common import check_out_kind, checkpoint_data, data_fingerprint, get_tokenizer, load_split, score
from data.trajectories import Writer, example_bytes, field_specs, reuse, set_name
from files import lock, reading, refuse_overlap
from runtime import THREADS, broadcast, check_memory, cpu_threads, end_runtime, gather_rows, setup_runtime
from sample import TEMPERATURES, DecodeSettings, generate

config = dict(
    teacher_dir=Str("out/teacher"),
    out_dir=Str("out/trajectories"),
    data_dir=Str(None),                 # None: where the teacher's data was prepared
    n_examples=Int(4096, "[1, inf)"),   # training prompts to run the teacher on (the default: at most)
    batch_size=Int(128, "[1, inf)"),
    chunk=Int(1024, "[1, inf)"),        # examples per resumable chunk
    block_size=Int(None, "[1, inf)"),   # None: the teacher's (its weights do not depend on it)
    temperature=Float(0.0, TEMPERATURES),  # 0: greedy; the paper also collects at 0.5 as augmentation
    hidden_dtype=Choice("float16", "float16", "float32"),
    seed=Int(1337, SEED),               # the sampling noise (temperature > 0)
    device=Str("auto"),
    threads=THREADS,                    # CPU threads: part of the set's identity (runtime.cpu_threads)
    dtype=Str("auto"),                  # 'float32' | 'bfloat16' | 'float16' | 'auto' (bf16 autocast on CUDA)
)


def collect(cfg, replace=False):  # replace: a finished set of other settings in out_dir (data.trajectories.reuse)
    cfg = check(config, cfg)
    if cfg["temperature"] == 0:
        refuse_unused(cfg, {"seed": "at temperature 0: greedy decoding draws no noise"})
    rt = setup_runtime(cfg)
    teacher_path = os.path.join(cfg["teacher_dir"], "ckpt.pt")
    model, ckpt = load_model(teacher_path, rt.device, "dlm", "teacher_dir")
    data_dir, dmeta = checkpoint_data(ckpt, cfg["data_dir"], teacher_path)
    inputs = dict(teacher_dir=cfg["teacher_dir"], data_dir=data_dir)  # data_dir: the option's, or the teacher's data
    refuse_overlap(dict(out_dir=cfg["out_dir"]), inputs)
    check_out_kind(cfg["out_dir"], "a trajectory set")  # never beside a dataset or a checkpoint, nor in a set
    with lock(cfg["out_dir"], "option out_dir"), reading(inputs), \
            cpu_threads(cfg["threads"]):  # one writer per trajectory set; nobody rewrites what it reads
        try:
            _collect(cfg, rt, model, ckpt, data_dir, dmeta, replace)
        except OSError as e:  # disk full or another I/O error while writing: the committed set is untouched
            raise CDLMError(f"cannot write trajectories in {cfg['out_dir']}: {e.strerror or e}; the last complete "
                            f"set and the chunks written so far are kept: free space and run again to resume")
    end_runtime(rt)  # no rank returns before rank 0 has written the trajectory set


def _collect(cfg, rt, model, ckpt, data_dir, dmeta, replace):
    P, L = dmeta["prompt_len"], dmeta["gen_len"]
    bs = cfg["block_size"] or model.cfg.block_size
    decode = DecodeSettings(bs, steps_per_block=bs, temperature=cfg["temperature"]).check(model.cfg.attn, L)
    train = load_split(data_dir, "train", dmeta)
    if gave(cfg, "n_examples") and cfg["n_examples"] > len(train):
        raise CDLMError(f"option n_examples={cfg['n_examples']}: the train split of {data_dir} has {len(train)} problems")
    n = min(cfg["n_examples"], len(train))
    check_memory(rt.device, f"option batch_size={cfg['batch_size']} (a batch of the teacher's decoding)", model.cfg,
                 cfg["batch_size"])
    if "batch_size" in getattr(cfg, "typed", ()) and cfg["batch_size"] > n:  # as sample.py's: a size typed fits
        raise CDLMError(f"option batch_size={cfg['batch_size']}: more than the {n} problems collected (n_examples)")
    # everything that decides the content; a finished or partial run with other settings is redone
    settings = dict(teacher_hash=ckpt["weights_hash"], data=data_fingerprint(dmeta), gen_len=L, block_size=bs,
                    steps=L, n_examples=n, temperature=cfg["temperature"], hidden_dtype=cfg["hidden_dtype"],
                    seed=cfg["seed"], dtype=rt.dtype, threads=cfg["threads"] if rt.device == "cpu" else None,
                    world=rt.world if cfg["temperature"] > 0 else None)  # sampled noise is drawn per rank
    set_id = set_name(settings)
    specs = field_specs(dmeta, n, model.cfg.n_embd, cfg["hidden_dtype"])
    meta = dict(settings=settings, n=n, gen_len=L, block_size=bs, prompt_len=P, vocab_size=dmeta["vocab_size"],
                n_embd=model.cfg.n_embd, fields={k: [list(s), d] for k, (s, d) in specs.items()},
                bytes_per_example=example_bytes(specs),
                data_dir=data_dir, teacher_dir=os.path.abspath(cfg["teacher_dir"]))
    state = 0  # rank 0 reads what is on disk; the other ranks are told
    if rt.master:
        state = reuse(cfg["out_dir"], set_id, settings, specs, meta, replace)
    if broadcast(state, rt.ddp) == "done":
        if rt.master:
            print(f"{cfg['out_dir']} already holds these {n} trajectories; nothing to do")
        return
    from tqdm import tqdm  # drawn first: a standard error that cannot take it fails before any file is laid out
    bar = tqdm(total=n, desc="collect", unit="ex", file=sys.stderr, disable=not rt.master)
    writer = Writer(cfg["out_dir"], specs, settings)
    done, correct = broadcast(writer.resume() if rt.master else None, rt.ddp)
    bar.n = bar.initial = done  # a resumed set's rows count as done, not into this run's rate
    bar.refresh()
    tok = get_tokenizer(dmeta)
    gen = torch.Generator(device=rt.device)
    t0, start, B, world = time.time(), done, min(cfg["batch_size"], n), rt.world  # a batch is padded to B rows
    while done < n:
        stop = min(done + cfg["chunk"], n)
        gen.manual_seed(cfg["seed"] + done + rt.rank)  # a resumed chunk draws the same noise
        for i in range(done, stop, B * world):
            # this rank's shard of the batch, padded to B rows with row i (dropped after the gather)
            lo, hi = min(i + rt.rank * B, stop), min(i + (rt.rank + 1) * B, stop)
            shard = np.concatenate([train[lo:hi], np.repeat(train[i:i + 1], B - (hi - lo), 0)])
            rows = torch.as_tensor(shard.astype(np.int64), device=rt.device)  # (B, T)
            rec = Recorder(B, L, model.cfg.n_embd, rt.device)
            with rt.ctx:
                out = generate(model, rows[:, :P], L, dmeta["mask_id"], dmeta["eos_id"], decode, gen, on_step=rec).tokens
            # (world*B, T), (world*B, L), (world*B, L), (world*B, L, C): every rank's shard
            got = [gather_rows(t, world) for t in (rows, out, rec.step, rec.hidden.to(getattr(torch, cfg["hidden_dtype"])))]
            n_real = min(stop, i + B * world) - i
            if rt.master:  # shards arrive in rank order: the first n_real rows are rows i..i+n_real
                rows, out, step, hidden = (t[:n_real].cpu().numpy() for t in got)
                writer.write(range(i, i + n_real), dict(prompt=rows[:, :P], tokens=out, step=step, hidden=hidden,
                                                        truth=rows[:, P:]))
                correct += sum(score([tok.decode(r) for r in out.tolist()], [tok.decode(r) for r in rows[:, P:].tolist()],
                                     dmeta["answer_marker"])["final_acc"])
            bar.update(n_real)
            bar.set_postfix(teacher_acc=f"{correct / max(bar.n, 1):.3f}" if rt.master else "")  # a resume's included
        done = stop
        if rt.master:
            writer.checkpoint(done, correct)
    bar.close()
    elapsed = time.time() - t0
    if rt.master:
        writer.commit(set_id, {**meta, "teacher_final_acc": correct / n})
        print(f"collected {n} trajectories ({n - start} in this run, {(n - start) / max(elapsed, 1e-9):.1f} "
              f"examples/s), {meta['bytes_per_example']} bytes per example, teacher final answer right {correct / n:.2%}")


class Recorder:
    """generate's on_step hook that keeps the trajectory (Sec. 4.1): the step at which each answer
    position was finalized, and its last hidden state at that pass."""

    def __init__(self, B, gen_len, n_embd, device):
        self.step = torch.full((B, gen_len), -1, dtype=torch.long, device=device)  # (B, L)
        self.hidden = torch.zeros(B, gen_len, n_embd, device=device)  # (B, L, C)

    def __call__(self, ev):
        o = ev.out
        r, a = ev.rows, slice(ev.block * o.picked.size(1), (ev.block + 1) * o.picked.size(1))
        self.step[r, a] = torch.where(o.picked, ev.step, self.step[r, a])
        self.hidden[r, a] = torch.where(o.picked[..., None], o.hidden.float(), self.hidden[r, a])


def main(argv):
    collect(configure(config, argv))


if __name__ == "__main__":
    run_main(main)
