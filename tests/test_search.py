"""Search while composing (hf_midi.remote_code.search) and its critic (hf_midi.remote_code.critic): the fast loop's
kept cache gives the logits a fresh call gives, the critic's roll is the music, its files load or fail clearly,
the search keeps what the critic prefers, streams what it keeps, and bad arguments are refused before composing."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from conftest import FIXTURES, save_tiny_model, tiny_model

from hf_midi.loading import bundled_critic_path, load_pipeline
from hf_midi.remote_code import codec
from hf_midi.remote_code.arguments import GenerationError
from hf_midi.remote_code.codec import BOS_ID, NOTE_OFF, PAD_ID, SUSTAIN_OFF, SUSTAIN_ON, TIME_SHIFT, VELOCITY
from hf_midi.remote_code.critic import (
    CHANNELS,
    CRITIC_CONFIG,
    CRITIC_WEIGHTS,
    CriticError,
    MusicCritic,
    roll_from_notes,
)
from hf_midi.remote_code.fast_generation import FastGPT2
from hf_midi.remote_code.generation import generate_music, music_generation_config
from hf_midi.remote_code.search import check_candidates
from hf_midi.remote_code.streaming import MusicStreamer


def shift(steps: int) -> int:
    return TIME_SHIFT - 1 + steps


class OnsetCounter(MusicCritic):
    """A critic that prefers more onsets in what it scores: the search's choice is then visible in the notes."""

    def score_ids(self, pieces, seconds=None, tail=None):
        return np.array([float((np.asarray(p) < NOTE_OFF).sum()) for p in pieces])


@pytest.fixture(scope="module")
def critic():
    torch.manual_seed(0)
    return MusicCritic().eval()


# --------------------------------------------------------------------------- the kept cache
def test_resumed_cache_gives_the_logits_of_a_fresh_call():
    model = tiny_model(n_positions=128)
    decoder = FastGPT2(model, "float32")
    torch.manual_seed(1)
    prefix = torch.randint(0, 300, (1, 20))
    with torch.no_grad():
        decoder.start(3, 128)
        decoder.step(prefix.expand(3, -1))
        branches = torch.randint(0, 300, (3, 5))
        for t in range(5):  # three rows part ways after the shared prefix
            decoder.step(branches[:, t : t + 1])
        decoder.remember(torch.cat([prefix.expand(3, -1), branches], 1))
        # the next call: four copies of row 2 and two more ids, several at once after the kept prefix
        rows = torch.cat([prefix, branches[2:3], torch.tensor([[60, 300]])], 1).expand(4, -1)
        kept = decoder.resume(rows, 128)
        assert kept == 25  # all but the last id of what was cached for row 2 ... and row 2's own last id
        resumed = decoder.step(rows[:, kept:])
        fresh = FastGPT2(model, "float32")
        fresh.start(4, 128)
        expected = fresh.step(rows)
    assert resumed.shape == (4, model.config.vocab_size)
    torch.testing.assert_close(resumed, expected, atol=1e-4, rtol=1e-4)


def test_a_shared_prompt_runs_once_and_samples_as_a_fresh_call():
    """A search's first chunk: K copies of one prompt. The prompt runs for one row, its cache copied to the
    others; the logits each row then sees are a fresh call's, and the cache is kept for the next chunk."""
    from hf_midi.remote_code.fast_generation import _start

    model = tiny_model(n_positions=128)
    torch.manual_seed(2)
    rows = torch.randint(0, 300, (1, 30)).expand(4, -1)
    with torch.no_grad():
        shared = FastGPT2(model, "float32")
        kept = _start(shared, rows, 128, reuse_cache=False, share_prompt=True)
        assert kept == 29 and shared.kv.shape[2] == 4 and shared.capacity == 128
        got = shared.step(rows[:, kept:])
        fresh = FastGPT2(model, "float32")
        _start(fresh, rows, 128, reuse_cache=False)
        expected = fresh.step(rows)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
        different = torch.randint(0, 300, (2, 30))  # rows that differ: an ordinary start
        assert _start(FastGPT2(model, "float32"), different, 128, reuse_cache=False, share_prompt=True) == 0


def test_a_cache_with_nothing_in_common_starts_fresh():
    model = tiny_model(n_positions=64)
    decoder = FastGPT2(model, "float32")
    with torch.no_grad():
        decoder.start(2, 64)
        decoder.step(torch.tensor([[1, 2, 3], [1, 2, 4]]))
        decoder.remember(torch.tensor([[1, 2, 3], [1, 2, 4]]))
        assert decoder.shared == 2
        assert decoder.resume(torch.tensor([[5, 6, 7]]), 64) == 0
        assert decoder.length == 0


