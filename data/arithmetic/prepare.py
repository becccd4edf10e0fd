"""
Synthetic arithmetic with worked solutions: a chain of operations modulo 10.

    prompt:  5:+3*7+2*4=
    answer:  +3>8,*7>6,+2>8,*4>2#2

Start from a digit, apply each operation (add or multiply, modulo 10) in turn, and write the value
after every step; the final answer follows '#'. Each value is a small table lookup given the one
before it, so one token per step is easy. But adds and multiplies do not commute, so a value
cannot be read off the prompt without the values before it: a model that finalizes two values of
the same block in one step must compose two operations in one forward pass, which a small model
does badly. That serial dependency between answer tokens is what naive step cutting breaks. CDLM's
student gets around it: distilled toward the teacher's later, better-informed states, it proposes
a value confidently even while the value before it is still masked, so it finalizes most blocks
whole in one or two steps (see `python show.py --view=confidence`).

    python data/arithmetic/prepare.py                 # default: 5-9 operations
    python data/arithmetic/prepare.py --max_ops=6     # difficulty knobs: min_ops, max_ops, ops
"""
import os
import re
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from configurator import SEED, CDLMError, Int, Str, check, configure, run_main  # noqa: E402
from data.common import CharTokenizer, Probe, check_problem_count, prepared, whole_blocks, write_task, writing  # noqa: E402

config = dict(
    out_dir=Str(os.path.dirname(os.path.abspath(__file__))),
    seed=Int(1337, SEED),
    min_ops=Int(5, "[1, 30]"),        # operations per problem, drawn uniformly in [min_ops, max_ops]
    max_ops=Int(9, "[1, 30]"),
    ops=Str("+*"),                    # which operations appear ('+', '*', '-')
    n_train=Int(200_000, "[1, inf)"),
    n_val=Int(1_000, "[1, inf)"),
    n_test=Int(1_000, "[1, inf)"),
    block_size=Int(8, "[1, inf)"),    # gen_len is rounded up to a whole number of diffusion blocks
)

CHARS = "0123456789+*->,#=:"
EXAMPLE_PROMPT = "5:+3*7+2*4+1="  # show.py's prompt when none is given (data.common.example_prompt)
ANSWER_FORM = (r"[-+*]\d>\d(,[-+*]\d>\d)*#\d", "steps such as +3>8, then '#' and the final digit")
APPLY = {"+": lambda s, d: (s + d) % 10, "*": lambda s, d: (s * d) % 10, "-": lambda s, d: (s - d) % 10}


def PROMPT_FORM(settings):  # noqa: N802 (a task's form, here made from the data's own operations)
    """The prompts of data drawn with `settings`: a start digit, ':', its operations, '='."""
    ops = settings.get("ops", "+*")
    return (rf"\d:([{re.escape(ops)}]\d)+=", f"a start digit, ':', operations of {ops!r} such as {ops[0]}3, and '=' "
                                              f"(5:{ops[0]}3{ops[-1]}7=)")


def worked_solution(start, steps):
    """The scratchpad for a start digit and a list of (op, digit): the value after each step."""
    out, s = [], start
    for op, d in steps:
        s = APPLY[op](s, d)
        out.append(f"{op}{d}>{s}")
    return ",".join(out) + f"#{s}"


def make_problem(rng, min_ops, max_ops, ops):
    """One (prompt, answer) pair of strings."""
    n = int(rng.integers(min_ops, max_ops + 1))
    start = int(rng.integers(0, 10))
    steps = [(ops[int(rng.integers(len(ops)))], int(rng.integers(1, 10))) for _ in range(n)]
    prompt = f"{start}:" + "".join(f"{op}{d}" for op, d in steps) + "="
    return prompt, worked_solution(start, steps)


def lengths(max_ops, block_size):
    """The longest prompt, and the longest answer (EOS included) rounded up to whole blocks."""
    prompt_len = 2 + 2 * max_ops + 1
    answer_len = 5 * max_ops - 1 + 2 + 1  # 'op d > v ,' per step, '#v', EOS
    gen_len = whole_blocks(answer_len, block_size)
    return prompt_len, gen_len


def distinct_prompts(min_ops, max_ops, ops):
    """How many different prompts exist: a start digit, then each operation and digit 1..9."""
    return sum(10 * (9 * len(ops)) ** n for n in range(min_ops, max_ops + 1))


