"""The hf-midi Space: compose or continue expressive piano music, listen to it, see it, download it.

    python spaces_app/app.py [--model DIR_OR_REPO] [--host 127.0.0.1] [--port 7860]

The logic is plain functions that tests call without a browser: ``read_upload`` (validate an
upload), ``make_settings`` (clamp the knobs), ``generate`` (the pipeline), ``package`` (MIDI, WAV
and piano-roll PNG on disk), ``make_music`` (all of them), ``stream_music`` and ``LiveAudio`` (the
piece while it is composed: chunks of audio to play at once). ``build_demo`` wires them to a
``gr.Blocks`` page, where one variation plays while it is composed (the browser schedules the
chunks with the Web Audio API, ``LIVE_JS``); ``main`` parses the command line and launches it.
"""

from __future__ import annotations

import argparse
import base64
import logging
import math
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

try:
    import gradio as gr
except ModuleNotFoundError as e:  # run as a script without the extra: one line, not a traceback
    if __name__ != "__main__":
        raise
    sys.exit(f"spaces_app/app.py needs the 'space' extra (no module named {e.name!r}): pip install -e '.[space]'")

# In a deployed Space this is the copy of hf_midi beside app.py (python puts the script's folder
# first on sys.path); in a checkout, the installed package. main() logs which.
import hf_midi
from hf_midi.remote_code.arguments import ArgumentError
from hf_midi.remote_code.codec import NUM_EVENTS, PIANO_KEYS, drum_note, load_score, score_to_performance
from hf_midi.remote_code.controls import CONTROL_NAMES, DYNAMICS, MusicControls
from hf_midi.remote_code.defaults import GENERATION_DEFAULTS
from hf_midi.remote_code.errors import HfMidiError

HERE = Path(__file__).resolve().parent
log = logging.getLogger("hf_midi.space")

# ---------------------------------------------------------------------------------------- limits
MAX_UPLOAD_BYTES = 4 * 1024 * 1024  # hours of piano fit in 1 MB; more is not a prompt
MIN_SECONDS, MAX_SECONDS = 2.0, 60.0  # new music per request (its default: GENERATION_DEFAULTS.seconds)
MAX_PROMPT_SECONDS, DEFAULT_PROMPT_SECONDS = 30.0, 10.0  # how much of an upload to keep
MAX_VARIATIONS = 4
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.1, 2.0
MAX_TOP_K = NUM_EVENTS  # larger is the same as off
MAX_SEED = 2**31 - 1
MAX_PIECE_SECONDS = 180.0  # "continue the last result" stops growing a piece here
# One request generates at a time (one torch thread); the others wait in the queue. Two at once
# would use both vCPUs of a free Space, but the pipeline seeds torch's process-wide RNG, so two
# overlapping requests would interleave their draws and a seed would no longer give its piece.
DEFAULT_CONCURRENCY = 1
QUEUE_SIZE = 32
OUTPUT_ROOT = Path(tempfile.gettempdir()) / "hf-midi-space"
KEEP_OUTPUTS_SECONDS = 3600  # request folders older than this are deleted
# Live playback (one variation): the first audio as soon as this much music is decided, then in
# chunks of about a second (fewer, larger messages; the model composes several times faster than
# real time, so the player stays ahead); the growing piano roll is redrawn every few seconds of music.
LIVE_FIRST_SECONDS, LIVE_CHUNK_SECONDS, LIVE_ROLL_SECONDS = 0.25, 1.0, 3.0
LIVE_RATE = 22050
LIVE_GAIN = 1.6  # the synthesizer's raw peak is ~0.3-0.5 for piano; the finished WAV is peak-normalised

# The "Style" group: "Any" leaves a choice to the model; the pitch sliders span the piano's keys.
ANY = "Any"
# "Quality": candidates the critic chooses from for each chunk (search while composing). "Model's choice" is
# the model's own generation config (the bundled models: benchmarks/RESULTS.md, "Music a listener keeps").
MODEL_QUALITY = "Model's choice"
QUALITY = {"Quick (1)": 1, MODEL_QUALITY: None, "Careful (8)": 8}
KEYS = [f"{tonic} {mode}" for tonic in ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
        for mode in ("major", "minor")]
PIANO_LOW, PIANO_HIGH = PIANO_KEYS
MAX_DENSITY_SLIDER, MAX_POLYPHONY_SLIDER = 20, 10
STYLE_LABELS = {"key": "Key", "pitch_range": "Pitch range", "dynamics": "Dynamics", "density": "Notes a second",
                "max_polyphony": "Keys down at once", "pedal": "Sustain pedal"}

