"""MidiBlockStream / iter_pieces over a dataset prepared from the committed POP909 fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import POP909_FIXTURES

from hf_midi import HfMidiError, MidiTokenizer
from hf_midi.data.augmentation import AugmentConfig, augment_performance, transpose_ids
from hf_midi.data.cleaning import NO_CLEAN
from hf_midi.data.prepare import PrepareConfig, prepare_dataset
from hf_midi.data.stream import MidiBlockStream, iter_pieces, piece_rng
from hf_midi.remote_code import codec
from hf_midi.remote_code.codec import BOS_ID, EOS_ID, PAD_ID

pytest.importorskip("datasets")
NO_SHUFFLE = dict(shuffle_buffer=0, piece_shuffle_buffer=0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """name -> (bytes, sha256, split) of the fixture files."""
    import csv
    import hashlib

    with open(POP909_FIXTURES[0].parent / "split.csv", newline="") as f:
        split = {r["path"]: r["split"] for r in csv.DictReader(f)}
    return {p.name: (p.read_bytes(), hashlib.sha256(p.read_bytes()).hexdigest(), split[p.name])
            for p in POP909_FIXTURES}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Pre-tokenised (so it has both `midi` and `input_ids`): train 5 files in 4 shards, validation 2 in 2."""
    src = POP909_FIXTURES[0].parent
    out = tmp_path_factory.mktemp("data") / "pop"
    # The files as they are (no cleaning): these tests compare what streams with the files' own encodings.
    prepare_dataset(src, out, PrepareConfig(splits_file=str(src / "split.csv"), license="mit", pretokenize=True,
                                            num_workers=0, progress=False, clean=NO_CLEAN))
    return str(out)


@pytest.fixture(scope="module")
def tok():
    return MidiTokenizer()


def _framed(data: bytes, sustain="events") -> np.ndarray:
    return np.concatenate(([BOS_ID], codec.encode(data, sustain=sustain), [EOS_ID]))


def _ids(blocks) -> list[np.ndarray]:
    return [b["input_ids"].numpy() for b in blocks]


def _longest(corpus) -> int:
    return max(len(_framed(d)) for d, _, _ in corpus.values())


def _whole_pieces(blocks) -> list[tuple]:
    """Crop mode with blocks longer than any piece: each block is one whole piece, then padding."""
    return [tuple(b[b != PAD_ID].tolist()) for b in _ids(blocks)]


def test_blocks_shape_and_packing_in_stored_order(dataset, corpus, tok):
    L = 256
    for pretok in (True, False):
        blocks = list(MidiBlockStream(dataset, "train", tok, L, use_pretokenized=pretok, **NO_SHUFFLE))
        for b in blocks:
            assert set(b) == {"input_ids", "labels", "attention_mask"}
            assert all(v.dtype == torch.long and v.shape == (L,) for v in b.values())
            assert torch.equal(b["labels"], b["input_ids"]) and bool(b["attention_mask"].all())
        # Stored order: shard files in order, rows in order; pieces framed and packed with no padding.
        import pyarrow.parquet as pq

        files = sorted(Path(dataset, "data").glob("train-*.parquet"))
        paths = [p for f in files for p in pq.read_table(f, columns=["path"]).column(0).to_pylist()]
        stream = np.concatenate([_framed(corpus[p][0]) for p in paths])
        n = len(stream) // L
        assert np.array_equal(np.concatenate(_ids(blocks)), stream[: n * L])


def test_decoded_block_notes_are_source_notes(dataset, corpus, tok):
    """Shuffled blocks: each piece segment of a block, decoded, gives notes of its source file."""
    pieces = {name: _framed(d) for name, (d, _, s) in corpus.items() if s == "train"}
    checked = 0
    for block in _ids(MidiBlockStream(dataset, "train", tok, 200, shuffle_buffer=16, piece_shuffle_buffer=4)):
        cuts = np.flatnonzero((block == BOS_ID) | (block == EOS_ID))
        for seg in np.split(block, np.concatenate((cuts, cuts + 1))):
            if len(seg) < 20:
                continue
            hits = [(n, i) for n, p in pieces.items() for i in _find(p, seg)]
            assert len(hits) >= 1, "a block segment that is in no source piece"
            name, at = hits[0]
            src = codec.ids_to_notes(pieces[name])
            offset = int(codec.shift_steps(pieces[name][:at]).sum())
            got = codec.ids_to_notes(seg)
            onsets = set(zip((src["start"]).tolist(), src["pitch"].tolist()))
            for start, pitch in zip(got["start"].tolist(), got["pitch"].tolist()):
                # notes the segment opens itself (NOTE_ON inside it) start where the source has them
                assert (start + offset, pitch) in onsets
                checked += 1
    assert checked > 1000


