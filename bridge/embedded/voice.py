"""Voices and sound sources of the embedded scene: real synthesized speech, machine hum, alarms.

Why real speech: the ``speech_command`` task must be learnable from sound the way it is from a microphone, so
a spoken "stop" has to carry the phonetic structure of the word, spoken at the user's own pitch and rate --
not a tone per label. The wheel ``espeakng-loader`` ships the espeak-ng library and its voice data (no system
package, nothing downloaded), and this module drives that library through ``ctypes``: a word takes ~1 ms.

espeak-ng is GPL-3.0 while xrfed is Apache-2.0, so it stays an optional extra (``pip install 'xrfed[speech]'``).
Without it :class:`Voice` falls back to a plainly synthesized voice -- a glottal pulse train at the user's
pitch through formant filters, its vowel/consonant sequence derived from the word's letters -- and warns once
(:class:`FallbackVoiceWarning`). The fallback keeps different words spectrally different and keeps pitch and
rate per user, so the pipeline and its tests run anywhere, but it is not intelligible speech.

Units: sample rates in Hz, pitch (fundamental frequency) in Hz, speaking rate in words per minute, levels as
RMS in the frame's audio units (1.0 == 1 Pa == 94 dB SPL). All signals are ``float32`` mono. Sample positions
of the streaming sources are absolute sample indices counted from the source's creation (sample 0 is the
first sample of the first :meth:`next_block`).

Streaming sources (:class:`HumSource`, :class:`AlarmSource`, :class:`SpeechSource`) produce consecutive blocks
with continuous phase, so that block boundaries (the simulator's steps) never click.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import subprocess
import sys
import threading
import warnings
import zlib
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy import signal

from ..errors import BridgeError

__all__ = [
    "VoiceError",
    "FallbackVoiceWarning",
    "espeak_available",
    "Voice",
    "Utterance",
    "HumSource",
    "AlarmSource",
    "SpeechSource",
    "ESPEAK_SAMPLE_RATE_HZ",
]

#: Output rate of espeak-ng's own synthesizer.
ESPEAK_SAMPLE_RATE_HZ = 22050
_PEAK = 0.5  # every utterance is peak-normalised to this; levels are applied by the scene
_INSTALL_HINT = "pip install 'xrfed[speech]' (adds the espeakng-loader wheel, GPL-3.0)"

# espeak-ng C API constants (speak_lib.h, API revision 12).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE_MIN_WPM, _RATE_MAX_WPM = 80, 450
_PITCH_RANGE = 20  # espeak's intonation range 0-100; low so commands keep a steady, measurable f0

# espeak-ng's pitch parameter (0-100) is relative to the voice's own base pitch, so Hz map to it through a
# table measured with espeakng-loader 0.2.4 (median autocorrelation f0 of "go", intonation range 20). The
# male "en-us" voice spans ~63-159 Hz, the "en-us+f1" variant ~94-288 Hz; pitches above _FEMALE_ABOVE_HZ use
# the variant so its formants (shorter vocal tract) match the pitch.
_MALE_VOICE = "en-us"
_MALE_PARAMS = np.arange(10, 101, 10)
_MALE_F0_HZ = np.array([63.1, 65.0, 73.1, 80.2, 90.4, 98.9, 112.8, 125.3, 142.3, 158.6])
_FEMALE_VOICE = "en-us+f1"
_FEMALE_PARAMS = np.arange(0, 101, 10)
_FEMALE_F0_HZ = np.array([93.8, 104.5, 116.7, 128.9, 142.3, 160.4, 179.3, 203.2, 227.3, 257.9, 288.2])
_FEMALE_ABOVE_HZ = 150.0


class VoiceError(BridgeError, ValueError):
    """A voice or sound source was configured or called with values outside what it supports."""


class FallbackVoiceWarning(UserWarning):
    """espeak-ng is unavailable (or bypassed), so speech comes from the plain formant synthesizer."""


# ----------------------------------------------------------------------------------------------- espeak-ng
class _Espeak:
    """Loads and initialises espeak-ng once, to tell whether it works on this machine."""

    _CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def __init__(self) -> None:
        import espeakng_loader  # optional extra; ImportError means "not installed"

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [self._CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        # DONT_EXIT: a missing data directory must come back as an error code, not end the process.
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), _INITIALIZE_DONT_EXIT
        )
        if rate != ESPEAK_SAMPLE_RATE_HZ:
            raise OSError(f"espeak_Initialize returned {rate}, expected sample rate {ESPEAK_SAMPLE_RATE_HZ}")
        self._lib = lib  # loaded and initialised: espeak-ng works here (words are synthesized in a fresh process)


_ENGINE: _Espeak | None = None
_ENGINE_ERROR: str | None = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Espeak | None:
    global _ENGINE, _ENGINE_ERROR
    with _ENGINE_LOCK:
        if _ENGINE is None and _ENGINE_ERROR is None:
            try:
                _ENGINE = _Espeak()
            except (
                ImportError,
                OSError,
                AttributeError,
                RuntimeError,
            ) as exc:  # not installed / broken wheel
                _ENGINE_ERROR = f"{type(exc).__name__}: {exc}"
        return _ENGINE


# espeak-ng carries state from one utterance to the next (its wave buffers and random generator: the same word
# comes out a few samples longer or shorter depending on what was said before, and neither re-initialising nor
# reseeding resets it), while its first utterance in a fresh process is always the same. So each word is
# synthesized once in a fresh subprocess and kept on disk: speech is a pure function of (word, voice, pitch,
# rate), identical across processes -- what makes a scene deterministic under a seed, and what lets the stand-in
# Unity player reproduce the in-process scene sample for sample.
_SYNTH_SCRIPT = r"""
import ctypes, sys
import espeakng_loader
word, voice, pitch, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lib = ctypes.CDLL(espeakng_loader.get_library_path())
lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
chunks = []
def on_audio(wav, n, events):
    if wav and n > 0:
        chunks.append(ctypes.string_at(wav, 2 * n))
    return 0
