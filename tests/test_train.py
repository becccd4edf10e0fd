"""The objectives on hand-computed cases, the schedule, checkpoints and resume."""
import math
import os

import pytest
import torch

from checkpoint import read_checkpoint
from configurator import defaults
from model import ModelConfig, Transformer, ar_loss, diffusion_loss, noise_answers, noise_block, noise_sequences
from train import (Y_STARS, States, cdlm_losses, config, consistency_loss, distillation_loss, draw_states, final_after,
                   get_lr, kl_loss)


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


def test_teacher_noise_hits_the_prompt_of_a_share_of_rows_only():
    """prompt_noise: a share of rows noised whole (prompt at the same ratio t); their denominator
    counts the prompt; at share 0 exactly noise_answers, with the same random draws."""
    x = torch.randint(3, 9, (4000, 12))
    g = lambda: torch.Generator().manual_seed(0)
    plain = noise_answers(x, 5, 1, generator=g())
    xt, masked, t, n = noise_sequences(x, 5, 1, 0.0, generator=g())
    assert all(torch.equal(a, b) for a, b in zip((xt, masked, t), plain)) and n == 7
    xt, masked, t, n = noise_sequences(x, 5, 1, 0.25, generator=g())
    assert torch.equal(masked[:, 5:], plain[1][:, 5:]) and torch.equal(t, plain[2])  # answers as before
    hit = masked[:, :5].any(1)
    assert set(n.tolist()) == {7, 12} and (n[hit] == 12).all()  # a row with a masked prompt counts all 12
    assert (n == 12).float().mean().item() == pytest.approx(0.25, abs=0.03)
    prompt_rows = n == 12
    assert masked[prompt_rows, :5].float().mean().item() == pytest.approx(t[prompt_rows].mean().item(), abs=0.03)
    assert torch.equal(xt[masked], torch.ones(int(masked.sum()), dtype=torch.long))


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
    assert kl_loss(q, p, torch.tensor([[True, False]])).item() == pytest.approx(kl0, rel=1e-5)
    kl1 = 0.9 * math.log(9) + 0.1 * math.log(1 / 9)
    assert kl_loss(q, p, torch.tensor([[True, True]])).item() == pytest.approx((kl0 + kl1) / 2, rel=1e-5)
    assert kl_loss(q, p, torch.tensor([[False, False]])).item() == 0.0
    # forward KL(target || model), not the reverse
    assert kl_loss(p, q, torch.tensor([[True, False]])).item() != pytest.approx(kl0, rel=1e-3)


def test_distillation_and_consistency_positions_and_gradients():
    student = torch.randn(1, 4, 5, requires_grad=True)
    other = torch.randn(1, 4, 5, requires_grad=True)
    newly = torch.tensor([[False, True, False, False]])
    still = torch.tensor([[False, False, True, True]])
    d = distillation_loss(student, other, newly)
    assert d.item() == pytest.approx(kl_loss(student, other, newly).item())
    c = consistency_loss(student, other, still)
    c.backward()
    assert other.grad is None  # the y* target is under stop-gradient
    assert student.grad[0, :2].abs().sum() == 0 and student.grad[0, 2:].abs().sum() > 0


# two blocks of 4; block 0 was finalized in the order of positions 1, 3, 0, 2 (steps 0..3), block 1
# in the order 6, 4, 7, 5 (steps 4..7)
STEP = torch.tensor([[2, 0, 3, 1, 5, 7, 4, 6]])


def test_final_after_follows_the_finalization_order():
    f = lambda block, k: final_after(STEP, torch.tensor([block]), torch.tensor([k]), 4)[0].int().tolist()
    assert f(1, 1) == [1, 1, 1, 1, 0, 0, 1, 0]  # block 0 all final, then position 6
    assert f(1, 3) == [1, 1, 1, 1, 1, 0, 1, 1]
    assert f(0, 0) == [0] * 8
    assert f(0, 2) == [0, 1, 0, 1, 0, 0, 0, 0]
    assert f(1, 4) == [1] * 8  # the completion


