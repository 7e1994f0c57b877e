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

requires_shared_data = pytest.mark.skipif(
    not (SHARED_DATA / "pop909").is_dir(),
    reason=f"needs the shared MIDI corpora at {SHARED_DATA} (absent here; CI has them)",
)

# Two threads on two shared cores slowed torch 4-35x when another process was busy.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
    """The 9 committed POP909 fixtures prepared once (5 train, 2 validation, 2 test), for model tests."""
    from hf_midi.data_prepare import PrepareConfig, prepare_dataset

    src = POP909_FIXTURES[0].parent
    out = tmp_path_factory.mktemp("data") / "pop"
    prepare_dataset(src, out, PrepareConfig(splits_file=str(src / "split.csv"), license="mit", num_workers=0,
                                            progress=False))
    return str(out)
