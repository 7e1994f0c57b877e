"""MIDI <-> performance-event ids, exactly as ``SPEC.md`` says.

Pure functions over numpy arrays and ``symusic`` scores; nothing here imports transformers, so
this file (with ``tokenization_midi.py`` beside it) also works as Hub remote code.

The path from a file to ids is::

    bytes --check_smf--> symusic.Score (seconds) --score_to_performance--> Performance
          --(optional augmentation: transpose / stretch / jitter)--> performance_to_ids --> ids

``Performance`` holds times in float64 seconds, *before* quantisation, so that time stretching
happens before rounding (SPEC rule 2) and transposition is exact.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, replace
from typing import Union

import numpy as np
import symusic

# --------------------------------------------------------------------------- vocabulary (SPEC "Ids")
NOTE_ON = 0  # ids 0..127
NOTE_OFF = 128  # ids 128..255
TIME_SHIFT = 256  # ids 256..355, k = id - 255 steps
VELOCITY = 356  # ids 356..387, bin b = id - 355
SUSTAIN_ON = 388
SUSTAIN_OFF = 389
PAD_ID = 390
BOS_ID = 391
EOS_ID = 392
NUM_EVENTS = 390
VOCAB_SIZE = 393

STEPS_PER_SECOND = 100  # one step is 10 ms
MAX_SHIFT = 100  # the longest TIME_SHIFT, in steps (1 s)
NUM_VELOCITY_BINS = 32
DEFAULT_VELOCITY = 64  # used by decode before any VELOCITY token
SUSTAIN_MODES = ("events", "extend", "ignore")

# Decoded scores: 120 bpm at 500 ticks a quarter is 1 ms a tick, so one step is exactly 10 ticks.
DECODE_TPQ = 500
TICKS_PER_STEP = 10

# Event families, for evaluation and generation constraints.
FAMILIES = ("note_on", "note_off", "time_shift", "velocity", "pedal", "special")


def token_names() -> list[str]:
    """The 393 token strings, in id order."""
    names = [f"NOTE_ON_{p}" for p in range(128)]
    names += [f"NOTE_OFF_{p}" for p in range(128)]
    names += [f"TIME_SHIFT_{10 * k}" for k in range(1, MAX_SHIFT + 1)]
    names += [f"VELOCITY_{b}" for b in range(1, NUM_VELOCITY_BINS + 1)]
    names += ["SUSTAIN_ON", "SUSTAIN_OFF", "<pad>", "<bos>", "<eos>"]
    return names


def event_family(ids) -> np.ndarray:
    """Index into ``FAMILIES`` for each id (ids must be in 0..392)."""
    ids = np.asarray(ids)
    return np.searchsorted(np.array([128, 256, 356, 388, 390]), ids, side="right")


def shift_steps(ids) -> np.ndarray:
    """How many 10 ms steps each id advances the clock (0 for every non-TIME_SHIFT id)."""
    ids = np.asarray(ids, dtype=np.int64)
    is_shift = (ids >= TIME_SHIFT) & (ids < VELOCITY)
    return np.where(is_shift, ids - (TIME_SHIFT - 1), 0)


def velocity_bin(velocity) -> np.ndarray:
    """SPEC rule 6: b = (v - 1) // 4 + 1, with v clamped into 1..127."""
    v = np.clip(np.asarray(velocity, dtype=np.int64), 1, 127)
    return (v - 1) // 4 + 1


def bin_velocity(b) -> np.ndarray:
    """A velocity inside bin ``b`` (1..32): 4b - 2, i.e. 2, 6, ..., 126."""
    return 4 * np.asarray(b, dtype=np.int64) - 2


# --------------------------------------------------------------------------- errors
class MidiError(ValueError):
    """Base class of every error hf_midi raises about MIDI input or token ids."""


class MidiReadError(MidiError):
    """A MIDI file or buffer could not be read: missing, not MIDI, truncated or corrupt."""

    def __init__(self, source: str, problem: str):
        self.source, self.problem = source, problem
        super().__init__(f"{source}: {problem}")


class TokenIdError(MidiError):
    """Token ids that are not in the vocabulary."""


