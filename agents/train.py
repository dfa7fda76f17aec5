"""Training and evaluation loops shared by pretraining and the device agents, and recorded-data loading.

The loss is the mean over tasks of cross-entropy on the samples that carry a label for the task (label -1 =
none) and at least one modality token; a mixture-of-experts model adds its load-balancing term. Compute is
metered with a stated model (no hardware counters): a forward pass's FLOPs are counted once per input signature
with :class:`torch.utils.flop_counter.FlopCounterMode`, and a training step costs 3x the forward (forward +
backward for activations and weights, the usual rule of thumb; parameter-efficient methods skip most weight
gradients, so this is an upper bound).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .batching import items_to_batch
from .config import ModelConfig
from .errors import AgentError, EmptyFrameError
from .model import M3TModel
from .reports import EvalReport, balanced_accuracy

__all__ = ["TrainStats", "class_weights", "multitask_loss", "train_steps", "evaluate_items", "label_baselines",
           "load_items", "forward_flops", "TRAIN_FLOPS_FACTOR", "BASELINES"]

#: training FLOPs per sample = TRAIN_FLOPS_FACTOR x forward FLOPs (stated model, see module docstring)
TRAIN_FLOPS_FACTOR = 3.0


@dataclass
class TrainStats:
    steps: int
    num_samples: int
    loss: float
    wall_time_s: float
    flops: float


def class_weights(items: Sequence[Mapping[str, Any]], tasks: Sequence[str]) -> dict[str, torch.Tensor]:
    """Per task, inverse-square-root class-frequency weights (mean 1 over the labelled samples).

    XR labels are heavily imbalanced (no command is spoken most of the time, users are mostly idle); unweighted
    cross-entropy then settles on the majority class. The square root keeps rare classes from dominating.
    """
    from bridge.tasks import TASKS

    out: dict[str, torch.Tensor] = {}
    for t in tasks:
        counts = np.zeros(TASKS[t].num_classes)
        for it in items:
            y = int(it["labels"][t]) if t in it.get("labels", {}) else -1
            if y >= 0:
                counts[y] += 1
        if counts.sum() == 0:
            continue
        w = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1)), 0.0)
        w *= counts.sum() / float((w * counts).sum())  # labelled samples keep an average weight of 1
        out[t] = torch.tensor(w, dtype=torch.float32)
    return out


def multitask_loss(logits: Mapping[str, torch.Tensor], labels: Mapping[str, torch.Tensor],
                   has_input: torch.Tensor, weights: Mapping[str, torch.Tensor] | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss over tasks with labelled samples, per-sample loss summed over tasks [B]).

    ``weights`` (task -> [classes]) rescales each sample's loss by its class weight (see :func:`class_weights`);
    the per-sample losses returned for privacy audits are always unweighted."""
    b = has_input.shape[0]
    per_sample = torch.zeros(b)
    terms = []
    for t, lg in logits.items():
        y = labels.get(t)
        if y is None:
            continue
        y = torch.where(has_input, y, torch.full_like(y, -1))
        ok = y >= 0
        if not ok.any():
            continue
        ce = F.cross_entropy(lg, y.clamp(min=0), reduction="none") * ok
        per_sample = per_sample + ce.detach()
        if weights is not None and t in weights:
            w = weights[t][y.clamp(min=0)] * ok
            terms.append((ce * w).sum() / w.sum().clamp(min=1e-6))
        else:
            terms.append(ce.sum() / ok.sum())
    loss = torch.stack(terms).mean() if terms else torch.zeros((), requires_grad=True)
    return loss, per_sample


_FLOP_CACHE: dict[tuple[Any, ...], float] = {}


def _structure_key(model: M3TModel) -> str:
    """What a forward pass's FLOPs depend on besides the inputs: the config and every parameter's name and shape.

    Two models of the same structure share the cached count (an ``id()`` key could be reused by a later model
    of another structure once the first is garbage-collected)."""
    key = getattr(model, "_xrfed_structure_key", None)
    if key is None:
        desc = model.cfg.to_json() + "".join(f"{n}{tuple(p.shape)}" for n, p in model.named_parameters())
        key = hashlib.sha256(desc.encode()).hexdigest()
        object.__setattr__(model, "_xrfed_structure_key", key)
    return key


