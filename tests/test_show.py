"""show.py: the side-by-side trace, the HTML replay's structure, masks, training states, infilling."""
import json
import re
from html.parser import HTMLParser

import pytest
import torch

import render
import show
from bench import METHODS
from checkpoint import meta_hash


@pytest.fixture(scope="module")
def runs(teacher_dir, student_dir, ar_dir):
    from configurator import check
    from data.common import get_tokenizer
    from bench import load_models
    cfg = check(show.config, dict(teacher_dir=teacher_dir, student_dir=student_dir, ar_dir=ar_dir, prompt="5:+3*7+2*4+1="))
    models = load_models(cfg, list(METHODS), "cpu")
    meta = models["teacher"][1]["data_meta"]
    return show.compare(cfg, models, meta, get_tokenizer(meta)), meta, get_tokenizer(meta)


def test_every_method_every_step(runs):
    runs, meta, tok = runs
    assert [r["name"] for r in runs] == list(METHODS)
    for r in runs:
        assert [f["nfe"] for f in r["frames"]] == list(range(1, len(r["frames"]) + 1))  # one frame per pass
        last = r["frames"][-1]["tokens"]  # final where decoded; early stop filled the rest with EOS
        assert all(a == b or a == meta["mask_id"] and b == meta["eos_id"] for a, b in zip(last, r["answer"]))
        assert sum(sum(f["picked"]) for f in r["frames"]) <= meta["gen_len"]
    naive = next(r for r in runs if r["name"] == "dlm")
    assert len(naive["frames"]) == meta["gen_len"] and all(sum(f["picked"]) == 1 for f in naive["frames"])


