"""Pretraining the foundation checkpoint on recorded embedded-scene data, and the reproducible checkpoint cache.

No weights can be downloaded, so xrfed builds its own base model: a multi-task supervised recipe (every task's
head on every step that carries its label, with modality dropout so the model works with any subset of
modalities) on recordings of one or more scenarios, evaluated on the recordings' temporal held-out splits; the
model card states, per task, whether the model beats the majority class there (the tasks it *claims*).

:func:`foundation_checkpoint` is what agents use: it returns the cached checkpoint directory for a recipe
(scenarios and their content, preset, seed, steps, record_steps, ...) under ``$XRFED_CACHE`` (default ``~/.cache/xrfed``)
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
    """The pretraining recipe (saved in the model card).

    ``scenarios``: the scenes recorded for pretraining (names or paths), each for ``record_steps`` steps per
    avatar with its own seed (``seed + PRETRAIN_SEED_OFFSET + i``); several scenes give the model variety (rooms,
    objects, users, devices) beyond any one deployment. ``steps`` optimiser steps of ``batch_size``."""

    preset: str = "small"
    steps: int = 600
    batch_size: int = 32
    learning_rate: float = 2e-3
    seed: int = 0
    scenarios: tuple[str, ...] = ("default",)
    record_steps: int = 400
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
        if isinstance(self.scenarios, str):
            object.__setattr__(self, "scenarios", (self.scenarios,))
        object.__setattr__(self, "scenarios", tuple(self.scenarios))
        if not self.scenarios or not all(isinstance(x, str) and x for x in self.scenarios):
            raise ConfigError("scenarios", "must name at least one scenario", value=self.scenarios)

    def model_config(self) -> ModelConfig:
        extra = {} if self.num_experts is None else {"num_experts": self.num_experts}
        return make_config(self.preset, **extra)


#: the default recipe of the shipped scenario's cached checkpoint (about two minutes on 2 CPU cores)
DEFAULT_PRETRAIN = PretrainConfig()


def cache_root() -> Path:
    return Path(os.environ.get("XRFED_CACHE", "~/.cache/xrfed")).expanduser()


#: bump when the training code changes what a recipe produces (loss, sampling, data pipeline), so cached
#: checkpoints built by older code are not reused. 2: class-balanced loss. 3: recordings with a guard gap.
#: 4: several scenarios, per-task claims on the card. 5: always one intra-op thread.
RECIPE_VERSION = 5

#: torch intra-op threads while pretraining: fixed, so a checkpoint is bit-identical wherever it is built (the
#: order of a float reduction depends on the thread count); the tiny and small presets gain little from more
PRETRAIN_THREADS = 1


def checkpoint_key(cfg: PretrainConfig) -> str:
    """Hash of everything that determines the checkpoint (scenario content, recipe and its code version, model)."""
    from bridge.embedded import SIM_VERSION
    from bridge.scenario import load_scenario

    scs = [load_scenario(name) for name in cfg.scenarios]
    recipe = {**asdict(cfg), "scenarios": [sc.name for sc in scs]}  # a path's location does not matter, its content
    raw = json.dumps({"scenario_hashes": [hashlib.sha256(sc.source_yaml.encode()).hexdigest() for sc in scs],
                      "recipe": recipe, "recipe_version": RECIPE_VERSION, "sim_version": SIM_VERSION,
                      "model": cfg.model_config().to_dict()}, sort_keys=True)
    return f"{'+'.join(sc.name for sc in scs)}-{cfg.preset}-{hashlib.sha256(raw.encode()).hexdigest()[:12]}"


def record_dataset(scenario: str, out: str | os.PathLike[str], *, steps: int, seed: int,
                   progress: bool = False, guard_s: float = 5.0) -> Path:
    """Record ``steps`` of ``scenario`` with the embedded backend into ``out`` (the `xrfed record` path)."""
    from bridge.recording import record

    record(scenario, out=Path(out), steps=steps, seed=seed, progress=progress, overwrite=True, guard_s=guard_s)
    return Path(out)


def _block_bootstrap_margin(preds: Sequence[tuple[int, int, int]], guess: int, *, block: int = 20,
                            resamples: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Balanced accuracy of the model minus the majority class's on the same steps, with a 95 % interval.

    ``preds`` are (item index, label, predicted class) in time order; the interval resamples contiguous blocks of
    ``block`` steps (neighbouring steps are near-duplicates, so single steps would make the interval too narrow).
    Returns (margin, lower, upper)."""
    import numpy as np

    from .reports import balanced_accuracy

    def margin(rows: Sequence[tuple[int, int, int]]) -> float:
        model: dict[int, tuple[int, int]] = {}
        major: dict[int, tuple[int, int]] = {}
        for _, y, p in rows:
            c, n = model.get(y, (0, 0))
            model[y] = (c + int(p == y), n + 1)
            c, n = major.get(y, (0, 0))
            major[y] = (c + int(guess == y), n + 1)
        return balanced_accuracy(model) - balanced_accuracy(major)

    rows = sorted(preds)
    if not rows:
        return float("nan"), float("nan"), float("nan")
    blocks = [rows[i:i + block] for i in range(0, len(rows), block)]
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(resamples):
        pick = rng.integers(len(blocks), size=len(blocks))
        stats.append(margin([r for k in pick for r in blocks[k]]))
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return margin(rows), float(lo), float(hi)


