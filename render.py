"""
The trace renderer: decoding steps as text, below both sample.py (--show) and show.py (the views),
and the replay of show.py's traces as a terminal table, an HTML page and a GIF. Pure functions of
a tokenizer, the data meta and recorded steps; nothing here runs a model. And the one writer of
pictures (save_figure, save_png), for show.py and roofline.py.
"""
import html
import importlib.util
import json

from configurator import CDLMError
from data.common import atomic_write_bytes
from files import Output, file_head

LEGEND = "legend: _ masked, . EOS; the tokens finalized at this step are highlighted (or marked ^ below)"
STEP_LEGEND = ("one line per forward pass: the answer so far ('_' masked, '.' EOS), the passes so far, and each "
               "token finalized by this pass as 'token'@position confidence")
NEW, DIM, OFF = "\033[1;30;42m", "\033[2m", "\033[0m"
# the files written here, each told by its first bytes (files.check_output: only these are written over)
GENERATOR = '<meta name="generator" content="CDLM show.py replay">'
PAGE = Output(".html", "a replay page show.py wrote (its head names the generator)",
              lambda path: GENERATOR.encode() in file_head(path, 4096))
PNG = Output(".png", "a PNG picture", lambda path: file_head(path, 8) == b"\x89PNG\r\n\x1a\n")
GIF = Output(".gif", "a GIF picture", lambda path: file_head(path, 6) in (b"GIF87a", b"GIF89a"))
NEEDS_MATPLOTLIB = "drawing needs matplotlib (pip install matplotlib)"  # optional: for pictures only


def check_matplotlib(option):
    """Before any work: the picture an option asks for can be drawn."""
    if importlib.util.find_spec("matplotlib") is None:
        raise CDLMError(f"option {option}: {NEEDS_MATPLOTLIB}")


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


# Every symbol of the replay, one definition for the page's legend, the GIF's and the tests:
# a cell's text and outline, then where its keys and values came from (pass_cells' codes).
CELL_KEY = {  # (CSS class, sample text, meaning)
    "masked": ("m", "_", "masked"),
    "eos": ("", ".", "EOS (the answer has ended)"),
    "new": ("n", "7", "finalized at this step"),
    "block": ("b", " ", "block boundary"),
    "prompt": ("p", "prompt", "the prompt, one cell"),
}
WHERE_KEY = {
    "c": ("", "7", "computed in this pass"),
    "k": ("k", "7", "read from the exact cache"),
    "a": ("a", "7", "read from an approximate cache"),
    "-": ("x", "_", "not in the pass (a later block, hidden by the mask)"),
}
PASS_NOTE = ("nfe: forward passes so far;{ms} pass over n of T: the positions this pass "
             "computes, the rest read from a cache or not in the pass. An exact cache computes the block being "
             "decoded and, at its first step, the block before it (final now, its keys and values not yet "
             "cached): AR's blocks are one token, so its passes cover 2 positions.")
SCALE = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)  # the confidence scale's marks (the thresholds join them)


def shade(conf):
    """A finalized token's colour (r, g, b in 0..1) by its confidence: hue on a log scale in 1 - conf,
    0.5 red, 0.9 yellow, 0.99 and above green (most values lie near 1)."""
    import colorsys
    import math
    hue = 120 * min(1.0, max(0.0, math.log10(0.5 / max(1 - conf, 1e-9)) / math.log10(50)))
    return colorsys.hls_to_rgb(hue / 360, 0.78, 0.75)


def hex_colour(rgb):
    return "#" + "".join(f"{round(255 * v):02x}" for v in rgb)


def thresholds_of(runs):
    """The thresholds the runs decode with (their settings), each marked on the confidence scale."""
    return sorted({r["threshold"] for r in runs if r.get("threshold") is not None})


def legend_html(thresholds):
    """The page's legend: every cell symbol, where keys and values came from, the confidence scale
    with each threshold outlined, and what the right-hand column counts."""
    sw = lambda cls, text, style="": f'<span class="c {cls}"{style}>{html.escape(text)}</span>'
    cells = " ".join(sw(c, t) + m for c, t, m in CELL_KEY.values())
    where = " ".join(sw(c, t) + m for c, t, m in WHERE_KEY.values())
    marks = " ".join(sw("s" + (" thr" if v in thresholds else ""), f"{v:g}", f' style="background:{hex_colour(shade(v))}"')
                     for v in sorted(set(SCALE) | set(thresholds)))
    thr = (f" outlined: the threshold {', '.join(f'{v:g}' for v in thresholds)} (from the settings); a threshold "
           f"method finalizes every token at or above it") if thresholds else ""
    return (f'<div class="legend"><b>cells</b> {cells}<br><b>keys and values</b> {where}<br>'
            f'<b>confidence when finalized</b> {marks}{html.escape(thr)}<br>'
            f'<span class="note">{html.escape(PASS_NOTE.format(ms=" ms: time so far (warm);"))}</span></div>')


