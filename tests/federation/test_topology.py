import numpy as np
import pytest
import torch

from federation import topology as topo
from federation.errors import TopologyError


def test_d2d_graph_uses_planar_distance_and_range():
    # Prepare: three avatars on a line, 3 m apart; the second stands on a step (z differs)
    pos = [[0.0, 0.0, 1.6], [3.0, 0.0, 2.6], [6.0, 0.0, 1.6]]
    adj = topo.d2d_graph(pos, radio_range_m=3.0)
    assert adj.tolist() == [[False, True, False], [True, False, True], [False, True, False]]
    adj3d = topo.d2d_graph(pos, radio_range_m=3.0, planar=False)
    assert not adj3d[0, 1]  # sqrt(9 + 1) > 3


def test_d2d_graph_rejects_bad_range():
    with pytest.raises(TopologyError, match="radio_range_m"):
        topo.d2d_graph([[0, 0]], 0.0)


def test_components_and_greedy_clusters():
    # path 0-1-2-3 and isolated 4
    adj = np.zeros((5, 5), dtype=bool)
    for i, j in [(0, 1), (1, 2), (2, 3)]:
        adj[i, j] = adj[j, i] = True
    assert topo.connected_components(adj) == [[0, 1, 2, 3], [4]]
    assert topo.greedy_clusters(adj, max_size=2) == [[0, 1], [2, 3], [4]]


def test_adjacency_must_be_symmetric():
    with pytest.raises(TopologyError, match="symmetric"):
        topo.metropolis_hastings_weights(np.array([[0, 1], [0, 0]], dtype=bool))


def test_metropolis_hastings_weights_hand_computed():
    # path 0-1-2: degrees 1, 2, 1 -> W01 = W12 = 1/3, W00 = W22 = 2/3, W11 = 1/3
    adj = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=bool)
    w = topo.metropolis_hastings_weights(adj)
    third = 1 / 3
    assert np.allclose(w, [[2 * third, third, 0], [third, third, third], [0, third, 2 * third]])
    assert np.allclose(w.sum(axis=0), 1) and np.allclose(w, w.T)


def test_spectral_gap_complete_and_disconnected():
    full = ~np.eye(4, dtype=bool)
    # MH on K4: off-diagonal 1/4, diagonal 1/4 -> W = 11^T/4, gap 1
    assert topo.spectral_gap(topo.metropolis_hastings_weights(full)) == pytest.approx(1.0)
    two = np.zeros((2, 2), dtype=bool)
    assert topo.spectral_gap(topo.metropolis_hastings_weights(two)) == pytest.approx(0.0)


def test_gossip_converges_to_average_on_connected_graph():
    # Prepare: ring of 6 devices, distinct values
    n = 6
    adj = np.zeros((n, n), dtype=bool)
    for i in range(n):
        adj[i, (i + 1) % n] = adj[(i + 1) % n, i] = True
    w = topo.metropolis_hastings_weights(adj)
    x = torch.arange(n, dtype=torch.float64).reshape(n, 1) * torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    # Execute
    before = topo.consensus_distance(x)
    y = topo.gossip(x, w, steps=200)
    # Assert: every device holds the mean (2.5, -5), distance shrinks to ~0, mean preserved at every step
    assert torch.allclose(y, torch.tensor([[2.5, -5.0]], dtype=torch.float64).expand(n, 2), atol=1e-8)
    assert before > 1.0 and topo.consensus_distance(y) < 1e-8
    assert torch.allclose(topo.gossip(x, w, 3).mean(dim=0), x.mean(dim=0))


def test_gossip_contracts_at_spectral_rate():
    n = 5
    adj = np.zeros((n, n), dtype=bool)
    for i in range(n - 1):
        adj[i, i + 1] = adj[i + 1, i] = True
    w = topo.metropolis_hastings_weights(adj)
    lam = 1 - topo.spectral_gap(w)
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    d0, d5 = topo.consensus_distance(x), topo.consensus_distance(topo.gossip(x, w, 5))
    assert d5 <= lam**5 * d0 + 1e-12


def test_weighted_gossip_reaches_sample_weighted_mean_per_key():
    adj = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=bool)
    states = [{"a": torch.tensor([0.0]), "b": torch.tensor([4.0])}, {"a": torch.tensor([3.0])},
              {"a": torch.tensor([6.0]), "b": torch.tensor([8.0])}]
    out = topo.weighted_gossip_states(states, [1, 1, 2], adj, steps=300)
    # a: (0*1 + 3*1 + 6*2)/4 = 3.75 everywhere
    assert all(o["a"].item() == pytest.approx(3.75, abs=1e-6) for o in out)
    # b: holders 0 and 2 are not adjacent in the induced graph -> no mixing, each keeps its own
    assert out[0]["b"].item() == pytest.approx(4.0) and out[2]["b"].item() == pytest.approx(8.0)
    assert "b" not in out[1]
    assert topo.state_consensus_distance(out) == pytest.approx(2.0, abs=1e-5)
