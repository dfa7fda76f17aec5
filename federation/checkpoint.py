"""Run checkpoints on disk: written with a checksum manifest, verified before a resume trusts a byte of them.

A checkpoint directory (``RUN/checkpoint``, see :mod:`federation.runner`) holds::

    engine.json               the round engine's JSON state, ``completed_round`` and ``phase_acc``
    engine.safetensors        the engine's tensors: ``template/<device>/<key>``, ``received/<device>/<key>``,
                              ``global/-/<key>``
    clients/<device>.safetensors   each device's state (``Client.state_dict``)
    manifest.json             written last: format, ``completed_round``, and every other file's size and sha256

Writing (:func:`write_checkpoint`): every file goes into a temporary directory and is fsynced, the manifest last
(itself written to a temporary name and renamed), then the directory is renamed into place.

Verifying (:func:`read_checkpoint`), before anything is loaded into a model: the manifest lists exactly the files a
checkpoint of these devices has, each a regular file of the listed size and sha256; every file is below a size
limit; the safetensors files parse (safetensors checks its header against the file) and hold finite numbers only;
``engine.json`` has the engine's structure with finite, in-range values; ``completed_round`` lies in
``[0, rounds)`` and agrees with the manifest. The runner then checks the round against ``metrics.jsonl``
(:func:`check_metrics_rounds`) and the tensors' names and shapes against the devices (:func:`check_engine_tensors`).
Anything wrong is a :class:`CheckpointCorruptError` naming the file and what is wrong, in one line.

Checkpoints without a manifest (written before manifests existed) have nothing to check sums against: they are
verified as far as they can be -- every structural, finiteness and round check above -- and loaded with a warning;
the next checkpoint the resumed run writes has a manifest. To refuse them instead, delete ``checkpoint/`` and start
the run again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import stat
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import torch

from .errors import CheckpointError

__all__ = ["CheckpointCorruptError", "Checkpoint", "write_checkpoint", "read_checkpoint", "file_digest",
           "check_metrics_rounds", "check_engine_tensors", "check_global", "phases_done", "MANIFEST_NAME", "ENGINE_JSON", "ENGINE_TENSORS",
           "CLIENTS_DIR", "MANIFEST_FORMAT", "MAX_JSON_BYTES", "MAX_TENSOR_FILE_BYTES"]

MANIFEST_NAME = "manifest.json"
ENGINE_JSON = "engine.json"
ENGINE_TENSORS = "engine.safetensors"
CLIENTS_DIR = "clients"
MANIFEST_FORMAT = "xrfed-checkpoint"
MANIFEST_VERSION = 1
#: largest engine.json / manifest.json read (bytes): the ledger grows with rounds x devices, ~100 B a link record
MAX_JSON_BYTES = 256 << 20
#: largest safetensors file read (bytes): a device's adapters and personal modules, far below this
MAX_TENSOR_FILE_BYTES = 2 << 30
_HASH_CHUNK = 1 << 20
#: the largest Renyi-DP order and privacy-history length an accountant may claim
_MAX_ORDER, _MAX_ORDERS = 4096, 1024


class CheckpointCorruptError(CheckpointError):
    """A checkpoint file is missing, truncated, altered or inconsistent; the message names the file."""


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[:limit] + "..."


def _fail(path: Path | str, what: str) -> CheckpointCorruptError:
    return CheckpointCorruptError(f"{_short(str(path), 200)[1:-1]}: {what}")


# -- writing ---------------------------------------------------------------------------------------------------
def file_digest(path: Path) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _save_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    from safetensors.torch import save

    _fsync_write(path, save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}))


def write_checkpoint(ck_dir: str | os.PathLike[str], header: Mapping[str, Any],
                     engine_tensors: Mapping[str, torch.Tensor],
                     client_tensors: Mapping[str, Mapping[str, torch.Tensor]], *, completed_round: int) -> None:
    """Write a checkpoint into ``ck_dir`` atomically: a temporary directory (``<ck_dir>.tmp``), the manifest last,
    then renamed into place (the previous checkpoint is moved to ``<ck_dir>.old`` and removed after)."""
    ck = Path(ck_dir)
    tmp, old = ck.with_name(ck.name + ".tmp"), ck.with_name(ck.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / CLIENTS_DIR).mkdir(parents=True)
    _fsync_write(tmp / ENGINE_JSON, json.dumps({**header, "completed_round": int(completed_round)}).encode())
    _save_tensors(tmp / ENGINE_TENSORS, engine_tensors)
    for d, st in client_tensors.items():
        _save_tensors(tmp / CLIENTS_DIR / f"{d}.safetensors", st)
    files = {}
    for rel in _expected_files(list(client_tensors)):
        size, sha = file_digest(tmp / rel)
        files[rel] = {"bytes": size, "sha256": sha}
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "completed_round": int(completed_round),
                "files": files}
    _fsync_write(tmp / (MANIFEST_NAME + ".tmp"), json.dumps(manifest, indent=1).encode())
    os.replace(tmp / (MANIFEST_NAME + ".tmp"), tmp / MANIFEST_NAME)
    shutil.rmtree(old, ignore_errors=True)
    if ck.exists():
        os.replace(ck, old)
    os.replace(tmp, ck)
    shutil.rmtree(old, ignore_errors=True)


# -- reading ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint: the engine's header and tensors, each device's state, and the round it ends."""

    header: dict[str, Any]
    engine_tensors: dict[str, torch.Tensor]
    client_tensors: dict[str, dict[str, torch.Tensor]]
    completed_round: int
    has_manifest: bool


