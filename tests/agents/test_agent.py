from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.agent import AgentConfig, DeviceAgent, compute_budget
from agents.config import make_config
from agents.errors import UnknownTaskError
from agents.model import M3TModel
from agents.personalize import PersonalizationConfig
from bridge.devices import get_device

from .conftest import make_frame, make_item


def _agent(profile: str = "ray_ban_meta", **kw) -> DeviceAgent:
    torch.manual_seed(0)
    return DeviceAgent(M3TModel(make_config("tiny")), profile, device_id="dev",
                       personalization=PersonalizationConfig(method="lora", personal=True), **kw)


def test_agent_reads_only_its_profiles_modalities_and_skips_empty_frames():
    agent = _agent("ray_ban_meta")  # rgb + audio
    assert agent.modalities == ("rgb", "audio")
    p = agent.predict(make_frame(0))
    assert not p.skipped and p.modalities == ("rgb", "audio")
    assert set(p.labels) == set(agent.tasks) and p.latency_ms > 0 and p.device_latency_ms > 0
    # a frame with only modalities the glasses do not have is a counted skip, not an exception
    p2 = agent.predict(make_frame(1, rgb=False, audio=False))
    assert p2.skipped and "no usable modality" in p2.reason
    assert agent.frames_skipped == 1 and agent.frames_seen == 1


def test_unknown_task_is_a_clear_error():
    with pytest.raises(UnknownTaskError, match="no head for task 'juggling'"):
        DeviceAgent(M3TModel(make_config("tiny")), "hololens_2", tasks=["juggling"])


def test_compute_budget_scales_with_relative_compute():
    assert compute_budget(get_device("meta_quest_3")) == (10, 16)  # relative_compute 1.0
    assert compute_budget(get_device("ray_ban_meta")) == (2, 5)  # 0.1: 10*0.1=1 -> min 2; 16*sqrt(0.1)=5.06
    assert compute_budget(get_device("varjo_xr_4")) == (40, 32)  # capped


def test_local_loop_trains_shares_and_meters():
    agent = _agent("hololens_2", config=AgentConfig(holdout_every=4, seed=1))
    for s in range(24):
        agent.predict(make_frame(s, device_id="dev", profile="hololens_2"))
    assert len(agent.buffer) == 18 and len(agent.holdout) == 6
    rep = agent.local_train(steps=2, batch_size=4, seed=0)
    assert rep.num_samples == 8 and rep.flops > 0 and rep.energy_j > 0
    shared = agent.shared_state()
    assert shared and not any(k.startswith("personal.") for k in shared)
    assert agent.bytes_sent == sum(t.numel() * t.element_size() for t in shared.values())
    m = agent.metrics()
    assert m.latency_p95_ms >= m.latency_p50_ms > 0
    assert m.storage_mb == pytest.approx(m.base_mb + m.adapter_mb)
    assert m.energy_comm_j == pytest.approx(agent.bytes_sent * 8 * 0.645e-6)
    assert set(m.personalization_gain) <= set(agent.tasks)
    # a round trip of the device's own state restores it exactly
    state = agent.state_dict()
    agent.local_train(steps=1, batch_size=4, seed=1)
    agent.load_state_dict(state)
    assert all(torch.equal(v, agent.state_dict()[k]) for k, v in state.items())


def test_recorded_items_filtered_to_device_modalities():
    agent = _agent("ray_ban_meta")
    n = agent.add_items([make_item(np.random.default_rng(0))])
    assert n == 1
    item = agent.buffer[0]
    assert set(item["present"]) == {"rgb", "audio"} and "imu" not in item
