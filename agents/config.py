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
import re
import reprlib
from dataclasses import dataclass
from typing import Any

from bridge.tasks import MODALITIES, TASKS

from .errors import ConfigError

__all__ = ["ModelConfig", "PRESETS", "preset_names", "make_config", "CONFIG_VERSION", "MAX_CLASSES",
           "MAX_CONFIG_CHARS"]

CONFIG_VERSION = 1
#: the largest vocabulary of one task head
MAX_CLASSES = 100_000
#: the largest ``config.json`` read
MAX_CONFIG_CHARS = 1 << 16

#: integer fields: [lo, hi] (sizes bounded so a config cannot ask for a model that does not fit in memory)
_INT_RANGES: dict[str, tuple[int, int]] = {
    "d_model": (8, 4096), "n_layers": (1, 64), "n_heads": (1, 64), "image_size_px": (8, 1024),
    "patch_px": (1, 256), "fovea_px": (1, 1024), "window": (1, 256), "audio_window": (1, 64),
    "audio_hz": (1000, 192_000), "audio_n_mels": (1, 256), "audio_max_tokens": (1, 1024),
    "num_experts": (0, 64), "top_k": (1, 64), "version": (1, 1 << 16),
}
#: float fields: (lo, hi, lo excluded, hi excluded)
_FLOAT_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "mlp_ratio": (0.0, 16.0, True, False), "dropout": (0.0, 1.0, False, True), "fov_y_deg": (0.0, 179.0, True, False),
    "depth_max_m": (0.0, 1000.0, True, False), "audio_win_ms": (0.0, 1000.0, True, False),
    "audio_hop_ms": (0.0, 1000.0, True, False), "modality_dropout": (0.0, 1.0, False, True),
}
_PRESET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class _Shown(str):
    """A value as an error shows it: a bounded repr."""

    def __repr__(self) -> str:
        return str(self)


def _err(name: str, message: str, v: Any = None, *, allowed: Any = None) -> ConfigError:
    """A one-line :class:`ConfigError`; the value's repr is cut to 80 characters."""
    shown = None
    if v is not None:
        text = reprlib.repr(v)
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
        shown = _Shown(text if len(text) <= 80 else text[:77] + "...")
    return ConfigError(name, message, value=shown, allowed=allowed)


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

    Every field is type- and range-checked on creation (``_INT_RANGES``, ``_FLOAT_RANGES``): a ``config.json``
    from elsewhere cannot ask for a model that does not fit in memory, a boolean or a float is not an integer, and
    each error is one line naming the field, the value (cut short) and the allowed range.
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
        for n, (lo, hi) in _INT_RANGES.items():
            v = getattr(self, n)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise _err(n, f"must be an integer in [{lo}, {hi}] (not a boolean, string or float)", v)
        for n, (flo, fhi, lo_open, hi_open) in _FLOAT_RANGES.items():
            x = getattr(self, n)
            ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
            if not ok or x < flo or x > fhi or (lo_open and x == flo) or (hi_open and x == fhi):
                span = f"{'(' if lo_open else '['}{flo:g}, {fhi:g}{')' if hi_open else ']'}"
                raise _err(n, f"must be a finite number in {span}", x)
        if not isinstance(self.preset, str) or not _PRESET_RE.fullmatch(self.preset):
            raise _err("preset", "must be a name of 1-64 letters, digits, '_', '.' or '-'", self.preset)
        if self.version > CONFIG_VERSION:
            raise _err("version", f"written by a newer xrfed (this one reads versions 1 to {CONFIG_VERSION})",
                       self.version)
        if self.d_model % self.n_heads:
            raise _err("d_model", f"must be divisible by n_heads={self.n_heads}", self.d_model)
        if self.image_size_px % self.patch_px:
            raise _err("image_size_px", f"must be a multiple of patch_px={self.patch_px}", self.image_size_px)
        if self.fovea_px > self.image_size_px:
            raise _err("fovea_px", f"must be <= image_size_px={self.image_size_px}", self.fovea_px)
        if self.num_experts and self.top_k > self.num_experts:
            raise _err("top_k", f"must be <= num_experts={self.num_experts}", self.top_k)
        if not 8 <= self.audio_win <= 1 << 16 or not 1 <= self.audio_hop <= self.audio_win:
            raise _err("audio_win_ms", f"with audio_hz={self.audio_hz} the window must be 8 to 65536 samples and "
                       "the hop 1 sample to one window", (self.audio_win_ms, self.audio_hop_ms))
        for n, known in (("tasks", TASKS), ("modalities", MODALITIES)):
            v = getattr(self, n)
            if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)):
                raise _err(n, "must be a list of names", v)
            v = tuple(v)
            object.__setattr__(self, n, v)
            if not v or len(v) > len(known):
                raise _err(n, f"must name 1 to {len(known)} {n}", v)
            bad = [x for x in v if not isinstance(x, str) or x not in known]
            if bad:
                raise _err(n, f"unknown {n[:-1]}", bad[0], allowed=list(known))
            if len(set(v)) != len(v):
                raise _err(n, "must not repeat a name", v)
        counts = self.class_counts
        if isinstance(counts, (str, bytes)) or not isinstance(counts, (list, tuple)):
            raise _err("class_counts", "must be a list of integers", counts)
        for c in counts:
            if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= MAX_CLASSES:
                raise _err("class_counts", f"every count must be an integer in [1, {MAX_CLASSES}]", c)
        counts = tuple(counts) or tuple(TASKS[t].num_classes for t in self.tasks)
        if len(counts) != len(self.tasks):
            raise _err("class_counts", f"needs one count per task ({len(self.tasks)})", counts)
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
        """A config from a mapping (``config.json``); unknown keys are refused, every value is checked."""
        if not isinstance(raw, dict):
            raise _err("<config>", "must be a mapping", type(raw).__name__)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in raw if k not in names]
        if unknown:
            raise _err(str(unknown[0])[:64], "unknown field", allowed=names)
        return cls(**raw)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        if not isinstance(text, str) or len(text) > MAX_CONFIG_CHARS:
            raise _err("<config>", f"must be JSON text of at most {MAX_CONFIG_CHARS} characters",
                       len(text) if isinstance(text, str) else type(text).__name__)
        try:
            raw = json.loads(text)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, an integer beyond the digit limit
            raise _err("<config>", f"not valid JSON: {' '.join(str(exc).split())[:120]}") from None
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
