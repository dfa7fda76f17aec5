"""The coordination paradigms of the seed paper's Fig. 3 (plus ``local``, the no-communication baseline), as
registered classes.

A paradigm decides how the on-time devices' updates become the models they hold next; the
:class:`~federation.rounds.RoundEngine` does everything around it (selection, local training, deadlines, DP
accounting, evaluation). Every paradigm works in the strategy's common space (:mod:`federation.strategies`), so
heterogeneous LoRA ranks are aggregated exactly everywhere and nothing is dropped:

* ``centralized``: every on-time device uplinks its update; the server applies the strategy to the updates'
  deltas, adds the result to its global state and broadcasts each device's cut. The server aggregates as updates
  arrive (:meth:`Paradigm.receive`): an averaging strategy folds each into running sums, so the server holds one
  model's worth of sums whatever the number of devices; a robust one (``needs_all_updates``) buffers them.
* ``semi``: devices form clusters (D2D graph components, or explicit clusters); inside a cluster the members'
  deltas are combined over D2D -- ``tree`` (default): summed exactly along a breadth-first spanning tree to a
  representative drawn anew each round (a convergecast); ``consensus``: ``d2d_rounds`` steps of sample-weighted
  Metropolis-Hastings averaging, after which the representative's estimate is uplinked (approximate unless the
  consensus has converged). One uplink per cluster; the server aggregates the clusters and broadcasts.
* ``decentralized``: no server; the participants gossip their states over the D2D graph for ``gossip_steps``
  steps (sample-weighted averaging) and each keeps its own consensus estimate.
* ``local``: no communication at all; each device keeps what it trained (the local-only baseline).

D2D messages in the product space are charged at ``min(d * n, R * (d + n))`` elements per LoRA product, R being
the summed ranks of the devices a message combines (:func:`federation.accounting.common_nbytes`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from . import topology as topo
from .accounting import SERVER, common_nbytes, tensor_nbytes, transfer_time_s
from .errors import UnknownNameError
from .messages import ClientUpdate, LinkType

if TYPE_CHECKING:
    from .rounds import RoundEngine, RoundRecord

__all__ = ["RoundInputs", "Paradigm", "Centralized", "SemiDecentralized", "Decentralized", "LocalOnly",
           "register_paradigm", "make_paradigm", "paradigm_names", "paradigm_class", "CLUSTER_AGGREGATIONS"]

CLUSTER_AGGREGATIONS = ("tree", "consensus")


@dataclass
class RoundInputs:
    """What a paradigm gets from the engine for one round.

    ``updates[d]`` are on-time device d's shared tensors (its own ranks), ``deltas[d]`` the common-space release
    (delta against the state it last received; clipped and, for local DP, noised), ``weights[d]`` its weight
    (samples, or 1 under DP), ``compute_s[d]`` its simulated training time. A paradigm that aggregates as
    updates arrive keeps nothing in ``updates``/``deltas`` and its round's state in ``aggregation``/``ready_s``.
    """

    round_idx: int
    on_time: list[str]
    online: list[str]
    updates: dict[str, dict[str, torch.Tensor]]
    deltas: dict[str, dict[str, torch.Tensor]]
    weights: dict[str, float]
    compute_s: dict[str, float]
    positions_m: Mapping[str, Sequence[float]] | None
    record: RoundRecord
    aggregation: Any = None  # the server's strategy accumulator of the round (streaming paradigms)
    ready_s: dict[str, float] = field(default_factory=dict)  # per device: compute + upload time (s)


class Paradigm:
    """Base class. ``run`` returns the round's simulated latency in seconds (compute + communication)."""

    name: ClassVar[str] = "abstract"
    #: a server holds a global model, adds noise under central DP, and broadcasts
    uses_server: ClassVar[bool] = True
    #: devices exchange messages at all (False: nothing leaves a device, DP is meaningless)
    communicates: ClassVar[bool] = True
    #: the strategy must be an averaging one (gossip computes weighted means, nothing else)
    needs_averaging: ClassVar[bool] = False

    def start(self, engine: RoundEngine, inp: RoundInputs) -> None:
        """Called once before the round's first update arrives (nothing by default)."""

    def receive(self, engine: RoundEngine, inp: RoundInputs, d: str, update: Mapping[str, torch.Tensor],
                release: dict[str, torch.Tensor]) -> None:
        """One on-time device's update as it arrives (in call order; ``inp.weights[d]``/``compute_s[d]`` are set):
        ``update`` its own shared tensors, ``release`` its common-space delta. Kept for :meth:`run` by default."""
        inp.updates[d], inp.deltas[d] = dict(update), release

    def run(self, engine: RoundEngine, inp: RoundInputs) -> float:
        raise TypeError(f"{type(self).__name__} must implement run")

    # -- shared pieces ----------------------------------------------------------------------------------
    @staticmethod
    def _server_aggregate(engine: RoundEngine, inp: RoundInputs, contribs: list[ClientUpdate]) -> float:
        """Strategy over the contributions, added to the global state, broadcast; returns the downlink time."""
        result = engine.strategy.aggregate(contribs, engine.aggregation_context(inp.round_idx))
        inp.record.diagnostics.update(result.diagnostics)
        engine.apply_to_global(result.tensors)
        return engine.broadcast(inp.round_idx, inp.online)


