"""Packed token corpora: pre-tokenised pieces as one compressed id stream.

Training from a packed corpus needs neither MIDI parsing nor parquet nor ``datasets``: the ids are
read once into memory (a GPU keeps them on the device) and random windows are cut from them. It is
what the GPU recipe carries to a bare machine (``recipes/gpu_recipe.sh``), where at most 64 MiB travel,
and what a long CPU run reads instead of re-parsing MIDI every epoch.

A packed corpus is a folder::

    manifest.json          format, vocabulary, sustain mode, sources and counts, sha256 of every file
    train-000.u16.xz ...   uint16 little-endian ids, xz-compressed; the pieces framed <bos> ... <eos>,
                           concatenated in a seeded random order (a part boundary may split a piece)
    eval-<name>.npz        ids (uint16, framed pieces back to back) and offsets (int64): piece k is
                           ids[offsets[k]:offsets[k+1]]

Why xz of plain uint16: measured on 20 M GiantMIDI events (benchmarks/RESULTS.md, GPU training),
``xz -9e`` stores 0.71 bytes an event; zstd -19 --long 0.79; splitting the two bytes into planes, or
coding pitches as intervals, did not help either coder. The sources are read from datasets written by
``hf-midi prepare --pretokenize`` (their ``input_ids`` column).

    python -m hf_midi.data.packed OUT --train giantmidi=DATA/giantmidi:train --train pop909=DATA/pop909:train \\
        --eval giantmidi_test=DATA/giantmidi:test --budget-mib 40
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..remote_code.codec import BOS_ID, EOS_ID, TIME_SHIFT, VOCAB_SIZE
from ..remote_code.errors import HfMidiError
from ..utils import atomic_folder

FORMAT = "hf_midi.packed/1"  # the format's name, written into every manifest.json and checked on reading
BYTES_PER_EVENT_XZ = 0.712  # measured (module docstring); sizes a budget before compressing


class PackedError(HfMidiError):
    """A packed corpus that is missing, damaged or of another format; the message names the file."""


def read_prepared(dataset: str | Path, split: str) -> list[tuple[str, np.ndarray]]:
    """(path, ids) of every piece of one split of a ``hf-midi prepare --pretokenize`` folder, in shard
    order; ids without <bos>/<eos>."""
    import pyarrow.parquet as pq

    files = sorted(Path(dataset, "data").glob(f"{split}-*.parquet"))
    if not files:
        raise PackedError(f"{dataset}: no data/{split}-*.parquet shards (a folder written by hf-midi prepare)")
    out = []
    for f in files:
        names = pq.ParquetFile(f).schema_arrow.names
        if "input_ids" not in names:
            raise PackedError(f"{f}: no input_ids column (prepare it with --pretokenize)")
        table = pq.read_table(f, columns=["path", "input_ids"])
        paths = table.column("path").to_pylist()
        k = 0
        for chunk in table.column("input_ids").chunks:
            offsets, values = chunk.offsets.to_numpy(), chunk.values.to_numpy()
            for i in range(len(offsets) - 1):
                out.append((paths[k], values[offsets[i] : offsets[i + 1]].astype(np.uint16)))
                k += 1
    return out


def frame(ids: np.ndarray) -> np.ndarray:
    return np.concatenate([[BOS_ID], ids, [EOS_ID]]).astype(np.uint16)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pack_corpus(out: str | Path, train: dict[str, tuple[str, str]], evals: dict[str, tuple[str, str]] | None = None,
                *, budget_mib: float | None = None, keep_whole: tuple[str, ...] = (), parts: int = 2,
                eval_max_events: dict[str, int] | None = None, seed: int = 0, xz_preset: int = 9,
                progress: bool = True) -> dict:
    """Write a packed corpus to ``out`` (atomically: a folder that exists is complete).

    ``train``/``evals``: name -> (prepared dataset folder, split). ``budget_mib``: the compressed size
    the training parts may take; pieces are drawn in a seeded random order until the estimate at
    ``BYTES_PER_EVENT_XZ`` is reached, sources in ``keep_whole`` first and in full. ``parts``: the
    training stream is cut into this many files, compressed in parallel. ``eval_max_events``: name ->
    a cap on an evaluation set's events (whole pieces, seeded choice). Returns the manifest.
    """
    rng = np.random.default_rng(seed)
    pieces: list[tuple[str, str, np.ndarray]] = []
    whole: list[tuple[str, str, np.ndarray]] = []
    sources = {}
    for name, (folder, split) in train.items():
        got = read_prepared(folder, split)
        sources[name] = {"dataset": str(folder), "split": split, "pieces_available": len(got),
                         "events_available": int(sum(len(x) for _, x in got))}
        (whole if name in keep_whole else pieces).extend((name, p, x) for p, x in got)
    chosen = list(whole)
    order = rng.permutation(len(pieces))
    budget_events = None if budget_mib is None else budget_mib * 2**20 / BYTES_PER_EVENT_XZ
    total = sum(len(x) + 2 for _, _, x in chosen)
    for i in order:
        n = len(pieces[i][2]) + 2
        if budget_events is not None and total + n > budget_events:
            continue  # a smaller piece later may still fit
        chosen.append(pieces[i])
        total += n
    chosen = [chosen[i] for i in rng.permutation(len(chosen))]
    for name in sources:
        mine = [x for n, _, x in chosen if n == name]
        sources[name].update(pieces=len(mine), events=int(sum(len(x) for x in mine)))
    stream = np.concatenate([frame(x) for _, _, x in chosen]) if chosen else np.zeros(0, np.uint16)
    bounds = np.linspace(0, len(stream), parts + 1).astype(np.int64)

    manifest = {"format": FORMAT, "vocab_size": VOCAB_SIZE, "sustain": "events", "seed": seed,
                "train": {"tokens": int(len(stream)), "pieces": len(chosen), "sources": sources, "files": []},
                "eval": {}}
    with atomic_folder(out) as tmp:
        def write_part(k: int) -> dict:
            name = f"train-{k:03d}.u16.xz"
            data = stream[bounds[k] : bounds[k + 1]].astype("<u2").tobytes()
            (tmp / name).write_bytes(lzma.compress(data, preset=xz_preset | lzma.PRESET_EXTREME))
            return {"name": name, "tokens": int(bounds[k + 1] - bounds[k]), "bytes": (tmp / name).stat().st_size,
                    "sha256": _sha256(tmp / name)}

        with ThreadPoolExecutor(max_workers=parts) as pool:  # lzma releases the GIL
            manifest["train"]["files"] = list(pool.map(write_part, range(parts)))
        for name, (folder, split) in (evals or {}).items():
            got = read_prepared(folder, split)
            cap = (eval_max_events or {}).get(name)
            if cap is not None:
                keep, n = [], 0
                for i in np.random.default_rng(seed + 1).permutation(len(got)):
                    if n + len(got[i][1]) <= cap:
                        keep.append(i)
                        n += len(got[i][1])
                got = [got[i] for i in sorted(keep)]  # in the dataset's order (a file's pieces share a path)
            framed = [frame(x) for _, x in got]
            offsets = np.cumsum([0] + [len(x) for x in framed]).astype(np.int64)
            ids = np.concatenate(framed) if framed else np.zeros(0, np.uint16)
            np.savez_compressed(tmp / f"eval-{name}.npz", ids=ids, offsets=offsets,
                                paths=np.array([p for p, _ in got]))
            manifest["eval"][name] = {"dataset": str(folder), "split": split, "pieces": len(got),
                                      "tokens": int(len(ids)), "file": f"eval-{name}.npz",
                                      "sha256": _sha256(tmp / f"eval-{name}.npz")}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if progress:
        mib = sum(f["bytes"] for f in manifest["train"]["files"]) / 2**20
        print(f"packed {manifest['train']['pieces']} pieces, {len(stream):,} tokens, {mib:.1f} MiB "
              f"({mib * 2**20 / max(1, len(stream)):.3f} bytes/token) into {out}", file=sys.stderr)
    return manifest


def read_manifest(folder: str | Path, sustain: str | None = None) -> dict:
    """The corpus's manifest, checked: this format, this vocabulary, and (given) this sustain mode."""
    path = Path(folder, "manifest.json")
    if not path.is_file():
        raise PackedError(f"{folder}: no manifest.json (not a packed corpus)")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as e:
        raise PackedError(f"{path}: not JSON ({e})") from None
    if manifest.get("format") != FORMAT:
        raise PackedError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("vocab_size") != VOCAB_SIZE:
        raise PackedError(f"{path}: a corpus of another vocabulary ({manifest.get('vocab_size')} ids; "
                          f"this codec has {VOCAB_SIZE})")
    if sustain is not None and manifest.get("sustain") != sustain:
        raise PackedError(f"{path}: tokenised with sustain={manifest.get('sustain')!r}; the tokenizer uses "
                          f"sustain={sustain!r}")
    return manifest


