"""Fine-tuning on a style the shipped model has not seen: from scratch vs full fine-tune vs LoRA vs untouched.

The fine-tuning issue's benchmark. Data: a folder written by ``hf-midi prepare --pretokenize`` with
train and test splits (ASAP's performances, split by piece: research use only, no weights from this
run are kept or shipped). Each arm trains for the same ``--minutes`` on one CPU thread, through the
same ``train.py`` machinery (``hf_midi.training.train``) with the same blocks and batch:

- ``scratch``: a random model of the bundled default's shape (GPT-2 4 x 256);
- ``full``: ``--init_from default``, every weight;
- ``lora``: ``--init_from default --lora`` (rank 16 on c_attn, c_proj, c_fc);
- ``default``: the bundled model untouched (no training).

Then NLL/event of each on the test split, all at the same context (``--context``). Goals: full or LoRA
beats scratch by >= 0.5 nats/event and the untouched default by >= 0.2.

    hf-midi prepare ../shared/data/asap data/asap --splits ../shared/data/asap/split_by_piece.csv \\
        --where kind=performance --license cc-by-nc-sa-4.0 --pretokenize
    python benchmarks/bench_finetune.py --data data/asap --minutes 15 --json benchmarks/results/finetune.json

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoConfig

from hf_midi.data.packed import frame, read_prepared
from hf_midi.evaluation import evaluate_model
from hf_midi.loading import load_model, resolve_model
from hf_midi.training import train
from hf_midi.training.args import load_config
from hf_midi.utils import atomic_write_bytes

ARMS = ("default", "scratch", "full", "lora")
LEARNING_RATES = {"scratch": 2e-3, "full": 3e-4, "lora": 2e-3}  # peak; --lr ARM=LR changes one


def arm_config(arm: str, data: str, out: str, minutes: float, block: int, batch: int, seed: int,
               lr: dict | None = None) -> dict:
    lr = {**LEARNING_RATES, **(lr or {})}
    common = {"dataset": data, "output_dir": out, "block_size": block, "per_device_batch_size": batch,
              "max_steps": 1_000_000, "max_minutes": minutes, "eval_every": 0, "eval_batches": 0, "save_every": 0,
              "tracker": "none", "log_every": 10, "shuffle_buffer": 64, "seed": seed, "transpose": [-3, 3],
              "warmup_steps": 10, "progress": False}
    if arm == "scratch":  # the bundled default's shape, trained on the blocks the others see
        c = AutoConfig.from_pretrained(resolve_model("small"))
        return {**common, "learning_rate": lr["scratch"], "warmup_steps": 50,
                "model": {"num_layers": c.n_layer, "hidden_size": c.n_embd, "num_heads": c.n_head,
                          "context_length": block, "dropout": 0.0}}
    if arm == "full":
        return {**common, "init_from": "small", "learning_rate": lr["full"]}
    if arm == "lora":
        return {**common, "init_from": "small", "lora": True, "learning_rate": lr["lora"], "weight_decay": 0.0}
    raise ValueError(arm)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a prepared, pre-tokenised dataset with train and test splits")
    p.add_argument("--minutes", type=float, default=15.0, help="training minutes of each arm")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--block", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--context", type=int, default=512, help="evaluation window of every model")
    p.add_argument("--eval-split", default="test")
    p.add_argument("--max-pieces", type=int, default=None, help="score only the first N test pieces")
    p.add_argument("--lr", action="append", default=[], metavar="ARM=LR",
                   help="peak learning rate of an arm (defaults: scratch=2e-3 full=3e-4 lora=2e-3)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", default=None, help="keep the trained arms here (default: a temporary folder)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    lrs = {k: float(v) for k, v in (x.split("=", 1) for x in args.lr)}
    pieces = [(path, frame(ids).astype("int64")) for path, ids in read_prepared(args.data, args.eval_split)]
    pieces = pieces[: args.max_pieces] if args.max_pieces else pieces
    train_tokens = sum(len(ids) + 2 for _, ids in read_prepared(args.data, "train"))
    root = Path(args.keep or tempfile.mkdtemp(prefix="bench-finetune-"))
    results = {}
    for arm in args.arms.split(","):
        t = time.perf_counter()
        if arm == "default":
            model, _ = load_model("small")
            info = {"train_s": 0.0, "steps": 0}
        else:
            out = root / arm
            shutil.rmtree(out, ignore_errors=True)
            train(load_config(arm_config(arm, args.data, str(out), args.minutes, args.block, args.batch, args.seed,
                                         lrs)))
            lines = [json.loads(x) for x in (out / "logs" / "metrics.jsonl").read_text().splitlines() if x]
            info = {"train_s": round(time.perf_counter() - t, 1), "steps": lines[-1]["step"],
                    "tokens": lines[-1]["step"] * args.block * args.batch, "final_train_loss": lines[-1]["loss"]}
            model, _ = load_model(out)
        t = time.perf_counter()
        with torch.no_grad():
            res = evaluate_model(model, pieces, context=args.context, batch_size=8, progress=False)
        results[arm] = {**info, "nll": res["nll"], "eval_s": round(time.perf_counter() - t, 1),
                        "families": {k: v["nll"] for k, v in res["families"].items()}}
        print(f"{arm}: NLL {res['nll']:.4f} on {res['pieces']} pieces ({res['tokens']:,} events); {info}", flush=True)
        del model
    nll = {k: v["nll"] for k, v in results.items()}
    summary = {"data": args.data, "train_tokens": train_tokens, "eval_split": args.eval_split,
               "eval_pieces": len(pieces), "context": args.context, "minutes": args.minutes, "threads": args.threads,
               "block": args.block, "batch": args.batch, "machine": platform.processor() or platform.machine(),
               "torch": torch.__version__, "learning_rates": {a: {**LEARNING_RATES, **lrs}[a] for a in results
                                                              if a != "default"},
               "arms": results, "nll": nll}
    for tuned in ("full", "lora"):
        if tuned in nll and "scratch" in nll:
            summary[f"{tuned}_gain_over_scratch"] = nll["scratch"] - nll[tuned]  # goal >= 0.5
        if tuned in nll and "default" in nll:
            summary[f"{tuned}_gain_over_default"] = nll["default"] - nll[tuned]  # goal >= 0.2
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(summary, indent=1) + "\n").encode())
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
