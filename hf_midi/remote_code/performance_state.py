"""Which notes sound, the pedal, the music time: the state of a performance as ids come, kept in step
with ``generate()`` (``PerformanceState``, shared by the processors, the criteria and the sliding
window). Over a whole row of ids at once, the codec answers the same questions (``ids_to_notes``,
``keys_down``)."""

from __future__ import annotations

import numpy as np
import torch

from .codec import (
    EOS_ID,
    NOTE_OFF,
    NOTE_ON,
    PAD_ID,
    SUSTAIN_OFF,
    SUSTAIN_ON,
    TIME_SHIFT,
    VELOCITY,
    VOCAB_SIZE,
    ids_to_notes,
    shift_steps,
)

# --------------------------------------------------------------------------- state
# An onset within this many 10-ms steps of the last onset of its pitch re-strikes it (the listener's
# degenerate-mode check counts re-strikes within the same 0.3 s: hf_midi.evaluation.listener.RESTRIKE_SECONDS).
RESTRIKE_STEPS = 30
_TABLES: dict[torch.device, dict[str, torch.Tensor]] = {}


def _tables(device: torch.device) -> dict[str, torch.Tensor]:
    """Per-id lookup tables, so that one step costs a few gathers instead of a chain of compares.
    Row ``VOCAB_SIZE`` stands for every id past the vocabulary (no effect on the state)."""
    if device not in _TABLES:
        ids = torch.arange(VOCAB_SIZE + 1)
        is_note = ids < TIME_SHIFT
        _TABLES[device] = {k: v.to(device) for k, v in {
            "steps": torch.from_numpy(shift_steps(ids.numpy())),
            "column": torch.where(is_note, ids % 128, 128),  # column 128 is a dump for other ids
            "silent": ~(ids < NOTE_OFF),  # after a NOTE_ON its pitch sounds; after a NOTE_OFF not
            "pedal": torch.where(ids == SUSTAIN_ON, 1, torch.where(ids == SUSTAIN_OFF, 0, -1)),
            "velocity": (ids >= VELOCITY) & (ids < SUSTAIN_ON),
            # [forbid SUSTAIN_ON, forbid SUSTAIN_OFF] for a pedal that is up (0) / down (1)
            "pedal_forbid": torch.tensor([[False, True], [True, False]]),
            # Where an id stands in the encoder's order within one step (SPEC rule 7): NOTE_OFFs (1), then
            # SUSTAIN_OFF (2), SUSTAIN_ON (3), then the onsets with their velocities (4); a TIME_SHIFT
            # begins a new step (-1); the special ids change nothing (0).
            "phase": torch.where(ids < NOTE_OFF, 4, torch.where(ids < TIME_SHIFT, 1, torch.where(
                ids < VELOCITY, -1, torch.where(ids < SUSTAIN_ON, 4, torch.where(
                    ids == SUSTAIN_OFF, 2, torch.where(ids == SUSTAIN_ON, 3, 0)))))),
            "on_pitch": torch.where(ids < NOTE_OFF, ids, -1),
            "off_pitch": torch.where((ids >= NOTE_OFF) & (ids < TIME_SHIFT), ids - NOTE_OFF, -1),
        }.items()}
    return _TABLES[device]


