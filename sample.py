"""
Block-wise decoding for every model in this repo: one loop whose parts are switched by settings.

    python sample.py --out_dir=out/teacher --prompt="5:+3*7+2*4+1="          # one answer
    python sample.py --out_dir=out/teacher --prompt="5:+3*7+2*4+1=" --show   # watch masks fill in
    python sample.py --out_dir=out/student --eval --num_eval=500              # both scores + NFE

The answer is split into blocks of block_size, decoded left to right (semi-autoregressive, as in
LLaDA). Inside a block, every step predicts all masked positions at once and finalizes some; the
rest stay masked for the next step ("low-confidence remasking", LLaDA Alg. 5: what is remasked is
the model's proposals for the positions it is least sure of). Which ones is the selection rule
(RULES, named by `rule`):
  - 'count': a fixed count per step, the most confident first (LLaDA);
  - 'threshold': every masked token whose confidence is at least `threshold`, and always at least
    one (Fast-dLLM's parallel decoding, used for CDLM inference in Sec. 4.3).
Caches: `exact` for block_causal and causal models (the prompt and finished blocks come from the
cache; a step recomputes only the current block); `prefix` and `dual` are Fast-dLLM's approximate
caches for the bidirectional teacher, refreshed at each block. With `early_stop`, a row whose
finished text contains EOS stops and leaves the batch; the rest of its answer is EOS.
"""
import functools
import json
import os
import sys
import time
import typing
import weakref
from dataclasses import asdict, dataclass, fields
from typing import Callable, NamedTuple, Optional

import numpy as np
import torch

from configurator import (SEED, Bool, CDLMError, Choice, Float, Int, Str, configure, gave, refuse_unused,
                          run_main)
from data.common import chance_levels, checkpoint_data, encode_prompt, get_tokenizer, load_split, score
from model import load_model
from render import STEP_LEGEND, step_line
from runtime import autocast, compile_function, compiled, is_compiled, pick_device, pick_dtype

CACHES = ("none", "exact", "prefix", "dual")
REFRESHES = ("block", "step")
# 0 is greedy; a positive temperature divides float64 logits, which overflow below about 1e-300
# (every logit then reads +-inf and the sample is garbage), so a positive one starts at 1e-3
TEMPERATURES = "0 or [1e-3, inf)"


class Rule(NamedTuple):
    """A selection rule: which still-masked positions of the block a step finalizes."""
    param: str          # the DecodeSettings field that parameterizes it (None under every other rule)
    option: object      # that field's type and range, as sample.py's option --<param>
    amount: Callable    # (settings, i) -> the parameter at step i of a block
    pick: Callable      # (conf (b, bs), amount) -> (b, bs) bool: the positions it would finalize


def top_k(conf, k):
    """The k most confident positions of each row (ties to the lower position)."""
    rank = conf.argsort(dim=1, descending=True, stable=True).argsort(dim=1)  # (b, bs) 0 = most confident
    return rank < k


# The selection rules, by name (DecodeSettings.rule). A new rule is a row here and a field for its
# parameter in DecodeSettings (README, "How to extend").
RULES = {
    # a fixed count per step, the most confident first (LLaDA): block_size / steps_per_block a step
    "count": Rule("steps_per_block", Int(None, "[1, inf)"),
                  lambda st, i: tokens_per_step(st.block_size, st.steps_per_block)[i], top_k),
    # every masked token at least this confident (Fast-dLLM's parallel decoding; CDLM Sec. 4.3)
    "threshold": Rule("threshold", Float(None, "(0, 1]"), lambda st, i: st.threshold,
                      lambda conf, threshold: conf >= threshold),
}


