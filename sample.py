"""
Block-wise decoding for every model in this repo: one loop, `generate`, switched by DecodeSettings.

    python sample.py --out_dir=out/teacher --prompt="5:+3*7+2*4+1="          # one answer
    python sample.py --out_dir=out/teacher --prompt="5:+3*7+2*4+1=" --show   # watch masks fill in
    python sample.py --out_dir=out/student --eval --num_eval=500              # both scores + NFE

The answer is split into blocks of block_size, decoded left to right (semi-autoregressive, as in
LLaDA). Inside a block every step predicts all masked positions at once and finalizes some; the
rest stay masked ("low-confidence remasking", LLaDA Alg. 5). Which ones is the selection rule, a
row of RULES naming the score it ranks by and what it finalizes ('count': a fixed count per step,
LLaDA; 'threshold': every token at least this confident, Fast-dLLM, CDLM Sec. 4.3); a step always
finalizes at least the rule's best. Caches: `exact` for block_causal and causal models (a step
recomputes only the current block); `prefix` and `dual`, Fast-dLLM's approximate caches for the
bidirectional teacher, refreshed at each block. With `early_stop`, a row whose finished text holds
EOS leaves the batch; the rest of its answer is EOS.
"""
import functools
import json
import os
import sys
import time
import typing
from dataclasses import asdict, dataclass, fields
from typing import Callable, NamedTuple, Optional

import numpy as np
import torch

from checkpoint import load_model
from configurator import (SEED, Bool, CDLMError, Choice, Float, Int, Str, configure, fit_sizes, refuse_unused,
                          run_main)
from data.common import (SPLITS, answer_note, chance_levels, checkpoint_data, encode_prompt, get_tokenizer, load_split,
                         score)
from render import STEP_LEGEND, step_line
from runtime import autocast, compiled, compiled_step, is_compiled, pick_device, pick_dtype

CACHES = ("none", "exact", "prefix", "dual")
REFRESHES = ("block", "step")
# 0 is greedy; a positive temperature divides float64 logits, which overflow below about 1e-300
# (every logit then reads +-inf and the sample is garbage), so a positive one starts at 1e-3
TEMPERATURES = "0 or [1e-3, inf)"


class Rule(NamedTuple):
    """A selection rule: the score it ranks a block's masked positions by, and which it finalizes."""
    param: str          # the DecodeSettings field that parameterizes it (None under every other rule)
    option: object      # that field's type and range, as sample.py's option --<param>
    amount: Callable    # (settings, i) -> the parameter at step i of a block
    score: Callable     # (conf (b, bs) float64, logits (b, bs, V)) -> (b, bs): higher is finalized first
    pick: Callable      # (score (b, bs), amount) -> (b, bs) bool: the positions it finalizes


def confidence(conf, logits):
    """The probability of the proposed token (predict): the score of LLaDA's and Fast-dLLM's rules."""
    return conf


def top_k(score, k):
    """The k best-scored positions of each row (ties to the lower position)."""
    rank = score.argsort(dim=1, descending=True, stable=True).argsort(dim=1)  # (b, bs) 0 = the best
    return rank < k


def tokens_per_step(block_size, steps_per_block):
    """How many tokens each of the steps_per_block steps of a block finalizes (sums to block_size)."""
    base, extra = divmod(block_size, steps_per_block)
    return [base + (i < extra) for i in range(steps_per_block)]


# The selection rules, by name (DecodeSettings.rule). A new rule is a row here and a field for its
# parameter in DecodeSettings (README, "How to extend").
RULES = {
    # a fixed count per step, the most confident first (LLaDA): block_size / steps_per_block a step
    "count": Rule("steps_per_block", Int(None, "[1, inf)"),
                  lambda st, i: tokens_per_step(st.block_size, st.steps_per_block)[i], confidence, top_k),
    # every masked token at least this confident (Fast-dLLM's parallel decoding; CDLM Sec. 4.3)
    "threshold": Rule("threshold", Float(None, "(0, 1]"), lambda st, i: st.threshold, confidence,
                      lambda score, threshold: score >= threshold),
}
RULES_PARAMS = [r.param for r in RULES.values()]  # their parameters, the fields of DecodeSettings they read


class Decoded(NamedTuple):
    tokens: torch.Tensor   # (B, gen_len) the answers
    nfe: torch.Tensor      # (B,) forward passes each row took part in


