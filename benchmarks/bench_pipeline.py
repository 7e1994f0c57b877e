"""The pipeline against the CLI: the same music, the same machine, one and two threads, idle and busy.

    python benchmarks/bench_pipeline.py [--model base] [--seconds 10] [--runs 2]

Each way of composing runs in a fresh process, as a user's first call would (the threads are chosen once
a process): the whole process is timed (import, load, compose, write the MIDI), and inside it the compose
call alone and the thread choice alone. The ways:

- ``cli``: ``hf-midi generate --seconds S --seed 0 -o x.mid`` (threads auto: the choice, once);
- ``pipeline``: ``pipe(seconds=S, seed=0)`` with the pipeline's default (threads auto);
- ``pipeline-1``, ``pipeline-2``: ``threads=1``, ``threads=2``;
- ``pipeline-torch``: ``threads=None`` in a process that left torch at its own default (one thread a
  core): the pipeline as it was before it chose its threads;
- ``stream``: ``pipe.stream(seconds=S, seed=0)`` (threads auto), to its last chunk.

Each under two loads: ``idle`` and ``busy`` (another process spinning on one core, as when a second
job runs beside). Ratios: the pipeline's whole process over the CLI's (goal: about 1), and each way's
compose time over one thread's. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys, time
t0 = time.perf_counter()
import torch
from hf_midi import load_pipeline
from hf_midi.remote_code import threads
way, model, seconds, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
pipe = load_pipeline(model)
t_load = time.perf_counter() - t0
choice = None
kw = {"pipeline": {}, "pipeline-1": {"threads": 1}, "pipeline-2": {"threads": 2}, "pipeline-torch": {"threads": None},
      "stream": {}}[way]
if way in ("pipeline", "stream"):  # the choice the first call makes, timed alone (it is remembered after)
    t = time.perf_counter()
    threads.use_fastest_threads(pipe.model)
    choice = time.perf_counter() - t
t = time.perf_counter()
if way == "stream":
    for chunk in pipe.stream(seconds=seconds, seed=0, **kw):
        pass
    piece = chunk.piece
else:
    [piece] = pipe(seconds=seconds, seed=0, **kw)
compose = time.perf_counter() - t
open(out, "wb").write(piece["midi"])
print(json.dumps({"load_s": t_load, "choice_s": choice, "compose_s": compose, "threads": torch.get_num_threads(),
                  "tokens": len(piece["token_ids"]), "process_s": time.perf_counter() - t0}))
"""


def run_way(way: str, model: str, seconds: float, folder: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = folder / f"{way}.mid"
    started = time.perf_counter()
    if way == "cli":
        proc = subprocess.run([sys.executable, "-m", "hf_midi.cli", "generate", "--model", model, "--seconds",
                               str(seconds), "--seed", "0", "-o", str(out)], capture_output=True, text=True, env=env)
        wall = time.perf_counter() - started
        if proc.returncode:
            raise SystemExit(proc.stderr[-2000:])
        composed = re.search(r"composed [\d.]+ s of new music in ([\d.]+) s", proc.stderr)
        chosen = re.search(r"threads: (\d+)", proc.stderr)
        return {"process_s": wall, "compose_s": float(composed.group(1)) if composed else None,
                "threads": int(chosen.group(1)) if chosen else None}
    proc = subprocess.run([sys.executable, "-c", CHILD, way, model, str(seconds), str(out)], capture_output=True,
                          text=True, env=env)
    wall = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(proc.stderr[-2000:])
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    return figures | {"process_s": wall}


def median(runs: list[dict], key: str):
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="base")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--ways", default="cli,pipeline,pipeline-1,pipeline-2,pipeline-torch,stream")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    ways = args.ways.split(",")
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for load in ("idle", "busy"):
            spinner = None
            if load == "busy":  # another job on one core
                spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                time.sleep(0.5)
            try:
                for way in ways:
                    runs = [run_way(way, args.model, args.seconds, Path(tmp)) for _ in range(args.runs)]
                    results[f"{load}/{way}"] = {k: median(runs, k) for k in
                                                ("process_s", "compose_s", "choice_s", "load_s", "threads", "tokens")}
                    print(f"{load:5s} {way:15s} {results[f'{load}/{way}']}", flush=True)
            finally:
                if spinner is not None:
                    spinner.kill()
                    spinner.wait()
    ratios = {}
    for load in ("idle", "busy"):
        r = {way: results.get(f"{load}/{way}") for way in ways}
        if r.get("cli") and r.get("pipeline"):
            ratios[f"{load}/pipeline_over_cli_process"] = round(r["pipeline"]["process_s"] / r["cli"]["process_s"], 3)
            if r["cli"]["compose_s"]:
                ratios[f"{load}/pipeline_over_cli_compose"] = round(
                    r["pipeline"]["compose_s"] / r["cli"]["compose_s"], 3)
        one = (r.get("pipeline-1") or {}).get("compose_s")
        for way in ways:
            if one and way != "cli" and (r.get(way) or {}).get("compose_s"):
                ratios[f"{load}/{way}_over_1_thread"] = round(r[way]["compose_s"] / one, 3)
    import torch
    import transformers

    summary = {"bench": "pipeline", "model": args.model, "seconds": args.seconds, "runs": args.runs,
               "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
               "torch": torch.__version__, "transformers": transformers.__version__, "results": results,
               "ratios": ratios}
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
