from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from agents.batching import items_to_batch
from agents.config import ModelConfig, make_config
from agents.errors import ConfigError, EmptyFrameError, UnknownTaskError
from agents.model import M3TModel
from bridge.tasks import MODALITIES, TASKS

from .conftest import make_item


@pytest.fixture(scope="module")
def model() -> M3TModel:
    torch.manual_seed(0)
    return M3TModel(make_config("tiny")).eval()


def test_every_modality_subset_gives_logits_and_masks(model):
    # Prepare: one item per subset size is enough to cover all 127 subsets cheaply in a loop
    rng = np.random.default_rng(0)
    for k in range(1, len(MODALITIES) + 1):
        for subset in itertools.combinations(MODALITIES, k):
            batch = items_to_batch([make_item(rng, modalities=subset)])
            # Execute
            with torch.no_grad():
                out = model(batch)
            # Assert
            assert {t: tuple(v.shape) for t, v in out.items()} == {t: (1, TASKS[t].num_classes) for t in TASKS}
            assert set(model.last_present) == set(subset)
            assert all(bool(v.all()) for v in model.last_present.values())


def test_device_without_audio_never_builds_audio_tokens(model):
    rng = np.random.default_rng(1)
    calls = []
    hook = model.encoders["audio"].register_forward_hook(lambda *a: calls.append(1))
    try:
        batch = items_to_batch([make_item(rng, modalities=("rgb", "imu"))])
        toks, masks, names = model.tokenize(batch)
    finally:
        hook.remove()
    assert calls == []
    assert names == ["rgb", "imu"]
    n_patches = (32 // 8) ** 2
    assert [t.shape[1] for t in toks] == [1 + n_patches, 1]


def test_absent_modality_is_masked_not_read(model):
    # Prepare: sample 0 has audio, sample 1 has it marked absent (its tensor is zeros from collation)
    rng = np.random.default_rng(2)
    a = make_item(rng, modalities=("rgb", "audio"))
    b = make_item(rng, modalities=("rgb",))
    batch = items_to_batch([a, b])
    with torch.no_grad():
        before = model(batch)["scene_classification"][1].clone()
        batch["audio"][1] = torch.randn_like(batch["audio"][1])  # garbage where the mask says absent
        after = model(batch)["scene_classification"][1]
    assert torch.allclose(before, after, atol=1e-6)


def test_task_prediction_does_not_depend_on_other_tasks_asked(model):
    batch = items_to_batch([make_item(np.random.default_rng(3))])
    with torch.no_grad():
        alone = model(batch, ["speech_command"])["speech_command"]
        together = model(batch)["speech_command"]
    assert torch.allclose(alone, together, atol=1e-5)


def test_empty_batch_and_unknown_task_are_clear_errors(model):
    rng = np.random.default_rng(4)
    item = make_item(rng, modalities=("rgb",))
    item["present"]["rgb"] = torch.tensor(False)
    del item["rgb"]
    with pytest.raises(EmptyFrameError, match="none of the model's modalities"):
        model(items_to_batch([item]))
    with pytest.raises(UnknownTaskError, match="no head for task 'juggling'"):
        model(items_to_batch([make_item(rng)]), ["juggling"])


def test_images_and_audio_rates_are_normalised(model):
    # a 96x128 image and 48 kHz, 6-channel audio reach the model like the preset's own sizes
    rng = np.random.default_rng(5)
    it = make_item(rng, modalities=("rgb", "audio"), mics=6)
    it["rgb"] = torch.rand(3, 96, 128)
    it["audio"] = torch.randn(6, 4800) * 0.05
    it["audio_hz"] = 48000
    with torch.no_grad():
        out = model(items_to_batch([it]))
    assert out["speech_command"].shape == (1, 11)


def test_config_validation_and_round_trip():
    cfg = make_config("tiny", num_experts=4)
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ConfigError, match="'d_model': must be divisible by n_heads=4"):
        make_config("tiny", d_model=66)
    with pytest.raises(ConfigError, match="unknown preset"):
        make_config("huge")
    with pytest.raises(ConfigError, match="unknown task"):
        make_config("tiny", tasks=("juggling",))


def test_moe_reports_experts_activated_per_task():
    torch.manual_seed(0)
    m = M3TModel(make_config("tiny", num_experts=4, top_k=1)).eval()
    batch = items_to_batch([make_item(np.random.default_rng(i)) for i in range(4)])
    with torch.no_grad():
        m(batch, ["speech_command", "scene_classification"])
    used = m.experts_activated(["speech_command", "scene_classification"])
    assert set(used) == {"speech_command", "scene_classification"}
    assert all(1.0 <= v <= 4.0 for v in used.values())
