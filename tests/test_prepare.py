"""hf-midi prepare: MIDI folder -> Hub-style parquet dataset (committed fixtures + broken files)."""

from __future__ import annotations

import csv
import faulthandler
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import EDGE_FIXTURES, POP909_FIXTURES, SHARED_DATA, requires_shared_data

from hf_midi.data.cleaning import NO_CLEAN
from hf_midi.data.prepare import (
    PrepareConfig,
    PrepareError,
    _robust_map,
    hash_split,
    num_shards_for,
    prepare_dataset,
)
from hf_midi.remote_code import codec

pytest.importorskip("datasets")
pq = pytest.importorskip("pyarrow.parquet")

BROKEN = {  # edge fixture -> the reason prepare must give
    "test-empty-file.mid": "unreadable",
    "test-not-a-midi-file.mid": "unreadable",
    "test-corrupt-file-missing-byte.mid": "unreadable",
    "test-illegal-message-f4.mid": "unreadable",
    "test-empty.mid": "no notes",
    "test-all-gm-percussion.mid": "no notes",
}
GOOD_EDGE = ["test-c-major-scale.mid", "test-control-40-damper.mid", "test-2-tracks-type-1.mid",
             "test-multichannel-chords-1.mid", "test-running-status-metaevent.mid"]


def RawConfig(**kw) -> PrepareConfig:  # noqa: N802 (reads as the config it makes)
    """The mechanics of prepare (files, shards, crashes, bytes kept as they are), cleaning off; the
    cleaning has its own tests (test_cleaning.py)."""
    return PrepareConfig(clean=NO_CLEAN, **kw)


