"""``hf-midi prepare``: a folder of MIDI files -> a dataset folder laid out as a Hub dataset repository.

The output (``OUT/``) is what ``datasets.load_dataset(OUT)`` and ``hf_midi.data.stream.MidiBlockStream`` read,
and what ``huggingface-cli upload --repo-type dataset`` can publish unchanged::

    OUT/README.md                                dataset card: YAML header (configs, splits, features,
                                                 license) and a short description with counts and hours
    OUT/skipped.csv                              every file left out, and why
    OUT/data/train-00000-of-00008.parquet ...    one group of shards per split

Each parquet row is one MIDI file: ``midi`` (binary, the file's bytes), ``path`` (relative to the
source folder, ``/``-separated), ``sha256`` (of the bytes), ``duration`` (seconds until the last note
ends), ``num_notes`` and ``license``; with ``pretokenize`` also ``input_ids`` (list<int16>, the event
ids *without* ``<bos>``/``<eos>``) and ``sustain`` (the sustain mode those ids were made with).

The work runs in three passes: scan every file in a process pool (read, hash, parse: a file that
does not parse, has no notes, or duplicates an earlier file's bytes is skipped and reported; a file
that crashes a worker is found and skipped, the job goes on), assign splits and shards
deterministically, then write the shards in the pool. Everything is written into a hidden temporary
folder beside ``OUT`` that is renamed into place at the end, so an interrupted run leaves no half
dataset, and a re-run on the same files gives the same bytes.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import math
import os
import re
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..remote_code.codec import SUSTAIN_MODES, VOCAB_SIZE, MidiReadError
from ..remote_code.errors import HfMidiError
from ..utils import atomic_folder
from .cleaning import FIGURE_COLUMNS, NO_CLEAN, CleanConfig, describe, is_no_clean

MIDI_SUFFIXES = (".mid", ".midi")
STANDARD_SPLITS = ("train", "validation", "test")
SKIPPED_FILE = "skipped.csv"
CHOSEN_SKIPS = ("not in split file", "excluded by --where")  # left out on purpose, not problems
SCREENED = ("too short", "too sparse", "too dense", "few pitches", "no timing variety", "repetitive")
_OPS = ("<=", ">=", "!=", "=", "<", ">")


class PrepareError(HfMidiError):
    """Bad arguments or inputs to ``prepare_dataset`` (raised before any work starts)."""


@dataclass
class PrepareConfig:
    """Everything ``prepare_dataset`` can be told. Each field maps to one ``hf-midi prepare`` option."""

    splits_file: str | None = None
    """CSV with columns ``path`` (relative to the source folder) and ``split``; files it does not list
    are skipped and reported. ``None``: split by a hash of each relative path with ``split_ratios``."""
    where: tuple[str, ...] = ()
    """``COLUMN=VALUE`` (or ``!=``, ``<``, ``<=``, ``>``, ``>=``) filters, all of which must hold: on a
    column of ``splits_file`` (e.g. ``kind=performance`` for ASAP) or on a piece's figures (the
    dataset's figure columns, e.g. ``notes_per_second>=2``); what fails one is skipped and reported."""
    clean: CleanConfig = field(default_factory=CleanConfig)
    """Cut recordings at long silences, start each piece at its first note, screen out spans that are
    not piano music (``hf_midi.data.cleaning``); ``NO_CLEAN`` keeps every file as it is."""
    split_ratios: tuple[float, float, float] = (0.9, 0.05, 0.05)
    """train / validation / test fractions for the hash split (ignored with ``splits_file``)."""
    license: str = "unknown"
    """The source's license identifier (Hub style, e.g. ``mit``, ``cc-by-nc-sa-4.0``): stored in each row
    and in the card."""
    source: str = ""
    """Where the files come from and whom to credit (authors, paper, licence terms): written into the
    dataset card's "Source" section, as a licence such as CC BY requires when the data is shared."""
    pretokenize: bool = False
    """Also store the event ids (``input_ids``), so streaming need not parse MIDI."""
    sustain: str = "events"
    """Sustain mode of the stored ids (see ``MidiTokenizer``); only used with ``pretokenize``."""
    num_workers: int | None = None
    """Processes for parsing and writing; ``None``: one per CPU core; 0: in this process (no crash
    isolation)."""
    shard_multiple: int = 8
    """Shard counts are multiples of this when a split has enough files, so that world sizes (ranks x
    DataLoader workers) dividing it read whole shards; raise it (16, 32) for more readers."""
    max_shard_bytes: int = 256 * 2**20
    """A split gets more shards (in steps of ``shard_multiple``) when its MIDI bytes exceed
    ``shard_multiple`` x this."""
    row_group_size: int = 64
    """Rows per parquet row group: the unit a streaming reader fetches."""
    overwrite: bool = False
    """Replace an existing output folder (atomically: the old one stays until the new one is complete)."""
    progress: bool = True
    """Show tqdm progress bars (on stderr)."""


