"""The codec against docs/vocabulary.md: rule by rule on hand-built scores, against a plain-Python reference
of the contract on random scores and real files, and the decoding rules on hand-written ids."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import symusic
from conftest import POP909_FIXTURES, requires_shared_data, split_files
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_midi.remote_code import codec
from hf_midi.remote_code.codec import BOS_ID, EOS_ID, PAD_ID, SUSTAIN_MODES

NAMES = codec.token_names()
ID = {n: i for i, n in enumerate(NAMES)}


def names(ids) -> list[str]:
    return [NAMES[i] for i in ids]


def ids_of(text: str) -> list[int]:
    return [ID[t] for t in text.split()]


# --------------------------------------------------------------------------- building scores
def make_score(*tracks, tpq=480):
    """A score in seconds. Each track is a dict: notes=[(time, duration, pitch, velocity)],
    cc=[(time, number, value)], drum=False. Times are seconds (stored as float32 by symusic)."""
    score = symusic.Score(tpq, ttype="second")
    for tr in tracks:
        track = symusic.Track(tr.get("name", ""), 0, tr.get("drum", False), ttype="second")
        for t, d, p, v in tr.get("notes", ()):
            track.notes.append(symusic.Note(t, d, p, v, ttype="second"))
        for t, n, v in tr.get("cc", ()):
            track.controls.append(symusic.ControlChange(t, n, v, ttype="second"))
        score.tracks.append(track)
    return score


def enc(score, sustain="events") -> list[str]:
    return names(codec.encode(score, sustain=sustain))


# --------------------------------------------------------------------------- the contract, in plain Python
def q(t: float) -> int:
    """Rule 2 on a float32 time promoted to float64 (Python floats are float64)."""
    return math.floor(t * 100 + 0.5)


def reference_notes(score, sustain="events"):
    """Rules 1-6, written from the contract text with loops: (notes, pedal intervals) in steps.
    Notes are (start, end, pitch, bin) sorted; pedal intervals [(a, b)] as used by the mode."""
    if not isinstance(score.ttype, symusic.core.Second):
        score = score.to("second")
    notes, per_track_pedal = [], []
    for track in score.tracks:
        if track.is_drum:
            continue
        for n in track.notes:  # n.time, n.end: the float32 values symusic reports
            s = q(n.time)
            e = q(n.end)
            notes.append([s, e if e > s else s + 1, n.pitch, min(max(n.velocity, 1), 127)])
        down_at, intervals = None, []
        for c in sorted((c for c in track.controls if c.number == 64), key=lambda c: c.time):
            if c.value >= 64 and down_at is None:
                down_at = c.time
            elif c.value < 64 and down_at is not None:
                intervals.append((q(down_at), q(c.time)))
                down_at = None
        if down_at is not None:
            intervals.append((q(down_at), None))
        per_track_pedal.append(intervals)
    if not notes:
        return [], []
    last = max(e for _, e, _, _ in notes)
    spans = sorted((a, last if b is None else b) for tr in per_track_pedal for a, b in tr)
    merged = []
    for a, b in spans:
        if b <= a:
            continue
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    pedal = [tuple(x) for x in merged] if sustain != "ignore" else []
    if sustain == "extend":
        for n in notes:
            for a, b in pedal:
                if a <= n[1] < b:
                    n[1] = b
    by_pitch = {}
    for s, e, p, v in notes:
        by_pitch.setdefault(p, {}).setdefault(s, []).append((e, v))
    out = []
    for p, onsets in by_pitch.items():
        starts = sorted(onsets)
        for i, s in enumerate(starts):
            e = max(e for e, _ in onsets[s])
            v = max(v for _, v in onsets[s])
            if i + 1 < len(starts):
                e = min(e, starts[i + 1])
            out.append((s, e, p, (v - 1) // 4 + 1))
    return sorted(out), pedal


def reference_encode(score, sustain="events") -> list[int]:
    """Rules 7-8 on ``reference_notes``."""
    notes, pedal = reference_notes(score, sustain)
    events = []  # (step, kind order, pitch, ids)
    for s, e, p, b in notes:
        events.append((e, 0, p, "off", p))
        events.append((s, 3, p, "on", b))
    if sustain == "events":
        for a, b in pedal:
            events.append((b, 1, 0, "pedal_off", 0))
            events.append((a, 2, 0, "pedal_on", 0))
    ids, now, last_bin = [], 0, None
    for step, _, p, what, arg in sorted(events):
        while step - now >= 100:
            ids.append(ID["TIME_SHIFT_1000"])
            now += 100
        if step > now:
            ids.append(ID[f"TIME_SHIFT_{10 * (step - now)}"])
            now = step
        if what == "off":
            ids.append(ID[f"NOTE_OFF_{p}"])
        elif what == "pedal_off":
            ids.append(ID["SUSTAIN_OFF"])
        elif what == "pedal_on":
            ids.append(ID["SUSTAIN_ON"])
        else:
            if arg != last_bin:
                ids.append(ID[f"VELOCITY_{arg}"])
                last_bin = arg
            ids.append(ID[f"NOTE_ON_{p}"])
    return ids


def decoded_notes(ids):
    """(start, end, pitch, bin) of ``ids_to_notes``, sorted, and the CC64 changes."""
    d = codec.ids_to_notes(ids)
    notes = sorted(zip(d["start"].tolist(), d["end"].tolist(), d["pitch"].tolist(),
                       codec.velocity_bin(d["velocity"]).tolist()))
    return notes, list(zip(d["pedal_time"].tolist(), d["pedal_value"].tolist()))


def pedal_changes(pedal):
    return [x for a, b in pedal for x in ((a, 127), (b, 0))]


def check_round_trip(score, ids, sustain):
    """The round trip ("What the tests hold"): decoded notes are the source's notes after rules 1-5 (to the step,
    velocity in its bin), pedal likewise, and encode(decode(ids)) == ids, also through a file."""
    notes, pedal = reference_notes(score, sustain)
    got_notes, got_pedal = decoded_notes(ids)
    assert got_notes == notes
    assert got_pedal == (pedal_changes(pedal) if sustain == "events" else [])
    decoded = codec.decode(ids)
    assert codec.encode(decoded, sustain=sustain).tolist() == list(ids)
    assert codec.encode(decoded.dumps_midi(), sustain=sustain).tolist() == list(ids)


# --------------------------------------------------------------------------- vocabulary
def test_vocabulary_layout():
    assert len(NAMES) == codec.VOCAB_SIZE == 393 and codec.NUM_EVENTS == 390
    assert NAMES[0] == "NOTE_ON_0" and NAMES[127] == "NOTE_ON_127"
    assert NAMES[128] == "NOTE_OFF_0" and NAMES[255] == "NOTE_OFF_127"
    assert NAMES[256] == "TIME_SHIFT_10" and NAMES[355] == "TIME_SHIFT_1000"
    assert NAMES[356] == "VELOCITY_1" and NAMES[387] == "VELOCITY_32"
    assert NAMES[388:] == ["SUSTAIN_ON", "SUSTAIN_OFF", "<pad>", "<bos>", "<eos>"]
    assert (PAD_ID, BOS_ID, EOS_ID) == (390, 391, 392)
    assert codec.shift_steps([256, 355, 60, 300]).tolist() == [1, 100, 0, 45]
    assert codec.event_family([0, 127, 128, 255, 256, 355, 356, 387, 388, 389, 390, 392]).tolist() == [
        0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


# --------------------------------------------------------------------------- MIDI -> ids, rule by rule
def test_rule1_tracks_merge_and_drums_are_dropped():
    score = make_score(
        {"notes": [(0.0, 0.5, 60, 80)]},
        {"notes": [(0.25, 0.25, 64, 80)]},
        {"notes": [(0.1, 0.1, 36, 100)], "drum": True},
    )
    assert enc(score) == ["VELOCITY_20", "NOTE_ON_60", "TIME_SHIFT_250", "NOTE_ON_64",
                          "TIME_SHIFT_250", "NOTE_OFF_60", "NOTE_OFF_64"]


def test_rule1_tempo_map_is_applied():
    # 480 ticks a quarter at 120 bpm (0.5 s a beat), 60 bpm from tick 960 (1 s a beat).
    score = symusic.Score(480)
    score.tempos.append(symusic.Tempo(0, 120.0))
    score.tempos.append(symusic.Tempo(960, 60.0))
    track = symusic.Track("", 0, False)
    track.notes.append(symusic.Note(480, 480, 60, 64))  # 0.5 s .. 1.0 s
    track.notes.append(symusic.Note(1440, 240, 62, 64))  # 1.0 + 1.0 = 2.0 s .. 2.5 s
    score.tracks.append(track)
    assert enc(score) == ["TIME_SHIFT_500", "VELOCITY_16", "NOTE_ON_60", "TIME_SHIFT_500",
                          "NOTE_OFF_60", "TIME_SHIFT_1000", "NOTE_ON_62", "TIME_SHIFT_500", "NOTE_OFF_62"]
    # and through a file: the tempo map is read from the MIDI bytes
    assert codec.encode(score.dumps_midi()).tolist() == codec.encode(score).tolist()


def test_rule2_absolute_times_are_rounded_never_gaps():
    # Onsets every 14.9 ms: rounding each gap would give 1 step each and drift; absolute
    # rounding gives floor(k * 1.49 + 0.5).
    score = make_score({"notes": [(k * 0.0149, 0.005, 60 + k, 64) for k in range(20)]})
    notes, _ = decoded_notes(codec.encode(score))
    starts = [s for s, *_ in notes]
    assert starts == [q(float(np.float32(k * 0.0149))) for k in range(20)]
    assert starts[-1] == 28 != 19  # 19 is what rounding gaps (1 step each) would give


def test_rule2_float32_times_are_promoted_before_the_arithmetic():
    # float32 times whose float32 arithmetic rounds the other way from float64's.
    boundary = []
    for k in range(1, 20000):
        t32 = np.float32(k / 200)  # near a half step
        f64 = math.floor(float(t32) * 100 + 0.5)
        f32 = int(np.floor(t32 * np.float32(100) + np.float32(0.5)))
        if f64 != f32:
            boundary.append((float(t32), f64, f32))
        if len(boundary) == 4:
            break
    assert len(boundary) == 4
    for t, f64, f32 in boundary:
        notes, _ = decoded_notes(codec.encode(make_score({"notes": [(t, 1.0, 60, 64)]})))
        assert notes[0][0] == f64 != f32


def test_rule2_the_end_is_symusics_float32_end():
    # A note's end is rounded from Note.end (float32 time + float32 duration, summed in float32),
    # not from the exact float64 sum: find notes where the two round differently.
    rng = np.random.default_rng(0)
    n = 1_000_000
    t = (rng.integers(1, 3000, n) / 200 + rng.normal(size=n) * 1e-6).astype(np.float32)
    d = (rng.integers(1, 200, n) / 200 + rng.normal(size=n) * 1e-6).astype(np.float32)
    e32 = (t + d).astype(np.float64)  # float32 addition
    e64 = t.astype(np.float64) + d.astype(np.float64)  # exact
    hit = np.flatnonzero(np.floor(e32 * 100 + 0.5) != np.floor(e64 * 100 + 0.5))
    assert len(hit) >= 3
    for i in hit[:3]:
        score = make_score({"notes": [(float(t[i]), float(d[i]), 60, 64)]})
        assert score.tracks[0].notes[0].end == e32[i]
        notes, _ = decoded_notes(codec.encode(score))
        assert notes[0][:2] == (q(float(t[i])), max(q(e32[i]), q(float(t[i])) + 1))
        assert q(e32[i]) != q(e64[i])


def test_rule2_an_end_at_or_before_its_start_gets_one_step():
    score = make_score({"notes": [(0.10, 0.0, 60, 64), (0.20, 0.004, 62, 64), (0.30, 0.006, 64, 64)]})
    notes, _ = decoded_notes(codec.encode(score))
    assert [(s, e) for s, e, *_ in notes] == [(10, 11), (20, 21), (30, 31)]


def test_rule3_pedal_threshold_64_and_intervals_from_cc64():
    notes = [(0.0, 0.1, 60, 64), (2.0, 0.1, 62, 64)]
    # 63 is up, 64 is down; a repeated down (100 after 64) changes nothing; CC 67 is ignored.
    cc = [(0.1, 64, 63), (0.2, 64, 64), (0.3, 64, 100), (0.4, 67, 127), (0.5, 64, 63), (0.6, 64, 127),
          (0.8, 64, 0)]
    assert codec.ids_to_notes(codec.encode(make_score({"notes": notes, "cc": cc})))["pedal_time"].tolist() == [
        20, 50, 60, 80]


def test_rule3_pedal_still_down_closes_at_the_last_note_end():
    score = make_score(
        {"notes": [(0.0, 0.5, 60, 64)], "cc": [(0.2, 64, 127)]},
        {"notes": [(0.1, 1.2, 64, 64)]},
    )
    assert enc(score)[-3:] == ["TIME_SHIFT_800", "NOTE_OFF_64", "SUSTAIN_OFF"]
    d = codec.ids_to_notes(codec.encode(score))
    assert d["pedal_time"].tolist() == [20, 130] and d["pedal_value"].tolist() == [127, 0]


def test_rule3_union_across_tracks_touching_merge_empty_vanish():
    score = make_score(
        {"notes": [(0.0, 3.0, 60, 64)], "cc": [(0.10, 64, 127), (0.50, 64, 0), (2.000, 64, 127), (2.004, 64, 0)]},
        {"notes": [], "cc": [(0.30, 64, 127), (0.70, 64, 0), (0.70, 64, 127), (0.9, 64, 0)]},
        {"notes": [], "cc": [(0.904, 64, 127), (1.2, 64, 0)]},
    )
    # [10, 50) u [30, 70) u [70, 90) u [90, 120) is one interval; [200, 200) is empty.
    d = codec.ids_to_notes(codec.encode(score))
    assert d["pedal_time"].tolist() == [10, 120] and d["pedal_value"].tolist() == [127, 0]


def test_rule4_sustain_modes():
    notes = [(0.0, 0.2, 60, 64), (0.1, 0.4, 62, 64), (0.1, 0.55, 64, 64), (0.6, 0.1, 65, 64)]
    score = make_score({"notes": notes, "cc": [(0.2, 64, 127), (0.5, 64, 0)]})
    assert enc(score, "events") == [
        "VELOCITY_16", "NOTE_ON_60", "TIME_SHIFT_100", "NOTE_ON_62", "NOTE_ON_64", "TIME_SHIFT_100",
        "NOTE_OFF_60", "SUSTAIN_ON", "TIME_SHIFT_300", "NOTE_OFF_62", "SUSTAIN_OFF", "TIME_SHIFT_100",
        "NOTE_ON_65", "TIME_SHIFT_50", "NOTE_OFF_64", "TIME_SHIFT_50", "NOTE_OFF_65"]
    # extend: an end e with a <= e < b moves to b = 50 (60 ends at a = 20: moved; 62 ends at
    # b = 50: kept; 64 ends after b: kept); no pedal tokens.
    assert enc(score, "extend") == [
        "VELOCITY_16", "NOTE_ON_60", "TIME_SHIFT_100", "NOTE_ON_62", "NOTE_ON_64", "TIME_SHIFT_400",
        "NOTE_OFF_60", "NOTE_OFF_62", "TIME_SHIFT_100", "NOTE_ON_65", "TIME_SHIFT_50", "NOTE_OFF_64",
        "TIME_SHIFT_50", "NOTE_OFF_65"]
    assert enc(score, "ignore") == [t for t in enc(score, "events") if not t.startswith("SUSTAIN")] and \
        enc(score, "ignore") != enc(score, "events")
    with pytest.raises(ValueError, match="sustain"):
        codec.encode(score, sustain="pedal")


def test_rule5_same_onset_collapses_and_overlap_is_cut():
    score = make_score(
        {"notes": [(0.0, 0.3, 60, 20), (0.5, 1.0, 62, 64)]},
        {"notes": [(0.0, 0.2, 60, 90), (0.7, 0.2, 62, 30)]},  # 60: one note 0..30, v 90
    )
    assert enc(score) == [
        "VELOCITY_23", "NOTE_ON_60", "TIME_SHIFT_300", "NOTE_OFF_60", "TIME_SHIFT_200", "VELOCITY_16",
        "NOTE_ON_62", "TIME_SHIFT_200", "NOTE_OFF_62", "VELOCITY_8", "NOTE_ON_62", "TIME_SHIFT_200",
        "NOTE_OFF_62"]


def test_rule5_applies_after_extend():
    # 60 ends at 30, inside the pedal [20, 100): extended to 100, then cut at the re-strike (50).
    score = make_score({"notes": [(0.0, 0.3, 60, 64), (0.5, 0.1, 60, 64)], "cc": [(0.2, 64, 127), (1.0, 64, 0)]})
    notes, _ = decoded_notes(codec.encode(score, sustain="extend"))
    assert [(s, e) for s, e, *_ in notes] == [(0, 50), (50, 100)]


def test_rule6_velocity_bins():
    assert codec.velocity_bin([1, 4, 5, 8, 9, 124, 125, 127, 0, -3, 200]).tolist() == [
        1, 1, 2, 2, 3, 31, 32, 32, 1, 1, 32]
    assert all(codec.velocity_bin(codec.bin_velocity(b)) == b for b in range(1, 33))
    perf = codec.Performance(np.array([0.0, 0.1]), np.array([0.05, 0.15]), np.array([60, 61]),
                             np.array([0, 300]), np.empty(0), np.empty(0))
    assert names(codec.performance_to_ids(perf))[:2] == ["VELOCITY_1", "NOTE_ON_60"]
    assert "VELOCITY_32" in names(codec.performance_to_ids(perf))


def test_rule7_order_inside_a_step():
    score = make_score(
        {"notes": [(0.0, 0.5, 67, 64), (0.0, 0.5, 60, 64), (0.5, 0.2, 72, 64), (0.5, 0.2, 62, 100),
                   (0.5, 0.2, 64, 64)],
         "cc": [(0.2, 64, 127), (0.5, 64, 0)]},
        {"cc": [(0.5, 64, 127), (0.6, 64, 0)]},  # touches the first interval: they merge
    )
    # Step 50: offs in ascending pitch, then onsets in ascending pitch, each with a VELOCITY
    # token only when its bin differs from the last one emitted (72 reuses 64's bin 16).
    assert enc(score) == [
        "VELOCITY_16", "NOTE_ON_60", "NOTE_ON_67", "TIME_SHIFT_200", "SUSTAIN_ON", "TIME_SHIFT_300",
        "NOTE_OFF_60", "NOTE_OFF_67", "VELOCITY_25", "NOTE_ON_62", "VELOCITY_16", "NOTE_ON_64", "NOTE_ON_72",
        "TIME_SHIFT_100", "SUSTAIN_OFF", "TIME_SHIFT_100", "NOTE_OFF_62", "NOTE_OFF_64", "NOTE_OFF_72"]


def test_rule7_pedal_events_sit_between_offs_and_onsets():
    # Touching intervals merge (rule 3), so SUSTAIN_OFF and SUSTAIN_ON never share a step; each
    # sits between that step's NOTE_OFFs and NOTE_ONs.
    score = make_score({
        "notes": [(0.0, 0.5, 61, 64), (0.1, 0.4, 70, 64), (0.5, 0.1, 50, 64), (0.6, 0.2, 57, 64),
                  (0.8, 0.1, 55, 64)],
        "cc": [(0.1, 64, 127), (0.5, 64, 0), (0.8, 64, 127), (1.0, 64, 0)],
    })
    assert enc(score) == [
        "VELOCITY_16", "NOTE_ON_61", "TIME_SHIFT_100", "SUSTAIN_ON", "NOTE_ON_70", "TIME_SHIFT_400",
        "NOTE_OFF_61", "NOTE_OFF_70", "SUSTAIN_OFF", "NOTE_ON_50", "TIME_SHIFT_100", "NOTE_OFF_50",
        "NOTE_ON_57", "TIME_SHIFT_200", "NOTE_OFF_57", "SUSTAIN_ON", "NOTE_ON_55", "TIME_SHIFT_100",
        "NOTE_OFF_55", "TIME_SHIFT_100", "SUSTAIN_OFF"]


def test_rule8_leading_silence_and_long_shifts():
    score = make_score({"notes": [(2.25, 1.0, 60, 64), (5.25, 2.5, 60, 64)]})  # exact in float32
    assert enc(score) == [
        "TIME_SHIFT_1000", "TIME_SHIFT_1000", "TIME_SHIFT_250", "VELOCITY_16", "NOTE_ON_60",
        "TIME_SHIFT_1000", "NOTE_OFF_60", "TIME_SHIFT_1000", "TIME_SHIFT_1000", "NOTE_ON_60",
        "TIME_SHIFT_1000", "TIME_SHIFT_1000", "TIME_SHIFT_500", "NOTE_OFF_60"]
    assert max(codec.shift_steps(codec.encode(score))) == 100


def test_rule8_nothing_trails_the_last_event_and_empty_is_empty():
    score = make_score({"notes": [(0.0, 0.1, 60, 64)], "cc": [(0.0, 64, 127), (0.3, 64, 0)]})
    assert enc(score)[-1] == "SUSTAIN_OFF" and enc(score, "ignore")[-1] == "NOTE_OFF_60"
    assert codec.encode(make_score({"cc": [(0.1, 64, 127)]})).tolist() == []
    assert codec.encode(make_score()).tolist() == []


def test_rule9_specials_come_from_the_tokenizer_not_the_codec():
    ids = codec.encode(make_score({"notes": [(0.0, 0.1, 60, 64)]}))
    assert BOS_ID not in ids and EOS_ID not in ids and PAD_ID not in ids


# --------------------------------------------------------------------------- ids -> MIDI, rule by rule
def dec(text: str):
    return decoded_notes(ids_of(text))


def test_decode_restrike_and_note_off_on_a_silent_pitch():
    notes, _ = dec("VELOCITY_10 NOTE_ON_60 TIME_SHIFT_100 NOTE_ON_60 TIME_SHIFT_50 NOTE_OFF_60 NOTE_OFF_60 "
                   "NOTE_OFF_61 TIME_SHIFT_10")
    assert notes == [(0, 10, 60, 10), (10, 15, 60, 10)]


def test_decode_zero_length_lasts_one_step_and_open_notes_close_at_the_end():
    notes, _ = dec("NOTE_ON_60 NOTE_OFF_60 NOTE_ON_62 TIME_SHIFT_200 NOTE_ON_64")
    assert notes == [(0, 1, 60, 16), (0, 20, 62, 16), (20, 21, 64, 16)]
    assert codec.ids_to_notes(ids_of("NOTE_ON_64"))["end_step"] == 0


def test_decode_velocity_default_and_bins():
    d = codec.ids_to_notes(ids_of("NOTE_ON_60 VELOCITY_1 NOTE_ON_61 VELOCITY_32 NOTE_ON_62 TIME_SHIFT_10"))
    assert d["velocity"].tolist() == [codec.DEFAULT_VELOCITY, 2, 126]


def test_decode_pedal_duplicates_ignored_and_closed_at_the_end():
    _, pedal = dec("SUSTAIN_OFF SUSTAIN_ON TIME_SHIFT_100 SUSTAIN_ON SUSTAIN_OFF TIME_SHIFT_10 SUSTAIN_OFF "
                   "SUSTAIN_ON NOTE_ON_60 TIME_SHIFT_20")
    assert pedal == [(0, 127), (10, 0), (11, 127), (13, 0)]


def test_decode_eos_ends_pad_and_bos_are_skipped():
    ids = ids_of("NOTE_ON_60 TIME_SHIFT_100 NOTE_OFF_60")
    padded = [BOS_ID, *ids[:1], PAD_ID, *ids[1:], EOS_ID, *ids_of("NOTE_ON_70 TIME_SHIFT_500"), PAD_ID]
    assert decoded_notes(padded) == decoded_notes(ids) == ([(0, 10, 60, 16)], [])
    assert decoded_notes([EOS_ID, *ids]) == ([], [])
    assert codec.ids_to_notes([])["end_step"] == 0


def test_decode_ids_outside_the_vocabulary_are_errors():
    with pytest.raises(codec.TokenIdError, match=r"token id 393 at position 2 is outside 0\.\.392"):
        codec.decode([60, 256, 393])
    with pytest.raises(codec.TokenIdError, match=r"-1 at position 0"):
        codec.decode(np.array([-1, 5]))
    with pytest.raises(codec.TokenIdError, match="not an integer"):
        codec.decode([1.5])


def test_ids_outside_the_vocabulary_are_one_line_from_the_command(tmp_path):
    """The root error reaches the user as one line naming the id and its position, and nothing is written."""
    ids = tmp_path / "ids.txt"
    ids.write_text("391 60 256 393 392")
    proc = subprocess.run([sys.executable, "-m", "hf_midi.cli", "detokenize", str(ids), "-o", str(tmp_path / "x.mid")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "hf-midi detokenize: error: token id 393 at position 3 is outside 0..392"]
    assert not (tmp_path / "x.mid").exists()


def test_decoded_times_are_exact_after_a_midi_file(tmp_path):
    ids = ids_of("TIME_SHIFT_10 VELOCITY_5 NOTE_ON_60 TIME_SHIFT_1000 TIME_SHIFT_1000 TIME_SHIFT_370 NOTE_OFF_60 "
                 "SUSTAIN_ON NOTE_ON_61 TIME_SHIFT_990 SUSTAIN_OFF NOTE_ON_60 TIME_SHIFT_10 NOTE_OFF_60 NOTE_OFF_61")
    path = tmp_path / "x.mid"
    codec.decode(ids).dump_midi(str(path))
    ticks = symusic.Score(str(path))
    assert ticks.ticks_per_quarter == codec.DECODE_TPQ
    notes = ticks.tracks[0].notes.numpy()
    assert notes["time"].tolist() == [10, 2380, 3370] and (notes["duration"] % 10 == 0).all()
    assert ticks.tracks[0].controls.numpy()["time"].tolist() == [2380, 3370]
    seconds = symusic.Score(str(path), ttype="second").tracks[0].notes
    assert [n.time for n in seconds] == pytest.approx([0.01, 2.38, 3.37], abs=1e-6)
    assert codec.encode(path).tolist() == ids


# --------------------------------------------------------------------------- the reference itself
def test_reference_agrees_with_hand_written_expectations():
    # The plain-Python reference is what the random and data tests trust; pin it to the rules.
    score = make_score({"notes": [(0.0, 0.3, 60, 20), (0.0, 0.2, 60, 90), (0.5, 1.0, 62, 64),
                                  (0.7, 0.2, 62, 30)]})
    assert names(reference_encode(score)) == [
        "VELOCITY_23", "NOTE_ON_60", "TIME_SHIFT_300", "NOTE_OFF_60", "TIME_SHIFT_200", "VELOCITY_16",
        "NOTE_ON_62", "TIME_SHIFT_200", "NOTE_OFF_62", "VELOCITY_8", "NOTE_ON_62", "TIME_SHIFT_200",
        "NOTE_OFF_62"]


# --------------------------------------------------------------------------- round trip on real files
@pytest.mark.parametrize("path", POP909_FIXTURES, ids=lambda p: p.name)
def test_round_trip_on_fixtures(path):
    score = symusic.Score(str(path), ttype="second")
    for sustain in SUSTAIN_MODES:
        ids = codec.encode(path, sustain=sustain)
        assert ids.tolist() == reference_encode(score, sustain)
        check_round_trip(score, ids, sustain)


def test_start_and_end_within_five_ms_of_the_source():
    # "What the tests hold" in its own words, against the source's float times: each decoded note has
    # a source note of its pitch starting within 5 ms, whose velocity is in the decoded bin, and
    # ending within 5 ms unless rule 2 (one step) or rule 5 (cut at a re-strike) moved the end.
    path = POP909_FIXTURES[0]
    score = symusic.Score(str(path), ttype="second")
    by_pitch = {}
    for tr in score.tracks:
        for n in tr.notes:
            by_pitch.setdefault(n.pitch, []).append((n.time, n.end, n.velocity))
    d = codec.ids_to_notes(codec.encode(path, sustain="ignore"))
    moved = 0
    for s, e, p, v in zip(*(d[k].tolist() for k in ("start", "end", "pitch", "velocity"))):
        near = [x for x in by_pitch[p] if abs(x[0] - s / 100) <= 0.005 + 1e-6]
        assert near, (s, p)
        assert codec.velocity_bin(v) in codec.velocity_bin([x[2] for x in near])
        if not any(abs(x[1] - e / 100) <= 0.005 + 1e-6 for x in near):
            moved += 1
            assert e == s + 1 or any(x[1] > e / 100 for x in near)
    assert 0 < moved < len(d["start"]) // 10


@pytest.mark.data
@pytest.mark.slow
@requires_shared_data
def test_round_trip_on_every_test_split_file(shared_data):
    files = split_files(shared_data / "pop909", "split.csv") + split_files(shared_data / "asap", "split_by_piece.csv")
    assert len(files) == 90 + 121
    for path in files:
        score = codec.load_score(path)
        ids = codec.encode(score)
        assert ids.tolist() == reference_encode(score), path
        check_round_trip(score, ids, "events")


# --------------------------------------------------------------------------- random scores and ids
times = st.one_of(
    st.integers(0, 600).map(lambda k: k / 200),  # exact half steps: the rounding boundary
    st.floats(0, 4, allow_nan=False, width=32),
)
note = st.tuples(times, st.one_of(st.just(0.0), times.map(lambda t: t / 2)),
                 st.one_of(st.integers(58, 62), st.integers(0, 127)), st.integers(1, 127))
cc = st.tuples(times, st.sampled_from([64, 64, 64, 67]), st.one_of(st.sampled_from([0, 63, 64, 127]),
                                                                   st.integers(0, 127)))
track = st.fixed_dictionaries({"notes": st.lists(note, max_size=25), "cc": st.lists(cc, max_size=8),
                               "drum": st.sampled_from([False, False, False, True])})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(track, min_size=1, max_size=3), st.sampled_from(SUSTAIN_MODES))
def test_random_scores_match_the_reference_and_round_trip(tracks, sustain):
    score = make_score(*tracks)
    ids = codec.encode(score, sustain=sustain)
    assert ids.tolist() == reference_encode(score, sustain)
    check_round_trip(score, ids, sustain)


ids_strategy = st.lists(st.one_of(st.integers(0, 392), st.integers(256, 300), st.integers(388, 389)),
                        max_size=120)


@settings(max_examples=200, deadline=None)
@given(ids_strategy)
def test_decode_never_raises_on_ids_in_range(ids):
    score = codec.decode(ids)
    d = codec.ids_to_notes(ids)
    assert (d["end"] > d["start"]).all() and (d["end"] <= max(d["end_step"], 0) + 1).all()
    assert d["pedal_value"].tolist() == [127, 0] * (len(d["pedal_value"]) // 2)
    assert len(score.tracks) == 1 and score.tracks[0].program == 0
    assert len(score.tracks[0].notes) == len(d["start"])
    # what decode makes, encode reads back as the same notes (rules 1-5 are no-ops on it, except
    # that overlapping same-pitch notes from re-strikes at one step collapse)
    again = codec.ids_to_notes(codec.encode(score))
    assert set(zip(again["start"].tolist(), again["pitch"].tolist())) == set(
        zip(d["start"].tolist(), d["pitch"].tolist()))


@settings(max_examples=100, deadline=None)
@given(ids_strategy)
def test_encode_decode_is_idempotent_after_one_pass(ids):
    # Any ids -> decode -> encode gives encode-produced ids, which then round-trip exactly.
    canonical = codec.encode(codec.decode(ids))
    assert codec.encode(codec.decode(canonical)).tolist() == canonical.tolist()


def test_seconds_to_steps_rounds_as_times_do():
    """One rounding of seconds to steps: generation's limits and the listener's checks use the codec's rule 2."""
    from hf_midi.remote_code.codec import seconds_to_steps

    assert [seconds_to_steps(s) for s in (0.125, 0.135, 30.0, 0.004, 0.005)] == [13, 14, 3000, 0, 1]
    perf = codec.Performance(np.array([0.125]), np.array([0.3]), np.array([60]), np.array([80]),
                             np.empty(0), np.empty(0))
    assert codec.shift_steps(codec.performance_to_ids(perf)).sum() == seconds_to_steps(0.3)
    assert codec.ids_to_notes(codec.performance_to_ids(perf))["start"][0] == seconds_to_steps(0.125)


