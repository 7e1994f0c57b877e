"""Streaming: MusicStreamer decodes as the codec does, pipe.stream() gives the tokens of the call
without streaming, stopping the iteration stops generation, bad requests fail before anything runs."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from conftest import POP909_FIXTURES, ROOT, save_tiny_model
from transformers import pipeline

from hf_midi.remote_code.arguments import GenerationError
from hf_midi.remote_code.codec import BOS_ID, EOS_ID, STEPS_PER_SECOND, encode, ids_to_notes
from hf_midi.remote_code.generation import generate_music, music_generation_config
from hf_midi.remote_code.streaming import MusicChunk, MusicStreamer

PROMPT = POP909_FIXTURES[0]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    # a short context, so that a 6-second piece slides its window
    return save_tiny_model(tmp_path_factory.mktemp("tiny"), n_positions=128, seed=5)


@pytest.fixture(scope="module")
def pipe(model_dir):
    return pipeline("midi-generation", model=str(model_dir))


def notes_of(chunks) -> list[tuple[int, int, int, int]]:
    """(start, end, pitch, velocity) in steps, sorted as the codec sorts them."""
    out = [(round(n.start * STEPS_PER_SECOND), round(n.end * STEPS_PER_SECOND), n.pitch, n.velocity)
           for c in chunks for n in c.notes]
    return sorted(out, key=lambda n: (n[0], n[2]))


def codec_notes(ids) -> list[tuple[int, int, int, int]]:
    d = ids_to_notes(ids)
    return list(zip(*(d[k].tolist() for k in ("start", "end", "pitch", "velocity"))))


def feed(ids, chunk_seconds=0.5, pieces=7) -> list[MusicChunk]:
    """Feed ``ids`` to a streamer as generate() would: the first part as the prompt, the rest in pieces."""
    s = MusicStreamer(chunk_seconds)
    s.put(torch.tensor([ids[:5]]))
    for part in np.array_split(np.asarray(ids[5:]), pieces):
        for i in part:
            s.put(torch.tensor([int(i)]))
    s.end()
    return list(s)


# --------------------------------------------------------------------------- the decoder
def test_streamed_notes_and_pedal_equal_the_codec_on_real_music():
    ids = [BOS_ID, *encode(PROMPT).tolist()[1:-1]]
    chunks = feed(ids)
    assert notes_of(chunks) == codec_notes(ids)
    d = ids_to_notes(ids)
    pedal = [(round(t * STEPS_PER_SECOND), down) for c in chunks for t, down in c.pedal]
    assert pedal == [(int(t), v == 127) for t, v in zip(d["pedal_time"], d["pedal_value"])]
    assert len(pedal) > 2  # the fixture uses the pedal
    # chunks tile the piece: each starts where the last ended, ~0.5 s apart, only the last is done
    assert chunks[0].start == 0 and all(a.end == b.start for a, b in zip(chunks, chunks[1:]))
    assert [c.done for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1].end == d["end_step"] / STEPS_PER_SECOND
    assert all(round((c.end - c.start) * STEPS_PER_SECOND) >= 50 for c in chunks[1:-1])
    # every id but <bos> once, in order; every onset once
    assert [i for c in chunks for i in c.token_ids] == ids[1:]
    assert sorted((round(s * 100), p, v) for c in chunks for s, p, v in c.onsets) == sorted(
        (n[0], n[2], n[3]) for n in codec_notes(ids))


def test_streamed_notes_are_final_when_sent():
    """A note in a chunk ends at or before the chunk's end, and no later event changes it."""
    ids = [BOS_ID, *encode(PROMPT).tolist()[1:-1]]
    chunks = feed(ids, chunk_seconds=0.25)
    for c in chunks[:-1]:
        assert all(n.end <= c.end for n in c.notes)
        assert all(c.start <= s <= c.end for s, _, _ in c.onsets)


