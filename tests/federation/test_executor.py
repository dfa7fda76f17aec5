import socket
import sys
import types

import pytest
import torch

from federation.client import LocalExecutor, RayExecutor, make_executor
from federation.config import RoundsConfig
from federation.errors import ExecutorError, UnknownNameError
from federation.rounds import RoundEngine
from federation.strategies import make_strategy
from federation.synthetic import SyntheticClient

#: measured wall-clock figures: the only parts of a round record that differ between two runs of the same seed
DEVICE_TIMINGS = ("train_wall_s", "inference_latency_ms")


def factories(n=3):
    return {f"d{i}": (lambda i=i: SyntheticClient(f"d{i}", "meta_quest_3", seed=i)) for i in range(n)}


def run_rounds(executor, rounds=2):
    """The round records as JSON dicts, wall-clock timings removed."""
    eng = RoundEngine(executor, make_strategy("fedavg"), RoundsConfig(local_steps=3), seed=0)
    records = []
    for r in range(rounds):
        rec = eng.run_round(r).to_json()
        del rec["wall_time_s"]
        for dev in rec["devices"].values():
            for key in DEVICE_TIMINGS:
                del dev[key]
        records.append(rec)
    return records


def closed_loopback_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_devices(ray_local):
    """The three synthetic devices of ``factories()`` as Ray actors (built once for this module's tests), holding
    1.5 of the node's 2 CPUs: the other tests' actors get the rest."""
    ex = make_executor("ray", factories(), num_cpus_per_device=0.5)
    yield ex
    ex.close()


@pytest.fixture
def one_torch_thread():
    """This process trains as ExperimentRunner's in-process devices do: one intra-op thread."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def test_make_executor_unknown_name_lists_known():
    with pytest.raises(UnknownNameError, match="unknown executor 'dask'; known: local, ray"):
        make_executor("dask", factories())


def test_local_executor_calls_in_order():
    ex = make_executor("local", factories(2))
    assert isinstance(ex, LocalExecutor) and ex.device_ids == ("d0", "d1")
    assert ex.info("d1")["modalities"] == ("rgb",)


def test_ray_executor_rounds_equal_local_rounds_bit_for_bit(ray_devices, one_torch_thread):
    got = run_rounds(ray_devices)

    want = run_rounds(make_executor("local", factories()))
    assert isinstance(ray_devices, RayExecutor) and ray_devices.device_ids == ("d0", "d1", "d2")
    assert got == want  # losses, accuracies, bytes, energy, battery: every float exactly equal
    # the comparison is not vacuous: every device trained, sent and received tensors, and round 2 differs from 1
    assert [rec["counts"] for rec in want] == [{"participant": 3}] * 2
    assert all(d["bytes_sent"] > 0 and d["bytes_received"] > 0 and d["train_loss"] > 0
               for rec in want for d in rec["devices"].values())
    assert all(want[0]["devices"][d] != want[1]["devices"][d] for d in ("d0", "d1", "d2"))


def test_ray_executor_call_failure_names_the_device_error(ray_devices):
    with pytest.raises(ExecutorError, match=r"^Ray call 'no_such_method' failed: AttributeError: "):
        ray_devices.map("no_such_method", [("d0", (), {})])


def test_ray_actor_builds_its_client_with_torch_threads(ray_local):
    class ThreadProbe(SyntheticClient):
        def __init__(self):
            super().__init__("p", "meta_quest_3")
            self.threads_at_build = torch.get_num_threads()

        def threads(self):
            return self.threads_at_build, torch.get_num_threads()

    ex = make_executor("ray", {"p": ThreadProbe}, torch_threads=2)
    try:
        assert ex.map("threads", [("p", (), {})]) == [(2, 2)]
    finally:
        ex.close()


def test_ray_executor_actor_that_fails_to_build_raises_executor_error(ray_local):
    def broken():
        raise ValueError("no data for d9")

    with pytest.raises(ExecutorError, match=r"^a Ray device actor failed to start: ValueError: no data for d9$"):
        make_executor("ray", {"d9": broken})


def test_ray_executor_devices_that_do_not_fit_the_free_cpus_raise_instead_of_waiting(ray_local):
    free = ray_local.available_resources()["CPU"]

    with pytest.raises(ExecutorError, match=rf"^3 device actors x {free:g} CPUs do not fit the {free:g} CPUs free"):
        make_executor("ray", factories(3), num_cpus_per_device=free)


def test_ray_executor_unreachable_address_raises_executor_error():
    port = closed_loopback_port()
    with pytest.raises(ExecutorError, match=rf"^cannot reach a Ray cluster at '127\.0\.0\.1:{port}': Connection refused$"):
        make_executor("ray", factories(), address=f"127.0.0.1:{port}")


def test_ray_executor_malformed_address_raises_executor_error():
    with pytest.raises(ExecutorError, match=r"^Ray address 'head-node': expected host:port"):
        make_executor("ray", factories(), address="head-node")


def test_ray_that_fails_to_start_raises_executor_error(monkeypatch):
    def init(**kwargs):
        raise RuntimeError("Failed to start the GCS server.\nSee the logs in the session directory.")

    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(is_initialized=lambda: False, init=init))

    with pytest.raises(ExecutorError, match=r"^cannot start a local Ray: RuntimeError: Failed to start the GCS server\.$"):
        make_executor("ray", factories())
