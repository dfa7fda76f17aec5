"""The membership-inference audit on real outcomes: a deliberately overfit federation leaks, DP removes the leak.

Two synthetic devices (federation.synthetic) each hold 64 training samples of a hard six-task problem (every
input mixes the class means of six tasks, so a sample's labels are far from determined by it) and train 300 local
steps per round at learning rate 0.2 on a 128-unit model: they memorise their training draws. Members are a
device's training draw, non-members a fresh draw of the same distribution (its "test" split), so any difference
the audit sees is membership. The audited model is the global model each device receives (centralized FedAvg);
the reference is the model before the first round (frozen base, initial heads), which saw no data.

Bounds, from seeds 0-9 of this experiment (the test runs seed 0): without DP the mean calibrated AUC over the
two devices was 0.84-0.92 (seed 0: 0.89), so ">= 0.8" holds with margin. With central DP (clip 0.1, noise
multiplier 1) the updates are clipped far below their norm and drowned in noise: the mean was 0.47-0.57 (seed 0:
0.53). Under no leakage the AUC of 64 vs 64 i.i.d. scores has a standard deviation of about 0.05 per device,
0.036 for the mean of two, so "within 0.1 of 0.5" is nearly 3 standard deviations wide.
"""

from __future__ import annotations

import json

import pytest

from federation.config import ExperimentConfig
from federation.runner import MIA_REFERENCE_FILE, ExperimentRunner
from federation.synthetic import SyntheticClient

TASKS = ["object_recognition", "gesture_recognition", "scene_classification", "speech_command",
         "activity_recognition", "intent_prediction"]
DEVICES = ("o1", "o2")
#: the overfitting recipe: few samples, a wide model on a wide input, a high learning rate (and many local steps)
CLIENT = {"tasks": TASKS, "samples": 64, "lr": 0.2, "in_dim": 32, "hidden": 128, "rank": 4}


def _config(dp: bool, seed: int = 0) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "name": "mia-dp" if dp else "mia", "seed": seed, "phases": 1, "aggregator": {"name": "fedavg"},
        "devices": [{"id": d, "profile": "meta_quest_3", "tasks": TASKS} for d in DEVICES],
        "dp": {"enabled": True, "mode": "central", "clip_norm": 0.1, "noise_multiplier": 1.0} if dp else {},
        "rounds": {"paradigm": "centralized", "rounds": 3, "local_steps": 300}})


def _factories(seed: int = 0):
    return {d: (lambda d=d, i=i: SyntheticClient(d, "meta_quest_3", seed=seed * 10 + i, **CLIENT))
            for i, d in enumerate(DEVICES)}


def _run(tmp_path, dp: bool):
    return ExperimentRunner(_config(dp), tmp_path / "run", client_factories=_factories(), progress=False).run()


def test_an_overfit_federation_leaks_membership_through_the_global_model(tmp_path):
    summary = _run(tmp_path, dp=False)

    assert summary["mean_mia_auc"] >= 0.8  # seed 0: 0.89
    for d in DEVICES:
        dev = summary["devices"][d]
        assert dev["mia_auc"] >= 0.75, d  # seed 0: 0.88, 0.90
        assert dev["mia_tpr_at_fpr_0.1"] >= 0.3, d  # 0.1 would be chance
        assert (dev["mia_members"], dev["mia_nonmembers"]) == (64, 64)
    # the raw loss threshold and the device's own model see the leak too
    assert summary["mean_mia_auc_uncalibrated"] >= 0.8
    assert summary["mean_mia_auc_device_model"] >= 0.8
    report = (tmp_path / "run" / "report.md").read_text()
    assert "the attacked model (target) is the global model" in report and "MIA AUC raw" in report


def test_central_dp_brings_the_audit_to_chance(tmp_path):
    summary = _run(tmp_path, dp=True)

    assert summary["mean_mia_auc"] == pytest.approx(0.5, abs=0.1)  # seed 0: 0.53
    assert summary["mean_mia_auc_uncalibrated"] <= 0.6  # seed 0: 0.45
    assert summary["mean_mia_tpr_at_fpr_0.1"] <= 0.25  # seed 0: 0.10


def test_reference_losses_are_the_untrained_model_and_survive_a_resume(tmp_path):
    # Prepare: a run interrupted after its first round
    cfg, rd = _config(dp=False), tmp_path / "run"
    assert ExperimentRunner(cfg, rd, client_factories=_factories(), progress=False).run(stop_after=1) is None
    written = (rd / MIA_REFERENCE_FILE).read_text()

    # Execute
    summary = ExperimentRunner(cfg, rd, client_factories=_factories(), progress=False).run(resume=True)

    # Assert: the reference is o1's untrained model (o1 is the first holder, so the initial sync keeps its
    # heads), it was not rewritten by the resumed run, and the audit used it
    fresh = _factories()["o1"]()
    ref = json.loads(written)
    assert ref["phase"] == 0
    assert ref["devices"]["o1"]["members"] == pytest.approx(fresh.evaluate_base("train", 0).per_sample_loss)
    assert ref["devices"]["o1"]["nonmembers"] == pytest.approx(fresh.evaluate_base("test", 0).per_sample_loss)
    assert (rd / MIA_REFERENCE_FILE).read_text() == written
    assert summary["mean_mia_auc"] >= 0.8 and "model before the first round" in summary["mia_audit"]
