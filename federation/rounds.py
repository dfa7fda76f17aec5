"""The round engine: select -> local train -> collect adapter updates -> paradigm -> evaluate.

One :class:`RoundEngine` drives any set of devices (through an :class:`~federation.client.Executor`) under one of
the registered paradigms (:mod:`federation.paradigms`: centralized, semi, decentralized, local) with one strategy
(:mod:`federation.strategies`), optionally wrapped in :class:`~federation.strategies.DifferentialPrivacy`.

Per round:

1. selection: devices go offline (``availability``), sit out on low battery, are not sampled
   (``participation``);
2. the sampled devices train locally (``local_steps``, a seed per device and round) and hand over their shared
   tensors; each update becomes a common-space *delta* against the state the device last received, clipped on the
   device (and noised there under local DP) before anything mixes it;
3. devices whose simulated compute plus upload time exceeds ``deadline_s`` are stragglers: their work is spent
   and counted, their update dropped;
4. the paradigm combines the on-time deltas (server aggregate + broadcast, cluster trees/consensus, gossip, or
   nothing) -- every message goes through the :class:`~federation.accounting.CommLedger`. Updates reach the
   paradigm one by one, in call order, as they are fetched (:meth:`Paradigm.receive`): the centralized server folds
   each into running sums and drops it, so its memory does not grow with the number of devices;
5. DP accounting covers every paradigm: central noise with the sampled-Gaussian RDP accountant, local noise per
   device (sensitivity 2 x clip, no amplification);
6. every online device evaluates, on its held-out data of the phase, the model it now runs (global shared
   tensors + personal modules) and the global model alone: the personalization gain is their difference.

All randomness derives from ``(seed, round, ...)`` (:func:`bridge.seeding.derive_seed`), so a resumed run draws
exactly what an uninterrupted one would.

Lost devices: every call into the devices tolerates loss (:class:`~federation.client.DeviceLost`, e.g. a Ray actor
whose process died). A lost device is a ``dropout`` for the round -- not trained, not aggregated, not evaluated --
and the round completes with the others. At the start of the next round the executor rebuilds it
(:meth:`~federation.client.Executor.revive`) and the engine re-installs what it should hold (see
:meth:`RoundEngine.revive`).

Driver memory: nothing is kept per device at model size where it can be derived. Templates are meta tensors
(shapes and dtypes, no storage) shared by every device with the same key set; what each device last received is a
dict of references to tensors shared by every device that received the same broadcast (one decoded payload per
template, LoRA scale and broadcast). What stays per device at model size: the releases a non-streaming paradigm
(semi, decentralized, local) or a robust aggregator needs all at once, and the states of the decentralized and
local paradigms, where every device holds a model of its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bridge.seeding import derive_seed

from . import aggregate as agg
from . import topology as topo
from .accounting import SERVER, CommLedger, common_nbytes, tensor_nbytes, transfer_time_s
from .client import DeviceLost, Executor
from .config import AttackConfig, DPConfig, RoundsConfig
from .messages import ClientUpdate, EvalReport, LinkType, TrainReport
from .paradigms import Paradigm, RoundInputs, make_paradigm
from .privacy import RdpAccountant, account_dp_round, dp_epsilon
from .strategies import AggregationContext, DifferentialPrivacy, Strategy

__all__ = ["DeviceRoundStats", "RoundRecord", "RoundEngine", "DEFAULT_RADIO_RANGE_M", "FETCH_WINDOW", "select_devices",
           "key_holders", "dp_aggregation_context"]

#: D2D range when neither the config nor the scenario gives one (Wi-Fi Direct indoors, a room or two)
DEFAULT_RADIO_RANGE_M = 8.0
#: updates asked for at once: at most this many wait (early arrivals) so that they are folded in call order -- the
#: same sums, in the same float order, on every executor -- without the server holding every update
FETCH_WINDOW = 16

_Calls = list[tuple[str, tuple[Any, ...], dict[str, Any]]]


def _meta(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Shapes and dtypes only (meta tensors: no storage) -- all a template is read for."""
    return {k: torch.empty(tuple(t.shape), dtype=t.dtype, device="meta") for k, t in state.items()}


