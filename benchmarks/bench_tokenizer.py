"""Tokenizer speed, side by side in one run: symusic parsing alone, our codec (encode with the
parse, decode), and MidiTok 3.1's MIDILike on the same files.

    python benchmarks/bench_tokenizer.py [--data ../shared/data] [--repeats 5] [--baseline REV]

Files: the POP909 and ASAP test splits. Each method runs over every file of a corpus, the methods
take turns, and each keeps its best pass of ``--repeats``. Times are this process's CPU time
(``time.process_time``): on a small machine shared with other jobs, wall time mostly measures
the others; wall times are recorded too (``wall_ms_per_file``). ``--baseline REV`` also times
``hf_midi/codec.py`` as of git revision REV, for a before/after in the same run.

Goals (benchmarks/RESULTS.md): encode and decode >= 30x MidiTok, encode with the parse <= 3x the
parse alone. The LAST line printed is one JSON object with the figures, the ratios, the machine
and the versions.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata as md
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import symusic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from hf_midi import codec  # noqa: E402  (after the path set-up, so the script runs from a checkout)


def test_split(folder: Path, split_csv: str) -> list[Path]:
    with open(folder / split_csv, newline="") as f:
        return [folder / r["path"] for r in csv.DictReader(f) if r["split"] == "test"]


def split_files(data: Path) -> dict[str, list[Path]]:
    return {"pop909_test": test_split(data / "pop909", "split.csv"),
            "asap_test": test_split(data / "asap", "split_by_piece.csv")}


def codec_at(rev: str):
    """hf_midi/codec.py as of git revision ``rev``, loaded as a module of its own."""
    path = "hf_midi/remote_code/codec.py"  # hf_midi/codec.py before the package had rooms
    if subprocess.run(["git", "cat-file", "-e", f"{rev}:{path}"], cwd=ROOT, capture_output=True).returncode:
        path = "hf_midi/codec.py"
    src = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "codec_baseline.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("codec_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def miditok_tokenizer():
    from miditok import MIDILike, TokenizerConfig

    config = dict(use_velocities=True, use_sustain_pedals=True, num_velocities=32)
    return MIDILike(TokenizerConfig(**config)), config


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}


def versions() -> dict:
    return {name: md.version(name) for name in ("hf-midi", "numpy", "symusic", "miditok", "transformers")}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_data = Path(os.environ.get("HF_MIDI_SHARED_DATA", ROOT.parent / "shared" / "data"))
    parser.add_argument("--data", type=Path, default=default_data, help="the shared corpora (pop909/, asap/)")
    parser.add_argument("--repeats", type=int, default=5, help="passes per method; the best one counts")
    parser.add_argument("--miditok-repeats", type=int, default=2, help="passes for MidiTok (about 50x slower)")
    parser.add_argument("--baseline", metavar="REV", help="also time hf_midi/codec.py at this git revision")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")  # MidiTok warns about its own config choices

    mt, mt_config = miditok_tokenizer()
    base = codec_at(args.baseline) if args.baseline else None
    load_before = os.getloadavg()
    results, totals = {}, {}
    for corpus, files in split_files(args.data).items():
        data = [f.read_bytes() for f in files]
        ids = [codec.encode(d) for d in data]
        scores = [symusic.Score.from_midi(d, ttype="second") for d in data]
        perfs = [codec.score_to_performance(s) for s in scores]
        mt_seqs = [mt.encode(symusic.Score.from_midi(d)) for d in data]
        if base is not None:  # the baseline must give the same ids, or the comparison means nothing
            assert all(np.array_equal(base.encode(d), i) for d, i in zip(data, ids)), "baseline differs"

        methods = {
            "parse": (lambda d: symusic.Score.from_midi(d, ttype="second"), data),
            "check_smf": (codec.check_smf, data),
            "score_to_performance": (codec.score_to_performance, scores),
            "performance_to_ids": (codec.performance_to_ids, perfs),
            "encode": (codec.encode, data),
            "decode": (codec.decode, ids),
        }
        if base is not None:
            methods["baseline_check_smf"] = (base.check_smf, data)
            methods["baseline_encode"] = (base.encode, data)
            methods["baseline_decode"] = (base.decode, ids)
        slow = {
            "miditok_encode": (lambda d: mt.encode(symusic.Score.from_midi(d)), data),
            "miditok_decode": (mt.decode, mt_seqs),
        }
        best = {name: float("inf") for name in [*methods, *slow]}
        wall = dict(best)
        for r in range(max(args.repeats, args.miditok_repeats)):
            for name, (fn, items) in [*methods.items(), *(slow.items() if r < args.miditok_repeats else ())]:
                if r >= args.repeats and name in methods:
                    continue
                w0, t0 = time.perf_counter(), time.process_time()
                for x in items:
                    fn(x)
                best[name] = min(best[name], time.process_time() - t0)
                wall[name] = min(wall[name], time.perf_counter() - w0)

        events = int(sum(len(i) for i in ids))
        mt_events = int(sum(sum(len(s) for s in (seq if isinstance(seq, list) else [seq])) for seq in mt_seqs))
        res = {
            "files": len(files), "bytes": sum(map(len, data)), "events": events, "miditok_events": mt_events,
            "ms_per_file": {k: round(v / len(files) * 1e3, 4) for k, v in best.items()},
            "wall_ms_per_file": {k: round(v / len(files) * 1e3, 4) for k, v in wall.items()},
            "events_per_s": {
                "encode": round(events / best["encode"]), "decode": round(events / best["decode"]),
                "miditok_encode": round(mt_events / best["miditok_encode"]),
                "miditok_decode": round(mt_events / best["miditok_decode"]),
            },
        }
        res["ratios"] = ratios(best)
        results[corpus] = res
        for k, v in best.items():
            totals[k] = totals.get(k, 0.0) + v

    report = {
        "benchmark": "tokenizer", "corpora": results, "ratios": ratios(totals),
        "goals": {"encode_vs_miditok": ">= 30", "decode_vs_miditok": ">= 30", "encode_over_parse": "<= 3"},
        "miditok_config": {"class": "MIDILike", **mt_config}, "repeats": args.repeats,
        "miditok_repeats": args.miditok_repeats, "baseline": args.baseline, "clock": "process_time (CPU)",
        "machine": {**machine(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "versions": versions(),
    }
    print_table(report)
    print(json.dumps(report))
    return report


def ratios(t: dict) -> dict:
    out = {
        "encode_vs_miditok": round(t["miditok_encode"] / t["encode"], 2),
        "decode_vs_miditok": round(t["miditok_decode"] / t["decode"], 2),
        "encode_over_parse": round(t["encode"] / t["parse"], 2),
        "check_smf_over_parse": round(t["check_smf"] / t["parse"], 3),
    }
    if "baseline_encode" in t:
        out["encode_speedup_vs_baseline"] = round(t["baseline_encode"] / t["encode"], 2)
        out["decode_speedup_vs_baseline"] = round(t["baseline_decode"] / t["decode"], 2)
        out["baseline_encode_over_parse"] = round(t["baseline_encode"] / t["parse"], 2)
    return out


def print_table(report: dict) -> None:
    for corpus, res in report["corpora"].items():
        print(f"{corpus}: {res['files']} files, {res['bytes'] / 1e6:.1f} MB, {res['events']} events "
              f"(MidiTok {res['miditok_events']} tokens)")
        for name, ms in res["ms_per_file"].items():
            print(f"  {name:22s} {ms:9.3f} ms/file CPU  ({res['wall_ms_per_file'][name]:.3f} wall)")
        print("  events/s:", ", ".join(f"{k} {v:,}" for k, v in res["events_per_s"].items()))
        print("  ratios:  ", ", ".join(f"{k} {v}" for k, v in res["ratios"].items()))
    print("overall ratios:", ", ".join(f"{k} {v}" for k, v in report["ratios"].items()))


if __name__ == "__main__":
    main()
