import math

import numpy as np
import pytest
import torch

from federation import privacy as P
from federation.errors import FederationError


def test_clip_update_scales_to_norm():
    u = {"a": torch.tensor([3.0]), "b": torch.tensor([4.0])}  # norm 5
    clipped, norm = P.clip_update(u, 1.0)
    assert norm == pytest.approx(5.0)
    assert clipped["a"].item() == pytest.approx(0.6) and clipped["b"].item() == pytest.approx(0.8)
    same, _ = P.clip_update(u, 10.0)
    assert same["a"].item() == 3.0


def test_dp_average_without_noise_is_sum_over_expected_count():
    ups = [{"a": torch.tensor([1.0])}, {"a": torch.tensor([2.0])}]
    out = P.dp_average(ups, clip_norm=1.0, noise_multiplier=0.0, expected_counts={"a": 4.0},
                       generator=torch.Generator().manual_seed(0))
    assert out["a"].item() == pytest.approx(0.75)


def test_dp_average_noise_std():
    ups = [{"a": torch.zeros(20000)}]
    out = P.dp_average(ups, clip_norm=2.0, noise_multiplier=1.5, expected_counts={"a": 1.0},
                       generator=torch.Generator().manual_seed(0))
    assert float(out["a"].std()) == pytest.approx(3.0, rel=0.03)


def test_rdp_full_batch_is_gaussian_mechanism():
    # q = 1: RDP(a) = a / (2 sigma^2) per step
    rdp = P.rdp_sampled_gaussian(1.0, 2.0, steps=3, orders=[2, 4])
    assert rdp.tolist() == pytest.approx([3 * 2 / 8, 3 * 4 / 8])


def test_rdp_order2_closed_form():
    # a = 2: A = (1-q)^2 + 2q(1-q) + q^2 e^{1/sigma^2}
    q, s = 0.1, 1.0
    expected = math.log((1 - q) ** 2 + 2 * q * (1 - q) + q * q * math.exp(1 / s**2))
    assert P.rdp_sampled_gaussian(q, s, 1, [2])[0] == pytest.approx(expected)


def test_epsilon_grows_with_rounds_and_shrinks_with_noise():
    def eps(z, rounds):
        acc = P.RdpAccountant()
        for _ in range(rounds):
            acc.step(noise_multiplier=z, sample_rate=0.5)
        return acc.get_epsilon(1e-5)

    assert 0 < eps(1.0, 5) < eps(1.0, 10) < eps(1.0, 20)
    assert eps(2.0, 10) < eps(1.0, 10)
    assert P.RdpAccountant().get_epsilon(1e-5) == 0.0


def test_accountant_matches_opacus_at_integer_orders():
    rdp_mod = pytest.importorskip("opacus.accountants.analysis.rdp")
    orders = list(P.DEFAULT_ORDERS)
    ref = rdp_mod.compute_rdp(q=0.05, noise_multiplier=1.2, steps=50, orders=orders)
    mine = P.rdp_sampled_gaussian(0.05, 1.2, 50, orders)
    assert np.allclose(mine, ref, rtol=1e-10)
    eps_ref, _ = rdp_mod.get_privacy_spent(orders=orders, rdp=ref, delta=1e-5)
    assert P.epsilon_from_rdp(mine, orders, 1e-5)[0] == pytest.approx(float(eps_ref), rel=1e-10)


def test_accountant_state_round_trip():
    acc = P.RdpAccountant()
    acc.step(noise_multiplier=1.0, sample_rate=0.2)
    acc.step(noise_multiplier=1.0, sample_rate=0.2)
    acc.step(noise_multiplier=0.8, sample_rate=0.2)
    assert acc.history == [(1.0, 0.2, 2), (0.8, 0.2, 1)]
    again = P.RdpAccountant.from_state_dict(acc.state_dict())
    assert again.get_epsilon(1e-5) == acc.get_epsilon(1e-5)


def test_loss_threshold_auc_hand_computed():
    # members (0.1, 0.5), non-members (0.3, 0.5): pairs less: (0.1<0.3),(0.1<0.5) = 2; tie (0.5,0.5)=0.5 -> 2.5/4
    assert P.loss_threshold_auc([0.1, 0.5], [0.3, 0.5]) == pytest.approx(0.625)
    assert P.loss_threshold_auc([0.1], [0.9]) == 1.0
    with pytest.raises(FederationError, match="at least one"):
        P.loss_threshold_auc([], [1.0])


def test_tpr_at_fpr():
    members = [0.1, 0.2, 0.9]
    nonmembers = [0.15, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0, 1.1]
    # fpr 0.1 -> at most 1 non-member below threshold -> threshold = 0.5 -> members below: 0.1, 0.2
    assert P.tpr_at_fpr(members, nonmembers, 0.1) == pytest.approx(2 / 3)


def test_calibrated_scores_subtract_the_reference_loss_per_sample():
    assert P.calibrated_scores([1.0, 0.5], [0.25, 1.5]).tolist() == [0.75, -1.0]
    with pytest.raises(FederationError, match="2 target and 1 reference"):
        P.calibrated_scores([1.0, 0.5], [0.25])


def test_calibration_removes_a_harder_held_out_set_that_fools_the_raw_attack():
    # Prepare: nothing was memorised (target loss = reference loss on every sample), but the held-out steps
    # are harder (another room): every non-member loss is above every member loss.
    members, member_ref = [0.1, 0.2], [0.1, 0.2]
    nonmembers, nonmember_ref = [1.0, 2.0], [1.0, 2.0]

    # Execute
    audit = P.membership_audit(members, nonmembers, member_reference=member_ref, nonmember_reference=nonmember_ref)

    # Assert: the raw attack sees perfect "leakage"; calibrated, every score is 0 -> all pairs tie -> 0.5
    assert audit.auc_uncalibrated == 1.0 and audit.tpr_at_fpr_uncalibrated == 1.0
    assert audit.auc == 0.5 and audit.tpr_at_fpr == 0.0
    assert (audit.members, audit.nonmembers, audit.fpr) == (2, 2, 0.1)


def test_calibration_finds_memorised_hard_members_the_raw_attack_misses():
    # members are hard samples (reference 1.0, 3.0) the target learned by 0.5 each; non-members are easy
    # (reference 0.2, 0.4) and the target is no better on them
    audit = P.membership_audit([0.5, 2.5], [0.2, 0.4], member_reference=[1.0, 3.0], nonmember_reference=[0.2, 0.4])
    # raw: no member loss is below a non-member loss (0 of 4 pairs); calibrated: -0.5, -0.5 vs 0, 0 (4 of 4)
    assert audit.auc_uncalibrated == 0.0
    assert audit.auc == 1.0 and audit.tpr_at_fpr == 1.0


def test_membership_audit_without_reference_is_the_raw_attack_only():
    audit = P.membership_audit([0.1, 0.5], [0.3, 0.5])
    assert audit.auc is None and audit.tpr_at_fpr is None
    assert audit.auc_uncalibrated == pytest.approx(0.625)  # the hand-computed case of the test above
    with pytest.raises(FederationError, match="both the members and the non-members"):
        P.membership_audit([0.1], [0.3], member_reference=[0.1])