COMPOSE, UPLOAD, LAST = "Compose from scratch", "Continue a MIDI file", "Continue the last result"
FILL, ACCOMPANY = "Fill a gap in a MIDI file", "Accompany a melody (MIDI file)"
SOURCES = (COMPOSE, UPLOAD, LAST, FILL, ACCOMPANY)
WRITING = (FILL, ACCOMPANY)  # they write around an upload's notes: the upload sets the length
EXAMPLES_DIR = HERE / "examples"
# Each example names the inputs it sets; the others keep the page's starting values (the model's own
# sampling settings, the Style group left to the model). The MIDI files are POP909 test-split songs (MIT).
EXAMPLES = [
    ("Compose 20 s", dict(seconds=20, seed=7, new_seed=False)),
    ("Two calm takes", dict(seconds=30, temperature=0.8, top_p=0.9, seed=42, new_seed=False, variations=2)),
    ("D minor, soft, no pedal", dict(seconds=20, seed=11, new_seed=False, key="D minor", dynamics="p", pedal=False)),
    ("Sparse, two hands, middle register", dict(seconds=20, seed=5, new_seed=False, pitch_low=48, pitch_high=84,
                                                density=4, max_polyphony=4)),
    ("Continue POP909 #720", dict(source=UPLOAD, upload=str(EXAMPLES_DIR / "pop909-720.mid"), keep=10, seconds=20,
                                  seed=1, new_seed=False)),
    ("Continue POP909 #860, bolder", dict(source=UPLOAD, upload=str(EXAMPLES_DIR / "pop909-860.mid"), keep=6,
                                          seconds=15, temperature=1.1, top_p=1.0, top_k=40, seed=3, new_seed=False,
                                          variations=2)),
    ("Fill 6-10 s of POP909 #720", dict(source=FILL, upload=str(EXAMPLES_DIR / "pop909-720.mid"), fill_start=6,
                                        fill_end=10, seed=2, new_seed=False)),
]
WAITING = ("Press **Generate**: the music plays here while it is composed, then its recording, piano roll and "
           "MIDI file appear below.")
NO_MODEL = (
    "**No model is available.** This copy has no bundled model (`hf_midi/pretrained/base`). "
    "Start the app with `python app.py --model DIR_OR_REPO_ID`, or set `HF_MIDI_MODEL`."
)


# The browser's side of live playback. A click makes (or wakes) one AudioContext: a user gesture
# allows it to sound. Each message "run:seq:base64 WAV" (16-bit mono, as LiveAudio writes it) is
# turned into an AudioBuffer and scheduled right after the previous one, so the chunks play without
# gaps while the model stays ahead; a new run or Stop silences what is scheduled. window.hfMidiLive
# keeps what the benchmark and the tests read: clickedAt, firstSoundAt (performance.now() times),
# chunks, seconds scheduled.
LIVE_START_JS = """(...inputs) => {
    const L = window.hfMidiLive = window.hfMidiLive || {};
    L.ctx = L.ctx || new AudioContext();
    L.ctx.resume();
    L.clickedAt = performance.now();
    L.firstSoundAt = null;
    return inputs;
}"""
LIVE_STOP_JS = """() => {
    const L = window.hfMidiLive;
    if (L && L.sources) { L.sources.forEach(s => { try { s.stop(); } catch (e) {} }); L.sources = []; L.run = null; }
}"""
LIVE_JS = """(payload) => {
    if (!payload) return;
    const [run, seq, data] = payload.split(":");
    const L = window.hfMidiLive = window.hfMidiLive || {};
    const ctx = L.ctx = L.ctx || new AudioContext();
    if (L.run !== run) {
        (L.sources || []).forEach(s => { try { s.stop(); } catch (e) {} });
        Object.assign(L, {run: run, next: 0, sources: [], chunks: 0, seconds: 0, firstSoundAt: null});
    }
    const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
    const view = new DataView(bytes.buffer);
    const rate = view.getUint32(24, true), count = (bytes.length - 44) >> 1;
    const buffer = ctx.createBuffer(1, Math.max(count, 1), rate);
    const samples = buffer.getChannelData(0);
    for (let i = 0; i < count; i++) samples[i] = view.getInt16(44 + 2 * i, true) / 32768;
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(ctx.destination);
    const at = Math.max(ctx.currentTime + 0.03, L.next);
    source.start(at);
    L.next = at + buffer.duration;
    L.sources.push(source);
    L.chunks += 1;
    L.seconds += buffer.duration;
    if (L.firstSoundAt === null) L.firstSoundAt = performance.now() + (at - ctx.currentTime) * 1000;
}"""


class InputError(ValueError):
    """Something the user asked for that the app cannot do; its message is shown in the page."""


class Stopped(Exception):
    """Raised from the progress callback when the user pressed Stop."""


# ---------------------------------------------------------------------------------------- logic
@dataclass(frozen=True)
class Prompt:
    """A validated upload."""

    data: bytes
    name: str
    seconds: float  # until the last note ends
    notes: int
    first: float  # the first note's start, seconds


def read_upload(path: str | os.PathLike | None, max_bytes: int = MAX_UPLOAD_BYTES) -> Prompt:
    """Read and check an uploaded MIDI file; ``InputError``/``HfMidiError`` with a readable message."""
    if path is None or str(path) == "":
        raise InputError("Upload a MIDI file to continue, or choose “Compose from scratch”.")
    path = Path(path)
    name = path.name  # gradio keeps the uploaded file's own name inside a per-upload folder
    size = path.stat().st_size
    if size > max_bytes:
        raise InputError(f"{name} is {size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB.")
    data = path.read_bytes()
    score = load_score(data, source=name)  # MidiReadError names the file
    perf = score_to_performance(score)
    if perf.num_notes == 0:
        raise InputError(f"{name} has no notes to continue{drum_note(score)}.")
    return Prompt(data, name, perf.duration, perf.num_notes, float(perf.onset.min()))


