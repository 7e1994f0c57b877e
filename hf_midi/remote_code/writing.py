"""Writing with given notes: fill a gap in a piece, accompany a melody, with a model trained only to continue.

No model was trained for either; both happen at decode time, with the shipped weights, on a CPU:

- the given notes are forced (``GivenNotesLogitsProcessor``): each sounds as given, on the 10-ms grid,
  while the model plays around it in the encoder's order;
- the search that composes a piece (``search.py``: K candidates a chunk in one batch, the fast loop) weighs
  each candidate by the model's own log-probability of what comes next (``follow_logprob``): the piece after
  the gap, or the melody's notes under the chunk and after it. A candidate that leads well into what is already
  written wins, so the fill joins its right edge and the accompaniment sits under the melody and anticipates it
  rather than follows it. The critic's score is added where a critic is at hand; ``select="sample"``
  resamples by these weights each chunk (sequential Monte Carlo with one lineage, as in ``search.py``).

Plans check their input and say what is wrong before anything is composed:

    plan = FillPlan.from_piece("song.mid", start=8.0, end=12.0)
    result = plan.compose(model, candidates=4, critic=critic)        # result["score"], result["token_ids"]
    plan = AccompanyPlan.from_melody("tune.mid", track="MELODY")
    result = plan.compose(model, candidates=4)

Everything here works on notes in 10-ms steps (``ids_to_notes``'s arrays) and goes to and from events only
through the codec (``performance_to_ids``, ``ids_to_notes``), so the events are what the encoder writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import numpy as np
import symusic
import torch

from .arguments import GenerationError, context_length
from .codec import (
    BOS_ID,
    DECODE_TPQ,
    MAX_SECONDS,
    NOTE_OFF,
    PAD_ID,
    PIANO_KEYS,
    STEPS_PER_SECOND,
    TICKS_PER_STEP,
    Performance,
    drum_note,
    ids_to_notes,
    load_score,
    performance_to_ids,
    score_to_performance,
    shift_steps,
    to_steps,
)
from .controls import MAX_DENSITY, SHARP_NAMES, MusicControls, find_key
from .defaults import GENERATION_DEFAULTS
from .generation import cut_events, generate_music
from .processors import GivenNotes

NOTE_FIELDS = ("start", "end", "pitch", "velocity")


# --------------------------------------------------------------------------- notes in steps
def _notes(start=(), end=(), pitch=(), velocity=()) -> dict:
    return {k: np.asarray(v, dtype=np.int64).reshape(-1) for k, v in zip(NOTE_FIELDS, (start, end, pitch, velocity))}


def _take(notes: dict, keep) -> dict:
    return {k: notes[k][keep] for k in NOTE_FIELDS}


def _join(*parts: dict) -> dict:
    out = {k: np.concatenate([p[k] for p in parts]) for k in NOTE_FIELDS}
    order = np.lexsort((out["pitch"], out["start"]))
    return _take(out, order)


def _pedal_mask(down, up, horizon: int) -> np.ndarray:
    """The pedal as one flag a step over ``0 .. horizon - 1`` from its intervals in steps."""
    mask = np.zeros(horizon, bool)
    for a, b in zip(down, up):
        mask[max(int(a), 0):min(int(b), horizon)] = True
    return mask


def _pedal_changes(times, values, horizon: int) -> np.ndarray:
    """The pedal as one flag a step from ``ids_to_notes``' CC64 changes (127 down, 0 up)."""
    mask = np.zeros(horizon, bool)
    for i, (t, v) in enumerate(zip(times, values)):
        if v >= 64:
            end = times[i + 1] if i + 1 < len(times) else horizon
            mask[max(int(t), 0):min(int(end), horizon)] = True
    return mask


