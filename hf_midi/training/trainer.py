"""Training: ``accelerate launch train.py --config tiny --dataset DIR --output_dir OUT``.

From an installed package (no repository checkout): ``accelerate launch -m hf_midi.training ...``, the same
arguments.

The loop follows the canonical Accelerate order: arguments -> Accelerator -> seed -> model -> data
-> optimizer groups -> prepare -> loop under ``accumulate()`` -> evaluation -> ``save_state``
checkpoints -> ``save_pretrained`` export -> ``end_training()``. The same script runs on one CPU,
one or several GPUs (DDP, or FSDP through an accelerate config: FSDP2, or FSDP1 with
``fsdp_use_orig_params: true`` so the weight-decay groups survive wrapping) and several machines.
Two CPU processes (gloo): ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 train.py``.

OUT/ holds, at the end, a folder ``from_pretrained`` and the pipeline load directly:
``model.safetensors``, ``config.json``, ``generation_config.json`` and the tokenizer (with its remote
code); beside them ``checkpoints/step_NNNNNNN/`` (resumable states) and ``logs/`` (``metrics.jsonl``
and the tracker's files).

Checkpoints are written into a hidden folder and renamed into place, so a folder named
``step_*`` is always complete. Model weights are safetensors; the optimizer and RNG states are
accelerate's own torch files, loaded back by accelerate with ``torch.load(weights_only=True)``, and
only ever from the run's own checkpoints (``--resume latest``) or a folder you name yourself.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from ..data.packed import PackedError
from ..loading import ModelLoadError
from ..remote_code.codec import PAD_ID, VOCAB_SIZE
from ..remote_code.errors import HfMidiError
from .args import ConfigError, RunArguments, TrainingError, parse_args, to_flat_dict
from .batches import fingerprint, make_batches
from .checkpoints import CHECKPOINTS, checkpoints, load_checkpoint, resolve_resume, save_checkpoint, truncate_metrics
from .models import build_model, export, start_from

LOGS = "logs"
# Dense bf16 peaks (TFLOP/s) for MFU when --peak_tflops is not given.
KNOWN_PEAKS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10G": 125.0}


# --------------------------------------------------------------------------- measures and schedule
def flops_per_token(model, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward): 6 x the parameters used in matmuls, plus
    attention's 12 * layers * width * seq_len for GPT-2 (the PaLM / nanoGPT estimate)."""
    out_w = model.get_output_embeddings().weight
    lookups = [m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding) and m.weight is not out_w]
    n = sum(p.numel() for p in model.parameters()) - sum(w.numel() for w in lookups)
    cfg = model.config
    attn = 12 * cfg.n_layer * cfg.n_embd * seq_len if cfg.model_type == "gpt2" else 0
    return 6 * n + attn


def peak_tflops(args: RunArguments, device: torch.device) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((v for k, v in KNOWN_PEAKS.items() if k in name), None)
    return None  # on CPU we report achieved TFLOP/s; MFU needs a stated peak (--peak_tflops)


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy in fp32: logits (B, T, V) at t predict labels (B, T) at t+1, over
    the 393 real ids only (the padding rows of the embedding are no event), as ``hf-midi evaluate`` scores."""
    return F.cross_entropy(
        logits[:, :-1, :VOCAB_SIZE].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100,
        reduction="sum",
    )


def param_groups(model, weight_decay: float) -> list[dict]:
    """Decay matrices only: biases, norm gains and embeddings (incl. a tied output layer) are left alone."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 and id(p) not in embeddings else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def learning_rate(args: RunArguments, step: int, minutes: float) -> float:
    """Linear warm-up, then cosine to ``min_lr_ratio``; the cosine follows steps or the time budget,
    whichever is further along."""
    if step < args.warmup_steps:
        return args.learning_rate * (step + 1) / args.warmup_steps
    progress = (step - args.warmup_steps) / max(1, args.max_steps - args.warmup_steps)
    if args.max_minutes:
        progress = max(progress, minutes / args.max_minutes)
    ratio = args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return args.learning_rate * ratio


