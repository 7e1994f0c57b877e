"""Packed corpora (hf_midi.data.packed) and the GPU recipe rehearsed on the CPU (recipes/gpu_recipe.sh)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import POP909_FIXTURES

from hf_midi.data.augmentation import transpose_ids
from hf_midi.data.packed import (
    PackedError,
    load_eval,
    load_train,
    pack_corpus,
    read_manifest,
    read_prepared,
    transpose_windows,
)
from hf_midi.remote_code import codec
from hf_midi.remote_code.codec import BOS_ID, EOS_ID


def test_the_stream_holds_every_training_piece_framed(prepared, packed):
    ids = load_train(packed)
    pieces = read_prepared(prepared, "train")
    assert len(ids) == sum(len(x) + 2 for _, x in pieces)
    starts = np.flatnonzero(ids == BOS_ID)
    ends = np.flatnonzero(ids == EOS_ID)
    assert len(starts) == len(ends) == len(pieces)
    got = sorted(tuple(ids[s + 1 : e]) for s, e in zip(starts, ends))
    assert got == sorted(tuple(x.tolist()) for _, x in pieces)
    manifest = read_manifest(packed)
    assert manifest["train"]["tokens"] == len(ids) and manifest["train"]["sources"]["pop"]["pieces"] == len(pieces)


def test_evaluation_sets_keep_their_pieces_and_paths(prepared, packed):
    got = load_eval(packed, "giantmidi_test")
    want = read_prepared(prepared, "test")
    assert [p for p, _ in got] == [p for p, _ in want]
    for (_, g), (_, w) in zip(got, want):
        assert g[0] == BOS_ID and g[-1] == EOS_ID and np.array_equal(g[1:-1], w)


def test_a_budget_draws_whole_pieces_until_it_is_spent(prepared, tmp_path):
    pieces = read_prepared(prepared, "train")
    out = pack_corpus(tmp_path / "small", {"pop": (str(prepared), "train")}, budget_mib=0.004, xz_preset=1,
                      progress=False)
    n = out["train"]["sources"]["pop"]["pieces"]
    assert 0 < n < len(pieces)
    assert out["train"]["tokens"] * 0.712 <= 0.004 * 2**20


def test_a_damaged_part_is_named(packed, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(packed, copy)
    part = copy / "train-001.u16.xz"
    part.write_bytes(part.read_bytes()[:-5] + b"xxxxx")
    with pytest.raises(PackedError, match="train-001.u16.xz: sha256 differs"):
        load_train(copy)
    part.unlink()
    with pytest.raises(PackedError, match="train-001.u16.xz: missing"):
        load_train(copy)
    with pytest.raises(PackedError, match="no manifest.json"):
        load_train(tmp_path)
    with pytest.raises(PackedError, match="no evaluation set 'nope'"):
        load_eval(packed, "nope")


def test_window_transposition_is_exact_and_stays_on_the_keyboard():
    ids = codec.encode(POP909_FIXTURES[0])[:400]
    x = torch.as_tensor(np.stack([ids, ids, ids]), dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(20):
        y = transpose_windows(x, -5, 6, gen)
        for row in y:
            k = int((row - x[0])[x[0] < 256][0])
            seen.add(k)
            assert np.array_equal(row.numpy(), transpose_ids(ids, k))  # the codec's exact transposition
    assert len(seen) > 5
    # A window that reaches the top of the keyboard can only go down.
    top = torch.tensor([[127, 128 + 127, 300]])
    assert all(int(transpose_windows(top, -5, 6, gen)[0, 0]) <= 127 for _ in range(20))


def test_pack_cli_names_a_bad_source(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "hf_midi.data.packed", str(tmp_path / "o"), "--train",
                           f"x={tmp_path}:train"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no data/train-*.parquet" in proc.stderr
    assert not (tmp_path / "o").exists()