@dataclass(frozen=True)
class FileResult:
    """What the scan learnt about one file."""

    path: str  # relative, '/'-separated
    size: int = 0  # of the file (of a piece: its share of the file, by notes)
    sha256: str = ""
    duration: float = 0.0
    num_notes: int = 0
    reason: str = ""  # empty: usable; else "unreadable", "no notes", "parser crashed", "too short", ...
    detail: str = ""
    piece: int = 0  # which piece of the file (cleaning cuts a recording at long silences)
    figures: tuple[float, ...] = ()  # the piece's figures, in FIGURE_COLUMNS order

    def figure(self, name: str) -> float:
        return self.figures[FIGURE_COLUMNS.index(name)]


@dataclass
class PrepareReport:
    """What ``prepare_dataset`` did: kept files per split, shard counts, and every skipped file."""

    out: Path
    splits: dict[str, list[FileResult]] = field(default_factory=dict)
    num_shards: dict[str, int] = field(default_factory=dict)
    skipped: list[FileResult] = field(default_factory=list)

    def summary(self) -> str:
        """Counts per split, skipped files by reason, and each file skipped for a problem (not by choice)."""
        lines = []
        for name, files in self.splits.items():
            hours = sum(f.duration for f in files) / 3600
            sources = len({f.path for f in files})
            what = f"{len(files)} files" if sources == len(files) else f"{len(files)} pieces from {sources} files"
            lines.append(f"  {name}: {what}, {hours:.2f} h, {self.num_shards[name]} shards")
        reasons: dict[str, int] = {}
        for f in self.skipped:
            reasons[f.reason] = reasons.get(f.reason, 0) + 1
        counts = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
        lines.append(f"  skipped: {len(self.skipped)} files or pieces{' (' + counts + ')' if counts else ''}, "
                     f"listed in {self.out / SKIPPED_FILE}")
        problems = [f for f in self.skipped if f.reason not in CHOSEN_SKIPS]
        for f in problems[:50]:
            lines.append(f"    {f.path}: {f.reason}" + (f" ({f.detail})" if f.detail else ""))
        if len(problems) > 50:
            lines.append(f"    ... and {len(problems) - 50} more")
        return "\n".join(lines)


