"""The one trainer on a packed corpus against the packed loop it replaced, side by side in one run.

    python benchmarks/bench_one_trainer.py --data PACKED_CORPUS [--seconds 90] [--repeats 2]

Both train the same shape (the ``cpu-packed`` preset: GPT-2 3 x 256, context 1024, batch 4, one
thread) on the same corpus for the same training seconds, alternately (old, new, old, new, ... with seeds
0, 1, ...), in one process. The old loop is ``hf_midi/packed_training.py`` as of commit
``OLD_COMMIT`` (read from git, executed from memory: nothing is written into the package). Figures:
tokens/s of each (training seconds only: probes and evaluation excluded in both), the ratio
new/old (goal >= 0.95), and the loss curves compared at the same tokens: mean training loss over each
tenth of the run, the gap between the two loops against the gap between two seeds of the old loop
(the noise). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OLD_COMMIT = "0ac8337"


def old_loop():
    source = subprocess.run(["git", "show", f"{OLD_COMMIT}:hf_midi/packed_training.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    import types

    from hf_midi import evaluation, utils
    from hf_midi.data import packed
    from hf_midi.remote_code import codec
    from hf_midi.training import trainer

    # its relative imports, as the package was laid out then
    old = types.ModuleType("hf_midi_old")
    old.__path__ = []
    sys.modules["hf_midi_old"] = old
    for name, mod in {"codec": codec, "training": trainer, "packed": packed, "evaluation": evaluation,
                      "utils": utils}.items():
        sys.modules[f"hf_midi_old.{name}"] = mod
    spec = importlib.util.spec_from_loader("hf_midi_old.packed_training", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "hf_midi_old"
    sys.modules[spec.name] = module  # dataclasses look their module up
    exec(compile(source, f"{OLD_COMMIT}:hf_midi/packed_training.py", "exec"), module.__dict__)
    return module


def curve(tokens: np.ndarray, losses: np.ndarray, total: float, parts: int = 10) -> list[float]:
    """Mean loss in each tenth of ``total`` tokens."""
    edges = np.linspace(0, total, parts + 1)
    return [float(losses[(tokens > a) & (tokens <= b)].mean()) if ((tokens > a) & (tokens <= b)).any() else None
            for a, b in zip(edges[:-1], edges[1:])]


def run_old(mod, data: str, seconds: float, seed: int, shape: dict) -> dict:
    from hf_midi.data.packed import load_train

    ids = load_train(data)
    run = mod.Run("cpu", mod._gpt2(shape["layers"], shape["width"], shape["heads"], shape["block"]),
                  block=shape["block"], batch=shape["batch"], lr=2e-3, share=1.0, warmup=100, compile=False,
                  save_dtype="fp32", probe_steps=3, log_every=1, val_every_s=1e9)
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        _, info = mod.train_run(run, ids, None, seconds, torch.device("cpu"), Path(tmp), records.append, None,
                                seed=seed)
    steps = [r for r in records if "step" in r and "loss" in r]
    return {"tokens_per_s": info["tokens_per_s"], "tokens": info["tokens"], "steps": info["steps"],
            "curve_tokens": [r["tokens"] for r in steps], "curve_loss": [r["loss"] for r in steps]}


def run_new(data: str, seconds: float, seed: int, shape: dict) -> dict:
    from hf_midi.training import train
    from hf_midi.training.args import load_config

    with tempfile.TemporaryDirectory() as tmp:
        args = load_config("cpu-packed", {
            "dataset": data, "output_dir": tmp, "max_minutes": seconds / 60, "eval_batches": 0, "save_every": 0,
            "log_every": 1, "probe_steps": 3, "progress": False, "seed": seed, "model.num_layers": shape["layers"],
            "model.hidden_size": shape["width"], "model.num_heads": shape["heads"],
            "model.context_length": shape["block"], "block_size": shape["block"],
            "per_device_batch_size": shape["batch"]})
        train(args)
        lines = [json.loads(x) for x in Path(tmp, "logs", "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in lines if "loss" in r]
    last = steps[-1]
    # the loop's own figures: the window before the last step counts tokens the step made, per step
    tokens = [r["step"] * shape["batch"] * shape["block"] for r in steps]
    return {"tokens_per_s": last["tokens_seen"] / (last["minutes"] * 60), "tokens": last["tokens_seen"],
            "steps": last["step"], "curve_tokens": tokens, "curve_loss": [r["loss"] for r in steps]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a packed corpus (python -m hf_midi.data.packed)")
    p.add_argument("--seconds", type=float, default=90.0, help="training seconds of each run")
    p.add_argument("--repeats", type=int, default=2, help="pairs (old, new), seeds 0, 1, ...")
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--block", type=int, default=1024)
    p.add_argument("--batch", type=int, default=4)
    a = p.parse_args()
    torch.set_num_threads(1)
    shape = {"layers": a.layers, "width": a.width, "heads": a.heads, "block": a.block, "batch": a.batch}
    mod = old_loop()
    old, new = [], []
    for seed in range(a.repeats):
        t = time.perf_counter()
        old.append(run_old(mod, a.data, a.seconds, seed, shape))
        new.append(run_new(a.data, a.seconds, seed, shape))
        print(f"seed {seed}: old {old[-1]['tokens_per_s']:.0f} tok/s, new {new[-1]['tokens_per_s']:.0f} tok/s "
              f"({time.perf_counter() - t:.0f} s)", file=sys.stderr)
    total = min(min(r["tokens"] for r in old), min(r["tokens"] for r in new))

    def curves(rs):
        return [curve(np.array(r["curve_tokens"]), np.array(r["curve_loss"]), total) for r in rs]

    c_old, c_new = curves(old), curves(new)
    mean_old = np.nanmean(np.array(c_old, dtype=float), 0)
    mean_new = np.nanmean(np.array(c_new, dtype=float), 0)
    gap = float(np.nanmean(np.abs(mean_new - mean_old)[1:]))  # the first tenth is the warm-up's
    noise = float(np.nanmean(np.abs(np.array(c_old[0], dtype=float) - np.array(c_old[1], dtype=float))[1:])) \
        if len(c_old) > 1 else None
    tok_old = float(np.mean([r["tokens_per_s"] for r in old]))
    tok_new = float(np.mean([r["tokens_per_s"] for r in new]))
    result = {
        "benchmark": "one_trainer_vs_packed_loop", "seconds": a.seconds, "repeats": a.repeats, "shape": shape,
        "threads": 1, "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "old_commit": OLD_COMMIT, "old_tokens_per_s": [round(r["tokens_per_s"], 1) for r in old],
        "new_tokens_per_s": [round(r["tokens_per_s"], 1) for r in new], "tokens_per_s_ratio": tok_new / tok_old,
        "goal_ratio": 0.95, "old_curve": [round(x, 4) for x in mean_old], "new_curve": [round(x, 4) for x in mean_new],
        "curve_gap": gap, "seed_noise": noise, "final_loss_old": float(mean_old[-1]),
        "final_loss_new": float(mean_new[-1]),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
