"""Room acoustics of the embedded scene: cached room impulse responses and streaming convolution.

Why this shape: a microphone array must hear each source with the delay, level and reverberation of the
room it stands in -- that is what makes sound localisation, speaker distance and room type learnable. The
image-source model (pyroomacoustics) gives physically right early reflections, but one impulse-response set
costs ~10-100 ms while a simulator step has ~1 ms for audio. So :class:`RoomAcoustics` caches impulse
responses on quantised positions (source cell, head cell, head yaw), and :class:`ListenerStream` convolves
every source block with its impulse responses by uniformly partitioned overlap-save FFT convolution, so that
reverberation tails carry across steps and the audio is continuous.

Frames and units
----------------
* **Room frame**: origin at the room's minimum corner, metres, +z up (the world frame shifted; same axes).
* **Head frame of this module** (the sensing models' convention): +x right, +y up, **+z forward**. (The frame
  contract's OpenXR head frame looks along -z; negate z of ``mic_positions_m`` before passing them here.)
* **Head yaw** ``head_yaw_rad``: the facing direction in the room's horizontal plane, counter-clockwise about
  +z from room +x. Yaw 0 faces room +x, yaw pi/2 faces room +y. A head-frame offset ``(x, y, z)`` is placed at
  ``x * right + y * up + z * forward`` with ``forward = (cos yaw, sin yaw, 0)``, ``right = (sin yaw, -cos yaw, 0)``,
  ``up = (0, 0, 1)`` -- so at yaw 0 head +x (right) is room -y. The head is kept upright (roll and pitch are
  ignored: they move ear-level microphones by millimetres).
* Impulse responses: ``float32`` [channels, samples] at ``sample_rate_hz``; sample 0 is the emission time (the
  fractional-delay filter's latency that pyroomacoustics adds is removed), amplitudes follow 1/(4 pi r)
  spreading (pyroomacoustics' 1/r divided by 4 pi), so a source of RMS 1 at 1 m gives RMS ~0.08 from its
  direct path -- the same law as any hand-made direct-path response (e.g. a device's own-voice path).
"""

from __future__ import annotations

import json
import math
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
from scipy.signal import butter, sosfilt

from ..errors import BridgeError, UnknownNameError
from ..tasks import ROOM_TYPES

__all__ = [
    "AcousticsError",
    "SPEED_OF_SOUND_MPS",
    "DEFAULT_RT60_S",
    "rt60_for_room_type",
    "head_offsets_to_room",
    "RoomAcoustics",
    "CacheStats",
    "ListenerStream",
    "schroeder_rt60_s",
    "bench_audio",
]

#: Speed of sound in air at ~20 degC, metres per second (pyroomacoustics' default constant ``c`` too).
SPEED_OF_SOUND_MPS = 343.0

#: Default reverberation time (RT60, seconds) per room type. Furnished living spaces and offices measure
#: ~0.4-0.6 s, clinic rooms with hard surfaces ~0.5-0.8 s, large industrial halls 1-3 s
#: (reference/xr-sensing-models.md, "Voice and sound").
DEFAULT_RT60_S: dict[str, float] = {
    "living_room": 0.5,
    "kitchen": 0.55,
    "bedroom": 0.4,
    "office": 0.5,
    "factory_floor": 1.5,
    "warehouse": 1.8,
    "clinic_exam": 0.6,
    "clinic_ward": 0.7,
}

_WALL_MARGIN_M = 0.2  # sources and heads are kept this far inside the walls (pyroomacoustics needs "inside")
_MIC_MARGIN_M = 0.01
_MIN_SOURCE_MIC_M = 0.1  # a source closer than this to a microphone is pushed out (1/r would explode)
# Image-source order cap; later reverberation is the synthetic tail. Order 10 puts the fill time at ~45 ms in a
# 2.7 m-high room -- well past the mixing time of rooms this size (~10 ms), so the tail is diffuse where it takes
# over -- and costs ~6 ms per miss for a 5-microphone array (order 20: ~21 ms; the RT60 measured on the response
# is within 3 % of the target either way; numbers from a 5 x 4 x 2.7 m room, RT60 0.5 s).
_AUTO_MAX_ORDER = 10
_TAIL_MATCH_S = 0.02  # window before the fill time whose RMS sets the synthetic tail's starting level
_TAIL_FADE_S = 0.01
_IR_CROSSFADE = True
_DC_BLOCK_HZ = 10.0  # pyroomacoustics' own high-pass corner
_PRA_CONSTANTS_LOCK = threading.Lock()
#: pyroomacoustics scales each image by 1/r; a point source of unit volume velocity gives 1/(4 pi r).
_PRA_TO_POINT_SOURCE = 1.0 / (4.0 * math.pi)


