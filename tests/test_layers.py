"""Imports flow one way (README, section 6): every module imports only modules of lower layers,
function-level imports included, so there is no circle and each layer can be read without the ones above."""
import ast
import glob
import os

from conftest import ROOT

LAYERS = [("configurator",), ("files", "runtime"), ("data.common",), ("data.trajectories", "data.*.prepare"), ("model",), ("checkpoint",),
          ("render",), ("sample",), ("roofline", "startup", "results"), ("tables",), ("train", "collect", "bench"), ("show",), ("demo",)]


def layer(name):
    """The layer of a repo module, or None for anything else (torch, the standard library)."""
    for i, names in enumerate(LAYERS):
        for n in names:
            if name == n or ("*" in n and name.startswith("data.") and name.endswith(".prepare")):
                return i
    return None


def imports(path):
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_imports_flow_one_way():
    files = glob.glob(os.path.join(ROOT, "*.py")) + glob.glob(os.path.join(ROOT, "data", "**", "*.py"), recursive=True)
    seen = 0
    for path in files:
        name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        me = layer(name)
        assert me is not None, f"{name} has no layer in LAYERS"
        for other in imports(path):
            them = layer(other)
            if them is not None:
                seen += 1
                assert them < me, f"{name} imports {other}, which is not below it"
    assert seen > 30  # the walk found the repo's imports
