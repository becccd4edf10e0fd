"""The block-wise sampler: selection rule, batching, the exact cache, early stop, the CLI."""
import json
import os
from typing import NamedTuple

import pytest
import torch

import sample
from checkpoint import load_model
from data.common import load_meta, load_split
from configurator import CDLMError
from collect import Recorder
from runtime import compiled
from conftest import ROOT
from sample import DecodeSettings, generate, predict, select_tokens, step_function, tokens_per_step

NEG = float("-inf")


def test_tokens_per_step_sums_to_block():
    assert tokens_per_step(8, 3) == [3, 3, 2]
    assert tokens_per_step(8, 8) == [1] * 8


def test_select_top_k_and_threshold():
    conf = torch.tensor([[0.2, 0.95, NEG, 0.5], [NEG, NEG, NEG, NEG], [0.3, 0.1, 0.2, 0.4]])
    k2 = select_tokens(conf, "count", 2)
    assert k2.tolist() == [[False, True, False, True], [False] * 4, [True, False, False, True]]
    th = select_tokens(conf, "threshold", 0.9)
    # row 0: only 0.95 passes; row 2: nothing passes, so its most confident is taken anyway
    assert th.tolist() == [[False, True, False, False], [False] * 4, [False, False, False, True]]
    assert not (select_tokens(conf, "threshold", 0.0) & (conf == NEG)).any()  # never a non-candidate


def rows_and_model(data_dir, ckpt_dir, n=6):
    model, ckpt = load_model(os.path.join(ckpt_dir, "ckpt.pt"))
    meta = ckpt["data_meta"]
    rows = torch.as_tensor(load_split(data_dir, "test", meta)[:n].astype("int64"))
    return model, meta, rows[:, :meta["prompt_len"]]


class Recorded(NamedTuple):
    tokens: torch.Tensor
    nfe: torch.Tensor
    step: torch.Tensor     # the trajectory collect.Recorder keeps
    hidden: torch.Tensor


def run(model, meta, prompt, record=False, on_step=None, **kw):
    """(tokens, nfe), and with record the trajectory collect.py keeps (Recorded)."""
    rec = Recorder(len(prompt), meta["gen_len"], model.cfg.n_embd, prompt.device) if record else None
    r = generate(model, prompt, meta["gen_len"], meta["mask_id"], meta["eos_id"],
                 DecodeSettings(model.cfg.block_size, **kw), on_step=rec or on_step)
    return Recorded(*r, rec.step, rec.hidden) if record else r


SETTINGS = [dict(steps_per_block=8), dict(steps_per_block=2), dict(threshold=0.5)]


@pytest.mark.parametrize("which", ["teacher", "student"])
@pytest.mark.parametrize("settings", SETTINGS)
def test_batched_equals_per_row(request, data_dir, which, settings):
    model, meta, prompt = rows_and_model(data_dir, request.getfixturevalue(f"{which}_dir"))
    extra = dict(cache="exact", early_stop=True) if which == "student" else {}
    out, nfe = run(model, meta, prompt, **settings, **extra)
    for i in range(len(prompt)):
        o, n = run(model, meta, prompt[i:i + 1], **settings, **extra)
        assert torch.equal(o[0], out[i]) and n.item() == nfe[i].item()


@pytest.mark.parametrize("settings", SETTINGS)
def test_student_cached_equals_uncached(data_dir, student_dir, settings):
    model, meta, prompt = rows_and_model(data_dir, student_dir)
    a, nfe_a = run(model, meta, prompt, cache="exact", **settings)
    b, nfe_b = run(model, meta, prompt, cache="none", **settings)
    assert torch.equal(a, b) and torch.equal(nfe_a, nfe_b)


def test_ar_cached_equals_uncached_and_greedy(data_dir, ar_dir):
    model, meta, prompt = rows_and_model(data_dir, ar_dir)
    a, nfe = run(model, meta, prompt, steps_per_block=1, cache="exact")
    b, _ = run(model, meta, prompt, steps_per_block=1, cache="none")
    assert torch.equal(a, b) and (nfe == meta["gen_len"]).all()
    # greedy next-token decoding, written out directly
    x = torch.cat([prompt, torch.full((len(prompt), meta["gen_len"]), meta["mask_id"])], 1)
    P = meta["prompt_len"]
    for p in range(P, x.size(1)):
        logits = model(x[:, :p + 1])[:, -2]
        logits[:, meta["mask_id"]] = NEG
        x[:, p] = logits.argmax(-1)
    assert torch.equal(a, x[:, P:])


