"""
The trace renderer: how decoding looks, step by step.

    python sample.py --out_dir=out/student --prompt="5:+3*7+2*4+1=" --show
"""
LEGEND = "legend: _ masked, . EOS, [x] finalized at this step (confidence in brackets below)"


def render(tok, meta, ids):
    """An answer as text: '_' for a masked position, '.' for EOS, each token as its text."""
    return "".join("_" if i == meta["mask_id"] else "." if i == meta["eos_id"] else tok.decode([i]) for i in ids)


def step_line(tok, meta, ev, row):
    """One line per step for row `row` of a Step: the answer so far and what this step finalized."""
    r = (ev.rows == row).nonzero()
    if len(r) == 0:
        return ""
    r = r.item()
    picked = ev.picked[r].nonzero().flatten().tolist()
    bs = ev.picked.size(1)
    confs = ", ".join(f"{tok.decode([ev.pred[r, j].item()])}@{ev.block * bs + j}: {ev.conf[r, j].item():.2f}" for j in picked)
    return f"{render(tok, meta, ev.tokens[r].tolist())}   nfe {ev.nfe[r].item():2d}  finalized {confs}"