@dataclass
class DecodeSettings:
    """
    How to decode: the settings that travel together. Stored in every checkpoint ('sampling', with
    asdict) as the model's defaults, overridden by sample.py's options, set per method by bench.py.
    """
    block_size: int                          # answer positions decoded together, left to right
    steps_per_block: Optional[int] = None    # rule 'count': block_size / steps_per_block tokens a step
    threshold: Optional[float] = None        # rule 'threshold': every token at least this confident
    cache: str = "none"                      # one of CACHES
    refresh: str = "block"                   # approximate caches: recompute all at each 'block' or 'step'
    early_stop: bool = False                 # a row stops after the block that holds its EOS
    temperature: float = 0.0                 # 0 is greedy; > 0 samples (Gumbel-max in float64)
    rule: Optional[str] = None               # one of RULES; None: the rule whose parameter is given

    def __post_init__(self):
        if self.rule is None:  # what checkpoints made before the field stored, and the short form
            given = [name for name, r in RULES.items() if getattr(self, r.param, None) is not None]
            self.rule = given[0] if len(given) == 1 else None

    def check(self, attn, gen_len):
        """A one-line error, naming the option, for settings this model and layout cannot decode."""
        def bad(key, allowed):
            raise CDLMError(f"option {key}={getattr(self, key)!r}: {allowed}")
        params = [r.param for r in RULES.values()]
        if self.rule is None:
            raise CDLMError(f"give exactly one of {' and '.join(params)} (or name the rule: one of {', '.join(RULES)})")
        options = decode_options()
        for f in fields(self):  # each field's type and range, as sample.py declares them
            if getattr(self, f.name) is None and type(None) not in typing.get_args(f.type):
                bad(f.name, "expected a value, not None")
            options[f.name].check(f.name, getattr(self, f.name))
        own = RULES[self.rule].param
        for p in params:  # the rule's own parameter, and no other rule's
            if (getattr(self, p) is not None) != (p == own):
                bad(p, f"rule={self.rule!r} reads {own}" + (": give it" if p == own else ", not this"))
        if gen_len % self.block_size:
            bad("block_size", f"expected a divisor of gen_len={gen_len}")
        if attn == "causal" and self.block_size != 1:
            bad("block_size", "an autoregressive model decodes one token at a time (block_size=1)")
        if self.steps_per_block is not None and self.steps_per_block > self.block_size:
            bad("steps_per_block", f"expected an int in [1, block_size={self.block_size}]")
        if self.cache == "exact" and attn == "bidirectional":
            bad("cache", "a bidirectional model has no exact cache (use 'prefix' or 'dual', approximate)")
        if self.cache in ("prefix", "dual") and attn != "bidirectional":
            bad("cache", f"a {attn} model's cache is exact: use 'exact'")
        return self


def decode_options():
    """sample.py's options for DecodeSettings, one per field, with the ranges check() enforces;
    None keeps the checkpoint's setting."""
    return dict(block_size=Int(None, "[1, inf)"), **{r.param: r.option for r in RULES.values()},
                cache=Choice(None, *CACHES), refresh=Choice(None, *REFRESHES),
                early_stop=Bool(None), temperature=Float(None, TEMPERATURES), rule=Choice(None, *RULES))


def decode_settings(ckpt, overrides):
    """The checkpoint's stored decoding settings, updated by the non-None overrides; an override that
    would have no effect is refused. Giving a rule's parameter selects that rule."""
    given = {k: v for k, v in overrides.items() if v is not None}
    params = {r.param: name for name, r in RULES.items()}
    chosen = [p for p in params if p in given]
    if len(chosen) > 1:
        raise CDLMError(f"options {' and '.join(f'{p}={given[p]}' for p in chosen)}: give one (the parameter "
                        f"of one selection rule: {', '.join(f'{p} for {n!r}' for p, n in params.items())}), not both")
    stored = DecodeSettings(**ckpt["sampling"])
    s = {**asdict(stored), **given}
    if chosen:
        s["rule"] = given.get("rule", params[chosen[0]])
    if s["rule"] != stored.rule or chosen:  # another rule, or a new parameter: the others' are dropped
        s |= {p: None for p in params if p not in chosen}
    elif stored.rule == "count" and stored.steps_per_block == stored.block_size:  # one token per step stays one
        s["steps_per_block"] = s["block_size"]
    st = DecodeSettings(**s).check(ckpt["model_config"]["attn"], ckpt["data_meta"]["gen_len"])
    if "refresh" in given and st.cache not in ("prefix", "dual"):
        raise CDLMError(f"option refresh={st.refresh!r} has no effect with cache={st.cache!r}: it is for the "
                        f"approximate caches 'prefix' and 'dual'")
    return st