# --------------------------------------------------------------------------- pass 1: scan
def _scan_one(root: str, rel: str, clean: CleanConfig = NO_CLEAN) -> list[FileResult]:
    """The file's pieces (one, uncleaned), or one FileResult naming why the file cannot be used."""
    import symusic

    from ..remote_code.codec import check_smf, score_to_performance
    from .cleaning import clean_performance

    try:
        with open(os.path.join(root, rel), "rb") as f:
            data = f.read()
    except OSError as e:
        return [FileResult(rel, reason="unreadable", detail=f"cannot be read ({e.strerror or e})")]
    sha = hashlib.sha256(data).hexdigest()
    try:
        check_smf(data, rel)
        score = symusic.Score.from_midi(data, ttype="second")
        # also refuses corrupt values symusic stored (pitch, velocity or controller above 127)
        perf = score_to_performance(score, source=rel)
    except MidiReadError as e:
        return [FileResult(rel, len(data), sha, reason="unreadable", detail=e.problem)]
    except Exception as e:  # symusic's own errors
        return [FileResult(rel, len(data), sha, reason="unreadable", detail=f"symusic could not parse it: {e}")]
    if perf.num_notes == 0:
        return [FileResult(rel, len(data), sha, reason="no notes", detail="no notes outside drum tracks")]
    if is_no_clean(clean):  # the file as it is; its figures measured like a cleaned piece's (notes in onset order)
        fig = clean_performance(perf, clean)[0].figures
        return [FileResult(rel, len(data), sha, round(perf.duration, 6), perf.num_notes,
                           figures=tuple(fig.as_dict().values()))]
    out = []
    for k, piece in enumerate(clean_performance(perf, clean)):
        fig = piece.figures
        span = f"piece {k} ({fig.start:.1f}-{fig.start + fig.seconds:.1f} s)"
        out.append(FileResult(
            rel, max(1, len(data) * piece.performance.num_notes // perf.num_notes), sha,
            round(piece.performance.duration, 6), piece.performance.num_notes, piece.reason,
            f"{span}: {piece.detail}" if piece.reason else "", k, tuple(fig.as_dict().values()),
        ))
    return out


def _scan_batch(root: str, rels: list[str], clean: CleanConfig = NO_CLEAN) -> list[FileResult]:
    return [r for rel in rels for r in _scan_one(root, rel, clean)]


# --------------------------------------------------------------------------- a pool that survives crashes
def _robust_map(
    fn: Callable, tasks: list, num_workers: int, on_crash: Callable, progress: Callable[[int], None]
) -> list:
    """``[fn(*t) for t in tasks]`` in a process pool; a task that kills its worker gets ``on_crash(t)``.

    Tasks run in chunks in parallel. When a worker dies (a segfault in a C parser), the pool breaks
    and every unfinished result is lost with it, without telling which task killed it. The next
    window of unfinished tasks then runs one at a time in a one-process pool, which names the
    culprit; the rest go back to the parallel pool. Each window is finished, so this always ends.
    """
    if num_workers == 0:
        results = []
        for t in tasks:
            results.append(fn(*t))
            progress(1)
        return results
    # A signal only marks the job while the pools run: an exception raised inside concurrent.futures'
    # waits can leave a pool that never shuts down (seen under load: SIGTERM, then a hang). It is
    # raised at the next result, a few milliseconds later (_check_signal), and once the pools are shut.
    _quiet_signals.append(True)
    try:
        results = _pooled(fn, tasks, num_workers, on_crash, progress)
    finally:
        _quiet_signals.pop()
    _check_signal()
    return results


def _pooled(fn: Callable, tasks: list, num_workers: int, on_crash: Callable, progress: Callable[[int], None]
            ) -> list:
    """``_robust_map``'s pools (see there)."""
    results: list = [None] * len(tasks)
    done = [False] * len(tasks)
    start = 0
    chunk = max(1, min(16, len(tasks) // (4 * num_workers) or 1))
    window = 4 * (num_workers + 1) * chunk
    while start < len(tasks):
        todo = [i for i in range(start, len(tasks)) if not done[i]]
        ex = ProcessPoolExecutor(num_workers)
        try:
            for i, r in zip(todo, ex.map(_call, [(fn, tasks[i]) for i in todo], chunksize=chunk)):
                results[i], done[i] = r, True
                progress(1)
                _check_signal()
            break
        except BrokenProcessPool:
            pass
        finally:  # on Ctrl-C, drop the queued work instead of finishing it
            ex.shutdown(wait=True, cancel_futures=True)
        # Isolate: the next `window` unfinished tasks, one at a time.
        todo = [i for i in range(len(tasks)) if not done[i]][:window]
        ex = ProcessPoolExecutor(1)
        try:
            for i in todo:
                try:
                    results[i] = ex.submit(fn, *tasks[i]).result()
                except BrokenProcessPool:
                    results[i] = on_crash(tasks[i])
                    ex.shutdown(wait=True)
                    ex = ProcessPoolExecutor(1)
                done[i] = True
                progress(1)
                _check_signal()
        finally:
            ex.shutdown(wait=True, cancel_futures=True)
        start = todo[-1] + 1 if todo else len(tasks)
        while start < len(tasks) and done[start]:
            start += 1
    return results


def _call(arg):
    fn, t = arg
    return fn(*t)


# --------------------------------------------------------------------------- pass 2: splits and shards
def find_midi_files(src: Path) -> list[str]:
    """Relative ``/``-separated paths of every ``.mid``/``.midi`` file (any case) under ``src``, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for name in filenames:
            if name.lower().endswith(MIDI_SUFFIXES):
                found.append(Path(dirpath, name).relative_to(src).as_posix())
    return sorted(found)


def parse_where(where: Iterable[str]) -> list[tuple[str, str, str]]:
    """``["notes_per_second>=2", "kind=performance"]`` -> ``[(column, operator, value), ...]``."""
    conds = []
    for w in where:
        at = min(((w.find(op), op) for op in _OPS if op in w), default=None, key=lambda x: (x[0], -len(x[1])))
        if at is None or not w[: at[0]].strip():
            raise PrepareError(f"--where {w!r}: expected COLUMN=VALUE (or !=, <, <=, >, >=), e.g. kind=performance "
                               "or notes_per_second>=2")
        col, op, val = w[: at[0]].strip(), at[1], w[at[0] + len(at[1]) :].strip()
        if col in FIGURE_COLUMNS:
            try:
                float(val)
            except ValueError:
                raise PrepareError(f"--where {w!r}: {col} is a number; {val!r} is not") from None
        conds.append((col, op, val))
    return conds


def _holds(value, op: str, target: str) -> bool:
    if isinstance(value, str) and op in ("=", "!="):  # a split-file cell: compared as written
        return (value == target) == (op == "=")
    try:
        a, b = float(value), float(target)
    except (TypeError, ValueError):
        a, b = str(value), target
        if op not in ("=", "!="):
            return False
    return {"=": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def figure_filter(where: Iterable[str]) -> Callable[[FileResult], str]:
    """A check of the ``--where`` conditions on figure columns: the failed ones, or "" when all hold."""
    conds = [c for c in parse_where(where) if c[0] in FIGURE_COLUMNS]

    def failed(r: FileResult) -> str:
        return ", ".join(f"{c} {r.figure(c):g} (wanted {c}{op}{v})" for c, op, v in conds
                         if not _holds(r.figure(c), op, v))
    return failed


def read_splits_file(path: str | os.PathLike, where: Iterable[str] = ()) -> tuple[dict[str, str], dict[str, str]]:
    """``(split by relative path, reason by relative path for rows a --where filter excludes)``; conditions
    on figure columns are left to ``figure_filter``."""
    conds = [c for c in parse_where(where) if c[0] not in FIGURE_COLUMNS]
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            rows = list(reader)
    except OSError as e:
        raise PrepareError(f"--splits {path}: cannot be read ({e.strerror or e})") from None
    for col in ["path", "split"]:
        if col not in columns:
            raise PrepareError(f"--splits {path}: no column {col!r} (columns: {', '.join(columns)})")
    for col, _, _ in conds:
        if col not in columns:
            raise PrepareError(f"--where: no column {col!r}; the columns are {', '.join(columns)} (in {path}) "
                               f"and the figures {', '.join(FIGURE_COLUMNS)}")
    splits, excluded = {}, {}
    for n, row in enumerate(rows, start=2):
        rel, split = Path(row["path"].strip()).as_posix(), row["split"].strip()
        if not re.fullmatch(r"\w+", split):
            raise PrepareError(f"--splits {path}, line {n}: split {split!r} is not a valid split name")
        if rel in splits or rel in excluded:
            raise PrepareError(f"--splits {path}, line {n}: {rel} is listed twice")
        failed = [f"{c}={row[c]}" for c, op, v in conds if not _holds(row[c], op, v)]
        if failed:
            excluded[rel] = ", ".join(failed)
        else:
            splits[rel] = split
    return splits, excluded


def hash_split(rel: str, ratios: tuple[float, float, float]) -> str:
    """train / validation / test by a hash of the relative path: stable when files come and go."""
    u = int.from_bytes(hashlib.sha256(rel.encode("utf-8")).digest()[:8], "big") / 2**64
    if u < ratios[0]:
        return "train"
    return "validation" if u < ratios[0] + ratios[1] else "test"


def num_shards_for(num_files: int, num_bytes: int, max_shard_bytes: int, multiple: int = 8) -> int:
    """Shards for one split: a multiple of ``multiple`` when there are that many files (more when the
    bytes need it), else the largest power of two <= the file count (1, 2, 4, ...), which still
    divides a power-of-two ``multiple``."""
    if num_files < multiple:
        return 1 << (num_files.bit_length() - 1) if num_files else 0
    k = max(1, math.ceil(num_bytes / (multiple * max_shard_bytes)))
    return multiple * min(k, num_files // multiple)


def shard_name(split: str, index: int, count: int) -> str:
    return f"data/{split}-{index:05d}-of-{count:05d}.parquet"


# --------------------------------------------------------------------------- pass 3: write
def _features(pretokenize: bool):
    from datasets import Features, List, Value

    cols = {
        "midi": Value("binary"),
        "path": Value("string"),
        "sha256": Value("string"),
        "duration": Value("float64"),
        "num_notes": Value("int32"),
        "license": Value("string"),
        "source_sha256": Value("string"),
        "piece": Value("int32"),
    }
    cols.update({name: Value("float64") for name in FIGURE_COLUMNS})
    if pretokenize:
        cols["input_ids"] = List(Value("int16"))
        cols["sustain"] = Value("string")
    return Features(cols)


def _piece_bytes(data: bytes, f: FileResult, clean: CleanConfig, sustain: str, pieces_of: dict, ids: bool = True):
    """(MIDI bytes, event ids) of one row: the file itself uncleaned, else its piece written on the 10 ms
    grid (the ids decode to those bytes and the bytes encode to those ids)."""
    from ..remote_code.codec import decode, encode, performance_to_ids, score_to_performance
    from .cleaning import clean_performance

    if is_no_clean(clean):
        return data, encode(data, sustain=sustain, source=f.path) if ids else None
    if f.path not in pieces_of:
        import symusic

        pieces_of.clear()  # a file's pieces are consecutive rows: keep only the current file's
        perf = score_to_performance(symusic.Score.from_midi(data, ttype="second"), source=f.path)
        pieces_of[f.path] = clean_performance(perf, clean)
    perf = pieces_of[f.path][f.piece].performance
    midi = decode(performance_to_ids(perf, "events")).dumps_midi()
    return midi, performance_to_ids(perf, sustain)


def _write_shard(
    root: str, files: list[FileResult], dest: str, schema, license: str, pretokenize: bool, sustain: str,
    row_group_size: int, clean: CleanConfig = NO_CLEAN,
) -> tuple[int, int]:
    """Write one parquet shard; returns (rows, in-memory arrow bytes)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    blobs, ids, pieces_of = [], [], {}
    for f in files:
        with open(os.path.join(root, f.path), "rb") as fh:
            data = fh.read()
        if hashlib.sha256(data).hexdigest() != f.sha256:
            raise PrepareError(f"{f.path}: the file changed while prepare was running")
        midi, piece_ids = _piece_bytes(data, f, clean, sustain, pieces_of, pretokenize)
        blobs.append(midi)
        if pretokenize:
            ids.append(piece_ids.astype(np.int16))
    cols = {
        "midi": pa.array(blobs, pa.binary()),
        "path": pa.array([f.path for f in files], pa.string()),
        "sha256": pa.array([hashlib.sha256(b).hexdigest() for b in blobs], pa.string()),
        "duration": pa.array([f.duration for f in files], pa.float64()),
        "num_notes": pa.array([f.num_notes for f in files], pa.int32()),
        "license": pa.array([license] * len(files), pa.string()),
        "source_sha256": pa.array([f.sha256 for f in files], pa.string()),
        "piece": pa.array([f.piece for f in files], pa.int32()),
    }
    for k, name in enumerate(FIGURE_COLUMNS):
        cols[name] = pa.array([f.figures[k] for f in files], pa.float64())
    if pretokenize:
        offsets = np.concatenate(([0], np.cumsum([len(i) for i in ids]))).astype(np.int32)
        flat = np.concatenate(ids) if ids else np.empty(0, np.int16)
        cols["input_ids"] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.int16()))
        cols["sustain"] = pa.array([sustain] * len(files), pa.string())
    table = pa.table(cols, schema=schema)
    # Fixed writer settings, no timestamps: the same rows give the same bytes.
    pq.write_table(
        table, dest, row_group_size=row_group_size, compression="zstd", compression_level=3,
        use_dictionary=["license", "sustain"], write_statistics=["duration", "num_notes"],
        store_schema=True,
    )
    return len(files), table.nbytes


def _card(name: str, cfg: PrepareConfig, report: PrepareReport, sizes: dict[str, tuple[int, int]]) -> str:
    import yaml

    feats = _features(cfg.pretokenize)._to_yaml_list()
    splits = [{"name": s, "num_bytes": sizes[s][1], "num_examples": len(report.splits[s])} for s in report.splits]
    header = {
        "license": cfg.license,
        "pretty_name": name,
        "tags": ["midi", "music", "symbolic-music", "piano", "hf-midi"],
        "configs": [{
            "config_name": "default",
            "data_files": [{"split": s, "path": f"data/{s}-*"} for s in report.splits],
        }],
        "dataset_info": {
            "features": feats,
            "splits": splits,
            "download_size": sum(v[0] for v in sizes.values()),
            "dataset_size": sum(v[1] for v in sizes.values()),
        },
        "hf_midi": {"pretokenized": cfg.pretokenize, "vocab_size": VOCAB_SIZE}
        | ({"sustain": cfg.sustain} if cfg.pretokenize else {}),
    }
    rows = []
    for s, files in report.splits.items():
        hours = sum(f.duration for f in files) / 3600
        notes = sum(f.num_notes for f in files)
        rows.append(f"| {s} | {len(files)} | {hours:.2f} | {notes:,} | {report.num_shards[s]} |")
    reasons: dict[str, int] = {}
    for f in report.skipped:
        reasons[f.reason] = reasons.get(f.reason, 0) + 1
    skipped = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())) or "none"
    cleaning = _cleaning_section(cfg, report)
    ids = (
        f"- `input_ids` (list of int16): event ids made with `sustain={cfg.sustain!r}`, without "
        "`<bos>`/`<eos>`\n- `sustain` (string): the sustain mode of `input_ids`\n"
        if cfg.pretokenize else ""
    )
    body = f"""# {name}

Piano MIDI files packed by `hf-midi prepare` for the hf-midi performance-event tokenizer (Oore et al.
2018): one parquet row per file, with the file's bytes and a few facts about it.

| split | files | hours | notes | shards |
|---|---|---|---|---|
{chr(10).join(rows)}

Skipped: {len(report.skipped)} files or pieces ({skipped}); `skipped.csv` lists each with the reason.

{cleaning}
Splits: {"from `" + Path(cfg.splits_file).name + "`" if cfg.splits_file else
         "by a hash of the relative path, ratios " + "/".join(map(str, cfg.split_ratios))}.

{("## Source" + chr(10) + chr(10) + cfg.source.strip() + chr(10) + chr(10)) if cfg.source.strip() else ""}## Columns
- `midi` (binary): the piece as MIDI: the file byte for byte without cleaning; with it, the piece
  written on the codec's 10 ms grid, its first note at 0 s
- `path` (string): the source file's path relative to the source folder
- `sha256` (string): SHA-256 of `midi` (no two rows share one)
- `duration` (float64): seconds until the last note ends
- `num_notes` (int32): notes in non-drum tracks
- `license` (string): `{cfg.license}`
- `source_sha256` (string): SHA-256 of the source file; `piece` (int32): which piece of it (0, 1, ...)
- figures (float64), each selectable with `hf-midi prepare --where` (e.g. `--where "notes_per_second>=2"`):
  `start` (seconds into the source file), `lead_silence` (seconds trimmed before the first note),
  `seconds`, `notes_per_second`, `max_silence` (longest silence inside), `pitch_entropy` and
  `onset_entropy` (bits), `repetition` (share of 8-note pitch n-grams that repeat), `pedal_share`
{ids}
## Use
```python
from datasets import load_dataset
ds = load_dataset("path/or/repo-id", split="train", streaming=True)

from hf_midi import MidiTokenizer
from hf_midi.data.augmentation import AugmentConfig
from hf_midi.data.stream import MidiBlockStream
blocks = MidiBlockStream("path/or/repo-id", "train", MidiTokenizer(), 1024, augment=AugmentConfig())
```
"""
    return "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---\n\n" + body


