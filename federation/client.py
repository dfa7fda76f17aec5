"""What the round engine needs from a device, and where the device's work runs.

:class:`Client` is the protocol a device's agent satisfies (``agents.agent.DeviceAgent`` does, as it is;
``federation.agent_client`` builds them). The engine never calls a client directly: it goes through an *executor* so the
same rounds run in-process (:class:`LocalExecutor`) or with every device as a Ray actor (:class:`RayExecutor`)
when the devices' local training should spread over several cores or machines. Ray is the ``ray`` extra, part of
the default environment (``scripts/setup.sh`` installs it), and is imported only when a Ray executor is built.
"""

from __future__ import annotations

import importlib
import math
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from bridge.devices import DeviceProfile

from .errors import ExecutorError, UnknownNameError
from .messages import EvalReport, TrainReport

__all__ = ["Client", "DeviceLost", "Executor", "LocalExecutor", "RayExecutor", "make_executor", "executor_names"]


@runtime_checkable
class Client(Protocol):
    """One device's agent as the federation sees it -- exactly the surface of ``agents.agent.DeviceAgent``.

    * ``shared_state`` returns the *shared* adapter tensors only (never personal modules, never the frozen base);
      ``load_shared_state`` installs what the device received (it becomes its global model).
    * ``local_train(steps=..., seed=...)`` must be deterministic given ``seed`` so an interrupted run resumes
      exactly, and returns the agents package's :class:`~agents.reports.TrainReport`.
    * ``state_dict``/``load_state_dict`` cover everything the device keeps between rounds (shared and personal
      adapters, its global model, continual-learning state) as tensors.
    * ``set_phase`` switches the data the device trains on (a lighting phase or a task-script segment);
      ``evaluate(split, phase)`` measures the model the device runs on its held-out data of that phase
      (``split="train"``: the member losses of the membership-inference audit); ``evaluate_global`` the global
      model alone (no personal modules) on the same data.
    """

    device_id: str
    profile: DeviceProfile
    modalities: tuple[str, ...]
    tasks: tuple[str, ...]
    lora_scale: float

    def local_train(self, steps: int | None = None, batch_size: int | None = None,
                    seed: int | None = None) -> TrainReport: ...

    def shared_state(self) -> dict[str, torch.Tensor]: ...

    def load_shared_state(self, state: Mapping[str, torch.Tensor]) -> None: ...

    def evaluate(self, split: str = "test", phase: int | None = None) -> EvalReport: ...

    def evaluate_global(self, split: str = "test", phase: int | None = None) -> EvalReport: ...

    def set_phase(self, phase: int) -> None: ...

    def state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None: ...


@dataclass(frozen=True)
class DeviceLost:
    """The result of a call whose device was lost mid-call (its worker process or node died).

    Returned in place of the result by :meth:`Executor.map` / :meth:`Executor.imap` when ``tolerate_loss`` is set;
    the round engine counts the device as a dropout. The executor rebuilds lost devices in :meth:`Executor.revive`.
    """

    device_id: str
    reason: str


