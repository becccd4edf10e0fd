"""
A checkpoint on disk: what it holds (CKPT_KEYS), its two hashes (the weights, and what the
checkpoint says of them), an atomic save, and a load that refuses a damaged, edited or
other-kind file in one line naming it, before any model is built from it.
"""
import hashlib
import json
import os
import re

import torch

from configurator import CDLMError
from model import KINDS, ROLES, ModelConfig, Transformer

CKPT_KEYS = ("model_config", "model", "config", "data_meta", "sampling", "iter_num", "weights_hash", "meta_hash")
META_KEYS = ("model_config", "config", "data_meta", "sampling", "teacher_hash")  # what a checkpoint says of its weights


def hash_tensor(h, t):
    """Feed a tensor's dtype and bytes to the hash h (weights_hash, startup.resume_hash)."""
    t = t.detach().cpu().contiguous().reshape(-1)
    h.update(str(t.dtype).encode())
    h.update(t.view(torch.uint8).numpy().tobytes())


def weights_hash(state_dict):
    """A short fingerprint of the weights: trajectories and students record their teacher's."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        h.update(k.encode())
        hash_tensor(h, state_dict[k])
    return h.hexdigest()[:16]


def meta_hash(ckpt):
    """A short fingerprint of what a checkpoint says of its weights (META_KEYS): an edit that keeps
    every shape (the heads, a token's character, the EOS id) would decode wrongly in silence."""
    return hashlib.sha256(json.dumps({k: ckpt.get(k) for k in META_KEYS}, sort_keys=True).encode()).hexdigest()[:16]


def save_checkpoint(ckpt, path):
    ckpt = {**ckpt, "meta_hash": meta_hash(ckpt)}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic: a crash never leaves a half-written ckpt.pt
    except BaseException as e:  # disk full, permissions, Ctrl-C: the previous checkpoint is still whole
        if os.path.lexists(tmp):
            os.remove(tmp)  # and no stray .tmp is left filling the disk
        # torch reports a full disk as a RuntimeError of its zip writer, raised while it handles the OSError
        cause = e if isinstance(e, OSError) else e.__context__ if isinstance(e.__context__, OSError) else None
        if cause is None and not isinstance(e, RuntimeError):
            raise
        why = cause.strerror or str(cause) if cause is not None else f"{type(e).__name__}: {str(e)[:150]}"
        raise CDLMError(f"cannot write checkpoint {path}: {why} (the previous one, if any, is intact)") from None


class OlderCheckpoint(CDLMError):
    """A checkpoint this repo made before meta_hash: refused for use, and kept (startup.finished)."""


def load_failure(e):
    """What torch.load's error says of the file, without torch's advice to load it unsafely
    (weights_only=False runs whatever code a pickle holds: never for a file that failed this)."""
    text = str(e)
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(\n\n|$)", text, re.S)
    if found:
        return f"it holds more than tensors and plain types, or is damaged ({found.group(1).strip()[:100]})"
    return f"{type(e).__name__}: {text.split('. ')[0][:150]}"


def read_checkpoint(path, device="cpu", mode=None, option="out_dir", needs=()):
    """
    The checkpoint dict, or a one-line error naming the file; `mode` requires a kind (dlm/cdlm/ar),
    `needs` more keys (a resume's optimizer and random states). Its mask must be its mode's, and its
    weights and what it says of them (meta_hash) must hash to the hashes stored beside them, and the
    weights fit its model_config: a damaged or edited file is refused, never decoded with silently.
    """
    if not os.path.isfile(path):
        raise CDLMError(f"no checkpoint at {path} (train one first, or check --{option})")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise CDLMError(f"cannot read checkpoint {path}: {load_failure(e)}; make it again (train.py with "
                        f"--init_from=scratch, or =teacher for a student) or give another --{option}")
    if isinstance(ckpt, dict) and [k for k in CKPT_KEYS if k not in ckpt] == ["meta_hash"]:
        raise OlderCheckpoint(f"{path} is a checkpoint of an older version of the repo (no meta_hash): make it again "
                              f"with this one, or give another --{option}")
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in CKPT_KEYS) or not isinstance(ckpt["config"], dict) \
            or not isinstance(ckpt["model"], dict) or not all(torch.is_tensor(t) for t in ckpt["model"].values()) \
            or not isinstance(ckpt["model_config"], dict) or not isinstance(ckpt["sampling"], dict):
        raise CDLMError(f"{path} is not a checkpoint of this version of the repo (needs {', '.join(CKPT_KEYS)})")
    odd = next((k for k, t in ckpt["model"].items() if t.layout != torch.strided or t.is_nested or t.is_meta), None)
    if odd is not None:  # sparse, nested or data-less: no weights a model loads (the hash check would fail on them)
        t = ckpt["model"][odd]
        raise CDLMError(f"{path}: weight {odd} is not a plain tensor (it is "
                        f"{'nested' if t.is_nested else 'on the meta device' if t.is_meta else t.layout}): "
                        f"it is not a checkpoint this repo wrote")
    it, most = ckpt["iter_num"], ckpt["config"].get("max_iters")
    if not (isinstance(it, int) and not isinstance(it, bool) and 0 <= it <= (most if isinstance(most, int) else it)):
        raise CDLMError(f"{path}: its iter_num={it!r} is no iteration of its run (0 to its max_iters): it is not a "
                        f"checkpoint train.py made; copy or train it again")
    have = ckpt["config"].get("mode")
    if not isinstance(have, str) or have not in KINDS:
        raise CDLMError(f"{path}: its config has mode={have!r}, not one of {', '.join(KINDS)}: it is not a checkpoint "
                        f"train.py made; give another --{option}")
    role = next(r for r in ROLES.values() if r.mode == have)
    attn = ckpt["model_config"].get("attn")
    if attn != role.attn:  # an edited mode or mask: the weights are not of the kind the config says
        raise CDLMError(f"{path}: its config has mode={have!r} (the {role.label}) but its model_config has attn={attn!r}, "
                        f"not the {role.label}'s {role.attn!r}: the two disagree; copy or train it again")
    if mode is not None and have != mode:
        raise CDLMError(f"--{option}: {path} holds the {KINDS[have]} ({have}), but this needs the {KINDS[mode]} ({mode})")
    missing = [k for k in needs if ckpt.get(k) is None]
    if missing:
        raise CDLMError(f"{path} holds no {', '.join(missing)} (weights only): it cannot be resumed")
    if weights_hash(ckpt["model"]) != ckpt["weights_hash"]:  # 5 ms for ref/arithmetic/teacher, a fifth of its load
        raise CDLMError(f"{path} is damaged: its weights do not hash to the {ckpt['weights_hash']!r} stored with them; "
                        f"copy or train it again")
    check_fit(ckpt, path)
    if meta_hash(ckpt) != ckpt["meta_hash"]:  # last: the checks above name what an edit broke where they can
        raise CDLMError(f"{path} is damaged or edited: its {', '.join(k for k in META_KEYS if k in ckpt)} do not "
                        f"hash to the {ckpt['meta_hash']!r} stored with them; copy or train it again")
    return ckpt


