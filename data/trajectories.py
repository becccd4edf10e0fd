"""
The on-disk trajectory set that collect.py writes and train.py reads (CDLM Sec. 4.1):

    {out_dir}/meta.json        the commit record: settings, counts, field shapes, file hashes, the live set-*
    {out_dir}/set-<id>/        a complete set, never changed once committed:
        prompt.bin  (n, prompt_len)       uint8/16  the padded prompt
        tokens.bin  (n, gen_len)          uint8/16  the teacher's finalized answer
        step.bin    (n, gen_len)          int16     the step at which each answer position was finalized
        hidden.bin  (n, gen_len, n_embd)  float16   last hidden state of each position at that step
        truth.bin   (n, gen_len)          uint8/16  the ground-truth answer
        progress.json                     how many rows are written (the set is complete when all are)
    {out_dir}/partial/         the set being written, in chunks, with the same files

A set is written in partial/, renamed to set-<id> when complete, and becomes the live set when
meta.json (written to a temporary file, then renamed) names it. A reader therefore sees the old
complete set or the new complete set, whatever instant a crash hits; a rerun finds what it can
reuse (a complete set not yet committed, or partial chunks with matching settings and sizes) and
removes the rest. A live set found damaged (meta.json corrupt or of the wrong shape, a file missing
or truncated) is collected again by the same rerun: collect.py is the one repair.
"""
import hashlib
import json
import os
import shutil

import numpy as np
import torch

from configurator import CDLMError
from data.common import atomic_write_json, file_hash, is_int, read_json

FIELDS = ("prompt", "tokens", "step", "hidden", "truth")


def set_name(settings):
    """A set's folder name, from everything that decides its content: an edited setting in meta.json
    no longer names its set."""
    return "set-" + hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def example_bytes(specs):
    """Bytes one example takes over all its fields: specs name -> (shape, dtype), shape[0] the examples."""
    return sum(int(np.prod(shape[1:])) * np.dtype(dtype).itemsize for shape, dtype in specs.values())


def field_specs(data_meta, n, n_embd, hidden_dtype):
    """name -> (shape, dtype) of every stored array."""
    tok, P, L = data_meta["dtype"], data_meta["prompt_len"], data_meta["gen_len"]
    return {"prompt": ((n, P), tok), "tokens": ((n, L), tok), "step": ((n, L), "int16"),
            "hidden": ((n, L, n_embd), hidden_dtype), "truth": ((n, L), tok)}


def nbytes(spec):
    shape, dtype = spec
    return int(np.prod(shape)) * np.dtype(dtype).itemsize


def sizes_match(d, specs):
    return all(os.path.isfile(os.path.join(d, f"{k}.bin")) and os.path.getsize(os.path.join(d, f"{k}.bin"))
               == nbytes(s) for k, s in specs.items())