@dataclass(frozen=True)
class Settings:
    """The knobs of one request, clamped to the app's limits."""

    seconds: float
    temperature: float
    top_p: float | None  # None: off
    top_k: int | None  # None: off
    seed: int
    variations: int
    prompt_seconds: float | None  # None: the whole prompt
    controls: MusicControls = MusicControls()  # the "Style" group: what the new music may play
    candidates: int | None = None  # the "Quality" choice: K candidates a chunk; None: the model's own setting


def _number(value, what: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number, got {value!r}.") from None
    if not math.isfinite(x):
        raise InputError(f"{what} must be a finite number, got {value!r}.")
    return x


def make_settings(
    seconds=GENERATION_DEFAULTS.seconds,
    temperature=1.0,
    top_p=1.0,
    top_k=0,
    seed=None,
    variations=1,
    prompt_seconds=None,
    style: dict | None = None,
    quality=MODEL_QUALITY,
) -> Settings:
    """Clamp every knob into its range (API callers can send anything); a random seed for None.
    ``style``: the "Style" group's values (``make_controls``)."""
    top_p = _number(top_p, "top-p")
    top_k = int(_number(top_k, "top-k"))
    seed = random.randint(0, MAX_SEED) if seed is None or seed == "" else int(_number(seed, "Seed"))
    return Settings(
        seconds=min(max(_number(seconds, "Length"), MIN_SECONDS), MAX_SECONDS),
        temperature=min(max(_number(temperature, "Temperature"), MIN_TEMPERATURE), MAX_TEMPERATURE),
        top_p=None if top_p >= 1 else max(top_p, 0.01),
        top_k=None if top_k <= 0 or top_k >= MAX_TOP_K else top_k,
        seed=seed % (MAX_SEED + 1),
        variations=min(max(int(_number(variations, "Variations")), 1), MAX_VARIATIONS),
        prompt_seconds=None
        if prompt_seconds is None
        else min(max(_number(prompt_seconds, "Prompt length"), 1.0), MAX_PROMPT_SECONDS),
        controls=make_controls(**(style or {})),
        candidates=_quality(quality),
    )


def _quality(quality) -> int | None:
    if quality in (None, ""):
        return None
    if quality not in QUALITY:
        raise InputError(f"Quality must be one of {', '.join(QUALITY)}, got {quality!r}.")
    return QUALITY[quality]


def make_controls(key=ANY, pitch_low=PIANO_LOW, pitch_high=PIANO_HIGH, dynamics=ANY, density=0, max_polyphony=0,
                  pedal=True) -> MusicControls:
    """The "Style" group's values as ``MusicControls``: ``ANY`` / 0 / the whole keyboard / the pedal on
    leave that aspect to the model. A value the controls refuse is an ``InputError`` naming the knob
    as the page labels it (an API caller can send anything)."""
    try:
        return MusicControls(
            key=None if key in (None, "", ANY) else key,
            pitch_range=None if (pitch_low, pitch_high) == (PIANO_LOW, PIANO_HIGH) else (
                int(_number(pitch_low, "Lowest pitch")), int(_number(pitch_high, "Highest pitch"))),
            dynamics=None if dynamics in (None, "", ANY) else dynamics,
            density=None if density in (None, "") or _number(density, "Notes a second") == 0 else float(density),
            max_polyphony=None if max_polyphony in (None, "") or _number(max_polyphony, "Keys down") == 0
            else _number(max_polyphony, "Keys down"),
            pedal=None if pedal in (None, True) else pedal,
        )
    except ArgumentError as e:
        raise InputError(f"{STYLE_LABELS.get(e.argument, e.argument)}: {e.problem}.") from None


def generate(pipe, settings: Settings, prompt: bytes | None = None, progress=None, stop=None,
             writing: dict | None = None) -> list[dict]:
    """Run the pipeline. ``progress(done, total)`` in music seconds; a set ``stop`` event ends it. ``writing``:
    the pipeline's fill (``infill``, the upload as ``prompt``) or accompaniment (``melody``, ``accompany``)
    arguments; the upload sets the length."""

    def report(done: float, total: float) -> None:
        if stop is not None and stop.is_set():
            raise Stopped
        if progress is not None:
            progress(done, total)

    arguments = _pipe_arguments(settings, prompt)
    if writing:
        for name in ("seconds", "prompt_seconds", "return_prompt"):
            arguments.pop(name)
        arguments.update(writing)
    return pipe(prompt=prompt, num_return_sequences=settings.variations, progress=report, **arguments)


def _pipe_arguments(settings: Settings, prompt: bytes | None) -> dict:
    """What the page's knobs mean to the pipeline (one variation's worth)."""
    return dict(
        prompt_seconds=settings.prompt_seconds if prompt is not None else None,
        seconds=settings.seconds,
        temperature=settings.temperature,
        top_k=0 if settings.top_k is None else settings.top_k,  # off, not the model's own setting
        top_p=1.0 if settings.top_p is None else settings.top_p,
        seed=settings.seed,
        return_prompt=True,
        # one thread a request (build_demo): requests queue, and 2 threads ran 4-35x slower under load; a search
        # (K candidates a chunk) takes both cores of the Space's machine, one request at a time (the queue's limit)
        threads=1 if settings.candidates == 1 else 2,
        **({} if settings.candidates is None else {"candidates": settings.candidates}),
        **{name: value for name, value in vars(settings.controls).items() if name in CONTROL_NAMES},
    )


class LiveAudio:
    """The audio of a piece while it is composed, as WAV chunks that play one after another.

    ``add(chunk)`` takes the pipeline's next ``MusicChunk`` and returns the audio from where the last
    chunk ended to where this one does (None when no time passed): the piece decoded so far, rendered
    again, and cut there. The synthesizer never looks ahead and the codec ends a still-sounding note
    at the end of what it is given, so the slices join into the render of the finished piece, sample
    for sample (a test holds it). Mono, ``LIVE_GAIN``, no normalisation (its gain would change chunk
    to chunk). Rendering again costs ~1 ms a second of music.
    """

    def __init__(self, sample_rate: int = LIVE_RATE, soundfont=None):
        from hf_midi.render import find_soundfont

        self.sample_rate = sample_rate
        self.soundfont = find_soundfont(soundfont)
        self.ids: list[int] = []
        self.sent = 0  # samples
        self.seconds = 0.0  # music decided so far

    def add(self, chunk) -> bytes | None:
        from hf_midi.remote_code.codec import decode
        from hf_midi.render import render_wav, wav_bytes

        self.ids.extend(chunk.token_ids)
        self.seconds = chunk.end
        end = round(chunk.end * self.sample_rate)
        if end <= self.sent:
            return None
        score = decode(self.ids)
        decoded_end = score.end() / 1000.0  # decoded scores: 1000 ticks a second
        audio = render_wav(score, sample_rate=self.sample_rate, soundfont=self.soundfont,
                           tail=max(0.0, chunk.end - decoded_end) + 0.05, normalize=False)
        audio = audio[self.sent:end].mean(axis=1)
        audio = np.pad(audio, (0, end - self.sent - len(audio)))
        self.sent = end
        return wav_bytes(np.clip(audio * LIVE_GAIN, -1.0, 1.0)[:, None], self.sample_rate)


def stream_music(pipe, settings: Settings, prompt: bytes | None = None, stop=None, live: LiveAudio | None = None):
    """One variation, composed and heard at once: yields ``(chunk, wav)`` as the pipeline decides the
    music (``chunk``: a ``MusicChunk``, the first of new music after ``LIVE_FIRST_SECONDS``, then about
    every ``LIVE_CHUNK_SECONDS``; ``wav``: its audio from ``live``, or None). The last has ``chunk.done``
    and ``chunk.piece``, what ``generate`` returns for one variation. A set ``stop`` ends the piece there."""
    live = live if live is not None else LiveAudio()
    stream = pipe.stream(prompt=prompt, stop_event=stop, chunk_seconds=LIVE_CHUNK_SECONDS,
                         first_chunk_seconds=LIVE_FIRST_SECONDS, **_pipe_arguments(settings, prompt))
    try:
        for chunk in stream:
            yield chunk, live.add(chunk)
    finally:
        stream.close()


@dataclass(frozen=True)
class Variation:
    """One generated piece on disk."""

    midi: Path
    wav: Path
    png: Path
    seconds: float  # music length, prompt included
    notes: int
    data: bytes  # the MIDI, kept to continue it later


def package(result: dict, folder: Path, stem: str) -> Variation:
    """Write a pipeline result as ``stem``.mid, .wav and .png in ``folder``."""
    from hf_midi.render import piano_roll_png, render_wav, roll_options

    folder.mkdir(parents=True, exist_ok=True)
    midi, wav, png = (folder / f"{stem}.{ext}" for ext in ("mid", "wav", "png"))
    midi.write_bytes(result["midi"])
    render_wav(result["score"], path=wav)
    piano_roll_png(result["score"], path=png, **roll_options(result))  # a fill's span marked, a given melody warm
    notes = sum(len(t.notes) for t in result["score"].tracks)
    return Variation(midi, wav, png, float(result["seconds"]), notes, result["midi"])


def continue_last(last: list[tuple[bytes, float]], which, settings: Settings) -> tuple[bytes, Settings]:
    """The prompt for "continue the last result": variation ``which`` of ``last`` (MIDI, seconds)
    whole. Giving its length as ``prompt_seconds`` lets the pipeline slide its window over a piece
    longer than the model's context instead of refusing it."""
    if not last:
        raise InputError("There is no result to continue yet: compose something first.")
    data, seconds = last[min(max(int(which or 1), 1), len(last)) - 1]
    if seconds + settings.seconds > MAX_PIECE_SECONDS:
        raise InputError(f"This piece is {_minutes(seconds)} long; the limit is {_minutes(MAX_PIECE_SECONDS)}. "
                         "Download it, or continue a part of it as an upload.")
    return data, replace(settings, prompt_seconds=seconds + 1.0)


def _prune_outputs(root: Path, keep_seconds: float) -> None:
    """Delete request folders older than ``keep_seconds`` (gradio keeps its own copies it serves)."""
    cutoff = time.time() - keep_seconds
    for folder in root.glob("*"):
        try:
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except FileNotFoundError:  # another request pruned it first
            pass


def make_music(pipe, settings: Settings, prompt: bytes | None = None, progress=None, stop=None,
               out_root: Path = OUTPUT_ROOT, writing: dict | None = None) -> list[Variation]:
    """Generate, render and package every variation into a fresh folder under ``out_root``."""
    results = generate(pipe, settings, prompt, progress=progress, stop=stop, writing=writing)
    folder = _request_folder(out_root)
    return [package(r, folder, f"hf-midi-{settings.seed}-{i + 1}") for i, r in enumerate(results)]


def _request_folder(out_root: Path = OUTPUT_ROOT) -> Path:
    """A fresh folder for one request's files (old requests' folders are pruned first)."""
    _prune_outputs(out_root, KEEP_OUTPUTS_SECONDS)
    return out_root / uuid.uuid4().hex


def _live_roll(ids: list[int], path: Path) -> str:
    """The piano roll of the piece so far, written to ``path``."""
    from hf_midi.remote_code.codec import decode
    from hf_midi.render import piano_roll_png

    path.parent.mkdir(parents=True, exist_ok=True)
    piano_roll_png(decode(ids), path=path)
    return str(path)


def _live_update(line: str, payload: str, roll) -> list:
    """The page's outputs while a piece plays as it is composed: the status line, the first
    variation's growing piano roll, the next audio chunk for the player; nothing else changes."""
    skip = gr.skip()
    slots = [gr.update(visible=True), skip, roll, skip] + [skip] * (4 * (MAX_VARIATIONS - 1))
    return [line, skip, skip, skip, *slots, payload]


def load_pipeline(model: str | None):
    """The ``midi-generation`` pipeline for a folder or repo id (None: the bundled model); None
    when there is no bundled model (the page then says so). ``ModelLoadError`` for a bad folder."""
    from hf_midi import loading

    if model is None and loading.default_model_path() is None:
        return None
    return loading.load_pipeline(model)


# ---------------------------------------------------------------------------------------- page
def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(round(seconds % 60)):02d}"


