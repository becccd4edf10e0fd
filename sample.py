"""
Block-wise decoding for every model in this repo: one loop whose parts are switched by arguments.

    python sample.py --out_dir=out/teacher --prompt="a7b3c9d2e5="          # one answer
    python sample.py --out_dir=out/teacher --prompt="a7b3c9d2e5=" --show   # watch masks fill in
    python sample.py --out_dir=out/student --eval --num_eval=500            # exact match + NFE

The answer is split into blocks of block_size, decoded left to right (semi-autoregressive, as in
LLaDA). Inside a block, every step predicts all masked positions at once and finalizes some:
  - a fixed count per step, the most confident first: low-confidence remasking (LLaDA, Alg. 5);
  - or every masked token whose confidence is at least `threshold`, and always at least one
    (Fast-dLLM's parallel decoding, used for CDLM inference in Sec. 4.3).
With `use_cache` (block_causal or causal models only), the prompt and finished blocks are served
from the KV cache and a step recomputes only the current block. With `early_stop`, a row whose
finished text contains EOS stops; the rest of its answer is EOS.
"""
import json
import os
import sys
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from configurator import configure
from data.common import encode_prompt, exact_match, get_tokenizer, load_split
from model import load_model

config = dict(
    out_dir="out/teacher",    # the checkpoint to sample: {out_dir}/ckpt.pt
    prompt="",                # decode this prompt and print the answer
    show=False,               # print the answer after every step
    eval=False,               # score on a data split instead
    split="test",
    num_eval=500,
    batch_size=64,
    # decoding; None takes the checkpoint's own defaults (stored by train.py)
    steps_per_block=None,     # fixed count: block_size / steps_per_block tokens per step
    threshold=None,           # confidence threshold (used when steps_per_block is None)
    use_cache=None,
    early_stop=None,
    temperature=0.0,          # 0 is greedy; >0 samples with Gumbel noise in float64
    seed=1337,
    device="auto",
    dtype="auto",             # 'float32' | 'bfloat16' | 'float16' | 'auto' (bf16 autocast on CUDA)
)


def tokens_per_step(block_size, steps_per_block):
    """How many tokens each of the steps_per_block steps of a block finalizes (sums to block_size)."""
    if not 1 <= steps_per_block <= block_size:
        raise ValueError(f"steps_per_block must be in 1..{block_size}, got {steps_per_block}")
    base, extra = divmod(block_size, steps_per_block)
    return [base + (i < extra) for i in range(steps_per_block)]


def predict(logits, temperature=0.0, generator=None):
    """Proposed token and its confidence (probability under the model) at every position."""
    logits = logits.double()  # Gumbel-max in float64: low precision noise hurts quality (LLaDA)
    if temperature > 0:
        u = torch.rand(logits.shape, dtype=torch.float64, device=logits.device, generator=generator)
        pred = (logits / temperature - torch.log(-torch.log(u.clamp_min(1e-300)))).argmax(-1)
    else:
        pred = logits.argmax(-1)  # (B, L)
    conf = F.softmax(logits, dim=-1).gather(-1, pred[..., None])[..., 0]  # (B, L)
    return pred, conf


def select_tokens(conf, k=None, threshold=None):
    """
    Which positions to finalize this step. conf: (B, L) confidence of the still-masked positions
    of the current block, -inf where nothing may be finalized. Either the k most confident, or all
    at or above threshold; a row with any candidate always finalizes at least its most confident.
    """
    eligible = conf > float("-inf")  # (B, L)
    if threshold is not None:
        pick = conf >= threshold
    else:
        rank = conf.argsort(dim=1, descending=True, stable=True).argsort(dim=1)  # 0 = most confident
        pick = rank < k
    best = F.one_hot(conf.argmax(dim=1), conf.size(1)).bool()  # (B, L)
    return eligible & (pick | best)


