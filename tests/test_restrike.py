"""RestrikeLogitsProcessor: striking a pitch again within 0.3 s costs more with every re-strike in a row."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import POP909_FIXTURES, save_tiny_model

from hf_midi.evaluation.listener import RESTRIKE_SECONDS
from hf_midi.remote_code import codec
from hf_midi.remote_code.arguments import ArgumentError
from hf_midi.remote_code.codec import BOS_ID, NOTE_OFF, PAD_ID, TIME_SHIFT, VELOCITY, ids_to_notes
from hf_midi.remote_code.generation import generate_music
from hf_midi.remote_code.performance_state import RESTRIKE_STEPS, PerformanceState
from hf_midi.remote_code.processors import RESTRIKE_FREE, RestrikeLogitsProcessor

V = VELOCITY + 19
SHIFT_10 = TIME_SHIFT + 9  # 100 ms


def penalties(prefix: list[int], penalty: float = 1.5) -> torch.Tensor:
    """The nats taken from each NOTE_ON after ``prefix`` (one row)."""
    scores = RestrikeLogitsProcessor(penalty, PerformanceState(start=1))(torch.tensor([prefix]), torch.zeros(1, 393))
    return -scores[0, :NOTE_OFF]


def strikes(pitch: int, times: int, shift: int = SHIFT_10) -> list[int]:
    out = [BOS_ID, V]
    for _ in range(times):
        out += [pitch, shift, NOTE_OFF + pitch]
    return out


def test_the_window_is_the_listener_s():
    assert RESTRIKE_STEPS == codec.seconds_to_steps(RESTRIKE_SECONDS)


def test_each_re_strike_in_a_row_costs_more():
    assert RESTRIKE_FREE == 1
    assert penalties([BOS_ID, V]).abs().sum() == 0  # nothing struck yet
    assert penalties(strikes(60, 1)).abs().sum() == 0  # 60 struck 100 ms ago: the first re-strike is free
    second = penalties(strikes(60, 2))  # struck, struck again: a second re-strike in a row costs
    assert second[60] == pytest.approx(1.5) and second[59] == 0 and second[61] == 0
    assert penalties(strikes(60, 3))[60] == pytest.approx(3.0)
    assert penalties(strikes(60, 5))[60] == pytest.approx(6.0)
    # 0.3 s after its last onset a pitch starts afresh; a later onset begins a new run
    assert penalties([*strikes(60, 5), TIME_SHIFT + 20])[60] == 0  # 100 + 210 ms
    assert penalties([*strikes(60, 5), TIME_SHIFT + 19])[60] == pytest.approx(6.0)  # 300 ms: still a run
    slow = strikes(60, 3, shift=TIME_SHIFT + 39)  # every 400 ms: repeated notes, no run
    assert penalties(slow)[60] == 0 and penalties([*slow, 60, SHIFT_10])[60] == 0  # the run starts afresh
    assert penalties([*slow, 60, SHIFT_10, NOTE_OFF + 60, 60, SHIFT_10])[60] == pytest.approx(1.5)
    # each pitch keeps its own run: a chord struck three times
    chord = [BOS_ID, V, 48, 52, 55, SHIFT_10, NOTE_OFF + 48, NOTE_OFF + 52, NOTE_OFF + 55, 48, 52, SHIFT_10,
             NOTE_OFF + 48, NOTE_OFF + 52, 48, SHIFT_10]
    taken = penalties(chord)
    assert taken[48] == pytest.approx(3.0) and taken[52] == pytest.approx(1.5) and taken[55] == 0


def test_the_state_one_token_at_a_time_is_the_state_rebuilt():
    """The running state (one token appended) and the state rebuilt from all ids agree after every token of a
    real piece, history included (a sliding window's)."""
    ids = [BOS_ID, *codec.encode(POP909_FIXTURES[0]).tolist()[:600]]
    running = PerformanceState(start=1)
    running.track_onsets = running.track_restrikes = True
    for n in range(2, len(ids), 37):
        running.sync(torch.tensor([ids[:n]]))
        rebuilt = PerformanceState(start=1)
        rebuilt.track_onsets = rebuilt.track_restrikes = True
        rebuilt.set_history(torch.tensor([ids[: n // 2]]))
        rebuilt.sync(torch.tensor([ids[n // 2 : n]]))
        assert torch.equal(running.run, rebuilt.run) and torch.equal(running.struck, rebuilt.struck), n
    assert int(running.run.max()) >= 1  # the piece has runs of re-strikes


def test_the_fast_loop_gives_generate_s_tokens_with_it(tmp_path):
    from hf_midi.loading import load_model

    model, _ = load_model(save_tiny_model(tmp_path / "m", seed=3))
    out = {}
    for fast in (True, False):
        torch.manual_seed(5)
        out[fast] = generate_music(model, torch.tensor([[BOS_ID]] * 2), seconds=6.0, fast=fast, weights="float32",
                                   restrike_penalty=1.0)
    assert torch.equal(out[True], out[False])


def runs_of_restrikes(rows: torch.Tensor) -> int:
    """Onsets that are the second re-strike in a row (within 0.3 s each) or later, over all rows."""
    count = 0
    for row in rows.tolist():
        n = ids_to_notes(np.array([t for t in row[1:] if t < PAD_ID]))
        order = np.lexsort((n["start"], n["pitch"]))
        p, s = n["pitch"][order], n["start"][order]
        again = np.r_[False, (p[1:] == p[:-1]) & (s[1:] - s[:-1] <= RESTRIKE_STEPS)]
        count += int((again[1:] & again[:-1]).sum())
    return count


def test_it_takes_the_hammering_out_of_the_small_model():
    """The bundled small model hammers without it (its pieces' onsets re-strike in runs); the same seeds with
    a penalty of 2 nats have a fraction of those runs."""
    from hf_midi.loading import load_model

    model, _ = load_model("small")
    out = {}
    for penalty in (None, 2.0):
        torch.manual_seed(0)
        out[penalty] = generate_music(model, torch.tensor([[BOS_ID]] * 4), seconds=8.0, restrike_penalty=penalty,
                                      max_note_seconds=6.0)
    before, after = runs_of_restrikes(out[None]), runs_of_restrikes(out[2.0])
    assert before >= 20 and after < before / 3, (before, after)


def test_the_setting_reaches_every_face(tmp_path):
    """restrike_penalty from the model's generation config (the pipeline's default), the pipeline's keyword (None:
    off) and `hf-midi generate --restrike-penalty`; a bad value is named. The bundled small model, which hammers
    without it, copied without its own setting and search."""
    import shutil

    from hf_midi import cli
    from hf_midi.loading import default_model_path, load_pipeline

    folder = tmp_path / "small"
    shutil.copytree(default_model_path().parent / "small", folder)
    config = json.loads((folder / "generation_config.json").read_text())
    assert config["restrike_penalty"] == 2.0  # what small ships
    config = {k: v for k, v in config.items() if k != "restrike_penalty"} | {"candidates": 1}
    (folder / "generation_config.json").write_text(json.dumps(config))
    pipe = load_pipeline(folder)
    pieces = {p: pipe(seconds=6.0, seed=4, restrike_penalty=p, threads=1)[0]["token_ids"] for p in (None, 2.0)}
    assert pieces[None] != pieces[2.0]
    assert pipe(seconds=6.0, seed=4, threads=1)[0]["token_ids"] == pieces[None]  # a model that sets none: off
    (folder / "generation_config.json").write_text(json.dumps(config | {"restrike_penalty": 2.0}))
    by_config = load_pipeline(folder)
    assert by_config(seconds=6.0, seed=4, threads=1)[0]["token_ids"] == pieces[2.0]
    assert by_config(seconds=6.0, seed=4, threads=1, restrike_penalty=None)[0]["token_ids"] == pieces[None]
    for bad in (0, -1.0, "much", float("nan")):
        with pytest.raises(ArgumentError, match="restrike_penalty"):
            pipe(seconds=3.0, restrike_penalty=bad)
    for flag, penalty in (("off", None), ("2", 2.0)):  # the CLI over the config's setting
        assert cli.main(["generate", "--model", str(folder), "--seconds", "6", "--seed", "4", "--threads", "1",
                         "--restrike-penalty", flag, "-o", str(tmp_path / f"{flag}.mid")]) == 0
        [piece] = pipe(seconds=6.0, seed=4, restrike_penalty=penalty, threads=1)
        assert (tmp_path / f"{flag}.mid").read_bytes() == piece["midi"]
    with pytest.raises(SystemExit):
        cli.main(["generate", "--model", str(folder), "--restrike-penalty", "lots", "-o", str(tmp_path / "x.mid")])
    assert not (tmp_path / "x.mid").exists()
