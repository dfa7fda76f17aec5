"""Continual adaptation of a device across phases (lighting phases, task switches: SHIFT T and F).

The methods live with the agent that trains, and nothing they keep leaves the device:

* :class:`EWC` -- elastic weight consolidation (Kirkpatrick et al. 2017): when the device leaves a phase, the
  diagonal empirical Fisher (mean squared gradient of the loss over a few batches of that phase) and the current
  parameters become an anchor; later local training adds ``strength / 2 * sum_i F_i (theta_i - theta*_i)^2``.
  Fishers of successive phases add up, so every earlier phase keeps its weight.
* :class:`ReplayBuffer` -- a reservoir sample (Vitter's algorithm R) of earlier phases' training steps mixed into
  the current phase's local buffer.

:data:`CONTINUAL_METHODS` names the choices (``none``, ``ewc``, ``replay``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

import torch

from .errors import AgentError

__all__ = ["CONTINUAL_METHODS", "EWC", "ReplayBuffer"]

CONTINUAL_METHODS: tuple[str, ...] = ("none", "ewc", "replay")

T = TypeVar("T")


class EWC:
    """Diagonal-Fisher EWC penalty over named parameters, consolidated at each phase change."""

    def __init__(self, strength: float = 100.0):
        if not strength >= 0:
            raise AgentError(f"EWC strength must be >= 0, got {strength}")
        self.strength = float(strength)
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def consolidate(self, params: Mapping[str, torch.nn.Parameter], loss_fn: Callable[[Any], torch.Tensor],
                    batches: Iterable[Any]) -> None:
        """Add this phase's Fisher (mean squared gradient of ``loss_fn(batch)`` w.r.t. ``params``), re-anchor."""
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
            raise AgentError("EWC consolidation needs at least one batch")
        for k, p in params.items():
            self.fisher[k] = self.fisher.get(k, torch.zeros_like(sq[k])) + sq[k] / n
            self.anchor[k] = p.detach().clone()
            p.grad = None

    def penalty(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The term to add to the local loss (0 before the first consolidation)."""
        total = torch.zeros(())
        for k, p in params.items():
            if k in self.fisher:
                total = total + (self.fisher[k] * (p - self.anchor[k]).pow(2)).sum()
        return 0.5 * self.strength * total

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {f"fisher.{k}": v.clone() for k, v in self.fisher.items()}
        out.update({f"anchor.{k}": v.clone() for k, v in self.anchor.items()})
        return out

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.fisher = {k[len("fisher."):]: v.clone() for k, v in state.items() if k.startswith("fisher.")}
        self.anchor = {k[len("anchor."):]: v.clone() for k, v in state.items() if k.startswith("anchor.")}


class ReplayBuffer(Generic[T]):
    """Reservoir sample of at most ``capacity`` items from everything offered.

    Every item ever offered has the same chance of being held, so earlier phases stay represented however long
    the later ones run; the draw is a pure function of ``seed`` and the offered sequence.
    """

    def __init__(self, capacity: int, seed: int = 0):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise AgentError(f"replay capacity must be an integer >= 1, got {capacity!r}")
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