def _expected_files(device_ids: Sequence[str]) -> list[str]:
    return [ENGINE_JSON, ENGINE_TENSORS, *(f"{CLIENTS_DIR}/{d}.safetensors" for d in device_ids)]


def _regular_size(path: Path, limit: int) -> int:
    """The size of ``path``, which must be a regular file (not a FIFO, device or directory) below ``limit``."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise _fail(path, "missing") from None
    except OSError as exc:
        raise _fail(path, f"unreadable ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise _fail(path, "not a regular file")
    if st.st_size > limit:
        raise _fail(path, f"{st.st_size} bytes, more than the {limit} a checkpoint file may have")
    return st.st_size


def _read_json(path: Path, limit: int = MAX_JSON_BYTES) -> Any:
    _regular_size(path, limit)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _fail(path, f"unreadable ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise _fail(path, f"more than {limit} bytes")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, 5000-digit integers, deep nesting
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise _fail(path, f"not valid JSON ({msg})") from None


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _one_of(v: object, allowed: set[str]) -> bool:
    """``v in allowed`` for a JSON value (a list or object is never in a set of names, and is not hashable)."""
    return isinstance(v, str) and v in allowed


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _verify_manifest(ck: Path, device_ids: Sequence[str]) -> int:
    """Check every file against the manifest; returns the manifest's completed_round."""
    mpath = ck / MANIFEST_NAME
    m = _read_json(mpath, 16 << 20)
    if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT:
        raise _fail(mpath, f"not a checkpoint manifest (expected format {MANIFEST_FORMAT!r})")
    if m.get("version") != MANIFEST_VERSION:
        raise _fail(mpath, f"manifest version {_short(m.get('version'))} (this xrfed reads {MANIFEST_VERSION})")
    rnd = m.get("completed_round")
    if not _is_int(rnd):
        raise _fail(mpath, f"completed_round must be a whole number, got {_short(rnd)}")
    files = m.get("files")
    if not isinstance(files, dict):
        raise _fail(mpath, "'files' must map file names to their size and sha256")
    want = _expected_files(device_ids)
    if set(files) != set(want):
        extra, missing = sorted(set(files) - set(want)), sorted(set(want) - set(files))
        parts = ([f"lists files {_short(extra)} this run's checkpoint does not have"] if extra else []) + (
            [f"does not list {_short(missing)}"] if missing else [])
        raise _fail(mpath, "; ".join(parts))
    for rel in want:  # names from the config, never from the manifest: "../../x" cannot be reached
        entry, path = files[rel], ck / rel
        if not isinstance(entry, dict) or not _is_int(entry.get("bytes")) or not isinstance(entry.get("sha256"), str):
            raise _fail(mpath, f"entry {rel!r} must be {{'bytes': int, 'sha256': hex}}, got {_short(entry)}")
        size = _regular_size(path, MAX_TENSOR_FILE_BYTES if rel.endswith(".safetensors") else MAX_JSON_BYTES)
        if size != entry["bytes"]:
            raise _fail(path, f"{size} bytes, the manifest says {_short(entry['bytes'])} (truncated or extended)")
        if file_digest(path)[1] != entry["sha256"].lower():
            raise _fail(path, "sha256 differs from the manifest (the file was altered or damaged)")
    return int(rnd)


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    _regular_size(path, MAX_TENSOR_FILE_BYTES)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as exc:
        raise _fail(path, f"not a readable safetensors file ({_short(str(exc), 120)[1:-1]})") from None
    for name, t in tensors.items():
        if t.is_floating_point() or t.is_complex():
            if not bool(torch.isfinite(t.to(torch.complex128 if t.is_complex() else torch.float64)).all()):
                raise _fail(path, f"tensor {_short(name)} holds NaN or infinite values")
        elif t.dtype not in (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64):
            raise _fail(path, f"tensor {_short(name)} has unsupported dtype {t.dtype}")
    return tensors


