"""Pretraining the foundation checkpoint on recorded embedded-scene data, and the reproducible checkpoint cache.

No weights can be downloaded, so xrfed builds its own base model: a multi-task supervised recipe (every task's
head on every step that carries its label, with modality dropout so the model works with any subset of
modalities) on a recording of the scenario, evaluated on the recording's temporal held-out split.

:func:`foundation_checkpoint` is what agents use: it returns the cached checkpoint directory for
``(scenario, preset, seed, steps, record_steps)`` under ``$XRFED_CACHE`` (default ``~/.cache/xrfed``)
``/checkpoints/<key>``, building it once (recording included) if it is missing. A file lock makes concurrent
builders (several device processes) wait for one build instead of racing. The pretraining recording uses a seed
offset (:data:`PRETRAIN_SEED_OFFSET`) so the base model never trains on the episode the federated devices are
later evaluated on.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint import CONFIG_NAME, WEIGHTS_NAME, read_card_facts, save_checkpoint
from .config import ModelConfig, make_config
from .errors import AgentError, ConfigError
from .model import M3TModel

__all__ = ["PretrainConfig", "pretrain", "record_dataset", "foundation_checkpoint", "checkpoint_key", "cache_root",
           "PRETRAIN_SEED_OFFSET", "DEFAULT_PRETRAIN", "file_lock"]

#: the pretraining recording's seed is ``seed + PRETRAIN_SEED_OFFSET`` (never the federated devices' episode)
PRETRAIN_SEED_OFFSET = 7919


@dataclass(frozen=True)
class PretrainConfig:
    """The pretraining recipe (saved in the model card). ``record_steps`` = scene steps recorded per device."""

    preset: str = "small"
    steps: int = 250
    batch_size: int = 32
    learning_rate: float = 2e-3
    seed: int = 0
    scenario: str = "default"
    record_steps: int = 240
    num_experts: int | None = None
    #: seconds between the recording's training and held-out steps (``xrfed record --guard-s``)
    guard_s: float = 5.0

    def __post_init__(self) -> None:
        for n in ("steps", "batch_size", "record_steps"):
            v = getattr(self, n)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(n, "must be an integer >= 1", value=v)
        if not self.learning_rate > 0:
            raise ConfigError("learning_rate", "must be positive", value=self.learning_rate)
        if not (isinstance(self.guard_s, (int, float)) and self.guard_s >= 0):
            raise ConfigError("guard_s", "must be a number of seconds >= 0", value=self.guard_s)

    def model_config(self) -> ModelConfig:
        extra = {} if self.num_experts is None else {"num_experts": self.num_experts}
        return make_config(self.preset, **extra)


#: the default recipe of the shipped scenario's cached checkpoint (about a minute on 2 CPU cores)
DEFAULT_PRETRAIN = PretrainConfig()


def cache_root() -> Path:
    return Path(os.environ.get("XRFED_CACHE", "~/.cache/xrfed")).expanduser()


#: bump when the training code changes what a recipe produces (loss, sampling, data pipeline), so cached
#: checkpoints built by older code are not reused. 2: class-balanced loss. 3: recordings with a guard gap.
RECIPE_VERSION = 3


def checkpoint_key(cfg: PretrainConfig) -> str:
    """Hash of everything that determines the checkpoint (scenario content, recipe and its code version, model)."""
    from bridge.embedded import SIM_VERSION
    from bridge.scenario import load_scenario

    sc = load_scenario(cfg.scenario)
    raw = json.dumps({"scenario": sc.name, "scenario_hash": hashlib.sha256(sc.source_yaml.encode()).hexdigest(),
                      "recipe": asdict(cfg), "recipe_version": RECIPE_VERSION, "sim_version": SIM_VERSION,
                      "model": cfg.model_config().to_dict()}, sort_keys=True)
    return f"{sc.name}-{cfg.preset}-{hashlib.sha256(raw.encode()).hexdigest()[:12]}"


def record_dataset(scenario: str, out: str | os.PathLike[str], *, steps: int, seed: int,
                   progress: bool = False, guard_s: float = 5.0) -> Path:
    """Record ``steps`` of ``scenario`` with the embedded backend into ``out`` (the `xrfed record` path)."""
    from bridge.cli_sim import record

    record(scenario, out=out, steps=steps, seed=seed, progress=progress, overwrite=True, guard_s=guard_s)
    return Path(out)


def _majority(items: Sequence[dict[str, Any]], task: str) -> float:
    ys = [int(i["labels"][task]) for i in items if task in i["labels"] and int(i["labels"][task]) >= 0]
    return collections.Counter(ys).most_common(1)[0][1] / len(ys) if ys else float("nan")


def pretrain(data_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], cfg: PretrainConfig, *,
             progress: bool = False, log: Any = None) -> dict[str, Any]:
    """Train the base model on every client of a recorded dataset; write the checkpoint; return the card facts."""
    from .batching import items_to_batch
    from .train import class_weights, evaluate_items, load_items, train_steps

    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    mcfg = cfg.model_config()
    t0 = time.perf_counter()
    train = load_items(data_dir, mcfg, split="train")
    test = load_items(data_dir, mcfg, split="test")
    tasks = mcfg.tasks
    model = M3TModel(mcfg)
    weights = class_weights(train, tasks)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.learning_rate, total_steps=cfg.steps,
                                                pct_start=0.1)
    losses: list[float] = []
    calls = [0]
    chunk = max(1, cfg.steps // 10)
    done = 0
    while done < cfg.steps:
        n = min(chunk, cfg.steps - done)

        def next_batch() -> dict[str, Any]:
            if calls[0]:  # the scheduler steps after each optimiser step (the batch is drawn before it)
                sched.step()
            calls[0] += 1
            return items_to_batch([train[rng.randrange(len(train))] for _ in range(cfg.batch_size)], tasks)

        st = train_steps(model, next_batch, n, tasks, opt, weights=weights)
        losses.append(st.loss)
        done += n
        if log is not None:
            log(f"pretrain step {done}/{cfg.steps} loss {st.loss:.3f}")
    ev = evaluate_items(model, test, tasks)
    from bridge.record import load_manifest

    man = load_manifest(data_dir)
    facts = {
        "recipe": asdict(cfg),
        "model_config": mcfg.to_dict(),
        "parameters": model.num_parameters(),
        "data": {"dataset": Path(data_dir).name, "scenario": man.get("scenario"), "seed": man.get("seed"),
                 "clients": [c["client_id"] for c in man["clients"]], "train_steps": len(train),
                 "test_steps": len(test), "split": man.get("split_policy")},
        "heldout_accuracy": ev.accuracy,
        "heldout_balanced_accuracy": ev.balanced_accuracy,
        "heldout_majority_baseline": {t: _majority(test, t) for t in tasks},
        "heldout_classes": {t: len({int(it["labels"][t]) for it in test if t in it["labels"] and int(it["labels"][t]) >= 0})
                            for t in tasks},
        "heldout_counts": ev.counts,
        "final_loss": losses[-1],
        "train_time_s": time.perf_counter() - t0,
        "torch": torch.__version__,
    }
    save_checkpoint(model, out_dir, facts=facts, card=_card(facts))
    return facts


def _card(f: dict[str, Any]) -> str:
    r, d = f["recipe"], f["data"]
    rows = "\n".join(
        f"| {t} | {f['heldout_accuracy'].get(t, float('nan')):.3f} | {f['heldout_majority_baseline'][t]:.3f} | "
        f"{f.get('heldout_balanced_accuracy', {}).get(t, float('nan')):.3f} | "
        f"{1.0 / max(1, f.get('heldout_classes', {}).get(t, 1)):.3f} | "
        f"{f['heldout_counts'].get(t, 0)} |" for t in f["model_config"]["tasks"])
    return f"""# xrfed M3T foundation checkpoint ({r['preset']})

