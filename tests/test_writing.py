"""Writing with the model (hf_midi.remote_code.writing, issue 36): a fill keeps everything outside its span and
joins both edges; an accompaniment holds every melody note as given, whatever the controls, the search and the
critic do; the weights are the model's log-probability of what follows; bad input is refused before composing,
by the pipeline, the command line and the Space alike.

The model is the tests' tiny random GPT-2 (real forward passes, real sampling, real MIDI files): what it plays is
noise, but what is forced and what is kept does not depend on how well it plays."""

from __future__ import annotations

import json

import numpy as np
import pytest
import symusic
import torch
from conftest import EDGE_FIXTURES, POP909_FIXTURES, save_tiny_model

from hf_midi.cli import main as cli
from hf_midi.loading import load_pipeline
from hf_midi.remote_code.arguments import GenerationError
from hf_midi.remote_code.codec import (
    BOS_ID,
    NOTE_ON,
    TIME_SHIFT,
    VELOCITY,
    ids_to_notes,
    velocity_bin,
)
from hf_midi.remote_code.generation import generate_music, music_generation_config
from hf_midi.remote_code.processors import GivenNotes, GivenNotesLogitsProcessor
from hf_midi.remote_code.writing import AccompanyPlan, FillPlan, follow_logprob, score_notes

SONG = POP909_FIXTURES[0]  # POP909 001 (MIT): tracks MELODY, BRIDGE, PIANO; the melody enters at 12.7 s


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-writer"), seed=0, plays_on=True)


@pytest.fixture(scope="module")
def pipe(model_dir):
    return load_pipeline(str(model_dir))


@pytest.fixture(scope="module")
def model(pipe):
    return pipe.model


@pytest.fixture(scope="module")
def tune(tmp_path_factory) -> str:
    """POP909 001's 12-22 s as a file of its own, moved to time 0: the melody's first phrase and the piano."""
    score = symusic.Score(SONG).to("second").clip(12.5, 22.5)
    score = score.shift_time(-12.5)
    path = tmp_path_factory.mktemp("tune") / "tune.mid"
    score.dump_midi(path)
    return str(path)


def token_steps(row) -> np.ndarray:
    """The step at which each token of a row happens (before its own TIME_SHIFT)."""
    shift = np.where((row >= TIME_SHIFT) & (row < VELOCITY), row - TIME_SHIFT + 1, 0)
    return np.cumsum(shift) - shift


def weight_calls(monkeypatch) -> list:
    """A list that receives the (rows, counted) of each ``follow_logprob`` call a plan makes to weigh."""
    calls, real = [], follow_logprob

    def spy(model_, rows, counted, context):
        calls.append((rows, counted))
        return real(model_, rows, counted, context)

    monkeypatch.setattr("hf_midi.remote_code.writing.follow_logprob", spy)
    return calls


def grid_notes(notes: dict) -> set:
    return set(zip(notes["start"].tolist(), notes["end"].tolist(), notes["pitch"].tolist()))


# --------------------------------------------------------------------------- the forcing processor
@pytest.mark.parametrize("canonical", [False, True])
def test_every_given_note_sounds_as_given_whatever_the_controls(model, canonical):
    from hf_midi.remote_code.controls import MusicControls

    rng = np.random.default_rng(1)
    start = np.sort(rng.integers(0, 500, 24))
    pitch = rng.integers(55, 80, 24)
    keep = np.ones(24, bool)
    for p in set(pitch.tolist()):  # one note of a pitch at a time
        idx = np.flatnonzero(pitch == p)
        for a, b in zip(idx[:-1], idx[1:]):
            keep[b] &= start[b] >= start[a] + 40
    start, pitch = start[keep], pitch[keep]
    end = start + rng.integers(1, 40, len(start))
    velocity = rng.integers(1, 128, len(start))
    given = GivenNotes(start, end, pitch, velocity)
    # a key, a range and dynamics that exclude most of the given notes: they are given, so they sound anyway
    controls = MusicControls(key="F# major", pitch_range=(30, 50), dynamics="pp")
    torch.manual_seed(0)
    out = generate_music(model, torch.tensor([[BOS_ID]]), seconds=6.0, given=given, controls=controls,
                         canonical_order=canonical, sound_at_once=False,
                         generation_config=music_generation_config(model))
    ids = out[0].numpy()
    got = ids_to_notes(ids)
    assert grid_notes({"start": start, "end": end, "pitch": pitch}) <= grid_notes(got)
    # their velocities' bins: the velocity in force at each given onset
    at = {(a, p): v for a, p, v in zip(got["start"], got["pitch"], got["velocity"])}
    assert [velocity_bin(at[(a, p)]) for a, p in zip(start, pitch)] == velocity_bin(velocity).tolist()
    own = [(a, p) for a, p in zip(got["start"], got["pitch"]) if (a, p) not in set(zip(start, pitch))]
    assert own  # the model played around them
    assert all(30 <= p <= 50 for _, p in own)  # and its own notes keep to the range