def check_fit(ckpt, path):
    """The weights are those of the model that the checkpoint's model_config builds, name by name and
    shape by shape: an edited model_config is one line naming the file, not load_state_dict's
    traceback. The model is built on the CPU without drawing from the run's random state."""
    try:
        with torch.random.fork_rng(devices=[]):
            want = {k: tuple(v.shape) for k, v in Transformer(ModelConfig(**ckpt["model_config"])).state_dict().items()}
    except (TypeError, ValueError, RuntimeError) as e:
        raise CDLMError(f"{path}: its model_config builds no model ({type(e).__name__}: {str(e)[:100]}); copy or train "
                        f"it again") from None
    have = {k: tuple(v.shape) for k, v in ckpt["model"].items()}
    if want != have:
        k = next(k for k in sorted(set(want) | set(have)) if want.get(k) != have.get(k))
        why = (f"no {k}" if k not in have else f"{k}, which that model has not" if k not in want else
               f"{k} of shape {list(have[k])}, where that model has {list(want[k])}")
        raise CDLMError(f"{path}: its state dict does not match its model_config (it has {why}); copy or train it again")


def load_model(path, device="cpu", mode=None, option="out_dir"):
    """Rebuild the model from a checkpoint alone; returns (model in eval mode, checkpoint dict)."""
    ckpt = read_checkpoint(path, device, mode, option)
    model = Transformer(ModelConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt
