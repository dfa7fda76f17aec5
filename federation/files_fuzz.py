"""Hostile-input surfaces of run directories on disk (``xrfed bench fuzz``; see :mod:`bridge.fuzzing`).

* ``files.checkpoint``: a real run directory -- a four-round, two-phase run of two synthetic devices, stopped after
  two rounds by the real :class:`~federation.runner.ExperimentRunner`, so its checkpoint, manifest and metrics are
  what the real code writes -- copied for every input and damaged: bytes flipped, runs of 0xFF, truncated,
  extended, replaced; JSON fields of ``engine.json``, ``manifest.json`` set to hostile values (``completed_round:
  99``, NaN, huge numbers, wrong types) or deleted; tensors re-saved NaN/inf, reshaped, retyped, renamed, dropped;
  files deleted or replaced by directories; ``baselines.json`` and ``mia_reference.json`` damaged likewise
  (the resume checks them: the summary needs them); ``metrics.jsonl`` lines broken, dropped, duplicated or renumbered; the
  manifest then kept, deleted or re-signed (recomputed over the damaged files, as a deliberate editor would). The
  real resume (:meth:`ExperimentRunner.run` with ``resume=True``) then runs one more round. A refused resume must
  leave every file byte-identical (nothing already written is lost): a change is a crash.
* ``files.metrics``: ``metrics.jsonl`` content -- real lines under JSON-level and byte-level mutation, and
  garbage -- through :func:`federation.rundir.read_metrics`, which the runner's resume and the report use.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bridge.fuzzing import Surface, byte_damages, damage_bytes, json_values
from bridge.fuzzing import strategies as _st

from .errors import CheckpointError

__all__ = ["SURFACES", "base_run", "build_base_run"]

#: the base run: its rounds, phases and the rounds done before the copy is damaged
BASE_ROUNDS, BASE_PHASES, BASE_DONE = 4, 2, 2
_DEVICES = (("q3", "meta_quest_3", ("rgb", "audio"), ("object_recognition",)),
            ("avp", "apple_vision_pro", ("rgb", "gaze"), ("object_recognition", "intent_prediction")))
_CK_FILES = ("checkpoint/engine.json", "checkpoint/engine.safetensors", "checkpoint/clients/q3.safetensors",
             "checkpoint/clients/avp.safetensors", "checkpoint/manifest.json", "metrics.jsonl", "baselines.json",
             "mia_reference.json")
_ABSURD: tuple[Any, ...] = (0, 1, -1, 2, 3, 99, 2**31, 2**63, 10**30, -(10**15), 0.5, 1e308, float("nan"), float("inf"),
           -float("inf"), True, False, None, "", "1", "abc", [], {}, [1, 2], {"a": 1})


# ---------------------------------------------------------------------------------------------------------------
# the base run
def base_config() -> Any:
    from .config import AggregatorConfig, DeviceConfig, ExperimentConfig, RoundsConfig

    return ExperimentConfig(
        name="fuzz", devices=[DeviceConfig(i, p, list(t)) for i, p, _, t in _DEVICES], phases=BASE_PHASES,
        aggregator=AggregatorConfig("fedavg"),
        rounds=RoundsConfig(paradigm="centralized", rounds=BASE_ROUNDS, local_steps=1, availability=1.0))


def base_runner(run_dir: Path) -> Any:
    """The runner of the base run over ``run_dir`` (synthetic clients: milliseconds a round)."""
    from .runner import ExperimentRunner
    from .synthetic import SyntheticClient

    factories = {i: (lambda i=i, p=p, m=m, t=t, s=s: SyntheticClient(i, p, modalities=m, tasks=t, seed=s,
                                                                    samples=16))
                 for s, (i, p, m, t) in enumerate(_DEVICES)}
    return ExperimentRunner(base_config(), run_dir, client_factories=factories, positions_fn=lambda r, ph: None,
                            progress=False)


def build_base_run(run_dir: str | Path) -> Path:
    """Write the base run into ``run_dir`` with the real runner: :data:`BASE_DONE` rounds, then stopped."""
    out = Path(run_dir)
    assert base_runner(out).run(stop_after=BASE_DONE) is None
    return out


@functools.cache
def base_run() -> Path:
    """The base run, built once per process in a temporary directory (removed at exit)."""
    import atexit

    root = Path(tempfile.mkdtemp(prefix="xrfed-fuzz-run-"))
    atexit.register(shutil.rmtree, root, True)
    return build_base_run(root / "run")


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` -> its bytes (None for a directory)."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


# ---------------------------------------------------------------------------------------------------------------
# strategies


def _json_edit(doc: Any, path: list[str | int], value: Any, delete: bool) -> Any:
    """``doc`` with the value at ``path`` (keys/indices, followed while they exist) replaced or deleted."""
    if not path or not isinstance(doc, (dict, list)) or not doc:
        return value
    keys = list(doc) if isinstance(doc, dict) else list(range(len(doc)))
    k = path[0] if path[0] in keys else keys[zlib.crc32(str(path[0]).encode()) % len(keys)]
    if len(path) == 1 or not isinstance(doc[k], (dict, list)) or not doc[k]:  # type: ignore[index]
        if delete and isinstance(doc, dict):
            del doc[k]
        else:
            doc[k] = value  # type: ignore[index]
        return doc
    doc[k] = _json_edit(doc[k], path[1:], value, delete)  # type: ignore[index]
    return doc


@functools.cache
def _json_paths() -> Any:
    st = _st()
    known = st.sampled_from(["completed_round", "phase_acc", "battery_j", "accountant", "local_accountants",
                             "ledger", "files", "format", "version", "orders", "history", "bytes", "sha256",
                             "round", "devices", "links", "status", "bytes_sent", "round_latency_s", "epsilon",
                             "uplink", "joules", "q3", "avp", "0", "1", "split", "pretrained", "majority",
                             "members", "nonmembers", "balanced_accuracy_per_task"])
    return st.lists(st.one_of(known, st.integers(0, 8), st.text(max_size=4)), min_size=1, max_size=4)


def _tensor_edit(data: bytes, op: tuple[str, int, Any]) -> bytes:
    """A re-saved safetensors file with one tensor changed (NaN, inf, huge, reshaped, retyped, renamed, ...)."""
    import torch
    from safetensors.torch import load, save

    kind, pick, value = op
    tensors = dict(load(data))
    if not tensors:
        return data
    name = sorted(tensors)[pick % len(tensors)]
    t = tensors[name]
    if kind == "value" and t.numel():
        t = t.clone().to(torch.float32) if not t.is_floating_point() else t.clone()
        t.view(-1)[pick % t.numel()] = float(value) if isinstance(value, (int, float)) else float("nan")
        tensors[name] = t.to(tensors[name].dtype) if tensors[name].is_floating_point() else t
    elif kind == "reshape":
        tensors[name] = torch.zeros(*[abs(int(v)) % 5 for v in (value if isinstance(value, list) else [value])][:3])
    elif kind == "retype":
        tensors[name] = t.to((torch.float16, torch.float64, torch.int64, torch.bool, torch.uint8)[pick % 5])
    elif kind == "rename":
        tensors[str(value)[:40] or "x"] = tensors.pop(name)
    elif kind == "drop":
        del tensors[name]
    elif kind == "add":
        tensors[f"extra/{pick}"] = torch.ones(2)
    return save(tensors)


@functools.cache
def _tensor_ops() -> Any:
    st = _st()
    values = st.one_of(st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e38, -1e38, 0.0, 7.0]),
                       st.lists(st.integers(0, 9), max_size=3), st.text(max_size=8))
    return st.tuples(st.sampled_from(("value", "reshape", "retype", "rename", "drop", "add")), st.integers(0, 999),
                     values)


@functools.cache
def _line_ops() -> Any:
    """(kind, line index, payload) of one metrics.jsonl damage."""
    st = _st()
    return st.tuples(st.sampled_from(("cut", "garbage", "drop", "dup", "renumber", "swap", "append", "blank")),
                     st.integers(0, 8), st.one_of(st.binary(max_size=24), st.sampled_from(_ABSURD[:12])))


def _damage_lines(data: bytes, op: tuple[str, int, Any]) -> bytes:
    kind, i, payload = op
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        return data + (payload if isinstance(payload, bytes) else b"")
    i %= len(lines)
    if kind == "cut":
        lines[i] = lines[i][: len(lines[i]) // 2]
    elif kind == "garbage":
        lines[i] = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    elif kind == "drop":
        del lines[i]
    elif kind == "dup":
        lines.insert(i, lines[i])
    elif kind == "renumber":
        row = json.loads(lines[i])
        if not isinstance(row, dict):
            return data
        row["round"] = payload if not isinstance(payload, bytes) else 99
        lines[i] = json.dumps(row).encode()
    elif kind == "swap" and len(lines) > 1:
        j = (i + 1) % len(lines)
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == "append":
        row = json.loads(lines[-1])
        if not isinstance(row, dict):
            return data
        row["round"] = len(lines) + (0 if isinstance(payload, bytes) else 5)
        lines.append(json.dumps(row).encode())
    elif kind == "blank":
        lines.insert(i, b"   ")
    return b"".join(ln + b"\n" for ln in lines)


@functools.cache
def _damages() -> Any:
    """One damage to a run directory: (file, kind, op)."""
    st = _st()
    target = st.sampled_from(_CK_FILES)
    return st.one_of(
        st.tuples(target, st.just("bytes"), byte_damages()),
        st.tuples(st.sampled_from(_CK_FILES[:2] + _CK_FILES[4:5] + _CK_FILES[6:]), st.just("json"),
                  st.tuples(_json_paths(), json_values(_ABSURD), st.booleans())),
        st.tuples(st.sampled_from(_CK_FILES[1:4]), st.just("tensor"), _tensor_ops()),
        st.tuples(st.just("metrics.jsonl"), st.just("lines"), _line_ops()),
        st.tuples(target, st.sampled_from(("delete", "directory")), st.just(None)),
        st.tuples(st.just("checkpoint"), st.sampled_from(("to_old", "delete_dir")), st.just(None)),
    )


def _checkpoint_inputs() -> Any:
    """1-3 damages, then the manifest kept as written, deleted, or re-signed over the damaged files."""
    st = _st()
    return st.tuples(st.lists(_damages(), min_size=1, max_size=3), st.sampled_from(("keep", "keep", "resign",
                                                                                    "delete")))


# ---------------------------------------------------------------------------------------------------------------
# feeds
def _apply(run: Path, damage: tuple[str, str, Any]) -> None:
    rel, kind, op = damage
    path = run / rel
    if kind == "to_old":
        if path.exists():
            path.rename(run / "checkpoint.old")
        return
    if kind == "delete_dir":
        shutil.rmtree(path, ignore_errors=True)
        return
    if not path.is_file():
        return
    if kind == "delete":
        path.unlink()
    elif kind == "directory":
        path.unlink()
        path.mkdir()
    elif kind == "bytes":
        path.write_bytes(damage_bytes(path.read_bytes(), op))
    elif kind == "json":
        keys, value, delete = op
        try:
            doc = json.loads(path.read_bytes())
        except ValueError:
            return
        path.write_text(json.dumps(_json_edit(doc, keys, value, delete)))
    elif kind == "tensor":
        try:
            path.write_bytes(_tensor_edit(path.read_bytes(), op))
        except Exception:  # noqa: BLE001 -- an already damaged file safetensors cannot parse: leave it
            return
    elif kind == "lines":
        try:
            path.write_bytes(_damage_lines(path.read_bytes(), op))
        except ValueError:
            return


def _resign(run: Path) -> None:
    """Recompute the manifest over the files as they are now (what someone editing a checkpoint on purpose does)."""
    from .checkpoint import file_digest

    mpath = run / "checkpoint" / "manifest.json"
    try:
        m = json.loads(mpath.read_bytes())
        for rel, entry in m["files"].items():
            size, sha = file_digest(run / "checkpoint" / rel)
            entry.update(bytes=size, sha256=sha)
        mpath.write_text(json.dumps(m))
    except Exception:  # noqa: BLE001 -- a manifest or file too damaged to re-sign stays as it is
        return


@contextlib.contextmanager
def _checkpoint_session() -> Iterator[Callable[[Any], None]]:
    base = base_run()
    with tempfile.TemporaryDirectory(prefix="xrfed-fuzz-ck-") as tmp:
        work = Path(tmp) / "run"

        def feed(example: tuple[list[tuple[str, str, Any]], str]) -> None:
            damages, manifest = example
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(base, work)
            for d in damages:
                _apply(work, d)
            if manifest == "resign":
                _resign(work)
            elif manifest == "delete":
                mpath = work / "checkpoint" / "manifest.json"
                if mpath.is_dir():
                    shutil.rmtree(mpath)
                mpath.unlink(missing_ok=True)
            before = _snapshot(work)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    base_runner(work).run(resume=True, stop_after=1)
            except CheckpointError:
                after = _snapshot(work)
                if after != before:
                    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
                    raise AssertionError(f"a refused resume changed files: {changed[:5]}") from None
                raise

        yield feed


@functools.cache
def _base_metric_lines() -> tuple[bytes, ...]:
    return tuple(ln for ln in (base_run() / "metrics.jsonl").read_bytes().split(b"\n") if ln)


def _metrics_inputs() -> Any:
    st = _st()
    lines = st.builds(lambda: b"".join(ln + b"\n" for ln in _base_metric_lines()))
    mutated = st.tuples(st.lists(st.one_of(st.tuples(st.just("lines"), _line_ops()),
                                           st.tuples(st.just("bytes"), byte_damages()),
                                           st.tuples(st.just("json"), st.tuples(_json_paths(), json_values(_ABSURD),
                                                                                st.booleans()))),
                                 min_size=1, max_size=3))
    garbage = st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                        st.integers(1, 20000).map(lambda n: b"[" * n + b"\n"),
                        st.integers(1, 6000).map(lambda n: b'{"round": ' + b"9" * n + b"}\n"),
                        st.sampled_from([b"NaN\n", b'{"round": NaN}\n', b"\xff\xfe\n", b"{}\n", b"[]\n"]))
    return st.one_of(lines.map(lambda b: ("raw", b)), mutated.map(lambda m: ("mutated", m[0])),
                     garbage.map(lambda b: ("raw", b)))


def _metrics_content(example: tuple[str, Any]) -> bytes:
    kind, payload = example
    if kind == "raw":
        return bytes(payload)
    data = b"".join(ln + b"\n" for ln in _base_metric_lines())
    for op_kind, op in payload:
        if op_kind == "lines":
            with contextlib.suppress(ValueError):
                data = _damage_lines(data, op)
        elif op_kind == "bytes":
            data = damage_bytes(data, op)
        else:
            lines = data.split(b"\n")
            keys, value, delete = op
            i = zlib.crc32(str(keys).encode()) % max(1, len(lines) - 1)
            try:
                lines[i] = json.dumps(_json_edit(json.loads(lines[i]), keys, value, delete)).encode()
            except ValueError:
                pass
            data = b"\n".join(lines)
    return data


@contextlib.contextmanager
def _metrics_session() -> Iterator[Callable[[Any], None]]:
    from .rundir import read_metrics

    with tempfile.TemporaryDirectory(prefix="xrfed-fuzz-metrics-") as tmp:
        run = Path(tmp)

        def feed(example: tuple[str, Any]) -> None:
            (run / "metrics.jsonl").write_bytes(_metrics_content(example))
            read_metrics(run)

        yield feed


# ---------------------------------------------------------------------------------------------------------------
SURFACES: list[Surface] = [
    Surface("files.checkpoint", "a real run directory with its checkpoint, manifest and metrics damaged (bytes, "
                                "JSON fields, tensors, lines, files; manifest kept/deleted/re-signed) -> resume "
                                "+ one round; a refused resume must leave every file unchanged",
            _checkpoint_inputs, _checkpoint_session),
    Surface("files.metrics", "metrics.jsonl content (real lines mutated, garbage, deep nesting, huge numbers) -> "
                             "read_metrics", _metrics_inputs, _metrics_session),
]
