"""Generation: the standard ``model.generate()`` plus what music needs, as its extension points.

``generate()`` does the sampling (``<bos>`` start, ``<eos>`` stop, temperature / top-k / top-p from
the generation config); this module only adds:

- ``PerformanceState``: per-sequence state of a batch (music time, sounding pitches, pedal, last
  token), updated one token a step and shared by the objects below;
- ``PerformanceGrammarLogitsProcessor``: forbids what cannot be valid (a NOTE_OFF for a silent pitch,
  two VELOCITY tokens in a row, a SUSTAIN_OFF while up / SUSTAIN_ON while down, ``<pad>``, ``<bos>``
  and the padding rows past the vocabulary);
- ``MusicTimeLimitLogitsProcessor`` + ``MusicTimeStoppingCriteria``: ask for seconds, not tokens;
  every sequence of a batch ends at exactly its limit or earlier (at ``<eos>``);
- ``MusicProgressCriteria``: reports music seconds to a callback; a ``stop_event`` ends generation
  cleanly (what was made so far is kept);
- ``MusicStreamer``: a transformers streamer that decodes the ids as they come into ``MusicChunk``s
  (notes, onsets, pedal), for playing while composing;
- ``generate_music``: the sliding window, for pieces longer than the model's context.

It imports only torch, transformers and the codec (relatively), so it travels with the pipeline
into a Hub folder. Loading models by name, folder, Hub id or adapter is ``hf_midi.loading``; the
``hf-midi generate`` command is in ``hf_midi.cli``.
"""

from __future__ import annotations

import copy
import math
import numbers
import queue
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer

from .codec import (
    BOS_ID,
    DEFAULT_VELOCITY,
    EOS_ID,
    MAX_SECONDS,
    MAX_SHIFT,
    NOTE_OFF,
    NOTE_ON,
    PAD_ID,
    STEPS_PER_SECOND,
    SUSTAIN_OFF,
    SUSTAIN_ON,
    TIME_SHIFT,
    VELOCITY,
    VOCAB_SIZE,
    MidiError,
    bin_velocity,
    never_generated,
    seconds_to_steps,
    shift_steps,
)
from .fast_generation import WEIGHT_FORMATS, fast_sample

# A token budget when only seconds are given: the densest 10 s of ASAP/POP909 hold ~130 events a
# second, so a model that stops advancing time cannot run forever.
MAX_TOKENS_PER_SECOND = 200
MAX_RETURN_SEQUENCES = 64
# The stuck-note guard's default (MaxNoteLengthLogitsProcessor) for a model that does not set its own
# (``max_note_seconds`` in its generation_config.json): None = off. Measured per model in
# benchmarks/RESULTS.md (expressive-piano model), with and without: the bundled base model sets 6.0.
DEFAULT_MAX_NOTE_SECONDS: float | None = None
# The longest silence (no key down, no onset) generation allows; real performances rarely pause longer
# (a fermata, between movements), and a model that falls silent for longer rarely comes back.
DEFAULT_MAX_SILENCE_SECONDS = 4.0
# The two rules of a piece composed to a length, defaults for a model whose generation_config.json does
# not set them (``sound_at_once``, ``allow_early_end``): the first note sounds at once (no TIME_SHIFT
# before the first NOTE_ON of a piece composed from scratch), and <eos> is not sampled before the asked
# seconds. Two thirds of GiantMIDI's recordings begin with silence and many end early: a model trained
# on them learns both (benchmarks/RESULTS.md, "A click gives music").
DEFAULT_SOUND_AT_ONCE = True
DEFAULT_ALLOW_EARLY_END = False
MUSIC_SETTINGS = ("max_note_seconds", "sound_at_once", "allow_early_end")  # ours, not generate()'s

# The bundled model that plays when none is named: ``base`` (GPT-2 8 x 512), the one listeners prefer
# and fast enough to play while it composes on one CPU thread (benchmarks/RESULTS.md, "A click gives
# music"); ``small`` (4 x 256) is the fast one. In a Hub folder this file travels alone: no such folder there.
DEFAULT_MODEL = "base"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "pretrained" / DEFAULT_MODEL
NO_DEFAULT_MODEL = (
    f"no default model is installed ({DEFAULT_MODEL_DIR} has no config.json); "
    "pass a model folder or Hub repo id (model=... / --model DIR_OR_REPO_ID)"
)

