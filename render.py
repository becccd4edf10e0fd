"""
The trace renderer: decoding steps as text, below both sample.py (--show) and show.py (the views),
and the replay of show.py's traces as a terminal table, an HTML page and a GIF. Pure functions of
a tokenizer, the data meta and recorded steps; nothing here runs a model. And the one writer of
pictures (save_figure, save_png), for show.py and roofline.py.
"""
import html
import json

from configurator import CDLMError
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
    r, o = r.item(), ev.out
    new = [(ev.block * o.picked.size(1) + j, tok.decode([o.pred[r, j].item()]) or ".", o.conf[r, j].item())
           for j in o.picked[r].nonzero().flatten().tolist()]
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


def render_compare(runs, tok, meta, color):
    """The frames as text: at each step t, every method's answer after its t-th forward pass."""
    # each pass's answer, then the final one (early stop fills the blocks after EOS without a pass)
    texts = {r["name"]: [token_texts(tok, meta, f["tokens"]) for f in r["frames"]] + [token_texts(tok, meta, r["answer"])]
             for r in runs}
    L = meta["gen_len"]
    width = [max(len(t[-1][j]) for t in texts.values()) for j in range(L)]
    name_w = max(len(r["name"]) for r in runs)
    lines = [LEGEND]
    for t in range(max(len(r["frames"]) for r in runs)):
        lines.append(f"step {t + 1}")
        for r in runs:
            f = r["frames"][min(t, len(r["frames"]) - 1)]
            done = t >= len(r["frames"])
            cells, marks = [], []
            for j, text in enumerate(texts[r["name"]][min(t, len(r["frames"]))]):
                text = text.ljust(width[j])
                new = f["picked"][j] and not done
                cells.append(NEW + text + OFF if new and color else DIM + text + OFF if text[0] == "_" and color
                             else text)
                marks.append(("^" if new else " ").ljust(width[j]))
            status = "done" if done else f"nfe {f['nfe']:2d}"
            lines.append(f"{r['name']:<{name_w}}  {''.join(cells)}  {status}, {f['ms']:6.1f} ms")
            if not color and not done and any(f["picked"]):
                lines.append(" " * (name_w + 2) + "".join(marks).rstrip())
    return "\n".join(lines)


def pass_cells(frame, cache, gen_len):
    """
    Where each position's keys and values came from in one frame's pass: the prompt's code, then
    one per answer position. 'c' computed in this pass, 'k' read from the exact cache, 'a' read from
    an approximate cache (Fast-dLLM's prefix and dual caches), '-' not in the pass at all (a later
    block, which the block-causal mask hides from the block being decoded).
    """
    lo, hi = frame["lo"], frame["hi"]  # computed answer positions lo..hi (lo < 0: the prompt too)
    cached = "k" if cache == "exact" else "a"
    after = cached if cache == "dual" else "-"  # the dual cache also keeps the suffix; the exact one reads nothing there
    answer = ["c" if lo <= j < hi else cached if j < lo else after for j in range(gen_len)]
    return ("c" if lo < 0 else cached), answer


