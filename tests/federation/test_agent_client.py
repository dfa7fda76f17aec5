import pytest
import torch

from bridge.devices import get_device
from federation.agent_client import AgentClient
from federation.config import ContinualConfig, DeviceConfig
from federation.errors import FederationError


class FakeAgent:
    """Stands in for agents.DeviceAgent to test the adapter's conversions only."""

    def __init__(self, leak=False):
        self.shared = {"encoders.rgb.lora_A.weight": torch.ones(2, 3)}
        if leak:
            self.shared["personal.prompt"] = torch.zeros(1)
        self.loaded = None

    def local_train(self, steps, seed):
        return {"num_samples": 10, "loss": 0.5, "flops": 2e9}

    def shared_state(self):
        return dict(self.shared)

    def load_shared_state(self, tensors):
        self.loaded = tensors

    def evaluate(self, split="test", phase=None):
        return {"accuracy": {"object_recognition": 0.75}, "loss": 0.3, "latency_ms": 4.0, "num_samples": 8,
                "per_sample_loss": [0.1, 0.2]}

    def state_dict(self):
        return {"a": torch.ones(1), "meta": "ignored"}

    def load_state_dict(self, state):
        self.state = state


def client(agent):
    dev = DeviceConfig("ava", "apple_vision_pro", ["object_recognition"])
    return AgentClient(agent, dev, get_device("apple_vision_pro"), 2.0)


def test_adapter_converts_reports():
    c = client(FakeAgent())
    rep = c.local_train(3, seed=1)
    assert (rep.num_samples, rep.loss, rep.steps, rep.compute_gflop) == (10, 0.5, 3, 2.0)
    ev = c.evaluate()
    assert ev.mean_accuracy == 0.75 and ev.per_sample_loss == [0.1, 0.2]
    assert set(c.checkpoint_state()) == {"a", "continual.phase"}
    c.set_update({"x": torch.zeros(1)})
    assert set(c.agent.loaded) == {"x"}
    assert c.tasks == ("object_recognition",) and "gaze" in c.modalities


def test_adapter_refuses_to_send_personal_tensors():
    with pytest.raises(FederationError, match="personal adapters must never leave the device"):
        client(FakeAgent(leak=True)).get_update()


class PhasedAgent(FakeAgent):
    """A fake agent with phases of items and a buffer, plus a one-parameter model (for EWC)."""

    def __init__(self):
        super().__init__()
        self._phases = [([f"p0-{i}" for i in range(20)], []), ([f"p1-{i}" for i in range(5)], [])]
        self.buffer = []
        self.model = torch.nn.Linear(1, 1, bias=False)

    def set_phase(self, phase):
        self.buffer = list(self._phases[phase][0])


def phased_client(method, **kw):
    dev = DeviceConfig("ava", "apple_vision_pro", ["object_recognition"])
    return AgentClient(PhasedAgent(), dev, get_device("apple_vision_pro"), 2.0,
                       continual=ContinualConfig(method=method, **kw), seed=3)


def test_replay_adds_earlier_phase_steps_deterministically():
    c = phased_client("replay", replay_capacity=4)
    c.set_phase(0)
    assert len(c.agent.buffer) == 20
    c.set_phase(1)
    replayed = [x for x in c.agent.buffer if x.startswith("p0-")]
    assert len(c.agent.buffer) == 5 + 4 and len(replayed) == 4
    again = phased_client("replay", replay_capacity=4)
    again.set_phase(1)
    assert again.agent.buffer == c.agent.buffer  # seeded: a resumed run replays the same steps


def test_ewc_hook_adds_penalty_gradient_after_phase_change():
    c = phased_client("ewc", ewc_strength=10.0)
    w = c.agent.model.weight
    with torch.no_grad():
        w.fill_(1.0)
    c.set_phase(0)
    (w.sum() * 2.0).backward()  # gradient 2 -> squared 4 -> Fisher 4 after consolidation
    assert w.grad.item() == pytest.approx(2.0)
    c.set_phase(1)  # consolidate: F = 4, anchor = 1
    w.grad = None
    with torch.no_grad():
        w.fill_(1.5)
    (w.sum() * 0.0).backward()
    # EWC gradient = strength * F * (w - anchor) = 10 * 4 * 0.5
    assert w.grad.item() == pytest.approx(20.0)
    state = c.checkpoint_state()
    fresh = phased_client("ewc", ewc_strength=10.0)
    fresh.restore_state(state)
    assert fresh._phase == 1 and fresh._fisher["weight"].item() == pytest.approx(4.0)