def _find(hay: np.ndarray, needle: np.ndarray) -> list[int]:
    h, n = hay.astype(np.int16).tobytes(), needle.astype(np.int16).tobytes()
    out, i = [], h.find(n)
    while i >= 0:
        if i % 2 == 0:
            out.append(i // 2)
        i = h.find(n, i + 1)
    return out


def test_crop_mode_pads_short_pieces(dataset, corpus, tok):
    L = _longest(corpus) + 10
    blocks = list(MidiBlockStream(dataset, "validation", tok, L, mode="crop", **NO_SHUFFLE))
    assert len(blocks) == 2
    for b in blocks:
        pad = b["input_ids"] == PAD_ID
        assert pad.any() and torch.equal(b["attention_mask"], (~pad).long())
        assert bool((b["labels"][pad] == -100).all()) and torch.equal(b["labels"][~pad], b["input_ids"][~pad])
    expected = sorted(tuple(_framed(d).tolist()) for d, _, s in corpus.values() if s == "validation")
    assert sorted(_whole_pieces(blocks)) == expected
    # Crops of a long piece are windows of it, chosen per piece and epoch.
    crops = _ids(MidiBlockStream(dataset, "train", tok, 64, mode="crop", shuffle_buffer=0))
    pieces = [_framed(d) for d, _, s in corpus.values() if s == "train"]
    assert len(crops) == 5 and all(any(_find(p, c) for p in pieces) for c in crops)


def test_transposition_is_exact(dataset, corpus, tok):
    L = _longest(corpus) + 10
    for s in (-2, 3, 45, -50):  # +-45/50 push notes out of 0..127: they are dropped
        aug = AugmentConfig(transpose=(s, s), stretch=(1.0, 1.0))
        expected = sorted(
            tuple(np.concatenate(([BOS_ID], codec.performance_to_ids(
                codec.transpose(codec.score_to_performance(codec.load_score(d)), s)), [EOS_ID])).tolist())
            for d, _, sp in corpus.values() if sp == "train"
        )
        for pretok in (False, True):  # parse the MIDI / shift the stored ids
            blocks = MidiBlockStream(dataset, "train", tok, L, mode="crop", augment=aug, use_pretokenized=pretok,
                                   **NO_SHUFFLE)
            assert blocks.use_ids is pretok
            assert sorted(_whole_pieces(blocks)) == expected, (s, pretok)
    assert min(len(p) for p in expected) < min(len(_framed(d)) for d, _, _ in corpus.values())


def test_stretch_happens_before_quantisation(dataset, corpus, tok):
    L = _longest(corpus) * 2
    aug = AugmentConfig(transpose=(0, 0), stretch=(1.37, 1.37))
    blocks = MidiBlockStream(dataset, "train", tok, L, mode="crop", augment=aug, **NO_SHUFFLE)
    assert blocks.use_ids is False  # stretch needs the times: the MIDI is parsed
    got = {p[1:40] for p in _whole_pieces(blocks)}
    differs = 0
    for d, _, sp in corpus.values():
        if sp != "train":
            continue
        perf = codec.score_to_performance(codec.load_score(d))
        exact = codec.performance_to_ids(codec.stretch(perf, 1.37))
        assert tuple(exact[:39].tolist()) in got
        notes = codec.ids_to_notes(exact)
        onsets = np.unique(np.floor(perf.onset * 1.37 * 100 + 0.5).astype(np.int64))
        assert np.array_equal(np.unique(notes["start"]), onsets)  # round(t * f), not round(t) * f
        steps = np.floor(perf.onset * 100 + 0.5)
        differs += int((np.floor(steps * 1.37 + 0.5) != np.floor(perf.onset * 137 + 0.5)).sum())
    assert differs > 0  # the check above can tell the two orders apart


def test_random_augmentation_per_piece_is_reproducible(dataset, corpus, tok):
    L = _longest(corpus) * 2
    aug = AugmentConfig(transpose=(-3, 3), stretch=(0.9, 1.1), velocity_jitter=5)
    got = set(_whole_pieces(MidiBlockStream(dataset, "train", tok, L, mode="crop", augment=aug, seed=7, epoch=2)))
    expected = set()
    for d, sha, sp in corpus.values():
        if sp == "train":
            perf = augment_performance(codec.score_to_performance(codec.load_score(d)), aug, piece_rng(7, 2, sha))
            expected.add(tuple(np.concatenate(([BOS_ID], codec.performance_to_ids(perf), [EOS_ID])).tolist()))
    assert got == expected
    other = set(_whole_pieces(MidiBlockStream(dataset, "train", tok, L, mode="crop", augment=aug, seed=7, epoch=3)))
    assert not (other & got)


def test_transpose_ids_matches_encoding(corpus):
    for d, _, _ in corpus.values():
        perf = codec.score_to_performance(codec.load_score(d))
        ids = codec.performance_to_ids(perf)
        for s in (-60, -5, 0, 7, 40):
            assert np.array_equal(transpose_ids(ids, s), codec.performance_to_ids(codec.transpose(perf, s)))


def test_deterministic_for_seed_and_epoch(dataset, tok):
    def run(**kw):
        return np.stack(_ids(MidiBlockStream(dataset, "train", tok, 128, augment=AugmentConfig(), **kw)))

    a, b = run(seed=1, epoch=0), run(seed=1, epoch=0)
    assert np.array_equal(a, b)
    c, d = run(seed=1, epoch=1), run(seed=2, epoch=0)
    assert not np.array_equal(a[: len(c)], c[: len(a)]) and not np.array_equal(a[: len(d)], d[: len(a)])
    s = MidiBlockStream(dataset, "train", tok, 128, augment=AugmentConfig(), seed=1)
    s.set_epoch(1)
    assert np.array_equal(np.stack(_ids(s)), c)


def _loader_pieces(dataset, split, tok, L, rank, world, workers=2):
    stream = MidiBlockStream(dataset, split, tok, L, mode="crop", rank=rank, world_size=world, **NO_SHUFFLE)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers)
    return [tuple(b["input_ids"][b["input_ids"] != PAD_ID].tolist()) for b in loader]


