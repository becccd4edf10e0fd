"""nanoGPT-style configuration: files, --key=value, and refusals."""
import pytest

from configurator import configure

DEFAULTS = dict(out_dir="out", lr=1e-3, iters=10, flag=False, threshold=None)


def test_file_then_flags(tmp_path):
    f = tmp_path / "c.py"
    f.write_text("iters = 20\nlr = 1  # an int where a float is expected is fine\nimport math\n")
    cfg = configure(DEFAULTS, [str(f), "--iters=30", "--out_dir=runs/a", "--flag", "--threshold=0.9"])
    assert cfg == dict(out_dir="runs/a", lr=1.0, iters=30, flag=True, threshold=0.9)
    assert DEFAULTS["iters"] == 10  # defaults untouched


@pytest.mark.parametrize("argv, message", [
    (["--itres=3"], "unknown key 'itres'"),
    (["--iters=3.5"], "iters must be int"),
    (["--flag=yes"], "flag must be bool"),
    (["--iters"], "expected --iters=value"),
    (["nope.py"], "config file 'nope.py' not found"),
])
def test_refusals(argv, message):
    with pytest.raises(SystemExit, match=message):
        configure(DEFAULTS, argv)


def test_unknown_key_in_file(tmp_path):
    f = tmp_path / "c.py"
    f.write_text("learning_rate = 1e-3\n")
    with pytest.raises(SystemExit, match=f"unknown key 'learning_rate' in {f}"):
        configure(DEFAULTS, [str(f)])
    f.write_text("iters = (\n")
    with pytest.raises(SystemExit, match="SyntaxError"):
        configure(DEFAULTS, [str(f)])


def test_every_preset_loads_against_its_script():
    """Each file in config/ names only keys its script knows, with the right types."""
    import glob
    import os

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
            assert cfg["init_from"] == "teacher" and cfg["traj_dir"]
        if name.startswith("cuda_") and script is train:
            assert cfg["device"] == "cuda" and cfg["dtype"] == "auto" and cfg["compile"]
            if cfg["mode"] != "ar":
                assert cfg["block_size"] in (16, 32)