def test_time_never_jumps_past_a_given_event_and_the_step_waits_for_it():
    given = GivenNotes([30], [45], [60], [100])
    state_ids = torch.tensor([[BOS_ID, VELOCITY + 10, NOTE_ON + 40, TIME_SHIFT - 1 + 20]])  # 20 steps in
    processor = GivenNotesLogitsProcessor(given)
    processor.state.start = 1
    scores = processor(state_ids, torch.zeros(1, 393))
    allowed_shifts = torch.isfinite(scores[0, TIME_SHIFT:VELOCITY]).nonzero()[:, 0] + 1
    assert allowed_shifts.max() == 10  # lands on the given onset at 30, no further
    at_onset = torch.cat([state_ids, torch.tensor([[TIME_SHIFT - 1 + 10]])], 1)  # now at step 30
    scores = processor(at_onset, torch.zeros(1, 393))
    assert torch.isinf(scores[0, TIME_SHIFT:VELOCITY]).all()  # the step does not end before the given onset
    assert torch.isfinite(scores[0, VELOCITY - 1 + int(velocity_bin(100))])  # its velocity first
    assert torch.isinf(scores[0, NOTE_ON + 60])  # not at the wrong velocity
    assert torch.isfinite(scores[0, NOTE_ON + 50])  # the model may strike below it in the same step
    assert torch.isinf(scores[0, NOTE_ON + 70])  # but not above it before it (the encoder's order)
    cornered = processor(at_onset, torch.full((1, 393), -float("inf")))  # nothing left: the given event
    assert torch.isfinite(cornered[0]).nonzero()[:, 0].tolist() == [VELOCITY - 1 + int(velocity_bin(100))]


def test_an_accompaniment_leans_towards_the_pitch_classes_of_melody_notes_near_it():
    ids = torch.tensor([[BOS_ID, TIME_SHIFT - 1 + 20]])  # 20 steps in; a melody note (E4) sounds 40-90
    plain = GivenNotesLogitsProcessor(GivenNotes([40], [90], [64], [80]))
    leaning = GivenNotesLogitsProcessor(GivenNotes([40], [90], [64], [80], harmony=3.0))
    for p in (plain, leaning):
        p.state.start = 1
    lift = leaning(ids, torch.zeros(1, 393)) - plain(ids, torch.zeros(1, 393))
    assert lift[0, NOTE_ON + 52] == 3.0 and lift[0, NOTE_ON + 76] == 3.0  # E3 and E5: its pitch class
    assert lift[0, NOTE_ON + 60] == 0 and lift[0, TIME_SHIFT] == 0  # C4, a shift: nothing
    far = torch.tensor([[BOS_ID] + [TIME_SHIFT - 1 + 100] * 2])  # at 200, long after it ended: nothing
    assert (leaning(far, torch.zeros(1, 393)) == plain(far, torch.zeros(1, 393))).all()


def test_an_accompaniment_keeps_off_a_semitone_or_a_tritone_against_the_melody_sounding():
    ids = torch.tensor([[BOS_ID, TIME_SHIFT - 1 + 20]])  # 20 steps in; a melody note (E4) sounds 25-90
    plain = GivenNotesLogitsProcessor(GivenNotes([25], [90], [64], [80]))
    rubbing = GivenNotesLogitsProcessor(GivenNotes([25], [90], [64], [80], clash=2.0))
    for p in (plain, rubbing):
        p.state.start = 1
    drop = rubbing(ids, torch.zeros(1, 393)) - plain(ids, torch.zeros(1, 393))
    for pitch in (53, 63, 65, 70, 75, 77):  # F3, D#4, F4, A#4, D#5, F5: a semitone or a tritone from E
        assert drop[0, NOTE_ON + pitch] == -2.0
    for pitch in (52, 60, 67, 71, 76):  # E3, C4, G4, B4, E5: consonant or the tune's own pitch class
        assert drop[0, NOTE_ON + pitch] == 0
    assert drop[0, TIME_SHIFT] == 0
    for step in (5, 100):  # long before the note (more than 100 ms) and after it ends: nothing
        at = torch.tensor([[BOS_ID, TIME_SHIFT - 1 + step]])
        assert (rubbing(at, torch.zeros(1, 393)) == plain(at, torch.zeros(1, 393))).all()