def describe_upload(path) -> str:
    """The line under the uploader: what the file holds, or what is wrong with it."""
    if not path:
        return ""
    try:
        p = read_upload(path)
    except (InputError, HfMidiError) as e:
        return f"⚠️ {e}"
    return f"**{p.name}**: {p.notes} notes, {_minutes(p.seconds)} long."


class Studio:
    """What the page serves: one pipeline per model of the picker (loaded on first use, kept), and each
    session's running request's stop flag. ``pipe``: the model the page starts with (None: the bundled
    default); the bundled models are offered beside it."""

    def __init__(self, pipe=None):
        from hf_midi import loading

        self.pipes: dict[str, object] = {}
        self.first = None
        self._lock = threading.Lock()
        self.stops: dict[str, threading.Event] = {}
        if pipe is None:  # no model to start with: the page says so and offers none
            return
        self.pipes[Path(str(getattr(pipe.model, "name_or_path", "") or "model")).name] = pipe
        bundled = {name: path for name, path in loading.bundled_models().items() if name != "default"}
        started = Path(str(getattr(pipe.model, "name_or_path", ""))).resolve()
        for name, path in bundled.items():
            if name not in self.pipes and path.resolve() != started:
                self.pipes[name] = None  # loaded when first picked
        self.first = next(iter(self.pipes))

    @property
    def names(self) -> list[str]:
        return list(self.pipes)

    def pipe(self, name: str | None):
        """The pipeline of model ``name`` (a name the picker offers); loads it the first time."""
        name = name or self.first
        if name not in self.pipes:
            raise InputError(f"There is no model {name!r} here; pick one of {', '.join(self.pipes)}.")
        with self._lock:
            if self.pipes[name] is None:
                self.pipes[name] = load_pipeline(name)
            return self.pipes[name]

    def setting(self, name: str, fallback: float) -> float:
        """The first model's own sampling setting (its generation_config.json), where the sliders start."""
        pipe = self.pipes.get(self.first) if self.first else None
        value = getattr(getattr(getattr(pipe, "model", None), "generation_config", None), name, None)
        return float(value) if isinstance(value, (int, float)) and value else fallback

    def compose(self, source=COMPOSE, upload=None, keep=DEFAULT_PROMPT_SECONDS, last=(), which="1",
                seconds=GENERATION_DEFAULTS.seconds, temperature=GENERATION_DEFAULTS.temperature, top_p=1.0, top_k=0,
                seed=0, new_seed=True, variations=1, model=None, key=ANY, pitch_low=PIANO_LOW, pitch_high=PIANO_HIGH,
                dynamics=ANY, density=0, max_polyphony=0, pedal=True, quality=MODEL_QUALITY, fill_start=8.0,
                fill_end=12.0, melody_track="", request: gr.Request = None,
                progress=gr.Progress()):  # noqa: B008 (gradio injects the tracker here)
        """The Generate button: yields the page's outputs while a lone variation plays, then the pieces. Every
        input has a default (the API lists them as optional: ``upload`` is needed only to continue a file)."""
        stop = self.stops[request.session_hash] = threading.Event()
        try:
            if not self.pipes:
                raise InputError("No model is loaded; see the note at the top of the page.")
            style = dict(key=key, pitch_low=pitch_low, pitch_high=pitch_high, dynamics=dynamics, density=density,
                         max_polyphony=max_polyphony, pedal=pedal)
            settings = make_settings(seconds, temperature, top_p, top_k, None if new_seed else seed,
                                     variations, keep if source == UPLOAD else None, style=style, quality=quality)
            pipe = self.pipe(model)
            prompt, writing = None, None
            if source in WRITING:
                up = read_upload(upload)
                writing, total = _writing(source, up, fill_start, fill_end, melody_track)
                prompt = up.data if source == FILL else None
                settings = replace(settings, seconds=total)
            elif source == UPLOAD:
                up = read_upload(upload)
                if up.first >= settings.prompt_seconds:
                    raise InputError(f"{up.name} has no notes in its first {settings.prompt_seconds:g} s "
                                     f"(the first starts at {up.first:.1f} s): keep more of it.")
                prompt = up.data
            elif source == LAST:
                prompt, settings = continue_last(last, which, settings)
            progress((0, int(settings.seconds)), desc="Composing", unit="s of music")
            start = time.perf_counter()
            if settings.variations == 1 and writing is None:  # heard while it is composed
                pieces = yield from _play_while_composing(pipe, settings, prompt, stop, progress, start)
            else:
                pieces = make_music(
                    pipe, settings, prompt, stop=stop, writing=writing,
                    progress=lambda done, total: progress(
                        (min(int(done), int(total)), int(total)), desc="Composing", unit="s of music"),
                )
            took = time.perf_counter() - start
            log.info("%d variation(s) of %.0f s in %.1f s (seed %d, prompt: %s, model: %s, style: %s)", len(pieces),
                     settings.seconds, took, settings.seed, source, model, settings.controls.describe())
        except (InputError, HfMidiError) as e:  # shown until closed: it says what to change
            raise gr.Error(str(e), duration=None, print_exception=False) from None
        except Stopped:
            raise gr.Error("Stopped.", print_exception=False) from None
        finally:
            if self.stops.get(request.session_hash) is stop:
                del self.stops[request.session_hash]
        status = f"Seed {settings.seed}, made in {took:.1f} s. " + " · ".join(
            f"Variation {i + 1}: {_minutes(v.seconds)}, {v.notes} notes" for i, v in enumerate(pieces))
        choices = gr.update(choices=[str(i) for i in range(1, len(pieces) + 1)], value="1")
        out = [status, [(v.data, v.seconds) for v in pieces], choices, settings.seed]
        for i in range(MAX_VARIATIONS):
            v = pieces[i] if i < len(pieces) else None
            out += [gr.update(visible=v is not None), str(v.wav) if v else None,
                    str(v.png) if v else None, str(v.midi) if v else None]
        yield out + [None]  # the player has had every chunk

    def stop(self, request: gr.Request):
        flag = self.stops.get(request.session_hash)
        if flag is not None:
            flag.set()
        return "Stopped."