class Executor:
    """Runs a method on many devices' clients and returns the results in the order asked.

    ``map(method, calls)`` runs ``getattr(client, method)(*args, **kwargs)`` for each ``(device_id, args, kwargs)``
    and returns the results in call order; ``imap`` yields ``(call index, result)`` as calls finish (so a caller
    can fold results in, e.g. streaming aggregation, without holding them all). With ``tolerate_loss=True`` a call
    whose device was lost yields a :class:`DeviceLost` instead of raising; other failures always raise.
    ``revive()`` rebuilds lost devices from their factories and returns their ids (the caller re-installs state).
    """

    name = "abstract"

    def info(self, device_id: str) -> dict[str, Any]:
        """The static facts of a device: profile, modalities, tasks, lora_scale."""
        raise TypeError(f"{type(self).__name__} must implement info")

    def call(self, device_id: str, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.map(method, [(device_id, args, kwargs)])[0]

    def map(self, method: str, calls: Sequence[tuple[str, tuple[Any, ...], dict[str, Any]]], *,
            tolerate_loss: bool = False) -> list[Any]:
        out: list[Any] = [None] * len(calls)
        for i, result in self.imap(method, calls, tolerate_loss=tolerate_loss):
            out[i] = result
        return out

    def imap(self, method: str, calls: Sequence[tuple[str, tuple[Any, ...], dict[str, Any]]], *,
             tolerate_loss: bool = False) -> Iterator[tuple[int, Any]]:
        raise TypeError(f"{type(self).__name__} must implement imap")

    def revive(self) -> list[str]:
        """Rebuild devices lost since the last call (none in-process); returns their ids."""
        return []

    @property
    def device_ids(self) -> tuple[str, ...]:
        raise TypeError(f"{type(self).__name__} must implement device_ids")

    def close(self) -> None:
        """Release workers (no-op in-process)."""


def _info(client: Any) -> dict[str, Any]:
    """The static facts of a device; ``personal`` = it has personal modules (the global model differs)."""
    return {"profile": client.profile, "modalities": tuple(client.modalities), "tasks": tuple(client.tasks),
            "lora_scale": float(client.lora_scale), "personal": bool(getattr(client, "has_personal", True))}


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

    def imap(self, method, calls, *, tolerate_loss=False):
        # in-process a failing client is a bug, never a lost device: its exception propagates
        for i, (dev, args, kwargs) in enumerate(calls):
            yield i, getattr(self.clients[dev], method)(*args, **kwargs)


#: seconds to wait for a TCP connection to a given Ray address before calling it unreachable (Ray's own client
#: retries an unreachable GCS for minutes)
_RAY_CONNECT_TIMEOUT_S = 5.0
#: seconds :meth:`RayExecutor.close` waits for Ray to take back the CPUs of the actors it killed
_RAY_RELEASE_TIMEOUT_S = 10.0
#: Ray's switch between multi-node clusters and a loopback-only node; "0" keeps every Ray port on 127.0.0.1
_RAY_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _summary(exc: BaseException) -> str:
    """One line about a Ray failure, naming the device's own exception where Ray wraps one."""
    cause = getattr(exc, "cause", None)  # a failed call: Ray's RayTaskError carries the original exception
    if isinstance(cause, BaseException):
        exc = cause
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if getattr(exc, "actor_init_failed", False) and lines:
        return lines[-1]  # a failed __init__ arrives as text only; the traceback's last line is "Type: message"
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _check_reachable(address: str) -> None:
    """Fail fast, with one line, when a ``host:port`` (or ``ray://host:port``) Ray address does not answer."""
    if address in ("auto", "local"):
        return  # Ray resolves these itself and fails at once when nothing is running
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ExecutorError(f"Ray address {address!r}: expected host:port, ray://host:port, 'auto' or 'local'")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=_RAY_CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ExecutorError(f"cannot reach a Ray cluster at {address!r}: {reason}") from exc


class RayExecutor(Executor):
    """Every device's client is a Ray actor built remotely from ``factories[device_id]()``.

    Calls to different devices run concurrently (local training is the expensive part). Tensors travel through
    Ray's object store. Ray connects to an existing cluster when ``address`` is given (``ray start --head`` on
    one machine, ``ray start --address=...`` on the others), else starts a local one, bound to 127.0.0.1 when
    Ray was not imported before; a process already connected to Ray keeps that connection.

    Each actor computes exactly what the same client computes in-process: ``torch_threads`` (default 1, the
    :class:`~federation.runner.ExperimentRunner`'s default) sets torch's intra-op threads in the actor before its
    client is built; None leaves them at Ray's setting. ``num_cpus_per_device`` is the CPU share each actor holds
    for its lifetime; None gives every device an equal share of the CPUs free in the cluster, at most one. A Ray
    that cannot start or be reached, actors that do not fit, and failing calls raise :class:`ExecutorError`.
    """

    name = "ray"

    def __init__(self, factories: Mapping[str, Callable[[], Client]], *, address: str | None = None,
                 num_cpus_per_device: float | None = None, torch_threads: int | None = 1):
        if address is not None:
            _check_reachable(address)
        elif "ray" not in sys.modules:
            # Ray binds a local node's GCS, raylet and object store to the machine's network address, reachable
            # from the network and without authentication; this switch (read when Ray is imported, inherited by
            # Ray's processes) keeps a single-machine experiment on loopback.
            os.environ.setdefault(_RAY_CLUSTER_ENV, "0")
        try:
            ray = importlib.import_module("ray")
        except ImportError as exc:
            raise ExecutorError("executor 'ray' needs Ray: pip install 'xrfed[ray]' (scripts/setup.sh installs it)"
                                ) from exc
        self._ray = ray
        self._actors: dict[str, Any] = {}
        if not ray.is_initialized():
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            except Exception as exc:
                where = "start a local Ray" if address is None else f"connect to the Ray cluster at {address!r}"
                raise ExecutorError(f"cannot {where}: {_summary(exc)}") from exc
        # An actor holds its CPUs while it lives and one that does not fit waits for them forever: share the
        # CPUs free now (other executors' actors hold theirs) or refuse.
        cpus = float(ray.available_resources().get("CPU", 0.0))
        if num_cpus_per_device is None:
            # Ray keeps resource amounts to 4 decimals: round down so that the shares never exceed the total.
            num_cpus_per_device = min(1.0, math.floor(cpus / max(1, len(factories)) * 1e4) / 1e4)
        if num_cpus_per_device <= 0 or num_cpus_per_device * len(factories) > cpus + 1e-9:
            raise ExecutorError(f"{len(factories)} device actors x {num_cpus_per_device:g} CPUs do not fit the "
                                f"{cpus:g} CPUs free in the Ray cluster; lower num_cpus_per_device or close other "
                                "executors")

        @ray.remote(num_cpus=num_cpus_per_device)
        class _Actor:
            def __init__(self, factory: Callable[[], Client], threads: int | None):
                if threads is not None:
                    torch.set_num_threads(threads)
                self.client = factory()

            def info(self) -> dict[str, Any]:
                return _info(self.client)

            def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                return getattr(self.client, method)(*args, **kwargs)

        self._cpus_held = num_cpus_per_device * len(factories)
        self._actors = {dev: _Actor.remote(f, torch_threads) for dev, f in factories.items()}  # type: ignore[attr-defined]
        try:
            self._infos = dict(zip(self._actors, ray.get([a.info.remote() for a in self._actors.values()]),
                                   strict=True))
        except Exception as exc:  # Ray wraps the actor's exception
            self.close()
            raise ExecutorError(f"a Ray device actor failed to start: {_summary(exc)}") from exc

    @property
    def device_ids(self) -> tuple[str, ...]:
        return tuple(self._actors)

    def info(self, device_id: str) -> dict[str, Any]:
        return self._infos[device_id]

    def imap(self, method, calls, *, tolerate_loss=False):
        # TODO(ray-exec): yield as calls finish (ray.wait), DeviceLost for dead actors when tolerate_loss
        futures = [self._actors[dev].call.remote(method, args, kwargs) for dev, args, kwargs in calls]
        try:
            results = self._ray.get(futures)
        except Exception as exc:
            raise ExecutorError(f"Ray call {method!r} failed: {_summary(exc)}") from exc
        yield from enumerate(results)

    def close(self) -> None:
        """Kill the device actors and wait (a few seconds at most) until Ray has their CPUs back for the next."""
        if not self._actors:
            return
        ray = self._ray
        total = ray.cluster_resources().get("CPU", 0.0)  # a dead actor may have given its CPUs back already
        want = min(total, ray.available_resources().get("CPU", 0.0) + self._cpus_held) - 1e-6
        for a in self._actors.values():
            ray.kill(a)
        self._actors = {}
        deadline = time.monotonic() + _RAY_RELEASE_TIMEOUT_S
        while ray.available_resources().get("CPU", 0.0) < want and time.monotonic() < deadline:
            time.sleep(0.02)


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
