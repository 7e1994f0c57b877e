"""Controls: a say in what the model plays, at decode time, as logits processors.

The models are unconditioned, but the 390 events make most controls exact: a NOTE_ON outside a scale or
a register, a VELOCITY bin outside a dynamic range, a SUSTAIN_ON, a NOTE_ON past a polyphony limit can
each be masked. Density is steered, not masked: a controller biases NOTE_ON against TIME_SHIFT from the
note rate so far. ``MusicControls`` checks every value (``ArgumentError`` naming the argument, before
anything runs) and builds the processors::

    controls = MusicControls(key="D minor", dynamics="p", density=6, max_polyphony=4, pedal=False)
    model.generate(ids, do_sample=True, logits_processor=controls.processors(), max_new_tokens=512)

Each processor acts on the steps it is called for, so with a prompt only the new music is steered; the
state of the prompt (its sounding keys, its pedal, its last velocity) is taken into account. Together
with the grammar and the guards they always leave a legal event (see each class for the argument).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from .arguments import ArgumentError, positive_number
from .codec import (
    MAX_SHIFT,
    NOTE_OFF,
    NUM_VELOCITY_BINS,
    PIANO_KEYS,
    SUSTAIN_ON,
    TIME_SHIFT,
    VELOCITY,
    VOCAB_SIZE,
    bin_velocity,
)
from .performance_state import PerformanceState

# --------------------------------------------------------------------------- the vocabulary of controls
PITCH_CLASSES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
SHARP_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
# A minor key allows the natural minor scale and the raised seventh (harmonic minor's leading tone).
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10, 11)
# Velocity ranges of the dynamic markings (MIDI velocities, inclusive), split evenly between the
# values notation programs commonly give them (pp 33, p 49, mp 64, mf 80, f 96, ff 112). A decoded
# velocity is a bin's centre (4b - 2), so each range holds four of the 32 bins (pp six, ff six).
DYNAMICS = {"pp": (17, 40), "p": (41, 56), "mp": (57, 72), "mf": (73, 88), "f": (89, 104), "ff": (105, 127)}
# The density controller: the bias (nats) on NOTE_ON against TIME_SHIFT is GAIN x log(target / rate),
# rate = (onsets + target x PRIOR_S) / (seconds + PRIOR_S): the whole new music's rate, with a prior of
# PRIOR_S seconds at the target so that the first notes do not swing it; at most MAX_BIAS either way.
DENSITY_GAIN = 4.0
DENSITY_PRIOR_S = 2.0
DENSITY_MAX_BIAS = 8.0
# A named key also steers which of its notes is home (the mask fixes the notes, not the centre: C major
# and A minor share theirs): the time each pitch class of the new music sounds is pulled towards the key's
# Krumhansl-Kessler profile (the tonal hierarchy listeners hear; Krumhansl and Kessler 1982), as the density
# controller pulls the note rate: bias = KEY_GAIN x log(profile share / share so far), with a prior of
# KEY_PRIOR_STEPS key-down steps at the profile. Measured with the Krumhansl-Schmuckler key finder on the
# small model, 30-s pieces in C major, D minor, F# major and Bb minor: the asked key found in 6 of 32
# with the mask alone (the relative or the dominant key otherwise), 59 of 80 with a fixed 1-nat bias on
# the tonic triad instead, 35 of 40 at a gain of 2, 40 of 40 at 3 and at 5 (benchmarks/bench_controls.py
# measures both models).
MAJOR_PROFILE = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
MINOR_PROFILE = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)
KEY_GAIN = 3.0
KEY_PRIOR_STEPS = 400.0  # 4 s of one key down
KEY_MAX_BIAS = 4.0
MAX_DENSITY = 40.0  # notes a second: the cleaning's densest real piece (hf_midi.data.cleaning)


def note_pitch_class(text: str, argument: str = "key") -> int:
    """The pitch class (0 = C) of a note name with ``#``/``b`` accidentals; ``ArgumentError`` naming
    ``argument`` otherwise."""
    m = re.fullmatch(r"\s*([A-Ga-g])\s*([#b♯♭]*)\s*", text)
    if m is None:
        raise ArgumentError(argument, f"has no note name {text!r} (C, C#, Db, ... B)")
    letter, accidentals = m.groups()
    return (PITCH_CLASSES[letter.upper()] + accidentals.count("#") + accidentals.count("♯")
            - accidentals.count("b") - accidentals.count("♭")) % 12


def find_key(pitch, weights) -> tuple[int, str] | None:
    """(tonic pitch class, "major" | "minor") of notes by Krumhansl-Schmuckler (Krumhansl, *Cognitive
    Foundations of Musical Pitch*, 1990): their pitch classes weighed by ``weights`` (durations) correlated
    with the 24 rotations of the Krumhansl-Kessler profiles; the best correlation names the key. None without
    notes."""
    pitch = np.asarray(pitch, dtype=np.int64)
    if not len(pitch):
        return None
    total = np.bincount(pitch % 12, weights=np.asarray(weights, dtype=np.float64), minlength=12)
    if not total.any() or np.ptp(total) == 0:
        return None
    best, found = -np.inf, None
    for tonic in range(12):
        for mode, profile in (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE)):
            r = np.corrcoef(total, np.roll(profile, tonic))[0, 1]
            if r > best:
                best, found = r, (tonic, mode)
    return found


def parse_key(key) -> tuple[frozenset[int], str]:
    """The pitch classes (0 = C) a ``key`` allows and its name: ``"D minor"``, ``"F# major"``, ``"Bb
    minor"`` (a note name with ``#`` or ``b``, then ``major`` or ``minor``), or a set of pitch classes
    (numbers 0-11 or note names: ``{0, 4, 7}``, ``["C", "E", "G"]``, ``"C,E,G"``)."""
    if isinstance(key, str) and "," in key:  # "C,E,G": pitch classes written out
        key = [k for k in key.split(",") if k.strip()]
    if isinstance(key, str):
        m = re.fullmatch(r"\s*([A-Ga-g][#b♯♭]*)\s+(major|minor|maj|min)\s*", key, flags=re.IGNORECASE)
        if m is None:
            raise ArgumentError("key", f"must be a note name and major or minor (e.g. 'D minor', 'F# major'), "
                                       f"got {key!r}")
        tonic = note_pitch_class(m.group(1), "key")
        mode = "minor" if m.group(2).lower().startswith("min") else "major"
        scale = MINOR_SCALE if mode == "minor" else MAJOR_SCALE
        name = m.group(1)[0].upper() + m.group(1)[1:]
        return frozenset((tonic + s) % 12 for s in scale), f"{name} {mode}"
    if isinstance(key, Iterable):
        classes = set()
        for item in key:
            if isinstance(item, str) and item.strip().isdigit():
                item = int(item)
            if isinstance(item, str):
                classes.add(note_pitch_class(item, "key"))
            elif isinstance(item, numbers.Integral) and not isinstance(item, bool) and 0 <= item <= 11:
                classes.add(int(item))
            else:
                raise ArgumentError("key", f"pitch classes are 0-11 or note names, got {item!r}")
        if not classes:
            raise ArgumentError("key", "is an empty set of pitch classes")
        return frozenset(classes), "{" + ", ".join(SHARP_NAMES[c] for c in sorted(classes)) + "}"
    raise ArgumentError("key", f"must be a key name ('D minor') or a set of pitch classes, got {key!r}")


def parse_pitch(value, argument: str) -> int:
    """A MIDI pitch from a number (0-127) or a note name with octave (``C4`` = 60, ``A0`` = 21)."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([A-Ga-g][#b♯♭]*)\s*(-?\d)\s*", value)
        if m is None:
            if value.strip().lstrip("-").isdigit():
                value = int(value)
            else:
                raise ArgumentError(argument, f"has no pitch {value!r} (a MIDI number 0-127 or a note like C4)")
        else:
            value = 12 * (int(m.group(2)) + 1) + note_pitch_class(m.group(1), argument)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or float(value) != int(value):
        raise ArgumentError(argument, f"pitches are whole numbers 0-127, got {value!r}")
    if not 0 <= int(value) <= 127:
        raise ArgumentError(argument, f"pitches are 0-127 (MIDI), got {value!r}")
    return int(value)