def _writing(source, up: Prompt, fill_start, fill_end, melody_track) -> tuple[dict, float]:
    """The pipeline's arguments for "Fill a gap" (the span, checked against the upload) or "Accompany a
    melody" (the track: a name, an index from 0, or blank for every track), and the seconds composed."""
    if source == FILL:
        start, end = _number(fill_start, "Gap start"), _number(fill_end, "Gap end")
        if not 0 <= start < end:
            raise InputError(f"The gap must start at 0 s or later and end after it starts (got {start:g}-{end:g} s).")
        if end > up.seconds:
            raise InputError(f"{up.name} lasts {up.seconds:.1f} s; the gap must end by then (got {end:g} s).")
        return {"infill": (start, end)}, end - start
    track = str(melody_track or "").strip()
    track = int(track) if track.isdigit() else (track or None)
    if up.seconds > MAX_PIECE_SECONDS:
        raise InputError(f"{up.name} is {_minutes(up.seconds)} long; a melody here may last "
                         f"{_minutes(MAX_PIECE_SECONDS)}.")
    return {"melody": up.data, "accompany": True, "melody_track": track}, up.seconds


def _play_while_composing(pipe, settings: Settings, prompt, stop, progress, start):
    """One variation: yields the page's live updates (status line, growing piano roll, audio chunks) as
    it is composed; returns the finished piece, packaged."""
    run = uuid.uuid4().hex[:12]
    folder = _request_folder()
    seq, roll_at, total, base, live = 0, LIVE_ROLL_SECONDS, settings.seconds, None, LiveAudio()
    for chunk, wav in stream_music(pipe, settings, prompt, stop=stop, live=live):
        if wav is not None:
            seq += 1
            if base is None:  # a prompt's music comes first, at once
                base = chunk.end if prompt is not None else 0.0
            done, took = chunk.end - base, time.perf_counter() - start
            progress((min(int(done), int(total)), int(total)), desc="Composing", unit="s of music")
            line = (f"Playing while composing: {min(done, total):.1f} of {total:.0f} s"
                    + (f" ({done / took:.1f}x real time)" if took > 0.5 and done > 0 else ""))
            roll = gr.skip()
            if chunk.end >= roll_at and not chunk.done:  # the piano roll grows
                roll_at = chunk.end + LIVE_ROLL_SECONDS
                roll = _live_roll(live.ids, folder / f"live-{seq}.png")
            yield _live_update(line, f"{run}:{seq}:{base64.b64encode(wav).decode()}", roll)
        if chunk.done:
            if stop.is_set():
                raise Stopped
            return [package(chunk.piece, folder, f"hf-midi-{settings.seed}-1")]
    raise Stopped  # the stream ended without a last chunk: stopped