def _check_accountant(path: Path, where: str, acc: object, completed_round: int) -> None:
    if not isinstance(acc, dict):
        raise _fail(path, f"{where} must be an object with 'orders' and 'history', got {_short(acc)}")
    orders, history = acc.get("orders"), acc.get("history")
    if (not isinstance(orders, list) or not 1 <= len(orders) <= _MAX_ORDERS
            or not all(_is_int(o) and 2 <= o <= _MAX_ORDER for o in orders)
            or any(a >= b for a, b in zip(orders, orders[1:], strict=False))):
        raise _fail(path, f"{where}.orders must be 1 to {_MAX_ORDERS} increasing whole numbers in "
                          f"[2, {_MAX_ORDER}], got {_short(orders)}")
    if not isinstance(history, list):
        raise _fail(path, f"{where}.history must be a list, got {_short(history)}")
    steps = 0
    for i, h in enumerate(history):
        ok = isinstance(h, list) and len(h) == 3 and _is_num(h[0]) and _is_num(h[1]) and _is_int(h[2])
        if not ok or not (1e-3 <= h[0] <= 1e6 and 0.0 <= h[1] <= 1.0 and h[2] >= 0):
            raise _fail(path, f"{where}.history[{i}] must be [noise multiplier in [0.001, 1e6], sample rate in "
                              f"[0, 1], steps >= 0], got {_short(h)}")
        steps += h[2]
    if steps > completed_round + 1:
        raise _fail(path, f"{where} accounts {steps} rounds, more than the {completed_round + 1} completed")


