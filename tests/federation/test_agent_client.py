import pytest
import torch

from bridge.devices import get_device
from federation.agent_client import AgentClient, build_client_factories
from federation.config import DeviceConfig, ExperimentConfig
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
    assert set(c.checkpoint_state()) == {"a"}
    c.set_update({"x": torch.zeros(1)})
    assert set(c.agent.loaded) == {"x"}
    assert c.tasks == ("object_recognition",) and "gaze" in c.modalities


def test_adapter_refuses_to_send_personal_tensors():
    with pytest.raises(FederationError, match="personal adapters must never leave the device"):
        client(FakeAgent(leak=True)).get_update()


def test_factories_need_agents_builder():
    import agents

    if hasattr(agents, "build_federated_agent"):
        pytest.skip("the agents package provides the builder")
    cfg = ExperimentConfig(name="x", devices=[DeviceConfig("ava", "apple_vision_pro", ["object_recognition"])])
    with pytest.raises(FederationError, match="agents:build_federated_agent"):
        build_client_factories(cfg)
