"""The "midi-generation" pipeline: equals generate() under one seed, prompts, outputs, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import symusic
import torch
from conftest import EDGE_FIXTURES, POP909_FIXTURES, ROOT, save_tiny_model
from test_generation import invalid_tokens
from transformers import LogitsProcessorList, StoppingCriteriaList, pipeline

import hf_midi.loading as loading
from hf_midi.remote_code.arguments import GenerationError, model_note_limit
from hf_midi.remote_code.codec import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE, decode, encode, ids_to_notes, shift_steps
from hf_midi.remote_code.errors import HfMidiError
from hf_midi.remote_code.generation import cut_events
from hf_midi.remote_code.pipeline_midi_generation import MidiGenerationPipeline
from hf_midi.remote_code.processors import (
    MusicTimeLimitLogitsProcessor,
    MusicTimeStoppingCriteria,
    PerformanceGrammarLogitsProcessor,
    SoundAtOnceLogitsProcessor,
)
from hf_midi.remote_code.tokenization_midi import MidiTokenizer

PROMPT = POP909_FIXTURES[0]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny"), n_positions=256, seed=11)


@pytest.fixture(scope="module")
def pipe(model_dir):
    return pipeline("midi-generation", model=str(model_dir))


def strip(row):
    row = list(row)
    while row and row[-1] == PAD_ID:
        row.pop()
    return row


# --------------------------------------------------------------------------- equivalence
def test_registered_task_gives_our_pipeline(pipe):
    assert isinstance(pipe, MidiGenerationPipeline)


def test_plain_pipeline_equals_plain_generate(pipe):
    """No grammar, no time limit, no rule: the pipeline is exactly one sampling generate() call."""
    out = pipe(max_new_tokens=80, seed=123, num_return_sequences=3, grammar=False, top_k=20, temperature=0.9,
               sound_at_once=False)
    torch.manual_seed(123)
    ref = pipe.model.generate(torch.full((1, 1), BOS_ID), do_sample=True, max_new_tokens=80, top_k=20,
                              temperature=0.9, num_return_sequences=3)
    assert [o["token_ids"] for o in out] == [strip(r) for r in ref.tolist()]


def test_pipeline_with_seconds_and_grammar_equals_generate_with_our_processors(pipe):
    out = pipe(seconds=6.0, seed=7, num_return_sequences=2, top_p=0.9)
    torch.manual_seed(7)
    ref = pipe.model.generate(
        torch.full((2, 1), BOS_ID), do_sample=True, top_p=0.9, max_new_tokens=1200,
        logits_processor=LogitsProcessorList([PerformanceGrammarLogitsProcessor(), SoundAtOnceLogitsProcessor(),
                                              MusicTimeLimitLogitsProcessor(6.0)]),
        stopping_criteria=StoppingCriteriaList([MusicTimeStoppingCriteria(6.0)]),
    )
    assert [o["token_ids"] for o in out] == [strip(r) for r in ref.tolist()]
    for o in out:
        assert invalid_tokens(o["token_ids"]) == []
        assert o["seconds"] <= 6.0
        # the two rules: the first note before any time passes, and all 6 s (no early <eos>)
        ids = o["token_ids"]
        first_note = next(i for i, t in enumerate(ids) if t < 128)
        assert int(shift_steps(ids[:first_note]).sum()) == 0
        assert int(shift_steps(ids).sum()) == 600 and EOS_ID not in ids


def test_the_rules_come_from_the_generation_config_and_can_be_turned_off(model_dir):
    """A model that ends pieces early when it may: <eos> one event in eight."""
    from test_generation import fixed_distribution_model

    logits = torch.zeros(VOCAB_SIZE)
    logits[EOS_ID] = 4.0
    model = fixed_distribution_model(logits)
    p = pipeline("midi-generation", model=model, tokenizer=MidiTokenizer())
    asked = [p(seconds=8.0, seed=s)[0]["token_ids"] for s in range(4)]
    assert all(EOS_ID not in ids and int(shift_steps(ids).sum()) == 800 for ids in asked)  # the default
    loose = [p(seconds=8.0, seed=s, allow_early_end=True)[0]["token_ids"] for s in range(4)]
    assert any(ids[-1] == EOS_ID for ids in loose)  # allowed, the model ends early
    model.generation_config.allow_early_end = True  # the model's own setting
    assert [p(seconds=8.0, seed=s)[0]["token_ids"] for s in range(4)] == loose
    with pytest.raises(GenerationError, match="sound_at_once must be True or False"):
        p(seconds=2.0, sound_at_once="yes")


def test_same_seed_same_music_other_seed_other_music(pipe):
    a, b, c = (pipe(seconds=4.0, seed=s)[0]["token_ids"] for s in (5, 5, 6))
    assert a == b and a != c


def test_numpy_and_whole_float_arguments_are_taken_as_numbers(pipe):
    a = pipe(seconds=np.float32(2.5), top_k=np.int64(5), num_return_sequences=2.0, seed=np.int64(3),
             temperature=np.float64(0.8))
    b = pipe(seconds=2.5, top_k=5, num_return_sequences=2, seed=3, temperature=0.8)
    assert [o["token_ids"] for o in a] == [o["token_ids"] for o in b]


# --------------------------------------------------------------------------- outputs
def test_outputs_are_consistent(pipe):
    [o] = pipe(seconds=5.0, seed=1)
    assert set(o) == {"score", "midi", "token_ids", "seconds"}
    assert o["token_ids"][0] == BOS_ID
    expected = decode(o["token_ids"])
    back = symusic.Score.from_midi(o["midi"])
    for s in (o["score"], back):
        notes = s.tracks[0].notes.numpy()
        assert np.array_equal(notes["time"], expected.tracks[0].notes.numpy()["time"])
        assert np.array_equal(notes["pitch"], expected.tracks[0].notes.numpy()["pitch"])
    assert o["seconds"] == pytest.approx(o["score"].end() / 1000)
    assert 0 < o["seconds"] <= 5.0


@pytest.mark.parametrize("kind", ["path", "str", "bytes", "score"])
def test_prompt_kinds_give_the_same_continuation(pipe, kind):
    prompt = {"path": PROMPT, "str": str(PROMPT), "bytes": PROMPT.read_bytes(),
              "score": symusic.Score(PROMPT)}[kind]
    [o] = pipe(prompt, prompt_seconds=4.0, seconds=3.0, seed=9)
    events = cut_events(encode(PROMPT), 4.0).tolist()
    assert o["token_ids"][: len(events) + 1] == [BOS_ID, *events]
    [ref] = pipe(PROMPT, prompt_seconds=4.0, seconds=3.0, seed=9)
    assert o["token_ids"] == ref["token_ids"]
    assert 4.0 < o["seconds"] <= 7.0


def test_return_prompt_false_gives_the_continuation_alone(pipe):
    [full] = pipe(PROMPT, prompt_seconds=3.0, seconds=4.0, seed=2)
    [cont] = pipe(PROMPT, prompt_seconds=3.0, seconds=4.0, seed=2, return_prompt=False)
    n_prompt = 1 + len(cut_events(encode(PROMPT), 3.0))
    assert cont["token_ids"] == full["token_ids"][n_prompt:]
    d = ids_to_notes(full["token_ids"])
    later = d["start"] >= 300
    notes = cont["score"].tracks[0].notes.numpy()
    assert np.array_equal(notes["time"], (d["start"][later] - 300) * 10)  # 10 ticks a step
    assert np.array_equal(notes["pitch"], d["pitch"][later])
    assert np.array_equal(notes["velocity"], d["velocity"][later])  # velocity carried from the prompt
    assert cont["seconds"] == pytest.approx(full["seconds"] - 3.0)


def test_a_batch_of_prompts(pipe):
    second = str(POP909_FIXTURES[1])
    batch = pipe([PROMPT, second], prompt_seconds=6.0, seconds=2.0, seed=0, num_return_sequences=2)
    assert len(batch) == 2 and all(len(b) == 2 for b in batch)
    alone = pipe(second, prompt_seconds=6.0, seconds=2.0, seed=0, num_return_sequences=2)
    assert [o["token_ids"] for o in batch[1]] == [o["token_ids"] for o in alone]  # each item is seeded


def test_progress_and_stop_event_through_the_pipeline(pipe):
    stop, seen = threading.Event(), []

    def progress(done, total):
        seen.append(done)
        if done >= 2.0:
            stop.set()

    [o] = pipe(seconds=120.0, seed=3, progress=progress, stop_event=stop)
    assert seen == sorted(seen) and seen[-1] >= 2.0
    assert 2.0 <= o["seconds"] < 120.0 and invalid_tokens(o["token_ids"]) == []


def test_long_piece_slides_past_the_context(tmp_path):
    folder = save_tiny_model(tmp_path / "short", n_positions=64, seed=12)
    pipe = pipeline("midi-generation", model=str(folder))
    [o] = pipe(PROMPT, prompt_seconds=30.0, seconds=20.0, seed=4)  # the prompt alone is > 64 tokens
    assert len(o["token_ids"]) > 64
    assert invalid_tokens(o["token_ids"]) == []
    steps = int(shift_steps(o["token_ids"]).sum())
    assert steps == 5000 or o["token_ids"][-1] == EOS_ID


# --------------------------------------------------------------------------- bad input
@pytest.fixture
def no_generate(pipe, monkeypatch):
    """Bad input must fail before any generation starts."""

    def fail(*a, **k):
        raise AssertionError("generate() was called")

    monkeypatch.setattr(pipe.model, "generate", fail)
    return pipe


@pytest.mark.parametrize("kwargs, match", [
    ({"seconds": 0}, "seconds"), ({"seconds": 1e7}, "seconds"), ({"temperature": -1}, "temperature"),
    ({"top_p": 2}, "top_p"), ({"top_k": -2}, "top_k"), ({"num_return_sequences": 0}, "num_return_sequences"),
    ({"seconds": None}, "max_new_tokens"), ({"prompt_seconds": 2.0}, "prompt_seconds needs a prompt"),
    ({"progress": 5}, "progress"), ({"stop_event": object()}, "stop_event"),
])
def test_bad_arguments_fail_before_generation(no_generate, kwargs, match):
    with pytest.raises(GenerationError, match=match):
        no_generate(**kwargs)


@pytest.mark.parametrize("prompt, match", [
    (b"not a midi file at all", "prompt <bytes>: not a MIDI file"),
    (EDGE_FIXTURES / "test-not-a-midi-file.mid", "not a MIDI file"),
    (EDGE_FIXTURES / "test-corrupt-file-missing-byte.mid", "prompt .*truncated|prompt .*ends in the middle"),
    ("/no/such/file.mid", "no such file"),
    (EDGE_FIXTURES / "test-all-gm-percussion.mid", "has no notes"),
])
def test_bad_prompts_fail_before_generation(no_generate, prompt, match):
    with pytest.raises(HfMidiError, match=match):
        no_generate(prompt, seconds=2.0)


def test_prompt_longer_than_the_context_needs_prompt_seconds(no_generate):
    with pytest.raises(GenerationError, match=r"longer than the model's context of 256 tokens; pass prompt_seconds"):
        no_generate(PROMPT, seconds=2.0)


def test_no_notes_in_the_kept_seconds(no_generate):
    with pytest.raises(GenerationError, match="has no notes in its first 0.01 s"):
        no_generate(PROMPT, prompt_seconds=0.01, seconds=2.0)


def test_model_folder_without_a_tokenizer(tmp_path):
    folder = save_tiny_model(tmp_path / "bare", tokenizer=False)
    with pytest.raises(GenerationError, match="no MIDI tokenizer"):
        pipeline("midi-generation", model=str(folder))
    with pytest.raises(loading.ModelLoadError, match="no tokenizer"):
        loading.load_pipeline(folder)


def test_no_default_model_is_a_clear_error(monkeypatch, tmp_path):
    """A copy without the bundled model: the task registers without a default, and the loader the CLI and
    the Space use says what is missing."""
    from transformers.pipelines import PipelineRegistry

    from hf_midi.remote_code.pipeline_midi_generation import register_pipeline_task

    monkeypatch.setattr(loading, "DEFAULT_MODEL_DIR", tmp_path / "absent")
    assert loading.default_model_path() is None
    with pytest.raises(loading.ModelLoadError, match="no default model is installed"):
        loading.load_pipeline(None)
    registry = PipelineRegistry(supported_tasks={}, task_aliases={})
    register_pipeline_task(registry, default_model=loading.default_model_path())
    assert "default" not in registry.supported_tasks["midi-generation"]
    monkeypatch.setattr(loading, "DEFAULT_MODEL_DIR", Path(__file__).parents[1] / "hf_midi/pretrained/base")
    registry = PipelineRegistry(supported_tasks={}, task_aliases={})
    register_pipeline_task(registry, default_model=loading.default_model_path())
    assert registry.supported_tasks["midi-generation"]["default"]["model"][0].endswith("pretrained/base")


def test_the_bundled_model_is_the_default(monkeypatch, model_dir):
    monkeypatch.setattr(loading, "DEFAULT_MODEL_DIR", Path(model_dir))
    assert loading.default_model_path() == Path(model_dir)
    pipe = pipeline("midi-generation")
    [o] = pipe(seconds=2.0, seed=0)
    assert 0 < o["seconds"] <= 2.0


# --------------------------------------------------------------------------- LSTM, Hub, import
def test_lstm_through_the_pipeline(tmp_path):
    from hf_midi.remote_code import modeling_musicrnn as modeling

    config = modeling.MusicRNNConfig(embedding_size=32, hidden_size=48, num_layers=2)
    torch.manual_seed(0)
    model = modeling.MusicRNNForCausalLM(config).eval()
    model.generation_config.update(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, do_sample=True)
    model.save_pretrained(tmp_path)
    MidiTokenizer().save_pretrained(tmp_path)
    pipe = pipeline("midi-generation", model=str(tmp_path))
    out = pipe(PROMPT, prompt_seconds=3.0, seconds=3.0, seed=8, num_return_sequences=2)
    events = [BOS_ID, *cut_events(encode(PROMPT), 3.0).tolist()]
    torch.manual_seed(8)
    ref = pipe.model.generate(
        torch.tensor([events] * 2), do_sample=True, max_new_tokens=600,
        logits_processor=LogitsProcessorList([PerformanceGrammarLogitsProcessor(), MusicTimeLimitLogitsProcessor(3.0)]),
        stopping_criteria=StoppingCriteriaList([MusicTimeStoppingCriteria(3.0)]),
    )
    assert [o["token_ids"] for o in out] == [strip(r) for r in ref.tolist()]
    assert all(invalid_tokens(o["token_ids"]) == [] for o in out)


def test_import_registers_everything_plainly_and_once():
    """``import hf_midi`` registers with transformers' documented calls: the task is there at once, the LSTM
    loads through the Auto classes, the tokenizer by name; no import hook is left in sys.meta_path, and
    nothing warns about registering twice."""
    code = (
        "import sys, hf_midi\n"
        "from transformers.pipelines import PIPELINE_REGISTRY\n"
        "from transformers import AutoConfig, AutoModelForCausalLM\n"
        "from transformers.models.auto.tokenization_auto import tokenizer_class_from_name\n"
        "assert 'midi-generation' in PIPELINE_REGISTRY.get_supported_tasks()\n"
        "cfg = AutoConfig.for_model('musicrnn', num_layers=1, hidden_size=8, embedding_size=8)\n"
        "assert type(AutoModelForCausalLM.from_config(cfg)).__name__ == 'MusicRNNForCausalLM'\n"
        "assert tokenizer_class_from_name('MidiTokenizer') is hf_midi.MidiTokenizer\n"
        "assert not [f for f in sys.meta_path if type(f).__module__.startswith('hf_midi')]\n"
        "import hf_midi.remote_code.pipeline_midi_generation as m; m.register_pipeline_task(); hf_midi._register()\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    assert "already registered" not in r.stderr


def test_exported_folder_runs_as_hub_custom_code_without_hf_midi(pipe, model_dir, tmp_path):
    """The pipeline file and the files it imports, copied into a model folder, work where hf_midi
    cannot be imported, and give the same music for the same seed."""
    from hf_midi import hub

    folder = hub.export_model_folder(model_dir, tmp_path / "export")
    [ref] = pipe(PROMPT, prompt_seconds=6.0, seconds=2.0, seed=5)
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'hf_midi' or name.startswith('hf_midi.'):\n"
        "            raise ImportError('hf_midi is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import torch; torch.set_num_threads(1)\n"
        "from transformers import pipeline\n"
        f"pipe = pipeline('midi-generation', model={str(folder)!r}, trust_remote_code=True)\n"
        f"[o] = pipe({str(PROMPT)!r}, prompt_seconds=6.0, seconds=2.0, seed=5)\n"
        "print(type(pipe).__module__, o['token_ids'])\n"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                       timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    module, ids = r.stdout.strip().split(" ", 1)
    assert not module.startswith("hf_midi")
    assert ids == str(ref["token_ids"])


def test_task_registers_whatever_the_import_order():
    # Importing the pipeline module first used to leave the task unregistered (a circular import in
    # the registration hook); check in a fresh process.
    import subprocess
    import sys

    code = ("import hf_midi.remote_code.pipeline_midi_generation\n"
            "from transformers.pipelines import PIPELINE_REGISTRY\n"
            "assert 'midi-generation' in PIPELINE_REGISTRY.get_supported_tasks()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_bundled_models_by_name_compute_in_float32(monkeypatch, model_dir, tmp_path):
    """``--model base``: a bundled model's name resolves to its folder (unless such a folder exists
    here); weights stored in bfloat16 are computed in float32 on the CPU."""
    from hf_midi.hub import bundle_model

    root = tmp_path / "pretrained"
    bundle_model(model_dir, root / "small")
    monkeypatch.setattr(loading, "DEFAULT_MODEL_DIR", root / "base")
    bundle_model(model_dir, dtype="bfloat16")  # no out: the default model's folder
    assert (root / "base" / "model.safetensors").is_file()
    assert set(loading.bundled_models()) == {"base", "default", "small"}
    assert loading.resolve_model("base") == root / "base" == loading.resolve_model("default")
    assert loading.resolve_model("small") == root / "small"
    assert loading.resolve_model(None) == root / "base"
    assert loading.resolve_model("user/repo") == "user/repo"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "base").mkdir()
    assert loading.resolve_model("base") == "base"  # a folder of that name here wins
    (tmp_path / "base").rmdir()
    import json

    assert json.loads((root / "base" / "config.json").read_text())["dtype"] == "bfloat16"
    pipe = loading.load_pipeline("base")
    assert pipe.model.dtype == torch.float32
    [o] = pipe(seconds=2.0, seed=0)
    assert 0 < o["seconds"] <= 2.0


def test_the_stuck_note_guard_defaults_to_the_models_generation_config(tmp_path):
    """A model's generation_config.json may carry ``max_note_seconds`` (the bundled base does): the
    pipeline applies it unless the call says otherwise (None: off)."""
    import json

    from hf_midi.remote_code import codec

    folder = save_tiny_model(tmp_path / "m", seed=4)
    cfg = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**cfg, "max_note_seconds": 1.5}))
    pipe = loading.load_pipeline(folder)
    assert model_note_limit(pipe.model) == 1.5

    def longest(**kw):
        [o] = pipe(seconds=20.0, seed=0, **kw)
        n = codec.ids_to_notes([t for t in o["token_ids"] if t < 390])
        return float((n["end"] - n["start"]).max()) / 100

    assert longest() <= 2.5
    assert longest(max_note_seconds=None) > 4.0  # the control: this random model holds notes long
    with pytest.raises(GenerationError, match="max_note_seconds must be"):
        pipe(seconds=2.0, max_note_seconds=-1)


def test_the_public_names_are_at_the_top_and_each_has_one_home():
    """`from hf_midi import ...`: the loaders, the generation loop, the fast loop, the streamer and every
    processor, the same objects as in their homes; and each module's ``__all__`` lists only what it
    defines (no file re-exports another's names, so a caller imports from the name's home)."""
    import ast
    import importlib
    import pkgutil

    import hf_midi
    import hf_midi.remote_code

    homes = {}
    for info in pkgutil.iter_modules(hf_midi.remote_code.__path__):
        module = importlib.import_module(f"hf_midi.remote_code.{info.name}")
        tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
        defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        defined |= {t.id for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                    for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}
        for name in getattr(module, "__all__", ()):
            assert name in defined, f"{info.name}.__all__ lists {name}, which it does not define"
            homes[name] = module
    homes |= {name: loading for name in ("load_model", "load_pipeline", "default_model_path")}
    for name in ("load_model", "load_pipeline", "generate_music", "fast_sample", "MusicStreamer", "HfMidiError",
                 "SoundAtOnceLogitsProcessor", "MaxNoteLengthLogitsProcessor", "MaxSilenceLogitsProcessor",
                 "PerformanceGrammarLogitsProcessor", "MusicTimeLimitLogitsProcessor", "MusicTimeStoppingCriteria"):
        assert name in hf_midi.__all__
    for name in hf_midi.__all__:
        if name != "__version__":
            assert getattr(hf_midi, name) is getattr(homes[name], name), name
    assert hf_midi.MidiError is hf_midi.HfMidiError  # the root's old name, kept


def test_a_newcomers_first_calls_print_no_warning_and_no_weights_bar(capfd):
    """pipeline("midi-generation") with no model (the bundled default) warns nothing and shows no weights
    bar, nor does loading a bundled model by name (each takes well under a second); the bar's setting is
    left as it was, and a Hub id would still get its bar (weights_bar: only a local folder is quiet)."""
    import subprocess

    code = ("import hf_midi\nfrom transformers import pipeline\npipeline('midi-generation')\n"
            "from transformers.utils import logging as l\nhf_midi.load_pipeline('small')\n"
            "print('bar on:', l.is_progress_bar_enabled())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert "No model was supplied" not in done.stderr
    assert "Loading weights" not in done.stderr  # neither base's (100 tensors) nor small's (52)
    assert "bar on: True" in done.stdout
    from transformers.utils import logging as hf_logging

    from hf_midi.remote_code.pipeline_midi_generation import weights_bar

    with weights_bar("someone/some-model"):  # not a folder here: a download, the bar stays on
        assert hf_logging.is_progress_bar_enabled()


def test_every_face_reads_generation_defaults_from_their_one_home(tmp_path):
    """The CLI, generate_music, the pipeline (its call and stream()), the Space and the generation config
    exported beside a trained model take their defaults from GENERATION_DEFAULTS."""
    import inspect

    from hf_midi import cli
    from hf_midi.remote_code.defaults import GENERATION_DEFAULTS as d
    from hf_midi.remote_code.generation import generate_music
    from hf_midi.training.models import build_model, generation_config

    args = cli.build_parser("generate").parse_args(["generate", "-o", "x.mid"])
    assert (args.seconds, args.threads) == (d.seconds, d.threads)
    for fn, names in ((generate_music, ("seconds", "max_silence_seconds", "sound_at_once", "allow_early_end")),
                      (MidiGenerationPipeline._forward, ("seconds", "max_silence_seconds", "threads")),
                      (MidiGenerationPipeline.stream, ("chunk_seconds",))):
        params = inspect.signature(fn).parameters
        assert all(params[n].default == getattr(d, n) for n in names), fn.__name__
    gc = generation_config(build_model("tiny").config)
    assert (gc.top_p, gc.top_k, gc.temperature, gc.max_new_tokens) == (d.top_p, d.top_k, d.temperature,
                                                                      d.max_new_tokens)
    assert (gc.sound_at_once, gc.allow_early_end) == (d.sound_at_once, d.allow_early_end)
    space = (ROOT / "spaces_app" / "app.py").read_text(encoding="utf-8")
    assert "gr.Slider(MIN_SECONDS, MAX_SECONDS, value=GENERATION_DEFAULTS.seconds" in space
