import socket
import sys
import types

import pytest
import torch

from federation.client import (
    ACTOR_FOOTPRINT_BYTES,
    LocalExecutor,
    RayExecutor,
    _auto_actor_count,
    _plan_groups,
    make_executor,
)
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


# -- device groups: several devices per actor process ------------------------------------------------------------
def test_groups_deal_devices_round_robin_and_keep_resource_kinds_apart():
    devices = [f"d{i}" for i in range(7)]
    quest = {"d1": {"quest": 1}, "d4": {"quest": 1}, "d5": {"quest": 2}}

    plain = _plan_groups(devices, {}, 3)
    mixed = _plan_groups(devices, quest, 3)

    assert plain == [("d0", "d3", "d6"), ("d1", "d4"), ("d2", "d5")]  # 3 actors, sizes within one
    assert mixed == [("d0", "d3"), ("d2", "d6"), ("d1", "d4"), ("d5",)]  # a quest x 2 device is a kind of its own
    assert _plan_groups(devices, {}, 1) == [(d,) for d in devices]
    assert _plan_groups(devices, {}, 100) == [tuple(devices)]


def test_automatic_rule_is_an_actor_per_free_cpu_within_the_memory_budget():
    roomy = 64 * ACTOR_FOOTPRINT_BYTES

    assert _auto_actor_count({"a": {"CPU": 2.0, "memory": roomy}}, 256) == 2
    assert _auto_actor_count({"a": {"CPU": 2.0, "memory": roomy}, "b": {"CPU": 4.5, "memory": roomy}}, 256) == 6
    assert _auto_actor_count({"a": {"CPU": 2.0, "memory": roomy}}, 1) == 1  # never more actors than devices
    assert _auto_actor_count({"a": {"CPU": 64.0, "memory": 8 * ACTOR_FOOTPRINT_BYTES}}, 256) == 4  # half of memory
    assert _auto_actor_count({"a": {"CPU": 0.5}}, 8) == 1  # at least one


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, 5000])
def test_ray_executor_refuses_a_bad_devices_per_actor(bad):
    with pytest.raises(ExecutorError, match=r"^devices_per_actor: expected an integer in 1\.\.4096 \(None: "
                                            rf"automatic\), got {bad!r}$"):
        RayExecutor(factories(), devices_per_actor=bad)


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


# -- the experiment config's Ray section and --ray-address ------------------------------------------------------------
def experiment(**ray):
    from federation.config import ExperimentConfig

    raw: dict = {"name": "x", "devices": [{"id": "a", "profile": "meta_quest_3", "tasks": ["object_recognition"]},
                                          {"id": "b", "profile": "hololens_2", "tasks": ["object_recognition"]}]}
    if ray:
        raw["ray"] = ray
    return ExperimentConfig.from_dict(raw)


def test_ray_config_round_trips_and_becomes_executor_options():
    cfg = experiment(address="10.0.0.7:6379", num_cpus_per_device=0.5, resources={"meta_quest_3": {"quest": 1}})

    again = type(cfg).from_yaml(cfg.to_yaml())

    assert again == cfg
    assert cfg.ray.executor_options(cfg.devices) == {
        "address": "10.0.0.7:6379", "num_cpus_per_device": 0.5, "resources": {"a": {"quest": 1.0}},
        "devices_per_actor": None}
    assert experiment(devices_per_actor=4).ray.executor_options(cfg.devices) == {
        "address": None, "num_cpus_per_device": None, "resources": {}, "devices_per_actor": 4}
    assert type(cfg).from_yaml(experiment(devices_per_actor=4).to_yaml()).ray.devices_per_actor == 4


@pytest.mark.parametrize("ray, message", [
    ({"adress": "h:1"}, r"'ray\.adress': unknown field; allowed: \['address', 'num_cpus_per_device'"),
    ({"address": "head-node"}, r"'ray\.address': must be host:port, ray://host:port, 'auto' or 'local'"),
    ({"address": "head:70000"}, r"'ray\.address': must be host:port.*\(got 'head:70000'\)"),
    ({"num_cpus_per_device": -1}, r"'ray\.num_cpus_per_device': must be a finite number in \[0, 1024\]"),
    ({"num_cpus_per_device": True}, r"'ray\.num_cpus_per_device': must be a number"),
    ({"resources": {"pixel_9": {"quest": 1}}}, r"'ray\.resources': unknown value \(got 'pixel_9'\); allowed: "),
    ({"resources": {"meta_quest_3": {"CPU": 1}}}, r"'ray\.resources\.meta_quest_3\.CPU': is a Ray built-in"),
    ({"resources": {"meta_quest_3": {"quest": 0}}}, r"'ray\.resources\.meta_quest_3\.quest': must be a finite "
                                                    r"number in \(0, 1024\]"),
    ({"resources": {"meta_quest_3": {}}}, r"'ray\.resources\.meta_quest_3': must map 1-8 Ray resource names"),
    ({"aggregator": "actor"}, r"'ray\.aggregator': unknown value \(got 'actor'\); allowed: \['driver'\]"),
    ({"devices_per_actor": -1}, r"'ray\.devices_per_actor': must be an integer in \[0, 256\] \(got -1\)"),
    ({"devices_per_actor": 2.5}, r"'ray\.devices_per_actor': must be an integer in \[0, 256\]"),
])
def test_ray_config_refuses_bad_values_naming_the_field(ray, message):
    from federation.errors import ConfigError

    with pytest.raises(ConfigError, match=message) as exc:
        experiment(**ray)
    assert "\n" not in str(exc.value)


def test_a_resume_may_change_where_the_devices_run_but_nothing_else():
    import dataclasses

    cfg = experiment()

    moved = cfg.with_executor("ray", address="10.0.0.7:6379")

    assert moved.rounds.executor == "ray" and moved.ray.address == "10.0.0.7:6379"
    assert moved.experiment_dict() == cfg.experiment_dict()
    assert dataclasses.replace(cfg, seed=1).experiment_dict() != cfg.experiment_dict()


def test_ray_address_flag_is_checked_by_the_parser(capsys):
    from bridge.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["run", __file__, "--ray-address", "head-node"])

    assert exc.value.code == 2
    assert "argument --ray-address: expected host:port, ray://host:port, 'auto' or 'local'" in capsys.readouterr().err


def test_ray_address_flag_implies_the_ray_executor():
    import argparse

    from federation.cli import _with_flags

    cfg = _with_flags(experiment(), argparse.Namespace(ray_address="ray://10.0.0.7:10001"))

    assert cfg.rounds.executor == "ray" and cfg.ray.address == "ray://10.0.0.7:10001"
    assert _with_flags(experiment(), argparse.Namespace(ray_address=None)) == experiment()