def forward_flops(model: M3TModel, batch: Mapping[str, Any], tasks: Sequence[str]) -> float:
    """FLOPs of one forward pass per sample for this batch's modality signature (cached)."""
    from torch.utils.flop_counter import FlopCounterMode

    present = batch.get("present", {})
    sig = (_structure_key(model),
           tuple(sorted(m for m, v in present.items() if bool(torch.as_tensor(v).any()) and m in batch)),
           tuple(tasks))
    if sig not in _FLOP_CACHE:
        b = int(next(iter(present.values())).shape[0])
        was = model.training
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(batch, tasks)
        model.train(was)
        _FLOP_CACHE[sig] = float(fc.get_total_flops()) / max(1, b)
    return _FLOP_CACHE[sig]


def train_steps(model: M3TModel, next_batch: Callable[[], dict[str, Any]], steps: int, tasks: Sequence[str],
                optimizer: torch.optim.Optimizer, *, moe_aux_weight: float = 0.01,
                weights: Mapping[str, torch.Tensor] | None = None,
                penalty: Callable[[], torch.Tensor] | None = None) -> TrainStats:
    """``steps`` optimiser steps on batches from ``next_batch()``; returns loss, samples, wall time and FLOPs.

    ``penalty()`` (e.g. EWC's) is added to every step's loss; the reported loss is the task loss alone."""
    model.train()
    t0 = time.perf_counter()
    losses, n, flops = [], 0, 0.0
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise AgentError("nothing to train: every parameter is frozen")
    for _ in range(steps):
        batch = next_batch()
        logits = model(batch, tasks)
        loss, _ = multitask_loss(logits, batch["labels"], model.sample_has_input(), weights)
        total = loss
        if model.cfg.num_experts:
            total = total + moe_aux_weight * model.moe_aux_loss()
        if penalty is not None:
            total = total + penalty()
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        bsz = int(model.sample_has_input().shape[0])
        n += bsz
        flops += TRAIN_FLOPS_FACTOR * forward_flops(model, batch, tasks) * bsz
    model.eval()
    return TrainStats(steps, n, float(np.mean(losses)) if losses else float("nan"), time.perf_counter() - t0, flops)


@torch.no_grad()
def evaluate_items(model: M3TModel, items: Sequence[Mapping[str, Any]], tasks: Sequence[str], *,
                   batch_size: int = 64, keep_predictions: bool = False) -> EvalReport:
    """Accuracy and balanced accuracy per task on labelled samples with input, mean loss, per-sample loss.

    ``latency_ms`` is the host's mean time per sample of the whole evaluation (batched). ``keep_predictions``
    fills ``EvalReport.predictions`` (task -> [(item index, label, predicted class)]) for resampling."""
    model.eval()
    t0 = time.perf_counter()
    correct = dict.fromkeys(tasks, 0)
    total = dict.fromkeys(tasks, 0)
    hits: dict[str, dict[int, list[int]]] = {t: {} for t in tasks}  # task -> class -> [correct, total]
    per_sample: list[float] = []
    preds: dict[str, list[tuple[int, int, int]]] = {t: [] for t in tasks}
    for i in range(0, len(items), batch_size):
        batch = items_to_batch(items[i:i + batch_size], tasks)
        try:
            logits = model(batch, tasks)
        except EmptyFrameError:
            continue
        has = model.sample_has_input()
        _, ps = multitask_loss(logits, batch["labels"], has)
        per_sample.extend(float(v) for v, h in zip(ps, has, strict=True) if h)
        for t in tasks:
            y = batch["labels"][t]
            ok = (y >= 0) & has
            right = (logits[t].argmax(dim=-1) == y) & ok
            correct[t] += int(right.sum())
            total[t] += int(ok.sum())
            for c, r in zip(y[ok].tolist(), right[ok].tolist(), strict=True):
                h = hits[t].setdefault(int(c), [0, 0])
                h[0] += int(r)
                h[1] += 1
            if keep_predictions:
                guess = logits[t].argmax(dim=-1)
                preds[t].extend((i + j, int(y[j]), int(guess[j])) for j in torch.nonzero(ok).reshape(-1).tolist())
    n = len(per_sample)
    return EvalReport(
        accuracy={t: correct[t] / total[t] for t in tasks if total[t]},
        loss=float(np.mean(per_sample)) if per_sample else float("nan"),
        latency_ms=(time.perf_counter() - t0) * 1000 / n if n else float("nan"),
        num_samples=n,
        balanced_accuracy={t: balanced_accuracy({c: (v[0], v[1]) for c, v in hits[t].items()})
                           for t in tasks if hits[t]},
        per_sample_loss=per_sample, counts={t: total[t] for t in tasks},
        predictions=preds if keep_predictions else {})


