"""
Shared by every dataset: the tokenizer, the on-disk layout, and the exact-match scorer.

Layout of a prepared dataset directory (written by data/<name>/prepare.py):
  meta.json        vocabulary, special ids, prompt_len, gen_len, split sizes
  {split}.bin      uint8/uint16 matrix (n, prompt_len + gen_len): the prompt padded with PAD on
                   its right to prompt_len, then the answer padded with EOS to gen_len.
Every row has the same layout: the prompt starts at column 0 (so the k-th item of a prompt sits at
the same position in every row, which makes it easy to find) and the answer at column prompt_len
(so the student's block mask is the same for all rows of a batch).
"""
import json
import os

import numpy as np

PAD, MASK, EOS = "<pad>", "<mask>", "<eos>"


class CharTokenizer:
    """One token per character, plus PAD, MASK and EOS (ids 0, 1, 2)."""

    def __init__(self, chars):
        self.vocab = [PAD, MASK, EOS] + list(chars)
        self.stoi = {s: i for i, s in enumerate(self.vocab)}
        self.pad_id, self.mask_id, self.eos_id = 0, 1, 2

    def __len__(self):
        return len(self.vocab)

    def encode(self, text):
        ids = []
        for pos, c in enumerate(text):
            if c not in self.stoi or c in (PAD, MASK, EOS):
                raise ValueError(f"character {c!r} at position {pos} of {text!r} is not in the "
                                 f"vocabulary ({''.join(self.vocab[3:])!r})")
            ids.append(self.stoi[c])
        return ids

    def decode(self, ids, stop_at_eos=True):
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id and stop_at_eos:
                break
            out.append("_" if i == self.mask_id else "" if i == self.pad_id else self.vocab[i]
                       if i < len(self.vocab) else "?")
        return "".join(out)


def load_meta(data_dir):
    path = os.path.join(data_dir, "meta.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: run `python {data_dir}/prepare.py` first")
    with open(path) as f:
        return json.load(f)


def get_tokenizer(meta):
    if meta["tokenizer"] == "char":
        return CharTokenizer(meta["chars"])
    raise ValueError(f"unknown tokenizer kind {meta['tokenizer']!r} in meta.json")


def load_split(data_dir, split, meta=None):
    """The split as a read-only (n, seq_len) memmap."""
    meta = meta or load_meta(data_dir)
    path = os.path.join(data_dir, f"{split}.bin")
    dtype = np.dtype(meta["dtype"])
    n, seq_len = meta["splits"][split], meta["prompt_len"] + meta["gen_len"]
    expected = n * seq_len * dtype.itemsize
    if not os.path.exists(path) or os.path.getsize(path) != expected:
        raise ValueError(f"{path} is missing or has the wrong size (expected {expected} bytes): "
                         f"run `python {data_dir}/prepare.py` again")
    return np.memmap(path, dtype=dtype, mode="r", shape=(n, seq_len))


def encode_prompt(tok, text, prompt_len):
    """Encode a prompt and pad it on the right to prompt_len; clear error if it does not fit."""
    ids = tok.encode(text)
    if len(ids) > prompt_len:
        raise ValueError(f"prompt {text!r} has {len(ids)} tokens, more than prompt_len={prompt_len}")
    return ids + [tok.pad_id] * (prompt_len - len(ids))


def final_answer(text, marker="#"):
    """The final answer of a worked solution: what follows the last marker, or None if absent."""
    if marker not in text:
        return None
    return text.rsplit(marker, 1)[1].strip()


def exact_match(pred_texts, true_texts, marker="#"):
    """Per-example booleans: the final answers are present and equal."""
    out = []
    for p, t in zip(pred_texts, true_texts):
        a = final_answer(p, marker)
        out.append(a is not None and a != "" and a == final_answer(t, marker))
    return out


def atomic_write_bytes(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def atomic_write_json(path, obj):
    atomic_write_bytes(path, json.dumps(obj, indent=1).encode())
