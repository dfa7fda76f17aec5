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

import torch

from .errors import AggregationError

__all__ = [
    "Update",
    "Reducer",
    "normalise_weights",
    "weighted_average",
    "fedavg",
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
]

Update = Mapping[str, torch.Tensor]
Reducer = Callable[[Sequence[Update], Sequence[float]], dict[str, torch.Tensor]]

_ENCODER_RE = re.compile(r"(?:^|\.)encoders\.([^.]+)\.")
_HEAD_RE = re.compile(r"(?:^|\.)heads\.([^.]+)\.")
_PERSONAL_RE = re.compile(r"(?:^|\.)personal\.")


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


def trimmed_mean(updates: Sequence[Update], weights: Sequence[float] | None = None, *,
                 trim_fraction: float = 0.1) -> dict[str, torch.Tensor]:
    """Coordinate-wise trimmed mean: drop the ``floor(trim_fraction * n)`` largest and smallest values per coordinate.

    ``trim_fraction`` should be at least the expected fraction of Byzantine devices (Yin et al. 2018).
    """
    if not 0.0 <= trim_fraction < 0.5:
        raise AggregationError(f"trim_fraction must be in [0, 0.5), got {trim_fraction}")
    out: dict[str, torch.Tensor] = {}
    for key, idx in _holders(updates).items():
        x = _stack(key, [updates[i][key] for i in idx]).sort(dim=0).values
        n = x.shape[0]
        k = int(math.floor(trim_fraction * n))
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
    """True for ``personal.`` parameters: a device's local adapters, which never leave it."""
    return _PERSONAL_RE.search(key) is not None


def partial_filter(updates: Sequence[Update], modalities: Sequence[Sequence[str]],
                   tasks: Sequence[Sequence[str]]) -> list[dict[str, torch.Tensor]]:
    """Keep, for each device, only the keys it may contribute to.

    An encoder's parameters are averaged only among devices that have that modality, a task head only among
    devices that run that task, and personal adapters are dropped (they should not have been sent at all).
    Shared backbone keys (neither encoder, head nor personal) pass through. Apply any reducer afterwards.
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
            if mod is not None and mod not in mods_s:
                continue
            if task is not None and task not in tks_s:
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
