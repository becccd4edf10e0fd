"""
A small pre-norm transformer whose attention mask is switched by one config field, and a static
KV cache. The same weights serve three roles in CDLM (arXiv 2511.19269):

  bidirectional  the teacher, a masked-diffusion LM: every position sees every position (Sec. 3.1)
  block_causal   the CDLM student: the prompt is one bidirectional block; an answer position sees
                 the prompt, every earlier answer block and its own block (Sec. 4.1). A finished
                 block never changes what earlier positions see, so its keys and values can be
                 cached exactly.
  causal         the autoregressive baseline.

Every sequence has the same layout (data/common.py): prompt_len prompt tokens (padded on the right), then
gen_len answer tokens, so one precomputed (seq_len, seq_len) mask serves every row of a batch.

The KV cache is exact for block_causal and causal models. For the bidirectional teacher it can only
be an approximation (Fast-dLLM's prefix and dual caches, refreshed by the sampler), so it must be
asked for as one.
"""
import contextlib
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F


ATTN_MODES = ("bidirectional", "block_causal", "causal")


@dataclass
class ModelConfig:
    # from the data (meta.json), so no defaults: a model is always built for one layout
    vocab_size: int
    seq_len: int             # prompt_len + gen_len
    prompt_len: int          # answers start here
    block_size: int = 8      # diffusion block (used by the block_causal mask)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    attn: str = "bidirectional"


def block_of(pos, prompt_len, block_size):
    """The answer block holding each sequence position: 0, 1, ... for the blocks of block_size after
    the prompt, -1 for the prompt (one numbering everywhere: the README's, train.py's, the sampler's)."""
    return torch.div(pos - prompt_len, block_size, rounding_mode="floor").clamp_min(-1)


def attention_mask(mode, seq_len, prompt_len, block_size):
    """(seq_len, seq_len) bool, True where query i may attend to key j."""
    i = torch.arange(seq_len)[:, None]
    j = torch.arange(seq_len)[None, :]
    if mode == "bidirectional":
        return torch.ones(seq_len, seq_len, dtype=torch.bool)
    if mode == "block_causal":
        b = block_of(torch.arange(seq_len), prompt_len, block_size)  # (T,) the prompt is one block, before all
        return b[:, None] >= b[None, :]  # own block and every earlier one
    if mode == "causal":
        return i >= j
    raise ValueError(f"attn must be one of {ATTN_MODES}, got {mode!r}")


class KVCache:
    """
    Preallocated keys and values for one layer over all seq_len positions, written in place at a
    tensor of positions (gpt-fast). Its shape changes only with the rows a step runs (finished rows
    leave; Transformer.cache_rows), never with the positions, so a compiled forward sees few shapes.
    A position not written in this decode gets zero weight (the mask hides it), so one decode's
    tensors serve the next of the same shape as they are: a decode allocates nothing. A plain
    object, not a module, one per layer for the model's life: setting a module's attribute costs
    several microseconds, and a decode of the compiled student takes four milliseconds.
    """

    def __init__(self):
        self.k = self.v = None  # (B, nh, seq_len, hd) each while a decode runs, else None
        self.spare = None  # the last decode's (k, v): the next one of the same shape starts from them

    def setup(self, shape, dtype, device):
        k = self.spare[0] if self.spare else None
        if k is None or (k.shape, k.dtype, k.device) != (shape, dtype, device):
            self.spare = tuple(torch.zeros(shape, dtype=dtype, device=device) for _ in "kv")
        self.k, self.v = self.spare

    def clear(self):
        self.k = self.v = None

    def update(self, pos, k, v):
        """Write k, v (B, nh, t, hd) at positions pos (t,); return the keys and values at every
        position (B, nh, seq_len, hd). Every row is written (a step over some rows runs in cache_rows)."""
        self.k.index_copy_(2, pos, k.to(self.k.dtype))
        self.v.index_copy_(2, pos, v.to(self.v.dtype))
        return self.k, self.v

    def keep(self, rows):
        """Drop finished rows: rows (b,) are the indices to keep."""
        self.k, self.v = self.k[rows], self.v[rows]


class SelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.cache = KVCache()  # empty (k None) but during a decode

    def forward(self, x, mask, pos):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)  # (B, nh, T, hd) each
        if pos is not None:  # a pass from the cache (Transformer.forward checked that it is set up)
            k, v = self.cache.update(pos, k, v)  # (B, nh, seq_len, hd)
        # an explicit mask, never is_causal: with a cache, queries and keys differ in length
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = SelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = nn.Sequential(nn.Linear(cfg.n_embd, 4 * cfg.n_embd), nn.GELU(),
                                 nn.Linear(4 * cfg.n_embd, cfg.n_embd), nn.Dropout(cfg.dropout))

    def forward(self, x, mask, pos):
        x = x + self.attn(self.ln_1(x), mask, pos)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        if cfg.attn not in ATTN_MODES:
            raise ValueError(f"attn must be one of {ATTN_MODES}, got {cfg.attn!r}")
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.register_buffer("mask", attention_mask(cfg.attn, cfg.seq_len, cfg.prompt_len, cfg.block_size),
                             persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def set_mask(self, attn=None, block_size=None):
        """Rebuild the mask, e.g. to decode a block_causal student with another block size (the
        weights do not depend on it)."""
        self.cfg.attn = attn or self.cfg.attn
        self.cfg.block_size = block_size or self.cfg.block_size
        self.mask = attention_mask(self.cfg.attn, self.cfg.seq_len, self.cfg.prompt_len,
                                   self.cfg.block_size).to(self.mask.device)

    def setup_cache(self, batch_size, approximate=False):
        """
        Allocate a KV cache for every layer. Exact for block_causal and causal models; a
        bidirectional model's keys change whenever any token does, so its cache is an
        approximation that must be asked for (approximate=True) and refreshed by the caller.
        """
        if self.cfg.attn == "bidirectional" and not approximate:
            raise ValueError("a bidirectional model has no exact KV cache (its keys change with every "
                             "token); ask for an approximate one with setup_cache(..., approximate=True)")
        p = self.lm_head.weight
        hd = self.cfg.n_embd // self.cfg.n_head
        # under autocast, keys and values come out in the autocast dtype: store them as they are
        dev = p.device.type
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else p.dtype
        for b in self.blocks:
            b.attn.cache.setup((batch_size, self.cfg.n_head, self.cfg.seq_len, hd), dtype, p.device)

    def clear_cache(self):
        for b in self.blocks:
            b.attn.cache.clear()

    def keep_cache_rows(self, rows):
        for b in self.blocks:
            b.attn.cache.keep(rows)

    @contextlib.contextmanager
    def cache_rows(self, rows):
        """Passes over the rows `rows` (b,) of the batch alone: inside the with, each layer's cache holds
        a copy of those rows; after it, the whole batch's cache is back and what the passes wrote is
        gone (the sampler's later steps of a block, whose keys the next block's first pass rewrites)."""
        caches = [b.attn.cache for b in self.blocks if b.attn.cache.k is not None]
        whole = [(c.k, c.v) for c in caches]
        for c in caches:
            c.k, c.v = c.k[rows], c.v[rows]
        try:
            yield
        finally:
            for c, (k, v) in zip(caches, whole):
                c.k, c.v = k, v

    def forward(self, idx, start=None, return_hidden=False):
        """
        idx: (B, T) tokens. Without start: one uncached pass over positions 0..T.
        With start (after setup_cache): positions start..start+T of every row, attending to the cache.
        start may be a 0-d tensor, so that a compiled forward is not specialized to each position.
        Returns logits (B, T, V), and the last hidden state (B, T, C), the LM head's input.
        """
        B, T = idx.shape
        s = 0 if start is None or torch.is_tensor(start) else start  # a tensor start is the sampler's, in range
        if s + T > self.cfg.seq_len:
            raise ValueError(f"positions {s}..{s + T} exceed seq_len={self.cfg.seq_len}")
        if start is None:
            x = self.wte(idx) + self.wpe.weight[:T]  # (B, T, C)
            mask = None if self.cfg.attn == "bidirectional" else self.mask[:T, :T]  # (T, T)
            pos = None
        else:
            if self.blocks[0].attn.cache.k is None:
                raise ValueError("forward(start=...) reads the KV cache: call setup_cache() first")
            pos = start + torch.arange(T, device=idx.device)  # (T,)
            x = self.wte(idx) + self.wpe(pos)  # (B, T, C)
            # every query row sees the whole static cache; the mask hides what is not theirs
            mask = None if self.cfg.attn == "bidirectional" else self.mask.index_select(0, pos)  # (T, seq_len)
        for b in self.blocks:
            x = b(x, mask, pos)
        h = self.ln_f(x)  # (B, T, C)
        logits = self.lm_head(h)  # (B, T, V)
        return (logits, h) if return_hidden else logits


# -----------------------------------------------------------------------------
# the forward process of masked diffusion and the two training losses of the data (LLaDA; the AR baseline's)

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
    pos_block = block_of(torch.arange(T, device=x.device), prompt_len, block_size)  # (T,) the prompt: -1
    masked = masked & (pos_block == block[:, None])  # (B, T)
    later = pos_block > block[:, None]
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


# -----------------------------------------------------------------------------
# LoRA (Hu et al. 2021): the CDLM student is trained with low-rank adapters on the attention and MLP
# projections while the teacher's weights stay frozen (CDLM Sec. 4.2, as its authors train it)

class LoRALinear(nn.Module):
    """y = W x + b + (alpha / rank) B A x with W and b frozen; B starts at zero, so training starts
    exactly from the teacher."""

    def __init__(self, base, rank, alpha):
        super().__init__()
        self.base, self.scale = base, alpha / rank
        base.requires_grad_(False)
        self.A = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # as nn.Linear initializes its weight

    def forward(self, x):
        return self.base(x) + (x @ self.A.T) @ self.B.T * self.scale

    def merged_weight(self):
        return self.base.weight + self.scale * self.B @ self.A  # (out, in)


def lora_targets(model):
    """(parent module, attribute) of every attention and MLP projection."""
    for b in model.blocks:
        yield from ((b.attn, "qkv"), (b.attn, "proj"), (b.mlp, "0"), (b.mlp, "2"))


def add_lora(model, rank, alpha):
    """Freeze every weight and put adapters on the attention and MLP projections."""
    model.requires_grad_(False)
    for parent, name in lora_targets(model):
        setattr(parent, name, LoRALinear(getattr(parent, name), rank, alpha))
    return model


def merged_state_dict(model):
    """The weights with any adapters merged in, under the plain model's names: what sampling loads."""
    sd = model.state_dict()
    for name, m in model.named_modules():
        if isinstance(m, LoRALinear):
            sd = {k: v for k, v in sd.items() if not k.startswith(name + ".")}
            sd[name + ".weight"], sd[name + ".bias"] = m.merged_weight().detach(), m.base.bias.detach()
    return sd


# -----------------------------------------------------------------------------
# checkpoints: plain dicts of tensors and builtins, so torch.load(weights_only=True) reads them

class Role(NamedTuple):
    mode: str     # train.py's mode that makes it
    attn: str     # its attention mask (ATTN_MODES)
    label: str    # what messages call it


# The three roles one architecture plays in CDLM, in one table: everything else derives from it.
ROLES = {"teacher": Role("dlm", "bidirectional", "teacher"),
         "student": Role("cdlm", "block_causal", "student"),
         "ar": Role("ar", "causal", "AR baseline")}
KINDS = {r.mode: r.label for r in ROLES.values()}  # training mode -> what it makes