def load_train(folder: str | Path, verify: bool = True) -> np.ndarray:
    """The training stream (uint16), all parts decompressed in parallel and checked."""
    manifest = read_manifest(folder)
    files = manifest["train"]["files"]

    def read(f: dict) -> np.ndarray:
        path = Path(folder, f["name"])
        if not path.is_file():
            raise PackedError(f"{path}: missing (listed in manifest.json)")
        if verify and _sha256(path) != f["sha256"]:
            raise PackedError(f"{path}: sha256 differs from manifest.json (damaged or replaced)")
        ids = np.frombuffer(lzma.decompress(path.read_bytes()), dtype="<u2")
        if len(ids) != f["tokens"]:
            raise PackedError(f"{path}: {len(ids)} tokens, manifest.json says {f['tokens']}")
        return ids

    with ThreadPoolExecutor(max_workers=max(1, len(files))) as pool:
        parts = list(pool.map(read, files))
    ids = np.concatenate(parts) if parts else np.zeros(0, np.uint16)
    if len(ids) and int(ids.max()) >= VOCAB_SIZE:
        raise PackedError(f"{folder}: an id {int(ids.max())} outside the vocabulary (0..{VOCAB_SIZE - 1})")
    return ids


def load_eval(folder: str | Path, name: str, verify: bool = True) -> list[tuple[str, np.ndarray]]:
    """(path, framed ids) of the pieces of one evaluation set."""
    manifest = read_manifest(folder)
    if name not in manifest["eval"]:
        raise PackedError(f"{folder}: no evaluation set {name!r} (has {sorted(manifest['eval'])})")
    path = Path(folder, manifest["eval"][name]["file"])
    if not path.is_file():
        raise PackedError(f"{path}: missing (listed in manifest.json)")
    if verify and _sha256(path) != manifest["eval"][name]["sha256"]:
        raise PackedError(f"{path}: sha256 differs from manifest.json (damaged or replaced)")
    with np.load(path, allow_pickle=False) as z:
        ids, offsets, paths = z["ids"], z["offsets"], z["paths"]
    return [(str(paths[k]), ids[offsets[k] : offsets[k + 1]]) for k in range(len(offsets) - 1)]


