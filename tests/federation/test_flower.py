"""xrfed on Flower: the simulation engine agrees with xrfed's runner, personal tensors stay home, the deployment
engine runs real SuperLink/SuperNode processes (one killed mid-round), and bad input is named."""

import json
import threading
import time
from typing import Any

import pytest

flwr = pytest.importorskip("flwr")

from flwr.app import ArrayRecord, Context, RecordDict  # noqa: E402
from flwr.serverapp import Grid  # noqa: E402

from federation.config import ExperimentConfig, RoundsConfig  # noqa: E402
from federation.errors import AggregationError, ConfigError  # noqa: E402
from federation.flower.client_app import device_factories, make_client_app  # noqa: E402
from federation.flower.deploy import LocalFederation, check_superlink, free_port  # noqa: E402
from federation.flower.records import FlowerError  # noqa: E402
from federation.flower.strategy import XrfedStrategy, strategy_from_config  # noqa: E402
from federation.runner import ExperimentRunner, read_metrics  # noqa: E402

DEVICES: list[dict[str, Any]] = [
    {"id": "q3", "profile": "meta_quest_3", "tasks": ["object_recognition"]},
    {"id": "avp", "profile": "apple_vision_pro", "tasks": ["object_recognition", "intent_prediction"], "rank": 2},
    {"id": "rb", "profile": "ray_ban_meta", "tasks": ["object_recognition"]},
]
#: every figure of a device's round that does not depend on the host's clock
LEARNING = ("status", "accuracy", "balanced_accuracy", "global_accuracy", "global_balanced_accuracy",
            "personalization_gain", "train_loss", "update_norm", "train_time_s", "compute_joules", "comm_joules",
            "bytes_sent", "bytes_received", "battery_frac", "storage_bytes", "active_modules", "accuracy_per_task",
            "balanced_accuracy_per_task")


def config(**over):
    raw = {"name": "flower-t", "devices": DEVICES, "phases": 2, "aggregator": {"name": "exact_lora"},
           "rounds": {"rounds": 3, "local_steps": 3, "availability": 0.8}, **over}
    return ExperimentConfig.from_dict(raw)


def figures(rows):
    return [(r["round"], r["phase"], r["counts"], r["links"], r["round_latency_s"], r["epsilon"],
             {d: {k: v[k] for k in LEARNING} for d, v in r["devices"].items()}) for r in rows]


def runner_rows(cfg, tmp_path):
    ExperimentRunner(cfg, tmp_path / "xrfed", client_factories=device_factories(cfg, "synthetic"),
                     progress=False).run()
    return read_metrics(tmp_path / "xrfed")


class LoopbackGrid(Grid):
    """An in-process transport for the strategy tests: each message goes to the real ClientApp of its node."""

    def __init__(self, app, devices, *, tamper=None):
        from flwr.supercore.task_identity import TaskIdentity

        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
        self.app, self.tamper = app, tamper
        self.contexts = {100 + i: Context(run_id=1, node_id=100 + i, node_config={"device-id": d},
                                          state=RecordDict(), run_config={}) for i, d in enumerate(devices)}

    def set_run(self, run):
        raise NotImplementedError

    @property
    def run(self):
        raise NotImplementedError

    def create_message(self, *args, **kwargs):
        raise NotImplementedError

    def get_node_ids(self):
        return list(self.contexts)

    def push_messages(self, messages):
        raise NotImplementedError

    def pull_messages(self, message_ids):
        raise NotImplementedError

    def send_and_receive(self, messages, *, timeout=None):
        replies = [self.app(m, self.contexts[m.metadata.dst_node_id]) for m in messages]
        return [self.tamper(r) for r in replies] if self.tamper else replies


def loopback(cfg, **kw):
    strategy = strategy_from_config(cfg)
    grid = LoopbackGrid(make_client_app(device_factories(cfg, "synthetic")), [d.id for d in cfg.devices], **kw)
    strategy.start(grid=grid, initial_arrays=ArrayRecord(), num_rounds=cfg.rounds.rounds)
    return strategy


@pytest.fixture(scope="module")
def simulated():
    import ray

    from federation.flower.server_app import run_simulation

    # Flower's simulation engine starts its own Ray and shuts it down afterwards; a Ray left running by an earlier
    # test module (tests/conftest.py's ray_local) is shut down first -- later users re-initialise it
    if ray.is_initialized():
        ray.shutdown()
    return run_simulation(config(), devices="synthetic", num_cpus=2, client_cpus=2.0)


def test_simulation_engine_gives_xrfed_runners_figures_exactly(simulated, tmp_path):
    # Prepare / Execute: the same config and seed on Flower's simulation engine (fixture) and on xrfed's runner
    ref = runner_rows(config(), tmp_path)
    got = [r.to_json() for r in simulated.records]

    # Assert: every learning figure, byte, joule and status is identical, round by round (a device offline in a
    # round makes the selection part of the comparison)
    assert len(got) == 3
    assert any(r["counts"].get("offline") for r in ref)
    assert figures(got) == figures(ref)