def _check_header(path: Path, h: object, device_ids: Sequence[str], completed_round: int,
                  phases_done: Sequence[int]) -> None:
    """The engine's JSON state (:meth:`federation.rounds.RoundEngine.state`) and the runner's phase matrix."""
    from .accounting import SERVER
    from .messages import LinkType

    assert isinstance(h, dict)
    ids = set(device_ids)
    bat = h.get("battery_j")
    if not isinstance(bat, dict) or set(bat) != ids or not all(v is None or (_is_num(v) and v >= 0)
                                                               for v in bat.values()):
        raise _fail(path, f"battery_j must map every device to joules >= 0 or null, got {_short(bat)}")
    _check_accountant(path, "accountant", h.get("accountant"), completed_round)
    local = h.get("local_accountants", {})
    if not isinstance(local, dict) or not set(local) <= ids:
        raise _fail(path, f"local_accountants must map devices of this run to accountants, got {_short(local)}")
    for d, acc in local.items():
        _check_accountant(path, f"local_accountants[{d!r}]", acc, completed_round)
    ledger = h.get("ledger")
    if not isinstance(ledger, list):
        raise _fail(path, f"ledger must be a list of link records, got {_short(ledger)}")
    ends, links = ids | {SERVER}, {lt.value for lt in LinkType}
    for i, r in enumerate(ledger):
        ok = (isinstance(r, dict) and _is_int(r.get("round")) and 0 <= r["round"] <= completed_round
              and _one_of(r.get("link"), links) and _one_of(r.get("src"), ends) and _one_of(r.get("dst"), ends)
              and _is_int(r.get("nbytes")) and r["nbytes"] >= 0 and _is_num(r.get("joules")) and r["joules"] >= 0)
        if not ok:
            raise _fail(path, f"ledger[{i}] must be a link record of a completed round (round 0..{completed_round}, "
                              f"link, src, dst of this run, nbytes >= 0, joules >= 0), got {_short(r)}")
    pa = h.get("phase_acc", {})
    want = {str(t): {str(j) for j in range(t + 1)} for t in phases_done}
    good = isinstance(pa, dict) and set(pa) == (ids if want else set())
    if good:
        for per in pa.values():
            good = good and isinstance(per, dict) and set(per) == set(want)
            for t, row in (per.items() if good else ()):
                good = good and isinstance(row, dict) and set(row) == want[t] and all(
                    _is_num(v) and 0.0 <= v <= 1.0 for v in row.values())
    if not good:
        raise _fail(path, f"phase_acc must hold every device's balanced accuracy in [0, 1] on phases j <= t after "
                          f"each finished phase t {sorted(want, key=int)}, got {_short(pa)}")


def phases_done(completed_round: int, rounds: int, phases: int) -> list[int]:
    """The phases that ended by ``completed_round``: those whose last round (as the runner splits rounds over
    phases, :func:`federation.runner.phase_of_round`) is at most ``completed_round``."""
    from .runner import phase_of_round

    return [phase_of_round(r, rounds, phases) for r in range(completed_round + 1)
            if r == rounds - 1 or phase_of_round(r + 1, rounds, phases) != phase_of_round(r, rounds, phases)]


def read_checkpoint(ck_dir: str | os.PathLike[str], *, device_ids: Sequence[str], rounds: int, phases: int,
                    metrics: tuple[Path, Sequence[int]] | None = None) -> Checkpoint | None:
    """Verify and load the checkpoint in ``ck_dir``; None when it holds none (no ``engine.json``).

    ``metrics`` (the metrics file and the rounds it records) checks the checkpoint's round against them
    (:func:`check_metrics_rounds`) before the rest of its state.

    Reads only: nothing in ``ck_dir`` is created, changed or removed, whatever it holds."""
    ck = Path(ck_dir)
    if not ck.is_dir() or not (ck / ENGINE_JSON).exists() and not (ck / MANIFEST_NAME).exists():
        return None
    has_manifest = (ck / MANIFEST_NAME).exists()
    manifest_round = _verify_manifest(ck, device_ids) if has_manifest else None
    if not has_manifest:
        warnings.warn(f"{ck}: checkpoint without a checksum manifest (written by an older xrfed); verifying its "
                      f"structure only", stacklevel=3)
        for rel in _expected_files(device_ids):
            _regular_size(ck / rel, MAX_TENSOR_FILE_BYTES if rel.endswith(".safetensors") else MAX_JSON_BYTES)
    hpath = ck / ENGINE_JSON
    header = _read_json(hpath)
    if not isinstance(header, dict):
        raise _fail(hpath, f"expected a JSON object, got {_short(header)}")
    rnd = header.get("completed_round")
    if not _is_int(rnd) or not 0 <= rnd < rounds:
        raise _fail(hpath, f"completed_round must be a whole number in [0, {rounds - 1}] (the config has {rounds} "
                           f"rounds), got {_short(rnd)}")
    if manifest_round is not None and manifest_round != rnd:
        raise _fail(ck / MANIFEST_NAME, f"completed_round {manifest_round} differs from {ENGINE_JSON}'s {rnd}")
    if metrics is not None:
        check_metrics_rounds(rnd, metrics[1], metrics[0], ck)
    _check_header(hpath, header, device_ids, rnd, phases_done(rnd, rounds, phases))
    engine = _load_tensors(ck / ENGINE_TENSORS)
    clients = {d: _load_tensors(ck / CLIENTS_DIR / f"{d}.safetensors") for d in device_ids}
    return Checkpoint(header, engine, clients, int(rnd), has_manifest)


