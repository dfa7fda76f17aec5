"""The bridge from the agents package's ``DeviceAgent`` to the federation's :class:`~federation.client.Client`.

``xrfed run`` and ``xrfed demo`` drive the real per-device agents (the M3T model with peft adapters, trained on
recorded embedded-scene data). The agents package builds one agent per device of an experiment through
``agents.build_federated_agent(device, experiment, scenario, seed)``; this module adapts that agent's API
(``local_train``, ``shared_state``, ``load_shared_state``, ``evaluate``, ``state_dict``/``load_state_dict``) to
the round engine's protocol, converting its reports into :class:`~federation.messages.TrainReport` and
:class:`~federation.messages.EvalReport`. The agents package is imported lazily: the federation core installs
and tests without it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

import torch

from bridge.devices import DeviceProfile, get_device

from .config import DeviceConfig, ExperimentConfig
from .errors import FederationError
from .messages import EvalReport, TrainReport

__all__ = ["AgentClient", "build_client_factories", "AGENT_BUILDER"]

#: ``module:function`` the runner calls to build one device's agent
AGENT_BUILDER = "agents:build_federated_agent"


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    """First present field among ``names`` of a report given as a mapping or an object."""
    for n in names:
        if isinstance(obj, Mapping) and n in obj:
            return obj[n]
        if hasattr(obj, n):
            return getattr(obj, n)
    return default


class AgentClient:
    """Adapts one agent to the :class:`~federation.client.Client` protocol.

    Personal adapters stay inside the agent: ``shared_state()`` is expected to return only the shared adapter
    tensors, and this adapter refuses (rather than silently sends) any ``personal.`` key it is handed.
    """

    def __init__(self, agent: Any, device: DeviceConfig, profile: DeviceProfile, lora_scale: float):
        self.agent, self.device_id, self.profile = agent, device.id, profile
        self.tasks = tuple(device.tasks) or tuple(_get(agent, "tasks", default=()))
        self.modalities = tuple(_get(agent, "modalities", default=profile.modalities))
        self.lora_scale = float(lora_scale)

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
                           compute_gflop=float(gflop), wall_time_s=float(_get(rep, "wall_time_s", default=0.0)))

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

    def set_phase(self, phase: int) -> None:
        setter = getattr(self.agent, "set_phase", None)
        if setter is not None:
            setter(phase)

    def position_m(self, phase: int) -> tuple[float, float, float]:
        pos = getattr(self.agent, "position_m", None)
        if pos is None:
            raise AttributeError("position_m")
        x, y, z = pos(phase) if callable(pos) else pos
        return float(x), float(y), float(z)

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.agent.state_dict().items() if isinstance(v, torch.Tensor)}

    def restore_state(self, state: Mapping[str, torch.Tensor]) -> None:
        self.agent.load_state_dict(dict(state))


def _builder() -> Callable[..., Any]:
    mod_name, _, attr = AGENT_BUILDER.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise FederationError(f"xrfed run drives the agents package, which is not importable: {exc}") from exc
    fn = getattr(mod, attr, None)
    if fn is None:
        raise FederationError(f"xrfed run needs {AGENT_BUILDER} (one DeviceAgent per experiment device); this "
                              "installation's agents package does not provide it")
    return fn


def build_client_factories(cfg: ExperimentConfig) -> dict[str, Callable[[], AgentClient]]:
    """Per device, a factory building its agent (called in the worker process under the Ray executor)."""
    build = _builder()
    factories: dict[str, Callable[[], AgentClient]] = {}
    for i, dev in enumerate(cfg.devices):
        rank = dev.rank or cfg.lora_rank
        profile = get_device(dev.profile)

        def make(dev: DeviceConfig = dev, rank: int = rank, profile: DeviceProfile = profile,
                 seed: int = cfg.seed * 1000 + i) -> AgentClient:
            agent = build(device=dev, experiment=cfg, rank=rank, seed=seed)
            return AgentClient(agent, dev, profile, cfg.lora_alpha / rank)

        factories[dev.id] = make
    return factories
