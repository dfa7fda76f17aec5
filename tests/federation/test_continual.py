import pytest
import torch

from federation.continual import EwcPenalty, ReplayBuffer, forgetting
from federation.errors import FederationError


def test_forgetting_hand_computed():
    acc = [[0.9, 0.1, 0.0],
           [0.7, 0.8, 0.2],
           [0.5, 0.6, 0.9]]
    f = forgetting(acc)
    # phase 0: max(0.9, 0.7) - 0.5 = 0.4 ; phase 1: max(0.8) - 0.6 = 0.2
    assert f["per_phase"] == pytest.approx([0.4, 0.2])
    assert f["mean"] == pytest.approx(0.3)
    assert f["final_mean_accuracy"] == pytest.approx(2.0 / 3)


def test_forgetting_needs_square_matrix():
    with pytest.raises(FederationError, match="square"):
        forgetting([[1.0, 0.0]])


def test_ewc_penalty_hand_computed_and_anchors():
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    ewc = EwcPenalty(strength=2.0)
    assert ewc.penalty({"p": p}).item() == 0.0
    # loss = 3*p0 + 1*p1 -> grad (3, 1) -> Fisher (9, 1)
    ewc.consolidate({"p": p}, lambda b: (torch.tensor([3.0, 1.0]) * p).sum(), [None, None])
    assert torch.allclose(ewc.fisher["p"], torch.tensor([9.0, 1.0]))
    moved = torch.tensor([2.0, 4.0])
    # 0.5 * 2 * (9 * 1 + 1 * 4) = 13
    assert ewc.penalty({"p": moved}).item() == pytest.approx(13.0)
    again = EwcPenalty(strength=2.0)
    again.load_state_dict(ewc.state_dict())
    assert again.penalty({"p": moved}).item() == pytest.approx(13.0)


def test_ewc_keeps_parameter_near_anchor_in_training():
    # Phase A optimum at 0, phase B pulls to 10; with EWC the parameter stays much closer to 0
    def train(ewc):
        w = torch.nn.Parameter(torch.tensor([0.0]))
        if ewc is not None:
            ewc.consolidate({"w": w}, lambda b: ((w - 0.0) ** 2).sum() + (w * 1.0).sum(), [None])
        opt = torch.optim.SGD([w], lr=0.05)
        for _ in range(200):
            opt.zero_grad()
            loss = ((w - 10.0) ** 2).sum() + (ewc.penalty({"w": w}) if ewc else 0.0)
            loss.backward()
            opt.step()
        return w.item()

    assert train(None) == pytest.approx(10.0, abs=1e-3)
    assert train(EwcPenalty(strength=20.0)) < 5.0


def test_replay_buffer_reservoir():
    buf = ReplayBuffer(capacity=10, seed=0)
    buf.extend(range(1000))
    assert len(buf) == 10 and buf.seen == 1000
    assert min(buf.items) < 500  # early phases survive with high probability (seeded)
    assert len(set(buf.sample(5))) == 5
    with pytest.raises(FederationError, match="capacity"):
        ReplayBuffer(0)