# --------------------------------------------------------------------------- reading MIDI safely
# symusic 0.5.9 (the version that can render audio) crashes the interpreter on some corrupt files
# (edge_cases/.../Issue104_Bizarre_Love_Triangle2.mid segfaults it). So every buffer is checked
# against the SMF grammar first. Channel events are matched by one compiled regex (C speed); only
# meta, sysex and system events, which are few, are walked in Python.
_VLQ = rb"[\x80-\xff]{0,3}[\x00-\x7f]"
_D = rb"[\x00-\x7f]"
_CHANNEL_RUN = re.compile(
    rb"(?:" + _VLQ + rb"(?P<s2>[\x80-\xbf\xe0-\xef])" + _D + _D + rb"(?:" + _VLQ + _D + _D + rb")*"
    rb"|" + _VLQ + rb"(?P<s1>[\xc0-\xdf])" + _D + rb"(?:" + _VLQ + _D + rb")*)*"
)
# Data lengths of the system messages symusic skips inside tracks; F4, F5, F9 and FD are undefined.
_SYSTEM_LEN = {0xF1: 1, 0xF2: 2, 0xF3: 1, 0xF6: 0, 0xF8: 0, 0xFA: 0, 0xFB: 0, 0xFC: 0, 0xFE: 0}


def _read_vlq(b: bytes, j: int, end: int) -> tuple[int, int]:
    value = 0
    for _ in range(4):
        if j >= end:
            raise IndexError
        c = b[j]
        j += 1
        value = (value << 7) | (c & 0x7F)
        if c < 0x80:
            return value, j
    raise ValueError("variable-length number longer than 4 bytes")


def _check_track(b: bytes, j: int, end: int) -> None:
    status = 0  # running status: the last channel status byte
    while j < end:
        m = _CHANNEL_RUN.match(b, j, end)
        if m.end() > j:
            j = m.end()
            s1, s2 = m.start("s1"), m.start("s2")
            status = b[max(s1, s2)] if max(s1, s2) >= 0 else status
            if j >= end:
                break
        at = j
        _, j = _read_vlq(b, j, end)
        if j >= end:
            raise IndexError
        c = b[j]
        if c == 0xFF:  # meta event: type, length, payload
            length, j = _read_vlq(b, j + 2, end)
            j += length
        elif c in (0xF0, 0xF7):  # sysex: length, payload
            length, j = _read_vlq(b, j + 1, end)
            j += length
        elif c >= 0xF0:
            if c not in _SYSTEM_LEN:
                raise ValueError(f"illegal status byte 0x{c:02X} at byte {j}")
            j += 1 + _SYSTEM_LEN[c]
        else:
            if c >= 0x80:
                status, j = c, j + 1
            elif not status:
                raise ValueError(f"data byte without a status byte at byte {at}")
            n = 1 if 0xC0 <= status < 0xE0 else 2
            if j + n > end:
                raise IndexError
            if b[j] >= 0x80 or (n == 2 and b[j + 1] >= 0x80):
                raise ValueError(f"data byte above 127 in a channel message at byte {j}")
            j += n
        if j > end:
            raise IndexError


def check_smf(data: bytes, source: str = "<bytes>") -> None:
    """Raise ``MidiReadError`` unless ``data`` is a well-formed Standard MIDI File.

    Checks the header, that every chunk fits in the file, that the header's track count is
    there, and the event grammar of every track. Unknown chunks and up to 7 trailing bytes are
    tolerated, as common parsers do.
    """
    if len(data) == 0:
        raise MidiReadError(source, "the file is empty (0 bytes)")
    if data[:4] != b"MThd":
        raise MidiReadError(source, "not a MIDI file (it does not start with 'MThd')")
    if len(data) < 14:
        raise MidiReadError(source, f"truncated MIDI header ({len(data)} bytes)")
    header_len = struct.unpack_from(">I", data, 4)[0]
    if header_len < 6:
        raise MidiReadError(source, f"MIDI header length is {header_len}, expected at least 6")
    _, ntracks, division = struct.unpack_from(">HHH", data, 8)
    if division == 0:
        raise MidiReadError(source, "MIDI header gives 0 ticks per quarter note")
    i, found = 8 + header_len, 0
    while i + 8 <= len(data):
        chunk, length = data[i : i + 4], struct.unpack_from(">I", data, i + 4)[0]
        body, end = i + 8, i + 8 + length
        if end > len(data):
            raise MidiReadError(
                source,
                f"truncated: chunk {found + 1} declares {length} bytes "
                f"but only {len(data) - body} remain",
            )
        if chunk == b"MTrk":
            found += 1
            try:
                _check_track(data, body, end)
            except IndexError:
                raise MidiReadError(
                    source, f"track {found} ends in the middle of an event"
                ) from None
            except ValueError as e:
                raise MidiReadError(source, f"corrupt track {found}: {e}") from None
        i = end
    if found < ntracks:
        raise MidiReadError(
            source, f"truncated: the header declares {ntracks} tracks but the file holds {found}"
        )