# --------------------------------------------------------------------------- weighing what follows
def test_follow_logprob_is_the_models_log_probability_of_what_follows(model):
    rng = np.random.default_rng(0)
    rows = [np.concatenate(([BOS_ID], rng.integers(0, 356, n))) for n in (40, 70, 55)]
    counted = [np.arange(len(r)) >= len(r) - 12 for r in rows]
    got = follow_logprob(model, rows, counted, context=1000)
    for row, mask, value in zip(rows, counted, got):  # one row at a time, by hand
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor(row[None])).logits[0, :-1].float(), -1)
        want = logp[torch.arange(len(row) - 1), torch.tensor(row[1:])][torch.tensor(mask[1:])].sum()
        assert value == pytest.approx(float(want), abs=1e-3)
    short = follow_logprob(model, rows, counted, context=5)  # a shorter context: another (finite) number
    assert np.isfinite(short).all() and not np.allclose(short, got)
    assert follow_logprob(model, rows, [np.zeros(len(r), bool) for r in rows]).tolist() == [0, 0, 0]


# --------------------------------------------------------------------------- fill
@pytest.mark.parametrize("candidates", [1, 3])
def test_a_fill_keeps_everything_outside_its_span_and_joins_both_edges(pipe, candidates):
    start, end = 5.0, 7.5
    report = []
    [r] = pipe(str(SONG), infill=(start, end), seed=2, candidates=candidates, search_report=report)
    assert r["span"] == (start, end)
    original, pedal = score_notes(symusic.Score(SONG))
    filled = ids_to_notes(np.array(r["token_ids"]))
    a, b = 500, 750
    outside = (original["start"] < a) | (original["start"] >= b)
    keep = {k: v[outside] for k, v in original.items()}
    got = grid_notes(filled)
    assert grid_notes(keep) <= got  # every note before and after, as it was (onset, end, pitch)
    new = {n for n in got if a <= n[0] < b}
    assert new  # the span holds new notes
    assert got - grid_notes(keep) == new  # nothing else changed
    assert all(e <= b for _, e, _ in new)  # no new note hangs past the span
    # no double strike at either edge: a pitch sounding is never struck again by the fill
    for s0, e0, p0 in grid_notes(keep):
        assert not any(p == p0 and s0 < s < e0 for s, _, p in new)
    # the pedal outside the span is the piece's
    steps = len(pedal)
    mine = np.zeros(steps + 1000, bool)
    for t, v, t2 in zip(filled["pedal_time"], filled["pedal_value"], list(filled["pedal_time"][1:]) + [steps + 1000]):
        if v >= 64:
            mine[t:t2] = True
    assert (mine[:a] == pedal[:a]).all() and (mine[b:steps] == pedal[b:steps]).all()
    # the weights: with K > 1 the search kept each chunk's highest-weighted candidate
    assert bool(report) == (candidates > 1)
    assert all(r_["kept"] == int(np.argmax(r_["scores"])) and len(r_["scores"]) == candidates for r_ in report)


def test_a_fill_with_the_weights_hears_what_follows(model, monkeypatch):
    """The weight of a candidate is the model's log-probability of the music after the span, given the candidate:
    the same number ``follow_logprob`` gives on the whole piece as the plan assembles it."""
    plan = FillPlan.from_piece(str(SONG), 3.0, 5.0)
    calls = weight_calls(monkeypatch)
    torch.manual_seed(3)
    plan.compose(model, candidates=2, generation_config=music_generation_config(model))
    assert calls
    for rows, counted in calls:
        assert len(rows) == 2
        for row, mask in zip(rows, counted):
            times = token_steps(row)
            assert mask.any() and (times[mask] >= 500).all() and (times[mask] < 900).all()  # 4 s after the span
            after = ids_to_notes(row)
            later = plan.after["start"] < 900
            assert grid_notes({k: v[later] for k, v in plan.after.items()}) <= grid_notes(after)


