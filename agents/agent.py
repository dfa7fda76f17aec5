"""The per-device agent: one :class:`DeviceAgent` per device profile, around a personalized copy of the M3T FM.

What a device does (the seed paper's agent loop), and the API the federation calls:

* ``observe(frame)`` -- consume the device's frame: only the modalities its profile has, and only while they are
  present; labelled steps go to a bounded local buffer (every ``holdout_every``-th to the held-out buffer).
* ``predict(frame) -> Prediction`` -- inference on a new frame, with its wall-clock latency and the latency the
  device itself would take (FLOPs / the profile's sustained GFLOP/s). A frame without any usable modality is a
  counted skip (``Prediction.skipped``), not an error.
* ``local_train(steps=None, batch_size=None, seed=None) -> TrainReport`` -- local tuning within the device's
  compute budget (:func:`compute_budget`: steps per round and batch size from the profile's relative compute).
* ``shared_state()`` / ``load_shared_state(state)`` -- only the tunable, shareable tensors cross the network
  (:mod:`agents.personalize`); personal tensors (``personal.``) never do.
* ``evaluate(split="test", phase=None) -> dict`` -- accuracy per task, loss, per-sample loss, latency.
* ``metrics() -> AgentMetrics`` -- the Table 6 figures: latency p50/p95 (host and device estimate), on-device
  training time, storage footprint (base + adapters, MB), energy (compute FLOPs x J/GFLOP + bytes sent x J/bit),
  personalization effectiveness (held-out accuracy after local tuning minus the global model's).
* ``set_phase(p)`` / ``position_m(p)`` -- the federation's temporal phases (data segments) and D2D positions.
* ``state_dict()`` / ``load_state_dict()`` -- everything the device keeps between rounds, for checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from bridge.devices import DeviceProfile, get_device
from bridge.frame import DeviceFrame
from bridge.tasks import TASKS

from .batching import FrameWindow, items_to_batch
from .errors import AgentError, ConfigError, EmptyFrameError
from .model import M3TModel
from .personalize import (
    PersonalizationConfig,
    Personalized,
    apply_personalization,
    load_trainable_state,
    personal_state,
    select_experts,
    state_nbytes,
)
from .personalize import load_shared_state as _load_shared
from .personalize import shared_state as _shared
from .train import EvalStats, evaluate_items, forward_flops, train_steps

__all__ = ["AgentConfig", "DeviceAgent", "Prediction", "TrainReport", "AgentMetrics", "compute_budget",
           "tasks_for_profile"]


def compute_budget(profile: DeviceProfile) -> tuple[int, int]:
    """(local steps per round, batch size) a device affords: scaled by its compute relative to a Quest 3.

    Quest 3 (1.0) gets 10 steps of 16; glasses at 0.1 get 3 steps of 5; a tethered PC is capped at 40 of 32.
    """
    rc = float(profile.relative_compute)
    steps = int(min(40, max(2, round(10 * rc))))
    batch = int(min(32, max(4, round(16 * math.sqrt(rc)))))
    return steps, batch


def tasks_for_profile(profile: DeviceProfile, tasks: Sequence[str] | None = None) -> tuple[str, ...]:
    """The tasks whose carrying modalities the device has (all of ``tasks`` it can run)."""
    mods = set(profile.modalities)
    pool = tuple(TASKS) if tasks is None else tuple(tasks)
    return tuple(t for t in pool if mods & set(TASKS[t].modalities))


@dataclass(frozen=True)
class AgentConfig:
    """Local-loop settings; ``steps_per_round``/``batch_size`` None = from the profile (:func:`compute_budget`)."""

    buffer_capacity: int = 512
    holdout_capacity: int = 256
    holdout_every: int = 5
    steps_per_round: int | None = None
    batch_size: int | None = None
    latency_window: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        for n in ("buffer_capacity", "holdout_capacity", "holdout_every", "latency_window"):
            v = getattr(self, n)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(n, "must be an integer >= 1", value=v)
        for n in ("steps_per_round", "batch_size"):
            v = getattr(self, n)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(n, "must be an integer >= 1 or None", value=v)


@dataclass
class Prediction:
    """An agent's answer for one frame: label and confidence per task, and what it cost."""

    device_id: str
    step: int
    labels: dict[str, str]
    confidence: dict[str, float]
    latency_ms: float
    device_latency_ms: float
    modalities: tuple[str, ...]
    skipped: bool = False
    reason: str = ""