MidiLike = Union[str, os.PathLike, bytes, bytearray, memoryview, symusic.Score]


def load_score(midi: MidiLike, source: str | None = None) -> symusic.Score:
    """Read a path, raw bytes or a ``symusic.Score`` into a score in seconds (tempo map applied).

    Errors are ``MidiReadError`` naming ``source`` (default: the path, or ``<bytes>``).
    """
    if isinstance(midi, symusic.Score):
        return midi if midi.ttype == symusic.core.Second else midi.to("second")
    if isinstance(midi, (bytes, bytearray, memoryview)):
        data, source = bytes(midi), source or "<bytes>"
    elif isinstance(midi, (str, os.PathLike)):
        path = os.fspath(midi)
        source = source or path
        if not os.path.exists(path):
            raise MidiReadError(source, "no such file")
        if os.path.isdir(path):
            raise MidiReadError(source, "is a directory, not a MIDI file")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise MidiReadError(source, f"cannot be read ({e.strerror or e})") from None
    else:
        raise TypeError(
            f"expected a path, bytes or symusic.Score, got {type(midi).__name__}"
        )
    check_smf(data, source)
    try:
        return symusic.Score.from_midi(data, ttype="second")
    except Exception as e:  # symusic raises RuntimeError with its own wording
        raise MidiReadError(source, f"symusic could not parse it: {e}") from None


# --------------------------------------------------------------------------- score -> performance
@dataclass(frozen=True)
class Performance:
    """One piano stream in seconds, before quantisation.

    ``pedal_down``/``pedal_up`` are the per-track pedal intervals derived from CC64 (SPEC rule 3);
    ``pedal_up`` is ``inf`` for a pedal still down when its track ends.
    """

    onset: np.ndarray  # (N,) float64 seconds
    offset: np.ndarray  # (N,) float64 seconds
    pitch: np.ndarray  # (N,) int64
    velocity: np.ndarray  # (N,) int64
    pedal_down: np.ndarray  # (P,) float64 seconds
    pedal_up: np.ndarray  # (P,) float64 seconds, inf when never released

    @property
    def num_notes(self) -> int:
        return int(self.onset.shape[0])

    @property
    def duration(self) -> float:
        """Seconds until the last note ends (0.0 with no notes)."""
        return float(self.offset.max()) if self.num_notes else 0.0


def _pedal_intervals(times: np.ndarray, numbers: np.ndarray, values: np.ndarray):
    """Down/up times of one track's CC64 (down while value >= 64), in time order."""
    sel = numbers == 64
    if not sel.any():
        return np.empty(0), np.empty(0)
    t, v = times[sel], values[sel]
    order = np.argsort(t, kind="stable")
    t, down = t[order], v[order] >= 64
    prev = np.concatenate(([False], down[:-1]))
    starts, ends = t[down & ~prev], t[~down & prev]
    if len(ends) < len(starts):  # still down at the end
        ends = np.concatenate((ends, [np.inf]))
    return starts, ends


def score_to_performance(score: symusic.Score) -> Performance:
    """SPEC rules 1 and 3: merge the non-drum tracks, collect pedal intervals from CC64."""
    if score.ttype != symusic.core.Second:
        score = score.to("second")
    on, off, pitch, vel, p_down, p_up = [], [], [], [], [], []
    for track in score.tracks:
        if track.is_drum:
            continue
        notes = track.notes.numpy()
        if len(notes["time"]):
            # float32 seconds promoted to float64 before any arithmetic (SPEC rule 2)
            t = notes["time"].astype(np.float64)
            on.append(t)
            off.append(t + notes["duration"].astype(np.float64))
            pitch.append(notes["pitch"].astype(np.int64))
            vel.append(notes["velocity"].astype(np.int64))
        controls = track.controls.numpy()
        if len(controls["time"]):
            d, u = _pedal_intervals(
                controls["time"].astype(np.float64), controls["number"], controls["value"]
            )
            p_down.append(d)
            p_up.append(u)

    def cat(parts, dtype):
        return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype)

    return Performance(
        cat(on, np.float64), cat(off, np.float64), cat(pitch, np.int64), cat(vel, np.int64),
        cat(p_down, np.float64), cat(p_up, np.float64),
    )


