"""Data pipeline throughput: the whole stream next to the bare codec, and ``prepare`` on real corpora.

    python benchmarks/bench_data.py [--data ../shared/data] [--rounds 3] [--block-size 1024]

1. ``prepare`` the full POP909 folder (plain and pre-tokenised) and the ASAP performances: files/s.
2. On the POP909 train split, side by side in one process (one core), alternating for ``--rounds``
   rounds and keeping each one's median:
   - ``codec``: ``codec.encode(bytes)`` on the same files already in memory (+2 for ``<bos>``/``<eos>``);
   - ``stream/*``: every token ``MidiBlockStream`` delivers as tensors (parquet read through
     ``datasets`` streaming, parse, augment, encode, pack, shuffle), with and without augmentation,
     parsing the MIDI or reading pre-tokenised ids.
   Tokens per second per core use the process's CPU time (all its threads, so arrow's reader threads
   count), which other jobs on a shared machine disturb less than wall time; wall figures are there too.

Goal (issue 3): >= 2M tokens/s per core through the stream, and the stream at least half the codec's
speed. The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

GOAL_TOKENS_PER_S = 2_000_000
GOAL_RATIO = 0.5


def _timed(fn):
    c, w = time.process_time(), time.perf_counter()
    n = fn()
    return n, time.process_time() - c, time.perf_counter() - w


def bench_prepare(name, src, out, **kw) -> dict:
    from hf_midi.data.prepare import PrepareConfig, prepare_dataset

    cfg = PrepareConfig(progress=False, **kw)
    t = time.perf_counter()
    report = prepare_dataset(src, out, cfg)
    dt = time.perf_counter() - t
    files = sum(len(f) for f in report.splits.values()) + len(report.skipped)
    result = {"files": files, "kept": files - len(report.skipped), "seconds": round(dt, 3),
              "files_per_s": round(files / dt, 1), "workers": cfg.num_workers or os.cpu_count(),
              "pretokenize": cfg.pretokenize}
    print(f"prepare {name}: {files} files in {dt:.2f} s = {files / dt:.0f} files/s "
          f"({result['workers']} workers)", file=sys.stderr)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--block-size", type=int, default=1024)
    ap.add_argument("--profile", action="store_true", help="print a cProfile of the augmented stream")
    args = ap.parse_args()

    import datasets
    import numpy as np
    import pyarrow
    import pyarrow.parquet as pq
    import symusic
    import torch

    from hf_midi import MidiTokenizer
    from hf_midi.data.augmentation import AugmentConfig
    from hf_midi.data.stream import MidiBlockStream
    from hf_midi.remote_code import codec

    torch.set_num_threads(1)
    data = Path(args.data)
    work = Path(tempfile.mkdtemp(prefix="bench_data_"))
    pop, pop_tok, asap = work / "pop909", work / "pop909_tok", work / "asap"
    prepare = {
        "pop909": bench_prepare("pop909", data / "pop909", pop, splits_file=str(data / "pop909/split.csv"),
                                license="mit"),
        "pop909_pretokenized": bench_prepare(
            "pop909 --pretokenize", data / "pop909", pop_tok, splits_file=str(data / "pop909/split.csv"),
            license="mit", pretokenize=True),
        "asap_performances": bench_prepare(
            "asap", data / "asap", asap, splits_file=str(data / "asap/split_by_piece.csv"),
            where=("kind=performance",), license="cc-by-nc-sa-4.0"),
    }

    tok = MidiTokenizer()
    blobs = [b for f in sorted((pop / "data").glob("train-*.parquet"))
             for b in pq.read_table(f, columns=["midi"]).column(0).to_pylist()]
    L = args.block_size

    def codec_run():
        return sum(len(codec.encode(b)) + 2 for b in blobs)

    def codec_aug_run():
        aug, n = AugmentConfig(), 0
        for i, b in enumerate(blobs):
            perf = codec.score_to_performance(codec.load_score(b))
            rng = np.random.default_rng(i)
            s, f = aug.sample(rng)
            n += len(codec.performance_to_ids(codec.stretch(codec.transpose(perf, s), f))) + 2
        return n

    def stream_run(ds, **kw):
        return lambda: sum(b["input_ids"].numel() for b in MidiBlockStream(str(ds), "train", tok, L, **kw))

    runs = {
        "codec": codec_run,
        "codec_augmented": codec_aug_run,
        "stream/parse": stream_run(pop),
        "stream/parse+augment": stream_run(pop, augment=AugmentConfig()),
        "stream/parse+augment+crop": stream_run(pop, augment=AugmentConfig(), mode="crop"),
        "stream/pretokenized": stream_run(pop_tok),
        "stream/pretokenized+transpose": stream_run(pop_tok, augment=AugmentConfig(stretch=(1.0, 1.0))),
    }
    for fn in runs.values():  # warm-up: imports, page cache, first load_dataset
        fn()
    samples = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            samples[name].append(_timed(fn))
    results = {}
    for name, s in samples.items():
        tokens = s[0][0]
        cpu, wall = statistics.median(x[1] for x in s), statistics.median(x[2] for x in s)
        results[name] = {"tokens": tokens, "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
                         "tokens_per_s_per_core": round(tokens / cpu), "tokens_per_s_wall": round(tokens / wall)}
    base = results["codec"]["tokens_per_s_per_core"]
    for name, r in results.items():
        r["ratio_vs_codec"] = round(r["tokens_per_s_per_core"] / base, 3)
        print(f"{name:32s} {r['tokens_per_s_per_core'] / 1e6:7.2f} M tok/s/core  "
              f"(wall {r['tokens_per_s_wall'] / 1e6:6.2f} M)  x{r['ratio_vs_codec']:.2f} codec", file=sys.stderr)

    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(runs["stream/parse+augment"])
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(15)
        print(buf.getvalue(), file=sys.stderr)

    main_stream = results["stream/parse+augment"]
    summary = {
        "benchmark": "bench_data",
        "block_size": L,
        "rounds": args.rounds,
        "train_files": len(blobs),
        "prepare": prepare,
        "throughput": results,
        "goals": {
            "tokens_per_s_per_core": GOAL_TOKENS_PER_S,
            "stream_vs_codec": GOAL_RATIO,
            "stream_measured": "stream/parse+augment",
            "met_tokens_per_s": main_stream["tokens_per_s_per_core"] >= GOAL_TOKENS_PER_S,
            "met_ratio": main_stream["ratio_vs_codec"] >= GOAL_RATIO,
        },
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]},
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "symusic": symusic.__version__,
                     "datasets": datasets.__version__, "pyarrow": pyarrow.__version__, "torch": torch.__version__},
    }
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
