# Copied from hf-midi's hf_midi/remote_code/codec.py by hf_midi.hub (`python -m hf_midi.hub`, `hf-midi export`); edit it there.
"""MIDI <-> performance-event ids: the vocabulary contract, ``docs/vocabulary.md`` in the hf-midi
repository (its rules are cited here by number). In short: ids 0-127 NOTE_ON and 128-255 NOTE_OFF of a
MIDI pitch, 256-355 TIME_SHIFT of 1..100 steps of 10 ms, 356-387 VELOCITY bins 1..32 (b = (v - 1) // 4
+ 1), 388 SUSTAIN_ON, 389 SUSTAIN_OFF, then <pad> 390, <bos> 391, <eos> 392. Times are rounded to the
step on absolute times; within a step: releases, pedal up, pedal down, onsets (pitches ascending).

Pure functions over numpy arrays and ``symusic`` scores; nothing here imports transformers, so
this file (with ``tokenization_midi.py`` beside it) also works as Hub remote code.

The path from a file to ids is::

    bytes --check_smf--> symusic.Score (seconds) --score_to_performance--> Performance
          --(optional augmentation: transpose / stretch / jitter)--> performance_to_ids --> ids

``Performance`` holds times in float64 seconds, *before* quantisation, so that time stretching
happens before rounding (rule 2) and transposition is exact.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, replace
from typing import Union

import numpy as np
import symusic

from .errors import HfMidiError

# ------------------------------------------------------------- vocabulary (docs/vocabulary.md, "The 393 ids")
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
PIANO_KEYS = (21, 108)  # A0..C8: the MIDI pitches a piano has
MAX_SECONDS = 3600.0  # the longest piece generation accepts: one hour of music; more is taken as a typo
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
    """Rule 6: b = (v - 1) // 4 + 1, with v clamped into 1..127."""
    v = np.clip(np.asarray(velocity, dtype=np.int64), 1, 127)
    return (v - 1) // 4 + 1


def bin_velocity(b) -> np.ndarray:
    """A velocity inside bin ``b`` (1..32): 4b - 2, i.e. 2, 6, ..., 126."""
    return 4 * np.asarray(b, dtype=np.int64) - 2


# --------------------------------------------------------------------------- errors
class MidiReadError(HfMidiError):
    """A MIDI file or buffer could not be read: missing, not MIDI, truncated or corrupt."""

    def __init__(self, source: str, problem: str):
        self.source, self.problem = source, problem
        super().__init__(f"{source}: {problem}")


class TokenIdError(HfMidiError):
    """Token ids that are not in the vocabulary."""


# --------------------------------------------------------------------------- reading MIDI safely
# symusic 0.5.9 (pinned: the version that can render audio) corrupts memory, and can crash the
# interpreter, on some broken files (edge_cases/.../Issue104_Bizarre_Love_Triangle2.mid). Reading
# its parser (minimidi, and symusic's src/io/midi.cpp) shows two unsafe paths:
#   1. a track chunk whose declared length runs past the end of the file is read past the buffer;
#   2. a note event (status 8n/9n) whose pitch byte is >= 0x80 indexes symusic's 16 x 128 table of
#      sounding notes with channel * 128 + pitch; on channel 15 that lands outside the table.
# Every other path is bounds-checked (it raises) or stores the byte as a value. So ``check_smf``
# walks the chunks (1), and for (2) a pitch byte can only follow a status byte literally, so a
# file without a byte pair (0x8F or 0x9F, >= 0x80) is safe. The few files with such a pair (1 %
# of POP909 + ASAP, in 3-byte delta times or text) are walked event by event exactly as minimidi
# walks them, which finds whether the pair is a note event. Bytes above 127 that symusic stores as
# values (pitch, velocity, controller) are reported after parsing, see ``_check_values``.
# Re-read these notes before changing the symusic pin.