def _input_column(studio: Studio) -> dict:
    """The left column: where the music starts, its length, the model, sampling, style, the buttons."""
    c = {}
    c["source"] = gr.Radio(list(SOURCES), value=COMPOSE, label="Start from", elem_id="source")
    c["upload"] = gr.File(label="MIDI file (.mid, up to 4 MB)", type="filepath", visible=False, elem_id="upload")
    c["upload_info"] = gr.Markdown(visible=False, elem_id="upload-info")
    with gr.Row():
        c["fill_start"] = gr.Number(value=8.0, minimum=0, label="Gap start (s)", visible=False, elem_id="fill-start")
        c["fill_end"] = gr.Number(value=12.0, minimum=0, label="Gap end (s)", visible=False, elem_id="fill-end")
    c["melody_track"] = gr.Textbox(value="", label="Melody track (a name or number; blank: the whole file)",
                                   visible=False, elem_id="melody-track")
    c["keep"] = gr.Slider(1, MAX_PROMPT_SECONDS, value=DEFAULT_PROMPT_SECONDS, step=1,
                          label="Seconds of the file to keep as the prompt", visible=False, elem_id="keep")
    c["which"] = gr.Radio(["1"], value="1", label="Variation to continue", visible=False, elem_id="which")
    c["seconds"] = gr.Slider(MIN_SECONDS, MAX_SECONDS, value=GENERATION_DEFAULTS.seconds, step=1,
                             label="Length of new music (seconds)", elem_id="seconds")
    c["variations"] = gr.Slider(1, MAX_VARIATIONS, value=1, step=1, label="Variations", elem_id="variations")
    c["model"] = gr.Radio(studio.names, value=studio.first, label="Model", elem_id="model",
                          info="base: richer; small: several times faster", visible=len(studio.names) > 1)
    with gr.Accordion("Style", open=False, elem_id="style"):
        c["key"] = gr.Dropdown([ANY, *KEYS], value=ANY, label="Key", elem_id="key",
                               info="only notes of the key (a minor key allows the raised seventh)")
        with gr.Row():
            c["pitch_low"] = gr.Slider(PIANO_LOW, PIANO_HIGH, value=PIANO_LOW, step=1, label="Lowest pitch (MIDI)",
                                       elem_id="pitch-low")
            c["pitch_high"] = gr.Slider(PIANO_LOW, PIANO_HIGH, value=PIANO_HIGH, step=1,
                                        label="Highest pitch (MIDI)", elem_id="pitch-high")
        c["dynamics"] = gr.Dropdown([ANY, *DYNAMICS], value=ANY, label="Dynamics", elem_id="dynamics",
                                    info=", ".join(f"{k} {lo}-{hi}" for k, (lo, hi) in DYNAMICS.items()))
        c["density"] = gr.Slider(0, MAX_DENSITY_SLIDER, value=0, step=0.5, label="Notes a second (0: the model's)",
                                 elem_id="density")
        c["max_polyphony"] = gr.Slider(0, MAX_POLYPHONY_SLIDER, value=0, step=1,
                                       label="Keys down at once, at most (0: any)", elem_id="max-polyphony")
        c["pedal"] = gr.Checkbox(value=True, label="Sustain pedal", elem_id="pedal")
    c["quality"] = gr.Radio(list(QUALITY), value=MODEL_QUALITY, label="Quality", elem_id="quality",
                            info="candidates a critic chooses from, every 2 s of music: more is better and slower")
    with gr.Accordion("Sampling", open=False, elem_id="sampling"):
        c["temperature"] = gr.Slider(MIN_TEMPERATURE, MAX_TEMPERATURE,
                                     value=studio.setting("temperature", GENERATION_DEFAULTS.temperature),
                                     step=0.05, label="Temperature (higher: bolder)")
        c["top_p"] = gr.Slider(0.05, 1.0, value=studio.setting("top_p", GENERATION_DEFAULTS.top_p), step=0.01,
                               label="Top-p (1: off)")
        c["top_k"] = gr.Slider(0, MAX_TOP_K, value=0, step=1, label="Top-k (0: off)")
        with gr.Row():
            c["seed"] = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed", elem_id="seed")
            c["dice"] = gr.Button("Random seed", size="sm")
        c["new_seed"] = gr.Checkbox(value=True, label="New random seed each time", elem_id="new-seed")
    with gr.Row():
        c["go"] = gr.Button("Generate", variant="primary", interactive=bool(studio.pipes), elem_id="generate")
        c["stop"] = gr.Button("Stop", variant="stop", elem_id="stop")
    return c