Progress = Callable[[float, "float | None"], object]


class GenerationError(MidiError):
    """Bad generation input (arguments, prompt, model folder), raised before any generation starts."""


class ArgumentError(GenerationError):
    """One argument out of range: ``argument`` names it, ``problem`` says what is wrong, so that a
    front end can name it its own way (the CLI writes ``--max-new-tokens``)."""

    def __init__(self, argument: str, problem: str):
        super().__init__(f"{argument} {problem}")
        self.argument, self.problem = argument, problem


def check_length(seconds, max_new_tokens) -> None:
    """A piece needs a length: seconds of music or a number of tokens (or both)."""
    if seconds is None and max_new_tokens is None:
        raise GenerationError("give seconds or max_new_tokens (both are None)")


def default_model_path() -> Path | None:
    """The default bundled model (``hf_midi/pretrained/base``), or None when not installed."""
    return DEFAULT_MODEL_DIR if (DEFAULT_MODEL_DIR / "config.json").is_file() else None


def model_note_limit(model) -> float | None:
    """The guard's default for ``model``: its generation config's ``max_note_seconds``, else
    ``DEFAULT_MAX_NOTE_SECONDS``."""
    value = getattr(getattr(model, "generation_config", None), "max_note_seconds", DEFAULT_MAX_NOTE_SECONDS)
    return None if value is None else float(value)


def model_setting(model, name: str, default):
    """One of the music settings (``MUSIC_SETTINGS``) from the model's generation config, else ``default``."""
    return getattr(getattr(model, "generation_config", None), name, default)


def context_length(model) -> int | None:
    """Positions the model can attend to (GPT-2's ``n_positions``); None when unlimited (an LSTM)."""
    cfg = model.config
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_generation_args(
    seconds=None, max_new_tokens=None, temperature=None, top_k=None, top_p=None,
    num_return_sequences=1, seed=None, prompt_seconds=None,
) -> dict:
    """Raise ``GenerationError`` naming the first argument out of range (None = not given).

    Returns the arguments as plain Python numbers (numpy scalars and whole floats such as a UI's
    ``40.0`` become ints where an int is meant)."""
    out = {}

    def number(name, value, ok, wanted):
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
                or not ok(float(value)):
            raise ArgumentError(name, f"must be {wanted}, got {value!r}")
        out[name] = float(value)

    def integer(name, value, lo, hi):
        if value is None:
            return
        whole = isinstance(value, numbers.Integral) or (
            isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer())
        if isinstance(value, bool) or not whole or not lo <= int(value) <= hi:
            raise ArgumentError(name, f"must be an integer in {lo}..{hi}, got {value!r}")
        out[name] = int(value)

    check_length(seconds, max_new_tokens)
    number("seconds", seconds, lambda v: 0 < v <= MAX_SECONDS, f"> 0 and at most {MAX_SECONDS:g}")
    if seconds is not None and seconds_to_steps(seconds) < 1:
        raise ArgumentError("seconds", f"must be at least 0.01 (one 10 ms step), got {seconds!r}")
    integer("max_new_tokens", max_new_tokens, 1, int(MAX_SECONDS * MAX_TOKENS_PER_SECOND))
    number("temperature", temperature, lambda v: 0 < v <= 100, "> 0 (and at most 100)")
    integer("top_k", top_k, 0, VOCAB_SIZE)  # 0 turns top-k off, as in transformers
    number("top_p", top_p, lambda v: 0 < v <= 1, "in (0, 1]")
    integer("num_return_sequences", num_return_sequences, 1, MAX_RETURN_SEQUENCES)
    integer("seed", seed, 0, 2**63 - 1)
    number("prompt_seconds", prompt_seconds, lambda v: 0 < v <= MAX_SECONDS, f"> 0 and at most {MAX_SECONDS:g}")
    return out


