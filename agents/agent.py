"""The per-device agent: one :class:`DeviceAgent` per device profile, around a personalized copy of the M3T FM.

What a device does (the seed paper's agent loop), and the API the federation's round engine calls (the
:class:`federation.client.Client` protocol is exactly this surface):

* ``observe(frame)`` -- consume the device's frame: only the modalities its profile has, and only while they are
  present; labelled steps go to a bounded local buffer or, in time-separated blocks, to the held-out buffer.
* ``predict(frame) -> Prediction`` -- inference on a new frame, with its wall-clock latency and the latency the
  device itself would take (FLOPs / the profile's sustained GFLOP/s). A frame without any usable modality is a
  counted skip (``Prediction.skipped``), not an error.
* ``local_train(steps=None, batch_size=None, seed=None) -> TrainReport`` -- local tuning within the device's
  compute budget (:func:`compute_budget`), with the continual-learning method of its config (EWC or replay).
* ``shared_state()`` / ``load_shared_state(state)`` -- only the tunable, shareable tensors cross the network
  (:mod:`agents.personalize`, peft's own state-dict functions); personal tensors never do.
* ``evaluate(split="test", phase=None) -> EvalReport`` -- the model the device runs (global shared tensors + its
  personal modules); ``evaluate_global`` -- the global model alone (last received shared state, no personal
  modules), on the same data; ``label_baselines(phase)`` -- majority class and label persistence.
* ``metrics() -> AgentMetrics`` -- the Table 6 figures: latency p50/p95 (host and device estimate), on-device
  training time, storage footprint (base + adapters, MB), energy (compute FLOPs x J/GFLOP + bytes sent x J/bit),
  personalization gain (personalized minus global model on the same held-out data).
* ``set_phases(...)`` / ``set_phase(p)`` / ``position_m(p)`` -- the federation's temporal phases (each with its
  own time-separated train and test steps) and D2D positions.
* ``state_dict()`` / ``load_state_dict()`` -- everything the device keeps between rounds, for checkpoints.

Reproducibility: every random draw derives from ``AgentConfig.seed`` (:func:`bridge.seeding.derive_seed`) --
the personalization modules' initial values, each training call's batches and dropout -- so two agents built
with the same seed from the same checkpoint are bit-identical, in any process.
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
from bridge.seeding import derive_seed, forked_torch_seed
from bridge.tasks import TASKS

from .batching import FrameWindow, items_to_batch
from .continual import CONTINUAL_METHODS, EWC, ReplayBuffer
from .errors import AgentError, ConfigError, EmptyFrameError
from .model import M3TModel
from .personalize import (
    PersonalizationConfig,
    Personalized,
    apply_personalization,
    is_personal_key,
    load_trainable_state,
    personal_state,
    select_experts,
    state_nbytes,
    without_personalization,
)
from .personalize import load_shared_state as _load_shared
from .personalize import shared_state as _shared
from .reports import EvalReport, TrainReport
from .train import class_weights, evaluate_items, forward_flops, label_baselines, multitask_loss, train_steps

__all__ = ["AgentConfig", "DeviceAgent", "Prediction", "TrainReport", "EvalReport", "AgentMetrics",
           "compute_budget", "tasks_for_profile"]


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
    """Local-loop settings; ``steps_per_round``/``batch_size`` None = from the profile (:func:`compute_budget`).

    Live data (``observe``/``predict``) is held out in whole time blocks, never step by step: steps come in blocks
    of ``holdout_block_steps``, every ``holdout_every``-th block is held out, and the first ``guard_steps`` of a
    block that follows a block of the other kind belong to neither side (labels persist for seconds, so a test
    step right after a training step would be a copy of it).

    ``continual`` picks the forgetting mitigation across phases (``none``, ``ewc`` with ``ewc_strength``,
    ``replay`` with ``replay_capacity`` earlier steps mixed into the buffer); ``seed`` derives every draw.
    """

    buffer_capacity: int = 512
    holdout_capacity: int = 256
    holdout_every: int = 5
    holdout_block_steps: int = 50
    guard_steps: int = 20
    steps_per_round: int | None = None
    batch_size: int | None = None
    latency_window: int = 512
    continual: str = "none"
    ewc_strength: float = 100.0
    replay_capacity: int = 64
    fisher_batches: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        for n in ("buffer_capacity", "holdout_capacity", "holdout_every", "holdout_block_steps", "latency_window",
                  "replay_capacity", "fisher_batches"):
            v = getattr(self, n)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(n, "must be an integer >= 1", value=v)
        for n in ("steps_per_round", "batch_size"):
            v = getattr(self, n)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(n, "must be an integer >= 1 or None", value=v)
        if isinstance(self.guard_steps, bool) or not isinstance(self.guard_steps, int) or not \
                0 <= self.guard_steps < self.holdout_block_steps:
            raise ConfigError("guard_steps", f"must be an integer in [0, holdout_block_steps={self.holdout_block_steps})",
                              value=self.guard_steps)
        if self.continual not in CONTINUAL_METHODS:
            raise ConfigError("continual", "unknown method", value=self.continual, allowed=list(CONTINUAL_METHODS))
        if not (isinstance(self.ewc_strength, (int, float)) and math.isfinite(self.ewc_strength)
                and self.ewc_strength >= 0):
            raise ConfigError("ewc_strength", "must be a finite number >= 0", value=self.ewc_strength)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError("seed", "must be an integer >= 0", value=self.seed)


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


Phases = Sequence[tuple[Sequence[dict[str, Any]], Sequence[dict[str, Any]]]]


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
        # New modules (LoRA A, prompts) draw their initial values from torch's global generator: seed it here, from
        # the device's own seed, so the same config builds the same device in any process.
        with forked_torch_seed(derive_seed(self.config.seed, "init")):
            self.personalization: Personalized = apply_personalization(model, pcfg, self.tasks)
        model.eval()
        steps, batch = compute_budget(self.profile)
        self.steps_per_round = self.config.steps_per_round or steps
        self.batch_size = self.config.batch_size or batch
        self._rng = random.Random(derive_seed(self.config.seed, "calls"))
        self.buffer: deque[dict[str, Any]] = deque(maxlen=self.config.buffer_capacity)
        self.holdout: deque[dict[str, Any]] = deque(maxlen=self.config.holdout_capacity)
        self._phases: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []
        self.phase = 0
        self._ewc = EWC(self.config.ewc_strength) if self.config.continual == "ewc" else None
        self._window = FrameWindow(model.cfg.window, model.cfg.audio_window)
        self._latency_ms: deque[float] = deque(maxlen=self.config.latency_window)
        self._device_latency_ms: deque[float] = deque(maxlen=self.config.latency_window)
        self.frames_seen = self.frames_skipped = 0
        self.bytes_sent = 0
        self.compute_flops = 0.0
        self.train_wall_s = self.train_device_s = 0.0
        self._global = self._snapshot()
        self._observed = 0

    @property
    def lora_scale(self) -> float:
        """alpha / rank of the device's LoRA (1.0 for other methods): what exact LoRA aggregation multiplies by."""
        cfg = self.personalization.config
        return cfg.lora_scale if cfg.method == "lora" else 1.0

    @property
    def has_personal(self) -> bool:
        """The device has personal modules, so the model it runs differs from the global model."""
        return bool(self.personalization.personal_names)

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

    def set_phases(self, phases: Phases) -> None:
        """Give the agent its data as consecutive phases of (train items, test items); selects phase 0.

        The caller is responsible for separating each phase's test steps in time from its training steps
        (``federation.agent_client`` uses :func:`bridge.record.temporal_split` with a guard gap)."""
        kept = []
        for tr, te in phases:
            kept.append(([i for i in map(self._filter, tr) if self._usable(i)],
                         [i for i in map(self._filter, te) if self._usable(i)]))
        if not kept:
            raise AgentError("set_phases: expected at least one phase")
        self._phases = kept
        self.phase = -1
        self.set_phase(0)

    @property
    def num_phases(self) -> int:
        return len(self._phases)

    def set_phase(self, phase: int) -> None:
        """Switch the local data to ``phase`` (a lighting phase or task-script segment).

        Moving on to a later phase consolidates EWC on the phase being left; with replay, the new buffer holds
        the phase's training steps plus a reservoir sample of every earlier phase's. Setting the current phase
        again changes nothing."""
        if not self._phases:
            self.phase = int(phase)
            return
        if not 0 <= phase < len(self._phases):
            raise AgentError(f"phase {phase} out of range; the agent has {len(self._phases)} phases")
        if phase == self.phase:
            return
        if self._ewc is not None and 0 <= self.phase < phase:
            self._consolidate(self.phase)
        self._enter_phase(int(phase))

    def _enter_phase(self, phase: int) -> None:
        self.phase = phase
        self.buffer.clear()
        self.holdout.clear()
        self.buffer.extend(self._phases[phase][0])
        if self.config.continual == "replay" and phase > 0:
            rb: ReplayBuffer[dict[str, Any]] = ReplayBuffer(self.config.replay_capacity,
                                                            seed=derive_seed(self.config.seed, "replay", phase))
            for tr, _ in self._phases[:phase]:
                rb.extend(tr)
            self.buffer.extend(rb.items)
        self.holdout.extend(self._phases[phase][1])

    def _trainable(self) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def _consolidate(self, phase: int) -> None:
        """EWC: the empirical Fisher of ``phase``'s training steps and the current parameters become an anchor."""
        assert self._ewc is not None
        data = self._phases[phase][0]
        if not data:
            return
        rng = random.Random(derive_seed(self.config.seed, "fisher", phase))
        batches = [items_to_batch([data[rng.randrange(len(data))] for _ in range(self.batch_size)], self.tasks)
                   for _ in range(self.config.fisher_batches)]

        def loss_fn(batch: dict[str, Any]) -> torch.Tensor:
            logits = self.model(batch, self.tasks, drop_modalities=False)
            return multitask_loss(logits, batch["labels"], self.model.sample_has_input())[0]

        self.model.eval()
        self._ewc.consolidate(self._trainable(), loss_fn, batches)

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
        i = self._observed
        self._observed += 1
        c = self.config
        block, pos = divmod(i, c.holdout_block_steps)
        held = block % c.holdout_every == c.holdout_every - 1
        prev_held = block > 0 and (block - 1) % c.holdout_every == c.holdout_every - 1
        if pos < c.guard_steps and (held or prev_held):
            return  # the guard between a training block and a held-out block (either way round)
        (self.holdout if held else self.buffer).append(item)

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
        seed = self._rng.randrange(2**63) if seed is None else int(seed)
        rng = random.Random(derive_seed(seed, "batches"))
        with forked_torch_seed(derive_seed(seed, "torch")):
            if self.personalization.config.method == "expert" and not self.personalization.config.experts:
                self._pick_experts(data)
            params = self._trainable()
            opt = torch.optim.AdamW(list(params.values()), lr=self.personalization.config.learning_rate,
                                    weight_decay=self.personalization.config.weight_decay)

            def next_batch() -> dict[str, Any]:
                return items_to_batch([data[rng.randrange(len(data))] for _ in range(bsz)], self.tasks)

            ewc = self._ewc
            penalty = (lambda: ewc.penalty(params)) if ewc is not None and ewc.fisher else None
            # XR labels are imbalanced on a device (no command spoken most of the time, one activity for minutes):
            # the same inverse-square-root class weights as pretraining, from the device's own buffer
            st = train_steps(self.model, next_batch, steps, self.tasks, opt, penalty=penalty,
                             weights=class_weights(data, self.tasks))
        dev_s = st.flops / (self.profile.gflops_sustained * 1e9)
        self.compute_flops += st.flops
        self.train_wall_s += st.wall_time_s
        self.train_device_s += dev_s
        return TrainReport(num_samples=st.num_samples, loss=st.loss, steps=steps, batch_size=bsz, flops=st.flops,
                           wall_time_s=st.wall_time_s, device_time_s=dev_s,
                           energy_j=self.profile.compute_joules(st.flops), storage_bytes=self.storage_bytes)

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
        """Everything the device keeps between rounds: shared and personal tensors, the global model it last
        received, its phase and its continual-learning state (not counted as sent; never leaves the device)."""
        out = {**_shared(self.model, self.personalization), **personal_state(self.model, self.personalization)}
        out.update({f"global.{k}": v.clone() for k, v in self._global.items()})
        out["continual.phase"] = torch.tensor(self.phase)
        if self._ewc is not None:
            out.update({f"continual.ewc.{k}": v for k, v in self._ewc.state_dict().items()})
        return out

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        own = {k: v for k, v in state.items() if not k.startswith(("global.", "continual."))}
        load_trainable_state(self.model, self.personalization, own)
        glob = {k[len("global."):]: v.clone() for k, v in state.items() if k.startswith("global.")}
        if glob:
            self._global = glob
        if self._ewc is not None:
            self._ewc.load_state_dict({k[len("continual.ewc."):]: v for k, v in state.items()
                                       if k.startswith("continual.ewc.")})
        if "continual.phase" in state and self._phases:
            self._enter_phase(int(state["continual.phase"]))

    @property
    def shared_nbytes(self) -> int:
        return state_nbytes(_shared(self.model, self.personalization))

    @property
    def storage_bytes(self) -> int:
        """The model as deployed on the device: frozen base + shared and personal adapters (full tuning rewrites
        the base and adds nothing)."""
        adapters = self.shared_nbytes + state_nbytes(self.personal_state())
        if self.personalization.config.method == "full":
            adapters = state_nbytes(self.personal_state())
        return int(self.base_nbytes + adapters)

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {**_shared(self.model, self.personalization), **personal_state(self.model, self.personalization)}

    # -- evaluation ---------------------------------------------------------------------------------------------
    def _split_items(self, split: str, phase: int | None) -> list[dict[str, Any]]:
        if split not in ("train", "test"):
            raise AgentError(f"evaluate: split must be 'train' or 'test', got {split!r}")
        if phase is not None and self._phases:
            if not 0 <= phase < len(self._phases):
                raise AgentError(f"phase {phase} out of range; the agent has {len(self._phases)} phases")
            tr, te = self._phases[phase]
            return te if split == "test" else tr
        return list(self.holdout) if split == "test" else list(self.buffer)

    def evaluate(self, split: str = "test", phase: int | None = None) -> EvalReport:
        """The model the device runs (shared tensors + personal modules) on the split of ``phase`` (default: the
        current buffers): accuracy and balanced accuracy per task, loss, per-sample loss, latency per sample."""
        items = self._split_items(split, phase)
        if not items:
            return EvalReport({}, float("nan"), float("nan"), 0)
        return evaluate_items(self.model, items, self.tasks)

    def evaluate_global(self, split: str = "test", phase: int | None = None) -> EvalReport:
        """The global model on the same data: the last received shared state, without the personal modules."""
        mine = self._snapshot()
        personal = self.model.personal
        try:
            _load_shared(self.model, self.personalization,
                         {k: v for k, v in self._global.items() if not is_personal_key(k)})
            self.model.personal = type(personal)()  # empty: no personal prompt, no personal heads
            return self.evaluate(split, phase)
        finally:
            self.model.personal = personal
            load_trainable_state(self.model, self.personalization, mine)

    def personalization_gain(self, split: str = "test", phase: int | None = None) -> dict[str, float]:
        """Per task: the device's model (with its personal modules) minus the global model, on the same data."""
        local = self.evaluate(split, phase).accuracy
        glob = self.evaluate_global(split, phase).accuracy
        return {t: local[t] - glob[t] for t in local if t in glob}

    def evaluate_base(self, split: str = "test", phase: int | None = None) -> EvalReport:
        """The model with every personalization module switched off, on the same data: before the first local
        training this is the pretrained foundation model (the "pretrained" baseline of a report)."""
        with without_personalization(self.model):
            return self.evaluate(split, phase)

    def poison_labels(self, seed: int) -> None:
        """Make this device a label-flipping attacker (a poisoning experiment): every training label of every phase
        is mapped through a fixed derangement of its task's classes (no class keeps its label). Held-out labels stay
        true, so the damage is measured honestly."""
        rng = random.Random(seed)
        perms = {}
        for t in self.tasks:
            k = TASKS[t].num_classes
            shift = rng.randrange(1, k)  # a cyclic shift by 1..k-1 moves every class
            perms[t] = [(c + shift) % k for c in range(k)]

        def flip(item: dict[str, Any]) -> dict[str, Any]:
            labels = {t: (torch.tensor(perms[t][int(v)], dtype=torch.int64) if t in perms and int(v) >= 0 else v)
                      for t, v in item["labels"].items()}
            return {**item, "labels": labels}

        self._phases = [([flip(i) for i in tr], te) for tr, te in self._phases]
        if self._phases:
            self._enter_phase(max(self.phase, 0))
        else:
            self.buffer = deque(map(flip, self.buffer), maxlen=self.buffer.maxlen)

    def label_baselines(self, phase: int | None = None) -> dict[str, EvalReport]:
        """Majority class and label persistence on the split's test steps, from its training labels only."""
        return label_baselines(self._split_items("train", phase), self._split_items("test", phase), self.tasks)

    def metrics(self, *, with_gain: bool = True) -> AgentMetrics:
        """The Table 6 figures of this device so far."""
        lat = np.asarray(self._latency_ms, dtype=np.float64)
        dev = np.asarray(self._device_latency_ms, dtype=np.float64)
        mb = 1024 * 1024
        adapter_b = self.storage_bytes - self.base_nbytes
        comm_j = self.profile.uplink_joules(self.bytes_sent)
        gain = self.personalization_gain() if with_gain and self.holdout else {}
        return AgentMetrics(
            device_id=self.device_id, profile=self.profile.name,
            latency_p50_ms=float(np.percentile(lat, 50)) if lat.size else float("nan"),
            latency_p95_ms=float(np.percentile(lat, 95)) if lat.size else float("nan"),
            device_latency_ms=float(dev.mean()) if dev.size else float("nan"),
            frames_predicted=self.frames_seen, frames_skipped=self.frames_skipped,
            train_wall_time_s=self.train_wall_s, train_device_time_s=self.train_device_s,
            storage_mb=self.storage_bytes / mb, base_mb=self.base_nbytes / mb, adapter_mb=adapter_b / mb,
            shared_bytes=self.shared_nbytes, bytes_sent=self.bytes_sent, compute_flops=self.compute_flops,
            energy_compute_j=self.profile.compute_joules(self.compute_flops), energy_comm_j=comm_j,
            personalization_gain=gain, experts_activated=self.model.experts_activated(self.tasks),
        )
