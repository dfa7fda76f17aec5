"""A synthetic workload for the round benchmark and the engine's tests: tiny LoRA model, Gaussian-class data.

This is *not* a stand-in for the XR agents (``xrfed run`` drives the agents package on recorded scene data); it
exists so the federation machinery -- selection, paradigms, aggregation, accounting, checkpoints -- can be timed
and tested in milliseconds. It has the same parameter layout the M3T model exposes to federation:

* ``encoders.<modality>.lora_A.weight`` [r, in] / ``lora_B.weight`` [hidden, r] over a frozen random projection
  (one per modality the device has),
* ``heads.<task>.weight`` / ``.bias`` (one per task the device runs),
* ``personal.bias`` [hidden]: a personal adapter that never leaves the device.

Each device's data: per task, class means shared by all devices plus a per-device shift (personalisation
matters), drawn per phase with a phase-dependent shift (temporal drift: ``set_phase``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from agents.reports import balanced_accuracy
from bridge.devices import DeviceProfile, get_device

from .messages import EvalReport, TrainReport

__all__ = ["SyntheticClient", "full_model_bytes"]

_IN, _HIDDEN, _CLASSES = 6, 16, 4


class SyntheticClient(nn.Module):
    """A tiny multi-modal multi-task LoRA model with its own synthetic data (see module docstring)."""

    def __init__(self, device_id: str, profile: str | DeviceProfile, *, modalities: Sequence[str] = ("rgb",),
                 tasks: Sequence[str] = ("object_recognition",), rank: int = 2, alpha: float = 4.0,
                 device_shift: float = 0.5, samples: int = 64, gflop_per_step: float = 1.0, lr: float = 0.1,
                 hidden: int = _HIDDEN, in_dim: int = _IN, seed: int = 0):
        super().__init__()
        self.device_id = device_id
        self.profile = profile if isinstance(profile, DeviceProfile) else get_device(profile)
        self.modalities, self.tasks = tuple(modalities), tuple(tasks)
        self.rank, self.lora_scale = rank, alpha / rank
        self.samples, self.gflop_per_step, self.lr, self.hidden = samples, gflop_per_step, lr, hidden
        self.in_dim = in_dim
        g = torch.Generator().manual_seed(1234)  # the frozen base and class means are shared by all devices
        self.base = {m: torch.randn(hidden, in_dim, generator=g) / in_dim**0.5 for m in self.modalities}
        self.means = {t: torch.randn(_CLASSES, in_dim, generator=g) * 1.5 for t in self.tasks}
        gd = torch.Generator().manual_seed(seed)
        self.shift = device_shift * torch.randn(in_dim, generator=gd)
        self.encoders = nn.ModuleDict({m: nn.ParameterDict({
            "lora_A": nn.Parameter(torch.randn(rank, in_dim, generator=gd) * 0.1),
            "lora_B": nn.Parameter(torch.zeros(hidden, rank))}) for m in self.modalities})
        self.heads = nn.ModuleDict({t: nn.Linear(hidden, _CLASSES) for t in self.tasks})
        with torch.no_grad():  # seeded init (nn.Linear would draw from the global RNG)
            for head in self.heads.values():
                assert isinstance(head, nn.Linear)
                head.weight.copy_(torch.randn(head.weight.shape, generator=gd) / hidden**0.5)
                head.bias.zero_()
        self.personal = nn.ParameterDict({"bias": nn.Parameter(torch.zeros(hidden))})
        self.phase = 0
        self._data_seed = seed
        self._flip = 0  # label shift of a label-flipping attacker (poison_labels); 0 = honest

    # -- data -------------------------------------------------------------------------------------------------
    def _data(self, split: str, phase: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        split_id = {"train": 0, "test": 1}[split]  # not hash(): string hashes change between processes
        g = torch.Generator().manual_seed(self._data_seed * 1000 + phase * 10 + split_id)
        n = self.samples
        labels = {t: torch.randint(0, _CLASSES, (n,), generator=g) for t in self.tasks}
        x_labels = labels
        if split == "train" and self._flip:  # a label-flipping attacker trains on shifted labels
            labels = {t: (y + self._flip) % _CLASSES for t, y in labels.items()}
        drift = 0.8 * phase * torch.ones(self.in_dim)
        x = {}
        for m in self.modalities:
            signal = sum(self.means[t][x_labels[t]] for t in self.tasks) / len(self.tasks)
            x[m] = signal + self.shift + drift + 0.7 * torch.randn(n, self.in_dim, generator=g)
        return x, labels

    def forward(self, x: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = self.personal["bias"].expand(next(iter(x.values())).shape[0], -1)
        for m, xm in x.items():
            enc: nn.ParameterDict = self.encoders[m]  # type: ignore[assignment]
            w = self.base[m] + self.lora_scale * enc["lora_B"] @ enc["lora_A"]  # [hidden, in]
            h = h + xm @ w.T
        h = torch.relu(h)
        return {t: head(h) for t, head in self.heads.items()}

    # -- the federation.client.Client protocol ----------------------------------------------------------------
    has_personal = True

    def set_phase(self, phase: int) -> None:
        self.phase = int(phase)

    def local_train(self, steps: int | None = None, batch_size: int | None = None,
                    seed: int | None = None) -> TrainReport:
        steps = 1 if steps is None else int(steps)
        bsz = 16 if batch_size is None else int(batch_size)
        t0 = time.perf_counter()
        x, y = self._data("train", self.phase)
        g = torch.Generator().manual_seed(0 if seed is None else seed)
        opt = torch.optim.SGD(self.parameters(), lr=self.lr)
        loss = torch.zeros(())
        for _ in range(steps):
            idx = torch.randint(0, self.samples, (bsz,), generator=g)
            out = self({m: v[idx] for m, v in x.items()})
            loss = torch.stack([nn.functional.cross_entropy(out[t], y[t][idx]) for t in self.tasks]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return TrainReport(num_samples=self.samples, loss=float(loss.detach()), steps=steps, batch_size=bsz,
                           flops=steps * self.gflop_per_step * 1e9, wall_time_s=time.perf_counter() - t0)

    def shared_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.state_dict().items() if not k.startswith("personal.")}

    def load_shared_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        own = self.state_dict()
        for k in tensors:
            if k not in own or k.startswith("personal."):
                raise KeyError(f"{self.device_id}: unexpected shared tensor {k!r}")
        self.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()}, strict=False)
        self._global = {k: v.detach().clone() for k, v in self.state_dict().items()}

    @torch.no_grad()
    def evaluate(self, split: str = "test", phase: int | None = None) -> EvalReport:
        x, y = self._data(split, self.phase if phase is None else phase)
        t0 = time.perf_counter()
        out = self(x)
        latency_ms = (time.perf_counter() - t0) * 1e3 / self.samples
        acc, bal = {}, {}
        for t in self.tasks:
            pred = out[t].argmax(1)
            acc[t] = float((pred == y[t]).float().mean())
            bal[t] = balanced_accuracy({int(c): (int(((pred == y[t]) & (y[t] == c)).sum()), int((y[t] == c).sum()))
                                        for c in y[t].unique()})
        losses = torch.stack([nn.functional.cross_entropy(out[t], y[t], reduction="none") for t in self.tasks]).mean(0)
        return EvalReport(acc, float(losses.mean()), latency_ms, self.samples, bal, losses.tolist(),
                          dict.fromkeys(self.tasks, self.samples))

    @torch.no_grad()
    def evaluate_global(self, split: str = "test", phase: int | None = None) -> EvalReport:
        """The last received shared state without the personal bias."""
        mine = {k: v.detach().clone() for k, v in self.state_dict().items()}
        try:
            glob = getattr(self, "_global", mine)
            self.load_state_dict({**glob, "personal.bias": torch.zeros_like(mine["personal.bias"])})
            return self.evaluate(split, phase)
        finally:
            self.load_state_dict(mine)

    @torch.no_grad()
    def evaluate_base(self, split: str = "test", phase: int | None = None) -> EvalReport:
        """The frozen base with the initial heads: no LoRA, no personal bias."""
        mine = {k: v.detach().clone() for k, v in self.state_dict().items()}
        try:
            self.load_state_dict({k: (torch.zeros_like(v) if "lora_B" in k or k.startswith("personal.") else v)
                                  for k, v in mine.items()})
            return self.evaluate(split, phase)
        finally:
            self.load_state_dict(mine)

    def poison_labels(self, seed: int) -> None:
        self._flip = 1 + seed % (_CLASSES - 1)

    def label_baselines(self, phase: int | None = None) -> dict[str, EvalReport]:
        from agents.train import label_baselines

        p = self.phase if phase is None else phase
        items = {}
        for split in ("train", "test"):
            _, y = self._data(split, p)
            items[split] = [{"labels": {t: y[t][i] for t in self.tasks}} for i in range(self.samples)]
        return label_baselines(items["train"], items["test"], self.tasks)


def full_model_bytes(client: SyntheticClient) -> int:
    """Bytes a full-model update of this client would take (frozen base merged + heads), for the LoRA ratio."""
    n = sum(w.numel() * w.element_size() for w in client.base.values())
    n += sum(p.numel() * p.element_size() for p in client.heads.parameters())
    return int(n)
