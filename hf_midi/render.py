"""Listen and look: a score to WAV with a SoundFont, and a piano roll to PNG.

Audio uses symusic's synthesizer (0.5.9: 0.6.0's cannot render) with a SoundFont found by
``find_soundfont``; always with an explicit path, since ``Synthesizer()`` without one downloads.
The piano roll is drawn with numpy (one pixel column per time slice, a row per pitch, the pedal as a
strip below) and labelled and encoded as PNG with Pillow (a dependency of the package).
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import wave
from pathlib import Path

import numpy as np
import symusic

from .remote_code.codec import MidiLike, _pedal_intervals, load_score
from .remote_code.errors import HfMidiError
from .utils import atomic_write_bytes

SOUNDFONT_ENV = "HF_MIDI_SOUNDFONT"
SOUNDFONT_DIR = Path("/usr/share/sounds/sf2")
PREFERRED_SOUNDFONTS = ("FluidR3_GM.sf2", "TimGM6mb.sf2")  # Debian: fluid-soundfont-gm, timgm6mb-soundfont
HOW_TO_GET_ONE = (
    "install one (`pip install pretty_midi`, whose wheel carries TimGM6mb.sf2; or Debian/Ubuntu: "
    "`apt-get install timgm6mb-soundfont`, 6 MB, or "
    "`fluid-soundfont-gm`, 148 MB), or name a .sf2 file with soundfont=/--soundfont or "
    f"the {SOUNDFONT_ENV} environment variable"
)


class RenderError(HfMidiError):
    """Audio or a picture cannot be made: no SoundFont, or a bad rendering argument."""


# --------------------------------------------------------------------------- audio
def pip_soundfont() -> Path | None:
    """The General MIDI SoundFont that the ``pretty_midi`` wheel carries (TimGM6mb.sf2, 6 MB, by Tim
    Brechbill; GPL-2, as Debian's timgm6mb-soundfont package), found without importing pretty_midi;
    None when it is not installed. It comes with ``pip install hf-midi``, so audio works from pip alone."""
    import importlib.util

    spec = importlib.util.find_spec("pretty_midi")
    if spec is None or not spec.origin:
        return None
    sf = Path(spec.origin).parent / "TimGM6mb.sf2"
    return sf if sf.is_file() else None


def find_soundfont(path: str | os.PathLike | None = None) -> Path:
    """The SoundFont to use: ``path``, else ``$HF_MIDI_SOUNDFONT``, else ``/usr/share/sounds/sf2``
    (FluidR3_GM, then TimGM6mb, then any .sf2), else the one pip installed with ``pretty_midi``.
    ``RenderError`` says how to get one."""
    for given, what in ((path, "soundfont"), (os.environ.get(SOUNDFONT_ENV) or None, SOUNDFONT_ENV)):
        if given is not None:
            p = Path(given).expanduser()
            if not p.is_file():
                raise RenderError(f"{what} {given}: no such file")
            return p
    found = [SOUNDFONT_DIR / n for n in PREFERRED_SOUNDFONTS if (SOUNDFONT_DIR / n).is_file()]
    found += sorted(SOUNDFONT_DIR.glob("*.sf2")) if SOUNDFONT_DIR.is_dir() else []
    found += [sf for sf in [pip_soundfont()] if sf is not None]
    if not found:
        raise RenderError(f"no SoundFont found in {SOUNDFONT_DIR}: {HOW_TO_GET_ONE}")
    return found[0]


def write_samples(pieces, folder: str | os.PathLike, count: int = 4, wav: bool = True) -> list[Path]:
    """The first ``count`` pipeline outputs as ``sample_NN.mid`` + ``sample_NN.png`` in ``folder``, and the
    first one as ``sample_00.wav`` (with ``wav``); returns the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i, piece in enumerate(list(pieces)[:count]):
        mid, png = folder / f"sample_{i:02d}.mid", folder / f"sample_{i:02d}.png"
        atomic_write_bytes(mid, piece["midi"])
        piano_roll_png(piece["score"], png)
        written += [mid, png]
        if wav and i == 0:
            render_wav(piece["score"], folder / "sample_00.wav")
            written.append(folder / "sample_00.wav")
    return written


def sustain_notes(score: symusic.Score) -> symusic.Score:
    """A copy whose notes last while the sustain pedal holds them (the synthesizer ignores CC64:
    measured, a pedalled note stops at its note-off). Same rule as the codec's ``extend`` mode."""
    out = score.copy()
    for track in out.tracks:
        cc, notes = track.controls.numpy(), track.notes.numpy()
        if not len(cc["time"]) or not len(notes["time"]):
            continue
        down, up = _pedal_intervals(cc["time"].astype(np.float64), cc["number"], cc["value"])
        if not len(down):
            continue
        start = notes["time"].astype(np.float64)
        end = start + notes["duration"]
        up = np.where(np.isfinite(up), up, max(end.max(), down.max()))  # still down: until the end
        k = np.searchsorted(down, end, side="right") - 1
        held = (k >= 0) & (end < up[np.maximum(k, 0)])
        end = np.where(held, up[np.maximum(k, 0)], end)
        track.notes = symusic.Note.from_numpy(
            notes["time"], (end - start).astype(notes["duration"].dtype), notes["pitch"], notes["velocity"],
            "second",
        )
    return out


def render_wav(
    score: MidiLike,
    path: str | os.PathLike | None = None,
    sample_rate: int = 22050,
    soundfont: str | os.PathLike | None = None,
    tail: float = 1.0,
    normalize: bool = True,
) -> np.ndarray:
    """Render a score (or MIDI path/bytes) to stereo audio, (samples, 2) float32 in [-1, 1].

    ``tail`` seconds after the last sound let the notes ring out; ``normalize`` scales the peak to
    -1 dBFS. With ``path``, also writes a 16-bit WAV (atomically).
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or not 8000 <= sample_rate <= 192000:
        raise RenderError(f"sample_rate must be an integer in 8000..192000, got {sample_rate!r}")
    if not (isinstance(tail, (int, float)) and 0 <= tail <= 60):
        raise RenderError(f"tail must be in 0..60 seconds, got {tail!r}")
    sf = find_soundfont(soundfont)
    score = sustain_notes(load_score(score))
    end = float(score.end())
    samples = round((end + tail) * sample_rate)
    if any(len(t.notes) for t in score.tracks):
        # The synthesizer stops at the last note-off, cutting the release: a silent marker (velocity
        # 0, length 0) at the end of the tail makes it render the release.
        score.tracks[0].notes.append(symusic.Note(end + tail, 0.0, 60, 0, "second"))
        audio = np.asarray(symusic.Synthesizer(sf_path=str(sf), sample_rate=sample_rate).render(score, stereo=True))
        audio = np.ascontiguousarray(audio.T, dtype=np.float32)  # (channels, n) -> (n, channels)
    else:
        audio = np.zeros((0, 2), np.float32)
    audio = np.pad(audio[:samples], ((0, max(0, samples - len(audio))), (0, 0)))
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if normalize and peak > 0:
        audio *= 0.891 / peak  # -1 dBFS
    if path is not None:
        atomic_write_bytes(path, wav_bytes(audio, sample_rate))
    return audio


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV of (samples,) or (samples, channels) float audio."""
    audio = np.asarray(audio, dtype=np.float32)
    audio = audio[:, None] if audio.ndim == 1 else audio
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).round().astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(audio.shape[1])
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