# --------------------------------------------------------------------------- augmentation
def transpose(perf: Performance, semitones: int) -> Performance:
    """Shift every pitch; notes pushed outside 0..127 are dropped."""
    pitch = perf.pitch + int(semitones)
    keep = (pitch >= 0) & (pitch <= 127)
    return replace(
        perf, onset=perf.onset[keep], offset=perf.offset[keep], pitch=pitch[keep],
        velocity=perf.velocity[keep],
    )


def stretch(perf: Performance, factor: float) -> Performance:
    """Scale every time by ``factor`` (before quantisation, so nothing drifts)."""
    f = float(factor)
    if not f > 0:
        raise ValueError(f"stretch factor must be > 0, got {factor}")
    return replace(
        perf, onset=perf.onset * f, offset=perf.offset * f, pedal_down=perf.pedal_down * f,
        pedal_up=perf.pedal_up * f,
    )


def jitter_velocity(perf: Performance, rng: np.random.Generator, amount: int) -> Performance:
    """Add uniform integer noise in [-amount, amount] to each velocity, clamped into 1..127."""
    noise = rng.integers(-amount, amount + 1, size=perf.num_notes)
    return replace(perf, velocity=np.clip(perf.velocity + noise, 1, 127))


# --------------------------------------------------------------------------- performance -> ids
def _quantise(t: np.ndarray) -> np.ndarray:
    """SPEC rule 2: floor(t * 100 + 0.5) on absolute float64 times."""
    return np.floor(np.asarray(t, dtype=np.float64) * STEPS_PER_SECOND + 0.5).astype(np.int64)


def _merge_intervals(start: np.ndarray, end: np.ndarray):
    """Union of half-open step intervals; touching ones merge, empty ones vanish."""
    keep = end > start
    start, end = start[keep], end[keep]
    if not len(start):
        return start, end
    order = np.argsort(start, kind="stable")
    start, end = start[order], end[order]
    reach = np.maximum.accumulate(end)
    new = np.concatenate(([True], start[1:] > reach[:-1]))
    group = np.cumsum(new) - 1
    return start[new], np.maximum.reduceat(end, np.flatnonzero(new))[: group[-1] + 1]


