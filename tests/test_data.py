"""The arithmetic generator, the tokenizer and the scorer."""
import json
import os

import numpy as np
import pytest

from configurator import CDLMError
from data.arithmetic.prepare import make_problem, prepare, worked_solution
from data.common import (CharTokenizer, chance_levels, encode_prompt, final_answer, get_tokenizer, load_meta, load_split,
                         score)


def test_problem_is_a_valid_chain():
    rng = np.random.default_rng(0)
    for _ in range(200):
        prompt, answer = make_problem(rng, 5, 9, "+*-")
        start, ops = prompt[:-1].split(":")
        steps, final = answer.split("#")
        s = int(start)
        assert len(steps.split(",")) == len(ops) // 2
        for i, step in enumerate(steps.split(",")):
            op, v = step.split(">")
            assert op == ops[2 * i:2 * i + 2]  # the operation is copied from the prompt
            s = {"+": s + int(op[1]), "*": s * int(op[1]), "-": s - int(op[1])}[op[0]] % 10
            assert int(v) == s
        assert int(final) == s


def test_worked_solution_hand_computed():
    assert worked_solution(5, [("+", 3), ("*", 7), ("+", 2), ("*", 4)]) == "+3>8,*7>6,+2>8,*4>2#2"
    # the operations do not commute: the same steps in another order give another answer
    assert worked_solution(5, [("*", 7), ("+", 3), ("*", 4), ("+", 2)]) == "*7>5,+3>8,*4>2,+2>4#4"


def test_prepare_is_deterministic_and_splits_are_disjoint(tmp_path):
    cfg = {"n_train": 500, "n_val": 50, "n_test": 50, "max_ops": 6}
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    meta = prepare({**cfg, "out_dir": str(a)})
    prepare({**cfg, "out_dir": str(b)})
    for split in ("train", "val", "test"):
        assert (a / f"{split}.bin").read_bytes() == (b / f"{split}.bin").read_bytes()
    P = meta["prompt_len"]
    prompts = {s: {bytes(r[:P]) for r in load_split(str(a), s)} for s in ("train", "val", "test")}
    assert not prompts["train"] & prompts["test"]
    assert not prompts["train"] & prompts["val"]
    assert not prompts["val"] & prompts["test"]
    assert len(prompts["test"]) == 50  # held-out prompts are unique
    rows = load_split(str(a), "train")
    assert (rows[:, P:] == meta["eos_id"]).any(1).all()  # every answer ends in EOS within gen_len


def test_answers_span_several_blocks_and_vary_in_length(tmp_path):
    meta = prepare({"out_dir": str(tmp_path), "n_train": 1000, "n_val": 10, "n_test": 10})
    rows = load_split(str(tmp_path), "train")
    lengths = (rows[:, meta["prompt_len"]:] != meta["eos_id"]).sum(1)
    assert meta["gen_len"] >= 48 and meta["gen_len"] % 8 == 0
    assert np.mean(lengths > 2 * 8) > 0.5  # most answers span 3 or more blocks of 8
    assert lengths.min() < lengths.max()
    assert lengths.max() < meta["gen_len"]  # room for EOS, and no padded-out gen_len
    assert lengths.max() + 1 > meta["gen_len"] - 8


def test_tokenizer_round_trip_and_bad_characters():
    tok = CharTokenizer("0123456789+*>,#=:")
    text = "5:+3*7=+3>8,*7>6#6"
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode("1+2") + [tok.eos_id] + tok.encode("9")) == "1+2"
    with pytest.raises(CDLMError, match="'x' at position 2"):
        tok.encode("1+x")
    with pytest.raises(CDLMError, match="more than prompt_len"):
        encode_prompt(tok, "1:+2+3=", dict(prompt_len=4))
    assert encode_prompt(tok, "1=", dict(prompt_len=4))[2:] == [tok.pad_id, tok.pad_id]


def test_vocabulary_is_saved_with_the_data(tmp_path):
    prepare({"out_dir": str(tmp_path), "n_train": 10, "n_val": 5, "n_test": 5})
    meta = load_meta(str(tmp_path))
    tok = get_tokenizer(meta)
    assert len(tok) == meta["vocab_size"] and tok.vocab[meta["mask_id"]] == "<mask>"
    assert json.loads((tmp_path / "meta.json").read_text())["chars"] == meta["chars"]
    assert not any(f.endswith(".tmp") for f in os.listdir(tmp_path))


def test_two_scores_final_answer_and_whole_answer():
    assert final_answer("+3>8,*7>6#6") == "6"
    got = score(["+3>8,*7>6#6", "+3>1,*7>2#6", "+3>8,*7>6#7", "+3>8,*7>6", "#"], ["+3>8,*7>6#6"] * 5)
    assert got["final_acc"] == [True, True, False, False, False]  # a wrong worked answer can end right
    assert got["whole_acc"] == [True, False, False, False, False]


def test_chance_levels_are_the_best_constant_guess():
    truth = ["+1>1#1", "+2>2#2", "+3>3#2", "+1>1#1", "*2>2#2"]
    assert chance_levels(truth) == dict(final_acc=3 / 5, whole_acc=2 / 5)  # '2' thrice; '+1>1#1' twice


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(CDLMError, match="prepare.py"):
        load_meta(str(tmp_path))


def test_a_changed_byte_in_a_split_is_refused_where_it_is_read(tmp_path):
    """meta.json stores each split's hash (not part of the data's identity: checkpoints of the same
    settings still match); a split whose bytes changed is refused when read, and prepare.py rewrites it."""
    from configurator import CDLMError
    cfg = {"out_dir": str(tmp_path), "n_train": 200, "n_val": 10, "n_test": 10}
    meta = prepare(cfg)
    good = (tmp_path / "test.bin").read_bytes()
    with open(tmp_path / "test.bin", "r+b") as f:  # one prompt digit changed: still a plausible problem
        f.seek(1)
        f.write(bytes([good[1] ^ 1]))
    with pytest.raises(CDLMError, match=r"test.bin is damaged: it does not hash to the '[0-9a-f]{16}' its meta.json"):
        load_split(str(tmp_path), "test")
    load_split(str(tmp_path), "train")  # the others still read
    assert prepare(cfg)["hashes"] == meta["hashes"] and (tmp_path / "test.bin").read_bytes() == good
