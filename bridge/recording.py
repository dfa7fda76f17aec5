"""Record a scenario headlessly into a per-device dataset: the library behind ``xrfed record``.

:func:`record` runs the embedded scene and writes one HDF5 file per device per episode plus ``manifest.json`` (see
docs/dataset.md); :func:`check_recording` refuses bad arguments before anything is simulated, so a caller (the CLI,
pretraining, an experiment) can validate first and fail in milliseconds.

``executor="ray"`` shards the episodes across Ray workers (:mod:`bridge.record_ray`, imported only then: Ray is
heavy) and writes the same files and manifest as the serial ``executor="local"``.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import DatasetError

if TYPE_CHECKING:
    from .scenario import Scenario

__all__ = ["record", "check_recording", "EXECUTORS", "GUARD_S", "MAX_STEPS", "MAX_EPISODES", "MAX_GUARD_S",
           "MAX_WORKERS"]

#: Default guard gap, seconds, between each episode's training and test parts (``xrfed record --guard-s``).
GUARD_S = 5.0
#: Largest number of steps per episode (a day at 10 Hz is 864 000).
MAX_STEPS = 1_000_000
#: Largest number of episodes in one recording.
MAX_EPISODES = 10_000
#: Largest guard gap, seconds.
MAX_GUARD_S = 3600.0
#: Where a recording runs: ``local`` (this process, episode after episode) or ``ray`` (episodes on Ray workers).
EXECUTORS = ("local", "ray")
#: Largest number of Ray workers of one recording.
MAX_WORKERS = 1024


def _whole(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= int(value) <= hi:
        raise DatasetError(f"record: {name} must be a whole number between {lo} and {hi}, got {value!r}")
    return int(value)


def check_recording(scenario: str | Scenario, *, steps: int, episodes: int = 1, seed: int = 0,
                    size: int | None = None, guard_s: float = GUARD_S, executor: str = "local",
                    ray_address: str | None = None, workers: int | None = None) -> tuple[Scenario, int]:
    """Validate a recording's arguments without simulating: returns the loaded scenario and the guard in steps.

    Raises :class:`~bridge.errors.DatasetError` (or ScenarioError for the scenario, TransportError for a malformed
    ``ray_address``) naming the argument, its value and what is allowed. Whether ``ray_address`` answers is
    checked when the recording starts, not here.
    """
    from .record import TEST_FRACTION
    from .scenario import load_scenario
    from .splits import temporal_split

    if executor not in EXECUTORS:
        raise DatasetError(f"record: executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if executor != "ray" and (ray_address is not None or workers is not None):
        flag = "ray_address (--ray-address)" if ray_address is not None else "workers (--workers)"
        raise DatasetError(f"record: {flag} needs executor 'ray' (--executor ray), got executor {executor!r}")
    if workers is not None:
        _whole("workers", workers, 1, MAX_WORKERS)
    if ray_address is not None:
        from .record_ray import check_ray_address

        check_ray_address(ray_address, connect=False)
    _whole("steps", steps, 1, MAX_STEPS)
    _whole("episodes", episodes, 1, MAX_EPISODES)
    _whole("seed", seed, 0, 2**32 - 1 - episodes)
    if size is not None:
        _whole("size", size, 16, 2048)
    if isinstance(guard_s, bool) or not isinstance(guard_s, numbers.Real) or not (
            math.isfinite(guard_s) and 0 <= guard_s <= MAX_GUARD_S):
        raise DatasetError(f"record: guard_s must be a number of seconds between 0 and {MAX_GUARD_S:g}, "
                           f"got {guard_s!r}")
    sc = load_scenario(scenario)
    guard_steps = round(guard_s * sc.step_hz)
    where = f"a guard of {guard_s:g} s is {guard_steps} steps at {sc.step_hz:g} Hz"
    if guard_steps >= steps:  # decided here: the split's search for the shortest episode would walk the whole guard
        raise DatasetError(f"record: {where}, not fewer than the episode's {steps} steps (--guard-s / guard_s)")
    try:
        temporal_split(steps, TEST_FRACTION, guard_steps)
    except DatasetError as exc:
        raise DatasetError(f"record: {where}; {exc} (--guard-s / guard_s)") from None
    return sc, guard_steps


def record(scenario: str | Scenario, *, out: str | Path, steps: int, seed: int = 0, episodes: int = 1,
           size: int | None = None, segmentation: bool = False, audio: bool = True, progress: bool = True,
           overwrite: bool = False, guard_s: float = GUARD_S, executor: str = "local",
           ray_address: str | None = None, workers: int | None = None) -> Path:
    """Record ``episodes`` x ``steps`` of ``scenario`` into ``out``; returns the manifest path.

    Every episode's split holds out its last :data:`~bridge.record.TEST_FRACTION` as test with ``guard_s``
    seconds (rounded to whole steps at the scenario's ``step_hz``) before it in neither set; arguments are checked
    by :func:`check_recording` (an episode too short for that guard is refused) before anything is simulated.

    ``executor="ray"`` records the episodes on ``workers`` Ray workers (one CPU each; default: the CPUs free in
    the cluster), joining the cluster at ``ray_address`` or starting a loopback-only local Ray
    (:func:`bridge.record_ray.record_on_ray`); the files and manifest equal this function's serial output except
    the run-specific ``wall_time_ns`` rows.
    """
    sc, guard_steps = check_recording(scenario, steps=steps, episodes=episodes, seed=seed, size=size,
                                      guard_s=guard_s, executor=executor, ray_address=ray_address, workers=workers)
    if executor == "ray":
        from .record_ray import record_on_ray

        return record_on_ray(sc, out=out, steps=steps, seed=seed, episodes=episodes, guard_steps=guard_steps,
                             size=size, segmentation=segmentation, audio=audio, progress=progress,
                             overwrite=overwrite, address=ray_address, workers=workers)
    from tqdm import tqdm

    from .embedded.backend import EmbeddedBackend
    from .record import DatasetWriter

    out = Path(out)
    manifest = None
    with EmbeddedBackend(sc, seed=seed, render_size=(size, size) if size else None,
                         segmentation=segmentation or None, audio=audio) as env:
        for ep in range(episodes):
            frames = env.reset(seed=seed + ep)
            with DatasetWriter(out, scenario_name=sc.name, scenario_yaml=sc.source_yaml, seed=seed + ep,
                               step_dt_s=env.step_dt_s, devices=env.devices, episode=ep, guard_steps=guard_steps,
                               overwrite=overwrite) as writer:
                bar = tqdm(total=steps, desc=f"record {sc.name} ep{ep}", unit="step", disable=not progress)
                writer.write(frames)
                bar.update(1)
                for _ in range(steps - 1):
                    writer.write(env.step())
                    bar.update(1)
                bar.close()
            manifest = writer.manifest_path
    return Path(manifest) if manifest else out / "manifest.json"
