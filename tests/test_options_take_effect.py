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
    from checkpoint import read_checkpoint
    refused(show.main, ["--view=confidence", f"--checkpoints={ROOT}/ref/arithmetic", "--state=__ __"],
            "option state='__ __'", "character ' ' at position 2 is not in the vocabulary")
    meta = read_checkpoint(os.path.join(ROOT, "ref/wordproblems/teacher/ckpt.pt"))["data_meta"]  # a BPE
    with pytest.raises(CDLMError, match=r"option state='\+1=4_ \*2=x': character 'x' at position 9 is not in the "
                                        r"tokenizer's alphabet"):
        encode_state(get_tokenizer(meta), "+1=4_ *2=x", meta["mask_id"], meta["gen_len"])


def test_show_takes_the_tasks_own_prompt_and_names_the_odd_checkpoint_out(capsys):
    """Without --prompt a task's checkpoints are shown its own example; a checkpoint of other data,
    or a teacher another than the student's, is refused naming the option that differs from the rest."""
    import bench
    import show
    from conftest import ROOT
    from configurator import configure
    from data.wordproblems.prepare import EXAMPLE_PROMPT
    ref = lambda task, role="": os.path.join(ROOT, "ref", task, role)
    show.main([f"--checkpoints={ref('wordproblems')}", "--methods=cdlm", "--color=never"])
    assert "+1=4 *2=8 -2=6 +2=8 /2=4 +4=8 -4=4 #4" in capsys.readouterr().out  # Omar's apples, worked out
    from data.common import encode_prompt, example_prompt
    assert example_prompt(dict(task="a task of another checkout")) is None
    with pytest.raises(CDLMError, match="option prompt: none given"):
        encode_prompt(None, None, dict(prompt_len=21))
    arith = [f"--checkpoints={ref('arithmetic')}"]
    refused(show.main, arith + [f"--student_dir={ref('wordproblems', 'student')}", "--methods=cdlm"],
            "--student_dir", "other data than --checkpoints")
    refused(show.main, arith + [f"--student_dir={ref('wordproblems', 'student')}", "--methods=cdlm,dlm",
                                f"--prompt={EXAMPLE_PROMPT}"], "--student_dir", "other data than --teacher_dir")
    refused(show.main, arith + [f"--teacher_dir={ref('wordproblems', 'teacher')}", "--methods=cdlm,dlm"],
            "--teacher_dir", "other data than --student_dir")
    refused(show.main, arith + [f"--teacher_dir={ref('arithmetic', 'teacher_infill')}", "--methods=cdlm,dlm"],
            "--teacher_dir", "is not the teacher", "was distilled from")
    infill = show.role_dirs(configure(show.config, arith + [f"--teacher_dir={ref('arithmetic', 'teacher_infill')}",
                                                            "--view=infill"]))  # its view compares masks
    assert set(bench.load_models(infill, ["dlm", "cdlm", "ar"], "cpu", same_teacher=False)) == {"teacher", "student", "ar"}


def test_the_confidence_view_refuses_its_search_options_beside_a_prompt_or_state(ref_data):
    import show
    from conftest import ROOT
    c = ["--view=confidence", f"--checkpoints={ROOT}/ref/arithmetic"]
    refused(show.main, c + ["--state=+3>8,*7>_", "--num_eval=5"], "option num_eval=5", "--prompt or --state")
    refused(show.main, c + ["--prompt=5:+3*7=", f"--data_dir={ref_data}"], "option data_dir=", "--state")
    refused(show.main, c + [f"--num_eval={10 ** 6}"], f"num_eval={10 ** 6}", "more than the 1000 problems")
