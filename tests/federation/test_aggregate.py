import math

import pytest
import torch

from federation import aggregate as agg
from federation.errors import AggregationError


def t(*v):
    return torch.tensor(v, dtype=torch.float32)


def test_fedavg_weights_by_samples():
    # Prepare: two devices, 1 and 3 samples
    ups = [{"w": t(0.0, 4.0)}, {"w": t(4.0, 0.0)}]
    # Execute
    out = agg.fedavg(ups, [1, 3])
    # Assert: 0.25*[0,4] + 0.75*[4,0] = [3, 1]
    assert torch.allclose(out["w"], t(3.0, 1.0))


def test_fedavg_renormalises_over_holders_of_each_key():
    ups = [{"a": t(1.0), "b": t(10.0)}, {"a": t(3.0)}]
    out = agg.fedavg(ups, [1, 1])
    assert torch.allclose(out["a"], t(2.0))
    assert torch.allclose(out["b"], t(10.0))  # only device 0 holds b


def test_fedavg_shape_mismatch_names_key():
    with pytest.raises(AggregationError, match="'w' has different shapes"):
        agg.fedavg([{"w": torch.zeros(2)}, {"w": torch.zeros(3)}], [1, 1])


def test_fedavg_rejects_zero_weights():
    with pytest.raises(AggregationError, match="at least one must be positive"):
        agg.fedavg([{"w": t(1.0)}], [0])


def test_coordinate_median_odd_and_even():
    odd = [{"w": t(1.0, 9.0)}, {"w": t(2.0, 0.0)}, {"w": t(100.0, 5.0)}]
    assert torch.allclose(agg.coordinate_median(odd)["w"], t(2.0, 5.0))
    even = odd + [{"w": t(3.0, 1.0)}]
    # sorted col0: 1,2,3,100 -> 2.5 ; col1: 0,1,5,9 -> 3
    assert torch.allclose(agg.coordinate_median(even)["w"], t(2.5, 3.0))


def test_trimmed_mean_drops_extremes():
    ups = [{"w": t(v)} for v in (1.0, 2.0, 3.0, 4.0, 100.0)]
    # trim 0.2 of 5 -> drop 1 each side -> mean(2,3,4) = 3
    assert torch.allclose(agg.trimmed_mean(ups, trim_fraction=0.2)["w"], t(3.0))
    # trim 0.1 of 5 -> floor(0.5)=0 -> plain mean 22
    assert torch.allclose(agg.trimmed_mean(ups, trim_fraction=0.1)["w"], t(22.0))


def test_trimmed_mean_rejects_half():
    with pytest.raises(AggregationError, match="trim_fraction"):
        agg.trimmed_mean([{"w": t(1.0)}], trim_fraction=0.5)


def test_krum_scores_hand_computed():
    # Points on a line: 0, 1, 2, 10. n=4, f=0 -> m = n - f - 2 = 2 nearest
    v = torch.tensor([[0.0], [1.0], [2.0], [10.0]])
    s = agg.krum_scores(v, num_byzantine=0)
    # 0: d2 to 1,2 -> 1+4=5 ; 1: 1+1=2 ; 2: 1+4=5 ; 10: 64+81=145
    assert s.tolist() == [5.0, 2.0, 5.0, 145.0]
    assert agg.krum_select(v, 0) == [1]
    assert agg.krum_select(v, 0, num_selected=2) == [1, 0]


def test_krum_rejects_outlier_update():
    ups = [{"w": t(1.0, 1.0)}, {"w": t(1.1, 0.9)}, {"w": t(0.9, 1.0)}, {"w": t(1.0, 1.1)}, {"w": t(50.0, -50.0)}]
    out = agg.krum(ups, num_byzantine=1)
    assert out["w"].abs().max() < 2.0


def test_partial_filter_modality_task_personal():
    ups = [
        {"encoders.audio.lora_A.weight": t(1.0), "heads.speech_command.w": t(1.0), "backbone.w": t(1.0),
         "personal.adapter": t(7.0)},
        {"encoders.audio.lora_A.weight": t(5.0), "heads.speech_command.w": t(5.0), "backbone.w": t(3.0)},
    ]
    # device 1 lacks audio and does not run speech_command (e.g. its copy is stale): it must not count
    kept = agg.partial_filter(ups, [("audio",), ("rgb",)], [("speech_command",), ("object_recognition",)])
    assert set(kept[0]) == {"encoders.audio.lora_A.weight", "heads.speech_command.w", "backbone.w"}
    assert set(kept[1]) == {"backbone.w"}
    out = agg.fedavg(kept, [1, 1])
    assert out["encoders.audio.lora_A.weight"].item() == 1.0
    assert out["backbone.w"].item() == 2.0
    assert "personal.adapter" not in out