def _restrike_runs(ids: torch.Tensor, clock: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``struck`` and ``run`` (``PerformanceState``) from whole rows of ids and the clock at each position."""
    rows = ids.shape[0]
    struck = np.full((rows, 129), -RESTRIKE_STEPS - 1, dtype=np.int64)
    run = np.zeros((rows, 129), dtype=np.int64)
    ids_np, clock_np = ids.cpu().numpy(), clock.cpu().numpy()
    for r in range(rows):
        at = np.flatnonzero(ids_np[r] < NOTE_OFF)
        for pitch, now in zip(ids_np[r, at].tolist(), clock_np[r, at].tolist()):
            run[r, pitch] = run[r, pitch] + 1 if now - struck[r, pitch] <= RESTRIKE_STEPS else 0
            struck[r, pitch] = now
    return torch.from_numpy(struck).to(ids.device), torch.from_numpy(run).to(ids.device)


def step_counts(ids: torch.Tensor) -> torch.Tensor:
    """The 10 ms steps each id advances the clock (the codec's ``shift_steps``, as a table gather)."""
    return _tables(ids.device)["steps"][ids.clamp(0, VOCAB_SIZE)]


class PerformanceState:
    """Per-sequence state of a batch of event ids, kept in step with ``generate()``.

    ``sync(input_ids)`` costs a few tensor ops when one token was appended since the last call (the
    case inside ``generate()``) and rebuilds from all ids otherwise (a new call, a new window).

    Args:
        start: position in the whole sequence (``history`` + ``input_ids``) from which music time is
            counted; None counts from the end of each ``generate()`` call's prompt (the prompt's
            own time is not counted).
        lag: tokens already generated when a ``generate()`` call first syncs: 0 for logits
            processors (called before sampling), 1 for stopping criteria (called after); it tells
            where the prompt ends when ``start`` is None.

    Attributes (tensors on the ids' device): ``elapsed`` (B,) steps since ``start``; ``sounding``
    (B, 128) pitches on (``silent`` is its negation); ``pedal`` (B,) 1 while the sustain is down;
    ``last`` (B,) the last id; ``ended`` (B,) the last id is ``<eos>`` or ``<pad>``; ``noted`` (B,) a
    NOTE_ON has come (history included); ``velocity`` (B,) the id of the last VELOCITY (history
    included; ``VOCAB_SIZE + 1`` before any: the decoder's default applies); ``onsets`` (B,) NOTE_ONs
    since ``start``, ``prompt_onsets`` (B,) before it; with ``track_pitch_classes`` (set by
    ``KeyProfileLogitsProcessor``) ``pitch_time``
    (B, 12) steps each pitch class has sounded (keys down, summed over its pitches) since ``start``; with
    ``track_onsets`` (set by ``MaxNoteLengthLogitsProcessor``) also ``clock`` (B,) steps since the
    first id and ``onset`` (B, 129) the clock at each pitch's last NOTE_ON; with ``track_restrikes`` (set by
    ``RestrikeLogitsProcessor``, with ``track_onsets``) ``struck`` (B, 129) the clock at each pitch's last
    NOTE_ON (``-RESTRIKE_STEPS - 1`` before any) and ``run`` (B, 129) how many times in a row each pitch was
    struck again at most ``RESTRIKE_STEPS`` after its previous onset (0 after an onset that re-struck
    nothing). With ``in_order`` (set by
    ``CanonicalOrderLogitsProcessor``), within the current step (since the last TIME_SHIFT; the encoder's
    order, SPEC rule 7): ``phase`` (B,) how far the step has come (0 nothing yet, 1 NOTE_OFFs, 2
    SUSTAIN_OFF, 3 SUSTAIN_ON, 4 onsets), ``off_top`` and ``on_top`` (B,) the highest pitch ended and
    struck in it (-1: none).
    """

    def __init__(self, start: int | None = None, lag: int = 0):
        self.start, self.lag = start, lag
        self.track_onsets = False  # clock/onset cost a step's work: kept only for the note guard
        self.track_pitch_classes = False  # pitch_time: kept only for the key's profile
        self.track_restrikes = False  # struck/run: kept only for the re-strike penalty
        # set by CanonicalOrderLogitsProcessor: phase/on_top/off_top are kept (a step's work, only then) and
        # the note guard keeps the encoder's order
        self.in_order = False
        self.history: torch.Tensor | None = None  # (B, H) ids before a sliding window's context
        # (VOCAB_SIZE + 1,) bool, set by VelocityRangeLogitsProcessor: the VELOCITY ids after which
        # another VELOCITY may come (those outside its range); None: after none (the grammar's rule)
        self.velocity_repeat_ok: torch.Tensor | None = None
        self._length = self._rows = -1
        self._seen: torch.Tensor | None = None  # the ids of the last sync

    def set_history(self, history: torch.Tensor | None) -> None:
        self.history = history
        self._rows = -1  # next sync rebuilds

    def sync(self, input_ids: torch.LongTensor) -> PerformanceState:
        rows, length = input_ids.shape
        seen = self._seen
        if rows == self._rows and seen is not None:
            if input_ids is seen:
                return self
            # The same ids, or one more token after them: checked against the ids last seen, whole (a
            # few microseconds), since assisted generation calls the processors on drafts that
            # the target then rejects: another sequence of the same length.
            if length == self._length and torch.equal(input_ids, seen):
                self._seen = input_ids
                return self
            if length == self._length + 1 and torch.equal(input_ids[:, :-1], seen):
                self._length, self._seen = length, input_ids
                self._advance(input_ids[:, -1], counted=self._offset + length - 1 >= self._start)
                return self
        self._rebuild(input_ids)
        return self

    @property
    def silent(self) -> torch.Tensor:
        return self._silent[:, :128]

    @property
    def sounding(self) -> torch.Tensor:
        return ~self.silent

    @property
    def ended(self) -> torch.Tensor:
        return (self.last == EOS_ID) | (self.last == PAD_ID)

    def _rebuild(self, input_ids: torch.LongTensor) -> None:
        ids = input_ids if self.history is None else torch.cat([self.history.to(input_ids.device), input_ids], 1)
        rows, length = ids.shape
        start = length - self.lag if self.start is None else self.start
        self._start, self._offset = start, length - input_ids.shape[1]
        self._table = _tables(ids.device)
        pos = torch.arange(length, device=ids.device).expand(rows, length)
        steps = step_counts(ids)
        self.elapsed = torch.where(pos >= start, steps, 0).sum(1)
        # Last NOTE_ON and NOTE_OFF position of each pitch; column 128 collects every other id.
        on_col = torch.where(ids < NOTE_OFF, ids - NOTE_ON, 128)
        off_col = torch.where((ids >= NOTE_OFF) & (ids < TIME_SHIFT), ids - NOTE_OFF, 128)
        empty = torch.full((rows, 129), -1, dtype=torch.long, device=ids.device)
        last_on = empty.scatter_reduce(1, on_col, pos, "amax")
        last_off = empty.scatter_reduce(1, off_col, pos, "amax")
        self._silent = last_on <= last_off  # (B, 129)
        # Music time of every position over the whole sequence (history included), and of each
        # pitch's last NOTE_ON: how long a sounding note has been held (MaxNoteLengthLogitsProcessor).
        if self.track_onsets:
            clock = steps.cumsum(1)
            self.onset = torch.zeros(rows, 129, dtype=torch.long, device=ids.device).scatter_reduce(
                1, on_col, clock, "amax")
            self.clock = clock[:, -1].clone()
            if self.track_restrikes:
                self.struck, self.run = _restrike_runs(ids, clock)
        pedal_on = torch.where(ids == SUSTAIN_ON, pos, -1).amax(1)
        pedal_off = torch.where(ids == SUSTAIN_OFF, pos, -1).amax(1)
        self.pedal = (pedal_on > pedal_off).long()
        self.noted = (ids < NOTE_OFF).any(1)
        is_velocity = (ids >= VELOCITY) & (ids < SUSTAIN_ON)
        last_velocity = torch.where(is_velocity, pos, -1).amax(1)
        self.velocity = torch.where(last_velocity >= 0, ids.gather(1, last_velocity.clamp(min=0)[:, None])[:, 0],
                                    VOCAB_SIZE + 1)
        counted_on = (ids < NOTE_OFF) & (pos >= start)
        self.onsets = counted_on.sum(1)
        self.prompt_onsets = ((ids < NOTE_OFF) & (pos < start)).sum(1)
        if self.track_pitch_classes:  # keys down x steps per pitch class, from the counted part only
            self._pc_matrix = (torch.arange(128, device=ids.device)[:, None] % 12
                               == torch.arange(12, device=ids.device)).float()  # (128, 12)
            self.pitch_time = torch.zeros(rows, 12, dtype=torch.float32, device=ids.device)
            for r in range(rows):
                n = ids_to_notes(ids[r, start:].cpu().numpy())
                if len(n["pitch"]):
                    self.pitch_time[r] = torch.from_numpy(np.bincount(
                        n["pitch"] % 12, weights=(n["end"] - n["start"]), minlength=12)).float()
        if self.in_order:  # the current step: the ids after each row's last TIME_SHIFT
            is_shift = (ids >= TIME_SHIFT) & (ids < VELOCITY)
            after = pos > torch.where(is_shift, pos, -1).amax(1, keepdim=True)
            table, col = self._table, ids.clamp(0, VOCAB_SIZE)
            self.phase = torch.where(after, table["phase"][col].clamp(min=0), 0).amax(1)
            self.on_top = torch.where(after, table["on_pitch"][col], -1).amax(1)
            self.off_top = torch.where(after, table["off_pitch"][col], -1).amax(1)
        self.last = ids[:, -1].clone()
        self._row_index = torch.arange(rows, device=ids.device)
        self._rows, self._length, self._seen = rows, input_ids.shape[1], input_ids

    def _advance(self, token: torch.Tensor, counted: bool) -> None:  # token: (B,)
        t = self._table
        i = token.clamp(max=VOCAB_SIZE)
        steps = t["steps"][i]
        if counted:
            self.elapsed += steps
        col = t["column"][i]
        if self.track_onsets:
            self.clock += steps
            self.onset[self._row_index, col] = torch.where(token < NOTE_OFF, self.clock,
                                                           self.onset[self._row_index, col])
            if self.track_restrikes:
                rows, onset = self._row_index, token < NOTE_OFF
                before, run = self.struck[rows, col], self.run[rows, col]
                again = self.clock - before <= RESTRIKE_STEPS
                self.run[rows, col] = torch.where(onset, torch.where(again, run + 1, 0), run)
                self.struck[rows, col] = torch.where(onset, self.clock, before)
        self._silent[self._row_index, col] = t["silent"][i]
        pedal = t["pedal"][i]
        self.pedal = torch.where(pedal < 0, self.pedal, pedal)
        onset = token < NOTE_OFF
        self.noted |= onset
        if counted:
            self.onsets += onset
            if self.track_pitch_classes:  # the keys down before this token sound for its steps
                self.pitch_time += steps[:, None] * ((~self._silent[:, :128]).float() @ self._pc_matrix)
        self.velocity = torch.where(t["velocity"][i], token, self.velocity)
        if self.in_order:
            phase = t["phase"][i]
            new_step = phase < 0
            self.phase = torch.where(new_step, 0, torch.maximum(self.phase, phase))
            self.on_top = torch.where(new_step, -1, torch.maximum(self.on_top, t["on_pitch"][i]))
            self.off_top = torch.where(new_step, -1, torch.maximum(self.off_top, t["off_pitch"][i]))
        self.last = token


__all__ = [
    "RESTRIKE_STEPS", "PerformanceState", "step_counts",
]
