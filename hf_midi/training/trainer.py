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

import hashlib
import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from ..data.packed import PackedError
from ..loading import ModelLoadError
from ..remote_code.codec import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE, MidiError, never_generated
from ..utils import fsync_files
from .args import (
    ConfigError,
    ModelArguments,
    RunArguments,
    dataset_kind,
    load_config,
    model_arguments,
    parse_args,
    to_flat_dict,
)

CHECKPOINTS = "checkpoints"
LOGS = "logs"
TRAINER_STATE = "trainer_state.json"
# Dense bf16 peaks (TFLOP/s) for MFU when --peak_tflops is not given.
KNOWN_PEAKS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10G": 125.0}


class TrainingError(MidiError):
    """The run cannot go on (a non-finite loss, a checkpoint that does not fit); the message says why."""


# --------------------------------------------------------------------------- models
def model_config(m: ModelArguments):
    """The transformers config of ``m``, special ids set, vocabulary padded to ``m.vocab_multiple``."""
    vocab = math.ceil(VOCAB_SIZE / m.vocab_multiple) * m.vocab_multiple
    special = {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID}
    if m.architecture == "musicrnn":
        from ..remote_code.modeling_musicrnn import MusicRNNConfig

        return MusicRNNConfig(
            vocab_size=vocab, embedding_size=m.embedding_size or m.hidden_size, hidden_size=m.hidden_size,
            num_layers=m.num_layers, dropout=m.dropout, initializer_range=m.initializer_range, **special,
        )
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab, n_positions=m.context_length, n_embd=m.hidden_size, n_layer=m.num_layers,
        n_head=m.num_heads, n_inner=m.intermediate_size, resid_pdrop=m.dropout, embd_pdrop=m.dropout,
        attn_pdrop=m.dropout, initializer_range=m.initializer_range, use_cache=True,
        tie_word_embeddings=True, **special,
    )


def build_model(preset_or_dict: str | dict | ModelArguments = "tiny"):
    """A randomly initialised model of a preset ("tiny", "default", "base", "lstm", a YAML path), a
    config dict (whole, or just its ``model`` section) or ``ModelArguments``. Seed torch first for
    reproducible weights."""
    if isinstance(preset_or_dict, ModelArguments):
        m = preset_or_dict
    elif isinstance(preset_or_dict, dict) and "model" not in preset_or_dict:
        m = model_arguments(preset_or_dict)
    else:
        m = load_config(preset_or_dict, check_paths=False).model
    config = model_config(m)
    if m.architecture == "musicrnn":
        from ..remote_code.modeling_musicrnn import MusicRNNForCausalLM

        return MusicRNNForCausalLM(config)
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(config, attn_implementation=m.attn_implementation)


def generation_config(model_config, max_new_tokens: int = 1024):
    """Sampling defaults shipped in generation_config.json: ids the model must never emit (padding
    rows of the embedding, <pad>, <bos>) are suppressed; the two rules of a piece composed to a length
    (the first note at once, no end before the asked seconds) are on."""
    from transformers import GenerationConfig

    from ..remote_code.generation import DEFAULT_ALLOW_EARLY_END, DEFAULT_SOUND_AT_ONCE

    never = never_generated(model_config.vocab_size)
    config = GenerationConfig(
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, decoder_start_token_id=BOS_ID,
        do_sample=True, temperature=1.0, top_p=0.95, top_k=0, max_new_tokens=max_new_tokens,
        suppress_tokens=never,
    )
    config.sound_at_once, config.allow_early_end = DEFAULT_SOUND_AT_ONCE, DEFAULT_ALLOW_EARLY_END
    return config


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


