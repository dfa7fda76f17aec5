import pytest
import torch

from federation import aggregate as agg
from federation.errors import ConfigError, UnknownNameError
from federation.messages import ClientUpdate
from federation.strategies import AggregationContext, DifferentialPrivacy, make_strategy, strategy_names


def upd(dev, tensors, n=1.0, mods=(), tasks=()):
    return ClientUpdate(dev, 0, tensors, n, tuple(mods), tuple(tasks))


def test_registry_lists_known_names():
    assert {"fedavg", "fedit", "exact_lora", "median", "trimmed_mean", "krum"} <= set(strategy_names())
    with pytest.raises(UnknownNameError, match="unknown aggregator 'fedprox'; known: .*fedavg"):
        make_strategy("fedprox")
    with pytest.raises(ConfigError, match="aggregator.alpha.*allowed"):
        make_strategy("fedavg", alpha=1)
    with pytest.raises(ConfigError, match="aggregator.lora"):
        make_strategy("fedavg", lora="diagonal")


def test_fedavg_partial_aggregate_and_device_cut():
    s = make_strategy("fedavg")
    ups = [upd("a", {"encoders.audio.w": torch.tensor([2.0]), "backbone.w": torch.tensor([0.0])}, 1, ["audio"]),
           upd("b", {"backbone.w": torch.tensor([3.0])}, 2, ["rgb"])]
    res = s.aggregate(ups)
    assert res.tensors["backbone.w"].item() == pytest.approx(2.0)  # (1*0 + 2*3) / 3
    cut = s.decode(res.tensors, {"backbone.w": torch.zeros(1)})
    assert set(cut) == {"backbone.w"}


A0, B0 = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0], [0.0]])  # rank 1: B A = diag(1, 0)
A1, B1 = torch.tensor([[0.0, 0.0], [0.0, 2.0]]), torch.eye(2)  # rank 2: B A = diag(0, 2)


def test_exact_lora_averages_products_and_refactorizes_to_each_rank():
    # Prepare: two devices of rank 1 and 2, LoRA scale 1
    s = make_strategy("exact_lora")
    u0 = {"x.lora_A.w": A0, "x.lora_B.w": B0, "h.bias": torch.tensor([1.0])}
    u1 = {"x.lora_A.w": A1, "x.lora_B.w": B1, "h.bias": torch.tensor([3.0])}
    # Execute
    res = s.aggregate([upd("a", s.encode(u0)), upd("b", s.encode(u1))])
    small, big = s.decode(res.tensors, u0), s.decode(res.tensors, u1)
    # Assert: the common space holds the exact mean product diag(0.5, 1)
    assert torch.allclose(res.tensors[agg.product_key("x.lora_A.w")], torch.diag(torch.tensor([0.5, 1.0])).double())
    assert small["x.lora_A.w"].shape == (1, 2) and big["x.lora_A.w"].shape == (2, 2)
    assert torch.allclose(big["x.lora_B.w"] @ big["x.lora_A.w"], torch.diag(torch.tensor([0.5, 1.0])), atol=1e-6)
    # rank 1 keeps the best rank-1 approximation: the larger singular direction
    assert torch.allclose(small["x.lora_B.w"] @ small["x.lora_A.w"], torch.diag(torch.tensor([0.0, 1.0])),
                          atol=1e-6)
    assert small["h.bias"].item() == pytest.approx(2.0)


def test_fedit_averages_zero_padded_factors_of_mixed_ranks():
    # HetLoRA's convention: rank 1 is padded to rank 2, A and B averaged separately, each device truncated back
    s = make_strategy("fedit")
    u0 = {"x.lora_A.w": A0, "x.lora_B.w": B0}
    u1 = {"x.lora_A.w": A1, "x.lora_B.w": B1}
    res = s.aggregate([upd("a", s.encode(u0)), upd("b", s.encode(u1))])
    assert torch.allclose(res.tensors["x.lora_A.w"], torch.tensor([[0.5, 0.0], [0.0, 1.0]], dtype=torch.float64))
    assert torch.allclose(res.tensors["x.lora_B.w"], torch.tensor([[1.0, 0.0], [0.0, 0.5]], dtype=torch.float64))
    small = s.decode(res.tensors, u0)
    assert torch.equal(small["x.lora_A.w"], torch.tensor([[0.5, 0.0]])) and small["x.lora_B.w"].shape == (2, 1)


def test_robust_strategies_ignore_outlier():
    ups = [upd(str(i), {"w": torch.tensor([v])}) for i, v in enumerate([1.0, 1.1, 0.9, 1.0, 100.0])]
    for name, opts in (("median", {}), ("trimmed_mean", {}), ("trimmed_mean", {"trim_fraction": 0.2}),
                       ("krum", {"num_byzantine": 1})):
        res = make_strategy(name, **opts).aggregate(ups)
        assert res.tensors["w"].item() < 1.2, name


def test_trimmed_mean_default_acts_at_six_devices():
    # A fraction of 0.1 trims floor(0.6) = 0 values of 6: the old default let one attacker through untouched.
    s = make_strategy("trimmed_mean")
    assert s.trim_at(6) == 1 and s.trim_at(3) == 1 and s.trim_at(2) == 0
    ups = [upd(str(i), {"w": torch.tensor([v])}) for i, v in enumerate([1.0, 1.0, 1.0, 1.0, 1.0, 1000.0])]
    assert s.aggregate(ups).tensors["w"].item() == pytest.approx(1.0)


