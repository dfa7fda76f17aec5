"""The model learns: on synthetic data (label only in its modality) and on a small recorded embedded scene."""

from __future__ import annotations

import collections
import random

import numpy as np
import pytest
import torch

from agents.batching import items_to_batch
from agents.config import make_config
from agents.model import M3TModel
from agents.train import evaluate_items, load_items, train_steps

from .conftest import make_item


def test_learns_speech_from_audio_only_on_synthetic_tones():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    tasks = ("speech_command",)
    train = [make_item(rng, modalities=("audio", "rgb")) for _ in range(96)]
    test = [make_item(rng, modalities=("audio",)) for _ in range(48)]
    model = M3TModel(make_config("tiny"))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    r = random.Random(0)
    train_steps(model, lambda: items_to_batch(r.sample(train, 16), tasks), 60, tasks, opt)
    acc = evaluate_items(model, test, tasks).accuracy["speech_command"]
    assert acc > 0.8  # 3 classes: chance 1/3


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    from bridge.recording import record

    out = tmp_path_factory.mktemp("rec")
    # 160 steps per episode: the last 32 held out, the default 5 s guard (50 steps) before them, 78 to train on
    record("default", out=out, steps=160, seed=3, progress=False, audio=False)
    return out


@pytest.mark.slow
def test_learns_scene_type_on_recorded_embedded_data(recorded):
    torch.manual_seed(0)
    cfg = make_config("tiny")
    tasks = ("scene_classification",)
    train = load_items(recorded, cfg, split="train", tasks=list(tasks))
    test = load_items(recorded, cfg, split="test", tasks=list(tasks))
    model = M3TModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    r = random.Random(0)
    train_steps(model, lambda: items_to_batch(r.sample(train, 32), tasks), 80, tasks, opt)
    acc = evaluate_items(model, test, tasks).accuracy["scene_classification"]
    ys = [int(i["labels"]["scene_classification"]) for i in test]
    majority = collections.Counter(ys).most_common(1)[0][1] / len(ys)
    assert len(set(ys)) >= 2
    assert acc > max(majority + 0.15, 0.6)
