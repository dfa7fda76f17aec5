"""mlagents-envs' protobuf messages under the protobuf that Flower needs.

mlagents-envs 1.1.0 ships ``*_pb2.py`` modules written by protoc 3.x: they build every descriptor by hand
(``_descriptor.Descriptor(...)``, ``_reflection.GeneratedProtocolMessageType``). protobuf >= 4 refuses that form
under its default (upb) implementation, and under the pure-python one it builds the ``map<>`` fields as repeated
fields, so ``UnityEnvironment.reset()`` fails on ``agentInfos[behavior_name]``. flwr 1.42 needs protobuf >= 5.28, and
xrfed keeps one environment, so the set-up rewrites those modules into the form protoc >= 3.20 writes: the file's
*serialized* ``FileDescriptorProto`` (exactly the bytes the old module carries) is added to the default pool and
``google.protobuf.internal.builder`` builds the classes from it. That form runs under protobuf 3.20 through 6, with
any implementation, and the messages are the same messages (same descriptors, same wire bytes).

``python -m bridge.unity.protos`` rewrites the installed package in place (idempotent; scripts/setup.sh runs it
after installing mlagents-envs); :func:`check` says whether it is needed.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

from .errors import UnityProtocolError

__all__ = ["modernize_source", "modernize_package", "legacy_modules", "check", "MARKER"]

#: first line of a rewritten module (how the rewrite recognises its own output)
MARKER = "# xrfed: rewritten from mlagents-envs' protoc-3 module"
#: a generated module is a few kB; anything larger is not what this rewrites
_MAX_SOURCE_BYTES = 1 << 20


def _serialized_pb(tree: ast.Module, name: str) -> bytes:
    """The file's serialized ``FileDescriptorProto``: the ``serialized_pb=_b('...')`` argument of a protoc-3
    ``FileDescriptor(...)`` call, or the argument of a later protoc's ``AddSerializedFile(b'...')``."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = getattr(node.func, "attr", None)
        value: ast.expr | None = None
        if func == "FileDescriptor":
            value = next((kw.value for kw in node.keywords if kw.arg == "serialized_pb"), None)
        elif func == "AddSerializedFile" and node.args:
            value = node.args[0]
        if value is None:
            continue
        if isinstance(value, ast.Call) and value.args:  # _b('...'): latin-1 text of the bytes
            value = value.args[0]
        lit = ast.literal_eval(value)
        return lit.encode("latin1") if isinstance(lit, str) else bytes(lit)
    raise UnityProtocolError(f"{name}: expected a protoc-generated module (FileDescriptor(serialized_pb=...) or "
                             "AddSerializedFile(...)), found neither")


def _imports(tree: ast.Module) -> list[str]:
    """The module's imports of other generated modules (their descriptors must be in the pool first)."""
    out = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and not node.module.startswith("google."):
            out.append(ast.unparse(node))
        elif isinstance(node, ast.Import) and not any(a.name.startswith(("google.", "sys")) for a in node.names):
            out.append(ast.unparse(node))
    return out


def modernize_source(source: str, module: str) -> str:
    """The protoc >= 3.20 form of one protoc-3 ``*_pb2`` module's source (``module``: its dotted name)."""
    if source.startswith(MARKER):
        return source
    tree = ast.parse(source, filename=module)
    blob = _serialized_pb(tree, module)
    lines = [
        MARKER,
        "# (bridge/unity/protos.py): same FileDescriptorProto bytes, built by protobuf's builder so that it runs",
        "# under protobuf 3.20 to 6 with any implementation.",
        "from google.protobuf import descriptor_pool as _descriptor_pool",
        "from google.protobuf import symbol_database as _symbol_database",
        "from google.protobuf.internal import builder as _builder",
        "",
        "_sym_db = _symbol_database.Default()",
        "",
        *_imports(tree),
        "",
        f"DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile({blob!r})",
        "_globals = globals()",
        "_builder.BuildMessageAndEnumDescriptors(DESCRIPTOR, _globals)",
        f"_builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, {module!r}, _globals)",
        "",
    ]
    return "\n".join(lines)


def _package_dir() -> Path:
    spec = importlib.util.find_spec("mlagents_envs")
    if spec is None or not spec.submodule_search_locations:
        from .errors import UnityExtraMissingError

        raise UnityExtraMissingError("mlagents_envs")
    return Path(next(iter(spec.submodule_search_locations))) / "communicator_objects"


def legacy_modules(directory: Path | None = None) -> list[Path]:
    """The ``*_pb2.py`` files under ``directory`` (default: the installed mlagents_envs) still in protoc-3 form."""
    d = directory or _package_dir()
    return sorted(p for p in d.glob("*_pb2.py")
                  if p.stat().st_size <= _MAX_SOURCE_BYTES and not p.read_text("utf-8").startswith(MARKER))


def modernize_package(directory: Path | None = None) -> list[Path]:
    """Rewrite every protoc-3 module under ``directory`` in place; returns the files rewritten (idempotent).

    Each file is written whole to a sibling and renamed over the original, so an interrupted run leaves every
    module either old or new, never half-written; stale bytecode is removed."""
    d = directory or _package_dir()
    package = "mlagents_envs.communicator_objects"
    done = []
    for path in legacy_modules(d):
        new = modernize_source(path.read_text("utf-8"), f"{package}.{path.stem}")
        tmp = path.with_suffix(".py.partial")
        tmp.write_text(new, "utf-8")
        tmp.replace(path)
        for pyc in (d / "__pycache__").glob(f"{path.stem}.*.pyc"):
            pyc.unlink(missing_ok=True)
        done.append(path)
    return done


def check() -> None:
    """Raise :class:`UnityProtocolError` naming the fix when mlagents-envs' modules are still in protoc-3 form
    under a protobuf that cannot run them (>= 4)."""
    import google.protobuf

    if int(google.protobuf.__version__.split(".")[0]) < 4:
        return
    legacy = legacy_modules()
    if legacy:
        raise UnityProtocolError(
            f"mlagents-envs' generated messages ({len(legacy)} modules, e.g. {legacy[0].name}) are protoc-3 modules "
            f"that protobuf {google.protobuf.__version__} cannot run: run  python -m bridge.unity.protos  "
            "(scripts/setup.sh does)")


def main(argv: list[str] | None = None) -> int:
    try:
        done = modernize_package()
    except (UnityProtocolError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"mlagents-envs messages: {len(done)} modules rewritten" if done else "mlagents-envs messages: up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