def test_an_accompaniments_weight_hears_the_melody_under_the_chunk_and_after_it(model, tune, monkeypatch):
    """A candidate's weight is the model's log-probability of the melody's onsets from the chunk's start to
    ``follow_seconds`` past its end, each heard after the candidate's own notes: how the accompaniment sits under
    the tune and how it leads into it. Its own onsets, and the melody before the chunk, are not counted."""
    plan = AccompanyPlan.from_melody(tune, track="MELODY")
    tune_onsets = set(zip(plan.melody["start"].tolist(), plan.melody["pitch"].tolist()))
    calls, report = weight_calls(monkeypatch), []
    torch.manual_seed(3)
    plan.compose(model, candidates=2, generation_config=music_generation_config(model), search_report=report)
    assert len(calls) == len(report) > 1
    bounds = np.cumsum([0] + [round(c["seconds"] * 100) for c in report])
    for (rows, counted), since, upto in zip(calls, bounds[:-1], bounds[1:]):
        want = {(a, p) for a, p in tune_onsets if since <= a < upto + 400}  # follow_seconds = 4 s
        for row, mask in zip(rows, counted):
            times = token_steps(row)
            got = {(int(t), int(i)) for t, i in zip(times[mask], row[mask])}
            assert (row[mask] < 128).all() and got == want  # the melody's onsets there, and only they
            own = {(int(t), int(i)) for t, i in zip(times, row) if i < 128} - tune_onsets
            assert own and all(t <= upto for t, _ in own)  # the candidate's own notes stop where it has come
    # within=False: the melody after the chunk alone (the first chunk's candidates are the same, same seed)
    first = calls[0]
    calls.clear()
    weigh = plan.weigh(model, 4.0, 512, within=False)
    monkeypatch.setattr(AccompanyPlan, "weigh", lambda self, *a: weigh)
    torch.manual_seed(3)
    plan.compose(model, candidates=2, generation_config=music_generation_config(model))
    for (row, mask), (row0, mask0) in zip(zip(*calls[0]), zip(*first)):
        assert (row == row0).all()
        times = token_steps(row)
        assert (times[mask] >= bounds[1]).all() and mask.sum() < mask0.sum()


@pytest.mark.parametrize("span, problem", [
    ((5.0, 3.0), "must come before its end"), ((2.0, 2.0), "must come before its end"),
    ((-1.0, 2.0), "must be >= 0"), ((10.0, 9999.0), "past the end"), ((1.0, 1.004), "shorter than one 10-ms step"),
    (("a", 3.0), "must be a number"),
])
def test_a_bad_span_is_refused_before_composing(pipe, span, problem):
    with pytest.raises(GenerationError, match=problem):
        pipe(str(SONG), infill=span)


def test_fill_needs_a_piece_and_takes_no_length(pipe):
    with pytest.raises(GenerationError, match="needs a piece"):
        pipe(infill=(1.0, 2.0))
    with pytest.raises(GenerationError, match="seconds does not go with infill"):
        pipe(str(SONG), infill=(1.0, 2.0), seconds=4)
    with pytest.raises(GenerationError, match="stream"):
        next(pipe.stream(str(SONG), infill=(1.0, 2.0)))
    with pytest.raises(GenerationError, match="has no notes"):
        pipe(str(EDGE_FIXTURES / "test-all-gm-percussion.mid"), infill=(0.0, 1.0))