@pytest.mark.parametrize("y_star", Y_STARS)
def test_draw_states_position_sets(y_star):
    """Every reading's position sets, checked row by row against counts made from the definitions."""
    bs, L = 8, 32
    step = torch.stack([torch.randperm(bs) + b * bs for b in range(L // bs)]).flatten()[None].repeat(4000, 1)
    st = draw_states(step, bs, y_star, torch.Generator().manual_seed(0))
    block = torch.arange(L) // bs
    first_masked = (~st.y).float().argmax(1)  # the block is the one holding y's first masked position
    in_block = block[None] == (first_masked // bs)[:, None]
    k = (st.y & in_block).sum(1)  # tokens of the block final in y: 0..bs-1
    k2 = (st.target & in_block).sum(1)  # in the later state: k+1..bs
    assert (k >= 0).all() and (k < bs).all() and (k2 > k).all() and (k2 <= bs).all()
    assert (st.y <= st.target).all() and not (st.target & (block[None] > (first_masked // bs)[:, None])).any()
    masked_in_y = in_block & ~st.y
    if y_star == "random":
        assert torch.equal(st.distill.sum(1), k2 - k) and torch.equal(st.distill, st.target & ~st.y)
        assert torch.equal(st.consist.sum(1), bs - k2)
        # y* is the block's completion only with probability E[1/(bs-k)] = H_8/8 = 0.34 at bs=8
        assert (k2 == bs).float().mean().item() == pytest.approx(sum(1 / i for i in range(1, 9)) / 8, abs=0.03)
    else:  # distillation on every position of the block still masked in y
        assert torch.equal(st.distill, masked_in_y) and torch.equal(st.distill.sum(1), bs - k)
        if y_star == "literal":  # y* is the completion; still masked there: every later block
            assert (k2 == bs).all()
            assert torch.equal(st.consist, block[None] > (first_masked // bs)[:, None])
        else:
            want = bs - k2 if y_star == "completion_plus" else torch.zeros_like(k)
            assert torch.equal(st.consist.sum(1), want)
            assert (st.consist <= masked_in_y).all()
    if y_star == "random":  # each masked position has one target; in completion_plus some have both
        assert not (st.distill & st.consist).any()


def test_cdlm_losses_on_a_hand_built_trajectory():
    """The three losses against direct, position-by-position computations on hand-picked sets."""
    torch.manual_seed(0)
    P, L, V, C, mask_id = 3, 8, 11, 16, 1
    model = Transformer(ModelConfig(vocab_size=V, seq_len=P + L, prompt_len=P, block_size=4, n_layer=1, n_head=2,
                                    n_embd=C, attn="block_causal")).eval()
    for w in model.parameters():  # sharper than at init, so that the KLs are far from 0
        torch.nn.init.normal_(w, std=0.5)
    batch = dict(prompt=torch.randint(3, V, (2, P)), tokens=torch.randint(3, V, (2, L)),
                 truth=torch.randint(3, V, (2, L)), hidden=torch.randn(2, L, C), step=STEP.repeat(2, 1))
    head = torch.randn(V, C)
    b = lambda rows: torch.tensor(rows, dtype=torch.bool)
    # row 0: block 1 with 1 token final in y (position 6), 3 in the target (6, 4, 7); row 1: block 0, none
    # final in y, 2 in the target (1, 3)
    states = States(y=b([[1, 1, 1, 1, 0, 0, 1, 0], [0] * 8]), target=b([[1, 1, 1, 1, 1, 0, 1, 1], [0, 1, 0, 1, 0, 0, 0, 0]]),
                    distill=b([[0, 0, 0, 0, 1, 0, 0, 1], [0, 1, 0, 1, 0, 0, 0, 0]]),
                    consist=b([[0, 0, 0, 0, 0, 1, 0, 0], [1, 0, 1, 0, 0, 0, 0, 0]]))
    parts = cdlm_losses(model, batch, states, head, mask_id, 4, "answer", generator=torch.Generator().manual_seed(1))
    state = lambda vis: torch.cat([batch["prompt"], torch.where(vis, batch["tokens"], mask_id)], 1)
    student = model(state(states.y))[:, P:]
    target = model(state(states.target))[:, P:]
    teacher = batch["hidden"] @ head.T

    def kl(p_logits, q_logits):  # KL(p || q) at one position, written out
        p, q = p_logits.double().softmax(-1), q_logits.double().softmax(-1)
        return (p * (p.log() - q.log())).sum().item()
    distill = [kl(teacher[0, 4], student[0, 4]), kl(teacher[0, 7], student[0, 7]),
               kl(teacher[1, 1], student[1, 1]), kl(teacher[1, 3], student[1, 3])]
    consist = [kl(target[0, 5], student[0, 5]), kl(target[1, 0], student[1, 0]), kl(target[1, 2], student[1, 2])]
    assert parts["distill"].item() == pytest.approx(sum(distill) / 4, rel=1e-4)
    assert parts["consist"].item() == pytest.approx(sum(consist) / 3, rel=1e-4)
    assert min(distill + consist) > 1e-3
    x0 = torch.cat([batch["prompt"], batch["truth"]], 1)
    xt, masked, t = noise_answers(x0, P, mask_id, generator=torch.Generator().manual_seed(1))
    assert parts["dlm"].item() == pytest.approx(diffusion_loss(model(xt), x0, masked, t, L).item(), rel=1e-4)
    # no consistency position anywhere: the term is 0 and its extra pass is skipped
    none = states._replace(consist=torch.zeros_like(states.consist))
    assert cdlm_losses(model, batch, none, head, mask_id, 4)["consist"].item() == 0.0


def test_dlm_rows_noises_a_random_subset_and_leaves_the_rest_alone():
    """dlm_rows=n: the DLM loss is the diffusion loss of n rows drawn by randperm from the batch's
    generator, the student sees B + n rows; None and n=B are today's loss, draws unchanged."""
    torch.manual_seed(0)
    P, L, V, C, mask_id, B = 3, 8, 11, 16, 1, 6
    model = Transformer(ModelConfig(vocab_size=V, seq_len=P + L, prompt_len=P, block_size=4, n_layer=1, n_head=2,
                                    n_embd=C, attn="block_causal")).eval()
    batch = dict(prompt=torch.randint(3, V, (B, P)), tokens=torch.randint(3, V, (B, L)),
                 truth=torch.randint(3, V, (B, L)), hidden=torch.randn(B, L, C), step=STEP.repeat(B, 1))
    states = draw_states(batch["step"], 4, "completion_plus", torch.Generator().manual_seed(2))
    head = torch.randn(V, C)
    run = lambda n: cdlm_losses(model, batch, states, head, mask_id, 4, generator=torch.Generator().manual_seed(1),
                                dlm_rows=n)
    full = run(None)
    for n in (B, None):
        assert all(torch.equal(full[k], v) for k, v in run(n).items())
    seen = []
    hook = model.register_forward_hook(lambda m, inp, out: seen.append(inp[0].size(0)))
    part = run(2)
    hook.remove()
    gen = torch.Generator().manual_seed(1)
    x0 = torch.cat([batch["prompt"], batch["truth"]], 1)[torch.randperm(B, generator=gen)[:2]]
    xt, masked, t = noise_answers(x0, P, mask_id, generator=gen)
    assert seen[0] == B + 2
    assert part["dlm"].item() == pytest.approx(diffusion_loss(model(xt), x0, masked, t, L).item(), rel=1e-5)
    assert part["dlm"].item() != pytest.approx(full["dlm"].item(), rel=1e-3)
    for k in ("distill", "consist"):  # the state y's rows are the whole batch still
        assert part[k].item() == pytest.approx(full[k].item(), rel=1e-5)


def test_block_noising_keeps_earlier_blocks_clean():
    x = torch.randint(3, 9, (2000, 3 + 16))
    xt, masked, t = noise_block(x, 3, 4, 1, generator=torch.Generator().manual_seed(0))
    blk = (torch.arange(16) // 4)[None]
    cur = torch.where(masked[:, 3:].any(1), masked[:, 3:].float().argmax(1) // 4, -1)  # the noised block
    rows = cur >= 0
    assert torch.equal(xt[:, :3], x[:, :3])
    earlier = blk < cur[:, None]
    assert torch.equal(xt[:, 3:][rows][earlier[rows]], x[:, 3:][rows][earlier[rows]])  # clean
    assert (xt[:, 3:][rows][(blk > cur[:, None])[rows]] == 1).all()  # later blocks all MASK
    assert not (masked[:, 3:] & (blk != cur[:, None])).any()  # only the chosen block counts


def test_lr_schedule():
    cfg = {**defaults(config), "learning_rate": 1.0, "min_lr": 0.1, "warmup_iters": 10, "max_iters": 110}
    assert get_lr(0, cfg) < get_lr(5, cfg) < get_lr(9, cfg) <= 1.0
    assert get_lr(10, cfg) == pytest.approx(1.0)
    assert get_lr(60, cfg) == pytest.approx(0.55)
    assert get_lr(110, cfg) == pytest.approx(0.1)
    longer = {**cfg, "max_iters": 60, "lr_decay_iters": 110}  # a run stopped along a longer schedule
    assert [get_lr(i, longer) for i in range(60)] == [get_lr(i, cfg) for i in range(60)]
    assert get_lr(200, longer) == pytest.approx(0.1)


def test_a_run_stopped_along_a_longer_schedule_is_that_schedule_s_checkpoint(tmp_path, data_dir):
    """--max_iters=10 --lr_decay_iters=20 gives the 20-iteration run's weights at iteration 10: resumed
    to 20, it is that run, bit for bit (the frontier's points are such checkpoints)."""
    from tests.conftest import train_tiny
    whole = train_tiny(str(tmp_path / "whole"), data_dir, mode="dlm", max_iters=20, eval_interval=5)
    part = train_tiny(str(tmp_path / "part"), data_dir, mode="dlm", max_iters=10, lr_decay_iters=20, eval_interval=5)
    assert read_checkpoint(os.path.join(part, "ckpt.pt"))["iter_num"] == 10
    train_tiny(part, data_dir, mode="dlm", max_iters=20, eval_interval=5, init_from="resume")
    a, b = (read_checkpoint(os.path.join(d, "ckpt.pt")) for d in (whole, part))
    assert a["weights_hash"] == b["weights_hash"]


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


def test_the_thread_count_is_part_of_a_run_not_of_the_environment(data_dir, tmp_path):
    """A CPU sum split over 2 threads adds in another order than over 1: at the default (threads=1)
    the same command gives bit-identical weights whatever OMP_NUM_THREADS says; --threads=2 is
    another run, recorded in its checkpoint."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def start(name, omp, *extra):  # wide enough that a matrix product is split across 2 threads
        return subprocess.Popen([sys.executable, "train.py", f"--data_dir={data_dir}", f"--out_dir={tmp_path / name}",
                                 "--n_embd=128", "--n_layer=2", "--batch_size=32", "--max_iters=4", "--eval_iters=1",
                                 "--device=cpu", *extra], cwd=root, env={**os.environ, "OMP_NUM_THREADS": str(omp)},
                                stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"{name}.err", "w"))

    runs = {"omp1": start("omp1", 1), "omp2": start("omp2", 2), "threads2": start("threads2", 1, "--threads=2")}
    got = {}
    for name, p in runs.items():  # side by side: a run's sums do not depend on what else the machine runs
        assert p.wait() == 0, (tmp_path / f"{name}.err").read_text()[-2000:]
        ckpt = read_checkpoint(str(tmp_path / name / "ckpt.pt"))
        got[name] = ckpt["weights_hash"], ckpt["config"]["threads"]
    assert got["omp1"] == got["omp2"] and got["omp1"][1] == 1
    assert got["threads2"][1] == 2 and got["threads2"][0] != got["omp1"][0]  # the count matters at this size