REPLAY = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>CDLM decoding replay</title>
<style>
body{font-family:system-ui,sans-serif;margin:24px;color:#222} h1{font-size:18px} .prompt{font-family:monospace;font-size:15px}
table{border-collapse:collapse;margin-top:12px} td{padding:0 0 6px 0} #controls{margin:12px 0} .about{font-size:12px;color:#666}
td.ans{white-space:nowrap} td.name{font-family:monospace;padding-right:12px;white-space:nowrap;font-size:13px}
td.info{font-family:monospace;font-size:12px;padding-left:12px;white-space:nowrap;color:#555}
span.c{display:inline-block;box-sizing:border-box;height:26px;line-height:22px;text-align:center;font-family:monospace;
font-size:13px;border-left:2px solid #e4e4e4;white-space:pre;vertical-align:top}
span.b{border-left-color:#333} span.m{color:#aaa} span.n{outline:2px solid #d33;outline-offset:-2px;font-weight:bold}
span.k{box-shadow:inset 0 -6px 0 #2b6cb0} span.a{box-shadow:inset 0 -6px 0 #e69500}
span.x{background:repeating-linear-gradient(45deg,#eee 0 3px,#fff 3px 6px);color:#bbb} span.p{padding:0 6px}
.legend{font-size:13px;line-height:30px} .legend span.c{margin-right:4px;min-width:22px}
#scale{display:inline-block;vertical-align:middle;margin-left:6px}
#scale span{display:inline-block;width:44px;height:18px;font-size:11px;text-align:center;line-height:18px;font-family:monospace}
</style></head><body>
<h1>Decoding one prompt with every method</h1>
<div class="prompt">prompt: PROMPT</div>
<div id="controls"><button id="play">play</button>
<input id="t" type="range" min="1" max="1" value="1" style="width:420px"> step <span id="tv">1</span> / <span id="tmax">1</span>
&nbsp; <span class="about">(also replay.html#step=N)</span></div>
<div class="legend"><span class="c m">_</span>masked &nbsp; <span class="c n">7</span>finalized at this step &nbsp;
<span class="c b">&nbsp;</span>block boundary<br>
keys and values at this step: <span class="c">7</span>computed in this pass &nbsp;
<span class="c k">7</span>read from the exact cache &nbsp; <span class="c a">7</span>read from an approximate cache &nbsp;
<span class="c x">_</span>not in the pass<br>
confidence when finalized: <span id="scale"></span></div>
<table id="grid"></table>
<div id="about"></div>
<script>
const RUNS = DATA;
const WIDTH = WIDTHS, T = SEQ_LEN;  // characters per answer column, the same in every row; seq_len
const grid = document.getElementById("grid"), slider = document.getElementById("t");
slider.max = Math.max(...RUNS.map(r => r.frames.length)); document.getElementById("tmax").textContent = slider.max;
// log scale in 1 - confidence: 0.5 red, 0.9 orange, 0.99 and above green (most values lie near 1)
function shade(c) { const h = 120 * Math.min(1, Math.max(0, Math.log10(0.5 / Math.max(1 - c, 1e-9)) / Math.log10(50)));
                    return "hsl(" + h.toFixed(0) + ",75%,78%)"; }
for (const c of [0.5, 0.7, 0.8, 0.9, 0.95, 0.99]) {
  const s = document.createElement("span"); s.style.background = shade(c); s.textContent = c;
  document.getElementById("scale").appendChild(s);
}
function cell(text, cls, width, title, conf) {
  const s = document.createElement("span");
  s.className = "c " + cls; s.textContent = text; if (title) s.title = title;
  if (width) s.style.width = "calc(" + width + "ch + 6px)";
  if (conf !== null) s.style.background = shade(conf);
  return s;
}
function draw() {
  const t = +slider.value; document.getElementById("tv").textContent = t; grid.innerHTML = "";
  for (const r of RUNS) {
    const i = Math.min(t, r.frames.length) - 1, f = r.frames[i], done = t > r.frames.length;
    const row = grid.insertRow(), name = row.insertCell(), ans = row.insertCell(), info = row.insertCell();
    name.className = "name"; name.textContent = r.name; name.title = r.about; info.className = "info"; ans.className = "ans";
    const where = done ? "c" : f.where_prompt;
    ans.appendChild(cell("prompt", "p " + (where === "c" ? "" : where), null,
                         where === "c" ? "prompt: computed in this pass" : "prompt: read from the cache", null));
    const text = done ? r.answer_text : f.text, fresh = [];
    text.forEach((tx, j) => {
      const w = done ? "c" : f.where[j];
      let cls = (j % r.block_size === 0 && r.block_size > 1 ? "b " : "") + (!done && f.tokens[j] === MASK ? "m " : "");
      if (f.picked[j] && !done) { cls += "n "; fresh.push("'" + tx + "'@" + j + " " + f.conf[j].toFixed(3)); }
      if (w !== "c") cls += (w === "-" ? "x " : w + " ");
      let conf = null;
      for (let k = 0; k <= i; k++) if (r.frames[k].picked[j]) conf = r.frames[k].conf[j];
      ans.appendChild(cell(tx, cls, WIDTH[j], conf === null ? "masked" : "confidence " + conf, conf));
    });
    info.textContent = done ? "done: nfe " + f.nfe : "nfe " + f.nfe + ", " + f.ms.toFixed(1) + " ms warm, pass over "
                       + (f.hi - f.lo) + " of " + T + " positions" + (fresh.length ? "; new: " + fresh.join(", ") : "");
  }
}
function fromHash() { const m = location.hash.match(/step=(\\d+)/); if (m) { slider.value = m[1]; draw(); } }
slider.oninput = () => { history.replaceState(null, "", "#step=" + slider.value); draw(); };
window.addEventListener("hashchange", fromHash);
let timer = null;
document.getElementById("play").onclick = () => {
  if (timer) { clearInterval(timer); timer = null; return; }
  if (+slider.value >= +slider.max) slider.value = 1;
  timer = setInterval(() => { if (+slider.value >= +slider.max) { clearInterval(timer); timer = null; return; }
                               slider.value = +slider.value + 1; draw(); }, 250);
};
document.getElementById("about").innerHTML = RUNS.map(r => "<div class='about'><b>" + r.name + "</b>: " + r.about + "</div>").join("");
draw(); fromHash();
</script></body></html>
"""


def replay_html(runs, tok, meta, prompt):
    """One self-contained page (inline CSS and JS, no network): a step slider over every method."""
    L = meta["gen_len"]
    data = []
    for r in runs:
        frames = []
        for f in r["frames"]:
            where_prompt, where = pass_cells(f, r["cache"], L)
            frames.append({**f, "text": token_texts(tok, meta, f["tokens"]), "where_prompt": where_prompt, "where": where})
        data.append({**r, "frames": frames, "answer_text": token_texts(tok, meta, r["answer"])})
    widths = [max(len(t) for d in data for t in [d["answer_text"][j]] + [f["text"][j] for f in d["frames"]])
              for j in range(L)]
    return (REPLAY.replace("PROMPT", html.escape(prompt)).replace("MASK", str(meta["mask_id"]))
            .replace("SEQ_LEN", str(meta["prompt_len"] + L)).replace("WIDTHS", json.dumps(widths))
            .replace("DATA", json.dumps(data).replace("</", "<\\/")))


def replay_gif(runs, tok, meta, prompt, ms_per_step=600):
    """The replay as an animated GIF (a page that cannot run the HTML one shows this): one frame per
    step, the same cells, the cache as a band under each cell (blue exact, orange approximate)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from PIL import Image  # matplotlib's own dependency
    except ImportError:
        raise CDLMError("option gif: drawing needs matplotlib (pip install matplotlib)") from None
    import io
    L = meta["gen_len"]
    texts = {r["name"]: [token_texts(tok, meta, f["tokens"]) for f in r["frames"]] + [token_texts(tok, meta, r["answer"])]
             for r in runs}
    width = [max(1, max(len(t[j]) for ts in texts.values() for t in ts)) * 0.62 + 0.5 for j in range(L)]
    x0 = [sum(width[:j]) for j in range(L)]
    band = {"k": "#2b6cb0", "a": "#e69500"}
    steps, images = max(len(r["frames"]) for r in runs), []
    left = max(len(r["name"]) for r in runs) * 0.75 + 1  # the names' column, in cell units
    for t in range(steps + 1):
        fig, ax = plt.subplots(figsize=(0.12 * (left + sum(width) + 4), 0.9 + 0.36 * len(runs)), dpi=100)
        ax.set_xlim(-left, sum(width) + 4)
        ax.set_ylim(len(runs) + 0.3, -1.2)
        ax.text(-left, len(runs) + 0.05, "red: finalized at this step; band under a cell: its keys and values read from the "
                "exact cache (blue) or an approximate one (orange); _ masked, . EOS", fontsize=7, color="#555")
        ax.axis("off")
        ax.text(-left, -0.9, f"{prompt}    step {min(t + 1, steps)} / {steps}", fontsize=9, family="monospace")
        for y, r in enumerate(runs):
            done = t >= len(r["frames"])
            f = r["frames"][min(t, len(r["frames"]) - 1)]
            where = ["c"] * L if done else pass_cells(f, r["cache"], L)[1]
            ax.text(-left, y, r["name"], va="center", fontsize=8, family="monospace")
            for j, text in enumerate(texts[r["name"]][min(t, len(r["frames"]))]):
                new = f["picked"][j] and not done
                ax.add_patch(plt.Rectangle((x0[j], y - 0.4), width[j], 0.8, facecolor="#fde2e2" if new else "white",
                                           edgecolor="#d33" if new else "#ddd", lw=1.2 if new else 0.5))
                if where[j] in band:
                    ax.add_patch(plt.Rectangle((x0[j], y + 0.28), width[j], 0.12, color=band[where[j]], lw=0))
                ax.text(x0[j] + width[j] / 2, y, text, ha="center", va="center", fontsize=8, family="monospace",
                        color="#aaa" if text == "_" else "#222", weight="bold" if new else "normal")
            ax.text(sum(width) + 0.2, y, " done" if done else f" nfe {f['nfe']}", va="center", fontsize=8)
        fig.canvas.draw()
        images.append(Image.frombuffer("RGBA", fig.canvas.get_width_height(), fig.canvas.buffer_rgba()).convert("RGB"))
        plt.close(fig)
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=ms_per_step, loop=0)
    return buf.getvalue()


def save_png(path, panels, rows=None, cols=None, xlabel=None, ylabel=None, texts=None):
    """panels: [(title, 2-D array of cell codes, {code: (colour, label)})] side by side, as a PNG, with
    one legend for all of them below; rows and cols label the cells, texts (one 2-D array per panel,
    or None) are written on them."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap
        from matplotlib.lines import Line2D
    except ImportError:
        raise CDLMError("option png: drawing needs matplotlib (pip install matplotlib)") from None
    import textwrap
    width = max(len(g[0]) for _, g, _ in panels) * 0.28 + 1.2
    height = max(len(g) for _, g, _ in panels) * 0.28 + 2.8
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels) + (1.4 if rows else 0), height), squeeze=False)
    legend = {}
    for k, (ax, (title, grid, key)) in enumerate(zip(axes[0], panels)):
        codes = sorted({c for row in grid for c in row})
        ax.imshow([[codes.index(c) for c in row] for row in grid], cmap=ListedColormap([key[c][0] for c in codes]),
                  vmin=0, vmax=max(1, len(codes) - 1))
        ax.set_title("\n".join(textwrap.wrap(title, max(28, int(len(grid[0]) * 3.2)))), fontsize=9)
        ax.set_xticks(range(len(cols)) if cols else [], cols or [], fontsize=7)
        ax.set_yticks(range(len(rows)) if rows else [], rows or [], fontsize=7)
        ax.set_xlabel(xlabel or "", fontsize=8)
        if k == 0:
            ax.set_ylabel(ylabel or "", fontsize=8)
        ax.set_xticks([x - 0.5 for x in range(len(grid[0]))], minor=True)
        ax.set_yticks([y - 0.5 for y in range(len(grid))], minor=True)
        ax.grid(which="minor", color="#999", lw=0.5)
        ax.tick_params(which="minor", length=0)
        for i, row in enumerate((texts or [None] * len(panels))[k] or []):
            for j, t in enumerate(row):
                ax.text(j, i, t, ha="center", va="center", fontsize=7, family="monospace")
        legend.update({key[c][1]: key[c][0] for c in codes})
    handles = [Line2D([], [], ls="", marker="s", ms=9, color=colour, markeredgecolor="#777", label=label)
               for label, colour in legend.items()]  # an edge, so a white swatch shows on the white page
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=8, frameon=False)
    save_figure(fig, path, dpi=130, rect=(0, 0.08 + 0.04 * ((len(handles) - 1) // 4), 1, 1))
    print(f"wrote {path}")