def _range(value, argument: str, lo: int, hi: int, parse) -> tuple[int, int]:
    if isinstance(value, str):
        parts = re.split(r"\s*(?:\.\.|,|:|\s)\s*|(?<=\w)-(?=\w)", value.strip())
        parts = [p for p in parts if p]
        value = parts
    if not isinstance(value, Iterable) or isinstance(value, (bytes, dict)):
        raise ArgumentError(argument, f"must be (low, high), got {value!r}")
    pair = list(value)
    if len(pair) != 2:
        raise ArgumentError(argument, f"must be two values (low, high), got {value!r}")
    low, high = (parse(v, argument) for v in pair)
    if not lo <= low <= hi or not lo <= high <= hi:
        raise ArgumentError(argument, f"must lie in {lo}..{hi}, got ({low}, {high})")
    if low > high:
        raise ArgumentError(argument, f"low {low} is above high {high}")
    return low, high


def _velocity(value, argument: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or float(value) != int(value):
        raise ArgumentError(argument, f"velocities are whole numbers 1-127, got {value!r}")
    return int(value)


def _on(cache: dict, device: torch.device, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``tensors`` on ``device``: moved at a processor's first call there, then kept in ``cache``."""
    hit = cache.get(device)
    if hit is None:
        hit = cache[device] = tuple(t.to(device) for t in tensors)
    return hit


def velocity_bins(low: int, high: int) -> torch.Tensor:
    """(32,) bool: the VELOCITY bins whose decoded velocity (4b - 2) lies in ``low..high``."""
    values = torch.from_numpy(bin_velocity(range(1, NUM_VELOCITY_BINS + 1)))
    return (values >= low) & (values <= high)


# --------------------------------------------------------------------------- processors
class PitchSetLogitsProcessor(LogitsProcessor):
    """NOTE_ON only of the pitches ``allowed`` (a (128,) bool mask): a key, a register, or both.

    ``strength`` None (hard): the others are masked; a number: a soft bias, ``strength`` nats taken
    from each other NOTE_ON. NOTE_OFFs are untouched (a prompt's notes may end). Never corners a step:
    the mask holds at least one pitch (``MusicControls`` checks), and a NOTE_ON is never the only way
    forward while a VELOCITY, a NOTE_OFF, a pedal event or time can come instead."""

    def __init__(self, allowed: torch.Tensor, strength: float | None = None):
        allowed = torch.as_tensor(allowed, dtype=torch.bool)
        if allowed.shape != (128,) or not bool(allowed.any()):
            raise ArgumentError("pitches", "must allow at least one of the 128 pitches")
        # one (128,) add a step: -inf (hard) or -strength outside
        self.add = torch.where(allowed, 0.0, -math.inf if strength is None else -float(strength))
        self.strength = strength
        self._dev: dict = {}

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        (add,) = _on(self._dev, scores.device, self.add)
        scores[:, :NOTE_OFF] += add
        return scores


class VelocityRangeLogitsProcessor(LogitsProcessor):
    """Every new onset plays at a velocity whose bin's decoded value (4b - 2) lies in ``low..high``.

    VELOCITY ids outside the range are masked, their probability moved to the range's nearest end; while
    the velocity in force (the last VELOCITY, the prompt's included, or the decoder's default 64) is
    outside it, NOTE_ON is masked too, its probability moved to the velocities, so the model sets one
    first. The grammar then lets a VELOCITY follow a VELOCITY outside the range (the
    state's ``velocity_repeat_ok``), so a prompt that ends on one cannot corner the step."""

    def __init__(self, low: int, high: int, state: PerformanceState | None = None):
        bins = velocity_bins(low, high)
        if not bool(bins.any()):
            raise ArgumentError("velocity_range", f"({low}, {high}) holds no velocity bin (decoded velocities "
                                                  "are 2, 6, ..., 126)")
        self.state = state if state is not None else PerformanceState()
        ok = torch.zeros(VOCAB_SIZE + 2, dtype=torch.bool)  # per id: a VELOCITY in range; last row: no VELOCITY yet
        ok[VELOCITY:VELOCITY + NUM_VELOCITY_BINS] = bins
        ok[-1] = bool((low <= 64) & (64 <= high))  # the decoder's default velocity
        self.in_range, self.outside_bins = ok, ~bins
        inside = torch.nonzero(bins)[:, 0]
        self.first, self.last = int(inside[0]), int(inside[-1])  # a range's bins are contiguous
        # the grammar reads it: after a VELOCITY outside the range, another may come (row VOCAB_SIZE: past it)
        repeat_ok = torch.zeros(VOCAB_SIZE + 1, dtype=torch.bool)
        repeat_ok[VELOCITY:VELOCITY + NUM_VELOCITY_BINS] = ~bins
        self.state.velocity_repeat_ok = repeat_ok
        self._dev: dict = {}

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        s = self.state.sync(input_ids)
        in_range, outside_bins = _on(self._dev, scores.device, self.in_range, self.outside_bins)
        v, lo, hi = scores[:, VELOCITY:SUSTAIN_ON], self.first, self.last  # (B, 32) view; the range's bins
        # The wish to play softer (louder) than the range allows goes to its softest (loudest) bin, not to
        # time or other events: masked alone, it let the music thin out (base, 'f': 3 of 20 pieces broken).
        if lo > 0:
            v[:, lo] = torch.logaddexp(v[:, lo], torch.logsumexp(v[:, :lo], 1))
        if hi < NUM_VELOCITY_BINS - 1:
            v[:, hi] = torch.logaddexp(v[:, hi], torch.logsumexp(v[:, hi + 1:], 1))
        v.masked_fill_(outside_bins, -math.inf)
        unset = ~in_range[s.velocity]  # (B,) the velocity in force is outside the range
        if bool(unset.any()):  # a NOTE_ON must wait for a velocity: its wish goes to the velocities
            ons, inside = scores[:, :NOTE_OFF], v[:, lo:hi + 1]
            wish, total = torch.logsumexp(ons, 1), torch.logsumexp(inside, 1)
            lift = torch.where(unset & torch.isfinite(wish) & torch.isfinite(total),
                               torch.logaddexp(total, wish) - total, 0.0)
            inside += lift[:, None]
            ons.masked_fill_(unset[:, None], -math.inf)
        return scores


class MaxPolyphonyLogitsProcessor(LogitsProcessor):
    """At most ``n`` keys down at once (a NOTE_ON not yet ended by its NOTE_OFF; the pedal does not
    count): once ``n`` are down, no NOTE_ON of a silent pitch (a sounding one may be struck again); the
    model's wish to strike one goes, renormalised, to all it may do (measured against moving it to the
    releases only: that gave shorter notes and, in one of six pieces, five pitches repeated).
    Never corners a step: with a key down a NOTE_OFF is always legal."""

    def __init__(self, n: int, state: PerformanceState | None = None):
        self.n = int(n)
        self.state = state if state is not None else PerformanceState()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        s = self.state.sync(input_ids)
        silent = s.silent  # (B, 128)
        full = (~silent).sum(1) >= self.n  # (B,)
        scores[:, :NOTE_OFF].masked_fill_(silent & full[:, None], -math.inf)
        return scores


class NoPedalLogitsProcessor(LogitsProcessor):
    """No sustain pedal in the new music: SUSTAIN_ON is masked; if a prompt left the pedal down, no note
    or time comes before a SUSTAIN_OFF lifts it (NOTE_OFFs, velocities and ``<eos>`` may). Never corners a
    step: with the pedal down the grammar allows SUSTAIN_OFF."""

    def __init__(self, state: PerformanceState | None = None):
        self.state = state if state is not None else PerformanceState()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        s = self.state.sync(input_ids)
        scores[:, SUSTAIN_ON] = -math.inf
        down = s.pedal.bool()
        if bool(down.any()):
            scores[:, :NOTE_OFF].masked_fill_(down[:, None], -math.inf)
            scores[:, TIME_SHIFT:VELOCITY].masked_fill_(down[:, None], -math.inf)
        return scores


class KeyProfileLogitsProcessor(LogitsProcessor):
    """Pulls the time each pitch class sounds in the new music towards a key's profile (soft: a bias on
    NOTE_ONs, never a mask).

    ``profile``: 12 weights, tonic first (``MAJOR_PROFILE``, ``MINOR_PROFILE``), rotated to ``tonic``; for
    pitch classes ``allowed`` (the key's scale) the target share is the profile's among them. Each
    NOTE_ON gets ``gain x log(target share / share so far)`` (clipped to +-``max_bias``), the share so
    far (keys down x 10-ms steps, the measure the Krumhansl-Schmuckler key finder weighs) counted with a
    prior of ``prior_steps`` at the target, so that the music settles on the
    asked tonic rather than the relative key that shares its notes."""

    def __init__(self, tonic: int, profile, allowed, state: PerformanceState | None = None,
                 gain: float = KEY_GAIN, prior_steps: float = KEY_PRIOR_STEPS, max_bias: float = KEY_MAX_BIAS):
        self.state = state if state is not None else PerformanceState()
        if not self.state.track_pitch_classes:
            self.state.track_pitch_classes = True
            self.state.set_history(self.state.history)  # the next sync rebuilds, pitch classes included
        weights = torch.roll(torch.tensor(profile, dtype=torch.float32), int(tonic))
        weights = weights * torch.tensor([c in allowed for c in range(12)], dtype=torch.float32)
        self.target = weights / weights.sum()  # (12,)
        self.gain, self.prior, self.max_bias = float(gain), float(prior_steps), float(max_bias)
        self.column = torch.arange(128) % 12  # each NOTE_ON's pitch class
        self._dev: dict = {}

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        s = self.state.sync(input_ids)
        target, column = _on(self._dev, scores.device, self.target, self.column)
        total = s.pitch_time.sum(1, keepdim=True)
        share = (s.pitch_time + self.prior * target) / (total + self.prior)  # (B, 12)
        bias = (self.gain * torch.log(target.clamp(min=1e-6) / share.clamp(min=1e-6))).clamp(
            -self.max_bias, self.max_bias)
        scores[:, :NOTE_OFF] += bias[:, column]
        return scores


class NoteDensityLogitsProcessor(LogitsProcessor):
    """Steers the new music towards ``notes_per_second`` onsets a second (soft: a bias, never a mask).

    From the rate so far, ``(onsets + target x prior) / (seconds + prior)`` over the new music, the bias
    ``b = gain x log(target / rate)`` (clipped to +-``max_bias``) is added to every NOTE_ON and VELOCITY
    (a velocity leads to a note) and taken from every TIME_SHIFT, scaled by the shift's length in
    tenths of a second (at least one), so that too dense music also moves on in longer steps.
    Achieved rates: ``benchmarks/bench_controls.py``."""

    def __init__(self, notes_per_second: float, state: PerformanceState | None = None, gain: float = DENSITY_GAIN,
                 prior_seconds: float = DENSITY_PRIOR_S, max_bias: float = DENSITY_MAX_BIAS):
        self.target = float(notes_per_second)
        self.gain, self.prior, self.max_bias = float(gain), float(prior_seconds), float(max_bias)
        self.state = state if state is not None else PerformanceState()
        steps = torch.arange(1, MAX_SHIFT + 1, dtype=torch.float32)
        # per id, what one nat of bias does to it: +1 NOTE_ON and VELOCITY, -(tenths of a second) a shift
        self.pattern = torch.zeros(VOCAB_SIZE)
        self.pattern[:NOTE_OFF] = 1.0
        self.pattern[VELOCITY:SUSTAIN_ON] = 1.0
        self.pattern[TIME_SHIFT:VELOCITY] = -torch.clamp(steps / 10.0, min=1.0)
        self._dev: dict[tuple, torch.Tensor] = {}

    def bias(self, state: PerformanceState) -> torch.Tensor:
        """(B,) the bias in nats: > 0 while the music is sparser than the target."""
        seconds = state.elapsed.float() / 100.0
        rate = (state.onsets.float() + self.target * self.prior) / (seconds + self.prior)
        return (self.gain * torch.log(self.target / rate)).clamp(-self.max_bias, self.max_bias)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        s = self.state.sync(input_ids)
        key = (scores.device, scores.shape[1])
        pattern = self._dev.get(key)
        if pattern is None:  # sized to the logits (a padded embedding's extra ids get nothing)
            pattern = torch.zeros(1, scores.shape[1])
            pattern[0, :VOCAB_SIZE] = self.pattern
            pattern = self._dev[key] = pattern.to(scores.device)
        return scores.addcmul_(self.bias(s)[:, None], pattern)  # one fused op: scores += b x pattern


# --------------------------------------------------------------------------- the controls together
@dataclass(frozen=True)
class MusicControls:
    """What the new music may play; None (the default of each) leaves that aspect to the model.

    Args:
        key: ``"D minor"`` (a note name with ``#`` or ``b``, then ``major`` or ``minor``; a minor key
            allows the natural minor scale plus the raised seventh) or a set of pitch classes
            (``{0, 4, 7}`` or ``["C", "E", "G"]``).
        key_strength: None (hard: no NOTE_ON outside the key) or the nats taken from each NOTE_ON
            outside it (a soft bias; 2-4 nats keep most notes in the key, chromatic notes still pass).
        pitch_range: ``(low, high)``, MIDI pitches (numbers or names like ``"C3"``), inclusive; it must
            hold a piano key (21-108) and, with ``key``, a pitch of the key.
        velocity_range: ``(low, high)``, MIDI velocities 1-127, inclusive: every new onset's velocity
            lies in it (a decoded velocity is a bin's centre, 2, 6, ..., 126).
        dynamics: ``"pp"``, ``"p"``, ``"mp"``, ``"mf"``, ``"f"`` or ``"ff"``: the velocity ranges in
            ``DYNAMICS`` (pp 17-40, p 41-56, mp 57-72, mf 73-88, f 89-104, ff 105-127). Not with
            ``velocity_range``.
        density: a target in notes (onsets) per second, > 0: a controller on the logits, not a mask.
        max_polyphony: at most this many keys down at once (>= 1).
        pedal: False: no sustain pedal in the new music (a prompt's held pedal is lifted first).
    """

    key: object = None
    key_strength: float | None = None
    pitch_range: object = None
    velocity_range: object = None
    dynamics: str | None = None
    density: float | None = None
    max_polyphony: int | None = None
    pedal: bool | None = None

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: the checked, normal forms replace what was given
        if self.key is not None:
            classes, name = parse_key(self.key)
            set_(self, "key", name)
            set_(self, "_classes", classes)
        else:
            set_(self, "_classes", None)
        if self.key_strength is not None:
            if self.key is None:
                raise ArgumentError("key_strength", "needs a key")
            set_(self, "key_strength", positive_number("key_strength", self.key_strength, unit=" (nats; None: hard)"))
        if self.pitch_range is not None:
            low, high = _range(self.pitch_range, "pitch_range", 0, 127, parse_pitch)
            if high < PIANO_KEYS[0] or low > PIANO_KEYS[1]:
                raise ArgumentError("pitch_range", f"({low}, {high}) holds no piano key (21-108, A0-C8)")
            set_(self, "pitch_range", (low, high))
            if self._classes is not None and self.key_strength is None and not any(
                    p % 12 in self._classes for p in range(max(low, PIANO_KEYS[0]), min(high, PIANO_KEYS[1]) + 1)):
                raise ArgumentError("pitch_range", f"({low}, {high}) holds no piano key of {self.key}")
        if self.dynamics is not None:
            if self.velocity_range is not None:
                raise ArgumentError("dynamics", "and velocity_range both set the velocities: give one")
            name = self.dynamics.strip().lower() if isinstance(self.dynamics, str) else self.dynamics
            if name not in DYNAMICS:
                raise ArgumentError("dynamics", f"must be one of {', '.join(DYNAMICS)}, got {self.dynamics!r}")
            set_(self, "dynamics", name)
        if self.velocity_range is not None:
            low, high = _range(self.velocity_range, "velocity_range", 1, 127, _velocity)
            if not bool(velocity_bins(low, high).any()):
                raise ArgumentError("velocity_range", f"({low}, {high}) holds no velocity bin (decoded "
                                                      "velocities are 2, 6, ..., 126: widen it)")
            set_(self, "velocity_range", (low, high))
        if self.density is not None:
            set_(self, "density", positive_number("density", self.density, MAX_DENSITY, " notes a second"))
        if self.max_polyphony is not None:
            v = self.max_polyphony
            whole = isinstance(v, numbers.Integral) or (isinstance(v, numbers.Real) and float(v).is_integer())
            if isinstance(v, bool) or not whole or not 1 <= int(v) <= 128:
                raise ArgumentError("max_polyphony", f"must be a whole number >= 1, got {v!r}")
            set_(self, "max_polyphony", int(v))
        if self.pedal is not None and not isinstance(self.pedal, bool):
            raise ArgumentError("pedal", f"must be True or False, got {self.pedal!r}")

    @property
    def velocities(self) -> tuple[int, int] | None:
        """The velocity range in force (from ``dynamics`` or ``velocity_range``), or None."""
        return DYNAMICS[self.dynamics] if self.dynamics is not None else self.velocity_range

    @property
    def pitches(self) -> torch.Tensor | None:
        """(128,) bool: the NOTE_ONs a hard key and the range allow (None when neither is set)."""
        if self._classes is None and self.pitch_range is None:
            return None
        allowed = torch.ones(128, dtype=torch.bool)
        if self._classes is not None:
            allowed &= torch.tensor([p % 12 in self._classes for p in range(128)])
        if self.pitch_range is not None:
            allowed[: self.pitch_range[0]] = False
            allowed[self.pitch_range[1] + 1:] = False
        return allowed

    @property
    def pitch_classes(self) -> frozenset[int] | None:
        """The pitch classes (0 = C) the key allows; None without a key."""
        return self._classes

    @property
    def named_key(self) -> tuple[int, str] | None:
        """(tonic pitch class, "major" | "minor") of a key given by name; None for none or a set."""
        if self.key is None or self.key.startswith("{"):
            return None
        tonic, mode = self.key.split()
        return note_pitch_class(tonic), mode

    def __bool__(self) -> bool:
        return any(v is not None and v is not True for v in (
            self.key, self.pitch_range, self.velocity_range, self.dynamics, self.density, self.max_polyphony,
            self.pedal))

    def describe(self) -> str:
        """The controls in words, for a log line or a card: ``key D minor, dynamics p (41-56), ...``."""
        parts = []
        if self.key is not None:
            parts.append(f"key {self.key}" + (f" (soft, {self.key_strength:g} nats)" if self.key_strength else ""))
        if self.pitch_range is not None:
            parts.append(f"pitches {self.pitch_range[0]}-{self.pitch_range[1]}")
        if self.dynamics is not None:
            parts.append(f"dynamics {self.dynamics} ({DYNAMICS[self.dynamics][0]}-{DYNAMICS[self.dynamics][1]})")
        elif self.velocity_range is not None:
            parts.append(f"velocities {self.velocity_range[0]}-{self.velocity_range[1]}")
        if self.density is not None:
            parts.append(f"density {self.density:g} notes/s")
        if self.max_polyphony is not None:
            parts.append(f"at most {self.max_polyphony} keys down")
        if self.pedal is False:
            parts.append("no pedal")
        return ", ".join(parts) or "none"

    def processors(self, state: PerformanceState | None = None) -> LogitsProcessorList:
        """The processors of these controls, sharing ``state`` (a new one, counting from the end of the
        prompt, by default): for ``model.generate(logits_processor=...)`` beside the music's own."""
        state = state if state is not None else PerformanceState()
        out = LogitsProcessorList()
        pitches = self.pitches
        if pitches is not None:
            if self.key_strength is None or self._classes is None:
                out.append(PitchSetLogitsProcessor(pitches))
            else:  # a soft key inside a hard range: two processors
                if self.pitch_range is not None:
                    out.append(PitchSetLogitsProcessor(MusicControls(pitch_range=self.pitch_range).pitches))
                out.append(PitchSetLogitsProcessor(
                    torch.tensor([p % 12 in self._classes for p in range(128)]), strength=self.key_strength))
        if self.named_key is not None:
            tonic, mode = self.named_key
            out.append(KeyProfileLogitsProcessor(tonic, MINOR_PROFILE if mode == "minor" else MAJOR_PROFILE,
                                                 self._classes, state))
        if self.velocities is not None:
            out.append(VelocityRangeLogitsProcessor(*self.velocities, state))
        if self.max_polyphony is not None:
            out.append(MaxPolyphonyLogitsProcessor(self.max_polyphony, state))
        if self.pedal is False:
            out.append(NoPedalLogitsProcessor(state))
        if self.density is not None:
            out.append(NoteDensityLogitsProcessor(self.density, state))
        return out


CONTROL_NAMES = ("key", "key_strength", "pitch_range", "velocity_range", "dynamics", "density", "max_polyphony",
                 "pedal")

__all__ = [
    "CONTROL_NAMES", "DYNAMICS", "KeyProfileLogitsProcessor", "MAJOR_PROFILE", "MINOR_PROFILE", "find_key",
    "MaxPolyphonyLogitsProcessor", "MusicControls", "NoPedalLogitsProcessor", "NoteDensityLogitsProcessor",
    "PitchSetLogitsProcessor", "VelocityRangeLogitsProcessor", "note_pitch_class", "parse_key", "parse_pitch",
    "velocity_bins",
]
