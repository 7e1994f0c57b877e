"""Evaluate the shipped model against the LSTM and the test set (the shipped-model issue).

1. NLL per event, perplexity and accuracy (``hf_midi.evaluation.evaluate_model``, sliding window)
   of the transformer and the LSTM on the POP909 and ASAP test splits;
2. ``--samples`` pieces of ``--seconds`` sampled from scratch with the model's default generation
   settings, and five statistics of each compared with the 5th-95th percentile band of the POP909
   test pieces cut into windows of the same length (``hf_midi.evaluation.music_stats``);
3. a few piano rolls (PNG), MIDI files and one rendered WAV of the samples in ``--out``.

Usage (datasets written by ``hf-midi prepare``)::

    python benchmarks/eval_default_model.py --model hf_midi/pretrained/small --lstm runs/lstm \\
        --pop909 DATA/pop909 --asap DATA/asap --out docs/samples --json benchmarks/results/default_model.json

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import hf_midi
from hf_midi.data.stream import iter_pieces
from hf_midi.evaluation import evaluate_model, format_table, music_stats
from hf_midi.loading import load_pipeline
from hf_midi.utils import atomic_write_bytes


def evaluate(model_dir: str, dataset: str, split: str, max_pieces: int | None) -> dict:
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    pieces = iter_pieces(dataset, split, tokenizer)
    if max_pieces:
        import itertools

        pieces = itertools.islice(pieces, max_pieces)
    t0 = time.perf_counter()
    result = evaluate_model(model, pieces, progress=True)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["parameters"] = sum(p.numel() for p in model.parameters())
    print(f"\n{model_dir} on {dataset} [{split}]\n{format_table(result)}", file=sys.stderr)
    return result


def sample(model_dir: str, n: int, seconds: float, seed: int, **sampling) -> list[dict]:
    pipe = load_pipeline(model_dir)
    out = []
    t0 = time.perf_counter()
    for i in range(n):  # one at a time, each with its own seed, as a user would
        out += pipe(seconds=seconds, seed=seed + i, **sampling)
    print(f"sampled {n} x {seconds:g} s in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the transformer's folder")
    p.add_argument("--lstm", default=None, help="the LSTM's folder (trained with the same data and budget)")
    p.add_argument("--pop909", required=True, help="POP909 dataset folder (hf-midi prepare)")
    p.add_argument("--asap", default=None, help="ASAP performances dataset folder (hf-midi prepare)")
    p.add_argument("--split", default="test")
    p.add_argument("--max-pieces", type=int, default=None, help="evaluate only the first N pieces (smoke runs)")
    p.add_argument("--samples", type=int, default=20, help="0: NLL only")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=None, help="default: the model's generation config")
    p.add_argument("--top-p", type=float, default=None, help="default: the model's generation config")
    p.add_argument("--out", default="docs/samples", help="folder for sample PNGs, MIDI and one WAV")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--cache", default=None,
                   help="folder of per-(model, dataset) NLL results: reused when there, written when computed")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    results: dict = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                     "hf_midi": hf_midi.__version__, "split": args.split, "nll": {}}
    models = {"transformer": args.model} | ({"lstm": args.lstm} if args.lstm else {})
    datasets = {"pop909": args.pop909} | ({"asap": args.asap} if args.asap else {})
    for mname, mdir in models.items():
        for dname, ddir in datasets.items():
            key = f"{mname}/{dname}"
            cached = Path(args.cache) / f"{mname}-{dname}-{args.split}.json" if args.cache else None
            if cached is not None and cached.is_file():
                results["nll"][key] = json.loads(cached.read_text())
                continue
            results["nll"][key] = evaluate(mdir, ddir, args.split, args.max_pieces)
            results["nll"][key]["model_dir"] = mdir
            if cached is not None:
                atomic_write_bytes(cached, (json.dumps(results["nll"][key], indent=1) + "\n").encode())
    if "lstm" in models:
        results["nll_gap_pop909"] = (results["nll"]["lstm/pop909"]["nll"]
                                     - results["nll"]["transformer/pop909"]["nll"])

    if args.samples == 0:
        print(json.dumps(results))
        return 0
    samples = sample(args.model, args.samples, args.seconds, args.seed, temperature=args.temperature,
                     top_p=args.top_p)
    tok = AutoTokenizer.from_pretrained(args.model)
    reference = []
    for _, ids in iter_pieces(args.pop909, args.split, tok):
        reference += music_stats.window_stats(np.asarray(ids), args.seconds)
    sample_stats = [music_stats.ids_stats(s["token_ids"]) for s in samples]
    band = music_stats.band_report(sample_stats, reference)
    results["samples"] = {
        "count": len(samples), "seconds": args.seconds, "temperature": args.temperature, "top_p": args.top_p,
        "reference_windows": len(reference),
        "sample_seconds": [round(s["seconds"], 2) for s in samples], "band": band,
        "min_fraction_inside": min(b["fraction_inside"] for b in band.values()),
    }

    from hf_midi.render import write_samples

    write_samples(samples, args.out)

    for k, b in band.items():
        print(f"{k:22s} band [{b['band_low']:.2f}, {b['band_high']:.2f}]  sample median "
              f"{b['sample_median']:.2f}  inside {b['inside']}/{b['total']}", file=sys.stderr)
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(results, indent=1) + "\n").encode())
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