class Centralized(Paradigm):
    """Every update goes up to the server as it arrives and is folded into the round's aggregation at once."""

    name = "centralized"

    def start(self, engine, inp):
        inp.aggregation = engine.strategy.accumulator(engine.aggregation_context(inp.round_idx))

    def receive(self, engine, inp, d, update, release):
        # Without DP the device sends its factors (the server knows what it broadcast, so it forms the delta);
        # a DP release is the clipped (noised) common-space delta itself.
        nbytes = self._release_nbytes(engine, d, update, release)
        engine.ledger.record(inp.round_idx, LinkType.UPLINK, d, SERVER, nbytes)
        inp.ready_s[d] = inp.compute_s[d] + transfer_time_s(nbytes, engine.profiles[d].uplink_mbps)
        inp.aggregation.add(engine.contribution(d, inp.round_idx, release, inp.weights[d]))

    def run(self, engine, inp):
        result = inp.aggregation.result()
        inp.record.diagnostics.update(result.diagnostics)
        engine.apply_to_global(result.tensors)
        down = engine.broadcast(inp.round_idx, inp.online)
        return max(inp.ready_s[d] for d in inp.on_time) + down

    @staticmethod
    def _release_nbytes(engine: RoundEngine, d: str, update: Mapping[str, torch.Tensor],
                        release: Mapping[str, torch.Tensor]) -> int:
        if engine.dp is None:
            return tensor_nbytes(update)
        bounds = None if engine.dp.mode == "local" else {k: 2 * engine.key_rank(d, k) for k in release}
        return common_nbytes(release, bounds)