_VLQ = rb"[\x80-\xff]{0,3}[\x00-\x7f]"
_D = rb"[\x00-\x7f]"
# Runs of plain channel events (status 80-EF, or running status, with data bytes below 128):
# minimidi parses these exactly as this pattern splits them, so the walk skips them at C speed.
_CHANNEL_RUN = re.compile(
    rb"(?:" + _VLQ + rb"(?P<s2>[\x80-\xbf\xe0-\xef])" + _D + _D + rb"(?:" + _VLQ + _D + _D + rb")*"
    rb"|" + _VLQ + rb"(?P<s1>[\xc0-\xdf])" + _D + rb"(?:" + _VLQ + _D + rb")*)*"
)
_RUNNING = {3: re.compile(rb"(?:" + _VLQ + _D + _D + rb")*"), 2: re.compile(rb"(?:" + _VLQ + _D + rb")*")}
# Message length (status byte included) that minimidi gives each status byte: channel messages 3
# or 2, system messages 1-3, and 255 for the undefined F4, F5, F9, FD (65535 cast to uint8).
_MSG_LEN = bytes(
    0 if s < 0x80 else 2 if 0xC0 <= s < 0xE0 else 3 if s < 0xF0
    else {0xF1: 2, 0xF2: 3, 0xF3: 2, 0xF4: 255, 0xF5: 255, 0xF9: 255, 0xFD: 255}.get(s, 1)
    for s in range(256)
)


def _vlq_end(b: bytes, j: int) -> tuple[int, int]:
    """minimidi's variable-length number at ``j``: 1 to 4 bytes (the 4th whatever its top bit)."""
    value, n = 0, len(b)
    for k in range(j, j + 4):
        if k >= n:
            return value, k + 1  # past the buffer: every caller's bound check then fails
        value = (value << 7) | (b[k] & 0x7F)
        if b[k] < 0x80:
            return value, k + 1
    return value, j + 4


def _unsafe_note(b: bytes, j: int, end: int) -> int:
    """Position of the first channel-15 note event in track body ``b[j:end]`` whose pitch byte is
    >= 0x80, walking events exactly as minimidi 0.5.9 does; -1 if it parses none.

    Where minimidi would raise (an event running past the end, running status with nothing
    before it) nothing after is parsed, so the walk stops there too.
    """
    prev_status = prev_len = 0  # running status, as minimidi keeps it
    while j < end:
        if prev_len in _RUNNING and prev_status < 0xF0:
            j = _RUNNING[prev_len].match(b, j, end).end()
        m = _CHANNEL_RUN.match(b, j, end)
        if m.end() > j:
            j, last = m.end(), max(m.start("s1"), m.start("s2"))
            prev_status, prev_len = b[last], _MSG_LEN[b[last]]
            continue
        _, j = _vlq_end(b, j)  # delta time
        if j >= end:  # every event starting here fails minimidi's bound checks
            return -1
        c = b[j]
        if c == 0xF0 or c == 0xFF:  # sysex: F0 len data; meta: FF type len data
            length, k = _vlq_end(b, j + (1 if c == 0xF0 else 2))
            length += k - j
            if j + length > end:
                return -1
            if c == 0xFF and b[j + 1] == 0x2F:  # end of track: minimidi stops here
                return -1
            if c == 0xF0:  # sysex sets minimidi's running status; meta leaves it alone
                prev_status, prev_len = c, length
            j += length
        elif c < 0x80:  # running status: the first byte (the pitch of a note) is below 0x80
            if prev_len == 0 or j + prev_len - 1 > end:
                return -1
            j += prev_len - 1
        else:
            prev_status, prev_len = c, _MSG_LEN[c]
            if j + prev_len > end:
                return -1
            # Only channel 15 runs off symusic's table; on the others a pitch byte above 127
            # stays in bounds and is caught after parsing, as for every file.
            if (c | 0x10) == 0x9F and b[j + 1] >= 0x80:
                return j
            j += prev_len
    return -1


