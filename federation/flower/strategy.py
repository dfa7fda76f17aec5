"""xrfed's aggregation as Flower strategies (``flwr.serverapp.strategy.Strategy``, Message API).

:class:`XrfedStrategy` runs one xrfed aggregator (:mod:`federation.strategies`: ``exact_lora`` -- exact
heterogeneous-rank LoRA, ``fedavg``/``fedit``, the robust ``median``, ``trimmed_mean``, ``krum``), with
modality-/task-aware partial aggregation, as a Flower strategy; :class:`XrfedDifferentialPrivacy` wraps one with
client-level DP (central or local), as Flower's ``DifferentialPrivacy*`` wrappers wrap any strategy. A Flower user
passes them to ``strategy.start(grid=grid, initial_arrays=ArrayRecord(), num_rounds=...)`` in a ServerApp, with
xrfed's ClientApp (:func:`federation.flower.client_app.make_client_app`) or any ClientApp speaking the same records
(:mod:`federation.flower.records`).

A round is xrfed's centralized round (:mod:`federation.rounds`, :class:`federation.paradigms.Centralized`), step by
step, with the same arithmetic:

1. ``configure_train`` -- first the devices are discovered (a ``query`` message to every node: device id, profile,
   modalities, tasks, LoRA scale and starting shared tensors; the common starting state is formed as
   ``RoundEngine.initial_sync`` forms it); then the round's devices are selected with the engine's seeded draws
   (availability, battery, participation) and each sampled device is sent *its own cut* of the global model
   (its keys, LoRA ranks and dtypes), the round's phase, its local steps and its training seed;
2. ``aggregate_train`` -- each reply is checked against the device's tensors (key set, shapes, dtypes: a mismatch
   is an :class:`~federation.errors.AggregationError` naming device and key); its common-space delta against what
   it was sent (float64) is formed, deadlines are applied from the profile's compute and uplink figures, the
   aggregator reduces the on-time deltas, the global state moves, and each online device's cut is prepared;
   a node that fails or disappears is a *dropout* (status ``dropout``, as in xrfed's own rounds) and the round completes with the others;
3. ``configure_evaluate`` / ``aggregate_evaluate`` -- the online devices receive the broadcast and evaluate the
   model they run and the global model alone; the round's :class:`~federation.rounds.RoundRecord` (Table-6
   figures per device: accuracy, balanced accuracy, personalization gain, loss, bytes, joules, battery,
   latency, storage) is appended to :attr:`XrfedStrategy.records`, and its means are returned as the round's
   ``MetricRecord``.

Every byte is counted as xrfed counts it (:class:`~federation.accounting.CommLedger`: adapter payload bytes per
link) and, besides, as it crossed Flower (the arrays' serialized bytes: ``diagnostics.flower_*_bytes``).
The semi-decentralized and decentralized paradigms have no Flower equivalent (Flower's messages go between the
ServerApp and the nodes, never node to node); they stay in xrfed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from logging import INFO
from typing import Any

import numpy as np
import torch

from bridge.seeding import derive_seed

from .. import aggregate as agg
from ..accounting import SERVER, CommLedger, common_nbytes, tensor_nbytes, transfer_time_s
from ..config import DPConfig, ExperimentConfig, RoundsConfig
from ..errors import AggregationError, ConfigError
from ..messages import ClientUpdate, LinkType
from ..privacy import RdpAccountant, account_dp_round, dp_epsilon, update_norm
from ..rounds import DeviceRoundStats, RoundRecord, dp_aggregation_context, key_holders, select_devices
from ..runner import phase_of_round
from ..strategies import AggregationContext, DifferentialPrivacy, Strategy, make_strategy
from .records import ARRAYS, CONFIG, DEVICE, FlowerError, from_array_record, spec_of, to_array_record

try:  # Flower is the optional ``flower`` extra; this module is imported only through federation.flower
    from flwr.serverapp.strategy import Strategy as _FlowerStrategy
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise FlowerError("federation.flower needs Flower: pip install 'xrfed[flower]' (scripts/setup.sh installs it)"
                      ) from exc

__all__ = ["XrfedStrategy", "XrfedDifferentialPrivacy", "strategy_from_config", "DROPPED"]

#: the status of a sampled device whose node failed or vanished before replying (a dropout)
DROPPED = "dropout"  # the round engine's status for a lost device


def _log(msg: str, *args: Any) -> None:
    from flwr.common import log

    log(INFO, msg, *args)


@dataclass
class _Round:
    """What one round carries from ``configure_train`` to ``aggregate_evaluate``."""

    idx: int
    phase: int
    t0: float
    online: list[str]
    sampled: list[str]
    record: RoundRecord
    payloads: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    wire_down: int = 0
    wire_up: int = 0


def _wire_bytes(record: Any) -> int:
    return int(sum(len(a.data) for a in record.values()))


class XrfedStrategy(_FlowerStrategy):
    """One xrfed aggregator as a Flower strategy, running xrfed's centralized round (see the module docstring).

    ``aggregator``: an xrfed :class:`~federation.strategies.Strategy` or its registry name (with
    ``aggregator_options``); ``num_rounds``: the rounds ``start`` will run (the phase schedule splits them evenly
    over ``phases``, as ``xrfed run`` does); ``rounds``: participation, availability, battery threshold, deadline
    and local steps (:class:`~federation.config.RoundsConfig`; its paradigm must be ``centralized``); ``seed``
    derives every draw as in xrfed's engine (selection, training seeds, DP noise); ``devices`` the devices that
    take part, in xrfed's order (None: every node's device, sorted by id); ``node_wait_s`` how long to wait for
    them to connect; ``timeout_s`` how long a query may take.
    """

    def __init__(self, aggregator: Strategy | str = "exact_lora", *, num_rounds: int,
                 rounds: RoundsConfig | None = None, phases: int = 1, seed: int = 0,
                 devices: Sequence[str] | None = None, node_wait_s: float = 120.0, timeout_s: float = 600.0,
                 **aggregator_options: Any):
        super().__init__()
        self.xrfed: Strategy = aggregator if isinstance(aggregator, Strategy) else make_strategy(
            aggregator, **aggregator_options)
        self.cfg = rounds if rounds is not None else RoundsConfig()
        if self.cfg.paradigm != "centralized":
            raise ConfigError("rounds.paradigm", "has no Flower equivalent (Flower's messages go between the "
                              "ServerApp and the nodes, never node to node); run it with xrfed's runner",
                              value=self.cfg.paradigm, allowed=["centralized"])
        if isinstance(num_rounds, bool) or not isinstance(num_rounds, int) or num_rounds < 1:
            raise ConfigError("num_rounds", "must be an integer >= 1", value=num_rounds)
        if isinstance(phases, bool) or not isinstance(phases, int) or phases < 1:
            raise ConfigError("phases", "must be an integer >= 1", value=phases)
        self.num_rounds, self.phases, self.seed = num_rounds, phases, int(seed)
        self.order: list[str] | None = list(devices) if devices is not None else None
        self.node_wait_s, self.timeout_s = float(node_wait_s), float(timeout_s)
        self.dp: DPConfig | None = None
        self.records: list[RoundRecord] = []
        #: per device, every tensor name it ever sent up (what crossed the wire: tests check no personal one did)
        self.uplink_keys: dict[str, set[str]] = {}
        self.ids: list[str] = []
        self.node_of: dict[str, int] = {}
        self.info: dict[str, dict[str, Any]] = {}
        self.templates: dict[str, dict[str, torch.Tensor]] = {}
        self.received: dict[str, dict[str, torch.Tensor]] = {}
        self.holds: dict[str, bool] = {}  # the device runs what it last received (False after training unheard)
        self.global_state: dict[str, torch.Tensor] = {}
        self.ledger: CommLedger | None = None
        self.battery_j: dict[str, float | None] = {}
        self.accountant = RdpAccountant()
        self.local_accountants: dict[str, RdpAccountant] = {}
        self._holders: dict[str, int] | None = None
        self._round: _Round | None = None

    # -- DP (set by the wrapper) ---------------------------------------------------------------------------------
    def _use_dp(self, dp: DPConfig) -> None:
        if self.dp is not None:
            raise ConfigError("dp", "the strategy is already wrapped with differential privacy")
        self.xrfed = DifferentialPrivacy(self.xrfed, clip_norm=dp.clip_norm, noise_multiplier=dp.noise_multiplier,
                                         mode=dp.mode)
        self.dp = dp

    # -- Flower's Strategy interface -------------------------------------------------------------------------------
    def summary(self) -> None:
        _log("\t├──> xrfed aggregator: %s %s", self.xrfed.name, self.xrfed.config())
        _log("\t└──> xrfed rounds: %s, phases %d, seed %d", self.cfg, self.phases, self.seed)

    def configure_train(self, server_round: int, arrays: Any, config: Any, grid: Any) -> Iterable[Any]:
        from flwr.app import ConfigRecord, Message, MessageType, RecordDict

        r = int(server_round) - 1
        if not 0 <= r < self.num_rounds:
            raise ConfigError("server_round", f"expected 1..{self.num_rounds} (num_rounds of the strategy)",
                              value=server_round)
        t0 = time.perf_counter()
        if not self.ids:
            self._discover(grid)
        assert self.ledger is not None
        self.ledger.drop_round(r)
        phase = phase_of_round(r, self.num_rounds, self.phases)
        stats: dict[str, DeviceRoundStats] = {}
        online, sampled = self._select(np.random.default_rng(derive_seed(self.seed, "round", r, 0)), stats)
        rnd = _Round(r, phase, t0, online, sampled, RoundRecord(r, "centralized", phase, stats, {}, 0.0, 0.0))
        self._round = rnd
        alive = set(grid.get_node_ids())
        messages = []
        for d in sampled:
            if self.node_of[d] not in alive:  # its node left the federation: a dropout, nothing is sent
                stats[d] = DeviceRoundStats(DROPPED, battery_frac=self._battery_frac(d))
                continue
            cfg: dict[str, Any] = {k: v for k, v in dict(config).items()}
            cfg.update({"server-round": int(server_round), "xrfed.round": r, "xrfed.phase": phase,
                        "xrfed.local-steps": int(self.cfg.local_steps),
                        "xrfed.seed": derive_seed(self.seed, "train", d, r), "xrfed.install": self.holds[d]})
            if self.dp is not None:
                cfg.update({"xrfed.dp-clip-norm": float(self.dp.clip_norm),
                            "xrfed.dp-noise-multiplier": float(self.dp.noise_multiplier),
                            "xrfed.dp-mode": self.dp.mode, "xrfed.lora-space": self.xrfed.lora,
                            "xrfed.dp-seed": derive_seed(self.seed, "dp-device", d, r)})
            payload = to_array_record(self.received[d])
            rnd.wire_down += _wire_bytes(payload)
            messages.append(Message(content=RecordDict({ARRAYS: payload, CONFIG: ConfigRecord(cfg)}),
                                    dst_node_id=self.node_of[d], message_type=MessageType.TRAIN))
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Any]) -> tuple[Any, Any]:
        from flwr.app import MetricRecord

        rnd = self._current(server_round)
        r, stats = rnd.idx, rnd.record.devices
        by_dev = self._by_device(replies)
        on_time: list[str] = []
        deltas: dict[str, dict[str, torch.Tensor]] = {}
        sent_bytes: dict[str, int] = {}
        weights: dict[str, float] = {}
        compute_s: dict[str, float] = {}
        finish_s: dict[str, float] = {}
        for d in rnd.sampled:
            if stats.get(d) is not None and stats[d].status == DROPPED:
                continue
            reply = by_dev.get(d)
            if reply is None or reply.has_error():
                why = "no reply" if reply is None else reply.error.reason
                _log("xrfed: device %s dropped out of round %d (%s)", d, r, str(why)[:200])
                stats[d] = DeviceRoundStats(DROPPED, battery_frac=self._battery_frac(d))
                continue
            m = self._metrics(d, reply, ("num-examples", "train-loss", "flops", "compute-gflop", "train-wall-s"))
            record = reply.content.array_records.get(ARRAYS)
            if record is None:
                raise AggregationError(f"device {d!r}: its train reply has no {ARRAYS!r} array record")
            rnd.wire_up += _wire_bytes(record)
            self.uplink_keys.setdefault(d, set()).update(record.keys())
            who = f"device {d!r} (node {self.node_of[d]}), round {r}"
            if self.dp is None:
                upd = from_array_record(record, spec_of(self.templates[d]), who=who)
                new, old = self._encode(d, upd), self._encode(d, self.received[d])
                release = {k: v - old[k] for k, v in new.items()}
                norm, payload_b = update_norm(release), tensor_nbytes(upd)
            else:
                common = self._encode(d, self.templates[d])
                release = from_array_record(record, {k: (tuple(v.shape), "float64") for k, v in common.items()},
                                            who=who)
                norm, payload_b = float(self._metric(d, m, "update-norm")), int(self._metric(d, m, "payload-bytes"))
            prof = self.info[d]["profile"]
            c_s = float(m["compute-gflop"]) / prof.gflops_sustained
            c_j = prof.compute_joules(float(m["flops"]))
            self._spend(d, c_j)
            finish_s[d] = c_s + transfer_time_s(payload_b, prof.uplink_mbps)
            late = self.cfg.deadline_s is not None and finish_s[d] > self.cfg.deadline_s
            storage = int(m["storage-bytes"]) if "storage-bytes" in m else payload_b
            stats[d] = DeviceRoundStats(
                "missed_deadline" if late else "participant", train_loss=float(m["train-loss"]), train_time_s=c_s,
                train_wall_s=float(m["train-wall-s"]), update_norm=norm, compute_joules=c_j, storage_bytes=storage,
                active_modules=len({x for k in self.templates[d] for x in (agg.key_modality(k), agg.key_task(k))
                                    if x}))
            self.holds[d] = False
            if not late:
                on_time.append(d)
                deltas[d], sent_bytes[d] = release, payload_b
                weights[d] = 1.0 if self.dp is not None else float(max(1, int(m["num-examples"])))
                compute_s[d] = c_s
        if on_time:
            rnd.record.round_latency_s = self._centralized(rnd, on_time, deltas, sent_bytes, weights, compute_s)
        else:
            rnd.record.round_latency_s = max(finish_s.values(), default=0.0)
        self._account_privacy(on_time)
        rnd.record.epsilon = self.epsilon()
        train = [stats[d] for d in rnd.sampled if stats[d].status != DROPPED]
        metrics = MetricRecord({
            "participants": len(on_time), "dropped": sum(stats[d].status == DROPPED for d in rnd.sampled),
            "train-loss": float(np.mean([s.train_loss for s in train if s.train_loss is not None]))
            if train else float("nan")})
        return (to_array_record(self.global_state) if on_time else None), metrics

    def configure_evaluate(self, server_round: int, arrays: Any, config: Any, grid: Any) -> Iterable[Any]:
        from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

        rnd = self._current(server_round)
        messages = []
        alive = set(grid.get_node_ids())
        for d in rnd.online:
            if self.node_of[d] not in alive:
                continue
            payload = to_array_record(rnd.payloads[d]) if d in rnd.payloads else ArrayRecord()
            rnd.wire_down += _wire_bytes(payload)
            cfg = {**dict(config), "server-round": int(server_round), "xrfed.round": rnd.idx,
                   "xrfed.phase": rnd.phase}
            messages.append(Message(content=RecordDict({ARRAYS: payload, CONFIG: ConfigRecord(cfg)}),
                                    dst_node_id=self.node_of[d], message_type=MessageType.EVALUATE))
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Any]) -> Any:
        from flwr.app import MetricRecord

        assert self.ledger is not None
        rnd = self._current(server_round)
        stats, r = rnd.record.devices, rnd.idx
        by_dev = self._by_device(replies)
        for d in rnd.online:
            reply = by_dev.get(d)
            if reply is None or reply.has_error():
                if d not in stats or stats[d].status == "participant":
                    stats[d] = DeviceRoundStats(DROPPED, battery_frac=self._battery_frac(d))
                continue
            m = self._metrics(d, reply, ("accuracy", "balanced-accuracy", "global-accuracy",
                                         "global-balanced-accuracy", "latency-ms"))
            s = stats[d]
            s.accuracy, s.balanced_accuracy = _finite(m["accuracy"]), _finite(m["balanced-accuracy"])
            s.global_accuracy = _finite(m["global-accuracy"])
            s.global_balanced_accuracy = _finite(m["global-balanced-accuracy"])
            if s.balanced_accuracy is not None and s.global_balanced_accuracy is not None:
                s.personalization_gain = s.balanced_accuracy - s.global_balanced_accuracy
            s.accuracy_per_task = {k.split(".", 1)[1]: float(v) for k, v in m.items() if k.startswith("accuracy.")}
            s.balanced_accuracy_per_task = {k.split(".", 1)[1]: float(v) for k, v in m.items()
                                            if k.startswith("balanced-accuracy.")}
            s.inference_latency_ms = _finite(m["latency-ms"])
        totals = self.ledger.device_totals(r)
        for d, s in stats.items():
            t = totals.get(d, {})
            s.bytes_sent, s.bytes_received = int(t.get("bytes_sent", 0)), int(t.get("bytes_received", 0))
            s.comm_joules = float(t.get("comm_joules", 0.0))
            self._spend(d, s.comm_joules)
            s.battery_frac = self._battery_frac(d)
        rec = rnd.record
        rec.links = self.ledger.round_totals(r)
        rec.diagnostics["flower_downlink_bytes"] = float(rnd.wire_down)
        rec.diagnostics["flower_uplink_bytes"] = float(rnd.wire_up)
        rec.wall_time_s = time.perf_counter() - rnd.t0
        self.records.append(rec)
        self._round = None
        out: dict[str, Any] = {"round-latency-s": float(rec.round_latency_s), "wall-time-s": float(rec.wall_time_s),
                               "uplink-bytes": int(rec.links.get("uplink", {}).get("bytes", 0)),
                               "downlink-bytes": int(rec.links.get("downlink", {}).get("bytes", 0))}
        for k in ("accuracy", "balanced_accuracy", "global_balanced_accuracy", "personalization_gain"):
            v = rec.mean(k)
            if v is not None:
                out[k.replace("_", "-")] = v
        if rec.epsilon is not None:
            out["epsilon"] = float(rec.epsilon)
        return MetricRecord(out)

    # -- discovery -------------------------------------------------------------------------------------------------
    def _discover(self, grid: Any) -> None:
        """Ask every node which device it hosts; form the common starting state (RoundEngine.initial_sync)."""
        from flwr.app import ConfigRecord, Message, MessageType, RecordDict

        from bridge.devices import get_device

        want = len(self.order) if self.order is not None else 1
        deadline = time.monotonic() + self.node_wait_s
        nodes = list(grid.get_node_ids())
        while len(nodes) < want:
            if time.monotonic() > deadline:
                raise FlowerError(f"expected {want} nodes (one per device), {len(nodes)} connected after "
                                  f"{self.node_wait_s:g} s")
            time.sleep(0.2)
            nodes = list(grid.get_node_ids())
        queries = [Message(content=RecordDict({CONFIG: ConfigRecord({})}), dst_node_id=n,
                           message_type=MessageType.QUERY) for n in nodes]
        found: dict[str, tuple[int, Any]] = {}
        for reply in grid.send_and_receive(queries, timeout=self.timeout_s):
            node = int(reply.metadata.src_node_id)
            if reply.has_error():
                raise FlowerError(f"node {node} could not start its device: {reply.error.reason}")
            facts = reply.content.config_records.get(DEVICE)
            if facts is None:
                raise FlowerError(f"node {node} does not host an xrfed device (its query reply has no {DEVICE!r})")
            d = str(facts["device-id"])
            if d in found:
                raise FlowerError(f"device {d!r} is hosted by two nodes ({found[d][0]} and {node})")
            found[d] = (node, reply.content)
        order = self.order if self.order is not None else sorted(found)
        missing = [d for d in order if d not in found]
        if missing:
            raise FlowerError(f"no node hosts device(s) {missing}; nodes host {sorted(found)}")
        self.ids = list(order)
        states: list[dict[str, torch.Tensor]] = []
        for d in self.ids:
            node, content = found[d]
            facts = content.config_records[DEVICE]
            prof = get_device(str(facts["profile"]))  # an unknown profile lists the known ones
            self.node_of[d] = node
            self.info[d] = {"profile": prof, "modalities": tuple(str(x) for x in facts["modalities"]),
                            "tasks": tuple(str(x) for x in facts["tasks"]), "lora_scale": float(facts["lora-scale"]),
                            "personal": bool(facts["personal"])}
            shared = content.array_records.get(ARRAYS)
            if shared is None:
                raise FlowerError(f"device {d!r} (node {node}) sent no starting tensors")
            states.append(from_array_record(shared, who=f"device {d!r} (node {node}) starting tensors"))
        first: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}
        for s in states:
            for k, t in s.items():
                first.setdefault((k, tuple(t.shape)), t)
        synced = {d: {k: first[(k, tuple(t.shape))].clone() for k, t in s.items()}
                  for d, s in zip(self.ids, states, strict=True)}
        self.templates = {d: {k: t.detach().clone() for k, t in s.items()} for d, s in synced.items()}
        self.received = {d: dict(s) for d, s in self.templates.items()}
        self.holds = dict.fromkeys(self.ids, True)
        self.global_state = {}
        for state in self.xrfed.align([self._encode(d, synced[d]) for d in self.ids]):
            for k, v in state.items():
                self.global_state.setdefault(k, v)
        profiles = {d: self.info[d]["profile"] for d in self.ids}
        self.ledger = CommLedger(profiles)
        self.battery_j = {d: (None if p.battery_wh is None else p.battery_wh * 3600.0) for d, p in profiles.items()}
        self.local_accountants = {d: RdpAccountant() for d in self.ids}
        _log("xrfed: %d devices on %d nodes: %s", len(self.ids), len(nodes), ", ".join(self.ids))

    # -- xrfed's centralized round ---------------------------------------------------------------------------------
    def _encode(self, d: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.xrfed.encode(tensors, float(self.info[d]["lora_scale"]))

    def _centralized(self, rnd: _Round, on_time: list[str], deltas: Mapping[str, dict[str, torch.Tensor]],
                     sent_bytes: Mapping[str, int], weights: Mapping[str, float],
                     compute_s: Mapping[str, float]) -> float:
        """:class:`federation.paradigms.Centralized` on the on-time deltas; returns the round's simulated latency."""
        assert self.ledger is not None
        r = rnd.idx
        contribs, finish = [], []
        for d in on_time:
            if self.dp is None:
                nbytes = sent_bytes[d]
            else:
                bounds = None if self.dp.mode == "local" else {k: 2 * agg.product_rank(self.templates[d], k) for k in deltas[d]}
                nbytes = common_nbytes(deltas[d], bounds)
            self.ledger.record(r, LinkType.UPLINK, d, SERVER, nbytes)
            finish.append(compute_s[d] + transfer_time_s(nbytes, self.info[d]["profile"].uplink_mbps))
            i = self.info[d]
            contribs.append(ClientUpdate(d, r, deltas[d], weights[d], i["modalities"], i["tasks"]))  # type: ignore[arg-type]
        result = self.xrfed.aggregate(contribs, self._aggregation_context(r))
        rnd.record.diagnostics.update(result.diagnostics)
        for k, v in result.tensors.items():  # RoundEngine.apply_to_global
            if k not in self.global_state:
                self.global_state[k] = v.clone()
                continue
            g = self.global_state[k]
            if tuple(v.shape) != tuple(g.shape):
                v = agg.zero_pad_to(v, tuple(g.shape))
            self.global_state[k] = g + v
        slowest = 0.0
        for d in rnd.online:  # RoundEngine.broadcast
            payload = self.xrfed.decode(self.global_state, self.templates[d], float(self.info[d]["lora_scale"]))
            nbytes = tensor_nbytes(payload)
            self.ledger.record(r, LinkType.DOWNLINK, SERVER, d, nbytes)
            slowest = max(slowest, transfer_time_s(nbytes, self.info[d]["profile"].uplink_mbps))
            rnd.payloads[d] = payload
            self.received[d] = {**self.received[d], **{k: v.detach().clone() for k, v in payload.items()}}
            self.holds[d] = True
        return max(finish) + slowest

    def _holder_counts(self) -> dict[str, int]:
        if self._holders is None:
            self._holders = key_holders(self.xrfed, ((self._encode(d, self.templates[d]), self.info[d])
                                                     for d in self.ids))
        return self._holders

    def _aggregation_context(self, r: int) -> AggregationContext:
        return dp_aggregation_context(self.seed, r, self.cfg.availability * self.cfg.participation,
                                      self._holder_counts())

    def _select(self, rng: np.random.Generator, stats: dict[str, DeviceRoundStats]) -> tuple[list[str], list[str]]:
        """RoundEngine's selection, draw for draw (the same function)."""
        return select_devices(rng, self.ids, self.cfg, self._battery_frac, stats)

    def _battery_frac(self, d: str) -> float | None:
        b, p = self.battery_j.get(d), self.info[d]["profile"]
        return None if b is None or p.battery_wh is None else max(0.0, b / (p.battery_wh * 3600.0))

    def _spend(self, d: str, joules: float) -> None:
        b = self.battery_j.get(d)
        if b is not None:
            self.battery_j[d] = max(0.0, b - joules)

    def _account_privacy(self, contributors: Sequence[str]) -> None:
        if self.dp is not None:
            account_dp_round(self.dp.mode, self.dp.noise_multiplier, self.cfg.availability * self.cfg.participation,
                             self.accountant, self.local_accountants, contributors)

    def epsilon(self) -> float | None:
        """Privacy spent so far: the central accountant's, or the worst device's under local DP; None without DP."""
        return None if self.dp is None else dp_epsilon(self.dp.mode, self.dp.delta, self.accountant,
                                                       self.local_accountants)

    # -- helpers ---------------------------------------------------------------------------------------------------
    def _current(self, server_round: int) -> _Round:
        if self._round is None or self._round.idx != int(server_round) - 1:
            raise ConfigError("server_round", "aggregate/evaluate called for a round that was not configured",
                              value=server_round)
        return self._round

    def _by_device(self, replies: Iterable[Any]) -> dict[str, Any]:
        dev_of = {n: d for d, n in self.node_of.items()}
        out: dict[str, Any] = {}
        for reply in replies:
            d = dev_of.get(int(reply.metadata.src_node_id))
            if d is not None:
                out[d] = reply
        return out

    @staticmethod
    def _metrics(d: str, reply: Any, required: Sequence[str]) -> Any:
        m = reply.content.metric_records.get("metrics")
        if m is None:
            raise AggregationError(f"device {d!r}: its reply has no 'metrics' record")
        for k in required:
            XrfedStrategy._metric(d, m, k)
        return m

    @staticmethod
    def _metric(d: str, m: Any, key: str) -> float:
        v = m.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise AggregationError(f"device {d!r}: metric {key!r} missing or not a number (got {v!r})")
        return float(v)


