"""Aggregation strategies: small classes over plain tensors, chosen by name per experiment.

A strategy works in a *common space* where every device's update has the same shapes, whatever its LoRA rank:

* ``lora="product"`` (exact; the default of ``exact_lora`` and the robust aggregators): each LoRA pair becomes its
  exact update ``s * B @ A`` [d, n] (:func:`federation.aggregate.to_products`); a device receives the aggregate
  re-factorized to its own rank by truncated SVD (FlexLoRA);
* ``lora="factors"`` (``fedavg``/``fedit``, the common baseline): A and B are aggregated separately; different ranks
  are zero-padded to the largest (HetLoRA) and each device receives its first r rows/columns.

``encode``/``decode`` cross between a device's tensors and the common space, ``align`` makes a list of encoded
states shape-compatible, ``filtered`` applies modality-aware (an encoder among the devices that have its modality)
and task-aware (a head among the devices that run its task) partial aggregation -- personal keys never count -- and
``aggregate`` reduces the round's contributions -- the maths are the pure functions of :mod:`federation.aggregate`.

Aggregation streams: :meth:`Strategy.accumulator` opens a round's aggregation, ``add`` folds one contribution in
as it arrives and ``result`` closes it. Averaging strategies keep running weighted sums (one model's worth of
memory whatever the number of devices: :func:`federation.aggregate.fold_weighted`); robust ones
(``needs_all_updates``: median, trimmed mean, Krum) must see every update and buffer them until ``result``.
``aggregate(updates)`` is the same fold over a list, so a streamed round and a batch call agree bit for bit.

:class:`DifferentialPrivacy` wraps any strategy, as Flower's DP strategies wrap theirs: it clips every device's
update before anything mixes it and adds Gaussian noise, on the server (``central``: needs an averaging strategy,
whose sum has sensitivity ``clip_norm``) or on the device itself (``local``: any strategy, any paradigm,
post-processing of already private releases).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from . import aggregate as agg
from .errors import ConfigError, UnknownNameError
from .messages import ClientUpdate

__all__ = [
    "AggregateResult",
    "AggregationContext",
    "Accumulator",
    "Strategy",
    "FedAvg",
    "FedIT",
    "ExactLoRA",
    "CoordinateMedian",
    "TrimmedMean",
    "Krum",
    "DifferentialPrivacy",
    "DP_MODES",
    "LORA_SPACES",
    "register_strategy",
    "make_strategy",
    "strategy_names",
    "strategy_class",
    "averaging_strategy_names",
]

LORA_SPACES = ("product", "factors")
DP_MODES = ("central", "local")


@dataclass
class AggregateResult:
    """The aggregate in the strategy's common space, and diagnostics (floats) for the round record."""

    tensors: dict[str, torch.Tensor]
    diagnostics: dict[str, float] = field(default_factory=dict)


@dataclass
class AggregationContext:
    """What a wrapper may need beyond the updates: DP's fixed denominators and its seeded noise generator.

    ``expected_counts[key]`` is the expected number of devices contributing to ``key`` in a round (sampling rate
    x devices holding it)."""

    expected_counts: dict[str, float] = field(default_factory=dict)
    generator: torch.Generator | None = None