# --------------------------------------------------------------------------- checkpoints
def checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (a renamed-into-place folder is complete)."""
    root = Path(output_dir) / CHECKPOINTS
    found = [p for p in root.glob("step_*") if re.fullmatch(r"step_\d+", p.name) and (p / TRAINER_STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def resolve_resume(args: RunArguments) -> Path | None:
    if args.resume is None:
        return None
    if args.resume == "latest":
        found = checkpoints(args.output_dir)
        return found[-1] if found else None  # nothing yet: start fresh (a first run and a rerun look alike)
    return Path(args.resume)  # validate() checked it holds a trainer_state.json


def save_checkpoint(accelerator, out: Path, step: int, state: dict, data_state: dict, keep: int) -> Path:
    """``save_state`` into a hidden folder, then one rename: a crash leaves no partial ``step_*``. (The
    policy of ``utils.atomic_folder``, written out here because every process writes into the folder, so
    its name must be known to all of them.)"""
    root = out / CHECKPOINTS
    final, tmp = root / f"step_{step:07d}", root / f".tmp-step_{step:07d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    rank = accelerator.process_index
    (tmp / f"data_state_rank{rank}.json").write_text(json.dumps(data_state), encoding="utf-8")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / TRAINER_STATE).write_text(json.dumps(state, indent=1), encoding="utf-8")
        fsync_files(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in checkpoints(out)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def start_from(args: RunArguments, accelerator):
    """``--init_from``: the trained model and its tokenizer (checked against the codec's vocabulary)."""
    from ..loading import load_model

    model, tokenizer = load_model(args.init_from)
    accelerator.print(f"init_from {args.init_from}: starting from its weights and tokenizer "
                      f"({sum(p.numel() for p in model.parameters()):,} parameters); the config's model section "
                      "is ignored")
    n_positions = getattr(model.config, "n_positions", None)
    if n_positions is not None and args.block_size > n_positions:
        raise ConfigError(f"block_size: {args.block_size} is longer than {args.init_from}'s context ({n_positions})")
    if getattr(tokenizer, "sustain", args.sustain) != args.sustain:
        accelerator.print(f"init_from: the model's tokenizer uses sustain={tokenizer.sustain!r}; that mode is kept")
    return model, tokenizer


def export(accelerator, model, tokenizer, out: Path, max_new_tokens: int, keep_generation_config: bool = False,
           adapter_base: str | None = None) -> None:
    """``save_pretrained`` of model + generation config + Hub-ready tokenizer into ``out``: written in a
    hidden folder, fsynced, then each file renamed in, config.json last (a folder with a config is whole;
    file by file, not a folder swap, because OUT also holds the run's checkpoints and logs). A LoRA
    run (``adapter_base`` set) writes only the adapter (``adapter_config.json`` last) and the tokenizer."""
    from ..hub import add_tokenizer_code

    if adapter_base is None:
        state_dict = accelerator.get_state_dict(model)  # gathers FSDP shards; a collective on every rank
    if not accelerator.is_main_process:
        return
    unwrapped = accelerator.unwrap_model(model)
    tmp = out / ".tmp-export"
    shutil.rmtree(tmp, ignore_errors=True)
    if adapter_base is not None:
        unwrapped.peft_config["default"].base_model_name_or_path = adapter_base
        unwrapped.save_pretrained(tmp, safe_serialization=True)  # the adapter's weights only
        (tmp / "README.md").unlink(missing_ok=True)  # peft's empty card template
        last = "adapter_config.json"
    else:
        # torch.compile's wrapper names every key "_orig_mod.<key>"; the saved model must not know it ran compiled.
        state_dict = {k.removeprefix("_orig_mod."): v for k, v in state_dict.items()}
        if not keep_generation_config:
            unwrapped.generation_config = generation_config(unwrapped.config, max_new_tokens)
        unwrapped.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        last = "config.json"
    tokenizer.save_pretrained(tmp)
    add_tokenizer_code(tmp)
    fsync_files(tmp)
    names = sorted(p.name for p in tmp.iterdir())
    for name in [n for n in names if n != last] + [last]:
        (tmp / name).chmod(0o644)  # some writers make 0600 files; a model folder is for everyone to read
        os.replace(tmp / name, out / name)
    tmp.rmdir()


# --------------------------------------------------------------------------- data
# The loop's batch sources: ``next(source)`` gives a micro-batch (``input_ids``, ``attention_mask``,
# ``labels``) on the device; ``state_dict()``/``load_state_dict()`` make a resumed run continue exactly;
# ``epoch`` says how far it is. Two of them: ``StreamBatches`` (a ``datasets`` stream of a prepared folder
# or Hub repo, parsed or pre-tokenised) and ``hf_midi.data.packed.PackedBatches`` (windows of a packed corpus
# held on the device). ``--dataset`` decides which (``dataset_kind``).
def make_stream(args: RunArguments, split: str, tokenizer, accelerator, train: bool):
    from ..data.augmentation import AugmentConfig
    from ..data.stream import MidiBlockStream

    augment = None
    if train and args.augment:
        augment = AugmentConfig(transpose=tuple(args.transpose), stretch=tuple(args.stretch),
                                velocity_jitter=args.velocity_jitter)
    return MidiBlockStream(
        args.dataset, split, tokenizer, args.block_size, augment=augment, mode=args.data_mode if train else "pack",
        shuffle_buffer=args.shuffle_buffer if train else 0,
        piece_shuffle_buffer=args.piece_shuffle_buffer if train else 0, seed=args.seed,
        rank=accelerator.process_index, world_size=accelerator.num_processes,
    )


def make_batches(args: RunArguments, tokenizer, accelerator):
    """(training batch source, a function that reads the evaluation batches or None) for ``args.dataset``."""
    if dataset_kind(args.dataset) == "packed":
        from ..data.packed import PackedBatches

        transpose = tuple(args.transpose) if args.augment else (0, 0)
        try:
            source = PackedBatches(args.dataset, args.block_size, args.per_device_batch_size, accelerator.device,
                                   transpose=transpose, seed=args.seed, rank=accelerator.process_index,
                                   sustain=getattr(tokenizer, "sustain", args.sustain),
                                   piece_start_share=args.piece_start_share)
        except PackedError as e:
            raise ConfigError(f"dataset: {e}") from None
        if args.eval_batches and args.eval_split not in source.manifest["eval"]:
            raise ConfigError(f"eval_split: {args.eval_split!r} is not an evaluation set of the packed corpus "
                              f"{args.dataset} (it has {sorted(source.manifest['eval'])}; or --eval_batches 0)")
        if args.augment and (tuple(args.stretch) != (1.0, 1.0) or args.velocity_jitter):
            accelerator.print("packed corpus: ids, not times, so only the transposition augments it "
                              "(stretch and velocity_jitter apply to streamed MIDI)")
        read_eval = None
        if args.eval_batches:
            def read_eval():
                return source.eval_batches(args.eval_split, args.eval_batches, seed=accelerator.process_index)
        return source, read_eval
    source = StreamBatches(make_stream(args, args.train_split, tokenizer, accelerator, True), args,
                           accelerator.device)
    read_eval = None
    if args.eval_batches:
        eval_stream = make_stream(args, args.eval_split, tokenizer, accelerator, False)

        def read_eval():
            return read_eval_batches(eval_stream, args)
    return source, read_eval


class StreamBatches:
    """Endless micro-batches of this rank's stream, epoch after epoch, with a resumable position.

    The position is (epoch, micro-batches taken in it); the stream's ``dataloader_state`` turns it into
    a state from which a fresh DataLoader (with the same number of workers) gives exactly the next
    batches.
    """

    def __init__(self, stream, args: RunArguments, device):
        from torch.utils.data import DataLoader

        self.stream, self.device, self.args = stream, device, args
        # drop_last: every step has the same shape (torch.compile would recompile for a ragged tail).
        # Its own generator: each iter(DataLoader) draws a seed, which must not come from the global
        # RNG (dropout's), or a resumed run (a new iterator after load_state) would drift from an
        # uninterrupted one. The stream seeds its own randomness from (seed, epoch, piece).
        self.loader = DataLoader(stream, batch_size=args.per_device_batch_size, num_workers=args.num_workers,
                                 pin_memory=device.type == "cuda", drop_last=True,
                                 generator=torch.Generator().manual_seed(args.seed))
        self.epoch, self.taken, self._it = 0, 0, None

    def state_dict(self) -> dict:
        stream = self.stream.dataloader_state(self.taken, self.args.per_device_batch_size, self.args.num_workers,
                                              self.epoch)
        return {"epoch": self.epoch, "taken": self.taken, "stream": stream}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.taken, self._it = state["epoch"], state["taken"], None
        if state.get("stream"):
            self.stream.load_state_dict(state["stream"])

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        while True:
            if self._it is None:
                self.stream.set_epoch(self.epoch)
                self._it = iter(self.loader)
            try:
                batch = next(self._it)
            except StopIteration:
                if self.taken == 0:
                    raise TrainingError(f"the {self.stream.split!r} split gives this rank no full batch of "
                                        "blocks: use a smaller block_size or per_device_batch_size") from None
                self.epoch, self.taken, self._it = self.epoch + 1, 0, None
                continue
            self.taken += 1
            return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}


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