@dataclass
class TrainReport:
    """One local training call: what the federation's TrainReport needs plus the device-side estimates."""

    num_samples: int
    loss: float
    steps: int
    batch_size: int
    flops: float
    wall_time_s: float
    device_time_s: float
    energy_j: float

    @property
    def compute_gflop(self) -> float:
        return self.flops / 1e9

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "compute_gflop": self.compute_gflop}


@dataclass
class AgentMetrics:
    """The seed paper's Table 6 for one device (units in the names)."""

    device_id: str
    profile: str
    latency_p50_ms: float
    latency_p95_ms: float
    device_latency_ms: float
    frames_predicted: int
    frames_skipped: int
    train_wall_time_s: float
    train_device_time_s: float
    storage_mb: float
    base_mb: float
    adapter_mb: float
    shared_bytes: int
    bytes_sent: int
    compute_flops: float
    energy_compute_j: float
    energy_comm_j: float
    personalization_gain: dict[str, float] = field(default_factory=dict)
    experts_activated: dict[str, float] = field(default_factory=dict)

    @property
    def energy_j(self) -> float:
        return self.energy_compute_j + self.energy_comm_j

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "energy_j": self.energy_j}


class DeviceAgent:
    """One device's agent around ``model`` (a base model; the agent personalizes it in place -- pass a copy)."""

    def __init__(self, model: M3TModel, profile: DeviceProfile | str, *, device_id: str | None = None,
                 tasks: Sequence[str] | None = None, personalization: PersonalizationConfig | None = None,
                 config: AgentConfig | None = None):
        self.profile = get_device(profile) if isinstance(profile, str) else profile
        self.device_id = device_id or self.profile.name
        self.config = config or AgentConfig()
        self.model = model
        self.modalities = tuple(m for m in self.profile.modalities if m in model.cfg.modalities)
        if not self.modalities:
            raise AgentError(f"{self.device_id}: the device's modalities {list(self.profile.modalities)} include "
                             f"none the model reads ({list(model.cfg.modalities)})")
        wanted = tasks_for_profile(self.profile, model.cfg.tasks) if tasks is None else tuple(tasks)
        model.check_tasks(wanted)
        self.tasks = wanted
        if not self.tasks:
            raise AgentError(f"{self.device_id}: no task of the model can be run from {list(self.modalities)}")
        self.base_nbytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        pcfg = personalization or PersonalizationConfig()
        self.personalization: Personalized = apply_personalization(model, pcfg, self.tasks)
        model.eval()
        steps, batch = compute_budget(self.profile)
        self.steps_per_round = self.config.steps_per_round or steps
        self.batch_size = self.config.batch_size or batch
        self._rng = random.Random(self.config.seed)
        self.buffer: deque[dict[str, Any]] = deque(maxlen=self.config.buffer_capacity)
        self.holdout: deque[dict[str, Any]] = deque(maxlen=self.config.holdout_capacity)
        self._phases: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []
        self.phase = 0
        self._window = FrameWindow(model.cfg.window)
        self._latency_ms: deque[float] = deque(maxlen=self.config.latency_window)
        self._device_latency_ms: deque[float] = deque(maxlen=self.config.latency_window)
        self.frames_seen = self.frames_skipped = 0
        self.bytes_sent = 0
        self.compute_flops = 0.0
        self.train_wall_s = self.train_device_s = 0.0
        self._global = self._snapshot()
        self._observed = 0

    # -- data -------------------------------------------------------------------------------------------
    def _usable(self, item: Mapping[str, Any]) -> bool:
        return any(bool(item["present"].get(m, False)) for m in self.modalities)

    def _filter(self, item: dict[str, Any]) -> dict[str, Any]:
        """Keep only the device's modalities (a recorded item may hold more, e.g. another profile's data)."""
        out = {k: v for k, v in item.items() if k not in TASKS and k not in ("rgb", "depth", "gaze", "audio", "pose",
                                                                             "imu", "hands")}
        out["present"] = {m: item["present"][m] for m in self.modalities if m in item["present"]}
        out["window_valid"] = {m: v for m, v in item.get("window_valid", {}).items() if m in self.modalities}
        for m in self.modalities:
            if m in item:
                out[m] = item[m]
        out["labels"] = {t: v for t, v in item["labels"].items() if t in self.tasks}
        return out

    def add_items(self, items: Sequence[dict[str, Any]], split: str = "train") -> int:
        """Add recorded items (see :func:`agents.train.load_items`) to the local or held-out buffer."""
        if split not in ("train", "test"):
            raise AgentError(f"add_items: split must be 'train' or 'test', got {split!r}")
        buf = self.buffer if split == "train" else self.holdout
        n = 0
        for it in items:
            it = self._filter(it)
            if self._usable(it):
                buf.append(it)
                n += 1
        return n

    def set_phases(self, phases: Sequence[tuple[Sequence[dict[str, Any]], Sequence[dict[str, Any]]]]) -> None:
        """Give the agent its data as consecutive phases of (train items, test items); selects phase 0."""
        self._phases = [([self._filter(i) for i in tr if self._usable(self._filter(i))],
                         [self._filter(i) for i in te if self._usable(self._filter(i))]) for tr, te in phases]
        if not self._phases:
            raise AgentError("set_phases: expected at least one phase")
        self.set_phase(0)

    def set_phase(self, phase: int) -> None:
        """Switch the local data to ``phase`` (a lighting phase or task-script segment)."""
        if not self._phases:
            self.phase = int(phase)
            return
        if not 0 <= phase < len(self._phases):
            raise AgentError(f"phase {phase} out of range; the agent has {len(self._phases)} phases")
        self.phase = int(phase)
        self.buffer.clear()
        self.holdout.clear()
        self.buffer.extend(self._phases[phase][0])
        self.holdout.extend(self._phases[phase][1])

    def position_m(self, phase: int | None = None) -> tuple[float, float, float]:
        """Mean head position (world frame, m) over a phase's frames; for the D2D graph."""
        items = (self._phases[phase][0] + self._phases[phase][1]) if (phase is not None and self._phases) else \
            list(self.buffer) + list(self.holdout)
        pos = [it["pose"][-1, :3] for it in items if "pose" in it and bool(it["present"].get("pose", False))]
        if not pos:
            raise AttributeError(f"{self.device_id} has no head-pose data to place it")
        p = torch.stack(pos).mean(dim=0)
        return float(p[0]), float(p[1]), float(p[2])

    def observe(self, frame: DeviceFrame) -> dict[str, Any] | None:
        """Consume one frame: history for windows, and its labelled step into the local buffers."""
        if frame.device_id != self.device_id and self.device_id != self.profile.name:
            raise AgentError(f"agent {self.device_id!r} was given a frame of device {frame.device_id!r}")
        item = self._window.item(frame, image_size=self.model.cfg.image_size_px, modalities=self.modalities)
        self._store(item)
        return item

    def _store(self, item: dict[str, Any]) -> None:
        item = self._filter(item)
        if not self._usable(item) or not any(int(v) >= 0 for v in item["labels"].values()):
            return
        self._observed += 1
        (self.holdout if self._observed % self.config.holdout_every == 0 else self.buffer).append(item)

    # -- inference ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, frame: DeviceFrame, *, learn: bool = True) -> Prediction:
        """Predict every task of the device for ``frame`` (and, with ``learn``, keep the frame as local data)."""
        t0 = time.perf_counter()
        item = self._window.item(frame, image_size=self.model.cfg.image_size_px, modalities=self.modalities)
        present = tuple(m for m in self.modalities if bool(item["present"].get(m, False)))
        if not present:
            self.frames_skipped += 1
            return Prediction(self.device_id, frame.step, {}, {}, 0.0, 0.0, (), True,
                              f"no usable modality (device has {list(self.modalities)}, frame carries "
                              f"{list(frame.present_modalities())})")
        batch = items_to_batch([item], self.tasks)
        try:
            logits = self.model(batch, self.tasks)
        except EmptyFrameError as exc:
            self.frames_skipped += 1
            return Prediction(self.device_id, frame.step, {}, {}, 0.0, 0.0, (), True, str(exc))
        labels, conf = {}, {}
        for t, lg in logits.items():
            p = lg[0].softmax(dim=-1)
            k = int(p.argmax())
            labels[t], conf[t] = TASKS[t].classes[k], float(p[k])
        ms = (time.perf_counter() - t0) * 1000
        dev_ms = forward_flops(self.model, batch, self.tasks) / (self.profile.gflops_sustained * 1e9) * 1000
        self._latency_ms.append(ms)
        self._device_latency_ms.append(dev_ms)
        self.frames_seen += 1
        self.compute_flops += forward_flops(self.model, batch, self.tasks)
        if learn:
            self._store(item)
        return Prediction(self.device_id, frame.step, labels, conf, ms, dev_ms, present)

    # -- local training -------------------------------------------------------------------------------------
    def local_train(self, steps: int | None = None, batch_size: int | None = None,
                    seed: int | None = None) -> TrainReport:
        """Tune locally on the buffer within the compute budget (deterministic given ``seed``)."""
        steps = self.steps_per_round if steps is None else int(steps)
        bsz = self.batch_size if batch_size is None else int(batch_size)
        if steps < 1 or bsz < 1:
            raise AgentError(f"local_train: steps and batch_size must be >= 1, got {steps}, {bsz}")
        data = list(self.buffer)
        if not data:
            raise AgentError(f"{self.device_id}: the local buffer is empty; observe labelled frames first")
        rng = random.Random(self._rng.random() if seed is None else seed)
        torch.manual_seed(rng.randrange(2**31))
        if self.personalization.config.method == "expert" and not self.personalization.config.experts:
            self._pick_experts(data)
        opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad],
                                lr=self.personalization.config.learning_rate,
                                weight_decay=self.personalization.config.weight_decay)

        def next_batch() -> dict[str, Any]:
            return items_to_batch([data[rng.randrange(len(data))] for _ in range(bsz)], self.tasks)

        st = train_steps(self.model, next_batch, steps, self.tasks, opt)
        dev_s = st.flops / (self.profile.gflops_sustained * 1e9)
        self.compute_flops += st.flops
        self.train_wall_s += st.wall_time_s
        self.train_device_s += dev_s
        return TrainReport(st.num_samples, st.loss, steps, bsz, st.flops, st.wall_time_s, dev_s,
                           self.profile.compute_joules(st.flops))

    def _pick_experts(self, data: list[dict[str, Any]]) -> None:
        """Expert tuning without a fixed list: tune the experts the device's own data uses most."""
        with torch.no_grad():
            self.model(items_to_batch(data[:64], self.tasks), self.tasks, drop_modalities=False)
        chosen = select_experts(self.model, self.model.cfg.top_k)
        for n, p in self.model.named_parameters():
            if ".ff.experts." in n:
                idx = int(n.split(".ff.experts.")[1].split(".")[0])
                p.requires_grad_(idx in chosen)
        shared = tuple(n for n in self.personalization.shared_names if ".ff.experts." not in n) + tuple(
            n for n, _ in self.model.named_parameters() if any(f".ff.experts.{e}." in n for e in chosen))
        cfg = dataclasses.replace(self.personalization.config, experts=chosen)
        self.personalization = Personalized(cfg, self.tasks, shared, self.personalization.personal_names, chosen)

    # -- federation ----------------------------------------------------------------------------------------------
    def shared_state(self) -> dict[str, torch.Tensor]:
        """The tunable, shareable tensors (counted as sent: their exact bytes add to ``bytes_sent``)."""
        st = _shared(self.model, self.personalization)
        self.bytes_sent += state_nbytes(st)
        return st

    def load_shared_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Install the (aggregated) shared tensors; they become this device's global model."""
        _load_shared(self.model, self.personalization, state)
        self._global = self._snapshot()

    def personal_state(self) -> dict[str, torch.Tensor]:
        return personal_state(self.model, self.personalization)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Everything the device keeps between rounds (shared + personal tensors), not counted as sent."""
        return {**_shared(self.model, self.personalization), **personal_state(self.model, self.personalization)}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        load_trainable_state(self.model, self.personalization, state)

    @property
    def shared_nbytes(self) -> int:
        return state_nbytes(_shared(self.model, self.personalization))

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.state_dict().items()}

    # -- evaluation ---------------------------------------------------------------------------------------------
    def _split_items(self, split: str, phase: int | None) -> list[dict[str, Any]]:
        if phase is not None and self._phases:
            if not 0 <= phase < len(self._phases):
                raise AgentError(f"phase {phase} out of range; the agent has {len(self._phases)} phases")
            tr, te = self._phases[phase]
            return te if split == "test" else tr
        if split == "test":
            return list(self.holdout)
        if split == "train":
            return list(self.buffer)
        raise AgentError(f"evaluate: split must be 'train' or 'test', got {split!r}")

    def _evaluate(self, split: str, phase: int | None) -> EvalStats:
        items = self._split_items(split, phase)
        if not items:
            return EvalStats({}, float("nan"), 0)
        t0 = time.perf_counter()
        ev = evaluate_items(self.model, items, self.tasks)
        ev.latency_ms = (time.perf_counter() - t0) * 1000 / max(1, len(items))
        return ev

    def evaluate(self, split: str = "test", phase: int | None = None) -> dict[str, Any]:
        """Accuracy per task in [0, 1], mean loss, per-sample loss and mean latency per sample on the split."""
        ev = self._evaluate(split, phase)
        return {"accuracy": ev.accuracy, "loss": ev.loss, "num_samples": ev.num_samples,
                "per_sample_loss": ev.per_sample_loss, "latency_ms": ev.latency_ms, "counts": ev.counts}

    def evaluate_global(self, split: str = "test", phase: int | None = None) -> dict[str, float]:
        """Accuracy of the global model: the last received shared state, without the personal modules."""
        mine = self._snapshot()
        personal = self.model.personal
        try:
            _load_shared(self.model, self.personalization,
                         {k: v for k, v in self._global.items() if not k.startswith("personal.")})
            self.model.personal = type(personal)()  # empty: no personal prompt, no personal heads
            return self._evaluate(split, phase).accuracy
        finally:
            self.model.personal = personal
            load_trainable_state(self.model, self.personalization, mine)

    def personalization_gain(self, split: str = "test", phase: int | None = None) -> dict[str, float]:
        """Held-out accuracy after local tuning minus the global model's, per task (Table 6)."""
        local = self._evaluate(split, phase).accuracy
        glob = self.evaluate_global(split, phase)
        return {t: local[t] - glob[t] for t in local if t in glob}

    def metrics(self, *, with_gain: bool = True) -> AgentMetrics:
        """The Table 6 figures of this device so far."""
        lat = np.asarray(self._latency_ms, dtype=np.float64)
        dev = np.asarray(self._device_latency_ms, dtype=np.float64)
        shared_b = self.shared_nbytes
        adapter_b = shared_b + state_nbytes(self.personal_state())
        if self.personalization.config.method == "full":
            adapter_b = state_nbytes(self.personal_state())  # full tuning rewrites the base, it adds nothing
        mb = 1024 * 1024
        comm_j = self.profile.uplink_joules(self.bytes_sent)
        gain = self.personalization_gain() if with_gain and self.holdout else {}
        return AgentMetrics(
            device_id=self.device_id, profile=self.profile.name,
            latency_p50_ms=float(np.percentile(lat, 50)) if lat.size else float("nan"),
            latency_p95_ms=float(np.percentile(lat, 95)) if lat.size else float("nan"),
            device_latency_ms=float(dev.mean()) if dev.size else float("nan"),
            frames_predicted=self.frames_seen, frames_skipped=self.frames_skipped,
            train_wall_time_s=self.train_wall_s, train_device_time_s=self.train_device_s,
            storage_mb=(self.base_nbytes + adapter_b) / mb, base_mb=self.base_nbytes / mb, adapter_mb=adapter_b / mb,
            shared_bytes=shared_b, bytes_sent=self.bytes_sent, compute_flops=self.compute_flops,
            energy_compute_j=self.profile.compute_joules(self.compute_flops), energy_comm_j=comm_j,
            personalization_gain=gain, experts_activated=self.model.experts_activated(self.tasks),
        )
