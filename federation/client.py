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
import re
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

__all__ = ["Client", "DeviceLost", "Executor", "LocalExecutor", "RayExecutor", "connect_ray", "make_executor",
           "executor_names", "version_mismatch", "MAX_ACTOR_RESOURCE"]


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
#: Ray keeps resource amounts to 4 decimals
_RAY_RESOURCE_STEP = 1e-4
#: the largest CPU share or custom-resource amount one device actor may ask for
MAX_ACTOR_RESOURCE = 1024.0

#: how Ray says a driver and a cluster run different versions (``ray._private.utils.check_version_info``)
_VERSION_MISMATCH_RE = re.compile(
    r"Version mismatch: The cluster was started with:\s*Ray: (?P<cluster_ray>\S+)\s*Python: (?P<cluster_py>\S+)\s*"
    r"This process on .*? was started with:\s*Ray: (?P<my_ray>\S+)\s*Python: (?P<my_py>\S+)", re.S)


def _summary(exc: BaseException) -> str:
    """One line about a Ray failure, naming the device's own exception where Ray wraps one."""
    cause = getattr(exc, "cause", None)  # a failed call: Ray's RayTaskError carries the original exception
    if isinstance(cause, BaseException):
        exc = cause
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if getattr(exc, "actor_init_failed", False) and lines:
        return lines[-1]  # a failed __init__ arrives as text only; the traceback's last line is "Type: message"
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _loss_reason(exc: BaseException) -> str:
    """Why a device's actor is gone, in a few words (Ray's ActorDiedError text runs over a dozen lines)."""
    text = str(exc)
    if "ray.kill" in text:
        why = "its actor was killed"
    elif "node" in text.lower() and ("died" in text.lower() or "dead" in text.lower()):
        why = "its Ray node died"
    elif "exit" in text.lower() or "crash" in text.lower() or "SIGKILL" in text:
        why = "its worker process died"
    else:
        why = "its actor died"
    return f"{why} ({type(exc).__name__})"


def version_mismatch(text: str, address: str | None) -> str | None:
    """Ray's multi-line version-mismatch report as one line (None when ``text`` is not one)."""
    m = _VERSION_MISMATCH_RE.search(text)
    if m is None:
        return None
    where = "the Ray cluster" if address is None else f"the Ray cluster at {address!r}"
    return (f"Ray version mismatch: {where} runs Ray {m['cluster_ray']} on Python {m['cluster_py']}, this driver "
            f"Ray {m['my_ray']} on Python {m['my_py']}; install the same Ray and Python on every machine")


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


def connect_ray(address: str | None = None) -> Any:
    """The ``ray`` module, connected: to the cluster at ``address`` (``host:port`` of a ``ray start --head``,
    ``ray://host:port``, ``auto``), else to a local Ray started here, bound to 127.0.0.1 when Ray was not
    imported before. A process already connected keeps its connection. An unreachable address, a Ray that cannot
    start and a driver whose Ray or Python version differs from the cluster's raise a one-line
    :class:`ExecutorError` (the runner calls this before it records or builds anything)."""
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
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except Exception as exc:
            mismatch = version_mismatch(str(exc), address)
            if mismatch is not None:
                raise ExecutorError(mismatch) from exc
            where = "start a local Ray" if address is None else f"connect to the Ray cluster at {address!r}"
            raise ExecutorError(f"cannot {where}: {_summary(exc)}") from exc
    return ray


def _free_per_node(ray: Any) -> dict[str, dict[str, float]]:
    """Each live node's free resources (Ray's developer API; the cluster-wide total as one node without it)."""
    try:
        state = importlib.import_module("ray._private.state")
        nodes = state.available_resources_per_node()
    except Exception:  # a Ray without the developer API: one pool, no per-node packing check
        return {"cluster": dict(ray.available_resources())}
    return {n: {k: float(v) for k, v in r.items()} for n, r in nodes.items()}


def _total_per_node(ray: Any) -> dict[str, dict[str, float]]:
    """Each live node's resources, free or held (as :func:`_free_per_node`)."""
    try:
        state = importlib.import_module("ray._private.state")
        nodes = state.total_resources_per_node()
    except Exception:
        return {"cluster": dict(ray.cluster_resources())}
    return {n: {k: float(v) for k, v in r.items()} for n, r in nodes.items()}