def check_smf(data: bytes, source: str = "<bytes>") -> None:
    """Raise ``MidiReadError`` unless ``data`` is a Standard MIDI File symusic can safely parse.

    Checks the header, that every chunk fits in the file and that the header's tracks are there,
    and that no channel-15 note event has a pitch byte above 127 (which symusic 0.5.9 turns into
    an out-of-bounds write). Other grammar errors are left to symusic, which raises on them;
    bytes above 127 that it stores as values are caught by ``load_score``/``score_to_performance``.
    Unknown chunks and up to 7 trailing bytes are tolerated, as symusic does.
    """
    if len(data) == 0:
        raise MidiReadError(source, "the file is empty (0 bytes)")
    if data[:4] != b"MThd":
        raise MidiReadError(source, "not a MIDI file (it does not start with 'MThd')")
    if len(data) < 14:
        raise MidiReadError(source, f"truncated MIDI header ({len(data)} bytes)")
    header_len, fmt, ntracks, division = struct.unpack_from(">IHHH", data, 4)
    if header_len != 6:
        raise MidiReadError(source, f"MIDI header length is {header_len}, expected 6")
    if fmt > 2:
        raise MidiReadError(source, f"MIDI format {fmt} is not 0, 1 or 2")
    if division == 0:
        raise MidiReadError(source, "MIDI header gives 0 ticks per quarter note")
    # symusic reads the first ``ntracks`` MTrk chunks from byte 14 and nothing after them.
    tracks, i, found = [], 14, 0
    while found < ntracks and i + 8 <= len(data):
        length = struct.unpack_from(">I", data, i + 4)[0]
        if i + 8 + length > len(data):
            raise MidiReadError(
                source,
                f"truncated: chunk {len(tracks) + 1} declares {length} bytes "
                f"but only {len(data) - i - 8} remain",
            )
        if data[i : i + 4] == b"MTrk":
            found += 1
            tracks.append((i + 8, i + 8 + length))
        i += 8 + length
    if found < ntracks:
        raise MidiReadError(
            source, f"truncated: the header declares {ntracks} tracks but the file holds {found}"
        )
    if b"\x8f" in data or b"\x9f" in data:  # memchr: most files have neither byte
        a = np.frombuffer(data, np.uint8)
        if np.any(((a[:-1] | 0x10) == 0x9F) & (a[1:] >= 0x80)):
            for k, (body, end) in enumerate(tracks, 1):
                at = _unsafe_note(data, body, end)
                if at >= 0:
                    raise MidiReadError(
                        source,
                        f"corrupt track {k}: the note event at byte {at} has pitch byte "
                        f"0x{data[at + 1]:02X}, above 127",
                    )


# typing.Union, not X | Y: symusic.Score is a factory object, and `type | object` fails at run time.
MidiLike = Union[str, os.PathLike, bytes, bytearray, memoryview, symusic.Score]  # noqa: UP007


def _read_score(midi: MidiLike, source: str | None) -> tuple[symusic.Score, str]:
    """``load_score`` without the value check: the score in seconds, and the name for errors."""
    if isinstance(midi, symusic.Score):
        score = midi if isinstance(midi.ttype, symusic.core.Second) else midi.to("second")
        return score, source or "<score>"
    if isinstance(midi, (bytes, bytearray, memoryview)):
        data, source = bytes(midi), source or "<bytes>"
    elif isinstance(midi, (str, os.PathLike)):
        path = os.fspath(midi)
        source = source or path
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise MidiReadError(source, "no such file") from None
        except IsADirectoryError:
            raise MidiReadError(source, "is a directory, not a MIDI file") from None
        except OSError as e:
            raise MidiReadError(source, f"cannot be read ({e.strerror or e})") from None
    else:
        raise TypeError(f"expected a path, bytes or symusic.Score, got {type(midi).__name__}")
    check_smf(data, source)
    try:
        return symusic.Score.from_midi(data, ttype="second"), source
    except Exception as e:  # symusic raises RuntimeError with its own wording
        raise MidiReadError(source, f"symusic could not parse it: {e}") from None


def _check_values(source: str, k: int, track, notes=None, controls=None) -> None:
    """Values symusic stores from bytes above 127 (int8 pitch/velocity wrap below 0)."""
    if notes is not None and len(notes["pitch"]):
        for field in ("pitch", "velocity"):
            v = notes[field]
            if v.min() < 0:
                raise MidiReadError(
                    source, f"corrupt track {k} ({track.name!r}): a note has {field} "
                    f"{int(v.min()) + 256}, above 127",
                )
    if controls is not None and len(controls["number"]):
        for field in ("number", "value"):
            v = controls[field]
            if v.max() > 127:
                raise MidiReadError(
                    source, f"corrupt track {k} ({track.name!r}): a control change has "
                    f"{field} {int(v.max())}, above 127",
                )