def test_personal_tensors_never_cross_as_flower_arrays(simulated):
    shared = {d: set(f().shared_state()) for d, f in device_factories(config(), "synthetic").items()}
    crossed = simulated.inner.uplink_keys
    assert set(crossed) == {"q3", "avp", "rb"}
    for d, keys in crossed.items():
        assert keys == shared[d]
        assert not any(k.startswith("personal.") for k in keys)


def test_dp_wrapper_agrees_with_xrfed_runner(tmp_path):
    cfg = config(dp={"enabled": True, "clip_norm": 0.5, "noise_multiplier": 0.8})
    got = [r.to_json() for r in loopback(cfg).records]
    assert figures(got) == figures(runner_rows(cfg, tmp_path))
    assert got[-1]["epsilon"] > 0


def test_robust_aggregator_and_heterogeneous_ranks_run_as_flower_strategy(tmp_path):
    cfg = config(aggregator={"name": "trimmed_mean", "options": {"trim": 1}})
    assert figures([r.to_json() for r in loopback(cfg).records]) == figures(runner_rows(cfg, tmp_path))


def test_strategy_refuses_mismatched_tensors():
    import numpy as np
    from flwr.app import Array, MessageType

    def wrong_shape(reply):  # rb (node 102) answers its train message with a rank-3 factor instead of rank 4
        if reply.metadata.src_node_id == 102 and reply.metadata.message_type == MessageType.TRAIN:
            reply.content.array_records["arrays"]["encoders.rgb.lora_A"] = Array(np.zeros((3, 6), np.float32))
        return reply

    with pytest.raises(AggregationError, match=r"device 'rb'.*'encoders.rgb.lora_A' has shape \(3, 6\), "
                                               r"expected \(4, 6\)"):
        loopback(config(), tamper=wrong_shape)


def test_client_app_with_unknown_device_profile_is_refused():
    bad = [{**DEVICES[0], "profile": "hololens_9"}]
    with pytest.raises(ConfigError, match=r"devices\[0\]\.profile.*hololens_9"):
        make_client_app(config=ExperimentConfig.from_dict({"name": "t", "devices": bad}), devices="synthetic")
    with pytest.raises(ConfigError, match="unknown device kind"):
        make_client_app(config=config(), devices="holograms")


def test_semi_and_gossip_paradigms_have_no_flower_equivalent():
    for paradigm in ("semi", "decentralized"):
        with pytest.raises(ConfigError, match="no Flower equivalent"):
            XrfedStrategy("fedavg", num_rounds=1, rounds=RoundsConfig(paradigm=paradigm))


def test_unreachable_superlink_is_named(tmp_path):
    port = free_port()  # bound, then released: nothing listens there
    with pytest.raises(FlowerError, match=rf"cannot reach the SuperLink at '127.0.0.1:{port}'"):
        check_superlink(f"127.0.0.1:{port}")
    fed = LocalFederation(["q3"], tmp_path)
    fed.fleet_address = f"127.0.0.1:{port}"
    with pytest.raises(FlowerError, match="cannot reach the SuperLink"):
        fed.start_node("q3")
    with pytest.raises(FlowerError, match="expected host:port"):
        check_superlink("localhost")


def test_deployment_engine_runs_rounds_and_survives_a_supernode_killed_mid_round(tmp_path):
    # Prepare: a real SuperLink and three SuperNodes (local processes); every device takes part in every round
    exp = tmp_path / "exp.yaml"
    exp.write_text(config(rounds={"rounds": 2, "local_steps": 3}).to_yaml())
    out = tmp_path / "records.json"
    killed_at: list[float] = []
    with LocalFederation([d["id"] for d in DEVICES], tmp_path / "fed") as fed:
        def kill_rb_when_it_trains():
            deadline = time.monotonic() + 240
            while "Receiving: train message" not in fed.log_text("supernode-rb.log"):
                if time.monotonic() > deadline:
                    return
                time.sleep(0.05)
            fed.kill_node("rb")  # its ClientApp is still starting: the reply never comes
            killed_at.append(time.monotonic())

        killer = threading.Thread(target=kill_rb_when_it_trains, daemon=True)
        killer.start()
        # Execute
        fed.run("examples/flower_app", {"config": str(exp), "devices": "synthetic", "out": str(out),
                                        "node-wait-s": 60.0, "round-timeout-s": 60.0}, timeout_s=400)
        killer.join(timeout=5)
        assert fed.superlink is not None
        pids = [p.pid for p in fed.nodes.values()] + [fed.superlink.pid]

    # Assert: rb dropped out of round 0, which completed with the other two; the run went on without it
    assert killed_at
    rounds = json.loads(out.read_text())["rounds"]
    assert [r["round"] for r in rounds] == [0, 1]
    assert rounds[0]["devices"]["rb"]["status"] == "dropout"
    for r in rounds:
        assert r["devices"]["q3"]["status"] == r["devices"]["avp"]["status"] == "participant"
        assert r["links"]["uplink"]["messages"] == 2
        assert 0.0 <= r["mean_balanced_accuracy"] <= 1.0
    # and nothing it started is left running
    import os

    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
