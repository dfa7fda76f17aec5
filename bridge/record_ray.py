"""Distributed headless recording on Ray: the engine behind ``xrfed record SCENARIO --executor ray``.

The work is sharded **by episode**: each Ray worker (an actor holding one CPU and its own embedded scene) records
whole episodes, one at a time, each reset with ``seed + episode`` exactly as the serial recorder does. Avatars of one
episode are never split across workers: they share one scene -- they see each other, hear each other's voices
through the room's acoustics, and the labels under their gaze come from ray casts against the same bodies -- so a
worker that simulated only some of them would record different bytes. Every random stream of an episode is
derived from that episode's seed (``numpy.random.SeedSequence(seed + episode)`` spawned per avatar), the scene is
rebuilt to the same state by every reset, so an episode's arrays do not depend on which worker records it or what
it recorded before.

Workers write their episode into a staging area inside the output directory, ``<out>/.partial/ep_NNN/`` (a
one-episode dataset: ``episode_NNN/<device>.h5`` plus its own manifest, each file written under a ``.partial`` name
and renamed when complete). The driver then checks every shard -- its manifest (:func:`~bridge.record.load_manifest`),
the episode, seed and step count it promised, and each file's layout (:func:`~bridge.record.check_device_file`) --
moves the files into place, writes ``manifest.json`` last (the one-episode manifests folded in episode order with
:func:`~bridge.record.merge_manifest`, so it is the serial recorder's manifest) and removes the staging area. A
failing worker fails the recording with the worker's error in one line; the staging area is removed and nothing
in ``<out>`` changes.

A multi-node cluster (``--ray-address``) needs ``<out>`` on a filesystem that every node mounts at the same path:
each worker checks a token the driver wrote into the staging area before it records, and says so when it cannot
see it. A local Ray (no address) binds loopback only.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import BridgeError, DatasetError, TransportError
from .remote import RAY_CONNECT_TIMEOUT_S, init_ray, ray_address_refusal, ray_failure_summary

if TYPE_CHECKING:
    from .scenario import Scenario

__all__ = ["record_on_ray", "check_ray_address", "RayRecordingError", "STAGING_DIR", "RAY_CONNECT_TIMEOUT_S"]

#: Name of the staging area inside the output directory (removed when the recording ends, either way).
STAGING_DIR = ".partial"
_TOKEN = ".token"
_POLL_S = 0.2  # seconds between progress-bar updates
_REPORT_S = 0.1  # a worker reports its step count at most this often (and at the end of each episode)
_KILL_WAIT_S = 10.0  # seconds to wait for killed workers to stop (and give their CPUs back to Ray)


class RayRecordingError(DatasetError):
    """A distributed recording failed: Ray could not start, the workers do not fit, or a worker failed."""


def check_ray_address(address: str, *, connect: bool = True) -> None:
    """Refuse a malformed Ray address (``host:port``, ``ray://host:port``, ``auto`` or ``local``) and, with
    ``connect``, one that does not accept a TCP connection within :data:`RAY_CONNECT_TIMEOUT_S`; one line each."""
    refusal = ray_address_refusal(address, connect=connect)
    if refusal is not None:
        raise TransportError(refusal)


class _Progress:
    """A Ray actor counting the steps every worker has recorded (the driver polls it for its one progress bar)."""

    def __init__(self) -> None:
        self.steps = 0

    def add(self, steps: int) -> None:
        self.steps += steps

    def count(self) -> int:
        return self.steps


class _EpisodeWorker:
    """A Ray actor that records whole episodes of one scenario with its own embedded scene (built at first use).

    It holds one CPU, so it renders in its own thread (no render child process); the bytes are those of a render
    process (the backend consumes its random streams in the same order either way)."""

    def __init__(self, scenario: Scenario, *, seed: int, size: int | None, segmentation: bool, audio: bool,
                 gl: str | None):
        from .embedded.backend import EmbeddedBackend

        self.scenario = scenario
        self.env = EmbeddedBackend(scenario, seed=seed, render_size=(size, size) if size else None, gl=gl,
                                   segmentation=segmentation or None, audio=audio, render_process=False)

    def record(self, episode: int, seed: int, steps: int, guard_steps: int, staging: str, token: str,
               progress: Any) -> int:
        """Record ``episode`` (reset with ``seed``) into ``staging/ep_NNN``; returns the steps written."""
        import ray

        from .record import DatasetWriter

        root = Path(staging)
        try:
            seen = (root / _TOKEN).read_text()
        except OSError:
            seen = None
        if seen != token:
            node = ray.get_runtime_context().get_node_id()[:12]
            raise DatasetError(f"the staging directory {root} is not visible from Ray node {node}: a recording on "
                               f"several machines needs --out on a filesystem every node mounts at the same path")
        sc = self.scenario
        frames = self.env.reset(seed=seed)
        unreported, last = 0, time.monotonic()
        with DatasetWriter(root / _shard_name(episode), scenario_name=sc.name, scenario_yaml=sc.source_yaml,
                           seed=seed, step_dt_s=self.env.step_dt_s, devices=self.env.devices, episode=episode,
                           guard_steps=guard_steps) as writer:
            for k in range(steps):
                writer.write(frames if k == 0 else self.env.step())
                unreported += 1
                if time.monotonic() - last >= _REPORT_S:
                    progress.add.remote(unreported)
                    unreported, last = 0, time.monotonic()
        ray.get(progress.add.remote(unreported))  # counted before this episode is reported done
        return int(writer.n_steps)

    def close(self) -> None:
        self.env.close()


def _shard_name(episode: int) -> str:
    return f"ep_{episode:03d}"


def _connect(address: str | None, workers: int | None) -> tuple[Any, bool]:
    """Ray, initialised (joined at ``address``, or a loopback-only local node); True if this call started it."""
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address is None:
        kw["num_cpus"] = workers or len(os.sched_getaffinity(0))

    def fail(line: str) -> RayRecordingError:
        return RayRecordingError(f"record: {line}")

    # "local": a new node, never a `ray start` one found on this machine
    return init_ray(address or "local", fail, **kw)


def _preflight(out: Path, sc: Scenario, episodes: int, guard_steps: int, overwrite: bool,
               device_ids: list[str]) -> None:
    """What the serial recorder would refuse, refused before any worker starts: an output directory holding
    another scenario or guard, or (without ``overwrite``) an episode file that exists already."""
    from .record import MANIFEST_NAME, check_joins, episode_file_name, load_manifest

    manifest = out / MANIFEST_NAME
    if manifest.exists():
        check_joins(load_manifest(manifest), manifest, scenario_name=sc.name, guard_steps=guard_steps)
    if not overwrite:
        for ep in range(episodes):
            for dev in device_ids:
                path = out / episode_file_name(ep, dev)
                if path.exists():
                    raise DatasetError(f"{path} already exists; choose another output directory or episode, or "
                                       f"pass overwrite=True (--overwrite)")


def _check_shard(shard: Path, episode: int, seed: int, steps: int, device_ids: list[str]) -> dict[str, Any]:
    """A worker's one-episode dataset, checked as hostile input: its manifest, the episode, seed and step count
    it was asked for, every device's file and each file's layout. Returns the shard's manifest."""
    from .record import _open_h5, check_device_file, dataset_file, load_manifest

    m = load_manifest(shard)
    eps = [(e["episode"], e["seed"], e["n_steps"]) for e in m["episodes"]]
    if eps != [(episode, seed, steps)]:
        raise DatasetError(f"{shard}: expected episode {episode} (seed {seed}, {steps} steps), got {eps}")
    got = sorted(c["client_id"] for c in m["clients"])
    if got != sorted(device_ids):
        raise DatasetError(f"{shard}: expected the devices {sorted(device_ids)}, got {got}")
    for c in m["clients"]:
        if len(c["files"]) != 1:
            raise DatasetError(f"{shard}: client {c['client_id']!r} lists {len(c['files'])} files, expected 1")
        path = dataset_file(shard, c["files"][0]["path"])
        with _open_h5(path) as h5:
            n = check_device_file(h5, path).n_steps
        if n != steps:
            raise DatasetError(f"{path}: expected {steps} steps, got {n}")
    return m


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():  # a killed worker's last write raced the first pass
        time.sleep(0.2)
        shutil.rmtree(path, ignore_errors=True)


def record_on_ray(sc: Scenario, *, out: str | Path, steps: int, seed: int, episodes: int, guard_steps: int,
                  size: int | None = None, segmentation: bool = False, audio: bool = True, progress: bool = True,
                  overwrite: bool = False, address: str | None = None, workers: int | None = None) -> Path:
    """Record ``episodes`` x ``steps`` of the (already checked) scenario ``sc`` on Ray workers; returns the manifest
    path. The dataset equals the serial recorder's (:func:`bridge.recording.record`) except the run-specific
    ``wall_time_ns`` rows.

    ``address`` joins an existing cluster (checked for reachability first); without it a local, loopback-only Ray
    with ``workers`` CPUs (default: this machine's) is started and shut down at the end; a process already connected
    to Ray keeps its connection. ``workers`` (default: the CPUs free in the cluster) is capped at ``episodes``; each
    worker holds one CPU. Raises :class:`RayRecordingError` (one line) when Ray cannot start or be reached, the
    workers do not fit, or a worker fails; nothing in ``out`` changes then.
    """
    from tqdm import tqdm

    from .embedded.backend import EmbeddedBackend
    from .record import MANIFEST_NAME, load_manifest, merge_manifest, write_manifest

    if address is not None:
        check_ray_address(address)
    out = Path(out)
    with EmbeddedBackend(sc, seed=seed) as probe:  # device ids only: the scene is built by a reset, never here
        device_ids = [d.device_id for d in probe.devices]
    _preflight(out, sc, episodes, guard_steps, overwrite, device_ids)
    ray, started = _connect(address, workers)
    staging = out / STAGING_DIR
    actors: list[Any] = []  # the workers and the progress counter
    pending: dict[Any, int] = {}
    free = 0.0
    try:
        free = float(ray.available_resources().get("CPU", 0.0))
        n = min(episodes, workers if workers is not None else max(1, math.floor(free + 1e-9)))
        if n > free + 1e-9:
            raise RayRecordingError(f"record: {n} Ray workers x 1 CPU do not fit the {free:g} CPUs free in the "
                                    f"Ray cluster; lower --workers")
        if staging.exists():
            _remove(staging)  # left by a recording that was killed: never part of a dataset
        staging.mkdir(parents=True)
        token = secrets.token_hex(16)
        (staging / _TOKEN).write_text(token)
        gl = None
        if address is None and sc.render.gl == "auto":
            from .embedded.gl import select_gl

            gl = select_gl("auto")  # workers on this machine: probe the OpenGL backends once, not in every worker
        counter = ray.remote(num_cpus=0)(_Progress).remote()
        worker_cls = ray.remote(num_cpus=1)(_EpisodeWorker)
        workers_ = [worker_cls.remote(sc, seed=seed, size=size, segmentation=segmentation, audio=audio, gl=gl)
                    for _ in range(n)]
        actors = [counter, *workers_]
        todo = list(range(episodes))
        busy: dict[Any, Any] = {}  # call -> actor

        def start(actor: Any) -> None:
            ep = todo.pop(0)
            ref = actor.record.remote(ep, seed + ep, steps, guard_steps, str(staging), token, counter)
            pending[ref], busy[ref] = ep, actor

        for a in workers_:
            start(a)  # n <= episodes: every worker gets one
        bar = tqdm(total=episodes * steps, desc=f"record {sc.name} on {n} Ray workers", unit="step",
                   disable=not progress)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=_POLL_S)
                bar.update(ray.get(counter.count.remote()) - bar.n)
                for ref in ready:
                    ep = pending.pop(ref)
                    actor = busy.pop(ref)
                    try:
                        ray.get(ref)
                    except Exception as exc:  # Ray wraps the worker's exception (or reports its death)
                        raise RayRecordingError(f"record: episode {ep} failed on a Ray worker: "
                                                f"{ray_failure_summary(exc)}") from None
                    if todo:
                        start(actor)
        finally:
            bar.close()
        manifest_path = out / MANIFEST_NAME
        m = load_manifest(manifest_path) if manifest_path.exists() else None
        shards = []
        for ep in range(episodes):
            shard = staging / _shard_name(ep)
            sm = _check_shard(shard, ep, seed + ep, steps, device_ids)
            m = merge_manifest(m, sm, manifest_path)
            shards.append((shard, sm))
        for shard, sm in shards:
            for c in sm["clients"]:
                rel = c["files"][0]["path"]
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(shard / rel, out / rel)
        assert m is not None  # episodes >= 1
        write_manifest(manifest_path, m)
        return manifest_path
    except BridgeError:
        raise
    except OSError as exc:
        raise DatasetError(f"record: cannot write {out}: {exc.strerror or exc}") from None
    finally:
        for a in actors:
            ray.kill(a)
        if pending:  # a failed recording: wait for the killed workers to stop writing
            ray.wait(list(pending), num_returns=len(pending), timeout=_KILL_WAIT_S)
        _remove(staging)
        if started:
            ray.shutdown()
        elif actors:  # a Ray that outlives this call: give its CPUs back before returning, for the next caller
            deadline = time.monotonic() + _KILL_WAIT_S
            while ray.available_resources().get("CPU", 0.0) < free - 1e-6 and time.monotonic() < deadline:
                time.sleep(0.02)