#: sub-cardioid mic pattern standing in for head shadow (1 = omnidirectional, 0.5 = cardioid)
_MIC_PATTERN_P = 0.7


class AcousticsError(BridgeError, ValueError):
    """Room acoustics were configured or called with values the model cannot honour."""


def rt60_for_room_type(room_type: str) -> float:
    """Default RT60 in seconds for a room type of :data:`bridge.tasks.ROOM_TYPES`."""
    if room_type not in DEFAULT_RT60_S:
        raise UnknownNameError("room type", room_type, list(ROOM_TYPES))
    return DEFAULT_RT60_S[room_type]


def head_offsets_to_room(offsets_head_m: np.ndarray, head_yaw_rad: float) -> np.ndarray:
    """Rotate head-frame offsets (+x right, +y up, +z forward) into room-frame offsets for ``head_yaw_rad``.

    ``[N, 3] -> [N, 3]``; see the module docstring for the mapping (yaw 0 faces room +x, right is room -y).
    """
    c, s = math.cos(head_yaw_rad), math.sin(head_yaw_rad)
    # columns: room-frame images of head +x (right), +y (up), +z (forward)
    rot = np.array([[s, 0.0, c], [-c, 0.0, s], [0.0, 1.0, 0.0]])
    return np.asarray(offsets_head_m, dtype=np.float64).reshape(-1, 3) @ rot.T


def schroeder_rt60_s(
    ir: np.ndarray, sample_rate_hz: int, *, lo_db: float = -5.0, hi_db: float = -25.0
) -> float:
    """RT60 of a (mono) impulse response by Schroeder backward integration, fitted from ``lo_db`` to ``hi_db``
    (T20 by default) and extrapolated to 60 dB."""
    e = np.cumsum(np.asarray(ir, dtype=np.float64)[::-1] ** 2)[::-1]
    if e[0] <= 0.0:
        raise AcousticsError("schroeder_rt60_s needs a non-zero impulse response")
    edc_db = 10.0 * np.log10(np.maximum(e / e[0], 1e-300))
    idx = np.flatnonzero((edc_db <= lo_db) & (edc_db >= hi_db))
    if idx.size < 2:
        raise AcousticsError(
            f"the decay curve never spans {lo_db}..{hi_db} dB; the impulse response is too short"
        )
    t = idx / float(sample_rate_hz)
    slope_db_per_s = np.polyfit(t, edc_db[idx], 1)[0]
    return float(-60.0 / slope_db_per_s)


# -------------------------------------------------------------------------------------------- RoomAcoustics
class CacheStats(TypedDict):
    """:attr:`RoomAcoustics.cache_stats`: lookups answered from / added to the response cache, and its size."""

    hits: int
    misses: int
    hit_rate: float  # hits / (hits + misses), 0.0 before any lookup
    entries: int


@dataclass(frozen=True)
class _Key:
    source_cell: tuple[int, int, int]
    head_cell: tuple[int, int, int]
    yaw_index: int
    mics: bytes  # mic offsets rounded to millimetres