def test_terminal_rendering_aligns_methods(runs):
    runs, meta, tok = runs
    text = render.render_compare(runs, tok, meta, color=False)
    assert "\033" not in text  # plain marks when piped
    step1 = text.split("step 2")[0].splitlines()
    rows = [l for l in step1 if l.split() and l.split()[0] in METHODS]
    assert len(rows) == len(METHODS) and len({l.index("  ", len(l.split()[0])) for l in rows}) >= 1
    assert "^" in text
    colored = render.render_compare(runs, tok, meta, color=True)
    assert render.NEW in colored


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.urls = [], [], []

    def handle_starttag(self, tag, attrs):
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]
        if tag not in ("meta", "input", "br"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def test_html_replay_is_self_contained_and_complete(runs):
    runs, meta, tok = runs
    page = render.replay_html(runs, tok, meta, "5:+3*7+2*4+1=")
    parser = Tags()
    parser.feed(page)
    assert not parser.errors and not parser.stack and not parser.urls  # well-formed, nothing fetched
    assert not re.search(r"https?://", page)
    data = json.loads(re.search(r"const RUNS = (\[.*?\]);\n", page, re.S).group(1))
    assert [d["name"] for d in data] == [r["name"] for r in runs]
    for d, r in zip(data, runs):
        assert len(d["frames"]) == len(r["frames"]) and all(len(f["text"]) == meta["gen_len"] for f in d["frames"])
        assert all(len(f["where"]) == meta["gen_len"] for f in d["frames"])
    widths = json.loads(re.search(r"const WIDTH = (\[.*?\]), T = (\d+);", page).group(1))
    assert len(widths) == meta["gen_len"] and all(w >= 1 for w in widths)  # one width per column, every row
    assert widths == [max(len(t) for d in data for t in [d["answer_text"][j]] + [f["text"][j] for f in d["frames"]])
                      for j in range(meta["gen_len"])]
    assert "hashchange" in page and 'id="tmax"' in page  # the URL's step redraws; step N / max


def test_replay_legend_names_every_symbol_and_marks_the_threshold(runs):
    """Every cell text token_texts writes for a special id, every pass_cells code and every cell
    class the page draws has a legend entry; each threshold of the settings is outlined on the scale."""
    runs, meta, tok = runs
    page = render.replay_html(runs, tok, meta, "5:+3*7+2*4+1=")
    legend = re.search(r'<div class="legend">(.*?)</div>', page, re.S).group(1)
    specials = render.token_texts(tok, meta, [meta["mask_id"], meta["eos_id"]])
    assert specials == ["_", "."] and all(f'">{t}</span>' in legend for t in specials)
    L = meta["gen_len"]
    codes = {c for r in runs for f in r["frames"] for c in [render.pass_cells(f, r["cache"], L)[0],
                                                            *render.pass_cells(f, r["cache"], L)[1]]}
    assert codes <= set(render.WHERE_KEY) and {"k", "a", "-"} <= codes  # the reference methods use every kind
    for cls, _, meaning in [*render.CELL_KEY.values(), *render.WHERE_KEY.values()]:
        assert meaning in legend and f'class="c {cls}"' in legend
    assert "pass over n of T" in legend and "2 positions" in legend  # the right-hand column, AR's passes
    thresholds = render.thresholds_of(runs)
    assert thresholds == [runs[0]["threshold"]] and runs[0]["name"] == "cdlm"  # from the settings: the student's
    for v in thresholds:
        assert 'class="c s thr"' in legend and re.search(rf'class="c s thr"[^>]*>{v:g}</span>', legend)
        assert f"the threshold {v:g}" in legend
    runs[0] = {**runs[0], "threshold": 0.85}  # another threshold joins the scale
    assert re.search(r'class="c s thr"[^>]*>0.85</span>', render.legend_html(render.thresholds_of(runs)))


def test_replay_shows_where_each_pass_reads_keys_and_values(runs):
    """The cache drawn as it is: the student's exact cache serves the prompt and earlier blocks and
    never reads later ones; the dual cache serves both sides; no cache computes everything."""
    runs, meta, tok = runs
    L, by = meta["gen_len"], {r["name"]: r for r in runs}
    bs = by["cdlm"]["block_size"]
    for f in by["cdlm"]["frames"]:
        prompt, where = render.pass_cells(f, "exact", L)
        blk = next(j for j, p in enumerate(f["picked"]) if p) // bs  # the block this pass decoded
        assert where[blk * bs:(blk + 1) * bs] == ["c"] * bs  # the block itself is computed
        assert set(where[:blk * bs]) <= {"k", "c"} and set(where[(blk + 1) * bs:]) <= {"-"}
        assert prompt == ("c" if f["lo"] < 0 else "k")
    assert render.pass_cells(by["cdlm"]["frames"][0], "exact", L)[0] == "c"  # the first pass computes the prompt
    for f in by["dlm"]["frames"]:
        assert render.pass_cells(f, "none", L) == ("c", ["c"] * L)
    for f in by["dlm_dual_cache"]["frames"][1:]:
        prompt, where = render.pass_cells(f, "dual", L)
        if f["lo"] >= 0:  # between refreshes: the block computed, both sides from the approximate cache
            assert prompt == "a" and "c" in where and set(where) <= {"a", "c"}


def test_mask_grids_match_the_masks():
    from model import attention_mask
    labels, grids = show.mask_grids(prompt_len=2, block_size=3, n_blocks=3, decoding=2)
    assert labels == ["p", "p", "0", "0", "0", "1", "1", "1", "2", "2", "2"] and len(grids) == 5
    for (title, rows), mode in zip(grids, ("bidirectional", "block_causal", "causal")):
        assert title == mode and [[c == "#" for c in r] for r in rows] == attention_mask(mode, 11, 2, 3).tolist()
    (first_title, first), (later_title, later) = grids[3], grids[4]
    assert later[8] == ["C"] * 8 + ["#"] * 3 and later[5] == later[0] == [" "] * 11  # a later step: 8 cached keys
    assert first[8] == ["C"] * 5 + ["#"] * 6 and first[5] == ["C"] * 5 + ["#"] * 3 + ["."] * 3  # block 1 recomputed
    assert "first step" in first_title and "block 1 (final now) computed again" in first_title
    assert "a later step" in later_title and "blocks 0-1 from the cache" in later_title
    text = show.grids_text(labels, grids)
    assert text.count("keys: p p 0 0 0 1 1 1 2 2 2") == 5


def test_training_state_view(student_dir, traj_dir):
    from configurator import check
    cfg = check(show.config, dict(view="states", student_dir=student_dir, traj_dir=traj_dir, index=3))
    view = show.training_state(cfg, "cpu")
    table = dict(view.rows)
    assert len(table["distill (D)"]) == 8 and "D" in table["distill (D)"]
    assert all(y == "_" for y, d in zip(table["y"], table["distill (D)"]) if d == "D")  # targets where y is masked
    assert view.y_star == "completion_plus" and f"block {view.block} " in view.text
    assert "_" not in table["y* (completion)"] and "y' (consistency target)" in table  # y* the completion, y' apart
    copy = next(c for n, c in view.rows if n.startswith("DLM copy"))  # the DLM loss's own state, not y
    assert [c == "_" for c in copy] == [m == "L" for m in table["DLM loss (L)"]]
    for y_star, label in (("random", "y' = y* (consistency target)"), ("literal", "y' = y* (consistency target)"),
                          ("completion", None)):
        rows = dict(show.training_state({**cfg, "y_star": y_star}, "cpu").rows)
        assert (label in rows) if label else not any(n.startswith("y'") for n in rows)
    assert set(show.READINGS) == set(show.Y_STARS)


def test_states_and_masks_pictures_label_what_they_draw(student_dir, traj_dir, tmp_path, monkeypatch):
    """states.png: the block, the reading, both position labels on the x-axis, the DLM copy as its
    own row; masks.png: the cache panels name the step. (The labels handed to the picture writer.)"""
    pytest.importorskip("matplotlib")
    drawn = []
    monkeypatch.setattr(show, "save_png", lambda path, panels, **kw: drawn.append((panels, kw)))
    show.main(["--view=states", f"--student_dir={student_dir}", f"--traj_dir={traj_dir}", f"--png={tmp_path / 's.png'}"])
    (title, grid, key), = drawn[0][0]
    kw = drawn[0][1]
    assert re.search(r"block \d+ \(answer positions \d+-\d+; blocks from 0\)", title) and "y_star='completion_plus'" in title
    assert "y* = the block completion" in title and "order the teacher finalized" in kw["xlabel"]
    assert all(re.fullmatch(r"\d+\n[0-7]", c) for c in kw["cols"])  # position over order within the block
    assert "y' (consistency target)" in kw["rows"] and any(r.startswith("DLM copy") for r in kw["rows"])
    assert "noised copy of the ground truth" in key["L"][1] and "pass at y" in key["D"][1]
    show.main(["--view=masks", f"--png={tmp_path / 'm.png'}"])
    titles = [t for t, _, _ in drawn[1][0]]
    assert "first step" in titles[3] and "a later step" in titles[4]


def test_losses_walk_prints_the_losses_training_computes(teacher_dir, student_dir, traj_dir):
    """The walk's losses are cdlm_losses' own on the same row and drawn state, and its block the states view's."""
    import numpy as np
    import train
    from bench import load_models
    from configurator import check
    from data.trajectories import TrajectorySets, load_trajectories
    cfg = check(show.config, dict(view="losses", teacher_dir=teacher_dir, student_dir=student_dir, traj_dir=traj_dir,
                                  index=3))
    models = load_models(cfg, ["cdlm", "dlm"], "cpu")
    (model, ckpt, _), meta = models["student"], models["student"][1]["data_meta"]
    text, c, bs = show.losses_walk(cfg, models, meta), ckpt["config"], model.cfg.block_size
    arrays, _ = load_trajectories(traj_dir)
    batch = TrajectorySets([arrays], [None]).batch(np.array([3]), "cpu")
    gen = torch.Generator().manual_seed(cfg["seed"])
    st = train.draw_states(batch["step"], bs, c["y_star"], gen)
    head = models["teacher"][1]["model"]["lm_head.weight"].float()
    with torch.no_grad():
        parts = train.cdlm_losses(model, batch, st, head, meta["mask_id"], bs, c["dlm_noise"], c["eps"], gen)
    for name, v in parts.items():
        assert re.search(rf"^  {name} +{c['w_' + name]} x {v.item():.3g}  ", text, re.M), (name, text)
    assert re.search(r"^  teacher \(1, 48, \d+\) ", text, re.M) and "no gradient" in text
    states = show.training_state(check(show.config, dict(view="states", student_dir=student_dir, traj_dir=traj_dir,
                                                             index=3)), "cpu").text
    assert re.search(r"block \d+ \(answer positions \d+\.\.\d+", states).group(0) in text


def test_confidence_and_infill_views(teacher_dir, student_dir, ar_dir, data_dir):
    from configurator import check
    from data.common import get_tokenizer, load_split
    from bench import load_models
    cfg = check(show.config, dict(teacher_dir=teacher_dir, student_dir=student_dir, ar_dir=ar_dir,
                                  state="+3>8,*7>_,+2>_", prompt="5:+3*7+2*4+1="))
    models = load_models(cfg, ["dlm", "cdlm", "ar"], "cpu")
    meta = models["teacher"][1]["data_meta"]
    tok = get_tokenizer(meta)
    text = show.confidence_view(cfg, models, meta, tok)
    assert len(text.splitlines()) == 2 + 4  # two header lines, then the 4 masked positions of blocks 0-1
    from data.common import task_module
    rows = torch.as_tensor(load_split(data_dir, "test", meta)[:16].astype("int64"))
    probes = task_module(meta).infill_probes(tok, meta, rows[:, :meta["prompt_len"]], rows[:, meta["prompt_len"]:])
    prompts, answers, hole, hidden = probes["operand"]
    assert hidden is None
    for p, a, h in zip(prompts.tolist(), answers.tolist(), hole.tolist()):  # the '+' step's digit, twice
        j = h.index(True)
        assert sum(h) == 1 and tok.decode([a[j - 1]]) == "+" and tok.decode([a[j + 1]]) == ">"
        assert p.count(meta["mask_id"]) == 1 and tok.decode([p[p.index(meta["mask_id"]) - 1]]) == "+"
    assert probes["value"].hole.sum(1).eq(1).all()  # one-digit values
    last = probes["last"]
    assert 0 < len(last.prompts) < len(rows)  # the problems whose last step is a '+'
    for p, a, h, d in zip(*(t.tolist() for t in last)):
        text, j = tok.decode(a), h.index(True)
        assert sum(h) == 1 == sum(d) and d.index(True) == j - 2  # the value scored, its step's digit hidden
        assert text[j - 3] == "+" and text[j + 1] == "#" and text[j] == text[j + 2]  # '#' names it outright
        assert p.count(meta["mask_id"]) == 1 and tok.decode([p[p.index(meta["mask_id"]) - 1]]) == "+"
    acc = show.infill(models, meta, probes)
    assert set(acc) == {(p, w) for p in ("value", "operand", "last") for w in ("teacher", "student", "ar")}
    assert all(0 <= a <= 1 for a in acc.values())


@pytest.mark.compiled
def test_compiled_replay_shows_the_eager_decode(runs, student_dir, capsys):
    """--compile: every frame's tokens and confidences as eager, the compile left out of the times."""
    eager = next(r for r in runs[0] if r["name"] == "cdlm")
    show.main([f"--student_dir={student_dir}", "--methods=cdlm", "--compile", "--color=never"])
    compiled_text = capsys.readouterr().out
    untimed = lambda text: re.sub(r" *[0-9.]+ ms", " ms", text)
    assert untimed(compiled_text) == untimed(render.render_compare([eager], runs[2], runs[1], color=False) + "\n")


def test_gif_replay_has_a_frame_per_step(runs):
    """--gif: one frame per step of the longest decode and one for the answers (needs matplotlib)."""
    pytest.importorskip("matplotlib")
    from PIL import Image
    import io
    runs, meta, tok = runs
    runs = [{**r, "frames": r["frames"][:3 + k % 2]} for k, r in enumerate(runs)]  # a few steps: fast to draw
    data = render.replay_gif(runs, tok, meta, "5:+3*7+2*4+1=", ms_per_step=100)
    img = Image.open(io.BytesIO(data))
    assert img.format == "GIF" and img.n_frames == max(len(r["frames"]) for r in runs) + 1


def test_pictures_are_refused_where_no_view_draws_them(tmp_path, student_dir):
    from configurator import CDLMError
    with pytest.raises(CDLMError, match="gif"):
        show.main(["--view=masks", f"--gif={tmp_path / 'a.gif'}"])
    with pytest.raises(CDLMError, match=r"gif=.*\.gif"):
        show.main([f"--student_dir={student_dir}", "--methods=cdlm", f"--gif={tmp_path / 'a.png'}"])
    with pytest.raises(CDLMError, match="png"):
        show.main(["--view=confidence", f"--png={tmp_path / 'a.png'}"])


def test_the_confidence_example_is_picked_by_its_rule(monkeypatch):
    """pick_state: the first state of the teacher's decode where a value that waits on a masked one
    is under the threshold for the teacher and above it, rightly, for the student; else None."""
    from types import SimpleNamespace as NS
    M, answer = 9, [1, 3, 2, 4]
    states = [[1, M, M, M], [1, M, 2, M], [1, 3, 2, M], answer]
    frames = [dict(tokens=t, picked=[a != b for a, b in zip(t, prev)]) for t, prev in zip(states, [[M] * 4] + states)]
    monkeypatch.setattr(show, "trace", lambda *a: (frames, answer))
    model = lambda name: NS(cfg=NS(block_size=4), name=name)
    models = {"teacher": (model("teacher"), None, None), "student": (model("student"), None, None)}

    def fake(right_from, teacher_sure=False):
        def proposals(m, meta, prompt, state):
            k = next(i for i, t in enumerate([[M] * 4] + states) if t == state[0].tolist())  # which state
            conf = torch.tensor([1.0, 1.0, 1.0, 0.95 if m.name == "student" else (1.0 if teacher_sure else 0.5)])
            pred = torch.tensor(answer if m.name == "teacher" or k >= right_from else [1, 3, 2, 5])
            return conf, pred
        monkeypatch.setattr(show, "proposals", proposals)
    fake(right_from=2)  # the student is wrong at position 3 in the first two states
    state, j = show.pick_state(models, dict(gen_len=4, mask_id=M), torch.zeros(1, 2, dtype=torch.long), 0.9)
    assert j == 3 and state[0].tolist() == [1, M, 2, M]  # state 2: position 3 still waits on position 1
    fake(right_from=3)  # right only where nothing before it is masked any more: not a dependent value
    assert show.pick_state(models, dict(gen_len=4, mask_id=M), torch.zeros(1, 2, dtype=torch.long), 0.9) is None
    fake(right_from=0, teacher_sure=True)
    assert show.pick_state(models, dict(gen_len=4, mask_id=M), torch.zeros(1, 2, dtype=torch.long), 0.9) is None


def test_one_folder_of_checkpoints_names_every_role(tmp_path, teacher_dir, student_dir, ar_dir, capsys):
    """--checkpoints=D (ref/arithmetic): D/teacher, D/student, D/ar, unless a role's own option is given."""
    from configurator import CDLMError
    for role, d in (("teacher", teacher_dir), ("student", student_dir), ("ar", ar_dir)):
        (tmp_path / role).symlink_to(d)
    show.main([f"--checkpoints={tmp_path}", "--methods=cdlm,ar", "--color=never"])
    via_folder = capsys.readouterr().out
    show.main([f"--student_dir={student_dir}", f"--ar_dir={ar_dir}", "--methods=cdlm,ar", "--color=never"])
    untimed = lambda text: re.sub(r" *[0-9.]+ ms", " ms", text)
    assert untimed(via_folder) == untimed(capsys.readouterr().out)
    with pytest.raises(CDLMError, match="no checkpoint at .*elsewhere"):  # a role's own option wins
        show.main([f"--checkpoints={tmp_path}", f"--student_dir={tmp_path / 'elsewhere'}", "--methods=cdlm"])
    with pytest.raises(CDLMError, match="checkpoints"):
        show.main([f"--checkpoints={tmp_path}", "--view=masks"])


def test_infilling_may_compare_a_teacher_the_student_did_not_come_from(tmp_path, teacher_dir, student_dir, ar_dir,
                                                                       data_dir, capsys):
    """The infilling view compares masks (a teacher trained with prompt_noise against the student);
    the decoders' comparison still refuses a student of another teacher."""
    from configurator import CDLMError
    ckpt = torch.load(f"{student_dir}/ckpt.pt", weights_only=True)
    ckpt["teacher_hash"] = "0" * 16
    ckpt["meta_hash"] = meta_hash(ckpt)  # a student this code made from another teacher
    (tmp_path / "s").mkdir()
    torch.save(ckpt, tmp_path / "s" / "ckpt.pt")
    dirs = [f"--teacher_dir={teacher_dir}", f"--student_dir={tmp_path / 's'}", f"--ar_dir={ar_dir}"]
    with pytest.raises(CDLMError, match="another teacher"):
        show.main(dirs[:2] + ["--methods=cdlm,dlm"])
    show.main(dirs + ["--view=infill", "--num_eval=8", f"--data_dir={data_dir}"])
    out = capsys.readouterr().out
    assert f"student: {tmp_path / 's'}" in out and "| operand |" in out


def test_infilling_hides_the_hidden_positions_from_every_model(teacher_dir, student_dir, ar_dir, monkeypatch):
    """A probe's hidden positions start masked for every model and are not scored; the left-only
    models see nothing from the first masked position on, the teacher everything else."""
    from configurator import check
    from bench import load_models
    from data.common import Probe
    cfg = check(show.config, dict(teacher_dir=teacher_dir, student_dir=student_dir, ar_dir=ar_dir))
    models = load_models(cfg, ["dlm", "cdlm", "ar"], "cpu")
    meta = models["teacher"][1]["data_meta"]
    L, M = meta["gen_len"], meta["mask_id"]
    answers = torch.randint(0, M, (3, L))
    hole, hidden = torch.zeros(3, L, dtype=torch.bool), torch.zeros(3, L, dtype=torch.bool)
    hole[:, 9], hidden[:, 4] = True, True
    seen, real = {}, show.generate
    def spy(model, prompts, gen_len, mask_id, eos_id, s, init=None):
        seen[model.cfg.attn] = init
        return real(model, prompts, gen_len, mask_id, eos_id, s, init=init)._replace(tokens=answers.clone())
    monkeypatch.setattr(show, "generate", spy)
    prompts = torch.zeros(3, meta["prompt_len"], dtype=torch.long)
    acc = show.infill(models, meta, {"p": Probe(prompts, answers, hole, hidden), "plain": (prompts, answers, hole)})
    assert all(a == 1.0 for a in acc.values())  # scored on the hole alone
    teacher = seen["bidirectional"]  # the last probe's: hidden=None
    assert (teacher[:, 9] == M).all() and (teacher[:, 4] == answers[:, 4]).all()
    show.infill(models, meta, {"p": Probe(prompts, answers, hole, hidden)})
    assert ((seen["bidirectional"] == M) == (hole | hidden)).all()
    for attn in ("block_causal", "causal"):
        assert (seen[attn][:, :4] == answers[:, :4]).all() and (seen[attn][:, 4:] == M).all()
