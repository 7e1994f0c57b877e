"""hf_midi.evaluation / `hf-midi evaluate`: every target scored once, with the context it should have,
against brute-force references; the CLI on a dataset prepared from the committed fixtures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import POP909_FIXTURES

from hf_midi import MidiTokenizer
from hf_midi.cli import main as cli_main
from hf_midi.evaluation.nll import _recurrent_scores, _window_scores, evaluate_model
from hf_midi.remote_code.codec import FAMILIES, VOCAB_SIZE, event_family, shift_steps
from hf_midi.training import build_model

GPT = dict(num_layers=2, hidden_size=32, num_heads=2, context_length=32, dropout=0.0)
LSTM = dict(architecture="musicrnn", num_layers=2, hidden_size=32, embedding_size=16, dropout=0.0)


@pytest.fixture(scope="module")
def piece() -> torch.Tensor:
    return torch.tensor(MidiTokenizer().encode_midi(POP909_FIXTURES[1])[:150])  # 098.mid, <bos> + 149 ids


def reference_nll(model, ids: torch.Tensor, begin: int, t: int) -> float:
    """-log p(ids[t] | ids[begin:t]) from one plain forward pass."""
    with torch.no_grad():
        logits = model(ids[None, begin:t]).logits[0, -1, :VOCAB_SIZE]
    return float(-torch.log_softmax(logits, -1)[ids[t]])


@pytest.mark.parametrize("stride", [8, 32])
def test_sliding_windows_score_each_target_once_with_its_context(piece, stride):
    torch.manual_seed(0)
    model = build_model(GPT).eval()
    C = 32
    with torch.no_grad():
        nll, correct = _window_scores(model, piece, context=C, stride=stride, batch_size=3)
    assert nll.shape == correct.shape == (len(piece) - 1,) and torch.isfinite(nll).all()  # every target scored
    for t in (1, 5, 31, 32, 33, 40, 64, 65, 77, 100, 149):
        # Target t is scored by the first window (begin: a multiple of stride, C inputs) that reaches it.
        begin = max(0, math.ceil((t - C) / stride)) * stride
        assert t - begin >= min(t, C - stride + 1)  # context
        assert float(nll[t - 1]) == pytest.approx(reference_nll(model, piece, begin, t), abs=1e-4), t


def test_a_window_as_long_as_the_piece_is_one_forward_pass(piece):
    torch.manual_seed(0)
    model = build_model({**GPT, "context_length": 256}).eval()
    with torch.no_grad():
        nll, correct = _window_scores(model, piece, context=256, stride=128, batch_size=2)
        logp = torch.log_softmax(model(piece[None]).logits[0, :-1, :VOCAB_SIZE], -1)
    torch.testing.assert_close(nll, -logp.gather(1, piece[1:, None]).squeeze(1), rtol=0, atol=1e-5)
    assert torch.equal(correct, logp.argmax(-1) == piece[1:])


def test_the_lstm_carries_its_state_across_chunks(piece):
    torch.manual_seed(0)
    model = build_model(LSTM).eval()
    with torch.no_grad():
        [(nll, correct)] = _recurrent_scores(model, [piece], chunk=16)
        logp = torch.log_softmax(model(piece[None]).logits[0, :-1, :VOCAB_SIZE], -1)
    torch.testing.assert_close(nll, -logp.gather(1, piece[1:, None]).squeeze(1), rtol=0, atol=1e-5)
    assert torch.equal(correct, logp.argmax(-1) == piece[1:])


def test_lstm_pieces_scored_side_by_side_equal_each_alone(piece):
    torch.manual_seed(0)
    model = build_model(LSTM).eval()
    pieces = [piece, piece[:37].clone(), piece.flip(0).clone()]
    with torch.no_grad():
        together = _recurrent_scores(model, pieces, chunk=16)
        alone = [_recurrent_scores(model, [p], chunk=16)[0] for p in pieces]
    for (n1, c1), (n2, c2), p in zip(together, alone, pieces):
        assert len(n1) == len(p) - 1
        torch.testing.assert_close(n1, n2, rtol=0, atol=1e-5)
        assert torch.equal(c1, c2)


def test_family_rows_add_up_to_the_total(piece):
    torch.manual_seed(0)
    model = build_model(GPT)
    pieces = [("a", piece.numpy()), ("b", piece[:60].numpy())]
    r = evaluate_model(model, pieces, context=32, stride=16, progress=False)
    fams = r["families"]
    assert r["pieces"] == 2 and r["tokens"] == 149 + 59
    want = np.bincount(event_family(np.concatenate([piece[1:].numpy(), piece[1:60].numpy()])), minlength=len(FAMILIES))
    assert [fams[f]["tokens"] for f in FAMILIES] == want.tolist()
    total = sum(fams[f]["nll"] * fams[f]["tokens"] for f in FAMILIES if fams[f]["tokens"])
    assert total / r["tokens"] == pytest.approx(r["nll"])
    assert r["perplexity"] == pytest.approx(math.exp(r["nll"]))
    assert 0 <= r["accuracy"] <= 1 and r["nll"] > 0
    # the whole NLL spread over the notes and over the seconds of music the targets hold
    targets = np.concatenate([piece[1:].numpy(), piece[1:60].numpy()])
    notes, seconds = int((targets < 128).sum()), float(shift_steps(targets).sum()) / 100
    assert r["notes"] == notes and r["seconds"] == pytest.approx(seconds) and notes > 0 and seconds > 0
    assert r["nll_per_note"] == pytest.approx(r["nll"] * r["tokens"] / notes)
    assert r["nll_per_second"] == pytest.approx(r["nll"] * r["tokens"] / seconds)


@pytest.mark.parametrize("spec", [GPT, LSTM], ids=["gpt2", "musicrnn"])
def test_cli_prints_a_table_and_writes_json(tmp_path, dataset, capsys, spec):
    torch.manual_seed(0)
    folder = tmp_path / "model"
    build_model(spec).save_pretrained(folder)
    MidiTokenizer().save_pretrained(folder)
    assert cli_main(["evaluate", str(folder), "--dataset", dataset, "--split", "test", "--json",
                     str(tmp_path / "r.json"), "--quiet"]) == 0
    table = capsys.readouterr().out
    for row in ("all", "note_on", "note_off", "time_shift", "velocity", "pedal"):
        assert any(line.split()[:1] == [row] for line in table.splitlines()), row
    r = json.loads((tmp_path / "r.json").read_text())
    # The test split is 720.mid and 860.mid: every id after <bos> is a target, <eos> included.
    n = sum(len(MidiTokenizer().encode_midi(p)) - 1 for p in POP909_FIXTURES if p.name in ("720.mid", "860.mid"))
    assert (r["split"], r["pieces"], r["tokens"]) == ("test", 2, n)
    assert r["model_type"] == ("musicrnn" if spec is LSTM else "gpt2")
    # An untrained model is close to uniform over the 393 real ids.
    assert abs(r["nll"] - math.log(VOCAB_SIZE)) < 0.2
    assert set(r["families"]) == set(FAMILIES)


def test_evaluate_refuses_a_model_of_another_vocabulary(tmp_path, dataset, capsys):
    """`hf-midi evaluate` loads through the one loader: a GPT-2 of another vocabulary, or a model without its
    MIDI tokenizer, is named and refused, not scored with a stand-in tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    foreign = tmp_path / "foreign"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=64)).save_pretrained(foreign)
    MidiTokenizer().save_pretrained(foreign)
    assert cli_main(["evaluate", str(foreign), "--dataset", dataset, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"model {foreign}" in err and "bos_token_id 50256" in err
    bare = tmp_path / "bare"
    build_model(GPT).save_pretrained(bare)  # ours, but its tokenizer left behind
    assert cli_main(["evaluate", str(bare), "--dataset", dataset, "--quiet"]) == 1
    assert "bare: no tokenizer (tokenizer_config.json)" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
