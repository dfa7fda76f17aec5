"""Building one :class:`~agents.agent.DeviceAgent` per device of a federated experiment (``xrfed run``).

``build_federated_agent(device, experiment, rank, seed)`` is the entry point :mod:`federation.agent_client`
calls (by the name ``agents:build_federated_agent``). Per device it:

1. takes the cached foundation checkpoint of the experiment's scenario and ``model_preset``
   (:func:`agents.pretrain.foundation_checkpoint`; built once, from a different episode than the devices' data);
2. records the experiment's scene once for all devices -- ``episode_steps x phases`` steps, each avatar wearing
   the profile the experiment gives it -- cached under ``$XRFED_CACHE/datasets/<key>`` with a file lock;
3. splits the device's steps into ``phases`` consecutive segments, each with its temporal held-out tail (the last
   20 %), and applies the device's ``modality_dropout`` (seeded) to its data;
4. personalizes with the experiment's ``tuning`` method, LoRA rank ``rank``, ``lora_alpha`` and
   ``personal_adapters``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import shutil
from pathlib import Path
from typing import Any

import torch

from bridge.tasks import TASKS

from .agent import AgentConfig, DeviceAgent, tasks_for_profile
from .checkpoint import load_checkpoint
from .errors import AgentError
from .personalize import PersonalizationConfig
from .pretrain import PretrainConfig, _locked, cache_root, foundation_checkpoint

__all__ = ["build_federated_agent", "experiment_dataset", "split_phases", "HOLDOUT_FRACTION"]

HOLDOUT_FRACTION = 0.2


def _avatar_profiles(experiment: Any) -> dict[str, str]:
    return {(d.avatar or d.id): d.profile for d in experiment.devices}


def experiment_dataset(experiment: Any) -> Path:
    """The experiment's recorded scene (every configured avatar with its configured profile), cached."""
    from bridge.embedded.backend import EmbeddedBackend
    from bridge.record import DatasetWriter
    from bridge.scenario import load_scenario

    sc = load_scenario(experiment.scenario)
    profiles = _avatar_profiles(experiment)
    missing = sorted(set(profiles) - {a.name for a in sc.avatars})
    if missing:
        raise AgentError(f"avatars {missing} are not in scenario {sc.name!r}; it has {[a.name for a in sc.avatars]}")
    avatars = tuple(dataclasses.replace(a, device=profiles[a.name]) for a in sc.avatars if a.name in profiles)
    sc = dataclasses.replace(sc, avatars=avatars)
    steps = experiment.episode_steps * experiment.phases
    from bridge.embedded import SIM_VERSION

    key = hashlib.sha256(json.dumps({"yaml": sc.source_yaml, "avatars": profiles, "steps": steps,
                                     "seed": experiment.seed, "sim_version": SIM_VERSION},
                                    sort_keys=True).encode()).hexdigest()[:16]
    out = cache_root() / "datasets" / f"{sc.name}-{key}"
    with _locked(cache_root() / "datasets" / f"{sc.name}-{key}.lock"):
        if (out / "manifest.json").is_file():
            return out
        tmp = out.with_name(out.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        with EmbeddedBackend(sc, seed=experiment.seed) as env:
            frames = env.reset(seed=experiment.seed)
            with DatasetWriter(tmp, scenario_name=sc.name, scenario_yaml=sc.source_yaml, seed=experiment.seed,
                               step_dt_s=env.step_dt_s, devices=env.devices, episode=0) as writer:
                writer.write(frames)
                for _ in range(steps - 1):
                    writer.write(env.step())
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return out


def split_phases(items: list[dict[str, Any]], phases: int, holdout: float = HOLDOUT_FRACTION
                 ) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """Consecutive phases of (train, test) items; the last ``holdout`` of each phase is its test part."""
    items = sorted(items, key=lambda it: (it["episode"], it["step"]))
    n = len(items)
    out = []
    for p in range(phases):
        seg = items[p * n // phases:(p + 1) * n // phases]
        cut = max(1, int(round(len(seg) * (1 - holdout)))) if len(seg) > 1 else len(seg)
        out.append((seg[:cut], seg[cut:]))
    return out


def _drop_modalities(items: list[dict[str, Any]], p: float, seed: int) -> None:
    if p <= 0:
        return
    rng = random.Random(seed)
    for it in items:
        for m in list(it["present"]):
            if bool(it["present"][m]) and rng.random() < p:
                it["present"][m] = torch.tensor(False)
                it.pop(m, None)


def build_federated_agent(device: Any, experiment: Any, rank: int | None = None, seed: int = 0) -> DeviceAgent:
    """One device's agent for a federated experiment (see the module docstring)."""
    from bridge.devices import get_device

    from .train import load_items

    preset = experiment.model_preset
    ckpt = foundation_checkpoint(PretrainConfig(preset=preset, scenario=experiment.scenario,
                                                seed=experiment.seed, steps=250 if preset != "tiny" else 300))
    model = load_checkpoint(ckpt)
    profile = get_device(device.profile)
    tasks = tuple(device.tasks) or tasks_for_profile(profile, model.cfg.tasks)
    root = experiment_dataset(experiment)
    client = f"{device.avatar or device.id}-{device.profile}"
    items = load_items(root, model.cfg, clients=[client], split="all", modalities=profile.modalities,
                       tasks=[t for t in TASKS if t in model.cfg.tasks])
    _drop_modalities(items, float(device.modality_dropout), seed)
    pcfg = PersonalizationConfig(method=experiment.tuning, rank=int(rank or experiment.lora_rank),
                                 alpha=float(experiment.lora_alpha), personal=bool(experiment.personal_adapters))
    torch.manual_seed(seed)
    agent = DeviceAgent(model, profile, device_id=device.id, tasks=tasks, personalization=pcfg,
                        config=AgentConfig(seed=seed))
    agent.set_phases(split_phases(items, experiment.phases))
    return agent