@torch.no_grad()
def generate(model, prompt, gen_len, block_size, mask_id, eos_id, steps_per_block=None,
             threshold=None, use_cache=False, early_stop=False, temperature=0.0, generator=None,
             record=False, on_step=None):
    """
    Decode answers for a batch of padded prompts (B, prompt_len).
    Returns (tokens (B, gen_len), nfe (B,)): nfe counts the forward passes each row took part in.
    With record=True also returns, per answer position, the step at which it was finalized and
    the last hidden state at that step (the trajectory collect.py stores, CDLM Sec. 4.1).
    """
    if gen_len % block_size:
        raise ValueError(f"gen_len={gen_len} must be a multiple of block_size={block_size}")
    if (steps_per_block is None) == (threshold is None):
        raise ValueError("give exactly one of steps_per_block and threshold")
    if use_cache and model.cfg.attn == "bidirectional":
        raise ValueError("a bidirectional model cannot use an exact KV cache")
    if model.cfg.attn != "bidirectional" and model.cfg.block_size != block_size:
        raise ValueError(f"model's mask uses block_size={model.cfg.block_size}, decoding asks {block_size}")
    B, P = prompt.shape
    # a causal model predicts position p from the logits at p-1 (AR decoding is this loop with
    # block_size 1 and that one-position shift)
    shift = 1 if model.cfg.attn == "causal" else 0
    counts = tokens_per_step(block_size, steps_per_block) if steps_per_block else None
    x = torch.cat([prompt, prompt.new_full((B, gen_len), mask_id)], dim=1)  # (B, P+gen_len)
    nfe = torch.zeros(B, dtype=torch.long, device=x.device)
    done = torch.zeros(B, dtype=torch.bool, device=x.device)
    if record:
        step_of = torch.full((B, gen_len), -1, dtype=torch.long, device=x.device)
        hidden = torch.zeros(B, gen_len, model.cfg.n_embd, device=x.device)
    if use_cache:
        model.setup_cache(B)
    cached_to, step = 0, 0  # the cache holds exact keys/values for positions < cached_to
    for blk in range(gen_len // block_size):
        s, e = P + blk * block_size, P + (blk + 1) * block_size
        for i in range(block_size):
            masked = x[:, s:e] == mask_id  # (B, block_size)
            active = masked.any(1) & ~done  # (B,)
            if not active.any():
                break
            # the first cached step of a block also writes the finished tokens before it (the
            # prompt, or the previous block) into the cache: no separate prefill or commit pass
            lo = cached_to if use_cache else 0
            logits, h = model(x[:, lo:e] if use_cache else x, start=lo if use_cache else None, return_hidden=True)
            logits = logits[:, s - shift - lo:e - shift - lo]  # (B, block_size, V)
            h = h[:, s - shift - lo:e - shift - lo]  # (B, block_size, C)
            cached_to = s if use_cache else 0
            logits[..., mask_id] = float("-inf")  # never propose MASK itself
            pred, conf = predict(logits, temperature, generator)  # (B, block_size)
            conf = conf.masked_fill(~(masked & active[:, None]), float("-inf"))
            pick = select_tokens(conf, k=counts[i] if counts else None, threshold=threshold)
            x[:, s:e] = torch.where(pick, pred, x[:, s:e])
            nfe += active
            if record:
                step_of[:, s - P:e - P][pick] = step
                hidden[:, s - P:e - P][pick] = h[pick].float()
            step += 1
            if on_step is not None:
                on_step(x[:, P:])
        if early_stop:
            # a row is finished once EOS is final and everything before it is final: here all of
            # x[:, P:e] is final, so any EOS in it ends the row
            done |= (x[:, P:e] == eos_id).any(1)
            x[:, e:] = torch.where(done[:, None], torch.full_like(x[:, e:], eos_id), x[:, e:])
            if done.all():
                break
    if use_cache:
        model.clear_cache()
    if record:
        return x[:, P:], nfe, step_of, hidden
    return x[:, P:], nfe


def decode_settings(ckpt, overrides):
    """The checkpoint's stored decoding defaults, updated by non-None overrides."""
    s = dict(steps_per_block=None, threshold=None, use_cache=False, early_stop=False)
    s.update(ckpt.get("sampling") or {})
    s.update({k: v for k, v in overrides.items() if v is not None})
    if overrides.get("steps_per_block") is not None:
        s["threshold"] = None
    elif overrides.get("threshold") is not None:
        s["steps_per_block"] = None
    if s["steps_per_block"] is None and s["threshold"] is None:
        s["steps_per_block"] = ckpt["model_config"]["block_size"]  # one token per step
    return s


def evaluate(model, meta, rows, settings, batch_size=64, temperature=0.0, seed=1337, progress=None):
    """Decode the prompts of rows (n, seq_len); returns (accuracy, mean nfe, predicted answers)."""
    tok, P, gen_len = get_tokenizer(meta), meta["prompt_len"], meta["gen_len"]
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    preds, nfes, correct = [], [], []
    for i in range(0, len(rows), batch_size):
        batch = torch.as_tensor(rows[i:i + batch_size].astype("int64"), device=device)
        out, nfe = generate(model, batch[:, :P], gen_len, model.cfg.block_size, meta["mask_id"],
                            meta["eos_id"], temperature=temperature, generator=gen, **settings)
        texts = [tok.decode(r) for r in out.tolist()]
        truth = [tok.decode(r) for r in batch[:, P:].tolist()]
        correct += exact_match(texts, truth, meta["answer_marker"])
        preds += texts
        nfes += nfe.tolist()
        if progress is not None:
            progress.update(len(batch))
    return sum(correct) / len(correct), sum(nfes) / len(nfes), preds


def pick_device(device):
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


DTYPES = ("float32", "bfloat16", "float16")


def pick_dtype(dtype, device):
    """'auto' is bfloat16 on a CUDA GPU that supports it (Ampere and later), else float32."""
    if dtype == "auto":
        cuda_bf16 = str(device).startswith("cuda") and torch.cuda.is_bf16_supported(including_emulation=False)
        return "bfloat16" if cuda_bf16 else "float32"
    if dtype not in DTYPES:
        raise SystemExit(f"config error: dtype must be 'auto' or one of {DTYPES}, got {dtype!r}")
    return dtype


def autocast(device, dtype):
    """Mixed precision for forward passes (weights stay float32); a no-op context in float32."""
    if dtype == "float32":
        return nullcontext()
    return torch.autocast(device_type=str(device).split(":")[0], dtype=getattr(torch, dtype))


def main(argv):
    cfg = configure(config, argv)
    device = pick_device(cfg["device"])
    ctx = autocast(device, pick_dtype(cfg["dtype"], device))
    torch.manual_seed(cfg["seed"])
    model, ckpt = load_model(os.path.join(cfg["out_dir"], "ckpt.pt"), device)
    meta = ckpt["data_meta"]
    tok = get_tokenizer(meta)
    settings = decode_settings(ckpt, {k: cfg[k] for k in ("steps_per_block", "threshold", "use_cache", "early_stop")})
    if cfg["eval"]:
        from tqdm import tqdm
        data_dir = ckpt["config"]["data_dir"]
        rows = load_split(data_dir, cfg["split"], meta)[:cfg["num_eval"]]
        t0 = time.time()
        with tqdm(total=len(rows), desc=f"eval {cfg['split']}", file=sys.stderr) as bar, ctx:
            acc, nfe, _ = evaluate(model, meta, rows, settings, cfg["batch_size"], cfg["temperature"],
                                   cfg["seed"], bar)
        print(f"{cfg['out_dir']} ({model.cfg.attn}) on {len(rows)} {cfg['split']} problems with {settings}: "
              f"exact match {acc:.2%}, mean NFE {nfe:.1f}, {time.time() - t0:.1f}s")
        print(json.dumps({"accuracy": acc, "n": len(rows), "nfe": nfe}))
        return
    if not cfg["prompt"]:
        raise SystemExit("error: give --prompt=... or --eval")
    try:
        ids = encode_prompt(tok, cfg["prompt"], meta["prompt_len"])
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    # --show: one line per step, '_' for a masked position, '.' for EOS
    render = lambda ids: "".join("_" if i == tok.mask_id else "." if i == tok.eos_id else tok.decode([i]) for i in ids)
    show = (lambda ans: print(render(ans[0].tolist()))) if cfg["show"] else None
    gen = torch.Generator(device=device).manual_seed(cfg["seed"])
    with ctx:
        out, nfe = generate(model, torch.tensor([ids], device=device), meta["gen_len"], model.cfg.block_size,
                            meta["mask_id"], meta["eos_id"], temperature=cfg["temperature"], generator=gen,
                            on_step=show, **settings)
    print(f"{cfg['prompt']}{tok.decode(out[0].tolist())}    ({nfe.item()} forward passes)")


if __name__ == "__main__":
    main(sys.argv[1:])
