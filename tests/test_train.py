"""The objectives on hand-computed cases, the schedule, checkpoints and resume."""
import math
import os

import pytest
import torch

from model import read_checkpoint
from train import (ar_loss, config, consistency_loss, diffusion_loss, distillation_loss, get_lr, kl_loss,
                   noise_answers, trajectory_states)


def test_diffusion_loss_hand_computed():
    logits = torch.zeros(1, 3, 2)  # uniform over 2 tokens: cross-entropy log 2 everywhere
    x0 = torch.tensor([[0, 1, 0]])
    masked = torch.tensor([[False, True, True]])
    t = torch.tensor([0.5])
    # (log2 + log2) / t / gen_len, gen_len = 2
    assert diffusion_loss(logits, x0, masked, t, 2).item() == pytest.approx(2 * math.log(2))
    # only masked positions count: a confident wrong guess at an unmasked position changes nothing
    logits[0, 0] = torch.tensor([-10.0, 10.0])
    assert diffusion_loss(logits, x0, masked, t, 2).item() == pytest.approx(2 * math.log(2))


def test_noise_keeps_prompt_clean_and_masks_about_t():
    x = torch.randint(3, 9, (4000, 12))
    xt, masked, t = noise_answers(x, 5, 1, eps=1e-3, generator=torch.Generator().manual_seed(0))
    assert not masked[:, :5].any() and torch.equal(xt[:, :5], x[:, :5])
    assert torch.equal(xt[masked], torch.ones(int(masked.sum()), dtype=torch.long))
    assert ((t >= 1e-3) & (t <= 1)).all()
    assert masked[:, 5:].float().mean().item() == pytest.approx(t.mean().item(), abs=0.02)


def test_ar_loss_counts_answer_up_to_first_eos():
    eos = 2
    x = torch.tensor([[5, 6, 7, eos, eos]])  # prompt_len 2: targets 7 and the first EOS count
    logits = torch.zeros(1, 5, 8)
    base = ar_loss(logits, x, 2, eos).item()
    assert base == pytest.approx(math.log(8))
    logits[0, 3, 0] = 50.0  # position 3 predicts the second EOS: must not count
    logits[0, 0, 0] = 50.0  # position 0 predicts a prompt token: must not count
    assert ar_loss(logits, x, 2, eos).item() == pytest.approx(base)
    logits[0, 2, 0] = 50.0  # position 2 predicts the first EOS: counts
    assert ar_loss(logits, x, 2, eos).item() > base + 1


def test_kl_hand_computed_and_denominator():
    p = torch.log(torch.tensor([[[0.5, 0.5], [0.9, 0.1]]]))  # target logits
    q = torch.log(torch.tensor([[[0.25, 0.75], [0.1, 0.9]]]))  # model logits
    kl0 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kl_loss(p, q, torch.tensor([[True, False]])).item() == pytest.approx(kl0, rel=1e-5)
    kl1 = 0.9 * math.log(9) + 0.1 * math.log(1 / 9)
    assert kl_loss(p, q, torch.tensor([[True, True]])).item() == pytest.approx((kl0 + kl1) / 2, rel=1e-5)
    assert kl_loss(p, q, torch.tensor([[False, False]])).item() == 0.0
    # forward KL(target || model), not the reverse
    assert kl_loss(q, p, torch.tensor([[True, False]])).item() != pytest.approx(kl0, rel=1e-3)


def test_distillation_and_consistency_positions_and_gradients():
    student = torch.randn(1, 4, 5, requires_grad=True)
    other = torch.randn(1, 4, 5, requires_grad=True)
    newly = torch.tensor([[False, True, False, False]])
    still = torch.tensor([[False, False, True, True]])
    d = distillation_loss(student, other, newly)
    assert d.item() == pytest.approx(kl_loss(other, student, newly).item())
    c = consistency_loss(student, other, still)
    c.backward()
    assert other.grad is None  # the y* target is under stop-gradient
    assert student.grad[0, :2].abs().sum() == 0 and student.grad[0, 2:].abs().sum() > 0


def test_trajectory_states_follow_the_finalization_order():
    # two blocks of 4; block 1 was finalized in the order of positions 6, 4, 7, 5 (steps 4..7)
    step = torch.tensor([[2, 0, 3, 1, 5, 7, 4, 6]])
    vis, vis_star, in_block = trajectory_states(step, torch.tensor([1]), torch.tensor([1]), torch.tensor([3]), 4)
    assert vis.tolist() == [[True] * 4 + [False, False, True, False]]
    assert vis_star.tolist() == [[True] * 4 + [True, False, True, True]]
    assert in_block.tolist() == [[False] * 4 + [True] * 4]
    vis, vis_star, _ = trajectory_states(step, torch.tensor([0]), torch.tensor([0]), torch.tensor([4]), 4)
    assert not vis.any() and vis_star.tolist() == [[True] * 4 + [False] * 4]


def test_lr_schedule():
    cfg = {**config, "learning_rate": 1.0, "min_lr": 0.1, "warmup_iters": 10, "max_iters": 110}
    assert get_lr(0, cfg) < get_lr(5, cfg) < get_lr(9, cfg) <= 1.0
    assert get_lr(10, cfg) == pytest.approx(1.0)
    assert get_lr(60, cfg) == pytest.approx(0.55)
    assert get_lr(110, cfg) == pytest.approx(0.1)


def test_checkpoint_round_trip_and_resume(tmp_path, data_dir):
    from tests.conftest import train_tiny
    out = str(tmp_path / "run")
    train_tiny(out, data_dir, mode="dlm", max_iters=10, eval_interval=5)
    ckpt = torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)
    assert ckpt["iter_num"] == 10 and ckpt["model_config"]["attn"] == "bidirectional"
    assert ckpt["data_meta"]["mask_id"] == 1 and ckpt["config"]["max_iters"] == 10
    assert not os.path.exists(os.path.join(out, "ckpt.pt.tmp"))
    train_tiny(out, data_dir, mode="dlm", max_iters=15, eval_interval=5, init_from="resume")
    ckpt2 = read_checkpoint(os.path.join(out, "ckpt.pt"))
    assert ckpt2["iter_num"] == 15
    steps = {int(s["step"]) for s in ckpt2["optimizer"]["state"].values()}
    assert steps == {15}  # the optimizer continued, it did not restart
    assert any(not torch.equal(ckpt["model"][k], ckpt2["model"][k]) for k in ckpt["model"])
