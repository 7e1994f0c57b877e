"""The arguments of a training run: two dataclasses (``RunArguments``, ``ModelArguments``), read from a
YAML preset plus command-line overrides.

Every hyperparameter is a typed, defaulted field here, its help text and whether it must be positive in
the field's metadata, its allowed values in its type (``Literal[...]``); the dataclasses check
themselves (``__post_init__``), the command line is built from the same fields (``build_parser``),
and ``hf_midi/training/configs/*.yaml`` sets the ones a preset changes (``model:`` for the model's).
Any field can be overridden on the command line (``--learning_rate 3e-4``, ``--model.num_layers 6``).
Mistakes fail before any work, naming the field: an unknown field (with the nearest name), a value of
the wrong type, a choice out of range, a dataset that is not there. (Not ``transformers``'
``TrainingArguments``: this project's run has its own fields.)
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..loading import DEFAULT_LORA_ALPHA, DEFAULT_LORA_RANK, DEFAULT_LORA_TARGETS
from ..remote_code.errors import HfMidiError
from ..utils import locate

# The presets ship inside the package (package data), so a wheel install has them too.
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(HfMidiError):
    """A bad training configuration; the message names the field (and the file) at fault."""


class TrainingError(HfMidiError):
    """The run cannot go on (a non-finite loss, a checkpoint that does not fit); the message says why."""


def _arg(default=dataclasses.MISSING, help: str = "", factory=None, positive: bool = False):
    """A field with its ``--help`` text; ``positive``: it must be > 0 (None allowed where the type is
    optional). Every number must be >= 0 in any case."""
    metadata = {"help": help, "positive": positive}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


class _Checked:
    """Dataclasses that check their fields when made: types, ``Literal`` choices, positivity."""

    _prefix = ""

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            if not f.init:
                continue
            value = _check_value(self._prefix + f.name, getattr(self, f.name), hints[f.name])
            setattr(self, f.name, value)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if f.metadata.get("positive") and value <= 0:
                    raise ConfigError(f"{self._prefix}{f.name}: must be > 0, got {value!r}")
                if value < 0:
                    raise ConfigError(f"{self._prefix}{f.name}: must be >= 0, got {value!r}")


@dataclass
class ModelArguments(_Checked):
    """The model: a GPT-2 (``GPT2LMHeadModel``, plain transformers) or the LSTM baseline."""

    _prefix = "model."
    architecture: Literal["gpt2", "musicrnn"] = _arg(
        "gpt2", "\"gpt2\" or \"musicrnn\" (the LSTM, hf_midi.remote_code.modeling_musicrnn)")
    num_layers: int = _arg(4, "transformer blocks / stacked LSTM layers", positive=True)
    hidden_size: int = _arg(256, "GPT-2 n_embd; the LSTM's state width", positive=True)
    num_heads: int = _arg(4, "GPT-2 attention heads (hidden_size must divide by it)", positive=True)
    intermediate_size: int | None = _arg(None, "GPT-2 MLP width (None: 4 * hidden_size)", positive=True)
    embedding_size: int | None = _arg(None, "LSTM input embedding width (None: hidden_size)", positive=True)
    context_length: int = _arg(1024, "GPT-2 n_positions: the longest sequence it attends over", positive=True)
    dropout: float = _arg(0.1, "GPT-2 residual/embedding/attention dropout; LSTM input/between/output dropout")
    initializer_range: float = _arg(0.02, "std of the normal weight init")
    vocab_multiple: int = _arg(64, (
        "Embedding rows are padded from 393 up to a multiple of this (GPU matmul tiles like multiples "
        "of 64). Ids >= 393 are never targets and generation_config.suppress_tokens masks them."
    ), positive=True)
    attn_implementation: Literal["sdpa", "eager"] = _arg("sdpa", "GPT-2 attention kernel: \"sdpa\" or \"eager\"")

    def __post_init__(self):
        super().__post_init__()
        if self.architecture == "gpt2" and self.hidden_size % self.num_heads:
            raise ConfigError(f"model.hidden_size: {self.hidden_size} is not a multiple of model.num_heads "
                              f"{self.num_heads}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout: must be in [0, 1), got {self.dropout}")


@dataclass
class RunArguments(_Checked):
    """A training run. ``dataset`` and ``output_dir`` are required (in the file or on the command line)."""

    dataset: str | None = _arg(None, (
        "a folder written by `hf-midi prepare` or a Hub dataset repo id (streamed with `datasets`), or a "
        "packed corpus (`python -m hf_midi.data.packed`: windows cut on the device)"
    ))
    output_dir: str | None = _arg(None, "final model here; checkpoints in OUT/checkpoints, logs in OUT/logs")
    # The model section: its own dataclass and its own --model.* arguments (init=False: the command line
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
    lora_rank: int = _arg(DEFAULT_LORA_RANK, "rank of each LoRA update", positive=True)
    lora_alpha: float = _arg(DEFAULT_LORA_ALPHA, "LoRA scaling numerator (the update is scaled by alpha / rank)",
                             positive=True)
    lora_dropout: float = _arg(0.0, "dropout on the LoRA branch's input")
    lora_targets: str = _arg(",".join(DEFAULT_LORA_TARGETS), (
        "comma-separated module names that get adapters (GPT-2's matrices)"
    ))

    # -- data --
    train_split: str = _arg("train", "the split to train on (a packed corpus has one training stream)")
    eval_split: str = _arg("validation", "the split evaluated during training (a packed corpus: an evaluation set)")
    block_size: int = _arg(1024, "tokens a training example (= model.context_length for GPT-2)", positive=True)
    data_mode: Literal["pack", "crop"] = _arg("pack", (
        "\"pack\": pieces concatenated into full blocks; \"crop\": one random window a piece"
    ))
    sustain: Literal["events", "extend", "ignore"] = _arg(
        "events", "tokenizer pedal mode (saved with the tokenizer): events, extend or ignore")
    augment: bool = _arg(True, "random transposition / time stretch of training pieces")
    transpose: list[int] = _arg(help="semitone range, inclusive", factory=lambda: [-3, 3])
    stretch: list[float] = _arg(help="tempo factor range", factory=lambda: [0.95, 1.05])
    velocity_jitter: int = _arg(0, "+- velocity units added to each note (0: off)")
    piece_start_share: float = _arg(0.0, (
        "packed corpus: the share of windows that begin at a piece's <bos> (0: uniform over the stream, where "
        "few windows see a piece begin)"
    ))
    shuffle_buffer: int = _arg(256, "blocks in the streaming shuffle buffer")
    piece_shuffle_buffer: int = _arg(64, "pieces (before parsing) in the streaming shuffle buffer")
    num_workers: int = _arg(0, "DataLoader worker processes (0: in the training process)")

    # -- batch and optimisation --
    per_device_batch_size: int = _arg(8, "blocks a micro-batch on each process", positive=True)
    gradient_accumulation_steps: int = _arg(1, "micro-batches an optimizer step", positive=True)
    learning_rate: float = _arg(6e-4, "peak learning rate, after warm-up", positive=True)
    min_lr_ratio: float = _arg(0.1, "cosine decays to learning_rate * min_lr_ratio")
    warmup_steps: int = _arg(100, "linear warm-up from 0, in optimizer steps")
    max_steps: int = _arg(1000, "optimizer steps of the run (the cosine ends here)", positive=True)
    max_minutes: float | None = _arg(None, (
        "Wall-clock budget in minutes (training time, summed over resumes). When set, the cosine "
        "follows whichever budget is nearer its end, so a \"1 hour\" run still decays fully; such a run "
        "is not bit-reproducible."
    ), positive=True)
    weight_decay: float = _arg(0.1, "AdamW decay of matrices; never biases, norms or embeddings")
    adam_beta1: float = _arg(0.9, "AdamW beta1")
    adam_beta2: float = _arg(0.95, "AdamW beta2")
    adam_epsilon: float = _arg(1e-8, "AdamW epsilon")
    max_grad_norm: float = _arg(1.0, "gradient clipping (0: off)")

    # -- speed --
    mixed_precision: Literal["auto", "bf16", "no"] = _arg(
        "auto", "\"auto\" (bf16 on a GPU that has it, else fp32), \"bf16\" or \"no\"")
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
    save_total_limit: int = _arg(2, "checkpoints kept (the oldest are deleted)", positive=True)
    resume: str | None = _arg(None, (
        "\"latest\" (in OUT/checkpoints) or a checkpoint folder of your own run"
    ))
    log_every: int = _arg(10, "optimizer steps between tracker/progress-bar updates", positive=True)
    tracker: Literal["tensorboard", "trackio", "none"] = _arg("tensorboard", (
        "\"tensorboard\", \"trackio\" or \"none\" (OUT/logs/metrics.jsonl is always written)"
    ))
    peak_tflops: float | None = _arg(None, "hardware peak for MFU (None: known GPUs' dense bf16 peak, else no MFU)")
    seed: int = _arg(0, "seed of weights, data order and augmentation")
    progress: bool = _arg(True, "show the training progress bar")


def _check_value(name: str, value: Any, tp: Any) -> Any:
    """``value`` converted to the field type ``tp``, or ConfigError naming ``name``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{name}: must be one of {args}, got {value!r}")
        return value
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
        obj.model = model  # RunArguments.model is init=False (its fields are a dataclass of their own)
    return obj