def pretrain(data_dirs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str],
             cfg: PretrainConfig, *, progress: bool = False, log: Any = None) -> dict[str, Any]:
    """Train the base model on every client of one or several recorded datasets; write the checkpoint (weights,
    config, model card); return the card facts.

    The card evaluates the model on each dataset's held-out split (the end of every episode, after its guard gap)
    against the majority class of the training labels, per task: accuracy and balanced accuracy, and the margin of
    balanced accuracy over the majority class with a 95 % block-bootstrap interval. A task is *claimed* when that
    interval lies above zero. Training runs on :data:`PRETRAIN_THREADS` intra-op threads (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(PRETRAIN_THREADS)
    try:
        return _pretrain(data_dirs, out_dir, cfg, progress=progress, log=log)
    finally:
        torch.set_num_threads(threads)


def _pretrain(data_dirs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str],
              cfg: PretrainConfig, *, progress: bool, log: Any) -> dict[str, Any]:
    from bridge.record import load_manifest

    from .batching import items_to_batch
    from .train import class_weights, evaluate_items, label_baselines, load_items, train_steps

    dirs = [Path(data_dirs)] if isinstance(data_dirs, (str, os.PathLike)) else [Path(d) for d in data_dirs]
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    mcfg = cfg.model_config()
    t0 = time.perf_counter()
    train: list[dict[str, Any]] = []
    tests: dict[str, list[dict[str, Any]]] = {}
    for d in dirs:
        train += load_items(d, mcfg, split="train")
        tests[d.name] = load_items(d, mcfg, split="test")
    test = [it for items in tests.values() for it in items]
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
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, desc="pretrain", unit="step")
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
        if bar is not None:
            bar.update(n)
            bar.set_postfix_str(f"loss {st.loss:.3f}")
        if log is not None:
            log(f"pretrain step {done}/{cfg.steps} loss {st.loss:.3f}")
    if bar is not None:
        bar.close()
    ev = evaluate_items(model, test, tasks, keep_predictions=True)
    majority = label_baselines(train, test, tasks)["majority"]
    guesses = {t: _majority_class(train, t) for t in tasks}
    claims: dict[str, dict[str, float | bool]] = {}
    for t in tasks:
        m, lo, hi = _block_bootstrap_margin(ev.predictions.get(t, []), guesses[t], seed=cfg.seed)
        claims[t] = {"margin": m, "lo": lo, "hi": hi, "claimed": bool(lo > 0)}
    per_dataset = {}
    for name, items in tests.items():
        e = evaluate_items(model, items, tasks)
        maj = label_baselines(train, items, tasks)["majority"]
        per_dataset[name] = {"balanced_accuracy": e.balanced_accuracy, "majority_balanced": maj.balanced_accuracy,
                             "macro_balanced_accuracy": e.macro_balanced_accuracy,
                             "majority_macro_balanced": maj.macro_balanced_accuracy}
    manifests = [load_manifest(d) for d in dirs]
    facts = {
        "recipe": asdict(cfg),
        "model_config": mcfg.to_dict(),
        "parameters": model.num_parameters(),
        "data": {"datasets": [d.name for d in dirs], "scenarios": [m.get("scenario") for m in manifests],
                 "seeds": [m.get("seed") for m in manifests],
                 "clients": [c["client_id"] for m in manifests for c in m["clients"]], "train_steps": len(train),
                 "test_steps": len(test), "split": manifests[0].get("split_policy")},
        "heldout_accuracy": ev.accuracy,
        "heldout_balanced_accuracy": ev.balanced_accuracy,
        "heldout_macro_balanced_accuracy": ev.macro_balanced_accuracy,
        "heldout_majority_baseline": majority.accuracy,
        "heldout_majority_balanced": majority.balanced_accuracy,
        "heldout_claims": claims,
        "claimed_tasks": [t for t in tasks if claims[t]["claimed"]],
        "heldout_per_dataset": per_dataset,
        "heldout_classes": {t: len({int(it["labels"][t]) for it in test if t in it["labels"] and int(it["labels"][t]) >= 0})
                            for t in tasks},
        "heldout_counts": ev.counts,
        "final_loss": losses[-1],
        "train_time_s": time.perf_counter() - t0,
        "torch": torch.__version__,
    }
    save_checkpoint(model, out_dir, facts=facts, card=_card(facts))
    return facts


def _majority_class(items: Sequence[dict[str, Any]], task: str) -> int:
    ys = [int(i["labels"][task]) for i in items if task in i["labels"] and int(i["labels"][task]) >= 0]
    freq = collections.Counter(ys)
    return min(freq, key=lambda c: (-freq[c], c)) if freq else -1


def _card(f: dict[str, Any]) -> str:
    r, d = f["recipe"], f["data"]

    def num(x: Any) -> str:
        return "-" if x is None or x != x else f"{x:.3f}"

    rows = []
    for t in f["model_config"]["tasks"]:
        c = f["heldout_claims"][t]
        rows.append(f"| {t} | {num(f['heldout_accuracy'].get(t))} | {num(f['heldout_majority_baseline'].get(t))} | "
                    f"{num(f['heldout_balanced_accuracy'].get(t))} | {num(f['heldout_majority_balanced'].get(t))} | "
                    f"{num(c['margin'])} [{num(c['lo'])}, {num(c['hi'])}] | {'yes' if c['claimed'] else 'no'} | "
                    f"{f['heldout_counts'].get(t, 0)} |")
    per = "\n".join(f"| {name} | {num(v['macro_balanced_accuracy'])} | {num(v['majority_macro_balanced'])} |"
                    for name, v in f["heldout_per_dataset"].items())
    claimed = ", ".join(f["claimed_tasks"]) or "none"
    return f"""# xrfed M3T foundation checkpoint ({r['preset']})

