from collections import Counter
from functools import partial

import pytest
import torch

from federation import aggregate as agg
from federation.accounting import tensor_nbytes
from federation.client import DeviceLost, LocalExecutor
from federation.config import DPConfig, RoundsConfig
from federation.errors import ExecutorError
from federation.rounds import RoundEngine
from federation.strategies import make_strategy
from federation.synthetic import SyntheticClient


def clients(n=4, profile="meta_quest_3", rank=2, **kw):
    return [SyntheticClient(f"d{i}", profile, rank=rank, seed=i, **kw) for i in range(n)]


def mixed_ranks(ranks=(4, 2, 1, 4, 1, 2, 2)):
    """Devices with different LoRA ranks (the demo's mix has 4 of 7 off the majority rank)."""
    return [SyntheticClient(f"d{i}", "meta_quest_3", rank=r, seed=i) for i, r in enumerate(ranks)]


def engine(cs, strategy="fedavg", dp=None, **cfg):
    return RoundEngine(LocalExecutor(cs), make_strategy(strategy), RoundsConfig(**cfg), seed=0, dp=dp)


def product_of(state: dict, key="encoders.rgb.lora_A"):
    return state[agg.product_key(key)]


def test_centralized_bytes_equal_tensor_sizes():
    cs = clients(3)
    eng = engine(cs, local_steps=2)
    rec = eng.run_round(0)
    # each device uplinks its whole shared update and receives the same keys back
    per_device = tensor_nbytes(cs[0].shared_state())
    assert rec.links["uplink"]["bytes"] == 3 * per_device
    assert rec.links["downlink"]["bytes"] == 3 * per_device
    assert rec.links["d2d"]["bytes"] == 0
    assert all(s.status == "participant" for s in rec.devices.values())
    a, b = cs[0].shared_state(), cs[1].shared_state()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "personal.bias" not in a


def test_semi_tree_cuts_uplink_by_cluster_size_and_equals_centralized():
    central = engine(clients(6), local_steps=1)
    crec = central.run_round(0)
    cs = clients(6)
    semi = engine(cs, paradigm="semi", local_steps=1, clusters=[["d0", "d1", "d2"], ["d3", "d4", "d5"]])
    rec = semi.run_round(0)
    ratio = crec.links["uplink"]["bytes"] / rec.links["uplink"]["bytes"]
    assert ratio == pytest.approx(rec.diagnostics["mean_cluster_size"]) == pytest.approx(3.0)
    # convergecast on a spanning tree: one D2D message per non-representative member
    assert rec.links["d2d"]["messages"] == 2 * 2
    # the tree sums exactly: the server ends where the centralized server does
    for k, v in central.global_state.items():
        assert torch.allclose(semi.global_state[k], v, atol=1e-12), k


def test_semi_aggregates_heterogeneous_ranks_exactly_nothing_dropped():
    # Old bug: the cluster grouped each key by the first member's shape and dropped every other rank.
    central = engine(mixed_ranks(), strategy="exact_lora", local_steps=2)
    central.run_round(0)
    for mode, extra in (("tree", {}), ("consensus", {"d2d_rounds": 1})):  # complete graph: 1 MH step = exact
        semi = engine(mixed_ranks(), strategy="exact_lora", paradigm="semi", local_steps=2,
                      cluster_aggregation=mode, clusters=[[f"d{i}" for i in range(7)]], **extra)
        semi.run_round(0)
        want = product_of(central.global_state)
        got = product_of(semi.global_state)
        assert torch.linalg.norm(got - want) / torch.linalg.norm(want) < 1e-9, mode


