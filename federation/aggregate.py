"""Aggregation maths: pure functions over ``dict[str, torch.Tensor]`` updates.

Every function takes the updates of the devices that took part (a list of parameter-name -> tensor dicts) and
returns new tensors; nothing here knows about rounds, links or devices. Each is checked against a hand-computed
reference in ``tests/federation/test_aggregate.py``.

Keys a device does not hold are simply absent from its dict (a glasses device without a microphone sends no
audio-encoder adapter), so every reducer works *per key over the devices that hold it*, renormalising weights
among those holders. That one rule is what makes modality-aware and task-aware aggregation a filter applied
before an ordinary reducer (:func:`partial_filter`).

LoRA (notation of ``reference/federated-learning.md`` section 3): device k holds ``A_k`` [r_k, n] and ``B_k``
[d, r_k] with scale ``s_k = alpha / r_k``. FedIT averages A and B separately (inexact); the exact aggregate is
``dW* = sum_k p_k s_k B_k A_k``, which :func:`exact_lora_deltas` forms and :func:`refactorize` truncates back to
each device's own rank by SVD (FlexLoRA), so devices with less memory keep a smaller rank.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from .errors import AggregationError

__all__ = [
    "Update",
    "Reducer",
    "product_rank",
    "normalise_weights",
    "weighted_average",
    "fedavg",
    "WeightedSums",
    "fold_weighted",
    "weighted_means",
    "lora_rank_dim",
    "coordinate_median",
    "trimmed_mean",
    "krum_scores",
    "krum_select",
    "krum",
    "key_modality",
    "key_task",
    "is_personal",
    "partial_filter",
    "lora_pairs",
    "refactorize",
    "exact_lora_deltas",
    "naive_lora_error",
    "trim_count",
    "product_key",
    "is_product_key",
    "to_products",
    "from_products",
    "pad_lora_factors",
    "truncate_lora_factors",
    "zero_pad_to",
]

Update = Mapping[str, torch.Tensor]
Reducer = Callable[[Sequence[Update], Sequence[float]], dict[str, torch.Tensor]]

_ENCODER_RE = re.compile(r"(?:^|\.)encoders\.([^.]+)\.")
_HEAD_RE = re.compile(r"(?:^|\.)heads\.([^.]+)\.")


# -- helpers ----------------------------------------------------------------------------------------------
def normalise_weights(weights: Sequence[float]) -> torch.Tensor:
    """Weights as a float64 vector summing to 1; they must be finite, non-negative and not all zero."""
    w = torch.as_tensor(list(weights), dtype=torch.float64)
    if w.ndim != 1 or w.numel() == 0:
        raise AggregationError("need at least one weight")
    if not torch.all(torch.isfinite(w)) or torch.any(w < 0):
        raise AggregationError(f"weights must be finite and >= 0, got {w.tolist()}")
    total = float(w.sum())
    if total <= 0:
        raise AggregationError(f"weights sum to {total}; at least one must be positive")
    return w / total


def _holders(updates: Sequence[Update]) -> dict[str, list[int]]:
    """Key -> indices of the updates that hold it, keys in first-seen order (deterministic)."""
    if not updates:
        raise AggregationError("no updates to aggregate")
    out: dict[str, list[int]] = {}
    for i, u in enumerate(updates):
        for k in u:
            out.setdefault(k, []).append(i)
    return out


def _stack(key: str, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1:
        raise AggregationError(
            f"tensor {key!r} has different shapes across devices: {sorted(shapes)}"
            " (heterogeneous LoRA ranks need the exact_lora strategy)")
    return torch.stack([t.detach().to(torch.float64) for t in tensors])


def weighted_average(tensors: Sequence[torch.Tensor], weights: Sequence[float], *, key: str = "tensor") -> torch.Tensor:
    """sum_k p_k x_k with p = weights / sum(weights), computed in float64, returned in the first tensor's dtype."""
    if len(tensors) != len(weights):
        raise AggregationError(f"{len(tensors)} tensors but {len(weights)} weights")
    p = normalise_weights(weights)
    x = _stack(key, tensors)
    return torch.tensordot(p, x, dims=1).to(tensors[0].dtype)


