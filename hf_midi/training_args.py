"""The arguments of a training run: two dataclasses, read from a YAML preset plus command-line overrides.

Every hyperparameter is a documented, defaulted field here; ``hf_midi/configs/*.yaml`` sets the ones a
preset changes, and any field can be overridden on the command line (``--learning_rate 3e-4``,
``--model.num_layers 6``). Mistakes fail before any work, naming the field: an unknown field, a
value of the wrong type, a choice out of range, a dataset that is not there.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# The presets ship inside the package (package data), so a wheel install has them too.
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(ValueError):
    """A bad training configuration; the message names the field (and the file) at fault."""


@dataclass
class ModelArguments:
    """The model: a GPT-2 (``GPT2LMHeadModel``, plain transformers) or the LSTM baseline."""

    architecture: str = "gpt2"  # "gpt2" or "musicrnn" (the LSTM, hf_midi.modeling_musicrnn)
    num_layers: int = 4  # transformer blocks / stacked LSTM layers
    hidden_size: int = 256  # GPT-2 n_embd; the LSTM's state width
    num_heads: int = 4  # GPT-2 attention heads (hidden_size must divide by it)
    intermediate_size: int | None = None  # GPT-2 MLP width (None: 4 * hidden_size)
    embedding_size: int | None = None  # LSTM input embedding width (None: hidden_size)
    context_length: int = 1024  # GPT-2 n_positions: the longest sequence it attends over
    dropout: float = 0.1  # GPT-2 residual/embedding/attention dropout; LSTM input/between/output dropout
    initializer_range: float = 0.02  # std of the normal weight init
    # Embedding rows are padded from 393 up to a multiple of this (GPU matmul tiles like multiples
    # of 64). Ids >= 393 are never targets and generation_config.suppress_tokens masks them.
    vocab_multiple: int = 64
    attn_implementation: str = "sdpa"  # GPT-2 attention kernel: "sdpa" or "eager"


@dataclass
class TrainingArguments:
    """A training run. ``dataset`` and ``output_dir`` are required (in the file or on the command line)."""

    dataset: str | None = None  # a folder written by `hf-midi prepare`, or a Hub dataset repo id
    output_dir: str | None = None  # final model here; checkpoints in OUT/checkpoints, logs in OUT/logs
    model: ModelArguments = field(default_factory=ModelArguments)
    # Start from a trained model instead of random weights: a bundled name ("default", "base"), a model
    # folder, a LoRA adapter folder or a Hub id; its tokenizer comes with it and the model section is ignored.
    init_from: str | None = None
    lora: bool = False  # train LoRA adapters (peft) on init_from's matrices, not every weight; saves only the adapter
    lora_rank: int = 16  # rank of each LoRA update
    lora_alpha: float = 32.0  # LoRA scaling numerator (the update is scaled by alpha / rank)
    lora_dropout: float = 0.0  # dropout on the LoRA branch's input
    lora_targets: str = "c_attn,c_proj,c_fc"  # comma-separated module names that get adapters (GPT-2's matrices)

    # -- data --
    train_split: str = "train"
    eval_split: str = "validation"
    block_size: int = 1024  # tokens a training example (= model.context_length for GPT-2)
    data_mode: str = "pack"  # "pack": pieces concatenated into full blocks; "crop": one random window a piece
    sustain: str = "events"  # tokenizer pedal mode (saved with the tokenizer): events, extend or ignore
    augment: bool = True  # random transposition / time stretch of training pieces
    transpose: list[int] = field(default_factory=lambda: [-3, 3])  # semitone range, inclusive
    stretch: list[float] = field(default_factory=lambda: [0.95, 1.05])  # tempo factor range
    velocity_jitter: int = 0  # +- velocity units added to each note (0: off)
    shuffle_buffer: int = 256  # blocks in the streaming shuffle buffer
    piece_shuffle_buffer: int = 64  # pieces (before parsing) in the streaming shuffle buffer
    num_workers: int = 0  # DataLoader worker processes (0: in the training process)

    # -- batch and optimisation --
    per_device_batch_size: int = 8  # blocks a micro-batch on each process
    gradient_accumulation_steps: int = 1  # micro-batches an optimizer step
    learning_rate: float = 6e-4  # peak learning rate, after warm-up
    min_lr_ratio: float = 0.1  # cosine decays to learning_rate * min_lr_ratio
    warmup_steps: int = 100  # linear warm-up from 0, in optimizer steps
    max_steps: int = 1000  # optimizer steps of the run (the cosine ends here)
    # Wall-clock budget in minutes (training time, summed over resumes). When set, the cosine
    # follows whichever budget is nearer its end, so a "1 hour" run still decays fully; such a run
    # is not bit-reproducible.
    max_minutes: float | None = None
    weight_decay: float = 0.1  # AdamW decay of matrices; never biases, norms or embeddings
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0  # gradient clipping (0: off)

    # -- speed --
    mixed_precision: str = "auto"  # "auto" (bf16 on a GPU that has it, else fp32), "bf16" or "no"
    compile: bool = False  # torch.compile the model
    cpu_threads: int = 0  # torch threads on CPU (0: torch's default)

    # -- evaluation, checkpoints, logging --
    eval_every: int = 200  # optimizer steps between evaluations (0: only at the end)
    eval_batches: int = 16  # micro-batches of eval_split a process scores each evaluation (0: no evaluation)
    save_every: int = 200  # optimizer steps between checkpoints (0: none)
    save_total_limit: int = 2  # checkpoints kept (the oldest are deleted)
    resume: str | None = None  # "latest" (in OUT/checkpoints) or a checkpoint folder of your own run
    log_every: int = 10  # optimizer steps between tracker/progress-bar updates
    tracker: str = "tensorboard"  # "tensorboard", "trackio" or "none" (OUT/logs/metrics.jsonl is always written)
    peak_tflops: float | None = None  # hardware peak for MFU (None: known GPUs' dense bf16 peak, else no MFU)
    seed: int = 0
    record_batches: bool = False  # write a fingerprint of every training block to OUT/logs (for tests)
    progress: bool = True  # show the training progress bar


CHOICES = {
    "architecture": ("gpt2", "musicrnn"),
    "attn_implementation": ("sdpa", "eager"),
    "data_mode": ("pack", "crop"),
    "sustain": ("events", "extend", "ignore"),
    "mixed_precision": ("auto", "bf16", "no"),
    "tracker": ("tensorboard", "trackio", "none"),
}
POSITIVE = {"num_layers", "hidden_size", "num_heads", "context_length", "vocab_multiple", "block_size",
            "per_device_batch_size", "gradient_accumulation_steps", "max_steps", "log_every",
            "save_total_limit", "intermediate_size", "embedding_size", "learning_rate", "max_minutes",
            "lora_rank", "lora_alpha"}


def _check_value(name: str, value: Any, tp: Any) -> Any:
    """``value`` converted to the field type ``tp``, or ConfigError naming ``name``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _check_value(name, value, next(a for a in args if a is not type(None)))
    if origin is list:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ConfigError(f"{name}: expected a list of two numbers like [-3, 3], got {value!r}")
        return [_check_value(f"{name}[{i}]", v, args[0]) for i, v in enumerate(value)]
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads 3e-4 (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[tp]
    if not ok:
        raise ConfigError(f"{name}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return float(value) if tp is float else value


def _from_dict(cls, data: dict, where: str, prefix: str = ""):
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix or 'the config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"{where}: unknown field '{prefix}{key}'{hint}")
        if key == "model":
            values[key] = _from_dict(ModelArguments, value, where, "model.")
        else:
            values[key] = _check_value(prefix + key, value, hints[key])
    return cls(**values)


def _check_ranges(obj, prefix: str) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name in CHOICES and value not in CHOICES[f.name]:
            raise ConfigError(f"{prefix}{f.name}: must be one of {CHOICES[f.name]}, got {value!r}")
        if f.name in POSITIVE and value is not None and value <= 0:
            raise ConfigError(f"{prefix}{f.name}: must be > 0, got {value!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise ConfigError(f"{prefix}{f.name}: must be >= 0, got {value!r}")


def validate_model(m: ModelArguments) -> ModelArguments:
    _check_ranges(m, "model.")
    if m.architecture == "gpt2" and m.hidden_size % m.num_heads:
        raise ConfigError(f"model.hidden_size: {m.hidden_size} is not a multiple of model.num_heads {m.num_heads}")
    if not 0 <= m.dropout < 1:
        raise ConfigError(f"model.dropout: must be in [0, 1), got {m.dropout}")
    return m


def model_arguments(data: dict) -> ModelArguments:
    """ModelArguments from a dict of its fields (a config's ``model`` section), checked."""
    return validate_model(_from_dict(ModelArguments, data, "model", "model."))


def validate(args: TrainingArguments, check_paths: bool = True) -> TrainingArguments:
    """Range and consistency checks; ConfigError names the field."""
    m = validate_model(args.model)
    _check_ranges(args, "")
    if args.lora and not args.init_from:
        raise ConfigError("lora: adapters train on top of a trained model; set init_from (e.g. --init_from default)")
    if args.init_from is None and m.architecture == "gpt2" and args.block_size != m.context_length:
        # GPT-2 learns a position's embedding only from blocks that reach it: a longer context would
        # ship untrained positions that generation and evaluation then use.
        raise ConfigError(f"block_size: {args.block_size} differs from model.context_length {m.context_length} "
                          "(for GPT-2 set both to the same length)")
    if args.transpose[0] > args.transpose[1] or args.stretch[0] > args.stretch[1]:
        raise ConfigError("transpose/stretch: the range must be [low, high] with low <= high")
    if check_paths:
        for name in ("dataset", "output_dir"):
            if getattr(args, name) is None:
                raise ConfigError(f"{name}: required (set it in the config or pass --{name})")
        if not Path(args.dataset).exists():
            is_repo_id = re.fullmatch(r"[\w.-]+/[\w.-]+", args.dataset) and not args.dataset.startswith(".")
            if not is_repo_id:
                raise ConfigError(f"dataset: no such folder {args.dataset!r}")
        if args.resume not in (None, "latest") and not (Path(args.resume) / "trainer_state.json").is_file():
            raise ConfigError(f"resume: {args.resume!r} is not a checkpoint folder (no trainer_state.json)")
    return args


def preset_path(name: str | Path) -> Path:
    """A preset name ("tiny") or a YAML path to the file."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"config: no such file {str(path)!r}")
        return path
    path = CONFIGS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))
        raise ConfigError(f"config: unknown preset {str(name)!r} (known: {known}; or pass a .yaml path)")
    return path


def load_config(config: str | Path | dict | None, overrides: dict | None = None, check_paths: bool = True):
    """TrainingArguments from a preset name / YAML path / dict, with ``{"a.b": value}`` overrides."""
    if isinstance(config, dict):
        data, where = dict(config), "config"
    elif config is None:
        data, where = {}, "defaults"
    else:
        path = preset_path(config)
        data, where = yaml.safe_load(path.read_text(encoding="utf-8")) or {}, str(path)
    data = {**data, "model": dict(data.get("model") or {})}
    for key, value in (overrides or {}).items():
        if key.startswith("model."):
            data["model"][key[len("model.") :]] = value
        else:
            data[key] = value
    return validate(_from_dict(TrainingArguments, data, where), check_paths=check_paths)


def field_names() -> list[str]:
    """Every overridable field, the model's as ``model.<name>``."""
    top = [f.name for f in dataclasses.fields(TrainingArguments) if f.name != "model"]
    return top + [f"model.{f.name}" for f in dataclasses.fields(ModelArguments)]


def field_help() -> dict[str, str]:
    """``{"learning_rate": "peak learning rate, after warm-up", ...}``: the comments beside the fields."""
    import inspect

    out = {}
    for cls, prefix in ((TrainingArguments, ""), (ModelArguments, "model.")):
        defaults, above = cls(), []
        for line in inspect.getsource(cls).splitlines():
            m = re.match(r"\s+(\w+): [^=]+=.*?(?:#\s*(.*))?$", line)
            if line.strip().startswith("#") and not line.strip().startswith("# --"):  # not a section title
                above.append(line.strip().lstrip("# "))  # a comment block above a field
            elif m:
                text = m.group(2) or " ".join(above)
                out[prefix + m.group(1)] = f"{text} (default: {getattr(defaults, m.group(1))!r})".strip()
                above = []
            else:
                above = []
    return out


def parse_args(argv: list[str] | None = None) -> TrainingArguments:
    """``--config PRESET_OR_YAML`` and ``--<field> VALUE`` for any field (values read as YAML)."""
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train a GPT-2 or LSTM on a prepared MIDI dataset (run under `accelerate launch`).",
    )
    parser.add_argument("--config", default="tiny",
                        help="preset name (hf_midi/configs/NAME.yaml: tiny, default, base, lstm) or a YAML file")
    hints = {**typing.get_type_hints(TrainingArguments), **{
        f"model.{k}": v for k, v in typing.get_type_hints(ModelArguments).items()}}
    helps = field_help()
    for name in field_names():
        kwargs = {"dest": name, "default": argparse.SUPPRESS, "metavar": "VALUE"}
        if name == "resume":
            kwargs.update(nargs="?", const="latest")
        parser.add_argument(f"--{name}", **kwargs, help=helps.get(name, "").replace("%", "%%"))
    ns = vars(parser.parse_args(argv))
    config = ns.pop("config")
    overrides = {}
    for name, text in ns.items():
        # Strings stay strings (paths, names); everything else is read as YAML (3e-4, true, [-2, 2]).
        tp = hints[name]
        is_str = tp is str or (typing.get_origin(tp) in (typing.Union, types.UnionType) and str in typing.get_args(tp))
        if is_str:
            overrides[name] = None if text in ("null", "None") else text
        else:
            try:
                overrides[name] = yaml.safe_load(text)
            except yaml.YAMLError:
                raise ConfigError(f"--{name}: cannot read {text!r}") from None
    return load_config(config, overrides)


def to_flat_dict(args: TrainingArguments) -> dict:
    """``{"learning_rate": ..., "model.num_layers": ...}`` (for trackers and trainer_state.json)."""
    out = {k: v for k, v in dataclasses.asdict(args).items() if k != "model"}
    out.update({f"model.{k}": v for k, v in dataclasses.asdict(args.model).items()})
    return out


__all__ = [
    "CONFIGS_DIR",
    "ConfigError",
    "ModelArguments",
    "TrainingArguments",
    "field_names",
    "load_config",
    "model_arguments",
    "parse_args",
    "preset_path",
    "to_flat_dict",
    "validate",
]