def model_arguments(data: dict) -> ModelArguments:
    """ModelArguments from a dict of its fields (a config's ``model`` section), checked."""
    return _from_dict(ModelArguments, data, "model", "model.")


def validate(args: RunArguments, check_paths: bool = True) -> RunArguments:
    """Range and consistency checks; ConfigError names the field."""
    m = args.model
    if args.piece_start_share > 1:
        raise ConfigError(f"piece_start_share: a share, in [0, 1], got {args.piece_start_share}")
    if args.lora and not args.init_from:
        raise ConfigError("lora: adapters train on top of a trained model; set init_from (e.g. --init_from small)")
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
    where = locate(dataset)
    if where == "local" and path.is_dir():
        if (path / "manifest.json").is_file():
            return "packed"
        if any(path.glob("*.parquet")) or any(path.glob("data/*.parquet")) or (path / "README.md").is_file():
            return "prepared"
        raise ConfigError(f"dataset: {dataset!r} is neither a prepared dataset (hf-midi prepare: data/*.parquet), "
                          "a packed corpus (manifest.json) nor a Hub dataset repo id")
    if where == "local":
        raise ConfigError(f"dataset: {dataset!r} is a file; name a prepared dataset folder, a packed corpus "
                          "folder or a Hub dataset repo id")
    if where == "hub":
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


