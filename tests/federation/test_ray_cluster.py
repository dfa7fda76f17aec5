"""The Ray executor on a real multi-node Ray cluster on this machine.

``ray.cluster_utils.Cluster`` starts a head node and a worker node (2 CPUs each, loopback; the head also offers the
custom resource ``xr_head``), once for the module: a node costs seconds to start. On it: device actors spread over
both nodes or pinned by a custom resource, the same learning figures as in-process, a device actor killed mid-call
(lost, then revived), a driver (``xrfed run``) killed mid-run and resumed, and the one-line refusals of bad input
(unreachable address, a placement the cluster cannot hold, a Ray version mismatch) that leave the run directory
as it was. The cluster is shut down at the end.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from federation.client import (
    DeviceLost,
    RayExecutor,
    _default_share,
    _placement_problem,
    make_executor,
    version_mismatch,
)
from federation.errors import ExecutorError
from federation.synthetic import SyntheticClient
from tests.conftest import TINY
from tests.federation.test_executor import closed_loopback_port, run_rounds

HEAD_RESOURCE = "xr_head"
#: figures that measure the host's wall clock, not the learning
WALL_CLOCK = {"train_wall_s", "inference_latency_ms", "wall_time_s", "mean_round_latency_wall_s"}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes on this machine (head: 2 CPUs and ``xr_head``; worker: 2 CPUs), this process connected."""
    try:
        import ray
        from ray.cluster_utils import Cluster
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("Ray is not installed; scripts/setup.sh installs it")
        pytest.skip("Ray is not installed")
    ray.shutdown()  # one Ray per driver process: the session's local node makes way for the cluster (a later
    # executor without an address starts a local Ray again by itself)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "resources": {HEAD_RESOURCE: 8},
                                                      "include_dashboard": False})
    try:
        c.add_node(num_cpus=2)
        c.wait_for_nodes()
        ray.init(address=c.address, log_to_driver=False)
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def node_ids(ray) -> tuple[str, str]:
    """(head node id, worker node id) of the live cluster."""
    alive = [n for n in ray.nodes() if n["Alive"]]
    head = [n["NodeID"] for n in alive if HEAD_RESOURCE in n["Resources"]]
    other = [n["NodeID"] for n in alive if HEAD_RESOURCE not in n["Resources"]]
    assert len(head) == 1 and len(other) == 1, alive
    return head[0], other[0]


def probe_factories(n: int = 3) -> dict:
    """Synthetic devices that can also say their process id, wait, and crash in their next local training.

    The class is local to this function so that Ray ships it by value (workers need not import this module)."""
    class Probe(SyntheticClient):
        def pid(self) -> int:
            return os.getpid()

        def pause(self, seconds: float) -> float:
            time.sleep(seconds)
            return seconds

        def arm_crash(self) -> None:
            self._crash = True

        def local_train(self, *args, **kwargs):
            marker = getattr(self, "crash_at", None)  # a file: crash in the second training while it exists
            self._trained = getattr(self, "_trained", 0) + 1
            if marker is not None and self._trained == 2 and marker.exists():
                marker.unlink()
                self._crash = True
            if getattr(self, "_crash", False):
                os._exit(1)  # the worker process dies mid-call, as an OOM kill or a segfault would
            return super().local_train(*args, **kwargs)

    return {f"d{i}": (lambda i=i: Probe(f"d{i}", "meta_quest_3", seed=i)) for i in range(n)}


@pytest.fixture(scope="module")
def spread(cluster):
    """Three device actors spread over both nodes (0.25 CPU each, an actor per device)."""
    ex = make_executor("ray", probe_factories(), num_cpus_per_device=0.25, devices_per_actor=1)
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def pinned(cluster):
    """Three device actors that need ``xr_head``: all on the head node (Ray on one node), an actor per device."""
    ex = make_executor("ray", probe_factories(), num_cpus_per_device=0.25, devices_per_actor=1,
                       resources={d: {HEAD_RESOURCE: 1} for d in probe_factories()})
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def grouped(cluster):
    """Four devices in two actors of two (d0 + d2, d1 + d3), 0.1 CPU per device (the head's 2 CPUs also hold
    ``pinned`` and part of ``spread``)."""
    ex = make_executor("ray", probe_factories(4), num_cpus_per_device=0.1, devices_per_actor=2)
    yield ex
    ex.close()


