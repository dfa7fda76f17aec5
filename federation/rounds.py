"""The round engine: select -> local train -> collect adapter updates -> coordinate -> aggregate -> broadcast.

One :class:`RoundEngine` drives any set of devices (through an :class:`~federation.client.Executor`) under one of
the three coordination paradigms of the seed paper's Fig. 3:

* ``centralized``: every on-time participant uplinks its update; the server aggregates and broadcasts.
* ``semi``: devices form clusters (connected components of the D2D graph from the avatars' positions and the
  radio range, split to a maximum size, or given explicitly); inside a cluster the participants run ``d2d_rounds``
  steps of sample-weighted Metropolis-Hastings consensus; one representative per cluster, drawn anew each round,
  uplinks the cluster's consensus (a key the representative does not hold -- another modality's encoder -- is
  uplinked by one of its holders in the cluster); the server aggregates the clusters and broadcasts.
* ``decentralized``: the participants gossip over the D2D graph for ``gossip_steps`` steps, no server; the
  consensus distance before and after is reported.

Partial participation is the normal case: devices go offline (``availability``), sit out on low battery, are not
sampled (``participation``), or finish after the deadline (compute time from the profile's GFLOP/s plus uplink
time) -- their work is spent and counted, their update is dropped. Every message goes through the
:class:`~federation.accounting.CommLedger`. All randomness derives from ``(seed, round)`` so a resumed run draws
exactly what an uninterrupted one would.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import aggregate as agg
from . import topology as topo
from .accounting import SERVER, CommLedger, tensor_nbytes, transfer_time_s
from .client import Executor
from .config import DPConfig, RoundsConfig
from .messages import ClientUpdate, EvalReport, LinkType, TrainReport
from .privacy import RdpAccountant, clip_update, dp_average
from .strategies import AggregateResult, Strategy

__all__ = ["DeviceRoundStats", "RoundRecord", "RoundEngine", "DEFAULT_RADIO_RANGE_M"]

#: D2D range when neither the config nor the scenario gives one (Wi-Fi Direct indoors, a room or two)
DEFAULT_RADIO_RANGE_M = 8.0


@dataclass
class DeviceRoundStats:
    """One device's Table-6 figures for one round (None where the device did not take that step)."""

    status: str  # participant | missed_deadline | not_sampled | offline | low_battery
    accuracy_global: float | None = None
    accuracy_local: float | None = None
    personalization_gain: float | None = None
    train_loss: float | None = None
    train_time_s: float | None = None  # simulated on-device training time (profile GFLOP/s)
    train_wall_s: float | None = None
    compute_joules: float = 0.0
    comm_joules: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0
    battery_frac: float | None = None
    inference_latency_ms: float | None = None
    storage_bytes: int | None = None
    active_modules: int | None = None  # distinct encoders + heads the device trains (submodule activation)
    accuracy_per_task: dict[str, float] = field(default_factory=dict)


@dataclass
class RoundRecord:
    """Everything measured in one round; :meth:`to_json` is one line of ``metrics.jsonl``."""

    round: int
    paradigm: str
    phase: int
    devices: dict[str, DeviceRoundStats]
    links: dict[str, dict[str, float]]
    round_latency_s: float
    wall_time_s: float
    epsilon: float | None = None
    consensus_distance_before: float | None = None
    consensus_distance_after: float | None = None
    clusters: list[list[str]] = field(default_factory=list)
    diagnostics: dict[str, float] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.devices.values():
            out[s.status] = out.get(s.status, 0) + 1
        return out

    def mean(self, attr: str) -> float | None:
        vals = [getattr(s, attr) for s in self.devices.values() if getattr(s, attr) is not None]
        return float(np.mean(vals)) if vals else None

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(self)
        d["counts"] = self.counts
        d["mean_accuracy_global"] = self.mean("accuracy_global")
        d["mean_personalization_gain"] = self.mean("personalization_gain")
        return d


