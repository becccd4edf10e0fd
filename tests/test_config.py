"""nanoGPT-style configuration: files, --key=value, types and ranges of every option, refusals."""
import glob
import os

import pytest

from configurator import (Bool, CDLMError, Choice, Float, Int, List, Str, check, configure, defaults, fit_sizes,
                          with_options)

SPEC = dict(out_dir=Str("out"), lr=Float(1e-3, "(0, inf)"), iters=Int(10, "[1, inf)"), flag=Bool(False),
            threshold=Float(None, "(0, 1]"), cache=Bool(None), mode=Choice("a", "a", "b"),
            sizes=List([4, 8], Int(None, "[1, inf)")), note=Str(None))


def test_file_then_flags(tmp_path):
    f = tmp_path / "c.py"
    f.write_text("iters = 20\nlr = 1  # an int where a float is expected is fine\nimport math\n")
    cfg = configure(SPEC, [str(f), "--iters=30", "--out_dir=123", "--flag", "--threshold=0.9", "--cache=False",
                           "--sizes=16,32", "--mode=b"])
    assert cfg == dict(out_dir="123", lr=1.0, iters=30, flag=True, threshold=0.9, cache=False, mode="b",
                       sizes=[16, 32], note=None)
    assert defaults(SPEC)["iters"] == 10  # defaults untouched
    assert configure(SPEC, ["--sizes=[1, 2]", "--threshold=None"])["sizes"] == [1, 2]


@pytest.mark.parametrize("argv, message", [
    (["--itres=3"], "unknown option 'itres'"),
    (["--iters=3.5"], r"iters=3.5: expected int in \[1, inf\)"),
    (["--iters=0"], r"iters=0: expected int in \[1, inf\)"),
    (["--flag=yes"], "flag='yes': expected True or False"),
    (["--flag=1"], "flag=1: expected True or False"),
    (["--iters"], "expected --iters=value"),
    (["nope.py"], "config file 'nope.py' not found"),
    (["/dev/null"], "config file '/dev/null' is not a regular file"),
    # options whose default is None are typed too: never read as truthy
    (["--cache=no"], "cache='no': expected True or False or None"),
    (["--cache=false"], "cache='false': expected True or False or None"),
    (["--threshold=high"], r"threshold='high': expected float in \(0, 1\] or None"),
    (["--threshold=1.5"], r"threshold=1.5: expected float in \(0, 1\]"),
    (["--threshold=0"], r"threshold=0: expected float in \(0, 1\]"),
    (["--threshold=nan"], "threshold='nan'"),
    (["--lr=0"], r"lr=0: expected float in \(0, inf\)"),
    (["--mode=c"], "mode='c': expected one of 'a', 'b'"),
    (["--sizes=4,x"], "sizes="),
    (["--sizes=4,0"], r"each int in \[1, inf\)"),
    (["--note="], "note"),
])
def test_refusals(argv, message):
    with pytest.raises(CDLMError, match=message):
        configure(SPEC, argv)


def test_an_option_typed_wins_wherever_it_stands(tmp_path):
    """--key=value before a config file that sets the same key still takes effect (probe case 510)."""
    f = tmp_path / "c.py"
    f.write_text("iters = 20\nlr = 0.5\n")
    cfg = configure(SPEC, ["--iters=3", str(f)])
    assert cfg["iters"] == 3 and cfg["lr"] == 0.5 and cfg.typed == {"iters"}
    assert configure(SPEC, [str(f), "--iters=3"]) == cfg


def test_an_option_typed_twice_is_refused():
    """--threshold=0.5 --threshold=0.9: one of them would be dropped in silence (probe case 55)."""
    with pytest.raises(CDLMError, match=r"option threshold is given twice \(--threshold=0.5, --threshold=0.9\)"):
        configure(SPEC, ["--threshold=0.5", "--threshold=0.9"])
    with pytest.raises(CDLMError, match="option flag is given twice"):
        configure(SPEC, ["--flag", "--flag"])
    assert with_options(["c.py", "--iters=3", "--flag"], "--iters=4") == ["c.py", "--flag", "--iters=4"]


def test_a_size_typed_must_fit_the_problems_a_default_shrinks():
    """num_eval, then batch_size within it (probe case 61): typed, refused above; a default shrinks."""
    spec = dict(num_eval=Int(500, "[1, inf)"), batch_size=Int(64, "[1, inf)"))
    assert fit_sizes(configure(spec, []), 40, "the split") == dict(num_eval=40, batch_size=40)
    assert fit_sizes(configure(spec, ["--num_eval=2"]), 40, "the split") == dict(num_eval=2, batch_size=2)
    with pytest.raises(CDLMError, match="option batch_size=3: more than the 2 problems evaluated"):
        fit_sizes(configure(spec, ["--num_eval=2", "--batch_size=3"]), 40, "the split")
    with pytest.raises(CDLMError, match="option num_eval=41: more than the 40 problems of the split"):
        fit_sizes(configure(spec, ["--num_eval=41"]), 40, "the split")


def test_config_file_values_are_checked(tmp_path):
    f = tmp_path / "c.py"
    for text, message in [("learning_rate = 1e-3\n", f"unknown option 'learning_rate' in {f}"),
                          ("iters = (\n", "SyntaxError"), ("flag = 'yes'\n", "flag='yes'"),
                          ("threshold = 2\n", "threshold=2:"), ("iters = None\n", "iters=None"),
                          ("flag = True\niters: 3\n", "line 2: 'iters: 3' sets nothing .*write iters = 3")]:
        f.write_text(text)
        with pytest.raises(CDLMError, match=message):
            configure(SPEC, [str(f)])


def test_check_fills_defaults_and_refuses_unknown_keys():
    assert check(SPEC, {"iters": 5})["lr"] == 1e-3
    with pytest.raises(CDLMError, match="unknown option"):
        check(SPEC, {"iterz": 5})
    with pytest.raises(CDLMError, match="iters=True"):
        check(SPEC, {"iters": True})  # a bool is not an int


def test_every_preset_loads_against_its_script():
    """Each file in config/ names only keys its script knows, with the right types and ranges."""
    import bench
    import collect
    import train
    from conftest import ROOT
    from data.wordproblems import prepare
    files = sorted(glob.glob(os.path.join(ROOT, "config", "*.py")))
    assert len(files) >= 14
    for f in files:
        name = os.path.basename(f)
        script = bench if "bench" in name else collect if "collect" in name else prepare if "data" in name else train
        cfg = configure(script.config, [f])
        if script is train and cfg["mode"] == "cdlm":
            assert cfg["init_from"] == "teacher" and cfg["traj_dirs"]
        if name.startswith("cuda_") and script is train:
            assert cfg["device"] == "cuda" and cfg["dtype"] == "auto" and cfg["compile"]
            if cfg["mode"] != "ar":
                assert cfg["block_size"] in (16, 32)


def test_output_closed_early_is_not_an_error(tmp_path):
    """`script | head -1`: the pipe closes under the script; it stops with no traceback and SIGPIPE's
    status 141 (a training run cut short there is no finished run: `set -o pipefail` sees it)."""
    import subprocess
    import sys
    code = "from configurator import run_main\nrun_main(lambda argv: [print('x' * 1000) for _ in range(100000)])"
    p = subprocess.run(["bash", "-c", f"set -o pipefail; {sys.executable} -c \"{code}\" | head -c 10"],
                       capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert p.stdout == "x" * 10 and "Traceback" not in p.stderr and p.returncode == 141
