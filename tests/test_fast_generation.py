"""The fast decoding loop (hf_midi.remote_code.fast_generation): same tokens as generate() where it is exact, the
right fallbacks where it does not apply, clear errors, and packed weights that stay the same model."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model
from transformers import AutoModelForCausalLM, pipeline

from hf_midi.loading import resolve_model
from hf_midi.remote_code.arguments import GenerationError
from hf_midi.remote_code.codec import BOS_ID, EOS_ID, NOTE_OFF, PAD_ID, TIME_SHIFT, VOCAB_SIZE
from hf_midi.remote_code.fast_generation import (
    FastGPT2,
    FastPathError,
    fast_sample,
    packed_formats_available,
    resolve_weights,
    unsupported_reason,
)
from hf_midi.remote_code.generation import generate_music, music_generation_config

needs_fbgemm = pytest.mark.skipif(not packed_formats_available(), reason="float16/int8 need fbgemm (x86 torch)")


def peaky(model, factor: float = 8.0):
    """Sharpen a random model's logits (a trained model's are far from uniform: spread ~2.4 nats, not
    0.16), so that any numeric difference between two loops would show as a different token."""
    with torch.no_grad():
        model.transformer.ln_f.weight.mul_(factor)
    return model


@pytest.fixture(scope="module")
def model():
    return peaky(tiny_model(n_positions=128))


@pytest.fixture(scope="module")
def default_model():
    """The bundled ``small`` model (4 x 256): a real trained GPT-2, fast enough for many calls."""
    path = resolve_model("small")
    assert path != "small", "the bundled small model is missing: a defect of this copy, not a reason to skip"
    return AutoModelForCausalLM.from_pretrained(path).float().eval()


def both(model, ids, seed=0, **kwargs):
    """(plain generate(), generate(custom_generate=fast_sample)) under one seed."""
    out = []
    for extra in ({}, {"custom_generate": fast_sample}):
        torch.manual_seed(seed)
        out.append(model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs, **extra))
    return out


# --------------------------------------------------------------------------- exact
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("sampling", [
    {"do_sample": True},
    {"do_sample": True, "temperature": 0.8, "top_k": 20, "top_p": 0.9},
    {"do_sample": False},
])
def test_same_tokens_as_generate(model, batch, sampling):
    ids = torch.tensor([[BOS_ID, 60, 60 + 128, TIME_SHIFT + 9, 64]] * batch)
    plain, fast = both(model, ids, max_new_tokens=100, eos_token_id=EOS_ID, pad_token_id=PAD_ID, **sampling)
    assert fast.shape == plain.shape and fast.shape[1] > ids.shape[1]
    assert torch.equal(fast, plain)
    if sampling["do_sample"]:  # the sampling is not degenerate: a copied token would prove little
        assert len(set(plain[:, 5:].flatten().tolist())) > 2


def test_logits_are_bitwise_generate_forward(model):
    """Each step's logits equal GPT2LMHeadModel's with its own cache, bit for bit (as generate() calls
    it: the last position's logits only)."""
    ids = torch.randint(0, 388, (2, 40))
    with torch.inference_mode():
        out = model(ids[:, :10], use_cache=True, logits_to_keep=1)
        ref = [out.logits[:, -1]]
        for t in range(10, 40):
            out = model(ids[:, t:t + 1], cache=out.cache, use_cache=True, logits_to_keep=1)
            ref.append(out.logits[:, -1])
        dec = FastGPT2(model)
        dec.start(2, 40)
        got = [dec.step(ids[:, :10])] + [dec.step(ids[:, t:t + 1]) for t in range(10, 40)]
    assert all(torch.equal(a, b) for a, b in zip(got, ref))


def test_stops_at_eos_and_pads_like_generate(model):
    """Rows end at <eos> at different steps (a user's processor makes <eos> likely); the rest are
    padded, and the call ends when all rows have ended."""
    from transformers import LogitsProcessor, LogitsProcessorList

    class LikelyEnd(LogitsProcessor):
        def __call__(self, input_ids, scores):
            scores[:, EOS_ID] = scores.max(1).values - 2.0
            return scores

    ids = torch.full((4, 1), BOS_ID)
    for seed in range(3):
        plain, fast = both(model, ids, seed=seed, do_sample=True, max_new_tokens=200, eos_token_id=EOS_ID,
                           pad_token_id=PAD_ID, logits_processor=LogitsProcessorList([LikelyEnd()]))
        assert torch.equal(fast, plain)
        ends = [row.index(EOS_ID) for row in plain.tolist()]
        assert len(set(ends)) > 1 and plain.shape[1] == max(ends) + 1 < 201
        assert all((plain[i, e + 1:] == PAD_ID).all() for i, e in enumerate(ends))


def test_generate_music_fast_equals_slow_through_the_window(model):
    """The pipeline's loop: grammar, note guard, music-time limit, progress, and a sliding window (the
    context refills twice), fast and slow give the same pieces under one seed."""
    config = music_generation_config(model)
    ids = torch.full((2, 1), BOS_ID)
    out = {}
    for fast in (False, True):
        torch.manual_seed(7)
        seen = []
        out[fast] = generate_music(model, ids, seconds=20.0, max_new_tokens=300, generation_config=config,
                                   window=100, keep=40, max_note_seconds=2.0, fast=fast, max_silence_seconds=None,
                                   progress=lambda done, total, seen=seen: seen.append(done))
        assert seen and seen[-1] > 0
    assert out[True].shape[1] > 100 + 1, "the window must have slid"
    assert torch.equal(out[True], out[False])


def test_bundled_default_pipeline_same_piece_fast_and_slow(default_model):
    """float32 weights give generate()'s tokens, one piece or a batch."""
    pipe = pipeline("midi-generation", model=resolve_model("small"))
    fast, slow = pipe(seconds=4, seed=3, weights="float32"), pipe(seconds=4, seed=3, fast=False)
    assert fast[0]["token_ids"] == slow[0]["token_ids"] and len(fast[0]["token_ids"]) > 50
    fast = pipe(seconds=4, seed=5, num_return_sequences=2, weights="float32")
    slow = pipe(seconds=4, seed=5, num_return_sequences=2, fast=False)
    assert [r["token_ids"] for r in fast] == [r["token_ids"] for r in slow]
    assert fast[0]["token_ids"] != fast[1]["token_ids"]


# --------------------------------------------------------------------------- kept decoders
def test_inside_and_outside_inference_mode(model):
    """The kept decoder and the music state cross torch.inference_mode() boundaries (the benchmark runs
    inside one, the pipeline and the CLI outside), in both orders."""
    config = music_generation_config(model)
    ids = torch.full((2, 1), BOS_ID)
    pieces = []
    for inference in (True, False, True):
        torch.manual_seed(0)
        with torch.inference_mode(inference):
            pieces.append(generate_music(model, ids, seconds=None, max_new_tokens=40, generation_config=config))
    assert all(torch.equal(p, pieces[0]) for p in pieces)


def test_decoder_is_kept_until_the_weights_change(model):
    first = FastGPT2.for_model(model, "float32")
    assert FastGPT2.for_model(model, "float32") is first
    ids = torch.full((1, 1), BOS_ID)
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight.mul_(1.5)  # an in-place update, as an optimizer step does
    try:
        assert FastGPT2.for_model(model, "float32") is not first
        plain, fast = both(model, ids, do_sample=True, max_new_tokens=50, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
        assert torch.equal(fast, plain)
    finally:
        with torch.no_grad():
            model.transformer.h[0].mlp.c_fc.weight.div_(1.5)


# --------------------------------------------------------------------------- fallbacks and errors
def test_lstm_and_padding_take_generate_own_loop():
    from hf_midi.remote_code.configuration_musicrnn import MusicRNNConfig
    from hf_midi.remote_code.modeling_musicrnn import MusicRNNForCausalLM

    torch.manual_seed(0)
    lstm = MusicRNNForCausalLM(MusicRNNConfig(vocab_size=393, hidden_size=32, num_layers=1)).eval()
    assert "not a GPT2LMHeadModel" in unsupported_reason(lstm)
    ids = torch.full((2, 1), BOS_ID)
    plain, fast = both(lstm, ids, do_sample=True, max_new_tokens=30, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    assert torch.equal(fast, plain)
    with pytest.raises(FastPathError, match="int8.*not a GPT2LMHeadModel"):
        lstm.generate(ids, do_sample=True, max_new_tokens=5, pad_token_id=PAD_ID, custom_generate=fast_sample,
                      weights="int8")

    gpt = peaky(tiny_model(n_positions=64))
    ids = torch.tensor([[PAD_ID, BOS_ID, 60], [BOS_ID, 62, 64]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    out = []
    for extra in ({}, {"custom_generate": fast_sample}):
        torch.manual_seed(1)
        out.append(gpt.generate(ids, attention_mask=mask, do_sample=True, max_new_tokens=20, pad_token_id=PAD_ID,
                                **extra))
    assert torch.equal(out[0], out[1])


def test_bad_weights_named_before_generation(model, tmp_path):
    from conftest import save_tiny_model

    with pytest.raises(FastPathError, match="weights must be auto or one of float32, float16, int8, got 'int4'"):
        resolve_weights(model, "int4")
    with pytest.raises(GenerationError, match="needs the fast path"):
        generate_music(model, torch.full((1, 1), BOS_ID), seconds=1.0, fast=False, weights="int8")
    with pytest.raises(GenerationError, match="weights must be auto, float32, float16, int8, got 'bf16'"):
        generate_music(model, torch.full((1, 1), BOS_ID), seconds=1.0, weights="bf16")
    pipe = pipeline("midi-generation", model=str(save_tiny_model(tmp_path / "m")))
    with pytest.raises(GenerationError, match="weights must be auto, float32, float16, int8, got 'fp8'"):
        pipe(seconds=1, weights="fp8")
    with pytest.raises(GenerationError, match="needs the fast path"):
        pipe(seconds=1, weights="float16", fast=False)
    dec = FastGPT2(model)
    with pytest.raises(FastPathError, match="129 positions asked for; the model has 128"):
        dec.start(1, 129)
    with pytest.raises(FastPathError, match="the prompt has 128 tokens; the model's context holds 128"):
        model.generate(torch.full((1, 128), 60), attention_mask=torch.ones(1, 128, dtype=torch.long),
                       max_new_tokens=5, pad_token_id=PAD_ID, custom_generate=fast_sample)


def test_auto_weights():
    m = tiny_model(n_positions=32)
    assert resolve_weights(m) == ("float16" if packed_formats_available() else "float32")
    assert resolve_weights(m, "int8") == "int8"
    assert resolve_weights(m.to("meta"), "auto") == "float32"  # not a CPU: no fbgemm kernels


# --------------------------------------------------------------------------- packed weights
@needs_fbgemm
@pytest.mark.parametrize("weights,tolerance", [("float16", 0.02), ("int8", 0.5)])
def test_packed_weights_are_the_same_model(default_model, weights, tolerance):
    """float16/int8 logits stay near float32's (relative to their spread), and the pieces are valid."""
    ids = torch.tensor([[BOS_ID, 60, TIME_SHIFT + 20, 60 + 128, 64, TIME_SHIFT + 49]])
    with torch.inference_mode():
        ref = FastGPT2(default_model, "float32")
        got = FastGPT2(default_model, weights)
        ref.start(1, 16)
        got.start(1, 16)
        a, b = ref.step(ids), got.step(ids)
    diff = (a - b)[0, :VOCAB_SIZE].abs().max().item()
    assert 0 < diff < tolerance * a[0, :VOCAB_SIZE].std().item()
    assert torch.equal(a.argmax(-1), b.argmax(-1))
    torch.manual_seed(0)
    out = generate_music(default_model, torch.full((3, 1), BOS_ID), seconds=3.0, weights=weights)
    for row in out.tolist():
        row = [t for t in row if t != PAD_ID]
        assert row[0] == BOS_ID and all(t < VOCAB_SIZE for t in row)
        on = set()
        for t in row[1:]:
            if t < NOTE_OFF:
                on.add(t)
            elif t < TIME_SHIFT:
                assert t - NOTE_OFF in on, "the grammar holds with packed weights too"
                on.discard(t - NOTE_OFF)
