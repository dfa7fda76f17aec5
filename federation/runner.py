"""Experiment runner: a whole experiment into a run directory, checkpointed every round, resumable.

Run directory layout::

    RUN/
      config.yaml            the validated config (a resume must match it)
      metrics.jsonl          one RoundRecord per line (Table 6 figures per device, links, latency, epsilon)
      checkpoint/            the last completed round: engine.json, engine.safetensors, clients/<id>.safetensors
      summary.json           end-of-run figures per device (accuracy, personalization gain, bytes, energy,
                             latency, storage, forgetting, membership-inference AUC, epsilon)
      report.md, report.html, plots/*.png

Crash safety: after round r the metrics line is appended and flushed, *then* the checkpoint is written to a
temporary directory and renamed into place. ``resume`` reloads the checkpoint and truncates ``metrics.jsonl`` to
the checkpointed rounds, so a round interrupted anywhere is re-run from the same state with the same random draws
(everything is seeded from ``(seed, round)``): nothing is lost or counted twice.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .client import Client, Executor, make_executor
from .config import ExperimentConfig
from .continual import forgetting
from .errors import CheckpointError, ExecutorError
from .privacy import loss_threshold_auc, tpr_at_fpr
from .rounds import RoundEngine, RoundRecord
from .strategies import make_strategy

__all__ = ["ExperimentRunner", "phase_of_round", "read_metrics", "read_summary", "with_paradigm"]

ClientFactories = Mapping[str, Callable[[], Client]]
PositionsFn = Callable[[int, int], Mapping[str, Sequence[float]] | None]


def phase_of_round(round_idx: int, rounds: int, phases: int) -> int:
    """Rounds are split evenly across phases (lighting phases / task-script segments), in order."""
    return min(phases - 1, round_idx * phases // rounds)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    p = Path(run_dir) / "metrics.jsonl"
    if not p.is_file():
        raise CheckpointError(f"{run_dir}: no metrics.jsonl (not a run directory?)")
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    p = Path(run_dir) / "summary.json"
    if not p.is_file():
        raise CheckpointError(f"{run_dir}: no summary.json (the run has not finished; resume it with --resume)")
    return json.loads(p.read_text())


def _save_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


class ExperimentRunner:
    """Runs ``config`` into ``run_dir``.

    ``client_factories`` build each device's client (default: the agents package through
    :func:`federation.agent_client.build_client_factories`). ``positions_fn(round, phase)`` gives the avatars'
    world positions (m) for the D2D graph (default: from the clients when they expose ``position_m()``).

    ``torch_threads`` (default 1) caps torch's intra-op threads in this process: the in-process devices train one
    after another on small models that gain nothing from intra-op parallelism, and on a shared 2-core host two
    threads per process oversubscribe the cores (measured: a 7-device decentralized round of the demo took 60 s
    with torch's default threads under load, 0.9 s with one). None leaves torch's setting alone.
    """

    def __init__(self, config: ExperimentConfig, run_dir: str | Path, *,
                 client_factories: ClientFactories | None = None, positions_fn: PositionsFn | None = None,
                 progress: bool = True, torch_threads: int | None = 1):
        self.cfg, self.run_dir, self.progress = config, Path(run_dir), progress
        self.torch_threads = torch_threads
        self._factories = client_factories
        self._positions_fn = positions_fn
        self.executor: Executor | None = None
        self.engine: RoundEngine | None = None
        self.phase_acc: dict[str, dict[str, dict[str, float]]] = {}  # device -> "t" -> "j" -> accuracy

    # -- setup ---------------------------------------------------------------------------------------------
    def _factories_or_default(self) -> ClientFactories:
        if self._factories is not None:
            return self._factories
        from .agent_client import build_client_factories

        return build_client_factories(self.cfg)

    def _build(self) -> None:
        self.executor = make_executor(self.cfg.rounds.executor, self._factories_or_default())
        strategy = make_strategy(self.cfg.aggregator.name, partial=self.cfg.aggregator.partial,
                                 **self.cfg.aggregator.options)
        self.engine = RoundEngine(self.executor, strategy, self.cfg.rounds, seed=self.cfg.seed, dp=self.cfg.dp)
        if self.cfg.rounds.radio_range_m is None and self.cfg.rounds.paradigm != "centralized":
            self.engine.radio_range_m = self._scenario().radio_range_m

    def _scenario(self) -> Any:
        from bridge.scenario import load_scenario

        return load_scenario(self.cfg.scenario)

    def _positions(self, round_idx: int, phase: int) -> Mapping[str, Sequence[float]] | None:
        if self._positions_fn is not None:
            return self._positions_fn(round_idx, phase)
        if self.executor is None or self.cfg.rounds.paradigm == "centralized":
            return None
        try:
            pos = self.executor.map("position_m", [(d, (phase,), {}) for d in self.executor.device_ids])
            return dict(zip(self.executor.device_ids, pos, strict=True))
        except (AttributeError, TypeError, ExecutorError):  # the clients do not know their positions
            from .scene import avatar_positions_m, device_avatars

            scenario = self._scenario()
            return avatar_positions_m(scenario, device_avatars(self.cfg, scenario))

    # -- checkpoints ------------------------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoint"

    def _write_checkpoint(self, completed_round: int) -> None:
        assert self.engine is not None and self.executor is not None
        tmp = self.run_dir / "checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "clients").mkdir(parents=True)
        header, tensors = self.engine.state()
        header = {**header, "completed_round": completed_round, "phase_acc": self.phase_acc}
        (tmp / "engine.json").write_text(json.dumps(header))
        _save_tensors(tmp / "engine.safetensors", tensors)
        ids = self.executor.device_ids
        for d, st in zip(ids, self.executor.map("checkpoint_state", [(d, (), {}) for d in ids]), strict=True):
            _save_tensors(tmp / "clients" / f"{d}.safetensors", st)
        old = self.run_dir / "checkpoint.old"
        shutil.rmtree(old, ignore_errors=True)
        if self.checkpoint_dir.exists():
            os.replace(self.checkpoint_dir, old)
        os.replace(tmp, self.checkpoint_dir)
        shutil.rmtree(old, ignore_errors=True)

    def _load_checkpoint(self) -> int:
        """Restore engine and clients; returns the last completed round (-1 if none was checkpointed)."""
        assert self.engine is not None and self.executor is not None
        ck = self.checkpoint_dir
        if not ck.exists() and (self.run_dir / "checkpoint.old").exists():
            os.replace(self.run_dir / "checkpoint.old", ck)  # killed between the two renames
        if not (ck / "engine.json").is_file():
            return -1
        try:
            header = json.loads((ck / "engine.json").read_text())
            self.engine.load_state(header, load_file(str(ck / "engine.safetensors")))
            calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [(d, (load_file(str(ck / "clients" / f"{d}.safetensors")),), {}) for d in self.executor.device_ids]
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{ck}: unreadable checkpoint: {exc}") from exc
        self.executor.map("restore_state", calls)
        self.phase_acc = header.get("phase_acc", {})
        return int(header["completed_round"])

    # -- running ---------------------------------------------------------------------------------------------
    def run(self, *, resume: bool = False, stop_after: int | None = None) -> dict[str, Any] | None:
        """Run (or resume) the experiment. ``stop_after`` ends after that many rounds *this call* (tests use it
        to simulate an interruption). Returns the summary when the experiment is complete, else None."""
        cfg_path = self.run_dir / "config.yaml"
        metrics_path = self.run_dir / "metrics.jsonl"
        if resume:
            if not cfg_path.is_file():
                raise CheckpointError(f"{self.run_dir}: nothing to resume (no config.yaml)")
            saved = ExperimentConfig.from_yaml(cfg_path.read_text())
            if saved.to_dict() != self.cfg.to_dict():
                raise CheckpointError(f"{self.run_dir}: the run was started with a different config; "
                                      "resume it with its own config.yaml")
        else:
            if metrics_path.exists() or self.checkpoint_dir.exists():
                raise CheckpointError(f"{self.run_dir} already holds a run; pass --resume or choose another --out")
        if self.torch_threads is not None:
            torch.set_num_threads(self.torch_threads)
        self._build()  # before writing anything: a config whose clients cannot be built leaves no run behind
        if not resume:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            cfg_path.write_text(self.cfg.to_yaml())
        assert self.engine is not None and self.executor is not None
        try:
            start = 0
            if resume:
                start = self._load_checkpoint() + 1
                lines = metrics_path.read_text().splitlines() if metrics_path.exists() else []
                kept = [ln for ln in lines if ln.strip() and json.loads(ln)["round"] < start]
                metrics_path.write_text("".join(ln + "\n" for ln in kept))
            total = self.cfg.rounds.rounds
            bar = self._bar(start, total)
            done_now = 0
            for r in range(start, total):
                if stop_after is not None and done_now >= stop_after:
                    return None
                phase = phase_of_round(r, total, self.cfg.phases)
                rec = self.engine.run_round(r, phase=phase, positions_m=self._positions(r, phase))
                if r == total - 1 or phase_of_round(r + 1, total, self.cfg.phases) != phase:
                    self._phase_end(phase)
                with metrics_path.open("a") as fh:
                    fh.write(json.dumps(rec.to_json()) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                self._write_checkpoint(r)
                done_now += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(self._postfix(rec))
            if bar is not None:
                bar.close()
            summary = self._summarise()
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
            from .report import write_report

            write_report(self.run_dir)
            return summary
        finally:
            self.executor.close()

    def _bar(self, start: int, total: int) -> Any:
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=start, desc=f"{self.cfg.name} [{self.cfg.rounds.paradigm}]", unit="round")

    @staticmethod
    def _postfix(rec: RoundRecord) -> str:
        acc = rec.mean("accuracy_global")
        up = rec.links["uplink"]["bytes"] + rec.links["d2d"]["bytes"]
        parts = [f"acc={acc:.3f}" if acc is not None else "acc=-", f"sent={up / 1e3:.1f}kB",
                 f"in={rec.counts.get('participant', 0)}"]
        if rec.epsilon is not None:
            parts.append(f"eps={rec.epsilon:.2f}")
        return " ".join(parts)

    def _phase_end(self, phase: int) -> None:
        """After a phase's last round every device is evaluated on all phases so far (the forgetting matrix)."""
        assert self.executor is not None
        ids = self.executor.device_ids
        for j in range(phase + 1):
            evals = self.executor.map("evaluate", [(d, (), {"phase": j}) for d in ids])
            for d, ev in zip(ids, evals, strict=True):
                self.phase_acc.setdefault(d, {}).setdefault(str(phase), {})[str(j)] = ev.mean_accuracy

    # -- summary -----------------------------------------------------------------------------------------------
    def _summarise(self) -> dict[str, Any]:
        assert self.executor is not None and self.engine is not None
        rows = read_metrics(self.run_dir)
        ids = self.executor.device_ids
        members = self.executor.map("evaluate", [(d, (), {"split": "train"}) for d in ids])
        nonmembers = self.executor.map("evaluate", [(d, (), {"split": "test"}) for d in ids])
        devices: dict[str, Any] = {}
        for d, mem, non in zip(ids, members, nonmembers, strict=True):
            per_round = [r["devices"][d] for r in rows]

            def vals(key: str, per_round: list[dict[str, Any]] = per_round) -> list[float]:
                return [float(x[key]) for x in per_round if x.get(key) is not None]

            accs, gains, lat = vals("accuracy_global"), vals("personalization_gain"), vals("inference_latency_ms")
            phases = self.phase_acc.get(d, {})
            n_ph = len(phases)
            matrix = [[phases[str(t)].get(str(j), 0.0) for j in range(n_ph)] for t in range(n_ph)] if n_ph else []
            storage = vals("storage_bytes")
            devices[d] = {
                "profile": self.engine.profiles[d].name,
                "final_accuracy": accs[-1] if accs else None,
                "accuracy_per_task": per_round[-1].get("accuracy_per_task", {}) if per_round else {},
                "personalization_gain": float(np.mean(gains)) if gains else None,
                "personalization_necessity": (accs[-1] < 0.9) if accs else None,
                "inference_latency_ms": float(np.mean(lat)) if lat else None,
                "train_time_s": float(sum(vals("train_time_s"))),
                "rounds_participated": sum(1 for x in per_round if x["status"] == "participant"),
                "rounds_missed_deadline": sum(1 for x in per_round if x["status"] == "missed_deadline"),
                "storage_mb": (max(storage) / (1024 * 1024)) if storage else None,
                "active_modules": max(vals("active_modules"), default=None),
                "bytes_sent": int(sum(vals("bytes_sent"))),
                "bytes_received": int(sum(vals("bytes_received"))),
                "compute_joules": float(sum(vals("compute_joules"))),
                "comm_joules": float(sum(vals("comm_joules"))),
                "battery_frac": per_round[-1].get("battery_frac") if per_round else None,
                "forgetting": forgetting(matrix)["mean"] if n_ph > 1 else None,
                "mia_auc": loss_threshold_auc(mem.per_sample_loss, non.per_sample_loss)
                if mem.per_sample_loss and non.per_sample_loss else None,
                "mia_tpr_at_fpr_0.1": tpr_at_fpr(mem.per_sample_loss, non.per_sample_loss, 0.1)
                if mem.per_sample_loss and non.per_sample_loss else None,
            }
        links = {lt: {"bytes": sum(r["links"][lt]["bytes"] for r in rows),
                      "joules": sum(r["links"][lt]["joules"] for r in rows)} for lt in ("uplink", "downlink", "d2d")}
        finals = [v["final_accuracy"] for v in devices.values() if v["final_accuracy"] is not None]
        gains_all = [v["personalization_gain"] for v in devices.values() if v["personalization_gain"] is not None]
        forg = [v["forgetting"] for v in devices.values() if v["forgetting"] is not None]
        aucs = [v["mia_auc"] for v in devices.values() if v["mia_auc"] is not None]
        return {
            "name": self.cfg.name,
            "paradigm": self.cfg.rounds.paradigm,
            "aggregator": self.cfg.aggregator.name,
            "rounds": len(rows),
            "mean_final_accuracy": float(np.mean(finals)) if finals else None,
            "mean_personalization_gain": float(np.mean(gains_all)) if gains_all else None,
            "personalization_necessity_rate": float(np.mean([v["personalization_necessity"] for v in devices.values()
                                                             if v["personalization_necessity"] is not None]))
            if finals else None,
            "links": links,
            "total_bytes": int(sum(v["bytes"] for v in links.values())),
            "total_joules": float(sum(v["compute_joules"] + v["comm_joules"] for v in devices.values())),
            "mean_round_latency_s": float(np.mean([r["round_latency_s"] for r in rows])) if rows else None,
            "epsilon": rows[-1].get("epsilon") if rows else None,
            "mean_forgetting": float(np.mean(forg)) if forg else None,
            "mean_mia_auc": float(np.mean(aucs)) if aucs else None,
            "devices": devices,
        }


def with_paradigm(cfg: ExperimentConfig, paradigm: str) -> ExperimentConfig:
    """A copy of ``cfg`` under another paradigm (aggregator forced to fedavg for decentralized consensus)."""
    agg = cfg.aggregator
    if paradigm == "decentralized" and agg.name not in ("fedavg", "fedit"):
        agg = replace(agg, name="fedavg", options={})
    dp = replace(cfg.dp, enabled=False) if paradigm == "decentralized" else cfg.dp
    return replace(cfg, name=f"{cfg.name}-{paradigm}", rounds=replace(cfg.rounds, paradigm=paradigm),
                   aggregator=agg, dp=dp)
