"""Per-device agents: the multi-modal multi-task foundation model (M3T FM), its personalization, the local loop.

Modules: :mod:`agents.config` (ModelConfig, presets), :mod:`agents.model` (M3TModel), :mod:`agents.batching`
(frames -> batches), :mod:`agents.personalize` (PersonalizationConfig: LoRA / adapter / prompt / expert / full),
:mod:`agents.agent` (DeviceAgent), :mod:`agents.checkpoint` and :mod:`agents.pretrain` (foundation checkpoints),
:mod:`agents.bench`, :mod:`agents.live`,
:mod:`agents.cli`. Heavy modules load on first attribute access, so ``import agents`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "AgentError",
    "ModelConfig",
    "make_config",
    "M3TModel",
    "PersonalizationConfig",
    "DeviceAgent",
    "AgentConfig",
    "Prediction",
    "TrainReport",
    "EvalReport",
    "frames_to_batch",
    "save_checkpoint",
    "load_checkpoint",
    "foundation_checkpoint",
    "PretrainConfig",
]

_WHERE = {
    "AgentError": "errors", "ModelConfig": "config", "make_config": "config", "M3TModel": "model",
    "PersonalizationConfig": "personalize", "DeviceAgent": "agent", "AgentConfig": "agent", "Prediction": "agent",
    "TrainReport": "reports", "EvalReport": "reports", "frames_to_batch": "batching", "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint", "foundation_checkpoint": "pretrain", "PretrainConfig": "pretrain",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'agents' has no attribute {name!r}")