class SemiDecentralized(Paradigm):
    name = "semi"

    def run(self, engine, inp):
        r = inp.round_idx
        clusters = engine.clusters(inp.positions_m)
        rng = engine.rng(r, 20_000)
        contribs: list[ClientUpdate] = []
        cluster_times, sizes = [], []
        mode = engine.cfg.cluster_aggregation
        groups_of_members: list[tuple[list[str], np.ndarray]] = []
        for cluster in clusters:
            present = [d for d in cluster if d in inp.deltas]
            if not present:
                continue
            # explicit clusters are declared able to talk (complete graph); D2D components follow the radio range.
            # A cluster whose bridging member sits out this round falls apart into the parts that can still talk.
            adj_all = engine.graph(present, None if engine.cfg.clusters else inp.positions_m)
            for comp in topo.connected_components(adj_all):
                groups_of_members.append(([present[i] for i in comp], adj_all[np.ix_(comp, comp)]))
        inp.record.clusters = [m for m, _ in groups_of_members]
        for members, adj in groups_of_members:
            sizes.append(len(members))
            rep = members[int(rng.integers(len(members)))]
            if mode == "tree":
                groups, d2d_s = self._tree(engine, r, members, rep, adj, inp)
            else:
                groups, d2d_s = self._consensus(engine, r, members, rep, adj, inp)
            # the representative uplinks every holder group's combination in one message
            payload: dict[str, torch.Tensor] = {}
            holders_of: dict[str, list[str]] = {}
            for holders, (tensors, weight) in groups.items():
                payload.update(tensors)
                holders_of.update({k: list(holders) for k in tensors})
                contribs.append(ClientUpdate(rep, r, tensors, weight,  # type: ignore[arg-type]
                                             tuple(sorted({m for h in holders for m in engine.info[h]["modalities"]})),
                                             tuple(sorted({t for h in holders for t in engine.info[h]["tasks"]}))))
            bounds = None if (engine.dp is not None and engine.dp.mode == "local") else \
                {k: sum(engine.key_rank(h, k) for h in holders_of[k]) for k in payload}
            nbytes = common_nbytes(payload, bounds)
            engine.ledger.record(r, LinkType.UPLINK, rep, SERVER, nbytes)
            up_s = transfer_time_s(nbytes, engine.profiles[rep].uplink_mbps)
            cluster_times.append(max(inp.compute_s[d] for d in members) + d2d_s + up_s)
        inp.record.diagnostics["num_clusters"] = float(len(sizes))
        inp.record.diagnostics["mean_cluster_size"] = float(np.mean(sizes)) if sizes else 0.0
        down = self._server_aggregate(engine, inp, contribs)
        return max(cluster_times) + down

    @staticmethod
    def _holder_groups(engine: RoundEngine, members: Sequence[str],
                       filtered: Sequence[Mapping[str, torch.Tensor]]) -> dict[tuple[str, ...], list[str]]:
        """Keys grouped by the members holding them (each group becomes one weighted contribution)."""
        groups: dict[tuple[str, ...], list[str]] = {}
        keys = list(dict.fromkeys(k for f in filtered for k in f))
        for k in keys:
            holders = tuple(m for m, f in zip(members, filtered, strict=True) if k in f)
            groups.setdefault(holders, []).append(k)
        return groups

    def _tree(self, engine: RoundEngine, r: int, members: list[str], rep: str, adj: np.ndarray,
              inp: RoundInputs) -> tuple[dict[tuple[str, ...], tuple[dict[str, torch.Tensor], float]], float]:
        """Exact convergecast: each member sends its subtree's weighted sums to its parent; the representative
        ends with every key's exact weighted sum over its holders. Returns (groups, D2D time)."""
        filtered = engine.filtered_releases(members, inp)
        parent = topo.bfs_tree(adj, members.index(rep))
        children: dict[int, list[int]] = {i: [] for i in range(len(members))}
        for i, p in enumerate(parent):
            if p >= 0:
                children[p].append(i)
        sums: dict[int, dict[str, torch.Tensor]] = {}
        wsum: dict[int, dict[str, float]] = {}
        holders: dict[int, dict[str, list[str]]] = {}
        depth_time: dict[int, float] = {}

        def gather(i: int) -> None:
            d = members[i]
            w = inp.weights[d]
            sums[i] = {k: v * w for k, v in filtered[i].items()}
            wsum[i] = dict.fromkeys(filtered[i], w)
            holders[i] = {k: [d] for k in filtered[i]}
            t_in = 0.0
            for c in children[i]:
                gather(c)
                for k, v in sums[c].items():
                    sums[i][k] = sums[i][k] + v if k in sums[i] else v
                    wsum[i][k] = wsum[i].get(k, 0.0) + wsum[c][k]
                    holders[i][k] = holders[i].get(k, []) + holders[c][k]
                t_in = max(t_in, depth_time[c])
            depth_time[i] = t_in
            if parent[i] >= 0:  # send the subtree's sums (and weights) to the parent
                bounds = None if (engine.dp is not None and engine.dp.mode == "local") else \
                    {k: sum(engine.key_rank(h, k) for h in holders[i][k]) for k in sums[i]}
                nbytes = common_nbytes(sums[i], bounds) + 8 * len(wsum[i])
                dst = members[parent[i]]
                engine.ledger.record(r, LinkType.D2D, d, dst, nbytes)
                rate = min(engine.profiles[d].d2d_mbps, engine.profiles[dst].d2d_mbps)
                depth_time[i] = t_in + transfer_time_s(nbytes, rate)

        root = members.index(rep)
        gather(root)
        groups: dict[tuple[str, ...], tuple[dict[str, torch.Tensor], float]] = {}
        for hs, keys in self._holder_groups(engine, members, filtered).items():
            w = wsum[root][keys[0]]
            groups[hs] = ({k: sums[root][k] / w for k in keys}, w)
        return groups, depth_time[root]

    def _consensus(self, engine: RoundEngine, r: int, members: list[str], rep: str, adj: np.ndarray,
                   inp: RoundInputs) -> tuple[dict[tuple[str, ...], tuple[dict[str, torch.Tensor], float]], float]:
        """``d2d_rounds`` steps of sample-weighted consensus; the representative's estimates, per holder group."""
        filtered = engine.filtered_releases(members, inp)
        weights = [inp.weights[d] for d in members]
        steps = engine.cfg.d2d_rounds
        mixed = topo.weighted_gossip_states(filtered, weights, adj, steps)
        d2d_s = engine.charge_gossip(r, members, filtered, adj, steps)
        j = members.index(rep)
        groups: dict[tuple[str, ...], tuple[dict[str, torch.Tensor], float]] = {}
        for hs, keys in self._holder_groups(engine, members, filtered).items():
            w = float(sum(inp.weights[h] for h in hs))
            if rep in hs:
                groups[hs] = ({k: mixed[j][k] for k in keys}, w)
            else:  # the representative does not hold these keys: the first holder's estimate is relayed
                first = members.index(hs[0])
                groups[hs] = ({k: mixed[first][k] for k in keys}, w)
        return groups, d2d_s


