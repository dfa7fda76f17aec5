"""Device-to-device topology: the D2D graph, clusters, Metropolis-Hastings mixing and gossip.

The D2D graph links two devices when their avatars stand within the radio range (world-frame positions in
metres, z up; distance measured in the horizontal plane unless 3-D positions are asked for). Clusters are the
graph's connected components, optionally split greedily to a maximum size, so every cluster is itself connected
and its members can reach consensus over D2D alone.

Mixing uses Metropolis-Hastings weights, ``W_ij = 1 / (1 + max(d_i, d_j))`` for neighbours and
``W_ii = 1 - sum_j W_ij``: symmetric and doubly stochastic from neighbour degrees alone, so repeated mixing
``x <- W x`` converges to the plain average on a connected graph at a rate set by the spectral gap
``1 - max(|lambda_2|, |lambda_n|)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from .errors import TopologyError

__all__ = [
    "d2d_graph",
    "connected_components",
    "greedy_clusters",
    "metropolis_hastings_weights",
    "spectral_gap",
    "gossip",
    "weighted_gossip_states",
    "consensus_distance",
    "state_consensus_distance",
    "bfs_tree",
    "reach_within",
]


def _check_adjacency(adj: np.ndarray) -> np.ndarray:
    a = np.asarray(adj, dtype=bool)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise TopologyError(f"adjacency must be square, got shape {a.shape}")
    if not np.array_equal(a, a.T):
        raise TopologyError("adjacency must be symmetric (D2D links are bidirectional)")
    a = a.copy()
    np.fill_diagonal(a, False)
    return a


def d2d_graph(positions_m: np.ndarray | Sequence[Sequence[float]], radio_range_m: float, *,
              planar: bool = True) -> np.ndarray:
    """Boolean adjacency [N, N]: devices within ``radio_range_m`` of each other (no self-loops).

    ``positions_m`` are world-frame positions [N, 2] or [N, 3]; with ``planar`` only x and y count (avatars on
    the same floor; head height differences do not break a link).
    """
    p = np.asarray(positions_m, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] not in (2, 3):
        raise TopologyError(f"positions_m must be [N, 2] or [N, 3], got shape {p.shape}")
    if not np.isfinite(radio_range_m) or radio_range_m <= 0:
        raise TopologyError(f"radio_range_m must be a positive number, got {radio_range_m}")
    if planar:
        p = p[:, :2]
    dist = np.linalg.norm(p[:, None, :] - p[None, :, :], axis=-1)
    adj = dist <= radio_range_m
    np.fill_diagonal(adj, False)
    return adj


def connected_components(adj: np.ndarray) -> list[list[int]]:
    """Connected components as sorted index lists, ordered by their smallest member."""
    a = _check_adjacency(adj)
    n = a.shape[0]
    seen = np.zeros(n, dtype=bool)
    comps: list[list[int]] = []
    for start in range(n):
        if seen[start]:
            continue
        stack, comp = [start], []
        seen[start] = True
        while stack:
            i = stack.pop()
            comp.append(i)
            for j in np.flatnonzero(a[i]):
                if not seen[j]:
                    seen[j] = True
                    stack.append(int(j))
        comps.append(sorted(comp))
    return comps


def greedy_clusters(adj: np.ndarray, max_size: int | None = None) -> list[list[int]]:
    """Connected clusters of at most ``max_size`` devices.

    Each component larger than ``max_size`` is split by breadth-first growth from its lowest-index unassigned
    device, so every cluster is connected (its members can run D2D consensus) and the split is deterministic.
    """
    if max_size is not None and max_size < 1:
        raise TopologyError(f"max_size must be >= 1, got {max_size}")
    a = _check_adjacency(adj)
    out: list[list[int]] = []
    for comp in connected_components(a):
        if max_size is None or len(comp) <= max_size:
            out.append(comp)
            continue
        left = set(comp)
        while left:
            seed = min(left)
            cluster, frontier = [seed], [seed]
            left.discard(seed)
            while frontier and len(cluster) < max_size:
                i = frontier.pop(0)
                for j in sorted(int(x) for x in np.flatnonzero(a[i])):
                    if j in left and len(cluster) < max_size:
                        left.discard(j)
                        cluster.append(j)
                        frontier.append(j)
            out.append(sorted(cluster))
    return sorted(out, key=lambda c: c[0])


def metropolis_hastings_weights(adj: np.ndarray) -> np.ndarray:
    """Metropolis-Hastings mixing matrix [N, N] of a D2D graph (symmetric, doubly stochastic)."""
    a = _check_adjacency(adj)
    deg = a.sum(axis=1)
    n = a.shape[0]
    w = np.zeros((n, n))
    ii, jj = np.nonzero(a)
    w[ii, jj] = 1.0 / (1.0 + np.maximum(deg[ii], deg[jj]))
    w[np.arange(n), np.arange(n)] = 1.0 - w.sum(axis=1)
    return w


def spectral_gap(w: np.ndarray) -> float:
    """``1 - max(|lambda_2|, |lambda_n|)`` of a symmetric mixing matrix (0 for a disconnected graph)."""
    m = np.asarray(w, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise TopologyError(f"mixing matrix must be square, got shape {m.shape}")
    if m.shape[0] == 1:
        return 1.0
    ev = np.sort(np.abs(np.linalg.eigvalsh(0.5 * (m + m.T))))[::-1]
    return float(1.0 - ev[1])


def gossip(values: torch.Tensor, w: np.ndarray, steps: int) -> torch.Tensor:
    """``steps`` synchronous consensus rounds ``x <- W x`` on values [N, ...] (row i = device i's value)."""
    if steps < 0:
        raise TopologyError(f"steps must be >= 0, got {steps}")
    m = torch.as_tensor(np.asarray(w), dtype=torch.float64)
    if m.shape != (values.shape[0], values.shape[0]):
        raise TopologyError(f"mixing matrix {tuple(m.shape)} does not match {values.shape[0]} devices")
    x = values.to(torch.float64).reshape(values.shape[0], -1)
    for _ in range(steps):
        x = m @ x
    return x.reshape(values.shape).to(values.dtype)


def weighted_gossip_states(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float],
                           adj: np.ndarray, steps: int) -> list[dict[str, torch.Tensor]]:
    """Sample-weighted consensus over a D2D graph, per key among the devices that hold it.

    Each device mixes ``y_i = n_i x_i`` and ``n_i`` with the Metropolis-Hastings weights of the graph induced on
    the key's holders (holders of the same shape); its estimate is ``y_i / n_i``. Mixing preserves both sums, so on a connected graph every
    estimate converges to the sample-weighted average (the FedAvg value) rather than the plain mean.
    Returns one dict per device with the keys it holds.
    """
    a = _check_adjacency(adj)
    n = len(states)
    if a.shape[0] != n or len(weights) != n:
        raise TopologyError(f"{n} states, {len(weights)} weights, adjacency for {a.shape[0]} devices")
    out: list[dict[str, torch.Tensor]] = [dict() for _ in range(n)]
    # Devices holding a key with different shapes (heterogeneous LoRA ranks) mix only with same-shape holders.
    groups: dict[tuple[str, tuple[int, ...]], list[int]] = {}
    for i, s in enumerate(states):
        for k, t in s.items():
            groups.setdefault((k, tuple(t.shape)), []).append(i)
    for (key, _shape), idx in groups.items():
        sub = a[np.ix_(idx, idx)]
        mix = metropolis_hastings_weights(sub)
        nw = torch.tensor([float(weights[i]) for i in idx], dtype=torch.float64)
        x = torch.stack([states[i][key].detach().to(torch.float64) for i in idx])
        y = x * nw.reshape(-1, *([1] * (x.ndim - 1)))
        y_t, n_t = gossip(y, mix, steps), gossip(nw, mix, steps)
        est = y_t / n_t.reshape(-1, *([1] * (x.ndim - 1)))
        for j, i in enumerate(idx):
            out[i][key] = est[j].to(states[i][key].dtype)
    return out