class RoomAcoustics:
    """Impulse responses of one shoebox room from a source to a head-mounted microphone array, cached.

    Walls get a uniform energy absorption from Sabine's formula inverted for ``rt60_s`` (pyroomacoustics'
    ``inverse_sabine``); the image-source model runs to ``max_order`` (ray tracing off). By default the order
    is capped (:data:`_AUTO_MAX_ORDER`, or less when that already covers ``max_ir_s``), because a 0.5 s room
    would need order ~70 (over a second per response). Up to the *fill time* ``order * min(size) / (sqrt(3) c)``
    every image is present (an image of ``order + 1`` reflections lies at least ``(order + 1) * min(size) / sqrt(3)``
    away); after it the response continues as exponentially decaying white noise whose amplitude
    falls 60 dB in ``rt60_s`` and starts at the measured RMS of the 20 ms before the fill time (a 10 ms
    crossfade joins the two). Late reverberation is diffuse, so a noise tail is what it sounds like; the noise
    is seeded from the cache key, so responses are reproducible. Responses are cut at ``max_ir_s``.

    Positions are quantised to ``cell_m`` cubes and yaw to ``yaw_step_deg``; the response is computed for the
    cell centres (kept ``0.2 m`` inside the walls) and the quantised yaw, so one key always means one response.
    The cache holds ``max_cache_entries`` responses (least recently used evicted). Returned arrays are
    read-only and shared between callers (:class:`ListenerStream` relies on that to reuse their spectra).
    """

    def __init__(
        self,
        *,
        size_m: Sequence[float],
        rt60_s: float,
        sample_rate_hz: int,
        max_order: int | None = None,
        max_ir_s: float = 0.35,
        cell_m: float = 0.5,
        yaw_step_deg: float = 30.0,
        max_cache_entries: int = 512,
    ):
        size = np.asarray(size_m, dtype=np.float64).reshape(-1)
        if size.shape != (3,) or np.any(size <= 2.0 * _WALL_MARGIN_M + 0.1):
            raise AcousticsError(
                f"size_m must be 3 lengths > {2 * _WALL_MARGIN_M + 0.1} m, got {list(size_m)}"
            )
        if not 0.05 <= rt60_s <= 10.0:
            raise AcousticsError(f"rt60_s must be in [0.05, 10] s, got {rt60_s}")
        if not 1000 <= int(sample_rate_hz) <= 192000:
            raise AcousticsError(f"sample_rate_hz must be in [1000, 192000], got {sample_rate_hz}")
        if max_order is not None and max_order < 0:
            raise AcousticsError(f"max_order must be >= 0 or None (automatic), got {max_order}")
        if max_ir_s <= 0.0 or cell_m <= 0.0 or not 0.0 < yaw_step_deg <= 360.0 or max_cache_entries < 1:
            raise AcousticsError(
                f"need max_ir_s > 0, cell_m > 0, yaw_step_deg in (0, 360], max_cache_entries >= 1; "
                f"got {max_ir_s}, {cell_m}, {yaw_step_deg}, {max_cache_entries}"
            )
        import pyroomacoustics as pra

        self._pra = pra
        self.size_m = size
        self.rt60_s = float(rt60_s)
        self.sample_rate_hz = int(sample_rate_hz)
        self.max_ir_s = float(max_ir_s)
        self.ir_len = int(round(self.max_ir_s * self.sample_rate_hz))
        self.cell_m = float(cell_m)
        self.yaw_step_rad = math.radians(yaw_step_deg)
        self._n_yaw = max(1, int(round(2.0 * math.pi / self.yaw_step_rad)))
        self.max_cache_entries = int(max_cache_entries)
        try:
            absorption, sabine_order = pra.inverse_sabine(self.rt60_s, size.tolist(), c=SPEED_OF_SOUND_MPS)
        except ValueError as exc:
            raise AcousticsError(
                f"no wall absorption gives RT60 {rt60_s} s in a {size.tolist()} m room "
                f"(the room is too large for so short a reverberation): {exc}"
            ) from exc
        self.energy_absorption = float(absorption)
        min_dim = float(size.min())
        if max_order is None:
            needed = math.ceil(math.sqrt(3.0) * SPEED_OF_SOUND_MPS * self.max_ir_s / min_dim)
            max_order = min(int(sabine_order), needed, _AUTO_MAX_ORDER)
        self.max_order = int(max_order)
        self.fill_time_s = self.max_order * min_dim / (math.sqrt(3.0) * SPEED_OF_SOUND_MPS)
        self._dc_block = butter(2, _DC_BLOCK_HZ, btype="highpass", fs=self.sample_rate_hz, output="sos")
        self._cache: OrderedDict[_Key, np.ndarray] = OrderedDict()
        self._hits = 0
        self._misses = 0
        self.last_miss_s = 0.0

    # -- quantisation --------------------------------------------------------------------------------------
    def _cell(self, pos_m: np.ndarray) -> tuple[int, int, int]:
        q = np.floor(np.asarray(pos_m, dtype=np.float64).reshape(3) / self.cell_m).astype(np.int64)
        return int(q[0]), int(q[1]), int(q[2])

    def _cell_centre(self, cell: tuple[int, int, int]) -> np.ndarray:
        centre = (np.asarray(cell, dtype=np.float64) + 0.5) * self.cell_m
        return np.clip(centre, _WALL_MARGIN_M, self.size_m - _WALL_MARGIN_M)

    def _key(self, source_pos_m: Any, head_pos_m: Any, head_yaw_rad: float, offsets: np.ndarray) -> _Key:
        yaw_index = int(round(head_yaw_rad / self.yaw_step_rad)) % self._n_yaw
        mics = np.round(offsets * 1000.0).astype(np.int32).tobytes()
        return _Key(self._cell(source_pos_m), self._cell(head_pos_m), yaw_index, mics)

    # -- public ----------------------------------------------------------------------------------------------
    @property
    def cache_stats(self) -> CacheStats:
        """``hits``, ``misses``, ``hit_rate`` (0 before any call) and ``entries`` of the response cache."""
        total = self._hits + self._misses
        return {
            "hits": self._hits,
            "misses": self._misses,
            "hit_rate": self._hits / total if total else 0.0,
            "entries": len(self._cache),
        }

    def impulse_responses(
        self, source_pos_m: Any, head_pos_m: Any, head_yaw_rad: float, mic_offsets_head_m: Any
    ) -> np.ndarray:
        """``float32`` [C, L] (read-only) from a source to each microphone of a head at ``head_pos_m``.

        Positions in the room frame (metres), ``mic_offsets_head_m`` [C, 3] in the +z-forward head frame.
        A cache hit makes no pyroomacoustics call.
        """
        offsets = np.asarray(mic_offsets_head_m, dtype=np.float64)
        if offsets.ndim != 2 or offsets.shape[1] != 3 or offsets.shape[0] < 1:
            raise AcousticsError(f"mic_offsets_head_m must be [C, 3] with C >= 1, got shape {offsets.shape}")
        key = self._key(source_pos_m, head_pos_m, float(head_yaw_rad), offsets)
        ir = self._cache.get(key)
        if ir is not None:
            self._hits += 1
            self._cache.move_to_end(key)
            return ir
        t0 = time.perf_counter()
        ir = self._compute(key, offsets)
        self.last_miss_s = time.perf_counter() - t0
        self._misses += 1
        self._cache[key] = ir
        if len(self._cache) > self.max_cache_entries:
            self._cache.popitem(last=False)
        return ir

    # -- computation -------------------------------------------------------------------------------------------
    def _compute(self, key: _Key, offsets: np.ndarray) -> np.ndarray:
        pra = self._pra
        head = self._cell_centre(key.head_cell)
        mics = head + head_offsets_to_room(offsets, key.yaw_index * self.yaw_step_rad)
        mics = np.clip(mics, _MIC_MARGIN_M, self.size_m - _MIC_MARGIN_M)
        src = self._cell_centre(key.source_cell)
        src = self._keep_away(src, head, mics)
        room = pra.ShoeBox(
            self.size_m.tolist(),
            fs=self.sample_rate_hz,
            materials=pra.Material(energy_absorption=self.energy_absorption),
            max_order=self.max_order,
            air_absorption=False,
            ray_tracing=False,
        )
        room.add_source(src.tolist())
        room.add_microphone_array(mics.T, directivity=self._mic_directivities(offsets, key.yaw_index * self.yaw_step_rad))
        # pyroomacoustics high-passes responses forward and backward (zero phase), which puts low-frequency
        # energy before the direct sound; switch that off for this call and high-pass causally below.
        with _PRA_CONSTANTS_LOCK:  # the constants are process-global
            hpf_was = pra.constants.get("rir_hpf_enable")
            pra.constants.set("rir_hpf_enable", False)
            try:
                room.compute_rir()
            finally:
                pra.constants.set("rir_hpf_enable", hpf_was)
        latency = pra.constants.get("frac_delay_length") // 2  # pyroomacoustics centres its fractional delays
        n = self.ir_len
        out = np.zeros((len(mics), n), dtype=np.float64)
        for c, per_source in enumerate(room.rir):
            r = np.asarray(per_source[0], dtype=np.float64)[latency : latency + n]
            out[c, : r.size] = r * _PRA_TO_POINT_SOURCE
        out = sosfilt(self._dc_block, out, axis=1)  # causal: removes the image sum's DC drift, keeps arrivals
        self._add_tail(out, key)
        ir = out.astype(np.float32)
        ir.setflags(write=False)
        return ir

    def _mic_directivities(self, offsets: np.ndarray, yaw_rad: float) -> list[Any]:
        """Head shadow, approximated: each head-mounted mic picks up best away from the head.

        A frame-mounted microphone sits on a head-sized obstacle, so sound from the far side arrives weaker (the
        interaural level difference). Each mic gets a sub-cardioid pattern (``_MIC_PATTERN_P``: 0 dB towards its
        outward normal, about -8 dB from behind) aimed along its horizontal outward direction from the head
        centre; mics on the midline face forward. Frequency-independent, so it over-shadows low frequencies a
        little -- a documented simplification.
        """
        dirs = self._pra.directivities
        out = []
        for x, _, z in np.asarray(offsets, dtype=float):
            # head frame +x right, +z forward (this module's convention); outward azimuth in the head frame
            outward = np.array([x, z]) if abs(x) > 0.02 else np.array([0.0, 1.0])
            az_head = math.atan2(-outward[0], outward[1])  # from forward, positive towards the left
            az_room = math.degrees(yaw_rad + az_head)
            out.append(dirs.CardioidFamily(orientation=dirs.DirectionVector(azimuth=az_room, colatitude=90.0,
                                                                            degrees=True), p=_MIC_PATTERN_P))
        return out

    def _keep_away(self, src: np.ndarray, head: np.ndarray, mics: np.ndarray) -> np.ndarray:
        """Move a source that coincides with the array (same cell) out to ``_MIN_SOURCE_MIC_M`` beyond it."""
        if np.min(np.linalg.norm(mics - src, axis=1)) >= _MIN_SOURCE_MIC_M:
            return src
        d = src - head
        norm = float(np.linalg.norm(d))
        d = d / norm if norm > 1e-9 else np.array([0.0, 0.0, -1.0])  # straight down (a source at one's feet)
        reach = float(np.max(np.linalg.norm(mics - head, axis=1))) + _MIN_SOURCE_MIC_M
        moved = np.clip(head + reach * d, _WALL_MARGIN_M * 0.5, self.size_m - _WALL_MARGIN_M * 0.5)
        if np.min(np.linalg.norm(mics - moved, axis=1)) < _MIN_SOURCE_MIC_M:  # clipped back into the array
            moved = np.clip(head - reach * d, _WALL_MARGIN_M * 0.5, self.size_m - _WALL_MARGIN_M * 0.5)
        return moved

    def _add_tail(self, ir: np.ndarray, key: _Key) -> None:
        """Replace the incomplete part after the fill time with RT60-matched decaying noise (in place)."""
        fs = self.sample_rate_hz
        i_fill = int(self.fill_time_s * fs)
        n = ir.shape[1]
        if i_fill >= n:
            return
        win = max(1, int(_TAIL_MATCH_S * fs))
        i0 = max(0, i_fill - win)
        rms = (
            np.sqrt(np.mean(ir[:, i0:i_fill] ** 2, axis=1, keepdims=True))
            if i_fill > i0
            else np.zeros((len(ir), 1))
        )
        t_centre = 0.5 * (i0 + i_fill) / fs
        t = np.arange(i_fill, n) / fs
        decay = np.exp(-math.log(1000.0) * (t - t_centre) / self.rt60_s)  # amplitude: -60 dB over rt60_s
        seed = zlib.crc32(repr((key.source_cell, key.head_cell, key.yaw_index)).encode() + key.mics)
        noise = np.random.default_rng(seed).standard_normal((ir.shape[0], n - i_fill))
        tail = rms * decay[None, :] * noise
        fade = min(int(_TAIL_FADE_S * fs), n - i_fill)
        w = np.ones(n - i_fill)
        w[:fade] = np.linspace(0.0, 1.0, fade, endpoint=False)
        ir[:, i_fill:] = ir[:, i_fill:] * (1.0 - w) + tail * w