def check_fast_args(fast: bool = True, weights: str = "auto") -> None:
    """Raise ``GenerationError`` for a weight format that does not exist, or one that needs the fast
    loop while ``fast`` is off (float32 and auto are what ``generate()``'s own loop computes)."""
    if weights not in ("auto", *WEIGHT_FORMATS):
        raise GenerationError(f"weights must be auto, {', '.join(WEIGHT_FORMATS)}, got {weights!r}")
    if not fast and weights not in ("auto", "float32"):
        raise GenerationError(f"weights={weights!r} needs the fast path (fast=True)")


def check_draft(model, draft, window: int | None, rows: int = 1) -> None:
    """Raise ``GenerationError`` when ``draft`` cannot draft for ``model``: another vocabulary (its ids
    would mean other events), a context shorter than the ``window`` the target slides (it would fail
    mid-piece; a longer one is fine: the target's window is used), or several rows (transformers'
    assisted generation takes one)."""
    name = getattr(draft, "name_or_path", "") or type(draft).__name__
    vocab, theirs = getattr(model.config, "vocab_size", None), getattr(draft.config, "vocab_size", None)
    if theirs is None or theirs != vocab:  # (transformers compares the sizes too)
        raise GenerationError(f"draft model {name}: vocabulary of {theirs} ids, the model's has {vocab}: a draft "
                              f"must share the model's vocabulary ({VOCAB_SIZE} events and the same padding)")
    theirs_ctx = context_length(draft)
    if window is not None and theirs_ctx is not None and theirs_ctx < window:
        raise GenerationError(f"draft model {name}: context of {theirs_ctx} positions, shorter than the "
                              f"{window} the model's window uses")
    if rows != 1:
        raise GenerationError(f"a draft model drafts for one sequence; {rows} were asked for")


def sounding_after(ids: np.ndarray) -> np.ndarray:
    """How many notes sound after each token of one row of ids (NOTE_ON of a silent pitch opens one,
    NOTE_OFF of a sounding pitch closes it, a re-strike changes nothing)."""
    on = np.zeros(128, dtype=bool)
    count, out = 0, np.empty(len(ids), dtype=np.int64)
    for i, t in enumerate(ids.tolist()):
        if t < NOTE_OFF:
            count += not on[t]
            on[t] = True
        elif t < TIME_SHIFT:
            count -= bool(on[t - NOTE_OFF])
            on[t - NOTE_OFF] = False
        out[i] = count
    return out


def quiet_cut(seqs: torch.Tensor, target: int, slack: int) -> int:
    """Where a sliding window's new context should start: the position within ``target`` +- ``slack``
    at which the fewest notes are sounding (summed over the rows; the nearest to ``target`` among
    equals). A note sounding at the cut has its NOTE_ON in the history the model no longer sees, so
    nothing reminds it to end the note: the cause of most notes held for half a minute."""
    lo, hi = max(1, target - slack), min(seqs.shape[1] - 1, target + slack)
    if hi <= lo:
        return target
    rows = seqs.cpu().numpy()
    counts = sum(sounding_after(r)[lo - 1 : hi] for r in rows)  # after token p - 1 = at cut p
    positions = np.arange(lo, hi + 1)
    best = np.lexsort((np.abs(positions - target), counts))[0]
    return int(positions[best])


def cut_events(ids, seconds: float) -> np.ndarray:
    """The first ``seconds`` of event ids (no special tokens): the events before the cut, and time
    advanced exactly to the cut when the piece goes on past it. Notes sounding at the cut stay open
    (a continuation may end them)."""
    ids = np.asarray(ids, dtype=np.int64)
    cut = seconds_to_steps(seconds)
    steps = shift_steps(ids)
    after = np.cumsum(steps)
    before = after - steps  # the time at which each token happens (a shift starts there)
    keep = np.flatnonzero(before < cut)
    out = ids[keep].copy()
    if len(keep) and after[keep[-1]] > cut:  # only the last kept token can be a shift past the cut
        out[-1] = TIME_SHIFT - 1 + (cut - before[keep[-1]])
    return out