@pytest.mark.parametrize("split", ["train", "validation"])  # 4 shards: whole files; 2 shards: every 4th row
def test_two_ranks_two_workers_disjoint_and_complete(dataset, corpus, tok, split):
    L = _longest(corpus) + 10
    per_rank = [_loader_pieces(dataset, split, tok, L, rank, 2) for rank in (0, 1)]
    everything = per_rank[0] + per_rank[1]
    assert len(everything) == len(set(everything))  # disjoint
    expected = {tuple(_framed(d).tolist()) for d, _, s in corpus.values() if s == split}
    assert set(everything) == expected  # complete


def test_iter_pieces(dataset, corpus, tok):
    got = dict(iter_pieces(dataset, "validation", tok))
    assert {k: v.tolist() for k, v in got.items()} == {
        n: _framed(d).tolist() for n, (d, _, s) in corpus.items() if s == "validation"}
    extend = MidiTokenizer(sustain="extend")  # ids stored with "events": the MIDI is parsed instead
    got = dict(iter_pieces(dataset, "validation", extend))
    assert all(np.array_equal(v, _framed(corpus[k][0], "extend")) for k, v in got.items())
    halves = [dict(iter_pieces(dataset, "train", tok, rank=r, world_size=2)) for r in (0, 1)]
    assert not set(halves[0]) & set(halves[1]) and len(halves[0]) + len(halves[1]) == 5