def consensus_distance(values: torch.Tensor) -> float:
    """Root-mean-square distance of the devices' values [N, ...] to their mean: 0 at consensus."""
    x = values.to(torch.float64).reshape(values.shape[0], -1)
    return float((x - x.mean(dim=0, keepdim=True)).pow(2).sum(dim=1).mean().sqrt())


def state_consensus_distance(states: Sequence[Mapping[str, torch.Tensor]]) -> float:
    """RMS distance to the mean over whole states: per key among holders, squared distances summed over keys.

    Holders of a key with different shapes (heterogeneous LoRA ranks) are compared within their shape group.
    """
    total = 0.0
    keys: dict[tuple[str, tuple[int, ...]], list[int]] = {}
    for i, s in enumerate(states):
        for k, t in s.items():
            keys.setdefault((k, tuple(t.shape)), []).append(i)
    for (key, _shape), idx in keys.items():
        if len(idx) < 2:
            continue
        x = torch.stack([states[i][key].detach().to(torch.float64).reshape(-1) for i in idx])
        total += float((x - x.mean(dim=0, keepdim=True)).pow(2).sum(dim=1).mean())
    return total ** 0.5


def bfs_tree(adj: np.ndarray, root: int) -> list[int]:
    """Parent of every node in a breadth-first spanning tree rooted at ``root`` (the root's parent is -1).

    Neighbours are visited in index order, so the tree is deterministic. Raises if the graph is not connected
    (a convergecast needs every node to reach the root)."""
    a = _check_adjacency(adj)
    n = a.shape[0]
    if not 0 <= root < n:
        raise TopologyError(f"root {root} out of range for {n} nodes")
    parent = [-2] * n
    parent[root] = -1
    frontier = [root]
    while frontier:
        nxt = []
        for i in frontier:
            for j in np.flatnonzero(a[i]):
                if parent[int(j)] == -2:
                    parent[int(j)] = i
                    nxt.append(int(j))
        frontier = nxt
    if any(p == -2 for p in parent):
        raise TopologyError(f"the graph is not connected: nodes {[i for i, p in enumerate(parent) if p == -2]} "
                            f"cannot reach node {root}")
    return parent


def reach_within(adj: np.ndarray, steps: int) -> np.ndarray:
    """Boolean [N, N]: node j's value has reached node i after ``steps`` synchronous exchanges (j within
    ``steps`` hops of i, itself included). What a consensus state can have mixed in, for message-size bounds."""
    a = _check_adjacency(adj)
    n = a.shape[0]
    r = np.eye(n, dtype=bool)
    step = a | np.eye(n, dtype=bool)
    for _ in range(max(0, steps)):
        r = (step.astype(np.int64) @ r.astype(np.int64)) > 0
    return r
