"""Playing while composing: ``MusicStreamer``, a transformers streamer that decodes ids as they come into
``MusicChunk``s (keys struck, notes ended, pedal), exactly as the codec decodes a whole piece."""

from __future__ import annotations

import math
import queue
from dataclasses import dataclass, field

from transformers.generation.streamers import BaseStreamer

from .arguments import GenerationError
from .codec import (
    BOS_ID,
    DEFAULT_VELOCITY,
    EOS_ID,
    NOTE_OFF,
    PAD_ID,
    STEPS_PER_SECOND,
    SUSTAIN_ON,
    TIME_SHIFT,
    VELOCITY,
    bin_velocity,
    seconds_to_steps,
)
from .defaults import GENERATION_DEFAULTS


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

    def __init__(self, chunk_seconds: float = GENERATION_DEFAULTS.chunk_seconds, timeout: float | None = None,
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


__all__ = [
    "MusicChunk", "MusicStreamer", "StreamedNote",
]
