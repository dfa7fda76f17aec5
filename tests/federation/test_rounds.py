import pytest
import torch

from federation.accounting import tensor_nbytes
from federation.client import LocalExecutor
from federation.config import DPConfig, RoundsConfig
from federation.rounds import RoundEngine
from federation.strategies import make_strategy
from federation.synthetic import SyntheticClient


def clients(n=4, profile="meta_quest_3", rank=2, **kw):
    return [SyntheticClient(f"d{i}", profile, rank=rank, seed=i, **kw) for i in range(n)]


def engine(cs, strategy="fedavg", dp=None, **cfg):
    return RoundEngine(LocalExecutor(cs), make_strategy(strategy), RoundsConfig(**cfg), seed=0, dp=dp)


def test_centralized_bytes_equal_tensor_sizes():
    # Prepare
    cs = clients(3)
    eng = engine(cs, local_steps=2)
    # Execute
    rec = eng.run_round(0)
    # Assert: each device uplinks its whole shared update and receives the same keys back
    per_device = tensor_nbytes(cs[0].get_update())
    assert rec.links["uplink"]["bytes"] == 3 * per_device
    assert rec.links["downlink"]["bytes"] == 3 * per_device
    assert rec.links["d2d"]["bytes"] == 0
    assert all(s.status == "participant" for s in rec.devices.values())
    # after the broadcast every device holds the same shared tensors, personal ones differ
    a, b = cs[0].get_update(), cs[1].get_update()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "personal.bias" not in a


def test_semi_cuts_uplink_by_cluster_size():
    cs = clients(6)
    central = engine(clients(6), local_steps=1).run_round(0)
    semi = engine(cs, paradigm="semi", local_steps=1, d2d_rounds=2,
                  clusters=[["d0", "d1", "d2"], ["d3", "d4", "d5"]]).run_round(0)
    ratio = central.links["uplink"]["bytes"] / semi.links["uplink"]["bytes"]
    assert ratio == pytest.approx(semi.diagnostics["mean_cluster_size"]) == pytest.approx(3.0)
    # D2D: complete graph of 3 -> 6 directed edges x 2 steps per cluster, each a full update
    assert semi.links["d2d"]["messages"] == 2 * 6 * 2
    assert semi.links["d2d"]["bytes"] == 24 * tensor_nbytes(cs[0].get_update())


def test_semi_clusters_from_positions():
    cs = clients(4)
    eng = engine(cs, paradigm="semi", local_steps=1, radio_range_m=2.0)
    pos = {"d0": (0, 0, 1.6), "d1": (1, 0, 1.6), "d2": (10, 0, 1.6), "d3": (11, 0, 1.6)}
    rec = eng.run_round(0, positions_m=pos)
    assert rec.clusters == [["d0", "d1"], ["d2", "d3"]]
    assert rec.links["uplink"]["messages"] == 2


def test_decentralized_gossip_reduces_consensus_distance():
    cs = clients(5)
    eng = engine(cs, paradigm="decentralized", local_steps=3, gossip_steps=10, radio_range_m=1.5)
    pos = {f"d{i}": (float(i), 0.0, 1.6) for i in range(5)}  # a path 0-1-2-3-4 with range 1.5
    rec = eng.run_round(0, positions_m=pos)
    assert rec.links["uplink"]["bytes"] == 0 and rec.links["downlink"]["bytes"] == 0
    assert rec.links["d2d"]["messages"] == 8 * 10
    assert rec.consensus_distance_after < 0.5 * rec.consensus_distance_before
    assert 0 < rec.diagnostics["spectral_gap"] < 1


def test_stragglers_and_offline_are_counted_not_errors():
    # Prepare: one slow device (ray-ban: 30 GFLOP/s) with a 0.2 s deadline; 10 steps x 1 GFLOP
    cs = clients(3) + [SyntheticClient("slow", "ray_ban_meta", seed=9)]
    eng = engine(cs, local_steps=10, deadline_s=0.2)
    rec = eng.run_round(0)
    assert rec.devices["slow"].status == "missed_deadline"
    assert rec.devices["slow"].compute_joules > 0  # its work was spent
    assert rec.links["uplink"]["messages"] == 3
    assert rec.counts == {"participant": 3, "missed_deadline": 1}
    off = engine(clients(4), local_steps=1, availability=0.5).run_round(0)
    assert sum(off.counts.values()) == 4 and off.counts.get("offline", 0) >= 1


def test_exact_lora_with_heterogeneous_ranks_runs_and_reports_naive_error():
    cs = [SyntheticClient("a", "apple_vision_pro", rank=4, seed=0), SyntheticClient("b", "meta_quest_3", rank=4, seed=1),
          SyntheticClient("c", "ray_ban_meta", rank=1, seed=2)]
    eng = engine(cs, strategy="exact_lora", local_steps=3)
    rec = eng.run_round(0)
    assert cs[2].get_update()["encoders.rgb.lora_A"].shape == (1, 6)
    assert rec.diagnostics["lora_naive_error_rel"] > 0


def test_dp_epsilon_reported_and_growing():
    cs = clients(4)
    eng = engine(cs, dp=DPConfig(enabled=True, clip_norm=1.0, noise_multiplier=1.0), local_steps=1)
    eps = [eng.run_round(r).epsilon for r in range(3)]
    assert 0 < eps[0] < eps[1] < eps[2]


def test_dp_without_noise_equals_mean_of_clipped_deltas():
    cs = clients(2)
    eng = engine(cs, dp=DPConfig(enabled=True, clip_norm=1e6, noise_multiplier=0.0), local_steps=2)
    eng.initial_sync()
    start = cs[0].get_update()
    plain = engine(clients(2), local_steps=2)
    plain.initial_sync()
    eng.run_round(0)
    plain.run_round(0)
    # equal sample counts: mean of deltas + start == fedavg of states
    for k, v in cs[0].get_update().items():
        assert torch.allclose(v, plain.executor.clients["d0"].get_update()[k], atol=1e-5), k
    assert set(start) == set(cs[0].get_update())


def test_decentralized_and_semi_with_heterogeneous_ranks_mix_within_rank_groups():
    def mixed_clients():
        return [SyntheticClient("a", "meta_quest_3", rank=4, seed=0), SyntheticClient("b", "meta_quest_3", rank=4, seed=1),
                SyntheticClient("c", "ray_ban_meta", rank=1, seed=2)]

    pos = {"a": (0.0, 0.0, 1.6), "b": (1.0, 0.0, 1.6), "c": (2.0, 0.0, 1.6)}
    dec = engine(mixed_clients(), paradigm="decentralized", local_steps=2, radio_range_m=5.0).run_round(0, positions_m=pos)
    assert dec.consensus_distance_after < dec.consensus_distance_before
    cs = mixed_clients()
    semi = engine(cs, strategy="exact_lora", paradigm="semi", local_steps=2, radio_range_m=5.0)
    rec = semi.run_round(0, positions_m=pos)
    # one cluster; the rank-1 LoRA factors need their own uplink next to the shared heads and rank-4 factors
    assert rec.links["uplink"]["messages"] == 2 and cs[2].get_update()["encoders.rgb.lora_A"].shape == (1, 6)
