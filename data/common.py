"""
Shared by every dataset: the tokenizer, the on-disk layout, and the two scores of an answer.

Layout of a prepared dataset directory (written by data/<task>/prepare.py through write_task):
  meta.json        the task's name, tokenizer (characters, or a trained BPE's merges), special ids,
                   prompt_len, gen_len, split sizes, the settings that drew the problems
  {split}.bin      uint8/uint16 matrix (n, prompt_len + gen_len): the prompt padded with PAD on
                   its right to prompt_len, then the answer padded with EOS to gen_len.
Every row has the same layout: the prompt starts at column 0 (so the k-th item of a prompt sits at
the same position in every row, which makes it easy to find) and the answer at column prompt_len
(so the student's block mask is the same for all rows of a batch).
"""
import hashlib
import json
import os
import re
from collections import Counter
from contextlib import contextmanager
from typing import NamedTuple, Optional

import numpy as np

from configurator import CDLMError, Str

PAD, MASK, EOS = "<pad>", "<mask>", "<eos>"


class UnknownCharacter(CDLMError):
    """A character a tokenizer cannot encode, at position `pos` of `text`; `known` names what it can."""

    def __init__(self, text, pos, known):
        self.pos, self.known = pos, known
        super().__init__(f"character {text[pos]!r} at position {pos} of {text!r} is not in the {known}")


class CharTokenizer:
    """One token per character, plus PAD, MASK and EOS (ids 0, 1, 2)."""

    def __init__(self, chars):
        self.vocab = [PAD, MASK, EOS] + list(chars)
        self.stoi = {s: i for i, s in enumerate(self.vocab)}
        self.pad_id, self.mask_id, self.eos_id = 0, 1, 2

    def __len__(self):
        return len(self.vocab)

    def encode(self, text):
        try:  # every character known and none of the specials (ids 0-2): the common case, at once
            ids = [self.stoi[c] for c in text]
            if min(ids, default=3) > 2:
                return ids
        except KeyError:
            pass
        ids = []
        for pos, c in enumerate(text):  # else name the first character that is not
            if c not in self.stoi or c in (PAD, MASK, EOS):
                raise UnknownCharacter(text, pos, f"vocabulary ({''.join(self.vocab[3:])!r})")
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


# Pre-tokenization for the trained BPE: words with their leading space, each digit on its own (so a
# number is spelled digit by digit, which is what makes arithmetic learnable), punctuation runs.
BPE_PATTERN = r""" ?[A-Za-z]+| ?[0-9]| ?[^\sA-Za-z0-9]+|\s+"""
BPE_SPECIALS = ("<|pad|>", "<|mask|>", "<|endoftext|>")  # PAD, MASK, EOS; EOS named as in GPT-2


def train_bpe(texts, vocab_size, pattern=BPE_PATTERN):
    """
    Byte-level BPE (Sennrich et al.; GPT-2's byte variant) trained on texts: start from the bytes
    that occur, repeatedly merge the most frequent adjacent pair inside a pre-tokenized piece, stop
    at vocab_size tokens or when no pair is left. Returns tiktoken's mergeable_ranks {bytes: rank}.
    """
    pieces = Counter(m for t in texts for m in re.findall(pattern, t))
    words = Counter({tuple(bytes([b]) for b in p.encode()): c for p, c in pieces.items()})
    ranks = {b: i for i, b in enumerate(sorted({b for w in words for b in w}))}
    while len(ranks) < vocab_size:
        pairs = Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[a, b] += c
        if not pairs:
            break
        a, b = max(pairs, key=lambda ab: (pairs[ab], ab))  # ties broken by the bytes: deterministic
        ranks[a + b] = len(ranks)
        merged = Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] += c
        words = merged
    return ranks


