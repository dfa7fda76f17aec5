"""Aggregation strategies: small classes over plain tensors, chosen by name per experiment.

A strategy turns the round's :class:`~federation.messages.ClientUpdate` list into an :class:`AggregateResult`,
from which every device's broadcast is cut (:meth:`AggregateResult.for_device`): a device receives only the keys
it holds, and exact-LoRA deltas are re-factorized to that device's own rank. The maths live in
:mod:`federation.aggregate`; a strategy only decides which pure function runs over which filtered updates.

``partial=True`` (the default) applies modality-/task-aware filtering first: an encoder is averaged among the
devices that have its modality, a head among the devices that run its task; personal adapters never count.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from . import aggregate as agg
from .errors import ConfigError, UnknownNameError
from .messages import ClientUpdate

__all__ = [
    "AggregateResult",
    "Strategy",
    "FedAvg",
    "FedIT",
    "ExactLoRA",
    "CoordinateMedian",
    "TrimmedMean",
    "Krum",
    "register_strategy",
    "make_strategy",
    "strategy_names",
]


@dataclass
class AggregateResult:
    """Global tensors (plain keys), exact LoRA products per (A-key, B-key) pair, and diagnostics."""

    tensors: dict[str, torch.Tensor]
    lora_deltas: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    diagnostics: dict[str, float] = field(default_factory=dict)

    def for_device(self, template: Mapping[str, torch.Tensor], lora_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """The broadcast for a device whose shared state is ``template`` (keys, shapes and dtypes are read).

        Keys the aggregate does not cover (no eligible device sent them this round) are left out, so the device
        keeps its own values for them.
        """
        out = {k: v.to(template[k].dtype) for k, v in self.tensors.items() if k in template}
        for (a_key, b_key), dw in self.lora_deltas.items():
            if a_key in template and b_key in template:
                rank = template[a_key].shape[0]
                b, a = agg.refactorize(dw / lora_scale, rank)
                out[a_key], out[b_key] = a.to(template[a_key].dtype), b.to(template[b_key].dtype)
        return out


class Strategy:
    """Base class: filter (partial aggregation), weight by samples, reduce. Subclasses implement ``_reduce``."""

    name = "abstract"

    def __init__(self, *, partial: bool = True):
        self.partial = bool(partial)

    def filtered(self, updates: Sequence[ClientUpdate]) -> list[dict[str, torch.Tensor]]:
        """Each update's tensors after modality/task filtering (personal keys are always dropped)."""
        if self.partial:
            return agg.partial_filter([u.tensors for u in updates], [u.modalities for u in updates],
                                      [u.tasks for u in updates])
        return [{k: t for k, t in u.tensors.items() if not agg.is_personal(k)} for u in updates]

    def aggregate(self, updates: Sequence[ClientUpdate]) -> AggregateResult:
        tensors = self.filtered(updates)
        weights = [float(u.num_samples) for u in updates]
        scales = [float(u.lora_scale) for u in updates]
        result = self._reduce(tensors, weights, scales)
        if any(agg.lora_pairs(list(t)) for t in tensors):
            err = agg.naive_lora_error(tensors, weights, scales)
            result.diagnostics["lora_naive_error_fro"] = err["abs_fro"]
            result.diagnostics["lora_naive_error_rel"] = err["rel"]
        return result

    def _reduce(self, tensors: list[dict[str, torch.Tensor]], weights: list[float],
                scales: list[float]) -> AggregateResult:
        raise TypeError(f"{type(self).__name__} must implement _reduce")

    def config(self) -> dict[str, Any]:
        return {"partial": self.partial}


class FedAvg(Strategy):
    """Sample-weighted average per key (McMahan et al. 2017)."""

    name = "fedavg"

    def _reduce(self, tensors, weights, scales):
        return AggregateResult(agg.fedavg(tensors, weights))