def test_edge_cases_follow_the_codec():
    """Re-strikes, NOTE_OFF of a silent pitch, a note ending at its start, pedal twice, <eos>, <pad>."""
    ids = [BOS_ID, 60, 60, 256 + 9, 60 + 128, 60 + 128, 64, 64 + 128, 356 + 3, 62, 388, 388, 256 + 99,
           389, 67, 256 + 4, EOS_ID, 70, 256 + 50]
    chunks = feed(ids, chunk_seconds=0)
    assert notes_of(chunks) == codec_notes(ids)
    assert chunks[-1].end == ids_to_notes(ids)["end_step"] / STEPS_PER_SECOND


def test_a_streamer_follows_one_sequence():
    with pytest.raises(GenerationError, match="one sequence; generate\\(\\) sent 2"):
        MusicStreamer().put(torch.tensor([[BOS_ID], [BOS_ID]]))
    with pytest.raises(GenerationError, match="chunk_seconds must be a number >= 0"):
        MusicStreamer(-1)


# --------------------------------------------------------------------------- generate() and the pipeline
def test_generate_music_streams_every_window_once(pipe):
    """Across sliding windows the streamer sees the prompt once, each new id once, one end()."""
    model = pipe.model
    prompt = torch.tensor([[BOS_ID]])
    config = music_generation_config(model)
    config.suppress_tokens = [EOS_ID]  # a random model would end the piece within a window
    streamer = MusicStreamer(0.25)
    torch.manual_seed(3)
    args = dict(seconds=None, max_new_tokens=200, window=64, keep=32, generation_config=config)
    out = generate_music(model, prompt, streamer=streamer, **args)
    chunks = list(streamer)
    row = [i for i in out[0].tolist() if i != 390]
    assert len(row) > 64  # the window slid
    assert [i for c in chunks for i in c.token_ids] == [i for i in row[1:] if i != EOS_ID]
    assert notes_of(chunks) == codec_notes(row)
    torch.manual_seed(3)
    assert torch.equal(generate_music(model, prompt, **args), out)


@pytest.mark.parametrize("fast", [True, False])
def test_stream_gives_the_tokens_of_the_plain_call(pipe, fast):
    [plain] = pipe(seconds=4, seed=21, fast=fast)
    chunks = list(pipe.stream(seconds=4, seed=21, fast=fast))
    last = chunks[-1]
    assert last.done and last.piece is not None
    assert last.piece["token_ids"] == plain["token_ids"]
    assert last.piece["midi"] == plain["midi"]
    assert [i for c in chunks for i in c.token_ids] == [i for i in plain["token_ids"][1:] if i != EOS_ID]
    assert notes_of(chunks) == codec_notes(plain["token_ids"])
    assert len(chunks) >= 4  # 4 s of music in chunks of 0.5 s


def test_stream_a_prompt_gives_the_prompt_first(pipe):
    [plain] = pipe(PROMPT, prompt_seconds=3, seconds=2, seed=4)
    chunks = list(pipe.stream(PROMPT, prompt_seconds=3, seconds=2, seed=4))
    assert chunks[0].end == pytest.approx(3.0)  # the prompt's music, at once
    assert chunks[-1].piece["token_ids"] == plain["token_ids"]


def test_stopping_the_iteration_stops_generation(pipe):
    before = {t.name for t in threading.enumerate()}
    stream = pipe.stream(seconds=600, seed=1, chunk_seconds=0.1)
    first = next(stream)
    assert isinstance(first, MusicChunk) and not first.done
    t0 = time.perf_counter()
    stream.close()  # what a `break` out of the loop does
    assert time.perf_counter() - t0 < 5  # stopped at the next token, not after 600 s of music
    assert not [t for t in threading.enumerate() if t.name == "hf-midi-stream" and t.name not in before]


def test_a_stop_event_ends_the_streamed_piece(pipe):
    stop = threading.Event()
    chunks = []
    for chunk in pipe.stream(seconds=600, seed=1, chunk_seconds=0.1, stop_event=stop):
        chunks.append(chunk)
        if len(chunks) == 3:
            stop.set()
    assert chunks[-1].done and chunks[-1].piece["seconds"] < 60
    assert [i for c in chunks for i in c.token_ids] == [i for i in chunks[-1].piece["token_ids"][1:] if i != EOS_ID]