class BPETokenizer:
    """
    A tiktoken.Encoding plus PAD, MASK and EOS special tokens, with CharTokenizer's interface.
    `alphabet` (the characters seen in training) makes encode refuse, with a clear error, text the
    model never saw; None (GPT-2's encoding) accepts any text.
    """

    def __init__(self, enc, alphabet=None):
        self.enc, self.alphabet = enc, None if alphabet is None else set(alphabet)
        self.pad_id, self.mask_id, self.eos_id = (enc.encode_single_token(s) for s in BPE_SPECIALS)

    def __len__(self):
        return self.enc.n_vocab

    def encode(self, text):
        for sp in BPE_SPECIALS:
            if sp in text:
                raise CDLMError(f"text {text!r} contains the special token {sp!r}")
        if self.alphabet is not None and not set(text) <= self.alphabet:
            pos = next(i for i, c in enumerate(text) if c not in self.alphabet)
            raise UnknownCharacter(text, pos, f"tokenizer's alphabet ({''.join(sorted(self.alphabet))!r})")
        return self.enc.encode_ordinary(text)

    def decode(self, ids, stop_at_eos=True):
        out, run = [], []  # run: ordinary ids waiting to be decoded together
        for i in ids:
            i = int(i)
            if i == self.eos_id and stop_at_eos:
                break
            if i in (self.mask_id, self.pad_id, self.eos_id) or i >= self.enc.n_vocab:
                out.append(self.enc.decode(run))
                out.append("_" if i == self.mask_id else "?" if i >= self.enc.n_vocab else "")
                run = []
            else:
                run.append(i)
        out.append(self.enc.decode(run))
        return "".join(out)


def bpe_tokenizer(bpe):
    """The trained tokenizer stored in meta.json: {'pattern', 'ranks' (hex bytes by rank), 'alphabet'}."""
    import tiktoken
    ranks = {bytes.fromhex(h): i for i, h in enumerate(bpe["ranks"])}
    missing = [c for c in bpe["alphabet"] if any(bytes([b]) not in ranks for b in c.encode())]
    if missing:  # tiktoken would panic on them deep inside Rust
        raise CDLMError(f"the BPE's alphabet has characters {missing!r} whose bytes are not tokens")
    n = len(ranks)
    enc = tiktoken.Encoding("cdlm-bpe", pat_str=bpe["pattern"], mergeable_ranks=ranks,
                            special_tokens={s: n + j for j, s in enumerate(BPE_SPECIALS)})
    return BPETokenizer(enc, bpe["alphabet"])


def gpt2_tokenizer():
    """tiktoken's GPT-2 encoding, with PAD and MASK added after its 50257 tokens (EOS is its own)."""
    import tiktoken
    try:
        base = tiktoken.get_encoding("gpt2")
    except Exception as e:  # tiktoken downloads the merges on first use, then caches them
        raise CDLMError(f"cannot load tiktoken's 'gpt2' encoding ({type(e).__name__}): it is downloaded on "
                         f"first use, so it needs a network connection once or a filled TIKTOKEN_CACHE_DIR; "
                         f"use the trained BPE (--tokenizer=bpe) offline") from None
    n = base.n_vocab
    enc = tiktoken.Encoding("gpt2-cdlm", pat_str=base._pat_str, mergeable_ranks=base._mergeable_ranks,
                            special_tokens={BPE_SPECIALS[2]: base.eot_token, BPE_SPECIALS[0]: n,
                                            BPE_SPECIALS[1]: n + 1})
    return BPETokenizer(enc)


