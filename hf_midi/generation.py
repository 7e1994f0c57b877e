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
- ``generate_music``: the sliding window, for pieces longer than the model's context.

It imports only torch, transformers and the codec (relatively), so it travels with the pipeline
into a Hub folder. The ``hf-midi generate`` command (``configure_generate``/``run_generate``) is
at the end and imports its helpers lazily.
"""

from __future__ import annotations

import argparse
import copy
import math
import numbers
import sys
from collections.abc import Callable
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

from .codec import (
    BOS_ID,
    EOS_ID,
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
    load_score,
    shift_steps,
)

MAX_SECONDS = 3600.0  # one hour of music: more is taken as a typo
# A token budget when only seconds are given: the densest 10 s of ASAP/POP909 hold ~130 events a
# second, so a model that stops advancing time cannot run forever.
MAX_TOKENS_PER_SECOND = 200
MAX_RETURN_SEQUENCES = 64
# The stuck-note guard's default (MaxNoteLengthLogitsProcessor) for a model that does not set its own
# (``max_note_seconds`` in its generation_config.json): None = off. Measured per model in
# benchmarks/RESULTS.md (expressive-piano model), with and without: the bundled base model sets 6.0.
DEFAULT_MAX_NOTE_SECONDS: float | None = None

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "pretrained" / "default"
NO_DEFAULT_MODEL = (
    f"no default model is installed ({DEFAULT_MODEL_DIR} has no config.json); "
    "pass a model folder or Hub repo id (model=... / --model DIR_OR_REPO_ID)"
)

Progress = Callable[[float, "float | None"], object]


class GenerationError(MidiError):
    """Bad generation input (arguments, prompt, model folder), raised before any generation starts."""


def default_model_path() -> Path | None:
    """The model bundled in the package (``hf_midi/pretrained/default``), or None when not installed."""
    return DEFAULT_MODEL_DIR if (DEFAULT_MODEL_DIR / "config.json").is_file() else None


def model_note_limit(model) -> float | None:
    """The guard's default for ``model``: its generation config's ``max_note_seconds``, else
    ``DEFAULT_MAX_NOTE_SECONDS``."""
    value = getattr(getattr(model, "generation_config", None), "max_note_seconds", DEFAULT_MAX_NOTE_SECONDS)
    return None if value is None else float(value)


def bundled_models() -> dict[str, Path]:
    """Models shipped in the package, by the name ``--model`` and ``load_pipeline`` accept:
    ``default`` (fast, the default) and ``base`` (larger and better, slower on a CPU)."""
    root = DEFAULT_MODEL_DIR.parent
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / "config.json").is_file()}


def resolve_model(model: str | Path | None) -> str | Path:
    """None -> the bundled default; a bundled model's name (when no such folder exists here) -> its
    folder; anything else unchanged (a folder or a Hub repo id)."""
    if model is None:
        path = default_model_path()
        if path is None:
            raise GenerationError(NO_DEFAULT_MODEL)
        return path
    bundled = bundled_models()
    if isinstance(model, str) and model in bundled and not Path(model).exists():
        return bundled[model]
    return model


def seconds_to_steps(seconds: float) -> int:
    return int(round(float(seconds) * STEPS_PER_SECOND))


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
            raise GenerationError(f"{name} must be {wanted}, got {value!r}")
        out[name] = float(value)

    def integer(name, value, lo, hi):
        if value is None:
            return
        whole = isinstance(value, numbers.Integral) or (
            isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer())
        if isinstance(value, bool) or not whole or not lo <= int(value) <= hi:
            raise GenerationError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
        out[name] = int(value)

    if seconds is None and max_new_tokens is None:
        raise GenerationError("give seconds or max_new_tokens (both are None)")
    number("seconds", seconds, lambda v: 0 < v <= MAX_SECONDS, f"> 0 and at most {MAX_SECONDS:g}")
    if seconds is not None and seconds_to_steps(seconds) < 1:
        raise GenerationError(f"seconds must be at least 0.01 (one 10 ms step), got {seconds!r}")
    integer("max_new_tokens", max_new_tokens, 1, int(MAX_SECONDS * MAX_TOKENS_PER_SECOND))
    number("temperature", temperature, lambda v: 0 < v <= 100, "> 0 (and at most 100)")
    integer("top_k", top_k, 0, VOCAB_SIZE)  # 0 turns top-k off, as in transformers
    number("top_p", top_p, lambda v: 0 < v <= 1, "in (0, 1]")
    integer("num_return_sequences", num_return_sequences, 1, MAX_RETURN_SEQUENCES)
    integer("seed", seed, 0, 2**63 - 1)
    number("prompt_seconds", prompt_seconds, lambda v: 0 < v <= MAX_SECONDS, f"> 0 and at most {MAX_SECONDS:g}")
    return out


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
            "steps": torch.where((ids >= TIME_SHIFT) & (ids < VELOCITY), ids - (TIME_SHIFT - 1), 0),
            "column": torch.where(is_note, ids % 128, 128),  # column 128 is a dump for other ids
            "silent": ~(ids < NOTE_OFF),  # after a NOTE_ON its pitch sounds; after a NOTE_OFF not
            "pedal": torch.where(ids == SUSTAIN_ON, 1, torch.where(ids == SUSTAIN_OFF, 0, -1)),
            "velocity": (ids >= VELOCITY) & (ids < SUSTAIN_ON),
            # [forbid SUSTAIN_ON, forbid SUSTAIN_OFF] for a pedal that is up (0) / down (1)
            "pedal_forbid": torch.tensor([[False, True], [True, False]]),
        }.items()}
    return _TABLES[device]


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
    ``last`` (B,) the last id; ``ended`` (B,) the last id is ``<eos>`` or ``<pad>``; with
    ``track_onsets`` (set by ``MaxNoteLengthLogitsProcessor``) also ``clock`` (B,) steps since the
    first id and ``onset`` (B, 129) the clock at each pitch's last NOTE_ON.
    """

    def __init__(self, start: int | None = None, lag: int = 0):
        self.start, self.lag = start, lag
        self.track_onsets = False  # clock/onset cost a step's work: kept only for the note guard
        self.history: torch.Tensor | None = None  # (B, H) ids before a sliding window's context
        self._length = self._rows = -1

    def set_history(self, history: torch.Tensor | None) -> None:
        self.history = history
        self._rows = -1  # next sync rebuilds

    def sync(self, input_ids: torch.LongTensor) -> PerformanceState:
        rows, length = input_ids.shape
        if rows == self._rows:
            if length == self._length:
                return self
            # One more token of the same sequences (checked, in case this object is reused).
            if length == self._length + 1 and torch.equal(input_ids[:, -2], self.last):
                self._length = length
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
        is_shift = (ids >= TIME_SHIFT) & (ids < VELOCITY) & (pos >= start)
        self.elapsed = torch.where(is_shift, ids - (TIME_SHIFT - 1), 0).sum(1)
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
            clock = torch.where((ids >= TIME_SHIFT) & (ids < VELOCITY), ids - (TIME_SHIFT - 1), 0).cumsum(1)
            self.onset = torch.zeros(rows, 129, dtype=torch.long, device=ids.device).scatter_reduce(
                1, on_col, clock, "amax")
            self.clock = clock[:, -1].clone()
        pedal_on = torch.where(ids == SUSTAIN_ON, pos, -1).amax(1)
        pedal_off = torch.where(ids == SUSTAIN_OFF, pos, -1).amax(1)
        self.pedal = (pedal_on > pedal_off).long()
        self.last = ids[:, -1].clone()
        self._row_index = torch.arange(rows, device=ids.device)
        self._rows, self._length = rows, input_ids.shape[1]

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
            never[PAD_ID:EOS_ID] = True  # <pad>, <bos>
            never[VOCAB_SIZE:] = True
            self._never = never
        ninf = -math.inf
        # In place: generate() hands the processors their own float32 copy of the logits.
        scores.masked_fill_(self._never, ninf)
        scores[:, NOTE_OFF:TIME_SHIFT].masked_fill_(s.silent, ninf)
        scores[:, VELOCITY:SUSTAIN_ON].masked_fill_(t["velocity"][s.last.clamp(max=VOCAB_SIZE)][:, None], ninf)
        scores[:, SUSTAIN_ON:PAD_ID].masked_fill_(t["pedal_forbid"][s.pedal], ninf)
        return scores


