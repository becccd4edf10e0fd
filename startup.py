"""
What a training run (train.py) starts from, each file checked before any work: a student's teacher
and its trajectory sets, and the checkpoint a resumed run continues. A run killed at any point
continues exactly with --init_from=resume: the checkpoint holds every random state and the data
position, and is refused where the run would not continue it exactly. A run that starts afresh
never writes over a finished checkpoint or a reference one.
"""
import hashlib
import os

import torch

from checkpoint import OlderCheckpoint, hash_tensor, read_checkpoint
from configurator import CDLMError
from data.common import data_fingerprint, same_data
from data.trajectories import load_trajectory_sets
from model import KINDS

# what a resumed run must share with the run it continues (the seed: a resume restores that run's
# random states, so another seed would take no effect, and the checkpoint would record it)
SAME_ON_RESUME = ("mode", "block_size", "n_layer", "n_head", "n_embd", "dropout", "lora_rank", "y_star", "dlm_noise",
                  "prompt_noise", "seed")
# what a resume restores beyond the weights: a weights-only checkpoint (as in ref/) cannot be resumed
RESUME_KEYS = ("optimizer", "scaler", "rng", "best_val_loss", "iter_num")


def resume_hash(ckpt):
    """A fingerprint of what a resume restores beyond the weights (RESUME_KEYS and the LoRA state),
    stored beside them as the weights' hash is: one flipped bit in an optimizer moment would
    otherwise continue another run than the one saved, in silence."""
    h = hashlib.sha256()

    def walk(x):
        if torch.is_tensor(x):
            hash_tensor(h, x)
        elif isinstance(x, dict):
            for k in sorted(x, key=repr):
                h.update(repr(k).encode())
                walk(x[k])
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
        else:
            h.update(repr(x).encode())
    for k in (*RESUME_KEYS, "lora_state"):
        walk(ckpt.get(k))
    return h.hexdigest()[:16]


def load_teacher(cfg, meta, device):
    """The student's teacher checkpoint and its trajectory sets, each checked against the data."""
    teacher = read_checkpoint(os.path.join(cfg["teacher_dir"], "ckpt.pt"), device, "dlm", "teacher_dir")
    if not same_data(teacher["data_meta"], meta):
        raise CDLMError(f"the teacher in {cfg['teacher_dir']} was trained on other data than {cfg['data_dir']}")
    return teacher, load_trajectory_sets(cfg["traj_dirs"], teacher["weights_hash"], meta["gen_len"], cfg["block_size"],
                                         data_fingerprint(meta), meta["vocab_size"])


def finished(path):
    """What a fresh start would destroy at path: a finished checkpoint, or a weights-only reference one (as
    in ref/), described; None where there is none, or one unfinished (a killed run) or unreadable."""
    try:
        ckpt = read_checkpoint(path)
    except OlderCheckpoint:  # made by this repo, and perhaps finished: never written over in silence
        return "a checkpoint of an older version of the repo"
    except CDLMError:
        return None
    kind = KINDS[ckpt["config"]["mode"]]
    if ckpt.get("optimizer") is None:
        return f"a weights-only reference checkpoint of the {kind} ({ckpt['iter_num']} iterations)"
    if ckpt["iter_num"] >= ckpt["config"].get("max_iters", ckpt["iter_num"]):
        return f"the finished checkpoint of a {kind} ({ckpt['iter_num']} iterations)"
    return None


def refuse_fresh_start(cfg, replace=False):
    """A run from scratch (or from the teacher) writes its checkpoints into out_dir: over an unfinished or
    damaged one there, never over a finished or a reference one (finished), unless replace (demo.py,
    training a stage again, says why)."""
    path = os.path.join(cfg["out_dir"], "ckpt.pt")
    held = None if cfg["init_from"] == "resume" or replace else finished(path)
    if held:
        raise CDLMError(f"option out_dir={cfg['out_dir']!r} holds {held}, which init_from={cfg['init_from']!r} "
                        f"would write over: give another --out_dir, or remove {path}")


def load_resume(cfg, meta, rt, teacher, traj):
    """The checkpoint a resumed run continues, refused where the run would not continue it exactly."""
    path = os.path.join(cfg["out_dir"], "ckpt.pt")
    try:
        init = read_checkpoint(path, rt.device, cfg["mode"], "out_dir", RESUME_KEYS)
    except CDLMError as e:  # what a rerun can do about it
        if finished(path):  # a reference checkpoint: kept
            raise CDLMError(f"{e}; to start over, give another --out_dir") from None
        raise CDLMError(f"{e}; to start over in {cfg['out_dir']} instead, rerun with --init_from="
                        f"{'teacher' if cfg['mode'] == 'cdlm' else 'scratch'} (it replaces the checkpoint)") from None
    if init.get("resume_hash") != resume_hash(init):
        why = ("holds no hash of its optimizer and random states" if init.get("resume_hash") is None else
               f"is damaged: its optimizer and random states do not hash to the {init['resume_hash']!r} stored with them")
        raise CDLMError(f"{path} {why}: it cannot be resumed exactly; to start over in {cfg['out_dir']}, rerun with "
                        f"--init_from={'teacher' if cfg['mode'] == 'cdlm' else 'scratch'}")
    changed = [k for k in SAME_ON_RESUME if init["config"][k] != cfg[k]]
    if changed or not same_data(init["data_meta"], meta):
        was = ", ".join(f"{k}={init['config'].get(k)!r}" for k in changed) or "other data"
        raise CDLMError(f"cannot resume {path}: it was trained with {was}")
    if teacher is not None and init["teacher_hash"] != teacher["weights_hash"]:
        raise CDLMError(f"cannot resume {path}: it was distilled from another teacher than {cfg['teacher_dir']}")
    if teacher is not None and init["trajectories"] != traj.ids:
        if sorted(init["trajectories"]) == sorted(traj.ids):  # the order draws the batches: another run
            raise CDLMError(f"cannot resume {path}: it was trained on the same trajectory sets in another order "
                            f"(--traj_dirs={','.join(init['config']['traj_dirs'])}): give them in that order")
        raise CDLMError(f"cannot resume {path}: it was trained on the trajectory set(s) {', '.join(init['trajectories'])} "
                        f"(then in {', '.join(init['config']['traj_dirs'])}), not on {', '.join(traj.ids)} (now in "
                        f"{', '.join(cfg['traj_dirs'])})")
    if len(init["rng"]) != rt.world:
        raise CDLMError(f"cannot resume {path} exactly: it ran on {len(init['rng'])} process(es), this on {rt.world}")
    return init
