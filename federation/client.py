"""What the round engine needs from a device, and where the device's work runs.

:class:`Client` is the protocol a device's agent satisfies (``federation.agent_client`` adapts the agents
package's ``DeviceAgent`` to it). The engine never calls a client directly: it goes through an *executor* so the
same rounds run in-process (:class:`LocalExecutor`) or with every device as a Ray actor (:class:`RayExecutor`,
Ray imported lazily, an optional extra) when the devices' local training should spread over several cores or
machines.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from bridge.devices import DeviceProfile

from .errors import ExecutorError, UnknownNameError
from .messages import EvalReport, TrainReport

__all__ = ["Client", "Executor", "LocalExecutor", "RayExecutor", "make_executor", "executor_names"]


@runtime_checkable
class Client(Protocol):
    """One device's agent as the federation sees it.

    * ``get_update`` returns the *shared* adapter tensors only (never personal adapters, never the frozen base).
    * ``local_train(steps, seed)`` must be deterministic given ``seed`` so an interrupted run resumes exactly.
    * ``checkpoint_state``/``restore_state`` cover everything the device keeps between rounds (shared and personal
      adapters, optimizer moments, continual-learning state) as tensors.
    * ``set_phase`` switches the data the device trains on (a lighting phase or a task-script segment);
      ``evaluate(split, phase)`` measures on the device's held-out data of that phase (``split="train"`` gives the
      member losses for the membership-inference audit).
    """

    device_id: str
    profile: DeviceProfile
    modalities: tuple[str, ...]
    tasks: tuple[str, ...]
    lora_scale: float

    def local_train(self, steps: int, seed: int) -> TrainReport: ...

    def get_update(self) -> dict[str, torch.Tensor]: ...

    def set_update(self, tensors: Mapping[str, torch.Tensor]) -> None: ...

    def evaluate(self, split: str = "test", phase: int | None = None) -> EvalReport: ...

    def set_phase(self, phase: int) -> None: ...

    def checkpoint_state(self) -> dict[str, torch.Tensor]: ...

    def restore_state(self, state: Mapping[str, torch.Tensor]) -> None: ...


class Executor:
    """Runs a method on many devices' clients and returns the results in the order asked."""

    name = "abstract"

    def info(self, device_id: str) -> dict[str, Any]:
        """The static facts of a device: profile, modalities, tasks, lora_scale."""
        raise TypeError(f"{type(self).__name__} must implement info")

    def call(self, device_id: str, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.map(method, [(device_id, args, kwargs)])[0]

    def map(self, method: str, calls: Sequence[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> list[Any]:
        raise TypeError(f"{type(self).__name__} must implement map")

    @property
    def device_ids(self) -> tuple[str, ...]:
        raise TypeError(f"{type(self).__name__} must implement device_ids")

    def close(self) -> None:
        """Release workers (no-op in-process)."""


def _info(client: Any) -> dict[str, Any]:
    return {"profile": client.profile, "modalities": tuple(client.modalities), "tasks": tuple(client.tasks),
            "lora_scale": float(client.lora_scale)}


class LocalExecutor(Executor):
    """Every client lives in this process; calls run one after another."""

    name = "local"

    def __init__(self, clients: Sequence[Client]):
        self.clients = {c.device_id: c for c in clients}
        if len(self.clients) != len(clients):
            raise ExecutorError("device ids must be unique")

    @property
    def device_ids(self) -> tuple[str, ...]:
        return tuple(self.clients)

    def info(self, device_id: str) -> dict[str, Any]:
        return _info(self.clients[device_id])

    def map(self, method, calls):
        return [getattr(self.clients[dev], method)(*args, **kwargs) for dev, args, kwargs in calls]


class RayExecutor(Executor):
    """Every device's client is a Ray actor built remotely from ``factories[device_id]()``.

    Calls to different devices run concurrently (local training is the expensive part). Tensors travel through
    Ray's object store; Ray connects to an existing cluster when ``address`` is given (``ray start --head`` on
    one machine, ``ray start --address=...`` on the others), else starts a local one.
    """

    name = "ray"

    def __init__(self, factories: Mapping[str, Callable[[], Client]], *, address: str | None = None,
                 num_cpus_per_device: float = 1.0):
        try:
            ray = importlib.import_module("ray")
        except ImportError as exc:
            raise ExecutorError("executor 'ray' needs Ray: pip install 'ray>=2.9'") from exc
        self._ray = ray
        if not ray.is_initialized():
            kw: dict[str, Any] = {}
            if address is None:
                # A local cluster stays on loopback: Ray otherwise binds its GCS and object store to the machine's
                # network address, which a single-machine experiment has no reason to expose.
                kw["_node_ip_address"] = "127.0.0.1"
            ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True, **kw)

        @ray.remote(num_cpus=num_cpus_per_device)
        class _Actor:
            def __init__(self, factory: Callable[[], Client]):
                self.client = factory()

            def info(self) -> dict[str, Any]:
                return _info(self.client)

            def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                return getattr(self.client, method)(*args, **kwargs)

        self._actors = {dev: _Actor.remote(f) for dev, f in factories.items()}  # type: ignore[attr-defined]
        try:
            self._infos = dict(zip(self._actors, ray.get([a.info.remote() for a in self._actors.values()]),
                                   strict=True))
        except Exception as exc:  # Ray wraps the actor's exception
            raise ExecutorError(f"a Ray device actor failed to start: {exc}") from exc

    @property
    def device_ids(self) -> tuple[str, ...]:
        return tuple(self._actors)

    def info(self, device_id: str) -> dict[str, Any]:
        return self._infos[device_id]

    def map(self, method, calls):
        futures = [self._actors[dev].call.remote(method, args, kwargs) for dev, args, kwargs in calls]
        try:
            return self._ray.get(futures)
        except Exception as exc:
            raise ExecutorError(f"Ray call {method!r} failed: {exc}") from exc

    def close(self) -> None:
        for a in self._actors.values():
            self._ray.kill(a)
        self._actors = {}


_EXECUTORS = {"local": LocalExecutor, "ray": RayExecutor}


def executor_names() -> tuple[str, ...]:
    return tuple(_EXECUTORS)


def make_executor(name: str, factories: Mapping[str, Callable[[], Client]], **options: Any) -> Executor:
    """Build an executor by name from per-device client factories (the local one calls them here)."""
    if name == "local":
        return LocalExecutor([f() for f in factories.values()])
    if name == "ray":
        return RayExecutor(factories, **options)
    raise UnknownNameError("executor", name, tuple(_EXECUTORS))