class Strategy:
    """Base class: encode into the common space, filter (partial aggregation), weight by samples, reduce.

    Subclasses implement ``_reduce(tensors, weights) -> dict``. ``averaging`` marks strategies whose result is
    the weighted mean of the contributions: D2D gossip computes exactly that, central DP can noise its sum, and
    the server folds each contribution into running sums as it arrives. ``needs_all_updates`` marks strategies
    that must see every update before reducing (robust statistics): their accumulator buffers the round.
    """

    name = "abstract"
    averaging = False
    #: True: the reduction needs every update at once (the accumulator buffers them: memory grows as devices x
    #: model size); False: contributions are folded into running sums as they arrive
    needs_all_updates: ClassVar[bool] = True
    default_lora = "product"

    def __init__(self, *, modality_aware: bool = True, task_aware: bool = True, lora: str | None = None):
        self.modality_aware, self.task_aware = bool(modality_aware), bool(task_aware)
        self.lora = self.default_lora if lora is None else lora
        if self.lora not in LORA_SPACES:
            raise ConfigError("aggregator.lora", "unknown LoRA aggregation space", value=self.lora,
                              allowed=list(LORA_SPACES))

    # -- the common space --------------------------------------------------------------------------------
    def encode(self, tensors: Mapping[str, torch.Tensor], lora_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """A device's shared tensors in the common space (float64)."""
        if self.lora == "product":
            return agg.to_products(tensors, lora_scale)
        return {k: t.detach().to(torch.float64) for k, t in tensors.items()}

    def decode(self, common: Mapping[str, torch.Tensor], template: Mapping[str, torch.Tensor],
               lora_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """A device's cut of a common-space state (its keys, ranks, shapes and dtypes, read from ``template``)."""
        if self.lora == "product":
            return agg.from_products(common, template, lora_scale)
        return agg.truncate_lora_factors(common, template)

    def align(self, states: Sequence[Mapping[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        """Make encoded states shape-compatible per key (pads factors of different ranks; products already are)."""
        if self.lora == "factors":
            return agg.pad_lora_factors(states)
        return [dict(s) for s in states]

    def filtered(self, updates: Sequence[ClientUpdate]) -> list[dict[str, torch.Tensor]]:
        """Each update's tensors after modality/task filtering (personal keys are always dropped)."""
        return agg.partial_filter([u.tensors for u in updates], [u.modalities for u in updates],
                                  [u.tasks for u in updates], modality_aware=self.modality_aware,
                                  task_aware=self.task_aware)

    def holds(self, key: str, modalities: Sequence[str], tasks: Sequence[str]) -> bool:
        """Whether a device with these modalities and tasks contributes to ``key`` (the partial filter's rule)."""
        return bool(agg.partial_filter([{key: torch.zeros(())}], [modalities], [tasks],
                                       modality_aware=self.modality_aware, task_aware=self.task_aware)[0])

    # -- reduction ---------------------------------------------------------------------------------------
    def accumulator(self, context: AggregationContext | None = None) -> Accumulator:
        """A round's aggregation, to be fed contribution by contribution (see :class:`Accumulator`)."""
        if self.needs_all_updates:
            return _Buffered(self, context)
        return _RunningMean(self, context)

    def aggregate(self, updates: Sequence[ClientUpdate],
                  context: AggregationContext | None = None) -> AggregateResult:
        """Reduce the round's contributions (common-space tensors, weighted by ``num_samples``): the
        :meth:`accumulator` fed the list in order."""
        acc = self.accumulator(context)
        for u in updates:
            acc.add(u)
        return acc.result()

    def _rank_dim(self, key: str) -> int | None:
        """Where running sums may zero-pad (the rank dimension of LoRA factors in the factors space)."""
        return agg.lora_rank_dim(key) if self.lora == "factors" else None

    def _reduce_all(self, tensors: list[dict[str, torch.Tensor]], weights: list[float]) -> AggregateResult:
        """The batch reduction over every contribution's filtered tensors (buffering strategies)."""
        tensors = self.align(tensors)
        present = [i for i, t in enumerate(tensors) if t]
        if not present:
            return AggregateResult({})
        return AggregateResult(self._reduce([tensors[i] for i in present], [weights[i] for i in present]))

    def _reduce(self, tensors: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
        raise TypeError(f"{type(self).__name__} must implement _reduce")

    def sensitivity(self, clip_norm: float) -> float | None:
        """L2 sensitivity of the aggregate's *sum* to adding or removing one device whose update is clipped to
        ``clip_norm`` (None: this strategy's output has no such bound, central DP cannot noise it)."""
        return clip_norm if self.averaging else None

    def config(self) -> dict[str, Any]:
        return {"modality_aware": self.modality_aware, "task_aware": self.task_aware, "lora": self.lora}


class FedAvg(Strategy):
    """Sample-weighted average per key (McMahan et al. 2017). On LoRA factors this is FedIT: A and B averaged
    separately (inexact: the mean of products is not the product of means)."""

    name = "fedavg"
    averaging = True
    needs_all_updates = False
    default_lora = "factors"

    def _reduce(self, tensors, weights):
        return agg.fedavg(tensors, weights)


class FedIT(FedAvg):
    """FedAvg applied to LoRA factors (Zhang et al. 2024), the common baseline; mixed ranks are zero-padded."""

    name = "fedit"


class ExactLoRA(FedAvg):
    """The sample-weighted average of the exact products ``s_k B_k A_k``, re-factorized to each device's rank by
    truncated SVD (FlexLoRA); serves heterogeneous ranks. Non-LoRA keys (heads, biases) are averaged."""

    name = "exact_lora"
    default_lora = "product"


class CoordinateMedian(Strategy):
    """Coordinate-wise median (robust to < 50% arbitrary updates per coordinate); weights are ignored on purpose."""

    name = "median"

    def _reduce(self, tensors, weights):
        return agg.coordinate_median(tensors)


class TrimmedMean(Strategy):
    """Coordinate-wise trimmed mean dropping ``trim`` values at each end (or ``trim_fraction`` of them).

    Default: one at each end, which acts from 3 devices on (a fraction of 0.1 trims nothing below 10 devices);
    the count is capped per key so at least one value is left."""

    name = "trimmed_mean"

    def __init__(self, *, trim: int | None = None, trim_fraction: float | None = None, modality_aware: bool = True,
                 task_aware: bool = True, lora: str | None = None):
        super().__init__(modality_aware=modality_aware, task_aware=task_aware, lora=lora)
        if trim is not None and trim_fraction is not None:
            raise ConfigError("aggregator.options", "give trim or trim_fraction, not both",
                              value={"trim": trim, "trim_fraction": trim_fraction})
        if trim is not None and (isinstance(trim, bool) or not isinstance(trim, int) or trim < 0):
            raise ConfigError("aggregator.trim", "must be an integer >= 0", value=trim)
        if trim_fraction is not None and not (isinstance(trim_fraction, (int, float))
                                              and 0.0 <= trim_fraction < 0.5):
            raise ConfigError("aggregator.trim_fraction", "must be in [0, 0.5)", value=trim_fraction)
        self.trim, self.trim_fraction = trim, trim_fraction

    def trim_at(self, n: int) -> int:
        """Values dropped at each end with ``n`` contributions."""
        return agg.trim_count(n, trim=self.trim, trim_fraction=self.trim_fraction)

    def _reduce(self, tensors, weights):
        return agg.trimmed_mean(tensors, trim=self.trim, trim_fraction=self.trim_fraction)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "trim": self.trim, "trim_fraction": self.trim_fraction}


class Krum(Strategy):
    """(Multi-)Krum: keep the update(s) closest to their neighbours, tolerating ``num_byzantine`` attackers."""

    name = "krum"

    def __init__(self, *, num_byzantine: int = 1, num_selected: int = 1, modality_aware: bool = True,
                 task_aware: bool = True, lora: str | None = None):
        super().__init__(modality_aware=modality_aware, task_aware=task_aware, lora=lora)
        if isinstance(num_byzantine, bool) or not isinstance(num_byzantine, int) or num_byzantine < 0:
            raise ConfigError("aggregator.num_byzantine", "must be an integer >= 0", value=num_byzantine)
        if isinstance(num_selected, bool) or not isinstance(num_selected, int) or num_selected < 1:
            raise ConfigError("aggregator.num_selected", "must be an integer >= 1", value=num_selected)
        self.num_byzantine, self.num_selected = num_byzantine, num_selected

    def _reduce_all(self, tensors, weights):
        res = super()._reduce_all(tensors, weights)
        res.diagnostics["krum_guarantee_holds"] = float(len(tensors) > 2 * self.num_byzantine + 2)
        return res

    def _reduce(self, tensors, weights):
        return agg.krum(tensors, num_byzantine=self.num_byzantine, num_selected=self.num_selected)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "num_byzantine": self.num_byzantine, "num_selected": self.num_selected}


class DifferentialPrivacy(Strategy):
    """Client-level DP around any strategy: clip every device's update (its common-space delta against the state
    it last received) to ``clip_norm`` *on the device, before any mixing*, then add Gaussian noise of standard
    deviation ``noise_multiplier * clip_norm``:

    * ``central`` (DP-FedAvg, McMahan et al. 2018): the server adds the noise once to the *sum* of the clipped
      updates and divides by the expected number of contributors (a fixed denominator); needs an averaging
      strategy (its sum has sensitivity ``clip_norm`` under adding or removing one device);
    * ``local``: every device adds the noise to its own clipped update before it leaves; whatever mixes the
      releases afterwards (any strategy, gossip, cluster consensus) is post-processing.

    The wrapped strategy's space, filtering and reduction are used unchanged.
    """

    name = "dp"

    def __init__(self, inner: Strategy, *, clip_norm: float, noise_multiplier: float, mode: str = "central"):
        self.inner = inner
        self.modality_aware, self.task_aware, self.lora = inner.modality_aware, inner.task_aware, inner.lora
        if mode not in DP_MODES:
            raise ConfigError("dp.mode", "unknown DP mode", value=mode, allowed=list(DP_MODES))
        if mode == "central" and inner.sensitivity(clip_norm) is None:
            raise ConfigError("dp.mode", f"central DP adds noise to a sum, which {inner.name!r} does not compute; "
                              "use an averaging aggregator or dp.mode 'local'", value=mode,
                              allowed=["local"] + [f"central with {n}" for n in averaging_strategy_names()])
        if not (math.isfinite(clip_norm) and clip_norm > 0):
            raise ConfigError("dp.clip_norm", "must be a positive number", value=clip_norm)
        if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
            raise ConfigError("dp.noise_multiplier", "must be a number >= 0", value=noise_multiplier)
        self.clip_norm, self.noise_multiplier, self.mode = float(clip_norm), float(noise_multiplier), mode
        self.averaging = inner.averaging
        self.needs_all_updates = inner.needs_all_updates if mode == "local" else False  # type: ignore[misc]

    # the common space is the inner strategy's
    def encode(self, tensors, lora_scale=1.0):
        return self.inner.encode(tensors, lora_scale)

    def decode(self, common, template, lora_scale=1.0):
        return self.inner.decode(common, template, lora_scale)

    def align(self, states):
        return self.inner.align(states)

    def filtered(self, updates):
        return self.inner.filtered(updates)

    def holds(self, key, modalities, tasks):
        return self.inner.holds(key, modalities, tasks)

    @property
    def noise_std(self) -> float:
        return self.noise_multiplier * self.clip_norm

    def device_release(self, delta: Mapping[str, torch.Tensor],
                       generator: torch.Generator | None = None) -> tuple[dict[str, torch.Tensor], float]:
        """What a device lets out: its delta clipped to ``clip_norm`` (and, in ``local`` mode, noised with its own
        ``generator``). Returns (release, the delta's norm before clipping)."""
        from .privacy import clip_update

        clipped, norm = clip_update(delta, self.clip_norm)
        if self.mode == "local":
            if generator is None:
                raise ConfigError("dp.mode", "local DP needs the device's noise generator", value=self.mode)
            clipped = {k: v + torch.randn(v.shape, generator=generator, dtype=torch.float64) * self.noise_std
                       for k, v in clipped.items()}
        return clipped, norm

    def accumulator(self, context=None):
        if self.mode == "local":
            return self.inner.accumulator(context)
        ctx = context or AggregationContext()
        if ctx.generator is None:
            raise ConfigError("dp.mode", "central DP needs the server's noise generator", value=self.mode)
        return _NoisySum(self, ctx)

    def _rank_dim(self, key):
        return self.inner._rank_dim(key)

    def config(self) -> dict[str, Any]:
        return {"inner": self.inner.name, **self.inner.config(), "clip_norm": self.clip_norm,
                "noise_multiplier": self.noise_multiplier, "mode": self.mode}


# -- a round's aggregation in progress -----------------------------------------------------------------------
class Accumulator:
    """A round's aggregation in progress: ``add`` each contribution as it arrives, then ``result`` once.

    ``held_updates`` is how many contributions it keeps in memory (0 for running sums): the server's memory of a
    round grows with it."""

    def __init__(self, strategy: Strategy, context: AggregationContext | None):
        self.strategy, self.context = strategy, context
        self.count = 0

    @property
    def held_updates(self) -> int:
        return 0

    def add(self, update: ClientUpdate) -> None:
        raise TypeError(f"{type(self).__name__} must implement add")

    def result(self) -> AggregateResult:
        raise TypeError(f"{type(self).__name__} must implement result")

    def _filtered(self, update: ClientUpdate) -> dict[str, torch.Tensor]:
        self.count += 1
        return self.strategy.filtered([update])[0]  # the partial filter acts on each update alone


class _Buffered(Accumulator):
    """Keeps every filtered contribution; reduces them all at the end (robust aggregators)."""

    def __init__(self, strategy, context):
        super().__init__(strategy, context)
        self._tensors: list[dict[str, torch.Tensor]] = []
        self._weights: list[float] = []

    @property
    def held_updates(self) -> int:
        return len(self._tensors)

    def add(self, update):
        self._tensors.append(self._filtered(update))
        self._weights.append(float(update.num_samples))

    def result(self):
        return self.strategy._reduce_all(self._tensors, self._weights)


class _RunningMean(Accumulator):
    """Folds each contribution into running weighted sums (:func:`federation.aggregate.fold_weighted`); the
    result is their per-key weighted mean."""

    def __init__(self, strategy, context):
        super().__init__(strategy, context)
        self.sums = agg.WeightedSums()

    def add(self, update):
        tensors = self._filtered(update)
        if tensors:  # a contribution the filter emptied counts for nothing (as in the batch reduction)
            self.sums = agg.fold_weighted(self.sums, tensors, float(update.num_samples),
                                          rank_dim=self.strategy._rank_dim)

    def result(self):
        return AggregateResult(agg.weighted_means(self.sums) if self.sums.count else {})


class _NoisySum(_RunningMean):
    """Central DP: the running sum of the clipped contributions (each weighted by the number of devices it
    averages), Gaussian noise added once at the end, divided by the expected counts (DP-FedAvg)."""

    def add(self, update):
        tensors = self._filtered(update)
        # unlike the mean, an emptied contribution still folds (nothing), as dp_average's sum of empty dicts does
        self.sums = agg.fold_weighted(self.sums, tensors, float(update.num_samples),
                                      rank_dim=self.strategy._rank_dim)

    def result(self):
        from .privacy import dp_average

        dp = self.strategy
        assert isinstance(dp, DifferentialPrivacy) and self.context is not None and self.context.generator is not None
        noisy = dp_average([self.sums.sums], clip_norm=dp.clip_norm, noise_multiplier=dp.noise_multiplier,
                           expected_counts=self.context.expected_counts, generator=self.context.generator)
        return AggregateResult(noisy, {"dp_noise_std": dp.noise_std})


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


def averaging_strategy_names() -> tuple[str, ...]:
    """The registered strategies whose aggregate is a weighted mean (gossip and central DP can serve them)."""
    return tuple(n for n, c in _STRATEGIES.items() if c.averaging)


def strategy_class(name: str) -> type[Strategy]:
    try:
        return _STRATEGIES[name]
    except KeyError:
        raise UnknownNameError("aggregator", name, tuple(_STRATEGIES)) from None


def make_strategy(name: str, **options: Any) -> Strategy:
    """Create a strategy by name; an unknown name lists the known ones, an unknown option the allowed ones."""
    cls = strategy_class(name)
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    bad = [k for k in options if k not in allowed]
    if bad:
        raise ConfigError(f"aggregator.{bad[0]}", f"not an option of {name!r}", allowed=allowed)
    return cls(**options)
