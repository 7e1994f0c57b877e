"""Shared test fixtures: committed MIDI files, and ../shared/data when it is there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
POP909_FIXTURES = sorted((FIXTURES / "pop909").glob("*.mid"))
EDGE_FIXTURES = FIXTURES / "edge"
# CI clones main with shared/ beside it; HF_MIDI_SHARED_DATA points elsewhere if needed.
SHARED_DATA = Path(os.environ.get("HF_MIDI_SHARED_DATA", ROOT.parent / "shared" / "data"))


def split_files(folder: Path, split_csv: str, split: str = "test") -> list[Path]:
    """The files of one split of a shared corpus, as its split file lists them."""
    import csv

    with open(folder / split_csv, newline="") as f:
        return [folder / r["path"] for r in csv.DictReader(f) if r["split"] == split]

requires_shared_data = pytest.mark.skipif(
    not (SHARED_DATA / "pop909").is_dir(),
    reason=f"needs the shared MIDI corpora at {SHARED_DATA} (absent here; CI has them)",
)

# Two threads on two shared cores slowed torch 4-35x when another process was busy.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# For tests that start python themselves: one thread, offline, whatever the caller's environment says.
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def pop909_files() -> list[Path]:
    return list(POP909_FIXTURES)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "pop909").is_dir():
        pytest.skip(f"needs the shared MIDI corpora at {SHARED_DATA} (absent here; CI has them)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> str:
    """The 9 committed POP909 fixtures prepared once (5 train, 2 validation, 2 test), for model tests; the
    files as they are (``NO_CLEAN``), so that tests can compare with the files' own encodings."""
    from hf_midi.data.cleaning import NO_CLEAN
    from hf_midi.data.prepare import PrepareConfig, prepare_dataset

    src = POP909_FIXTURES[0].parent
    out = tmp_path_factory.mktemp("data") / "pop"
    prepare_dataset(src, out, PrepareConfig(splits_file=str(src / "split.csv"), license="mit", num_workers=0,
                                            progress=False, clean=NO_CLEAN))
    return str(out)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    """The same fixtures prepared with their event ids (``--pretokenize``), as packed corpora are made from."""
    from hf_midi.data.cleaning import NO_CLEAN
    from hf_midi.data.prepare import PrepareConfig, prepare_dataset

    src = POP909_FIXTURES[0].parent
    out = tmp_path_factory.mktemp("prep") / "pop"
    prepare_dataset(src, out, PrepareConfig(splits_file=str(src / "split.csv"), license="mit", num_workers=0,
                                            progress=False, pretokenize=True, clean=NO_CLEAN))
    return out


@pytest.fixture(scope="session")
def packed(prepared, tmp_path_factory) -> Path:
    """A packed corpus of them: train as the stream; test and validation as the evaluation sets the GPU
    recipe names (giantmidi_test, giantmidi_val)."""
    from hf_midi.data.packed import pack_corpus

    out = tmp_path_factory.mktemp("packed") / "corpus"
    pack_corpus(out, {"pop": (str(prepared), "train")},
                {"giantmidi_test": (str(prepared), "test"), "giantmidi_val": (str(prepared), "validation")},
                xz_preset=1, progress=False)
    return out


# --------------------------------------------------------------------------- in-process training runs
def reset_accelerate() -> None:
    """Each in-process training run builds its own Accelerator; accelerate keeps process-wide singletons."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.fixture
def fresh_accelerate():
    reset_accelerate()
    yield
    reset_accelerate()


# --------------------------------------------------------------------------- the one tiny model
def tiny_model(n_positions: int = 256, vocab_size: int = 393, seed: int = 0):
    """A random 2-layer, 64-wide GPT-2 over the event vocabulary, with a sampling generation config."""
    import torch
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

    from hf_midi.remote_code.codec import BOS_ID, EOS_ID, PAD_ID

    cfg = GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=64, n_layer=2, n_head=2,
                     bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg).eval()
    model.generation_config = GenerationConfig(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
                                               do_sample=True)
    return model


def save_tiny_model(folder, n_positions: int = 256, vocab_size: int = 393, seed: int = 0, tokenizer: bool = True,
                    plays_on: bool = False):
    """``tiny_model`` as a model folder (config, safetensors, generation config, the tokenizer unless
    ``tokenizer=False``). ``plays_on``: its generation config suppresses ``<eos>`` (with ``<pad>`` and
    ``<bos>``), since a random model ends a piece within seconds where a trained one plays on, so that
    pieces have the asked length."""
    from hf_midi.remote_code.codec import BOS_ID, EOS_ID, PAD_ID
    from hf_midi.remote_code.tokenization_midi import MidiTokenizer

    model = tiny_model(n_positions, vocab_size, seed)
    if plays_on:
        model.generation_config.suppress_tokens = [PAD_ID, BOS_ID, EOS_ID]
        model.generation_config.max_new_tokens = 1024
    model.save_pretrained(folder)
    if tokenizer:
        MidiTokenizer(model_max_length=n_positions).save_pretrained(folder)
    return Path(folder)
