import pytest
import torch

from federation.errors import ConfigError, UnknownNameError
from federation.messages import ClientUpdate
from federation.strategies import make_strategy, strategy_names


def upd(dev, tensors, n=1, mods=(), tasks=(), scale=1.0):
    return ClientUpdate(dev, 0, tensors, n, tuple(mods), tuple(tasks), scale)


def test_registry_lists_known_names():
    assert {"fedavg", "fedit", "exact_lora", "median", "trimmed_mean", "krum"} <= set(strategy_names())
    with pytest.raises(UnknownNameError, match="unknown aggregator 'fedprox'; known: .*fedavg"):
        make_strategy("fedprox")
    with pytest.raises(ConfigError, match="aggregator.alpha.*allowed"):
        make_strategy("fedavg", alpha=1)


def test_fedavg_partial_broadcast_cuts_device_keys():
    s = make_strategy("fedavg")
    ups = [upd("a", {"encoders.audio.w": torch.tensor([2.0]), "backbone.w": torch.tensor([0.0])}, 1, ["audio"]),
           upd("b", {"backbone.w": torch.tensor([3.0])}, 2, ["rgb"])]
    res = s.aggregate(ups)
    assert res.tensors["backbone.w"].item() == pytest.approx(2.0)
    cut = res.for_device({"backbone.w": torch.zeros(1)})
    assert set(cut) == {"backbone.w"}


def test_exact_lora_broadcast_refactorizes_to_device_rank():
    s = make_strategy("exact_lora")
    u0 = {"x.lora_A.w": torch.tensor([[1.0, 0.0]]), "x.lora_B.w": torch.tensor([[1.0], [0.0]]),
          "h.bias": torch.tensor([1.0])}
    u1 = {"x.lora_A.w": torch.tensor([[0.0, 0.0], [0.0, 2.0]]), "x.lora_B.w": torch.eye(2),
          "h.bias": torch.tensor([3.0])}
    res = s.aggregate([upd("a", u0), upd("b", u1)])
    small = res.for_device(u0)
    big = res.for_device(u1)
    assert small["x.lora_A.w"].shape == (1, 2) and big["x.lora_A.w"].shape == (2, 2)
    assert torch.allclose(big["x.lora_B.w"] @ big["x.lora_A.w"], torch.diag(torch.tensor([0.5, 1.0])), atol=1e-6)
    assert torch.allclose(small["x.lora_B.w"] @ small["x.lora_A.w"], torch.diag(torch.tensor([0.0, 1.0])),
                          atol=1e-6)
    assert small["h.bias"].item() == pytest.approx(2.0)
    assert "lora_naive_error_rel" in res.diagnostics


def test_fedit_refuses_heterogeneous_ranks():
    s = make_strategy("fedit")
    u0 = {"x.lora_A.w": torch.zeros(1, 2), "x.lora_B.w": torch.zeros(2, 1)}
    u1 = {"x.lora_A.w": torch.zeros(2, 2), "x.lora_B.w": torch.zeros(2, 2)}
    with pytest.raises(Exception, match="exact_lora"):
        s.aggregate([upd("a", u0), upd("b", u1)])


def test_robust_strategies_ignore_outlier():
    ups = [upd(str(i), {"w": torch.tensor([v])}) for i, v in enumerate([1.0, 1.1, 0.9, 1.0, 100.0])]
    for name, opts in (("median", {}), ("trimmed_mean", {"trim_fraction": 0.2}), ("krum", {"num_byzantine": 1})):
        res = make_strategy(name, **opts).aggregate(ups)
        assert res.tensors["w"].item() < 1.2, name
