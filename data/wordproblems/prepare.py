"""
Word problems in English in the style of GSM8K, with the reasoning written out, tokenized with a
small BPE trained here (through tiktoken).

    prompt:  Mia has 3 apples. She doubles them. She eats 2. She finds 4 more. She halves them.
             How many apples does Mia have now?
    answer:  *2=6 -2=4 +4=8 /2=4 #4

A person starts with some quantity and then 4 to 7 things happen to it, each told in words (adds
and takes away a few, doubles, triples, halves); the worked solution writes each event as its
operation and the running value after it, and the final answer follows '#'. No value can be read
off the prompt: doubling and adding do not commute, so each value needs the one before it, as in
the arithmetic chain. Finalizing two values of a block in one step means composing two operations
in one forward pass, which naive step cutting asks for and a small model does badly; the words of
the prompt must be read to know which operation comes next. Every event sentence is five tokens,
so the k-th event sits at the same positions in every prompt.

    python data/wordproblems/prepare.py                      # BPE of at most 1024 tokens, trained here
    python data/wordproblems/prepare.py --tokenizer=gpt2     # tiktoken's GPT-2 encoding (needs it cached)
    python data/wordproblems/prepare.py config/cuda_data.py  # longer problems, values up to 999

Every stage then runs on it by changing only the config (config/wordproblems_*.py).
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from configurator import SEED, CDLMError, Choice, Int, Str, check, configure, run_main  # noqa: E402
from data.common import (BPE_PATTERN, Probe, check_problem_count, bpe_tokenizer, get_tokenizer, gpt2_tokenizer, prepared,  # noqa: E402
                         train_bpe, write_task, writing)

config = dict(
    out_dir=Str(os.path.dirname(os.path.abspath(__file__))),
    seed=Int(1337, SEED),
    min_steps=Int(4, "[1, 64]"),      # events in the story (one value each), uniform in [min_steps, max_steps]
    max_steps=Int(7, "[1, 64]"),
    max_value=Int(9, "[4, 100000]"),  # every quantity and running value is in 1..max_value (9: one digit)
    n_train=Int(200_000, "[1, inf)"),
    n_val=Int(1_000, "[1, inf)"),
    n_test=Int(1_000, "[1, inf)"),
    tokenizer=Choice("bpe", "bpe", "gpt2"),  # 'bpe': trained on the generated text | 'gpt2': tiktoken's GPT-2
    vocab_size=Int(1024, "[1, 65000]"),     # the trained BPE's size at most, special tokens not counted
    bpe_sample=Int(20_000, "[1, inf)"),     # training problems the BPE is trained on
    block_size=Int(8, "[1, inf)"),          # gen_len is rounded up to a whole number of diffusion blocks
)

# show.py's prompt when none is given (data.common.example_prompt); RESULTS.md decodes it step by step
EXAMPLE_PROMPT = ("Omar owns 3 apples. He buys 1 more. He doubles them now. He gives away 2. He finds 2 more. He "
                  "halves the pile. He makes 4 more. He loses 4 today. How many apples does Omar have now?")
ANSWER_FORM = (r"([-+*/]\d+=\d+ )+#\d+", "steps such as +4=8, then '#' and the final number")
PROMPT_FORM = (r".+ How many \w+ does \w+ have now\?", "a story ending in 'How many <items> does <name> have now?'")
NAMES = [("Mia", "She"), ("Ben", "He"), ("Ava", "She"), ("Leo", "He"), ("Zoe", "She"), ("Sam", "He"),
         ("Lily", "She"), ("Omar", "He"), ("Nora", "She"), ("Jack", "He"), ("Ella", "She"), ("Ravi", "He")]
ITEMS = ["apples", "marbles", "stickers", "pencils", "cookies", "stamps", "shells", "cards", "coins",
         "beads", "books", "eggs"]
START = ["{n} has {a} {item}.", "{n} owns {a} {item}.", "{n} keeps {a} {item}."]
# each event: (operation written in the answer, its sentences); every sentence is five BPE tokens
# (name, verb, a number or word, a word, '.'), so the k-th event sits at fixed positions
EVENTS = {
    "+": ["{P} buys {d} more.", "{P} finds {d} more.", "{P} gets {d} more.", "{P} makes {d} more."],
    "-": ["{P} gives away {d}.", "{P} loses {d} today.", "{P} sells {d} today.", "{P} eats {d} today."],
    "*2": ["{P} doubles the pile.", "{P} doubles them now."],
    "*3": ["{P} triples the pile.", "{P} triples them now."],
    "/2": ["{P} halves the pile.", "{P} gives half away."],
}


def allowed(v, max_value):
    """The events that keep the running value v in 1..max_value: {op: (largest operand or None)}."""
    out = {}
    if v < max_value:
        out["+"] = min(9, max_value - v)
    if v > 1:
        out["-"] = min(9, v - 1)
    if 2 * v <= max_value:
        out["*2"] = None
    if 3 * v <= max_value:
        out["*3"] = None
    if v % 2 == 0:
        out["/2"] = None
    return out


def make_problem(rng, min_steps, max_steps, max_value=9):
    """One (prompt, answer) pair of strings; every quantity and running value is in 1..max_value."""
    pick = lambda xs: xs[int(rng.integers(len(xs)))]
    name, P = pick(NAMES)
    item = pick(ITEMS)
    v = int(rng.integers(2, max_value + 1))  # a plural to start with
    words, steps = [pick(START).format(n=name, a=v, item=item)], []
    for _ in range(int(rng.integers(min_steps, max_steps + 1))):
        ops = allowed(v, max_value)
        op = pick(sorted(ops))
        if ops[op] is None:  # double, triple, halve
            v = v * int(op[1]) if op[0] == "*" else v // 2
            steps.append(f"{op}={v}")
            words.append(pick(EVENTS[op]).format(P=P))
        else:
            d = int(rng.integers(1, ops[op] + 1))
            v = v + d if op == "+" else v - d
            steps.append(f"{op}{d}={v}")
            words.append(pick(EVENTS[op]).format(P=P, d=d))
    words.append(f"How many {item} does {name} have now?")
    return " ".join(words), " ".join(steps) + f" #{v}"


STALL = 200_000  # repeats in a row after which the problems are taken to be exhausted


def draw_splits(cfg, rng):
    """{split: [(prompt, answer)]}; held-out splits first, and no prompt is in two splits."""
    sizes = {"test": cfg["n_test"], "val": cfg["n_val"], "train": cfg["n_train"]}
    seen, out = set(), {}
    for split, n in sizes.items():
        rows, misses = [], 0
        while len(rows) < n:
            prompt, answer = make_problem(rng, cfg["min_steps"], cfg["max_steps"], cfg["max_value"])
            if prompt in seen:
                misses += 1
                if misses > STALL:  # the settings allow fewer distinct problems than asked for
                    raise CDLMError(f"found only {len(seen)} distinct problems with min_steps={cfg['min_steps']}, "
                                    f"max_steps={cfg['max_steps']}, max_value={cfg['max_value']} ({STALL:,} draws "
                                    f"in a row were repeats); ask for fewer (n_train, n_val, n_test)")
                continue
            misses = 0
            seen.add(prompt)
            rows.append((prompt, answer))
        out[split] = rows
    return out


def prepare(cfg):
    cfg = check(config, cfg)
    if cfg["min_steps"] > cfg["max_steps"]:
        raise CDLMError(f"option min_steps={cfg['min_steps']} is above max_steps={cfg['max_steps']}")
    check_problem_count(cfg)
    if "bpe_sample" in getattr(cfg, "typed", ()) and cfg["bpe_sample"] > cfg["n_train"]:  # a size typed fits the data
        raise CDLMError(f"option bpe_sample={cfg['bpe_sample']}: more than the n_train={cfg['n_train']} training problems")
    with writing(cfg["out_dir"], "wordproblems", cfg):  # one writer, from the look at what is there to the last file
        return _prepare(cfg)


def check_bpe(cfg, alphabet, splits):
    """The BPE starts from the characters of its sample: it cannot be smaller than them, and it
    cannot encode a problem with a character its sample lacks."""
    if cfg["vocab_size"] < len(alphabet):
        raise CDLMError(f"option vocab_size={cfg['vocab_size']}: the BPE starts from the {len(alphabet)} characters of "
                        f"its sample (the first {min(cfg['bpe_sample'], cfg['n_train'])} training problems) and merges up from there; give at least "
                        f"{len(alphabet)}")
    missing = sorted({c for rows in splits.values() for pa in rows for t in pa for c in t} - set(alphabet))
    if missing:
        raise CDLMError(f"option bpe_sample={cfg['bpe_sample']}: the BPE's sample lacks the character(s) "
                        f"{''.join(missing)!r} that other problems use, and it encodes only the characters of its "
                        f"sample; raise it")


def _prepare(cfg):
    meta = prepared(cfg["out_dir"], cfg)
    if meta is not None:
        print(f"{cfg['out_dir']} already holds this dataset; nothing to do")
        return meta, None
    rng = np.random.default_rng(cfg["seed"])
    splits = draw_splits(cfg, rng)
    if cfg["tokenizer"] == "bpe":
        sample = [t for pa in splits["train"][:cfg["bpe_sample"]] for t in pa]
        ranks = train_bpe(sample, cfg["vocab_size"])
        alphabet = "".join(sorted({c for t in sample for c in t}))  # exactly the bytes the BPE has
        check_bpe(cfg, alphabet, splits)
        tok_meta = dict(tokenizer="bpe", bpe=dict(pattern=BPE_PATTERN, alphabet=alphabet,
                                                  ranks=[b.hex() for b in ranks]))
        tok = bpe_tokenizer(tok_meta["bpe"])
    else:
        tok, tok_meta = gpt2_tokenizer(), dict(tokenizer="gpt2")
    return write_task(cfg["out_dir"], "wordproblems", splits, tok, tok_meta, cfg), splits


def infill_probes(tok, meta, prompts, answers):
    """
    The holes of `show.py --view=infill` ({name: data.common.Probe}) for tensors of the test
    problems, where each step of the answer is four tokens (op, d, '=', v: values of one digit).
      value    the value of the middle step: given by the prompt and the left context, so every
               model can fill it;
      operand  the quantity of the middle 'buys 3 more' or 'loses 3 today' event, hidden in the
               answer and in the prompt; the values before and after it tell what it was, so only a
               model that sees the right context can fill it;
      last     the value of the last step when that event adds or takes away, its quantity hidden
               in the prompt and in the answer: the final answer after '#' names it outright.
    """
    text = lambda ids: [tok.decode([i]).strip() for i in ids]
    empty = lambda: torch.zeros_like(answers, dtype=torch.bool)
    hole, h2, h3, hid3, p2, p3, keep2, keep3 = empty(), empty(), empty(), empty(), prompts.clone(), prompts.clone(), [], []
    for r, (p, a) in enumerate(zip(prompts.tolist(), answers.tolist())):
        ans = text(a)
        n = ans.index("#") // 4 if "#" in ans else 0
        if n == 0 or any(ans[4 * k + 2] != "=" for k in range(n)):
            continue  # not the one-digit layout
        hole[r, 4 * (n // 2) + 3] = True
        # the prompt position of event k's quantity: the start sentence, then five tokens per event
        quantity = lambda k: 5 * (k + 1) + text(p[5 * (k + 1):5 * (k + 2)]).index(ans[4 * k + 1])
        adds = [k for k in range(n) if ans[4 * k] in "+-"]
        if adds:
            k = min(adds, key=lambda k: abs(k - n // 2))
            h2[r, 4 * k + 1], p2[r, quantity(k)] = True, meta["mask_id"]
            keep2.append(r)
        if ans[4 * (n - 1)] in "+-":
            k = n - 1
            h3[r, 4 * k + 3], hid3[r, 4 * k + 1], p3[r, quantity(k)] = True, True, meta["mask_id"]
            keep3.append(r)
    rows = hole.any(1)
    return {"value": Probe(prompts[rows], answers[rows], hole[rows]),
            "operand": Probe(p2[keep2], answers[keep2], h2[keep2]),
            "last": Probe(p3[keep3], answers[keep3], h3[keep3], hid3[keep3])}


def main(argv):
    cfg = configure(config, argv)
    meta, splits = prepare(cfg)
    if splits is None:
        return
    prompt, answer = splits["train"][0]
    tok = get_tokenizer(meta)
    print(f"wrote {meta['splits']} to {cfg['out_dir']}: {meta['tokenizer']} vocab={meta['vocab_size']} "
          f"prompt_len={meta['prompt_len']} gen_len={meta['gen_len']}")
    if meta["tokenizer"] == "bpe" and meta["vocab_size"] - 3 < cfg["vocab_size"]:  # 3: pad, mask, eos
        print(f"note: the BPE has {meta['vocab_size'] - 3} tokens, below vocab_size={cfg['vocab_size']}: its sample "
              f"has no more pairs to merge")
    print("example:", prompt, "->", answer)
    print("tokens: ", "|".join(tok.decode([i]) for i in tok.encode(answer)))


if __name__ == "__main__":
    run_main(main)
