"""Reading run directories (what :mod:`federation.runner` writes, what :mod:`federation.report` reads).

A single run::

    RUN/config.yaml  metrics.jsonl  baselines.json  summary.json  checkpoint/  report.md  report.html  plots/

A multi-seed experiment (``seeds: [..]`` in the config) holds one single run per seed and the aggregate::

    RUN/config.yaml  seed-<s>/...  summary.json (kind: multi-seed)  report.md  report.html
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import CheckpointError

__all__ = ["read_metrics", "read_summary", "read_baselines", "seed_dirs", "is_multi_seed", "SEED_DIR_PREFIX"]

SEED_DIR_PREFIX = "seed-"


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    p = Path(run_dir) / "metrics.jsonl"
    if not p.is_file():
        raise CheckpointError(f"{run_dir}: no metrics.jsonl (not a run directory?)")
    rows = []
    for i, line in enumerate(p.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{p}: line {i + 1} is not valid JSON ({exc.msg})") from None
    return rows


def _read_json(run_dir: str | Path, name: str, missing: str) -> dict[str, Any]:
    p = Path(run_dir) / name
    if not p.is_file():
        raise CheckpointError(f"{run_dir}: no {name} ({missing})")
    try:
        out = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{p}: not valid JSON ({exc.msg})") from None
    if not isinstance(out, dict):
        raise CheckpointError(f"{p}: expected a JSON object")
    return out


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    return _read_json(run_dir, "summary.json", "the run has not finished; resume it with --resume")


def read_baselines(run_dir: str | Path) -> dict[str, Any]:
    return _read_json(run_dir, "baselines.json", "written before the first round")


def seed_dirs(run_dir: str | Path) -> list[Path]:
    """The per-seed run directories of a multi-seed experiment, by seed."""
    found = [p for p in Path(run_dir).glob(f"{SEED_DIR_PREFIX}*") if p.is_dir()]
    return sorted(found, key=lambda p: int(p.name[len(SEED_DIR_PREFIX):]) if p.name[len(SEED_DIR_PREFIX):].isdigit()
                  else -1)


def is_multi_seed(run_dir: str | Path) -> bool:
    return bool(seed_dirs(run_dir))