Multi-modal multi-task transformer (agents.model.M3TModel), {f['parameters']:,} parameters, trained from scratch by
`xrfed pretrain` (no downloaded weights).

## Data
Scenario `{d['scenario']}` recorded with the embedded backend, seed {d['seed']}, {len(d['clients'])} devices
({', '.join(d['clients'])}); {d['train_steps']} training steps and {d['test_steps']} held-out steps
({d['split']}).

## Recipe
Preset `{r['preset']}`, {r['steps']} optimiser steps of batch {r['batch_size']}, AdamW one-cycle max lr
{r['learning_rate']}, seed {r['seed']}, modality dropout {f['model_config']['modality_dropout']}; the loss is the
mean over tasks of the class-weighted (inverse square-root frequency) cross-entropy on labelled steps. Final training loss {f['final_loss']:.3f}; wall time
{f['train_time_s']:.0f} s (torch {f['torch']}).

## Held-out accuracy per task
| task | accuracy | majority-class baseline | balanced accuracy | chance (balanced) | held-out steps |
|---|---|---|---|---|---|
{rows}

## Limits
Trained on simulated scenes only; accuracy on real devices is unknown. The held-out split is the end of the same
episode (temporal), so it measures generalisation over time within one scene, not across scenes.
"""


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive lock on ``path`` across processes (building a cached checkpoint or recording once)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def foundation_checkpoint(cfg: PretrainConfig = DEFAULT_PRETRAIN, *, progress: bool = False, log: Any = None,
                          rebuild: bool = False) -> Path:
    """The cached checkpoint directory for ``cfg``, built once (record + pretrain) when missing."""
    key = checkpoint_key(cfg)
    out = cache_root() / "checkpoints" / key
    with file_lock(cache_root() / "checkpoints" / f"{key}.lock"):
        if (out / WEIGHTS_NAME).is_file() and (out / CONFIG_NAME).is_file() and not rebuild:
            return out
        tmp = out.with_name(out.name + ".building")
        shutil.rmtree(tmp, ignore_errors=True)
        data = tmp / "data"
        if log is not None:
            log(f"building foundation checkpoint {key}: recording {cfg.record_steps} steps of {cfg.scenario!r}")
        record_dataset(cfg.scenario, data, steps=cfg.record_steps, seed=cfg.seed + PRETRAIN_SEED_OFFSET,
                       progress=progress, guard_s=cfg.guard_s)
        pretrain(data, tmp, cfg, log=log)
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    if not read_card_facts(out):
        raise AgentError(f"{out}: checkpoint built without its card facts")
    return out