def _intervals(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def notes_to_ids(notes: dict, pedal: np.ndarray | None = None) -> np.ndarray:
    """Event ids (no ``<bos>``) of notes in steps and a pedal flag a step, as the encoder writes them."""
    down, up = _intervals(pedal) if pedal is not None and pedal.any() else (np.empty(0), np.empty(0))
    perf = Performance(notes["start"] / STEPS_PER_SECOND, notes["end"] / STEPS_PER_SECOND, notes["pitch"],
                       notes["velocity"], down / STEPS_PER_SECOND, up / STEPS_PER_SECOND)
    return performance_to_ids(perf, "events")


def score_notes(score: symusic.Score, track: int | str | None = None, source: str = "piece",
                overlaps: bool = False) -> tuple[dict, np.ndarray]:
    """(notes in steps with their own velocities, the pedal a step) of ``score``'s non-drum tracks, or of one
    ``track`` (its index or name). Rules 2 and 5 of the encoder apply: onsets and ends to the step, a note lasts
    at least a step, one note a pitch an onset, and a new onset ends the earlier note of its pitch (``overlaps``:
    left as they are, for the caller to check)."""
    if track is not None:
        tracks = list(score.tracks)
        names = [t.name for t in tracks]
        if isinstance(track, (int, np.integer)) and not isinstance(track, bool):
            if not 0 <= track < len(tracks):
                raise GenerationError(f"{source}: has no track {track} (it has {len(tracks)}: {names})")
            chosen = tracks[int(track)]
        else:
            found = [t for t in tracks if t.name.strip().lower() == str(track).strip().lower()]
            if not found:
                raise GenerationError(f"{source}: has no track named {track!r} (its tracks: {names})")
            chosen = found[0]
        if chosen.is_drum:
            raise GenerationError(f"{source}: track {track!r} is a drum track (drum tracks are ignored)")
        one = score.copy()
        one.tracks = [chosen.copy()]
        score = one
    perf = score_to_performance(score, source)
    start, end = to_steps(perf.onset), to_steps(perf.offset)
    end = np.maximum(end, start + 1)
    notes = _notes(start, end, perf.pitch, np.clip(perf.velocity, 1, 127))
    notes = _take(notes, np.lexsort((-notes["end"], notes["pitch"], notes["start"])))
    first = np.ones(len(notes["start"]), bool)  # rule 5a: one note per (onset, pitch), the longest
    first[1:] = (notes["start"][1:] != notes["start"][:-1]) | (notes["pitch"][1:] != notes["pitch"][:-1])
    notes = _take(notes, first)
    if not overlaps:  # rule 5b
        by_pitch = np.lexsort((notes["start"], notes["pitch"]))
        same = np.flatnonzero(notes["pitch"][by_pitch][1:] == notes["pitch"][by_pitch][:-1])
        earlier, later = by_pitch[same], by_pitch[same + 1]
        notes["end"][earlier] = np.maximum(np.minimum(notes["end"][earlier], notes["start"][later]),
                                           notes["start"][earlier] + 1)
    horizon = int(notes["end"].max()) + 1 if len(notes["end"]) else 1
    up = np.where(np.isfinite(perf.pedal_up), perf.pedal_up, horizon / STEPS_PER_SECOND)
    pedal = _pedal_mask(to_steps(perf.pedal_down), to_steps(up), horizon)
    return notes, pedal


def notes_score(tracks: list[tuple[str, dict, np.ndarray | None]]) -> symusic.Score:
    """A score in ticks (10 a step, as ``codec.decode``) of named tracks: (name, notes in steps, pedal or None)."""
    score = symusic.Score(DECODE_TPQ)
    score.tempos.append(symusic.Tempo(0, 120.0))
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    for name, notes, pedal in tracks:
        track = symusic.Track(name, 0, False)
        if len(notes["start"]):
            track.notes = symusic.Note.from_numpy(
                (notes["start"] * TICKS_PER_STEP).astype(np.int32),
                ((notes["end"] - notes["start"]) * TICKS_PER_STEP).astype(np.int32),
                notes["pitch"].astype(np.int8), notes["velocity"].astype(np.int8), "tick")
        if pedal is not None and pedal.any():
            down, up = _intervals(pedal)
            times = np.stack([down, up], 1).reshape(-1) * TICKS_PER_STEP
            values = np.tile(np.array([127, 0], np.uint8), len(down))
            track.controls = symusic.ControlChange.from_numpy(times.astype(np.int32), np.full(len(times), 64, np.uint8),
                                                              values, "tick")
        score.tracks.append(track)
    return score


def _row_notes(row) -> tuple[dict, np.ndarray, int]:
    """(notes, pedal a step, end step) of one composed row (``<bos>`` ... ``<pad>``)."""
    ids = np.asarray(row.cpu() if isinstance(row, torch.Tensor) else row, dtype=np.int64)
    d = ids_to_notes(ids[ids != PAD_ID])
    horizon = int(d["end_step"]) + 1
    return _notes(d["start"], d["end"], d["pitch"], d["velocity"]), _pedal_changes(
        d["pedal_time"], d["pedal_value"], horizon), int(d["end_step"])


# --------------------------------------------------------------------------- weighing what follows
def follow_logprob(model, rows: list[np.ndarray], counted: list[np.ndarray], context: int = 256) -> np.ndarray:
    """For each row of event ids, the model's log-probability of its ``counted`` tokens (a mask), summed, each
    seeing at most ``context`` tokens before its first counted one: one forward pass for all the rows
    (right-padded: causal attention never sees the padding). 0 for a row with nothing counted."""
    limit = context_length(model) or 1 << 30
    parts = []
    for ids, mask in zip(rows, counted):
        where = np.flatnonzero(mask)
        where = where[where > 0]  # the first token of a row has nothing before it
        if not len(where):
            parts.append(None)
            continue
        hi = int(where[-1]) + 1
        lo = max(0, int(where[0]) - context, hi - limit)  # within the model's positions
        mask = np.asarray(mask[lo:hi], bool).copy()
        mask[0] = False
        parts.append((np.asarray(ids[lo:hi]), mask))
    out = np.zeros(len(rows))
    live = [i for i, p in enumerate(parts) if p is not None]
    if not live:
        return out
    width = max(len(parts[i][0]) for i in live)
    x = torch.full((len(live), width), PAD_ID, dtype=torch.long)
    m = torch.zeros((len(live), width), dtype=torch.bool)
    for j, i in enumerate(live):
        ids, mask = parts[i]
        x[j, :len(ids)] = torch.from_numpy(ids)
        m[j, :len(mask)] = torch.from_numpy(mask)
    device = getattr(model, "device", torch.device("cpu"))
    with torch.inference_mode():
        x = x.to(device)  # right-padded: causal attention never sees the padding
        logits = model(input_ids=x, attention_mask=torch.ones_like(x)).logits[:, :-1].float()
        got = torch.log_softmax(logits, -1).gather(2, x[:, 1:, None])[..., 0].cpu()
    sums = (got * m[:, 1:]).sum(1).numpy()
    out[live] = sums
    return out


def _clock(ids: np.ndarray) -> np.ndarray:
    """The step at which each token happens (before its own shift)."""
    steps = shift_steps(ids)
    return np.cumsum(steps) - steps


# --------------------------------------------------------------------------- fill a gap
@dataclass
class FillPlan:
    """A gap to fill: the notes that begin in ``[start, end)`` (steps) are composed anew; every note that
    begins before or after, and the pedal outside the span, are kept as they are (on the 10-ms grid).

    Notes struck before the span and sounding into it are given (``GivenNotes``): they end where they
    ended. New notes still sounding at the span's end are ended there, and the pedal there is the piece's, so
    the fill joins what follows without a hanging note or a double strike."""

    notes: dict
    pedal: np.ndarray
    start: int
    end: int
    source: str = "piece"
    prefix: np.ndarray = field(init=False)
    given: GivenNotes = field(init=False)

    def __post_init__(self):
        before = self.notes["start"] < self.start
        self.before = _take(self.notes, before)
        self.after = _take(self.notes, self.notes["start"] >= self.end)
        self.prefix = np.concatenate(([BOS_ID], cut_events(notes_to_ids(self.before, self.pedal[:self.start]),
                                                           self.start / STEPS_PER_SECOND)))
        across = self.before["end"] > self.start
        self.given = GivenNotes(self.before["start"][across] - self.start, self.before["end"][across] - self.start,
                                self.before["pitch"][across], self.before["velocity"][across])

    @classmethod
    def from_piece(cls, piece, start: float, end: float, source: str | None = None) -> FillPlan:
        """Check the span against the piece (a path, bytes or a ``symusic.Score``) and plan the fill."""
        source = source or (f"piece {os.fspath(piece)}" if isinstance(piece, (str, os.PathLike)) else "piece")
        for name, value in (("start", start), ("end", end)):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                    or not np.isfinite(value):
                raise GenerationError(f"infill {name} must be a number of seconds, got {value!r}")
        if start < 0:
            raise GenerationError(f"infill start must be >= 0 s, got {start:g}")
        if start >= end:
            raise GenerationError(f"infill start ({start:g} s) must come before its end ({end:g} s)")
        score = load_score(piece, source=source)
        notes, pedal = score_notes(score, source=source)
        if not len(notes["start"]):
            raise GenerationError(f"{source}: has no notes{drum_note(score)}")
        a, b = int(to_steps(start)), int(to_steps(end))
        length = int(notes["end"].max())
        if b <= a:
            raise GenerationError(f"infill span {start:g}-{end:g} s is shorter than one 10-ms step")
        if b > length:
            raise GenerationError(f"infill end {end:g} s is past the end of {source} ({length / STEPS_PER_SECOND:g} s)")
        return cls(notes, pedal, a, b, source)

    @property
    def seconds(self) -> float:
        return (self.end - self.start) / STEPS_PER_SECOND

    def _piece(self, new: dict, new_pedal: np.ndarray, upto: int) -> tuple[dict, np.ndarray]:
        """The whole piece with ``new`` notes (steps from the piece's start) filling the span composed up to
        ``upto``; the pedal there is the new one (held as it is at ``upto`` until the span's end)."""
        horizon = max(len(self.pedal), int(new["end"].max()) + 1 if len(new["end"]) else 0, self.end + 1)
        pedal = np.zeros(horizon, bool)
        pedal[:len(self.pedal)] = self.pedal
        span = np.zeros(self.end - self.start, bool)
        got = new_pedal[self.start:upto]
        span[:len(got)] = got
        if len(got) < len(span) and len(got):
            span[len(got):] = got[-1]
        pedal[self.start:self.end] = span
        return _join(self.before, new, self.after), pedal

    def new_notes(self, row, upto: int) -> tuple[dict, np.ndarray]:
        """The notes a composed row struck in the span (up to ``upto``), ended there at the latest; its pedal."""
        notes, pedal, _ = _row_notes(row)
        keep = (notes["start"] >= self.start) & (notes["start"] < upto)
        new = _take(notes, keep)
        new["end"] = np.minimum(new["end"], upto)
        return new, pedal

    def weigh(self, model, follow_seconds: float, context: int):
        """``generate_music``'s ``weigh``: each candidate's log-probability of the piece's next
        ``follow_seconds`` after the span, as if the span ended where the candidate has come."""
        follow = int(to_steps(follow_seconds))

        def weigh(out, seconds_done):
            upto = min(self.start + int(to_steps(seconds_done)), self.end)
            rows, counted = [], []
            for row in out:
                new, pedal = self.new_notes(row, upto)
                notes, full_pedal = self._piece(new, pedal, upto)
                window = notes["end"] > self.start - 30 * STEPS_PER_SECOND  # enough for the context
                window &= notes["start"] < self.end + follow
                ids = np.concatenate(([BOS_ID], notes_to_ids(_take(notes, window), full_pedal[:self.end + follow])))
                clock = _clock(ids)
                rows.append(ids)
                counted.append((clock >= self.end) & (clock < self.end + follow))
            return follow_logprob(model, rows, counted, context)

        return weigh

    def compose(self, model, candidates: int = 1, critic=None,
                follow_seconds: float = GENERATION_DEFAULTS.follow_seconds,
                context: int = GENERATION_DEFAULTS.follow_context, **settings) -> dict:
        """Fill the span with ``generate_music`` (``settings``: its arguments); with ``candidates`` > 1 each
        chunk's candidates are weighed by what follows (plus the ``critic``'s score, when given). Returns
        ``score`` (one piano track), ``token_ids`` (``<bos>`` and the whole piece's events), ``seconds`` and
        ``span`` (start, end) in seconds."""
        weigh = self.weigh(model, follow_seconds, context) if candidates > 1 else None
        # no short first chunk: a fill is heard whole, so each chunk is worth the same
        settings.setdefault("first_search_seconds", settings.get("search_seconds", GENERATION_DEFAULTS.search_seconds))
        out = generate_music(model, torch.tensor(self.prefix[None], dtype=torch.long), seconds=self.seconds,
                             candidates=candidates, critic=critic, weigh=weigh, given=self.given, **settings)
        new, pedal = self.new_notes(out[0], self.end)
        notes, full_pedal = self._piece(new, pedal, self.end)
        ids = np.concatenate(([BOS_ID], notes_to_ids(notes, full_pedal)))
        score = notes_score([("Piano", notes, full_pedal)])
        return {"score": score, "token_ids": ids.tolist(), "seconds": score.end() / (TICKS_PER_STEP * STEPS_PER_SECOND),
                "span": (self.start / STEPS_PER_SECOND, self.end / STEPS_PER_SECOND), "new_notes": len(new["start"])}


# --------------------------------------------------------------------------- accompany a melody
@dataclass
class AccompanyPlan:
    """A melody to accompany: each of its notes sounds as given (onset, pitch, end on the 10-ms grid, its own
    velocity in the score and its velocity's bin in the events); the model plays around it from the start
    to the melody's last end."""

    melody: dict
    source: str = "melody"
    given: GivenNotes = field(init=False)

    def __post_init__(self):
        m = self.melody
        self.given = GivenNotes(m["start"], m["end"], m["pitch"], m["velocity"],
                                harmony=GENERATION_DEFAULTS.accompany_harmony,
                                clash=GENERATION_DEFAULTS.accompany_clash)

    @classmethod
    def from_melody(cls, melody, track: int | str | None = None, source: str | None = None) -> AccompanyPlan:
        """A melody as a MIDI file (a path, bytes or a ``symusic.Score``: all its non-drum tracks, or one
        ``track`` by index or name) or a list of notes ``(start_seconds, end_seconds, pitch, velocity)``."""
        if isinstance(melody, (list, tuple)):
            source = source or "melody"
            notes = _listed(melody, source)
        else:
            if track is not None and not isinstance(track, (int, str, np.integer)) or isinstance(track, bool):
                raise GenerationError(f"melody_track must be a track's index or name, got {track!r}")
            source = source or (f"melody {os.fspath(melody)}" if isinstance(melody, (str, os.PathLike)) else "melody")
            score = load_score(melody, source=source)
            notes, _ = score_notes(score, track, source, overlaps=True)
            if not len(notes["start"]):
                raise GenerationError(f"{source}: has no notes{drum_note(score)}")
        if not len(notes["start"]):
            raise GenerationError(f"{source}: has no notes")
        order = np.lexsort((notes["start"], notes["pitch"]))
        p, a, b = notes["pitch"][order], notes["start"][order], notes["end"][order]
        clash = np.flatnonzero((p[1:] == p[:-1]) & (a[1:] < b[:-1]))
        if len(clash):
            i = order[clash[0] + 1]
            raise GenerationError(
                f"{source}: notes of pitch {int(notes['pitch'][i])} overlap at "
                f"{notes['start'][i] / STEPS_PER_SECOND:g} s "
                "(a melody holds one note of a pitch at a time)")
        if notes["end"].max() > to_steps(MAX_SECONDS):
            raise GenerationError(f"{source}: lasts {notes['end'].max() / STEPS_PER_SECOND:g} s, longer than the "
                                  f"longest piece allowed ({MAX_SECONDS:g} s)")
        return cls(notes, source)

    @property
    def seconds(self) -> float:
        return int(self.melody["end"].max()) / STEPS_PER_SECOND

    def _is_melody(self, steps, pitches) -> np.ndarray:
        """Whether each onset (its step, its pitch) is a melody note's: one (start, pitch) is one note."""
        keys = np.asarray(steps, np.int64) * 128 + np.asarray(pitches, np.int64)
        return np.isin(keys, self.melody["start"] * 128 + self.melody["pitch"])

    def _with_melody(self, row, upto: int) -> tuple[dict, np.ndarray]:
        """(the model's own notes of a composed row, its pedal): the row's notes that are not given."""
        notes, pedal, _ = _row_notes(row)
        return _take(notes, ~self._is_melody(notes["start"], notes["pitch"])), pedal

    def weigh(self, model, follow_seconds: float, context: int, within: bool = True):
        """``generate_music``'s ``weigh``: each candidate's log-probability of the melody's onsets in the next
        ``follow_seconds`` (the candidate's notes end where it has come; the melody goes on alone) and, with
        ``within``, of the melody's onsets in the chunk just composed, each heard after the candidate's own
        notes until then: how well the candidate sits under the tune as well as how it leads into it."""
        follow = int(to_steps(follow_seconds))
        m = self.melody
        chunk = {"from": 0}  # the step the chunk being weighed began at (chunks come in order)

        def weigh(out, seconds_done):
            upto = int(to_steps(seconds_done))
            since = chunk["from"] if within else upto
            chunk["from"] = upto
            ahead = _take(m, m["start"] < upto + follow)
            rows, counted = [], []
            for row in out:
                own, pedal = self._with_melody(row, upto)
                own["end"] = np.minimum(own["end"], upto)
                notes = _join(own, ahead)
                ids = np.concatenate(([BOS_ID], notes_to_ids(notes, pedal[:upto])))
                clock = _clock(ids)
                rows.append(ids)
                counted.append((ids < NOTE_OFF) & self._is_melody(clock, ids) & (clock >= since))
            return follow_logprob(model, rows, counted, context)

        return weigh

    def compose(self, model, candidates: int = 1, critic=None,
                follow_seconds: float = GENERATION_DEFAULTS.follow_seconds,
                context: int = GENERATION_DEFAULTS.follow_context,
                density_ratio: float | None = GENERATION_DEFAULTS.accompany_density,
                key_strength: float | None = GENERATION_DEFAULTS.accompany_key_strength,
                below: bool = GENERATION_DEFAULTS.accompany_below, **settings) -> dict:
        """Accompany the melody with ``generate_music`` (``settings``: its arguments; ``streamer`` streams the
        music as it is decided). Unless ``settings`` hold a density control, the music is steered towards
        ``density_ratio`` x the melody's onsets a second, melody included (None: left to the model); unless they
        hold a key, towards the melody's key (Krumhansl-Schmuckler on its notes), notes outside it taking
        ``key_strength`` nats (None: left to the model); unless they hold a pitch range and ``below``, no new
        note above the melody's middle pitch (its median), so that the tune stays on top. Returns
        ``score`` (tracks "Melody" and "Accompaniment"), ``token_ids`` (``<bos>`` and the events composed,
        melody included), ``seconds``, ``melody_notes`` and ``accompaniment_notes``."""
        weigh = self.weigh(model, follow_seconds, context) if candidates > 1 else None
        settings.setdefault("sound_at_once", False)  # the melody decides when the music starts
        controls = settings.get("controls") or MusicControls()
        if controls.density is None and density_ratio:  # an accompaniment, not a flurry (accompany_density)
            rate = len(self.melody["start"]) / max(self.seconds, 1.0)
            controls = replace(controls, density=min(density_ratio * rate, MAX_DENSITY))
        key = find_key(self.melody["pitch"], self.melody["end"] - self.melody["start"])
        if controls.key is None and key_strength and key is not None:  # the melody's key, softly
            controls = replace(controls, key=f"{SHARP_NAMES[key[0]]} {key[1]}", key_strength=key_strength)
        if controls.pitch_range is None and below:  # under the tune (POP909's arrangements play below it)
            top = int(np.median(self.melody["pitch"]))
            controls = replace(controls, pitch_range=(PIANO_KEYS[0], max(top, PIANO_KEYS[0] + 24)))
        settings["controls"] = controls
        out = generate_music(model, torch.tensor([[BOS_ID]]), seconds=self.seconds, candidates=candidates,
                             critic=critic, weigh=weigh, given=self.given, **settings)
        row = out[0]
        own, pedal = self._with_melody(row, int(self.melody["end"].max()))
        score = notes_score([("Melody", self.melody, None), ("Accompaniment", own, pedal)])
        ids = row[row != PAD_ID].tolist()
        return {"score": score, "token_ids": ids, "seconds": score.end() / (TICKS_PER_STEP * STEPS_PER_SECOND),
                "melody_notes": len(self.melody["start"]), "accompaniment_notes": len(own["start"])}


def _listed(melody, source: str) -> dict:
    """Notes given as ``(start_seconds, end_seconds, pitch, velocity)`` tuples, checked."""
    rows = []
    for i, note in enumerate(melody):
        if not isinstance(note, (list, tuple)) or len(note) not in (3, 4):
            raise GenerationError(f"{source}: note {i} must be (start_seconds, end_seconds, pitch[, velocity]), "
                                  f"got {note!r}")
        start, end, pitch = note[:3]
        velocity = note[3] if len(note) == 4 else 80
        if not all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                   and np.isfinite(v) for v in (start, end, pitch, velocity)):
            raise GenerationError(f"{source}: note {i} holds a value that is not a finite number: {note!r}")
        if start < 0 or end <= start:
            raise GenerationError(f"{source}: note {i} must start at >= 0 s and end after it starts, got {note!r}")
        if not (0 <= pitch <= 127 and pitch == int(pitch)) or not 1 <= velocity <= 127:
            raise GenerationError(f"{source}: note {i} needs a pitch in 0..127 and a velocity in 1..127, got {note!r}")
        rows.append((start, end, int(pitch), int(velocity)))
    if not rows:
        return _notes()
    start, end, pitch, velocity = (np.array(c) for c in zip(*rows))
    a = to_steps(start)
    return _notes(a, np.maximum(to_steps(end), a + 1), pitch, velocity)


__all__ = ["AccompanyPlan", "FillPlan", "follow_logprob", "notes_score", "notes_to_ids", "score_notes"]
