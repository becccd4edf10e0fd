"""
The pages' narrated outputs, rerun: every fenced block of README.md, RESULTS.md and docs/*.md that
starts with `$ python ...` must print what the page shows (times excepted; a line starting with '...'
stands for lines left out). They read the reference checkpoints (ref/) and the committed results/.
"""
import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import PREPARE, ROOT


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


PAGES = ["README.md", "RESULTS.md", *sorted("docs/" + f for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md"))]
# the states and losses views read a few stored trajectories of the reference teacher, collected once by
# the command the README gives; the infilling view (a minute) is rerun by hand, not here
TRAJ = "out/ref_trajectories"
COLLECT = f"collect.py --teacher_dir=ref/arithmetic/teacher --n_examples=16 --out_dir={TRAJ}"
BLOCKS = [(page, cmd, out) for page in PAGES for cmd, out in readme_blocks(open(os.path.join(ROOT, page)).read())
          if "--view=infill" not in cmd and "out/" not in cmd.replace(TRAJ, "")]


@pytest.fixture(scope="module")
def trajectories(tmp_path_factory, ref_data):
    d = str(tmp_path_factory.mktemp("ref") / "ref_trajectories")
    out = subprocess.run([sys.executable, *COLLECT.replace(TRAJ, d).split()], cwd=ROOT, capture_output=True,
                         text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    return d


def test_the_readme_collects_what_its_views_read():
    readme = " ".join(open(os.path.join(ROOT, "README.md")).read().split())
    assert "python " + PREPARE in readme and "python " + COLLECT in readme
    assert readme.index("python " + PREPARE) < readme.index("python " + COLLECT)


def test_the_readme_narrates_the_reference_checkpoints():
    """The teacher's decode (section 1), the states, the losses and the confidences (3), every decoder
    side by side (4); the results page's tables from results/."""
    cmds = [c for p, c, _ in BLOCKS if p == "README.md"]
    assert any("sample.py" in c and "--show" in c for c in cmds)
    assert all(any(f"--view={v}" in c for c in cmds) for v in ("confidence", "states", "losses", "masks"))
    assert any("show.py" in c and "--view" not in c for c in cmds)
    results = [c for p, c, _ in BLOCKS if p == "RESULTS.md"]
    assert "python demo.py --report" in results and "python demo.py --task=wordproblems --report" in results
    assert any("bench.py --table=" in c for c in results)


@pytest.fixture(scope="module")
def printed(trajectories):
    """What every command of the pages prints, run as a reader runs it (a process each, one thread),
    as many at once as the machine has cores: {command: CompletedProcess}."""
    from concurrent.futures import ThreadPoolExecutor

    def run(cmd):
        return subprocess.run([sys.executable, *shlex.split(cmd.replace(TRAJ, trajectories))[1:]], cwd=ROOT,
                              capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    cmds = list(dict.fromkeys(c for _, c, _ in BLOCKS))
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return dict(zip(cmds, pool.map(run, cmds)))


@pytest.mark.parametrize("page, cmd, expected", BLOCKS, ids=[f"{p}: {c[:60]}" for p, c, _ in BLOCKS])
def test_readme_output_reproduces(page, cmd, expected, printed, trajectories):
    out = printed[cmd]
    if TRAJ in cmd:  # the stored trajectories, in a temporary folder
        cmd, expected = cmd.replace(TRAJ, trajectories), [line.replace(TRAJ, trajectories) for line in expected]
    assert out.returncode == 0, out.stderr[-2000:]
    missing = shows(expected, out.stdout.splitlines())
    assert missing is None, f"{page}: {cmd}\nthe page shows\n" + "\n".join(missing) + "\nbut it printed\n" + out.stdout


def test_the_pages_speak_of_the_method_not_the_project():
    """No release, no 'since then', no earlier README, no commit hash outside a results file's
    provenance line (the report's 'commits ...')."""
    history = re.compile(r"\b((this|that|an?|the|earlier|last|previous|next) release|since then|earlier README|this session|"
                         r"previous version)\b", re.I)
    commit = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,12}\b")
    for page in PAGES:
        for n, line in enumerate(open(os.path.join(ROOT, page)), 1):
            assert not history.search(line), f"{page}:{n}: {line}"
            assert "commits " in line or not commit.search(line), f"{page}:{n}: {line}"


def test_history_and_commit_checks_can_fail():
    assert re.search(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,12}\b", "code at e68ae22.")
    assert not re.search(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,12}\b", "weights b738b9382880c1f7")


def test_the_results_in_brief_are_the_reports():
    """Every mean (min-max) of the README's summary table is one of `demo.py --report`'s, for its task."""
    import results
    from demo import ABLATIONS
    text = open(os.path.join(ROOT, "README.md")).read()
    brief = text[text.index("**Results in brief**"):text.index("Contents:")]
    figures = re.findall(r"\d+\.\dx? \(\d+\.\dx?-\d+\.\dx?\)|\d+\.\d% \(\d+\.\d%-\d+\.\d%\)", brief)
    reports = {task: results.report(task, os.path.join(ROOT, "results"), ABLATIONS) for task in ("arithmetic", "wordproblems")}
    assert len(figures) >= 8
    for line in brief.splitlines():
        for f in re.findall(r"\d+\.\dx? \(\d+\.\dx?-\d+\.\dx?\)|\d+\.\d% \(\d+\.\d%-\d+\.\d%\)", line):
            task = "wordproblems" if "word problems" in line else "arithmetic"
            assert f"| {f} |" in reports[task], (task, f)
