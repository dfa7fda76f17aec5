"""The CLI and hostile arguments (issue 14): every flag range-checked by the parser, one line and exit 2 for any user
error, never a traceback; the CLI sits above the packages (entry points), and the cli.argv fuzz surface."""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
from pathlib import Path

import pytest

from bridge.cli import command_parsers, main
from bridge.cli_fuzz import SURFACES
from bridge.fuzzing import assert_no_crash

ROOT = Path(__file__).resolve().parents[2]

#: flags that were tracebacks or silently accepted nonsense before (issue 14), one per line
BAD = [
    "record default --out OUT --size -32",
    "record default --out OUT --size 0",
    "record default --out OUT --seed -1",
    "record default --out OUT --steps 0",
    "record default --out OUT --episodes -3",
    "record default --out OUT --guard-s nan",
    "record nosuchscenario --out OUT",
    "scenarios nosuch/../x",
    "stream default --bind tcp://127.0.0.1:5560 --max-avatars -1",
    "stream default --bind tcp://127.0.0.1:5560 --rate-hz -1",
    "stream default --bind tcp://127.0.0.1:99999",
    "player default --port -1",
    "player default --size 0",
    "player default --max-avatars -1",
    "live default --hz 0",
    "live default --hz nan",
    "live default --size -32",
    "live default --port 70000",
    "pretrain --steps -5",
    "pretrain --lr inf",
    "run configs/demo.yaml --threads 0",
    "run configs/demo.yaml --out FILE/run",
    "run /nonexistent.yaml",
    "shift --threads 0",
    "shift --json /nonexistent/dir/x.json",
    "compare /nonexistent",
    "preview /nonexistent",
    "bench sim --json /nonexistent/dir/x.json",
    "bench fuzz --examples 0",
    "bench fuzz --surface nosuch",
]


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(argv, run=lambda args: 0)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
    return status, err.getvalue()


@pytest.mark.parametrize("line", BAD)
def test_a_bad_flag_is_exit_2_with_one_line(line, tmp_path):
    (tmp_path / "FILE").write_text("x")
    argv = [a.replace("OUT", str(tmp_path / "out")).replace("FILE", str(tmp_path / "FILE")) for a in line.split()]
    status, err = _run(argv)
    assert status == 2, (line, err)
    assert "Traceback" not in err
    errors = [x for x in err.splitlines() if ": error: " in x]
    assert len(errors) == 1 and err.rstrip("\n").splitlines()[-1] == errors[0], err
    assert len(errors[0]) < 400


def test_good_flags_still_parse(tmp_path):
    for line in ("record default --out OUT --size 64 --steps 100 --seed 3", "scenarios default", "devices",
                 f"run {ROOT / 'configs' / 'demo.yaml'} --threads 1", "bench sim --json OUT.json"):
        argv = [a.replace("OUT", str(tmp_path / "out")) for a in line.split()]
        assert _run(argv)[0] == 0, line


def test_every_numeric_flag_has_a_checked_type():
    """No flag of any command is a bare int/float: each goes through a range-checked type."""
    unchecked = []
    for path, parser in command_parsers().items():
        for action in parser._actions:
            if action.option_strings and action.type in (int, float):
                unchecked.append(f"xrfed {' '.join(path)} {action.option_strings[-1]}")
    assert not unchecked, unchecked


def test_bridge_does_not_import_the_packages_built_on_it():
    """The CLI sits above every package: bridge/ names neither agents nor federation (entry points do)."""
    offenders = []
    for py in (ROOT / "bridge").rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            offenders += [f"{py.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ("agents", "federation")]
    assert not offenders, offenders


def test_every_command_comes_from_an_entry_point():
    names = set(command_parsers()) - {()}
    assert {("record",), ("run",), ("live",), ("player",), ("stream",), ("bench", "fuzz")} <= names


def test_cli_argv_surface_never_crashes():
    result = assert_no_crash(SURFACES[0], examples=300)
    assert result.rejected > 100


def test_parser_error_is_one_line_even_for_hostile_text():
    status, err = _run(["record", "default", "--out", "x", "--size", "1\n2\x1b[2J"])
    assert status == 2 and err.rstrip("\n").splitlines()[-1].startswith("xrfed record: error:")
    assert "\x1b" not in err


def test_argparse_types_report_their_names():
    assert all(isinstance(p, argparse.ArgumentParser) for p in command_parsers().values())