class Writer:
    """Rows of a set in {out_dir}/partial, written in place with plain file I/O: a full disk is an
    OSError with a message, never a SIGBUS from a memory map."""

    def __init__(self, out_dir, specs, settings):
        self.out_dir, self.specs, self.settings = out_dir, specs, settings
        self.dir = os.path.join(out_dir, "partial")

    def resume(self):
        """Rows already written with these settings, or 0 after clearing anything else."""
        prog = os.path.join(self.dir, "progress.json")
        if os.path.isfile(prog):
            try:
                p = read_json(prog, "")
            except CDLMError:
                p = {}
            if progress_ok(p, self.settings) and sizes_match(self.dir, self.specs):
                return p["done"], p["correct"]
            print(f"{self.dir} holds work of other settings or damaged files: starting over")
        remove_set(self.dir)
        os.makedirs(self.dir)
        for k, s in self.specs.items():
            with open(os.path.join(self.dir, f"{k}.bin"), "wb") as f:
                f.truncate(nbytes(s))
        return 0, 0

    def write(self, rows, arrays):
        """Write arrays {field: (r, ...)} at rows rows.start..rows.stop."""
        for k, a in arrays.items():
            shape, dtype = self.specs[k]
            row_bytes = nbytes(((1,) + tuple(shape[1:]), dtype))
            data = np.ascontiguousarray(a, dtype=dtype).tobytes()
            fd = os.open(os.path.join(self.dir, f"{k}.bin"), os.O_WRONLY)
            try:
                written = os.pwrite(fd, data, rows.start * row_bytes)
                if written != len(data):
                    raise OSError(28, "short write (disk full?)")
            finally:
                os.close(fd)

    def checkpoint(self, done, correct):
        """Make the rows so far durable, then record them: progress.json never runs ahead of the data."""
        for k in self.specs:
            fd = os.open(os.path.join(self.dir, f"{k}.bin"), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        atomic_write_json(os.path.join(self.dir, "progress.json"), dict(settings=self.settings, done=done,
                                                                        correct=correct))

    def commit(self, set_id, meta):
        """partial/ becomes set-<id>, then meta.json names it (the commit point), then old sets go."""
        final = os.path.join(self.out_dir, set_id)
        remove_set(final)  # an uncommitted leftover of the same settings
        os.replace(self.dir, final)
        commit(self.out_dir, set_id, meta)


def commit(out_dir, set_id, meta):
    """meta.json names set_id, with each file's hash: a byte changed after the commit is found on load."""
    hashes = {k: file_hash(os.path.join(out_dir, set_id, f"{k}.bin")) for k in FIELDS}
    atomic_write_json(os.path.join(out_dir, "meta.json"), {**meta, "set": set_id, "hashes": hashes})
    remove_stale(out_dir, set_id)


def remove_stale(out_dir, set_id):
    """Sets other than the live one: left by the commit that replaced them."""
    for name in os.listdir(out_dir):
        if name.startswith("set-") and name != set_id:
            try:
                remove_set(os.path.join(out_dir, name))
            except CDLMError as e:  # somebody's files: kept, and the set just committed stands
                print(f"{str(e).split(':')[0]}: left as it is")


SET_FILES = {f"{k}.bin" for k in FIELDS} | {"progress.json", "progress.json.tmp"}


def remove_set(d):
    """Remove a set's folder (set-<id> or partial/) that collect.py wrote; one holding any other file
    is somebody's work: refused, never deleted."""
    if os.path.isdir(d) and not os.path.islink(d):
        other = sorted(set(os.listdir(d)) - SET_FILES)
        if other:
            raise CDLMError(f"{d} holds files collect.py does not write ({', '.join(other[:3])}): move them out "
                            f"of it, then run again")
    shutil.rmtree(d, ignore_errors=True)


def progress_ok(p, settings):
    """A progress.json of these settings whose counts are counts."""
    return isinstance(p, dict) and p.get("settings") == settings and is_int(p.get("done"), 0, settings["n_examples"] + 1) \
        and is_int(p.get("correct"), 0, p["done"] + 1)


REPAIR = "run collect.py again with the options that made it: it collects the set again"


def check_commit(meta, path):
    """The commit record, field by field: a bad one is named with its file and field."""
    def need(ok, field):
        if not ok:
            have = repr(meta.get(field, "missing"))[:60] if isinstance(meta, dict) else "not an object"
            raise CDLMError(f"{path}: field {field} is wrong ({have}); {REPAIR}")
    need(isinstance(meta, dict), "(the whole file)")
    need(isinstance(meta.get("set"), str) and meta["set"].startswith("set-") and os.sep not in meta["set"], "set")
    for field in ("n", "gen_len", "block_size", "prompt_len", "vocab_size", "n_embd"):
        need(is_int(meta.get(field), 1), field)
    st = meta.get("settings")
    need(isinstance(st, dict) and all(isinstance(st.get(k), str) for k in ("teacher_hash", "data")), "settings")
    if set_name(st) != meta["set"]:
        raise CDLMError(f"{path}: field settings is not the one its set {meta['set']} was collected with (that name "
                        f"is their hash): the file was edited; {REPAIR}")
    for field in ("n", "gen_len", "block_size"):  # the settings (hashed into the set's name) say these too
        want = st.get("n_examples" if field == "n" else field, meta[field])
        if meta[field] != want:
            raise CDLMError(f"{path}: field {field} is {meta[field]!r}, but its settings (the set's name) say {want!r}: "
                            f"the file disagrees with itself; {REPAIR}")
    acc = meta.get("teacher_final_acc", 0)
    need(isinstance(acc, (int, float)) and not isinstance(acc, bool) and 0 <= acc <= 1, "teacher_final_acc")
    need(isinstance(meta.get("hashes"), dict) and all(isinstance(meta["hashes"].get(k), str) for k in FIELDS), "hashes")
    n, P, L, C = (meta[k] for k in ("n", "prompt_len", "gen_len", "n_embd"))
    shapes = dict(prompt=[n, P], tokens=[n, L], step=[n, L], hidden=[n, L, C], truth=[n, L])
    f = meta.get("fields")
    need(isinstance(f, dict) and all(isinstance(f.get(k), list) and len(f[k]) == 2
                                     and f[k][1] in ("uint8", "uint16", "int16", "float16", "float32")
                                     for k in FIELDS), "fields")
    each = example_bytes({k: f[k] for k in FIELDS})
    if meta.get("bytes_per_example", each) != each:
        raise CDLMError(f"{path}: field bytes_per_example is {meta['bytes_per_example']!r}, but its fields take {each}: "
                        f"the file disagrees with itself; {REPAIR}")
    for k in FIELDS:  # the shapes against the sizes: an edit of either is named as their disagreement
        if f[k][0] != shapes[k]:
            raise CDLMError(f"{path}: field fields.{k} has shape {f[k][0]}, but fields n, prompt_len, gen_len and "
                            f"n_embd give {shapes[k]}: the file disagrees with itself; {REPAIR}")
    return meta


def committed(out_dir):
    """The meta.json of the live set, or None (no set, or one from an older format)."""
    path = os.path.join(out_dir, "meta.json")
    if not os.path.isfile(path):
        return None
    meta = read_json(path, REPAIR)
    return check_commit(meta, path) if not isinstance(meta, dict) or "set" in meta else None


def reuse(out_dir, set_id, settings, specs, meta, replace=False):
    """collect.py's start: 'done' if the live set of out_dir has these settings, after committing a
    complete set a crash left uncommitted; else None (collect). A live set of other settings is
    replaced only with replace (demo.py, collecting a stage again), else refused; a damaged live set
    is said so and collected again; partial chunks with matching settings and sizes are resumed by
    the Writer."""
    live = None
    try:
        live = committed(out_dir)
        if live is not None and live["settings"] == settings:
            load_trajectories(out_dir, vocab_size=meta["vocab_size"])  # refuses damaged files and an edited vocab
            remove_stale(out_dir, live["set"])
            return "done"
    except CDLMError as e:
        print(f"the live set in {out_dir} is damaged ({str(e).split('; ')[0]}): collecting it again")
        if live is not None:  # files of the right sizes and a bad content: not committed again below
            remove_set(os.path.join(out_dir, live["set"]))
        live = None
    if live is not None:
        differ = ", ".join(f"{k}={live['settings'].get(k)!r}" for k in sorted(set(settings) | set(live["settings"]))
                           if settings.get(k) != live["settings"].get(k))
        if not replace:
            raise CDLMError(f"option out_dir={out_dir!r} holds a finished set of {live['n']} trajectories made "
                            f"with other settings ({differ}), which this run would replace: give another "
                            f"--out_dir, or remove that folder")
        print(f"{out_dir}: replacing its set of {live['n']} trajectories made with other settings ({differ})")
    d = os.path.join(out_dir, set_id)
    prog = os.path.join(d, "progress.json")
    if os.path.isfile(prog) and sizes_match(d, specs):
        p = read_json_or_none(prog)  # damaged by the crash: collect again
        if progress_ok(p, settings) and p["done"] == settings["n_examples"]:
            commit(out_dir, set_id, {**meta, "teacher_final_acc": p["correct"] / p["done"]})
            return "done"
    return None


def read_json_or_none(path):
    try:
        return read_json(path, "")
    except CDLMError:
        return None


def load_trajectories(traj_dir, teacher_hash=None, gen_len=None, block_size=None, data=None, vocab_size=None):
    """The live set's arrays as read-only memmaps, and its meta; refuses a set that does not match
    (the teacher's weights hash, the layout, the data's fingerprint and vocabulary) or whose files
    are damaged."""
    meta = committed(traj_dir)
    if meta is None:
        parent = os.path.dirname(os.path.normpath(traj_dir))
        if os.path.basename(os.path.normpath(traj_dir)).startswith("set-") and committed(parent) is not None:
            raise CDLMError(f"{traj_dir} is a set inside the trajectory set folder {parent}: give that folder")
        raise CDLMError(f"no trajectories at {traj_dir} (run `python collect.py` first)")
    specs = {k: (tuple(s), d) for k, (s, d) in meta["fields"].items()}
    have = dict(teacher_hash=meta["settings"]["teacher_hash"], gen_len=meta["gen_len"], block_size=meta["block_size"],
                data=meta["settings"]["data"], vocab_size=meta["vocab_size"])
    for key, want in dict(teacher_hash=teacher_hash, gen_len=gen_len, block_size=block_size, data=data,
                          vocab_size=vocab_size).items():
        if want is not None and have[key] != want:
            what = dict(teacher_hash="another teacher", data="other data").get(key, f"{key}={have[key]}")
            need = dict(teacher_hash="the teacher in use", data="the data in use").get(key, f"{key}={want}")
            raise CDLMError(f"trajectories in {traj_dir} come from {what}, but this run needs {need}: collect them again "
                            f"(collect.py --teacher_dir=<that teacher>{f' --block_size={want}' if key == 'block_size' else ''})")
    d = os.path.join(traj_dir, meta["set"])
    for name in FIELDS:
        f = os.path.join(d, f"{name}.bin")
        if not os.path.isfile(f) or os.path.getsize(f) != nbytes(specs[name]):
            size = f"{os.path.getsize(f)} bytes" if os.path.isfile(f) else "missing"
            raise CDLMError(f"{f} is {size}, not the {nbytes(specs[name])} its meta.json describes; {REPAIR}")
    arrays = {k: np.memmap(os.path.join(d, f"{k}.bin"), dtype=specs[k][1], mode="r", shape=specs[k][0])
              for k in FIELDS}
    check_contents(arrays, meta, d)  # what is wrong, where it can be named; then any other changed byte
    for name in FIELDS:
        f = os.path.join(d, f"{name}.bin")
        if file_hash(f) != meta["hashes"][name]:  # a changed byte inside its range would be trained on in silence
            raise CDLMError(f"{f} is damaged: it does not hash to the {meta['hashes'][name]!r} its meta.json stores; "
                            f"{REPAIR}")
    return arrays, meta


def check_contents(arrays, meta, d):
    """
    What the files hold, checked once when a set is opened, over whole arrays: token ids inside the
    vocabulary; each row's steps those of collect.py's decode (one token a step, block by block, so
    block b's positions are finalized at steps b*block_size .. b*block_size + block_size - 1, each
    step once); finite hidden states. Unchecked, a bad id ends in an IndexError deep in a forward,
    a step out of its block silently empties the distillation and consistency losses, and a NaN
    hidden state makes the loss NaN at some later iteration. One line names the file and the first
    bad row and position.
    """
    def first(name, bad, offset=0):  # the file, and the first bad (row, position) of bad (rows, L)
        r, p = np.unravel_index(np.argmax(bad), bad.shape)
        return os.path.join(d, f"{name}.bin"), offset + int(r), int(p)
    V, L, bs = meta["vocab_size"], meta["gen_len"], meta["block_size"]
    for name in ("prompt", "tokens", "truth"):
        bad = np.asarray(arrays[name]) >= V  # unsigned: never below 0
        if bad.any():
            f, r, p = first(name, bad)
            raise CDLMError(f"{f}: row {r}, position {p} holds token id {arrays[name][r, p]}, outside the "
                            f"vocabulary of {V}; {REPAIR}")
    step = np.asarray(arrays["step"])
    lo = np.arange(L) // bs * bs  # (L,) the first step of each position's block
    bad = (step < lo) | (step >= lo + bs)
    if bad.any():
        f, r, p = first("step", bad)
        raise CDLMError(f"{f}: row {r}, position {p} holds step {step[r, p]}, not one of its block's steps "
                        f"{lo[p]}..{lo[p] + bs - 1}; {REPAIR}")
    bad = np.sort(step, axis=1) != np.arange(L)  # (n, L) each of the gen_len steps finalizes one position
    if bad.any():
        f, r, _ = first("step", bad)
        count = np.bincount(step[r], minlength=L)
        raise CDLMError(f"{f}: row {r} finalizes {count.max()} positions at step {count.argmax()} and none at step "
                        f"{np.argmin(count)}, where the teacher finalizes one a step; {REPAIR}")
    h = arrays["hidden"]
    rows = max(1, 2 ** 22 // h[0].size)  # a few MB at a time
    for i in range(0, len(h), rows):
        bad = ~np.isfinite(h[i:i + rows]).all(axis=2)  # (rows, L)
        if bad.any():
            f, r, p = first("hidden", bad, i)
            raise CDLMError(f"{f}: row {r}, position {p} holds a hidden state that is not finite (NaN or inf); "
                            f"{REPAIR}")


class TrajectorySets:
    """Several sets of one teacher (e.g. one per temperature) as one indexable training set."""

    def __init__(self, sets, ids=None):
        self.sets = sets
        self.ids = ids  # each set's id (its folder in the trajectory directory): what a student records
        self.starts = np.cumsum([0] + [len(a["tokens"]) for a in sets])
        self.n = int(self.starts[-1])

    def batch(self, idx, device):
        """Rows idx (sorted, global) as tensors: token fields int64, hidden float32."""
        parts = []
        for a, lo, hi in zip(self.sets, self.starts[:-1], self.starts[1:]):
            local = idx[(idx >= lo) & (idx < hi)] - lo
            parts.append({k: a[k][local] for k in FIELDS})
        out = {k: np.concatenate([p[k] for p in parts]) for k in FIELDS}
        return {k: torch.as_tensor(v.astype(np.float32 if k == "hidden" else np.int64), device=device)
                for k, v in out.items()}


def load_trajectory_sets(dirs, teacher_hash, gen_len, block_size, data=None, vocab_size=None):
    """Each set of dirs, opened and checked; a set given twice (the same folder however written, or a
    copy of one set) is refused: its trajectories would count twice."""
    real = [os.path.realpath(d) for d in dirs]
    for i, r in enumerate(real):
        if r in real[:i]:
            raise CDLMError(f"option traj_dirs: {dirs[i]!r} is {dirs[real.index(r)]!r} again: give each trajectory "
                            f"set once (its trajectories would count twice)")
    loaded = [load_trajectories(d, teacher_hash, gen_len, block_size, data, vocab_size) for d in dirs]
    ids = [meta["set"] for _, meta in loaded]
    for i, s in enumerate(ids):
        if s in ids[:i]:
            raise CDLMError(f"option traj_dirs: {dirs[i]!r} holds the same set ({s}) as {dirs[ids.index(s)]!r}: give "
                            f"each trajectory set once (its trajectories would count twice)")
    for j, (_, b) in enumerate(loaded):  # collect.py decodes the first n_examples problems of the train split
        for i, (_, a) in enumerate(loaded[:j]):
            sa, sb = a["settings"], b["settings"]
            same_draws = sa.get("temperature") == sb.get("temperature") == 0 or \
                (sa.get("temperature"), sa.get("seed")) == (sb.get("temperature"), sb.get("seed"))  # greedy, or the same noise
            if (sa["teacher_hash"], sa["data"]) == (sb["teacher_hash"], sb["data"]) and same_draws:
                raise CDLMError(f"option traj_dirs: {dirs[i]!r} and {dirs[j]!r} hold the same teacher's decoding of "
                                f"the same first {min(a['n'], b['n'])} problems (collect.py takes the first n_examples "
                                f"of the train split): they would count twice; give the larger set alone")
    return TrajectorySets([arrays for arrays, _ in loaded], ids)


def live_set_ids(dirs):
    """The id of the live set in each trajectory directory (None where there is none)."""
    return [(committed(d) or {}).get("set") for d in dirs]