# -- reducers (signature: updates, weights -> dict) --------------------------------------------------------
def fedavg(updates: Sequence[Update], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """FedAvg: per key, the weight-normalised average over the devices that hold the key.

    With LoRA factors this is the FedIT baseline (A and B averaged separately).
    """
    if len(updates) != len(weights):
        raise AggregationError(f"{len(updates)} updates but {len(weights)} weights")
    out: dict[str, torch.Tensor] = {}
    for key, idx in _holders(updates).items():
        out[key] = weighted_average([updates[i][key] for i in idx], [weights[i] for i in idx], key=key)
    return out


# -- streaming (running sums: one model's worth of memory, whatever the number of devices) -----------------
@dataclass(frozen=True)
class WeightedSums:
    """Running per-key weighted sums of the updates folded so far: ``sums[k] = sum_i w_i x_i[k]`` (float64) and
    ``weights[k] = sum_i w_i`` over the updates holding ``k``, keys in first-seen order; ``count`` updates in all.

    It holds one model's worth of tensors however many updates went in: what lets a server average thousands of
    devices' updates as they arrive (:func:`fold_weighted`, then :func:`weighted_means`)."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    count: int = 0


def lora_rank_dim(key: str) -> int | None:
    """The rank dimension of a LoRA factor key (0 for ``lora_A`` [r, n], 1 for ``lora_B`` [d, r]), else None:
    the one dimension along which HetLoRA zero-pads factors of different ranks."""
    if "lora_A" in key:
        return 0
    if "lora_B" in key:
        return 1
    return None


def _grow(key: str, t: torch.Tensor, shape: tuple[int, ...], dim: int | None) -> torch.Tensor:
    """``t`` zero-padded to ``shape`` along ``dim`` only (the rank dimension), or the shape error of :func:`_stack`."""
    if tuple(t.shape) == shape:
        return t
    if dim is None or t.ndim != len(shape) or not 0 <= dim < t.ndim or any(
            a != b for i, (a, b) in enumerate(zip(t.shape, shape, strict=True)) if i != dim):
        raise AggregationError(
            f"tensor {key!r} has different shapes across devices: {sorted({tuple(t.shape), shape})}"
            " (heterogeneous LoRA ranks need the exact_lora strategy)")
    return zero_pad_to(t, shape)


def fold_weighted(acc: WeightedSums, update: Update, weight: float, *,
                  rank_dim: Callable[[str], int | None] | None = None) -> WeightedSums:
    """``acc`` with ``weight * update`` added (a new :class:`WeightedSums`; neither argument is modified).

    Per key: ``sums[k] = (sums[k] or zeros) + x[k] * weight`` in float64 -- the order a sequential sum over the
    updates in fold order takes. With ``rank_dim`` (HetLoRA's factors space) a key's tensors may differ along the
    dimension it names and the smaller one is zero-padded to the larger (:func:`pad_lora_factors`, done as the
    updates arrive); any other shape difference raises :class:`AggregationError` naming the key.
    """
    w = float(weight)
    if not (math.isfinite(w) and w >= 0):
        raise AggregationError(f"weights must be finite and >= 0, got {weight!r}")
    sums, weights = dict(acc.sums), dict(acc.weights)
    for key, t in update.items():
        x = t.detach().to(torch.float64)
        s = sums.get(key)
        if s is None:
            s = torch.zeros(x.shape, dtype=torch.float64)
        elif tuple(s.shape) != tuple(x.shape):
            dim = rank_dim(key) if rank_dim is not None and s.ndim == x.ndim else None
            shape = tuple(max(a, b) for a, b in zip(s.shape, x.shape, strict=False)) if dim is not None \
                else tuple(s.shape)
            s, x = _grow(key, s, shape, dim), _grow(key, x, shape, dim)
        sums[key] = s + x * w
        weights[key] = weights.get(key, 0.0) + w
    return WeightedSums(sums, weights, acc.count + 1)


def weighted_means(acc: WeightedSums) -> dict[str, torch.Tensor]:
    """Per key, ``sums[k] / weights[k]``: FedAvg over the updates folded into ``acc`` (float64).

    Equals :func:`fedavg` of the same updates up to float rounding (a sequential sum divided once, where
    :func:`fedavg` normalises the weights first and contracts them with the stacked updates)."""
    if acc.count == 0:
        raise AggregationError("no updates to aggregate")
    out: dict[str, torch.Tensor] = {}
    for key, s in acc.sums.items():
        total = acc.weights[key]
        if total <= 0:
            raise AggregationError(f"weights of {key!r} sum to {total}; at least one must be positive")
        out[key] = s / total
    return out


def coordinate_median(updates: Sequence[Update], weights: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
    """Coordinate-wise median per key (Yin et al. 2018); an even count averages the two middle values.

    Weights are ignored on purpose: a robust statistic must not let one device buy influence by claiming samples.
    """
    out: dict[str, torch.Tensor] = {}
    for key, idx in _holders(updates).items():
        x = _stack(key, [updates[i][key] for i in idx]).sort(dim=0).values
        n = x.shape[0]
        med = x[n // 2] if n % 2 else 0.5 * (x[n // 2 - 1] + x[n // 2])
        out[key] = med.to(updates[idx[0]][key].dtype)
    return out


def trim_count(n: int, *, trim: int | None = None, trim_fraction: float | None = None) -> int:
    """Values dropped at *each* end of ``n`` by the trimmed mean: ``trim``, or ``floor(trim_fraction * n)``,
    capped so that at least one value is left (``(n - 1) // 2``). Neither given = 1: a default that acts at
    every device count of 3 or more (a fraction of 0.1 trims nothing below 10 devices)."""
    if trim is not None and trim_fraction is not None:
        raise AggregationError("give trim or trim_fraction, not both")
    if trim_fraction is not None:
        if not 0.0 <= trim_fraction < 0.5:
            raise AggregationError(f"trim_fraction must be in [0, 0.5), got {trim_fraction}")
        k = int(math.floor(trim_fraction * n))
    else:
        k = 1 if trim is None else int(trim)
        if k < 0:
            raise AggregationError(f"trim must be >= 0, got {trim}")
    return max(0, min(k, (n - 1) // 2))


def trimmed_mean(updates: Sequence[Update], weights: Sequence[float] | None = None, *, trim: int | None = None,
                 trim_fraction: float | None = None) -> dict[str, torch.Tensor]:
    """Coordinate-wise trimmed mean: per coordinate, drop the :func:`trim_count` largest and smallest values.

    The count is taken per key over the devices holding it, so a key held by two devices is averaged plainly.
    ``trim`` should be at least the number of Byzantine devices expected among the holders (Yin et al. 2018).
    """
    out: dict[str, torch.Tensor] = {}
    for key, idx in _holders(updates).items():
        x = _stack(key, [updates[i][key] for i in idx]).sort(dim=0).values
        n = x.shape[0]
        k = trim_count(n, trim=trim, trim_fraction=trim_fraction)
        out[key] = x[k:n - k].mean(dim=0).to(updates[idx[0]][key].dtype)
    return out


def krum_scores(vectors: torch.Tensor, num_byzantine: int) -> torch.Tensor:
    """Krum score of each row of ``vectors`` [K, D]: the sum of squared distances to its K - f - 2 nearest others.

    Blanchard et al. (2017) need K > 2f + 2 for the guarantee; with fewer devices the neighbour count is clamped
    to 1 so the rule still picks the most central update (the caller reports that the guarantee is void).
    """
    k = vectors.shape[0]
    if k == 0:
        raise AggregationError("no updates to aggregate")
    if num_byzantine < 0:
        raise AggregationError(f"num_byzantine must be >= 0, got {num_byzantine}")
    if k == 1:
        return torch.zeros(1, dtype=torch.float64)
    v = vectors.to(torch.float64)
    d2 = torch.cdist(v, v).pow(2)  # [K, K]
    m = max(1, min(k - 1, k - num_byzantine - 2))
    d2.fill_diagonal_(float("inf"))
    return d2.sort(dim=1).values[:, :m].sum(dim=1)


def krum_select(vectors: torch.Tensor, num_byzantine: int, num_selected: int = 1) -> list[int]:
    """Indices of the ``num_selected`` lowest Krum scores (Multi-Krum when > 1), ties broken by index."""
    scores = krum_scores(vectors, num_byzantine)
    order = sorted(range(len(scores)), key=lambda i: (float(scores[i]), i))
    return order[:max(1, min(num_selected, len(order)))]


def krum(updates: Sequence[Update], weights: Sequence[float] | None = None, *, num_byzantine: int = 0,
         num_selected: int = 1) -> dict[str, torch.Tensor]:
    """Krum / Multi-Krum over whole updates.

    Devices may hold different key sets (partial aggregation), so keys are grouped by their holder set; within
    each group the flattened concatenation of those keys is one vector per holder, Krum picks among the holders,
    and the group's result is the (unweighted) mean of the selected holders' tensors.
    """
    groups: dict[tuple[int, ...], list[str]] = {}
    for key, idx in _holders(updates).items():
        groups.setdefault(tuple(idx), []).append(key)
    out: dict[str, torch.Tensor] = {}
    for group, keys in groups.items():
        for key in keys:
            _stack(key, [updates[i][key] for i in group])  # shape check with a clear message
        vecs = torch.stack([torch.cat([updates[i][k].detach().reshape(-1).to(torch.float64) for k in keys])
                            for i in group])
        chosen = [group[j] for j in krum_select(vecs, num_byzantine, num_selected)]
        for key in keys:
            out[key] = _stack(key, [updates[i][key] for i in chosen]).mean(dim=0).to(updates[group[0]][key].dtype)
    return out


# -- modality-/task-aware partial aggregation ----------------------------------------------------------------
def key_modality(key: str) -> str | None:
    """The modality of an ``encoders.<modality>.`` parameter (anywhere in a dotted name), else None."""
    m = _ENCODER_RE.search(key)
    return m.group(1) if m else None


def key_task(key: str) -> str | None:
    """The task of a ``heads.<task>.`` parameter (anywhere in a dotted name), else None."""
    m = _HEAD_RE.search(key)
    return m.group(1) if m else None


def is_personal(key: str) -> bool:
    """True for a device's personal tensors, which never leave it (the rule is the agents package's, written
    once in :func:`agents.personalize.is_personal_key`)."""
    from agents.personalize import is_personal_key

    return is_personal_key(key)


def partial_filter(updates: Sequence[Update], modalities: Sequence[Sequence[str]],
                   tasks: Sequence[Sequence[str]], *, modality_aware: bool = True,
                   task_aware: bool = True) -> list[dict[str, torch.Tensor]]:
    """Keep, for each device, only the keys it may contribute to.

    With ``modality_aware`` an encoder's parameters are averaged only among devices that have that modality; with
    ``task_aware`` a task head only among devices that run that task; personal adapters are always dropped (they
    should not have been sent at all). Shared backbone keys (neither encoder, head nor personal) pass through.
    Apply any reducer afterwards.
    """
    if not (len(updates) == len(modalities) == len(tasks)):
        raise AggregationError(f"{len(updates)} updates, {len(modalities)} modality sets, {len(tasks)} task sets")
    out: list[dict[str, torch.Tensor]] = []
    for u, mods, tks in zip(updates, modalities, tasks, strict=True):
        mods_s, tks_s = set(mods), set(tks)
        kept: dict[str, torch.Tensor] = {}
        for key, t in u.items():
            if is_personal(key):
                continue
            mod, task = key_modality(key), key_task(key)
            if modality_aware and mod is not None and mod not in mods_s:
                continue
            if task_aware and task is not None and task not in tks_s:
                continue
            kept[key] = t
        out.append(kept)
    return out


# -- LoRA ------------------------------------------------------------------------------------------------------
def lora_pairs(keys: Sequence[str] | Mapping[str, object]) -> list[tuple[str, str]]:
    """(A-key, B-key) pairs of LoRA factors, matched by peft's naming (``...lora_A...`` / ``...lora_B...``)."""
    ks = set(keys)
    pairs = []
    for k in keys:
        if "lora_A" in k:
            head, _, tail = k.rpartition("lora_A")
            b = f"{head}lora_B{tail}"
            if b in ks:
                pairs.append((k, b))
    return pairs


def refactorize(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-``rank`` factors (B [d, rank], A [rank, n]) of ``delta`` [d, n] by truncated SVD.

    The singular values are split evenly (B = U sqrt(S), A = sqrt(S) V^T) so neither factor dominates the next
    round's local training. If ``rank`` exceeds min(d, n) the extra rows/columns are zero so shapes still match
    the device's adapter.
    """
    if delta.ndim != 2:
        raise AggregationError(f"refactorize needs a matrix, got shape {tuple(delta.shape)}")
    if rank < 1:
        raise AggregationError(f"rank must be >= 1, got {rank}")
    d, n = delta.shape
    u, s, vh = torch.linalg.svd(delta.to(torch.float64), full_matrices=False)
    r = min(rank, s.numel())
    root = s[:r].sqrt()
    b = torch.zeros(d, rank, dtype=torch.float64)
    a = torch.zeros(rank, n, dtype=torch.float64)
    b[:, :r] = u[:, :r] * root
    a[:r] = root[:, None] * vh[:r]
    return b, a


def exact_lora_deltas(updates: Sequence[Update], weights: Sequence[float],
                      scales: Sequence[float] | None = None) -> dict[tuple[str, str], torch.Tensor]:
    """Per LoRA pair, the exact average of the products ``sum_k p_k s_k B_k A_k`` over the devices holding it.

    Works for heterogeneous ranks (each product is [d, n] whatever r_k is). ``scales`` are alpha / r_k
    (default 1.0).
    """
    if len(updates) != len(weights):
        raise AggregationError(f"{len(updates)} updates but {len(weights)} weights")
    sc = [1.0] * len(updates) if scales is None else list(scales)
    if len(sc) != len(updates):
        raise AggregationError(f"{len(updates)} updates but {len(sc)} scales")
    all_keys: list[str] = list(_holders(updates))
    out: dict[tuple[str, str], torch.Tensor] = {}
    for a_key, b_key in lora_pairs(all_keys):
        idx = [i for i, u in enumerate(updates) if a_key in u and b_key in u]
        p = normalise_weights([weights[i] for i in idx])
        prods = []
        for i in idx:
            a, b = updates[i][a_key].to(torch.float64), updates[i][b_key].to(torch.float64)
            if a.ndim != 2 or b.ndim != 2 or b.shape[1] != a.shape[0]:
                raise AggregationError(f"LoRA pair {a_key!r}: B {tuple(b.shape)} and A {tuple(a.shape)} do not chain")
            prods.append(sc[i] * (b @ a))
        shapes = {tuple(x.shape) for x in prods}
        if len(shapes) != 1:
            raise AggregationError(f"LoRA pair {a_key!r}: products differ in shape {sorted(shapes)}")
        out[(a_key, b_key)] = torch.tensordot(p, torch.stack(prods), dims=1)
    return out


def naive_lora_error(updates: Sequence[Update], weights: Sequence[float],
                     scales: Sequence[float] | None = None) -> dict[str, float]:
    """How far FedIT's ``s * mean(B) @ mean(A)`` is from the exact ``sum_k p_k s_k B_k A_k``.

    Returns ``abs_fro`` (Frobenius norm of the difference, over all pairs) and ``rel`` (divided by the norm of the
    exact aggregate). Heterogeneous ranks are zero-padded to the largest rank (HetLoRA's convention); the naive
    scale is the weighted mean scale.
    """
    sc = [1.0] * len(updates) if scales is None else list(scales)
    exact = exact_lora_deltas(updates, weights, sc)
    err2 = ref2 = 0.0
    for (a_key, b_key), dw in exact.items():
        idx = [i for i, u in enumerate(updates) if a_key in u and b_key in u]
        p = normalise_weights([weights[i] for i in idx])
        r_max = max(updates[i][a_key].shape[0] for i in idx)
        a_bar = torch.zeros(r_max, updates[idx[0]][a_key].shape[1], dtype=torch.float64)
        b_bar = torch.zeros(updates[idx[0]][b_key].shape[0], r_max, dtype=torch.float64)
        s_bar = 0.0
        for pk, i in zip(p.tolist(), idx, strict=True):
            a, b = updates[i][a_key].to(torch.float64), updates[i][b_key].to(torch.float64)
            a_bar[: a.shape[0]] += pk * a
            b_bar[:, : b.shape[1]] += pk * b
            s_bar += pk * sc[i]
        err2 += float((dw - s_bar * (b_bar @ a_bar)).pow(2).sum())
        ref2 += float(dw.pow(2).sum())
    abs_fro = math.sqrt(err2)
    return {"abs_fro": abs_fro, "rel": abs_fro / math.sqrt(ref2) if ref2 > 0 else 0.0}


# -- the common spaces of heterogeneous-rank LoRA ------------------------------------------------------------
#: a LoRA pair's exact update s * B @ A travels under its A-key with ``lora_A`` replaced by this
PRODUCT_TAG = "lora_BA"


def product_key(a_key: str) -> str:
    """The key of a LoRA pair's product (``...q_proj.lora_A.weight`` -> ``...q_proj.lora_BA.weight``)."""
    head, sep, tail = a_key.rpartition("lora_A")
    if not sep:
        raise AggregationError(f"{a_key!r} is not a LoRA A-factor key")
    return f"{head}{PRODUCT_TAG}{tail}"


def is_product_key(key: str) -> bool:
    return PRODUCT_TAG in key


def product_rank(template: Mapping[str, torch.Tensor], key: str) -> int:
    """The LoRA rank behind product ``key`` in a device's ``template`` (0: not a product, or not held)."""
    if not is_product_key(key):
        return 0
    head, _, tail = key.rpartition(PRODUCT_TAG)
    a_key = f"{head}lora_A{tail}"
    return int(template[a_key].shape[0]) if a_key in template else 0


def to_products(update: Update, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """A device's shared tensors in the rank-free space: every LoRA pair becomes ``scale * B @ A`` [d, n]
    (float64) under :func:`product_key`; other tensors are copied (float64). Exact for any rank."""
    out: dict[str, torch.Tensor] = {}
    paired: set[str] = set()
    for a_key, b_key in lora_pairs(list(update)):
        a, b = update[a_key].detach().to(torch.float64), update[b_key].detach().to(torch.float64)
        if a.ndim != 2 or b.ndim != 2 or b.shape[1] != a.shape[0]:
            raise AggregationError(f"LoRA pair {a_key!r}: B {tuple(b.shape)} and A {tuple(a.shape)} do not chain")
        out[product_key(a_key)] = scale * (b @ a)
        paired.update((a_key, b_key))
    for k, t in update.items():
        if k not in paired:
            out[k] = t.detach().to(torch.float64)
    return out


def from_products(common: Mapping[str, torch.Tensor], template: Mapping[str, torch.Tensor],
                  scale: float = 1.0) -> dict[str, torch.Tensor]:
    """A device's cut of a rank-free state: its keys, shapes and dtypes (read from ``template``).

    A product ``dW`` becomes the device's rank-r factors by truncated SVD of ``dW / scale`` (FlexLoRA's
    re-factorization: the best rank-r approximation, so a low-memory device keeps its small rank). Keys the
    common state does not hold are left out (the device keeps its own values)."""
    out: dict[str, torch.Tensor] = {}
    paired: set[str] = set()
    for a_key, b_key in lora_pairs(list(template)):
        paired.update((a_key, b_key))
        pk = product_key(a_key)
        if pk not in common:
            continue
        b, a = refactorize(common[pk] / scale, template[a_key].shape[0])
        out[a_key], out[b_key] = a.to(template[a_key].dtype), b.to(template[b_key].dtype)
    for k, t in template.items():
        if k not in paired and k in common:
            if tuple(common[k].shape) != tuple(t.shape):
                raise AggregationError(f"{k!r}: aggregate has shape {tuple(common[k].shape)}, the device "
                                       f"holds {tuple(t.shape)}")
            out[k] = common[k].to(t.dtype)
    return out


def pad_lora_factors(updates: Sequence[Update]) -> list[dict[str, torch.Tensor]]:
    """HetLoRA's convention for averaging factors of different ranks: per LoRA pair, zero-pad every holder's
    A [r, n] (rows) and B [d, r] (columns) to the largest rank among the holders. Other keys pass through."""
    out = [dict(u) for u in updates]
    keys: list[str] = list(_holders(updates)) if updates else []
    for a_key, b_key in lora_pairs(keys):
        idx = [i for i, u in enumerate(updates) if a_key in u and b_key in u]
        r_max = max(int(updates[i][a_key].shape[0]) for i in idx)
        for i in idx:
            a, b = updates[i][a_key], updates[i][b_key]
            r = int(a.shape[0])
            if r < r_max:
                out[i][a_key] = torch.cat([a, a.new_zeros(r_max - r, a.shape[1])], dim=0)
                out[i][b_key] = torch.cat([b, b.new_zeros(b.shape[0], r_max - r)], dim=1)
    return out


def zero_pad_to(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``t`` zero-padded at the end of each dimension to ``shape`` (every dimension must be <= the target)."""
    if t.ndim != len(shape) or any(a > b for a, b in zip(t.shape, shape, strict=True)):
        raise AggregationError(f"cannot zero-pad shape {tuple(t.shape)} to {shape}")
    out = t.new_zeros(shape)
    out[tuple(slice(0, n) for n in t.shape)] = t
    return out


def truncate_lora_factors(common: Mapping[str, torch.Tensor],
                          template: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A device's cut of a padded-factor state: its keys, the first r rows of A / columns of B, its dtypes."""
    out: dict[str, torch.Tensor] = {}
    for k, t in template.items():
        if k not in common:
            continue
        v = common[k]
        if "lora_A" in k and v.ndim == 2:
            v = v[: t.shape[0]]
        elif "lora_B" in k and v.ndim == 2:
            v = v[:, : t.shape[1]]
        if tuple(v.shape) != tuple(t.shape):
            raise AggregationError(f"{k!r}: aggregate has shape {tuple(v.shape)}, the device holds {tuple(t.shape)}")
        out[k] = v.to(t.dtype)
    return out