# --------------------------------------------------------------------------- the step
class _Forward:
    """The model's forward, through ``torch.compile`` when asked; if compiling fails (no C compiler, an
    unsupported op), says so once and goes on with the model itself.

    Compiling happens at the first call, so only the first call's failure is taken as the compiler's:
    an error in any later call (out of memory mid-run, a bad batch) is raised as it is, never hidden by
    quietly turning compilation off."""

    def __init__(self, model, compile: bool, accelerator):
        self.model, self.accelerator = model, accelerator
        self.compiled = torch.compile(model) if compile else None
        self._first = self.compiled is not None

    def __call__(self, **batch):
        if self.compiled is None:
            return self.model(**batch)
        if not self._first:
            return self.compiled(**batch)
        try:
            out = self.compiled(**batch)
        except Exception as e:  # compile errors surface at the first call, as many kinds of exception
            self.accelerator.print(f"compile: torch.compile failed ({type(e).__name__}: "
                                   f"{str(e).splitlines()[0][:300] if str(e) else ''}); training uncompiled")
            self.compiled = None
            return self.model(**batch)
        self._first = False
        return out


class Steps:
    """One optimizer step of a run, in two halves the loop calls apart (the loss is checked between them):
    ``backward`` (forward and backward over the step's micro-batches) and ``update`` (clip, step, clear)."""

    def __init__(self, accelerator, model, optimizer, args: RunArguments, source):
        self.accelerator, self.model, self.optimizer = accelerator, model, optimizer
        self.args, self.source = args, source
        self.forward = _Forward(model, args.compile, accelerator)
        self.scale = accelerator.num_processes * args.gradient_accumulation_steps  # undo DDP's and backward()'s means

    def batches(self) -> list[dict]:
        return [next(self.source) for _ in range(self.args.gradient_accumulation_steps)]

    def backward(self, micro: list[dict]):
        """Forward and backward over a step's micro-batches: (summed token loss, real labelled tokens)."""
        acc = self.accelerator
        # Loss = summed token losses / real labelled tokens of the whole step (all micro-batches, all ranks).
        n_tokens = acc.reduce(sum((b["labels"][:, 1:] != -100).sum() for b in micro), "sum")
        loss_sum = torch.zeros((), device=acc.device)
        for batch in micro:
            with acc.accumulate(self.model):
                logits = self.forward(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                part = token_loss_sum(logits, batch["labels"])  # (,)
                acc.backward(part * self.scale / n_tokens.clamp(min=1))
                loss_sum += part.detach()
        return loss_sum, n_tokens

    def update(self, lr: float):
        """Clip, step at ``lr``, clear the gradients; the norm before clipping (None: no clipping)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        clip = self.args.max_grad_norm
        grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), clip) if clip else None
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def __call__(self, micro: list[dict], lr: float) -> None:  # what the probe times: a whole step
        self.backward(micro)
        self.update(lr)


# --------------------------------------------------------------------------- the run
def make_accelerator(args: RunArguments, out: Path):
    """The run's ``Accelerator`` (bf16 where asked or where the GPU has it; tf32 matmuls on a GPU)."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, GradientAccumulationPlugin, ProjectConfiguration

    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    if args.tf32 and torch.cuda.is_available():  # fp32 matmuls and cuDNN (the LSTM) on tensor cores
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    use_bf16 = args.mixed_precision == "bf16" or (
        args.mixed_precision == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return Accelerator(
        mixed_precision="bf16" if use_bf16 else "no",
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=args.gradient_accumulation_steps, sync_with_dataloader=False),
        # The sources shard themselves by rank (and worker): accelerate must not split or dispatch them.
        dataloader_config=DataLoaderConfiguration(dispatch_batches=False, split_batches=False),
        log_with=None if args.tracker == "none" else args.tracker,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / LOGS)),
    )


def model_and_tokenizer(args: RunArguments, accelerator):
    """(model, tokenizer, the adapter's base reference or None): a preset's new model, or ``--init_from``'s
    trained one (with a LoRA adapter when ``--lora``)."""
    from ..remote_code.tokenization_midi import MidiTokenizer

    if not args.init_from:
        return build_model(args.model), MidiTokenizer(sustain=args.sustain, model_max_length=args.block_size), None
    model, tokenizer = start_from(args, accelerator)
    if not args.lora:
        return model, tokenizer, None
    from ..loading import add_lora, base_reference

    model = add_lora(model, args.lora_rank, args.lora_alpha, args.lora_dropout, args.lora_targets)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    accelerator.print(f"lora: rank {args.lora_rank} on {args.lora_targets}: {trainable:,} trainable of "
                      f"{sum(p.numel() for p in model.parameters()):,} parameters")
    return model, tokenizer, base_reference(args.init_from)


