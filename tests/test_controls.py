"""The controls (hf_midi.remote_code.controls): each hard control holds for every new note, velocity and pedal
event; density is steered; the prompt is kept; the processors together never leave a step with nothing
allowed; the fast loop gives generate()'s tokens with every control on; bad values are named before
anything runs, in the library, the pipeline and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import save_tiny_model, tiny_model

from hf_midi.evaluation.adherence import find_key, holds, matching_windows, measures, transpose_ids
from hf_midi.remote_code.arguments import ArgumentError, GenerationError
from hf_midi.remote_code.codec import (
    BOS_ID,
    EOS_ID,
    NOTE_OFF,
    PAD_ID,
    SUSTAIN_OFF,
    SUSTAIN_ON,
    TIME_SHIFT,
    VELOCITY,
    ids_to_notes,
    keys_down,
    velocity_bin,
)
from hf_midi.remote_code.controls import (
    DYNAMICS,
    MusicControls,
    NoteDensityLogitsProcessor,
    parse_key,
    parse_pitch,
)
from hf_midi.remote_code.fast_generation import fast_sample
from hf_midi.remote_code.generation import generate_music, music_generation_config, music_processors
from hf_midi.remote_code.performance_state import PerformanceState

EVERY = dict(key="D minor", pitch_range=(40, 90), dynamics="mf", density=8, max_polyphony=3, pedal=False)


@pytest.fixture(scope="module")
def model():
    m = tiny_model(n_positions=512)
    with torch.no_grad():  # sharper than uniform, as a trained model's logits are
        m.transformer.ln_f.weight.mul_(6.0)
    return m


def compose(model, controls, prompt=(BOS_ID,), rows=4, seconds=8.0, seed=0, **kw):
    ids = torch.tensor([list(prompt)] * rows)
    torch.manual_seed(seed)
    return generate_music(model, ids, seconds=seconds, controls=MusicControls(**controls), **kw)


def new_part(out, prompt_len):
    for row in out.tolist():
        row = np.array(row[prompt_len:])
        yield row[row < 390]


# --------------------------------------------------------------------------- the values
def test_keys_and_pitches_parse():
    assert parse_key("D minor") == (frozenset({2, 4, 5, 7, 9, 10, 0, 1}), "D minor")  # natural minor + C#
    assert parse_key("F# major")[0] == frozenset({6, 8, 10, 11, 1, 3, 5})
    assert parse_key("bb MINOR")[1] == "Bb minor" and parse_key("Gb major")[0] == parse_key("F# major")[0]
    assert parse_key({0, 4, 7})[0] == parse_key(["C", "E", "G"])[0] == parse_key("C,E,G")[0] == frozenset({0, 4, 7})
    assert parse_pitch("C4", "p") == 60 and parse_pitch("A0", "p") == 21 and parse_pitch("C8", "p") == 108
    assert MusicControls(pitch_range="C3-C6").pitch_range == (48, 84)
    assert MusicControls(pitch_range="48..84").pitch_range == (48, 84)
    assert MusicControls(dynamics="P").velocities == DYNAMICS["p"]
    assert not MusicControls() and not MusicControls(pedal=True) and MusicControls(pedal=False)


@pytest.mark.parametrize("kwargs, argument, message", [
    ({"key": "H major"}, "key", "note name and major or minor"),
    ({"key": "D dorian"}, "key", "note name and major or minor"),
    ({"key": [0, 13]}, "key", "pitch classes are 0-11"),
    ({"key": []}, "key", "empty set"),
    ({"key_strength": 2.0}, "key_strength", "needs a key"),
    ({"key": "C major", "key_strength": -1}, "key_strength", "> 0"),
    ({"pitch_range": (80, 40)}, "pitch_range", "low 80 is above high 40"),
    ({"pitch_range": (0, 200)}, "pitch_range", "0-127"),
    ({"pitch_range": (0, 20)}, "pitch_range", "holds no piano key"),
    ({"pitch_range": (110, 127)}, "pitch_range", "holds no piano key"),
    ({"pitch_range": (60,)}, "pitch_range", "two values"),
    ({"key": "C major", "pitch_range": (61, 61)}, "pitch_range", "no piano key of C major"),
    ({"velocity_range": (0, 50)}, "velocity_range", "1..127"),
    ({"velocity_range": (60, 61)}, "velocity_range", "holds no velocity bin"),
    ({"velocity_range": (90, 40)}, "velocity_range", "above high"),
    ({"dynamics": "fff"}, "dynamics", "one of pp, p, mp, mf, f, ff"),
    ({"dynamics": "p", "velocity_range": (1, 50)}, "dynamics", "give one"),
    ({"density": 0}, "density", "> 0"),
    ({"density": -3}, "density", "> 0"),
    ({"density": float("nan")}, "density", "> 0"),
    ({"max_polyphony": 0}, "max_polyphony", ">= 1"),
    ({"max_polyphony": 2.5}, "max_polyphony", "whole number"),
    ({"pedal": "no"}, "pedal", "True or False"),
])
def test_bad_controls_are_named(kwargs, argument, message):
    with pytest.raises(ArgumentError, match=message) as e:
        MusicControls(**kwargs)
    assert e.value.argument == argument and isinstance(e.value, GenerationError)


# --------------------------------------------------------------------------- every control holds
def test_every_hard_control_holds_for_every_new_event(model):
    out = compose(model, EVERY, rows=6, seconds=10, seed=1)
    classes = parse_key("D minor")[0]
    lo, hi = DYNAMICS["mf"]
    for ids in new_part(out, 1):
        n = ids_to_notes(ids)
        assert len(n["pitch"]) > 5
        assert set((n["pitch"] % 12).tolist()) <= classes
        assert n["pitch"].min() >= 40 and n["pitch"].max() <= 90
        assert ((n["velocity"] >= lo) & (n["velocity"] <= hi)).all()  # every onset, the first included
        assert keys_down(ids).max() <= 3
        assert SUSTAIN_ON not in ids.tolist()
        held = holds(MusicControls(**EVERY), ids, 10)  # the measure agrees (the key found aside: a measure)
        assert all(held[k] for k in ("key_notes", "pitch_range", "velocities", "max_polyphony", "pedal"))


def test_without_controls_the_tiny_model_breaks_each_of_them(model):
    """The hard-control test above could not pass by accident: the same model and seeds, uncontrolled,
    plays outside each."""
    out = compose(model, {}, rows=6, seconds=10, seed=1)
    notes = [ids_to_notes(ids) for ids in new_part(out, 1)]
    pitches = np.concatenate([n["pitch"] for n in notes])
    velocities = np.concatenate([n["velocity"] for n in notes])
    assert not set((pitches % 12).tolist()) <= parse_key("D minor")[0]
    assert pitches.min() < 40 or pitches.max() > 90
    assert ((velocities < 73) | (velocities > 88)).any()
    assert max(keys_down(ids).max() for ids in new_part(out, 1)) > 3
    assert any(SUSTAIN_ON in ids.tolist() for ids in new_part(out, 1))


def test_soft_key_lets_some_notes_out_and_keeps_most_in(model):
    inside = {}
    for strength in (None, 0.5, 3.0):
        out = compose(model, {"key": "C major", "key_strength": strength}, rows=6, seconds=10)
        pitches = np.concatenate([ids_to_notes(ids)["pitch"] for ids in new_part(out, 1)])
        inside[strength] = np.isin(pitches % 12, list(parse_key("C major")[0])).mean()
    assert inside[None] == 1.0 and inside[0.5] < inside[3.0] and inside[0.5] < 1.0


def test_the_prompt_is_kept_and_only_new_music_is_steered(model):
    # A prompt out of every control: a low F# at velocity 127, the pedal down, four keys held.
    prompt = [BOS_ID, SUSTAIN_ON, VELOCITY + 31, 30, 31, 32, 33, TIME_SHIFT + 49]
    out = compose(model, EVERY, prompt=prompt, rows=4, seconds=6)
    assert (out[:, :len(prompt)] == torch.tensor(prompt)).all()
    for ids in new_part(out, len(prompt)):
        ids = ids.tolist()
        first_sound = next(i for i, t in enumerate(ids) if t < NOTE_OFF or TIME_SHIFT <= t < VELOCITY)
        assert SUSTAIN_OFF in ids[:first_sound]  # the prompt's pedal lifted before any new note or time
        new_notes = [t for t in ids if t < NOTE_OFF]
        assert new_notes and all(40 <= t <= 90 for t in new_notes)
        # the first new note waits for a velocity in range (the prompt's 126 is not)
        assert any(VELOCITY <= t < SUSTAIN_ON for t in ids[:ids.index(new_notes[0])])
        # no new NOTE_ON adds a key beyond 3 (the prompt's four may still sound; a re-strike adds none)
        whole = np.array(prompt[1:] + ids)
        counts = keys_down(whole)
        for i, t in enumerate(whole.tolist()):
            if i >= len(prompt) - 1 and t < NOTE_OFF:
                assert counts[i] <= 3 or counts[i] == counts[i - 1]


# --------------------------------------------------------------------------- never cornered
def _allowed_after_all(processors, ids):
    scores = torch.randn(ids.shape[0], 393)
    for p in processors:
        scores = p(ids, scores)
    return torch.isfinite(scores)


@pytest.mark.parametrize("name, prompt, extra", [
    # a prompt ending on a VELOCITY outside the range, silent > 4 s, no pedal, no early end
    ("velocity after velocity", [BOS_ID, 60, TIME_SHIFT + 9, 60 + 128] + [TIME_SHIFT + 99] * 5 + [VELOCITY + 31],
     dict(dynamics="pp", pedal=False)),
    # four keys down, the polyphony limit 1, a note held past the guard's 6 s
    ("polyphony and held note", [BOS_ID, 40, 44, 47, 50] + [TIME_SHIFT + 99] * 7, dict(max_polyphony=1)),
    # the pedal down with pedal=False, nothing played yet (the first-note rule bans time and <eos>)
    ("pedal down before the first note", [BOS_ID, SUSTAIN_ON], dict(pedal=False, dynamics="ff")),
    # the pedal down, a key in range held too long, every control
    ("everything", [BOS_ID, SUSTAIN_ON, VELOCITY + 3, 50] + [TIME_SHIFT + 99] * 7, EVERY),
])
def test_the_corners_leave_a_legal_event(name, prompt, extra):
    ids = torch.tensor([prompt])
    state = PerformanceState(start=1)
    processors, _ = music_processors(state, seconds=3600.0, max_note_seconds=6.0, controls=MusicControls(**extra))
    allowed = _allowed_after_all(processors, ids)
    assert allowed.any(), name
    if name == "pedal down before the first note":
        assert allowed[0, SUSTAIN_OFF] and not allowed[0, :NOTE_OFF].any()


def test_random_walks_through_every_control_are_never_cornered():
    """500 steps of 16 rows sampled from random logits through the grammar, the guards, the two rules, the
    time limit and every control (and each subset), from prompts that break each: no step is left with
    nothing allowed, and what is sampled keeps to the controls."""
    gen = torch.Generator().manual_seed(0)
    combos = [EVERY, dict(max_polyphony=1, pedal=False), dict(dynamics="pp", key="F# major", pitch_range=(60, 62)),
              dict(density=20, max_polyphony=2, velocity_range=(100, 127))]
    for controls in combos:
        prompt = torch.tensor([[BOS_ID, SUSTAIN_ON, VELOCITY + 31, 21, 22, 23, 24, TIME_SHIFT + 99]] * 16)
        state = PerformanceState(start=prompt.shape[1])
        processors, _ = music_processors(state, seconds=20.0, max_note_seconds=2.0, max_silence_seconds=1.0,
                                         controls=MusicControls(**controls))
        ids = prompt
        for _ in range(500):
            scores = torch.randn(ids.shape[0], 393, generator=gen) * 3
            for p in processors:
                scores = p(ids, scores)
            assert torch.isfinite(scores).any(1).all(), controls
            nxt = torch.multinomial(torch.softmax(scores, -1), 1, generator=gen)
            ids = torch.cat([ids, nxt], 1)
        c = MusicControls(**controls)
        for row in ids[:, prompt.shape[1]:].tolist():
            row = [t for t in row if t != EOS_ID]
            assert SUSTAIN_ON not in row or c.pedal is not False
            if c.pitches is not None:
                assert all(bool(c.pitches[t]) for t in row if t < NOTE_OFF)


# --------------------------------------------------------------------------- density, speed path, measures
def test_density_bias_pushes_towards_the_target():
    state = PerformanceState(start=1)
    p = NoteDensityLogitsProcessor(6.0, state)
    sparse = torch.tensor([[BOS_ID, 60] + [TIME_SHIFT + 99] * 5])  # 1 note in 5 s
    dense = torch.tensor([[BOS_ID] + [60, 60 + 128] * 40 + [TIME_SHIFT + 99]])  # 40 notes in 1 s
    assert p.bias(state.sync(sparse)) > 1 and p.bias(state.sync(dense)) < -1
    scores = p(sparse, torch.zeros(1, 393))
    assert scores[0, 60] > 0 > scores[0, TIME_SHIFT + 99] and scores[0, TIME_SHIFT + 99] < scores[0, TIME_SHIFT]


def test_density_reaches_its_targets_on_the_bundled_small_model():
    from hf_midi.loading import load_pipeline

    pipe = load_pipeline("small")
    for target in (3, 12):
        out = pipe(seconds=10, seed=0, num_return_sequences=2, density=target)
        rates = [measures(r["token_ids"], 10)["notes_per_second"] for r in out]
        assert all(abs(r - target) <= 0.25 * target for r in rates), (target, rates)


def test_fast_loop_gives_generate_tokens_with_every_control(model):
    ids = torch.tensor([[BOS_ID, SUSTAIN_ON, VELOCITY + 31, 30, 31, TIME_SHIFT + 20]] * 2)
    config = music_generation_config(model)
    out = []
    for fast in (False, True):
        torch.manual_seed(7)
        out.append(generate_music(model, ids, seconds=6, controls=MusicControls(**EVERY), fast=fast,
                                  weights="float32", generation_config=config, max_note_seconds=3.0))
    assert out[0].shape[1] > 60 and torch.equal(out[0], out[1])
    # and through a plain generate() with the processors and custom_generate=fast_sample
    state = PerformanceState()
    processors, criteria = music_processors(state, seconds=4, controls=MusicControls(**EVERY))
    results = []
    for extra in ({}, {"custom_generate": fast_sample, "weights": "float32"}):
        torch.manual_seed(3)
        state.set_history(None)
        results.append(model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config,
                                      logits_processor=processors, stopping_criteria=criteria, max_new_tokens=200,
                                      **extra))
    assert torch.equal(results[0], results[1])


def test_key_finder_and_window_matching():
    def scale_piece(tonic, steps, weights, octave=60):
        ids = []
        for s, w in zip(steps, weights):
            p = octave + tonic + s
            ids += [p, TIME_SHIFT + 10 * w - 1, p + 128]
        return np.array(ids)

    major = scale_piece(0, [0, 2, 4, 5, 7, 9, 11, 12, 7, 4, 0], [4, 1, 2, 1, 3, 1, 1, 4, 3, 2, 4])
    minor = scale_piece(9, [0, 2, 3, 5, 7, 8, 11, 12, 7, 3, 0], [4, 1, 2, 1, 3, 1, 1, 4, 3, 2, 4], octave=48)
    assert find_key(major) == (0, "major") and find_key(minor) == (9, "minor")
    for k in range(-5, 7):  # transposing moves the key found by as much
        assert find_key(transpose_ids(major, k)) == (k % 12, "major")
    # a window in A minor matches "D minor" once moved up a fourth (and is then in D minor)
    [moved] = matching_windows(MusicControls(key="D minor"), [minor], 5.0)
    assert find_key(moved) == (2, "minor")
    assert matching_windows(MusicControls(key="D major"), [minor], 5.0) == []
    assert matching_windows(MusicControls(pitch_range=(60, 72)), [minor], 5.0) == []


# --------------------------------------------------------------------------- pipeline and CLI
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("ctl") / "m", plays_on=True)


def test_pipeline_keywords_are_generate_music_controls(folder):
    from hf_midi.loading import load_pipeline

    pipe = load_pipeline(str(folder))
    [piece] = pipe(seconds=4, seed=5, key="F# major", dynamics="p", max_polyphony=2, pedal=False, weights="float32")
    torch.manual_seed(5)
    direct = generate_music(pipe.model, torch.tensor([[BOS_ID]]), seconds=4, weights="float32",
                            controls=MusicControls(key="F# major", dynamics="p", max_polyphony=2, pedal=False),
                            generation_config=music_generation_config(pipe.model),
                            max_note_seconds=None)
    assert piece["token_ids"] == [t for t in direct[0].tolist() if t != PAD_ID]
    v = ids_to_notes(np.array(piece["token_ids"]))["velocity"]
    assert len(v) and set(velocity_bin(v).tolist()) <= set(range(11, 15))  # p: bins of 42..54
    with pytest.raises(ArgumentError, match="dynamics must be one of"):
        pipe(seconds=4, dynamics="loud")
    with pytest.raises(ArgumentError, match="dynamics and velocity_range"):
        pipe(seconds=4, dynamics="p", velocity_range=(10, 50))


def test_cli_names_a_bad_control_before_loading_a_model(tmp_path, capsys):
    from hf_midi import cli

    for flags, message in [(["--key", "H major"], "--key must be a note name"),
                           (["--pitch-range", "90-40"], "--pitch-range low 90 is above high 40"),
                           (["--density", "0"], "--density must be a number > 0"),
                           (["--max-polyphony", "0"], "--max-polyphony must be a whole number >= 1"),
                           (["--dynamics", "p", "--velocity-range", "1-50"], "--dynamics and velocity_range")]:
        # the model folder does not exist: an error about it would mean the control was checked too late
        assert cli.main(["generate", "--model", str(tmp_path / "none"), "-o", str(tmp_path / "x.mid"), *flags]) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and "none" not in err, (flags, err)
        assert not (tmp_path / "x.mid").exists()


def test_cli_steers_a_piece(folder, tmp_path):
    import symusic

    from hf_midi import cli

    out = tmp_path / "p.mid"
    assert cli.main(["generate", "--model", str(folder), "--seconds", "5", "--seed", "1", "--threads", "1",
                     "--pitch-range", "C4-C5", "--no-pedal", "--dynamics", "ff", "--density", "6", "-o", str(out)]) == 0
    score = symusic.Score.from_midi(out.read_bytes())
    notes = [n for t in score.tracks for n in t.notes]
    assert len(notes) > 3 and all(60 <= n.pitch <= 72 and n.velocity >= 105 for n in notes)
    assert not any(c.number == 64 and c.value >= 64 for t in score.tracks for c in t.controls)


def test_a_velocity_range_moves_what_it_masks_to_velocities_not_to_time():
    """Out-of-range velocities' probability goes to the range's nearest end; a NOTE_ON that must wait for a
    velocity gives its probability to the velocities: the chance of an onset soon is kept."""
    from hf_midi.remote_code.controls import VelocityRangeLogitsProcessor

    lo, hi = DYNAMICS["f"]  # bins 23..26 (velocities 90..102)
    state = PerformanceState(start=1)
    proc = VelocityRangeLogitsProcessor(lo, hi, state)
    ids = torch.tensor([[BOS_ID, VELOCITY + 15, 60, TIME_SHIFT + 9]])  # velocity 62 in force: outside
    scores = torch.randn(1, 393)
    before = torch.softmax(scores, -1)[0]
    after = torch.softmax(proc(ids, scores.clone()), -1)[0]
    vel = slice(VELOCITY, SUSTAIN_ON)
    assert after[vel].sum().item() == pytest.approx((before[vel].sum() + before[:NOTE_OFF].sum()).item(), rel=1e-4)
    assert after[:NOTE_OFF].sum().item() == 0
    assert after[TIME_SHIFT:VELOCITY].sum().item() == pytest.approx(before[TIME_SHIFT:VELOCITY].sum().item(), rel=1e-4)
    bins, was = after[vel], before[vel]
    assert bins[:22].sum().item() == 0 and bins[26:].sum().item() == 0
    # what was softer than f lands on f's softest bin, what was louder on its loudest
    assert bins[22].item() >= was[:23].sum().item() - 1e-6 and bins[25].item() >= was[25:].sum().item() - 1e-6
