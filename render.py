"""
The trace renderer: decoding steps as text, below both sample.py (--show) and show.py (the views).
Pure functions of a tokenizer, the data meta and a sample.Step; nothing here runs a model. And the
one writer of pictures (save_figure), for show.py and roofline.py.
"""
from data.common import atomic_write_bytes

LEGEND = "legend: _ masked, . EOS; the tokens finalized at this step are highlighted (or marked ^ below)"
STEP_LEGEND = ("one line per forward pass: the answer so far ('_' masked, '.' EOS), the passes so far, and each "
               "token finalized by this pass as 'token'@position confidence")
NEW, DIM, OFF = "\033[1;30;42m", "\033[2m", "\033[0m"


def token_texts(tok, meta, ids):
    """Each position's text: '_' for a masked position, '.' for EOS."""
    return ["_" if i == meta["mask_id"] else "." if i == meta["eos_id"] else tok.decode([i]) for i in ids]


def step_line(tok, meta, ev, row):
    """sample.py --show: row `row` of a Step as one line, with what this step finalized and how sure."""
    r = (ev.rows == row).nonzero().flatten()
    if len(r) == 0:
        return ""
    r, bs = r.item(), ev.picked.size(1)
    new = [(ev.block * bs + j, tok.decode([ev.pred[r, j].item()]) or ".", ev.conf[r, j].item())
           for j in ev.picked[r].nonzero().flatten().tolist()]
    text = "".join(token_texts(tok, meta, ev.tokens[r].tolist()))
    return f"{text}   nfe {ev.nfe[r].item():2d}   " + " ".join(f"{t!r}@{p} {c:.2f}" for p, t, c in new)


def save_figure(fig, path, dpi=120, rect=(0, 0, 1, 1)):
    """A matplotlib figure as a PNG, written to a temporary file and renamed like every output; rect:
    the share of the figure the axes may fill (room for a legend below them)."""
    import io
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.tight_layout(rect=rect)
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
