"""Word problems: the generator, the trained BPE through tiktoken, and every stage end to end."""
import os
import re

import numpy as np
import pytest

from conftest import TINY_MODEL
from data.common import BPE_PATTERN, bpe_tokenizer, get_tokenizer, load_meta, load_split, score, train_bpe
from configurator import CDLMError
from data.wordproblems.prepare import config, make_problem, prepare


@pytest.fixture(scope="module")
def wp(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("wordproblems"))
    meta, splits = prepare({"out_dir": d, "n_train": 1500, "n_val": 64, "n_test": 64, "bpe_sample": 1500})
    return d, meta, splits


def test_problem_is_a_valid_worked_solution():
    """Each value is the one before it under the event the prompt tells, in the prompt's order."""
    from data.wordproblems.prepare import EVENTS
    rng = np.random.default_rng(0)
    said = [(op, re.compile(re.escape(s).replace(r"\{P\}", "(?:She|He)").replace(r"\{d\}", r"(\d)")))
            for op, ss in EVENTS.items() for s in ss]
    for _ in range(300):
        prompt, answer = make_problem(rng, 4, 7)
        steps, final = answer.split(" #")
        sentences = prompt.split(". ")
        value = int(re.fullmatch(r"\w+ \w+ (\d) \w+", sentences[0]).group(1))  # the starting quantity
        events = sentences[1:-1]
        assert 4 <= len(steps.split(" ")) == len(events) <= 7 and prompt.endswith("have now?")
        for step, sentence in zip(steps.split(" "), events):
            op, d, c = re.fullmatch(r"([+*/-])(\d)=(\d)", step).groups()
            told = [(o, m) for o, rx in said if (m := rx.fullmatch(sentence + "."))]
            assert len(told) == 1 and told[0][0] in (op, op + d), (sentence, step)
            if op in "+-":
                assert told[0][1].group(1) == d  # the quantity the sentence names
            assert op != "/" or value % 2 == 0  # only an even pile is halved
            value = {"+": value + int(d), "-": value - int(d), "*": value * int(d), "/": value // int(d)}[op]
            assert int(c) == value and 1 <= value <= 9
        assert int(final) == value


@pytest.mark.parametrize("max_value", [9, 30])
def test_values_stay_within_max_value(max_value):
    rng = np.random.default_rng(1)
    for _ in range(300):
        prompt, answer = make_problem(rng, 4, 7, max_value)
        values = [int(n) for n in re.findall(r"=(\d+)", answer)]
        assert 1 <= min(values) and max(values) <= max_value


def test_every_event_sentence_is_five_tokens(wp):
    """The k-th event of every prompt sits at the same positions (the tokenizer trained here)."""
    from data.wordproblems.prepare import EVENTS, ITEMS, NAMES, START
    tok = get_tokenizer(wp[1])
    for n, P in NAMES:
        assert all(len(tok.encode(" " + s.format(P=P, d=3))) == 5 for ss in EVENTS.values() for s in ss)
        assert all(len(tok.encode(s.format(n=n, a=3, item=item))) == 5 for s in START for item in ITEMS)


def test_infill_probes_hide_a_value_and_an_operand(wp):
    """The operand probe hides one event's quantity in the prompt and in the answer; the value probe a value."""
    import torch
    from data.wordproblems.prepare import infill_probes
    d, meta, _ = wp
    tok, P = get_tokenizer(meta), meta["prompt_len"]
    rows = torch.as_tensor(load_split(d, "test", meta)[:32].astype("int64"))
    probes = infill_probes(tok, meta, rows[:, :P], rows[:, P:])
    prompts, answers, hole, hidden = probes["operand"]
    assert len(prompts) > 16 and hidden is None
    for p, a, h in zip(prompts.tolist(), answers.tolist(), hole.tolist()):
        j, i = h.index(True), p.index(meta["mask_id"])
        assert sum(h) == 1 and p.count(meta["mask_id"]) == 1
        assert tok.decode([a[j - 1]]).strip() in "+-" and tok.decode([a[j + 1]]) == "="
        told = next(r[:P] for r in rows.tolist() if r[P:] == a and all(x in (y, meta["mask_id"]) for x, y in zip(p, r)))
        assert tok.decode([told[i]]).strip() == tok.decode([a[j]]).strip()  # the same quantity, twice
    for p, a, h in zip(*probes["value"][:3]):
        j = h.tolist().index(True)
        assert h.sum() == 1 and tok.decode([a[j - 1].item()]) == "=" and tok.decode([a[j].item()]).isdigit()
    last = probes["last"]  # the last event's value, its quantity hidden: the '#' after it names it
    assert len(last.prompts) > 0
    for p, a, h, d in zip(*(t.tolist() for t in last)):
        j = h.index(True)
        assert sum(h) == 1 == sum(d) and d.index(True) == j - 2 and p.count(meta["mask_id"]) == 1
        assert tok.decode([a[j + 1]]).strip() == "#" and a[j + 2] == a[j]


def test_train_bpe_hand_computed():
    # 'aaab': pairs aa (2), ab (1) -> merge aa; then (aa, a) and (a, b) tie at 1, broken by the
    # larger bytes -> aaa; then aaab. Ranks are the order of creation.
    ranks = train_bpe(["aaab"], 10, pattern=r"\S+")
    assert ranks == {b"a": 0, b"b": 1, b"aa": 2, b"aaa": 3, b"aaab": 4}
    assert train_bpe(["aaab"], 3, pattern=r"\S+") == {b"a": 0, b"b": 1, b"aa": 2}  # stops at the size


def test_bpe_round_trips_the_generated_text(wp):
    d, meta, splits = wp
    tok = get_tokenizer(load_meta(d))
    assert meta["tokenizer"] == "bpe" and len(tok) == meta["vocab_size"] <= config["vocab_size"].default + 3
    assert {tok.pad_id, tok.mask_id, tok.eos_id} == {len(tok) - 3, len(tok) - 2, len(tok) - 1}
    texts = [t for rows in splits.values() for pa in rows for t in pa]
    for t in texts:
        assert tok.decode(tok.encode(t)) == t
    # the stored rows decode back to the problems, prompt padding and EOS dropped
    P, rows = meta["prompt_len"], load_split(d, "test")
    for (prompt, answer), row in zip(splits["test"], rows):
        assert tok.decode(row[:P]) == prompt and tok.decode(row[P:]) == answer
    # numbers are spelled digit by digit; common words are single tokens
    assert [tok.decode([i]) for i in tok.encode("+5=17 #17")] == ["+", "5", "=", "1", "7", " #", "1", "7"]
    assert len(tok.encode(" apples")) == 1


def test_bpe_refuses_what_it_cannot_encode(wp):
    tok = get_tokenizer(wp[1])
    with pytest.raises(CDLMError, match=r"'é' at position 10 .* not in the tokenizer's alphabet"):
        tok.encode("Mia has 5 éclairs.")
    with pytest.raises(CDLMError, match="special token '<\\|mask\\|>'"):
        tok.encode("Mia has <|mask|> apples.")


def test_bpe_is_saved_with_the_data_and_deterministic(wp, tmp_path):
    d, meta, _ = wp
    meta2, _ = prepare({"out_dir": str(tmp_path), "n_train": 1500, "n_val": 64, "n_test": 64,
                        "bpe_sample": 1500})
    assert meta2["bpe"] == meta["bpe"] and meta["bpe"]["pattern"] == BPE_PATTERN
    for split in ("train", "val", "test"):
        assert open(os.path.join(d, f"{split}.bin"), "rb").read() == (tmp_path / f"{split}.bin").read_bytes()
    tok = bpe_tokenizer(meta["bpe"])  # rebuilt from meta.json alone (as checkpoints do)
    assert tok.encode("Ben has 7 apples.") == get_tokenizer(meta).encode("Ben has 7 apples.")
    prompts = {s: {bytes(r[:meta["prompt_len"]]) for r in load_split(d, s)} for s in ("train", "val", "test")}
    assert not prompts["train"] & prompts["test"] and not prompts["val"] & prompts["test"]


def test_bpe_with_an_alphabet_it_cannot_encode_is_refused(wp):
    bpe = dict(wp[1]["bpe"], alphabet=wp[1]["bpe"]["alphabet"] + "%")
    with pytest.raises(CDLMError, match="alphabet has characters \\['%'\\]"):
        bpe_tokenizer(bpe)


def test_bench_refuses_checkpoints_of_other_data(wp):
    from data.common import same_data
    meta = wp[1]
    assert same_data(meta, dict(meta))
    assert not same_data(meta, dict(meta, bpe=dict(meta["bpe"], ranks=meta["bpe"]["ranks"][:-1])))
    assert not same_data(meta, dict(meta, gen_len=meta["gen_len"] + 8))


def test_gpt2_tokenizer_unavailable_is_a_clear_error(tmp_path, monkeypatch):
    import tiktoken

    def offline(name):
        raise ConnectionError("no network")
    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    with pytest.raises(CDLMError, match="cannot load tiktoken's 'gpt2' encoding .*--tokenizer=bpe"):
        prepare({"out_dir": str(tmp_path), "tokenizer": "gpt2", "n_train": 10, "n_val": 2, "n_test": 2})


def test_same_scorer_interface(wp):
    _, meta, splits = wp
    answers = [a for _, a in splits["test"][:3]]
    assert meta["answer_marker"] == "#"
    assert score(answers, answers, meta["answer_marker"]) == dict(final_acc=[True] * 3, whole_acc=[True] * 3)
    assert score(["+4=7 #7", "+4=8 #8", "+4=7"], ["+5=8 #7"] * 3)["final_acc"] == [True, False, False]


def test_every_stage_runs_on_word_problems(wp, tmp_path):
    """Teacher, collection, student, AR baseline and bench on the word problems, changing only data_dir."""
    from bench import run
    from collect import collect
    from sample import decode_settings, evaluate
    from train import train
    from checkpoint import load_model
    d, meta, splits = wp
    out = {k: str(tmp_path / k) for k in ("teacher", "traj", "student", "ar")}
    base = {**TINY_MODEL, "data_dir": d, "max_iters": 20}
    train({**base, "mode": "dlm", "out_dir": out["teacher"]})
    collect({"teacher_dir": out["teacher"], "out_dir": out["traj"], "n_examples": 32,
             "batch_size": 16, "chunk": 32, "device": "cpu"})
    train({**base, "mode": "cdlm", "init_from": "teacher", "out_dir": out["student"], "teacher_dir": out["teacher"],
           "traj_dirs": [out["traj"]]})
    train({**base, "mode": "ar", "out_dir": out["ar"]})
    model, ckpt = load_model(os.path.join(out["student"], "ckpt.pt"))
    ev = evaluate(model, ckpt["data_meta"], load_split(d, "test")[:16], decode_settings(ckpt, {}), 8)
    assert 0 <= ev.whole_acc <= ev.final_acc <= 1 and 1 <= ev.nfe <= meta["gen_len"]
    assert all(isinstance(p, str) for p in ev.preds)
    report = run({"teacher_dir": out["teacher"], "student_dir": out["student"], "ar_dir": out["ar"],
                  "num_eval": 8, "batch_size": 8, "latency_n": 1, "repeats": 1, "min_s": 0.0, "device": "cpu", "compile": "off",
                  "out_path": str(tmp_path / "bench.json"), "methods": ["cdlm", "ar", "dlm"]})  # one of each role
    assert report["settings"]["gen_len"] == meta["gen_len"] and report["settings"]["data_dir"] == d
    assert report["machine"]["dtype"] == "float32" and report["machine"]["device"] == "cpu"
