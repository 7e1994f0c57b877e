"""The listener's checks (hf_midi.evaluation.listener): each fault on a piece made to have it, real music
through real_windows, and the counts."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import POP909_FIXTURES

from hf_midi.evaluation.listener import FAULTS, listen, listen_ids, listener_report, real_windows
from hf_midi.remote_code.codec import BOS_ID, EOS_ID, SUSTAIN_OFF, SUSTAIN_ON, TIME_SHIFT, VELOCITY, encode


def _ids(events: list[tuple[float, int, float]], seconds: float, pedal: tuple[float, float] | None = None) -> list:
    """Ids of notes (onset s, pitch, length s) on the 10 ms grid, the clock run to ``seconds``."""
    marks = []
    for on, pitch, length in events:
        marks += [(round(on * 100), 1, pitch), (round((on + length) * 100), 0, 128 + pitch)]
    if pedal:
        marks += [(round(pedal[0] * 100), 0, SUSTAIN_ON), (round(pedal[1] * 100), 0, SUSTAIN_OFF)]
    marks.append((round(seconds * 100), 2, None))
    out, clock = [BOS_ID, VELOCITY + 20], 0
    for step, _, token in sorted(marks, key=lambda m: (m[0], m[1])):
        while step > clock:
            k = min(100, step - clock)
            out.append(TIME_SHIFT + k - 1)
            clock += k
        if token is not None:
            out.append(token)
    return out


def _melody(start: float, end: float, rate: float = 4.0) -> list[tuple[float, int, float]]:
    times = np.arange(start, end, 1 / rate)
    return [(float(t), 60 + (i * 5) % 12, 0.2) for i, t in enumerate(times)]


def test_a_healthy_piece_has_no_fault():
    r = listen_ids(_ids(_melody(0.0, 29.8), 30.0), 30.0)
    assert r["faults"] == [] and not r["broken"] and not r["pedal_held"]
    assert r["first_note"] == 0.0 and r["notes_per_second"] == pytest.approx(4.0, abs=0.1)


@pytest.mark.parametrize("events, seconds, fault", [
    (_melody(1.5, 29.8), 30.0, "late start"),
    (_melody(0.0, 10.0) + _melody(15.0, 29.8), 30.0, "long silence"),
    (_melody(0.0, 29.8, rate=1.5), 30.0, "sparse"),
    (_melody(0.0, 20.0), 20.5, "early end"),  # the music stops at 20.5 s of the 30 asked
    (_melody(0.0, 29.8) + [(2.0, 40, 9.0)], 30.0, "stuck note"),
])
def test_each_fault_is_named(events, seconds, fault):
    r = listen_ids(_ids(events, seconds), 30.0)
    assert fault in r["faults"] and r["broken"]
    assert set(r["faults"]) <= set(FAULTS)


def test_the_pedal_is_counted_apart():
    held = listen_ids(_ids(_melody(0.0, 29.8), 30.0, pedal=(0.0, 29.0)), 30.0)
    assert held["pedal_held"] and not held["broken"] and held["pedal_share"] == pytest.approx(29 / 30, abs=0.01)
    some = listen_ids(_ids(_melody(0.0, 29.8), 30.0, pedal=(0.0, 15.0)), 30.0)
    assert not some["pedal_held"]


def test_an_eos_and_an_empty_piece():
    ended = _ids(_melody(0.0, 10.0), 10.2) + [EOS_ID]
    assert listen_ids(ended, 30.0)["faults"] == ["early end"]  # an end, not a silence
    empty = listen_ids([BOS_ID, EOS_ID], 30.0)
    assert empty["faults"] == ["late start", "long silence", "sparse", "early end"]


def test_real_windows_of_real_music_and_the_report():
    pieces = [encode(p) for p in POP909_FIXTURES]
    windows = real_windows(pieces, 30.0, seed=0)
    assert len(windows) == len(pieces)  # every fixture is longer than 30 s
    assert real_windows(pieces, 30.0, seed=0)[0]["start"].tolist() == windows[0]["start"].tolist()  # seeded
    for w in windows:
        assert (w["start"] >= 0).all() and (w["start"] < 3000).all() and (w["end"] <= 3000).all()
    results = [listen(w, 30.0) for w in windows]
    report = listener_report(results)
    assert report["pieces"] == len(pieces) and report["broken"] == sum(r["broken"] for r in results)
    assert report["broken"] <= 2  # pop songs: no silence, plenty of notes
    assert set(report["broken_pieces"]) == {i for i, r in enumerate(results) if r["broken"]}
    assert real_windows(pieces, 1e5) == []  # nothing that long


# --------------------------------------------------------------------------- degenerate modes
def notes_of(onsets, duration=20):
    """(start step, pitch) pairs as ids_to_notes would give them."""
    start = np.array([s for s, _ in onsets], np.int64)
    return {"start": start, "end": start + duration, "pitch": np.array([p for _, p in onsets], np.int64)}


def test_hammering_is_counted_and_its_longest_stretch_measured():
    from hf_midi.evaluation.listener import degenerate, degenerate_figures

    # C4 re-struck every 0.2 s for 2 s (11 strikes: 10 re-strikes), then a scale one note each 0.5 s
    hammer = [(20 * i, 60) for i in range(11)] + [(300 + 50 * i, 62 + i) for i in range(10)]
    f = degenerate_figures(notes_of(hammer), 10.0)
    assert f["restrike_share"] == pytest.approx(10 / 21)
    assert f["longest_hammering"] == pytest.approx(2.0)
    assert "hammering" in degenerate(notes_of(hammer), 10.0)["modes"]
    # the same notes 0.4 s apart are no re-strike
    calm = [(40 * i, 60) for i in range(11)]
    assert degenerate_figures(notes_of(calm), 10.0)["restrike_share"] == 0.0


def test_blips_drones_and_lone_openings():
    from hf_midi.evaluation.listener import degenerate, degenerate_figures

    varied = [(25 * i, 48 + (i * 7) % 24) for i in range(80)]  # 20 s, every pitch class
    assert degenerate(notes_of(varied), 20.0)["modes"] == []
    blips = notes_of(varied, duration=1)
    assert degenerate_figures(blips, 20.0)["blip_share"] == 1.0 and "blips" in degenerate(blips, 20.0)["modes"]
    drone = [(25 * i, (50, 57)[i % 2]) for i in range(80)]  # two pitches for 20 s
    f = degenerate_figures(notes_of(drone), 20.0)
    assert f["fewest_pitch_classes"] == 2 and "drone" in degenerate(notes_of(drone), 20.0)["modes"]
    lone = [(0, 62)] + [(430 + 25 * i, 48 + (i * 7) % 24) for i in range(60)]  # D4 alone for 4.3 s
    f = degenerate_figures(notes_of(lone), 20.0)
    assert f["opening_gap"] == pytest.approx(4.3) and "lone opening" in degenerate(notes_of(lone), 20.0)["modes"]


@pytest.mark.data
def test_the_degenerate_limits_are_real_musics_percentiles(shared_data):
    """DegenerateLimits holds the 95th percentiles (the 5th for pitch classes) of random 30-s windows of
    GiantMIDI test and POP909 test, as benchmarks/calibrate_degenerate.py computes them."""
    import importlib.util

    from conftest import ROOT

    from hf_midi.evaluation.listener import DegenerateLimits

    spec = importlib.util.spec_from_file_location("calibrate", ROOT / "benchmarks" / "calibrate_degenerate.py")
    calibrate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(calibrate)
    bands = calibrate.calibrate(calibrate.test_windows(shared_data, 30.0, 0), 30.0)
    limits = DegenerateLimits()
    for key, band in bands.items():
        assert getattr(limits, key) == band[5 if key == "fewest_pitch_classes" else 95], key
