"""The attention masks against their definitions, and the KV cache against uncached passes."""
import pytest
import torch

from model import ModelConfig, Transformer, attention_mask


def brute_force_mask(mode, seq_len, prompt_len, block_size):
    """The paper's definitions, written out position by position."""
    def block(i):  # the prompt is block 0; answer blocks count from 1
        return 0 if i < prompt_len else 1 + (i - prompt_len) // block_size
    m = torch.zeros(seq_len, seq_len, dtype=torch.bool)
    for i in range(seq_len):
        for j in range(seq_len):
            if mode == "bidirectional":
                m[i, j] = True
            elif mode == "causal":
                m[i, j] = j <= i
            else:  # block_causal: the prompt, all earlier blocks, and its own block
                m[i, j] = j < prompt_len or block(j) <= block(i)
    return m


@pytest.mark.parametrize("mode", ["bidirectional", "block_causal", "causal"])
@pytest.mark.parametrize("prompt_len", [1, 5, 16])
@pytest.mark.parametrize("block_size", [1, 3, 8])
@pytest.mark.parametrize("answer_len", [8, 13])  # 13 is not a multiple of 3 or 8
def test_mask_matches_definition(mode, prompt_len, block_size, answer_len):
    T = prompt_len + answer_len
    assert torch.equal(attention_mask(mode, T, prompt_len, block_size),
                       brute_force_mask(mode, T, prompt_len, block_size))


def test_block_causal_mask_hides_later_blocks_and_sees_prompt():
    m = attention_mask("block_causal", 4 + 6, 4, 3)
    assert m[0, 3] and not m[0, 4]  # the prompt is one bidirectional block that sees no answer
    assert m[4, 6] and not m[4, 7]  # first answer block sees itself, not the next one
    assert m[9, :].all()  # the last block sees everything


def test_unknown_mask_mode():
    with pytest.raises(ValueError, match="attn must be one of"):
        attention_mask("sideways", 4, 2, 2)


def tiny(attn, block_size=4, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=11, seq_len=5 + 12, prompt_len=5, block_size=block_size, n_layer=2,
                      n_head=2, n_embd=16, attn=attn)
    return Transformer(cfg).eval()


def test_block_causal_cache_is_exact():
    """Prefill the prompt, then feed the answer block by block through the cache."""
    model = tiny("block_causal")
    x = torch.randint(0, 11, (3, 17))
    full = model(x)  # (B, T, V)
    model.setup_cache(3)
    pieces = [model(x[:, :5], start=0)]
    for s in range(5, 17, 4):
        pieces.append(model(x[:, s:s + 4], start=s))
    model.clear_cache()
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=0)


def test_cache_rows_runs_some_rows_and_restores_the_whole_batch():
    """A pass over rows (2, 0) inside cache_rows reads their cache rows (the same logits as those rows
    of a whole-batch pass) and its writes are gone after it."""
    model = tiny("block_causal")
    x = torch.randint(0, 11, (3, 17))
    model.setup_cache(3)
    model(x[:, :9], start=0)  # the prompt and the first block in the cache
    before = [(b.attn.cache.k.clone(), b.attn.cache.v.clone()) for b in model.blocks]
    y = torch.randint(0, 11, (3, 4))  # another second block: written in the cache by the passes below
    with model.cache_rows(torch.tensor([2, 0])):
        some = model(y[[2, 0]], start=9)
    assert all(torch.equal(b.attn.cache.k, k) and torch.equal(b.attn.cache.v, v) for b, (k, v) in zip(model.blocks, before))
    torch.testing.assert_close(some, model(y, start=9)[[2, 0]], atol=1e-6, rtol=0)
    model.clear_cache()


def test_causal_cache_is_exact_token_by_token():
    model = tiny("causal")
    x = torch.randint(0, 11, (2, 17))
    full = model(x)
    model.setup_cache(2)
    pieces = [model(x[:, :5], start=0)] + [model(x[:, t:t + 1], start=t) for t in range(5, 17)]
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=0)


def test_block_causal_logits_ignore_later_blocks():
    """What makes the cache exact: changing a later block changes nothing before it."""
    model = tiny("block_causal")
    x = torch.randint(0, 11, (2, 17))
    y = x.clone()
    y[:, 13:] = (y[:, 13:] + 1) % 11  # the third answer block
    torch.testing.assert_close(model(x)[:, :13], model(y)[:, :13], atol=1e-6, rtol=0)
    assert not torch.allclose(model(x)[:, 13:], model(y)[:, 13:])


def test_positions_past_seq_len_are_refused():
    with pytest.raises(ValueError, match="exceed seq_len"):
        tiny("block_causal")(torch.zeros(1, 18, dtype=torch.long))


def test_cached_forward_is_refused_where_it_would_be_wrong():
    teacher = tiny("bidirectional")
    x = torch.randint(0, 11, (1, 17))
    with pytest.raises(ValueError, match="call setup_cache"):
        teacher(x[:, 5:9], start=5)  # without a cache it would attend to positions 5..9 only
    with pytest.raises(ValueError, match="no exact KV cache"):
        teacher.setup_cache(1)
    teacher.setup_cache(1, approximate=True)  # Fast-dLLM's caches: asked for as approximations
    full = teacher(x)
    torch.testing.assert_close(teacher(x, start=0), full, atol=1e-5, rtol=0)  # a refresh is the full pass
    teacher.clear_cache()


def test_lora_starts_at_the_base_model_and_merges_exactly():
    from model import add_lora, merged_state_dict
    base = tiny("block_causal")
    x = torch.randint(0, 11, (2, 17))
    want = base(x)
    model = add_lora(tiny("block_causal"), rank=2, alpha=4.0)
    torch.testing.assert_close(model(x), want)  # B = 0: the adapters start as a no-op
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith((".A", ".B")) for n in trainable)  # everything else frozen
    for n, p in model.named_parameters():
        if n.endswith(".B"):
            torch.nn.init.normal_(p)
    merged = Transformer(model.cfg).eval()
    merged.load_state_dict(merged_state_dict(model))  # plain weights: sampling needs nothing new
    torch.testing.assert_close(merged(x), model(x), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(merged(x), want)