def _cleaning_section(cfg: PrepareConfig, report: PrepareReport) -> str:
    if is_no_clean(cfg.clean):
        return "Cleaning: none (`--no-clean`): every file is stored as it is.\n"
    kept = [f for files in report.splits.values() for f in files]
    lead = sum(f.figure("lead_silence") for f in kept if f.piece == 0) / 3600
    cut = sum(f.figure("lead_silence") for f in kept if f.piece > 0) / 3600
    files = len({f.path for f in kept})
    rows = []
    for reason in SCREENED:
        gone = [f for f in report.skipped if f.reason == reason]
        if gone:
            rows.append(f"| {reason} | {len(gone)} | {sum(f.duration for f in gone) / 3600:.2f} |")
    table = "No piece was screened out."
    if rows:
        table = "| screened out | pieces | hours |\n|---|---|---|\n" + "\n".join(rows)
    return f"""## Cleaning

`hf-midi prepare` cleaned the files ({describe(cfg.clean)}): {len(kept)} pieces from {files} files;
{lead:.2f} h of leading silence trimmed, {cut:.2f} h of silence removed at the cuts. Every piece begins
with its first note (its ids never begin with a time shift).

{table}
"""


# --------------------------------------------------------------------------- the whole job
def _check_config(src: Path, out: Path, cfg: PrepareConfig) -> None:
    if not src.is_dir():
        raise PrepareError(f"{src}: not a folder of MIDI files")
    if out.exists() and not cfg.overwrite:
        raise PrepareError(f"{out}: already exists (pass --overwrite to replace it)")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise PrepareError(f"{out}: the output folder must not be inside the source folder {src}")
    if cfg.splits_file is None:
        r = cfg.split_ratios
        if len(r) != 3 or any(x < 0 for x in r) or abs(sum(r) - 1) > 1e-6:
            raise PrepareError(f"--split-ratios {r}: need three fractions >= 0 that sum to 1")
    conds = parse_where(cfg.where)
    if not cfg.splits_file:
        for col, _, _ in conds:
            if col not in FIGURE_COLUMNS:
                raise PrepareError(f"--where: no column {col!r}; without --splits the columns are the figures "
                                   f"{', '.join(FIGURE_COLUMNS)}")
    if cfg.clean.split_silence is not None and not cfg.clean.split_silence > 0:
        raise PrepareError(f"--split-silence {cfg.clean.split_silence}: must be > 0 seconds")
    if cfg.sustain not in SUSTAIN_MODES:
        raise PrepareError(f"--sustain {cfg.sustain!r}: must be one of {SUSTAIN_MODES}")
    if not re.fullmatch(r"[\w.+-]+", cfg.license):
        raise PrepareError(f"--license {cfg.license!r}: expected a license identifier such as mit")
    if cfg.shard_multiple < 1 or cfg.max_shard_bytes < 1 or cfg.row_group_size < 1:
        raise PrepareError("shard_multiple, max_shard_bytes and row_group_size must be >= 1")
    if cfg.num_workers is not None and cfg.num_workers < 0:
        raise PrepareError(f"--num-workers {cfg.num_workers}: must be >= 0")


