"""The bridge from the agents package's ``DeviceAgent`` to the federation's :class:`~federation.client.Client`.

``xrfed run`` and ``xrfed demo`` drive the real per-device agents: :func:`build_client_factories`

1. records the experiment's episode of the scenario with the embedded backend (``bridge.cli_sim.record``; the
   scenario's avatars wear the config's device profiles), cached under ``$XRFED_CACHE/federation-data/<key>``;
2. takes the foundation checkpoint of the config's model preset (``agents.pretrain.foundation_checkpoint``,
   built once and cached; its recording uses a different seed, so no device is evaluated on pretraining data);
3. per device, builds a ``DeviceAgent`` (profile, tasks, personalization method/rank/alpha, personal adapters)
   and gives it its own recorded steps split into ``phases`` consecutive segments (lighting phases and task-script
   segments), every 5th step of a segment held out, with the config's random modality dropout applied.

:class:`AgentClient` adapts the agent's API to the round engine's protocol and adds the continual-learning
mitigation across phases (a replay buffer of earlier phases' steps, or EWC as a gradient hook). The agents
package is imported lazily: the federation core installs and tests without it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from bridge.devices import DeviceProfile, get_device

from .config import ContinualConfig, DeviceConfig, ExperimentConfig
from .continual import ReplayBuffer
from .errors import FederationError
from .messages import EvalReport, TrainReport

__all__ = ["AgentClient", "build_client_factories", "record_experiment_data", "experiment_scenario"]


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    """First present field among ``names`` of a report given as a mapping or an object."""
    for n in names:
        if isinstance(obj, Mapping) and n in obj:
            return obj[n]
        if hasattr(obj, n):
            return getattr(obj, n)
    return default


class AgentClient:
    """Adapts one agent to the :class:`~federation.client.Client` protocol, with forgetting mitigation.

    Personal adapters stay inside the agent: ``shared_state()`` is expected to return only the shared adapter
    tensors, and this adapter refuses (rather than silently sends) any ``personal.`` key it is handed.

    Continual learning across phases (``continual.method``):

    * ``replay``: entering phase p, the local buffer gets a reservoir sample (``replay_capacity``) of the training
      steps of phases 0..p-1 next to phase p's own. The sample is recomputed from the seed, so it needs no
      checkpoint.
    * ``ewc``: a gradient hook on every trainable tensor adds ``strength * F * (theta - theta*)`` -- the gradient
      of the EWC penalty -- where F is the diagonal empirical Fisher (mean squared training gradient) of the
      earlier phases and theta* the parameters at the end of the previous phase. F and theta* are checkpointed.
    """

    def __init__(self, agent: Any, device: DeviceConfig, profile: DeviceProfile, lora_scale: float, *,
                 continual: ContinualConfig | None = None, seed: int = 0):
        self.agent, self.device_id, self.profile = agent, device.id, profile
        self.tasks = tuple(device.tasks) or tuple(_get(agent, "tasks", default=()))
        self.modalities = tuple(_get(agent, "modalities", default=profile.modalities))
        self.lora_scale = float(lora_scale)
        self.continual = continual or ContinualConfig()
        self.seed = seed
        self._phase: int | None = None
        self._fisher: dict[str, torch.Tensor] = {}
        self._anchor: dict[str, torch.Tensor] = {}
        self._sq: dict[str, torch.Tensor] = {}
        self._n: dict[str, int] = {}
        if self.continual.method == "ewc":
            model = getattr(agent, "model", None)
            if model is None:
                raise FederationError(f"{self.device_id}: EWC needs the agent's model (agent.model)")
            self._params = {n: p for n, p in model.named_parameters() if p.requires_grad}
            for name, param in self._params.items():
                param.register_hook(lambda g, name=name, param=param: self._ewc_hook(name, param, g))

    # -- continual learning ------------------------------------------------------------------------------
    def _ewc_hook(self, name: str, param: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        g = grad.detach()
        self._sq[name] = self._sq.get(name, torch.zeros_like(g)) + g.pow(2)
        self._n[name] = self._n.get(name, 0) + 1
        if name in self._fisher:
            return grad + self.continual.ewc_strength * self._fisher[name] * (param.detach() - self._anchor[name])
        return grad

    def _consolidate(self) -> None:
        for name, param in self._params.items():
            if self._n.get(name):
                f = self._sq[name] / self._n[name]
                self._fisher[name] = self._fisher.get(name, torch.zeros_like(f)) + f
            self._anchor[name] = param.detach().clone()
        self._sq, self._n = {}, {}

    def set_phase(self, phase: int) -> None:
        setter = getattr(self.agent, "set_phase", None)
        if setter is None:
            return
        if self.continual.method == "ewc" and self._phase is not None and phase != self._phase:
            self._consolidate()
        setter(phase)
        if self.continual.method == "replay" and phase > 0:
            earlier = getattr(self.agent, "_phases", [])[:phase]
            buf: ReplayBuffer[Any] = ReplayBuffer(self.continual.replay_capacity, seed=self.seed)
            for train_items, _ in earlier:
                buf.extend(train_items)
            self.agent.buffer.extend(buf.items)
        self._phase = int(phase)

    def local_train(self, steps: int, seed: int) -> TrainReport:
        rep = self.agent.local_train(steps=steps, seed=seed)
        gflop = _get(rep, "compute_gflop", "gflop")
        if gflop is None:
            flops = _get(rep, "flops", "compute_flops")
            if flops is None:
                raise FederationError(f"{self.device_id}: the agent's training report carries no compute figure "
                                      "(compute_gflop or flops); the deadline and energy model need it")
            gflop = float(flops) / 1e9
        return TrainReport(num_samples=int(_get(rep, "num_samples", "samples", default=1)),
                           loss=float(_get(rep, "loss", "train_loss", default=float("nan"))), steps=steps,
                           compute_gflop=float(gflop), wall_time_s=float(_get(rep, "wall_time_s", default=0.0)),
                           storage_bytes=self._storage_bytes())

    def _storage_bytes(self) -> int | None:
        metrics = getattr(self.agent, "metrics", None)
        if metrics is None:
            return None
        return int(metrics(with_gain=False).storage_mb * 1024 * 1024)

    def get_update(self) -> dict[str, torch.Tensor]:
        state = dict(self.agent.shared_state())
        personal = [k for k in state if k.startswith("personal.") or ".personal." in k]
        if personal:
            raise FederationError(f"{self.device_id}: shared_state() returned personal tensors {personal[:3]}; "
                                  "personal adapters must never leave the device")
        return state

    def set_update(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self.agent.load_shared_state(dict(tensors))

    def evaluate(self, split: str = "test", phase: int | None = None) -> EvalReport:
        ev = self.agent.evaluate(split=split, phase=phase)
        acc = dict(_get(ev, "accuracy", "accuracy_per_task", default={}))
        return EvalReport(accuracy={k: float(v) for k, v in acc.items()},
                          loss=float(_get(ev, "loss", default=float("nan"))),
                          latency_ms=float(_get(ev, "latency_ms", "inference_latency_ms", default=float("nan"))),
                          num_samples=int(_get(ev, "num_samples", default=0)),
                          per_sample_loss=[float(x) for x in _get(ev, "per_sample_loss", default=[])])

    def position_m(self, phase: int) -> tuple[float, float, float]:
        pos = getattr(self.agent, "position_m", None)
        if pos is None:
            raise AttributeError("position_m")
        x, y, z = pos(phase) if callable(pos) else pos
        return float(x), float(y), float(z)

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        out = {k: v.detach().clone() for k, v in self.agent.state_dict().items() if isinstance(v, torch.Tensor)}
        if self.continual.method == "ewc":
            out.update({f"ewc.fisher.{k}": v.clone() for k, v in self._fisher.items()})
            out.update({f"ewc.anchor.{k}": v.clone() for k, v in self._anchor.items()})
            out.update({f"ewc.sq.{k}": v.clone() for k, v in self._sq.items()})
            out.update({f"ewc.n.{k}": torch.tensor(n) for k, n in self._n.items()})
        out["continual.phase"] = torch.tensor(-1 if self._phase is None else self._phase)
        return out

    def restore_state(self, state: Mapping[str, torch.Tensor]) -> None:
        own = {k: v for k, v in state.items() if not k.startswith(("ewc.", "continual."))}
        self.agent.load_state_dict(own)
        phase = int(state["continual.phase"]) if "continual.phase" in state else -1
        self._phase = None if phase < 0 else phase
        for kind, target in (("fisher", self._fisher), ("anchor", self._anchor), ("sq", self._sq)):
            target.clear()
            target.update({k[len(f"ewc.{kind}."):]: v.clone() for k, v in state.items()
                           if k.startswith(f"ewc.{kind}.")})
        self._n = {k[len("ewc.n."):]: int(v) for k, v in state.items() if k.startswith("ewc.n.")}


def experiment_scenario(cfg: ExperimentConfig) -> Any:
    """The config's scenario with only the experiment's avatars, each wearing the config's device profile."""
    import dataclasses

    from bridge.scenario import load_scenario

    from .scene import device_avatars

    sc = load_scenario(cfg.scenario)
    mapping = device_avatars(cfg, sc)
    by_name = {a.name: a for a in sc.avatars}
    avatars = tuple(dataclasses.replace(by_name[mapping[d.id]], device=d.profile) for d in cfg.devices)
    return dataclasses.replace(sc, avatars=avatars)


