"""bench.py end to end on the tiny models, and its helpers."""
import json

import pytest
import torch

import bench
import tables
from bench import METHODS, answer_tokens, decoded_tokens, ratios, run, timed_rounds, timings


def test_decoded_and_answer_tokens():
    eos = 2
    t = torch.tensor([[5, 5, 5, eos, eos, eos, eos, eos], [5, 5, 5, 5, 5, eos, eos, eos], [5] * 8])
    assert decoded_tokens(t, eos, 4, early_stop=True).tolist() == [4, 8, 8]
    assert decoded_tokens(t, eos, 4, early_stop=False).tolist() == [8, 8, 8]
    assert answer_tokens(t, eos).tolist() == [4, 6, 8]


def test_bench_end_to_end(tmp_path, teacher_dir, student_dir, ar_dir, capsys):
    out = tmp_path / "bench.json"
    report = run({"teacher_dir": teacher_dir, "student_dir": student_dir, "ar_dir": ar_dir,
                  "num_eval": 16, "batch_size": 8, "latency_n": 2, "repeats": 3, "min_s": 0.0, "out_path": str(out),
                  "device": "cpu", "sweep": True, "sweep_thresholds": [0.5, 0.9], "compile": "off"})  # profile: below
    saved = json.loads(out.read_text())
    assert set(saved["methods"]) == set(METHODS)
    for r in saved["methods"].values():
        assert set(r) >= {"final_acc", "whole_acc", "nfe", "tokens_per_step", "latency_ms", "throughput_tok_s",
                          "speedup_latency_vs_dlm", "speedup_throughput_vs_dlm_stop", "flops_per_token",
                          "bytes_per_token", "arithmetic_intensity", "achieved_gflops"}
        assert r["latency_ms"] > 0 and r["throughput_tok_s"] > 0 and r["flops_per_token"] > 0
        assert r["predicted"]["latency_ms"] > 0 and r["predicted"]["throughput_tok_s"] > 0 and "compiled" not in r
        assert len(r["rounds"]["latency_ms"]) == len(r["rounds"]["throughput_tok_s"]) == 3  # one per repeat
    m = saved["methods"]
    assert m["dlm"]["nfe"] == 48 and m["dlm"]["tokens_per_step"] == 1.0 and m["dlm"]["speedup_latency_vs_dlm"] == 1.0
    assert m["dlm_stop"]["nfe"] <= 48 and m["dlm_stop"]["settings"]["early_stop"]
    assert m["ar"]["tokens_per_step"] == 1.0
    assert m["cdlm"]["settings"]["cache"] == "exact" and m["dlm_threshold"]["settings"]["cache"] == "none"
    assert m["dlm_dual_cache"]["settings"]["cache"] == "dual" and 0 <= m["dlm_dual_cache"]["differs_from_dlm_threshold"] <= 1
    # naive step cutting uses the student's steps per block, rounded
    spb = m["dlm_fewer_steps"]["settings"]["steps_per_block"]
    assert spb == max(1, min(8, round(8 / m["cdlm"]["tokens_per_step"])))
    assert [p["threshold"] for p in saved["sweep"]["cdlm"]] == [0.5, 0.9]
    assert [p["block_size"] for p in saved["sweep"]["cdlm_block_size"]] == [4, 8, 16]
    printed = capsys.readouterr().out
    assert "| cdlm: threshold | 0.5 | 0.9 |" in printed and "| cdlm_block_size: block_size | 4 | 8 | 16 |" in printed
    mach = saved["machine"]
    assert mach["torch"] == torch.__version__ and mach["peak_gflops"] > 0 and mach["peak_gb_s"] > 0
    assert report["settings"]["num_eval"] == 16
    assert "profile" not in saved
    # --table prints the stored report's tables again, from the file alone, and runs nothing
    assert run({"table": str(out)}) is None and capsys.readouterr().out.strip() == tables.table(saved)
    seed_file = tmp_path / "seed1.json"  # demo.py's seed file keeps the bench's parts under its own names
    seed_file.write_text(json.dumps(dict(bench=saved["methods"], bench_settings=saved["settings"],
                                         bench_machine=saved["machine"])))
    run({"table": str(seed_file)})
    assert capsys.readouterr().out.strip() == tables.table({k: saved[k] for k in ("methods", "settings", "machine")})


