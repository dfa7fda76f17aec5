"""The foundation checkpoint's recipe and model card: several scenes, per-task claims against the majority class."""

from __future__ import annotations

import math

import pytest

from agents.pretrain import PretrainConfig, _block_bootstrap_margin, checkpoint_key, pretrain


def test_margin_over_the_majority_class_with_a_block_bootstrap_interval():
    # 100 steps, labels in blocks of 10 alternating 0 / 1; the majority answer is 0
    labels = [(i // 10) % 2 for i in range(100)]
    perfect = [(i, y, y) for i, y in enumerate(labels)]
    m, lo, hi = _block_bootstrap_margin(perfect, guess=0, block=10, resamples=200)
    assert m == pytest.approx(0.5) and lo > 0  # balanced 1.0 vs 0.5
    constant = [(i, y, 0) for i, y in enumerate(labels)]
    m, lo, hi = _block_bootstrap_margin(constant, guess=0, block=10, resamples=200)
    assert m == 0.0 and lo == 0.0 == hi  # the majority answer itself claims nothing
    assert all(math.isnan(v) for v in _block_bootstrap_margin([], guess=0))


def test_recipe_names_its_scenes_and_the_key_follows_their_content(tmp_path, tiny_raw, write_scenario):
    a = write_scenario(tiny_raw, "a.yaml")
    tiny_raw["objects"][0]["pos_m"] = [3.5, 2.5]
    b = write_scenario(tiny_raw, "b.yaml")
    ka = checkpoint_key(PretrainConfig(preset="tiny", scenarios=(str(a),)))
    kb = checkpoint_key(PretrainConfig(preset="tiny", scenarios=(str(b),)))
    kab = checkpoint_key(PretrainConfig(preset="tiny", scenarios=(str(a), str(b))))
    assert len({ka, kb, kab}) == 3 and kab.startswith("tiny+tiny-tiny-")
    assert PretrainConfig(scenarios="default").scenarios == ("default",)


@pytest.mark.slow
def test_pretrain_on_two_recordings_writes_a_card_with_claims(tmp_path, tiny_raw, write_scenario):
    from bridge.recording import record

    dirs = []
    for i in range(2):
        tiny_raw["name"] = f"tiny{i}"
        record(str(write_scenario(tiny_raw, f"t{i}.yaml")), out=tmp_path / f"d{i}", steps=40, seed=i,
               progress=False, audio=False, guard_s=0.5)
        dirs.append(tmp_path / f"d{i}")
    cfg = PretrainConfig(preset="tiny", steps=4, batch_size=8, record_steps=40, guard_s=0.5)
    facts = pretrain(dirs, tmp_path / "ckpt", cfg)
    card = (tmp_path / "ckpt" / "MODEL_CARD.md").read_text()
    assert set(facts["heldout_per_dataset"]) == {"d0", "d1"}
    assert set(facts["heldout_claims"]) == set(facts["model_config"]["tasks"])
    assert facts["claimed_tasks"] == [t for t, c in facts["heldout_claims"].items() if c["claimed"]]
    assert "## Claimed tasks" in card and "| d0 |" in card and "majority balanced" in card
