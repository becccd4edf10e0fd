"""The waiter for the tests marked `compiled` when they ran in a process of their own (conftest.py)."""


def test_the_compiled_tests_passed_beside_the_rest(request):
    proc, log, n = request.config.compiled_side
    rc = proc.wait()
    log.seek(0)
    out = log.read()
    assert rc == 0, f"the {n} compiled tests, run beside the rest:\n{out}"
    assert f"{n} passed" in out.splitlines()[-1], out  # every one ran (none skipped or deselected)