def probe(args: RunArguments, accelerator, steps: Steps, flops_tok: float, peak: float | None) -> dict | None:
    """Before anything is written: time the step (this also pays torch.compile's warm-up); a time budget
    shorter than one step is a configuration error, not an empty run. None when neither asks for it."""
    if not (args.probe_steps or args.max_minutes):
        return None
    result = probe_step(accelerator, steps.model, steps.optimizer, steps.source, steps.batches, steps,
                        max(1, args.probe_steps), real=args.probe_steps > 0)
    # per device, as MFU is
    result.update(flops_per_token=flops_tok,
                  probe_tflops=result["tokens_per_step"] * flops_tok / result["synthetic_step_s"] / 1e12)
    if peak:
        result["probe_mfu"] = result["probe_tflops"] / peak
    if args.max_minutes and result["synthetic_step_s"] > args.max_minutes * 60:
        raise ConfigError(f"max_minutes: {args.max_minutes:g} min is shorter than one training step on "
                          f"this machine ({result['synthetic_step_s']:.2f} s measured); nothing was written")
    if args.probe_steps:
        accelerator.print("probe: " + json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                                  for k, v in result.items()}))
    return result


def prepare_output(args: RunArguments, accelerator, out: Path, step: int, probed: dict | None) -> None:
    """OUT/logs for every rank; a save cut off by a kill swept away; a resumed run's later metrics dropped;
    the tracker started."""
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / LOGS).mkdir(exist_ok=True)
        for stale in (out / CHECKPOINTS).glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        truncate_metrics(out / LOGS / "metrics.jsonl", step)
        if probed is not None and args.probe_steps:
            with open(out / LOGS / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, "event": "probe", **probed}) + "\n")
    accelerator.wait_for_everyone()
    if args.tracker != "none":
        accelerator.init_trackers("hf-midi", config={k: str(v) if isinstance(v, (list, type(None))) else v
                                                    for k, v in to_flat_dict(args).items()})


def train(args: RunArguments) -> Path:
    """Run training as configured; returns the output folder (with the exported model)."""
    from accelerate.utils import set_seed

    out = Path(args.output_dir)
    resume_from = resolve_resume(args)  # config errors surface before any work
    accelerator = make_accelerator(args, out)
    set_seed(args.seed)
    model, tokenizer, adapter_base = model_and_tokenizer(args, accelerator)
    with accelerator.main_process_first():
        train_batches, read_eval = make_batches(args, tokenizer, accelerator)
    model.to(accelerator.device)  # fused AdamW wants its parameters on the GPU when it is made
    optimizer = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.learning_rate,
                                  betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
                                  fused=accelerator.device.type == "cuda")
    flops_tok = flops_per_token(model, args.block_size)
    model, optimizer = accelerator.prepare(model, optimizer)
    steps = Steps(accelerator, model, optimizer, args, train_batches)
    position = (0, 0, 0.0)  # step, tokens seen, training minutes before this process
    if resume_from is not None:
        position = load_checkpoint(accelerator, resume_from, train_batches, args)
    peak = peak_tflops(args, accelerator.device)
    prepare_output(args, accelerator, out, position[0], probe(args, accelerator, steps, flops_tok, peak))
    _Run(args, accelerator, steps, out, read_eval, flops_tok, peak).loop(*position)
    export(accelerator, model, tokenizer, out, keep_generation_config=bool(args.init_from),
           adapter_base=adapter_base)
    accelerator.end_training()
    return out


