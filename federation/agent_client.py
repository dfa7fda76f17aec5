"""Building the experiment's per-device agents: ``xrfed run`` and ``xrfed demo`` drive the real ``DeviceAgent``.

:func:`build_client_factories`

1. records the experiment's episode of the scenario with the embedded backend (``bridge.record.record``; the
   scenario's avatars wear the config's device profiles), cached under ``$XRFED_CACHE/federation-data/<key>``;
2. takes the foundation checkpoint of the config's model preset (``agents.pretrain.foundation_checkpoint``,
   built once and cached; its recording uses a different seed, so no device is evaluated on pretraining data);
3. per device, builds a :class:`agents.agent.DeviceAgent` (profile, tasks, personalization method/rank/alpha,
   personal modules, continual-learning method, a seed derived from the experiment's) -- the agent *is* the
   federation's client, no adapter in between -- and gives it its own recorded steps split into ``phases``
   consecutive segments, each split in time by :func:`split_phases`, with the config's modality dropout applied.

The agents package is imported inside the factories, so the federation machinery can be exercised without
building models (``federation.synthetic``).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bridge.errors import DatasetError
from bridge.seeding import derive_seed
from bridge.splits import temporal_split

from .config import DeviceConfig, ExperimentConfig
from .errors import ConfigError, FederationError

__all__ = ["build_client_factories", "record_experiment_data", "experiment_scenario", "split_phases",
           "guard_steps", "split_policy", "label_persistence_s"]


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
    from bridge.embedded import SIM_VERSION
    from bridge.recording import record

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


def guard_steps(cfg: ExperimentConfig) -> int:
    """The config's guard gap in scene steps (``eval.guard_s`` at the scenario's step rate)."""
    return int(round(cfg.eval.guard_s * experiment_scenario(cfg).step_hz))


def split_policy(cfg: ExperimentConfig) -> str:
    """The held-out split in words, for manifests and reports."""
    return (f"temporal, per phase: each of the {cfg.phases} phases of {cfg.episode_steps} steps keeps its first "
            f"part for training and its last {cfg.eval.test_fraction:.0%} for evaluation, with a guard gap of "
            f"{cfg.eval.guard_s:g} s ({guard_steps(cfg)} steps) between them that belongs to neither")


def label_persistence_s(cfg: ExperimentConfig) -> dict[str, float | None]:
    """Per task, how long the experiment's labels stay correlated with themselves, in seconds
    (:func:`bridge.splits.label_persistence_steps` pooled over the devices running the task; None: the label never
    decorrelates within a device's episode, e.g. the room of a device that stays in one room). The guard gap
    between training and held-out steps is meant to be longer than these."""
    import h5py

    from bridge.record import load_manifest
    from bridge.splits import label_persistence_steps

    data = record_experiment_data(cfg)
    sc = experiment_scenario(cfg)
    man = load_manifest(data)
    client_of = {d.id: f"{a.name}-{a.device}" for d, a in zip(cfg.devices, sc.avatars, strict=True)}
    files = {c["client_id"]: [data / f["path"] for f in c["files"]] for c in man["clients"]}
    seqs: dict[str, list[Any]] = {}
    for d in cfg.devices:
        for path in files.get(client_of[d.id], []):
            with h5py.File(path, "r") as h5:
                for t in d.tasks or list(h5["labels"]):
                    if t in h5["labels"]:
                        seqs.setdefault(t, []).append(h5["labels"][t][:])
    out: dict[str, float | None] = {}
    for t, ss in sorted(seqs.items()):
        cap = max(len(x) for x in ss) - 1
        steps = label_persistence_steps(ss)
        out[t] = None if steps >= cap else steps / sc.step_hz
    return out


def split_phases(items: Sequence[dict[str, Any]], phases: int, *, test_fraction: float, guard: int,
                 dropout: float = 0.0, seed: int = 0) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """Consecutive phases of a device's time-ordered steps, each split in time into (train, test).

    Phase p is ``items[p*n//phases : (p+1)*n//phases]``; inside it :func:`bridge.record.temporal_split` keeps
    the first rows for training, drops ``guard`` rows, and holds out the last ``test_fraction``. ``dropout``
    removes each present modality of each step with that probability (seeded): the SHIFT-S switch.
    """
    rng = random.Random(seed)
    items = list(items)
    if dropout > 0:
        for it in items:
            for m, present in list(it["present"].items()):
                if bool(present) and rng.random() < dropout:
                    it["present"][m] = False
                    it.pop(m, None)
    n = len(items)
    out = []
    for p in range(phases):
        seg = items[p * n // phases:(p + 1) * n // phases]
        rows = temporal_split(len(seg), test_fraction, guard)
        (tr0, tr1), (te0, te1) = rows["train"], rows["test"]
        out.append((seg[tr0:tr1], seg[te0:te1]))
    return out


def build_client_factories(cfg: ExperimentConfig, *, progress: bool = False) -> dict[str, Callable[[], Any]]:
    """Per device, a factory building its agent on its recorded data (see the module docstring).

    The recording and the foundation checkpoint are prepared here, once; the factories only load them, so under
    the Ray executor the workers need the same ``$XRFED_CACHE`` (a shared file system across machines). Every
    factory is a pure function of the config: the same device comes out bit-identical in any process.
    """
    try:
        from agents.pretrain import PretrainConfig, foundation_checkpoint
    except ImportError as exc:
        raise FederationError(f"xrfed run drives the agents package, which is not importable: {exc}") from exc
    data = record_experiment_data(cfg, progress=progress)
    f = cfg.foundation
    if f.checkpoint:
        ckpt = Path(f.checkpoint).expanduser()
    else:
        ckpt = foundation_checkpoint(PretrainConfig(
            preset=cfg.model_preset, scenarios=tuple(f.scenarios or (cfg.scenario,)), steps=f.steps,
            record_steps=f.record_steps,
            batch_size=f.batch_size, learning_rate=f.learning_rate, seed=f.seed, guard_s=f.guard_s), progress=progress)
    sc = experiment_scenario(cfg)
    client_ids = {d.id: f"{a.name}-{a.device}" for d, a in zip(cfg.devices, sc.avatars, strict=True)}
    guard = guard_steps(cfg)
    factories: dict[str, Callable[[], Any]] = {}
    for dev in cfg.devices:
        rank = dev.rank or cfg.lora_rank

        def make(dev: DeviceConfig = dev, rank: int = rank) -> Any:
            from agents.agent import AgentConfig, DeviceAgent
            from agents.checkpoint import load_checkpoint
            from agents.personalize import PersonalizationConfig
            from agents.train import load_items

            model = load_checkpoint(ckpt)
            pcfg = PersonalizationConfig(method=cfg.tuning, rank=rank, alpha=cfg.lora_alpha,
                                         targets=tuple(cfg.lora_targets), personal=cfg.personal_adapters,
                                         personal_heads=cfg.personal_heads,
                                         share_all_heads=cfg.share_all_heads)
            acfg = AgentConfig(seed=derive_seed(cfg.seed, "device", dev.id), continual=cfg.continual.method,
                               ewc_strength=cfg.continual.ewc_strength,
                               replay_capacity=cfg.continual.replay_capacity)
            agent = DeviceAgent(model, dev.profile, device_id=dev.id, tasks=tuple(dev.tasks) or None,
                                personalization=pcfg, config=acfg)
            items = load_items(data, model.cfg, clients=[client_ids[dev.id]], split="all")
            try:
                phases = split_phases(items, cfg.phases, test_fraction=cfg.eval.test_fraction, guard=guard,
                                      dropout=dev.modality_dropout, seed=derive_seed(cfg.seed, "dropout", dev.id))
            except DatasetError as exc:
                raise ConfigError("eval", f"cannot split {cfg.episode_steps} steps per phase: {exc}",
                                  value={"test_fraction": cfg.eval.test_fraction, "guard_s": cfg.eval.guard_s}) from None
            agent.set_phases(phases)
            return agent

        factories[dev.id] = make
    return factories
