"""Measuring continual adaptation across lighting phases and task switches (SHIFT T and F).

:func:`forgetting` is the Table 6 "task-specific continuity" metric: for each earlier phase, the best accuracy it
ever had minus its accuracy after the last phase (Chaudhry et al. 2018), and their mean. The mitigations (EWC,
replay) act in each device's local training and live with the agent that trains: :mod:`agents.continual`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import FederationError

__all__ = ["forgetting"]


def forgetting(acc: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Forgetting from an accuracy matrix ``acc[t][j]`` = accuracy on phase j after adapting through phase t.

    Returns ``per_phase`` (for every phase j before the last: ``max_{t < T-1} acc[t][j] - acc[T-1][j]``, only
    counting t >= j, i.e. after phase j was learned), ``mean`` over those phases, and ``final_mean_accuracy``.
    """
    rows = [list(map(float, r)) for r in acc]
    if not rows or any(len(r) != len(rows) for r in rows):
        raise FederationError(f"accuracy matrix must be square [phases x phases], got {[len(r) for r in rows]}")
    last = len(rows) - 1
    per = [max(rows[t][j] for t in range(j, last)) - rows[last][j] for j in range(last)]
    return {"per_phase": per, "mean": sum(per) / len(per) if per else 0.0,
            "final_mean_accuracy": sum(rows[last]) / len(rows[last])}