# --------------------------------------------------------------------------- state
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
        }.items()}
    return _TABLES[device]


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
    NOTE_ON has come (history included); with
    ``track_onsets`` (set by ``MaxNoteLengthLogitsProcessor``) also ``clock`` (B,) steps since the
    first id and ``onset`` (B, 129) the clock at each pitch's last NOTE_ON.
    """

    def __init__(self, start: int | None = None, lag: int = 0):
        self.start, self.lag = start, lag
        self.track_onsets = False  # clock/onset cost a step's work: kept only for the note guard
        self.history: torch.Tensor | None = None  # (B, H) ids before a sliding window's context
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
        pedal_on = torch.where(ids == SUSTAIN_ON, pos, -1).amax(1)
        pedal_off = torch.where(ids == SUSTAIN_OFF, pos, -1).amax(1)
        self.pedal = (pedal_on > pedal_off).long()
        self.noted = (ids < NOTE_OFF).any(1)
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
        self._silent[self._row_index, col] = t["silent"][i]
        pedal = t["pedal"][i]
        self.pedal = torch.where(pedal < 0, self.pedal, pedal)
        self.noted |= token < NOTE_OFF
        self.last = token


# --------------------------------------------------------------------------- processors, criteria
class PerformanceGrammarLogitsProcessor(LogitsProcessor):
    """Forbids tokens that cannot be valid at this point of a performance.

    A NOTE_OFF of a silent pitch, a VELOCITY right after a VELOCITY, SUSTAIN_OFF while the pedal is
    up and SUSTAIN_ON while it is down (decoding ignores all of these; encoding never writes them),
    ``<pad>``, ``<bos>`` and ids past the 393-token vocabulary (padding rows of a wider embedding).
    Vectorised over the batch: four masked fills a step, the state advancing by one token.
    """

    def __init__(self, state: PerformanceState | None = None):
        self.state = state if state is not None else PerformanceState()
        self._never: torch.Tensor | None = None

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
        scores[:, VELOCITY:SUSTAIN_ON].masked_fill_(t["velocity"][s.last.clamp(max=VOCAB_SIZE)][:, None], ninf)
        scores[:, SUSTAIN_ON:PAD_ID].masked_fill_(t["pedal_forbid"][s.pedal], ninf)
        return scores


class _TimeGuard(LogitsProcessor):
    """A guard that watches how long something has lasted in music time: ``seconds`` (checked, named by
    ``argument``) and the shared state, with onset times tracked."""

    argument = "seconds"

    def __init__(self, seconds: float, state: PerformanceState | None = None):
        if not (math.isfinite(seconds) and seconds > 0):
            raise GenerationError(f"{self.argument} must be > 0, got {seconds}")
        self.limit = seconds_to_steps(seconds)
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

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        s = self.state.sync(input_ids)
        held = s.sounding & (s.clock[:, None] - s.onset[:, :128] >= self.limit)  # (B, 128)
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


class SoundAtOnceLogitsProcessor(LogitsProcessor):
    """The first note sounds at once: until a NOTE_ON has come (a prompt's count), neither a TIME_SHIFT
    nor ``<eos>`` may come next, so a piece composed from scratch opens with its first note (a VELOCITY
    or pedal event may come before it, in the same instant). Two thirds of GiantMIDI's recordings
    begin with more than a second of silence: without this rule a model trained on them often does too.
    """

    def __init__(self, state: PerformanceState | None = None):
        self.state = state if state is not None else PerformanceState()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        s = self.state.sync(input_ids)
        waiting = ~s.noted
        if bool(waiting.any()):
            scores[:, TIME_SHIFT:VELOCITY].masked_fill_(waiting[:, None], -math.inf)
            scores[:, EOS_ID].masked_fill_(waiting, -math.inf)
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


# --------------------------------------------------------------------------- streaming
@dataclass(frozen=True)
class StreamedNote:
    """A note whose end has been decided: times in seconds, MIDI pitch and velocity."""

    start: float
    end: float
    pitch: int
    velocity: int


@dataclass(frozen=True)
class MusicChunk:
    """The music decided between two moments of a piece being composed, ``start`` to ``end`` seconds
    (from the piece's start, prompt included). Nothing before ``end`` can change any more.

    ``onsets``: notes that began in the chunk, as (start, pitch, velocity) (their end is not known yet:
    what a live player needs to strike a key); ``notes``: every note whose end was decided in the
    chunk (it may have begun in an earlier one); ``pedal``: (time, down) changes of the sustain pedal;
    ``token_ids``: the ids that decided it. The last chunk of a piece has ``done=True``: the notes still
    sounding end at its ``end``, and ``piece`` (given by ``MidiGenerationPipeline.stream``) is what
    the same call without streaming returns.
    """

    start: float
    end: float
    notes: tuple[StreamedNote, ...] = ()
    onsets: tuple[tuple[float, int, int], ...] = ()
    pedal: tuple[tuple[float, bool], ...] = ()
    token_ids: tuple[int, ...] = ()
    done: bool = False
    piece: dict | None = field(default=None, compare=False)


class MusicStreamer(BaseStreamer):
    """A ``transformers`` streamer for one sequence: decodes ids into music as ``generate()`` makes them.

    Pass it as ``streamer=`` to ``model.generate()``, ``generate_music`` or the pipeline, and iterate
    over it from another thread (``MidiGenerationPipeline.stream`` does both for you)::

        streamer = MusicStreamer(chunk_seconds=0.5)
        threading.Thread(target=model.generate, kwargs=dict(input_ids=ids, streamer=streamer, ...)).start()
        for chunk in streamer:            # MusicChunk, every ~0.5 s of music
            play(chunk.onsets, chunk.notes)

    Decoding follows the codec's ``ids_to_notes`` exactly (a test holds it): a note lasts until the next
    NOTE_ON or NOTE_OFF of its pitch (at least one step), velocity from the last VELOCITY token, pedal
    changes of state only, ``<eos>`` ends the piece, ``<pad>``/``<bos>`` are skipped. The first ``put``
    (the prompt, as ``generate()`` sends it) becomes the first chunk. A chunk is sent once music time
    has passed ``chunk_seconds`` since the last one (0: at every time shift), and at ``end()``;
    ``first_chunk_seconds`` (default ``chunk_seconds``) for the first chunk of new music, so that a
    player can start sooner.
    ``timeout``: seconds the iterator waits for a chunk before raising ``queue.Empty`` (None: forever).
    """

    def __init__(self, chunk_seconds: float = 0.5, timeout: float | None = None,
                 first_chunk_seconds: float | None = None):
        for name, value in (("chunk_seconds", chunk_seconds), ("first_chunk_seconds", first_chunk_seconds)):
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise GenerationError(f"{name} must be a number >= 0, got {value!r}")
        self.every = seconds_to_steps(chunk_seconds)
        self._next = self.every if first_chunk_seconds is None else seconds_to_steps(first_chunk_seconds)
        self.timeout = timeout
        self.queue: queue.Queue = queue.Queue()
        self.clock = 0  # steps
        self.velocity = DEFAULT_VELOCITY  # decoding's velocity before any VELOCITY token
        self.sounding: dict[int, tuple[int, int]] = {}  # pitch -> (start step, velocity)
        self.pedal_down = False
        self.ended = False  # <eos> seen
        self.finished = False  # end() called
        self._prompted = False
        self._sent = 0  # the clock at the end of the last chunk
        self._notes: list[StreamedNote] = []
        self._onsets: list[tuple[float, int, int]] = []
        self._pedal: list[tuple[float, bool]] = []
        self._ids: list[int] = []

    # ---- producer side (generate()'s thread)
    def put(self, value) -> None:
        ids = value.tolist() if hasattr(value, "tolist") else list(value)
        if ids and isinstance(ids[0], list):
            if len(ids) != 1:
                raise GenerationError(f"MusicStreamer follows one sequence; generate() sent {len(ids)} "
                                      "(stream one piece at a time)")
            ids = ids[0]
        for i in ids:
            self._feed(int(i))
        if not self._prompted:
            self._prompted = True
            if self.clock > 0 or self._ids:
                self._send()

    def end(self) -> None:
        if self.finished:
            return
        for pitch in sorted(self.sounding):
            self._close(pitch)
        if self.pedal_down:
            self._pedal.append((self.clock / STEPS_PER_SECOND, False))
            self.pedal_down = False
        self.finished = True
        self._send(done=True)
        self.queue.put(None)

    def fail(self, error: BaseException) -> None:
        """Hand ``error`` to the consumer (raised from its iteration) and end the stream."""
        self.finished = True
        self.queue.put(error)

    def _feed(self, i: int) -> None:
        if self.ended or i in (PAD_ID, BOS_ID):
            return
        if i == EOS_ID:
            self.ended = True
            return
        self._ids.append(i)
        if i < NOTE_OFF:  # NOTE_ON: a re-strike ends the sounding note first
            if i in self.sounding:
                self._close(i)
            self.sounding[i] = (self.clock, self.velocity)
            self._onsets.append((self.clock / STEPS_PER_SECOND, i, self.velocity))
        elif i < TIME_SHIFT:
            if (i - NOTE_OFF) in self.sounding:
                self._close(i - NOTE_OFF)
        elif i < VELOCITY:
            self.clock += i - (TIME_SHIFT - 1)
            if self._prompted and self.clock - self._sent >= max(self._next, 1):
                self._send()
                self._next = self.every
        elif i < SUSTAIN_ON:
            self.velocity = int(bin_velocity(i - VELOCITY + 1))
        elif (i == SUSTAIN_ON) != self.pedal_down:
            self.pedal_down = i == SUSTAIN_ON
            self._pedal.append((self.clock / STEPS_PER_SECOND, self.pedal_down))

    def _close(self, pitch: int) -> None:
        start, velocity = self.sounding.pop(pitch)
        end = max(self.clock, start + 1)
        self._notes.append(StreamedNote(start / STEPS_PER_SECOND, end / STEPS_PER_SECOND, pitch, velocity))

    def _send(self, done: bool = False) -> None:
        chunk = MusicChunk(self._sent / STEPS_PER_SECOND, self.clock / STEPS_PER_SECOND, tuple(self._notes),
                           tuple(self._onsets), tuple(self._pedal), tuple(self._ids), done)
        self._sent = self.clock
        self._notes, self._onsets, self._pedal, self._ids = [], [], [], []
        self.queue.put(chunk)

    # ---- consumer side
    def __iter__(self):
        return self

    def __next__(self) -> MusicChunk:
        item = self.queue.get(timeout=self.timeout)
        if item is None:
            self.queue.put(None)  # iterating again ends at once
            raise StopIteration
        if isinstance(item, BaseException):
            self.queue.put(None)
            raise item
        return item


class _OneStream(BaseStreamer):
    """What ``generate_music`` hands each ``generate()`` call: the user's streamer without the call's
    own prompt (the window's context, sent already; ``generate()`` puts it first when it gets the
    streamer itself, the fast loop never does) and without its ``end()`` (more windows may follow)."""

    def __init__(self, streamer: BaseStreamer, skip_prompt: bool):
        self.streamer, self.first = streamer, skip_prompt

    def put(self, value) -> None:
        if self.first:
            self.first = False
            return
        self.streamer.put(value)

    def end(self) -> None:
        pass


# --------------------------------------------------------------------------- the generation loop
def music_generation_config(model, temperature=None, top_k=None, top_p=None) -> GenerationConfig:
    """The model's generation config with sampling on; given values override it (None keeps it)."""
    config = copy.deepcopy(model.generation_config)
    config.do_sample = True
    for name, value in (("temperature", temperature), ("top_k", top_k), ("top_p", top_p)):
        if value is not None:
            setattr(config, name, value)
    for name, value in (("bos_token_id", BOS_ID), ("eos_token_id", EOS_ID), ("pad_token_id", PAD_ID)):
        if getattr(config, name, None) is None:
            setattr(config, name, value)
    config.num_return_sequences = 1  # rows are expanded by the caller
    for name in MUSIC_SETTINGS:  # ours (model_setting), not generate()'s
        if hasattr(config, name):
            delattr(config, name)
    vocab = getattr(model.config, "vocab_size", VOCAB_SIZE)
    if vocab > VOCAB_SIZE:  # rows that pad the embedding are no token: decoding would reject them
        padding_rows = never_generated(vocab)[2:]  # (its first two, <pad> and <bos>, the grammar forbids)
        config.suppress_tokens = sorted(set(config.suppress_tokens or ()) | set(padding_rows))
    return config


def generate_music(
    model,
    input_ids: torch.LongTensor,
    seconds: float | None = 30.0,
    max_new_tokens: int | None = None,
    grammar: bool = True,
    generation_config: GenerationConfig | None = None,
    progress: Progress | None = None,
    stop_event=None,
    window: int | None = None,
    keep: int | None = None,
    max_note_seconds: float | None = None,
    fast: bool = True,
    weights: str = "auto",
    streamer: BaseStreamer | None = None,
    assistant_model=None,
    max_silence_seconds: float | None = DEFAULT_MAX_SILENCE_SECONDS,
    sound_at_once: bool = DEFAULT_SOUND_AT_ONCE,
    allow_early_end: bool = DEFAULT_ALLOW_EARLY_END,
) -> torch.LongTensor:
    """Continue each row of ``input_ids`` (N, P) with ``model.generate()``; returns (N, P + n) ids,
    each row ending with ``<eos>`` when the model ended the piece, then ``<pad>``.

    Each row gets ``seconds`` of new music (exactly, unless the model ends it earlier) and at most
    ``max_new_tokens`` tokens (default ``seconds`` x 200). When a row outgrows ``window`` positions
    (default: the model's context), generation continues from its last ``keep`` tokens (default half
    the window): the sliding window. While everything fits, this is exactly one ``generate()`` call.
    ``max_note_seconds``: end notes held that long (``MaxNoteLengthLogitsProcessor``); None: off.
    ``max_silence_seconds``: no silence longer than this (``MaxSilenceLogitsProcessor``; default 4 s); None: off.
    ``sound_at_once``: no TIME_SHIFT or ``<eos>`` before the first NOTE_ON (``SoundAtOnceLogitsProcessor``;
    a prompt with notes has had its first). ``allow_early_end``: let the model end a piece (``<eos>``)
    before ``seconds``; False: each row lasts ``seconds`` (the token budget aside).
    ``fast``: run ``generate()`` with ``custom_generate=fast_sample`` (``hf_midi.remote_code.fast_generation``: the
    same sampling, a lean forward; models it does not cover take ``generate()``'s own loop); ``weights``:
    its weight format (``float32``: the same tokens as ``fast=False`` under one seed; ``float16`` /
    ``int8``: repacked for fbgemm's CPU kernels; ``auto``: float16 on a CPU with fbgemm, else float32).
    ``streamer``: a ``transformers`` streamer (e.g. ``MusicStreamer``) for one row: it gets the prompt,
    every new id across all windows, and one ``end()``.
    ``assistant_model``: a smaller model of the same vocabulary that drafts tokens for ``model`` to
    check (transformers' assisted generation; with sampling, speculative sampling keeps ``model``'s
    distribution, the music processors applied to both). One row; ``generate()``'s own loop (the fast
    one does not draft). Measured in benchmarks/RESULTS.md: on one CPU thread it is slower than the
    fast loop alone.
    """
    check_length(seconds, max_new_tokens)
    budget = max_new_tokens if max_new_tokens is not None else math.ceil(seconds * MAX_TOKENS_PER_SECOND)
    window = window if window is not None else context_length(model)
    keep = keep if keep is not None else (window // 2 if window else None)
    if window is not None and not 0 < keep < window:
        raise GenerationError(f"keep must be in 1..{window - 1} (the window), got {keep}")
    config = copy.deepcopy(generation_config) if generation_config is not None else music_generation_config(model)
    check_fast_args(fast, weights)
    if assistant_model is not None:
        check_draft(model, assistant_model, window, input_ids.shape[0])
        if weights not in ("auto", "float32"):
            raise GenerationError(f"weights={weights!r} needs the fast loop, which does not draft: leave "
                                  "assistant_model out, or weights at auto")
        fast = False
    extra = {"custom_generate": fast_sample, "weights": weights} if fast else {}
    if assistant_model is not None:
        extra["assistant_model"] = assistant_model

    state = PerformanceState(start=input_ids.shape[1])
    processors = LogitsProcessorList()
    criteria = StoppingCriteriaList()
    if grammar:
        processors.append(PerformanceGrammarLogitsProcessor(state))
    if max_note_seconds is not None:
        processors.append(MaxNoteLengthLogitsProcessor(max_note_seconds, state))
    if max_silence_seconds is not None:
        processors.append(MaxSilenceLogitsProcessor(max_silence_seconds, state))
    if sound_at_once:
        processors.append(SoundAtOnceLogitsProcessor(state))
    if seconds is not None:
        processors.append(MusicTimeLimitLogitsProcessor(seconds, state, allow_early_end))
        criteria.append(MusicTimeStoppingCriteria(seconds, state))
    tracker = MusicProgressCriteria(seconds, progress, stop_event, state)
    if progress is not None or stop_event is not None:
        criteria.append(tracker)

    if streamer is not None:
        if input_ids.shape[0] != 1:
            raise GenerationError(f"a streamer follows one sequence; {input_ids.shape[0]} were asked for")
        streamer.put(input_ids.cpu())
    rows = [input_ids[i] for i in range(input_ids.shape[0])]
    alive = list(range(len(rows)))
    made = 0
    while alive and made < budget:
        seqs = torch.stack([rows[i] for i in alive])  # alive rows all have the same length
        if window is None or seqs.shape[1] < window:
            context, history = seqs, None
        else:
            cut = quiet_cut(seqs, seqs.shape[1] - keep, slack=keep // 4)
            context, history = seqs[:, cut:], seqs[:, :cut]
        n = budget - made if window is None else min(budget - made, window - context.shape[1])
        state.set_history(history)
        config.max_new_tokens = n
        call_streamer = None if streamer is None else _OneStream(streamer, skip_prompt=not fast)
        out = model.generate(
            context, attention_mask=torch.ones_like(context), generation_config=config,
            logits_processor=processors, stopping_criteria=criteria,
            # the fast loop takes it as stream= (transformers 5.24 does not hand streamer= on to it)
            **{"stream" if fast else "streamer": call_streamer}, **extra,
        )
        new = out[:, context.shape[1]:]
        state.sync(out)
        finished = (new == EOS_ID).any(1)
        if seconds is not None:
            finished |= state.elapsed >= tracker.limit
        if stop_event is not None and stop_event.is_set():
            finished[:] = True
        for j, i in enumerate(alive):
            rows[i] = torch.cat([rows[i], new[j]])
        made += new.shape[1]
        alive = [i for j, i in enumerate(alive) if not finished[j]]
    # Cut each row after its <eos>, or before the padding generate() put after a stop, then pad.
    ends = []
    for r in rows:
        eos = (r[input_ids.shape[1]:] == EOS_ID).nonzero()
        if len(eos):
            ends.append(input_ids.shape[1] + int(eos[0]) + 1)
        else:
            real = (r != PAD_ID).nonzero()
            ends.append(int(real[-1]) + 1 if len(real) else 0)
    out = torch.full((len(rows), max(ends)), PAD_ID, dtype=input_ids.dtype, device=input_ids.device)
    for i, (r, end) in enumerate(zip(rows, ends)):
        out[i, :end] = r[:end]
    # The last report: where the slowest row stopped (rows the model ended count as done).
    new = out[:, input_ids.shape[1]:]
    elapsed = step_counts(new).sum(1)
    if seconds is None:
        tracker.report(int(elapsed.max()))
    else:
        tracker.report(int(torch.where((new == EOS_ID).any(1), tracker.limit, elapsed).min()))
    if streamer is not None:
        streamer.end()
    return out


__all__ = [
    "DEFAULT_ALLOW_EARLY_END", "DEFAULT_MAX_NOTE_SECONDS", "DEFAULT_MAX_SILENCE_SECONDS", "DEFAULT_SOUND_AT_ONCE",
    "GenerationError", "MAX_SECONDS", "MUSIC_SETTINGS", "SoundAtOnceLogitsProcessor", "model_setting",
    "MaxNoteLengthLogitsProcessor", "MaxSilenceLogitsProcessor", "MusicChunk",
    "MusicProgressCriteria", "MusicStreamer", "MusicTimeLimitLogitsProcessor", "MusicTimeStoppingCriteria",
    "PerformanceGrammarLogitsProcessor", "PerformanceState", "StreamedNote", "check_draft", "check_fast_args",
    "DEFAULT_MODEL", "check_generation_args", "context_length", "cut_events", "default_model_path", "generate_music",
    "model_note_limit", "music_generation_config", "seconds_to_steps",
]