def _yaml_value(text: str):
    """A command-line value read as YAML (3e-4, true, [-2, 2], null); a plain word stays a string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"cannot read {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The command line, from the fields: ``--<field> VALUE`` for every run field, ``--model.<field>`` (or
    ``--<field>``) for the model's, plus ``--config``. Every option defaults to "not given" and reads its
    value as YAML, so that ``load_config`` layers what was given over the preset and checks it (one set
    of error messages, naming the field, for YAML files and the command line alike). A flag alone
    (``--compile``) means true; ``--resume`` alone means the latest checkpoint."""
    parser = argparse.ArgumentParser(
        prog="train.py", argument_default=argparse.SUPPRESS,
        description="Train a GPT-2 or LSTM on a prepared MIDI dataset or a packed corpus (run under "
                    "`accelerate launch`).",
        epilog="example: accelerate launch train.py --config small-stream --dataset data/pop909 --output_dir runs/x "
               "--max_minutes 60",
    )
    parser.add_argument("--config", default="tiny", help=(
        "preset name (hf_midi/training/configs/NAME.yaml: tiny, default, base, lstm, gpu-base, gpu-small, "
        "gpu-lstm, cpu-packed) or a YAML file"))
    for cls, prefix in ((RunArguments, ""), (ModelArguments, "model.")):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            tp = hints[f.name]
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            kwargs = {"dest": prefix + f.name, "metavar": "VALUE",
                      "help": f"{f.metadata['help']} (default: {default!r})".replace("%", "%%"),
                      "type": str if _is_str(tp) else _yaml_value}
            if tp is bool:
                kwargs.update(nargs="?", const=True)
            elif f.name == "resume":
                kwargs.update(nargs="?", const="latest")
            names = [f"--{prefix}{f.name}"] + ([f"--{f.name}"] if prefix else [])
            parser.add_argument(*names, **kwargs)
    return parser


def _is_str(tp) -> bool:
    if typing.get_origin(tp) is Literal:
        return True
    return tp is str or (typing.get_origin(tp) in (typing.Union, types.UnionType) and str in typing.get_args(tp))


def parse_args(argv: list[str] | None = None) -> RunArguments:
    """``--config PRESET_OR_YAML`` and ``--<field> VALUE`` for any field (``--model.<field>`` for the model's)."""
    ns = vars(build_parser().parse_args(argv))
    config = ns.pop("config")
    return load_config(config, {name: None if value in ("null", "None") else value for name, value in ns.items()})


def to_flat_dict(args: RunArguments) -> dict:
    """``{"learning_rate": ..., "model.num_layers": ...}`` (for trackers and trainer_state.json)."""
    out = {k: v for k, v in dataclasses.asdict(args).items() if k != "model"}
    out.update({f"model.{k}": v for k, v in dataclasses.asdict(args.model).items()})
    return out


__all__ = [
    "CONFIGS_DIR",
    "TrainingError",
    "ConfigError",
    "ModelArguments",
    "RunArguments",
    "dataset_kind",
    "load_config",
    "model_arguments",
    "parse_args",
    "preset_path",
    "to_flat_dict",
    "validate",
]