# --------------------------------------------------------------------------- the critic
def test_roll_shows_onsets_keys_down_and_the_pedal():
    ids = np.array([SUSTAIN_ON, VELOCITY + 31, 60, shift(20), 60 + NOTE_OFF, 64, shift(10), SUSTAIN_OFF,
                    shift(10), 64 + NOTE_OFF])
    notes = codec.ids_to_notes(ids)
    roll = roll_from_notes(notes, 0, 40)
    assert roll.shape == (CHANNELS, 8)  # 40 steps of 10 ms in 50-ms frames
    key60, key64 = 60 - 21, 64 - 21
    assert roll[key60, 0] == pytest.approx(notes["velocity"][0] / 127) and roll[key60, 1:].sum() == 0
    assert roll[key64, 4] > 0  # struck at step 20
    assert list(roll[88 + key60]) == [1, 1, 1, 1, 0, 0, 0, 0]  # down 0-20
    assert list(roll[88 + key64]) == [0, 0, 0, 0, 1, 1, 1, 1]  # down 20-40
    assert list(roll[176]) == [1, 1, 1, 1, 1, 1, 0, 0]  # pedal up at step 30
    late = roll_from_notes(notes, 20, 40)  # a stretch starting mid-piece: the pedal already down
    assert late[176, 0] == 1 and late[key64, 0] > 0 and late[key60].sum() == 0


def test_critic_saves_loads_and_scores_the_same(tmp_path, critic):
    ids = codec.encode(FIXTURES / "pop909" / sorted(p.name for p in (FIXTURES / "pop909").glob("*.mid"))[0])
    before = critic.score_ids([ids, ids[:200]], seconds=10)
    critic.save_pretrained(tmp_path / "c", training={"note": "test"})
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [CRITIC_CONFIG, CRITIC_WEIGHTS]
    again = MusicCritic.from_pretrained(tmp_path / "c")
    np.testing.assert_allclose(again.score_ids([ids, ids[:200]], seconds=10), before, rtol=1e-5)
    assert json.loads((tmp_path / "c" / CRITIC_CONFIG).read_text())["training"] == {"note": "test"}