class MaxNoteLengthLogitsProcessor(LogitsProcessor):
    """Ends notes held too long: once a sounding note has been on for ``seconds``, the next token must
    be a NOTE_OFF of such a note (one a step, until none is left). A guard against stuck notes, as
    a second layer behind the model: the longest note is then under ``seconds`` + 1 s (one TIME_SHIFT).
    """

    def __init__(self, seconds: float, state: PerformanceState | None = None):
        if not (math.isfinite(seconds) and seconds > 0):
            raise GenerationError(f"max_note_seconds must be > 0, got {seconds}")
        self.limit = seconds_to_steps(seconds)
        self.state = state if state is not None else PerformanceState()
        if not self.state.track_onsets:
            self.state.track_onsets = True
            self.state.set_history(self.state.history)  # the next sync rebuilds, onsets included

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        s = self.state.sync(input_ids)
        held = s.sounding & (s.clock[:, None] - s.onset[:, :128] >= self.limit)  # (B, 128)
        rows = held.any(1)
        if bool(rows.any()):
            allowed = torch.zeros_like(scores, dtype=torch.bool)
            allowed[:, NOTE_OFF:TIME_SHIFT] = held
            scores.masked_fill_(rows[:, None] & ~allowed, -math.inf)
        return scores


class MusicTimeLimitLogitsProcessor(LogitsProcessor):
    """Keeps every sequence within ``seconds`` of music (counted from the state's ``start``).

    A TIME_SHIFT that would pass the limit is not forbidden but *clipped*: its probability goes to
    the shift that lands exactly on the limit, as if the piece were cut there. (Forbidding long shifts
    would instead push the model to cram events into its last second.) ``MusicTimeStoppingCriteria``
    then ends the sequence. Until some sequence is within one second of its limit, nothing changes.
    """

    def __init__(self, seconds: float, state: PerformanceState | None = None):
        self.limit = seconds_to_steps(seconds)
        self.state = state if state is not None else PerformanceState()
        self._k: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        s = self.state.sync(input_ids)
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
    if hasattr(config, "max_note_seconds"):  # ours (model_note_limit), not generate()'s
        del config.max_note_seconds
    vocab = getattr(model.config, "vocab_size", VOCAB_SIZE)
    if vocab > VOCAB_SIZE:  # rows that pad the embedding are no token: decoding would reject them
        config.suppress_tokens = sorted(set(config.suppress_tokens or ()) | set(range(VOCAB_SIZE, vocab)))
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
) -> torch.LongTensor:
    """Continue each row of ``input_ids`` (N, P) with ``model.generate()``; returns (N, P + n) ids,
    each row ending with ``<eos>`` when the model ended the piece, then ``<pad>``.

    Each row gets ``seconds`` of new music (exactly, unless the model ends it earlier) and at most
    ``max_new_tokens`` tokens (default ``seconds`` x 200). When a row outgrows ``window`` positions
    (default: the model's context), generation continues from its last ``keep`` tokens (default half
    the window): the sliding window. While everything fits, this is exactly one ``generate()`` call.
    ``max_note_seconds``: end notes held that long (``MaxNoteLengthLogitsProcessor``); None: off.
    """
    if seconds is None and max_new_tokens is None:
        raise GenerationError("give seconds or max_new_tokens (both are None)")
    budget = max_new_tokens if max_new_tokens is not None else math.ceil(seconds * MAX_TOKENS_PER_SECOND)
    window = window if window is not None else context_length(model)
    keep = keep if keep is not None else (window // 2 if window else None)
    if window is not None and not 0 < keep < window:
        raise GenerationError(f"keep must be in 1..{window - 1} (the window), got {keep}")
    config = copy.deepcopy(generation_config) if generation_config is not None else music_generation_config(model)

    state = PerformanceState(start=input_ids.shape[1])
    processors = LogitsProcessorList()
    criteria = StoppingCriteriaList()
    if grammar:
        processors.append(PerformanceGrammarLogitsProcessor(state))
    if max_note_seconds is not None:
        processors.append(MaxNoteLengthLogitsProcessor(max_note_seconds, state))
    if seconds is not None:
        processors.append(MusicTimeLimitLogitsProcessor(seconds, state))
        criteria.append(MusicTimeStoppingCriteria(seconds, state))
    tracker = MusicProgressCriteria(seconds, progress, stop_event, state)
    if progress is not None or stop_event is not None:
        criteria.append(tracker)

    rows = [input_ids[i] for i in range(input_ids.shape[0])]
    alive = list(range(len(rows)))
    made = 0
    while alive and made < budget:
        seqs = torch.stack([rows[i] for i in alive])  # alive rows all have the same length
        if window is None or seqs.shape[1] < window:
            context, history = seqs, None
        else:
            context, history = seqs[:, -keep:], seqs[:, :-keep]
        n = budget - made if window is None else min(budget - made, window - context.shape[1])
        state.set_history(history)
        config.max_new_tokens = n
        out = model.generate(
            context, attention_mask=torch.ones_like(context), generation_config=config,
            logits_processor=processors, stopping_criteria=criteria,
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
    elapsed = torch.where((new >= TIME_SHIFT) & (new < VELOCITY), new - (TIME_SHIFT - 1), 0).sum(1)
    if seconds is None:
        tracker.report(int(elapsed.max()))
    else:
        tracker.report(int(torch.where((new == EOS_ID).any(1), tracker.limit, elapsed).min()))
    return out


# --------------------------------------------------------------------------- loading
def load_pipeline(model: str | Path | None = None, device=None, **kwargs):
    """``pipeline("midi-generation")`` for a model folder or Hub repo id (None: the bundled model).

    Checks a local folder first so a bad one gives a clear ``GenerationError``, and passes the
    class explicitly so an exported folder (with ``custom_pipelines`` in its config) runs this
    package's code instead of asking for ``trust_remote_code``.
    """
    from transformers import pipeline

    from .pipeline_midi_generation import MidiGenerationPipeline

    model = resolve_model(model)
    check_model_folder(model)
    if (Path(str(model)) / "adapter_config.json").is_file():  # a LoRA adapter: on its base, merged
        from .finetune import load_model

        loaded, tokenizer = load_model(model)
        return pipeline("midi-generation", model=loaded, tokenizer=tokenizer, pipeline_class=MidiGenerationPipeline,
                        device=device, **kwargs)
    return pipeline("midi-generation", model=str(model), pipeline_class=MidiGenerationPipeline,
                    device=device, **kwargs)


def check_model_folder(model: str | Path) -> None:
    """A local model folder must hold a config and a tokenizer (repo ids are checked on loading)."""
    path = Path(model)
    if not path.exists():
        if str(model).startswith((".", "/", "~")) or str(model).count("/") > 1:
            raise GenerationError(f"model {model}: no such folder")
        return  # a Hub repo id
    if not path.is_dir():
        raise GenerationError(f"model {model}: not a folder")
    if (path / "adapter_config.json").is_file():
        return  # a LoRA adapter folder: its base is checked when it is loaded (hf_midi.finetune)
    if not (path / "config.json").is_file():
        raise GenerationError(f"model {model}: not a model folder (no config.json)")
    if not (path / "tokenizer_config.json").is_file():
        raise GenerationError(
            f"model {model}: no tokenizer (tokenizer_config.json); save one beside the model with "
            "MidiTokenizer().save_pretrained(folder)"
        )


# --------------------------------------------------------------------------- the command line
def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and 0 < value <= MAX_SECONDS):
        raise argparse.ArgumentTypeError(f"must be > 0 and at most {MAX_SECONDS:g}, got {text}")
    return value


def _note_limit(text: str):
    if text == "off":
        return "off"
    return _positive_seconds(text)


def configure_generate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="a bundled model's name (default, base), a model folder or a Hub repo id (default: default)")
    p.add_argument("--prompt", default=None, help="a MIDI file to continue")
    p.add_argument("--prompt-seconds", type=_positive_seconds, default=None,
                   help="keep only the prompt's first S seconds")
    p.add_argument("--seconds", type=_positive_seconds, default=30.0, help="seconds of new music (default 30)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="also stop after this many tokens")
    p.add_argument("--temperature", type=float, default=None, help="default: the model's generation config")
    p.add_argument("--top-k", type=int, default=None, help="0 turns it off; default: the generation config")
    p.add_argument("--top-p", type=float, default=None, help="default: the model's generation config")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--num", type=int, default=1, help="how many pieces (out.mid, or out-1.mid, out-2.mid, ...)")
    p.add_argument("--no-grammar", action="store_true", help="sample without the grammar processor")
    p.add_argument("--max-note-seconds", type=_note_limit, default=None, metavar="S|off",
                   help="end any note held S seconds (the stuck-note guard); off: never (default: the "
                        "model's generation config, max_note_seconds; the bundled base sets 6)")
    p.add_argument("--no-prompt-in-output", action="store_true", help="write only the continuation")
    p.add_argument("-o", "--output", required=True, help="the MIDI file to write")
    p.add_argument("--wav", default=None, help="also render audio to this WAV file")
    p.add_argument("--png", default=None, help="also draw a piano roll to this PNG file")
    p.add_argument("--soundfont", default=None, help="SoundFont for --wav (default: HF_MIDI_SOUNDFONT or "
                   "/usr/share/sounds/sf2)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")


def numbered(path: str | None, index: int, count: int) -> Path | None:
    """``out.mid`` for one piece; ``out-1.mid``, ``out-2.mid``, ... for several."""
    if path is None:
        return None
    path = Path(path)
    return path if count == 1 else path.with_name(f"{path.stem}-{index + 1}{path.suffix}")


_CLI_NAMES = {"num_return_sequences": "num"}


def run_generate(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .render import find_soundfont, piano_roll_png, render_wav
    from .utils import atomic_write_bytes

    # Everything that can be checked is checked before the model loads.
    try:
        check_generation_args(
            seconds=args.seconds, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
            top_k=args.top_k, top_p=args.top_p, num_return_sequences=args.num, seed=args.seed,
            prompt_seconds=args.prompt_seconds,
        )
    except GenerationError as e:  # name the option as the user typed it
        name, rest = str(e).split(" ", 1)
        raise GenerationError(f"--{_CLI_NAMES.get(name, name).replace('_', '-')} {rest}") from None
    if args.prompt_seconds is not None and args.prompt is None:
        raise GenerationError("--prompt-seconds needs --prompt")
    prompt = load_score(args.prompt, source=f"--prompt {args.prompt}") if args.prompt else None
    soundfont = find_soundfont(args.soundfont) if args.wav else None
    if args.device in (None, "cpu") and not torch.cuda.is_available():
        torch.set_num_threads(1)  # measured: two threads on a shared 2-core machine slow down 4-35x

    pipe = load_pipeline(args.model, device=args.device)
    bar = tqdm(total=args.seconds, unit="s", desc="music", bar_format="{l_bar}{bar}| {n:.1f}/{total:.0f} s "
               "[{elapsed}<{remaining}]", file=sys.stderr)

    def progress(done: float, total: float | None) -> None:
        bar.update(done - bar.n)

    try:
        results = pipe(
            prompt=prompt, prompt_seconds=args.prompt_seconds, seconds=args.seconds,
            max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
            top_p=args.top_p, seed=args.seed, num_return_sequences=args.num,
            return_prompt=not args.no_prompt_in_output, grammar=not args.no_grammar, progress=progress,
            **({} if args.max_note_seconds is None else
               {"max_note_seconds": None if args.max_note_seconds == "off" else args.max_note_seconds}),
        )
    finally:
        bar.close()
    for i, r in enumerate(results):
        midi = numbered(args.output, i, len(results))
        atomic_write_bytes(midi, r["midi"])
        written = [str(midi)]
        if args.wav:
            render_wav(r["score"], path=numbered(args.wav, i, len(results)), soundfont=soundfont)
            written.append(str(numbered(args.wav, i, len(results))))
        if args.png:
            piano_roll_png(r["score"], path=numbered(args.png, i, len(results)))
            written.append(str(numbered(args.png, i, len(results))))
        print(f"{r['seconds']:.2f} s, {len(r['token_ids'])} tokens -> {', '.join(written)}", file=sys.stderr)
    return 0


__all__ = [
    "DEFAULT_MAX_NOTE_SECONDS", "GenerationError", "MAX_SECONDS", "MaxNoteLengthLogitsProcessor",
    "MusicProgressCriteria", "MusicTimeLimitLogitsProcessor", "MusicTimeStoppingCriteria",
    "PerformanceGrammarLogitsProcessor", "PerformanceState", "bundled_models", "check_generation_args",
    "check_model_folder", "configure_generate", "context_length", "cut_events", "default_model_path",
    "generate_music", "load_pipeline", "model_note_limit", "music_generation_config", "resolve_model", "run_generate",
    "seconds_to_steps",
]
