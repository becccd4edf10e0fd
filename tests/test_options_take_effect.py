"""
An option typed takes effect or is refused, and a refusal names the real cause: sizes, options
without effect under another option's value, resumes, the odd checkpoint out, positions in a state.
"""
import os

import pytest
import torch
from conftest import TINY_MODEL, train_tiny

import collect
import sample
import train
from configurator import CDLMError
from data.common import encode_state
from data.trajectories import load_trajectories
from test_hostile import Crash, collect_into, dies_after, refused


def test_sample_refuses_a_batch_above_the_problems_evaluated(teacher_dir):
    s = [f"--out_dir={teacher_dir}", "--eval", "--num_eval=2"]
    refused(sample.main, s + ["--batch_size=3"], "option batch_size=3", "more than the 2 problems evaluated")
    refused(sample.main, s + ["--threshold=0.5", "--threshold=0.9"], "option threshold is given twice")


def test_train_refuses_a_loss_weight_its_reading_has_no_term_for(tmp_path, data_dir, teacher_dir, traj_dir):
    """y_star='completion' has no consistency term: a typed --w_consist would be dropped in silence."""
    st = [f"--data_dir={data_dir}", f"--out_dir={tmp_path / 's'}", "--mode=cdlm", "--init_from=teacher",
          f"--teacher_dir={teacher_dir}", f"--traj_dirs={traj_dir}", "--max_iters=1", "--batch_size=4", "--device=cpu"]
    refused(train.main, st + ["--y_star=completion", "--w_consist=0.7"], "option w_consist=0.7", "y_star='completion'")


def test_a_resume_refuses_a_seed_it_cannot_honour(tmp_path, data_dir):
    """A resumed run restores its random states: another --seed would take no effect, and the new
    checkpoint would record it."""
    out = train_tiny(str(tmp_path / "r"), data_dir, mode="dlm", max_iters=5)
    argv = [f"--data_dir={data_dir}", f"--out_dir={out}", "--init_from=resume", "--max_iters=10",
            *(f"--{k}={v}" for k, v in TINY_MODEL.items())]
    refused(train.main, argv + ["--seed=5"], "cannot resume", "seed=1337")
    train.main(argv)  # the same seed resumes
    assert torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)["iter_num"] == 10


def test_a_resumed_collection_shows_the_teacher_accuracy_over_every_example(tmp_path, teacher_dir, monkeypatch):
    """The progress bar's teacher_acc counts the examples of the run it resumes too (it was the
    prior correct answers over this run's examples alone: above 1)."""
    import tqdm
    out, real_replace = tmp_path / "t", os.replace
    always_right = lambda preds, truth, marker: dict(final_acc=[True] * len(preds))
    monkeypatch.setattr(collect, "score", always_right)
    monkeypatch.setattr("os.replace", dies_after(os.replace, 1))  # dies after the first chunk is recorded
    with pytest.raises(Crash):
        collect_into(out, teacher_dir)
    monkeypatch.setattr("os.replace", real_replace)
    shown, real = [], tqdm.tqdm.set_postfix
    monkeypatch.setattr(tqdm.tqdm, "set_postfix", lambda self, **kw: shown.append(kw) or real(self, **kw))
    collect_into(out, teacher_dir)
    acc = load_trajectories(str(out))[1]["teacher_final_acc"]
    assert acc == 1 and shown and all(s["teacher_acc"] == "1.000" for s in shown)


def test_a_state_names_a_bad_character_by_its_place_in_the_whole_state():
    """A character the tokenizer lacks in --state: its position in the option, not in its run between masks."""
    import show
    from conftest import ROOT
    from data.common import get_tokenizer
    from model import read_checkpoint
    refused(show.main, ["--view=confidence", f"--checkpoints={ROOT}/ref/arithmetic", "--state=__ __"],
            "option state='__ __'", "character ' ' at position 2 is not in the vocabulary")
    meta = read_checkpoint(os.path.join(ROOT, "ref/wordproblems/teacher/ckpt.pt"))["data_meta"]  # a BPE
    with pytest.raises(CDLMError, match=r"option state='\+1=4_ \*2=x': character 'x' at position 9 is not in the "
                                        r"tokenizer's alphabet"):
        encode_state(get_tokenizer(meta), "+1=4_ *2=x", meta["mask_id"], meta["gen_len"])
