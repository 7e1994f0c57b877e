"""Fine-tuning: start from a trained model (the bundled one, a folder, a Hub id), fully or with LoRA.

Three pieces:

- ``load_model(ref)``: the model and tokenizer behind a reference: a bundled name (``default``,
  ``base``), a model folder, a Hub repo id, or a LoRA adapter folder (``adapter_config.json``), which
  is loaded on top of its base model (merged by default: generation then costs what the base costs).
  The vocabulary is checked against this package's codec before anything runs.
- LoRA through ``peft``: ``add_lora`` wraps a GPT-2 so that only low-rank adapters of its attention
  and MLP matrices train; ``save_adapter`` writes the adapter alone (``adapter_model.safetensors``,
  ``adapter_config.json``) with the tokenizer; ``merge_adapter`` writes a plain merged GPT-2 that
  ``AutoModelForCausalLM`` loads without peft (``hf-midi export --merge``).
- ``hf-midi finetune MY_FOLDER OUT [--minutes 20] [--lora]``: prepares the folder (holding out a
  validation split of its own), scores the starting model on it, fine-tunes for the time given, scores
  again, and writes ``OUT/model`` (a model or an adapter folder), ``OUT/data`` and ``OUT/finetune.json``.

``train.py --init_from M`` (and ``--lora``) is the same machinery for any prepared dataset.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

from .codec import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE, MidiError

ADAPTER_CONFIG = "adapter_config.json"
# GPT-2's matrices: fused q/k/v, attention output and MLP output (both "c_proj"), MLP input.
DEFAULT_LORA_TARGETS = ("c_attn", "c_proj", "c_fc")


class FinetuneError(MidiError):
    """A bad fine-tuning input (folder, model, adapter), raised before any training starts."""


# --------------------------------------------------------------------------- loading
def is_adapter(ref) -> bool:
    return Path(str(ref)).is_dir() and (Path(str(ref)) / ADAPTER_CONFIG).is_file()


def adapter_base(adapter: str | os.PathLike) -> str | Path:
    """The base model an adapter folder names, resolved: a folder that exists, a bundled model (also when
    the adapter was made on another machine, whose absolute path to the bundled folder differs), or a
    Hub id. FinetuneError when it names a folder that is not there."""
    from .generation import bundled_models

    config = json.loads((Path(adapter) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base:
        raise FinetuneError(f"adapter {adapter}: {ADAPTER_CONFIG} names no base model (base_model_name_or_path)")
    bundled = bundled_models()
    if base in bundled and not Path(base).exists():
        return bundled[base]
    path = Path(base)
    if path.exists():
        return path
    if path.parent.name == "pretrained" and path.name in bundled:  # made with another copy of hf_midi
        return bundled[path.name]
    if base.startswith((".", "/", "~")) or base.count("/") > 1 or "\\" in base:
        raise FinetuneError(f"adapter {adapter}: its base model {base} is missing (no such folder); put it "
                            "back, or edit base_model_name_or_path in its adapter_config.json")
    return base  # a Hub repo id


def check_vocabulary(model, tokenizer, name) -> None:
    """The model must speak this package's event vocabulary: FinetuneError naming ``name`` otherwise."""
    cfg = model.config
    problems = []
    if getattr(cfg, "vocab_size", 0) < VOCAB_SIZE:
        problems.append(f"{cfg.vocab_size} embedding rows for {VOCAB_SIZE} ids")
    for key, want in (("bos_token_id", BOS_ID), ("eos_token_id", EOS_ID), ("pad_token_id", PAD_ID)):
        got = getattr(cfg, key, None)
        if got is not None and got != want:
            problems.append(f"{key} {got} (the codec's is {want})")
    if tokenizer is None or not hasattr(tokenizer, "decode_midi"):
        problems.append("no MIDI tokenizer (tokenizer_config.json for MidiTokenizer) beside it")
    elif len(tokenizer) != VOCAB_SIZE:
        problems.append(f"a tokenizer of {len(tokenizer)} ids")
    if problems:
        raise FinetuneError(f"model {name}: not this package's {VOCAB_SIZE}-event vocabulary: " + "; ".join(problems))