cb = CB(on_audio)
if lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0x8000) <= 0:
    sys.exit(3)
lib.espeak_SetSynthCallback(cb)
if lib.espeak_SetVoiceByName(voice.encode()) != 0:
    sys.exit(4)
lib.espeak_SetParameter(1, rate, 0)
lib.espeak_SetParameter(3, pitch, 0)
lib.espeak_SetParameter(4, %d, 0)
data = word.encode("utf-8")
lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                             ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
if lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 1, None, None) != 0:
    sys.exit(5)
sys.stdout.buffer.write(b"".join(chunks))
"""


def _speech_cache_dir() -> Path:
    base = os.environ.get("XRFED_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "xrfed")
    return Path(base) / "speech"


def _synth_isolated(word: str, *, voice_name: str, pitch_param: int, rate_wpm: int) -> np.ndarray:
    """int16 samples at 22.05 kHz of ``word`` from a fresh espeak-ng engine (cached on disk; see above)."""
    key = hashlib.sha256(f"{word}|{voice_name}|{pitch_param}|{rate_wpm}|{_PITCH_RANGE}".encode()).hexdigest()[:24]
    path = _speech_cache_dir() / f"{key}.npy"
    try:
        return np.load(path)
    except (OSError, ValueError):
        pass
    with _ENGINE_LOCK:  # one synthesis at a time, and a concurrent caller finds the file afterwards
        try:
            return np.load(path)
        except (OSError, ValueError):
            pass
        r = subprocess.run(
            [sys.executable, "-c", _SYNTH_SCRIPT % _PITCH_RANGE, word, voice_name, str(pitch_param), str(rate_wpm)],
            capture_output=True, timeout=60,
        )
        if r.returncode != 0 or not r.stdout:
            raise VoiceError(f"espeak-ng synthesis of {word!r} failed (exit {r.returncode}): "
                             f"{r.stderr.decode(errors='replace')[-300:]}")
        samples = np.frombuffer(r.stdout, dtype=np.int16).copy()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, samples)
        os.replace(tmp, path)
        return samples


def espeak_available() -> bool:
    """True when the espeak-ng library from the ``espeakng-loader`` wheel loads and initialises."""
    return _engine() is not None


def _espeak_voice_params(pitch_hz: float) -> tuple[str, int]:
    """(voice name, espeak pitch parameter 0-100) whose measured f0 is closest to ``pitch_hz``."""
    if pitch_hz > _FEMALE_ABOVE_HZ:
        name, params, f0 = _FEMALE_VOICE, _FEMALE_PARAMS, _FEMALE_F0_HZ
    else:
        name, params, f0 = _MALE_VOICE, _MALE_PARAMS, _MALE_F0_HZ
    # f0 grows roughly geometrically with the parameter, so interpolate in log-frequency.
    p = np.interp(math.log(pitch_hz), np.log(f0), params)
    return name, int(round(float(p)))


# -------------------------------------------------------------------------------------------- fallback voice
# Formants (F1, F2, F3) in Hz of American English vowels (Peterson & Barney 1952, male averages).
_VOWEL_FORMANTS_HZ = {
    "a": (730, 1090, 2440),
    "e": (530, 1840, 2480),
    "i": (390, 1990, 2550),
    "o": (570, 840, 2410),
    "u": (440, 1020, 2240),
    "y": (300, 2200, 2900),
}
_APPROXIMANT_FORMANTS_HZ = {
    "l": (360, 1300, 2800),
    "r": (420, 1300, 1600),
    "w": (300, 700, 2200),
    "m": (250, 1100, 2500),
    "n": (250, 1700, 2500),
}
_STOP_BURST_HZ = {"p": 1000, "b": 1000, "t": 4000, "d": 4000, "k": 2000, "g": 2000, "q": 2000}
_SIBILANTS = set("szcxj")
_WEAK_FRICATIVES = set("fvh")
_VOICED_OBSTRUENTS = set("bdgvzj")
_FORMANT_BANDWIDTHS_HZ = (80.0, 100.0, 120.0)
_CROSSFADE_S = 0.008


def _resonator(x: np.ndarray, freq_hz: float, bw_hz: float, fs: int) -> np.ndarray:
    """Second-order resonator (Klatt's formant filter) with unit gain at DC."""
    r = math.exp(-math.pi * bw_hz / fs)
    c = 2.0 * r * math.cos(2.0 * math.pi * freq_hz / fs)
    return signal.lfilter([1.0 - c + r * r], [1.0, -c, r * r], x)


def _bandpass_noise(noise: np.ndarray, lo_hz: float, hi_hz: float, fs: int) -> np.ndarray:
    nyq = 0.5 * fs
    hi = min(hi_hz, 0.9 * nyq)
    lo = min(lo_hz, 0.5 * hi)
    sos = signal.butter(2, [lo / nyq, hi / nyq], btype="bandpass", output="sos")
    return signal.sosfilt(sos, noise)


def _fallback_say(word: str, *, pitch_hz: float, rate_wpm: float, fs: int, seed: int) -> np.ndarray:
    """Formant-synthesized word: one segment per letter, pulse-train voicing, noise for obstruents.

    Durations scale with 1/rate (a unit of 60/rate/5 s: vowels two units, consonants one), f0 declines gently
    from 1.04x to 0.96x of ``pitch_hz`` over the word as in a falling command intonation.
    """
    letters = [ch for ch in word.lower() if ch.isalpha()] or ["a"]
    rng = np.random.default_rng([seed, zlib.crc32(word.encode("utf-8"))])
    unit_s = 60.0 / rate_wpm / 5.0
    durs = [(2.0 if ch in _VOWEL_FORMANTS_HZ else 1.0) * unit_s for ch in letters]
    lens = [max(int(d * fs), 16) for d in durs]
    total = sum(lens)
    # Glottal source: impulses at the (declining, slightly jittered) pitch period, smoothed into pulses and
    # differentiated for lip radiation -- a spectrum falling ~6 dB/octave like a real voice.
    f0 = pitch_hz * np.linspace(1.04, 0.96, total)
    f0 *= 1.0 + 0.005 * rng.standard_normal(total).cumsum() / max(1.0, math.sqrt(total))
    phase = np.cumsum(f0 / fs)
    pulses = np.zeros(total)
    pulses[1:][np.diff(np.floor(phase)) > 0] = 1.0
    glottal = signal.lfilter([1.0, -1.0], [1.0], signal.lfilter([1.0], [1.0, -1.9, 0.9025], pulses))
    glottal /= np.max(np.abs(glottal)) + 1e-12
    noise = rng.standard_normal(total) * 0.3
    fade = int(_CROSSFADE_S * fs)
    out = np.zeros(total + fade)
    pos = 0
    for ch, n in zip(letters, lens, strict=True):
        seg_len = n + fade
        src_v = np.zeros(seg_len)
        src_n = np.zeros(seg_len)
        avail = min(seg_len, total - pos)
        src_v[:avail] = glottal[pos : pos + avail]
        src_n[:avail] = noise[pos : pos + avail]
        if ch in _VOWEL_FORMANTS_HZ or ch in _APPROXIMANT_FORMANTS_HZ:
            formants = _VOWEL_FORMANTS_HZ.get(ch) or _APPROXIMANT_FORMANTS_HZ[ch]
            seg = src_v + 0.02 * src_n  # a little breathiness
            for f, bw in zip(formants, _FORMANT_BANDWIDTHS_HZ, strict=True):
                if f < 0.45 * fs:
                    seg = _resonator(seg, f, bw, fs)
            seg *= 1.0 if ch in _VOWEL_FORMANTS_HZ else 0.5
        elif ch in _STOP_BURST_HZ:
            # closure (silent, or a weak voice bar for voiced stops) then a short burst at the place frequency
            seg = (
                0.05 * _resonator(src_v, 200.0, 100.0, fs) if ch in _VOICED_OBSTRUENTS else np.zeros(seg_len)
            )
            burst = min(int(0.015 * fs), seg_len // 2)
            fc = _STOP_BURST_HZ[ch]
            b = _bandpass_noise(src_n, 0.6 * fc, 1.6 * fc, fs)[:burst]
            seg[seg_len - fade - burst : seg_len - fade] += 2.0 * b * np.hanning(burst)
        elif ch in _SIBILANTS:
            seg = 1.2 * _bandpass_noise(src_n, 3500.0, 7500.0, fs)
            if ch in _VOICED_OBSTRUENTS:
                seg += 0.1 * _resonator(src_v, 250.0, 100.0, fs)
        else:  # weak fricatives and anything else: soft broadband noise
            seg = 0.4 * _bandpass_noise(src_n, 800.0, 6000.0, fs)
            if ch in _VOICED_OBSTRUENTS:
                seg += 0.1 * _resonator(src_v, 250.0, 100.0, fs)
        env = np.ones(seg_len)
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, fade))
        env[:fade] = ramp
        env[-fade:] = ramp[::-1]
        out[pos : pos + seg_len] += seg * env
        pos += n
    return out