class FedIT(FedAvg):
    """FedAvg applied to LoRA factors: A and B averaged separately (Zhang et al. 2024), the common baseline."""

    name = "fedit"


class ExactLoRA(Strategy):
    """Average the products B.A exactly and re-factorize to each device's rank by truncated SVD (FlexLoRA).

    Non-LoRA keys (heads, biases) are averaged as in FedAvg. Serves heterogeneous ranks.
    """

    name = "exact_lora"

    def _reduce(self, tensors, weights, scales):
        deltas = agg.exact_lora_deltas(tensors, weights, scales)
        lora_keys = {k for pair in deltas for k in pair}
        plain = [{k: t for k, t in u.items() if k not in lora_keys} for u in tensors]
        present = [i for i, u in enumerate(plain) if u]
        base = agg.fedavg([plain[i] for i in present], [weights[i] for i in present]) if present else {}
        return AggregateResult(base, deltas)


class CoordinateMedian(Strategy):
    """Coordinate-wise median (robust to < 50% arbitrary updates per coordinate)."""

    name = "median"

    def _reduce(self, tensors, weights, scales):
        return AggregateResult(agg.coordinate_median(tensors))


class TrimmedMean(Strategy):
    """Coordinate-wise trimmed mean dropping ``trim_fraction`` of the values at each end."""

    name = "trimmed_mean"

    def __init__(self, *, trim_fraction: float = 0.1, partial: bool = True):
        super().__init__(partial=partial)
        if not 0.0 <= trim_fraction < 0.5:
            raise ConfigError("aggregator.trim_fraction", "must be in [0, 0.5)", value=trim_fraction)
        self.trim_fraction = trim_fraction

    def _reduce(self, tensors, weights, scales):
        return AggregateResult(agg.trimmed_mean(tensors, trim_fraction=self.trim_fraction))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "trim_fraction": self.trim_fraction}


class Krum(Strategy):
    """(Multi-)Krum: keep the update(s) closest to their neighbours, tolerating ``num_byzantine`` attackers."""

    name = "krum"

    def __init__(self, *, num_byzantine: int = 1, num_selected: int = 1, partial: bool = True):
        super().__init__(partial=partial)
        if num_byzantine < 0:
            raise ConfigError("aggregator.num_byzantine", "must be >= 0", value=num_byzantine)
        if num_selected < 1:
            raise ConfigError("aggregator.num_selected", "must be >= 1", value=num_selected)
        self.num_byzantine, self.num_selected = num_byzantine, num_selected

    def _reduce(self, tensors, weights, scales):
        res = AggregateResult(agg.krum(tensors, num_byzantine=self.num_byzantine, num_selected=self.num_selected))
        res.diagnostics["krum_guarantee_holds"] = float(len(tensors) > 2 * self.num_byzantine + 2)
        return res

    def config(self) -> dict[str, Any]:
        return {**super().config(), "num_byzantine": self.num_byzantine, "num_selected": self.num_selected}


_STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (FedAvg, FedIT, ExactLoRA, CoordinateMedian, TrimmedMean, Krum)
}


def register_strategy(name: str, cls: type[Strategy], *, overwrite: bool = False) -> None:
    """Add a strategy class under ``name``."""
    if name in _STRATEGIES and not overwrite:
        raise ValueError(f"strategy {name!r} already registered; pass overwrite=True")
    _STRATEGIES[name] = cls


def strategy_names() -> tuple[str, ...]:
    return tuple(_STRATEGIES)


def make_strategy(name: str, **options: Any) -> Strategy:
    """Create a strategy by name; an unknown name lists the known ones, an unknown option the allowed ones."""
    try:
        cls = _STRATEGIES[name]
    except KeyError:
        raise UnknownNameError("aggregator", name, tuple(_STRATEGIES)) from None
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    bad = [k for k in options if k not in allowed]
    if bad:
        raise ConfigError(f"aggregator.{bad[0]}", f"not an option of {name!r}", allowed=allowed)
    return cls(**options)