def _default_share(free: Mapping[str, Mapping[str, float]], n: int) -> float:
    """The largest CPU share <= 1 (a multiple of 1e-4) that packs ``n`` actors onto the nodes' free CPUs.

    An actor runs on one node, so a share that fits the cluster's total may not fit node by node (3 actors of
    2/3 CPU on two 1-CPU nodes): the candidates are each node's free CPUs divided by 1..n."""
    cpus = [float(r.get("CPU", 0.0)) for r in free.values()]
    best = 0.0
    for c in cpus:
        for k in range(1, n + 1):
            s = min(1.0, math.floor(c / k / _RAY_RESOURCE_STEP) * _RAY_RESOURCE_STEP)
            if s > best and sum(math.floor(x / s + 1e-9) for x in cpus) >= n:
                best = s
                break
    return best


def _placement_problem(requests: Mapping[str, Mapping[str, float]],
                       free: Mapping[str, Mapping[str, float]]) -> str | None:
    """None when every device's request (``{"CPU": c, resource: amount}``) fits some node's free resources,
    packed first-fit-decreasing onto the least-loaded node (as SPREAD places them); else what does not fit."""
    have = {k for r in free.values() for k, v in r.items() if v > 0}
    for dev, req in requests.items():
        for k, v in req.items():
            if k != "CPU" and v > 0 and k not in have:
                return (f"device {dev!r} asks for Ray resource {k!r} x {v:g}, which no node of the Ray cluster "
                        f"offers (start a node with ray start --resources='{{\"{k}\": N}}')")
    left = {n: dict(r) for n, r in free.items()}
    for dev, req in sorted(requests.items(), key=lambda kv: (-sum(kv[1].values()), kv[0])):
        if _take(req, left) is None:
            return f"device {dev!r} ({_show_request(req)}) fits no node"
    return None


def _take(req: Mapping[str, float], left: dict[str, dict[str, float]]) -> str | None:
    """Subtract ``req`` from the least-loaded node of ``left`` that fits it; returns that node (None: none fits)."""
    fits = [n for n, r in left.items() if all(r.get(k, 0.0) + 1e-9 >= v for k, v in req.items())]
    if not fits:
        return None
    node = max(fits, key=lambda n: (left[n].get("CPU", 0.0), n))
    for k, v in req.items():
        left[node][k] = left[node].get(k, 0.0) - v
    return node


def _show_request(req: Mapping[str, float]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in req.items())