# -- placement and same figures --------------------------------------------------------------------------------------
def test_actors_spread_over_both_nodes_or_follow_a_custom_resource(cluster, spread, pinned):
    import ray

    head, worker = node_ids(ray)

    where_spread, where_pinned = spread.nodes(), pinned.nodes()  # asked inside each actor

    assert set(where_spread) == {"d0", "d1", "d2"} and set(where_spread.values()) == {head, worker}
    assert set(where_pinned.values()) == {head}


def test_groups_spread_over_both_nodes_and_custom_resources_keep_their_own_actors(cluster, grouped):
    import ray

    head, worker = node_ids(ray)
    pids = dict(zip(grouped.device_ids, grouped.map("pid", [(d, (), {}) for d in grouped.device_ids]), strict=True))
    # two devices need xr_head, two need nothing: an actor never mixes them, even with room for all four
    mixed = make_executor("ray", probe_factories(4), num_cpus_per_device=0.05, devices_per_actor=4,
                          resources={"d1": {HEAD_RESOURCE: 1}, "d3": {HEAD_RESOURCE: 1}})
    try:
        mixed_pids = mixed.map("pid", [(d, (), {}) for d in mixed.device_ids])
        mixed_nodes = mixed.nodes()
    finally:
        mixed.close()

    assert grouped.groups == (("d0", "d2"), ("d1", "d3"))
    assert pids["d0"] == pids["d2"] != pids["d1"] == pids["d3"]  # one process per group
    assert set(grouped.nodes().values()) == {head, worker}
    assert mixed_pids[0] == mixed_pids[2] != mixed_pids[1] == mixed_pids[3]
    assert mixed_nodes["d1"] == mixed_nodes["d3"] == head


def test_same_figures_in_process_on_one_ray_node_and_on_two(spread, pinned, grouped, one_torch_thread):
    local = run_rounds(make_executor("local", probe_factories()))
    local4 = run_rounds(make_executor("local", probe_factories(4)))

    one_node, two_nodes, in_groups = run_rounds(pinned), run_rounds(spread), run_rounds(grouped)

    assert one_node == local and two_nodes == local  # losses, accuracies, bytes, energy: every float equal
    assert in_groups == local4  # two devices per actor process, the same floats as one per process
    assert [rec["counts"] for rec in local4] == [{"participant": 4}] * 2
    assert [rec["counts"] for rec in local] == [{"participant": 3}] * 2  # not vacuous: all trained and sent
    assert all(d["bytes_sent"] > 0 and d["train_loss"] > 0 for rec in local for d in rec["devices"].values())
    assert local[0]["devices"]["d0"] != local[1]["devices"]["d0"]


def test_default_share_packs_node_by_node():
    two_single_cpu_nodes = {"a": {"CPU": 1.0}, "b": {"CPU": 1.0}}

    assert _default_share(two_single_cpu_nodes, 3) == 0.5  # 2/3 would fit the 2 CPUs but not one node each
    assert _default_share(two_single_cpu_nodes, 2) == 1.0
    assert _default_share({"a": {"CPU": 2.0}, "b": {"CPU": 0.5}}, 5) == 0.5
    assert _placement_problem({f"d{i}": {"CPU": 2 / 3} for i in range(3)}, two_single_cpu_nodes) is not None
    assert _placement_problem({f"d{i}": {"CPU": 0.5} for i in range(3)}, two_single_cpu_nodes) is None


# -- lost devices ----------------------------------------------------------------------------------------------------
def test_killed_device_actor_yields_device_lost_and_revive_rebuilds_it(spread):
    ids = spread.device_ids
    pids = dict(zip(ids, spread.map("pid", [(d, (), {}) for d in ids]), strict=True))
    calls: list[tuple[str, tuple[float], dict]] = [("d0", (30.0,), {}), ("d1", (0.0,), {}), ("d2", (0.0,), {})]
    results = spread.imap("pause", calls, tolerate_loss=True)
    first = sorted([next(results), next(results)])  # the quick calls finish while d0 is still in its call

    os.kill(pids["d0"], signal.SIGKILL)  # its worker process dies mid-call
    t0 = time.monotonic()
    last = next(results)

    assert first == [(1, 0.0), (2, 0.0)]
    assert last[0] == 0 and isinstance(last[1], DeviceLost) and last[1].device_id == "d0"
    assert "worker process died" in last[1].reason and time.monotonic() - t0 < 20
    assert list(spread.lost) == ["d0"]
    with pytest.raises(ExecutorError, match=r"^Ray device 'd0' was lost \(its worker process died"):
        spread.map("pid", [("d0", (), {})])
    assert spread.map("pid", [("d0", (), {}), ("d1", (), {})], tolerate_loss=True)[1] == pids["d1"]

    assert spread.revive() == ["d0"]
    assert spread.lost == {} and spread.revive() == []
    new_pid = spread.call("d0", "pid")
    assert new_pid != pids["d0"] and spread.call("d0", "pause", 0.0) == 0.0