def test_critic_files_that_cannot_be_used_are_named(tmp_path, critic):
    with pytest.raises(CriticError, match=r"critic.json is missing"):
        MusicCritic.from_pretrained(tmp_path / "nowhere")
    folder = critic.save_pretrained(tmp_path / "c")
    config = json.loads((folder / CRITIC_CONFIG).read_text())
    (folder / CRITIC_CONFIG).write_text(json.dumps(config | {"vocab_size": 512}))
    with pytest.raises(CriticError, match=r"critic.json: made for another vocabulary \(vocab_size 512"):
        MusicCritic.from_pretrained(folder)
    (folder / CRITIC_CONFIG).write_text(json.dumps(config | {"width": 32}))
    with pytest.raises(CriticError, match=r"critic.safetensors: weights do not fit"):
        MusicCritic.from_pretrained(folder)
    (folder / CRITIC_CONFIG).write_text(json.dumps(config))
    (folder / CRITIC_WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(CriticError, match=r"critic.safetensors"):
        MusicCritic.from_pretrained(folder)


# --------------------------------------------------------------------------- the search
@pytest.mark.parametrize("bad", [0, -2, 2.5, "4", True, None, 65])
def test_candidates_must_be_a_positive_integer(bad):
    with pytest.raises(GenerationError, match="candidates must be"):
        check_candidates(bad)


def test_search_keeps_what_the_critic_prefers():
    model = tiny_model(n_positions=256)
    config = music_generation_config(model)
    config.suppress_tokens = [PAD_ID, BOS_ID, codec.EOS_ID]
    ids = torch.tensor([[BOS_ID]])
    onsets = {1: 0, 8: 0}
    for seed in range(3):  # summed over three seeds: one seed's best of 8 may tie with its K = 1
        for k in (1, 8):
            torch.manual_seed(seed)
            report = []
            out = generate_music(model, ids, seconds=4.0, generation_config=config, candidates=k,
                                 critic=OnsetCounter() if k > 1 else None, search_report=report)
            row = out[0][out[0] != PAD_ID]
            assert codec.shift_steps(row.numpy()).sum() == 400  # exactly the asked 4 s
            onsets[k] += int((row < NOTE_OFF).sum())
            if k > 1:
                assert [r["seconds"] for r in report] == [1.0, 2.0, 1.0]  # a short first chunk, then 2 s
                for r in report:
                    assert len(r["scores"]) == 8 and r["kept"] == int(np.argmax(r["scores"]))
    assert onsets[8] > 1.5 * onsets[1], onsets


def test_search_streams_what_it_keeps_and_is_reproducible(critic):
    model = tiny_model(n_positions=256)
    config = music_generation_config(model)
    config.suppress_tokens = [PAD_ID, BOS_ID, codec.EOS_ID]
    prompt = torch.tensor([[BOS_ID, 60, shift(30), 64, shift(30)]])
    runs = []
    for streaming in (False, True):
        torch.manual_seed(5)
        streamer = MusicStreamer(chunk_seconds=0.5) if streaming else None
        runs.append(generate_music(model, prompt, seconds=5.0, generation_config=config, candidates=3,
                                   critic=critic, select="sample", streamer=streamer))
    assert torch.equal(runs[0], runs[1])
    assert torch.equal(runs[0][0, :5], prompt[0])  # the prompt kept as given
    chunks = list(streamer)
    streamed = [i for c in chunks for i in c.token_ids]
    new = runs[0][0, 5:]
    assert streamed == prompt[0, 1:].tolist() + new[new != PAD_ID].tolist()
    assert chunks[-1].done and chunks[-1].end == pytest.approx(0.6 + 5.0)


def test_search_arguments_are_checked_before_composing(critic):
    model = tiny_model(n_positions=128)
    ids = torch.tensor([[BOS_ID]])
    for kwargs, message in (({"candidates": 0}, "candidates must be"),
                            ({"candidates": 2}, "needs a critic"),
                            ({"candidates": 2, "critic": critic, "select": "worst"}, "select must be one of"),
                            ({"candidates": 2, "critic": critic, "seconds": None, "max_new_tokens": 20},
                             "composes to a length")):
        with pytest.raises(GenerationError, match=message):
            generate_music(model, ids, **({"seconds": 2.0} | kwargs))


# --------------------------------------------------------------------------- the pipeline
def test_pipeline_searches_with_a_prompt_and_controls(tmp_path, critic):
    folder = save_tiny_model(tmp_path / "m", plays_on=True)
    critic.save_pretrained(folder)  # the model's own critic, beside its weights
    pipe = load_pipeline(folder)
    report = []
    prompt = FIXTURES / "pop909" / sorted(p.name for p in (FIXTURES / "pop909").glob("*.mid"))[0]
    [piece] = pipe(str(prompt), prompt_seconds=3, seconds=4, seed=0, candidates=4, key="C major", key_strength=None,
                   pitch_range=(48, 72), search_report=report, return_prompt=False, threads=1)
    assert [r["seconds"] for r in report] == [1.0, 2.0, 1.0] and all(len(r["scores"]) == 4 for r in report)
    pitches = [n.pitch for n in piece["score"].tracks[0].notes]
    assert pitches and all(48 <= p <= 72 and p % 12 in (0, 2, 4, 5, 7, 9, 11) for p in pitches)
    assert piece["seconds"] == pytest.approx(4.0, abs=0.01)


def test_pipeline_refuses_bad_search_arguments_before_composing(tmp_path):
    folder = save_tiny_model(tmp_path / "m", plays_on=True)
    pipe = load_pipeline(folder)
    calls = []
    for kwargs, message in (({"candidates": 0}, "candidates must be"), ({"candidates": "8"}, "candidates must be"),
                            ({"critic": tmp_path / "none"}, r"none: critic.json is missing"),
                            ({"select": "max"}, "select must be one of"),
                            ({"logprob_share": -1}, "logprob_share must be")):
        with pytest.raises(codec.HfMidiError, match=message):
            pipe(seconds=2, progress=lambda *a: calls.append(a), **kwargs)
    assert calls == []  # nothing composed


def test_a_model_without_a_critic_composes_alone_and_says_so_once(tmp_path, caplog, monkeypatch):
    from hf_midi.remote_code import pipeline_midi_generation as pmg

    folder = save_tiny_model(tmp_path / "m", plays_on=True)
    settings = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps(settings | {"candidates": 4}))
    monkeypatch.setitem(pmg._BUNDLED, "critic", None)  # as on a machine with the folder only
    pipe = load_pipeline(folder)
    with caplog.at_level(logging.WARNING, logger=pmg.__name__):
        for seed in (0, 1):
            report = []
            [piece] = pipe(seconds=2, seed=seed, search_report=report)
            assert report == [] and piece["seconds"] == pytest.approx(2.0, abs=0.01)
    said = [r for r in caplog.records if "no critic" in r.getMessage()]
    assert len(said) == 1 and "candidates=1" in said[0].getMessage()
    # with the bundled critic at hand, the same folder searches with it
    if bundled_critic_path() is not None:
        monkeypatch.setitem(pmg._BUNDLED, "critic", str(bundled_critic_path()))
        report = []
        pipe(seconds=2, seed=0, search_report=report)
        assert report and len(report[0]["scores"]) == 4


