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
    # live steps are held out in whole blocks (block 3 of every 4, 6 steps each) with a guard of 2 steps after
    # every change between training and held-out blocks: steps 0-17 train, 18-19 guard, 20-23 held out
    agent = _agent("hololens_2", config=AgentConfig(holdout_every=4, holdout_block_steps=6, guard_steps=2, seed=1))
    for s in range(24):
        agent.predict(make_frame(s, device_id="dev", profile="hololens_2"))
    assert len(agent.buffer) == 18 and len(agent.holdout) == 4
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


def _base_model() -> M3TModel:
    torch.manual_seed(123)  # the "checkpoint": the same base weights for every agent below
    return M3TModel(make_config("tiny"))


def test_same_seed_same_device_whatever_the_global_generators_did():
    # LoRA A and the personal prompt are drawn from torch's global generator inside peft/torch: the agent seeds
    # it from its own seed, so the process's history (another device built first, a stray torch.rand) is irrelevant
    def build(seed: int, noise: int):
        torch.manual_seed(noise)
        torch.rand(noise + 1)
        return DeviceAgent(_base_model(), "hololens_2", device_id="dev", config=AgentConfig(seed=seed),
                           personalization=PersonalizationConfig(method="lora", personal=True))

    a, b, c = build(7, 1), build(7, 99), build(8, 1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["personal.prompt"], sc["personal.prompt"])
    lora_a = next(k for k in sa if "lora_A" in k)
    assert not torch.equal(sa[lora_a], sc[lora_a])
    # and training with the same seed gives the same numbers
    for ag in (a, b):
        for s in range(6):
            ag.observe(make_frame(s, device_id="dev", profile="hololens_2"))
    ra, rb = a.local_train(steps=2, batch_size=3, seed=5), b.local_train(steps=2, batch_size=3, seed=5)
    assert ra.loss == rb.loss
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_evaluate_base_is_the_pretrained_model_before_tuning():
    base = _base_model()
    ref = DeviceAgent(_base_model(), "hololens_2", device_id="dev",
                      personalization=PersonalizationConfig(method="full"))
    agent = DeviceAgent(base, "hololens_2", device_id="dev",
                        personalization=PersonalizationConfig(method="prompt", personal=True))
    items = [make_item(np.random.default_rng(i)) for i in range(8)]
    ref.add_items(items, "test")
    agent.add_items(items, "test")
    # the prompt and the personal prompt change the model's output; switched off it is the base model again
    assert agent.evaluate().per_sample_loss != pytest.approx(ref.evaluate().per_sample_loss, abs=1e-6)
    assert agent.evaluate_base().per_sample_loss == pytest.approx(ref.evaluate().per_sample_loss, abs=1e-6)


def test_label_baselines_majority_and_persistence():
    agent = _agent("hololens_2")
    y = torch.tensor
    train = [{"labels": {"speech_command": y(c)}} for c in (1, 1, 2, 3)]
    test = [{"labels": {"speech_command": y(c)}} for c in (1, 3, 3, 3)]
    from agents.train import label_baselines

    out = label_baselines(train, test, ("speech_command",))
    assert out["majority"].accuracy["speech_command"] == pytest.approx(0.25)  # always 1
    assert out["persistence"].accuracy["speech_command"] == pytest.approx(0.75)  # always 3 (the last)
    # balanced: recall of class 1 and class 3, averaged
    assert out["majority"].balanced_accuracy["speech_command"] == pytest.approx(0.5)
    assert out["persistence"].balanced_accuracy["speech_command"] == pytest.approx(0.5)
    del agent