def test_killed_group_actor_loses_all_its_devices_and_revive_rebuilds_the_group(grouped):
    ids = grouped.device_ids
    pids = dict(zip(ids, grouped.map("pid", [(d, (), {}) for d in ids]), strict=True))
    # d0 and d2 share an actor: d2's call waits behind d0's; d1 and d3 run in the other actor
    calls: list[tuple[str, tuple[float], dict]] = [("d0", (30.0,), {}), ("d1", (0.0,), {}), ("d3", (0.0,), {}),
                                                   ("d2", (0.0,), {})]
    results = grouped.imap("pause", calls, tolerate_loss=True)
    first = sorted([next(results), next(results)])

    os.kill(pids["d0"], signal.SIGKILL)  # the group's process dies mid-call
    t0 = time.monotonic()
    rest = sorted([next(results), next(results)], key=lambda r: r[0])

    assert first == [(1, 0.0), (2, 0.0)]
    assert [i for i, _ in rest] == [0, 3] and all(isinstance(r, DeviceLost) for _, r in rest)
    assert [r.device_id for _, r in rest] == ["d0", "d2"] and time.monotonic() - t0 < 20
    assert sorted(grouped.lost) == ["d0", "d2"]
    assert grouped.map("pid", [("d2", (), {}), ("d3", (), {})], tolerate_loss=True)[1] == pids["d3"]

    assert grouped.revive() == ["d0", "d2"]
    assert grouped.lost == {}
    new = grouped.map("pid", [(d, (), {}) for d in ids])
    assert new[0] == new[2] != pids["d0"] and new[1] == new[3] == pids["d1"]


def test_a_device_error_is_not_a_lost_device(spread):
    with pytest.raises(ExecutorError, match=r"^Ray call 'pause' failed: TypeError: "):
        spread.map("pause", [("d1", ("soon",), {})], tolerate_loss=True)
    assert spread.lost == {}


def test_round_engine_counts_a_dead_actor_as_a_dropout_and_revives_it(pinned):
    from federation import rounds

    if "DeviceLost" not in Path(rounds.__file__).read_text():
        pytest.skip("the round engine does not count lost devices yet (issue 15, engine part)")
    from federation.config import RoundsConfig
    from federation.rounds import RoundEngine
    from federation.strategies import make_strategy

    eng = RoundEngine(pinned, make_strategy("fedavg"), RoundsConfig(local_steps=3), seed=0)
    eng.initial_sync()
    pinned.call("d0", "arm_crash")

    crashed = eng.run_round(0).to_json()
    after = eng.run_round(1).to_json()

    assert crashed["devices"]["d0"]["status"] == "dropout"
    assert [crashed["devices"][d]["status"] for d in ("d1", "d2")] == ["participant"] * 2
    assert after["counts"] == {"participant": 3}, pinned.lost  # revived at the start of round 1, with the global model
    assert pinned.lost == {}


# -- version mismatch: Ray's own report, translated ---------------------------------------------------------------------
def test_version_mismatch_report_becomes_one_line(cluster):
    from ray._private.utils import check_version_info

    with pytest.raises(RuntimeError) as exc:  # what ray.init raises when the cluster was started by another Ray
        check_version_info({"ray_version": "2.60.0", "python_version": "3.12.1"}, "node 10.0.0.7")

    line = version_mismatch(str(exc.value), "10.0.0.7:6379")

    import ray

    here = ".".join(map(str, sys.version_info[:3]))
    assert line == (f"Ray version mismatch: the Ray cluster at '10.0.0.7:6379' runs Ray 2.60.0 on Python 3.12.1, "
                    f"this driver Ray {ray.__version__} on Python {here}; install the same Ray and Python on every "
                    "machine")
    assert version_mismatch("Failed to connect to GCS", None) is None


