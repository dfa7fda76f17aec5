"""The fuzzing harness itself: what counts as accepted, rejected and crashed, and the hang watchdog."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from bridge.errors import BridgeError
from bridge.fuzzing import Surface, run_surface, stateless, surfaces


def _integers():
    from hypothesis import strategies as st

    return st.integers(0, 99)


def _feed(n: int) -> None:
    if n % 3 == 1:
        raise BridgeError("rejected")
    if n % 3 == 2:
        raise IndexError("a crash")


def test_accepted_rejected_and_crashed_are_counted_apart():
    r = run_surface(Surface("t.mixed", "test", _integers, stateless(_feed)), examples=80)
    assert r.examples == r.accepted + r.rejected + r.crashes == 80
    assert r.accepted and r.rejected and r.crashes
    assert "IndexError" in r.crash_examples[0]["error"]


def test_a_hanging_input_ends_the_process_with_a_traceback():
    """A C library looping on damaged data cannot be interrupted from Python: the bench's watchdog ends the fuzz
    process, and the parent counts the surface as crashed."""
    code = textwrap.dedent("""
        import time
        from hypothesis import strategies as st
        from bridge.fuzzing import Surface, run_surface, stateless
        s = Surface("t.hang", "hangs", lambda: st.just(0), stateless(lambda _: time.sleep(30)))
        run_surface(s, examples=1, example_timeout_s=1.0)
        print("not reached")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "not reached" not in r.stdout
    assert "Timeout (0:00:01)" in r.stderr and "<lambda>" in r.stderr  # the hanging feed's frame


def test_every_declared_surface_loads():
    names = set(surfaces())
    for prefix in ("stream.", "unity.", "scenario.", "dataset.", "cli.", "live.", "config.", "files."):
        assert any(n.startswith(prefix) for n in names), prefix