# --------------------------------------------------------------------------- the run
def train(args: RunArguments) -> Path:
    """Run training as configured; returns the output folder (with the exported model)."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, GradientAccumulationPlugin, ProjectConfiguration, set_seed
    from tqdm.auto import tqdm

    from ..remote_code.tokenization_midi import MidiTokenizer

    out = Path(args.output_dir)
    resume_from = resolve_resume(args)  # config errors surface before any work
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    if args.tf32 and torch.cuda.is_available():  # fp32 matmuls and cuDNN (the LSTM) on tensor cores
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    use_bf16 = args.mixed_precision == "bf16" or (
        args.mixed_precision == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    accelerator = Accelerator(
        mixed_precision="bf16" if use_bf16 else "no",
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=args.gradient_accumulation_steps, sync_with_dataloader=False),
        # The sources shard themselves by rank (and worker): accelerate must not split or dispatch them.
        dataloader_config=DataLoaderConfiguration(dispatch_batches=False, split_batches=False),
        log_with=None if args.tracker == "none" else args.tracker,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / LOGS)),
    )
    set_seed(args.seed)
    adapter_base = None
    if args.init_from:
        model, tokenizer = start_from(args, accelerator)
        if args.lora:
            from ..loading import add_lora, base_reference

            adapter_base = base_reference(args.init_from)
            model = add_lora(model, args.lora_rank, args.lora_alpha, args.lora_dropout, args.lora_targets)
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            accelerator.print(f"lora: rank {args.lora_rank} on {args.lora_targets}: {trainable:,} trainable of "
                              f"{sum(p.numel() for p in model.parameters()):,} parameters")
    else:
        model = build_model(args.model)
        tokenizer = MidiTokenizer(sustain=args.sustain, model_max_length=args.block_size)
    with accelerator.main_process_first():
        train_batches, read_eval = make_batches(args, tokenizer, accelerator)
    eval_batches = None  # read once, at the first evaluation
    model.to(accelerator.device)  # fused AdamW wants its parameters on the GPU when it is made
    fused = accelerator.device.type == "cuda"
    optimizer = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.learning_rate,
                                  betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon, fused=fused)
    flops_tok = flops_per_token(model, args.block_size)
    model, optimizer = accelerator.prepare(model, optimizer)
    forward = _Forward(model, args.compile, accelerator)
    scale = accelerator.num_processes * args.gradient_accumulation_steps  # undo DDP's and backward()'s means

    def backward(micro: list[dict]):
        """Forward and backward over a step's micro-batches: (summed token loss, real labelled tokens)."""
        # Loss = summed token losses / real labelled tokens of the whole step (all micro-batches, all ranks).
        n_tokens = accelerator.reduce(sum((b["labels"][:, 1:] != -100).sum() for b in micro), "sum")
        loss_sum = torch.zeros((), device=accelerator.device)
        for batch in micro:
            with accelerator.accumulate(model):
                logits = forward(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                part = token_loss_sum(logits, batch["labels"])  # (,)
                accelerator.backward(part * scale / n_tokens.clamp(min=1))
                loss_sum += part.detach()
        return loss_sum, n_tokens

    def update(lr: float):
        """Clip, step at ``lr``, clear the gradients; the norm before clipping (None: no clipping)."""
        for group in optimizer.param_groups:
            group["lr"] = lr
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm) if args.max_grad_norm else None
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def train_step(micro: list[dict], lr: float) -> None:  # what the probe times: a whole step
        backward(micro)
        update(lr)

    def next_step_batches() -> list[dict]:
        return [next(train_batches) for _ in range(args.gradient_accumulation_steps)]

    step, tokens_seen, minutes_before = 0, 0, 0.0
    if resume_from is not None:
        step, tokens_seen, minutes_before = _load_checkpoint(accelerator, resume_from, train_batches, args)
    peak = peak_tflops(args, accelerator.device)
    # Before anything is written: time the step (this also pays torch.compile's warm-up); a time budget
    # shorter than one step is a configuration error, not an empty run.
    if args.probe_steps or args.max_minutes:
        probe = probe_step(accelerator, model, optimizer, train_batches, next_step_batches, train_step,
                           max(1, args.probe_steps), real=args.probe_steps > 0)
        # per device, as MFU is
        probe.update(flops_per_token=flops_tok,
                     probe_tflops=probe["tokens_per_step"] * flops_tok / probe["synthetic_step_s"] / 1e12)
        if peak:
            probe["probe_mfu"] = probe["probe_tflops"] / peak
        if args.max_minutes and probe["synthetic_step_s"] > args.max_minutes * 60:
            raise ConfigError(f"max_minutes: {args.max_minutes:g} min is shorter than one training step on "
                              f"this machine ({probe['synthetic_step_s']:.2f} s measured); nothing was written")
        if args.probe_steps:
            accelerator.print("probe: " + json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                                      for k, v in probe.items()}))
    else:
        probe = None
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / LOGS).mkdir(exist_ok=True)
        for stale in (out / CHECKPOINTS).glob(".tmp-*"):  # a save cut off by a kill
            shutil.rmtree(stale, ignore_errors=True)
        _truncate_metrics(out / LOGS / "metrics.jsonl", step)
        if probe is not None and args.probe_steps:
            with open(out / LOGS / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, "event": "probe", **probe}) + "\n")
    accelerator.wait_for_everyone()  # OUT/logs exists for every rank
    if args.tracker != "none":
        accelerator.init_trackers("hf-midi", config={k: str(v) if isinstance(v, (list, type(None))) else v
                                                    for k, v in to_flat_dict(args).items()})
    # HF_MIDI_RECORD_BATCHES=1: a fingerprint of every training block to OUT/logs, to check which data each
    # process saw (the multi-process and resume tests use it); not a setting of the run.
    record = None
    if os.environ.get("HF_MIDI_RECORD_BATCHES"):
        record = open(out / LOGS / f"batches_rank{accelerator.process_index}.jsonl", "a")
    bar = tqdm(total=None if args.max_minutes and args.max_steps >= 100_000 else args.max_steps, initial=step,
               desc="train", disable=not (args.progress and accelerator.is_local_main_process), dynamic_ncols=True)
    # ``minutes`` is training time (evaluation and checkpoints paused out of it), summed over resumes: the
    # time budget and the cosine that follows it.
    t_start, t_log, tokens_log = time.perf_counter(), time.perf_counter(), 0
    minutes = minutes_before
    model.train()
    while step < args.max_steps:
        lr = learning_rate(args, step, minutes)
        micro = next_step_batches()
        if record is not None:
            for batch in micro:
                record.write(json.dumps({"step": step, "blocks": [_fingerprint(r) for r in batch["input_ids"]]}) + "\n")
        loss_sum, n_tokens = backward(micro)
        minutes = minutes_before + (time.perf_counter() - t_start) / 60
        # One collective for the step's loss and the (mean) clock, so every rank sees the same values.
        stats = accelerator.reduce(torch.stack([loss_sum, torch.tensor(minutes, device=loss_sum.device)]), "sum")
        loss = (stats[0] / n_tokens.clamp(min=1)).item()
        minutes = stats[1].item() / accelerator.num_processes
        if not math.isfinite(loss):
            last = checkpoints(out)
            raise TrainingError(
                f"loss is {loss} at step {step + 1}: stopping before the update. The last good checkpoint is "
                f"{last[-1] if last else 'none (no checkpoint was written yet)'}; resume from it with a lower "
                "learning_rate or more warmup_steps.")
        grad_norm = update(lr)
        step += 1
        step_tokens = sum(b["input_ids"].numel() for b in micro) * accelerator.num_processes
        tokens_seen += step_tokens
        tokens_log += step_tokens
        metrics = {"loss": loss, "lr": lr}
        if grad_norm is not None:
            metrics["grad_norm"] = float(grad_norm)
        if step % args.log_every == 0 or step == args.max_steps:
            now = time.perf_counter()
            tok_s = tokens_log / max(now - t_log, 1e-9)
            metrics.update(tokens_per_s=tok_s, tflops=tok_s * flops_tok / 1e12, tokens_seen=tokens_seen,
                           epoch=round(train_batches.epoch, 4), minutes=minutes)
            if peak:  # tflops are the whole run's; the peak is one device's
                metrics["mfu"] = metrics["tflops"] / (peak * accelerator.num_processes)
            t_log, tokens_log = now, 0
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tok_s:,.0f}")
            accelerator.log(metrics, step=step)
        time_up = args.max_minutes is not None and minutes >= args.max_minutes
        last_step = step == args.max_steps or time_up
        t_pause = time.perf_counter()
        if read_eval is not None and ((args.eval_every and step % args.eval_every == 0) or last_step):
            if eval_batches is None:
                eval_batches = read_eval()
            metrics["eval_loss"] = evaluate_loss(accelerator, model, eval_batches, args)
            accelerator.log({"eval_loss": metrics["eval_loss"]}, step=step)
            model.train()
        if accelerator.is_main_process:
            with open(out / LOGS / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, **metrics}) + "\n")
        bar.update(1)
        if (args.save_every and step % args.save_every == 0) or last_step:
            state = {"step": step, "tokens_seen": tokens_seen, "minutes": minutes,
                     "world_size": accelerator.num_processes, "config": to_flat_dict(args)}
            save_checkpoint(accelerator, out, step, state, train_batches.state_dict(), args.save_total_limit)
        paused = time.perf_counter() - t_pause
        if paused > 0.05:  # keep evaluation and checkpoints out of tokens/s and of the time budget
            t_start += paused
            t_log += paused
        if time_up:
            break
    bar.close()
    if record is not None:
        record.close()
    accelerator.wait_for_everyone()
    export(accelerator, model, tokenizer, out, max_new_tokens=1024, keep_generation_config=bool(args.init_from),
           adapter_base=adapter_base)
    accelerator.end_training()
    return out


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