# --------------------------------------------------------------------------------------------------- Voice
class Voice:
    """One user's voice: says command words at their pitch and speaking rate, at the scene's sample rate.

    ``say`` returns ``float32`` mono, peak-normalised to 0.5 (the scene applies the speech level), with leading
    and trailing silence trimmed to 10 ms so the utterance's sample span is the word's span. Results are cached
    per word and returned read-only (the same array on every call).

    Through espeak-ng, pitches of 63-288 Hz are reachable (below 150 Hz the male "en-us" voice, above it the
    "en-us+f1" variant); requests outside that range are clamped to its ends. Rates are clamped to espeak's
    80-450 words per minute. The fallback honours any pitch and rate exactly.
    """

    def __init__(
        self,
        *,
        pitch_hz: float,
        rate_wpm: float,
        sample_rate_hz: int,
        rng_seed: int = 0,
        force_fallback: bool = False,
    ):
        if not 40.0 <= pitch_hz <= 400.0:
            raise VoiceError(
                f"pitch_hz must be in [40, 400] Hz (adult voices are ~85-255 Hz), got {pitch_hz}"
            )
        if not 40.0 <= rate_wpm <= 500.0:
            raise VoiceError(
                f"rate_wpm must be in [40, 500] words per minute (~150 is typical), got {rate_wpm}"
            )
        if not 4000 <= int(sample_rate_hz) <= 192000:
            raise VoiceError(f"sample_rate_hz must be an integer in [4000, 192000], got {sample_rate_hz}")
        self.pitch_hz = float(pitch_hz)
        self.rate_wpm = float(rate_wpm)
        self.sample_rate_hz = int(sample_rate_hz)
        self.rng_seed = int(rng_seed)
        self._engine = None if force_fallback else _engine()
        self._cache: dict[str, np.ndarray] = {}
        if self._engine is None:
            reason = (
                "force_fallback=True"
                if force_fallback
                else f"espeak-ng could not be loaded ({_ENGINE_ERROR})"
            )
            warnings.warn(
                f"using xrfed's plainly synthesized fallback voice, not real speech: {reason}. "
                f"For real speech: {_INSTALL_HINT}",
                FallbackVoiceWarning,
                stacklevel=2,
            )

    @property
    def uses_espeak(self) -> bool:
        """True when this voice speaks through espeak-ng, False for the formant fallback."""
        return self._engine is not None

    def say(self, word: str) -> np.ndarray:
        """The word spoken once: ``float32`` [samples] at ``sample_rate_hz``, peak 0.5."""
        if not isinstance(word, str) or not word.strip():
            raise VoiceError(f"say() needs a non-empty word, got {word!r}")
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        if self._engine is not None:
            name, pitch_param = _espeak_voice_params(self.pitch_hz)
            rate = int(round(min(max(self.rate_wpm, _RATE_MIN_WPM), _RATE_MAX_WPM)))
            raw = _synth_isolated(word, voice_name=name, pitch_param=pitch_param, rate_wpm=rate)
            wav = raw.astype(np.float64)
            frac = Fraction(self.sample_rate_hz, ESPEAK_SAMPLE_RATE_HZ)
            if frac != 1:
                wav = signal.resample_poly(wav, frac.numerator, frac.denominator)
        else:
            wav = _fallback_say(
                word,
                pitch_hz=self.pitch_hz,
                rate_wpm=self.rate_wpm,
                fs=self.sample_rate_hz,
                seed=self.rng_seed,
            )
        wav = self._trim(wav)
        peak = float(np.max(np.abs(wav))) if wav.size else 0.0
        if peak <= 0.0:
            raise VoiceError(f"the synthesizer produced silence for {word!r}")
        out = (wav * (_PEAK / peak)).astype(np.float32)
        out.setflags(write=False)
        self._cache[word] = out
        return out

    def _trim(self, wav: np.ndarray) -> np.ndarray:
        """Drop leading/trailing silence (below 2 % of peak), keeping 10 ms margins."""
        if wav.size == 0:
            return wav
        loud = np.flatnonzero(np.abs(wav) > 0.02 * np.max(np.abs(wav)))
        if loud.size == 0:
            return wav
        margin = int(0.01 * self.sample_rate_hz)
        return wav[max(0, loud[0] - margin) : loud[-1] + margin + 1]