class Decentralized(Paradigm):
    name = "decentralized"
    uses_server = False
    needs_averaging = True

    def run(self, engine, inp):
        r = inp.round_idx
        ids = inp.on_time
        states = engine.strategy.align([engine.local_state(d, inp) for d in ids])
        states = engine.strategy.filtered([engine.contribution(d, r, s, 1.0) for d, s in zip(ids, states,
                                                                                                strict=True)])
        weights = [inp.weights[d] for d in ids]
        adj = engine.graph(ids, inp.positions_m)
        inp.record.consensus_distance_before = topo.state_consensus_distance(states)
        mixed = topo.weighted_gossip_states(states, weights, adj, engine.cfg.gossip_steps)
        inp.record.consensus_distance_after = topo.state_consensus_distance(mixed)
        inp.record.diagnostics["spectral_gap"] = topo.spectral_gap(topo.metropolis_hastings_weights(adj))
        inp.record.diagnostics["num_components"] = float(len(topo.connected_components(adj)))
        d2d_s = engine.charge_gossip(r, ids, states, adj, engine.cfg.gossip_steps)
        engine.install(r, {d: mixed[i] for i, d in enumerate(ids)})
        return max(inp.compute_s[d] for d in ids) + d2d_s


class LocalOnly(Paradigm):
    """Each device trains on its own data and keeps the result; no message is sent (the local-only baseline)."""

    name = "local"
    uses_server = False
    communicates = False

    def run(self, engine, inp):
        engine.keep_own(inp.on_time, inp.updates)
        return max(inp.compute_s[d] for d in inp.on_time)


_PARADIGMS: dict[str, type[Paradigm]] = {c.name: c for c in (Centralized, SemiDecentralized, Decentralized,
                                                             LocalOnly)}


def register_paradigm(cls: type[Paradigm], *, overwrite: bool = False) -> None:
    if cls.name in _PARADIGMS and not overwrite:
        raise ValueError(f"paradigm {cls.name!r} already registered; pass overwrite=True")
    _PARADIGMS[cls.name] = cls


def paradigm_names() -> tuple[str, ...]:
    return tuple(_PARADIGMS)


def paradigm_class(name: str) -> type[Paradigm]:
    try:
        return _PARADIGMS[name]
    except KeyError:
        raise UnknownNameError("paradigm", name, tuple(_PARADIGMS)) from None


def make_paradigm(name: str) -> Paradigm:
    return paradigm_class(name)()