def load_score(midi: MidiLike, source: str | None = None) -> symusic.Score:
    """Read a path, raw bytes or a ``symusic.Score`` into a score in seconds (tempo map applied).

    Errors are ``MidiReadError`` naming ``source`` (default: the path, or ``<bytes>``).
    """
    score, source = _read_score(midi, source)
    for k, track in enumerate(score.tracks, 1):
        _check_values(source, k, track, track.notes.numpy(), track.controls.numpy())
    return score


def drum_note(score: symusic.Score) -> str:
    """What to add when a score has no piano notes: `` (drum tracks are ignored)`` when it has drum notes
    (rule 1 drops them), else nothing. The CLI, the pipeline and the Space say it the same way."""
    return " (drum tracks are ignored)" if any(t.is_drum and len(t.notes) for t in score.tracks) else ""


# --------------------------------------------------------------------------- score -> performance
@dataclass(frozen=True)
class Performance:
    """One piano stream in seconds, before quantisation.

    ``pedal_down``/``pedal_up`` are the per-track pedal intervals derived from CC64 (rule 3);
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
    """Down/up times of one track's CC64 (down while value >= 64), in time order; an up time is
    ``inf`` for a pedal still down at the end."""
    sel = numbers == 64
    if not sel.any():
        return np.empty(0, times.dtype), np.empty(0, times.dtype)
    t, v = times[sel], values[sel]
    order = np.argsort(t, kind="stable")  # a no-op pass on the usual (sorted) track
    t, down = t[order], v[order] >= 64
    change = np.flatnonzero(down[1:] != down[:-1]) + 1
    if down[0]:
        change = np.concatenate(([0], change))
    starts, ends = t[change[0::2]], t[change[1::2]]
    if len(ends) < len(starts):  # still down at the end
        ends = np.concatenate((ends, [np.inf])).astype(t.dtype)
    return starts, ends


def score_to_performance(score: symusic.Score, source: str | None = None) -> Performance:
    """Rules 1 and 3: merge the non-drum tracks, collect pedal intervals from CC64.

    Raises ``MidiReadError`` (naming ``source``, default ``<score>``) for values no well-formed
    MIDI file holds: a pitch, velocity or controller byte above 127.
    """
    if not isinstance(score.ttype, symusic.core.Second):
        score = score.to("second")
    source = source or "<score>"
    time, dur, pitch, vel, cc_tracks = [], [], [], [], []
    for k, track in enumerate(score.tracks, 1):
        notes = track.notes.numpy() if len(track.notes) else None
        controls = track.controls.numpy() if len(track.controls) else None
        if track.is_drum:  # dropped, but checked like the rest so load_score and encode agree
            _check_values(source, k, track, notes, controls)
            continue
        if notes is not None:
            time.append(notes["time"])
            dur.append(notes["duration"])
            pitch.append(notes["pitch"])
            vel.append(notes["velocity"])
        if controls is not None:
            cc_tracks.append((k, track, controls))
    if time:
        t32, pitch, vel = np.concatenate(time), np.concatenate(pitch), np.concatenate(vel)
        # Bytes above 127 wrap below 0 in symusic's int8 pitch and velocity: one check for all
        # tracks, then the slow search for the track to name.
        if pitch.min() < 0 or vel.min() < 0:
            for k, track in enumerate(score.tracks, 1):
                if not track.is_drum and len(track.notes):
                    _check_values(source, k, track, track.notes.numpy())
        # Rule 2: the float32 times symusic reports (the end being its float32 time +
        # duration, as Note.end gives it), promoted to float64 before any arithmetic.
        onset, offset = t32.astype(np.float64), (t32 + np.concatenate(dur)).astype(np.float64)
        pitch, vel = pitch.astype(np.int64), vel.astype(np.int64)
    else:
        onset, offset, pitch, vel = np.empty(0), np.empty(0), np.empty(0, np.int64), np.empty(0, np.int64)
    p_down, p_up = [], []
    for k, track, controls in cc_tracks:
        if (controls["number"] | controls["value"]).max() > 127:
            _check_values(source, k, track, None, controls)
        d, u = _pedal_intervals(controls["time"], controls["number"], controls["value"])
        p_down.append(d)
        p_up.append(u)
    if p_down:
        p_down = np.concatenate(p_down).astype(np.float64)
        p_up = np.concatenate(p_up).astype(np.float64)
    else:
        p_down, p_up = np.empty(0), np.empty(0)
    return Performance(onset, offset, pitch, vel, p_down, p_up)


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
        raise HfMidiError(f"stretch factor must be > 0, got {factor}")
    return replace(
        perf, onset=perf.onset * f, offset=perf.offset * f, pedal_down=perf.pedal_down * f,
        pedal_up=perf.pedal_up * f,
    )


def jitter_velocity(perf: Performance, rng: np.random.Generator, amount: int) -> Performance:
    """Add uniform integer noise in [-amount, amount] to each velocity, clamped into 1..127."""
    noise = rng.integers(-amount, amount + 1, size=perf.num_notes)
    return replace(perf, velocity=np.clip(perf.velocity + noise, 1, 127))


# --------------------------------------------------------------------------- performance -> ids
def never_generated(vocab_size: int = VOCAB_SIZE) -> list[int]:
    """Ids a model must never emit: ``<pad>``, ``<bos>`` and the rows that pad an embedding wider than the
    vocabulary (``vocab_size`` of them in all). The one answer for generation configs and processors."""
    return [PAD_ID, BOS_ID, *range(VOCAB_SIZE, int(vocab_size))]


def seconds_to_steps(seconds: float) -> int:
    """A length in seconds as 10 ms steps, by rule 2's rounding (``floor(s * 100 + 0.5)``: 0.125 s is 13
    steps), the one rounding of seconds to steps everywhere (generation's limits, the listener's checks)."""
    return int(_quantise(np.float64(seconds)))


def to_steps(seconds) -> np.ndarray:
    """Times in seconds (an array) as 10 ms steps, by rule 2's rounding: ``seconds_to_steps`` for many."""
    return _quantise(seconds)


