"""Audio (real symusic synthesis with a real SoundFont) and piano-roll PNGs, read back and checked."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest
import symusic
from conftest import POP909_FIXTURES

from hf_midi import cli
from hf_midi import render as R
from hf_midi.remote_code.codec import NOTE_OFF, SUSTAIN_OFF, SUSTAIN_ON, TIME_SHIFT, VELOCITY, decode, encode
from hf_midi.remote_code.generation import cut_events

SF_DIR = Path("/usr/share/sounds/sf2")
requires_soundfont = pytest.mark.skipif(not any(SF_DIR.glob("*.sf2")), reason="no SoundFont in /usr/share/sounds/sf2")


def shift(steps: int) -> int:
    return TIME_SHIFT - 1 + steps


@pytest.fixture(scope="module")
def piece() -> symusic.Score:
    """The first 8 s of a POP909 song, decoded (a real piano part with pedal)."""
    return decode(cut_events(encode(POP909_FIXTURES[0]), 8.0))


def read_wav(path):
    with wave.open(str(path), "rb") as w:
        frames = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, w.getnchannels())
        return frames, w.getframerate(), w.getsampwidth()


# --------------------------------------------------------------------------- soundfont
def test_find_soundfont_order(tmp_path, monkeypatch):
    monkeypatch.delenv(R.SOUNDFONT_ENV, raising=False)
    given, env = tmp_path / "given.sf2", tmp_path / "env.sf2"
    given.write_bytes(b"RIFF")
    env.write_bytes(b"RIFF")
    monkeypatch.setattr(R, "SOUNDFONT_DIR", tmp_path / "system")
    (tmp_path / "system").mkdir()
    (tmp_path / "system" / "Other.sf2").write_bytes(b"RIFF")
    (tmp_path / "system" / "TimGM6mb.sf2").write_bytes(b"RIFF")
    assert R.find_soundfont() == tmp_path / "system" / "TimGM6mb.sf2"  # preferred over others
    (tmp_path / "system" / "FluidR3_GM.sf2").write_bytes(b"RIFF")
    assert R.find_soundfont() == tmp_path / "system" / "FluidR3_GM.sf2"
    monkeypatch.setenv(R.SOUNDFONT_ENV, str(env))
    assert R.find_soundfont() == env
    assert R.find_soundfont(given) == given


def test_the_pip_installed_soundfont_is_the_last_resort_and_renders(tmp_path, monkeypatch):
    """No system SoundFont, no variable: the one the pretty_midi wheel carries (a dependency), which
    symusic renders."""
    monkeypatch.delenv(R.SOUNDFONT_ENV, raising=False)
    monkeypatch.setattr(R, "SOUNDFONT_DIR", tmp_path / "nothing")
    sf = R.find_soundfont()
    assert sf == R.pip_soundfont() and sf.name == "TimGM6mb.sf2" and sf.stat().st_size > 5_000_000
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "TimGM6mb.sf2").write_bytes(b"RIFF")
    assert R.find_soundfont() == tmp_path / "nothing" / "TimGM6mb.sf2"  # a system one comes first
    (tmp_path / "nothing" / "TimGM6mb.sf2").unlink()
    audio = R.render_wav(POP909_FIXTURES[0], tmp_path / "a.wav", sample_rate=22050)
    assert audio.shape[1] == 2 and np.abs(audio).max() > 0.1 and (tmp_path / "a.wav").stat().st_size > 44


def test_missing_soundfonts_say_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.delenv(R.SOUNDFONT_ENV, raising=False)
    monkeypatch.setattr(R, "SOUNDFONT_DIR", tmp_path / "nothing")
    monkeypatch.setattr(R, "pip_soundfont", lambda: None)
    with pytest.raises(R.RenderError, match="apt-get install timgm6mb-soundfont"):
        R.find_soundfont()
    with pytest.raises(R.RenderError, match="soundfont .*missing.sf2: no such file"):
        R.find_soundfont(tmp_path / "missing.sf2")
    monkeypatch.setenv(R.SOUNDFONT_ENV, str(tmp_path / "gone.sf2"))
    with pytest.raises(R.RenderError, match="HF_MIDI_SOUNDFONT .*gone.sf2: no such file"):
        R.find_soundfont()


# --------------------------------------------------------------------------- audio
@requires_soundfont
def test_render_wav_real_audio(piece, tmp_path):
    path = tmp_path / "sub" / "out.wav"
    audio = R.render_wav(piece, path=path, sample_rate=16000, tail=0.5)
    seconds = piece.end() / 1000  # decoded scores: 1 tick = 1 ms
    assert audio.dtype == np.float32 and audio.shape[1] == 2
    assert abs(len(audio) - (seconds + 0.5) * 16000) <= 1
    assert np.abs(audio).max() == pytest.approx(0.891, abs=1e-3)  # normalised to -1 dBFS
    frames, rate, width = read_wav(path)
    assert rate == 16000 and width == 2 and frames.shape == audio.shape
    assert np.abs(frames.astype(np.float64) / 32767 - audio).max() < 1e-4
    # Sound where the notes are, and not all at one level.
    first = piece.tracks[0].notes[0].time / 1000
    assert np.abs(audio[: int(first * 16000) - 800]).max() < 1e-3  # silence before the first note
    window = audio[int(first * 16000): int((first + 1) * 16000)]
    assert np.sqrt((window ** 2).mean()) > 0.01
    assert not list(tmp_path.glob("sub/.*tmp"))  # nothing half-written left


@requires_soundfont
def test_pedal_holds_notes_in_the_audio():
    # One note of 0.2 s, the pedal held down until 1.5 s: audible after the note-off only with pedal.
    held = decode([SUSTAIN_ON, 60, shift(20), NOTE_OFF + 60, shift(100), shift(30), SUSTAIN_OFF])
    dry = decode([60, shift(20), NOTE_OFF + 60, shift(100), shift(30)])
    notes = R.sustain_notes(held.to("second")).tracks[0].notes
    assert notes[0].end == pytest.approx(1.5)
    a = R.render_wav(held, sample_rate=16000, tail=0.2, normalize=False)
    b = R.render_wav(dry, sample_rate=16000, tail=0.2, normalize=False)
    assert len(a) == int(1.7 * 16000) and len(b) == int(0.4 * 16000)  # the dry piece ends at 0.2 s
    b = np.pad(b, ((0, len(a) - len(b)), (0, 0)))
    late = slice(int(0.8 * 16000), int(1.2 * 16000))
    assert np.abs(a[late]).max() > 20 * max(np.abs(b[late]).max(), 1e-5)


@requires_soundfont
def test_render_wav_of_silence_and_bad_arguments():
    empty = decode([shift(50)])
    audio = R.render_wav(empty, sample_rate=8000, tail=1.0)
    assert audio.shape == (8000, 2) and not audio.any()
    with pytest.raises(R.RenderError, match="sample_rate"):
        R.render_wav(empty, sample_rate=100)
    with pytest.raises(R.RenderError, match="tail"):
        R.render_wav(empty, tail=-1)


# --------------------------------------------------------------------------- piano roll
def png_pixels(data: bytes) -> np.ndarray:
    from PIL import Image as image  # Pillow is a dependency of the package
    with image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        return np.asarray(im)


def test_piano_roll_geometry_colours_and_pedal():
    # C4 soft from 0.5 to 1.5 s, G4 loud from 1.0 to 2.0 s, pedal down from 1.0 to 3.0 s.
    score = decode([shift(50), VELOCITY + 4, 60, shift(50), SUSTAIN_ON, VELOCITY + 31, 67, shift(50),
                    NOTE_OFF + 60, shift(50), NOTE_OFF + 67, shift(100), SUSTAIN_OFF])
    img = R.piano_roll(score, px_per_second=20, px_per_pitch=3)
    assert img.shape == ((108 - 21 + 1) * 3 + R.PEDAL_STRIP, 60, 3)  # 3 s at 20 px/s
    row = lambda p: (108 - p) * 3 + 1  # noqa: E731
    soft, loud = R.velocity_colour([18, 126])
    assert (img[row(60), 10:30] == soft).all() and (img[row(67), 20:40] == loud).all()
    assert not (img[row(60), 31:] == soft).all(axis=-1).any()
    strip = img[-2]
    assert (strip[20:60] != strip[:20].mean(0).astype(np.uint8)).any(axis=-1).all()  # pedal shown
    assert (strip[:20] == strip[0]).all() and (strip[20:60] == strip[20]).all()
    assert np.array_equal(png_pixels(R.png_bytes(img)), img)


def test_piano_roll_png_of_a_real_piece(piece, tmp_path):
    path = tmp_path / "roll.png"
    data = R.piano_roll_png(piece, path, labels=False, px_per_second=40)
    assert path.read_bytes() == data and data[:8] == b"\x89PNG\r\n\x1a\n"
    img = png_pixels(data)
    assert img.shape[1] == int(np.ceil(piece.end() / 1000 * 40)) and img.shape[0] == 88 * 4 + R.PEDAL_STRIP
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 8  # notes of several velocities drawn
    wide = R.piano_roll(piece, px_per_second=1000, max_width=500)
    assert wide.shape[1] == 500  # capped


def test_the_piano_roll_is_labelled_with_octaves_and_seconds(piece):
    """The default picture frames the roll: octave names up the left at their C rows, seconds along the
    bottom; the roll itself is drawn unchanged inside the frame."""
    bare = R.piano_roll(piece, px_per_second=40)
    img = png_pixels(R.piano_roll_png(piece, px_per_second=40))
    h, w = bare.shape[:2]
    assert img.shape == (R.TOP_MARGIN + h + R.BOTTOM_MARGIN, R.LEFT_MARGIN + w, 3)
    assert np.array_equal(img[R.TOP_MARGIN : R.TOP_MARGIN + h, R.LEFT_MARGIN :], bare)

    def inked(block):  # pixels much brighter than the background: text or ticks
        return (block.astype(int).sum(-1) > int(R._BACKGROUND.sum()) + 150).sum()

    for c in (24, 36, 48, 60, 72, 84, 96, 108):  # C1 ... C8: a label beside each C row
        y = R.TOP_MARGIN + (108 - c) * 4 + 2
        assert inked(img[y - 3 : y + 4, : R.LEFT_MARGIN - 4]) > 5, f"no label at MIDI {c}"
    between = R.TOP_MARGIN + (108 - 66) * 4 + 2  # F#4: no label there
    assert inked(img[between - 1 : between + 2, : R.LEFT_MARGIN - 6]) == 0
    assert inked(img[R.TOP_MARGIN + h + 4 :, R.LEFT_MARGIN :]) > 50  # time labels along the bottom
    assert inked(img[R.TOP_MARGIN + h + 4 :, R.LEFT_MARGIN + w // 2 - 20 : R.LEFT_MARGIN + w // 2 + 20]) > 0


# --------------------------------------------------------------------------- command line
@requires_soundfont
def test_cli_render_end_to_end(tmp_path, capsys):
    midi = tmp_path / "in.mid"
    midi.write_bytes(POP909_FIXTURES[1].read_bytes())
    rc = cli.main(["render", str(midi), "--wav", str(tmp_path / "o.wav"), "--png", str(tmp_path / "o.png"),
                   "--sample-rate", "16000"])
    assert rc == 0
    frames, rate, _ = read_wav(tmp_path / "o.wav")
    end = symusic.Score(midi, ttype="second").end()
    assert rate == 16000 and frames.shape[0] / rate == pytest.approx(end + 1.0, abs=0.05)
    assert np.abs(frames).max() > 20000
    framed = R.TOP_MARGIN + 88 * 4 + R.PEDAL_STRIP + R.BOTTOM_MARGIN
    assert png_pixels((tmp_path / "o.png").read_bytes()).shape[0] == framed


def test_cli_render_bad_input_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"hello")
    assert cli.main(["render", str(bad), "--png", str(tmp_path / "o.png")]) == 1
    assert "not a MIDI file" in capsys.readouterr().err
    assert cli.main(["render", str(POP909_FIXTURES[1])]) == 1
    assert "--wav" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [bad]


def test_write_samples_writes_midi_and_rolls_and_one_wav(tmp_path):
    pieces = [{"midi": f.read_bytes(), "score": symusic.Score(str(f))} for f in POP909_FIXTURES[:3]]
    written = R.write_samples(pieces, tmp_path / "s", count=2)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "sample_00.mid", "sample_00.png", "sample_00.wav", "sample_01.mid", "sample_01.png"]
    assert set(written) == set((tmp_path / "s").iterdir())
    assert (tmp_path / "s" / "sample_01.mid").read_bytes() == POP909_FIXTURES[1].read_bytes()