class _Run:
    """The loop of one run: steps until ``max_steps`` or the time budget, logging, evaluating and saving
    as configured. ``minutes`` is training time (evaluation and checkpoints paused out of it), summed
    over resumes: the time budget and the cosine that follows it."""

    def __init__(self, args: RunArguments, accelerator, steps: Steps, out: Path, read_eval, flops_tok, peak):
        self.args, self.accelerator, self.steps, self.out = args, accelerator, steps, out
        self.read_eval, self.eval_batches = read_eval, None  # read once, at the first evaluation
        self.flops_tok, self.peak = flops_tok, peak
        # HF_MIDI_RECORD_BATCHES=1: a fingerprint of every training block to OUT/logs, to check which data
        # each process saw (the multi-process and resume tests use it); not a setting of the run.
        self.record = None
        if os.environ.get("HF_MIDI_RECORD_BATCHES"):
            self.record = open(out / LOGS / f"batches_rank{accelerator.process_index}.jsonl", "a")

    def loop(self, step: int, tokens_seen: int, minutes_before: float) -> None:
        from tqdm.auto import tqdm

        args, acc, steps = self.args, self.accelerator, self.steps
        bar = tqdm(total=None if args.max_minutes and args.max_steps >= 100_000 else args.max_steps, initial=step,
                   desc="train", disable=not (args.progress and acc.is_local_main_process), dynamic_ncols=True)
        self.t_start = self.t_log = time.perf_counter()
        self.tokens_log, minutes = 0, minutes_before
        steps.model.train()
        while step < args.max_steps:
            lr = learning_rate(args, step, minutes)
            micro = steps.batches()
            self._record(step, micro)
            loss, minutes = self._loss(step, micro, minutes_before)
            grad_norm = steps.update(lr)
            step += 1
            step_tokens = sum(b["input_ids"].numel() for b in micro) * acc.num_processes
            tokens_seen += step_tokens
            self.tokens_log += step_tokens
            metrics = {"loss": loss, "lr": lr} | ({"grad_norm": float(grad_norm)} if grad_norm is not None else {})
            if step % args.log_every == 0 or step == args.max_steps:
                self._log(metrics, step, tokens_seen, minutes, bar)
            time_up = args.max_minutes is not None and minutes >= args.max_minutes
            self._pause_for(self._evaluate_and_save, metrics, step, tokens_seen, minutes,
                            step == args.max_steps or time_up)
            bar.update(1)
            if time_up:
                break
        bar.close()
        if self.record is not None:
            self.record.close()
        acc.wait_for_everyone()

    def _record(self, step: int, micro: list[dict]) -> None:
        if self.record is not None:
            for batch in micro:
                self.record.write(json.dumps({"step": step, "blocks": [fingerprint(r) for r in batch["input_ids"]]})
                                  + "\n")

    def _loss(self, step: int, micro: list[dict], minutes_before: float) -> tuple[float, float]:
        """Backward over the step; (its loss, the training minutes so far), the same on every rank. A
        non-finite loss stops the run before the update, naming the checkpoint to resume from."""
        acc = self.accelerator
        loss_sum, n_tokens = self.steps.backward(micro)
        minutes = minutes_before + (time.perf_counter() - self.t_start) / 60
        # One collective for the step's loss and the (mean) clock, so every rank sees the same values.
        stats = acc.reduce(torch.stack([loss_sum, torch.tensor(minutes, device=loss_sum.device)]), "sum")
        loss = (stats[0] / n_tokens.clamp(min=1)).item()
        if not math.isfinite(loss):
            last = checkpoints(self.out)
            raise TrainingError(
                f"loss is {loss} at step {step + 1}: stopping before the update. The last good checkpoint is "
                f"{last[-1] if last else 'none (no checkpoint was written yet)'}; resume from it with a lower "
                "learning_rate or more warmup_steps.")
        return loss, stats[1].item() / acc.num_processes

    def _log(self, metrics: dict, step: int, tokens_seen: int, minutes: float, bar) -> None:
        now = time.perf_counter()
        tok_s = self.tokens_log / max(now - self.t_log, 1e-9)
        metrics.update(tokens_per_s=tok_s, tflops=tok_s * self.flops_tok / 1e12, tokens_seen=tokens_seen,
                       epoch=round(self.steps.source.epoch, 4), minutes=minutes)
        if self.peak:  # tflops are the whole run's; the peak is one device's
            metrics["mfu"] = metrics["tflops"] / (self.peak * self.accelerator.num_processes)
        self.t_log, self.tokens_log = now, 0
        bar.set_postfix(loss=f"{metrics['loss']:.3f}", lr=f"{metrics['lr']:.2e}", tok_s=f"{tok_s:,.0f}")
        self.accelerator.log(metrics, step=step)

    def _pause_for(self, work, *a) -> None:
        """Run ``work``, keeping its time (evaluation, checkpoints) out of tokens/s and the time budget."""
        t = time.perf_counter()
        work(*a)
        paused = time.perf_counter() - t
        if paused > 0.05:
            self.t_start += paused
            self.t_log += paused

    def _evaluate_and_save(self, metrics: dict, step: int, tokens_seen: int, minutes: float, last: bool) -> None:
        args, acc = self.args, self.accelerator
        if self.read_eval is not None and ((args.eval_every and step % args.eval_every == 0) or last):
            if self.eval_batches is None:
                self.eval_batches = self.read_eval()
            metrics["eval_loss"] = evaluate_loss(acc, self.steps.model, self.eval_batches, args)
            acc.log({"eval_loss": metrics["eval_loss"]}, step=step)
            self.steps.model.train()
        if acc.is_main_process:
            with open(self.out / LOGS / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, **metrics}) + "\n")
        if (args.save_every and step % args.save_every == 0) or last:
            state = {"step": step, "tokens_seen": tokens_seen, "minutes": minutes,
                     "world_size": acc.num_processes, "config": to_flat_dict(args)}
            save_checkpoint(acc, self.out, step, state, self.steps.source.state_dict(), args.save_total_limit)