class RoundEngine:
    """Runs rounds over the devices behind ``executor`` with one paradigm, strategy and (optional) DP."""

    def __init__(self, executor: Executor, strategy: Strategy, config: RoundsConfig, *, seed: int = 0,
                 dp: DPConfig | None = None):
        self.executor, self.strategy, self.cfg, self.seed = executor, strategy, config, seed
        self.dp = dp if dp is not None and dp.enabled else None
        self.ids = list(executor.device_ids)
        self.radio_range_m = config.radio_range_m if config.radio_range_m is not None else DEFAULT_RADIO_RANGE_M
        self.info = {d: executor.info(d) for d in self.ids}
        self.profiles = {d: self.info[d]["profile"] for d in self.ids}
        self.ledger = CommLedger(self.profiles)
        self.accountant = RdpAccountant()
        self.battery_j = {d: (None if p.battery_wh is None else p.battery_wh * 3600.0)
                          for d, p in self.profiles.items()}
        self.last_accuracy: dict[str, float | None] = {d: None for d in self.ids}
        self.reference: dict[str, dict[str, torch.Tensor]] = {}  # last state each device received (DP deltas)
        self.templates: dict[str, dict[str, torch.Tensor]] = {}

    # -- setup -------------------------------------------------------------------------------------------
    def initial_sync(self) -> None:
        """Give every device the same starting shared state (the first holder's value per key and shape).

        This is deployment, not a round: it is not charged to the ledger. It also records each device's key set
        (the template its broadcasts are cut to) and evaluates the starting model.
        """
        states = self.executor.map("get_update", [(d, (), {}) for d in self.ids])
        first: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}
        for s in states:
            for k, t in s.items():
                first.setdefault((k, tuple(t.shape)), t)
        synced = {d: {k: first[(k, tuple(t.shape))].clone() for k, t in s.items()} for d, s in zip(self.ids, states,
                                                                                                     strict=True)}
        self.executor.map("set_update", [(d, (synced[d],), {}) for d in self.ids])
        self.templates = {d: {k: t.detach().clone() for k, t in s.items()} for d, s in synced.items()}
        self.reference = {d: dict(s) for d, s in self.templates.items()}
        evals = self.executor.map("evaluate", [(d, (), {}) for d in self.ids])
        self.last_accuracy = {d: e.mean_accuracy for d, e in zip(self.ids, evals, strict=True)}

    # -- helpers ---------------------------------------------------------------------------------------------
    def _rng(self, round_idx: int, salt: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, round_idx, salt])

    def _battery_frac(self, d: str) -> float | None:
        b, p = self.battery_j[d], self.profiles[d]
        return None if b is None or p.battery_wh is None else max(0.0, b / (p.battery_wh * 3600.0))

    def _spend(self, d: str, joules: float) -> None:
        b = self.battery_j[d]
        if b is not None:
            self.battery_j[d] = max(0.0, b - joules)

    def device_seed(self, round_idx: int, d: str) -> int:
        return int(self._rng(round_idx, 1 + self.ids.index(d)).integers(2**31 - 1))

    def _graph(self, members: Sequence[str], positions_m: Mapping[str, Sequence[float]] | None) -> np.ndarray:
        """D2D adjacency among ``members``: from positions and radio range, else complete (explicit clusters)."""
        if positions_m is None or any(m not in positions_m for m in members):
            adj = np.ones((len(members), len(members)), dtype=bool)
            np.fill_diagonal(adj, False)
            return adj
        return topo.d2d_graph([positions_m[m] for m in members], self.radio_range_m)

    def clusters(self, positions_m: Mapping[str, Sequence[float]] | None) -> list[list[str]]:
        """The round's clusters over *all* devices: explicit, or D2D components split to ``max_cluster_size``."""
        if self.cfg.clusters:
            listed = {i for c in self.cfg.clusters for i in c}
            return [list(c) for c in self.cfg.clusters] + [[d] for d in self.ids if d not in listed]
        adj = self._graph(self.ids, positions_m)
        return [[self.ids[i] for i in c] for c in topo.greedy_clusters(adj, self.cfg.max_cluster_size)]

    # -- the round ---------------------------------------------------------------------------------------------
    def run_round(self, round_idx: int, *, phase: int = 0,
                  positions_m: Mapping[str, Sequence[float]] | None = None) -> RoundRecord:
        t0 = time.perf_counter()
        if not self.templates:
            self.initial_sync()
        self.ledger.drop_round(round_idx)
        rng = self._rng(round_idx)
        stats: dict[str, DeviceRoundStats] = {}
        online: list[str] = []
        for d in self.ids:
            is_online = rng.random() < self.cfg.availability
            frac = self._battery_frac(d)
            if not is_online:
                stats[d] = DeviceRoundStats("offline", battery_frac=frac)
            elif frac is not None and frac < self.cfg.min_battery_frac:
                stats[d] = DeviceRoundStats("low_battery", battery_frac=frac)
                online.append(d)
            else:
                online.append(d)
        eligible = [d for d in online if d not in stats]
        sampled = [d for d in eligible if rng.random() < self.cfg.participation]
        if not sampled and eligible:  # a round with nobody is pointless; take one device
            sampled = [eligible[int(rng.integers(len(eligible)))]]
        for d in eligible:
            if d not in sampled:
                stats[d] = DeviceRoundStats("not_sampled", battery_frac=self._battery_frac(d))

        self.executor.map("set_phase", [(d, (phase,), {}) for d in self.ids])
        # Local training (the expensive, parallel part) and the personalised evaluation.
        reports: list[TrainReport] = self.executor.map(
            "local_train", [(d, (self.cfg.local_steps, self.device_seed(round_idx, d)), {}) for d in sampled])
        local_evals: list[EvalReport] = self.executor.map("evaluate", [(d, (), {}) for d in sampled])
        raw_updates = self.executor.map("get_update", [(d, (), {}) for d in sampled])
        on_time: list[str] = []
        finish_s: dict[str, float] = {}
        updates: dict[str, dict[str, torch.Tensor]] = {}
        samples: dict[str, int] = {}
        for d, rep, ev, upd in zip(sampled, reports, local_evals, raw_updates, strict=True):
            prof = self.profiles[d]
            compute_s = rep.compute_gflop / prof.gflops_sustained
            compute_j = prof.compute_joules(rep.compute_gflop * 1e9)
            self._spend(d, compute_j)
            finish_s[d] = compute_s + transfer_time_s(tensor_nbytes(upd), prof.uplink_mbps)
            late = self.cfg.deadline_s is not None and finish_s[d] > self.cfg.deadline_s
            before = self.last_accuracy[d]
            stats[d] = DeviceRoundStats(
                "missed_deadline" if late else "participant", accuracy_local=ev.mean_accuracy,
                personalization_gain=None if before is None else ev.mean_accuracy - before,
                train_loss=rep.loss, train_time_s=compute_s, train_wall_s=rep.wall_time_s, compute_joules=compute_j,
                storage_bytes=rep.storage_bytes if rep.storage_bytes is not None else tensor_nbytes(upd),
                active_modules=len({m for k in upd for m in (agg.key_modality(k), agg.key_task(k)) if m}))
            if not late:
                on_time.append(d)
                updates[d], samples[d] = upd, max(1, int(rep.num_samples))

        record = RoundRecord(round_idx, self.cfg.paradigm, phase, stats, {}, 0.0, 0.0)
        if on_time:
            if self.cfg.paradigm == "centralized":
                latency = self._centralized(round_idx, on_time, updates, samples, online, finish_s, record)
            elif self.cfg.paradigm == "semi":
                latency = self._semi(round_idx, on_time, updates, samples, online, finish_s, positions_m, record)
            else:
                latency = self._decentralized(round_idx, on_time, updates, samples, finish_s, positions_m, record)
        else:
            latency = max(finish_s.values(), default=0.0)
        record.round_latency_s = latency
        if self.dp is not None:
            q = self.cfg.availability * self.cfg.participation
            self.accountant.step(noise_multiplier=self.dp.noise_multiplier, sample_rate=q)
            record.epsilon = self.accountant.get_epsilon(self.dp.delta)

        # Everyone online evaluates the model it now holds (global/consensus + its personal parts).
        evals = self.executor.map("evaluate", [(d, (), {}) for d in online])
        for d, ev in zip(online, evals, strict=True):
            s = stats[d]
            s.accuracy_global = ev.mean_accuracy
            s.accuracy_per_task = dict(ev.accuracy)
            s.inference_latency_ms = ev.latency_ms
            self.last_accuracy[d] = ev.mean_accuracy
        totals = self.ledger.device_totals(round_idx)
        for d, s in stats.items():
            t = totals.get(d, {})
            s.bytes_sent, s.bytes_received = int(t.get("bytes_sent", 0)), int(t.get("bytes_received", 0))
            s.comm_joules = float(t.get("comm_joules", 0.0))
            self._spend(d, s.comm_joules)
            s.battery_frac = self._battery_frac(d)
        record.links = self.ledger.round_totals(round_idx)
        record.wall_time_s = time.perf_counter() - t0
        return record

    # -- paradigms ---------------------------------------------------------------------------------------------
    def _client_update(self, d: str, round_idx: int, tensors: dict[str, torch.Tensor], n: int) -> ClientUpdate:
        i = self.info[d]
        return ClientUpdate(d, round_idx, tensors, n, i["modalities"], i["tasks"], i["lora_scale"])

    def _dp_prepare(self, d: str, upd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The clipped delta of a device's update against the state it last received."""
        assert self.dp is not None
        ref = self.reference[d]
        delta = {k: t.detach().to(torch.float64) - ref[k].detach().to(torch.float64) for k, t in upd.items()}
        return clip_update(delta, self.dp.clip_norm)[0]

    def _dp_aggregate(self, contributions: Sequence[ClientUpdate], round_idx: int) -> AggregateResult:
        """DP-FedAvg on (filtered) clipped deltas: sum + noise over the expected contributor count, plus the global."""
        assert self.dp is not None
        filtered = self.strategy.filtered(contributions)
        holders: dict[str, int] = {}
        for d in self.ids:
            for k in agg.partial_filter([self.templates[d]], [self.info[d]["modalities"]], [self.info[d]["tasks"]])[0]:
                holders[k] = holders.get(k, 0) + 1
        q = self.cfg.availability * self.cfg.participation
        expected = {k: q * n for k, n in holders.items()}
        gen = torch.Generator().manual_seed(int(self._rng(round_idx, 10_000).integers(2**31 - 1)))
        noisy = dp_average(filtered, clip_norm=self.dp.clip_norm, noise_multiplier=self.dp.noise_multiplier,
                           expected_counts=expected, generator=gen)
        # The server's global is the reference every device was synced to; add the noisy mean delta.
        base: dict[str, torch.Tensor] = {}
        for d in self.ids:
            for k, t in self.reference[d].items():
                base.setdefault(k, t)
        return AggregateResult({k: base[k].to(torch.float64) + v for k, v in noisy.items()})

    def _broadcast(self, round_idx: int, result: AggregateResult, receivers: Sequence[str]) -> float:
        """Downlink each receiver's cut of the aggregate; returns the slowest downlink time (s)."""
        payloads: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        slowest = 0.0
        for d in receivers:
            payload = result.for_device(self.templates[d], self.info[d]["lora_scale"])
            nbytes = tensor_nbytes(payload)
            self.ledger.record(round_idx, LinkType.DOWNLINK, SERVER, d, nbytes)
            slowest = max(slowest, transfer_time_s(nbytes, self.profiles[d].uplink_mbps))
            payloads.append((d, (payload,), {}))
            self.reference[d] = {**self.reference[d], **{k: v.detach().clone() for k, v in payload.items()}}
        self.executor.map("set_update", payloads)
        return slowest

    def _centralized(self, r, on_time, updates, samples, online, finish_s, record) -> float:
        contribs = []
        for d in on_time:
            self.ledger.record(r, LinkType.UPLINK, d, SERVER, tensor_nbytes(updates[d]))
            tensors = self._dp_prepare(d, updates[d]) if self.dp else updates[d]
            contribs.append(self._client_update(d, r, tensors, 1 if self.dp else samples[d]))
        result = self._dp_aggregate(contribs, r) if self.dp else self.strategy.aggregate(contribs)
        record.diagnostics.update(result.diagnostics)
        down = self._broadcast(r, result, online)
        return max(finish_s[d] for d in on_time) + down

    def _semi(self, r, on_time, updates, samples, online, finish_s, positions_m, record) -> float:
        clusters = self.clusters(positions_m)
        record.clusters = clusters
        rng = self._rng(r, 20_000)
        contribs: list[ClientUpdate] = []
        cluster_times = []
        sizes = []
        for cluster in clusters:
            members = [d for d in cluster if d in updates]
            if not members:
                continue
            sizes.append(len(members))
            filtered = self.strategy.filtered([self._client_update(
                d, r, self._dp_prepare(d, updates[d]) if self.dp else updates[d], samples[d]) for d in members])
            weights = [1.0 if self.dp else float(samples[d]) for d in members]
            adj = self._graph(members, positions_m)
            mixed = topo.weighted_gossip_states(filtered, weights, adj, self.cfg.d2d_rounds)
            d2d_time = self._charge_d2d(r, members, filtered, adj, self.cfg.d2d_rounds)
            rep = members[int(rng.integers(len(members)))]
            # One uplink per holder group: the representative when it holds the keys, else one of their holders.
            groups: dict[tuple[int, ...], list[str]] = {}
            for k in {k for f in filtered for k in f}:
                shape = next(tuple(f[k].shape) for f in filtered if k in f)
                idx = tuple(j for j, f in enumerate(filtered) if k in f and tuple(f[k].shape) == shape)
                groups.setdefault(idx, []).append(k)
            up_time = 0.0
            for idx, keys in sorted(groups.items()):
                holders = [members[j] for j in idx]
                sender = rep if rep in holders else holders[int(rng.integers(len(holders)))]
                j = members.index(sender)
                tensors = {k: mixed[j][k] for k in sorted(keys)}
                nbytes = tensor_nbytes(tensors)
                self.ledger.record(r, LinkType.UPLINK, sender, SERVER, nbytes)
                up_time = max(up_time, transfer_time_s(nbytes, self.profiles[sender].uplink_mbps))
                mods = tuple(sorted({m for h in holders for m in self.info[h]["modalities"]}))
                tasks = tuple(sorted({t for h in holders for t in self.info[h]["tasks"]}))
                weight = sum(weights[j] for j in idx)
                if self.dp:  # the server needs the cluster's sum of clipped deltas
                    tensors = {k: v * weight for k, v in tensors.items()}
                contribs.append(ClientUpdate(sender, r, tensors, int(round(weight)), mods, tasks,
                                             self.info[sender]["lora_scale"]))
            compute = max(finish_s[d] - transfer_time_s(tensor_nbytes(updates[d]), self.profiles[d].uplink_mbps)
                          for d in members)
            cluster_times.append(compute + d2d_time + up_time)
        record.diagnostics["num_clusters"] = float(len(sizes))
        record.diagnostics["mean_cluster_size"] = float(np.mean(sizes)) if sizes else 0.0
        result = self._dp_aggregate(contribs, r) if self.dp else self.strategy.aggregate(contribs)
        record.diagnostics.update(result.diagnostics)
        down = self._broadcast(r, result, online)
        return max(cluster_times) + down

    def _decentralized(self, r, on_time, updates, samples, finish_s, positions_m, record) -> float:
        filtered = self.strategy.filtered([self._client_update(d, r, updates[d], samples[d]) for d in on_time])
        weights = [float(samples[d]) for d in on_time]
        adj = self._graph(on_time, positions_m)
        record.consensus_distance_before = topo.state_consensus_distance(filtered)
        mixed = topo.weighted_gossip_states(filtered, weights, adj, self.cfg.gossip_steps)
        record.consensus_distance_after = topo.state_consensus_distance(mixed)
        record.diagnostics["spectral_gap"] = topo.spectral_gap(topo.metropolis_hastings_weights(adj))
        record.diagnostics["num_components"] = float(len(topo.connected_components(adj)))
        d2d_time = self._charge_d2d(r, on_time, filtered, adj, self.cfg.gossip_steps)
        self.executor.map("set_update", [(d, (mixed[i],), {}) for i, d in enumerate(on_time)])
        for i, d in enumerate(on_time):
            self.reference[d] = {**self.reference[d], **mixed[i]}
        compute = max(finish_s[d] - transfer_time_s(tensor_nbytes(updates[d]), self.profiles[d].uplink_mbps)
                      for d in on_time)
        return compute + d2d_time

    def _charge_d2d(self, r: int, members: Sequence[str], states: Sequence[Mapping[str, torch.Tensor]],
                    adj: np.ndarray, steps: int) -> float:
        """Each consensus step, every device sends its neighbour the tensors they both hold (same shape).

        Returns the simulated D2D time: ``steps`` x the slowest single exchange.
        """
        slowest = 0.0
        for i, j in zip(*np.nonzero(adj), strict=True):
            shared = {k: t for k, t in states[i].items()
                      if k in states[j] and tuple(states[j][k].shape) == tuple(t.shape)}
            if not shared:
                continue
            nbytes = tensor_nbytes(shared)
            src, dst = members[i], members[j]
            for _ in range(steps):
                self.ledger.record(r, LinkType.D2D, src, dst, nbytes)
            rate = min(self.profiles[src].d2d_mbps, self.profiles[dst].d2d_mbps)
            slowest = max(slowest, transfer_time_s(nbytes, rate))
        return steps * slowest

    # -- checkpointing -------------------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """(JSON header, tensors) of everything the engine keeps between rounds."""
        header = {"battery_j": self.battery_j, "last_accuracy": self.last_accuracy,
                  "accountant": self.accountant.state_dict(), "ledger": self.ledger.to_rows(),
                  "template_keys": {d: list(t) for d, t in self.templates.items()}}
        tensors: dict[str, torch.Tensor] = {}
        for d, ref in self.reference.items():
            for k, t in ref.items():
                tensors[f"reference/{d}/{k}"] = t.detach().clone()
        for d, tpl in self.templates.items():
            for k, t in tpl.items():
                tensors[f"template/{d}/{k}"] = t.detach().clone()  # safetensors refuses shared storage
        return header, tensors

    def load_state(self, header: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> None:
        self.battery_j = {d: (None if v is None else float(v)) for d, v in header["battery_j"].items()}
        self.last_accuracy = {d: (None if v is None else float(v)) for d, v in header["last_accuracy"].items()}
        self.accountant = RdpAccountant.from_state_dict(header["accountant"])
        self.ledger.load_rows(list(header["ledger"]))
        self.reference = {d: {} for d in self.ids}
        self.templates = {d: {} for d in self.ids}
        for name, t in tensors.items():
            kind, d, k = name.split("/", 2)
            (self.reference if kind == "reference" else self.templates)[d][k] = t
