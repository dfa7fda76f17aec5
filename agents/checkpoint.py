"""Foundation checkpoints on disk: ``model.safetensors`` + ``config.json`` + ``MODEL_CARD.md`` in one directory.

Weights are safetensors (no pickle). The config travels with the weights, so :func:`load_checkpoint` builds the
model the checkpoint describes; asking for a different config (``expect=``), or weights whose names or shapes do
not fit the config, raises :class:`~agents.errors.CheckpointMismatchError` naming the first differences.

Every file is read as hostile input: a file that is not a regular file or is above its size limit, unreadable
JSON, a damaged safetensors file and weights holding NaN or inf are refused with one line naming the file.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig
from .errors import CheckpointMismatchError, ConfigError
from .model import M3TModel

__all__ = ["save_checkpoint", "load_checkpoint", "load_weights", "read_card_facts", "WEIGHTS_NAME", "CONFIG_NAME",
           "CARD_NAME", "FACTS_NAME", "MAX_JSON_BYTES", "MAX_WEIGHTS_BYTES"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "MODEL_CARD.md"
FACTS_NAME = "card.json"
#: largest config.json / card.json read (bytes)
MAX_JSON_BYTES = 4 << 20
#: largest model.safetensors read (bytes): the "large" preset is a few hundred MB
MAX_WEIGHTS_BYTES = 8 << 30


def _checked_size(path: Path, limit: int) -> int:
    """The size of ``path``: a regular file (not a FIFO or device) of at most ``limit`` bytes."""
    try:
        st = path.stat()
    except OSError as exc:
        raise CheckpointMismatchError(f"{path}: unreadable ({exc.strerror or type(exc).__name__})") from None
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointMismatchError(f"{path}: not a regular file")
    if st.st_size > limit:
        raise CheckpointMismatchError(f"{path}: {st.st_size} bytes, more than the {limit} allowed")
    return st.st_size


def _read_text(path: Path, limit: int = MAX_JSON_BYTES) -> str:
    _checked_size(path, limit)
    try:
        return path.read_bytes()[:limit].decode()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointMismatchError(f"{path}: unreadable ({type(exc).__name__})") from None


def save_checkpoint(model: M3TModel, out_dir: str | os.PathLike[str], *, facts: Mapping[str, Any] | None = None,
                    card: str | None = None) -> Path:
    """Write the model's weights, config and card; ``facts`` (data, seed, steps, accuracy) go to card.json."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_NAME), metadata={"format": "pt", "xrfed": "m3t"})
    (out / CONFIG_NAME).write_text(model.cfg.to_json())
    if facts is not None:
        (out / FACTS_NAME).write_text(json.dumps(dict(facts), indent=2, sort_keys=True))
    if card is not None:
        (out / CARD_NAME).write_text(card)
    return out


def read_card_facts(ckpt_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint's card.json facts ({} when it has none); a damaged file is a CheckpointMismatchError."""
    p = Path(ckpt_dir) / FACTS_NAME
    if not p.exists():
        return {}
    try:
        facts = json.loads(_read_text(p))
    except (ValueError, RecursionError) as exc:
        raise CheckpointMismatchError(f"{p}: not valid JSON ({type(exc).__name__})") from None
    if not isinstance(facts, dict):
        raise CheckpointMismatchError(f"{p}: expected a JSON object, got {type(facts).__name__}")
    return facts


def _diff(a: ModelConfig, b: ModelConfig) -> list[str]:
    da, db = a.to_dict(), b.to_dict()
    return [f"{k}: checkpoint {da[k]!r} vs expected {db[k]!r}" for k in da if k != "preset" and da[k] != db[k]]


def load_weights(model: M3TModel, state: Mapping[str, torch.Tensor], where: str = "checkpoint") -> None:
    """Load base weights, refusing missing/unexpected names and shape mismatches with a readable message."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:4]}{' ...' if len(missing) > 4 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:4]}{' ...' if len(unexpected) > 4 else ''}")
        if shapes:
            parts.append(f"shape mismatch {shapes[:3]}")
        raise CheckpointMismatchError(f"{where} does not match the model config: " + "; ".join(parts))
    model.load_state_dict(dict(state))


def load_checkpoint(ckpt_dir: str | os.PathLike[str], *, expect: ModelConfig | None = None) -> M3TModel:
    """Build the model described by ``ckpt_dir/config.json`` and load its weights."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = Path(ckpt_dir)
    cfg_path, w_path = d / CONFIG_NAME, d / WEIGHTS_NAME
    if not cfg_path.is_file() or not w_path.is_file():
        raise CheckpointMismatchError(f"{d}: expected {CONFIG_NAME} and {WEIGHTS_NAME} (a directory written by "
                                      f"`xrfed pretrain`), found {sorted(p.name for p in d.glob('*')) if d.is_dir() else 'no directory'}")
    try:
        cfg = ModelConfig.from_json(_read_text(cfg_path))
    except ConfigError as exc:
        raise CheckpointMismatchError(f"{cfg_path}: {exc}") from None
    if expect is not None:
        diff = _diff(cfg, expect)
        if diff:
            raise CheckpointMismatchError(f"{d}: the checkpoint's config differs from the expected one: "
                                          + "; ".join(diff[:5]))
    _checked_size(w_path, MAX_WEIGHTS_BYTES)
    try:
        state = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as exc:
        msg = " ".join(str(exc).split())[:160]
        raise CheckpointMismatchError(f"{w_path}: not a readable safetensors file ({msg})") from None
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointMismatchError(f"{w_path}: tensor {name[:80]!r} holds NaN or infinite values")
    model = M3TModel(cfg)
    load_weights(model, state, where=str(w_path))
    return model
