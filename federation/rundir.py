"""Reading run directories (what :mod:`federation.runner` writes, what :mod:`federation.report` reads).

A single run::

    RUN/config.yaml  metrics.jsonl  baselines.json  summary.json  checkpoint/  report.md  report.html  plots/

A multi-seed experiment (``seeds: [..]`` in the config) holds one single run per seed and the aggregate::

    RUN/config.yaml  seed-<s>/...  summary.json (kind: multi-seed)  report.md  report.html
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import CheckpointError

__all__ = ["MAX_METRICS_BYTES", "read_metrics", "read_summary", "read_baselines", "seed_dirs", "is_multi_seed", "SEED_DIR_PREFIX"]

SEED_DIR_PREFIX = "seed-"


#: largest metrics.jsonl read (bytes): a round of 50 devices is ~30 kB, so this is thousands of rounds
MAX_METRICS_BYTES = 256 << 20
#: device figures that are summed or maxed into counts, so must be finite when given
_FINITE_FIGURES = ("bytes_sent", "bytes_received", "compute_joules", "comm_joules", "storage_bytes",
                   "active_modules", "train_time_s")
_LINK_TYPES = ("uplink", "downlink", "d2d")


def _num(v: object, finite: bool = True) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and (not finite or math.isfinite(v))


def _short(value: object, limit: int = 60) -> str:
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in repr(value))
    return text if len(text) <= limit else text[:limit] + "..."


def _row_problem(row: object, index: int, devices: set[str] | None) -> str | None:
    """What is wrong with one metrics row (a :meth:`RoundRecord.to_json` line), or None."""
    if not isinstance(row, dict):
        return f"expected a JSON object, got {_short(row)}"
    if row.get("round") != index or not isinstance(row.get("round"), int) or isinstance(row.get("round"), bool):
        return f"'round' must be {index} (rounds are recorded in order from 0), got {_short(row.get('round'))}"
    devs = row.get("devices")
    if not isinstance(devs, dict) or not devs:
        return f"'devices' must map device ids to their figures, got {_short(devs)}"
    if devices is not None and set(devs) != devices:
        return f"devices {_short(sorted(devs))} differ from the first round's {_short(sorted(devices))}"
    for d, fig in devs.items():
        if not isinstance(fig, dict) or not isinstance(fig.get("status"), str):
            return f"devices[{_short(d)}] must be an object with a 'status', got {_short(fig)}"
        for k, v in fig.items():
            if k in ("status", "accuracy_per_task", "balanced_accuracy_per_task"):
                continue
            if v is not None and not _num(v, finite=k in _FINITE_FIGURES):
                return f"devices[{_short(d)}].{_short(k)[1:-1]} must be a {'finite ' * (k in _FINITE_FIGURES)}" \
                       f"number or null, got {_short(v)}"
    links = row.get("links")
    if not isinstance(links, dict) or not all(
            isinstance(links.get(lt), dict) and _num(links[lt].get("bytes")) and _num(links[lt].get("joules"))
            for lt in _LINK_TYPES):
        return f"'links' must give finite bytes and joules for {', '.join(_LINK_TYPES)}, got {_short(links)}"
    if not _num(row.get("round_latency_s")):
        return f"'round_latency_s' must be a finite number, got {_short(row.get('round_latency_s'))}"
    eps = row.get("epsilon")
    if eps is not None and not _num(eps, finite=False):
        return f"'epsilon' must be a number or null, got {_short(eps)}"
    return None


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``run_dir/metrics.jsonl``, checked: one JSON object per line, rounds 0, 1, ... in order, the
    same devices in every round, finite counts. A bad line is a :class:`CheckpointError` naming the file, the line
    and what is wrong."""
    p = Path(run_dir) / "metrics.jsonl"
    if not p.is_file():
        raise CheckpointError(f"{run_dir}: no metrics.jsonl (not a run directory?)")
    size = p.stat().st_size
    if size > MAX_METRICS_BYTES:
        raise CheckpointError(f"{p}: {size} bytes, more than the {MAX_METRICS_BYTES} a metrics file may have")
    rows: list[dict[str, Any]] = []
    devices: set[str] | None = None
    for i, raw in enumerate(p.read_bytes().split(b"\n")):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, 5000-digit integers, deep nesting
            msg = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
            raise CheckpointError(f"{p}: line {i + 1} is not valid JSON ({msg})") from None
        problem = _row_problem(row, len(rows), devices)
        if problem is not None:
            raise CheckpointError(f"{p}: line {i + 1}: {problem}")
        devices = set(row["devices"])
        rows.append(row)
    return rows


#: largest summary/baselines JSON file read (bytes)
MAX_JSON_BYTES = 256 << 20


def _read_json(run_dir: str | Path, name: str, missing: str) -> dict[str, Any]:
    p = Path(run_dir) / name
    if not p.is_file():
        raise CheckpointError(f"{run_dir}: no {name} ({missing})")
    size = p.stat().st_size
    if size > MAX_JSON_BYTES:
        raise CheckpointError(f"{p}: {size} bytes, more than the {MAX_JSON_BYTES} allowed")
    try:
        out = json.loads(p.read_bytes())
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, 5000-digit integers, deep nesting
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise CheckpointError(f"{p}: not valid JSON ({msg})") from None
    if not isinstance(out, dict):
        raise CheckpointError(f"{p}: expected a JSON object")
    return out


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    return _read_json(run_dir, "summary.json", "the run has not finished; resume it with --resume")


def read_baselines(run_dir: str | Path, *, device_ids: Sequence[str] | None = None, phases: int | None = None,
                   names: Sequence[str] = ()) -> dict[str, Any]:
    """``baselines.json``; with ``device_ids``, ``phases`` and baseline ``names``, its structure is checked too:
    every device and phase has each baseline's accuracy, balanced accuracy (numbers or null) and per-task figures."""
    out = _read_json(run_dir, "baselines.json", "written before the first round")
    if device_ids is None or phases is None:
        return out
    p = Path(run_dir) / "baselines.json"
    devices = out.get("devices")
    if not isinstance(out.get("split"), dict) or not isinstance(devices, dict):
        raise CheckpointError(f"{p}: expected 'split' and 'devices' objects")
    for d in device_ids:
        for ph in range(phases):
            figs = devices.get(d, {}).get(str(ph)) if isinstance(devices.get(d), dict) else None
            for b in names:
                fig = figs.get(b) if isinstance(figs, dict) else None
                ok = isinstance(fig, dict) and all(
                    fig.get(k) is None or _num(fig.get(k), finite=False) for k in ("accuracy", "balanced_accuracy")
                ) and isinstance(fig.get("balanced_accuracy_per_task"), dict)
                if not ok:
                    raise CheckpointError(f"{p}: devices[{_short(d)}][{ph}][{b!r}] must hold accuracy, "
                                          f"balanced_accuracy and balanced_accuracy_per_task, got {_short(fig)}")
    return out


def seed_dirs(run_dir: str | Path) -> list[Path]:
    """The per-seed run directories of a multi-seed experiment, by seed."""
    found = [p for p in Path(run_dir).glob(f"{SEED_DIR_PREFIX}*") if p.is_dir()]
    return sorted(found, key=lambda p: int(p.name[len(SEED_DIR_PREFIX):]) if p.name[len(SEED_DIR_PREFIX):].isdigit()
                  else -1)


def is_multi_seed(run_dir: str | Path) -> bool:
    return bool(seed_dirs(run_dir))
