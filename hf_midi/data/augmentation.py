"""Augmentation of training pieces, beside the codec: random transposition, time stretch and velocity
jitter of a performance, and transposition computed on ids.

``AugmentConfig`` is what a training run asks for (``train.py``'s ``augment``, ``transpose``,
``stretch``, ``velocity_jitter``); the stream (``hf_midi.data.stream``) draws one value per piece and epoch
from ``piece_rng`` and applies ``augment_performance``. ``transpose_ids`` is the exact shortcut for
pre-tokenised pieces (and the check of ``hf_midi.data.packed.transpose_windows``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..remote_code import codec


@dataclass(frozen=True)
class AugmentConfig:
    """Random changes to each training piece; ``augment=None`` (as for evaluation) means none.

    Each piece draws its own values, once per epoch, from a generator seeded by (seed, epoch, sha256).
    """

    transpose: tuple[int, int] = (-3, 3)
    """Inclusive range of whole semitones to shift every pitch by; notes pushed outside 0..127 are dropped."""
    stretch: tuple[float, float] = (0.95, 1.05)
    """Range of the factor every time is multiplied by, before quantisation (> 1 is slower)."""
    velocity_jitter: int = 0
    """Each note's velocity moves by a uniform integer in [-velocity_jitter, velocity_jitter] (clamped)."""

    def __post_init__(self):
        lo, hi = self.transpose
        if int(lo) != lo or int(hi) != hi or lo > hi:
            raise codec.HfMidiError(f"AugmentConfig.transpose {self.transpose}: need whole numbers lo <= hi")
        lo, hi = self.stretch
        if not 0 < lo <= hi:
            raise codec.HfMidiError(f"AugmentConfig.stretch {self.stretch}: need 0 < lo <= hi")
        if self.velocity_jitter < 0:
            raise codec.HfMidiError(f"AugmentConfig.velocity_jitter {self.velocity_jitter}: must be >= 0")

    @property
    def needs_times(self) -> bool:
        """True when the unquantised performance is needed (stretch or jitter), not just the ids."""
        return self.stretch != (1.0, 1.0) or self.velocity_jitter > 0

    def sample(self, rng: np.random.Generator) -> tuple[int, float]:
        """(semitones, stretch factor) for one piece; always two draws, so later draws line up."""
        semitones = int(rng.integers(self.transpose[0], self.transpose[1] + 1))
        factor = float(rng.uniform(self.stretch[0], self.stretch[1]))
        return semitones, factor if self.stretch[0] < self.stretch[1] else float(self.stretch[0])


def augment_performance(perf: codec.Performance, augment: AugmentConfig, rng: np.random.Generator) -> codec.Performance:
    """Apply one draw of ``augment`` to a performance (exactly what the stream does to each piece)."""
    semitones, factor = augment.sample(rng)
    if semitones:
        perf = codec.transpose(perf, semitones)
    if factor != 1.0:
        perf = codec.stretch(perf, factor)
    if augment.velocity_jitter:
        perf = codec.jitter_velocity(perf, rng, augment.velocity_jitter)
    return perf


def transpose_ids(ids: np.ndarray, semitones: int, sustain: str = "events") -> np.ndarray:
    """``encode(transpose(x, s))`` computed from ``ids = encode(x)``.

    When no note leaves 0..127 this is a shift of the NOTE_ON/NOTE_OFF ids (the in-step order is by
    pitch, which a common shift keeps). Otherwise the ids are decoded to notes in steps, transposed and
    re-encoded. The ids cannot tell a pedal never released (closed at the last note's end, vocabulary rule
    3) from one released at exactly that step; the first, common in practice, is assumed, so the
    result differs from encoding the transposed MIDI only when the second coincides with the last
    note being dropped.
    """
    if not semitones or not len(ids):
        return ids
    note = ids < codec.TIME_SHIFT
    pitch = ids[note] % 128 + semitones
    if pitch.min() >= 0 and pitch.max() <= 127:
        out = ids.astype(np.int64, copy=True)
        out[note] += semitones
        return out
    d = codec.ids_to_notes(ids)
    step = 1.0 / codec.STEPS_PER_SECOND
    down = d["pedal_time"][d["pedal_value"] == 127] * step
    up = d["pedal_time"][d["pedal_value"] == 0] * step
    if len(up) and len(d["end"]) and d["pedal_time"][-1] == d["end"].max() == d["end_step"]:
        # A release exactly at the end of the last note is read as "never released" (vocabulary rule 3),
        # so it follows the last note that survives transposition; that is the common case.
        up[-1] = np.inf
    perf = codec.Performance(
        d["start"] * step, d["end"] * step, d["pitch"].astype(np.int64), d["velocity"].astype(np.int64),
        down.astype(np.float64), up.astype(np.float64),
    )
    return codec.performance_to_ids(codec.transpose(perf, semitones), sustain)


__all__ = ["AugmentConfig", "augment_performance", "transpose_ids"]