# ------------------------------------------------------------------------------------------ streaming sources
class HumSource:
    """Machine hum: the mains frequency and its harmonics (the 2x line is a transformer's magnetostriction
    peak) plus low-passed broadband noise; ``level`` is the total RMS. Phases continue across blocks."""

    def __init__(
        self,
        mains_hz: float = 50.0,
        level: float = 1.0,
        rng: np.random.Generator | None = None,
        *,
        sample_rate_hz: int = 16000,
        harmonics: int = 6,
        noise_fraction: float = 0.3,
        noise_corner_hz: float = 1000.0,
    ):
        if not 10.0 <= mains_hz <= 0.25 * sample_rate_hz:
            raise VoiceError(f"mains_hz must be in [10, sample_rate_hz/4], got {mains_hz}")
        if level < 0.0 or not 0.0 <= noise_fraction <= 1.0 or harmonics < 1:
            raise VoiceError(
                f"need level >= 0, noise_fraction in [0, 1], harmonics >= 1; got level={level}, "
                f"noise_fraction={noise_fraction}, harmonics={harmonics}"
            )
        self.sample_rate_hz = int(sample_rate_hz)
        self.mains_hz = float(mains_hz)
        self.level = float(level)
        self._rng = rng if rng is not None else np.random.default_rng(0)
        k = np.arange(1, harmonics + 1, dtype=np.float64)
        k = k[k * mains_hz < 0.45 * sample_rate_hz]
        amp = 1.0 / k
        amp[k == 2] = 1.5  # magnetostriction at twice the line frequency dominates transformer hum
        tonal_rms = math.sqrt(float(np.sum(amp**2)) / 2.0)
        self._freqs_hz = k * mains_hz
        self._amps = amp / tonal_rms * self.level * math.sqrt(1.0 - noise_fraction)
        self._phases = self._rng.uniform(0.0, 2.0 * math.pi, size=k.size)
        a = math.exp(-2.0 * math.pi * noise_corner_hz / sample_rate_hz)
        # one-pole low-pass y = (1-a) x + a y has output variance (1-a)^2 / (1-a^2) for unit white input
        self._noise_gain = self.level * math.sqrt(noise_fraction) / math.sqrt((1.0 - a) ** 2 / (1.0 - a * a))
        self._noise_b, self._noise_a = [1.0 - a], [1.0, -a]
        self._noise_state = np.zeros(1)
        self.position = 0

    def next_block(self, n: int) -> np.ndarray:
        """The next ``n`` samples (``float32``)."""
        t = (self.position + np.arange(n, dtype=np.float64)) / self.sample_rate_hz
        tonal = np.sin(2.0 * math.pi * self._freqs_hz[:, None] * t[None, :] + self._phases[:, None])
        out = self._amps @ tonal
        noise, self._noise_state = signal.lfilter(
            self._noise_b, self._noise_a, self._rng.standard_normal(n), zi=self._noise_state
        )
        self.position += n
        return (out + self._noise_gain * noise).astype(np.float32)