# -- xrfed run on the cluster: bad input, a driver killed and resumed -----------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny scenario and experiment (2 devices, 3 rounds) and a cache holding its recording and foundation."""
    root = tmp_path_factory.mktemp("raycli")
    scenario = root / "tiny.yaml"
    scenario.write_text(yaml.safe_dump(TINY))
    raw = {"name": "tiny-ray", "scenario": str(scenario), "model_preset": "tiny", "episode_steps": 40, "phases": 2,
           "eval": {"test_fraction": 0.25, "guard_s": 1.0, "local_baseline": False},
           "foundation": {"steps": 6, "record_steps": 20, "batch_size": 8, "guard_s": 0.5},
           "devices": [{"id": "u1", "profile": "apple_vision_pro", "tasks": ["object_recognition"]},
                       {"id": "u2", "profile": "ray_ban_meta", "tasks": ["object_recognition"], "rank": 2}],
           "aggregator": {"name": "exact_lora"},
           "rounds": {"paradigm": "centralized", "rounds": 4, "local_steps": 2},
           "ray": {"num_cpus_per_device": 0.5}, "seed": 5}
    config = root / "exp.yaml"
    config.write_text(yaml.safe_dump(raw))
    old = os.environ.get("XRFED_CACHE")
    os.environ["XRFED_CACHE"] = str(root / "cache")
    try:
        yield {"root": root, "config": config, "raw": raw}
    finally:
        if old is None:
            os.environ.pop("XRFED_CACHE", None)
        else:
            os.environ["XRFED_CACHE"] = old


@pytest.fixture(scope="module")
def reference(tiny):
    """The experiment run uninterrupted, in this process, with the local executor (builds the cache)."""
    from federation.config import load_config
    from federation.runner import run_experiment

    out = tiny["root"] / "reference"
    run_experiment(load_config(tiny["config"]), out, progress=False)
    return out


def learning(run: Path) -> list:
    """A run's learning figures: every metrics line and the summary, wall-clock figures removed."""
    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k not in WALL_CLOCK}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [strip(rows), strip(json.loads((run / "summary.json").read_text()))]


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def xrfed(*args: str, **kw) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("xrfed")  # the console script next to this interpreter
    return subprocess.Popen([str(exe), *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONHASHSEED": "random"}, **kw)


def write_config(tiny, name: str, **ray) -> Path:
    path = tiny["root"] / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**tiny["raw"], "ray": {**tiny["raw"]["ray"], **ray}}))
    return path


@pytest.mark.slow
def test_bad_ray_input_exits_2_with_one_line_and_keeps_the_run_directory(cluster, tiny, reference, capsys):
    from bridge.cli import main

    before = snapshot(reference)
    port = closed_loopback_port()
    too_big = write_config(tiny, "too-big", num_cpus_per_device=3.0)
    no_quest = write_config(tiny, "no-quest", resources={"ray_ban_meta": {"quest": 1}})
    cases = [
        ([str(tiny["config"]), "--ray-address", f"127.0.0.1:{port}"],
         rf"cannot reach a Ray cluster at '127\.0\.0\.1:{port}': Connection refused"),
        ([str(too_big), "--ray-address", cluster.address],
         r"2 device actors x 3 CPUs do not fit the [0-9.]+ CPUs free in the Ray cluster \(.* on 2 nodes\)"),
        ([str(no_quest), "--ray-address", cluster.address],
         r"device 'u2' asks for Ray resource 'quest' x 1, which no node of the Ray cluster offers"),
    ]
    for args, message in cases:
        capsys.readouterr()

        status = main(["run", *args, "--out", str(reference), "--resume", "--no-progress"])

        err = capsys.readouterr().err
        assert status == 2, err
        assert err.count("\n") == 1 and err.startswith("xrfed: error: "), err
        assert re.search(message, err), err
        assert snapshot(reference) == before