def test_table_refuses_what_is_not_a_bench_report(tmp_path):
    from configurator import CDLMError
    bad = tmp_path / "x.json"
    bad.write_text('{"methods": {}}')
    with pytest.raises(CDLMError, match="not a bench report"):
        run({"table": str(bad)})
    with pytest.raises(CDLMError, match="option num_eval=3 has no effect with --table"):
        run(bench.configure(bench.config, [f"--table={bad}", "--num_eval=3"]))
    good = {k: v for k, v in json.loads(open("results/arithmetic/rounds_ref_2threads.json").read()).items()
            if k != "profile"}  # its rows name methods this edit leaves out
    for change, message in ((dict(latency_ms="fast"), "methods.cdlm: field latency_ms: expected float"),
                            (dict(nfe=0), "field nfe: expected float in \\[1, inf\\), got 0"),
                            (dict(final_acc=0.5), "whole_acc=1.0 is above methods.cdlm.final_acc")):
        bad.write_text(json.dumps({**good, "methods": {"cdlm": {**good["methods"]["cdlm"], **change}}}))
        with pytest.raises(CDLMError, match=message):  # a figure no bench measures, printed as a result: refused
            run({"table": str(bad)})
    bad.write_text(json.dumps({**good, "methods": {"bogus": good["methods"]["cdlm"]}}))
    with pytest.raises(CDLMError, match="row 'bogus' is no method of bench.py"):
        run({"table": str(bad)})


@pytest.mark.compiled
def test_bench_times_eager_and_compiled(tmp_path, student_dir, capsys):
    run({"student_dir": student_dir, "methods": ["cdlm"], "num_eval": 16, "batch_size": 8, "latency_n": 2, "repeats": 1,
         "min_s": 0.0, "out_path": str(tmp_path / "bench.json"), "device": "cpu", "compile": "both", "profile": True})
    saved = json.loads((tmp_path / "bench.json").read_text())
    r = saved["methods"]["cdlm"]
    assert r["latency_ms"] > 0 and r["compiled"]["latency_ms"] > 0 and r["compiled"]["compile_s"] > 0
    assert r["compiled"]["differs_from_eager"] == 0.0
    assert r["predicted"]["latency_ms"] > 0 and r["compiled"]["predicted"]["throughput_tok_s"] > 0
    assert set(saved["profile"]) == {"cdlm", "cdlm compiled"}
    for prof in saved["profile"].values():  # the passes are timed in a replay, apart from the decode: their order
        assert prof["model_ms_per_answer"] > 0 and prof["ms_per_answer"] > 0  # is timing, not tested
        assert prof["step_ms_per_answer"] > 0 and prof["loop_ms_per_answer"] == pytest.approx(
            prof["ms_per_answer"] - prof["step_ms_per_answer"])
        assert prof["aten_ops_per_step"] > 0 and prof["passes_per_answer"] == pytest.approx(r["nfe"], rel=0.5)
    ops = {name: prof["aten_ops_per_step"] for name, prof in saved["profile"].items()}
    assert ops["cdlm"] > 2 * ops["cdlm compiled"]  # a compiled step is one graph: few operators launched
    printed = capsys.readouterr().out
    assert "| under torch.compile |" in printed and "| each on its faster path |" in printed
    assert "| cdlm | eager |" in printed and "| cdlm | compiled |" in printed
    assert r["fastest"]["latency_path"] in ("eager", "compiled") and r["fastest"]["latency_ms"] == min(
        r["latency_ms"], r["compiled"]["latency_ms"])