class AlarmSource:
    """An alarm: a ``freq_hz`` tone switched on for ``on_s`` and off for ``off_s``, with 5 ms raised-cosine
    ramps so the gating does not click. ``level`` is the RMS while sounding. The pattern starts "on"."""

    def __init__(
        self,
        freq_hz: float = 2000.0,
        on_s: float = 0.5,
        off_s: float = 0.5,
        level: float = 1.0,
        *,
        sample_rate_hz: int = 16000,
        ramp_s: float = 0.005,
    ):
        if not 0.0 < freq_hz < 0.5 * sample_rate_hz:
            raise VoiceError(
                f"freq_hz must be in (0, sample_rate_hz/2 = {0.5 * sample_rate_hz}), got {freq_hz}"
            )
        if on_s <= 0.0 or off_s < 0.0 or level < 0.0:
            raise VoiceError(f"need on_s > 0, off_s >= 0, level >= 0; got {on_s}, {off_s}, {level}")
        self.sample_rate_hz = int(sample_rate_hz)
        self.freq_hz, self.on_s, self.off_s, self.level = (
            float(freq_hz),
            float(on_s),
            float(off_s),
            float(level),
        )
        self.ramp_s = min(float(ramp_s), 0.5 * self.on_s)
        self.position = 0

    def gate(self, t_s: np.ndarray) -> np.ndarray:
        """Envelope (0..1) of the on/off pattern at times ``t_s``."""
        tau = np.mod(t_s, self.on_s + self.off_s)
        if self.off_s == 0.0:
            return np.ones_like(tau)
        r = self.ramp_s
        up = np.clip(tau / r, 0.0, 1.0) if r > 0 else np.ones_like(tau)
        down = np.clip((self.on_s - tau) / r, 0.0, 1.0) if r > 0 else (tau < self.on_s).astype(float)
        env = np.minimum(up, down)
        return np.where(env > 0, 0.5 - 0.5 * np.cos(math.pi * env), 0.0)

    def next_block(self, n: int) -> np.ndarray:
        """The next ``n`` samples (``float32``)."""
        t = (self.position + np.arange(n, dtype=np.float64)) / self.sample_rate_hz
        self.position += n
        out = self.level * math.sqrt(2.0) * self.gate(t) * np.sin(2.0 * math.pi * self.freq_hz * t)
        return out.astype(np.float32)