@pytest.mark.slow
def test_ray_version_mismatch_exits_2_with_one_line(cluster, tiny, reference):
    """The cluster's recorded version (what Ray compares a connecting driver against) is rewritten, as if another
    Ray had started it; a fresh driver is refused with one line and the run directory is kept."""
    from ray._common.usage import usage_constants
    from ray._private import ray_constants
    from ray.experimental import internal_kv

    key, ns = usage_constants.CLUSTER_METADATA_KEY, ray_constants.KV_NAMESPACE_CLUSTER
    saved = internal_kv._internal_kv_get(key, namespace=ns)
    before = snapshot(reference)
    internal_kv._internal_kv_put(key, json.dumps({**json.loads(saved), "ray_version": "2.60.0"}).encode(),
                                 overwrite=True, namespace=ns)
    try:
        proc = xrfed("run", str(tiny["config"]), "--out", str(reference), "--resume", "--no-progress",
                     "--ray-address", cluster.address)
        _, err = proc.communicate(timeout=300)
    finally:
        internal_kv._internal_kv_put(key, saved, overwrite=True, namespace=ns)

    assert proc.returncode == 2, err[-2000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"xrfed: error: Ray version mismatch: the Ray cluster at '{cluster.address}' runs Ray "
                           "2.60.0 on Python "), err[-2000:]
    assert snapshot(reference) == before


@pytest.mark.slow
def test_driver_killed_after_a_checkpoint_resumes_on_the_cluster_to_the_same_figures(cluster, tiny, reference):
    run = tiny["root"] / "killed"
    manifest = run / "checkpoint" / "manifest.json"
    driver = xrfed("run", str(tiny["config"]), "--out", str(run), "--no-progress", "--ray-address", cluster.address)
    try:
        deadline = time.monotonic() + 240
        while not manifest.exists() and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert manifest.exists(), driver.communicate()[1][-2000:] if driver.poll() is not None else "no checkpoint"
        driver.send_signal(signal.SIGKILL)  # the driver dies after its first checkpoint; its actors die with it
        driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
    done = len((run / "metrics.jsonl").read_text().splitlines())
    assert 1 <= done < 4 and not (run / "summary.json").exists()  # really interrupted mid-run

    resumed = xrfed("run", str(tiny["config"]), "--out", str(run), "--resume", "--no-progress", "--ray-address",
                    cluster.address)
    _, err = resumed.communicate(timeout=300)

    assert resumed.returncode == 0, err[-3000:]
    assert learning(run) == learning(reference)  # the same figures as the uninterrupted in-process run
    assert yaml.safe_load((run / "config.yaml").read_text())["rounds"]["executor"] == "ray"


def test_ray_executor_refuses_resources_on_unknown_devices(cluster):
    with pytest.raises(ExecutorError, match=r"^resources name devices that do not exist: \['d9'\]$"):
        RayExecutor(probe_factories(1), resources={"d9": {HEAD_RESOURCE: 1}})


@pytest.mark.slow
def test_xrfed_run_survives_a_device_actor_that_dies_mid_round(cluster, tmp_path):
    """Through the runner: a device whose worker dies in round 1's training is a dropout of that round, is rebuilt
    before the checkpoint, and trains again in round 2; the run completes."""
    from federation.config import DeviceConfig, ExperimentConfig, RayConfig, RoundsConfig
    from federation.runner import ExperimentRunner, read_metrics

    marker = tmp_path / "crash-d1"
    devices = [DeviceConfig(f"d{i}", "meta_quest_3", ["object_recognition"]) for i in range(3)]
    cfg = ExperimentConfig(name="lossy", devices=devices, phases=1,
                           rounds=RoundsConfig(rounds=3, local_steps=2, executor="ray"),
                           ray=RayConfig(address=cluster.address, num_cpus_per_device=0.25, devices_per_actor=1))
    probes = probe_factories()

    def crashes_once():  # d1's first actor dies in its second training; the rebuilt one finds no marker
        client = probes["d1"]()
        client.crash_at = marker
        return client

    marker.write_text("1")
    summary = ExperimentRunner(cfg, tmp_path / "run", client_factories={**probes, "d1": crashes_once},
                               progress=False).run()

    rows = read_metrics(tmp_path / "run")
    assert [r["devices"]["d1"]["status"] for r in rows] == ["participant", "dropout", "participant"]
    assert all(r["devices"][d]["status"] == "participant" for r in rows for d in ("d0", "d2"))
    assert summary is not None and summary["rounds"] == 3 and not marker.exists()