def _quantise(t: np.ndarray) -> np.ndarray:
    """Rule 2: floor(t * 100 + 0.5) on absolute float64 times.

    The cast truncates, which is the floor for every t >= -0.005 s; earlier times (an error for
    notes, clamped to 0 for pedals) may come out one step late.
    """
    x = np.asarray(t, dtype=np.float64) * STEPS_PER_SECOND
    x += 0.5
    return x.astype(np.int64)


def _merge_intervals(start: np.ndarray, end: np.ndarray):
    """Union of half-open step intervals; touching ones merge, empty ones vanish."""
    keep = end > start
    if not keep.all():
        start, end = start[keep], end[keep]
    if len(start) < 2:
        return start, end
    if (start[1:] < start[:-1]).any():  # one track's intervals come sorted
        order = np.argsort(start, kind="stable")
        start, end = start[order], end[order]
    reach = np.maximum.accumulate(end)
    new = np.flatnonzero(start[1:] > reach[:-1]) + 1
    if len(new) == len(start) - 1:  # none touch or overlap
        return start, end
    new = np.concatenate(([0], new))
    return start[new], np.maximum.reduceat(end, new)


# Events are sorted as one int64 key per event, so that a single sort gives rule 7's order
# and the key alone says what to emit: step << 15 | kind << 13 | pitch << 6 | has_velocity << 5
# | (velocity bin - 1). Kinds in their in-step order: NOTE_OFF, SUSTAIN_OFF, SUSTAIN_ON, NOTE_ON.
_KIND_SHIFT, _PITCH_SHIFT, _STEP_SHIFT = 13, 6, 15
_MAX_STEP = 1 << 47  # keys stay below 2**62: 44 000 years
_BIN_MINUS_1 = (np.maximum(np.arange(128), 1) - 1) // 4  # velocity 0..127 -> bin - 1
# Event id of each (kind << 7 | pitch).
_EVENT_ID = np.concatenate((
    NOTE_OFF + np.arange(128), np.full(128, SUSTAIN_OFF), np.full(128, SUSTAIN_ON), NOTE_ON + np.arange(128),
)).astype(np.int64)


