"""Continual adaptation across lighting phases and task switches (SHIFT T and F).

* :func:`forgetting` -- the Table 6 "task-specific continuity" metric: for each earlier phase, the best accuracy
  it ever had minus its accuracy after the last phase (Chaudhry et al. 2018), and their mean.
* :class:`EwcPenalty` -- elastic weight consolidation (Kirkpatrick et al. 2017) over a parameter dict: a diagonal
  Fisher estimated on the previous phase anchors the parameters that mattered for it.
* :class:`ReplayBuffer` -- a small reservoir-sampled buffer of earlier samples mixed into later local training.

Both mitigations act on a device's local training only; nothing they keep leaves the device.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import torch

from .errors import FederationError

__all__ = ["forgetting", "EwcPenalty", "ReplayBuffer"]

T = TypeVar("T")


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


class EwcPenalty:
    """``lambda/2 * sum_i F_i (theta_i - theta*_i)^2`` over named parameters, consolidated after each phase.

    ``consolidate`` estimates the diagonal Fisher as the mean squared gradient of the loss over a few batches
    (the empirical Fisher) and stores the current parameters as the anchor; Fishers of successive phases add up,
    so every earlier phase keeps its weight.
    """

    def __init__(self, strength: float = 100.0):
        if strength < 0:
            raise FederationError(f"EWC strength must be >= 0, got {strength}")
        self.strength = float(strength)
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def consolidate(self, params: Mapping[str, torch.nn.Parameter], loss_fn: Callable[[Any], torch.Tensor],
                    batches: Iterable[Any]) -> None:
        """Add this phase's Fisher (mean squared gradient of ``loss_fn(batch)`` w.r.t. ``params``)."""
        sq = {k: torch.zeros_like(p, dtype=torch.float32) for k, p in params.items()}
        n = 0
        for batch in batches:
            for p in params.values():
                p.grad = None
            loss_fn(batch).backward()
            for k, p in params.items():
                if p.grad is not None:
                    sq[k] += p.grad.detach().float().pow(2)
            n += 1
        if n == 0:
            raise FederationError("EWC consolidation needs at least one batch")
        for k, p in params.items():
            self.fisher[k] = self.fisher.get(k, torch.zeros_like(sq[k])) + sq[k] / n
            self.anchor[k] = p.detach().clone()
            p.grad = None

    def penalty(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The penalty to add to the local loss (0 before the first consolidation)."""
        total = torch.zeros(())
        for k, p in params.items():
            if k in self.fisher:
                total = total + (self.fisher[k] * (p - self.anchor[k]).pow(2)).sum()
        return 0.5 * self.strength * total

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {f"fisher.{k}": v for k, v in self.fisher.items()}
        out.update({f"anchor.{k}": v for k, v in self.anchor.items()})
        return out

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.fisher = {k[len("fisher."):]: v.clone() for k, v in state.items() if k.startswith("fisher.")}
        self.anchor = {k[len("anchor."):]: v.clone() for k, v in state.items() if k.startswith("anchor.")}


class ReplayBuffer(Generic[T]):
    """Reservoir sample of at most ``capacity`` items from everything offered (Vitter's algorithm R).

    Every item ever offered has the same chance of being held, so earlier phases stay represented however long
    the later ones run.
    """

    def __init__(self, capacity: int, seed: int = 0):
        if capacity < 1:
            raise FederationError(f"replay capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.items: list[T] = []
        self.seen = 0
        self._rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, item: T) -> None:
        self.seen += 1
        if len(self.items) < self.capacity:
            self.items.append(item)
        else:
            j = self._rng.randrange(self.seen)
            if j < self.capacity:
                self.items[j] = item

    def extend(self, items: Iterable[T]) -> None:
        for it in items:
            self.add(it)

    def sample(self, n: int) -> list[T]:
        """Up to ``n`` distinct held items, uniformly."""
        return self._rng.sample(self.items, min(n, len(self.items)))