def test_exact_product_is_the_weighted_mean_of_every_devices_product():
    cs = mixed_ranks()
    eng = engine(cs, strategy="exact_lora", local_steps=2)
    eng.initial_sync()
    before = {c.device_id: c.shared_state() for c in cs}
    rec = eng.run_round(0)
    assert rec.counts == {"participant": 7}
    # every device trained from zero products (B = 0), so the new global product is the mean of their products
    deltas = []
    for c in cs:
        assert torch.equal(before[c.device_id]["encoders.rgb.lora_B"], torch.zeros_like(c.encoders["rgb"]["lora_B"]))
    eng2 = engine(mixed_ranks(), strategy="exact_lora", local_steps=2)
    eng2.initial_sync()
    eng2.executor.map("set_phase", [(d, (0,), {}) for d in eng2.ids])
    for d in eng2.ids:
        eng2.executor.call(d, "local_train", steps=2, seed=eng2.device_seed(0, d))
        st = eng2.executor.call(d, "shared_state")
        deltas.append(agg.to_products(st, eng2.info[d]["lora_scale"])[agg.product_key("encoders.rgb.lora_A")])
    want = torch.stack(deltas).mean(0)  # equal sample counts
    assert torch.allclose(product_of(eng.global_state), want, atol=1e-12)


def test_semi_clusters_from_positions():
    cs = clients(4)
    eng = engine(cs, paradigm="semi", local_steps=1, radio_range_m=2.0)
    pos = {"d0": (0, 0, 1.6), "d1": (1, 0, 1.6), "d2": (10, 0, 1.6), "d3": (11, 0, 1.6)}
    rec = eng.run_round(0, positions_m=pos)
    assert rec.clusters == [["d0", "d1"], ["d2", "d3"]]
    assert rec.links["uplink"]["messages"] == 2


def test_decentralized_gossip_reduces_consensus_distance_across_ranks():
    eng = engine(mixed_ranks((4, 1, 2, 4, 1)), strategy="exact_lora", paradigm="decentralized", local_steps=3,
                 gossip_steps=10, radio_range_m=1.5)
    pos = {f"d{i}": (float(i), 0.0, 1.6) for i in range(5)}  # a path 0-1-2-3-4 with range 1.5
    rec = eng.run_round(0, positions_m=pos)
    assert rec.links["uplink"]["bytes"] == 0 and rec.links["downlink"]["bytes"] == 0
    assert rec.links["d2d"]["messages"] == 8 * 10
    # products of different ranks mix (old code: each rank only with its own rank group)
    assert rec.consensus_distance_after < 0.2 * rec.consensus_distance_before
    assert 0 < rec.diagnostics["spectral_gap"] < 1


def test_stragglers_and_offline_are_counted_not_errors():
    cs = clients(3) + [SyntheticClient("slow", "ray_ban_meta", seed=9)]
    eng = engine(cs, local_steps=10, deadline_s=0.2)
    rec = eng.run_round(0)
    assert rec.devices["slow"].status == "missed_deadline"
    assert rec.devices["slow"].compute_joules > 0  # its work was spent
    assert rec.links["uplink"]["messages"] == 3
    assert rec.counts == {"participant": 3, "missed_deadline": 1}
    off = engine(clients(4), local_steps=1, availability=0.5).run_round(0)
    assert sum(off.counts.values()) == 4 and off.counts.get("offline", 0) >= 1


def test_local_paradigm_sends_nothing_and_keeps_own_training():
    cs = clients(3)
    eng = engine(cs, paradigm="local", local_steps=2)
    rec = eng.run_round(0)
    assert sum(v["bytes"] for v in rec.links.values()) == 0
    a, b = cs[0].shared_state(), cs[1].shared_state()
    assert not torch.equal(a["encoders.rgb.lora_B"], b["encoders.rgb.lora_B"])


def test_dp_with_heterogeneous_ranks_runs_under_every_averaging_strategy():
    # Old bug: fedavg + mixed ranks + DP passed validation and crashed summing differently shaped factors.
    for strategy in ("fedavg", "fedit", "exact_lora"):
        eng = engine(mixed_ranks(), strategy=strategy, dp=DPConfig(enabled=True, noise_multiplier=1.0), local_steps=1)
        rec = eng.run_round(0)
        assert rec.epsilon > 0 and rec.counts == {"participant": 7}, strategy