def test_each_method_on_its_faster_path():
    """A compiled method slower than itself eager: its fair ratios take its eager timings, and the
    table says so."""
    rounds = lambda lat, thr: dict(latency_ms=lat, throughput_tok_s=thr, rounds=dict(latency_ms=[lat], throughput_tok_s=[thr]))
    got = {("cdlm", False): rounds(20.0, 1000.0), ("cdlm", True): rounds(10.0, 1100.0),
           ("dlm", False): rounds(80.0, 50.0), ("dlm", True): rounds(100.0, 40.0),
           ("dlm_stop", False): rounds(70.0, 60.0), ("dlm_stop", True): rounds(60.0, 70.0)}
    f = bench.fastest(got, "cdlm")
    assert (f["latency_path"], f["throughput_path"]) == ("compiled", "compiled")
    assert f["speedup_latency_vs_dlm"] == 8.0 and f["speedup_throughput_vs_dlm"] == 22.0  # dlm eager, not compiled
    assert f["speedup_latency_vs_dlm_stop"] == 6.0
    assert bench.fastest(got, "dlm")["latency_path"] == "eager"
    report = tables.stored_report("results/arithmetic/seed1337.json", list(bench.METHODS))
    for r in report["methods"].values():
        r["fastest"] = dict(r, latency_path="eager", throughput_path="eager")
    d, p = report["methods"]["dlm"], report["methods"]["dlm_prefix_cache"]
    d["compiled"]["latency_ms"] = d["latency_ms"] + 30
    p["compiled"]["throughput_tok_s"] = p["throughput_tok_s"] - 100
    text = tables.table(report)
    assert f"| dlm | {d['latency_ms']:.1f} eager | {d['throughput_tok_s']:,.0f} eager |" in text
    assert f"note: dlm compiled is slower than eager at batch 1 ({d['latency_ms'] + 30:.1f} against " \
           f"{d['latency_ms']:.1f} ms); " in text
    assert f"dlm_prefix_cache compiled is slower than eager at batch 64 ({p['throughput_tok_s'] - 100:,.0f} against " \
           f"{p['throughput_tok_s']:,.0f} tok/s)" in text
    assert "The faster-path table takes the faster one for each." in text
    d["compiled"]["latency_ms"] = d["latency_ms"] + 0.012  # a tie to one decimal: shown with the digits that differ
    assert f"dlm compiled is slower than eager at batch 1 ({d['latency_ms'] + 0.012:.3f} against " \
           f"{d['latency_ms']:.3f} ms)" in tables.table(report)
    plain = tables.stored_report("results/arithmetic/seed1337.json", list(bench.METHODS))
    for r in plain["methods"].values():  # a report without faster-path figures
        r.pop("fastest", None)
    plain["methods"]["dlm"]["compiled"]["latency_ms"] = plain["methods"]["dlm"]["latency_ms"] + 30
    plain = tables.table(plain)
    assert "| each on its faster path |" not in plain and "The compiled ratios above take it as it is." in plain


def test_speedups_are_ratios_within_rounds():
    # a slow round (the machine busy) slows both methods: the ratio within each round is 10, 20, 2
    # (median 10), while the ratio of the medians would be 10 / 2 = 5
    mine = {"rounds": {"latency_ms": [1.0, 2.0, 4.0], "throughput_tok_s": [100.0, 50.0, 400.0]}}
    base = {"rounds": {"latency_ms": [10.0, 40.0, 8.0], "throughput_tok_s": [10.0, 1.0, 200.0]}}
    assert ratios(mine, base) == {"latency": 10.0, "throughput": 10.0}
    assert timings(([0.001, 0.004, 0.002], [5.0, 1.0, 3.0], [])) == dict(
        latency_ms=2.0, throughput_tok_s=3.0, rounds=dict(latency_ms=[1.0, 4.0, 2.0], throughput_tok_s=[5.0, 1.0, 3.0]))


def test_repeat_for_sums_calls_until_min_s():
    """Each timed figure of a round repeats until its calls add up to min_s, once at least."""
    calls = []

    def run():
        calls.append(1)
        return 2, 0.3
    assert bench.repeat_for(1.0, run) == (8, pytest.approx(1.2)) and len(calls) == 4  # 0.9 s after three: a fourth
    assert bench.repeat_for(0.0, run) == (2, 0.3) and len(calls) == 5


