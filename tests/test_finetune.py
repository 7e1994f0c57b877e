"""Fine-tuning from a trained model: --init_from, LoRA adapters (save, load, merge), `hf-midi finetune`,
and its bad inputs. Real training runs of a tiny GPT-2 on the committed POP909 fixtures."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import EDGE_FIXTURES, POP909_FIXTURES, SUBPROCESS_ENV, reset_accelerate

from hf_midi.remote_code.codec import BOS_ID, EOS_ID, VOCAB_SIZE

pytest.importorskip("accelerate")
pytest.importorskip("peft")
ENV = SUBPROCESS_ENV
pytestmark = pytest.mark.usefixtures("fresh_accelerate")  # conftest


def run_args(dataset, out, **extra) -> list[str]:
    args = ["--config", "tiny", "--dataset", dataset, "--output_dir", str(out), "--tracker", "none",
            "--progress", "false"]
    for k, v in extra.items():
        args += [f"--{k}", str(v)]
    return args


def metrics(out) -> list[dict]:
    return [json.loads(x) for x in (Path(out) / "logs" / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, dataset) -> Path:
    """A tiny GPT-2 trained 60 steps on the fixtures: the 'shipped model' these tests start from."""
    from hf_midi.training import main

    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    assert main(run_args(dataset, out, max_steps=60, save_every=0, eval_batches=0)) == 0
    reset_accelerate()
    return out


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, dataset, tiny_ckpt) -> Path:
    from hf_midi.training import main

    out = tmp_path_factory.mktemp("lora") / "adapter"
    reset_accelerate()
    assert main(run_args(dataset, out, init_from=tiny_ckpt, lora="true", lora_rank=4, max_steps=6,
                         learning_rate=1e-2, save_every=0, eval_batches=0)) == 0
    return out


def test_init_from_starts_at_the_checkpoints_loss_and_lowers_it(dataset, tiny_ckpt, tmp_path, capsys):
    from hf_midi.training import main

    ckpt_losses = [m["loss"] for m in metrics(tiny_ckpt)]
    out = tmp_path / "ft"
    # The preset's model section (tiny: 2 x 64, context 128) is ignored; a different one must not matter.
    assert main(run_args(dataset, out, init_from=tiny_ckpt, max_steps=20, learning_rate=1e-3, warmup_steps=2,
                         save_every=0, eval_batches=0, **{"model.num_layers": 5})) == 0
    assert "the config's model section is ignored" in capsys.readouterr().out
    ft = [m["loss"] for m in metrics(out)]
    # It starts where the checkpoint ended, far below a random model's ln(393) = 5.97 ...
    assert abs(ft[0] - sum(ckpt_losses[-5:]) / 5) < 0.4 and ft[0] < math.log(VOCAB_SIZE) - 1.0
    assert ckpt_losses[0] > ft[0] + 1.0  # (the checkpoint's own first step was a random model's)
    # ... and goes down from there.
    assert sum(ft[-5:]) / 5 < sum(ft[:5]) / 5
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.n_layer == 2  # the checkpoint's shape, not the override's


def test_lora_saves_only_the_adapter_and_it_loads_and_generates(adapter, tiny_ckpt):
    from safetensors.torch import load_file

    from hf_midi.loading import load_pipeline

    names = {p.name for p in adapter.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer_config.json"} <= names
    assert "model.safetensors" not in names and "config.json" not in names
    weights = load_file(adapter / "adapter_model.safetensors")
    assert weights and all("lora_" in k for k in weights)
    n_adapter = sum(w.numel() for w in weights.values())
    n_base = sum(w.numel() for w in load_file(tiny_ckpt / "model.safetensors").values())
    assert n_adapter < n_base / 5
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert Path(cfg["base_model_name_or_path"]) == tiny_ckpt.resolve() and cfg["r"] == 4
    # The adapter moved the model: its logits differ from the base's.
    from hf_midi.loading import load_model

    base, _ = load_model(tiny_ckpt)
    tuned, tok = load_model(adapter)
    ids = torch.tensor([tok.encode_midi(POP909_FIXTURES[0])[:64]])
    with torch.no_grad():
        assert not torch.allclose(base(ids).logits, tuned(ids).logits, atol=1e-4)
    # The pipeline (the CLI's and the Space's loader) composes with it, on its base.
    pipe = load_pipeline(str(adapter))
    [piece] = pipe(max_new_tokens=24, seed=0)
    ids = piece["token_ids"]  # <bos>, then the 24 new events unless the model ended the piece first
    assert ids[0] == BOS_ID and (len(ids) == 25 or ids[-1] == EOS_ID) and all(i < 390 for i in ids[1:-1])
    # And plain transformers, too: pipeline("midi-generation", model=ADAPTER).
    from transformers import pipeline

    [piece2] = pipeline("midi-generation", model=str(adapter))(max_new_tokens=24, seed=0)
    assert piece2["token_ids"] == piece["token_ids"]
    # The Space's --model loads it the same way.
    pytest.importorskip("gradio")
    from test_space import load_app

    [piece3] = load_app().load_pipeline(str(adapter))(max_new_tokens=24, seed=0)
    assert piece3["token_ids"] == piece["token_ids"]


def test_merged_export_has_the_adapters_logits_and_needs_no_peft(adapter, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from hf_midi.cli import main as cli

    out = tmp_path / "merged"
    card = Path(__file__).parents[1] / "model_card.md"
    assert cli(["export", str(adapter), str(out), "--merge", "--card", str(card)]) == 0
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(merged).__name__ == "GPT2LMHeadModel"
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(cfg["base_model_name_or_path"])
    peft_model = PeftModel.from_pretrained(base, str(adapter)).eval()
    ids = torch.randint(0, VOCAB_SIZE, (2, 48))
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, peft_model(ids).logits, atol=1e-4, rtol=1e-4)
    # Without --merge an adapter is refused with the way out named.
    assert cli(["export", str(adapter), str(tmp_path / "x")]) == 1
    assert not (tmp_path / "x").exists()


def test_an_adapter_made_elsewhere_finds_the_bundled_base(tmp_path):
    """An adapter of the bundled model records that folder's absolute path; on another machine (another
    install path) the loader maps it back to the bundled model of this install."""
    from hf_midi.loading import adapter_base, bundled_models

    assert "small" in bundled_models(), "the bundled small model is missing from this copy"
    (tmp_path / "adapter_config.json").write_text(json.dumps(
        {"base_model_name_or_path": "/elsewhere/site-packages/hf_midi/pretrained/small"}))
    assert adapter_base(tmp_path) == bundled_models()["small"]


def run_finetune(model, tmp_path, files, steps: int, learning_rate: str):
    """`hf-midi finetune` of ``model`` on a folder of ``files`` (a few steps); the process and OUT."""
    src = tmp_path / "my_midi"
    src.mkdir()
    for f in files:
        shutil.copy(f, src / ("broken.mid" if f.name.startswith("test-") else f.name))
    out = tmp_path / "tuned"
    proc = subprocess.run([sys.executable, "-m", "hf_midi.cli", "finetune", str(src), str(out), "--model",
                           str(model), "--minutes", "5", "--max-steps", str(steps), "--block-size", "128",
                           "--batch-size", "4", "--learning-rate", learning_rate, "--quiet", "--val-fraction", "0.25"],
                          capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, out


def test_the_one_command_on_a_small_folder(tiny_ckpt, tmp_path):
    # the broken file is reported and skipped
    proc, out = run_finetune(tiny_ckpt, tmp_path, [*POP909_FIXTURES, EDGE_FIXTURES / "test-not-a-midi-file.mid"],
                             12, "1e-3")
    result = json.loads((out / "finetune.json").read_text())
    assert result["files"] == {"train": 7, "validation": 2} and result["skipped"] == 1
    assert "broken.mid" in proc.stderr  # the skipped file is named
    assert result["steps"] == 12 and math.isfinite(result["nll_before"]) and math.isfinite(result["nll_after"])
    assert f"{result['nll_before']:.4f} -> {result['nll_after']:.4f}" in proc.stdout
    assert result["worse"] == (result["nll_after"] > result["nll_before"])
    assert ("the held-out NLL got worse" in proc.stderr) == result["worse"]
    assert (out / "model" / "model.safetensors").is_file() and not (out / "model" / "checkpoints").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing half-written beside OUT
    # The tuned model is a model folder the evaluator scores like any other.
    from hf_midi.loading import load_model

    model, tok = load_model(out / "model")
    assert model.config.n_layer == 2 and len(tok) == VOCAB_SIZE


# --------------------------------------------------------------------------- bad input
def _no_leftovers(parent: Path, out: Path) -> None:
    assert not out.exists()
    assert not [p for p in parent.iterdir() if p.name.startswith(".")]


def test_a_folder_without_readable_midi_is_refused_before_training(tiny_ckpt, tmp_path):
    from hf_midi.training.finetune import FinetuneError, finetune

    src = tmp_path / "junk"
    src.mkdir()
    for name in ("test-not-a-midi-file.mid", "test-empty-file.mid", "test-corrupt-file-missing-byte.mid"):
        shutil.copy(EDGE_FIXTURES / name, src / name)
    out = tmp_path / "o"
    with pytest.raises(FinetuneError, match=r"junk: none of its 3 MIDI files could be used"):
        finetune(src, out, model=str(tiny_ckpt), minutes=1, progress=False, workers=0)
    _no_leftovers(tmp_path, out)
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(POP909_FIXTURES[0], one / "a.mid")
    with pytest.raises(FinetuneError, match="too little music to hold out a validation split"):
        finetune(one, out, model=str(tiny_ckpt), minutes=1, progress=False, workers=0)
    _no_leftovers(tmp_path, out)


def test_an_adapter_whose_base_is_missing_is_named(adapter, tmp_path):
    from hf_midi.loading import ModelLoadError, load_model

    moved = tmp_path / "adapter"
    shutil.copytree(adapter, moved)
    cfg = json.loads((moved / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(tmp_path / "gone" / "model")
    (moved / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=r"its base model .*gone/model is missing"):
        load_model(moved)
    proc = subprocess.run([sys.executable, "-m", "hf_midi.cli", "generate", "--model", str(moved), "-o",
                           str(tmp_path / "x.mid"), "--seconds", "1"], capture_output=True, text=True, env=ENV,
                          timeout=300)
    assert proc.returncode == 1 and "gone/model is missing" in proc.stderr
    assert not (tmp_path / "x.mid").exists()


def test_a_model_of_another_vocabulary_is_refused(dataset, tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    from hf_midi import MidiTokenizer
    from hf_midi.loading import ModelLoadError, load_model
    from hf_midi.training import main

    foreign = tmp_path / "text_gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=300, n_layer=1, n_embd=32, n_head=2, n_positions=128,
                               bos_token_id=0, eos_token_id=0)).save_pretrained(foreign)
    MidiTokenizer().save_pretrained(foreign)
    with pytest.raises(ModelLoadError, match=r"model .*text_gpt2: not this package's 393-event vocabulary: 300"):
        load_model(foreign)
    out = tmp_path / "run"
    assert main(run_args(dataset, out, init_from=foreign, max_steps=2)) == 1
    assert "text_gpt2: not this package's" in capsys.readouterr().err
    assert not out.exists()


def test_lora_without_a_model_to_start_from_is_a_config_error(dataset, tmp_path, capsys):
    from hf_midi.training import main

    assert main(run_args(dataset, tmp_path / "r", lora="true")) == 2
    assert "set init_from" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_your_folder_is_cleaned_unless_asked_not_to(tmp_path):
    """hf-midi finetune prepares your files the way prepare does: each piece from its first note, a
    fragment too short to learn from named and left out; --no-clean keeps every file as it is."""
    from hf_midi.training.finetune import prepare_folder

    src = tmp_path / "mine"
    src.mkdir()
    for f in POP909_FIXTURES[:4]:
        shutil.copy(f, src / f.name)
    shutil.copy(EDGE_FIXTURES / "test-c-major-scale.mid", src / "scale.mid")  # a few seconds of scale
    cleaned = prepare_folder(src, tmp_path / "clean", 0.25, None, progress=False, workers=0)
    assert ("scale.mid", "too short") in cleaned["skipped"]
    assert sum(cleaned["files"].values()) == 4
    raw = prepare_folder(src, tmp_path / "raw", 0.25, None, progress=False, workers=0, clean=False)
    assert raw["skipped"] == [] and sum(raw["files"].values()) == 5


def test_lora_defaults_have_one_home():
    """add_lora, train.py's fields and hf-midi finetune agree: rank 16, alpha 32, GPT-2's three matrices."""
    import argparse
    import inspect

    from hf_midi.loading import DEFAULT_LORA_ALPHA, DEFAULT_LORA_RANK, DEFAULT_LORA_TARGETS, add_lora
    from hf_midi.training.args import RunArguments
    from hf_midi.training.finetune import configure_finetune, finetune

    p = argparse.ArgumentParser()
    configure_finetune(p)
    cli = p.parse_args(["in", "out"])
    args = RunArguments()
    lora = inspect.signature(add_lora).parameters
    tune = inspect.signature(finetune).parameters
    for rank, alpha in ((lora["rank"].default, lora["alpha"].default), (args.lora_rank, args.lora_alpha),
                        (cli.lora_rank, cli.lora_alpha), (tune["lora_rank"].default, tune["lora_alpha"].default)):
        assert (rank, alpha) == (DEFAULT_LORA_RANK, DEFAULT_LORA_ALPHA) == (16, 32.0)
    assert args.lora_targets.split(",") == list(DEFAULT_LORA_TARGETS) == list(lora["targets"].default)


def test_finetune_hyperparameters_live_in_presets():
    """hf-midi finetune reads its hyperparameters from the finetune / finetune-lora presets, not from code."""
    from hf_midi.training.args import load_config

    full = load_config("finetune", check_paths=False)
    lora = load_config("finetune-lora", {"init_from": "small"}, check_paths=False)  # adapters need a model
    assert (full.learning_rate, full.weight_decay, full.lora) == (3e-4, 0.1, False)
    assert (lora.learning_rate, lora.weight_decay, lora.lora) == (2e-3, 0.0, True)
    assert full.transpose == lora.transpose == [-3, 3] and full.model.dropout == 0.0


def test_a_finetune_that_makes_the_model_worse_says_so_and_what_to_try(tiny_ckpt, tmp_path):
    """A learning rate far too high wrecks the model in a few steps: the job still saves it, and says that
    the held-out NLL got worse than the starting model's, with what to try."""
    proc, out = run_finetune(tiny_ckpt, tmp_path, POP909_FIXTURES[:4], 4, "3")
    result = json.loads((out / "finetune.json").read_text())
    assert result["worse"] and result["nll_after"] > result["nll_before"]
    warning = next(line for line in proc.stderr.splitlines() if "held-out NLL got worse" in line)
    assert f"({result['nll_before']:.4f} -> {result['nll_after']:.4f}" in warning
    assert "--learning-rate" in warning and "--lora" in warning and str(tiny_ckpt) in warning
    assert "worse than the model it started from" in proc.stdout
