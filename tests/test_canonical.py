"""CanonicalOrderLogitsProcessor: only what the encoder could have written, and every encoded piece passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import POP909_FIXTURES, requires_shared_data, save_tiny_model, split_files

from hf_midi.evaluation.music_stats import order_faults
from hf_midi.remote_code import codec
from hf_midi.remote_code.codec import BOS_ID, EOS_ID, NOTE_OFF, PAD_ID, SUSTAIN_OFF, SUSTAIN_ON, TIME_SHIFT, VELOCITY
from hf_midi.remote_code.controls import MusicControls
from hf_midi.remote_code.generation import generate_music, music_processors
from hf_midi.remote_code.performance_state import PerformanceState
from hf_midi.remote_code.processors import CanonicalOrderLogitsProcessor, PerformanceGrammarLogitsProcessor


def allowed(prefix: list[int], keys=(21, 108)) -> torch.Tensor:
    """What the grammar and the canonical order allow after ``prefix`` (one row), as a bool mask."""
    ids = torch.tensor([prefix])
    state = PerformanceState(start=1)
    scores = PerformanceGrammarLogitsProcessor(state)(ids, torch.zeros(1, 393))
    return torch.isfinite(CanonicalOrderLogitsProcessor(state, keys=keys)(ids, scores))[0]


V = VELOCITY + 19  # a velocity bin


def test_one_order_within_a_step():
    # NOTE_ON 57, NOTE_ON 53 in one instant: the onsets ascend
    assert not allowed([BOS_ID, V, 57])[53] and allowed([BOS_ID, V, 57])[60]
    # a blip: a NOTE_OFF of a note struck in the same step, or any NOTE_OFF after the onsets began
    after_on = allowed([BOS_ID, V, 57, TIME_SHIFT + 4, 60])
    assert not after_on[NOTE_OFF + 60] and not after_on[NOTE_OFF + 57]
    # after a time shift the step starts again: NOTE_OFFs first, ascending, then the pedal, then onsets
    step = [BOS_ID, V, 50, 57, 64, TIME_SHIFT + 9]
    assert allowed(step)[NOTE_OFF + 50] and allowed(step)[SUSTAIN_ON] and allowed(step)[NOTE_OFF + 64]
    assert not allowed([*step, NOTE_OFF + 57])[NOTE_OFF + 50] and allowed([*step, NOTE_OFF + 57])[NOTE_OFF + 64]
    assert not allowed([*step, SUSTAIN_ON])[NOTE_OFF + 64]  # the pedal comes after the step's NOTE_OFFs
    assert allowed([*step, SUSTAIN_ON])[60]
    # one pedal change a step: touching intervals merge, empty ones vanish
    down = [BOS_ID, SUSTAIN_ON, V, 60, TIME_SHIFT + 9]
    assert allowed(down)[SUSTAIN_OFF] and not allowed([*down, SUSTAIN_OFF])[SUSTAIN_ON]


def test_velocities_keys_shifts_and_the_end():
    assert not allowed([BOS_ID])[60] and allowed([BOS_ID])[V]  # the first onset comes after a velocity
    assert not allowed([BOS_ID, V, 60, TIME_SHIFT + 9])[V]  # the same velocity is not written again
    after_v = allowed([BOS_ID, V, 60, TIME_SHIFT + 9, V + 1])  # a velocity is followed by its onset
    assert after_v[:NOTE_OFF].any() and not after_v[NOTE_OFF:VELOCITY].any() and not after_v[EOS_ID]
    assert not after_v[SUSTAIN_ON]
    assert not allowed([BOS_ID, V, 60])[60 + 1 - 1]  # a sounding key is not struck again in its step
    assert not allowed([BOS_ID, V, 60, TIME_SHIFT + 9])[60]  # nor later: the encoder ends it first
    assert allowed([BOS_ID, V, 60, TIME_SHIFT + 9, NOTE_OFF + 60])[60]  # ended, then struck: a re-strike
    piano = allowed([BOS_ID, V])
    assert not piano[20] and piano[21] and piano[108] and not piano[109]
    assert allowed([BOS_ID, V], keys=None)[120] and allowed([BOS_ID, V], keys=(0, 127))[5]
    short = [BOS_ID, V, 60, TIME_SHIFT + 40]  # a gap's remainder is its last shift
    assert not allowed(short)[TIME_SHIFT:VELOCITY].any() and not allowed(short)[EOS_ID]
    assert allowed([BOS_ID, V, 60, TIME_SHIFT + 99])[TIME_SHIFT + 5]  # after a whole second, more time
    assert allowed([BOS_ID, V, 60, TIME_SHIFT + 9, NOTE_OFF + 60])[EOS_ID]


def test_it_yields_where_the_processors_before_it_corner_a_row():
    ids = torch.tensor([[BOS_ID, V, 60, TIME_SHIFT + 9, V + 1]])
    state = PerformanceState(start=1)
    scores = torch.full((1, 393), -float("inf"))
    scores[0, TIME_SHIFT + 3] = 0.0  # another processor left only a time shift, which the order forbids
    out = CanonicalOrderLogitsProcessor(state)(ids, scores)
    assert torch.isfinite(out[0, TIME_SHIFT + 3]) and torch.isfinite(out).sum() == 1


def run_pieces(rows: list[np.ndarray], trust_appends: bool = False) -> list[tuple[int, int, int]]:
    """Step the grammar and the canonical order through every token of each row, batched; returns
    (row, position, token) of each token they would have forbidden. ``trust_appends``: the state
    advances one token a step without comparing the prefix (the path generate() takes), for long rows."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.from_numpy(np.asarray(r, dtype=np.int64))
    state = PerformanceState(start=1)
    grammar, canonical = PerformanceGrammarLogitsProcessor(state), CanonicalOrderLogitsProcessor(state)
    lengths = torch.tensor([len(r) for r in rows])
    bad = []
    for t in range(1, length):
        prefix = ids[:, :t]
        if trust_appends and t > 1:
            state._length, state._seen = t, prefix
            state._advance(prefix[:, -1], counted=True)
        scores = canonical(prefix, grammar(prefix, torch.zeros(len(rows), 393)))
        live = lengths > t
        refused = live & torch.isneginf(scores.gather(1, ids[:, t:t + 1])[:, 0])
        bad += [(int(i), t, int(ids[i, t])) for i in torch.nonzero(refused)[:, 0]]
    return bad