def prepare_dataset(
    src: str | os.PathLike, out: str | os.PathLike, config: PrepareConfig | None = None
) -> PrepareReport:
    """Turn the MIDI files under ``src`` into the dataset folder ``out`` (see the module docstring).

    Raises ``PrepareError`` for bad arguments before any work starts. Bad files never stop the job:
    they are listed in the returned report and in ``out/skipped.csv``.
    """
    from tqdm.auto import tqdm

    cfg = config or PrepareConfig()
    src, out = Path(src), Path(out)
    _check_config(src, out, cfg)
    split_of, excluded = read_splits_file(cfg.splits_file, cfg.where) if cfg.splits_file else ({}, {})
    workers = (os.cpu_count() or 1) if cfg.num_workers is None else cfg.num_workers
    rels = find_midi_files(src)
    if not rels:
        raise PrepareError(f"{src}: no MIDI files (.mid, .midi) in it or below it; nothing was written")
    root = str(src)

    report = PrepareReport(out)
    wanted = []
    for rel in rels:
        if cfg.splits_file and rel not in split_of:
            if rel in excluded:
                report.skipped.append(FileResult(rel, reason="excluded by --where", detail=excluded[rel]))
            else:
                report.skipped.append(FileResult(rel, reason="not in split file"))
        else:
            wanted.append(rel)
    if not wanted:
        raise PrepareError(f"{src}: none of its {len(rels)} MIDI files is listed in --splits {cfg.splits_file}"
                           f"{' with --where ' + ' '.join(cfg.where) if cfg.where else ''}; nothing was written")
    present = set(rels)
    missing = [FileResult(r, reason="missing", detail="listed in the split file, not found")
               for r in split_of if r not in present]

    # Pass 1: scan, in batches so each task amortises its pickling.
    batches = [wanted[i : i + 8] for i in range(0, len(wanted), 8)]
    with tqdm(total=len(batches), desc="scan", unit="batch", disable=not cfg.progress) as bar:
        scanned = _robust_map(
            _scan_batch, [(root, b, cfg.clean) for b in batches], min(workers, len(batches)) if batches else 0,
            on_crash=lambda t: _isolate_crash(t[0], t[1], t[2]), progress=bar.update,
        )
    results = [r for batch in scanned for r in batch]

    # Pass 2: duplicates (first path in sorted order wins), screens, --where on figures, splits, shards.
    _assign(results, split_of, cfg, report)
    report.skipped = sorted(report.skipped + missing, key=lambda f: f.path)
    if not report.splits:  # every file was unreadable or a duplicate: no dataset, and say why
        why = "; ".join(f"{f.path}: {f.reason}{f' ({f.detail})' if f.detail else ''}" for f in report.skipped[:3])
        raise PrepareError(f"{src}: none of its {len(wanted)} MIDI files could be used ({why}"
                           f"{'; ...' if len(report.skipped) > 3 else ''}); nothing was written")
    jobs = _shard_jobs(report, cfg)

    # Pass 3: write into a hidden folder beside `out`, then swap it into place (utils.atomic_folder).
    schema = _features(cfg.pretokenize).arrow_schema
    with atomic_folder(out) as tmp:
        (tmp / "data").mkdir()
        sizes: dict[str, list[int]] = {s: [0, 0] for s in report.splits}
        with tqdm(total=len(jobs), desc="write", unit="shard", disable=not cfg.progress) as bar:
            written = _robust_map(
                _write_shard,
                [(root, files, str(tmp / shard_name(s, i, n)), schema, cfg.license, cfg.pretokenize,
                  cfg.sustain, cfg.row_group_size, cfg.clean) for s, i, n, files in jobs],
                min(workers, len(jobs)) if jobs else 0,
                on_crash=lambda t: _raise(PrepareError(f"a worker crashed writing {Path(t[2]).name}")),
                progress=bar.update,
            )
        for (split, i, n, _), (_, nbytes) in zip(jobs, written):
            sizes[split][0] += (tmp / shard_name(split, i, n)).stat().st_size
            sizes[split][1] += nbytes
        with open(tmp / SKIPPED_FILE, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["path", "reason", "detail"])
            w.writerows([s.path, s.reason, s.detail] for s in report.skipped)
        (tmp / "README.md").write_text(_card(out.name, cfg, report, {k: tuple(v) for k, v in sizes.items()}),
                                       encoding="utf-8")
        _check_signal()
    return report


