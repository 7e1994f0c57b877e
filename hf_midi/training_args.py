"""The arguments of a training run: two dataclasses (``RunArguments``, ``ModelArguments``), read from a
YAML preset plus command-line overrides.

Every hyperparameter is a defaulted field here with its help text in the field's metadata;
``transformers.HfArgumentParser`` builds the command line from them (``build_parser``), and
``hf_midi/configs/*.yaml`` sets the ones a preset changes (the ``model:`` section for the model's).
Any field can be overridden on the command line (``--learning_rate 3e-4``, ``--model.num_layers 6``).
Mistakes fail before any work, naming the field: an unknown field (with the nearest name), a value of
the wrong type, a choice out of range, a dataset that is not there. (Not ``transformers``'
``TrainingArguments``: this project's run has its own fields.)
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


def _arg(default=dataclasses.MISSING, help: str = "", factory=None, **argparse_kwargs):
    """A field with its ``--help`` text (and any extra ``add_argument`` keywords) as metadata, the way
    ``HfArgumentParser`` reads it."""
    metadata = {"help": help, **argparse_kwargs}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _model_arg(default, help: str):
    """A ModelArguments field; on the command line ``--model.NAME`` (or ``--NAME``)."""
    return field(default=default, metadata={"help": help, "aliases": []})


@dataclass
class ModelArguments:
    """The model: a GPT-2 (``GPT2LMHeadModel``, plain transformers) or the LSTM baseline."""

    architecture: str = _model_arg("gpt2", "\"gpt2\" or \"musicrnn\" (the LSTM, hf_midi.modeling_musicrnn)")
    num_layers: int = _model_arg(4, "transformer blocks / stacked LSTM layers")
    hidden_size: int = _model_arg(256, "GPT-2 n_embd; the LSTM's state width")
    num_heads: int = _model_arg(4, "GPT-2 attention heads (hidden_size must divide by it)")
    intermediate_size: int | None = _model_arg(None, "GPT-2 MLP width (None: 4 * hidden_size)")
    embedding_size: int | None = _model_arg(None, "LSTM input embedding width (None: hidden_size)")
    context_length: int = _model_arg(1024, "GPT-2 n_positions: the longest sequence it attends over")
    dropout: float = _model_arg(0.1, "GPT-2 residual/embedding/attention dropout; LSTM input/between/output dropout")
    initializer_range: float = _model_arg(0.02, "std of the normal weight init")
    vocab_multiple: int = _model_arg(64, (
        "Embedding rows are padded from 393 up to a multiple of this (GPU matmul tiles like multiples "
        "of 64). Ids >= 393 are never targets and generation_config.suppress_tokens masks them."
    ))
    attn_implementation: str = _model_arg("sdpa", "GPT-2 attention kernel: \"sdpa\" or \"eager\"")


# ``--model.NAME`` on the command line (as in the presets' ``model:`` section); ``--NAME`` works too.
for _f in dataclasses.fields(ModelArguments):
    _f.metadata = types.MappingProxyType({**_f.metadata, "aliases": [f"--model.{_f.name}"]})


@dataclass
class RunArguments:
    """A training run. ``dataset`` and ``output_dir`` are required (in the file or on the command line)."""

    dataset: str | None = _arg(None, (
        "a folder written by `hf-midi prepare` or a Hub dataset repo id (streamed with `datasets`), or a "
        "packed corpus (`python -m hf_midi.packed`: windows cut on the device)"
    ))
    output_dir: str | None = _arg(None, "final model here; checkpoints in OUT/checkpoints, logs in OUT/logs")
    # The model section: its own dataclass and its own --model.* arguments (init=False: HfArgumentParser
    # parses ModelArguments beside this class; load_config sets it).
    model: ModelArguments = field(default_factory=ModelArguments, init=False)
    init_from: str | None = _arg(None, (
        "Start from a trained model instead of random weights: a bundled name (\"default\", \"base\"), a "
        "model folder, a LoRA adapter folder or a Hub id; its tokenizer comes with it and the model "
        "section is ignored."
    ))
    lora: bool = _arg(False, (
        "train LoRA adapters (peft) on init_from's matrices, not every weight; saves only the adapter"
    ))
    lora_rank: int = _arg(16, "rank of each LoRA update")
    lora_alpha: float = _arg(32.0, "LoRA scaling numerator (the update is scaled by alpha / rank)")
    lora_dropout: float = _arg(0.0, "dropout on the LoRA branch's input")
    lora_targets: str = _arg("c_attn,c_proj,c_fc", (
        "comma-separated module names that get adapters (GPT-2's matrices)"
    ))

    # -- data --
    train_split: str = _arg("train", "the split to train on (a packed corpus has one training stream)")
    eval_split: str = _arg("validation", "the split evaluated during training (a packed corpus: an evaluation set)")
    block_size: int = _arg(1024, "tokens a training example (= model.context_length for GPT-2)")
    data_mode: str = _arg("pack", (
        "\"pack\": pieces concatenated into full blocks; \"crop\": one random window a piece"
    ))
    sustain: str = _arg("events", "tokenizer pedal mode (saved with the tokenizer): events, extend or ignore")
    augment: bool = _arg(True, "random transposition / time stretch of training pieces")
    transpose: list[int] = _arg(help="semitone range, inclusive", factory=lambda: [-3, 3])
    stretch: list[float] = _arg(help="tempo factor range", factory=lambda: [0.95, 1.05])
    velocity_jitter: int = _arg(0, "+- velocity units added to each note (0: off)")
    shuffle_buffer: int = _arg(256, "blocks in the streaming shuffle buffer")
    piece_shuffle_buffer: int = _arg(64, "pieces (before parsing) in the streaming shuffle buffer")
    num_workers: int = _arg(0, "DataLoader worker processes (0: in the training process)")

    # -- batch and optimisation --
    per_device_batch_size: int = _arg(8, "blocks a micro-batch on each process")
    gradient_accumulation_steps: int = _arg(1, "micro-batches an optimizer step")
    learning_rate: float = _arg(6e-4, "peak learning rate, after warm-up")
    min_lr_ratio: float = _arg(0.1, "cosine decays to learning_rate * min_lr_ratio")
    warmup_steps: int = _arg(100, "linear warm-up from 0, in optimizer steps")
    max_steps: int = _arg(1000, "optimizer steps of the run (the cosine ends here)")
    max_minutes: float | None = _arg(None, (
        "Wall-clock budget in minutes (training time, summed over resumes). When set, the cosine "
        "follows whichever budget is nearer its end, so a \"1 hour\" run still decays fully; such a run "
        "is not bit-reproducible."
    ))
    weight_decay: float = _arg(0.1, "AdamW decay of matrices; never biases, norms or embeddings")
    adam_beta1: float = _arg(0.9, "AdamW beta1")
    adam_beta2: float = _arg(0.95, "AdamW beta2")
    adam_epsilon: float = _arg(1e-8, "AdamW epsilon")
    max_grad_norm: float = _arg(1.0, "gradient clipping (0: off)")

    # -- speed --
    mixed_precision: str = _arg("auto", "\"auto\" (bf16 on a GPU that has it, else fp32), \"bf16\" or \"no\"")
    compile: bool = _arg(False, "torch.compile the model (if compiling fails, the run says so and goes on uncompiled)")
    tf32: bool = _arg(True, "on CUDA, fp32 matmuls and cuDNN on TF32 tensor cores (what bf16 autocast leaves in fp32)")
    probe_steps: int = _arg(0, (
        "before training, time this many steps on one fixed batch and on real batches at learning rate 0 "
        "(the data path's cost: real_vs_synthetic; MFU of the model alone), logged to metrics.jsonl"
    ))
    cpu_threads: int = _arg(0, "torch threads on CPU (0: torch's default)")

    # -- evaluation, checkpoints, logging --
    eval_every: int = _arg(200, "optimizer steps between evaluations (0: only at the end)")
    eval_batches: int = _arg(16, "micro-batches of eval_split a process scores each evaluation (0: no evaluation)")
    save_every: int = _arg(200, "optimizer steps between checkpoints (0: none)")
    save_total_limit: int = _arg(2, "checkpoints kept (the oldest are deleted)")
    resume: str | None = _arg(None, (
        "\"latest\" (in OUT/checkpoints) or a checkpoint folder of your own run"
    ), nargs="?", const="latest")
    log_every: int = _arg(10, "optimizer steps between tracker/progress-bar updates")
    tracker: str = _arg("tensorboard", (
        "\"tensorboard\", \"trackio\" or \"none\" (OUT/logs/metrics.jsonl is always written)"
    ))
    peak_tflops: float | None = _arg(None, "hardware peak for MFU (None: known GPUs' dense bf16 peak, else no MFU)")
    seed: int = _arg(0, "seed of weights, data order and augmentation")
    record_batches: bool = _arg(False, "write a fingerprint of every training block to OUT/logs (for tests)")
    progress: bool = _arg(True, "show the training progress bar")


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
    model = values.pop("model", None)
    obj = cls(**values)
    if model is not None:
        obj.model = model  # RunArguments.model is init=False (HfArgumentParser parses it separately)
    return obj


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


def validate(args: RunArguments, check_paths: bool = True) -> RunArguments:
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
        dataset_kind(args.dataset)  # raises for what is none of the three
        if args.resume not in (None, "latest") and not (Path(args.resume) / "trainer_state.json").is_file():
            raise ConfigError(f"resume: {args.resume!r} is not a checkpoint folder (no trainer_state.json)")
    return args


def dataset_kind(dataset: str) -> str:
    """"packed" (a packed corpus folder), "prepared" (a folder of parquet shards, as ``hf-midi prepare``
    writes) or "hub" (a Hub dataset repo id); ConfigError for anything else."""
    path = Path(dataset)
    if path.is_dir():
        if (path / "manifest.json").is_file():
            return "packed"
        if any(path.glob("*.parquet")) or any(path.glob("data/*.parquet")) or (path / "README.md").is_file():
            return "prepared"
        raise ConfigError(f"dataset: {dataset!r} is neither a prepared dataset (hf-midi prepare: data/*.parquet), "
                          "a packed corpus (manifest.json) nor a Hub dataset repo id")
    if path.exists():
        raise ConfigError(f"dataset: {dataset!r} is a file; name a prepared dataset folder, a packed corpus "
                          "folder or a Hub dataset repo id")
    if re.fullmatch(r"[\w.-]+/[\w.-]+", dataset) and not dataset.startswith("."):
        return "hub"
    raise ConfigError(f"dataset: no such folder {dataset!r} (and not a Hub repo id like user/name)")


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
    """RunArguments from a preset name / YAML path / dict, with ``{"a.b": value}`` overrides."""
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
    return validate(_from_dict(RunArguments, data, where), check_paths=check_paths)


def field_names() -> list[str]:
    """Every overridable field, the model's as ``model.<name>``."""
    top = [f.name for f in dataclasses.fields(RunArguments) if f.init]
    return top + [f"model.{f.name}" for f in dataclasses.fields(ModelArguments)]