def performance_to_ids(perf: Performance, sustain: str = "events") -> np.ndarray:
    """Rules 2-8: quantise, apply the pedal mode and same-pitch rules, emit event ids."""
    if sustain not in SUSTAIN_MODES:
        raise HfMidiError(f"sustain must be one of {SUSTAIN_MODES}, got {sustain!r}")
    if perf.num_notes == 0:
        return np.empty(0, dtype=np.int64)
    n = perf.num_notes
    start, end = _quantise(np.concatenate((perf.onset, perf.offset))).reshape(2, n)
    end = np.maximum(end, start + 1)
    last = int(end.max())
    if start.min() < 0 or last >= _MAX_STEP:
        raise HfMidiError(f"note times must lie in 0..{_MAX_STEP // 100} s, got {start.min() / 100} s "
                         f"to {last / 100} s")

    # Rule 3: pedal intervals in steps; one still down closes at the last note's end step.
    p_start = p_end = np.empty(0, np.int64)
    if sustain != "ignore" and len(perf.pedal_down):
        closed = np.isfinite(perf.pedal_up)
        up = np.where(closed, perf.pedal_up, 0.0)
        p_start, p_end = _quantise(np.concatenate((perf.pedal_down, up))).reshape(2, len(up))
        p_end[~closed] = last
        if p_start.min() < 0 or p_end.max() >= _MAX_STEP:
            p_start, p_end = np.maximum(p_start, 0), np.minimum(p_end, _MAX_STEP - 1)
        p_start, p_end = _merge_intervals(p_start, p_end)
    if sustain == "extend" and len(p_start):
        # Rule 4: an end e in [a, b) moves to b.
        k = np.maximum(np.searchsorted(p_start, end, side="right") - 1, 0)
        end = np.where((end >= p_start[k]) & (end < p_end[k]), p_end[k], end)

    # Notes sorted by (onset, pitch, velocity bin). Each track's notes come sorted by onset, so
    # the stable sort (timsort) only merges a few runs.
    key = (start << _STEP_SHIFT) | (perf.pitch << _PITCH_SHIFT)
    key |= _BIN_MINUS_1.take(perf.velocity, mode="clip")  # rule 6, v clamped into 1..127
    order = np.argsort(key, kind="stable")
    key, end = key[order], end[order]
    # Rule 5a: same pitch, same onset -> one note with the latest end and the highest velocity,
    # which is the group's last key (the bin is the key's lowest field).
    onset_pitch = key >> _PITCH_SHIFT
    new = onset_pitch[1:] != onset_pitch[:-1]
    if not new.all():
        last_of = np.flatnonzero(np.concatenate((new, [True])))
        end = np.maximum.reduceat(end, np.concatenate(([0], last_of[:-1] + 1)))
        key = key[last_of]
    start, pitch = key >> _STEP_SHIFT, (key >> _PITCH_SHIFT) & 127
    # Rule 5b: a new onset ends the earlier sounding note of that pitch. A stable radix sort by
    # pitch keeps each pitch's notes in onset order.
    by_pitch = np.argsort(pitch.astype(np.int16), kind="stable")
    p_sorted = pitch[by_pitch]
    later = np.flatnonzero(p_sorted[1:] == p_sorted[:-1])
    earlier = by_pitch[later]
    end[earlier] = np.minimum(end[earlier], start[by_pitch[later + 1]])

    # Rule 7: one key per event, sorted. A VELOCITY token goes before an onset whose bin differs
    # from the previous onset's; onsets are already in their final relative order.
    vbin = key & 31
    has_vel = np.empty(len(key), np.int64)
    has_vel[0] = 1 << 5
    np.not_equal(vbin[1:], vbin[:-1], out=has_vel[1:])
    has_vel[1:] <<= 5
    on_key = (key & ~31) | (3 << _KIND_SHIFT) | has_vel | vbin
    off_key = (end << _STEP_SHIFT) | (pitch << _PITCH_SHIFT)
    if sustain == "events" and len(p_start):
        parts = (off_key, (p_end << _STEP_SHIFT) | (1 << _KIND_SHIFT),
                 (p_start << _STEP_SHIFT) | (2 << _KIND_SHIFT), on_key)
    else:
        parts = (off_key, on_key)
    return _expand(np.sort(np.concatenate(parts), kind="stable"))  # onsets and pedal are sorted runs already