def probe_step(accelerator, model, optimizer, source, next_batches, train_step, steps: int, real: bool) -> dict:
    """Seconds an optimizer step takes on one fixed (synthetic) batch and, if ``real``, on batches as the
    source gives them, ``steps`` of each after one warm-up step (torch.compile compiles there). At
    learning rate 0, with the optimizer's, the source's and the RNGs' states put back afterwards: the
    run that follows is the run that would have been (AdamW's decoupled decay is lr x wd: 0 too).
    ``real_vs_synthetic`` near 1 means the data path costs nothing."""
    import copy

    device = accelerator.device

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    source_state = source.state_dict()
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model.train()
        fixed = next_batches()
        t = time.perf_counter()
        train_step(fixed, 0.0)
        sync()
        result = {"warmup_s": time.perf_counter() - t,
                  "tokens_per_step": sum(b["input_ids"].numel() for b in fixed)}

        def timed(batches) -> float:
            sync()
            t = time.perf_counter()
            for _ in range(steps):
                train_step(batches(), 0.0)
            sync()
            return (time.perf_counter() - t) / steps

        result["synthetic_step_s"] = timed(lambda: fixed)
        if real:
            result["real_step_s"] = timed(next_batches)
            result["real_vs_synthetic"] = result["synthetic_step_s"] / result["real_step_s"]
    optimizer.load_state_dict(optimizer_state)
    source.load_state_dict(source_state)
    return result


@torch.no_grad()
def evaluate_loss(accelerator, model, batches: list[dict], args: RunArguments) -> float:
    """Mean next-token loss over ``batches``. Every rank runs the same number of forward passes
    (FSDP needs all of them in each), padding with empty batches."""
    model.eval()
    n = int(accelerator.reduce(torch.tensor(len(batches), device=accelerator.device), "max"))
    total = torch.zeros(2, device=accelerator.device)  # (loss sum, tokens)
    for i in range(n):
        if i < len(batches):
            batch = {k: v.to(accelerator.device) for k, v in batches[i].items()}
        else:
            ids = torch.full((1, args.block_size), PAD_ID, device=accelerator.device)
            batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.full_like(ids, -100)}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        total += torch.stack([token_loss_sum(logits, batch["labels"]), (batch["labels"][:, 1:] != -100).sum()])
    total = accelerator.reduce(total, "sum")
    return (total[0] / total[1].clamp(min=1)).item()


def main(argv: list[str] | None = None) -> int:
    """``train.py``: 0 done, 2 a configuration error, 1 the run failed (bad data, a NaN loss)."""
    try:
        train(parse_args(argv))
    except ConfigError as e:
        print(f"train.py: config error: {e}", file=sys.stderr)
        return 2
    except (TrainingError, HfMidiError, PackedError, ModelLoadError) as e:  # a missing split is a HfMidiError
        print(f"train.py: error: {e}", file=sys.stderr)
        return 1
    return 0


__all__ = [
    "KNOWN_PEAKS", "LOGS", "Steps", "TrainingError", "evaluate_loss", "flops_per_token",
    "learning_rate", "main", "make_accelerator", "model_and_tokenizer", "param_groups", "peak_tflops", "probe_step",
    "token_loss_sum", "train",
]