#: label-only baselines of :func:`label_baselines`
BASELINES: tuple[str, ...] = ("majority", "persistence")


def label_baselines(train_items: Sequence[Mapping[str, Any]], test_items: Sequence[Mapping[str, Any]],
                    tasks: Sequence[str]) -> dict[str, EvalReport]:
    """What a device scores on ``test_items`` without looking at any input, knowing only its training labels.

    * ``majority``: always the most frequent training label of the task (ties: the lowest class index);
    * ``persistence``: always the last training label of the task (the label "stays as it was").

    Both are computed on the same labelled test samples as the models (label >= 0); a task without any
    training label gets no entry.
    """
    out: dict[str, EvalReport] = {}
    for kind in BASELINES:
        acc: dict[str, float] = {}
        bal: dict[str, float] = {}
        counts: dict[str, int] = {}
        for t in tasks:
            ys = [int(it["labels"][t]) for it in train_items if t in it["labels"] and int(it["labels"][t]) >= 0]
            test = [int(it["labels"][t]) for it in test_items if t in it["labels"] and int(it["labels"][t]) >= 0]
            if not ys or not test:
                continue
            if kind == "majority":
                freq: dict[int, int] = {}
                for y in ys:
                    freq[y] = freq.get(y, 0) + 1
                guess = min(freq, key=lambda c: (-freq[c], c))
            else:
                guess = ys[-1]
            hits: dict[int, tuple[int, int]] = {}
            for y in test:
                c, n = hits.get(y, (0, 0))
                hits[y] = (c + int(y == guess), n + 1)
            acc[t] = sum(c for c, _ in hits.values()) / len(test)
            bal[t] = balanced_accuracy(hits)
            counts[t] = len(test)
        out[kind] = EvalReport(accuracy=acc, loss=float("nan"), latency_ms=0.0, num_samples=len(test_items),
                               balanced_accuracy=bal, counts=counts)
    return out


def load_items(root: str | os.PathLike[str], cfg: ModelConfig, *, clients: Sequence[str] | None = None,
               split: str = "all", modalities: Sequence[str] | None = None,
               tasks: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Every step of a recorded dataset as model-ready items (images at the model size, 2 audio channels).

    Each item also carries ``audio_hz`` and ``camera_fov_y_deg`` from its file, so the model resamples audio
    and places the fovea as it would live.
    """
    import h5py

    from bridge.dataset import XRDataset

    mods = [m for m in (modalities or cfg.modalities) if m in cfg.modalities]
    ds = XRDataset(root, clients=clients, split=split, modalities=mods, tasks=tasks, window=cfg.window,
                   image_size=(cfg.image_size_px, cfg.image_size_px), audio_channels=2, audio_steps=cfg.audio_window)
    facts: dict[tuple[str, int], tuple[int, np.ndarray]] = {}
    for f in ds._files:  # per-file rate and field of view (small arrays, read once)
        with h5py.File(f.path, "r") as h5:
            fov = np.asarray(h5["camera_fov_y_deg"][:], dtype=np.float64) if "camera_fov_y_deg" in h5 else None
            hz = int(h5.attrs.get("audio_hz", cfg.audio_hz))
        facts[(f.client_id, f.episode)] = (hz, fov if fov is not None else np.full(len(f.steps), np.nan))
    items = []
    try:
        for i in range(len(ds)):
            it = ds[i]
            hz, fov = facts[(it["client_id"], it["episode"])]
            row = int(ds._index[i][1])
            it["audio_hz"] = hz
            it["camera_fov_y_deg"] = float(fov[row]) if row < len(fov) else float("nan")
            items.append(it)
    finally:
        ds.close()
    if not items:
        raise AgentError(f"{Path(root)}: no steps for clients {clients} in split {split!r}")
    return items