def _assign(results: list[FileResult], split_of: dict[str, str], cfg: PrepareConfig, report: PrepareReport) -> None:
    """Pass 2: each scanned piece kept in its split or skipped with its reason (a file's duplicate, a screen,
    a --where on figures), into ``report``; PrepareError when the screens would empty a split."""
    first_of: dict[str, str] = {}
    kept: dict[str, list[FileResult]] = {}
    screened: dict[str, dict[str, int]] = {}  # split -> reason -> pieces screened out
    fails = figure_filter(cfg.where)
    for r in results:  # sorted by path, then piece
        split = split_of.get(r.path) if cfg.splits_file else hash_split(r.path, cfg.split_ratios)
        if r.reason:
            report.skipped.append(r)
            if r.reason in SCREENED:
                screened.setdefault(split, {}).setdefault(r.reason, 0)
                screened[split][r.reason] += 1
        elif first_of.get(r.sha256, r.path) != r.path:
            report.skipped.append(replace(r, reason="duplicate", detail=f"same bytes as {first_of[r.sha256]}"))
        elif failed := fails(r):
            first_of[r.sha256] = r.path
            report.skipped.append(replace(r, reason="excluded by --where", detail=f"piece {r.piece}: {failed}"))
        else:
            first_of[r.sha256] = r.path
            kept.setdefault(split, []).append(r)
    for split, reasons in screened.items():  # a screen must not empty a split
        if split not in kept:
            counts = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
            raise PrepareError(f"the screens would leave split {split!r} empty: all its pieces were screened "
                               f"out ({counts}; {describe(cfg.clean)}); nothing was written. Loosen the "
                               "screen or pass --no-clean")
    order = {s: i for i, s in enumerate(STANDARD_SPLITS)}
    report.splits = {s: kept[s] for s in sorted(kept, key=lambda s: (order.get(s, 99), s))}


