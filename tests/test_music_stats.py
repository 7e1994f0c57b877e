"""Sample statistics used to compare generated music with the test set (issue 6)."""

import math

import numpy as np
import pytest
from conftest import POP909_FIXTURES

from hf_midi.evaluation import music_stats
from hf_midi.remote_code import codec


def test_hand_built_notes():
    # Two notes: [0, 100) and [50, 100) steps; pitches 60 and 64 (two pitch classes, equal counts).
    s = music_stats.note_stats(np.array([0, 50]), np.array([100, 100]), np.array([60, 64]), np.array([60, 80]))
    assert s["notes_per_second"] == 2.0  # 2 onsets over 1 s
    assert s["mean_polyphony"] == 1.5  # 1 note for 0.5 s, then 2 for 0.5 s
    assert s["pitch_range"] == 4.0
    assert math.isclose(s["pitch_class_entropy"], 1.0)
    assert s["velocity_std"] == 10.0
    assert math.isclose(s["duration_p95"], 0.975)  # durations 1.0 s and 0.5 s


def test_long_notes_finds_a_held_note():
    # NOTE_ON 60, 12 s of TIME_SHIFT (12 x 1 s), NOTE_OFF 60; then a 0.5 s note.
    shift_1s = codec.TIME_SHIFT + 99
    ids = [60] + [shift_1s] * 12 + [128 + 60, 62, codec.TIME_SHIFT + 49, 128 + 62]
    r = music_stats.long_notes([ids, [64, shift_1s, 128 + 64]])
    assert r["notes"] == 3 and math.isclose(r["share_longer"], 1 / 3) and math.isclose(r["longest_seconds"], 12.0)
    assert music_stats.long_notes([ids], seconds=20.0)["share_longer"] == 0.0


def test_silence_does_not_dilute_polyphony():
    # A chord of 3 for 1 s, 10 s of silence, a chord of 3 for 1 s: polyphony 3 while anything sounds.
    start = np.array([0, 0, 0, 1100, 1100, 1100])
    s = music_stats.note_stats(start, start + 100, np.array([60, 64, 67] * 2), np.full(6, 64))
    assert s["mean_polyphony"] == 3.0


def test_empty_is_nan():
    s = music_stats.ids_stats([])
    assert all(math.isnan(v) for v in s.values())


def test_windows_cover_a_real_piece():
    ids = codec.encode(POP909_FIXTURES[0])
    notes = codec.ids_to_notes(ids)
    windows = music_stats.window_stats(ids, 30.0, min_notes=1)
    span = (notes["end"].max() - notes["start"].min()) / 100
    assert len(windows) == math.ceil((notes["start"].max() - notes["start"].min() + 1) / 3000)
    assert len(windows) >= int(span // 30)
    # each window's rate, counted again from the decoded score (10 ticks a step): its onsets over the span
    # from its first onset to its last end, ends clipped to the window
    score = codec.decode(ids)
    starts = np.array([nt.start // 10 for t in score.tracks for nt in t.notes])
    ends = np.array([nt.end // 10 for t in score.tracks for nt in t.notes])
    first, rates = starts.min(), []
    for w in range(int((starts.max() - first) // 3000) + 1):
        inside = (starts - first) // 3000 == w
        lo = first + 3000 * w
        span = max(int(np.minimum(ends[inside], lo + 3000).max() - starts[inside].min()), 1)
        rates.append(inside.sum() / (span / 100))
    assert [w["notes_per_second"] for w in windows] == pytest.approx(rates)


def test_band_report_counts_inside():
    ref = [{k: float(v) for k in music_stats.STATS} for v in range(100)]
    samples = [{k: v for k in music_stats.STATS} for v in (50.0, 2.0, 97.0, float("nan"))]
    rep = music_stats.band_report(samples, ref)
    for k in music_stats.STATS:
        assert rep[k]["inside"] == 1 and rep[k]["total"] == 4
        assert math.isclose(rep[k]["band_low"], 4.95) and math.isclose(rep[k]["band_high"], 94.05)