def test_central_dp_needs_an_averaging_strategy_and_noises_the_clipped_sum():
    with pytest.raises(ConfigError, match="central DP adds noise to a sum.*median"):
        DifferentialPrivacy(make_strategy("median"), clip_norm=1.0, noise_multiplier=1.0)
    dp = DifferentialPrivacy(make_strategy("fedavg"), clip_norm=1.0, noise_multiplier=0.0)
    a, na = dp.device_release({"w": torch.tensor([3.0, 4.0], dtype=torch.float64)})  # norm 5 -> clipped to 1
    b, _ = dp.device_release({"w": torch.tensor([0.0, 0.5], dtype=torch.float64)})  # inside the ball: unchanged
    assert na == pytest.approx(5.0)
    from federation.strategies import AggregationContext

    res = dp.aggregate([upd("a", a), upd("b", b)], AggregationContext({"w": 2.0}, torch.Generator().manual_seed(0)))
    # (0.6 + 0, 0.8 + 0.5) / 2 expected contributors
    assert torch.allclose(res.tensors["w"], torch.tensor([0.3, 0.65], dtype=torch.float64))


def test_local_dp_noises_each_release_and_keeps_any_strategy():
    dp = DifferentialPrivacy(make_strategy("median"), clip_norm=1.0, noise_multiplier=2.0, mode="local")
    g = torch.Generator().manual_seed(0)
    rel, _ = dp.device_release({"w": torch.zeros(10_000, dtype=torch.float64)}, g)
    assert rel["w"].std().item() == pytest.approx(2.0, rel=0.05)
    with pytest.raises(ConfigError, match="noise generator"):
        dp.device_release({"w": torch.zeros(2, dtype=torch.float64)})


def test_averaging_strategies_stream_and_robust_ones_say_they_buffer():
    # Prepare: six updates (one an outlier) of the same key
    ups = [upd(f"d{i}", {"w": torch.tensor([float(i)], dtype=torch.float64)}, 1 + i) for i in range(6)]
    for name in ("fedavg", "fedit", "exact_lora", "median", "trimmed_mean", "krum"):
        s = make_strategy(name)
        acc = s.accumulator()
        for u in ups:
            acc.add(u)
        # Assert: averaging folds (holds nothing), robust keeps every update; aggregate() is this same fold
        assert s.needs_all_updates == (not s.averaging), name
        assert acc.held_updates == (6 if s.needs_all_updates else 0), name
        assert torch.equal(acc.result().tensors["w"], s.aggregate(ups).tensors["w"]), name
    # hand-computed: sum_i (1 + i) i / sum_i (1 + i) = 70 / 21
    assert make_strategy("fedavg").aggregate(ups).tensors["w"].item() == pytest.approx(70 / 21, rel=1e-15)
    dp_central = DifferentialPrivacy(make_strategy("fedavg"), clip_norm=1.0, noise_multiplier=0.0)
    dp_local = DifferentialPrivacy(make_strategy("median"), clip_norm=1.0, noise_multiplier=0.0, mode="local")
    assert not dp_central.needs_all_updates and dp_local.needs_all_updates


def test_central_dp_streamed_sum_is_bit_identical_to_the_batch_sum():
    # the running sum adds the clipped updates in the order dp_average did: same bits, same noise draws
    from federation.privacy import dp_average

    g = torch.Generator().manual_seed(1)
    tensors = [{"w": torch.randn(5, generator=g, dtype=torch.float64) * 0.1} for _ in range(7)]
    dp = DifferentialPrivacy(make_strategy("exact_lora"), clip_norm=1.0, noise_multiplier=0.7)
    got = dp.aggregate([upd(f"d{i}", t) for i, t in enumerate(tensors)],
                       AggregationContext({"w": 7.0}, torch.Generator().manual_seed(3)))
    want = dp_average([{k: v * 1.0 for k, v in t.items()} for t in tensors], clip_norm=1.0, noise_multiplier=0.7,
                      expected_counts={"w": 7.0}, generator=torch.Generator().manual_seed(3))
    assert torch.equal(got.tensors["w"], want["w"])


def test_fedit_streams_mixed_ranks_with_zero_padding():
    s = make_strategy("fedit")
    a = {"x.lora_A.w": torch.tensor([[2.0, 2.0]]), "x.lora_B.w": torch.tensor([[1.0], [1.0]])}  # rank 1
    b = {"x.lora_A.w": torch.ones(2, 2), "x.lora_B.w": torch.ones(2, 2)}  # rank 2
    res = s.aggregate([upd("a", s.encode(a)), upd("b", s.encode(b))])
    # rank rows/columns a lacks count as zeros: A = [[1.5, 1.5], [0.5, 0.5]], B = [[1, .5], [1, .5]]
    assert torch.equal(res.tensors["x.lora_A.w"], torch.tensor([[1.5, 1.5], [0.5, 0.5]], dtype=torch.float64))
    assert torch.equal(res.tensors["x.lora_B.w"], torch.tensor([[1.0, 0.5], [1.0, 0.5]], dtype=torch.float64))