def _finite(x: float) -> float | None:
    return None if x is None or math.isnan(float(x)) else float(x)


class XrfedDifferentialPrivacy(_FlowerStrategy):
    """Client-level DP around an :class:`XrfedStrategy`, as Flower's DP wrappers wrap a strategy.

    Every device clips its common-space delta to ``clip_norm`` *on the device* (the wrapper puts the clip norm
    into each train message; xrfed's ClientApp clips before anything leaves); ``central`` mode adds Gaussian noise
    of std ``noise_multiplier * clip_norm`` once to the sum on the server (needs an averaging aggregator),
    ``local`` mode has every device noise its own release. Accounting: the sampled-Gaussian RDP accountant
    (``epsilon`` in every round's metrics), exactly as ``xrfed run`` with ``dp.enabled``."""

    def __init__(self, strategy: XrfedStrategy, *, clip_norm: float, noise_multiplier: float,
                 mode: str = "central", delta: float = 1e-5):
        super().__init__()
        if not isinstance(strategy, XrfedStrategy):
            raise ConfigError("strategy", "expected an XrfedStrategy to wrap", value=type(strategy).__name__)
        strategy._use_dp(DPConfig(enabled=True, clip_norm=clip_norm, noise_multiplier=noise_multiplier, mode=mode,
                                  delta=delta))
        self.strategy = strategy

    @property
    def records(self) -> list[RoundRecord]:
        return self.strategy.records

    def epsilon(self) -> float | None:
        return self.strategy.epsilon()

    def summary(self) -> None:
        assert self.strategy.dp is not None
        _log("\t├──> xrfed client-level DP: clip %g, noise multiplier %g, %s", self.strategy.dp.clip_norm,
             self.strategy.dp.noise_multiplier, self.strategy.dp.mode)
        self.strategy.summary()

    def configure_train(self, server_round, arrays, config, grid):
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        return self.strategy.aggregate_train(server_round, replies)

    def configure_evaluate(self, server_round, arrays, config, grid):
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round, replies):
        return self.strategy.aggregate_evaluate(server_round, replies)


def strategy_from_config(cfg: ExperimentConfig, **kw: Any) -> XrfedStrategy | XrfedDifferentialPrivacy:
    """The Flower strategy of an experiment config: its aggregator, rounds, phases, seed and devices, wrapped in
    :class:`XrfedDifferentialPrivacy` when ``dp.enabled`` (the config's paradigm must be centralized)."""
    s = XrfedStrategy(cfg.aggregator.make(), num_rounds=cfg.rounds.rounds, rounds=cfg.rounds, phases=cfg.phases,
                      seed=cfg.seed, devices=[d.id for d in cfg.devices], **kw)
    if cfg.dp.enabled:
        return XrfedDifferentialPrivacy(s, clip_norm=cfg.dp.clip_norm, noise_multiplier=cfg.dp.noise_multiplier,
                                        mode=cfg.dp.mode, delta=cfg.dp.delta)
    return s

