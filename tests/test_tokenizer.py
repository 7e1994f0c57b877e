"""MidiTokenizer: the vocabulary, saving and loading (sustain included), MIDI and text inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import POP909_FIXTURES
from transformers import AutoTokenizer

import hf_midi  # noqa: F401  (registers MidiTokenizer with AutoTokenizer)
from hf_midi import MidiTokenizer
from hf_midi.remote_code import codec
from hf_midi.remote_code.codec import BOS_ID, EOS_ID, PAD_ID, SUSTAIN_MODES

A, B = POP909_FIXTURES[1], POP909_FIXTURES[0]  # 098 (short) and 001


def test_vocabulary_and_special_tokens():
    tok = MidiTokenizer()
    assert tok.vocab_size == len(tok) == 393
    assert tok.get_vocab() == {n: i for i, n in enumerate(codec.token_names())}
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (PAD_ID, BOS_ID, EOS_ID)
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<pad>", "<bos>", "<eos>")
    assert tok.convert_ids_to_tokens([0, 127, 128, 256, 355, 356, 388, 389]) == [
        "NOTE_ON_0", "NOTE_ON_127", "NOTE_OFF_0", "TIME_SHIFT_10", "TIME_SHIFT_1000", "VELOCITY_1",
        "SUSTAIN_ON", "SUSTAIN_OFF"]
    assert tok.convert_tokens_to_ids("VELOCITY_32") == 387
    assert tok.model_max_length == 2048 and tok.sustain == "events"
    with pytest.raises(ValueError, match="sustain must be one of"):
        MidiTokenizer(sustain="pedal")


@pytest.mark.parametrize("sustain", SUSTAIN_MODES)
def test_sustain_is_saved_and_reloaded(sustain, tmp_path):
    tok = MidiTokenizer(sustain=sustain, model_max_length=1024)
    tok.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["sustain"] == sustain and config["tokenizer_class"] == "MidiTokenizer"
    expected = [BOS_ID, *codec.encode(A, sustain=sustain).tolist(), EOS_ID]
    for loaded in (MidiTokenizer.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path)):
        assert type(loaded) is MidiTokenizer
        assert loaded.sustain == sustain and loaded.model_max_length == 1024
        assert loaded.encode_midi(A) == expected
        assert loaded.get_vocab() == tok.get_vocab()
    # the modes do differ on this file, so the setting is what made the difference
    assert len({tuple(codec.encode(A, sustain=s).tolist()) for s in SUSTAIN_MODES}) == 3


def test_a_vocab_file_that_differs_from_the_spec_is_refused(tmp_path):
    MidiTokenizer().save_pretrained(tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    vocab["NOTE_ON_0"], vocab["NOTE_ON_1"] = 1, 0
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(ValueError, match="vocabulary differs from the codec's 393 tokens"):
        MidiTokenizer.from_pretrained(tmp_path)


def test_encode_midi_and_decode_midi():
    tok = MidiTokenizer()
    ids = tok.encode_midi(A)
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID and ids[1:-1] == codec.encode(A).tolist()
    assert tok.encode_midi(A, add_special_tokens=False) == ids[1:-1]
    assert tok.encode_midi(A.read_bytes()) == ids == tok.encode_midi(str(A))
    score = tok.decode_midi(torch.tensor(ids))
    assert tok.encode_midi(score) == ids
    assert tok.encode_midi(tok.decode_midi(np.array([ids]))) == ids  # a (1, N) batch of one
    with pytest.raises(ValueError, match=r"one sequence of ids, got shape \(2, 3\)"):
        tok.decode_midi([[60, 256, 188]] * 2)


def test_call_on_one_midi():
    tok = MidiTokenizer()
    out = tok(midi=A)
    assert out["input_ids"] == tok.encode_midi(A) and out["attention_mask"] == [1] * len(out["input_ids"])
    # positional MIDI: a Path, bytes, or a string naming a .mid file (spaces allowed)
    assert tok(A)["input_ids"] == tok(A.read_bytes())["input_ids"] == tok(str(A))["input_ids"] == out["input_ids"]
    with pytest.raises(ValueError, match="either text or midi="):
        tok("NOTE_ON_60", midi=A)
    with pytest.raises(TypeError, match="unsupported arguments for MIDI input"):
        tok(midi=A, stride=3)


def test_call_on_a_batch_pads_and_masks():
    tok = MidiTokenizer()
    a, b = tok.encode_midi(A), tok.encode_midi(B)
    assert len(a) < len(b)
    out = tok(midi=[A, B], padding=True, return_tensors="pt")
    assert isinstance(out["input_ids"], torch.Tensor) and out["input_ids"].shape == (2, len(b))
    assert out["input_ids"][0].tolist() == a + [PAD_ID] * (len(b) - len(a))
    assert out["input_ids"][1].tolist() == b
    assert out["attention_mask"][0].tolist() == [1] * len(a) + [0] * (len(b) - len(a))
    assert out["attention_mask"][1].sum().item() == len(b)
    left = tok(midi=[A, B], padding="longest", padding_side="left", return_tensors="np")
    assert left["input_ids"][0].tolist() == [PAD_ID] * (len(b) - len(a)) + a
    fixed = tok(midi=[A], padding="max_length", max_length=len(a) + 7)
    assert fixed["input_ids"][0] == a + [PAD_ID] * 7 and sum(fixed["attention_mask"][0]) == len(a)
    unpadded = tok(midi=[A, B])
    assert unpadded["input_ids"] == [a, b]


def test_call_truncates_to_max_length():
    tok = MidiTokenizer(model_max_length=64)
    b = tok.encode_midi(B)
    out = tok(midi=[A, B], truncation=True, max_length=50, padding=True, return_tensors="pt")
    assert out["input_ids"].shape == (2, 50)
    assert out["input_ids"][1].tolist() == b[:49] + [EOS_ID]
    assert len(tok(midi=B, truncation=True)["input_ids"]) == 64  # model_max_length
    assert len(tok(midi=B, truncation=True, add_special_tokens=False)["input_ids"]) == 64
    assert len(tok(midi=B)["input_ids"]) == len(b)  # no truncation unless asked


def test_text_form_round_trip():
    tok = MidiTokenizer()
    ids = codec.encode(A).tolist()[:300]
    text = " ".join(codec.token_names()[i] for i in ids)
    assert tok.tokenize(text) == text.split()
    assert tok.convert_tokens_to_ids(tok.tokenize(text)) == ids
    enc = tok(text)
    assert enc["input_ids"] == [BOS_ID, *ids, EOS_ID]
    assert tok.decode(enc["input_ids"], skip_special_tokens=True) == text
    assert tok.decode(enc["input_ids"]) == f"<bos> {text} <eos>"
    assert tok.decode(ids) == text
    assert tok(["NOTE_ON_60 TIME_SHIFT_10", "NOTE_OFF_60"], padding=True)["input_ids"] == [
        [BOS_ID, 60, 256, EOS_ID], [BOS_ID, 188, EOS_ID, PAD_ID]]
    with pytest.raises(codec.HfMidiError, match="unknown token 'NOTE_ON_128'"):
        tok("NOTE_ON_128")


def test_text_and_midi_agree():
    tok = MidiTokenizer()
    text = tok.decode(tok.encode_midi(A), skip_special_tokens=True)
    assert tok(text)["input_ids"] == tok(midi=A)["input_ids"]