def tokens_per_step(block_size, steps_per_block):
    """How many tokens each of the steps_per_block steps of a block finalizes (sums to block_size)."""
    base, extra = divmod(block_size, steps_per_block)
    return [base + (i < extra) for i in range(steps_per_block)]


def predict(logits, temperature=0.0, generator=None):
    """
    Proposed token and its confidence (probability under the model, float64) at every position.
    Greedy: p_top = 1 / (1 + r) with r = sum over the other tokens of exp(logit - top), each term
    exact to float32's relative precision; the float32 form exp(top - logsumexp) moves in steps of
    about 1e-6 near 1 (the ulp of a logit of ~10), so near-certain positions tie and the tie goes to
    the lowest position instead of the more confident one. The step order collect.py stores as the
    teacher's trajectory depends on that ranking.
    """
    if temperature > 0:
        logits = logits.double()  # Gumbel-max in float64: low precision noise hurts quality (LLaDA)
        u = torch.rand(logits.shape, dtype=torch.float64, device=logits.device, generator=generator)
        pred = (logits / temperature - torch.log(-torch.log(u.clamp_min(1e-300)))).argmax(-1)
        return pred, logits.log_softmax(-1).gather(-1, pred[..., None])[..., 0].exp()
    logits = logits.float()
    top, pred = logits.max(-1)  # (B, L)
    rest = (logits - top[..., None]).exp().scatter(-1, pred[..., None], 0.0).sum(-1)  # (B, L)
    return pred, 1.0 / (1.0 + rest.double())


def select_tokens(conf, rule, amount):
    """
    Which positions to finalize this step. conf: (B, L) confidence of the still-masked positions
    of the current block, -inf where nothing may be finalized; rule: a name in RULES, with its
    amount (the k of 'count', the threshold of 'threshold'). A row with any candidate always
    finalizes at least its most confident one.
    """
    eligible = conf > float("-inf")  # (B, L)
    pick = RULES[rule].pick(conf, amount)  # (B, L)
    best = torch.zeros_like(eligible).scatter_(1, conf.argmax(dim=1, keepdim=True), True)  # (B, L)
    return eligible & (pick | best)


class Decoded(NamedTuple):
    tokens: torch.Tensor                   # (B, gen_len) the answers
    nfe: torch.Tensor                      # (B,) forward passes each row took part in
    step: Optional[torch.Tensor] = None    # (B, gen_len) with record: the step each position was finalized
    hidden: Optional[torch.Tensor] = None  # (B, gen_len, C) with record: its last hidden state then


class Step(NamedTuple):
    """What the hooks (on_step, recording) see after each step, for every row still decoding."""
    tokens: torch.Tensor   # (b, gen_len) their answers so far, MASK where not final
    rows: torch.Tensor     # (b,) their indices in the batch
    block: int             # the block being decoded: answer positions block*bs .. (block+1)*bs
    picked: torch.Tensor   # (b, bs) finalized at this step
    pred: torch.Tensor     # (b, bs) this step's proposals
    conf: torch.Tensor     # (b, bs) their confidence, -inf where the position was already final
    nfe: torch.Tensor      # (b,) forward passes so far
    lo: int                # this pass computed sequence positions lo..hi; the rest came from the
    hi: int                # cache (without a cache: 0..seq_len)
    step: int = 0          # steps taken so far in this decode, this one excluded
    hidden: Optional[torch.Tensor] = None  # (b, bs, C) the block's last hidden states in this pass