def performance_to_ids(perf: Performance, sustain: str = "events") -> np.ndarray:
    """SPEC rules 2-8: quantise, apply the pedal mode and same-pitch rules, emit event ids."""
    if sustain not in SUSTAIN_MODES:
        raise ValueError(f"sustain must be one of {SUSTAIN_MODES}, got {sustain!r}")
    if perf.num_notes == 0:
        return np.empty(0, dtype=np.int64)
    start = _quantise(perf.onset)
    end = np.maximum(_quantise(perf.offset), start + 1)
    pitch = perf.pitch
    vbin = velocity_bin(perf.velocity)

    # Rule 3: pedal intervals in steps; one still down closes at the last note's end step.
    last = end.max()
    p_start = _quantise(perf.pedal_down)
    closed = np.isfinite(perf.pedal_up)
    p_end = np.where(closed, _quantise(np.where(closed, perf.pedal_up, 0.0)), last)
    p_start, p_end = _merge_intervals(p_start, p_end)

    if sustain == "extend" and len(p_start):
        # Rule 4: an end e in [a, b) moves to b.
        k = np.searchsorted(p_start, end, side="right") - 1
        inside = (k >= 0) & (end < p_end[np.maximum(k, 0)])
        end = np.where(inside, p_end[np.maximum(k, 0)], end)

    # Rule 5a: same pitch, same onset -> one note (latest end, highest velocity).
    order = np.lexsort((start, pitch))
    start, end, pitch, vbin = start[order], end[order], pitch[order], vbin[order]
    first = np.concatenate(([True], (pitch[1:] != pitch[:-1]) | (start[1:] != start[:-1])))
    if not first.all():
        idx = np.flatnonzero(first)
        end = np.maximum.reduceat(end, idx)
        vbin = np.maximum.reduceat(vbin, idx)
        start, pitch = start[idx], pitch[idx]
    # Rule 5b: a new onset ends the earlier sounding note of that pitch.
    same_next = np.concatenate((pitch[1:] == pitch[:-1], [False]))
    nxt = np.concatenate((start[1:], [0]))
    end = np.where(same_next, np.minimum(end, nxt), end)

    # Rule 7: events as (step, kind, pitch) with kind 0 NOTE_OFF, 1 SUSTAIN_OFF, 2 SUSTAIN_ON,
    # 3 NOTE_ON; one lexsort gives the in-step order.
    n, p = len(start), len(p_start) if sustain == "events" else 0
    step = np.concatenate((end, start, p_end[:p], p_start[:p]))
    kind = np.concatenate((np.zeros(n, np.int64), np.full(n, 3), np.ones(p, np.int64), np.full(p, 2)))
    key = np.concatenate((pitch, pitch, np.zeros(2 * p, np.int64)))
    ev_id = np.concatenate((NOTE_OFF + pitch, NOTE_ON + pitch,
                            np.full(p, SUSTAIN_OFF), np.full(p, SUSTAIN_ON)))
    ev_bin = np.concatenate((np.zeros(n, np.int64), vbin, np.zeros(2 * p, np.int64)))
    order = np.lexsort((key, kind, step))
    step, kind, ev_id, ev_bin = step[order], kind[order], ev_id[order], ev_bin[order]

    # Rule 7: a VELOCITY token before an onset whose bin differs from the last one emitted.
    onset_pos = np.flatnonzero(kind == 3)
    onset_bin = ev_bin[onset_pos]
    changed = np.concatenate(([True], onset_bin[1:] != onset_bin[:-1]))
    has_vel = np.zeros(len(step), np.int64)
    has_vel[onset_pos[changed]] = 1

    # Rule 8: shifts from step 0; full 1 s shifts then one for the remainder.
    gap = np.diff(step, prepend=0)
    full, rem = gap // MAX_SHIFT, gap % MAX_SHIFT
    n_shift = full + (rem > 0)
    size = n_shift + has_vel + 1
    ends = np.cumsum(size)
    begin = ends - size
    out = np.full(int(ends[-1]), TIME_SHIFT + MAX_SHIFT - 1, dtype=np.int64)  # TIME_SHIFT_1000
    r = rem > 0
    out[(begin + n_shift - 1)[r]] = TIME_SHIFT - 1 + rem[r]
    v = has_vel.astype(bool)
    out[(ends - 2)[v]] = VELOCITY - 1 + ev_bin[v]
    out[ends - 1] = ev_id
    return out


def encode(midi: MidiLike, sustain: str = "events", source: str | None = None) -> np.ndarray:
    """MIDI (path, bytes or ``symusic.Score``) to event ids, without special tokens."""
    return performance_to_ids(score_to_performance(load_score(midi, source)), sustain)


# --------------------------------------------------------------------------- ids -> MIDI
def check_ids(ids) -> np.ndarray:
    """ids as an int64 array; ``TokenIdError`` naming the first id outside 0..392 and its position."""
    arr = np.asarray(ids)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            bad = int(np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))[0])
            raise TokenIdError(f"token id {arr[bad]!r} at position {bad} is not an integer")
    arr = arr.astype(np.int64)
    bad = np.flatnonzero((arr < 0) | (arr >= VOCAB_SIZE))
    if len(bad):
        raise TokenIdError(
            f"token id {int(arr[bad[0]])} at position {int(bad[0])} is outside 0..{VOCAB_SIZE - 1}"
        )
    return arr


