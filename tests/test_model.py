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