# A decoding step in phases, each a small function (gpt-fast's prefill/decode, for a diffusion
# sampler): pass_window (what this pass computes), denoise_step (predict, select, write), finished
# (early stop). decode_step joins the first two, the unit torch.compile fuses; `generate` is the
# loop around them, with recording and tracing as hooks outside it.

def pass_window(cache, refresh, i, s, e, T, cached_to):
    """
    Phase 1, what this pass computes: sequence positions lo..hi; the rest comes from the cache.
    An exact cache computes what it lacks (a block's first step also writes the block before it,
    now final: no separate prefill or commit pass); the approximate caches everything at a refresh,
    then the block and the suffix ('prefix') or the block alone ('dual'); no cache, everything.
    The window's length depends only on the kind of step, never on the block: static shapes.
    """
    if cache == "exact":
        return cached_to, e
    if cache == "none" or i == 0 or refresh == "step":
        return 0, T
    return s, e if cache == "dual" else T


def denoise_step(logits, block, masked, mask_id, rule, amount, temperature, generator=None):
    """
    Phase 2, one denoising step of the current block: predict every position (never MASK itself),
    select which masked ones to finalize (select_tokens), write them. logits (b, bs, V), block
    (b, bs) its tokens, masked (b, bs). Returns the new block, picked, proposals, confidences.
    A row with nothing masked finalizes nothing: its block comes back as it was.
    """
    logits[..., mask_id] = float("-inf")
    pred, conf = predict(logits, temperature, generator)  # (b, bs)
    conf = conf.masked_fill(~masked, float("-inf"))
    pick = select_tokens(conf, rule, amount)
    return torch.where(pick, pred, block), pick, pred, conf


class StepOut(NamedTuple):
    block: torch.Tensor    # (b, bs) the block after this step
    picked: torch.Tensor   # (b, bs) finalized at this step
    pred: torch.Tensor     # (b, bs) this step's proposals
    conf: torch.Tensor     # (b, bs) their confidence, -inf where the position was already final
    hidden: torch.Tensor   # (b, bs, C) the block's last hidden states in this pass
    ran: torch.Tensor      # (b,) the rows that had masked positions (each finalized at least one)
    more: torch.Tensor     # () whether any position of the block is still masked


def decode_step(model, window, start, off, block, mask_id, rule, amount, temperature, generator=None):
    """
    Phases 1 and 2 as one function: the forward over window (b, hi-lo), the tokens at positions
    start.. (a 0-d tensor; None without a cache), then one denoising step of block (b, bs), whose
    logits sit at offset `off` of the window. Under torch.compile this is one graph per kind of step
    (a block's first step, a later one) and batch size: nothing in it depends on the position, it
    mutates none of its inputs (the block is a view of the sampler's state, at another offset each
    block; CUDA graphs skip a graph that writes its inputs), and it computes the bookkeeping the
    loop needs (ran, more). Returns a StepOut.
    """
    bs = block.size(1)
    logits, h = model(window, start=start, return_hidden=True)  # (b, hi-lo, V), (b, hi-lo, C)
    masked = block == mask_id  # (b, bs)
    new, pick, pred, conf = denoise_step(logits[:, off:off + bs], block, masked, mask_id, rule, amount,
                                         temperature, generator)
    return StepOut(new, pick, pred, conf, h[:, off:off + bs], masked.any(1), (new == mask_id).any())


_compiled_steps = weakref.WeakKeyDictionary()  # compiled model -> its compiled decode_step


def step_function(model):
    """decode_step for this model; when the model is compiled (runtime.compiled), decode_step itself
    is compiled around the plain model, so a step's forward and its twenty-odd small operations
    around it become one graph."""
    if not is_compiled(model):
        return functools.partial(decode_step, model)
    if model not in _compiled_steps:
        plain = model._orig_mod
        _compiled_steps[model] = compile_function(functools.partial(decode_step, plain), plain)
    return _compiled_steps[model]