Multi-modal multi-task transformer (agents.model.M3TModel), {f['parameters']:,} parameters, trained from scratch by
`xrfed pretrain` (no downloaded weights).

## Claimed tasks
{claimed}. A task is claimed when the model's balanced accuracy on held-out data beats the majority class's (a
constant answer: at most 1 / classes present) with a 95 % block-bootstrap interval above zero (blocks of 20 steps,
1000 resamples). Macro balanced accuracy over all tasks: {num(f['heldout_macro_balanced_accuracy'])}.

## Data
Scenarios {', '.join(f'`{x}`' for x in d['scenarios'])} recorded with the embedded backend (seeds
{', '.join(map(str, d['seeds']))}), {len(d['clients'])} devices; {d['train_steps']} training steps and
{d['test_steps']} held-out steps ({d['split']}).

## Recipe
Preset `{r['preset']}`, {r['steps']} optimiser steps of batch {r['batch_size']}, AdamW one-cycle max lr
{r['learning_rate']}, seed {r['seed']}, modality dropout {f['model_config']['modality_dropout']}; the loss is the
mean over tasks of the class-weighted (inverse square-root frequency) cross-entropy on labelled steps. Final
training loss {f['final_loss']:.3f}; wall time {f['train_time_s']:.0f} s (torch {f['torch']}).

## Held-out, per task (all scenarios pooled)
| task | accuracy | majority accuracy | balanced accuracy | majority balanced | margin [95 % CI] | claimed | held-out steps |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

## Held-out, per scenario (macro balanced accuracy)
| dataset | model | majority class |
|---|---|---|
{per}

## Limits
Trained on simulated scenes only; accuracy on real devices is unknown. The held-out split is the end of each
recorded episode after a guard gap (temporal), so it measures generalisation over time within the pretraining
scenes, not to other scenes: a deployment in another scene is what federated personalization is for.
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
        dirs = []
        for i, name in enumerate(cfg.scenarios):
            if log is not None:
                log(f"building foundation checkpoint {key}: recording {cfg.record_steps} steps of {name!r}")
            dirs.append(record_dataset(name, tmp / "data" / f"{i}-{Path(name).stem}", steps=cfg.record_steps,
                                       seed=cfg.seed + PRETRAIN_SEED_OFFSET + i, progress=progress,
                                       guard_s=cfg.guard_s))
        pretrain(dirs, tmp, cfg, log=log, progress=progress)
        shutil.rmtree(tmp / "data", ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    if not read_card_facts(out):
        raise AgentError(f"{out}: checkpoint built without its card facts")
    return out