def _shard_jobs(report: PrepareReport, cfg: PrepareConfig) -> list[tuple[str, int, int, list[FileResult]]]:
    """(split, shard index, shard count, its pieces) for every shard; the counts into ``report``. Round-robin
    by file: every shard is a cross-section of the (sorted) corpus, and a file's pieces stay together in
    one shard (it is parsed once)."""
    jobs = []
    for split, files in report.splits.items():
        paths = sorted({f.path for f in files})
        n = num_shards_for(len(paths), sum(f.size for f in files), cfg.max_shard_bytes, cfg.shard_multiple)
        report.num_shards[split] = n
        shard_of = {p: i % n for i, p in enumerate(paths)}
        for i in range(n):
            jobs.append((split, i, n, [f for f in files if shard_of[f.path] == i]))
    return jobs


def _isolate_crash(root: str, rels: list[str], clean: CleanConfig = NO_CLEAN) -> list[FileResult]:
    """A batch that killed its worker: rescan its files one process each to name the culprit."""
    out = []
    for rel in rels:
        try:
            with ProcessPoolExecutor(1) as ex:
                out.extend(ex.submit(_scan_batch, root, [rel], clean).result())
        except BrokenProcessPool:
            out.append(FileResult(rel, reason="parser crashed", detail="reading it killed the worker process"))
    return out


