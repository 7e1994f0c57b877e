"""The music's logits processors and stopping criteria, extension points of the standard ``generate()``:
the grammar, the guards (held notes, silence), the two rules of a piece composed to a length (the first
note at once, no end before the asked seconds), the time limit and the progress report. Each works with
a plain ``model.generate(logits_processor=[...], stopping_criteria=[...])``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from transformers import (
    LogitsProcessor,
    StoppingCriteria,
)

from .arguments import Progress, positive_number
from .codec import (
    EOS_ID,
    MAX_SHIFT,
    NOTE_OFF,
    NOTE_ON,
    PAD_ID,
    PIANO_KEYS,
    STEPS_PER_SECOND,
    SUSTAIN_OFF,
    SUSTAIN_ON,
    TIME_SHIFT,
    VELOCITY,
    VOCAB_SIZE,
    never_generated,
    seconds_to_steps,
    velocity_bin,
)
from .performance_state import RESTRIKE_STEPS, PerformanceState


# --------------------------------------------------------------------------- processors, criteria
class PerformanceGrammarLogitsProcessor(LogitsProcessor):
    """Forbids tokens that cannot be valid at this point of a performance.

    A NOTE_OFF of a silent pitch, a VELOCITY right after a VELOCITY, SUSTAIN_OFF while the pedal is
    up and SUSTAIN_ON while it is down (decoding ignores all of these; encoding never writes them),
    ``<pad>``, ``<bos>`` and ids past the 393-token vocabulary (padding rows of a wider embedding).
    (With a velocity control, a VELOCITY outside its range may be followed by one inside it.)
    Vectorised over the batch: four masked fills a step, the state advancing by one token.
    """

    def __init__(self, state: PerformanceState | None = None):
        self.state = state if state is not None else PerformanceState()
        self._never: torch.Tensor | None = None
        self._repeat: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        s = self.state.sync(input_ids)
        t = s._table
        if self._never is None or self._never.shape[0] != scores.shape[1] or self._never.device != scores.device:
            never = torch.zeros(scores.shape[1], dtype=torch.bool, device=scores.device)
            never[never_generated(scores.shape[1])] = True
            self._never = never
        ninf = -math.inf
        # In place: generate() hands the processors their own float32 copy of the logits.
        scores.masked_fill_(self._never, ninf)
        scores[:, NOTE_OFF:TIME_SHIFT].masked_fill_(s.silent, ninf)
        after_velocity = t["velocity"]
        ok = s.velocity_repeat_ok  # a velocity control: one outside its range may be replaced at once
        if ok is not None:
            if self._repeat is None or self._repeat[0] is not ok or self._repeat[1].device != scores.device:
                self._repeat = (ok, after_velocity & ~ok.to(scores.device))
            after_velocity = self._repeat[1]
        scores[:, VELOCITY:SUSTAIN_ON].masked_fill_(after_velocity[s.last.clamp(max=VOCAB_SIZE)][:, None], ninf)
        scores[:, SUSTAIN_ON:PAD_ID].masked_fill_(t["pedal_forbid"][s.pedal], ninf)
        return scores


class CanonicalOrderLogitsProcessor(LogitsProcessor):
    """Allows only what the encoder could have written, so that the model stays in the order it learned.

    The encoder writes one step's events in one order (SPEC rules 5-8): the NOTE_OFFs in ascending pitch,
    then SUSTAIN_OFF, then SUSTAIN_ON (at most one pedal change a step: touching intervals merge, empty ones
    vanish), then the onsets in ascending pitch, each after a VELOCITY only when the velocity changes (and
    the piece's first onset always after one); a note sounds at least one step, so no NOTE_OFF of a note
    struck in the same step, and a NOTE_ON never re-strikes a sounding key (the encoder ends it first); a
    VELOCITY is always followed by its NOTE_ON; a TIME_SHIFT shorter than 1 s is the last of a gap (the
    next event is not a shift); nothing trails the last event (no ``<eos>`` after a TIME_SHIFT). And no key
    outside ``keys`` (the piano's, 21-108; None: any pitch). The model can still sample anything else
    (``PerformanceGrammarLogitsProcessor`` only rules out what decoding ignores): a NOTE_ON and its NOTE_OFF
    in one instant, a blip no encoded piece holds.

    It yields where it would corner a row: when the processors before it (a guard, a control) leave only
    tokens it forbids, that row keeps their choice. Put it after them (``music_processors`` does).
    """

    def __init__(self, state: PerformanceState | None = None, keys: tuple[int, int] | None = PIANO_KEYS):
        self.state = state if state is not None else PerformanceState()
        if not self.state.in_order:  # the step's order is tracked from now on (the next sync rebuilds)
            self.state.in_order = True
            self.state.set_history(self.state.history)
        self.keys = keys
        self._tables: dict | None = None

    def _constant(self, device: torch.device) -> dict:
        if self._tables is None or self._tables["pitch"].device != device:
            pitch = torch.arange(128, device=device)
            outside = torch.zeros(128, dtype=torch.bool, device=device)
            if self.keys is not None:
                outside = (pitch < self.keys[0]) | (pitch > self.keys[1])
            self._tables = {"pitch": pitch, "outside": outside,
                            "velocity": torch.arange(VELOCITY, SUSTAIN_ON, device=device)}
        return self._tables

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        s = self.state.sync(input_ids)
        c = self._constant(scores.device)
        last = s.last
        after_velocity = ((last >= VELOCITY) & (last < SUSTAIN_ON))[:, None]  # (B, 1)
        after_shift = ((last >= TIME_SHIFT) & (last < VELOCITY))[:, None]
        short_shift = ((last >= TIME_SHIFT) & (last < TIME_SHIFT + MAX_SHIFT - 1))[:, None]
        late = (s.phase >= 2)[:, None]  # past the step's NOTE_OFFs and pedal change
        forbid = torch.zeros_like(scores, dtype=torch.bool)
        strike = ~((c["pitch"] <= s.on_top[:, None]) | s.sounding | c["outside"])  # (B, 128) the order's onsets
        # no velocity yet: the first onset comes after one
        forbid[:, NOTE_ON:NOTE_OFF] = ~strike | (s.velocity > SUSTAIN_ON)[:, None]
        forbid[:, NOTE_OFF:TIME_SHIFT] = late | (c["pitch"] <= s.off_top[:, None]) | after_velocity
        forbid[:, TIME_SHIFT:VELOCITY] = short_shift | after_velocity
        # A velocity changes, or is not written; and it comes only where its onset can follow: where the
        # processors before this one allow some onset the order allows (a full polyphony, a key or range
        # control may leave none), unless they hold the onsets back for a velocity (a velocity control
        # whose range the current velocity is outside).
        onset = (strike & ~torch.isneginf(scores[:, NOTE_ON:NOTE_OFF])).any(1)
        if s.velocity_repeat_ok is not None:
            onset |= s.velocity_repeat_ok.to(scores.device)[s.velocity.clamp(max=VOCAB_SIZE)]
        forbid[:, VELOCITY:SUSTAIN_ON] = (c["velocity"] == s.velocity[:, None]) | ~onset[:, None]
        forbid[:, SUSTAIN_ON:PAD_ID] = late | after_velocity
        forbid[:, EOS_ID] = (after_velocity | after_shift)[:, 0]
        masked = scores.masked_fill(forbid, -math.inf)
        cornered = torch.isneginf(masked).all(1) & ~torch.isneginf(scores).all(1)
        if bool(cornered.any()):
            masked[cornered] = scores[cornered]
        return masked


class _TimeGuard(LogitsProcessor):
    """A guard that watches how long something has lasted in music time: ``seconds`` (checked, named by
    ``argument``) and the shared state, with onset times tracked."""

    argument = "seconds"

    def __init__(self, seconds: float, state: PerformanceState | None = None):
        self.limit = seconds_to_steps(positive_number(self.argument, seconds))
        self.state = state if state is not None else PerformanceState()
        if not self.state.track_onsets:
            self.state.track_onsets = True
            self.state.set_history(self.state.history)  # the next sync rebuilds, onsets included


class MaxNoteLengthLogitsProcessor(_TimeGuard):
    """Ends notes held too long: once a sounding note has been on for ``seconds``, the next token must
    be a NOTE_OFF of such a note (one a step, until none is left). A guard against stuck notes, as
    a second layer behind the model: the longest note is then under ``seconds`` + 1 s (one TIME_SHIFT).
    """

    argument = "max_note_seconds"
    _pitches: torch.Tensor | None = None

    def _pitch(self, device: torch.device) -> torch.Tensor:
        if self._pitches is None or self._pitches.device != device:
            self._pitches = torch.arange(128, device=device)
        return self._pitches

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        s = self.state.sync(input_ids)
        held = s.sounding & (s.clock[:, None] - s.onset[:, :128] >= self.limit)  # (B, 128)
        if s.in_order:  # the canonical order: the step's NOTE_OFFs ascend; the rest wait for the next step
            held &= (self._pitch(scores.device) > s.off_top[:, None]) & (s.phase <= 1)[:, None]
        rows = held.any(1)
        if bool(rows.any()):
            allowed = torch.zeros_like(scores, dtype=torch.bool)
            allowed[:, NOTE_OFF:TIME_SHIFT] = held
            scores.masked_fill_(rows[:, None] & ~allowed, -math.inf)
        return scores


class MaxSilenceLogitsProcessor(_TimeGuard):
    """No silence longer than ``seconds``: once no key is down and ``seconds`` have passed since the last
    onset (or since the piece began, if none yet), a TIME_SHIFT may not come next, so the model plays
    (or ends the piece, where ends are allowed). Against a degenerate sample: a seed of base spent a
    30-second piece on 30 one-second shifts and no note.
    """

    argument = "max_silence_seconds"

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        s = self.state.sync(input_ids)
        last_onset = s.onset[:, :128].amax(1)  # 0 before any note: the piece's start
        quiet = ~s.sounding.any(1) & (s.clock - last_onset >= self.limit)
        if bool(quiet.any()):
            scores[:, TIME_SHIFT:VELOCITY].masked_fill_(quiet[:, None], -math.inf)
        return scores


# Re-strikes in a row that cost nothing: a repeated note or a trill's second stroke, as real playing has them
# (GiantMIDI and POP909 test windows: 14.8 % of onsets re-strike their pitch within 0.3 s, 6.0 % are the second
# such in a row or later; benchmarks/RESULTS.md, "Hammering").
RESTRIKE_FREE = 1


class RestrikeLogitsProcessor(LogitsProcessor):
    """Against hammering: an onset that strikes a pitch again within 0.3 s of its last onset (``RESTRIKE_STEPS``)
    re-strikes it; the first re-strike in a row is free (``RESTRIKE_FREE``), the next loses ``penalty`` nats, the
    one after ``2 * penalty``, and so on; a pitch left alone for more than 0.3 s starts afresh. A repeated note, a
    trill or a short tremolo stays likely; the loops the models fall into (a chord re-struck every 0.2 s for 20 s)
    grow less likely with every stroke, so that the model moves on. A soft penalty, not a mask.
    """

    argument = "restrike_penalty"

    def __init__(self, penalty: float, state: PerformanceState | None = None):
        self.penalty = positive_number(self.argument, penalty, unit=" (nats)")
        self.state = state if state is not None else PerformanceState()
        if not (self.state.track_onsets and self.state.track_restrikes):
            self.state.track_onsets = self.state.track_restrikes = True
            self.state.set_history(self.state.history)  # the next sync rebuilds, re-strikes included

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        s = self.state.sync(input_ids)
        again = s.clock[:, None] - s.struck[:, :128] <= RESTRIKE_STEPS  # (B, 128)
        counted = (s.run[:, :128] + 1 - RESTRIKE_FREE).clamp(min=0)
        scores[:, NOTE_ON:NOTE_OFF] -= self.penalty * (counted * again).to(scores.dtype)
        return scores


def _land_on(scores: torch.Tensor, rows: torch.Tensor, left: torch.Tensor, steps: torch.Tensor) -> None:
    """In ``rows``, the probability of every TIME_SHIFT of ``left`` steps or more goes to the one of ``left``."""
    if bool(rows.any()):
        shifts = scores[:, TIME_SHIFT:VELOCITY]
        reach = steps >= left[:, None]
        folded = torch.logsumexp(shifts.masked_fill(~reach, -math.inf), 1)
        clipped = shifts.masked_fill(reach, -math.inf)
        clipped.scatter_(1, (left - 1).clamp(0, MAX_SHIFT - 1)[:, None], folded[:, None])
        scores[:, TIME_SHIFT:VELOCITY] = torch.where(rows[:, None], clipped, shifts)


# A piece from scratch: its second onset comes at most this many steps after its first (real GiantMIDI and POP909
# test windows: 0.19 s in the median, 0.585 s at the 95th percentile; the listener's "lone opening" check).
OPENING_STEPS = 60


class SoundAtOnceLogitsProcessor(LogitsProcessor):
    """The music starts at once: until a NOTE_ON has come (a prompt's count), neither a TIME_SHIFT nor ``<eos>``
    may come next, so a piece composed from scratch opens with its first note (a VELOCITY or pedal event may
    come before it, in the same instant); and its second onset follows within 0.6 s (``OPENING_STEPS``): a longer
    TIME_SHIFT's probability goes to the one that lands there, and there time waits for an onset. Two thirds of
    GiantMIDI's recordings begin with more than a second of silence: without the first rule a model trained on
    them often does too; without the second it may hold one note alone for seconds before the music comes.
    A prompt with notes has opened already: only the first rule's count of its notes applies.
    """

    def __init__(self, state: PerformanceState | None = None):
        self.state = state if state is not None else PerformanceState()
        self._steps: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        s = self.state.sync(input_ids)
        waiting = ~s.noted
        if bool(waiting.any()):
            scores[:, TIME_SHIFT:VELOCITY].masked_fill_(waiting[:, None], -math.inf)
            scores[:, EOS_ID].masked_fill_(waiting, -math.inf)
        alone = (s.onsets == 1) & (s.prompt_onsets == 0)  # a piece from scratch, one note struck (at step 0)
        if bool(alone.any()):
            if self._steps is None or self._steps.device != scores.device:
                self._steps = torch.arange(1, MAX_SHIFT + 1, device=scores.device)
            left = OPENING_STEPS - s.elapsed
            _land_on(scores, alone & (left > 0), left, self._steps)
            late = alone & (left <= 0)
            scores[:, TIME_SHIFT:VELOCITY].masked_fill_(late[:, None], -math.inf)
            scores[:, EOS_ID].masked_fill_(late, -math.inf)
        return scores


class MusicTimeLimitLogitsProcessor(LogitsProcessor):
    """Keeps every sequence within ``seconds`` of music (counted from the state's ``start``).

    A TIME_SHIFT that would pass the limit is not forbidden but *clipped*: its probability goes to
    the shift that lands exactly on the limit, as if the piece were cut there. (Forbidding long shifts
    would instead push the model to cram events into its last second.) ``MusicTimeStoppingCriteria``
    then ends the sequence (in a run a draft model proposed, where tokens are accepted several at a time,
    a row past its limit may only end: ``<eos>``). Until some sequence is within one second of its limit, only one thing
    changes: ``<eos>`` is forbidden, so that a piece lasts as long as asked (``allow_early_end=False``,
    the default); with ``allow_early_end=True`` only while no music time has passed, so that asking for
    seconds never returns an empty piece (a model's first event can be ``<eos>``; once was in 20 seeds
    of base).
    """

    def __init__(self, seconds: float, state: PerformanceState | None = None, allow_early_end: bool = False):
        self.limit = seconds_to_steps(seconds)
        self.state = state if state is not None else PerformanceState()
        self.allow_early_end = bool(allow_early_end)
        self._k: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        s = self.state.sync(input_ids)
        if self.allow_early_end:
            scores[:, EOS_ID].masked_fill_(s.elapsed == 0, -math.inf)
        else:
            scores[:, EOS_ID] = -math.inf
        if self.limit - int(s.elapsed.max()) > MAX_SHIFT:  # the common case: no shift can reach it
            return scores
        if self._k is None or self._k.device != scores.device:
            self._k = torch.arange(1, MAX_SHIFT + 1, device=scores.device)  # steps of each shift id
        left = self.limit - s.elapsed  # (B,)
        shifts = scores[:, TIME_SHIFT:VELOCITY]  # (B, 100) view
        reach = self._k >= left[:, None]  # shifts that reach or pass the limit
        folded = torch.logsumexp(shifts.masked_fill(~reach, -math.inf), 1)  # (B,)
        shifts.masked_fill_(reach, -math.inf)
        exact = (left >= 1) & (left <= MAX_SHIFT)
        col = (left - 1).clamp(0, MAX_SHIFT - 1)[:, None]
        shifts.scatter_(1, col, torch.where(exact[:, None], folded[:, None], shifts.gather(1, col)))
        done = left <= 0  # only inside a drafted run (assisted generation): the piece is over, end it here
        if bool(done.any()):
            scores.masked_fill_(done[:, None], -math.inf)
            scores[:, EOS_ID].masked_fill_(done, 0.0)
        return scores


class MusicTimeStoppingCriteria(StoppingCriteria):
    """Done, per sequence, once its music time reaches ``seconds`` (``generate()`` pads it after)."""

    def __init__(self, seconds: float, state: PerformanceState | None = None):
        self.limit = seconds_to_steps(seconds)
        self.state = state if state is not None else PerformanceState(lag=1)

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        return self.state.sync(input_ids).elapsed >= self.limit


class MusicProgressCriteria(StoppingCriteria):
    """Calls ``progress(seconds_done, seconds_total)`` as music time advances; stops every sequence
    once ``stop_event`` (anything with ``is_set()``, e.g. a ``threading.Event``) is set.

    ``seconds_done`` is the slowest unfinished sequence's time (so it never goes back);
    ``seconds_total`` is None when no time limit was given. An exception raised by ``progress``
    propagates and aborts the call; ``stop_event`` is the way to stop and keep the music so far.
    """

    def __init__(self, seconds: float | None = None, progress: Progress | None = None, stop_event=None,
                 state: PerformanceState | None = None):
        self.limit = seconds_to_steps(seconds) if seconds is not None else None
        self.progress, self.stop_event = progress, stop_event
        self.state = state if state is not None else PerformanceState(lag=1)
        self.reported = -1

    def report(self, done_steps: int) -> None:
        if self.progress is not None and done_steps != self.reported:
            self.reported = done_steps
            total = self.limit / STEPS_PER_SECOND if self.limit is not None else None
            self.progress(done_steps / STEPS_PER_SECOND, total)

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        if self.progress is not None:
            s = self.state.sync(input_ids)
            if self.limit is None:
                done = s.elapsed.max()
            else:
                done = torch.where(s.ended, self.limit, s.elapsed.clamp(max=self.limit)).min()
            self.report(int(done))
        stop = self.stop_event is not None and self.stop_event.is_set()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


# --------------------------------------------------------------------------- given notes
SOON_STEPS = 10  # the model strikes no pitch in the 100 ms before a given note of that pitch
NEAR_STEPS = (25, 50)  # a given note is near from 250 ms before it sounds until 500 ms after it ends
CLASH_INTERVALS = (1, 6, 11)  # pitch-class intervals that rub against a given note: semitones and the tritone


@dataclass(frozen=True, eq=False)
class GivenNotes:
    """Notes a composition must hold as given, in 10-ms steps counted from where composing starts: ``start``
    (< 0 for a note struck before, still sounding), ``end`` (> ``start``), ``pitch`` (0..127) and ``velocity``
    (1..127; the events carry its bin, SPEC rule 6). One pitch's notes do not overlap (the writing plans check).
    ``harmony``: nats added to the model's onsets of the pitch classes of given notes near in time
    (``NEAR_STEPS``): an accompaniment leans towards the melody's harmony (0: off). ``clash``: nats taken from
    the model's onsets a semitone or a tritone (in pitch class) from a given note sounding then, or struck
    within ``SOON_STEPS``: an accompaniment does not rub against the tune (0: off)."""

    start: np.ndarray
    end: np.ndarray
    pitch: np.ndarray
    velocity: np.ndarray
    harmony: float = 0.0
    clash: float = 0.0

    def __post_init__(self):
        for name in ("start", "end", "pitch", "velocity"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.int64).reshape(-1))
        object.__setattr__(self, "_tables", {})

    def __len__(self) -> int:
        return len(self.pitch)

    @property
    def last_step(self) -> int:
        """The step of the last given event (0 when there is none)."""
        return int(max(self.end.max(), self.start.max(), 0)) if len(self) else 0

    def tables(self, device: torch.device) -> dict:
        """Per step t (0 .. the horizon, where later times are clamped): ``on`` (pitches struck at t), ``vel``
        (their VELOCITY ids), ``off`` (given notes ending at t), ``hold`` (given notes sounding through t),
        ``soon`` (pitches a given note strikes within ``SOON_STEPS`` after t), ``near`` (the 128 pitches whose
        pitch class a given note near t holds, ``NEAR_STEPS``), ``rub`` (the 128 pitches a semitone or a
        tritone in pitch class from a given note sounding at t or struck within ``SOON_STEPS``), ``next`` (the
        next step after t with a given event)."""
        if device not in self._tables:
            horizon = self.last_step + 1 + NEAR_STEPS[1]  # its last row, where time is clamped, holds nothing
            on, off, hold, soon = (np.zeros((horizon + 1, 128), bool) for _ in range(4))
            near, rub = np.zeros((horizon + 1, 12), bool), np.zeros((horizon + 1, 12), bool)
            vel = np.zeros((horizon + 1, 128), np.int64)
            bins = VELOCITY - 1 + velocity_bin(self.velocity)
            for a, b, p, v in zip(self.start, self.end, self.pitch, bins):
                if a >= 0:
                    on[a, p], vel[a, p] = True, v
                    soon[max(0, a - SOON_STEPS):a, p] = True
                if b >= 0:
                    off[b, p] = True
                hold[max(a + 1, 0):max(b, 0), p] = True
                near[max(a - NEAR_STEPS[0], 0):max(b + NEAR_STEPS[1], 0), p % 12] = True
                rub[max(a - SOON_STEPS, 0):max(b, 0), [(p + i) % 12 for i in CLASH_INTERVALS]] = True
            steps = np.arange(horizon + 1)
            first_at = np.where(on.any(1) | off.any(1), steps, np.iinfo(np.int64).max // 2)
            at_or_after = np.minimum.accumulate(first_at[::-1])[::-1]
            after = np.concatenate((at_or_after[1:], [np.iinfo(np.int64).max // 2]))
            self._tables[device] = {
                "on": torch.from_numpy(on).to(device), "vel": torch.from_numpy(vel).to(device),
                "off": torch.from_numpy(off).to(device), "hold": torch.from_numpy(hold).to(device),
                "soon": torch.from_numpy(soon).to(device), "next": torch.from_numpy(after).to(device),
                "near": torch.from_numpy(np.tile(near, (1, 11))[:, :128]).to(device),
                "rub": torch.from_numpy(np.tile(rub, (1, 11))[:, :128]).to(device),
                "pitch": torch.arange(128, device=device),
                "velocity": torch.arange(VELOCITY, SUSTAIN_ON, device=device),
                "shift": torch.arange(1, MAX_SHIFT + 1, device=device),
            }
        return self._tables[device]


class GivenNotesLogitsProcessor(LogitsProcessor):
    """Every given note (``GivenNotes``) sounds as given: its NOTE_ON (after its VELOCITY when the velocity
    changes) at its step and its NOTE_OFF at its end, while the model plays around it.

    Within a step that holds given events the model may add its own, in the encoder's order (SPEC rule 7):
    NOTE_OFFs below the lowest pending given NOTE_OFF, then (the pedal and) onsets below the lowest pending
    given onset; the step does not end (no TIME_SHIFT, no ``<eos>``) before the given events are written:
    the probability of what the step cannot hold yet (ending the step, an onset above a pending one) goes to
    the next given event, so the model is given its note where it would move on. A note of the model's
    sounding on a pitch a given note strikes is ended first. Between given events, a TIME_SHIFT never jumps
    past the next one (a longer shift's probability goes to the shift that lands on it, as
    ``MusicTimeLimitLogitsProcessor`` clips at the limit); the model never ends or re-strikes a sounding given
    note, nor strikes a pitch a given note strikes within the next ``SOON_STEPS``.

    ``offset``: the steps composed before the state's start (a search's later chunk). Put it last (after
    the controls and ``CanonicalOrderLogitsProcessor``): given notes pass every control. Where the processors
    before it leave a row nothing it allows, the row takes the next given event (or the shift towards it).
    """

    def __init__(self, given: GivenNotes, state: PerformanceState | None = None, offset: int = 0):
        self.given, self.offset = given, int(offset)
        self.state = state if state is not None else PerformanceState()
        if not self.state.in_order:  # on_top/off_top/phase: what the current step has written
            self.state.in_order = True
            self.state.set_history(self.state.history)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        s = self.state.sync(input_ids)
        c = self.given.tables(scores.device)
        horizon = c["next"].shape[0] - 1
        t = (s.elapsed + self.offset).clamp(0, horizon)
        on, off, hold, soon = c["on"][t], c["off"][t], c["hold"][t], c["soon"][t]
        pitch, none = c["pitch"][None], 128
        struck = pitch <= s.on_top[:, None]  # the step's onsets come in ascending pitch
        pending_on = on & ~struck
        pending_off = (off | pending_on) & s.sounding & (s.phase <= 1)[:, None]
        low_off = torch.where(pending_off, pitch, none).amin(1)
        low_on = torch.where(pending_on, pitch, none).amin(1)
        rows_off = low_off < none
        rows_on = (low_on < none) & ~rows_off
        idle = ~(rows_off | rows_on)
        own_on = ~(hold | soon | off | on)  # the model's own onsets
        own_off = ~(hold | (on & struck))  # never end a given note
        velocity = c["vel"][t].gather(1, low_on.clamp(max=127)[:, None])[:, 0]  # the lowest pending onset's

        # time: an idle row's shift lands on the next given event at the latest
        left = c["next"][t] - t
        _land_on(scores, idle & (left <= MAX_SHIFT), left, c["shift"])

        # A step with given events pending keeps the encoder's order for the model's own events too (NOTE_OFFs
        # ascending, the pedal, onsets ascending, no re-strike), so it ends: the given ones come within it.
        busy = ~idle
        order = busy[:, None]
        late = (s.phase >= 2)[:, None]
        if self.given.harmony:  # the model's own onsets lean towards the pitch classes of given notes near now
            scores[:, NOTE_ON:NOTE_OFF] += self.given.harmony * c["near"][t].float()
        if self.given.clash:  # ... and away from a semitone or a tritone against a given note sounding now
            scores[:, NOTE_ON:NOTE_OFF] -= self.given.clash * c["rub"][t].float()
        allowed = torch.ones_like(scores, dtype=torch.bool)
        allowed[:, NOTE_ON:NOTE_OFF] = own_on & ~(order & (~(pitch > s.on_top[:, None]) | s.sounding)) & ~(
            rows_on[:, None] & (pitch >= low_on[:, None])) & ~rows_off[:, None]
        given_now = rows_on & (s.velocity == velocity)  # the lowest pending onset, at its velocity
        allowed[:, NOTE_ON:NOTE_OFF] |= given_now[:, None] & (pitch == low_on[:, None])
        allowed[:, NOTE_OFF:TIME_SHIFT] = own_off & ~(order & (late | ~(pitch > s.off_top[:, None]))) & ~(
            rows_off[:, None] & (pitch > low_off[:, None]))
        allowed[:, TIME_SHIFT:VELOCITY] = idle[:, None]
        allowed[:, VELOCITY:SUSTAIN_ON] = ~order | (rows_on[:, None] & (c["velocity"] == velocity[:, None])
                                                    & (s.velocity != velocity)[:, None])
        allowed[:, SUSTAIN_ON] = idle | (rows_on & (s.phase < 3))
        allowed[:, SUSTAIN_OFF] = idle | (rows_on & (s.phase < 2))
        allowed[:, EOS_ID] = idle & (s.elapsed + self.offset > self.given.last_step)
        must = torch.where(rows_off, NOTE_OFF + low_off, torch.where(
            rows_on, torch.where(s.velocity == velocity, NOTE_ON + low_on, velocity),
            TIME_SHIFT - 1 + left.clamp(1, MAX_SHIFT)))  # the next given event (or the shift towards it)
        masked = scores.masked_fill(~allowed, -math.inf)
        if bool(busy.any()):
            # What the model would play that the step cannot hold yet (ending the step, an onset above a given
            # one) goes to the next given event: the model is given its note where it would move on, rather
            # than made to pile up its own notes until it happens to pick the given one.
            held = torch.logsumexp(scores.masked_fill(allowed, -math.inf), 1)
            take = busy & torch.isfinite(held)
            rows = torch.nonzero(take)[:, 0]
            if len(rows):
                masked[rows, must[rows]] = torch.logaddexp(masked[rows, must[rows]], held[rows])
        cornered = torch.isneginf(masked).all(1)
        if bool(cornered.any()):  # the next given event (or the shift towards it) is always allowed
            masked[cornered, must[cornered]] = 0.0
        return masked


__all__ = [
    "CanonicalOrderLogitsProcessor", "GivenNotes", "GivenNotesLogitsProcessor", "MaxNoteLengthLogitsProcessor",
    "MaxSilenceLogitsProcessor",
    "MusicProgressCriteria", "MusicTimeLimitLogitsProcessor", "MusicTimeStoppingCriteria",
    "PerformanceGrammarLogitsProcessor", "RestrikeLogitsProcessor", "SoundAtOnceLogitsProcessor",
]