# --------------------------------------------------------------------------- training the critic
def test_the_critic_command_trains_reports_and_reuses_its_samples(tmp_path, shared_data, capsys):
    from hf_midi import cli

    model = save_tiny_model(tmp_path / "m", plays_on=True)
    out, cache = tmp_path / "critic", tmp_path / "cache"
    args = ["critic", str(shared_data), str(out), "--models", str(model), "--pieces", "12", "--held-out", "10",
            "--real", "20", "--steps", "30", "--sample-seconds", "6", "--cache", str(cache)]
    assert cli.main(args) == 0
    critic = MusicCritic.from_pretrained(out)
    held = critic.training_report["held_out"]["m"]
    assert held["generated_pieces"] == 10 and held["real_pieces"] > 10 and 0 <= held["accuracy"] <= 1
    assert sorted(p.name for p in cache.iterdir()) == ["m-test-10-6s.npz", "m-train-12-6s.npz"]
    stamps = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert cli.main(args) == 0  # the samples are reused, not composed again
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == stamps
    capsys.readouterr()
    assert cli.main(["critic", str(tmp_path / "nodata"), str(tmp_path / "c2"), "--models", str(model)]) == 1
    assert "nodata/giantmidi/split.csv: missing" in capsys.readouterr().err
    assert not (tmp_path / "c2").exists()


def test_pipeline_stream_plays_the_searched_piece(tmp_path, critic):
    folder = save_tiny_model(tmp_path / "m", plays_on=True)
    critic.save_pretrained(folder)
    pipe = load_pipeline(folder)
    [whole] = pipe(seconds=5, seed=4, candidates=3, threads=1)
    chunks = list(pipe.stream(seconds=5, seed=4, candidates=3, threads=1))
    assert chunks[-1].done and chunks[-1].piece["token_ids"] == whole["token_ids"]
    assert [i for c in chunks for i in c.token_ids] == [t for t in whole["token_ids"] if t < PAD_ID]
    assert len(chunks) >= 5  # half-second chunks as music time passes, not one burst a search chunk (3)


# --------------------------------------------------------------------------- the bundled critic
@pytest.mark.skipif(bundled_critic_path() is None, reason="no bundled critic installed")
def test_the_bundled_critic_prefers_real_playing_to_the_models_own(shared_data):
    """Real 12-s stretches of held-out POP909 and GiantMIDI pieces against small's own 12-s pieces (no search)."""
    from hf_midi.evaluation.critic_training import NoteBank, real_pieces

    critic = MusicCritic.from_pretrained(bundled_critic_path())
    assert set(critic.training_report["held_out"]) == {"base", "small"}
    real = real_pieces(shared_data, "test", limit=12, seed=1)
    rng = np.random.default_rng(0)
    real_scores = critic.score_rolls(NoteBank(real).draw(len(real), rng, seconds=(12.0, 12.0), each=True))
    pipe = load_pipeline("small")
    pieces = pipe(seconds=12, seed=123, num_return_sequences=8, candidates=1, threads=1, return_prompt=False)
    fake_scores = critic.score_ids([p["token_ids"] for p in pieces], seconds=12.0)
    assert np.median(real_scores) > np.median(fake_scores)
    assert (real_scores > 0).mean() >= 0.75 and (fake_scores <= 0).mean() >= 0.6


def test_chunk_logprob_sums_the_models_own_log_probability():
    from hf_midi.remote_code.generation import music_processors
    from hf_midi.remote_code.search import ChunkLogProb

    model = tiny_model(n_positions=128)
    processors, criteria = music_processors(seconds=2.0)
    logprob = ChunkLogProb()
    processors.insert(0, logprob)
    criteria.append(logprob.criterion)
    torch.manual_seed(0)
    ids = torch.tensor([[BOS_ID, 60, shift(20)]]).repeat(2, 1)
    out = model.generate(ids, do_sample=True, max_new_tokens=40, logits_processor=processors,
                         stopping_criteria=criteria, pad_token_id=PAD_ID)
    with torch.no_grad():
        scores = torch.log_softmax(model(out).logits.float(), -1)
    for r in range(2):
        new = out[r, 3:]
        steps = torch.arange(len(new))[new != PAD_ID]
        expected = scores[r, 2 + steps, new[steps]].sum()
        assert logprob.total[r] == pytest.approx(float(expected), abs=1e-3)
        assert logprob.count[r] == len(steps)


def test_a_search_with_a_logprob_share_survives_rows_ending_in_a_sliding_window(critic):
    model = tiny_model(n_positions=64)
    config = music_generation_config(model)
    torch.manual_seed(2)
    report = []
    out = generate_music(model, torch.tensor([[BOS_ID]]), seconds=6.0, generation_config=config, candidates=3,
                         critic=critic, logprob_share=1.0, allow_early_end=True, search_report=report)
    assert out.shape[0] == 1 and report and all(len(r["scores"]) == 3 for r in report)