# --------------------------------------------------------------------------- batches for training
def transpose_windows(x, lo: int, hi: int, gen=None):
    """Shift every NOTE_ON/NOTE_OFF id of each row of ``x`` (a torch tensor) by one semitone count drawn
    in [lo, hi], narrowed per row so that no pitch leaves 0..127 (a common shift of NOTE_ON/NOTE_OFF ids
    is an exact transposition: docs/vocabulary.md)."""
    import torch

    note = x < TIME_SHIFT  # NOTE_ON and NOTE_OFF ids
    pitch = x % 128
    low = torch.where(note, pitch, 127).amin(1)  # rows without notes: low 127, high 0 -> k clamps to 0
    high = torch.where(note, pitch, 0).amax(1)
    k = torch.randint(lo, hi + 1, (x.shape[0],), device=x.device, generator=gen)
    k = torch.minimum(torch.maximum(k, -low), 127 - high)
    k = torch.where(note.any(1), k, torch.zeros_like(k))
    return torch.where(note, x + k[:, None], x)


class PackedBatches:
    """Training batches cut from a packed corpus: random windows of ``block_size`` ids of the whole
    training stream, held on ``device`` (int16, 2 bytes a token), each transposed by a random number of
    semitones in ``transpose`` (narrowed per window to the keyboard); no parsing, no data loader.

    The training loop's batch source (beside ``hf_midi.training.StreamBatches``): ``next()`` gives a dict
    of ``input_ids``, ``attention_mask`` and ``labels``; ``state_dict()``/``load_state_dict()`` hold the
    random generator, so a resumed run draws exactly the windows an uninterrupted one would.
    """

    def __init__(self, folder: str | Path, block_size: int, batch_size: int, device, *, transpose=(0, 0),
                 seed: int = 0, rank: int = 0, sustain: str | None = "events", piece_start_share: float = 0.0):
        import torch

        self.folder, self.block, self.batch, self.device = Path(folder), block_size, batch_size, torch.device(device)
        self.manifest = read_manifest(folder, sustain)
        ids = load_train(folder)
        if len(ids) < block_size + 1:
            raise PackedError(f"{folder}: the corpus has {len(ids)} training tokens, fewer than one block of "
                              f"{block_size}")
        self.tokens = len(ids)
        self.data = torch.from_numpy(ids.astype(np.int16)).to(self.device)  # ids < 393 fit int16
        self.lo, self.hi = transpose
        self.offsets = torch.arange(block_size, device=self.device)
        self.gen = torch.Generator(device=self.device)
        self.reseed(seed, rank)
        self.drawn = 0  # windows drawn so far
        self.split = "train"
        # A share of the windows begins at a piece's <bos>: a model that sees few beginnings loses track of
        # what a piece's opening notes need (their endings) more often.
        if not 0.0 <= piece_start_share <= 1.0:
            raise PackedError(f"piece_start_share must be in [0, 1], got {piece_start_share}")
        self.piece_start_share = piece_start_share
        bos = torch.nonzero(self.data[: self.tokens - block_size + 1] == BOS_ID).flatten()
        self.piece_starts = bos if len(bos) else None

    def reseed(self, seed: int, rank: int, step: int = 0) -> None:
        """Seed the windows' generator: each rank its own draws; ``step`` > 0 for a resumed run that cannot
        restore the saved state (another number of processes)."""
        self.gen.manual_seed(seed * 1_000_003 + rank + 7919 * step)

    @property
    def epoch(self) -> float:
        """Passes over the corpus so far (tokens drawn / corpus tokens)."""
        return self.drawn * self.block / self.tokens

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        import torch

        starts = torch.randint(0, self.tokens - self.block + 1, (self.batch, 1), device=self.device,
                               generator=self.gen)
        if self.piece_start_share and self.piece_starts is not None:
            at_start = torch.rand((self.batch, 1), device=self.device, generator=self.gen) < self.piece_start_share
            which = torch.randint(0, len(self.piece_starts), (self.batch, 1), device=self.device, generator=self.gen)
            starts = torch.where(at_start, self.piece_starts[which], starts)
        x = self.data[starts + self.offsets].long()  # (B, block)
        if self.hi > self.lo or self.lo != 0:
            x = transpose_windows(x, self.lo, self.hi, self.gen)
        self.drawn += self.batch
        return {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x}

    def state_dict(self) -> dict:
        import base64

        state = self.gen.get_state().numpy().tobytes()
        return {"kind": "packed", "drawn": self.drawn, "generator": base64.b64encode(state).decode("ascii")}

    def load_state_dict(self, state: dict) -> None:
        import base64

        import torch

        if state.get("kind") != "packed":
            raise PackedError(f"{self.folder}: the checkpoint's data state is not a packed corpus's")
        raw = np.frombuffer(base64.b64decode(state["generator"]), dtype=np.uint8).copy()
        self.gen.set_state(torch.from_numpy(raw))
        self.drawn = state["drawn"]

    def eval_batches(self, name: str, n_batches: int, seed: int = 0) -> list[dict]:
        """``n_batches`` batches of windows of evaluation set ``name``, the same every call (seeded)."""
        import torch

        if name not in self.manifest["eval"]:
            raise PackedError(f"{self.folder}: no evaluation set {name!r} (has {sorted(self.manifest['eval'])})")
        ids = np.concatenate([x for _, x in load_eval(self.folder, name)]) if self.manifest["eval"][name]["pieces"] \
            else np.zeros(0, np.uint16)
        if len(ids) < self.block:
            raise PackedError(f"{self.folder}: evaluation set {name!r} has {len(ids)} tokens, fewer than one "
                              f"block of {self.block}")
        starts = np.random.default_rng(seed).integers(0, len(ids) - self.block + 1, size=n_batches * self.batch)
        x = torch.from_numpy(np.stack([ids[s : s + self.block] for s in starts]).astype(np.int64))
        return [{"input_ids": b, "attention_mask": torch.ones_like(b), "labels": b} for b in x.split(self.batch)]

    def __repr__(self) -> str:
        return f"PackedBatches({str(self.folder)!r}, {self.tokens:,} tokens, {self.batch} x {self.block})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hf_midi.data.packed",
                                description="prepared datasets -> a packed corpus")
    p.add_argument("out", help="folder to write")
    p.add_argument("--train", action="append", default=[], metavar="NAME=DIR:SPLIT", required=True)
    p.add_argument("--eval", action="append", default=[], metavar="NAME=DIR:SPLIT")
    p.add_argument("--eval-max-events", action="append", default=[], metavar="NAME=N")
    p.add_argument("--keep-whole", action="append", default=[], metavar="NAME",
                   help="take this training source in full before drawing from the others")
    p.add_argument("--budget-mib", type=float, default=None, help="compressed size the training parts may take")
    p.add_argument("--parts", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--xz-preset", type=int, default=9, choices=range(10))
    args = p.parse_args(argv)

    def spec(s: str, flag: str) -> tuple[str, tuple[str, str]]:
        name, sep, rest = s.partition("=")
        folder, sep2, split = rest.rpartition(":")
        if not (sep and sep2 and name and folder and split):
            p.error(f"{flag} {s!r}: expected NAME=DIR:SPLIT")
        return name, (folder, split)

    caps = {}
    for s in args.eval_max_events:
        name, _, n = s.partition("=")
        if not n.isdigit():
            p.error(f"--eval-max-events {s!r}: expected NAME=N")
        caps[name] = int(n)
    try:
        pack_corpus(args.out, dict(spec(s, "--train") for s in args.train), dict(spec(s, "--eval") for s in args.eval),
                    budget_mib=args.budget_mib, keep_whole=tuple(args.keep_whole), parts=args.parts,
                    eval_max_events=caps, seed=args.seed, xz_preset=args.xz_preset)
    except PackedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