def test_which_ids_are_never_generated_has_one_answer():
    import torch

    from hf_midi.remote_code.performance_state import PerformanceState
    from hf_midi.remote_code.processors import PerformanceGrammarLogitsProcessor
    from hf_midi.training.models import generation_config

    assert codec.never_generated(393) == [PAD_ID, codec.BOS_ID]
    assert codec.never_generated(400) == [PAD_ID, codec.BOS_ID, *range(393, 400)]

    class Config:
        vocab_size = 448

    assert generation_config(Config()).suppress_tokens == codec.never_generated(448)
    scores = PerformanceGrammarLogitsProcessor(PerformanceState())(torch.tensor([[BOS_ID]]), torch.zeros(1, 448))
    forbidden = set(torch.isinf(scores[0]).nonzero().flatten().tolist())
    assert set(codec.never_generated(448)) <= forbidden


def test_keys_down_counts_as_a_token_by_token_reading_does():
    """keys_down (vectorised) against the plain reading: a NOTE_ON of a silent pitch presses a key, a
    NOTE_OFF of a sounding one lets it go, re-strikes, stray NOTE_OFFs and every other id change nothing."""
    from hf_midi.remote_code.codec import NOTE_OFF, TIME_SHIFT, keys_down

    def reading(ids):
        down, out = set(), []
        for t in ids:
            if t < NOTE_OFF:
                down.add(t)
            elif t < TIME_SHIFT:
                down.discard(t - NOTE_OFF)
            out.append(len(down))
        return out

    rng = np.random.default_rng(0)
    for _ in range(200):
        ids = rng.choice([60, 61, 62, 60 + NOTE_OFF, 61 + NOTE_OFF, 62 + NOTE_OFF, TIME_SHIFT + 4, 391, 392],
                         size=int(rng.integers(0, 120)))
        assert keys_down(ids).tolist() == reading(ids.tolist())
    assert keys_down([60, 60, 64, 60 + NOTE_OFF, 60 + NOTE_OFF, 64 + NOTE_OFF]).tolist() == [1, 1, 2, 1, 1, 0]