def finished(answer_so_far, eos_id):
    """
    Phase 3, early stop: the rows whose answer is over, given x[:, P:e] (b, e-P) with everything
    final up to the block's end e: an EOS anywhere there is final with everything before it.
    """
    return (answer_so_far == eos_id).any(1)  # (b,)


class Recorder:
    """A hook that keeps the trajectory collect.py stores (CDLM Sec. 4.1): the step at which each
    answer position was finalized, and its last hidden state at that pass."""

    def __init__(self, B, gen_len, n_embd, bs, device):
        self.step = torch.full((B, gen_len), -1, dtype=torch.long, device=device)
        self.hidden = torch.zeros(B, gen_len, n_embd, device=device)
        self.bs = bs

    def __call__(self, ev):
        r, a = ev.rows, slice(ev.block * self.bs, (ev.block + 1) * self.bs)
        self.step[r, a] = torch.where(ev.picked, ev.step, self.step[r, a])
        self.hidden[r, a] = torch.where(ev.picked[..., None], ev.hidden.float(), self.hidden[r, a])


@torch.no_grad()
def generate(model, prompt, gen_len, mask_id, eos_id, settings, generator=None, init=None, record=False,
             on_step=None, step=None):
    """
    Decode answers for a batch of padded prompts (B, prompt_len) with DecodeSettings `settings`.
    `init` (B, gen_len) starts from a partial answer (MASK where to decode; infilling), else all MASK.
    With record=True also the step at which each answer position was finalized and the last hidden
    state then: the trajectory collect.py stores (CDLM Sec. 4.1). `model` may be compiled
    (runtime.compiled); `step` replaces step_function(model) (a profiler times it).
    Every row of the batch runs every step of a block, so a step's shapes depend only on its kind;
    a row whose block is final finalizes nothing and is not counted in its NFE. Rows whose answer
    is over (early_stop) leave the batch between blocks.
    """
    st = settings.check(model.cfg.attn, gen_len)
    if model.cfg.attn == "block_causal" and model.cfg.block_size != st.block_size:
        raise CDLMError(f"option block_size={st.block_size}: the model's mask has blocks of "
                        f"{model.cfg.block_size} (rebuild it with model.set_mask(block_size=...))")
    B, P = prompt.shape
    T, bs = P + gen_len, st.block_size
    # a causal model predicts position p from the logits at p-1 (AR decoding is this loop with
    # block_size 1 and that one-position shift)
    shift = 1 if model.cfg.attn == "causal" else 0
    answer = prompt.new_full((B, gen_len), mask_id) if init is None else init.clone()
    x = torch.cat([prompt, answer], dim=1)  # (b, T): the rows still decoding
    rows = torch.arange(B, device=x.device)  # their indices in the batch
    out, nfe_out = answer, torch.zeros(B, dtype=torch.long, device=x.device)
    nfe = torch.zeros(B, dtype=torch.long, device=x.device)
    recorder = Recorder(B, gen_len, model.cfg.n_embd, bs, x.device) if record else None
    hooks = [h for h in (recorder, on_step) if h is not None]  # outside the hot path when empty
    starts = torch.arange(T + 1, device=x.device).unbind()  # 0-d start tensors: no recompile per position
    step_fn = step or step_function(model)
    if st.cache != "none":
        model.setup_cache(B, approximate=st.cache != "exact")
    try:
        cached_to, n_steps = 0, 0  # an exact cache holds final keys/values for positions < cached_to
        for blk in range(gen_len // bs):
            s, e = P + blk * bs, P + (blk + 1) * bs
            todo = init is None or bool((x[:, s:e] == mask_id).any())  # False: a block given whole
            for i in range(bs if todo else 0):  # each step finalizes a token of every row with any left
                lo, hi = pass_window(st.cache, st.refresh, i, s, e, T, cached_to)
                o = step_fn(x[:, lo:hi], None if st.cache == "none" else starts[lo], s - shift - lo, x[:, s:e],
                            mask_id, st.rule, RULES[st.rule].amount(st, i), st.temperature, generator)
                x[:, s:e], cached_to = o.block, s
                nfe += o.ran
                if hooks:  # on_step may keep what it sees (traces): a copy; recording reads it at once
                    keep = (lambda t: t.clone()) if on_step is not None else (lambda t: t)
                    ev = Step(keep(x[:, P:]), rows, blk, o.picked, o.pred, o.conf, keep(nfe), lo, hi, n_steps, o.hidden)
                    for hook in hooks:
                        hook(ev)
                n_steps += 1
                if not o.more:  # the step's one host synchronisation
                    break
            if st.early_stop:
                done = finished(x[:, P:e], eos_id)  # (b,)
                if done.any():
                    x[done, e:] = eos_id
                    out[rows[done]], nfe_out[rows[done]] = x[done, P:], nfe[done]
                    keep = (~done).nonzero().flatten()  # the finished rows leave the batch
                    x, rows, nfe = x[keep], rows[keep], nfe[keep]
                    if st.cache != "none":
                        model.keep_cache_rows(keep)
                    if len(rows) == 0:
                        break
        out[rows], nfe_out[rows] = x[:, P:], nfe
    finally:
        model.clear_cache()
    if record:
        return Decoded(out, nfe_out, recorder.step, recorder.hidden)
    return Decoded(out, nfe_out)


class Evaluation(NamedTuple):
    final_acc: float        # share of problems whose final answer is right (data.common.METRICS)
    whole_acc: float        # share whose whole worked answer is right
    nfe: float              # mean forward passes per answer
    preds: list             # decoded answers
    correct: dict           # per-problem booleans for each metric (paired comparisons between methods)
    chance: dict            # what the best constant guess scores on these problems, per metric


def evaluate(model, meta, rows, settings, batch_size=64, seed=1337, progress=None):
    """Decode the prompts of rows (n, seq_len) and score them against their answers."""
    tok, P, gen_len = get_tokenizer(meta), meta["prompt_len"], meta["gen_len"]
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    preds, nfes, truth = [], [], []
    for i in range(0, len(rows), batch_size):
        batch = torch.as_tensor(np.asarray(rows[i:i + batch_size], dtype=np.int64), device=device)
        out, nfe = generate(model, batch[:, :P], gen_len, meta["mask_id"], meta["eos_id"], settings, gen)[:2]
        preds += [tok.decode(r) for r in out.tolist()]
        truth += [tok.decode(r) for r in batch[:, P:].tolist()]
        nfes += nfe.tolist()
        if progress is not None:
            progress.update(len(batch))
    correct = score(preds, truth, meta["answer_marker"])
    acc = {k: sum(v) / len(v) for k, v in correct.items()}
    return Evaluation(acc["final_acc"], acc["whole_acc"], sum(nfes) / len(nfes), preds, correct,
                      chance_levels(truth, meta["answer_marker"]))


def describe(ev):
    """One line: both scores with their chance levels, and the forward passes."""
    return (f"final answer {ev.final_acc:.1%} (chance {ev.chance['final_acc']:.1%}), whole answer "
            f"{ev.whole_acc:.1%} (chance {ev.chance['whole_acc']:.1%}), mean NFE {ev.nfe:.2f}")


config = dict(
    out_dir=Str("out/teacher"),         # the checkpoint to sample: {out_dir}/ckpt.pt
    prompt=Str(None),                   # decode this prompt and print the answer
    show=Bool(False),                   # print the answer after every step, with confidences
    eval=Bool(False),                   # score on a data split instead
    split=Str("test"),
    num_eval=Int(500, "[1, inf)"),      # problems to score (the default: at most)
    batch_size=Int(64, "[1, inf)"),
    data_dir=Str(None),                 # None: where the checkpoint's data was prepared
    # decoding (DecodeSettings); None keeps the checkpoint's own setting, stored by train.py
    **decode_options(),
    seed=Int(1337, SEED),               # the sampling noise (temperature > 0)
    device=Str("auto"),
    dtype=Str("auto"),                  # 'float32' | 'bfloat16' | 'float16' | 'auto' (bf16 autocast on CUDA)
    compile=Bool(False),                # torch.compile the forward: pays off over many decodes (--eval)
)


def load_for_decoding(path, settings_overrides, device, mode=None, option="out_dir"):
    """A checkpoint's model, its data meta and its decoding settings with the overrides applied;
    a block_causal model's mask follows the decoding block size."""
    model, ckpt = load_model(path, device, mode, option)
    settings = decode_settings(ckpt, settings_overrides)
    if model.cfg.attn == "block_causal":
        model.set_mask(block_size=settings.block_size)
    return model, ckpt, settings


def main(argv):
    cfg = configure(config, argv)
    device = pick_device(cfg["device"])
    ctx = autocast(device, pick_dtype(cfg["dtype"], device))
    if cfg["eval"] == bool(cfg["prompt"]):
        raise CDLMError("give --prompt=... or --eval" + (", not both" if cfg["eval"] else ""))
    if cfg["eval"] and cfg["show"]:
        raise CDLMError("option show=True has no effect with --eval: it prints the steps of one --prompt")
    refuse_unused(cfg, {k: "without --eval" for k in ("split", "num_eval", "batch_size", "data_dir") if not cfg["eval"]})
    torch.manual_seed(cfg["seed"])
    overrides = {f.name: cfg[f.name] for f in fields(DecodeSettings)}
    model, ckpt, settings = load_for_decoding(os.path.join(cfg["out_dir"], "ckpt.pt"), overrides, device)
    if settings.temperature == 0:
        refuse_unused(cfg, {"seed": "at temperature 0: greedy decoding draws no noise"})
    meta, tok = ckpt["data_meta"], get_tokenizer(ckpt["data_meta"])
    model = compiled(model, cfg["compile"])
    if cfg["eval"]:
        from tqdm import tqdm
        data_dir, _ = checkpoint_data(ckpt, cfg["data_dir"])
        rows = load_split(data_dir, cfg["split"], meta)
        if gave(cfg, "num_eval") and cfg["num_eval"] > len(rows):
            raise CDLMError(f"option num_eval={cfg['num_eval']}: the {cfg['split']} split of {data_dir} has {len(rows)} problems")
        rows = rows[:cfg["num_eval"]]
        t0 = time.time()
        with tqdm(total=len(rows), desc=f"eval {cfg['split']}", file=sys.stderr) as bar, ctx:
            ev = evaluate(model, meta, rows, settings, cfg["batch_size"], cfg["seed"], bar)
        print(f"{cfg['out_dir']} ({model.cfg.attn}) on {len(rows)} {cfg['split']} problems with {asdict(settings)}: "
              f"{describe(ev)}, {time.time() - t0:.1f}s")
        print(json.dumps({"final_acc": ev.final_acc, "whole_acc": ev.whole_acc, "chance": ev.chance,
                          "n": len(rows), "nfe": ev.nfe}))
        return
    ids = encode_prompt(tok, cfg["prompt"], meta["prompt_len"])
    on_step = None
    if cfg["show"]:
        print(STEP_LEGEND)
        on_step = lambda ev: print(step_line(tok, meta, ev, 0))
    gen = torch.Generator(device=device).manual_seed(cfg["seed"])
    with ctx:
        out, nfe = generate(model, torch.tensor([ids], device=device), meta["gen_len"], meta["mask_id"],
                            meta["eos_id"], settings, gen, on_step=on_step)[:2]
    print(f"{cfg['prompt']}{tok.decode(out[0].tolist())}    ({nfe.item()} forward passes)")


if __name__ == "__main__":
    run_main(main)