def _fixture_splits() -> dict[str, str]:
    with open(POP909_FIXTURES[0].parent / "split.csv", newline="") as f:
        return {r["path"]: r["split"] for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[Path, Path]:
    """POP909 fixtures in a sub-folder, good and broken edge files, a duplicate, an unlisted file, a
    text file, and a split CSV (with a row whose file is missing)."""
    src = tmp_path_factory.mktemp("src")
    (src / "pop").mkdir()
    for f in POP909_FIXTURES:
        shutil.copy(f, src / "pop" / f.name)
    (src / "edge").mkdir()
    for name in [*BROKEN, *GOOD_EDGE]:
        shutil.copy(EDGE_FIXTURES / name, src / "edge" / name)
    shutil.copy(POP909_FIXTURES[0], src / "pop" / "copy of 001.MIDI")  # duplicate bytes, upper-case suffix
    shutil.copy(EDGE_FIXTURES / "test-corrupt-file-extra-byte.mid", src / "unlisted.mid")  # parses
    (src / "notes.txt").write_text("not MIDI, not looked at")
    rows = [(f"pop/{p}", s) for p, s in _fixture_splits().items()]
    rows += [(f"edge/{n}", "train") for n in [*BROKEN, *GOOD_EDGE]]
    rows += [("pop/copy of 001.MIDI", "test"), ("pop/gone.mid", "train")]
    csv_path = tmp_path_factory.mktemp("csv") / "split.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "kind", "split"])
        w.writerows((p, "score" if p.endswith("chords-1.mid") else "performance", s) for p, s in rows)
    return src, csv_path


@pytest.fixture(scope="module")
def prepared(source, tmp_path_factory):
    src, csv_path = source
    out = tmp_path_factory.mktemp("out") / "ds"
    cfg = RawConfig(splits_file=str(csv_path), license="mit", pretokenize=True, num_workers=2, progress=False)
    return out, prepare_dataset(src, out, cfg)


def _skipped(out: Path) -> dict[str, tuple[str, str]]:
    with open(out / "skipped.csv", newline="") as f:
        return {r["path"]: (r["reason"], r["detail"]) for r in csv.DictReader(f)}


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_good_file_once_every_bad_one_reported(prepared, source):
    out, report = prepared
    src, _ = source
    splits = {f"pop/{p}": s for p, s in _fixture_splits().items()}
    splits |= {f"edge/{n}": "train" for n in GOOD_EDGE}
    seen = {}
    for shard in sorted((out / "data").glob("*.parquet")):
        split = shard.name.split("-")[0]
        table = pq.read_table(shard)
        for row in table.to_pylist():
            assert row["path"] not in seen, f"{row['path']} is in two shards"
            seen[row["path"]] = split
            data = (src / row["path"]).read_bytes()
            assert row["midi"] == data and row["sha256"] == hashlib.sha256(data).hexdigest()
            perf = codec.score_to_performance(codec.load_score(data))
            assert row["num_notes"] == perf.num_notes
            assert row["duration"] == pytest.approx(perf.duration, abs=1e-6)
            assert row["license"] == "mit"
            assert row["input_ids"] == codec.encode(data).tolist()
            assert row["sustain"] == "events"
    assert seen == splits  # every good file lands in exactly the split the CSV gives it

    skipped = _skipped(out)
    for name, reason in BROKEN.items():
        assert skipped[f"edge/{name}"][0] == reason
    assert skipped["edge/test-empty-file.mid"][1] == "the file is empty (0 bytes)"
    assert skipped["pop/copy of 001.MIDI"] == ("duplicate", "same bytes as pop/001.mid")
    assert skipped["unlisted.mid"][0] == "not in split file"
    assert skipped["pop/gone.mid"][0] == "missing"
    assert len(skipped) == len(BROKEN) + 3
    assert {f.path for f in report.skipped} == set(skipped)
    assert "notes.txt" not in skipped


def test_shards_and_card(prepared):
    out, report = prepared
    names = sorted(p.name for p in (out / "data").iterdir())
    # 5 + 5 good train files -> 8 shards; 2 validation -> 2; 2 test -> 2
    assert report.num_shards == {"train": 8, "validation": 2, "test": 2}
    assert names[:2] == ["test-00000-of-00002.parquet", "test-00001-of-00002.parquet"]
    assert sum(n.startswith("train-") and n.endswith("-of-00008.parquet") for n in names) == 8
    card = (out / "README.md").read_text()
    import yaml

    header = yaml.safe_load(card.split("---\n")[1])
    assert header["license"] == "mit"
    assert header["configs"][0]["data_files"][0] == {"split": "train", "path": "data/train-*"}
    assert {s["name"]: s["num_examples"] for s in header["dataset_info"]["splits"]} == {
        "train": 10, "validation": 2, "test": 2}
    assert {f["name"] for f in header["dataset_info"]["features"]} >= {"midi", "path", "input_ids"}
    hours = sum(f.duration for f in report.splits["train"]) / 3600
    assert f"| train | 10 | {hours:.2f} |" in card
    assert "Skipped: 9 files" in card


def test_load_dataset_reads_the_output(prepared):
    from datasets import load_dataset

    out, report = prepared
    ds = load_dataset(str(out))
    assert {s: len(ds[s]) for s in ds} == {s: len(f) for s, f in report.splits.items()}
    assert ds["train"].features["midi"].dtype == "binary"
    assert ds["train"].features["input_ids"].feature.dtype == "int16"
    streamed = load_dataset(str(out), split="validation", streaming=True)
    assert sorted(r["path"] for r in streamed) == sorted(ds["validation"]["path"])


def test_rerun_is_byte_identical(prepared, source):
    out, _ = prepared
    src, csv_path = source
    before = _tree(out)
    # Another worker count and in-process: the same bytes.
    cfg = RawConfig(splits_file=str(csv_path), license="mit", pretokenize=True, num_workers=0,
                        overwrite=True, progress=False)
    prepare_dataset(src, out, cfg)
    assert _tree(out) == before
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_interrupted_run_leaves_nothing(source, tmp_path, monkeypatch):
    import hf_midi.data.prepare as dp

    src, csv_path = source
    out = tmp_path / "ds"
    calls = []
    real = dp._write_shard

    def write_then_interrupt(*args):  # a real Ctrl-C in the middle of writing the shards
        calls.append(args[2])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(dp, "_write_shard", write_then_interrupt)
    cfg = RawConfig(splits_file=str(csv_path), num_workers=0, progress=False)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(src, out, cfg)
    assert Path(calls[0]).exists() is False  # the shards written before the interrupt are gone too
    assert list(tmp_path.iterdir()) == []

    # An interrupted --overwrite keeps the old dataset whole.
    monkeypatch.setattr(dp, "_write_shard", real)
    prepare_dataset(src, out, cfg)
    before = _tree(out)
    calls.clear()
    monkeypatch.setattr(dp, "_write_shard", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(src, out, RawConfig(splits_file=str(csv_path), num_workers=0, progress=False,
                                                overwrite=True, pretokenize=True))
    assert _tree(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def _segfault_on(name):
    import hf_midi.data.prepare as dp

    real = dp._scan_one

    def scan(root, rel, *clean):
        if rel.endswith(name):
            faulthandler.disable()  # pytest's traceback dump would only add noise
            os.kill(os.getpid(), signal.SIGSEGV)  # what a crashing C parser does to its process
        return real(root, rel, *clean)

    return scan


def test_worker_crash_is_reported_not_fatal(source, tmp_path, monkeypatch):
    import hf_midi.data.prepare as dp

    src, csv_path = source
    monkeypatch.setattr(dp, "_scan_one", _segfault_on("test-c-major-scale.mid"))  # forked workers inherit it
    out = tmp_path / "ds"
    report = prepare_dataset(src, out, RawConfig(splits_file=str(csv_path), num_workers=2, progress=False))
    skipped = _skipped(out)
    assert skipped["edge/test-c-major-scale.mid"][0] == "parser crashed"
    kept = {f.path for files in report.splits.values() for f in files}
    assert len(kept) == 13 and "pop/001.mid" in kept and "edge/test-control-40-damper.mid" in kept


def _square_or_die(x):
    if x in (13, 27):
        os._exit(3)
    return x * x


def test_robust_map_isolates_the_crashing_task():
    done = []
    out = _robust_map(_square_or_die, [(i,) for i in range(40)], 2, on_crash=lambda t: -1, progress=done.append)
    assert out == [-1 if i in (13, 27) else i * i for i in range(40)]
    assert sum(done) == 40


def test_hash_split_and_ratios(source, tmp_path):
    src, _ = source
    out = tmp_path / "ds"
    report = prepare_dataset(src, out, RawConfig(split_ratios=(0.5, 0.25, 0.25), num_workers=0, progress=False))
    for split, files in report.splits.items():
        for f in files:
            assert hash_split(f.path, (0.5, 0.25, 0.25)) == split
    assert sum(len(f) for f in report.splits.values()) == 15  # 9 pop + 5 good edge + unlisted
    us = [int.from_bytes(hashlib.sha256(f"{i}.mid".encode()).digest()[:8], "big") / 2**64 for i in range(2000)]
    counts = {s: sum(hash_split(f"{i}.mid", (0.8, 0.1, 0.1)) == s for i in range(2000)) for s in
              ("train", "validation", "test")}
    assert abs(counts["train"] - 1600) < 100 and counts["train"] == sum(u < 0.8 for u in us)


def test_where_filter(source, tmp_path):
    src, csv_path = source
    out = tmp_path / "ds"
    prepare_dataset(src, out, RawConfig(splits_file=str(csv_path), where=("kind=performance",),
                                            num_workers=0, progress=False))
    assert _skipped(out)["edge/test-multichannel-chords-1.mid"] == ("excluded by --where", "kind=score")


@pytest.mark.parametrize(
    ("files", "nbytes", "expected"),
    [(0, 0, 0), (1, 10, 1), (3, 10, 2), (5, 10, 4), (7, 10, 4), (8, 10, 8), (500, 10**6, 8),
     (500, 17 * 2**20, 24), (20, 10**12, 16)],
)
def test_num_shards(files, nbytes, expected):
    n = num_shards_for(files, nbytes, max_shard_bytes=2**20)
    assert n == expected
    assert n == 0 or (8 % n == 0 if files < 8 else n % 8 == 0)


def test_bad_arguments_fail_before_any_work(source, tmp_path):
    src, csv_path = source
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("file,split\na.mid,train\n")
    bad_split = tmp_path / "bad_split.csv"
    bad_split.write_text("path,split\na.mid,train set\n")
    cases = [
        (tmp_path / "nope", tmp_path / "o1", {}, "not a folder"),
        (src, tmp_path / "o2", {"splits_file": str(bad_csv)}, "no column 'path'"),
        (src, tmp_path / "o3", {"splits_file": str(bad_split)}, "line 2"),
        (src, tmp_path / "o4", {"split_ratios": (0.9, 0.2, 0.1)}, "--split-ratios"),
        (src, tmp_path / "o5", {"license": "MIT License!"}, "--license"),
        (src, tmp_path / "o6", {"where": ("kind",), "splits_file": str(csv_path)}, "COLUMN=VALUE"),
        (src, tmp_path / "o7", {"splits_file": str(tmp_path / "missing.csv")}, "missing.csv"),
        (src, src / "inside", {}, "inside the source"),
    ]
    for s, o, kw, message in cases:
        with pytest.raises(PrepareError, match=message):
            prepare_dataset(s, o, RawConfig(progress=False, **kw))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "bad_split.csv"]
    existing = tmp_path / "exists"
    existing.mkdir()
    with pytest.raises(PrepareError, match="already exists"):
        prepare_dataset(src, existing, RawConfig(progress=False))


@pytest.mark.slow
def test_cli(source, tmp_path):
    src, csv_path = source
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "hf_midi.cli", "prepare", str(src), str(out), "--splits", str(csv_path),
           "--license", "mit", "--quiet", "--num-workers", "1"]
    done = subprocess.run(cmd + ["--no-clean"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "train: 10 files" in done.stderr and "edge/test-empty-file.mid: unreadable" in done.stderr
    # Cleaned (the default): the short edge files are screened out, each named with its reason
    cleaned = subprocess.run(cmd[:5] + [str(tmp_path / "clean")] + cmd[6:], capture_output=True, text=True,
                             timeout=120)
    assert cleaned.returncode == 0, cleaned.stderr
    assert "edge/test-c-major-scale.mid: too short (piece 0" in cleaned.stderr
    again = subprocess.run(cmd + ["--no-clean"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "already exists" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.data
@requires_shared_data
def test_pop909_every_file_in_its_split(tmp_path):
    root = SHARED_DATA / "pop909"
    out = tmp_path / "pop909"
    report = prepare_dataset(root, out, RawConfig(splits_file=str(root / "split.csv"), license="mit",
                                                      progress=False))
    with open(root / "split.csv", newline="") as f:
        expected = {r["path"]: r["split"] for r in csv.DictReader(f)}
    got = {f.path: s for s, files in report.splits.items() for f in files}
    assert got == expected and not report.skipped
    assert report.num_shards == {"train": 8, "validation": 8, "test": 8}
    hours = {s: sum(f.duration for f in files) / 3600 for s, files in report.splits.items()}
    assert hours["train"] == pytest.approx(50.3, abs=0.5)


@pytest.mark.data
@pytest.mark.slow
@requires_shared_data
def test_sigterm_mid_run_leaves_nothing(tmp_path):
    root = SHARED_DATA / "pop909"
    out = tmp_path / "ds"
    proc = subprocess.Popen([sys.executable, "-m", "hf_midi.cli", "prepare", str(root), str(out), "--quiet",
                             "--pretokenize", "--num-workers", "2"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.name.startswith(".ds.") for p in tmp_path.iterdir()):  # being written
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode != 0, err
    assert list(tmp_path.iterdir()) == [], err


def test_shards_balance_the_corpus(prepared):
    # Round-robin over the sorted paths: each shard is a cross-section, not one folder's files.
    out, report = prepared
    per_shard = [pq.read_metadata(p).num_rows for p in sorted((out / "data").glob("train-*.parquet"))]
    assert max(per_shard) - min(per_shard) <= 1 and sum(per_shard) == 10
    paths = [pq.read_table(p, columns=["path"]).column(0).to_pylist()
             for p in sorted((out / "data").glob("train-*.parquet"))]
    assert np.all([len(p) >= 1 for p in paths])


@requires_shared_data
def test_corrupt_values_and_segfault_files_are_skipped(tmp_path):
    # symusic 0.5.9 stores controller value 168 from one file and segfaults on the other; prepare must
    # report both as unreadable and keep the good file.
    src = tmp_path / "src"
    src.mkdir()
    corrupted = SHARED_DATA / "edge_cases" / "symusic_testcases" / "MIDIs_corrupted"
    for name in ("ValueError_Control168.mid", "Issue104_Bizarre_Love_Triangle2.mid"):
        shutil.copy(corrupted / name, src / name)
    shutil.copy(POP909_FIXTURES[0], src / "good.mid")
    report = prepare_dataset(src, tmp_path / "out", RawConfig(split_ratios=(1.0, 0.0, 0.0), num_workers=0,
                                                                   progress=False))
    reasons = {s.path: s.reason for s in report.skipped}
    assert reasons == {"ValueError_Control168.mid": "unreadable", "Issue104_Bizarre_Love_Triangle2.mid": "unreadable"}
    assert [f.path for files in report.splits.values() for f in files] == ["good.mid"]


def test_the_card_credits_the_source(tmp_path):
    src = POP909_FIXTURES[0].parent
    credit = "POP909 (Wang et al., ISMIR 2020), MIT licence: github.com/music-x-lab/POP909-Dataset"
    prepare_dataset(src, tmp_path / "a", RawConfig(splits_file=str(src / "split.csv"), license="mit",
                                                       source=credit, num_workers=0, progress=False))
    card = (tmp_path / "a" / "README.md").read_text()
    assert f"## Source\n\n{credit}\n\n## Columns" in card
    prepare_dataset(src, tmp_path / "b", RawConfig(splits_file=str(src / "split.csv"), license="mit",
                                                       num_workers=0, progress=False))
    assert "## Source" not in (tmp_path / "b" / "README.md").read_text()


def test_a_folder_with_nothing_to_prepare_is_an_error_at_prepare_time(tmp_path):
    """`hf-midi prepare` on a folder without MIDI, or whose files are all unusable, names the folder and
    writes nothing (not an empty dataset that training would trip over later)."""
    empty = tmp_path / "notes"
    empty.mkdir()
    (empty / "readme.txt").write_text("no music here")
    proc = subprocess.run([sys.executable, "-m", "hf_midi.cli", "prepare", str(empty), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert f"{empty}: no MIDI files (.mid, .midi)" in proc.stderr and "nothing was written" in proc.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    (broken / "b.mid").write_bytes(b"not midi at all")
    with pytest.raises(PrepareError, match=r"none of its 2 MIDI files could be used \(a\.mid: "):
        prepare_dataset(broken, tmp_path / "out", RawConfig(num_workers=0, progress=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "notes"]


def test_split_ratios_say_their_format(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "hf_midi.cli", "prepare", str(tmp_path), str(tmp_path / "out"),
                           "--split-ratios", "0.8,0.1,0.1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "three numbers separated by spaces, e.g. --split-ratios 0.8 0.1 0.1" in proc.stderr