def read_json(path, what):
    """A JSON file, or a one-line error naming it."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise CDLMError(f"{path} not found ({what})") from None
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: arrays nested deeper than Python's stack
        raise CDLMError(f"{path} is unreadable or corrupt ({type(e).__name__}: {str(e)[:120]}); {what}") from None


class Each(NamedTuple):
    """In a schema (check_fields): an object of at least `at_least` keys, each matching the regex
    `keys`, each value `value`."""
    value: object
    keys: str = r".+"
    at_least: int = 0


def check_fields(record, schema, path, fix, at=""):
    """
    A JSON record against a schema, or one line naming the file and the field: {field: spec} is an
    object with those fields ('field?' where optional; other fields are allowed), Each(spec) an
    object of any keys, and a configurator Option a value of its type and range (null only where
    the option's default is None, as on a command line). Returns the record.
    """
    where = f"field {at}" if at else "the file"
    if isinstance(schema, (dict, Each)):
        if not isinstance(record, dict):
            raise CDLMError(f"{path}: {where}: expected an object, got {short(record)}; {fix}")
        items = (((k, schema.value) for k in record) if isinstance(schema, Each) else
                 ((k.rstrip("?"), v) for k, v in schema.items() if not (k.endswith("?") and k[:-1] not in record)))
        if isinstance(schema, Each) and len(record) < schema.at_least:
            raise CDLMError(f"{path}: {where}: expected at least {schema.at_least} entry, got none; {fix}")
        for key, spec in items:
            name = f"{at}.{key}" if at else key
            if isinstance(schema, Each) and not re.fullmatch(schema.keys, key):
                raise CDLMError(f"{path}: field {name}: not a key of this record (expected {schema.keys}); {fix}")
            if key not in record:
                raise CDLMError(f"{path}: field {name} is missing; {fix}")
            check_fields(record[key], spec, path, fix, name)
        return record
    if record is None and schema.default is None:
        return record
    value = schema.coerce(record) if not isinstance(record, str) or schema.kind == Str.kind else None
    if value is None or not schema.valid(value):
        raise CDLMError(f"{path}: {where}: expected {schema.describe()}, got {short(record)}; {fix}")
    return record


def short(value):
    return "null" if value is None else "a list" if isinstance(value, list) else repr(value)[:60]


SPLITS = ("train", "val", "test")  # what prepare.py writes; a run trains on the first two, scores on the others


def load_meta(data_dir):
    path = os.path.join(data_dir, "meta.json")
    if not os.path.exists(path) and os.path.isfile(os.path.join(data_dir, "ckpt.pt")):  # not a place to prepare data in
        raise CDLMError(f"{data_dir} holds a checkpoint (ckpt.pt), not prepared data: give the folder prepare.py "
                        f"wrote (data/<task>)")
    return check_meta(read_json(path, f"prepare the data first: python data/<task>/prepare.py --out_dir={data_dir}"),
                      path, f"prepare the data again (python data/<task>/prepare.py --out_dir={data_dir} rewrites it)")


def is_int(v, lo=0, hi=float("inf")):
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v < hi


# every field of a dataset's meta.json (write_task; chars or bpe by tokenizer; hashes by write_dataset)
META_FIELDS = {"task", "tokenizer", "chars", "bpe", "vocab_size", "pad_id", "mask_id", "eos_id", "prompt_len", "gen_len",
               "dtype", "splits", "answer_marker", "settings", "hashes"}


def check_meta(meta, path, fix):
    """A dataset's meta.json, field by field: a bad one is named with its file and field."""
    def need(ok, field):
        if not ok:
            have = repr(meta.get(field, "missing"))[:60] if isinstance(meta, dict) else "not an object"
            raise CDLMError(f"{path}: field {field} is wrong ({have}); {fix}")
    need(isinstance(meta, dict), "(the whole file)")
    for field in sorted(set(meta) - META_FIELDS):  # a field read by nothing would still change the data's identity
        raise CDLMError(f"{path}: field {field} is not one prepare.py writes; {fix}")
    need(meta.get("tokenizer") in ("char", "bpe", "gpt2"), "tokenizer")
    need(meta.get("dtype") in ("uint8", "uint16"), "dtype")
    need(is_int(meta.get("vocab_size"), 4, 256 if meta["dtype"] == "uint8" else 2 ** 16), "vocab_size")
    for field in ("pad_id", "mask_id", "eos_id"):
        need(is_int(meta.get(field), 0, meta["vocab_size"]), field)
    for field in ("prompt_len", "gen_len"):
        need(is_int(meta.get(field), 1), field)
    splits = meta.get("splits")
    need(isinstance(splits, dict) and all(isinstance(k, str) and is_int(n, 1) for k, n in splits.items()), "splits")
    need(isinstance(meta.get("hashes"), dict)
         and all(isinstance(h, str) and re.fullmatch(r"[0-9a-f]{16}", h) for h in meta["hashes"].values()), "hashes")
    if set(meta["hashes"]) != set(splits):  # either may be the edited one: name both
        raise CDLMError(f"{path}: fields splits and hashes name other splits ({', '.join(sorted(splits))} against "
                        f"{', '.join(sorted(meta['hashes']))}); {fix}")
    need(isinstance(meta.get("answer_marker"), str) and meta["answer_marker"] != "", "answer_marker")
    need(isinstance(meta.get("settings", {}), dict), "settings")
    need(isinstance(meta.get("task"), str) and re.fullmatch(r"[a-z_][a-z0-9_]*", meta["task"]), "task")
    settings = meta.get("settings", {})
    options = set(getattr(task_module(meta), "config", {})) if meta["task"] in tasks() else set(settings)
    for key in sorted(set(settings) ^ options):  # prepare.py writes each of its options, no other
        raise CDLMError(f"{path}: field settings.{key} " + ("is missing" if key in options else
                        f"is not an option of data/{meta['task']}/prepare.py") + f"; {fix}")
    if meta["tokenizer"] == "char":
        need(isinstance(meta.get("chars"), str), "chars")
        if len(meta["chars"]) + 3 != meta["vocab_size"]:  # either may be the edited one: name both
            raise CDLMError(f"{path}: fields chars and vocab_size disagree ({len(meta['chars'])} characters and 3 "
                            f"special tokens make {len(meta['chars']) + 3}, not vocab_size={meta['vocab_size']}); {fix}")
    if meta["tokenizer"] == "bpe":
        bpe = meta.get("bpe")
        need(isinstance(bpe, dict) and isinstance(bpe.get("pattern"), str) and isinstance(bpe.get("alphabet"), str)
             and isinstance(bpe.get("ranks"), list) and all(isinstance(h, str) and re.fullmatch(r"([0-9a-f]{2})+", h)
                                                            for h in bpe["ranks"]), "bpe")
    if meta["tokenizer"] != "gpt2":  # the special ids are the tokenizer's (GPT-2's would need its download)
        tok = get_tokenizer(meta)
        for field in ("pad_id", "mask_id", "eos_id"):  # an edited one: a character read as EOS, say
            if meta[field] != getattr(tok, field):
                raise CDLMError(f"{path}: field {field}={meta[field]} is not the {meta['tokenizer']} tokenizer's "
                                f"{field} ({getattr(tok, field)}); {fix}")
    return meta


# what makes two datasets the same token layout; the full fingerprint adds how the problems were drawn
LAYOUT_KEYS = ("tokenizer", "vocab_size", "pad_id", "mask_id", "eos_id", "prompt_len", "gen_len")


def data_identity(meta):
    """Everything that defines a prepared dataset except where it was written: the task's name is a
    label, and the files' hashes (checked as each split is read) follow from the settings."""
    settings = {k: v for k, v in meta.get("settings", {}).items() if k != "out_dir"}
    return {k: v for k, v in meta.items() if k not in ("settings", "task", "hashes")} | {"settings": settings}


def data_fingerprint(meta):
    """A short hash of data_identity."""
    return hashlib.sha256(json.dumps(data_identity(meta), sort_keys=True).encode()).hexdigest()[:16]


def data_differences(a, b):
    """The fields of data_identity where two metas differ, as "field a's value, not b's"."""
    ia, ib = data_identity(a), data_identity(b)
    flat = lambda i: {**{k: v for k, v in i.items() if k != "settings"}, **{f"settings.{k}": v for k, v in i["settings"].items()}}
    fa, fb, gone = flat(ia), flat(ib), object()
    show = lambda v: "missing" if v is gone else short(v)
    return [f"{k} {show(fa.get(k, gone))}, not {show(fb.get(k, gone))}" for k in sorted(set(fa) | set(fb))
            if fa.get(k, gone) != fb.get(k, gone)]


def same_data(a, b):
    """Whether two data metas describe the same prepared problems (seed, sizes, tokenizer, layout)."""
    return data_fingerprint(a) == data_fingerprint(b)


CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this copy of the repository


def checkout_path(path):
    """A data path as a checkpoint stores it: relative to this checkout where it lies inside it, so
    a moved or copied checkout finds its own data (and demo.py reuses its stages); else absolute."""
    a = os.path.abspath(path)
    return os.path.relpath(a, CHECKOUT) if os.path.commonpath([a, CHECKOUT]) == CHECKOUT else a


def from_checkout(path):
    """A data path as a checkpoint stores it (checkout_path), as a path to open: a relative one is under this checkout."""
    return os.path.join(CHECKOUT, path)


def checkpoint_data(ckpt, data_dir=None, what="the checkpoint"):
    """
    The data directory a checkpoint was trained on (checkout_path: a relative one is under this
    checkout), or the override data_dir, with its meta; refused unless it holds the very data the
    checkpoint was trained on.
    """
    d = data_dir or from_checkout(ckpt["config"]["data_dir"])
    if data_dir and os.path.isdir(d) and not os.path.isfile(os.path.join(d, "meta.json")):
        raise CDLMError(f"option data_dir={d!r} holds no prepared data (no meta.json: was prepare.py interrupted?): "
                        f"prepare it again there, or give the data {what} was trained on")
    if data_dir and not os.path.lexists(d):
        raise CDLMError(f"option data_dir={d!r} does not exist: give the folder prepare.py wrote the data {what} was "
                        f"trained on into")
    if not os.path.isfile(os.path.join(d, "meta.json")):
        raise CDLMError(f"the data {what} was trained on is not at {d} (moved?): give it with --data_dir")
    meta = load_meta(d)
    if not same_data(meta, ckpt["data_meta"]):
        raise CDLMError(f"{d} holds other data than {what} was trained on (its meta.json: "
                        f"{'; '.join(data_differences(meta, ckpt['data_meta']))}): give the right one with --data_dir, "
                        f"or prepare it again")
    return d, meta


def stored_data_dirs(cfg, keys):
    """
    Where each checkpoint folder cfg[key] says its data lies, {"the data of option <key>'s
    checkpoint": path}, read from its config without loading its weights: inputs of the run for
    files.refuse_overlap. None where cfg gives data_dir, or where a checkpoint cannot be read (its
    load, later, says why).
    """
    import torch
    out = {}
    for key in keys * (not cfg.get("data_dir")):
        try:
            ckpt = torch.load(os.path.join(cfg[key], "ckpt.pt"), map_location="cpu", weights_only=True, mmap=True)
            out[f"the data of option {key}'s checkpoint"] = from_checkout(ckpt["config"]["data_dir"])
        except Exception:  # anything unreadable is for read_checkpoint to name, with its fix
            pass
    return out


def get_tokenizer(meta):
    if meta["tokenizer"] == "char":
        return CharTokenizer(meta["chars"])
    if meta["tokenizer"] == "bpe":
        return bpe_tokenizer(meta["bpe"])
    if meta["tokenizer"] == "gpt2":
        return gpt2_tokenizer()
    raise CDLMError(f"unknown tokenizer kind {meta['tokenizer']!r} in meta.json")


def load_split(data_dir, split, meta=None):
    """The split as a read-only (n, seq_len) memmap."""
    meta = meta or load_meta(data_dir)
    path = os.path.join(data_dir, f"{split}.bin")
    dtype = np.dtype(meta["dtype"])
    if split not in meta["splits"]:
        raise CDLMError(f"{data_dir} has no split {split!r} (it has {', '.join(meta['splits'])})")
    n, seq_len = meta["splits"][split], meta["prompt_len"] + meta["gen_len"]
    expected = n * seq_len * dtype.itemsize
    if not os.path.exists(path) or os.path.getsize(path) != expected:
        raise CDLMError(f"{path} is missing or has the wrong size (expected {expected} bytes): "
                        f"prepare the data again (data/<task>/prepare.py --out_dir={data_dir})")
    if file_hash(path) != meta["hashes"][split]:  # a changed byte would be trained or scored in silence
        raise CDLMError(f"{path} is damaged: it does not hash to the {meta['hashes'][split]!r} its meta.json "
                        f"stores; prepare the data again (data/<task>/prepare.py --out_dir={data_dir})")
    return np.memmap(path, dtype=dtype, mode="r", shape=(n, seq_len))


_HASHED = {}  # (path, size, mtime) -> hash: a split is hashed once per process, not at every read


def file_hash(path):
    """A file's short sha256 (16 MB of train.bin: about 20 ms)."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHED:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _HASHED[key] = h.hexdigest()[:16]
    return _HASHED[key]


def encode_prompt(tok, text, meta):
    """Encode a prompt and pad it on the right to the data's prompt_len; clear error if it is not of
    the task's form (PROMPT_FORM in data/<task>/prepare.py: an answer to it would be a guess) or
    does not fit."""
    if text is None:  # none given, and the task names no example_prompt
        raise CDLMError("option prompt: none given, and the data's task names no EXAMPLE_PROMPT: give --prompt")
    form = task_form(meta, "PROMPT_FORM")
    if form is not None and not re.fullmatch(form[0], text):
        raise CDLMError(f"option prompt={text!r} is not a problem of task {meta['task']}: expected {form[1]}")
    ids = tok.encode(text)
    if len(ids) > meta["prompt_len"]:
        raise CDLMError(f"prompt {text!r} has {len(ids)} tokens, more than prompt_len={meta['prompt_len']}")
    return ids + [tok.pad_id] * (meta["prompt_len"] - len(ids))


def task_form(meta, name):
    """A task's (regex, what it says) for its prompts or answers (PROMPT_FORM, ANSWER_FORM in
    data/<task>/prepare.py; a function of the data's settings where the form depends on them), or None."""
    form = getattr(task_module(meta), name, None) if meta.get("task") in tasks() else None
    return form(meta.get("settings", {})) if callable(form) else form


def answer_note(meta, text):
    """A note when a decoded answer is not of its task's ANSWER_FORM (a model trained too little, or a
    prompt unlike the problems it learned: fewer steps, a word it never saw), else None."""
    form = task_form(meta, "ANSWER_FORM")
    if form is None or re.fullmatch(form[0], text):
        return None
    return (f"note: this answer is not a worked solution of task {meta['task']} ({form[1]}): a model trained too "
            f"little, or a prompt unlike the problems it learned (their settings: the data's meta.json), gives such answers")


def encode_state(tok, text, mask_id, gen_len, option="state"):
    """A partial answer written as text, '_' for each masked position, as token ids: each run of
    text between masks through the data's own tokenizer (a BPE token may hold several characters).
    The positions after it, up to gen_len, are masked too: not returned."""
    ids, at = [], 0  # at: where the run starts in text
    for k, run in enumerate(text.split("_")):
        try:
            ids += [mask_id] * (k > 0) + (tok.encode(run) if run else [])
        except UnknownCharacter as e:  # named by its place in the whole state, not in its run
            raise CDLMError(f"option {option}={text!r}: character {run[e.pos]!r} at position {at + e.pos} is not in "
                            f"the {e.known}") from None
        except CDLMError as e:
            raise CDLMError(f"option {option}={text!r}: {e}") from None
        at += len(run) + 1
    if len(ids) > gen_len:
        raise CDLMError(f"option {option}={text!r} is {len(ids)} tokens, more than gen_len={gen_len}")
    return ids


def final_answer(text, marker="#"):
    """The final answer of a worked solution: what follows the last marker, or None if absent."""
    if marker not in text:
        return None
    return text.rsplit(marker, 1)[1].strip()


# The two scores of a decoded answer, each a share of problems (RESULTS.md):
#   final_acc  the final answer (the text after the last marker) is present and right: what
#              GSM8K-style benchmarks score; on arithmetic one digit, right by chance 1 time in 10
#   whole_acc  the whole worked answer is right: every token up to EOS, each intermediate value too
METRICS = ("final_acc", "whole_acc")


def score(pred_texts, true_texts, marker="#"):
    """Per-example booleans for each of METRICS: {'final_acc': [...], 'whole_acc': [...]}."""
    final, whole = [], []
    for p, t in zip(pred_texts, true_texts):
        a = final_answer(p, marker)
        final.append(a is not None and a != "" and a == final_answer(t, marker))
        whole.append(p == t)
    return dict(final_acc=final, whole_acc=whole)


def chance_levels(true_texts, marker="#"):
    """
    What a guess scores on these problems, for each of METRICS: the best constant answer (the most
    frequent final answer; the most frequent whole answer). A model must beat these to have learned.
    """
    finals = Counter(final_answer(t, marker) for t in true_texts)
    wholes = Counter(true_texts)
    n = max(1, len(true_texts))
    return dict(final_acc=max(finals.values(), default=0) / n, whole_acc=max(wholes.values(), default=0) / n)


def whole_blocks(n, block_size):
    """n positions rounded up to whole blocks (ints or tensors): where the block holding position
    n - 1 ends."""
    return -(-n // block_size) * block_size


def write_task(out_dir, task, splits, tok, tok_meta, cfg, prompt_len=None, gen_len=None):
    """
    The one writer of a task's dataset: {split: [(prompt, answer)]} strings encoded with `tok` into
    the layout above, with its meta.json (tok_meta: how to rebuild the tokenizer; cfg: the settings
    that drew the problems). prompt_len and gen_len default to the longest prompt and answer (EOS
    included), gen_len rounded up to whole blocks of cfg['block_size']. Returns the meta.
    """
    # a problem with a character the tokenizer lacks fails here, naming it
    enc = {s: [(tok.encode(p), tok.encode(a) + [tok.eos_id]) for p, a in rows] for s, rows in splits.items()}
    prompt_len = prompt_len or max(len(p) for rows in enc.values() for p, _ in rows)
    gen_len = gen_len or whole_blocks(max(len(a) for rows in enc.values() for _, a in rows), cfg["block_size"])
    dtype = np.uint8 if len(tok) <= 256 else np.uint16
    arrays = {}
    for split, rows in enc.items():
        arr = np.full((len(rows), prompt_len + gen_len), tok.eos_id, dtype=dtype)  # answers padded with EOS
        for i, (p, a) in enumerate(rows):
            if len(p) > prompt_len or len(a) > gen_len:
                raise CDLMError(f"a {split} problem of {task} has {len(p)} prompt and {len(a)} answer tokens, more "
                                f"than prompt_len={prompt_len} and gen_len={gen_len}")
            arr[i, :prompt_len] = p + [tok.pad_id] * (prompt_len - len(p))
            arr[i, prompt_len:prompt_len + len(a)] = a
        arrays[split] = arr
    meta = dict(task=task, **tok_meta, vocab_size=len(tok), pad_id=tok.pad_id, mask_id=tok.mask_id, eos_id=tok.eos_id,
                prompt_len=prompt_len, gen_len=gen_len, dtype=np.dtype(dtype).name,
                splits={s: len(r) for s, r in enc.items()}, answer_marker="#", settings=cfg)
    write_dataset(out_dir, arrays, meta)
    return meta


def tasks():
    """Every task of this checkout, {name: its directory}: one per data/<name>/prepare.py (on any
    path of the `data` package)."""
    import data
    return {n: os.path.join(d, n) for d in data.__path__ for n in sorted(os.listdir(d))
            if os.path.isfile(os.path.join(d, n, "prepare.py"))}


class Probe(NamedTuple):
    """One kind of hole of `show.py --view=infill` (a task's infill_probes gives {name: Probe})."""
    prompts: object                   # (n, P) the test prompts, MASK where the probe hides a prompt token
    answers: object                   # (n, L) their true answers
    hole: object                      # (n, L) bool, the scored positions
    hidden: Optional[object] = None   # (n, L) bool, also masked but not scored (None: nothing more)


def task_module(meta):
    """The data/<task>/prepare.py module that made a dataset (its infill probes, its generator)."""
    import importlib
    task = meta["task"]
    if task not in tasks():
        raise CDLMError(f"the data is of task {task!r}, which this checkout has no data/{task}/prepare.py for")
    return importlib.import_module(f"data.{task}.prepare")


def example_prompt(meta):
    """The task's own example prompt (EXAMPLE_PROMPT in data/<task>/prepare.py), or None: show.py's
    --prompt when none is given, so a word problem's checkpoints are not shown an arithmetic prompt."""
    return getattr(task_module(meta), "EXAMPLE_PROMPT", None) if meta.get("task") in tasks() else None


def write_dataset(out_dir, arrays, meta):
    """
    Write {split}.bin for each (n, seq_len) array, then meta.json, as one unit: every .bin is
    written whole (and flushed) under a temporary name first, so a full disk stops before anything
    is replaced; then the old meta.json goes, the .bins are renamed into place and the new meta.json
    comes last. A crash at any instant leaves the old dataset or none (readers are told to prepare
    it), never rows under a meta.json that does not describe them.
    """
    meta_path = os.path.join(out_dir, "meta.json")
    bins = {os.path.join(out_dir, f"{split}.bin"): arr.tobytes() for split, arr in arrays.items()}
    meta["hashes"] = {split: hashlib.sha256(bins[os.path.join(out_dir, f"{split}.bin")]).hexdigest()[:16]
                      for split in arrays}  # the caller's meta gains them: load_split checks each
    try:
        for path, data in bins.items():
            atomic_write_bytes(path + ".new", data)
        if os.path.exists(meta_path):
            os.remove(meta_path)
        for path in bins:
            os.replace(path + ".new", path)
    except OSError as e:
        raise CDLMError(f"cannot write the dataset in {out_dir}: {e.strerror or e}") from None
    finally:
        for path in bins:  # no stray .new beside the dataset, whatever stopped it
            if os.path.exists(path + ".new"):
                os.remove(path + ".new")
    atomic_write_json(meta_path, meta)


@contextmanager
def writing(out_dir, task, cfg):
    """
    prepare.py's hold on out_dir, from the look at what is there to the last file written: the
    one-writer lock every writer takes (files.lock), and only over this task's prepared data
    (check_data_dir), never over another task's or a trajectory set. A dataset already there with
    exactly these settings needs no writer: it is looked at under the readers' shared hold
    (files.reading), so runs reading it (demo.py's seeds side by side) do not refuse the look.
    """
    from files import lock, reading
    check_out_kind(out_dir, "a prepared dataset")  # before lock makes the folder: a refusal leaves none
    if os.path.isdir(out_dir):
        with reading({"out_dir": out_dir}):
            if prepared(out_dir, cfg) is not None:
                yield  # prepare finds it whole and writes nothing
                return
    with lock(out_dir, "option out_dir"):
        check_data_dir(out_dir, task)
        yield


def check_out_kind(out_dir, kind):
    """option out_dir of a writer of `kind` (one of files.holds'): it holds no output of another kind,
    is no task's data folder, and sits inside no dataset or trajectory set (files.refuse_inside)."""
    from files import holds, refuse_inside
    d = os.path.realpath(out_dir)
    have = holds(d) or next((f"the folder of task {t!r}" for t, p in tasks().items() if os.path.realpath(p) == d
                             and kind != "a prepared dataset"), None)
    if have not in (None, kind):
        raise CDLMError(f"option out_dir={out_dir!r} holds {have}: write {kind} elsewhere")
    refuse_inside(out_dir, "option out_dir", kind)


def check_data_dir(out_dir, task):
    """
    A folder prepare.py may write task's data into: new or empty, the task's own data/<task>/, or
    holding nothing but prepared data (meta.json, the .bin splits, their temporary names) of this
    task; a meta.json too damaged to name its task is rewritten. Another task's data or any other
    file is refused (a trajectory set, whose commit record is also a meta.json: check_out_kind).
    """
    try:
        with open(os.path.join(out_dir, "meta.json")) as f:
            record = json.load(f)
    except (OSError, ValueError):
        record = None
    if isinstance(record, dict) and isinstance(record.get("task"), str) and record["task"] != task:
        raise CDLMError(f"option out_dir={out_dir!r} holds the prepared data of task {record['task']!r}, not "
                        f"{task!r}: prepare {task} in another folder")
    owner = next((t for t, d in tasks().items() if os.path.realpath(d) == os.path.realpath(out_dir)), None)
    if owner == task:
        return  # the task's own folder: its prepare.py lives beside the data
    if owner is not None:
        raise CDLMError(f"option out_dir={out_dir!r} is the folder of task {owner!r}: prepare {task} in another folder")
    other = sorted(n for n in os.listdir(out_dir) if not n.startswith(".")
                   and not re.fullmatch(r"meta\.json|\w+\.bin(\.new)?|.+\.tmp", n))
    if other:
        raise CDLMError(f"option out_dir={out_dir!r} holds {other[0]!r}, which is not prepared data: prepare "
                        f"{task} in a new or empty folder, or one holding its data")


def prepared(out_dir, cfg):
    """The meta of a complete dataset in out_dir made with exactly these settings, else None."""
    try:
        meta = load_meta(out_dir)
        if meta.get("settings") != cfg:
            return None
        for split in meta["splits"]:
            load_split(out_dir, split, meta)
        return meta
    except CDLMError:
        return None


def atomic_write_bytes(path, data):
    """Write to a temporary file, flush it to disk, then rename: readers see the old file or the new."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # disk full, permissions: the old file, if any, is still whole
        try:
            os.remove(tmp)  # and no stray .tmp beside it
        except OSError:
            pass
        raise CDLMError(f"cannot write {path}: {e.strerror or e}") from None


def atomic_write_json(path, obj):
    atomic_write_bytes(path, json.dumps(obj, indent=1).encode())


def check_problem_count(cfg, bytes_per_problem=200):
    """Refuse at start-up split sizes whose problems cannot fit in memory (a lower bound: each
    problem is held as Python strings and a row while the splits are drawn)."""
    from runtime import total_memory
    n, have = cfg["n_train"] + cfg["n_val"] + cfg["n_test"], total_memory("cpu")
    if have is not None and n * bytes_per_problem > have:
        raise CDLMError(f"options n_train + n_val + n_test = {n:,} problems need at least "
                        f"{n * bytes_per_problem / 2 ** 30:,.0f} GiB, more than this machine's {have / 2 ** 30:,.0f} GiB: lower them")