@dataclass
class DeviceRoundStats:
    """One device's Table-6 figures for one round (None where the device did not take that step).

    ``accuracy``/``balanced_accuracy`` are the model the device runs after the round (global shared tensors +
    its personal modules), as the mean over its tasks; ``global_*`` the global model alone on the same held-out
    data; ``personalization_gain`` = balanced accuracy of the device's model minus the global model's.
    """

    status: str  # participant | missed_deadline | not_sampled | offline | low_battery | dropout (device lost)
    accuracy: float | None = None
    balanced_accuracy: float | None = None
    global_accuracy: float | None = None
    global_balanced_accuracy: float | None = None
    personalization_gain: float | None = None
    train_loss: float | None = None
    train_time_s: float | None = None  # simulated on-device training time (profile GFLOP/s)
    train_wall_s: float | None = None
    update_norm: float | None = None  # L2 norm of the device's common-space delta before clipping
    compute_joules: float = 0.0
    comm_joules: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0
    battery_frac: float | None = None
    inference_latency_ms: float | None = None
    storage_bytes: int | None = None
    active_modules: int | None = None  # distinct encoders + heads the device trains (submodule activation)
    accuracy_per_task: dict[str, float] = field(default_factory=dict)
    balanced_accuracy_per_task: dict[str, float] = field(default_factory=dict)


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
        vals = [v for v in vals if not math.isnan(v)]
        return float(np.mean(vals)) if vals else None

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(self)
        d["counts"] = self.counts
        for k in ("accuracy", "balanced_accuracy", "global_balanced_accuracy", "personalization_gain"):
            d[f"mean_{k}"] = self.mean(k)
        return d


def _finite(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)



def select_devices(rng: np.random.Generator, ids: Sequence[str], cfg: RoundsConfig,
                   battery_frac: Callable[[str], float | None],
                   stats: dict[str, DeviceRoundStats]) -> tuple[list[str], list[str]]:
    """A round's devices, draw for draw: who is online (``cfg.availability``), who is too low on battery
    (``cfg.min_battery_frac``), who of the rest is sampled (``cfg.participation``; at least one). Fills ``stats``
    for the devices that sit the round out; returns (online, sampled). Every engine that must reproduce xrfed's rounds
    (the Flower strategy) calls this with the round's generator (:meth:`RoundEngine.rng`)."""
    online: list[str] = []
    for d in ids:
        is_online = rng.random() < cfg.availability
        frac = battery_frac(d)
        if not is_online:
            stats[d] = DeviceRoundStats("offline", battery_frac=frac)
        elif frac is not None and frac < cfg.min_battery_frac:
            stats[d] = DeviceRoundStats("low_battery", battery_frac=frac)
            online.append(d)
        else:
            online.append(d)
    eligible = [d for d in online if d not in stats]
    sampled = [d for d in eligible if rng.random() < cfg.participation]
    if not sampled and eligible:  # a round with nobody is pointless; take one device
        sampled = [eligible[int(rng.integers(len(eligible)))]]
    for d in eligible:
        if d not in sampled:
            stats[d] = DeviceRoundStats("not_sampled", battery_frac=battery_frac(d))
    return online, sampled


def key_holders(strategy: Strategy, devices: Iterable[tuple[Mapping[str, torch.Tensor], Mapping[str, Any]]]
                ) -> dict[str, int]:
    """Per common-space key, how many of ``devices`` -- (encoded template, info with modalities and tasks) --
    contribute to it under ``strategy``'s partial aggregation."""
    holders: dict[str, int] = {}
    for encoded, info in devices:
        for k in encoded:
            if strategy.holds(k, info["modalities"], info["tasks"]):
                holders[k] = holders.get(k, 0) + 1
    return holders