def _output_column() -> tuple:
    """The right column: the status line, the live player's channel, one slot a variation."""
    # Before the first piece the column shows where it will come: the first slot, empty, under a hint.
    status = gr.Markdown(WAITING, elem_id="status", min_height=60)
    live = gr.Textbox(visible=False, elem_id="live-chunk")  # audio chunks for LIVE_JS
    slots = []
    for i in range(MAX_VARIATIONS):
        with gr.Group(visible=i == 0, elem_id=f"variation-{i + 1}") as group:
            audio = gr.Audio(label=f"Variation {i + 1}", type="filepath", interactive=False,
                             buttons=["download"], elem_id=f"audio-{i + 1}")
            # a fixed height: a short piece's roll is narrow and would stand tall
            roll = gr.Image(label="Piano roll", type="filepath", interactive=False, height=240,
                            format="png", elem_id=f"roll-{i + 1}")
            midi = gr.File(label="MIDI", interactive=False, elem_id=f"midi-{i + 1}")
        slots += [group, audio, roll, midi]
    return status, live, slots


# The Generate button's inputs after the session's last results, in the API's order (an API caller
# that sends only the first eleven gets the defaults of the rest).
GENERATE_INPUTS = ("source", "upload", "keep", "which", "seconds", "temperature", "top_p", "top_k", "seed",
                   "new_seed", "variations", "model", "key", "pitch_low", "pitch_high", "dynamics", "density",
                   "max_polyphony", "pedal", "quality", "fill_start", "fill_end", "melody_track")