def test_bad_stream_requests_fail_before_anything_runs(pipe):
    with pytest.raises(GenerationError, match="num_return_sequences=3 asks for several"):
        pipe.stream(seconds=2, num_return_sequences=3)
    with pytest.raises(GenerationError, match="give one prompt, not a list of 2"):
        pipe.stream([PROMPT, PROMPT], seconds=2)
    with pytest.raises(GenerationError, match="temperature must be a number > 0"):
        pipe.stream(seconds=2, temperature=-1)
    with pytest.raises(GenerationError, match="chunk_seconds"):
        pipe.stream(seconds=2, chunk_seconds="soon")
    with pytest.raises(Exception, match="not a MIDI file"):
        pipe.stream(ROOT / "tests" / "fixtures" / "edge" / "test-not-a-midi-file.mid", seconds=2)
    with pytest.raises(GenerationError, match="a streamer follows one piece"):
        pipe(seconds=2, num_return_sequences=2, streamer=MusicStreamer())
    with pytest.raises(GenerationError, match="streamer must have put\\(\\) and end\\(\\)"):
        pipe(seconds=2, streamer=object())


def test_an_error_during_generation_reaches_the_consumer(pipe):
    def progress(done, total):
        if done > 1.0:
            raise RuntimeError("the progress callback failed at 1 s")

    chunks = []
    with pytest.raises(RuntimeError, match="failed at 1 s"):
        for chunk in pipe.stream(seconds=30, seed=0, progress=progress, chunk_seconds=0.1):
            chunks.append(chunk)
    assert chunks and not chunks[-1].done  # what was made before it came
    assert not [t for t in threading.enumerate() if t.name == "hf-midi-stream"]


def test_plain_pipeline_streams_into_a_streamer_too(model_dir):
    p = pipeline("midi-generation", model=str(model_dir))
    streamer = MusicStreamer()
    [piece] = p(seconds=2, seed=9, streamer=streamer)
    chunks = list(streamer)
    assert chunks[-1].done and notes_of(chunks) == codec_notes(piece["token_ids"])


def test_save_tiny_model_is_deterministic(tmp_path):  # the fixtures above rely on it
    a = save_tiny_model(tmp_path / "a", n_positions=128, seed=5)
    b = save_tiny_model(tmp_path / "b", n_positions=128, seed=5)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()


# --------------------------------------------------------------------------- a draft model
def test_a_draft_model_drafts_with_the_music_processors(pipe, tmp_path):
    """Assisted generation through the pipeline: the target's checks hold (grammar, time limit), the
    draft is called, and streaming follows it."""
    from test_generation import invalid_tokens

    draft_dir = save_tiny_model(tmp_path / "draft", n_positions=128, seed=8)
    draft = pipeline("midi-generation", model=str(draft_dir)).model
    calls = []
    hook = draft.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        chunks = list(pipe.stream(seconds=3, seed=2, assistant_model=draft))
    finally:
        hook.remove()
    piece = chunks[-1].piece
    assert calls  # the draft drafted
    assert piece["seconds"] <= 3.0 + 1e-6 and not invalid_tokens(piece["token_ids"])
    assert notes_of(chunks) == codec_notes(piece["token_ids"])


def test_bad_draft_models_are_refused_before_anything_runs(pipe, tmp_path):
    def load(name, **kw):
        return pipeline("midi-generation", model=str(save_tiny_model(tmp_path / name, **kw))).model

    wide, short = load("w", n_positions=128, vocab_size=400), load("s", n_positions=64)
    with pytest.raises(GenerationError, match="vocabulary of 400 ids, the model's has 393"):
        pipe(seconds=2, assistant_model=wide)
    with pytest.raises(GenerationError, match="context of 64 positions, shorter than the 128"):
        pipe(seconds=2, assistant_model=short)
    with pytest.raises(GenerationError, match="drafts for one sequence; 2 were asked for"):
        pipe(seconds=2, assistant_model=pipe.model, num_return_sequences=2)
    with pytest.raises(GenerationError, match="weights='int8' needs the fast loop, which does not draft"):
        pipe(seconds=2, assistant_model=pipe.model, weights="int8")