REPLAY = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">GENERATOR<title>CDLM decoding replay</title>
<style>
body{font-family:system-ui,sans-serif;margin:8px 14px;color:#222;font-size:12px} h1{font-size:15px;margin:0;display:inline}
.prompt{font-family:monospace;font-size:15px} #controls{margin:0 0 2px} .hint{color:#666}
.legend{line-height:23px} .legend b{margin-right:2px} .legend span.c{margin:0 3px 0 9px;min-width:18px;height:20px;line-height:18px}
.legend .note{display:inline-block;line-height:14px;color:#555;margin:1px 0 3px}
.legend span.s{width:38px;margin:0 1px;font-size:11px} .legend span.thr{outline:2px solid #222;outline-offset:-2px;font-weight:bold}
table{border-collapse:collapse;margin-top:2px;width:100%} td{padding:0 0 3px 0;vertical-align:middle}
td.name{font-family:monospace;font-size:13px;padding-right:10px;white-space:nowrap;width:1%}
td.ans{white-space:nowrap;width:1%} td.info{font-family:monospace;font-size:11px;line-height:12px;padding-left:10px;color:#555}
span.c{display:inline-block;box-sizing:border-box;height:24px;line-height:20px;text-align:center;font-family:monospace;
font-size:13px;border-left:2px solid #e4e4e4;white-space:pre;vertical-align:middle}
span.b{border-left-color:#333} span.m{color:#aaa} span.n{outline:2px solid #d33;outline-offset:-2px;font-weight:bold}
span.k{box-shadow:inset 0 -5px 0 #2b6cb0} span.a{box-shadow:inset 0 -5px 0 #e69500}
span.x{background:repeating-linear-gradient(45deg,#eee 0 3px,#fff 3px 6px);color:#bbb} span.p{padding:0 6px}
#about{columns:2;column-gap:24px;font-size:11px;line-height:14px;color:#555;margin-top:2px} #about div{break-inside:avoid}
</style></head><body>
<div id="controls"><h1>Decoding <span class="prompt">PROMPT</span> with every method</h1> &nbsp; <button id="play">play</button>
<input id="t" type="range" min="1" max="1" value="1" style="width:300px"> step <span id="tv">1</span> / <span id="tmax">1</span>
&nbsp; <span class="hint">(a step: one forward pass of each method; #step=N in the URL)</span></div>
LEGEND
<table id="grid"></table>
<div id="about"></div>
<script>
const RUNS = DATA;
const WIDTH = WIDTHS, T = SEQ_LEN;  // characters per answer column, the same in every row; seq_len
const SHADE = SHADES, WHERE = WHERE_CLASSES;  // confidence (3 decimals) -> colour; pass_cells' code -> class
const grid = document.getElementById("grid"), slider = document.getElementById("t");
slider.max = Math.max(...RUNS.map(r => r.frames.length)); document.getElementById("tmax").textContent = slider.max;
function cell(text, cls, width, title, conf) {
  const s = document.createElement("span");
  s.className = "c " + cls; s.textContent = text; if (title) s.title = title;
  if (width) s.style.width = "calc(" + width + "ch + 6px)";
  if (conf !== null) s.style.background = SHADE[conf.toFixed(3)];
  return s;
}
function line(text) { const d = document.createElement("div"); d.textContent = text; return d; }
function draw() {
  const t = +slider.value; document.getElementById("tv").textContent = t; grid.innerHTML = "";
  for (const r of RUNS) {
    const i = Math.min(t, r.frames.length) - 1, f = r.frames[i], done = t > r.frames.length;
    const row = grid.insertRow(), name = row.insertCell(), ans = row.insertCell(), info = row.insertCell();
    name.className = "name"; name.textContent = r.name; name.title = r.about; info.className = "info"; ans.className = "ans";
    const where = done ? "c" : f.where_prompt;
    ans.appendChild(cell("prompt", "p " + WHERE[where], null,
                         where === "c" ? "prompt: computed in this pass" : "prompt: read from the cache", null));
    const text = done ? r.answer_text : f.text, fresh = [];
    text.forEach((tx, j) => {
      const w = done ? "c" : f.where[j];
      let cls = (j % r.block_size === 0 && r.block_size > 1 ? "b " : "") + (!done && f.tokens[j] === MASK ? "m " : "");
      if (f.picked[j] && !done) { cls += "n "; fresh.push("'" + tx + "'@" + j + " " + f.conf[j].toFixed(3)); }
      cls += WHERE[w];
      let conf = null;
      for (let k = 0; k <= i; k++) if (r.frames[k].picked[j]) conf = r.frames[k].conf[j];
      ans.appendChild(cell(tx, cls, WIDTH[j], conf === null ? "masked" : "confidence " + conf, conf));
    });
    info.appendChild(line(done ? "done: nfe " + f.nfe : "nfe " + f.nfe + ", " + f.ms.toFixed(1) + " ms, pass over "
                                 + (f.hi - f.lo) + " of " + T));
    if (fresh.length) info.appendChild(line("new: " + fresh.join(", ")));
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
document.getElementById("about").replaceChildren(...RUNS.map(r => {
  const d = line(": " + r.about), b = document.createElement("b"); b.textContent = r.name; d.prepend(b); return d; }));
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
    shades = {f"{c:.3f}": hex_colour(shade(c)) for r in runs for f in r["frames"] for c in f["conf"] if c is not None}
    return (REPLAY.replace("GENERATOR", GENERATOR).replace("PROMPT", html.escape(prompt)).replace("MASK", str(meta["mask_id"]))
            .replace("SEQ_LEN", str(meta["prompt_len"] + L)).replace("WIDTHS", json.dumps(widths))
            .replace("LEGEND", legend_html(thresholds_of(runs))).replace("SHADES", json.dumps(shades))
            .replace("WHERE_CLASSES", json.dumps({code: cls for code, (cls, _, _) in WHERE_KEY.items()}))
            .replace("DATA", json.dumps(data).replace("</", "<\\/")))



def replay_gif(runs, tok, meta, prompt, ms_per_step=600):
    """The replay as an animated GIF (for a page that cannot run the HTML one): one frame per step,
    drawn as the page draws it (block boundaries, confidence, the step's new tokens, where keys and
    values came from, the prompt cell) under the same legend; times left out. Laid out in pixels,
    each row's tokens written as three monospace strings (plain, masked, new): fast to draw."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.collections import LineCollection, PatchCollection
        from PIL import Image  # matplotlib's own dependency
    except ImportError:
        raise CDLMError(f"option gif: {NEEDS_MATPLOTLIB}") from None
    import io
    import textwrap
    L, T = meta["gen_len"], meta["prompt_len"] + meta["gen_len"]
    FS, probe = 8, plt.figure(dpi=100)  # a character's advance in px at FS points, measured (hinting rounds it)
    CH = probe.text(0, 0, "0" * 100, fontsize=FS, family="monospace").get_window_extent(probe.canvas.get_renderer()).width / 100
    plt.close(probe)
    texts = {r["name"]: [token_texts(tok, meta, f["tokens"]) for f in r["frames"]] + [token_texts(tok, meta, r["answer"])]
             for r in runs}
    chars = [max(len(t[j]) for ts in texts.values() for t in ts) + 1 for j in range(L)]  # a column's width, in characters
    x_prompt = 8 + CH * (max(len(r["name"]) for r in runs) + 2)
    x0 = [x_prompt + CH * (8 + sum(chars[:j])) for j in range(L)]  # the prompt cell: 7 characters and a gap
    x_info = x0[-1] + CH * chars[-1] + 10
    W, thresholds = int(x_info + 26 * CH), thresholds_of(runs)
    band = {"k": "#2b6cb0", "a": "#e69500"}
    write = lambda ax, x, y, s, size=FS, **kw: ax.text(x, y, s, va="center", fontsize=size, family="monospace", **kw)

    def box(pen, x, y, w, where="c", conf=None, new=False, boundary=False):  # a cell's shapes; its text apart
        if where == "-" and conf is None:
            pen["hatch"].append(plt.Rectangle((x, y), w, 22))
        else:
            pen["fill"].append((plt.Rectangle((x, y), w, 22), hex_colour(shade(conf)) if conf is not None else "white"))
        pen["line"].append(([(x + 1, y), (x + 1, y + 22)], "#333" if boundary else "#e4e4e4"))
        if where in band:
            pen["band"].append((plt.Rectangle((x, y + 17), w, 5), band[where]))
        if new:
            pen["new"].append(plt.Rectangle((x + 1.5, y + 1), w - 2.5, 20))

    def ink(ax, pen):  # every shape of a frame as five collections, in drawing order
        for z, (key, kw) in enumerate((("fill", dict(lw=0)), ("hatch", dict(facecolor="white", edgecolor="#ccc",
                                       hatch="/////", lw=0)), ("line", dict(lw=1.5)), ("band", dict(lw=0)),
                                       ("new", dict(facecolor="none", edgecolor="#d33", lw=1.5)))):
            items = pen[key]
            if key == "line":
                ax.add_collection(LineCollection([s for s, _ in items], colors=[c for _, c in items], zorder=z, **kw))
            elif key in ("fill", "band"):
                ax.add_collection(PatchCollection([p for p, _ in items], facecolors=[c for _, c in items], zorder=z, **kw))
            else:
                ax.add_collection(PatchCollection(items, zorder=z, **kw))

    def legend(ax, pen, y):  # the page's legend: each line's items flowed, wrapped at the frame's width
        lines = [("cells:", [(m, s, dict(new=k == "new", boundary=k == "block"), "#aaa" if k == "masked" else "#222")
                             for k, (_, s, m) in CELL_KEY.items()]),
                 ("keys and values:", [(m, s, dict(where=c), "#bbb" if c == "-" else "#222")
                                       for c, (_, s, m) in WHERE_KEY.items()]),
                 ("confidence when finalized:", [("", f"{v:g}", dict(conf=v, new=v in thresholds), "#222")
                                                 for v in sorted(set(SCALE) | set(thresholds))]
                  + ([(f"red outline: the threshold {', '.join(f'{v:g}' for v in thresholds)} (from the settings)",
                       None, None, None)] if thresholds else []))]
        for head, items in lines:
            write(ax, 8, y + 11, head, FS * 0.9, color="#333", weight="bold")
            start = x = 8 + len(head) * CH * 0.9 + 10
            for label, sample, kw, colour in items:
                w = 0 if sample is None else max(len(sample) * CH + 8, 22 if label else 38)
                if x + w + len(label) * CH * 0.9 > W - 8:
                    x, y = start, y + 26
                if sample is not None:
                    box(pen, x, y, w, **kw)
                    write(ax, x + w / 2, y + 10, sample, ha="center", color=colour)
                write(ax, x + w + 3, y + 11, label, FS * 0.9, color="#333")
                x += w + (len(label) * CH * 0.9 + 14 if label else 1)
            y += 26
        for line in textwrap.wrap(PASS_NOTE.format(ms=""), int((W - 16) / (CH * 0.85))):
            write(ax, 8, y + 6, line, FS * 0.85, color="#555")
            y += 13
        return y + 4

    def frame(t, H):
        fig = plt.figure(figsize=(W / 100, H / 100), dpi=100)
        ax = fig.add_axes([0, 0, 1, 1])
        ax.set_xlim(0, W)
        ax.set_ylim(H, 0)
        ax.axis("off")
        pen = dict(fill=[], hatch=[], line=[], band=[], new=[])
        write(ax, 8, 14, f"decoding {prompt} with every method    step {min(t + 1, steps)} / {steps}", FS + 2,
              weight="bold")
        for i, r in enumerate(runs):
            y, done = 32 + 28 * i, t >= len(r["frames"])
            f = r["frames"][min(t, len(r["frames"]) - 1)]
            where_prompt, where = ("c", ["c"] * L) if done else pass_cells(f, r["cache"], L)
            write(ax, 8, y + 11, r["name"])
            box(pen, x_prompt, y, 7 * CH, where=where_prompt)
            write(ax, x_prompt + CH / 2, y + 10, "prompt")
            cells = []
            for j, text in enumerate(texts[r["name"]][min(t, len(r["frames"]))]):
                conf = next((g["conf"][j] for g in r["frames"][:t + 1] if g["picked"][j]), None)
                new = f["picked"][j] and not done
                box(pen, x0[j], y, CH * chars[j], where[j], conf, new, j % r["block_size"] == 0 and r["block_size"] > 1)
                cells.append((text.center(chars[j] - 1) + " ", "new" if new else "grey" if text == "_" and not done else ""))
            for style, kw in (("", {}), ("grey", dict(color="#999")), ("new", dict(weight="bold"))):
                line = "".join(c if s == style else " " * len(c) for c, s in cells)
                if line.strip():
                    write(ax, x0[0] + CH / 2, y + 10, line, zorder=6, **kw)
            write(ax, x_info, y + 11, f"done: nfe {f['nfe']}" if done else f"nfe {f['nfe']}, pass over "
                  f"{f['hi'] - f['lo']} of {T}", FS * 0.9, color="#555")
        bottom = legend(ax, pen, 32 + 28 * len(runs) + 4)
        ink(ax, pen)
        fig.canvas.draw()
        image = Image.frombuffer("RGBA", fig.canvas.get_width_height(), fig.canvas.buffer_rgba()).convert("RGB")
        plt.close(fig)
        return image, bottom

    steps = max(len(r["frames"]) for r in runs)
    H = int(frame(0, 2000)[1])  # the first frame measures the legend's height
    images = [frame(t, H)[0] for t in range(steps + 1)]
    sample = Image.new("RGB", (W, 3 * H))  # one palette for every frame, from the first, a middle and the last
    for k, im in enumerate((images[0], images[steps // 2], images[-1])):
        sample.paste(im, (0, k * H))
    palette = sample.quantize(colors=255, method=Image.Quantize.MEDIANCUT)
    frames = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in images]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=ms_per_step, loop=0,
                   optimize=True)
    return buf.getvalue()


def save_png(path, panels, rows=None, cols=None, xlabel=None, ylabel=None, texts=None, cell=0.28, ncol=4):
    """panels: [(title, 2-D array of cell codes, {code: (colour, label)})] side by side, as a PNG, with
    one legend for all of them below (ncol columns); rows and cols label the cells (cell: their side in
    inches), texts (one 2-D array per panel, or None) are written on them."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap
        from matplotlib.lines import Line2D
    except ImportError:
        raise CDLMError(f"option png: {NEEDS_MATPLOTLIB}") from None
    import textwrap
    width = max(len(g[0]) for _, g, _ in panels) * cell + 1.2
    wrap = lambda title, grid: textwrap.wrap(title, max(28, int(len(grid[0]) * cell * 11.4)))
    height = max(len(g) for _, g, _ in panels) * cell + 2.6 + 0.2 * max(len(wrap(t, g)) for t, g, _ in panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels) + (1.4 if rows else 0), height), squeeze=False)
    legend = {}
    for k, (ax, (title, grid, key)) in enumerate(zip(axes[0], panels)):
        codes = sorted({c for row in grid for c in row})
        ax.imshow([[codes.index(c) for c in row] for row in grid], cmap=ListedColormap([key[c][0] for c in codes]),
                  vmin=0, vmax=max(1, len(codes) - 1))
        ax.set_title("\n".join(wrap(title, grid)), fontsize=9)
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
        legend.update({key[c][1]: key[c][0] for c in codes if key[c][1]})  # "": not in the legend (a gap)
    handles = [Line2D([], [], ls="", marker="s", ms=9, color=colour, markeredgecolor="#777", label=label)
               for label, colour in legend.items()]  # an edge, so a white swatch shows on the white page
    fig.legend(handles=handles, loc="lower center", ncol=min(ncol, len(handles)), fontsize=8, frameon=False)
    save_figure(fig, path, dpi=130, rect=(0, 0.08 + 0.04 * ((len(handles) - 1) // ncol), 1, 1))
    print(f"wrote {path}")


def frontier_png(path, runs, target_nfe=5.5):
    """The student's frontier (results.read_frontier's runs) as a PNG: whole answers and passes per
    answer against training iterations, one line per seed; the teacher's accuracy, the default
    student and the target pass count marked."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CDLMError(f"option png: {NEEDS_MATPLOTLIB}") from None
    fig, (acc, nfe) = plt.subplots(1, 2, figsize=(10, 4))
    for run, rs in runs.items():
        for r in rs:
            its = sorted(map(int, r["points"]))
            for ax, key, scale in ((acc, "whole_acc", 100), (nfe, "nfe", 1)):
                ax.plot(its, [scale * r["points"][str(i)][key] for i in its], "o-", ms=3, lw=1,
                        label=f"{run}, seed {r['seed']}")
        r0, d = rs[0], rs[0]["default_student"]
        acc.axhline(100 * r0["teacher_whole_acc"], color="k", ls="--", lw=0.8,
                    label=f"its teacher, one token per step ({100 * r0['teacher_whole_acc']:.1f}%)")
        for ax, value in ((acc, 100 * d["whole_acc"]), (nfe, d["nfe"])):
            ax.plot([d["iters"]], [value], "kx", ms=8, label=f"the default student ({d['iters']} iterations, "
                                                             f"{d['trajectories']} trajectories)")
    nfe.axhline(target_nfe, color="r", ls=":", lw=1, label=f"{target_nfe} passes per answer")
    acc.set(xlabel="training iteration", ylabel="whole answer right (%)", title="accuracy along training")
    nfe.set(xlabel="training iteration", ylabel="forward passes per answer (NFE)", title="passes along training")
    for ax in (acc, nfe):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    save_figure(fig, path)
    print(f"wrote {path}")