def load_model(ref=None, merge: bool = True, dtype=None):
    """``(model, tokenizer)`` for ``ref`` (None: the bundled default); see the module docstring.

    An adapter folder is loaded on its base with peft; ``merge`` folds it into the base's weights (a
    plain GPT-2 model), else the ``PeftModel`` is returned. Weights stored in bf16 come back in float32
    unless ``dtype`` says otherwise."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from . import generation

    ref = generation.resolve_model(ref)
    path = Path(str(ref))
    adapter = is_adapter(path)
    if path.exists() and not adapter:
        generation.check_model_folder(path)
    elif not path.exists() and (str(ref).startswith((".", "/", "~")) or str(ref).count("/") > 1):
        raise FinetuneError(f"model {ref}: no such folder")
    base_ref = adapter_base(path) if adapter else ref
    try:
        model = AutoModelForCausalLM.from_pretrained(str(base_ref), dtype=dtype or torch.float32)
    except (OSError, ValueError) as e:
        what = f"adapter {ref}: its base model {base_ref}" if adapter else f"model {ref}"
        raise FinetuneError(f"{what} cannot be loaded ({str(e).splitlines()[0][:300]})") from None
    tok_from = path if adapter and (path / "tokenizer_config.json").is_file() else base_ref
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tok_from))
    except (OSError, ValueError):
        tokenizer = None
    check_vocabulary(model, tokenizer, ref)
    if adapter:
        try:
            from peft import PeftModel
        except ImportError:
            raise FinetuneError(f"adapter {ref}: loading a LoRA adapter needs peft (pip install peft)") from None
        model = PeftModel.from_pretrained(model, str(path))
        if merge:
            model = model.merge_and_unload()
            model.name_or_path = str(path)
    return model, tokenizer


# --------------------------------------------------------------------------- LoRA
def add_lora(model, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0, targets=DEFAULT_LORA_TARGETS):
    """``model`` wrapped by peft: LoRA adapters of rank ``rank`` on the ``targets`` modules, everything
    else frozen. GPT-2 only (its Conv1D matrices store weights as fan-in x fan-out)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise FinetuneError("--lora needs peft (pip install peft, or hf-midi[train])") from None
    if model.config.model_type != "gpt2":
        raise FinetuneError(f"--lora: LoRA is for GPT-2 models, not {model.config.model_type}")
    targets = [t.strip() for t in (targets.split(",") if isinstance(targets, str) else targets) if t.strip()]
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    unknown = [t for t in targets if t not in names]
    if unknown or not targets:
        raise FinetuneError(f"--lora_targets: {unknown or targets} not among the model's modules "
                            f"(GPT-2: {', '.join(DEFAULT_LORA_TARGETS)})")
    if rank < 1 or alpha <= 0 or not 0 <= dropout < 1:
        raise FinetuneError(f"LoRA rank {rank} / alpha {alpha} / dropout {dropout}: need rank >= 1, alpha > 0, "
                            "0 <= dropout < 1")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                        fan_in_fan_out=True, task_type="CAUSAL_LM", bias="none")
    with warnings.catch_warnings():  # peft asks transformers a deprecated question (is_gradient_checkpointing)
        warnings.filterwarnings("ignore", category=FutureWarning)
        return get_peft_model(model, config)


def base_reference(init_from) -> str:
    """What an adapter records as its base: a bundled model's folder, a folder's absolute path, or a
    Hub id as given (``adapter_base`` maps a bundled folder back on another machine)."""
    from .generation import resolve_model

    ref = resolve_model(init_from)
    return str(Path(ref).resolve()) if Path(str(ref)).exists() else str(ref)


def save_adapter(peft_model, tokenizer, out: str | os.PathLike, base: str, state_dict=None) -> Path:
    """The adapter alone (safetensors) + its config (naming ``base``) + the tokenizer, written whole."""
    from .utils import atomic_folder

    out = Path(out)
    peft_model.peft_config["default"].base_model_name_or_path = base
    with atomic_folder(out) as tmp:
        peft_model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / "README.md").unlink(missing_ok=True)  # peft's empty card template
    return out


