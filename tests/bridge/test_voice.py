"""Voices and sound sources: espeak-ng speech, the formant fallback, pitch, rate, streaming continuity."""

import numpy as np
import pytest

from bridge.embedded.voice import (
    AlarmSource,
    FallbackVoiceWarning,
    HumSource,
    SpeechSource,
    Voice,
    VoiceError,
    espeak_available,
)

FS = 16000
needs_espeak = pytest.mark.skipif(
    not espeak_available(), reason="espeakng-loader (the speech extra) not installed"
)


def _f0_hz(x: np.ndarray, fs: int) -> float:
    """Median autocorrelation pitch over the loud, periodic 40 ms frames of ``x``."""
    x = x.astype(np.float64)
    frame = int(0.04 * fs)
    starts = range(0, len(x) - frame, frame // 2)
    energy = np.array([np.sum(x[i : i + frame] ** 2) for i in starts])
    estimates = []
    for i, e in zip(starts, energy, strict=True):
        if e < 0.3 * energy.max():
            continue
        s = x[i : i + frame] - x[i : i + frame].mean()
        ac = np.fft.irfft(np.abs(np.fft.rfft(s, 2 * frame)) ** 2)[:frame]
        lo, hi = fs // 450, fs // 60
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.4 * ac[0]:
            estimates.append(fs / lag)
    assert estimates, "no periodic frame found"
    return float(np.median(estimates))


def _spectrum_db(x: np.ndarray) -> np.ndarray:
    """Average log-magnitude spectrum in 64 bands (a word's timbre, independent of its length)."""
    frame = 512
    frames = np.stack([x[i : i + frame] * np.hanning(frame) for i in range(0, len(x) - frame, frame // 2)])
    mag = np.abs(np.fft.rfft(frames, axis=1)).mean(axis=0)[:256].reshape(64, 4).mean(axis=1)
    return 20 * np.log10(mag / mag.max() + 1e-9)


# ------------------------------------------------------------------ espeak-ng
@needs_espeak
def test_espeak_word_is_loud_normalised_and_slower_speech_is_longer():
    slow = Voice(pitch_hz=120, rate_wpm=100, sample_rate_hz=FS)
    fast = Voice(pitch_hz=120, rate_wpm=200, sample_rate_hz=FS)

    w_slow, w_fast = slow.say("select"), fast.say("select")

    assert slow.uses_espeak
    assert w_slow.dtype == np.float32 and w_slow.ndim == 1
    assert np.max(np.abs(w_slow)) == pytest.approx(0.5, abs=1e-6)
    assert np.sqrt(np.mean(w_slow**2)) > 0.03  # speech, not a click in silence
    # twice the rate -> roughly half the duration (pauses and bursts do not scale exactly)
    assert 1.4 < len(w_slow) / len(w_fast) < 2.6
    assert 0.2 < len(w_fast) / FS < 1.0


@needs_espeak
def test_espeak_words_differ_in_spectrum_and_cache_returns_same_array():
    v = Voice(pitch_hz=120, rate_wpm=150, sample_rate_hz=FS)

    stop, yes = v.say("stop"), v.say("yes")

    assert np.mean(np.abs(_spectrum_db(stop) - _spectrum_db(yes))) > 2.0
    assert v.say("stop") is stop
    with pytest.raises(ValueError, match="read-only"):
        stop[0] = 1.0


@needs_espeak
@pytest.mark.parametrize("pitch_hz", [95.0, 140.0, 210.0])
def test_espeak_pitch_sets_the_fundamental(pitch_hz):
    v = Voice(pitch_hz=pitch_hz, rate_wpm=150, sample_rate_hz=FS)

    f0 = _f0_hz(v.say("go"), FS)

    assert f0 == pytest.approx(pitch_hz, rel=0.15)


# ------------------------------------------------------------------ fallback
def test_fallback_warns_and_keeps_pitch_rate_and_word_identity():
    with pytest.warns(FallbackVoiceWarning, match=r"xrfed\[speech\]"):
        v = Voice(pitch_hz=180, rate_wpm=150, sample_rate_hz=FS, force_fallback=True)
    with pytest.warns(FallbackVoiceWarning):
        v_slow = Voice(pitch_hz=180, rate_wpm=75, sample_rate_hz=FS, force_fallback=True)

    go, help_ = v.say("go"), v.say("help")

    assert not v.uses_espeak
    assert np.max(np.abs(go)) == pytest.approx(0.5, abs=1e-6)
    assert _f0_hz(go, FS) == pytest.approx(180.0, rel=0.15)
    assert np.mean(np.abs(_spectrum_db(go) - _spectrum_db(help_))) > 2.0
    assert 1.6 < len(v_slow.say("help")) / len(help_) < 2.4  # half the rate, twice the length
    with pytest.warns(FallbackVoiceWarning):
        again = Voice(pitch_hz=180, rate_wpm=150, sample_rate_hz=FS, force_fallback=True)
    np.testing.assert_array_equal(again.say("go"), go)  # deterministic


def test_voice_rejects_bad_config_and_empty_words():
    with pytest.raises(VoiceError, match="pitch_hz must be in"):
        Voice(pitch_hz=1000, rate_wpm=150, sample_rate_hz=FS)
    with pytest.warns(FallbackVoiceWarning):
        v = Voice(pitch_hz=120, rate_wpm=150, sample_rate_hz=FS, force_fallback=True)
    with pytest.raises(VoiceError, match="non-empty word"):
        v.say("  ")


# ------------------------------------------------------------------ streaming sources
def test_alarm_is_continuous_across_blocks_and_gated():
    alarm = AlarmSource(freq_hz=1000.0, on_s=0.25, off_s=0.25, level=0.5, sample_rate_hz=FS)
    whole = AlarmSource(freq_hz=1000.0, on_s=0.25, off_s=0.25, level=0.5, sample_rate_hz=FS)

    blocks = np.concatenate([alarm.next_block(n) for n in (1600, 333, 1267, 4800)])
    one = whole.next_block(8000)

    np.testing.assert_allclose(blocks, one, atol=1e-6)
    on, off = one[400:3600], one[4400:7600]  # inside the on (0-0.25 s) and off (0.25-0.5 s) phases
    assert np.sqrt(np.mean(on**2)) == pytest.approx(0.5, rel=0.01)  # level is the RMS while sounding
    assert np.max(np.abs(off)) == 0.0


def test_hum_has_the_mains_harmonics_and_the_requested_rms():
    hum = HumSource(mains_hz=50.0, level=0.2, rng=np.random.default_rng(3), sample_rate_hz=FS)

    x = np.concatenate([hum.next_block(1600) for _ in range(20)]).astype(np.float64)  # 2 s

    assert np.sqrt(np.mean(x**2)) == pytest.approx(0.2, rel=0.1)
    spec = np.abs(np.fft.rfft(x))  # 0.5 Hz bins
    for line_hz in (50, 100, 150):
        k = line_hz * 2
        assert spec[k] > 10 * np.median(spec[k - 40 : k + 40])  # a tonal line well above the noise floor


def test_speech_source_places_words_and_reports_the_overlapping_one():
    with pytest.warns(FallbackVoiceWarning):
        voice = Voice(pitch_hz=120, rate_wpm=150, sample_rate_hz=FS, force_fallback=True)
    talker = SpeechSource(voice)
    wav = voice.say("stop")
    assert len(wav) < 8800  # the word fits in the 9600 samples streamed below
    talker.next_block(1600)  # samples 0..1599 pass in silence

    utt = talker.say("stop", start_in_samples=800)  # starts at absolute sample 2400
    out = np.concatenate([talker.next_block(1600) for _ in range(6)])  # samples 1600..11199

    assert (utt.start_sample, utt.end_sample) == (2400, 2400 + len(wav))
    np.testing.assert_array_equal(out[800 : 800 + len(wav)], wav)
    assert np.max(np.abs(out[:800])) == 0.0
    assert talker.active_word(0, 1600) is None
    assert talker.active_word(1600, 1600) == "stop"  # 800 samples of the word are in this block
    assert talker.active_word(utt.end_sample, 1600) is None
    with pytest.raises(VoiceError, match="start_in_samples must be >= 0"):
        talker.say("go", start_in_samples=-1)
