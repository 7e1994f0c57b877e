"""Fine-tuning on your own MIDI: ``hf-midi finetune``, from a trained model, fully or with LoRA.

- ``hf-midi finetune MY_FOLDER OUT [--minutes 20] [--lora]``: prepares the folder (holding out a
  validation split of its own), scores the starting model on it, fine-tunes for the time given, scores
  again, and writes ``OUT/model`` (a model or an adapter folder), ``OUT/data`` and ``OUT/finetune.json``.

``train.py --init_from M`` (and ``--lora``) is the same machinery for any prepared dataset; loading
models and adapters, adding LoRA and merging it are ``hf_midi.loading``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

from ..loading import DEFAULT_LORA_ALPHA, DEFAULT_LORA_RANK
from ..remote_code.errors import HfMidiError


class FinetuneError(HfMidiError):
    """A bad fine-tuning input (folder, model, adapter), raised before any training starts."""


# --------------------------------------------------------------------------- hf-midi finetune
def validation_files(paths: list[str], fraction: float) -> set[str]:
    """A stable choice of about ``fraction`` of ``paths`` (at least one), by a hash of each path."""
    def key(p):
        return hashlib.sha256(p.encode("utf-8")).hexdigest()

    n = max(1, round(len(paths) * fraction))
    return set(sorted(paths, key=key)[:n])


def prepare_folder(src: Path, out: Path, val_fraction: float, splits: str | None, progress: bool,
                   workers: int | None = None, clean: bool = True) -> dict:
    """``src`` -> a prepared, pre-tokenised dataset at ``out`` with train and validation splits. The
    validation files are chosen among the readable ones (a first scan), so none is lost to a bad file."""
    import csv
    import tempfile

    from ..data.cleaning import NO_CLEAN, CleanConfig
    from ..data.prepare import PrepareConfig, PrepareError, prepare_dataset

    common = dict(license="unknown", pretokenize=True, progress=progress, num_workers=workers,
                  clean=CleanConfig() if clean else NO_CLEAN)
    if splits is None:
        with tempfile.TemporaryDirectory(prefix=".hf-midi-scan-", dir=out.parent) as scan_dir:
            try:
                scan = prepare_dataset(src, Path(scan_dir) / "d",
                                       PrepareConfig(split_ratios=(1.0, 0.0, 0.0), **common))
            except PrepareError as e:  # no MIDI file, or none readable: nothing to fine-tune on
                raise FinetuneError(str(e)) from None
            readable = list(dict.fromkeys(f.path for f in scan.splits.get("train", [])))  # a file's pieces: once
            skipped = scan.skipped
            if len(readable) < 2:
                raise FinetuneError(
                    f"{src}: {len(readable)} readable MIDI file(s) ({len(skipped)} skipped): too little music to "
                    "hold out a validation split; give at least 2 files (10 or more for a useful score)")
            val = validation_files(readable, val_fraction)
            splits = str(Path(scan_dir) / "splits.csv")
            with open(splits, "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f, lineterminator="\n")
                w.writerow(["path", "split"])
                w.writerows([p, "validation" if p in val else "train"] for p in readable)
            report = prepare_dataset(src, out, PrepareConfig(splits_file=splits, **common))
            report.skipped = skipped  # why each file was left out (the second pass only knows "not listed")
    else:
        report = prepare_dataset(src, out, PrepareConfig(splits_file=splits, **common))
    counts = {k: len(v) for k, v in report.splits.items()}
    if not counts.get("train") or not counts.get("validation"):
        raise FinetuneError(f"{src}: {counts.get('train', 0)} training and {counts.get('validation', 0)} validation "
                            "files: both are needed (a splits file with train and validation rows)")
    return {"files": counts, "skipped": [(f.path, f.reason) for f in report.skipped]}


def configure_finetune(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="a folder of your MIDI files (searched recursively)")
    p.add_argument("out", help="output folder: model/ (or the LoRA adapter), data/, finetune.json")
    p.add_argument("--model", default="small",
                   help="the model to start from: a bundled name (small, the default; base, larger and about six "
                        "times slower to train on a CPU), a folder or a Hub id")
    p.add_argument("--no-clean", action="store_true",
                   help="train on the files as they are: no cut at long silences, no trimmed start, no screens")
    p.add_argument("--minutes", type=float, default=20.0, help="training time (default 20)")
    p.add_argument("--lora", action="store_true", help="train a LoRA adapter instead of every weight")
    p.add_argument("--lora-rank", type=int, default=DEFAULT_LORA_RANK)
    p.add_argument("--lora-alpha", type=float, default=DEFAULT_LORA_ALPHA)
    p.add_argument("--learning-rate", type=float, default=None,
                   help="peak learning rate (default: the preset's, finetune.yaml 3e-4 or finetune-lora.yaml 2e-3)")
    p.add_argument("--block-size", type=int, default=None,
                   help="tokens a training example (default: 512, or the model's context if shorter)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of the files held out (default 0.1)")
    p.add_argument("--splits", default=None, help="a CSV (path,split) choosing train/validation yourself")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (default: time only)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def score(model, dataset: Path, context: int, progress: bool) -> dict:
    import torch

    from ..data.packed import frame, read_prepared
    from ..evaluation import evaluate_model

    pieces = [(p, frame(ids).astype("int64")) for p, ids in read_prepared(dataset, "validation")]
    with torch.no_grad():
        return evaluate_model(model, pieces, context=context, batch_size=8, progress=progress)


def _check_job(src: Path, out: Path, overwrite: bool, val_fraction: float, minutes: float) -> None:
    """The job's folders and numbers, checked before any model loads."""
    if not src.is_dir():
        raise FinetuneError(f"{src}: not a folder of MIDI files")
    if out.exists() and not overwrite:
        raise FinetuneError(f"{out}: already exists (pass --overwrite to replace it)")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise FinetuneError(f"{out}: the output folder must not be inside the MIDI folder {src}")
    if not 0 < val_fraction < 1:
        raise FinetuneError(f"--val-fraction {val_fraction}: must be between 0 and 1")
    if minutes <= 0:
        raise FinetuneError(f"--minutes {minutes}: must be > 0")


