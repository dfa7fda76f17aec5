"""Audio front end of the model: resampling to the model rate and channel-count-agnostic log-mel features.

No torchaudio here (it is not a dependency): the mel filterbank is the HTK formula, the STFT is ``torch.stft``
and resampling is band-limited through the FFT (exact for one step of audio, which is what a frame carries).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import ModelConfig

__all__ = ["mel_filterbank", "resample_fft", "AudioFeatures", "hz_to_mel"]


def hz_to_mel(f_hz: float | torch.Tensor) -> float | torch.Tensor:
    """HTK mel scale: 2595 log10(1 + f / 700)."""
    if isinstance(f_hz, torch.Tensor):
        return 2595.0 * torch.log10(1.0 + f_hz / 700.0)
    return 2595.0 * math.log10(1.0 + f_hz / 700.0)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate_hz: int, f_min_hz: float = 20.0,
                   f_max_hz: float | None = None) -> torch.Tensor:
    """Triangular mel filters [n_mels, n_fft // 2 + 1], peaks at 1 (HTK spacing)."""
    f_max_hz = f_max_hz or sample_rate_hz / 2
    mels = torch.linspace(float(hz_to_mel(f_min_hz)), float(hz_to_mel(f_max_hz)), n_mels + 2)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    bins = torch.linspace(0, sample_rate_hz / 2, n_fft // 2 + 1)
    lo, mid, hi = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (bins[None] - lo) / (mid - lo)
    down = (hi - bins[None]) / (hi - mid)
    return torch.clamp(torch.minimum(up, down), min=0.0)


def resample_fft(x: torch.Tensor, from_hz: int, to_hz: int) -> torch.Tensor:
    """Band-limited resampling of the last axis by zero-padding / truncating the spectrum."""
    if from_hz == to_hz:
        return x
    n = x.shape[-1]
    m = max(1, int(round(n * to_hz / from_hz)))
    spec = torch.fft.rfft(x, dim=-1)
    keep = min(spec.shape[-1], m // 2 + 1)
    out = torch.zeros((*spec.shape[:-1], m // 2 + 1), dtype=spec.dtype)
    out[..., :keep] = spec[..., :keep]
    return torch.fft.irfft(out, n=m, dim=-1) * (m / n)


class AudioFeatures(nn.Module):
    """[B, C, N] audio -> (log-mel of the channel mean [B, M, T], level difference last-first channel [B, M] dB/10).

    A single-channel device gets a zero level difference (no spatial cue, not a fake one).
    """

    fb: torch.Tensor  # [M, n_fft // 2 + 1] mel filterbank (buffer)
    window: torch.Tensor  # [win] Hann analysis window (buffer)

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.hz, self.win, self.hop = cfg.audio_hz, cfg.audio_win, cfg.audio_hop
        self.n_fft = 1 << (self.win - 1).bit_length()
        self.register_buffer("fb", mel_filterbank(cfg.audio_n_mels, self.n_fft, cfg.audio_hz), persistent=False)
        self.register_buffer("window", torch.hann_window(self.win), persistent=False)

    def _mel_power(self, x: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(x, n_fft=self.n_fft, hop_length=self.hop, win_length=self.win, window=self.window,
                          center=True, return_complex=True)
        return self.fb @ spec.abs().pow(2)  # [*, M, T]

    def forward(self, audio: torch.Tensor, audio_hz: int) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, _ = audio.shape
        x = resample_fft(audio, int(audio_hz), self.hz)
        if x.shape[-1] < self.win:  # shorter than one analysis window: pad with silence
            x = torch.nn.functional.pad(x, (0, self.win - x.shape[-1]))
        logmel = (torch.log10(self._mel_power(x.mean(dim=1)) + 1e-8) + 4.0) / 2.0  # ~[-2, 2] for speech levels
        if c >= 2:
            edges = self._mel_power(torch.stack([x[:, 0], x[:, -1]], dim=1).reshape(2 * b, -1))
            lvl = torch.log10(edges.mean(dim=-1) + 1e-8).view(b, 2, -1)
            ild = lvl[:, 1] - lvl[:, 0]  # [B, M] bels
        else:
            ild = torch.zeros(b, self.fb.shape[0])
        return logmel, ild