def encoded(paths) -> list[np.ndarray]:
    return [np.concatenate(([BOS_ID], codec.encode(p), [EOS_ID])) for p in paths]


def test_every_token_of_the_fixture_pieces_is_allowed():
    rows = encoded(POP909_FIXTURES)
    assert all(order_faults(r[1:-1].tolist()) == [] for r in rows)  # the oracle agrees: encoded is canonical
    assert run_pieces(rows) == []
    # and the trusting path (the one generate() takes) agrees on the first of them
    assert run_pieces(rows[:2], trust_appends=True) == []


def test_a_blip_is_what_the_plain_grammar_allows_and_the_order_does_not():
    blip = [BOS_ID, V, 57, 53, NOTE_OFF + 53]  # NOTE_ON 57, NOTE_ON 53, NOTE_OFF 53: one instant
    assert run_pieces([np.array(blip)]) == [(0, 3, 53), (0, 4, NOTE_OFF + 53)]
    assert order_faults(blip[1:]) == [2, 3]


@pytest.mark.parametrize("controls", [{}, dict(key="D minor", pitch_range=(40, 90), dynamics="mf", density=8,
                                                max_polyphony=3, pedal=False), dict(pitch_range=(0, 30))])
def test_random_walks_with_the_order_are_never_cornered_and_mostly_canonical(controls):
    """Random logits through every processor with the order last: a legal event every step; where no
    guard or control forced it otherwise, what is sampled decodes and encodes back to itself."""
    gen = torch.Generator().manual_seed(1)
    c = MusicControls(**controls)
    state = PerformanceState(start=1)
    processors, _ = music_processors(state, seconds=30.0, max_note_seconds=2.0, max_silence_seconds=1.0,
                                     controls=c, canonical_order=True)
    assert isinstance(processors[-1], CanonicalOrderLogitsProcessor)
    if c.pitch_range == (0, 30):
        assert processors[-1].keys == (0, 108)  # widened to the asked register
    ids = torch.tensor([[BOS_ID]] * 8)
    for _ in range(400):
        scores = torch.randn(ids.shape[0], 393, generator=gen) * 3
        for p in processors:
            scores = p(ids, scores)
        assert torch.isfinite(scores).any(1).all()
        ids = torch.cat([ids, torch.multinomial(torch.softmax(scores, -1), 1, generator=gen)], 1)
    faults = tokens = 0
    for row in ids[:, 1:].tolist():
        events = row[:row.index(EOS_ID)] if EOS_ID in row else row
        faults += len(order_faults(events, keys=processors[-1].keys))
        tokens += len(events)
    # random logits: where a guard or a control forced a token, the order yields (rarely)
    assert faults <= tokens // 100, (faults, tokens)


