"""Training data: a prepared MIDI dataset (``hf-midi prepare``) streamed as fixed-length token blocks.

``MidiBlockStream(dataset, split, tokenizer, block_size, ...)`` is a
``torch.utils.data.IterableDataset`` of ``{"input_ids", "labels", "attention_mask"}`` (LongTensors of
``block_size``). What happens to each worker's share of the data, in order::

    parquet shards (order shuffled per seed+epoch)
      -> split_dataset_by_node(rank x DataLoader worker)   disjoint, together complete
      -> arrow record batches                              datasets.load_dataset(..., streaming=True)
      -> piece shuffle buffer                              rows, not yet parsed
      -> parse + augment + encode                          or the pre-tokenised ``input_ids`` column
      -> <bos> ids <eos>, packed into blocks               (or one random crop a piece)
      -> block shuffle buffer -> tensors

Determinism: the block sequence of a worker depends only on (dataset files, seed, epoch, rank,
world_size, DataLoader worker count, and the arguments). Every random choice about a piece
(transposition, stretch, velocity jitter, crop start) comes from a generator seeded by
``(seed, epoch, sha256 of the piece)``, so it does not depend on where the piece lands.

Resume: ``state_dict()`` records the epoch and how many blocks each worker has yielded; after
``load_state_dict`` the next pass of that epoch starts exactly at the next block. Resuming re-reads
the worker's part of the epoch up to that point through the data pipeline only (at data speed:
parquet read + encode, or just the read for pre-tokenised data), never through a model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from ..remote_code import codec
from ..remote_code.codec import BOS_ID, EOS_ID, PAD_ID
from ..remote_code.errors import HfMidiError
from .augmentation import AugmentConfig, augment_performance, transpose_ids

logger = logging.getLogger(__name__)
MODES = ("pack", "crop")
STATE_FORMAT = "hf_midi.MidiBlockStream/1"


def piece_rng(seed: int, epoch: int, sha256: str) -> np.random.Generator:
    """The generator of every random choice about one piece in one epoch (augmentation, then crop)."""
    return np.random.default_rng([seed, epoch, int(sha256[:16], 16)])


def _shuffled(items: Iterator, size: int, rng: np.random.Generator) -> Iterator:
    """A shuffle buffer: fill ``size`` slots, then each new item swaps out a random one."""
    if size <= 1:
        yield from items
        return
    buf: list = []
    draws = iter(())
    for x in items:
        if len(buf) < size:
            buf.append(x)
            continue
        j = next(draws, None)
        if j is None:  # draw in batches: one rng call per 1024 items
            draws = iter(rng.integers(0, size, 1024).tolist())
            j = next(draws)
        buf[j], x = x, buf[j]
        yield x
    for j in rng.permutation(len(buf)).tolist():
        yield buf[j]


def _resolve_files(dataset: str, split: str, **load_kwargs) -> tuple[list[str], list[str]]:
    """The parquet files of one split (local paths or ``hf://`` URLs) and the column names."""
    from datasets import load_dataset_builder

    try:
        builder = load_dataset_builder(str(dataset), **load_kwargs)
    except Exception as e:
        raise HfMidiError(f"dataset {dataset}: cannot be opened ({type(e).__name__}: {e})") from None
    files = (builder.config.data_files or {}).get(split)
    if not files:
        have = sorted((builder.config.data_files or {}).keys())
        raise HfMidiError(f"dataset {dataset}: no split {split!r} (it has {', '.join(have) or 'none'})")
    columns = list(builder.info.features) if builder.info.features else []
    if columns and "midi" not in columns and "input_ids" not in columns:
        raise HfMidiError(f"dataset {dataset}: neither a 'midi' nor an 'input_ids' column ({', '.join(columns)})")
    return list(files), columns


class _Reader:
    """One worker's pieces, as ``(path, sha256, midi bytes or None, ids or None)`` tuples."""

    def __init__(self, files: list[str], split: str, columns: list[str], node: int, world: int, batch_rows: int,
                 read_kwargs: dict):
        self.files, self.split, self.columns = files, split, columns
        self.node, self.world, self.batch_rows, self.read_kwargs = node, world, batch_rows, read_kwargs

    def __iter__(self):
        from datasets import load_dataset
        from datasets.distributed import split_dataset_by_node

        ds = load_dataset(
            "parquet", data_files={self.split: self.files}, split=self.split, streaming=True,
            columns=self.columns, **self.read_kwargs,
        )
        # Shards when their count divides world (whole files per reader), else every world-th row.
        ds = split_dataset_by_node(ds, rank=self.node, world_size=self.world)
        # .iter() reads arrow batches and, unlike iterating the dataset, does not shard again by
        # DataLoader worker: the split above already did.
        for table in ds.with_format("arrow").iter(batch_size=self.batch_rows):
            paths = table.column("path").to_pylist()
            shas = table.column("sha256").to_pylist()
            if "input_ids" in self.columns:
                arr = table.column("input_ids").combine_chunks()
                offsets = arr.offsets.to_numpy()
                values = arr.values.to_numpy(zero_copy_only=False)
                for i in range(len(paths)):
                    yield paths[i], shas[i], None, values[offsets[i] : offsets[i + 1]]
            else:
                for p, s, m in zip(paths, shas, table.column("midi").to_pylist()):
                    yield p, s, m, None


class MidiBlockStream(torch.utils.data.IterableDataset):
    """Fixed-length training blocks from a dataset written by ``hf-midi prepare`` (a local folder or a Hub
    repo id), as an ``IterableDataset`` for a DataLoader.

    Args:
        dataset: the dataset folder, or a Hub dataset repo id (read with ``datasets.load_dataset(...,
            streaming=True)``; ``load_kwargs`` such as ``revision`` or ``token`` are passed on).
        split: ``"train"``, ``"validation"``, ...
        tokenizer: a ``MidiTokenizer`` (its ``sustain`` mode is used), or None for the default mode.
        block_size: tokens per block.
        augment: random transposition / time stretch / velocity jitter per piece; None for evaluation.
        mode: ``"pack"``: pieces framed by ``<bos>``/``<eos>`` are concatenated and cut into blocks (no
            padding; a pass's last partial block is dropped). ``"crop"``: one block a piece, a random
            window of it; a piece shorter than a block is padded with ``<pad>`` (labels -100,
            attention_mask 0).
        shuffle_buffer: blocks held to shuffle the output (0: none).
        piece_shuffle_buffer: pieces (rows, before parsing) held to shuffle their order (0: none). With
            both 0 the shard order is also kept, and the stream reads the split in its stored order.
        seed, epoch: the stream is a function of both (``set_epoch`` moves to another pass).
        rank, world_size: this process's place in a multi-process run. Each (rank, DataLoader worker)
            reads a disjoint part (``split_dataset_by_node`` over ``world_size x num_workers`` readers,
            whole shards when that number divides the shard count); together they read everything.
            Do not let accelerate shard this dataset again. The stream is copied into DataLoader workers
            when they start: call ``set_epoch`` before each epoch with ``persistent_workers=False``.
        use_pretokenized: use the ``input_ids`` column when the dataset has one. None (default): when it
            exists, was made with the tokenizer's sustain mode, and ``augment`` has no stretch or
            jitter (those need the unquantised times, so the MIDI is parsed); transposition works on
            the ids directly.
        read_batch_rows: rows per arrow record batch read from parquet.
    """

    def __init__(
        self,
        dataset: str,
        split: str,
        tokenizer: Any,
        block_size: int,
        *,
        augment: AugmentConfig | None = None,
        mode: str = "pack",
        shuffle_buffer: int = 1024,
        piece_shuffle_buffer: int = 64,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        use_pretokenized: bool | None = None,
        read_batch_rows: int = 64,
        load_kwargs: dict | None = None,
    ):
        super().__init__()
        if not isinstance(block_size, int) or block_size < 2:
            raise HfMidiError(f"block_size {block_size!r}: must be an int >= 2")
        if mode not in MODES:
            raise HfMidiError(f"mode {mode!r}: must be one of {MODES}")
        if not 0 <= rank < world_size:
            raise HfMidiError(f"rank {rank} / world_size {world_size}: need 0 <= rank < world_size")
        if shuffle_buffer < 0 or piece_shuffle_buffer < 0:
            raise HfMidiError("shuffle_buffer and piece_shuffle_buffer must be >= 0")
        if augment is not None and not isinstance(augment, AugmentConfig):
            raise TypeError(f"augment must be an AugmentConfig or None, got {type(augment).__name__}")
        self.dataset, self.split, self.block_size = str(dataset), split, block_size
        self.sustain = getattr(tokenizer, "sustain", "events") if tokenizer is not None else "events"
        self.augment, self.mode = augment, mode
        self.shuffle_buffer, self.piece_shuffle_buffer = shuffle_buffer, piece_shuffle_buffer
        self.seed, self.epoch, self.rank, self.world_size = int(seed), int(epoch), rank, world_size
        self.read_batch_rows = read_batch_rows
        self.files, features = _resolve_files(self.dataset, split, **(load_kwargs or {}))
        # what reading the resolved hf:// files needs too (a private repo's token)
        self.read_kwargs = {k: v for k, v in (load_kwargs or {}).items() if k in ("token", "storage_options")}
        self.use_ids = self._choose_ids(features, use_pretokenized)
        self.columns = ["path", "sha256", "input_ids"] if self.use_ids else ["path", "sha256", "midi"]
        self._resume: dict | None = None  # the state to start the next pass of `epoch` from
        self._rotation = 0  # which worker's share a DataLoader's worker 0 takes in a resumed pass
        self._yielded = 0  # blocks yielded in this process during the current pass

    # ------------------------------------------------------------------ configuration
    def _choose_ids(self, features: list[str], use_pretokenized: bool | None) -> bool:
        has_ids = "input_ids" in features
        if use_pretokenized is False or (use_pretokenized is None and not has_ids):
            if "midi" not in features:
                raise HfMidiError(f"dataset {self.dataset}: no 'midi' column to parse")
            return False
        if not has_ids:
            raise HfMidiError(f"dataset {self.dataset}: use_pretokenized=True but it has no 'input_ids' column")
        if self.augment is not None and self.augment.needs_times:
            if use_pretokenized:
                raise HfMidiError("stretch and velocity jitter need the MIDI times: use_pretokenized must not be True")
            return False  # parse the MIDI: stretch happens before quantisation
        made_with = self._peek_sustain()
        if made_with != self.sustain:
            if use_pretokenized:
                raise HfMidiError(
                    f"dataset {self.dataset}: its input_ids were made with sustain={made_with!r}, the "
                    f"tokenizer uses sustain={self.sustain!r}"
                )
            return False
        return True

    def _peek_sustain(self) -> str | None:
        import pyarrow.parquet as pq
        from datasets import load_dataset

        first = self.files[0]
        if "://" not in first:  # local: read one value of one column
            return pq.ParquetFile(first).read_row_group(0, columns=["sustain"]).column(0)[0].as_py()
        ds = load_dataset("parquet", data_files={self.split: [first]}, split=self.split, streaming=True,
                          columns=["sustain"], **self.read_kwargs)
        return next(iter(ds))["sustain"]

    def set_epoch(self, epoch: int) -> None:
        """Select the pass: shard order, shuffles and augmentation all depend on it."""
        self.epoch = int(epoch)
        if self._resume is not None and self._resume["epoch"] != self.epoch:
            self._resume, self._rotation = None, 0  # a resumed position belongs to its own epoch

    # ------------------------------------------------------------------ resume
    def _identity(self) -> dict:
        return {
            "format": STATE_FORMAT, "seed": self.seed, "rank": self.rank, "world_size": self.world_size,
            "block_size": self.block_size, "mode": self.mode, "split": self.split,
        }

    def state_dict(self) -> dict:
        """Where this stream is: ``{"epoch", "num_workers", "blocks_per_worker", ...}``.

        Exact in the process that iterates: with ``num_workers=0``, or inside a DataLoader worker (where
        ``torchdata``'s ``StatefulDataLoader`` asks each worker for its own state). The main process
        of a plain ``DataLoader`` with workers cannot see them: use ``dataloader_state`` there.
        """
        info = torch.utils.data.get_worker_info()
        state = self._identity() | {"epoch": self.epoch, "rotation": self._rotation}
        if info is None:
            return state | {"num_workers": 1, "blocks_per_worker": [self._yielded]}
        me = (info.id + self._rotation) % info.num_workers
        counts = [0] * info.num_workers
        counts[me] = self._yielded
        return state | {"num_workers": info.num_workers, "blocks_per_worker": counts, "worker_id": me}

    def dataloader_state(self, batches: int, batch_size: int, num_workers: int, epoch: int | None = None) -> dict:
        """The state after this rank's ``DataLoader(stream, batch_size=batch_size, num_workers=num_workers)``
        has given ``batches`` batches of epoch ``epoch`` (default: the current one), counted from the
        epoch's start (a resumed DataLoader's batches continue the count).

        A DataLoader takes whole batches from its workers in turn (worker ``k % num_workers`` makes
        batch ``k``). The state records each worker's block count and which worker is next, so a fresh
        DataLoader over the resumed stream gives exactly the batches the old one would have given
        next. Exact as long as no worker had run out of data before ``batches``: in the last few
        batches of an epoch it may repeat or miss some (``batches=0`` of the next epoch is exact).
        ``num_workers=0`` (batches made in the main process) counts as one worker.
        """
        w = max(1, num_workers)
        counts = [batch_size * len(range(k, batches, w)) for k in range(w)]
        return self._identity() | {"epoch": self.epoch if epoch is None else int(epoch), "rotation": batches % w,
                                   "num_workers": w, "blocks_per_worker": counts}

    def load_state_dict(self, state: dict) -> None:
        """Start the next pass of ``state["epoch"]`` after the blocks the state says were yielded."""
        mine, theirs = self._identity(), {k: state.get(k) for k in self._identity()}
        if theirs != mine:
            diff = {k: (theirs[k], mine[k]) for k in mine if theirs[k] != mine[k]}
            raise HfMidiError(f"state does not belong to this stream: (saved, now) differ in {diff}")
        self.epoch = int(state["epoch"])
        self._rotation = int(state.get("rotation", 0))
        self._resume = {"epoch": self.epoch, "num_workers": int(state["num_workers"]),
                        "blocks_per_worker": list(state["blocks_per_worker"]),
                        "worker_id": state.get("worker_id")}

    def _skip_for(self, worker: int, num_workers: int) -> int:
        r = self._resume
        if r is None or r["epoch"] != self.epoch:
            return 0
        if r["num_workers"] != num_workers:
            raise HfMidiError(
                f"state saved with {r['num_workers']} DataLoader worker(s); resume with the same number "
                f"(now {num_workers}): the workers' shares of the data depend on it"
            )
        if r["worker_id"] is not None and r["worker_id"] != worker:  # another worker's own state
            return 0
        return r["blocks_per_worker"][worker]

    # ------------------------------------------------------------------ the pipeline
    def _encode(self, midi: bytes | None, ids: np.ndarray | None, path: str, rng) -> np.ndarray | None:
        """The piece's event ids (augmented), or None when its MIDI cannot be read."""
        if ids is not None:
            if self.augment is not None:
                semitones, _ = self.augment.sample(rng)
                ids = transpose_ids(ids, semitones, self.sustain)
            return ids
        try:
            perf = codec.score_to_performance(codec.load_score(midi, path))
        except HfMidiError as e:
            logger.warning("skipping %s", e)
            return None
        if self.augment is not None:
            perf = augment_performance(perf, self.augment, rng)
        return codec.performance_to_ids(perf, self.sustain)

    def _blocks(self, node: int, world: int) -> Iterator[np.ndarray]:
        """This reader's blocks, before tensors: (block_size,) int64 arrays."""
        L, shuffle = self.block_size, self.shuffle_buffer > 0 or self.piece_shuffle_buffer > 0
        files = list(self.files)
        if shuffle:
            files = [files[i] for i in np.random.default_rng([self.seed, self.epoch]).permutation(len(files))]
        reader = _Reader(files, self.split, self.columns, node, world, self.read_batch_rows, self.read_kwargs)
        stream_rng = np.random.default_rng([self.seed, self.epoch, node, world])
        rows = _shuffled(iter(reader), self.piece_shuffle_buffer, stream_rng)

        def blocks():
            carry = np.empty(0, np.int64)
            for path, sha, midi, ids in rows:
                # seeding costs ~25 us: only when a random choice is made
                rng = piece_rng(self.seed, self.epoch, sha) if self.augment or self.mode == "crop" else None
                ids = self._encode(midi, ids, path, rng)
                if ids is None:
                    continue
                if self.mode == "pack":
                    buf = np.concatenate((carry, [BOS_ID], ids, [EOS_ID]), dtype=np.int64)
                    n = len(buf) // L
                    yield from buf[: n * L].reshape(n, L)
                    carry = buf[n * L :]
                else:  # one random crop of the framed piece, padded when shorter than a block
                    piece = np.concatenate(([BOS_ID], ids, [EOS_ID]), dtype=np.int64)
                    if len(piece) >= L:
                        start = int(rng.integers(0, len(piece) - L + 1))
                        yield piece[start : start + L]
                    else:
                        yield np.concatenate((piece, np.full(L - len(piece), PAD_ID, np.int64)))
            # The last partial block of a pass is dropped: no padding in pack mode.

        return _shuffled(blocks(), self.shuffle_buffer, stream_rng)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # A resumed DataLoader starts with its worker 0: let it play the worker that was next.
        worker = (worker + self._rotation) % num_workers
        node, world = self.rank * num_workers + worker, self.world_size * num_workers
        if len(self.files) % world and node == 0:
            logger.warning(
                "%d %s shards for %d readers (ranks x DataLoader workers): every reader reads all shards and "
                "keeps every %dth row; `hf-midi prepare --shard-multiple %d` gives whole shards to each",
                len(self.files), self.split, world, world, world,
            )
        skip = self._skip_for(worker, num_workers)
        self._yielded = 0
        for block in self._blocks(node, world):
            self._yielded += 1
            if self._yielded <= skip:
                continue
            input_ids = torch.from_numpy(block)  # (block_size,) int64, a view of this block's own buffer
            if self.mode == "pack":  # never padded: skip the mask arithmetic (a third of the per-block cost)
                yield {"input_ids": input_ids, "labels": input_ids.clone(),
                       "attention_mask": torch.ones(len(block), dtype=torch.long)}
            else:
                pad = input_ids == PAD_ID
                yield {"input_ids": input_ids, "labels": input_ids.masked_fill(pad, -100),
                       "attention_mask": (~pad).long()}

    def __repr__(self) -> str:
        aug = asdict(self.augment) if self.augment else None
        return (f"MidiBlockStream({self.dataset!r}, split={self.split!r}, block_size={self.block_size}, "
                f"mode={self.mode!r}, augment={aug}, pretokenized={self.use_ids}, epoch={self.epoch}, "
                f"rank={self.rank}/{self.world_size})")


def iter_pieces(
    dataset: str,
    split: str,
    tokenizer: Any,
    *,
    rank: int = 0,
    world_size: int = 1,
    use_pretokenized: bool | None = None,
    load_kwargs: dict | None = None,
) -> Iterator[tuple[str, np.ndarray]]:
    """Whole pieces for evaluation: ``(path, ids)`` with ids ``<bos> ... <eos>`` (int64), no augmentation,
    in stored order; with ``world_size > 1``, this rank's disjoint share. Unreadable rows are logged
    and skipped."""
    stream = MidiBlockStream(dataset, split, tokenizer, 2, shuffle_buffer=0, piece_shuffle_buffer=0,
                             rank=rank, world_size=world_size, use_pretokenized=use_pretokenized,
                             load_kwargs=load_kwargs)
    reader = _Reader(stream.files, split, stream.columns, rank, world_size, stream.read_batch_rows, stream.read_kwargs)
    for path, _, midi, ids in reader:
        ids = stream._encode(midi, ids, path, None)
        if ids is not None:
            yield path, np.concatenate(([BOS_ID], ids, [EOS_ID])).astype(np.int64)


__all__ = ["MidiBlockStream", "iter_pieces", "piece_rng"]