# --------------------------------------------------------------------------- piano roll
_BACKGROUND = np.array([30, 30, 36], np.uint8)
_BLACK_KEY_ROW = np.array([24, 24, 29], np.uint8)
_PEDAL = np.array([44, 52, 74], np.uint8)  # background while the pedal is down
_MARK = np.array([150, 90, 40], np.uint8)  # a marked span (a filled gap): warm, behind the notes
_MARK_EDGE = np.array([235, 150, 60], np.uint8)
_ACCENT_LOW, _ACCENT_HIGH = np.array([150, 70, 40], np.float64), np.array([255, 190, 120], np.float64)  # a melody
_PEDAL_STRIP = np.array([150, 170, 220], np.uint8)
_GRID = np.array([52, 52, 60], np.uint8)
# Velocity colours (viridis anchors): quiet = dark violet, loud = yellow.
_VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], np.float64)
PEDAL_STRIP = 6  # pixels under the keyboard range that show the pedal alone
LOWEST, HIGHEST = 21, 108  # the piano's range, always shown so rolls compare


def velocity_colour(velocity) -> np.ndarray:
    """(N, 3) uint8 colours for MIDI velocities 1..127."""
    x = np.clip(np.asarray(velocity, np.float64), 1, 127)[..., None]
    pos = (x - 1) / 126 * (len(_VIRIDIS) - 1)
    i = np.minimum(pos.astype(int), len(_VIRIDIS) - 2)
    frac = pos - i
    return np.round(_VIRIDIS[i[..., 0]] * (1 - frac) + _VIRIDIS[i[..., 0] + 1] * frac).astype(np.uint8)