@dataclass(frozen=True)
class Utterance:
    """One queued word: absolute sample span ``[start_sample, end_sample)`` of its :class:`SpeechSource`."""

    word: str
    start_sample: int
    end_sample: int


class SpeechSource:
    """A talker: words queued with :meth:`say` play back in the blocks that cover them.

    :meth:`active_word` answers which word overlaps a block -- the scene labels ``speech_command`` from it, so
    the label is true exactly when the utterance is in that step's audio.
    """

    def __init__(self, voice: Voice, *, level: float = 1.0, history: int = 64):
        self.voice = voice
        self.level = float(level)
        self.position = 0
        self._queue: list[tuple[Utterance, np.ndarray]] = []
        self._history: deque[Utterance] = deque(maxlen=history)
        self.last_word: str | None = None

    def say(self, word: str, start_in_samples: int = 0) -> Utterance:
        """Queue ``word`` to start ``start_in_samples`` after the first sample of the next block."""
        if start_in_samples < 0:
            raise VoiceError(
                f"start_in_samples must be >= 0 (utterances cannot start in the past), got {start_in_samples}"
            )
        wav = self.voice.say(word)
        start = self.position + int(start_in_samples)
        utt = Utterance(word, start, start + wav.size)
        self._queue.append((utt, wav))
        self._history.append(utt)
        return utt

    def next_block(self, n: int) -> np.ndarray:
        """The next ``n`` samples (``float32``); sets :attr:`last_word` to the word overlapping them most."""
        s0, s1 = self.position, self.position + n
        out = np.zeros(n, dtype=np.float32)
        keep = []
        for utt, wav in self._queue:
            if utt.end_sample <= s0:
                continue
            keep.append((utt, wav))
            lo, hi = max(s0, utt.start_sample), min(s1, utt.end_sample)
            if lo < hi:
                out[lo - s0 : hi - s0] += wav[lo - utt.start_sample : hi - utt.start_sample]
        self._queue = keep
        self.last_word = self.active_word(s0, n)
        self.position = s1
        if self.level != 1.0:
            out *= np.float32(self.level)
        return out

    def active_word(self, start: int, n: int, *, min_overlap: int = 1) -> str | None:
        """The word whose utterance overlaps samples ``[start, start + n)`` most (at least ``min_overlap``
        samples), or None. Looks back over the last ``history`` queued words."""
        best, best_overlap = None, 0
        for utt in self._history:
            overlap = min(start + n, utt.end_sample) - max(start, utt.start_sample)
            if overlap >= max(1, min_overlap) and overlap > best_overlap:
                best, best_overlap = utt.word, overlap
        return best
