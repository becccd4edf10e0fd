"""
The README's narrated outputs, rerun on the reference checkpoints it narrates (ref/): every fenced
block that starts with `$ python ...` and reads ref/ must print what the README shows (times
excepted; a line starting with '...' stands for lines left out).
"""
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_blocks(text):
    """[(command, expected lines)] of the README's ```-fenced blocks whose first line is '$ python'."""
    blocks = re.findall(r"```\n\$ (python [^\n]*)\n(.*?)```", text, re.S)
    return [(cmd, out.rstrip("\n").splitlines()) for cmd, out in blocks]


def untimed(line):
    return re.sub(r"\s*[0-9]+\.[0-9]+ ms", " ms", line).rstrip()


def shows(expected, got):
    """expected, with '...' lines standing for any lines, appears in got in order, each stretch
    between them as consecutive lines."""
    chunks, cur = [], []
    for line in expected:
        if line.startswith("..."):
            chunks.append(cur)
            cur = []
        else:
            cur.append(untimed(line))
    chunks.append(cur)
    got, at = [untimed(l) for l in got], 0
    for chunk in filter(None, chunks):
        for i in range(at, len(got) - len(chunk) + 1):
            if got[i:i + len(chunk)] == chunk:
                at = i + len(chunk)
                break
        else:
            return chunk
    return None


def test_shows_reads_elisions():
    assert shows(["a", "...", "c"], ["a", "b", "c"]) is None
    assert shows(["a", "c"], ["a", "b", "c"]) == ["a", "c"]
    assert shows(["x   1.5 ms"], ["x 123.2 ms"]) is None


# out/ is made by an earlier command; the infilling view reads the prepared test split (and takes
# a minute): those blocks are rerun by hand, not here
BLOCKS = [b for b in readme_blocks(open(os.path.join(ROOT, "README.md")).read())
          if "ref/" in b[0] and "out/" not in b[0] and "--view=infill" not in b[0]]


def test_the_readme_narrates_the_reference_checkpoints():
    """The teacher's decode (section 1), the confidences (3) and every decoder side by side (4)."""
    cmds = [c for c, _ in BLOCKS]
    assert any("sample.py" in c and "--show" in c for c in cmds)
    assert any("--view=confidence" in c for c in cmds) and any("show.py" in c and "--view" not in c for c in cmds)


@pytest.mark.parametrize("cmd, expected", BLOCKS, ids=[c[:60] for c, _ in BLOCKS])
def test_readme_output_reproduces(cmd, expected):
    argv = shlex.split(cmd)
    out = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    missing = shows(expected, out.stdout.splitlines())
    assert missing is None, f"{cmd}\nthe README shows\n" + "\n".join(missing) + "\nbut it printed\n" + out.stdout