def test_resume_in_process(dataset, tok):
    kw = dict(augment=AugmentConfig(), shuffle_buffer=8, piece_shuffle_buffer=2, seed=3, epoch=1)
    full = _ids(MidiBlockStream(dataset, "train", tok, 96, **kw))
    s = MidiBlockStream(dataset, "train", tok, 96, **kw)
    it = iter(s)
    head = [next(it)["input_ids"].numpy() for _ in range(17)]
    state = s.state_dict()
    assert state["epoch"] == 1 and state["blocks_per_worker"] == [17]
    resumed = MidiBlockStream(dataset, "train", tok, 96, **kw | {"epoch": 0})
    resumed.load_state_dict(state)
    rest = _ids(resumed)
    assert len(head) + len(rest) == len(full)
    assert all(np.array_equal(a, b) for a, b in zip(head + rest, full))
    resumed.set_epoch(2)  # another epoch starts from its beginning
    assert len(_ids(resumed)) > len(rest)


@pytest.mark.parametrize("consumed", [3, 6])
def test_resume_with_dataloader_workers(dataset, tok, consumed):
    kw = dict(augment=AugmentConfig(), shuffle_buffer=8, piece_shuffle_buffer=2, seed=5)

    def batches(stream):
        loader = torch.utils.data.DataLoader(stream, batch_size=4, num_workers=2)
        return [b["input_ids"] for b in loader]

    stream = MidiBlockStream(dataset, "train", tok, 64, **kw)
    full = batches(stream)
    state = stream.dataloader_state(consumed, batch_size=4, num_workers=2)
    resumed = MidiBlockStream(dataset, "train", tok, 64, **kw)
    resumed.load_state_dict(state)
    rest = batches(resumed)
    assert len(rest) == len(full) - consumed
    assert all(torch.equal(a, b) for a, b in zip(rest, full[consumed:]))
    # Resume again, later in the same epoch: the count runs from the epoch's start.
    again = MidiBlockStream(dataset, "train", tok, 64, **kw)
    again.load_state_dict(resumed.dataloader_state(consumed + 5, batch_size=4, num_workers=2))
    assert all(torch.equal(a, b) for a, b in zip(batches(again), full[consumed + 5 :], strict=True))
    with pytest.raises(ValueError, match="same number"):
        next(iter(torch.utils.data.DataLoader(resumed, batch_size=4, num_workers=0)))


def test_bad_arguments(dataset, tok, tmp_path):
    with pytest.raises(HfMidiError, match="no split 'dev'.*train"):
        MidiBlockStream(dataset, "dev", tok, 64)
    with pytest.raises(ValueError, match="block_size"):
        MidiBlockStream(dataset, "train", tok, 1)
    with pytest.raises(ValueError, match="mode"):
        MidiBlockStream(dataset, "train", tok, 64, mode="window")
    with pytest.raises(ValueError, match="rank"):
        MidiBlockStream(dataset, "train", tok, 64, rank=2, world_size=2)
    with pytest.raises(ValueError, match="transpose"):
        AugmentConfig(transpose=(3, -3))
    with pytest.raises(HfMidiError, match="sustain='events'"):
        MidiBlockStream(dataset, "train", MidiTokenizer(sustain="extend"), 64, use_pretokenized=True)
    with pytest.raises(HfMidiError, match="cannot be opened"):
        MidiBlockStream(str(tmp_path / "missing"), "train", tok, 64)
    s = MidiBlockStream(dataset, "train", tok, 64)
    with pytest.raises(ValueError, match="block_size"):
        MidiBlockStream(dataset, "train", tok, 32).load_state_dict(s.state_dict())


def test_corrupt_row_is_skipped(dataset, corpus, tok, tmp_path, caplog):
    """A Hub dataset not made by prepare may hold a bad file: it is logged and skipped."""
    import pyarrow.parquet as pq

    bad = tmp_path / "bad"
    shutil.copytree(dataset, bad)
    shard = sorted((bad / "data").glob("validation-*.parquet"))[0]
    table = pq.read_table(shard)
    midi = table.column("midi").to_pylist()
    midi[0] = midi[0][:100]  # truncated
    table = table.set_column(table.schema.get_field_index("midi"), "midi", [midi])
    pq.write_table(table, shard)
    got = dict(iter_pieces(str(bad), "validation", tok, use_pretokenized=False))
    assert len(got) == 1 and "truncated" in caplog.text
