"""Experiment runner: a whole experiment into a run directory, checkpointed every round, resumable.

Run directory layout (reading it: :mod:`federation.rundir`)::

    RUN/
      config.yaml            the validated config (a resume must match it)
      baselines.json         per device and phase, on the held-out data: majority class, label persistence and
                             the pretrained model, written before the first round
      mia_reference.json     per device, the pretrained model's per-sample losses on the final phase's training
                             (members) and held-out (non-members) steps: the membership-inference reference,
                             written before the first round
      metrics.jsonl          one RoundRecord per line (Table 6 figures per device, links, latency, epsilon)
      checkpoint/            the last completed round: engine.json, engine.safetensors, clients/<id>.safetensors,
                             manifest.json (sizes and sha256 of the others, written last)
      summary.json           end-of-run figures: the final model next to its baselines on the same held-out data,
                             per device and per task (balanced accuracy is the headline), bytes, energy, latency,
                             storage, forgetting, membership-inference audit (of the global model, calibrated
                             by the reference losses), epsilon
      report.md, report.html, plots/*.png

A config with ``seeds: [..]`` runs once per seed into ``RUN/seed-<s>/`` (:func:`run_experiment`), and RUN's
summary and report give every figure as a mean with its 95 % confidence interval over the seeds.

Crash safety: after round r the metrics line is appended and flushed, *then* the checkpoint is written to a
temporary directory with a checksum manifest (:mod:`federation.checkpoint`) and renamed into place. ``resume``
verifies everything before it trusts or changes anything -- every metrics line, every checkpoint file against the
manifest, finite weights, the checkpointed round against the config and the metrics, the tensors against the
devices -- and refuses a damaged run directory with one line naming the bad file, leaving every file as it was.
Then it reloads the checkpoint and drops the metrics line of a round interrupted before its checkpoint, so that
round is re-run from the same state with the same random draws (everything is seeded from ``(seed, round)``):
nothing is lost or counted twice.

Where the devices run is not part of what a resume must match (``rounds.executor`` and the ``ray`` section change
no figure): a run started locally continues on a Ray cluster, and a driver killed on a cluster continues with
``xrfed run CONFIG --out RUN --resume --ray-address ADDR`` -- the device actors it lost with it are rebuilt and
reloaded from the checkpoint.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bridge.seeding import seed_everything

from .checkpoint import (
    CLIENTS_DIR,
    ENGINE_TENSORS,
    Checkpoint,
    CheckpointCorruptError,
    check_engine_tensors,
    check_global,
    read_checkpoint,
    write_checkpoint,
)
from .client import Client, Executor, make_executor
from .config import ExperimentConfig
from .continual import forgetting
from .errors import CheckpointError, ExecutorError
from .messages import EvalReport
from .privacy import MembershipAudit, membership_audit
from .rounds import RoundEngine, RoundRecord
from .rundir import SEED_DIR_PREFIX, read_baselines, read_metrics, read_summary

__all__ = ["ExperimentRunner", "run_experiment", "phase_of_round", "with_paradigm", "BASELINE_NAMES",
           "read_metrics", "read_summary", "local_comparison", "LOCAL_BASELINE_DIR"]

ClientFactories = Mapping[str, Callable[[], Client]]
PositionsFn = Callable[[int, int], Mapping[str, Sequence[float]] | None]

#: the reference points every result stands next to (``local`` -- local-only training -- is a paradigm run)
BASELINE_NAMES = ("majority", "persistence", "pretrained")

#: the membership-inference reference losses in a run directory (written before the first round)
MIA_REFERENCE_FILE = "mia_reference.json"
#: the files a run writes into its directory (plots/ and checkpoint/ besides)
RUN_OUTPUTS = ("config.yaml", "metrics.jsonl", "baselines.json", MIA_REFERENCE_FILE, "summary.json", "report.md",
               "report.html")
#: the false-positive rate at which the audit reports the attack's true-positive rate
MIA_FPR = 0.1
#: seconds a run waits for Ray resources held by others (a killed driver's actors keep theirs until Ray notices
#: the driver is gone) before it refuses a placement that the cluster could hold
RAY_PLACEMENT_WAIT_S = 20.0


def phase_of_round(round_idx: int, rounds: int, phases: int) -> int:
    """Rounds are split evenly across phases (lighting phases / task-script segments), in order."""
    return min(phases - 1, round_idx * phases // rounds)


def _eval_figures(ev: EvalReport) -> dict[str, Any]:
    """The JSON figures of one evaluation (NaN -> None)."""
    def f(x: float) -> float | None:
        return None if x is None or math.isnan(x) else float(x)

    return {"accuracy": f(ev.mean_accuracy), "balanced_accuracy": f(ev.macro_balanced_accuracy),
            "accuracy_per_task": dict(ev.accuracy), "balanced_accuracy_per_task": dict(ev.balanced_accuracy),
            "counts": dict(ev.counts)}


def _audit(members: EvalReport, nonmembers: EvalReport, reference: Mapping[str, Sequence[float]] | None
           ) -> MembershipAudit | None:
    """The membership-inference audit of one model on one device (None when either side has no sample)."""
    if not members.per_sample_loss or not nonmembers.per_sample_loss:
        return None
    ref: dict[str, Any] = {}
    if reference is not None:
        ref = {"member_reference": reference["members"], "nonmember_reference": reference["nonmembers"]}
    return membership_audit(members.per_sample_loss, nonmembers.per_sample_loss, fpr=MIA_FPR, **ref)


#: what the summary's membership-inference figures measure (one sentence, repeated in the report)
_MIA_AUDIT = ("Membership inference (phase {phase}): members are each device's training steps and non-members its "
              "held-out steps (later in time, past the guard gap); the attacked model (target) is the global model "
              "the device received, and a sample's score is its loss under the target minus its loss under the "
              "reference, the model before the first round (the pretrained foundation model, which never saw any "
              "device's data; lower = member); AUC 0.5 and TPR {fpr:g} at FPR {fpr:g} mean no leakage, "
              "*_uncalibrated is the raw loss threshold and mia_auc_device_model the same attack on the device's "
              "own model, which never leaves the device.")
_MIA_AUDIT_UNCALIBRATED = ("Membership inference (phase {phase}): members are each device's training steps and "
                           "non-members its held-out steps; the target is the global model the device received; "
                           "this run has no reference losses (it was started before they were recorded), so only "
                           "the raw loss-threshold attack (*_uncalibrated) is reported.")


def _mean(vals: Sequence[float | None]) -> float | None:
    v = [float(x) for x in vals if x is not None and not math.isnan(float(x))]
    return float(np.mean(v)) if v else None


class ExperimentRunner:
    """Runs ``config`` (one seed) into ``run_dir``.

    ``client_factories`` build each device's client (default: the agents package through
    :func:`federation.agent_client.build_client_factories`). ``positions_fn(round, phase)`` gives the avatars'
    world positions (m) for the D2D graph (default: from the clients when they expose ``position_m()``).

    ``torch_threads`` (default 1) caps torch's intra-op threads in this process: the in-process devices train one
    after another on small models that gain nothing from intra-op parallelism, and on a shared 2-core host two
    threads per process oversubscribe the cores (measured: a 7-device decentralized round of the demo took 60 s
    with torch's default threads under load, 0.9 s with one). One thread also makes every float reduction run in
    the same order in every process, so figures are bit-identical across runs. None leaves torch's setting alone.
    """

    def __init__(self, config: ExperimentConfig, run_dir: str | Path, *,
                 client_factories: ClientFactories | None = None, positions_fn: PositionsFn | None = None,
                 progress: bool = True, torch_threads: int | None = 1):
        if config.seeds is not None:
            raise CheckpointError(f"{config.name}: the config lists seeds {config.seeds}; run it with "
                                  "federation.runner.run_experiment (one ExperimentRunner per seed)")
        self.cfg, self.run_dir, self.progress = config, Path(run_dir), progress
        self.torch_threads = torch_threads
        self._factories = client_factories
        self._positions_fn = positions_fn
        self.executor: Executor | None = None
        self.engine: RoundEngine | None = None
        # device -> "t" -> "j" -> balanced accuracy on phase j after phase t (the forgetting matrix)
        self.phase_acc: dict[str, dict[str, dict[str, float]]] = {}

    # -- setup ---------------------------------------------------------------------------------------------
    def _factories_or_default(self) -> ClientFactories:
        if self._factories is not None:
            return self._factories
        from .agent_client import build_client_factories

        return build_client_factories(self.cfg, progress=self.progress)

    def _build(self) -> None:
        kw: dict[str, Any] = {}
        if self.cfg.rounds.executor == "ray":
            from .client import connect_ray

            # Join (or start) Ray before the recording and the foundation checkpoint are prepared: an unreachable
            # cluster or a version mismatch fails in seconds, with nothing written.
            connect_ray(self.cfg.ray.address)
            kw = {"torch_threads": self.torch_threads, "placement_wait_s": RAY_PLACEMENT_WAIT_S,
                  **self.cfg.ray.executor_options(self.cfg.devices)}
        self.executor = make_executor(self.cfg.rounds.executor, self._factories_or_default(), **kw)
        strategy = self.cfg.aggregator.make()
        attackers = self.cfg.attackers()
        self.engine = RoundEngine(self.executor, strategy, self.cfg.rounds, seed=self.cfg.seed, dp=self.cfg.dp,
                                  attack=self.cfg.attack, attackers=attackers)
        if self.cfg.attack.kind == "label_flip" and attackers:
            from bridge.seeding import derive_seed

            self.executor.map("poison_labels", [(d, (), {"seed": derive_seed(self.cfg.seed, "poison", d)})
                                                for d in attackers])
        if self.cfg.rounds.radio_range_m is None and self.cfg.rounds.paradigm in ("semi", "decentralized"):
            self.engine.radio_range_m = self._scenario().radio_range_m

    def _scenario(self) -> Any:
        from bridge.scenario import load_scenario

        return load_scenario(self.cfg.scenario)

    def _positions(self, round_idx: int, phase: int) -> Mapping[str, Sequence[float]] | None:
        if self._positions_fn is not None:
            return self._positions_fn(round_idx, phase)
        if self.executor is None or self.cfg.rounds.paradigm not in ("semi", "decentralized"):
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
        header, tensors = self.engine.state()
        ids = self.executor.device_ids
        states = dict(zip(ids, self.executor.map("state_dict", [(d, (), {}) for d in ids]), strict=True))
        write_checkpoint(self.checkpoint_dir, {**header, "phase_acc": self.phase_acc}, tensors, states,
                         completed_round=completed_round)

    def _resume(self) -> int:
        """Verify the run directory and restore engine and clients; returns the first round to run.

        Everything is checked before anything on disk changes (:mod:`federation.checkpoint`): the metrics file line
        by line, the checkpoint against its manifest, its round against the config and the metrics, its tensors
        against the devices. A refused resume leaves every file as it was and raises a
        :class:`~federation.checkpoint.CheckpointCorruptError` naming the bad file."""
        assert self.engine is not None and self.executor is not None
        metrics_path = self.run_dir / "metrics.jsonl"
        ck, old = self.checkpoint_dir, self.run_dir / "checkpoint.old"
        src = old if not ck.exists() and old.exists() else ck  # killed between write_checkpoint's two renames
        rows = read_metrics(self.run_dir) if metrics_path.exists() else []
        ids = self.executor.device_ids
        if rows and set(rows[0]["devices"]) != set(ids):
            raise CheckpointCorruptError(f"{metrics_path}: devices {sorted(rows[0]['devices'])[:8]} differ from "
                                         f"the config's {sorted(ids)[:8]}")
        cp = read_checkpoint(src, device_ids=ids, rounds=self.cfg.rounds.rounds, phases=self.cfg.phases,
                             metrics=(metrics_path, [r["round"] for r in rows]))
        if cp is None:
            if len(rows) > 1:  # the first round's line may precede its checkpoint; more may not
                raise CheckpointCorruptError(f"{ck}: no checkpoint, but {metrics_path.name} records rounds "
                                             f"0..{len(rows) - 1}; restore the checkpoint or start a new run")
            completed = -1
        else:
            self._install(cp, src)
            completed = cp.completed_round
        if completed >= 0:  # written before the first round; the summary needs them at the end
            read_baselines(self.run_dir, device_ids=ids, phases=self.cfg.phases, names=BASELINE_NAMES)
            self._mia_reference()
        # verified: only now may files change
        if src is old:
            os.replace(old, ck)
        if len(rows) > completed + 1:  # the interrupted round's line: it is re-run from the same state
            lines = [ln for ln in metrics_path.read_bytes().split(b"\n") if ln.strip()][:completed + 1]
            tmp = metrics_path.with_name(metrics_path.name + ".tmp")
            tmp.write_bytes(b"".join(ln + b"\n" for ln in lines))
            os.replace(tmp, metrics_path)
        return completed + 1

    def _install(self, cp: Checkpoint, ck: Path) -> None:
        """Check the checkpoint's tensors against the devices and load them into the engine and the clients."""
        assert self.engine is not None and self.executor is not None
        ids = self.executor.device_ids
        fresh = dict(zip(ids, self.executor.map("state_dict", [(d, (), {}) for d in ids]), strict=True))
        for d in ids:
            path = ck / CLIENTS_DIR / f"{d}.safetensors"
            for k, t in cp.client_tensors[d].items():
                own = fresh[d].get(k)
                if own is not None and (tuple(own.shape) != tuple(t.shape) or own.dtype != t.dtype):
                    raise CheckpointCorruptError(f"{path}: tensor {k[:80]!r} is {tuple(t.shape)} {t.dtype}, device "
                                                 f"{d!r} has {tuple(own.shape)} {own.dtype}")
        epath = ck / ENGINE_TENSORS
        # what each freshly built device shares: the names and shapes its templates were cut from (calling it
        # before the load is side-effect free for the run: nothing it counts is checkpointed or reported)
        shared = dict(zip(ids, self.executor.map("shared_state", [(d, (), {}) for d in ids]), strict=True))
        templates = check_engine_tensors(epath, cp.engine_tensors, ids, shared)
        try:
            expected: dict[str, torch.Tensor] = {}
            for state in self.engine.strategy.align([self.engine.encode(d, templates[d]) for d in ids]):
                for k, v in state.items():
                    expected.setdefault(k, v)
        except (KeyError, ValueError, RuntimeError, IndexError) as exc:
            raise CheckpointCorruptError(f"{epath}: the templates do not form this strategy's common space "
                                         f"({type(exc).__name__})") from None
        check_global(epath, cp.engine_tensors, expected)
        self.engine.load_state(cp.header, cp.engine_tensors)
        for d in ids:
            try:
                self.executor.map("load_state_dict", [(d, (cp.client_tensors[d],), {})])
            except (RuntimeError, KeyError, ValueError, TypeError, IndexError, ExecutorError) as exc:
                msg = " ".join(str(exc).split())[:160]
                raise CheckpointCorruptError(f"{ck / CLIENTS_DIR / f'{d}.safetensors'}: does not fit device "
                                             f"{d!r} ({type(exc).__name__}: {msg})") from None
        self.phase_acc = cp.header.get("phase_acc", {})

    def _check_outputs(self) -> None:
        """Every name the run writes is absent or a regular file (``checkpoint`` a directory), before any work:
        a directory or a device where ``mia_reference.json`` goes would otherwise fail after the baselines."""
        rd = self.run_dir
        if rd.exists() and not rd.is_dir():
            raise CheckpointError(f"{rd} exists and is not a directory; choose another --out")
        for name in RUN_OUTPUTS:
            path = rd / name
            if (path.exists() or path.is_symlink()) and not path.is_file():
                raise CheckpointError(f"{path} exists and is not a regular file, and the run writes it: move it "
                                      f"away or choose another --out")
        cp = self.checkpoint_dir
        if (cp.exists() or cp.is_symlink()) and not cp.is_dir():
            raise CheckpointError(f"{cp} exists and is not a directory, and the run writes its checkpoints there")

    # -- baselines ---------------------------------------------------------------------------------------------
    def _write_baselines(self) -> None:
        """Before any training: every device's majority-class, label-persistence and pretrained-model figures on
        each phase's held-out data (the same steps its models are evaluated on), and the pretrained model's
        per-sample losses on the final phase's training and held-out steps (the membership-inference reference,
        :data:`MIA_REFERENCE_FILE`: before the first local training ``evaluate_base`` is the pretrained model)."""
        assert self.executor is not None
        ids = self.executor.device_ids
        out: dict[str, dict[str, dict[str, Any]]] = {d: {} for d in ids}
        last = self.cfg.phases - 1
        ref_nonmembers: list[EvalReport] = []
        for p in range(self.cfg.phases):
            labels = self.executor.map("label_baselines", [(d, (), {"phase": p}) for d in ids])
            base = self.executor.map("evaluate_base", [(d, (), {"phase": p}) for d in ids])
            for d, lb, b in zip(ids, labels, base, strict=True):
                out[d][str(p)] = {**{k: _eval_figures(v) for k, v in lb.items()}, "pretrained": _eval_figures(b)}
            if p == last:
                ref_nonmembers = base
        ref_members = self.executor.map("evaluate_base", [(d, (), {"split": "train", "phase": last}) for d in ids])
        reference = {"model": "evaluate_base before the first round (the pretrained model)", "phase": last,
                     "devices": {d: {"members": list(m.per_sample_loss), "nonmembers": list(n.per_sample_loss)}
                                 for d, m, n in zip(ids, ref_members, ref_nonmembers, strict=True)}}
        (self.run_dir / MIA_REFERENCE_FILE).write_text(json.dumps(reference))
        meta: dict[str, Any] = {"guard_s": self.cfg.eval.guard_s, "test_fraction": self.cfg.eval.test_fraction}
        if self._factories is None:  # the experiment's own recording: measure how long its labels persist
            from .agent_client import label_persistence_s, split_policy

            meta["split"] = split_policy(self.cfg)
            meta["label_persistence_s"] = label_persistence_s(self.cfg)
        (self.run_dir / "baselines.json").write_text(json.dumps({"split": meta, "devices": out}, indent=1))

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
            if saved.experiment_dict() != self.cfg.experiment_dict():  # the executor may change, nothing else
                raise CheckpointError(f"{self.run_dir}: the run was started with a different config; "
                                      "resume it with its own config.yaml")
        else:
            if metrics_path.exists() or self.checkpoint_dir.exists():
                raise CheckpointError(f"{self.run_dir} already holds a run; pass --resume or choose another --out")
        if self.torch_threads is not None:
            torch.set_num_threads(self.torch_threads)
        # Every stream the run uses is derived from the seed on its own (bridge.seeding); the process-wide
        # generators are seeded too, so code drawing from them implicitly cannot make two runs differ.
        seed_everything(self.cfg.seed)
        self._check_outputs()
        self._build()  # before writing anything: a config whose clients cannot be built leaves no run behind
        assert self.engine is not None and self.executor is not None
        try:
            start = 0
            if resume:
                start = self._resume()
            if start == 0:  # a fresh run, or one killed before its first checkpoint
                self.run_dir.mkdir(parents=True, exist_ok=True)
                cfg_path.write_text(self.cfg.to_yaml())
                self.engine.initial_sync()
                self._write_baselines()
            total = self.cfg.rounds.rounds
            bar = self._bar(start, total)
            done_now = 0
            for r in range(start, total):
                if stop_after is not None and done_now >= stop_after:
                    return None
                phase = phase_of_round(r, total, self.cfg.phases)
                rec = self.engine.run_round(r, phase=phase, positions_m=self._positions(r, phase))
                if self.engine.lost:
                    # a device lost in this round (a Ray actor or node died) is rebuilt now, holding what the
                    # engine gives it: the phase evaluation and the checkpoint need every device
                    self.engine.revive(r)
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
        bal = rec.mean("balanced_accuracy")
        up = rec.links["uplink"]["bytes"] + rec.links["d2d"]["bytes"]
        parts = [f"bal.acc={bal:.3f}" if bal is not None else "bal.acc=-", f"sent={up / 1e3:.1f}kB",
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
                v = ev.macro_balanced_accuracy
                self.phase_acc.setdefault(d, {}).setdefault(str(phase), {})[str(j)] = 0.0 if math.isnan(v) else v

    # -- summary -----------------------------------------------------------------------------------------------
    def _mia_reference(self) -> dict[str, dict[str, list[float]]] | None:
        """Each device's reference losses (members, non-members) of :data:`MIA_REFERENCE_FILE`; None for a run
        started before the file existed (its audit is then the uncalibrated one only)."""
        path = self.run_dir / MIA_REFERENCE_FILE
        if not path.is_file():
            return None
        try:
            devices = json.loads(path.read_bytes())["devices"]
            return {d: {"members": [float(x) for x in v["members"]], "nonmembers": [float(x) for x in v["nonmembers"]]}
                    for d, v in devices.items()}
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
            msg = " ".join(str(exc).split())[:120]
            raise CheckpointError(f"{path}: unreadable membership-inference reference "
                                  f"({type(exc).__name__}: {msg})") from None

    def _summarise(self) -> dict[str, Any]:
        assert self.executor is not None and self.engine is not None
        rows = read_metrics(self.run_dir)
        base_file = read_baselines(self.run_dir)
        baselines, split_meta = base_file["devices"], base_file["split"]
        ids = self.executor.device_ids
        last_phase = self.cfg.phases - 1
        final = self.executor.map("evaluate", [(d, (), {"phase": last_phase}) for d in ids])
        final_global = self.executor.map("evaluate_global", [(d, (), {"phase": last_phase}) for d in ids])
        members = self.executor.map("evaluate", [(d, (), {"split": "train", "phase": last_phase}) for d in ids])
        gmembers = self.executor.map("evaluate_global",
                                     [(d, (), {"split": "train", "phase": last_phase}) for d in ids])
        reference = self._mia_reference()
        devices: dict[str, Any] = {}
        for d, ev, gev, mem, gmem in zip(ids, final, final_global, members, gmembers, strict=True):
            per_round = [r["devices"][d] for r in rows]

            def vals(key: str, per_round: list[dict[str, Any]] = per_round) -> list[float]:
                return [float(x[key]) for x in per_round if x.get(key) is not None]

            phases = self.phase_acc.get(d, {})
            n_ph = len(phases)
            matrix = [[phases[str(t)].get(str(j), 0.0) for j in range(n_ph)] for t in range(n_ph)] if n_ph else []
            storage = vals("storage_bytes")
            lat = vals("inference_latency_ms")
            fig, gfig = _eval_figures(ev), _eval_figures(gev)
            ref = reference.get(d) if reference is not None else None
            mia = _audit(gmem, gev, ref)  # the global model: what leaves the device
            mia_device = _audit(mem, ev, ref)  # the device's own model: it never leaves the device
            devices[d] = {
                "profile": self.engine.profiles[d].name,
                **fig,
                "global_accuracy": gfig["accuracy"], "global_balanced_accuracy": gfig["balanced_accuracy"],
                "personalization_gain": (fig["balanced_accuracy"] - gfig["balanced_accuracy"])
                if fig["balanced_accuracy"] is not None and gfig["balanced_accuracy"] is not None else None,
                "baselines": {k: baselines[d][str(last_phase)][k] for k in BASELINE_NAMES},
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
                "mia_auc": mia.auc if mia else None,
                "mia_tpr_at_fpr_0.1": mia.tpr_at_fpr if mia else None,
                "mia_auc_uncalibrated": mia.auc_uncalibrated if mia else None,
                "mia_tpr_at_fpr_0.1_uncalibrated": mia.tpr_at_fpr_uncalibrated if mia else None,
                "mia_auc_device_model": mia_device.auc if mia_device else None,
                "mia_auc_device_model_uncalibrated": mia_device.auc_uncalibrated if mia_device else None,
                "mia_members": mia.members if mia else 0,
                "mia_nonmembers": mia.nonmembers if mia else 0,
            }
        links = {lt: {"bytes": sum(r["links"][lt]["bytes"] for r in rows),
                      "joules": sum(r["links"][lt]["joules"] for r in rows)} for lt in ("uplink", "downlink", "d2d")}
        dv = list(devices.values())
        tasks = sorted({t for v in dv for t in v["balanced_accuracy_per_task"]})
        per_task = {t: {"model": _mean([v["balanced_accuracy_per_task"].get(t) for v in dv]),
                        **{b: _mean([v["baselines"][b]["balanced_accuracy_per_task"].get(t) for v in dv])
                           for b in BASELINE_NAMES}} for t in tasks}
        split = split_meta.get("split") or (f"temporal per phase: the last {self.cfg.eval.test_fraction:.0%} of "
                                             f"each phase held out after a guard of {self.cfg.eval.guard_s:g} s")
        return {
            "kind": "single-seed",
            "name": self.cfg.name,
            "paradigm": self.cfg.rounds.paradigm,
            "aggregator": self.cfg.aggregator.name,
            "seed": self.cfg.seed,
            "attack": {"kind": self.cfg.attack.kind, "devices": self.cfg.attackers()},
            "rounds": len(rows),
            "split": split,
            "guard_s": self.cfg.eval.guard_s,
            "label_persistence_s": split_meta.get("label_persistence_s"),
            "balanced_accuracy": _mean([v["balanced_accuracy"] for v in dv]),
            "accuracy": _mean([v["accuracy"] for v in dv]),
            "global_balanced_accuracy": _mean([v["global_balanced_accuracy"] for v in dv]),
            "personalization_gain": _mean([v["personalization_gain"] for v in dv]),
            "baselines": {b: {"balanced_accuracy": _mean([v["baselines"][b]["balanced_accuracy"] for v in dv]),
                              "accuracy": _mean([v["baselines"][b]["accuracy"] for v in dv])}
                          for b in BASELINE_NAMES},
            "per_task": per_task,
            "links": links,
            "total_bytes": int(sum(v["bytes"] for v in links.values())),
            "total_joules": float(sum(v["compute_joules"] + v["comm_joules"] for v in dv)),
            "mean_round_latency_s": float(np.mean([r["round_latency_s"] for r in rows])) if rows else None,
            "epsilon": rows[-1].get("epsilon") if rows else None,
            "mean_forgetting": _mean([v["forgetting"] for v in dv]),
            "mean_mia_auc": _mean([v["mia_auc"] for v in dv]),
            "mean_mia_tpr_at_fpr_0.1": _mean([v["mia_tpr_at_fpr_0.1"] for v in dv]),
            "mean_mia_auc_uncalibrated": _mean([v["mia_auc_uncalibrated"] for v in dv]),
            "mean_mia_auc_device_model": _mean([v["mia_auc_device_model"] for v in dv]),
            "mia_audit": _MIA_AUDIT.format(phase=last_phase, fpr=MIA_FPR) if reference is not None else
            _MIA_AUDIT_UNCALIBRATED.format(phase=last_phase, fpr=MIA_FPR),
            "devices": devices,
        }


def run_experiment(cfg: ExperimentConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True,
                   torch_threads: int | None = 1, local_baseline: bool | None = None,
                   local_dir: str | Path | None = None, **runner_kw: Any) -> dict[str, Any] | None:
    """Run ``cfg``: one run, or -- with ``seeds`` -- one run per seed into ``run_dir/seed-<s>`` and the
    mean/CI summary and report over them in ``run_dir``. With ``resume``, finished seeds are kept and an
    interrupted one continues from its checkpoint.

    Unless the run is local-only itself, the same experiment with local-only training runs too (``local_baseline``,
    default: the config's ``eval.local_baseline``) into ``run_dir/local-only`` -- or is read from ``local_dir`` if
    that already holds it -- and the summary and report put it next to this run with the paired difference."""
    rd = Path(run_dir)
    want_local = cfg.eval.local_baseline if local_baseline is None else local_baseline
    want_local = bool(want_local) and cfg.rounds.paradigm != "local"
    if cfg.seeds is None:
        summary = ExperimentRunner(cfg, rd, progress=progress, torch_threads=torch_threads, **runner_kw).run(
            resume=resume)
    else:
        summary = _run_seeds(cfg, rd, resume=resume, progress=progress, torch_threads=torch_threads, **runner_kw)
    if summary is None or not want_local:
        return summary
    ldir = Path(local_dir) if local_dir is not None else rd / LOCAL_BASELINE_DIR
    if (ldir / "summary.json").is_file():
        local: dict[str, Any] | None = read_summary(ldir)
    else:
        lcfg = with_paradigm(cfg, "local")
        local = run_experiment(lcfg, ldir, resume=(ldir / "config.yaml").is_file(), progress=progress,
                               torch_threads=torch_threads, local_baseline=False, **runner_kw)
    assert local is not None
    summary["local_baseline"] = local_comparison(summary, local, os.path.relpath(ldir, rd))
    (rd / "summary.json").write_text(json.dumps(summary, indent=2))
    from .report import write_report

    write_report(rd)
    return summary


#: where run_experiment puts a run's local-only counterpart, inside the run directory
LOCAL_BASELINE_DIR = "local-only"


def local_comparison(summary: Mapping[str, Any], local: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The local-only run's headline next to a run's, and their paired difference (seed by seed)."""
    from .stats import paired_difference

    def per_seed(s: Mapping[str, Any]) -> dict[int, float]:
        b = s["balanced_accuracy"]
        if isinstance(b, Mapping):
            return {int(k): (math.nan if v is None else float(v)) for k, v in zip(s["seeds"], b["values"], strict=True)}
        return {int(s["seed"]): math.nan if b is None else float(b)}

    mine, theirs = per_seed(summary), per_seed(local)
    seeds = sorted(set(mine) & set(theirs))
    diff = paired_difference([mine[x] for x in seeds], [theirs[x] for x in seeds])
    return {"run": where, "balanced_accuracy": local["balanced_accuracy"],
            "global_balanced_accuracy": local.get("global_balanced_accuracy"), "seeds": seeds,
            "difference": diff.to_dict()}


def _run_seeds(cfg: ExperimentConfig, rd: Path, *, resume: bool, progress: bool, torch_threads: int | None,
               **runner_kw: Any) -> dict[str, Any]:
    assert cfg.seeds is not None
    cfg_path = rd / "config.yaml"
    if resume:
        if not cfg_path.is_file():
            raise CheckpointError(f"{rd}: nothing to resume (no config.yaml)")
        if ExperimentConfig.from_yaml(cfg_path.read_text()).experiment_dict() != cfg.experiment_dict():
            raise CheckpointError(f"{rd}: the run was started with a different config; "
                                  "resume it with its own config.yaml")
    elif cfg_path.exists():
        raise CheckpointError(f"{rd} already holds a run; pass --resume or choose another --out")
    rd.mkdir(parents=True, exist_ok=True)
    if not resume:  # a resume keeps the file it was started with (it may differ in where the devices run)
        cfg_path.write_text(cfg.to_yaml())
    for s in cfg.seeds:
        sub = rd / f"{SEED_DIR_PREFIX}{s}"
        if (sub / "summary.json").is_file():
            continue
        started = (sub / "config.yaml").is_file()
        ExperimentRunner(cfg.with_seed(s), sub, progress=progress, torch_threads=torch_threads, **runner_kw).run(
            resume=started)
    from .report import summarise_seeds, write_report

    summary = summarise_seeds(rd)
    (rd / "summary.json").write_text(json.dumps(summary, indent=2))
    write_report(rd)
    return summary


def with_paradigm(cfg: ExperimentConfig, paradigm: str) -> ExperimentConfig:
    """A copy of ``cfg`` under another paradigm, differing in nothing else that the paradigm does not force:
    decentralized gossip averages (a non-averaging aggregator becomes ``exact_lora``), central DP needs a server
    (it becomes local DP without one) and local-only training sends nothing (DP off)."""
    from .paradigms import paradigm_class
    from .strategies import averaging_strategy_names

    p = paradigm_class(paradigm)
    agg = cfg.aggregator
    if p.needs_averaging and agg.name not in averaging_strategy_names():
        agg = replace(agg, name="exact_lora", options={})
    dp = cfg.dp
    if not p.communicates:
        dp = replace(dp, enabled=False)
    elif dp.enabled and dp.mode == "central" and not p.uses_server:
        dp = replace(dp, mode="local")
    ev = replace(cfg.eval, local_baseline=False) if not p.communicates else cfg.eval
    return replace(cfg, name=f"{cfg.name}-{paradigm}", rounds=replace(cfg.rounds, paradigm=paradigm),
                   aggregator=agg, dp=dp, eval=ev)