def record_experiment_data(cfg: ExperimentConfig, *, progress: bool = False) -> Path:
    """Record (once, cached) ``episode_steps x phases`` scene steps of every experiment device."""
    from agents.pretrain import cache_root, file_lock
    from bridge.cli_sim import record
    from bridge.embedded import SIM_VERSION

    sc = experiment_scenario(cfg)
    steps = cfg.episode_steps * cfg.phases
    key = json.dumps({"scenario": sc.name, "yaml": hashlib.sha256(sc.source_yaml.encode()).hexdigest(),
                      "avatars": [(a.name, a.device) for a in sc.avatars], "steps": steps, "seed": cfg.seed,
                      "sim_version": SIM_VERSION},
                     sort_keys=True)
    out = cache_root() / "federation-data" / f"{sc.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    with file_lock(out.with_name(out.name + ".lock")):
        if not (out / "manifest.json").is_file():
            tmp = out.with_name(out.name + ".recording")
            shutil.rmtree(tmp, ignore_errors=True)
            record(sc, out=tmp, steps=steps, seed=cfg.seed, progress=progress, overwrite=True)
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)
    return out


def _phases(items: list[dict[str, Any]], phases: int, dropout: float, seed: int,
            holdout_every: int = 5) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """Consecutive segments of a device's steps; every ``holdout_every``-th step of a segment is held out.

    ``dropout`` removes each present modality of each step with that probability (seeded): the SHIFT-S switch.
    """
    import random

    rng = random.Random(seed)
    if dropout > 0:
        for it in items:
            for m, present in list(it["present"].items()):
                if present and rng.random() < dropout:
                    it["present"][m] = False
                    it.pop(m, None)
    n = len(items)
    out = []
    for p in range(phases):
        seg = items[p * n // phases:(p + 1) * n // phases]
        out.append(([it for i, it in enumerate(seg) if (i + 1) % holdout_every],
                    [it for i, it in enumerate(seg) if (i + 1) % holdout_every == 0]))
    return out


def build_client_factories(cfg: ExperimentConfig, *, progress: bool = False) -> dict[str, Callable[[], AgentClient]]:
    """Per device, a factory building its agent on its recorded data (see the module docstring).

    The recording and the foundation checkpoint are prepared here, once; the factories only load them, so under
    the Ray executor the workers need the same ``$XRFED_CACHE`` (a shared file system across machines).
    """
    try:
        from agents.pretrain import PretrainConfig, foundation_checkpoint
    except ImportError as exc:
        raise FederationError(f"xrfed run drives the agents package, which is not importable: {exc}") from exc
    data = record_experiment_data(cfg, progress=progress)
    ckpt = foundation_checkpoint(PretrainConfig(preset=cfg.model_preset, scenario=cfg.scenario), progress=progress)
    sc = experiment_scenario(cfg)
    client_ids = {d.id: f"{a.name}-{a.device}" for d, a in zip(cfg.devices, sc.avatars, strict=True)}
    factories: dict[str, Callable[[], AgentClient]] = {}
    for i, dev in enumerate(cfg.devices):
        rank = dev.rank or cfg.lora_rank

        def make(dev: DeviceConfig = dev, rank: int = rank, seed: int = cfg.seed * 1000 + i) -> AgentClient:
            from agents.agent import AgentConfig, DeviceAgent
            from agents.checkpoint import load_checkpoint
            from agents.personalize import PersonalizationConfig
            from agents.train import load_items

            model = load_checkpoint(ckpt)
            pcfg = PersonalizationConfig(method=cfg.tuning, rank=rank, alpha=cfg.lora_alpha,
                                         personal=cfg.personal_adapters)
            profile = get_device(dev.profile)
            agent = DeviceAgent(model, profile, device_id=dev.id, tasks=tuple(dev.tasks) or None,
                                personalization=pcfg, config=AgentConfig(seed=seed))
            items = load_items(data, model.cfg, clients=[client_ids[dev.id]], split="all")
            agent.set_phases(_phases(items, cfg.phases, dev.modality_dropout, seed))
            return AgentClient(agent, dev, profile, pcfg.lora_scale, continual=cfg.continual, seed=seed)

        factories[dev.id] = make
    return factories