def _raise(e: Exception):
    raise e


# --------------------------------------------------------------------------- CLI
class _Ratios(argparse.Action):
    """``--split-ratios 0.8 0.1 0.1``: three numbers; anything else is named with the expected form."""

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            ratios = [float(v) for v in values]
        except ValueError:
            ratios = []
        if len(ratios) != 3:
            raise argparse.ArgumentError(self, f"got {' '.join(values)!r}; it takes three numbers separated by "
                                               "spaces, e.g. --split-ratios 0.8 0.1 0.1")
        setattr(namespace, self.dest, ratios)


def configure_prepare(p: argparse.ArgumentParser) -> None:
    d = PrepareConfig()
    p.add_argument("src", help="folder of .mid/.midi files (searched recursively)")
    p.add_argument("out", help="dataset folder to write (data/*.parquet, README.md, skipped.csv)")
    p.add_argument("--splits", dest="splits_file", metavar="CSV", default=None,
                   help="CSV with columns path,split (paths relative to SRC); unlisted files are skipped")
    p.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                   help="keep only what meets COLUMN=VALUE (or !=, <, <=, >, >=; repeatable): a column of the split "
                        "file (e.g. kind=performance) or a piece's figure (e.g. \"notes_per_second>=2\"; the figures: "
                        + ", ".join(FIGURE_COLUMNS) + ")")
    p.add_argument("--split-ratios", action=_Ratios, nargs="+", default=list(d.split_ratios),
                   metavar="FRACTION",
                   help="hash split fractions of train, validation and test without --splits: three numbers, "
                        "e.g. --split-ratios 0.8 0.1 0.1")
    p.add_argument("--license", default=d.license, help="license identifier of the source, e.g. mit")
    p.add_argument("--source", default=d.source, metavar="TEXT",
                   help="where the files come from and whom to credit (authors, paper, licence): "
                        "the dataset card's Source section")
    p.add_argument("--pretokenize", action="store_true", help="also store event ids (input_ids)")
    p.add_argument("--sustain", choices=SUSTAIN_MODES, default=d.sustain, help="sustain mode of stored ids")
    p.add_argument("--num-workers", type=int, default=None, help="processes (default: one per core)")
    p.add_argument("--shard-multiple", type=int, default=d.shard_multiple,
                   help="shard counts are multiples of this (ranks x DataLoader workers that read whole shards)")
    p.add_argument("--max-shard-mb", type=float, default=d.max_shard_bytes / 2**20,
                   help="more shards when a split's MIDI exceeds shard-multiple x this")
    p.add_argument("--no-clean", action="store_true",
                   help="keep every file as it is: no cut at long silences, no trimmed start, no screens")
    p.add_argument("--split-silence", type=float, default=d.clean.split_silence, metavar="SECONDS",
                   help="cut recordings into separate pieces at silences longer than this")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


_signalled: list[int] = []
_quiet_signals: list[bool] = []  # non-empty while the process pools run: a signal is only recorded


def _on_signal(signum, frame):
    # Python drops an exception raised while it runs some internal callbacks (at fork, say), so the
    # signal is also remembered and checked again at every step of the job (`_check_signal`).
    _signalled.append(signum)
    if not _quiet_signals:
        raise KeyboardInterrupt


def _check_signal() -> None:
    if _signalled:
        raise KeyboardInterrupt


def run_prepare(args: argparse.Namespace) -> int:
    import signal

    cfg = PrepareConfig(
        splits_file=args.splits_file, where=tuple(args.where), split_ratios=tuple(args.split_ratios),
        license=args.license, source=args.source, pretokenize=args.pretokenize, sustain=args.sustain,
        num_workers=args.num_workers, shard_multiple=args.shard_multiple,
        max_shard_bytes=int(args.max_shard_mb * 2**20),
        overwrite=args.overwrite, progress=not args.quiet,
        clean=NO_CLEAN if args.no_clean else CleanConfig(split_silence=args.split_silence),
    )
    # SIGTERM (a killed job) cleans up like Ctrl-C: the temporary folder is removed.
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    report = prepare_dataset(args.src, args.out, cfg)
    print(f"wrote {report.out}\n{report.summary()}", file=sys.stderr)
    return 0


__all__ = [
    "FileResult", "PrepareConfig", "PrepareError", "PrepareReport", "configure_prepare", "find_midi_files",
    "hash_split", "num_shards_for", "prepare_dataset", "read_splits_file", "run_prepare", "shard_name",
]
