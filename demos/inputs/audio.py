"""Audio normalisation for speech models: any dtype, channel count and sample rate in, mono
float32 at the model's rate out (numpy + scipy only; there is no torchaudio here).

Problems the user can fix (empty, silent, broken or too short audio) raise `ValueError` with a
message meant for the user.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

TARGET_RATE = 16_000
SILENCE_PEAK = 1e-4  # below about -80 dBFS (3 steps of 16-bit audio) counts as silence
MIN_SECONDS = 0.1
MAX_CHANNELS = 16
MIN_RATE, MAX_RATE = 1_000, 384_000  # Hz accepted; a file header can claim any rate
MAX_DENOMINATOR = 1_000  # resampling ratio precision: exact for every common rate, bounded cost for odd ones


@dataclass(frozen=True, eq=False)
class Clip:
    """Mono float32 samples at `rate`, hashable by content (so results can be memoised).

    samples: (n,) float32.
    """

    samples: np.ndarray
    rate: int
    digest: str = field(default="")

    def __post_init__(self) -> None:
        if not self.digest:
            data = np.ascontiguousarray(self.samples, dtype=np.float32)
            object.__setattr__(self, "digest", hashlib.sha256(data.tobytes() + str(self.rate).encode()).hexdigest())

    def __hash__(self) -> int:
        return hash(self.digest)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Clip) and other.digest == self.digest

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate


def to_float(samples: np.ndarray) -> np.ndarray:
    """Integer PCM scaled to [-1, 1); floats kept as they are. Returns float32 of the same shape."""
    arr = np.asarray(samples)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.number)):
        raise ValueError(f"Unsupported audio sample type {arr.dtype}; expected integer or float PCM.")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError("Complex-valued audio is not supported.")
    if np.issubdtype(arr.dtype, np.unsignedinteger):
        half = float(2 ** (8 * arr.dtype.itemsize - 1))
        return ((arr.astype(np.float64) - half) / half).astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        return (arr.astype(np.float64) / float(2 ** (8 * arr.dtype.itemsize - 1))).astype(np.float32)
    return arr.astype(np.float32)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(n,) or (n, channels) -> (n,) by averaging channels; channels-first (c, n) is accepted too."""
    arr = np.asarray(samples)
    if arr.ndim == 1:
        return arr
    if arr.ndim != 2:
        raise ValueError(f"Audio must be 1-D (mono) or 2-D (samples x channels); got shape {arr.shape}.")
    if arr.shape[1] > MAX_CHANNELS and arr.shape[0] <= MAX_CHANNELS:
        arr = arr.T  # (channels, n) as some libraries return it
    if arr.shape[1] > MAX_CHANNELS:
        raise ValueError(f"Audio with {arr.shape[1]} channels is not supported (at most {MAX_CHANNELS}).")
    return arr.mean(axis=1)


def resample(samples: np.ndarray, rate: int, target: int = TARGET_RATE) -> np.ndarray:
    """(n,) at `rate` -> (ceil(n * target / rate),) at `target` (polyphase filter, anti-aliased).

    The ratio target/rate is used exactly when its denominator is at most MAX_DENOMINATOR (8, 11.025,
    22.05, 44.1, 48, 96 kHz...), else its closest such fraction (pitch off by under 0.01 %): the filter
    length grows with the denominator, and a prime rate like 1,000,003 Hz would take seconds and GBs.
    """
    if rate == target:
        return samples
    from scipy.signal import resample_poly

    ratio = Fraction(int(target), int(rate)).limit_denominator(MAX_DENOMINATOR)
    return resample_poly(samples, ratio.numerator, ratio.denominator).astype(np.float32)


def unpack(audio: Any) -> tuple[int, np.ndarray]:
    """Gradio's `(sample_rate, array)` (or `(array, sample_rate)`) -> (rate, array)."""
    if audio is None:
        raise ValueError("Please record or upload some audio.")
    if isinstance(audio, (str, os.PathLike)):
        return read_file(audio)
    if isinstance(audio, dict) and {"sampling_rate", "array"} <= set(audio):
        return _rate(audio["sampling_rate"]), np.asarray(audio["array"])
    if isinstance(audio, (tuple, list)) and len(audio) == 2:
        first, second = audio
        if np.isscalar(first):
            return _rate(first), np.asarray(second)
        if np.isscalar(second):
            return _rate(second), np.asarray(first)
    raise ValueError("Audio must be a (sample rate, samples) pair.")


def read_file(path: str | os.PathLike) -> tuple[int, np.ndarray]:
    """An audio file (WAV, FLAC, OGG... whatever libsndfile reads) -> (rate, (n,) or (n, channels) float32)."""
    import soundfile

    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        raise ValueError(
            "The audio file is empty (0 bytes)."
            if os.path.isfile(path)
            else "The audio file could not be found; please upload it again."
        )
    try:
        samples, rate = soundfile.read(path, dtype="float32", always_2d=False)
    except Exception:  # libsndfile reports unknown formats and damaged files alike
        raise ValueError(UNREADABLE) from None
    return int(rate), samples


UNREADABLE = (
    "Could not read the audio file: it is not audio in a supported format, or it is damaged. "
    "Please upload a WAV, FLAC or OGG file."
)


def _rate(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):  # NaN, infinity, text
        raise ValueError(f"Invalid sample rate {value!r}.") from None


def normalise(audio: Any, target: int = TARGET_RATE) -> Clip:
    """Any `(rate, samples)` -> a mono float32 `Clip` at `target` Hz.

    Refuses empty, non-finite, silent and too-short audio with a message for the user.
    """
    rate, raw = unpack(audio)
    if rate <= 0:
        raise ValueError(f"Invalid sample rate {rate} Hz.")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise ValueError(f"Sample rate {rate:,} Hz is not supported; use {MIN_RATE:,} to {MAX_RATE:,} Hz.")
    if raw.size == 0:
        raise ValueError("The audio is empty (zero samples). Please record or upload a clip with speech.")
    mono = to_mono(to_float(raw))
    if not np.all(np.isfinite(mono)):
        raise ValueError("The audio contains invalid values (NaN or infinity); please use another recording.")
    seconds = len(mono) / rate
    if seconds < MIN_SECONDS:
        raise ValueError(
            f"The audio is too short ({seconds * 1000:.0f} ms); please give at least {MIN_SECONDS:g} s of speech."
        )
    if float(np.max(np.abs(mono))) < SILENCE_PEAK:
        raise ValueError("The audio is silent (no sound above -80 dBFS). Check the microphone or choose another file.")
    return Clip(np.ascontiguousarray(resample(mono, rate, target), dtype=np.float32), target)


def limit(clip: Clip, max_seconds: float) -> tuple[Clip, str]:
    """Keep the first `max_seconds` of `clip`; the notice says what was cut ("" when nothing)."""
    keep = int(round(max_seconds * clip.rate))
    if len(clip.samples) <= keep:
        return clip, ""
    notice = (
        f"The clip is {clip.seconds:.1f} s long; the model listens to one {max_seconds:g}-second window, "
        f"so only the first {max_seconds:g} s were transcribed and shown."
    )
    return Clip(clip.samples[:keep].copy(), clip.rate), notice
