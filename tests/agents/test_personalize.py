from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from agents.batching import items_to_batch
from agents.config import make_config
from agents.errors import PersonalizationError
from agents.model import M3TModel
from agents.personalize import (
    PersonalizationConfig,
    apply_personalization,
    load_shared_state,
    shared_state,
    state_nbytes,
)
from agents.train import train_steps

from .conftest import make_item

TASKS = ("speech_command", "scene_classification")


def _model(num_experts: int = 0) -> M3TModel:
    torch.manual_seed(0)
    return M3TModel(make_config("tiny", num_experts=num_experts, modality_dropout=0.0))


def _train(model: M3TModel, steps: int = 3) -> None:
    rng = np.random.default_rng(0)
    batch = items_to_batch([make_item(rng) for _ in range(8)])
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    train_steps(model, lambda: batch, steps, TASKS, opt)


@pytest.mark.parametrize("method", ["lora", "adapter", "prompt", "expert", "full"])
def test_each_method_changes_only_what_it_should(method):
    # Prepare
    model = _model(num_experts=4 if method == "expert" else 0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    info = apply_personalization(model, PersonalizationConfig(method=method, experts=(1,), personal=True), TASKS)
    # Execute
    _train(model)
    # Assert: every base weight outside the tuned set is bit-identical (peft renames wrapped base weights)
    after = {n.replace(".base_layer.", "."): p for n, p in model.named_parameters()}
    tuned = set(info.shared_names) | set(info.personal_names)
    for name, p in model.named_parameters():
        base = name.replace(".base_layer.", ".")
        if name in tuned:
            continue
        assert not p.requires_grad, name
        assert torch.equal(before[base], after[base]), f"{method}: frozen {name} changed"
    changed = [n for n in info.shared_names if n.replace(".base_layer.", ".") in before
               and not torch.equal(before[n], after[n])]
    new = [n for n in info.shared_names if n not in before]
    assert changed or new
    if method == "expert":
        assert all(".ff.experts.1." in n or n.startswith("heads.") for n in info.shared_names)
        assert all(torch.equal(before[n], after[n]) for n in before if ".ff.experts.0." in n)
    if method == "full":
        assert "encoders.rgb.patch.weight" in info.shared_names
    # the heads of tasks the device does not run are frozen
    assert torch.equal(before["heads.gesture_recognition.proj.weight"], after["heads.gesture_recognition.proj.weight"])


def test_lora_shares_only_adapter_tensors_with_exact_bytes():
    model = _model()
    info = apply_personalization(model, PersonalizationConfig(method="lora", rank=4, tune_heads=False,
                                                              personal=True), TASKS)
    st = shared_state(model, info)
    # tiny: 2 layers x (q_proj, v_proj) x (A [4, 64] + B [64, 4]) float32 = 2 * 2 * 512 * 4 bytes
    assert state_nbytes(st) == 2 * 2 * 512 * 4 == 8192
    from peft import get_peft_model_state_dict

    assert set(st) == set(get_peft_model_state_dict(model))
    assert not any("personal" in k for k in st)


def test_lora_adapters_round_trip_through_safetensors(tmp_path):
    # Prepare: a trained device and a fresh one with the same base
    a, b = _model(), _model()
    cfg = PersonalizationConfig(method="lora", rank=2, alpha=4.0)
    ia, ib = apply_personalization(a, cfg, TASKS), apply_personalization(b, cfg, TASKS)
    _train(a)
    # Execute
    save_file(shared_state(a, ia), str(tmp_path / "adapter.safetensors"))
    loaded = load_shared_state(b, ib, load_file(str(tmp_path / "adapter.safetensors")), strict=True)
    # Assert
    assert len(loaded) == len(ia.shared_names)
    batch = items_to_batch([make_item(np.random.default_rng(7))])
    a.eval(), b.eval()
    with torch.no_grad():
        assert torch.allclose(a(batch, TASKS)["speech_command"], b(batch, TASKS)["speech_command"], atol=1e-6)


def test_personal_state_is_refused_and_bad_configs_are_clear():
    model = _model()
    info = apply_personalization(model, PersonalizationConfig(method="prompt", personal=True), TASKS)
    with pytest.raises(PersonalizationError, match="refusing to load personal tensor"):
        load_shared_state(model, info, {"personal.prompt": torch.zeros(2, 64)})
    with pytest.raises(PersonalizationError, match="expected shape"):
        load_shared_state(model, info, {"prompt.shared": torch.zeros(3, 64)})
    with pytest.raises(PersonalizationError, match="needs a mixture-of-experts model"):
        apply_personalization(_model(), PersonalizationConfig(method="expert"), TASKS)
    with pytest.raises(PersonalizationError, match=r"LoRA targets \['qkv'\] name no nn.Linear"):
        apply_personalization(_model(), PersonalizationConfig(method="lora", targets=("qkv",)), TASKS)


def test_personal_heads_switch_and_all_heads_sharing():
    m = _model()
    info = apply_personalization(m, PersonalizationConfig(personal=True, personal_heads=False), TASKS)
    assert info.personal_names == ("personal.prompt",)
    m2 = _model()
    info2 = apply_personalization(m2, PersonalizationConfig(share_all_heads=True), ("speech_command",))
    heads = {n.split(".")[1] for n in info2.shared_names if n.startswith("heads.")}
    assert heads == set(m2.cfg.tasks)  # every head is held and sent ...
    before = {k: v.clone() for k, v in shared_state(m2, info2).items()}
    rng = np.random.default_rng(0)
    batch = items_to_batch([make_item(rng) for _ in range(8)])
    opt = torch.optim.SGD([p for p in m2.parameters() if p.requires_grad], lr=0.5)
    train_steps(m2, lambda: batch, 3, ("speech_command",), opt)  # the device's own task only
    after = shared_state(m2, info2)
    moved = {k.split(".")[1] for k in after if k.startswith("heads.") and not torch.equal(after[k], before[k])}
    assert moved == {"speech_command"}  # ... but only the device's own task trains


def test_peft_state_dict_round_trip_and_refusals():
    # LoRA factors cross in peft's own naming (get/set_peft_model_state_dict), the other shared tensors by name
    a, b = _model(), _model()
    ia = apply_personalization(a, PersonalizationConfig(targets=("q_proj", "v_proj", "fovea")), TASKS)
    ib = apply_personalization(b, PersonalizationConfig(targets=("q_proj", "v_proj", "fovea")), TASKS)
    _train(a)
    st = shared_state(a, ia)
    assert any(k.endswith("fovea.lora_A.weight") for k in st) and not any(".default." in k for k in st)
    load_shared_state(b, ib, st, strict=True)
    assert all(torch.equal(v, shared_state(b, ib)[k]) for k, v in st.items())
    bad = {next(iter(st)): torch.full_like(next(iter(st.values())), float("nan"))}
    with pytest.raises(PersonalizationError, match="non-finite"):
        load_shared_state(b, ib, bad)