def dp_aggregation_context(seed: int, round_idx: int, sample_rate: float,
                           holders: Mapping[str, int]) -> AggregationContext:
    """Central DP's fixed denominators (``sample_rate`` x holders of each key) and the round's server noise
    generator, derived from the experiment seed."""
    gen = torch.Generator().manual_seed(derive_seed(seed, "dp-server", round_idx))
    return AggregationContext({k: sample_rate * n for k, n in holders.items()}, gen)

class RoundEngine:
    """Runs rounds over the devices behind ``executor`` with one paradigm, strategy and (optional) DP."""

    def __init__(self, executor: Executor, strategy: Strategy, config: RoundsConfig, *, seed: int = 0,
                 dp: DPConfig | None = None, attack: AttackConfig | None = None,
                 attackers: Sequence[str] = ()):
        self.executor, self.cfg, self.seed = executor, config, seed
        self.attack = attack if attack is not None and attack.kind in ("sign_flip", "scale") else None
        self.attackers = frozenset(attackers)
        self.dp = dp if dp is not None and dp.enabled else None
        self.strategy: Strategy = strategy if self.dp is None else DifferentialPrivacy(
            strategy, clip_norm=self.dp.clip_norm, noise_multiplier=self.dp.noise_multiplier, mode=self.dp.mode)
        self.paradigm: Paradigm = make_paradigm(config.paradigm)
        self.ids = list(executor.device_ids)
        self.radio_range_m = config.radio_range_m if config.radio_range_m is not None else DEFAULT_RADIO_RANGE_M
        self.info = {d: executor.info(d) for d in self.ids}
        self.profiles = {d: self.info[d]["profile"] for d in self.ids}
        self.ledger = CommLedger(self.profiles)
        self.accountant = RdpAccountant()  # central DP
        self.local_accountants: dict[str, RdpAccountant] = {d: RdpAccountant() for d in self.ids}  # local DP
        self.battery_j = {d: (None if p.battery_wh is None else p.battery_wh * 3600.0)
                          for d, p in self.profiles.items()}
        # each device's key/shape/dtype set: meta tensors, one dict shared by every device with the same set
        self.templates: dict[str, dict[str, torch.Tensor]] = {}
        # the shared state each device last received: references to tensors shared by every device that received
        # the same (never modified in place: a new dict replaces a device's entry)
        self.received: dict[str, dict[str, torch.Tensor]] = {}
        self.global_state: dict[str, torch.Tensor] = {}  # the server's model, in the strategy's common space
        self._holders: dict[str, int] | None = None
        self._template_pool: dict[tuple[Any, ...], dict[str, torch.Tensor]] = {}
        self._encoded: dict[tuple[int, float], tuple[Any, dict[str, torch.Tensor]]] = {}  # per round, see encode_received
        self.lost: dict[str, str] = {}  # devices lost in the current round -> reason
        # the phase each device was last told (set_phase of the same phase changes nothing on a device, and each
        # call is a round trip to every actor on Ray): a rebuilt device is told again
        self._phase_of: dict[str, int] = {}

    # -- setup -------------------------------------------------------------------------------------------
    def initial_sync(self) -> None:
        """Give every device the same starting shared state (the first holder's value per key and shape).

        This is deployment, not a round: it is not charged to the ledger. It records each device's key set (the
        template its broadcasts are cut to) and the server's starting global state.

        Streamed: the devices' states are read in call order and dropped; a device's synced state is a function of
        its template (the first holder's value per key and shape), so one dict serves every device with that
        template, and the global state comes from one device per template and LoRA scale."""
        first: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}
        for d, state in self._in_order("shared_state", self.ids, tolerate_loss=False):
            for k, t in state.items():
                if (k, tuple(t.shape)) not in first:
                    first[(k, tuple(t.shape))] = t.detach().clone()
            self.templates[d] = self._intern_template(state)
        synced: dict[int, dict[str, torch.Tensor]] = {}
        for tpl in self.templates.values():
            synced.setdefault(id(tpl), {k: first[(k, tuple(t.shape))] for k, t in tpl.items()})
        self.received = {d: synced[id(self.templates[d])] for d in self.ids}
        self.executor.map("load_shared_state", [(d, (self.received[d],), {}) for d in self.ids])
        reps: dict[tuple[int, float], str] = {}
        for d in self.ids:  # first-seen order: global_state takes the first device's value of each key
            reps.setdefault((id(self.templates[d]), float(self.info[d]["lora_scale"])), d)
        self.global_state = {}
        for state in self.strategy.align([self.encode(d, self.received[d]) for d in reps.values()]):
            for k, v in state.items():
                self.global_state.setdefault(k, v)

    def _intern_template(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The shared meta-tensor template of a key/shape/dtype set."""
        sig = tuple((k, tuple(t.shape), t.dtype) for k, t in state.items())
        return self._template_pool.setdefault(sig, _meta(state))

    # -- calls into the devices (lost devices tolerated) --------------------------------------------------------
    def _call(self, method: str, calls: _Calls) -> dict[str, Any]:
        """``executor.map`` tolerating lost devices: results of the devices still there, in call order; the lost
        ones are noted in :attr:`lost` (a dropout this round) and skipped by every later call of the round."""
        calls = [c for c in calls if c[0] not in self.lost]
        out: dict[str, Any] = {}
        for (d, _, _), res in zip(calls, self.executor.map(method, calls, tolerate_loss=True), strict=True):
            if isinstance(res, DeviceLost):
                self.lost[d] = res.reason
            else:
                out[d] = res
        return out

    def _in_order(self, method: str, ids: Sequence[str], *, window: int = FETCH_WINDOW,
                  tolerate_loss: bool = True) -> Any:
        """Yield ``(device, result)`` of a no-argument call in call order, asking ``window`` devices at a time.

        Results are taken as they finish (:meth:`~federation.client.Executor.imap`) and wait only for their
        predecessors in the window, so at most ``window`` of them are held. Lost devices are noted and skipped."""
        ids = [d for d in ids if d not in self.lost]
        for start in range(0, len(ids), window):
            chunk = ids[start:start + window]
            early: dict[int, Any] = {}
            nxt = 0
            for i, res in self.executor.imap(method, [(d, (), {}) for d in chunk], tolerate_loss=tolerate_loss):
                early[i] = res
                while nxt in early:
                    got = early.pop(nxt)
                    if isinstance(got, DeviceLost):
                        self.lost[chunk[nxt]] = got.reason
                    else:
                        yield chunk[nxt], got
                    nxt += 1

    def revive(self, round_idx: int) -> list[str]:
        """Rebuild the devices lost since the last round and re-install what each should hold; returns their ids.

        A rebuilt device comes fresh from its factory (its training and personal modules are lost). Under a server
        paradigm it receives the global model cut to its template, charged as a downlink of this round (a device
        rejoining downloads the model); otherwise (no server) the state the engine last gave it is restored, as
        deployment is, without a message."""
        revived = [d for d in self.executor.revive() if d in self.received]
        for d in revived:
            self._phase_of.pop(d, None)
        if not revived:
            return []
        calls: _Calls = []
        payloads: dict[tuple[int, float], dict[str, torch.Tensor]] = {}
        for d in revived:
            if self.paradigm.uses_server and self.global_state:
                payload = self._cut(d, payloads)
                self.ledger.record(round_idx, LinkType.DOWNLINK, SERVER, d, tensor_nbytes(payload))
                self.received[d] = {**self.received[d], **payload}
            calls.append((d, (self.received[d],), {}))
        self._call("load_shared_state", calls)
        return revived

    def _cut(self, d: str, cache: dict[tuple[int, float], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Device d's cut of the global state, decoded once per template and LoRA scale (``cache``)."""
        key = (id(self.templates[d]), float(self.info[d]["lora_scale"]))
        if key not in cache:
            cache[key] = self.strategy.decode(self.global_state, self.templates[d], key[1])
        return cache[key]

    # -- helpers used by the paradigms --------------------------------------------------------------------
    def rng(self, round_idx: int, salt: int = 0) -> np.random.Generator:
        return np.random.default_rng(derive_seed(self.seed, "round", round_idx, salt))

    def device_seed(self, round_idx: int, d: str) -> int:
        """The seed of device ``d``'s local training in round ``round_idx``."""
        return derive_seed(self.seed, "train", d, round_idx)

    def encode(self, d: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.strategy.encode(tensors, float(self.info[d]["lora_scale"]))

    def key_rank(self, d: str, key: str) -> int:
        """Device ``d``'s LoRA rank for a product key (0 when it does not hold it)."""
        return agg.product_rank(self.templates.get(d, {}), key)

    def contribution(self, d: str, round_idx: int, tensors: dict[str, torch.Tensor], weight: float) -> ClientUpdate:
        i = self.info[d]
        return ClientUpdate(d, round_idx, tensors, weight, i["modalities"], i["tasks"])  # type: ignore[arg-type]

    def filtered_releases(self, members: Sequence[str], inp: RoundInputs) -> list[dict[str, torch.Tensor]]:
        """The members' releases, partial-filtered and made shape-compatible."""
        return self.strategy.align(self.strategy.filtered(
            [self.contribution(d, inp.round_idx, inp.deltas[d], inp.weights[d]) for d in members]))

    def encode_received(self, d: str) -> dict[str, torch.Tensor]:
        """:meth:`encode` of what device ``d`` last received, computed once per round for every device that received
        the same (the cache is emptied at the start of each round)."""
        key = (id(self.received[d]), float(self.info[d]["lora_scale"]))
        hit = self._encoded.get(key)
        if hit is None or hit[0] is not self.received[d]:
            hit = (self.received[d], self.encode(d, self.received[d]))
            self._encoded[key] = hit
        return hit[1]

    def local_state(self, d: str, inp: RoundInputs) -> dict[str, torch.Tensor]:
        """Device ``d``'s state after its round, as the world sees it: what it received plus its release."""
        base = self.encode_received(d)
        return {k: base[k] + v for k, v in inp.deltas[d].items()}

    def _holder_counts(self) -> dict[str, int]:
        """Per common-space key, how many devices contribute to it (their key sets never change)."""
        if self._holders is None:
            self._holders = key_holders(self.strategy, ((self.encode(d, self.templates[d]), self.info[d])
                                                        for d in self.ids))
        return self._holders

    def aggregation_context(self, round_idx: int) -> AggregationContext:
        """DP's fixed denominators (expected contributors per key) and the server's noise generator."""
        return dp_aggregation_context(self.seed, round_idx, self.cfg.availability * self.cfg.participation,
                                      self._holder_counts())

    def apply_to_global(self, delta: Mapping[str, torch.Tensor]) -> None:
        """The server's model moves by the aggregated delta (keys nobody contributed stay as they were)."""
        for k, v in delta.items():
            if k not in self.global_state:
                self.global_state[k] = v.clone()
                continue
            g = self.global_state[k]
            if tuple(v.shape) != tuple(g.shape):  # padded factors of a round without the highest-rank holders
                v = agg.zero_pad_to(v, tuple(g.shape))
            self.global_state[k] = g + v

    def broadcast(self, round_idx: int, receivers: Sequence[str]) -> float:
        """Downlink each receiver's cut of the global state; returns the slowest downlink time (s).

        The cut is decoded once per template and LoRA scale and shared by every receiver of it (the driver holds
        one payload per kind of device, not one per device)."""
        calls: _Calls = []
        slowest = 0.0
        cuts: dict[tuple[int, float], dict[str, torch.Tensor]] = {}
        nbytes_of: dict[int, int] = {}
        merged: dict[tuple[int, int], tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = {}
        for d in receivers:
            if d in self.lost:
                continue
            payload = self._cut(d, cuts)
            nbytes = nbytes_of.setdefault(id(payload), tensor_nbytes(payload))
            self.ledger.record(round_idx, LinkType.DOWNLINK, SERVER, d, nbytes)
            slowest = max(slowest, transfer_time_s(nbytes, self.profiles[d].uplink_mbps))
            calls.append((d, (payload,), {}))
            old = self.received[d]
            mk = (id(old), id(payload))
            if mk not in merged:  # the old dict is kept alive beside the merge, so its id is not reused meanwhile
                merged[mk] = (old, {**old, **payload})
            self.received[d] = merged[mk][1]
        self._call("load_shared_state", calls)
        return slowest

    def install(self, round_idx: int, states: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
        """Devices take their own (consensus) common-space states, cut to their ranks (no message: local)."""
        calls: _Calls = []
        for d, common in states.items():
            payload = self.strategy.decode(common, self.templates[d], float(self.info[d]["lora_scale"]))
            calls.append((d, (payload,), {}))
            self.received[d] = {**self.received[d], **{k: v.detach().clone() for k, v in payload.items()}}
        self._call("load_shared_state", calls)

    def keep_own(self, ids: Sequence[str], updates: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
        """Local-only: each device's own trained tensors become its global model."""
        self._call("load_shared_state", [(d, (dict(updates[d]),), {}) for d in ids])
        for d in ids:
            self.received[d] = {k: v.detach().clone() for k, v in updates[d].items()}

    def graph(self, members: Sequence[str], positions_m: Mapping[str, Sequence[float]] | None) -> np.ndarray:
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
        adj = self.graph(self.ids, positions_m)
        return [[self.ids[i] for i in c] for c in topo.greedy_clusters(adj, self.cfg.max_cluster_size)]

    def charge_gossip(self, round_idx: int, members: Sequence[str], states: Sequence[Mapping[str, torch.Tensor]],
                      adj: np.ndarray, steps: int) -> float:
        """Each consensus step, every device sends each neighbour the keys they both hold; returns the simulated
        D2D time (per step, the slowest single exchange).

        A product's message at step t is bounded by the ranks of the devices within t hops of the sender."""
        total = 0.0
        local_dp = self.dp is not None and self.dp.mode == "local"
        for t in range(steps):
            reach = topo.reach_within(adj, t)
            slowest = 0.0
            for i, j in zip(*(ix.tolist() for ix in np.nonzero(adj)), strict=True):
                shared = {k: v for k, v in states[i].items() if k in states[j]}
                if not shared:
                    continue
                near = [int(h) for h in np.flatnonzero(reach[i])]
                bounds = None if local_dp else {
                    k: sum(self.key_rank(members[h], k) for h in near if k in states[h]) for k in shared}
                nbytes = common_nbytes(shared, bounds)
                src, dst = members[i], members[j]
                self.ledger.record(round_idx, LinkType.D2D, src, dst, nbytes)
                rate = min(self.profiles[src].d2d_mbps, self.profiles[dst].d2d_mbps)
                slowest = max(slowest, transfer_time_s(nbytes, rate))
            total += slowest
        return total

    # -- battery ------------------------------------------------------------------------------------------
    def _battery_frac(self, d: str) -> float | None:
        b, p = self.battery_j[d], self.profiles[d]
        return None if b is None or p.battery_wh is None else max(0.0, b / (p.battery_wh * 3600.0))

    def _spend(self, d: str, joules: float) -> None:
        b = self.battery_j[d]
        if b is not None:
            self.battery_j[d] = max(0.0, b - joules)

    # -- the round ---------------------------------------------------------------------------------------------
    def _select(self, rng: np.random.Generator, stats: dict[str, DeviceRoundStats]) -> tuple[list[str], list[str]]:
        return select_devices(rng, self.ids, self.cfg, self._battery_frac, stats)

    def _release(self, d: str, round_idx: int, update: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor],
                                                                                             float]:
        """Device d's common-space delta against what it last received (clipped/noised under DP), and its norm."""
        from .privacy import update_norm

        new, old = self.encode(d, update), self.encode_received(d)
        delta = {k: v - old[k] for k, v in new.items()}
        if self.attack is not None and d in self.attackers:  # a poisoning device (update attacks)
            factor = -1.0 if self.attack.kind == "sign_flip" else float(self.attack.scale)
            delta = {k: factor * v for k, v in delta.items()}
        if isinstance(self.strategy, DifferentialPrivacy):
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "dp-device", d, round_idx))
            return self.strategy.device_release(delta, gen)
        return delta, update_norm(delta)

    def run_round(self, round_idx: int, *, phase: int = 0,
                  positions_m: Mapping[str, Sequence[float]] | None = None) -> RoundRecord:
        t0 = time.perf_counter()
        if not self.templates:
            self.initial_sync()
        self.ledger.drop_round(round_idx)
        self.lost = {}
        self._encoded = {}
        rng = self.rng(round_idx)
        stats: dict[str, DeviceRoundStats] = {}
        online, sampled = self._select(rng, stats)
        self.revive(round_idx)

        told = [d for d in self.ids if self._phase_of.get(d) != phase]
        self._call("set_phase", [(d, (phase,), {}) for d in told])
        self._phase_of.update({d: phase for d in told if d not in self.lost})
        reports: dict[str, TrainReport] = self._call(
            "local_train", [(d, (), {"steps": self.cfg.local_steps, "seed": self.device_seed(round_idx, d)})
                            for d in sampled])
        inp = RoundInputs(round_idx, [], online, {}, {}, {}, {}, positions_m,
                          RoundRecord(round_idx, self.cfg.paradigm, phase, stats, {}, 0.0, 0.0))
        self.paradigm.start(self, inp)
        finish_s: dict[str, float] = {}
        for d, upd in self._in_order("shared_state", list(reports)):
            rep = reports[d]
            prof = self.profiles[d]
            compute_s = rep.compute_gflop / prof.gflops_sustained
            compute_j = prof.compute_joules(rep.flops)
            self._spend(d, compute_j)
            upload_s = transfer_time_s(tensor_nbytes(upd), prof.uplink_mbps) if self.paradigm.communicates else 0.0
            finish_s[d] = compute_s + upload_s
            late = self.cfg.deadline_s is not None and self.paradigm.communicates and finish_s[d] > self.cfg.deadline_s
            release, norm = self._release(d, round_idx, upd)
            stats[d] = DeviceRoundStats(
                "missed_deadline" if late else "participant", train_loss=rep.loss, train_time_s=compute_s,
                train_wall_s=rep.wall_time_s, update_norm=norm, compute_joules=compute_j,
                storage_bytes=rep.storage_bytes if rep.storage_bytes is not None else tensor_nbytes(upd),
                active_modules=len({m for k in upd for m in (agg.key_modality(k), agg.key_task(k)) if m}))
            if not late:
                inp.on_time.append(d)
                inp.weights[d] = 1.0 if self.dp is not None else float(max(1, int(rep.num_samples)))
                inp.compute_s[d] = compute_s
                self.paradigm.receive(self, inp, d, upd, release)
            del upd, release  # a streaming paradigm has folded them: nothing of this device's update stays

        inp.online = [d for d in online if d not in self.lost]
        record = inp.record
        if inp.on_time:
            record.round_latency_s = self.paradigm.run(self, inp)
        else:
            record.round_latency_s = max(finish_s.values(), default=0.0)
        self._account_privacy(inp.on_time)
        record.epsilon = self.epsilon()

        self._evaluate([d for d in online if d not in self.lost], stats)
        for d in self.lost:  # a device lost anywhere in the round is a dropout of the round
            if d not in stats or stats[d].status != "offline":
                stats[d] = DeviceRoundStats("dropout", battery_frac=self._battery_frac(d))
        if self.lost:
            record.diagnostics["dropouts"] = float(len(self.lost))
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

    def _evaluate(self, online: Sequence[str], stats: dict[str, DeviceRoundStats]) -> None:
        """Everyone online evaluates the model it now runs and, when it has personal modules, the global one."""
        evals: dict[str, EvalReport] = self._call("evaluate", [(d, (), {}) for d in online])
        personal = [d for d in evals if self.info[d].get("personal", True)]
        gevals: dict[str, EvalReport] = self._call("evaluate_global", [(d, (), {}) for d in personal])
        for d, ev in evals.items():
            if d in self.lost:  # lost during evaluate_global: a dropout, no figures
                continue
            s = stats[d]
            g = gevals.get(d, ev)
            s.accuracy, s.balanced_accuracy = _finite(ev.mean_accuracy), _finite(ev.macro_balanced_accuracy)
            s.global_accuracy, s.global_balanced_accuracy = _finite(g.mean_accuracy), _finite(
                g.macro_balanced_accuracy)
            if s.balanced_accuracy is not None and s.global_balanced_accuracy is not None:
                s.personalization_gain = s.balanced_accuracy - s.global_balanced_accuracy
            s.accuracy_per_task = dict(ev.accuracy)
            s.balanced_accuracy_per_task = dict(ev.balanced_accuracy)
            s.inference_latency_ms = _finite(ev.latency_ms)

    # -- privacy -------------------------------------------------------------------------------------------------
    def _account_privacy(self, contributors: Sequence[str]) -> None:
        if self.dp is not None:
            account_dp_round(self.dp.mode, self.dp.noise_multiplier, self.cfg.availability * self.cfg.participation,
                             self.accountant, self.local_accountants, contributors)

    def epsilon(self) -> float | None:
        """Privacy spent so far: the central accountant's, or the worst device's under local DP; None without DP."""
        return None if self.dp is None else dp_epsilon(self.dp.mode, self.dp.delta, self.accountant,
                                                       self.local_accountants)

    # -- checkpointing -------------------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """(JSON header, tensors) of everything the engine keeps between rounds."""
        header = {"battery_j": self.battery_j, "accountant": self.accountant.state_dict(),
                  "local_accountants": {d: a.state_dict() for d, a in self.local_accountants.items()},
                  "ledger": self.ledger.to_rows()}
        tensors: dict[str, torch.Tensor] = {}
        for d, st in self.received.items():
            for k, t in st.items():
                tensors[f"received/{d}/{k}"] = t.detach().clone()  # safetensors refuses shared storage
        for d, st in self.templates.items():  # a template is read for its shapes and dtypes only
            for k, t in st.items():
                tensors[f"template/{d}/{k}"] = torch.zeros(tuple(t.shape), dtype=t.dtype)
        for k, t in self.global_state.items():
            tensors[f"global/-/{k}"] = t.detach().clone()
        return header, tensors

    def load_state(self, header: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> None:
        self.battery_j = {d: (None if v is None else float(v)) for d, v in header["battery_j"].items()}
        self.accountant = RdpAccountant.from_state_dict(header["accountant"])
        self.local_accountants = {d: RdpAccountant.from_state_dict(s)
                                  for d, s in header.get("local_accountants", {}).items()} or \
            {d: RdpAccountant() for d in self.ids}
        self.ledger.load_rows(list(header["ledger"]))
        received: dict[str, dict[str, torch.Tensor]] = {d: {} for d in self.ids}
        templates: dict[str, dict[str, torch.Tensor]] = {d: {} for d in self.ids}
        self.global_state = {}
        pool: dict[tuple[Any, ...], torch.Tensor] = {}  # equal tensors of different devices become one
        for name, t in tensors.items():
            kind, d, k = name.split("/", 2)
            if kind == "global":
                self.global_state[k] = t
            elif kind == "received":
                sig = (k, tuple(t.shape), t.dtype, t.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
                received[d][k] = pool.setdefault(sig, t)
            else:
                templates[d][k] = t
        del pool
        self.templates = {d: self._intern_template(st) for d, st in templates.items()}
        dicts: dict[tuple[tuple[str, int], ...], dict[str, torch.Tensor]] = {}
        self.received = {d: dicts.setdefault(tuple((k, id(t)) for k, t in st.items()), st)
                         for d, st in received.items()}
        self._holders = None