class StepOut(NamedTuple):
    """One decode step's result (decode_step)."""
    x: torch.Tensor        # (b, T) the sequences after this step
    nfe: torch.Tensor      # (b,) forward passes so far: this one counts for the rows that had masked positions
    picked: torch.Tensor   # (b, bs) finalized at this step
    pred: torch.Tensor     # (b, bs) this step's proposals
    conf: torch.Tensor     # (b, bs) their confidence, -inf where the position was already final
    hidden: torch.Tensor   # (b, bs, C) the block's last hidden states in this pass
    flags: torch.Tensor    # (2,) whether any position of the block is still masked, whether any row's block holds EOS


class Step(NamedTuple):
    """What on_step sees after each step, for the rows it ran: the step and where it was."""
    tokens: torch.Tensor   # (b, gen_len) their answers so far, MASK where not final
    rows: torch.Tensor     # (b,) their indices in the batch
    block: int             # the block decoded: answer positions block*bs .. (block+1)*bs
    nfe: torch.Tensor      # (b,) forward passes so far
    lo: int                # this pass computed sequence positions lo..hi; the rest came from the
    hi: int                # cache (without a cache: 0..seq_len)
    step: int              # steps taken before this one in this decode
    out: StepOut           # the step itself: picked, pred, conf, hidden