class RayExecutor(Executor):
    """Every device's client is a Ray actor built remotely from ``factories[device_id]()``.

    Calls to different devices run concurrently (local training is the expensive part) and :meth:`imap` yields
    their results as they finish. Tensors travel through Ray's object store. Ray connects to an existing cluster
    when ``address`` is given (``ray start --head`` on one machine, ``ray start --address=...`` on the others),
    else starts a local one (:func:`connect_ray`).

    Placement: each actor holds ``num_cpus_per_device`` CPUs for its lifetime (None: an equal share of the CPUs
    free in the cluster, at most one, that packs node by node) plus the custom resources ``resources[device_id]``
    asks for (e.g. ``{"quest": 1}`` to put a device on the nodes started with ``--resources='{"quest": 4}'``).
    Actors are spread over the nodes with Ray's SPREAD strategy rather than a placement group: devices are
    independent (no gang scheduling is needed), and a lost device is rebuilt alone by :meth:`revive` on whichever
    node has room -- a placement-group bundle would tie it to the reservation of a node that may be gone. What does
    not fit the free resources node by node is refused up front (an actor that does not fit waits forever).

    Each actor computes exactly what the same client computes in-process: ``torch_threads`` (default 1, the
    :class:`~federation.runner.ExperimentRunner`'s default) sets torch's intra-op threads in the actor before its
    client is built; None leaves them at Ray's setting.

    ``placement_wait_s``: how long to wait for resources that the cluster has but others hold right now (the
    actors of a driver killed a moment ago keep theirs until Ray notices) before refusing; 0 refuses at once.

    Lost devices: Ray does not restart an actor by itself (``max_restarts=0``): a restarted client would silently
    come back fresh in the middle of a round. A call whose actor or node died yields a :class:`DeviceLost`
    (``tolerate_loss``) or raises; the device stays lost until :meth:`revive` rebuilds it from its factory.

    A Ray that cannot start or be reached, a version mismatch, actors that do not fit and failing calls raise
    :class:`ExecutorError`.
    """

    name = "ray"

    def __init__(self, factories: Mapping[str, Callable[[], Client]], *, address: str | None = None,
                 num_cpus_per_device: float | None = None,
                 resources: Mapping[str, Mapping[str, float]] | None = None, torch_threads: int | None = 1,
                 placement_wait_s: float = 0.0):
        self._actors: dict[str, Any] = {}
        self._lost: dict[str, str] = {}
        resources = dict(resources or {})
        unknown = sorted(set(resources) - set(factories))
        if unknown:
            raise ExecutorError(f"resources name devices that do not exist: {unknown[:8]}")
        for dev, res in resources.items():
            for k, v in res.items():
                if k == "CPU" or not isinstance(v, (int, float)) or not 0 < v <= MAX_ACTOR_RESOURCE:
                    raise ExecutorError(f"resources[{dev!r}][{k!r}]: expected a custom resource amount in "
                                        f"(0, {MAX_ACTOR_RESOURCE:g}] (CPUs are num_cpus_per_device), got {v!r}")
        if num_cpus_per_device is not None and not 0 < num_cpus_per_device <= MAX_ACTOR_RESOURCE:
            raise ExecutorError(f"num_cpus_per_device: expected a number in (0, {MAX_ACTOR_RESOURCE:g}], "
                                f"got {num_cpus_per_device!r}")
        ray = connect_ray(address)
        self._ray = ray
        self._factories = dict(factories)
        self._threads = torch_threads
        free = _free_per_node(ray)
        if num_cpus_per_device is None:
            num_cpus_per_device = _default_share(free, len(factories))
        self._requests = {d: {"CPU": float(num_cpus_per_device), **{k: float(v) for k, v in
                                                                     resources.get(d, {}).items()}}
                          for d in factories}
        problem = None if num_cpus_per_device > 0 else "no CPU is free"
        problem = problem or _placement_problem(self._requests, free)
        if problem is not None and placement_wait_s > 0 and _placement_problem(
                self._requests, _total_per_node(ray)) is None:
            # it fits the cluster, only not now: the actors of a driver that was just killed (or an executor
            # closed a moment ago) hold their resources until Ray has noticed -- wait for them a little
            deadline = time.monotonic() + placement_wait_s
            while problem is not None and time.monotonic() < deadline:
                time.sleep(0.1)
                free = _free_per_node(ray)
                problem = _placement_problem(self._requests, free)
        if problem is not None:
            cpus = sum(r.get("CPU", 0.0) for r in free.values())
            per_node = " + ".join(f"{r.get('CPU', 0.0):g}" for r in free.values())
            raise ExecutorError(f"{len(factories)} device actors x {num_cpus_per_device:g} CPUs do not fit the "
                                f"{cpus:g} CPUs free in the Ray cluster ({per_node} on {len(free)} node"
                                f"{'s' if len(free) != 1 else ''}): {problem}; lower num_cpus_per_device, add "
                                "nodes or close other executors")

        class _Actor:
            def __init__(self, factory: Callable[[], Client], threads: int | None):
                if threads is not None:
                    torch.set_num_threads(threads)
                self.client = factory()

            def info(self) -> dict[str, Any]:
                return _info(self.client)

            def node_id(self) -> str:
                return str(importlib.import_module("ray").get_runtime_context().get_node_id())

            def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                return getattr(self.client, method)(*args, **kwargs)

        self._actor_cls = ray.remote(_Actor)
        self._actors = {dev: self._spawn(dev) for dev in factories}
        try:
            self._infos = dict(zip(self._actors, ray.get([a.info.remote() for a in self._actors.values()]),
                                   strict=True))
        except Exception as exc:  # Ray wraps the actor's exception
            self.close()
            raise ExecutorError(f"a Ray device actor failed to start: {_summary(exc)}") from exc

    def _spawn(self, dev: str) -> Any:
        req = self._requests[dev]
        custom = {k: v for k, v in req.items() if k != "CPU"}
        return self._actor_cls.options(num_cpus=req["CPU"], resources=custom or None, scheduling_strategy="SPREAD",
                                       max_restarts=0).remote(self._factories[dev], self._threads)

    @property
    def device_ids(self) -> tuple[str, ...]:
        return tuple(self._factories)

    @property
    def lost(self) -> dict[str, str]:
        """The devices lost since the last :meth:`revive`, with the reason."""
        return dict(self._lost)

    def info(self, device_id: str) -> dict[str, Any]:
        return self._infos[device_id]

    def nodes(self) -> dict[str, str]:
        """The Ray node id each live device's actor runs on (asked from inside the actor)."""
        live = [d for d in self._actors if d not in self._lost]
        return dict(zip(live, self._ray.get([self._actors[d].node_id.remote() for d in live]), strict=True))

    def imap(self, method, calls, *, tolerate_loss=False):
        ray = self._ray
        lost_errors = (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError, ray.exceptions.NodeDiedError,
                       ray.exceptions.WorkerCrashedError, ray.exceptions.LocalRayletDiedError)
        pending: dict[Any, tuple[int, str]] = {}
        known: list[tuple[int, DeviceLost]] = []
        for i, (dev, args, kwargs) in enumerate(calls):
            if dev not in self._actors:
                raise ExecutorError(f"Ray call {method!r}: unknown device {dev!r}")
            if dev in self._lost:
                if not tolerate_loss:
                    raise ExecutorError(f"Ray device {dev!r} was lost ({self._lost[dev]}); revive() rebuilds it")
                known.append((i, DeviceLost(dev, self._lost[dev])))
                continue
            pending[self._actors[dev].call.remote(method, args, kwargs)] = (i, dev)
        yield from known
        refs = list(pending)
        while refs:
            done, refs = ray.wait(refs, num_returns=1)
            for ref in done:
                i, dev = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except lost_errors as exc:
                    self._lost[dev] = _loss_reason(exc)
                    if not tolerate_loss:
                        raise ExecutorError(f"Ray device {dev!r} was lost during {method!r}: "
                                            f"{self._lost[dev]}") from exc
                    result = DeviceLost(dev, self._lost[dev])
                except Exception as exc:
                    raise ExecutorError(f"Ray call {method!r} failed: {_summary(exc)}") from exc
                yield i, result

    def revive(self) -> list[str]:
        """Rebuild every lost device's actor from its factory (fresh state: the caller re-installs the model),
        on whichever node has room; returns their ids in device order. A device that fits no node now, or whose
        actor fails to start, stays lost with the new reason."""
        if not self._lost:
            return []
        ray = self._ray
        lost = [d for d in self._factories if d in self._lost]
        for d in lost:
            ray.kill(self._actors[d])  # a dead actor: frees nothing, but drops Ray's handle state
        free = _free_per_node(ray)
        spawned: dict[str, Any] = {}
        for d in lost:
            problem = _placement_problem({d: self._requests[d]}, free)
            if problem is not None:
                self._lost[d] = f"cannot be rebuilt now: {problem}"
                continue
            _take(self._requests[d], free)  # the next lost device packs around this one
            spawned[d] = self._spawn(d)
        revived = []
        for d, actor in spawned.items():
            self._actors[d] = actor
            try:
                ray.get(actor.info.remote())
            except Exception as exc:
                self._lost[d] = f"its rebuilt actor failed to start: {_summary(exc)}"
                continue
            del self._lost[d]
            revived.append(d)
        return revived

    def close(self) -> None:
        """Kill the device actors and wait (a few seconds at most) until Ray has their CPUs back for the next."""
        if not self._actors:
            return
        ray = self._ray
        held = sum(self._requests[d]["CPU"] for d in self._actors if d not in self._lost)
        total = ray.cluster_resources().get("CPU", 0.0)  # a dead actor may have given its CPUs back already
        want = min(total, ray.available_resources().get("CPU", 0.0) + held) - 1e-6
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