def build_demo(model: str | None = None, pipe=None, concurrency: int = DEFAULT_CONCURRENCY) -> gr.Blocks:
    """The page. ``model`` is a folder or repo id (None: the bundled model); or pass a ``pipe``."""
    import torch

    # One thread a request: on 2 shared cores, 2 torch threads ran 4-35x slower under load.
    torch.set_num_threads(1)
    studio = Studio(pipe if pipe is not None else load_pipeline(model))

    def on_source(source):
        upload = source in (UPLOAD, *WRITING)
        return (gr.update(visible=upload), gr.update(visible=upload), gr.update(visible=source == UPLOAD),
                gr.update(visible=source == LAST), gr.update(visible=source == FILL), gr.update(visible=source == FILL),
                gr.update(visible=source == ACCOMPANY), gr.update(visible=source not in WRITING))

    with gr.Blocks(title="hf-midi piano", delete_cache=(1800, KEEP_OUTPUTS_SECONDS)) as demo:
        gr.Markdown(
            "# hf-midi: expressive piano\n"
            "A GPT-2 over performance events (Oore et al. 2018) composes piano music with timing and "
            "dynamics. Compose from scratch or continue a MIDI file, fill a gap in it or accompany its melody, "
            "steer it in *Style*; listen, look, download."
        )
        if not studio.pipes:
            gr.Markdown(NO_MODEL, elem_id="no-model")
        last = gr.State([])
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                c = _input_column(studio)
            with gr.Column(scale=2):
                status, live, slots = _output_column()
        names = sorted({name for _, values in EXAMPLES for name in values}, key=GENERATE_INPUTS.index)
        gr.Examples([[values.get(name, c[name].value) for name in names] for _, values in EXAMPLES],
                    [c[name] for name in names], example_labels=[label for label, _ in EXAMPLES])

        # Light page events (a few ms) skip the queue: they never wait behind a generation.
        light = dict(queue=False, show_progress="hidden", api_visibility="private")
        c["source"].change(on_source, c["source"], [c["upload"], c["upload_info"], c["keep"], c["which"],
                                                    c["fill_start"], c["fill_end"], c["melody_track"], c["seconds"]],
                           **light)
        c["upload"].change(describe_upload, c["upload"], c["upload_info"], **light)
        c["dice"].click(lambda: random.randint(0, MAX_SEED), None, c["seed"], **light)
        generate_inputs = [c[name] for name in GENERATE_INPUTS]
        event = c["go"].click(
            studio.compose,
            generate_inputs[:3] + [last] + generate_inputs[3:],
            [status, last, c["which"], c["seed"], *slots, live],
            api_name="generate",
            concurrency_limit=concurrency,
            # progress and errors on the status line only, not an "Error" badge on every output
            show_progress_on=[status],
            js=LIVE_START_JS,  # runs in the click (a user gesture may start audio), inputs unchanged
        )
        live.change(None, live, None, js=LIVE_JS, **light)
        # cancels frees the page at once; the flag stops the worker thread at its next progress call.
        c["stop"].click(studio.stop, None, status, cancels=[event], queue=False, api_visibility="private")
        c["stop"].click(None, js=LIVE_STOP_JS, **light)
    demo.queue(max_size=QUEUE_SIZE)
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, share: bool = False, **kwargs):
    """Start the server (the same settings for ``main`` and the tests)."""
    return demo.launch(
        server_name=host, server_port=port, share=share, max_file_size=MAX_UPLOAD_BYTES,
        theme=gr.themes.Soft(), **kwargs,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The hf-midi Gradio app.")
    parser.add_argument("--model", default=os.environ.get("HF_MIDI_MODEL"),
                        help="a model folder or Hub repo id (default: $HF_MIDI_MODEL, else the bundled model)")
    # Spaces set GRADIO_SERVER_NAME=0.0.0.0; anywhere else the app stays on this machine.
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--share", action="store_true", help="ask gradio for a public share link")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                        help="requests generating at once (one CPU core each); the rest queue")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    try:
        pipe = load_pipeline(args.model)
    except (OSError, ValueError) as e:
        print(f"app.py: error: cannot load model {args.model!r}: {e}", file=sys.stderr)
        return 1
    log.info("hf_midi %s from %s; model: %s", hf_midi.__version__, Path(hf_midi.__file__).parent,
             pipe.model.name_or_path if pipe is not None else "none")
    launch(build_demo(pipe=pipe, concurrency=args.concurrency), args.host, args.port, args.share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