def _yaml_value(text: str):
    """A command-line value read as YAML (3e-4, true, [-2, 2], null); a plain word stays a string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"cannot read {text!r}") from None


def build_parser():
    """``HfArgumentParser`` over ``RunArguments`` and ``ModelArguments`` (help from the fields' metadata,
    ``--model.NAME`` aliases), plus ``--config``. Every option defaults to "not given" and reads its value
    as YAML, so that ``load_config`` layers what was given over the preset and checks it (one set of
    error messages, naming the field, for YAML files and the command line alike)."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(
        (RunArguments, ModelArguments), prog="train.py",
        description="Train a GPT-2 or LSTM on a prepared MIDI dataset (run under `accelerate launch`).",
    )
    parser.add_argument("--config", default="tiny",
                        help="preset name (hf_midi/configs/NAME.yaml: tiny, default, base, lstm) or a YAML file")
    strings = {f.name for cls in (RunArguments, ModelArguments) for f in dataclasses.fields(cls)
               if _is_str(typing.get_type_hints(cls)[f.name])}
    for action in parser._actions:
        if action.dest in ("help", "config") or not action.option_strings:
            continue
        if action.const is not False:  # the dataclass default, shown in --help (the preset's may differ)
            default = action.default() if callable(action.default) else action.default
            action.help = f"{action.help or ''} (default: {default!r})".replace("%", "%%").strip()
        action.default = argparse.SUPPRESS
        action.required = False
        action.choices = None  # validate() names the field and the allowed values
        if action.const is False:  # HfArgumentParser's --no_<flag>: keeps its meaning
            continue
        action.type = str if action.dest in strings else _yaml_value
        if action.dest == "resume":
            action.nargs, action.const = "?", "latest"
        elif action.nargs == "?" and action.const is True:  # --flag alone means true
            action.type = _yaml_value
        else:
            action.nargs = None
        action.metavar = "VALUE"
    return parser