def test_the_fast_loop_gives_generate_s_tokens_with_the_order(tmp_path):
    from hf_midi.loading import load_model

    model, _ = load_model(save_tiny_model(tmp_path / "m", seed=3))
    out = {}
    for fast in (True, False):
        torch.manual_seed(5)
        out[fast] = generate_music(model, torch.tensor([[BOS_ID]] * 2), seconds=4.0, fast=fast, weights="float32",
                                   canonical_order=True)
    assert torch.equal(out[True], out[False])
    for row in out[True].tolist():
        assert order_faults([t for t in row[1:] if t < PAD_ID]) == []


@pytest.mark.data
@pytest.mark.slow
@requires_shared_data
def test_every_token_of_every_test_split_piece_is_allowed(shared_data):
    """POP909, GiantMIDI and ASAP test splits, encoded: the order never forbids a token of any of them."""
    for name, csv_name in (("pop909", "split.csv"), ("asap", "split_by_piece.csv"), ("giantmidi", "split.csv")):
        paths = split_files(shared_data / name, csv_name)
        assert paths, name
        rows = []
        for p in paths:
            try:
                rows.append(np.concatenate(([BOS_ID], codec.encode(p), [EOS_ID])))
            except codec.MidiReadError:
                continue  # an unreadable file is not an encoded piece
        rows.sort(key=len)
        for start in range(0, len(rows), 64):  # batches of similar length
            bad = run_pieces(rows[start:start + 64], trust_appends=True)
            assert bad == [], (name, bad[:5])


def test_the_setting_reaches_every_face(tmp_path):
    """canonical_order from the model's generation config (the pipeline's default), the pipeline's keyword
    and `hf-midi generate --canonical-order`: the pieces keep the order; off, a random model's do not."""
    import json

    from hf_midi import cli
    from hf_midi.loading import load_pipeline

    folder = save_tiny_model(tmp_path / "m", seed=2)
    pipe = load_pipeline(folder)
    pieces = {flag: pipe(seconds=3.0, seed=4, canonical_order=flag, threads=1)[0] for flag in (False, True)}
    assert order_faults(pieces[True]["token_ids"][1:-1]) == []
    assert order_faults(pieces[False]["token_ids"][1:-1]) != []  # a random model leaves the order at once
    config = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**config, "canonical_order": True}))
    [by_config] = load_pipeline(folder)(seconds=3.0, seed=4, threads=1)
    assert by_config["token_ids"] == pieces[True]["token_ids"]
    assert cli.main(["generate", "--model", str(folder), "--seconds", "3", "--seed", "4", "--threads", "1",
                     "--no-canonical-order", "-o", str(tmp_path / "off.mid")]) == 0
    assert (tmp_path / "off.mid").read_bytes() == pieces[False]["midi"]
