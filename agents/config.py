"""The one config dataclass of the M3T foundation model, with its size presets.

A :class:`ModelConfig` is saved next to the weights (``config.json``), so a checkpoint always says what model it
is; loading weights into a model whose config differs raises :class:`~agents.errors.CheckpointMismatchError`.

Presets (measured figures: ``xrfed bench inference``):

======  =======  ======  =====  ==========  =======================================================
preset  d_model  layers  heads  image (px)  intended use
======  =======  ======  =====  ==========  =======================================================
tiny    64       2       4      32          tests; < 1 s per training step on CPU, < 10 ms per frame
small   128      4       4      48          the default; < 50 ms per frame on one CPU core
base    256      6       8      96          users with a GPU
======  =======  ======  =====  ==========  =======================================================
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from bridge.tasks import MODALITIES, TASKS

from .errors import ConfigError

__all__ = ["ModelConfig", "PRESETS", "preset_names", "make_config", "CONFIG_VERSION"]

CONFIG_VERSION = 1


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the model's architecture and its input pipeline.

    Inputs are resized to ``image_size_px`` (square) and cut into ``patch_px`` patches; audio is resampled to
    ``audio_hz`` and turned into an ``audio_n_mels``-band log-mel spectrogram (25 ms window, 10 ms hop).
    ``window`` is how many past steps the time-series tokenizers (gaze, pose, IMU, hands) see, ``audio_window``
    how many steps of sound the audio tokenizer hears (a spoken command lasts several 100 ms steps). ``num_experts``
    > 0 replaces every feed-forward with a mixture of experts routing each token to ``top_k`` of them.
    ``fovea_px`` is the side of the crop around the gaze point (the view centre without gaze) that becomes an
    extra RGB/depth token: the pointing-ray tasks are about what lies there. ``fov_y_deg`` is the vertical
    camera field of view assumed when a batch does not carry it. ``class_counts`` pins each task's vocabulary
    size so a checkpoint trained on another vocabulary is refused rather than mis-read.
    """

    preset: str = "custom"
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.0
    image_size_px: int = 48
    patch_px: int = 8
    fovea_px: int = 16
    fov_y_deg: float = 90.0
    depth_max_m: float = 10.0
    window: int = 4
    audio_window: int = 1
    audio_hz: int = 16000
    audio_n_mels: int = 32
    audio_win_ms: float = 25.0
    audio_hop_ms: float = 10.0
    audio_max_tokens: int = 16
    num_experts: int = 0
    top_k: int = 2
    tasks: tuple[str, ...] = tuple(TASKS)
    modalities: tuple[str, ...] = MODALITIES
    class_counts: tuple[int, ...] = ()
    modality_dropout: float = 0.3
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        def pos_int(name: str) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(name, "must be an integer >= 1", value=v)

        for n in ("d_model", "n_layers", "n_heads", "image_size_px", "patch_px", "fovea_px", "window", "audio_window",
                  "audio_hz",
                  "audio_n_mels", "audio_max_tokens", "top_k"):
            pos_int(n)
        if self.d_model % self.n_heads:
            raise ConfigError("d_model", f"must be divisible by n_heads={self.n_heads}", value=self.d_model)
        if self.image_size_px % self.patch_px:
            raise ConfigError("image_size_px", f"must be a multiple of patch_px={self.patch_px}",
                              value=self.image_size_px)
        if self.fovea_px > self.image_size_px:
            raise ConfigError("fovea_px", f"must be <= image_size_px={self.image_size_px}", value=self.fovea_px)
        if isinstance(self.num_experts, bool) or not isinstance(self.num_experts, int) or self.num_experts < 0:
            raise ConfigError("num_experts", "must be an integer >= 0 (0 = dense feed-forward)",
                              value=self.num_experts)
        if self.num_experts and self.top_k > self.num_experts:
            raise ConfigError("top_k", f"must be <= num_experts={self.num_experts}", value=self.top_k)
        for n in ("mlp_ratio", "fov_y_deg", "depth_max_m", "audio_win_ms", "audio_hop_ms"):
            v = getattr(self, n)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ConfigError(n, "must be a positive number", value=v)
        if not 0 <= self.dropout < 1 or not 0 <= self.modality_dropout < 1:
            raise ConfigError("dropout", "dropout and modality_dropout must be in [0, 1)",
                              value=(self.dropout, self.modality_dropout))
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "modalities", tuple(self.modalities))
        if not self.tasks:
            raise ConfigError("tasks", "at least one task is required")
        bad = [t for t in self.tasks if t not in TASKS]
        if bad:
            raise ConfigError("tasks", "unknown task", value=bad, allowed=list(TASKS))
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad or not self.modalities:
            raise ConfigError("modalities", "unknown or empty modalities", value=bad, allowed=list(MODALITIES))
        counts = tuple(int(c) for c in self.class_counts) or tuple(TASKS[t].num_classes for t in self.tasks)
        if len(counts) != len(self.tasks):
            raise ConfigError("class_counts", f"needs one count per task ({len(self.tasks)})", value=counts)
        object.__setattr__(self, "class_counts", counts)

    # -- derived -------------------------------------------------------------------------------------------
    @property
    def n_patches(self) -> int:
        return (self.image_size_px // self.patch_px) ** 2

    @property
    def audio_win(self) -> int:
        return int(round(self.audio_hz * self.audio_win_ms / 1000))

    @property
    def audio_hop(self) -> int:
        return int(round(self.audio_hz * self.audio_hop_ms / 1000))

    def num_classes(self, task: str) -> int:
        return self.class_counts[self.tasks.index(task)]

    # -- serialisation -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("tasks", "modalities", "class_counts"):
            d[k] = list(d[k])
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelConfig:
        if not isinstance(raw, dict):
            raise ConfigError("<config>", "must be a mapping", value=type(raw).__name__)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(raw) - set(names))
        if unknown:
            raise ConfigError(unknown[0], "unknown field", allowed=names)
        kw = dict(raw)
        for k in ("tasks", "modalities", "class_counts"):
            if k in kw:
                kw[k] = tuple(kw[k])
        try:
            return cls(**kw)
        except TypeError as exc:
            raise ConfigError("<config>", str(exc)) from None

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError("<config>", f"not valid JSON: {exc}") from None
        return cls.from_dict(raw)


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(d_model=64, n_layers=2, n_heads=4, mlp_ratio=2.0, image_size_px=32, patch_px=8, fovea_px=12,
                 window=4, audio_n_mels=24, audio_max_tokens=8),
    "small": dict(d_model=128, n_layers=4, n_heads=4, mlp_ratio=2.0, image_size_px=48, patch_px=8, fovea_px=16,
                  window=4, audio_n_mels=32, audio_max_tokens=12),
    "base": dict(d_model=256, n_layers=6, n_heads=8, mlp_ratio=4.0, image_size_px=96, patch_px=8, fovea_px=24,
                 window=8, audio_n_mels=64, audio_max_tokens=24, num_experts=4, top_k=2),
}


def preset_names() -> tuple[str, ...]:
    return tuple(PRESETS)


def make_config(preset: str = "small", **overrides: Any) -> ModelConfig:
    """The named preset with ``overrides`` applied (e.g. ``num_experts=4`` for a mixture-of-experts tiny)."""
    if preset not in PRESETS:
        raise ConfigError("preset", "unknown preset", value=preset, allowed=list(PRESETS))
    return ModelConfig(**{"preset": preset, **PRESETS[preset], **overrides})