def _expand(ev: np.ndarray) -> np.ndarray:
    """Rule 8: the sorted event keys as ids, shifts from step 0; full 1 s shifts then one for the
    remainder. Each event expands to [TIME_SHIFT_1000 x full, TIME_SHIFT_rem (rem > 0), VELOCITY_b (if
    flagged), the event]."""
    step = ev >> _STEP_SHIFT
    gap = np.empty_like(step)
    gap[0] = step[0]
    np.subtract(step[1:], step[:-1], out=gap[1:])
    full = gap // MAX_SHIFT
    rem = gap - full * MAX_SHIFT
    values = np.empty((len(ev), 4), np.int64)
    values[:, 0] = TIME_SHIFT + MAX_SHIFT - 1
    values[:, 1] = rem + (TIME_SHIFT - 1)
    values[:, 2] = (ev & 31) + VELOCITY
    values[:, 3] = _EVENT_ID.take((ev >> _PITCH_SHIFT) & 511)
    counts = np.empty((len(ev), 4), np.int64)
    counts[:, 0] = full
    counts[:, 1] = rem > 0
    counts[:, 2] = (ev >> 5) & 1
    counts[:, 3] = 1
    return np.repeat(values.ravel(), counts.ravel())


def encode(midi: MidiLike, sustain: str = "events", source: str | None = None) -> np.ndarray:
    """MIDI (path, bytes or ``symusic.Score``) to event ids, without special tokens."""
    score, source = _read_score(midi, source)
    return performance_to_ids(score_to_performance(score, source), sustain)


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
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= VOCAB_SIZE):
        bad = int(np.flatnonzero((arr < 0) | (arr >= VOCAB_SIZE))[0])
        raise TokenIdError(f"token id {int(arr[bad])} at position {bad} is outside 0..{VOCAB_SIZE - 1}")
    return arr


# Steps each id advances the clock, and the velocity of each VELOCITY id, as lookup tables.
_SHIFT_OF = np.where((np.arange(VOCAB_SIZE) >= TIME_SHIFT) & (np.arange(VOCAB_SIZE) < VELOCITY),
                     np.arange(VOCAB_SIZE) - (TIME_SHIFT - 1), 0)
_VELOCITY_OF = np.where((np.arange(VOCAB_SIZE) >= VELOCITY) & (np.arange(VOCAB_SIZE) < SUSTAIN_ON),
                        4 * (np.arange(VOCAB_SIZE) - (VELOCITY - 1)) - 2, DEFAULT_VELOCITY)