def accent_colour(velocity) -> np.ndarray:
    """(N, 3) uint8 warm colours for MIDI velocities 1..127: the notes of an accented track (a given melody)."""
    x = (np.clip(np.asarray(velocity, np.float64), 1, 127)[..., None] - 1) / 126
    return np.round(_ACCENT_LOW * (1 - x) + _ACCENT_HIGH * x).astype(np.uint8)


def roll_options(result: dict) -> dict:
    """``piano_roll``'s ``mark`` and ``accent`` for a pipeline result: a fill's new span tinted, an
    accompaniment's given melody in warm tones."""
    return {"mark": result.get("span"), "accent": "Melody" if "melody_notes" in result else None}


def piano_roll(
    score: MidiLike, px_per_second: float = 50.0, px_per_pitch: int = 4, max_width: int = 4000,
    mark: tuple[float, float] | None = None, accent: str | None = None,
) -> np.ndarray:
    """(height, width, 3) uint8 image: time left to right, pitch bottom to top (piano range at
    least), notes coloured by velocity, the background lighter while the sustain pedal is down and
    a strip at the bottom showing the pedal alone. Width is ``ceil(seconds * px_per_second)``, with
    ``px_per_second`` lowered when that would pass ``max_width``. ``mark=(start, end)`` in seconds: that span
    tinted and edged (a filled gap: the new music). ``accent``: the name of a track whose notes are drawn in warm
    tones (``accent_colour``) over the others (an accompaniment's given melody)."""
    if not (px_per_second > 0 and isinstance(px_per_pitch, int) and px_per_pitch >= 1 and max_width >= 1):
        raise RenderError("px_per_second must be > 0, px_per_pitch and max_width integers >= 1")
    score = load_score(score)
    starts, ends, pitches, velocities, pedals, accented = [], [], [], [], [], []
    for track in score.tracks:
        if track.is_drum:
            continue
        n = track.notes.numpy()
        accented.append(np.full(len(n["time"]), accent is not None and track.name == accent))
        starts.append(n["time"].astype(np.float64))
        ends.append(n["time"].astype(np.float64) + n["duration"])
        pitches.append(n["pitch"].astype(np.int64))
        velocities.append(n["velocity"].astype(np.int64))
        cc = track.controls.numpy()
        if len(cc["time"]):
            pedals.append(_pedal_intervals(cc["time"].astype(np.float64), cc["number"], cc["value"]))
    start, end, pitch, velocity = (np.concatenate(a) if a else np.empty(0) for a in (starts, ends, pitches, velocities))
    accented = np.concatenate(accented).astype(bool) if accented else np.zeros(0, bool)
    pitch = pitch.astype(np.int64)
    seconds = max(float(score.end()), float(end.max()) if len(end) else 0.0, 0.01)
    pps = min(float(px_per_second), max_width / seconds)
    width = max(1, math.ceil(seconds * pps))
    lo = min(LOWEST, int(pitch.min())) if len(pitch) else LOWEST
    hi = max(HIGHEST, int(pitch.max())) if len(pitch) else HIGHEST
    keys = hi - lo + 1
    height = keys * px_per_pitch + PEDAL_STRIP

    img = np.empty((height, width, 3), np.uint8)
    img[:] = _BACKGROUND
    for p in range(lo, hi + 1):  # darker rows for black keys, like a keyboard on its side
        if p % 12 in (1, 3, 6, 8, 10):
            y = (hi - p) * px_per_pitch
            img[y : y + px_per_pitch] = _BLACK_KEY_ROW
    for down, up in pedals:
        for a, b in zip(down, np.where(np.isfinite(up), up, seconds)):
            x0, x1 = int(a * pps), max(int(a * pps) + 1, math.ceil(b * pps))
            img[:, x0:x1] = (img[:, x0:x1] * 0.5 + _PEDAL * 0.5).astype(np.uint8)
            img[height - PEDAL_STRIP + 1 :, x0:x1] = _PEDAL_STRIP
    if pps >= 5:  # a faint line each second, a brighter one each 10 s
        for s in range(1, int(seconds) + 1):
            x = int(s * pps)
            if x < width:
                img[: height - PEDAL_STRIP, x] = _GRID if s % 10 else _GRID * 2
    if mark is not None:
        x0, x1 = int(mark[0] * pps), max(int(mark[0] * pps) + 1, math.ceil(mark[1] * pps))
        img[: height - PEDAL_STRIP, x0:x1] = (img[: height - PEDAL_STRIP, x0:x1] * 0.6 + _MARK * 0.4).astype(np.uint8)
        img[: height - PEDAL_STRIP, [x0, min(x1, width) - 1]] = _MARK_EDGE
    colours = velocity_colour(velocity)
    if accented.any():
        colours[accented] = accent_colour(velocity[accented])
    order = np.argsort(accented, kind="stable")  # an accented note is drawn over the others
    for a, b, p, c in zip(start[order], end[order], pitch[order], colours[order]):
        x0 = int(a * pps)
        x1 = max(x0 + 1, math.ceil(b * pps))
        y = (hi - p) * px_per_pitch
        img[y : y + px_per_pitch, x0:x1] = c
    return img


