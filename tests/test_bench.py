"""bench.py end to end on the tiny models, and its helpers."""
import json

import pytest
import torch

from bench import METHODS, answer_tokens, decoded_tokens, run


def test_decoded_and_answer_tokens():
    eos = 2
    t = torch.tensor([[5, 5, 5, eos, eos, eos, eos, eos], [5, 5, 5, 5, 5, eos, eos, eos], [5] * 8])
    assert decoded_tokens(t, eos, 4, early_stop=True).tolist() == [4, 8, 8]
    assert decoded_tokens(t, eos, 4, early_stop=False).tolist() == [8, 8, 8]
    assert answer_tokens(t, eos).tolist() == [4, 6, 8]


def test_bench_end_to_end(tmp_path, teacher_dir, student_dir, ar_dir, capsys):
    out = tmp_path / "bench.json"
    report = run({"teacher_dir": teacher_dir, "student_dir": student_dir, "ar_dir": ar_dir,
                  "num_eval": 16, "batch_size": 8, "latency_n": 2, "repeats": 3, "out_path": str(out),
                  "device": "cpu", "sweep": True, "profile": True, "sweep_thresholds": [0.5, 0.9], "compile": "off"})
    saved = json.loads(out.read_text())
    assert set(saved["methods"]) == set(METHODS)
    for r in saved["methods"].values():
        assert set(r) >= {"final_acc", "whole_acc", "nfe", "tokens_per_step", "latency_ms", "throughput_tok_s",
                          "speedup_latency_vs_dlm", "speedup_throughput_vs_dlm_stop", "flops_per_token",
                          "bytes_per_token", "arithmetic_intensity", "achieved_gflops"}
        assert r["latency_ms"] > 0 and r["throughput_tok_s"] > 0 and r["flops_per_token"] > 0
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
    prof = saved["profile"]["cdlm"]
    # the passes are timed in a replay, apart from the decode: their order is timing, not tested
    assert prof["model_ms_per_answer"] > 0 and prof["ms_per_answer"] > 0 and prof["aten_ops_per_step"] > 10
    assert prof["passes_per_answer"] == pytest.approx(m["cdlm"]["nfe"], rel=0.5)


def test_bench_times_eager_and_compiled(tmp_path, student_dir, capsys):
    run({"student_dir": student_dir, "methods": ["cdlm"], "num_eval": 16, "batch_size": 8, "latency_n": 2, "repeats": 1,
         "out_path": str(tmp_path / "bench.json"), "device": "cpu", "compile": "both", "profile": True})
    saved = json.loads((tmp_path / "bench.json").read_text())
    r = saved["methods"]["cdlm"]
    assert r["latency_ms"] > 0 and r["compiled"]["latency_ms"] > 0 and r["compiled"]["compile_s"] > 0
    assert r["compiled"]["differs_from_eager"] == 0.0
    assert set(saved["profile"]) == {"cdlm", "cdlm compiled"}
    assert "| under torch.compile |" in capsys.readouterr().out