def test_key_parsers_find_segments_anywhere():
    assert agg.key_modality("base_model.model.encoders.rgb.proj.lora_A.weight") == "rgb"
    assert agg.key_task("base_model.model.heads.gesture_recognition.fc.weight") == "gesture_recognition"
    assert agg.key_modality("my_encoders.rgb.x") is None
    assert agg.is_personal("m.personal.prompt") and not agg.is_personal("impersonal.x")


def test_lora_pairs_match_peft_names():
    keys = ["l.lora_A.weight", "l.lora_B.weight", "m.lora_A.weight", "bias"]
    assert agg.lora_pairs(keys) == [("l.lora_A.weight", "l.lora_B.weight")]


def test_refactorize_recovers_low_rank_and_pads():
    # Prepare: rank-1 matrix [[2,4],[1,2]] = [2,1]^T [1,2]
    dw = torch.tensor([[2.0, 4.0], [1.0, 2.0]])
    b, a = agg.refactorize(dw, 1)
    assert b.shape == (2, 1) and a.shape == (1, 2)
    assert torch.allclose(b @ a, dw.double(), atol=1e-12)
    b3, a3 = agg.refactorize(dw, 3)  # rank above min(d, n) pads with zeros
    assert b3.shape == (2, 3) and a3.shape == (3, 2)
    assert torch.allclose(b3 @ a3, dw.double(), atol=1e-12)


def test_exact_lora_heterogeneous_ranks_hand_computed():
    # Device 0: rank 1, B=[[1],[0]], A=[[1, 0]] -> BA = [[1,0],[0,0]]
    # Device 1: rank 2, B=I, A=[[0,0],[0,2]] -> BA = [[0,0],[0,2]]
    u0 = {"x.lora_A.w": torch.tensor([[1.0, 0.0]]), "x.lora_B.w": torch.tensor([[1.0], [0.0]])}
    u1 = {"x.lora_A.w": torch.tensor([[0.0, 0.0], [0.0, 2.0]]), "x.lora_B.w": torch.eye(2)}
    deltas = agg.exact_lora_deltas([u0, u1], [1, 1])
    # Exact average: diag(0.5, 1.0)
    dw = deltas[("x.lora_A.w", "x.lora_B.w")]
    assert torch.allclose(dw, torch.tensor([[0.5, 0.0], [0.0, 1.0]], dtype=torch.float64))
    # Rank-1 device gets the best rank-1 approximation: diag(0, 1)
    b, a = agg.refactorize(dw, 1)
    assert torch.allclose(b @ a, torch.tensor([[0.0, 0.0], [0.0, 1.0]], dtype=torch.float64), atol=1e-12)


def test_exact_lora_applies_scales():
    u0 = {"x.lora_A.w": torch.tensor([[1.0]]), "x.lora_B.w": torch.tensor([[1.0]])}
    u1 = {"x.lora_A.w": torch.tensor([[1.0]]), "x.lora_B.w": torch.tensor([[3.0]])}
    dw = agg.exact_lora_deltas([u0, u1], [1, 1], scales=[2.0, 1.0])[("x.lora_A.w", "x.lora_B.w")]
    assert dw.item() == pytest.approx(0.5 * 2.0 * 1.0 + 0.5 * 1.0 * 3.0)


def test_naive_lora_error_matches_cross_covariance():
    # Scalars: B=(1,3), A=(3,1), p=(1/2,1/2). exact = (3+3)/2 = 3, naive = 2*2 = 4 -> error 1, rel 1/3
    u0 = {"x.lora_A.w": torch.tensor([[3.0]]), "x.lora_B.w": torch.tensor([[1.0]])}
    u1 = {"x.lora_A.w": torch.tensor([[1.0]]), "x.lora_B.w": torch.tensor([[3.0]])}
    err = agg.naive_lora_error([u0, u1], [1, 1])
    assert err["abs_fro"] == pytest.approx(1.0)
    assert err["rel"] == pytest.approx(1 / 3)
    # identical A: error is zero
    same = agg.naive_lora_error([u0, {**u1, "x.lora_A.w": torch.tensor([[3.0]])}], [1, 1])
    assert same["abs_fro"] == pytest.approx(0.0, abs=1e-12)
    assert math.isfinite(same["rel"])