# --------------------------------------------------------------------------- accompany
@pytest.mark.parametrize("candidates", [1, 3])
def test_accompaniment_holds_every_melody_note_exactly(pipe, tune, candidates):
    report = []
    [r] = pipe(melody=tune, melody_track="MELODY", accompany=True, seed=1, candidates=candidates,
               canonical_order=True, key="C major", search_report=report)
    melody, _ = score_notes(symusic.Score(tune), "MELODY")
    names = [t.name for t in r["score"].tracks]
    assert names == ["Melody", "Accompaniment"]
    out = r["score"].tracks[0].notes.numpy()
    # the melody track: every note on the 10-ms grid with its own velocity (ticks are 10 a step)
    assert sorted(zip(out["time"] // 10, (out["time"] + out["duration"]) // 10, out["pitch"], out["velocity"])) == \
        sorted(zip(melody["start"], melody["end"], melody["pitch"], melody["velocity"]))
    # and in the events the model composed around it: onset, end and pitch, the velocity's bin
    composed = ids_to_notes(np.array(r["token_ids"]))
    assert grid_notes(melody) <= grid_notes(composed)
    assert r["melody_notes"] == len(melody["start"]) and r["accompaniment_notes"] > 0
    assert r["seconds"] == pytest.approx(melody["end"].max() / 100, abs=0.02)
    assert bool(report) == (candidates > 1)


def test_a_melody_may_be_a_list_of_notes_and_streams(pipe):
    notes = [(0.0, 0.5, 64, 90), (0.5, 1.0, 67), (1.0, 2.0, 72, 100)]
    chunks = list(pipe.stream(melody=notes, accompany=True, seed=0, candidates=2, chunk_seconds=0.5))
    assert chunks[-1].done and len(chunks) >= 3
    piece = chunks[-1].piece
    got = piece["score"].tracks[0].notes.numpy()
    assert list(zip(got["time"] // 10, got["pitch"], got["velocity"])) == [(0, 64, 90), (50, 67, 80), (100, 72, 100)]


@pytest.mark.parametrize("melody, track, problem", [
    ([(0.0, 1.0, 60), (0.5, 1.5, 60)], None, "notes of pitch 60 overlap at 0.5 s"),
    ([], None, "has no notes"),
    ([(0.0, 4000.0, 60)], None, "longer than the longest piece allowed"),
    ([(0.0, 1.0, 200)], None, "pitch in 0..127"),
    ([(1.0, 0.5, 60)], None, "end after it starts"),
    (str(EDGE_FIXTURES / "test-all-gm-percussion.mid"), None, r"has no notes \(drum tracks are ignored\)"),
    (str(SONG), "NOPE", "has no track named 'NOPE'"),
    (str(SONG), 7, "has no track 7"),
])
def test_a_bad_melody_is_refused_before_composing(pipe, melody, track, problem):
    with pytest.raises(GenerationError, match=problem):
        pipe(melody=melody, melody_track=track, accompany=True)


def test_accompany_arguments_go_together(pipe):
    with pytest.raises(GenerationError, match="accompany=True"):
        pipe(melody=[(0.0, 1.0, 60)])
    with pytest.raises(GenerationError, match="needs melody"):
        pipe(accompany=True)
    with pytest.raises(GenerationError, match="not a prompt as well"):
        pipe(str(SONG), melody=[(0.0, 1.0, 60)], accompany=True)
    with pytest.raises(GenerationError, match="infill= or accompany=True"):
        pipe(str(SONG), infill=(1.0, 2.0), melody=[(0.0, 1.0, 60)], accompany=True)


def test_a_plan_reads_one_track_or_all(tune):
    melody = AccompanyPlan.from_melody(tune, "MELODY").melody
    by_index = AccompanyPlan.from_melody(tune, 0).melody
    assert grid_notes(melody) == grid_notes(by_index)
    with pytest.raises(GenerationError, match="overlap"):  # the whole arrangement is no melody
        AccompanyPlan.from_melody(tune)


# --------------------------------------------------------------------------- the command line
def test_cli_fills_and_accompanies(model_dir, tune, tmp_path, capsys):
    out = tmp_path / "filled.mid"
    png = tmp_path / "filled.png"
    assert cli(["infill", str(SONG), "--start", "4", "--end", "6", "--model", str(model_dir), "--seed", "0",
                "-o", str(out), "--png", str(png), "--candidates", "2"]) == 0
    filled = symusic.Score(out).to("second")
    original, _ = score_notes(symusic.Score(SONG))
    assert abs(filled.end() - original["end"].max() / 100) < 0.02 and png.stat().st_size > 0  # the whole piece
    out = tmp_path / "together.mid"
    assert cli(["accompany", tune, "--track", "MELODY", "--model", str(model_dir), "--seed", "0",
                "-o", str(out), "--candidates", "1"]) == 0
    assert [t.name for t in symusic.Score(out).tracks] == ["Melody", "Accompaniment"]


def test_cli_refuses_bad_input_and_writes_nothing(model_dir, tune, tmp_path, capsys):
    out = tmp_path / "never.mid"
    assert cli(["infill", str(SONG), "--start", "6", "--end", "4", "--model", str(model_dir), "-o", str(out)]) == 1
    assert "must come before its end" in capsys.readouterr().err and not out.exists()
    assert cli(["accompany", tune, "--track", "DRUMS", "--model", str(model_dir), "-o", str(out)]) == 1
    assert "has no track named 'DRUMS'" in capsys.readouterr().err and not out.exists()


# --------------------------------------------------------------------------- the Space and the roll
def test_the_space_fills_and_marks_the_span_and_accompanies(pipe, tune, tmp_path):
    from test_space import load_app

    from hf_midi.render import piano_roll_png

    app = load_app()
    up = app.read_upload(str(SONG))
    writing, seconds = app._writing(app.FILL, up, 4, 6.5, "")
    assert writing == {"infill": (4.0, 6.5)} and seconds == 2.5
    settings = app.make_settings(seed=4, quality="Quick (1)")
    [v] = app.make_music(pipe, settings, up.data, out_root=tmp_path / "fill", writing=writing)
    assert v.png.read_bytes() == piano_roll_png(v.data, mark=(4.0, 6.5))  # the new span marked
    assert v.png.read_bytes() != piano_roll_png(v.data)
    with pytest.raises(app.InputError, match="the gap must end by then"):
        app._writing(app.FILL, up, 4, 9999, "")
    with pytest.raises(app.InputError, match="end after it starts"):
        app._writing(app.FILL, up, 6, 4, "")
    song = app.read_upload(tune)
    writing, _ = app._writing(app.ACCOMPANY, song, 0, 0, " MELODY ")
    assert writing["melody_track"] == "MELODY" and writing["accompany"] is True
    [v] = app.make_music(pipe, settings, None, out_root=tmp_path / "acc", writing=writing)
    assert [t.name for t in symusic.Score.from_midi(v.data).tracks] == ["Melody", "Accompaniment"]
    assert app._writing(app.ACCOMPANY, song, 0, 0, "0")[0]["melody_track"] == 0


def test_a_marked_roll_tints_only_its_span():
    from hf_midi.render import piano_roll

    plain = piano_roll(str(SONG), px_per_second=10)
    marked = piano_roll(str(SONG), px_per_second=10, mark=(2.0, 3.0))
    differs = (plain != marked).any(axis=(0, 2))
    assert differs[20:30].all() and not differs[:19].any() and not differs[31:].any()


def test_an_accompaniments_roll_draws_the_given_melody_in_warm_tones(pipe):
    from hf_midi.render import accent_colour, piano_roll, roll_options, velocity_colour

    tune = [(0.0, 1.0, 76, 100), (1.0, 2.0, 79, 100)]
    [r] = pipe(melody=tune, accompany=True, seed=0, candidates=1)
    assert roll_options(r) == {"mark": None, "accent": "Melody"}
    plain = piano_roll(r["score"], px_per_second=10)
    roll = piano_roll(r["score"], px_per_second=10, **roll_options(r))
    hi = max(108, max(n.pitch for t in r["score"].tracks for n in t.notes))
    row = lambda pitch: (hi - pitch) * 4 + 1  # noqa: E731 - a note's row, px_per_pitch 4
    assert (roll[row(76), 3] == accent_colour([100])[0]).all() and (roll[row(79), 13] == accent_colour([100])[0]).all()
    assert (plain[row(76), 3] == velocity_colour([100])[0]).all()  # without the accent: by velocity
    own = r["score"].tracks[1].notes.numpy()
    checked = 0
    for t, d, p in zip(own["time"], own["duration"], own["pitch"]):  # the model's own notes keep their colours
        if p not in (76, 79) and d >= 200:
            x = int(t / 100) + 1
            assert (roll[row(int(p)), x] == plain[row(int(p)), x]).all()
            checked += 1
    assert checked
    assert roll_options({"span": (1.0, 2.0)}) == {"mark": (1.0, 2.0), "accent": None}


def test_an_accompaniment_is_steered_to_an_accompaniments_density_unless_one_is_given(model, monkeypatch):
    import hf_midi.remote_code.writing as writing
    from hf_midi.remote_code.controls import MusicControls
    from hf_midi.remote_code.defaults import GENERATION_DEFAULTS

    seen = []
    real = writing.generate_music

    def spy(*args, **kwargs):
        seen.append(kwargs.get("controls"))
        return real(*args, **kwargs)

    monkeypatch.setattr(writing, "generate_music", spy)
    plan = AccompanyPlan.from_melody([(0.0, 1.0, 60), (1.0, 2.0, 62), (2.0, 3.0, 64), (3.0, 6.0, 65)])
    config = music_generation_config(model)
    counts = {}
    for label, extra in (("steered", {}), ("free", {"density_ratio": None})):
        torch.manual_seed(0)
        counts[label] = plan.compose(model, generation_config=config, **extra)["accompaniment_notes"]
    assert seen[0].density == pytest.approx(GENERATION_DEFAULTS.accompany_density * 4 / 6)  # x the melody's rate
    assert seen[1] is None or seen[1].density is None
    assert counts["steered"] < counts["free"]  # the tiny model plays a flurry unless steered
    plan.compose(model, generation_config=config, controls=MusicControls(density=7.0, key="C major"))
    assert seen[-1].density == 7.0 and seen[-1].key == "C major"  # the caller's own density and key are kept
    # under the tune: no new note above the melody's median pitch (63 here), unless the caller gives a range
    assert seen[0].pitch_range == (21, 63) and seen[0].key is not None and seen[0].key_strength == 2.0
    plan.compose(model, generation_config=config, controls=MusicControls(pitch_range=(40, 90)))
    assert seen[-1].pitch_range == (40, 90)
    torch.manual_seed(1)
    out = plan.compose(model, generation_config=config)
    own = out["score"].tracks[1].notes.numpy()
    assert len(own["pitch"]) and own["pitch"].max() <= 63


def test_a_fill_honours_the_controls_for_its_new_notes(pipe):
    [r] = pipe(str(SONG), infill=(6.0, 9.0), seed=5, candidates=2, key="C major", pitch_range=(48, 72), pedal=False)
    original, _ = score_notes(symusic.Score(SONG))
    got = ids_to_notes(np.array(r["token_ids"]))
    new = [(s, p) for s, p in zip(got["start"], got["pitch"]) if 600 <= s < 900]
    assert new and all(48 <= p <= 72 and p % 12 in (0, 2, 4, 5, 7, 9, 11) for _, p in new)
    kept = (original["start"] < 600) | (original["start"] >= 900)  # the rest, whatever its key, as it was
    assert grid_notes({k: v[kept] for k, v in original.items()}) <= grid_notes(got)
    changes = got["pedal_time"][(got["pedal_time"] > 600) & (got["pedal_time"] < 900)]
    assert len(changes) == 0  # no pedal of its own in the span


def test_a_model_sets_how_many_candidates_it_writes_with(tmp_path, tune):
    """fill_candidates and accompany_candidates from the model's generation config are the pipeline's K when none
    is asked for (the bundled base fills with the best of 16); a model that sets none gets GENERATION_DEFAULTS'."""
    import shutil

    from hf_midi.loading import default_model_path
    from hf_midi.remote_code.defaults import GENERATION_DEFAULTS

    base = json.loads((default_model_path() / "generation_config.json").read_text())
    assert base["fill_candidates"] == 16
    folder = tmp_path / "small"
    shutil.copytree(default_model_path().parent / "small", folder)
    config = json.loads((folder / "generation_config.json").read_text())
    assert "fill_candidates" not in config
    for setting, expected in (({}, (GENERATION_DEFAULTS.fill_candidates, GENERATION_DEFAULTS.accompany_candidates)),
                              ({"fill_candidates": 3, "accompany_candidates": 2}, (3, 2))):
        (folder / "generation_config.json").write_text(json.dumps(config | setting))
        pipe = load_pipeline(folder)
        fill, accompany = [], []
        pipe(str(SONG), infill=(6.0, 7.0), seed=0, search_report=fill)
        pipe(melody=tune, melody_track="MELODY", accompany=True, seed=0, search_report=accompany)
        assert {len(r["scores"]) for r in fill} == {expected[0]}
        assert {len(r["scores"]) for r in accompany} == {expected[1]}