def test_timed_rounds_repeat_each_figure_until_min_s(monkeypatch):
    """With min_s, a timed round decodes the latency set and the batch until each takes min_s (the
    untimed round once); the figures are per answer and per second of all of them."""
    calls = []

    def fake(model, meta, prompt, settings):
        calls.append(len(prompt))
        return torch.full((len(prompt), 4), 5), None, 0.25 * len(prompt)  # a batch of 3: 0.75 s
    monkeypatch.setattr(bench, "timed_decode", fake)
    got = timed_rounds({"a": ("A", None)}, {"eos_id": 2}, torch.zeros(3, 1), {"repeats": 1, "latency_n": 2,
                                                                             "batch_size": 3, "min_s": 1.0})
    assert calls == [1, 1, 3] + [1, 1, 1, 1, 3, 3]  # the latency set twice (1 s), the batch twice (1.5 s)
    assert got["a"] == ([0.25], [24 / 1.5], [])


def test_timed_rounds_time_every_method_in_each_round(monkeypatch):
    calls = []

    def fake(model, meta, prompt, settings):
        calls.append((model, len(prompt)))
        return torch.full((len(prompt), 4), 5), None, 0.5

    monkeypatch.setattr(bench, "timed_decode", fake)
    cfg = {"repeats": 2, "latency_n": 2, "batch_size": 3, "min_s": 0.0}
    memos = []

    def predict(times):  # the cost model of "a", run right before its decodes in each timed round
        calls.append(("predict", len(memos)))
        memos.append(times)
        times[len(memos)] = 1
        return {"latency_ms": 10.0 * len(memos), "throughput_tok_s": 5.0}
    got = timed_rounds({"a": ("A", None), "b": ("B", None)}, {"eos_id": 2}, torch.zeros(3, 1), cfg, {"a": predict})
    one_round = [("A", 1), ("A", 1), ("A", 3), ("B", 1), ("B", 1), ("B", 3)]
    assert calls == one_round + [("predict", 0), *one_round] + [("predict", 1), *one_round]  # the untimed
    # round, then every method once per round
    assert memos[0] == {1: 1} and memos[1] == {2: 1}  # the step timings memoized within a round, not across
    assert got["b"] == ([0.5, 0.5], [24.0, 24.0], [])
    assert got["a"][:2] == ([0.5, 0.5], [24.0, 24.0]) and timings(got["a"])["predicted"] == {
        "latency_ms": 15.0, "throughput_tok_s": 5.0,  # the medians, and each round's prediction
        "rounds": {"latency_ms": [10.0, 20.0], "throughput_tok_s": [5.0, 5.0]}} and "predicted" not in timings(got["b"])


def test_cost_model_sums_the_decodes_steps(monkeypatch, student_dir, teacher_dir):
    """pass_shapes sees every pass of a decode; predict is the sum of their steps' costs, each shape's
    cost looked up once (a fake step_time: no timing is asserted); step_time runs the sampler's step."""
    import roofline
    from data.common import checkpoint_data, load_split
    from sample import generate, load_for_decoding
    for path, name in ((student_dir, "cdlm"), (teacher_dir, "dlm")):
        model, ckpt, _ = load_for_decoding(f"{path}/ckpt.pt", {}, "cpu")
        meta = ckpt["data_meta"]
        prompts = bench.prompts_of(load_split(checkpoint_data(ckpt, None)[0], "test", meta)[:6], meta, "cpu")
        settings = METHODS[name].decoding(model.cfg.block_size, 0.5, None)
        one = roofline.pass_shapes(model, meta, prompts[:3], settings, 1)
        nfe = sum(generate(model, prompts[i:i + 1], meta["gen_len"], meta["mask_id"], meta["eos_id"], settings).nfe.item()
                  for i in range(3))
        assert sum(one.shapes.values()) == nfe and {b for b, _, _, _ in one.shapes} == {1}
        batch = roofline.pass_shapes(model, meta, prompts, settings, 6)
        assert max(b for b, _, _, _ in batch.shapes) == 6 and batch.tokens > 0
        assert len({(b, hi - lo) for b, lo, hi, _ in batch.shapes}) == len(batch.shapes)  # one entry a shape
        assert roofline.step_time(model, meta, settings, 2, *next(iter(batch.shapes))[1:], repeats=1) > 0
        calls = []

        def fake(model, meta, settings, b, lo, hi, block):
            calls.append((b, hi - lo, settings.cache))
            return 1e-3 * b + 1e-4 * (hi - lo)
        monkeypatch.setattr(roofline, "step_time", fake)
        cost = lambda passes: sum(n * fake(model, meta, settings, *shape) for shape, n in passes.shapes.items())
        p = roofline.predict(model, meta, prompts, settings, 6, 3, times := {})
        assert len(calls) == len(set(calls)) == len(times)  # each shape timed once
        assert p["steps_latency_ms"] == pytest.approx(1000 * cost(one) / 3)  # the loop's time comes on top
        assert p["steps_throughput_tok_s"] == pytest.approx(batch.tokens / cost(batch))
        assert p["latency_ms"] > p["steps_latency_ms"] and p["throughput_tok_s"] < p["steps_throughput_tok_s"]
        assert one.loop_s > 0 and batch.loop_s > 0
        monkeypatch.undo()