def _by_pitch(note_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NOTE_ON/NOTE_OFF ids grouped by pitch: (a stable sort by pitch, which keeps each pitch's events in
    token order; whether sorted event k and k + 1 are of one pitch). The one account of "which note an
    event belongs to", for decoding (``ids_to_notes``) and counting keys down (``keys_down``)."""
    perm = np.argsort((note_ids & 127).astype(np.int16), kind="stable")
    pitch_sorted = note_ids[perm] & 127
    return perm, pitch_sorted[1:] == pitch_sorted[:-1]


def keys_down(ids) -> np.ndarray:
    """How many keys are down after each token of ``ids`` (any ids; only NOTE_ON/NOTE_OFF count): a
    NOTE_ON of a silent pitch presses one, a NOTE_OFF of a sounding pitch lets it go, a re-strike or a
    NOTE_OFF of a silent pitch changes nothing. The pedal does not hold keys down."""
    ids = np.asarray(ids, dtype=np.int64)
    delta = np.zeros(len(ids), np.int64)
    note_pos = np.flatnonzero((ids >= 0) & (ids < TIME_SHIFT))
    if len(note_pos):
        note_ids = ids[note_pos]
        perm, same = _by_pitch(note_ids)
        on = (note_ids[perm] < NOTE_OFF).astype(np.int64)  # each pitch's events, in token order
        before = np.zeros(len(perm), np.int64)  # the pitch down (1) or not before each of its events
        before[1:][same] = on[:-1][same]
        change = np.empty(len(perm), np.int64)
        change[perm] = on - before
        delta[note_pos] = change
    return np.cumsum(delta)


def ids_to_notes(ids) -> dict[str, np.ndarray]:
    """Decode ids to note and pedal arrays in steps ("From ids to MIDI"), fully vectorised.

    Returns ``start``, ``end``, ``pitch``, ``velocity`` (notes, sorted by start then pitch),
    ``pedal_time``, ``pedal_value`` (CC64 changes, 127 or 0) and ``end_step`` (the final time).
    """
    ids = check_ids(ids)
    stop = np.flatnonzero(ids == EOS_ID)
    if len(stop):
        ids = ids[: stop[0]]
    ids = ids[ids < PAD_ID]  # <pad> and <bos> are skipped
    clock = np.cumsum(_SHIFT_OF.take(ids))  # the time at each token
    final = int(clock[-1]) if len(ids) else 0

    # Notes: each NOTE_ON lasts until the next NOTE_ON/NOTE_OFF of its pitch (a re-strike or its
    # end), else until the final time. A stable radix sort by pitch keeps each pitch's events in
    # token order.
    note_pos = np.flatnonzero(ids < TIME_SHIFT)
    note_ids = ids[note_pos]
    perm, same = _by_pitch(note_ids)
    t = clock[note_pos[perm]]
    until = np.full(len(perm), final, np.int64)
    until[:-1][same] = t[1:][same]
    until[perm] = until.copy()  # back to token order
    is_on = note_ids < NOTE_OFF
    on_pos, end = note_pos[is_on], until[is_on]
    start, pitch = clock[on_pos], ids[on_pos]
    end = np.maximum(end, start + 1)  # a note ending at its start lasts one step
    # Velocity in force at each onset: the default, changed at each VELOCITY token (a cumulative
    # sum of the changes).
    vel_pos = np.flatnonzero((ids >= VELOCITY) & (ids < SUSTAIN_ON))
    change = np.zeros(len(ids), np.int64)
    change[vel_pos] = np.diff(_VELOCITY_OF.take(ids[vel_pos]), prepend=DEFAULT_VELOCITY)
    vel = (np.cumsum(change) + DEFAULT_VELOCITY)[on_pos]
    # Token order is onset order; a stable sort puts each step's onsets in pitch order.
    order = np.argsort((start << 7) | pitch, kind="stable")

    # Pedal: keep only changes of state (ON while down / OFF while up are ignored).
    ped = np.flatnonzero(ids >= SUSTAIN_ON)
    down = ids[ped] == SUSTAIN_ON
    change = np.flatnonzero(down != np.concatenate(([False], down[:-1])))
    ped_time, ped_val = clock[ped[change]], np.where(down[change], 127, 0)
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
    "BOS_ID", "DECODE_TPQ", "EOS_ID", "FAMILIES", "MAX_SECONDS", "MAX_SHIFT", "NOTE_OFF", "NOTE_ON", "NUM_EVENTS",
    "PAD_ID", "PIANO_KEYS", "STEPS_PER_SECOND", "SUSTAIN_MODES", "SUSTAIN_OFF", "SUSTAIN_ON", "TIME_SHIFT",
    "VELOCITY", "VOCAB_SIZE", "MidiLike", "MidiReadError", "Performance",
    "TokenIdError", "bin_velocity", "check_ids", "check_smf", "decode", "encode", "event_family",
    "drum_note", "ids_to_notes", "jitter_velocity", "load_score", "performance_to_ids", "score_to_performance",
    "keys_down", "never_generated", "seconds_to_steps", "shift_steps", "stretch", "to_steps", "token_names",
    "transpose",
    "velocity_bin",
]
