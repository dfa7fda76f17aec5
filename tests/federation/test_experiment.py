"""End to end on the real agents: a tiny recorded scene, a tiny foundation checkpoint, the runner.

Proves the reproducibility and honest-evaluation rules on the real path (DeviceAgent, peft LoRA, recorded HDF5):
held-out steps are separated in time from training steps by the guard, and the same config and seed give the
same learning figures in fresh processes, with the local and the Ray executor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY

pytestmark = pytest.mark.slow

#: figures that measure the host's wall clock, not the learning: the only ones allowed to differ between runs
WALL_CLOCK = {"train_wall_s", "inference_latency_ms", "wall_time_s"}


def _config(scenario: Path, executor: str = "local") -> dict:
    return {
        "name": "tiny-exp", "scenario": str(scenario), "model_preset": "tiny", "episode_steps": 40, "phases": 2,
        "eval": {"test_fraction": 0.25, "guard_s": 1.0, "local_baseline": False},
        "foundation": {"steps": 6, "record_steps": 20, "batch_size": 8, "guard_s": 0.5},
        "devices": [{"id": "u1", "profile": "apple_vision_pro", "tasks": ["object_recognition", "speech_command"]},
                    {"id": "u2", "profile": "ray_ban_meta", "tasks": ["object_recognition", "speech_command"],
                     "rank": 2}],
        "aggregator": {"name": "exact_lora"},
        "rounds": {"paradigm": "centralized", "rounds": 2, "local_steps": 2, "executor": executor},
        "seed": 3,
    }


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """A tiny scenario file and a cache holding its recording and foundation checkpoint (built once here)."""
    root = tmp_path_factory.mktemp("exp")
    scenario = root / "tiny.yaml"
    scenario.write_text(yaml.safe_dump(TINY))
    cache = root / "cache"
    old = os.environ.get("XRFED_CACHE")
    os.environ["XRFED_CACHE"] = str(cache)
    try:
        from federation.agent_client import build_client_factories
        from federation.config import ExperimentConfig

        cfg = ExperimentConfig.from_dict(_config(scenario))
        factories = build_client_factories(cfg)
        yield {"root": root, "scenario": scenario, "cache": cache, "cfg": cfg, "factories": factories}
    finally:
        if old is None:
            os.environ.pop("XRFED_CACHE", None)
        else:
            os.environ["XRFED_CACHE"] = old


def test_held_out_steps_are_separated_in_time_by_the_guard(experiment):
    from federation.agent_client import guard_steps

    cfg = experiment["cfg"]
    guard = guard_steps(cfg)
    assert guard == 10  # 1.0 s at the scenario's 10 Hz
    for make in experiment["factories"].values():
        agent = make()
        assert agent.num_phases == 2
        for p, (train, test) in enumerate(agent._phases):
            tr = [int(i["step"]) for i in train]
            te = [int(i["step"]) for i in test]
            assert tr and te
            assert min(te) - max(tr) > guard, (p, max(tr), min(te))
            assert len(te) == 10  # 25 % of the phase's 40 steps
            assert p * 40 <= min(tr) and max(te) < (p + 1) * 40


def _run_in_fresh_process(experiment, out: Path, executor: str) -> list[dict]:
    cfg_path = out.with_suffix(".yaml")
    cfg_path.write_text(yaml.safe_dump(_config(experiment["scenario"], executor)))
    env = {**os.environ, "XRFED_CACHE": str(experiment["cache"]), "PYTHONHASHSEED": "random"}
    code = ("import sys; from federation.config import load_config; from federation.runner import run_experiment; "
            "run_experiment(load_config(sys.argv[1]), sys.argv[2], progress=False)")
    proc = subprocess.run([sys.executable, "-c", code, str(cfg_path), str(out)], env=env, capture_output=True,
                          text=True, timeout=600, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    return [_learning(rows), _learning(summary), json.loads((out / "baselines.json").read_text())]


def _learning(obj):
    """``obj`` without the wall-clock figures."""
    if isinstance(obj, dict):
        return {k: _learning(v) for k, v in obj.items() if k not in WALL_CLOCK}
    if isinstance(obj, list):
        return [_learning(v) for v in obj]
    return obj


def test_same_seed_same_numbers_in_fresh_processes_and_across_executors(experiment, tmp_path):
    a = _run_in_fresh_process(experiment, tmp_path / "a", "local")
    b = _run_in_fresh_process(experiment, tmp_path / "b", "local")
    assert a == b
    rows = a[0]
    assert rows[-1]["devices"]["u1"]["balanced_accuracy"] is not None and rows[-1]["links"]["uplink"]["bytes"] > 0
    pytest.importorskip("ray")
    c = _run_in_fresh_process(experiment, tmp_path / "c", "ray")
    assert c == a
