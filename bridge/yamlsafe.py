"""Bounded YAML loading for files that come from outside (scenarios, experiment configs).

``yaml.safe_load`` is safe from code execution but not from resource exhaustion: a few hundred bytes of nested
anchors and aliases ("billion laughs") expand into billions of nodes, merge keys (``<<: [*a, *a, ...]``) copy
key lists exponentially, ``[[[[...]]]]`` deep enough raises ``RecursionError``, and the constructors turn some
scalars into ``ValueError`` (``2001-13-45`` as a date, an integer of 5 000 digits). :func:`load_yaml` checks the
input *before* any Python object is built, in one streaming pass over the parser's events (the parser is
iterative, so the pass itself cannot recurse):

* ``max_bytes`` (default 1 MiB): the encoded size of the document; a file is read with at most ``max_bytes + 1``
  bytes, so a huge file costs no memory, and only regular files are read (no FIFOs, devices or directories).
* text: UTF-8 (a BOM is allowed) without NUL bytes; anything else is "not UTF-8 text" / "a binary file".
* ``max_depth`` (default 64): nesting of sequences and mappings.
* ``max_aliases`` (default 256): ``*alias`` references, merge-key references included. An alias to an anchor that
  is still open (a recursive structure) is refused outright.
* ``max_nodes`` (default 100 000): nodes **after alias expansion** -- each alias counts the whole subtree it
  names, so ``&a [...]`` referenced ten times by each of nine levels counts as 10**9 nodes and is refused
  without ever being expanded. Expanded scalar text is bounded the same way, by ``16 * max_bytes`` characters.
* a mapping may not repeat a key (YAML says keys are unique; PyYAML would silently keep the last one), and an
  anchor may not be defined twice.
* one document per file; only the tags of ``SafeLoader`` (no Python objects).

Every refusal is a :class:`YamlError` (a :class:`~bridge.errors.BridgeError` and a ``ValueError``) with a one-line
message: ``<what>: <problem> (line L, column C)``. Callers wrap it in their own package's error if they like.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from .errors import BridgeError

__all__ = ["YamlError", "load_yaml", "read_text", "MAX_BYTES", "MAX_ALIASES", "MAX_NODES", "MAX_DEPTH"]

#: default limits (see the module docstring)
MAX_BYTES = 1 << 20
MAX_ALIASES = 256
MAX_NODES = 100_000
MAX_DEPTH = 64
#: expanded scalar characters allowed per byte of input
_EXPANDED_CHARS_PER_BYTE = 16

_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlError(BridgeError, ValueError):
    """A YAML file or text was refused (too big, not text, not YAML, or over a structural limit).

    ``what`` names the document (a path or e.g. ``"scenario"``), ``problem`` says what was wrong, ``line`` and
    ``column`` (1-based, or None) where.
    """

    def __init__(self, what: str, problem: str, *, line: int | None = None, column: int | None = None):
        self.what, self.problem, self.line, self.column = what, _one_line(problem, 160), line, column
        where = f" (line {line}, column {column})" if line is not None and column is not None else ""
        super().__init__(f"{_one_line(what, 120)}: {self.problem}{where}")


def _one_line(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_text(path: str | os.PathLike[str], *, what: str | None = None, max_bytes: int = MAX_BYTES) -> str:
    """Read a regular file of at most ``max_bytes`` bytes as UTF-8 text, or raise :class:`YamlError`."""
    p = Path(path)
    label = what or str(p)
    try:
        st = p.stat()
        if stat.S_ISDIR(st.st_mode):
            raise YamlError(label, "is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise YamlError(label, "is not a regular file")
        if st.st_size > max_bytes:
            raise YamlError(label, f"file is too large ({st.st_size} bytes; at most {max_bytes})")
        with open(p, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise YamlError(label, "file not found") from None
    except PermissionError:
        raise YamlError(label, "permission denied") from None
    except OSError as exc:
        raise YamlError(label, f"cannot read: {exc.strerror or type(exc).__name__}") from None
    if len(data) > max_bytes:  # the file grew between stat and read
        raise YamlError(label, f"file is too large (over {max_bytes} bytes)")
    return _decode(data, label)


def _decode(data: bytes, what: str) -> str:
    nul = data.find(b"\x00")
    if nul >= 0:
        raise YamlError(what, f"looks like a binary file (NUL byte at offset {nul})")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise YamlError(what, f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


def load_yaml(text_or_path: str | bytes | os.PathLike[str], *, what: str, max_bytes: int = MAX_BYTES,
              max_aliases: int = MAX_ALIASES, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse one YAML document within the limits of the module docstring; raise :class:`YamlError` otherwise.

    ``text_or_path``: a ``str`` or ``bytes`` is the document itself; an ``os.PathLike`` (e.g. ``Path``) is a file
    to read. ``what`` names the document in error messages (e.g. the path, or ``"experiment config"``). An empty
    document loads as ``None``.
    """
    if isinstance(text_or_path, os.PathLike):
        text = read_text(text_or_path, what=what, max_bytes=max_bytes)
    elif isinstance(text_or_path, bytes):
        if len(text_or_path) > max_bytes:
            raise YamlError(what, f"is too large ({len(text_or_path)} bytes; at most {max_bytes})")
        text = _decode(text_or_path, what)
    elif isinstance(text_or_path, str):
        if len(text_or_path) > max_bytes or len(text_or_path.encode("utf-8", "surrogatepass")) > max_bytes:
            raise YamlError(what, f"is too large (more than {max_bytes} bytes)")
        text = text_or_path.lstrip("\ufeff")
        nul = text.find("\x00")
        if nul >= 0:
            raise YamlError(what, f"looks like binary data (NUL character at offset {nul})")
    else:
        raise YamlError(what, f"expected YAML text or a path, got {type(text_or_path).__name__}")
    try:
        _check_events(text, what, max_aliases=max_aliases, max_nodes=max_nodes, max_depth=max_depth,
                      max_chars=_EXPANDED_CHARS_PER_BYTE * max_bytes)
        return yaml.load(text, Loader=_Loader)  # noqa: S506 -- a SafeLoader (the C one when available)
    except YamlError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(x for x in (exc.context, exc.problem) if x) or type(exc).__name__
        raise YamlError(what, f"not valid YAML: {problem}", line=mark.line + 1 if mark else None,
                        column=mark.column + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise YamlError(what, f"not valid YAML: {exc}") from None
    except (ValueError, OverflowError, TypeError, RecursionError, UnicodeError) as exc:
        # a constructor choked on a scalar (a date like 2001-13-45, an integer beyond Python's digit limit)
        raise YamlError(what, f"not valid YAML: a value cannot be read ({type(exc).__name__}: {exc})") from None


class _Open:
    """One collection being streamed: its anchor, the expanded counts at its start, and its keys if a mapping."""

    __slots__ = ("anchor", "nodes0", "chars0", "keys", "is_map", "expect_key")

    def __init__(self, anchor: str | None, nodes0: int, chars0: int, is_map: bool):
        self.anchor, self.nodes0, self.chars0, self.is_map = anchor, nodes0, chars0, is_map
        self.keys: set[tuple[str, bool, str | None]] = set()
        self.expect_key = True


def _check_events(text: str, what: str, *, max_aliases: int, max_nodes: int, max_depth: int, max_chars: int) -> None:
    """Stream the parser's events and enforce the limits, before any object is constructed."""
    nodes = chars = aliases = documents = 0
    stack: list[_Open] = []
    sizes: dict[str, tuple[int, int]] = {}  # anchor -> (expanded nodes, expanded chars) of its subtree

    def fail(problem: str, ev: Any) -> YamlError:
        m = ev.start_mark
        return YamlError(what, problem, line=m.line + 1 if m else None, column=m.column + 1 if m else None)

    def value_done() -> None:
        if stack and stack[-1].is_map:
            stack[-1].expect_key = not stack[-1].expect_key

    for ev in yaml.parse(text, Loader=_Loader):
        if isinstance(ev, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise fail("more than one YAML document (---) in one file", ev)
            continue
        anchor = getattr(ev, "anchor", None)
        if anchor is not None and not isinstance(ev, yaml.AliasEvent) and (
                anchor in sizes or any(o.anchor == anchor for o in stack)):
            raise fail(f"duplicate anchor &{_one_line(anchor, 40)}", ev)
        if isinstance(ev, yaml.AliasEvent):
            aliases += 1
            if aliases > max_aliases:
                raise fail(f"too many aliases (more than {max_aliases})", ev)
            if ev.anchor not in sizes:
                if any(o.anchor == ev.anchor for o in stack):
                    raise fail(f"recursive alias *{ev.anchor} (refers to a structure containing itself)", ev)
                raise fail(f"undefined alias *{ev.anchor}", ev)
            n, c = sizes[ev.anchor]
            nodes += n
            chars += c
            value_done()
        elif isinstance(ev, yaml.ScalarEvent):
            nodes += 1
            chars += len(ev.value)
            if ev.anchor is not None:
                sizes[ev.anchor] = (1, len(ev.value))
            top = stack[-1] if stack else None
            if top is not None and top.is_map and top.expect_key and ev.value != "<<":
                key = (ev.value, bool(ev.implicit[0]), ev.tag)
                if key in top.keys:
                    raise fail(f"duplicate key {_one_line(repr(ev.value), 60)} in one mapping", ev)
                top.keys.add(key)
            value_done()
        elif isinstance(ev, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            nodes += 1
            if len(stack) >= max_depth:
                raise fail(f"nested too deeply (more than {max_depth} levels)", ev)
            stack.append(_Open(ev.anchor, nodes - 1, chars, isinstance(ev, yaml.MappingStartEvent)))
        elif isinstance(ev, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            done = stack.pop()
            if done.anchor is not None:
                sizes[done.anchor] = (nodes - done.nodes0, chars - done.chars0)
            value_done()  # a finished collection is one key or value of its parent
        else:
            continue
        if nodes > max_nodes:
            raise fail(f"too many nodes after alias expansion (more than {max_nodes})", ev)
        if chars > max_chars:
            raise fail(f"too much text after alias expansion (more than {max_chars} characters)", ev)

