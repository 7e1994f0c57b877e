"""The presets (GPT-2 and the MusicRNN LSTM): sizes, save -> load, generate() with the LSTM state cache,
padding, and the LSTM as Hub remote code loaded where hf_midi cannot be imported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, GPT2LMHeadModel

from hf_midi.remote_code.codec import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE
from hf_midi.remote_code.configuration_musicrnn import MusicRNNConfig
from hf_midi.remote_code.modeling_musicrnn import MusicRNNForCausalLM
from hf_midi.training import build_model, generation_config

TINY_LSTM = dict(architecture="musicrnn", num_layers=2, hidden_size=48, embedding_size=32, dropout=0.0)
IDS = torch.tensor([[BOS_ID, 356 + 20, 60, 64, 300, 188, 192, 256 + 30, 67, 320, 195]])


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- presets
def test_presets_have_the_documented_sizes_and_special_ids():
    sizes = {}
    for preset in ("tiny", "small-stream", "base-stream", "lstm"):
        torch.manual_seed(0)
        model = build_model(preset)
        cfg = model.config
        assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (BOS_ID, EOS_ID, PAD_ID), preset
        assert cfg.vocab_size % 64 == 0 and VOCAB_SIZE <= cfg.vocab_size < VOCAB_SIZE + 64, preset
        sizes[preset] = n_params(model)
    assert isinstance(build_model("small-stream"), GPT2LMHeadModel)
    assert sizes["tiny"] < 300_000  # seconds on a CPU
    assert 1_000_000 <= sizes["small-stream"] <= 10_000_000
    # base-stream: one GPU, 2048 context; its bf16 weights come back from the GPU machine (<= 64 MB).
    base = build_model("base-stream")
    assert base.config.n_positions == 2048 and 20e6 <= sizes["base-stream"] <= 30e6
    assert sizes["base-stream"] * 2 < 64e6
    # lstm: "comparable size" to the small shape, so the comparison is fair
    assert isinstance(build_model("lstm"), MusicRNNForCausalLM)
    assert 0.75 <= sizes["lstm"] / sizes["small-stream"] <= 1.33


@pytest.mark.parametrize("preset, shipped", [("gpu-small", "small"), ("gpu-base", "base")])
def test_the_gpu_presets_make_the_shipped_models_shapes(preset, shipped):
    """The presets named for what ships reproduce it: the same architecture as the bundled folder."""
    from hf_midi.loading import resolve_model
    from hf_midi.training.args import load_config
    from hf_midi.training.models import model_config

    made = model_config(load_config(preset, check_paths=False).model)
    bundled = json.loads((Path(resolve_model(shipped)) / "config.json").read_text())
    for field in ("n_layer", "n_embd", "n_head", "n_positions", "vocab_size", "n_inner"):
        assert getattr(made, field) == bundled.get(field), (preset, field)


def test_build_model_takes_a_dict_and_names_a_bad_field():
    model = build_model({"num_layers": 1, "hidden_size": 32, "num_heads": 2, "context_length": 64})
    assert (model.config.n_layer, model.config.n_embd, model.config.n_positions) == (1, 32, 64)
    from hf_midi.training.args import ConfigError

    with pytest.raises(ConfigError, match="model.num_layer"):
        build_model({"num_layer": 1})
    with pytest.raises(ConfigError, match="model.hidden_size: 30 is not a multiple of model.num_heads"):
        build_model({"hidden_size": 30, "num_heads": 4})


def test_generation_config_suppresses_ids_the_model_must_not_emit():
    model = build_model("tiny")
    gc = generation_config(model.config, max_new_tokens=77)
    assert (gc.bos_token_id, gc.eos_token_id, gc.pad_token_id, gc.decoder_start_token_id) == (391, 392, 390, 391)
    assert gc.do_sample and gc.max_new_tokens == 77 and 0 < gc.top_p <= 1 and gc.temperature > 0
    assert set(gc.suppress_tokens) == {PAD_ID, BOS_ID, *range(VOCAB_SIZE, model.config.vocab_size)}
    torch.manual_seed(0)
    out = model.generate(torch.tensor([[BOS_ID]]), generation_config=gc, min_new_tokens=77)
    # the suppressed ids never come (min_new_tokens only keeps <eos> away, so 77 real draws are checked)
    assert int(out[0, 1:].max()) <= EOS_ID and not (out[0, 1:] == BOS_ID).any() and not (out[0, 1:] == PAD_ID).any()


# --------------------------------------------------------------------------- save -> load
@pytest.mark.parametrize("spec", ["tiny", TINY_LSTM], ids=["gpt2", "musicrnn"])
def test_save_load_gives_identical_logits(tmp_path, spec):
    torch.manual_seed(0)
    model = build_model(spec).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    with torch.no_grad():
        assert torch.equal(model(IDS).logits, loaded(IDS).logits)


# --------------------------------------------------------------------------- the LSTM
@pytest.fixture(scope="module")
def lstm():
    torch.manual_seed(0)
    return build_model(TINY_LSTM).eval()


def test_lstm_is_registered_with_the_auto_classes():
    cfg = AutoConfig.for_model("musicrnn", hidden_size=16, embedding_size=8, num_layers=1)
    assert isinstance(cfg, MusicRNNConfig)
    assert isinstance(AutoModelForCausalLM.from_config(cfg), MusicRNNForCausalLM)


def test_lstm_forget_gate_bias_starts_at_one(lstm):
    h = lstm.config.hidden_size
    for layer in range(lstm.config.num_layers):
        bias = getattr(lstm.lstm, f"bias_ih_l{layer}")
        assert torch.all(bias[h : 2 * h] == 1) and torch.all(bias[:h] == 0)


def test_lstm_state_continues_a_sequence_exactly(lstm):
    with torch.no_grad():
        full = lstm(IDS).logits
        first = lstm(IDS[:, :4])
        rest = lstm(IDS[:, 4:], rnn_state=first.rnn_state)
    torch.testing.assert_close(torch.cat([first.logits, rest.logits], 1), full, rtol=0, atol=1e-6)
    # One token at a time (the fused single-step path generation takes) gives the same logits.
    state, steps = None, []
    with torch.no_grad():
        for t in range(IDS.shape[1]):
            out = lstm(IDS[:, t : t + 1], rnn_state=state)
            state = out.rnn_state
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=0, atol=1e-5)


def test_lstm_generate_feeds_one_token_a_step_and_matches_full_recompute(lstm):
    lengths = []
    hook = lstm.register_forward_pre_hook(lambda m, a, kw: lengths.append(kw["input_ids"].shape[1]), with_kwargs=True)
    try:
        out = lstm.generate(IDS, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    finally:
        hook.remove()
    assert out.shape == (1, IDS.shape[1] + 12)
    assert lengths == [IDS.shape[1]] + [1] * 11  # the prompt once, then one LSTM step per event
    # Greedy decoding by recomputing the whole sequence each step gives the same tokens.
    seq = IDS
    with torch.no_grad():
        for _ in range(12):
            nxt = lstm(seq).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
    assert torch.equal(out, seq)


def test_lstm_left_padded_batch_matches_each_row_alone(lstm):
    short = IDS[:, :5]
    batch = torch.cat([IDS, torch.cat([torch.full((1, IDS.shape[1] - 5), PAD_ID), short], 1)])
    mask = (batch != PAD_ID).long()
    with torch.no_grad():
        out = lstm(batch, attention_mask=mask)
        alone = lstm(short)
    torch.testing.assert_close(out.logits[1, -5:], alone.logits[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(out.logits[0], lstm(IDS).logits[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(out.rnn_state[0][:, 1], alone.rnn_state[0][:, 0], rtol=0, atol=1e-6)
    gen = lstm.generate(batch, attention_mask=mask, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    gen_alone = lstm.generate(short, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert torch.equal(gen[1, -6:], gen_alone[0, -6:])


def test_lstm_loss_ignores_minus_100(lstm):
    labels = IDS.clone()
    labels[:, 6:] = -100
    with torch.no_grad():
        loss = lstm(IDS, labels=labels).loss
        logp = torch.log_softmax(lstm(IDS).logits[0, :5], -1)
    torch.testing.assert_close(loss, -logp.gather(1, IDS[0, 1:6, None]).mean())


def test_lstm_loads_as_hub_remote_code_without_hf_midi(tmp_path, lstm):
    """The two files + auto_map are all a Hub folder needs; hf_midi is made unimportable."""
    folder = tmp_path / "repo"
    lstm.save_pretrained(folder)
    from hf_midi.hub import PACKAGE_DIR as pkg
    from hf_midi.hub import code_closure

    for name in code_closure("modeling_musicrnn.py"):  # the model, its config and the codec's ids
        shutil.copyfile(pkg / name, folder / name)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "modeling_musicrnn.MusicRNNConfig",
                       "AutoModelForCausalLM": "modeling_musicrnn.MusicRNNForCausalLM"}
    (folder / "config.json").write_text(json.dumps(cfg))
    with torch.no_grad():
        np.save(tmp_path / "expected.npy", lstm(IDS).logits.numpy())
    code = f"""
import sys; sys.modules["hf_midi"] = None  # any import of hf_midi now fails
import numpy as np, torch
from transformers import AutoModelForCausalLM
m = AutoModelForCausalLM.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
assert type(m).__module__.startswith("transformers_modules"), type(m).__module__
with torch.no_grad():
    got = m(torch.tensor({IDS.tolist()})).logits.numpy()
    out = m.generate(torch.tensor([[391]]), max_new_tokens=5, min_new_tokens=5, do_sample=False)
assert np.array_equal(got, np.load({str(tmp_path / "expected.npy")!r})), "logits differ"
assert out.shape == (1, 6)
print("ok")
"""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-3000:]
