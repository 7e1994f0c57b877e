"""Clean data: recordings cut at long silences, each piece starting at its first note, spans that are not
music screened out, every decision counted; on real MIDI (POP909 fixtures) and made-up performances."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import symusic
from conftest import POP909_FIXTURES, requires_shared_data

from hf_midi.data.cleaning import (
    FIGURE_COLUMNS,
    NO_CLEAN,
    CleanConfig,
    clean_performance,
    figures,
    repetition,
)
from hf_midi.data.prepare import PrepareConfig, PrepareError, prepare_dataset
from hf_midi.remote_code import codec
from hf_midi.remote_code.codec import TIME_SHIFT, VELOCITY, Performance

pq = pytest.importorskip("pyarrow.parquet")


def _perf(onsets, durations, pitches, pedal=()) -> Performance:
    onset = np.asarray(onsets, float)
    return Performance(onset, onset + np.asarray(durations, float), np.asarray(pitches, np.int64),
                       np.full(len(onset), 80, np.int64), np.asarray([p[0] for p in pedal], float),
                       np.asarray([p[1] for p in pedal], float))


def _scale(t0: float, n: int, step: float = 0.25) -> tuple[list, list, list]:
    """n notes of a wandering melody from t0 (varied pitches and lengths, so every screen passes)."""
    rng = np.random.default_rng(int(t0 * 10))
    on = list(t0 + np.cumsum(rng.uniform(0.5, 1.5, n) * step))
    return on, list(rng.uniform(0.1, 0.4, n)), list(rng.integers(48, 84, n))


def test_a_recording_is_cut_at_long_silences_and_each_piece_starts_at_its_first_note():
    a, b = _scale(3.0, 80), _scale(40.0, 80)  # 3 s of silence first; then a long pause inside
    perf = _perf(a[0] + b[0], a[1] + b[1], a[2] + b[2], pedal=[(1.0, 5.0), (45.0, 1e9)])
    pieces = clean_performance(perf, CleanConfig(split_silence=4.0))
    assert len(pieces) == 2 and all(p.reason == "" for p in pieces)
    first, second = pieces
    assert first.performance.onset[0] == 0.0 and second.performance.onset[0] == 0.0
    assert first.figures.lead_silence == pytest.approx(a[0][0], abs=1e-3)
    assert first.figures.start == pytest.approx(a[0][0], abs=1e-3)
    assert second.figures.start == pytest.approx(b[0][0], abs=1e-3)
    assert second.figures.lead_silence > 4.0  # the silence the cut removed
    # the pedal pressed before the first note is pressed at 0 s; one held to the end ends with the last note
    assert first.performance.pedal_down[0] == 0.0
    assert second.performance.pedal_up[-1] == pytest.approx(second.performance.offset.max())
    for p in pieces:  # the ids open with the music: never a time shift first
        ids = codec.performance_to_ids(p.performance)
        assert not TIME_SHIFT <= ids[0] < VELOCITY
        assert ids[0] < TIME_SHIFT or ids[0] >= VELOCITY
    # Without a cut: one piece, still starting at its first note
    [whole] = clean_performance(perf, CleanConfig(split_silence=None))
    assert whole.performance.num_notes == 160 and whole.performance.onset[0] == 0.0


@pytest.mark.parametrize("notes, reason", [
    (_perf([0.0, 1.0, 2.0], [0.5] * 3, [60, 62, 64]), "too short"),
    (_perf(np.arange(0, 40, 2.0), [0.5] * 20, list(range(40, 80, 2))), "too sparse"),
    (_perf(np.arange(0, 15, 0.01), [0.01] * 1500, list(range(40, 100)) * 25), "too dense"),
    (_perf(np.arange(0, 20, 0.2), [0.1] * 100, [60, 61] * 50), "few pitches"),
])
def test_screens_name_their_reason(notes, reason):
    [piece] = clean_performance(notes, CleanConfig())
    assert piece.reason == reason and piece.detail


def test_repetition_and_figures():
    loop = [60, 62, 64, 65, 67, 65, 64, 62] * 10
    assert repetition(np.array(loop)) > 0.85  # a loop repeats its n-grams
    assert repetition(np.arange(40, 100)) == 0.0
    fig = figures(_perf([0.0, 1.0, 2.0, 3.0], [0.5, 0.5, 0.5, 2.0], [60, 64, 67, 72], pedal=[(0.0, 2.5)]))
    assert fig.seconds == 5.0 and fig.notes_per_second == 0.8 and fig.max_silence == 0.5
    assert fig.pitch_entropy == 2.0 and fig.pedal_share == 0.5
    assert list(fig.as_dict()) == list(FIGURE_COLUMNS)


def _shifted_copy(src: Path, dest: Path, delay: float, gap_after: float, gap: float) -> None:
    """A real POP909 file with ``delay`` s of silence first and a ``gap`` s silence after ``gap_after`` s
    (a recording's pause before the music and between two movements)."""
    score = symusic.Score(str(src), ttype="second")
    for track in score.tracks:
        notes = track.notes.numpy()
        t = notes["time"] + delay
        t = np.where(t >= delay + gap_after, t + gap, t)
        track.notes = symusic.Note.from_numpy(t.astype(np.float32), notes["duration"], notes["pitch"],
                                              notes["velocity"], "second")
        controls = track.controls.numpy()
        if len(controls["time"]):
            ct = controls["time"] + delay
            ct = np.where(ct >= delay + gap_after, ct + gap, ct)
            track.controls = symusic.ControlChange.from_numpy(ct.astype(np.float32), controls["number"],
                                                              controls["value"], "second")
    score.dump_midi(str(dest))


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("rec")
    _shifted_copy(POP909_FIXTURES[0], src / "a.mid", delay=3.0, gap_after=60.0, gap=8.0)
    shutil.copy(POP909_FIXTURES[1], src / "b.mid")
    # a noise-like file: one key struck again and again
    score = symusic.Score(480)
    track = symusic.Track("Piano", 0, False)
    for k in range(200):
        track.notes.append(symusic.Note(k * 96, 48, 60, 90))
    score.tracks.append(track)
    score.dump_midi(str(src / "noise.mid"))
    return src


def _first_onset(path: Path) -> float:
    return float(codec.score_to_performance(codec.load_score(path)).onset.min())


def _rows(out: Path) -> list[dict]:
    return [r for f in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_prepare_cleans_by_default_and_every_row_is_consistent(recordings, tmp_path):
    out = tmp_path / "clean"
    report = prepare_dataset(recordings, out, PrepareConfig(split_ratios=(1.0, 0.0, 0.0), pretokenize=True,
                                                            num_workers=0, progress=False))
    rows = _rows(out)
    a = sorted((r for r in rows if r["path"] == "a.mid"), key=lambda r: r["piece"])
    assert [r["piece"] for r in a] == [0, 1]  # cut at the 8-s pause
    assert a[0]["lead_silence"] == pytest.approx(3.0 + _first_onset(POP909_FIXTURES[0]), abs=0.05)
    assert a[1]["lead_silence"] > 4.0  # the pause, less the notes that sounded into it
    for r in rows:
        ids = np.array(r["input_ids"])
        assert not TIME_SHIFT <= ids[0] < VELOCITY  # a stored piece never begins with a time shift
        assert np.array_equal(codec.encode(r["midi"]), ids)  # the bytes and the ids are the same piece
        assert set(FIGURE_COLUMNS) <= set(r)
    assert len({r["sha256"] for r in rows}) == len(rows)
    # the noise file is screened out, named with its reason, in the report, skipped.csv and the card
    assert [(f.path, f.reason) for f in report.skipped] == [("noise.mid", "few pitches")]
    assert "noise.mid,few pitches" in (out / "skipped.csv").read_text()
    card = (out / "README.md").read_text()
    assert "## Cleaning" in card and "| few pitches | 1 |" in card and "cut at silences > 4 s" in card


def test_no_clean_keeps_files_as_they_are(recordings, tmp_path):
    out = tmp_path / "raw"
    prepare_dataset(recordings, out, PrepareConfig(split_ratios=(1.0, 0.0, 0.0), clean=NO_CLEAN, num_workers=0,
                                                   progress=False))
    rows = {r["path"]: r for r in _rows(out)}
    assert sorted(rows) == ["a.mid", "b.mid", "noise.mid"]
    assert rows["a.mid"]["midi"] == (recordings / "a.mid").read_bytes()
    assert rows["a.mid"]["lead_silence"] == pytest.approx(3.0 + _first_onset(POP909_FIXTURES[0]), abs=0.05)
    assert "Cleaning: none" in (out / "README.md").read_text()


def test_where_selects_on_figures_and_names_the_columns(recordings, tmp_path):
    out = tmp_path / "dense"
    report = prepare_dataset(recordings, out, PrepareConfig(split_ratios=(1.0, 0.0, 0.0), num_workers=0,
                                                            where=("seconds>=50",), progress=False))
    kept = {(r["path"], r["piece"]) for r in _rows(out)}
    assert all(r["seconds"] >= 50 for r in _rows(out)) and kept
    excluded = [f for f in report.skipped if f.reason == "excluded by --where"]
    assert excluded and all("seconds" in f.detail for f in excluded)
    with pytest.raises(PrepareError, match="no column 'loudness'.*notes_per_second"):
        prepare_dataset(recordings, tmp_path / "x", PrepareConfig(where=("loudness>3",), progress=False))
    with pytest.raises(PrepareError, match="seconds is a number"):
        prepare_dataset(recordings, tmp_path / "y", PrepareConfig(where=("seconds>=long",), progress=False))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_a_screen_that_empties_a_split_is_an_error_and_writes_nothing(recordings, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(recordings / "noise.mid", src / "noise.mid")
    shutil.copy(recordings / "b.mid", src / "b.mid")
    (src / "split.csv").write_text("path,split\nb.mid,train\nnoise.mid,test\n")
    with pytest.raises(PrepareError, match=r"split 'test' empty.*1 few pitches.*pitch_entropy >= 2.5"):
        prepare_dataset(src, tmp_path / "out", PrepareConfig(splits_file=str(src / "split.csv"), num_workers=0,
                                                              progress=False))
    assert not (tmp_path / "out").exists()


def test_cli_no_clean_and_split_silence(recordings, tmp_path, capsys):
    from hf_midi.cli import main

    assert main(["prepare", str(recordings), str(tmp_path / "o"), "--split-ratios", "1", "0", "0",
                 "--split-silence", "20", "--quiet"]) == 0
    assert sorted(r["piece"] for r in _rows(tmp_path / "o") if r["path"] == "a.mid") == [0]  # 8 s < 20 s: no cut
    assert main(["prepare", str(recordings), str(tmp_path / "r"), "--split-ratios", "1", "0", "0", "--no-clean",
                 "--quiet"]) == 0
    assert len(_rows(tmp_path / "r")) == 3
    assert main(["prepare", str(recordings), str(tmp_path / "z"), "--split-silence", "0"]) != 0
    assert "--split-silence 0.0: must be > 0" in capsys.readouterr().err and not (tmp_path / "z").exists()


@requires_shared_data
def test_giantmidi_sample_cleaned_packs_without_a_leading_shift(tmp_path):
    """Real transcriptions (the first 40 GiantMIDI training files): most begin with silence; no stored
    piece does, and what the screens removed is reported."""
    from conftest import SHARED_DATA

    from hf_midi.data.packed import read_prepared

    root = SHARED_DATA / "giantmidi"
    src = tmp_path / "gm"
    (src / "midis").mkdir(parents=True)
    lines = (root / "split.csv").read_text(encoding="utf-8").splitlines()
    import csv

    rows = [r for r in csv.DictReader(lines) if r["split"] == "train"][:40]
    for r in rows:
        shutil.copy(root / r["path"], src / r["path"])
    report = prepare_dataset(src, tmp_path / "out", PrepareConfig(split_ratios=(1.0, 0.0, 0.0), pretokenize=True,
                                                                  progress=False))
    pieces = read_prepared(tmp_path / "out", "train")
    assert pieces and all(not TIME_SHIFT <= ids[0] < VELOCITY for _, ids in pieces)
    leads = [f.figure("lead_silence") for f in report.splits["train"] if f.piece == 0]
    assert max(leads) > 1.0  # there was silence to trim
    json.dumps([f.reason for f in report.skipped])  # every reason is plain text