# -- streaming: running weighted sums -------------------------------------------------------------------------
def test_fold_weighted_sums_per_key_and_leaves_inputs_alone():
    # Prepare: device 0 (weight 1) holds a and b, device 1 (weight 3) holds a only
    u0, u1 = {"a": t(0.0, 4.0), "b": t(10.0)}, {"a": t(4.0, 0.0)}
    # Execute
    acc0 = agg.WeightedSums()
    acc1 = agg.fold_weighted(acc0, u0, 1.0)
    acc2 = agg.fold_weighted(acc1, u1, 3.0)
    # Assert: sums 1*[0,4] + 3*[4,0] = [12, 4] over weight 4; b only from device 0
    assert acc0.count == 0 and acc1.count == 1 and acc2.count == 2
    assert torch.equal(acc2.sums["a"], torch.tensor([12.0, 4.0], dtype=torch.float64))
    assert acc2.weights == {"a": 4.0, "b": 1.0}
    means = agg.weighted_means(acc2)
    assert torch.equal(means["a"], torch.tensor([3.0, 1.0], dtype=torch.float64))
    assert torch.equal(means["b"], torch.tensor([10.0], dtype=torch.float64))
    assert set(acc1.sums) == {"a", "b"} and torch.equal(acc1.sums["a"], torch.tensor([0.0, 4.0], dtype=torch.float64))


def test_fold_weighted_pads_lora_factors_along_the_rank_only():
    # rank 1 then rank 2: A [r, 2] grows by rows, B [2, r] by columns (HetLoRA's zero padding)
    a1, b1 = torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0], [1.0]])
    a2, b2 = torch.tensor([[3.0, 3.0], [5.0, 5.0]]), torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    acc = agg.fold_weighted(agg.WeightedSums(), {"x.lora_A.w": a1, "x.lora_B.w": b1}, 1.0, rank_dim=agg.lora_rank_dim)
    acc = agg.fold_weighted(acc, {"x.lora_A.w": a2, "x.lora_B.w": b2}, 1.0, rank_dim=agg.lora_rank_dim)
    means = agg.weighted_means(acc)
    assert torch.equal(means["x.lora_A.w"], torch.tensor([[2.0, 2.5], [2.5, 2.5]], dtype=torch.float64))
    assert torch.equal(means["x.lora_B.w"], torch.tensor([[1.0, 1.0], [2.0, 2.0]], dtype=torch.float64))
    # the same padding as the batch convention
    padded = agg.pad_lora_factors([{"x.lora_A.w": a1, "x.lora_B.w": b1}, {"x.lora_A.w": a2, "x.lora_B.w": b2}])
    assert torch.equal(means["x.lora_A.w"], agg.fedavg(padded, [1, 1])["x.lora_A.w"].double())


def test_fold_weighted_refuses_other_shape_differences_and_bad_weights():
    acc = agg.fold_weighted(agg.WeightedSums(), {"w": torch.zeros(2)}, 1.0)
    with pytest.raises(AggregationError, match="'w' has different shapes"):
        agg.fold_weighted(acc, {"w": torch.zeros(3)}, 1.0)
    lora = agg.fold_weighted(agg.WeightedSums(), {"q.lora_A.w": torch.zeros(1, 2)}, 1.0, rank_dim=agg.lora_rank_dim)
    with pytest.raises(AggregationError, match="'q.lora_A.w' has different shapes"):  # only the rank may differ
        agg.fold_weighted(lora, {"q.lora_A.w": torch.zeros(1, 3)}, 1.0, rank_dim=agg.lora_rank_dim)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(AggregationError, match="finite and >= 0"):
            agg.fold_weighted(acc, {"w": torch.zeros(2)}, bad)
    with pytest.raises(AggregationError, match="no updates"):
        agg.weighted_means(agg.WeightedSums())
    with pytest.raises(AggregationError, match="'w' sum to 0"):
        agg.weighted_means(agg.fold_weighted(agg.WeightedSums(), {"w": torch.zeros(2)}, 0.0))


def test_running_means_equal_fedavg_to_rounding():
    # the sequential sum divided once vs normalised weights contracted with the stack: same value, float rounding
    g = torch.Generator().manual_seed(0)
    ups = [{"w": torch.randn(64, 32, generator=g, dtype=torch.float64)} for _ in range(200)]
    ws = [float(w) for w in torch.randint(1, 500, (200,), generator=g)]
    acc = agg.WeightedSums()
    for u, w in zip(ups, ws, strict=True):
        acc = agg.fold_weighted(acc, u, w)
    got, want = agg.weighted_means(acc)["w"], agg.fedavg(ups, ws)["w"]
    err = float((got - want).abs().max())
    assert err <= 64 * torch.finfo(torch.float64).eps * float(want.abs().max())


def test_product_rank_reads_the_a_factor_of_the_template():
    tpl = {"enc.lora_A.weight": torch.zeros(3, 5), "enc.lora_B.weight": torch.zeros(4, 3), "head.bias": torch.zeros(2)}
    assert agg.product_rank(tpl, agg.product_key("enc.lora_A.weight")) == 3
    assert agg.product_rank(tpl, agg.product_key("other.lora_A.weight")) == 0  # not held
    assert agg.product_rank(tpl, "head.bias") == 0  # not a product
