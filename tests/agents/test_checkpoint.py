from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agents.batching import items_to_batch
from agents.checkpoint import load_checkpoint, save_checkpoint
from agents.config import make_config
from agents.errors import CheckpointMismatchError
from agents.model import M3TModel

from .conftest import make_item


def test_checkpoint_round_trip_and_mismatches(tmp_path):
    torch.manual_seed(0)
    m = M3TModel(make_config("tiny")).eval()
    save_checkpoint(m, tmp_path / "ck", facts={"steps": 0}, card="# card\n")
    back = load_checkpoint(tmp_path / "ck")
    batch = items_to_batch([make_item(np.random.default_rng(0))])
    with torch.no_grad():
        assert torch.equal(m(batch)["scene_classification"], back.eval()(batch)["scene_classification"])
    # asking for another config
    with pytest.raises(CheckpointMismatchError, match="d_model: checkpoint 64 vs expected 128"):
        load_checkpoint(tmp_path / "ck", expect=make_config("small"))
    # a config.json that does not describe the weights
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    cfg["n_layers"] = 3
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointMismatchError, match=r"missing \['blocks.2"):
        load_checkpoint(tmp_path / "ck")
    with pytest.raises(CheckpointMismatchError, match="expected config.json and model.safetensors"):
        load_checkpoint(tmp_path / "nothing")