def prepare(cfg):
    cfg = check(config, cfg)
    if cfg["min_ops"] > cfg["max_ops"]:
        raise CDLMError(f"option min_ops={cfg['min_ops']} is above max_ops={cfg['max_ops']}")
    if set(cfg["ops"]) - set(APPLY) or len(set(cfg["ops"])) != len(cfg["ops"]):
        raise CDLMError(f"option ops={cfg['ops']!r}: expected distinct characters from {''.join(APPLY)!r}")
    # held-out prompts are distinct and never in train: ask for at most half of what exists, so
    # the draws below end quickly and train keeps problems of its own
    total, held_out = distinct_prompts(cfg["min_ops"], cfg["max_ops"], cfg["ops"]), cfg["n_val"] + cfg["n_test"]
    if held_out > total // 2:
        raise CDLMError(f"n_val + n_test = {held_out} distinct problems, but only {total} exist with "
                        f"min_ops={cfg['min_ops']}, max_ops={cfg['max_ops']}, ops={cfg['ops']!r}; "
                        f"ask for at most {total // 2} or allow more operations")
    check_problem_count(cfg)
    with writing(cfg["out_dir"], "arithmetic", cfg):  # one writer, from the look at what is there to the last file
        return _prepare(cfg)


def _prepare(cfg):
    meta = prepared(cfg["out_dir"], cfg)
    if meta is not None:
        print(f"{cfg['out_dir']} already holds this dataset; nothing to do")
        return meta
    rng = np.random.default_rng(cfg["seed"])
    sizes = {"train": cfg["n_train"], "val": cfg["n_val"], "test": cfg["n_test"]}
    # Held-out splits first, then train; a prompt seen in an earlier split is redrawn, so no
    # problem is in two splits.
    seen, splits = set(), {}
    for split in ("test", "val", "train"):
        rows, used = [], set()
        while len(rows) < sizes[split]:
            p, a = make_problem(rng, cfg["min_ops"], cfg["max_ops"], cfg["ops"])
            if p in seen or (split != "train" and p in used):
                continue
            used.add(p)
            rows.append((p, a))
        seen |= used
        splits[split] = rows
    prompt_len, gen_len = lengths(cfg["max_ops"], cfg["block_size"])  # every row alike, whatever was drawn
    meta = write_task(cfg["out_dir"], "arithmetic", splits, CharTokenizer(CHARS), dict(tokenizer="char", chars=CHARS),
                      cfg, prompt_len, gen_len)
    print(f"wrote {meta['splits']} to {cfg['out_dir']}: prompt_len={meta['prompt_len']} "
          f"gen_len={meta['gen_len']} vocab={meta['vocab_size']}")
    return meta


def infill_probes(tok, meta, prompts, answers):
    """
    The holes of `show.py --view=infill` ({name: data.common.Probe}) for tensors of the test problems.
      value    the value after the middle '>': given by the prompt and the left context, so every
               model can fill it;
      operand  the digit of the middle '+' step, hidden in the answer and in the prompt; the value
               right after it tells what it was (v_k - v_{k-1} mod 10), so only a model that sees
               the right context can fill it, with an inverse operation no ordinary answer needs;
      last     the value of the last step, in the problems whose last step is a '+', with that
               step's digit hidden in the prompt and in the answer: the final answer after '#', to
               its right, names it outright; from the left a guess is right one time in ten.
    """
    texts = [tok.decode(a) for a in answers.tolist()]
    empty = lambda: torch.zeros_like(answers, dtype=torch.bool)
    hole, h2, h3, hid3, p2, p3, keep2, keep3 = empty(), empty(), empty(), empty(), prompts.clone(), prompts.clone(), [], []
    for r, text in enumerate(texts):
        steps = text.split("#")[0].split(",")  # 'od>v' per step, 5 characters with the ','
        hole[r, 5 * (len(steps) // 2) + 3] = True
        adds = [k for k, piece in enumerate(steps) if piece.startswith("+")]
        if adds:
            k = min(adds, key=lambda k: abs(k - len(steps) // 2))
            h2[r, 5 * k + 1], p2[r, 3 + 2 * k] = True, meta["mask_id"]  # the prompt is 'v:' then 'od' per step
            keep2.append(r)
        k = len(steps) - 1
        if steps[k].startswith("+"):
            h3[r, 5 * k + 3], hid3[r, 5 * k + 1], p3[r, 3 + 2 * k] = True, True, meta["mask_id"]
            keep3.append(r)
    return {"value": Probe(prompts, answers, hole),
            "operand": Probe(p2[keep2], answers[keep2], h2[keep2]),
            "last": Probe(p3[keep3], answers[keep3], h3[keep3], hid3[keep3])}


def main(argv):
    cfg = configure(config, argv)
    meta = prepare(cfg)
    tok = CharTokenizer(meta["chars"])
    example = np.fromfile(os.path.join(cfg["out_dir"], "train.bin"), dtype=np.uint8,
                          count=meta["prompt_len"] + meta["gen_len"])
    print("example:", tok.decode(example[:meta["prompt_len"]]), "->",
          tok.decode(example[meta["prompt_len"]:]))


if __name__ == "__main__":
    run_main(main)