def test_table_prints_predicted_beside_measured():
    report = tables.stored_report("results/arithmetic/seed1337.json", list(bench.METHODS))
    m = report["methods"]
    for r in m.values():  # the predictions below alone, of a cost model of the passes alone
        r.pop("predicted", None)
        r.get("compiled", {}).pop("predicted", None)
    assert "predicted" not in tables.table(report)
    m["cdlm"]["predicted"] = dict(latency_ms=20.0, throughput_tok_s=4000.0)
    m["dlm"]["predicted"] = dict(latency_ms=160.0, throughput_tok_s=400.0)
    m["cdlm"]["compiled"]["predicted"] = dict(latency_ms=10.0, throughput_tok_s=12000.0)
    text = tables.table(report)
    assert "| from the passes alone | path | latency (ms, batch 1) | predicted | error | throughput (tok/s) | predicted " \
           "| error |" in text
    assert f"| cdlm | eager | {m['cdlm']['latency_ms']:.1f} | 20.0 | " \
           f"{100 * (20 / m['cdlm']['latency_ms'] - 1):+.0f}% |" in text
    c = m["cdlm"]["compiled"]
    assert f"| cdlm | compiled | {c['latency_ms']:.1f} | 10.0 | {100 * (10 / c['latency_ms'] - 1):+.0f}% | " \
           f"{c['throughput_tok_s']:,.0f} | 12,000 | {100 * (12000 / c['throughput_tok_s'] - 1):+.0f}% |" in text
    assert f"cdlm vs dlm from the passes alone (eager), the ceiling: 8.0x latency / 10.0x throughput; measured " \
           f"{m['cdlm']['speedup_latency_vs_dlm']:.1f}x" in text
    assert "(compiled), the ceiling" not in text  # dlm compiled has no prediction stored
    for r in (m["cdlm"], m["dlm"], m["cdlm"]["compiled"]):  # the cost model's parts: steps, and the loop on top
        r["predicted"].update(steps_latency_ms=r["predicted"]["latency_ms"] / 2,
                              steps_throughput_tok_s=r["predicted"]["throughput_tok_s"] * 2)
    text = tables.table(report)
    assert "| the cost model | path |" in text and "the sampler's loop around them" in text
    assert "cdlm vs dlm from the steps alone (eager), the ceiling: 8.0x latency / 10.0x throughput; predicted 8.0x / " \
           "10.0x; measured" in text
    c = m["cdlm"]  # with its rounds, the error is the median of the rounds' errors, not of the medians
    c["rounds"] = dict(latency_ms=[10.0, 30.0, 20.0], throughput_tok_s=[100.0, 300.0, 200.0])
    c["latency_ms"], c["throughput_tok_s"] = 20.0, 200.0
    c["predicted"].update(latency_ms=12.0, rounds=dict(latency_ms=[12.0, 12.0, 36.0], throughput_tok_s=[100.0, 330.0, 240.0]))
    text = tables.table(report)  # latency: +20%, -60%, +80% (the medians would say -40%); throughput: 0%, +10%, +20%
    assert "| cdlm | eager | 20.0 | 12.0 | +20% | 200 | 4,000 | +10% |" in text and "the median of the rounds' errors" not in text
    for r in (m["dlm"], m["cdlm"]["compiled"]):
        r["predicted"]["rounds"] = {k: [r["predicted"][k]] * len(r["rounds"][k]) for k in r["rounds"]}
    assert "the median of the rounds' errors" in tables.table(report)  # every prediction has its rounds