def _is_str(tp) -> bool:
    return tp is str or (typing.get_origin(tp) in (typing.Union, types.UnionType) and str in typing.get_args(tp))


def parse_args(argv: list[str] | None = None) -> RunArguments:
    """``--config PRESET_OR_YAML`` and ``--<field> VALUE`` for any field (``--model.<field>`` for the model's)."""
    parser = build_parser()
    ns = vars(parser.parse_args(argv))
    config = ns.pop("config")
    model_fields = {f.name for f in dataclasses.fields(ModelArguments)}
    overrides = {}
    for name, value in ns.items():
        if isinstance(value, str) and value in ("null", "None"):
            value = None
        overrides[f"model.{name}" if name in model_fields else name] = value
    return load_config(config, overrides)


def to_flat_dict(args: RunArguments) -> dict:
    """``{"learning_rate": ..., "model.num_layers": ...}`` (for trackers and trainer_state.json)."""
    out = {k: v for k, v in dataclasses.asdict(args).items() if k != "model"}
    out.update({f"model.{k}": v for k, v in dataclasses.asdict(args.model).items()})
    return out


__all__ = [
    "CONFIGS_DIR",
    "ConfigError",
    "ModelArguments",
    "RunArguments",
    "dataset_kind",
    "field_names",
    "load_config",
    "model_arguments",
    "parse_args",
    "preset_path",
    "to_flat_dict",
    "validate",
]