@torch.no_grad()
def generate(model, prompt, gen_len, mask_id, eos_id, settings, generator=None, init=None, on_step=None, step=None):
    """
    Decode answers for a batch of padded prompts (B, prompt_len) with DecodeSettings `settings`.
    `init` (B, gen_len) starts from a partial answer (MASK where to decode; infilling), else all MASK.
    on_step(Step) sees every step (the traces; collect.Recorder keeps the trajectory, Sec. 4.1);
    `step` replaces the step function (roofline times the loop alone with recorded steps).
    Every row runs a block's first step; its later steps run only the rows with masked positions
    left (model.cache_rows), since a row whose block is final would finalize nothing (at batch 64 a
    third of the rows' passes). A step's shapes depend on its kind and its rows (torch.compile makes
    the batch dynamic). Rows whose answer is over (early_stop) leave between blocks. Returns Decoded.
    """
    st = checked(settings, model.cfg.attn, gen_len)
    if model.cfg.attn == "block_causal" and model.cfg.block_size != st.block_size:
        raise CDLMError(f"option block_size={st.block_size}: the model's mask has blocks of "
                        f"{model.cfg.block_size} (rebuild it with model.set_mask(block_size=...))")
    B, P = prompt.shape
    T, bs = P + gen_len, st.block_size
    answer = prompt.new_full((B, gen_len), mask_id) if init is None else init
    x = torch.cat([prompt, answer], dim=1)  # (b, T): the rows still decoding
    rows = torch.arange(B, device=x.device)  # their indices in the batch
    out, nfe_out = answer.clone(), torch.zeros(B, dtype=torch.long, device=x.device)  # every row's, by index
    nfe = torch.zeros(B, dtype=torch.long, device=x.device)
    step_fn = step or step_function(model, st)
    if st.cache != "none":
        model.setup_cache(B, approximate=st.cache != "exact")
    try:
        cached_to, taken = 0, 0  # an exact cache holds final keys/values below cached_to; steps so far
        for blk in range(gen_len // bs):
            s, e = P + blk * bs, P + (blk + 1) * bs  # the block's sequence positions
            given = init is not None and not bool((x[:, s:e] == mask_id).any())  # a block given whole: no step
            ended = given and bool((x[:, s:e] == eos_id).any())
            run = None  # the rows a step runs: all of them (None), or those with masked positions left
            for i in range(0 if given else bs):
                lo, hi = pass_window(st.cache, st.refresh, i, s, e, T, cached_to)
                window = None if st.cache == "none" else positions(lo, hi, x.device)
                args = (window, positions(s, e, x.device), mask_id, eos_id, st.rule, RULES[st.rule].amount(st, i),
                        st.temperature, generator)
                if run is None:
                    o = step_fn(x, nfe, *args)
                    x, nfe, ran = o.x, o.nfe, rows
                else:  # rows whose block is final sit out; the next block's first pass rewrites their keys
                    with model.cache_rows(run):
                        o = step_fn(x[run], nfe[run], *args)
                    x, nfe, ran = x.index_copy(0, run, o.x), nfe.index_copy(0, run, o.nfe), rows[run]
                cached_to = s
                if on_step is not None:  # it may keep what it sees (traces): a copy of the answers
                    on_step(Step(o.x[:, P:].clone(), ran, blk, o.nfe, lo, hi, taken, o))
                taken += 1
                more, eos = o.flags.tolist()  # the step's one host synchronisation
                ended = ended or eos
                if not more:
                    break
                if len(x) > 1:  # the rows with masked positions left run the block's next step
                    run = (x[:, s:e] == mask_id).any(1).nonzero().flatten()
                    run = None if len(run) == len(x) else run
            # early stop: everything up to e is final and no earlier block of these rows holds EOS
            # (they would have left), so an EOS in this block ends the answer
            if st.early_stop and ended:
                done = (x[:, s:e] == eos_id).any(1)  # (b,)
                going = (~done).nonzero().flatten()  # the rows whose answer goes on
                if len(going) == 0:  # every answer ends at this block (batch 1: one check, no gathers)
                    x = x.index_fill(1, positions(e, T, x.device), eos_id)
                    break
                gone = rows[done]  # their indices in the batch: they leave it
                out[gone], nfe_out[gone] = x[done, P:], nfe[done]
                out[gone, e - P:] = eos_id
                x, rows, nfe = x[going], rows[going], nfe[going]
                if st.cache != "none":
                    model.keep_cache_rows(going)
        out[rows], nfe_out[rows] = x[:, P:], nfe
    finally:
        model.clear_cache()
    return Decoded(out, nfe_out)


@functools.lru_cache(maxsize=1024)
def positions(lo, hi, device):
    """The sequence positions lo..hi as a tensor, made once per span and device (not per step): a
    step reads its window and its block through them, so its graph is the same wherever they lie."""
    return torch.arange(lo, hi, device=device)


def pass_window(cache, refresh, i, s, e, T, cached_to):
    """The positions lo..hi a pass computes; the rest comes from the cache. An exact cache computes
    what it lacks (a block's first step also writes the block before it, now final: no separate
    prefill or commit pass); the approximate caches everything at a refresh, then the block and the
    suffix ('prefix') or the block alone ('dual'); no cache, everything. The window's length depends
    only on the kind of step, never on the block: static shapes."""
    if cache == "exact":
        return cached_to, e
    if cache == "none" or i == 0 or refresh == "step":
        return 0, T
    return s, e if cache == "dual" else T


def decode_step(model, x, nfe, window, block, mask_id, eos_id, rule, amount, temperature, generator=None):
    """
    One denoising step of the sequences x (b, T) at the block's positions `block` (bs,), in the
    order it runs: the forward over the positions `window` (from the cache; None without one: the
    whole sequence), the block's logits; predict every position (never MASK itself); score the
    masked ones by the rule's own score; select what the rule picks and always its best; write the
    block into a new x and count the pass in nfe for the rows that had masked positions. It mutates
    none of its inputs (CUDA graphs skip a graph that writes its inputs) and the positions are
    tensors, so torch.compile makes it a few graphs per kind of step (the batch dynamic once it has
    changed), and the sampler's bookkeeping between passes is inside it. Returns StepOut.
    """
    shift = 1 if model.cfg.attn == "causal" else 0  # AR: position p is predicted from the logits at p-1
    if window is None:
        logits, h = model(x, return_hidden=True)  # (b, T, V), (b, T, C)
        at = block - shift  # (bs,) the block's logits in the pass
    else:
        logits, h = model(x.index_select(1, window), start=window[0], return_hidden=True)  # (b, hi-lo, V)
        at = block - shift - window[0]  # (bs,)
    logits, h = logits.index_select(1, at), h.index_select(1, at)  # (b, bs, V), (b, bs, C)
    logits[..., mask_id] = float("-inf")  # never propose MASK itself
    tokens = x.index_select(1, block)  # (b, bs)
    masked = tokens == mask_id  # (b, bs)
    pred, conf = predict(logits, temperature, generator)  # (b, bs), float64 (b, bs)
    conf = conf.masked_fill(~masked, float("-inf"))  # only masked positions compete
    scores = RULES[rule].score(conf, logits).masked_fill(~masked, float("-inf"))  # (b, bs)
    pick = select_tokens(scores, rule, amount)  # (b, bs)
    new = torch.where(pick, pred, tokens)  # (b, bs)
    flags = torch.stack([(new == mask_id).any(), (new == eos_id).any()])  # (2,)
    return StepOut(x.index_copy(1, block, new), nfe + masked.any(1), pick, pred, conf, h, flags)


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


def select_tokens(score, rule, amount):
    """Which positions a step finalizes: score (b, bs), the rule's own, -inf where nothing may be
    finalized; amount, the rule's parameter (the k of 'count', the threshold of 'threshold'). A row
    with any candidate always finalizes at least its best-scored one."""
    eligible = score > float("-inf")  # (b, bs)
    best = torch.zeros_like(eligible).scatter_(1, score.argmax(dim=1, keepdim=True), True)  # (b, bs)
    return eligible & (RULES[rule].pick(score, amount) | best)


def step_function(model, settings=None):
    """decode_step for this model; when the model is compiled (runtime.compiled), decode_step itself
    is compiled around the plain model (runtime.compiled_step), so a step's forward and the small
    operations around it become one graph, one copy per kind of decode (rule, cache, sampling)."""
    if not is_compiled(model):
        return functools.partial(decode_step, model)
    kind = (settings.rule, settings.cache, settings.temperature > 0) if settings is not None else ()
    return compiled_step(model, decode_step, kind)


# -----------------------------------------------------------------------------
# the settings, their checks, evaluation and the command line

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
        if self.rule is None:  # the short form: the rule whose parameter is given
            given = [name for name, r in RULES.items() if getattr(self, r.param, None) is not None]
            self.rule = given[0] if len(given) == 1 else None

    def check(self, attn, gen_len, origin="option {}".format):
        """A one-line error for settings this model and layout cannot decode, naming each as origin(field) does."""
        def bad(key, allowed):
            raise CDLMError(f"{origin(key)}={getattr(self, key)!r}: {allowed}")
        params, options = RULES_PARAMS, decode_options()
        if self.rule is None:
            bad("rule", f"give exactly one of {' and '.join(params)} (or name the rule: one of {', '.join(RULES)})")
        for f in fields(self):  # each field's type and range, as sample.py declares them
            if getattr(self, f.name) is None and type(None) not in typing.get_args(f.type):
                bad(f.name, "expected a value, not None")
            if not options[f.name].accepts(getattr(self, f.name)):
                bad(f.name, f"expected {options[f.name].describe()}")
        own = RULES[self.rule].param
        for p in params:  # the rule's own parameter, and no other rule's
            if (getattr(self, p) is not None) != (p == own):
                bad(p, f"rule={self.rule!r} reads {own}" + (": give it" if p == own else ", not this"))
        if gen_len % self.block_size:
            bad("block_size", f"expected a divisor of gen_len={gen_len}")
        if attn == "causal" and self.block_size != 1:
            bad("block_size", "an autoregressive model decodes one token at a time (block_size=1)")
        if attn == "causal" and self.rule != "count":
            bad(own, "an autoregressive model decodes one token a step, left to right: no rule chooses among "
                     "positions (it decodes with steps_per_block=1)")
        if self.steps_per_block is not None and self.steps_per_block > self.block_size:
            bad("steps_per_block", f"expected an int in [1, block_size={self.block_size}]")
        if self.cache == "exact" and attn == "bidirectional":
            bad("cache", "a bidirectional model has no exact cache (use 'prefix' or 'dual', approximate)")
        if self.cache in ("prefix", "dual") and attn != "bidirectional":
            bad("cache", f"a {attn} model's cache is exact: use 'exact'")
        return self


# Each training mode's decoding, stored in its checkpoints as the model's defaults (train.py) and
# bench.py's methods cdlm, dlm and ar: the teacher one token per step over the whole answer (N =
# gen_len); the student by threshold from its exact cache, stopping at EOS; AR greedy from its cache.
DEFAULT_DECODING = {
    "dlm": lambda bs, threshold: DecodeSettings(bs, steps_per_block=bs),
    "cdlm": lambda bs, threshold: DecodeSettings(bs, threshold=threshold, cache="exact", early_stop=True),
    "ar": lambda bs, threshold: DecodeSettings(1, steps_per_block=1, cache="exact", early_stop=True),
}


@functools.lru_cache(maxsize=256)
def _checked(items, attn, gen_len):
    return DecodeSettings(**{k: v for k, _, v in items}).check(attn, gen_len)


def checked(settings, attn, gen_len):
    """settings.check(attn, gen_len), once per distinct settings (each value with its type: True is
    not 1 here), model kind and answer length: a decode of the student takes ~4 ms compiled and
    the check ~40 us. Returns a checked copy."""
    items = tuple((k, type(v), v) for k, v in vars(settings).items())
    try:
        return _checked(items, attn, gen_len)
    except TypeError:  # an unhashable value (a list): check() names it
        return settings.check(attn, gen_len)


def decode_options():
    """sample.py's options for DecodeSettings, one per field, with the ranges check() enforces;
    None keeps the checkpoint's setting."""
    return dict(block_size=Int(None, "[1, inf)"), **{r.param: r.option for r in RULES.values()},
                cache=Choice(None, *CACHES), refresh=Choice(None, *REFRESHES),
                early_stop=Bool(None), temperature=Float(None, TEMPERATURES), rule=Choice(None, *RULES))


def decode_settings(ckpt, overrides, path="the checkpoint"):
    """The checkpoint's stored decoding settings, updated by the non-None overrides (one without effect is refused;
    a rule's parameter selects that rule). A bad setting is named as the option given, or as path's stored one."""
    given, params = {k: v for k, v in overrides.items() if v is not None}, {r.param: name for name, r in RULES.items()}
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
    origin = lambda k: f"option {k}" if k in given else f"{path}: its stored setting sampling.{k}"
    st = DecodeSettings(**s).check(ckpt["model_config"]["attn"], ckpt["data_meta"]["gen_len"], origin)
    if "refresh" in given and st.cache not in ("prefix", "dual"):
        raise CDLMError(f"option refresh={st.refresh!r} has no effect with cache={st.cache!r}: it is for the "
                        f"approximate caches 'prefix' and 'dual'")
    return st


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
    split=Choice("test", *SPLITS),
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
    settings = decode_settings(ckpt, settings_overrides, path)
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
    for k in (k for k, v in overrides.items() if v is None and k in getattr(cfg, "typed", ())):  # not 'no threshold'
        raise CDLMError(f"option {k}=None keeps the checkpoint's own setting ({k}={getattr(settings, k)!r}): leave it out, "
                        f"or give a value" + (" (another rule: give its parameter, or --rule=...)" if k in RULES_PARAMS else ""))
    if settings.temperature == 0:
        refuse_unused(cfg, {"seed": "at temperature 0: greedy decoding draws no noise"})
    meta, tok = ckpt["data_meta"], get_tokenizer(ckpt["data_meta"])
    model = compiled(model, cfg["compile"])
    if cfg["eval"]:
        from tqdm import tqdm
        data_dir, dmeta = checkpoint_data(ckpt, cfg["data_dir"])
        rows = load_split(data_dir, cfg["split"], dmeta)
        cfg = fit_sizes(cfg, len(rows), f"the {cfg['split']} split of {data_dir}")  # a size typed fits them
        rows = rows[:cfg["num_eval"]]
        t0 = time.time()
        with tqdm(total=len(rows), desc=f"eval {cfg['split']}", file=sys.stderr) as bar, ctx:
            ev = evaluate(model, meta, rows, settings, cfg["batch_size"], cfg["seed"], bar)
        print(f"{cfg['out_dir']} ({model.cfg.attn}) on {len(rows)} {cfg['split']} problems with {asdict(settings)}: "
              f"{describe(ev)}, {time.time() - t0:.1f}s")
        print(json.dumps({"final_acc": ev.final_acc, "whole_acc": ev.whole_acc, "chance": ev.chance,
                          "n": len(rows), "nfe": ev.nfe}))
        return
    ids = encode_prompt(tok, cfg["prompt"], meta)
    on_step = None
    if cfg["show"]:
        print(STEP_LEGEND)
        on_step = lambda ev: print(step_line(tok, meta, ev, 0))
    gen = torch.Generator(device=device).manual_seed(cfg["seed"])
    with ctx:
        out, nfe = generate(model, torch.tensor([ids], device=device), meta["gen_len"], meta["mask_id"],
                            meta["eos_id"], settings, gen, on_step=on_step)[:2]
    answer = tok.decode(out[0].tolist())
    print(f"{cfg['prompt']}{answer}    ({nfe.item()} forward passes)")
    note = answer_note(meta, answer)  # an answer not of the task's form: said so, it was decoded all the same
    if note:
        print(note)


if __name__ == "__main__":
    run_main(main)