def test_dp_epsilon_reported_and_growing_in_every_paradigm():
    pos = {f"d{i}": (float(i), 0.0, 1.6) for i in range(4)}
    for paradigm, mode in (("centralized", "central"), ("semi", "central"), ("decentralized", "local"),
                           ("centralized", "local")):
        eng = engine(clients(4), dp=DPConfig(enabled=True, noise_multiplier=1.0, mode=mode), local_steps=1,
                     paradigm=paradigm, radio_range_m=1.5)
        eps = [eng.run_round(r, positions_m=pos).epsilon for r in range(3)]
        assert 0 < eps[0] < eps[1] < eps[2], (paradigm, mode)


def test_dp_clips_each_device_before_cluster_mixing():
    # One device with a huge update: under semi + DP its influence on the server's sum is at most the clip norm,
    # exactly as under centralized DP (old bug: consensus weights let it move the upload by up to 2.7x the clip).
    def fleet():
        cs = clients(4)
        cs[0].lr = 50.0  # a wild device
        return cs

    dp = DPConfig(enabled=True, clip_norm=0.1, noise_multiplier=0.0)
    central = engine(fleet(), dp=dp, local_steps=2)
    central.initial_sync()
    start = {k: v.clone() for k, v in central.global_state.items()}
    semi = engine(fleet(), dp=dp, local_steps=2, paradigm="semi", clusters=[["d0", "d1", "d2", "d3"]])
    central.run_round(0)
    rec = semi.run_round(0)
    assert rec.devices["d0"].update_norm > 10 * dp.clip_norm
    moved = torch.sqrt(sum((central.global_state[k] - start[k]).pow(2).sum() for k in start))
    assert moved <= dp.clip_norm + 1e-9  # mean of 4 updates each clipped to 0.1
    for k in central.global_state:
        assert torch.allclose(semi.global_state[k], central.global_state[k], atol=1e-12), k


def test_dp_without_noise_and_huge_clip_equals_uniform_fedavg():
    cs = clients(2)
    eng = engine(cs, dp=DPConfig(enabled=True, clip_norm=1e6, noise_multiplier=0.0), local_steps=2)
    plain = engine(clients(2), local_steps=2)
    eng.run_round(0)
    plain.run_round(0)
    for k, v in cs[0].shared_state().items():
        assert torch.allclose(v, plain.executor.clients["d0"].shared_state()[k], atol=1e-5), k


def test_semi_cluster_split_when_its_bridge_sits_out():
    # d1 links d0 and d2 (a path); with d1 offline the two ends cannot talk and become clusters of their own
    cs = clients(3)
    eng = engine(cs, paradigm="semi", local_steps=1, radio_range_m=1.5)
    pos = {"d0": (0.0, 0.0, 1.6), "d1": (1.0, 0.0, 1.6), "d2": (2.0, 0.0, 1.6)}
    from federation.rounds import DeviceRoundStats

    def select(rng, stats):  # d1 is online but not sampled this round
        stats["d1"] = DeviceRoundStats("not_sampled")
        return ["d0", "d1", "d2"], ["d0", "d2"]

    eng._select = select
    rec = eng.run_round(0, positions_m=pos)
    assert rec.clusters == [["d0"], ["d2"]]
    assert rec.links["uplink"]["messages"] == 2 and rec.links["d2d"]["messages"] == 0


# -- lost devices -------------------------------------------------------------------------------------------
class LosingExecutor(LocalExecutor):
    """The executor interface with devices that get lost: ``lose[(method, device)] = n`` loses ``device`` on its
    n-th ``method`` call; a lost device answers :class:`DeviceLost` (an error without ``tolerate_loss``) until
    :meth:`revive` rebuilds it from its factory. ``log`` lists the calls that reached a device."""

    def __init__(self, factories, lose):
        self.factories = factories
        super().__init__([f() for f in factories.values()])
        self.lose, self.dead, self.log = dict(lose), set(), []
        self.seen: Counter[tuple[str, str]] = Counter()

    def imap(self, method, calls, *, tolerate_loss=False):
        for i, (dev, args, kwargs) in enumerate(calls):
            self.seen[(method, dev)] += 1
            if self.lose.get((method, dev)) == self.seen[(method, dev)]:
                self.dead.add(dev)
            if dev in self.dead:
                if not tolerate_loss:
                    raise ExecutorError(f"device {dev} is lost")
                yield i, DeviceLost(dev, "killed by the test")
                continue
            self.log.append((method, dev, args))
            yield i, getattr(self.clients[dev], method)(*args, **kwargs)

    def revive(self):
        back = sorted(self.dead)
        for d in back:
            self.clients[d] = self.factories[d]()
        self.dead.clear()
        return back