def test_bidirectional_model_refuses_the_cache(data_dir, teacher_dir):
    model, meta, prompt = rows_and_model(data_dir, teacher_dir)
    with pytest.raises(CDLMError, match="no exact cache"):
        run(model, meta, prompt, steps_per_block=8, cache="exact")


def test_early_stop_fills_eos_and_saves_steps(data_dir, student_dir):
    model, meta, prompt = rows_and_model(data_dir, student_dir, n=16)
    eos = meta["eos_id"]
    a, nfe_a = run(model, meta, prompt, steps_per_block=8, cache="exact", early_stop=True)
    b, nfe_b = run(model, meta, prompt, steps_per_block=8, cache="exact", early_stop=False)
    assert (nfe_a <= nfe_b).all()
    for ra, rb, n in zip(a.tolist(), b.tolist(), nfe_a.tolist()):
        if eos in ra:
            first = ra.index(eos)
            end = (first // 8 + 1) * 8  # the block holding the first EOS was decoded in full
            assert ra[:end] == rb[:end] and all(t == eos for t in ra[end:])
            assert n == end  # one token per step, and no step after that block
        else:
            assert ra == rb


@pytest.mark.parametrize("which", ["teacher", "student"])
def test_infilling_takes_no_step_in_a_given_block_and_stops_at_a_given_eos(request, data_dir, which):
    """A block given whole costs no pass; an EOS given in a block ends that row's answer there (early
    stop), whether the block was given or decoded; batched equals per row."""
    model, ckpt = load_model(os.path.join(request.getfixturevalue(f"{which}_dir"), "ckpt.pt"))
    meta, st = ckpt["data_meta"], DecodeSettings(**ckpt["sampling"])
    st.early_stop, P, bs, M, E = True, meta["prompt_len"], st.block_size, meta["mask_id"], meta["eos_id"]
    rows = torch.as_tensor(load_split(data_dir, "test", meta)[:3].astype("int64"))
    init = rows[:, P:].clone()
    init[:, bs:2 * bs] = M  # block 1 to decode in every row; the rest given
    init[0, 2] = E  # row 0: an EOS in its given block 0
    init[1, bs + 1] = E  # row 1: an EOS in block 1, which it decodes
    out, nfe = generate(model, rows[:, :P], meta["gen_len"], M, E, st, init=init.clone())
    assert torch.equal(out[0, :bs], init[0, :bs]) and (out[0, bs:] == E).all() and nfe[0] == 0  # ends with its block
    assert (out[1, 2 * bs:] == E).all() and out[1, bs + 1] == E and 1 <= nfe[1] <= bs
    after = E if (out[2, bs:2 * bs] == E).any() else init[2, 2 * bs:]  # what follows the block it decodes
    assert torch.equal(out[2, :bs], init[2, :bs]) and (out[2, 2 * bs:] == after).all()
    assert (out[:, bs:2 * bs] != M).all() and (nfe[1:] >= 1).all() and (nfe <= bs).all()
    for r in range(3):
        one = generate(model, rows[r:r + 1, :P], meta["gen_len"], M, E, st, init=init[r:r + 1].clone())
        assert torch.equal(one.tokens[0], out[r]) and one.nfe[0] == nfe[r]


def test_threshold_progress_stays_in_current_block(data_dir, student_dir):
    model, meta, prompt = rows_and_model(data_dir, student_dir, n=4)
    mask_id, bs = meta["mask_id"], model.cfg.block_size
    states = []

    def on_step(ev):  # the whole batch's answers after each step (rows that finished keep theirs)
        ans = states[-1].clone() if states else torch.full((len(prompt), meta["gen_len"]), mask_id)
        ans[ev.rows] = ev.tokens
        states.append(ans)
    out, nfe = run(model, meta, prompt, threshold=0.9, cache="exact", on_step=on_step)
    prev = torch.full_like(states[0], mask_id)
    for ans in states:
        newly = (prev == mask_id) & (ans != mask_id)  # (B, L)
        for r in range(len(ans)):
            cols = newly[r].nonzero().flatten().tolist()
            if cols:  # all in one block, and only once everything before that block is final
                assert cols[0] // bs == cols[-1] // bs
                assert not (ans[r, :cols[0] // bs * bs] == mask_id).any()
        assert newly.any(1).sum() >= 1  # some row made progress
        prev = ans
    assert (out != mask_id).all()
    assert (nfe <= meta["gen_len"]).all() and (nfe >= meta["gen_len"] // bs).all()


def test_rows_whose_block_is_final_sit_out_its_later_steps(ref_data):
    """Every row runs a block's first step; a later step runs exactly the rows with masked positions
    left in the block (each finalizes something), their cache rows gathered; each row's answer and
    NFE are what it decodes alone (the reference student: a tiny one takes a block in lockstep)."""
    model, meta, prompt = rows_and_model(ref_data, os.path.join(ROOT, "ref", "arithmetic", "student"), n=16)
    mask_id, bs = meta["mask_id"], model.cfg.block_size
    last, sat_out = {}, 0

    def on_step(ev):
        nonlocal sat_out
        cols = slice(ev.block * bs, (ev.block + 1) * bs)
        if ev.block == last.get("block"):  # a later step: the rows that had masked positions left
            assert torch.equal(ev.rows, last["open"])
            sat_out += last["rows"] - len(ev.rows)
        else:
            last.update(block=ev.block, rows=len(ev.rows))
        assert ev.out.picked.any(1).all()  # every row that ran finalized a token
        last["open"] = ev.rows[(ev.tokens[:, cols] == mask_id).any(1)]
    out, nfe = run(model, meta, prompt, threshold=0.9, cache="exact", on_step=on_step)
    assert sat_out > 0  # some rows sat out (else this test checks nothing)
    for i in range(len(prompt)):
        o, n = run(model, meta, prompt[i:i + 1], threshold=0.9, cache="exact")
        assert torch.equal(o[0], out[i]) and n.item() == nfe[i].item()


@pytest.mark.parametrize("role,settings", [("teacher", dict(threshold=0.9, cache="prefix")),
                                           ("teacher", dict(threshold=0.9, cache="dual", early_stop=True)),
                                           ("student", dict(threshold=0.9, cache="exact", early_stop=True, infill=True))])
def test_rows_sitting_out_keep_every_cache_exact_per_row(ref_data, role, settings):
    """With rows sitting out of a block's later steps, the approximate caches (refreshed at each
    block, read by the later steps) and the exact one under infilling give each row what it decodes
    alone."""
    model, _ = load_model(os.path.join(ROOT, "ref", "arithmetic", role, "ckpt.pt"))
    meta = load_meta(ref_data)
    rows = torch.as_tensor(load_split(ref_data, "test", meta)[:12].astype("int64"))
    prompt, st, init = rows[:, :meta["prompt_len"]], {k: v for k, v in settings.items() if k != "infill"}, None
    if settings.get("infill"):  # the worked answers with a stretch to decode, given whole elsewhere
        init = rows[:, meta["prompt_len"]:].clone()
        init[:, 8:24] = meta["mask_id"]
    sizes = []
    out = generate(model, prompt, meta["gen_len"], meta["mask_id"], meta["eos_id"], DecodeSettings(8, **st), init=init,
                   on_step=lambda ev: sizes.append(len(ev.rows)))
    assert min(sizes) < len(prompt)  # some step ran a part of the batch
    for i in range(len(prompt)):
        one = generate(model, prompt[i:i + 1], meta["gen_len"], meta["mask_id"], meta["eos_id"], DecodeSettings(8, **st),
                       init=None if init is None else init[i:i + 1].clone())
        assert torch.equal(one.tokens[0], out.tokens[i]) and one.nfe.item() == out.nfe[i].item()


def test_a_decode_reuses_the_last_cache_and_reads_none_it_did_not_write(data_dir, student_dir, ar_dir):
    """A decode takes the last decode's KV-cache tensors when its shape is the same (it allocates
    nothing) and reads no position it did not write: filled with large values, the spare gives the
    answers of a fresh cache."""
    for ckpt_dir, kw in ((student_dir, dict(threshold=0.5, cache="exact", early_stop=True)),
                         (ar_dir, dict(steps_per_block=1, cache="exact"))):
        model, meta, prompt = rows_and_model(data_dir, ckpt_dir, n=6)
        fresh = [run(model, meta, p, **kw) for p in (prompt[:3], prompt[3:])]
        spare = [b.attn.cache.spare for b in model.blocks]
        for t in (t for kv in spare for t in kv):
            t.fill_(1e4)
        again = run(model, meta, prompt[3:], **kw)
        assert all(b.attn.cache.spare is kv and b.attn.cache.k is None for b, kv in zip(model.blocks, spare))
        assert torch.equal(again[0], fresh[1][0]) and torch.equal(again[1], fresh[1][1])
        run(model, meta, prompt[:2], **kw)  # another batch size: new tensors
        assert all(b.attn.cache.spare is not kv and len(b.attn.cache.spare[0]) == 2 for b, kv in zip(model.blocks, spare))


def test_recorded_trajectory(data_dir, teacher_dir):
    model, meta, prompt = rows_and_model(data_dir, teacher_dir, n=3)
    out, nfe, step, hidden = run(model, meta, prompt, steps_per_block=8, record=True)
    L, bs = meta["gen_len"], 8
    for r in range(len(out)):  # one token per step, block after block
        assert sorted(step[r].tolist()) == list(range(L))
        assert (step[r].view(-1, bs).min(1).values == torch.arange(0, L, bs)).all()
    logits = model.lm_head(hidden)  # the stored hidden state reproduces the teacher's choice
    logits[..., meta["mask_id"]] = NEG
    assert torch.equal(logits.argmax(-1), out)


def cli(argv, capsys):
    with pytest.raises(CDLMError) as e:
        sample.main(argv)
    return str(e.value)


def test_cli_errors(tmp_path, teacher_dir, capsys):
    for bad in ("1x2=", "5:+3*7", "5:+3*=", "5:+3*7=x", "1:-1+1="):  # not a problem of the task ('-': not of its data)
        assert f"option prompt='{bad}' is not a problem of task arithmetic" in cli([f"--out_dir={teacher_dir}",
                                                                                  f"--prompt={bad}"], capsys)
    assert "more than prompt_len" in cli([f"--out_dir={teacher_dir}", "--prompt=1:" + "+1" * 20 + "="], capsys)
    assert "no checkpoint" in cli([f"--out_dir={tmp_path}", "--prompt=1:+2="], capsys)
    (tmp_path / "ckpt.pt").write_bytes(b"not a checkpoint")
    assert "cannot read checkpoint" in cli([f"--out_dir={tmp_path}", "--prompt=1:+2="], capsys)
    assert "make it again" in cli([f"--out_dir={tmp_path}", "--prompt=1:+2="], capsys)  # and says how
    assert "unknown option 'promt'" in cli([f"--out_dir={teacher_dir}", "--promt=1+2="], capsys)
    assert "num_eval='many'" in cli([f"--out_dir={teacher_dir}", "--num_eval=many"], capsys)
    assert "give --prompt=... or --eval" in cli([f"--out_dir={teacher_dir}"], capsys)


def test_cli_prompt_and_eval(teacher_dir, capsys):
    sample.main([f"--out_dir={teacher_dir}", "--prompt=5:+3*7+2*4+1=", "--show"])
    out = [l for l in capsys.readouterr().out.splitlines() if not l.startswith("note: ")]  # a tiny model's answer
    assert len(out) == 1 + 48 + 1 and out[0].startswith("one line per forward pass") and out[-1].startswith("5:+3*7+2*4+1=") and "forward passes" in out[-1]
    sample.main([f"--out_dir={teacher_dir}", "--eval", "--num_eval=8", "--steps_per_block=4"])
    last = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert last["n"] == 8 and last["nfe"] == 48 / 2 and 0 <= last["whole_acc"] <= last["final_acc"] <= 1


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("settings", [dict(threshold=0.5), dict(steps_per_block=4)])
def test_approximate_caches_refreshed_every_step_equal_uncached(data_dir, teacher_dir, cache, settings):
    """Fast-dLLM's caches on the bidirectional teacher: exact when refreshed at every step, an
    approximation (still a complete, valid answer) when refreshed once per block."""
    model, meta, prompt = rows_and_model(data_dir, teacher_dir, n=6)
    want, nfe = run(model, meta, prompt, early_stop=True, **settings)
    got, nfe2 = run(model, meta, prompt, early_stop=True, cache=cache, refresh="step", **settings)
    assert torch.equal(got, want) and torch.equal(nfe, nfe2)
    approx, _ = run(model, meta, prompt, early_stop=True, cache=cache, **settings)
    assert (approx != meta["mask_id"]).all()
    with torch.no_grad():  # a dual cache's pass inside a block computes only the block
        seen = []
        run(model, meta, prompt, cache=cache, on_step=lambda ev: seen.append((ev.lo, ev.hi)), **settings)
    P, T = meta["prompt_len"], meta["prompt_len"] + meta["gen_len"]
    assert (0, T) in seen and any(hi - lo == (8 if cache == "dual" else T - lo) and lo >= P for lo, hi in seen)


def test_confidence_ranks_near_certain_positions_as_the_model_does():
    """Position 1 is the more confident (a logit gap of 20 against 18), but exp(top - logsumexp) in
    float32 rounds both to 1.0 and the tie goes to position 0; predict keeps the difference."""
    logits = torch.tensor([[[18.0, 0.0, 0.0], [20.0, 0.0, 0.0]]])
    float32_form = (logits.max(-1).values - logits.logsumexp(-1)).exp()
    assert float32_form[0, 0] == float32_form[0, 1] == 1.0
    assert select_tokens(float32_form, "count", 1).tolist() == [[True, False]]  # the wrong order
    pred, conf = predict(logits)
    exact = logits.double().softmax(-1).max(-1).values
    assert pred.tolist() == [[0, 0]] and conf.dtype == torch.float64
    assert torch.allclose(1 - conf, 1 - exact, rtol=1e-6) and conf[0, 1] > conf[0, 0]  # 1 - p to 6 digits
    assert select_tokens(conf, "count", 1).tolist() == [[False, True]]
    # and away from 1 it is the softmax probability as before
    wide = torch.randn(4, 8, 21) * 3
    assert torch.allclose(predict(wide)[1], wide.double().softmax(-1).max(-1).values, rtol=1e-6)


@pytest.mark.compiled
@pytest.mark.parametrize("role", ["teacher", "student", "ar"])
def test_compiled_decoding_equals_eager(data_dir, request, role):
    """The compiled step (forward and denoising step in one graph, runtime.compiled) gives the
    eager sampler's answers, passes and recorded hidden states: every kind of step, a batch that
    shrinks as rows stop early, and a batch of one."""
    model, meta, prompt = rows_and_model(data_dir, request.getfixturevalue(f"{role}_dir"), n=5)
    settings = {"teacher": dict(steps_per_block=4, cache="dual"),  # every block: each kind at many offsets
                "student": dict(threshold=0.9, cache="exact", early_stop=True),
                "ar": dict(steps_per_block=1, cache="exact", early_stop=True)}[role]
    fast = compiled(model)
    for rows in (prompt, prompt[:1]):
        want = run(model, meta, rows, record=True, **settings)
        got = run(fast, meta, rows, record=True, **settings)
        assert torch.equal(got.tokens, want.tokens) and torch.equal(got.nfe, want.nfe)
        assert torch.equal(got.step, want.step) and torch.allclose(got.hidden, want.hidden, atol=1e-5)
    st = DecodeSettings(8, **settings)
    assert step_function(fast, st) is step_function(fast, st) and step_function(model, st) is not step_function(fast, st)
    # another kind of decode compiles a step with a code object of its own: its graphs are checked apart
    other = step_function(fast, DecodeSettings(8, steps_per_block=8))
    code = lambda f: f._torchdynamo_orig_callable.__code__
    assert other is not step_function(fast, st) and code(other) is not code(step_function(fast, st))


def test_settings_edited_after_a_decode_are_checked_again(data_dir, student_dir):
    """generate checks its settings at every decode: the same object edited to a value check()
    refuses is refused at the next decode, and decodes again once restored."""
    model, meta, prompt = rows_and_model(data_dir, student_dir, n=1)
    st = DecodeSettings(**torch.load(os.path.join(student_dir, "ckpt.pt"), weights_only=True)["sampling"])
    args = (model, prompt, meta["gen_len"], meta["mask_id"], meta["eos_id"])
    first = generate(*args, st).tokens
    for field, value in (("threshold", 2.0), ("early_stop", 1), ("threshold", [0.5]), ("cache", "dual")):
        good = getattr(st, field)
        setattr(st, field, value)
        with pytest.raises(CDLMError, match=f"option {field}="):
            generate(*args, st)
        setattr(st, field, good)
    assert torch.equal(generate(*args, st).tokens, first)