def worse_advice(before: float, after: float, model, learning_rate: float, lora: bool) -> str:
    """What to say when fine-tuning made the held-out NLL worse: the model was saved, but it predicts the
    held-out files less well than the one it started from."""
    tries = [f"a lower --learning-rate (e.g. {learning_rate / 4:.2g}, a quarter of {learning_rate:.2g})"]
    if not lora:
        tries.append("--lora (fewer weights move)")
    tries += ["more files", "fewer --minutes on a small folder (it learns the training files by heart)"]
    return (f"finetune: warning: the held-out NLL got worse ({before:.4f} -> {after:.4f} nats/event): the saved "
            f"model predicts your held-out files less well than {model}, which it started from. Try "
            f"{'; '.join(tries)}; or keep using {model}.")


def finetune(folder, out, model="small", minutes: float = 20.0, lora: bool = False,
             lora_rank: int = DEFAULT_LORA_RANK, lora_alpha: float = DEFAULT_LORA_ALPHA,
             learning_rate: float | None = None, block_size: int | None = None,
             batch_size: int = 8, val_fraction: float = 0.1, splits: str | None = None,
             max_steps: int | None = None, threads: int = 0, seed: int = 0, overwrite: bool = False,
             progress: bool = True, workers: int | None = None, log=print, clean: bool = True) -> dict:
    """The ``hf-midi finetune`` job; returns (and writes to ``OUT/finetune.json``) the figures."""
    import shutil

    import torch

    from ..data.packed import read_prepared
    from ..loading import load_model
    from ..utils import atomic_folder
    from .args import ConfigError, load_config
    from .trainer import train

    src, out = Path(folder), Path(out)
    _check_job(src, out, overwrite, val_fraction, minutes)
    if threads:
        torch.set_num_threads(threads)
    start_model, tokenizer = load_model(model)  # a missing or foreign model fails here, before any work
    n_positions = getattr(start_model.config, "n_positions", None)
    if block_size is None:
        block_size = min(512, n_positions or 512)
    if n_positions is not None and block_size > n_positions:
        raise FinetuneError(f"--block-size {block_size}: the model {model} attends over at most {n_positions}")
    context = min(n_positions or 1024, 1024)

    with atomic_folder(out) as work:  # nothing of a failed or interrupted job is left beside OUT
        t0 = time.perf_counter()
        info = prepare_folder(src, work / "data", val_fraction, splits, progress, workers, clean)
        train_tokens = sum(len(ids) + 2 for _, ids in read_prepared(work / "data", "train"))
        log(f"finetune: {info['files'].get('train', 0)} training and {info['files']['validation']} validation "
            f"files, {train_tokens:,} training tokens; {len(info['skipped'])} skipped "
            f"({time.perf_counter() - t0:.1f} s)")
        for path, reason in info["skipped"][:20]:
            log(f"  skipped {path}: {reason}")
        block = min(block_size, max(64, train_tokens // 2))
        batch = max(1, min(batch_size, train_tokens // (block + 1)))
        before = score(start_model, work / "data", context, progress)
        log(f"finetune: NLL on the held-out files before: {before['nll']:.4f} nats/event")
        del start_model
        try:  # the presets finetune.yaml / finetune-lora.yaml hold the hyperparameters; these fit your data
            args = load_config("finetune-lora" if lora else "finetune", {
                "dataset": str(work / "data"), "output_dir": str(work / "model"), "init_from": str(model),
                "lora_rank": lora_rank, "lora_alpha": lora_alpha, "block_size": block,
                "per_device_batch_size": batch, "max_minutes": minutes, "seed": seed, "progress": progress,
                **({"learning_rate": learning_rate} if learning_rate else {}),
                **({"max_steps": max_steps} if max_steps else {}),
            })
        except ConfigError as e:
            raise FinetuneError(str(e)) from None
        lr = args.learning_rate
        t1 = time.perf_counter()
        train(args)
        train_s = time.perf_counter() - t1
        shutil.rmtree(work / "model" / "checkpoints", ignore_errors=True)  # optimizer states: not needed here
        tuned, _ = load_model(work / "model")
        after = score(tuned, work / "data", context, progress)
        log(f"finetune: NLL on the held-out files after {train_s / 60:.1f} min: {after['nll']:.4f} nats/event "
            f"(before {before['nll']:.4f}, {after['nll'] - before['nll']:+.4f})")
        if after["nll"] > before["nll"]:
            log(worse_advice(before["nll"], after["nll"], model, lr, lora))
        steps = [json.loads(x) for x in (work / "model" / "logs" / "metrics.jsonl").read_text().splitlines() if x]
        result = {"folder": str(src), "model": str(model), "lora": lora, "minutes": minutes,
                  "train_s": round(train_s, 1),
                  "steps": steps[-1]["step"] if steps else 0, "block_size": block, "batch_size": batch,
                  "learning_rate": lr, "files": info["files"], "skipped": len(info["skipped"]),
                  "train_tokens": train_tokens, "nll_before": before["nll"], "nll_after": after["nll"],
                  "worse": after["nll"] > before["nll"], "tokens_scored": after["tokens"]}
        (work / "finetune.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


def run_finetune(args: argparse.Namespace) -> int:
    result = finetune(args.folder, args.out, model=args.model, minutes=args.minutes, lora=args.lora,
                      lora_rank=args.lora_rank, lora_alpha=args.lora_alpha, learning_rate=args.learning_rate,
                      block_size=args.block_size, batch_size=args.batch_size, val_fraction=args.val_fraction,
                      splits=args.splits, max_steps=args.max_steps, threads=args.threads, seed=args.seed,
                      overwrite=args.overwrite, progress=not args.quiet, clean=not args.no_clean,
                      log=lambda m: print(m, file=sys.stderr))
    kind = "LoRA adapter" if args.lora else "model"
    if result["worse"]:
        kind += ", worse than the model it started from on the held-out files: see the warning above"
    print(f"wrote {args.out}/model ({kind}): held-out NLL {result['nll_before']:.4f} -> {result['nll_after']:.4f} "
          f"nats/event; generate with: hf-midi generate --model {args.out}/model --seconds 30 -o song.mid")
    return 0


__all__ = ["FinetuneError", "configure_finetune", "finetune", "prepare_folder", "run_finetune", "worse_advice"]
