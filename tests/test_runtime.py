"""The device and precision branches, exercised on the CPU as far as they go without a GPU."""
import contextlib
import warnings

import pytest
import torch

from configurator import CDLMError
from model import ModelConfig, Transformer
from runtime import autocast, pick_dtype, sync
from sample import DecodeSettings, generate


def test_auto_dtype_is_bf16_on_a_cuda_gpu_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert pick_dtype("auto", "cuda") == pick_dtype("auto", "cuda:1") == "bfloat16"
    assert pick_dtype("auto", "cpu") == pick_dtype("auto", "mps") == "float32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a V100
    assert pick_dtype("auto", "cuda") == "float32"
    assert pick_dtype("float16", "cpu") == "float16"
    with pytest.raises(CDLMError, match="dtype='fp8': expected 'auto' or one of"):
        pick_dtype("fp8", "cuda")


def test_autocast_context():
    assert isinstance(autocast("cpu", "float32"), contextlib.nullcontext)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # building a CUDA autocast without a GPU warns, and is all we can do
        ctx = autocast("cuda:0", "bfloat16")
    assert isinstance(ctx, torch.autocast) and ctx.device == "cuda" and ctx.fast_dtype == torch.bfloat16


def test_sync_waits_for_cuda_only(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: calls.append(a))
    sync("cpu")
    assert calls == []
    sync("cuda:0")
    assert len(calls) == 1


def test_bf16_autocast_forward_and_exact_cache():
    """Under autocast the KV cache stores bf16 keys and values; cached decoding still equals uncached."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=30, seq_len=24, prompt_len=8, block_size=4, n_layer=2, n_head=2, n_embd=32,
                      dropout=0.0, attn="block_causal")
    model = Transformer(cfg).eval()
    prompt = torch.randint(3, 30, (3, 8))
    with autocast("cpu", "bfloat16"):
        assert model(prompt).dtype == torch.bfloat16
        model.setup_cache(3)
        assert model.blocks[0].attn.cache.k.dtype == torch.bfloat16
        model.clear_cache()
        cached = generate(model, prompt, 16, 1, 2, DecodeSettings(4, threshold=0.5, cache="exact")).tokens
        plain = generate(model, prompt, 16, 1, 2, DecodeSettings(4, threshold=0.5)).tokens
    assert torch.equal(cached, plain)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_precision_training_step(tmp_path, data_dir, dtype):
    """train.py under autocast (and a GradScaler for float16) on the CPU: losses stay finite."""
    from conftest import train_tiny
    from checkpoint import read_checkpoint
    out = train_tiny(str(tmp_path / dtype), data_dir, mode="dlm", max_iters=4, dtype=dtype)
    ckpt = read_checkpoint(f"{out}/ckpt.pt")
    assert ckpt["config"]["dtype"] == dtype and ckpt["iter_num"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert ckpt["model"]["wte.weight"].dtype == torch.float32  # autocast leaves the weights in float32
    torch.manual_seed(ckpt["config"]["seed"])  # train.py seeds like this before building the model
    init = Transformer(ModelConfig(**ckpt["model_config"])).state_dict()
    assert not torch.equal(init["lm_head.weight"], ckpt["model"]["lm_head.weight"])  # steps were taken
    if dtype == "float16":  # the scaler's state is saved for a resume
        assert ckpt["scaler"]["scale"] > 0