def losing(lose, n=4, strategy="fedavg", **cfg):
    factories = {f"d{i}": partial(SyntheticClient, f"d{i}", "meta_quest_3", seed=i) for i in range(n)}
    ex = LosingExecutor(factories, lose)
    return RoundEngine(ex, make_strategy(strategy), RoundsConfig(**cfg), seed=0), ex


def test_device_lost_in_training_is_a_dropout_and_comes_back_with_the_global_model():
    # Prepare: d1 is lost during its first local training
    eng, ex = losing({("local_train", "d1"): 1}, local_steps=2)
    # Execute: round 0 completes without it
    rec0 = eng.run_round(0)
    # Assert: a dropout, not aggregated, not broadcast to, not evaluated
    assert rec0.devices["d1"].status == "dropout" and rec0.devices["d1"].accuracy is None
    assert rec0.counts == {"participant": 3, "dropout": 1}
    assert rec0.links["uplink"]["messages"] == 3 and rec0.links["downlink"]["messages"] == 3
    # the aggregate is exactly the one of the three others
    others = engine([SyntheticClient(f"d{i}", "meta_quest_3", seed=i) for i in (0, 2, 3)], local_steps=2)
    others.run_round(0)
    assert all(torch.equal(eng.global_state[k], v) for k, v in others.global_state.items())
    g0 = {k: v.clone() for k, v in eng.global_state.items()}
    # next round: rebuilt fresh, it gets the global model cut to its template before training (a downlink)
    ex.log.clear()
    rec1 = eng.run_round(1)
    assert rec1.counts == {"participant": 4}
    assert rec1.links["downlink"]["messages"] == 4 + 1
    calls = [(m, a) for m, d, a in ex.log if d == "d1"]
    assert [m for m, _ in calls[:3]] == ["load_shared_state", "set_phase", "local_train"]
    want = eng.strategy.decode(g0, eng.templates["d1"], eng.info["d1"]["lora_scale"])
    got = calls[0][1][0]
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


def test_device_lost_while_handing_its_update_or_evaluating():
    # d3 is lost fetching its update (its first shared_state call is the initial sync), d2 while evaluating
    eng, _ = losing({("shared_state", "d3"): 2, ("evaluate", "d2"): 1}, local_steps=1)
    rec = eng.run_round(0)
    assert rec.devices["d3"].status == rec.devices["d2"].status == "dropout"
    assert rec.counts == {"participant": 2, "dropout": 2}
    assert rec.links["uplink"]["messages"] == 3  # d2's update arrived before it was lost
    assert rec.diagnostics["dropouts"] == 2.0
    assert eng.run_round(1).counts == {"participant": 4}


def test_semi_and_gossip_skip_a_lost_device():
    eng, _ = losing({("local_train", "d1"): 1}, paradigm="semi", local_steps=1,
                    clusters=[["d0", "d1", "d2", "d3"]])
    rec = eng.run_round(0)
    assert rec.clusters == [["d0", "d2", "d3"]]
    assert rec.links["d2d"]["messages"] == 2 and rec.links["uplink"]["messages"] == 1
    eng, _ = losing({("local_train", "d1"): 1}, paradigm="decentralized", local_steps=1, gossip_steps=2)
    rec = eng.run_round(0)
    assert rec.devices["d1"].status == "dropout"
    assert rec.links["d2d"]["messages"] == 3 * 2 * 2  # complete graph of the 3 others, 2 steps


def test_engine_without_tolerated_loss_would_fail():
    # the fake executor raises unless the caller tolerates loss: the engine's initial sync does not (deployment)
    eng, _ = losing({("shared_state", "d0"): 1})
    with pytest.raises(ExecutorError, match="d0 is lost"):
        eng.run_round(0)