def _fingerprint(ids: torch.Tensor) -> str:
    return hashlib.sha1(ids.cpu().numpy().tobytes()).hexdigest()[:16]


def _truncate_metrics(path: Path, step: int) -> None:
    """A resumed run rewrites the steps after its checkpoint: drop their old lines."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError):  # a line cut off by a kill
            pass
    path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")


def _load_checkpoint(accelerator, path: Path, batches, args: RunArguments) -> tuple[int, int, float]:
    state = json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))
    accelerator.load_state(str(path))
    data_file = path / f"data_state_rank{accelerator.process_index}.json"
    if state["world_size"] == accelerator.num_processes and data_file.is_file():
        batches.load_state_dict(json.loads(data_file.read_text(encoding="utf-8")))
    else:  # another world size shards the data differently: go on from the next epoch's start
        if isinstance(batches, StreamBatches):
            epoch = json.loads((path / "data_state_rank0.json").read_text(encoding="utf-8"))["epoch"] + 1
            batches.load_state_dict({"epoch": epoch, "taken": 0, "stream": None})
            accelerator.print(f"resume: {state['world_size']} -> {accelerator.num_processes} processes; "
                              f"the data restarts at epoch {epoch}")
        else:  # packed windows: a fresh draw for each rank
            batches.reseed(args.seed, accelerator.process_index, state["step"])
            accelerator.print(f"resume: {state['world_size']} -> {accelerator.num_processes} processes; "
                              "the packed windows are drawn afresh")
    accelerator.print(f"resumed from {path} at step {state['step']}")
    return state["step"], state["tokens_seen"], state["minutes"]


def read_eval_batches(stream, args: RunArguments) -> list[dict]:
    """The first ``eval_batches`` micro-batches of this rank's eval stream (kept: every evaluation
    scores the same blocks, and the MIDI is parsed once)."""
    from torch.utils.data import DataLoader

    batches = []
    # A private generator: reading these must not move the global RNG (see Batches).
    loader = DataLoader(stream, batch_size=args.per_device_batch_size, generator=torch.Generator().manual_seed(0))
    for batch in loader:
        batches.append(batch)
        if len(batches) == args.eval_batches:
            break
    return batches


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
    except (TrainingError, MidiError, PackedError, ModelLoadError) as e:  # a missing split is a MidiError
        print(f"train.py: error: {e}", file=sys.stderr)
        return 1
    return 0


__all__ = [
    "StreamBatches",
    "TrainingError",
    "build_model",
    "checkpoints",
    "flops_per_token",
    "generation_config",
    "learning_rate",
    "main",
    "model_config",
    "param_groups",
    "token_loss_sum",
    "train",
]

