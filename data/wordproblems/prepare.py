"""
Word problems in English in the style of GSM8K, with the reasoning written out, tokenized with a
small BPE trained here (through tiktoken).

    prompt:  Ben has 2 books. He loses 1. He buys 2 bags with 3 books each. Mia gives him 1 more.
             How many books does Ben have now?
    answer:  2-1=1. 2*3=6. 1+6=7. 7+1=8. #8

A person starts with some quantity and then 2 to 4 things happen to it; each is one or two
equations of the worked solution (2 to 4 in all), and the final answer follows '#'. As in the
arithmetic task, every value depends on the one before it, so finalizing a whole equation in one
step means composing operations in one forward pass; the words of the prompt must be read to know
which operation comes next.

    python data/wordproblems/prepare.py                      # BPE of at most 1024 tokens, trained here
    python data/wordproblems/prepare.py --tokenizer=gpt2     # tiktoken's GPT-2 encoding (needs it cached)
    python data/wordproblems/prepare.py config/cuda_data.py  # longer problems, values up to 999

Every stage then runs on it by changing only the config (config/wordproblems_*.py).
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from configurator import CDLMError, Choice, Int, Str, check, configure, run_main  # noqa: E402
from data.common import (BPE_PATTERN, check_problem_count, bpe_tokenizer, get_tokenizer, gpt2_tokenizer, prepared,  # noqa: E402
                         train_bpe, write_dataset)
from runtime import check_writable  # noqa: E402

config = dict(
    out_dir=Str(os.path.dirname(os.path.abspath(__file__))),
    seed=Int(1337, "[0, inf)"),
    min_steps=Int(2, "[1, 64]"),      # equations in the worked solution, drawn uniformly in [min_steps, max_steps]
    max_steps=Int(4, "[1, 64]"),
    max_value=Int(9, "[2, 100000]"),  # no quantity or running value exceeds this (9: one-digit arithmetic)
    n_train=Int(200_000, "[1, inf)"),
    n_val=Int(1_000, "[1, inf)"),
    n_test=Int(1_000, "[1, inf)"),
    tokenizer=Choice("bpe", "bpe", "gpt2"),  # 'bpe': trained on the generated text | 'gpt2': tiktoken's GPT-2
    vocab_size=Int(1024, "[1, 65000]"),     # the trained BPE's size at most, special tokens not counted
    bpe_sample=Int(20_000, "[1, inf)"),     # training problems the BPE is trained on
    block_size=Int(8, "[1, inf)"),          # gen_len is rounded up to a whole number of diffusion blocks
)

NAMES = [("Mia", "She", "her"), ("Ben", "He", "him"), ("Ava", "She", "her"), ("Leo", "He", "him"),
         ("Zoe", "She", "her"), ("Sam", "He", "him"), ("Lily", "She", "her"), ("Omar", "He", "him"),
         ("Nora", "She", "her"), ("Jack", "He", "him"), ("Ella", "She", "her"), ("Ravi", "He", "him")]
ITEMS = ["apples", "marbles", "stickers", "pencils", "cookies", "stamps", "shells", "cards", "coins",
         "beads", "books", "eggs"]
CONTAINERS = ["bags", "boxes", "packs", "jars"]
START = ["{n} has {a} {item}.", "{n} starts with {a} {item}.", "{n} owns {a} {item}."]
ADD = ["{P} buys {d} more.", "{P} finds {d} more.", "{o} gives {p} {d} more.", "{P} gets {d} more from {o}."]
SUB = ["{P} gives {d} to {o}.", "{P} loses {d}.", "{P} sells {d}.", "{P} uses {d}."]
MULADD = ["{P} buys {k} {c} with {m} {item} each.", "{P} gets {k} {c} of {m} {item}."]


def make_problem(rng, min_steps, max_steps, max_value=99):
    """One (prompt, answer) pair of strings; every quantity and running value stays <= max_value."""
    pick = lambda xs: xs[int(rng.integers(len(xs)))]
    name, P, p = pick(NAMES)
    other = pick([nm for nm, _, _ in NAMES if nm != name])
    item = pick(ITEMS)
    v = int(rng.integers(2, min(20, max_value) + 1))
    target = int(rng.integers(min_steps, max_steps + 1))
    words, eqs = [pick(START).format(n=name, a=v, item=item)], []
    while len(eqs) < target:
        kind = pick(["add", "sub", "muladd"] if target - len(eqs) >= 2 else ["add", "sub"])
        products = [(k, m) for k in range(2, 6) for m in range(2, 6) if v + k * m <= max_value]
        if kind == "add" and v < max_value:
            d = int(rng.integers(1, min(9, max_value - v) + 1))
            words.append(pick(ADD).format(P=P, p=p, o=other, d=d))
            eqs.append(f"{v}+{d}={v + d}.")
            v += d
        elif kind == "sub" and v >= 1:
            d = int(rng.integers(1, min(9, v) + 1))
            words.append(pick(SUB).format(P=P, o=other, d=d))
            eqs.append(f"{v}-{d}={v - d}.")
            v -= d
        elif kind == "muladd" and products:
            k, m = pick(products)
            words.append(pick(MULADD).format(P=P, k=k, c=pick(CONTAINERS), m=m, item=item))
            eqs += [f"{k}*{m}={k * m}.", f"{v}+{k * m}={v + k * m}."]
            v += k * m
    words.append(f"How many {item} does {name} have now?")
    return " ".join(words), " ".join(eqs) + f" #{v}"


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
    check_writable(cfg["out_dir"], "option out_dir")
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
        tok_meta = dict(tokenizer="bpe", bpe=dict(pattern=BPE_PATTERN, alphabet=alphabet,
                                                  ranks=[b.hex() for b in ranks]))
        tok = bpe_tokenizer(tok_meta["bpe"])
    else:
        tok, tok_meta = gpt2_tokenizer(), dict(tokenizer="gpt2")
    # a problem with a character the BPE sample lacked fails here, naming it
    enc = {s: [(tok.encode(p), tok.encode(a) + [tok.eos_id]) for p, a in rows] for s, rows in splits.items()}
    prompt_len = max(len(p) for rows in enc.values() for p, _ in rows)
    answer_len = max(len(a) for rows in enc.values() for _, a in rows)
    gen_len = -(-answer_len // cfg["block_size"]) * cfg["block_size"]
    dtype = np.uint8 if len(tok) <= 256 else np.uint16 if len(tok) <= 65536 else np.uint32
    arrays = {}
    for split, rows in enc.items():
        arr = np.full((len(rows), prompt_len + gen_len), tok.eos_id, dtype=dtype)
        for i, (p, a) in enumerate(rows):
            arr[i, :prompt_len] = p + [tok.pad_id] * (prompt_len - len(p))
            arr[i, prompt_len:prompt_len + len(a)] = a
        arrays[split] = arr
    meta = dict(**tok_meta, vocab_size=len(tok), pad_id=tok.pad_id, mask_id=tok.mask_id, eos_id=tok.eos_id,
                prompt_len=prompt_len, gen_len=gen_len, dtype=np.dtype(dtype).name,
                splits={s: len(r) for s, r in enc.items()}, answer_marker="#", settings=cfg)
    write_dataset(cfg["out_dir"], arrays, meta)
    return meta, splits


def main(argv):
    cfg = configure(config, argv)
    meta, splits = prepare(cfg)
    if splits is None:
        return
    prompt, answer = splits["train"][0]
    tok = get_tokenizer(meta)
    print(f"wrote {meta['splits']} to {cfg['out_dir']}: {meta['tokenizer']} vocab={meta['vocab_size']} "
          f"prompt_len={meta['prompt_len']} gen_len={meta['gen_len']}")
    print("example:", prompt, "->", answer)
    print("tokens: ", "|".join(tok.decode([i]) for i in tok.encode(answer)))


if __name__ == "__main__":
    run_main(main)