def merge_adapter(adapter: str | os.PathLike, out: str | os.PathLike) -> Path:
    """A plain GPT-2 folder (weights with the adapter folded in, the base's generation config, the
    tokenizer) that ``AutoModelForCausalLM`` loads without peft."""
    from .utils import atomic_folder

    if not is_adapter(adapter):
        raise FinetuneError(f"{adapter}: not a LoRA adapter folder (no {ADAPTER_CONFIG})")
    model, tokenizer = load_model(adapter, merge=True)
    base = adapter_base(adapter)
    with atomic_folder(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if Path(str(base)).is_dir() and (Path(str(base)) / "generation_config.json").is_file():
            (tmp / "generation_config.json").write_bytes((Path(str(base)) / "generation_config.json").read_bytes())
    return Path(out)


# --------------------------------------------------------------------------- hf-midi finetune
def validation_files(paths: list[str], fraction: float) -> set[str]:
    """A stable choice of about ``fraction`` of ``paths`` (at least one), by a hash of each path."""
    def key(p):
        return hashlib.sha256(p.encode("utf-8")).hexdigest()

    n = max(1, round(len(paths) * fraction))
    return set(sorted(paths, key=key)[:n])


def prepare_folder(src: Path, out: Path, val_fraction: float, splits: str | None, progress: bool,
                   workers: int | None = None) -> dict:
    """``src`` -> a prepared, pre-tokenised dataset at ``out`` with train and validation splits. The
    validation files are chosen among the readable ones (a first scan), so none is lost to a bad file."""
    import csv
    import tempfile

    from .data_prepare import PrepareConfig, prepare_dataset

    common = dict(license="unknown", pretokenize=True, progress=progress, num_workers=workers)
    if splits is None:
        with tempfile.TemporaryDirectory(prefix=".hf-midi-scan-", dir=out.parent) as scan_dir:
            scan = prepare_dataset(src, Path(scan_dir) / "d", PrepareConfig(split_ratios=(1.0, 0.0, 0.0), **common))
            readable = [f.path for f in scan.splits.get("train", [])]
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
    p.add_argument("--model", default="default",
                   help="the model to start from: a bundled name (default, base), a folder or a Hub id")
    p.add_argument("--minutes", type=float, default=20.0, help="training time (default 20)")
    p.add_argument("--lora", action="store_true", help="train a LoRA adapter instead of every weight")
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--lora-alpha", type=float, default=32.0)
    p.add_argument("--learning-rate", type=float, default=None,
                   help="peak learning rate (default: 3e-4 full, 2e-3 LoRA)")
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

    from .evaluation import evaluate_model
    from .packed import frame, read_prepared

    pieces = [(p, frame(ids).astype("int64")) for p, ids in read_prepared(dataset, "validation")]
    with torch.no_grad():
        return evaluate_model(model, pieces, context=context, batch_size=8, progress=progress)


def finetune(folder, out, model="default", minutes: float = 20.0, lora: bool = False, lora_rank: int = 16,
             lora_alpha: float = 32.0, learning_rate: float | None = None, block_size: int | None = None,
             batch_size: int = 8, val_fraction: float = 0.1, splits: str | None = None,
             max_steps: int | None = None, threads: int = 0, seed: int = 0, overwrite: bool = False,
             progress: bool = True, workers: int | None = None, log=print) -> dict:
    """The ``hf-midi finetune`` job; returns (and writes to ``OUT/finetune.json``) the figures."""
    import shutil

    import torch

    from .packed import read_prepared
    from .training import train
    from .training_args import ConfigError, load_config
    from .utils import atomic_folder

    src, out = Path(folder), Path(out)
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
        info = prepare_folder(src, work / "data", val_fraction, splits, progress, workers)
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
        lr = learning_rate or (2e-3 if lora else 3e-4)
        try:
            args = load_config({
                "dataset": str(work / "data"), "output_dir": str(work / "model"), "init_from": str(model),
                "lora": lora, "lora_rank": lora_rank, "lora_alpha": lora_alpha, "block_size": block,
                "per_device_batch_size": batch, "learning_rate": lr, "warmup_steps": 10,
                "max_steps": max_steps or 1_000_000, "max_minutes": minutes, "eval_every": 0, "eval_batches": 0,
                "save_every": 0, "tracker": "none", "log_every": 5, "shuffle_buffer": 64, "seed": seed,
                "transpose": [-3, 3], "weight_decay": 0.0 if lora else 0.1, "model": {"dropout": 0.0},
                "progress": progress,
            })
        except ConfigError as e:
            raise FinetuneError(str(e)) from None
        t1 = time.perf_counter()
        train(args)
        train_s = time.perf_counter() - t1
        shutil.rmtree(work / "model" / "checkpoints", ignore_errors=True)  # optimizer states: not needed here
        tuned, _ = load_model(work / "model")
        after = score(tuned, work / "data", context, progress)
        log(f"finetune: NLL on the held-out files after {train_s / 60:.1f} min: {after['nll']:.4f} nats/event "
            f"(before {before['nll']:.4f}, {after['nll'] - before['nll']:+.4f})")
        steps = [json.loads(x) for x in (work / "model" / "logs" / "metrics.jsonl").read_text().splitlines() if x]
        result = {"folder": str(src), "model": str(model), "lora": lora, "minutes": minutes,
                  "train_s": round(train_s, 1),
                  "steps": steps[-1]["step"] if steps else 0, "block_size": block, "batch_size": batch,
                  "learning_rate": lr, "files": info["files"], "skipped": len(info["skipped"]),
                  "train_tokens": train_tokens, "nll_before": before["nll"], "nll_after": after["nll"],
                  "tokens_scored": after["tokens"]}
        (work / "finetune.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


def run_finetune(args: argparse.Namespace) -> int:
    result = finetune(args.folder, args.out, model=args.model, minutes=args.minutes, lora=args.lora,
                      lora_rank=args.lora_rank, lora_alpha=args.lora_alpha, learning_rate=args.learning_rate,
                      block_size=args.block_size, batch_size=args.batch_size, val_fraction=args.val_fraction,
                      splits=args.splits, max_steps=args.max_steps, threads=args.threads, seed=args.seed,
                      overwrite=args.overwrite, progress=not args.quiet,
                      log=lambda m: print(m, file=sys.stderr))
    kind = "LoRA adapter" if args.lora else "model"
    print(f"wrote {args.out}/model ({kind}): held-out NLL {result['nll_before']:.4f} -> {result['nll_after']:.4f} "
          f"nats/event; generate with: hf-midi generate --model {args.out}/model --seconds 30 -o song.mid")
    return 0


__all__ = [
    "FinetuneError", "add_lora", "adapter_base", "check_vocabulary", "finetune", "is_adapter", "load_model",
    "merge_adapter", "save_adapter",
]