def ids_to_notes(ids) -> dict[str, np.ndarray]:
    """Decode ids to note and pedal arrays in steps (SPEC "ids -> MIDI"), fully vectorised.

    Returns ``start``, ``end``, ``pitch``, ``velocity`` (notes, sorted by start then pitch),
    ``pedal_time``, ``pedal_value`` (CC64 changes, 127 or 0) and ``end_step`` (the final time).
    """
    ids = check_ids(ids)
    stop = np.flatnonzero(ids == EOS_ID)
    if len(stop):
        ids = ids[: stop[0]]
    ids = ids[ids < PAD_ID]  # <pad> and <bos> are skipped
    clock = np.cumsum(shift_steps(ids))  # time at each token (shifts advance before later tokens)
    final = int(clock[-1]) if len(ids) else 0

    # Velocity in force at each token: forward-fill the last VELOCITY token.
    is_vel = (ids >= VELOCITY) & (ids < SUSTAIN_ON)
    last_vel = np.maximum.accumulate(np.where(is_vel, np.arange(len(ids)), -1)) if len(ids) else ids
    vel_now = np.where(last_vel >= 0, bin_velocity(ids[np.maximum(last_vel, 0)] - (VELOCITY - 1)), DEFAULT_VELOCITY)

    # Notes: per pitch, each NOTE_ON lasts until the next NOTE_ON/NOTE_OFF of that pitch.
    is_note = ids < TIME_SHIFT
    pos = np.flatnonzero(is_note)
    p = ids[pos] % 128
    is_on = ids[pos] < NOTE_OFF
    order = np.lexsort((pos, p))
    pos, p, is_on = pos[order], p[order], is_on[order]
    has_next = np.concatenate((p[1:] == p[:-1], [False]))
    nxt_time = np.concatenate((clock[pos[1:]], [0])) if len(pos) else np.empty(0, np.int64)
    start = clock[pos]
    end = np.where(has_next, nxt_time, final)
    on = is_on
    start, end, pitch, vel = start[on], end[on], p[on], vel_now[pos[on]]
    end = np.maximum(end, start + 1)  # a note ending at its start lasts one step
    order = np.lexsort((pitch, start))

    # Pedal: keep only changes of state (ON while down / OFF while up are ignored).
    ped = np.flatnonzero(ids >= SUSTAIN_ON)
    down = (ids[ped] == SUSTAIN_ON).astype(np.int64)
    change = np.diff(down, prepend=0) != 0
    ped_time, ped_val = clock[ped[change]], np.where(down[change] == 1, 127, 0)
    if len(ped_val) and ped_val[-1] == 127:  # still down at the end: release at the final time
        ped_time, ped_val = np.append(ped_time, final), np.append(ped_val, 0)
    return {
        "start": start[order], "end": end[order], "pitch": pitch[order], "velocity": vel[order],
        "pedal_time": ped_time, "pedal_value": ped_val, "end_step": final,
    }


def decode(ids) -> symusic.Score:
    """Ids to a one-track piano ``symusic.Score`` in ticks (500 a quarter at 120 bpm: 10 per step).

    Never raises for ids in 0..392; ``TokenIdError`` for any other id.
    """
    d = ids_to_notes(ids)
    score = symusic.Score(DECODE_TPQ)
    score.tempos.append(symusic.Tempo(0, 120.0))
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    track = symusic.Track("Piano", 0, False)
    if len(d["start"]):
        track.notes = symusic.Note.from_numpy(
            (d["start"] * TICKS_PER_STEP).astype(np.int32),
            ((d["end"] - d["start"]) * TICKS_PER_STEP).astype(np.int32),
            d["pitch"].astype(np.int8),
            d["velocity"].astype(np.int8),
            "tick",
        )
    if len(d["pedal_time"]):
        track.controls = symusic.ControlChange.from_numpy(
            (d["pedal_time"] * TICKS_PER_STEP).astype(np.int32),
            np.full(len(d["pedal_time"]), 64, np.uint8),
            d["pedal_value"].astype(np.uint8),
            "tick",
        )
    score.tracks.append(track)
    return score


__all__ = [
    "BOS_ID", "DECODE_TPQ", "EOS_ID", "FAMILIES", "MAX_SHIFT", "NOTE_OFF", "NOTE_ON", "NUM_EVENTS",
    "PAD_ID", "STEPS_PER_SECOND", "SUSTAIN_MODES", "SUSTAIN_OFF", "SUSTAIN_ON", "TIME_SHIFT",
    "VELOCITY", "VOCAB_SIZE", "MidiError", "MidiLike", "MidiReadError", "Performance",
    "TokenIdError", "bin_velocity", "check_ids", "check_smf", "decode", "encode", "event_family",
    "ids_to_notes", "jitter_velocity", "load_score", "performance_to_ids", "score_to_performance",
    "shift_steps", "stretch", "token_names", "transpose", "velocity_bin",
]
