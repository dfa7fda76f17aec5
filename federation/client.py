"""What the round engine needs from a device, and where the device's work runs.

:class:`Client` is the protocol a device's agent satisfies (``agents.agent.DeviceAgent`` does, as it is;
``federation.agent_client`` builds them). The engine never calls a client directly: it goes through an *executor* so the
same rounds run in-process (:class:`LocalExecutor`) or with the devices hosted by Ray actors, a few devices per
actor process (:class:`RayExecutor`), when the devices' local training should spread over several cores or
machines. Ray is the ``ray`` extra, part of
the default environment (``scripts/setup.sh`` installs it), and is imported only when a Ray executor is built.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from bridge.devices import DeviceProfile
from bridge.remote import init_ray, ray_address_refusal, ray_failure_summary
from bridge.remote import ray_version_mismatch as version_mismatch

from .errors import ExecutorError, UnknownNameError
from .messages import EvalReport, TrainReport

__all__ = ["Client", "DeviceLost", "Executor", "LocalExecutor", "RayExecutor", "connect_ray", "make_executor",
           "executor_names", "version_mismatch", "MAX_ACTOR_RESOURCE", "MAX_DEVICES_PER_ACTOR"]


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


#: seconds :meth:`RayExecutor.close` waits for Ray to take back the CPUs of the actors it killed
_RAY_RELEASE_TIMEOUT_S = 10.0
#: Ray keeps resource amounts to 4 decimals
_RAY_RESOURCE_STEP = 1e-4
#: the largest CPU share or custom-resource amount one device actor may ask for
MAX_ACTOR_RESOURCE = 1024.0
#: how many tasks carry one imap's calls to one actor (see :meth:`RayExecutor.imap`)
_BATCHES_PER_ACTOR = 1
#: the most devices one actor process may host
MAX_DEVICES_PER_ACTOR = 4096
#: what one actor process costs before its devices (Python, torch and Ray's worker: 368 MiB RSS, 257 MiB PSS
#: measured with the synthetic devices in bench/scale.json; an agent's model and data come on top), bytes --
#: the unit of the automatic rule's memory budget
ACTOR_FOOTPRINT_BYTES = 512 * 2**20
#: the share of a node's Ray ``memory`` resource the automatic rule lets actor processes' base footprint take
#: (the rest is for the devices' own models and data)
_ACTOR_MEMORY_SHARE = 0.5

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


def connect_ray(address: str | None = None) -> Any:
    """The ``ray`` module, connected: to the cluster at ``address`` (``host:port`` of a ``ray start --head``,
    ``ray://host:port``, ``auto``), else to a local Ray started here, bound to 127.0.0.1 when Ray was not
    imported before. A process already connected keeps its connection. An unreachable address, a Ray that cannot
    start and a driver whose Ray or Python version differs from the cluster's raise a one-line
    :class:`ExecutorError` (the runner calls this before it records or builds anything)."""
    if address is not None:
        refusal = ray_address_refusal(address)
        if refusal is not None:
            raise ExecutorError(refusal)
    return init_ray(address, ExecutorError, include_dashboard=False, log_to_driver=False)[0]


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
    """None when every actor's request (``{"CPU": c, resource: amount}``, keyed by what the message calls the
    actor, e.g. ``device 'd0'``) fits some node's free resources, packed first-fit-decreasing onto the least-loaded
    node (as SPREAD places them); else what does not fit."""
    have = {k for r in free.values() for k, v in r.items() if v > 0}
    for who, req in requests.items():
        for k, v in req.items():
            if k != "CPU" and v > 0 and k not in have:
                return (f"{who} asks for Ray resource {k!r} x {v:g}, which no node of the Ray cluster "
                        f"offers (start a node with ray start --resources='{{\"{k}\": N}}')")
    left = {n: dict(r) for n, r in free.items()}
    for who, req in sorted(requests.items(), key=lambda kv: (-sum(kv[1].values()), kv[0])):
        if _take(req, left) is None:
            return f"{who} ({_show_request(req)}) fits no node"
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


def _auto_actor_count(free: Mapping[str, Mapping[str, float]], n_devices: int) -> int:
    """How many actor processes host ``n_devices`` devices when ``devices_per_actor`` is automatic.

    The rule: one actor per whole free CPU of each node -- an actor runs its devices' calls one after another on
    one torch thread, so one per CPU keeps every CPU busy, and each actor more would only add a process
    (~:data:`ACTOR_FOOTPRINT_BYTES`) and more scheduling -- but no more on a node than half its free Ray memory
    holds at :data:`ACTOR_FOOTPRINT_BYTES` each; at least one actor, at most one per device."""
    total = 0
    for r in free.values():
        by_cpu = int(float(r.get("CPU", 0.0)) + 1e-9)
        mem = float(r.get("memory", 0.0))
        by_mem = int(_ACTOR_MEMORY_SHARE * mem // ACTOR_FOOTPRINT_BYTES) if mem > 0 else by_cpu
        total += min(by_cpu, by_mem)
    return max(1, min(n_devices, total))


def _plan_groups(devices: Sequence[str], resources: Mapping[str, Mapping[str, float]],
                 per_actor: int) -> list[tuple[str, ...]]:
    """The devices of each actor: devices asking for the same custom resources (none counts as a kind) are
    grouped together, at most ``per_actor`` to an actor, the kind's devices dealt round-robin over its actors (so
    that consecutive devices -- which the round engine fetches a window at a time -- sit in different actors and
    the actors' sizes differ by at most one). Kinds in first-seen order, devices in the given order."""
    kinds: dict[tuple[tuple[str, float], ...], list[str]] = {}
    for d in devices:
        kinds.setdefault(tuple(sorted((k, float(v)) for k, v in resources.get(d, {}).items())), []).append(d)
    groups: list[tuple[str, ...]] = []
    for members in kinds.values():
        k = -(-len(members) // per_actor)
        groups.extend(tuple(members[j::k]) for j in range(k))
    return groups


def _group_label(group: Sequence[str]) -> str:
    """How messages name an actor: its device, or its first devices and how many it hosts."""
    if len(group) == 1:
        return f"device {group[0]!r}"
    shown = ", ".join(repr(d) for d in group[:3])
    return f"the actor of devices {shown}{', ...' if len(group) > 3 else ''} ({len(group)} devices)"


def _tensor_to_wire(t: torch.Tensor) -> tuple[Any, ...]:
    """A CPU tensor as a NumPy array (Ray ships those as raw buffers) plus its dtype and grad flag; other tensors
    (bfloat16 has no NumPy dtype, GPU and meta tensors) as torch's own pickle."""
    if t.device.type == "cpu" and t.layout == torch.strided and t.dtype in _WIRE_DTYPES:
        return ("np", t.detach().contiguous().numpy(), t.requires_grad)
    return ("torch", t)


def _tensor_from_wire(w: tuple[Any, ...]) -> torch.Tensor:
    if w[0] == "torch":
        return w[1]
    t = torch.from_numpy(w[1].copy())  # a copy: arrays from Ray's object store are read-only
    return t.requires_grad_(True) if w[2] else t


#: tensor dtypes that travel as NumPy buffers
_WIRE_DTYPES = (torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.int16, torch.int8,
                torch.uint8, torch.bool)


def _register_tensor_wire(ray: Any) -> None:
    """Make this Ray process ship CPU tensors as NumPy buffers: torch's own pickle costs ~80 us per tensor to load
    (``torch.load`` per storage), which was the driver's largest cost at 256 devices (bench scale: ~200 ms a round).
    Exact: the same bytes, dtype and shape arrive."""
    ray.util.register_serializer(torch.Tensor, serializer=_tensor_to_wire, deserializer=_tensor_from_wire)


class _GroupActor:
    """One Ray actor process hosting a group of device clients (built in it from their factories).

    Ray runs an actor's calls one at a time, in the order one caller submitted them, so the devices of a group
    compute one after another, each exactly as it would alone: every device's state is its own, torch runs
    ``threads`` intra-op threads (set before any client is built)."""

    def __init__(self, factories: Mapping[str, Callable[[], Client]], threads: int | None):
        _register_tensor_wire(importlib.import_module("ray"))
        if threads is not None:
            torch.set_num_threads(threads)
        self.clients = {d: f() for d, f in factories.items()}

    def info(self) -> dict[str, dict[str, Any]]:
        return {d: _info(c) for d, c in self.clients.items()}

    def node_id(self) -> str:
        return str(importlib.import_module("ray").get_runtime_context().get_node_id())

    def call(self, device_id: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return getattr(self.clients[device_id], method)(*args, **kwargs)

    def call_many(self, method: str, calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> list[Any]:
        """``method`` on several of this actor's devices, one after another in the order given."""
        return [getattr(self.clients[d], method)(*args, **kwargs) for d, args, kwargs in calls]


class RayExecutor(Executor):
    """The devices' clients live in Ray actors, ``devices_per_actor`` to an actor process, each client built
    remotely from ``factories[device_id]()``.

    Calls to devices in different actors run concurrently (local training is the expensive part); calls to the
    devices of one actor run one after another in the order asked (one Ray task per actor and call of the
    executor). :meth:`imap` yields every call's result on its own as its actor's calls finish. Tensors travel through Ray's object store. Ray connects to an existing cluster when ``address`` is
    given (``ray start --head`` on one machine, ``ray start --address=...`` on the others), else starts a local
    one (:func:`connect_ray`).

    Grouping: one actor is a whole Python + torch process (~370 MiB resident), so one actor per device stops at a
    few dozen devices per machine. ``devices_per_actor`` None is automatic (:func:`_auto_actor_count`: one actor
    per free CPU of each node, within half the node's memory at :data:`ACTOR_FOOTPRINT_BYTES` per actor, the
    devices split evenly over them); 1 is an actor per device. Devices that ask for different custom resources
    never share an actor (:func:`_plan_groups`).

    Placement: each actor holds, for its lifetime, ``num_cpus_per_device`` CPUs per device it hosts (None: every
    actor an equal share of the CPUs free in the cluster, at most one -- its calls run one at a time -- that packs
    node by node) plus the custom resources its devices ask for in ``resources[device_id]`` (e.g. ``{"quest":
    1}`` per device to put it on the nodes started with ``--resources='{"quest": 4}'``). Actors are spread over
    the nodes with Ray's SPREAD strategy rather than a placement group: groups are independent (no gang
    scheduling is needed), and a lost group is rebuilt alone by :meth:`revive` on whichever node has room -- a
    placement-group bundle would tie it to the reservation of a node that may be gone. What does not fit the free
    resources node by node is refused up front (an actor that does not fit waits forever).

    Each device computes exactly what the same client computes in-process: ``torch_threads`` (default 1, the
    :class:`~federation.runner.ExperimentRunner`'s default) sets torch's intra-op threads in the actor before its
    clients are built; None leaves them at Ray's setting.

    ``placement_wait_s``: how long to wait for resources that the cluster has but others hold right now (the
    actors of a driver killed a moment ago keep theirs until Ray notices) before refusing; 0 refuses at once.

    Lost devices: Ray does not restart an actor by itself (``max_restarts=0``): restarted clients would silently
    come back fresh in the middle of a round. When an actor or its node dies, every device it hosted is lost: a
    call to any of them yields a :class:`DeviceLost` (``tolerate_loss``) or raises, until :meth:`revive` rebuilds
    the group from its factories.

    A Ray that cannot start or be reached, a version mismatch, actors that do not fit and failing calls raise
    :class:`ExecutorError`.
    """

    name = "ray"

    def __init__(self, factories: Mapping[str, Callable[[], Client]], *, address: str | None = None,
                 num_cpus_per_device: float | None = None,
                 resources: Mapping[str, Mapping[str, float]] | None = None, torch_threads: int | None = 1,
                 placement_wait_s: float = 0.0, devices_per_actor: int | None = None):
        self._actors: dict[int, Any] = {}
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
        if devices_per_actor is not None and (not isinstance(devices_per_actor, int) or isinstance(
                devices_per_actor, bool) or not 1 <= devices_per_actor <= MAX_DEVICES_PER_ACTOR):
            raise ExecutorError(f"devices_per_actor: expected an integer in 1..{MAX_DEVICES_PER_ACTOR} (None: "
                                f"automatic), got {devices_per_actor!r}")
        ray = connect_ray(address)
        _register_tensor_wire(ray)
        self._ray = ray
        self._factories = dict(factories)
        self._threads = torch_threads
        free = _free_per_node(ray)
        n = len(factories)
        per_actor = devices_per_actor
        if per_actor is None:
            per_actor = -(-n // _auto_actor_count(free, n)) if n else 1
            if num_cpus_per_device is not None:  # a group must fit one node: its devices' CPUs add up
                biggest = max((float(r.get("CPU", 0.0)) for r in free.values()), default=0.0)
                per_actor = max(1, min(per_actor, int(biggest / num_cpus_per_device + 1e-9)))
        self._groups = _plan_groups(list(factories), resources, per_actor)
        self._group_of = {d: g for g, members in enumerate(self._groups) for d in members}
        share = num_cpus_per_device
        if share is None:
            share = _default_share(free, len(self._groups))
        self._requests: dict[int, dict[str, float]] = {}
        for g, members in enumerate(self._groups):
            cpus = share if num_cpus_per_device is None else num_cpus_per_device * len(members)
            req = {"CPU": float(cpus)}
            for d in members:
                for k, v in resources.get(d, {}).items():
                    req[k] = req.get(k, 0.0) + float(v)
            self._requests[g] = req
        problem = None if share > 0 else "no CPU is free"
        problem = problem or _placement_problem(self._labelled(), free)
        if problem is not None and placement_wait_s > 0 and _placement_problem(
                self._labelled(), _total_per_node(ray)) is None:
            # it fits the cluster, only not now: the actors of a driver that was just killed (or an executor
            # closed a moment ago) hold their resources until Ray has noticed -- wait for them a little
            deadline = time.monotonic() + placement_wait_s
            while problem is not None and time.monotonic() < deadline:
                time.sleep(0.1)
                free = _free_per_node(ray)
                problem = _placement_problem(self._labelled(), free)
        if problem is not None:
            cpus = sum(r.get("CPU", 0.0) for r in free.values())
            per_node = " + ".join(f"{r.get('CPU', 0.0):g}" for r in free.values())
            most = max(r["CPU"] for r in self._requests.values())
            hosts = "" if per_actor == 1 else f" ({n} devices, up to {per_actor} per actor)"
            raise ExecutorError(f"{len(self._groups)} device actors{hosts} x {most:g} CPUs do not fit the "
                                f"{cpus:g} CPUs free in the Ray cluster ({per_node} on {len(free)} node"
                                f"{'s' if len(free) != 1 else ''}): {problem}; lower num_cpus_per_device, add "
                                "nodes or close other executors")

        self._actor_cls = ray.remote(_GroupActor)
        self._actors = {g: self._spawn(g) for g in range(len(self._groups))}
        try:
            infos = ray.get([a.info.remote() for a in self._actors.values()])
        except Exception as exc:  # Ray wraps the actor's exception
            self.close()
            raise ExecutorError(f"a Ray device actor failed to start: {ray_failure_summary(exc)}") from exc
        self._infos = {d: info[d] for d in factories for info in infos if d in info}

    def _labelled(self) -> dict[str, dict[str, float]]:
        return {_group_label(self._groups[g]): req for g, req in self._requests.items()}

    def _spawn(self, g: int) -> Any:
        req = self._requests[g]
        custom = {k: v for k, v in req.items() if k != "CPU"}
        return self._actor_cls.options(num_cpus=req["CPU"], resources=custom or None, scheduling_strategy="SPREAD",
                                       max_restarts=0).remote({d: self._factories[d] for d in self._groups[g]},
                                                              self._threads)

    @property
    def device_ids(self) -> tuple[str, ...]:
        return tuple(self._factories)

    @property
    def groups(self) -> tuple[tuple[str, ...], ...]:
        """The devices each actor hosts, one tuple per actor."""
        return tuple(self._groups)

    @property
    def lost(self) -> dict[str, str]:
        """The devices lost since the last :meth:`revive`, with the reason."""
        return dict(self._lost)

    def info(self, device_id: str) -> dict[str, Any]:
        return self._infos[device_id]

    def nodes(self) -> dict[str, str]:
        """The Ray node id each live device's actor runs on (asked from inside the actor)."""
        live = [g for g, members in enumerate(self._groups) if not any(d in self._lost for d in members)]
        where = dict(zip(live, self._ray.get([self._actors[g].node_id.remote() for g in live]), strict=True))
        return {d: where[self._group_of[d]] for d in self._factories if self._group_of[d] in where}

    def _lose_group(self, g: int, reason: str) -> None:
        for d in self._groups[g]:
            self._lost[d] = reason

    def imap(self, method, calls, *, tolerate_loss=False):
        ray = self._ray
        lost_errors = (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError, ray.exceptions.NodeDiedError,
                       ray.exceptions.WorkerCrashedError, ray.exceptions.LocalRayletDiedError)
        per_actor: dict[int, list[int]] = {}
        known: list[tuple[int, DeviceLost]] = []
        for i, (dev, _, _) in enumerate(calls):
            if dev not in self._group_of:
                raise ExecutorError(f"Ray call {method!r}: unknown device {dev!r}")
            if dev in self._lost:
                if not tolerate_loss:
                    raise ExecutorError(f"Ray device {dev!r} was lost ({self._lost[dev]}); revive() rebuilds it")
                known.append((i, DeviceLost(dev, self._lost[dev])))
                continue
            per_actor.setdefault(self._group_of[dev], []).append(i)
        # An actor's calls travel as one batch, not one task each: a Ray task costs the driver ~0.5 ms to submit
        # and collect, more than a small device call itself. Measured at 8 devices in 2 actors (bench scale's
        # workload, one round): a task per call 100 ms, a streaming generator per actor 65 ms, two batches per
        # actor 53 ms, one batch 45 ms (in-process 25 ms). Each call's result is still yielded on its own, as its
        # actor's batch finishes (with an actor per device: as the call finishes); the engine asks at most
        # FETCH_WINDOW updates at a time, which bounds what a batch holds. Ray runs the tasks one caller submits to
        # an actor in submission order, so the devices' calls keep their order across imap calls.
        pending: dict[Any, list[int]] = {}
        for g, idx in per_actor.items():
            size = max(1, -(-len(idx) // _BATCHES_PER_ACTOR))
            for start in range(0, len(idx), size):
                batch = idx[start:start + size]
                ref = self._actors[g].call_many.remote(method, [calls[i] for i in batch])
                pending[ref] = batch
        yield from known
        refs = list(pending)
        while refs:
            done, refs = ray.wait(refs, num_returns=1)
            for ref in done:
                batch = pending.pop(ref)
                dev = calls[batch[0]][0]
                try:
                    results = ray.get(ref)
                except lost_errors as exc:
                    self._lose_group(self._group_of[dev], _loss_reason(exc))  # the actor took all its devices
                    if not tolerate_loss:
                        raise ExecutorError(f"Ray device {dev!r} was lost during {method!r}: "
                                            f"{self._lost[dev]}") from exc
                    results = [DeviceLost(calls[i][0], self._lost[dev]) for i in batch]
                except Exception as exc:
                    raise ExecutorError(f"Ray call {method!r} failed: {ray_failure_summary(exc)}") from exc
                yield from zip(batch, results, strict=True)

    def revive(self) -> list[str]:
        """Rebuild the actor of every lost device from its group's factories (fresh state: the caller
        re-installs the model), on whichever node has room; returns the revived devices in device order. A group
        that fits no node now, or whose actor fails to start, stays lost with the new reason."""
        if not self._lost:
            return []
        ray = self._ray
        lost = sorted({self._group_of[d] for d in self._lost})
        for g in lost:
            ray.kill(self._actors[g])  # a dead actor: frees nothing, but drops Ray's handle state
        free = _free_per_node(ray)
        spawned: dict[int, Any] = {}
        for g in lost:
            problem = _placement_problem({_group_label(self._groups[g]): self._requests[g]}, free)
            if problem is not None:
                self._lose_group(g, f"cannot be rebuilt now: {problem}")
                continue
            _take(self._requests[g], free)  # the next lost group packs around this one
            spawned[g] = self._spawn(g)
        revived: set[str] = set()
        for g, actor in spawned.items():
            self._actors[g] = actor
            try:
                ray.get(actor.info.remote())
            except Exception as exc:
                self._lose_group(g, f"its rebuilt actor failed to start: {ray_failure_summary(exc)}")
                continue
            for d in self._groups[g]:
                del self._lost[d]
                revived.add(d)
        return [d for d in self._factories if d in revived]

    def close(self) -> None:
        """Kill the actors and wait (a few seconds at most) until Ray has their CPUs back for the next."""
        if not self._actors:
            return
        ray = self._ray
        held = sum(self._requests[g]["CPU"] for g in self._actors
                   if not any(d in self._lost for d in self._groups[g]))
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