LEFT_MARGIN, BOTTOM_MARGIN, TOP_MARGIN = 34, 18, 6  # the labelled frame: octave names left, seconds below
_LABEL = (200, 200, 210)
_TICK = (120, 120, 130)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font
    except TypeError:  # older Pillow: its bitmap font
        return ImageFont.load_default()


def _tick_step(seconds: float, width: int) -> int:
    """Seconds between labelled ticks: the smallest of 1, 2, 5, 10, 15, 30, 60 ... leaving >= 40 px apart."""
    pps = width / max(seconds, 1e-9)
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600):
        if step * pps >= 40:
            return step
    return 1200


def labelled_piano_roll(score: MidiLike, **kwargs):
    """``piano_roll`` in a frame a reader expects: octave names (C1 ... C8, middle C is C4) up the left
    side at their rows, seconds along the bottom with tick marks, the pedal strip named. A PIL image."""
    from PIL import Image, ImageDraw

    score = load_score(score)
    roll = piano_roll(score, **kwargs)
    h, w = roll.shape[:2]
    ppp = kwargs.get("px_per_pitch", 4)
    keys = (h - PEDAL_STRIP) // ppp
    notes = [n for t in score.tracks if not t.is_drum for n in t.notes]
    hi = max([HIGHEST] + [n.pitch for n in notes])
    lo = hi - keys + 1
    seconds = max(float(score.end()), 0.01)
    img = Image.new("RGB", (LEFT_MARGIN + w, TOP_MARGIN + h + BOTTOM_MARGIN), tuple(int(v) for v in _BACKGROUND))
    img.paste(Image.fromarray(roll), (LEFT_MARGIN, TOP_MARGIN))
    draw = ImageDraw.Draw(img)
    font = _font(10)
    for pitch in range(lo, hi + 1):
        if pitch % 12 == 0:  # every C, named as in scientific pitch notation (MIDI 60 = C4)
            y = TOP_MARGIN + (hi - pitch) * ppp + ppp // 2
            draw.line([(LEFT_MARGIN - 4, y), (LEFT_MARGIN - 1, y)], fill=_TICK)
            draw.text((LEFT_MARGIN - 6, y), f"C{pitch // 12 - 1}", fill=_LABEL, font=font, anchor="rm")
    draw.text((LEFT_MARGIN - 6, TOP_MARGIN + h - PEDAL_STRIP // 2), "ped", fill=_LABEL, font=_font(8), anchor="rm")
    pps = w / seconds if seconds * kwargs.get("px_per_second", 50.0) > w else kwargs.get("px_per_second", 50.0)
    step = _tick_step(seconds, w)
    for t in range(0, int(seconds) + 1, step):
        x = LEFT_MARGIN + int(t * pps)
        if x >= LEFT_MARGIN + w:
            break
        y = TOP_MARGIN + h
        draw.line([(x, y), (x, y + 3)], fill=_TICK)
        label = f"{t // 60}:{t % 60:02d}" if seconds >= 120 else f"{t} s"
        draw.text((x, y + 4), label, fill=_LABEL, font=font, anchor="ma" if t else "la")
    return img


def png_bytes(img) -> bytes:
    """PNG bytes (Pillow) of an (H, W, 3) uint8 array or a PIL image."""
    from PIL import Image

    if isinstance(img, np.ndarray):
        img = Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8), "RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def piano_roll_png(score: MidiLike, path: str | os.PathLike | None = None, labels: bool = True, **kwargs) -> bytes:
    """The piano roll as PNG bytes, labelled (``labelled_piano_roll``) unless ``labels=False`` (the bare
    ``piano_roll``); with ``path``, also written there (atomically)."""
    data = png_bytes(labelled_piano_roll(score, **kwargs) if labels else piano_roll(score, **kwargs))
    if path is not None:
        atomic_write_bytes(path, data)
    return data


# --------------------------------------------------------------------------- the command line
def configure_render(p: argparse.ArgumentParser) -> None:
    p.add_argument("midi", help="a .mid/.midi file")
    p.add_argument("--wav", default=None, help="the WAV file to write")
    p.add_argument("--png", default=None, help="the piano-roll PNG to write")
    p.add_argument("--soundfont", default=None, help=f"a .sf2 file (default: ${SOUNDFONT_ENV}, then {SOUNDFONT_DIR})")
    p.add_argument("--sample-rate", type=int, default=22050, help="audio samples a second of --wav (default 22050)")


def run_render(args: argparse.Namespace) -> int:
    if not args.wav and not args.png:
        raise RenderError("nothing to do: give --wav OUT.wav and/or --png OUT.png")
    score = load_score(args.midi)  # a bad file fails here, before anything is written
    if args.wav:
        audio = render_wav(score, args.wav, sample_rate=args.sample_rate, soundfont=args.soundfont)
        print(f"wrote {args.wav} ({len(audio) / args.sample_rate:.2f} s)", file=sys.stderr)
    if args.png:
        piano_roll_png(score, args.png)
        print(f"wrote {args.png}", file=sys.stderr)
    return 0


__all__ = [
    "RenderError", "SOUNDFONT_ENV", "configure_render", "find_soundfont", "pip_soundfont", "piano_roll",
    "piano_roll_png", "png_bytes", "render_wav", "run_render", "sustain_notes", "velocity_colour", "wav_bytes",
]