# -- consistency with the rest of the run -------------------------------------------------------------------------
def check_metrics_rounds(completed_round: int, recorded: Sequence[int], metrics_path: Path,
                         ck_dir: Path) -> None:
    """The checkpoint's round against the rounds ``metrics.jsonl`` records (in order, from 0).

    The metrics line of a round is written before its checkpoint, so the file records the checkpointed rounds and
    at most one more (a round interrupted before its checkpoint, re-run by the resume). Fewer rounds means the
    checkpoint claims rounds nobody recorded; more means the checkpoint is older than the metrics -- resuming would
    drop recorded rounds -- and both are refused."""
    n = len(recorded)
    want = f"rounds 0..{n - 1}" if n else "no round"
    if n < completed_round + 1:
        raise _fail(ck_dir / ENGINE_JSON, f"completed_round {completed_round}, but {metrics_path.name} records "
                                          f"{want}; the checkpoint does not belong to these metrics")
    if n > completed_round + 2:
        raise _fail(ck_dir / ENGINE_JSON, f"completed_round {completed_round} is older than {metrics_path.name}, "
                                          f"which records {want}; resuming would drop recorded rounds")


def check_engine_tensors(path: Path, tensors: Mapping[str, torch.Tensor], device_ids: Sequence[str],
                         shared: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, dict[str, torch.Tensor]]:
    """The engine's tensor names and shapes: a device's templates are exactly its shared tensors (``shared``: what
    the freshly built device shares -- names and shapes never change in a run), and what it last received has the
    same names and shapes; returns the templates per device (the global part is checked by :func:`check_global`)."""
    ids = set(device_ids)
    found: dict[str, dict[str, dict[str, torch.Tensor]]] = {"template": {d: {} for d in device_ids},
                                                            "received": {d: {} for d in device_ids}}
    for name, t in tensors.items():
        parts = name.split("/", 2)
        if len(parts) != 3 or parts[0] not in ("template", "received", "global") or (
                parts[0] == "global" and parts[1] != "-") or (parts[0] != "global" and parts[1] not in ids):
            raise _fail(path, f"tensor {_short(name)} is not template/<device>/<key>, received/<device>/<key> or "
                              f"global/-/<key> of this run's devices")
        if parts[0] != "global":
            found[parts[0]][parts[1]][parts[2]] = t
    for kind, per_device in found.items():
        for d, st in per_device.items():
            want = shared[d]
            if set(st) != set(want):
                extra, missing = sorted(set(st) - set(want)), sorted(set(want) - set(st))
                raise _fail(path, f"{kind}/{d}: tensors {_short(extra) if extra else 'none'} are not device {d!r}'s "
                                  f"shared tensors and {_short(missing) if missing else 'none'} are missing")
            for k, t in st.items():
                if tuple(t.shape) != tuple(want[k].shape) or not t.is_floating_point():
                    raise _fail(path, f"tensor {_short(f'{kind}/{d}/{k}')} {tuple(t.shape)} {t.dtype} is not "
                                      f"device {d!r}'s {tuple(want[k].shape)} floating-point tensor")
    return found["template"]


def check_global(path: Path, tensors: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> None:
    """``global/-/<key>`` tensors: keys of the strategy's common space with its shapes and dtypes."""
    for name, t in tensors.items():
        if not name.startswith("global/-/"):
            continue
        want = expected.get(name[len("global/-/"):])
        if want is None or tuple(want.shape) != tuple(t.shape) or want.dtype != t.dtype:
            raise _fail(path, f"tensor {_short(name)} {tuple(t.shape)} {t.dtype} is not in the strategy's common "
                              f"space of these devices")
