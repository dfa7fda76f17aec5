"""The handoff types between a device's agent and whoever drives it (the federation's round engine, a bench).

One :class:`TrainReport` per local training call and one :class:`EvalReport` per evaluation: the agents package
produces them, the federation consumes them as they are (no second report type, no dicts read by guessed field
names). Both are plain dataclasses of numbers, so they cross process boundaries (Ray) and land in JSON unchanged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["TrainReport", "EvalReport", "balanced_accuracy", "macro_mean"]


@dataclass
class TrainReport:
    """One local training call.

    ``flops`` is the work done (stated compute model, :mod:`agents.train`); the federation turns it into simulated
    on-device time with the profile's sustained GFLOP/s and into energy with its J/GFLOP. ``wall_time_s`` is what
    the host spent. ``storage_bytes`` is the model as deployed on the device (frozen base + shared and personal
    adapters): Table 6's storage footprint.
    """

    num_samples: int
    loss: float
    steps: int
    batch_size: int
    flops: float
    wall_time_s: float = 0.0
    device_time_s: float = 0.0
    energy_j: float = 0.0
    storage_bytes: int | None = None

    @property
    def compute_gflop(self) -> float:
        return self.flops / 1e9

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "compute_gflop": self.compute_gflop}


def balanced_accuracy(hits: dict[int, tuple[int, int]]) -> float:
    """Mean per-class recall over the classes present in the evaluated labels (``class -> (correct, total)``).

    Unlike accuracy it cannot be won by always answering the majority class: a constant answer scores
    1 / (number of classes present) at best.
    """
    recalls = [c / n for c, n in hits.values() if n > 0]
    return float(sum(recalls) / len(recalls)) if recalls else float("nan")


def macro_mean(per_task: dict[str, float]) -> float:
    """Unweighted mean over tasks (NaN when there is none): every task counts once, however many labels it has."""
    vals = [v for v in per_task.values() if not math.isnan(v)]
    return float(sum(vals) / len(vals)) if vals else float("nan")


@dataclass
class EvalReport:
    """A device's evaluation on one split: per task accuracy and balanced accuracy in [0, 1], loss, latency.

    ``per_sample_loss`` (unweighted cross-entropy summed over the sample's tasks) feeds the membership-inference
    audit; ``counts`` is the number of labelled samples per task. ``macro_balanced_accuracy`` -- the mean over
    tasks of balanced accuracy -- is the headline figure: tasks whose label is nearly constant per device cannot
    carry it.
    """

    accuracy: dict[str, float]
    loss: float
    latency_ms: float
    num_samples: int
    balanced_accuracy: dict[str, float] = field(default_factory=dict)
    per_sample_loss: list[float] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    #: task -> [(item index, label, predicted class)] when asked for (model cards resample them)
    predictions: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict)

    @property
    def mean_accuracy(self) -> float:
        return macro_mean(self.accuracy)

    @property
    def macro_balanced_accuracy(self) -> float:
        return macro_mean(self.balanced_accuracy)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("per_sample_loss")
        d.pop("predictions")
        d["mean_accuracy"] = self.mean_accuracy
        d["macro_balanced_accuracy"] = self.macro_balanced_accuracy
        return d
