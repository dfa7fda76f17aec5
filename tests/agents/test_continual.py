"""Continual learning lives with the agent that trains: EWC and replay (agents.continual), and the agent's
phase switching that uses them."""

import pytest
import torch

from agents.continual import EWC, ReplayBuffer
from agents.errors import AgentError


def test_ewc_penalty_hand_computed_and_anchors():
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    ewc = EWC(strength=2.0)
    assert ewc.penalty({"p": p}).item() == 0.0
    # loss = 3*p0 + 1*p1 -> grad (3, 1) -> Fisher (9, 1)
    ewc.consolidate({"p": p}, lambda b: (torch.tensor([3.0, 1.0]) * p).sum(), [None, None])
    assert torch.allclose(ewc.fisher["p"], torch.tensor([9.0, 1.0]))
    moved = torch.tensor([2.0, 4.0])
    # 0.5 * 2 * (9 * 1 + 1 * 4) = 13
    assert ewc.penalty({"p": moved}).item() == pytest.approx(13.0)
    again = EWC(strength=2.0)
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
    assert train(EWC(strength=20.0)) < 5.0


def test_replay_buffer_reservoir():
    buf = ReplayBuffer(capacity=10, seed=0)
    buf.extend(range(1000))
    assert len(buf) == 10 and buf.seen == 1000
    assert min(buf.items) < 500  # early phases survive with high probability (seeded)
    assert len(set(buf.sample(5))) == 5
    with pytest.raises(AgentError, match="capacity"):
        ReplayBuffer(0)