# ------------------------------------------------------------------------------------------- ListenerStream
class _SourceState:
    __slots__ = ("ir", "spectra", "parts", "fdl", "inbuf", "silent")

    def __init__(self, parts: int, fft_bins: int, block_len: int):
        self.ir: np.ndarray | None = None
        self.spectra: np.ndarray | None = None  # [C, P, K] complex64, partitions of the IR
        self.parts = parts
        self.fdl = np.zeros(
            (parts, fft_bins), dtype=np.complex64
        )  # frequency-domain delay line, newest first
        self.inbuf = np.zeros(2 * block_len, dtype=np.float32)  # previous block + current block
        self.silent = 0  # consecutive blocks without input (ringing out)


class ListenerStream:
    """Streaming multi-source, multi-channel convolution for one microphone array.

    Uniformly partitioned overlap-save: the impulse response is cut into ``block_len`` partitions, each input
    block is transformed once (FFT size ``2 * block_len``) into a per-source frequency-domain delay line, and
    each output block is the sum over sources and partitions of delay-line spectra times partition spectra --
    one inverse FFT per channel. That is exact linear convolution, so reverberation tails continue across
    blocks. Everything is stacked and vectorised over channels and partitions; an IR's partition spectra are
    computed once and reused while the caller passes the same array object (:class:`RoomAcoustics` returns
    its cached arrays), and a small LRU remembers recent ones.

    * A source whose IR changes uses the new IR from that block on; that one block is crossfaded from the
      old IR's output to the new IR's output so position changes do not click.
    * A source missing from ``blocks`` is fed silence until its tail has rung out, then forgotten.
    * ``sensor_noise_rms`` adds the microphones' self-noise, independent per channel. The noise is read at
      rng-drawn offsets from a pre-drawn Gaussian pool of ``noise_pool_blocks`` blocks (6.4 s at the scene's
      defaults); drawing fresh normals every block would cost ~0.1 ms, a fifth of the audio budget. Noise that
      repeats with random offsets over seconds is indistinguishable from fresh noise for any model here.
    """

    def __init__(
        self,
        *,
        channels: int,
        block_len: int,
        max_ir_len: int,
        sensor_noise_rms: float = 0.0,
        rng: np.random.Generator | None = None,
        noise_pool_blocks: int = 64,
        spectra_cache_entries: int = 64,
    ):
        if channels < 1 or block_len < 1 or max_ir_len < 1:
            raise AcousticsError(
                f"channels, block_len and max_ir_len must be >= 1, got {channels}, {block_len}, {max_ir_len}"
            )
        if sensor_noise_rms < 0.0:
            raise AcousticsError(f"sensor_noise_rms must be >= 0, got {sensor_noise_rms}")
        self.channels = int(channels)
        self.block_len = int(block_len)
        self.max_ir_len = int(max_ir_len)
        self.fft_len = 2 * self.block_len
        self.fft_bins = self.block_len + 1
        self.sensor_noise_rms = float(sensor_noise_rms)
        self._rng = rng if rng is not None else np.random.default_rng(0)
        self._sources: dict[str, _SourceState] = {}
        self._spectra_lru: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._spectra_lru_size = int(spectra_cache_entries)
        self._fade_in = ((np.arange(self.block_len, dtype=np.float32) + 0.5) / self.block_len)[None, :]
        self._noise_pool: np.ndarray | None = None
        if self.sensor_noise_rms > 0.0:
            pool_len = noise_pool_blocks * self.block_len
            self._noise_pool = self._rng.standard_normal(
                (self.channels, pool_len + self.block_len), dtype=np.float32
            ) * np.float32(self.sensor_noise_rms)
        self.blocks_processed = 0

    @property
    def active_sources(self) -> list[str]:
        """Sources still contributing (present, or ringing out)."""
        return list(self._sources)

    def _spectra(self, ir: np.ndarray) -> np.ndarray:
        """[C, P, K] partition spectra of ``ir`` [C, L]."""
        hit = self._spectra_lru.get(id(ir))
        if hit is not None and hit[0] is ir:
            self._spectra_lru.move_to_end(id(ir))
            return hit[1]
        b = self.block_len
        parts = max(1, -(-ir.shape[1] // b))
        padded = np.zeros((self.channels, parts * b), dtype=np.float32)
        padded[:, : ir.shape[1]] = ir
        spectra = np.fft.rfft(padded.reshape(self.channels, parts, b), n=self.fft_len, axis=2).astype(
            np.complex64
        )
        self._spectra_lru[id(ir)] = (ir, spectra)  # holding ir keeps its id from being reused
        if len(self._spectra_lru) > self._spectra_lru_size:
            self._spectra_lru.popitem(last=False)
        return spectra

    def _check(self, name: str, block: Any, ir: Any) -> tuple[np.ndarray, np.ndarray]:
        block = np.asarray(block, dtype=np.float32)
        if block.shape != (self.block_len,):
            raise AcousticsError(
                f"source {name!r}: block must be float32 [{self.block_len}], got shape {block.shape}"
            )
        ir = ir if isinstance(ir, np.ndarray) else np.asarray(ir, dtype=np.float32)
        if ir.ndim != 2 or ir.shape[0] != self.channels or not 1 <= ir.shape[1] <= self.max_ir_len:
            raise AcousticsError(
                f"source {name!r}: impulse responses must be [{self.channels}, 1..{self.max_ir_len}], "
                f"got shape {ir.shape}"
            )
        return block, ir

    def process(self, blocks: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """One block of array audio, ``float32`` [C, block_len], from ``{source_id: (block [B], ir [C, L])}``."""
        checked = {name: self._check(name, blk, ir) for name, (blk, ir) in blocks.items()}
        b = self.block_len
        # 1. input spectra: shift each source's input buffer, one batched FFT for all sources
        for name in checked:
            if name not in self._sources:
                parts = max(1, -(-self.max_ir_len // b))
                self._sources[name] = _SourceState(parts, self.fft_bins, b)
        names = list(self._sources)
        if not names:
            return self._noise(np.zeros((self.channels, b), dtype=np.float32))
        bufs = np.empty((len(names), self.fft_len), dtype=np.float32)
        for i, name in enumerate(names):
            st = self._sources[name]
            st.inbuf[:b] = st.inbuf[b:]
            if name in checked:
                st.inbuf[b:] = checked[name][0]
                st.silent = 0
            else:
                st.inbuf[b:] = 0.0
                st.silent += 1
            bufs[i] = st.inbuf
        spectra_in = np.fft.rfft(bufs, axis=1)
        # 2. per source: push into the delay line, (re)load IR spectra, multiply-accumulate over partitions
        acc = np.zeros((self.channels, self.fft_bins), dtype=np.complex64)
        acc_old: np.ndarray | None = None
        for i, name in enumerate(names):
            st = self._sources[name]
            st.fdl[1:] = st.fdl[:-1]
            st.fdl[0] = spectra_in[i]
            old = st.spectra
            if name in checked and checked[name][1] is not st.ir:
                st.ir = checked[name][1]
                st.spectra = self._spectra(st.ir)
            h = st.spectra
            assert h is not None
            p = h.shape[1]
            contrib = (h * st.fdl[None, :p]).sum(axis=1)
            acc += contrib
            if _IR_CROSSFADE and old is not None and old is not h:
                if acc_old is None:
                    acc_old = np.zeros_like(acc)
                po = old.shape[1]
                acc_old += (old * st.fdl[None, :po]).sum(axis=1) - contrib
        # 3. back to time: the last block_len samples of each circular convolution are the valid ones
        if acc_old is None:
            y = np.fft.irfft(acc, n=self.fft_len, axis=1)[:, b:]
        else:
            both = np.fft.irfft(np.stack([acc, acc + acc_old]), n=self.fft_len, axis=2)[:, :, b:]
            y = both[0] * self._fade_in + both[1] * (1.0 - self._fade_in)
        # 4. forget sources whose tails have rung out (their whole delay line holds silence now)
        for name in names:
            st = self._sources[name]
            if st.silent > st.parts:
                del self._sources[name]
        self.blocks_processed += 1
        return self._noise(np.ascontiguousarray(y, dtype=np.float32))

    def _noise(self, y: np.ndarray) -> np.ndarray:
        if self._noise_pool is None:
            return y
        off = int(self._rng.integers(0, self._noise_pool.shape[1] - self.block_len + 1))
        y += self._noise_pool[:, off : off + self.block_len]
        return y

    def reset(self) -> None:
        """Drop every source and its tail (e.g. when the listener is teleported to another room)."""
        self._sources.clear()


# ------------------------------------------------------------------------------------------------ benchmark
def bench_audio(
    json_path: str | Path | None = None,
    *,
    channels: int = 6,
    sources: int = 3,
    sample_rate_hz: int = 16000,
    block_len: int = 1600,
    ir_s: float = 0.35,
    repeats: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Time the audio path: an impulse-response miss, a :meth:`ListenerStream.process` call, and the same
    per-block convolution with ``scipy.signal.fftconvolve`` plus overlap-add as the baseline.

    Returns (and writes to ``json_path`` when given) milliseconds per call (medians after warm-up) and the
    baseline/streaming ratio. Defaults are the embedded scene's: 16 kHz, 0.1 s steps, 6 microphones,
    3 sources, 0.35 s responses in a 5 x 4 x 2.8 m living room.
    """
    from scipy.signal import fftconvolve

    rng = np.random.default_rng(seed)
    room = RoomAcoustics(
        size_m=(5.0, 4.0, 2.8),
        rt60_s=rt60_for_room_type("living_room"),
        sample_rate_hz=sample_rate_hz,
        max_ir_s=ir_s,
    )
    ang = np.linspace(0.0, 2.0 * math.pi, channels, endpoint=False)
    mics = np.stack([0.08 * np.cos(ang), np.zeros(channels), 0.08 * np.sin(ang)], axis=1)
    head = np.array([2.6, 2.1, 1.6])
    miss_ms = []
    irs = []
    for s in range(max(sources, 3)):
        src = np.array([0.7 + 1.1 * s, 0.8 + 0.9 * s, 1.0])
        t0 = time.perf_counter()
        ir = room.impulse_responses(src, head, 0.3 * s, mics)
        miss_ms.append((time.perf_counter() - t0) * 1e3)
        irs.append(ir)
    t0 = time.perf_counter()
    room.impulse_responses(np.array([0.7, 0.8, 1.0]), head, 0.0, mics)
    hit_ms = (time.perf_counter() - t0) * 1e3
    irs = irs[:sources]
    stream = ListenerStream(
        channels=channels, block_len=block_len, max_ir_len=irs[0].shape[1], sensor_noise_rms=6e-4, rng=rng
    )
    feed_blocks = [rng.standard_normal((sources, block_len)).astype(np.float32) for _ in range(8)]

    def run_stream(k: int) -> None:
        x = feed_blocks[k % len(feed_blocks)]
        stream.process({f"s{i}": (x[i], irs[i]) for i in range(sources)})

    tails = np.zeros((channels, irs[0].shape[1] + block_len - 1))

    def run_baseline(k: int) -> None:
        x = feed_blocks[k % len(feed_blocks)]
        full = sum(fftconvolve(x[i][None, :], irs[i], axes=1) for i in range(sources))
        tails[:, :-block_len] = tails[:, block_len:]
        tails[:, -block_len:] = 0.0
        tails[:, : full.shape[1]] += full

    def median_ms(fn: Any) -> float:
        for k in range(10):
            fn(k)
        times = []
        for k in range(repeats):
            t0 = time.perf_counter()
            fn(k)
            times.append(time.perf_counter() - t0)
        return float(np.median(times) * 1e3)

    process_ms = median_ms(run_stream)
    baseline_ms = median_ms(run_baseline)
    result = {
        "config": {
            "channels": channels,
            "sources": sources,
            "sample_rate_hz": sample_rate_hz,
            "block_len": block_len,
            "ir_len": int(irs[0].shape[1]),
            "max_order": room.max_order,
            "fill_time_s": room.fill_time_s,
            "repeats": repeats,
        },
        "ir_miss_ms": float(np.median(miss_ms)),
        "ir_hit_ms": hit_ms,
        "process_ms": process_ms,
        "fftconvolve_baseline_ms": baseline_ms,
        "speedup_vs_fftconvolve": baseline_ms / process_ms if process_ms > 0 else float("inf"),
        "realtime_factor": (block_len / sample_rate_hz * 1e3) / process_ms
        if process_ms > 0
        else float("inf"),
    }
    if json_path is not None:
        Path(json_path).write_text(json.dumps(result, indent=2))
    return result
